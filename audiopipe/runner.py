"""Finding ffmpeg/ffprobe and running them: one runner for every call.

Every run is an argv list (never a shell string), with ``-nostdin``, a timeout, and stderr captured
by ``communicate`` (so a chatty ffmpeg can never fill a pipe and hang), or by a loop that drains
both pipes alike while it hands stdout's lines to a progress reader. The command is logged at
debug level; a failure raises :class:`FFmpegError` whose message holds the one line of stderr that
says most (the whole stderr is carried on the error and logged, shown with -v).

Children never outlive the run that started them:

* each runs in its own session, so a terminal's Ctrl-C reaches only audiopipe, which then decides
  (no race between ffmpeg dying on its own and audiopipe cleaning up after it);
* every live child is in a registry; :func:`stop_children` (the CLI's SIGINT/SIGTERM path) refuses
  new ones, terminates the live ones' process groups, and kills what is left after a short grace;
* on Linux each child asks the kernel for SIGKILL when the thread that started it dies
  (``PR_SET_PDEATHSIG``), so even a SIGKILLed audiopipe leaves no ffmpeg running under PID 1.
  Best effort: elsewhere (macOS) a SIGKILLed audiopipe can still leave one ffmpeg to finish alone.

Every child also runs under a memory (address space) and a CPU-time limit, so no input, however
crafted, can make one ffmpeg eat the machine; a child stopped by a limit (or by the wall-clock
timeout) raises :class:`LimitExceeded`, whose message names the limit and how to raise it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audiopipe.errors import FFmpegError, LimitExceeded, ToolMissingError, UsageError
from audiopipe.units import parse_size

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


class Interrupted(KeyboardInterrupt):
    """The run is being stopped (SIGINT/SIGTERM) and this ffmpeg was killed, or was not started.

    A KeyboardInterrupt, not an :class:`AudiopipeError`: it is no error of a file, and no handler
    that carries on with the next file or falls back to another encode may swallow it.
    """


# --- the children alive now, so a signal can stop them ---------------------------------------------

_live: dict[int, subprocess.Popen[bytes]] = {}
_stopped: set[int] = set()        # pids of live children stop_children signalled
_live_lock = threading.RLock()    # re-entrant: stop_children runs in signal handlers, on any line
_stopping = threading.Event()     # set for good: the process is on its way out
STOP_GRACE = 0.5  # seconds a terminated child gets to exit before it is killed

_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    try:  # looked up once here: the child, between fork and exec, must not load anything
        _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
    except (OSError, AttributeError):
        _prctl = None


def _in_child(parent: int, then: Callable[[], None] | None) -> None:
    """Runs in the forked child before exec: die with the thread that started us (Linux), then
    ``then`` (the caller's own set-up)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGKILL)
    if then is not None:
        then()


def stopping() -> bool:
    """Whether ``stop_children(for_good=True)`` was called: the process is on its way out."""
    return _stopping.is_set()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.returncode is not None:
        return  # reaped: its pid (the group's id) may belong to someone else by now
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_children(grace: float = STOP_GRACE, *, for_good: bool = True) -> int:
    """Terminate every live child's process group, and kill those still there after ``grace``
    seconds; each waiting :func:`run` raises :class:`Interrupted`. ``for_good`` (the CLI's signal
    path) also refuses every later child. Returns how many were stopped. Safe in a signal handler."""
    if for_good:
        _stopping.set()
    with _live_lock:
        procs = list(_live.values())
        _stopped.update(p.pid for p in procs)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
    return len(procs)


def _start(argv: list[str], preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    if _stopping.is_set():
        raise Interrupted(f"interrupted: {Path(argv[0]).name} was not started")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            preexec_fn=functools.partial(_in_child, os.getpid(), preexec))
    with _live_lock:
        _live[proc.pid] = proc
        if _stopping.is_set():  # stop_children ran between the check above and the registration
            _stopped.add(proc.pid)
            _signal_group(proc, signal.SIGKILL)
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> bool:
    """Make sure the child is gone and reaped, forget it; True when stop_children signalled it."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    with _live_lock:
        _live.pop(proc.pid, None)
        stopped = proc.pid in _stopped
        _stopped.discard(proc.pid)
    return stopped


MAX_LINE = 64 * 1024  # a stdout "line" longer than this is no progress report: dropped, never kept


def _communicate_by_line(proc: subprocess.Popen[bytes], timeout: float | None,
                         on_line: Callable[[bytes], None]) -> tuple[bytes, bytes]:
    """``communicate()`` that hands each stdout line to ``on_line`` as it comes (ffmpeg's
    ``-progress pipe:1``) instead of keeping it. Both pipes are drained as they fill, so a chatty
    child never blocks on a full pipe. Returns (b"", stderr); ``TimeoutExpired`` carries stderr so far."""
    deadline = None if timeout is None else time.monotonic() + timeout
    err = bytearray()
    pending = b""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0.0, stderr=bytes(err))
            for key, _events in sel.select(left):
                chunk = os.read(key.fd, 65536)  # the fd, not the buffered file: select sees all there is
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.data == "err":
                    err += chunk
                else:
                    *lines, pending = (pending + chunk).split(b"\n")
                    if len(pending) > MAX_LINE:
                        pending = b""
                    for line in lines:
                        on_line(line.rstrip(b"\r"))
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        proc.wait(left)
    except subprocess.TimeoutExpired as exc:  # the pipes closed but the child lives on
        exc.stderr = bytes(err)
        raise
    return b"", bytes(err)


def run_child(argv: list[str], *, timeout: float | None,
              preexec: Callable[[], None] | None = None,
              on_stdout_line: Callable[[bytes], None] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` with stdin closed and output captured, whose child runs in its own session,
    is registered while it lives and dies with us (Linux); raises ``TimeoutExpired`` as it does, and
    :class:`Interrupted` when :func:`stop_children` stopped the child. With ``on_stdout_line``, stdout
    is not kept but handed over line by line as the child writes it (progress reports)."""
    proc = _start(argv, preexec)
    stopped = False
    try:
        try:
            if on_stdout_line is None:
                out, err = proc.communicate(timeout=timeout)
            else:
                out, err = _communicate_by_line(proc, timeout, on_stdout_line)
        except subprocess.TimeoutExpired as exc:
            _signal_group(proc, signal.SIGKILL)
            so_far = (exc.stderr or b"") if on_stdout_line is not None else b""  # communicate() keeps its own
            exc.stdout, rest = proc.communicate()
            exc.stderr = so_far + (rest or b"")
            raise
    finally:  # whatever ends the wait (a KeyboardInterrupt in this thread too), no child runs on
        stopped = _finish(proc)
    if stopped:
        raise Interrupted(f"interrupted: {Path(argv[0]).name} was stopped")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


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
