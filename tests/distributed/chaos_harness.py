"""Real parts for the distributed chaos tests and ``bench/bench_distributed.py``: a PostgreSQL cluster of the
caller's own (it gets restarted with ``-m immediate``), the sandbox in this process with a record of every
POST's arrival and every fault it injected (read from its log), the real CLI (``audiopipe batch
--plan-only``, ``audiopipe worker``) as subprocesses, SIGKILLs that count the sends each one left in flight,
and the audit afterwards: duplicates, lost rows, unknowns against what explains them.

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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_", "XDG_"))}
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


# --- the audit ---------------------------------------------------------------------------------------

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



# --- one chaos run, as the test and the bench make it ---------------------------------------------------

@dataclass(frozen=True)
class ChaosSpec:
    """A campaign of ``contacts`` x ``sources`` sends carried out by ``workers`` worker processes while
    ``kills`` of them are SIGKILLed (each replaced) and PostgreSQL restarts once (``restart``), against
    a sandbox with these faults. Kills and the restart come at points of progress, spread over the run."""

    contacts: int
    sources: int = 4
    workers: int = 3
    concurrency: int = 4
    kills: int = 10
    restart: bool = True
    lease: float = 3.0
    latency: float = 0.02
    rate_500: float = 0.004
    rate_lost: float = 0.004
    rate_429: float = 0.002
    retry_after: int = 1
    seed: int = 1
    timeout: float = 300.0

    @property
    def sends(self) -> int:
        return self.contacts * self.sources


@dataclass
class ChaosResult:
    spec: ChaosSpec
    audit: Audit
    kills: list[Kill]
    restart_in_flight: int | None       # rows ``sending`` just before the restart (None: no restart)
    answered_500: int
    lost_answers: int
    answered_429: int
    exit_codes: dict[int, int]          # of the workers not killed
    seconds: float                      # from the first worker's start to the last one's exit
    timed_out: bool
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, what happened)

    @property
    def in_flight_at_kills(self) -> int:
        return sum(k.in_flight for k in self.kills)

    @property
    def unknown_allowed(self) -> int:
        """What may explain an unknown row: a send in flight at a kill or at the restart, a 500 (the
        message may exist), a lost answer (it does)."""
        return self.in_flight_at_kills + (self.restart_in_flight or 0) + self.answered_500 + self.lost_answers


def finished(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM sends WHERE state IN ('sent', 'failed', 'unknown')") or 0)


def run_chaos(work: Path, spec: ChaosSpec) -> ChaosResult:
    """One run (see :class:`ChaosSpec`), in ``work``: plan, work, kill, restart, then the audit."""
    work.mkdir(parents=True, exist_ok=True)
    faults = Faults(seed=spec.seed, latency=spec.latency, rate_500=spec.rate_500, rate_lost=spec.rate_lost,
                    lost_mode="drop", rate_429=spec.rate_429, retry_after=spec.retry_after)
    folder, store = work / "recordings", work / "store"
    make_sources(folder, spec.sources)
    contacts = make_contacts(work / "contacts.csv", spec.contacts)
    with private_cluster() as (cluster, url), sandbox_with_log(work / "sandbox", faults) as (sandbox, said):
        env = cli_env(work, sandbox.url)
        plan(url, folder, work / "contacts.csv", store, env)
        workers = Workers(url, env, work / "logs", spec.concurrency, spec.lease)
        rng = random.Random(spec.seed)
        kill_at = [spec.sends * (0.08 + 0.72 * (i + 0.5) / spec.kills) for i in range(spec.kills)]
        restart_at = spec.sends * 0.5 if spec.restart else None
        restart_in_flight: int | None = None
        started = time.monotonic()
        deadline = started + spec.timeout
        timeline: list[tuple[float, str]] = []
        workers.start(spec.workers)
        last_note = 0.0
        try:
            while time.monotonic() < deadline:
                workers.reap_exited()
                if not workers.running:
                    break
                done, now = finished(url), time.monotonic() - started
                if now - last_note >= 5:
                    timeline.append((now, f"{done} finished"))
                    last_note = now
                if kill_at and done >= kill_at[0]:
                    kill_at.pop(0)
                    k = workers.kill_random(rng)
                    timeline.append((now, f"SIGKILL worker {k.worker_id if k else None}: "
                                          f"{k.in_flight if k else 0} in flight"))
                elif restart_at is not None and done >= restart_at and workers.all_registered():
                    restart_at = None  # not while a replacement starts: it would meet no database at all
                    restart_in_flight = workers.in_flight()
                    cluster.restart_immediate()
                    timeline.append((now, f"pg_ctl restart -m immediate: {restart_in_flight} in flight"))
                time.sleep(0.2)
            timed_out = bool(workers.running)
        finally:
            workers.stop_all()
        seconds = time.monotonic() - started
        result = ChaosResult(spec, audit(url, sandbox, contacts, spec.sources), workers.kills, restart_in_flight,
                             said.answered_500, len(said.lost), len(said.answered_429),
                             dict(workers.exit_codes()), seconds, timed_out, timeline)
        if timed_out or result.audit.not_final:
            (work / "workers-tail.txt").write_text(workers.log_tail())
    return result


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
