"""Plain helpers the planner and prepare-job tests share (their fixtures are in conftest.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from helpers import WS, contacts_for, write_csv

from audiopipe.campaign.pg import jobs
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.campaign.settings import BatchSettings
from audiopipe.distributed.context import WorkerContext
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.store import DirectoryStore


def count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


def prepare_jobs(url: str) -> list[dict[str, str]]:
    """The args of every prepare job deferred, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT args FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
                                           (jobs.PREPARE_TASK,)).fetchall()]


def tokens(url: str, campaign: str) -> int:
    return count(url, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND queue_name = %s",
                 jobs.SEND_TASK, jobs.queue_of(campaign))


def store_files(store: DirectoryStore) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


def batch(folder: Path, contacts: Path, campaign: str = "spring", **prepare: Any) -> BatchSettings:
    return BatchSettings(folder=folder, contacts=contacts, campaign=campaign, settle=0, rate=5.0,
                         prepare=PrepareSettings(cache=False, **prepare))


def broadcast_csv(tmp_path: Path, n: int) -> Path:
    return write_csv(tmp_path / "contacts.csv", "contact_id,workspace_id", [f"{c},{WS}" for c in contacts_for(n)])


def context(ledger: PgLedger) -> WorkerContext:
    """What a worker hands each job, for a ledger registered as a worker (its liveness keeps others off)."""
    ledger.acquire()
    return WorkerContext(ledger=ledger, stop=threading.Event())


@dataclass
class FFmpegLog:
    """Each ffmpeg run that writes a file (not the decode checks to the null muxer): started, completed."""

    path: Path

    def _lines(self, word: str) -> list[str]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [ln for ln in lines if ln.startswith(word + " ") and " -i " in ln and " -f null " not in ln]

    @property
    def started(self) -> int:
        return len(self._lines("start"))

    @property
    def completed(self) -> int:
        return len([ln for ln in self._lines("done") if ln.split()[2] == "0"])


