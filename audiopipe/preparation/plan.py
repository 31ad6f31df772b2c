"""plan(): choose codec settings so the output fits the byte budget. Pure: no I/O, unit-tested.

The size model is ``fixed + duration × bytes_per_second(bitrate)`` (see formats.py), and every rule
that differs between formats (the sample rates an encoder takes, when stereo is worth it) is read off
the :class:`TargetFormat`: nothing here asks which format it is holding. The plan takes
the highest sensible bitrate that fits after container overhead, never above what the source carries
and never below the format's quality floor; when even the floor cannot hold the duration it raises
:class:`DoesNotFit`, saying how many seconds would fit, so the caller can trim, split or fail.
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
    "FILL_BELOW", "HEADROOM", "MPEG1_RATES", "MPEG2_RATES", "MPEG25_RATES", "STANDARD_RATES", "DoesNotFit",
    "EncodePlan", "bitrate_for", "choose_sample_rate", "corrected", "expected_size", "likely_speech",
    "measured_ratio", "plan", "quantize", "replan", "seconds_that_fit", "source_ceiling",
]

# Aim this far under the budget at the first encode; verify() measures and re-plans anyway.
HEADROOM = 0.985
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


def expected_size(fmt: TargetFormat, bitrate: float, sample_rate: int, duration: float, *,
                  speech: bool = False) -> int:
    return math.ceil(fmt.fixed_overhead + duration * fmt.bytes_per_second(bitrate, sample_rate, speech))


def likely_speech(info: MediaInfo, voice_note: bool = False) -> bool:
    """Whether to size for speech: a voice note, or a mono source (recorded voice is; music rarely
    is). A cheap guess from the probe alone: a wrong one costs a re-plan or some unused budget."""
    return voice_note or info.audio.channels == 1


def bitrate_for(fmt: TargetFormat, budget: float, duration: float, sample_rate: int, *,
                speech: bool = False) -> float:
    """The highest nominal bitrate whose expected size is at most ``budget`` bytes (may be below the
    floor), through the format's factor for each bitrate band."""
    per_second = (budget - fmt.fixed_overhead) / max(duration, 1e-3)
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
    return max(0.0, (budget * HEADROOM - fmt.fixed_overhead) / fmt.bytes_per_second(bitrate, sample_rate, speech))


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


def plan(  # noqa: PLR0913 - the public planner: every setting is its own keyword, named by the callers
    info: MediaInfo, fmt: TargetFormat, budget: int, *, bitrate_cap: int | None = None,
    channels: int | None = None, voice_note: bool = False, normalize: bool = False,
    duration: float | None = None, start: float = 0.0, fade_out: float = 0.0,
) -> EncodePlan:
    """Settings for encoding ``duration`` seconds of ``info`` (from ``start``) into ``budget`` bytes."""
    dur = info.duration - start if duration is None else duration
    speech = likely_speech(info, voice_note)
    if channels is not None:
        out_channels = max(1, min(channels, fmt.max_channels))
    elif voice_note:
        out_channels = 1
    else:
        out_channels = max(1, min(info.audio.channels, fmt.max_channels, 2))

    def ceiling_for(ch: int) -> int:
        ceiling = fmt.ceiling(ch)
        if info.audio.sample_rate <= 16000:
            ceiling = min(ceiling, 32000 * ch)  # a narrowband source needs no more
        highest = fmt.highest_bitrate_at(info.audio.sample_rate)
        if highest is not None:
            ceiling = min(ceiling, highest)  # a higher one would need a higher rate: never upsample for it
        for cap in (bitrate_cap, source_ceiling(info)):
            if cap:
                ceiling = min(ceiling, max(cap, fmt.floor))
        return ceiling

    def fitting(ch: int) -> tuple[int, int]:
        rate = choose_sample_rate(fmt, fmt.ceiling(ch), ch, info.audio.sample_rate)
        raw = bitrate_for(fmt, budget * HEADROOM, dur, rate, speech=speech)
        b = quantize(fmt, min(raw, ceiling_for(ch)))
        rate = choose_sample_rate(fmt, b, ch, info.audio.sample_rate)
        # a lower sample rate may change the container overhead; check again at that rate
        raw = bitrate_for(fmt, budget * HEADROOM, dur, rate, speech=speech)
        # (up to the floor: the first pass may have fallen below it only by the higher rate's overhead)
        b = quantize(fmt, min(raw, ceiling_for(ch), max(b, fmt.floor)))
        return b, choose_sample_rate(fmt, b, ch, info.audio.sample_rate)

    bitrate, rate = fitting(out_channels)
    if channels is None and out_channels == 2 and bitrate < fmt.stereo_min:
        out_channels = 1
        bitrate, rate = fitting(1)
    size = expected_size(fmt, bitrate, rate, dur, speech=speech)
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
        ceiling=quantize(fmt, ceiling_for(out_channels)))


def measured_ratio(previous: EncodePlan, fmt: TargetFormat, measured: int) -> float:
    """How the payload of an output of ``previous`` that came out ``measured`` bytes compares with
    what ``fmt``'s size model expects for it (the container's own bytes, the same at any bitrate,
    left out)."""
    container = expected_size(fmt, 0, previous.sample_rate, previous.duration)
    expected = expected_size(fmt, previous.bitrate, previous.sample_rate, previous.duration, speech=previous.speech)
    return max(measured - container, 1) / max(expected - container, 1)


def corrected(fmt: TargetFormat, ratio: float) -> TargetFormat:
    """``fmt`` with its size model scaled by ``ratio``: what one input's measured output says the
    encoder really does with it, for planning that input again."""
    def scaled(bands: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        return tuple((below, factor * ratio) for below, factor in bands)

    speech = None if fmt.speech_factor_bands is None else scaled(fmt.speech_factor_bands)
    return replace(fmt, bitrate_factor=fmt.bitrate_factor * ratio, factor_bands=scaled(fmt.factor_bands),
                   speech_factor_bands=speech)


def replan(previous: EncodePlan, fmt: TargetFormat, measured: int) -> EncodePlan | None:
    """A lower bitrate after an output came out ``measured`` bytes against its budget.

    Scales the payload (the bytes the bitrate decides: the container's own are the same at any
    bitrate) by what was measured, so the model's error for this very input, a VBR encoder's
    overshoot included, is corrected by what really happened; always at least one step down. None
    when already at the floor.
    """
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
