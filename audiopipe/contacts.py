"""Reading a contacts CSV: who gets which file.

UTF-8 with or without BOM; delimiter detected (``,`` ``;`` tab); headers matched with common aliases.
A bad row (bad UUID, missing file, a path that leaves the folder, an exact duplicate) is reported with
its line number and skipped; the rest go on. Paths from the CSV always stay inside the folder.
Only a regular file of at most 256 MiB is read: a FIFO or a device (``/dev/zero``) is refused
before it is opened, so it can neither hang the run nor fill the memory.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import UsageError, os_reason
from .smallfile import NOT_REGULAR, SmallFileError, read_small_file

MAX_CONTACTS_BYTES = 256 * 1024 * 1024  # about two million rows: far past any real contact list

ALIASES = {
    "contact": ("contact", "contact_id", "contactid", "contact_uuid", "id"),
    "workspace": ("workspace", "workspace_id", "workspaceid", "workspace_uuid"),
    "file": ("file", "audio", "path", "file_name", "filename", "audio_file", "file_path"),
}


def _norm_header(h: str) -> str:
    return h.strip().lower().replace(" ", "_").replace("-", "_")


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


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        return None


def safe_path(folder: Path, written: str) -> tuple[Path | None, str]:
    """Resolve a CSV's file cell inside ``folder``; (None, reason) when it must not be used."""
    text = written.strip()
    if not text:
        return None, "empty file cell"
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        return None, f"file {text!r} is an absolute path; paths must be relative to the folder"
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        return None, f"file {text!r} leaves the folder ('..' is not allowed)"
    try:
        root = folder.resolve()
        resolved = root.joinpath(*parts).resolve()
        if resolved != root and root not in resolved.parents:
            return None, f"file {text!r} is a link that leads outside the folder"
        if not resolved.is_file():
            return None, f"file {text!r} does not exist in {folder}"
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a name over 255 bytes...
        return None, f"file {text!r}: {os_reason(exc)}"
    return resolved, ""


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_CONTACTS_BYTES; UsageError for anything else."""
    try:
        return read_small_file(path, MAX_CONTACTS_BYTES)
    except SmallFileError as exc:
        hint = {NOT_REGULAR: "; give a CSV file"}.get(str(exc), "")
        if str(exc).startswith("larger than"):
            hint = "; split it into several CSV files"
        raise UsageError(f"cannot read contacts file {path}: {exc}{hint}") from None


def _decode(path: Path) -> str:
    raw = _read_bounded(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text; save the CSV as UTF-8") from None


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
    root = Path(folder)
    text = _decode(path)
    if not text.strip():
        raise UsageError(f"{path}: the contacts file is empty")
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path}: the contacts file is empty") from None
    if any("\x00" in h for h in header):  # UTF-16 saved without a BOM reads as text full of NULs
        raise UsageError(f"{path}:1: the header holds a NUL byte: the file is damaged or not UTF-8 text "
                         "(save the CSV as UTF-8)")
    names = [_norm_header(h) for h in header]
    cols: dict[str, int] = {}
    for role, aliases in ALIASES.items():
        for alias in aliases:
            if alias in names:
                cols[role] = names.index(alias)
                break
    if "contact" not in cols:
        raise UsageError(f"{path}:1: no contact column; name one of: {', '.join(ALIASES['contact'])} "
                         f"(found: {', '.join(h for h in header if h.strip()) or 'nothing'})")
    ws_default = _uuid(default_workspace) if default_workspace else None
    if default_workspace and not ws_default:
        raise UsageError(f"--workspace {default_workspace!r} is not a UUID")
    if "workspace" not in cols and not ws_default:
        raise UsageError(f"{path}: no workspace column; give --workspace or LANCEPILOT_WORKSPACE")
    used = set(cols.values())
    extra_idx = [i for i in range(len(header)) if i not in used]
    extra_names = tuple(header[i].strip() or f"column{i + 1}" for i in extra_idx)

    rows: list[ContactRow] = []
    invalid: list[InvalidRow] = []
    seen: dict[tuple[str, ...], int] = {}
    line = 1
    end = reader.line_num  # the last physical line read so far
    for record in reader:
        line, end = end + 1, reader.line_num  # a quoted cell may span lines: report where the row starts
        if not any(cell.strip() for cell in record):
            continue
        nul = any("\x00" in c for c in record)
        if nul:  # keep the row for the report, with the NUL shown rather than carried along
            record = [c.replace("\x00", "\\x00") for c in record]
        cell = lambda role: record[cols[role]].strip() if role in cols and cols[role] < len(record) else ""  # noqa: E731
        extra = {n: (record[i] if i < len(record) else "") for n, i in zip(extra_names, extra_idx)}
        raw_contact, raw_ws, raw_file = cell("contact"), cell("workspace"), cell("file")

        def bad(reason: str) -> None:
            invalid.append(InvalidRow(line, reason, raw_contact, raw_ws or (ws_default or ""), raw_file, extra))

        if nul:
            bad("the row holds a NUL byte: the file is damaged there; fix or remove that row")
            continue
        contact = _uuid(raw_contact)
        if not contact:
            bad(f"contact {raw_contact!r} is not a UUID" if raw_contact else "no contact")
            continue
        workspace = _uuid(raw_ws) if raw_ws else ws_default
        if not workspace:
            bad(f"workspace {raw_ws!r} is not a UUID" if raw_ws else "no workspace (column empty, no --workspace)")
            continue
        resolved: Path | None = None
        if "file" in cols:
            resolved, why = safe_path(root, raw_file)
            if resolved is None:
                bad(why)
                continue
        key = (contact, workspace, str(resolved or ""))
        if key in seen:
            bad(f"duplicate of line {seen[key]}")
            continue
        seen[key] = line
        rows.append(ContactRow(line, contact, workspace, resolved, raw_file or None, extra))
    return ContactList(path=path, rows=tuple(rows), invalid=tuple(invalid),
                       has_file_column="file" in cols, extra_columns=extra_names)
