"""The stop flag of a campaign: raised once, seen by every worker's next claim.

A 401 means the token was refused: every request of the campaign would be refused the same way, from
every worker. So the worker that meets it stops the campaign in the database, and no worker claims a
send of it again until a person resumes it (with a token that works). Sends already claimed when the
flag goes up may still go out; that is the only delay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg.types.json import Jsonb

from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import add_event
from audiopipe.send.by_url import DEFAULT_URL_TTL, SendMode

DEFAULT_ATTEMPTS = 5  # as the embedded batch (audiopipe.campaign.settings)


@dataclass(frozen=True)
class CampaignSettings:
    """What every worker of a campaign must agree on, kept in ``campaigns.settings`` (never a secret:
    the API token comes from each worker's environment). ``rate``: sends a second across all workers
    (None: no limit); ``attempts``: tries per send for definite not-sent outcomes (500, 429, network
    errors before the request), after which a row waits for a person; ``store``: the spec of the store
    the campaign's files are in (see :func:`audiopipe.store.open_store`); ``send_by``, ``url_ttl`` and
    ``public_url``: how every worker gives the API a send's file (see :class:`~audiopipe.send.by_url.SendMode`:
    upload, or the file's URL in the store, presigned for ``url_ttl`` seconds or under ``public_url``)."""

    rate: float | None = None
    attempts: int = DEFAULT_ATTEMPTS
    store: str | None = None
    send_by: str = "upload"
    url_ttl: int = DEFAULT_URL_TTL
    public_url: str | None = None

    @property
    def mode(self) -> SendMode:
        return SendMode.from_json({"send_by": self.send_by, "url_ttl": self.url_ttl, "public_url": self.public_url})

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> CampaignSettings:
        data = data or {}
        rate = data.get("rate")
        mode = SendMode.from_json(data)  # a campaign planned before URL sends: upload
        return cls(rate=float(rate) if rate else None, attempts=int(data.get("attempts") or DEFAULT_ATTEMPTS),
                   store=str(data["store"]) if data.get("store") else None, send_by=mode.send_by.value,
                   url_ttl=mode.url_ttl, public_url=mode.public_url)


def save_settings(conn: Connection, campaign: str, settings: CampaignSettings) -> None:
    """Record ``campaign`` with ``settings`` (replacing earlier ones), in the caller's transaction."""
    conn.execute("INSERT INTO campaigns (campaign, settings) VALUES (%s, %s) "
                 "ON CONFLICT (campaign) DO UPDATE SET settings = excluded.settings",
                 (campaign, Jsonb(asdict(settings))))


def load_settings(conn: Connection, campaign: str) -> CampaignSettings:
    """The settings of ``campaign`` (the defaults for a campaign with none recorded)."""
    row = conn.execute("SELECT settings FROM campaigns WHERE campaign = %s", (campaign,)).fetchone()
    return CampaignSettings.from_json(row[0] if row else None)


def stop(conn: Connection, campaign: str, why: str) -> bool:
    """Stop ``campaign`` everywhere; False when it was already stopped (the first reason is kept)."""
    with conn.transaction():
        done = conn.execute(
            "INSERT INTO campaigns AS c (campaign, stopped_at, stopped_why) VALUES (%s, now(), %s) "
            "ON CONFLICT (campaign) DO UPDATE SET stopped_at = now(), stopped_why = excluded.stopped_why "
            "WHERE c.stopped_at IS NULL", (campaign, why)).rowcount == 1
        if done:
            add_event(conn, None, "stopped", {"why": why}, campaign=campaign)
    return done


def resume(conn: Connection, campaign: str, by: str) -> bool:
    """Let workers claim sends of ``campaign`` again, deferring the send tokens its sends need (those
    deferred out of tries get one more try: a person asked for it); False when it was not stopped."""
    from audiopipe.campaign.pg import jobs  # jobs reads this module's defaults: a cycle at import time only

    with conn.transaction():
        done = conn.execute("UPDATE campaigns SET stopped_at = NULL, stopped_why = NULL "
                            "WHERE campaign = %s AND stopped_at IS NOT NULL", (campaign,)).rowcount == 1
        if done:
            add_event(conn, None, "resumed", {"by": by}, campaign=campaign)
            jobs.top_up(conn, campaign, exhausted_too=True)
    return done


def stopped(conn: Connection, campaign: str) -> str | None:
    """Why ``campaign`` is stopped, or None when it is not."""
    row = conn.execute("SELECT stopped_why FROM campaigns WHERE campaign = %s AND stopped_at IS NOT NULL",
                       (campaign,)).fetchone()
    return None if row is None else str(row[0] or "stopped")
