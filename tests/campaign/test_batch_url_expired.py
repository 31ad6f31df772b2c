"""An expired presigned URL is a recorded refusal, end to end: the real S3 store signs each URL (SigV4,
the shortest lifetime --url-ttl allows) against moto's server behind tests/s3_expiry_proxy.py, which
refuses an expired presigned GET as AWS does (403 AccessDenied, "Request has expired"; moto itself
serves it anyway). The sandbox fetches each URL as the API would. Moving the proxy's clock past the
URLs' lifetime (not sleeping) stands for an API that fetched them too late: each send is then `failed`
in the ledger with AWS's reason in the report and the CLI's output, and the signature is nowhere."""

from __future__ import annotations

import csv
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FIXTURES_WS, clean_environ, contacts_for, invoke, write_contacts
from s3_expiry_proxy import ExpiryProxy, expiry_proxy

from audiopipe.campaign.batch import ST_FAILED, ST_SENT, run_batch
from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.campaign.report import write_report
from audiopipe.send.by_url import MIN_URL_TTL, SendBy, SendMode
from audiopipe.send.client import LancepilotClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "expired-url-token"
LATE = 3600  # the proxy's clock, this much past the signing: far beyond MIN_URL_TTL


@pytest.fixture
def proxy(moto_server, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ExpiryProxy]:
    """The expiry proxy in front of moto, and AWS_ENDPOINT_URL pointing at it: the store, its presigned
    URLs and so the sandbox's fetches all go through it."""
    with expiry_proxy(moto_server.endpoint) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        yield p


@pytest.fixture
def recording(tmp_path: Path, audio_dir: Path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "voice.opus", folder / "voice.opus")
    return folder


def assert_no_signature(text: str, proxy: ExpiryProxy, where: str) -> None:
    assert proxy.signatures, "no URL was signed: nothing to look for"
    for signature in proxy.signatures:
        assert signature not in text, f"a URL's signature in {where}"


def test_an_expired_presigned_url_is_a_recorded_refusal(proxy, s3_spec, recording, settings, make_sandbox, tmp_path,
                                                        caplog):
    contacts = write_contacts(tmp_path / "contacts.csv", contacts_for(3))
    mode = SendMode(SendBy.URL, url_ttl=MIN_URL_TTL)
    sb = make_sandbox()
    caplog.set_level(logging.DEBUG)
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger, LancepilotClient(token=TOKEN, base_url=sb.url) as api:
        in_time = run_batch(settings(recording, contacts, send=mode, store=s3_spec, campaign="in-time"),
                            sender=api, ledger=ledger)
        assert Counter(r.status for r in in_time.rows) == {ST_SENT: 3}  # fetched through the proxy, in time
        assert proxy.refused == Counter() and len(sb.messages()) == 3

        proxy.advance(LATE)
        late = run_batch(settings(recording, contacts, send=mode, store=s3_spec, campaign="late"),
                         sender=api, ledger=ledger)
        rows = ledger.rows("late")
    assert Counter(r.status for r in late.rows) == {ST_FAILED: 3}
    assert sum(proxy.refused.values()) == 3 and len(sb.messages()) == 3  # each fetched, refused, none stored
    assert all("422" in r.error and "AccessDenied: Request has expired" in r.error for r in late.rows), late.rows
    assert {(r.state, r.status, r.sent_by) for r in rows} == {("failed", 422, "url")}
    assert all("Request has expired" in (r.error or "") and "EXPIRYPROXY" not in (r.error or "") for r in rows)
    report = write_report(tmp_path / "report.csv", (r.to_dict() for r in late.rows))
    with open(report, newline="", encoding="utf-8") as f:
        shown = list(csv.DictReader(f))
    assert {(r["status"], r["sent_by"]) for r in shown} == {("failed", "url")}
    assert all("Request has expired" in r["error"] and r["object_key"] for r in shown)
    # audiopipe's own log lines (the CLI shows no other library's: botocore's DEBUG prints each signature
    # it computes, which only a Python caller who turns botocore's logging on sees)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("audiopipe"))
    assert "Request has expired" in ours
    assert_no_signature(report.read_text(encoding="utf-8") + ours + repr(late.rows), proxy, "the report or log")
    ledger_files = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("ledger.sqlite3*"))
    assert_no_signature(ledger_files, proxy, "the ledger")


def test_the_cli_shows_why_an_expired_url_was_refused_and_never_its_signature(proxy, s3_spec, recording,
                                                                              make_sandbox, tmp_path):
    contacts = write_contacts(tmp_path / "contacts.csv", contacts_for(2))
    sb = make_sandbox()
    proxy.advance(LATE)
    state = tmp_path / "state"
    env = clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(state), AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=TOKEN)
    done = invoke(["--debug", "batch", str(recording), "--contacts", str(contacts), "-w", FIXTURES_WS,
                   "--state", str(state / "ledger.sqlite3"), "--send-by", "url", "--store", s3_spec,
                   "--url-ttl", str(MIN_URL_TTL), "--base-url", sb.url, "--report", str(tmp_path / "report.csv"),
                   "--rate", "0"], env=env)
    assert done.returncode == 1, done.stderr  # some failed
    assert sum(proxy.refused.values()) == 2 and sb.messages() == []
    assert "Request has expired" in done.stdout + done.stderr
    assert_no_signature(done.stdout + done.stderr, proxy, "the CLI's output")
    assert_no_signature((tmp_path / "report.csv").read_text(encoding="utf-8"), proxy, "the CLI's report")
    status = invoke(["status", "--state", str(state / "ledger.sqlite3"), "--verbose"], env=env)
    assert_no_signature(status.stdout + status.stderr, proxy, "status")
