"""The procrastinate App of audiopipe's workers: the two job kinds and the periodic safety nets.

- ``audiopipe.send`` (:mod:`.send_task`): a send token; ``audiopipe.prepare``: a prepare job (its body is
  :func:`audiopipe.distributed.prepare_task.prepare_job`). Both are synchronous (HTTP, ffmpeg): procrastinate
  runs each in a thread of the event loop's executor, which :func:`audiopipe.distributed.worker.run_worker`
  sizes to the concurrency.
- Every worker runs the safety nets, as procrastinate periodic tasks (each period's job is deferred once
  whichever worker gets there first) in a queue every worker listens to (:data:`MAINTENANCE_QUEUE`):
  ``audiopipe.maintain`` makes the sends of dead workers unknown (the reaper), defers again the prepares
  a dead worker left half done, tops up the send tokens of every campaign (in case a token job was lost,
  say to an exception) and deletes succeeded tokens; ``audiopipe.retry_stalled`` puts back the jobs of
  procrastinate workers that stopped beating (a SIGKILL), so that their tokens are not lost.

The tasks find their :class:`~audiopipe.distributed.context.WorkerContext` in the job context
(``additional_context["audiopipe"]``), given by the worker that runs them.
"""

from __future__ import annotations

import logging

import procrastinate
from procrastinate import JobContext

from audiopipe.campaign.pg import jobs, prepares
from audiopipe.campaign.pg.connection import Connection
from audiopipe.distributed.context import WorkerContext
from audiopipe.distributed.prepare_task import prepare_job
from audiopipe.distributed.send_task import send_token

log = logging.getLogger(__name__)

MAINTENANCE_QUEUE = "audiopipe#maintenance"  # never a campaign's: those are "audiopipe:<campaign>"
EVERY = "* * * * * */10"                     # every 10 s: croniter's 6th field is the seconds (last)
STALLED_AFTER = 15.0                         # seconds without a procrastinate heartbeat: a job's worker is gone
HEARTBEAT = 5.0                              # seconds between a procrastinate worker's heartbeats
CLEAN_BATCH = 20_000                         # finished token jobs deleted a round, at most
CONTEXT_KEY = "audiopipe"

# finished tokens are deleted (with their events), a bounded number a round: a campaign of a million
# sends would otherwise leave a million rows in every count of a queue
_CLEAN = """
DELETE FROM procrastinate_jobs WHERE id IN (
    SELECT id FROM procrastinate_jobs WHERE task_name = %s AND status = 'succeeded' ORDER BY id LIMIT %s)"""


def heartbeat_every(lease: float) -> float:
    """Seconds between a procrastinate worker's heartbeats, for a worker whose lease is ``lease``."""
    return min(HEARTBEAT, lease / 3)


def stalled_after(lease: float) -> float:
    """Seconds without a heartbeat after which a procrastinate worker's jobs are put back: never more than
    :data:`STALLED_AFTER`, shorter with a short lease (three missed heartbeats at least). Putting back a
    job of a worker that was only slow is harmless: a token or a prepare job claims in the ledger first."""
    return min(STALLED_AFTER, max(lease, 3 * heartbeat_every(lease)))


def context_of(job: JobContext) -> WorkerContext:
    ctx = job.additional_context.get(CONTEXT_KEY)
    if not isinstance(ctx, WorkerContext):
        raise RuntimeError("an audiopipe job run by a worker that gave it no WorkerContext (use run_worker)")
    return ctx


def maintain(ctx: WorkerContext) -> dict[str, int]:
    """One round of the synchronous safety nets (see the module's docstring). Returns what it did."""
    done = {"reaped": ctx.ledger.reap()}

    def tokens_and_prepares(conn: Connection) -> None:
        done["prepares_deferred"] = prepares.defer_stalled(conn, lease=ctx.ledger.lease)
        campaigns = [r[0] for r in conn.execute("SELECT campaign FROM campaigns WHERE stopped_at IS NULL")]
        done["tokens_added"] = sum(_top_up(conn, c) for c in campaigns)
        done["tokens_deleted"] = conn.execute(_CLEAN, (jobs.SEND_TASK, CLEAN_BATCH)).rowcount
    ctx.ledger.db.run(tokens_and_prepares, doing="keep the queue in step with the ledger")
    return done


def _top_up(conn: Connection, campaign: str) -> int:
    with conn.transaction():
        return jobs.top_up(conn, campaign)


def make_app(url: str, *, pool_size: int = 10) -> procrastinate.App:
    """The App on the database at ``url`` (an async psycopg pool of up to ``pool_size`` connections)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=pool_size))

    @app.task(name=jobs.SEND_TASK, pass_context=True)
    def send(job: JobContext, campaign: str) -> str:
        return str(send_token(context_of(job), campaign))

    @app.task(name=jobs.PREPARE_TASK, pass_context=True,
              retry=procrastinate.RetryStrategy(max_attempts=5, wait=5))
    def prepare(job: JobContext, campaign: str, source: str, recipe: str) -> str:
        ctx = context_of(job)
        end = str(prepare_job(ctx, campaign, source, recipe))
        ctx.note(f"prepare {end}")
        return end

    @app.periodic(cron=EVERY)
    @app.task(name="audiopipe.maintain", queue=MAINTENANCE_QUEUE, pass_context=True)
    def maintain_task(job: JobContext, timestamp: int) -> str:
        return str(maintain(context_of(job)))

    @app.periodic(cron=EVERY)
    @app.task(name="audiopipe.retry_stalled", queue=MAINTENANCE_QUEUE, pass_context=True)
    async def retry_stalled(job: JobContext, timestamp: int) -> int:
        after = stalled_after(context_of(job).ledger.lease)
        stalled = list(await job.app.job_manager.get_stalled_jobs(seconds_since_heartbeat=after))
        for found in stalled:
            await job.app.job_manager.retry_job(found)
        return len(stalled)

    return app
