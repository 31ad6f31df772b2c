"""The exit codes the README documents, and how each command's outcome becomes one.

One small function per command from its result (or its error) to an :class:`ExitCode`, so the
ladders read as tables and the commands end with ``exit_with(..._exit_code(...))``.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    GaveUp,
    OutcomeUnknown,
    SendError,
    ToolMissingError,
    UsageError,
)

if TYPE_CHECKING:
    from audiopipe.campaign.batch import BatchResult
    from audiopipe.preparation.pipeline import PrepareOutcome


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1         # some inputs failed / refused by the server
    USAGE = 2          # a bad flag, setting or set-up (ffmpeg missing)
    AUTH = 3
    UNKNOWN = 4        # an upload's outcome is unknown: it may have been delivered
    NOT_SENT = 5       # not sent after retries
    LOCKED = 6         # another run holds the ledger
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
    TERMINATED = 143   # 128 + SIGTERM (kill, timeout, systemd)


def exit_with(code: ExitCode) -> NoReturn:
    sys.exit(int(code))


def error_exit_code(exc: BaseException) -> ExitCode:
    """A command stopped by an error: what cron should make of it."""
    from audiopipe.campaign.ledger import LedgerLocked

    if isinstance(exc, SendError):
        return send_exit_code(exc)
    if isinstance(exc, LedgerLocked):
        return ExitCode.LOCKED
    if isinstance(exc, (UsageError, ToolMissingError, OSError)):  # a flag, a setting or the set-up
        return ExitCode.USAGE
    pg_errors = sys.modules.get("audiopipe.campaign.pg.errors")  # loaded when a database was used, only then
    if pg_errors is not None and isinstance(exc, pg_errors.SchemaError):  # migrate it, or upgrade us: the set-up
        return ExitCode.USAGE
    return ExitCode.FAILED


def probe_exit_code(unreadable: int) -> ExitCode:
    return ExitCode.FAILED if unreadable else ExitCode.OK


def prepare_exit_code(outcomes: Iterable[PrepareOutcome]) -> ExitCode:
    """1 when any input failed (the others are still prepared)."""
    return ExitCode.FAILED if any(o.result is None for o in outcomes) else ExitCode.OK


def send_exit_code(exc: SendError) -> ExitCode:
    if isinstance(exc, AuthError):
        return ExitCode.AUTH
    if isinstance(exc, OutcomeUnknown):
        return ExitCode.UNKNOWN
    if isinstance(exc, (GaveUp, ConnectFailed)) or exc.retryable:
        return ExitCode.NOT_SENT
    return ExitCode.FAILED


def batch_exit_code(result: BatchResult) -> ExitCode:
    """The most urgent of what the rows say: a stopped run, unknown, refused, left for the next run."""
    counts = result.counts()
    if result.stopped:
        return ExitCode.AUTH
    if counts["unknown"]:
        return ExitCode.UNKNOWN
    if counts["failed"] or counts["invalid"]:
        return ExitCode.FAILED
    if counts["not_sent"] or counts["blocked"]:
        return ExitCode.NOT_SENT
    return ExitCode.OK


STATUS_EXIT_CODES = {"stopped": ExitCode.AUTH, "unknown": ExitCode.UNKNOWN, "failed": ExitCode.FAILED,
                     "left": ExitCode.NOT_SENT, "ok": ExitCode.OK}


def status_exit_code(verdict: str) -> ExitCode:
    """``audiopipe status``: its verdict (see :meth:`LedgerStatus.verdict`; a shared database's may also
    be ``stopped``, see :meth:`audiopipe.campaign.pg.progress.DatabaseStatus.verdict`)."""
    return STATUS_EXIT_CODES.get(verdict, ExitCode.OK)


DOCTOR_EXIT_CODES = {"ok": ExitCode.OK, "warn": ExitCode.FAILED, "fail": ExitCode.USAGE}


def doctor_exit_code(status: str) -> ExitCode:
    """``audiopipe doctor``: 0 all ok, 1 warnings only (runs work), 2 a run would be refused."""
    return DOCTOR_EXIT_CODES[status]


def signal_exit_code(signum: int) -> int:
    """128 + the signal's number, as a shell reports it (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum
