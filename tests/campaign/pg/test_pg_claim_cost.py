"""A claim of one send of a campaign touches a handful of index and heap pages, however many sends of it
are ready: it walks the campaign's ready rows in ``next_at`` order and stops at the first it can lock.

Without an index on (campaign, next_at) over the ready rows, PostgreSQL took every ready row of the
campaign through (campaign, state), anti-joined each with ``campaigns`` and sorted them all to keep
one: 3.7 ms a claim for 1,200 sends, the biggest CPU cost of a sending worker in PostgreSQL, and O(n)
per claim, O(n^2) for a campaign (found profiling bench/bench_distributed.py's throughput, where it
kept 3 workers under 2.5 x one). Counted in buffers (EXPLAIN ANALYZE BUFFERS), not in time."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from pg_campaign import seed

from audiopipe.campaign.ledger import DEFERRED, PENDING, SENDING, SENT
from audiopipe.campaign.pg.claims import _CLAIM


def picked_buffers(url: str) -> int:
    """Shared buffers the claim's row picking touched (run in a transaction rolled back: nothing claimed)."""
    args = {"pending": PENDING, "deferred": DEFERRED, "sent": SENT, "sending": SENDING, "campaign": "spring",
            "limit": 1, "owner": "w1", "claim": uuid.uuid4()}
    with psycopg.connect(url) as conn:
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _CLAIM, args).fetchone()[0]  # type: ignore[index]
        conn.rollback()
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if node.get("Subplan Name") == "CTE picked":
            return int(node["Shared Hit Blocks"]) + int(node.get("Shared Read Blocks", 0))
        nodes.extend(node.get("Plans", []))
    raise AssertionError(f"no CTE picked in {json.dumps(plan)[:2000]}")


def test_a_claim_reads_a_few_pages_whatever_the_number_of_ready_sends(pg_url: str, tmp_path: Path) -> None:
    seed(pg_url, tmp_path / "store", 3000)
    picked_buffers(pg_url)  # the first visit after the bulk insert also sets the rows' hint bits
    assert picked_buffers(pg_url) < 60  # 9 pages here with the index; 6,281 without it
