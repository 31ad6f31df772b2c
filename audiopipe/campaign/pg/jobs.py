"""Deferring procrastinate jobs inside the caller's own transaction, so work and its jobs commit together.

A planner records a plan and defers the jobs that will carry it out; a prepare job marks its prepare
ready, expands it into sends and defers their send tokens; a send's deferred result schedules the
token that will try it again. Each pair must commit together or not at all: a plan committed without
its jobs would sit there, jobs without their plan would find nothing to do. So jobs are deferred with
procrastinate's own SQL function (``procrastinate_defer_jobs_v1``, what its ``JobManager`` calls,
installed by :mod:`audiopipe.campaign.pg.queue_schema`) on the caller's psycopg connection, inside its open
transaction; no procrastinate App is needed to defer. procrastinate's insert trigger notifies the
listening workers when the transaction commits.

Tokens are fungible: a send token (task :data:`SEND_TASK`, args ``{"campaign": C}``) means "one send of
campaign C may be made now" (see :mod:`audiopipe.distributed.send_task`); many are deferred in one
statement, the array built by the server. Each campaign has a queue of its own (:func:`queue_of`), so
a process can work on one campaign only, and counting a campaign's tokens is one indexed lookup.

The invariant every writer keeps: a campaign that is not stopped has at least as many tokens (waiting or
running) as sends that can go now or soon (:func:`sends_to_come`: pending, or deferred with tries left,
not waiting for an earlier part). The plan and the prepares defer one token per send; a result defers
the token its row needs (:func:`after_result`); a person's word (resolve, resume) tops up
(:func:`top_up`); and every worker tops up now and then, in case a token was lost (a job that failed).
A token too many is harmless: it finds nothing and ends.
"""

from __future__ import annotations

import hashlib
import re

from psycopg.types.json import Jsonb

from audiopipe.campaign.ledger import DEFERRED, PENDING, SENT, SendKey
from audiopipe.campaign.pg.campaigns import DEFAULT_ATTEMPTS
from audiopipe.campaign.pg.connection import Connection

SEND_TASK = "audiopipe.send"
PREPARE_TASK = "audiopipe.prepare"
QUEUE_PREFIX = "audiopipe:"
PREPARE_PRIORITY = 1   # before send tokens: a prepare unlocks sends, a token of a campaign not ready waits
_QUEUE_MAX = 128       # procrastinate_jobs.queue_name is varchar(128)
_PLAIN = re.compile(r"[A-Za-z0-9._:@+-]+")

_DEFER = """
SELECT procrastinate_defer_jobs_v1(ARRAY(
    SELECT ROW(%(queue)s, %(task)s, %(priority)s, NULL, NULL, %(args)s::jsonb,
               CASE WHEN %(secs)s > 0 THEN now() + make_interval(secs => %(secs)s) END
           )::procrastinate_job_to_defer_v1
      FROM generate_series(1, %(count)s)))"""

# Sends of a campaign that can go now or later without a person: pending, or deferred with tries left
# (the campaign's ``attempts`` setting), and not a part waiting at 'infinity' for the one before it.
_TO_COME = """
SELECT count(*), extract(epoch FROM greatest(min(s.next_at), now() - interval '1 day') - now())::float8
  FROM sends s JOIN campaigns c USING (campaign)
 WHERE s.campaign = %(campaign)s AND c.stopped_at IS NULL AND s.next_at < 'infinity'
   AND (s.state = %(pending)s OR (s.state = %(deferred)s AND (%(all)s OR
        s.attempts < coalesce((c.settings->>'attempts')::int, %(attempts)s))))"""

_TRIES_LEFT = """
SELECT s.attempts < coalesce((c.settings->>'attempts')::int, %s) AND c.stopped_at IS NULL
  FROM sends s JOIN campaigns c USING (campaign)
 WHERE s.campaign = %s AND s.workspace = %s AND s.contact = %s AND s.source_sha256 = %s AND s.part = %s"""

# One waiting token of a campaign, due now, deleted through procrastinate's own cancel function (a
# token a worker fetched meanwhile is 'doing': the function leaves it alone and returns NULL)
_TAKE = """
SELECT procrastinate_cancel_job_v1(j.id, false, true) FROM (
    SELECT id FROM procrastinate_jobs
     WHERE queue_name = %s AND task_name = %s AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
     ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) j"""

_QUEUED = """
SELECT count(*) FROM procrastinate_jobs
 WHERE queue_name = %s AND task_name = %s AND status IN ('todo', 'doing')"""


def queue_of(campaign: str) -> str:
    """The procrastinate queue of ``campaign``'s jobs: its name when short and plain, else a hash of it."""
    name = QUEUE_PREFIX + campaign
    if len(name) <= _QUEUE_MAX and _PLAIN.fullmatch(campaign):
        return name
    digest = hashlib.sha256(campaign.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{QUEUE_PREFIX}{re.sub(r'[^A-Za-z0-9._-]', '_', campaign)[:48]}#{digest}"


def defer_tokens(conn: Connection, campaign: str, count: int, *, in_seconds: float = 0.0) -> None:
    """Defer ``count`` send tokens of ``campaign``, due in ``in_seconds`` (0: now), in the caller's
    transaction (a connection in autocommit defers them at once, all or none: one statement)."""
    if count <= 0:
        return
    conn.execute(_DEFER, {"queue": queue_of(campaign), "task": SEND_TASK, "priority": 0, "count": count,
                          "args": Jsonb({"campaign": campaign}), "secs": max(in_seconds, 0.0)})


def defer_prepare(conn: Connection, campaign: str, source_sha256: str, recipe: str) -> None:
    """Defer the prepare job of (``source_sha256``, ``recipe``) for ``campaign``, in the caller's
    transaction; nothing when one is already queued and not started (a duplicate would be harmless,
    only wasted: the prepare row decides who prepares)."""
    args = Jsonb({"campaign": campaign, "source": source_sha256, "recipe": recipe})
    queue = queue_of(campaign)
    if conn.execute("SELECT 1 FROM procrastinate_jobs WHERE queue_name = %s AND task_name = %s AND status = 'todo' "
                    "AND args = %s::jsonb LIMIT 1", (queue, PREPARE_TASK, args)).fetchone():
        return
    conn.execute(_DEFER, {"queue": queue, "task": PREPARE_TASK, "priority": PREPARE_PRIORITY, "count": 1,
                          "args": args, "secs": 0.0})


def take_token(conn: Connection, campaign: str) -> bool:
    """Take one waiting send token of ``campaign`` that is due, for a token job that goes on sending
    (one job, several sends: procrastinate's work per job is paid once). False when none is waiting."""
    row = conn.execute(_TAKE, (queue_of(campaign), SEND_TASK)).fetchone()
    return row is not None and row[0] is not None


def queued_tokens(conn: Connection, campaign: str) -> int:
    """How many send tokens of ``campaign`` are waiting or running."""
    row = conn.execute(_QUEUED, (queue_of(campaign), SEND_TASK)).fetchone()
    return int(row[0]) if row else 0


def sends_to_come(conn: Connection, campaign: str, *, exhausted_too: bool = False) -> tuple[int, float | None]:
    """How many sends of ``campaign`` can go now or later without a person (see ``_TO_COME``; with
    ``exhausted_too``, deferred ones out of tries as well), and in how many seconds the first is due
    (negative: overdue; None: there is none). Nothing for a stopped campaign."""
    row = conn.execute(_TO_COME, {"campaign": campaign, "pending": PENDING, "deferred": DEFERRED,
                                  "all": exhausted_too, "attempts": DEFAULT_ATTEMPTS}).fetchone()
    if row is None or not row[0]:
        return 0, None
    return int(row[0]), float(row[1])


def top_up(conn: Connection, campaign: str, *, exhausted_too: bool = False) -> int:
    """Defer the tokens ``campaign`` lacks (sends to come minus tokens queued). Returns how many."""
    wanted, _due = sends_to_come(conn, campaign, exhausted_too=exhausted_too)
    missing = wanted - queued_tokens(conn, campaign)
    defer_tokens(conn, campaign, missing)
    return max(missing, 0)


def after_result(conn: Connection, key: SendKey, parts: int, state: str, *, retry_in: float = 0.0) -> None:
    """The token a result just written needs, in its transaction: a deferred send with tries left (in a
    campaign not stopped) gets one due in ``retry_in``; a sent part releases the next (the trigger of
    schema step 1 makes it due now), which gets one now."""
    if state == DEFERRED:
        row = conn.execute(_TRIES_LEFT, (DEFAULT_ATTEMPTS, key.campaign, key.workspace, key.contact,
                                         key.source_sha256, key.part)).fetchone()
        if row and row[0]:
            defer_tokens(conn, key.campaign, 1, in_seconds=retry_in)
    elif state == SENT and key.part < parts:
        defer_tokens(conn, key.campaign, 1)
