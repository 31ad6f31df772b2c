"""Reading a small file a user named (a token file, a contacts CSV) without being hung or flooded.

A name given by mistake can be a FIFO (opening it waits for a writer forever), a device such as
``/dev/zero`` (it never ends) or a folder. Each is refused before any byte is read, and a regular
file is read only up to a limit, so a wrong name costs one line and no memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from audiopipe.errors import os_reason

NOT_REGULAR = "not a regular file (a pipe, a device or a folder)"


class SmallFileError(Exception):
    """Why the file could not be read, in words for a user (no path: the caller adds its own)."""


def read_small_file(path: str | Path, limit: int) -> bytes:
    """The whole content of the regular file ``path`` if it holds at most ``limit`` bytes.

    Raises :class:`SmallFileError` for anything else: not a regular file, larger than ``limit``,
    or an OS error (no such file, permission, a link loop...), already worded by ``os_reason``.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise block until someone writes to it.
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError, RuntimeError) as exc:
        raise SmallFileError(os_reason(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SmallFileError(NOT_REGULAR)
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SmallFileError(os_reason(exc)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise SmallFileError(f"larger than {_human(limit)}")
    return b"".join(chunks)


def _human(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
