"""Terminal plumbing for the CLI: progress bars that switch themselves off, logging through them, and
escaping of untrusted text (file names, CSV cells, server and ffmpeg messages) before it reaches a
terminal."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import click
from tqdm import tqdm

# Characters a terminal may act on rather than show: C0 and C1 controls (ESC, BEL, CR, the one-byte
# CSI), DEL, the bidirectional overrides that make text read differently from what it is, line and
# paragraph separators, and lone surrogates (bytes of a file name that are not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for a byte that is not UTF-8: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(text: object) -> str:
    """``text`` with every control character written out as an escape (``\\x1b``), so that a file
    name or a CSV cell can neither drive the terminal nor forge a line of output."""
    return _UNSAFE.sub(_escaped, str(text))


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


def setup_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose or debug
                         else _PlainFormatter())
    root = logging.getLogger("audiopipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def bars_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class _Bar(tqdm):  # type: ignore[misc]
    """A bar two columns short of the terminal's width. Ctrl-C typed at a terminal echoes ``^C``
    after the bar: on a full-width bar that wraps the line, and every frame after it (the closing
    one too) is drawn on the wrapped line below a stale copy."""

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        if d.get("ncols"):
            d["ncols"] = max(d["ncols"] - 2, 20)
        return d


def progress_bar(total: int, desc: str, *, enabled: bool, unit: str = "file", bar_format: str | None = None) -> Any:
    return _Bar(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=True, bar_format=bar_format)


def human_size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
