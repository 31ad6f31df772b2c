"""One run per ledger whatever path names it, and a lost ledger never resends a campaign: `audiopipe
batch` as cron runs it (in process; a run alongside in a process of its own), real HTTP to the sandbox,
a real SQLite ledger, real links, and real read-only and full file systems (tmpfs, when this process may
mount one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import AUDIOPIPE, clean_environ, contacts_for, invoke, write_contacts

from audiopipe.campaign.ledger import MARKER_NAME, SENDING, SENT, UNKNOWN, SqliteLedger
from audiopipe.sandbox.app import Faults, Sandbox

pytestmark = pytest.mark.timeout(120)

TOKEN = "ledger-test-token"
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "recordings"
    f.mkdir()
    for name in ("tone.mp3", "voice.opus"):  # sent as they are: no encode, quick
        shutil.copy(audio_dir / name, f / name)
    return f


@pytest.fixture
def contacts(tmp_path: Path) -> Path:
    return write_contacts(tmp_path / "contacts.csv", contacts_for(3))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    return tmp_path / "data-home"


@pytest.fixture
def batch(tmp_path: Path, folder: Path, contacts: Path, data_home: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Run `audiopipe batch FOLDER --contacts CSV --state STATE ...` in process, or start it in a process of
    its own (``wait=False``)."""
    home = tmp_path / "home"
    home.mkdir()

    def start(state: Path | str, sandbox: Sandbox, *extra: str, cwd: Path | None = None, wait: bool = True,
              batch_folder: Path | None = None) -> subprocess.CompletedProcess | subprocess.Popen:
        env = clean_environ(HOME=str(home), XDG_DATA_HOME=str(data_home), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"),
                            TMPDIR=str(tmp_path), LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sandbox.url,
                            AUDIOPIPE_SETTLE="0")
        argv = ["batch", str(batch_folder or folder), "--contacts", str(contacts), "-w", WS,
                "--state", str(state), "--rate", "0", "--quiet", *extra]
        if not wait:  # a run of its own, alongside: another process, as another cron job would be
            return subprocess.Popen([AUDIOPIPE, *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        proc = invoke(argv, env=env, cwd=cwd)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    yield start
    assert not any(home.iterdir()), f"something was written to HOME: {list(home.rglob('*'))}"


def once_each(sb: Sandbox) -> Counter:
    """How often each (contact, content) arrived: every value must be 1."""
    return Counter((m["contact_id"], m["sha256"]) for m in sb.messages())


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 with one line that says what happened and how to go on."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiopipe: error: "), proc.stderr
    assert "--new-ledger" in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


# --- two runs on one ledger, whatever names it ----------------------------------------------------

def _wait_until_locked(ledger_file: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if ledger_file.exists() and ledger_file.stat().st_size:
            with SqliteLedger(ledger_file, create=False) as led:
                if led.running():
                    return
        time.sleep(0.05)
    raise AssertionError("the first run never took the ledger")


@contextmanager
def _first_run_holding(batch, state: Path, sb: Sandbox) -> Iterator[subprocess.Popen]:
    """A first batch, in a process of its own, holding its locks for the block; afterwards it must
    finish its own sends and exit 0 (it is killed if the block failed first)."""
    first = batch(state, sb, "--concurrency", "1", wait=False)
    try:
        _wait_until_locked(state, first)
        yield first
        _, err = first.communicate(timeout=100)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


@pytest.mark.parametrize("how", ["symlink", "relative", "hardlink"])
def test_a_second_run_through_another_name_of_the_ledger_exits_6(tmp_path, make_sandbox, batch, folder, state,
                                                                how):
    sb = make_sandbox(faults=Faults(latency=0.25))
    state.parent.mkdir(parents=True)
    with SqliteLedger(state):
        pass  # the ledger exists first, so a hard link to it can be made
    cwd = None
    if how == "symlink":
        other: Path | str = tmp_path / "link.sqlite3"
        Path(other).symlink_to(state)
    elif how == "hardlink":
        other = tmp_path / "elsewhere" / "twin.sqlite3"
        Path(other).parent.mkdir()
        os.link(state, other)
    else:
        cwd, other = tmp_path, "state/../state/./ledger.sqlite3"
    with _first_run_holding(batch, state, sb) as first:
        elsewhere = tmp_path / "elsewhere-folder"  # not the same folder: the ledger's own lock is tested
        shutil.copytree(folder, elsewhere)
        second = batch(other, sb, cwd=cwd, batch_folder=elsewhere)
        assert second.returncode == 6, second.stderr
        assert "another audiopipe run holds the ledger" in second.stderr and f"pid {first.pid}" in second.stderr
    assert len(sb.messages()) == 6 and set(once_each(sb).values()) == {1}
    again = batch(other, sb, cwd=cwd)  # and through that name it is the same ledger: nothing to send
    assert again.returncode == 0 and "0 sent, 6 already sent" in again.stderr and len(sb.messages()) == 6


# --- a lost ledger never resends a campaign -----------------------------------------------------------

def _lose(state: Path, how: str, tmp_path: Path) -> None:
    if how == "truncated":
        os.truncate(state, 0)
    elif how == "deleted":
        for p in state.parent.iterdir():
            p.unlink()
    elif how == "replaced":
        other = tmp_path / "other.sqlite3"
        with SqliteLedger(other):
            pass
        os.replace(other, state)
    elif how == "not-sqlite":
        state.write_text("contact\n")


@pytest.mark.parametrize("how", ["truncated", "deleted", "replaced"])
def test_a_lost_ledger_is_refused_and_new_ledger_starts_afresh(tmp_path, make_sandbox, batch, folder, state, how):
    sb = make_sandbox()
    first = batch(state, sb)
    assert first.returncode == 0, first.stderr
    assert len(sb.messages()) == 6 and (folder / MARKER_NAME).is_file()
    requests = sb.request_count  # 6 uploads and the token check
    _lose(state, how, tmp_path)
    size_before = state.stat().st_size if state.exists() else None

    proc = batch(state, sb)
    refused(proc, str(state), {"truncated": "empty (0 bytes)", "deleted": "does not exist",
                               "replaced": "is not the one that recorded"}[how])
    assert sb.request_count == requests, "nothing is sent"
    assert (state.stat().st_size if state.exists() else None) == size_before, "the refusal changed the ledger"
    dry = batch(state, sb, "--dry-run")
    assert dry.returncode == 2 and sb.request_count == requests

    fresh = batch(state, sb, "--new-ledger")
    assert fresh.returncode == 0, fresh.stderr
    assert len(sb.messages()) == 12, "a deliberate fresh start sends again what it has no record of"
    after = batch(state, sb)  # the marker now names the new ledger: no flag needed any more
    assert after.returncode == 0 and "6 already sent" in after.stderr and len(sb.messages()) == 12


def test_an_older_copy_of_the_ledger_is_refused(tmp_path, make_sandbox, batch, contacts, state):
    sb = make_sandbox()
    contacts.write_text("contact\n" + contacts_for(1)[0] + "\n")
    assert batch(state, sb).returncode == 0
    backup = tmp_path / "backup.sqlite3"
    with SqliteLedger(state) as led:  # a consistent copy, as `sqlite3 .backup` or a snapshot makes
        led._db.execute("VACUUM INTO ?", (str(backup),))
    contacts.write_text("contact\n" + "".join(c + "\n" for c in contacts_for(3)))
    assert batch(state, sb).returncode == 0 and len(sb.messages()) == 6
    for p in state.parent.iterdir():
        p.unlink()
    shutil.copy(backup, state)  # the backup is put back: it knows of 2 messages out of 6
    requests = sb.request_count

    proc = batch(state, sb)
    refused(proc, "older copy", "holds 5 records but held 14")  # per run, its plan; per message, two
    assert sb.request_count == requests
    assert batch(state, sb, "--new-ledger").returncode == 0
    assert len(sb.messages()) == 10  # only what the copy had no record of went again


def test_a_file_that_is_no_ledger_is_refused_even_with_new_ledger(tmp_path, make_sandbox, batch, state):
    sb = make_sandbox()
    assert batch(state, sb).returncode == 0
    requests = sb.request_count
    state.write_text("contact\nsomething the user keeps here\n")
    for extra in ((), ("--new-ledger",)):
        proc = batch(state, sb, *extra)
        assert proc.returncode == 2 and "not an audiopipe ledger" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert state.read_text() == "contact\nsomething the user keeps here\n" and sb.request_count == requests


def test_a_first_run_just_works_and_a_dry_run_creates_nothing(tmp_path, make_sandbox, batch, folder, contacts,
                                                            state, data_home):
    sb = make_sandbox()
    dry = batch(state, sb, "--dry-run")
    assert dry.returncode == 0 and "would send 6" in dry.stderr
    assert not state.exists() and not state.parent.exists() and not (folder / MARKER_NAME).exists()
    proc = batch(state, sb)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and len(sb.messages()) == 6
    with SqliteLedger(state, create=False) as led:
        ledger_id = led.ledger_id
    (entry,) = json.loads((folder / MARKER_NAME).read_text())["work"]
    assert entry["ledger_id"] == ledger_id and entry["ledger"] == str(state)
    assert entry["contacts"] == str(contacts) and entry["campaign"] == "default"
    assert entry["records"] == 13  # the run's plan, then an intent and a result per message
    assert not data_home.exists()
    # another campaign, or another contact list, may use a ledger of its own
    other = batch(tmp_path / "spring.sqlite3", sb, "--campaign", "spring")
    assert other.returncode == 0 and len(sb.messages()) == 12
    assert len(json.loads((folder / MARKER_NAME).read_text())["work"]) == 2
    st = invoke(["status", "--state", str(state)])
    assert f"(id {ledger_id[:8]})" in st.stdout


# --- a read-only batch folder, a full ledger disk ---------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount small real file systems (tmpfs), when this process may."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_folder_keeps_its_marker_in_the_data_home(tmp_path, tmpfs, make_sandbox, batch, folder,
                                                             state, data_home):
    sb = make_sandbox()
    ro = tmpfs("ro", "4m")
    shutil.copytree(folder, ro / "recordings")
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    proc = batch(state, sb, batch_folder=ro / "recordings")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and MARKER_NAME in warnings[0] and str(data_home) in warnings[0]
    assert "Read-only" in warnings[0] or "read-only" in warnings[0]
    assert len(list((data_home / "audiopipe" / "folders").iterdir())) == 1
    again = batch(state, sb, batch_folder=ro / "recordings")
    assert again.returncode == 0 and "warning" not in again.stderr  # said once
    os.truncate(state, 0)
    refused(batch(state, sb, batch_folder=ro / "recordings"), "empty (0 bytes)")
    for p in state.parent.iterdir():
        p.unlink()
    refused(batch(state, sb, batch_folder=ro / "recordings"), "does not exist")
    assert len(sb.messages()) == 6


def test_a_full_ledger_disk_stops_the_run_and_nothing_goes_out_unrecorded(tmp_path, tmpfs, make_sandbox, batch,
                                                                         contacts):
    sb = make_sandbox()
    disk = tmpfs("disk", "8m")
    state = disk / "ledger.sqlite3"
    many = contacts_for(60)
    contacts.write_text("contact\n" + "".join(c + "\n" for c in many))
    with SqliteLedger(state):
        pass
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * (free - 240_000))  # room for the plan and a handful of messages, not 120

    proc = batch(state, sb, "--concurrency", "2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[-1] == f"audiopipe: error: cannot write the ledger {state}: the disk is full", lines
    assert len(lines) == 1 and 0 < len(sb.messages()) < 120
    with SqliteLedger(state, create=False) as led:
        recorded = Counter(r.key.contact for r in led.rows(states=(SENDING, SENT)))
    delivered = Counter(m["contact_id"] for m in sb.messages())
    assert all(recorded[c] >= n for c, n in delivered.items()), "a message went out without its intent committed"

    filler.unlink()
    rerun = batch(state, sb)
    assert rerun.returncode in (0, 4), rerun.stderr  # 4: a send whose result could not be written is unknown
    assert set(once_each(sb).values()) == {1}, "nothing is sent twice"
    with SqliteLedger(state, create=False) as led:
        counts = led.counts()
    assert counts[SENT] + counts[UNKNOWN] == 120 and len(sb.messages()) == 120


# --- one run per folder, whatever ledger it names -------------------------------------------------

@pytest.mark.parametrize("second_args", [("--state-name", "other.sqlite3"),
                                         ("--state-name", "fresh.sqlite3", "--new-ledger"),
                                         ("--copy-mid-run",)])
def test_a_second_run_on_the_same_folder_exits_6_whatever_ledger_it_names(tmp_path, make_sandbox, batch, folder,
                                                                          state, second_args):
    sb = make_sandbox(faults=Faults(latency=0.4))
    with _first_run_holding(batch, state, sb) as first:
        if second_args[0] == "--copy-mid-run":  # a byte copy of the ledger and its -wal, taken mid-run
            other = tmp_path / "copy" / "ledger.sqlite3"
            other.parent.mkdir()
            for p in state.parent.iterdir():
                shutil.copy(p, other.parent / p.name)
            extra: tuple[str, ...] = ()
        else:
            other, extra = tmp_path / second_args[1], second_args[2:]
        second = batch(other, sb, *extra)
        assert second.returncode == 6, second.stderr
        assert f"another audiopipe run is sending {folder}" in second.stderr and f"pid {first.pid}" in second.stderr
    assert len(sb.messages()) == 6 and set(once_each(sb).values()) == {1}


def test_new_ledger_is_refused_while_the_ledger_that_recorded_the_work_is_still_there(tmp_path, make_sandbox,
                                                                                     batch, state):
    sb = make_sandbox()
    assert batch(state, sb).returncode == 0 and len(sb.messages()) == 6
    for name in ("b.sqlite3", "b2.sqlite3"):  # missing, and another ledger
        other = batch(tmp_path / name, sb)
        assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
        assert "point --state at it" in other.stderr or "point --state at that ledger" in other.stderr
        assert "which still exists (--new-ledger, which would send again everything it recorded" in other.stderr
        with SqliteLedger(tmp_path / "b2.sqlite3"):
            pass
    fresh = batch(tmp_path / "b2.sqlite3", sb, "--new-ledger")
    assert fresh.returncode == 2 and "still exists" in fresh.stderr and str(state) in fresh.stderr, fresh.stderr
    assert "send again everything it recorded" in fresh.stderr and len(fresh.stderr.strip().splitlines()) == 1
    assert len(sb.messages()) == 6
    # once that ledger is really gone, --new-ledger is the way on
    for p in state.parent.iterdir():
        p.unlink()
    assert batch(tmp_path / "b2.sqlite3", sb, "--new-ledger").returncode == 0 and len(sb.messages()) == 12


@pytest.mark.parametrize("where", ["", " WHERE rowid=(SELECT MIN(rowid) FROM sends)"])
def test_sends_deleted_from_the_ledger_are_noticed(make_sandbox, batch, state, where):
    sb = make_sandbox()
    assert batch(state, sb).returncode == 0 and len(sb.messages()) == 6
    db = __import__("sqlite3").connect(state)
    with db:
        db.execute("DELETE FROM sends" + where)  # noqa: S608 - `where` is one of the test's two literals; the events (and so the record count) are left as they were
    db.close()
    proc = batch(state, sb)
    refused(proc, "were deleted from it", "held 6")
    assert len(sb.messages()) == 6, "nothing is sent again"
    assert batch(state, sb, "--new-ledger").returncode == 0  # on purpose: what it lost goes again
    assert len(sb.messages()) == {"": 12}.get(where, 7)


def test_campaign_names_that_look_the_same_never_resend(tmp_path, make_sandbox, batch, state):
    sb = make_sandbox()
    assert batch(state, sb, "--campaign", "spring promo").returncode == 0 and len(sb.messages()) == 6
    for same in ("spring promo ", " spring  promo", "ｓｐｒｉｎｇ　ｐｒｏｍｏ", "spring\u00a0promo"):
        proc = batch(state, sb, "--campaign", same)
        assert proc.returncode == 0 and "0 sent, 6 already sent" in proc.stderr, (same, proc.stderr)
    for looks_alike, words in (("Spring Promo", "only in case"), ("spring promo\u200b", "U+200B"),
                               ("spring\tpromo", "U+0009"), ("\u2060", "U+2060")):
        proc = batch(state, sb, "--campaign", looks_alike)
        assert proc.returncode == 2 and words in proc.stderr, (looks_alike, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert len(sb.messages()) == 6
    st = invoke(["status", "--state", str(state), "--campaign", "spring promo "])
    assert st.returncode == 0 and "spring promo" in st.stdout, st.stdout + st.stderr
    assert batch(state, sb, "--campaign", "autumn").returncode == 0 and len(sb.messages()) == 12


def test_a_renamed_copy_of_the_contacts_file_meets_the_same_ledger(tmp_path, make_sandbox, batch, contacts, state):
    sb = make_sandbox()
    assert batch(state, sb).returncode == 0 and len(sb.messages()) == 6
    renamed = tmp_path / "contacts-final.csv"
    shutil.copy(contacts, renamed)
    env_contacts = ["--contacts", str(renamed)]  # the last --contacts wins
    other = batch(tmp_path / "other.sqlite3", sb, *env_contacts)
    refused(other, "does not exist", "contacts.csv (not contacts-final.csv)", str(state))
    same = batch(state, sb, *env_contacts)
    assert same.returncode == 0 and "0 sent, 6 already sent" in same.stderr, same.stderr
    assert len(sb.messages()) == 6
    assert batch(tmp_path / "spring.sqlite3", sb, "--campaign", "spring", *env_contacts).returncode == 0
