"""The audit after a distributed run (see chaos_harness.py): what the ledger and the sandbox say, side by
side: duplicates, lost rows, unknowns the reaper made; and the ledger in a few lines for a failure's message."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import psycopg
from chaos_harness import CAMPAIGN, FINAL

from audiopipe.sandbox.app import Sandbox


@dataclass
class Audit:
    """What the ledger and the sandbox say after a run."""

    planned: int                    # (contact, source) pairs the contacts CSV and the folder make
    targets: int                    # of those, rows in targets
    pairs_with_all_parts: int       # (contact, source) whose sends rows are parts 1..n of the prepared parts
    states: dict[str, int]
    not_final: int
    duplicates: int                 # (contact, content, file name) stored more than once by the sandbox
    sent_missing: int               # sent rows whose message id the sandbox does not hold
    stored_unaccounted: int         # messages the sandbox holds that no sent or unknown row accounts for
    reaped: int                     # rows left unknown by the reaper (a worker died with them in flight)
    stored: int

    @property
    def unknown(self) -> int:
        return self.states.get("unknown", 0)

    @property
    def lost(self) -> int:
        return self.not_final + self.sent_missing + self.stored_unaccounted + (self.planned - self.pairs_with_all_parts)


_ROWS = """
SELECT s.contact, s.source_sha256, s.part, s.parts, s.state, s.message_id, s.stored,
       (SELECT jsonb_array_length(p.parts) FROM prepares p WHERE p.source_sha256 = s.source_sha256
         AND p.state = 'ready' LIMIT 1)
  FROM sends s WHERE s.campaign = %s"""


# rows unknown in the end that the reaper made so (a slow worker's result may have landed on one since:
# then it is sent, and not counted)
_REAPED = """
SELECT count(*) FROM sends s WHERE s.campaign = %s AND s.state = 'unknown' AND EXISTS (
    SELECT 1 FROM events e WHERE (e.campaign, e.workspace, e.contact, e.source_sha256, e.part)
        = (s.campaign, s.workspace, s.contact, s.source_sha256, s.part)
       AND e.state = 'unknown' AND e.detail ? 'reaped')"""


def audit(url: str, sandbox: Sandbox, contacts: list[str], sources: int) -> Audit:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_ROWS, (CAMPAIGN,)).fetchall()
        targets = conn.execute("SELECT count(*) FROM targets WHERE campaign = %s", (CAMPAIGN,)).fetchone()
        reaped = conn.execute(_REAPED, (CAMPAIGN,)).fetchone()
    messages = sandbox.messages()
    stored = Counter((m["workspace_id"], m["contact_id"], m["sha256"], m["file_name"]) for m in messages)
    by_id = {m["id"]: m for m in messages}
    parts: dict[tuple[str, str], set[int]] = {}
    wanted: dict[tuple[str, str], int] = {}
    states: Counter[str] = Counter()
    accounted: set[str] = set()
    unknown_keys: Counter[tuple[str, str]] = Counter()
    for contact, source, part, n, state, message_id, key, prepared in rows:
        parts.setdefault((contact, source), set()).add(part)
        wanted[(contact, source)] = prepared or n
        states[state] += 1
        if state == "sent" and message_id in by_id:
            accounted.add(message_id)
        if state == "unknown" and key:
            unknown_keys[(contact, key.split(".")[0])] += 1
    unaccounted = 0
    for m in messages:
        if m["id"] in accounted:
            continue
        who = (m["contact_id"], m["sha256"])
        if unknown_keys[who] > 0:
            unknown_keys[who] -= 1          # one unknown row explains one stored message, no more
        else:
            unaccounted += 1
    return Audit(
        planned=len(contacts) * sources, targets=int(targets[0]) if targets else 0,
        pairs_with_all_parts=sum(1 for k, got in parts.items() if got == set(range(1, wanted[k] + 1))),
        states=dict(states), not_final=sum(n for s, n in states.items() if s not in FINAL),
        duplicates=sum(n - 1 for n in stored.values() if n > 1),
        sent_missing=sum(1 for r in rows if r[4] == "sent" and r[5] not in by_id),
        stored_unaccounted=unaccounted, reaped=int(reaped[0]) if reaped else 0, stored=len(messages))




def ledger_story(url: str) -> str:
    """What the ledger and the queue hold, in a few lines: for a failure's message."""
    queries = {
        "sends": "SELECT state, count(*) FROM sends GROUP BY 1 ORDER BY 1",
        "prepares": "SELECT state, attempts, owner FROM prepares ORDER BY 1",
        "jobs": "SELECT task_name, status, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2",
        "workers": "SELECT id, pid, stopped_at IS NOT NULL, "
                   "round(extract(epoch FROM clock_timestamp() - heartbeat_at)) FROM workers ORDER BY started_at",
    }
    lines = []
    with psycopg.connect(url, autocommit=True) as conn:
        for name, sql in queries.items():
            lines.append(f"{name}: {conn.execute(sql).fetchall()}")
    return "\n".join(lines)
