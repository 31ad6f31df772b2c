"""``audiopipe batch``: every recording in a folder to the contacts in a CSV, each message exactly once.

The command checks what it can before the work (the report's path, ffmpeg, the token), runs
:func:`~audiopipe.campaign.batch.run_batch` with the progress bars, and ends the same way whether the
run finished or was interrupted (:class:`BatchEnding`): what was cut, the report, the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from audiopipe.cli.bars import BatchBars
from audiopipe.cli.console import bars_enabled, say
from audiopipe.cli.database import database_chosen, state_typed
from audiopipe.cli.doctor import require_tools
from audiopipe.cli.exits import batch_exit_code, exit_with
from audiopipe.cli.failures import Command
from audiopipe.cli.flags import told
from audiopipe.cli.ledger import state_file
from audiopipe.cli.options import (
    ClientOptions,
    Output,
    PrepareOptions,
    bundle,
    client_options,
    output_options,
    prepare_options,
    state_option,
    verbose,
)
from audiopipe.cli.preflight import check_token
from audiopipe.cli.render import name_in, prepare_warnings
from audiopipe.cli.send_by import SendByOptions, send_by_options
from audiopipe.cli.shared_batch import SharedOptions, shared_options
from audiopipe.cli.signals import set_stage, stops_cleanly
from audiopipe.cli.summary import batch_json, batch_lines, interrupted_after
from audiopipe.errors import AudiopipeError, OutputError, UsageError, setting
from audiopipe.preparation.outputs import Protected
from audiopipe.preparation.pipeline import PrepareSettings, check_output_folder, collect_inputs

if TYPE_CHECKING:
    from audiopipe.campaign.batch import BatchResult, BatchSettings
    from audiopipe.campaign.contacts import ContactList


@dataclass(frozen=True)
class BatchOptions:
    """What to send to whom, and how: everything a run of the batch is given but the report, the
    preparing, the API and the output."""

    folder: Path
    contacts_csv: Path
    workspace: str | None
    campaign: str
    state_path: Path | None
    concurrency: int
    rate: float
    jobs: int
    dry_run: bool
    retry_unknown: bool
    retry_failed: bool
    new_ledger: bool
    settle: float
    attempts: int

    def settings(self, prepare: PrepareSettings) -> BatchSettings:
        from audiopipe.campaign.batch import BatchSettings

        return BatchSettings(folder=self.folder, contacts=self.contacts_csv, workspace=self.workspace,
                             campaign=self.campaign, prepare=prepare, jobs=self.jobs, concurrency=self.concurrency,
                             rate=self.rate, dry_run=self.dry_run, retry_unknown=self.retry_unknown,
                             retry_failed=self.retry_failed, settle=self.settle, attempts=self.attempts,
                             new_ledger=self.new_ledger)


@dataclass(frozen=True)
class ReportOptions:
    report_path: Path | None
    overwrite: bool


batch_options = bundle(
    "run", BatchOptions,
    click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path)),
    click.option("--contacts", "contacts_csv", required=True,
                 type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="CSV of contacts: a contact column (contact/contact_id/id), optionally workspace "
                      "and file (file/audio/path, relative to FOLDER). Without a file column every "
                      "audio file in FOLDER goes to every contact."),
    click.option("--workspace", "-w", envvar="LANCEPILOT_WORKSPACE", default=None,
                 help="Workspace UUID for rows without one [env LANCEPILOT_WORKSPACE]."),
    click.option("--campaign", default="default", show_default=True, envvar="AUDIOPIPE_CAMPAIGN",
                 help="Name that scopes 'already sent': the same file goes again under a new campaign "
                      "[env AUDIOPIPE_CAMPAIGN]."),
    state_option,
    click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
                 help="Uploads in flight at once."),
    click.option("--rate", type=click.FloatRange(0), default=10.0, show_default=True,
                 help="Messages per second across all uploads (0: no limit)."),
    click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True,
                 help="Files prepared in parallel."),
    click.option("--dry-run", is_flag=True, help="Prepare and show what would be sent; send nothing."),
    click.option("--retry-unknown", is_flag=True,
                 help="Also resend messages whose outcome is unknown (they may reach the contact twice)."),
    click.option("--retry-failed", is_flag=True,
                 help="Also resend messages the server refused (404/413/422), e.g. once a missing "
                      "contact exists. A changed file is always tried again."),
    click.option("--new-ledger", is_flag=True,
                 help="Start afresh with the ledger at --state although another ledger recorded this "
                      "folder, contacts file and campaign before (or it was lost, emptied or replaced): "
                      "what it has no record of is sent again. Records the new ledger; deletes nothing."),
    click.option("--settle", type=click.FloatRange(0), default=10.0, show_default=True, envvar="AUDIOPIPE_SETTLE",
                 help="Seconds a file must have been left unchanged before it is sent, so a recording "
                      "still being copied in never goes out half-written [env AUDIOPIPE_SETTLE]."),
    click.option("--attempts", type=click.IntRange(1, 20), default=5, show_default=True,
                 help="Tries per message within a run when it was certainly not sent (429, connection "
                      "refused); what is left is sent by the next run."),
)

report_options = bundle(
    "report", ReportOptions,
    click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Write one CSV row per (contact, file, part) with its status. It replaces an "
                      "earlier report, never the contacts CSV, the ledger or a recording."),
    click.option("--overwrite", is_flag=True,
                 help="Let --report replace a file that is not an earlier audiopipe report."),
)


@click.command("batch", cls=Command)
@batch_options
@shared_options
@send_by_options
@report_options
@prepare_options
@client_options
@output_options("Print the summary as JSON on stdout.", "No progress bars.")
@stops_cleanly
def batch_cmd(*, run: BatchOptions, shared: SharedOptions, sending: SendByOptions,
              report: ReportOptions, prepare: PrepareOptions, client: ClientOptions, output: Output) -> None:
    """Send every recording in FOLDER to the contacts in a CSV, each message exactly once.

    \b
    Every send is recorded in a ledger before the request goes out and after the
    answer comes back, so running the same command again (from cron, after a crash)
    sends only what has not been sent. Messages whose outcome is unknown (a timeout
    or server error after the upload) are never resent unless --retry-unknown.

    \b
    The ledger must be the one that recorded this folder, contacts file and
    campaign before (FOLDER/.audiopipe-ledger names it): a missing, emptied,
    replaced or older ledger is refused (exit 2) instead of sending it all
    again. --new-ledger starts afresh on purpose.

    \b
    Examples:
      audiopipe batch recordings/ --contacts contacts.csv -w WORKSPACE_UUID --report report.csv
      audiopipe batch recordings/ --contacts contacts.csv -w WORKSPACE_UUID --dry-run
      audiopipe batch recordings/ --contacts contacts.csv --campaign spring --retry-failed
      # from cron, every 10 minutes:
      */10 * * * * LANCEPILOT_TOKEN_FILE=$HOME/.lancepilot-token audiopipe batch \\
          /srv/recordings --contacts /srv/contacts.csv -w WORKSPACE_UUID --quiet \\
          --report /srv/reports/last.csv >> /var/log/audiopipe.log 2>&1

    Before anything is prepared: ffmpeg and the --format's encoder are looked for, and
    the token is checked with one request that cannot create a message, to the first
    valid row's contact (--no-preflight skips it). A contacts file without one row
    that can be sent is refused.

    \b
    Many machines (--database URL, or AUDIOPIPE_DATABASE_URL; --store DIR): the
    campaign is planned into a shared PostgreSQL database, its recordings put
    into the store (a folder every worker reads at the same path), and workers
    anywhere ('audiopipe worker') prepare each recording once and send its
    messages under one --rate. This process works on the campaign too, until
    nothing of it is left to do, then reports from the database's rows (the
    same summary, --report and exit codes). --plan-only returns once the plan
    is committed: a cron planner. See 'audiopipe status --database'.

    \b
    By URL (--send-by url --store s3://bucket/prefix, or a folder served at
    --public-url): each prepared file is put into the store once and every
    message gives the API its URL (presigned for --url-ttl, 7 days by default),
    not its bytes. The ledger, status and --report record the mode and the
    file's key in the store, never a signed URL. With --database the campaign
    records the mode and every worker follows it.

    \b
      audiopipe batch /srv/recordings --contacts /srv/contacts.csv -w WORKSPACE_UUID \\
          --database postgresql://audiopipe@db.example/audiopipe --store /mnt/audiopipe \\
          --campaign spring --rate 20 --plan-only

    \b
    Exit status: 0 all sent (or already sent; --plan-only: planned); 1 some
    failed or invalid rows; 2 usage; 3 authentication (the run stopped; with
    --database the campaign is stopped for every worker until 'audiopipe
    resume'); 4 some outcomes unknown; 5 some not sent yet (rate limits,
    connection): the next run sends them; 6 another run holds the ledger.
    """
    from audiopipe.campaign.batch import BatchInterrupted, run_batch

    url = database_chosen(shared.database, state_given=state_typed())
    settings = dataclasses.replace(run.settings(prepare.settings()), send=sending.mode(), store=shared.store)
    if url is not None:
        from audiopipe.cli.shared_batch import refuse_embedded_only, run_shared_batch

        refuse_embedded_only(dry_run=run.dry_run, new_ledger=run.new_ledger, retry_unknown=run.retry_unknown,
                             retry_failed=run.retry_failed)
        exit_with(run_shared_batch(url, shared, settings, client=client, output=output,
                                   ending=BatchEnding(run.folder, run.campaign, run.settle, report, output, verbose(),
                                                      protect=_report_protection(run, report, client)),
                                   stage=_batch_stage))
    if shared.plan_only:
        raise UsageError("--plan-only plans into a shared database: give --database URL (or set "
                         "AUDIOPIPE_DATABASE_URL)")
    bars = BatchBars(bars_enabled(output.quiet or output.as_json), on_stage=_batch_stage)
    api = None if run.dry_run else client.client()
    ending = BatchEnding(run.folder, settings.campaign, run.settle, report, output, verbose(),
                         protect=_report_protection(run, report, client))
    require_tools(settings.prepare.format)

    def check_token_first(contacts: ContactList) -> None:
        if api is not None and not client.no_preflight:
            check_token(api, contacts.rows[0].workspace, contacts.rows[0].contact)
    # SIGINT/SIGTERM (Ctrl-C, cron's timeout, systemd) unwind through here (stops_cleanly): sends
    # in flight finish and are recorded, then the ledger is closed
    _batch_stage("preparing")
    try:
        # a dry run reads the ledger when there is one (to say what was already sent) but never makes one
        result = run_batch(settings, sender=api, state_path=run.state_path, progress=bars,
                           preflight=check_token_first)
    except BatchInterrupted as exc:
        bars.close()  # before any line: nothing redraws a bar over or after what follows
        ending.finish(exc.result, interrupted=True)
        set_stage(exc.stage, interrupted_after(exc.stage, exc.result))
        raise
    finally:
        bars.close()
        if api is not None:
            api.close()
    for note in result.notes:
        say(f"audiopipe: warning: {note}", err=True)
    ending.finish(result)
    exit_with(batch_exit_code(result))


def _batch_stage(stage: str) -> None:
    """What an interruption says for each stage of a batch (before the batch can say what it did)."""
    set_stage(stage, "nothing was sent; run the same command again to continue" if stage == "preparing"
              else "sends in flight are recorded first; run the same command again to continue",
              at_once="" if stage == "preparing" else
              "the sends in flight were not recorded: the next run reports them unknown (see 'audiopipe status')")


def _report_protection(run: BatchOptions, report: ReportOptions, client: ClientOptions) -> Protected | None:
    """With --report: the files it must never replace, once it is known that it can be written (found
    out now, not after every message has gone out)."""
    from audiopipe.campaign.report import check_report_path

    path = report.report_path
    if not path:
        return None
    check_output_folder(path.parent, f"cannot write the report {path}")
    protect = _batch_files(run, client.token_file, inputs=os.path.lexists(path))
    try:
        check_report_path(path, protect=protect, overwrite=report.overwrite)
    except OutputError as exc:
        raise UsageError(exc.message(setting), field=exc.field or "report_path") from None
    return protect


def _batch_files(run: BatchOptions, token_file: Path | None, *, inputs: bool) -> Protected:
    """What the report must never replace: the contacts, the ledger (and SQLite's files beside it),
    the token file and, when ``inputs`` (a file is already at the report's path), the recordings."""
    from audiopipe.campaign.ledger import MARKER_NAME, WORK_LOCK_NAME

    state = state_file(run.state_path)
    files: list[tuple[Path, str]] = [(run.contacts_csv, "the contacts CSV")]
    files += [(Path(f"{state}{suffix}"), "the ledger") for suffix in ("", "-wal", "-shm", "-journal")]
    files.append((run.folder / MARKER_NAME, "the note of which ledger sent this folder"))
    files.append((run.folder / WORK_LOCK_NAME, "the lock of the run sending this folder"))
    if token_file is not None:
        files.append((token_file, "the token file"))
    if inputs:
        files += [(item.path, "the recording") for item in collect_inputs([run.folder])]
    return Protected(files)


@dataclass(frozen=True)
class BatchEnding:
    """How a batch ends, whole or interrupted: what was cut (one line a file, however many contacts
    get it), the report, and the summary (or its JSON)."""

    folder: Path
    campaign: str
    settle: float
    report: ReportOptions
    output: Output
    verbose: bool
    protect: Protected | None

    def finish(self, result: BatchResult, *, interrupted: bool = False) -> None:
        from audiopipe.campaign.report import write_report

        for outcome in result.prepared:
            shown = name_in(self.folder, outcome.source)
            for warning in prepare_warnings(outcome.result, shown) if outcome.result else ():
                say(f"audiopipe: warning: {warning}", err=True)
        path = self.report.report_path
        if path:
            try:
                write_report(path, (r.to_dict() for r in result.rows), result.extra_columns,
                             protect=self.protect or (), overwrite=self.report.overwrite)
            except AudiopipeError as exc:
                if not interrupted:
                    raise
                say(f"audiopipe: error: {told(exc)}", err=True)  # the interruption still gets its own line and code
        if self.output.as_json:
            click.echo(json.dumps(batch_json(result, path, interrupted)))
        else:
            for line in batch_lines(result, campaign=self.campaign, settle=self.settle, verbose=self.verbose,
                                    interrupted=interrupted):
                say(line, err=True)
