"""The store (``--store``) as the preparation cache's second tier: what one machine, or one run,
prepared, another reuses without encoding it again.

The local cache (:mod:`audiopipe.preparation.cache`) keys an entry by the input's content hash, the
settings that decide the output and the tools' versions (:func:`~audiopipe.preparation.cache.cache_key`).
After preparing, a batch given a store also records there what it made: each part as a content-addressed
object (the same keys a URL send puts), and a small manifest, itself content-addressed (``<sha256>.json``):
the result as the local cache keeps it, without local paths, and each part's key. The named value
``manifests/<cache key>`` points at that manifest; the first writer's pointer wins, and a second writer's
parts are the same content or harmless extras.

A local miss looks the name up, fetches the manifest and each part, and takes them only when every one
hashes to its key: a part damaged in the store is refused (with a warning) and the work is done again.
Like the local cache, the tier only saves time: a store that cannot be read or written is warned about
once and the work goes on without it.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from audiopipe.store.base import Store, StoreError, check_key
from audiopipe.store.directory import hash_file

log = logging.getLogger(__name__)

SCHEMA = 1
Manifest = dict[str, Any]
_OUTPUT_TAIL = re.compile(r"\.[A-Za-z0-9._-]{1,40}")  # after the stem: ".opus", ".part2of3.ogg"


class DamagedEntry(StoreError):
    """A manifest or part in the store that is not what its key says: refused, never restored."""


class StoreTier:
    """The second tier of the preparation cache, in ``store`` (see the module docstring)."""

    def __init__(self, store: Store, *, record: bool = True) -> None:
        self.store = store
        self.record = record  # False: read only (a dry run restores from the store but writes nothing there)
        self.broken = False  # set on the first failure to reach the store: not tried again
        self.hits = 0        # entries restored from the store (for tests and -v)
        self.recorded = 0    # entries this process recorded there

    def get(self, key: str) -> tuple[Manifest, list[Path]] | None:
        """The manifest (as :func:`~audiopipe.preparation.reuse.restore_files` reads it) and local
        copies of the parts prepared for ``key``, each checked against its hash; None on a miss."""
        if self.broken:
            return None
        try:
            pointer = self.store.get_named(key)
        except StoreError as exc:
            self._give_up(exc)
            return None
        if pointer is None:
            return None
        try:
            found = self._fetch(key, pointer)
        except (StoreError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the store %s holds a prepared entry for this input that cannot be used (%s): "
                        "preparing it again", self.store.describe(), exc)
            return None
        self.hits += 1
        return found

    def _fetch(self, key: str, pointer: bytes) -> tuple[Manifest, list[Path]]:
        manifest_path = self._verified(check_key(pointer.decode("ascii").strip()))
        entry = json.loads(manifest_path.read_text(encoding="utf-8"))
        if entry.get("schema") != SCHEMA or entry.get("key") != key:
            raise DamagedEntry(f"the manifest {manifest_path.name} is not the entry named {key[:12]}…")
        manifest, parts = entry["result"], [check_key(k) for k in entry["parts"]]
        _check_names(manifest, len(parts))
        return manifest, [self._verified(k) for k in parts]

    def _verified(self, key: str) -> Path:
        """A local copy of ``key``'s object that hashes to the key (a folder store's file is read in
        place, so it is checked here, whatever the store checked)."""
        path = self.store.open_local(key)
        sha, _size = hash_file(path)
        if sha != key[:64]:
            raise DamagedEntry(f"{key} does not hold the content its key names (it hashes to {sha[:12]}…)")
        return path

    def put(self, key: str, manifest: Manifest, files: list[Path]) -> None:
        """Record what was prepared for ``key`` (``manifest``: see reuse.shareable; ``files``: its parts)."""
        if self.broken or not self.record:
            return
        try:
            parts = [self.store.put(f, suffix=f.suffix.lower()).key for f in files]
            entry = {"schema": SCHEMA, "key": key, "result": manifest, "parts": parts}
            with tempfile.TemporaryDirectory(prefix="audiopipe-manifest-") as tmp:
                path = Path(tmp) / "manifest.json"
                path.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
                manifest_key = self.store.put(path, suffix=".json").key
            if self.store.put_named(key, manifest_key.encode("ascii")):
                self.recorded += 1
        except (StoreError, OSError) as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if not self.broken:
            self.broken = True
            log.warning("cannot use the store %s as a cache of prepared files (%s); going on without it",
                        self.store.describe(), exc)


def _check_names(manifest: Manifest, parts: int) -> None:
    """A manifest's outputs are the stem and a plain tail (never a path): it came from the store,
    which other machines write, and names files here."""
    stem = manifest["stem"]
    outputs = manifest["outputs"]
    if not isinstance(stem, str) or not stem or not isinstance(outputs, list) or len(outputs) != parts or not parts:
        raise DamagedEntry("the manifest does not list one output per part")
    for output in outputs:
        name = output["path"]
        if not isinstance(name, str) or not name.startswith(stem) or "/" in name or "\0" in name or \
                _OUTPUT_TAIL.fullmatch(name[len(stem):]) is None:
            raise DamagedEntry(f"the manifest names an output {str(name)!r:.60} that is not {stem!r:.40} and a suffix")
