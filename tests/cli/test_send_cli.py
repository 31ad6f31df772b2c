"""``audiopipe send`` as a user runs it (in process; the first test starts the installed console script),
against the in-process sandbox, checking exit codes (cron acts on them), stdout and stderr."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import AUDIOPIPE, clean_environ, invoke

from audiopipe.sandbox.app import Faults

pytestmark = pytest.mark.timeout(60)

TOKEN = "cli-test-token"
SANDBOX_FRESH_DATA = True
CANARY = "CANARY-7f3e9b2a"
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"


@pytest.fixture
def send(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``audiopipe [global] send ARGS`` with the API settings in the environment: in process, or
    (``installed=True``) the installed console script in a subprocess."""

    def run(*args: str, base_url: str, token: str = TOKEN, global_args: tuple[str, ...] = (),
            timeout: float = 60, installed: bool = False) -> subprocess.CompletedProcess[str]:
        env = clean_environ(drop=("LANCEPILOT_", "AUDIOPIPE_"), LANCEPILOT_BASE_URL=base_url, LANCEPILOT_TOKEN=token,
                            AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"))
        argv = [*global_args, "send", *args]
        if not installed:
            return invoke(argv, env=env)
        if not Path(AUDIOPIPE).exists():
            pytest.skip(f"{AUDIOPIPE} is not installed (pip install -e .)")
        return subprocess.run([AUDIOPIPE, *argv], env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    return run


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failure prints on stderr."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("audiopipe: error: ")
    return lines[0]


def test_sends_a_file_and_prints_the_id(make_sandbox, send, audio_dir):
    sandbox = make_sandbox()
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url, installed=True)

    assert done.returncode == 0, done.stderr
    no_traceback(done)
    [stored] = sandbox.messages()
    assert done.stdout.strip() == stored["id"]
    assert stored["file_name"] == "tone.mp3" and stored["mime"] == "audio/mpeg"
    assert stored["size"] == (audio_dir / "tone.mp3").stat().st_size  # kept as it is
    assert sandbox.request_count == 1


def test_wav_is_prepared_to_ogg_opus_first(make_sandbox, send, audio_dir):
    sandbox = make_sandbox()
    done = send(str(audio_dir / "tone.wav"), "-w", WS, "-c", CONTACT, base_url=sandbox.url)

    assert done.returncode == 0, done.stderr
    no_traceback(done)
    [stored] = sandbox.messages()
    assert done.stdout.strip() == stored["id"]
    assert stored["mime"] == "audio/ogg"
    assert stored["file_name"].endswith(".ogg")
    assert stored["size"] < (audio_dir / "tone.wav").stat().st_size / 4
    assert Path(stored["file_path"]).read_bytes()[:4] == b"OggS"


def test_url_is_sent_by_reference(make_sandbox, send, audio_dir):
    from http_folder import serve_folder

    sandbox = make_sandbox()
    with serve_folder(audio_dir) as served:  # the sandbox fetches the URL, as the API does
        done = send("-w", WS, "-c", CONTACT, "--url", f"{served.url}/tone.mp3", base_url=sandbox.url)
        assert served.gets == {"/tone.mp3": 1}

    assert done.returncode == 0, done.stderr
    no_traceback(done)
    [stored] = sandbox.messages()
    assert stored["url"] == f"{served.url}/tone.mp3"
    assert stored["size"] == (audio_dir / "tone.mp3").stat().st_size
    assert done.stdout.strip() == stored["id"]


def test_json_prints_the_created_data(make_sandbox, send, audio_dir):
    sandbox = make_sandbox()
    done = send(str(audio_dir / "voice.opus"), "-w", WS, "-c", CONTACT, "--json", base_url=sandbox.url)

    assert done.returncode == 0, done.stderr
    no_traceback(done)
    [data] = json.loads(done.stdout)
    [stored] = sandbox.messages()
    assert data["id"] == stored["id"]
    assert data["sha256"] == stored["sha256"] and data["mime"] == "audio/ogg"
    assert (data["workspace_id"], data["contact_id"]) == (WS, CONTACT)


def test_unknown_contact_in_strict_mode_exits_1(make_sandbox, send, audio_dir, tmp_path):
    csv_path = tmp_path / "contacts.csv"
    csv_path.write_text(f"contact\n{CONTACT}\n", encoding="utf-8")
    sandbox = make_sandbox(contacts_csv=csv_path)
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", str(uuid.uuid4()), base_url=sandbox.url)

    assert done.returncode == 1
    no_traceback(done)
    line = error_line(done)
    assert "404" in line and "not created" in line
    assert sandbox.messages() == [] and sandbox.request_count == 1


def test_422_exits_1_with_the_servers_reason(make_sandbox, send, audio_dir):
    sandbox = make_sandbox(php_upload_limit=1000)
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url)

    assert done.returncode == 1
    no_traceback(done)
    line = error_line(done)
    assert "422" in line and "The file failed to upload." in line
    assert sandbox.messages() == [] and sandbox.request_count == 1


@pytest.mark.parametrize("flag, value", [("-w", "not-a-uuid"), ("-c", "12345")])
def test_bad_uuid_exits_2_before_any_request(make_sandbox, send, audio_dir, flag, value):
    sandbox = make_sandbox()
    args = {"-w": WS, "-c": CONTACT, flag: value}
    done = send(str(audio_dir / "tone.mp3"), "-w", args["-w"], "-c", args["-c"], base_url=sandbox.url)

    assert done.returncode == 2
    no_traceback(done)
    assert "is not a UUID" in error_line(done) and value in done.stderr
    assert done.stdout == ""
    assert sandbox.request_count == 0


def test_wrong_token_exits_3(make_sandbox, send, audio_dir):
    sandbox = make_sandbox()
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url, token="wrong-token")

    assert done.returncode == 3
    no_traceback(done)
    assert "401" in error_line(done)
    assert sandbox.request_count == 1 and sandbox.messages() == []


def test_server_error_exits_4_and_says_it_may_have_been_delivered(make_sandbox, send, audio_dir):
    sandbox = make_sandbox(faults=Faults(rate_500=1.0))
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url)

    assert done.returncode == 4
    no_traceback(done)
    line = error_line(done)
    assert "500" in line and "MAY have been delivered" in line
    assert sandbox.request_count == 1  # never resent


def test_lost_answer_exits_4_and_the_message_exists(make_sandbox, send, audio_dir):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="drop"))
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url)

    assert done.returncode == 4
    no_traceback(done)
    assert "MAY have been delivered" in error_line(done)
    assert sandbox.request_count == 1 and len(sandbox.messages()) == 1


def test_nothing_listening_exits_5_after_the_retries(send, audio_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --retries keeps this fast: the default (4 retries, backoff from 0.5 s) takes 4-8 s.
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, "--connect-timeout", "0.5",
                "--retries", "1", base_url=f"http://127.0.0.1:{port}/api/v3")

    assert done.returncode == 5
    no_traceback(done)
    line = error_line(done)
    assert "after 2 attempts" in line and "not created" in line
    assert done.stdout == ""


@pytest.mark.parametrize("case, sandbox_settings, expected", [
    ("401", {}, 3),                                                          # expects TOKEN, gets the canary
    ("422", {"token": CANARY, "php_upload_limit": 1000}, 1),
    ("unknown", {"token": CANARY, "faults": Faults(rate_lost=1.0, lost_mode="502")}, 4),
])
def test_debug_output_never_shows_the_token(make_sandbox, send, audio_dir, case, sandbox_settings, expected):
    sandbox = make_sandbox(**sandbox_settings)
    done = send(str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=sandbox.url, token=CANARY,
                global_args=("--debug",))

    assert done.returncode == expected, done.stderr
    assert sandbox.request_count == 1  # the canary did go out
    assert "DEBUG audiopipe.send.client: POST http://127.0.0.1" in done.stderr  # debug logging was on
    assert "Traceback" in done.stderr  # --debug shows it; it must not carry the token either
    assert CANARY not in done.stdout + done.stderr
    assert CANARY.split("-")[1] not in done.stdout + done.stderr
