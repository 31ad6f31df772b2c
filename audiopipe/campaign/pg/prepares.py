"""Each unique source prepared once, whichever worker does it: prepares and targets.

A **prepare** is one (source content hash, recipe: how to prepare and into which store, see
:mod:`audiopipe.campaign.pg.recipes`): ``pending`` until a worker claims it (``preparing``, under that
worker, one attempt more), then ``ready`` with its parts, or ``failed`` with the one-line reason the
input was refused. A **target** is one (campaign, workspace, contact, source) to send once its prepare
is done.

The claim is one conditional ``UPDATE``: from ``pending``, or from ``preparing`` under a worker that is
not alive (:data:`audiopipe.campaign.pg.workers.ALIVE`: a SIGKILL mid-encode, a lost machine), which is a
takeover. Two jobs of one prepare at once: the row lock serialises them and the second finds it
``preparing`` under a live worker, so ffmpeg runs once. The end of a prepare is fenced by the claim's
attempt (a worker taken over while it was only slow changes nothing) and is ONE transaction with the
expansion of every target into ``sends`` rows and the send tokens for them: the parts are known, the
sends exist and can go, or none of it. Expansions insert with ``ON CONFLICT DO NOTHING``: a row that
exists (sent, unknown...) is never touched, and tokens are deferred only for rows inserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from audiopipe.campaign.ledger import FAILED, PENDING, SENT
from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import query
from audiopipe.campaign.pg.workers import ALIVE

# A prepare's states: pending and failed as a send's (the same words), and these two
PREPARING, READY = "preparing", "ready"
__all__ = ["FAILED", "PENDING", "PREPARING", "READY", "PrepareClaim", "Target", "claim_prepare", "defer_stalled",
           "defer_unstarted", "expand_ready", "finish_failed", "finish_ready", "lock_prepares", "record_prepares",
           "record_targets", "release"]


@dataclass(frozen=True)
class Target:
    """One source to one contact of a campaign; ``file``: the file as reports name it."""

    campaign: str
    workspace: str
    contact: str
    source_sha256: str
    file: str


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS targets_in (
    campaign text, workspace text, contact text, source_sha256 text, file text
) ON COMMIT DROP"""

# One target per key: a contact asked for two files of the same content gets it once (the first
# label in sort order, as reruns pick it alike). The first plan of a target keeps its recipe.
_TARGETS = """
INSERT INTO targets (campaign, workspace, contact, source_sha256, recipe, file, work)
SELECT DISTINCT ON (campaign, workspace, contact, source_sha256)
       campaign, workspace, contact, source_sha256, %(recipe)s, file, %(work)s
  FROM targets_in
 ORDER BY campaign, workspace, contact, source_sha256, file
ON CONFLICT DO NOTHING"""


def record_targets(conn: Connection, recipe: str, targets: Iterable[Target], *, work: str | None = None) -> int:
    """Record ``targets`` (prepared with ``recipe``), in the caller's transaction; targets already there
    are left as they are. Returns how many are new. One ``COPY``, however many."""
    conn.execute(_STAGE)
    conn.execute("TRUNCATE targets_in")
    with conn.cursor().copy("COPY targets_in FROM STDIN") as copy:
        for t in targets:
            copy.write_row((t.campaign, t.workspace, t.contact, t.source_sha256, t.file))
    return conn.execute(_TARGETS, {"recipe": recipe, "work": work}).rowcount


_PREPARES = """
INSERT INTO prepares (source_sha256, recipe, source_key)
SELECT k.sha, %(recipe)s, k.key FROM unnest(%(shas)s::text[], %(keys)s::text[]) AS k(sha, key)
 WHERE EXISTS (SELECT 1 FROM targets t WHERE t.source_sha256 = k.sha AND t.recipe = %(recipe)s)
ON CONFLICT DO NOTHING"""


def record_prepares(conn: Connection, recipe: str, sources: dict[str, str]) -> int:
    """One ``pending`` prepare per source (sha256 -> its store key) that some target wants with
    ``recipe`` and that has none yet (targets planned earlier keep their own recipe: no prepare is
    made that nobody waits for). Returns how many are new."""
    return conn.execute(_PREPARES, {"recipe": recipe, "shas": list(sources), "keys": list(sources.values())}).rowcount


# The prepares a campaign's targets among these sources wait for, locked (FOR SHARE) until the plan
# commits. A prepare ending meanwhile waits for that commit before it expands, so it sees the new
# targets; one that ended before is seen ready by the plan's own expansion. Without it, a target added
# while its prepare ends would be seen by neither: never expanded.
_LOCK = """
SELECT 1 FROM prepares p
 WHERE p.source_sha256 = ANY(%(sources)s)
   AND EXISTS (SELECT 1 FROM targets t WHERE t.source_sha256 = p.source_sha256 AND t.recipe = p.recipe
                  AND t.campaign = %(campaign)s)
 ORDER BY p.source_sha256, p.recipe
   FOR SHARE OF p"""


def lock_prepares(conn: Connection, campaign: str, sources: Iterable[str]) -> None:
    """Hold the prepares that targets of ``campaign`` among ``sources`` wait for until the caller's
    transaction ends (see ``_LOCK``): call it after recording targets, before :func:`expand_ready`."""
    conn.execute(_LOCK, {"campaign": campaign, "sources": list(sources)})


# The prepares a campaign's targets among these sources wait for that need a job now: pending, or
# preparing under a worker not alive.
_TO_START = query("""
SELECT p.source_sha256, p.recipe FROM prepares p
 WHERE p.source_sha256 = ANY(%(sources)s)
   AND EXISTS (SELECT 1 FROM targets t WHERE t.source_sha256 = p.source_sha256 AND t.recipe = p.recipe
                  AND t.campaign = %(campaign)s)
   AND (p.state = 'pending' OR (p.state = 'preparing'
        AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = p.owner AND {alive})))
 ORDER BY p.source_sha256, p.recipe""", alive=ALIVE)


def defer_unstarted(conn: Connection, campaign: str, sources: Iterable[str], *, lease: float) -> int:
    """Defer a prepare job for each prepare that targets of ``campaign`` among ``sources`` wait for and
    that is pending or whose worker died (none when one is queued already: see :func:`jobs.defer_prepare`).
    Returns how many prepares need one."""
    found = conn.execute(_TO_START, {"campaign": campaign, "sources": list(sources), "lease": lease}).fetchall()
    for source, recipe in found:
        jobs.defer_prepare(conn, campaign, str(source), str(recipe))
    return len(found)


@dataclass(frozen=True)
class PrepareClaim:
    """A prepare this worker holds: what to fetch from the store, and the attempt that fences its end."""

    source_sha256: str
    recipe: str
    source_key: str
    owner: str
    attempt: int
    took_over: str | None     # the worker it was taken from (dead, or gone without a word), if any
    last_error: str | None    # why the attempt before gave up, if it said


# The row is locked first (a second claim waits here, then reads what the first one committed), so
# what it replaces is known: a takeover says from whom, and why the attempt before gave up.
_CLAIM = query("""
WITH old AS (
    SELECT source_sha256, recipe, state, owner, error FROM prepares
     WHERE source_sha256 = %(source)s AND recipe = %(recipe)s
       FOR UPDATE
)
UPDATE prepares p SET state = 'preparing', owner = %(me)s, claim = %(claim)s, attempts = p.attempts + 1,
       error = NULL, updated_at = now()
  FROM old
 WHERE p.source_sha256 = old.source_sha256 AND p.recipe = old.recipe
   AND (old.state = 'pending' OR (old.state = 'preparing'
        AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = old.owner AND {alive})))
RETURNING p.source_key, p.attempts, CASE WHEN old.state = 'preparing' THEN coalesce(old.owner, '') END, old.error
""", alive=ALIVE)
_MINE = """
SELECT source_key, attempts, NULL, NULL FROM prepares
 WHERE source_sha256 = %(source)s AND recipe = %(recipe)s AND state = 'preparing' AND owner = %(me)s
   AND claim = %(claim)s"""


def claim_prepare(conn: Connection, source: str, recipe: str, owner: str, *, lease: float,
                  claim_id: uuid.UUID | None = None) -> PrepareClaim | None:
    """Take the prepare of (``source``, ``recipe``) for ``owner`` (a registered worker: its liveness is
    what keeps others off), committed by itself on an autocommit connection. None when it is ready,
    failed, or being prepared by a live worker (``owner`` too: two jobs of one worker). A try again
    after a lost answer passes the same ``claim_id``: a claim that did commit is found and kept."""
    args = {"source": source, "recipe": recipe, "me": owner, "lease": lease, "claim": claim_id or uuid.uuid4()}
    row = None
    if claim_id is not None:
        row = conn.execute(_MINE, args).fetchone()
    if row is None:
        row = conn.execute(_CLAIM, args).fetchone()
    if row is None:
        return None
    return PrepareClaim(source, recipe, str(row[0]), owner, int(row[1]), row[2] or None, row[3])


# The end of a prepare, fenced by its claim: only the worker holding this attempt may write it.
_END = """
UPDATE prepares SET state = %(state)s, parts = %(parts)s, error = %(error)s, owner = NULL, updated_at = now()
 WHERE source_sha256 = %(source)s AND recipe = %(recipe)s AND state = 'preparing' AND owner = %(owner)s
   AND attempts = %(attempt)s"""


def _end(conn: Connection, claim: PrepareClaim, state: str, *, parts: list[dict[str, Any]] | None = None,
         error: str | None = None) -> bool:
    return conn.execute(_END, {"state": state, "parts": Jsonb(parts) if parts is not None else None, "error": error,
                               "source": claim.source_sha256, "recipe": claim.recipe, "owner": claim.owner,
                               "attempt": claim.attempt}).rowcount == 1

_EXPAND_READY = """
WITH made AS (
INSERT INTO sends AS s (campaign, workspace, contact, source_sha256, part, parts, file, prepared_sha256, stored,
                        state, attempts, work, next_at)
SELECT t.campaign, t.workspace, t.contact, t.source_sha256, e.n::integer, jsonb_array_length(p.parts), t.file,
       e.item->>'sha256', e.item->>'key', %(pending)s, 0, t.work,
       CASE WHEN e.n = 1 OR EXISTS (
                SELECT 1 FROM sends b WHERE b.campaign = t.campaign AND b.workspace = t.workspace
                   AND b.contact = t.contact AND b.source_sha256 = t.source_sha256 AND b.part = e.n - 1
                   AND b.state = %(sent)s)
            THEN '-infinity'::timestamptz ELSE 'infinity'::timestamptz END
  FROM targets t
  JOIN prepares p ON p.source_sha256 = t.source_sha256 AND p.recipe = t.recipe
 CROSS JOIN LATERAL jsonb_array_elements(p.parts) WITH ORDINALITY AS e(item, n)
 WHERE p.state = 'ready' AND {which}
ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO NOTHING
RETURNING s.campaign)
SELECT campaign, count(*) FROM made GROUP BY campaign ORDER BY campaign"""

_EXPAND_FAILED = """
WITH made AS (
INSERT INTO sends AS s (campaign, workspace, contact, source_sha256, part, parts, file, state, error, attempts, work)
SELECT t.campaign, t.workspace, t.contact, t.source_sha256, 1, 1, t.file, %(failed)s,
       'could not prepare the file: ' || coalesce(p.error, 'no reason recorded'), 0, t.work
  FROM targets t
  JOIN prepares p ON p.source_sha256 = t.source_sha256 AND p.recipe = t.recipe
 WHERE p.state = 'failed' AND {which}
ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO NOTHING
RETURNING s.campaign)
SELECT campaign, count(*) FROM made GROUP BY campaign ORDER BY campaign"""

_OF_PREPARE = "t.source_sha256 = %(source)s AND t.recipe = %(recipe)s"
_OF_CAMPAIGN = "t.campaign = %(campaign)s"


def _expand(conn: Connection, template: str, which: str, args: dict[str, Any]) -> dict[str, int]:
    rows = conn.execute(query(template, which=which),
                        dict(args, pending=PENDING, sent=SENT, failed=FAILED)).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def _tokens_for(conn: Connection, made: dict[str, int]) -> None:
    """One send token per new row (a part waiting behind the one before will become ready too)."""
    for campaign, count in made.items():
        jobs.defer_tokens(conn, campaign, count)


def finish_ready(conn: Connection, claim: PrepareClaim, parts: list[dict[str, Any]]) -> dict[str, int] | None:
    """Mark the claimed prepare ``ready`` with ``parts`` (each: key, sha256, size, duration, content
    type...), expand every target of it into ``sends`` rows and defer their tokens, in one transaction.
    Returns the rows made per campaign; None when the claim was lost (taken over: nothing written)."""
    with conn.transaction():
        if not _end(conn, claim, READY, parts=parts):
            return None
        made = _expand(conn, _EXPAND_READY, _OF_PREPARE, {"source": claim.source_sha256, "recipe": claim.recipe})
        _tokens_for(conn, made)
    return made


def finish_failed(conn: Connection, claim: PrepareClaim, reason: str) -> dict[str, int] | None:
    """Mark the claimed prepare ``failed`` with the one-line ``reason``; every target gets a ``failed``
    part 1 saying so (status and the report show it). Returns the rows made per campaign; None when
    the claim was lost."""
    with conn.transaction():
        if not _end(conn, claim, FAILED, error=reason):
            return None
        made = _expand(conn, _EXPAND_FAILED, _OF_PREPARE, {"source": claim.source_sha256, "recipe": claim.recipe})
    return made


def release(conn: Connection, claim: PrepareClaim, reason: str) -> bool:
    """Give the claimed prepare up without an answer (the worker stops, the store or the disk failed):
    it stays ``preparing`` with no owner, which no worker is, so the next job or the reaper takes it
    over. False when the claim was lost meanwhile."""
    return _end(conn, claim, PREPARING, error=reason)


def expand_ready(conn: Connection, campaign: str) -> dict[str, int]:
    """Expand the targets of ``campaign`` whose prepare is already done (ready: pending sends with their
    tokens; failed: a failed part 1), in the caller's transaction. Rows that exist are left alone.
    Returns the pending rows made (per campaign: this one)."""
    made = _expand(conn, _EXPAND_READY, _OF_CAMPAIGN, {"campaign": campaign})
    _expand(conn, _EXPAND_FAILED, _OF_CAMPAIGN, {"campaign": campaign})
    _tokens_for(conn, made)
    return made


_STALLED = query("""
SELECT DISTINCT ON (p.source_sha256, p.recipe) t.campaign, p.source_sha256, p.recipe
  FROM prepares p JOIN targets t ON t.source_sha256 = p.source_sha256 AND t.recipe = p.recipe
 WHERE p.state = 'preparing' AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = p.owner AND {alive})
 ORDER BY p.source_sha256, p.recipe, t.campaign""", alive=ALIVE)


def defer_stalled(conn: Connection, *, lease: float) -> int:
    """For the reaper: defer a prepare job (for one of its campaigns) for each prepare left
    ``preparing`` by a worker that is not alive, so another worker takes it over. Returns how many."""
    stalled = conn.execute(_STALLED, {"lease": lease}).fetchall()
    for campaign, source, recipe in stalled:
        jobs.defer_prepare(conn, str(campaign), str(source), str(recipe))
    return len(stalled)
