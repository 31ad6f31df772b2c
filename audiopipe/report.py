"""The per-row report of a batch, as CSV a spreadsheet can open safely."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable

from .encode import temp_path_for
from .errors import AudiopipeError

# size, format and duration_sent are of the part that went out; source_duration of the whole
# recording, so a trimmed one shows what was cut (seconds, to the hundredth)
REPORT_COLUMNS = ("contact", "workspace", "file", "part", "parts", "status", "message_id", "error", "line",
                  "size", "action", "format", "duration_sent", "source_duration")
FORMULA_START = ("=", "+", "-", "@")


def extra_column_name(name: str) -> str:
    """A CSV's own column as it appears in the report: one named like ours gets a ``csv_`` prefix."""
    return f"csv_{name}" if name in REPORT_COLUMNS or name.startswith("csv_") else name


def escape_cell(value: Any) -> str:
    """Text a spreadsheet will not run as a formula: a cell that starts with = + - @, a tab or a
    line break, or with spaces before one of those (spreadsheets skip them), gets a leading '."""
    text = "" if value is None else str(value)
    risky = text[:1] in ("\t", "\r", "\n") or text.lstrip().startswith(FORMULA_START)
    return "'" + text if risky else text


def write_report(path: str | Path, rows: Iterable[dict[str, Any]], extra_columns: Iterable[str] = ()) -> Path:
    """Write the rows (``RowResult.to_dict()``) to ``path`` atomically; returns the path."""
    dest = Path(path)
    extras = [extra_column_name(c) for c in extra_columns]
    columns = list(REPORT_COLUMNS) + extras
    tmp = temp_path_for(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow([escape_cell(c) for c in columns])  # a CSV's own column may be named =cmd()
                for row in rows:
                    w.writerow([escape_cell(row.get(c)) for c in columns])
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:  # a --report under a file, a full disk...: one line, not a traceback
        raise AudiopipeError(f"cannot write the report {dest}: {exc.strerror or exc}") from None
    return dest
