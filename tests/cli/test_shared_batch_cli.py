"""``audiopipe batch --database``: the planner from the command line, on the session's real PostgreSQL.

--plan-only commits the plan and its jobs and returns 0 (a cron planner), twice is a no-op, and
``status --database`` then shows the campaign waiting for workers; the flags that mean nothing with a
shared database, and --plan-only without one, are one line and exit 2; without --database (and with
``--state`` typed) the batch is the embedded one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import clean_environ, contacts_for, invoke, write_contacts

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
