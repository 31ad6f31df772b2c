"""The send protocol of many workers on a real PostgreSQL: a claim is committed before the request,
a result is fenced by its attempt, split recordings go part after part, a stopped campaign is claimed
by nobody, and the reaper makes the sends of a dead worker unknown (never pending)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    UNKNOWN,
    NotResolvable,
    PlannedSend,
    SendKey,
)
from audiopipe.campaign.pg import NotRegistered, Recorded

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32


def key(contact: str = "c1", part: int = 1, campaign: str = "spring") -> SendKey:
    return SendKey(campaign, WS, contact, SHA, part)


def plan(ledger, *keys: SendKey, parts: int = 1) -> None:
    ledger.plan("work", [PlannedSend(k, parts, "talk.wav", "cd" * 32) for k in keys])


def state_of(url: str, k: SendKey) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT state, owner, attempts FROM sends WHERE campaign = %s AND contact = %s "
                            "AND part = %s", (k.campaign, k.contact, k.part)).fetchone()


def test_a_claim_is_committed_before_it_is_returned(open_pg, pg_url):
    worker = open_pg()
    plan(worker, key("c1"), key("c2"), key("c3"))
    worker.acquire()
    first = worker.claim(limit=2)
    assert len(first) == 2 and {(c.attempt, c.owner) for c in first} == {(1, worker.worker_id)}
    for c in first:  # another connection sees them sending, owned: what a crash right now would leave
        assert state_of(pg_url, c.key) == (SENDING, worker.worker_id, 1)
    assert len(worker.claim(limit=5)) == 1
    assert worker.claim() == []


def test_claiming_needs_a_registered_worker(open_pg):
    worker = open_pg()
    with pytest.raises(NotRegistered):
        worker.claim()
    worker.acquire()
    worker.release()
    with pytest.raises(NotRegistered):
        worker.claim()


def test_a_result_is_fenced_by_its_attempt(open_pg, pg_url):
    worker = open_pg()
    plan(worker, key())
    worker.acquire()
    (first,) = worker.claim()
    assert worker.complete(first, DEFERRED, error="rate limited (429)", status=429) == Recorded.WRITTEN
    (second,) = worker.claim()
    assert second.attempt == 2
    # the first attempt's answer arriving late (a replay, a slow thread) cannot overwrite the second's row
    assert worker.complete(first, SENT, message_id="m-late") == Recorded.STALE
    assert state_of(pg_url, key()) == (SENDING, worker.worker_id, 2)
    assert worker.complete(second, SENT, message_id="m-2") == Recorded.WRITTEN
    assert worker.complete(second, SENT, message_id="m-2") == Recorded.WRITTEN  # written twice: the same, no harm
    row = worker.get(key())
    assert (row.state, row.message_id, row.attempts) == (SENT, "m-2", 2)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE state = 'stale'").fetchone()[0] == 1


def test_a_late_answer_lands_on_a_row_the_reaper_gave_up_on(open_pg):
    """A worker that was only slow loses a label, not a message: its definite result replaces unknown."""
    worker, reaper = open_pg(), open_pg(lease=60)
    plan(worker, key())
    worker.acquire()
    (claim,) = worker.claim()
    with psycopg.connect(worker.url, autocommit=True) as conn:  # its heartbeat looks a minute old
        conn.execute("UPDATE workers SET heartbeat_at = now() - interval '61 s'")
    assert reaper.reap() == 1
    assert reaper.get(key()).state == UNKNOWN
    assert worker.complete(claim, SENT, message_id="m-1") == Recorded.WRITTEN
    assert reaper.get(key()).state == SENT


def test_a_deferred_send_waits_for_its_retry_time(open_pg):
    worker = open_pg()
    plan(worker, key("c1"), key("c2"))
    worker.acquire()
    claims = worker.claim(limit=2)
    worker.complete(claims[0], DEFERRED, error="connection refused", retry_in=60)
    worker.complete(claims[1], DEFERRED, error="connection refused", retry_in=0)
    assert [c.key for c in worker.claim(limit=2)] == [claims[1].key]


def test_part_k_is_claimed_only_once_part_k_minus_1_is_sent(open_pg):
    worker = open_pg()
    worker.plan("work", [PlannedSend(key("c1", p), 3, "talk.wav", "cd" * 32) for p in (1, 2, 3)]
                + [PlannedSend(key("c2"), 1, "hi.wav", "ef" * 32)])
    worker.acquire()
    first = worker.claim(limit=10)
    assert sorted((c.key.contact, c.key.part) for c in first) == [("c1", 1), ("c2", 1)]
    (p1,) = [c for c in first if c.key.contact == "c1"]
    assert worker.claim(limit=10) == []  # part 2 waits while part 1 is in flight
    worker.complete(p1, SENT, message_id="m-1")
    (p2,) = worker.claim(limit=10)
    assert p2.key.part == 2
    worker.complete(p2, FAILED, error="refused (422)", status=422)
    assert worker.claim(limit=10) == []  # part 3 stays behind a refused part 2, however long we wait
    assert worker.tally()["spring"]["blocked"] == 1


def test_a_part_planned_after_its_predecessor_was_sent_is_ready(open_pg):
    worker = open_pg()
    worker.begin(key("c1", 1), parts=2, file="talk.wav", prepared_sha256="cd" * 32)
    worker.finish(key("c1", 1), SENT, message_id="m-1")
    plan(worker, key("c1", 1), key("c1", 2), parts=2)
    worker.acquire()
    assert [(c.key.part) for c in worker.claim(limit=10)] == [2]


def test_a_stopped_campaign_is_claimed_by_nobody(open_pg):
    worker, other = open_pg(), open_pg()
    plan(worker, key("c1"), key("c2"), key("c1", campaign="autumn"))
    worker.acquire()
    other.acquire()
    assert other.stop_campaign("spring", "authentication failed (401)") is True
    assert other.stop_campaign("spring", "again") is False  # the first reason is kept
    assert worker.stopped("spring") == "authentication failed (401)" and worker.stopped("autumn") is None
    assert [c.key.campaign for c in worker.claim(limit=10)] == ["autumn"]
    assert worker.claim(limit=10) == []
    assert worker.resume_campaign("spring", by="ana") is True
    assert sorted(c.key.contact for c in worker.claim(limit=10)) == ["c1", "c2"]


WORKER = textwrap.dedent("""
    import sys, time
    from audiopipe.campaign.pg import PgLedger
    led = PgLedger(sys.argv[1], lease=float(sys.argv[2]), journal_dir=sys.argv[3])
    led.acquire()
    print(len(led.claim(limit=2)), flush=True)
    time.sleep(600)
""")


def test_the_reaper_makes_a_dead_workers_sends_unknown_and_spares_the_living(open_pg, pg_url, tmp_path):
    lease = 1.5
    alive = open_pg(lease=lease)
    plan(alive, key("c1"), key("c2"), key("c3"))
    alive.acquire()
    (mine,) = alive.claim()
    child = subprocess.Popen([sys.executable, "-c", WORKER, pg_url, str(lease), str(tmp_path / "journal")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "2"
        assert alive.reap() == 0  # alive and beating
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        time.sleep(lease + 0.5)
        assert alive.reap() == 2
    finally:
        child.kill()
        child.wait()
    dead = [r for r in alive.rows() if r.key != mine.key]
    assert {r.state for r in dead} == {UNKNOWN} and all("may have been delivered" in r.error for r in dead)
    assert alive.get(mine.key).state == SENDING  # its owner is alive: in flight, not unknown
    assert alive.reap() == 0
    assert alive.claim() == []  # unknown is never claimed again on its own


def test_a_released_workers_sends_are_reaped_at_once(open_pg):
    worker, other = open_pg(), open_pg()
    plan(worker, key())
    worker.acquire()
    worker.claim()
    worker.release()
    assert other.recover() == 1 and other.get(key()).state == UNKNOWN


def test_a_send_in_flight_on_a_live_worker_cannot_be_settled_by_hand(open_pg):
    worker, person = open_pg(), open_pg()
    plan(worker, key())
    worker.acquire()
    worker.claim()
    with pytest.raises(NotResolvable, match="being sent right now"):
        person.resolve([key()], delivered=True, by="ana")


def test_running_names_the_other_live_workers(open_pg):
    worker, other = open_pg(), open_pg()
    assert worker.running() is None
    other.acquire()
    assert worker.running().startswith("1 worker alive (")
    worker.acquire()
    assert other.running().startswith("1 worker alive")
    other.release()
    assert worker.running() is None


def test_pending_is_what_a_plan_leaves_and_a_claim_takes(open_pg):
    worker = open_pg()
    plan(worker, key())
    assert worker.get(key()).state == PENDING


def test_a_claim_whose_answer_was_lost_is_found_again_by_its_id(open_pg, pg_url, pg_cluster):
    """The connection dies right after the claim committed (here: the server crashes): the worker,
    back on a new connection, finds the rows its claim took, instead of leaving them sending forever."""
    import uuid

    from audiopipe.campaign.pg.claims import claim_rows, claimed_by

    worker = open_pg()
    plan(worker, key("c1"), key("c2"))
    claim_id = uuid.uuid4()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        taken = claim_rows(conn, "w-1", claim_id, limit=1)
    pg_cluster.restart_immediate()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert claimed_by(conn, "w-1", claim_id) == taken
        assert claimed_by(conn, "w-1", uuid.uuid4()) == [] and claimed_by(conn, "w-2", claim_id) == []


def test_two_runs_that_both_read_pending_cannot_both_begin_the_send(open_pg):
    """The SQLite ledger keeps a second run out with its lock; a shared ledger refuses the intent
    instead: on a row another live worker is sending, and on a row already sent."""
    from audiopipe.campaign.pg import AlreadyTaken

    first, second = open_pg(), open_pg()
    plan(first, key())
    first.acquire()
    second.acquire()
    assert first.get(key()).state == second.get(key()).state == PENDING  # both decide to send it
    first.begin(key(), parts=1, file="talk.wav", prepared_sha256="cd" * 32)
    with pytest.raises(AlreadyTaken, match="being sent right now by the worker"):
        second.begin(key(), parts=1, file="talk.wav", prepared_sha256="cd" * 32)
    first.finish(key(), SENT, message_id="m-1")
    with pytest.raises(AlreadyTaken, match="was sent by another run"):
        second.begin(key(), parts=1, file="talk.wav", prepared_sha256="cd" * 32)
    row = first.get(key())
    assert (row.state, row.attempts, row.message_id) == (SENT, 1, "m-1")
    first.begin(key("c2"), parts=1, file="a", prepared_sha256="x")
    first.finish(key("c2"), DEFERRED, error="rate limited (429)")
    second.begin(key("c2"), parts=1, file="a", prepared_sha256="x")  # deferred: definitely not sent, anyone may
