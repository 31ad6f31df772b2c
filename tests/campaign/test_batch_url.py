"""The embedded batch by URL, end to end: real ffmpeg, a real SQLite ledger, the store's folder served by
a real HTTP server on 127.0.0.1 (given as --public-url), and real HTTP to the sandbox.

One recording to 500 contacts is put into the store once and goes out as 500 URL sends; a rerun sends
nothing and puts nothing; the ledger and the report say each was sent by URL, with the file's key in
the store. The sandbox fetches each URL, as the real API does, and a URL that answers 404 is a refusal
recorded with its reason."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import contacts_for, write_contacts
from http_folder import serve_folder

from audiopipe.campaign.batch import ST_ALREADY, ST_FAILED, ST_SENT, run_batch
from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.campaign.report import write_report
from audiopipe.campaign.status import read_status
from audiopipe.cli.status_lines import status_lines
from audiopipe.send.by_url import SendBy, SendMode
from audiopipe.send.client import LancepilotClient
from audiopipe.store import DirectoryStore

pytestmark = pytest.mark.timeout(120)

TOKEN = "url-batch-token"


@pytest.fixture
def one_recording(tmp_path: Path, audio_dir: Path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "voice.opus", folder / "voice.opus")
    return folder


def store_files(root: Path) -> list[Path]:
    """The prepared files in the store (not the preparation cache's manifests, which --store keeps too)."""
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "manifests" and p.suffix != ".json"]


def test_one_recording_to_500_contacts_is_stored_once_and_sent_as_500_urls(one_recording, settings, make_sandbox,
                                                                           tmp_path):
    contacts = contacts_for(500)
    csv_path = write_contacts(tmp_path / "contacts.csv", contacts)
    store_root = tmp_path / "store"
    sb = make_sandbox()
    with serve_folder(store_root) as served, SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        s = settings(one_recording, csv_path, concurrency=8, send=SendMode(SendBy.URL, public_url=served.url),
                     store=str(store_root))
        with LancepilotClient(token=TOKEN, base_url=sb.url) as api:
            first = run_batch(s, sender=api, ledger=ledger)
        files = store_files(store_root)
        assert len(files) == 1  # the prepared file, put once
        key = files[0].name
        url = f"{served.url}/{key[:2]}/{key}"
        assert Counter(r.status for r in first.rows) == {ST_SENT: 500}
        messages = sb.messages()
        assert sb.request_count == 500 and len(messages) == 500
        assert Counter(m["contact_id"] for m in messages) == Counter(dict.fromkeys(contacts, 1))
        assert {m["url"] for m in messages} == {url}  # every send gave the URL, none uploaded the file
        assert served.gets == {f"/{key[:2]}/{key}": 500}
        assert {(r.sent_by, r.object_key) for r in first.rows} == {("url", key)}
        rows = ledger.rows("default")
        assert len(rows) == 500 and {(r.state, r.sent_by) for r in rows} == {("sent", "url")}

        files[0].unlink()  # a rerun that sends nothing does not need the file, nor puts it again
        with LancepilotClient(token=TOKEN, base_url=sb.url) as api:
            again = run_batch(s, sender=api, ledger=ledger)
        assert Counter(r.status for r in again.rows) == {ST_ALREADY: 500}
        assert sb.request_count == 500 and store_files(store_root) == []
        assert {(r.sent_by, r.object_key) for r in again.rows} == {("url", key)}  # as the ledger recorded it

    report = write_report(tmp_path / "report.csv", (r.to_dict() for r in again.rows))
    with open(report, newline="", encoding="utf-8") as f:
        assert {(r["sent_by"], r["object_key"]) for r in csv.DictReader(f)} == {("url", key)}
    lines = status_lines(read_status(tmp_path / "ledger.sqlite3"))
    assert "    sent by url: 500" in lines


def test_a_url_the_api_cannot_fetch_is_a_recorded_refusal(one_recording, settings, make_sandbox, tmp_path):
    csv_path = write_contacts(tmp_path / "contacts.csv", contacts_for(3))
    sb = make_sandbox()
    with serve_folder(tmp_path / "empty") as wrong, SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        s = settings(one_recording, csv_path, send=SendMode(SendBy.URL, public_url=wrong.url + "/nothing-here"),
                     store=str(tmp_path / "store"))
        with LancepilotClient(token=TOKEN, base_url=sb.url) as api:
            result = run_batch(s, sender=api, ledger=ledger)
        assert sum(wrong.gets.values()) == 3  # the API tried each URL, and got a 404
    assert Counter(r.status for r in result.rows) == {ST_FAILED: 3}
    assert sb.messages() == []
    assert all(r.error and "422" in r.error for r in result.rows)
    rows = ledger_rows(tmp_path / "ledger.sqlite3")
    assert {(r.state, r.status, r.sent_by) for r in rows} == {("failed", 422, "url")}
    report = write_report(tmp_path / "report.csv", (r.to_dict() for r in result.rows))
    with open(report, newline="", encoding="utf-8") as f:
        shown = list(csv.DictReader(f))
    assert {r["status"] for r in shown} == {"failed"} and all("422" in r["error"] for r in shown)


def ledger_rows(path: Path) -> list:
    with SqliteLedger(path) as ledger:
        return ledger.rows("default")


def test_send_by_url_needs_a_store_that_gives_urls(one_recording, settings, make_sandbox, tmp_path):
    from audiopipe.errors import UsageError

    csv_path = write_contacts(tmp_path / "contacts.csv", contacts_for(2))
    sb = make_sandbox()
    for store, why in ((None, "needs --store"), (str(tmp_path / "store"), "gives no URL")):
        s = settings(one_recording, csv_path, send=SendMode(SendBy.URL), store=store)
        with LancepilotClient(token=TOKEN, base_url=sb.url) as api, pytest.raises(UsageError, match=why):
            run_batch(s, sender=api, state_path=tmp_path / "ledger.sqlite3")
    assert sb.request_count == 0 and not (tmp_path / "store").exists()  # refused before any work


def test_the_public_url_names_the_file_under_the_store_folder(tmp_path):
    store = DirectoryStore(tmp_path / "store")
    source = tmp_path / "a.opus"
    source.write_bytes(b"OggS" + b"\0" * 100)
    key = store.put(source, suffix=".opus").key
    from audiopipe.send.by_url import file_url

    url = file_url(store, key, SendMode(SendBy.URL, public_url="https://cdn.example/audio/"))
    assert url == f"https://cdn.example/audio/{key[:2]}/{key}"
    assert (tmp_path / "store" / url.removeprefix("https://cdn.example/audio/")).is_file()
