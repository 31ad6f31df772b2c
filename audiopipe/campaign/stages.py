"""The batch's stages, in order, over one :class:`BatchRun`:

    discover → settle → prepare → plan → send (or, for a dry run, preview) → report

- **discover**: the source files (the CSV's file column, or every audio file in the folder; a link out
  of the folder is refused, docs/api.md §6);
- **settle**: a file changed in the last ``settle`` seconds may still be arriving: the next run sends it;
- **prepare**: each unique source once, in parallel, cached, however many contacts get it;
- **plan**: prepared files × contacts as deliveries, every send recorded ``pending`` in the ledger
  (:mod:`audiopipe.campaign.planner`);
- **send**: concurrently, paced, each send recorded before and after (:mod:`audiopipe.campaign.sender`);
- **report**: the :class:`~audiopipe.campaign.results.BatchResult`.

The locks, the ledger's opening and the note in the folder around them are :mod:`audiopipe.campaign.run`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audiopipe.campaign.contacts import ContactList
from audiopipe.campaign.decisions import preview
from audiopipe.campaign.ledger import Ledger
from audiopipe.campaign.pacing import RateLimiter, SharedPacer
from audiopipe.campaign.planner import Delivery, plan_deliveries, record_plan, unreached_rows
from audiopipe.campaign.publish import UrlPublisher
from audiopipe.campaign.results import BatchInterrupted, BatchResult, ProgressCallback, ReportStatus, RowResult
from audiopipe.campaign.sender import AudioClient, BatchSender, PartEnd, SendInterrupted
from audiopipe.campaign.settings import BatchSettings
from audiopipe.errors import InputError, UsageError, os_reason
from audiopipe.preparation.pipeline import InputItem, PrepareOutcome, collect_inputs, prepare_many
from audiopipe.send.retry import RetryPolicy
from audiopipe.store.cache_tier import StoreTier


@dataclass
class Counters:
    """How far the run is, told to the progress callback (from worker threads too): files prepared,
    parts handled (sent or not), and those of them the ledger settled without a request."""

    progress: ProgressCallback | None = None
    files: int = 0
    prepared: int = 0
    parts: int = 0
    handled: int = 0
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def start_preparing(self, files: int) -> None:
        self.files = files
        if self.progress and files:
            self.progress("prepare", 0, files)  # the stage has begun: a display shows it from the start

    def file_prepared(self, _outcome: PrepareOutcome) -> None:
        with self._lock:
            self.prepared += 1
            if self.progress:
                self.progress("prepare", self.prepared, self.files)

    def start_sending(self, parts: int) -> None:
        self.parts = parts
        if self.progress:
            self.progress("send", 0, parts)  # the stage has begun (an interruption says which one)

    def part_ended(self, end: PartEnd) -> None:
        if end is PartEnd.STOPPED:
            return  # not handled: a display must not count what the stop left undone
        with self._lock:
            self.handled += 1
            if end is PartEnd.LEDGER:
                self.skipped += 1
            if self.progress:
                if end is PartEnd.LEDGER:
                    self.progress("skip", self.skipped, self.parts)
                self.progress("send", self.handled, self.parts)


@dataclass
class BatchRun:
    """One batch as it goes: what it was asked, what it works with, and what it found so far."""

    settings: BatchSettings
    contacts: ContactList
    folder: Path
    ledger: Ledger | None         # None only for a dry run with no ledger yet
    work: str                     # this folder and contacts file (WorkMarker.work_id): its plan in the ledger
    work_dir: Path                # where prepared files are written
    begin_work: Callable[[], None]  # once every local check passed, before the first file is prepared
    counters: Counters = field(default_factory=Counters)
    rows: list[RowResult] = field(default_factory=list)
    seen: list[Path] = field(default_factory=list)  # sources found: the rows of a run stopped before sending
    unique_files: int = 0
    prepared: list[PrepareOutcome] = field(default_factory=list)
    held_back: dict[str, float] = field(default_factory=dict)  # file -> seconds since it changed
    recovered: int = 0            # sends a dead run left mid-request, now unknown
    stopped: str | None = None    # why sending stopped early


def run_stages(run: BatchRun, client: AudioClient | None, retry: RetryPolicy) -> BatchResult:
    """Every stage, in order; the result has a row per (contact, file, part)."""
    run.rows.extend(invalid_rows(run.contacts))
    items, refused = discover(run)
    items, waiting = settle(items, run.settings.settle)
    run.seen.extend([i.path for i in items] + list(refused) + list(waiting))
    if items:  # nothing to prepare (every file still arriving) means nothing to send either
        run.begin_work()
    prepared = prepare(run, items, refused)
    run.held_back = {_in_folder(p, run.folder): age for p, age in waiting.items()}
    deliveries = plan(run, prepared, waiting)
    if run.settings.dry_run:
        run.rows.extend(preview(deliveries, run.ledger, run.settings.rules))
    else:
        assert client is not None  # run_batch refuses a real run without one before any work
        send(run, client, retry, deliveries)
    return report(run)


def discover(run: BatchRun) -> tuple[list[InputItem], dict[Path, PrepareOutcome]]:
    """The source files to prepare, and those refused on sight (a broken link, a link out of the folder)."""
    return find_sources(run.contacts, run.folder)


def find_sources(contacts: ContactList, folder: Path) -> tuple[list[InputItem], dict[Path, PrepareOutcome]]:
    """:func:`discover` for any planner (the embedded batch's, the distributed one's)."""
    if contacts.has_file_column:
        sources = sorted({r.file for r in contacts.rows if r.file is not None})
        return [InputItem(p) for p in sources], {}
    root = folder.resolve()
    items: list[InputItem] = []
    refused: dict[Path, PrepareOutcome] = {}
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
            refused[link] = PrepareOutcome(link, error=InputError(link, "is a link that leads outside the folder"))
    if not items and not refused and contacts.rows:
        raise UsageError(f"no audio files in {folder}")
    return items, refused


def settle(items: list[InputItem], settle_seconds: float,
           now: float | None = None) -> tuple[list[InputItem], dict[Path, float]]:
    """The items to prepare now, and those changed in the last ``settle_seconds`` (path -> age): a
    file still being copied in must not go out half-written (and then again, whole)."""
    now = time.time() if now is None else now
    ready: list[InputItem] = []
    waiting: dict[Path, float] = {}
    for item in items:
        try:
            age = now - item.path.stat().st_mtime
        except OSError:
            ready.append(item)  # prepare reports it
            continue
        if age < settle_seconds:
            waiting[item.path] = age
        else:
            ready.append(item)
    return ready, waiting


def prepare(run: BatchRun, items: list[InputItem], refused: dict[Path, PrepareOutcome]) -> dict[Path, PrepareOutcome]:
    """Each item prepared once into the work folder; every source's outcome, refused ones included."""
    run.counters.start_preparing(len(items))
    outcomes = prepare_many(items, run.work_dir, run.settings.prepare, jobs=run.settings.jobs,
                            progress=run.counters.file_prepared, tier=store_tier(run.settings))
    prepared = {item.path: o for item, o in zip(items, outcomes, strict=True)}
    prepared.update(refused)
    run.unique_files = len(items) + len(refused)
    run.prepared = outcomes + list(refused.values())
    return prepared


def store_tier(settings: BatchSettings) -> StoreTier | None:
    """With ``--store`` (and the cache on): the store as the second tier of the preparation cache, so
    another machine, or a run with an empty local cache, restores what was prepared instead of encoding.
    A dry run only reads it: it sends nothing, and puts nothing into a shared store either."""
    if not settings.store or not settings.prepare.cache:
        return None
    from audiopipe.store import open_store

    return StoreTier(open_store(settings.store), record=not settings.dry_run)


def plan(run: BatchRun, prepared: dict[Path, PrepareOutcome], waiting: dict[Path, float]) -> list[Delivery]:
    """The deliveries to make; a real run records every send ``pending`` before the first goes out."""
    planned = plan_deliveries(run.contacts, run.folder, prepared, waiting)
    run.rows.extend(planned.rows)
    if run.ledger is not None and not run.settings.dry_run:
        where = {"folder": str(run.folder.resolve()), "contacts": str(Path(run.settings.contacts).resolve())}
        run.recovered = record_plan(run.ledger, run.work, run.settings.campaign, planned.deliveries, where)
    return planned.deliveries


def send(run: BatchRun, client: AudioClient, retry: RetryPolicy, deliveries: list[Delivery]) -> None:
    """Every delivery sent (or settled by the ledger), ``concurrency`` at once under one rate."""
    assert run.ledger is not None  # a real run always has one: run_batch opens it
    stop = threading.Event()
    pacer = SharedPacer(RateLimiter(run.settings.rate), stop, retry)
    sender = BatchSender(run.ledger, client, run.settings.rules, pacer, stop, on_part=run.counters.part_ended,
                         publisher=url_publisher(run.settings))
    run.counters.start_sending(sum(len(d.outputs) for d in deliveries))
    try:
        run.rows.extend(sender.send_all(deliveries, run.settings.concurrency))
    except SendInterrupted as exc:
        run.rows.extend(exc.rows)
        run.stopped = sender.stopped
        raise BatchInterrupted(report(run), "sending") from exc
    run.stopped = sender.stopped


def url_publisher(settings: BatchSettings) -> UrlPublisher | None:
    """By URL: what puts each prepared part into ``settings.store`` once and makes its URLs."""
    if not settings.send.by_url:
        return None
    from audiopipe.store import open_store

    if not settings.store:
        raise UsageError("--send-by url needs --store (where each prepared file is put once)", field="store")
    return UrlPublisher(open_store(settings.store), settings.send)


def report(run: BatchRun) -> BatchResult:
    """What the run did, as the CLI and a library caller read it."""
    return BatchResult(run.settings.campaign, run.rows, run.contacts.extra_columns, unique_files=run.unique_files,
                       prepared=run.prepared, stopped=run.stopped, recovered=run.recovered,
                       dry_run=run.settings.dry_run, held_back=run.held_back)


def interrupted_while_preparing(run: BatchRun | None, settings: BatchSettings, contacts: ContactList,
                                folder: Path) -> BatchResult:
    """The result of a run stopped before any send: what was asked for is all still to send."""
    rows = invalid_rows(contacts) + unreached_rows(contacts, folder, sorted(set(run.seen if run else [])),
                                                   "not sent: the run was interrupted while preparing")
    return BatchResult(settings.campaign, rows, contacts.extra_columns, stopped="interrupted",
                       dry_run=settings.dry_run)


def invalid_rows(contacts: ContactList) -> list[RowResult]:
    """A row per contacts line that cannot be sent (no workspace, a bad UUID...)."""
    return [RowResult(r.line, r.contact, r.workspace, r.file, None, None, ReportStatus.INVALID, error=r.reason,
                      extra=r.extra) for r in contacts.invalid]


def _in_folder(path: Path, folder: Path) -> str:
    root = folder.resolve()
    return str(path.relative_to(root)) if root in path.parents else str(path)
