"""A worker SIGKILLed mid-encode: its prepare stays ``preparing`` under a dead owner until its lease runs
out; then the reaper's job takes it over and finishes it. One ready result, ffmpeg completed once, no
partial file in the store. Real subprocess, real SIGKILL, real ffmpeg, real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from prepare_helpers import batch, broadcast_csv, context, count, prepare_jobs, store_files, tokens

from audiopipe.campaign.pg import prepares
from audiopipe.distributed.planner import plan_campaign
from audiopipe.distributed.prepare_task import PrepareDone, prepare_job
from audiopipe.store import DirectoryStore

pytestmark = pytest.mark.timeout(120)

LEASE = 2.0
CHILD = """
import sys, threading
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.distributed.context import WorkerContext
from audiopipe.distributed.prepare_task import prepare_job

url, journal, campaign, source, recipe, lease = sys.argv[1:]
ledger = PgLedger(url, lease=float(lease), journal_dir=journal)
ledger.acquire()
print(ledger.worker_id, flush=True)
prepare_job(WorkerContext(ledger=ledger, stop=threading.Event()), campaign, source, recipe)
"""


def wait_for(check, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds:g} s: {what}")
        time.sleep(0.05)


def test_a_prepare_killed_mid_encode_is_taken_over_and_finished_once(tmp_path, open_pg, pg_url, long_wav,
                                                                     ffmpeg_log, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the killed worker's scratch folder stays in the test's
    folder = tmp_path / "rec"
    folder.mkdir()
    long_wav(folder / "talk.wav", 600)  # ten minutes: seconds of encoding, time enough to kill it
    ledger = open_pg(lease=LEASE)
    store = DirectoryStore(tmp_path / "store")
    plan_campaign(ledger, store, batch(folder, broadcast_csv(tmp_path, 2)))
    (job,) = prepare_jobs(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # taken by the first worker, as procrastinate does
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE task_name = 'audiopipe.prepare'")

    child = subprocess.Popen([sys.executable, "-c", CHILD, pg_url, str(tmp_path / "journal"), job["campaign"],
                              job["source"], job["recipe"], str(LEASE)], stdout=subprocess.PIPE, text=True)
    try:
        doomed = child.stdout.readline().strip()  # type: ignore[union-attr]
        wait_for(lambda: ffmpeg_log.started == 1, 60, "the first worker starts encoding")
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    assert ffmpeg_log.completed == 0, "the encode finished before the kill: make the recording longer"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT state, owner, attempts FROM prepares").fetchone() == ("preparing", doomed, 1)

        ctx = context(ledger)  # a live worker meanwhile: the prepare is held by the dead one's lease
        assert prepare_job(ctx, job["campaign"], job["source"], job["recipe"]) is PrepareDone.NOTHING
        # the reaper finds it once the lease ran out, and defers the job that takes it over
        wait_for(lambda: prepares.defer_stalled(conn, lease=LEASE) == 1, 30, "the dead owner's lease runs out")

    jobs_now = prepare_jobs(pg_url)
    assert len(jobs_now) == 2 and jobs_now[-1] == job
    assert prepare_job(ctx, job["campaign"], job["source"], job["recipe"]) is PrepareDone.READY
    assert (ffmpeg_log.started, ffmpeg_log.completed) == (2, 1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        state, owner, attempts, parts = conn.execute("SELECT state, owner, attempts, parts FROM prepares").fetchone()
    assert (state, owner, attempts, len(parts)) == ("ready", None, 2, 1)
    assert count(pg_url, "SELECT count(*) FROM sends WHERE state = 'pending'") == 2 and tokens(pg_url, "spring") == 2
    assert store_files(store) == sorted([job["source"] + ".wav", parts[0]["key"]])  # nothing partial
    assert prepare_job(ctx, job["campaign"], job["source"], job["recipe"]) is PrepareDone.NOTHING


def test_a_pending_prepare_whose_job_was_lost_gets_a_new_one_after_a_lease(tmp_path, open_pg, pg_url, long_wav,
                                                                          ffmpeg_log):
    """A prepare job that ended without claiming (cancelled by hand, or failed before its claim) leaves
    the prepare pending with nothing queued for it: the reaper defers a new job once a lease has passed
    since the prepare last changed, and never while a job for it is still queued."""
    folder = tmp_path / "rec"
    folder.mkdir()
    long_wav(folder / "tone.wav", 2)
    ledger = open_pg(lease=LEASE)
    plan_campaign(ledger, DirectoryStore(tmp_path / "store"), batch(folder, broadcast_csv(tmp_path, 2)))
    (job,) = prepare_jobs(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert prepares.defer_stalled(conn, lease=LEASE) == 0  # its job is queued: nothing to do
        conn.execute("UPDATE procrastinate_jobs SET status = 'cancelled' WHERE task_name = 'audiopipe.prepare'")
        assert prepares.defer_stalled(conn, lease=60.0) == 0  # lost, but too recently: it may be just starting
        wait_for(lambda: prepares.defer_stalled(conn, lease=LEASE) == 1, 30, "a lease after the last change")
        assert prepares.defer_stalled(conn, lease=LEASE) == 0  # its new job is queued now
    assert prepare_jobs(pg_url) == [job, job]
    assert prepare_job(context(ledger), job["campaign"], job["source"], job["recipe"]) is PrepareDone.READY
    assert ffmpeg_log.completed == 1
