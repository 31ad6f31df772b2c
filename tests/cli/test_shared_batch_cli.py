"""``audiopipe batch --database`` and ``audiopipe worker``, on the session's real PostgreSQL, real ffmpeg
and the sandbox over real HTTP.

--plan-only commits the plan and its jobs and returns 0 (a cron planner), twice is a no-op, and
``status --database`` then shows the campaign waiting for workers; without it the batch works until
idle and reports from the rows (a rerun sends nothing); ``worker --until-idle`` carries out a plan and
a second one finds nothing; SIGTERM lets a worker record its sends in flight and exit 0. The flags that
mean nothing with a shared database, --plan-only without one, and a worker without a token are one
line and exit 2; with ``--state`` typed the batch is the embedded one."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from helpers import AUDIOPIPE, clean_environ, contacts_for, invoke, write_contacts

from audiopipe.sandbox.app import Faults
from audiopipe.store import open_store

pytestmark = pytest.mark.timeout(60)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"


@pytest.fixture
def campaign_files(tmp_path: Path, audio_dir: Path) -> tuple[Path, Path]:
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.wav", folder / "talk.wav")
    shutil.copy(audio_dir / "tone.mp3", folder / "hello.mp3")
    return folder, write_contacts(tmp_path / "contacts.csv", contacts_for(3))


def cli(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    proc = invoke(args, env=clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                                          AUDIOPIPE_SETTLE="0", **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_plan_only_commits_the_plan_and_returns(campaign_files, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, contacts = campaign_files
    store = tmp_path / "store"
    args = ("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--campaign", "spring", "--plan-only")
    done = cli(*args, "--database", pg_url, "--store", str(store), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "planned campaign 'spring'" in done.stdout and "6 message(s) of 2 recording(s) (6 new)" in done.stdout
    assert "2 recording(s) to prepare" in done.stdout
    assert len([p for p in store.rglob("*") if p.is_file()]) == 2  # each source put once, by content

    status = cli("status", "--campaign", "spring", tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_url)
    assert status.returncode == 0, status.stderr  # no sends yet: nothing is unknown, failed or left as rows
    assert "recordings: 2 pending" in status.stdout
    assert "2 recording(s) to prepare: no worker is alive; start one" in status.stdout

    again = cli(*args, "--json", tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_url, AUDIOPIPE_STORE=str(store))
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["new_targets"] == 0 and summary["targets"] == 6 and summary["campaign"] == "spring"
    assert summary["database"].startswith("postgresql://postgres@")


def test_a_shared_batch_needs_a_store(campaign_files, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, contacts = campaign_files
    done = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--plan-only", "--database", pg_url,
               tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--store DIR" in done.stderr


@pytest.mark.parametrize("flag", ["--dry-run", "--retry-unknown", "--retry-failed", "--new-ledger"])
def test_embedded_only_flags_are_refused_with_a_database(campaign_files, pg_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         flag: str) -> None:
    folder, contacts = campaign_files
    done = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--plan-only", flag,
               "--database", pg_url, "--store", str(tmp_path / "store"), tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"{flag} is for the embedded ledger" in done.stderr


def test_plan_only_needs_a_database(campaign_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, contacts = campaign_files
    done = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--plan-only", tmp_path=tmp_path)
    assert done.returncode == 2 and "give --database URL" in done.stderr


def test_state_typed_keeps_the_embedded_batch(campaign_files, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, contacts = campaign_files
    done = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--dry-run", "--state",
               str(tmp_path / "ledger.sqlite3"), tmp_path=tmp_path, AUDIOPIPE_DATABASE_URL=pg_url)
    assert done.returncode == 0, done.stderr
    assert "dry run, campaign 'default'" in done.stderr  # the embedded batch's own summary


TOKEN = "shared-batch-token"


def api_env(sb, tmp_path: Path, **more: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sb.url, TMPDIR=str(tmp_path), **more)


def test_a_shared_batch_plans_works_until_idle_and_reports(campaign_files, pg_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           make_sandbox) -> None:
    folder, contacts = campaign_files
    sb = make_sandbox()
    report = tmp_path / "report.csv"
    args = ("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--campaign", "spring", "--rate", "0",
            "--database", pg_url, "--store", str(tmp_path / "store"), "--report", str(report))
    done = cli(*args, "--no-preflight", tmp_path=tmp_path, **api_env(sb, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "campaign 'spring': 6 sent, 0 already sent" in done.stderr
    assert len(sb.messages()) == 6  # 3 contacts x 2 recordings, each once
    rows = report.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 7 and all(",sent," in r for r in rows[1:])

    again = cli(*args, "--json", tmp_path=tmp_path, **api_env(sb, tmp_path))  # a rerun sends nothing again
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["already_sent"] == 6 and len(sb.messages()) == 6
    status = cli("status", "--database", pg_url, tmp_path=tmp_path)
    assert status.returncode == 0 and "6 send(s): 6 sent" in status.stdout and "recordings: 2 ready" in status.stdout


def test_workers_carry_out_a_plan(campaign_files, pg_url: str, tmp_path: Path, make_sandbox,  # type: ignore[no-untyped-def]
                                  store_spec: str) -> None:
    """On a folder store and on S3 (moto): the worker is given no store, it opens the one the plan names."""
    folder, contacts = campaign_files
    sb = make_sandbox()
    planned = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--plan-only", "--rate", "0",
                  "--database", pg_url, "--store", store_spec, tmp_path=tmp_path)
    assert planned.returncode == 0, planned.stderr
    worker_home = tmp_path / "worker-home"  # another machine's home: its own (empty) cache
    worked = cli("worker", "--until-idle", "--concurrency", "2", tmp_path=worker_home,
                 **api_env(sb, tmp_path, AUDIOPIPE_DATABASE_URL=pg_url))
    assert worked.returncode == 0, worked.stderr
    assert "stopped (no work left)" in worked.stderr and "6 sent" in worked.stderr
    assert len(sb.messages()) == 6
    with psycopg.connect(pg_url, autocommit=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT stored FROM sends")}
        sources = {r[0] for r in conn.execute("SELECT source_sha256 FROM prepares")}
    assert len(stored) == 2 and all(open_store(store_spec).exists(key) for key in stored)
    if store_spec.startswith("s3://"):  # the worker fetched the two sources from S3 into its own cache
        fetched = {p.name[:64] for p in (worker_home / ".cache" / "audiopipe" / "objects").rglob("*") if p.is_file()}
        assert len(sources) == 2 and sources <= fetched
    idle = cli("worker", "--until-idle", "--json", "--database", pg_url, tmp_path=tmp_path, **api_env(sb, tmp_path))
    assert idle.returncode == 0 and json.loads(idle.stdout)["stopped"] == "idle"
    assert json.loads(idle.stdout)["ends"].get("sent", 0) == 0  # nothing left: nothing sent twice


def test_a_worker_without_a_token_is_one_line(pg_url: str, tmp_path: Path) -> None:
    done = cli("worker", "--until-idle", "--database", pg_url, tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "LANCEPILOT_TOKEN" in done.stderr


def test_sigterm_lets_a_worker_record_its_sends_in_flight_and_exit_0(campaign_files, pg_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     make_sandbox) -> None:
    folder, contacts = campaign_files
    sb = make_sandbox(faults=Faults(latency=1.5))
    assert cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--plan-only", "--rate", "0",
               "--database", pg_url, "--store", str(tmp_path / "store"), tmp_path=tmp_path).returncode == 0
    env = clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), **api_env(sb, tmp_path))
    worker = subprocess.Popen([AUDIOPIPE, "worker", "--database", pg_url, "--concurrency", "2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while not conn.execute("SELECT count(*) FROM sends WHERE state = 'sending'").fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline and worker.poll() is None, worker.stderr
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
            assert "stopped (asked to stop)" in err and "Traceback" not in err
            states = dict(conn.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall())
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "sending" not in states and states.get("sent", 0) >= 1  # the ones in flight were recorded
    assert states.get("sent", 0) == len(sb.messages())
