"""A worker process's life: register, take jobs of every campaign (or of some queues), stop well.

:func:`run_worker` opens one :class:`~audiopipe.campaign.pg.ledger.PgLedger` (registered as a worker,
with its heartbeat) shared by the job threads, and runs a procrastinate worker (async psycopg pool) on
the App of :mod:`audiopipe.distributed.app` with ``concurrency`` jobs at once, each synchronous job in a
thread of an executor sized to match. It always listens to the maintenance queue too, so every worker
runs the safety nets.

Stopping: the first SIGTERM or SIGINT sets the stop event (token jobs not yet claimed defer themselves
again, a prepare not started likewise) and tells procrastinate to fetch nothing more; jobs with a
request in flight finish and record it; then the worker unregisters and :func:`run_worker` returns. A
second signal ends the process at once, by that signal's default action: its sends in flight are left
``sending``, and the reaper makes them unknown (never resent). ``until_idle``: the worker also stops
when no campaign (or none of ``queues``' campaigns) has work left (see :mod:`audiopipe.distributed.idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.connection import Connection, reason
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.distributed import idle
from audiopipe.distributed.app import CONTEXT_KEY, MAINTENANCE_QUEUE, heartbeat_every, make_app, stalled_after
from audiopipe.distributed.context import ApiSettings, WorkerContext

log = logging.getLogger(__name__)

IDLE_CHECK = 0.5     # seconds between two looks for work left (until_idle)
POLL = 1.0           # procrastinate's polling for jobs, besides LISTEN/NOTIFY (a scheduled token's time comes)
RESTART = 1.0        # seconds before procrastinate is started again after it stopped on its own (a database restart)


@dataclass(frozen=True)
class WorkerSummary:
    """What one worker did: its id (as ``status`` shows it), how its jobs ended, why it stopped."""

    worker_id: str
    ends: dict[str, int]
    stopped: str            # "signal", "idle" or "cancelled"

    @property
    def sent(self) -> int:
        return self.ends.get("sent", 0)


def run_worker(url: str, *, concurrency: int = 8, until_idle: bool = False,  # noqa: PLR0913 - the worker's settings, each a keyword with a default
               queues: list[str] | None = None, store: str | None = None, api: ApiSettings | None = None,
               lease: float = 60.0, journal_dir: str | Path | None = None,
               stop: threading.Event | None = None) -> WorkerSummary:
    """Work on the database at ``url`` until stopped (see the module's docstring). ``queues``: only
    these procrastinate queues (a campaign's is :func:`audiopipe.campaign.pg.jobs.queue_of`), every one
    when None. ``store``: a store spec replacing the campaigns' own. ``stop``: set it to stop the worker
    as a signal would (signal handlers are installed only in the main thread)."""
    api = api or ApiSettings()
    api.client().close()  # a missing token or a bad base URL is refused before anything is claimed
    ctx = WorkerContext(PgLedger(url, pool_size=concurrency + 4, lease=lease, journal_dir=journal_dir),
                        stop or threading.Event(), api, store_override=store)
    try:
        ctx.ledger.acquire()
        stopped = asyncio.run(_work(url, ctx, concurrency, until_idle, queues))
    finally:
        ctx.close()
        ctx.ledger.close()
    return WorkerSummary(ctx.ledger.worker_id, dict(ctx.tally), stopped)


class _Run:
    """One worker's procrastinate run, and why it stopped (the first reason given)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.why: str | None = None
        self.current: asyncio.Task[None] | None = None

    def stop_now(self, reason: str) -> None:
        if self.why is None:
            self.why = reason
            self.ctx.stop.set()          # token jobs waiting for their turn give it back
            if self.current is not None:
                self.current.cancel()    # procrastinate fetches nothing more and waits for the jobs running


async def _work(url: str, ctx: WorkerContext, concurrency: int, until_idle: bool, queues: list[str] | None) -> str:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="audiopipe-job"))
    app = make_app(url, pool_size=concurrency + 4)
    options: dict[str, Any] = {
        "concurrency": concurrency, "wait": True, "install_signal_handlers": False, "listen_notify": True,
        "additional_context": {CONTEXT_KEY: ctx}, "name": f"audiopipe-{ctx.ledger.worker_id}",
        "fetch_job_polling_interval": POLL, "update_heartbeat_interval": heartbeat_every(ctx.ledger.lease),
        "stalled_worker_timeout": stalled_after(ctx.ledger.lease)}
    if queues is not None:
        options["queues"] = [*queues, MAINTENANCE_QUEUE]
    run = _Run(ctx)
    async with app.open_async():
        watchers = [asyncio.create_task(_until_set(ctx.stop, run.stop_now))]
        if until_idle:
            watchers.append(asyncio.create_task(_until_idle(ctx, queues, run.stop_now)))
        with _signals(loop, run.stop_now):
            while run.why is None:
                run.current = asyncio.create_task(app.run_worker_async(**options))
                try:
                    await run.current
                except asyncio.CancelledError:
                    pass
                except Exception as exc:  # the database went away under procrastinate: start it again
                    log.warning("the job queue stopped (%s); starting it again", reason(exc))
                if run.why is None:
                    await asyncio.sleep(RESTART)
        for w in watchers:
            w.cancel()
    return run.why or "cancelled"


async def _until_set(event: threading.Event, stop_now: Callable[[str], None]) -> None:
    """``stop`` set from another thread (an embedding program, a test) stops the worker as a signal does."""
    while not event.is_set():
        await asyncio.sleep(IDLE_CHECK)
    stop_now("signal")


async def _until_idle(ctx: WorkerContext, queues: list[str] | None, stop_now: Callable[[str], None]) -> None:
    def left(conn: Connection) -> bool:
        if queues is None:
            return idle.work_left(conn, lease=ctx.ledger.lease)
        names = set(queues)
        campaigns = [r[0] for r in conn.execute("SELECT campaign FROM campaigns") if jobs.queue_of(r[0]) in names]
        return any(idle.work_left(conn, c, lease=ctx.ledger.lease) for c in campaigns)

    while await asyncio.to_thread(ctx.ledger.db.run, left, doing="look for work left"):
        await asyncio.sleep(IDLE_CHECK)
    await asyncio.to_thread(ctx.ledger.reap)  # a dead worker's sends are left unknown, not sending, when it ends
    stop_now("idle")


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, stop_now: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM and SIGINT stop the worker well; a second one ends the process at once (main thread only:
    elsewhere the embedding program stops it through ``stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def on_signal(sig: int) -> None:
        if seen:  # the second: no more waiting; what is in flight is left to the reaper (unknown, never resent)
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        seen.append(sig)
        stop_now("signal")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
