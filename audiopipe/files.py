"""Whole small files: written so that readers see the old one or the new one, never half of either,
and read without being hung or flooded by a name given by mistake.

Writing: the temp file is a registered scratch name beside the destination (a killed run's leftover is
swept by the next run); with ``durable`` the data and the rename are fsynced, for records that must
survive a power cut (the ledger's notes), not for what can be rebuilt (reports, sidecars).

Reading (a token file, a contacts CSV): a name can be a FIFO (opening it waits for a writer forever),
a device such as ``/dev/zero`` (it never ends) or a folder. Each is refused before any byte is read,
and a regular file is read only up to a limit, so a wrong name costs one line and no memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from audiopipe.errors import AudiopipeError, os_reason
from audiopipe.scratch import discard, part_path

NOT_REGULAR = "not a regular file (a pipe, a device or a folder)"
_READ_CHUNK = 1 << 20


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; quietly nothing where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` in one rename (text is written as UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        discard(tmp)
    if durable:
        fsync_dir(path.parent)


class SmallFileError(AudiopipeError):
    """Why a small file could not be read, in words for a user (no path: the caller adds its own)."""


class NotRegularFile(SmallFileError):
    """The name is a pipe, a device or a folder: nothing was read."""

    def __init__(self) -> None:
        super().__init__(NOT_REGULAR)


class FileTooLarge(SmallFileError):
    """The file holds more than the limit: reading stopped one byte past it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {_human(limit)}")
        self.limit = limit


def read_small_file(path: str | Path, limit: int) -> bytes:
    """The whole content of the regular file ``path`` if it holds at most ``limit`` bytes.

    Raises :class:`NotRegularFile`, :class:`FileTooLarge`, or a :class:`SmallFileError` for an OS
    error (no such file, permission, a link loop...), already worded by ``os_reason``.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise block until someone writes to it.
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError, RuntimeError) as exc:
        raise SmallFileError(os_reason(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile()
        data = _read_up_to(fd, limit + 1)  # one byte past the limit proves the file is over it
    except OSError as exc:
        raise SmallFileError(os_reason(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(limit)
    return data


def _read_up_to(fd: int, most: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < most and (chunk := os.read(fd, min(_READ_CHUNK, most - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _human(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
