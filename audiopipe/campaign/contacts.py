"""Reading a contacts CSV: who gets which file.

Text as spreadsheets save it: UTF-8 with or without BOM (read first, fast), UTF-16 with or without
BOM (Excel's "Unicode text"), and the Windows code pages of Excel's plain "CSV" (cp1252 in the west),
detected with charset-normalizer. Delimiter detected (``,`` ``;`` tab); headers matched with the
aliases of :mod:`audiopipe.campaign.columns` (which the sandbox's strict mode reads too).
A bad row (bad UUID, missing file, a path that leaves the folder, an exact duplicate) is reported with
its line number and skipped; the rest go on. Paths from the CSV always stay inside the folder.
Only a regular file of at most 256 MiB is read: a FIFO or a device (``/dev/zero``) is refused
before it is opened, so it can neither hang the run nor fill the memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from audiopipe.campaign.columns import ALIASES, Column, find_columns
from audiopipe.errors import UsageError, os_reason
from audiopipe.files import FileTooLarge, NotRegularFile, SmallFileError, read_small_file

if TYPE_CHECKING:
    from _csv import Reader as _CsvReader

__all__ = ["ALIASES", "MAX_CONTACTS_BYTES", "ContactList", "ContactRow", "InvalidRow", "read_contacts", "safe_path"]

log = logging.getLogger(__name__)

MAX_CONTACTS_BYTES = 256 * 1024 * 1024  # about two million rows: far past any real contact list

# UTF-32's little-endian mark begins with UTF-16's: it is tried first.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"))
# UTF-16 without its mark: a contacts file is mostly ASCII (UUIDs), so about half its bytes are NUL.
# A UTF-8 file with a stray NUL stays UTF-8 (its row is reported).
_UTF16_NUL_SHARE = 0.2
# What Excel's plain "CSV" is in Western locales. charset-normalizer cannot tell it from cp1250 and
# its kin on short text (they decode "José" alike), so among equally plausible guesses it wins.
_WESTERN = "cp1252"
_NOT_CSV = {b"PK\x03\x04": "a zip file (an Excel .xlsx workbook?)",
            b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook"}


@dataclass(frozen=True)
class ContactRow:
    line: int
    contact: str
    workspace: str
    file: Path | None            # resolved absolute path inside the folder, or None (broadcast)
    file_label: str | None       # the file as written in the CSV, for reports
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InvalidRow:
    line: int
    reason: str
    contact: str = ""
    workspace: str = ""
    file: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactList:
    path: Path
    rows: tuple[ContactRow, ...]
    invalid: tuple[InvalidRow, ...]
    has_file_column: bool
    extra_columns: tuple[str, ...]
    encoding: str = "UTF-8"  # what the file was read as (UTF-8, UTF-16, cp1252...)


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        return None


def safe_path(folder: Path, written: str) -> tuple[Path | None, str]:
    """Resolve a CSV's file cell inside ``folder``; (None, reason) when it must not be used."""
    text = written.strip()
    parts = PurePosixPath(text.replace("\\", "/")).parts
    problem = _written_problem(text, parts)
    if problem:
        return None, problem
    try:
        root = folder.resolve()
        resolved = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a name over 255 bytes...
        return None, f"file {text!r}: {os_reason(exc)}"
    return _found_inside(root, resolved, text, folder)


def _written_problem(text: str, parts: tuple[str, ...]) -> str:
    """What is wrong with a file cell as written, before the file system is asked ("" for nothing)."""
    if not text:
        return "empty file cell"
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        return f"file {text!r} is an absolute path; paths must be relative to the folder"
    if ".." in parts:
        return f"file {text!r} leaves the folder ('..' is not allowed)"
    return ""


def _found_inside(root: Path, resolved: Path, text: str, folder: Path) -> tuple[Path | None, str]:
    """``resolved`` when it is a file inside ``root`` (links followed), else (None, why not)."""
    if resolved != root and root not in resolved.parents:
        return None, f"file {text!r} is a link that leads outside the folder"
    try:
        if not resolved.is_file():
            return None, f"file {text!r} does not exist in {folder}"
    except (OSError, ValueError) as exc:
        return None, f"file {text!r}: {os_reason(exc)}"
    return resolved, ""


_READ_HINTS: dict[type[SmallFileError], str] = {NotRegularFile: "; give a CSV file",
                                                FileTooLarge: "; split it into several CSV files"}


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_CONTACTS_BYTES; UsageError for anything else."""
    try:
        return read_small_file(path, MAX_CONTACTS_BYTES)
    except SmallFileError as exc:
        hint = _READ_HINTS.get(type(exc), "")
        raise UsageError(f"cannot read contacts file {path}: {exc}{hint}") from None


def _decode(path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was read with."""
    raw = _read_bounded(path)
    for bom, encoding, name in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding), name
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1  # near enough for UTF-16: the bytes are named
                raise UsageError(f"{path}: begins as {name} text but byte {exc.start} (about line {line}) "
                                 f"is not {name}; save the CSV again as CSV UTF-8") from None
    nuls = raw.count(b"\x00")
    if nuls <= len(raw) * _UTF16_NUL_SHARE:
        try:
            return raw.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            pass
    return _detected(path, raw)


_WESTERN_MARGIN = 0.1


def _detected(path: Path, raw: bytes) -> tuple[str, str]:
    """Text that is not UTF-8: what charset-normalizer makes of it, or one line saying it is not text."""
    from charset_normalizer import from_bytes

    results = from_bytes(raw)
    best = results.best()
    if best is None:
        kind = next((k for magic, k in _NOT_CSV.items() if raw.startswith(magic)), "not text")
        raise UsageError(f"{path} is {kind}, not a CSV file: save the contacts as CSV UTF-8 "
                         "(or CSV, or Unicode text)")
    # cp1252 (Excel's "CSV" on a western Windows) wins when it reads the bytes almost as cleanly as
    # the detector's pick: a short list with "€" scores 0.083 in cp1252 and 0.0 in cp775, while
    # Cyrillic, Greek or Central European text never comes that close in cp1252
    plausible = [best] + [r for r in results if r.chaos <= best.chaos + _WESTERN_MARGIN]
    encoding = _WESTERN if any(_WESTERN in r.could_be_from_charset for r in plausible) else best.encoding
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        encoding, text = best.encoding, str(best)
    name = encoding.replace("_", "-").upper() if encoding.startswith("utf") else encoding
    if encoding.startswith("utf") or encoding == _WESTERN:
        log.info("%s is not UTF-8: read it as %s", path, name)
    else:  # a guess among many code pages: say so, where the user can see it
        log.warning("%s is not UTF-8: read it as %s, a guess; if names look wrong in the report, save "
                    "it as CSV UTF-8", path, name)
    return text, name


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:8192]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        for d in (";", "\t"):
            if d in first and "," not in first:
                class _D(csv.excel):
                    delimiter = d
                return _D
        return csv.excel


def read_contacts(csv_path: str | Path, folder: str | Path, *, default_workspace: str | None = None) -> ContactList:
    """Read ``csv_path``; file cells are resolved inside ``folder``."""
    path = Path(csv_path)
    text, encoding = _decode(path)
    if not text.strip():
        raise UsageError(f"{path}: the contacts file is empty")
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    layout = _Layout.of(path, _header(path, reader))
    checker = _RowChecker(layout, Path(folder), _workspace_setting(path, layout, default_workspace))
    rows: list[ContactRow] = []
    invalid: list[InvalidRow] = []
    for line, record in _records(reader):
        checked = checker.check(line, record)
        if isinstance(checked, ContactRow):
            rows.append(checked)
        else:
            invalid.append(checked)
    return ContactList(path=path, rows=tuple(rows), invalid=tuple(invalid),
                       has_file_column=Column.FILE in layout.columns, extra_columns=layout.extra_names,
                       encoding=encoding)


def _header(path: Path, reader: _CsvReader) -> list[str]:
    """The first row, which names the columns."""
    header = next(reader, None)
    if header is None:
        raise UsageError(f"{path}: the contacts file is empty")
    if any("\x00" in h for h in header):
        raise UsageError(f"{path}:1: the header holds a NUL byte: the file is damaged there "
                         "(save the CSV again as CSV UTF-8)")
    return header


def _records(reader: _CsvReader) -> Iterator[tuple[int, list[str]]]:
    """Each row that is not blank, with the line it starts on (a quoted cell may span lines)."""
    end = reader.line_num  # the last physical line read so far
    for record in reader:
        start, end = end + 1, reader.line_num
        if any(cell.strip() for cell in record):
            yield start, record


def _workspace_setting(path: Path, layout: _Layout, default_workspace: str | None) -> str | None:
    """The workspace of rows whose workspace cell is empty (``default_workspace``, checked), or None."""
    fallback = _uuid(default_workspace) if default_workspace else None
    if default_workspace and not fallback:
        raise UsageError(f"--workspace {default_workspace!r} is not a UUID")
    if Column.WORKSPACE not in layout.columns and not fallback:
        raise UsageError(f"{path}: no workspace column; give --workspace or LANCEPILOT_WORKSPACE")
    return fallback


@dataclass(frozen=True)
class _Layout:
    """Where a CSV keeps what: the known columns (:data:`ALIASES`) and, by name, every other one."""

    columns: dict[Column, int]
    extra: tuple[tuple[str, int], ...]  # (header name, index) of the columns carried along as they are

    @classmethod
    def of(cls, path: Path, header: list[str]) -> _Layout:
        columns = find_columns(header)
        if Column.CONTACT not in columns:
            raise UsageError(f"{path}:1: no contact column; name one of: {', '.join(ALIASES[Column.CONTACT])} "
                             f"(found: {', '.join(h for h in header if h.strip()) or 'nothing'})")
        used = set(columns.values())
        extra = tuple((header[i].strip() or f"column{i + 1}", i) for i in range(len(header)) if i not in used)
        return cls(columns, extra)

    @property
    def extra_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.extra)

    def cells(self, record: list[str]) -> _Cells:
        def cell(column: Column) -> str:
            index = self.columns.get(column)
            return record[index].strip() if index is not None and index < len(record) else ""

        extra = {name: (record[i] if i < len(record) else "") for name, i in self.extra}
        return _Cells(cell(Column.CONTACT), cell(Column.WORKSPACE), cell(Column.FILE), extra)


@dataclass(frozen=True)
class _Cells:
    """One row's cells as written (trimmed), before any of them is checked."""

    contact: str
    workspace: str
    file: str
    extra: dict[str, str]


class _RowProblem(Exception):
    """Why a row cannot be used (raised and caught within :class:`_RowChecker`)."""


class _RowChecker:
    """Turns each row into a :class:`ContactRow`, or an :class:`InvalidRow` that says why not; it
    remembers the rows it accepted, so an exact duplicate names the line it repeats."""

    def __init__(self, layout: _Layout, folder: Path, default_workspace: str | None) -> None:
        self._layout = layout
        self._folder = folder
        self._default_workspace = default_workspace
        self._seen: dict[tuple[str, str, str], int] = {}

    def check(self, line: int, record: list[str]) -> ContactRow | InvalidRow:
        damaged = any("\x00" in cell for cell in record)
        if damaged:  # keep the row for the report, with the NUL shown rather than carried along
            record = [cell.replace("\x00", "\\x00") for cell in record]
        cells = self._layout.cells(record)
        try:
            if damaged:
                raise _RowProblem("the row holds a NUL byte: the file is damaged there; fix or remove that row")
            row = self._row(line, cells)
        except _RowProblem as problem:
            return InvalidRow(line, str(problem), cells.contact, cells.workspace or (self._default_workspace or ""),
                              cells.file, cells.extra)
        return row

    def _row(self, line: int, cells: _Cells) -> ContactRow:
        contact = _uuid(cells.contact)
        if not contact:
            raise _RowProblem(f"contact {cells.contact!r} is not a UUID" if cells.contact else "no contact")
        workspace = _uuid(cells.workspace) if cells.workspace else self._default_workspace
        if not workspace:
            raise _RowProblem(f"workspace {cells.workspace!r} is not a UUID" if cells.workspace
                              else "no workspace (column empty, no --workspace)")
        resolved = self._file(cells.file)
        first = self._seen.setdefault((contact, workspace, str(resolved or "")), line)
        if first != line:
            raise _RowProblem(f"duplicate of line {first}")
        return ContactRow(line, contact, workspace, resolved, cells.file or None, cells.extra)

    def _file(self, written: str) -> Path | None:
        """The row's file inside the folder; None when the CSV has no file column (a broadcast)."""
        if Column.FILE not in self._layout.columns:
            return None
        resolved, why = safe_path(self._folder, written)
        if resolved is None:
            raise _RowProblem(why)
        return resolved
