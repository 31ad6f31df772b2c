"""The distributed planner on a real PostgreSQL and a real directory store: what one plan records, that
a rerun (a cron planner) adds nothing, that a contact asked twice gets one send, that no path leads out
of the folder, and that a prepare done already expands at once into sends and their tokens."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from helpers import WS, contacts_for, write_csv
from prepare_helpers import batch, broadcast_csv, count, prepare_jobs, store_files, tokens

from audiopipe.campaign.pg import prepares
from audiopipe.distributed.planner import plan_campaign
from audiopipe.store import DirectoryStore

pytestmark = pytest.mark.timeout(60)


def test_a_plan_records_targets_prepares_and_jobs_and_a_rerun_adds_nothing(tmp_path, folder, open_pg, pg_url):
    ledger = open_pg()
    store = DirectoryStore(tmp_path / "store")
    csv = broadcast_csv(tmp_path, 4)

    first = plan_campaign(ledger, store, batch(folder, csv))
    assert (first.sources, first.targets, first.new_targets, first.prepares_deferred, first.sends_ready) == \
        (3, 12, 12, 3, 0)
    assert len(store_files(store)) == 3 and first.store == str(store.root)
    assert count(pg_url, "SELECT count(*) FROM targets") == 12
    assert count(pg_url, "SELECT count(*) FROM prepares WHERE state = 'pending'") == 3
    assert len(prepare_jobs(pg_url)) == 3 and tokens(pg_url, "spring") == 0
    assert count(pg_url, "SELECT count(*) FROM sends") == 0  # nothing to send before it is prepared
    with psycopg.connect(pg_url, autocommit=True) as conn:
        settings = conn.execute("SELECT settings FROM campaigns WHERE campaign = 'spring'").fetchone()[0]
    assert settings == {"rate": 5.0, "attempts": 5, "store": str(store.root), "send_by": "upload",
                        "url_ttl": 604800, "public_url": None}  # uploaded, unless planned with --send-by url

    again = plan_campaign(ledger, store, batch(folder, csv))
    assert (again.targets, again.new_targets, again.sends_ready, again.recipe) == (12, 0, 0, first.recipe)
    assert len(prepare_jobs(pg_url)) == 3  # the queued jobs were found, not doubled
    assert count(pg_url, "SELECT count(*) FROM targets") == 12
    assert count(pg_url, "SELECT count(*) FROM prepares") == 3


def ready_all(url: str, owner: str) -> None:
    """Every pending prepare claimed and ended ready with one made-up part (the prepare job's own end,
    without ffmpeg: what is tested here is the plan around it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO workers (id, host, pid) VALUES (%s, 'here', 1)", (owner,))
        for source, recipe in conn.execute("SELECT source_sha256, recipe FROM prepares").fetchall():
            claim = prepares.claim_prepare(conn, source, recipe, owner, lease=60)
            assert claim is not None
            part = {"key": "ab" * 32 + ".ogg", "sha256": "ab" * 32, "size": 10, "duration": 1.0,
                    "content_type": "audio/ogg"}
            assert prepares.finish_ready(conn, claim, [part]) is not None


def test_a_rerun_leaves_sent_rows_alone_and_a_new_campaign_expands_at_once(tmp_path, folder, open_pg, pg_url):
    ledger = open_pg()
    store = DirectoryStore(tmp_path / "store")
    csv = broadcast_csv(tmp_path, 2)
    plan_campaign(ledger, store, batch(folder, csv))
    ready_all(pg_url, "w1")
    assert count(pg_url, "SELECT count(*) FROM sends WHERE state = 'pending' AND stored IS NOT NULL") == 6
    assert tokens(pg_url, "spring") == 6
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE sends SET state = 'sent', message_id = 'm1' WHERE ctid = (SELECT min(ctid) FROM sends)")

    rerun = plan_campaign(ledger, store, batch(folder, csv))
    assert (rerun.new_targets, rerun.prepares_deferred, rerun.sends_ready) == (0, 0, 0)
    assert count(pg_url, "SELECT count(*) FROM sends WHERE state = 'sent' AND message_id = 'm1'") == 1
    assert count(pg_url, "SELECT count(*) FROM sends") == 6 and tokens(pg_url, "spring") == 6

    autumn = plan_campaign(ledger, store, batch(folder, csv, campaign="autumn"))
    assert (autumn.new_targets, autumn.prepares_deferred, autumn.sends_ready) == (6, 0, 6)
    assert tokens(pg_url, "autumn") == 6 and len(prepare_jobs(pg_url)) == 3  # no new prepare: done already
    assert count(pg_url, "SELECT count(*) FROM sends WHERE campaign = 'autumn' AND state = 'pending'") == 6


def test_a_contact_asked_twice_for_the_same_content_gets_one_target(tmp_path, folder, open_pg, pg_url, audio_dir):
    shutil.copy(audio_dir / "tone.wav", folder / "copy.wav")  # same bytes under another name
    a, b = contacts_for(2)
    csv = write_csv(tmp_path / "c.csv", "contact_id,workspace_id,file",
                    [f"{a},{WS},tone.wav", f"{a},{WS},copy.wav", f"{a},{WS},tone.wav", f"{b},{WS},tone.wav"])
    summary = plan_campaign(open_pg(), DirectoryStore(tmp_path / "store"), batch(folder, csv))

    assert (summary.sources, summary.targets, summary.new_targets, summary.prepares_deferred) == (1, 2, 2, 1)
    assert summary.invalid == ("line 4: duplicate of line 2",)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT contact, file FROM targets ORDER BY contact").fetchall()
    assert sorted(rows) == sorted([(a, "copy.wav"), (b, "tone.wav")])  # one label per target, the first sorted


def test_no_path_leads_out_of_the_folder(tmp_path, folder, open_pg, pg_url, audio_dir):
    outside = tmp_path / "secret.wav"
    shutil.copy(audio_dir / "short.wav", outside)
    (folder / "link.wav").symlink_to(outside)
    a = contacts_for(1)[0]
    csv = write_csv(tmp_path / "c.csv", "contact_id,workspace_id,file",
                    [f"{a},{WS},../secret.wav", f"{a},{WS},{outside}", f"{a},{WS},link.wav", f"{a},{WS},tone.mp3"])
    store = DirectoryStore(tmp_path / "store")
    summary = plan_campaign(open_pg(), store, batch(folder, csv))

    assert (summary.sources, summary.targets) == (1, 1)
    reasons = " | ".join(summary.invalid)
    assert "leaves the folder" in reasons and "absolute path" in reasons and "leads outside the folder" in reasons
    assert len(summary.invalid) == 3
    assert len(store_files(store)) == 1  # the secret was never read into the store
    assert count(pg_url, "SELECT count(*) FROM targets WHERE file = 'tone.mp3'") == 1

    # a broadcast (no file column) refuses the link on sight, and sends the rest
    broadcast = plan_campaign(open_pg(), store, batch(folder, broadcast_csv(tmp_path, 1), campaign="all"))
    assert broadcast.refused == ("link.wav: is a link that leads outside the folder",)
    assert broadcast.sources == 3 and len(store_files(store)) == 3
