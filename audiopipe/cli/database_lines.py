"""What `audiopipe status --database` prints: the database (never its password), the workers alive, then
what any ledger's status shows, each campaign with what only a shared database knows (stopped and why,
its pace and any pause, its prepares and queued jobs), and what to do next.

Text only (the command prints it through ``console.say``, which escapes it); what it reads is
:class:`~audiopipe.campaign.pg.progress.DatabaseStatus`.
"""

from __future__ import annotations

import time

from audiopipe.campaign.pg.overview import CampaignOverview
from audiopipe.campaign.pg.progress import DatabaseStatus
from audiopipe.campaign.pg.workers import WorkerInfo
from audiopipe.cli.status_lines import body_lines

PREPARE_STATES = ("ready", "preparing", "pending", "failed")


def database_status_lines(status: DatabaseStatus, verbose: bool = False) -> list[str]:
    ledger, overview = status.ledger, status.overview
    out = [f"database {status.where}" + (f" (id {ledger.ledger_id[:8]})" if ledger.ledger_id else "")
           + (f", campaign {ledger.campaign!r}" if ledger.campaign else "")]
    out += worker_lines(overview.workers)
    out += body_lines(ledger, verbose, about=lambda name: campaign_about(overview.campaigns.get(name)))
    return out + [f"next: {step}" for step in status.next_steps()]


def worker_lines(workers: list[WorkerInfo]) -> list[str]:
    if not workers:
        return ["  no worker alive"]
    lines = [f"  {len(workers)} worker(s) alive:"]
    lines += [f"    {w.host} pid {w.pid} (worker {w.id}), last sign of life {w.silent_for:.0f} s ago"
              for w in workers]
    return lines


def campaign_about(c: CampaignOverview | None) -> list[str]:
    """The lines under a campaign's counts: stopped, pace and pause, prepares, queued jobs."""
    if c is None:
        return []
    lines = []
    if c.stopped:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.stopped_at or 0))
        lines.append(f"STOPPED since {when}: {c.stopped_why}")
    pace = f"pace {c.per_second:g}/s shared by every worker" if c.per_second else "no pace set (as fast as allowed)"
    if c.paused_for > 0:
        pace += f"; paused {c.paused_for:.1f} s more after a 429"
    if c.pauses:
        pace += f" ({c.pauses} pause(s) after a 429 so far)"
    lines.append(pace)
    if c.prepares:
        shown = [f"{c.prepares[s]} {s}" for s in PREPARE_STATES if c.prepares.get(s)]
        shown += [f"{n} {s}" for s, n in sorted(c.prepares.items()) if s not in PREPARE_STATES and n]
        lines.append("recordings: " + ", ".join(shown))
    if c.jobs:
        lines.append(f"jobs queued: {c.jobs.get('todo', 0)} waiting, {c.jobs.get('doing', 0)} running")
    if c.tries_used:
        lines.append(f"{c.tries_used} deferred with all {c.attempts} tries used: waiting for a person")
    return lines
