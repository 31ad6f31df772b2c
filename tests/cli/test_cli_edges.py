"""What a new user runs into: settings that cannot work, set-up errors, and friendly batch output.

Each case: one line on stderr, no traceback, the documented exit code."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import invoke

from audiopipe.errors import UsageError
from audiopipe.preparation.settings import PrepareSettings

TOKEN = "edge-token"
SANDBOX_RESTARTS = True
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
PEOPLE = ["5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c52",
          "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e53"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = invoke(args, env=dict(os.environ, **(env or {})), cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("kw, words, field", [
    ({"max_size": 20_000_000}, "over the server's limit", "max_size"),
    ({"voice_note": True, "format": "mp3"}, "^voice_note makes .* drop format mp3$", "voice_note"),
    ({"bitrate": 1000}, "^bitrate 1k", "bitrate"),
    ({"bitrate": 10_000_000}, "^bitrate", "bitrate"),
    ({"max_size": 10}, "^max_size 10", "max_size"),
])
def test_settings_that_cannot_work_are_refused(kw: dict, words: str, field: str) -> None:
    with pytest.raises(UsageError, match=words) as err:
        PrepareSettings(**kw)
    assert err.value.field == field


def test_max_size_at_the_server_limit_is_fine() -> None:
    assert PrepareSettings(max_size=16_777_216).max_size == 16_777_216


def test_bad_ffmpeg_timeout_is_a_usage_error(tmp_path: Path, audio_dir: Path) -> None:
    proc = cli("prepare", str(audio_dir / "tone.wav"), "--out", str(tmp_path), "--no-cache",
               env={"AUDIOPIPE_FFMPEG_TIMEOUT": "abc"})
    assert proc.returncode == 2 and "AUDIOPIPE_FFMPEG_TIMEOUT" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


def test_missing_ffmpeg_stops_at_once_with_exit_2(tmp_path: Path, audio_dir: Path) -> None:
    proc = cli("prepare", str(audio_dir / "tone.wav"), str(audio_dir / "tone.flac"), "--out", str(tmp_path),
               "--no-cache", env={"AUDIOPIPE_FFMPEG": "/nonexistent/ffmpeg"})
    assert proc.returncode == 2
    assert proc.stderr.count("AUDIOPIPE_FFMPEG") == 1  # one line for the set-up, not one per file


def test_output_folder_inside_the_input_folder_is_not_read_back(tmp_path: Path, audio_dir: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    shutil.copy(audio_dir / "tone.wav", rec / "tone.wav")
    for _ in range(2):
        proc = cli("prepare", str(rec), "--out", str(rec / "ready"), "--no-cache", "--json")
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.strip().splitlines()) == 1
    assert sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file()) == [
        "ready/.tone.audiopipe.json", "ready/tone.ogg", "tone.wav"]  # the sidecar is not read back either


@pytest.mark.parametrize("args, words", [
    ((), "give an INPUT file to upload, or --url"),
    (("--url", "notaurl"), "must be an http(s) URL"),
])
def test_send_argument_errors_say_what_to_do(args: tuple[str, ...], words: str) -> None:
    proc = cli("send", "-w", WS, "-c", PEOPLE[0], *args, env={"LANCEPILOT_TOKEN": TOKEN})
    assert proc.returncode == 2 and words in proc.stderr


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _batch(folder: Path, contacts: Path, state: Path, sb, token: str = TOKEN, *extra: str):
    return cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state", str(state), "--rate", "0",
               *extra, env={"LANCEPILOT_BASE_URL": sb.url, "LANCEPILOT_TOKEN": token,
                            "AUDIOPIPE_CACHE_DIR": str(state.parent / "cache")})


def test_a_401_is_one_line_not_one_per_row(tmp_path: Path, audio_dir: Path, make_sandbox) -> None:
    sb = make_sandbox()
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.mp3", folder / "a.mp3")
    contacts = _csv(tmp_path / "c.csv", "contact", PEOPLE)
    # the 401 met while sending: the token check (tests/cli/test_early.py) would find it before
    proc = _batch(folder, contacts, tmp_path / "s" / "l.sqlite3", sb, "wrong-token", "--concurrency", "1",
                  "--no-preflight")
    assert proc.returncode == 3
    assert proc.stderr.count("not_sent") == 1 and "because the run stopped" in proc.stderr


def test_identical_files_say_so_and_csv_columns_named_like_ours_are_kept(tmp_path: Path, audio_dir: Path,
                                                                          make_sandbox) -> None:
    sb = make_sandbox()
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.mp3", folder / "a.mp3")
    shutil.copy(audio_dir / "tone.mp3", folder / "b.mp3")
    contacts = _csv(tmp_path / "c.csv", "contact,status,error", [f"{PEOPLE[0]},vip,none"])
    report = tmp_path / "r.csv"
    proc = _batch(folder, contacts, tmp_path / "s" / "l.sqlite3", sb, TOKEN, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert sorted(r["status"] for r in rows) == ["already_sent", "sent"]
    twin = next(r for r in rows if r["status"] == "already_sent")
    assert "same content as" in twin["error"]
    assert all(r["csv_status"] == "vip" and r["csv_error"] == "none" for r in rows)
    assert len(sb.messages()) == 1


def test_a_dry_run_creates_no_ledger(tmp_path: Path, audio_dir: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.mp3", folder / "a.mp3")
    contacts = _csv(tmp_path / "c.csv", "contact", PEOPLE[:1])
    state = tmp_path / "s" / "l.sqlite3"
    proc = cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state", str(state), "--dry-run",
               env={"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "would send 1" in proc.stderr
    assert not state.exists()


def test_cache_command_shows_and_clears(tmp_path: Path, audio_dir: Path) -> None:
    env = {"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache")}
    assert "0 cached result(s)" in cli("cache", env=env).stdout
    assert cli("prepare", str(audio_dir / "tone.wav"), "--out", str(tmp_path / "o"), env=env).returncode == 0
    shown = cli("cache", env=env).stdout
    assert "1 cached result(s)" in shown and "0 B" not in shown
    assert "removed 1" in cli("cache", "--clear", env=env).stdout
    assert "0 cached result(s)" in cli("cache", env=env).stdout
