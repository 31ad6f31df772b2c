"""What every ledger promises (audiopipe.campaign.ledger.interface), held against each kind of ledger.

The tests speak to the Ledger interface only: no SQL, no file. A ledger of another kind (a shared
PostgreSQL one) joins by adding a store to STORES: something whose ``open()`` gives a new Ledger on
the same records each time it is called, as another run (or another machine) would open it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from audiopipe.campaign.ledger import (
    FINAL_STATES,
    STATES,
    Ledger,
    LedgerLocked,
    NotResolvable,
    PlannedSend,
    RowStatus,
    SendKey,
    SqliteLedger,
    TallyKey,
)
from audiopipe.errors import AudiopipeError

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32
PENDING, SENDING, SENT = RowStatus.PENDING, RowStatus.SENDING, RowStatus.SENT
FAILED, DEFERRED, UNKNOWN = RowStatus.FAILED, RowStatus.DEFERRED, RowStatus.UNKNOWN


class Store(Protocol):
    def open(self) -> Ledger: ...


@dataclass
class SqliteStore:
    path: Path

    def open(self) -> Ledger:
        return SqliteLedger(self.path)


def shared(ledger: Ledger) -> bool:
    """A ledger many workers use at once (PostgreSQL), as against the embedded one a run locks."""
    return type(ledger).__name__ == "PgLedger"


@dataclass
class PostgresStore:
    url: str
    journal: Path

    def open(self) -> Ledger:
        from audiopipe.campaign.pg import PgLedger

        return PgLedger(self.url, journal_dir=self.journal, lease=5)


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Store:
    return SqliteStore(tmp / "state" / "ledger.sqlite3")


def _postgres(request: pytest.FixtureRequest, tmp: Path) -> Store:
    return PostgresStore(request.getfixturevalue("pg_url"), tmp / "journal")  # a fresh database per test


STORES: list[Callable[[pytest.FixtureRequest, Path], Store]] = [_sqlite, _postgres]
STORE_IDS = ["sqlite", "postgres"]


@pytest.fixture(params=STORES, ids=STORE_IDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return request.param(request, tmp_path)


@pytest.fixture
def ledger(store: Store) -> Iterator[Ledger]:
    led = store.open()
    try:
        yield led
    finally:
        led.close()


def key(contact: str = "c1", part: int = 1, campaign: str = "default", sha: str = SHA) -> SendKey:
    return SendKey(campaign, WS, contact, sha, part)


def planned(*keys: SendKey, parts: int = 1, file: str = "a.wav") -> list[PlannedSend]:
    return [PlannedSend(k, parts, file, "p") for k in keys]


def settle(ledger: Ledger, k: SendKey, state: RowStatus) -> None:
    """Take ``k`` to ``state`` the way runs do: the intent, then (unless still sending) a result."""
    ledger.begin(k, parts=1, file="a.wav", prepared_sha256="p")
    if state != SENDING:
        ledger.finish(k, state, message_id="m" if state == SENT else None)


def state_of(ledger: Ledger, k: SendKey) -> RowStatus | None:
    row = ledger.get(k)
    return None if row is None else row.state


# --- plan, intent, outcome -------------------------------------------------------------------------

def test_a_plan_records_every_send_pending_before_any_is_attempted(ledger):
    keys = [key(f"c{i}") for i in range(5)]
    assert ledger.plan("w", planned(*keys), {"folder": "/f"}, campaign="default") == 5
    assert {r.key for r in ledger.rows(states=(PENDING,))} == set(keys)
    assert all(r.attempts == 0 and r.work == "w" for r in ledger.rows())
    assert ledger.counts() == dict(dict.fromkeys(STATES, 0), pending=5)
    assert ledger.plan("w", planned(*keys), campaign="default") == 5  # the same plan again adds nothing
    assert len(ledger.rows()) == 5


def test_a_send_is_pending_then_sending_then_its_result(ledger, store):
    k = key()
    ledger.plan("w", planned(k))
    ledger.begin(k, parts=1, file="a.wav", prepared_sha256="p")
    row = ledger.get(k)
    assert row is not None and (row.state, row.attempts, row.file, row.prepared_sha256) == (SENDING, 1, "a.wav", "p")
    with store.open() as other:  # committed: another run sees the intent before the request goes out
        assert state_of(other, k) == SENDING
    ledger.finish(k, SENT, message_id="m-1", status=201)
    row = ledger.get(k)
    assert (row.state, row.message_id, row.status, row.error) == (SENT, "m-1", 201, None)
    assert ledger.get(key("nobody")) is None


@pytest.mark.parametrize("state", FINAL_STATES)
def test_a_result_is_recorded_as_given(ledger, state):
    k = key()
    ledger.begin(k, parts=1, file="a.wav", prepared_sha256="p")
    ledger.finish(k, state, error="why", status=422)
    row = ledger.get(k)
    assert (row.state, row.error, row.status) == (state, "why", 422)
    if state == SENT and shared(ledger):
        # many workers: a sent row is never begun again, whoever asks (the embedded batch only
        # begins what it decided to send; a shared ledger cannot trust every caller to)
        with pytest.raises(AudiopipeError, match="not sent again"):
            ledger.begin(k, parts=1, file="a.wav", prepared_sha256="q")
        return
    ledger.begin(k, parts=1, file="a.wav", prepared_sha256="q")  # tried again: the last result is cleared
    row = ledger.get(k)
    assert (row.state, row.error, row.status, row.attempts, row.prepared_sha256) == (SENDING, None, None, 2, "q")


def test_a_result_is_only_a_final_state(ledger):
    ledger.begin(key(), parts=1, file="a.wav", prepared_sha256="p")
    for bad in (PENDING, SENDING, "done", ""):
        with pytest.raises(ValueError):
            ledger.finish(key(), bad)
    assert state_of(ledger, key()) == SENDING


@pytest.mark.parametrize("state", [SENT, FAILED, DEFERRED, UNKNOWN, SENDING])
def test_a_plan_never_turns_an_attempted_send_back_to_pending(ledger, state):
    k = key()
    settle(ledger, k, state)
    assert ledger.plan("w", planned(k, key("new"))) == 1
    assert state_of(ledger, k) == state
    assert ledger.plan("w", planned(key("new"))) == 1  # nor does a plan without it remove it
    assert state_of(ledger, k) == state


def test_a_new_plan_replaces_only_the_pending_rows_of_its_own_work(ledger):
    a1, a2, b1, gone = key("a1"), key("a2"), key("b1"), key("sent")
    ledger.plan("A", planned(a1, a2, gone))
    ledger.plan("B", planned(b1))
    settle(ledger, gone, SENT)
    assert ledger.plan("A", planned(a1)) == 1  # a2 was never attempted: simply no longer left
    assert {r.key for r in ledger.rows(states=(PENDING,))} == {a1, b1}
    assert state_of(ledger, gone) == SENT


# --- a run that died: unknown, never resent on its own ----------------------------------------------

def test_sends_left_mid_request_become_unknown_never_pending_again(store):
    left, done = key("left"), key("done")
    dead = store.open()
    dead.acquire()
    dead.plan("w", planned(left, done))
    settle(dead, done, SENT)
    dead.begin(left, parts=1, file="a.wav", prepared_sha256="p")
    dead.close()  # the run is gone with its send in flight
    with store.open() as run:
        run.acquire()
        assert run.recover() == 1
        row = run.get(left)
        assert row.state == UNKNOWN and row.error
        assert state_of(run, done) == SENT
        assert run.recover() == 0
        assert run.plan("w", planned(left, done)) == 0  # the next plan leaves it unknown
        assert state_of(run, left) == UNKNOWN
        assert run.counts()[UNKNOWN] == 1 and run.counts()[PENDING] == 0


def test_recovering_is_recorded_in_the_history_like_any_result(ledger):
    """The recovery goes through the ledger's own write path: each send it settles is a record."""
    for contact in ("a", "b"):
        ledger.begin(key(contact), parts=1, file="a.wav", prepared_sha256="p")
    before = ledger.records()
    assert ledger.recover() == 2
    assert ledger.records() == before + 2


# --- settled by a person ---------------------------------------------------------------------------

def test_resolving_settles_unknown_sends_all_or_none_with_who_and_when(ledger):
    lost, crashed, fine = key("lost"), key("crashed"), key("fine")
    settle(ledger, lost, UNKNOWN)
    settle(ledger, crashed, SENDING)  # a dead run's: as unknown, to whoever holds the lock
    settle(ledger, fine, SENT)
    ledger.acquire()
    with pytest.raises(NotResolvable):
        ledger.resolve([lost, fine], delivered=True, by="ann@host")
    assert state_of(ledger, lost) == UNKNOWN  # none of it was written
    before = ledger.resolve([lost], delivered=True, by="ann@host", message_id="m-1", note="asked")
    assert [r.state for r in before] == [UNKNOWN]
    row = ledger.get(lost)
    assert (row.state, row.message_id) == (SENT, "m-1")
    assert row.resolved["outcome"] == "delivered" and row.resolved["by"] == "ann@host"
    if shared(ledger):
        # many workers: a send in flight belongs to its live worker until the reaper says it died
        with pytest.raises(NotResolvable, match="alive"):
            ledger.resolve([crashed], delivered=False, by="bob@host")
        return
    ledger.resolve([crashed], delivered=False, by="bob@host")
    row = ledger.get(crashed)
    assert row.state == DEFERRED and row.resolved["outcome"] == "not delivered"
    assert [r.key for r in ledger.resolutions()] == [crashed, lost]
    assert ledger.tally()["default"][TallyKey.RESOLVED] == 2
    ledger.begin(crashed, parts=1, file="a.wav", prepared_sha256="p")  # sent again: no longer by hand
    assert ledger.get(crashed).resolved is None and [r.key for r in ledger.resolutions()] == [lost]


# --- what is left: counts, blocked parts, where pending sends come from ------------------------------

def test_counts_rows_and_campaigns(ledger):
    for campaign, contact, state in [("x", "c1", SENT), ("x", "c2", FAILED), ("y", "c1", UNKNOWN),
                                     ("y", "c2", SENDING), ("y", "c3", DEFERRED)]:
        settle(ledger, key(contact, campaign=campaign), state)
    assert ledger.counts() == {PENDING: 0, SENDING: 1, SENT: 1, FAILED: 1, DEFERRED: 1, UNKNOWN: 1}
    assert ledger.counts("x") == dict(dict.fromkeys(STATES, 0), sent=1, failed=1)  # the keys are the words
    assert ledger.counts("nope") == dict.fromkeys(STATES, 0)
    assert ledger.campaigns() == ["x", "y"]
    assert {r.key.contact for r in ledger.rows("y", (UNKNOWN, SENDING))} == {"c1", "c2"}
    assert [r.key.contact for r in ledger.rows("y", contact="c3")] == ["c3"]
    assert len(ledger.rows(limit=2)) == 2


def test_parts_behind_a_part_no_run_sends_are_blocked(ledger):
    keys = [key("u", part=p) for p in (1, 2, 3)]
    ledger.plan("w", planned(*keys, parts=3))
    ledger.begin(keys[0], parts=3, file="a.wav", prepared_sha256="p")
    ledger.finish(keys[0], UNKNOWN)
    (counts,) = ledger.tally().values()
    assert counts[TallyKey.BLOCKED] == 2 and counts[PENDING] == 0 and counts[UNKNOWN] == 1
    assert [(b.row.key.part, b.behind_part, b.behind_state) for b in ledger.blocked()] == [
        (2, 1, UNKNOWN), (3, 1, UNKNOWN)]


def test_pending_sends_name_the_plan_that_recorded_them(ledger):
    ledger.plan("w", planned(key("a"), key("b")), {"folder": "/rec", "contacts": "/c.csv"}, campaign="default")
    (source,) = ledger.pending_sources()
    assert (source["campaign"], source["work"], source["pending"]) == ("default", "w", 2)
    assert (source["folder"], source["contacts"]) == ("/rec", "/c.csv") and source["planned_at"]


# --- which ledger it is, and one run at a time --------------------------------------------------------

def test_a_ledger_keeps_its_id_and_its_record_count_only_grows(store, ledger):
    first = ledger.identity()
    assert first is not None and first.ledger_id == ledger.ledger_id and first.records == 0
    ledger.plan("w", planned(key("a"), key("b")))
    assert ledger.tried("default") == 0  # planned is not tried
    settle(ledger, key("a"), SENT)
    assert ledger.tried("default") == 1 and ledger.tried("other") == 0
    with store.open() as again:
        later = again.identity()
    assert later.ledger_id == first.ledger_id and later.records > first.records
    assert ledger.location


def test_one_run_at_a_time(store, ledger):
    other = store.open()
    if shared(ledger):  # the point of a shared ledger: many workers at once, each one seen alive
        try:
            ledger.acquire()
            other.acquire()
            assert ledger.running() and other.running()
        finally:
            other.close()
        return
    try:
        ledger.acquire()
        assert ledger.running() is None  # its own lock is no other run
        with pytest.raises(LedgerLocked):
            other.acquire()
        assert other.running()
        ledger.release()
        assert other.running() is None
        other.acquire()
        with pytest.raises(LedgerLocked):
            ledger.acquire()
    finally:
        other.close()  # closing lets go of the lock too
    ledger.acquire()


def test_what_a_ledger_hands_out_is_plain_json_words(ledger):
    """States and counts compare equal to the strings a ledger has always stored and reported."""
    settle(ledger, key(), SENT)
    row = ledger.get(key())
    assert row.state == "sent" and f"{row.state}" == "sent"
    assert json.loads(json.dumps({"counts": ledger.counts(), "state": row.state})) == {
        "counts": {"pending": 0, "sending": 0, "sent": 1, "failed": 0, "deferred": 0, "unknown": 0}, "state": "sent"}
