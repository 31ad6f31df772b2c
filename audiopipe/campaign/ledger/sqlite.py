"""The ledger in one SQLite file: :class:`SqliteLedger`, the :class:`~audiopipe.campaign.ledger.interface.Ledger`
every local run uses (the protocol it keeps is told there).

Every change goes one way: a write transaction (:meth:`SqliteLedger._transaction`, which also brings an
older ledger's columns up to date and turns any SQLite failure into one :class:`LedgerIOError`), the
rows changed, and an event for each change, so the ``events`` table is the ledger's whole history and
its count only grows (see :meth:`SqliteLedger.records`). A result, whoever records it (the run that
sent, the next run recovering a dead one's sends, a person settling one), goes through
:meth:`SqliteLedger._record_result`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiopipe.campaign.ledger import statements as q
from audiopipe.campaign.ledger.errors import LedgerIOError, NotResolvable
from audiopipe.campaign.ledger.rows import BlockedPart, LedgerIdentity, LedgerRow, PlannedSend, SendKey
from audiopipe.campaign.ledger.runlock import FileRunLock
from audiopipe.campaign.ledger.schema import meta, sqlite_reason, upgrade
from audiopipe.campaign.ledger.sqlite_file import LedgerFile, default_state_path
from audiopipe.campaign.ledger.vocabulary import (
    DEFERRED,
    FINAL_STATES,
    PENDING,
    RESOLVABLE,
    SENDING,
    SENT,
    STATES,
    UNKNOWN,
    EventKind,
    Outcome,
    RowStatus,
    TallyKey,
)

if TYPE_CHECKING:
    from audiopipe.campaign.ledger.interface import Ledger

RECOVERED = "the run stopped while this message was being sent; it may have been delivered"


class SqliteLedger:
    """The ledger in one SQLite file (WAL, synchronous=FULL: a commit survives a crash).

    ``create``: make the ledger if the file does not exist (``False`` for readers such as
    ``audiopipe status``, which also never add an id to an old ledger). ``allow_empty``: a 0-byte
    file is made a new ledger instead of being refused (``--new-ledger``: it holds nothing to lose).
    See :mod:`~audiopipe.campaign.ledger.sqlite_file` for how a file is opened, or refused.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True,
                 allow_empty: bool = False) -> None:
        self.path = Path(path) if path else default_state_path()
        self._lock = threading.Lock()  # one connection, shared by the sending threads
        self._file = LedgerFile(self.path, create=create, allow_empty=allow_empty)
        self._db = self._file.db
        self._columns = self._file.columns
        self.real_path = self._file.real_path
        self.ledger_id = self._file.ledger_id
        self._run_lock = FileRunLock(self._file.fd, self.path, self._holder)
        self._closed = False

    @property
    def location(self) -> str:
        return str(self.path)

    # -- the run lock: one run per ledger file at a time (see runlock) -------------------------------

    def acquire(self) -> None:
        """Take the run lock (an flock on the ledger file itself) and note who holds it."""
        self._run_lock.acquire(self._note_holder)

    def _note_holder(self, holder: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('holder', ?)", (holder,))

    def _holder(self) -> str | None:
        try:
            with self._lock:
                return meta(self._db, "holder")
        except sqlite3.Error:
            return None

    def running(self) -> str | None:
        """Who holds the run lock (a run in progress), or None."""
        return self._run_lock.running()

    def release(self) -> None:
        self._run_lock.release()

    # -- reading and writing ------------------------------------------------------------------------

    def _io_error(self, doing: str, exc: sqlite3.Error) -> LedgerIOError:
        return LedgerIOError(f"cannot {doing} the ledger {self.path}: {sqlite_reason(exc)}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction. A failure of any part (a full disk often fails the COMMIT itself,
        and SQLite may already have rolled back) is one LedgerIOError saying what happened."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._columns = upgrade(self._db, self._columns)
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        try:
                            self._db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass  # the error that matters is the one being raised
                    raise
            except sqlite3.Error as exc:
                raise self._io_error("write", exc) from None

    def _fetch(self, sql: str, args: tuple[Any, ...] | list[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._io_error("read", exc) from None

    def _event(self, at: float, key: SendKey, kind: str, detail: str | None) -> None:
        """Add one record to the history (inside a transaction)."""
        self._db.execute(q.ADD_EVENT, (at, *q.key_args(key), kind, detail))

    def _record_result(self, key: SendKey, state: RowStatus, at: float, *, message_id: str | None = None,
                       error: str | None = None, status: int | None = None,
                       resolved: tuple[dict[str, Any], LedgerRow] | None = None) -> None:
        """The one way a row gets a result (inside a transaction): its state and what came with it,
        and the event that records it. A person's result carries the ``resolved`` mark (with the row as
        it was, for the event, which keeps what the mark replaces); a run's result clears any mark."""
        mark, was = resolved if resolved is not None else (None, None)
        self._db.execute(q.SET_RESULT, (state, message_id, error, status, json.dumps(mark) if mark else None, at,
                                        *q.key_args(key)))
        if was is None:
            self._event(at, key, state, json.dumps({"message_id": message_id, "error": error, "status": status}))
        else:
            self._event(at, key, EventKind.RESOLVED, json.dumps(dict(mark or {}, was=was.state, error=was.error,
                                                                     status=was.status, state=state)))

    # -- what a run writes: the plan, the intent, the result ------------------------------------------

    def recover(self) -> int:
        """Rows left "sending" by a run that died: their outcome is unknown. Returns how many."""
        with self._transaction():
            found = [q.row_from(r) for r in self._db.execute(q.SELECT_IN_STATE, (SENDING,))]
            now = time.time()
            for row in found:
                self._record_result(row.key, UNKNOWN, now, error=RECOVERED)
        return len(found)

    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int:
        """Record the whole plan of a run as ``pending`` rows, in one transaction, before its first
        send: a run stopped part-way leaves the ledger knowing what is left. Rows that already exist
        keep their state (a sent row stays sent). The plan replaces this work's earlier one: pending
        rows it no longer holds (a file removed or changed, a contact taken off the list) are
        dropped; they were never attempted, so nothing is lost. Returns how many sends are pending."""
        now = time.time()
        campaigns = sorted({s.key.campaign for s in sends} | ({campaign} if campaign is not None else set()))
        with self._transaction():
            self._db.executemany(q.PLAN, sorted(  # in key order: the primary-key B-tree fills left to right
                (*q.key_args(s.key), s.parts, s.file, s.prepared_sha256, PENDING, now, now, work, PENDING)
                for s in sends))
            dropped = sum(self._db.execute(q.DROP_STALE_PENDING, (work, c, PENDING, now)).rowcount for c in campaigns)
            pending = sum(int(self._db.execute(q.COUNT_PENDING, (work, c, PENDING)).fetchone()["n"])
                          for c in campaigns)
            if pending or dropped:  # a run that finds everything sent already leaves no trace
                self._db.execute(q.ADD_PLAN_EVENT, (now, ",".join(campaigns), EventKind.PLANNED, json.dumps(
                    dict(detail or {}, work=work, sends=len(sends), pending=pending, dropped=dropped))))
        return pending

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str,
              sent_by: str | None = None) -> None:
        """Commit the intent to send, before the request goes out (``sent_by``: upload or url)."""
        now = time.time()
        with self._transaction():
            self._db.execute(q.BEGIN, (*q.key_args(key), parts, file, prepared_sha256, SENDING, now, now, sent_by))
            self._event(now, key, SENDING, file)

    def finish(self, key: SendKey, state: RowStatus | str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None:
        """Commit the result of a send."""
        if state not in FINAL_STATES:
            raise ValueError(f"bad final state {state!r}")
        with self._transaction():
            self._record_result(key, RowStatus(state), time.time(), message_id=message_id, error=error,
                                status=status)

    # -- what a person writes: settling a send whose outcome is unknown -------------------------------

    def resolve(self, keys: list[SendKey], *, delivered: bool, by: str, message_id: str | None = None,
                note: str | None = None) -> list[LedgerRow]:
        """Settle sends whose outcome is unknown, as a person found out: ``delivered`` ones become
        sent (the next run skips them), the others deferred (the next run sends them). All or
        none, each with an event saying who and when. Returns the rows as they were.

        Call it holding the run lock (see :func:`audiopipe.campaign.resolve.resolve_unknown`): a row still
        ``sending`` is then a dead run's, as unknown as an ``unknown`` one."""
        now = time.time()
        mark = {"outcome": Outcome.DELIVERED if delivered else Outcome.NOT_DELIVERED, "by": by, "at": now,
                "note": note, "message_id": message_id if delivered else None}
        before: list[LedgerRow] = []
        with self._transaction():
            for key in keys:
                found = self._db.execute(q.SELECT_ONE, q.key_args(key)).fetchone()
                row = q.row_from(found) if found is not None else None
                if row is None or row.state not in RESOLVABLE:
                    raise NotResolvable(f"the send of part {key.part} to {key.contact} is "
                                        f"{row.state if row else 'not in the ledger'}, not unknown")
                before.append(row)
                if delivered:
                    state, error = SENT, None
                else:
                    state, error = DEFERRED, f"marked not delivered by {by} on {_when(now)}: the next run sends it"
                self._record_result(key, state, now, message_id=message_id if delivered else None, error=error,
                                    resolved=(mark, row))
        return before

    # -- reading ------------------------------------------------------------------------------------

    def get(self, key: SendKey) -> LedgerRow | None:
        found = self._fetch(q.SELECT_ONE, q.key_args(key))
        return q.row_from(found[0]) if found else None

    def rows(self, campaign: str | None = None, states: tuple[RowStatus, ...] | None = None, *,
             workspace: str | None = None, contact: str | None = None, file: str | None = None,
             part: int | None = None, limit: int | None = None) -> list[LedgerRow]:
        where = (q.Where().equals("campaign", campaign).equals("workspace", workspace)
                 .equals("contact", contact).equals("file", file).equals("part", part).among("state", states))
        return [q.row_from(r) for r in self._fetch(*q.select_rows(where, q.ORDER_AS_PLANNED, limit))]

    def counts(self, campaign: str | None = None) -> dict[str, int]:
        counted: dict[str, int] = dict.fromkeys(STATES, 0)
        for r in self._fetch(*q.count_states(q.Where().equals("campaign", campaign), self._columns)):
            if r["state"] in counted:
                counted[r["state"]] += int(r["n"])
        return counted

    def campaigns(self) -> list[str]:
        return [r["campaign"] for r in self._fetch(q.CAMPAIGNS)]

    def tally(self, campaign: str | None = None, *, running: bool = False) -> dict[str, dict[str, int]]:
        """Per campaign: how many sends are in each state, with ``blocked`` (see statements.BLOCKED)
        taken out of pending and deferred, and how many were ``resolved`` by hand (of any state)."""
        out: dict[str, dict[str, int]] = {}
        for r in self._fetch(*q.count_states(q.Where().equals("campaign", campaign), self._columns)):
            counts = out.setdefault(r["campaign"], {**dict.fromkeys(STATES, 0), TallyKey.BLOCKED: 0,
                                                    TallyKey.RESOLVED: 0})
            counts[r["state"]] = counts.get(r["state"], 0) + int(r["n"])
            counts[TallyKey.RESOLVED] += int(r["resolved"] or 0)
        for held in self.blocked(campaign, running=running):
            counts = out[held.row.key.campaign]
            counts[held.row.state] -= 1
            counts[TallyKey.BLOCKED] += 1
        return out

    def sent_by_counts(self, campaign: str | None = None) -> dict[str, dict[str, int]]:
        """Per campaign: how many sends' last request went by upload and how many by URL."""
        if "sent_by" not in self._columns:
            return {}
        out: dict[str, dict[str, int]] = {}
        for r in self._fetch(q.COUNT_SENT_BY, (campaign, campaign)):
            out.setdefault(r["campaign"], {})[r["sent_by"]] = int(r["n"])
        return out

    def blocked(self, campaign: str | None = None, *, running: bool = False,
                limit: int | None = None) -> list[BlockedPart]:
        """The blocked parts (see statements.BLOCKED): each row, the part it waits behind and that
        part's state."""
        return [q.blocked_from(r) for r in self._fetch(q.BLOCKED, q.blocked_args(campaign, running, limit))]

    def pending_sources(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Where the pending rows come from: per campaign and work, how many, and the folder and
        contacts file of the plan that recorded them (so the user knows which batch to run again)."""
        if "work" not in self._columns:
            return []
        found = self._fetch(*q.count_pending_by_work(q.Where().equals("state", PENDING).equals("campaign", campaign)))
        plans: dict[str, dict[str, Any]] = {}
        wanted = {r["work"] for r in found}
        for r in self._fetch(q.PLAN_EVENTS, (EventKind.PLANNED,)):
            if not wanted - set(plans):
                break  # the newest plan of each work is found; older ones do not matter
            plan = q.json_object(r["detail"]) or {}
            if plan.get("work") in wanted and plan["work"] not in plans:
                plans[plan["work"]] = dict(plan, at=r["at"])
        return [{"campaign": r["campaign"], "work": r["work"], "pending": int(r["n"]),
                 "folder": plans.get(r["work"], {}).get("folder"),
                 "contacts": plans.get(r["work"], {}).get("contacts"),
                 "planned_at": plans.get(r["work"], {}).get("at")} for r in found]

    def resolutions(self, campaign: str | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows a person settled, and that no run has touched since, newest first."""
        if "resolved" not in self._columns:
            return []
        where = q.Where().has("resolved").equals("campaign", campaign)
        return [q.row_from(r) for r in self._fetch(*q.select_rows(where, q.ORDER_NEWEST_FIRST, limit))]

    # -- identity -------------------------------------------------------------------------------

    def identity(self) -> LedgerIdentity | None:
        if self.ledger_id is None:
            return None
        return LedgerIdentity(self.ledger_id, str(self.real_path), self.records())

    def tried(self, campaign: str) -> int:
        """How many sends of ``campaign`` were ever attempted. A row once attempted is never removed
        (a plan only replaces pending rows), so fewer than before means rows were deleted by hand,
        and their contacts would be sent to again."""
        return int(self._fetch(q.COUNT_TRIED, (campaign,))[0]["n"])

    def records(self) -> int:
        """How many records this ledger has ever written (events are only ever added)."""
        return int(self._fetch(q.COUNT_RECORDS)[0]["n"])

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self.release()
        with self._lock:
            self._file.close()
        self._closed = True

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


if TYPE_CHECKING:
    _IS_A_LEDGER: type[Ledger] = SqliteLedger  # mypy holds SqliteLedger to the Ledger protocol here
