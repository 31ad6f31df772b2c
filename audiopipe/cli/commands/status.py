"""``audiopipe status`` (what a ledger says was sent and what is left) and ``audiopipe resolve``
(settle a send whose outcome is unknown, once a person knows whether it arrived)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from audiopipe.cli.console import say
from audiopipe.cli.database import database_chosen, database_ledger, database_option, state_typed
from audiopipe.cli.exits import exit_with, status_exit_code
from audiopipe.cli.failures import Command
from audiopipe.cli.ledger import existing_ledger
from audiopipe.cli.options import bundle, campaign_name, json_option, state_option, verbose
from audiopipe.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from audiopipe.campaign.pg.progress import DatabaseStatus
    from audiopipe.campaign.resolve import Selection
    from audiopipe.campaign.status import LedgerStatus


@click.command("status", cls=Command)
@state_option
@database_option
@click.option("--campaign", default=None, help="Only this campaign (default: all).", callback=campaign_name)
@json_option("Counts per campaign and the rows that need you, as JSON.")
def status_cmd(*, state_path: Path | None, database: str | None, campaign: str | None, as_json: bool) -> None:
    """Show what the ledger knows: what was sent and what is left, per campaign.

    \b
    With --database (or AUDIOPIPE_DATABASE_URL): the shared ledger of many
    workers, and also the workers alive (host, pid, last sign of life), each
    campaign's pace and any pause a 429 imposed, its recordings by prepare
    state and its queued jobs, and the campaigns stopped (by a 401), with why
    and how to resume them. A row 'sending' is in flight on a live worker;
    one left by a dead worker becomes unknown. It reads only: it never
    migrates nor changes the database.

    \b
    States: sent; pending (planned by a batch, never attempted: the next batch
    sends it); deferred (certainly not sent yet, after a 429 or a connection
    failure: the next batch sends it); blocked (a later part of a split
    recording, waiting behind an unknown or refused part); unknown (may have
    been delivered: settle it with 'audiopipe resolve', or resend it with
    batch --retry-unknown); failed (refused by the server); sending (in flight
    now, or left by a run that died: then it is unknown).

    \b
    Examples:
      audiopipe status
      audiopipe status --campaign spring --json
      audiopipe status --state /srv/audiopipe/ledger.sqlite3 || echo "something needs a look"
      audiopipe status --database postgresql://audiopipe@db.example/audiopipe --campaign spring

    \b
    Exit status, the most urgent first: 3 a campaign is stopped (--database);
    4 some unknown; 1 some failed; 5 some not sent yet (pending, deferred,
    blocked or in flight); 0 everything planned was sent. 2: no such ledger,
    database or campaign, or a database whose schema needs `audiopipe db
    migrate`; 1 also when the database cannot be reached.
    """
    from audiopipe.campaign.status import LIST_LIMIT, read_status
    from audiopipe.cli.status_lines import status_lines

    limit = None if as_json else LIST_LIMIT + 1
    url = database_chosen(database, state_given=state_typed())
    if url is not None:
        _database_status(url, campaign, as_json=as_json, limit=limit)
    status = read_status(state_path, campaign, limit=limit)
    _show(status, lambda: status_lines(status, verbose=verbose()), as_json=as_json)


def _database_status(url: str, campaign: str | None, *, as_json: bool, limit: int | None) -> NoReturn:
    from audiopipe.campaign.pg.progress import read_database_status
    from audiopipe.cli.database_lines import database_status_lines

    with database_ledger(url, create=False) as ledger:
        status = read_database_status(ledger, campaign, limit=limit)
    _show(status, lambda: database_status_lines(status, verbose=verbose()), as_json=as_json)


def _show(status: LedgerStatus | DatabaseStatus, lines: Callable[[], list[str]], *, as_json: bool) -> NoReturn:
    """A status (of a SQLite ledger or of the database) as JSON or as its lines, then its exit code."""
    if as_json:
        click.echo(json.dumps(status.to_json()))
    else:
        for line in lines():
            say(line)
    exit_with(status_exit_code(status.verdict()))


def _selection(*, campaign: str | None, workspace: str | None, contact: str | None, file_name: str | None,
               part: int | None, all_unknown: bool) -> Selection:
    from audiopipe.campaign.resolve import Selection

    return Selection(campaign, workspace, contact, file_name, part, all_unknown)


@dataclass(frozen=True)
class Finding:
    """What the person found out: delivered or not (None: not said), with the message id and a note."""

    delivered: bool | None
    message_id: str | None
    note: str | None


@click.command("resolve", cls=Command)
@state_option
@database_option
@bundle(
    "selection", _selection,
    click.option("--campaign", default=None, callback=campaign_name,
                 help="The send's campaign (needed when another campaign has the same one)."),
    click.option("--workspace", default=None,
                 help="The send's workspace UUID (when two workspaces have the same one)."),
    click.option("--contact", default=None, help="The contact UUID, as 'audiopipe status' shows it."),
    click.option("--file", "file_name", default=None, help="The file, as 'audiopipe status' shows it."),
    click.option("--part", type=click.IntRange(1), default=None, help="Which part of a split recording."),
    click.option("--all-unknown", is_flag=True,
                 help="Every unknown send (of --campaign, --contact or --file when given)."),
)
@bundle(
    "finding", Finding,
    click.option("--delivered/--not-delivered", default=None,
                 help="What you found out: it arrived (the next batch skips it), or it did not (the next "
                      "batch sends it)."),
    click.option("--message-id", default=None, help="With --delivered: the message's id, when you know it."),
    click.option("--note", default=None, help="What you checked, kept in the ledger (e.g. 'asked the customer')."),
)
@json_option("Print what was resolved as JSON.")
def resolve_cmd(*, state_path: Path | None, database: str | None, selection: Selection, finding: Finding,
                as_json: bool) -> None:
    """Settle a send whose outcome is unknown, once you know whether it arrived.

    \b
    An upload that got no answer (a timeout, a dropped connection, a 5xx) may or
    may not have created the message, so batch never resends it on its own.
    Check with the customer or on the Lancepilot dashboard, then say what
    happened: --delivered (recorded as sent, with --message-id if you have it;
    the next batch skips it and sends the parts after it) or --not-delivered
    (the next batch sends it). Who and when are kept in the ledger, and
    'audiopipe status' shows them. Only an unknown send can be resolved, and
    not while a batch runs on the ledger. With --database (or
    AUDIOPIPE_DATABASE_URL) it settles a send of the shared ledger while the
    workers run: a send a live worker has in flight is not unknown yet.

    \b
    Examples:
      audiopipe resolve --contact 6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21 \\
          --file talk.wav --part 1 --delivered --message-id 9b2f...
      audiopipe resolve --campaign spring --all-unknown --not-delivered

    \b
    Exit status: 0 resolved (or nothing unknown with --all-unknown); 2 the
    send is not unknown, or is not named clearly; 6 a batch holds the ledger.
    """
    from audiopipe.campaign.resolve import check_selection, resolve_unknown

    delivered = finding.delivered
    if delivered is None:
        raise UsageError("say what you found out: --delivered or --not-delivered")
    selection = check_selection(selection, delivered=delivered, message_id=finding.message_id, note=finding.note)
    url = database_chosen(database, state_given=state_typed())
    opened = database_ledger(url, create=False) if url is not None else \
        existing_ledger(state_path, when_locked="a send is resolved between runs")
    with opened as ledger:
        done = resolve_unknown(ledger, selection, delivered=delivered, message_id=finding.message_id,
                               note=finding.note)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in done]))
        return
    if not done:
        say(f"nothing to resolve: no send is unknown ({selection.describe()})")
    for r in done:
        say(r.line())


@click.command("resume", cls=Command)
@database_option
@click.option("--campaign", required=True, callback=campaign_name, help="The stopped campaign.")
@json_option("Print what was done as JSON.")
def resume_cmd(*, database: str | None, campaign: str, as_json: bool) -> None:
    """Let the workers send a campaign of the shared database again, once the cause of its stop is fixed.

    \b
    A 401 (the token was refused) stops the campaign for every worker at once:
    each request would be refused the same way. 'audiopipe status --database'
    shows the campaigns stopped and why. Give the workers a token that works
    (LANCEPILOT_TOKEN or LANCEPILOT_TOKEN_FILE in their environment, then
    restart them), then resume: the workers claim its sends again within a few
    seconds (their top-up gives it new send tokens). Nothing already sent goes
    out again, and unknown sends stay unknown until resolved.

    \b
    Examples:
      audiopipe resume --campaign spring
      audiopipe resume --campaign spring --database postgresql://audiopipe@db.example/audiopipe

    \b
    A campaign that is not stopped but has sends deferred with every try used
    (status says so): resume gives each of them one more try.

    \b
    Exit status: 0 resumed (or it was not stopped); 2 no such campaign, or
    no database named; 1 the database cannot be reached.
    """
    from audiopipe.campaign.pg.jobs import top_up
    from audiopipe.campaign.pg.overview import known_campaigns
    from audiopipe.campaign.resolve import who

    with database_ledger(database, create=False) as ledger:
        stopped = ledger.stopped(campaign)
        known = ledger.db.run(known_campaigns, doing="list the campaigns")
        if campaign not in known:
            listed = ", ".join(repr(c) for c in known) or "none yet"
            raise UsageError(f"the database {ledger.location} has no campaign {campaign!r} (its campaigns: {listed})")
        resumed = ledger.resume_campaign(campaign, by=who())  # with the tokens its sends need
        tokens = 0 if resumed else ledger.db.run(partial(top_up, campaign=campaign, exhausted_too=True),
                                                 doing="give the campaign's sends their tokens")
    if as_json:
        click.echo(json.dumps({"campaign": campaign, "resumed": resumed, "was_stopped_because": stopped,
                               "tokens_added": tokens}))
    elif resumed:
        say(f"campaign {campaign!r} resumed (it was stopped: {stopped}); the workers send it again, and sends "
            "deferred out of tries get one more")
    else:
        say(f"campaign {campaign!r} was not stopped; " + (f"{tokens} send(s) deferred out of tries (or missing "
            "their token) get one more try" if tokens else "nothing to do"))
