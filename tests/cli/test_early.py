"""Mistakes caught before the expensive work: `batch` and `send` refuse a wrong set-up (exit 2) or a
refused token (exit 3) before a single file is prepared, and the token check never creates a message.

The CLI runs in process (CliRunner) against the in-process sandbox (real HTTP), and ffmpeg is real but
wrapped by a script that logs every call, so "nothing was prepared" is seen, not assumed: no ffmpeg
call read an input (``-i``), the cache folder stays empty, no work folder, no marker in the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import AUDIOPIPE, clean_environ, invoke

from audiopipe.send.client import LancepilotClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "early-test-token"
SANDBOX_FRESH_DATA = True
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
PEOPLE = ["5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c52"]
MARKER = ".audiopipe-ledger"


@pytest.fixture
def ffmpeg_log(tmp_path: Path) -> Path:
    """Where the wrapped ffmpeg writes one line per call (its arguments)."""
    return tmp_path / "ffmpeg-calls.log"


@pytest.fixture
def run(tmp_path: Path, ffmpeg_log: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    wrapper = tmp_path / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{ffmpeg_log}"\nexec "{shutil.which("ffmpeg")}" "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()

    def go(*args: str, sandbox: Any = None, token: str | None = TOKEN,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        e = clean_environ(HOME=str(home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"),
                          AUDIOPIPE_FFMPEG=str(wrapper), AUDIOPIPE_SETTLE="0",
                          AUDIOPIPE_STATE=str(tmp_path / "state" / "ledger.sqlite3"))
        (tmp_path / "tmp").mkdir(exist_ok=True)
        if token is not None:
            e["LANCEPILOT_TOKEN"] = token
        if sandbox is not None:
            e["LANCEPILOT_BASE_URL"] = sandbox.url
        e.update(env or {})
        proc = invoke(args, env=e)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return go


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "rec"
    f.mkdir()
    for name in ("tone.wav", "tone.flac"):  # both must be converted: ffmpeg would read them
        shutil.copy(audio_dir / name, f / name)
    return f


def contacts(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(text, encoding="utf-8")
    return path


def one_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def nothing_prepared(tmp_path: Path, folder: Path | None, ffmpeg_log: Path) -> None:
    calls = ffmpeg_log.read_text().splitlines() if ffmpeg_log.exists() else []
    assert not [c for c in calls if "-i " in c], f"ffmpeg read an input: {calls}"
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir()), list(cache.rglob("*"))
    assert not list((tmp_path / "tmp").glob("audiopipe-*")), "a work folder was made"
    if folder is not None:
        assert not (folder / MARKER).exists(), "the folder was marked as recorded by a ledger"


# --- set-up mistakes: exit 2 before anything is prepared --------------------------------------------

@pytest.mark.parametrize("case", ["no-workspace", "no-token", "bad-base-url", "no-ffmpeg", "amr", "all-rows-bad"])
def test_batch_refuses_a_wrong_set_up_before_preparing(case: str, tmp_path: Path, folder: Path, run: Any,
                                                        ffmpeg_log: Path, make_sandbox: Any) -> None:
    sb = make_sandbox()
    args = ["batch", str(folder), "--contacts", str(contacts(tmp_path, f"contact,workspace\n{PEOPLE[0]},{WS}\n"))]
    token: str | None = TOKEN
    env: dict[str, str] = {}
    expect = {"no-workspace": "no row has a workspace", "no-token": "no API token",
              "bad-base-url": "base URL", "no-ffmpeg": "AUDIOPIPE_FFMPEG", "amr": "libopencore_amrnb",
              "all-rows-bad": "none of its 2 row(s) can be sent, e.g. line 2"}[case]
    if case == "no-workspace":  # the column is there, every cell empty: once, every row went invalid
        args[3] = str(contacts(tmp_path, f"contact,workspace\n{PEOPLE[0]},\n{PEOPLE[1]},\n"))
    elif case == "all-rows-bad":
        args[3] = str(contacts(tmp_path, f"contact,workspace\nnot-a-uuid,{WS}\nnor-this,{WS}\n"))
    elif case == "no-token":
        token = None
    elif case == "bad-base-url":
        env["LANCEPILOT_BASE_URL"] = "https://user@lancepilot.com/api/v3"
    elif case == "no-ffmpeg":
        env["AUDIOPIPE_FFMPEG"] = str(tmp_path / "no-such-ffmpeg")
    elif case == "amr":  # Debian's ffmpeg cannot encode AMR
        args += ["--format", "amr"]
    proc = run(*args, sandbox=sb, token=token, env=env)
    assert proc.returncode == 2, proc.stderr
    one_error(proc, expect)
    nothing_prepared(tmp_path, folder, ffmpeg_log)
    assert sb.request_count == 0
    assert not (tmp_path / "state").exists(), "no ledger is made for a run refused up front"


@pytest.mark.parametrize("case", ["no-token", "no-ffmpeg", "amr"])
def test_send_refuses_a_wrong_set_up_before_preparing(case: str, tmp_path: Path, audio_dir: Path, run: Any,
                                                       ffmpeg_log: Path, make_sandbox: Any) -> None:
    sb = make_sandbox()
    env = {"AUDIOPIPE_FFMPEG": str(tmp_path / "no-such-ffmpeg")} if case == "no-ffmpeg" else {}
    extra = ["--format", "amr"] if case == "amr" else []
    proc = run("send", str(audio_dir / "tone.wav"), "-w", WS, "-c", PEOPLE[0], *extra, sandbox=sb,
               token=None if case == "no-token" else TOKEN, env=env)
    assert proc.returncode == 2, proc.stderr
    one_error(proc, {"no-token": "no API token", "no-ffmpeg": "AUDIOPIPE_FFMPEG", "amr": "libopencore_amrnb"}[case])
    nothing_prepared(tmp_path, None, ffmpeg_log)
    assert sb.request_count == 0


# --- the token check ---------------------------------------------------------------------------------

def test_the_sandbox_answers_an_empty_request_as_laravel_would(make_sandbox: Any, tmp_path: Path) -> None:
    """Authentication first (401), then the route's models (404), then validation (422)."""
    strict = tmp_path / "strict.csv"
    strict.write_text(f"contact,workspace\n{PEOPLE[0]},{WS}\n")
    sb = make_sandbox(contacts_csv=strict)
    with LancepilotClient(token="wrong", base_url=sb.url) as bad, \
            LancepilotClient(token=TOKEN, base_url=sb.url) as good:
        assert bad.check_token(WS, PEOPLE[1]).status == 401  # an unknown contact, but the token comes first
        refused = bad.check_token(WS, PEOPLE[0])
        assert (refused.accepted, refused.status) == (False, 401)
        assert good.check_token(WS, PEOPLE[1]).status == 404
        ok = good.check_token(WS, PEOPLE[0])
        assert (ok.accepted, ok.status) == (True, 422) and ok.seconds < 5
        assert "422" in ok.detail
    assert sb.messages() == [] and sb.request_count == 4


def test_a_wrong_token_stops_the_batch_before_any_file_is_prepared(tmp_path: Path, folder: Path, run: Any,
                                                                   ffmpeg_log: Path, make_sandbox: Any) -> None:
    sb = make_sandbox()
    csv_path = contacts(tmp_path, f"contact\n{PEOPLE[0]}\n{PEOPLE[1]}\n")
    proc = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--report", str(tmp_path / "r.csv"),
               sandbox=sb, token="not-the-token")
    assert proc.returncode == 3, proc.stderr
    one_error(proc, "refused the token (401", "LANCEPILOT_TOKEN", "nothing was sent")
    nothing_prepared(tmp_path, folder, ffmpeg_log)
    assert sb.request_count == 1 and sb.messages() == []

    done = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, sandbox=sb)
    assert done.returncode == 0, done.stderr
    assert len(sb.messages()) == 4 and sb.request_count == 1 + 1 + 4  # one token check per run


def test_a_signal_during_the_token_check_says_nothing_was_done(tmp_path: Path, folder: Path, ffmpeg_log: Path,
                                                               make_sandbox: Any) -> None:
    import signal
    import time

    from audiopipe.sandbox.app import Faults

    sb = make_sandbox(faults=Faults(latency=30))  # the check hangs: an answer that is slow to come
    env = clean_environ(HOME=str(tmp_path), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"),
                        LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sb.url, AUDIOPIPE_SETTLE="0")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([AUDIOPIPE, "batch", str(folder), "--contacts",
                            str(contacts(tmp_path, f"contact\n{PEOPLE[0]}\n")), "-w", WS, "--quiet",
                            "--state", str(tmp_path / "state" / "ledger.sqlite3")],
                           env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sb.request_count < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    # the batch's summary of what it did (nothing), then the interruption's own line, last
    assert "0 sent" in err and lines[-1].startswith("audiopipe: interrupted by SIGTERM while "), err
    assert "nothing partial was left" in lines[-1] and "nothing was" in lines[-1], err
    nothing_prepared(tmp_path, folder, ffmpeg_log)


def test_no_preflight_skips_the_check_and_finds_out_while_sending(tmp_path: Path, folder: Path, run: Any,
                                                                  make_sandbox: Any) -> None:
    sb = make_sandbox()
    csv_path = contacts(tmp_path, f"contact\n{PEOPLE[0]}\n")
    proc = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--no-preflight", sandbox=sb,
               token="not-the-token")
    assert proc.returncode == 3 and "2 file(s) prepared" in proc.stderr  # the old way: prepared, then 401
    assert sb.messages() == []
    good = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--no-preflight", sandbox=sb)
    assert good.returncode == 0 and len(sb.messages()) == 2
    assert sb.request_count == 1 + 2  # the first 401 stopped the run; no token check in either run


def test_a_dry_run_or_a_settling_folder_costs_no_request(tmp_path: Path, folder: Path, run: Any,
                                                         make_sandbox: Any) -> None:
    sb = make_sandbox()
    csv_path = contacts(tmp_path, f"contact\n{PEOPLE[0]}\n")
    assert run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--dry-run", sandbox=sb).returncode == 0
    waiting = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--settle", "3600", sandbox=sb)
    assert waiting.returncode == 5, waiting.stderr  # every file still "arriving": nothing to prepare
    assert sb.request_count == 0


def test_send_checks_the_token_before_an_encode(tmp_path: Path, audio_dir: Path, run: Any, ffmpeg_log: Path,
                                                make_sandbox: Any) -> None:
    sb = make_sandbox()
    proc = run("send", str(audio_dir / "tone.wav"), "-w", WS, "-c", PEOPLE[0], sandbox=sb, token="not-the-token")
    assert proc.returncode == 3, proc.stderr
    one_error(proc, "refused the token (401", "nothing was sent")
    nothing_prepared(tmp_path, None, ffmpeg_log)
    assert sb.request_count == 1

    ok = run("-v", "send", str(audio_dir / "tone.wav"), "-w", WS, "-c", PEOPLE[0], sandbox=sb)
    assert ok.returncode == 0, ok.stderr
    assert "token checked" in ok.stderr and sb.request_count == 3 and len(sb.messages()) == 1


def test_send_of_a_file_kept_as_it_is_makes_no_token_check(tmp_path: Path, audio_dir: Path, run: Any,
                                                           make_sandbox: Any) -> None:
    sb = make_sandbox()
    proc = run("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", PEOPLE[0], sandbox=sb, token="not-the-token")
    assert proc.returncode == 3 and sb.request_count == 1  # the upload itself met the 401
    ok = run("send", str(audio_dir / "tone.wav"), "-w", WS, "-c", PEOPLE[0], "--no-preflight", sandbox=sb)
    assert ok.returncode == 0 and sb.request_count == 2


def test_send_to_a_contact_that_does_not_exist_stops_before_the_encode(tmp_path: Path, audio_dir: Path, run: Any,
                                                                       ffmpeg_log: Path, make_sandbox: Any) -> None:
    strict = tmp_path / "strict.csv"
    strict.write_text(f"contact,workspace\n{PEOPLE[0]},{WS}\n")
    sb = make_sandbox(contacts_csv=strict)
    proc = run("send", str(audio_dir / "tone.wav"), "-w", WS, "-c", PEOPLE[1], sandbox=sb)
    assert proc.returncode == 1, proc.stderr
    one_error(proc, "not found (404)", "before preparing the file", "not created")
    nothing_prepared(tmp_path, None, ffmpeg_log)


class _AcceptsAnything(BaseHTTPRequestHandler):
    """A server that is not the Lancepilot API: it answers 201 to any POST."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).bodies.append((self.headers.get("Content-Type", ""), body))
        answer = json.dumps({"status": 201, "data": {"id": "made-from-nothing"}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lax_server() -> Iterator[tuple[str, type[_AcceptsAnything]]]:
    handler = type("Handler", (_AcceptsAnything,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v3", handler
    server.shutdown()
    server.server_close()


def test_a_server_that_accepts_an_empty_request_gets_nothing_more(tmp_path: Path, folder: Path, run: Any,
                                                                  ffmpeg_log: Path, lax_server: Any) -> None:
    url, handler = lax_server
    csv_path = contacts(tmp_path, f"contact\n{PEOPLE[0]}\n")
    proc = run("batch", str(folder), "--contacts", str(csv_path), "-w", WS, env={"LANCEPILOT_BASE_URL": url})
    assert proc.returncode == 2, proc.stderr
    one_error(proc, "not the API audiopipe knows", "made-from-nothing", "Nothing more was sent")
    assert handler.bodies == [("application/json", b"{}")]  # the check itself, and no upload after it
    nothing_prepared(tmp_path, folder, ffmpeg_log)


# --- a token pasted with its "Bearer " prefix -----------------------------------------------------------

@pytest.mark.parametrize("pasted", [f"Bearer {TOKEN}", f"  bearer   {TOKEN}\n", f"BEARER\t{TOKEN}"])
@pytest.mark.parametrize("where", ["env", "token-file"])
def test_a_token_pasted_with_bearer_is_understood(pasted: str, where: str, tmp_path: Path, audio_dir: Path,
                                                  run: Any, make_sandbox: Any) -> None:
    sb = make_sandbox()
    token_file = tmp_path / "token"
    token_file.write_text(pasted)
    if where == "env":
        proc = run("-vv", "send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", PEOPLE[0], sandbox=sb, token=pasted)
    else:
        proc = run("-vv", "send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", PEOPLE[0], "--token-file",
                   str(token_file), sandbox=sb, token=None)
    assert proc.returncode == 0, proc.stderr
    assert "begins with 'Bearer '" in proc.stderr and TOKEN not in proc.stderr + proc.stdout
    assert len(sb.messages()) == 1


@pytest.mark.parametrize("pasted, hint", [("Bearer", "only the word 'Bearer'"),
                                          (f"Authorization: Bearer {TOKEN}", "whole 'Authorization:' header")])
def test_a_header_pasted_instead_of_a_token_gets_a_hint(pasted: str, hint: str, tmp_path: Path, audio_dir: Path,
                                                        run: Any, make_sandbox: Any) -> None:
    sb = make_sandbox()
    proc = run("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", PEOPLE[0], sandbox=sb, token=pasted)
    assert proc.returncode == 2
    one_error(proc, hint, "LANCEPILOT_TOKEN")
    assert TOKEN not in proc.stderr and sb.request_count == 0
