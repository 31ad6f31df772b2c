"""A distributed campaign by URL: the planner (``batch --database --send-by url --plan-only``) records the
mode in the campaign's settings, a worker that was given no URL setting of its own follows it until idle,
and each send gives the API the URL of the prepared file in the store (its folder served over real
HTTP on 127.0.0.1 as --public-url). The ledger rows say ``url`` and keep the store key; ``status`` and
the report of a rerun (which sends nothing) show the mode."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from helpers import clean_environ, contacts_for, invoke, write_contacts
from http_folder import serve_folder
from pg_campaign import WS, start_worker, states

pytestmark = pytest.mark.timeout(120)
TOKEN = "test-token"


def cli(*args: str, tmp_path: Path, **env: str):
    proc = invoke(args, env=clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                                          AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=TOKEN, **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_planner_and_worker_send_by_url_as_the_campaign_says(pg_url, make_sandbox, tmp_path, audio_dir):
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.wav", folder / "talk.wav")  # transcoded: the prepared file is not the source
    contacts = contacts_for(20)
    csv_path = write_contacts(tmp_path / "contacts.csv", contacts)
    store = tmp_path / "store"
    sb = make_sandbox()
    with serve_folder(store) as served:
        args = ("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--campaign", "spring",
                "--database", pg_url, "--store", str(store), "--send-by", "url", "--public-url", served.url,
                "--url-ttl", "2d", "--base-url", sb.url)
        planned = cli(*args, "--plan-only", tmp_path=tmp_path)
        assert planned.returncode == 0, planned.stderr
        with psycopg.connect(pg_url) as conn:
            recorded = conn.execute("SELECT settings FROM campaigns WHERE campaign = 'spring'").fetchone()[0]
        assert (recorded["send_by"], recorded["url_ttl"], recorded["public_url"]) == ("url", 172800, served.url)

        worker = start_worker(pg_url, sb.url, tmp_path / "journal", concurrency=4, token=TOKEN)
        out, err = worker.communicate(timeout=90)
        assert worker.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["stopped"] == "idle"
        assert states(pg_url) == {"sent": 20}
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT sent_by, stored FROM sends WHERE campaign = 'spring'").fetchall()
        keys = {stored for _, stored in rows}
        assert {sent_by for sent_by, _ in rows} == {"url"} and len(keys) == 1
        key = keys.pop()
        assert {m["url"] for m in sb.messages()} == {f"{served.url}/{key[:2]}/{key}"}  # the prepared file's URL
        assert Counter(m["contact_id"] for m in sb.messages()) == Counter(dict.fromkeys(contacts, 1))
        assert served.gets == {f"/{key[:2]}/{key}": 20}

        again = cli(*args, "--report", str(tmp_path / "report.csv"), tmp_path=tmp_path)  # works until idle: nothing
        assert again.returncode == 0, again.stderr
    assert len(sb.messages()) == 20 and sb.request_count == 21  # and the rerun's token check, which creates nothing
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as f:
        report = list(csv.DictReader(f))
    assert {(r["status"], r["sent_by"], r["object_key"]) for r in report} == {("already_sent", "url", key)}
    status = cli("status", "--database", pg_url, "--campaign", "spring", tmp_path=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "sent by url: 20" in status.stdout


def test_on_s3_each_send_gives_a_presigned_url_the_api_fetches(pg_url, make_sandbox, tmp_path, audio_dir, s3_spec):
    """The planner on an s3:// store (moto's server on loopback), no --public-url: a worker presigns each
    send's URL for the campaign's --url-ttl; the sandbox fetches every one from S3 and accepts it. The
    signature is kept nowhere: not in the ledger's rows nor its events, not in the report or status."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.wav", folder / "talk.wav")
    contacts = contacts_for(6)
    csv_path = write_contacts(tmp_path / "contacts.csv", contacts)
    sb = make_sandbox()
    args = ("batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--campaign", "spring", "--database", pg_url,
            "--store", s3_spec, "--send-by", "url", "--url-ttl", "3h", "--base-url", sb.url)
    planned = cli(*args, "--plan-only", tmp_path=tmp_path)
    assert planned.returncode == 0, planned.stderr
    worker = start_worker(pg_url, sb.url, tmp_path / "journal", concurrency=3, token=TOKEN)
    out, err = worker.communicate(timeout=90)
    assert worker.returncode == 0, err[-3000:]
    assert states(pg_url) == {"sent": 6}
    messages = sb.messages()
    assert Counter(m["contact_id"] for m in messages) == Counter(dict.fromkeys(contacts, 1))
    assert all(m["size"] and m["mime"].startswith("audio/") for m in messages)  # fetched from S3 and checked
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT sent_by, stored, error FROM sends").fetchall()
        events = conn.execute("SELECT coalesce(detail::text, '') FROM events").fetchall()
    key = rows[0][1]
    assert {(r[0], r[1]) for r in rows} == {("url", key)}
    assert {m["url"].split("?", 1)[0] for m in messages} == {m["url"].split("?", 1)[0] for m in messages[:1]}
    assert messages[0]["url"].split("?", 1)[0].endswith(key)  # the prepared file's object
    again = cli(*args, "--report", str(tmp_path / "report.csv"), tmp_path=tmp_path)
    status = cli("status", "--database", pg_url, "--json", tmp_path=tmp_path)
    shown = " ".join([str(rows), str(events), again.stdout, again.stderr, status.stdout, out, err,
                      (tmp_path / "report.csv").read_text(encoding="utf-8")])
    assert "X-Amz-Signature=" not in shown.replace("X-Amz-Signature=...", "")
    assert "X-Amz-Credential=" not in shown.replace("X-Amz-Credential=...", "")
