"""What the token check before the work costs, and what it saves.

    .venv/bin/python bench/bench_preflight.py            # about 20 s on a quiet machine
    .venv/bin/python bench/bench_preflight.py --latency 0.05
    .venv/bin/python bench/bench_preflight.py --quick   # 2 x 10 s WAVs, 10 checks, 1 rep (a few seconds)

Not a test. Against an in-process sandbox (data under bench/.work/preflight/):

1. the check alone: ``LancepilotClient.check_token`` N times (each on a new connection, as in a run),
   median and 90th percentile in ms;
2. its cost in a run with a good token: ``audiopipe batch`` on a folder already prepared and sent
   (cache warm, ledger full), with and without ``--no-preflight``, interleaved, median wall time;
3. what it saves with a wrong token: the same batch on a fresh cache, time until exit 3, with the
   check (nothing is prepared) and without (every file is prepared, then the first upload is refused).

Correctness, checked (one line on stderr and exit 1 if not): the first batch sends every file once
(exit 0), the reruns send nothing again (the sandbox still holds one message per file), and a wrong
token ends in exit 3. Prints a Markdown table (also written to OUT/preflight.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import add_dir_options, fail, last_line, run_main, set_dirs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "preflight"
TOKEN = "bench-preflight-token"
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
AUDIOPIPE = str(Path(sys.executable).with_name("audiopipe"))

sys.path.insert(0, str(ROOT))
from audiopipe.sandbox.app import Faults, Sandbox, SandboxConfig  # noqa: E402
from audiopipe.send.client import LancepilotClient  # noqa: E402


def make_folder(n: int, seconds: int) -> Path:
    folder = WORK / f"rec-{n}x{seconds}s"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(n):
            done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                                   f"sine=frequency={220 + 40 * i}:duration={seconds}", "-ac", "2",
                                   str(folder / f"talk{i}.wav")], capture_output=True, text=True)
            if done.returncode != 0:
                fail(f"ffmpeg could not make the input: {last_line(done.stderr)}")
            os.utime(folder / f"talk{i}.wav", (time.time() - 3600, time.time() - 3600))
    return folder


def batch(folder: Path, url: str, token: str, cache: Path, state: Path, *extra: str) -> tuple[float, int, str]:
    csv_path = WORK / "contacts.csv"
    csv_path.write_text(f"contact\n{CONTACT}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    env.update(LANCEPILOT_TOKEN=token, LANCEPILOT_BASE_URL=url, AUDIOPIPE_CACHE_DIR=str(cache))
    started = time.perf_counter()
    proc = subprocess.run([AUDIOPIPE, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                           "--state", str(state), *extra], env=env, capture_output=True, text=True)
    return time.perf_counter() - started, proc.returncode, last_line(proc.stderr)


def main() -> int:
    global WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0, help="seconds the sandbox adds to every answer")
    ap.add_argument("--quick", action="store_true", help="2 x 10 s WAVs, 10 checks, 1 rep")
    ap.add_argument("--checks", type=int, default=None, help="token checks timed (default 50; 10 with --quick)")
    ap.add_argument("--reps", type=int, default=None, help="reruns timed each way (default 5; 1 with --quick)")
    add_dir_options(ap)
    args = ap.parse_args()
    set_dirs(args.work, args.out)
    if args.work:
        WORK = args.work.resolve() / "preflight"
    checks, reps = args.checks or (10 if args.quick else 50), args.reps or (1 if args.quick else 5)
    files, seconds = (2, 10) if args.quick else (4, 120)
    shutil.rmtree(WORK / "sandbox", ignore_errors=True)
    folder = make_folder(files, seconds)
    config = SandboxConfig(token=TOKEN, data_dir=WORK / "sandbox", faults=Faults(latency=args.latency))
    with Sandbox(config) as sb:
        with LancepilotClient(token=TOKEN, base_url=sb.url) as client:
            client.check_token(WS, CONTACT)  # warm-up
            times = [client.check_token(WS, CONTACT).seconds * 1000 for _ in range(checks)]
        times.sort()
        one = (statistics.median(times), times[int(len(times) * 0.9)])

        cache, state = WORK / "cache", WORK / "ledger.sqlite3"
        shutil.rmtree(cache, ignore_errors=True)
        state.unlink(missing_ok=True)
        (folder / ".audiopipe-ledger").unlink(missing_ok=True)
        _, code, why = batch(folder, sb.url, TOKEN, cache, state)  # prepared and sent once
        if code != 0:
            fail(f"the first batch (good token) exited {code}: {why}")
        with_check, without = [], []
        for _ in range(reps):
            for timings, extra in ((with_check, ()), (without, ("--no-preflight",))):
                took, code, why = batch(folder, sb.url, TOKEN, cache, state, *extra)
                if code != 0:
                    fail(f"a rerun of the sent batch {' '.join(extra)} exited {code}: {why}")
                timings.append(took)
        stored = len(sb.messages())
        if stored != files:
            fail(f"the sandbox holds {stored} messages for {files} files sent to one contact (expected once each)")

        # Move the good run's ledger away: --new-ledger (rightly) refuses while the ledger that recorded
        # this folder's sends still exists.
        for f in WORK.glob("ledger.sqlite3*"):
            f.unlink()
        wrong = {}
        for label, extra in (("checked", ()), ("not checked", ("--no-preflight",))):
            shutil.rmtree(cache, ignore_errors=True)
            (WORK / "other.sqlite3").unlink(missing_ok=True)
            took, code, why = batch(folder, sb.url, "not-the-token", cache, WORK / "other.sqlite3", "--new-ledger",
                                    *extra)
            if code != 3:
                fail(f"a wrong token ({label}) exited {code}, expected 3: {why}")
            wrong[label] = took
    cmd = ".venv/bin/python bench/bench_preflight.py" + (" --quick" if args.quick else "") + \
        (f" --latency {args.latency:g}" if args.latency else "")
    text = "\n".join([
        f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} vCPUs, load average "
        f"{os.getloadavg()[0]:.2f}): sandbox latency {args.latency * 1000:.0f} ms; {checks} checks, {reps} reps",
        "",
        "| what | time |",
        "|---|---|",
        f"| one token check (median / p90) | {one[0]:.1f} ms / {one[1]:.1f} ms |",
        f"| rerun of a sent batch, with the check (median) | {statistics.median(with_check) * 1000:.0f} ms |",
        f"| the same, --no-preflight (median) | {statistics.median(without) * 1000:.0f} ms |",
        f"| wrong token, {files} x {seconds} s WAV: exit 3 after, with the check | {wrong['checked']:.2f} s |",
        f"| the same, --no-preflight (prepares all, then 401) | {wrong['not checked']:.2f} s |",
    ])
    print(text)
    out = args.out.resolve() if args.out else BENCH / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preflight.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    run_main("bench_preflight", main)
