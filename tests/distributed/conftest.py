"""Fixtures of the planner and prepare-job tests: a folder of real recordings, long generated ones, and an
ffmpeg that notes each run it starts and each it completes (a wrapper around the real one)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from prepare_helpers import FFmpegLog


@pytest.fixture
def ffmpeg_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FFmpegLog:
    """AUDIOPIPE_FFMPEG -> a wrapper that notes each run before and after the real ffmpeg. The real one
    dies with the wrapper (setpriv --pdeathsig), as audiopipe's own children die with it."""
    log = tmp_path / "ffmpeg.log"
    wrapper = tmp_path / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "start $$ $*" >> "{log}"\n'
                       f'setpriv --pdeathsig KILL "{shutil.which("ffmpeg")}" "$@"\nrc=$?\n'
                       f'echo "done $$ $rc $*" >> "{log}"\nexit $rc\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(wrapper))
    return FFmpegLog(log)


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "rec"
    f.mkdir()
    for name in ("tone.wav", "tone.mp3", "voice.opus"):
        shutil.copy(audio_dir / name, f / name)
    return f


@pytest.fixture
def long_wav(tmp_path: Path) -> Callable[[Path, float], Path]:
    """Makes a mono 16 kHz tone of ``seconds`` (10 minutes take ffmpeg a few seconds to encode)."""
    def make(dest: Path, seconds: float) -> Path:
        subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"sine=frequency=300:sample_rate=16000:duration={seconds}", "-ac", "1", str(dest)],
                       check=True, timeout=60)
        return dest
    return make
