"""encode(plan) and verify(): the ffmpeg run, and the check that its output is what the plan asked.

The command line is built with ffmpeg-python (pure, unit-tested as a list) and run through our own
runner. Output goes to a temp file in the destination folder and is moved into place only when
ffmpeg succeeded, so a failed or killed encode never leaves a partial file under the real name.
Video, cover art, chapters and metadata are dropped: a customer must not get the sender's tags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from audiopipe.errors import FFmpegError, InputError, LimitExceeded, PrepareError
from audiopipe.preparation.formats import TargetFormat
from audiopipe.preparation.opening import ffmpeg_path_arg, input_options
from audiopipe.preparation.plan import EncodePlan
from audiopipe.preparation.probe import MediaInfo, probe, read_to_end, reading_timeout
from audiopipe.preparation.sniff import sniff
from audiopipe.runner import ffmpeg_base, run, telling_line
from audiopipe.scratch import discard, part_path

LOUDNORM = {"I": -16, "TP": -1.5, "LRA": 11}  # EBU R128, the usual target for speech on phones
# Wall seconds per second of audio. Measured on a 2-vCPU VM running four times more work than it has
# cores: a 2-hour WAV took 0.07 s per second to Opus, and 0.38 s per second with loudnorm (which
# works at 192 kHz). The CPU-time limit, not this, is what bounds the work; this catches a hang.
TIMEOUT_PER_SECOND = 0.5
TIMEOUT_PER_SECOND_NORMALIZED = 2.0
ENCODE_TIMEOUT_CAP = 12 * 3600.0


def encode_timeout(duration: float, normalize: bool = False) -> float:
    """Wall-clock seconds for encoding ``duration`` seconds: what will really be encoded (the plan's),
    never more than the input's bytes can hold (probe refuses a file claiming more), nor than a
    budget holds at the lowest bitrate (about 6 hours in 16 MB)."""
    per_second = TIMEOUT_PER_SECOND_NORMALIZED if normalize else TIMEOUT_PER_SECOND
    return min(120.0 + duration * per_second, ENCODE_TIMEOUT_CAP)


# ffmpeg writes key=value blocks to stdout about twice a second; -nostats keeps stderr for errors
PROGRESS_ARGS = ["-progress", "pipe:1", "-nostats"]


def build_argv(source: str | Path, plan: EncodePlan, output: str | Path, *, progress: bool = False) -> list[str]:
    """The whole ffmpeg command line for ``plan`` (pure); ``progress`` adds ffmpeg's own progress
    reports on stdout."""
    in_opts: dict[str, object] = dict(input_options())
    if plan.start > 0:
        in_opts["ss"] = f"{plan.start:.3f}"
    stream = ffmpeg.input(ffmpeg_path_arg(source), **in_opts)[f"a:{plan.audio_index}"]
    if plan.normalize:
        stream = stream.filter("loudnorm", **LOUDNORM)
    if plan.fade_out > 0:
        stream = stream.filter("afade", t="out", st=f"{max(0.0, plan.duration - plan.fade_out):.3f}",
                               d=f"{plan.fade_out:.3f}")
    out_opts: dict[str, object] = {
        "c:a": plan.encoder,
        "b:a": str(plan.bitrate),
        "ar": str(plan.sample_rate),
        "ac": str(plan.channels),
        "f": plan.muxer,
        "map_metadata": "-1",
        "map_chapters": "-1",
        "fflags": "+bitexact",
        "flags:a": "+bitexact",
        "t": f"{plan.duration:.3f}",
    }
    if plan.encoder == "libopus":
        # constrained VBR: pauses cost almost nothing and their bits go to the speech, while the
        # reservoir keeps the size at the target (plain VBR overshoots it by up to 40 % on music)
        vbr = "constrained" if plan.rate_control == "cvbr" else "off"
        out_opts.update({"vbr": vbr, "application": plan.application})
    if plan.encoder == "libmp3lame":
        out_opts["write_xing"] = "1"  # the Xing/Info frame: players seek, and know the length, by it
        if plan.rate_control == "abr":
            # LAME's ABR between its CBR steps: any whole kbit/s on average, each frame on one of the
            # MPEG version's standard bitrates (never free format); its Xing frame says it is VBR
            out_opts["abr"] = "1"
    out = ffmpeg.output(stream, ffmpeg_path_arg(output), **out_opts)
    # global options go before the input: after the output ffmpeg would ignore them
    return list(out.compile(cmd=ffmpeg_base() + (PROGRESS_ARGS if progress else [])))


def build_copy_argv(source: str | Path, audio_index: int, muxer: str, output: str | Path) -> list[str]:
    """The ffmpeg command line that copies one audio stream, unchanged, into ``muxer`` (pure)."""
    stream = ffmpeg.input(ffmpeg_path_arg(source), **input_options())[f"a:{audio_index}"]
    out = ffmpeg.output(stream, ffmpeg_path_arg(output), **{
        "c:a": "copy", "f": muxer, "map_metadata": "-1", "map_chapters": "-1",
        "fflags": "+bitexact", "flags:a": "+bitexact"})
    return list(out.compile(cmd=ffmpeg_base()))


def remux(source: str | Path, audio_index: int, muxer: str, dest: Path, duration: float) -> Path:
    """Copy the audio stream into another container (atomically), dropping tags, art and video."""
    timeout = reading_timeout(Path(source).stat().st_size, duration)
    return _written_by_ffmpeg(dest, lambda tmp: build_copy_argv(source, audio_index, muxer, tmp),
                              timeout=timeout, what="ffmpeg remux")


def _written_by_ffmpeg(dest: Path, argv_for: Callable[[Path], list[str]], *, timeout: float, what: str,
                       on_stdout_line: Callable[[bytes], None] | None = None) -> Path:
    """Run the ffmpeg ``argv_for`` builds for a temp name beside ``dest``; give the result ``dest``'s
    name only once ffmpeg succeeded, so a failed or killed run leaves nothing under it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    try:
        run(argv_for(tmp), timeout=timeout, what=what, on_stdout_line=on_stdout_line)
        os.replace(tmp, dest)
    finally:
        discard(tmp)
    return dest


def temp_path_for(dest: Path) -> Path:
    """``.NAME.ap-OWNER.part`` beside ``dest``: a run killed mid-write leaves a name the next run
    can sweep (see :mod:`audiopipe.scratch`). Remove it with :func:`discard`."""
    return part_path(dest)


def progress_reader(on_seconds: Callable[[float], None]) -> Callable[[bytes], None]:
    """A reader of ffmpeg's ``-progress`` lines that calls ``on_seconds`` with the seconds of
    output written so far (``out_time_us``; ffmpeg writes ``N/A`` or a negative value at the start)."""
    def on_line(line: bytes) -> None:
        key, _, value = line.partition(b"=")
        if key.strip() != b"out_time_us":
            return
        try:
            micros = int(value.strip())
        except ValueError:
            return
        if micros >= 0:
            on_seconds(micros / 1e6)
    return on_line


def encode(source: str | Path, plan: EncodePlan, dest: Path, *,
           progress: Callable[[float], None] | None = None) -> Path:
    """Encode ``source`` per ``plan`` into ``dest`` (atomically); return ``dest``. ``progress``
    is called (from this thread) with the seconds of ``plan.duration`` encoded so far."""
    return _written_by_ffmpeg(dest, lambda tmp: build_argv(source, plan, tmp, progress=progress is not None),
                              timeout=encode_timeout(plan.duration, plan.normalize), what="ffmpeg encode",
                              on_stdout_line=progress_reader(progress) if progress else None)


@dataclass(frozen=True)
class Verified:
    path: Path
    size: int
    mime: str
    info: MediaInfo


def duration_tolerance(expected: float) -> float:
    return max(0.25, expected * 0.02)


_CHECKSUM_FAILED = re.compile(r"crc mismatch|checksum", re.IGNORECASE)


def check_decodes_fully(info: MediaInfo) -> float:
    """Decode ``info``'s audio to the end and raise :class:`InputError` unless it lasts what its
    header declares: a truncated MP3 whose Xing header still says 5 s, an M4A cut short, a lying Ogg
    granule. What goes out as it is (kept, remuxed) must tell a player the truth. Returns the
    decoded duration."""
    try:
        real, damage = read_to_end(info.path, info.audio.audio_index, decode=True,
                                   timeout=reading_timeout(info.size, info.duration))
    except LimitExceeded as exc:
        raise exc.for_input(info.path) from None
    except FFmpegError as exc:
        last = (exc.stderr.strip().splitlines() or [f"exit code {exc.returncode}"])[-1]
        raise InputError(info.path, f"cannot be decoded to the end: {last}") from None
    if abs(real - info.duration) > duration_tolerance(info.duration):
        raise InputError(info.path, f"declares {info.duration:.2f} s but {real:.2f} s of audio decode from "
                                    f"it: the file is truncated or damaged; refused rather than sent with a "
                                    f"false duration (re-export or copy it again)")
    # A failed checksum means bytes changed after the file was written: ffmpeg reads on past it, a
    # customer's player may not. Other decode complaints (a torn last frame, junk after the audio,
    # common in real MP3s) are what players shrug off: the duration check above is their test.
    corrupt = [line for line in damage.splitlines() if _CHECKSUM_FAILED.search(line)]
    if corrupt:
        raise InputError(info.path, f"is damaged ({telling_line(corrupt[-1])}): refused rather than sent as it is "
                                    "(re-export or copy it again)")
    return real


def verify(path: Path, fmt: TargetFormat, *, budget: int, expected_duration: float | None) -> Verified:
    """Check an output as the server and WhatsApp will: size, sniff, codec, container, duration.

    Raises :class:`PrepareError` for anything but size; the size is returned for the caller to
    compare against the budget (over budget is a re-plan, not a failure).
    """
    size = path.stat().st_size
    seen = sniff(path)
    if seen.extension != fmt.extension:
        raise PrepareError(path, f"the output sniffs as {seen.mime}, which the server would not take "
                                 f"as .{fmt.extension}")
    try:
        info = probe(path)
    except InputError as exc:
        raise PrepareError(path, f"the output cannot be read back: {exc.reason}") from None
    if info.audio.codec != fmt.codec or info.container != fmt.container:
        raise PrepareError(path, f"the output is {info.audio.codec} in {info.container}, expected "
                                 f"{fmt.codec} in {fmt.container}")
    if info.video_streams or info.attached_pictures or info.audio_streams != 1:
        raise PrepareError(path, "the output has more than one audio stream")
    if info.tags:
        raise PrepareError(path, f"the output still carries tags ({', '.join(info.tags)})")
    if expected_duration is not None and abs(info.duration - expected_duration) > duration_tolerance(expected_duration):
        raise PrepareError(path, f"the output lasts {info.duration:.2f} s where {expected_duration:.2f} s "
                                 f"were expected: the input is probably truncated or damaged")
    return Verified(path=path, size=size, mime=seen.mime, info=info)
