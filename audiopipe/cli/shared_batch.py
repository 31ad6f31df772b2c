"""``audiopipe batch --database``: a campaign on the shared database instead of the embedded SQLite ledger.

The planner (:func:`audiopipe.distributed.planner.plan_campaign`) records the campaign, its recordings
(put into the ``--store``) and their prepare jobs in one transaction. ``--plan-only`` stops there (a cron
planner, with workers elsewhere). Otherwise this process then works on the campaign's own queue like a
worker until the campaign is idle, and reports from the ledger's rows with the embedded batch's own
summary, report and exit codes: the rows are the truth, whichever worker sent them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from audiopipe.cli.console import say
from audiopipe.cli.database import database_ledger, database_option, store_option
from audiopipe.cli.options import bundle
from audiopipe.errors import UsageError

if TYPE_CHECKING:
    from audiopipe.campaign.batch import BatchResult, BatchSettings
    from audiopipe.campaign.pg import PgLedger
    from audiopipe.cli.commands.batch import BatchEnding
    from audiopipe.cli.exits import ExitCode
    from audiopipe.cli.options import ClientOptions, Output
    from audiopipe.distributed.planner import PlanSummary

# Embedded-only flags: with a shared database, a person settles rows with resolve, a plan never runs dry.
EMBEDDED_ONLY = {
    "dry_run": "--dry-run (plan with --plan-only, then read `audiopipe status --database`)",
    "new_ledger": "--new-ledger (the shared database is the one ledger)",
    "retry_unknown": "--retry-unknown (settle them with `audiopipe resolve --database ... --not-delivered`)",
    "retry_failed": "--retry-failed (settle them with `audiopipe resolve --database ...`)",
}


@dataclass(frozen=True)
class SharedOptions:
    """``--database``, ``--store`` and ``--plan-only``: the batch of a shared database."""

    database: str | None
    store: str | None
    plan_only: bool


shared_options = bundle(
    "shared", SharedOptions,
    database_option,
    store_option,
    click.option("--plan-only", is_flag=True,
                 help="With --database: record the plan and its jobs, then return (exit 0); workers anywhere "
                      "(`audiopipe worker`) carry it out. For a planner run by cron."),
)
"""``--database``, ``--store`` and ``--plan-only``, as ``shared``."""


def refuse_embedded_only(**given: Any) -> None:
    """One line for a flag that means nothing with a shared database, naming what to do instead."""
    for name, said in EMBEDDED_ONLY.items():
        if given.get(name):
            raise UsageError(f"{said.split(' ', 1)[0]} is for the embedded ledger, not with --database: "
                             f"instead of {said}")


@dataclass(frozen=True)
class Planned:
    summary: PlanSummary
    started: float   # the database's clock before the plan: rows sent before it were sent by earlier runs


def run_shared_batch(url: str, shared: SharedOptions, settings: BatchSettings, *, client: ClientOptions,
                     output: Output, ending: BatchEnding, stage: Callable[[str], None]) -> ExitCode:
    """Plan; unless --plan-only, work on the campaign's queue until it is idle, then end as the embedded
    batch does (``ending``: the report and the summary). Returns the exit code."""
    from audiopipe.campaign.pg.jobs import queue_of
    from audiopipe.cli.exits import ExitCode, batch_exit_code

    if not shared.plan_only:  # this process prepares and sends too: what it needs is checked first
        _check_first(settings, client)
    stage("planning")
    planned = plan(url, shared, settings, as_json=output.as_json)
    if shared.plan_only:
        return ExitCode.OK
    from audiopipe.distributed.worker import run_worker  # the prepare and send jobs, as any worker runs them

    stage("sending")
    worked = run_worker(url, concurrency=settings.concurrency, until_idle=True, queues=[queue_of(settings.campaign)])
    result = report_after_work(url, planned)
    interrupted = worked.stopped != "idle"  # a signal: the sends in flight were recorded, workers go on
    ending.finish(result, interrupted=interrupted)
    if interrupted:
        say("audiopipe: interrupted while sending: the sends in flight are recorded; the campaign goes on with "
            "the workers of the database, or run the same command again", err=True)
        return ExitCode.TERMINATED
    return batch_exit_code(result)


def _check_first(settings: BatchSettings, client: ClientOptions) -> None:
    """ffmpeg and the encoder, and the token (one request that cannot create a message), before planning."""
    from audiopipe.campaign.contacts import read_contacts
    from audiopipe.cli.doctor import require_tools
    from audiopipe.cli.preflight import check_token

    require_tools(settings.prepare.format)
    if client.no_preflight:
        return
    contacts = read_contacts(settings.contacts, settings.folder, default_workspace=settings.workspace)
    if contacts.rows:
        with client.client() as api:
            check_token(api, contacts.rows[0].workspace, contacts.rows[0].contact)


def plan(url: str, shared: SharedOptions, settings: BatchSettings, *, as_json: bool) -> Planned:
    """Record the plan (its jobs with it) and say what it holds."""
    from audiopipe.distributed.planner import plan_campaign
    from audiopipe.send.by_url import check_url_mode
    from audiopipe.store import open_store

    if not shared.store:
        raise UsageError("give --store DIR (or AUDIOPIPE_STORE): the folder every worker reads the prepared "
                         "files from, at the same path on every machine")
    store = open_store(shared.store)
    check_url_mode(store, settings.send)  # by URL: the store gives URLs for that long, before anything is planned
    with database_ledger(url, create=True) as ledger:
        started = ledger.db.run(_clock, doing="read the clock")
        summary = plan_campaign(ledger, store, settings)
    if as_json and shared.plan_only:
        click.echo(json.dumps(dict(summary.to_dict(), database=ledger.location)))
    else:
        for line in plan_lines(summary, ledger.location):
            say(line, err=not shared.plan_only)
    return Planned(summary, started)


def _clock(conn: Any) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    return float(row[0])


def plan_lines(s: PlanSummary, where: str) -> list[str]:
    lines = [f"planned campaign {s.campaign!r} in {where}: {s.targets} message(s) of {s.sources} recording(s) "
             f"({s.new_targets} new); {s.prepares_deferred} recording(s) to prepare, {s.sends_ready} send(s) "
             f"ready now; files in {s.store}"]
    lines += [f"invalid: {why}" for why in s.invalid]
    lines += [f"failed: {why} (skipped for every contact)" for why in s.refused]
    if s.waiting:
        lines.append(f"{len(s.waiting)} file(s) still arriving were left for the next plan: " + ", ".join(s.waiting))
    return lines


def result_from_rows(ledger: PgLedger, summary: PlanSummary, started: float) -> BatchResult:
    """The campaign as the embedded batch reports it, from the ledger's rows: a row sent before this
    run is ``already_sent``, pending or deferred ``not_sent`` (workers send it), behind an unknown or
    refused part ``blocked``; the plan's invalid contacts rows are ``invalid``."""
    from audiopipe.campaign.batch import BatchResult
    from audiopipe.campaign.results import ReportStatus, RowResult

    campaign = summary.campaign
    blocked = {row.key: (part, state) for row, part, state in ledger.blocked(campaign, running=False)}
    rows = []
    for r in ledger.rows(campaign):
        status = _status(r.state, r.updated_at < started, r.key in blocked)
        error = r.error if r.key not in blocked else f"waiting behind part {blocked[r.key][0]} ({blocked[r.key][1]})"
        rows.append(RowResult(None, r.key.contact, r.key.workspace, r.file, r.key.part, r.parts, status,
                              r.message_id, error, sent_by=r.sent_by,
                              object_key=r.stored if r.sent_by == "url" else None))
    for why in summary.invalid:
        line = re.match(r"line (\d+): (.*)", why)
        rows.append(RowResult(int(line[1]) if line else None, "", "", "", None, None, ReportStatus.INVALID,
                              error=line[2] if line else why))
    return BatchResult(campaign, rows, unique_files=summary.sources, stopped=ledger.stopped(campaign))


def _status(state: str, before: bool, blocked: bool) -> Any:
    from audiopipe.campaign.results import ReportStatus

    if blocked:
        return ReportStatus.BLOCKED
    return {"sent": ReportStatus.ALREADY if before else ReportStatus.SENT, "failed": ReportStatus.FAILED,
            "unknown": ReportStatus.UNKNOWN, "sending": ReportStatus.UNKNOWN}.get(state, ReportStatus.NOT_SENT)


def report_after_work(url: str, planned: Planned) -> BatchResult:
    with database_ledger(url, create=False) as ledger:
        return result_from_rows(ledger, planned.summary, planned.started)
