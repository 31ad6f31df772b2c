"""The ledger in PostgreSQL: the SQLite ledger's promises, kept for any number of workers at once.

:class:`PgLedger` answers every method the batch, ``status`` and ``resolve`` use on a
:class:`~audiopipe.campaign.ledger.SqliteLedger`, with the same row states and meanings (the plan,
``begin``/``finish`` around one request, ``recover``, ``resolve``, the reads), so the embedded batch
can run on it unchanged. What differs is the run lock: many runs and workers share one PostgreSQL
ledger on purpose, so :meth:`PgLedger.acquire` registers this process as a worker (with a heartbeat)
instead of locking anyone out, and :meth:`PgLedger.recover` makes ``unknown`` only the sends of
workers that are dead, never those a live worker has in flight.

For many workers it adds the distributed send protocol: :meth:`claim` and :meth:`complete` (see
:mod:`audiopipe.campaign.pg.claims`), the reaper (:mod:`audiopipe.campaign.pg.workers`), the campaign stop flag
(:mod:`audiopipe.campaign.pg.campaigns`), one pace for all (:mod:`audiopipe.campaign.pg.pace`), and the local journal
for results the database could not take (:mod:`audiopipe.campaign.pg.journal`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiopipe import paths
from audiopipe.campaign.ledger import DEFERRED, SENDING, SENT, Ledger, LedgerIdentity, LedgerRow, PlannedSend, SendKey
from audiopipe.campaign.pg import campaigns, claims, journal, pace, settle, workers
from audiopipe.campaign.pg.claims import Claim, Recorded, Result
from audiopipe.campaign.pg.connection import Connection, Database, connect, database_url
from audiopipe.campaign.pg.errors import AlreadyTaken, DatabaseUnavailable, NotRegistered
from audiopipe.campaign.pg.plan import record_plan
from audiopipe.campaign.pg.reads import Reads
from audiopipe.campaign.pg.records import KEY_WHERE, add_event, key_args, query
from audiopipe.campaign.pg.schema import check, migrate

# Unlike the SQLite ledger, whose run lock keeps every other run out, many runs share this ledger:
# the intent is refused on a row already sent, or in flight on another live worker, so two runs that
# both read "pending" cannot both send it.
_BEGIN = query("""
INSERT INTO sends AS s (campaign, workspace, contact, source_sha256, part, parts, file, prepared_sha256, state,
                        attempts, owner, sent_by)
VALUES (%(campaign)s, %(workspace)s, %(contact)s, %(source_sha256)s, %(part)s, %(parts)s, %(file)s, %(prepared)s,
        %(sending)s, 1, %(me)s, %(sent_by)s)
ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE
   SET state = excluded.state, parts = excluded.parts, file = excluded.file, sent_by = excluded.sent_by,
       prepared_sha256 = excluded.prepared_sha256, message_id = NULL, error = NULL, status = NULL, resolved = NULL,
       attempts = s.attempts + 1, owner = excluded.owner, claim = NULL, updated_at = now()
 WHERE s.state <> %(sent)s
   AND NOT (s.state = %(sending)s AND s.owner IS DISTINCT FROM %(me)s
            AND EXISTS (SELECT 1 FROM workers w WHERE w.id = s.owner AND {alive}))""", alive=workers.ALIVE)

_FINISH = query("""
UPDATE sends SET state = %s, message_id = %s, error = %s, status = %s, updated_at = now(),
       next_at = CASE WHEN %s THEN now() ELSE next_at END
 WHERE {key}""", key=KEY_WHERE)


class PgLedger(Reads):
    """A ledger in the PostgreSQL database at ``url`` (else ``$AUDIOPIPE_DATABASE_URL``).

    ``create``: bring the schema up to date on opening (False for readers, which refuse a database
    that needs it). ``lease``: seconds without a sign of life after which a worker is dead and its
    sends in flight become unknown; it beats every ``lease / 6``. ``retry_for``: how long work waits
    for an unreachable database before giving up (a result then goes to the journal in ``journal_dir``).
    """

    def __init__(self, url: str | None = None, *, create: bool = True, pool_size: int = 4, lease: float = 60.0,
                 retry_for: float = 30.0, journal_dir: str | Path | None = None) -> None:
        self.url = database_url(url)
        self.lease = lease
        self.worker_id = f"{uuid.uuid4().hex[:12]}"
        self._heartbeat: workers.Heartbeat | None = None
        self._lock = threading.Lock()
        with connect(self.url) as conn:
            if create:
                migrate(conn)
            else:
                check(conn)
            row = conn.execute("SELECT value FROM ledger_meta WHERE key = 'ledger_id'").fetchone()
        self.ledger_id: str | None = str(row[0]) if row else None
        self.journal = journal.Journal(Path(journal_dir or paths.state_dir() / "journal"), self.worker_id)
        self.db = Database(self.url, size=pool_size, retry_for=retry_for)
        self.db.open()

    @property
    def location(self) -> str:
        return self.db.location

    # -- this process as a worker ---------------------------------------------------------------

    def acquire(self) -> None:
        """Register this process as a worker and start its heartbeat; replay the journals of workers
        that died on this machine. Never refuses: many runs share a PostgreSQL ledger on purpose."""
        with self._lock:
            if self._heartbeat is not None:
                return
            self.db.run(lambda conn: workers.register(conn, self.worker_id), doing="register this worker")
            self._heartbeat = workers.Heartbeat(self.url, self.worker_id, self.lease / 6)
            self._heartbeat.start()
        journal.replay_orphans(self.journal.folder, self._write_result, mine=self.journal.path)

    def release(self) -> None:
        """Stop the heartbeat and note the worker stopped (its sends left ``sending``, if any, are then
        a dead run's: the next recover or reap makes them unknown)."""
        with self._lock:
            beat, self._heartbeat = self._heartbeat, None
        if beat is None:
            return
        beat.stop()
        try:
            self.db.run(lambda conn: workers.unregister(conn, self.worker_id), doing="unregister", retry_for=2.0)
        except DatabaseUnavailable:
            pass  # its heartbeat has stopped: the lease runs out on its own

    def running(self) -> str | None:
        """The other workers alive now, in words, or None."""
        others = [w for w in self.workers_alive() if w.id != self.worker_id]
        if not others:
            return None
        shown = ", ".join(f"{w.host} pid {w.pid}" for w in others[:3]) + (", …" if len(others) > 3 else "")
        return f"{len(others)} worker{'s' if len(others) > 1 else ''} alive ({shown})"

    def workers_alive(self) -> list[workers.WorkerInfo]:
        return self.db.run(lambda conn: workers.alive(conn, self.lease), doing="list the workers")

    def recover(self) -> int:
        """The sends of dead workers (and dead runs) left ``sending`` become ``unknown``. Returns how many."""
        return self.reap()

    def reap(self) -> int:
        return self.db.run(lambda conn: workers.reap(conn, self.lease), doing="look for dead workers")

    # -- the plan, and one send at a time (the embedded batch's protocol) -----------------------

    def plan(self, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
             campaign: str | None = None) -> int:
        """Record the whole plan of a run as ``pending`` rows, in one transaction
        (see :mod:`audiopipe.campaign.pg.plan`)."""
        def work_(conn: Connection) -> int:
            with conn.transaction():
                return record_plan(conn, work, sends, detail, campaign=campaign)
        return self.db.run(work_, doing="record the plan")

    def begin(self, key: SendKey, *, parts: int, file: str, prepared_sha256: str,
              sent_by: str | None = None) -> None:
        """Commit the intent to send, before the request goes out (owned by this process); AlreadyTaken
        when another run sent it or is sending it now (see _BEGIN)."""
        args = dict(asdict(key), parts=parts, file=file, prepared=prepared_sha256, sending=SENDING, sent=SENT,
                    me=self.worker_id, lease=self.lease, sent_by=sent_by)

        def work(conn: Connection) -> None:
            with conn.transaction():
                if conn.execute(_BEGIN, args).rowcount == 0:
                    raise self._taken(conn, key)
                add_event(conn, key, SENDING, file)
        self.db.run(work, doing="record a send")

    @staticmethod
    def _taken(conn: Connection, key: SendKey) -> AlreadyTaken:
        row = conn.execute(query("SELECT state, owner FROM sends WHERE {key}", key=KEY_WHERE), key_args(key)).fetchone()
        doing = "was sent by another run" if row and row[0] == SENT else \
            f"is being sent right now by the worker {row[1] if row else '?'}"
        return AlreadyTaken(f"the send of part {key.part} to {key.contact} {doing}: not sent again")

    def finish(self, key: SendKey, state: str, *, message_id: str | None = None,
               error: str | None = None, status: int | None = None) -> None:
        """Commit the result of a send begun with :meth:`begin`."""
        if state not in claims.FINAL:
            raise ValueError(f"bad final state {state!r}")

        def work(conn: Connection) -> None:
            with conn.transaction():
                conn.execute(_FINISH, (state, message_id, error, status, state == DEFERRED, *key_args(key)))
                add_event(conn, key, state, {"message_id": message_id, "error": error, "status": status})
        self.db.run(work, doing="record a result")

    def resolve(self, keys: list[SendKey], *, delivered: bool, by: str, message_id: str | None = None,
                note: str | None = None) -> list[LedgerRow]:
        """Settle sends whose outcome is unknown, as a person found out (see :mod:`audiopipe.campaign.pg.settle`)."""
        return self.db.run(lambda conn: settle.resolve(conn, keys, delivered=delivered, by=by, lease=self.lease,
                                                       message_id=message_id, note=note), doing="settle sends")

    def identity(self) -> LedgerIdentity | None:
        if self.ledger_id is None:
            return None
        return LedgerIdentity(self.ledger_id, self.location, self.records())

    # -- many workers ------------------------------------------------------------------------------

    def claim(self, *, limit: int = 1, campaign: str | None = None) -> list[Claim]:
        """Claim up to ``limit`` ready sends for this worker, committed before any request goes out.
        Results kept in the journal are written first."""
        if self._heartbeat is None:
            raise NotRegistered("a worker claims sends only between acquire() and release()")
        if self.journal.pending:
            self.journal.replay(self._write_result)
        return claims.claim(self.db, self.worker_id, limit=limit, campaign=campaign)

    def complete(self, claim: Claim, state: str, *, message_id: str | None = None, error: str | None = None,
                 status: int | None = None, retry_in: float = 0.0, sent_by: str | None = None) -> Recorded:
        """Record the result of a claimed send, fenced by its attempt; to the journal when the database
        cannot take it. ``retry_in``: a deferred send is not claimed again before that many seconds;
        ``sent_by``: how its request gave the API the file (upload or url; None when none was made)."""
        result = Result(claim, state, message_id, error, status, retry_in, sent_by)
        if state not in claims.FINAL:
            raise ValueError(f"bad final state {state!r}")
        try:
            return self._write_result(result)
        except DatabaseUnavailable:
            self.journal.append(result)
            return Recorded.JOURNALLED

    def abandon(self, claim: Claim, why: str) -> Recorded:
        """Give back a claimed send that was not sent (a stop, a shutdown before its turn): deferred."""
        return self.complete(claim, DEFERRED, error=why)

    def _write_result(self, result: Result) -> Recorded:
        return claims.complete(self.db, result)

    def stop_campaign(self, campaign: str, why: str) -> bool:
        return self.db.run(lambda conn: campaigns.stop(conn, campaign, why), doing="stop the campaign")

    def resume_campaign(self, campaign: str, *, by: str) -> bool:
        return self.db.run(lambda conn: campaigns.resume(conn, campaign, by), doing="resume the campaign")

    def stopped(self, campaign: str) -> str | None:
        return self.db.run(lambda conn: campaigns.stopped(conn, campaign), doing="read the campaign")

    def set_pace(self, name: str, per_second: float | None) -> None:
        self.db.run(lambda conn: pace.set_rate(conn, name, per_second), doing="set the pace")

    def wait_turn(self, name: str, stop: threading.Event | None = None) -> bool:
        """Wait for this worker's next slot of the shared pace ``name`` (False: ``stop`` was set)."""
        return pace.wait_turn(self.db, name, stop)

    def pause(self, name: str, seconds: float) -> None:
        """Pause every worker of ``name`` for ``seconds`` (a 429's Retry-After)."""
        self.db.run(lambda conn: pace.pause(conn, name, seconds), doing="pause the pace")

    # -- closing -----------------------------------------------------------------------------------

    def close(self) -> None:
        self.release()
        self.journal.close()
        self.db.close()

    def __enter__(self) -> PgLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())


if TYPE_CHECKING:
    def _is_a_ledger(ledger: PgLedger) -> Ledger:
        return ledger  # mypy proves here that PgLedger offers all the batch asks of a Ledger
