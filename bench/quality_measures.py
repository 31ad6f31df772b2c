"""What bench_quality.py scores an output with, against its source, both decoded to mono:

- speech: wideband PESQ (ITU-T P.862.2, the ``pesq`` package) at 16 kHz, MOS-LQO 1.0-4.64, the mean
  over 15-s stretches (P.862 is made for samples of 8-30 s); higher is better;
- music-like: no PESQ (it is a speech model). The proxy is the log-spectral distance in dB between
  the source's and the output's 1/3-octave band energies (50 Hz-16 kHz, 32 ms frames, frames within
  50 dB of the loudest); lower is better. Its limits: it sees only each band's energy, so it is blind
  to phase, pre-echo and smearing within a frame, and a codec's noise filling that matches a band's
  energy scores as if it were the real signal; it says "the spectrum survived", not "it sounds right".

A source is decoded once per run (it is scored against every output made from it).
"""

from __future__ import annotations

import functools
import itertools
import statistics
import subprocess
from pathlib import Path
from typing import Any

import common
from common import fail

PESQ = "PESQ-WB"
LSD = "LSD dB"


def metric_for(kind: str) -> str:
    return LSD if kind == "music" else PESQ


def better(metric: str, ours: float, theirs: float) -> float:
    """audiopipe's score against the other's, > 1 when audiopipe's output is the better one."""
    return ours / theirs if metric == PESQ else theirs / ours


def score(metric: str, source: Path, output: Path) -> float:
    return pesq_wb(source, output) if metric == PESQ else spectral_distance(source, output)


def decoded(path: Path, rate: int) -> Any:
    """``path`` at ``rate``, mixed down to mono, as float. Float, not s16: ffmpeg mixes stereo down to
    mono at (L+R)/sqrt(2) into float (what an encoder given -ac 1 gets), but scales its matrix down to
    (L+R)/2 into integer samples, so a stereo source decoded to s16 came out 3 dB under a mono output
    made from it, and the spectral distance charged that 3 dB to every mono output of a stereo source."""
    import numpy as np
    raw = subprocess.run([common.ffmpeg_bin(), "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(rate),
                          "-f", "f32le", "-"], capture_output=True, check=True, stdin=subprocess.DEVNULL).stdout
    return np.frombuffer(raw, dtype=np.float32).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _source(path: Path, rate: int) -> Any:
    return decoded(path, rate)


def pesq_wb(ref: Path, deg: Path) -> float:
    """Mean wideband PESQ over 15-s stretches: the ``pesq`` package's C code crashes on minutes, and
    both signals are time-aligned (decoders drop their encoder's delay), so cutting them at the same
    points compares like with like."""
    from pesq import NoUtterancesError, pesq
    a, b = _source(ref, 16000), decoded(deg, 16000)
    n, step = min(len(a), len(b)), 15 * 16000
    scores = []
    for start in range(0, n, step):
        end = min(n, start + step)
        if end - start < 5 * 16000 and scores:
            break  # a last stretch under 5 s: too short for PESQ to judge
        try:
            scores.append(float(pesq(16000, a[start:end], b[start:end], "wb")))
        except NoUtterancesError:
            continue  # a stretch of pause only
    if not scores:
        fail(f"PESQ found no speech in {ref.name}")
    return statistics.mean(scores)


def spectral_distance(ref: Path, deg: Path) -> float:
    """Mean log-spectral distance (dB) over 1/3-octave bands, 50 Hz-16 kHz (see the module docstring)."""
    import numpy as np
    rate, size = 32000, 1024
    a, b = _source(ref, rate), decoded(deg, rate)
    n = (min(len(a), len(b)) // size) * size
    window = np.hanning(size)

    def bands(x: Any) -> Any:
        spec = np.abs(np.fft.rfft(x[:n].reshape(-1, size) * window, axis=1)) ** 2
        freqs = np.fft.rfftfreq(size, 1 / rate)
        edges = 50 * 2 ** (np.arange(0, 29) / 3)
        edges = edges[edges <= 16000]
        cols = [spec[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in itertools.pairwise(edges)]
        return 10 * np.log10(np.stack(cols, axis=1) + 1e-10)

    ra, rb = bands(a), bands(b)
    loud = ra.max(axis=1) > ra.max() - 50
    return float(np.mean(np.sqrt(np.mean((ra[loud] - rb[loud]) ** 2, axis=1))))
