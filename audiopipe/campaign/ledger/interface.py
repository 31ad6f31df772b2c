"""The ledger as its users see it: what any ledger promises, whatever stores it.

**The protocol.** One row per (campaign, workspace, contact, source content hash, part). Before its
first send a run records its whole plan, every send ``pending`` (one transaction), so a run stopped
part-way leaves a ledger that knows what is left. The intent ("sending") is committed before each
request goes out; the result when it comes back. A row still "sending" when a run starts belongs to a
run that died mid-request: nobody knows whether the message was created, so it becomes "unknown"
(:meth:`SendRecorder.recover`) and is resent only when the user says so (``--retry-unknown``), or
settled by a person who found out (:meth:`Resolver.resolve`, ``audiopipe resolve``), which is kept as
an event with who and when. No plan ever turns a row that was attempted back into ``pending``.

The batch, `audiopipe status` and `audiopipe resolve` speak to these protocols only, so a shared
database ledger can take the place of :class:`~audiopipe.campaign.ledger.sqlite.SqliteLedger`
without touching them. Each part is a protocol of its own, so a stage that only plans, or only sends,
can say that it needs no more (``tests/test_ledger_contract.py`` holds every ledger to them).
"""

from __future__ import annotations

from typing import Any, Protocol

from audiopipe.campaign.ledger.rows import BlockedPart, LedgerIdentity, LedgerRow, PlannedSend, SendKey
from audiopipe.campaign.ledger.vocabulary import RowStatus


class LedgerLock(Protocol):
    """One sending run per ledger at a time."""

    def acquire(self) -> None:
        """Take the run lock, or raise LedgerLocked naming who holds it; dropped if the holder dies."""

    def release(self) -> None:
        """Let the next run in (nothing when not held)."""

    def running(self) -> str | None:
        """Who holds the run lock (a run in progress), or None (also when it is this ledger itself)."""


class PlanRecorder(Protocol):
    """Planning: every send of a run recorded before the first goes out."""

    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int:
        """Record ``sends`` as ``pending``, all or none, keeping the state of rows that exist; drop the
        pending rows of ``work``'s earlier plan that this one no longer holds (in ``campaign`` and the
        sends' campaigns). Returns how many sends of this work are pending."""


class SendRecorder(Protocol):
    """Sending: the intent committed before each request, the result after."""

    def recover(self) -> int:
        """Make every row a dead run left ``sending`` ``unknown``, with an event each. Returns how many."""

    def get(self, key: SendKey) -> LedgerRow | None: ...

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str,
              sent_by: str | None = None) -> None:
        """Commit the intent to send (the row becomes ``sending``, one more attempt); ``sent_by``:
        how its request gives the API the file (upload or url)."""

    def finish(self, key: SendKey, state: RowStatus, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None:
        """Commit the result of a send: one of the FINAL_STATES (ValueError for any other)."""


class Resolver(Protocol):
    """Settling by hand what no run can know."""

    def resolve(self, keys: list[SendKey], *, delivered: bool, by: str, message_id: str | None = None,
                note: str | None = None) -> list[LedgerRow]:
        """Settle sends whose outcome is unknown, all or none (NotResolvable for any other): delivered
        ones become sent, the others deferred, each marked with who and when. Returns the rows as
        they were. Call it holding the run lock (a row then still ``sending`` is a dead run's)."""


class LedgerReader(Protocol):
    """What a ledger knows, read without changing it."""

    @property
    def ledger_id(self) -> str | None:
        """The ledger's random id (None for a ledger from before ids, read without writing)."""

    @property
    def location(self) -> str:
        """Where it lives, as messages to the user name it."""

    def rows(self, campaign: str | None = None, states: tuple[RowStatus, ...] | None = None, *,
             workspace: str | None = None, contact: str | None = None, file: str | None = None,
             part: int | None = None, limit: int | None = None) -> list[LedgerRow]: ...

    def counts(self, campaign: str | None = None) -> dict[str, int]:
        """How many sends are in each state: every RowStatus is a key."""

    def campaigns(self) -> list[str]:
        """Every campaign with a send, sorted."""

    def tally(self, campaign: str | None = None, *, running: bool = False) -> dict[str, dict[str, int]]:
        """Per campaign: its counts, with ``blocked`` taken out of pending and deferred, and ``resolved``
        (see TallyKey). ``running``: a batch holds the lock, so ``sending`` rows are in flight."""

    def blocked(self, campaign: str | None = None, *, running: bool = False,
                limit: int | None = None) -> list[BlockedPart]: ...

    def pending_sources(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Per campaign and work, how many pending sends, and the ``folder``, ``contacts`` and
        ``planned_at`` of the plan that recorded them (None when not known)."""

    def resolutions(self, campaign: str | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows a person settled and no run has touched since, newest first."""

    def identity(self) -> LedgerIdentity | None:
        """Which ledger this is (None for one without an id yet)."""

    def tried(self, campaign: str) -> int:
        """How many sends of ``campaign`` were ever attempted: a number that never goes down."""

    def records(self) -> int:
        """How many records the ledger has ever written: a number that never goes down."""


class Ledger(LedgerLock, PlanRecorder, SendRecorder, Resolver, LedgerReader, Protocol):
    """A whole ledger."""

    def close(self) -> None:
        """Release the run lock if held, and let go of the store."""

    def __enter__(self) -> Ledger: ...

    def __exit__(self, *exc: object) -> None:
        """Close it."""
