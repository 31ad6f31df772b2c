"""Benchmark of distributed campaigns (issue 10): exactly once under chaos, and how the send rate grows
with workers. Not a test.

    .venv/bin/python bench/bench_distributed.py            # 20,000 sends of chaos; 2,000 sends a throughput run
    .venv/bin/python bench/bench_distributed.py --quick    # 400 sends of chaos (1 kill); 160 a throughput run
    .venv/bin/python bench/bench_distributed.py --quick --out DIR --work DIR   # what the tests run

Real parts only (tests/distributed/chaos_harness.py): a PostgreSQL cluster of the bench's own, the
sandbox over HTTP on 127.0.0.1 in this process, `audiopipe batch --plan-only` and `audiopipe worker
--until-idle --lease 3` as subprocesses, ffmpeg preparing the recordings in the workers.

(a) Chaos: 3 workers at concurrency 4; the sandbox at 20 ms latency answering 0.4 % 500s, losing 0.4 %
    of answers after storing the message, 0.2 % 429s (Retry-After 1); 10 workers SIGKILLed (2 in
    --quick) at points spread over the run, each replaced; one `pg_ctl restart -m immediate` half way.
    Afterwards: messages stored twice (must be 0), rows lost (not final, sent but not stored, stored
    but neither sent nor unknown, a planned (contact, recording, part) missing: must be 0), unknown rows
    against what may explain them (sends in flight at each kill, read from the ledger while the worker
    was stopped, and at the restart; 500s; lost answers), reaped rows against the sends in flight.
(b) Throughput: the sandbox at 200 ms latency (so the 2 cores are not the bound), no faults, no pace:
    1 worker at concurrency 8, then 3 workers at concurrency 8, each on a fresh database, in the same
    run. The rate is sends over the span from the first request's arrival at the sandbox to the last
    (worker start-up and preparing are not counted). Aim: 3 workers >= 2.5 x 1 worker.

A correctness failure (a duplicate, a lost row, unknowns beyond their causes, a worker exiting non-zero)
ends the bench with one line on stderr and exit 1 (bench/common.py run_main); a missed throughput aim
is a verdict in the table. Prints a Markdown table under the command line and writes
OUT/distributed.json (and distributed.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "distributed"))

import common  # noqa: E402 - after the paths above
from chaos_audit import audit  # noqa: E402
from chaos_harness import Workers, cli_env, make_contacts, make_sources, plan, private_cluster, sandbox_with_log  # noqa: E402
from chaos_run import ChaosResult, ChaosSpec, run_chaos  # noqa: E402
from common import ROOT, add_dir_options, log, md_table, run_main  # noqa: E402

from audiopipe.sandbox.app import Faults  # noqa: E402

AIM = 2.5
THROUGHPUT_LATENCY = 0.2
CONCURRENCY = 8


def check_chaos(r: ChaosResult) -> None:
    """Exactly once, nothing lost, unknowns explained, every surviving worker exiting 0: else a failure."""
    a = r.audit
    problems = []
    if r.timed_out:
        problems.append(f"the workers did not finish within {r.spec.timeout:g} s")
    if a.duplicates:
        problems.append(f"{a.duplicates} message(s) stored twice")
    if a.lost:
        problems.append(f"{a.lost} row(s) lost ({a})")
    if a.unknown > r.unknown_allowed:
        problems.append(f"{a.unknown} unknown rows, more than the {r.unknown_allowed} their causes explain")
    if set(r.exit_codes) - {0}:
        problems.append(f"workers exited {r.exit_codes}")
    if problems:
        common.fail("chaos: " + "; ".join(problems))


def throughput(work: Path, *, workers: int, sends: int, sources: int = 4) -> dict[str, Any]:
    """One throughput run (see the module's docstring): the rate, and where the CPU went meanwhile (the
    workers, PostgreSQL, this process's sandbox, and every other process of the machine)."""
    faults = Faults(latency=THROUGHPUT_LATENCY)
    folder = work / "recordings"
    make_sources(folder, sources)
    people = make_contacts(work / "contacts.csv", sends // sources)
    with private_cluster() as (cluster, url), sandbox_with_log(work / "sandbox", faults) as (sandbox, said):
        env = cli_env(work, sandbox.url)
        plan(url, folder, work / "contacts.csv", work / "store", env)
        pool = Workers(url, env, work / "logs", concurrency=CONCURRENCY, lease=3.0)
        cpu0, pg0, me0, busy0 = _children_cpu(), postgres_cpu(cluster.data), _self_cpu(), common._busy_s()
        started = time.monotonic()
        pool.start(workers)
        pool.wait(started + 600)
        if pool.running:
            pool.stop_all()
            common.fail(f"throughput with {workers} worker(s): not finished within 600 s")
        wall = time.monotonic() - started
        cpu = {"workers": _children_cpu() - cpu0, "postgres": postgres_cpu(cluster.data) - pg0,
               "bench_and_sandbox": _self_cpu() - me0, "machine": (common._busy_s() or 0.0) - (busy0 or 0.0)}
        a = audit(url, sandbox, people, sources)
    if a.states != {"sent": len(people) * sources} or a.duplicates or set(pool.exit_codes()) != {0}:
        common.fail(f"throughput with {workers} worker(s): {a.states}, {a.duplicates} stored twice, "
                    f"exits {dict(pool.exit_codes())}")
    times = sorted(t for t, _ in said.arrivals)
    span = times[-1] - times[0]
    cores = {k: v / wall for k, v in cpu.items()}
    cores["others"] = max(0.0, cores["machine"] - cores["workers"] - cores["postgres"] - cores["bench_and_sandbox"])
    return {"workers": workers, "concurrency": CONCURRENCY, "sends": len(times), "span_s": span,
            "rate": (len(times) - 1) / span, "wall_s": wall, "cpu_s": cpu, "cores": cores,
            "bound_rate": workers * CONCURRENCY / THROUGHPUT_LATENCY}


def postgres_cpu(data: Path) -> float:
    """CPU seconds the cluster's server processes used so far: the postmaster's own, its reaped children's
    (a backend's CPU lands there when its connection ends) and its live children's."""
    import psutil

    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        t = master.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in master.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return float(total)
    except (OSError, ValueError, IndexError, psutil.Error):
        return 0.0


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def chaos_rows(r: ChaosResult) -> list[list[str]]:
    a = r.audit
    return [
        ["chaos", "messages stored twice", f"{a.duplicates}", "0", "ok" if a.duplicates == 0 else "FAIL"],
        ["chaos", "rows lost (not final, unstored, unaccounted, missing)", f"{a.lost}", "0",
         "ok" if a.lost == 0 else "FAIL"],
        ["chaos", "unknown rows / their possible causes",
         f"{a.unknown} / {r.unknown_allowed}",
         f"in flight at {len(r.kills)} kills {r.in_flight_at_kills} + at the restart {r.restart_in_flight} "
         f"+ 500s {r.answered_500} + lost answers {r.lost_answers}",
         "ok" if a.unknown <= r.unknown_allowed else "FAIL"],
        ["chaos", "rows the reaper made unknown / in flight at kills and restart",
         f"{a.reaped} / {r.in_flight_at_kills + (r.restart_in_flight or 0)}", "at most the sends in flight",
         "ok" if a.reaped <= r.in_flight_at_kills + (r.restart_in_flight or 0) else "FAIL"],
        ["chaos", "sent, unknown (of planned)", f"{a.states.get('sent', 0)}, {a.unknown} (of {a.planned})",
         f"429s answered: {r.answered_429}", f"{r.seconds:.0f} s"],
    ]


def throughput_rows(one: dict[str, Any], many: dict[str, Any]) -> list[list[str]]:
    ratio = many["rate"] / one["rate"]
    return [
        ["throughput", f"1 worker, concurrency {CONCURRENCY}", f"{one['rate']:.1f} sends/s",
         f"bound {one['bound_rate']:.0f}/s", _cpu(one)],
        ["throughput", f"{many['workers']} workers, concurrency {CONCURRENCY}", f"{many['rate']:.1f} sends/s",
         f"bound {many['bound_rate']:.0f}/s", _cpu(many)],
        ["throughput", f"throughput, {many['workers']} workers vs 1", f"{ratio:.2f}x", f">= {AIM}x",
         "met" if ratio >= AIM else "missed"],
    ]


def _cpu(run: dict[str, Any]) -> str:
    c = run["cores"]
    return (f"cores busy: workers {c['workers']:.2f}, PostgreSQL {c['postgres']:.2f}, "
            f"sandbox {c['bench_and_sandbox']:.2f}, other processes {c['others']:.2f} (of {os.cpu_count()})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="400 sends of chaos with 1 kill; 160 sends a throughput run")
    ap.add_argument("--sends", type=int, default=None, help="sends of the chaos run (default 20000; --quick 400)")
    ap.add_argument("--throughput-sends", type=int, default=None,
                    help="sends of each throughput run (default 2000; --quick 160)")
    ap.add_argument("--skip-chaos", action="store_true", help="only the throughput runs")
    add_dir_options(ap)
    args = ap.parse_args()
    common.set_dirs(args.work, args.out)
    work, out = common.WORK / "distributed", common.OUT
    out.mkdir(parents=True, exist_ok=True)
    sends = args.sends or (400 if args.quick else 20_000)
    tput = args.throughput_sends or (160 if args.quick else 2_000)
    kills = 1 if args.quick else 10
    load0 = os.getloadavg()
    t0 = time.monotonic()

    chaos: ChaosResult | None = None
    if not args.skip_chaos:
        log(f"[1/3] chaos: {sends} sends, 3 workers, {kills} kill(s), one database restart")
        spec = ChaosSpec(contacts=sends // 4, kills=kills, timeout=120 + sends / 10)
        chaos = run_chaos(common.fresh_dir(work / "chaos"), spec)
        for t, what in chaos.timeline:
            log(f"  {t:6.1f} s {what}")
        check_chaos(chaos)
    log(f"[2/3] throughput: 1 worker at concurrency {CONCURRENCY}, {tput} sends, {THROUGHPUT_LATENCY * 1000:.0f} ms")
    one = throughput(common.fresh_dir(work / "one"), workers=1, sends=tput)
    log(f"  {one['rate']:.1f} sends/s")
    log(f"[3/3] throughput: 3 workers at concurrency {CONCURRENCY}, {tput} sends")
    many = throughput(common.fresh_dir(work / "three"), workers=3, sends=tput)
    log(f"  {many['rate']:.1f} sends/s")

    rows = (chaos_rows(chaos) if chaos else []) + throughput_rows(one, many)
    total = time.monotonic() - t0
    cmd = ".venv/bin/python bench/bench_distributed.py" + (" --quick" if args.quick else "") + \
        (f" --sends {args.sends}" if args.sends else "") + \
        (f" --throughput-sends {args.throughput_sends}" if args.throughput_sends else "") + \
        (" --skip-chaos" if args.skip_chaos else "")
    env_line = f"{platform.machine()}, {os.cpu_count()} vCPUs, Python {platform.python_version()}"
    load = f"load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    text = (f"`{cmd}` ({'quick run' if args.quick else 'full run'}, git {git_head()}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d}; {env_line}; took {total / 60:.1f} min; {load})\n\n"
            + md_table(["part", "measure", "value", "against", "verdict"], rows) + "\n")
    log("\n" + text)
    report = {"command": cmd, "quick": args.quick, "chaos": chaos and {
        "spec": chaos.spec.__dict__, "audit": chaos.audit.__dict__, "kills": [k.__dict__ for k in chaos.kills],
        "restart_in_flight": chaos.restart_in_flight, "answered_500": chaos.answered_500,
        "lost_answers": chaos.lost_answers, "answered_429": chaos.answered_429, "seconds": chaos.seconds,
        "timeline": chaos.timeline}, "throughput": {"one": one, "many": many, "ratio": many["rate"] / one["rate"]},
        "environment": env_line, "load": load, "total_s": total, "table": rows, "markdown": text}
    (out / "distributed.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "distributed.md").write_text(text)
    log(f"wrote {out / 'distributed.json'}")
    return 0


def git_head() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    run_main("bench_distributed", main)
