"""Which ledger recorded a batch's work: the note (``.audiopipe-ledger``) kept beside the work.

**A lost ledger must not resend a campaign.** Each ledger has a random id. The batch keeps a small
:class:`WorkMarker` beside its work (``.audiopipe-ledger`` in the batch folder) naming, for each
contacts file and campaign, the ledger that recorded those sends and how many records it held. A
batch whose ledger is missing, another one, or holds fewer records than that (an old backup put back)
is refused; ``--new-ledger`` starts afresh on purpose and records the new ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from audiopipe import paths
from audiopipe.campaign.ledger.errors import NEW_LEDGER_HINT, LedgerRefused
from audiopipe.campaign.ledger.rows import LedgerIdentity
from audiopipe.campaign.ledger.schema import SQLITE_MAGIC, read_meta
from audiopipe.files import write_atomically

MARKER_NAME = ".audiopipe-ledger"


@dataclass(frozen=True)
class MarkerEntry:
    contacts: str
    campaign: str
    ledger_id: str
    ledger: str
    records: int
    updated: float
    tried: int = 0  # sends of the campaign attempted, after the last run (0 in notes from before)


def _ledger_id_at(path: Path) -> str | None:
    """The id of the ledger at ``path``, read without a lock or a -wal (the id is in the main file
    from the start), or None when there is no readable ledger there."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return None
    except OSError:
        return None
    return read_meta(path, "ledger_id")


class WorkMarker:
    """Which ledger recorded the sends of one batch's work.

    The work is (folder, contacts file, campaign): "already sent" is scoped by campaign, and the same
    folder may go to other contact lists with ledgers of their own. The note lives beside the work,
    in ``.audiopipe-ledger`` in the batch folder, so it survives whatever happens to the ledger's own
    folder; when the batch folder cannot be written it lives in
    ``$XDG_DATA_HOME/audiopipe/folders/<hash of the folder's path>.json`` instead (the caller is told
    once). Both are read; the newest entry counts. It is written before anything is sent, and again
    after, with the number of records the ledger then holds.
    """

    def __init__(self, folder: str | Path, contacts: str | Path, campaign: str, *,
                 data_home: Path | None = None) -> None:
        self.folder = Path(os.path.realpath(folder))
        self.contacts = os.path.realpath(contacts)
        self.campaign = campaign
        self.in_folder = self.folder / MARKER_NAME
        digest = hashlib.sha256(os.fsencode(self.folder)).hexdigest()[:32]
        app_data = data_home / paths.APP if data_home else paths.data_dir()
        self.fallback = app_data / "folders" / f"{digest}.json" if app_data else None

    @property
    def label(self) -> str:
        return f"{self.folder} with {Path(self.contacts).name}, campaign {self.campaign!r}"

    @property
    def work_id(self) -> str:
        """Names this folder and contacts file in the ledger, so that a run's plan replaces the
        pending rows of this work's earlier plan and no other's (see SqliteLedger.plan)."""
        both = os.fsencode(self.folder) + b"\0" + os.fsencode(self.contacts)
        return hashlib.sha256(both).hexdigest()[:16]

    # -- reading ----------------------------------------------------------------------------------

    def _load(self, path: Path | None, *, tolerant: bool) -> list[MarkerEntry]:
        if path is None:
            return []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            if tolerant:
                return []
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise LedgerRefused(f"cannot read {path} ({reason}), which says which ledger recorded earlier "
                                f"sends of this folder; make it readable, or {NEW_LEDGER_HINT}") from None
        try:
            known = MarkerEntry.__dataclass_fields__
            return [MarkerEntry(**{k: v for k, v in e.items() if k in known}) for e in json.loads(text)["work"]]
        except (ValueError, KeyError, TypeError):
            if tolerant:
                return []
            raise LedgerRefused(f"{path} is damaged, so it is unknown which ledger recorded earlier sends of "
                                f"this folder; {NEW_LEDGER_HINT} (it rewrites that file)") from None

    def _mine(self, entries: list[MarkerEntry]) -> MarkerEntry | None:
        for e in entries:
            if e.contacts == self.contacts and e.campaign == self.campaign:
                return e
        return None

    def expected(self, *, tolerant: bool = False) -> MarkerEntry | None:
        """The ledger that last recorded this work, or None for work never sent with a marker.

        Work of this campaign from this folder with another contacts file counts too, when this
        one has none: a renamed copy of the contacts file must meet the same ledger, or it would
        send everything again."""
        entries = [e for p in (self.in_folder, self.fallback) for e in self._load(p, tolerant=tolerant)]
        for matches in (self._is_mine, lambda e: e.campaign == self.campaign):
            found = [e for e in entries if matches(e)]
            if found:
                return max(found, key=lambda e: e.updated)
        return None

    def _is_mine(self, e: MarkerEntry) -> bool:
        return e.contacts == self.contacts and e.campaign == self.campaign

    def _about(self, expected: MarkerEntry) -> str:
        """The work the entry is about: this one, or this folder's campaign with another contacts file."""
        if expected.contacts == self.contacts:
            return self.label
        return f"{self.folder} with {Path(expected.contacts).name} (not {Path(self.contacts).name}), campaign " \
               f"{self.campaign!r}"

    # -- checking ---------------------------------------------------------------------------------

    def check(self, ledger_path: str | Path, identity: LedgerIdentity | None,
              expected: MarkerEntry | None) -> None:
        """Refuse a ledger that is not the one that recorded this work, or an older copy of it."""
        if expected is None or identity is None:
            return
        was = f"{expected.ledger} (id {expected.ledger_id[:8]})"
        if identity.ledger_id != expected.ledger_id:
            raise LedgerRefused(
                f"the ledger {ledger_path} (id {identity.ledger_id[:8]}) is not the one that recorded earlier "
                f"sends of {self._about(expected)}, {was}: they would all be sent again; point --state at that "
                f"ledger, {self._or_new_ledger(expected)}")
        if identity.records < expected.records:
            raise LedgerRefused(
                f"the ledger {ledger_path} holds {identity.records} records but held {expected.records} after "
                f"the last run of {self._about(expected)}: it looks like an older copy, and what it lost would be sent "
                f"again; put back the newer copy, or {NEW_LEDGER_HINT}")
        if identity.tried is not None and identity.tried < expected.tried:
            raise LedgerRefused(
                f"the ledger {ledger_path} holds {identity.tried} attempted sends of campaign "
                f"{self.campaign!r} but held {expected.tried} after the last run of {self._about(expected)}: sends "
                f"were deleted from it, and they would be sent again; put back a whole copy, or {NEW_LEDGER_HINT}")

    def missing(self, ledger_path: str | Path, expected: MarkerEntry) -> LedgerRefused:
        return LedgerRefused(
            f"the ledger {ledger_path} does not exist, but {expected.ledger} (id {expected.ledger_id[:8]}) "
            f"recorded earlier sends of {self._about(expected)}: without it they would all be sent again; put that "
            f"ledger back or point --state at it, {self._or_new_ledger(expected)}")

    @staticmethod
    def _or_new_ledger(expected: MarkerEntry) -> str:
        """The way on besides the recorded ledger: --new-ledger only once that ledger is really gone."""
        if _ledger_id_at(Path(expected.ledger)) == expected.ledger_id:
            return ("which still exists (--new-ledger, which would send again everything it recorded, is "
                    "refused while it does)")
        return f"or {NEW_LEDGER_HINT}"

    def refuse_fresh_start_beside(self, real: Path, expected: MarkerEntry) -> None:
        """``--new-ledger`` is for a ledger that is lost. While the one that recorded this work is still
        where the marker says, whole, a fresh one beside it would send again all it recorded."""
        try:
            if os.path.samefile(expected.ledger, real):
                return
        except OSError:
            pass
        if _ledger_id_at(Path(expected.ledger)) != expected.ledger_id:
            return  # gone, emptied or replaced: starting afresh is what --new-ledger is for
        raise LedgerRefused(
            f"the ledger {expected.ledger} (id {expected.ledger_id[:8]}) that recorded earlier sends of "
            f"{self._about(expected)} still exists, and --new-ledger would send again everything it recorded; point "
            f"--state at it (to start afresh anyway, move that ledger away first)")

    # -- writing ----------------------------------------------------------------------------------

    def record(self, identity: LedgerIdentity) -> str | None:
        """Note that ``identity`` records this work. Returns a line for the user when the note had to
        go elsewhere than the batch folder (the first time only), or could not be kept at all."""
        entry = MarkerEntry(self.contacts, self.campaign, identity.ledger_id, identity.path,
                            identity.records, time.time(), identity.tried or 0)
        try:
            self._store(self.in_folder, entry)
            return None
        except OSError as exc:
            here = exc.strerror or str(exc)
        try:
            if self.fallback is None:
                raise OSError(0, "no home folder")
            before = self._mine(self._load(self.fallback, tolerant=True))
            self._store(self.fallback, entry)
        except OSError as exc:
            return (f"cannot note which ledger sends {self.folder} ({self.in_folder}: {here}; "
                    f"{self.fallback or '$XDG_DATA_HOME'}: {exc.strerror or exc}): if this ledger is lost, "
                    "a later run cannot tell")
        if before is None or before.ledger_id != entry.ledger_id:
            return (f"cannot write {self.in_folder} ({here}): the note of which ledger sends this folder is "
                    f"kept in {self.fallback} instead")
        return None

    def _store(self, path: Path, entry: MarkerEntry) -> None:
        entries = self._load(path, tolerant=True)
        old = self._mine(entries)
        if old is not None and (old.ledger_id, old.ledger, old.records, old.tried) == (
                entry.ledger_id, entry.ledger, entry.records, entry.tried):
            return  # unchanged: leave the folder (and its mtime) alone
        entries = [e for e in entries if e is not old] + [entry]
        body = json.dumps({"about": "which audiopipe ledger recorded the sends of this folder, per contacts "
                                    "file and campaign (see the README, 'Batch'); remove it only with "
                                    "the ledger", "work": [e.__dict__ for e in entries]}, indent=1)
        write_atomically(path, body + "\n", durable=True)
