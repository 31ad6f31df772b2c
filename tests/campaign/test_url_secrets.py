"""A presigned URL is a credential until it expires: it is never printed, logged, kept in the ledger or
written to a report. A batch by URL is run with a store that signs its URLs (a folder store whose URLs
carry an S3-style query: the store is the stand-in here, the batch, the client, the ledger and the CLI
are the real ones; tests/store/test_s3_store.py presigns for real against moto), through the library
with every log line captured at DEBUG and through the CLI with --debug, and every output is searched
for the signature and the credential. The served folder, which the sandbox fetches each URL from,
proves the signed URL did go out."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from helpers import FIXTURES_WS, clean_environ, contacts_for, invoke, write_contacts
from http_folder import serve_folder

from audiopipe import store as store_module
from audiopipe.campaign.batch import run_batch
from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.campaign.report import write_report
from audiopipe.campaign.status import read_status
from audiopipe.cli.status_lines import status_lines
from audiopipe.send.by_url import SendBy, SendMode, public_path, redact_file_url, redact_urls_in
from audiopipe.send.client import LancepilotClient
from audiopipe.store import DirectoryStore, Store

pytestmark = pytest.mark.timeout(120)

TOKEN = "url-secrets-token"
SIGNATURE = "5ecre75164a7ure0f7he9resigned0url"
CREDENTIAL = "AKIDSECRETACCESSKEY"
SECRETS = (SIGNATURE, CREDENTIAL, "S3CR3T-SESSION-TOKEN")


class SigningStore(DirectoryStore):
    """A folder store served at ``base`` whose URLs are signed the way S3 signs them (the query the
    served folder ignores, as a bucket checks it)."""

    def __init__(self, root: Path, base: str) -> None:
        super().__init__(root)
        self.base = base

    def url(self, key: str, *, ttl: float | None = None) -> str | None:
        return (f"{self.base}/{public_path(self, key)}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                f"&X-Amz-Credential={CREDENTIAL}%2F20261130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261130T061500Z"
                f"&X-Amz-Expires={int(ttl or 0)}&X-Amz-SignedHeaders=host&X-Amz-Security-Token={SECRETS[2]}"
                f"&X-Amz-Signature={SIGNATURE}")


@pytest.fixture
def signing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``--store signing:`` opens a SigningStore of tmp_path/store served on 127.0.0.1."""
    real_open = store_module.open_store
    with serve_folder(tmp_path / "store") as served:
        def open_store(spec: str) -> Store:
            return SigningStore(tmp_path / "store", served.url) if spec == "signing:" else real_open(spec)
        monkeypatch.setattr(store_module, "open_store", open_store)
        yield served


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} in {where}"


def every_file(root: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_a_signed_url_is_never_logged_printed_recorded_or_reported(signing_store, settings, make_sandbox, tmp_path,
                                                                  audio_dir, caplog):
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "voice.opus", folder / "voice.opus")
    contacts = write_contacts(tmp_path / "contacts.csv", contacts_for(5))
    state = tmp_path / "state"
    sb = make_sandbox()
    caplog.set_level(logging.DEBUG)
    s = settings(folder, contacts, send=SendMode(SendBy.URL), store="signing:", campaign="lib")
    with SqliteLedger(state / "ledger.sqlite3") as ledger, LancepilotClient(token=TOKEN, base_url=sb.url) as api:
        result = run_batch(s, sender=api, ledger=ledger)
    assert sum(signing_store.gets.values()) == 5  # the API fetched each URL, signed: the signature went out
    assert {q.rsplit("X-Amz-Signature=", 1)[-1] for q in signing_store.queries} == {SIGNATURE}
    assert_no_secret(caplog.text, "the log")
    report = write_report(tmp_path / "lib-report.csv", (r.to_dict() for r in result.rows))
    assert_no_secret(report.read_text(encoding="utf-8"), "the report")
    assert_no_secret(repr(result.rows), "the result's rows")

    env = clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(state), AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=TOKEN)
    sent = invoke(["--debug", "batch", str(folder), "--contacts", str(contacts), "-w", FIXTURES_WS, "--campaign",
                   "cli", "--state", str(state / "ledger.sqlite3"), "--send-by", "url", "--store", "signing:",
                   "--base-url", sb.url, "--report", str(tmp_path / "cli-report.csv"), "--rate", "0"], env=env)
    assert sent.returncode == 0, sent.stderr
    assert len(sb.messages()) == 10
    assert_no_secret(sent.stdout + sent.stderr, "the CLI's output")
    assert_no_secret((tmp_path / "cli-report.csv").read_text(encoding="utf-8"), "the CLI's report")
    status = invoke(["status", "--state", str(state / "ledger.sqlite3"), "--json"], env=env)
    assert '"url": 5' in status.stdout  # each campaign's five, by URL
    assert_no_secret(status.stdout + status.stderr, "status")
    assert_no_secret("\n".join(status_lines(read_status(state / "ledger.sqlite3"), verbose=True)), "status lines")
    assert_no_secret(every_file(state), "the ledger's files")  # the SQLite file, its -wal, its events


def test_a_refused_signed_url_is_recorded_without_its_signature(settings, make_sandbox, tmp_path, audio_dir,
                                                                monkeypatch, caplog):
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "voice.opus", folder / "voice.opus")
    contacts = write_contacts(tmp_path / "contacts.csv", contacts_for(2))
    with serve_folder(tmp_path / "elsewhere") as wrong:  # the bucket is not where the URLs point
        monkeypatch.setattr(store_module, "open_store", lambda spec: SigningStore(tmp_path / "store", wrong.url))
        caplog.set_level(logging.DEBUG)
        s = settings(folder, contacts, send=SendMode(SendBy.URL), store="signing:")
        sb = make_sandbox()
        with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger, \
                LancepilotClient(token=TOKEN, base_url=sb.url) as api:
            result = run_batch(s, sender=api, ledger=ledger)
    assert {r.status for r in result.rows} == {"failed"} and all(r.error for r in result.rows)
    assert_no_secret(caplog.text + repr(result.rows), "the log and the rows")
    ledger_files = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("ledger.sqlite3*"))
    assert_no_secret(ledger_files, "the ledger")


def test_redaction_hides_every_secret_part_and_keeps_what_helps():
    url = SigningStore(Path("/nowhere"), "https://bucket.s3.example").url("ab" * 32 + ".opus", ttl=3600)
    assert url is not None
    shown = redact_file_url(url)
    assert_no_secret(shown, "the redacted URL")
    assert shown.startswith("https://bucket.s3.example/ab/" + "ab" * 32 + ".opus?")
    assert "X-Amz-Expires=3600" in shown and "X-Amz-Date=20261130T061500Z" in shown
    assert "X-Amz-Signature=..." in shown
    said = redact_urls_in(f"could not fetch {url}: 404 Not Found")
    assert_no_secret(said, "a message quoting the URL")
    assert said.endswith(": 404 Not Found")
    assert redact_file_url("https://user:pw@host/a?sig=abc&token=t#frag") == "https://...@host/a?sig=...&token=..."
    assert redact_urls_in("no URL here") == "no URL here"
