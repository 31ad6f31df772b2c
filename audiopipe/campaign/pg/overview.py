"""What a shared database says beyond the rows of the ledger: per campaign, whether it is stopped (and
why), its pace and any pause a 429 imposed, its prepare jobs by state and its queued send tokens; and
which workers are alive. Read only, for ``audiopipe status --database``.

The prepares and the job queue are read only when their tables are there (a database migrated by an
audiopipe without the distributed planner has neither), so this module works on any schema that
:func:`audiopipe.campaign.pg.schema.check` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from audiopipe.campaign.pg.campaigns import DEFAULT_ATTEMPTS, CampaignSettings
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.jobs import queue_of
from audiopipe.campaign.pg.schema import has_table, versions
from audiopipe.campaign.pg.workers import WorkerInfo, alive

_CAMPAIGNS = """
SELECT c.campaign, extract(epoch FROM c.stopped_at)::float8 AS stopped_at, c.stopped_why, c.settings,
       r.interval_s, CASE WHEN r.paused_until > clock_timestamp()
                          THEN extract(epoch FROM r.paused_until - clock_timestamp())::float8 ELSE 0 END AS paused_for,
       coalesce(r.pauses, 0) AS pauses
  FROM campaigns c LEFT JOIN rate_limits r ON r.name = c.campaign
 WHERE %(campaign)s::text IS NULL OR c.campaign = %(campaign)s
 ORDER BY c.campaign"""

# A prepare serves a campaign when one of its targets names it (one recording, one recipe).
_PREPARES = """
SELECT t.campaign, p.state, count(DISTINCT (p.source_sha256, p.recipe)) AS n
  FROM targets t JOIN prepares p ON p.source_sha256 = t.source_sha256 AND p.recipe = t.recipe
 WHERE %(campaign)s::text IS NULL OR t.campaign = %(campaign)s
 GROUP BY t.campaign, p.state"""

# Deferred sends whose tries are used up get no new token: they wait for a person (or a new plan).
_TRIES_USED = """
SELECT s.campaign, count(*) AS n FROM sends s JOIN campaigns c ON c.campaign = s.campaign
 WHERE s.state = 'deferred' AND s.attempts >= coalesce((c.settings->>'attempts')::integer, %(default)s)
   AND (%(campaign)s::text IS NULL OR s.campaign = %(campaign)s)
 GROUP BY s.campaign"""

_JOBS = """
SELECT queue_name, task_name, status, count(*) AS n FROM procrastinate_jobs
 WHERE status IN ('todo', 'doing') GROUP BY queue_name, task_name, status"""


@dataclass
class CampaignOverview:
    """One campaign as the database sees it, beyond its rows."""

    name: str
    stopped_at: float | None = None        # seconds since the epoch, when a 401 (or a person) stopped it
    stopped_why: str | None = None
    per_second: float | None = None        # its shared pace (None: no pace set, or no limit)
    paused_for: float = 0.0                # seconds left of a pause a 429 imposed on every worker
    pauses: int = 0                        # 429 pauses so far
    prepares: dict[str, int] = field(default_factory=dict)  # prepare jobs by state (empty: none, or no table)
    jobs: dict[str, int] = field(default_factory=dict)      # queued jobs of its queue: "todo"/"doing" counts
    attempts: int = DEFAULT_ATTEMPTS       # tries per send before a deferred one waits for a person
    tries_used: int = 0                    # deferred sends that have had them all
    store: str | None = None               # where its prepared files are (a path, never a secret)

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def to_json(self) -> dict[str, Any]:
        return {"stopped": self.stopped, "stopped_at": self.stopped_at, "stopped_why": self.stopped_why,
                "rate": self.per_second, "paused_for": round(self.paused_for, 3), "pauses": self.pauses,
                "prepares": self.prepares, "jobs": self.jobs, "attempts": self.attempts,
                "tries_used": self.tries_used, "store": self.store}


@dataclass
class Overview:
    """The database's schema versions, its campaigns and the workers alive now."""

    versions: dict[str, str]
    campaigns: dict[str, CampaignOverview]
    workers: list[WorkerInfo]
    has_prepares: bool

    @property
    def stopped(self) -> list[CampaignOverview]:
        return [c for c in self.campaigns.values() if c.stopped]


def read_overview(conn: Connection, campaign: str | None, *, lease: float) -> Overview:
    """What the database says beyond the rows, for ``campaign`` (None: every campaign)."""
    with conn.cursor(row_factory=dict_row) as cur:
        found = {r["campaign"]: _campaign(r) for r in cur.execute(_CAMPAIGNS, {"campaign": campaign}).fetchall()}
        for r in cur.execute(_TRIES_USED, {"campaign": campaign, "default": DEFAULT_ATTEMPTS}).fetchall():
            if r["campaign"] in found:
                found[r["campaign"]].tries_used = int(r["n"])
        has_prepares = has_table(conn, "prepares") and has_table(conn, "targets")
        if has_prepares:
            for r in cur.execute(_PREPARES, {"campaign": campaign}).fetchall():
                if r["campaign"] in found:
                    found[r["campaign"]].prepares[r["state"]] = int(r["n"])
        if has_table(conn, "procrastinate_jobs"):
            by_queue = {queue_of(name): one for name, one in found.items()}
            for r in cur.execute(_JOBS).fetchall():
                one = by_queue.get(r["queue_name"])
                if one is not None:
                    one.jobs[r["status"]] = one.jobs.get(r["status"], 0) + int(r["n"])
    return Overview(versions(conn), found, alive(conn, lease), has_prepares)


def known_campaigns(conn: Connection) -> list[str]:
    """Every campaign the database has (planned, sent, or only stopped), by name."""
    return [str(r[0]) for r in conn.execute("SELECT campaign FROM campaigns ORDER BY campaign").fetchall()]


def _campaign(r: dict[str, Any]) -> CampaignOverview:
    settings = CampaignSettings.from_json(r["settings"])
    per_second = 1.0 / r["interval_s"] if r["interval_s"] else settings.rate
    return CampaignOverview(r["campaign"], r["stopped_at"], r["stopped_why"], per_second,
                            float(r["paused_for"] or 0.0), int(r["pauses"]), attempts=settings.attempts,
                            store=settings.store)
