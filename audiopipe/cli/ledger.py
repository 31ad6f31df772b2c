"""The ledger a command works on (``--state``): where it is, and opening one that must already exist.

A command that only reads or settles what a batch recorded never makes a ledger: a wrong --state is
one line (exit 2), not an empty ledger. A ledger another run holds is exit 6
(:class:`~audiopipe.campaign.ledger.LedgerLocked`, see :func:`audiopipe.cli.exits.error_exit_code`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from audiopipe.errors import UsageError, setting

if TYPE_CHECKING:
    from audiopipe.campaign.ledger import SqliteLedger


def state_file(state_path: Path | None) -> Path:
    """The ledger --state names, or the default one (``~/.local/state/audiopipe/ledger.sqlite3``)."""
    from audiopipe.campaign.ledger import default_state_path

    return state_path or default_state_path()


@contextmanager
def existing_ledger(state_path: Path | None, *, when_locked: str) -> Iterator[SqliteLedger]:
    """The ledger at --state, opened without making one; ``when_locked`` is added to the line a held
    ledger gets (what to do about it)."""
    from audiopipe.campaign.ledger import LedgerLocked, open_existing

    path = state_file(state_path)
    try:
        found = open_existing(path)
        if found is None:
            raise UsageError(f"no ledger at {path} (give {setting('state')})", field="state")
        with found as ledger:
            yield ledger
    except LedgerLocked as exc:
        raise LedgerLocked(f"{exc.message(setting)} ({when_locked})", field=exc.field) from None
