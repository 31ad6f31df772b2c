"""Settling by hand what no worker can know: a send whose outcome is unknown, as a person found out.

The same promise as the SQLite ledger's resolve: all the keys or none, a delivered send becomes
``sent`` (no run sends it again), a not-delivered one ``deferred`` (the next claim sends it), each
with an event saying who and when. A row still ``sending`` may be settled only when its worker is
dead (no sign of life for the lease): while the worker lives, its request is in flight and its own
result is on the way. The send tokens distributed workers need for what a settlement lets go (a send to
retry, the part a delivered one releases) are deferred in the same transaction.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from audiopipe.campaign.ledger import DEFERRED, RESOLVABLE, SENDING, SENT, LedgerRow, NotResolvable, SendKey
from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import KEY_WHERE, ROW_SELECT, add_event, key_args, query, to_row
from audiopipe.campaign.pg.workers import ALIVE

_FIND = query("""
SELECT {cols}, owner,
       state = %(sending)s AND EXISTS (SELECT 1 FROM workers w WHERE w.id = sends.owner AND {alive}) AS in_flight
  FROM sends
 WHERE campaign = %(campaign)s AND workspace = %(workspace)s AND contact = %(contact)s
   AND source_sha256 = %(source_sha256)s AND part = %(part)s
   FOR UPDATE""", cols=ROW_SELECT, alive=ALIVE)

_SETTLE = query("""
UPDATE sends SET state = %s, message_id = %s, error = %s, status = NULL, resolved = %s, updated_at = now(),
       next_at = CASE WHEN %s THEN now() ELSE next_at END
 WHERE {key}""", key=KEY_WHERE)


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def resolve(conn: Connection, keys: list[SendKey], *, delivered: bool, by: str, lease: float,
            message_id: str | None = None, note: str | None = None) -> list[LedgerRow]:
    """Settle ``keys`` (see the module's docstring), in one transaction. Returns the rows as they were."""
    now = time.time()
    mark = {"outcome": "delivered" if delivered else "not delivered", "by": by, "at": now, "note": note,
            "message_id": message_id if delivered else None}
    state = SENT if delivered else DEFERRED
    error = None if delivered else f"marked not delivered by {by} on {when(now)}: the next run sends it"
    before: list[LedgerRow] = []
    with conn.transaction():
        for key in keys:
            with conn.cursor(row_factory=dict_row) as cur:
                found = cur.execute(_FIND, dict(asdict(key), sending=SENDING, lease=lease)).fetchone()
            if found is None or found["state"] not in RESOLVABLE:
                raise NotResolvable(f"the send of part {key.part} to {key.contact} is "
                                    f"{found['state'] if found else 'not in the ledger'}, not unknown")
            if found["in_flight"]:
                raise NotResolvable(f"the send of part {key.part} to {key.contact} is being sent right now by the "
                                    f"worker {found['owner']}, which is alive: its own result is on the way")
            row = to_row(found)
            before.append(row)
            conn.execute(_SETTLE, (state, mark["message_id"], error, Jsonb(mark), state == DEFERRED, *key_args(key)))
            add_event(conn, key, "resolved", dict(mark, was=row.state, error=row.error, status=row.status, state=state))
        for campaign in sorted({k.campaign for k in keys}):  # what may go now: a retry, or the part a send released
            jobs.top_up(conn, campaign)
    return before
