"""How a failed command ends: one line on stderr, ``audiopipe: error: ...`` with the command line's
flags in it, and the exit code cron can act on (:func:`~audiopipe.cli.exits.error_exit_code`); the
traceback only with --debug.

Every command is a :class:`Command`, so a library error (or an OS error nothing else explained) raised
while it runs ends this way; errors in parsing the command line stay click's own.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from audiopipe.cli.console import say
from audiopipe.cli.exits import ExitCode, error_exit_code
from audiopipe.cli.flags import told
from audiopipe.errors import AudiopipeError, SendError, TokenRefused, os_error_line


def error_line(exc: AudiopipeError) -> str:
    """What a library error says, with the flags; a failed send also says whether the message may exist."""
    if not isinstance(exc, SendError) or isinstance(exc, TokenRefused):  # a refused token: nothing was sent
        return told(exc)
    if exc.created is None:
        return f"{told(exc)} -- it MAY have been delivered: check before sending again"
    return f"{told(exc)} -- the message was not created"


def _fail(message: str, code: ExitCode, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    say(f"audiopipe: error: {message}", err=True)
    sys.exit(int(code))


@contextmanager
def errors_end_the_command(debug: bool) -> Iterator[None]:
    """Turn library errors into one line and an exit code; tracebacks only with ``debug``."""
    try:
        yield
    except AudiopipeError as exc:
        _fail(error_line(exc), error_exit_code(exc), debug)
    except OSError as exc:  # a path nothing else explained (a full or read-only disk...): the set-up
        _fail(os_error_line(exc), error_exit_code(exc), debug)
    except MemoryError:
        _fail("out of memory: an input is far larger than it should be; check the files given", ExitCode.FAILED,
              debug)


class Command(click.Command):
    """An audiopipe command: it runs in :func:`errors_end_the_command` (``--debug`` is the group's)."""

    def invoke(self, ctx: click.Context) -> Any:
        with errors_end_the_command(debug=bool(ctx.find_root().params.get("debug"))):
            return super().invoke(ctx)
