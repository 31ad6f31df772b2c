"""What `batch` and `status` show a person, run as a person runs them: the CLI in process (in a real
process on a pseudo-terminal where the point is the terminal: bars, Ctrl-C typed as ^C), real ffmpeg, real
HTTP to the sandbox, a real ledger.

* the same refusal for many rows is one line with a count (one missing contact x 7 files; one file
  the server refuses x 5 contacts), in `batch` and in `status`; -v lists every row;
* files held back by --settle are said so, with the flag;
* Ctrl-C mid-send: the bar is closed before any line, nothing is drawn after the interruption's
  line, the summary and --report say what was done; mid-prepare: "nothing was sent";
* a rerun that only skips rows already sent shows no send rate.
"""

from __future__ import annotations

import csv
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import AUDIOPIPE, clean_environ, contacts_for, invoke, write_contacts

from audiopipe.sandbox.app import Faults, Sandbox

pytestmark = pytest.mark.timeout(120)

TOKEN = "ui-test-token"
SANDBOX_FRESH_DATA = True
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
EXIT_BOUND = 3.0  # seconds from the signal (and the sends in flight) to the exit
COLUMNS = 120     # the pseudo-terminal's width


def distinct_copies(folder: Path, source: Path, n: int, stem: str = "t") -> list[str]:
    """``n`` files of ``source`` with one different byte at the end each: n recordings to the ledger."""
    folder.mkdir(exist_ok=True)
    names = []
    for i in range(n):
        dest = folder / f"{stem}{i}{source.suffix}"
        dest.write_bytes(source.read_bytes() + bytes([i]))
        names.append(dest.name)
    return names


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    return clean_environ(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), LANCEPILOT_TOKEN=TOKEN,
                         AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), AUDIOPIPE_SETTLE="0")


def batch_args(folder: Path, contacts: Path, tmp_path: Path, *extra: str) -> list[str]:
    # --no-preflight: these tests count requests; the token check has tests of its own
    return ["batch", str(folder), "--contacts", str(contacts), "-w", WS,
            "--state", str(tmp_path / "state" / "ledger.sqlite3"), "--rate", "0", "--no-preflight", *extra]


def run(args: list[str], env: dict[str, str], sb: Sandbox | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(env, **({"LANCEPILOT_BASE_URL": sb.url} if sb else {}))
    proc = invoke(args, env=e)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- grouped problems --------------------------------------------------------------------------------

def lines_starting(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_one_missing_contact_for_7_files_is_one_line_in_batch_and_status(tmp_path, env, audio_dir,
                                                                        make_sandbox):
    people = contacts_for(3)
    sb = make_sandbox(contacts_csv=write_contacts(tmp_path / "known.csv", people[:2]))
    folder = tmp_path / "in"
    files = distinct_copies(folder, audio_dir / "tone.mp3", 7)
    contacts = write_contacts(tmp_path / "c.csv", people)  # line 4 is the contact the server does not know
    proc = run(batch_args(folder, contacts, tmp_path), env, sb)
    assert proc.returncode == 1, proc.stderr
    failed = lines_starting(proc.stderr, "failed:")
    assert len(failed) == 1, proc.stderr
    assert failed[0].startswith(f"failed: 7 rows (line 4; contact {people[2]}; 7 files: "
                                f"{files[0]}, {files[1]}, {files[2]} and 4 more): "), failed[0]
    assert "(404)" in failed[0]
    assert "(-v lists every row)" in proc.stderr
    assert len(sb.messages()) == 14  # the others went out

    verbose = run(["-v", *batch_args(folder, contacts, tmp_path)], env, sb)  # a rerun: refusals stay
    assert verbose.returncode == 1 and len(sb.messages()) == 14
    assert len(lines_starting(verbose.stderr, "failed:")) == 1
    rows = [line.strip() for line in verbose.stderr.splitlines() if line.startswith("  line 4: ")]
    assert rows == [f"line 4: {people[2]} {name}" for name in files]

    state = ["--state", str(tmp_path / "state" / "ledger.sqlite3")]
    st = run(["status", *state], env)
    assert st.returncode == 1
    listed = lines_starting(st.stdout, "failed:")
    assert len(listed) == 1 and listed[0].startswith(
        f"failed: 7 rows (campaign default; contact {people[2]}; 7 files: "), st.stdout
    st = run(["-v", "status", *state], env)
    assert len(lines_starting(st.stdout, "failed:")) == 1
    assert sorted(line.split()[-1] for line in st.stdout.splitlines()
                  if line.startswith(f"  [default] {people[2]} ")) == sorted(files)


def test_one_file_refused_for_every_contact_is_one_line(tmp_path, env, audio_dir, make_sandbox):
    """The other way round: the server takes voice.opus but refuses tone.mp3 (over its PHP upload
    limit) for each of 5 contacts."""
    people = contacts_for(5, seed=9)
    sb = make_sandbox(php_upload_limit=20_000)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("tone.mp3", "voice.opus"):
        shutil.copy(audio_dir / name, folder / name)
    proc = run(batch_args(folder, write_contacts(tmp_path / "c.csv", people), tmp_path), env, sb)
    assert proc.returncode == 1, proc.stderr
    failed = lines_starting(proc.stderr, "failed:")
    assert len(failed) == 1, proc.stderr
    assert failed[0].startswith(f"failed: 5 rows (5 lines: 2, 3, 4 and 2 more; 5 contacts: {people[0]}, "
                                f"{people[1]}, {people[2]} and 2 more; file tone.mp3): "), failed[0]
    assert "422" in failed[0]
    assert [m["contact_id"] for m in sb.messages()].count(people[4]) == 1


def test_different_problems_stay_apart(tmp_path, env, audio_dir, make_sandbox):
    """Grouping is by (status, message): a refused file and an unknown contact are two lines, and a
    bad CSV row keeps its own line."""
    people = contacts_for(3, seed=13)
    sb = make_sandbox(contacts_csv=write_contacts(tmp_path / "known.csv", people[:2]), php_upload_limit=20_000)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("tone.mp3", "voice.opus"):
        shutil.copy(audio_dir / name, folder / name)
    contacts = tmp_path / "c.csv"
    contacts.write_text("contact\n" + "".join(p + "\n" for p in people) + "not-a-uuid\n", encoding="utf-8")
    proc = run(batch_args(folder, contacts, tmp_path), env, sb)
    assert proc.returncode == 1, proc.stderr
    failed = lines_starting(proc.stderr, "failed:")
    assert len(failed) == 2, proc.stderr
    # the server looks at the contact first: the unknown one gets a 404 for both files
    assert any(line.startswith(f"failed: 2 rows (2 lines: 2, 3; 2 contacts: {people[0]}, {people[1]}; "
                               "file tone.mp3): refused by the server (422)") for line in failed), proc.stderr
    assert any(line.startswith(f"failed: 2 rows (line 4; contact {people[2]}; 2 files: tone.mp3, voice.opus): ")
               and "(404)" in line for line in failed), proc.stderr
    assert len(lines_starting(proc.stderr, "invalid: line 5: not-a-uuid: ")) == 1


# --- --settle ------------------------------------------------------------------------------------------

def test_files_held_back_by_settle_are_said_so_with_the_flag(tmp_path, env, audio_dir, make_sandbox):
    sb = make_sandbox()
    folder = tmp_path / "in"
    distinct_copies(folder, audio_dir / "tone.mp3", 3)  # just copied in
    contacts = write_contacts(tmp_path / "c.csv", contacts_for(2))
    first_run = dict(env)
    del first_run["AUDIOPIPE_SETTLE"]  # the default, 10 s, as a user has it
    proc = run(batch_args(folder, contacts, tmp_path), first_run, sb)
    assert proc.returncode == 5, proc.stderr
    assert sb.messages() == []
    held = lines_starting(proc.stderr, "3 file(s) changed in the last 10 s were held back")
    assert len(held) == 1, proc.stderr
    assert "the next run sends them, or pass --settle 0" in held[0]
    assert "not_sent:" not in proc.stderr  # not one line per row as well
    proc = run(batch_args(folder, contacts, tmp_path, "--settle", "30", "--json"), first_run, sb)
    assert proc.returncode == 5
    assert sorted(__import__("json").loads(proc.stdout)["held_back"]) == ["t0.mp3", "t1.mp3", "t2.mp3"]
    proc = run(["-v", *batch_args(folder, contacts, tmp_path, "--settle", "30")], first_run, sb)
    assert "3 file(s) changed in the last 30 s were held back" in proc.stderr
    assert len(lines_starting(proc.stderr, "  held back: t")) == 3
    proc = run(batch_args(folder, contacts, tmp_path, "--settle", "0"), first_run, sb)
    assert proc.returncode == 0 and len(sb.messages()) == 6
    assert "held back" not in proc.stderr


# --- a real terminal ---------------------------------------------------------------------------------

# Runs in the child between the fork and audiopipe: a new session whose controlling terminal is the
# pty (so ^C typed into it is the terminal's SIGINT), with a size, so the bars are drawn.
_ON_A_TERMINAL = """
import fcntl, os, struct, sys, termios
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
except OSError:
    pass
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, int(sys.argv[2]), 0, 0))
for n in (0, 1, 2):
    os.dup2(fd, n)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Terminal:
    """``audiopipe ARGS`` in a pseudo-terminal; everything it writes, byte for byte."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        # the test keeps the terminal's far end open too, so reading never ends before the run does
        self.master, self.slave = os.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", _ON_A_TERMINAL, os.ttyname(self.slave), str(COLUMNS),
                                      AUDIOPIPE, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.out = b""

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            self.out += os.read(self.master, 65536)

    def wait_for(self, what: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"timed out; so far: {self.text!r}"
            assert self.proc.poll() is None, f"the run ended; it wrote: {self.text!r}"
            self._read(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"still running; so far: {self.text!r}"
            self._read(0.05)
        before = None
        while before != len(self.out):  # what it wrote just before it exited
            before = len(self.out)
            self._read(0.1)
        os.close(self.master)
        os.close(self.slave)
        return self.proc.returncode

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """What each line of the terminal finally shows: a bar redrawn with \\r keeps its last frame."""
    shown = []
    for line in raw.split("\n"):
        frames = [f for f in line.split("\r") if f]
        shown.append(frames[-1] if frames else "")
    return shown


def check_closing(raw: str, interrupted: str) -> tuple[str, str]:
    """(what came before the interruption's line, the line). The line and every line before it
    that is not a bar start a line of their own; nothing at all is drawn after it."""
    start = raw.index(interrupted)
    before, after = raw[:start], raw[start:]
    line, _, rest = after.partition("\n")
    assert rest.strip() == "", f"something was drawn after the interruption's line: {rest!r}"
    assert before.endswith("\n"), f"the line was not at the start of a line: {before[-200:]!r}"
    last_bar = before.rfind("%|")
    assert last_bar >= 0, "no bar was drawn: the test proves nothing"
    closing = before[last_bar:]
    assert "\n" in closing.split("%|", 1)[1], "the bar was not closed before the lines after it"
    for text in closing.split("\n")[1:]:
        assert "%|" not in text, f"a bar was redrawn after it was closed: {closing!r}"
    return before, line.rstrip("\r")


def test_ctrl_c_mid_send_closes_the_bar_then_says_what_was_sent(tmp_path, env, audio_dir, make_sandbox):
    sb = make_sandbox(faults=Faults(latency=1.0))
    folder = tmp_path / "in"
    distinct_copies(folder, audio_dir / "tone.mp3", 1)
    people = contacts_for(12)
    report = tmp_path / "out" / "report.csv"
    args = batch_args(folder, write_contacts(tmp_path / "c.csv", people), tmp_path, "--concurrency", "2",
                      "--report", str(report))
    term = Terminal(args, dict(env, LANCEPILOT_BASE_URL=sb.url))
    term.wait_for(lambda: len(sb.messages()) >= 2 and "sending:" in term.text)
    term.type(b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to audiopipe
    t0 = time.monotonic()
    code = term.finish()
    took = time.monotonic() - t0
    assert code == 130, term.text
    assert took < 1.0 + EXIT_BOUND, f"took {took:.1f} s"  # the sends in flight (1 s) and no more
    raw = term.text
    assert "Traceback" not in raw
    sent = len(sb.messages())
    assert 2 <= sent < 12
    before, line = check_closing(raw, "audiopipe: interrupted by SIGINT while sending")
    assert f"; {sent} sent before it stopped, the sends in flight recorded; run the same command again" in line
    shown = screen_lines(before)
    assert f"campaign 'default': {sent} sent, 0 already sent, 0 failed, 0 unknown, 0 invalid, " \
           f"{12 - sent} not sent yet" in shown, shown
    assert f"not_sent: {12 - sent} message(s), the run was interrupted; the next run sends them" in shown
    final_bar = [s for s in shown if s.startswith("sending:")][-1]
    assert f"| {sent}/12 [" in final_bar, final_bar  # the bar stopped where the sends did
    # the terminal echoed the ^C after the bar; the bar leaves room for it, or the echo would wrap
    # the line and the closing frame would land below a stale one
    assert "^C" in raw
    frames = [f for line in before.split("\n") for f in line.split("\r") if "%|" in f]
    assert frames and max(len(f.replace("^C", "")) for f in frames) <= COLUMNS - 2
    rows = read_report(report)
    assert len(rows) == 12 and {r["contact"] for r in rows} == set(people)
    assert sorted(r["message_id"] for r in rows if r["status"] == "sent") == sorted(m["id"] for m in sb.messages())
    assert {r["status"] for r in rows} == {"sent", "not_sent"}

    # the next run sends the rest, and only the rest
    proc = run(batch_args(folder, tmp_path / "c.csv", tmp_path, "--concurrency", "4"), env, sb)
    assert proc.returncode == 0, proc.stderr
    assert len(sb.messages()) == 12 and f"{12 - sent} sent, {sent} already sent" in proc.stderr


def test_ctrl_c_while_preparing_says_nothing_was_sent(tmp_path, env, make_sandbox):
    sb = make_sandbox()
    folder = tmp_path / "in"
    folder.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=300", "-ac", "1", str(folder / "long.wav")],
                   check=True, timeout=60)
    report = tmp_path / "report.csv"
    people = contacts_for(3)
    args = batch_args(folder, write_contacts(tmp_path / "c.csv", people), tmp_path, "--normalize",
                      "--report", str(report))
    term = Terminal(args, dict(env, LANCEPILOT_BASE_URL=sb.url))
    term.wait_for(lambda: "preparing:" in term.text)  # the bar is there from the start
    time.sleep(0.5)  # ffmpeg is busy for seconds (loudnorm on 5 minutes)
    term.type(b"\x03")
    t0 = time.monotonic()
    assert term.finish() == 130, term.text
    assert time.monotonic() - t0 < EXIT_BOUND
    before, line = check_closing(term.text, "audiopipe: interrupted by SIGINT while preparing")
    assert line.endswith("; nothing was sent; run the same command again to continue"), line
    assert "campaign 'default': 0 sent" in before
    assert sb.request_count == 0
    rows = read_report(report)
    assert [(r["contact"], r["file"], r["status"]) for r in rows] == [(p, "long.wav", "not_sent") for p in people]
    assert all("interrupted while preparing" in r["error"] for r in rows)


def test_a_rerun_that_only_skips_shows_no_send_rate(tmp_path, env, audio_dir, make_sandbox):
    sb = make_sandbox()
    folder = tmp_path / "in"
    distinct_copies(folder, audio_dir / "tone.mp3", 2)
    args = batch_args(folder, write_contacts(tmp_path / "c.csv", contacts_for(5)), tmp_path)
    first = Terminal(args, dict(env, LANCEPILOT_BASE_URL=sb.url))
    assert first.finish() == 0, first.text
    sending = [s for s in screen_lines(first.text) if s.startswith("sending:")]
    assert sending and "msg/s" in sending[-1], first.text  # a run that sends shows its rate
    assert len(sb.messages()) == 10

    again = Terminal(args, dict(env, LANCEPILOT_BASE_URL=sb.url))
    assert again.finish() == 0, again.text
    assert len(sb.messages()) == 10
    assert "msg/s" not in again.text and not re.search(r"\d(msg|it)/s", again.text), again.text
    sending = [s for s in screen_lines(again.text) if s.startswith("sending:")]
    assert sending and "10/10" in sending[-1] and "10 skipped (handled by an earlier run)" in sending[-1], sending


# --- from Python ---------------------------------------------------------------------------------

def test_run_batch_stopped_by_a_real_sigint_hands_back_what_it_did(tmp_path, audio_dir, make_sandbox):
    """The library's side of the Ctrl-C above: BatchInterrupted (a KeyboardInterrupt) carries a row
    for every message, sent ones as the sandbox stored them and the rest not_sent, and the progress
    callback never counted what the stop left undone."""
    from audiopipe.campaign.batch import BatchInterrupted, BatchSettings, run_batch
    from audiopipe.campaign.ledger import SENT, SqliteLedger
    from audiopipe.preparation.settings import PrepareSettings
    from audiopipe.send.client import LancepilotClient

    sb = make_sandbox(faults=Faults(latency=1.0))
    folder = tmp_path / "in"
    distinct_copies(folder, audio_dir / "tone.mp3", 1)
    people = contacts_for(10)
    settings = BatchSettings(folder=folder, contacts=write_contacts(tmp_path / "c.csv", people), workspace=WS, rate=0,
                             concurrency=2, settle=0, prepare=PrepareSettings(cache_dir=tmp_path / "cache"))
    calls: list[tuple[str, int, int]] = []
    running = threading.Event()

    def ctrl_c_after_two_sends() -> None:
        deadline = time.monotonic() + 30
        while len(sb.messages()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        if running.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # Python's own handler: KeyboardInterrupt in this thread

    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger, LancepilotClient(token=TOKEN, base_url=sb.url) as c:
        threading.Thread(target=ctrl_c_after_two_sends, daemon=True).start()
        running.set()
        with pytest.raises(BatchInterrupted) as stopped:
            run_batch(settings, sender=c, ledger=ledger, progress=lambda *call: calls.append(call))
        running.clear()
        recorded = [r for r in ledger.rows() if r.state == SENT]
    assert stopped.value.stage == "sending"
    rows = stopped.value.result.rows
    stored = {m["id"] for m in sb.messages()}
    assert len(rows) == 10 and {r.contact for r in rows} == set(people)
    assert {r.message_id for r in rows if r.status == "sent"} == stored == {r.message_id for r in recorded}
    assert {r.status for r in rows} == {"sent", "not_sent"}
    sends = [done for stage, done, _ in calls if stage == "send"]
    assert sends[0] == 0 and sends[-1] == len(stored)  # the bar stops where the sends did
    assert ("prepare", 0, 1) in calls and not any(stage == "skip" for stage, _, _ in calls)


def test_problem_lines_group_count_and_limit():
    """The grouping itself (a pure function): a group of one keeps the row's own line, a group
    names what its rows share and samples what differs, and past 20 groups the rest is counted."""
    from audiopipe.cli.summary import Problem, problem_lines

    def row(kind: str, message: str, line: int, contact: str, file: str) -> Problem:
        return Problem(kind, message, f"line {line}: {contact} {file}",
                       (("line", str(line)), ("contact", contact), ("file", file)))

    alone = problem_lines([row("unknown", "timed out", 2, "c1", "a.mp3")])
    assert alone == ["unknown: line 2: c1 a.mp3: timed out"]
    same_file = [row("failed", "too large (413)", n, f"c{n}", "big.wav") for n in range(2, 7)]
    lines = problem_lines(same_file)
    assert lines == ["failed: 5 rows (5 lines: 2, 3, 4 and 2 more; 5 contacts: c2, c3, c4 and 2 more; "
                     "file big.wav): too large (413)", "(-v lists every row)"]
    assert problem_lines(same_file, verbose=True)[1:] == [f"  line {n}: c{n} big.wav" for n in range(2, 7)]
    many = [row("invalid", f"bad cell {n}", n, "", "") for n in range(25)]
    lines = problem_lines(many)
    assert len(lines) == 21 and lines[-1].startswith("... and 5 more problem(s) in 5 row(s) (")
    assert len(problem_lines(many, verbose=True)) == 25
