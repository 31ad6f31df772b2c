"""Real parts for the distributed chaos tests and ``bench/bench_distributed.py``: a PostgreSQL cluster of the
caller's own (it gets restarted with ``-m immediate``), the sandbox in this process with a record of every
POST's arrival and every fault it injected (read from its log), the real CLI (``audiopipe batch
--plan-only``, ``audiopipe worker``) as subprocesses, SIGKILLs that count the sends each one left in flight.
The audit afterwards is chaos_audit.py; one whole chaos run, chaos_run.py.

No pytest here (the bench imports it too): failures are plain exceptions, the callers assert on the
:class:`Audit` they get back.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # pg_fixtures, for the bench
from helpers import unmeasured
from pg_fixtures import PgCluster, server_binaries

from audiopipe.sandbox.app import Faults, Sandbox, SandboxConfig

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
TOKEN = "chaos-token"
CAMPAIGN = "chaos"
AUDIOPIPE = str(Path(sys.executable).with_name("audiopipe"))
FINAL = ("sent", "failed", "unknown")
_ARRIVED = re.compile(r"request (\d+) arrived")
_LOST = re.compile(r"message (\S+) stored, answer lost")


class ChaosError(Exception):
    """A part of the harness did not do what it must (a plan refused, a worker that would not start)."""


# --- the database ----------------------------------------------------------------------------------

@contextmanager
def private_cluster(folder: Path | None = None) -> Iterator[tuple[PgCluster, str]]:
    """A PostgreSQL cluster of the caller's own (so it may restart it) and the URL of an empty database
    in it; stopped and removed afterwards. The schema is left to the CLI (``audiopipe db migrate``)."""
    binaries = server_binaries()
    if binaries is None:
        raise ChaosError("PostgreSQL server binaries (initdb, pg_ctl) were not found: `make test` installs them")
    as_postgres = os.geteuid() == 0
    where = Path(tempfile.mkdtemp(prefix="ap-chaos-", dir=folder))  # short: a socket path has ~100 bytes
    if as_postgres:
        shutil.chown(where, "postgres", "postgres")
    cluster = PgCluster(binaries, where, as_postgres)
    try:
        cluster.init()
        cluster.start()
        with cluster.admin() as conn:
            conn.execute('CREATE DATABASE "chaos" TEMPLATE template0')
        yield cluster, cluster.url("chaos")
    finally:
        cluster.stop()
        shutil.rmtree(where, ignore_errors=True)


def scalar(url: str, sql: str, *args: object) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


# --- the sandbox and what it did -------------------------------------------------------------------

class SandboxLog(logging.Handler):
    """What the sandbox in this process did, from its log lines: each POST's arrival (wall clock, the
    same clock as the database's on this machine), each 429, 500 and lost answer."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.arrivals: list[tuple[float, int]] = []
        self.answered_429: list[float] = []
        self.answered_500 = 0
        self.lost: list[str] = []          # ids of messages stored whose answer was lost
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        with self._mutex:
            if (m := _ARRIVED.search(text)) is not None:
                self.arrivals.append((record.created, int(m.group(1))))
            elif "sandbox: 429" in text:
                self.answered_429.append(record.created)
            elif "fault 500" in text:
                self.answered_500 += 1
            elif (m := _LOST.search(text)) is not None:
                self.lost.append(m.group(1))


@contextmanager
def sandbox_with_log(data_dir: Path, faults: Faults) -> Iterator[tuple[Sandbox, SandboxLog]]:
    """The sandbox, serving on 127.0.0.1 from this process, and its :class:`SandboxLog`."""
    logger = logging.getLogger("audiopipe.sandbox.faults")
    handler = SandboxLog()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    sandbox = Sandbox(SandboxConfig(token=TOKEN, data_dir=data_dir, faults=faults, max_connections=256)).start()
    try:
        yield sandbox, handler
    finally:
        sandbox.stop()
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- inputs -------------------------------------------------------------------------------------------

def make_sources(folder: Path, count: int, seconds: float = 1.0) -> list[Path]:
    """``count`` distinct mono WAVs of ``seconds`` (tones of different pitches): small, quick to prepare."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        dest = folder / f"rec{i:02d}.wav"
        subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"sine=frequency={220 + 37 * i}:sample_rate=16000:duration={seconds}", "-ac", "1",
                        str(dest)], check=True, timeout=120)
        made.append(dest)
    return made


def make_contacts(path: Path, count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    contacts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
    path.write_text("contact_id,workspace_id\n" + "".join(f"{c},{WS}\n" for c in contacts), encoding="utf-8")
    return contacts


# --- the CLI as subprocesses ------------------------------------------------------------------------

def cli_env(home: Path, sandbox_url: str, **more: str) -> dict[str, str]:
    """The environment of a user's shell with no audiopipe settings but these."""
    env = {k: v for k, v in unmeasured().items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_", "XDG_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), TMPDIR=str(home), AUDIOPIPE_SETTLE="0",
               LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sandbox_url, **more)
    return env


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([AUDIOPIPE, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ChaosError(f"audiopipe {args[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def plan(url: str, folder: Path, contacts_csv: Path, store: Path, env: dict[str, str], *, rate: float = 0) -> None:
    cli(["db", "migrate", "--database", url], env)
    cli(["batch", str(folder), "--contacts", str(contacts_csv), "-w", WS, "--campaign", CAMPAIGN, "--rate",
         f"{rate:g}", "--database", url, "--store", str(store), "--plan-only", "--no-preflight"], env)


@dataclass
class Kill:
    pid: int
    worker_id: str | None
    in_flight: int          # rows ``sending`` under it, read from the ledger while it was stopped


@dataclass
class Workers:
    """``audiopipe worker --until-idle`` processes, replaced when killed; their output in ``logs``."""

    url: str
    env: dict[str, str]
    logs: Path
    concurrency: int = 4
    lease: float = 3.0
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    finished: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    def start(self, count: int = 1) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            n = len(self.running) + len(self.finished)
            with open(self.logs / f"worker{n}.log", "wb") as out:
                self.running.append(subprocess.Popen(
                    [AUDIOPIPE, "worker", "--database", self.url, "--until-idle", "--concurrency",
                     str(self.concurrency), "--lease", f"{self.lease:g}"],
                    env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))

    def reap_exited(self) -> None:
        for proc in [p for p in self.running if p.poll() is not None]:
            self.running.remove(proc)
            self.finished.append(proc)

    def worker_id(self, pid: int) -> str | None:
        return scalar(self.url, "SELECT id FROM workers WHERE pid = %s ORDER BY started_at DESC LIMIT 1", pid)

    def kill(self, proc: subprocess.Popen[bytes]) -> Kill:
        """SIGSTOP it, count its rows in flight (a claim on its way commits meanwhile), SIGKILL it."""
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.1)
        worker = self.worker_id(proc.pid)
        flying = scalar(self.url, "SELECT count(*) FROM sends WHERE state = 'sending' AND owner = %s", worker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.running.remove(proc)
        self.finished.append(proc)
        done = Kill(proc.pid, worker, int(flying or 0))
        self.kills.append(done)
        return done

    def kill_random(self, rng: random.Random) -> Kill | None:
        """SIGKILL one running worker (one that registered) and start its replacement."""
        self.reap_exited()
        ready = [p for p in self.running if self.worker_id(p.pid) is not None]
        if not ready:
            return None
        done = self.kill(rng.choice(ready))
        self.start()
        return done

    def in_flight(self) -> int:
        """Rows ``sending`` under the running workers (a dead one's are counted at its kill)."""
        ids = [i for p in self.running if (i := self.worker_id(p.pid)) is not None]
        return int(scalar(self.url, "SELECT count(*) FROM sends WHERE state = 'sending' AND owner = ANY(%s)", ids) or 0)

    def all_registered(self) -> bool:
        return all(self.worker_id(p.pid) is not None for p in self.running if p.poll() is None)

    def wait(self, deadline: float) -> None:
        for proc in self.running:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        self.reap_exited()

    def stop_all(self) -> None:
        for proc in self.running:
            proc.kill()
            proc.wait(30)
        self.reap_exited()

    def exit_codes(self) -> Counter[int]:
        killed = {k.pid for k in self.kills}
        return Counter(p.returncode for p in self.finished if p.pid not in killed)

    def log_tail(self) -> str:
        return "\n".join(f"{p.name}: {p.read_text(errors='replace')[-800:]}" for p in sorted(self.logs.glob("*.log")))
