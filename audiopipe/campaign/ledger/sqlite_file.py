"""Opening the SQLite file a ledger lives in: made whole, refused when it is not ours, one name for
each file, and no descriptor closed while SQLite may hold a lock on it.

**A lost ledger must not resend a campaign.** A ledger is created whole (written beside, then linked
into place), so a file that is empty, not SQLite, or SQLite without our tables was never a ledger of
ours, and is refused rather than initialised over (``allow_empty``, for ``--new-ledger``, makes a
ledger in a 0-byte file or a SQLite file with no tables: they hold nothing to lose).

**One ledger, whatever names it.** A ledger file can be reached by many paths: a symlink, a relative
path, ``..``, a hard link. SQLite names its ``-wal`` file after the path it opened, so a hard link
would give the same database a second write-ahead log and hide the first one's commits: each ledger
records the path it was created at, and any other name of the same file opens that one.

SQLite locks with POSIX locks, which the kernel drops for the whole process as soon as *any*
descriptor on the file is closed. The descriptors this module opens on a ledger (for the run lock, see
:mod:`~audiopipe.campaign.ledger.runlock`, and to read its header) are therefore only closed once no
connection of this process uses that file (:class:`OpenFiles`).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import uuid
from pathlib import Path

from audiopipe import paths
from audiopipe.campaign.ledger.errors import RESENDS, LedgerRefused
from audiopipe.campaign.ledger.schema import (
    SQLITE_MAGIC,
    TABLES,
    create_tables,
    meta,
    read_meta,
    send_columns,
    sqlite_reason,
    tables,
)
from audiopipe.files import fsync_dir

Inode = tuple[int, int]


def default_state_path() -> Path:
    """The ledger used when none is named (see :func:`audiopipe.paths.default_ledger`)."""
    return paths.default_ledger()


class OpenFiles:
    """The descriptors this process holds on ledger files, by inode.

    Closing any descriptor on a file drops every POSIX lock this process holds on it, SQLite's
    included (another process could then think it is the last user and remove the -wal file under
    us). So a descriptor of ours is parked until the last :class:`LedgerFile` on that inode has
    closed its connection, and only then closed. The path the ledger is opened by (see
    :meth:`LedgerFile._open_name`) is remembered here too, so that every one of this process uses one.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._users: dict[Inode, int] = {}
        self._parked: dict[Inode, list[int]] = {}
        self.names: dict[Inode, str] = {}

    def enter(self, inode: Inode) -> bool:
        """Count one more user; True when it is the first."""
        with self.lock:
            self._users[inode] = self._users.get(inode, 0) + 1
            return self._users[inode] == 1

    def leave(self, inode: Inode, fd: int) -> None:
        with self.lock:
            self._parked.setdefault(inode, []).append(fd)
            self._users[inode] -= 1
            if self._users[inode]:
                return
            del self._users[inode]
            self.names.pop(inode, None)
            for parked in self._parked.pop(inode):
                os.close(parked)


_FILES = OpenFiles()


def _inode(st: os.stat_result) -> Inode:
    return (st.st_dev, st.st_ino)


class LedgerFile:
    """One ledger file, open: ``fd`` (read-only, for the run lock and the header), ``real_path`` (the
    name SQLite opened it by), ``db`` (WAL, synchronous=FULL: a commit survives a crash; rows read as
    :class:`sqlite3.Row`), ``ledger_id`` and the ``columns`` its table of sends has.

    ``create``: make the ledger if the file does not exist (``False`` for readers such as ``audiopipe
    status``, which also never add an id to an old ledger). ``allow_empty``: see the module docstring.
    """

    def __init__(self, path: Path, *, create: bool, allow_empty: bool) -> None:
        self.path = path
        self.ledger_id: str | None = None
        self.columns: set[str] = set()
        real = Path(os.path.realpath(path))
        if not real.exists():
            if not create:
                raise LedgerRefused(f"no ledger at {path}")
            self._create(real)
        self.fd = self._open_fd(real)
        st = os.fstat(self.fd)
        self._inode = _inode(st)
        first = _FILES.enter(self._inode)
        try:
            self._check_file(st, allow_empty)
            self.real_path = Path(self._open_name(real, st, first))
            self.db = self._connect(allow_empty, create)
        except BaseException:
            _FILES.leave(self._inode, self.fd)
            raise

    def close(self) -> None:
        """Close the connection, then (once no other ledger of this process uses the file) the descriptor."""
        self.db.close()
        _FILES.leave(self._inode, self.fd)

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
                # Born in WAL mode (the mode is kept in the file): nobody has to switch it once it is
                # in place, a switch that needs the file to itself and, when two processes try it at
                # once, fails one at once with "locked" rather than waiting.
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                create_tables(db, real)
            finally:
                db.close()
            _link_into_place(tmp, real)
        except sqlite3.Error as exc:
            raise self._fail_open(sqlite_reason(exc)) from None
        except OSError as exc:
            raise self._fail_open(exc.strerror or str(exc)) from None
        finally:
            for leftover in (tmp, *(tmp.with_name(tmp.name + end) for end in ("-journal", "-wal", "-shm"))):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

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
            head = os.pread(self.fd, len(SQLITE_MAGIC), 0)
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
                created = read_meta(real, "created_path")
                try:
                    if created and _inode(os.stat(created)) == self._inode:
                        name = created
                except OSError:
                    pass
            _FILES.names[self._inode] = name
            return name

    def _connect(self, allow_empty: bool, create: bool) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(self.real_path), timeout=30, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fail_open(sqlite_reason(exc)) from None
        try:
            db.row_factory = sqlite3.Row
            self._prepare(db, allow_empty, create)
        except sqlite3.Error as exc:
            db.close()
            raise self._fail_open(sqlite_reason(exc)) from None
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection, allow_empty: bool, create: bool) -> None:
        """Check the tables are ours, make the missing ones when writing, and set WAL mode."""
        found = tables(db)
        if "sends" not in found and not (allow_empty and not found):
            raise self._not_ours(found)
        if create and not found.issuperset(TABLES):
            # a new ledger in an empty file (--new-ledger), or one from before ledgers had ids
            create_tables(db, self.real_path)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the id into the main file (see schema.read_meta)
            found |= TABLES
        if create and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")  # a ledger from before ledgers were born in WAL mode
        db.execute("PRAGMA synchronous=FULL")
        self.columns = send_columns(db)
        if "ledger_meta" in found:
            self.ledger_id = meta(db, "ledger_id")

    def _not_ours(self, found: set[str]) -> LedgerRefused:
        if not found:
            return LedgerRefused(f"the ledger {self.path} is an empty SQLite database with nothing recorded "
                                 "in it; put back the ledger that was there, or add --new-ledger to start "
                                 f"afresh in this file on purpose ({RESENDS})")
        shown = ", ".join(sorted(found)[:5])
        return self._fail_open(f"it is a SQLite database of something else (tables {shown}), not an "
                               "audiopipe ledger, and it is left as it is; give --state another path")


def _link_into_place(tmp: Path, real: Path) -> None:
    """Put the new ledger at ``real`` unless one is there already (another run made it first: use theirs)."""
    try:
        os.link(tmp, real)
    except FileExistsError:
        return
    except OSError:  # a file system without hard links: copy into a file only we created
        _copy_exclusive(tmp, real)
    fsync_dir(real.parent)


def _copy_exclusive(src: Path, dest: Path) -> None:
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as out:
        out.write(src.read_bytes())
        out.flush()
        os.fsync(out.fileno())
