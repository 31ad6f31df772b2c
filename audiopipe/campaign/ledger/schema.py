"""The SQLite ledger's tables, how older ledgers are brought up to date, and SQLite's errors in words.

A ledger is made with every table and its identity (a random id, when and where it was made) in one
transaction, before it is ever in WAL mode, so the identity is in the main file from the start and can
be read without a lock or a -wal (:func:`read_meta`). Columns added since the first ledgers are added
by the first writer, inside its write transaction (:func:`upgrade`); a reader reads them as NULL, so
`audiopipe status` never changes a ledger.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from urllib.parse import quote

SQLITE_MAGIC = b"SQLite format 3\x00"
TABLES = frozenset({"sends", "events", "ledger_meta"})

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
    sent_by TEXT,
    PRIMARY KEY (campaign, workspace, contact, source_sha256, part)
);
CREATE INDEX IF NOT EXISTS sends_state ON sends (campaign, state);
CREATE TABLE IF NOT EXISTS events (
    at REAL NOT NULL, campaign TEXT, workspace TEXT, contact TEXT, source_sha256 TEXT, part INTEGER,
    state TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The columns of `sends`, in the order of SCHEMA.
SEND_COLUMNS = ("campaign", "workspace", "contact", "source_sha256", "part", "parts", "file", "prepared_sha256",
                "state", "message_id", "error", "status", "attempts", "created_at", "updated_at", "work",
                "resolved", "sent_by")
# Columns added since the first ledgers: a writer adds them to an older ledger (see upgrade); a
# reader reads them as NULL there, so `audiopipe status` never changes a ledger.
# ``sent_by``: how the last request of a send gave the API its file, upload or url (NULL: upload,
# in a ledger from before URL sends, or no request yet).
ADDED_COLUMNS = (("work", "TEXT"), ("resolved", "TEXT"), ("sent_by", "TEXT"))

# SQLite's primary result codes, in words a user can act on.
_SQLITE_REASONS = {
    13: "the disk is full",                                                   # SQLITE_FULL
    8: "it is read-only (the file, its folder or the file system)",           # SQLITE_READONLY
    10: "an I/O error (a failing, full or removed disk?)",                    # SQLITE_IOERR
    14: "it or its -wal/-shm files cannot be opened (permissions, or a read-only folder?)",  # CANTOPEN
    # (SQLite gives up at once, not after the 30 s wait, when two connections would deadlock)
    5: "another program has it locked (wait for it to finish, then run again)",  # SQLITE_BUSY
    6: "another program has it locked (wait for it to finish, then run again)",  # SQLITE_LOCKED
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


def create_tables(db: sqlite3.Connection, real: Path) -> None:
    """Every table and the ledger's identity (an existing id is kept), in one write transaction.
    (``executescript`` commits whatever transaction is open first: the BEGIN is in its script.)"""
    db.executescript("BEGIN IMMEDIATE;" + SCHEMA)
    for k, v in (("ledger_id", uuid.uuid4().hex), ("created_at", repr(time.time())),
                 ("created_path", str(real))):
        db.execute("INSERT OR IGNORE INTO ledger_meta (key, value) VALUES (?, ?)", (k, v))
    db.execute("COMMIT")


def tables(db: sqlite3.Connection) -> set[str]:
    return {r["name"] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def meta(db: sqlite3.Connection, key: str) -> str | None:
    """One value of ``ledger_meta`` (the table must exist)."""
    row = db.execute("SELECT value FROM ledger_meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def read_meta(path: Path, key: str) -> str | None:
    """One value of ``ledger_meta`` in the file at ``path``, or None when it cannot be read there.

    ``immutable``: reads the main file only, takes no lock and opens no -wal. The id and the created
    path are written when the ledger is made, before it is ever in WAL mode. ``mode=ro``: a file that
    is not there is not made."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)
        try:
            db.row_factory = sqlite3.Row
            return meta(db, key)
        finally:
            db.close()
    except sqlite3.Error:
        return None


def send_columns(db: sqlite3.Connection) -> set[str]:
    """The columns ``sends`` has in this ledger (an older one lacks ADDED_COLUMNS)."""
    return {r["name"] for r in db.execute("PRAGMA table_info(sends)")}


def upgrade(db: sqlite3.Connection, columns: set[str]) -> set[str]:
    """Add the newer columns, inside a write transaction (another process may have just done it).
    Returns the columns ``sends`` has now."""
    if all(name in columns for name, _ in ADDED_COLUMNS):
        return columns
    columns = send_columns(db)
    for name, kind in ADDED_COLUMNS:
        if name not in columns:
            db.execute(f"ALTER TABLE sends ADD COLUMN {name} {kind}")  # our own names: nothing to bind
    return send_columns(db)
