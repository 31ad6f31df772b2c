"""The plan: prepared files × contacts turned into the sends a run means to make, recorded before
the first one goes out.

A :class:`Delivery` is one source file to one contact, its parts in order. :func:`plan_deliveries`
makes them (and the rows of what cannot be sent: a file that failed to prepare, one still arriving);
:func:`record_plan` writes every send ``pending`` in the ledger in one go, so a run stopped part-way
(Ctrl-C, a 401, a crash) leaves `audiopipe status` knowing what is left. Planning needs no client and
only :class:`PlanLedger` of the ledger, so it can run on another machine than the senders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from audiopipe.campaign.contacts import ContactList, ContactRow
from audiopipe.campaign.ledger import PlannedSend, SendKey
from audiopipe.campaign.results import ReportStatus, RowResult
from audiopipe.preparation.cache import file_sha256
from audiopipe.preparation.pipeline import OutputFile, PrepareOutcome


@dataclass(frozen=True)
class Delivery:
    """One source file to one contact: its parts go in order, part 1 first."""

    line: int | None          # the contacts CSV's line
    contact: str
    workspace: str
    label: str                # the file as the report names it
    extra: dict[str, str]     # the CSV's own columns, carried into the report
    source_sha256: str
    outputs: tuple[OutputFile, ...]
    prepared_sha256: tuple[str, ...]  # each output's hash: what the ledger ties a send to
    action: str | None = None
    source_duration: float | None = None

    def parts(self) -> Iterator[tuple[OutputFile, str]]:
        """Each part with its hash, in the order they go out."""
        return zip(self.outputs, self.prepared_sha256, strict=True)

    def key(self, campaign: str, part: OutputFile) -> SendKey:
        return SendKey(campaign, self.workspace, self.contact, self.source_sha256, part.part)

    def row(self, part: OutputFile, status: ReportStatus, *, message_id: str | None = None,
            error: str | None = None) -> RowResult:
        """The report's row for ``part``: who, which file, what goes out, and what became of it."""
        return RowResult(self.line, self.contact, self.workspace, self.label, part.part, part.parts, status,
                         message_id=message_id, error=error, extra=self.extra, size=part.size,
                         action=self.action, format=part.format, duration_sent=part.duration,
                         source_duration=self.source_duration)

    def rows(self, status: ReportStatus, error: str) -> list[RowResult]:
        """A row per part, all with the same status and reason."""
        return [self.row(o, status, error=error) for o in self.outputs]


@dataclass
class Plan:
    """What a run will send, and the rows it settled while planning."""

    deliveries: list[Delivery] = field(default_factory=list)
    rows: list[RowResult] = field(default_factory=list)  # not prepared, or still arriving: in CSV order


def plan_deliveries(contacts: ContactList, folder: Path, prepared: dict[Path, PrepareOutcome],
                    waiting: dict[Path, float] | None = None) -> Plan:
    """Every (contact, file) the contacts ask for: a delivery when its file was prepared, a row
    otherwise. A CSV without a file column sends every file of the folder to everyone."""
    plan = Plan()
    waiting = waiting or {}
    broadcast = sorted(set(prepared) | set(waiting)) if not contacts.has_file_column else []
    hashes: dict[Path, str] = {}  # each prepared output hashed once, however many contacts get it

    def sha(path: Path) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(path)
        return hashes[path]

    for row in contacts.rows:
        for f in [row.file] if row.file is not None else broadcast:
            assert f is not None
            label = label_of(row, f, folder)
            outcome = prepared.get(f)
            if f in waiting or outcome is None or outcome.result is None:
                plan.rows.append(_unsendable(row, label, f, waiting, outcome))
                continue
            res = outcome.result
            plan.deliveries.append(Delivery(row.line, row.contact, row.workspace, label, row.extra,
                                            res.source_sha256, res.outputs, tuple(sha(o.path) for o in res.outputs),
                                            res.action, res.source_duration))
    return plan


def _unsendable(row: ContactRow, label: str, f: Path, waiting: dict[Path, float],
                outcome: PrepareOutcome | None) -> RowResult:
    """The row of a (contact, file) with nothing to send: the file may still be arriving, or did not prepare."""
    if f in waiting:
        return RowResult(row.line, row.contact, row.workspace, label, None, None, ReportStatus.NOT_SENT,
                         error=f"the file changed {waiting[f]:.0f} s ago and may still be arriving; the next "
                               "run sends it", extra=row.extra)
    error = outcome.error if outcome is not None else None
    return RowResult(row.line, row.contact, row.workspace, label, None, None, ReportStatus.FAILED,
                     error=f"could not prepare the file: {error}", extra=row.extra)


def label_of(row: ContactRow, f: Path, folder: Path) -> str:
    """The file as the report names it: the CSV's own spelling, else its path in the folder."""
    return row.file_label if row.file_label else str(f.relative_to(folder.resolve()))


def unreached_rows(contacts: ContactList, folder: Path, files: list[Path], error: str) -> list[RowResult]:
    """``not_sent`` rows for every (contact, file) the CSV asks for, when the run stopped before sending."""
    return [RowResult(row.line, row.contact, row.workspace, label_of(row, f, folder), None, None,
                      ReportStatus.NOT_SENT, error=error, extra=row.extra)
            for row in contacts.rows for f in ([row.file] if row.file is not None else files)
            if f is not None]


def planned_sends(deliveries: list[Delivery], campaign: str) -> list[PlannedSend]:
    """Every part of every delivery, as the ledger records a send it has not tried yet."""
    return [PlannedSend(d.key(campaign, o), o.parts, d.label, sha) for d in deliveries for o, sha in d.parts()]


class PlanLedger(Protocol):
    """What planning needs of a ledger."""

    def recover(self) -> int: ...
    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int: ...


def record_plan(ledger: PlanLedger, work: str, campaign: str, deliveries: list[Delivery],
                where: dict[str, str]) -> int:
    """Settle what a dead run left mid-send (now unknown), then record every send of ``deliveries``
    ``pending`` for ``work`` (``where``: the folder and contacts file, for `audiopipe status`).
    Returns how many sends a dead run had left mid-request."""
    recovered = ledger.recover()
    if getattr(ledger, "plan", None) is None:  # a library caller's own ledger without plans still records each send
        return recovered
    ledger.plan(work, planned_sends(deliveries, campaign), where, campaign=campaign)
    return recovered
