"""One pace for every worker: a rate row per name in PostgreSQL, GCRA style, and a shared pause.

The server counts requests per account, not per worker, so the pace lives in the database: one row
holds the theoretical arrival time (``tat``) of the next free slot. Booking a slot is one ``UPDATE``
that takes ``greatest(tat, now, paused_until)`` as the slot and moves ``tat`` on by ``1/rate``: slots
are spaced by exactly ``1/rate`` whichever worker books them, and the row lock serialises bookings.
The answer is how long to wait, computed by the database's clock, so the workers' clocks need not
agree. Bookings commit with ``synchronous_commit = off`` (on a small 2-core machine about 8,700 bookings
a second instead of about 600): a crash may forget the last few bookings, which costs at most a burst of that many
requests, never a message.

A 429 pauses everyone: ``paused_until`` moves to now + Retry-After (never back), and ``pauses`` counts
up. A worker that booked a slot before the pause and is still waiting for it checks, when its time
comes, that no pause happened meanwhile, and books again if one did: after a 429 only requests
already on their way go out within the window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial

from audiopipe.campaign.pg.connection import Connection, Database

_BOOK = """
UPDATE rate_limits SET tat = greatest(tat, clock_timestamp(), paused_until) + make_interval(secs => interval_s)
 WHERE name = %s
RETURNING extract(epoch FROM tat - make_interval(secs => interval_s) - clock_timestamp())::float8, pauses,
          extract(epoch FROM tat - make_interval(secs => interval_s))::float8"""

_PAUSE = """
INSERT INTO rate_limits AS r (name, interval_s, paused_until, pauses)
VALUES (%(name)s, 0, clock_timestamp() + make_interval(secs => %(secs)s), 1)
ON CONFLICT (name) DO UPDATE
   SET paused_until = greatest(r.paused_until, clock_timestamp() + make_interval(secs => %(secs)s)),
       pauses = r.pauses + 1"""


@dataclass(frozen=True)
class Slot:
    wait: float     # seconds from now until the slot (0 or less: go now)
    pauses: int     # how many pauses the row had seen when it was booked
    at: float       # when the slot is, by the database's clock (seconds since the epoch)


def set_rate(conn: Connection, name: str, per_second: float | None) -> None:
    """Set the pace ``name`` to ``per_second`` requests a second (None or 0: no limit)."""
    interval = 1.0 / per_second if per_second else 0.0
    conn.execute("INSERT INTO rate_limits AS r (name, interval_s) VALUES (%s, %s) "
                 "ON CONFLICT (name) DO UPDATE SET interval_s = excluded.interval_s", (name, interval))


def book(conn: Connection, name: str) -> Slot:
    """Book the next slot of ``name`` (a name with no row has no limit: go now)."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = off")
        row = conn.execute(_BOOK, (name,)).fetchone()
    return Slot(0.0, 0, 0.0) if row is None else Slot(float(row[0]), int(row[1]), float(row[2]))


def pause(conn: Connection, name: str, seconds: float) -> None:
    """Nobody sends under ``name`` for ``seconds`` from now (a 429's Retry-After); a longer pause
    already running is kept."""
    conn.execute(_PAUSE, {"name": name, "secs": max(seconds, 0.0)})


def paused_for(conn: Connection, name: str) -> float:
    """Seconds the pause of ``name`` still runs (0 or less: none): a read, for a pace with no rate,
    whose slots need no booking but whose 429 pause binds everyone all the same."""
    row = conn.execute("SELECT extract(epoch FROM paused_until - clock_timestamp())::float8 FROM rate_limits "
                       "WHERE name = %s AND paused_until > '-infinity'", (name,)).fetchone()
    return float(row[0]) if row else 0.0


def wait_pause(db: Database, name: str, stop: threading.Event | None = None) -> bool:
    """Wait out the pause of ``name``, if any: True when none runs, False when ``stop`` was set meanwhile."""
    stop = stop or threading.Event()
    while (left := db.run(partial(paused_for, name=name), doing="check the pace")) > 0:
        if stop.wait(left):
            return False
    return not stop.is_set()


def still_open(conn: Connection, name: str, slot: Slot) -> bool:
    """Whether a slot booked earlier may still be used: no pause since, and none running."""
    row = conn.execute("SELECT pauses = %s AND paused_until <= clock_timestamp() FROM rate_limits WHERE name = %s",
                       (slot.pauses, name)).fetchone()
    return row is None or bool(row[0])


def wait_turn(db: Database, name: str, stop: threading.Event | None = None) -> bool:
    """Wait for a slot of ``name``: True when it has come, False when ``stop`` was set meanwhile."""
    stop = stop or threading.Event()
    while True:
        slot = db.run(lambda conn: book(conn, name), doing="book a slot")
        if slot.wait <= 0:
            return not stop.is_set()
        if stop.wait(slot.wait):
            return False
        if db.run(partial(still_open, name=name, slot=slot), doing="check the pace"):
            return True
