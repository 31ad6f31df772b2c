"""plan(): choose codec settings so the output fits the byte budget. Pure: no I/O, unit-tested.

The size model is ``fixed + duration × bytes_per_second(bitrate)`` (see formats.py), and every rule
that differs between formats (the sample rates an encoder takes, when stereo is worth it) is read off
the :class:`TargetFormat`: nothing here asks which format it is holding. The plan takes
the highest sensible bitrate that fits after container overhead, never above what the source carries
and never below the format's quality floor; when even the floor cannot hold the duration it raises
:class:`DoesNotFit`, saying how many seconds would fit, so the caller can trim, split or fail. A
format with coarse steps and a rate control for between them (MP3: CBR on LAME's steps, ABR between)
takes the step unless it would leave more than ``1 - STEP_USE`` of the budget unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from audiopipe.errors import PrepareError
from audiopipe.preparation.formats import (
    MPEG1_RATES,
    MPEG2_RATES,
    MPEG25_RATES,
    STANDARD_RATES,
    TOP_RATE,
    RateControl,
    TargetFormat,
    is_lossless,
)
from audiopipe.preparation.probe import MediaInfo

__all__ = [
    "HEADROOM", "MPEG1_RATES", "MPEG2_RATES", "MPEG25_RATES", "STANDARD_RATES", "STEP_USE", "DoesNotFit", "EncodePlan",
    "bitrate_for", "choose_sample_rate", "expected_size", "likely_speech", "plan", "quantize", "replan",
    "seconds_that_fit", "source_ceiling",
]

# Aim this far under the budget at the first encode; verify() measures and re-plans anyway.
HEADROOM = 0.985
# A format's step that would use less of the budget than this gives way to its between-steps rate
# control (MP3: CBR on LAME's steps, else ABR at the budget; where this comes from: formats.py).
STEP_USE = 0.92


class DoesNotFit(PrepareError):
    """Even the floor bitrate cannot hold the whole duration in the budget."""

    def __init__(self, path: str, duration: float, fits_seconds: float, floor: int, budget: int) -> None:
        super().__init__(path, f"{duration:.1f} s does not fit in {budget:,} bytes even at "
                               f"{floor // 1000} kbit/s (at most {fits_seconds:.1f} s fits)")
        self.duration = duration
        self.fits_seconds = fits_seconds


@dataclass(frozen=True)
class EncodePlan:
    format: str           # target format name (ogg, mp3, m4a, aac, amr)
    encoder: str
    muxer: str
    codec: str
    bitrate: int          # bit/s
    sample_rate: int
    channels: int
    duration: float       # seconds of source to encode
    start: float = 0.0    # where to start in the source (split parts)
    fade_out: float = 0.0  # seconds of fade at the end (trim)
    normalize: bool = False
    audio_index: int = 0  # which audio stream of the source (-map 0:a:N)
    application: str = "audio"  # Opus: voip for speech-sized bitrates
    rate_control: RateControl = "cbr"  # the format's (see formats.RateControl)
    speech: bool = False  # sized as speech (see likely_speech)
    budget: int = 0
    expected_size: int = 0


def expected_size(fmt: TargetFormat, bitrate: float, sample_rate: int, duration: float, *,
                  speech: bool = False) -> int:
    seconds = duration + fmt.padding_seconds
    return math.ceil(fmt.fixed_overhead + seconds * fmt.bytes_per_second(bitrate, sample_rate, speech))


def likely_speech(info: MediaInfo, voice_note: bool = False) -> bool:
    """Whether to size for speech: a voice note, or a mono source (recorded voice is; music rarely
    is). A cheap guess from the probe alone: a wrong one costs a re-plan or some unused budget."""
    return voice_note or info.audio.channels == 1


def bitrate_for(fmt: TargetFormat, budget: float, duration: float, sample_rate: int, *,
                speech: bool = False) -> float:
    """The highest nominal bitrate whose expected size is at most ``budget`` bytes (may be below the
    floor), through the format's factor for each bitrate band."""
    per_second = (budget - fmt.fixed_overhead) / max(duration + fmt.padding_seconds, 1e-3)
    frames = sample_rate / fmt.frame_samples if fmt.bytes_per_frame else 0.0
    payload_bits = max(0.0, (per_second - fmt.overhead_per_second - frames * fmt.bytes_per_frame) * 8)
    # Each band [low, below) has its own factor: the bitrate it allows there, kept within the band;
    # a band whose allowance falls under its low end is out of reach. The highest reachable wins.
    bands = fmt.bands(speech)
    top = payload_bits / fmt.bitrate_factor
    best = top if top >= (bands[-1][0] if bands else 0) else 0.0
    low = 0
    for below, factor in bands:
        allowed = payload_bits / factor
        if allowed >= low:
            best = max(best, min(allowed, below - 1))
        low = below
    return best


def seconds_that_fit(fmt: TargetFormat, budget: float, bitrate: int, sample_rate: int, *,
                     speech: bool = False) -> float:
    per_second = fmt.bytes_per_second(bitrate, sample_rate, speech)
    return max(0.0, (budget * HEADROOM - fmt.fixed_overhead) / per_second - fmt.padding_seconds)


def quantize(fmt: TargetFormat, bitrate: float) -> int:
    """Round down to a bitrate the encoder takes (MP3/AMR steps, else the format's quantum)."""
    if fmt.steps:
        fitting = [s for s in fmt.steps if s <= bitrate]
        return fitting[-1] if fitting else fmt.steps[0]
    return int(bitrate // fmt.bitrate_quantum * fmt.bitrate_quantum)


def _highest_rate_at_most(limit: int, choices: tuple[int, ...]) -> int:
    below = [r for r in choices if r <= limit]
    return below[-1] if below else choices[0]


def choose_sample_rate(fmt: TargetFormat, bitrate: int, channels: int, source_rate: int) -> int:
    """A sample rate the encoder takes that suits the bitrate, never above the source's (unless the
    format's rate bands need it)."""
    if fmt.fixed_sample_rate is not None:
        return fmt.fixed_sample_rate
    per_channel = bitrate / max(1, channels)
    wanted = next((rate for below, rate in fmt.rate_ladder if per_channel < below), TOP_RATE)
    rate = _highest_rate_at_most(min(wanted, source_rate), STANDARD_RATES)
    for band in fmt.rate_bands:
        rate = band.move(rate, bitrate, source_rate)
    return rate


def source_ceiling(info: MediaInfo) -> int | None:
    """The bitrate a lossy source carries (converting it higher adds bytes, not quality)."""
    if is_lossless(info.audio.codec):
        return None
    return info.audio.bit_rate or info.bit_rate


@dataclass(frozen=True)
class _Fit:
    """What the budget holds in one rate control; ``limited``: the budget, not a ceiling, held the
    bitrate down."""

    bitrate: int
    sample_rate: int
    channels: int
    limited: bool


@dataclass(frozen=True)
class _Request:
    """What one plan fits into its budget (the settings that decide the bitrate)."""

    info: MediaInfo
    budget: int
    duration: float
    speech: bool
    channels: int | None
    voice_note: bool
    bitrate_cap: int | None

    def ceiling(self, fmt: TargetFormat, ch: int) -> int:
        ceiling = fmt.ceiling(ch)
        if self.info.audio.sample_rate <= 16000:
            ceiling = min(ceiling, 32000 * ch)  # a narrowband source needs no more
        highest = fmt.highest_bitrate_at(self.info.audio.sample_rate)
        if highest is not None:
            ceiling = min(ceiling, highest)  # a higher one would need a higher rate: never upsample for it
        for cap in (self.bitrate_cap, source_ceiling(self.info)):
            if cap:
                ceiling = min(ceiling, max(cap, fmt.floor))
        return ceiling

    def fit_channels(self, fmt: TargetFormat, ch: int) -> _Fit:
        source_rate = self.info.audio.sample_rate
        rate = choose_sample_rate(fmt, fmt.ceiling(ch), ch, source_rate)
        raw = bitrate_for(fmt, self.budget * HEADROOM, self.duration, rate, speech=self.speech)
        b = quantize(fmt, min(raw, self.ceiling(fmt, ch)))
        rate = choose_sample_rate(fmt, b, ch, source_rate)
        # a lower sample rate may change the container overhead; check again at that rate
        raw = bitrate_for(fmt, self.budget * HEADROOM, self.duration, rate, speech=self.speech)
        # (up to the floor: the first pass may have fallen below it only by the higher rate's overhead)
        top = self.ceiling(fmt, ch)
        safe = quantize(fmt, min(raw, top, max(b, fmt.floor)))
        # higher still when the lower rate's fewer frames (AAC's per-frame bytes) leave room for it
        # and the rate that bitrate takes still fits
        up = quantize(fmt, min(raw, top))
        up_rate = choose_sample_rate(fmt, up, ch, source_rate)
        fits = expected_size(fmt, up, up_rate, self.duration, speech=self.speech) <= self.budget * HEADROOM
        b = up if up > safe and fits else safe
        return _Fit(b, choose_sample_rate(fmt, b, ch, source_rate), ch, limited=raw < top)

    def fit(self, fmt: TargetFormat) -> _Fit:
        """The highest bitrate that fits, and the channels: a stereo source is made mono when its
        bitrate would be under the format's ``stereo_min``."""
        if self.channels is not None:
            ch = max(1, min(self.channels, fmt.max_channels))
        elif self.voice_note:
            ch = 1
        else:
            ch = max(1, min(self.info.audio.channels, fmt.max_channels, 2))
        fitted = self.fit_channels(fmt, ch)
        if self.channels is None and ch == 2 and fitted.bitrate < fmt.stereo_min:
            fitted = self.fit_channels(fmt, 1)
        return fitted

    def size(self, fmt: TargetFormat, fitted: _Fit) -> int:
        return expected_size(fmt, fitted.bitrate, fitted.sample_rate, self.duration, speech=self.speech)

    def best(self, fmt: TargetFormat) -> tuple[TargetFormat, _Fit]:
        """The fit in ``fmt``'s own rate control, or in its between-steps one when the budget falls
        between two steps and the step under it would leave more than ``1 - STEP_USE`` unused."""
        fitted = self.fit(fmt)
        other_fmt = fmt.between_steps
        if other_fmt is None or not fitted.limited or self.size(fmt, fitted) >= STEP_USE * self.budget:
            return fmt, fitted
        other = self.fit(other_fmt)
        fuller = self.size(fmt, fitted) < self.size(other_fmt, other) <= self.budget
        if other.limited and other.bitrate >= other_fmt.floor and fuller:
            return other_fmt, other
        return fmt, fitted


def plan(  # noqa: PLR0913 - the public planner: every setting is its own keyword, named by the callers
    info: MediaInfo, fmt: TargetFormat, budget: int, *, bitrate_cap: int | None = None,
    channels: int | None = None, voice_note: bool = False, normalize: bool = False,
    duration: float | None = None, start: float = 0.0, fade_out: float = 0.0,
) -> EncodePlan:
    """Settings for encoding ``duration`` seconds of ``info`` (from ``start``) into ``budget`` bytes."""
    dur = info.duration - start if duration is None else duration
    speech = likely_speech(info, voice_note)
    request = _Request(info, budget, dur, speech, channels, voice_note, bitrate_cap)
    fmt, fitted = request.best(fmt)
    bitrate, rate, out_channels = fitted.bitrate, fitted.sample_rate, fitted.channels
    size = request.size(fmt, fitted)
    if bitrate < fmt.floor or size > budget:
        floor_rate = choose_sample_rate(fmt, fmt.floor, out_channels, info.audio.sample_rate)
        raise DoesNotFit(info.path, dur, seconds_that_fit(fmt, budget, fmt.floor, floor_rate, speech=speech),
                         fmt.floor, budget)
    voip = fmt.speech_below is not None and (voice_note or bitrate / out_channels <= fmt.speech_below)
    return EncodePlan(
        format=fmt.name, encoder=fmt.encoder, muxer=fmt.muxer, codec=fmt.codec, bitrate=bitrate,
        sample_rate=rate, channels=out_channels, duration=dur, start=start, fade_out=fade_out,
        normalize=normalize, audio_index=info.audio.audio_index, application="voip" if voip else "audio",
        rate_control=fmt.rate_control, speech=speech, budget=budget, expected_size=size)


def replan(previous: EncodePlan, fmt: TargetFormat, measured: int) -> EncodePlan | None:
    """A lower bitrate after an output came out ``measured`` bytes against its budget.

    Scales the payload (the bytes the bitrate decides: the container's own are the same at any
    bitrate) by what was measured, so the model's error for this very input, a VBR encoder's
    overshoot included, is corrected by what really happened; always at least one step down. In
    the format's between-steps rate control (MP3's ABR), the steps' own control takes over where that
    one would go under its floor. None when already at the floor.
    """
    mode = fmt.in_control(previous.rate_control)
    lower = _scaled_down(previous, mode, measured)
    if lower is None and mode is not fmt:
        lower = _on_a_step(previous, fmt, measured)
    return lower


def _scaled_down(previous: EncodePlan, fmt: TargetFormat, measured: int) -> EncodePlan | None:
    container = expected_size(fmt, 0, previous.sample_rate, previous.duration)  # bytes at no bitrate
    wanted = previous.budget * HEADROOM - container
    scale = wanted / max(measured - container, 1) if wanted > 0 else 0.0
    target = previous.bitrate * min(scale, 0.99)
    bitrate = quantize(fmt, target)
    if bitrate >= previous.bitrate:
        lower = ([s for s in fmt.steps if s < previous.bitrate] if fmt.steps
                 else [previous.bitrate - fmt.bitrate_quantum])
        bitrate = lower[-1] if lower else fmt.floor - 1
    if bitrate < fmt.floor:
        return None
    # the sample rate follows the bitrate down (an MP3 rate only takes some bitrates: LAME would
    # silently raise 24k at 44.1 kHz back to 32k); never above the previous rate, so never above the source's
    rate = choose_sample_rate(fmt, bitrate, previous.channels, previous.sample_rate)
    return replace(previous, bitrate=bitrate, sample_rate=rate,
                   expected_size=container + int((measured - container) * bitrate / previous.bitrate))


def _on_a_step(previous: EncodePlan, fmt: TargetFormat, measured: int) -> EncodePlan | None:
    """The highest of ``fmt``'s steps, in its own rate control, that its size model fits into what
    is left of the budget (after an encode in its between-steps control did not fit at the floor)."""
    for step in reversed([s for s in fmt.steps if fmt.floor <= s <= previous.bitrate]):
        rate = choose_sample_rate(fmt, step, previous.channels, previous.sample_rate)
        size = expected_size(fmt, step, rate, previous.duration, speech=previous.speech)
        if size <= previous.budget * HEADROOM and size < measured:
            return replace(previous, bitrate=step, sample_rate=rate, rate_control=fmt.rate_control,
                           expected_size=size)
    return None
