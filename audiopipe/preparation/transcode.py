"""Converting an input into outputs that fit the budget.

A remux when the audio can go unchanged into an accepted container; otherwise encode, verify, and
re-plan from the measured overshoot until the output fits (and, when the output left much of the
budget unused, encode once more higher); when even the floor bitrate cannot hold
the whole duration, trim it (with a short fade-out) or split it into equal parts, as the settings say.
Every output is written under a hidden temp name and takes its real name only once verified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from audiopipe.errors import AudiopipeError, LimitExceeded, PrepareError
from audiopipe.preparation.encode import Verified, encode, remux, verify
from audiopipe.preparation.encoders import require_encoder
from audiopipe.preparation.fill import Staged, filled
from audiopipe.preparation.formats import FORMATS, TargetFormat
from audiopipe.preparation.outputs import OutputGuard, part_name, place, stage
from audiopipe.preparation.plan import DoesNotFit, EncodePlan, plan, replan
from audiopipe.preparation.policy import copyable
from audiopipe.preparation.probe import MediaInfo
from audiopipe.preparation.results import EncodeProgress, EncodeProgressCallback, OutputFile, PrepareAction
from audiopipe.preparation.settings import Overflow, PrepareSettings
from audiopipe.preparation.voicenote import budget_for
from audiopipe.scratch import discard

log = logging.getLogger(__name__)

MAX_FADE = 3.0            # seconds of fade-out at most on a trimmed output
MIN_SECONDS = 1.0         # less than this fitting the budget is not worth sending
MAX_PARTS = 1000
FIT_MARGIN = 0.97         # aim this far under what the last overshoot says would fit


@dataclass(frozen=True)
class Transcoded:
    """What converting one input made."""

    action: PrepareAction      # transcoded, trimmed or split
    outputs: tuple[OutputFile, ...]
    passes: int                # encodes it took (the longest part's, when split)
    plan: EncodePlan           # the last plan encoded
    kept_duration: float | None = None  # seconds kept, when trimmed
    first_fit: bool = True     # the first encode (of every part) fitted: no re-plan from an overshoot


@dataclass(frozen=True)
class Part:
    """Where an output sits in its source: part ``number`` of ``count``; progress counts in seconds
    of ``total`` (the whole source, for a split: parts add up), or of the part itself when None."""

    number: int = 1
    count: int = 1
    total: float | None = None


WHOLE = Part()


@dataclass(frozen=True)
class _Fitted:
    output: OutputFile
    passes: int
    plan: EncodePlan
    first_fit: bool


@dataclass(frozen=True)
class Conversion:
    """One input's conversion: what every encode of it shares."""

    source: Path
    info: MediaInfo
    settings: PrepareSettings
    fmt: TargetFormat
    budget: int
    guard: OutputGuard
    progress: EncodeProgressCallback | None = None

    def plan(self, *, duration: float | None = None, start: float = 0.0, fade_out: float = 0.0,
             fmt: TargetFormat | None = None, channels: int | None = None, fill: bool = False) -> EncodePlan:
        """The settings' plan for this input (``fmt``: a corrected size model; ``channels``: pinned;
        ``fill``: an output that fits is already made)."""
        s = self.settings
        return plan(self.info, fmt or self.fmt, self.budget, bitrate_cap=s.bitrate, channels=channels or s.channels,
                    voice_note=s.voice_note, normalize=s.normalize, duration=duration, start=start,
                    fade_out=fade_out, fill=fill)

    def encode_to_fit(self, p: EncodePlan, dest: Path, part: Part = WHOLE) -> _Fitted:
        """Encode, measure, and re-plan from the measured overshoot until the output fits; then, when
        the budget limited the bitrate but the output left much of it unused, encode again higher
        (see :mod:`fill`).

        Each pass goes to a hidden temp file; only a verified result that fits takes ``dest``'s name."""
        replace_ok = self.guard.claim(dest)  # before any ffmpeg work goes into it
        first = self._first_fit(p, dest, part)
        best, passes = first, first.passes
        try:
            best, passes = filled(self, first, dest, part)
            place(best.staged, dest, replace=replace_ok)
        finally:
            discard(first.staged)
            discard(best.staged)
        return _Fitted(_output_from(dest, self.fmt, best.checked, best.plan.bitrate), passes, best.plan,
                       first_fit=first.passes == 1)

    def _first_fit(self, p: EncodePlan, dest: Path, part: Part) -> Staged:
        """Encode and verify until an output fits (re-planning from each overshoot); it stays staged."""
        passes = 0
        while True:
            passes += 1
            staged = self.staged_pass(p, dest, passes, part)
            if staged.checked.size <= p.budget:
                return staged
            log.info("%s: %s bytes is over the %s-byte budget; encoding again lower", self.source,
                     f"{staged.checked.size:,}", f"{p.budget:,}")
            nxt = replan(p, self.fmt, staged.checked.size) if passes < self.settings.max_passes else None
            if nxt is None:
                # The floor did not fit after all: say how much would, so trim/split can use it.
                fits = p.duration * p.budget / staged.checked.size * FIT_MARGIN
                raise DoesNotFit(str(self.source), p.duration, fits, self.fmt.floor, p.budget)
            p = nxt

    def staged_pass(self, p: EncodePlan, dest: Path, passes: int, part: Part) -> Staged:
        """One encode of ``p`` into a temp file beside ``dest``, verified; overshoots are discarded."""
        _log_plan(self.source, p, passes, part)
        staged = stage(dest)
        try:
            checked = self._encode_and_verify(p, staged, self._on_seconds(p, passes, part))
        except BaseException:
            discard(staged)
            raise
        if checked.size > p.budget:
            discard(staged)
        return Staged(staged, checked, p, passes)

    def _encode_and_verify(self, p: EncodePlan, staged: Path,
                           on_seconds: Callable[[float], None] | None) -> Verified:
        try:
            encode(self.source, p, staged, progress=on_seconds)
            return verify(staged, self.fmt, budget=p.budget, expected_duration=p.duration)
        except LimitExceeded as exc:
            raise exc.for_input(self.source) from None
        except PrepareError as exc:
            raise PrepareError(self.source, exc.reason) from None  # name the input, not a temp file

    def _on_seconds(self, p: EncodePlan, attempt: int, part: Part) -> Callable[[float], None] | None:
        progress = self.progress
        if progress is None:
            return None
        whole = part.total if part.total is not None else p.duration
        offset = p.start if part.total is not None else 0.0

        def on_seconds(done: float) -> None:
            progress(EncodeProgress(self.source, min(offset + done, whole), whole, attempt, part.number,
                                    part.count))

        return on_seconds

    def trim(self, dest: Path, fits: float) -> Transcoded:
        """Keep the start that fits, fading out at the end."""
        for _ in range(self.settings.max_passes):
            keep = math.floor(fits * 10) / 10
            fade = min(MAX_FADE, keep / 10)
            try:
                fitted = self.encode_to_fit(self.plan(duration=keep, fade_out=fade), dest)
                return Transcoded(PrepareAction.TRIMMED, (fitted.output,), fitted.passes, fitted.plan,
                                  kept_duration=keep, first_fit=fitted.first_fit)
            except DoesNotFit as again:
                fits = min(again.fits_seconds, keep * FIT_MARGIN)
        raise PrepareError(self.source, "could not trim it to fit the budget")

    def split(self, dest_stem: Path, fits: float) -> Transcoded:
        """Equal parts, each planned for its own length; one more part each time one does not fit."""
        parts = math.ceil(self.info.duration / fits)
        while True:
            try:
                return self._split_into(dest_stem, parts)
            except DoesNotFit:
                parts += 1
                if parts > MAX_PARTS:
                    raise PrepareError(self.source, "could not split it into parts that fit") from None

    def _split_into(self, dest_stem: Path, parts: int) -> Transcoded:
        length = self.info.duration / parts
        names = [dest_stem.with_name(part_name(dest_stem.name, self.fmt.extension, i + 1, parts))
                 for i in range(parts)]
        for d in names:
            self.guard.claim(d)  # every part's name is free (or ours) before part 1 is encoded
        done: list[_Fitted] = []
        try:
            for i, d in enumerate(names):
                start = i * length
                p = self.plan(duration=min(length, self.info.duration - start), start=start)
                fitted = self.encode_to_fit(p, d, Part(i + 1, parts, self.info.duration))
                done.append(replace(fitted, output=replace(fitted.output, part=i + 1, parts=parts)))
        except BaseException:
            _remove(f.output for f in done)  # no partial result: a retry with more parts starts clean
            raise
        return Transcoded(PrepareAction.SPLIT, tuple(f.output for f in done), max(f.passes for f in done),
                          done[-1].plan, first_fit=all(f.first_fit for f in done))


def transcode(source: Path, info: MediaInfo, settings: PrepareSettings, dest_stem: Path, *,
              guard: OutputGuard, progress: EncodeProgressCallback | None = None) -> Transcoded:
    """Convert ``source`` into outputs named after ``dest_stem`` that fit the budget (trimmed or
    split as ``settings.on_overflow`` says when the whole does not fit even at the floor)."""
    fmt = settings.target
    require_encoder(fmt)
    job = Conversion(source, info, settings, fmt, budget_for(info, settings), guard, progress)
    dest = dest_stem.with_name(part_name(dest_stem.name, fmt.extension, 1, 1))
    try:
        fitted = job.encode_to_fit(job.plan(), dest)
        return Transcoded(PrepareAction.TRANSCODED, (fitted.output,), fitted.passes, fitted.plan,
                          first_fit=fitted.first_fit)
    except DoesNotFit as overflow:
        if settings.on_overflow == Overflow.FAIL:
            raise
        fits = overflow.fits_seconds
        log.info("%s: %.1f s do not fit %s bytes even at the lowest bitrate (%.1f s would); %s",
                 source, info.duration, f"{job.budget:,}", fits,
                 "trimming" if settings.on_overflow == Overflow.TRIM else "splitting")
    if fits < MIN_SECONDS:
        raise PrepareError(source, f"less than a second fits in {job.budget:,} bytes; raise --max-size")
    if settings.on_overflow == Overflow.TRIM:
        return job.trim(dest, fits)
    return job.split(dest_stem, fits)


def remux_into(source: Path, info: MediaInfo, settings: PrepareSettings, dest_stem: Path, *,
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
    return _output_from(dest, fmt, checked, info.audio.bit_rate or checked.info.bit_rate)


def _output_from(path: Path, fmt: TargetFormat, checked: Verified, bitrate: int | None) -> OutputFile:
    return OutputFile(path=path, size=checked.size, format=fmt.name, content_type=fmt.content_type,
                      mime=checked.mime, codec=checked.info.audio.codec, duration=checked.info.duration,
                      bitrate=bitrate)


def _remove(outputs: Iterable[OutputFile]) -> None:
    """Take back what this run placed, so a failure leaves no partial result."""
    for o in outputs:
        o.path.unlink(missing_ok=True)


def _log_plan(source: Path, p: EncodePlan, attempt: int, part: Part) -> None:
    """The plan in words, for -v: what will be made, how big it should come out, and why."""
    if not log.isEnabledFor(logging.INFO):
        return
    where = (f" part {part.number}/{part.count} ({p.start:.1f}-{p.start + p.duration:.1f} s)"
             if part.count > 1 else "")
    cut = f", fade-out {p.fade_out:.1f} s" if p.fade_out else ""
    why = ("the highest sensible bitrate for this source, under the budget" if 0 < p.ceiling <= p.bitrate else
           "the highest bitrate that fits the budget")  # a ceiling of 0 is unknown (a plan not made by plan())
    log.info("%s%s: plan%s: %s %s, %d kb/s, %d Hz, %d ch, %.1f s%s%s; expected %s of %s bytes (%s)",
             source, where, f" (attempt {attempt})" if attempt > 1 else "", p.format, p.encoder,
             p.bitrate // 1000, p.sample_rate, p.channels, p.duration, cut,
             ", loudness normalised" if p.normalize else "", f"{p.expected_size:,}", f"{p.budget:,}", why)
