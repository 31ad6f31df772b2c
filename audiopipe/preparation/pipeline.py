"""prepare(): any audio in, files the API accepts out.

probe -> acceptable? (keep byte for byte) -> plan -> encode -> verify -> re-plan when over ->
overflow (trim, split or fail) when even the floor bitrate cannot hold the whole duration.
Results are cached by the input's content hash and the settings. Nothing is ever written over an
input or over a file audiopipe did not make for the same input and settings (see ``outputs``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from audiopipe.errors import (
    AudiopipeError,
    InputError,
    LimitExceeded,
    PrepareError,
    ToolMissingError,
    UsageError,
    os_reason,
)
from audiopipe.preparation.cache import Cache, cache_key, file_sha256
from audiopipe.preparation.encode import check_decodes_fully, encode, remux, verify
from audiopipe.preparation.encoders import require_encoder
from audiopipe.preparation.formats import ACCEPTABLE_AS_IS, FORMATS, TargetFormat, get_format
from audiopipe.preparation.outputs import (
    OutputGuard,
    ProtectArg,
    Protected,
    Record,
    as_protected,
    intact,
    ownership_key,
    place,
    read_record,
    refuse_clashes,
    stage,
    write_record,
)
from audiopipe.preparation.plan import DoesNotFit, EncodePlan, plan, replan, seconds_that_fit
from audiopipe.preparation.probe import AudioStream, MediaInfo, check_readable, probe
from audiopipe.preparation.sniff import sniff
from audiopipe.runner import ffmpeg_version, stop_children
from audiopipe.scratch import discard
from audiopipe.version import __version__

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 16_000_000
SERVER_LIMIT = 16_777_216     # Laravel's max:16384, in KiB
VOICE_NOTE_BUDGET = 512_000     # WhatsApp plays a voice note inline up to 512 KB
VOICE_NOTE_MIN_BITRATE = 12_000  # below this, a longer note is better sent as a plain file
OVERFLOW_CHOICES = ("trim", "split", "fail")
MAX_FADE = 3.0

# Extensions picked up when a folder is given; a file named directly is always tried.
MEDIA_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".webm",
    ".weba", ".mka", ".mkv", ".mp4", ".mov", ".3gp", ".amr", ".aif", ".aiff", ".aifc", ".caf",
    ".wma", ".wmv", ".au", ".snd", ".ac3", ".wv", ".ape", ".avi", ".mpeg", ".mpg", ".ts", ".mp2",
})


@dataclass(frozen=True)
class PrepareSettings:
    """How to prepare. Every field has the CLI's default."""

    format: str = "ogg"
    max_size: int = DEFAULT_MAX_SIZE
    bitrate: int | None = None        # a ceiling, bit/s
    channels: int | None = None
    normalize: bool = False
    voice_note: bool = False
    on_overflow: str = "trim"
    reencode: bool = False
    max_passes: int = 4
    cache: bool = True
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        get_format(self.format)
        if self.on_overflow not in OVERFLOW_CHOICES:
            raise UsageError(f"on_overflow must be one of {', '.join(OVERFLOW_CHOICES)}, got {self.on_overflow!r}")
        if self.max_size < 4096:
            raise UsageError(f"--max-size {self.max_size} is too small to hold any audio (at least 4096 bytes)")
        if self.max_size > SERVER_LIMIT:
            raise UsageError(f"--max-size {self.max_size:,} is over the server's limit of {SERVER_LIMIT:,} bytes "
                             "(16384 KB): it would refuse such files")
        if self.voice_note and self.format != "ogg":
            raise UsageError("--voice-note makes mono Ogg/Opus (what WhatsApp shows as a voice message); "
                             f"drop --format {self.format}")
        if self.bitrate is not None and not 4000 <= self.bitrate <= 512000:
            raise UsageError(f"--bitrate {self.bitrate // 1000}k is outside 4k..512k")
        if self.channels is not None and self.channels not in (1, 2):
            raise UsageError("--channels must be 1 (mono) or 2 (stereo)")
        if self.max_passes < 1:
            raise UsageError("max_passes must be at least 1")

    @property
    def target(self) -> TargetFormat:
        return get_format(self.format)

    def cache_fields(self) -> dict[str, Any]:
        """What decides the output (not where the cache lives)."""
        d = asdict(self)
        for k in ("cache", "cache_dir"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class OutputFile:
    path: Path
    size: int
    format: str          # ogg, mp3, m4a, aac, amr
    content_type: str    # for the upload's part header
    mime: str            # what libmagic (and so the server) sees
    codec: str
    duration: float
    bitrate: int | None
    part: int = 1
    parts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class PrepareResult:
    source: Path
    source_sha256: str
    info: MediaInfo
    action: str          # kept, remuxed, transcoded, trimmed, split
    outputs: tuple[OutputFile, ...]
    passes: int = 0      # encodes it took (the longest part, when split); 0 when kept
    kept_duration: float | None = None  # seconds kept, when trimmed
    cached: bool = False
    plan: EncodePlan | None = None
    reused: bool = False  # the outputs were already in place from an earlier run: nothing was written
    voice_note_inline: bool | None = None  # --voice-note: whether it came out at 512 KB or less
    notes: tuple[str, ...] = ()            # what the user should know (why a voice note is not inline)

    @property
    def source_duration(self) -> float:
        return self.info.duration

    @property
    def duration_sent(self) -> float:
        """Seconds of audio in the outputs, as measured on them (every part's, when split)."""
        return sum(o.duration for o in self.outputs)

    @property
    def trimmed_seconds(self) -> float:
        """Seconds of the source that were cut off (0 unless trimmed)."""
        if self.action != "trimmed":
            return 0.0
        return max(0.0, self.source_duration - self.duration_sent)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source), "sha256": self.source_sha256, "action": self.action,
            "format": self.outputs[0].format if self.outputs else None, "size": self.size,
            "source_duration": round(self.source_duration, 3), "duration_sent": round(self.duration_sent, 3),
            "trimmed_seconds": round(self.trimmed_seconds, 3),
            "passes": self.passes, "kept_duration": self.kept_duration, "cached": self.cached,
            "reused": self.reused,
            "voice_note_inline": self.voice_note_inline, "notes": list(self.notes),
            "input": self.info.to_dict(), "outputs": [o.to_dict() for o in self.outputs],
            "plan": asdict(self.plan) if self.plan else None,
        }


@dataclass(frozen=True)
class EncodeProgress:
    """How far one encode is: ``done`` of ``total`` seconds of audio (ffmpeg's own count)."""

    source: Path
    done: float
    total: float
    attempt: int = 1     # more than 1 when re-encoding at a lower bitrate after an overshoot
    part: int = 1
    parts: int = 1


EncodeProgressCallback = Callable[[EncodeProgress], None]


@dataclass(frozen=True)
class PrepareOutcome:
    """One input's result for batch runs: either ``result`` or ``error`` is set."""

    source: Path
    result: PrepareResult | None = None
    error: AudiopipeError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict[str, Any]:
        if self.result:
            return dict(self.result.to_dict(), ok=True)
        return {"source": str(self.source), "ok": False, "action": "failed", "error": str(self.error)}


# --- deciding whether a file can go as it is -------------------------------------------------

# codec -> the format its audio can be copied into unchanged (a remux: no second lossy encode)
COPY_INTO = {"mp3": "mp3", "opus": "ogg", "aac": "m4a", "amr_nb": "amr"}


def copyable(info: MediaInfo, settings: PrepareSettings) -> tuple[str | None, str]:
    """The format the audio can go out in without re-encoding (kept or remuxed), or None and why."""
    if settings.reencode:
        return None, "re-encode asked for"
    if settings.normalize:
        return None, "loudness normalisation asked for"
    as_format = ACCEPTABLE_AS_IS.get((info.container, info.audio.codec)) or COPY_INTO.get(info.audio.codec)
    if as_format is None:
        return None, f"{info.audio.codec} in {info.container} is not a type the API takes"
    if settings.voice_note and (as_format != "ogg" or info.audio.channels != 1):
        return None, "a voice note must be mono Ogg/Opus"
    if settings.voice_note and info.size > VOICE_NOTE_BUDGET and voice_note_fits(info)[0]:
        return None, f"a voice note plays inline only at {VOICE_NOTE_BUDGET // 1000} KB or less"
    if settings.channels is not None and info.audio.channels != settings.channels:
        return None, f"{info.audio.channels} channels where {settings.channels} were asked for"
    bitrate = info.audio.bit_rate or info.bit_rate or 0
    if settings.bitrate and bitrate > settings.bitrate * 1.05:
        return None, "its bitrate is over the --bitrate ceiling"
    audio_bytes = bitrate * info.duration / 8 if info.audio.bit_rate else info.size
    if audio_bytes > settings.max_size * 0.98:
        return None, f"its audio alone is over the {settings.max_size:,}-byte budget"
    return as_format, ""


def acceptable(info: MediaInfo, settings: PrepareSettings, sniffed_extension: str | None) -> tuple[bool, str]:
    """Whether ``info`` can be sent byte for byte; the reason when not."""
    as_format, why = copyable(info, settings)
    if as_format is None:
        return False, why
    if ACCEPTABLE_AS_IS.get((info.container, info.audio.codec)) != as_format:
        return False, f"{info.audio.codec} in {info.container} must be put in a .{as_format} container"
    if sniffed_extension != FORMATS[as_format].extension:
        return False, f"the content would be taken by the server as .{sniffed_extension or 'unknown'}"
    if info.attached_pictures:
        return False, "it carries cover art"
    if info.video_streams:
        return False, "it carries video"
    if info.audio_streams != 1:
        return False, f"it has {info.audio_streams} audio streams"
    if info.tags:
        return False, f"it carries the sender's tags ({', '.join(info.tags)})"
    if info.size > settings.max_size:
        return False, f"{info.size:,} bytes is over the {settings.max_size:,}-byte budget"
    return True, "already acceptable"


# --- the work on one file --------------------------------------------------------------------

def _copy_into_place(src: Path, dest: Path, *, replace: bool) -> None:
    staged = stage(dest)
    try:
        shutil.copyfile(src, staged)
        place(staged, dest, replace=replace)
    finally:
        discard(staged)


def _remove(outputs: Iterable[OutputFile]) -> None:
    """Take back what this run placed, so a failure leaves no partial result."""
    for o in outputs:
        o.path.unlink(missing_ok=True)


def _output_from(path: Path, fmt: TargetFormat, size: int, mime: str, info: MediaInfo,
                 bitrate: int | None, part: int = 1, parts: int = 1) -> OutputFile:
    return OutputFile(path=path, size=size, format=fmt.name, content_type=fmt.content_type, mime=mime,
                      codec=info.audio.codec, duration=info.duration, bitrate=bitrate, part=part, parts=parts)


def _encode_to_fit(source: Path, p: EncodePlan, fmt: TargetFormat, dest: Path, max_passes: int,
                   guard: OutputGuard, progress: EncodeProgressCallback | None = None, *, part: int = 1,
                   parts: int = 1, total: float | None = None) -> tuple[OutputFile, int, EncodePlan]:
    """Encode, measure, and re-plan from the measured overshoot until the output fits.

    Each pass goes to a hidden temp file; only a verified result that fits takes ``dest``'s name.
    ``progress`` counts in seconds of ``total`` (the whole source, for a split: parts add up)."""
    replace_ok = guard.claim(dest)  # before any ffmpeg work goes into it
    passes = 0
    while True:
        passes += 1
        _log_plan(source, p, passes, part, parts)
        on_seconds = None
        if progress is not None:
            on_seconds = _progress_for(progress, source, p, passes, part, parts, total)
        staged = stage(dest)
        try:
            try:
                encode(source, p, staged, progress=on_seconds)
                checked = verify(staged, fmt, budget=p.budget, expected_duration=p.duration)
            except LimitExceeded as exc:
                raise exc.for_input(source) from None
            except PrepareError as exc:
                raise PrepareError(source, exc.reason) from None  # name the input, not a temp file
            if checked.size <= p.budget:
                place(staged, dest, replace=replace_ok)
                return _output_from(dest, fmt, checked.size, checked.mime, checked.info, p.bitrate), passes, p
        finally:
            discard(staged)
        log.info("%s: %s bytes is over the %s-byte budget; encoding again lower", source,
                 f"{checked.size:,}", f"{p.budget:,}")
        nxt = replan(p, fmt, checked.size) if passes < max_passes else None
        if nxt is None:
            # The floor did not fit after all: say how much would, so trim/split can use it.
            fits = p.duration * p.budget / checked.size * 0.97
            raise DoesNotFit(str(source), p.duration, fits, fmt.floor, p.budget)
        p = nxt


def _progress_for(progress: EncodeProgressCallback, source: Path, p: EncodePlan, attempt: int,
                  part: int, parts: int, total: float | None) -> Callable[[float], None]:
    whole = total if total is not None else p.duration
    offset = p.start if total is not None else 0.0

    def on_seconds(done: float) -> None:
        progress(EncodeProgress(source, min(offset + done, whole), whole, attempt, part, parts))

    return on_seconds


def _log_plan(source: Path, p: EncodePlan, attempt: int, part: int, parts: int) -> None:
    """The plan in words, for -v: what will be made, how big it should come out, and why."""
    if not log.isEnabledFor(logging.INFO):
        return
    where = f" part {part}/{parts} ({p.start:.1f}-{p.start + p.duration:.1f} s)" if parts > 1 else ""
    cut = f", fade-out {p.fade_out:.1f} s" if p.fade_out else ""
    fits = p.expected_size <= p.budget * 0.95
    why = ("the highest sensible bitrate for this source, well under the budget" if fits else
           "the highest bitrate that fits the budget")
    log.info("%s%s: plan%s: %s %s, %d kb/s, %d Hz, %d ch, %.1f s%s%s; expected %s of %s bytes (%s)",
             source, where, f" (attempt {attempt})" if attempt > 1 else "", p.format, p.encoder,
             p.bitrate // 1000, p.sample_rate, p.channels, p.duration, cut,
             ", loudness normalised" if p.normalize else "", f"{p.expected_size:,}", f"{p.budget:,}", why)


def voice_note_fits(info: MediaInfo) -> tuple[bool, float]:
    """Whether the whole of ``info`` fits a 512 KB voice note at a bitrate worth listening to, and
    how many seconds at most would."""
    fmt = FORMATS["ogg"]
    most = seconds_that_fit(fmt, VOICE_NOTE_BUDGET, VOICE_NOTE_MIN_BITRATE, 48000)
    try:
        p = plan(info, fmt, VOICE_NOTE_BUDGET, channels=1, voice_note=True)
    except DoesNotFit:
        return False, most
    return p.bitrate >= VOICE_NOTE_MIN_BITRATE, most


def _voice_note_verdict(result: PrepareResult) -> PrepareResult:
    """Say whether a --voice-note came out small enough for WhatsApp to play it inline, and if not why."""
    biggest = max(o.size for o in result.outputs)
    if biggest <= VOICE_NOTE_BUDGET:
        return replace(result, voice_note_inline=True)
    fits, most = voice_note_fits(result.info)
    limit = f"{VOICE_NOTE_BUDGET // 1000} KB"
    if not fits:
        why = (f"{_minutes(result.source_duration)} is too long to fit {limit} (about {_minutes(most)} fits at "
               f"{VOICE_NOTE_MIN_BITRATE // 1000} kb/s, the least worth listening to)")
    else:
        why = f"it came out at {biggest:,} bytes, over {limit}"
    note = f"not a voice note WhatsApp plays inline: {why}; at {biggest:,} bytes it shows as an audio file"
    log.info("%s: %s", result.source, note)
    return replace(result, voice_note_inline=False, notes=result.notes + (note,))


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _budget_for(info: MediaInfo, settings: PrepareSettings, fmt: TargetFormat) -> int:
    """The byte budget: --max-size, or 512 KB for a voice note when the duration allows."""
    if settings.voice_note and settings.max_size > VOICE_NOTE_BUDGET and voice_note_fits(info)[0]:
        return VOICE_NOTE_BUDGET
    return settings.max_size


def part_name(stem: str, ext: str, part: int, parts: int) -> str:
    return f"{stem}.{ext}" if parts == 1 else f"{stem}.part{part}of{parts}.{ext}"


def _transcode(source: Path, info: MediaInfo, settings: PrepareSettings, dest_stem: Path, guard: OutputGuard,
               progress: EncodeProgressCallback | None = None
               ) -> tuple[str, tuple[OutputFile, ...], int, float | None, EncodePlan]:
    fmt = settings.target
    require_encoder(fmt)
    budget = _budget_for(info, settings, fmt)
    opts = dict(bitrate_cap=settings.bitrate, channels=settings.channels,
                voice_note=settings.voice_note, normalize=settings.normalize)
    dest = dest_stem.with_name(part_name(dest_stem.name, fmt.extension, 1, 1))
    try:
        p = plan(info, fmt, budget, **opts)
        out, passes, p = _encode_to_fit(source, p, fmt, dest, settings.max_passes, guard, progress)
        return "transcoded", (out,), passes, None, p
    except DoesNotFit as overflow:
        if settings.on_overflow == "fail":
            raise
        fits = overflow.fits_seconds
        log.info("%s: %.1f s do not fit %s bytes even at the lowest bitrate (%.1f s would); %s",
                 source, info.duration, f"{budget:,}", fits,
                 "trimming" if settings.on_overflow == "trim" else "splitting")
    if fits < 1.0:
        raise PrepareError(source, f"less than a second fits in {budget:,} bytes; raise --max-size")
    if settings.on_overflow == "trim":
        for _ in range(settings.max_passes):
            keep = math.floor(fits * 10) / 10
            fade = min(MAX_FADE, keep / 10)
            try:
                p = plan(info, fmt, budget, duration=keep, fade_out=fade, **opts)
                out, passes, p = _encode_to_fit(source, p, fmt, dest, settings.max_passes, guard, progress)
                return "trimmed", (out,), passes, keep, p
            except DoesNotFit as again:
                fits = min(again.fits_seconds, keep * 0.97)
        raise PrepareError(source, "could not trim it to fit the budget")
    # split: equal parts, each planned for its own length
    parts = math.ceil(info.duration / fits)
    while True:
        length = info.duration / parts
        outputs: list[OutputFile] = []
        most = 0
        names = [dest_stem.with_name(part_name(dest_stem.name, fmt.extension, i + 1, parts))
                 for i in range(parts)]
        for d in names:
            guard.claim(d)  # every part's name is free (or ours) before part 1 is encoded
        try:
            for i, d in enumerate(names):
                start = i * length
                dur = min(length, info.duration - start)
                p = plan(info, fmt, budget, duration=dur, start=start, **opts)
                out, passes, p = _encode_to_fit(source, p, fmt, d, settings.max_passes, guard, progress,
                                                part=i + 1, parts=parts, total=info.duration)
                outputs.append(replace(out, part=i + 1, parts=parts))
                most = max(most, passes)
            return "split", tuple(outputs), most, None, p
        except DoesNotFit:
            _remove(outputs)
            parts += 1
            if parts > 1000:
                raise PrepareError(source, "could not split it into parts that fit") from None
        except BaseException:
            _remove(outputs)
            raise


def _result_from(manifest: dict[str, Any], paths: Sequence[Path], source: Path, sha: str, *,
                 reused: bool) -> PrepareResult:
    """A result rebuilt from a manifest (the cache's, or a sidecar's) with outputs at ``paths``."""
    outputs = tuple(OutputFile(**dict(o, path=path)) for o, path in zip(manifest["outputs"], paths))
    inp = dict(manifest["input"])
    inp["audio"] = AudioStream(**inp["audio"])
    inp["path"] = str(source)
    inp["tags"] = tuple(inp.get("tags") or ())
    plan_d = manifest.get("plan")
    return PrepareResult(source=source, source_sha256=sha, info=MediaInfo(**inp), action=manifest["action"],
                         outputs=outputs, passes=manifest["passes"],
                         kept_duration=manifest["kept_duration"], cached=not reused,
                         plan=EncodePlan(**plan_d) if plan_d else None, reused=reused)


def _restore(hit: tuple[dict[str, Any], Path], dest_stem: Path, source: Path, sha: str,
             guard: OutputGuard) -> PrepareResult:
    manifest, entry = hit
    dests = [dest_stem.with_name(Path(o["path"]).name.replace(manifest["stem"], dest_stem.name, 1))
             for o in manifest["outputs"]]
    replace_ok = [guard.claim(d) for d in dests]  # all names free (or ours) before the first copy
    placed: list[Path] = []
    try:
        for name, dest, may_replace in zip(manifest["files"], dests, replace_ok):
            _copy_into_place(entry / name, dest, replace=may_replace)
            placed.append(dest)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return _result_from(manifest, dests, source, sha, reused=False)


def _remux(source: Path, info: MediaInfo, settings: PrepareSettings, dest_stem: Path,
           guard: OutputGuard) -> OutputFile | None:
    """Copy the audio, unchanged, into an accepted container without tags, cover art or video
    (an MP3 with a picture, an ``isom`` M4A, Opus in WebM). None when that is not possible."""
    as_format, _why = copyable(info, settings)
    if as_format is None:
        return None
    fmt = FORMATS[as_format]
    dest = dest_stem.with_name(f"{dest_stem.name}.{fmt.extension}")
    replace_ok = guard.claim(dest)  # a file in the way is reported, not dodged by converting instead
    staged = stage(dest)
    try:
        try:
            remux(source, info.audio.audio_index, fmt.muxer, staged, info.duration)
            checked = verify(staged, fmt, budget=settings.max_size, expected_duration=info.duration)
        except LimitExceeded as exc:
            raise exc.for_input(source) from None  # converting instead would only cost more
        except AudiopipeError as exc:
            log.info("%s: cannot be remuxed (%s); converting it instead", source, exc)
            return None
        if checked.size > settings.max_size:
            return None
        place(staged, dest, replace=replace_ok)
    finally:
        discard(staged)
    return _output_from(dest, fmt, checked.size, checked.mime, checked.info,
                        info.audio.bit_rate or checked.info.bit_rate)


def _hash_in_background(path: Path) -> Callable[[], str]:
    """Start hashing ``path`` on another thread (it overlaps the encode); call the result to join."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["sha"] = file_sha256(path)
        except OSError as exc:
            box["error"] = exc

    t = threading.Thread(target=work, name="hash", daemon=True)
    t.start()

    def join() -> str:
        t.join()
        if "error" in box:
            raise InputError(path, f"cannot be read: {box['error'].strerror}")
        return str(box["sha"])

    return join


def _hash_now(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror}") from None


def prepare_file(source: str | Path, out_dir: str | Path, settings: PrepareSettings | None = None, *,
                 name: str | None = None, overwrite: bool = False, protect: ProtectArg = (),
                 before_ffmpeg: Callable[[MediaInfo], None] | None = None,
                 progress: EncodeProgressCallback | None = None) -> PrepareResult:
    """Prepare one file into ``out_dir``; raises an :class:`AudiopipeError` when it cannot.

    No output ever replaces ``source`` or a file in ``protect`` (the contacts CSV, say), by name or
    by link: :class:`OutputClash`. A file audiopipe did not write for this input and settings is
    left alone (:class:`OutputError`) unless ``overwrite``; its own earlier outputs, intact, are
    reused as they are (``result.reused``).

    ``before_ffmpeg`` is called once before ffmpeg writes anything (a remux or an encode), never for
    a file kept as it is or found in the cache: the place to check what is cheap to check before
    the expensive work (``send`` checks the token there).

    ``progress`` is called from the preparing thread as each encode goes on (ffmpeg's own count of
    the audio written), about twice a second; files kept, remuxed or reused need no encode and
    report none.
    """
    src = Path(source)
    out = Path(out_dir)
    stem = name or src.stem
    protected = as_protected(protect)
    protected.add(src, "the input")
    refuse_clashes([out / stem], protected)
    return _prepare_one(src, out, settings or PrepareSettings(), stem, overwrite=overwrite, protected=protected,
                        before_ffmpeg=before_ffmpeg, progress=progress)


def _prepare_one(src: Path, out: Path, settings: PrepareSettings, stem: str, *, overwrite: bool,
                 protected: Protected, before_ffmpeg: Callable[[MediaInfo], None] | None = None,
                 progress: EncodeProgressCallback | None = None) -> PrepareResult:
    dest_stem = out / stem
    check_readable(src)
    cache = Cache(settings.cache_dir) if settings.cache else None
    record = read_record(dest_stem)
    sha: str | None = None
    if cache or record:
        sha = _hash_now(src)  # the content hash first: a hit needs neither ffprobe nor ffmpeg
    ours: frozenset[str] = frozenset()
    if record and sha and record.key == ownership_key(sha, settings.cache_fields()):
        ours = intact(out, record)
    guard = OutputGuard(protected, overwrite, ours)
    if record and sha and len(ours) == len(record.files):
        reused = _reuse(record, out, src, sha, guard)
        if reused is not None:
            log.info("%s: %s before with the same settings; its outputs are already in %s", src,
                     reused.action, out)
            return _voice_note_verdict(reused) if settings.voice_note else reused

    if cache:
        assert sha is not None
        key = cache_key(sha, settings.cache_fields(), f"{ffmpeg_version()} audiopipe {__version__}")
        hit = cache.get(key)
        if hit:
            result = _restore(hit, dest_stem, src, sha, guard)
            log.info("%s: %s before with the same settings; reused from the cache", src, result.action)
            if settings.voice_note:
                result = _voice_note_verdict(result)
        else:
            result = _work(src, settings, dest_stem, guard, lambda: sha, before_ffmpeg, progress)
            cache.put(key, _manifest(result, stem), [o.path for o in result.outputs])
    else:
        result = _work(src, settings, dest_stem, guard, (lambda: sha) if sha else _hash_in_background(src),
                       before_ffmpeg, progress)
    write_record(dest_stem, ownership_key(result.source_sha256, settings.cache_fields()),
                 [o.path for o in result.outputs], _portable(_manifest(result, stem)))
    return result


def _reuse(record: Record, out: Path, src: Path, sha: str, guard: OutputGuard) -> PrepareResult | None:
    """The result of an earlier run whose outputs are all still here, intact; None if its sidecar
    cannot say what it was (then the work is done again, and the files are not taken for ours)."""
    paths = [out / name for name, _ in record.files]
    for path in paths:
        guard.claim(path)  # still never an input, even one hard-linked there since
    try:
        return _result_from(record.result, paths, src, sha, reused=True)
    except (KeyError, TypeError, ValueError):
        return None


def _manifest(result: PrepareResult, stem: str) -> dict[str, Any]:
    return dict(result.to_dict(), stem=stem, input=result.info.to_dict())


def _portable(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without where and how this run found things: the same outputs always get the same
    sidecar, whether encoded or restored from the cache, and a moved folder keeps working."""
    kept = {k: v for k, v in manifest.items() if k not in ("source", "cached", "reused")}
    kept["outputs"] = [{k: v for k, v in o.items() if k != "path"} for o in manifest["outputs"]]
    kept["input"] = {k: v for k, v in manifest["input"].items() if k != "path"}
    return kept


def _work(src: Path, settings: PrepareSettings, dest_stem: Path, guard: OutputGuard,
          source_sha: Callable[[], str], before_ffmpeg: Callable[[MediaInfo], None] | None = None,
          progress: EncodeProgressCallback | None = None) -> PrepareResult:
    """Keep, remux or convert ``src`` into outputs named after ``dest_stem`` (with the verdict on a
    --voice-note)."""
    info = probe(src)  # refuses missing, empty, corrupt, playlist and no-audio inputs
    seen = sniff(src)
    ok, why = acceptable(info, settings, seen.extension)
    log.info("%s: %s, %s, %d Hz, %d ch, %.1f s, %s bytes: %s", src, info.container.split(",")[0],
             info.audio.codec, info.audio.sample_rate, info.audio.channels, info.duration, f"{info.size:,}",
             "sent as it is" if ok else f"not sent as it is: {why}")
    if ok or copyable(info, settings)[0]:
        # kept and remuxed files go out with the source's own packets: a header that claims more (or
        # less) than they hold would reach the customer, so decode them first, as strictly as an encode
        check_decodes_fully(info)
    if ok:
        fmt = FORMATS[ACCEPTABLE_AS_IS[(info.container, info.audio.codec)]]
        dest = dest_stem.with_name(f"{dest_stem.name}.{fmt.extension}")
        _copy_into_place(src, dest, replace=guard.claim(dest))
        kept = OutputFile(path=dest, size=info.size, format=fmt.name, content_type=fmt.content_type,
                          mime=seen.mime, codec=info.audio.codec, duration=info.duration,
                          bitrate=info.audio.bit_rate or info.bit_rate)
        result = PrepareResult(source=src, source_sha256=source_sha(), info=info, action="kept",
                               outputs=(kept,))
    else:
        if before_ffmpeg is not None:
            before_ffmpeg(info)
        remuxed = _remux(src, info, settings, dest_stem, guard)
        if remuxed is not None:
            log.info("%s: remuxed: the %s audio copied unchanged into .%s", src, info.audio.codec,
                     remuxed.format)
            result = PrepareResult(source=src, source_sha256=source_sha(), info=info, action="remuxed",
                                   outputs=(remuxed,), passes=1)
        else:
            action, outputs, passes, kept_duration, last_plan = _transcode(src, info, settings, dest_stem,
                                                                           guard, progress)
            result = PrepareResult(source=src, source_sha256=source_sha(), info=info, action=action,
                                   outputs=outputs, passes=passes, kept_duration=kept_duration, plan=last_plan)
    return _voice_note_verdict(result) if settings.voice_note else result


# --- many files -------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputItem:
    path: Path
    out_subdir: Path = field(default_factory=Path)  # relative folder under the output folder


@dataclass(frozen=True)
class FoundInputs:
    items: list[InputItem]
    not_audio: list[Path]  # files in the folders searched whose names are not audio or video


def collect_inputs(paths: Iterable[str | Path], *, exclude: str | Path | None = None) -> list[InputItem]:
    """Files as given, and media files found recursively under folders (sorted, hidden ones skipped).

    ``exclude`` is a folder never searched (the output folder, when it lies inside an input folder).
    A media name found in a folder that cannot be read as a file (a link loop, a dangling link) is
    kept, so that it is reported in its turn rather than silently skipped.
    """
    return find_inputs(paths, exclude=exclude).items


def find_inputs(paths: Iterable[str | Path], *, exclude: str | Path | None = None) -> FoundInputs:
    """:func:`collect_inputs`, and the files it left out because they are not audio (a user is told
    how many)."""
    items: list[InputItem] = []
    not_audio: list[Path] = []
    skip = _real_path(Path(exclude)) if exclude else None
    for raw in paths:
        p = Path(raw)
        if not _is_folder(p):
            items.append(InputItem(p))  # a missing or unreadable file is reported by probe, in its turn
            continue
        try:
            found_all = sorted(p.rglob("*"))
        except OSError as exc:
            raise InputError(p, f"cannot list the folder: {os_reason(exc)}") from None
        for found in found_all:
            rel = found.relative_to(p)
            if any(part.startswith(".") for part in rel.parts):
                continue
            real = _real_path(found)
            inside_exclude = skip is not None and real is not None and (real == skip or skip in real.parents)
            if inside_exclude:
                continue
            if found.suffix.lower() not in MEDIA_EXTENSIONS:
                if real is not None and _is_file(found):
                    not_audio.append(found)
                continue
            if real is None or _is_file(found):
                items.append(InputItem(found, rel.parent))
    return FoundInputs(items, not_audio)


def _is_folder(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):  # a name over 255 bytes, say: not a folder; probe says what it is
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):
        return True  # something is there that cannot be read: keep it, so it is reported


def _real_path(p: Path) -> Path | None:
    """Where ``p`` really is, or None when its links cannot be followed (a loop, a dangling link)."""
    try:
        return p.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None


def check_output_folder(folder: str | Path, refusal: str | None = None) -> None:
    """Make ``folder`` and check a file can be written in it, before any work is done; otherwise
    :class:`UsageError`: ``refusal`` (default: ``--out FOLDER: cannot write there``) and the reason."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe_file = tempfile.mkstemp(prefix=".audiopipe-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe_file)
    except FileExistsError:
        raise UsageError(f"{refusal or f'--out {out}: cannot write there'}: {out} is a file, not a folder") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{refusal or f'--out {out}: cannot write there'}: {os_reason(exc)}") from None


def output_stems(items: Sequence[InputItem]) -> list[Path]:
    """A distinct relative output stem per input: ``a.wav`` and ``a.mp3`` in one folder become
    ``a`` and ``a-mp3`` rather than overwriting each other."""
    taken: set[Path] = set()
    stems = []
    for item in items:
        stem = item.out_subdir / item.path.stem
        if stem in taken:
            base = f"{item.path.stem}-{item.path.suffix.lstrip('.').lower() or 'file'}"
            stem = item.out_subdir / base
            n = 2
            while stem in taken:
                stem = item.out_subdir / f"{base}-{n}"
                n += 1
        taken.add(stem)
        stems.append(stem)
    return stems


ProgressCallback = Callable[[PrepareOutcome], None]


def prepare_many(items: Sequence[InputItem | str | Path], out_dir: str | Path,
                 settings: PrepareSettings | None = None, *, jobs: int = 1,
                 progress: ProgressCallback | None = None,
                 encode_progress: EncodeProgressCallback | None = None, overwrite: bool = False,
                 protect: ProtectArg = ()) -> list[PrepareOutcome]:
    """Prepare every item (``jobs`` at a time); one failure never stops the others.

    Returns one outcome per item, in the order given; ``progress`` is called as each finishes,
    ``encode_progress`` as each encode goes on (from the worker threads, ``jobs`` at once).
    Before any work, :class:`OutputClash` when an output would replace one of the items or a file
    in ``protect``; a file in the way that audiopipe did not write fails only its own item (see
    :func:`prepare_file`).
    """
    settings = settings or PrepareSettings()
    norm = [i if isinstance(i, InputItem) else InputItem(Path(i)) for i in items]
    stems = output_stems(norm)
    out = Path(out_dir)
    protected = as_protected(protect)
    for i in norm:
        protected.add(i.path, "the input")
    refuse_clashes([out / s for s in stems], protected)
    lock = threading.Lock()

    def one(idx: int) -> PrepareOutcome:
        item, stem = norm[idx], stems[idx]
        try:
            res = _prepare_one(item.path, out / stem.parent, settings, stem.name, overwrite=overwrite,
                               protected=protected, progress=encode_progress)
            outcome = PrepareOutcome(item.path, result=res)
        except (UsageError, ToolMissingError):
            raise  # the set-up is wrong (ffmpeg missing, a bad setting): no file can succeed
        except AudiopipeError as exc:
            outcome = PrepareOutcome(item.path, error=exc)
        except OSError as exc:  # an output that cannot be written (a name too long, a full disk): this file only
            where = f"{exc.filename}: " if exc.filename else ""
            outcome = PrepareOutcome(item.path, error=PrepareError(item.path, where + os_reason(exc)))
        if progress:
            with lock:
                progress(outcome)
        return outcome

    if jobs <= 1 or len(norm) <= 1:
        return [one(i) for i in range(len(norm))]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="prepare")
    interrupted = False
    try:
        return list(pool.map(one, range(len(norm))))
    except KeyboardInterrupt:
        # Ctrl-C, SIGTERM: the ffmpegs running now are stopped (in their own session, a terminal's
        # Ctrl-C never reached them), no queued file starts, and no worker holds the caller
        interrupted = True
        stop_children(for_good=False)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
