"""The ledger: a durable record of every send, so a rerun never sends twice and never skips one.

One row per (campaign, workspace, contact, source content hash, part). The intent ("sending") is
committed before the request goes out; the result when it comes back. A row still "sending" when a
run starts belongs to a run that died mid-request: nobody knows whether the message was created,
so it becomes "unknown" and is resent only when the user says so (``--retry-unknown``).

The batch speaks to the :class:`Ledger` protocol only, so a shared database ledger can take the
place of :class:`SqliteLedger` without touching the batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from .errors import AudiopipeError, UsageError

# States a row can be in.
SENDING = "sending"     # intent written, result not yet: outcome unknown if found by a later run
SENT = "sent"
FAILED = "failed"       # refused for good (404/413/422...): retried only when what is sent changes
DEFERRED = "deferred"   # definitely not sent (429, connection failures): the next run tries again
UNKNOWN = "unknown"     # may have been created: never resent without --retry-unknown
STATES = (SENDING, SENT, FAILED, DEFERRED, UNKNOWN)


class LedgerLocked(AudiopipeError):
    """Another run holds the ledger."""


@dataclass(frozen=True)
class SendKey:
    campaign: str
    workspace: str
    contact: str
    source_sha256: str
    part: int


@dataclass(frozen=True)
class LedgerRow:
    key: SendKey
    state: str
    parts: int
    file: str
    prepared_sha256: str | None
    message_id: str | None
    error: str | None
    status: int | None
    attempts: int
    updated_at: float


class Ledger(Protocol):
    """What the batch needs from a ledger."""

    def acquire(self) -> None: ...
    def running(self) -> str | None: ...
    def release(self) -> None: ...
    def recover(self) -> int: ...
    def get(self, key: SendKey) -> LedgerRow | None: ...
    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str) -> None: ...
    def finish(self, key: SendKey, state: str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None: ...
    def rows(self, campaign: str | None = None, states: tuple[str, ...] | None = None) -> list[LedgerRow]: ...
    def counts(self, campaign: str | None = None) -> dict[str, int]: ...
    def close(self) -> None: ...


def default_state_path() -> Path:
    configured = os.environ.get("AUDIOPIPE_STATE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "audiopipe" / "ledger.sqlite3"


SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    campaign TEXT NOT NULL,
    workspace TEXT NOT NULL,
    contact TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    file TEXT NOT NULL,
    prepared_sha256 TEXT,
    state TEXT NOT NULL,
    message_id TEXT,
    error TEXT,
    status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (campaign, workspace, contact, source_sha256, part)
);
CREATE INDEX IF NOT EXISTS sends_state ON sends (campaign, state);
CREATE TABLE IF NOT EXISTS events (
    at REAL NOT NULL, campaign TEXT, workspace TEXT, contact TEXT, source_sha256 TEXT, part INTEGER,
    state TEXT NOT NULL, detail TEXT
);
"""


class SqliteLedger:
    """The ledger in one SQLite file (WAL, synchronous=FULL: a commit survives a crash)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_state_path()
        self._lock = threading.Lock()
        self._lockfile: Any = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a --state under a file, or where we may not write
            raise UsageError(f"cannot open the ledger {self.path}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot open the ledger {self.path}: {exc} "
                             "(is it an audiopipe ledger? see --state)") from None

    # -- the run lock: one run per ledger at a time -------------------------------------------------

    def acquire(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise LedgerLocked(f"another audiopipe run holds the ledger {self.path}"
                               + (f" ({holder})" if holder else "") + "; try again when it ends") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        self._lockfile = fh  # the kernel drops the lock if this process dies, however it dies

    def running(self) -> str | None:
        """Who holds the run lock (a run in progress), or None."""
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        if self._lockfile is not None or not lock_path.exists():
            return None
        with open(lock_path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                return fh.read().strip() or "another process"
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None

    def release(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    # -- rows ---------------------------------------------------------------------------------

    def _write(self, sql: str, args: tuple[Any, ...], event: tuple[Any, ...] | None = None) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(sql, args)
                    if event:
                        self._db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", event)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AudiopipeError(f"cannot write the ledger {self.path}: {exc}; the run stops so that "
                                     "nothing is sent unrecorded") from exc

    def recover(self) -> int:
        """Rows left "sending" by a run that died: their outcome is unknown. Returns how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "UPDATE sends SET state=?, error=?, updated_at=? WHERE state=?",
                (UNKNOWN, "the run stopped while this message was being sent; it may have been delivered",
                 time.time(), SENDING))
            self._db.execute("COMMIT")
            return cur.rowcount

    @staticmethod
    def _row(r: tuple[Any, ...]) -> LedgerRow:
        return LedgerRow(key=SendKey(r[0], r[1], r[2], r[3], r[4]), parts=r[5], file=r[6],
                         prepared_sha256=r[7], state=r[8], message_id=r[9], error=r[10], status=r[11],
                         attempts=r[12], updated_at=r[14])

    _COLS = ("campaign, workspace, contact, source_sha256, part, parts, file, prepared_sha256, state, "
             "message_id, error, status, attempts, created_at, updated_at")

    def get(self, key: SendKey) -> LedgerRow | None:
        with self._lock:
            r = self._db.execute(
                f"SELECT {self._COLS} FROM sends WHERE campaign=? AND workspace=? AND contact=? "
                "AND source_sha256=? AND part=?",
                (key.campaign, key.workspace, key.contact, key.source_sha256, key.part)).fetchone()
        return self._row(r) if r else None

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str) -> None:
        """Commit the intent to send, before the request goes out."""
        now = time.time()
        self._write(
            "INSERT INTO sends (campaign, workspace, contact, source_sha256, part, parts, file, "
            "prepared_sha256, state, attempts, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,1,?,?) "
            "ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE SET "
            "state=excluded.state, parts=excluded.parts, file=excluded.file, "
            "prepared_sha256=excluded.prepared_sha256, message_id=NULL, error=NULL, status=NULL, "
            "attempts=sends.attempts+1, updated_at=excluded.updated_at",
            (key.campaign, key.workspace, key.contact, key.source_sha256, key.part, parts, file,
             prepared_sha256, SENDING, now, now),
            (now, key.campaign, key.workspace, key.contact, key.source_sha256, key.part, SENDING, file))

    def finish(self, key: SendKey, state: str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None:
        """Commit the result of a send."""
        if state not in STATES or state == SENDING:
            raise ValueError(f"bad final state {state!r}")
        now = time.time()
        self._write(
            "UPDATE sends SET state=?, message_id=?, error=?, status=?, updated_at=? WHERE campaign=? "
            "AND workspace=? AND contact=? AND source_sha256=? AND part=?",
            (state, message_id, error, status, now, key.campaign, key.workspace, key.contact,
             key.source_sha256, key.part),
            (now, key.campaign, key.workspace, key.contact, key.source_sha256, key.part, state,
             json.dumps({"message_id": message_id, "error": error, "status": status})))

    def rows(self, campaign: str | None = None, states: tuple[str, ...] | None = None) -> list[LedgerRow]:
        sql = f"SELECT {self._COLS} FROM sends WHERE 1=1"
        args: list[Any] = []
        if campaign is not None:
            sql += " AND campaign=?"
            args.append(campaign)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        sql += " ORDER BY campaign, updated_at"
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql, args).fetchall()]

    def counts(self, campaign: str | None = None) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM sends"
        args: tuple[Any, ...] = ()
        if campaign is not None:
            sql += " WHERE campaign=?"
            args = (campaign,)
        with self._lock:
            found = dict(self._db.execute(sql + " GROUP BY state", args).fetchall())
        return {s: int(found.get(s, 0)) for s in STATES}

    def campaigns(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT campaign FROM sends ORDER BY 1")]

    def close(self) -> None:
        self.release()
        with self._lock:
            self._db.close()

    def __enter__(self) -> "SqliteLedger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())
