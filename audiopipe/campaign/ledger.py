"""The ledger: a durable record of every send, so a rerun never sends twice and never skips one.

One row per (campaign, workspace, contact, source content hash, part). Before its first send a
run records its whole plan, every send ``pending`` (one transaction), so a run stopped part-way
leaves a ledger that knows what is left. The intent ("sending") is committed before each request
goes out; the result when it comes back. A row still "sending" when a run starts belongs to a run
that died mid-request: nobody knows whether the message was created, so it becomes "unknown" and is
resent only when the user says so (``--retry-unknown``), or settled by a person who found out
(:meth:`SqliteLedger.resolve`, ``audiopipe resolve``), which is kept as an event with who and when.

The batch speaks to the :class:`Ledger` protocol only, so a shared database ledger can take the
place of :class:`SqliteLedger` without touching the batch.

**One ledger, whatever names it.** A ledger file can be reached by many paths: a symlink, a relative
path, ``..``, a hard link. The run lock is therefore an ``flock`` on the ledger file itself (its
inode), not on a file named after the path given, so every name of one ledger meets the same lock.
SQLite names its ``-wal`` file after the path it opened, so a hard link would give the same database
a second write-ahead log and hide the first one's commits: each ledger records the path it was
created at, and any other name of the same file opens that one.

SQLite locks with POSIX locks, which the kernel drops for the whole process as soon as *any*
descriptor on the file is closed. The descriptors this module opens on a ledger (for the flock and
to read its header) are therefore only closed once no connection of this process uses that file.

**A lost ledger must not resend a campaign.** A ledger is created whole (written beside, then linked
into place), so a file that is empty, not SQLite, or SQLite without our tables was never a ledger of
ours, and is refused rather than initialised over. Each ledger has a random id. The batch keeps a
small :class:`WorkMarker` beside its work (``.audiopipe-ledger`` in the batch folder) naming, for
each contacts file and campaign, the ledger that recorded those sends and how many records it held.
A batch whose ledger is missing, another one, or holds fewer records than that (an old backup put
back) is refused; ``--new-ledger`` starts afresh on purpose and records the new ledger.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from audiopipe import paths
from audiopipe.errors import AudiopipeError, UsageError
from audiopipe.files import fsync_dir, write_atomically

# States a row can be in.
PENDING = "pending"     # planned by a run, never attempted: the next run sends it
SENDING = "sending"     # intent written, result not yet: outcome unknown if found by a later run
SENT = "sent"
FAILED = "failed"       # refused for good (404/413/422...): retried only when what is sent changes
DEFERRED = "deferred"   # definitely not sent (429, connection failures): the next run tries again
UNKNOWN = "unknown"     # may have been created: never resent without --retry-unknown
STATES = (PENDING, SENDING, SENT, FAILED, DEFERRED, UNKNOWN)
# What an unknown row becomes when a person settles it (see resolve_unknown): the next run skips a
# delivered one and sends a not-delivered one.
RESOLVABLE = (UNKNOWN, SENDING)  # SENDING only while the resolver holds the run lock: a dead run's

SQLITE_MAGIC = b"SQLite format 3\x00"
# --new-ledger is the way out of every refusal below; each says what it costs
RESENDS = "only if that record is lost for good: everything it recorded is sent again"
NEW_LEDGER_HINT = f"add --new-ledger to start afresh on purpose ({RESENDS})"


def campaign_name(raw: str) -> str:
    """The campaign a name means: NFKC (fullwidth letters, a no-break space become the plain ones),
    spaces trimmed and runs of them made one, so names that look alike are one campaign and one
    "already sent". A name with invisible or control characters (a zero-width space, a tab...)
    would look like another and resend it: refused. Case is kept: see check_campaign_case."""
    name = " ".join(part for part in unicodedata.normalize("NFKC", raw).split(" ") if part)
    hidden = [c for c in name if unicodedata.category(c)[0] in "CZ" and c != " "]
    if hidden:
        raise UsageError(f"--campaign {raw!r} holds an invisible or control character "
                         f"(U+{ord(hidden[0]):04X}): it would look like another campaign; type the name again")
    if not name:
        raise UsageError("--campaign must not be empty")
    return name


def check_campaign_case(campaign: str, known: list[str]) -> None:
    """Refuse a campaign that differs from one already in the ledger only in case (or in what
    campaign_name normalises, for names recorded before it did): it looks the same in any report,
    and would send everything again. Keys stay case-sensitive, so ledgers keep what they recorded."""
    for other in known:
        if other != campaign and " ".join(unicodedata.normalize("NFKC", other).split()).casefold() == \
                campaign.casefold():
            raise UsageError(f"the ledger already has a campaign {other!r}, which differs from {campaign!r} only "
                             f"in case or spacing: it would be sent again; use --campaign {other!r}, or a "
                             "clearly different name for a new campaign")


class LedgerLocked(AudiopipeError):
    """Another run holds the ledger."""


class LedgerRefused(UsageError):
    """The ledger is missing, empty, not ours, or not the one that recorded this work before."""


class NotResolvable(UsageError):
    """Only a send whose outcome is unknown can be settled by hand."""


class LedgerIOError(AudiopipeError):
    """The ledger could not be read or written (disk full, read-only, I/O error...)."""


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
    work: str | None = None       # which folder and contacts file planned it (see WorkMarker.work_id)
    resolved: dict[str, Any] | None = None  # settled by a person: outcome, by, at, note


@dataclass(frozen=True)
class PlannedSend:
    """One send a batch means to make, recorded ``pending`` before the first request goes out."""

    key: SendKey
    parts: int
    file: str
    prepared_sha256: str


@dataclass(frozen=True)
class LedgerIdentity:
    """Which ledger this is: its random id, where it lives, and how many records it has written
    (a number that only grows, so an older copy of the same ledger shows as fewer)."""

    ledger_id: str
    path: str
    records: int
    tried: int | None = None  # sends of the campaign ever attempted (see SqliteLedger.tried)


class Ledger(Protocol):
    """What the batch needs from a ledger."""

    def acquire(self) -> None: ...
    def running(self) -> str | None: ...
    def release(self) -> None: ...
    def recover(self) -> int: ...
    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int: ...
    def get(self, key: SendKey) -> LedgerRow | None: ...
    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str) -> None: ...
    def finish(self, key: SendKey, state: str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None: ...
    def rows(self, campaign: str | None = None, states: tuple[str, ...] | None = None) -> list[LedgerRow]: ...
    def counts(self, campaign: str | None = None) -> dict[str, int]: ...
    def identity(self) -> LedgerIdentity | None: ...
    def close(self) -> None: ...


def default_state_path() -> Path:
    """The ledger used when none is named (see :func:`audiopipe.paths.default_ledger`)."""
    return paths.default_ledger()


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
    work TEXT,
    resolved TEXT,
    PRIMARY KEY (campaign, workspace, contact, source_sha256, part)
);
CREATE INDEX IF NOT EXISTS sends_state ON sends (campaign, state);
CREATE TABLE IF NOT EXISTS events (
    at REAL NOT NULL, campaign TEXT, workspace TEXT, contact TEXT, source_sha256 TEXT, part INTEGER,
    state TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added since the first ledgers: a writer adds them to an older ledger (see _upgrade); a
# reader reads them as NULL there, so `audiopipe status` never changes a ledger.
ADDED_COLUMNS = (("work", "TEXT"), ("resolved", "TEXT"))

# SQLite's primary result codes, in words a user can act on.
_SQLITE_REASONS = {
    13: "the disk is full",                                                   # SQLITE_FULL
    8: "it is read-only (the file, its folder or the file system)",           # SQLITE_READONLY
    10: "an I/O error (a failing, full or removed disk?)",                    # SQLITE_IOERR
    14: "it or its -wal/-shm files cannot be opened (permissions, or a read-only folder?)",  # CANTOPEN
    5: "another program kept it locked for 30 s",                             # SQLITE_BUSY
    6: "another program kept it locked for 30 s",                             # SQLITE_LOCKED
    11: "it is damaged (not a valid SQLite database)",                        # SQLITE_CORRUPT
    26: "it is not a SQLite database",                                        # SQLITE_NOTADB
    23: "permission denied",                                                  # SQLITE_AUTH
    3: "permission denied",                                                   # SQLITE_PERM
}


def sqlite_reason(exc: sqlite3.Error) -> str:
    """What went wrong, in words, rather than SQLite's (a failed COMMIT on a full disk otherwise
    surfaces as "cannot rollback - no transaction is active")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _SQLITE_REASONS:
        return _SQLITE_REASONS[code & 0xFF]
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return _SQLITE_REASONS[26]
    return str(exc) or type(exc).__name__


class _OpenLedgerFiles:
    """The descriptors this process holds on ledger files, by inode.

    Closing any descriptor on a file drops every POSIX lock this process holds on it, SQLite's
    included (another process could then think it is the last user and remove the -wal file under
    us). So a descriptor of ours is parked until the last :class:`SqliteLedger` on that inode has
    closed its connection, and only then closed. The path the ledger is opened by (see
    ``_open_name``) is remembered here too, so that every SqliteLedger of this process uses one.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._users: dict[tuple[int, int], int] = {}
        self._parked: dict[tuple[int, int], list[int]] = {}
        self.names: dict[tuple[int, int], str] = {}

    def enter(self, inode: tuple[int, int]) -> bool:
        """Count one more user; True when it is the first."""
        with self.lock:
            self._users[inode] = self._users.get(inode, 0) + 1
            return self._users[inode] == 1

    def leave(self, inode: tuple[int, int], fd: int) -> None:
        with self.lock:
            self._parked.setdefault(inode, []).append(fd)
            self._users[inode] -= 1
            if self._users[inode]:
                return
            del self._users[inode]
            self.names.pop(inode, None)
            for parked in self._parked.pop(inode):
                os.close(parked)


_FILES = _OpenLedgerFiles()


def _inode(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


class SqliteLedger:
    """The ledger in one SQLite file (WAL, synchronous=FULL: a commit survives a crash).

    ``create``: make the ledger if the file does not exist (``False`` for readers such as
    ``audiopipe status``, which also never add an id to an old ledger). ``allow_empty``: a 0-byte
    file is made a new ledger instead of being refused (``--new-ledger``: it holds nothing to lose).
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True,
                 allow_empty: bool = False) -> None:
        self.path = Path(path) if path else default_state_path()
        self._lock = threading.Lock()
        self._holding = False
        self._legacy_lock: Any = None
        self.ledger_id: str | None = None
        real = Path(os.path.realpath(self.path))
        if not real.exists():
            if not create:
                raise LedgerRefused(f"no ledger at {self.path}")
            self._create(real)
        self._fd = self._open_fd(real)
        st = os.fstat(self._fd)
        self._inode = _inode(st)
        first = _FILES.enter(self._inode)
        try:
            self._check_file(st, allow_empty)
            self.real_path = Path(self._open_name(real, st, first))
            self._db = self._connect(allow_empty, create)
        except BaseException:
            _FILES.leave(self._inode, self._fd)
            raise

    # -- opening ----------------------------------------------------------------------------------

    def _fail_open(self, reason: str) -> LedgerRefused:
        return LedgerRefused(f"cannot open the ledger {self.path}: {reason}")

    def _create(self, real: Path) -> None:
        """Write a whole new ledger beside ``real`` and link it into place: the path never holds a
        half-made ledger, and a ledger made meanwhile by another run is kept, not replaced."""
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a --state under a file, or where we may not write
            raise self._fail_open(exc.strerror or str(exc)) from None
        tmp = real.with_name(f".{real.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            db = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                db.execute("PRAGMA synchronous=FULL")
                db.executescript("BEGIN;" + SCHEMA)
                self._write_meta(db, real)
                db.execute("COMMIT")
            finally:
                db.close()
            try:
                os.link(tmp, real)
            except FileExistsError:
                return  # another run made it first: use theirs
            except OSError:  # a file system without hard links: copy into a file only we created
                self._copy_exclusive(tmp, real)
            fsync_dir(real.parent)
        except sqlite3.Error as exc:
            raise self._fail_open(sqlite_reason(exc)) from None
        except OSError as exc:
            raise self._fail_open(exc.strerror or str(exc)) from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    @staticmethod
    def _copy_exclusive(src: Path, dest: Path) -> None:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "wb") as out:
            out.write(src.read_bytes())
            out.flush()
            os.fsync(out.fileno())

    @staticmethod
    def _write_meta(db: sqlite3.Connection, real: Path) -> None:
        for k, v in (("ledger_id", uuid.uuid4().hex), ("created_at", repr(time.time())),
                     ("created_path", str(real))):
            db.execute("INSERT OR IGNORE INTO ledger_meta VALUES (?, ?)", (k, v))

    def _open_fd(self, real: Path) -> int:
        try:
            # O_NONBLOCK: a FIFO named as the ledger is refused below instead of hanging the run here
            return os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise self._fail_open(exc.strerror or str(exc)) from None

    def _check_file(self, st: os.stat_result, allow_empty: bool) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise self._fail_open("it is not a regular file")
        if st.st_size == 0:
            if allow_empty:
                return
            raise LedgerRefused(f"the ledger {self.path} is empty (0 bytes): whatever it recorded is lost, "
                                "so a batch would send everything again; put back a copy of it, "
                                f"or add --new-ledger to start afresh in this file on purpose ({RESENDS})")
        try:
            head = os.pread(self._fd, len(SQLITE_MAGIC), 0)
        except OSError as exc:
            raise self._fail_open(exc.strerror or str(exc)) from None
        if head != SQLITE_MAGIC:
            raise self._fail_open("it is not an audiopipe ledger (not a SQLite database), and it is "
                                  "left as it is; give --state another path")

    def _open_name(self, real: Path, st: os.stat_result, first: bool) -> str:
        """The path to open: the one the ledger was created at when ``real`` is another hard link
        to the same file, so there is one -wal file, never two."""
        with _FILES.lock:
            if not first and self._inode in _FILES.names:
                return _FILES.names[self._inode]
            name = str(real)
            if st.st_nlink > 1 and st.st_size > 0:
                created = self._created_path(real)
                try:
                    if created and _inode(os.stat(created)) == self._inode:
                        name = created
                except OSError:
                    pass
            _FILES.names[self._inode] = name
            return name

    @staticmethod
    def _created_path(real: Path) -> str | None:
        # immutable: reads the main file only, takes no lock and opens no -wal. The id and the
        # created path are written when the ledger is made, before it is ever in WAL mode.
        try:
            db = sqlite3.connect(f"file:{quote(str(real))}?immutable=1", uri=True)
            try:
                row = db.execute("SELECT value FROM ledger_meta WHERE key='created_path'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def _connect(self, allow_empty: bool, create: bool) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(self.real_path), timeout=30, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fail_open(sqlite_reason(exc)) from None
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "sends" not in tables and not (allow_empty and not tables):
                raise self._not_ours(tables)
            if create and not {"sends", "events", "ledger_meta"} <= tables:
                # a new ledger in an empty file (--new-ledger), or one from before ledgers had ids
                db.executescript("BEGIN IMMEDIATE;" + SCHEMA)
                self._write_meta(db, self.real_path)
                db.execute("COMMIT")
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the id into the main file (see _created_path)
                tables |= {"sends", "events", "ledger_meta"}
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._columns = self._sends_columns(db)
            if "ledger_meta" in tables:
                row = db.execute("SELECT value FROM ledger_meta WHERE key='ledger_id'").fetchone()
                self.ledger_id = row[0] if row else None
        except sqlite3.Error as exc:
            db.close()
            raise self._fail_open(sqlite_reason(exc)) from None
        except BaseException:
            db.close()
            raise
        return db

    def _not_ours(self, tables: set[str]) -> LedgerRefused:
        if not tables:
            return LedgerRefused(f"the ledger {self.path} is an empty SQLite database with nothing recorded "
                                 "in it; put back the ledger that was there, or add --new-ledger to start "
                                 f"afresh in this file on purpose ({RESENDS})")
        shown = ", ".join(sorted(tables)[:5])
        return self._fail_open(f"it is a SQLite database of something else (tables {shown}), not an "
                               "audiopipe ledger, and it is left as it is; give --state another path")

    # -- the run lock: one run per ledger file at a time ---------------------------------------------

    def acquire(self) -> None:
        """Take the run lock (an flock on the ledger file itself) and note who holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(self._holder()) from None
        try:
            self._lock_legacy()
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('holder', ?)",
                                 (f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}",))
        except BaseException:
            self._unlock()
            raise
        self._holding = True  # the kernel drops the flock if this process dies, however it dies

    def _lock_legacy(self) -> None:
        """Audiopipe before 0.x locked ``<ledger>.lock`` instead; while such a run may still be going
        (an upgrade during a long batch), hold that lock too. No new .lock file is made."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fh = open(lock_path, "r+")
        except OSError:
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read().strip()
            fh.close()
            raise self._locked(holder) from None
        self._legacy_lock = fh

    def _locked(self, holder: str | None) -> LedgerLocked:
        return LedgerLocked(f"another audiopipe run holds the ledger {self.path}"
                            + (f" ({holder})" if holder else "") + "; try again when it ends")

    def _holder(self) -> str | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM ledger_meta WHERE key='holder'").fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def running(self) -> str | None:
        """Who holds the run lock (a run in progress), or None."""
        if self._holding:
            return None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._holder() or "another process"
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return None

    def _unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # not close(): see _OpenLedgerFiles
        if self._legacy_lock is not None:
            self._legacy_lock.close()
            self._legacy_lock = None

    def release(self) -> None:
        if self._holding:
            self._unlock()
            self._holding = False

    # -- identity -------------------------------------------------------------------------------

    def identity(self) -> LedgerIdentity | None:
        if self.ledger_id is None:
            return None
        return LedgerIdentity(self.ledger_id, str(self.real_path), self.records())

    def tried(self, campaign: str) -> int:
        """How many sends of ``campaign`` were ever attempted. A row once attempted is never removed
        (a plan only replaces pending rows), so fewer than before means rows were deleted by hand,
        and their contacts would be sent to again."""
        return int(self._fetch("SELECT COUNT(*) FROM sends WHERE campaign=? AND attempts>0", [campaign])[0][0])

    def records(self) -> int:
        """How many records this ledger has ever written (events are only ever added)."""
        return int(self._fetch("SELECT COALESCE(MAX(rowid), 0) FROM events")[0][0])

    # -- columns: older ledgers lack the newer ones ----------------------------------------------

    @staticmethod
    def _sends_columns(db: sqlite3.Connection) -> set[str]:
        return {r[1] for r in db.execute("PRAGMA table_info(sends)")}

    def _upgrade(self) -> None:
        """Add the newer columns, inside a write transaction (another process may have just done it)."""
        missing = [(n, t) for n, t in ADDED_COLUMNS if n not in self._columns]
        if not missing:
            return
        self._columns = self._sends_columns(self._db)
        for name, kind in missing:
            if name not in self._columns:
                self._db.execute(f"ALTER TABLE sends ADD COLUMN {name} {kind}")
        self._columns = self._sends_columns(self._db)

    def _cols(self) -> str:
        """The columns _row reads, NULL for those an older ledger does not have yet."""
        return ", ".join(c if c in self._columns else f"NULL AS {c}" for c in self._COLUMNS)

    # -- rows ---------------------------------------------------------------------------------

    def _io_error(self, doing: str, exc: sqlite3.Error) -> LedgerIOError:
        return LedgerIOError(f"cannot {doing} the ledger {self.path}: {sqlite_reason(exc)}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction. A failure of any part (a full disk often fails the COMMIT itself,
        and SQLite may already have rolled back) is one LedgerIOError saying what happened."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._upgrade()
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        try:
                            self._db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass  # the error that matters is the one being raised
                    raise
            except sqlite3.Error as exc:
                raise self._io_error("write", exc) from None

    def _fetch(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._io_error("read", exc) from None

    def _write(self, sql: str, args: tuple[Any, ...], event: tuple[Any, ...] | None = None) -> None:
        with self._transaction():
            self._db.execute(sql, args)
            if event:
                self._db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", event)

    def recover(self) -> int:
        """Rows left "sending" by a run that died: their outcome is unknown. Returns how many."""
        with self._transaction():
            cur = self._db.execute(
                "UPDATE sends SET state=?, error=?, updated_at=? WHERE state=?",
                (UNKNOWN, "the run stopped while this message was being sent; it may have been delivered",
                 time.time(), SENDING))
            return cur.rowcount

    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int:
        """Record the whole plan of a run as ``pending`` rows, in one transaction, before its first
        send: a run stopped part-way leaves the ledger knowing what is left. Rows that already exist
        keep their state (a sent row stays sent). The plan replaces this work's earlier one: pending
        rows it no longer holds (a file removed or changed, a contact taken off the list) are
        dropped; they were never attempted, so nothing is lost. Returns how many sends are pending."""
        now = time.time()
        campaigns = {s.key.campaign for s in sends} | ({campaign} if campaign is not None else set())
        with self._transaction():
            # a pending row of this plan is stamped `now`; one that is not is from an older plan
            self._db.executemany(
                "INSERT INTO sends (campaign, workspace, contact, source_sha256, part, parts, file, "
                "prepared_sha256, state, attempts, created_at, updated_at, work) "
                "VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?) "
                "ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE SET "
                "parts=excluded.parts, file=excluded.file, prepared_sha256=excluded.prepared_sha256, "
                "updated_at=excluded.updated_at, work=excluded.work WHERE sends.state=?",
                # in key order: the primary-key B-tree is then filled left to right, not at random
                sorted((s.key.campaign, s.key.workspace, s.key.contact, s.key.source_sha256, s.key.part, s.parts,
                        s.file, s.prepared_sha256, PENDING, now, now, work, PENDING) for s in sends))
            dropped = sum(self._db.execute(
                "DELETE FROM sends WHERE work=? AND campaign=? AND state=? AND updated_at<>?",
                (work, c, PENDING, now)).rowcount for c in sorted(campaigns))
            pending = sum(self._db.execute(
                "SELECT COUNT(*) FROM sends WHERE work=? AND campaign=? AND state=?",
                (work, c, PENDING)).fetchone()[0] for c in sorted(campaigns))
            if pending or dropped:  # a run that finds everything sent already leaves no trace
                self._db.execute(
                    "INSERT INTO events (at, campaign, state, detail) VALUES (?,?,?,?)",
                    (now, ",".join(sorted(campaigns)), "planned",
                     json.dumps(dict(detail or {}, work=work, sends=len(sends), pending=pending,
                                     dropped=dropped))))
        return int(pending)

    def resolve(self, keys: list[SendKey], *, delivered: bool, by: str, message_id: str | None = None,
                note: str | None = None) -> list[LedgerRow]:
        """Settle sends whose outcome is unknown, as a person found out: ``delivered`` ones become
        sent (the next run skips them), the others deferred (the next run sends them). All or
        none, each with an event saying who and when. Returns the rows as they were.

        Call it holding the run lock (see :func:`audiopipe.campaign.resolve.resolve_unknown`): a row still
        ``sending`` is then a dead run's, as unknown as an ``unknown`` one."""
        now = time.time()
        mark = {"outcome": "delivered" if delivered else "not delivered", "by": by, "at": now,
                "note": note, "message_id": message_id if delivered else None}
        before: list[LedgerRow] = []
        with self._transaction():
            for key in keys:
                where = ("campaign=? AND workspace=? AND contact=? AND source_sha256=? AND part=?",
                         (key.campaign, key.workspace, key.contact, key.source_sha256, key.part))
                found = self._db.execute(f"SELECT {self._cols()} FROM sends WHERE {where[0]}", where[1]).fetchone()
                if found is None or found[8] not in RESOLVABLE:
                    raise NotResolvable(f"the send of part {key.part} to {key.contact} is "
                                        f"{found[8] if found else 'not in the ledger'}, not unknown")
                row = self._row(found)
                before.append(row)
                if delivered:
                    state, error = SENT, None
                else:
                    state, error = DEFERRED, (f"marked not delivered by {by} on {_when(now)}: "
                                              "the next run sends it")
                self._db.execute(
                    f"UPDATE sends SET state=?, message_id=?, error=?, status=NULL, resolved=?, updated_at=? "
                    f"WHERE {where[0]}", (state, mark["message_id"], error, json.dumps(mark), now, *where[1]))
                self._db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
                                 (now, key.campaign, key.workspace, key.contact, key.source_sha256, key.part,
                                  "resolved", json.dumps(dict(mark, was=row.state, error=row.error,
                                                              status=row.status, state=state))))
        return before

    def _row(self, r: tuple[Any, ...]) -> LedgerRow:
        return LedgerRow(key=SendKey(r[0], r[1], r[2], r[3], r[4]), parts=r[5], file=r[6],
                         prepared_sha256=r[7], state=r[8], message_id=r[9], error=r[10], status=r[11],
                         attempts=r[12], updated_at=r[14], work=r[15], resolved=_mark(r[16]))

    _COLUMNS = ("campaign", "workspace", "contact", "source_sha256", "part", "parts", "file", "prepared_sha256",
                "state", "message_id", "error", "status", "attempts", "created_at", "updated_at", "work",
                "resolved")

    def get(self, key: SendKey) -> LedgerRow | None:
        found = self._fetch(
            f"SELECT {self._cols()} FROM sends WHERE campaign=? AND workspace=? AND contact=? "
            "AND source_sha256=? AND part=?",
            (key.campaign, key.workspace, key.contact, key.source_sha256, key.part))
        return self._row(found[0]) if found else None

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str) -> None:
        """Commit the intent to send, before the request goes out."""
        now = time.time()
        self._write(
            "INSERT INTO sends (campaign, workspace, contact, source_sha256, part, parts, file, "
            "prepared_sha256, state, attempts, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,1,?,?) "
            "ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE SET "
            "state=excluded.state, parts=excluded.parts, file=excluded.file, "
            "prepared_sha256=excluded.prepared_sha256, message_id=NULL, error=NULL, status=NULL, "
            "resolved=NULL, attempts=sends.attempts+1, updated_at=excluded.updated_at",
            (key.campaign, key.workspace, key.contact, key.source_sha256, key.part, parts, file,
             prepared_sha256, SENDING, now, now),
            (now, key.campaign, key.workspace, key.contact, key.source_sha256, key.part, SENDING, file))

    def finish(self, key: SendKey, state: str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None:
        """Commit the result of a send."""
        if state not in STATES or state in (SENDING, PENDING):
            raise ValueError(f"bad final state {state!r}")
        now = time.time()
        self._write(
            "UPDATE sends SET state=?, message_id=?, error=?, status=?, updated_at=? WHERE campaign=? "
            "AND workspace=? AND contact=? AND source_sha256=? AND part=?",
            (state, message_id, error, status, now, key.campaign, key.workspace, key.contact,
             key.source_sha256, key.part),
            (now, key.campaign, key.workspace, key.contact, key.source_sha256, key.part, state,
             json.dumps({"message_id": message_id, "error": error, "status": status})))

    def rows(self, campaign: str | None = None, states: tuple[str, ...] | None = None, *,
             workspace: str | None = None, contact: str | None = None, file: str | None = None,
             part: int | None = None, limit: int | None = None) -> list[LedgerRow]:
        sql = f"SELECT {self._cols()} FROM sends WHERE 1=1"
        args: list[Any] = []
        for column, value in (("campaign", campaign), ("workspace", workspace), ("contact", contact),
                              ("file", file), ("part", part)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        sql += " ORDER BY campaign, updated_at, contact, part"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self._fetch(sql, args)]

    def counts(self, campaign: str | None = None) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM sends"
        args: tuple[Any, ...] = ()
        if campaign is not None:
            sql += " WHERE campaign=?"
            args = (campaign,)
        found = dict(self._fetch(sql + " GROUP BY state", args))
        return {s: int(found.get(s, 0)) for s in STATES}

    def campaigns(self) -> list[str]:
        return [r[0] for r in self._fetch("SELECT DISTINCT campaign FROM sends ORDER BY 1")]

    # -- what is left: counts per campaign, and the parts held back behind another -----------------

    def _blocked_sql(self, campaign: str | None, running: bool) -> tuple[str, list[Any]]:
        """Pending or deferred parts of a split recording that wait behind an earlier part which no
        run will send on its own: unknown, refused, or left mid-request by a dead run. (Behind a
        deferred part they are not blocked: the next run sends it, then them.)"""
        blockers = (UNKNOWN, FAILED) if running else (UNKNOWN, FAILED, SENDING)
        where_c = " AND campaign=?" if campaign is not None else ""
        sql = (f"WITH first_stuck AS (SELECT campaign, workspace, contact, source_sha256, MIN(part) AS part "
               f"FROM sends WHERE parts>1 AND state IN ({','.join('?' * len(blockers))}){where_c} "
               "GROUP BY campaign, workspace, contact, source_sha256) "
               "SELECT s.rowid AS id, b.part AS by_part, (SELECT x.state FROM sends x WHERE "
               "x.campaign=b.campaign AND x.workspace=b.workspace AND x.contact=b.contact AND "
               "x.source_sha256=b.source_sha256 AND x.part=b.part) AS by_state "
               "FROM sends s JOIN first_stuck b ON s.campaign=b.campaign AND s.workspace=b.workspace "
               "AND s.contact=b.contact AND s.source_sha256=b.source_sha256 "
               "WHERE s.part>b.part AND s.state IN (?,?)")
        return sql, [*blockers, *([campaign] if campaign is not None else []), PENDING, DEFERRED]

    def tally(self, campaign: str | None = None, *, running: bool = False) -> dict[str, dict[str, int]]:
        """Per campaign: how many sends are in each state, with ``blocked`` (see _blocked_sql) taken
        out of pending and deferred, and how many were ``resolved`` by hand (of any state)."""
        where, args = ("WHERE campaign=?", [campaign]) if campaign is not None else ("", [])
        out: dict[str, dict[str, int]] = {}
        for c, state, n, resolved in self._fetch(
                f"SELECT campaign, state, COUNT(*), {self._count_resolved()} FROM sends {where} "
                "GROUP BY campaign, state", args):
            counts = out.setdefault(c, {**dict.fromkeys(STATES, 0), "blocked": 0, "resolved": 0})
            counts[state] = counts.get(state, 0) + int(n)
            counts["resolved"] += int(resolved or 0)
        sql, bargs = self._blocked_sql(campaign, running)
        for c, state, n in self._fetch(
                f"SELECT s.campaign, s.state, COUNT(*) FROM sends s WHERE s.rowid IN "
                f"(SELECT id FROM ({sql})) GROUP BY s.campaign, s.state", bargs):
            out[c][state] -= int(n)
            out[c]["blocked"] += int(n)
        return out

    def _count_resolved(self) -> str:
        return "SUM(resolved IS NOT NULL)" if "resolved" in self._columns else "0"

    def blocked(self, campaign: str | None = None, *, running: bool = False,
                limit: int | None = None) -> list[tuple[LedgerRow, int, str]]:
        """The blocked parts (see _blocked_sql): each row, the part it waits behind and that part's state."""
        sql, args = self._blocked_sql(campaign, running)
        cols = ", ".join(f"s.{c}" if c in self._columns else f"NULL AS {c}" for c in self._COLUMNS)
        query = (f"SELECT {cols}, b.by_part, b.by_state FROM sends s JOIN ({sql}) b ON s.rowid=b.id "
                 "ORDER BY s.campaign, s.contact, s.file, s.part")
        if limit is not None:
            query += " LIMIT ?"
            args = [*args, limit]
        return [(self._row(r[:len(self._COLUMNS)]), int(r[-2]), r[-1]) for r in self._fetch(query, args)]

    def pending_sources(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Where the pending rows come from: per campaign and work, how many, and the folder and
        contacts file of the plan that recorded them (so the user knows which batch to run again)."""
        if "work" not in self._columns:
            return []
        where, args = (" AND campaign=?", [campaign]) if campaign is not None else ("", [])
        found = self._fetch(f"SELECT campaign, work, COUNT(*) FROM sends WHERE state=?{where} "
                            "GROUP BY campaign, work ORDER BY campaign", [PENDING, *args])
        plans: dict[str, dict[str, Any]] = {}
        wanted = {work for _, work, _ in found}
        for at, detail in self._fetch("SELECT at, detail FROM events WHERE state='planned' ORDER BY rowid DESC"):
            if not wanted - set(plans):
                break  # the newest plan of each work is found; older ones do not matter
            plan = _mark(detail) or {}
            if plan.get("work") in wanted and plan["work"] not in plans:
                plans[plan["work"]] = dict(plan, at=at)
        return [{"campaign": c, "work": work, "pending": int(n), "folder": plans.get(work, {}).get("folder"),
                 "contacts": plans.get(work, {}).get("contacts"), "planned_at": plans.get(work, {}).get("at")}
                for c, work, n in found]

    def resolutions(self, campaign: str | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows a person settled, and that no run has touched since, newest first."""
        if "resolved" not in self._columns:
            return []
        sql = f"SELECT {self._cols()} FROM sends WHERE resolved IS NOT NULL"
        args: list[Any] = []
        if campaign is not None:
            sql += " AND campaign=?"
            args.append(campaign)
        sql += " ORDER BY updated_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self._fetch(sql, args)]

    def close(self) -> None:
        if self._fd < 0:
            return
        self.release()
        with self._lock:
            self._db.close()
        _FILES.leave(self._inode, self._fd)
        self._fd = -1

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())


def _mark(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return {"outcome": str(text)}
    return found if isinstance(found, dict) else {"outcome": str(found)}


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))




# -- which ledger recorded a batch's work ------------------------------------------------------------

MARKER_NAME = ".audiopipe-ledger"


@dataclass(frozen=True)
class MarkerEntry:
    contacts: str
    campaign: str
    ledger_id: str
    ledger: str
    records: int
    updated: float
    tried: int = 0  # sends of the campaign attempted, after the last run (0 in notes from before)


def _ledger_id_at(path: Path) -> str | None:
    """The id of the ledger at ``path``, read without a lock or a -wal (the id is in the main file
    from the start), or None when there is no readable ledger there."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return None
        db = sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True)
        try:
            row = db.execute("SELECT value FROM ledger_meta WHERE key='ledger_id'").fetchone()
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return None
    return row[0] if row else None




class WorkMarker:
    """Which ledger recorded the sends of one batch's work.

    The work is (folder, contacts file, campaign): "already sent" is scoped by campaign, and the same
    folder may go to other contact lists with ledgers of their own. The note lives beside the work,
    in ``.audiopipe-ledger`` in the batch folder, so it survives whatever happens to the ledger's own
    folder; when the batch folder cannot be written it lives in
    ``$XDG_DATA_HOME/audiopipe/folders/<hash of the folder's path>.json`` instead (the caller is told
    once). Both are read; the newest entry counts. It is written before anything is sent, and again
    after, with the number of records the ledger then holds.
    """

    def __init__(self, folder: str | Path, contacts: str | Path, campaign: str, *,
                 data_home: Path | None = None) -> None:
        self.folder = Path(os.path.realpath(folder))
        self.contacts = os.path.realpath(contacts)
        self.campaign = campaign
        self.in_folder = self.folder / MARKER_NAME
        digest = hashlib.sha256(os.fsencode(self.folder)).hexdigest()[:32]
        app_data = data_home / paths.APP if data_home else paths.data_dir()
        self.fallback = app_data / "folders" / f"{digest}.json" if app_data else None

    @property
    def label(self) -> str:
        return f"{self.folder} with {Path(self.contacts).name}, campaign {self.campaign!r}"

    @property
    def work_id(self) -> str:
        """Names this folder and contacts file in the ledger, so that a run's plan replaces the
        pending rows of this work's earlier plan and no other's (see SqliteLedger.plan)."""
        both = os.fsencode(self.folder) + b"\0" + os.fsencode(self.contacts)
        return hashlib.sha256(both).hexdigest()[:16]

    # -- reading ----------------------------------------------------------------------------------

    def _load(self, path: Path | None, *, tolerant: bool) -> list[MarkerEntry]:
        if path is None:
            return []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            if tolerant:
                return []
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise LedgerRefused(f"cannot read {path} ({reason}), which says which ledger recorded earlier "
                                f"sends of this folder; make it readable, or {NEW_LEDGER_HINT}") from None
        try:
            known = MarkerEntry.__dataclass_fields__
            return [MarkerEntry(**{k: v for k, v in e.items() if k in known}) for e in json.loads(text)["work"]]
        except (ValueError, KeyError, TypeError):
            if tolerant:
                return []
            raise LedgerRefused(f"{path} is damaged, so it is unknown which ledger recorded earlier sends of "
                                f"this folder; {NEW_LEDGER_HINT} (it rewrites that file)") from None

    def _mine(self, entries: list[MarkerEntry]) -> MarkerEntry | None:
        for e in entries:
            if e.contacts == self.contacts and e.campaign == self.campaign:
                return e
        return None

    def expected(self, *, tolerant: bool = False) -> MarkerEntry | None:
        """The ledger that last recorded this work, or None for work never sent with a marker.

        Work of this campaign from this folder with another contacts file counts too, when this
        one has none: a renamed copy of the contacts file must meet the same ledger, or it would
        send everything again."""
        entries = [e for p in (self.in_folder, self.fallback) for e in self._load(p, tolerant=tolerant)]
        for matches in (self._is_mine, lambda e: e.campaign == self.campaign):
            found = [e for e in entries if matches(e)]
            if found:
                return max(found, key=lambda e: e.updated)
        return None

    def _is_mine(self, e: MarkerEntry) -> bool:
        return e.contacts == self.contacts and e.campaign == self.campaign

    def _about(self, expected: MarkerEntry) -> str:
        """The work the entry is about: this one, or this folder's campaign with another contacts file."""
        if expected.contacts == self.contacts:
            return self.label
        return f"{self.folder} with {Path(expected.contacts).name} (not {Path(self.contacts).name}), campaign " \
               f"{self.campaign!r}"

    # -- checking ---------------------------------------------------------------------------------

    def check(self, ledger_path: str | Path, identity: LedgerIdentity | None,
              expected: MarkerEntry | None) -> None:
        """Refuse a ledger that is not the one that recorded this work, or an older copy of it."""
        if expected is None or identity is None:
            return
        was = f"{expected.ledger} (id {expected.ledger_id[:8]})"
        if identity.ledger_id != expected.ledger_id:
            raise LedgerRefused(
                f"the ledger {ledger_path} (id {identity.ledger_id[:8]}) is not the one that recorded earlier "
                f"sends of {self._about(expected)}, {was}: they would all be sent again; point --state at that "
                f"ledger, {self._or_new_ledger(expected)}")
        if identity.records < expected.records:
            raise LedgerRefused(
                f"the ledger {ledger_path} holds {identity.records} records but held {expected.records} after "
                f"the last run of {self._about(expected)}: it looks like an older copy, and what it lost would be sent "
                f"again; put back the newer copy, or {NEW_LEDGER_HINT}")
        if identity.tried is not None and identity.tried < expected.tried:
            raise LedgerRefused(
                f"the ledger {ledger_path} holds {identity.tried} attempted sends of campaign "
                f"{self.campaign!r} but held {expected.tried} after the last run of {self._about(expected)}: sends "
                f"were deleted from it, and they would be sent again; put back a whole copy, or {NEW_LEDGER_HINT}")

    def missing(self, ledger_path: str | Path, expected: MarkerEntry) -> LedgerRefused:
        return LedgerRefused(
            f"the ledger {ledger_path} does not exist, but {expected.ledger} (id {expected.ledger_id[:8]}) "
            f"recorded earlier sends of {self._about(expected)}: without it they would all be sent again; put that "
            f"ledger back or point --state at it, {self._or_new_ledger(expected)}")

    @staticmethod
    def _or_new_ledger(expected: MarkerEntry) -> str:
        """The way on besides the recorded ledger: --new-ledger only once that ledger is really gone."""
        if _ledger_id_at(Path(expected.ledger)) == expected.ledger_id:
            return ("which still exists (--new-ledger, which would send again everything it recorded, is "
                    "refused while it does)")
        return f"or {NEW_LEDGER_HINT}"

    def refuse_fresh_start_beside(self, real: Path, expected: MarkerEntry) -> None:
        """``--new-ledger`` is for a ledger that is lost. While the one that recorded this work is still
        where the marker says, whole, a fresh one beside it would send again all it recorded."""
        try:
            if os.path.samefile(expected.ledger, real):
                return
        except OSError:
            pass
        if _ledger_id_at(Path(expected.ledger)) != expected.ledger_id:
            return  # gone, emptied or replaced: starting afresh is what --new-ledger is for
        raise LedgerRefused(
            f"the ledger {expected.ledger} (id {expected.ledger_id[:8]}) that recorded earlier sends of "
            f"{self._about(expected)} still exists, and --new-ledger would send again everything it recorded; point "
            f"--state at it (to start afresh anyway, move that ledger away first)")

    # -- writing ----------------------------------------------------------------------------------

    def record(self, identity: LedgerIdentity) -> str | None:
        """Note that ``identity`` records this work. Returns a line for the user when the note had to
        go elsewhere than the batch folder (the first time only), or could not be kept at all."""
        entry = MarkerEntry(self.contacts, self.campaign, identity.ledger_id, identity.path,
                            identity.records, time.time(), identity.tried or 0)
        try:
            self._store(self.in_folder, entry)
            return None
        except OSError as exc:
            here = exc.strerror or str(exc)
        try:
            if self.fallback is None:
                raise OSError(0, "no home folder")
            before = self._mine(self._load(self.fallback, tolerant=True))
            self._store(self.fallback, entry)
        except OSError as exc:
            return (f"cannot note which ledger sends {self.folder} ({self.in_folder}: {here}; "
                    f"{self.fallback or '$XDG_DATA_HOME'}: {exc.strerror or exc}): if this ledger is lost, "
                    "a later run cannot tell")
        if before is None or before.ledger_id != entry.ledger_id:
            return (f"cannot write {self.in_folder} ({here}): the note of which ledger sends this folder is "
                    f"kept in {self.fallback} instead")
        return None

    def _store(self, path: Path, entry: MarkerEntry) -> None:
        entries = self._load(path, tolerant=True)
        old = self._mine(entries)
        if old is not None and (old.ledger_id, old.ledger, old.records, old.tried) == (
                entry.ledger_id, entry.ledger, entry.records, entry.tried):
            return  # unchanged: leave the folder (and its mtime) alone
        entries = [e for e in entries if e is not old] + [entry]
        body = json.dumps({"about": "which audiopipe ledger recorded the sends of this folder, per contacts "
                                    "file and campaign (see the README, 'Batch'); remove it only with "
                                    "the ledger", "work": [e.__dict__ for e in entries]}, indent=1)
        write_atomically(path, body + "\n", durable=True)


WORK_LOCK_NAME = ".audiopipe-ledger.lock"


class WorkLock:
    """One sending run per batch folder at a time, whatever ledger it names.

    The ledger's own lock only stops two runs on one ledger file; two runs on the same work with
    two ledgers (``--new-ledger``, a byte copy of the ledger) would each send everything. So a run
    first takes an ``flock`` on ``.audiopipe-ledger.lock`` in the batch folder (by folder, not by
    contacts file or campaign: another name for the contact list must meet the same lock), or, when
    the folder cannot be written, on a file named after the folder's real path in the data home.
    The file is left in place: removing a locked file would let a third run lock a new one.
    """

    def __init__(self, marker: WorkMarker) -> None:
        self.folder = marker.folder
        self.paths = [marker.folder / WORK_LOCK_NAME]
        if marker.fallback is not None:
            self.paths.append(marker.fallback.parent.parent / "locks" / marker.fallback.with_suffix(".lock").name)
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Lock the first place that can be written (a folder is writable for every run or none)."""
        try:
            for path in self.paths:
                fd = self._open(path)
                if fd is None:
                    continue
                self._fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                    raise LedgerLocked(f"another audiopipe run is sending {self.folder}"
                                       + (f" ({holder})" if holder else "")
                                       + "; try again when it ends (whatever ledger each names, "
                                       "one run at a time sends a folder)") from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
                return
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _open(path: Path) -> int | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError:
            return None  # a read-only folder: the other place locks

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing drops the flock; a dead process's is dropped by the kernel
        self._fds = []


def open_batch_ledger(path: str | Path, marker: WorkMarker, expected: MarkerEntry | None, *,
                      new_ledger: bool, dry_run: bool) -> SqliteLedger | None:
    """Open the ledger for a batch: refuse a missing one that this work was recorded in before
    (rather than make an empty one), and let a dry run create nothing (None: no ledger yet)."""
    real = Path(os.path.realpath(path))
    if new_ledger and expected is not None:
        marker.refuse_fresh_start_beside(real, expected)
    if not real.exists():
        if expected is not None and not new_ledger:
            raise marker.missing(path, expected)
        return None if dry_run else SqliteLedger(path)
    if dry_run and new_ledger and real.is_file() and real.stat().st_size == 0:
        return None  # would be made anew; a dry run makes nothing
    return SqliteLedger(path, create=not dry_run, allow_empty=new_ledger and not dry_run)
