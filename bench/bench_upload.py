"""Upload benchmark: audiopipe's client against a plain ``requests.post(files=...)`` loop.

    .venv/bin/python bench/bench_upload.py            # 20 uploads of a 15 MB MP3 each way
    .venv/bin/python bench/bench_upload.py --quick    # 3 each way, a smoke run
    .venv/bin/python bench/bench_upload.py --smoke --out DIR --work DIR  # a 1 MB MP3, 2 each way (the tests)

Not a test. It starts an in-process sandbox (data under bench/.work/upload/), makes a valid 15 MB
MP3 with ffmpeg (cached; checked to sniff as audio/mpeg and to be under the server's 16,777,216
bytes), then uploads it N times with ``LancepilotClient.send_audio`` and N times with plain
requests, in the same run. Each way runs in child processes of its own, interleaved (client, plain,
plain, client) so a change in machine load hits both alike; each child reports its wall time and
its peak RSS (VmHWM: the whole process, interpreter included) as JSON. The client streams
the file from disk; plain requests builds the whole multipart body in memory.

Prints a Markdown table and writes every figure to bench/out/upload.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import add_dir_options, fail, last_line, run_main, set_dirs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "upload"
OUT = BENCH / "out"
# The input: a real MP3 (stereo pink noise, 320 kbit/s CBR) of this many seconds; 375 s is about 15 MB.
FULL_SECONDS, SMOKE_SECONDS = 375, 25
TOKEN = "bench-upload-token"
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
SERVER_MAX = 16_777_216
MIB = 1024 * 1024


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the child: N uploads one way, then one JSON line on stdout


def child(method: str, base_url: str, path: Path, n: int) -> None:
    import psutil
    import requests

    from audiopipe.send.client import LancepilotClient  # imported by both ways: same baseline

    token = os.environ["BENCH_TOKEN"]  # from the environment, not argv (argv shows in `ps`)
    rss_before = psutil.Process().memory_info().rss
    times: list[float] = []
    ids: list[str] = []
    url = f"{base_url}/workspaces/{WS}/contacts/{CONTACT}/messages/audio"
    cpu_before = os.times()
    started = time.perf_counter()
    if method == "client":
        with LancepilotClient(token=token, base_url=base_url, read_timeout=120) as client:
            for _ in range(n):
                t0 = time.perf_counter()
                ids.append(str(client.send_audio(WS, CONTACT, path).id))
                times.append(time.perf_counter() - t0)
    else:
        with requests.Session() as session:
            for _ in range(n):
                t0 = time.perf_counter()
                with open(path, "rb") as fh:
                    resp = session.post(url, files={"file": fh}, headers={"Authorization": f"Bearer {token}"},
                                        timeout=(10, 120))
                resp.raise_for_status()
                ids.append(resp.json()["data"]["id"])
                times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    print(json.dumps({"method": method, "n": n, "wall_s": wall, "cpu_s": cpu, "times_s": times, "ids": ids,
                      "rss_before_bytes": rss_before, "peak_rss_bytes": peak_rss()}))


def peak_rss() -> int:
    """This process's peak RSS in bytes.

    Linux: VmHWM, the high-water mark of this program's own memory. Not ``ru_maxrss``: the kernel
    carries the pre-exec high-water mark over, so a child forked from a big parent (this one has the
    sandbox in it) would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB elsewhere


# ---- the parent


def make_input(seconds: int) -> Path:
    """A real MP3: ``seconds`` of stereo pink noise at 320 kbit/s CBR (375 s: about 15,000,000 bytes)."""
    from audiopipe.preparation.sniff import sniff

    source = WORK / ("input-15MB-v1.mp3" if seconds == FULL_SECONDS else f"input-{seconds}s-v1.mp3")
    if not source.exists():
        ffmpeg = os.environ.get("AUDIOPIPE_FFMPEG") or shutil.which("ffmpeg")
        if not ffmpeg:
            fail("ffmpeg is not installed")
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = source.with_suffix(".tmp.mp3")
        log(f"making {source} with ffmpeg (once; cached)...")
        subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=44100:duration={seconds}:seed=1",
                        "-ac", "2", "-c:a", "libmp3lame", "-b:a", "320k", str(tmp)], check=True, timeout=600)
        os.replace(tmp, source)
    size = source.stat().st_size
    mime = sniff(source).mime
    want = 40_000 * seconds * 0.95  # 320 kbit/s
    if mime != "audio/mpeg" or not want <= size <= SERVER_MAX:
        fail(f"{source} is {mime}, {size} bytes; expected audio/mpeg, at least {want:.0f} and at most {SERVER_MAX}")
    return source


def run_child(method: str, base_url: str, path: Path, n: int) -> dict[str, Any]:
    env = dict(os.environ, BENCH_TOKEN=TOKEN)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", method,
                           "--base-url", base_url, "--file", str(path), "-n", str(n)],
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        fail(f"the {method} uploads failed: {last_line(done.stderr)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 uploads each way instead of 20")
    ap.add_argument("--smoke", action="store_true", help="a 1 MB MP3, 2 uploads each way: does it still run?")
    ap.add_argument("-n", type=int, default=None, help="uploads each way (default 20; 3 with --quick, 2 with --smoke)")
    add_dir_options(ap)
    ap.add_argument("--child", choices=["client", "plain"], help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global WORK, OUT
    set_dirs(args.work, args.out)
    WORK, OUT = (args.work.resolve() / "upload" if args.work else WORK), (args.out.resolve() if args.out else OUT)
    if args.child:
        child(args.child, args.base_url, args.file, args.n)
        return 0

    sys.path.insert(0, str(ROOT))
    from audiopipe.sandbox.app import Sandbox, SandboxConfig

    n = args.n or (2 if args.smoke else 3 if args.quick else 20)
    path = make_input(SMOKE_SECONDS if args.smoke else FULL_SECONDS)
    size = path.stat().st_size
    # Two children per way, interleaved client/plain/plain/client; the second pair gets the rest.
    halves = [n // 2, n - n // 2] if n >= 2 else [n, 0]
    order = [("client", halves[0]), ("plain", halves[0]), ("plain", halves[1]), ("client", halves[1])]

    data_dir = WORK / "sandbox"
    shutil.rmtree(data_dir, ignore_errors=True)
    load = os.getloadavg()
    if load[0] > 0.5:
        log(f"note: load average {load[0]:.2f} before starting; other work slows both ways alike "
            "(the runs are interleaved)")
    results: dict[str, list[dict[str, Any]]] = {"client": [], "plain": []}
    with Sandbox(SandboxConfig(token=TOKEN, data_dir=data_dir)) as sandbox:
        for method, count in order:
            if count == 0:
                continue
            log(f"{method}: {count} upload(s) of {size:,} bytes...")
            result = run_child(method, sandbox.url, path, count)
            results[method].append(result)
            stored = {m["id"]: m for m in sandbox.messages()}
            if len(result["ids"]) != count or len(set(result["ids"])) != count:
                fail(f"{method}: {count} uploads gave {len(set(result['ids']))} distinct message ids")
            for message_id in result["ids"]:  # every upload really arrived, once, byte for byte
                m = stored.get(message_id)
                if m is None or m["size"] != size or m["mime"] != "audio/mpeg":
                    fail(f"{method}: message {message_id} stored wrong: {m}")
            for f in (data_dir / "files").glob("*"):  # 15 MB each: do not keep 600 MB around
                f.unlink()
        total_requests = sandbox.request_count
        if len(stored) != n * 2:
            fail(f"the sandbox holds {len(stored)} messages after {n} uploads each way")
    shutil.rmtree(data_dir, ignore_errors=True)

    summary: dict[str, dict[str, float]] = {}
    for method, runs in results.items():
        times = [t for r in runs for t in r["times_s"]]
        summary[method] = {
            "uploads": len(times),
            "wall_s": sum(r["wall_s"] for r in runs),
            "median_upload_s": statistics.median(times),
            "peak_rss_mib": max(r["peak_rss_bytes"] for r in runs) / MIB,
            "rss_before_mib": max(r["rss_before_bytes"] for r in runs) / MIB,
            "growth_mib": max(r["peak_rss_bytes"] - r["rss_before_bytes"] for r in runs) / MIB,
            "client_cpu_s": sum(r["cpu_s"] for r in runs),
        }
        summary[method]["mb_per_s"] = size * len(times) / summary[method]["wall_s"] / 1e6
    c, p = summary["client"], summary["plain"]
    ratio = c["wall_s"] / p["wall_s"]
    header = ["way", "uploads", "wall time", "per upload (median)", "throughput", "uploader CPU",
              "peak RSS", "RSS growth over start"]
    rows = [[name, f"{s['uploads']:.0f}", f"{s['wall_s']:.2f} s", f"{s['median_upload_s'] * 1000:.0f} ms",
             f"{s['mb_per_s']:.0f} MB/s", f"{s['client_cpu_s']:.2f} s", f"{s['peak_rss_mib']:.1f} MiB",
             f"+{s['growth_mib']:.1f} MiB"]
            for name, s in (("audiopipe client (streams from disk)", c),
                            ("plain requests.post(files=...)", p))]
    table = md_table(header, rows)
    note = (f"File: {size:,}-byte MP3 (320 kbit/s, sniffs audio/mpeg), to the in-process sandbox on "
            f"127.0.0.1. Wall-time ratio client/plain: **{ratio:.2f}**. Peak RSS is the whole child "
            f"process (Python, requests, audiopipe imported in both).")
    cmd = ".venv/bin/python bench/bench_upload.py" + (" --smoke" if args.smoke else " --quick" if args.quick else "")
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, git {done.stdout.strip() or '?'}, {os.cpu_count()} vCPUs, "
          f"Python {platform.python_version()}, load average {load[0]:.2f} before)\n")
    print(table)
    print()
    print(note)

    OUT.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "upload",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "bench/bench_upload.py" + (" --smoke" if args.smoke else " --quick" if args.quick else ""),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_before": load},
        "file": {"path": str(path), "bytes": size},
        "uploads_each": n,
        "sandbox_requests": total_requests,
        "wall_ratio_client_over_plain": ratio,
        "summary": summary,
        "runs": {m: [{k: v for k, v in r.items() if k != "ids"} for r in runs] for m, runs in results.items()},
        "table_md": table,
    }
    (OUT / "upload.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {OUT / 'upload.json'}")
    return 0


if __name__ == "__main__":
    run_main("bench_upload", main)
