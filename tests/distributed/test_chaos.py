"""The distributed campaign under chaos, with real parts only: the real CLI (``audiopipe batch --plan-only``,
``audiopipe worker``) as subprocesses, real PostgreSQL, the sandbox over HTTP on 127.0.0.1, real ffmpeg,
real SIGKILL (see chaos_harness.py).

- 5,000 sends by 3 workers with 500s, lost answers and 429s injected, 10 workers SIGKILLed (each
  replaced) and one ``pg_ctl restart -m immediate`` of the test's own cluster: no message stored twice,
  every row final and accounted for, and no more unknowns than what explains them (the sends in flight
  at each kill and at the restart, read from the ledger, plus the 500s and lost answers the sandbox
  injected).
- One pace across workers: ``--rate 80`` against a sandbox refusing more than 100 requests a second.
- One pause across workers: after a 429 with Retry-After 2, no request arrives in that window but
  those already on their way.
- Each recording prepared once, with the worker running its ffmpeg SIGKILLed mid-encode.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from chaos_audit import audit, ledger_story
from chaos_harness import CAMPAIGN, Workers, cli_env, make_contacts, make_sources, plan, sandbox_with_log, scalar
from chaos_run import ChaosSpec, run_chaos
from prepare_helpers import FFmpegLog

from audiopipe.sandbox.app import Faults

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.mark.slow(seconds=100)
@pytest.mark.timeout(420)
def test_5000_sends_through_kills_and_a_database_restart_go_once_and_are_all_accounted_for(tmp_path: Path) -> None:
    spec = ChaosSpec(contacts=1250, sources=4, workers=3, concurrency=4, kills=10, restart=True, lease=3.0)
    result = run_chaos(tmp_path, spec)
    a = result.audit
    story = f"{a}\n" + "\n".join(f"{t:6.1f} s {what}" for t, what in result.timeline)
    assert not result.timed_out, story
    assert len(result.kills) == 10 and result.restart_in_flight is not None, story
    assert set(result.exit_codes) == {0}, story  # every worker not killed left idle, exit 0
    assert a.planned == a.targets == 5000 and a.pairs_with_all_parts == 5000, story
    assert a.not_final == 0, story                          # sent, failed or unknown: nothing left half way
    assert a.duplicates == 0, story                         # nothing stored twice
    assert a.sent_missing == 0 and a.stored_unaccounted == 0, story  # sent means stored; stored means sent or unknown
    assert a.lost == 0, story
    # the faults happened (else this test proves nothing), and each unknown row has a cause
    assert result.answered_500 and result.lost_answers and result.answered_429, story
    assert a.reaped <= result.in_flight_at_kills + result.restart_in_flight, story
    assert a.unknown <= result.unknown_allowed, story
    assert a.states.get("sent", 0) + a.unknown + a.states.get("failed", 0) == 5000


def _one_campaign(tmp_path: Path, *, contacts: int, sources: int) -> tuple[Path, list[str]]:
    folder = tmp_path / "recordings"
    make_sources(folder, sources)
    return folder, make_contacts(tmp_path / "contacts.csv", contacts)


def _run_workers(tmp_path: Path, url: str, sandbox_url: str, count: int, concurrency: int) -> Workers:
    workers = Workers(url, cli_env(tmp_path, sandbox_url), tmp_path / "logs", concurrency=concurrency, lease=3.0)
    workers.start(count)
    workers.wait(time.monotonic() + 90)
    assert not workers.running, workers.log_tail()
    assert set(workers.exit_codes()) == {0}, workers.log_tail()
    return workers


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_workers_at_rate_80_meet_no_429_from_a_sandbox_allowing_100_a_second(tmp_path: Path,
                                                                                     pg_url: str) -> None:
    faults = Faults(rps_limit=100, retry_after=1, latency=0.01)
    folder, people = _one_campaign(tmp_path, contacts=200, sources=2)
    with sandbox_with_log(tmp_path / "sandbox", faults) as (sandbox, said):
        plan(pg_url, folder, tmp_path / "contacts.csv", tmp_path / "store", cli_env(tmp_path, sandbox.url), rate=80)
        _run_workers(tmp_path, pg_url, sandbox.url, 3, 8)
        a = audit(pg_url, sandbox, people, 2)
    assert a.states == {"sent": 400} and a.duplicates == 0
    assert said.answered_429 == [], f"{len(said.answered_429)} requests over the sandbox's 100 a second"
    # the pace is what held them (unpaced, these workers draw dozens of 429s here): 400 requests spaced
    # 1/80 s apart take 5 s, whichever worker makes them
    times = sorted(t for t, _ in said.arrivals)
    assert len(times) == 400  # each once: no request refused and sent again
    assert times[-1] - times[0] >= 399 / 80 * 0.9, times[-1] - times[0]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_after_a_429_no_worker_sends_within_its_retry_after_but_those_on_their_way(tmp_path: Path,
                                                                                   pg_url: str) -> None:
    concurrency, workers = 4, 3
    faults = Faults(answer_429_on=frozenset({150}), retry_after=2, latency=0.01)
    folder, people = _one_campaign(tmp_path, contacts=150, sources=2)
    with sandbox_with_log(tmp_path / "sandbox", faults) as (sandbox, said):
        plan(pg_url, folder, tmp_path / "contacts.csv", tmp_path / "store", cli_env(tmp_path, sandbox.url), rate=0)
        _run_workers(tmp_path, pg_url, sandbox.url, workers, concurrency)
        a = audit(pg_url, sandbox, people, 2)
    assert a.states == {"sent": 300} and a.duplicates == 0  # the refused one went again after the pause
    assert len(said.answered_429) == 1
    paused_until = float(scalar(pg_url, "SELECT extract(epoch FROM paused_until) FROM rate_limits WHERE name = %s",
                                CAMPAIGN))
    paused_from = paused_until - 2.0   # the worker that met the 429 wrote the pause: every worker sees it
    answered = said.answered_429[0]
    assert answered <= paused_from + 1.0  # the pause was written right after the 429 came back
    within = [t for t, _ in said.arrivals if paused_from < t < paused_until]
    # only requests already past their turn when the pause was written: at most one per job thread, and
    # all within moments of it (a claim and a file read away)
    assert len(within) <= workers * concurrency, within
    assert all(t < paused_from + 1.0 for t in within), [round(t - paused_from, 3) for t in within]
    before = [t for t, _ in said.arrivals if paused_from - 2.0 < t <= paused_from]
    after = [t for t, _ in said.arrivals if paused_until <= t < paused_until + 2.0]
    assert len(before) > 3 * len(within) and after, (len(before), len(within), len(after))  # it did stop them


FFMPEG_WRAPPER = """#!/bin/sh
echo "start $$ $PPID $*" >> "{log}"
setpriv --pdeathsig KILL "{real}" "$@"
rc=$?
echo "done $$ $rc $*" >> "{log}"
exit $rc
"""


def _encoding(log: Path, *, alive: bool = True) -> Counter[int]:
    """How many encodes (our ffmpeg wrapper, a child of the worker) each worker pid started and did not
    finish (``alive``: whose wrapper still runs)."""
    lines = log.read_text().splitlines() if log.exists() else []
    done = {ln.split()[1] for ln in lines if ln.startswith("done ")}
    started = [ln.split() for ln in lines if ln.startswith("start ") and " -i " in ln and " -f null " not in ln]
    return Counter(int(w[2]) for w in started if w[1] not in done and (not alive or Path(f"/proc/{w[1]}").exists()))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_each_recording_is_prepared_once_though_the_worker_encoding_it_is_killed(tmp_path: Path, pg_url: str,
                                                                                  long_wav) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "recordings"
    folder.mkdir()
    sources = [long_wav(folder / f"talk{i}.wav", 240 + 30 * i) for i in range(4)]  # a second or two of encoding each
    people = make_contacts(tmp_path / "contacts.csv", 5)
    log = tmp_path / "ffmpeg.log"
    wrapper = tmp_path / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    wrapper.write_text(FFMPEG_WRAPPER.format(log=log, real=shutil.which("ffmpeg")))
    wrapper.chmod(0o755)
    with sandbox_with_log(tmp_path / "sandbox", Faults()) as (sandbox, _said):
        env = cli_env(tmp_path, sandbox.url, AUDIOPIPE_FFMPEG=str(wrapper))
        plan(pg_url, folder, tmp_path / "contacts.csv", tmp_path / "store", env)
        workers = Workers(pg_url, env, tmp_path / "logs", concurrency=2, lease=3.0)
        workers.start(3)
        deadline = time.monotonic() + 60
        while not (busy := [p for p in workers.running if _encoding(log)[p.pid] and p.poll() is None]):
            assert time.monotonic() < deadline, f"no worker started encoding\n{workers.log_tail()}"
            time.sleep(0.05)
        time.sleep(0.3)
        victim = busy[0]
        workers.kill(victim)  # SIGKILL: its ffmpeg dies with it (audiopipe's children and the wrapper's do)
        cut = _encoding(log, alive=False)[victim.pid]  # its encodes that never finished (the kill took them)
        workers.start()       # its replacement
        try:
            workers.wait(time.monotonic() + 120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the workers did not finish\n{ledger_story(pg_url)}\n{log.read_text()}\n{workers.log_tail()}")
        a = audit(pg_url, sandbox, people, len(sources))
    ffmpeg = FFmpegLog(log)
    assert ffmpeg.completed == len(sources), log.read_text()       # one finished encode per recording
    assert cut >= 1 and ffmpeg.started == len(sources) + cut, log.read_text()  # and those the kill cut short
    with psycopg.connect(pg_url, autocommit=True) as conn:
        prepares = Counter(conn.execute("SELECT state, attempts FROM prepares").fetchall())
    # every recording ready; taken over: those the kill cut short, and any the victim had claimed but not
    # yet begun to encode (attempts count claims, not encodes), so at most its 2 job slots
    assert {state for state, _ in prepares} == {"ready"} and prepares.total() == len(sources), prepares
    assert cut <= prepares[("ready", 2)] <= 2 and prepares[("ready", 1)] + prepares[("ready", 2)] == len(sources)
    assert a.states == {"sent": len(people) * len(sources)} and a.duplicates == 0 and a.lost == 0
    assert set(workers.exit_codes()) == {0}, workers.log_tail()
