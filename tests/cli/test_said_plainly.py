"""What happened, said plainly: what a trim cut (stderr, --json, the report's columns), the one line
of a send, a voice note that cannot play inline, encode progress from ffmpeg's own reports (a bar
on a real terminal, nothing without one), and -v's plan and requests (never the token).

Real ffmpeg on generated files, the CLI in process against the in-process sandbox, a subprocess on a
pty for the terminal. Expected figures are computed from the results (JSON, ffprobe), never from timings.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import clean_environ, invoke

from audiopipe.preparation.encode import progress_reader
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.results import EncodeProgress
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.runner import Interrupted, run_child, stop_children

pytestmark = pytest.mark.timeout(180)

TOKEN = "said-token-5b1e7c"
SANDBOX_FRESH_DATA = True
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
OTHER = "9a4f6e2d-1b3c-4d5e-8f70-a1b2c3d4e5f6"
SMALL = "100KB"  # holds about 1:54 of a tone at Opus's lowest bitrate: a 3-minute one is trimmed
REAL_FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def generate(dest: Path, source: str, *extra: str) -> Path:
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source, *extra, str(dest)],
                   check=True, timeout=120)
    return dest


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", str(path)],
                         capture_output=True, check=True, timeout=60)
    return float(json.loads(out.stdout)["format"]["duration"])


def mmss(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def kept_phrase(sent: float, source: float) -> str:
    """What the user must read about a trim, written here independently of audiopipe's formatter."""
    cut = round(source) - round(sent)
    return f"kept {mmss(sent)} of {mmss(source)} ({mmss(cut)} cut)"


@pytest.fixture(scope="module")
def tone180(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-minute mono tone: at --max-size 100KB even Opus's floor holds only part of it."""
    return generate(tmp_path_factory.mktemp("gen") / "tone180.wav", "sine=f=440:d=180:r=16000", "-ac", "1")


@pytest.fixture
def ap(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``audiopipe ARGS`` (in process), stdin/stdout/stderr not terminals, its own cache and home."""
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, base_url: str | None = None, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
        env = clean_environ(HOME=str(home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path),
                            AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=token)
        if base_url:
            env["LANCEPILOT_BASE_URL"] = base_url
        done = invoke(args, env=env)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("audiopipe: warning: ")]


# --- the runner hands ffmpeg's progress over as it comes ----------------------------------------

CHATTY = """
import sys, time
for i in range(200):
    sys.stdout.write(f"out_time_us={i}\\n"); sys.stdout.flush()
    sys.stderr.write("e" * 8192)  # 1.6 MB in all: a pipe nobody drains fills at 64 KB
sys.stderr.flush()
"""


def test_runner_streams_stdout_lines_and_drains_stderr() -> None:
    lines: list[bytes] = []
    done = run_child([sys.executable, "-c", CHATTY], timeout=60, on_stdout_line=lines.append)
    assert done.returncode == 0
    assert lines == [f"out_time_us={i}".encode() for i in range(200)]
    assert done.stdout == b"" and len(done.stderr) == 200 * 8192


def test_runner_streaming_keeps_the_timeout_and_leaves_no_child() -> None:
    script = "import sys, time, os; print(os.getpid(), flush=True); sys.stderr.write('started'); " \
             "sys.stderr.flush(); time.sleep(60)"
    lines: list[bytes] = []
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_child([sys.executable, "-c", script], timeout=1.0, on_stdout_line=lines.append)
    assert time.monotonic() - started < 10
    assert caught.value.stderr == b"started"  # what it said before it was stopped
    pid = int(lines[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_runner_streaming_child_stopped_by_stop_children() -> None:
    lines: list[bytes] = []
    script = "import time; print('go', flush=True); time.sleep(60)"
    stopper = threading.Timer(1.0, lambda: stop_children(for_good=False))
    stopper.start()
    try:
        with pytest.raises(Interrupted):
            run_child([sys.executable, "-c", script], timeout=60, on_stdout_line=lines.append)
    finally:
        stopper.cancel()
    assert lines == [b"go"]


def test_progress_reader_reads_out_time_us_only() -> None:
    seen: list[float] = []
    read = progress_reader(seen.append)
    for line in (b"bitrate=N/A", b"out_time_us=N/A", b"out_time_us=-9223372036854775807", b"out_time_ms=5000000",
                 b"out_time_us=1500000", b"progress=continue", b"out_time_us=3000000", b"progress=end"):
        read(line)
    assert seen == [1.5, 3.0]


# --- the library reports encode progress (it never prints) ---------------------------------------

def test_encode_progress_comes_from_ffmpeg(tmp_path: Path, audio_dir: Path, capsys: pytest.CaptureFixture) -> None:
    src = generate(tmp_path / "noise.wav", "anoisesrc=d=60:c=pink:r=16000:a=0.3", "-ac", "1")
    calls: list[EncodeProgress] = []
    result = prepare_file(src, tmp_path / "out", PrepareSettings(cache=False), progress=calls.append)
    assert result.action == "transcoded"
    assert calls, "no progress reported"
    assert [c.total for c in calls] == [pytest.approx(60.0)] * len(calls)
    dones = [c.done for c in calls]
    assert dones == sorted(dones)
    assert dones[-1] == pytest.approx(60.0, abs=0.5)  # ffmpeg's last report: the whole of it
    assert all(c.source == src and c.parts == 1 for c in calls)
    # a file kept as it is needs no encode, and the library printed nothing
    kept: list[EncodeProgress] = []
    assert prepare_file(audio_dir / "tone.mp3", tmp_path / "out", PrepareSettings(cache=False),
                        progress=kept.append).action == "kept"
    assert kept == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.slow
def test_split_progress_counts_across_the_parts(tone180: Path, tmp_path: Path) -> None:
    calls: list[EncodeProgress] = []
    result = prepare_file(tone180, tmp_path / "out", PrepareSettings(cache=False, max_size=100_000,
                                                                     on_overflow="split"),
                          progress=calls.append)
    assert result.action == "split"
    n = len(result.outputs)
    assert n >= 2
    assert sorted({c.part for c in calls}) == list(range(1, n + 1))
    assert [c.total for c in calls] == [pytest.approx(180.0)] * len(calls)
    last_part = [c.done for c in calls if c.part == n]
    assert last_part[-1] == pytest.approx(180.0, abs=1.0)
    assert min(last_part) >= 180.0 * (n - 1) / n - 1  # the last part starts where the others ended


# --- trimming is never silent ----------------------------------------------------------------------

@pytest.mark.slow
def test_prepare_says_what_was_cut_on_stderr_and_in_json(tone180: Path, tmp_path: Path, ap) -> None:
    done = ap("prepare", str(tone180), "--out", str(tmp_path / "out"), "--max-size", SMALL, "--json")
    assert done.returncode == 0, done.stderr
    [obj] = [json.loads(line) for line in done.stdout.splitlines()]
    assert obj["action"] == "trimmed"
    out = Path(obj["outputs"][0]["path"])
    assert obj["duration_sent"] == pytest.approx(ffprobe_duration(out), abs=0.05)  # the JSON tells the truth
    assert obj["source_duration"] == pytest.approx(180.0, abs=0.05)
    assert obj["trimmed_seconds"] == pytest.approx(obj["source_duration"] - obj["duration_sent"], abs=0.01)
    assert 30 < obj["trimmed_seconds"] < 150
    assert obj["size"] == out.stat().st_size and obj["format"] == "ogg"
    [warning] = warnings_in(done.stderr)
    assert str(tone180) in warning and "100,000 bytes" in warning
    assert kept_phrase(obj["duration_sent"], obj["source_duration"]) in warning
    assert "--on-overflow split" in warning

    # without --json, and with --quiet: the warning is still there (audio was lost)
    quiet = ap("prepare", str(tone180), "--out", str(tmp_path / "out2"), "--max-size", SMALL, "--quiet")
    assert warnings_in(quiet.stderr) == [warning]


@pytest.mark.slow
def test_send_says_what_it_sent_and_what_was_cut(tone180: Path, make_sandbox, ap) -> None:
    sandbox = make_sandbox()
    done = ap("send", str(tone180), "-w", WS, "-c", CONTACT, "--max-size", SMALL, base_url=sandbox.url)
    assert done.returncode == 0, done.stderr
    [stored] = sandbox.messages()
    assert done.stdout == stored["id"] + "\n"  # not a terminal: the id alone, for id=$(audiopipe send ...)
    sent_seconds = ffprobe_duration(Path(stored["file_path"]))
    [warning] = warnings_in(done.stderr)
    assert kept_phrase(sent_seconds, 180.0) in warning
    [line] = [x for x in done.stderr.splitlines() if not x.startswith("audiopipe: ")]
    # input -> prepared file, action, size, contact, message id
    assert line.startswith(f"{tone180} -> tone180.ogg: trimmed, Ogg/Opus, ")
    assert f"{stored['size'] / 1000:.1f} KB" in line
    assert f"{mmss(sent_seconds)} of 3:00" in line
    assert line.endswith(f"; sent to {CONTACT}: message {stored['id']}")

    js = ap("send", str(tone180), "-w", WS, "-c", CONTACT, "--max-size", SMALL, "--json", base_url=sandbox.url)
    assert js.returncode == 0, js.stderr
    [data] = json.loads(js.stdout)
    stored = sandbox.messages()[-1]
    assert data["id"] == stored["id"] and data["contact_id"] == CONTACT  # the server's fields, as today
    assert data["action"] == "trimmed" and data["format"] == "ogg" and data["size"] == stored["size"]
    assert data["duration_sent"] == pytest.approx(ffprobe_duration(Path(stored["file_path"])), abs=0.05)
    assert data["source_duration"] == pytest.approx(180.0, abs=0.05)
    assert data["trimmed_seconds"] == pytest.approx(180.0 - data["duration_sent"], abs=0.05)
    assert len(warnings_in(js.stderr)) == 1


def test_send_of_a_file_kept_as_it_is_says_so(audio_dir: Path, make_sandbox, ap) -> None:
    sandbox = make_sandbox()
    done = ap("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url)
    assert done.returncode == 0, done.stderr
    [stored] = sandbox.messages()
    assert warnings_in(done.stderr) == []
    assert done.stderr == (f"{audio_dir / 'tone.mp3'} -> tone.mp3: kept, MP3, {stored['size'] / 1000:.1f} KB, "
                           f"0:02; sent to {CONTACT}: message {stored['id']}\n")


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_batch_warns_once_a_file_and_reports_what_was_sent(tone180: Path, tmp_path: Path, audio_dir: Path,
                                                           make_sandbox, ap) -> None:
    sandbox = make_sandbox()
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(tone180, folder / "long.wav")
    for name in ("tone.mp3", "cover.mp3", "tone.flac"):  # kept, remuxed (cover art), transcoded
        shutil.copy(audio_dir / name, folder / name)
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"contact\n{CONTACT}\n{OTHER}\n", encoding="utf-8")
    state = tmp_path / "ledger.sqlite3"
    report = tmp_path / "report.csv"
    common = ["--contacts", str(contacts), "-w", WS, "--state", str(state), "--max-size", SMALL]

    done = ap("batch", str(folder), *common, "--report", str(report), base_url=sandbox.url)
    assert done.returncode == 0, done.stderr
    # one warning for the trimmed file, not one per contact
    [warning] = warnings_in(done.stderr)
    assert warning.startswith(f"audiopipe: warning: {folder / 'long.wav'}: trimmed")
    stored = {m["id"]: m for m in sandbox.messages()}
    rows = read_report(report)
    assert len(rows) == 8
    expected = {"long.wav": ("trimmed", "ogg"), "tone.mp3": ("kept", "mp3"), "cover.mp3": ("remuxed", "mp3"),
                "tone.flac": ("transcoded", "ogg")}
    for row in rows:
        message = stored[row["message_id"]]
        assert (row["action"], row["format"]) == expected[row["file"]]
        assert int(row["size"]) == message["size"]
        sent_seconds = ffprobe_duration(Path(message["file_path"]))
        assert float(row["duration_sent"]) == pytest.approx(sent_seconds, abs=0.05)
        assert float(row["source_duration"]) == pytest.approx(ffprobe_duration(folder / row["file"]), abs=0.05)
    long_row = next(r for r in rows if r["file"] == "long.wav")
    assert kept_phrase(float(long_row["duration_sent"]), float(long_row["source_duration"])) in warning

    # --json lists each file once, with what was done to it
    js = ap("batch", str(folder), *common, "--json", "--campaign", "again", base_url=sandbox.url)
    files = {Path(f["input"]).name: f for f in json.loads(js.stdout)["files"]}
    assert files["long.wav"]["action"] == "trimmed"
    assert files["long.wav"]["trimmed_seconds"] == pytest.approx(
        files["long.wav"]["source_duration"] - files["long.wav"]["duration_sent"], abs=0.01)
    assert files["tone.mp3"]["trimmed_seconds"] == 0

    # split: one row a part, the parts' durations add up to the source's
    split_report = tmp_path / "split.csv"
    done = ap("batch", str(folder), *common, "--on-overflow", "split", "--campaign", "split",
              "--report", str(split_report), base_url=sandbox.url)
    assert done.returncode == 0, done.stderr
    assert warnings_in(done.stderr) == []
    parts = [r for r in read_report(split_report) if r["file"] == "long.wav" and r["contact"] == CONTACT]
    assert len(parts) >= 2 and {r["action"] for r in parts} == {"split"}
    assert sum(float(r["duration_sent"]) for r in parts) == pytest.approx(180.0, abs=0.1 * len(parts))
    assert {r["source_duration"] for r in parts} == {long_row["source_duration"]}


# --- voice notes ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_voice_note_over_512_kb_is_made_to_fit_rather_than_kept(tmp_path: Path) -> None:
    big = generate(tmp_path / "big.opus", "anoisesrc=d=90:c=pink:r=48000:a=0.3", "-ac", "1", "-c:a", "libopus",
                   "-b:a", "64k")
    assert big.stat().st_size > 512_000
    result = prepare_file(big, tmp_path / "out", PrepareSettings(voice_note=True, cache=False))
    assert result.action == "transcoded"
    assert result.outputs[0].size <= 512_000 and result.voice_note_inline is True
    assert result.notes == ()


@pytest.mark.slow
def test_voice_note_too_long_for_512_kb_is_said(tmp_path: Path, ap) -> None:
    long = generate(tmp_path / "talk.wav", "sine=f=300:d=400:r=16000", "-ac", "1")
    done = ap("prepare", str(long), "--out", str(tmp_path / "out"), "--voice-note", "--json")
    assert done.returncode == 0, done.stderr
    obj = json.loads(done.stdout)
    assert obj["voice_note_inline"] is False and obj["size"] > 512_000
    [warning] = warnings_in(done.stderr)
    assert "not a voice note WhatsApp plays inline" in warning and "6:40 is too long" in warning
    assert f"{obj['size']:,} bytes" in warning
    assert obj["notes"] and obj["notes"][0] in warning


# --- -v: the plan per file, each request and its answer, never the token ----------------------------

@pytest.mark.slow
def test_verbose_shows_the_plan_and_each_request_never_the_token(tone180: Path, tmp_path: Path,
                                                                 make_sandbox, ap) -> None:
    sandbox = make_sandbox()
    done = ap("-v", "send", str(tone180), "-w", WS, "-c", CONTACT, "--max-size", SMALL, "--no-cache",
              base_url=sandbox.url)
    assert done.returncode == 0, done.stderr
    [stored] = sandbox.messages()
    err = done.stderr
    assert "not sent as it is: pcm_s16le in wav is not a type the API takes" in err
    assert "do not fit 100,000 bytes even at the lowest bitrate" in err
    plan = re.search(r"plan: ogg libopus, (\d+) kb/s, 48000 Hz, 1 ch, ([\d.]+) s, fade-out [\d.]+ s; "
                     r"expected ([\d,]+) of 100,000 bytes \(([^)]*)\)", err)
    assert plan, err
    assert int(plan.group(3).replace(",", "")) <= 100_000
    path = f"/api/v3/workspaces/{WS}/contacts/{CONTACT}/messages/audio"
    assert re.search(rf"POST {re.escape(path)} -> 201 in \d+ ms: message {stored['id']}", err), err
    assert TOKEN not in err + done.stdout

    refused = make_sandbox(php_upload_limit=1000)
    bad = ap("-v", "send", str(tone180), "-w", WS, "-c", CONTACT, "--max-size", SMALL, base_url=refused.url)
    assert bad.returncode == 1
    assert re.search(rf"POST {re.escape(path)} -> 422 in \d+ ms: refused by the server", bad.stderr), bad.stderr
    assert TOKEN not in bad.stderr + bad.stdout

    # a batch logs every request, one line each
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(tone180, folder / "long.wav")
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"contact\n{CONTACT}\n{OTHER}\n", encoding="utf-8")
    batch = ap("-v", "batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state",
               str(tmp_path / "l.sqlite3"), "--max-size", SMALL, base_url=sandbox.url)
    assert batch.returncode == 0, batch.stderr
    assert len(re.findall(r"POST /api/v3/workspaces/\S+/messages/audio -> 201 in \d+ ms", batch.stderr)) == 2
    assert TOKEN not in batch.stderr + batch.stdout


# --- the progress bar: on a terminal, and only there ------------------------------------------------

def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 150) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a pseudo-terminal of 120x40; all it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def slow_to_encode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two minutes that take seconds to encode: loudness normalisation runs at 192 kHz."""
    return generate(tmp_path_factory.mktemp("gen") / "talk.wav", "sine=f=300:d=120:r=8000", "-ac", "1")


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    env.update(AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TERM="xterm", LANCEPILOT_TOKEN=TOKEN)
    return env


@pytest.mark.slow
def test_prepare_shows_encode_progress_on_a_terminal_only(slow_to_encode: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "audiopipe", "prepare", str(slow_to_encode), "--normalize", "--no-cache"]
    code, screen = run_in_pty([*argv, "--out", str(tmp_path / "tty")], cli_env(tmp_path))
    assert code == 0, screen
    bars = re.findall(r"encoding talk\.wav:\s+(\d+)%\|[^|]*\| (\d+)/120 s of audio", screen)
    assert bars, screen
    assert int(bars[-1][0]) > int(bars[0][0])  # it moved
    assert "transcoded  " in screen and "Traceback" not in screen

    piped = subprocess.run([*argv, "--out", str(tmp_path / "pipe")], env=cli_env(tmp_path), capture_output=True,
                           text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert piped.returncode == 0, piped.stderr
    for text in (piped.stderr, piped.stdout):
        assert "encoding" not in text and "\r" not in text and "\x1b" not in text
    assert piped.stderr == "prepared 1 input(s): 0 kept, 0 remuxed, 1 transcoded, 0 trimmed, 0 split, 0 failed\n"


@pytest.mark.slow
def test_send_on_a_terminal_shows_progress_then_one_line(slow_to_encode: Path, tmp_path: Path,
                                                         make_sandbox) -> None:
    sandbox = make_sandbox()
    env = dict(cli_env(tmp_path), LANCEPILOT_BASE_URL=sandbox.url)
    code, screen = run_in_pty([sys.executable, "-m", "audiopipe", "send", str(slow_to_encode), "--normalize",
                               "--no-cache", "-w", WS, "-c", CONTACT], env)
    assert code == 0, screen
    [stored] = sandbox.messages()
    assert re.search(r"encoding talk\.wav:\s+\d+%\|", screen), screen
    last = screen.replace("\r\n", "\n").split("\r")[-1]  # what is left on screen once the bar is cleared
    assert last.strip().endswith(f"sent to {CONTACT}: message {stored['id']}")
    assert f"\n{stored['id']}" not in screen  # a person at a terminal gets the line, not the bare id again
