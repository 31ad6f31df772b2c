"""What a PostgreSQL ledger knows, read without changing it: rows, counts, what is left and what is
blocked, where pending sends come from, what a person settled. The same answers, to the same
questions, as the SQLite ledger's (``tests/test_pg_contract.py`` holds both to them).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg.sql import Composed

from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    STATES,
    UNKNOWN,
    BlockedPart,
    LedgerRow,
    SendKey,
)
from audiopipe.campaign.pg.connection import Connection, Database
from audiopipe.campaign.pg.records import KEY_WHERE, ROW_SELECT, key_args, query, row_select, to_row

_BLOCKED = query("""
    WITH first_stuck AS (
        SELECT campaign, workspace, contact, source_sha256, min(part) AS part FROM sends
         WHERE parts > 1 AND state = ANY(%(blockers)s) AND (%(campaign)s::text IS NULL OR campaign = %(campaign)s)
         GROUP BY campaign, workspace, contact, source_sha256)
    SELECT {cols}, b.part AS by_part, x.state AS by_state
      FROM sends s
      JOIN first_stuck b ON s.campaign = b.campaign AND s.workspace = b.workspace AND s.contact = b.contact
                        AND s.source_sha256 = b.source_sha256
      JOIN sends x ON x.campaign = b.campaign AND x.workspace = b.workspace AND x.contact = b.contact
                  AND x.source_sha256 = b.source_sha256 AND x.part = b.part
     WHERE s.part > b.part AND s.state IN (%(pending)s, %(deferred)s)""", cols=row_select("s"))
_BLOCKED_ROWS = query("{blocked} ORDER BY s.campaign, s.contact, s.file, s.part LIMIT %(limit)s", blocked=_BLOCKED)
_BLOCKED_COUNTS = query("SELECT campaign, state, count(*) AS n FROM ({blocked}) b GROUP BY campaign, state",
                        blocked=_BLOCKED)

_SENT_BY = """SELECT campaign, sent_by, count(*) AS n FROM sends
 WHERE sent_by IS NOT NULL AND (%(campaign)s::text IS NULL OR campaign = %(campaign)s) GROUP BY campaign, sent_by"""
_GET = query("SELECT {cols} FROM sends WHERE {key}", cols=ROW_SELECT, key=KEY_WHERE)
_ROWS = query("""
SELECT {cols} FROM sends
 WHERE (%(campaign)s::text IS NULL OR campaign = %(campaign)s)
   AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
   AND (%(workspace)s::text IS NULL OR workspace = %(workspace)s)
   AND (%(contact)s::text IS NULL OR contact = %(contact)s)
   AND (%(file)s::text IS NULL OR file = %(file)s)
   AND (%(part)s::integer IS NULL OR part = %(part)s)
 ORDER BY campaign, updated_at, contact, part
 LIMIT %(limit)s""", cols=ROW_SELECT)
_RESOLUTIONS = query("""
SELECT {cols} FROM sends WHERE resolved IS NOT NULL AND (%(campaign)s::text IS NULL OR campaign = %(campaign)s)
 ORDER BY updated_at DESC LIMIT %(limit)s""", cols=ROW_SELECT)
_TALLY = """
SELECT campaign, state, count(*) AS n, count(resolved) AS resolved FROM sends
 WHERE (%(campaign)s::text IS NULL OR campaign = %(campaign)s) GROUP BY campaign, state"""
_PENDING_BY_WORK = """
SELECT campaign, work, count(*) AS n FROM sends
 WHERE state = %(pending)s AND (%(campaign)s::text IS NULL OR campaign = %(campaign)s)
 GROUP BY campaign, work ORDER BY campaign"""
_NEWEST_PLANS = """
SELECT DISTINCT ON (detail->>'work') detail->>'work' AS work, detail, extract(epoch FROM at)::float8 AS at
  FROM events WHERE state = 'planned' AND detail->>'work' = ANY(%s)
 ORDER BY detail->>'work', id DESC"""


def _blocked_args(campaign: str | None, running: bool, limit: int | None = None) -> dict[str, Any]:
    """Pending or deferred parts of a split recording wait behind an earlier part which no run will
    send on its own: unknown, refused, or (when no run is going) left mid-request by a dead run.
    Behind a deferred part they are not blocked: a worker sends it, then them."""
    blockers = [UNKNOWN, FAILED] if running else [UNKNOWN, FAILED, SENDING]
    return {"blockers": blockers, "campaign": campaign, "pending": PENDING, "deferred": DEFERRED, "limit": limit}


class Reads:
    """The reading half of :class:`audiopipe.campaign.pg.ledger.PgLedger` (a mixin: it needs ``self.db``)."""

    db: Database

    def _dicts(self, sql: str | Composed, args: Any = None) -> list[dict[str, Any]]:
        def work(conn: Connection) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(sql, args).fetchall()
        return self.db.run(work, doing="read the ledger")

    def _one(self, sql: str | Composed, args: Any = None) -> Any:
        found = self._dicts(sql, args)
        return next(iter(found[0].values())) if found else None

    def get(self, key: SendKey) -> LedgerRow | None:
        found = self._dicts(_GET, key_args(key))
        return to_row(found[0]) if found else None

    def rows(self, campaign: str | None = None, states: tuple[str, ...] | None = None, *,
             workspace: str | None = None, contact: str | None = None, file: str | None = None,
             part: int | None = None, limit: int | None = None) -> list[LedgerRow]:
        return [to_row(r) for r in self._dicts(_ROWS, {
            "campaign": campaign, "states": list(states) if states else None, "workspace": workspace,
            "contact": contact, "file": file, "part": part, "limit": limit})]

    def counts(self, campaign: str | None = None) -> dict[str, int]:
        found = {r["state"]: r["n"] for r in self._dicts(
            "SELECT state, count(*) AS n FROM sends WHERE (%(c)s::text IS NULL OR campaign = %(c)s) GROUP BY state",
            {"c": campaign})}
        return {s: int(found.get(s, 0)) for s in STATES}

    def campaigns(self) -> list[str]:
        return [r["campaign"] for r in self._dicts("SELECT DISTINCT campaign FROM sends ORDER BY 1")]

    def tally(self, campaign: str | None = None, *, running: bool = False) -> dict[str, dict[str, int]]:
        """Per campaign: how many sends are in each state, with ``blocked`` taken out of pending and
        deferred, and how many were ``resolved`` by hand (of any state)."""
        out: dict[str, dict[str, int]] = {}
        for r in self._dicts(_TALLY, {"campaign": campaign}):
            counts = out.setdefault(r["campaign"], {**dict.fromkeys(STATES, 0), "blocked": 0, "resolved": 0})
            counts[r["state"]] += int(r["n"])
            counts["resolved"] += int(r["resolved"])
        for r in self._dicts(_BLOCKED_COUNTS, _blocked_args(campaign, running)):
            out[r["campaign"]][r["state"]] -= int(r["n"])
            out[r["campaign"]]["blocked"] += int(r["n"])
        return out

    def sent_by_counts(self, campaign: str | None = None) -> dict[str, dict[str, int]]:
        """Per campaign: how many sends' last request went by upload and how many by URL."""
        out: dict[str, dict[str, int]] = {}
        for r in self._dicts(_SENT_BY, {"campaign": campaign}):
            out.setdefault(r["campaign"], {})[r["sent_by"]] = int(r["n"])
        return out

    def blocked(self, campaign: str | None = None, *, running: bool = False,
                limit: int | None = None) -> list[BlockedPart]:
        """The blocked parts (see _blocked_args): each row, the part it waits behind and that part's state."""
        return [BlockedPart(to_row(r), int(r["by_part"]), r["by_state"])
                for r in self._dicts(_BLOCKED_ROWS, _blocked_args(campaign, running, limit))]

    def pending_sources(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Where the pending rows come from: per campaign and work, how many, and the folder and
        contacts file of the newest plan that recorded them (so the user knows which batch to run again)."""
        found = self._dicts(_PENDING_BY_WORK, {"pending": PENDING, "campaign": campaign})
        plans = {r["work"]: r for r in self._dicts(_NEWEST_PLANS, ([r["work"] for r in found if r["work"]],))}
        return [{"campaign": r["campaign"], "work": r["work"], "pending": int(r["n"]),
                 "folder": plans.get(r["work"], {}).get("detail", {}).get("folder"),
                 "contacts": plans.get(r["work"], {}).get("detail", {}).get("contacts"),
                 "planned_at": plans.get(r["work"], {}).get("at")} for r in found]

    def resolutions(self, campaign: str | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows a person settled, and that no run has touched since, newest first."""
        return [to_row(r) for r in self._dicts(_RESOLUTIONS, {"campaign": campaign, "limit": limit})]

    def tried(self, campaign: str) -> int:
        """How many sends of ``campaign`` were ever attempted (a number that never goes down)."""
        return int(self._one("SELECT count(*) FROM sends WHERE campaign = %s AND attempts > 0", (campaign,)))

    def records(self) -> int:
        """How many records this ledger has ever written (events are only ever added)."""
        return int(self._one("SELECT coalesce(max(id), 0) FROM events"))
