"""What goes wrong with a ledger, as errors the CLI turns into one line and an exit code."""

from __future__ import annotations

from audiopipe.errors import AudiopipeError, UsageError

# --new-ledger is the way out of every refusal of a ledger; each says what it costs
RESENDS = "only if that record is lost for good: everything it recorded is sent again"
NEW_LEDGER_HINT = f"add --new-ledger to start afresh on purpose ({RESENDS})"


class LedgerLocked(AudiopipeError):
    """Another run holds the ledger."""


class LedgerRefused(UsageError):
    """The ledger is missing, empty, not ours, or not the one that recorded this work before."""


class NotResolvable(UsageError):
    """Only a send whose outcome is unknown can be settled by hand."""


class LedgerIOError(AudiopipeError):
    """The ledger could not be read or written (disk full, read-only, I/O error...)."""
