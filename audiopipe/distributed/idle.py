"""Whether any campaign has work left, and when the next piece is due: what ``--until-idle`` waits for.

Work left is what workers will do without a person's word: a prepare pending or being prepared, and,
in a campaign that is not stopped, a send pending (not a part still waiting for the one before it), a
send deferred with tries left (due now or later), or a send in flight on a live worker (its result, or
the part it releases, may make more). Not work: a stopped campaign (a person resumes it), an unknown
send (a person settles it), a deferred send out of tries, a send in flight on a dead worker (the reaper
makes it unknown).
"""

from __future__ import annotations

from audiopipe.campaign.ledger import DEFERRED, PENDING, SENDING
from audiopipe.campaign.pg.campaigns import DEFAULT_ATTEMPTS
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import query
from audiopipe.campaign.pg.schema import has_table
from audiopipe.campaign.pg.workers import ALIVE

_SENDS_LEFT = query("""
SELECT extract(epoch FROM greatest(min(CASE WHEN s.state = %(sending)s THEN now() ELSE s.next_at END),
                                   now() - interval '1 day') - now())::float8,
       count(*)
  FROM sends s JOIN campaigns c USING (campaign)
 WHERE (%(campaign)s::text IS NULL OR s.campaign = %(campaign)s) AND c.stopped_at IS NULL
   AND ((s.state = %(pending)s AND s.next_at < 'infinity')
     OR (s.state = %(deferred)s AND s.attempts < coalesce((c.settings->>'attempts')::int, %(attempts)s))
     OR (s.state = %(sending)s AND EXISTS (SELECT 1 FROM workers w WHERE w.id = s.owner AND {alive})))""",
                    alive=ALIVE)

# prepares are schema step 3's; a campaign's are those some target of it waits for
_PREPARES_LEFT = """
SELECT count(*) FROM prepares p
 WHERE p.state IN ('pending', 'preparing')
   AND (%(campaign)s::text IS NULL OR EXISTS (
        SELECT 1 FROM targets t WHERE t.source_sha256 = p.source_sha256 AND t.recipe = p.recipe
           AND t.campaign = %(campaign)s))"""


def next_due(conn: Connection, campaign: str | None = None, *, lease: float = 60.0) -> float | None:
    """Seconds until the next work of ``campaign`` (of every campaign when None) is due: 0 or less for
    work due now (or running), None when there is no work left."""
    args = {"campaign": campaign, "pending": PENDING, "deferred": DEFERRED, "sending": SENDING,
            "attempts": DEFAULT_ATTEMPTS, "lease": lease}
    if has_table(conn, "prepares"):
        row = conn.execute(_PREPARES_LEFT, args).fetchone()
        if row and row[0]:
            return 0.0
    row = conn.execute(_SENDS_LEFT, args).fetchone()
    if row is None or not row[1]:
        return None
    return float(row[0])


def work_left(conn: Connection, campaign: str | None = None, *, lease: float = 60.0) -> bool:
    """Whether ``campaign`` (every campaign when None) has work left (see the module's docstring)."""
    return next_due(conn, campaign, lease=lease) is not None
