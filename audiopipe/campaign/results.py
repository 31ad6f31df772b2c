"""What a batch hands back: a row per (contact, file, part), the run's totals, and the interruption
that still carries them.

The row statuses are the report's vocabulary (the README lists them): a :class:`ReportStatus` compares
equal to its string, so reports, JSON and callers that compare with ``"sent"`` see what they did.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audiopipe.campaign.report import extra_column_name
from audiopipe.preparation.pipeline import PrepareOutcome


class ReportStatus(str, enum.Enum):
    """What became of one (contact, file, part) in this run."""

    SENT = "sent"
    ALREADY = "already_sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    NOT_SENT = "not_sent"      # definitely not sent this run (429s, connection, stopped): the next run sends it
    BLOCKED = "blocked"        # a later part behind an unknown or refused part: no run sends it until settled
    WOULD_SEND = "would_send"  # --dry-run

    def __str__(self) -> str:
        return self.value


ST_SENT = ReportStatus.SENT
ST_ALREADY = ReportStatus.ALREADY
ST_FAILED = ReportStatus.FAILED
ST_UNKNOWN = ReportStatus.UNKNOWN
ST_INVALID = ReportStatus.INVALID
ST_NOT_SENT = ReportStatus.NOT_SENT
ST_BLOCKED = ReportStatus.BLOCKED
ST_WOULD_SEND = ReportStatus.WOULD_SEND
STATUSES = tuple(s.value for s in ReportStatus)


@dataclass
class RowResult:
    line: int | None
    contact: str
    workspace: str
    file: str
    part: int | None
    parts: int | None
    status: ReportStatus
    message_id: str | None = None
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    # what was (or would be) sent: what prepare did, the format, this part's length and the source's
    action: str | None = None           # kept, remuxed, transcoded, trimmed, split
    format: str | None = None
    duration_sent: float | None = None  # seconds
    source_duration: float | None = None
    sent_by: str | None = None          # upload or url (None: no request was made for it)
    object_key: str | None = None       # sent by URL: the part's key in the store (never the URL)

    def to_dict(self) -> dict[str, Any]:
        # The CSV's own columns are kept; one named like ours ("status", "error"...) becomes csv_status.
        return {**{extra_column_name(k): v for k, v in self.extra.items()}, "line": self.line,
                "contact": self.contact, "workspace": self.workspace, "file": self.file, "part": self.part,
                "parts": self.parts, "status": self.status, "message_id": self.message_id, "error": self.error,
                "size": self.size, "action": self.action, "format": self.format,
                "duration_sent": _seconds(self.duration_sent), "source_duration": _seconds(self.source_duration),
                "sent_by": self.sent_by, "object_key": self.object_key}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class BatchResult:
    campaign: str
    rows: list[RowResult]
    extra_columns: tuple[str, ...] = ()
    unique_files: int = 0
    prepared: list[PrepareOutcome] = field(default_factory=list)
    stopped: str | None = None   # why the run stopped early (401)
    recovered: int = 0           # rows found mid-send from a dead run, now unknown
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)  # warnings for the user (where the ledger marker went)
    held_back: dict[str, float] = field(default_factory=dict)  # file -> seconds since it changed (--settle)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            c[r.status] += 1
        return c

    def summary(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "counts": self.counts(), "unique_files": self.unique_files,
                "stopped": self.stopped, "recovered_unknown": self.recovered, "dry_run": self.dry_run,
                "held_back": sorted(self.held_back)}


# (stage, done, total). Stages: "prepare" (files), "send" (every (contact, file, part) handled, sent or
# not) and "skip" (those of them the ledger settled without a request: already sent, or left failed
# or unknown), so a display can tell a send rate from a rerun that only skips.
ProgressCallback = Callable[[str, int, int], None]


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the batch. Still a KeyboardInterrupt (nothing catches it by
    mistake), carrying what was done: ``result`` has a row for every (contact, file, part) the run
    knew of, those it never reached ``not_sent``; ``stage`` is "preparing" or "sending"."""

    def __init__(self, result: BatchResult, stage: str) -> None:
        super().__init__(f"interrupted while {stage}")
        self.result = result
        self.stage = stage
