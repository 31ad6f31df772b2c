"""Native AAC at each sample rate, at the same file size: the numbers behind formats.AAC_RATE_LADDER.

    .venv/bin/python bench/quality_rates.py                      # m4a, 7 sources x 6 budgets x 5 rates: ~20 min
    .venv/bin/python bench/quality_rates.py --budgets 20,22,24 --rates 16000,48000 --sources speech,man
    .venv/bin/python bench/quality_rates.py --format aac         # ADTS (7 bytes a frame: 2.6k at 48 kHz)
    .venv/bin/python bench/quality_rates.py --format mp3 --budgets 32,40,48,56,64 --stereo-budgets 64,80,96 \
        --rates 22050,24000,32000,44100,48000 --sources man,woman,f3,m5,en,music   # LAME CBR: formats.MP3_RATE_LADDER
    .venv/bin/python bench/quality_rates.py --smoke              # 15 s of speech at 24k, 16 and 48 kHz (the test)

Not a test. For each source and budget (kbit/s x the source's length), ``ffmpeg -i in.wav -c:a aac -b:a N
-ar R -ac C`` at each rate R, N matched to the budget's size by quality_plain.match_size (within 1 %), then
scored as bench_quality scores (quality_measures: wideband PESQ on speech, the 1/3-octave spectral
distance on the music-like source). Mono budgets for every source; stereo ones (64, 96, 128) for music.
Speech: the bench's mixed voices and its sparse speech (60 s), and espeak-ng voices alone (about 45 s,
calibrate_sizes.one_voice). At 48 kHz the encoder cannot come down to the smallest budgets at all: such
a cell shows the size it came to. ``--format mp3``: LAME CBR at the budget's bitrate (a step: its size is
exact, the same at every rate), not matched. Prints one table per source (the best rate of each budget in bold)
and the mean PESQ per rate and budget over the speech sources; writes OUT/quality_rates.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import common
from common import add_dir_options, ffmpeg, fresh_dir, log, md_table, run_main, set_dirs
from quality_measures import LSD, PESQ, better, metric_for, score
from quality_plain import Plain, match_size
from quality_sources import make_music, make_speech, wav_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from calibrate_sizes import one_voice  # noqa: E402 - it puts the project on sys.path too

SOURCES: dict[str, Callable[[], Path]] = {
    "speech": lambda: make_speech(60, (0.2, 1.2), 1),
    "sparse": lambda: make_speech(60, (2.5, 4.5), 2),
    "man": lambda: one_voice("en-gb-scotland+m3"),
    "woman": lambda: one_voice("en-us+f2"),
    "f3": lambda: one_voice("en-us+f3"),
    "m5": lambda: one_voice("en+m5"),
    "en": lambda: one_voice("en"),
    "music": lambda: make_music(30),
    "short": lambda: make_speech(15, (0.2, 1.2), 1),  # --smoke's
}
MONO_BUDGETS = (16, 20, 24, 32, 48, 64)
STEREO_BUDGETS = (64, 96, 128)
RATES = (16000, 22050, 24000, 32000, 48000)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def cell(source: Path, ext: str, rate: int, channels: int, budget: int, seconds: float,
         work: Path) -> tuple[float, float]:
    """(score, size / budget) of native AAC at ``rate`` matched to ``budget`` bytes (MP3: CBR at its bitrate)."""
    dest = work / f"out.{ext}"
    if ext == "mp3":
        kbps = round(budget / seconds / 125)
        ffmpeg(["-i", str(source), "-c:a", "libmp3lame", "-b:a", f"{kbps}k", "-ar", str(rate), "-ac", str(channels),
                str(dest)])
        size = dest.stat().st_size
    else:
        options = ("-c:a", "aac", "-b:a", "{p}", "-ar", str(rate), "-ac", str(channels))
        plain = Plain(f"{rate}", options, ext, 6000, 320000)
        _, size, _ = match_size(source, plain, budget, seconds, dest, tolerance=0.01, tries=8)
    return score(metric_for("music" if source.stem.startswith("music") else "speech"), source, dest), size / budget


def table(name: str, args: argparse.Namespace, work: Path, means: dict[tuple[int, int], list[float]]) -> str:
    """One source's table (its score at each budget and rate); its PESQ scores also go into ``means``."""
    source = SOURCES[name]()
    seconds, music = wav_seconds(source), name == "music"
    rates = [min(r, 44100) if music else r for r in args.rates]
    layouts = [(1, args.budgets)] + ([(2, args.stereo_budgets)] if music else [])
    rows = []
    for channels, budgets in layouts:
        for kbps in budgets:
            got = [cell(source, args.format, r, channels, int(seconds * kbps * 125), seconds, work) for r in rates]
            metric = LSD if music else PESQ
            top = max(range(len(got)), key=lambda i: better(metric, got[i][0], got[0][0]))
            rows.append([f"{kbps}k {'stereo' if channels == 2 else 'mono'}"] + [
                (f"**{s:.2f}**" if i == top else f"{s:.2f}") + ("" if abs(r - 1) <= 0.02 else f" (size {r:.2f})")
                for i, (s, r) in enumerate(got)])
            for rate, (s, _) in zip(rates, got, strict=True):
                if not music:
                    means.setdefault((kbps, rate), []).append(s)
        log(f"  {name}: {len(budgets)} budgets")
    what = "1/3-octave spectral distance, dB (lower is better)" if music else "wideband PESQ"
    header = ["budget", *[f"{r} Hz" for r in rates]]
    return "\n".join([f"### {name} ({seconds:.0f} s): {what}", "", md_table(header, rows), ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", choices=("m4a", "aac", "mp3"), default="m4a")
    ap.add_argument("--sources", default="speech,sparse,man,woman,f3,m5,en,music", help=f"of {', '.join(SOURCES)}")
    ap.add_argument("--budgets", type=ints, default=MONO_BUDGETS, help="mono, kbit/s, comma-separated")
    ap.add_argument("--stereo-budgets", type=ints, default=STEREO_BUDGETS, help="music only")
    ap.add_argument("--rates", type=ints, default=RATES)
    ap.add_argument("--smoke", action="store_true", help="15 s of speech at 24k, 16 and 48 kHz (what the test runs)")
    add_dir_options(ap)
    args = ap.parse_args()
    if args.smoke:
        args.sources, args.budgets, args.rates = "short", (24,), (16000, 48000)
    set_dirs(args.work, args.out)
    work = fresh_dir(common.WORK / "quality_rates")
    means: dict[tuple[int, int], list[float]] = {}
    parts = [f"`{' '.join(['.venv/bin/python bench/quality_rates.py', *sys.argv[1:]])}`", ""]
    parts += [table(name, args, work, means) for name in args.sources.split(",")]
    if means:
        rows = [[f"{k}k", *[f"{statistics.mean(means[(k, r)]):.3f}" for r in args.rates]]
                for k in sorted({k for k, _ in means})]
        parts += ["### speech, mean PESQ over the sources", "",
                  md_table(["budget", *[f"{r} Hz" for r in args.rates]], rows), ""]
    text = "\n".join(parts)
    print(text)
    common.OUT.mkdir(parents=True, exist_ok=True)
    (common.OUT / "quality_rates.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    run_main("quality_rates", main)
