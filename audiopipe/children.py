"""Child processes that never outlive the run that started them: start, wait, stop.

* each child runs in its own session, so a terminal's Ctrl-C reaches only audiopipe, which then
  decides (no race between ffmpeg dying on its own and audiopipe cleaning up after it);
* every live child is in a registry; :func:`stop_children` (the CLI's SIGINT/SIGTERM path) refuses
  new ones, terminates the live ones' process groups, and kills what is left after a short grace;
* on Linux each child asks the kernel for SIGKILL when the thread that started it dies
  (``PR_SET_PDEATHSIG``), so even a SIGKILLed audiopipe leaves no ffmpeg running under PID 1.
  Best effort: elsewhere (macOS) a SIGKILLed audiopipe can still leave one ffmpeg to finish alone.

Output is captured by ``communicate`` (a chatty child can never fill a pipe and hang), or by a loop
that drains both pipes alike while it hands stdout's lines to a progress reader. Nothing here knows
about ffmpeg: :mod:`audiopipe.runner` builds the commands and reads their failures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE = 0.5  # seconds a terminated child gets to exit before it is killed
MAX_LINE = 64 * 1024  # a stdout "line" longer than this is no progress report: dropped, never kept
_READ_CHUNK = 65536


class Interrupted(KeyboardInterrupt):
    """The run is being stopped (SIGINT/SIGTERM) and this child was killed, or was not started.

    A KeyboardInterrupt, not an :class:`AudiopipeError`: it is no error of a file, and no handler
    that carries on with the next file or falls back to another encode may swallow it.
    """


# --- the children alive now, so a signal can stop them ---------------------------------------------

_live: dict[int, subprocess.Popen[bytes]] = {}
_stopped: set[int] = set()        # pids of live children stop_children signalled
_live_lock = threading.RLock()    # re-entrant: stop_children runs in signal handlers, on any line
_stopping = threading.Event()     # set for good: the process is on its way out

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
    seconds; each waiting :func:`run_child` raises :class:`Interrupted`. ``for_good`` (the CLI's
    signal path) also refuses every later child. Returns how many were stopped. Safe in a signal
    handler."""
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


@dataclass
class _MainSpawn:
    active: bool = False     # the main thread is inside Popen: the fork and Python's at-fork hooks
    interrupt: bool = False  # a signal handler asked for a KeyboardInterrupt meanwhile


_main_spawn = _MainSpawn()


def interrupt_when_safe() -> None:
    """For a signal handler: raise KeyboardInterrupt now, or, while the main thread is starting a
    child, as soon as the child is started and registered. Raised inside the at-fork hooks (logging
    has one), it would be printed as "Exception ignored" and lost, and the stop with it."""
    if _main_spawn.active:
        _main_spawn.interrupt = True
        return
    raise KeyboardInterrupt


@contextmanager
def _interrupts_held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    _main_spawn.active = True
    try:
        yield
    finally:
        _main_spawn.active = False
        pending, _main_spawn.interrupt = _main_spawn.interrupt, False
        if pending:
            raise KeyboardInterrupt  # replaces an error in flight too: the stop is what happened


def _start(argv: list[str], preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    if _stopping.is_set():
        raise Interrupted(f"interrupted: {Path(argv[0]).name} was not started")
    # The hook asks for PR_SET_PDEATHSIG and the rlimits, which can only be set between fork and exec.
    # It makes those system calls through functions looked up beforehand: it takes no lock and imports
    # nothing, so another thread holding one at the fork cannot hang it (ruff's worry about threads).
    hook = functools.partial(_in_child, os.getpid(), preexec)
    with _interrupts_held():  # a Ctrl-C now comes out once the child is registered (and so stopped)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=hook)  # noqa: PLW1509 - only a hook sets pdeathsig and rlimits; see above
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


class _LineSplitter:
    """Cuts a byte stream into lines for ``on_line`` (without their ``\\r\\n``), keeping only the
    unfinished last one, and never more than :data:`MAX_LINE` of it."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self._on_line = on_line
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > MAX_LINE:
            self._pending = b""
        for line in lines:
            self._on_line(line.rstrip(b"\r"))


def _communicate_by_line(proc: subprocess.Popen[bytes], timeout: float | None,
                         on_line: Callable[[bytes], None]) -> tuple[bytes, bytes]:
    """``communicate()`` that hands each stdout line to ``on_line`` as it comes (ffmpeg's
    ``-progress pipe:1``) instead of keeping it. Both pipes are drained as they fill, so a chatty
    child never blocks on a full pipe. Returns (b"", stderr); ``TimeoutExpired`` carries stderr so far."""
    deadline = None if timeout is None else time.monotonic() + timeout
    err = bytearray()
    lines = _LineSplitter(on_line)
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, lines)
        sel.register(proc.stderr, selectors.EVENT_READ, None)
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0.0, stderr=bytes(err))
            for key, _events in sel.select(left):
                chunk = os.read(key.fd, _READ_CHUNK)  # the fd, not the buffered file: select sees all there is
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.data is None:
                    err += chunk
                else:
                    key.data.feed(chunk)
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
