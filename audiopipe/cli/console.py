"""Terminal plumbing for the CLI: one way to print a line (escaped), progress bars that switch
themselves off, and logging routed through them."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from tqdm import tqdm

from audiopipe.text import safe


def say(line: object, *, err: bool = False) -> None:
    """Print one line of the CLI's output, untrusted parts escaped. Every text line goes through
    here (or :func:`safe`); JSON output is already escaped by ``json.dumps`` (ASCII only)."""
    click.echo(safe(line), err=err)


class TqdmHandler(logging.Handler):
    """Log lines written above the bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # ffmpeg's full stderr (shown with -v) and a traceback are meant to span lines; a warning
            # is one line, whatever a file name in it holds
            multiline = record.levelno < logging.WARNING or record.exc_info
            lines = text.split("\n") if multiline else [text]
            tqdm.write("\n".join(safe(line) for line in lines), file=sys.stderr)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


class _PlainFormatter(logging.Formatter):
    """``audiopipe: warning: ...``, like the CLI's own error lines, when no -v asked for detail."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"audiopipe: {record.levelname.lower()}: {record.getMessage()}"


class _OneLineFormatter(_PlainFormatter):
    """A library's warning on one line: its message and the exception's first line, no traceback (a
    worker riding out a database restart would otherwise print pages of them; --debug shows them)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatMessage(record)}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first = (str(exc).strip().splitlines() or [""])[0]
            text += f" ({type(exc).__name__}{': ' + first if first else ''})"
        return text


def setup_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose or debug
                         else _PlainFormatter())
    root = logging.getLogger("audiopipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # the job queue's own logs (workers): every job at INFO, so only its warnings unless --debug, each
    # on one line
    queue_handler = TqdmHandler()
    queue_handler.setFormatter(handler.formatter if debug else _OneLineFormatter())
    queue = logging.getLogger("procrastinate")
    queue.handlers[:] = [queue_handler]
    queue.setLevel(logging.DEBUG if debug else logging.WARNING)
    queue.propagate = False


def bars_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class _Bar(tqdm):  # type: ignore[misc]
    """A bar two columns short of the terminal's width. Ctrl-C typed at a terminal echoes ``^C``
    after the bar: on a full-width bar that wraps the line, and every frame after it (the closing
    one too) is drawn on the wrapped line below a stale copy."""

    @property
    def format_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = super().format_dict
        if d.get("ncols"):
            d["ncols"] = max(d["ncols"] - 2, 20)
        return d


def progress_bar(total: int, desc: str, *, enabled: bool, unit: str = "file", bar_format: str | None = None) -> Any:
    return _Bar(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=True, bar_format=bar_format)
