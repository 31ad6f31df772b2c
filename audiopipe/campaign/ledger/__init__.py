"""The ledger: a durable record of every send, so a rerun never sends twice and never skips one.

What a ledger promises, whatever stores it, is told in :mod:`.interface` (the protocol: a plan
recorded before the first send, the intent before each request, the result after, unknown outcomes
never resent on their own). The rest of the package, one thing each:

- :mod:`.vocabulary`   the states of a send and the other words a ledger records (enums);
- :mod:`.rows`         the values a ledger hands out (a send's key and row, a planned send, its identity);
- :mod:`.interface`    the Ledger protocol, in parts (lock, plan, send, resolve, read);
- :mod:`.errors`       what goes wrong with a ledger;
- :mod:`.sqlite`       SqliteLedger, the ledger in one SQLite file, with
  :mod:`.sqlite_file` (opening the file: made whole, refused when not ours, one name per file),
  :mod:`.runlock` (the run lock: an flock on the file itself), :mod:`.schema` (tables, upgrades)
  and :mod:`.statements` (its SQL, rows read by column name);
- :mod:`.marker`       which ledger recorded a batch's work (``.audiopipe-ledger`` beside it);
- :mod:`.worklock`     one sending run per batch folder, whatever ledger it names;
- :mod:`.names`        campaign names that look alike are one campaign;
- :mod:`.opening`      which ledger a command opens, and when it may make one.

Everything a caller needs is importable from here.
"""

from __future__ import annotations

from audiopipe.campaign.ledger.errors import (
    NEW_LEDGER_HINT,
    RESENDS,
    LedgerIOError,
    LedgerLocked,
    LedgerRefused,
    NotResolvable,
)
from audiopipe.campaign.ledger.interface import (
    Ledger,
    LedgerLock,
    LedgerReader,
    PlanRecorder,
    Resolver,
    SendRecorder,
)
from audiopipe.campaign.ledger.marker import MARKER_NAME, MarkerEntry, WorkMarker
from audiopipe.campaign.ledger.names import campaign_name, check_campaign_case
from audiopipe.campaign.ledger.opening import open_batch_ledger, open_existing
from audiopipe.campaign.ledger.rows import BlockedPart, LedgerIdentity, LedgerRow, PlannedSend, SendKey
from audiopipe.campaign.ledger.schema import ADDED_COLUMNS, SCHEMA, SQLITE_MAGIC, sqlite_reason
from audiopipe.campaign.ledger.sqlite import SqliteLedger
from audiopipe.campaign.ledger.sqlite_file import default_state_path
from audiopipe.campaign.ledger.vocabulary import (
    DEFERRED,
    FAILED,
    FINAL_STATES,
    PENDING,
    RESOLVABLE,
    SENDING,
    SENT,
    STATES,
    UNKNOWN,
    EventKind,
    Outcome,
    RowStatus,
    TallyKey,
    Verdict,
)
from audiopipe.campaign.ledger.worklock import WORK_LOCK_NAME, WorkLock

__all__ = [
    "ADDED_COLUMNS", "DEFERRED", "FAILED", "FINAL_STATES", "MARKER_NAME", "NEW_LEDGER_HINT", "PENDING",
    "RESENDS", "RESOLVABLE", "SCHEMA", "SENDING", "SENT", "SQLITE_MAGIC", "STATES", "UNKNOWN",
    "WORK_LOCK_NAME", "BlockedPart", "EventKind", "Ledger", "LedgerIOError", "LedgerIdentity", "LedgerLock",
    "LedgerLocked", "LedgerReader", "LedgerRefused", "LedgerRow", "MarkerEntry", "NotResolvable", "Outcome",
    "PlanRecorder", "PlannedSend", "Resolver", "RowStatus", "SendKey", "SendRecorder", "SqliteLedger",
    "TallyKey", "Verdict", "WorkLock", "WorkMarker", "campaign_name", "check_campaign_case",
    "default_state_path", "open_batch_ledger", "open_existing", "sqlite_reason",
]
