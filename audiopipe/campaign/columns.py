"""The columns of a contacts CSV: which header names mean the contact, the workspace and the file.

One vocabulary for every reader of such a list, the campaign's (:mod:`audiopipe.campaign.contacts`)
and the sandbox's strict mode (:mod:`audiopipe.sandbox.strict`), so that a list one of them reads is
read alike by the other. Header names are matched case-insensitively, with spaces and dashes taken
as underscores (``Contact ID``, ``contact-id`` and ``contact_id`` are one name).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class Column(str, Enum):
    """What a column of a contacts CSV holds (equal to its plain name: ``Column.FILE == "file"``)."""

    CONTACT = "contact"
    WORKSPACE = "workspace"
    FILE = "file"

    def __str__(self) -> str:
        return self.value


# For each column, the header names that mean it: the first one a CSV has wins.
ALIASES: dict[Column, tuple[str, ...]] = {
    Column.CONTACT: ("contact", "contact_id", "contactid", "contact_uuid", "id"),
    Column.WORKSPACE: ("workspace", "workspace_id", "workspaceid", "workspace_uuid"),
    Column.FILE: ("file", "audio", "path", "file_name", "filename", "audio_file", "file_path"),
}


def normalize_header(name: str) -> str:
    """A header name as the aliases are written: trimmed, lower case, ``_`` for spaces and dashes."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def find_columns(header: Sequence[str]) -> dict[Column, int]:
    """Where each known column is in ``header`` (its index); a column the CSV lacks is left out."""
    names = [normalize_header(h) for h in header]
    found: dict[Column, int] = {}
    for column, aliases in ALIASES.items():
        index = next((names.index(alias) for alias in aliases if alias in names), None)
        if index is not None:
            found[column] = index
    return found
