"""Jobs deferred inside the caller's transaction: committed with it, gone with its rollback, in the
campaign's queue, readable by procrastinate itself; campaign settings and schema step 2."""

from __future__ import annotations

import procrastinate
import psycopg
import pytest

from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.campaigns import CampaignSettings, load_settings, save_settings

pytestmark = pytest.mark.timeout(60)


def job_rows(conn: psycopg.Connection, task: str) -> list[tuple]:
    return conn.execute("SELECT queue_name, args, status::text, scheduled_at IS NOT NULL, priority "
                        "FROM procrastinate_jobs WHERE task_name = %s ORDER BY id", (task,)).fetchall()


def test_tokens_commit_with_the_transaction_and_vanish_with_its_rollback(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(RuntimeError), conn.transaction():
            jobs.defer_tokens(conn, "spring", 5)
            assert len(job_rows(conn, jobs.SEND_TASK)) == 5  # visible inside the transaction
            raise RuntimeError("the plan failed")
        assert job_rows(conn, jobs.SEND_TASK) == []
        with conn.transaction():
            jobs.defer_tokens(conn, "spring", 3)
            jobs.defer_tokens(conn, "spring", 2, in_seconds=30)
            jobs.defer_tokens(conn, "spring", 0)
        rows = job_rows(conn, jobs.SEND_TASK)
        assert [r[:3] for r in rows] == [("audiopipe:spring", {"campaign": "spring"}, "todo")] * 5
        assert [r[3] for r in rows] == [False] * 3 + [True] * 2
        assert jobs.queued_tokens(conn, "spring") == 5 and jobs.queued_tokens(conn, "autumn") == 0


def test_procrastinate_reads_the_jobs_we_deferred(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        jobs.defer_tokens(conn, "spring", 2)
        jobs.defer_prepare(conn, "spring", "ab" * 32, "r1")
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=pg_url))
    with app.open():
        listed = app.job_manager.list_jobs(queue="audiopipe:spring")
    assert sorted(j.task_name for j in listed) == [jobs.PREPARE_TASK, jobs.SEND_TASK, jobs.SEND_TASK]
    prepare = next(j for j in listed if j.task_name == jobs.PREPARE_TASK)
    assert prepare.task_kwargs == {"campaign": "spring", "source": "ab" * 32, "recipe": "r1"}
    assert prepare.priority > 0  # prepares unlock sends: taken first


def test_a_prepare_already_queued_is_not_queued_twice(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for _ in range(3):
            jobs.defer_prepare(conn, "spring", "ab" * 32, "r1")
        jobs.defer_prepare(conn, "spring", "cd" * 32, "r1")
        jobs.defer_prepare(conn, "autumn", "ab" * 32, "r1")
        assert len(job_rows(conn, jobs.PREPARE_TASK)) == 3


def test_queue_names_fit_procrastinate_and_stay_apart():
    assert jobs.queue_of("spring") == "audiopipe:spring"
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(jobs.queue_of(long_a)) <= 128 and jobs.queue_of(long_a) != jobs.queue_of(long_b)
    assert jobs.queue_of("été 2026") != jobs.queue_of("t 2026") and len(jobs.queue_of("été 2026")) <= 128


def test_campaign_settings_round_trip(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert load_settings(conn, "spring") == CampaignSettings()
        wanted = CampaignSettings(rate=80.0, attempts=3, store="/srv/store")
        with conn.transaction():
            save_settings(conn, "spring", wanted)
        assert load_settings(conn, "spring") == wanted
        save_settings(conn, "spring", CampaignSettings(attempts=7))
        assert load_settings(conn, "spring") == CampaignSettings(attempts=7)
        conn.execute("SELECT stored FROM sends LIMIT 0")  # step 2's column is there
