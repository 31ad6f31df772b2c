"""Run one command and report its peak memory as JSON on the last line of stdout.

    python bench/measure_peak.py [--interval 0.05] -- CMD ARG...

The command's process tree is sampled with psutil every ``interval`` seconds: the peak RSS of the
root process (e.g. audiopipe's Python), of each child kind (ffmpeg, ffprobe, other) and of their
sum at one instant. This wrapper starts only that one command, so afterwards
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the largest RSS any single process of that
command's tree reached (exact, kernel-kept; it is a max over processes, never a sum).
Figures are MiB. The command's stdout is discarded, its stderr tail kept for errors.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

try:
    import psutil
except ImportError:  # pragma: no cover
    sys.exit("psutil is needed for the memory benchmark: .venv/bin/pip install psutil "
             "(it is in the project's bench extra: pip install -e '.[bench]')")

MB = 1024 * 1024


def kind_of(proc: psutil.Process) -> str:
    try:
        name = proc.name()
    except psutil.Error:
        return "other"
    if name.startswith("ffmpeg"):
        return "ffmpeg"
    if name.startswith("ffprobe"):
        return "ffprobe"
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        ap.error("no command given")

    peak = {"root": 0, "ffmpeg": 0, "ffprobe": 0, "other": 0, "sum": 0}
    samples = 0
    seen_children: set[int] = set()
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        root = psutil.Process(child.pid)
        while child.poll() is None:
            total = 0
            try:
                rss = root.memory_info().rss
                peak["root"] = max(peak["root"], rss)
                total += rss
                kids = root.children(recursive=True)
            except psutil.Error:
                kids = []
            for k in kids:
                try:
                    rss = k.memory_info().rss
                except psutil.Error:
                    continue
                seen_children.add(k.pid)
                kind = kind_of(k)
                peak[kind] = max(peak[kind], rss)
                total += rss
            peak["sum"] = max(peak["sum"], total)
            samples += 1
            time.sleep(args.interval)
        elapsed = time.perf_counter() - t0
        err.seek(0)
        stderr_tail = err.read()[-3000:].decode(errors="replace")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "returncode": child.returncode,
        "elapsed_s": round(elapsed, 3),
        "samples": samples,
        "interval_s": args.interval,
        "children_seen": len(seen_children),
        "peak_root_mb": round(peak["root"] / MB, 1),
        "peak_ffmpeg_mb": round(peak["ffmpeg"] / MB, 1),
        "peak_ffprobe_mb": round(peak["ffprobe"] / MB, 1),
        "peak_other_mb": round(peak["other"] / MB, 1),
        "peak_sum_mb": round(peak["sum"] / MB, 1),
        "ru_maxrss_children_mb": round(ru.ru_maxrss * 1024 / MB, 1),  # Linux: ru_maxrss is KiB
        "stderr_tail": stderr_tail if child.returncode else "",
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
