"""Recording a run's plan: every send it means to make, ``pending``, in the caller's transaction.

The same promise as the SQLite ledger's plan: rows that exist keep their state (a sent row stays sent,
an unknown one unknown), pending rows of this work's earlier plan that this one no longer holds are
dropped (they were never attempted), and a ``planned`` event says what happened. It runs inside the
caller's transaction (:func:`record_plan` takes the connection and opens no transaction of its own),
so a planner can defer the jobs that will send these rows in the same transaction: the plan and its
jobs are committed together, or neither is.

A plan of a million sends is one ``COPY`` into a temporary table and one ``INSERT ... SELECT``, not a
million statements. The second and later parts of a split recording are planned with ``next_at =
infinity`` (waiting: claims do not even look at them) unless the part before is already sent; the
trigger of :mod:`audiopipe.campaign.pg.migrations` releases them when it is.
"""

from __future__ import annotations

from typing import Any

from audiopipe.campaign.ledger import PENDING, SENT, PlannedSend
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import add_event

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS plan_in (
    campaign text, workspace text, contact text, source_sha256 text, part integer, parts integer, file text,
    prepared_sha256 text
) ON COMMIT DROP"""

# One row per key (a contact planned twice with the same content shares one send): the greatest
# (parts, file, prepared_sha256) wins, as the SQLite ledger's sorted inserts leave it.
_UPSERT = """
INSERT INTO sends AS s (campaign, workspace, contact, source_sha256, part, parts, file, prepared_sha256, state,
                        attempts, work, next_at)
SELECT DISTINCT ON (i.campaign, i.workspace, i.contact, i.source_sha256, i.part)
       i.campaign, i.workspace, i.contact, i.source_sha256, i.part, i.parts, i.file, i.prepared_sha256, %(pending)s,
       0, %(work)s,
       CASE WHEN i.part = 1 OR EXISTS (
                SELECT 1 FROM sends p WHERE p.campaign = i.campaign AND p.workspace = i.workspace
                   AND p.contact = i.contact AND p.source_sha256 = i.source_sha256 AND p.part = i.part - 1
                   AND p.state = %(sent)s)
            THEN '-infinity'::timestamptz ELSE 'infinity'::timestamptz END
  FROM plan_in i
 ORDER BY i.campaign, i.workspace, i.contact, i.source_sha256, i.part,
          i.parts DESC, i.file DESC, i.prepared_sha256 DESC
ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE
   SET parts = excluded.parts, file = excluded.file, prepared_sha256 = excluded.prepared_sha256,
       updated_at = now(), work = excluded.work
 WHERE s.state = %(pending)s"""


def record_plan(conn: Connection, work: str, sends: list[PlannedSend], detail: dict[str, Any] | None = None, *,
                campaign: str | None = None) -> int:
    """Record ``sends`` as pending, in the caller's open transaction. Returns how many sends of ``work``
    (in its campaigns) are pending. Rows this plan writes are stamped with the transaction's ``now()``;
    a pending row of ``work`` not so stamped is from an earlier plan and goes."""
    campaigns = sorted({s.key.campaign for s in sends} | ({campaign} if campaign is not None else set()))
    conn.execute("INSERT INTO campaigns (campaign) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (campaigns,))
    conn.execute(_STAGE)
    conn.execute("TRUNCATE plan_in")
    with conn.cursor().copy("COPY plan_in FROM STDIN") as copy:
        for s in sends:
            k = s.key
            copy.write_row((k.campaign, k.workspace, k.contact, k.source_sha256, k.part, s.parts, s.file,
                            s.prepared_sha256))
    conn.execute(_UPSERT, {"pending": PENDING, "sent": SENT, "work": work})
    dropped = conn.execute("DELETE FROM sends WHERE work = %s AND campaign = ANY(%s) AND state = %s "
                           "AND updated_at <> now()", (work, campaigns, PENDING)).rowcount
    row = conn.execute("SELECT count(*) FROM sends WHERE work = %s AND campaign = ANY(%s) AND state = %s",
                       (work, campaigns, PENDING)).fetchone()
    pending = int(row[0]) if row else 0
    if pending or dropped:  # a run that finds everything sent already leaves no trace
        add_event(conn, None, "planned", dict(detail or {}, work=work, sends=len(sends), pending=pending,
                                              dropped=dropped), campaign=",".join(campaigns))
    return pending
