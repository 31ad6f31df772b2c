"""The fill: when the budget limited the bitrate but the output that fits left much of it unused
(under plan.FILL_BELOW: content the size model did not foresee, such as a recording that is mostly
pauses, or MP3 on the CBR step under the budget), encode again higher, planned with the size model
scaled by what the last output measured, and keep the fullest output that fits. The budget given is
quality got; the first output, which fits and was verified, stands when no pass does better.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from audiopipe.errors import AudiopipeError
from audiopipe.preparation.encode import Verified
from audiopipe.preparation.formats import TargetFormat
from audiopipe.preparation.plan import FILL_BELOW, DoesNotFit, EncodePlan, corrected, measured_ratio, replan
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.scratch import discard

if TYPE_CHECKING:
    from audiopipe.preparation.transcode import Part

log = logging.getLogger(__name__)

FILL_PASSES = 2           # encodes at most to use a budget the first output left unused
# A fill plans as if the encoder spent this much more than the last output measured: Opus's size is not
# proportional to its bitrate on every content (its bandwidth and mode switch at some rates), and a
# fill that overshoots costs an encode for nothing.
FILL_CAUTION = 1.03
# A pass in the same rate control that came out less than this much bigger than the best so far, at a
# higher bitrate, ends the fill: the content (silence, a steady tone) does not take more bits, and
# another pass would only cost another encode (measured: silent inputs took 3 encodes for nothing).
FILL_GROWTH = 1.02


@dataclass(frozen=True)
class Staged:
    """An encode that passed verification, still under its temp name."""

    staged: Path
    checked: Verified
    plan: EncodePlan
    passes: int


class Encodes(Protocol):
    """What the fill needs of a conversion (transcode.Conversion): its plans and its encodes."""

    @property
    def source(self) -> Path: ...
    @property
    def settings(self) -> PrepareSettings: ...
    @property
    def fmt(self) -> TargetFormat: ...

    def plan(self, *, duration: float | None = None, start: float = 0.0, fade_out: float = 0.0,
             fmt: TargetFormat | None = None, channels: int | None = None, fill: bool = False) -> EncodePlan: ...

    def staged_pass(self, p: EncodePlan, dest: Path, passes: int, part: Part) -> Staged: ...


def filled(job: Encodes, first: Staged, dest: Path, part: Part) -> tuple[Staged, int]:
    """The fullest output that fits, and the encodes made: while the best so far uses under
    FILL_BELOW of a budget that limited its bitrate, up to FILL_PASSES more encodes, each planned
    with the size model scaled by what the last one measured (re-planned down from an overshoot,
    as the first encode is). A pass in another rate control (MP3: ABR after CBR on a step) may
    come out smaller than the best: it is kept only when fuller, but the next pass is planned by
    what it measured. ``first`` stands when none does better; it fits, and was verified."""
    best, passes = first, first.passes
    higher = plan_higher(job, first)
    for _ in range(FILL_PASSES):
        if higher is None or passes >= job.settings.max_passes:
            break
        log.info("%s: %s bytes uses %.0f %% of the %s-byte budget; encoding again higher", job.source,
                 f"{best.checked.size:,}", 100 * best.checked.size / best.plan.budget, f"{best.plan.budget:,}")
        passes += 1
        try:
            again = job.staged_pass(higher, dest, passes, part)
        except AudiopipeError as exc:
            log.info("%s: the encode at a higher bitrate failed (%s); keeping the one before", job.source, exc)
            break
        if again.checked.size <= again.plan.budget:
            stalled = (again.plan.rate_control == best.plan.rate_control
                       and again.checked.size < best.checked.size * FILL_GROWTH)
            higher = None if stalled else plan_higher(job, again)  # by what this one measured, even if smaller
            best, smaller = (again, best) if again.checked.size > best.checked.size else (best, again)
            if smaller is not first:
                discard(smaller.staged)
            higher = higher if higher is not None and fuller(higher, best) else None
        else:
            lower = replan(higher, job.fmt, again.checked.size)
            higher = lower if lower is not None and fuller(lower, best) else None
    return best, passes


def plan_higher(job: Encodes, done: Staged) -> EncodePlan | None:
    """A higher bitrate for ``done``'s plan (same channels, start and length) when its output
    used under FILL_BELOW of the budget: planned with the size model corrected by what it
    measured. None when it used enough, or no higher bitrate is allowed (the source's, the
    format's or --bitrate's ceiling, or the encoder's steps)."""
    p, size = done.plan, done.checked.size
    if size >= p.budget * FILL_BELOW:
        return None
    caution = 1.0 if p.rate_control == "cbr" else FILL_CAUTION  # (CBR's size is exact: the step fits again)
    fmt = corrected(job.fmt, measured_ratio(p, job.fmt, size) * caution, p.rate_control)
    try:
        higher = job.plan(duration=p.duration, start=p.start, fade_out=p.fade_out, fmt=fmt, channels=p.channels,
                          fill=True)
    except DoesNotFit:
        return None
    return higher if fuller(higher, done) else None


def fuller(p: EncodePlan, than: Staged) -> bool:
    """Whether ``p`` is expected to come out fuller than ``than`` did: a higher bitrate in the same
    rate control, else (MP3: ABR after CBR on a step; its target is under the step's, its size over)
    a larger expected size than ``than`` measured, at no lower a sample rate (see plan's ``best``)."""
    if p.rate_control == than.plan.rate_control:
        return p.bitrate > than.plan.bitrate
    return p.expected_size > than.checked.size and p.sample_rate >= than.plan.sample_rate
