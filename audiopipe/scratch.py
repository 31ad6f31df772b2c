"""Temp files and folders that name their owner, so what a SIGKILL leaves is swept by a later run.

Every temp item audiopipe makes carries a token ``ap-HOST-PID-START-RANDOM``: a short hash of the
host name, the owning process's id and its start time (Linux: clock ticks since boot, read from
/proc, so a reused pid is not taken for the owner; elsewhere 0, and the pid alone decides). The
shapes are fixed:

* ``.NAME.ap-...part``: an output being written next to where it will be moved (``--out``, the
  cache, a work folder);
* ``audiopipe-KIND-ap-...``: a work folder (a batch's prepared files, a send's) in the system's
  temp folder (``TMPDIR``), not in the cache: a full or read-only cache must not stop a batch;
* ``.tmp-ap-...``: a cache entry being assembled.

The first time a run writes into a folder it sweeps that folder: an item whose owner is dead (or a
zombie) is removed; one whose owner is alive (a concurrent run), or from another host, is left
alone. While a run lives, its items are registered, so the signal path can remove whatever the
unwinding missed (:func:`remove_all`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_TOKEN = r"ap-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{8}"  # noqa: S105 - the owner token of a temp name, a pattern, no secret
_PART_FILE = re.compile(r"^\..+\." + _TOKEN + r"\.part$")
_WORK_DIR = re.compile(r"^(?:audiopipe-[a-z]+-|\.tmp-)" + _TOKEN + "$")

_registered: set[Path] = set()
_swept: set[Path] = set()
_lock = threading.RLock()  # re-entrant: remove_all runs from a signal handler, on any line


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), 0 where unknown, None if the
    process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or no /proc here (macOS), or hidden (hidepid): ask the kernel
        return _exists(pid)
    fields = stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _exists(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # someone else's, but alive
    return 0


_owners: dict[int, str] = {}  # pid -> its owner string: a forked child does not find its own pid here


def owner() -> str:
    """``HOST-PID-START`` of this process (computed again after a fork)."""
    pid = os.getpid()
    found = _owners.get(pid)
    if found is None:
        found = _owners[pid] = f"{_host()}-{pid}-{start_time(pid) or 0}"
    return found


def token() -> str:
    return f"ap-{owner()}-{secrets.token_hex(4)}"


def owner_alive(host: str, pid: int, start: int) -> bool:
    """Whether the process that named an item still runs. Another host's items count as alive:
    their owner cannot be checked from here."""
    if host != _host():
        return True
    now = start_time(pid)
    if now is None:
        return False
    return start == 0 or now == 0 or now == start


def _owned_leftover(entry: os.DirEntry[str]) -> bool:
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
    m = (_WORK_DIR if is_dir else _PART_FILE).match(entry.name)
    return m is not None and not owner_alive(m["host"], int(m["pid"]), int(m["start"]))


def sweep(folder: Path) -> int:
    """Remove the temp items in ``folder`` (not below) whose owner is dead; return how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if _owned_leftover(entry):
            path = Path(entry.path)
            log.info("removing %s, left by a run that was killed", path)
            if _remove(path):
                removed += 1
    return removed


def sweep_once(folder: Path) -> None:
    """Sweep ``folder`` the first time this process writes into it."""
    key = Path(os.path.abspath(folder))
    with _lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep(key)


def _remove(path: Path) -> bool:
    """Remove a file or folder; True when it is gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
    return not os.path.lexists(path)


def _register(path: Path) -> None:
    with _lock:
        _registered.add(path)


def discard(path: Path) -> None:
    """Remove a temp item of ours (gone already is fine); it stays registered if it could not be."""
    if _remove(path):
        with _lock:
            _registered.discard(path)


NAME_MAX = 255  # bytes in one file name on the usual file systems


def _fitting(name: str) -> str:
    """``name``, shortened (with a hash of the whole, so two long names stay apart) when the temp
    name built on it would pass the file system's limit though ``name`` itself fits."""
    room = NAME_MAX - len(".." + ".part") - len(token())
    if len(name.encode()) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    cut = name.encode()[: room - len(digest) - 1].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def part_path(dest: Path) -> Path:
    """A temp name beside ``dest`` to write it under before moving it into place (registered:
    end with :func:`discard`)."""
    sweep_once(dest.parent)
    path = dest.parent / f".{_fitting(dest.name)}.{token()}.part"
    _register(path)
    return path


def new_dir(parent: Path, prefix: str) -> Path:
    """Make a registered temp folder ``PREFIX ap-...`` in ``parent`` (``audiopipe-batch-``,
    ``.tmp-``); end with :func:`discard`."""
    sweep_once(parent)
    path = parent / f"{prefix}{token()}"
    path.mkdir(mode=0o700)
    _register(path)
    return path


def scratch_root() -> Path:
    """Where work folders go: the system's temp folder (``TMPDIR``). Not the cache folder: the cache
    only saves time, and a batch must go on when the cache's disk is full or read-only."""
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def temp_dir(kind: str) -> Iterator[Path]:
    """A work folder ``audiopipe-KIND-ap-...`` under :func:`scratch_root`, removed on the way out."""
    path = new_dir(scratch_root(), f"audiopipe-{kind}-")
    try:
        yield path
    finally:
        discard(path)


def remove_all() -> list[Path]:
    """Remove every registered temp item (the signal path); return those that could not be."""
    with _lock:
        items = sorted(_registered, key=lambda p: len(p.parts), reverse=True)  # files before folders
    left = []
    for path in items:
        discard(path)
        if os.path.lexists(path):
            left.append(path)
    return left
