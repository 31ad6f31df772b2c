"""What `audiopipe status` prints: the counts in all and per campaign, the sends that need a person,
the parts blocked behind them, those settled by hand, and what to do next.

Text only (the command prints it through ``console.say``, which escapes it); what the ledger says is
:class:`~audiopipe.campaign.status.LedgerStatus`, read by :func:`~audiopipe.campaign.status.read_status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from audiopipe.campaign.ledger import DEFERRED, FAILED, SENDING, UNKNOWN, BlockedPart, LedgerRow
from audiopipe.campaign.status import LIST_LIMIT, RESOLVED_SHOWN, SHOWN, LedgerStatus
from audiopipe.cli.summary import ledger_problem, problem_lines


def status_lines(status: LedgerStatus, verbose: bool = False) -> list[str]:
    """The counts in all and per campaign, the rows that need a person, the blocked parts by
    recording, the newest sends resolved by hand, and what to do next."""
    out = [f"ledger {status.path}" + (f" (id {status.ledger_id[:8]})" if status.ledger_id else "")
           + (f", campaign {status.campaign!r}" if status.campaign else "")]
    if status.running:
        out.append(f"  a batch is running now ({status.running}): 'sending' rows are in flight")
    return out + body_lines(status, verbose) + [f"next: {step}" for step in status.next_steps()]


def body_lines(status: LedgerStatus, verbose: bool, about: Callable[[str], list[str]] = lambda name: []) -> list[str]:
    """What any ledger's status shows below its header: the counts, each campaign (with ``about(name)``'s
    lines under it), the rows that need a person, the blocked parts and the resolutions."""
    out = ["  " + "  ".join(f"{k}: {status.totals[k]}" for k in SHOWN)]
    for name, counts in status.campaigns.items():
        out.append("  " + campaign_line(name, counts))
        if status.sent_by.get(name):
            out.append("    " + sent_by_line(status.sent_by[name]))
        out += ["    " + line for line in about(name)]
        out += ["    " + pending_line(src) for src in status.pending_from if src["campaign"] == name]
    blocked_keys = {row.key for row, _, _ in status.blocked}  # listed by recording, below
    problems = [r for r in status.problems if r.key not in blocked_keys and not r.resolved]
    # the same refusal for many rows is one line with a count; -v lists the rows
    out += problem_lines((ledger_problem(r, bool(status.running)) for r in problems[:LIST_LIMIT]),
                         verbose=verbose, limit=None)
    out += blocked_lines(status.blocked[:LIST_LIMIT])
    out += [resolved_line(r) for r in status.resolved[:RESOLVED_SHOWN]]  # the newest; they stay resolved
    if len(status.resolved) > RESOLVED_SHOWN:
        out.append(f"... {status.totals['resolved'] - RESOLVED_SHOWN} more resolved by hand; --json lists them all")
    if max(len(problems), len(status.blocked)) > LIST_LIMIT:
        out.append(f"... the first {LIST_LIMIT} of each kind are listed; --json lists them all")
    return out


def sent_by_line(counts: dict[str, int]) -> str:
    """How the campaign's sends gave the API their file: ``sent by url: 500, by upload: 2``."""
    return "sent by " + ", by ".join(f"{mode}: {n}" for mode, n in sorted(counts.items(), key=lambda i: -i[1]))


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


BLOCKED_BY: dict[str, str] = {
    UNKNOWN: "whose outcome is unknown (resolve it)",
    FAILED: "which the server refused (fix it, then --retry-failed)",
    SENDING: "which a run left mid-request: unknown (resolve it)",
}


def blocked_lines(blocked: Sequence[BlockedPart]) -> list[str]:
    """One line per recording and contact, its blocked parts together ("parts 2-3 of 3")."""
    groups: dict[tuple[str, str, str, str], list[BlockedPart]] = {}
    for item in blocked:
        k = item[0].key
        groups.setdefault((k.campaign, k.workspace, k.contact, k.source_sha256), []).append(item)
    lines = []
    for items in groups.values():
        row, by_part, by_state = items[0]
        parts = [r.key.part for r, _, _ in items]
        which = f"part {parts[0]}" if len(parts) == 1 else f"parts {_ranges(parts)}"
        why = BLOCKED_BY.get(by_state, by_state)
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
