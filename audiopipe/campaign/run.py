"""run_batch: a folder of recordings against a contacts CSV, every message sent exactly once.

Around the stages (:mod:`audiopipe.campaign.stages`) this module holds what keeps two runs, or a
wrong ledger, from sending twice: the work lock on the folder (a second run on it exits at once,
whatever its ledger), the ledger's own lock, the check that the ledger is the one that recorded this
work before (see :class:`~audiopipe.campaign.ledger.WorkMarker`), and the note in the folder saying
which ledger records it, written before anything is sent. Ctrl-C or SIGTERM becomes a
:class:`~audiopipe.campaign.results.BatchInterrupted` carrying what was done.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from audiopipe.campaign.contacts import ContactList, read_contacts
from audiopipe.campaign.ledger import (
    Ledger,
    LedgerIdentity,
    MarkerEntry,
    WorkLock,
    WorkMarker,
    check_campaign_case,
    default_state_path,
    open_batch_ledger,
)
from audiopipe.campaign.results import BatchInterrupted, BatchResult, ProgressCallback
from audiopipe.campaign.sender import AudioClient
from audiopipe.campaign.settings import BatchSettings
from audiopipe.campaign.stages import BatchRun, Counters, interrupted_while_preparing, run_stages
from audiopipe.errors import UsageError
from audiopipe.scratch import temp_dir
from audiopipe.send.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Call:
    """What run_batch was given, passed on whole to the steps around the stages."""

    settings: BatchSettings
    client: AudioClient | None
    ledger: Ledger | None
    progress: ProgressCallback | None
    retry: RetryPolicy
    work_dir: Path | None
    state_path: Path | None
    preflight: Callable[[ContactList], None] | None


def run_batch(settings: BatchSettings, *, sender: AudioClient | None, ledger: Ledger | None = None,
              progress: ProgressCallback | None = None, retry: RetryPolicy | None = None,
              work_dir: Path | None = None, state_path: Path | None = None,
              preflight: Callable[[ContactList], None] | None = None) -> BatchResult:
    """Run one batch. ``sender`` is a :class:`~audiopipe.send.client.LancepilotClient` (or anything with
    ``send_once``); it may be None for a dry run. Without ``ledger`` the one at ``state_path`` (or the
    default) is opened. Returns one result per (row, file, part).

    The ledger must be the one that recorded this work before (see :class:`WorkMarker`): a missing,
    emptied, other or older ledger is refused, unless ``settings.new_ledger``.

    ``preflight`` is called with the contacts after every local check (the ledger is ours, there
    are files to prepare) and before anything is prepared: the CLI checks the token there, and what
    it raises ends the run with nothing done."""
    folder = Path(settings.folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    contacts = read_contacts(settings.contacts, folder, default_workspace=settings.workspace)
    if not contacts.rows:  # say so now, not after preparing a folder for nobody
        raise UsageError(no_valid_rows(contacts))
    if sender is None and not settings.dry_run:
        raise UsageError("a sender (API client) is needed unless this is a dry run")
    check_send_mode(settings)
    call = _Call(settings, sender, ledger, progress, retry or RetryPolicy(), Path(work_dir) if work_dir else None,
                 state_path, preflight)
    marker = WorkMarker(folder, settings.contacts, settings.campaign)
    work_lock = WorkLock(marker)
    if not settings.dry_run:
        work_lock.acquire()  # first: a second run on this folder, with any ledger, exits at once
    try:
        return _run_locked(call, contacts, folder, marker)
    finally:
        work_lock.release()


def check_send_mode(settings: BatchSettings) -> None:
    """By URL: a store that gives URLs for the lifetime asked (or --public-url), found out before any work."""
    if settings.send.by_url:
        from audiopipe.send.by_url import check_url_mode
        from audiopipe.store import open_store

        check_url_mode(open_store(settings.store) if settings.store else None, settings.send)


def no_valid_rows(contacts: ContactList) -> str:
    """Why a contacts file gives nothing to send, in one line."""
    bad = contacts.invalid
    if not bad:
        return f"{contacts.path}: no contact rows under the header"
    if all(r.reason.startswith("no workspace") for r in bad):
        return (f"{contacts.path}: no row has a workspace ({len(bad)} row(s), the workspace column empty): "
                "give --workspace or LANCEPILOT_WORKSPACE, or fill the column")
    first = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{contacts.path}: none of its {len(bad)} row(s) can be sent, e.g. line {first.line}: {first.reason}{more}"


def _run_locked(call: _Call, contacts: ContactList, folder: Path, marker: WorkMarker) -> BatchResult:
    settings = call.settings
    expected = marker.expected(tolerant=settings.new_ledger)
    with _ledger_for(call, marker, expected) as ledger:
        if ledger is not None:
            known = getattr(ledger, "campaigns", None)
            if known is not None:
                check_campaign_case(settings.campaign, known())
        identity = _identity(ledger, settings.campaign)
        if not settings.new_ledger:
            marker.check(getattr(ledger, "path", None) or call.state_path or default_state_path(), identity, expected)
        start = _WorkStart(call.preflight, contacts, marker, identity if not settings.dry_run else None)
        try:
            result = _run_in_scratch(call, contacts, folder, ledger, work=marker.work_id, start=start)
        finally:
            if start.marked:
                _record_quietly(marker, ledger, settings.campaign)
        result.notes.extend(start.notes)
        return result


@contextmanager
def _ledger_for(call: _Call, marker: WorkMarker, expected: MarkerEntry | None) -> Iterator[Ledger | None]:
    """The run's ledger (the one given, or the one at the state path), held for a real run: a second
    run exits at once. None for a dry run with no ledger yet (a dry run makes none)."""
    settings = call.settings
    ledger: Ledger | None = call.ledger
    if ledger is None:
        ledger = open_batch_ledger(call.state_path or default_state_path(), marker, expected,
                                   new_ledger=settings.new_ledger, dry_run=settings.dry_run)
    held = ledger if ledger is not None and not settings.dry_run else None
    try:
        if held is not None:
            held.acquire()  # before any work
        yield ledger
    finally:
        if held is not None:
            held.release()
        if call.ledger is None and ledger is not None:
            ledger.close()


@dataclass
class _WorkStart:
    """What happens once every local check passed, just before the first file is prepared: the
    caller's preflight (the CLI checks the token), then, for a real run, the note in the folder of
    which ledger records this work (before anything is sent)."""

    preflight: Callable[[ContactList], None] | None
    contacts: ContactList
    marker: WorkMarker
    identity: LedgerIdentity | None  # None: nothing to note (a dry run, a ledger without an identity)
    notes: list[str] = field(default_factory=list)  # for the user: where the note went, if not beside the files
    marked: bool = False

    def __call__(self) -> None:
        if self.preflight is not None:
            self.preflight(self.contacts)
        if self.identity is not None:
            note = self.marker.record(self.identity)
            self.marked = True
            if note:
                self.notes.append(note)


def _run_in_scratch(call: _Call, contacts: ContactList, folder: Path, ledger: Ledger | None, *, work: str,
                    start: _WorkStart) -> BatchResult:
    """The stages in a scratch folder of this process's own (what a SIGKILL leaves, the next run
    sweeps); Ctrl-C or SIGTERM becomes a BatchInterrupted that says what was done."""
    run: BatchRun | None = None
    result: BatchResult | None = None
    try:
        with temp_dir("batch") as scratch:
            run = BatchRun(call.settings, contacts, folder, ledger, work, call.work_dir or scratch, start,
                           counters=Counters(call.progress))
            result = run_stages(run, call.client, call.retry)
    except BatchInterrupted:
        raise
    except KeyboardInterrupt as exc:
        if result is not None:  # every send was done; stopped while removing the work folder
            raise BatchInterrupted(result, "sending") from exc
        raise BatchInterrupted(interrupted_while_preparing(run, call.settings, contacts, folder),
                               "preparing") from exc
    return result


def _identity(ledger: Ledger | None, campaign: str) -> LedgerIdentity | None:
    """The ledger's id, where it lives, its record count and how many sends of the campaign it tried;
    None for a ledger that has none."""
    identity = getattr(ledger, "identity", None)
    found: LedgerIdentity | None = identity() if identity is not None else None
    tried = getattr(ledger, "tried", None)
    if found is not None and tried is not None:
        found = dataclasses.replace(found, tried=tried(campaign))
    return found


def _record_quietly(marker: WorkMarker, ledger: Ledger | None, campaign: str) -> None:
    """After the run: the count of records grows the marker's 'held at least' (best effort: the note
    made before sending already names the ledger)."""
    try:
        identity = _identity(ledger, campaign)
        if identity is not None:
            marker.record(identity)
    except Exception:  # a ledger or disk that just failed the run: its own error is the one to show
        log.debug("could not update %s", marker.in_folder, exc_info=True)
