"""The schema, created and migrated by audiopipe itself on a real PostgreSQL: from an empty database,
again (nothing to do), by many sessions at once (one does the work, none fails), and refused when it
is not one this audiopipe can use. procrastinate's own tables come with it, and procrastinate finds
them usable."""

from __future__ import annotations

import threading

import psycopg
import pytest

from audiopipe.campaign.pg import queue_schema
from audiopipe.campaign.pg.errors import SchemaError
from audiopipe.campaign.pg.schema import LATEST, check, migrate, versions

pytestmark = pytest.mark.timeout(120)

INSTALLED = ".".join(map(str, queue_schema.INSTALLED))


def tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrate_from_empty_creates_ours_and_procrastinates(pg_empty_url):
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        assert versions(conn) == {}
        applied = migrate(conn)
        assert [a.split(":")[0] for a in applied if a.startswith("audiopipe")] == [
            f"audiopipe schema {n}" for n in range(1, LATEST + 1)]
        assert applied[-1] == f"procrastinate {INSTALLED} schema"
        assert versions(conn) == {"audiopipe": str(LATEST), "procrastinate": INSTALLED}
        assert {"sends", "events", "campaigns", "workers", "rate_limits", "ledger_meta", "schema_version",
                "procrastinate_jobs", "procrastinate_workers"} <= tables(conn)
        check(conn)  # a reader is content


def test_procrastinate_finds_its_schema_usable(pg_empty_url):
    import procrastinate

    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        migrate(conn)
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=pg_empty_url))

    @app.task(name="noop")
    def noop() -> None: ...

    with app.open():
        assert app.check_connection()
        job_id = noop.defer()
        assert app.job_manager.list_jobs(id=job_id)[0].status == "todo"


def test_migrate_again_does_nothing(pg_empty_url):
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        migrate(conn)
        before = conn.execute("SELECT component, version, applied_at FROM schema_version ORDER BY 1, 2").fetchall()
        assert migrate(conn) == []
        assert conn.execute("SELECT component, version, applied_at FROM schema_version ORDER BY 1, 2"
                            ).fetchall() == before


def test_migrate_inside_a_callers_transaction_is_part_of_it(pg_empty_url):
    with psycopg.connect(pg_empty_url) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open: migrate's work joins it
        migrate(conn)
        conn.rollback()
        assert versions(conn) == {}
        conn.execute("SELECT 1")
        migrate(conn)
        conn.commit()
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        assert versions(conn)["audiopipe"] == str(LATEST)


def test_concurrent_migrations_take_turns(pg_empty_url):
    """Eight sessions migrate one empty database at the same moment: the first does it, the others wait
    for its lock, then find nothing to do. Without the lock they would collide on CREATE TABLE."""
    start = threading.Barrier(8)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with psycopg.connect(pg_empty_url, autocommit=True) as conn:
                start.wait()
                results.append(migrate(conn))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) > 0 for r in results) == [False] * 7 + [True]
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST + 1


def test_a_reader_refuses_a_database_without_our_schema(pg_empty_url):
    with psycopg.connect(pg_empty_url, autocommit=True) as conn, pytest.raises(SchemaError, match="db migrate"):
        check(conn)


def test_a_schema_newer_than_this_audiopipe_is_refused(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (component, version) VALUES ('audiopipe', %s)", (str(LATEST + 1),))
        with pytest.raises(SchemaError, match="newer than this audiopipe"):
            migrate(conn)
        with pytest.raises(SchemaError, match="newer than this audiopipe"):
            check(conn)


def test_a_queue_schema_from_a_newer_procrastinate_is_refused(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (component, version) VALUES ('procrastinate', '99.0.0')")
        with pytest.raises(SchemaError, match=r"procrastinate 99\.0\.0, newer than the installed"):
            migrate(conn)


def test_procrastinate_tables_we_did_not_make_are_refused(pg_empty_url):
    from procrastinate.schema import SchemaManager

    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())
        with pytest.raises(SchemaError, match="audiopipe did not make them"):
            migrate(conn)
        assert "sends" not in tables(conn)  # all or nothing: our steps were rolled back with it


def test_queue_migration_files_run_in_release_then_step_order():
    names = [p.name for v, p in queue_schema.migration_files() if v >= (3, 0, 0)]
    assert names[:2] == ["03.00.00_01_pre_cancel_notification.sql", "03.00.00_50_post_cancel_notification.sql"]
    assert names == sorted(names)
    assert all(v <= queue_schema.INSTALLED for v, _ in queue_schema.migration_files())


def test_a_plan_and_its_jobs_commit_together_or_not_at_all(pg_url):
    """procrastinate defers a job on a connection we hand it (configure(connection=...)): a plan
    recorded with record_plan and the jobs that will send it are one transaction."""
    import procrastinate

    from audiopipe.campaign.ledger import PlannedSend, SendKey
    from audiopipe.campaign.pg.plan import record_plan

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=pg_url))

    @app.task(name="send_campaign")
    def send_campaign(campaign: str) -> None: ...

    sends = [PlannedSend(SendKey("spring", "ws", "c1", "ab" * 32, 1), 1, "talk.wav", "cd" * 32)]
    for commit in (False, True):
        with psycopg.connect(pg_url) as conn:
            record_plan(conn, "work", sends)
            send_campaign.configure(connection=conn).defer(campaign="spring")
            if commit:
                conn.commit()
            else:
                conn.rollback()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            found = list(conn.execute("SELECT (SELECT count(*) FROM sends), (SELECT count(*) FROM procrastinate_jobs)"
                                      ).fetchone())
        assert found == ([1, 1] if commit else [0, 0])
