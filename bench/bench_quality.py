"""Quality per byte: audiopipe's Opus against the plain command a user would type, at the same size.

    .venv/bin/python bench/bench_quality.py              # ~3-min sources, 6 cases, 10-min CPU run (~15 min)
    .venv/bin/python bench/bench_quality.py --quick      # 25-s sources, 1-2 budgets each, 1-min CPU run (~15 s)
    .venv/bin/python bench/bench_quality.py --calibrate  # Opus constrained-VBR payload / target (formats.py)

Not a test. Sources, made here (cached under WORK/quality):

- speech: espeak-ng sentences in several voices, rates and pitches, joined with 0.2-1.2 s pauses over
  a faint pink-noise floor (a quiet room), mono 48 kHz;
- sparse speech: the same with 2.5-4.5 s pauses (silence-heavy: where VBR saves the most);
- music-like: a stereo 44.1 kHz chord progression with an arpeggio and hi-hat noise bursts (lavfi).

For each source and budget (a bitrate x the duration, as a recording that long would get in 16 MB):
``prepare_file(..., PrepareSettings(format="ogg", max_size=budget))`` gives audiopipe's output, its
passes and its budget use; the baseline is ``ffmpeg -i in.wav -c:a libopus -b:a N out.ogg`` with N
found by bisection so that its size is within 2 % of audiopipe's. Quality, both decoded to mono:

- speech: wideband PESQ (ITU-T P.862.2, the ``pesq`` package) at 16 kHz, MOS-LQO 1.0-4.64, the
  mean over 15-s stretches (P.862 is made for short samples);
- music-like: no PESQ (it is a speech model). The proxy is the log-spectral distance in dB between
  the source's and the output's 1/3-octave band energies (50 Hz-16 kHz, 32 ms frames, frames within
  50 dB of the loudest): lower is better. Its limits: it sees only each band's energy, so it is blind
  to phase, pre-echo and smearing within a frame, and a codec's noise filling that matches a band's
  energy scores as if it were the real signal; it says "the spectrum survived", not "it sounds right".

CPU: user+system seconds of ``audiopipe prepare`` (Python, ffprobe, ffmpeg, verify: everything) on a
10-minute speech WAV against the plain command at the bitrate audiopipe chose, interleaved, median.

Prints a Markdown table with the command, date and commit (also OUT/quality.md and OUT/quality.json).
Needs espeak-ng (``make system-deps`` installs it) and the ``pesq`` package (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common
from common import (
    AUDIOPIPE,
    ForeignLoad,
    add_dir_options,
    fail,
    ffmpeg,
    ffmpeg_version,
    fresh_dir,
    log,
    md_table,
    run_main,
    set_dirs,
    wait_quiet,
)
from quality_sources import channels_of, looped, make_music, make_speech, wav_seconds

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
from audiopipe.preparation.encode import encode  # noqa: E402
from audiopipe.preparation.formats import FORMATS  # noqa: E402
from audiopipe.preparation.pipeline import prepare_file  # noqa: E402
from audiopipe.preparation.plan import EncodePlan, expected_size  # noqa: E402
from audiopipe.preparation.settings import PrepareSettings  # noqa: E402

SIZE_MATCH = 0.02   # the baseline's size within this of audiopipe's
CALIBRATE_RATES = (6000, 7000, 9000, 11000, 13000, 14000, 16000, 20000, 28000, 40000, 64000)


# --- measures ------------------------------------------------------------------------------------

def decoded(path: Path, rate: int) -> Any:
    import numpy as np
    raw = subprocess.run([common.ffmpeg_bin(), "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(rate),
                          "-f", "s16le", "-"], capture_output=True, check=True, stdin=subprocess.DEVNULL).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64) / 32768.0


def pesq_wb(ref: Path, deg: Path) -> float:
    """Mean wideband PESQ over 15-s stretches: P.862 is made for samples of 8-30 s (the ``pesq``
    package's C code crashes on minutes), and both signals are time-aligned (Opus's decoder drops
    its pre-skip), so cutting them at the same points compares like with like."""
    from pesq import NoUtterancesError, pesq
    a, b = decoded(ref, 16000), decoded(deg, 16000)
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
    a, b = decoded(ref, rate), decoded(deg, rate)
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


def plain_opus(source: Path, bitrate: int, dest: Path, extra: tuple[str, ...] = ()) -> int:
    """The command a user would type (``extra``: options after the bitrate); returns the output's size."""
    ffmpeg(["-i", str(source), "-c:a", "libopus", "-b:a", str(bitrate), *extra, str(dest)])
    return dest.stat().st_size


def plain_at_size(source: Path, target: int, seconds: float, dest: Path,
                  extra: tuple[str, ...] = ()) -> tuple[int, int]:
    """The plain command's bitrate whose output is within SIZE_MATCH of ``target`` bytes (bisection on
    the bitrate, starting from the proportional guess); the closest found when none is."""
    lo, hi = 500, 256000
    guess = max(lo, min(hi, int(target * 8 / seconds)))
    best: tuple[int, int] | None = None
    for _ in range(12):
        size = plain_opus(source, guess, dest, extra)
        if best is None or abs(size - target) < abs(best[1] - target):
            best = (guess, size)
        if abs(size - target) <= SIZE_MATCH * target / 2:
            break
        if size > target:
            hi = guess
        else:
            lo = guess
        proportional = int(guess * target / size)
        guess = proportional if lo < proportional < hi else (lo + hi) // 2
    assert best is not None
    plain_opus(source, best[0], dest, extra)  # leave the closest one there
    return best


# --- the cases -----------------------------------------------------------------------------------

def run_case(source: Path, kind: str, kbps: float, seconds: float) -> dict[str, Any]:
    budget = int(seconds * kbps * 1000 / 8)
    work = fresh_dir(common.WORK / "quality" / "out" / f"{source.stem}-{kbps:g}")
    result = prepare_file(source, work / "ap", PrepareSettings(format="ogg", max_size=budget, cache=False))
    if len(result.outputs) != 1:
        fail(f"{source.name} at {budget:,} bytes came out in {len(result.outputs)} parts ({result.action})")
    out = result.outputs[0]
    if out.size > budget:
        fail(f"{source.name}: audiopipe's output is {out.size:,} bytes, over its {budget:,}-byte budget")
    plain = work / "plain.ogg"
    n, plain_size = plain_at_size(source, out.size, seconds, plain)
    measure = pesq_wb if kind != "music" else spectral_distance
    ours, theirs = measure(source, out.path), measure(source, plain)
    # what audiopipe did before (CBR, mono, the same application) at the same size, for the record
    cbr = work / "cbr.ogg"
    before_args = ("-vbr", "off", "-ac", channels_of(out.path), "-application",
                   "voip" if out.bitrate <= 24000 else "audio")
    _, cbr_size = plain_at_size(source, out.size, seconds, cbr, before_args)
    before = measure(source, cbr)
    return {"source": kind, "seconds": round(seconds, 1), "kbps": kbps, "budget": budget, "size": out.size,
            "bitrate": out.bitrate, "passes": result.passes, "use": out.size / budget, "plain_bitrate": n,
            "plain_size": plain_size, "size_match": plain_size / out.size - 1,
            "metric": "PESQ-WB" if kind != "music" else "LSD dB", "audiopipe": ours, "plain": theirs,
            "cbr": before, "cbr_size": cbr_size}


def cpu_of(argv: list[str]) -> tuple[float, str]:
    """User+system CPU seconds of ``argv`` and everything it started; and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        fail(f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr[-300:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def cpu_case(source: Path, kbps: float, reps: int) -> dict[str, Any]:
    """audiopipe prepare (the CLI: start-up, probe, encode, verify) against the plain command at the
    bitrate audiopipe chose, interleaved."""
    seconds = wav_seconds(source)
    budget = int(seconds * kbps * 1000 / 8)
    work = common.WORK / "quality" / "cpu"
    ours, theirs, loads, bitrate = [], [], [], 0
    for _ in range(reps):
        out = fresh_dir(work / "ap")
        wait_quiet("cpu")
        meter = ForeignLoad()
        took, said = cpu_of([*AUDIOPIPE, "prepare", str(source), "--out", str(out), "--format", "ogg",
                             "--max-size", str(budget), "--no-cache", "--json"])
        loads.append(meter.cores() or 0.0)
        ours.append(took)
        bitrate = json.loads(said.strip().splitlines()[-1])["outputs"][0]["bitrate"]
        wait_quiet("cpu")
        meter = ForeignLoad()
        theirs.append(cpu_of([common.ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-i", str(source), "-c:a",
                              "libopus", "-b:a", str(bitrate), str(work / "plain.ogg")])[0])
        loads.append(meter.cores() or 0.0)
    return {"seconds": seconds, "kbps": kbps, "bitrate": bitrate, "audiopipe_cpu": statistics.median(ours),
            "plain_cpu": statistics.median(theirs), "ratio": statistics.median(ours) / statistics.median(theirs),
            "other_cores": max(loads), "reps": reps}


def calibrate(quick: bool) -> str:
    """Constrained VBR's payload against its target, per source and bitrate: the numbers behind
    formats.FORMATS['ogg'].factor_bands / speech_factor_bands."""
    fmt = FORMATS["ogg"]
    seconds = 25.0 if quick else 120.0
    sources = {"speech": make_speech(seconds, (0.2, 1.2), 7), "sparse speech": make_speech(seconds, (2.5, 4.5), 8),
               "music-like": make_music(seconds)}
    rows = []
    for label, src in sources.items():
        dur = wav_seconds(src)
        row: list[Any] = [label]
        for b in CALIBRATE_RATES[::3] if quick else CALIBRATE_RATES:
            p = EncodePlan(format="ogg", encoder=fmt.encoder, muxer=fmt.muxer, codec=fmt.codec, bitrate=b,
                           sample_rate=48000, channels=1, duration=dur, rate_control="cvbr",
                           application="voip" if b <= (fmt.speech_below or 0) else "audio")
            dest = common.WORK / "quality" / "calibrate.ogg"
            encode(src, p, dest)
            container = expected_size(fmt, 0, 48000, dur)
            row.append(f"{(dest.stat().st_size - container) * 8 / dur / b:.3f}")
        rows.append(row)
    rates = [f"{b // 1000}k" for b in (CALIBRATE_RATES[::3] if quick else CALIBRATE_RATES)]
    return md_table(["payload / target (mono)", *rates], rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="25-s sources, fewer budgets, a 1-min CPU run")
    ap.add_argument("--calibrate", action="store_true", help="only the Opus payload/target table")
    ap.add_argument("--reps", type=int, default=None, help="CPU runs each way (default 3; 1 with --quick)")
    add_dir_options(ap)
    args = ap.parse_args()
    set_dirs(args.work, args.out)
    modes = [a for a in sys.argv[1:] if a in ("--quick", "--calibrate")]
    cmd = " ".join([".venv/bin/python bench/bench_quality.py", *modes])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    started = ForeignLoad()
    header = (f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, git {head}, {os.cpu_count()} vCPUs, "
              f"{ffmpeg_version()})")
    if args.calibrate:
        text = header + "\n\n" + calibrate(args.quick)
        print(text)
        common.OUT.mkdir(parents=True, exist_ok=True)
        (common.OUT / "quality-calibrate.md").write_text(text + "\n")
        return 0
    import pesq  # noqa: F401 - fail here, in one line, when the bench extra is missing
    seconds = 25.0 if args.quick else 180.0
    speech = make_speech(seconds, (0.2, 1.2), 1)
    plan: list[tuple[Path, str, tuple[float, ...]]] = [
        (speech, "speech", (12, 24) if args.quick else (8, 12, 24)),
        (make_speech(seconds, (2.5, 4.5), 2), "sparse speech", (12,)),
        (make_music(seconds), "music", (24,) if args.quick else (24, 48)),
    ]
    results = []
    for src, kind, rates in plan:
        dur = wav_seconds(src)
        for kbps in rates:
            log(f"  {kind} {dur:.0f} s at {kbps:g} kbit/s ...")
            results.append(run_case(src, kind, kbps, dur))
    cpu = cpu_case(looped(speech, 60.0 if args.quick else 600.0), 16, args.reps or (1 if args.quick else 3))
    text = report(header, results, cpu, started.cores())
    print(text)
    common.OUT.mkdir(parents=True, exist_ok=True)
    (common.OUT / "quality.md").write_text(text + "\n")
    (common.OUT / "quality.json").write_text(json.dumps({"command": cmd, "git_head": head, "cases": results,
                                                         "cpu": cpu}, indent=2))
    return 0


def report(header: str, results: list[dict[str, Any]], cpu: dict[str, Any], other: float | None) -> str:
    rows = []
    for r in results:
        better = r["audiopipe"] / r["plain"] if r["metric"] == "PESQ-WB" else r["plain"] / r["audiopipe"]
        rows.append([r["source"], f"{r['kbps']:g}k x {r['seconds']:.0f} s = {r['budget']:,}",
                     f"{r['size']:,} ({100 * r['use']:.1f} %), {r['passes']} pass{'es' if r['passes'] > 1 else ''}",
                     f"{r['bitrate'] / 1000:.1f}k",
                     f"{r['plain_bitrate'] / 1000:.1f}k ({100 * r['size_match']:+.1f} %)",
                     r["metric"], f"{r['audiopipe']:.2f}", f"{r['plain']:.2f}", f"{better:.3f}",
                     f"{r['cbr']:.2f}"])
    first = sum(r["passes"] == 1 for r in results)
    uses = [r["use"] for r in results]
    speech_uses = [r["use"] for r in results if r["source"] == "speech"]
    lines = [
        header + f"; other processes used {other or 0:.2f} cores meanwhile",
        "",
        md_table(["source", "budget (bytes)", "audiopipe size (use), passes", "its bitrate",
                  "plain -b:a (size vs ours)", "measure", "audiopipe", "plain", "ratio (>1: audiopipe better)",
                  "CBR, same size (before)"],
                 rows),
        "",
        f"| first encode fits | {first}/{len(results)} = {100 * first / len(results):.0f} % |",
        f"| budget use, all cases: min / median | {100 * min(uses):.1f} % / {100 * statistics.median(uses):.1f} % |",
        f"| budget use, speech: min | {100 * min(speech_uses):.1f} % |",
        f"| CPU, {cpu['seconds'] / 60:.0f}-min speech WAV at {cpu['kbps']}k: audiopipe prepare / plain -b:a "
        f"{cpu['bitrate'] / 1000:.1f}k (median of {cpu['reps']}) | {cpu['audiopipe_cpu']:.2f} s / "
        f"{cpu['plain_cpu']:.2f} s = {cpu['ratio']:.3f}x (other processes: up to {cpu['other_cores']:.2f} cores) |",
        "",
        "PESQ-WB: MOS-LQO, higher is better; LSD: 1/3-octave log-spectral distance in dB, lower is better "
        "(a proxy, see the docstring); ratio > 1 means audiopipe's output is the better one at the same size.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main("bench_quality", main)
