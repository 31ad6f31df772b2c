"""The per-row report of a batch, as CSV a spreadsheet can open safely."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audiopipe.errors import AudiopipeError, OutputError
from audiopipe.preparation.outputs import ProtectArg, as_protected, place, stage
from audiopipe.scratch import discard
from audiopipe.text import safe

# size, format and duration_sent are of the part that went out; source_duration of the whole
# recording, so a trimmed one shows what was cut (seconds, to the hundredth)
REPORT_COLUMNS = ("contact", "workspace", "file", "part", "parts", "status", "message_id", "error", "line",
                  "size", "action", "format", "duration_sent", "source_duration", "sent_by", "object_key")
# The header of reports written before sent_by and object_key: still ours to replace.
EARLIER_COLUMNS = REPORT_COLUMNS[:-2]
FORMULA_START = ("=", "+", "-", "@")


def extra_column_name(name: str) -> str:
    """A CSV's own column as it appears in the report: one named like ours gets a ``csv_`` prefix."""
    return f"csv_{name}" if name in REPORT_COLUMNS or name.startswith("csv_") else name


# Cells whose text comes from the server (a message id, its reasons for a refusal): control
# characters in them are written out as escapes, as on the terminal. The CSV's own columns are the
# user's data and stay as they are (a line break in a note is theirs).
SERVER_TEXT = frozenset({"message_id", "error"})


def escape_cell(value: Any) -> str:
    """Text a spreadsheet will not run as a formula: a cell that starts with = + - @, a tab or a
    line break, or with spaces before one of those (spreadsheets skip them), gets a leading '."""
    text = "" if value is None else str(value)
    risky = text[:1] in ("\t", "\r", "\n") or text.lstrip().startswith(FORMULA_START)
    return "'" + text if risky else text


def is_report(path: str | Path) -> bool:
    """Whether ``path`` holds a report audiopipe wrote: it starts with our header row."""
    header = ",".join(REPORT_COLUMNS)
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline(len(header) + 2).rstrip("\r\n")
    except OSError:
        return False
    return any(first == h or first.startswith(h + ",") for h in (header, ",".join(EARLIER_COLUMNS)))


def check_report_path(path: str | Path, *, protect: ProtectArg = (), overwrite: bool = False) -> bool:
    """May a report be written at ``path``? Raises :class:`OutputClash` when it is (a link to) one
    of ``protect`` (the contacts CSV, the ledger, an input), :class:`OutputError` for a folder or a
    file that is not an earlier report (unless ``overwrite``). True when something there may be
    replaced. Call it before the batch, so a bad --report is found before anything is sent."""
    dest = Path(path)
    as_protected(protect).refuse(dest, "give --report another path")
    if dest.is_dir():
        raise OutputError(dest, "is a folder: give --report a file path")
    if not os.path.lexists(dest):
        return False
    if overwrite or is_report(dest):
        return True
    raise OutputError(dest, "exists and is not an audiopipe report: left as it is (--overwrite replaces "
                            "it, or give --report another path)")


def write_report(path: str | Path, rows: Iterable[dict[str, Any]], extra_columns: Iterable[str] = (), *,
                 protect: ProtectArg = (), overwrite: bool = False) -> Path:
    """Write the rows (``RowResult.to_dict()``) to ``path`` atomically; returns the path.

    An earlier report at ``path`` is replaced; nothing else is without ``overwrite``, and a file in
    ``protect`` never is (see :func:`check_report_path`)."""
    dest = Path(path)
    replace_ok = check_report_path(dest, protect=protect, overwrite=overwrite)
    extras = [extra_column_name(c) for c in extra_columns]
    columns = list(REPORT_COLUMNS) + extras
    try:
        staged = stage(dest)
        try:
            with open(staged, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow([escape_cell(c) for c in columns])  # a CSV's own column may be named =cmd()
                for row in rows:
                    w.writerow([escape_cell(safe(row.get(c)) if c in SERVER_TEXT and row.get(c) is not None
                                            else row.get(c)) for c in columns])
            place(staged, dest, replace=replace_ok)
        finally:
            discard(staged)
    except OSError as exc:  # a full disk...: one line, not a traceback
        raise AudiopipeError(f"cannot write the report {dest}: {exc.strerror or exc}") from None
    return dest
