"""What is left, known: a batch records its whole plan before the first send, `audiopipe status`
counts what was never attempted and what is blocked, and `audiopipe resolve` settles unknown sends.

As a user runs it: `audiopipe` in process, and in subprocesses for real signals, real HTTP to the sandbox (which holds
what a customer would have received), real ffmpeg splits, a real SQLite ledger."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import AUDIOPIPE, clean_environ, contacts_for, invoke, write_contacts

from audiopipe.campaign.batch import BatchSettings, run_batch
from audiopipe.campaign.ledger import DEFERRED, PENDING, SENT, UNKNOWN, SqliteLedger
from audiopipe.cli import cli as main_cli
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.sandbox.app import Faults, Sandbox
from audiopipe.send.client import LancepilotClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "plan-test-token"
SANDBOX_RESTARTS = True  # a "healthy again" sandbox keeps what the faulty one stored
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
SPLIT = ["--max-size", "12000", "--on-overflow", "split"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "recordings"
    f.mkdir()
    shutil.copy(audio_dir / "voice.opus", f / "voice.opus")  # sent as it is: quick
    return f


@pytest.fixture
def long_folder(tmp_path: Path) -> Path:
    """One 30-second recording that --max-size 12000 splits into several parts."""
    f = tmp_path / "long"
    f.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=30", "-ac", "1", str(f / "talk.wav")], check=True, timeout=60)
    return f


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    e = clean_environ(HOME=str(home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path),
                      LANCEPILOT_TOKEN=TOKEN, AUDIOPIPE_SETTLE="0")
    yield e
    assert not any(home.iterdir()), f"something was written to HOME: {list(home.rglob('*'))}"


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    def run(*args: str, sandbox: Sandbox | None = None) -> subprocess.CompletedProcess:
        e = dict(env, **({"LANCEPILOT_BASE_URL": sandbox.url} if sandbox else {}))
        proc = invoke(args, env=e)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc
    return run


def batch_args(folder: Path, contacts: Path, state: Path, *extra: str) -> list[str]:
    # --no-preflight: these tests count the sends; the token check has tests of its own
    return ["batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state", str(state), "--rate", "0",
            "--quiet", "--no-preflight", *extra]


def status(cli: Callable[..., subprocess.CompletedProcess], state: Path) -> tuple[int, str, dict[str, Any]]:
    text = cli("status", "--state", str(state))
    js = cli("status", "--state", str(state), "--json")
    assert text.returncode == js.returncode, (text.stdout, js.stdout)
    return text.returncode, text.stdout, json.loads(js.stdout)


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def one_line_refusal(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiopipe: error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def ledger_rows(state: Path) -> list[tuple]:
    db = sqlite3.connect(str(state))
    try:
        return db.execute("SELECT * FROM sends ORDER BY 1, 2, 3, 4, 5").fetchall()
    finally:
        db.close()


# --- the ledger knows the whole plan -------------------------------------------------------------

@pytest.mark.slow
def test_a_batch_stopped_by_sigterm_leaves_what_is_left_pending_and_status_exits_5(
        tmp_path, folder, state, make_sandbox, env, cli):
    contacts = contacts_for(20)
    csv_path = write_contacts(tmp_path / "c.csv", contacts)
    sb = make_sandbox(faults=Faults(latency=0.1))
    e = dict(env, LANCEPILOT_BASE_URL=sb.url)
    proc = subprocess.Popen([AUDIOPIPE, *batch_args(folder, csv_path, state, "--concurrency", "1")], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sb.request_count < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err

    code, text, data = status(cli, state)
    sent = len(sb.messages())
    assert 5 <= sent < 20
    assert code == 5, text  # before: "sent: 5", exit 0
    assert data["counts"]["sent"] == sent and data["counts"]["pending"] == 20 - sent, data["counts"]
    assert data["campaigns"] == {"default": dict(data["counts"], resolved=0)}
    assert f"sent: {sent}  pending: {20 - sent}" in text
    assert f"campaign 'default': 20 send(s): {sent} sent, {20 - sent} pending" in text
    assert "next:" in text and "run the same `audiopipe batch` again" in text
    assert f"{20 - sent} pending from the batch of {folder.resolve()} with {csv_path.resolve()}" in text
    (source,) = data["pending_from"]
    assert source["pending"] == 20 - sent and source["folder"] == str(folder.resolve())

    done = cli(*batch_args(folder, csv_path, state), sandbox=sb)
    assert done.returncode == 0, done.stderr
    assert Counter(m["contact_id"] for m in sb.messages()) == Counter(dict.fromkeys(contacts, 1))
    code, text, data = status(cli, state)
    assert code == 0 and data["counts"]["pending"] == 0 and data["counts"]["sent"] == 20


def _settings(tmp_path: Path, folder: Path, contacts: Path, **kw: Any) -> BatchSettings:
    prep = kw.pop("prepare", {})
    return BatchSettings(folder=folder, contacts=contacts, workspace=WS, rate=0, settle=0,
                         prepare=PrepareSettings(cache_dir=tmp_path / "cache", **prep), **kw)


class StopAfter:
    """A progress callback that stops the run (as Ctrl-C would) once ``n`` messages are done."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "send" and done >= self.n:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_run_stopped_after_n_sends_leaves_the_rest_pending_and_a_rerun_sends_them(
        tmp_path, audio_dir, folder, state, make_sandbox, cli):
    shutil.copy(audio_dir / "tone.mp3", folder / "tone.mp3")
    contacts = contacts_for(6)
    csv_path = write_contacts(tmp_path / "c.csv", contacts)
    sb = make_sandbox()
    with LancepilotClient(token=TOKEN, base_url=sb.url) as client, SqliteLedger(state) as ledger:
        with pytest.raises(KeyboardInterrupt):
            run_batch(_settings(tmp_path, folder, csv_path, concurrency=1), sender=client, ledger=ledger,
                      progress=StopAfter(3))
        # the pool's next unit may have started before the stop: what went out is recorded sent
        counts = ledger.counts()
        assert counts[SENT] == len(sb.messages()) >= 3
        assert counts[PENDING] == 12 - counts[SENT] and counts[UNKNOWN] == 0
        assert {r.attempts for r in ledger.rows(states=(PENDING,))} == {0}

    # the recording taken out of the folder is no longer "left": the next plan drops its pending rows
    sent_voice = {m["contact_id"] for m in sb.messages() if m["file_name"].startswith("voice")}
    (folder / "voice.opus").unlink()
    code, _, data = status(cli, state)
    assert code == 5 and data["counts"]["pending"] == 12 - len(sb.messages())
    with LancepilotClient(token=TOKEN, base_url=sb.url) as client, SqliteLedger(state) as ledger:
        again = run_batch(_settings(tmp_path, folder, csv_path), sender=client, ledger=ledger)
    sent_tone_before = counts[SENT] - len(sent_voice)
    assert Counter(r.status for r in again.rows) == {"sent": 6 - sent_tone_before, "already_sent": sent_tone_before}
    assert Counter(m["contact_id"] for m in sb.messages() if m["file_name"].startswith("tone")) == \
        Counter(dict.fromkeys(contacts, 1))
    code, text, data = status(cli, state)
    assert code == 0, text
    assert data["counts"]["pending"] == 0 and data["counts"]["sent"] == 6 + len(sent_voice)


def test_a_dry_run_records_nothing(tmp_path, folder, state, make_sandbox, cli):
    csv_path = write_contacts(tmp_path / "c.csv", contacts_for(2))
    sb = make_sandbox()
    assert cli(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 0
    more = write_contacts(tmp_path / "more.csv", contacts_for(4))
    before = ledger_rows(state)
    with SqliteLedger(state, create=False) as led:
        records = led.records()
    dry = cli(*batch_args(folder, more, state, "--dry-run"), sandbox=sb)
    assert dry.returncode == 0 and "would send 2" in dry.stderr, dry.stderr
    assert ledger_rows(state) == before
    with SqliteLedger(state, create=False) as led:
        assert led.records() == records
    assert sb.request_count == 2


@pytest.mark.slow
def test_status_lists_each_campaign_with_its_counts(tmp_path, folder, state, make_sandbox, cli):
    contacts = contacts_for(3)
    sb = make_sandbox(contacts_csv=write_contacts(tmp_path / "known.csv", contacts[:2]))
    csv_path = write_contacts(tmp_path / "c.csv", contacts)
    assert cli(*batch_args(folder, csv_path, state, "--campaign", "spring"), sandbox=sb).returncode == 1
    assert cli(*batch_args(folder, csv_path, state, "--campaign", "autumn"), sandbox=sb).returncode == 1
    code, text, data = status(cli, state)
    assert code == 1
    assert set(data["campaigns"]) == {"spring", "autumn"}
    assert all(c["sent"] == 2 and c["failed"] == 1 for c in data["campaigns"].values())
    assert "campaign 'spring': 3 send(s): 2 sent, 1 failed" in text
    assert "campaign 'autumn': 3 send(s): 2 sent, 1 failed" in text
    only = cli("status", "--state", str(state), "--campaign", "spring", "--json")
    assert list(json.loads(only.stdout)["campaigns"]) == ["spring"]
    typo = cli("status", "--state", str(state), "--campaign", "sprnig")
    one_line_refusal(typo, "no sends in campaign 'sprnig'", "'autumn', 'spring'")


# --- parts behind an unknown part are blocked ----------------------------------------------------

def _parts_of(sb: Sandbox, contact: str) -> list[str]:
    return [m["file_name"] for m in sb.messages() if m["contact_id"] == contact]


@pytest.mark.slow
def test_parts_behind_an_unknown_part_are_blocked_and_resolving_it_delivered_frees_them(
        tmp_path, long_folder, state, make_sandbox, cli):
    contact, other = contacts_for(2)
    csv_path = write_contacts(tmp_path / "c.csv", [contact, other])
    report = tmp_path / "r.csv"
    sb = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="502"))  # stored, then the answer is lost
    first = cli(*batch_args(long_folder, csv_path, state, *SPLIT, "--report", str(report)), sandbox=sb)
    assert first.returncode == 4, first.stderr
    rows = [r for r in read_report(report) if r["contact"] == contact]
    n = int(rows[0]["parts"])
    assert n >= 2 and [r["status"] for r in rows] == ["unknown"] + ["blocked"] * (n - 1)
    assert all("blocked by part 1, whose outcome is unknown" in r["error"] and "audiopipe resolve" in r["error"]
               and f"--contact {contact}" in r["error"] for r in rows[1:])
    # the parts behind part 1 are one grouped line for this contact (same reason, same way out)
    blocked_lines = [line for line in first.stderr.splitlines() if line.startswith("blocked:") and contact in line]
    assert "not_sent" not in first.stderr and len(blocked_lines) == 1, first.stderr
    assert f"blocked: {n - 1} rows" in blocked_lines[0] and "line 2" in blocked_lines[0], blocked_lines[0]
    assert f"{2 * (n - 1)} blocked" in first.stderr
    assert _parts_of(sb, contact) == [f"talk.part1of{n}.ogg"]

    code, text, data = status(cli, state)
    assert code == 4
    assert data["counts"]["blocked"] == 2 * (n - 1) and data["counts"]["pending"] == 0
    assert data["counts"]["unknown"] == 2
    parts = "part 2" if n == 2 else f"parts 2-{n}"
    assert f"blocked: [default] {contact} talk.wav {parts} of {n}: waiting behind part 1, whose outcome is " \
           "unknown (resolve it)" in text
    assert {(b["contact"], b["part"], b["blocked_by_part"], b["blocked_by_state"]) for b in data["blocked"]} == \
        {(c, p, 1, "unknown") for c in (contact, other) for p in range(2, n + 1)}
    # a rerun on a healthy server still sends nothing for them, and says why
    sb = make_sandbox()
    again = cli(*batch_args(long_folder, csv_path, state, *SPLIT, "--report", str(report)), sandbox=sb)
    assert again.returncode == 4 and sb.request_count == 0
    assert [r["status"] for r in read_report(report) if r["contact"] == contact] == ["unknown"] + ["blocked"] * (n - 1)

    # the dashboard shows part 1 arrived: say so, with its id
    (stored,) = [m for m in sb.messages() if m["contact_id"] == contact]
    done = cli("resolve", "--state", str(state), "--contact", contact, "--file", "talk.wav", "--part", "1",
               "--delivered", "--message-id", stored["id"], "--note", "seen on the dashboard")
    assert done.returncode == 0, done.stderr
    assert f"delivered (message id {stored['id']})" in done.stdout
    assert f"the next batch skips it and sends the {n - 1} part(s) after it" in done.stdout
    code, text, data = status(cli, state)
    assert code == 4  # the other contact's part 1 is still unknown
    assert data["counts"]["pending"] == n - 1 and data["counts"]["blocked"] == n - 1
    assert "resolved by hand: [default] " + contact in text and "seen on the dashboard" in text
    (res,) = data["resolved"]
    assert res["message_id"] == stored["id"] and res["resolved"]["outcome"] == "delivered"
    assert res["resolved"]["by"]

    final = cli(*batch_args(long_folder, csv_path, state, *SPLIT, "--report", str(report)), sandbox=sb)
    assert final.returncode == 4  # still the other contact
    assert _parts_of(sb, contact) == [f"talk.part{i}of{n}.ogg" for i in range(1, n + 1)]  # each once, in order
    mine = [r for r in read_report(report) if r["contact"] == contact]
    assert [r["status"] for r in mine] == ["already_sent"] + ["sent"] * (n - 1)
    assert mine[0]["message_id"] == stored["id"] and "marked delivered by" in mine[0]["error"]
    assert _parts_of(sb, other) == [f"talk.part1of{n}.ogg"]
    with SqliteLedger(state, create=False) as led:
        (part1,) = led.rows(contact=contact, part=1)
        assert part1.state == SENT and part1.message_id == stored["id"]


# --- settling unknown sends ------------------------------------------------------------------------

@pytest.mark.slow
def test_resolving_not_delivered_sends_it_exactly_once(tmp_path, folder, state, make_sandbox, cli):
    contacts = contacts_for(3)
    csv_path = write_contacts(tmp_path / "c.csv", contacts)
    sb = make_sandbox(faults=Faults(rate_500=1.0))  # a 500: unknown to the client, nothing stored
    assert cli(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 4
    assert sb.messages() == []

    one = cli("resolve", "--state", str(state), "--contact", contacts[0], "--file", "voice.opus", "--not-delivered")
    assert one.returncode == 0 and "not delivered" in one.stdout and "the next batch sends it" in one.stdout
    code, text, data = status(cli, state)
    assert code == 4 and data["counts"]["deferred"] == 1 and data["counts"]["unknown"] == 2
    assert f"resolved by hand: [default] {contacts[0]} voice.opus: not delivered, marked by" in text
    assert "the next batch sends it" in text and f"deferred: [default] {contacts[0]}" not in text  # said once
    rest = cli("resolve", "--state", str(state), "--all-unknown", "--not-delivered", "--note", "checked the log")
    assert rest.returncode == 0 and rest.stdout.count("resolved: ") == 2, rest.stdout
    code, text, data = status(cli, state)
    assert code == 5 and data["counts"]["deferred"] == 3 and data["counts"]["unknown"] == 0
    assert text.count("resolved by hand: ") == 3

    sb = make_sandbox()
    assert cli(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 0
    assert Counter(m["contact_id"] for m in sb.messages()) == Counter(dict.fromkeys(contacts, 1))
    assert cli(*batch_args(folder, csv_path, state), sandbox=sb).returncode == 0
    assert len(sb.messages()) == 3
    code, text, data = status(cli, state)
    assert code == 0 and data["resolved"] == []  # sent since: no longer "resolved by hand"
    nothing = cli("resolve", "--state", str(state), "--all-unknown", "--not-delivered")
    assert nothing.returncode == 0 and "nothing to resolve" in nothing.stdout
    with SqliteLedger(state, create=False) as led:  # the history stays
        events = led._fetch("SELECT detail FROM events WHERE state='resolved'")
    details = [json.loads(d) for (d,) in events]
    assert len(details) == 3 and {d["outcome"] for d in details} == {"not delivered"}
    assert all(d["by"] and d["at"] and d["was"] == UNKNOWN for d in details)
    assert sum(d["note"] == "checked the log" for d in details) == 2


@pytest.mark.slow
def test_resolve_refuses_with_one_line_and_changes_nothing(tmp_path, folder, state, make_sandbox, cli):
    contacts = contacts_for(2)
    csv_path = write_contacts(tmp_path / "c.csv", contacts)
    sb = make_sandbox(faults=Faults(rate_500=1.0))
    for campaign in ("a", "b"):
        assert cli(*batch_args(folder, csv_path, state, "--campaign", campaign), sandbox=sb).returncode == 4
    sb = make_sandbox()
    assert cli(*batch_args(folder, write_contacts(tmp_path / "d.csv", contacts_for(1, seed=9)), state,
                           "--campaign", "c"), sandbox=sb).returncode == 0
    (sent,) = contacts_for(1, seed=9)
    before = ledger_rows(state)
    base = ["resolve", "--state", str(state)]
    cases = [
        ([*base, "--contact", sent, "--file", "voice.opus", "--delivered"], ["is sent, not unknown"]),
        ([*base, "--contact", contacts[0], "--file", "other.wav", "--delivered"],
         ["no send matches contact", "file other.wav"]),
        ([*base, "--contact", contacts[0], "--file", "voice.opus", "--delivered"],
         ["matches 2 unknown sends", "--campaign"]),
        ([*base, "--campaign", "a", "--contact", contacts[0], "--file", "voice.opus", "--not-delivered",
          "--message-id", "x"], ["--message-id goes with --delivered"]),
        ([*base, "--campaign", "a", "--contact", contacts[0], "--file", "voice.opus"],
         ["--delivered or --not-delivered"]),
        ([*base, "--contact", "not-a-uuid", "--file", "voice.opus", "--delivered"], ["is not a UUID"]),
        ([*base, "--delivered"], ["--contact and --file", "--all-unknown"]),
        ([*base, "--all-unknown", "--delivered", "--message-id", "m-1"], ["--message-id names one message"]),
        ([*base, "--campaign", "a", "--contact", contacts[0], "--file", "voice.opus", "--delivered",
          "--message-id", "id with spaces"], ["is not a message id"]),
        (["resolve", "--state", str(tmp_path / "none.sqlite3"), "--all-unknown", "--delivered"], ["no ledger at"]),
    ]
    runner = CliRunner()  # in-process: ten refusals need not start ten interpreters
    for argv, words in cases:
        out = runner.invoke(main_cli, argv)
        one_line_refusal(subprocess.CompletedProcess(argv, out.exit_code, out.stdout, out.stderr), *words)
    assert ledger_rows(state) == before
    assert not (tmp_path / "none.sqlite3").exists()


def test_resolve_while_a_batch_holds_the_ledger_exits_6(tmp_path, folder, state, make_sandbox, cli):
    (contact,) = contacts_for(1)
    sb = make_sandbox(faults=Faults(rate_500=1.0))
    assert cli(*batch_args(folder, write_contacts(tmp_path / "c.csv", [contact]), state), sandbox=sb).returncode == 4
    argv = ["resolve", "--state", str(state), "--contact", contact, "--file", "voice.opus", "--not-delivered"]
    with SqliteLedger(state) as holder:
        holder.acquire()
        proc = cli(*argv)
        assert proc.returncode == 6, proc.stderr
        assert "another audiopipe run holds the ledger" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert holder.counts()[UNKNOWN] == 1
    proc = cli(*argv)
    assert proc.returncode == 0, proc.stderr
    with SqliteLedger(state, create=False) as led:
        assert led.counts()[DEFERRED] == 1


def test_resolving_a_part_that_waits_behind_an_unknown_one_names_the_part_to_resolve(state):
    from audiopipe.campaign.ledger import PlannedSend, SendKey

    (contact,) = contacts_for(1)
    keys = [SendKey("default", WS, contact, "ab" * 32, p) for p in (1, 2, 3)]
    with SqliteLedger(state) as led:
        led.plan("w", [PlannedSend(k, 3, "talk.wav", "p") for k in keys])
        led.begin(keys[0], parts=3, file="talk.wav", prepared_sha256="p")
        led.finish(keys[0], UNKNOWN, error="no answer")
    before = ledger_rows(state)
    runner = CliRunner()
    out = runner.invoke(main_cli, ["resolve", "--state", str(state), "--contact", contact, "--file", "talk.wav",
                                   "--part", "2", "--delivered"])
    one_line_refusal(subprocess.CompletedProcess([], out.exit_code, out.stdout, out.stderr),
                     "part 2 is pending (never attempted), not unknown",
                     "it waits behind part 1, which is unknown; resolve that part")
    assert ledger_rows(state) == before
    # without --part the one unknown part is the one meant
    out = runner.invoke(main_cli, ["resolve", "--state", str(state), "--contact", contact, "--file", "talk.wav",
                                   "--delivered"])
    assert out.exit_code == 0 and "the next batch skips it and sends the 2 part(s) after it" in out.stdout
    again = runner.invoke(main_cli, ["resolve", "--state", str(state), "--contact", contact, "--file", "talk.wav",
                                     "--not-delivered"])
    assert again.exit_code == 2
    assert "no send of talk.wav to" in again.stderr
    assert "part 1: sent (resolved by hand); part 2: pending" in again.stderr
