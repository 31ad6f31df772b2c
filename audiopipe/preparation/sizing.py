"""The size model's arithmetic, format by format: the bytes a plan is expected to come out at, the
bitrate a budget holds, the sample rate that suits a bitrate, and the bitrates an encoder takes.

Pure: every number is read off the :class:`TargetFormat` (formats.py says where each was measured);
:mod:`plan` builds its plans from these, and exports them.
"""

from __future__ import annotations

import math

from audiopipe.preparation.formats import STANDARD_RATES, TOP_RATE, TargetFormat, is_lossless
from audiopipe.preparation.probe import MediaInfo

# Aim this far under the budget at the first encode; verify() measures and re-plans anyway.
HEADROOM = 0.985


def expected_size(fmt: TargetFormat, bitrate: float, sample_rate: int, duration: float, *,
                  speech: bool = False) -> int:
    seconds = duration + fmt.padding_seconds
    return math.ceil(fmt.fixed_overhead + seconds * fmt.bytes_per_second(bitrate, sample_rate, speech))


def likely_speech(info: MediaInfo, voice_note: bool = False) -> bool:
    """Whether to size for speech: a voice note, or a mono source (recorded voice is; music rarely
    is). A cheap guess from the probe alone: a wrong one costs a re-plan or some unused budget."""
    return voice_note or info.audio.channels == 1


def bitrate_for(fmt: TargetFormat, budget: float, duration: float, sample_rate: int, *,
                speech: bool = False, ceiling: float = math.inf) -> float:
    """The highest nominal bitrate, at most ``ceiling``, whose expected size is at most ``budget``
    bytes (may be below the floor), through the format's factor for each bitrate band. The ceiling
    is applied band by band, not to the answer: a band under it may spend more per nominal bit than
    the band the budget alone reaches, and a bitrate cut down into it could overshoot the budget."""
    per_second = (budget - fmt.fixed_overhead) / max(duration + fmt.padding_seconds, 1e-3)
    frames = sample_rate / fmt.frame_samples if fmt.bytes_per_frame else 0.0
    payload_bits = max(0.0, (per_second - fmt.overhead_per_second - frames * fmt.bytes_per_frame) * 8)
    # Each band [low, below) has its own factor: the bitrate it allows there, kept within the band;
    # a band whose allowance falls under its low end is out of reach. The highest reachable wins.
    bands = fmt.bands(speech)
    top = min(payload_bits / fmt.bitrate_factor, ceiling)
    best = top if top >= (bands[-1][0] if bands else 0) else 0.0
    low = 0
    for below, factor in bands:
        allowed = min(payload_bits / factor, ceiling)
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
