"""Stopping on SIGINT and SIGTERM: what ``probe``, ``prepare``, ``send`` and ``batch`` do when Ctrl-C,
``kill``, ``timeout`` or systemd stops them.

A command wrapped in :func:`stops_cleanly` stops promptly: its ffmpeg children are stopped, its temp
files and folders removed, one line says what it was doing (:func:`set_stage`) and how to carry on,
and it exits 130 or 143. A second signal stops it at once. Each command says what it is doing with
:func:`set_stage` as it goes, so the line fits the moment it was stopped.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click

from audiopipe import runner, scratch
from audiopipe.cli.exits import signal_exit_code

JOIN_WORKERS = 1.0  # seconds the exit waits for worker threads (their ffmpeg is stopped already)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Stage:
    """What the command is doing now, for the one line an interruption prints."""

    doing: str = "starting"
    after: str = ""     # what the line adds (how to carry on)
    at_once: str = ""   # what it adds instead when a second signal stops it at once (when it differs)


@dataclass
class _Run:
    """The one command this process runs: its stage, and the first signal it received."""

    stage: Stage = field(default_factory=Stage)
    signum: int | None = None


_run = _Run()


def set_stage(doing: str, after: str = "", at_once: str = "") -> None:
    _run.stage = Stage(doing, after, at_once)


@contextmanager
def stage(doing: str, after: str = "") -> Iterator[None]:
    """A stage within a stage (a token check while preparing): the outer one again after it. Not
    when the inner one is interrupted: the line must say what was stopped."""
    outer = _run.stage
    set_stage(doing, after)
    yield
    _run.stage = outer


def interrupted_line(signum: int, left: list[Path], at_once: bool = False) -> str:
    name = signal.Signals(signum).name
    line = f"audiopipe: interrupted by {name}{' again, stopped at once' if at_once else ''} while {_run.stage.doing}"
    line += ("; nothing partial was left" if not left else
             f"; could not remove {len(left)} temp item(s), e.g. {left[0]}")
    now = _run.stage
    after = now.at_once if at_once and now.at_once else now.after
    return line + (f"; {after}" if after else "")


def _exit_now(code: int) -> NoReturn:
    """Leave without waiting for threads: what had to be cleaned up was, and none may hold the exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):
            pass
    os._exit(code)


def _on_signal(signum: int, _frame: object) -> None:
    if _run.signum is not None:  # a second signal: stop now, whatever is in flight
        runner.stop_children(grace=0)
        left = scratch.remove_all()
        # os.write: the interrupted main thread may be inside a write to stderr itself; on a terminal
        # the line starts on a line of its own, not at the end of a progress bar or of the echoed ^C
        start = "\n" if os.isatty(2) else ""
        os.write(2, (start + interrupted_line(signum, left, at_once=True) + "\n").encode("utf-8", "replace"))
        os._exit(signal_exit_code(signum))
    _run.signum = signum
    runner.stop_children()  # before unwinding: every worker blocked on ffmpeg wakes up now
    runner.interrupt_when_safe()  # a KeyboardInterrupt now, or right after a child being started


def _stop_interrupted(signum: int) -> NoReturn:
    runner.stop_children()  # no-op after a signal; a KeyboardInterrupt that came another way
    deadline = time.monotonic() + JOIN_WORKERS
    workers = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    left = scratch.remove_all()
    click.echo(interrupted_line(signum, left), err=True)
    code = signal_exit_code(signum)
    if any(t.is_alive() for t in workers):
        _exit_now(code)
    sys.exit(code)


def stops_cleanly(func: F) -> F:
    """SIGINT and SIGTERM stop the command promptly: its ffmpeg children are stopped, its temp files
    and folders removed, one line says what was interrupted, and it exits 130 or 143. A second
    signal stops it at once."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)  # only the main thread may take signals
        _run.signum = None
        set_stage("starting")
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            _stop_interrupted(_run.signum or signal.SIGINT)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return cast(F, wrapper)
