"""The SQLite ledger: intent committed before a send, results after, recovery of sends left
mid-flight, counts, and the run lock (also across processes, and after the holder is SIGKILLed)
whatever path names the file; files that are not our ledger; write failures on real full and
read-only file systems; the note of which ledger recorded a batch's work.

Every check of "committed" reads the file through a second, independent sqlite3 connection."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    MARKER_NAME,
    PENDING,
    SENDING,
    SENT,
    STATES,
    UNKNOWN,
    LedgerIdentity,
    LedgerIOError,
    LedgerLocked,
    LedgerRefused,
    NotResolvable,
    PlannedSend,
    SendKey,
    SqliteLedger,
    WorkMarker,
    default_state_path,
)
from audiopipe.errors import AudiopipeError

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


# The ledger as the first audiopipe made it: no ids, no planned or resolved columns.
FIRST_SCHEMA = """
CREATE TABLE sends (
    campaign TEXT NOT NULL, workspace TEXT NOT NULL, contact TEXT NOT NULL, source_sha256 TEXT NOT NULL,
    part INTEGER NOT NULL, parts INTEGER NOT NULL, file TEXT NOT NULL, prepared_sha256 TEXT,
    state TEXT NOT NULL, message_id TEXT, error TEXT, status INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (campaign, workspace, contact, source_sha256, part)
);
CREATE INDEX sends_state ON sends (campaign, state);
CREATE TABLE events (
    at REAL NOT NULL, campaign TEXT, workspace TEXT, contact TEXT, source_sha256 TEXT, part INTEGER,
    state TEXT NOT NULL, detail TEXT
);
"""


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


def test_a_new_ledger_is_in_wal_mode_the_moment_it_appears(path, monkeypatch):
    """Nobody opening a new ledger ever switches its journal mode: the switch needs the file to itself,
    and two processes switching at once (a run starting, `audiopipe status` glancing at it) made one
    of them fail at once with "locked" (seen in CI)."""
    from audiopipe.campaign.ledger import sqlite_file

    headers: list[bytes] = []
    link = sqlite_file._link_into_place

    def seen_at_link(tmp: Path, real: Path) -> None:
        headers.append(tmp.read_bytes()[18:20])  # the file format's write/read versions: 2 is WAL
        link(tmp, real)

    monkeypatch.setattr(sqlite_file, "_link_into_place", seen_at_link)
    with SqliteLedger(path):
        pass
    assert headers == [b"\x02\x02"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.sqlite3"]  # no -wal of the temp file


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
    assert ledger.counts() == dict.fromkeys(STATES, 0)
    plan = [("x", "c1", SENT), ("x", "c2", SENT), ("x", "c3", FAILED), ("y", "c1", UNKNOWN),
            ("y", "c2", SENDING), ("y", "c3", DEFERRED)]
    for campaign, contact, state in plan:
        k = key(contact, campaign=campaign)
        ledger.begin(k, parts=1, file="a", prepared_sha256="x")
        if state != SENDING:
            ledger.finish(k, state)
    assert ledger.counts() == {PENDING: 0, SENDING: 1, SENT: 2, FAILED: 1, DEFERRED: 1, UNKNOWN: 1}
    assert ledger.counts("x") == {PENDING: 0, SENDING: 0, SENT: 2, FAILED: 1, DEFERRED: 0, UNKNOWN: 0}
    assert ledger.counts("nope") == dict.fromkeys(STATES, 0)
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
    from audiopipe.campaign.ledger import SqliteLedger, SendKey
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
        assert led.counts() == {PENDING: 0, SENDING: 0, SENT: 0, FAILED: 0, DEFERRED: 0, UNKNOWN: 1}


def test_readers_do_not_wait_for_a_running_writer(path, ledger):
    """`audiopipe status` opens the ledger while a batch holds the lock: it must not block."""
    ledger.acquire()
    ledger.begin(key(), parts=1, file="a", prepared_sha256="x")
    t0 = time.monotonic()
    with SqliteLedger(path) as other:
        assert other.counts()[SENDING] == 1
    assert time.monotonic() - t0 < 2


# --- one ledger, whatever path names it --------------------------------------------------------------

def _other_name(path: Path, how: str, tmp_path: Path) -> Path:
    """Another name of the ledger file at ``path``."""
    if how == "symlink":
        link = tmp_path / "elsewhere" / "link.sqlite3"
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(path)
        return link
    if how == "hardlink":
        twin = tmp_path / "elsewhere" / "twin.sqlite3"
        twin.parent.mkdir(exist_ok=True)
        os.link(path, twin)
        return twin
    if how == "dotdot":
        return path.parent / ".." / path.parent.name / "." / path.name
    assert how == "relative"
    return Path(os.path.relpath(path))


NAMES = ["symlink", "hardlink", "dotdot", "relative"]


@pytest.mark.parametrize("how", NAMES)
def test_the_lock_belongs_to_the_file_not_the_name(path, tmp_path, how, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SqliteLedger(path) as first:
        first.acquire()
        with SqliteLedger(_other_name(path, how, tmp_path)) as second:
            with pytest.raises(LedgerLocked, match=f"pid {os.getpid()}"):
                second.acquire()
            assert second.running().startswith(f"pid {os.getpid()} since ")
            first.release()
            second.acquire()


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_the_lock_holds_across_processes_whatever_the_name(path, tmp_path, how):
    with SqliteLedger(path):
        pass
    proc = _start_holder(path, "hold")
    try:
        with SqliteLedger(_other_name(path, how, tmp_path)) as led, \
                pytest.raises(LedgerLocked, match=f"pid {proc.pid}"):
            led.acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_hard_link_opens_the_ledger_by_the_name_it_was_made_with(path, tmp_path):
    """SQLite names the -wal after the path it opened: through a hard link a second log would hide
    the commits of a run that was killed before its log was copied into the file."""
    proc = _start_holder(path, "begin")  # intent committed, in the -wal, then SIGKILL
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert path.with_name(path.name + "-wal").stat().st_size > 0
    twin = _other_name(path, "hardlink", tmp_path)
    with SqliteLedger(twin) as led:
        assert led.real_path == path
        row = led.get(SendKey("default", "ws", "c1", "sha", 1))
        assert row is not None and row.state == SENDING
        led.acquire()
        assert led.recover() == 1
    assert not twin.with_name(twin.name + "-wal").exists()


def test_closing_one_ledger_keeps_the_sqlite_locks_of_another_in_the_same_process(path):
    """Closing any descriptor on a file drops every POSIX lock of the process on it, SQLite's too:
    another process would then take itself for the last user and delete the -wal under us."""
    a, b = SqliteLedger(path), SqliteLedger(path)
    b.begin(key("before"), parts=1, file="a", prepared_sha256="x")
    a.close()
    reader = "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('SELECT 1 FROM sends'); db.close()"
    subprocess.run([sys.executable, "-c", reader, str(path)], check=True, timeout=30)
    b.begin(key("after"), parts=1, file="a", prepared_sha256="x")
    assert peek(path, key("after")) is not None, "a commit went into a -wal file that was deleted"
    b.close()


# --- a file that is not our ledger is refused, never initialised over -------------------------------

def test_a_new_ledger_has_a_random_id_that_stays(path, tmp_path):
    with SqliteLedger(path) as led:
        first = led.identity()
    assert first is not None and len(first.ledger_id) == 32 and first.path == str(path) and first.records == 0
    with SqliteLedger(path) as led:
        led.begin(key(), parts=1, file="a", prepared_sha256="x")
        led.finish(key(), SENT, message_id="m")
        again = led.identity()
    assert again.ledger_id == first.ledger_id and again.records == 2
    with SqliteLedger(tmp_path / "other.sqlite3") as other:
        assert other.identity().ledger_id != first.ledger_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.sqlite3"]  # no temp file left


def test_runs_that_create_one_ledger_at_once_share_it(path):
    code = "import sys; from audiopipe.campaign.ledger import SqliteLedger; print(SqliteLedger(sys.argv[1]).ledger_id)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    ids = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(ids) == 1 and all(p.returncode == 0 for p in procs)
    with SqliteLedger(path) as led:
        assert {led.ledger_id} == ids


def test_a_zero_byte_ledger_is_refused_and_left_alone(path):
    path.parent.mkdir(parents=True)
    path.touch()
    for create in (True, False):
        with pytest.raises(LedgerRefused, match=r"is empty \(0 bytes\).*--new-ledger") as info:
            SqliteLedger(path, create=create)
        assert len(str(info.value).splitlines()) == 1 and str(path) in str(info.value)
    assert path.stat().st_size == 0 and sorted(p.name for p in path.parent.iterdir()) == ["ledger.sqlite3"]
    with SqliteLedger(path, allow_empty=True) as led:  # --new-ledger: nothing in it to lose
        assert led.ledger_id and led.counts()[SENT] == 0


@pytest.mark.parametrize("content", ["text", "other-sqlite", "empty-sqlite"])
def test_a_file_that_is_not_our_ledger_is_refused_and_left_alone(path, content):
    path.parent.mkdir(parents=True)
    if content == "text":
        path.write_bytes(b"contact,workspace\n" * 50)
    else:
        db = sqlite3.connect(str(path))
        db.execute("CREATE TABLE notes (body TEXT)" if content == "other-sqlite" else "PRAGMA user_version=1")
        db.commit()
        db.close()
    before = path.read_bytes()
    allowed = (True, False) if content != "empty-sqlite" else (False,)
    for allow_empty in allowed:
        with pytest.raises(LedgerRefused) as info:
            SqliteLedger(path, allow_empty=allow_empty)
        assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1
    assert path.read_bytes() == before
    if content == "empty-sqlite":  # a database with no tables at all holds nothing: --new-ledger may use it
        with SqliteLedger(path, allow_empty=True) as led:
            assert led.ledger_id


def test_a_ledger_from_before_ids_gets_one_and_keeps_its_rows(path):
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(str(path))
    db.executescript(FIRST_SCHEMA)
    db.execute("INSERT INTO sends VALUES "
               "('default', ?, 'c1', ?, 1, 1, 'a.wav', 'p', 'sent', 'm-1', NULL, 201, 1, 0, 0)", (WS, SHA))
    db.commit()
    db.close()
    with SqliteLedger(path, create=False) as reader:  # `audiopipe status` changes nothing
        assert reader.ledger_id is None and reader.identity() is None and reader.counts()[SENT] == 1
    with SqliteLedger(path) as led:
        assert led.ledger_id and led.get(key()).message_id == "m-1"
        given = led.ledger_id
    with SqliteLedger(path, create=False) as reader:
        assert reader.ledger_id == given


# --- a ledger that cannot be written stops the run with one line -------------------------------------

def test_a_full_ledger_says_disk_full_not_rollback(path, ledger):
    """PRAGMA max_page_count makes SQLite's own 'database or disk is full' happen for real."""
    ledger.begin(key("first"), parts=1, file="a", prepared_sha256="x")
    ledger._db.execute("PRAGMA max_page_count=" + str(ledger._db.execute("PRAGMA page_count").fetchone()[0]))
    with pytest.raises(LedgerIOError) as info:
        for n in range(2000):
            ledger.begin(key(f"c{n}"), parts=1, file="a" * 500, prepared_sha256="x" * 500)
    message = str(info.value)
    assert message == f"cannot write the ledger {path}: the disk is full", message
    assert "rollback" not in message
    assert ledger.get(key("first")).state == SENDING  # what was committed stays; reads still work
    assert not ledger._db.in_transaction


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 256 KB file system (tmpfs), when this process may mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_is_one_line_and_commits_stay(tiny_disk):
    path = tiny_disk / "ledger.sqlite3"
    committed = 0
    with SqliteLedger(path) as led:
        with pytest.raises(LedgerIOError) as info:
            for n in range(10_000):
                led.begin(key(f"c{n}"), parts=1, file="x" * 200, prepared_sha256=f"{n}")
                committed += 1
        assert str(info.value) == f"cannot write the ledger {path}: the disk is full"
        assert 0 < committed < 10_000
    with SqliteLedger(path, create=False) as led:
        assert led.counts()[SENDING] == committed


def test_a_read_only_ledger_fails_before_the_run_starts(tiny_disk):
    path = tiny_disk / "ledger.sqlite3"
    with SqliteLedger(path) as led:
        led.begin(key(), parts=1, file="a", prepared_sha256="x")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(AudiopipeError) as info, SqliteLedger(path) as led:
        led.acquire()  # notes its holder: a run that cannot write learns it here, before any send
    assert str(path) in str(info.value) and "read-only" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_fifo_or_a_folder_named_as_the_ledger_is_refused_at_once(tmp_path):
    fifo = tmp_path / "ledger.fifo"
    os.mkfifo(fifo)
    for bad in (fifo, tmp_path):
        with pytest.raises(LedgerRefused, match="not a regular file"):
            SqliteLedger(bad)


# --- the note of which ledger recorded a batch's work ------------------------------------------------

def test_the_marker_names_one_ledger_per_contacts_file_and_campaign(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    marker = WorkMarker(folder, tmp_path / "c.csv", "default", data_home=tmp_path / "data")
    assert marker.expected() is None
    with SqliteLedger(tmp_path / "a.sqlite3") as a, SqliteLedger(tmp_path / "b.sqlite3") as b:
        assert marker.record(a.identity()) is None
        marker.check(a.path, a.identity(), marker.expected())  # the same ledger: fine
        with pytest.raises(LedgerRefused, match="is not the one that recorded") as info:
            marker.check(b.path, b.identity(), marker.expected())
        assert str(b.path) in str(info.value) and str(a.real_path) in str(info.value)
        a.begin(key(), parts=1, file="a", prepared_sha256="x")
        marker.record(a.identity())
        assert marker.expected().records == 1
        older = LedgerIdentity(a.ledger_id, str(a.real_path), 0)
        with pytest.raises(LedgerRefused, match="older copy"):
            marker.check(a.path, older, marker.expected())
        # another campaign on the same folder is other work: its own ledger is fine
        spring = WorkMarker(folder, tmp_path / "c.csv", "spring", data_home=tmp_path / "data")
        assert spring.expected() is None
        spring.record(b.identity())
        assert marker.expected().ledger_id == a.ledger_id and spring.expected().ledger_id == b.ledger_id
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME]  # no temp file left
    assert not (tmp_path / "data").exists()


def test_a_damaged_marker_is_refused_unless_starting_afresh(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / MARKER_NAME).write_text("{ half written")
    marker = WorkMarker(folder, tmp_path / "c.csv", "default", data_home=tmp_path / "data")
    with pytest.raises(LedgerRefused, match=r"is damaged.*--new-ledger"):
        marker.expected()
    assert marker.expected(tolerant=True) is None
    with SqliteLedger(tmp_path / "l.sqlite3") as led:
        marker.record(led.identity())
        assert marker.expected().ledger_id == led.ledger_id


# --- the plan, blocked parts, and sends settled by hand ---------------------------------------------

def planned(*keys: SendKey, parts: int = 1, file: str = "a.wav") -> list[PlannedSend]:
    return [PlannedSend(k, parts, file, "p") for k in keys]


def test_a_plan_records_every_send_pending_in_one_event_and_keeps_what_is_known(path, ledger):
    sent, new = key("c1"), key("c2")
    ledger.begin(sent, parts=1, file="a.wav", prepared_sha256="p")
    ledger.finish(sent, SENT, message_id="m-1")
    records = ledger.records()
    assert ledger.plan("w1", planned(sent, new, key("c3")), {"folder": "/f"}) == 2
    assert peek(path, sent)[:2] == (SENT, "m-1")  # a plan never touches a row some run already wrote
    assert peek(path, new)[0] == PENDING and peek(path, new)[4] == 0  # planned, never attempted
    assert ledger.records() == records + 1  # one event for the whole plan, not one per row
    db = sqlite3.connect(str(path))
    (detail,) = db.execute("SELECT detail FROM events WHERE state='planned'").fetchone()
    db.close()
    assert json.loads(detail) == {"folder": "/f", "work": "w1", "sends": 3, "pending": 2, "dropped": 0}
    ledger.begin(new, parts=1, file="a.wav", prepared_sha256="p")  # the send goes as before
    assert peek(path, new)[0] == SENDING and peek(path, new)[4] == 1


def test_a_new_plan_drops_only_its_own_works_stale_pending_rows(ledger):
    a1, a2, b1 = key("a1"), key("a2"), key("b1")
    other_campaign = key("a2", campaign="other")
    ledger.plan("A", planned(a1, a2), campaign="default")
    ledger.plan("B", planned(b1), campaign="default")
    ledger.plan("A", planned(other_campaign), campaign="other")
    # A again without a2 (its file was removed): a2 was never attempted, so it is simply no longer left
    assert ledger.plan("A", planned(a1), campaign="default") == 1
    assert {r.key for r in ledger.rows(states=(PENDING,))} == {a1, b1, other_campaign}
    # a plan with nothing left to send still clears what it no longer holds
    assert ledger.plan("A", [], campaign="default") == 0
    assert {r.key for r in ledger.rows(states=(PENDING,))} == {b1, other_campaign}


def test_planning_many_sends_is_one_transaction_and_one_event(ledger):
    sends = planned(*(key(f"c{i}") for i in range(20_000)))
    t0 = time.perf_counter()
    assert ledger.plan("w", sends) == 20_000
    took = time.perf_counter() - t0
    assert ledger.plan("w", sends) == 20_000  # the same plan again (every cron run) adds no row
    assert ledger.records() == 2 and len(ledger.rows()) == 20_000
    print(f"plan of 20k sends: {took:.2f} s")  # measured, not asserted (-s shows it)


def test_parts_behind_an_unknown_failed_or_interrupted_part_are_blocked_not_behind_a_deferred_one(ledger):
    cases = {"u": UNKNOWN, "f": FAILED, "d": DEFERRED, "s": SENDING}
    for contact, first in cases.items():
        keys = [key(contact, part=p) for p in (1, 2, 3)]
        ledger.plan(f"w-{contact}", planned(*keys, parts=3), campaign="default")
        ledger.begin(keys[0], parts=3, file="a.wav", prepared_sha256="p")
        if first != SENDING:
            ledger.finish(keys[0], first)
    (counts,) = ledger.tally(running=False).values()
    # u, f and s (a dead run's) hold back parts 2-3; behind d, the next run sends all three in order
    assert counts["blocked"] == 6 and counts[PENDING] == 2 and counts[DEFERRED] == 1
    got = {(r.key.contact, r.key.part, by, state) for r, by, state in ledger.blocked()}
    assert got == {(c, p, 1, cases[c]) for c in "ufs" for p in (2, 3)}
    # while a batch runs, 'sending' is in flight: the parts behind it are simply pending
    (counts,) = ledger.tally(running=True).values()
    assert counts["blocked"] == 4 and counts[PENDING] == 4


def test_resolving_settles_unknown_rows_all_or_none_with_who_and_when(path, ledger):
    lost, crashed, fine = key("c1"), key("c2"), key("c3")
    for k in (lost, crashed, fine):
        ledger.begin(k, parts=1, file="a.wav", prepared_sha256="p")
    ledger.finish(lost, UNKNOWN, error="no answer", status=502)
    ledger.finish(fine, SENT, message_id="m-3")
    with pytest.raises(NotResolvable, match="is sent, not unknown"):
        ledger.resolve([lost, fine], delivered=True, by="ann@host")
    assert peek(path, lost)[0] == UNKNOWN  # none of it was written
    before = ledger.resolve([lost], delivered=True, by="ann@host", message_id="m-1", note="asked")
    assert [r.state for r in before] == [UNKNOWN]
    assert peek(path, lost)[:4] == (SENT, "m-1", None, None)
    ledger.resolve([crashed], delivered=False, by="bob@host")  # a dead run's 'sending' is as unknown
    row = ledger.get(crashed)
    assert row.state == DEFERRED and "marked not delivered by bob@host" in row.error
    assert row.resolved["outcome"] == "not delivered" and row.resolved["by"] == "bob@host"
    assert [r.key for r in ledger.resolutions()] == [crashed, lost]
    db = sqlite3.connect(str(path))
    details = [json.loads(d) for (d,) in db.execute("SELECT detail FROM events WHERE state='resolved'")]
    db.close()
    assert [(d["outcome"], d["by"], d["was"], d["message_id"]) for d in details] == [
        ("delivered", "ann@host", UNKNOWN, "m-1"), ("not delivered", "bob@host", SENDING, None)]
    assert details[0]["error"] == "no answer" and details[0]["status"] == 502 and details[0]["note"] == "asked"
    # the next attempt makes the resolution history: the row is an ordinary send again
    ledger.begin(crashed, parts=1, file="a.wav", prepared_sha256="p")
    assert ledger.get(crashed).resolved is None and [r.key for r in ledger.resolutions()] == [lost]


def test_an_older_ledger_is_read_as_it_is_and_upgraded_by_its_first_writer(path):
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(str(path))
    db.executescript(FIRST_SCHEMA)
    db.execute("INSERT INTO sends VALUES ('default', ?, 'c1', ?, 1, 2, 'a.wav', 'p', 'unknown', NULL, 'lost', "
               "502, 1, 0, 0)", (WS, SHA))
    db.execute("INSERT INTO sends VALUES ('default', ?, 'c1', ?, 2, 2, 'a.wav', 'p', 'deferred', NULL, NULL, "
               "429, 1, 0, 0)", (WS, SHA))
    db.commit()
    db.close()

    def columns() -> set[str]:
        con = sqlite3.connect(str(path))
        try:
            return {r[1] for r in con.execute("PRAGMA table_info(sends)")}
        finally:
            con.close()

    def journal_mode() -> str:
        con = sqlite3.connect(str(path))
        try:
            return str(con.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            con.close()

    with SqliteLedger(path, create=False) as reader:  # `audiopipe status`: reads, changes nothing
        (counts,) = reader.tally().values()
        assert counts[UNKNOWN] == 1 and counts["blocked"] == 1 and counts["resolved"] == 0
        assert reader.resolutions() == [] and reader.get(key(part=2)).resolved is None
    assert "work" not in columns() and "resolved" not in columns() and journal_mode() == "delete"
    with SqliteLedger(path, create=False) as writer:  # `audiopipe resolve` on it
        writer.resolve([key()], delivered=True, by="ann@host")
    assert {"work", "resolved"} <= columns() and journal_mode() == "delete"
    with SqliteLedger(path) as led:
        assert led.get(key()).resolved["by"] == "ann@host" and led.get(key(part=2)).state == DEFERRED
    assert journal_mode() == "wal"  # a run's writer moves it to WAL, once


# --- reading never makes a ledger; the words a ledger stores ----------------------------------------

def test_open_existing_reads_the_ledger_there_and_never_makes_one(tmp_path):
    from audiopipe.campaign.ledger import open_existing

    missing = tmp_path / "nowhere" / "ledger.sqlite3"
    assert open_existing(missing) is None
    assert not missing.parent.exists()  # nothing made, not even the folder
    made = tmp_path / "ledger.sqlite3"
    with SqliteLedger(made) as led:
        led.begin(key(), parts=1, file="a", prepared_sha256="x")
    found = open_existing(made)
    assert found is not None
    with found:
        assert found.counts()[SENDING] == 1 and found.ledger_id
    old = tmp_path / "old.sqlite3"
    db = sqlite3.connect(str(old))
    db.executescript(FIRST_SCHEMA)
    db.close()
    with open_existing(old) as reader:  # a ledger from before ids is read as it is, not given one
        assert reader.ledger_id is None
    other = tmp_path / "notes.txt"
    other.write_text("not a ledger\n" * 10)
    with pytest.raises(LedgerRefused, match="not an audiopipe ledger"):
        open_existing(other)


def test_the_vocabulary_is_the_strings_a_ledger_has_always_stored():
    assert [s.value for s in STATES] == ["pending", "sending", "sent", "failed", "deferred", "unknown"]
    for s in STATES:
        assert s == s.value and hash(s) == hash(s.value) and {s.value: 1}[s] == 1
        assert f"{s}" == str(s) == s.value and json.dumps({s: s}) == f'{{"{s.value}": "{s.value}"}}'
