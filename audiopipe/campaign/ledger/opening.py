"""Which ledger a command opens, and when it may make one.

Only a run that sends makes a ledger. Reading (a dry run, `audiopipe status`, `audiopipe resolve`,
`audiopipe doctor`) opens the ledger that is there, or finds there is none (:func:`open_existing`):
it never leaves an empty ledger behind, which a later run would take for the record of this work.
"""

from __future__ import annotations

import os
from pathlib import Path

from audiopipe.campaign.ledger.marker import MarkerEntry, WorkMarker
from audiopipe.campaign.ledger.sqlite import SqliteLedger
from audiopipe.campaign.ledger.sqlite_file import default_state_path


def open_existing(path: str | Path | None = None) -> SqliteLedger | None:
    """The ledger at ``path`` (the default one when None), or None when there is none: a reader
    never makes one, nor an id in a ledger from before ids (see :class:`SqliteLedger`'s ``create``).
    What is there but is no ledger of ours is refused (LedgerRefused), as always."""
    path = Path(path) if path else default_state_path()
    if not path.exists():
        return None
    return SqliteLedger(path, create=False)


def open_batch_ledger(path: str | Path, marker: WorkMarker, expected: MarkerEntry | None, *,
                      new_ledger: bool, dry_run: bool) -> SqliteLedger | None:
    """Open the ledger for a batch: refuse a missing one that this work was recorded in before
    (rather than make an empty one), and let a dry run create nothing (None: no ledger yet)."""
    real = Path(os.path.realpath(path))
    if new_ledger and expected is not None:
        marker.refuse_fresh_start_beside(real, expected)
    if not real.exists() and expected is not None and not new_ledger:
        raise marker.missing(path, expected)
    if dry_run:
        if new_ledger and real.is_file() and real.stat().st_size == 0:
            return None  # would be made anew; a dry run makes nothing
        return open_existing(path)
    return SqliteLedger(path, allow_empty=new_ledger)
