"""Signals, with real processes: ``python -m audiopipe ...`` in a subprocess, a real ffmpeg busy on a
10-minute recording, and os.kill.

* SIGTERM and SIGINT to prepare, send and batch (while preparing) and probe: the exit is prompt,
  143 or 130, with one line; no ffmpeg/ffprobe of the run is left, nor a ``.part`` file or a
  temp folder.
* SIGKILL: the ffmpeg dies with audiopipe (PR_SET_PDEATHSIG), and what the run left (its batch
  work folder, ``.part`` files in --out) is swept by the next run, but never what a live
  concurrent run is writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from audiopipe import scratch

pytestmark = pytest.mark.timeout(120)

TOKEN = "signals-test-token"
SANDBOX_FRESH_DATA = True
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
EXIT_BOUND = 3.0   # seconds from the signal to the exit (the aim is under 2)
CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
# --normalize (loudnorm) keeps ffmpeg busy for many seconds on a 10-minute input
SLOW = ["--normalize"]


@pytest.fixture(scope="session")
def long_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 10-minute mono WAVs (53 MB each), made once."""
    folder = tmp_path_factory.mktemp("long")
    for name, freq in (("a.wav", 440), ("b.wav", 660)):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:sample_rate=44100:duration=600", "-ac", "1",
                        str(folder / name)], check=True, timeout=120)
    return folder


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_", "XDG_"))}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    e.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), AUDIOPIPE_SETTLE="0",
             AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), LANCEPILOT_TOKEN=TOKEN)
    return e


class Run:
    """One ``python -m audiopipe`` in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "audiopipe", *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def wait_for_child(self, needle: str, timeout: float = 30) -> psutil.Process:
        """Wait until a child of the run has ``needle`` in its command line (ffmpeg mid-encode)."""
        deadline = time.monotonic() + timeout
        me = psutil.Process(self.proc.pid)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            for child in me.children(recursive=True):
                try:
                    if any(needle in arg for arg in child.cmdline()):
                        return child
                except psutil.Error:
                    continue
            time.sleep(0.02)
        pytest.fail(f"no child with {needle!r} within {timeout} s")

    def kill(self, sig: int) -> tuple[float, str]:
        """Send ``sig``; return (seconds until the exit, stderr)."""
        t0 = time.monotonic()
        os.kill(self.proc.pid, sig)
        _out, err = self.proc.communicate(timeout=30)
        return time.monotonic() - t0, err


def wait_for(what: Any, timeout: float = 15) -> Any:
    """Poll ``what()`` until it is truthy (ffmpeg has opened its output); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"{what} never came true")


def tools_with(marker: str) -> list[str]:
    """Command lines of the ffmpeg/ffprobe processes running now that name ``marker``."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] in ("ffmpeg", "ffprobe") and p.info["status"] != psutil.STATUS_ZOMBIE \
                and any(marker in arg for arg in cmd):
            found.append(" ".join(cmd))
    return found


def tools_left(marker: str) -> list[str]:
    """:func:`tools_with`, after giving a dying process a moment to go."""
    deadline = time.monotonic() + 2
    while (found := tools_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def leftovers(*folders: Path) -> list[str]:
    """Temp items under ``folders``: .part files, audiopipe-* and .tmp-* folders."""
    found = []
    for folder in folders:
        for p in folder.rglob("*"):
            if p.name.endswith(".part") or p.name.startswith(("audiopipe-", ".tmp-")):
                found.append(str(p))
    return found


def one_line(err: str, sig: int, stage: str, summary: bool = False) -> str:
    """The interruption's line: the only one, or (a batch, ``summary``) the last, after the summary
    of what was done."""
    lines = err.strip().splitlines()
    if summary:
        assert any(line.startswith("campaign 'default': 0 sent") for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    name = signal.Signals(sig).name
    assert lines[-1].startswith(f"audiopipe: interrupted by {name} while {stage}"), err
    assert "nothing partial was left" in lines[-1], err
    return lines[-1]


def check_stopped(run: Run, sig: int, stage: str, tmp_path: Path, *markers: str, summary: bool = False) -> str:
    took, err = run.kill(sig)
    assert "Traceback" not in err, err
    assert run.proc.returncode == CODES[sig], err
    assert took < EXIT_BOUND, f"took {took:.2f} s to exit"
    for marker in (str(tmp_path), *markers):
        assert tools_left(marker) == [], "a child of the run is still running"
    assert leftovers(tmp_path) == []
    return one_line(err, sig, stage, summary)


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])


@SIGNALS
def test_prepare_stops_its_ffmpegs_and_leaves_nothing(sig, tmp_path, env, long_dir):
    out = tmp_path / "out"
    run = Run(["prepare", str(long_dir), "--out", str(out), "-j", "2", "-q", *SLOW], env)
    run.wait_for_child("loudnorm")
    run.wait_for_child("b.ogg.ap-")  # both workers are in ffmpeg
    wait_for(lambda: len(leftovers(out)) == 2)  # and writing: else the test would prove nothing
    assert len(tools_with(str(tmp_path))) == 2
    check_stopped(run, sig, "preparing", tmp_path, str(long_dir))
    assert list(out.iterdir()) == []


@SIGNALS
def test_send_stops_while_preparing_and_sends_nothing(sig, tmp_path, env, long_dir, make_sandbox):
    sb = make_sandbox()
    env["LANCEPILOT_BASE_URL"] = sb.url
    run = Run(["send", str(long_dir / "a.wav"), "-w", WS, "-c", CONTACT, *SLOW], env)
    run.wait_for_child("loudnorm")
    wait_for(lambda: leftovers(tmp_path / "tmp"))  # the send's work folder and .part
    check_stopped(run, sig, "preparing", tmp_path, str(long_dir / "a.wav"))
    assert sb.messages() == []


@SIGNALS
def test_batch_stops_promptly_while_preparing(sig, tmp_path, env, long_dir, make_sandbox):
    sb = make_sandbox()
    env["LANCEPILOT_BASE_URL"] = sb.url
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"contact\n{CONTACT}\n")
    folder = linked_copy(long_dir, tmp_path / "long")
    run = Run(["batch", str(folder), "--contacts", str(contacts), "-w", WS, "--jobs", "2", "--quiet",
               "--state", str(tmp_path / "state" / "ledger.sqlite3"), *SLOW], env)
    run.wait_for_child("loudnorm")
    run.wait_for_child("b.ogg.ap-")
    work = [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("audiopipe-batch-")]
    assert len(work) == 1, "the batch's work folder is not where it should be"
    wait_for(lambda: len(list(work[0].iterdir())) == 2)
    line = check_stopped(run, sig, "preparing", tmp_path, str(folder), summary=True)
    assert "nothing was sent; run the same command again to continue" in line
    assert sb.messages() == []


def test_batch_finishes_the_sends_in_flight_unless_signalled_again(tmp_path, env, audio_dir, make_sandbox):
    """The first SIGTERM lets the upload in flight finish (so the ledger knows its outcome); a second
    one is the user's "now": it stops at once, and still leaves no work folder behind."""
    from audiopipe.sandbox.app import Faults

    sb = make_sandbox(faults=Faults(latency=20))
    env["LANCEPILOT_BASE_URL"] = sb.url
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tone.mp3").write_bytes((audio_dir / "tone.mp3").read_bytes())
    # no token check: the first request must be the upload (cli/test_early.py stops the check itself)
    run = Run([*batch_args(folder, tmp_path, "state"), "--no-preflight"], env)
    wait_for(lambda: sb.request_count >= 1)
    os.kill(run.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert run.proc.poll() is None, "the send in flight was not waited for"
    took, err = run.kill(signal.SIGTERM)
    assert run.proc.returncode == 143 and took < EXIT_BOUND, err
    assert "Traceback" not in err
    assert "interrupted by SIGTERM again, stopped at once while sending" in err, err
    assert leftovers(tmp_path) == []


def test_probe_stops_promptly(tmp_path, env, audio_dir):
    files = []
    for i in range(400):
        f = tmp_path / "in" / f"t{i}.mp3"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes((audio_dir / "tone.mp3").read_bytes())
        files.append(str(f))
    run = Run(["probe", *files], env)
    run.wait_for_child(str(tmp_path / "in"))
    check_stopped(run, signal.SIGTERM, "probing", tmp_path)


# --- SIGKILL: what it leaves, the next run sweeps ------------------------------------------------------

def linked_copy(folder: Path, dest: Path) -> Path:
    """A folder of its own for one batch (hard links: no copying): one sending run per folder."""
    dest.mkdir()
    for f in folder.iterdir():
        if f.suffix == ".wav":
            os.link(f, dest / f.name)
    return dest


def batch_args(folder: Path, tmp_path: Path, name: str) -> list[str]:
    contacts = tmp_path / f"{name}.csv"
    contacts.write_text(f"contact\n{CONTACT}\n")
    return ["batch", str(folder), "--contacts", str(contacts), "-w", WS, "--quiet",
            "--state", str(tmp_path / name / "ledger.sqlite3")]


def work_folders(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "tmp").iterdir()}


@pytest.mark.slow
def test_a_sigkilled_batch_is_swept_by_the_next_run_but_a_live_one_is_not(tmp_path, env, long_dir,
                                                                          audio_dir, make_sandbox):
    sb = make_sandbox()
    env["LANCEPILOT_BASE_URL"] = sb.url
    live_dir, killed_dir = (linked_copy(long_dir, tmp_path / f"{n}-dir") for n in ("live", "killed"))
    live = Run(batch_args(live_dir, tmp_path, "live") + SLOW, env)  # its own folder: runs alongside
    live.wait_for_child("loudnorm")
    live_work = wait_for(lambda: work_folders(tmp_path))

    killed = Run(batch_args(killed_dir, tmp_path, "killed") + SLOW, env)
    ffmpeg = killed.wait_for_child("loudnorm")
    dead_work = wait_for(lambda: work_folders(tmp_path) - live_work)
    wait_for(lambda: any((tmp_path / "tmp" / next(iter(dead_work))).iterdir()))
    killed.kill(signal.SIGKILL)
    assert killed.proc.returncode == -signal.SIGKILL
    ffmpeg.wait(timeout=5)  # it died with its parent, not under PID 1
    assert work_folders(tmp_path) == live_work | dead_work, "nothing was left to sweep"

    quick = tmp_path / "quick"
    quick.mkdir()
    (quick / "tone.mp3").write_bytes((audio_dir / "tone.mp3").read_bytes())
    done = subprocess.run([sys.executable, "-m", "audiopipe", *batch_args(quick, tmp_path, "next")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(sb.messages()) == 1
    assert work_folders(tmp_path) == live_work, "the dead run's folder was not swept, or the live one was"

    check_stopped(live, signal.SIGTERM, "preparing", tmp_path, str(live_dir), summary=True)


@pytest.mark.slow
def test_part_files_of_a_sigkilled_prepare_are_swept_but_not_a_live_ones(tmp_path, env, long_dir,
                                                                         audio_dir):
    out = tmp_path / "out"
    live = Run(["prepare", str(long_dir / "b.wav"), "--out", str(out), "-q", *SLOW], env)
    live.wait_for_child("loudnorm")
    live_part = set(wait_for(lambda: leftovers(out)))

    killed = Run(["prepare", str(long_dir / "a.wav"), "--out", str(out), "-q", *SLOW], env)
    ffmpeg = killed.wait_for_child("loudnorm")
    wait_for(lambda: len(leftovers(out)) == 2)
    killed.kill(signal.SIGKILL)
    ffmpeg.wait(timeout=5)
    assert len(leftovers(out)) == 2

    done = subprocess.run([sys.executable, "-m", "audiopipe", "prepare", str(audio_dir / "tone.mp3"),
                           "--out", str(out), "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(leftovers(out)) == live_part
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["tone.mp3"]

    check_stopped(live, signal.SIGTERM, "preparing", tmp_path, str(long_dir))


# --- the sweeper's rule, with real processes ----------------------------------------------------------

@pytest.fixture
def dead_owner() -> Iterator[tuple[int, int]]:
    """(pid, start time) of a process that ran and is gone."""
    proc = subprocess.Popen(["sleep", "30"])
    start = scratch.start_time(proc.pid)
    proc.kill()
    proc.wait()
    assert start is not None
    yield proc.pid, start


def named(owner: Any, kind: str) -> str:
    host, pid, start = owner
    token = f"ap-{host}-{pid}-{start}-0123abcd"
    return {"part": f".a.ogg.{token}.part", "work": f"audiopipe-batch-{token}", "cache": f".tmp-{token}"}[kind]


@pytest.mark.parametrize("kind", ["part", "work", "cache"])
def test_the_sweeper_removes_only_what_a_dead_owner_left(kind, tmp_path, dead_owner):
    host = scratch.owner().split("-")[0]
    me = scratch.start_time(os.getpid())
    dead = named((host, *dead_owner), kind)
    reused_pid = named((host, os.getpid(), (me or 0) + 1), kind)   # the pid now belongs to someone else
    live = named((host, os.getpid(), me), kind)
    elsewhere = named(("abcdef" if host != "abcdef" else "fedcba", *dead_owner), kind)  # another host
    user_file = "notes.ap-123.part"
    for name in (dead, reused_pid, live, elsewhere, user_file):
        if kind == "part" or name == user_file:
            (tmp_path / name).write_bytes(b"x")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "half.ogg").write_bytes(b"x")
    assert scratch.sweep(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, elsewhere, user_file])


# A signal that lands while the main thread starts a child: Python runs the handler at the next
# bytecode, which may be inside an at-fork hook (logging registers one), where an exception is printed
# as "Exception ignored" and dropped, and the stop with it. An at-fork hook of our own makes that
# moment certain here.
_SIGNAL_IN_AT_FORK_HOOK = r"""
import os, signal, sys, time
from audiopipe import runner

armed = [True]
def in_parent_after_fork():
    if armed[0]:
        armed[0] = False
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):  # the handler runs here, inside the hook
            pass

def on_term(signum, frame):
    runner.stop_children()
    runner.interrupt_when_safe()

os.register_at_fork(after_in_parent=in_parent_after_fork)
signal.signal(signal.SIGTERM, on_term)
started = time.monotonic()
try:
    runner.run(["sleep", "20"], timeout=30, what="sleep", limited=False)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f}s")
    sys.exit(0)
print("the stop was lost")
sys.exit(1)
"""


def test_a_signal_during_the_start_of_a_child_is_not_lost():
    done = subprocess.run([sys.executable, "-c", _SIGNAL_IN_AT_FORK_HOOK], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interrupted after" in done.stdout
    assert "Exception ignored" not in done.stderr
    assert float(done.stdout.split()[-1].rstrip("s")) < 10  # not after the 20 s child ended by itself
