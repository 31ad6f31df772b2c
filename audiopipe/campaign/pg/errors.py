"""What goes wrong with a PostgreSQL ledger, in words a user can act on.

:class:`DatabaseUnavailable` is a :class:`~audiopipe.campaign.ledger.LedgerIOError`, so whatever
already handles a SQLite ledger that cannot be written (the batch stops, the CLI says why) handles a
database that cannot be reached the same way.
"""

from __future__ import annotations

from audiopipe.campaign.ledger import LedgerIOError
from audiopipe.errors import AudiopipeError, UsageError


class NoDatabase(UsageError):
    """No database was named: neither a URL given nor ``AUDIOPIPE_DATABASE_URL`` set."""


class DatabaseUnavailable(LedgerIOError):
    """The database could not be reached, or stopped answering, for longer than we wait for it."""


class SchemaError(AudiopipeError):
    """The database's schema is not one this audiopipe can use (too new, missing, or not ours)."""


class NotRegistered(AudiopipeError):
    """A worker tried to claim sends before registering (acquire) or after releasing."""


class AlreadyTaken(AudiopipeError):
    """A send another run has sent, or is sending right now: this run must not send it too."""
