"""Reading a contacts CSV: who gets which file.

Text as spreadsheets save it: UTF-8 with or without BOM (read first, fast), UTF-16 with or without
BOM (Excel's "Unicode text"), and the Windows code pages of Excel's plain "CSV" (cp1252 in the west),
detected with charset-normalizer. Delimiter detected (``,`` ``;`` tab); headers matched with common
aliases.
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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from audiopipe.errors import UsageError, os_reason
from audiopipe.smallfile import NOT_REGULAR, SmallFileError, read_small_file

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
    encoding: str = "UTF-8"  # what the file was read as (UTF-8, UTF-16, cp1252...)


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
    root = Path(folder)
    text, encoding = _decode(path)
    if not text.strip():
        raise UsageError(f"{path}: the contacts file is empty")
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path}: the contacts file is empty") from None
    if any("\x00" in h for h in header):
        raise UsageError(f"{path}:1: the header holds a NUL byte: the file is damaged there "
                         "(save the CSV again as CSV UTF-8)")
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
                       has_file_column="file" in cols, extra_columns=extra_names, encoding=encoding)
