"""Seeding a distributed campaign straight into PostgreSQL for the worker tests (no planner needed):
the campaign row with its settings, ``sends`` rows whose ``stored`` keys name real audio files put into
a DirectoryStore, and one send token per row, all in one transaction, as a planner commits them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from audiopipe.campaign.ledger import PlannedSend, SendKey
from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.campaigns import CampaignSettings, save_settings
from audiopipe.campaign.pg.plan import record_plan
from audiopipe.store import DirectoryStore

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "audio"
PART_FILES = ("voice.opus", "vorbis.ogg", "tone.mp3")  # real audio the sandbox's sniffing accepts


@dataclass(frozen=True)
class Seeded:
    campaign: str
    contacts: list[str]
    parts: int

    @property
    def rows(self) -> int:
        return len(self.contacts) * self.parts


def contact(i: int) -> str:
    return str(uuid.UUID(int=0xC0FFEE << 96 | i))


def seed(url: str, store_dir: Path, count: int, *, parts: int = 1, campaign: str = "spring",
         rate: float | None = None, attempts: int = 5) -> Seeded:
    """``count`` contacts, each to receive one recording of ``parts`` parts (each part a real file in
    the store), with ``count * parts`` send tokens, committed together."""
    store = DirectoryStore(store_dir)
    keys = [store.put(FIXTURES / PART_FILES[p % len(PART_FILES)], suffix=Path(PART_FILES[p % len(PART_FILES)]).suffix)
            for p in range(parts)]
    source = "5e" * 32
    contacts = [contact(i) for i in range(count)]
    sends = [PlannedSend(SendKey(campaign, WS, c, source, p + 1), parts, "talk.wav", keys[p].sha256)
             for c in contacts for p in range(parts)]
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        save_settings(conn, campaign, CampaignSettings(rate=rate, attempts=attempts, store=str(store_dir)))
        record_plan(conn, "seed", sends, campaign=campaign)
        for p, stored in enumerate(keys, start=1):
            conn.execute("UPDATE sends SET stored = %s WHERE campaign = %s AND part = %s", (stored.key, campaign, p))
        jobs.defer_tokens(conn, campaign, len(sends))
    return Seeded(campaign, contacts, parts)


def states(url: str, campaign: str = "spring") -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT state, count(*) FROM sends WHERE campaign = %s GROUP BY state", (campaign,))
        return {str(r[0]): int(r[1]) for r in rows}


def ledger_rows(url: str, campaign: str = "spring") -> dict[tuple[str, int], tuple[str, str | None, int]]:
    """(contact, part) -> (state, message_id, attempts)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT contact, part, state, message_id, attempts FROM sends WHERE campaign = %s",
                            (campaign,)).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


WORKER_SCRIPT = """
import json, sys
from audiopipe.distributed.context import ApiSettings
from audiopipe.distributed.worker import run_worker
args = json.loads(sys.argv[1])
summary = run_worker(args["url"], concurrency=args["concurrency"], until_idle=args["until_idle"],
                     api=ApiSettings(base_url=args["base_url"]), journal_dir=args["journal"], lease=args["lease"])
print(json.dumps({"worker": summary.worker_id, "ends": summary.ends, "stopped": summary.stopped}), flush=True)
"""


def start_worker(url: str, base_url: str, journal: Path, *, concurrency: int = 4, until_idle: bool = True,
                 token: str, lease: float = 60.0, **popen: Any) -> subprocess.Popen[str]:
    """A worker process (what ``audiopipe worker`` runs), its summary as JSON on stdout."""
    args = {"url": url, "base_url": base_url, "journal": str(journal), "concurrency": concurrency,
            "until_idle": until_idle, "lease": lease}
    env = dict(os.environ, LANCEPILOT_TOKEN=token)
    env.pop("LANCEPILOT_TOKEN_FILE", None)
    return subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, json.dumps(args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
