"""From a store spec (what ``--store``, ``AUDIOPIPE_STORE`` and a campaign's settings hold) to a store.

A spec is a folder path today; object storage (``s3://bucket/prefix``) is the next kind. A spec never
holds a secret: credentials come from each worker's environment.
"""

from __future__ import annotations

import re

from audiopipe.store.base import Store, StoreError
from audiopipe.store.directory import DirectoryStore

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_store(spec: str) -> Store:
    """The store ``spec`` names: a path (``file://`` allowed) -> :class:`DirectoryStore`."""
    spec = spec.strip()
    if not spec:
        raise StoreError("no store named: give --store DIR (a folder every worker can read)")
    if spec.startswith("file://"):
        return DirectoryStore(spec[len("file://"):])
    if _SCHEME.match(spec):
        raise StoreError(f"this audiopipe cannot use the store {spec.split('://')[0]}://: give a folder path")
    return DirectoryStore(spec)
