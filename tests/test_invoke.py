"""helpers.invoke, the in-process CLI most CLI tests run through: it must answer as a subprocess would
and leave nothing of the call behind in the test process (later tests run in the same one)."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from pathlib import Path

import click
import pytest
from helpers import clean_environ, invoke

from audiopipe.cli import cli


def test_exit_codes_and_streams_are_a_subprocess_s(audio_dir: Path) -> None:
    done = invoke(["probe", "--json", str(audio_dir / "tone.mp3")])
    assert done.returncode == 0 and json.loads(done.stdout)["container"] == "mp3" and done.args[0] == "probe"
    wrong = invoke(["probe", "--no-such-flag"])
    assert wrong.returncode == 2 and "No such option" in wrong.stderr and wrong.stdout == ""
    raw = invoke(["--help"], text=False)
    assert isinstance(raw.stdout, bytes) and b"Usage: audiopipe" in raw.stdout


def test_the_call_s_environment_folder_and_temp_folder_are_its_own(tmp_path: Path, audio_dir: Path) -> None:
    before, cwd, temp = dict(os.environ), os.getcwd(), tempfile.gettempdir()
    (tmp_path / "tmp").mkdir()
    env = clean_environ(TMPDIR=str(tmp_path / "tmp"), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"),
                        AUDIOPIPE_ONLY_IN_THE_CALL="1")
    done = invoke(["prepare", str(audio_dir / "tone.wav"), "--out", "out", "--quiet"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "tone.ogg").is_file()  # --out taken from the call's working folder
    assert any((tmp_path / "cache").iterdir())  # the call's own environment
    assert dict(os.environ) == before and os.getcwd() == cwd and tempfile.gettempdir() == temp


def test_logging_and_signal_handlers_are_put_back(audio_dir: Path) -> None:
    logger = logging.getLogger("audiopipe")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    done = invoke(["-vv", "probe", str(audio_dir / "tone.mp3")])  # -vv sets up logging
    assert done.returncode == 0 and "DEBUG audiopipe.runner: run: " in done.stderr
    assert (logger.handlers, logger.level, logger.propagate) == (handlers, level, propagate)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (sigint, sigterm)


def test_a_level_a_test_left_below_audiopipe_does_not_leak_into_the_call(audio_dir: Path) -> None:
    below = logging.getLogger("audiopipe.runner")
    below.setLevel(logging.DEBUG)  # as a test of the library might
    try:
        done = invoke(["probe", str(audio_dir / "tone.mp3")])  # no -v: warnings only
        assert done.returncode == 0 and "run: " not in done.stderr, done.stderr
        assert below.level == logging.DEBUG
    finally:
        below.setLevel(logging.NOTSET)


def test_an_exception_the_cli_lets_through_is_a_traceback_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: click.Group, ctx: click.Context) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(type(cli), "invoke", broken)
    done = invoke(["doctor"])
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: a bug" in done.stderr
