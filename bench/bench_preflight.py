"""What the token check before the work costs, and what it saves.

    .venv/bin/python bench/bench_preflight.py            # about a minute
    .venv/bin/python bench/bench_preflight.py --latency 0.05

Not a test. Against an in-process sandbox (data under bench/.work/preflight/):

1. the check alone: ``LancepilotClient.check_token`` N times (each on a new connection, as in a run),
   median and 90th percentile in ms;
2. its cost in a run with a good token: ``audiopipe batch`` on a folder already prepared and sent
   (cache warm, ledger full), with and without ``--no-preflight``, interleaved, median wall time;
3. what it saves with a wrong token: the same batch on a fresh cache, time until exit 3, with the
   check (nothing is prepared) and without (every file is prepared, then the first upload is refused).

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                            f"sine=frequency={220 + 40 * i}:duration={seconds}", "-ac", "2",
                            str(folder / f"talk{i}.wav")], check=True)
            os.utime(folder / f"talk{i}.wav", (time.time() - 3600, time.time() - 3600))
    return folder


def batch(folder: Path, url: str, token: str, cache: Path, state: Path, *extra: str) -> tuple[float, int]:
    csv_path = WORK / "contacts.csv"
    csv_path.write_text(f"contact\n{CONTACT}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    env.update(LANCEPILOT_TOKEN=token, LANCEPILOT_BASE_URL=url, AUDIOPIPE_CACHE_DIR=str(cache))
    started = time.perf_counter()
    proc = subprocess.run([AUDIOPIPE, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                           "--state", str(state), *extra], env=env, capture_output=True, text=True)
    return time.perf_counter() - started, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0, help="seconds the sandbox adds to every answer")
    ap.add_argument("--checks", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    shutil.rmtree(WORK / "sandbox", ignore_errors=True)
    folder = make_folder(4, 120)
    config = SandboxConfig(token=TOKEN, data_dir=WORK / "sandbox", faults=Faults(latency=args.latency))
    with Sandbox(config) as sb:
        with LancepilotClient(token=TOKEN, base_url=sb.url) as client:
            client.check_token(WS, CONTACT)  # warm-up
            times = [client.check_token(WS, CONTACT).seconds * 1000 for _ in range(args.checks)]
        times.sort()
        one = (statistics.median(times), times[int(len(times) * 0.9)])

        cache, state = WORK / "cache", WORK / "ledger.sqlite3"
        shutil.rmtree(cache, ignore_errors=True)
        state.unlink(missing_ok=True)
        (folder / ".audiopipe-ledger").unlink(missing_ok=True)
        assert batch(folder, sb.url, TOKEN, cache, state)[1] == 0  # prepared and sent once
        with_check, without = [], []
        for _ in range(args.reps):
            with_check.append(batch(folder, sb.url, TOKEN, cache, state)[0])
            without.append(batch(folder, sb.url, TOKEN, cache, state, "--no-preflight")[0])

        wrong = {}
        for label, extra in (("checked", ()), ("not checked", ("--no-preflight",))):
            shutil.rmtree(cache, ignore_errors=True)
            took, code = batch(folder, sb.url, "not-the-token", cache, WORK / "other.sqlite3", "--new-ledger", *extra)
            assert code == 3, code
            wrong[label] = took
    print(f"sandbox latency {args.latency * 1000:.0f} ms; {args.checks} checks, {args.reps} reps\n")
    print("| what | time |")
    print("|---|---|")
    print(f"| one token check (median / p90) | {one[0]:.1f} ms / {one[1]:.1f} ms |")
    print(f"| rerun of a sent batch, with the check (median) | {statistics.median(with_check) * 1000:.0f} ms |")
    print(f"| the same, --no-preflight (median) | {statistics.median(without) * 1000:.0f} ms |")
    print(f"| wrong token, 4 x 2-min WAV: exit 3 after, with the check | {wrong['checked']:.2f} s |")
    print(f"| the same, --no-preflight (prepares all, then 401) | {wrong['not checked']:.2f} s |")


if __name__ == "__main__":
    main()
