"""Settling sends whose outcome is unknown, once a person has found out.

A send is ``unknown`` when the upload went out and no answer came back (a timeout, a reset, a 5xx):
the message may or may not exist, and the API cannot be asked. audiopipe never resends such a row on
its own. After checking with the customer or on the Lancepilot dashboard, the user says what
happened: *delivered* (the row becomes sent, with the message id when known; the next run skips it
and sends the parts after it) or *not delivered* (the row becomes deferred; the next run sends it).
Each is recorded in the ledger with who and when, and `audiopipe status` shows it.

Only unknown rows can be settled this way, and only while no batch runs on the ledger: a running
batch decides each row from what it read just before sending it, so a change under it would take
effect at a moment nobody can tell; and holding the run lock makes a row left ``sending`` by a dead
run as unknown as any other.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from audiopipe.campaign.ledger import RESOLVABLE, Ledger, LedgerRow, NotResolvable, Outcome, RowStatus
from audiopipe.errors import UsageError

MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")  # the API's ids are UUIDs; allow any plain token


@dataclass(frozen=True)
class Selection:
    """Which sends to settle. Without ``all_unknown``, ``contact`` and ``file`` (as `audiopipe status`
    shows them) name one recording, and the selection must come down to one unknown send."""

    campaign: str | None = None
    workspace: str | None = None
    contact: str | None = None
    file: str | None = None
    part: int | None = None
    all_unknown: bool = False

    def describe(self) -> str:
        said = [f"{name} {value}" for name, value in (("campaign", self.campaign), ("workspace", self.workspace),
                                                      ("contact", self.contact), ("file", self.file),
                                                      ("part", self.part)) if value is not None]
        return ", ".join(said) or "every campaign"


@dataclass(frozen=True)
class Resolution:
    """One settled send: the row as it was, what it became, and how many parts it frees."""

    before: LedgerRow
    delivered: bool
    message_id: str | None
    by: str
    freed_parts: int

    @property
    def outcome(self) -> Outcome:
        return Outcome.DELIVERED if self.delivered else Outcome.NOT_DELIVERED

    def line(self) -> str:
        """What was recorded and what the next batch will do, in one line."""
        key = self.before.key
        part = f" part {key.part}/{self.before.parts}" if self.before.parts > 1 else ""
        after = f"the {self.freed_parts} part(s) after it" if self.freed_parts else ""
        if self.delivered:
            what = f"{Outcome.DELIVERED}" + (f" (message id {self.message_id})" if self.message_id else "")
            then = "the next batch skips it" + (f" and sends {after}" if after else "")
        else:
            what, then = f"{Outcome.NOT_DELIVERED}", "the next batch sends it" + (f" and {after}" if after else "")
        return f"resolved: [{key.campaign}] {key.contact} {self.before.file}{part}: {what}, by {self.by}; {then}"

    def to_json(self) -> dict[str, Any]:
        key = self.before.key
        return {"campaign": key.campaign, "workspace": key.workspace, "contact": key.contact,
                "file": self.before.file, "part": key.part, "parts": self.before.parts, "was": self.before.state,
                "resolved": self.outcome, "message_id": self.message_id,
                "by": self.by, "frees_parts": self.freed_parts}


def resolve_hint(campaign: str, contact: str, file: str, part: int | None = None) -> str:
    """The command that settles one unknown send, ready to copy (``--delivered`` shown; the other
    choice is ``--not-delivered``)."""
    words = ["audiopipe", "resolve", "--campaign", campaign, "--contact", contact, "--file", file]
    if part is not None and part > 1:
        words += ["--part", str(part)]
    return " ".join(shlex.quote(w) for w in words) + " --delivered|--not-delivered"


def who() -> str:
    """user@host, for the record of who settled a send."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (a bare container)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname() or 'localhost'}"


NOTE_LIMIT = 1000  # characters: what was checked, not a file


def check_selection(selection: Selection, *, delivered: bool, message_id: str | None,
                    note: str | None = None) -> Selection:
    """Refuse a request that cannot be right before the ledger is touched; the contact in canonical form."""
    if note is not None and len(note) > NOTE_LIMIT:
        raise UsageError(f"--note is {len(note)} characters; keep it under {NOTE_LIMIT}")
    if not selection.all_unknown and (selection.contact is None or selection.file is None):
        raise UsageError("name the send with --contact and --file (as `audiopipe status` shows them), "
                         "or give --all-unknown")
    if message_id is not None:
        if not delivered:
            raise UsageError("--message-id goes with --delivered (a message that was not delivered has none)")
        if not MESSAGE_ID.fullmatch(message_id):
            raise UsageError(f"--message-id {message_id!r} is not a message id (letters, digits, . _ : -)")
    if selection.part is not None and selection.part < 1:
        raise UsageError("--part counts from 1")
    contact = selection.contact
    if contact is not None:
        try:
            contact = str(uuid.UUID(contact.strip()))
        except ValueError:
            raise UsageError(f"--contact {contact!r} is not a UUID") from None
    return Selection(selection.campaign, selection.workspace, contact, selection.file, selection.part,
                     selection.all_unknown)


def resolve_unknown(ledger: Ledger, selection: Selection, *, delivered: bool,
                    message_id: str | None = None, note: str | None = None,
                    by: str | None = None) -> list[Resolution]:
    """Settle the unknown sends ``selection`` names, all in one transaction. Takes the run lock for
    the time it takes (:class:`~audiopipe.campaign.ledger.LedgerLocked` when a batch holds it). Raises
    :class:`~audiopipe.campaign.ledger.NotResolvable` for a send that is not unknown, and UsageError for a
    selection that names nothing, or several sends where one was meant."""
    selection = check_selection(selection, delivered=delivered, message_id=message_id, note=note)
    ledger.acquire()
    try:
        chosen = _choose(ledger, selection)
        if not chosen:
            return []
        if message_id is not None and len(chosen) > 1:
            raise UsageError(f"--message-id names one message, but {len(chosen)} sends are selected")
        by = by or who()
        before = ledger.resolve([r.key for r in chosen], delivered=delivered, by=by, message_id=message_id,
                                note=note)
        return [Resolution(r, delivered, message_id, by, _later_parts(ledger, r)) for r in before]
    finally:
        ledger.release()


def _choose(ledger: Ledger, sel: Selection) -> list[LedgerRow]:
    found = ledger.rows(sel.campaign, workspace=sel.workspace, contact=sel.contact, file=sel.file,
                        part=sel.part)
    unknown = [r for r in found if r.state in RESOLVABLE]
    if sel.all_unknown:
        return unknown
    if not found:
        raise UsageError(f"no send matches {sel.describe()} in the ledger {ledger.location}; "
                         "`audiopipe status` lists them")
    if not unknown:
        raise NotResolvable(_not_unknown(ledger, sel, found))
    if len(unknown) > 1:
        apart = [name for name, values in (("--campaign", {r.key.campaign for r in unknown}),
                                           ("--workspace", {r.key.workspace for r in unknown}),
                                           ("--part", {r.key.part for r in unknown})) if len(values) > 1]
        raise UsageError(f"{sel.describe()} matches {len(unknown)} unknown sends; tell them apart with "
                         + (" and ".join(apart) or "--campaign") + " (or give --all-unknown for them all)")
    return unknown


def _not_unknown(ledger: Ledger, sel: Selection, found: list[LedgerRow]) -> str:
    """One line: what the named send is instead, and the part to resolve when it waits behind one."""
    what = f"{sel.file} to {sel.contact}"
    found = sorted(found, key=lambda r: (r.key.campaign, r.key.workspace, r.key.part))
    if len(found) == 1:
        row = found[0]
        part = f" part {row.key.part}" if row.parts > 1 else ""
        line = f"the send of {what}{part} is {_state_words(row)}, not unknown"
    else:
        line = f"no send of {what} is unknown (" + "; ".join(
            f"part {r.key.part}: {_state_words(r)}" for r in found[:6]) + ("; ..." if len(found) > 6 else "") + ")"
    waiting_behind = [b for r in found if r.parts > 1 for b in _unknown_before(ledger, r)]
    if waiting_behind:
        first = min(waiting_behind, key=lambda b: b.key.part)
        return line + f": it waits behind part {first.key.part}, which is unknown; resolve that part"
    return line + ": only a send whose outcome is unknown can be resolved"


def _unknown_before(ledger: Ledger, row: LedgerRow) -> list[LedgerRow]:
    return [r for r in ledger.rows(row.key.campaign, RESOLVABLE, workspace=row.key.workspace,
                                   contact=row.key.contact)
            if r.key.source_sha256 == row.key.source_sha256 and r.key.part < row.key.part]


def _state_words(row: LedgerRow) -> str:
    if row.state == RowStatus.SENT and row.resolved:
        return "sent (resolved by hand)"
    return {RowStatus.PENDING: "pending (never attempted)",
            RowStatus.DEFERRED: "deferred (not sent yet: the next run sends it)",
            RowStatus.FAILED: "failed (refused by the server)"}.get(row.state, row.state)


def _later_parts(ledger: Ledger, row: LedgerRow) -> int:
    """How many later parts of the same recording wait for this one."""
    if row.parts <= 1:
        return 0
    waiting = ledger.rows(row.key.campaign, (RowStatus.PENDING, RowStatus.DEFERRED), workspace=row.key.workspace,
                          contact=row.key.contact)
    return sum(1 for r in waiting if r.key.source_sha256 == row.key.source_sha256 and r.key.part > row.key.part)


