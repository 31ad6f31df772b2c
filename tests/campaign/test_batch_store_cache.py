"""The store as the second tier of the preparation cache, end to end: real ffmpeg (behind a wrapper that
notes every run that writes a file), moto's S3 server as the store, a real SQLite ledger per "machine"
and real HTTP to the sandbox.

Two runs of the same batch, each with its own empty local cache (AUDIOPIPE_CACHE_DIR) and its own ledger,
as two machines would be: the second restores the first's prepared file from the store instead of
encoding, and sends the same bytes. A part damaged in the store is refused and the file encoded again
(and the store healed). Without --store nothing changes: each empty cache means an encode."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import contacts_for, write_contacts

from audiopipe.campaign.batch import ST_SENT, BatchResult, BatchSettings, run_batch
from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.preparation.pipeline import PrepareSettings
from audiopipe.send.client import LancepilotClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "store-cache-token"


class FFmpegRuns:
    """The ffmpeg runs that wrote a file (not the decode checks to the null muxer), from the wrapper's log."""

    def __init__(self, log: Path) -> None:
        self.log = log

    @property
    def started(self) -> int:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return sum(1 for ln in lines if ln.startswith("start ") and " -i " in ln and " -f null " not in ln)


@pytest.fixture
def ffmpeg_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FFmpegRuns:
    """AUDIOPIPE_FFMPEG -> a wrapper that notes each run, then runs the real ffmpeg."""
    log = tmp_path / "ffmpeg.log"
    wrapper = tmp_path / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "start $$ $*" >> "{log}"\nexec "{shutil.which("ffmpeg")}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(wrapper))
    return FFmpegRuns(log)


@pytest.fixture
def to_convert(tmp_path: Path, audio_dir: Path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.wav", folder / "tone.wav")  # a WAV is never sent as it is: an encode
    return folder


def run_as_machine(name: str, base: BatchSettings, sandbox_url: str, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> BatchResult:
    """The batch as a machine of its own runs it: its own copy of the recordings, an empty local cache
    and its own ledger."""
    cache = tmp_path / name / "cache"
    folder = tmp_path / name / "recordings"
    if not folder.exists():
        shutil.copytree(base.folder, folder)
    monkeypatch.setenv("AUDIOPIPE_CACHE_DIR", str(cache))  # the S3 store's downloads go there too
    s = dataclasses.replace(base, folder=folder, prepare=PrepareSettings(cache_dir=cache))
    with SqliteLedger(tmp_path / name / "ledger.sqlite3") as ledger, \
            LancepilotClient(token=TOKEN, base_url=sandbox_url) as api:
        return run_batch(s, sender=api, ledger=ledger)


def sent_bytes(sandbox) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [Path(m["file_path"]).read_bytes() for m in sandbox.messages()]


def parts_in(client, bucket: str) -> list[str]:  # type: ignore[no-untyped-def]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [k for k in keys if "/manifests/" not in k and not k.endswith(".json")]


def test_a_second_machine_restores_from_the_store_instead_of_encoding(to_convert, settings, make_sandbox, tmp_path,
                                                                        monkeypatch, s3_spec, s3_bucket, s3_client,
                                                                        ffmpeg_runs):
    base = settings(to_convert, write_contacts(tmp_path / "contacts.csv", contacts_for(3)), store=s3_spec)
    sb = make_sandbox()
    first = run_as_machine("one", base, sb.url, tmp_path, monkeypatch)
    assert Counter(r.status for r in first.rows) == {ST_SENT: 3}
    encodes = ffmpeg_runs.started  # one, or a few when a pass is re-planned
    assert encodes >= 1
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sum("/manifests/" in k for k in keys) == 1 and sum(k.endswith(".json") for k in keys) == 1
    [part] = parts_in(s3_client, s3_bucket)

    second = run_as_machine("two", base, sb.url, tmp_path, monkeypatch)
    assert Counter(r.status for r in second.rows) == {ST_SENT: 3}
    assert ffmpeg_runs.started == encodes  # restored from the store: no ffmpeg wrote anything
    sent = sent_bytes(sb)
    assert len(sent) == 6 and len(set(sent)) == 1  # both machines sent the very same file
    assert hashlib.sha256(sent[0]).hexdigest() == part.rsplit("/", 1)[1][:64]  # the one in the store
    assert list((tmp_path / "two" / "cache").glob("*/*/manifest.json"))  # now in the local tier too


def test_a_damaged_part_in_the_store_is_refused_and_encoded_again(to_convert, settings, make_sandbox, tmp_path,
                                                                  monkeypatch, s3_spec, s3_bucket, s3_client,
                                                                  ffmpeg_runs, caplog):
    base = settings(to_convert, write_contacts(tmp_path / "contacts.csv", contacts_for(2)), store=s3_spec)
    sb = make_sandbox()
    run_as_machine("one", base, sb.url, tmp_path, monkeypatch)
    encodes = ffmpeg_runs.started
    [part] = parts_in(s3_client, s3_bucket)
    good = s3_client.get_object(Bucket=s3_bucket, Key=part)["Body"].read()
    s3_client.put_object(Bucket=s3_bucket, Key=part, Body=good[:-100] + b"tampered")  # damage behind its back

    caplog.set_level(logging.WARNING)
    second = run_as_machine("two", base, sb.url, tmp_path, monkeypatch)
    assert Counter(r.status for r in second.rows) == {ST_SENT: 2}
    assert ffmpeg_runs.started == 2 * encodes  # refused, so encoded again
    assert "does not hold the content its key names" in caplog.text
    assert all(b"tampered" not in data for data in sent_bytes(sb))  # the damage never went out
    healed = s3_client.get_object(Bucket=s3_bucket, Key=part)["Body"].read()
    assert hashlib.sha256(healed).hexdigest() == part.rsplit("/", 1)[1][:64]  # put again whole

    run_as_machine("three", base, sb.url, tmp_path, monkeypatch)
    assert ffmpeg_runs.started == 2 * encodes  # and the next machine restores it


def test_without_a_store_each_empty_cache_encodes(to_convert, settings, make_sandbox, tmp_path, monkeypatch,
                                                 ffmpeg_runs):
    base = settings(to_convert, write_contacts(tmp_path / "contacts.csv", contacts_for(2)))
    sb = make_sandbox()
    run_as_machine("one", base, sb.url, tmp_path, monkeypatch)
    encodes = ffmpeg_runs.started
    run_as_machine("two", base, sb.url, tmp_path, monkeypatch)
    assert encodes >= 1 and ffmpeg_runs.started == 2 * encodes and len(sb.messages()) == 4
    run_as_machine("two", dataclasses.replace(base, campaign="again"), sb.url, tmp_path, monkeypatch)
    assert ffmpeg_runs.started == 2 * encodes  # the local cache still works as it did


def test_a_dry_run_reads_the_store_but_puts_nothing_there(to_convert, settings, tmp_path, monkeypatch, s3_spec,
                                                          s3_bucket, s3_client, ffmpeg_runs):
    base = settings(to_convert, write_contacts(tmp_path / "contacts.csv", contacts_for(2)), store=s3_spec,
                    dry_run=True)
    monkeypatch.setenv("AUDIOPIPE_CACHE_DIR", str(tmp_path / "dry" / "cache"))
    run_batch(dataclasses.replace(base, prepare=PrepareSettings(cache_dir=tmp_path / "dry" / "cache")), sender=None,
              state_path=tmp_path / "dry" / "ledger.sqlite3")
    assert ffmpeg_runs.started >= 1
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []  # nothing put by a dry run
