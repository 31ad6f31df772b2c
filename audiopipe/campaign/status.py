"""What a ledger says is done and what is left, for `audiopipe status`: counts per campaign, the sends
that need a person (unknown, failed), the parts blocked behind them, and those settled by hand.

The verdict, most urgent first (the CLI turns it into its exit code):
``unknown`` some sends may or may not have been delivered (or a dead run left one mid-request);
``failed`` the server refused some; ``left`` some are not sent yet (planned and never attempted,
deferred after a 429 or a connection failure, or in flight in a running batch): the next batch sends
them; ``ok`` everything planned was sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiopipe.campaign.ledger import (
    DEFERRED,
    FAILED,
    SENDING,
    UNKNOWN,
    BlockedPart,
    LedgerRow,
    RowStatus,
    TallyKey,
    Verdict,
    default_state_path,
    open_existing,
)
from audiopipe.campaign.summary import ledger_problem, problem_lines
from audiopipe.errors import UsageError

# the order counts are shown in
SHOWN = (RowStatus.SENT, RowStatus.PENDING, RowStatus.DEFERRED, TallyKey.BLOCKED, RowStatus.UNKNOWN, RowStatus.FAILED,
         RowStatus.SENDING)
LIST_LIMIT = 50  # rows listed per kind in the text output; --json lists them all
RESOLVED_SHOWN = 10  # sends resolved by hand listed, the newest first


@dataclass
class LedgerStatus:
    path: Path
    ledger_id: str | None
    campaign: str | None
    running: str | None
    campaigns: dict[str, dict[str, int]]
    problems: list[LedgerRow] = field(default_factory=list)            # failed, unknown, sending, deferred
    blocked: list[BlockedPart] = field(default_factory=list)
    resolved: list[LedgerRow] = field(default_factory=list)
    pending_from: list[dict[str, Any]] = field(default_factory=list)  # see SqliteLedger.pending_sources

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

    def lines(self, verbose: bool = False) -> list[str]:
        """The text output: the counts in all and per campaign, the rows that need a person, the
        blocked parts by recording, the newest sends resolved by hand, and what to do next."""
        out = [f"ledger {self.path}" + (f" (id {self.ledger_id[:8]})" if self.ledger_id else "")
               + (f", campaign {self.campaign!r}" if self.campaign else "")]
        if self.running:
            out.append(f"  a batch is running now ({self.running}): 'sending' rows are in flight")
        out.append("  " + "  ".join(f"{k}: {self.totals[k]}" for k in SHOWN))
        for name, counts in self.campaigns.items():
            out.append("  " + campaign_line(name, counts))
            out += ["    " + pending_line(src) for src in self.pending_from if src["campaign"] == name]
        blocked_keys = {row.key for row, _, _ in self.blocked}  # listed by recording, below
        problems = [r for r in self.problems if r.key not in blocked_keys and not r.resolved]
        # the same refusal for many rows is one line with a count; -v lists the rows
        out += problem_lines((ledger_problem(r, bool(self.running)) for r in problems[:LIST_LIMIT]),
                             verbose=verbose, limit=None)
        out += blocked_lines(self.blocked[:LIST_LIMIT])
        out += [resolved_line(r) for r in self.resolved[:RESOLVED_SHOWN]]  # the newest; they stay resolved
        if len(self.resolved) > RESOLVED_SHOWN:
            out.append(f"... {self.totals['resolved'] - RESOLVED_SHOWN} more resolved by hand; --json lists them all")
        if max(len(problems), len(self.blocked)) > LIST_LIMIT:
            out.append(f"... the first {LIST_LIMIT} of each kind are listed; --json lists them all")
        return out + [f"next: {step}" for step in self.next_steps()]

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
        running = ledger.running()
        campaigns = ledger.tally(campaign, running=running is not None)
        if campaign is not None and campaign not in campaigns:
            known = ", ".join(repr(c) for c in ledger.campaigns()) or "none yet"
            raise UsageError(f"the ledger {path} has no sends in campaign {campaign!r} (its campaigns: {known})")
        problems = ledger.rows(campaign, (RowStatus.UNKNOWN, RowStatus.SENDING, RowStatus.FAILED, RowStatus.DEFERRED),
                               limit=limit)
        blocked = ledger.blocked(campaign, running=running is not None, limit=limit)
        resolved = ledger.resolutions(campaign, limit=limit)
        return LedgerStatus(path, ledger.ledger_id, campaign, running, campaigns, problems, blocked, resolved,
                            ledger.pending_sources(campaign))


def campaign_line(name: str, counts: dict[str, int]) -> str:
    total = sum(counts[k] for k in SHOWN)
    parts = []
    for k in SHOWN:
        if counts[k]:
            parts.append(f"{counts[k]} {'in flight or interrupted' if k == SENDING else k}")
    line = f"campaign {name!r}: {total} send(s): " + (", ".join(parts) or "none")
    return line + (f" ({counts['resolved']} resolved by hand)" if counts["resolved"] else "")


def pending_line(src: dict[str, Any]) -> str:
    """Which batch planned pending sends: the one to run again."""
    if not src.get("folder"):
        return f"{src['pending']} pending, planned by an earlier batch"
    at = src.get("planned_at")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if isinstance(at, (int, float)) else "?"
    return f"{src['pending']} pending from the batch of {src['folder']} with {src['contacts']} (planned {when})"


def blocked_lines(blocked: list[tuple[LedgerRow, int, str]]) -> list[str]:
    """One line per recording and contact, its blocked parts together ("parts 2-3 of 3")."""
    groups: dict[tuple[str, str, str, str], list[tuple[LedgerRow, int, str]]] = {}
    for item in blocked:
        k = item[0].key
        groups.setdefault((k.campaign, k.workspace, k.contact, k.source_sha256), []).append(item)
    lines = []
    for items in groups.values():
        row, by_part, by_state = items[0]
        parts = [r.key.part for r, _, _ in items]
        which = f"part {parts[0]}" if len(parts) == 1 else f"parts {_ranges(parts)}"
        why = {UNKNOWN: "whose outcome is unknown (resolve it)", FAILED: "which the server refused (fix it, then "
               "--retry-failed)", SENDING: "which a run left mid-request: unknown (resolve it)"}.get(by_state, by_state)
        lines.append(f"blocked: [{row.key.campaign}] {row.key.contact} {row.file} {which} of {row.parts}: "
                     f"waiting behind part {by_part}, {why}")
    return lines


def _ranges(parts: list[int]) -> str:
    spans: list[list[int]] = []
    for p in sorted(parts):
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def resolved_line(row: LedgerRow) -> str:
    mark = row.resolved or {}
    part = f" part {row.key.part}/{row.parts}" if row.parts > 1 else ""
    when = mark.get("at")
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if isinstance(when, (int, float)) else "?"
    what = f"{mark.get('outcome', '?')}, marked by {mark.get('by', '?')} on {at}"
    if row.message_id:
        what += f", message id {row.message_id}"
    if mark.get("note"):
        what += f" ({mark['note']})"
    if row.state == DEFERRED:
        what += "; the next batch sends it"
    return f"resolved by hand: [{row.key.campaign}] {row.key.contact} {row.file}{part}: {what}"
