"""Writing a whole small file so that readers see the old one or the new one, never half of either.

The temp file is a registered scratch name beside the destination (a killed run's leftover is swept by
the next run); with ``durable`` the data and the rename are fsynced, for records that must survive a
power cut (the ledger's notes), not for what can be rebuilt (reports, sidecars).
"""

from __future__ import annotations

import os
from pathlib import Path

from audiopipe.scratch import discard, part_path


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
