"""A cache of prepared outputs, keyed by the input's content hash and the settings.

Preparing the same folder again costs a hash per file and a copy per output. Entries are written
to a temp folder and renamed into place, so a killed run never leaves a half entry behind.

The cache only saves time: a cache that cannot be written (a full or read-only disk, no permission)
is left alone for the rest of the process with one warning, and the work goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from audiopipe import paths
from audiopipe.errors import os_reason
from audiopipe.scratch import discard, new_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SCHEMA = 1
SHARD_NAME = re.compile(r"[0-9a-f]{2}")
ENTRY_NAME = re.compile(r"[0-9a-f]{64}|\.tmp-.+")  # an entry, or one being written

# Cache folders found unwritable in this process: not tried again, warned about once.
_unwritable: set[Path] = set()
_unwritable_lock = threading.Lock()


def default_cache_dir() -> Path:
    return paths.cache_dir()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_key(source_sha256: str, settings: dict[str, Any], tool_version: str) -> str:
    blob = json.dumps({"schema": SCHEMA, "source": source_sha256, "settings": settings,
                       "tools": tool_version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The manifest and folder of an entry, or None. A damaged or unreadable entry is a miss."""
        entry = self._entry(key)
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            if not all((entry / name).is_file() for name in manifest.get("files", [])):
                return None
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        return manifest, entry

    @property
    def writable(self) -> bool:
        with _unwritable_lock:
            return self.root not in _unwritable

    def put(self, key: str, manifest: dict[str, Any], files: list[Path]) -> None:
        """Store an entry; when the cache cannot be written, warn once and go on without it."""
        if not self.writable:
            return
        try:
            self._put(key, manifest, files)
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        with _unwritable_lock:
            first = self.root not in _unwritable
            _unwritable.add(self.root)
        if first:
            log.warning("cannot write the cache of prepared files in %s (%s); going on without it. "
                        "Fix it, point AUDIOPIPE_CACHE_DIR elsewhere, or pass --no-cache",
                        self.root, os_reason(exc))

    def _put(self, key: str, manifest: dict[str, Any], files: list[Path]) -> None:
        entry = self._entry(key)
        if entry.exists():
            if self.get(key) is not None:
                return
            shutil.rmtree(entry, ignore_errors=True)  # damaged: replace it, or it would miss forever
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_dir(entry.parent, ".tmp-")  # named after this process: a killed run's is swept
        try:
            for f in files:
                shutil.copyfile(f, tmp / f.name)
            manifest = dict(manifest, files=[f.name for f in files])
            (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
            try:
                os.rename(tmp, entry)
            except OSError:
                pass  # another process stored the same entry first: theirs is as good
        finally:
            discard(tmp)

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) held in the cache."""
        entries = 0
        size = 0
        for manifest in self.root.glob("*/*/manifest.json"):
            entries += 1
            size += sum(f.stat().st_size for f in manifest.parent.iterdir() if f.is_file())
        return entries, size

    def clear(self) -> int:
        """Remove every entry; return how many there were.

        Only what the cache itself made goes (``XX/<sha256>`` folders): AUDIOPIPE_CACHE_DIR pointed
        at a folder that holds anything else by mistake loses nothing else."""
        count = 0
        for shard in self._own_dirs(self.root, SHARD_NAME):
            for entry in self._own_dirs(shard, ENTRY_NAME):
                count += (entry / "manifest.json").is_file()
                shutil.rmtree(entry, ignore_errors=True)
            _remove_if_empty(shard)
        _remove_if_empty(self.root)
        return count

    @staticmethod
    def _own_dirs(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
        try:
            found = list(folder.iterdir())
        except OSError:
            return []
        return [d for d in found if pattern.fullmatch(d.name) and d.is_dir() and not d.is_symlink()]


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it: not ours to remove
