"""Where the token comes from, and tokens that could never go in a header."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiopipe.errors import AuthError, UsageError
from audiopipe.send.client import LancepilotClient, load_token

TOKEN = "token-test"


def test_a_token_file_given_explicitly_wins_over_the_environment(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    monkeypatch.setenv("LANCEPILOT_TOKEN", "from-env")
    assert load_token(None, f) == ("from-file", f"the token file {f}")
    assert load_token(None, None) == ("from-env", "LANCEPILOT_TOKEN")
    assert load_token("given", f)[0] == "given"


def test_token_file_from_environment(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "tok"
    f.write_text("abc123")
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    monkeypatch.setenv("LANCEPILOT_TOKEN_FILE", str(f))
    token, source = load_token()
    assert token == "abc123" and "LANCEPILOT_TOKEN_FILE" in source


@pytest.mark.parametrize("bad", ["tok\u200bxyz", "tökén", "two words", "tab\there", "emoji\U0001F600"])
def test_tokens_that_cannot_be_a_header_are_refused_up_front(bad: str, monkeypatch) -> None:
    monkeypatch.setenv("LANCEPILOT_TOKEN", bad)
    with pytest.raises(UsageError) as err:
        load_token()
    assert "LANCEPILOT_TOKEN" in str(err.value) and bad not in str(err.value)


def test_empty_token_file_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    f = tmp_path / "empty"
    f.write_text("  \n")
    with pytest.raises(UsageError, match="is empty"):
        load_token(None, f)


def test_401_names_where_the_token_came_from(tmp_path: Path, make_sandbox, audio_dir: Path) -> None:
    sb = make_sandbox()
    f = tmp_path / "wrong-token"
    f.write_text("not-the-token")
    with LancepilotClient(base_url=sb.url, token_file=f) as client, pytest.raises(AuthError) as err:
        client.send_audio("0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01", "5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51",
                          audio_dir / "tone.mp3")
    assert str(f) in str(err.value)
    assert sb.request_count == 1


# ---- token files read bounded: a device, a pipe or a folder never hangs or fills memory

CANARY = "CANARY-0c4f7e2d"
AUDIOPIPE = Path(sys.executable).with_name("audiopipe")


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "token.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.timeout(10)  # a FIFO read the old way waits for a writer forever
@pytest.mark.parametrize("kind, expected", [
    ("device", "not a regular file"),
    ("fifo", "not a regular file"),
    ("folder", "not a regular file"),
    ("too large", "larger than 4 KiB"),
    ("missing", "no such file"),
])
def test_a_token_file_that_is_not_a_small_file_is_one_line(tmp_path: Path, monkeypatch, kind, expected) -> None:
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    if kind == "device":
        path = Path("/dev/zero")  # read the old way: a MemoryError
    elif kind == "fifo":
        path = fifo(tmp_path)
    elif kind == "folder":
        path = tmp_path
    elif kind == "too large":
        path = tmp_path / "big"
        path.write_text(CANARY + "x" * 5000)
    else:
        path = tmp_path / "nope"
    started = time.monotonic()
    with pytest.raises(UsageError) as err:
        load_token(None, path)
    assert time.monotonic() - started < 2
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert CANARY not in message


def test_a_token_file_up_to_the_limit_is_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    f = tmp_path / "tok"
    f.write_text("abc123" + " " * 4089 + "\n")  # 4096 bytes: trailing blanks are stripped
    assert f.stat().st_size == 4096
    assert load_token(None, f)[0] == "abc123"
    link = tmp_path / "link"
    link.symlink_to(f)  # a symlink to a regular file is still a regular file
    assert load_token(None, link)[0] == "abc123"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["device", "fifo", "env-fifo"])
def test_cli_token_file_device_or_fifo_exits_2_at_once(tmp_path: Path, audio_dir: Path, kind: str) -> None:
    if not AUDIOPIPE.exists():
        pytest.skip(f"{AUDIOPIPE} is not installed")
    path = "/dev/zero" if kind == "device" else str(fifo(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    env.update(LANCEPILOT_BASE_URL="http://127.0.0.1:9/api/v3", AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"))
    args = [str(AUDIOPIPE), "send", str(audio_dir / "tone.mp3"), "-w", "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01",
            "-c", "5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51"]
    if kind == "env-fifo":
        env["LANCEPILOT_TOKEN_FILE"] = path
    else:
        args += ["--token-file", path]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert "not a regular file" in line and path in line
