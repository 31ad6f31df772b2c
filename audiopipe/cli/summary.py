"""What `batch` and `status` tell a person at the end: the problems grouped, what was held back, and
the counts (and the batch's ``--json``). Text only: the CLI prints these lines (through
``console.say``, which escapes them).

The same refusal for many rows (one missing contact for 7 files, one file the server refuses for
500 contacts) is one line with a count and the first few rows it touched, not one line per row;
``-v`` lists every row under its line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiopipe.cli.flags import told
from audiopipe.cli.render import file_fields
from audiopipe.text import human_size

SAMPLE = 3        # rows (contacts, files...) named in a group's line
GROUP_LIMIT = 20  # groups shown without -v


@dataclass(frozen=True)
class Problem:
    """One row that did not go as planned.

    ``label`` says where, alone on a line (``line 4: CONTACT FILE part 1/2``); ``facets`` are what
    a group of such rows is summed up by (("line", "4"), ("contact", ...), ("file", ...))."""

    kind: str
    message: str
    label: str
    facets: tuple[tuple[str, str], ...] = ()


@dataclass
class ProblemGroup:
    kind: str
    message: str
    items: list[Problem] = field(default_factory=list)


def group_problems(problems: Iterable[Problem]) -> list[ProblemGroup]:
    """Rows with the same (kind, message) together, in the order each first appears."""
    groups: dict[tuple[str, str], ProblemGroup] = {}
    for p in problems:
        groups.setdefault((p.kind, p.message), ProblemGroup(p.kind, p.message)).items.append(p)
    return list(groups.values())


def _facet(name: str, values: Sequence[str]) -> str | None:
    distinct = list(dict.fromkeys(v for v in values if v))
    if not distinct:
        return None
    if len(distinct) == 1:
        return f"{name} {distinct[0]}"
    more = len(distinct) - SAMPLE
    return (f"{len(distinct)} {name}s: {', '.join(distinct[:SAMPLE])}"
            + (f" and {more} more" if more > 0 else ""))


def group_line(group: ProblemGroup) -> str:
    """``failed: 7 rows (contact X; 7 files: a.wav, b.wav, c.wav and 4 more): MESSAGE``; a group of
    one is the row's own line, ``failed: line 4: CONTACT FILE: MESSAGE``."""
    if len(group.items) == 1:
        only = group.items[0]
        return f"{group.kind}: {only.label}: {group.message}" if only.label else f"{group.kind}: {group.message}"
    names = list(dict.fromkeys(name for p in group.items for name, _ in p.facets))
    parts = [_facet(name, [dict(p.facets).get(name, "") for p in group.items]) for name in names]
    facets = "; ".join(p for p in parts if p)
    return f"{group.kind}: {len(group.items)} rows" + (f" ({facets})" if facets else "") + f": {group.message}"


def _truncated(group: ProblemGroup) -> bool:
    if len(group.items) < 2:
        return False
    names = {name for p in group.items for name, _ in p.facets}
    return any(len({dict(p.facets).get(n, "") for p in group.items} - {""}) > SAMPLE for n in names)


def problem_lines(problems: Iterable[Problem], *, verbose: bool = False, limit: int | None = GROUP_LIMIT,
                  more_hint: str = "see --report or 'audiopipe status'") -> list[str]:
    """One line per group; with ``verbose`` every row of a group under it, and no limit."""
    groups = group_problems(problems)
    shown = groups if verbose or limit is None else groups[:limit]
    lines: list[str] = []
    for g in shown:
        lines.append(group_line(g))
        if verbose and len(g.items) > 1:
            lines.extend(f"  {p.label}" for p in g.items)
    rest = groups[len(shown):]
    if rest:
        lines.append(f"... and {len(rest)} more problem(s) in {sum(len(g.items) for g in rest)} row(s) "
                     f"({more_hint}; -v lists them all)")
    elif not verbose and any(_truncated(g) for g in shown):
        lines.append("(-v lists every row)")
    return lines


# --- batch -----------------------------------------------------------------------------------------

PROBLEM_STATUSES = ("failed", "unknown", "invalid", "not_sent", "blocked")


def row_problem(r: Any) -> Problem:
    """A batch row (``RowResult``) as a :class:`Problem`."""
    where = f"line {r.line}: " if r.line else ""
    what = " ".join(x for x in (r.contact, r.file) if x)
    part = f" part {r.part}/{r.parts}" if r.parts and r.parts > 1 else ""
    return Problem(r.status, r.error or "", f"{where}{what}{part}",
                   (("line", str(r.line or "")), ("contact", r.contact or ""), ("file", r.file or "")))


def failure_line(outcome: Any) -> str:
    """Why an input could not be prepared, starting with its path (an ffmpeg error does not name it)."""
    text = told(outcome.error)
    return text if text.startswith(str(outcome.source)) else f"{outcome.source}: {text}"


def _is_held(r: Any, result: Any) -> bool:
    return r.status == "not_sent" and r.part is None and r.file in result.held_back


def held_back_lines(result: Any, settle: float, *, verbose: bool = False) -> list[str]:
    """Why files that were just copied in went nowhere (``--settle``), and how to send them now."""
    held = result.held_back
    if not held:
        return []
    rows = sum(1 for r in result.rows if _is_held(r, result))
    lines = [f"{len(held)} file(s) changed in the last {settle:g} s were held back ({rows} message(s)): "
             "they may still be arriving; the next run sends them, or pass --settle 0 to send them now"]
    if verbose:
        lines.extend(f"  held back: {name} (changed {age:.0f} s ago)" for name, age in sorted(held.items()))
    return lines


def batch_lines(result: Any, *, campaign: str, settle: float, verbose: bool = False,
                interrupted: bool = False) -> list[str]:
    """The batch's closing lines on stderr: what could not be prepared, the problems grouped, what
    was held back, what was prepared, the counts, and why the run stopped."""
    lines: list[str] = []
    # a file that could not be prepared is one problem, however many contacts it was for
    for o in result.prepared:
        if o.error is not None:
            lines.append(f"failed: {failure_line(o)} (skipped for every contact)")
    listed = [r for r in result.rows if r.status in PROBLEM_STATUSES
              and not (r.status == "failed" and r.part is None) and not _is_held(r, result)]
    if result.stopped:  # one line for everything the stop held back, not one per row
        held = [r for r in listed if r.status == "not_sent"]
        listed = [r for r in listed if r.status != "not_sent"]
        if held:
            why = ("the run was interrupted; the next run sends them" if interrupted
                   else "because the run stopped")
            lines.append(f"not_sent: {len(held)} message(s), {why}")
    lines.extend(problem_lines((row_problem(r) for r in listed), verbose=verbose))
    lines.extend(held_back_lines(result, settle, verbose=verbose))
    actions = Counter(o.result.action if o.result else "failed" for o in result.prepared)
    if actions:
        lines.append(f"{result.unique_files} file(s) prepared once each: "
                     + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())))
    counts = result.counts()
    if result.dry_run:
        would = human_size(sum(r.size or 0 for r in result.rows if r.status == "would_send"))
        lines.append(f"dry run, campaign {campaign!r}: {len(result.rows)} message(s) from "
                     f"{result.unique_files} file(s); would send {counts['would_send']} ({would}), "
                     f"already sent {counts['already_sent']}, failed {counts['failed']}, "
                     f"unknown {counts['unknown']}, invalid {counts['invalid']}"
                     + (f", blocked {counts['blocked']}" if counts['blocked'] else ""))
    else:
        lines.append(f"campaign {campaign!r}: {counts['sent']} sent, {counts['already_sent']} already sent, "
                     f"{counts['failed']} failed, {counts['unknown']} unknown, {counts['invalid']} invalid, "
                     f"{counts['not_sent']} not sent yet"
                     + (f", {counts['blocked']} blocked behind an unknown or refused part" if counts['blocked'] else "")
                     + (f" ({result.recovered} found interrupted)" if result.recovered else ""))
    if result.stopped and not interrupted:  # an interruption has its own closing line
        lines.append(f"audiopipe: error: stopped: {result.stopped}")
    return lines


def problem_groups_json(result: Any) -> list[dict[str, Any]]:
    """The grouped problems for ``--json``: kind, message, count (files held back are ``held_back``)."""
    rows = [r for r in result.rows if r.status in PROBLEM_STATUSES and not _is_held(r, result)]
    return [{"status": g.kind, "message": g.message, "count": len(g.items)}
            for g in group_problems(row_problem(r) for r in rows)]


def batch_json(result: Any, report: Path | None, interrupted: bool) -> dict[str, Any]:
    """The batch's ``--json``: its summary, the problems (grouped, and the first 1000 rows), each file."""
    problems = [r for r in result.rows if r.status in PROBLEM_STATUSES]
    return dict(result.summary(), report=str(report) if report else None, interrupted=interrupted,
                problem_groups=problem_groups_json(result), problems=[r.to_dict() for r in problems[:1000]],
                files=[file_fields(o.result) for o in result.prepared if o.result])


def interrupted_after(stage: str, result: Any) -> str:
    """What the interruption line adds once the batch has stopped: what was done, how to go on."""
    if stage != "sending":
        return "nothing was sent; run the same command again to continue"
    sent = result.counts()["sent"]
    return (f"{sent} sent before it stopped, the sends in flight recorded; run the same command again "
            "to continue")


# --- status ----------------------------------------------------------------------------------------

def ledger_problem(r: Any, running: bool) -> Problem:
    """A ledger row (``LedgerRow``) that ``status`` shows as a :class:`Problem`."""
    part = f" part {r.key.part}/{r.parts}" if r.parts > 1 else ""
    detail = r.error or ("in flight" if running else "interrupted mid-request")
    return Problem(r.state, detail, f"[{r.key.campaign}] {r.key.contact} {r.file}{part}",
                   (("campaign", r.key.campaign), ("contact", r.key.contact), ("file", r.file or "")))
