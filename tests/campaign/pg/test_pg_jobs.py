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


WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32


def tokens(url: str) -> list[tuple[bool, float]]:
    """The send tokens queued: (due now, seconds until due)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT scheduled_at IS NULL, extract(epoch FROM coalesce(scheduled_at, now()) - now()) "
                            "FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo' ORDER BY id",
                            (jobs.SEND_TASK,)).fetchall()
    return [(bool(r[0]), float(r[1])) for r in rows]


def planned(open_pg, *contacts: str, parts: int = 1, attempts: int = 5):
    from audiopipe.campaign.ledger import PlannedSend, SendKey

    ledger = open_pg()
    keys = [SendKey("spring", WS, c, SHA, p) for c in contacts for p in range(1, parts + 1)]
    ledger.plan("work", [PlannedSend(k, parts, "talk.wav", "cd" * 32) for k in keys])
    ledger.db.run(lambda conn: save_settings(conn, "spring", CampaignSettings(attempts=attempts)), doing="settings")
    ledger.acquire()
    return ledger


def test_a_deferred_result_commits_its_retry_token_due_when_the_row_is(open_pg, pg_url):
    ledger = planned(open_pg, "c1")
    [claim] = ledger.claim(campaign="spring")
    ledger.complete(claim, "deferred", error="429", status=429, retry_in=40)
    [(now, due)] = tokens(pg_url)
    assert not now and 35 < due <= 40


def test_a_send_out_of_tries_gets_no_token_until_a_person_resumes(open_pg, pg_url):
    ledger = planned(open_pg, "c1", attempts=1)
    [claim] = ledger.claim(campaign="spring")
    ledger.complete(claim, "deferred", error="500", retry_in=0)
    assert tokens(pg_url) == []
    ledger.stop_campaign("spring", "test")
    assert ledger.resume_campaign("spring", by="tester")
    assert len(tokens(pg_url)) == 1  # resume gives it one more try


def test_a_stopped_campaign_gets_no_retry_token(open_pg, pg_url):
    ledger = planned(open_pg, "c1")
    [claim] = ledger.claim(campaign="spring")
    ledger.stop_campaign("spring", "401")
    ledger.complete(claim, "deferred", error="401", status=401)
    assert tokens(pg_url) == []


def test_a_sent_part_releases_the_next_with_a_token(open_pg, pg_url):
    ledger = planned(open_pg, "c1", parts=2)
    [first] = ledger.claim(campaign="spring")
    assert first.key.part == 1 and ledger.claim(campaign="spring") == []
    ledger.complete(first, "sent", message_id="m1")
    assert [now for now, _ in tokens(pg_url)] == [True]
    [second] = ledger.claim(campaign="spring")
    assert second.key.part == 2
    ledger.complete(second, "sent", message_id="m2")
    assert len(tokens(pg_url)) == 1  # the last part releases nothing


def test_settling_an_unknown_as_not_delivered_tokens_its_retry(open_pg, pg_url):
    ledger = planned(open_pg, "c1")
    [claim] = ledger.claim(campaign="spring")
    ledger.complete(claim, "unknown", error="lost")
    assert tokens(pg_url) == []
    ledger.resolve([claim.key], delivered=False, by="tester")
    assert len(tokens(pg_url)) == 1
    with psycopg.connect(pg_url) as conn:
        assert jobs.sends_to_come(conn, "spring")[0] == 1
        assert jobs.top_up(conn, "spring") == 0  # nothing lacking


def test_take_token_takes_only_a_waiting_token_that_is_due(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        jobs.defer_tokens(conn, "spring", 1, in_seconds=60)
        assert not jobs.take_token(conn, "spring")  # not due yet
        jobs.defer_tokens(conn, "spring", 2)
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' "
                     "WHERE id = (SELECT max(id) FROM procrastinate_jobs)")
        assert jobs.take_token(conn, "spring") and not jobs.take_token(conn, "spring")  # the doing one stays
        assert not jobs.take_token(conn, "autumn")
        assert [r[2] for r in job_rows(conn, jobs.SEND_TASK)] == ["todo", "doing"]
