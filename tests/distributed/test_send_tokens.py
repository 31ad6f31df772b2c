"""Send tokens carried out by a real procrastinate worker (in this process) against the real sandbox:
every row sent exactly once, a 429 deferred and retried until sent, a lost answer or a 500 left unknown
and never resent, a 401 stopping the campaign with nothing more sent, split parts in order, and the
worker leaving on its own once no work is left."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psycopg
import pytest
from pg_campaign import WS, ledger_rows, seed, states

from audiopipe.campaign.pg import jobs
from audiopipe.distributed.context import ApiSettings
from audiopipe.distributed.worker import run_worker
from audiopipe.sandbox.config import Faults

pytestmark = pytest.mark.timeout(120)
TOKEN = "test-token"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANCEPILOT_TOKEN", TOKEN)
    monkeypatch.delenv("LANCEPILOT_TOKEN_FILE", raising=False)


def work(url: str, sandbox, tmp_path: Path, **kw):
    kw.setdefault("concurrency", 4)
    return run_worker(url, until_idle=True, api=ApiSettings(base_url=sandbox.url), journal_dir=tmp_path / "journal",
                      **kw)


def per_contact(sandbox) -> Counter[str]:
    return Counter(m["contact_id"] for m in sandbox.messages())


def test_every_row_is_sent_once_and_the_worker_leaves_when_idle(pg_url, make_sandbox, tmp_path):
    sb = make_sandbox()
    seeded = seed(pg_url, tmp_path / "store", 30)
    summary = work(pg_url, sb, tmp_path)
    assert summary.stopped == "idle" and summary.sent == 30
    assert states(pg_url) == {"sent": 30}
    assert per_contact(sb) == Counter(dict.fromkeys(seeded.contacts, 1))
    rows = ledger_rows(pg_url)
    assert {m["id"] for m in sb.messages()} == {r[1] for r in rows.values()}  # the ledger holds each message id
    assert all(m["workspace_id"] == WS and m["file_name"] == "talk.opus" for m in sb.messages())
    with psycopg.connect(pg_url) as conn:  # nothing left in flight, no token left waiting
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'").fetchone()[0] == 0
        assert jobs.sends_to_come(conn, "spring") == (0, None)


def test_429s_are_deferred_paused_for_all_and_retried_until_sent(pg_url, make_sandbox, tmp_path):
    sb = make_sandbox(faults=Faults(seed=3, rate_429=0.3, retry_after=1))
    seeded = seed(pg_url, tmp_path / "store", 12)
    summary = work(pg_url, sb, tmp_path)
    assert summary.stopped == "idle"
    assert states(pg_url) == {"sent": 12}
    assert per_contact(sb) == Counter(dict.fromkeys(seeded.contacts, 1))
    assert summary.ends.get("deferred", 0) > 0 and sb.request_count == 12 + summary.ends["deferred"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT pauses FROM rate_limits WHERE name = 'spring'").fetchone()[0] > 0
        retried = conn.execute("SELECT count(*) FROM sends WHERE attempts > 1").fetchone()[0]
    assert retried > 0


def test_lost_answers_and_500s_are_unknown_and_never_sent_again(pg_url, make_sandbox, tmp_path):
    sb = make_sandbox(faults=Faults(seed=5, rate_lost=0.25, lost_mode="drop", rate_500=0.15))
    seed(pg_url, tmp_path / "store", 40)
    summary = work(pg_url, sb, tmp_path)
    assert summary.stopped == "idle"
    found = states(pg_url)
    assert found.get("unknown", 0) > 0 and found["sent"] + found["unknown"] == 40
    assert sb.request_count == 40  # one request per row: nothing unknown was tried again
    assert max(per_contact(sb).values()) == 1
    rows = ledger_rows(pg_url)
    assert all(attempts == 1 for _state, _id, attempts in rows.values())
    sent_ids = {r[1] for r in rows.values() if r[0] == "sent"}
    assert sent_ids <= {m["id"] for m in sb.messages()}


def test_a_401_stops_the_campaign_and_nothing_more_is_sent(pg_url, make_sandbox, tmp_path, monkeypatch):
    sb = make_sandbox()
    seed(pg_url, tmp_path / "store", 30)
    monkeypatch.setenv("LANCEPILOT_TOKEN", "a-wrong-token")
    summary = work(pg_url, sb, tmp_path, concurrency=3)
    assert summary.stopped == "idle"  # a stopped campaign is no work: the worker leaves
    assert sb.messages() == [] and sb.request_count <= 3  # only requests already on their way when it stopped
    with psycopg.connect(pg_url) as conn:
        why = conn.execute("SELECT stopped_why FROM campaigns WHERE campaign = 'spring'").fetchone()[0]
        assert "401" in why
        assert jobs.sends_to_come(conn, "spring") == (0, None)
    found = states(pg_url)
    assert "sent" not in found and "sending" not in found and found.get("deferred", 0) == sb.request_count


def test_split_parts_go_in_order(pg_url, make_sandbox, tmp_path):
    sb = make_sandbox(faults=Faults(seed=2, latency=0.02))
    seeded = seed(pg_url, tmp_path / "store", 6, parts=3)
    summary = work(pg_url, sb, tmp_path)
    assert summary.stopped == "idle" and states(pg_url) == {"sent": 18}
    order: dict[str, list[str]] = {}
    for m in sb.messages():  # oldest first
        order.setdefault(m["contact_id"], []).append(m["file_name"])
    assert order == {c: ["talk.part1of3.opus", "talk.part2of3.ogg", "talk.part3of3.mp3"] for c in seeded.contacts}


def test_a_campaign_rate_spaces_the_requests_of_all_its_workers(pg_url, make_sandbox, tmp_path):
    from datetime import datetime

    sb = make_sandbox()
    seed(pg_url, tmp_path / "store", 13, rate=20.0)
    assert work(pg_url, sb, tmp_path, concurrency=6).sent == 13
    times = sorted(datetime.strptime(m["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ") for m in sb.messages())
    assert (times[-1] - times[0]).total_seconds() >= 12 / 20 * 0.9  # 6 at once would take a few ms without the pace
