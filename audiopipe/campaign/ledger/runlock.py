"""The run lock of a SQLite ledger: one sending run per ledger file at a time.

**The lock belongs to the file, not to its name.** It is an ``flock`` on the ledger file itself (its
inode), not on a file named after the path given, so every name of one ledger (a symlink, a relative
path, ``..``, a hard link) meets the same lock. The kernel drops it when the holder dies, however it
dies: there is never a stale lock to clean up by hand. Who holds it is noted in the ledger, for the
message a second run gets.

It is taken on a descriptor that :class:`~audiopipe.campaign.ledger.sqlite_file.OpenFiles` keeps
open as long as the file is in use, and released with ``LOCK_UN``, never by closing it (which would
drop SQLite's own POSIX locks too).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from audiopipe.campaign.ledger.errors import LedgerLocked


def holder_note() -> str:
    """What a run notes about itself when it takes a lock."""
    return f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


class FileRunLock:
    """The run lock on the open ledger file ``fd`` (named ``path`` in messages). ``holder`` reads
    who holds it (as noted by the holder), None when nothing is noted or it cannot be read."""

    def __init__(self, fd: int, path: Path, holder: Callable[[], str | None]) -> None:
        self._fd = fd
        self._path = path
        self._holder = holder
        self._legacy: IO[str] | None = None
        self.holding = False

    def acquire(self, note: Callable[[str], None]) -> None:
        """Take the lock, then ``note`` who holds it (in the ledger); LedgerLocked naming the holder
        when another run has it. A failure to note it (a read-only ledger) lets the lock go again."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(self._holder()) from None
        try:
            self._lock_legacy()
            note(holder_note())
        except BaseException:
            self._unlock()
            raise
        self.holding = True  # the kernel drops the flock if this process dies, however it dies

    def _lock_legacy(self) -> None:
        """Audiopipe before 0.x locked ``<ledger>.lock`` instead; while such a run may still be going
        (an upgrade during a long batch), hold that lock too. No new .lock file is made."""
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            fh = open(lock_path, "r+")  # noqa: SIM115 - held open past this function: it is the lock
        except OSError:
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read().strip()
            fh.close()
            raise self._locked(holder) from None
        self._legacy = fh

    def _locked(self, holder: str | None) -> LedgerLocked:
        return LedgerLocked(f"another audiopipe run holds the ledger {self._path}"
                            + (f" ({holder})" if holder else "") + "; try again when it ends")

    def running(self) -> str | None:
        """Who holds the lock (a run in progress), or None: also when this one holds it."""
        if self.holding:
            return None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._holder() or "another process"
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return None

    def _unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # not close(): see the module docstring
        if self._legacy is not None:
            self._legacy.close()
            self._legacy = None

    def release(self) -> None:
        if self.holding:
            self._unlock()
            self.holding = False
