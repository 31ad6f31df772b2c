"""Strict mode: only the contacts a CSV lists exist; any other is the API's 404.

The CSV is read with the campaign's column vocabulary (:mod:`audiopipe.campaign.columns`), so the list
a batch sends to can serve as the sandbox's list as it is. A contact listed with a workspace exists in
that workspace (several rows: several workspaces); listed once without one, it exists in every
workspace. Without a CSV (the default) every contact exists.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audiopipe.campaign.columns import ALIASES, Column, find_columns
from audiopipe.errors import UsageError
from audiopipe.files import SmallFileError, read_small_file
from audiopipe.sandbox.checks import UUID_RE

if TYPE_CHECKING:
    from _csv import Reader as _CsvReader

# Contacts of strict mode: contact UUID -> the workspaces it belongs to, or None for "any workspace".
Contacts = dict[str, frozenset[str] | None]

_CONTACTS_LIMIT = 256 * 1024 * 1024  # a strict-mode list is a test fixture; anything larger is a mistake


def load_contacts(path: str | Path) -> Contacts:
    """Read the contacts of strict mode from a UTF-8 CSV.

    The contact and workspace columns are found by their aliases (header names are
    case-insensitive); an empty workspace cell means any workspace. Raises :class:`UsageError` on a
    bad file.
    """
    path = Path(path)
    try:
        text = read_small_file(path, _CONTACTS_LIMIT).decode("utf-8-sig")
    except SmallFileError as exc:
        raise UsageError(f"cannot read the contacts CSV {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a readable UTF-8 CSV: {exc}") from None
    try:
        with io.StringIO(text, newline="") as fh:
            return _contacts_in(path, csv.reader(fh))
    except csv.Error as exc:
        raise UsageError(f"{path} is not a readable CSV: {exc}") from None


def _contacts_in(path: Path, reader: _CsvReader) -> Contacts:
    columns = find_columns(next(reader, []))
    if Column.CONTACT not in columns:
        raise UsageError(f"{path}: no contact column; name one of {', '.join(ALIASES[Column.CONTACT])}")
    found: dict[str, set[str] | None] = {}
    for record in reader:
        contact = _cell(record, columns.get(Column.CONTACT))
        if not contact:
            continue
        workspace = _cell(record, columns.get(Column.WORKSPACE))
        for what, value in (("contact", contact), ("workspace", workspace)):
            if value and not UUID_RE.fullmatch(value):
                raise UsageError(f"{path}, line {reader.line_num}: {what} {value!r} is not a UUID")
        _add(found, contact.lower(), workspace.lower())
    return {c: (frozenset(ws) if ws is not None else None) for c, ws in found.items()}


def _cell(record: list[str], index: int | None) -> str:
    return record[index].strip() if index is not None and index < len(record) else ""


def _add(found: dict[str, set[str] | None], contact: str, workspace: str) -> None:
    if not workspace:
        found[contact] = None  # listed once without a workspace: it exists everywhere
        return
    if contact not in found:
        found[contact] = {workspace}
        return
    workspaces = found[contact]
    if workspaces is not None:
        workspaces.add(workspace)


@dataclass(frozen=True)
class KnownContacts:
    """Who exists: everyone (``listed`` None, the default), or the contacts of a strict-mode CSV."""

    listed: Contacts | None = None

    @classmethod
    def from_csv(cls, path: Path | None) -> KnownContacts:
        return cls(load_contacts(path) if path is not None else None)

    def exists(self, workspace: str, contact: str) -> bool:
        """Whether ``contact`` exists in ``workspace`` (both lower-case UUIDs)."""
        if self.listed is None:
            return True
        if contact not in self.listed:
            return False
        workspaces = self.listed[contact]
        return workspaces is None or workspace in workspaces
