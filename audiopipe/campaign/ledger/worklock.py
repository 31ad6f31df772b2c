"""One sending run per batch folder at a time, whatever ledger it names (see :class:`WorkLock`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from audiopipe.campaign.ledger.errors import LedgerLocked
from audiopipe.campaign.ledger.marker import WorkMarker
from audiopipe.campaign.ledger.runlock import holder_note

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
                os.pwrite(fd, f"{holder_note()}\n".encode(), 0)
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
