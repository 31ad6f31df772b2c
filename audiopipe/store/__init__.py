"""Where prepared files live so that every worker can read them: a content-addressed store.

A campaign spread over many machines needs its source recordings and their prepared parts where any
worker can fetch them. The store names each file by its content (``<sha256><suffix>``), so putting
the same bytes twice is one file, a key never points at different bytes, and a worker that fetched a
key has exactly what the planner put. :class:`Store` is the small interface every kind of store keeps;
:class:`DirectoryStore` is the first kind (a folder, possibly on a shared filesystem); object storage
(``s3://``) comes next behind the same interface. :func:`open_store` turns a spec (what a campaign's
settings record, never a secret) into a store.
"""

from __future__ import annotations

from audiopipe.store.base import BadKey, Store, StoredFile, StoreError, check_key, make_key
from audiopipe.store.directory import DirectoryStore
from audiopipe.store.opening import open_store

__all__ = ["BadKey", "DirectoryStore", "Store", "StoreError", "StoredFile", "check_key", "make_key", "open_store"]
