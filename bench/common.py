"""Shared plumbing for the prepare-stage benchmarks: paths, input generation (cached), timing,
process-tree memory sampling, and Markdown tables.

Everything here uses only the standard library, ffmpeg, and psutil (the project's ``bench`` extra).
Inputs are generated with lavfi sources (pink/white noise, tones, a speech-like synthetic voice) so
the encoders have real work to do; they are cached under ``bench/.work/inputs`` keyed by their spec,
so a second run reuses them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
OUT = BENCH / "out"
INPUTS = WORK / "inputs"

PY = sys.executable
# The console script next to the interpreter (the venv's), else `python -m audiopipe`.
_CLI = Path(PY).parent / "audiopipe"
AUDIOPIPE: list[str] = [str(_CLI)] if _CLI.exists() else [PY, "-m", "audiopipe"]



def installed_env() -> dict[str, str]:
    """The environment to time audiopipe in as a user runs it. pip compiles an installed package's
    bytecode; this checkout is an editable install, and where PYTHONDONTWRITEBYTECODE is set (as on
    the machine these figures come from) every run would compile its modules again: about 0.1 s of
    CPU a run that no installed copy pays. The bytecode goes under the bench's work folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return env


# --smoke (run.py): the smallest inputs that still exercise every step; for tests/test_bench_quick.py.
SMOKE = False

MB = 1024 * 1024  # RSS figures are MiB (what ru_maxrss/1024 and `ps` show as MB)
GEN_VERSION = 1   # bump to regenerate every cached input


def ffmpeg_bin() -> str:
    return os.environ.get("AUDIOPIPE_FFMPEG") or shutil.which("ffmpeg") or "ffmpeg"


def ffmpeg(args: Sequence[str], timeout: float = 900) -> None:
    argv = [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        fail(f"ffmpeg failed ({proc.returncode}): {last_line(proc.stderr.decode(errors='replace'))}: "
             f"{shlex.join(argv)}")


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_bin(), "-hide_banner", "-version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --- where files go, and how a benchmark fails --------------------------------------------------

def add_dir_options(ap: argparse.ArgumentParser) -> None:
    """``--out DIR`` (results) and ``--work DIR`` (inputs and scratch): the tests point both at a
    temporary folder so they never write into the working tree."""
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="where the results are written (default bench/out)")
    ap.add_argument("--work", type=Path, default=None, metavar="DIR",
                    help="inputs and scratch files (default bench/.work; cached inputs are reused)")


def set_dirs(work: Path | None, out: Path | None) -> None:
    """Point this module's WORK/INPUTS/OUT (read at call time by benchmarks.py) elsewhere."""
    global WORK, INPUTS, OUT
    if work is not None:
        WORK = work.resolve()
        INPUTS = WORK / "inputs"
    if out is not None:
        OUT = out.resolve()


class BenchFailure(Exception):
    """The thing a benchmark measures did not work (or broke its own correctness check)."""


def fail(message: str) -> NoReturn:
    raise BenchFailure(message)


def one_line(text: str, limit: int = 400) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def last_line(text: str) -> str:
    """The last non-empty line of a child's stderr: usually the message that says why."""
    return one_line("\n".join(reversed(str(text).splitlines())))


def run_main(name: str, main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's main(): any failure ends with ONE line on stderr and exit 1, no traceback
    (the full traceback goes to OUT/NAME-failure.txt for whoever needs it)."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as exc:  # the contract: one clear line, whatever broke
        detail = str(exc) if isinstance(exc, BenchFailure) else f"{type(exc).__name__}: {exc}"
        where = ""
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            dump = OUT / f"{name}-failure.txt"
            dump.write_text(traceback.format_exc())
            where = f" (traceback in {dump})"
        except OSError:
            pass
        print(f"{name}: FAILED: {one_line(detail)}{where}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(code)


# --- sources ----------------------------------------------------------------------------------

def _mono_graph(kind: str, dur: float, rate: int, seed: int, label: str) -> str:
    """A lavfi graph producing one mono channel named [label]."""
    d = f"d={dur}"
    if kind == "mix":      # pink noise under a low tone: a dense, music-like signal
        return (f"anoisesrc={d}:c=pink:r={rate}:a=0.25:s={seed}[{label}n];"
                f"sine=f={180 + 40 * (seed % 5)}:r={rate}:{d}[{label}t];"
                f"[{label}n][{label}t]amix=inputs=2:normalize=0[{label}]")
    if kind == "noise":    # white noise: the hardest thing to compress
        return f"anoisesrc={d}:c=white:r={rate}:a=0.3:s={seed}[{label}]"
    if kind == "tone":     # a chord: very easy to compress
        f0 = 220 + 20 * (seed % 7)
        return (f"aevalsrc='0.2*sin(2*PI*{f0}*t)+0.15*sin(2*PI*{f0 * 1.25}*t)+0.1*sin(2*PI*{f0 * 1.5}*t)'"
                f":s={rate}:{d}[{label}]")
    if kind == "silence":  # digital silence
        return f"anullsrc=r={rate}:cl=mono,atrim=duration={dur}[{label}]"
    if kind == "speech":   # a voiced, gliding harmonic source, syllable envelope, pauses, breath noise
        f0 = 110 + 15 * (seed % 6)
        pitch = f"({f0}+25*sin(2*PI*0.7*t)+10*sin(2*PI*3.1*t))"
        voice = "+".join(f"{a}*sin(2*PI*{k}*{pitch}*t)" for k, a in ((1, 0.5), (2, 0.3), (3, 0.2), (5, 0.1), (8, 0.05)))
        env = f"(0.5+0.5*sin(2*PI*4.3*t))*gt(sin(2*PI*0.23*t+{seed % 3}),-0.4)"
        return (f"aevalsrc='0.4*({voice})*{env}':s={rate}:{d}[{label}v];"
                f"anoisesrc={d}:c=pink:r={rate}:a=0.02:s={seed}[{label}b];"
                f"[{label}v][{label}b]amix=inputs=2:normalize=0[{label}]")
    raise ValueError(kind)


def source_graph(kind: str, dur: float, channels: int, rate: int = 44100, seed: int = 1) -> str:
    """A filter_complex producing [out] with ``channels`` decorrelated channels of ``kind``."""
    if channels == 1:
        return _mono_graph(kind, dur, rate, seed, "out")
    parts = [_mono_graph(kind, dur, rate, seed + 100 * c, f"c{c}") for c in range(channels)]
    joined = "".join(f"[c{c}]" for c in range(channels))
    layout = {2: "stereo"}.get(channels, f"{channels}c")
    return ";".join(parts) + f";{joined}join=inputs={channels}:channel_layout={layout}[out]"


CODEC_ARGS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "m4a": ["-c:a", "aac", "-b:a", "96k", "-f", "ipod"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "4"],  # Ogg Vorbis: passes the sniff, WhatsApp refuses it
}
CLEAN = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]


def _cached(path: Path, spec: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``path``, building it (atomically) unless a file built from the same spec is there."""
    stamp = path.with_name("." + path.name + ".spec")
    want = json.dumps(dict(spec, v=GEN_VERSION), sort_keys=True)
    if path.exists() and stamp.exists() and stamp.read_text() == want:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(want)
    return path


def make_source(kind: str, dur: float, channels: int, ext: str = "wav", *, rate: int = 44100,
                seed: int = 1, dest: Path | None = None) -> Path:
    """A generated input file (cached)."""
    name = f"{kind}_{channels}ch_{rate}_{dur:g}s_s{seed}.{ext}"
    path = dest or INPUTS / name
    spec = {"kind": kind, "dur": dur, "channels": channels, "ext": ext, "rate": rate, "seed": seed}

    def build(tmp: Path) -> None:
        ffmpeg(["-filter_complex", source_graph(kind, dur, channels, rate, seed), "-map", "[out]",
                "-t", f"{dur}", *CODEC_ARGS[ext], *CLEAN, str(tmp)])

    return _cached(path, spec, build)


def make_long_wav(minutes: float) -> Path:
    """A stereo 44.1 kHz WAV of ``minutes``: the 10-minute mix looped (cheap to build; the encoder
    still has to chew through every sample)."""
    base = make_source("mix", 600, 2)
    if minutes * 60 <= 600:
        return make_source("mix", minutes * 60, 2)
    dur = minutes * 60
    path = INPUTS / f"mix_2ch_44100_{dur:g}s_looped.wav"

    def build(tmp: Path) -> None:
        ffmpeg(["-stream_loop", "-1", "-i", str(base), "-t", f"{dur}", "-c:a", "pcm_s16le", *CLEAN,
                "-f", "wav", str(tmp)])

    return _cached(path, {"kind": "looped-mix", "dur": dur, "base": base.name}, build)


# --- measuring --------------------------------------------------------------------------------

def timed(argv: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
          timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=timeout)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        fail(f"{Path(argv[0]).name} exited {proc.returncode}: "
             f"{last_line(proc.stderr.decode(errors='replace'))} ({shlex.join(argv)})")
    return elapsed, proc


def peak_rss(argv: Sequence[str], *, interval: float = 0.05, env: dict[str, str] | None = None,
             timeout: float = 7200) -> dict[str, Any]:
    """Run ``argv`` under bench/measure_peak.py (a fresh process, so its RUSAGE_CHILDREN is this
    command's alone) and return its report (MiB figures, elapsed, return code)."""
    wrapper = [PY, str(BENCH / "measure_peak.py"), "--interval", str(interval), "--"]
    proc = subprocess.run(wrapper + list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        fail(f"measure_peak failed: {last_line(proc.stderr.decode(errors='replace'))}")
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if report["returncode"] != 0:
        fail(f"{Path(argv[0]).name} exited {report['returncode']}: {last_line(report.get('stderr_tail', ''))} "
             f"({shlex.join(argv)})")
    return report


# --- other work on the machine -----------------------------------------------------------------
# Other people's test runs share these CPUs. We cannot stop them, but we can see them: the machine's
# busy CPU time (/proc/stat) minus our own (this process and every child we waited for).

def _busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = v[0] + v[1] + v[2] + sum(v[5:8])  # user nice system irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class ForeignLoad:
    """CPU cores used by other processes (not ours) between start() and cores()."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self._busy, self._own, self._t = _busy_s(), _own_s(), time.perf_counter()

    def cores(self) -> float | None:
        busy = _busy_s()
        if busy is None or self._busy is None:
            return None
        dt = time.perf_counter() - self._t
        return max(0.0, (busy - self._busy) - (_own_s() - self._own)) / max(dt, 1e-6)


QUIET_CORES = 0.25      # "quiet": other processes use less than this over one second
QUIET_MAX_WAIT = 10.0   # per timed run
QUIET_BUDGET = 90.0     # per whole run: past this, stop waiting (a busy machine stays busy)
waited_total = 0.0


def wait_quiet(label: str = "") -> None:
    """Before a timed run: wait a little for other processes to calm down (< 0.25 core over 1 s),
    within a small per-run budget, so a shared machine's bursts hit fewer measurements."""
    global waited_total
    if waited_total >= QUIET_BUDGET:
        return
    t0 = time.perf_counter()
    while True:
        meter = ForeignLoad()
        time.sleep(0.5)
        load = meter.cores()
        if load is None or load < QUIET_CORES:
            break
        if time.perf_counter() - t0 > QUIET_MAX_WAIT or waited_total + time.perf_counter() - t0 > QUIET_BUDGET:
            log(f"    (other work still uses {load:.2f} cores; measuring {label} anyway)")
            break
    waited_total += time.perf_counter() - t0


def timed_load(argv: Sequence[str], **kw: Any) -> tuple[float, subprocess.CompletedProcess[bytes], float | None]:
    """timed(), plus the CPU cores other processes used meanwhile."""
    meter = ForeignLoad()
    elapsed, proc = timed(argv, **kw)
    return elapsed, proc, meter.cores()


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- output -----------------------------------------------------------------------------------

def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MB"
