"""The prepare job, called in-process as a worker calls it, on real PostgreSQL, a real directory store and
the real ffmpeg: it prepares once, stores the parts, expands every target into sends with their tokens,
fails the targets of an input that is not audio with its reason, and two jobs at once encode once."""

from __future__ import annotations

import threading

import psycopg
import pytest
from helpers import WS, contacts_for, write_csv
from prepare_helpers import batch, broadcast_csv, context, count, prepare_jobs, store_files, tokens

from audiopipe.distributed.planner import plan_campaign
from audiopipe.distributed.prepare_task import PrepareDone, prepare_job
from audiopipe.store import DirectoryStore
from audiopipe.store.directory import hash_file

pytestmark = pytest.mark.timeout(90)


def run_jobs(ctx, url: str) -> list[PrepareDone]:  # type: ignore[no-untyped-def]
    return [prepare_job(ctx, j["campaign"], j["source"], j["recipe"]) for j in prepare_jobs(url)]


def test_a_prepare_job_stores_the_parts_expands_the_targets_and_defers_their_tokens(
        tmp_path, folder, open_pg, pg_url, ffmpeg_log):
    ledger = open_pg()
    store = DirectoryStore(tmp_path / "store")
    plan_campaign(ledger, store, batch(folder, broadcast_csv(tmp_path, 3)))
    assert count(pg_url, "SELECT count(*) FROM sends") == 0 and tokens(pg_url, "spring") == 0

    assert run_jobs(context(ledger), pg_url) == [PrepareDone.READY] * 3
    assert ffmpeg_log.completed == ffmpeg_log.started == 1  # tone.wav converted; the mp3 and opus kept
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT state, part, parts, stored, prepared_sha256, file FROM sends").fetchall()
        parts = [p for (ps,) in conn.execute("SELECT parts FROM prepares WHERE state = 'ready'") for p in ps]
        assert conn.execute("SELECT count(*) FROM prepares WHERE state <> 'ready' OR attempts <> 1").fetchone()[0] == 0
    assert len(rows) == 9 and {r[:3] for r in rows} == {("pending", 1, 1)}
    assert {r[5] for r in rows} == {"tone.wav", "tone.mp3", "voice.opus"}
    for _, _, _, key, sha, _ in rows:  # each send names a stored part whose bytes are the ones recorded
        assert hash_file(store.open_local(key))[0] == sha
    assert {p["content_type"] for p in parts} == {"audio/ogg", "audio/mpeg"} and len(parts) == 3
    assert tokens(pg_url, "spring") == 9  # one token per send, committed with the rows
    # 3 sources, the converted tone, and voice.opus kept as .ogg (the mp3 kept as it is is its own source)
    assert len(store_files(store)) == 5

    assert run_jobs(context(ledger), pg_url) == [PrepareDone.NOTHING] * 3  # duplicate jobs do nothing
    assert ffmpeg_log.started == 1 and tokens(pg_url, "spring") == 9


def test_a_split_recording_waits_part_by_part(tmp_path, open_pg, pg_url, long_wav):
    folder = tmp_path / "rec"
    folder.mkdir()
    long_wav(folder / "talk.wav", 60)
    ledger = open_pg()
    plan_campaign(ledger, DirectoryStore(tmp_path / "store"),
                  batch(folder, broadcast_csv(tmp_path, 2), max_size=20_000, on_overflow="split"))
    assert run_jobs(context(ledger), pg_url) == [PrepareDone.READY]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT part, parts, next_at = 'infinity' FROM sends ORDER BY contact, part").fetchall()
    n = rows[0][1]
    assert n >= 2 and len(rows) == 2 * n
    assert [(r[0], r[2]) for r in rows[:n]] == [(1, False)] + [(k, True) for k in range(2, n + 1)]
    assert tokens(pg_url, "spring") == 2 * n


def test_an_input_that_is_not_audio_fails_its_targets_with_the_reason(tmp_path, folder, open_pg, pg_url,
                                                                     audio_dir, ffmpeg_log):
    (folder / "notes.mp3").write_bytes((audio_dir / "text.mp3").read_bytes())
    a, b = contacts_for(2)
    csv = write_csv(tmp_path / "c.csv", "contact_id,workspace_id,file",
                    [f"{a},{WS},notes.mp3", f"{b},{WS},notes.mp3", f"{b},{WS},voice.opus"])
    ledger = open_pg()
    plan_campaign(ledger, DirectoryStore(tmp_path / "store"), batch(folder, csv))
    assert sorted(run_jobs(context(ledger), pg_url)) == sorted([PrepareDone.FAILED, PrepareDone.READY])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        failed = conn.execute("SELECT contact, part, parts, error FROM sends WHERE state = 'failed'").fetchall()
        error = conn.execute("SELECT error FROM prepares WHERE state = 'failed'").fetchone()[0]
    assert error == "is not an audio or video file ffmpeg can read (corrupt, truncated or another kind of file)"
    assert sorted(failed) == sorted([(c, 1, 1, f"could not prepare the file: {error}") for c in (a, b)])
    assert tokens(pg_url, "spring") == 1  # only the opus goes out
    assert ffmpeg_log.started == 0

    # a later campaign asking for the same file fails at once, without a prepare job
    before = len(prepare_jobs(pg_url))
    summary = plan_campaign(ledger, DirectoryStore(tmp_path / "store"), batch(folder, csv, campaign="autumn"))
    assert summary.prepares_deferred == 0 and len(prepare_jobs(pg_url)) == before
    assert count(pg_url, "SELECT count(*) FROM sends WHERE campaign = 'autumn' AND state = 'failed'") == 2


def test_two_jobs_of_one_source_at_once_encode_it_once(tmp_path, open_pg, pg_url, long_wav, ffmpeg_log):
    folder = tmp_path / "rec"
    folder.mkdir()
    long_wav(folder / "talk.wav", 120)
    ledger = open_pg()
    store = DirectoryStore(tmp_path / "store")
    plan_campaign(ledger, store, batch(folder, broadcast_csv(tmp_path, 2)))
    (job,) = prepare_jobs(pg_url)
    ctx = context(ledger)
    done: list[PrepareDone] = []
    start = threading.Barrier(2)

    def one() -> None:
        start.wait()
        done.append(prepare_job(ctx, job["campaign"], job["source"], job["recipe"]))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(done) == sorted([PrepareDone.READY, PrepareDone.NOTHING])
    assert ffmpeg_log.started == ffmpeg_log.completed == 1
    assert count(pg_url, "SELECT attempts FROM prepares") == 1
    assert count(pg_url, "SELECT count(*) FROM sends") == 2 and tokens(pg_url, "spring") == 2
    assert len(store_files(store)) == 2  # the source and its one prepared part


def test_a_prepare_of_a_stopping_worker_is_deferred_again_untouched(tmp_path, folder, open_pg, pg_url):
    ledger = open_pg()
    plan_campaign(ledger, DirectoryStore(tmp_path / "store"), batch(folder, broadcast_csv(tmp_path, 1)))
    ctx = context(ledger)
    ctx.stop.set()
    first = prepare_jobs(pg_url)[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as procrastinate does when the job starts
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE args = %s::jsonb",
                     (psycopg.types.json.Jsonb(first),))
    assert prepare_job(ctx, first["campaign"], first["source"], first["recipe"]) is PrepareDone.DEFERRED
    assert count(pg_url, "SELECT count(*) FROM prepares WHERE state = 'pending' AND attempts = 0") == 3
    assert prepare_jobs(pg_url).count(first) == 2  # the one running and the one deferred for later


def test_a_prepare_given_up_three_times_fails_for_good(tmp_path, folder, open_pg, pg_url, ffmpeg_log):
    ledger = open_pg()
    plan_campaign(ledger, DirectoryStore(tmp_path / "store"), batch(folder, broadcast_csv(tmp_path, 2)))
    job = next(j for j in prepare_jobs(pg_url) if count(
        pg_url, "SELECT count(*) FROM targets WHERE source_sha256 = %s AND file = 'tone.wav'", j["source"]))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # three workers died or gave up on it before
        conn.execute("UPDATE prepares SET state = 'preparing', owner = NULL, attempts = 3, error = 'disk full' "
                     "WHERE source_sha256 = %s", (job["source"],))
    assert prepare_job(context(ledger), job["campaign"], job["source"], job["recipe"]) is PrepareDone.FAILED
    assert ffmpeg_log.started == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        errors = [r[0] for r in conn.execute("SELECT error FROM sends WHERE state = 'failed'")]
    assert errors == ["could not prepare the file: gave up after 3 tries: disk full"] * 2
