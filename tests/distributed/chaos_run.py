"""One chaos run, as tests/distributed/test_chaos.py and bench/bench_distributed.py make it: plan a campaign,
start workers, SIGKILL some (each replaced) and restart PostgreSQL at points of progress, then audit."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos_audit import Audit, audit
from chaos_harness import (
    Kill,
    Workers,
    cli_env,
    make_contacts,
    make_sources,
    plan,
    private_cluster,
    sandbox_with_log,
    scalar,
)

from audiopipe.sandbox.app import Faults


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
