"""Finding ffmpeg/ffprobe and running them: one runner for every call.

Every run is an argv list (never a shell string), with ``-nostdin``, a timeout, and stderr captured
by ``communicate`` (so a chatty ffmpeg can never fill a pipe and hang). The command is logged at
debug level; a failure raises :class:`FFmpegError` carrying the tail of stderr.

Every child also runs under a memory (address space) and a CPU-time limit, so no input, however
crafted, can make one ffmpeg eat the machine; a child stopped by a limit (or by the wall-clock
timeout) raises :class:`LimitExceeded`, whose message names the limit and how to raise it.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import FFmpegError, LimitExceeded, ToolMissingError, UsageError
from .units import parse_size

try:
    import resource
except ImportError:  # pragma: no cover - not a POSIX system: no limits to set
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Folders cron's short PATH misses, where package managers put ffmpeg.
EXTRA_DIRS = ("/usr/local/bin", "/opt/homebrew/bin", "/usr/bin", "/bin", "/snap/bin",
              "/opt/local/bin", "/usr/local/opt/ffmpeg/bin")

INSTALL_HINT = ("install it (Debian/Ubuntu: 'sudo apt-get install ffmpeg'; macOS: 'brew install ffmpeg') "
                "or point {env} at the binary")

DEFAULT_TIMEOUT = 600.0

TIMEOUT_ENV = "AUDIOPIPE_FFMPEG_TIMEOUT"
MEMORY_ENV = "AUDIOPIPE_FFMPEG_MEMORY"
CPU_ENV = "AUDIOPIPE_FFMPEG_CPU"
MIB = 1024 * 1024
# Address space, not resident memory: ffmpeg 5.1 maps ~260 MiB of shared libraries before it reads a
# byte. Measured on a 2-hour stereo WAV: 263 MiB of address space (53 MiB resident) to Opus, 435 MiB
# (141 MiB resident) with loudnorm, the hungriest filter we use. 1 GiB leaves 2.3x that, and still
# stops a file built to make ffmpeg allocate gigabytes.
DEFAULT_MEMORY = 1024 * MIB
# The same 2-hour WAV took 286 s of CPU to Opus and 739 s normalised, on a 2-vCPU VM running four
# times more work than it has cores; the longest single encode a 16 MB budget allows is ~6 hours.
DEFAULT_CPU_SECONDS = 3600
CPU_GRACE = 5  # seconds between SIGXCPU (ffmpeg stops cleanly) and SIGKILL
# What a child dying of a too-small address space looks like: the loader or malloc says so, or a
# library that never checks malloc crashes.
MEMORY_SIGNS = ("Cannot allocate memory", "failed to map segment", "out of memory", "Out of memory",
                "std::bad_alloc")
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL})


def find_tool(name: str) -> str:
    """Return the path of ``ffmpeg`` or ``ffprobe``: ``AUDIOPIPE_<NAME>``, then PATH, then usual folders."""
    env = f"AUDIOPIPE_{name.upper()}"
    configured = os.environ.get(env)
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        found = shutil.which(configured)
        if found:
            return found
        raise ToolMissingError(f"{env}={configured} is not an executable file; fix it or unset it")
    found = shutil.which(name)
    if found:
        return found
    for folder in EXTRA_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ToolMissingError(f"{name} not found: " + INSTALL_HINT.format(env=env))


@dataclass(frozen=True)
class RunResult:
    argv: list[str]
    stdout: bytes
    stderr: str


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _env_number(name: str, default: float | None, parse: Callable[[str], float], example: str) -> float | None:
    """A positive limit from the environment; ``0`` turns it off; anything else is a usage error."""
    configured = os.environ.get(name, "").strip()
    if not configured:
        return default
    try:
        value = parse(configured)
    except (ValueError, UsageError):
        value = -1.0
    if value < 0:
        raise UsageError(f"{name}={configured!r} is not valid: write {example}, or 0 for no limit")
    return value or None


def _memory(text: str) -> float:
    """MiB when a bare number (``2048``), else a size with its unit (``2GiB``, ``1500MB``)."""
    text = text.replace("_", "")
    return float(text) * MIB if text.replace(".", "", 1).isdigit() else float(parse_size(text))


@dataclass(frozen=True)
class ChildLimits:
    """The rlimits every ffmpeg/ffprobe child runs under (``None``: unlimited)."""

    memory: int | None  # bytes of address space (RLIMIT_AS)
    cpu: int | None     # seconds of CPU time (RLIMIT_CPU)

    @classmethod
    def from_env(cls) -> "ChildLimits":
        memory = _env_number(MEMORY_ENV, DEFAULT_MEMORY, _memory, "a size such as 2048 (MiB) or 2GiB")
        cpu = _env_number(CPU_ENV, DEFAULT_CPU_SECONDS, float, "a number of CPU seconds such as 7200")
        return cls(memory=int(memory) if memory else None, cpu=max(1, round(cpu)) if cpu else None)

    def apply(self) -> None:
        """Set the limits; runs in the child between fork and exec, so it only calls setrlimit."""
        if resource is None:  # pragma: no cover
            return
        if self.memory:
            _lower(resource.RLIMIT_AS, self.memory, self.memory)
        if self.cpu:
            # the soft limit sends SIGXCPU, which ffmpeg handles by stopping cleanly; the hard one
            # a little later sends SIGKILL, in case it does not
            _lower(resource.RLIMIT_CPU, self.cpu, self.cpu + CPU_GRACE)

    def preexec(self) -> Callable[[], None] | None:
        return self.apply if (self.memory or self.cpu) and resource is not None else None

    def explain(self, returncode: int, stderr: str, elapsed: float) -> tuple[str, str] | None:
        """(limit, phrase) when a failed child was most likely stopped by one of these limits."""
        if self.cpu and returncode in (255, -signal.SIGXCPU, -signal.SIGKILL) \
                and elapsed * (os.cpu_count() or 1) >= self.cpu:
            # it cannot have used its CPU allowance faster than all the machine's cores allow
            return "cpu", (f"was stopped at audiopipe's CPU-time limit of {self.cpu} s; if this input is "
                           f"genuine, raise {CPU_ENV} (e.g. {CPU_ENV}={self.cpu * 2})")
        if self.memory and (any(sign in stderr for sign in MEMORY_SIGNS)
                            or -returncode in CRASH_SIGNALS):
            mib = self.memory // MIB
            sure = "ran out of memory" if returncode >= 0 or "memory" in stderr else \
                f"crashed ({signal.Signals(-returncode).name}), most likely out of memory,"
            return "memory", (f"{sure} under audiopipe's limit of {mib} MiB of address space; if this "
                              f"input is genuine, raise {MEMORY_ENV} (e.g. {MEMORY_ENV}={mib * 2})")
        return None


def _lower(kind: int, soft: int, hard: int) -> None:
    """Lower a limit, never above the hard limit already in force (only root could raise it)."""
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    try:
        resource.setrlimit(kind, (soft, hard))
    except (ValueError, OSError):  # pragma: no cover - a platform without this limit (macOS: RLIMIT_AS)
        pass


def wall_timeout(default: float | None) -> float | None:
    """``AUDIOPIPE_FFMPEG_TIMEOUT`` when set (for every run), else the caller's own estimate."""
    configured = os.environ.get(TIMEOUT_ENV)
    if not configured:
        return default
    try:
        seconds = float(configured)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{TIMEOUT_ENV}={configured!r} must be a number of seconds above 0")
    return seconds


def run(argv: list[str], *, timeout: float | None = DEFAULT_TIMEOUT, what: str = "ffmpeg") -> RunResult:
    """Run one ffmpeg/ffprobe command and return its output; raise :class:`FFmpegError` on failure."""
    log.debug("run: %s", shlex.join(argv))
    limits = ChildLimits.from_env()
    timeout = wall_timeout(timeout)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False,
                              preexec_fn=limits.preexec())
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise LimitExceeded(f"{what} did not finish within {timeout:g} s and was stopped; if this input is "
                            f"genuine, raise {TIMEOUT_ENV} (seconds)", limit="time",
                            argv=argv, stderr=stderr) from None
    except FileNotFoundError:
        raise ToolMissingError(f"{argv[0]} could not be started: " +
                               INSTALL_HINT.format(env="AUDIOPIPE_FFMPEG")) from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        hit = limits.explain(proc.returncode, stderr, time.monotonic() - started)
        if hit:
            raise LimitExceeded(f"{what} {hit[1]}", limit=hit[0], argv=argv, stderr=stderr,
                                returncode=proc.returncode)
        detail = _tail(stderr) or f"exit code {proc.returncode}"
        raise FFmpegError(f"{what} failed: {detail}", argv=argv, stderr=stderr,
                          returncode=proc.returncode)
    return RunResult(argv=argv, stdout=proc.stdout, stderr=stderr)


def ffmpeg_base() -> list[str]:
    """The start of every ffmpeg command line.

    One filter thread (simple and complex graphs): audio filters gain nothing from more, and each
    extra thread reserves a stack, so the memory a run needs would otherwise grow with the machine's
    core count.
    """
    return [find_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-filter_threads", "1", "-filter_complex_threads", "1"]


def ffprobe_base() -> list[str]:
    """The start of every ffprobe command line (one decoder thread, for the same reason)."""
    return [find_tool("ffprobe"), "-hide_banner", "-loglevel", "error", "-threads", "1"]


@functools.lru_cache(maxsize=8)
def _encoders(ffmpeg: str) -> frozenset[str]:
    out = run([ffmpeg, "-nostdin", "-hide_banner", "-encoders"], timeout=30, what="ffmpeg -encoders")
    names = set()
    started = False
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2 and parts[0].startswith("A"):
            names.add(parts[1])
    return frozenset(names)


def audio_encoders() -> frozenset[str]:
    """Names of the audio encoders this ffmpeg build has (asked once per binary)."""
    return _encoders(find_tool("ffmpeg"))


@functools.lru_cache(maxsize=8)
def _version(ffmpeg: str) -> str:
    out = run([ffmpeg, "-nostdin", "-hide_banner", "-version"], timeout=30, what="ffmpeg -version")
    first = out.stdout.decode("utf-8", "replace").splitlines()
    return first[0] if first else "unknown"


def ffmpeg_version() -> str:
    return _version(find_tool("ffmpeg"))
