"""The ledger's words: the states a send can be in, what a campaign's status comes to, the kinds of
record besides a send's own, and what a person found out about a send.

Each is a ``(str, Enum)``: a member compares equal to (and hashes like) the string it stands for, so
the values written to the database, to JSON and to reports are the same strings as ever, and a
caller still holding a bare string ("sent") finds the same row, count or key.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A word of the ledger's vocabulary; formats as its value ("sent", not "RowStatus.SENT")."""

    def __str__(self) -> str:
        return str(self.value)


class RowStatus(_Word):
    """The state of one send (one row of the ledger)."""

    PENDING = "pending"     # planned by a run, never attempted: the next run sends it
    SENDING = "sending"     # intent written, result not yet: outcome unknown if found by a later run
    SENT = "sent"
    FAILED = "failed"       # refused for good (404/413/422...): retried only when what is sent changes
    DEFERRED = "deferred"   # definitely not sent (429, connection failures): the next run tries again
    UNKNOWN = "unknown"     # may have been created: never resent without --retry-unknown


PENDING = RowStatus.PENDING
SENDING = RowStatus.SENDING
SENT = RowStatus.SENT
FAILED = RowStatus.FAILED
DEFERRED = RowStatus.DEFERRED
UNKNOWN = RowStatus.UNKNOWN
STATES: tuple[RowStatus, ...] = tuple(RowStatus)
# The states a result can be recorded as (see Ledger.finish): not before the send, not during it.
FINAL_STATES: tuple[RowStatus, ...] = (SENT, FAILED, DEFERRED, UNKNOWN)
# What a person may settle (see Ledger.resolve): SENDING only while the resolver holds the run lock,
# when a row still sending is a dead run's, as unknown as an unknown one.
RESOLVABLE: tuple[RowStatus, ...] = (UNKNOWN, SENDING)


class TallyKey(_Word):
    """Counts a tally keeps per campaign beside one per :class:`RowStatus`."""

    BLOCKED = "blocked"     # pending or deferred parts waiting behind a part no run sends on its own
    RESOLVED = "resolved"   # sends settled by hand (of any state)


class Verdict(_Word):
    """What the status of a ledger (or one campaign in it) comes to, most urgent first."""

    UNKNOWN = "unknown"     # some sends may or may not have been delivered (or a dead run left one mid-request)
    FAILED = "failed"       # the server refused some
    LEFT = "left"           # some are not sent yet: the next batch sends them
    OK = "ok"               # everything planned was sent


class EventKind(_Word):
    """Records of the ledger's history that are not a send changing state (those carry its RowStatus)."""

    PLANNED = "planned"     # a run recorded its plan (see Ledger.plan)
    RESOLVED = "resolved"   # a person settled a send (see Ledger.resolve)


class Outcome(_Word):
    """What a person found out about a send whose outcome was unknown."""

    DELIVERED = "delivered"
    NOT_DELIVERED = "not delivered"
