"""`audiopipe batch` and `audiopipe status` as a user (or cron) runs them: in process (CliRunner), real
HTTP to the sandbox, real ffmpeg, a real ledger. Exit codes, the report CSV, --json, and no tracebacks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import clean_environ, contacts_for, invoke, write_csv

from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.sandbox.app import Faults, Sandbox

pytestmark = pytest.mark.timeout(120)

TOKEN = "cli-test-token"
SANDBOX_RESTARTS = True
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
REPORT_BASE = ["contact", "workspace", "file", "part", "status", "message_id", "error"]


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "recordings"
    f.mkdir()
    for name in ("tone.wav", "voice.opus"):
        shutil.copy(audio_dir / name, f / name)
    return f


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def audiopipe(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, sandbox: Sandbox | None = None, token: str = TOKEN,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        e = clean_environ(HOME=str(home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path),
                          LANCEPILOT_TOKEN=token, AUDIOPIPE_SETTLE="0")
        if sandbox is not None:
            e["LANCEPILOT_BASE_URL"] = sandbox.url
        e.update(env or {})
        proc = invoke(args, env=e)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert token not in proc.stdout + proc.stderr or token == "", "the token leaked"
        return proc

    yield run
    assert not any(home.iterdir()), f"something was written to HOME: {list(home.rglob('*'))}"


def read_report(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def batch_args(folder: Path, contacts: Path, state: Path, *extra: str) -> list[str]:
    return ["batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state", str(state),
            "--rate", "0", "--quiet", *extra]


# --- exit codes ------------------------------------------------------------------------------------

def test_all_sent_exits_0_json_summary_and_report(tmp_path, fixtures_dir, audio_copy, make_sandbox, state,
                                                  audiopipe):
    sb = make_sandbox()
    report = tmp_path / "out" / "report.csv"
    args = batch_args(audio_copy, fixtures_dir / "contacts" / "per_row.csv", state, "--report", str(report), "--json")
    proc = audiopipe(*args, sandbox=sb)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["counts"]["sent"] == 5 and summary["unique_files"] == 3
    assert summary["campaign"] == "default" and summary["stopped"] is None and summary["problems"] == []
    assert summary["report"] == str(report)
    header, rows = read_report(report)
    assert [h for h in header if h in REPORT_BASE] == REPORT_BASE  # in this order, then the CSV's own
    assert header[-1] == "note"
    ids = {m["id"] for m in sb.messages()}
    assert len(rows) == 5 and all(r["status"] == "sent" and r["message_id"] in ids for r in rows)
    notes = [r["note"] for r in rows]
    assert "'=1+1 looks like a formula" in notes          # a formula cell is made inert
    assert "reminder, with a comma" in notes
    assert {r["file"] for r in rows} == {"tone.wav", "tone.mp3", "voice.opus"}
    assert all(r["part"] == "1" and r["workspace"] == WS for r in rows)

    again = audiopipe(*args, sandbox=sb)
    assert again.returncode == 0
    assert json.loads(again.stdout)["counts"]["already_sent"] == 5
    assert len(sb.messages()) == 5
    assert {r["status"] for r in read_report(report)[1]} == {"already_sent"}


def test_human_summary_on_stderr(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox()
    csv_path = write_csv(tmp_path / "c.csv", "contact", contacts_for(3))
    proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert "campaign 'default': 6 sent, 0 already sent, 0 failed, 0 unknown, 0 invalid" in proc.stderr
    proc = audiopipe(*batch_args(folder, csv_path, state, "--campaign", "again"), sandbox=sb)
    assert proc.returncode == 0 and "6 sent" in proc.stderr and len(sb.messages()) == 12


def test_invalid_rows_exit_1_and_are_listed_with_lines(tmp_path, fixtures_dir, audio_copy, make_sandbox, state,
                                                      audiopipe):
    sb = make_sandbox()
    report = tmp_path / "r.csv"
    proc = audiopipe(*batch_args(audio_copy, fixtures_dir / "contacts" / "bad_rows.csv", state,
                                 "--report", str(report)), sandbox=sb)
    assert proc.returncode == 1, proc.stderr
    for line in (2, 3, 4, 5, 8):
        assert f"invalid: line {line}: " in proc.stderr
    _, rows = read_report(report)
    assert sorted((r["line"], r["status"]) for r in rows) == [
        ("2", "invalid"), ("3", "invalid"), ("4", "invalid"), ("5", "invalid"), ("6", "sent"), ("7", "sent"),
        ("8", "invalid")]
    assert len(sb.messages()) == 2


def test_refused_exits_1_and_status_lists_it(tmp_path, folder, make_sandbox, state, audiopipe):
    people = contacts_for(3)
    sb = make_sandbox(contacts_csv=write_csv(tmp_path / "known.csv", "contact", people[:2]))
    csv_path = write_csv(tmp_path / "c.csv", "contact", people)
    proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
    assert proc.returncode == 1, proc.stderr
    # one contact missing for both files: one line with the count, not one per file
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "404" in failed[0], proc.stderr
    assert failed[0].startswith(f"failed: 2 rows (line 4; contact {people[2]}; 2 files: tone.wav, voice.opus): ")
    st = audiopipe("status", "--state", str(state))
    assert st.returncode == 1
    assert "sent: 4" in st.stdout and "failed: 2" in st.stdout
    listed = [line for line in st.stdout.splitlines() if line.startswith("failed:")]
    assert len(listed) == 1 and f"contact {people[2]}" in listed[0] and "2 rows" in listed[0], st.stdout
    js = audiopipe("status", "--state", str(state), "--json")
    data = json.loads(js.stdout)
    assert js.returncode == 1 and data["counts"]["failed"] == 2
    assert {(p["contact"], p["state"], p["status"]) for p in data["problems"]} == {(people[2], "failed", 404)}
    # rerun: refusals are not tried again, so the exit code stays 1
    n = sb.request_count
    assert audiopipe(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 1
    assert sb.request_count == n + 1  # the token check only (it cannot create a message)


@pytest.mark.parametrize("case", ["bad-workspace", "missing-csv", "missing-folder", "no-contact-column",
                                  "no-token", "negative-rate", "not-text", "no-audio"])
def test_usage_errors_exit_2_without_traceback(tmp_path, folder, make_sandbox, state, audiopipe, case):
    sb = make_sandbox()
    good = write_csv(tmp_path / "c.csv", "contact", contacts_for(1))
    args = batch_args(folder, good, state)
    token = TOKEN
    if case == "bad-workspace":
        args[args.index("-w") + 1] = "not-a-uuid"
    elif case == "missing-csv":
        args[args.index("--contacts") + 1] = str(tmp_path / "absent.csv")
    elif case == "missing-folder":
        args[1] = str(tmp_path / "absent")
    elif case == "no-contact-column":
        args[args.index("--contacts") + 1] = str(write_csv(tmp_path / "x.csv", "phone", ["123"]))
    elif case == "no-token":
        token = ""
    elif case == "negative-rate":
        args[args.index("--rate") + 1] = "-1"
    elif case == "not-text":  # a Latin-1 CSV is read now (tests/campaign/test_encodings.py); a workbook is not
        bad = tmp_path / "book.csv"
        bad.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4)
        args[args.index("--contacts") + 1] = str(bad)
    elif case == "no-audio":
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "notes.txt").write_text("not audio")
        args[1] = str(empty)
    proc = audiopipe(*args, sandbox=sb, token=token)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip(), "a usage error says what is wrong"
    assert len(proc.stderr.strip().splitlines()) <= 4
    if case == "not-text":
        assert "book.csv is a zip file" in proc.stderr
    assert sb.request_count == 0


def test_wrong_token_exits_3(tmp_path, folder, make_sandbox, state, audiopipe):
    people = contacts_for(8)
    sb = make_sandbox(faults=Faults(latency=0.05))
    csv_path = write_csv(tmp_path / "c.csv", "contact", people)
    # the 401 met while sending (tests/cli/test_early.py has the one the token check meets first)
    proc = audiopipe(*batch_args(folder, csv_path, state, "--concurrency", "2", "--json", "--no-preflight"),
                     sandbox=sb, token="not-the-token")
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert "401" in summary["stopped"] and summary["counts"]["not_sent"] == 16
    assert sb.request_count <= 2 and sb.messages() == []
    proc = audiopipe(*batch_args(folder, csv_path, state, "--concurrency", "2"), sandbox=sb)
    assert proc.returncode == 0 and len(sb.messages()) == 16


def test_unknown_exits_4_and_status_says_so(tmp_path, folder, make_sandbox, state, audiopipe):
    people = contacts_for(2)
    csv_path = write_csv(tmp_path / "c.csv", "contact", people)
    sb = make_sandbox(faults=Faults(rate_500=1.0))
    proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
    assert proc.returncode == 4, proc.stderr
    unknown = [line for line in proc.stderr.splitlines() if line.startswith("unknown:")]
    assert len(unknown) == 1 and unknown[0].startswith("unknown: 4 rows (2 lines: 2, 3; 2 contacts: "), proc.stderr
    st = audiopipe("status", "--state", str(state))
    assert st.returncode == 4 and "unknown: 4" in st.stdout
    assert [line[:23] for line in st.stdout.splitlines() if line.startswith("unknown:")] == ["unknown: 4 rows (campai"]
    sb = make_sandbox()
    proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
    assert proc.returncode == 4 and sb.request_count == 1  # the token check; no upload
    proc = audiopipe(*batch_args(folder, csv_path, state, "--retry-unknown"), sandbox=sb)
    assert proc.returncode == 0 and len(sb.messages()) == 4
    st = audiopipe("status", "--state", str(state), "--campaign", "default")
    assert st.returncode == 0 and "sent: 4" in st.stdout and "unknown: 0" in st.stdout


def test_rate_limited_until_attempts_run_out_exits_5(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox(faults=Faults(rate_429=1.0, retry_after=0))
    (folder / "tone.wav").unlink()
    csv_path = write_csv(tmp_path / "c.csv", "contact", contacts_for(2))
    proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
    assert proc.returncode == 5, proc.stderr
    assert "not_sent: 2 rows (2 lines: 2, 3; " in proc.stderr and "429" in proc.stderr
    sb = make_sandbox()
    assert audiopipe(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 0
    assert len(sb.messages()) == 2


def test_another_run_holding_the_ledger_exits_6(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox()
    csv_path = write_csv(tmp_path / "c.csv", "contact", contacts_for(1))
    holder = SqliteLedger(state)
    holder.acquire()
    try:
        proc = audiopipe(*batch_args(folder, csv_path, state), sandbox=sb)
        assert proc.returncode == 6, proc.stderr
        assert "another audiopipe run holds the ledger" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
        assert sb.request_count == 0
    finally:
        holder.close()
    assert audiopipe(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 0


def test_dry_run_sends_nothing(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox()
    report = tmp_path / "dry.csv"
    csv_path = write_csv(tmp_path / "c.csv", "contact", contacts_for(2))
    proc = audiopipe(*batch_args(folder, csv_path, state, "--dry-run", "--report", str(report)), sandbox=sb)
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stderr and "would send 4" in proc.stderr
    assert sb.request_count == 0
    _, rows = read_report(report)
    assert {r["status"] for r in rows} == {"would_send"}


def test_status_without_a_ledger_is_a_usage_error(tmp_path, audiopipe):
    proc = audiopipe("status", "--state", str(tmp_path / "none.sqlite3"))
    assert proc.returncode == 2 and "no ledger" in proc.stderr


def test_status_all_sent_exits_0(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox()
    audiopipe(*batch_args(folder, write_csv(tmp_path / "c.csv", "contact", contacts_for(1)), state), sandbox=sb)
    st = audiopipe("status", "--state", str(state))
    assert st.returncode == 0 and "sent: 2" in st.stdout
    assert not any(line.startswith(("failed:", "unknown:")) for line in st.stdout.splitlines())


def test_report_keeps_real_columns_when_the_csv_has_same_named_ones(tmp_path, folder, make_sandbox, state,
                                                                   audiopipe):
    """A CRM export often has its own 'status' or 'error' column: it must not replace the batch's."""
    sb = make_sandbox()
    people = contacts_for(2)
    csv_path = write_csv(tmp_path / "c.csv", "contact,status,error,city",
                         [f"{c},active,none,-Oslo" for c in people])
    report = tmp_path / "r.csv"
    proc = audiopipe(*batch_args(folder, csv_path, state, "--report", str(report), "--json"), sandbox=sb)
    assert proc.returncode == 0, proc.stderr
    _, rows = read_report(report)
    assert {r["status"] for r in rows} == {"sent"} and {r["error"] for r in rows} == {""}
    assert {r["city"] for r in rows} == {"'-Oslo"}


def test_unusable_state_or_report_path_is_one_line_not_a_traceback(tmp_path, folder, make_sandbox, state,
                                                                   audiopipe):
    sb = make_sandbox()
    (tmp_path / "afile").write_text("x")
    csv_path = write_csv(tmp_path / "c.csv", "contact", contacts_for(1))
    proc = audiopipe(*batch_args(folder, csv_path, tmp_path / "afile" / "ledger.sqlite3"), sandbox=sb)
    assert proc.returncode == 2 and "cannot open the ledger" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and sb.request_count == 0
    st = audiopipe("status", "--state", str(tmp_path / "afile" / "ledger.sqlite3"))
    assert st.returncode == 2 and "no ledger" in st.stderr
    proc = audiopipe(*batch_args(folder, csv_path, state, "--report", str(tmp_path / "afile" / "r.csv")),
                     sandbox=sb)
    assert proc.returncode == 2 and "cannot write the report" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sb.request_count == 0  # found out before anything was sent


def test_report_cells_from_invalid_rows_are_formula_safe(tmp_path, folder, make_sandbox, state, audiopipe):
    sb = make_sandbox()
    good = contacts_for(1)[0]
    csv_path = write_csv(tmp_path / "c.csv", "contact,file,note",
                         ['=HYPERLINK("http://x"),voice.opus,ok', f"{good},+evil.opus,@sum", f"{good},voice.opus,-5"])
    report = tmp_path / "r.csv"
    proc = audiopipe(*batch_args(folder, csv_path, state, "--report", str(report)), sandbox=sb)
    assert proc.returncode == 1, proc.stderr
    _, rows = read_report(report)
    by_line = {r["line"]: r for r in rows}
    assert by_line["2"]["contact"] == "'=HYPERLINK(\"http://x\")" and by_line["2"]["status"] == "invalid"
    assert by_line["3"]["file"] == "'+evil.opus" and by_line["3"]["note"] == "'@sum"
    assert by_line["4"]["note"] == "'-5" and by_line["4"]["status"] == "sent"
    for r in rows:
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in r.values()), r
