"""What ``audiopipe status --database`` reports: the ledger's own status (counts, the rows that need a
person, blocked parts, resolutions: :class:`~audiopipe.campaign.status.LedgerStatus`, the same as the
SQLite ledger's) and what only a shared database knows (:mod:`.overview`: stopped campaigns, paces and
pauses, prepares, queued jobs, workers alive), with the verdict and the next steps for many workers.

The verdict, most urgent first: ``stopped`` (a campaign is stopped: nothing of it goes out until a
person resumes it), then the ledger's own (``unknown``, ``failed``, ``left``, ``ok``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audiopipe.campaign.ledger import STATES, RowStatus, TallyKey
from audiopipe.campaign.pg.overview import Overview, read_overview
from audiopipe.campaign.status import LedgerStatus, ledger_status
from audiopipe.errors import UsageError

if TYPE_CHECKING:
    from audiopipe.campaign.pg.ledger import PgLedger

STOPPED = "stopped"
RESOLVE = ("`audiopipe resolve --campaign C --contact ID --file NAME --delivered [--message-id ID]` or "
           "`--not-delivered` (--all-unknown for all), with the same --database")


@dataclass
class DatabaseStatus:
    where: str            # the database, as connection.describe names it (never its password)
    ledger: LedgerStatus
    overview: Overview

    def verdict(self) -> str:
        if self.overview.stopped:
            return STOPPED
        return str(self.ledger.verdict())

    def next_steps(self) -> list[str]:
        """What a person can do about what is left, one line each."""
        t, steps = self.ledger.totals, []
        for c in self.overview.stopped:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.stopped_at or 0))
            steps.append(f"campaign {c.name!r} is stopped since {when} ({c.stopped_why}): no worker sends it; fix "
                         "the cause (a refused token: give the workers one that works, LANCEPILOT_TOKEN or "
                         f"LANCEPILOT_TOKEN_FILE), then `audiopipe resume --campaign {c.name}`")
        unknown = t[RowStatus.UNKNOWN] + self.ledger.interrupted
        if unknown:
            steps.append(f"{unknown} unknown: check whether they arrived (ask the contact, or the Lancepilot "
                         f"dashboard), then {RESOLVE}; nothing resends them on its own")
        if t[TallyKey.BLOCKED]:
            steps.append(f"{t[TallyKey.BLOCKED]} blocked: they go out after the part they wait behind is settled")
        if t[RowStatus.FAILED]:
            steps.append(f"{t[RowStatus.FAILED]} failed: refused by the server, or a recording that could not be "
                         "prepared; fix the cause, then plan the campaign again (`audiopipe batch DIR --contacts "
                         "CSV --database URL --retry-failed --plan-only`)")
        used = sum(c.tries_used for c in self.overview.campaigns.values())
        if used:
            steps.append(f"{used} deferred with every try used: a new plan of the campaign (or `audiopipe resume "
                         "--campaign C`) tries them again")
        steps += self._waiting()
        return steps

    def _waiting(self) -> list[str]:
        """Sends and recordings the workers still have to do (stopped campaigns aside: said above)."""
        going = [name for name in self.ledger.campaigns
                 if not (name in self.overview.campaigns and self.overview.campaigns[name].stopped)]
        left = sum(self.ledger.campaigns[n][s] for n in going
                   for s in (RowStatus.PENDING, RowStatus.DEFERRED, RowStatus.SENDING))
        preparing = sum(c.prepares.get("pending", 0) + c.prepares.get("preparing", 0)
                        for c in self.overview.campaigns.values() if not c.stopped)
        if not (left or preparing):
            return []
        what = ", ".join(([f"{left} send(s) not sent yet"] if left else [])
                         + ([f"{preparing} recording(s) to prepare"] if preparing else []))
        workers = len(self.overview.workers)
        if workers:
            return [f"{what}: the {workers} worker(s) alive are on it"]
        return [f"{what}: no worker is alive; start one (`audiopipe worker`, or the systemd unit "
                "audiopipe-worker@1)"]

    def to_json(self) -> dict[str, Any]:
        out = self.ledger.to_json()
        del out["state"]
        return {"database": self.where, **out, "verdict": self.verdict(), "versions": self.overview.versions,
                "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "silent_for": round(w.silent_for, 3)}
                            for w in self.overview.workers],
                "campaign_info": {name: c.to_json() for name, c in self.overview.campaigns.items()},
                "next": self.next_steps()}


def read_database_status(ledger: PgLedger, campaign: str | None, *, limit: int | None) -> DatabaseStatus:
    """What the shared ledger knows, for ``campaign`` (None: all), changing nothing in it."""
    overview = ledger.db.run(lambda conn: read_overview(conn, campaign, lease=ledger.lease), doing="read the status")
    if campaign is not None and campaign not in overview.campaigns:
        known = ", ".join(repr(c) for c in overview.campaigns) or "none yet"
        raise UsageError(f"the database {ledger.location} has no campaign {campaign!r} (its campaigns: {known})")
    with_rows = campaign is None or campaign in ledger.campaigns()
    status = ledger_status(ledger, ledger.location, campaign, limit=limit) if with_rows \
        else LedgerStatus(ledger.location, ledger.ledger_id, campaign, ledger.running(), {})
    for name in overview.campaigns:  # planned, nothing to send yet (its recordings are being prepared)
        status.campaigns.setdefault(name, {**dict.fromkeys(STATES, 0), TallyKey.BLOCKED: 0, TallyKey.RESOLVED: 0})
    return DatabaseStatus(ledger.location, status, overview)
