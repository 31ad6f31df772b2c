"""What a ledger holds and hands out: the key of a send, a send's row, a send a run plans, a part held
back behind another, and which ledger it is. Plain values, the same whatever stores them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from audiopipe.campaign.ledger.vocabulary import RowStatus


@dataclass(frozen=True)
class SendKey:
    """One send: a part of one recording (by content) to one contact of one campaign. The ledger
    holds one row per key, so a key sent once is never sent again."""

    campaign: str
    workspace: str
    contact: str
    source_sha256: str
    part: int


@dataclass(frozen=True)
class LedgerRow:
    key: SendKey
    state: RowStatus
    parts: int
    file: str
    prepared_sha256: str | None
    message_id: str | None
    error: str | None
    status: int | None
    attempts: int
    updated_at: float
    work: str | None = None       # which folder and contacts file planned it (see WorkMarker.work_id)
    resolved: dict[str, Any] | None = None  # settled by a person: outcome, by, at, note
    sent_by: str | None = None    # how its last request gave the API the file: upload or url
    stored: str | None = None     # the part's key in the campaign's store (distributed campaigns)


@dataclass(frozen=True)
class PlannedSend:
    """One send a batch means to make, recorded ``pending`` before the first request goes out."""

    key: SendKey
    parts: int
    file: str
    prepared_sha256: str


class BlockedPart(NamedTuple):
    """A pending or deferred part of a split recording that waits behind an earlier part no run will
    send on its own (unknown, refused, or left mid-request by a dead run)."""

    row: LedgerRow
    behind_part: int
    behind_state: RowStatus


@dataclass(frozen=True)
class LedgerIdentity:
    """Which ledger this is: its random id, where it lives, and how many records it has written
    (a number that only grows, so an older copy of the same ledger shows as fewer)."""

    ledger_id: str
    path: str
    records: int
    tried: int | None = None  # sends of the campaign ever attempted (see Ledger.tried)
