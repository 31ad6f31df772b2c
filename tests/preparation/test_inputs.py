"""`probe` takes folders as `prepare` does, and both say how many files they skipped as not audio.
Real files, real ffprobe/ffmpeg, the CLI in process (click's CliRunner)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import clean_environ, invoke

pytestmark = pytest.mark.timeout(120)

SKIPPED = "skipped 3 file(s) that are not audio"


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ(drop=("AUDIOPIPE_", "XDG_"), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path))
    proc = invoke(args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def mixed(tmp_path: Path, audio_dir: Path) -> Path:
    """Two recordings (one in a sub-folder) among three files that are not audio, and a hidden one."""
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(audio_dir / "tone.mp3", folder / "tone.mp3")
    shutil.copy(audio_dir / "tone.wav", folder / "sub" / "tone.wav")
    (folder / "notes.txt").write_text("call back on Monday")
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    (folder / "sub" / "list.csv").write_text("a,b\n")
    (folder / ".DS_Store").write_bytes(bytes(10))  # hidden: neither probed nor counted
    return folder


def test_probe_takes_a_folder_and_counts_what_it_skipped(tmp_path: Path, mixed: Path) -> None:
    proc = cli(tmp_path, "probe", str(mixed))
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [str(mixed / "sub" / "tone.wav"), str(mixed / "tone.mp3")]
    assert proc.stderr.strip().splitlines() == [f"{SKIPPED} (by their names), e.g. {mixed / 'cover.jpg'}"]


def test_probe_json_of_a_folder(tmp_path: Path, mixed: Path, audio_dir: Path) -> None:
    proc = cli(tmp_path, "probe", "--json", str(mixed), str(audio_dir / "voice.opus"))
    assert proc.returncode == 0, proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(o["path"]).name for o in objects] == ["tone.wav", "tone.mp3", "voice.opus"]
    assert all(o["ok"] for o in objects) and SKIPPED in proc.stderr


def test_probe_of_a_folder_without_audio_is_one_usage_error(tmp_path: Path, mixed: Path) -> None:
    for f in (mixed / "tone.mp3", mixed / "sub" / "tone.wav"):
        f.unlink()
    proc = cli(tmp_path, "probe", str(mixed))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{SKIPPED} (by their names), e.g. {mixed / 'cover.jpg'}",
                                        f"audiopipe: error: no audio files found in {mixed}"]


def test_a_file_named_directly_is_still_tried(tmp_path: Path, mixed: Path) -> None:
    proc = cli(tmp_path, "probe", str(mixed / "notes.txt"))
    assert proc.returncode == 1 and "notes.txt" in proc.stderr and "skipped" not in proc.stderr


def test_prepare_says_how_many_files_it_skipped(tmp_path: Path, mixed: Path) -> None:
    out = tmp_path / "out"
    proc = cli(tmp_path, "prepare", str(mixed), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert SKIPPED in proc.stderr and "prepared 2 input(s)" in proc.stderr
    # (the hidden .NAME.audiopipe.json beside each output is the sidecar of what audiopipe wrote)
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")) == \
        ["tone.mp3", "tone.ogg"]
    again = cli(tmp_path, "prepare", str(mixed), "--out", str(mixed / "out"), "--quiet")  # --out inside
    assert SKIPPED in again.stderr, "the prepared outputs are neither inputs nor counted as skipped"
