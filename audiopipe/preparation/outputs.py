"""Writing files without ever destroying one the user owns.

Every file audiopipe writes (prepared outputs, split parts, the batch report) follows three rules:

1. Never one of the run's own files. An output path that *is* an input recording, the contacts
   CSV or the ledger -- by the same name, a hard link or a symlink, compared by device and inode --
   is refused with :class:`OutputClash` before any work, whatever ``overwrite`` says.
2. Never a file audiopipe did not write for the same input and settings, unless ``overwrite``: it is
   left as it is and reported (:class:`OutputError`). A folder in the way is always refused.
3. Placed without a window: the finished temp file is hard-linked to its name, which fails when the
   name was taken meanwhile (another run), instead of being renamed over it.

What audiopipe wrote is recorded in a small hidden sidecar beside the outputs,
``.STEM.audiopipe.json``: a key made of the input's content hash and the settings, and the SHA-256
of each output. One sidecar per output stem (not one per folder) needs no lock between parallel
jobs or runs and costs the same in a folder of ten files or of ten thousand. A rerun with the same
input and settings finds its outputs intact and reuses them: no ffprobe, no ffmpeg, no copy, not
even a rewrite. The key leaves out the ffmpeg and audiopipe versions, so an upgrade does not turn
yesterday's outputs into strangers; the outputs' own hashes, not their times, say they are intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiopipe.errors import OutputClash, OutputError, UsageError, os_reason
from audiopipe.files import write_atomically
from audiopipe.preparation.cache import file_sha256
from audiopipe.preparation.formats import FORMATS
from audiopipe.scratch import discard, part_path

log = logging.getLogger(__name__)

FileId = tuple[int, int]

FOLDER_IN_THE_WAY = ("is a folder, and audiopipe writes a file by that name: rename or remove the folder, "
                     "or choose another --out")
NOT_OURS = ("already exists and audiopipe did not write it for this input and settings: left as it is "
            "(--overwrite replaces it, or choose another --out)")
APPEARED = "appeared while it was being prepared (another run?): left as it is"

# A hard link cannot be made here (FAT, some network shares): fall back to check-then-rename.
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}

# Every name an output of stem S can take: S.EXT and S.partKofN.EXT.
_EXTENSIONS = "|".join(sorted({re.escape(f.extension) for f in FORMATS.values()}))
OUTPUT_NAME = re.compile(rf"^(?P<stem>.+?)(?P<part>\.part[1-9][0-9]*of[1-9][0-9]*)?\.(?:{_EXTENSIONS})$",
                         re.IGNORECASE)



def part_name(stem: str, ext: str, part: int, parts: int) -> str:
    """The file name of part ``part`` of ``parts`` (just ``STEM.EXT`` when there is one)."""
    return f"{stem}.{ext}" if parts == 1 else f"{stem}.part{part}of{parts}.{ext}"


SIDECAR_SCHEMA = "audiopipe-outputs/1"
SIDECAR_SUFFIX = ".audiopipe.json"


def file_id(path: str | Path) -> FileId | None:
    """(device, inode) of what ``path`` names, links followed; None when there is nothing."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class Protected:
    """Files no output may replace, known by identity so that a hard link or a symlink to one of
    them is caught as surely as the file's own name."""

    def __init__(self, files: Iterable[tuple[str | Path, str]] = ()) -> None:
        self._labels: dict[FileId, str] = {}
        for path, label in files:
            self.add(path, label)

    def add(self, path: str | Path, label: str) -> None:
        fid = file_id(path)
        if fid is not None:
            self._labels.setdefault(fid, f"{label} {path}")

    def what(self, path: str | Path) -> str | None:
        """The protected file ``path`` would replace (its label), or None."""
        fid = file_id(path)
        return self._labels.get(fid) if fid is not None else None

    def refuse(self, dest: Path, fix: str = "choose another --out") -> None:
        what = self.what(dest)
        if what is not None:
            raise OutputClash(f"refusing to write {dest}: that is {what} (by name or by link), which "
                              f"audiopipe never replaces; {fix}")


ProtectArg = Protected | Iterable[str | Path]


def as_protected(protect: ProtectArg, label: str = "one of the run's own files") -> Protected:
    """A fresh :class:`Protected` (the caller's is never changed) from one, or from plain paths."""
    fresh = Protected()
    if isinstance(protect, Protected):
        fresh._labels.update(protect._labels)
    else:
        for path in protect:
            fresh.add(path, label)
    return fresh


def refuse_clashes(dest_stems: Iterable[Path], protected: Protected) -> None:
    """Before any work: refuse when a name some output could take (``STEM.EXT``,
    ``STEM.partKofN.EXT``) is already one of the protected files. One listing per output folder."""
    by_folder: dict[Path, set[str]] = {}
    for stem in dest_stems:
        by_folder.setdefault(stem.parent, set()).add(stem.name.lower())
    for folder, stems in by_folder.items():
        try:
            names = os.listdir(folder)
        except OSError:
            continue  # nothing there yet (so nothing to replace), or reported when it is written
        for name in names:
            m = OUTPUT_NAME.match(name)
            if m and (m["stem"].lower() in stems or name.rsplit(".", 1)[0].lower() in stems):
                protected.refuse(folder / name)


# --- placing a finished file ---------------------------------------------------------------------

def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(folder, "is a file, not a folder: choose another --out") from None
    except OSError as exc:
        raise OutputError(folder, f"cannot be made a folder: {os_reason(exc)}") from None


def stage(dest: Path) -> Path:
    """A hidden temp name beside ``dest`` to write it under (its owner's token makes it unique and
    lets a later run sweep it if this one is killed); end with :func:`place` and ``discard``."""
    make_folder(dest.parent)
    return part_path(dest)


def place(staged: Path, dest: Path, *, replace: bool) -> None:
    """Give the finished ``staged`` file the name ``dest``; ``staged`` is gone afterwards.

    Without ``replace`` nothing at ``dest`` is replaced, even a file that appeared after the check.
    """
    try:
        if replace:
            os.replace(staged, dest)
            return
        try:
            os.link(staged, dest)
        except FileExistsError:
            raise OutputError(dest, APPEARED) from None
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            if os.path.lexists(dest):
                raise OutputError(dest, APPEARED) from None
            os.replace(staged, dest)
    except IsADirectoryError:
        raise OutputError(dest, FOLDER_IN_THE_WAY) from None
    except OSError as exc:
        raise OutputError(dest, f"cannot be written: {os_reason(exc)}") from None
    finally:
        discard(staged)


def copy_into_place(src: Path, dest: Path, *, replace: bool) -> None:
    """Copy ``src`` to ``dest`` by way of a staged name (see :func:`place`)."""
    staged = stage(dest)
    try:
        shutil.copyfile(src, staged)
        place(staged, dest, replace=replace)
    finally:
        discard(staged)


def check_output_folder(folder: str | Path, refusal: str | None = None) -> None:
    """Make ``folder`` and check a file can be written in it, before any work is done; otherwise
    :class:`UsageError`: ``refusal`` (default: ``--out FOLDER: cannot write there``) and the reason."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe_file = tempfile.mkstemp(prefix=".audiopipe-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe_file)
    except FileExistsError:
        raise UsageError(f"{refusal or f'--out {out}: cannot write there'}: {out} is a file, not a folder") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{refusal or f'--out {out}: cannot write there'}: {os_reason(exc)}") from None


# --- what audiopipe wrote --------------------------------------------------------------------------

def ownership_key(source_sha256: str, settings: dict[str, Any]) -> str:
    """What an output was made from: the input's content and the settings (not the tool versions)."""
    blob = json.dumps({"schema": SIDECAR_SCHEMA, "source": source_sha256, "settings": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sidecar_path(dest_stem: Path) -> Path:
    return dest_stem.parent / f".{dest_stem.name}{SIDECAR_SUFFIX}"


@dataclass(frozen=True)
class Record:
    """A sidecar: the outputs written for one stem, and how to rebuild the result without work."""

    key: str
    files: tuple[tuple[str, str], ...]   # (name, sha256) of each output, in order
    result: dict[str, Any]


def read_record(dest_stem: Path) -> Record | None:
    """The sidecar of ``dest_stem``, or None when there is none or it is not one of ours."""
    try:
        data = json.loads(sidecar_path(dest_stem).read_text(encoding="utf-8"))
        if data.get("schema") != SIDECAR_SCHEMA:
            return None
        files = tuple((str(f["name"]), str(f["sha256"])) for f in data["files"])
        record = Record(key=str(data["key"]), files=files, result=dict(data["result"]))
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None
    if not files or any(Path(name).name != name or name in ("", ".", "..") for name, _ in files):
        return None  # a name that leaves the folder is not something we wrote
    return record


def intact(folder: Path, record: Record) -> frozenset[str]:
    """Names of the record's outputs still there as written (same bytes)."""
    good = set()
    for name, sha in record.files:
        path = folder / name
        try:
            if path.is_file() and not path.is_symlink() and file_sha256(path) == sha:
                good.add(name)
        except OSError:
            continue
    return frozenset(good)


def write_record(dest_stem: Path, key: str, outputs: Iterable[Path], result: dict[str, Any]) -> None:
    """Record what was written, so the next run knows it as its own. Best effort: without it the
    outputs are fine; the next run just will not recognise (and reuse) them."""
    path = sidecar_path(dest_stem)
    if os.path.lexists(path) and read_record(dest_stem) is None:
        log.warning("%s is not an audiopipe sidecar: left as it is", path)
        return
    try:
        files = [{"name": p.name, "sha256": file_sha256(p)} for p in outputs]
        write_atomically(path, json.dumps({"schema": SIDECAR_SCHEMA, "key": key, "files": files,
                                           "result": result}, sort_keys=True))
    except (OSError, OutputError) as exc:
        log.warning("cannot record the outputs in %s (%s): a rerun will not recognise them", path, exc)


@dataclass(frozen=True)
class OutputGuard:
    """What may be written for one input: ``claim`` each name before work goes into it."""

    protected: Protected
    overwrite: bool = False
    ours: frozenset[str] = frozenset()   # names audiopipe wrote here for this input and settings

    def claim(self, dest: Path) -> bool:
        """Refuse ``dest`` (OutputClash, OutputError) or say whether what is there may be replaced."""
        if dest.is_dir():
            raise OutputError(dest, FOLDER_IN_THE_WAY)
        self.protected.refuse(dest)
        if not os.path.lexists(dest):
            return False
        if dest.name in self.ours or self.overwrite:
            return True
        raise OutputError(dest, NOT_OURS)
