"""What a ledger says is done and what is left, for `audiopipe status`: counts per campaign, the sends
that need a person (unknown, failed), the parts blocked behind them, and those settled by hand.

The verdict, most urgent first (the CLI turns it into its exit code):
``unknown`` some sends may or may not have been delivered (or a dead run left one mid-request);
``failed`` the server refused some; ``left`` some are not sent yet (planned and never attempted,
deferred after a 429 or a connection failure, or in flight in a running batch): the next batch sends
them; ``ok`` everything planned was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiopipe.campaign.ledger import (
    BlockedPart,
    Ledger,
    LedgerRow,
    RowStatus,
    TallyKey,
    Verdict,
    default_state_path,
    open_existing,
)
from audiopipe.errors import UsageError

# the order counts are shown in
SHOWN = (RowStatus.SENT, RowStatus.PENDING, RowStatus.DEFERRED, TallyKey.BLOCKED, RowStatus.UNKNOWN, RowStatus.FAILED,
         RowStatus.SENDING)
LIST_LIMIT = 50  # rows listed per kind in the text output; --json lists them all
RESOLVED_SHOWN = 10  # sends resolved by hand listed, the newest first


@dataclass
class LedgerStatus:
    path: Path | str   # the SQLite file, or the database as connection.describe names it
    ledger_id: str | None
    campaign: str | None
    running: str | None
    campaigns: dict[str, dict[str, int]]
    problems: list[LedgerRow] = field(default_factory=list)            # failed, unknown, sending, deferred
    blocked: list[BlockedPart] = field(default_factory=list)
    resolved: list[LedgerRow] = field(default_factory=list)
    pending_from: list[dict[str, Any]] = field(default_factory=list)  # see SqliteLedger.pending_sources
    sent_by: dict[str, dict[str, int]] = field(default_factory=dict)  # campaign -> upload/url -> sends

    @property
    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.campaigns.values():
            for k, v in counts.items():
                out[k] = out.get(k, 0) + v
        return {k: out.get(k, 0) for k in (*SHOWN, TallyKey.RESOLVED)}

    @property
    def interrupted(self) -> int:
        """Rows a dead run left mid-request (while a batch runs, 'sending' is simply in flight)."""
        return 0 if self.running else self.totals[RowStatus.SENDING]

    def verdict(self) -> Verdict:
        t = self.totals
        if t[RowStatus.UNKNOWN] or self.interrupted:
            return Verdict.UNKNOWN
        if t[RowStatus.FAILED]:
            return Verdict.FAILED
        if t[RowStatus.PENDING] or t[RowStatus.DEFERRED] or t[TallyKey.BLOCKED] or t[RowStatus.SENDING]:
            return Verdict.LEFT
        return Verdict.OK

    def next_steps(self) -> list[str]:
        """What the user can do about what is left, one line each."""
        t, steps = self.totals, []
        unknown = t[RowStatus.UNKNOWN] + self.interrupted
        if unknown:
            steps.append(f"{unknown} unknown: check whether they arrived (ask the contact, or the Lancepilot "
                         "dashboard), then `audiopipe resolve --campaign C --contact ID --file NAME "
                         "--delivered [--message-id ID]` or `--not-delivered` (--all-unknown for all); "
                         "or resend them all with `audiopipe batch ... --retry-unknown`")
        if t[TallyKey.BLOCKED]:
            steps.append(f"{t[TallyKey.BLOCKED]} blocked: they go out after the part they wait behind is settled "
                         "(resolved if unknown, --retry-failed if refused)")
        if t[RowStatus.FAILED]:
            steps.append(f"{t[RowStatus.FAILED]} failed: the server refused them; fix the cause (a contact that "
                         "does not exist, a file too large), then `audiopipe batch ... --retry-failed`")
        left = t[RowStatus.PENDING] + t[RowStatus.DEFERRED]
        if left:
            steps.append(f"{left} not sent yet ({t[RowStatus.PENDING]} never attempted, {t[RowStatus.DEFERRED]} "
                         "deferred): "
                         + ("the running batch is sending them" if self.running and t[RowStatus.PENDING]
                            else "run the same `audiopipe batch` again to send them"))
        return steps

    def to_json(self) -> dict[str, Any]:
        blocked_keys = {row.key for row, _, _ in self.blocked}
        return {
            "state": str(self.path), "ledger_id": self.ledger_id, "campaign": self.campaign,
            "running": self.running, "verdict": self.verdict(), "counts": self.totals,
            "campaigns": self.campaigns,
            "problems": [dict(_row_json(r), error=r.error, status=r.status, attempts=r.attempts)
                         for r in self.problems if r.key not in blocked_keys],
            "blocked": [dict(_row_json(r), blocked_by_part=part, blocked_by_state=state)
                        for r, part, state in self.blocked],
            "resolved": [dict(_row_json(r), message_id=r.message_id, resolved=r.resolved) for r in self.resolved],
            "pending_from": self.pending_from,
            "sent_by": self.sent_by,
        }


def _row_json(r: LedgerRow) -> dict[str, Any]:
    return {"campaign": r.key.campaign, "workspace": r.key.workspace, "contact": r.key.contact,
            "file": r.file, "part": r.key.part, "parts": r.parts, "state": r.state}


def read_status(path: str | Path | None = None, campaign: str | None = None, *,
                limit: int | None = None) -> LedgerStatus:
    """Read what the ledger at ``path`` knows (changing nothing in it). ``limit`` caps each list."""
    path = Path(path) if path else default_state_path()
    ledger = open_existing(path)
    if ledger is None:
        raise UsageError(f"no ledger at {path}: nothing has been sent with it yet (or give --state)")
    with ledger:
        return ledger_status(ledger, path, campaign, limit=limit)


def ledger_status(ledger: Ledger, where: Path | str, campaign: str | None, *, limit: int | None) -> LedgerStatus:
    """What an open ledger knows (SQLite, or a shared database's, named ``where``)."""
    running = ledger.running()
    campaigns = ledger.tally(campaign, running=running is not None)
    if campaign is not None and campaign not in campaigns:
        known = ", ".join(repr(c) for c in ledger.campaigns()) or "none yet"
        raise UsageError(f"the ledger {where} has no sends in campaign {campaign!r} (its campaigns: {known})")
    problems = ledger.rows(campaign, (RowStatus.UNKNOWN, RowStatus.SENDING, RowStatus.FAILED, RowStatus.DEFERRED),
                           limit=limit)
    blocked = ledger.blocked(campaign, running=running is not None, limit=limit)
    resolved = ledger.resolutions(campaign, limit=limit)
    sent_by = getattr(ledger, "sent_by_counts", None)  # how each send went out (upload or URL)
    return LedgerStatus(where, ledger.ledger_id, campaign, running, campaigns, problems, blocked, resolved,
                        ledger.pending_sources(campaign), sent_by(campaign) if sent_by is not None else {})
