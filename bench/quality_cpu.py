"""bench_quality.py's CPU comparison: user+system seconds of ``audiopipe prepare`` (the CLI: Python
start-up, ffprobe, ffmpeg, verify: everything it starts) on a long speech WAV, against the plain
commands at the parameters the same-size match found for that format and budget on the shorter
speech source (the long WAV is that source looped, so the same parameter gives about the same size:
the table shows both sizes). audiopipe runs with its bytecode compiled, as an installed copy does
(common.installed_env), after one untimed run that compiles it. Runs are interleaved, each after a
short wait for a quiet machine; the median of ``reps`` is kept, with the CPU other processes used
meanwhile."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
from pathlib import Path
from typing import Any

import common
from common import AUDIOPIPE, BenchFailure, ForeignLoad, fail, fresh_dir, installed_env, last_line, wait_quiet
from quality_plain import Plain
from quality_sources import wav_seconds


def cpu_of(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """User+system CPU seconds of ``argv`` and everything it started; and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, text=True, env=env)
    if done.returncode != 0:
        fail(f"{Path(argv[0]).name} exited {done.returncode}: {last_line(done.stderr)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def cpu_case(fmt: str, source: Path, kbps: float, plains: list[tuple[Plain, float]], reps: int) -> dict[str, Any]:
    """audiopipe prepare --format ``fmt`` against each plain command, ``reps`` times each, interleaved.
    A failed run or an output over its budget is the row's ``failed`` reason, not an exception."""
    seconds = wav_seconds(source)
    budget = int(seconds * kbps * 1000 / 8)
    row: dict[str, Any] = {"format": fmt, "seconds": seconds, "kbps": kbps, "budget": budget, "reps": reps}
    try:
        row.update(_timed_runs(fmt, source, budget, plains, reps))
    except BenchFailure as exc:
        row["failed"] = f"CPU run: {exc}"
        return row
    if row["audiopipe_size"] > budget:
        row["failed"] = f"audiopipe's output is {row['audiopipe_size']:,} bytes, over its {budget:,}-byte budget"
    return row


def _timed_runs(fmt: str, source: Path, budget: int, plains: list[tuple[Plain, float]],
                reps: int) -> dict[str, Any]:
    work = common.WORK / "quality" / "cpu"
    ours: list[float] = []
    theirs: list[list[float]] = [[] for _ in plains]
    loads, size, sizes = [], 0, [0] * len(plains)
    env = installed_env()
    ours_argv = [*AUDIOPIPE, "prepare", str(source), "--out", str(work / "ap"), "--format", fmt,
                 "--max-size", str(budget), "--no-cache", "--json"]
    fresh_dir(work / "ap")
    cpu_of(ours_argv, env)  # untimed: writes the bytecode an installed copy ships with
    for _ in range(reps):
        fresh_dir(work / "ap")
        wait_quiet("cpu")
        meter = ForeignLoad()
        took, said = cpu_of(ours_argv, env)
        loads.append(meter.cores() or 0.0)
        ours.append(took)
        size = json.loads(said.strip().splitlines()[-1])["outputs"][0]["size"]
        for i, (plain, p) in enumerate(plains):
            dest = work / f"plain-{i}.{plain.ext}"
            wait_quiet("cpu")
            meter = ForeignLoad()
            theirs[i].append(cpu_of([common.ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-i", str(source),
                                     *plain.argv(p), str(dest)])[0])
            loads.append(meter.cores() or 0.0)
            sizes[i] = dest.stat().st_size
    mine = statistics.median(ours)
    return {"audiopipe_cpu": mine, "audiopipe_size": size, "other_cores": max(loads),
            "plains": [{"label": plain.label, "shown": plain.shown(p), "command": plain.command(),
                        "cpu": statistics.median(t), "size": s, "ratio": mine / statistics.median(t)}
                       for (plain, p), t, s in zip(plains, theirs, sizes, strict=True)]}
