"""A store in a folder: a local disk for one machine, or a shared filesystem (NFS, CephFS...) that
every worker mounts at the same path.

Files are kept as ``<root>/<first 2 hex digits>/<key>`` (sharded, so no folder holds a million
names). A put is atomic and durable: the content is copied to a temp file in the destination folder
while being hashed, fsynced, renamed onto its key and the folder fsynced; a reader sees the whole file
or none. The content decides the key, so two workers putting the same bytes at once both rename a
complete copy onto the same name and either wins: the result is the same file. A put of content
already there copies nothing.

Named values live in ``<root>/manifests/<name>``: written to a temp file, fsynced, then hard-linked
onto the name, which fails when the name exists: the first writer wins, atomically, and a reader sees
a whole value or none.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from audiopipe.errors import os_reason
from audiopipe.files import fsync_dir
from audiopipe.scratch import discard, part_path
from audiopipe.store.base import (
    MAX_NAMED_SIZE,
    NAMED_SPACE,
    StoredFile,
    StoreError,
    check_key,
    check_name,
    check_named_value,
    make_key,
)

_CHUNK = 1 << 20


def hash_file(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class DirectoryStore:
    """A content-addressed store in the folder ``root`` (created on the first put)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def path_of(self, key: str) -> Path:
        key = check_key(key)
        return self.root / key[:2] / key

    def put(self, path: Path, *, suffix: str) -> StoredFile:
        try:
            sha, size = hash_file(path)
            stored = StoredFile(make_key(sha, suffix), sha, size)
            dest = self.path_of(stored.key)
            if dest.is_file() and dest.stat().st_size == size:
                return stored  # content-addressed: the same bytes are there already
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._copy_in(path, dest, sha)
        except OSError as exc:
            raise StoreError(f"cannot put {path.name} into the store {self.describe()}: {os_reason(exc)}") from None
        return stored

    def _copy_in(self, source: Path, dest: Path, sha: str) -> None:
        """Copy ``source`` to ``dest`` through a temp file beside it, checking the bytes copied are
        the bytes hashed (the source changing meanwhile must not store wrong content under a key)."""
        tmp = part_path(dest)
        try:
            digest = hashlib.sha256()
            with open(source, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha:
                raise StoreError(f"{source.name} changed while it was put into the store {self.describe()}")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            discard(tmp)
        fsync_dir(dest.parent)

    def open_local(self, key: str) -> Path:
        path = self.path_of(key)
        if not path.is_file():
            raise StoreError(f"the store {self.describe()} has no file {key}")
        return path

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def url(self, key: str, *, ttl: float | None = None) -> str | None:
        check_key(key)
        return None

    def describe(self) -> str:
        return str(self.root)

    def named_path(self, name: str) -> Path:
        return self.root / NAMED_SPACE / check_name(name)

    def put_named(self, name: str, data: bytes) -> bool:
        dest = self.named_path(name)
        check_named_value(name, data)
        try:
            if dest.is_file():
                return False
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = part_path(dest)
            try:
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o444)
                os.link(tmp, dest)  # unlike a rename, refuses a name that exists: the first writer wins
            except FileExistsError:
                return False
            finally:
                discard(tmp)
            fsync_dir(dest.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {NAMED_SPACE}/{name[:12]}… in the store {self.describe()}: "
                             f"{os_reason(exc)}") from None
        return True

    def get_named(self, name: str) -> bytes | None:
        path = self.named_path(name)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_NAMED_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {NAMED_SPACE}/{name[:12]}… in the store {self.describe()}: "
                             f"{os_reason(exc)}") from None
        return check_named_value(name, data)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"
