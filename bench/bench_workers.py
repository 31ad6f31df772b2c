"""Send rate of distributed workers (issue 10): 1 worker, then N workers, at concurrency 8 each, against
the sandbox at 200 ms latency (so the 2 cores are not the bound). Not part of the tests.

    .venv/bin/python bench/bench_workers.py [--sends 800] [--workers 3] [--concurrency 8] [--latency 0.2]

Each run gets a fresh database in a throwaway PostgreSQL cluster (tests/pg_fixtures.py), a campaign seeded
straight into it (tests/pg_campaign.py: rows, stored files, one send token each) and worker processes
(`run_worker(..., until_idle=True)`). The rate is sends over the time from the first claim to the last
result, read from the ledger's events (worker start-up is not counted). Every run checks its own
correctness: every row sent, one sandbox message per contact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import psycopg  # noqa: E402 - after the tests folder is on the path
from pg_campaign import seed, start_worker, states  # noqa: E402
from pg_fixtures import TEMPLATE, PgCluster, _make_folder, server_binaries  # noqa: E402

from audiopipe.campaign.pg.connection import connect  # noqa: E402
from audiopipe.campaign.pg.schema import migrate  # noqa: E402
from audiopipe.sandbox.app import Sandbox, SandboxConfig  # noqa: E402
from audiopipe.sandbox.config import Faults  # noqa: E402

TOKEN = "bench-token"  # the throwaway sandbox's token


def one_run(cluster: PgCluster, work: Path, *, workers: int, sends: int, concurrency: int, latency: float) -> float:
    url = cluster.url(cluster.new_database())
    sandbox = Sandbox(SandboxConfig(token=TOKEN, data_dir=work / f"sandbox{workers}", max_connections=256,
                                    faults=Faults(latency=latency))).start()
    try:
        seeded = seed(url, work / "store", sends)
        procs = [start_worker(url, sandbox.url, work / f"journal{workers}-{i}", concurrency=concurrency, token=TOKEN)
                 for i in range(workers)]
        for p in procs:
            _out, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"a worker failed: {err[-2000:]}")
        per_contact = Counter(m["contact_id"] for m in sandbox.messages())
        if states(url) != {"sent": sends} or per_contact != Counter(dict.fromkeys(seeded.contacts, 1)):
            raise SystemExit(f"wrong outcome: {states(url)}, {len(per_contact)} contacts reached")
        with psycopg.connect(url) as conn:
            first, last = conn.execute("SELECT min(at) FILTER (WHERE state = 'sending'), max(at) FILTER "
                                       "(WHERE state = 'sent') FROM events").fetchone()
        return sends / (last - first).total_seconds()
    finally:
        sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=800)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("PostgreSQL server binaries not found (make test installs them)")
    as_postgres = os.geteuid() == 0
    cluster = PgCluster(binaries, _make_folder(as_postgres), as_postgres)
    work = Path(tempfile.mkdtemp(prefix="audiopipe-bench-workers-"))
    try:
        cluster.init()
        cluster.start()
        with cluster.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
        with connect(cluster.url(TEMPLATE)) as conn:
            migrate(conn)
        rates = {n: one_run(cluster, work, workers=n, sends=args.sends, concurrency=args.concurrency,
                            latency=args.latency) for n in (1, args.workers)}
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"bench_workers {datetime.now(timezone.utc):%Y-%m-%d} {commit}: {args.sends} sends, concurrency "
          f"{args.concurrency}, sandbox latency {args.latency:g} s, {os.cpu_count()} cores")
    print(f"  1 worker:  {rates[1]:.1f} sends/s (ideal {args.concurrency / args.latency:.0f})")
    many = rates[args.workers]
    print(f"  {args.workers} workers: {many:.1f} sends/s = {many / rates[1]:.2f}x one worker")


if __name__ == "__main__":
    main()
