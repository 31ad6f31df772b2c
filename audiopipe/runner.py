"""Running ffmpeg and ffprobe: finding them, one runner for every call, and reading their failures.

Every run is an argv list (never a shell string), with ``-nostdin`` and a timeout; the command is
logged at debug level; a failure raises :class:`FFmpegError` whose message holds the one line of
stderr that says most (the whole stderr is carried on the error and logged, shown with -v).

The children themselves are started, watched and stopped by :mod:`audiopipe.children` (their own
session, a registry a signal can stop, death with the parent on Linux), under the memory, CPU and
wall-clock limits of :mod:`audiopipe.child_limits`; a child stopped by a limit raises
:class:`LimitExceeded`, whose message names the limit and how to raise it. The names of both modules
that callers use are importable from here too.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audiopipe.child_limits import (
    CPU_ENV,
    CPU_GRACE,
    CRASH_SIGNALS,
    DEFAULT_CPU_SECONDS,
    DEFAULT_MEMORY,
    MEMORY_ENV,
    MEMORY_SIGNS,
    MIB,
    TIMEOUT_ENV,
    ChildLimits,
    wall_timeout,
)
from audiopipe.children import (
    MAX_LINE,
    STOP_GRACE,
    Interrupted,
    interrupt_when_safe,
    run_child,
    stop_children,
    stopping,
)
from audiopipe.errors import FFmpegError, LimitExceeded, ToolMissingError

__all__ = [
    "CPU_ENV",
    "CPU_GRACE",
    "CRASH_SIGNALS",
    "DEFAULT_CPU_SECONDS",
    "DEFAULT_MEMORY",
    "DEFAULT_TIMEOUT",
    "EXTRA_DIRS",
    "INSTALL_HINT",
    "MAX_LINE",
    "MEMORY_ENV",
    "MEMORY_SIGNS",
    "MIB",
    "STOP_GRACE",
    "TIMEOUT_ENV",
    "ChildLimits",
    "Interrupted",
    "RunResult",
    "audio_encoders",
    "ffmpeg_base",
    "ffmpeg_version",
    "ffprobe_base",
    "find_tool",
    "interrupt_when_safe",
    "run",
    "run_child",
    "stop_children",
    "stopping",
    "telling_line",
    "wall_timeout",
]

log = logging.getLogger(__name__)

# Folders cron's short PATH misses, where package managers put ffmpeg.
EXTRA_DIRS = ("/usr/local/bin", "/opt/homebrew/bin", "/usr/bin", "/bin", "/snap/bin",
              "/opt/local/bin", "/usr/local/opt/ffmpeg/bin")

INSTALL_HINT = ("install it (Debian/Ubuntu: 'sudo apt-get install ffmpeg'; macOS: 'brew install ffmpeg') "
                "or point {env} at the binary")

DEFAULT_TIMEOUT = 600.0


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


# Lines that only say that something failed, not what: skipped when picking the line to show.
_GENERIC = re.compile(r"^(conversion failed!?|exiting normally.*|error opening output files?.*|"
                      r"last message repeated \d+ times?|press \[q\].*|)$", re.IGNORECASE)
_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")  # "[adpcm_ms @ 0x55a5a9b87080] "
# ffmpeg 5 exits 0 when the output could not be finished (a full disk while writing the trailer).
_WRITE_FAILED = re.compile(r"^(error writing trailer|error closing file)\b", re.IGNORECASE | re.MULTILINE)


def telling_line(stderr: str) -> str:
    """The line of ffmpeg's stderr that says most about a failure: the last one that is not a
    generic "Conversion failed!", without the decoder's memory address."""
    lines = [_CONTEXT.sub("", line.strip()) for line in stderr.splitlines()]
    telling = [line for line in lines if not _GENERIC.match(line)]
    return telling[-1] if telling else ""


def _failure(what: str, detail: str) -> str:
    return f"{what} failed: {detail} (run with -v to see ffmpeg's whole output)"


def run(argv: list[str], *, timeout: float | None = DEFAULT_TIMEOUT, what: str = "ffmpeg",
        on_stdout_line: Callable[[bytes], None] | None = None, limited: bool = True) -> RunResult:
    """Run one ffmpeg/ffprobe command and return its output; raise :class:`FFmpegError` on failure.
    ``on_stdout_line`` gets each line of stdout as it comes (then not kept in the result).
    ``limited=False`` only for questions about the build (``-encoders``, ``-version``): they read no
    input, and a limit set too low for the user's files must fail those files, one line each, not
    look like a broken installation."""
    log.debug("run: %s", shlex.join(argv))
    limits = ChildLimits.from_env() if limited else ChildLimits(memory=None, cpu=None)
    timeout = wall_timeout(timeout)
    started = time.monotonic()
    try:
        proc = run_child(argv, timeout=timeout, preexec=limits.preexec(), on_stdout_line=on_stdout_line)
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise LimitExceeded(f"{what} did not finish within {timeout:g} s and was stopped; if this input is "
                            f"genuine, raise {TIMEOUT_ENV} (seconds)", limit="time",
                            argv=argv, stderr=stderr) from None
    except FileNotFoundError:
        raise ToolMissingError(f"{argv[0]} could not be started: " +
                               INSTALL_HINT.format(env="AUDIOPIPE_FFMPEG")) from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 or _WRITE_FAILED.search(stderr):
        log.info("%s exited with %s; its stderr:\n%s", what, proc.returncode, stderr.rstrip())
        hit = limits.explain(proc.returncode, stderr, time.monotonic() - started) if proc.returncode else None
        if hit:
            raise LimitExceeded(f"{what} {hit[1]}", limit=hit[0], argv=argv, stderr=stderr,
                                returncode=proc.returncode)
        detail = telling_line(stderr) or f"exit code {proc.returncode}"
        raise FFmpegError(_failure(what, detail), argv=argv, stderr=stderr, returncode=proc.returncode)
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
    out = run([ffmpeg, "-nostdin", "-hide_banner", "-encoders"], timeout=30, what="ffmpeg -encoders",
              limited=False)
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
    out = run([ffmpeg, "-nostdin", "-hide_banner", "-version"], timeout=30, what="ffmpeg -version",
              limited=False)
    first = out.stdout.decode("utf-8", "replace").splitlines()
    return first[0] if first else "unknown"


def ffmpeg_version() -> str:
    return _version(find_tool("ffmpeg"))
