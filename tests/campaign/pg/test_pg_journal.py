"""Results the database could not take: kept in a local fsynced journal, written when it is back, by
the same worker or, after it died, by the next one started on the machine; replaying twice is harmless."""

from __future__ import annotations

import os

import psycopg
import pytest

from audiopipe.campaign.ledger import SENDING, SENT, PlannedSend, SendKey
from audiopipe.campaign.pg import Recorded
from audiopipe.campaign.pg.claims import Claim, Result
from audiopipe.campaign.pg.journal import Journal, read, replay_orphans

pytestmark = pytest.mark.timeout(120)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"


def key(contact: str = "c1") -> SendKey:
    return SendKey("spring", WS, contact, "ab" * 32, 1)


def result(contact: str = "c1", attempt: int = 1, message_id: str = "m-1") -> Result:
    claim = Claim(key(contact), attempt, "w-dead", 1, "talk.wav", "cd" * 32, "work")
    return Result(claim, SENT, message_id=message_id, status=201)


def test_appended_results_read_back_whole_and_a_torn_last_line_is_ignored(tmp_path):
    journal = Journal(tmp_path, "w-1")
    journal.append(result("c1"))
    journal.append(result("c2"))
    with open(journal.path, "ab") as fh:
        fh.write(b'{"claim": {"key": {"campaign"')  # a crash in the middle of a write
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        assert read(fd) == [result("c1"), result("c2")]
    finally:
        os.close(fd)
    written: list[Result] = []
    assert journal.replay(written.append) == 2 and written == [result("c1"), result("c2")]
    assert journal.path.stat().st_size == 0 and not journal.pending
    journal.close()
    assert not journal.path.exists()  # nothing left to keep


def test_a_failed_replay_keeps_everything(tmp_path):
    journal = Journal(tmp_path, "w-1")
    journal.append(result())

    def unreachable(_: Result) -> None:
        raise OSError("the database is still away")

    with pytest.raises(OSError):
        journal.replay(unreachable)
    assert journal.pending and journal.path.stat().st_size > 0
    journal.close()
    assert journal.path.exists()  # kept for the next worker on this machine


def test_orphans_are_replayed_and_removed_but_a_live_workers_journal_is_left_alone(tmp_path):
    dead, live = Journal(tmp_path, "w-dead"), Journal(tmp_path, "w-live")
    dead.append(result("c1"))
    dead.close()
    live.append(result("c2"))
    written: list[Result] = []
    assert replay_orphans(tmp_path, written.append) == 1
    assert written == [result("c1")] and not dead.path.exists() and live.path.exists()
    live.close()


def test_a_result_the_database_cannot_take_is_journalled_and_written_when_it_is_back(open_pg, pg_url, pg_cluster):
    worker = open_pg(retry_for=0.5)
    worker.plan("work", [PlannedSend(key("c1"), 1, "talk.wav", "cd" * 32), PlannedSend(key("c2"), 1, "talk.wav", "x")])
    worker.acquire()
    (claim,) = worker.claim()
    pg_cluster.stop()  # the request went out and was answered; now the database is gone
    try:
        assert worker.complete(claim, SENT, message_id="m-1", status=201) == Recorded.JOURNALLED
        assert worker.journal.path.stat().st_size > 0
    finally:
        pg_cluster.start()
    (following,) = worker.claim()  # the next connection writes the journal first
    assert worker.get(claim.key).state == SENT and worker.get(claim.key).message_id == "m-1"
    assert worker.journal.path.stat().st_size == 0 and following.key != claim.key


def test_a_dead_workers_journal_is_replayed_by_the_next_worker_and_replaying_twice_is_harmless(
        open_pg, pg_url, tmp_path):
    planner = open_pg()
    planner.plan("work", [PlannedSend(key("c1"), 1, "talk.wav", "cd" * 32)])
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the dead worker's claim, committed before it sent
        conn.execute("UPDATE sends SET state = %s, owner = 'w-dead', attempts = 1", (SENDING,))
    dead = Journal(tmp_path / "journal", "w-dead")
    dead.append(result("c1"))
    keep = dead.path.read_bytes()
    dead.close()
    open_pg().acquire()
    assert planner.get(key("c1")).state == SENT and not dead.path.exists()
    before = planner.records()
    dead.path.write_bytes(keep)  # the same journal again (a crash between writing and removing it)
    open_pg().acquire()
    assert planner.get(key("c1")).state == SENT and planner.records() == before and not dead.path.exists()
