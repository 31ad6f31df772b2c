"""Who is working: workers register, give a sign of life every few seconds, and a reaper turns the
in-flight sends of a worker that stopped giving one into ``unknown``.

A worker's sends in flight are rows ``sending`` under its id. When it dies (SIGKILL, a lost machine),
nobody knows whether those requests reached the server, so the reaper makes them ``unknown``: never
``pending`` again, since that could send a message twice; only a person (``--retry-unknown``,
``audiopipe resolve``) turns them back. A worker that was only slow (a stalled heartbeat, a database
outage longer than the lease) loses nothing but a label: its definite result still lands on the
unknown row (see :mod:`audiopipe.campaign.pg.claims`).

Liveness is judged by the database's clock alone (``clock_timestamp()`` when beating and when
reaping), so the machines' clocks need not agree. A row ``sending`` with no owner, or an owner that
never registered or has stopped, is a dead run's as well.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

import psycopg

from audiopipe.campaign.ledger import SENDING, UNKNOWN
from audiopipe.campaign.pg.connection import Connection, connect
from audiopipe.campaign.pg.errors import DatabaseUnavailable
from audiopipe.campaign.pg.records import query

REAPED = ("the run sending it stopped (no sign of life for {lease:g} s) while this message was being sent; "
          "it may have been delivered")

# A worker ``w`` alive: not stopped, a sign of life within the lease (a named parameter ``lease``).
ALIVE = "w.stopped_at IS NULL AND w.heartbeat_at >= clock_timestamp() - make_interval(secs => %(lease)s)"

_REAP = query("""
WITH dead AS (
    UPDATE sends s SET state = %(unknown)s, error = %(why)s, updated_at = now()
     WHERE s.state = %(sending)s
       AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = s.owner AND {alive})
    RETURNING s.campaign, s.workspace, s.contact, s.source_sha256, s.part, s.owner, s.attempts
), logged AS (
    INSERT INTO events (campaign, workspace, contact, source_sha256, part, state, detail)
    SELECT campaign, workspace, contact, source_sha256, part, %(unknown)s,
           jsonb_build_object('reaped', true, 'owner', owner, 'attempt', attempts)
      FROM dead
)
SELECT count(*) FROM dead""", alive=ALIVE)
_ALIVE_WORKERS = query("SELECT id, host, pid, extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 "
                       "FROM workers w WHERE {alive} ORDER BY started_at", alive=ALIVE)


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    silent_for: float   # seconds since its last sign of life


def register(conn: Connection, worker_id: str) -> None:
    conn.execute("INSERT INTO workers (id, host, pid) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                 "SET heartbeat_at = clock_timestamp(), stopped_at = NULL",
                 (worker_id, socket.gethostname(), os.getpid()))


def beat(conn: Connection, worker_id: str) -> bool:
    """One sign of life; False when the worker has stopped (released) meanwhile."""
    return conn.execute("UPDATE workers SET heartbeat_at = clock_timestamp() WHERE id = %s AND stopped_at IS NULL",
                        (worker_id,)).rowcount == 1


def unregister(conn: Connection, worker_id: str) -> None:
    conn.execute("UPDATE workers SET stopped_at = clock_timestamp() WHERE id = %s", (worker_id,))


def reap(conn: Connection, lease: float) -> int:
    """Make ``unknown`` every row ``sending`` whose owner gave no sign of life for ``lease`` seconds
    (or never registered, or stopped). Returns how many. Safe to run anywhere, any number at once."""
    row = conn.execute(_REAP, {"unknown": UNKNOWN, "sending": SENDING, "lease": lease,
                               "why": REAPED.format(lease=lease)}).fetchone()
    return int(row[0]) if row else 0


def alive(conn: Connection, lease: float) -> list[WorkerInfo]:
    rows = conn.execute(_ALIVE_WORKERS, {"lease": lease}).fetchall()
    return [WorkerInfo(r[0], r[1], r[2], r[3]) for r in rows]


class Heartbeat:
    """Beats for one worker every ``every`` seconds, on a connection of its own (a busy pool must not
    starve it), in a daemon thread: a process that dies stops beating, which is the point."""

    def __init__(self, url: str, worker_id: str, every: float) -> None:
        self.url = url
        self.worker_id = worker_id
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {worker_id}", daemon=True)
        self._conn: Connection | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.url)
                if not beat(self._conn, self.worker_id):
                    return
            except (psycopg.OperationalError, DatabaseUnavailable):
                self._drop()  # the database is away: try again at the next beat, on a new connection

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(self.every, 5.0))
        self._drop()
