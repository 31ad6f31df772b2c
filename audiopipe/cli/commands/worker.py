"""``audiopipe worker``: one worker of the shared database, for every campaign in it (or some), on any
machine. Thin: the options, :func:`audiopipe.distributed.worker.run_worker`, one line (or ``--json``)
about what it did, and its exit code."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from audiopipe.cli.console import say
from audiopipe.cli.database import REACH_HINT, database_option, scrubbing
from audiopipe.cli.failures import Command
from audiopipe.cli.options import campaign_name, json_option

if TYPE_CHECKING:
    from audiopipe.distributed.worker import WorkerSummary


def _campaigns(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for v in value if (name := campaign_name(ctx, param, v)) is not None)


@click.command("worker", cls=Command)
@database_option
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Jobs at once in this process: uploads in flight, or recordings being prepared.")
@click.option("--until-idle", is_flag=True,
              help="Exit 0 once no campaign has work left (nothing to prepare, nothing to send now or later); "
                   "for tests and cron. Without it the worker waits for new work until stopped.")
@click.option("--campaign", "campaigns", multiple=True, callback=_campaigns,
              help="Only this campaign's jobs (repeat for several; default: every campaign).")
@click.option("--lease", type=click.FloatRange(1.0, 3600.0), default=60.0, show_default=True, metavar="SECONDS",
              help="Seconds without a sign of life after which a worker counts as dead and its uploads in "
                   "flight become unknown (it beats every SECONDS/6). Give every worker of a database the same.")
@json_option("When it exits, print what it did as JSON.")
def worker_cmd(*, database: str | None, concurrency: int, until_idle: bool, campaigns: tuple[str, ...],
               lease: float, as_json: bool) -> None:
    """Prepare recordings and send messages for the campaigns of a shared database.

    \b
    Start any number, on any number of machines: each takes jobs from the
    database's queue (procrastinate; FOR UPDATE SKIP LOCKED), so no two take
    the same one. A recording is prepared once, whichever worker does it; each
    message is claimed in the database before its upload, so it goes out at most
    once. One pace per campaign holds across all workers, a 429 pauses them
    all, a 401 stops the campaign everywhere (see 'audiopipe resume'). The token
    comes from this machine's LANCEPILOT_TOKEN or LANCEPILOT_TOKEN_FILE; the
    prepared files from the store the campaign was planned with, uploaded or
    sent by their URL in it as the campaign was planned (batch --send-by).

    \b
    SIGTERM or Ctrl-C: it takes no new job, lets the uploads in flight finish
    and records them, then exits 0. A second signal exits at once: the uploads
    in flight then become unknown (never resent without a person's word).
    Under systemd: deploy/systemd/audiopipe-worker@.service.

    \b
    Examples:
      audiopipe worker --database postgresql://audiopipe@db.example/audiopipe --concurrency 8
      AUDIOPIPE_DATABASE_URL=postgresql:///audiopipe audiopipe worker --until-idle

    \b
    Exit status: 0 stopped by a signal, or idle with --until-idle; 1 the
    database could not be reached (or was lost for longer than the worker
    waits); 2 no database named, or a schema newer than this audiopipe.
    """
    from audiopipe.campaign.pg import DatabaseUnavailable, database_url
    from audiopipe.campaign.pg.jobs import queue_of
    from audiopipe.distributed.worker import run_worker

    url = database_url(database)
    queues = [queue_of(c) for c in campaigns] or None
    with scrubbing(url):
        try:
            summary = run_worker(url, concurrency=concurrency, until_idle=until_idle, queues=queues, lease=lease)
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"{exc}: {REACH_HINT}") from None
    if as_json:
        click.echo(json.dumps({"worker_id": summary.worker_id, "stopped": summary.stopped, "ends": summary.ends}))
    else:
        say(summary_line(summary), err=True)


WHY = {"signal": "asked to stop", "idle": "no work left", "cancelled": "cancelled"}


def summary_line(summary: WorkerSummary) -> str:
    """What the worker did, in one line: ``worker 1a2b3c stopped (no work left): 3 prepare ready, 12 sent``."""
    ends = ", ".join(f"{n} {what}" for what, n in sorted(summary.ends.items()) if n) or "no job done"
    return f"worker {summary.worker_id} stopped ({WHY.get(summary.stopped, summary.stopped)}): {ends}"
