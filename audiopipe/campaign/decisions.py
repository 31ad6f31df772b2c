"""What the ledger says about a send before it goes, and what a part's fate means for the parts after it.

Shared by the sender and the dry run, so "would send" and "sent" follow one rule: a row the ledger
shows sent is never sent again, an unknown one only with ``--retry-unknown``, a refused one only
when its file changed or with ``--retry-failed``; parts go in order, and behind an unknown or refused
part no run sends the rest on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from audiopipe.campaign.ledger import DEFERRED, FAILED, PENDING, SENT, UNKNOWN, LedgerRow, SendKey
from audiopipe.campaign.planner import Delivery
from audiopipe.campaign.resolve import resolve_hint
from audiopipe.campaign.results import ReportStatus, RowResult
from audiopipe.campaign.settings import SendRules


class LedgerReader(Protocol):
    """What deciding needs of a ledger: one row by its key."""

    def get(self, key: SendKey) -> LedgerRow | None: ...


class Settled(NamedTuple):
    """A send the ledger already settles: the row to report instead of sending."""

    status: ReportStatus
    message_id: str | None
    error: str | None


def settled_by_ledger(row: LedgerRow | None, prepared_sha: str, rules: SendRules,
                      label: str | None = None) -> Settled | None:
    """What the ledger's ``row`` says about sending ``prepared_sha`` now: None when it must be sent
    (never tried, or deferred), else what to report without a request."""
    if row is None or row.state in (DEFERRED, PENDING):
        return None
    return _BY_STATE.get(row.state, _interrupted)(row, prepared_sha, rules, label)


def _sent(row: LedgerRow, prepared_sha: str, rules: SendRules, label: str | None) -> Settled | None:
    if row.resolved:  # settled by a person (audiopipe resolve)
        return Settled(ReportStatus.ALREADY, row.message_id,
                       f"marked delivered by {row.resolved.get('by', 'hand')} (audiopipe resolve)")
    return Settled(ReportStatus.ALREADY, row.message_id,
                   f"same content as {row.file}, already sent" if label is not None and row.file != label else None)


def _unknown(row: LedgerRow, prepared_sha: str, rules: SendRules, label: str | None) -> Settled | None:
    if rules.retry_unknown:
        return None
    return Settled(ReportStatus.UNKNOWN, None, (row.error or "outcome unknown") + " (once you know whether it "
                   "arrived, settle it with `audiopipe resolve`; or resend with --retry-unknown)")


def _failed(row: LedgerRow, prepared_sha: str, rules: SendRules, label: str | None) -> Settled | None:
    if row.prepared_sha256 != prepared_sha or rules.retry_failed:
        return None  # the file changed since it was refused (or asked to): try again
    return Settled(ReportStatus.FAILED, None, (row.error or "refused") + " (resend with --retry-failed once fixed)")


def _interrupted(row: LedgerRow, prepared_sha: str, rules: SendRules, label: str | None) -> Settled | None:
    """``sending``: a request in flight when its run died (recovery makes these unknown first)."""
    return Settled(ReportStatus.UNKNOWN, None, "the send was interrupted (resend with --retry-unknown)")


_BY_STATE: dict[str, Callable[[LedgerRow, str, SendRules, str | None], Settled | None]] = {
    SENT: _sent, UNKNOWN: _unknown, FAILED: _failed,
}


def held_back(campaign: str, delivery: Delivery, done: RowResult) -> tuple[ReportStatus, str] | None:
    """What the parts after ``done`` are, when it did not go out: (status, why and what frees them).
    Parts go in order, so they wait; behind an unknown or refused part no run sends them on its own."""
    if done.status in (ReportStatus.SENT, ReportStatus.ALREADY, ReportStatus.WOULD_SEND):
        return None
    part = done.part
    if done.status == ReportStatus.UNKNOWN:
        return ReportStatus.BLOCKED, (f"blocked by part {part}, whose outcome is unknown: once you know whether it "
                                   f"arrived, `{resolve_hint(campaign, delivery.contact, delivery.label, part)}` "
                                   "(or resend it with --retry-unknown)")
    if done.status == ReportStatus.FAILED:
        return ReportStatus.BLOCKED, (f"blocked by part {part}, which the server refused: fix that, then run again "
                                   "with --retry-failed")
    return ReportStatus.NOT_SENT, (f"part {part} was not sent yet, so the later parts wait; the next run sends "
                                "them in order")


def preview(deliveries: list[Delivery], ledger: LedgerReader | None, rules: SendRules) -> list[RowResult]:
    """A dry run's rows: what a real run would send now, and what the ledger settles without a request."""
    rows: list[RowResult] = []
    for d in deliveries:
        held: tuple[ReportStatus, str] | None = None
        for o, sha in d.parts():
            if held:
                rows.append(d.row(o, held[0], error=held[1]))
                continue
            settled = settled_by_ledger(ledger.get(d.key(rules.campaign, o)) if ledger is not None else None,
                                        sha, rules, d.label)
            r = (d.row(o, ReportStatus.WOULD_SEND) if settled is None
                 else d.row(o, settled.status, message_id=settled.message_id, error=settled.error))
            rows.append(r)
            held = held_back(rules.campaign, d, r)
    return rows
