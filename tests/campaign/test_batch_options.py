"""--retry-failed, status's view of deferred and in-flight rows, and the report's size column."""

from __future__ import annotations

import csv
import os
import subprocess
from collections import Counter
from pathlib import Path

import test_batch
from helpers import contacts_for, invoke, write_csv
from test_batch import run

from audiopipe.campaign.batch import ST_ALREADY, ST_FAILED, ST_SENT
from audiopipe.campaign.ledger import DEFERRED, SendKey, SqliteLedger

TOKEN = test_batch.TOKEN  # the sandboxes' token (make_sandbox reads TOKEN here); run() sends the same
SANDBOX_RESTARTS = True


def test_retry_failed_resends_a_refusal_once_the_contact_exists(tmp_path, folder, make_sandbox, ledger,
                                                                settings):
    people = contacts_for(3)
    (folder / "tone.wav").unlink()
    (folder / "tone.mp3").unlink()
    csv_path = write_csv(tmp_path / "c.csv", "contact", people)
    sb = make_sandbox(contacts_csv=write_csv(tmp_path / "known.csv", "contact", people[:2]))
    first = run(sb, settings(folder, csv_path), ledger)
    assert Counter(r.status for r in first.rows) == {ST_SENT: 2, ST_FAILED: 1}
    failed = next(r for r in first.rows if r.status == ST_FAILED)
    # the contact is created on the server; without --retry-failed nothing changes
    sb = make_sandbox(contacts_csv=write_csv(tmp_path / "known2.csv", "contact", people))
    again = run(sb, settings(folder, csv_path), ledger)
    assert Counter(r.status for r in again.rows) == {ST_ALREADY: 2, ST_FAILED: 1}
    assert sum(1 for m in sb.messages() if m["contact_id"] == failed.contact) == 0
    assert "--retry-failed" in next(r.error for r in again.rows if r.status == ST_FAILED)
    retried = run(sb, settings(folder, csv_path, retry_failed=True), ledger)
    assert Counter(r.status for r in retried.rows) == {ST_ALREADY: 2, ST_SENT: 1}
    assert sum(1 for m in sb.messages() if m["contact_id"] == failed.contact) == 1


def _status(state: Path) -> subprocess.CompletedProcess[str]:
    return invoke(["status", "--state", str(state)], env=dict(os.environ, HOME=str(state.parent)))


def test_status_exit_codes_for_deferred_and_in_flight(tmp_path):
    state = tmp_path / "ledger.sqlite3"
    key = SendKey("c", "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01", "5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "ab", 1)
    with SqliteLedger(state) as led:
        led.begin(key, parts=1, file="a.wav", prepared_sha256="x")
        led.finish(key, DEFERRED, error="rate limited (429)")
    proc = _status(state)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "deferred: [c]" in proc.stdout
    # a row in flight while a run holds the lock is not called unknown, only not sent yet ...
    with SqliteLedger(state) as holder:
        holder.acquire()
        holder.begin(key, parts=1, file="a.wav", prepared_sha256="x")
        proc = _status(state)
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert "a batch is running now" in proc.stdout
    # ... but the same row with no run alive was interrupted: its outcome is unknown
    proc = _status(state)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "a batch is running now" not in proc.stdout


def test_report_has_sizes(tmp_path, folder, make_sandbox, ledger, settings):
    from audiopipe.campaign.report import write_report

    sb = make_sandbox()
    result = run(sb, settings(folder, write_csv(tmp_path / "c.csv", "contact", contacts_for(1))), ledger)
    path = write_report(tmp_path / "r.csv", (r.to_dict() for r in result.rows))
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    stored = {m["size"] for m in sb.messages()}
    assert rows and {int(r["size"]) for r in rows} == stored


def test_a_file_still_arriving_waits_for_the_next_run(tmp_path, folder, make_sandbox, ledger, settings):
    import os
    import time

    sb = make_sandbox()
    people = contacts_for(2)
    csv_path = write_csv(tmp_path / "c.csv", "contact", people)
    old = time.time() - 3600
    for f in folder.iterdir():
        os.utime(f, (old, old))
    os.utime(folder / "tone.wav", None)  # just written
    first = run(sb, settings(folder, csv_path, settle=30), ledger)
    waiting = [r for r in first.rows if r.file == "tone.wav"]
    assert [r.status for r in waiting] == ["not_sent", "not_sent"]
    assert "may still be arriving" in waiting[0].error
    assert not any(m["file_name"].startswith("tone.ogg") for m in sb.messages())
    assert Counter(r.status for r in first.rows)[ST_SENT] == 4  # the settled files went out
    os.utime(folder / "tone.wav", (old, old))
    second = run(sb, settings(folder, csv_path, settle=30), ledger)
    assert Counter(r.status for r in second.rows) == {ST_ALREADY: 4, ST_SENT: 2}
