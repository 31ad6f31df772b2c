"""What every ledger promises, held against both: the SQLite ledger (one file, one process) and the
PostgreSQL one (many workers). The tests speak to the methods the batch, ``status`` and ``resolve``
use, never to SQL, and reopen a ledger where another run would (a second object on the same store).

What differs on purpose is not here: the run lock (a PostgreSQL ledger is shared by many runs at once,
so ``acquire`` registers a worker instead of locking others out; see tests/test_pg_ledger.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    STATES,
    UNKNOWN,
    NotResolvable,
    PlannedSend,
    SendKey,
    SqliteLedger,
)

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32
Opener = Callable[[], Any]


def key(contact: str = "c1", part: int = 1, campaign: str = "spring", sha: str = SHA) -> SendKey:
    return SendKey(campaign, WS, contact, sha, part)


def planned(k: SendKey, parts: int = 1, file: str = "talk.wav", prepared: str = "cd" * 32) -> PlannedSend:
    return PlannedSend(k, parts, file, prepared)


@pytest.fixture(params=["sqlite", "postgres"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a ledger on one store; each call is another run opening the same records."""
    opened: list[Any] = []

    def opener() -> Any:
        if request.param == "sqlite":
            led: Any = SqliteLedger(tmp_path / "state" / "ledger.sqlite3")
        else:
            from audiopipe.campaign.pg import PgLedger

            led = PgLedger(request.getfixturevalue("pg_url"), journal_dir=tmp_path / "journal", lease=5)
        opened.append(led)
        return led

    yield opener
    for led in opened:
        led.close()


@pytest.fixture
def ledger(open_ledger: Opener) -> Any:
    return open_ledger()


def test_begin_is_committed_before_the_request(open_ledger):
    first, second = open_ledger(), open_ledger()
    first.begin(key(), parts=2, file="talk.wav", prepared_sha256="cd" * 32)
    row = second.get(key())  # what another run sees right now is what a crash leaves
    assert (row.state, row.attempts, row.parts, row.file, row.prepared_sha256) == (SENDING, 1, 2, "talk.wav", "cd" * 32)
    assert row.key == key() and row.message_id is None


def test_finish_records_each_final_state(ledger):
    for n, (state, status) in enumerate([(SENT, 201), (FAILED, 422), (DEFERRED, 429), (UNKNOWN, None)]):
        k = key(f"c{n}")
        ledger.begin(k, parts=1, file="a.wav", prepared_sha256="x")
        ledger.finish(k, state, message_id="m-1" if state == SENT else None, error=None if state == SENT else "why",
                      status=status)
        row = ledger.get(k)
        assert (row.state, row.status) == (state, status)
        assert row.message_id == ("m-1" if state == SENT else None)


def test_finish_refuses_a_state_that_is_not_final(ledger):
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    for bad in (SENDING, PENDING, "done", ""):
        with pytest.raises(ValueError):
            ledger.finish(key(), bad)


def test_begin_again_counts_attempts_and_clears_the_last_result(ledger):
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    ledger.finish(key(), DEFERRED, error="rate limited (429)", status=429)
    ledger.begin(key(), parts=1, file="a", prepared_sha256="y")
    row = ledger.get(key())
    assert (row.state, row.attempts, row.error, row.status, row.prepared_sha256) == (SENDING, 2, None, None, "y")
    assert ledger.tried("spring") == 1


def test_plan_records_pending_and_keeps_what_was_done(ledger):
    ledger.begin(key("c1"), parts=1, file="talk.wav", prepared_sha256="cd" * 32)
    ledger.finish(key("c1"), SENT, message_id="m-1")
    pending = ledger.plan("work-a", [planned(key("c1")), planned(key("c2")), planned(key("c3"))],
                          {"folder": "/in", "contacts": "/in/list.csv"})
    assert pending == 2
    assert ledger.get(key("c1")).state == SENT  # a plan never turns a send that was done back into pending
    assert ledger.counts("spring") == {**dict.fromkeys(STATES, 0), SENT: 1, PENDING: 2}
    assert [r.key.contact for r in ledger.rows("spring", (PENDING,))] == ["c2", "c3"]
    assert {r.work for r in ledger.rows("spring", (PENDING,))} == {"work-a"}


def test_a_new_plan_of_the_same_work_drops_the_pending_rows_it_no_longer_holds(ledger):
    ledger.plan("work-a", [planned(key("c1")), planned(key("c2"))])
    ledger.plan("work-b", [planned(key("c9"))])
    assert ledger.plan("work-a", [planned(key("c2"))]) == 1
    assert sorted(r.key.contact for r in ledger.rows("spring")) == ["c2", "c9"]  # another work's plan is its own


def test_a_plan_with_nothing_left_leaves_no_record(ledger):
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    ledger.finish(key(), SENT, message_id="m")
    before = ledger.records()
    assert ledger.plan("work-a", [planned(key())]) == 0
    assert ledger.records() == before


def test_the_same_send_planned_twice_is_one_row(ledger):
    assert ledger.plan("work-a", [planned(key(), file="a.wav"), planned(key(), file="b.wav")]) == 1
    assert [r.file for r in ledger.rows()] == ["b.wav"]


def test_recover_makes_a_dead_runs_sends_unknown(open_ledger):
    dead = open_ledger()
    dead.begin(key(), parts=1, file="a", prepared_sha256="x")
    dead.close()  # its request may or may not have reached the server
    later = open_ledger()
    assert later.recover() == 1
    row = later.get(key())
    assert row.state == UNKNOWN and "may have been delivered" in row.error
    assert later.recover() == 0


def test_resolve_delivered_and_not_delivered(open_ledger):
    led = open_ledger()
    for contact in ("c1", "c2"):
        led.begin(key(contact), parts=1, file="a", prepared_sha256="x")
        led.finish(key(contact), UNKNOWN, error="no answer")
    before = led.resolve([key("c1")], delivered=True, by="ana", message_id="m-7", note="seen in the app")
    assert [r.state for r in before] == [UNKNOWN]
    led.resolve([key("c2")], delivered=False, by="ana")
    again = open_ledger()
    one, two = again.get(key("c1")), again.get(key("c2"))
    assert (one.state, one.message_id, one.resolved["by"], one.resolved["outcome"]) == (SENT, "m-7", "ana", "delivered")
    assert two.state == DEFERRED and "marked not delivered by ana" in two.error
    assert [r.key.contact for r in again.resolutions("spring")] == ["c2", "c1"]  # newest first
    assert again.tally("spring")["spring"]["resolved"] == 2


def test_resolve_is_all_or_none_and_only_for_unknown_sends(ledger):
    ledger.begin(key("c1"), parts=1, file="a", prepared_sha256="x")
    ledger.finish(key("c1"), UNKNOWN, error="no answer")
    ledger.begin(key("c2"), parts=1, file="a", prepared_sha256="x")
    ledger.finish(key("c2"), SENT, message_id="m")
    with pytest.raises(NotResolvable, match="is sent, not unknown"):
        ledger.resolve([key("c1"), key("c2")], delivered=True, by="ana")
    with pytest.raises(NotResolvable, match="not in the ledger"):
        ledger.resolve([key("c1"), key("nobody")], delivered=False, by="ana")
    assert ledger.get(key("c1")).state == UNKNOWN and ledger.get(key("c1")).resolved is None


def test_a_run_touching_a_resolved_send_clears_the_mark(ledger):
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    ledger.finish(key(), UNKNOWN)
    ledger.resolve([key()], delivered=False, by="ana")
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    assert ledger.get(key()).resolved is None and ledger.resolutions() == []


def test_parts_behind_an_unknown_part_are_blocked(ledger):
    ledger.plan("work-a", [planned(key("c1", part), parts=3) for part in (1, 2, 3)] + [planned(key("c2"))])
    ledger.begin(key("c1", 1), parts=3, file="talk.wav", prepared_sha256="cd" * 32)
    ledger.finish(key("c1", 1), UNKNOWN, error="no answer")
    tally = ledger.tally("spring")["spring"]
    assert (tally[PENDING], tally["blocked"], tally[UNKNOWN]) == (1, 2, 1)
    blocked = ledger.blocked("spring")
    assert [(r.key.part, by, state) for r, by, state in blocked] == [(2, 1, UNKNOWN), (3, 1, UNKNOWN)]
    assert len(ledger.blocked("spring", limit=1)) == 1


def test_a_part_left_sending_blocks_only_when_no_run_is_going(ledger):
    ledger.plan("work-a", [planned(key("c1", part), parts=2) for part in (1, 2)])
    ledger.begin(key("c1", 1), parts=2, file="talk.wav", prepared_sha256="cd" * 32)
    assert ledger.tally("spring", running=True)["spring"]["blocked"] == 0
    assert ledger.tally("spring", running=False)["spring"]["blocked"] == 1


def test_pending_sources_name_the_plan_that_recorded_them(ledger):
    ledger.plan("work-a", [planned(key("c1"))], {"folder": "/old", "contacts": "/old.csv"})
    ledger.plan("work-a", [planned(key("c1")), planned(key("c2"))], {"folder": "/in", "contacts": "/in/list.csv"})
    found = ledger.pending_sources("spring")
    assert [(s["campaign"], s["work"], s["pending"], s["folder"], s["contacts"]) for s in found] == [
        ("spring", "work-a", 2, "/in", "/in/list.csv")]
    assert isinstance(found[0]["planned_at"], float)


def test_rows_filter_and_campaigns_list(ledger):
    ledger.plan("w", [planned(key("c1")), planned(key("c2")), planned(key("c1", campaign="autumn"))])
    assert ledger.campaigns() == ["autumn", "spring"]
    assert [r.key.contact for r in ledger.rows(contact="c1")] == ["c1", "c1"]
    assert [r.key.campaign for r in ledger.rows("autumn")] == ["autumn"]
    assert len(ledger.rows(limit=2)) == 2
    assert ledger.rows(states=(SENT,)) == []
    assert len(list(iter(ledger))) == 3


def test_identity_is_stable_and_records_only_grow(open_ledger):
    first = open_ledger()
    first.plan("w", [planned(key())])
    ident = first.identity()
    first.begin(key(), parts=1, file="a", prepared_sha256="x")
    again = open_ledger().identity()
    assert again.ledger_id == ident.ledger_id and again.records > ident.records
