"""Many workers on one real PostgreSQL: claims with SKIP LOCKED never hand one send out twice, from
threads or from processes, and a crash of the server mid-run (``pg_ctl restart -m immediate``) loses
no claim that was committed and makes none go twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter

import psycopg
import pytest

from audiopipe.campaign.ledger import SENT, PlannedSend, SendKey

pytestmark = pytest.mark.timeout(180)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"


def plan(ledger, n: int) -> list[SendKey]:
    keys = [SendKey("spring", WS, f"c{i:05d}", "ab" * 32, 1) for i in range(n)]
    ledger.plan("work", [PlannedSend(k, 1, "talk.wav", "cd" * 32) for k in keys])
    return keys


def settled(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT state, attempts, count(*) FROM sends GROUP BY 1, 2 ORDER BY 1, 2").fetchall()


def work_until_empty(ledger, claimed: list[SendKey], *, limit: int = 1) -> None:
    """One worker: claim, 'send', record, until nothing is left."""
    ledger.acquire()
    while batch := ledger.claim(limit=limit):
        for c in batch:
            claimed.append(c.key)
            ledger.complete(c, SENT, message_id=f"m-{c.key.contact}")


@pytest.mark.slow
def test_eight_threads_claim_every_row_exactly_once(open_pg, pg_url):
    keys = plan(open_pg(), 8 * 500)
    claimed: list[list[SendKey]] = [[] for _ in range(8)]
    workers = [open_pg(pool_size=1) for _ in range(8)]
    threads = [threading.Thread(target=work_until_empty, args=pair) for pair in zip(workers, claimed, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = Counter(k for got in claimed for k in got)
    assert set(everything) == set(keys) and max(everything.values()) == 1
    assert sum(1 for got in claimed if got) >= 2  # they did work side by side
    assert settled(pg_url) == [(SENT, 1, len(keys))]


WORKER = textwrap.dedent("""
    import sys
    from audiopipe.campaign.ledger import SENT
    from audiopipe.campaign.pg import PgLedger
    led = PgLedger(sys.argv[1], journal_dir=sys.argv[2])
    led.acquire()
    while batch := led.claim(limit=3):
        for c in batch:
            print(c.key.contact, flush=True)
            led.complete(c, SENT, message_id="m")
    led.close()
""")


@pytest.mark.slow
def test_worker_processes_claim_every_row_exactly_once(open_pg, pg_url, tmp_path):
    keys = plan(open_pg(), 900)
    children = [subprocess.Popen([sys.executable, "-c", WORKER, pg_url, str(tmp_path / "journal")],
                                 stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [child.communicate(timeout=150)[0].split() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0]
    everything = Counter(c for out in outputs for c in out)
    assert set(everything) == {k.contact for k in keys} and max(everything.values()) == 1
    assert settled(pg_url) == [(SENT, 1, len(keys))]


@pytest.mark.slow
def test_a_server_crash_mid_run_loses_no_committed_claim(open_pg, pg_url, pg_cluster):
    """Four workers claim and record while the server is crashed and restarted under them. A claim
    whose commit was cut off is found again by its id or made anew, a result is written again until it
    lands: every send ends sent, each claimed once (attempt 1), none left behind."""
    keys = plan(open_pg(), 1200)
    claimed: list[list[SendKey]] = [[] for _ in range(4)]
    workers = [open_pg(pool_size=1, retry_for=60) for _ in range(4)]
    threads = [threading.Thread(target=work_until_empty, args=pair) for pair in zip(workers, claimed, strict=True)]
    for t in threads:
        t.start()
    while sum(map(len, claimed)) < 300:
        threading.Event().wait(0.02)
    pg_cluster.restart_immediate()
    crashed_at = sum(map(len, claimed))
    for t in threads:
        t.join()
    assert crashed_at < len(keys)  # the crash came mid-run
    everything = Counter(k for got in claimed for k in got)
    assert set(everything) == set(keys) and max(everything.values()) == 1
    assert settled(pg_url) == [(SENT, 1, len(keys))]
