"""Benchmark of `audiopipe batch` (issue 4): one recording broadcast to 2,000 contacts. Not a test.

    .venv/bin/python bench/bench_batch.py            # 2,000 contacts, 3 repetitions, naive sample of 100
    .venv/bin/python bench/bench_batch.py --quick    # 200 contacts, 1 repetition, naive sample of 20
    .venv/bin/python bench/bench_batch.py --no-bare  # without the bare-loop diagnostic (about half the time)
    .venv/bin/python bench/bench_batch.py --smoke --out DIR --work DIR  # 40 contacts: what the tests run

The recording is generated seconds before the run, so every batch is given `--settle 0` (a fresh
file is otherwise held back as "still arriving" and nothing is sent). Any failure of what is measured
(a run that does not send exactly once to every contact, more than one encode of the one file) ends
with one line on stderr and exit 1.

What it measures, all in the same run (bench/.work/batch/ holds the inputs and every run's files):

(a) `audiopipe batch DIR --contacts CSV -w W --state <fresh> --new-ledger --settle 0 --concurrency C --rate 0
    --quiet --json`
    as a subprocess, for C = 8 and the default C = 4, each repetition against a FRESH sandbox
    (`audiopipe sandbox --latency 0.05`, a separate process, so its CPU is not the client's), a
    fresh ledger and a fresh prepare cache. Wall time; the client's CPU (getrusage(RUSAGE_CHILDREN)
    deltas around the subprocess, ffmpeg included) per send; the sandbox's own CPU (psutil);
    ffmpeg runs, counted by a wrapper given as AUDIOPIPE_FFMPEG (encodes are the runs with `-c:a`).
(b) the server-bound limit N x latency / C, and audiopipe's wall time against it.
(c) a naive sequential loop (one ffmpeg run per contact into a temp file, then requests.post of
    it), run on a SAMPLE of the contacts and extrapolated linearly to N.

Correctness: after every audiopipe run the sandbox must hold exactly N messages, one per contact,
all in the workspace, all the same bytes; the summary must say N sent.

Diagnostics (to say where the time goes): the send phase's span from the ledger's own timestamps
(so start-up and preparing are split from sending); a BARE requests loop right after each audiopipe
run (the same prepared file, same C, a fresh sandbox, no ledger: what this machine and this
sandbox allow at all), preceded by 50 requests one at a time (the sandbox's own answer time,
which is more than its 50 ms latency); the cost of one ledger send record (begin + finish, two
synchronous SQLite commits, serialized under the ledger's lock) measured with audiopipe's
SqliteLedger on the same disk; and the sandbox's CPU time per request.

Prints a Markdown table (command line included) and writes bench/out/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import requests
from common import add_dir_options, fail, last_line, run_main, set_dirs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "batch"
OUT = BENCH / "out"
PY = sys.executable
_CLI = Path(PY).parent / "audiopipe"
AUDIOPIPE: list[str] = [str(_CLI)] if _CLI.exists() else [PY, "-m", "audiopipe"]

TOKEN = "bench-token"
LATENCY = 0.05
SOURCE_SECONDS = 20
SEED = 4
WORKSPACE = str(uuid.UUID(int=random.Random(SEED * 1000).getrandbits(128), version=4))
AIM_LIMIT = 1.25     # audiopipe wall / server-bound limit, at most
AIM_NAIVE = 20.0     # naive / audiopipe, at least
REAL_FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
# What a user without audiopipe writes: Opus in Ogg (WhatsApp's voice format; plain `x.ogg` would
# pick Vorbis, which WhatsApp refuses).
NAIVE_ENCODE = ["-c:a", "libopus", "-b:a", "32k"]


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --- inputs -----------------------------------------------------------------------------------

def make_source(folder: Path) -> Path:
    """A 20 s mono 44.1 kHz WAV: a gliding voiced tone over pink noise (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "message.wav"
    if wav.exists() and wav.stat().st_size > 0:
        return wav
    graph = (f"aevalsrc='0.3*sin(2*PI*(140+30*sin(2*PI*0.7*t))*t)':s=44100:d={SOURCE_SECONDS}[v];"
             f"anoisesrc=d={SOURCE_SECONDS}:c=pink:r=44100:a=0.05:s={SEED}[n];"
             "[v][n]amix=inputs=2:normalize=0[out]")
    tmp = wav.with_suffix(".part.wav")
    done = subprocess.run([REAL_FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                           "-filter_complex", graph, "-map", "[out]", "-ac", "1", "-c:a", "pcm_s16le", str(tmp)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        fail(f"ffmpeg could not make the recording ({done.returncode}): {last_line(done.stderr)}")
    tmp.replace(wav)
    return wav


def make_contacts(path: Path, n: int) -> list[str]:
    rng = random.Random(SEED)
    contacts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    path.write_text("contact\n" + "".join(c + "\n" for c in contacts))
    return contacts


def make_ffmpeg_wrapper(path: Path) -> Path:
    """AUDIOPIPE_FFMPEG: log the argv (one line per run) to $BENCH_FFMPEG_LOG, then exec ffmpeg."""
    path.write_text("#!/bin/sh\n"
                    'printf \'%s\\n\' "$*" >> "${BENCH_FFMPEG_LOG:-/dev/null}"\n'
                    f'exec {REAL_FFMPEG} "$@"\n')
    path.chmod(0o755)
    return path


def ffmpeg_runs(log_path: Path) -> dict[str, int]:
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    words = [ln.split() for ln in lines]
    encodes = sum(1 for w in words if "-c:a" in w)
    queries = sum(1 for w in words if "-encoders" in w or "-version" in w)
    return {"total": len(lines), "encodes": encodes, "queries": queries,
            "other": len(lines) - encodes - queries}


# --- the sandbox, as its own process ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxProcess:
    def __init__(self, data_dir: Path) -> None:
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/api/v3"
        self._log = open(data_dir.parent / (data_dir.name + ".log"), "wb")  # noqa: SIM115 - the sandbox's log for its whole life; closed in stop()
        self.proc = subprocess.Popen(
            [*AUDIOPIPE, "sandbox", "--port", str(self.port), "--data", str(data_dir),
             "--latency", str(LATENCY), "--token", TOKEN],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                fail(f"the sandbox exited ({self.proc.returncode}); see {self._log.name}")
            try:
                if requests.get(self.base + "/_sandbox/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                fail("the sandbox did not come up within 30 s")
            time.sleep(0.05)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def messages(self) -> list[dict[str, Any]]:
        r = requests.get(self.base + "/_sandbox/messages", timeout=60)
        r.raise_for_status()
        return list(r.json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it stops cleanly on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def verify(messages: list[dict[str, Any]], contacts: list[str], *, same_bytes: bool = True) -> dict[str, Any]:
    """Exactly one message per contact, nothing else, all in the workspace (and, for audiopipe,
    all the same bytes: the one prepared file)."""
    per_contact = Counter(m.get("contact_id") for m in messages)
    expected = set(contacts)
    dupes = sum(1 for c, k in per_contact.items() if k > 1)
    missing = len(expected - set(per_contact))
    strangers = len(set(per_contact) - expected)
    workspaces = {m.get("workspace_id") for m in messages}
    shas = {m.get("sha256") for m in messages}
    ok = (len(messages) == len(contacts) and dupes == 0 and missing == 0 and strangers == 0
          and workspaces <= {WORKSPACE} and (len(shas) <= 1 or not same_bytes))
    return {"ok": ok, "messages": len(messages), "contacts_duplicated": dupes, "contacts_missing": missing,
            "unexpected_contacts": strangers, "distinct_files": len(shas),
            "sizes": sorted({m.get("size") for m in messages if m.get("size") is not None})[:3]}


# --- (a) audiopipe ----------------------------------------------------------------------------------

def run_audiopipe(folder: Path, csv: Path, contacts: list[str], concurrency: int, rep: int,
                  wrapper: Path) -> dict[str, Any]:
    run_dir = WORK / "runs" / f"c{concurrency}-r{rep}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    state = run_dir / "ledger.sqlite3"
    ff_log = run_dir / "ffmpeg.log"
    argv = [*AUDIOPIPE, "batch", str(folder), "--contacts", str(csv), "-w", WORKSPACE,
            "--state", str(state), "--new-ledger",  # every run starts afresh on the same recordings
            "--settle", "0",  # the recording was generated seconds ago: do not hold it back as "arriving"
            "--concurrency", str(concurrency), "--rate", "0", "--quiet", "--json"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("AUDIOPIPE_STATE", "AUDIOPIPE_CAMPAIGN", "LANCEPILOT_WORKSPACE",
                        "LANCEPILOT_TOKEN_FILE", "AUDIOPIPE_FFPROBE")}
    sb = SandboxProcess(run_dir / "sandbox")
    try:
        env.update(LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sb.url, AUDIOPIPE_FFMPEG=str(wrapper),
                   BENCH_FFMPEG_LOG=str(ff_log), AUDIOPIPE_CACHE_DIR=str(run_dir / "cache"))
        sb_cpu0 = sb.cpu()
        cpu0 = children_cpu()
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=3600)
        wall = time.perf_counter() - t0
        cpu = children_cpu() - cpu0
        sb_cpu = sb.cpu() - sb_cpu0
        messages = sb.messages()
    finally:
        sb.stop()
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {"stdout": proc.stdout[-2000:]}
    sent = int(summary.get("counts", {}).get("sent", 0)) if isinstance(summary.get("counts"), dict) else 0
    n = len(contacts)
    check = verify(messages, contacts)
    check["summary_sent"] = sent
    check["exit_code"] = proc.returncode
    check["ok"] = bool(check["ok"] and sent == n and proc.returncode == 0)
    if proc.returncode != 0:
        check["stderr"] = proc.stderr[-2000:]
    ff = ffmpeg_runs(ff_log)
    phases = ledger_phases(state, t_wall=wall)
    # Move this run's ledger away: the next run starts afresh with --new-ledger, which (rightly) refuses
    # while the ledger of earlier sends of the same folder still exists where the folder's marker says.
    for f in run_dir.glob("ledger.sqlite3*"):
        f.rename(f.with_name("measured-" + f.name))
    limit = n * LATENCY / concurrency
    return {
        "concurrency": concurrency, "rep": rep, "argv": argv, "wall_s": wall, "sends": n,
        "sends_per_s": n / wall, "limit_s": limit, "wall_over_limit": wall / limit,
        "client_cpu_s": cpu, "client_cpu_per_send_ms": cpu / n * 1000,
        "sandbox_cpu_s": sb_cpu, "sandbox_cpu_per_send_ms": sb_cpu / n * 1000,
        "ffmpeg": ff, "phases": phases, "check": check, "load_before": load0,
        "cache_dir": str(run_dir / "cache"),
    }


def require_correct(r: dict[str, Any]) -> None:
    """The run's own correctness: every contact got the message exactly once, one encode in all."""
    check, c = r["check"], r["concurrency"]
    if check["exit_code"] != 0:
        fail(f"audiopipe batch (concurrency {c}) exited {check['exit_code']}, sent {check['summary_sent']} of "
             f"{r['sends']}: {last_line(check.get('stderr', ''))}")
    if not check["ok"]:
        fail(f"audiopipe batch (concurrency {c}): the sandbox holds {check['messages']} message(s) for {r['sends']} "
             f"contacts ({check['contacts_duplicated']} twice, {check['contacts_missing']} missing, "
             f"{check['distinct_files']} distinct files); the summary says {check['summary_sent']} sent")
    if r["ffmpeg"]["encodes"] != 1:
        fail(f"audiopipe batch (concurrency {c}): {r['ffmpeg']['encodes']} ffmpeg encodes for one unique file "
             "(expected exactly 1)")


def ledger_phases(state: Path, *, t_wall: float) -> dict[str, float]:
    """The send phase's span from the ledger's own timestamps (first intent to last result)."""
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        first, last, n = db.execute("SELECT MIN(created_at), MAX(updated_at), COUNT(*) FROM sends").fetchone()
        db.close()
    except sqlite3.Error:
        return {}
    if not n:
        return {}
    span = last - first
    return {"send_phase_s": span, "before_first_send_s": max(0.0, t_wall - span),
            "send_phase_per_s": n / span if span > 0 else 0.0}


# --- (c) the naive loop ---------------------------------------------------------------------------

def run_naive(source: Path, contacts: list[str], sample: int) -> dict[str, Any]:
    run_dir = WORK / "runs" / "naive"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    sb = SandboxProcess(run_dir / "sandbox")
    picked = contacts[:sample]
    t_ffmpeg = t_post = 0.0
    try:
        cpu0 = self_cpu() + children_cpu()
        sb_cpu0 = sb.cpu()
        t0 = time.perf_counter()
        for contact in picked:
            url = f"{sb.url}/workspaces/{WORKSPACE}/contacts/{contact}/messages/audio"
            with tempfile.TemporaryDirectory(prefix="naive-") as tmp:
                out = Path(tmp) / "message.ogg"
                a = time.perf_counter()
                done = subprocess.run([REAL_FFMPEG, "-y", "-i", str(source), *NAIVE_ENCODE, str(out)],
                               capture_output=True)
                b = time.perf_counter()
                if done.returncode != 0:
                    why = last_line(done.stderr.decode(errors="replace"))
                    fail(f"naive loop: ffmpeg exited {done.returncode}: {why}")
                with open(out, "rb") as fh:
                    r = requests.post(url, files={"file": fh}, headers={"Authorization": f"Bearer {TOKEN}"},
                                      timeout=60)
                if r.status_code != 201:
                    fail(f"naive loop: the sandbox answered {r.status_code} {r.text[:200]}")
                t_ffmpeg += b - a
                t_post += time.perf_counter() - b
        wall = time.perf_counter() - t0
        cpu = self_cpu() + children_cpu() - cpu0
        sb_cpu = sb.cpu() - sb_cpu0
        check = verify(sb.messages(), picked, same_bytes=False)  # Ogg serials differ per encode
    finally:
        sb.stop()
    return {"sample": sample, "wall_s": wall, "per_send_s": wall / sample, "ffmpeg_s_per_send": t_ffmpeg / sample,
            "post_s_per_send": t_post / sample, "cpu_per_send_ms": cpu / sample * 1000,
            "sandbox_cpu_per_send_ms": sb_cpu / sample * 1000, "check": check,
            "code": f"ffmpeg -y -i SRC {' '.join(NAIVE_ENCODE)} TMP/message.ogg; "
                    "requests.post(url, files={'file': open(f, 'rb')}, headers=auth)"}


# --- diagnostics -----------------------------------------------------------------------------------

def prepared_file(run: dict[str, Any]) -> Path:
    """The file audiopipe prepared in a run (from its prepare cache)."""
    found = sorted(Path(run["cache_dir"]).rglob("*.ogg"))
    if not found:
        fail(f"no prepared .ogg in {run['cache_dir']}: the audiopipe run prepared nothing")
    return found[0]


def run_bare(prepared: Path, contacts: list[str], concurrency: int, rep: int, probe: int) -> dict[str, Any]:
    """What this machine and this sandbox allow without audiopipe: the prepared file POSTed by a bare
    requests loop (`concurrency` threads, a Session each; no ledger, no preparing, no checks).
    First `probe` requests one at a time, to measure the sandbox's own response time."""
    run_dir = WORK / "runs" / f"bare-c{concurrency}-r{rep}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    sb = SandboxProcess(run_dir / "sandbox")
    local = threading.local()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def post(contact: str) -> float:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t = time.perf_counter()
        with open(prepared, "rb") as fh:
            r = session.post(f"{sb.url}/workspaces/{WORKSPACE}/contacts/{contact}/messages/audio",
                             files={"file": ("message.ogg", fh, "audio/ogg")}, headers=auth)
        if r.status_code != 201:
            fail(f"bare requests loop: the sandbox answered {r.status_code} {r.text[:200]}")
        return time.perf_counter() - t

    try:
        rng = random.Random(SEED + rep)
        rtts = [post(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(probe)]
        sb_cpu0 = sb.cpu()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(post, contacts))
        wall = time.perf_counter() - t0
        sb_cpu = sb.cpu() - sb_cpu0
    finally:
        sb.stop()
    n = len(contacts)
    return {"concurrency": concurrency, "rep": rep, "wall_s": wall, "limit_s": n * LATENCY / concurrency,
            "wall_over_limit": wall / (n * LATENCY / concurrency), "sandbox_cpu_per_send_ms": sb_cpu / n * 1000,
            "probe_requests": probe, "alone_rtt_ms_median": statistics.median(rtts) * 1000}



def ledger_cost(records: int) -> dict[str, float]:
    """audiopipe's SqliteLedger on this disk: seconds per send record (begin + finish = 2 commits)."""
    sys.path.insert(0, str(ROOT))
    from audiopipe.campaign.ledger import SENT, SendKey, SqliteLedger

    d = WORK / "runs" / "ledger-cost"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    ledger = SqliteLedger(d / "ledger.sqlite3")
    try:
        t0 = time.perf_counter()
        for i in range(records):
            key = SendKey("bench", WORKSPACE, str(uuid.UUID(int=i, version=4)), "0" * 64, 1)
            ledger.begin(key, parts=1, file="message.wav", prepared_sha256="1" * 64)
            ledger.finish(key, SENT, message_id=str(i))
        per = (time.perf_counter() - t0) / records
    finally:
        ledger.close()
    return {"records": records, "per_send_ms": per * 1000}


# --- report -------------------------------------------------------------------------------------

def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 contacts, 1 repetition, naive sample of 20")
    ap.add_argument("--smoke", action="store_true",
                    help="40 contacts, concurrency 4 only, 1 repetition, naive sample of 3, no bare loop: "
                         "does it still run?")
    ap.add_argument("--contacts", type=int, default=None, help="contacts (default 2000; 200 with --quick)")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of each audiopipe run (default 3; 1 with --quick)")
    ap.add_argument("--naive-sample", type=int, default=None,
                    help="contacts the naive loop sends to (default 100; 20 with --quick)")
    ap.add_argument("--concurrency", type=int, action="append", default=None,
                    help="concurrency to measure (repeatable; default 8 and 4)")
    ap.add_argument("--no-bare", action="store_true",
                    help="skip the bare requests loop (the machine's and sandbox's own limit)")
    add_dir_options(ap)
    args = ap.parse_args()
    global WORK, OUT
    set_dirs(args.work, args.out)  # where a failure's traceback goes
    WORK, OUT = (args.work.resolve() / "batch" if args.work else WORK), (args.out.resolve() if args.out else OUT)
    if args.smoke:
        args.quick, args.no_bare = True, True
    n = args.contacts or (40 if args.smoke else 200 if args.quick else 2000)
    reps = args.reps or (1 if args.quick else 3)
    sample = min(n, args.naive_sample or (3 if args.smoke else 20 if args.quick else 100))
    levels = args.concurrency or ([4] if args.smoke else [8, 4])

    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    if load0[0] > 0.5:
        log(f"note: load average {load0[0]:.2f} before starting (other work on this 2-core machine): "
            "timings are noisy, compare within this run\n")
    folder = WORK / "recordings"
    source = make_source(folder)
    csv = WORK / f"contacts-{n}.csv"
    contacts = make_contacts(csv, n)
    wrapper = make_ffmpeg_wrapper(WORK / "ffmpeg-logged")
    log(f"source {source} ({SOURCE_SECONDS} s WAV, {source.stat().st_size} bytes), {n} contacts in {csv}, "
        f"sandbox latency {LATENCY * 1000:.0f} ms, workspace {WORKSPACE}")

    runs: list[dict[str, Any]] = []
    bares: list[dict[str, Any]] = []
    naive: dict[str, Any] | None = None
    for rep in range(1, reps + 1):
        for c in levels:
            log(f"[rep {rep}/{reps}] audiopipe batch, concurrency {c} ...")
            r = run_audiopipe(folder, csv, contacts, c, rep, wrapper)
            runs.append(r)
            require_correct(r)
            ph = r["phases"]
            log(f"  wall {r['wall_s']:.2f} s (limit {r['limit_s']:.2f} s, x{r['wall_over_limit']:.2f}); "
                f"send phase {ph.get('send_phase_s', float('nan')):.2f} s, before it "
                f"{ph.get('before_first_send_s', float('nan')):.2f} s; client CPU {r['client_cpu_s']:.2f} s "
                f"({r['client_cpu_per_send_ms']:.2f} ms/send); sandbox CPU {r['sandbox_cpu_s']:.2f} s; "
                f"ffmpeg {r['ffmpeg']}; check {'OK' if r['check']['ok'] else 'FAILED ' + json.dumps(r['check'])}")
            if not args.no_bare:  # right after, so it sees the same machine load
                log(f"[rep {rep}/{reps}] bare requests loop (no audiopipe), concurrency {c} ...")
                b = run_bare(prepared_file(runs[0]), contacts, c, rep, probe=min(n, 50))
                bares.append(b)
                log(f"  wall {b['wall_s']:.2f} s (x{b['wall_over_limit']:.2f} the limit); sandbox alone answers "
                    f"in {b['alone_rtt_ms_median']:.1f} ms; sandbox CPU {b['sandbox_cpu_per_send_ms']:.2f} ms/request")
        if naive is None:  # interleaved after the first repetition, so it sees the same machine
            log(f"naive sequential loop on a sample of {sample} contacts ...")
            naive = run_naive(source, contacts, sample)
            log(f"  {naive['per_send_s'] * 1000:.0f} ms/send (ffmpeg {naive['ffmpeg_s_per_send'] * 1000:.0f} ms, "
                f"POST {naive['post_s_per_send'] * 1000:.0f} ms); check "
                f"{'OK' if naive['check']['ok'] else 'FAILED ' + json.dumps(naive['check'])}")
            if not naive["check"]["ok"]:
                fail(f"naive loop: the sandbox holds {naive['check']['messages']} message(s) for {sample} contacts")
    assert naive is not None
    log("ledger cost (audiopipe's SqliteLedger, begin + finish per send, same disk) ...")
    ledger = ledger_cost(min(n, 500))
    log(f"  {ledger['per_send_ms']:.2f} ms per send record")

    # --- the table
    naive_total = naive["per_send_s"] * n
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for c in levels:
        rs = [r for r in runs if r["concurrency"] == c]
        wall = median([r["wall_s"] for r in rs])
        limit = n * LATENCY / c
        ratio = wall / limit
        cpu_ms = median([r["client_cpu_per_send_ms"] for r in rs])
        sb_ms = median([r["sandbox_cpu_per_send_ms"] for r in rs])
        send_phase = median([r["phases"].get("send_phase_s", float("nan")) for r in rs])
        before = median([r["phases"].get("before_first_send_s", float("nan")) for r in rs])
        encodes = sorted({r["ffmpeg"]["encodes"] for r in rs})
        ok = all(r["check"]["ok"] for r in rs)
        speedup = naive_total / wall
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        tag = f"audiopipe, --concurrency {c}" + (" (default)" if c == 4 else "")
        rows += [
            [tag, "wall time, median" + (f" of {len(rs)} ({walls} s)" if len(rs) > 1 else ""),
             f"{wall:.1f} s ({n / wall:.0f} msg/s)", "", ""],
            [tag, f"server-bound limit {n} x {LATENCY * 1000:.0f} ms / {c}", f"{limit:.1f} s",
             f"wall/limit x{ratio:.2f} (aim <= {AIM_LIMIT})", "met" if ratio <= AIM_LIMIT else "MISSED"],
            [tag, "of which: start-up + prepare / send phase (ledger timestamps)",
             f"{before:.1f} s / {send_phase:.1f} s", f"send phase x{send_phase / limit:.2f} the limit", ""],
            [tag, "client CPU per send (user+sys, ffmpeg included)", f"{cpu_ms:.2f} ms",
             f"sandbox: {sb_ms:.2f} ms/request", ""],
        ]
        bs = [b for b in bares if b["concurrency"] == c]
        if bs:
            bare_wall = median([b["wall_s"] for b in bs])
            rtt = median([b["alone_rtt_ms_median"] for b in bs])
            eff = n * rtt / 1000 / c
            rows += [
                [tag, f"bare requests loop, same sandbox and C, no ledger (median of {len(bs)})",
                 f"{bare_wall:.1f} s", f"x{bare_wall / limit:.2f} the limit; audiopipe send phase "
                 f"x{send_phase / bare_wall:.2f} of it", ""],
                [tag, f"sandbox's own answer time, one request alone -> {n} x that / {c}",
                 f"{rtt:.1f} ms -> {eff:.1f} s", f"audiopipe wall x{wall / eff:.2f} of it", ""],
            ]
            summary_bare = {"bare_wall_s_median": bare_wall, "sandbox_alone_rtt_ms": rtt,
                            "effective_limit_s": eff, "wall_over_effective_limit": wall / eff}
        else:
            summary_bare = {}
        rows += [
            [tag, "ffmpeg encodes for the one unique file", " / ".join(map(str, encodes)),
             "exactly 1", "met" if encodes == [1] else "MISSED"],
            [tag, f"sandbox holds {n} messages, each contact once", "yes" if ok else "NO",
             "all runs", "met" if ok else "FAILED"],
            [tag, f"naive loop / audiopipe (naive extrapolated from {sample} to {n})",
             f"{naive_total:.0f} s / {wall:.1f} s", f"x{speedup:.0f} (aim >= {AIM_NAIVE:.0f})",
             "met" if speedup >= AIM_NAIVE else "MISSED"],
        ]
        summary[str(c)] = {"wall_s_median": wall, "limit_s": limit, "wall_over_limit": ratio,
                           "client_cpu_per_send_ms": cpu_ms, "sandbox_cpu_per_send_ms": sb_ms,
                           "send_phase_s": send_phase, "before_first_send_s": before, "encodes": encodes,
                           "correct": ok, "naive_over_audiopipe": speedup, **summary_bare}
    rows.append(["naive loop (sequential)", f"per send, measured on {sample} contacts "
                 f"(ffmpeg {naive['ffmpeg_s_per_send'] * 1000:.0f} ms + POST {naive['post_s_per_send'] * 1000:.0f} ms)",
                 f"{naive['per_send_s'] * 1000:.0f} ms", f"x {n} = {naive_total:.0f} s (linear extrapolation)",
                 "ok" if naive["check"]["ok"] else "FAILED"])
    rows.append(["diagnostic", "ledger send record (2 synchronous SQLite commits, serialized)",
                 f"{ledger['per_send_ms']:.2f} ms", f"x {n} = {ledger['per_send_ms'] * n / 1000:.1f} s floor", ""])

    total = time.perf_counter() - started
    cmd = ".venv/bin/python bench/bench_batch.py" + (" --smoke" if args.smoke else " --quick" if args.quick else "") + \
        (f" --contacts {args.contacts}" if args.contacts else "") + (f" --reps {args.reps}" if args.reps else "") + \
        (f" --naive-sample {args.naive_sample}" if args.naive_sample else "") + \
        "".join(f" --concurrency {c}" for c in args.concurrency or []) + \
        (" --no-bare" if args.no_bare and not args.smoke else "")
    ff = subprocess.run([REAL_FFMPEG, "-hide_banner", "-version"], capture_output=True, text=True).stdout
    ff = ff.splitlines()[0].split(" Copyright")[0] if ff else "ffmpeg ?"
    env_line = f"{platform.machine()}, {os.cpu_count()} vCPUs, Python {platform.python_version()}, {ff}"
    load = f"load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    batch_cmd = ("audiopipe batch recordings/ --contacts contacts.csv -w W --state <fresh> --new-ledger --settle 0 "
                 "--concurrency C --rate 0 --quiet --json")
    kind = "smoke run" if args.smoke else "quick run" if args.quick else "full run"
    text = (f"`{cmd}` ({kind}, git {git_head()}, {datetime.now(timezone.utc):%Y-%m-%d}: "
            f"one {SOURCE_SECONDS} s WAV to {n} contacts, "
            f"sandbox with {LATENCY * 1000:.0f} ms latency in its own process; `{batch_cmd}`; "
            f"{env_line}; took {total / 60:.1f} min; {load})\n\n"
            + md_table(["run", "measure", "value", "against", "verdict"], rows) + "\n")
    log("\n" + text)
    report = {"command": cmd, "quick": args.quick, "contacts": n, "reps": reps, "naive_sample": sample,
              "latency_s": LATENCY, "source_seconds": SOURCE_SECONDS,
              "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "total_s": total,
              "environment": env_line, "load": load, "summary": summary, "runs": runs, "bare": bares, "naive": naive,
              "ledger_cost": ledger, "table": rows, "markdown": text}
    (OUT / "batch.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"wrote {OUT / 'batch.json'}")
    return 0


def git_head() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    run_main("bench_batch", main)
