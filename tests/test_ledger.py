"""The SQLite ledger: intent committed before a send, results after, recovery of sends left
mid-flight, counts, and the run lock (also across processes, and after the holder is SIGKILLed).

Every check of "committed" reads the file through a second, independent sqlite3 connection."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audiopipe.errors import AudiopipeError
from audiopipe.ledger import (DEFERRED, FAILED, SENDING, SENT, STATES, UNKNOWN, LedgerLocked, SendKey,
                              SqliteLedger, default_state_path)

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32


def key(contact: str = "c1", part: int = 1, campaign: str = "default") -> SendKey:
    return SendKey(campaign, WS, contact, SHA, part)


def peek(path: Path, k: SendKey) -> tuple | None:
    """The row as another process would see it now: a fresh connection, no shared cache."""
    db = sqlite3.connect(str(path), timeout=5)
    try:
        return db.execute("SELECT state, message_id, error, status, attempts, prepared_sha256, file, parts "
                          "FROM sends WHERE campaign=? AND workspace=? AND contact=? AND source_sha256=? "
                          "AND part=?", (k.campaign, k.workspace, k.contact, k.source_sha256, k.part)).fetchone()
    finally:
        db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def ledger(path: Path):
    with SqliteLedger(path) as led:
        yield led


def test_creates_parent_folder_and_uses_wal(path, ledger):
    assert path.is_file()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_begin_is_committed_before_the_request(path, ledger):
    k = key()
    assert peek(path, k) is None
    ledger.begin(k, parts=2, file="talk.wav", prepared_sha256="cd" * 32)
    # What another connection sees right now is what survives a crash right now.
    assert peek(path, k) == (SENDING, None, None, None, 1, "cd" * 32, "talk.wav", 2)
    row = ledger.get(k)
    assert row is not None and row.state == SENDING and row.key == k and row.parts == 2


def test_finish_is_committed(path, ledger):
    k = key()
    ledger.begin(k, parts=1, file="a.wav", prepared_sha256="cd" * 32)
    ledger.finish(k, SENT, message_id="m-1", status=201)
    assert peek(path, k)[:4] == (SENT, "m-1", None, 201)
    k2 = key("c2")
    ledger.begin(k2, parts=1, file="a.wav", prepared_sha256="cd" * 32)
    ledger.finish(k2, FAILED, error="refused by the server (422): file: too big", status=422)
    assert peek(path, k2)[:4] == (FAILED, None, "refused by the server (422): file: too big", 422)


def test_finish_refuses_a_non_final_state(ledger):
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    for bad in (SENDING, "done", ""):
        with pytest.raises(ValueError):
            ledger.finish(key(), bad)


def test_begin_again_counts_attempts_and_clears_the_last_result(path, ledger):
    k = key()
    ledger.begin(k, parts=1, file="a", prepared_sha256="x")
    ledger.finish(k, DEFERRED, error="rate limited (429)", status=429)
    ledger.begin(k, parts=1, file="a", prepared_sha256="y")
    assert peek(path, k) == (SENDING, None, None, None, 2, "y", "a", 1)


def test_rows_survive_reopening(path):
    with SqliteLedger(path) as led:
        led.begin(key(), parts=1, file="a", prepared_sha256="x")
        led.finish(key(), SENT, message_id="m-9")
    with SqliteLedger(path) as led:
        row = led.get(key())
        assert row is not None and (row.state, row.message_id) == (SENT, "m-9")
        assert led.get(key("nobody")) is None


def test_recover_turns_sending_into_unknown_and_nothing_else(path, ledger):
    states = {"a": SENDING, "b": SENT, "c": FAILED, "d": DEFERRED, "e": UNKNOWN, "f": SENDING}
    for contact, state in states.items():
        ledger.begin(key(contact), parts=1, file="a", prepared_sha256="x")
        if state != SENDING:
            ledger.finish(key(contact), state, message_id="m" if state == SENT else None)
    assert ledger.recover() == 2
    assert peek(path, key("a"))[0] == UNKNOWN and "may have been delivered" in peek(path, key("a"))[2]
    assert peek(path, key("f"))[0] == UNKNOWN
    assert {c: peek(path, key(c))[0] for c in "bcde"} == {"b": SENT, "c": FAILED, "d": DEFERRED, "e": UNKNOWN}
    assert peek(path, key("b"))[1] == "m"
    assert ledger.recover() == 0


def test_counts_rows_and_campaigns(ledger):
    assert ledger.counts() == {s: 0 for s in STATES}
    plan = [("x", "c1", SENT), ("x", "c2", SENT), ("x", "c3", FAILED), ("y", "c1", UNKNOWN),
            ("y", "c2", SENDING), ("y", "c3", DEFERRED)]
    for campaign, contact, state in plan:
        k = key(contact, campaign=campaign)
        ledger.begin(k, parts=1, file="a", prepared_sha256="x")
        if state != SENDING:
            ledger.finish(k, state)
    assert ledger.counts() == {SENDING: 1, SENT: 2, FAILED: 1, DEFERRED: 1, UNKNOWN: 1}
    assert ledger.counts("x") == {SENDING: 0, SENT: 2, FAILED: 1, DEFERRED: 0, UNKNOWN: 0}
    assert ledger.counts("nope") == {s: 0 for s in STATES}
    assert ledger.campaigns() == ["x", "y"]
    assert {r.key.contact for r in ledger.rows("y", (UNKNOWN, SENDING))} == {"c1", "c2"}
    assert len(ledger.rows()) == 6 and len(list(ledger)) == 6


def test_events_keep_the_history(path, ledger):
    k = key()
    ledger.begin(k, parts=1, file="a", prepared_sha256="x")
    ledger.finish(k, DEFERRED, status=429)
    ledger.begin(k, parts=1, file="a", prepared_sha256="x")
    ledger.finish(k, SENT, message_id="m")
    db = sqlite3.connect(str(path))
    assert [r[0] for r in db.execute("SELECT state FROM events ORDER BY rowid")] == [SENDING, DEFERRED, SENDING, SENT]
    db.close()


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "ledger.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AudiopipeError, match="cannot open the ledger"):
        SqliteLedger(bad)


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AudiopipeError, match="cannot open the ledger"):
        SqliteLedger(tmp_path / "file" / "ledger.sqlite3")


def test_default_state_path(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOPIPE_STATE", str(tmp_path / "s.db"))
    assert default_state_path() == tmp_path / "s.db"
    monkeypatch.delenv("AUDIOPIPE_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_path() == tmp_path / "xdg" / "audiopipe" / "ledger.sqlite3"


# --- the run lock ------------------------------------------------------------------------------

def test_second_acquire_is_refused_until_release(path):
    first, second = SqliteLedger(path), SqliteLedger(path)
    try:
        first.acquire()
        with pytest.raises(LedgerLocked) as info:
            second.acquire()
        assert f"pid {os.getpid()}" in str(info.value) and str(path) in str(info.value)
        first.release()
        second.acquire()  # free again
        with pytest.raises(LedgerLocked):
            first.acquire()
    finally:
        first.close()
        second.close()
    third = SqliteLedger(path)
    third.acquire()  # close() released it too
    third.close()


def test_other_ledger_files_do_not_share_a_lock(tmp_path):
    a, b = SqliteLedger(tmp_path / "a.db"), SqliteLedger(tmp_path / "b.db")
    try:
        a.acquire()
        b.acquire()
    finally:
        a.close()
        b.close()


HOLDER = textwrap.dedent("""
    import sys, time
    from audiopipe.ledger import SqliteLedger, SendKey
    led = SqliteLedger(sys.argv[1])
    led.acquire()
    if sys.argv[2] == "begin":
        led.begin(SendKey("default", "ws", "c1", "sha", 1), parts=1, file="a.wav", prepared_sha256="p")
    print("ready", flush=True)
    time.sleep(60)
""")


def _start_holder(path: Path, what: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), what], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_lock_is_held_across_processes_and_dropped_when_the_holder_is_killed(path):
    proc = _start_holder(path, "hold")
    try:
        with SqliteLedger(path) as led:
            with pytest.raises(LedgerLocked, match=f"pid {proc.pid}"):
                led.acquire()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL
            led.acquire()  # no stale lock to clean up by hand
            led.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_send_left_mid_flight_by_a_killed_process_becomes_unknown(path):
    proc = _start_holder(path, "begin")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    k = SendKey("default", "ws", "c1", "sha", 1)
    assert peek(path, k)[0] == SENDING
    with SqliteLedger(path) as led:
        led.acquire()
        assert led.recover() == 1
        row = led.get(k)
        assert row is not None and row.state == UNKNOWN
        assert led.counts() == {SENDING: 0, SENT: 0, FAILED: 0, DEFERRED: 0, UNKNOWN: 1}


def test_readers_do_not_wait_for_a_running_writer(path, ledger):
    """`audiopipe status` opens the ledger while a batch holds the lock: it must not block."""
    ledger.acquire()
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    t0 = time.monotonic()
    with SqliteLedger(path) as other:
        assert other.counts()[SENDING] == 1
    assert time.monotonic() - t0 < 2
