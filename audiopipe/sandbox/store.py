"""What the sandbox received: the messages table (SQLite in WAL mode) and the uploaded bytes under
``data_dir/files/``, kept durably so a test, or a person, can check what the "customer" would have
received, also after a restart or in another process.

An upload is spooled to ``<id>.part`` while it is hashed and counted, and renamed to ``<id>.<ext>``
only when its row is committed; a ``.part`` left by a crash is removed by the next store opened on
the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from werkzeug.datastructures import FileStorage

from audiopipe.preparation.sniff import MIME_FIRST_EXTENSION

DB_NAME = "messages.sqlite3"
FILES_DIR = "files"
PART_SUFFIX = ".part"
_COPY_CHUNK = 1 << 16


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Spooled:
    """An upload written to ``path`` under its future message id, with its size and SHA-256."""

    message_id: str
    path: Path
    size: int
    sha256: str


class MessageStore:
    """The messages table and the uploaded files. One SQLite connection, shared under a lock
    (request threads are short-lived, so per-thread connections would only pile up)."""

    def __init__(self, data_dir: Path) -> None:
        self.files_dir = data_dir / FILES_DIR
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.files_dir.glob(f"*{PART_SUFFIX}"):  # from a run that crashed mid-upload
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " id TEXT PRIMARY KEY, workspace TEXT NOT NULL, contact TEXT NOT NULL, file_name TEXT,"
            " size INTEGER, sha256 TEXT, mime TEXT, url TEXT, created_at TEXT NOT NULL)"
        )

    def insert(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (id, workspace, contact, file_name, size, sha256, mime, url, created_at)"
                " VALUES (:id, :workspace, :contact, :file_name, :size, :sha256, :mime, :url, :created_at)",
                row,
            )

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT id, workspace, contact, file_name, size, sha256, mime, url, created_at"
                                   " FROM messages ORDER BY rowid")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]

    def messages(self) -> list[dict[str, Any]]:
        """Every stored message, oldest first, as the inspector shows it."""
        return [self.inspected(row) for row in self.rows()]

    def file_path(self, message_id: str, mime: str | None) -> Path | None:
        ext = MIME_FIRST_EXTENSION.get(mime or "")
        return self.files_dir / f"{message_id}.{ext}" if ext else None

    def inspected(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored row as the inspector shows it: the API's data plus where the bytes are kept."""
        data = public(row)
        path = self.file_path(row["id"], row["mime"])  # an upload's, or the file fetched from a URL
        data["file_path"] = str(path) if path is not None else None
        return data

    @contextmanager
    def spool(self, upload: FileStorage | Readable) -> Iterator[Spooled]:
        """Write ``upload`` (or the body of a fetched URL) to a ``.part`` file under a new message id,
        hashing as it goes; the part is removed on the way out (:meth:`keep` moves it away first if
        the message is stored)."""
        source = upload.stream if isinstance(upload, FileStorage) else upload
        message_id = str(uuid.uuid4())
        part = self.files_dir / f"{message_id}{PART_SUFFIX}"
        try:
            # Streamed: werkzeug already spooled the part to disk; copy it in chunks, hashing as we go.
            with part.open("wb") as fh:
                writer = _HashingWriter(fh)
                shutil.copyfileobj(source, writer, _COPY_CHUNK)  # what upload.save() does
                fh.flush()  # no fsync: the sandbox must survive its clients' crashes, not power cuts
            yield Spooled(message_id, part, writer.size, writer.sha256.hexdigest())
        finally:
            part.unlink(missing_ok=True)

    def keep(self, spooled: Spooled, extension: str, row: dict[str, Any]) -> None:
        """Store an accepted upload: its bytes as ``<id>.<extension>``, then its row (the file goes
        again if the row cannot be written)."""
        final = self.files_dir / f"{spooled.message_id}.{extension}"
        os.replace(spooled.path, final)
        try:
            self.insert(row)
        except BaseException:
            final.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def new_row(workspace: str, contact: str, *, message_id: str | None = None, file_name: str | None = None,
            size: int | None = None, sha256: str | None = None, mime: str | None = None,
            url: str | None = None) -> dict[str, Any]:
    """A row of the messages table, created now."""
    return {"id": message_id or str(uuid.uuid4()), "workspace": workspace, "contact": contact,
            "file_name": file_name, "size": size, "sha256": sha256, "mime": mime, "url": url,
            "created_at": _now_iso()}


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API's ``data`` object."""
    return {
        "id": row["id"],
        "workspace_id": row["workspace"],
        "contact_id": row["contact"],
        "type": "audio",
        "file_name": row["file_name"],
        "size": row["size"],
        "sha256": row["sha256"],
        "mime": row["mime"],
        "url": row["url"],
        "created_at": row["created_at"],
    }


def stored_messages(data_dir: str | Path) -> list[dict[str, Any]]:
    """The messages a sandbox stored in ``data_dir``, oldest first (it need not be running)."""
    data_dir = Path(data_dir).expanduser()
    if not (data_dir / DB_NAME).exists():
        return []
    store = MessageStore(data_dir)
    try:
        return store.messages()
    finally:
        store.close()


class _HashingWriter:
    """A write-only file object that hashes and counts what goes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._fh.write(data)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # Laravel's JSON dates
