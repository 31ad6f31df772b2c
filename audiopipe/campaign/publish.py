"""The embedded batch's URL sends: each prepared part put into the store once, its URL made per send.

With ``--send-by url`` the batch puts a prepared part into ``--store`` the first time one of its
sends goes out (a rerun that sends nothing puts nothing), then every send of it gives the API the
part's URL instead of its bytes (see :mod:`audiopipe.send.by_url`). The URL is made just before each
request, so a presigned one is valid ``--url-ttl`` from its own send. Sender threads share one
:class:`UrlPublisher`; the first to need a part puts it, the others wait for that put.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from audiopipe.send.by_url import SendMode, file_url
from audiopipe.store.base import Store, StoreError


@dataclass(frozen=True)
class Published:
    """A part ready to be sent by URL: its key in the store (what the ledger and the report record)
    and the URL of this one send (never recorded, never shown whole)."""

    key: str
    url: str


class UrlPublisher:
    """Puts prepared parts into ``store`` once each and gives the URL of one send of them."""

    def __init__(self, store: Store, mode: SendMode) -> None:
        self.store = store
        self.mode = mode
        self._keys: dict[str, str] = {}   # prepared sha256 -> its key in the store
        self._lock = threading.Lock()
        self.puts = 0                      # parts this batch put into the store (for tests and -v)

    def publish(self, path: Path, sha256: str | None = None) -> Published:
        """The key and URL of the part at ``path`` (content ``sha256``), put into the store first if
        this batch has not yet. StoreError when it cannot be put or the store gives no URL."""
        with self._lock:
            key = self._keys.get(sha256 or str(path))
            if key is None:
                stored = self.store.put(path, suffix=path.suffix.lower())
                if sha256 is not None and stored.sha256 != sha256:
                    raise StoreError(f"{path.name} changed after it was prepared: not sent")
                self._keys[sha256 or str(path)] = key = stored.key
                self.puts += 1
        return Published(key, file_url(self.store, key, self.mode))
