"""What every job body of a worker receives: the ledger, the stop signal, the stores, the API client.

One :class:`WorkerContext` per worker process, shared by its job threads (procrastinate runs each
synchronous job in a thread of the event loop's executor). The API settings come from the worker's own
environment (``LANCEPILOT_BASE_URL``, ``LANCEPILOT_TOKEN`` or ``LANCEPILOT_TOKEN_FILE``), as for
``audiopipe send``: a token is never stored in the database, so every machine holds its own. Each thread
gets its own HTTP session (a ``requests`` session is not meant to be shared between threads).
Campaign settings are read from the database and kept for a few seconds: a person changing them (a
rerun of the planner) is seen by every worker soon, without a query per send.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from audiopipe.campaign.pg.campaigns import CampaignSettings, load_settings
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.send.client import LancepilotClient
from audiopipe.store import Store, StoreError, open_store

SETTINGS_TTL = 5.0  # seconds a campaign's settings are kept before being read again


@dataclass(frozen=True)
class ApiSettings:
    """How this worker reaches the API: ``base_url`` None means ``LANCEPILOT_BASE_URL`` (else the real
    API); the token is read by the client (``LANCEPILOT_TOKEN``, ``LANCEPILOT_TOKEN_FILE``, or
    ``token_file``), never kept here."""

    base_url: str | None = None
    token_file: str | Path | None = None
    read_timeout: float = 120.0

    def client(self) -> LancepilotClient:
        """A new client (its own session); UsageError at once for a missing token or a bad URL."""
        return LancepilotClient(base_url=self.base_url, token_file=self.token_file, read_timeout=self.read_timeout)


@dataclass
class WorkerContext:
    """The shared state of one worker's jobs. ``store_override``: a store spec that replaces every
    campaign's own (a machine that mounts the shared folder elsewhere)."""

    ledger: PgLedger
    stop: threading.Event = field(default_factory=threading.Event)
    api: ApiSettings = field(default_factory=ApiSettings)
    store_override: str | None = None
    _stores: dict[str, Store] = field(default_factory=dict, repr=False)
    _settings: dict[str, tuple[float, CampaignSettings]] = field(default_factory=dict, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _clients: list[LancepilotClient] = field(default_factory=list, repr=False)
    tally: Counter[str] = field(default_factory=Counter)   # how this worker's jobs ended, for its summary

    def note(self, what: str) -> None:
        with self._lock:
            self.tally[what] += 1

    def store(self, spec: str | None) -> Store:
        """The store ``spec`` names (opened once per spec), or the override this worker was given."""
        spec = self.store_override or spec
        if not spec:
            raise StoreError("the campaign names no store: plan it with --store DIR")
        with self._lock:
            if spec not in self._stores:
                self._stores[spec] = open_store(spec)
            return self._stores[spec]

    def campaign_settings(self, campaign: str) -> CampaignSettings:
        """``campaign``'s settings, read at most every few seconds; its pace row is kept in step with them."""
        now = time.monotonic()
        with self._lock:
            cached = self._settings.get(campaign)
        if cached is not None and now - cached[0] < SETTINGS_TTL:
            return cached[1]
        settings = self.ledger.db.run(lambda conn: load_settings(conn, campaign), doing="read the campaign")
        if cached is None or cached[1].rate != settings.rate:
            self.ledger.set_pace(campaign, settings.rate)
        with self._lock:
            self._settings[campaign] = (now, settings)
        return settings

    def client(self) -> LancepilotClient:
        """This thread's API client (made on first use, closed by :meth:`close`)."""
        client: LancepilotClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.api.client()
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every thread's client (the ledger is its owner's to close)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
