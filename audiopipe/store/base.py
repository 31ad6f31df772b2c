"""The interface every store keeps, and the shape of its keys.

A key is ``<64 lowercase hex digits of the content's SHA-256><suffix>``, where the suffix is empty or
a dot and a few letters or digits (``.opus``, ``.mp3``, ``.wav``). Keys come back from the database,
which a store must not trust to name files: anything else (a slash, ``..``, a NUL) is refused with
:class:`BadKey` before any file is touched.

Besides content, a store keeps a few small *named* values (``put_named``/``get_named``), in their own
namespace (``manifests/``) so they never meet a content key: the preparation cache's pointers from
(source, settings) to what was prepared from them. A name is 64 hex digits (a hash of what it stands
for), checked as strictly as a key; the first writer of a name wins and a second one is harmless (both
derive the value from the same inputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from audiopipe.errors import AudiopipeError

_SUFFIX = re.compile(r"(?:\.[A-Za-z0-9]{1,16})?")
_KEY = re.compile(r"(?P<sha>[0-9a-f]{64})(?P<suffix>" + _SUFFIX.pattern + r")")
_NAME = re.compile(r"[0-9a-f]{64}")
NAMED_SPACE = "manifests"        # where named values live, beside (never among) the content keys
MAX_NAMED_SIZE = 64 << 10        # a named value is a pointer or a small manifest, never a recording


class StoreError(AudiopipeError):
    """A store could not be opened, written or read, in words a user can act on."""


class BadKey(StoreError):
    """A key that is not ``<sha256><suffix>``: never used to name a file."""


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its key, the SHA-256 of its content, and its size in bytes."""

    key: str
    sha256: str
    size: int


def check_key(key: str) -> str:
    """``key`` itself when it is a well-formed key, else BadKey (no path traversal, ever)."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise BadKey(f"not a store key (64 hex digits and a suffix such as .opus): {key!r:.80}")
    return key


def make_key(sha256: str, suffix: str) -> str:
    """The key of content hashed ``sha256`` kept with ``suffix`` (checked like any key)."""
    if _SUFFIX.fullmatch(suffix) is None:
        raise BadKey(f"not a store suffix (a dot and up to 16 letters or digits): {suffix!r:.40}")
    return check_key(sha256.lower() + suffix)


def check_name(name: str) -> str:
    """``name`` itself when it is a well-formed name of a named value (64 hex digits), else BadKey."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise BadKey(f"not a store name (64 lowercase hex digits): {name!r:.80}")
    return name


def check_named_value(name: str, data: bytes) -> bytes:
    """``data`` when it fits a named value (at most MAX_NAMED_SIZE bytes), else StoreError."""
    if len(data) > MAX_NAMED_SIZE:
        raise StoreError(f"the value named {name[:12]}… is {len(data):,} bytes: a named value holds at most "
                         f"{MAX_NAMED_SIZE:,}")
    return data


@runtime_checkable
class Store(Protocol):
    """What the planner, the prepare jobs and the send jobs ask of a store."""

    def put(self, path: Path, *, suffix: str) -> StoredFile:
        """Keep the file at ``path`` under its content's key (a no-op when that content is there)."""
        ...

    def open_local(self, key: str) -> Path:
        """A local path to read the file of ``key`` from (StoreError when it is missing)."""
        ...

    def exists(self, key: str) -> bool:
        ...

    def url(self, key: str, *, ttl: float | None = None) -> str | None:
        """A URL the API could fetch the file from, or None when this store has none.

        ``ttl``: how many seconds a signed URL must stay valid (None: the store's default); a store
        whose URLs never expire (a public base URL) ignores it, one that cannot sign for that long
        raises StoreError naming its maximum."""
        ...

    def describe(self) -> str:
        """The store as messages name it (never a secret)."""
        ...

    def put_named(self, name: str, data: bytes) -> bool:
        """Keep ``data`` under ``name`` in the named space unless a value is there already (the first
        writer wins): True when this call wrote it. BadKey for a bad name."""
        ...

    def get_named(self, name: str) -> bytes | None:
        """The value named ``name``, or None when there is none (StoreError when it cannot be read or
        is larger than a named value may be)."""
        ...
