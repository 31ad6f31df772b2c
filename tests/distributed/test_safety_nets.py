"""The safety nets every worker runs (``audiopipe.maintain``): lost tokens are topped up to the sends
still to come, sends of a dead worker become unknown (never pending), finished tokens are deleted; and
a second SIGTERM ends a worker at once, leaving its sends in flight to the reaper."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
from pg_campaign import seed, start_worker, states

from audiopipe.campaign.pg import jobs
from audiopipe.distributed.app import maintain
from audiopipe.distributed.context import WorkerContext
from audiopipe.sandbox.config import Faults

pytestmark = pytest.mark.timeout(90)
TOKEN = "test-token"


def todo_tokens(url: str) -> int:
    with psycopg.connect(url) as conn:
        return jobs.queued_tokens(conn, "spring")


def test_lost_tokens_are_topped_up_and_dead_workers_sends_reaped(pg_url, open_pg, tmp_path):
    seed(pg_url, tmp_path / "store", 6)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")  # every token lost (a job that failed, say)
        conn.execute("INSERT INTO workers (id, host, pid, heartbeat_at) "
                     "VALUES ('dead', 'h', 1, now() - interval '1 hour')")
        conn.execute("UPDATE sends SET state = 'sending', owner = 'dead', attempts = 1 "
                     "WHERE contact = (SELECT min(contact) FROM sends)")
    ctx = WorkerContext(open_pg(lease=5.0))
    done = maintain(ctx)
    assert done["reaped"] == 1 and done["tokens_added"] == 5
    assert states(pg_url) == {"pending": 5, "unknown": 1}
    assert todo_tokens(pg_url) == 5
    assert maintain(ctx)["tokens_added"] == 0  # nothing lacking any more


def test_a_stopped_campaign_gets_no_top_up(pg_url, open_pg, tmp_path):
    seed(pg_url, tmp_path / "store", 4)
    ledger = open_pg()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
    ledger.stop_campaign("spring", "test")
    assert maintain(WorkerContext(ledger))["tokens_added"] == 0 and todo_tokens(pg_url) == 0


def test_a_second_sigterm_ends_the_worker_at_once(pg_url, make_sandbox, tmp_path):
    sb = make_sandbox(faults=Faults(latency=3.0))
    seed(pg_url, tmp_path / "store", 8)
    proc = start_worker(pg_url, sb.url, tmp_path / "journal", concurrency=2, token=TOKEN)
    deadline = time.monotonic() + 60
    while states(pg_url).get("sending", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)  # long before the 3 s requests in flight could end
    assert proc.returncode == -signal.SIGTERM
    assert states(pg_url).get("sending") == 2 and "sent" not in states(pg_url)  # left to the reaper: unknown
