"""The limits every ffmpeg/ffprobe child runs under, so no input, however crafted, can make one eat
the machine: an address-space (memory) limit and a CPU-time limit, set in the child before it
starts, and a wall-clock timeout the runner keeps. Each is read from the environment
(``AUDIOPIPE_FFMPEG_MEMORY``, ``..._CPU``, ``..._TIMEOUT``; ``0`` turns a limit off), and when a child
fails, :meth:`ChildLimits.explain` says whether a limit stopped it and how to raise that limit.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from audiopipe.errors import UsageError
from audiopipe.units import parse_size

try:
    import resource
    _HAVE_RLIMITS = True
except ImportError:  # pragma: no cover - not a POSIX system: no limits to set
    _HAVE_RLIMITS = False

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
    def from_env(cls) -> ChildLimits:
        memory = _env_number(MEMORY_ENV, DEFAULT_MEMORY, _memory, "a size such as 2048 (MiB) or 2GiB")
        cpu = _env_number(CPU_ENV, DEFAULT_CPU_SECONDS, float, "a number of CPU seconds such as 7200")
        return cls(memory=int(memory) if memory else None, cpu=max(1, round(cpu)) if cpu else None)

    def apply(self) -> None:
        """Set the limits; runs in the child between fork and exec, so it only calls setrlimit."""
        if not _HAVE_RLIMITS:  # pragma: no cover
            return
        if self.memory:
            _lower(resource.RLIMIT_AS, self.memory, self.memory)
        if self.cpu:
            # the soft limit sends SIGXCPU, which ffmpeg handles by stopping cleanly; the hard one
            # a little later sends SIGKILL, in case it does not
            _lower(resource.RLIMIT_CPU, self.cpu, self.cpu + CPU_GRACE)

    def preexec(self) -> Callable[[], None] | None:
        return self.apply if (self.memory or self.cpu) and _HAVE_RLIMITS else None

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
