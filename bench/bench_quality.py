"""Quality per byte: each lossy format audiopipe makes against the plain command a user would type, at
the same size.

    .venv/bin/python bench/bench_quality.py              # 3-min sources, 17 cases, 10-min CPU runs: ~11 min
    .venv/bin/python bench/bench_quality.py --quick      # 25-s sources, 10 cases, 1-min CPU runs: ~70 s
    .venv/bin/python bench/bench_quality.py --smoke      # 15-s sources, 4 cases, a 20-s CPU run: ~14 s (the test)
    .venv/bin/python bench/bench_quality.py --calibrate  # Opus constrained-VBR payload / target (formats.py)
    .venv/bin/python bench/bench_quality.py --format m4a # one format's cases (and its CPU run, if it has one)

(Wall times on 2 vCPUs with little else running; bench/README.md has the details.) Not a test.
Sources (quality_sources.py, made here and cached under WORK/quality): espeak-ng speech in several
voices, rates and pitches with 0.2-1.2 s pauses over a faint noise floor (mono 48 kHz); sparse
speech, the same with 2.5-4.5 s pauses; a stereo 44.1 kHz music-like signal (chords, an arpeggio,
hi-hat noise).

For each format, source and budget (a bitrate x the duration, as a recording that long would get in
16 MB), ``prepare_file(..., PrepareSettings(format=F, max_size=budget))`` gives audiopipe's output, its
passes and its budget use; each plain command (quality_plain.py) is matched to that size by bisection
on its one parameter:

- Opus: ``ffmpeg -i in.wav -c:a libopus -b:a N out.ogg``; and CBR at the same size (what audiopipe did
  before issue 13; not in --smoke);
- MP3: LAME's VBR ``-c:a libmp3lame -q:a Q -ar R`` (Q fractional) and CBR ``-b:a N -ar R``, R being
  audiopipe's sample rate (at 48 kHz LAME cannot come down to a speech budget's size);
- M4A: ``ffmpeg -i in.wav -c:a aac -b:a N out.m4a``.

Scores (quality_measures.py): wideband PESQ on speech, the mean over 15-s stretches; a 1/3-octave
log-spectral distance on the music-like source (a proxy: its limits are in that module). A plain
command that cannot reach audiopipe's size within 3 % is shown with its size gap and left out of the
summary. CPU (quality_cpu.py): ``audiopipe prepare`` (everything it starts) on a long speech WAV
against the matched plain commands, for Opus and MP3 (issue 13's aim: at most 1.05x on 10 minutes).

A failed encode or an audiopipe output over its budget is a FAILED row; the table is still printed,
then the run ends with one ``bench_quality: FAILED: ...`` line and exit 1. Prints the tables with the
command, date and commit (also OUT/quality.md, OUT/quality.json) and the wall time of each phase.
Needs espeak-ng (``make system-deps`` installs it) and the ``bench`` extra (``pesq``, ``numpy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common
from common import BenchFailure, ForeignLoad, add_dir_options, fail, ffmpeg_version, fresh_dir, log, one_line
from quality_cpu import cpu_case
from quality_measures import better, metric_for, score
from quality_plain import MATCHED, match_size, plains_for
from quality_report import Phases, report
from quality_sources import looped, make_music, make_speech, wav_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from audiopipe.errors import AudiopipeError  # noqa: E402
from audiopipe.preparation.pipeline import prepare_file  # noqa: E402
from audiopipe.preparation.settings import PrepareSettings  # noqa: E402

Budgets = dict[str, dict[str, tuple[float, ...]]]  # format -> source -> kbit/s


@dataclass(frozen=True)
class Mode:
    seconds: float            # the speech sources' length
    music_seconds: float
    cases: Budgets
    cpu_seconds: float        # the CPU runs' speech WAV (the speech source looped)
    reps: int                 # CPU runs each way
    tolerance: float          # stop matching a plain command's size within this
    tries: int                # encodes per match at most
    before: bool = True       # Opus: also CBR at the same size
    quiet: bool = True        # wait for a quiet machine before each timed run
    # the budget (kbit/s) of each format's CPU run: a speech case of that format, whose matched
    # plain parameters the CPU run reuses
    cpu: dict[str, float] = field(default_factory=lambda: {"ogg": 12, "mp3": 48})


MODES = {
    "full": Mode(180, 180, {"ogg": {"speech": (8, 12, 24), "sparse speech": (12,), "music": (24, 48)},
                            "mp3": {"speech": (16, 24, 48), "sparse speech": (24,), "music": (64, 128)},
                            "m4a": {"speech": (24, 48), "sparse speech": (24,), "music": (64, 96)}},
                 cpu_seconds=600, reps=3, tolerance=0.015, tries=8),
    "quick": Mode(25, 25, {"ogg": {"speech": (12, 24), "sparse speech": (12,), "music": (24, 48)},
                           "mp3": {"speech": (16, 24, 48), "music": (64,)},
                           "m4a": {"speech": (24,), "music": (64,)}},
                  cpu_seconds=60, reps=1, tolerance=0.015, tries=8),
    # what the test runs: every path once (MP3's CPU run: two plain commands), coarse matching (3 encodes
    # at most, within 3 %), no waiting for a quiet machine
    "smoke": Mode(15, 10, {"ogg": {"speech": (12,)}, "mp3": {"speech": (48,)},
                           "m4a": {"speech": (24,), "music": (64,)}},
                  cpu_seconds=20, reps=1, tolerance=MATCHED, tries=3, before=False, quiet=False, cpu={"mp3": 48}),
}
PHASES = Phases()


def make_sources(mode: Mode) -> dict[str, Path]:
    """Each source the mode's cases use, made (or found in the cache) once per run."""
    wanted = {kind for budgets in mode.cases.values() for kind in budgets}
    makers = {"speech": lambda: make_speech(mode.seconds, (0.2, 1.2), 1),
              "sparse speech": lambda: make_speech(mode.seconds, (2.5, 4.5), 2),
              "music": lambda: make_music(mode.music_seconds)}
    with PHASES("sources"):
        return {kind: make() for kind, make in makers.items() if kind in wanted}


def run_case(fmt: str, kind: str, source: Path, kbps: float, mode: Mode) -> dict[str, Any]:
    """audiopipe's ``fmt`` output at ``kbps`` x the duration, scored with each plain command's at its
    size. What failed is the case's ``failed`` reason (the bench carries on, and exits 1 at the end)."""
    seconds = wav_seconds(source)
    budget = int(seconds * kbps * 1000 / 8)
    case: dict[str, Any] = {"format": fmt, "source": kind, "seconds": round(seconds, 1), "kbps": kbps,
                            "budget": budget, "metric": metric_for(kind)}
    work = fresh_dir(common.WORK / "quality" / "out" / f"{fmt}-{source.stem}-{kbps:g}")
    try:
        with PHASES("audiopipe"):
            result = prepare_file(source, work / "ap", PrepareSettings(format=fmt, max_size=budget, cache=False))
    except AudiopipeError as exc:
        return {**case, "failed": f"audiopipe: {one_line(str(exc), 200)}"}
    out, plan = result.outputs[0], result.plan
    case.update(size=out.size, use=out.size / budget, passes=result.passes, first_fit=result.first_fit,
                bitrate=out.bitrate,
                sample_rate=plan.sample_rate if plan else 0, channels=plan.channels if plan else 0)
    if len(result.outputs) != 1 or result.kept_duration is not None:
        return {**case, "failed": f"came out in {len(result.outputs)} part(s) ({result.action}): not comparable"}
    if out.size > budget:
        return {**case, "failed": f"audiopipe's output is {out.size:,} bytes, over its {budget:,}-byte budget"}
    try:
        with PHASES("measures"):
            case["audiopipe"] = score(case["metric"], source, out.path)
        case["plains"] = compare(fmt, case, source, work, mode)
    except BenchFailure as exc:
        return {**case, "failed": one_line(str(exc), 200)}
    return case


def compare(fmt: str, case: dict[str, Any], source: Path, work: Path, mode: Mode) -> list[dict[str, Any]]:
    """Each plain command matched to audiopipe's size, and its score against audiopipe's."""
    rows = []
    for i, plain in enumerate(plains_for(fmt, case["sample_rate"], case["channels"], case["bitrate"] or 0,
                                         before=mode.before)):
        dest = work / f"plain-{i}.{plain.ext}"
        try:
            with PHASES("plain"):
                p, size, encodes = match_size(source, plain, case["size"], case["seconds"], dest,
                                              tolerance=mode.tolerance, tries=mode.tries)
        except BenchFailure as exc:
            raise BenchFailure(f"{plain.label}: {exc}") from exc
        with PHASES("measures"):
            theirs = score(case["metric"], source, dest)
        gap = size / case["size"] - 1
        rows.append({"label": plain.label, "command": plain.command(), "param": p, "shown": plain.shown(p),
                     "size": size, "size_match": gap, "matched": abs(gap) <= MATCHED, "encodes": encodes,
                     "score": theirs, "ratio": better(case["metric"], case["audiopipe"], theirs)})
    return rows


def run_cpu(fmt: str, kbps: float, speech: Path, cases: list[dict[str, Any]], mode: Mode) -> dict[str, Any]:
    """The CPU run of ``fmt``, with the plain parameters its speech case at ``kbps`` matched."""
    case = next((c for c in cases if c["format"] == fmt and c["source"] == "speech" and c["kbps"] == kbps), None)
    if case is None or "failed" in case:
        why = "failed" if case else "is not in this mode"
        return {"format": fmt, "kbps": kbps, "seconds": mode.cpu_seconds,
                "failed": f"the {fmt} speech case at {kbps:g}k, whose plain parameters it takes, {why}"}
    plains = {p.label: p for p in plains_for(fmt, case["sample_rate"], case["channels"], case["bitrate"] or 0)}
    with PHASES("cpu"):
        return cpu_case(fmt, looped(speech, mode.cpu_seconds), kbps,
                        [(plains[p["label"]], p["param"]) for p in case["plains"]], mode.reps)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="25-s sources, 10 cases, 1-min CPU runs")
    ap.add_argument("--smoke", action="store_true",
                    help="15-s sources, 4 cases, a 20-s MP3 CPU run (what the test runs)")
    ap.add_argument("--calibrate", action="store_true", help="only the Opus payload/target table")
    ap.add_argument("--format", choices=sorted(MODES["full"].cases), help="only this format's cases (and CPU run)")
    ap.add_argument("--reps", type=int, default=None, help="CPU runs each way (default 3; 1 with --quick or --smoke)")
    add_dir_options(ap)
    args = ap.parse_args()
    common.set_dirs(args.work, args.out)
    flags = [a for a in sys.argv[1:] if a in ("--quick", "--smoke", "--calibrate")]
    flags += [f"--format {args.format}"] if args.format else []
    cmd = " ".join([".venv/bin/python bench/bench_quality.py", *flags])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    started = ForeignLoad()
    header = f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, git {head}, {os.cpu_count()} vCPUs, {ffmpeg_version()})"
    common.OUT.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        from quality_calibrate import calibrate
        text = header + "\n\n" + calibrate(args.quick)
        print(text)
        (common.OUT / "quality-calibrate.md").write_text(text + "\n")
        return 0
    import pesq  # noqa: F401 - fail here, in one line, when the bench extra is missing
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    mode = replace(mode, reps=args.reps or mode.reps)
    if args.format:
        mode = replace(mode, cases={args.format: mode.cases[args.format]},
                       cpu={f: k for f, k in mode.cpu.items() if f == args.format})
    if not mode.quiet:
        common.QUIET_BUDGET = 0.0  # no waiting for a quiet machine: the smoke run's timings mean nothing
    sources = make_sources(mode)
    cases = []
    for fmt, budgets in mode.cases.items():
        for kind, rates in budgets.items():
            for kbps in rates:
                log(f"  {fmt} {kind} {wav_seconds(sources[kind]):.0f} s at {kbps:g} kbit/s ...")
                cases.append(run_case(fmt, kind, sources[kind], kbps, mode))
    cpus = [run_cpu(fmt, kbps, sources["speech"], cases, mode) for fmt, kbps in mode.cpu.items()]
    text = report(f"{header}; other processes used {started.cores() or 0:.2f} cores meanwhile", cases, cpus, PHASES)
    print(text)
    (common.OUT / "quality.md").write_text(text + "\n")
    (common.OUT / "quality.json").write_text(json.dumps({"command": cmd, "git_head": head, "cases": cases,
                                                         "cpu": cpus, "phases": PHASES.seconds}, indent=2))
    failed = [f"{c['format']} {c['source']} {c['kbps']:g}k" for c in cases if "failed" in c]
    failed += [f"{c['format']} CPU run" for c in cpus if "failed" in c]
    if failed:
        fail(f"{len(failed)} case(s) failed: {', '.join(failed)} (the table says why)")
    return 0


if __name__ == "__main__":
    common.run_main("bench_quality", main)
