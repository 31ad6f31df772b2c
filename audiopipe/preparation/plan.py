"""plan(): choose codec settings so the output fits the byte budget. Pure: no I/O, unit-tested.

The size model is ``fixed + duration × bytes_per_second(bitrate)`` (see formats.py; its arithmetic
is :mod:`sizing`'s, whose names this module exports too), and every rule
that differs between formats (the sample rates an encoder takes, when stereo is worth it) is read off
the :class:`TargetFormat`: nothing here asks which format it is holding. The plan takes
the highest sensible bitrate that fits after container overhead, never above what the source carries
and never below the format's quality floor; when even the floor cannot hold the duration it raises
:class:`DoesNotFit`, saying how many seconds would fit, so the caller can trim, split or fail. A
format with coarse steps and a rate control for between them (MP3: CBR on LAME's steps, ABR between)
takes the step unless it would leave more than ``1 - STEP_USE`` of the budget unused; where the other
control's size strays too far to aim a first encode at (MP3's ABR above 28k: its
``blind_ceiling_per_channel``), only a plan for the fill (``fill=True``: an output that fits is made)
takes it, from its ``fill_from_per_channel``, whenever it is expected to come out fuller than the step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from audiopipe.errors import PrepareError
from audiopipe.preparation.formats import (
    MPEG1_RATES,
    MPEG2_RATES,
    MPEG25_RATES,
    STANDARD_RATES,
    RateControl,
    TargetFormat,
)
from audiopipe.preparation.probe import MediaInfo
from audiopipe.preparation.sizing import (
    HEADROOM,
    bitrate_for,
    choose_sample_rate,
    expected_size,
    likely_speech,
    quantize,
    seconds_that_fit,
    source_ceiling,
)

__all__ = [
    "FILL_BELOW", "HEADROOM", "MPEG1_RATES", "MPEG2_RATES", "MPEG25_RATES", "STANDARD_RATES", "STEP_USE",
    "DoesNotFit", "EncodePlan", "bitrate_for", "choose_sample_rate", "corrected", "expected_size", "likely_speech",
    "measured_ratio", "plan", "quantize", "replan", "seconds_that_fit", "source_ceiling",
]

# A format's step that would use less of the budget than this gives way to its between-steps rate
# control (MP3: CBR on LAME's steps, else ABR at the budget; where this comes from: formats.py).
STEP_USE = 0.92
# An output whose bitrate the budget limited, but which came out under this share of the budget, is
# encoded once more at the bitrate its measured size says would fit (see transcode's fill): content
# the size model did not foresee (speech with long pauses, which a VBR encoder codes for almost
# nothing) would otherwise leave a tenth of the budget, and that much quality, unused.
FILL_BELOW = 0.92


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
    ceiling: int = 0      # the bitrate an unlimited budget would get (source, format, --bitrate); 0: unknown


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
    fill: bool = False  # planned by the fill: an output that fits is made (see TargetFormat.blind_ceiling_per_channel)

    def ceiling(self, fmt: TargetFormat, ch: int) -> int:
        ceiling = fmt.ceiling(ch)
        if fmt.blind_ceiling_per_channel is not None and not self.fill:
            ceiling = min(ceiling, fmt.blind_ceiling_per_channel * max(1, min(ch, fmt.max_channels)))
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
        top = self.ceiling(fmt, ch)
        rate = choose_sample_rate(fmt, fmt.ceiling(ch), ch, source_rate)
        raw = bitrate_for(fmt, self.budget * HEADROOM, self.duration, rate, speech=self.speech, ceiling=top)
        b = quantize(fmt, raw)
        rate = choose_sample_rate(fmt, b, ch, source_rate)
        # a lower sample rate may change the container overhead; check again at that rate
        raw = bitrate_for(fmt, self.budget * HEADROOM, self.duration, rate, speech=self.speech, ceiling=top)
        # (up to the floor: the first pass may have fallen below it only by the higher rate's overhead)
        safe = quantize(fmt, min(raw, max(b, fmt.floor)))  # (raw is at most top: bitrate_for keeps it there)
        # higher still when the lower rate's fewer frames (AAC's per-frame bytes) leave room for it
        # and the rate that bitrate takes still fits
        up = quantize(fmt, raw)
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
        # (the fill, which measured the step under STEP_USE, takes the fuller whatever its model says)
        step_enough = not self.fill and self.size(fmt, fitted) >= STEP_USE * self.budget
        if other_fmt is None or not fitted.limited or step_enough:
            return fmt, fitted
        other = self.fit(other_fmt)
        if self.fill and _in_fill_gap(other_fmt, other):
            other = replace(self, fill=False).fit(other_fmt)  # back under its blind ceiling
        fuller = self.size(fmt, fitted) < self.size(other_fmt, other) <= self.budget
        # never at a lower sample rate than the step's (MP3: ABR there scored 0.3-0.6 PESQ under CBR)
        if other.limited and other.bitrate >= other_fmt.floor and fuller and other.sample_rate >= fitted.sample_rate:
            return other_fmt, other
        return fmt, fitted


def _in_fill_gap(fmt: TargetFormat, fitted: _Fit) -> bool:
    """Whether ``fitted`` is above ``fmt``'s blind ceiling but under where the fill takes it."""
    blind, start = fmt.blind_ceiling_per_channel, fmt.fill_from_per_channel
    per_channel = fitted.bitrate / fitted.channels
    return blind is not None and start is not None and blind < per_channel < start


def plan(  # noqa: PLR0913 - the public planner: every setting is its own keyword, named by the callers
    info: MediaInfo, fmt: TargetFormat, budget: int, *, bitrate_cap: int | None = None,
    channels: int | None = None, voice_note: bool = False, normalize: bool = False,
    duration: float | None = None, start: float = 0.0, fade_out: float = 0.0, fill: bool = False,
) -> EncodePlan:
    """Settings for encoding ``duration`` seconds of ``info`` (from ``start``) into ``budget`` bytes;
    ``fill``: for the fill, once an output that fits is made (a rate control may then go above its
    ``blind_ceiling_per_channel``: MP3's ABR between LAME's steps above 28k)."""
    dur = info.duration - start if duration is None else duration
    speech = likely_speech(info, voice_note)
    request = _Request(info, budget, dur, speech, channels, voice_note, bitrate_cap, fill)
    base, (fmt, fitted) = fmt, request.best(fmt)  # fmt: the rate control chosen (MP3: CBR or ABR)
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
        rate_control=fmt.rate_control, speech=speech, budget=budget, expected_size=size,
        ceiling=quantize(base, request.ceiling(base, out_channels)))


def measured_ratio(previous: EncodePlan, fmt: TargetFormat, measured: int) -> float:
    """How the payload of an output of ``previous`` that came out ``measured`` bytes compares with
    what ``fmt``'s size model expects for it (the container's own bytes, the same at any bitrate,
    left out), in the plan's rate control (MP3: CBR or ABR)."""
    fmt = fmt.in_control(previous.rate_control)
    container = expected_size(fmt, 0, previous.sample_rate, previous.duration)
    expected = expected_size(fmt, previous.bitrate, previous.sample_rate, previous.duration, speech=previous.speech)
    return max(measured - container, 1) / max(expected - container, 1)


def corrected(fmt: TargetFormat, ratio: float, control: RateControl | None = None) -> TargetFormat:
    """``fmt`` with its size model scaled by ``ratio``: what one input's measured output says the
    encoder really does with it, for planning that input again. ``control``: the rate control the
    ratio was measured in; only its model is scaled (MP3's ABR overshoot says nothing of its CBR)."""
    def scaled(bands: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        return tuple((below, factor * ratio) for below, factor in bands)

    measured = fmt.in_control(control) if control else fmt
    speech = None if measured.speech_factor_bands is None else scaled(measured.speech_factor_bands)
    fixed = replace(measured, bitrate_factor=measured.bitrate_factor * ratio,
                    factor_bands=scaled(measured.factor_bands), speech_factor_bands=speech)
    return fixed if measured is fmt else replace(fmt, between_steps=fixed)


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
