"""The batch: a folder of recordings against a contacts CSV, every message sent exactly once.

Each unique source file is prepared once (in parallel, cached) however many contacts get it. Sends
run ``concurrency`` at a time under one rate limit; a 429 pauses every worker for its Retry-After;
a 401 stops the run (nothing more goes out). Every send goes through the ledger: the whole plan
recorded ``pending`` before the first request, each intent committed before its request and its
result after, so a rerun (cron) never sends twice and never skips one, and `audiopipe status` knows
what a stopped run left.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from audiopipe.campaign.contacts import ContactList, ContactRow, read_contacts
from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    PENDING,
    SENT,
    UNKNOWN,
    Ledger,
    PlannedSend,
    SendKey,
    WorkLock,
    WorkMarker,
    campaign_name,
    check_campaign_case,
    default_state_path,
    open_batch_ledger,
)
from audiopipe.campaign.report import extra_column_name
from audiopipe.campaign.resolve import resolve_hint
from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    InputError,
    OutcomeUnknown,
    RateLimited,
    RefusedError,
    SendError,
    UsageError,
    os_reason,
)
from audiopipe.preparation.cache import file_sha256
from audiopipe.preparation.pipeline import (
    InputItem,
    OutputFile,
    PrepareOutcome,
    PrepareSettings,
    collect_inputs,
    prepare_many,
)
from audiopipe.scratch import temp_dir
from audiopipe.send.client import RetryPolicy, SentMessage

log = logging.getLogger(__name__)

# Row statuses in results and reports.
ST_SENT = "sent"
ST_ALREADY = "already_sent"
ST_FAILED = "failed"
ST_UNKNOWN = "unknown"
ST_INVALID = "invalid"
ST_NOT_SENT = "not_sent"      # definitely not sent this run (429s, connection, stopped): the next run sends it
ST_BLOCKED = "blocked"        # a later part behind an unknown or refused part: no run sends it until that is settled
ST_WOULD_SEND = "would_send"  # --dry-run
STATUSES = (ST_SENT, ST_ALREADY, ST_FAILED, ST_UNKNOWN, ST_INVALID, ST_NOT_SENT, ST_BLOCKED, ST_WOULD_SEND)


class Sender(Protocol):
    """What the batch needs of a client: one request, no retries (the batch paces retries itself)."""

    def send_once(self, workspace: str, contact: str, file_or_url: str | Path, *,
                  filename: str | None = None, content_type: str | None = None) -> SentMessage: ...


@dataclass(frozen=True)
class BatchSettings:
    folder: Path
    contacts: Path
    workspace: str | None = None
    campaign: str = "default"
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    jobs: int = 1                 # files prepared in parallel
    concurrency: int = 4          # sends in flight at once
    rate: float = 10.0            # messages per second across all workers (0: no limit)
    attempts: int = 5             # tries per message within a run, for definite not-sent outcomes
    dry_run: bool = False
    retry_unknown: bool = False
    retry_failed: bool = False    # resend rows the server refused (e.g. a contact added since)
    settle: float = 10.0          # a file changed less than this many seconds ago may still be arriving
    new_ledger: bool = False      # start afresh although another ledger recorded this work before

    def __post_init__(self) -> None:
        object.__setattr__(self, "campaign", campaign_name(self.campaign))  # frozen: set once, here
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.rate < 0:
            raise UsageError("--rate must be 0 (no limit) or more")


@dataclass
class RowResult:
    line: int | None
    contact: str
    workspace: str
    file: str
    part: int | None
    parts: int | None
    status: str
    message_id: str | None = None
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    # what was (or would be) sent: what prepare did, the format, this part's length and the source's
    action: str | None = None           # kept, remuxed, transcoded, trimmed, split
    format: str | None = None
    duration_sent: float | None = None  # seconds
    source_duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # The CSV's own columns are kept; one named like ours ("status", "error"...) becomes csv_status.
        return {**{extra_column_name(k): v for k, v in self.extra.items()}, "line": self.line, "contact": self.contact, "workspace": self.workspace,
                "file": self.file, "part": self.part, "parts": self.parts, "status": self.status,
                "message_id": self.message_id, "error": self.error, "size": self.size,
                "action": self.action, "format": self.format, "duration_sent": _seconds(self.duration_sent),
                "source_duration": _seconds(self.source_duration)}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class BatchResult:
    campaign: str
    rows: list[RowResult]
    extra_columns: tuple[str, ...] = ()
    unique_files: int = 0
    prepared: list[PrepareOutcome] = field(default_factory=list)
    stopped: str | None = None   # why the run stopped early (401)
    recovered: int = 0           # rows found mid-send from a dead run, now unknown
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)  # warnings for the user (where the ledger marker went)
    held_back: dict[str, float] = field(default_factory=dict)  # file -> seconds since it changed (--settle)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            c[r.status] += 1
        return c

    def summary(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "counts": self.counts(), "unique_files": self.unique_files,
                "stopped": self.stopped, "recovered_unknown": self.recovered, "dry_run": self.dry_run,
                "held_back": sorted(self.held_back)}


# (stage, done, total). Stages: "prepare" (files), "send" (every (contact, file, part) handled, sent or
# not) and "skip" (those of them the ledger settled without a request: already sent, or left failed
# or unknown), so a display can tell a send rate from a rerun that only skips.
ProgressCallback = Callable[[str, int, int], None]


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the batch. Still a KeyboardInterrupt (nothing catches it by
    mistake), carrying what was done: ``result`` has a row for every (contact, file, part) the run
    knew of, those it never reached ``not_sent``; ``stage`` is "preparing" or "sending"."""

    def __init__(self, result: BatchResult, stage: str) -> None:
        super().__init__(f"interrupted while {stage}")
        self.result = result
        self.stage = stage


class RateLimiter:
    """One pace for every worker, plus a shared pause that a 429 sets."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._spread = 0.0
        self._rng = random.Random()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            # workers resume spread over a moment, not all at once into the same limit
            self._spread = min(1.0, max(seconds, 0.05) * 0.5)

    def wait(self, stop: threading.Event) -> bool:
        """Block until this worker may send; False if the run was stopped meanwhile."""
        while True:
            with self._lock:
                now = self._clock()
                booked = now >= self._paused_until
                if booked:
                    slot = max(now, self._next)
                    self._next = slot + self.interval
                    delay = slot - now
                else:
                    delay = self._paused_until - now + self._rng.uniform(0, self._spread)
            if delay > 0 and stop.wait(delay):
                return False
            if booked:
                with self._lock:
                    if self._clock() < self._paused_until:
                        continue  # a 429 paused everyone while we waited for our slot
                return not stop.is_set()


@dataclass
class _Unit:
    """One (contact, source file): its parts go in order, part 1 first."""

    row_line: int | None
    contact: str
    workspace: str
    label: str
    extra: dict[str, str]
    source_sha256: str
    outputs: tuple[OutputFile, ...]
    prepared_sha256: list[str]
    action: str | None = None
    source_duration: float | None = None

    def sent_fields(self, o: OutputFile) -> dict[str, Any]:
        """The report's columns about what goes out as part ``o``."""
        return dict(size=o.size, action=self.action, format=o.format, duration_sent=o.duration,
                    source_duration=self.source_duration)


def _plan_units(contacts: ContactList, folder: Path, prepared: dict[Path, PrepareOutcome],
                results: list[RowResult], waiting: dict[Path, float] | None = None) -> list[_Unit]:
    units: list[_Unit] = []
    waiting = waiting or {}
    broadcast = sorted(set(prepared) | set(waiting)) if not contacts.has_file_column else []
    hashes: dict[Path, str] = {}  # each prepared output hashed once, however many contacts get it

    def sha(path: Path) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(path)
        return hashes[path]

    for row in contacts.rows:
        files = [row.file] if row.file is not None else broadcast
        for f in files:
            assert f is not None
            label = _label(row, f, folder)
            if f in waiting:
                results.append(RowResult(row.line, row.contact, row.workspace, label, None, None, ST_NOT_SENT,
                                         error=f"the file changed {waiting[f]:.0f} s ago and may still be "
                                               "arriving; the next run sends it", extra=row.extra))
                continue
            outcome = prepared[f]
            if outcome.result is None:
                results.append(RowResult(row.line, row.contact, row.workspace, label, None, None, ST_FAILED,
                                         error=f"could not prepare the file: {outcome.error}", extra=row.extra))
                continue
            res = outcome.result
            units.append(_Unit(row.line, row.contact, row.workspace, label, row.extra, res.source_sha256,
                               res.outputs, [sha(o.path) for o in res.outputs], res.action, res.source_duration))
    return units


def _label(row: ContactRow, f: Path, folder: Path) -> str:
    return row.file_label if row.file_label else str(f.relative_to(folder.resolve()))


def _unreached_rows(contacts: ContactList, folder: Path, files: list[Path], error: str) -> list[RowResult]:
    """``not_sent`` rows for every (contact, file) the CSV asks for, when the run stopped before sending."""
    return [RowResult(row.line, row.contact, row.workspace, _label(row, f, folder), None, None, ST_NOT_SENT,
                      error=error, extra=row.extra)
            for row in contacts.rows for f in ([row.file] if row.file is not None else files)
            if f is not None]


def _unit_rows(u: _Unit, status: str, error: str) -> list[RowResult]:
    return [RowResult(u.row_line, u.contact, u.workspace, u.label, o.part, o.parts, status, error=error,
                      extra=u.extra, **u.sent_fields(o)) for o in u.outputs]


def run_batch(settings: BatchSettings, *, sender: Sender | None, ledger: Ledger | None = None,
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
    marker = WorkMarker(folder, settings.contacts, settings.campaign)
    work_lock = WorkLock(marker)
    if not settings.dry_run:
        work_lock.acquire()  # first: a second run on this folder, with any ledger, exits at once
    try:
        return _run_locked(settings, sender, ledger, progress, retry, work_dir, state_path, folder, contacts,
                           marker, preflight)
    finally:
        work_lock.release()


def _run_locked(settings: BatchSettings, sender: Sender | None, ledger: Ledger | None,
                progress: ProgressCallback | None, retry: RetryPolicy | None, work_dir: Path | None,
                state_path: Path | None, folder: Path, contacts: ContactList, marker: WorkMarker,
                preflight: Callable[[ContactList], None] | None = None) -> BatchResult:
    expected = marker.expected(tolerant=settings.new_ledger)
    own_ledger = ledger is None
    if ledger is None:
        ledger = open_batch_ledger(state_path or default_state_path(), marker, expected,
                                   new_ledger=settings.new_ledger, dry_run=settings.dry_run)
    real_run = ledger is not None and not settings.dry_run
    try:
        if real_run:
            ledger.acquire()  # before any work: a second run exits at once
        known = getattr(ledger, "campaigns", None)
        if known is not None:
            check_campaign_case(settings.campaign, known())
        identity = _identity(ledger, settings.campaign)
        if not settings.new_ledger:
            marker.check(getattr(ledger, "path", state_path), identity, expected)
        seen: list[Path] = []  # the source files found, for the rows of a run stopped before sending
        result: BatchResult | None = None
        notes: list[str | None] = []  # filled when the work begins; a run refused before leaves no note

        def begin() -> None:  # every local check passed, files are about to be prepared
            if preflight is not None:
                preflight(contacts)
            if real_run and identity:
                notes.append(marker.record(identity))  # before anything is sent
        try:
            # a known place, named after this process: what a SIGKILL leaves, the next run sweeps
            with temp_dir("batch") as tmp:
                result = _run(settings, contacts, folder, sender, ledger, progress, retry or RetryPolicy(),
                              Path(work_dir) if work_dir else tmp, seen, marker.work_id, begin)
        except BatchInterrupted:
            raise
        except KeyboardInterrupt as exc:
            if result is not None:  # every send was done; stopped while removing the work folder
                raise BatchInterrupted(result, "sending") from exc
            # before any send: what was asked for is all still to send
            rows = _invalid_rows(contacts) + _unreached_rows(
                contacts, folder, sorted(set(seen)), "not sent: the run was interrupted while preparing")
            raise BatchInterrupted(BatchResult(settings.campaign, rows, contacts.extra_columns,
                                               stopped="interrupted", dry_run=settings.dry_run),
                                   "preparing") from exc
        finally:
            if notes:
                _record_quietly(marker, ledger, settings.campaign)
        result.notes.extend(n for n in notes if n)
        return result
    finally:
        if real_run:
            ledger.release()
        if own_ledger and ledger is not None:
            ledger.close()


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


def _identity(ledger: Ledger | None, campaign: str) -> Any:
    """The ledger's id, where it lives, its record count and how many sends of the campaign it tried;
    None for a ledger that has none."""
    identity = getattr(ledger, "identity", None)
    found = identity() if identity is not None else None
    tried = getattr(ledger, "tried", None)
    if found is not None and tried is not None:
        found = dataclasses.replace(found, tried=tried(campaign))
    return found


def _record_quietly(marker: WorkMarker, ledger: Ledger, campaign: str) -> None:
    """After the run: the count of records grows the marker's 'held at least' (best effort: the note
    made before sending already names the ledger)."""
    try:
        identity = _identity(ledger, campaign)
        if identity is not None:
            marker.record(identity)
    except Exception:  # a ledger or disk that just failed the run: its own error is the one to show
        log.debug("could not update %s", marker.in_folder, exc_info=True)


def _invalid_rows(contacts: ContactList) -> list[RowResult]:
    return [RowResult(r.line, r.contact, r.workspace, r.file, None, None, ST_INVALID, error=r.reason, extra=r.extra)
            for r in contacts.invalid]


def _run(settings: BatchSettings, contacts: ContactList, folder: Path, sender: Sender | None,
         ledger: Ledger | None, progress: ProgressCallback | None, retry: RetryPolicy,
         work_dir: Path, seen: list[Path], work: str, begin: Callable[[], None]) -> BatchResult:
    results = _invalid_rows(contacts)
    # 1. prepare each unique source once
    refused: dict[Path, PrepareOutcome] = {}
    if contacts.has_file_column:
        sources = sorted({r.file for r in contacts.rows if r.file is not None})
        items = [InputItem(p) for p in sources]
    else:
        root = folder.resolve()
        items = []
        for i in collect_inputs([folder]):
            try:
                real = i.path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:  # a link loop, a dangling link: this file only
                link = root / i.path.relative_to(folder)
                refused[link] = PrepareOutcome(link, error=InputError(link, os_reason(exc)))
                continue
            if real == root or root in real.parents:
                items.append(InputItem(real, i.out_subdir))
            else:  # docs/api.md §6: a link out of the folder must not send some other recording to everyone
                link = root / i.path.relative_to(folder)
                refused[link] = PrepareOutcome(link, error=InputError(link, "is a link that leads outside "
                                                                            "the folder"))
        if not items and not refused and contacts.rows:
            raise UsageError(f"no audio files in {folder}")
    # A file still being copied in must not go out half-written (and then again, whole): leave files
    # changed in the last `settle` seconds for the next run.
    now = time.time()
    waiting: dict[Path, float] = {}
    for item in list(items):
        try:
            age = now - item.path.stat().st_mtime
        except OSError:
            continue  # prepare reports it
        if age < settings.settle:
            waiting[item.path] = age
            items.remove(item)
    seen.extend([i.path for i in items] + list(refused) + list(waiting))
    if items:  # nothing to prepare (every file still arriving) means nothing to send either
        begin()
    total_prep = len(items)
    done_prep = [0]
    if progress and total_prep:
        progress("prepare", 0, total_prep)  # the stage has begun: a display shows it from the start

    def on_prepared(_o: PrepareOutcome) -> None:
        done_prep[0] += 1
        if progress:
            progress("prepare", done_prep[0], total_prep)

    outcomes = prepare_many(items, work_dir, settings.prepare, jobs=settings.jobs, progress=on_prepared)
    prepared = {item.path: o for item, o in zip(items, outcomes)}
    prepared.update(refused)
    batch = BatchResult(settings.campaign, results, contacts.extra_columns, unique_files=len(items) + len(refused),
                        prepared=outcomes + list(refused.values()), dry_run=settings.dry_run)
    root = folder.resolve()
    batch.held_back = {str(p.relative_to(root)) if root in p.parents else str(p): age
                       for p, age in waiting.items()}
    units = _plan_units(contacts, folder, prepared, results, waiting)

    if ledger is not None and not settings.dry_run:
        batch.recovered = ledger.recover()
        _record_plan(ledger, work, settings, units, folder)
    if settings.dry_run:
        for u in units:
            held: tuple[str, str] | None = None
            for o, sha in zip(u.outputs, u.prepared_sha256):
                base = dict(line=u.row_line, contact=u.contact, workspace=u.workspace, file=u.label,
                            part=o.part, parts=o.parts, extra=u.extra, **u.sent_fields(o))
                if held:
                    results.append(RowResult(status=held[0], error=held[1], **base))
                    continue
                key = SendKey(settings.campaign, u.workspace, u.contact, u.source_sha256, o.part)
                row = ledger.get(key) if ledger is not None else None
                status, mid, err = _decide(row, sha, settings, u.label)
                r = RowResult(status=ST_WOULD_SEND if status is None else status, message_id=mid, error=err, **base)
                results.append(r)
                held = _held_back(settings.campaign, u, r)
        return batch
    assert ledger is not None
    if sender is None:
        raise UsageError("a sender (API client) is needed unless this is a dry run")

    # 2. send, concurrently, paced, each send recorded before and after
    total_send = sum(len(u.outputs) for u in units)
    if progress:
        progress("send", 0, total_send)  # the stage has begun (an interruption says which one)
    done_send = [0]
    skipped = [0]
    count_lock = threading.Lock()
    stop = threading.Event()
    limiter = RateLimiter(settings.rate)
    rng = random.Random()

    # How this worker's current part ended: "request" (one went out), "ledger" (settled by an earlier
    # run: already sent, or left failed/unknown), "blocked" (an earlier part failed) or "stopped".
    part_end = threading.local()

    def tick(how: str) -> None:
        if how == "stopped":
            return  # not handled: a display must not count what the stop left undone
        with count_lock:
            done_send[0] += 1
            if how == "ledger":
                skipped[0] += 1
            if progress:
                if how == "ledger":
                    progress("skip", skipped[0], total_send)
                progress("send", done_send[0], total_send)

    def send_part(u: _Unit, o: OutputFile, sha: str) -> RowResult:
        key = SendKey(settings.campaign, u.workspace, u.contact, u.source_sha256, o.part)
        base = dict(line=u.row_line, contact=u.contact, workspace=u.workspace, file=u.label, part=o.part,
                    parts=o.parts, extra=u.extra, **u.sent_fields(o))
        status, mid, err = _decide(ledger.get(key), sha, settings, u.label)
        if status is not None:
            part_end.how = "ledger"
            return RowResult(status=status, message_id=mid, error=err, **base)
        last: SendError | None = None
        for attempt in range(1, settings.attempts + 1):
            if not limiter.wait(stop):
                return RowResult(status=ST_NOT_SENT, error=f"not sent: {batch.stopped}", **base)
            part_end.how = "request"
            ledger.begin(key, parts=o.parts, file=u.label, prepared_sha256=sha)
            try:
                msg = sender.send_once(u.workspace, u.contact, o.path, content_type=o.content_type,
                                       filename=Path(u.label).stem + o.path.suffix
                                       if o.parts == 1 else o.path.name)
            except OutcomeUnknown as exc:
                ledger.finish(key, UNKNOWN, error=str(exc), status=exc.status)
                return RowResult(status=ST_UNKNOWN, error=str(exc), **base)
            except AuthError as exc:
                ledger.finish(key, DEFERRED, error=str(exc), status=exc.status)
                if not stop.is_set():
                    batch.stopped = "authentication failed (401): the token was refused; nothing more was sent"
                    stop.set()
                return RowResult(status=ST_NOT_SENT, error=str(exc), **base)
            except RefusedError as exc:
                ledger.finish(key, FAILED, error=str(exc), status=exc.status)
                return RowResult(status=ST_FAILED, error=str(exc), **base)
            except (RateLimited, ConnectFailed) as exc:
                ledger.finish(key, DEFERRED, error=str(exc), status=exc.status)
                last = exc
                if isinstance(exc, RateLimited):
                    wait = exc.retry_after if exc.retry_after is not None else retry.backoff(attempt, rng)
                    limiter.pause(wait)  # every worker waits, not only this one
                else:
                    if stop.wait(retry.backoff(attempt, rng)):
                        break
                continue
            except SendError as exc:  # any other typed outcome: trust its own verdict
                state = UNKNOWN if exc.created is None else FAILED
                ledger.finish(key, state, error=str(exc), status=exc.status)
                return RowResult(status=ST_UNKNOWN if state == UNKNOWN else ST_FAILED, error=str(exc), **base)
            ledger.finish(key, SENT, message_id=msg.id)
            return RowResult(status=ST_SENT, message_id=msg.id, **base)
        return RowResult(status=ST_NOT_SENT, error=f"not sent after {settings.attempts} attempts: {last}", **base)

    def send_unit(u: _Unit) -> list[RowResult]:
        out: list[RowResult] = []
        held: tuple[str, str] | None = None
        for o, sha in zip(u.outputs, u.prepared_sha256):
            part_end.how = "blocked" if held else "stopped"
            if held:
                out.append(RowResult(u.row_line, u.contact, u.workspace, u.label, o.part, o.parts,
                                     held[0], error=held[1], extra=u.extra, **u.sent_fields(o)))
            else:
                r = send_part(u, o, sha)
                out.append(r)
                held = _held_back(settings.campaign, u, r)
            tick(part_end.how)
        return out

    # Units with the same content for the same contact share their ledger rows: send them one after
    # the other in one task, or two workers race on a row (both send, or one takes the other's
    # in-flight "sending" for an interrupted send and reports it unknown).
    groups: dict[tuple[str, str, str], list[_Unit]] = {}
    for unit in units:
        groups.setdefault((unit.workspace, unit.contact, unit.source_sha256), []).append(unit)

    def guarded(group: list[_Unit]) -> list[RowResult]:
        try:
            return [r for u in group for r in send_unit(u)]
        except BaseException:
            stop.set()  # a broken ledger or a bug: queued sends must not go out unrecorded
            raise

    pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="send")
    futures: list[Future[list[RowResult]]] = []
    planned = len(results)  # the rows before the send stage's own
    try:
        futures.extend(pool.submit(guarded, g) for g in groups.values())
        results.extend(r for f in futures for r in f.result())  # in order; raises a worker's failure
        pool.shutdown(wait=True)
    except BaseException as exc:  # Ctrl-C, SIGTERM, a failed ledger write: finish in-flight sends only
        if batch.stopped is None:
            batch.stopped = "interrupted"
        stop.set()
        # the sends in flight finish and are recorded; the queued groups only read the ledger (what
        # was already sent says so) and come back not_sent
        pool.shutdown(wait=True)
        if isinstance(exc, KeyboardInterrupt):
            del results[planned:]  # whatever the interruption cut short, built again whole
            results.extend(_rows_so_far(list(groups.values()), futures))
            raise BatchInterrupted(batch, "sending") from exc
        raise
    return batch


def _rows_so_far(groups: list[list[_Unit]], futures: list[Future[list[RowResult]]]) -> list[RowResult]:
    """The rows of an interrupted send stage: each group's own, or, for one that never ran (or whose
    worker failed), a row per part that does not claim more than is known."""
    rows: list[RowResult] = []
    for i, group in enumerate(groups):
        f = futures[i] if i < len(futures) else None
        if f is not None and f.done() and not f.cancelled() and f.exception() is None:
            rows.extend(f.result())
        elif f is not None and f.done() and not f.cancelled():
            rows.extend(r for u in group for r in _unit_rows(
                u, ST_UNKNOWN, "the run stopped before this send's outcome was known; see 'audiopipe status'"))
        else:
            rows.extend(r for u in group for r in _unit_rows(u, ST_NOT_SENT, "not sent: the run was interrupted"))
    return rows


def _record_plan(ledger: Ledger, work: str, settings: BatchSettings, units: list[_Unit], folder: Path) -> None:
    """Every send this run means to make, ``pending`` in the ledger before the first goes out, so a
    run stopped part-way (Ctrl-C, a 401, a crash) leaves `audiopipe status` knowing what is left."""
    plan = getattr(ledger, "plan", None)
    if plan is None:  # a library caller's own ledger without plans: it still records every send
        return
    sends = [PlannedSend(SendKey(settings.campaign, u.workspace, u.contact, u.source_sha256, o.part), o.parts,
                         u.label, sha)
             for u in units for o, sha in zip(u.outputs, u.prepared_sha256)]
    where = {"folder": str(folder.resolve()), "contacts": str(Path(settings.contacts).resolve())}  # for status
    plan(work, sends, where, campaign=settings.campaign)


def _held_back(campaign: str, u: _Unit, done: RowResult) -> tuple[str, str] | None:
    """What the parts after ``done`` are, when it did not go out: (status, why and what frees them).
    Parts go in order, so they wait; behind an unknown or refused part no run sends them on its own."""
    if done.status in (ST_SENT, ST_ALREADY, ST_WOULD_SEND):
        return None
    part = done.part
    if done.status == ST_UNKNOWN:
        return ST_BLOCKED, (f"blocked by part {part}, whose outcome is unknown: once you know whether it "
                            f"arrived, `{resolve_hint(campaign, u.contact, u.label, part)}` "
                            "(or resend it with --retry-unknown)")
    if done.status == ST_FAILED:
        return ST_BLOCKED, (f"blocked by part {part}, which the server refused: fix that, then run again with "
                            "--retry-failed")
    return ST_NOT_SENT, f"part {part} was not sent yet, so the later parts wait; the next run sends them in order"


def _decide(row: Any, prepared_sha: str, settings: BatchSettings,
            label: str | None = None) -> tuple[str | None, str | None, str | None]:
    """What the ledger says about a send: (status to report without sending, id, error), or
    (None, None, None) when it must be sent now."""
    if row is None or row.state in (DEFERRED, PENDING):
        return None, None, None
    if row.state == SENT:
        by_hand = getattr(row, "resolved", None)
        if by_hand:
            return ST_ALREADY, row.message_id, (f"marked delivered by {by_hand.get('by', 'hand')} "
                                                "(audiopipe resolve)")
        return ST_ALREADY, row.message_id, (f"same content as {row.file}, already sent"
                                            if label is not None and row.file != label else None)
    if row.state == UNKNOWN:
        if settings.retry_unknown:
            return None, None, None
        return ST_UNKNOWN, None, ((row.error or "outcome unknown") + " (once you know whether it arrived, "
                                  "settle it with `audiopipe resolve`; or resend with --retry-unknown)")
    if row.state == FAILED:
        if row.prepared_sha256 != prepared_sha or settings.retry_failed:
            return None, None, None  # the file changed since it was refused (or asked to): try again
        return ST_FAILED, None, (row.error or "refused") + " (resend with --retry-failed once fixed)"
    return ST_UNKNOWN, None, "the send was interrupted (resend with --retry-unknown)"
