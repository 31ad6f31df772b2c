"""Benchmarks for audiopipe's prepare stage (issue 2). Not part of the tests.

    .venv/bin/python bench/run.py                 # everything (what `make bench` runs)
    .venv/bin/python bench/run.py --quick         # smoke run: short inputs, fewer cases
    .venv/bin/python bench/run.py --only speed    # one benchmark (speed, memory, parallel, firstfit, cache)
    .venv/bin/python bench/run.py --smoke --out DIR --work DIR  # the tiniest inputs: what the tests run

Each benchmark measures its baseline in the same run and prints ratios. Inputs are generated with
ffmpeg into bench/.work/ (cached between runs); the final table is printed as Markdown and written,
with every raw figure, to bench/out/results.json (and the table alone to bench/out/results.md);
--quick and --only runs write results-quick*.json / results-only-NAME.json instead, so they never
overwrite the full run's figures. A benchmark whose measured thing fails (or whose own correctness
check does: all outputs made, cache hits with the same bytes, ...) makes the run end with one line on
stderr and exit 1, after the others' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmarks as b
import common
from common import ROOT, ForeignLoad, add_dir_options, ffmpeg_version, log, md_table, one_line, run_main

NAMES = ("speed", "memory", "parallel", "firstfit", "cache")
HEADER = ["benchmark", "measure", "audiopipe", "baseline", "ratio", "aim", "verdict"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run with shorter inputs")
    ap.add_argument("--smoke", action="store_true",
                    help="the tiniest inputs, one repetition: does every benchmark still run? (implies --quick)")
    ap.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(NAMES)}")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repetitions for speed (default 3), parallel (3; 1 with --quick) "
                         "and the cache's second run (3)")
    add_dir_options(ap)
    args = ap.parse_args()
    common.set_dirs(args.work, args.out)
    if args.smoke:
        common.SMOKE = args.quick = True
        common.QUIET_BUDGET = 0.0  # no waiting for a quiet machine: no figure of a smoke run is read
        args.reps = args.reps or 1
    selected = [n for n in NAMES if not args.only or n in args.only]
    common.WORK.mkdir(parents=True, exist_ok=True)
    common.OUT.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        log(f"note: load average is {load_before[0]:.2f} before starting: other work on this machine "
            f"will slow the timed runs (ratios are interleaved runs, so they suffer less)\n")
    runs = {
        "speed": lambda: b.bench_speed(args.quick, args.reps or 3),
        "memory": lambda: b.bench_memory(args.quick),
        "parallel": lambda: b.bench_parallel(args.quick, args.reps or (1 if args.quick else 3)),
        "firstfit": lambda: b.bench_firstfit(args.quick),
        "cache": lambda: b.bench_cache(args.quick, args.reps or 3),
    }
    results: dict[str, object] = {}
    rows: list[list[str]] = []
    timings: dict[str, float] = {}
    foreign: dict[str, float | None] = {}
    failures: list[str] = []
    for i, name in enumerate(selected, 1):
        log(f"[{i}/{len(selected)}] {name}")
        t0 = time.perf_counter()
        meter = ForeignLoad()
        try:
            r = runs[name]()
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            why = one_line(str(exc) if isinstance(exc, common.BenchFailure) else f"{type(exc).__name__}: {exc}")
            log(f"  FAILED: {why}")
            failures.append(f"{name}: {why}")
            r = {"rows": [[name, "error", why[:80], "-", "-", "-", "ERROR"]],
                 "details": {"error": f"{type(exc).__name__}: {exc}"}}
        timings[name] = time.perf_counter() - t0
        foreign[name] = meter.cores()
        log(f"  ({timings[name]:.0f} s; other processes used {_cores(foreign[name])} meanwhile)\n")
        results[name] = r["details"]
        rows += r["rows"]

    total = time.perf_counter() - started
    cmd = ".venv/bin/python bench/run.py" + (" --smoke" if args.smoke else " --quick" if args.quick else "") + \
        "".join(f" --only {n}" for n in args.only or [])
    ff = ffmpeg_version().split(" Copyright")[0]
    env_line = f"{platform.machine()}, {os.cpu_count()} vCPUs, Python {platform.python_version()}, {ff}"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        env_line += ", PYTHONDONTWRITEBYTECODE set (audiopipe is byte-compiled at every start)"
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    table = md_table(HEADER, rows)
    others = ", ".join(f"{n} {_cores(c)}" for n, c in foreign.items())
    kind = "smoke run" if args.smoke else "quick run" if args.quick else "full run"
    head = (_git_head() or "?")[:7]
    text = (f"`{cmd}` ({kind}, {datetime.now(timezone.utc):%Y-%m-%d}, git {head}; {env_line}; "
            f"took {total / 60:.1f} min, {common.waited_total:.0f} s of it waiting for a quiet machine)\n\n"
            f"{table}\n\nCPU used by other processes during each benchmark: {others} ({load}).\n")
    log(text)

    report = {
        "command": cmd, "quick": args.quick, "selected": selected,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_s": total, "per_benchmark_s": timings, "environment": env_line, "load": load,
        "foreign_cpu_cores": foreign, "waited_for_quiet_s": common.waited_total,
        "git_head": _git_head(), "table": rows, "results": results,
    }
    # A partial or quick run never overwrites the full run's results.json.
    stem = "results" + ("-smoke" if args.smoke else "-quick" if args.quick else "") + \
        ("-only-" + "-".join(selected) if args.only else "")
    (common.OUT / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
    (common.OUT / f"{stem}.md").write_text(text)
    log(f"wrote {common.OUT / (stem + '.json')} and {common.OUT / (stem + '.md')}")
    if failures:
        print(f"bench/run.py: FAILED: {'; '.join(failures)}", file=sys.stderr, flush=True)
        return 1
    return 0


def _cores(c: float | None) -> str:
    return "?" if c is None else f"{c:.2f} cores"


def _git_head() -> str | None:
    import subprocess

    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    run_main("run", main)
