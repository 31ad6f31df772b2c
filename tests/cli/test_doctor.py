"""`audiopipe doctor` (alias `check`): one line per check, ok / warn / fail, --json, and an exit status
that says whether a run would work (0), works with something to look at (1) or would be refused (2).
The CLI runs in process (CliRunner); the online check goes to the in-process sandbox over real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_environ, invoke

from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.runner import audio_encoders

pytestmark = pytest.mark.timeout(60)

TOKEN = "doctor-test-token"
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
CONTACT = "5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51"
NAMES = ["ffmpeg", "ffprobe", "format ogg", "other formats", "libmagic", "ledger", "cache", "base URL", "token"]


@pytest.fixture
def doctor(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, token: str | None = TOKEN, base_url: str | None = "http://127.0.0.1:9/api/v3",
            env: dict[str, str] | None = None, command: str = "doctor") -> subprocess.CompletedProcess[str]:
        e = clean_environ(HOME=str(home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"),
                          AUDIOPIPE_STATE=str(tmp_path / "state" / "ledger.sqlite3"))
        if token is not None:
            e["LANCEPILOT_TOKEN"] = token
        if base_url is not None:
            e["LANCEPILOT_BASE_URL"] = base_url
        e.update(env or {})
        proc = invoke([command, *args], env=e)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert TOKEN not in proc.stdout + proc.stderr, "the token was shown"
        return proc

    return run


def lines(proc: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """{check name: (status, detail)} from the text output: columns apart by two spaces or more."""
    out: dict[str, tuple[str, str]] = {}
    for line in proc.stdout.splitlines()[:-1]:  # the last line is the verdict
        status, name, detail = re.split(r"\s{2,}", line, maxsplit=2)
        out[name] = (status, detail)
    return out


def test_a_good_set_up_is_all_ok(doctor: Any) -> None:
    proc = doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = lines(proc)
    assert list(checks) == NAMES and all(s == "ok" for s, _ in checks.values())
    assert proc.stdout.splitlines()[-1] == "all ok"
    assert "version" in checks["ffmpeg"][1] and "libopus" in checks["format ogg"][1]
    assert "not made yet" in checks["ledger"][1] and "LANCEPILOT_BASE_URL" in checks["base URL"][1]
    assert "from LANCEPILOT_TOKEN" in checks["token"][1]


def test_json_and_the_check_alias(doctor: Any) -> None:
    proc = doctor("--json", command="check")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["status"] == "ok" and [c["name"] for c in data["checks"]] == NAMES
    assert set(data["checks"][0]) == {"name", "status", "detail"}
    listed = invoke(["--help"]).stdout
    assert "doctor" in listed and " check " not in listed  # a hidden alias


@pytest.mark.parametrize("case, name, words", [
    ("no-token", "token", "no API token"),
    ("no-ffmpeg", "ffmpeg", "AUDIOPIPE_FFMPEG"),
    ("no-ffprobe", "ffprobe", "AUDIOPIPE_FFPROBE"),
    ("bad-base-url", "base URL", "user-info"),
    ("http-elsewhere", "base URL", "plain http"),
    ("ledger-not-ours", "ledger", "not an audiopipe ledger"),
])
def test_what_a_run_would_refuse_fails_with_exit_2(case: str, name: str, words: str, doctor: Any,
                                                   tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {}
    if case == "no-token":
        kwargs["token"] = None
    elif case == "no-ffmpeg":
        kwargs["env"] = {"AUDIOPIPE_FFMPEG": str(tmp_path / "none")}
    elif case == "no-ffprobe":
        kwargs["env"] = {"AUDIOPIPE_FFPROBE": str(tmp_path / "none")}
    elif case == "bad-base-url":
        kwargs["base_url"] = "https://me@lancepilot.com/api/v3"
    elif case == "http-elsewhere":
        kwargs["base_url"] = "http://lancepilot.com/api/v3"
    elif case == "ledger-not-ours":
        import sqlite3

        (tmp_path / "state").mkdir()
        with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as db:
            db.execute("CREATE TABLE photos (id INTEGER)")
    proc = doctor(**kwargs)
    assert proc.returncode == 2, proc.stdout
    status, detail = lines(proc)[name]
    assert status == "fail" and words in detail, detail
    assert proc.stdout.splitlines()[-1].startswith("1 failure(s)")


@pytest.mark.skipif("libopencore_amrnb" in audio_encoders(), reason="this ffmpeg can encode AMR")
def test_the_chosen_formats_encoder_must_be_there(doctor: Any) -> None:
    ok = lines(doctor())
    assert ok["other formats"][0] == "ok" and "not amr (no libopencore_amrnb)" in ok["other formats"][1]
    proc = doctor("--format", "amr")
    assert proc.returncode == 2
    assert lines(proc)["format amr"][0] == "fail"


def test_warnings_exit_1(doctor: Any, tmp_path: Path) -> None:
    proc = doctor(token=f"Bearer {TOKEN}")
    assert proc.returncode == 1, proc.stdout
    assert lines(proc)["token"][0] == "warn" and "begins with 'Bearer '" in lines(proc)["token"][1]

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = doctor(env={"AUDIOPIPE_CACHE_DIR": str(blocker / "cache")})  # a file where a folder must go
    assert proc.returncode == 1
    status, detail = lines(proc)["cache"]
    assert status == "warn" and "go on without a cache" in detail


def test_a_ledger_held_by_a_run_is_a_warning(doctor: Any, tmp_path: Path) -> None:
    state = tmp_path / "state" / "ledger.sqlite3"
    with SqliteLedger(state) as ledger:
        ledger.acquire()  # as a batch running now holds it
        proc = doctor()
        ledger.release()
    assert proc.returncode == 1
    status, detail = lines(proc)["ledger"]
    assert status == "warn" and f"pid {os.getpid()}" in detail and "exits 6" in detail
    assert lines(doctor())["ledger"][0] == "ok"


def test_the_online_check_asks_the_server_and_creates_nothing(doctor: Any, make_sandbox: Any,
                                                              tmp_path: Path) -> None:
    sb = make_sandbox()
    good = doctor("--online", base_url=sb.url)
    assert good.returncode == 0, good.stdout
    status, detail = lines(good)["token check"]
    assert status == "ok" and "accepted" in detail and " ms" in detail

    bad = doctor("--online", "--json", base_url=sb.url, token="not-the-token")
    assert bad.returncode == 2
    [check] = [c for c in json.loads(bad.stdout)["checks"] if c["name"] == "token check"]
    assert check["status"] == "fail" and "401" in check["detail"]

    strict = tmp_path / "strict.csv"
    strict.write_text(f"contact,workspace\n{CONTACT},{WS}\n")
    sb2 = make_sandbox(contacts_csv=strict)
    real = doctor("-w", WS, "-c", CONTACT, base_url=sb2.url)  # a contact given: online without the flag
    assert real.returncode == 0 and lines(real)["token check"][0] == "ok"
    other = doctor("-w", WS, "-c", "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c52", base_url=sb2.url)
    assert other.returncode == 1 and "not found (404)" in lines(other)["token check"][1]
    assert sb.messages() == [] and sb2.messages() == []
    assert sb.request_count == 2 and sb2.request_count == 2


def test_the_online_check_says_when_the_server_cannot_be_reached(doctor: Any) -> None:
    proc = doctor("--online")  # port 9: nothing listens there
    assert proc.returncode == 2
    status, detail = lines(proc)["token check"]
    assert status == "fail" and "connection refused" in detail


def test_doctor_writes_nothing(doctor: Any, tmp_path: Path) -> None:
    doctor("--online")
    assert not (tmp_path / "state").exists() and not (tmp_path / "cache").exists()
    assert not any((tmp_path / "home").iterdir())
    assert shutil.which("ffmpeg")  # the checks above ran against a real one
