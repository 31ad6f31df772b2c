"""Input and OS errors as a user meets them, and untrusted text on the way to a terminal.

Each failure is one line naming the path and what to do, never a traceback, and a batch goes on with
what it can. Real files in tmp_path, real mounts (a read-only and a full tmpfs, skipped where mount is
not permitted), the CLI in process (CliRunner), real HTTP to the sandbox, real ffmpeg."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_environ, invoke

from audiopipe.campaign import contacts as contacts_module
from audiopipe.campaign.contacts import read_contacts
from audiopipe.campaign.report import escape_cell
from audiopipe.errors import UsageError
from audiopipe.sandbox.app import Sandbox
from audiopipe.text import safe

pytestmark = pytest.mark.timeout(120)

TOKEN = "errors-test-token"
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
PEOPLE = ["5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c52"]
LONG_NAME = "x" * 296 + ".wav"  # 300 bytes: over the 255 a file name may have
EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m"  # set the window title, clear the screen, a one-byte CSI


# --- helpers ---------------------------------------------------------------------------------------

def run_cli(tmp_path: Path, *args: str, sandbox: Sandbox | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a user runs it (in process); bytes, so that a raw escape byte cannot hide in decoding."""
    e = clean_environ(drop=("LANCEPILOT_", "AUDIOPIPE_"), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"),
                      AUDIOPIPE_STATE=str(tmp_path / "ledger.sqlite3"), AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=TOKEN,
                      TMPDIR=str(tmp_path))
    if sandbox is not None:
        e["LANCEPILOT_BASE_URL"] = sandbox.url
    e.update(env or {})
    started = time.monotonic()
    proc = invoke(args, env=e, text=False)
    assert time.monotonic() - started < timeout, f"took over {timeout} s"
    for stream in (proc.stdout, proc.stderr):
        assert b"Traceback" not in stream, proc.stderr.decode(errors="replace")
        assert b"\x1b" not in stream and b"\x07" not in stream, "a raw control character reached the terminal"
    return proc


def error_lines(proc: subprocess.CompletedProcess[bytes], prefix: str = "audiopipe: error:") -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if line.startswith(prefix)]


def one_error_line(proc: subprocess.CompletedProcess[bytes], *words: str) -> str:
    """The one error line, which holds every word given (the path, first of all)."""
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr.decode()
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def recordings(tmp_path: Path, audio_dir: Path, *names: str) -> Path:
    folder = tmp_path / "rec"
    folder.mkdir()
    for name in names or ("tone.wav", "tone.flac"):
        shutil.copyfile(audio_dir / name, folder / name)
    return folder


def symlink_loop(folder: Path, name: str) -> Path:
    (folder / name).symlink_to(folder / f"{name}.other")
    (folder / f"{name}.other").symlink_to(folder / name)
    return folder / name


def undecodable_wav(path: Path, codec_tag: int = 2, block_align: int = 0) -> Path:
    """A WAV that probes as MS ADPCM but whose blocks are garbage: ffprobe is happy, the decoder is not.
    (As GSM, tag 0x31, with a block alignment of 7, ffprobe itself fails.)"""
    data = bytes((i * 97 + 13) % 256 for i in range(20_000))
    fmt = struct.pack("<HHIIHH", codec_tag, 1, 8000, 4000, block_align, 4) + struct.pack("<HH", 2, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems (``ro``, ``size=8k``...); unmounted after the test. Skips the
    test where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def unwritable(kind: str, tmp_path: Path, mount_tmpfs: Callable[..., Path]) -> Path:
    """A folder path audiopipe cannot write: on a read-only file system, under a regular file (mkdir
    fails with ENOTDIR, which also stops root), or on a disk too small for one prepared file."""
    if kind == "read-only":
        return mount_tmpfs("ro", "ro,size=64k") / "place"
    if kind == "under-a-file":
        (tmp_path / "a-file").write_text("not a folder\n")
        return tmp_path / "a-file" / "place"
    assert kind == "full"
    return mount_tmpfs("full", "size=8k") / "place"


# --- contacts CSV: NUL bytes, FIFOs, devices, size -----------------------------------------------

def test_nul_in_a_csv_cell_is_an_invalid_row_and_the_rest_is_sent(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv", f"contact,file\n{PEOPLE[0]},tone.wav\n{PEOPLE[1]},to\x00ne.flac\n"
                                             f"{PEOPLE[1]},tone.flac\n")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   sandbox=sb)
    assert proc.returncode == 1  # an invalid row
    stderr = proc.stderr.decode()
    assert "invalid: line 3:" in stderr and "NUL" in stderr and "to\\x00ne.flac" in stderr
    assert sorted(m["contact_id"] for m in sb.messages()) == sorted(PEOPLE)  # both good rows went out


def test_utf16_without_a_bom_is_read_not_refused_for_its_nuls(tmp_path: Path, audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = tmp_path / "c.csv"
    # what Excel's "Unicode text" gives, less its BOM: once refused for "a NUL byte in the header"
    csv_path.write_bytes(("contact\n" + PEOPLE[0] + "\n").encode("utf-16-le"))
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--dry-run")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "would send 2" in proc.stderr.decode()


def test_nul_in_the_header_is_one_line(tmp_path: Path, audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv", "con\x00tact\n" + PEOPLE[0] + "\n")  # damaged, not UTF-16
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--dry-run")
    assert proc.returncode == 2
    one_error_line(proc, str(csv_path), "NUL", "UTF-8")


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_contacts_that_are_not_a_regular_file_are_refused_at_once(
        kind: str, tmp_path: Path, audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir)
    if kind == "fifo":
        path = tmp_path / "contacts.csv"
        os.mkfifo(path)  # nobody ever writes to it: opening it to read would wait forever
    else:
        path = Path("/dev/zero")  # never ends: reading it whole would eat the memory
    # the timeout turns a regression (a hang, or a slow march to a MemoryError) into a failure
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(path), "-w", WS, "--dry-run", timeout=30)
    assert proc.returncode == 2
    one_error_line(proc, str(path), "not a regular file")


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])  # a folder: click's own check refuses it
def test_sandbox_strict_contacts_that_are_not_a_regular_file_are_refused(kind: str, tmp_path: Path) -> None:
    path = {"dev-zero": Path("/dev/zero"), "fifo": tmp_path / "c.csv"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    proc = run_cli(tmp_path, "sandbox", "--port", "0", "--data", str(tmp_path / "data"),
                   "--contacts", str(path), timeout=30)
    assert proc.returncode == 2
    one_error_line(proc, str(path), "not a regular file")


def test_contacts_over_the_size_cap_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contacts_module, "MAX_CONTACTS_BYTES", 1 << 20)
    big = tmp_path / "big.csv"
    big.write_bytes(b"contact\n" + (PEOPLE[0].encode() + b"\n") * 30_000)  # 1.1 MB
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        read_contacts(big, tmp_path, default_workspace=WS)
    small = tmp_path / "small.csv"
    small.write_bytes(b"contact\n" + (PEOPLE[0].encode() + b"\n") * 100)
    assert len(read_contacts(small, tmp_path, default_workspace=WS).invalid) == 99  # duplicates, but read


# --- link loops and names over 255 bytes ---------------------------------------------------------

def test_symlink_loop_in_a_csv_cell_is_an_invalid_row(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    symlink_loop(folder, "loop.wav")
    csv_path = write_csv(tmp_path / "c.csv", f"contact,file\n{PEOPLE[0]},loop.wav\n{PEOPLE[1]},tone.wav\n")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   sandbox=sb)
    assert proc.returncode == 1
    assert "invalid: line 2:" in proc.stderr.decode() and "symbolic link loop" in proc.stderr.decode()
    assert [m["contact_id"] for m in sb.messages()] == [PEOPLE[1]]


def test_symlink_loop_given_to_probe_and_prepare(tmp_path: Path, audio_dir: Path) -> None:
    loop = symlink_loop(tmp_path, "loop.wav")
    proc = run_cli(tmp_path, "probe", str(loop))
    assert proc.returncode == 1
    one_error_line(proc, str(loop), "symbolic link loop")
    proc = run_cli(tmp_path, "prepare", str(loop), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    one_error_line(proc, str(loop), "symbolic link loop")


def test_symlink_loop_inside_a_folder_given_to_prepare(tmp_path: Path, audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir)
    loop = symlink_loop(folder, "loop.wav")
    (folder / "gone.wav").symlink_to(folder / "never-there.wav")
    out = tmp_path / "out"
    proc = run_cli(tmp_path, "prepare", str(folder), "--out", str(out))
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 2 and str(loop) in lines[1] and "symbolic link loop" in lines[1]
    assert str(folder / "gone.wav") in lines[0] and "does not exist" in lines[0]
    assert len([p for p in out.iterdir() if p.suffix == ".ogg"]) == 2  # the rest is prepared


def test_symlink_loop_inside_a_batch_folder(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    loop = symlink_loop(folder, "loop.wav")
    csv_path = write_csv(tmp_path / "c.csv", "contact\n" + "\n".join(PEOPLE) + "\n")  # every file to everyone
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   sandbox=sb)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.decode().splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and loop.name in failed[0] and "symbolic link loop" in failed[0]
    assert len(sb.messages()) == 2 * 2  # both real files to both contacts


@pytest.mark.parametrize("command", ["probe", "prepare", "send"])
def test_name_over_255_bytes_on_the_command_line(
        command: str, tmp_path: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    path = tmp_path / LONG_NAME
    args = {"probe": ["probe", str(path)],
            "prepare": ["prepare", str(path), "--out", str(tmp_path / "out")],
            "send": ["send", str(path), "-w", WS, "-c", PEOPLE[0]]}[command]
    sb = make_sandbox()
    proc = run_cli(tmp_path, *args, sandbox=sb)
    assert proc.returncode == 1
    one_error_line(proc, str(path), "name is too long")
    assert sb.messages() == []


def test_a_name_whose_temp_name_would_pass_255_bytes_is_prepared_with_the_rest(tmp_path: Path,
                                                                                  audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir, "tone.wav")
    near_limit = folder / ("y" * 246 + ".mp3")  # fits; ".NAME.mp3.ap-....part" would not, so it is shortened
    shutil.copyfile(audio_dir / "tone.mp3", near_limit)
    out = tmp_path / "out"
    proc = run_cli(tmp_path, "prepare", str(folder), "--out", str(out), "--no-cache")
    assert proc.returncode == 0, proc.stderr.decode()
    written = sorted(p.name for p in out.iterdir() if not p.name.endswith(".audiopipe.json"))  # not sidecars
    assert written == ["tone.ogg", near_limit.name]  # no temp file left


def test_name_over_255_bytes_in_a_csv_cell(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv", f"contact,file\n{PEOPLE[0]},{LONG_NAME}\n{PEOPLE[1]},tone.wav\n")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   sandbox=sb)
    assert proc.returncode == 1
    invalid = [line for line in proc.stderr.decode().splitlines() if line.startswith("invalid:")]
    assert len(invalid) == 1 and "line 2:" in invalid[0] and "name is too long" in invalid[0]
    assert [m["contact_id"] for m in sb.messages()] == [PEOPLE[1]]


# --- places that cannot be written ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["read-only", "under-a-file", "full"])
def test_unwritable_cache_warns_once_and_the_batch_sends_everything(
        kind: str, tmp_path: Path, audio_dir: Path, mount_tmpfs: Callable[..., Path],
        make_sandbox: Callable[..., Sandbox]) -> None:
    cache = unwritable(kind, tmp_path, mount_tmpfs)
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv", "contact\n" + "\n".join(PEOPLE) + "\n")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   "--jobs", "2", sandbox=sb, env={"AUDIOPIPE_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(sb.messages()) == 2 * 2  # every file to every contact
    warnings = error_lines(proc, "audiopipe: warning:")
    assert len(warnings) == 1 and str(cache) in warnings[0] and "going on without it" in warnings[0]
    assert error_lines(proc) == []


def test_unwritable_cache_with_prepare(tmp_path: Path, audio_dir: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / f"cache{EVIL}"  # the warning names it, escaped
    folder = recordings(tmp_path, audio_dir)
    proc = run_cli(tmp_path, "prepare", str(folder), "--out", str(tmp_path / "out"), "-j", "2",
                   env={"AUDIOPIPE_CACHE_DIR": str(cache)})
    assert proc.returncode == 0
    [warning] = error_lines(proc, "audiopipe: warning:")
    assert "cache\\x1b]0;pwned\\x07" in warning
    assert len([p for p in (tmp_path / "out").iterdir() if p.suffix == ".ogg"]) == 2


@pytest.mark.parametrize("kind", ["read-only", "under-a-file"])
def test_unwritable_out_is_one_line_before_any_work(
        kind: str, tmp_path: Path, audio_dir: Path, mount_tmpfs: Callable[..., Path]) -> None:
    out = unwritable(kind, tmp_path, mount_tmpfs)
    folder = recordings(tmp_path, audio_dir)
    proc = run_cli(tmp_path, "prepare", str(folder), "--out", str(out))
    assert proc.returncode == 2
    one_error_line(proc, f"--out {out}", "cannot write there")


def test_read_only_out_folder_itself(tmp_path: Path, audio_dir: Path, mount_tmpfs: Callable[..., Path]) -> None:
    out = mount_tmpfs("ro", "ro,size=64k")  # it exists; only writing in it fails
    proc = run_cli(tmp_path, "prepare", str(audio_dir / "tone.wav"), "--out", str(out), "--no-cache")
    assert proc.returncode == 2
    one_error_line(proc, f"--out {out}", "read-only")


def test_full_out_names_the_input_and_leaves_nothing(
        tmp_path: Path, audio_dir: Path, mount_tmpfs: Callable[..., Path]) -> None:
    out = mount_tmpfs("full", "size=8k")
    proc = run_cli(tmp_path, "prepare", str(audio_dir / "tone.wav"), "--out", str(out), "--no-cache")
    assert proc.returncode == 1
    # ffmpeg 5 exits 0 after failing to write its trailer: the failure is still caught, and said
    one_error_line(proc, str(audio_dir / "tone.wav"), "No space left on device")
    assert list(out.iterdir()) == []


def test_batch_report_in_a_read_only_folder_is_refused_before_sending(
        tmp_path: Path, audio_dir: Path, mount_tmpfs: Callable[..., Path],
        make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    read_only = mount_tmpfs("ro", "ro,size=64k")  # the folder exists: only writing in it fails
    csv_path = write_csv(tmp_path / "c.csv", f"contact\n{PEOPLE[0]}\n")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS,
                   "--report", str(read_only / "report.csv"), sandbox=sb)
    assert proc.returncode == 2
    one_error_line(proc, "cannot write the report", str(read_only), "read-only")
    assert sb.messages() == []  # found out before sending, not after every message went out


# --- untrusted text on the terminal ---------------------------------------------------------------

def test_safe_escapes_what_a_terminal_would_act_on() -> None:
    assert safe("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe("\x9b31m \x7f \x00 \r\n\t") == "\\x9b31m \\x7f \\x00 \\x0d\\x0a\\x09"
    assert safe("abc\u202egpj.exe") == "abc\\u202egpj.exe"  # a right-to-left override
    assert safe(os.fsdecode(b"bad-\xff.wav")) == "bad-\\xff.wav"  # a name that is not UTF-8
    assert safe("café — 音声.wav") == "café — 音声.wav"  # printable text is left alone
    assert safe(safe(EVIL)) == safe(EVIL)


@pytest.mark.slow
def test_escape_sequences_in_csv_cells_do_not_reach_the_terminal(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv",
                         f"contact,file,note\n{EVIL},tone.wav,x\n{PEOPLE[0]},{EVIL}.wav,{EVIL}\n"
                         f"{PEOPLE[1]},tone.wav,{EVIL}\n")
    sb = make_sandbox()
    for extra in ([], ["--json"], ["--dry-run"]):
        proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, *extra,
                       sandbox=sb)  # run_cli asserts no raw ESC or BEL byte in stdout or stderr
        assert proc.returncode == 1
        out = proc.stdout.decode() + proc.stderr.decode()
        assert "\x9b" not in out
        if not extra or extra == ["--dry-run"]:
            assert "\\x1b]0;pwned\\x07" in out  # shown, escaped
    assert [m["contact_id"] for m in sb.messages()] == [PEOPLE[1]]


@pytest.mark.slow
def test_escape_sequences_in_file_names_do_not_reach_the_terminal(tmp_path: Path, audio_dir: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    good = folder / f"good{EVIL}.wav"
    shutil.copyfile(audio_dir / "tone.wav", good)
    shutil.copyfile(audio_dir / "text.mp3", folder / f"bad{EVIL}.mp3")  # refused: an error line names it
    undecodable_wav(folder / f"broken{EVIL}.wav")  # an ffmpeg error names it
    outputs = []
    for args in (["probe", str(good), str(folder / f"bad{EVIL}.mp3")],
                 ["probe", "--json", str(good), str(folder / f"bad{EVIL}.mp3")],
                 ["prepare", str(folder), "--out", str(tmp_path / "out")],
                 ["-v", "prepare", str(folder), "--out", str(tmp_path / "out2"), "--no-cache"]):
        proc = run_cli(tmp_path, *args)  # run_cli asserts no raw ESC or BEL byte in stdout or stderr
        assert proc.returncode == 1
        outputs.append(proc.stdout.decode() + proc.stderr.decode())
        assert "\x9b" not in outputs[-1]
    table, _json, prepared, verbose = outputs
    assert "good\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m.wav" in table  # shown, escaped
    assert "bad\\x1b]0;pwned" in prepared and "broken\\x1b]0;pwned" in prepared
    assert "Error while decoding" in verbose  # ffmpeg's own stderr, which names the file, escaped too


def test_escape_sequences_in_the_ledger_do_not_reach_the_terminal(
        tmp_path: Path, audio_dir: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copyfile(audio_dir / "tone.wav", folder / f"good{EVIL}.wav")
    strict = write_csv(tmp_path / "known.csv", f"contact\n{PEOPLE[1]}\n")
    sb = make_sandbox(contacts_csv=strict)  # PEOPLE[0] does not exist: 404, a failed row in the ledger
    csv_path = write_csv(tmp_path / "c.csv", f"contact,file\n{PEOPLE[0]},good{EVIL}.wav\n")
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, sandbox=sb)
    assert proc.returncode == 1 and "failed: line 2:" in proc.stderr.decode()
    status = run_cli(tmp_path, "status")  # the ledger keeps the name as written: shown escaped
    assert status.returncode == 1 and "good\\x1b]0;pwned\\x07" in status.stdout.decode()


def test_report_header_and_cells_are_formula_escaped(tmp_path: Path, audio_dir: Path) -> None:
    folder = recordings(tmp_path, audio_dir)
    csv_path = write_csv(tmp_path / "c.csv", f"contact,=evil,@sum,note\n{PEOPLE[0]},  =1+1,\t@x, +3\n")
    report = tmp_path / "report.csv"
    proc = run_cli(tmp_path, "batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--dry-run",
                   "--report", str(report))
    assert proc.returncode == 0, proc.stderr.decode()
    with open(report, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert "'=evil" in header and "'@sum" in header and "=evil" not in header
    got = dict(zip(header, rows[0], strict=True))
    assert got["'=evil"] == "'  =1+1" and got["'@sum"] == "'\t@x" and got["note"] == "' +3"
    for row in [header, *rows]:
        for cell in row:
            assert not cell.lstrip().startswith(("=", "+", "-", "@")), cell


@pytest.mark.parametrize("value, escaped", [
    ("=1+1", True), ("+1", True), ("-1", True), ("@A1", True), ("\t=1", True), ("\r=1", True),
    ("  =1", True), ("\n@x", True), ("\u00a0=1", True), ("a=1", False), ("", False), (None, False),
    ("0b6f2f1e-6a43", False), (7, False)])
def test_escape_cell(value: Any, escaped: bool) -> None:
    text = "" if value is None else str(value)
    assert escape_cell(value) == ("'" + text if escaped else text)


# --- ffmpeg's own errors --------------------------------------------------------------------------

def test_failing_ffmpeg_is_one_line_naming_the_file(tmp_path: Path) -> None:
    broken = undecodable_wav(tmp_path / "broken.wav")
    proc = run_cli(tmp_path, "prepare", str(broken), "--out", str(tmp_path / "out"), "--no-cache")
    assert proc.returncode == 1
    line = one_error_line(proc, str(broken), "Invalid data found", "-v")
    assert " @ 0x" not in line  # the decoder's address says nothing to a user
    assert len(proc.stderr.decode().splitlines()) == 2  # the error and the summary
    assert list((tmp_path / "out").iterdir()) == []

    verbose = run_cli(tmp_path, "-v", "prepare", str(broken), "--out", str(tmp_path / "out"), "--no-cache")
    assert verbose.stderr.decode().count("Error while decoding stream") > 2  # the whole stderr, with -v


def test_failing_ffprobe_is_one_line_naming_the_file(tmp_path: Path) -> None:
    broken = undecodable_wav(tmp_path / "gsm.wav", codec_tag=0x31, block_align=7)
    proc = run_cli(tmp_path, "probe", str(broken))
    assert proc.returncode == 1
    line = one_error_line(proc, str(broken))
    # ffprobe's own words for it (which of its lines depends on how far the probe reads), not a dump
    assert "Invalid block alignment" in line or "Could not open codec" in line, line
    assert " @ 0x" not in line and len(proc.stderr.decode().splitlines()) == 1


def test_failing_ffmpeg_in_send_names_the_file(tmp_path: Path, make_sandbox: Callable[..., Sandbox]) -> None:
    broken = undecodable_wav(tmp_path / "broken.wav")
    sb = make_sandbox()
    proc = run_cli(tmp_path, "send", str(broken), "-w", WS, "-c", PEOPLE[0], "--no-cache", sandbox=sb)
    assert proc.returncode == 1
    one_error_line(proc, str(broken), "Invalid data found")
    assert sb.messages() == []


def test_server_text_in_the_report_has_its_control_characters_escaped(tmp_path: Path) -> None:
    """A message id or a refusal reason comes from the server: in the report, as on the terminal, an
    escape sequence or a right-to-left override is written out, never raw. The CSV's own columns are
    the user's data and are kept as they are."""
    from audiopipe.campaign.report import write_report

    row = {"contact": PEOPLE[0], "status": "sent", "message_id": "evil-\x1b[31mRED\u202eabc",
           "error": "bad\x07bell", "note": "two\nlines"}
    report = tmp_path / "report.csv"
    write_report(report, [row], ["note"])
    with open(report, newline="", encoding="utf-8") as f:
        got = dict(zip(*list(csv.reader(f))[:2], strict=True))
    assert got["message_id"] == safe("evil-\x1b[31mRED\u202eabc") and "\x1b" not in got["message_id"]
    assert "\u202e" not in got["message_id"] and got["error"] == safe("bad\x07bell")
    assert got["note"] == "two\nlines"


def test_an_input_name_of_255_bytes_is_prepared(tmp_path: Path) -> None:
    """The longest legal name: its hidden temp name is shortened (with a hash) to fit, the output
    keeps the name."""
    name = "x" * 251 + ".wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", str(tmp_path / name)],
                   check=True)
    proc = run_cli(tmp_path, "prepare", str(tmp_path / name), "--out", str(tmp_path / "out"), "--no-cache")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "out" / ("x" * 251 + ".ogg")).is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]
