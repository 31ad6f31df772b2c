"""Never destroy or replace a user's file (issue 7, section 1).

An output never replaces an input (same path, hard link, symlink), the contacts CSV or the ledger:
the run is refused up front (OutputClash, exit 2). A file audiopipe did not write for the same input
and settings is left byte for byte and that input fails, unless --overwrite. A rerun into the same
--out reuses its own outputs without running ffmpeg. Real ffmpeg on real files in tmp_path; every
case checks the inputs' bytes afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import CONTACT, WS, files_in, invoke, settings

from audiopipe.campaign.report import check_report_path, write_report
from audiopipe.errors import OutputClash, OutputError
from audiopipe.preparation.cache import Cache
from audiopipe.preparation.inputs import collect_inputs
from audiopipe.preparation.outputs import Protected, place, stage
from audiopipe.preparation.pipeline import prepare_file, prepare_many
from audiopipe.preparation.settings import PrepareSettings

REAL_FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
TOKEN = "outputs-token"
UNRELATED = b"my own notes, not audio\n"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(*paths: Path) -> dict[Path, str]:
    return {p: sha(p) for p in paths}


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    e.update(AUDIOPIPE_SETTLE="0", **(env or {}))
    proc = invoke(args, env=e, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [x for x in proc.stderr.splitlines() if x.startswith("audiopipe: error:")]


def no_temp_files(folder: Path) -> bool:
    return not [f for f in files_in(folder) if f.endswith(".part")]


@pytest.fixture
def rec(tmp_path: Path, audio_dir: Path) -> Path:
    """A folder of recordings: an Ogg/Vorbis (converted to Ogg/Opus: same name), a WAV, an MP3
    (kept byte for byte: same name)."""
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(audio_dir / "vorbis.ogg", folder / "talk.ogg")
    shutil.copy(audio_dir / "tone.wav", folder / "tone.wav")
    shutil.copy(audio_dir / "tone.mp3", folder / "song.mp3")
    return folder


@pytest.fixture(scope="module")
def long_ogg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of Ogg/Vorbis: at --max-size 8KB even Opus's floor cannot hold it (trim or split)."""
    dest = tmp_path_factory.mktemp("gen") / "long.ogg"
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=12:r=16000",
                    "-c:a", "libvorbis", "-q:a", "0", str(dest)], check=True, timeout=60)
    return dest


# --- an output never replaces an input -----------------------------------------------------------

@pytest.mark.parametrize("name, extra", [
    ("talk.ogg", ()),                                   # Vorbis -> Opus: a lossy replacement
    ("song.mp3", ()),                                   # kept byte for byte, onto itself
    ("talk.ogg", ("--max-size", "8KB")),                # and trimmed (the 10-minute recording case)
])
def test_out_equal_to_the_inputs_folder_is_refused_up_front(rec: Path, tmp_path: Path, long_ogg: Path,
                                                            name: str, extra: tuple[str, ...]) -> None:
    if extra:
        shutil.copy(long_ogg, rec / name)
    before = hashes(*rec.iterdir())
    proc = cli("prepare", name, "tone.wav", "--out", ".", *extra,
               env={"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache")}, cwd=rec)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert f"refusing to write {name}" in line and f"the input {name}" in line and "--out" in line
    assert hashes(*rec.iterdir()) == before  # nothing replaced, nothing added (not even tone.ogg)
    assert not (rec / "tone.ogg").exists()


def test_out_equal_to_the_inputs_folder_is_fine_when_nothing_clashes(rec: Path, tmp_path: Path) -> None:
    before = hashes(*rec.iterdir())
    proc = cli("prepare", "tone.wav", "--out", ".", env={"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache")},
               cwd=rec)
    assert proc.returncode == 0, proc.stderr
    assert (rec / "tone.ogg").is_file()
    assert all(sha(p) == h for p, h in before.items())


def test_out_that_is_an_input_folder_says_so(rec: Path, tmp_path: Path) -> None:
    before = hashes(*rec.iterdir())
    proc = cli("prepare", str(rec), "--out", str(rec), "--no-cache")
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert "is the input folder" in line and "ready" in line
    assert hashes(*rec.iterdir()) == before


def test_a_hard_link_to_an_input_is_refused(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.link(rec / "talk.ogg", out / "talk.ogg")
    before = hashes(*rec.iterdir())
    with pytest.raises(OutputClash, match="the input"):
        prepare_file(rec / "talk.ogg", out, settings(tmp_path))
    assert hashes(*rec.iterdir()) == before
    assert os.path.samefile(out / "talk.ogg", rec / "talk.ogg")  # the link itself is left as it was


def test_a_hard_link_to_another_input_of_the_run_is_refused_before_any_work(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.link(rec / "talk.ogg", out / "tone.ogg")  # tone.wav's output name is (a link to) talk.ogg
    before = hashes(*rec.iterdir())
    with pytest.raises(OutputClash, match=r"talk\.ogg"):
        prepare_many([rec / "song.mp3", rec / "tone.wav", rec / "talk.ogg"], out, settings(tmp_path))
    assert hashes(*rec.iterdir()) == before
    assert sorted(os.listdir(out)) == ["tone.ogg"]  # song.mp3, first in line, was not prepared either


def test_a_symlink_to_an_input_is_refused(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "talk.ogg").symlink_to(rec / "talk.ogg")
    before = hashes(*rec.iterdir())
    proc = cli("prepare", str(rec / "talk.ogg"), "--out", str(out), "--overwrite", "--no-cache")
    assert proc.returncode == 2  # even --overwrite never replaces an input
    assert len(error_lines(proc)) == 1 and "refusing to write" in proc.stderr
    assert hashes(*rec.iterdir()) == before
    assert (out / "talk.ogg").is_symlink()


def test_a_split_part_name_that_is_an_input_is_refused(long_ogg: Path, tmp_path: Path) -> None:
    s = settings(tmp_path, max_size=8000, on_overflow="split")
    parts = len(prepare_file(long_ogg, tmp_path / "probe", s).outputs)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(long_ogg, folder / "talk.oga")
    other = folder / f"talk.part1of{parts}.ogg"  # another recording that happens to be named so
    shutil.copy(long_ogg, other)
    other.write_bytes(other.read_bytes() + b"\0")
    before = hashes(*folder.iterdir())
    with pytest.raises(OutputClash, match=other.name):
        prepare_many([folder / "talk.oga", other], folder, s)
    with pytest.raises(OutputClash, match=other.name):
        prepare_file(folder / "talk.oga", folder, s, protect=[other])
    assert hashes(*folder.iterdir()) == before


def test_the_library_protects_python_callers_too(rec: Path, tmp_path: Path) -> None:
    from audiopipe.preparation.segment import prepare

    before = hashes(*rec.iterdir())
    with pytest.raises(OutputClash):
        prepare(rec / "talk.ogg", rec, settings(tmp_path))
    with pytest.raises(OutputClash, match="the contacts"):  # a file the caller names as protected
        prepare_file(rec / "tone.wav", tmp_path, settings(tmp_path),
                     name="contacts", protect=Protected([(_contacts_ogg(tmp_path), "the contacts")]))
    assert hashes(*rec.iterdir()) == before


def _contacts_ogg(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.ogg"
    path.write_bytes(UNRELATED)
    return path


# --- a file audiopipe did not write is left alone, unless --overwrite ------------------------------

def test_an_unrelated_file_is_left_alone_and_reported_the_others_go_on(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tone.ogg").write_bytes(UNRELATED)
    before = hashes(*rec.iterdir())
    env = {"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache")}
    proc = cli("prepare", str(rec / "tone.wav"), str(rec / "talk.ogg"), "--out", str(out), env=env)
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert str(out / "tone.ogg") in line and "audiopipe did not write it" in line and "--overwrite" in line
    assert (out / "tone.ogg").read_bytes() == UNRELATED
    assert (out / "talk.ogg").is_file()  # the other input went on
    assert no_temp_files(out)

    proc = cli("prepare", str(rec / "tone.wav"), str(rec / "talk.ogg"), "--out", str(out), "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tone.ogg").read_bytes()[:4] == b"OggS"
    assert hashes(*rec.iterdir()) == before


def test_a_cache_hit_does_not_write_over_an_unrelated_file(rec: Path, tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = prepare_file(rec / "tone.wav", tmp_path / "one", s)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "tone.ogg").write_bytes(UNRELATED)
    with pytest.raises(OutputError, match="did not write it"):
        prepare_file(rec / "tone.wav", tmp_path / "two", s)
    assert (tmp_path / "two" / "tone.ogg").read_bytes() == UNRELATED
    again = prepare_file(rec / "tone.wav", tmp_path / "two", s, overwrite=True)
    assert again.cached and sha(again.outputs[0].path) == sha(first.outputs[0].path)


def test_an_unrelated_file_at_a_split_parts_name_stops_that_input_before_part_1(long_ogg: Path,
                                                                                  tmp_path: Path) -> None:
    s = settings(tmp_path, max_size=8000, on_overflow="split", cache=False)
    probe_run = prepare_file(long_ogg, tmp_path / "probe", s)
    parts = len(probe_run.outputs)
    assert parts >= 2
    out = tmp_path / "out"
    out.mkdir()
    last = out / f"long.part{parts}of{parts}.ogg"
    last.write_bytes(UNRELATED)
    with pytest.raises(OutputError, match=f"part{parts}of{parts}"):
        prepare_file(long_ogg, out, s)
    assert files_in(out) == [last.name] and last.read_bytes() == UNRELATED  # no part 1 left behind


def test_a_folder_at_the_output_name_is_one_clear_line(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "tone.ogg").mkdir(parents=True)
    (out / "tone.ogg" / "keep.txt").write_bytes(UNRELATED)
    before = hashes(*rec.iterdir())
    for flag in ((), ("--overwrite",)):
        proc = cli("prepare", str(rec / "tone.wav"), str(rec / "song.mp3"), "--out", str(out), "--no-cache", *flag)
        assert proc.returncode == 1
        [line] = error_lines(proc)
        assert str(out / "tone.ogg") in line and "is a folder" in line
        assert (out / "tone.ogg" / "keep.txt").read_bytes() == UNRELATED
        assert (out / "song.mp3").is_file()
    assert hashes(*rec.iterdir()) == before


def test_a_pydub_segment_does_not_replace_a_file_named_segment(tmp_path: Path) -> None:
    from pydub import AudioSegment
    from pydub.generators import Sine

    from audiopipe.preparation.segment import prepare

    seg: AudioSegment = Sine(440).to_audio_segment(duration=1000)
    (tmp_path / "segment.ogg").write_bytes(UNRELATED)
    with pytest.raises(OutputError, match=r"segment\.ogg"):
        prepare(seg, tmp_path, settings(tmp_path))
    assert (tmp_path / "segment.ogg").read_bytes() == UNRELATED
    result = prepare(seg, tmp_path, settings(tmp_path), overwrite=True)
    assert result.outputs[0].path.read_bytes()[:4] == b"OggS"
    assert prepare(seg, tmp_path, settings(tmp_path)).reused  # the same audio again: ours, reused


def test_placing_never_replaces_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    dest = tmp_path / "tone.ogg"
    staged = stage(dest)
    staged.write_bytes(b"new")
    dest.write_bytes(UNRELATED)  # another run got there between the check and the rename
    with pytest.raises(OutputError, match="appeared"):
        place(staged, dest, replace=False)
    assert dest.read_bytes() == UNRELATED and not staged.exists()


# --- a rerun recognises its own outputs ------------------------------------------------------------

@pytest.mark.parametrize("cache", [True, False])
def test_rerun_reuses_its_own_outputs_without_ffmpeg(rec: Path, tmp_path: Path, long_ogg: Path,
                                                     monkeypatch: pytest.MonkeyPatch, cache: bool) -> None:
    shutil.copy(long_ogg, rec / "long.ogg")
    s = settings(tmp_path, max_size=8000, on_overflow="split", cache=cache)
    out = tmp_path / "out"
    items = collect_inputs([rec])
    first = prepare_many(items, out, s)
    assert all(o.ok for o in first)
    before = {f: (out / f).stat() for f in files_in(out)}
    assert any(".part1of" in f for f in before)
    inputs = hashes(*rec.iterdir())

    Cache(tmp_path / "cache").clear()  # the sidecars, not the cache, recognise the outputs
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(tmp_path / "no-ffmpeg"))
    monkeypatch.setenv("AUDIOPIPE_FFPROBE", str(tmp_path / "no-ffprobe"))
    second = prepare_many(items, out, s)  # any ffmpeg or ffprobe run would fail: ToolMissingError
    assert all(o.ok and o.result and o.result.reused for o in second)
    for a, b in zip(first, second, strict=True):
        assert a.result and b.result
        assert a.result.action == b.result.action and a.result.outputs == b.result.outputs
    after = {f: (out / f).stat() for f in files_in(out)}
    assert {f: (st.st_ino, st.st_mtime_ns) for f, st in after.items()} == \
           {f: (st.st_ino, st.st_mtime_ns) for f, st in before.items()}  # not even rewritten
    assert hashes(*rec.iterdir()) == inputs


def test_rerun_from_the_command_line_is_cheap_and_says_so(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("prepare", str(rec), "--out", str(out), "--no-cache")
    assert cli(*args).returncode == 0
    mtimes = {f: (out / f).stat().st_mtime_ns for f in files_in(out)}
    # ffmpeg and ffprobe that log every call: the up-front tool check may ask for versions and
    # encoders, but no file may be opened (-i) or probed on a rerun
    log = tmp_path / "calls.log"
    wrappers = {}
    for tool in ("ffmpeg", "ffprobe"):
        w = tmp_path / f"logging-{tool}"
        w.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {shutil.which(tool)} "$@"\n')
        w.chmod(0o755)
        wrappers[f"AUDIOPIPE_{tool.upper()}"] = str(w)
    proc = cli(*args, env=wrappers)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    assert not [c for c in calls if str(rec) in c], calls
    assert proc.stdout.count("(already there)") == 3
    assert {f: (out / f).stat().st_mtime_ns for f in files_in(out)} == mtimes


def test_other_settings_another_recording_or_an_edited_output_are_not_ours(rec: Path, tmp_path: Path,
                                                                             audio_dir: Path) -> None:
    out = tmp_path / "out"
    s = settings(tmp_path)
    made = prepare_file(rec / "tone.wav", out, s).outputs[0].path
    ours = sha(made)
    with pytest.raises(OutputError, match="did not write it"):
        prepare_file(rec / "tone.wav", out, settings(tmp_path, bitrate=32000))
    original = (rec / "tone.wav").read_bytes()
    shutil.copy(audio_dir / "mulaw.wav", rec / "tone.wav")  # re-recorded: out/tone.ogg is the old one
    with pytest.raises(OutputError, match="did not write it"):
        prepare_file(rec / "tone.wav", out, s)
    assert sha(made) == ours
    (rec / "tone.wav").write_bytes(original)
    with open(made, "ab") as f:
        f.write(b"edited by hand")
    edited = sha(made)
    with pytest.raises(OutputError, match="did not write it"):
        prepare_file(rec / "tone.wav", out, s)
    assert sha(made) == edited
    assert not prepare_file(rec / "tone.wav", out, s, overwrite=True).reused
    assert sha(made) == ours


# --- the batch report ------------------------------------------------------------------------------

def _batch(folder: Path, contacts: Path, tmp_path: Path, *args: str, url: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {"AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path), "LANCEPILOT_TOKEN": TOKEN}
    if url:
        env["LANCEPILOT_BASE_URL"] = url
    return cli("batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state",
               str(tmp_path / "state" / "ledger.sqlite3"), "--rate", "0", *args, env=env)


@pytest.fixture
def contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(f"contact\n{CONTACT}\n", encoding="utf-8")
    return path


def test_report_equal_to_contacts_is_refused_before_anything_is_sent(rec: Path, contacts: Path, tmp_path: Path,
                                                                     make_sandbox) -> None:
    sb = make_sandbox()
    before = hashes(contacts, *rec.iterdir())
    proc = _batch(rec, contacts, tmp_path, "--report", str(contacts), url=sb.url)
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert "the contacts CSV" in line and "--report" in line
    assert hashes(contacts, *rec.iterdir()) == before
    assert sb.messages() == []

    assert _batch(rec, contacts, tmp_path, url=sb.url).returncode == 0
    marker = rec / ".audiopipe-ledger"  # the note of which ledger sent this folder
    kept = sha(marker)
    proc = _batch(rec, contacts, tmp_path, "--report", str(marker), "--overwrite", url=sb.url)
    assert proc.returncode == 2 and "refusing to write" in error_lines(proc)[0]
    assert sha(marker) == kept and len(sb.messages()) == 3


@pytest.mark.parametrize("target", ["audio", "csv-symlink", "csv-hardlink", "ledger"])
def test_report_onto_a_recording_a_link_to_the_csv_or_the_ledger_is_refused(rec: Path, contacts: Path,
                                                                             tmp_path: Path, target: str) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite3"
    if target == "audio":
        report = rec / "song.mp3"
    elif target == "ledger":
        from audiopipe.campaign.ledger import SqliteLedger

        SqliteLedger(ledger).close()
        report = ledger
    else:
        report = tmp_path / "report.csv"
        if target == "csv-symlink":
            report.symlink_to(contacts)
        else:
            os.link(contacts, report)
    before = hashes(contacts, report, *rec.iterdir())
    proc = _batch(rec, contacts, tmp_path, "--report", str(report), "--dry-run", "--overwrite")
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert "refusing to write" in line
    assert hashes(contacts, report, *rec.iterdir()) == before


def test_report_replaces_an_earlier_report_but_not_another_file(rec: Path, contacts: Path, tmp_path: Path) -> None:
    report = tmp_path / "notes.csv"
    report.write_bytes(UNRELATED)
    proc = _batch(rec, contacts, tmp_path, "--report", str(report), "--dry-run")
    assert proc.returncode == 2
    assert "is not an audiopipe report" in error_lines(proc)[0]
    assert report.read_bytes() == UNRELATED
    assert _batch(rec, contacts, tmp_path, "--report", str(report), "--dry-run", "--overwrite").returncode == 0
    first = report.read_text(encoding="utf-8")
    assert first.startswith("contact,workspace,file,")
    assert _batch(rec, contacts, tmp_path, "--report", str(report), "--dry-run").returncode == 0  # ours now
    assert report.read_text(encoding="utf-8") == first


def test_write_report_protects_python_callers(tmp_path: Path, contacts: Path) -> None:
    before = sha(contacts)
    with pytest.raises(OutputClash):
        write_report(contacts, [], protect=[contacts])
    with pytest.raises(OutputError, match="not an audiopipe report"):
        write_report(contacts, [])
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_report_path(tmp_path / "dir.csv")
    assert sha(contacts) == before


# --- the cache ---------------------------------------------------------------------------------------

def test_cache_clear_removes_only_cache_entries(rec: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"  # AUDIOPIPE_CACHE_DIR pointed at a folder of one's own by mistake
    (music / "ab").mkdir(parents=True)
    (music / "ab" / "mine.wav").write_bytes(UNRELATED)
    (music / "keep.mp3").write_bytes(UNRELATED)
    prepare_file(rec / "tone.wav", tmp_path / "out", PrepareSettings(cache_dir=music))
    assert Cache(music).usage()[0] == 1
    proc = cli("cache", "--clear", env={"AUDIOPIPE_CACHE_DIR": str(music)})
    assert proc.returncode == 0 and "removed 1" in proc.stdout
    assert sorted(str(p.relative_to(music)) for p in music.rglob("*") if p.is_file()) == ["ab/mine.wav", "keep.mp3"]


def test_a_damaged_sidecar_is_not_taken_for_ours(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = settings(tmp_path, cache=False)
    made = prepare_file(rec / "tone.wav", out, s).outputs[0].path
    sidecar = out / ".tone.audiopipe.json"
    for damage in (b"{not json", b'{"schema": "audiopipe-outputs/1", "files": [{"name": "../tone.wav"}]}'):
        sidecar.write_bytes(damage)
        with pytest.raises(OutputError, match="did not write it"):
            prepare_file(rec / "tone.wav", out, s)
        assert sidecar.read_bytes() == damage  # not ours either: left as it is
    sidecar.unlink()
    assert not prepare_file(rec / "tone.wav", out, s, overwrite=True).reused
    assert prepare_file(rec / "tone.wav", out, s).reused and made.is_file()
