"""Results the database could not take, kept on local disk until it can.

After a request has gone out, its result must be recorded: if the database is unreachable at that
moment (a restart, a network cut), the worker appends the result to its own journal file, one JSON
line, fsynced before it moves on, and writes it to the database on the next connection (before it
claims anything more, and when a worker starts). A replay writes each result fenced by its attempt
(see :mod:`audiopipe.campaign.pg.claims`), so replaying twice, or replaying a result that did reach the
database after all, changes nothing.

One file per worker (``<worker id>.jsonl`` in the journal folder), held with an ``flock`` while the
worker lives. A worker starting on the same machine replays the files of workers that died (any file
it can lock) and then removes them; a live worker's file is never touched by another. If the last
line was cut short by a crash mid-write, it was never fsynced, so its send's row is still ``sending``:
the reaper makes it ``unknown``, as for any send whose result is lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from audiopipe.campaign.ledger import SendKey
from audiopipe.campaign.pg.claims import Claim, Result
from audiopipe.files import fsync_dir

SUFFIX = ".jsonl"


def to_line(result: Result) -> bytes:
    return (json.dumps(asdict(result), separators=(",", ":")) + "\n").encode()


def from_line(line: bytes) -> Result | None:
    """A journal line as the Result it holds, or None for a line cut short (see the module's docstring)."""
    try:
        d: dict[str, Any] = json.loads(line)
        c = d["claim"]
        claim = Claim(SendKey(**c["key"]), c["attempt"], c["owner"], c["parts"], c["file"], c["prepared_sha256"],
                      c["work"], c.get("stored"))
        return Result(claim, d["state"], d["message_id"], d["error"], d["status"], d["retry_in"], d.get("sent_by"))
    except (ValueError, KeyError, TypeError):
        return None


def read(fd: int) -> list[Result]:
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as fh:
        return [r for r in map(from_line, fh.read().splitlines()) if r is not None]


def _open_locked(path: Path, *, wait: bool) -> int | None:
    """``path`` opened for appending and flocked; None when another process holds it (and not ``wait``),
    or when it was removed before the lock was ours (a replayer got there first)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            return None
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Journal:
    """This worker's journal file in ``folder``."""

    def __init__(self, folder: Path, worker_id: str) -> None:
        self.folder = folder
        self.path = folder / f"{worker_id}{SUFFIX}"
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.pending = False  # results appended and not yet replayed

    def _own(self) -> int:
        while self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = _open_locked(self.path, wait=True)
            if self._fd is not None:
                fsync_dir(self.folder)
        return self._fd

    def append(self, result: Result) -> None:
        """Keep ``result``, durably, before returning."""
        with self._lock:
            fd = self._own()
            os.write(fd, to_line(result))
            os.fsync(fd)
            self.pending = True

    def replay(self, write: Callable[[Result], object]) -> int:
        """Write every kept result with ``write`` (which raises when the database is still away: they
        are then kept), then empty the file. Returns how many were written."""
        with self._lock:
            if self._fd is None:
                return 0
            results = read(self._fd)
            for result in results:
                write(result)
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.pending = False
            return len(results)

    def close(self) -> None:
        """Let go of the file: removed when empty, kept (for the next worker here to replay) when not."""
        with self._lock:
            if self._fd is None:
                return
            if os.fstat(self._fd).st_size == 0:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def replay_orphans(folder: Path, write: Callable[[Result], object], *, mine: Path | None = None) -> int:
    """Replay and remove the journals in ``folder`` that no live worker holds. Returns how many results."""
    if not folder.is_dir():
        return 0
    done = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if path == mine:
            continue
        fd = _open_locked(path, wait=False)
        if fd is None:
            continue  # a live worker's, or gone meanwhile
        try:
            results = read(fd)
            for result in results:
                write(result)
            path.unlink()
            fsync_dir(folder)
            done += len(results)
        finally:
            os.close(fd)
    return done
