"""The send stage: planned deliveries out through the API, each send recorded before and after.

A :class:`BatchSender` owns what sending needs and nothing more: a :class:`SendLedger`, an
:class:`AudioClient`, a pacer and the stop event. For each part it asks the ledger first (what an
earlier run settled is not sent again), commits the intent, makes the request through the shared
send loop (:func:`~audiopipe.send.retry.send_with_retries`) and commits the result, so a crash at
any point leaves the ledger saying what may have gone out. A 401 stops every worker; Ctrl-C lets
the sends in flight finish and be recorded.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from audiopipe.campaign.decisions import LedgerReader, held_back, settled_by_ledger
from audiopipe.campaign.ledger import DEFERRED, FAILED, SENT, UNKNOWN, RowStatus, SendKey
from audiopipe.campaign.planner import Delivery
from audiopipe.campaign.publish import Published, UrlPublisher
from audiopipe.campaign.results import ReportStatus, RowResult
from audiopipe.campaign.settings import SendRules
from audiopipe.errors import GaveUp, SendError
from audiopipe.preparation.pipeline import OutputFile
from audiopipe.send.answers import Outcome, SentMessage, outcome_of
from audiopipe.send.by_url import SendBy, redact_urls_in
from audiopipe.send.retry import RETRIED, Pacer, SendStopped, send_with_retries
from audiopipe.store.base import StoreError

AUTH_STOPPED = "authentication failed (401): the token was refused; nothing more was sent"
INTERRUPTED = "interrupted"

# What the ledger records for each outcome: only a created message is sent, only what may have been
# created is unknown; everything definitely not created is deferred to the next run, except a refusal.
LEDGER_STATE: dict[Outcome, RowStatus] = {
    Outcome.SENT: SENT, Outcome.UNKNOWN: UNKNOWN, Outcome.REFUSED: FAILED, Outcome.STOP: DEFERRED,
    Outcome.SLOW_DOWN: DEFERRED, Outcome.RETRY: DEFERRED, Outcome.NOT_SENT: DEFERRED,
}
# What the report says for an outcome the send loop did not retry.
ROW_STATUS: dict[Outcome, ReportStatus] = {
    Outcome.SENT: ReportStatus.SENT, Outcome.UNKNOWN: ReportStatus.UNKNOWN, Outcome.REFUSED: ReportStatus.FAILED,
    Outcome.STOP: ReportStatus.NOT_SENT, Outcome.SLOW_DOWN: ReportStatus.NOT_SENT, Outcome.RETRY: ReportStatus.NOT_SENT,
    Outcome.NOT_SENT: ReportStatus.NOT_SENT,
}
# docs/api.md §5: a batch treats a TLS failure like a connection failure (its next run would retry it anyway)
BATCH_RETRIED = RETRIED | {Outcome.NOT_SENT}


class AudioClient(Protocol):
    """What the sender needs of a client: one request, no retries (the sender paces retries itself)."""

    def send_once(self, workspace: str, contact: str, file_or_url: str | Path, *,
                  filename: str | None = None, content_type: str | None = None) -> SentMessage: ...


class SendLedger(LedgerReader, Protocol):
    """What sending needs of a ledger: read a send, commit its intent, commit its result."""

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str,
              sent_by: str | None = None) -> None: ...
    def finish(self, key: SendKey, state: RowStatus, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None: ...


class PartEnd(str, enum.Enum):
    """How one part's turn ended, for progress: a display counts what was handled, and tells a
    send rate from a rerun that only reads the ledger."""

    REQUEST = "request"   # at least one request went out
    LEDGER = "ledger"     # settled by an earlier run: already sent, or left failed or unknown
    BLOCKED = "blocked"   # an earlier part did not go out
    STOPPED = "stopped"   # the run stopped first: not handled

    def __str__(self) -> str:
        return self.value


class SendInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while sending: the sends in flight were finished and recorded; ``rows``
    says what became of every planned part (those never reached ``not_sent``)."""

    def __init__(self, rows: list[RowResult]) -> None:
        super().__init__("interrupted while sending")
        self.rows = rows


class BatchSender:
    """Sends planned deliveries: ``concurrency`` workers, one ledger, one pacer, one stop."""

    def __init__(self, ledger: SendLedger, client: AudioClient, rules: SendRules, pacer: Pacer,
                 stop: threading.Event, *, on_part: Callable[[PartEnd], None] | None = None,
                 publisher: UrlPublisher | None = None) -> None:
        self.ledger = ledger
        self.publisher = publisher  # None: every part is uploaded; else sent by its URL in the store
        self.client = client
        self.rules = rules
        self.pacer = pacer
        self._stop = stop
        self._on_part = on_part
        self._stop_lock = threading.Lock()
        self.stopped: str | None = None  # why the run stopped early (a 401, an interruption)

    def stop(self, reason: str) -> None:
        """Stop every worker: no request starts after this; the first reason given is kept."""
        with self._stop_lock:
            if self.stopped is None:
                self.stopped = reason
        self._stop.set()

    def send_all(self, deliveries: list[Delivery], concurrency: int) -> list[RowResult]:
        """Every delivery, ``concurrency`` at a time; rows in the order of the deliveries' groups.

        Deliveries with the same content for the same contact share their ledger rows: they go one
        after the other in one task, or two workers would race on a row (both send, or one takes
        the other's in-flight "sending" for an interrupted send and reports it unknown).
        """
        groups = list(group_by_content(deliveries).values())
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="send")
        futures: list[Future[list[RowResult]]] = []
        try:
            futures.extend(pool.submit(self._send_group, g) for g in groups)
            rows = [r for f in futures for r in f.result()]  # in order; raises a worker's failure
            pool.shutdown(wait=True)
            return rows
        except BaseException as exc:  # Ctrl-C, SIGTERM, a failed ledger write: finish in-flight sends only
            self.stop(INTERRUPTED)
            # the sends in flight finish and are recorded; the queued groups only read the ledger (what
            # was already sent says so) and come back not_sent
            pool.shutdown(wait=True)
            if isinstance(exc, KeyboardInterrupt):
                raise SendInterrupted(rows_so_far(groups, futures)) from exc
            raise

    def _send_group(self, group: list[Delivery]) -> list[RowResult]:
        try:
            return [r for d in group for r in self.send_delivery(d)]
        except BaseException:
            self._stop.set()  # a broken ledger or a bug: queued sends must not go out unrecorded
            raise

    def send_delivery(self, delivery: Delivery) -> list[RowResult]:
        """Its parts in order; a part that does not go out holds back the ones after it."""
        rows: list[RowResult] = []
        held: tuple[ReportStatus, str] | None = None
        for o, sha in delivery.parts():
            if held:
                row, end = delivery.row(o, held[0], error=held[1]), PartEnd.BLOCKED
            else:
                row, end = self.send_part(delivery, o, sha)
                held = held_back(self.rules.campaign, delivery, row)
            rows.append(row)
            if self._on_part is not None:
                self._on_part(end)
        return rows

    def send_part(self, delivery: Delivery, part: OutputFile, sha: str) -> tuple[RowResult, PartEnd]:
        """One part: settled by the ledger, or sent (with retries) and recorded; the row says how it
        was sent (``sent_by``) and, by URL, the part's key in the store (never its URL)."""
        key = delivery.key(self.rules.campaign, part)
        found = self.ledger.get(key)
        settled = settled_by_ledger(found, sha, self.rules, delivery.label)
        if settled is not None:
            row = delivery.row(part, settled.status, message_id=settled.message_id, error=settled.error)
            sent_by = getattr(found, "sent_by", None) if found is not None else None
            return _how(row, sent_by, part, sha), PartEnd.LEDGER
        how = SendBy.URL if self.publisher is not None else SendBy.UPLOAD
        row, end = self._send_part(key, delivery, part, sha)
        return _how(row, how.value if end is PartEnd.REQUEST else None, part, sha), end

    def _send_part(self, key: SendKey, delivery: Delivery, part: OutputFile, sha: str) -> tuple[RowResult, PartEnd]:
        try:
            msg = send_with_retries(lambda: self._request(key, delivery, part, sha), self.pacer,
                                    attempts=self.rules.attempts, retried=BATCH_RETRIED)
        except SendStopped as exc:
            return (delivery.row(part, ReportStatus.NOT_SENT, error=f"not sent: {self.stopped}"),
                    PartEnd.REQUEST if exc.attempts else PartEnd.STOPPED)
        except StoreError as exc:  # the part could not be put into the store: nothing was sent
            return delivery.row(part, ReportStatus.NOT_SENT, error=f"not sent: {exc}"), PartEnd.BLOCKED
        except GaveUp as exc:
            return delivery.row(part, ReportStatus.NOT_SENT, error=str(exc)), PartEnd.REQUEST
        except SendError as exc:
            outcome = outcome_of(exc)
            if outcome is Outcome.STOP:
                self.stop(AUTH_STOPPED)
            return delivery.row(part, ROW_STATUS[outcome], error=str(exc)), PartEnd.REQUEST
        return delivery.row(part, ReportStatus.SENT, message_id=msg.id), PartEnd.REQUEST

    def _request(self, key: SendKey, delivery: Delivery, part: OutputFile, sha: str) -> SentMessage:
        """One request, its intent committed before and its result after. By URL, the part is put
        into the store (once per batch) before the intent: a store that fails sends nothing."""
        published: Published | None = None
        if self.publisher is not None:
            published = self.publisher.publish(part.path, sha)
        self.ledger.begin(key, parts=part.parts, file=delivery.label, prepared_sha256=sha,
                          sent_by=(SendBy.URL if published else SendBy.UPLOAD).value)
        try:
            if published is not None:
                msg = self.client.send_once(delivery.workspace, delivery.contact, published.url)
            else:
                msg = self.client.send_once(delivery.workspace, delivery.contact, part.path,
                                            content_type=part.content_type,
                                            filename=Path(delivery.label).stem + part.path.suffix
                                            if part.parts == 1 else part.path.name)
        except SendError as exc:
            exc.args = tuple(redact_urls_in(a) if isinstance(a, str) else a for a in exc.args)
            self.ledger.finish(key, LEDGER_STATE[outcome_of(exc)], error=str(exc), status=exc.status)
            raise
        self.ledger.finish(key, SENT, message_id=msg.id)
        return msg


def _how(row: RowResult, sent_by: str | None, part: OutputFile, sha: str) -> RowResult:
    """``row`` saying how its part went out: by upload, or by URL with the part's key in the store
    (the key is the prepared content's hash and suffix, as the store names it)."""
    if sent_by is None:
        return row
    key = f"{sha}{part.path.suffix.lower()}" if sent_by == SendBy.URL.value else None
    return dataclasses.replace(row, sent_by=sent_by, object_key=key)


def group_by_content(deliveries: list[Delivery]) -> dict[tuple[str, str, str], list[Delivery]]:
    """Deliveries by (workspace, contact, source content): those of one group share ledger rows."""
    groups: dict[tuple[str, str, str], list[Delivery]] = {}
    for d in deliveries:
        groups.setdefault((d.workspace, d.contact, d.source_sha256), []).append(d)
    return groups


def rows_so_far(groups: list[list[Delivery]], futures: list[Future[list[RowResult]]]) -> list[RowResult]:
    """The rows of an interrupted send stage: each group's own, or, for one that never ran (or whose
    worker failed), a row per part that does not claim more than is known."""
    rows: list[RowResult] = []
    for i, group in enumerate(groups):
        f = futures[i] if i < len(futures) else None
        if f is not None and f.done() and not f.cancelled() and f.exception() is None:
            rows.extend(f.result())
        elif f is not None and f.done() and not f.cancelled():
            rows.extend(r for d in group for r in d.rows(
                ReportStatus.UNKNOWN, "the run stopped before this send's outcome was known; see 'audiopipe status'"))
        else:
            rows.extend(r for d in group for r in d.rows(ReportStatus.NOT_SENT, "not sent: the run was interrupted"))
    return rows
