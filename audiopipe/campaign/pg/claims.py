"""The send protocol of many workers: claim a row, send, record the result fenced by the attempt.

**Claim.** One statement picks ready rows with ``FOR UPDATE SKIP LOCKED`` (two workers never wait for
nor take the same row) and turns them ``sending``, owned by the worker, one attempt more; it is
committed *before* the request goes out, so whatever happens next, the row says a request may have
gone. A row is ready when it is pending or deferred, its ``next_at`` has come, its campaign is not
stopped, and (for part k of a split recording) part k-1 is sent.

**A claim whose commit was lost.** If the connection breaks during the claim, it may or may not have
committed. Each claim therefore carries a random id stored on the rows it takes: on the way back the
worker first looks for rows holding that id (committed: they are its own, to send) and only claims
anew when there are none. Nothing is left ``sending`` under a live worker that does not know it.

**Result.** A result is written only ``WHERE attempts = <the claim's attempt>`` and the row is still
``sending`` or ``unknown`` (the reaper may have given up on a slow worker: its definite answer is
better than "unknown"). A stale result (the row was settled by a person, or claimed again after
that) changes nothing and is kept as a ``stale`` event. So a mistaken lease can mislabel a row; it
can never make it go twice.

**Tokens.** A result that makes more work commits that work's send token with it (see
:mod:`audiopipe.campaign.pg.jobs`): a deferred send with tries left gets a token due when it may go again,
and a sent part of a split recording a token for the part it releases. No result is written without
the token it needs, so no send waits forever for a token that was never deferred.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from psycopg.rows import dict_row

from audiopipe.campaign.ledger import DEFERRED, FAILED, PENDING, SENDING, SENT, UNKNOWN, SendKey
from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.connection import Connection, Database
from audiopipe.campaign.pg.records import KEY_WHERE, add_event, key_args, query

FINAL = (SENT, FAILED, DEFERRED, UNKNOWN)


@dataclass(frozen=True)
class Claim:
    """A send this worker may make now: committed ``sending`` under ``owner`` with attempt ``attempt``."""

    key: SendKey
    attempt: int
    owner: str
    parts: int
    file: str
    prepared_sha256: str | None
    work: str | None
    stored: str | None = None   # the prepared part's key in the campaign's store (distributed campaigns)


class Recorded(str, Enum):
    """What became of a result (see :meth:`audiopipe.campaign.pg.ledger.PgLedger.complete`)."""

    WRITTEN = "written"          # the row holds it
    STALE = "stale"              # the row had moved on (another attempt, a person's word): kept as an event only
    JOURNALLED = "journalled"    # the database was unreachable: kept on local disk, written when it is back

    def __str__(self) -> str:
        return str(self.value)


_CLAIM = """
WITH picked AS (
    SELECT s.campaign, s.workspace, s.contact, s.source_sha256, s.part
      FROM sends s
     WHERE s.state IN (%(pending)s, %(deferred)s) AND s.next_at <= now()
       AND (%(campaign)s::text IS NULL OR s.campaign = %(campaign)s)
       AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.campaign = s.campaign AND c.stopped_at IS NOT NULL)
       AND (s.part = 1 OR EXISTS (
            SELECT 1 FROM sends p WHERE p.campaign = s.campaign AND p.workspace = s.workspace
               AND p.contact = s.contact AND p.source_sha256 = s.source_sha256 AND p.part = s.part - 1
               AND p.state = %(sent)s))
     ORDER BY s.next_at
     LIMIT %(limit)s
       FOR UPDATE OF s SKIP LOCKED
), claimed AS (
    UPDATE sends s
       SET state = %(sending)s, owner = %(owner)s, claim = %(claim)s, attempts = s.attempts + 1,
           message_id = NULL, error = NULL, status = NULL, resolved = NULL, updated_at = now()
      FROM picked
     WHERE (s.campaign, s.workspace, s.contact, s.source_sha256, s.part)
         = (picked.campaign, picked.workspace, picked.contact, picked.source_sha256, picked.part)
       AND s.state IN (%(pending)s, %(deferred)s)
    RETURNING s.campaign, s.workspace, s.contact, s.source_sha256, s.part, s.attempts, s.owner, s.parts, s.file,
              s.prepared_sha256, s.work, s.stored
), logged AS (
    INSERT INTO events (campaign, workspace, contact, source_sha256, part, state, detail)
    SELECT campaign, workspace, contact, source_sha256, part, %(sending)s,
           jsonb_build_object('file', file, 'owner', owner, 'attempt', attempts)
      FROM claimed
)
SELECT * FROM claimed"""

_MINE = """
SELECT campaign, workspace, contact, source_sha256, part, attempts, owner, parts, file, prepared_sha256, work, stored
  FROM sends WHERE state = %s AND owner = %s AND claim = %s"""

_COMPLETE = query("""
UPDATE sends SET state = %s, message_id = %s, error = %s, status = %s, updated_at = now(),
       next_at = CASE WHEN %s THEN now() + make_interval(secs => %s) ELSE next_at END,
       sent_by = coalesce(%s, sent_by)
 WHERE {key} AND attempts = %s AND state IN (%s, %s)""", key=KEY_WHERE)
_HOLDS = query("SELECT attempts, state, message_id FROM sends WHERE {key}", key=KEY_WHERE)


def _claim(r: dict[str, Any]) -> Claim:
    return Claim(SendKey(r["campaign"], r["workspace"], r["contact"], r["source_sha256"], r["part"]),
                 attempt=r["attempts"], owner=r["owner"], parts=r["parts"], file=r["file"],
                 prepared_sha256=r["prepared_sha256"], work=r["work"], stored=r["stored"])


def claim_rows(conn: Connection, owner: str, claim_id: uuid.UUID, *, limit: int = 1,
               campaign: str | None = None) -> list[Claim]:
    """One claim, every row taken marked with ``claim_id``: one statement, committed by itself (the
    connection is in autocommit), so it is whole or not at all."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_CLAIM, {"pending": PENDING, "deferred": DEFERRED, "sent": SENT, "sending": SENDING,
                                    "campaign": campaign, "limit": limit, "owner": owner, "claim": claim_id}).fetchall()
    return [_claim(r) for r in rows]


def claimed_by(conn: Connection, owner: str, claim_id: uuid.UUID) -> list[Claim]:
    """The rows a claim with ``claim_id`` took and ``owner`` still holds: a claim committed, its answer lost."""
    with conn.cursor(row_factory=dict_row) as cur:
        return [_claim(r) for r in cur.execute(_MINE, (SENDING, owner, claim_id)).fetchall()]


def claim(db: Database, owner: str, *, limit: int = 1, campaign: str | None = None) -> list[Claim]:
    """Claim up to ``limit`` ready sends for ``owner`` (see the module's docstring), committed. Tried
    again while the database is away; a try that broke off may have committed, so each later try
    first takes back what it took."""
    claim_id = uuid.uuid4()
    tried = [False]

    def work(conn: Connection) -> list[Claim]:
        if tried[0]:
            mine = claimed_by(conn, owner, claim_id)
            if mine:
                return mine
        tried[0] = True
        return claim_rows(conn, owner, claim_id, limit=limit, campaign=campaign)

    return db.run(work, doing="claim sends")


@dataclass(frozen=True)
class Result:
    """The outcome of one claimed send, as a worker learned it (also what the journal keeps)."""

    claim: Claim
    state: str
    message_id: str | None = None
    error: str | None = None
    status: int | None = None
    retry_in: float = 0.0   # deferred: not to be tried again for this long
    sent_by: str | None = None  # upload or url: how its request gave the API the file (None: no request)


def write_result(conn: Connection, result: Result) -> Recorded:
    """Write one result fenced by its attempt, with its event, in one transaction."""
    if result.state not in FINAL:
        raise ValueError(f"bad final state {result.state!r}")
    c = result.claim
    detail = {"message_id": result.message_id, "error": result.error, "status": result.status,
              "owner": c.owner, "attempt": c.attempt}
    with conn.transaction():
        done = conn.execute(_COMPLETE, (result.state, result.message_id, result.error, result.status,
                                        result.state == DEFERRED, result.retry_in, result.sent_by,
                                        *key_args(c.key), c.attempt,
                                        SENDING, UNKNOWN)).rowcount == 1
        if not done and _holds(conn, result):
            return Recorded.WRITTEN  # written before, by a try whose answer was lost, or a replay
        add_event(conn, c.key, result.state if done else "stale", detail if done else dict(detail, state=result.state))
        if done:
            jobs.after_result(conn, c.key, c.parts, result.state, retry_in=result.retry_in)
    return Recorded.WRITTEN if done else Recorded.STALE


def _holds(conn: Connection, result: Result) -> bool:
    """Whether the row already holds exactly this result of this attempt."""
    row = conn.execute(_HOLDS, key_args(result.claim.key)).fetchone()
    return row is not None and tuple(row) == (result.claim.attempt, result.state, result.message_id)


def complete(db: Database, result: Result, *, retry_for: float | None = None) -> Recorded:
    """Write ``result`` (safe to try again: a second write of the same result finds the row moved on)."""
    return db.run(lambda conn: write_result(conn, result), doing="record a result", retry_for=retry_for)
