"""From a store spec (what ``--store``, ``AUDIOPIPE_STORE`` and a campaign's settings hold) to a store.

A spec is a folder path (``file://`` allowed) or object storage, ``s3://bucket/prefix``. A spec never
holds a secret: credentials come from each worker's environment (for S3, the standard AWS
configuration).
"""

from __future__ import annotations

import re

from audiopipe.store.base import Store, StoreError
from audiopipe.store.directory import DirectoryStore

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_store(spec: str, *, public_base: str | None = None) -> Store:
    """The store ``spec`` names: a path -> :class:`DirectoryStore`, ``s3://`` -> ``S3Store``.

    ``public_base``: the public URL an S3 store's prefix is served at (its ``url`` then needs no signature)."""
    spec = spec.strip()
    if not spec:
        raise StoreError("no store named: give --store DIR (a folder every worker can read) or s3://bucket/prefix")
    if spec.lower().startswith("s3://"):
        return _s3(spec, public_base)
    if public_base is not None:
        raise StoreError(f"a public URL base needs an s3:// store, not {spec}")
    if spec.startswith("file://"):
        return DirectoryStore(spec[len("file://"):])
    if _SCHEME.match(spec):
        raise StoreError(f"this audiopipe cannot use the store {spec.split('://')[0]}://: "
                         "give a folder path or s3://bucket/prefix")
    return DirectoryStore(spec)


def _s3(spec: str, public_base: str | None) -> Store:
    try:
        from audiopipe.store.s3 import S3Store
    except ImportError:
        raise StoreError("an s3:// store needs boto3: pip install 'audiopipe[s3]'") from None
    return S3Store.from_spec(spec, public_base=public_base)
