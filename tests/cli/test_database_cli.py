"""The commands of a shared database, run for real against the session's PostgreSQL: ``db migrate``
(twice is a no-op, and says so), ``status --database`` (empty, seeded with claims of a live worker, its
JSON, its exit codes for unknown and stopped campaigns), ``resolve --database`` and ``resume``; and the
errors: an unreachable database or a schema to migrate is one line with what to do, never a traceback,
and a password in the URL never shows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helpers import clean_environ, contacts_for, invoke

from audiopipe.campaign.ledger import DEFERRED, SENT, UNKNOWN, PlannedSend, SendKey
from audiopipe.campaign.pg.jobs import queued_tokens

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SHA = "ab" * 32
PASSWORD = "s3cret-Pa55"
C1, C2, C3, C4 = contacts_for(4)


def cli(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    proc = invoke(args, env=clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def with_password(url: str) -> str:
    """The same database, with a password in the URL (the test cluster trusts local users: it is ignored)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{quote(PASSWORD)}@")


def key(contact: str, campaign: str = "spring", part: int = 1) -> SendKey:
    return SendKey(campaign, WS, contact, SHA, part)


def seed(ledger, *contacts: str, campaign: str = "spring") -> None:  # type: ignore[no-untyped-def]
    ledger.plan("work", [PlannedSend(key(c, campaign), 1, "talk.wav", "cd" * 32) for c in contacts],
                {"folder": "/srv/recordings", "contacts": "/srv/contacts.csv"})


def test_db_migrate_creates_the_schema_then_has_nothing_to_do(pg_empty_url: str, tmp_path: Path) -> None:
    first = cli("db", "migrate", "--database", pg_empty_url, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "schema migrated from none to audiopipe" in first.stdout
    assert "applied audiopipe schema 1" in first.stdout and "procrastinate" in first.stdout
    again = cli("db", "migrate", tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_empty_url)  # the variable is --database
    assert again.returncode == 0, again.stderr
    assert "schema up to date" in again.stdout and "nothing to do" in again.stdout
    assert "applied" not in again.stdout
    as_json = json.loads(cli("db", "migrate", "--json", "--database", pg_empty_url, tmp_path=tmp_path).stdout)
    assert as_json["applied"] == [] and as_json["before"] == as_json["after"]
    assert set(as_json["after"]) == {"audiopipe", "procrastinate"}


def test_status_of_an_empty_database(pg_url: str, tmp_path: Path) -> None:
    done = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("database postgresql://postgres@")
    assert "no worker alive" in done.stdout and "sent: 0" in done.stdout


def test_status_of_a_seeded_campaign_with_a_live_worker(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = open_pg()
    seed(worker, C1, C2, C3, C4)
    worker.set_pace("spring", 8.0)
    worker.acquire()
    one, two, three = worker.claim(limit=3, campaign="spring")
    worker.complete(one, SENT, message_id="m-1")
    worker.complete(two, UNKNOWN, error="the answer was lost")
    # three stays in flight on a live worker; C4 is pending
    text = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert text.returncode == 4, text.stderr  # unknown: the most urgent
    assert "1 worker(s) alive" in text.stdout and f"pid {os.getpid()}" in text.stdout
    assert "campaign 'spring': 4 send(s): 1 sent, 1 pending, 1 unknown, 1 in flight" in text.stdout
    assert "pace 8/s shared by every worker" in text.stdout
    assert "audiopipe resolve --campaign C" in text.stdout
    assert "the 1 worker(s) alive are on it" in text.stdout

    data = json.loads(cli("status", "--database", pg_url, "--json", tmp_path=tmp_path).stdout)
    assert data["verdict"] == "unknown"
    assert data["campaigns"]["spring"]["sent"] == 1 and data["counts"]["sending"] == 1
    assert [w["pid"] for w in data["workers"]] == [os.getpid()]
    assert data["campaign_info"]["spring"]["rate"] == pytest.approx(8.0)
    assert data["campaign_info"]["spring"]["stopped"] is False
    assert {p["state"] for p in data["problems"]} == {UNKNOWN, "sending"}
    assert data["database"].startswith("postgresql://postgres@") and "state" not in data
    worker.complete(three, SENT, message_id="m-3")


def test_unknowns_are_settled_with_resolve_database(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = open_pg()
    seed(worker, C1, C2)
    worker.acquire()
    first, second = worker.claim(limit=2, campaign="spring")
    worker.complete(first, SENT, message_id="m-1")
    worker.complete(second, UNKNOWN, error="the answer was lost")
    assert cli("status", "--database", pg_url, tmp_path=tmp_path).returncode == 4
    settled = cli("resolve", "--database", pg_url, "--contact", C2, "--file", "talk.wav", "--delivered",
                  "--message-id", "m-2", tmp_path=tmp_path)
    assert settled.returncode == 0, settled.stderr
    assert worker.get(key(C2)).state == SENT  # type: ignore[union-attr]
    after = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert after.returncode == 0 and "resolved by hand" in after.stdout


def test_a_stopped_campaign_is_exit_3_with_how_to_resume(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = open_pg()
    seed(worker, C1)
    worker.stop_campaign("spring", "the token was refused (401)")
    stopped = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert stopped.returncode == 3, stopped.stderr
    assert "STOPPED since" in stopped.stdout and "the token was refused (401)" in stopped.stdout
    assert "`audiopipe resume --campaign spring`" in stopped.stdout
    assert "not sent yet" not in stopped.stdout  # a stopped campaign waits for resume, not for a worker

    resumed = cli("resume", "--campaign", "spring", tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_url)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and worker.stopped("spring") is None
    going = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert going.returncode == 5  # left: pending, no longer stopped
    assert "1 send(s) not sent yet: no worker is alive; start one" in going.stdout
    again = cli("resume", "--campaign", "spring", "--database", pg_url, tmp_path=tmp_path)
    assert again.returncode == 0 and "was not stopped" in again.stdout
    nosuch = cli("resume", "--campaign", "autumn", "--database", pg_url, tmp_path=tmp_path)
    assert nosuch.returncode == 2 and "no campaign 'autumn'" in nosuch.stderr and "'spring'" in nosuch.stderr


def test_deferred_rows_out_of_tries_wait_for_a_person(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = open_pg()
    seed(worker, C1)
    worker.acquire()
    for _ in range(5):  # the default tries per send
        (claim,) = worker.claim(campaign="spring")
        worker.complete(claim, DEFERRED, error="server error (500)", status=500)
    text = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert text.returncode == 5
    assert "1 deferred with all 5 tries used: waiting for a person" in text.stdout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")  # the retry tokens, as workers would have used them up
        again = cli("resume", "--campaign", "spring", "--database", pg_url, "--json", tmp_path=tmp_path)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == {"campaign": "spring", "resumed": False, "was_stopped_because": None,
                                            "tokens_added": 1}  # one more try, as a person asked
        assert queued_tokens(conn, "spring") == 1


def test_an_unknown_campaign_is_one_line(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed(open_pg(), C1)
    done = cli("status", "--database", pg_url, "--campaign", "autumn", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no campaign 'autumn'" in done.stderr


def test_a_database_to_migrate_is_one_line_saying_so(pg_empty_url: str, tmp_path: Path) -> None:
    done = cli("status", "--database", pg_empty_url, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "audiopipe db migrate" in done.stderr


@pytest.mark.parametrize("command", [["status"], ["db", "migrate"], ["resume", "--campaign", "spring"],
                                     ["worker", "--until-idle"]])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql://audiopipe:{PASSWORD}@/audiopipe?host={tmp_path}/nowhere&port=5999"
    done = cli(*command, "--database", url, tmp_path=tmp_path, LANCEPILOT_TOKEN="a-token")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "cannot reach the database postgresql://audiopipe@" in done.stderr and "check that PostgreSQL" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_password_in_the_url_never_shows(open_pg, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed(open_pg(), C1)
    url = with_password(pg_url)
    for args in (["status"], ["status", "--json"], ["db", "migrate"], ["db", "migrate", "--json"],
                 ["status", "--campaign", "autumn"]):
        done = cli(*args, "--database", url, tmp_path=tmp_path)
        assert done.returncode in (0, 2, 5), done.stderr
        assert PASSWORD not in done.stdout + done.stderr and quote(PASSWORD) not in done.stdout + done.stderr
        assert "postgresql://postgres@" in done.stdout + done.stderr


def test_a_schema_newer_than_this_audiopipe_is_refused_with_what_to_do(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (component, version, about) VALUES ('audiopipe', '99', 'future')")
    for command in (["status"], ["db", "migrate"]):
        done = cli(*command, "--database", pg_url, tmp_path=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "newer than this audiopipe knows" in done.stderr
        assert "upgrade this one" in done.stderr


def test_no_database_named_is_one_line(tmp_path: Path) -> None:
    done = cli("resume", "--campaign", "spring", tmp_path=tmp_path)
    assert done.returncode == 2 and "AUDIOPIPE_DATABASE_URL" in done.stderr


def test_state_on_the_command_line_wins_over_the_variable(pg_url: str, tmp_path: Path) -> None:
    sqlite = tmp_path / "ledger.sqlite3"
    done = cli("status", "--state", str(sqlite), tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_url)
    assert done.returncode == 2 and f"no ledger at {sqlite}" in done.stderr  # the SQLite ledger was read
    both = cli("status", "--state", str(sqlite), "--database", pg_url, tmp_path=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr
