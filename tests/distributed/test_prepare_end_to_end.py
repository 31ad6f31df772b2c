"""A plan carried out by a real procrastinate worker against the real sandbox: the prepare jobs run in
the worker, each unique source is converted once, every target is sent once, a file that is not audio
fails its targets with the reason, and the worker leaves once nothing is left; a rerun of the plan and
of the worker sends nothing more."""

from __future__ import annotations

import shutil
from collections import Counter

import psycopg
import pytest
from helpers import contacts_for
from prepare_helpers import batch, broadcast_csv, count

from audiopipe.distributed.context import ApiSettings
from audiopipe.distributed.planner import plan_campaign
from audiopipe.distributed.worker import run_worker
from audiopipe.store import open_store

pytestmark = pytest.mark.timeout(120)
TOKEN = "test-token"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANCEPILOT_TOKEN", TOKEN)
    monkeypatch.delenv("LANCEPILOT_TOKEN_FILE", raising=False)


def test_a_planned_campaign_is_prepared_once_and_sent_once_by_a_worker(tmp_path, folder, audio_dir, open_pg,
                                                                       pg_url, make_sandbox, ffmpeg_log, store_spec,
                                                                       monkeypatch):
    """On a folder store and on S3: the worker opens the store the plan names (its spec in the campaign's
    settings), fetches the sources and puts the prepared parts there."""
    shutil.copy(audio_dir / "text.mp3", folder / "notes.mp3")  # named like audio, but text
    sb = make_sandbox()
    ledger = open_pg()
    settings = batch(folder, broadcast_csv(tmp_path, 3))
    plan = plan_campaign(ledger, open_store(store_spec), settings)
    assert (plan.sources, plan.targets, plan.prepares_deferred) == (4, 12, 4)
    monkeypatch.setenv("AUDIOPIPE_CACHE_DIR", str(tmp_path / "worker-cache"))  # as on another machine

    def work():  # type: ignore[no-untyped-def]
        return run_worker(pg_url, until_idle=True, concurrency=3, api=ApiSettings(base_url=sb.url),
                          journal_dir=tmp_path / "journal")

    summary = work()
    assert summary.stopped == "idle"
    people = contacts_for(3)
    assert Counter(m["contact_id"] for m in sb.messages()) == Counter(dict.fromkeys(people, 3))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall())
        reasons = {r[0] for r in conn.execute("SELECT error FROM sends WHERE state = 'failed'")}
    assert states == {"sent": 9, "failed": 3}
    assert len(reasons) == 1 and next(iter(reasons)).startswith("could not prepare the file: is not an audio")
    assert ffmpeg_log.started == ffmpeg_log.completed == 1  # tone.wav, once for three contacts
    assert count(pg_url, "SELECT count(*) FROM prepares WHERE attempts = 1") == 4

    with psycopg.connect(pg_url, autocommit=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT stored FROM sends WHERE state = 'sent'")}
        (spec,) = conn.execute("SELECT settings->>'store' FROM campaigns").fetchone()
        sources = {r[0] for r in conn.execute("SELECT source_sha256 FROM prepares")}
    assert spec == store_spec and len(stored) == 3 and all(open_store(spec).exists(key) for key in stored)
    if spec.startswith("s3://"):  # the worker downloaded each source from S3 (its cache started empty)
        fetched = {p.name[:64] for p in (tmp_path / "worker-cache").rglob("*") if p.is_file()}
        assert len(sources) == 4 and sources <= fetched

    again = plan_campaign(ledger, open_store(store_spec), settings)
    assert (again.new_targets, again.prepares_deferred, again.sends_ready, again.tokens_added) == (0, 0, 0, 0)
    assert work().stopped == "idle"
    assert len(sb.messages()) == 9 and ffmpeg_log.started == 1
