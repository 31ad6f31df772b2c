"""The baselines of bench_quality.py: the plain command a user would type for each format, and the one
parameter of it (a bitrate, or LAME's -q:a) that gives the same file size as audiopipe's output.

Matching is a bisection in log size (size grows about in proportion to a bitrate, and about
exponentially as -q:a falls), each step interpolating between the closest tries either side of the
target, else extrapolating the last two tries' slope. It stops within ``tolerance`` of the target,
after ``tries`` encodes, or when the parameter's range cannot reach the target (LAME's VBR has a
floor: -q:a 9.99 on 12 kHz speech is still about 22 kbit/s); the closest try is kept and its size
shown beside its score, flagged when it is more than MATCHED away.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from common import ffmpeg

MATCHED = 0.03  # sizes within this of audiopipe's are "the same size"; a wider gap is flagged in the table

# The bitrates (kbit/s) LAME's CBR takes: MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz), MPEG-2.5 (8-12 kHz).
MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
MPEG25_KBPS = (8, 16, 24, 32, 40, 48, 56, 64)


@dataclass(frozen=True)
class Plain:
    """``ffmpeg -i in.wav <options> out.EXT``, where one option is the matched parameter ``{p}``."""

    label: str                   # its name in the table
    options: tuple[str, ...]     # the output options; "{p}" stands for the parameter, "{r}" for ``rate``
    ext: str
    lo: float                    # the parameter's range
    hi: float
    rate: int = 0                # the sample rate "{r}" asks for (audiopipe's, for MP3)
    quality_scale: bool = False  # LAME's -q:a (size falls as it grows) rather than a bitrate
    steps: tuple[float, ...] = ()  # the only values it takes (LAME CBR), else any in [lo, hi]

    def argv(self, p: float) -> list[str]:
        value = f"{p:.2f}" if self.quality_scale else str(round(p))
        return [o.replace("{p}", value).replace("{r}", str(self.rate)) for o in self.options]

    def command(self) -> str:
        """The command as the table shows it: N or Q for the parameter, R for audiopipe's sample rate."""
        options = " ".join(self.options).replace("{p}", "Q" if self.quality_scale else "N").replace("{r}", "R")
        return f"ffmpeg -i in.wav {options} out.{self.ext}"

    def shown(self, p: float) -> str:
        return f"q {p:.2f}" if self.quality_scale else f"{p / 1000:.1f}k"

    def _u(self, p: float) -> float:
        """The parameter on the scale where log size is about linear in it."""
        return p if self.quality_scale else math.log(p)

    def _p(self, u: float) -> float:
        return u if self.quality_scale else math.exp(u)


def plains_for(fmt: str, sample_rate: int, channels: int, bitrate: int, *, before: bool = True) -> list[Plain]:
    """The plain commands to compare audiopipe's ``fmt`` output with (the first is the main one).

    Opus: the plain VBR command, and CBR with audiopipe's channels and application (what audiopipe did
    before issue 13), for the record (``before``). MP3: LAME's VBR and CBR, both at audiopipe's sample
    rate: at the source's 48 kHz LAME's CBR cannot go under 32 kbit/s (MPEG-1) nor its VBR under about
    36 on the bench's speech, so a user after a speech budget's size has to pick a rate too, and the
    same rate leaves only the rate control to compare.
    M4A: the native AAC encoder's -b:a, as typed (at the source's rate)."""
    if fmt == "ogg":
        application = "voip" if bitrate / max(1, channels) <= 24000 else "audio"
        vbr = Plain("plain VBR -b:a", ("-c:a", "libopus", "-b:a", "{p}"), "ogg", 500, 256000)
        cbr = Plain("CBR (before)", ("-c:a", "libopus", "-b:a", "{p}", "-vbr", "off", "-ac", str(channels),
                                     "-application", application), "ogg", 500, 256000)
        return [vbr, cbr] if before else [vbr]
    if fmt == "mp3":
        kbps = MPEG1_KBPS if sample_rate >= 32000 else MPEG2_KBPS if sample_rate >= 16000 else MPEG25_KBPS
        return [Plain("VBR -q:a", ("-c:a", "libmp3lame", "-q:a", "{p}", "-ar", "{r}"), "mp3", 0.0, 9.99,
                      rate=sample_rate, quality_scale=True),
                Plain("CBR -b:a", ("-c:a", "libmp3lame", "-b:a", "{p}", "-ar", "{r}"), "mp3", kbps[0] * 1000,
                      kbps[-1] * 1000, rate=sample_rate, steps=tuple(k * 1000.0 for k in kbps))]
    if fmt == "m4a":
        return [Plain("plain -b:a", ("-c:a", "aac", "-b:a", "{p}"), "m4a", 6000, 320000)]
    raise ValueError(f"no plain command for {fmt}")


def encode_plain(source: Path, plain: Plain, p: float, dest: Path) -> int:
    """Run the plain command; the output's size."""
    ffmpeg(["-i", str(source), *plain.argv(p), str(dest)])
    return dest.stat().st_size


def match_size(source: Path, plain: Plain, target: int, seconds: float, dest: Path, *,
               tolerance: float, tries: int) -> tuple[float, int, int]:
    """The parameter whose output comes closest to ``target`` bytes, its size, and the encodes it took;
    that output is left at ``dest``."""
    p = _clamp(plain, 5.0 if plain.quality_scale else target * 8 / seconds)
    tried: dict[float, int] = {}
    while True:
        p = _snap(plain, p)
        tried[p] = encode_plain(source, plain, p, dest.with_name(f"{dest.stem}-{len(tried) + 1}{dest.suffix}"))
        if abs(tried[p] / target - 1) <= tolerance or len(tried) >= tries:
            break
        following = _next_guess(plain, tried, target)
        if following is None:
            break
        p = following
    best = min(tried, key=lambda q: abs(tried[q] - target))
    index = list(tried).index(best) + 1
    os.replace(dest.with_name(f"{dest.stem}-{index}{dest.suffix}"), dest)
    for i in range(1, len(tried) + 1):
        dest.with_name(f"{dest.stem}-{i}{dest.suffix}").unlink(missing_ok=True)
    return best, tried[best], len(tried)


def _clamp(plain: Plain, p: float) -> float:
    return min(plain.hi, max(plain.lo, p))


def _snap(plain: Plain, p: float) -> float:
    """A value the command takes: the nearest step, or a bitrate to the whole bit/s (-q:a to 0.01)."""
    if plain.steps:
        return min(plain.steps, key=lambda s: abs(s - p))
    return round(p, 2) if plain.quality_scale else float(round(p))


def _next_guess(plain: Plain, tried: dict[float, int], target: int) -> float | None:
    """Where to try next; None when no untried value can come closer (the range's end, or two
    adjacent steps either side of the target)."""
    goal = math.log(target)
    pts = [(plain._u(p), math.log(s)) for p, s in tried.items()]
    under = [pt for pt in pts if pt[1] < goal]
    over = [pt for pt in pts if pt[1] > goal]
    if under and over:  # bracketed: interpolate between the closest either side, kept off the ends
        a, b = max(under, key=lambda pt: pt[1]), min(over, key=lambda pt: pt[1])
        t = min(0.9, max(0.1, (goal - a[1]) / (b[1] - a[1])))
        if len(pts) > 2 and (pts[-1][1] < goal) == (pts[-2][1] < goal):
            t = 0.5  # the last two landed on the same side: the size is far from linear here (plain
            # Opus on stereo music jumps by 75 % between -b:a 20.2k and 20.6k), so halve the bracket
        u = a[0] + t * (b[0] - a[0])
        lo_u, hi_u = sorted((a[0], b[0]))
        if hi_u - lo_u < (0.05 if plain.quality_scale else 0.02):
            return None  # a step in the size between two close values (plain Opus on stereo music)
    else:  # one side only: extrapolate along the last two tries' slope (or the usual one)
        last, prev = pts[-1], pts[-2] if len(pts) > 1 else None
        slope = -0.15 if plain.quality_scale else 1.0
        if prev is not None and last[0] != prev[0] and (last[1] - prev[1]) / (last[0] - prev[0]) * slope > 0:
            slope = (last[1] - prev[1]) / (last[0] - prev[0])
        u = last[0] + (goal - last[1]) / slope
        lo_u, hi_u = plain._u(plain.lo), plain._u(plain.hi)
    candidate = _snap(plain, _clamp(plain, plain._p(u)))
    if candidate in tried and plain.steps:  # the nearest step was tried: the next one inside the bracket
        inside = [s for s in plain.steps if s not in tried and lo_u < plain._u(s) < hi_u]
        candidate = min(inside, key=lambda s: abs(plain._u(s) - u)) if inside else candidate
    return None if candidate in tried else candidate
