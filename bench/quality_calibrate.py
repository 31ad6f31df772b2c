"""``bench_quality.py --calibrate``: Opus constrained VBR's payload against its target, per content and
bitrate: the numbers behind formats.FORMATS['ogg'].factor_bands / speech_factor_bands."""

from __future__ import annotations

import sys
from typing import Any

import common
from common import md_table
from quality_sources import make_music, make_speech, wav_seconds

sys.path.insert(0, str(common.ROOT))
from audiopipe.preparation.encode import encode
from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.plan import EncodePlan, expected_size

CALIBRATE_RATES = (6000, 7000, 9000, 11000, 13000, 14000, 16000, 20000, 28000, 40000, 64000)


def calibrate(quick: bool) -> str:
    """The payload (output minus the size model's container bytes) over the target, as a table."""
    fmt = FORMATS["ogg"]
    seconds = 25.0 if quick else 120.0
    sources = {"speech": make_speech(seconds, (0.2, 1.2), 7), "sparse speech": make_speech(seconds, (2.5, 4.5), 8),
               "music-like": make_music(seconds)}
    rates = CALIBRATE_RATES[::3] if quick else CALIBRATE_RATES
    rows = []
    for label, src in sources.items():
        dur = wav_seconds(src)
        row: list[Any] = [label]
        for b in rates:
            p = EncodePlan(format="ogg", encoder=fmt.encoder, muxer=fmt.muxer, codec=fmt.codec, bitrate=b,
                           sample_rate=48000, channels=1, duration=dur, rate_control="cvbr",
                           application="voip" if b <= (fmt.speech_below or 0) else "audio")
            dest = common.WORK / "quality" / "calibrate.ogg"
            encode(src, p, dest)
            container = expected_size(fmt, 0, 48000, dur)
            row.append(f"{(dest.stat().st_size - container) * 8 / dur / b:.3f}")
        rows.append(row)
    return md_table(["payload / target (mono)", *[f"{b // 1000}k" for b in rates]], rows)
