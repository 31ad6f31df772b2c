"""The batch: a folder of recordings against a contacts CSV, every message sent exactly once.

Each unique source file is prepared once (in parallel, cached) however many contacts get it. Sends
run ``concurrency`` at a time under one rate limit; a 429 pauses every worker for its Retry-After;
a 401 stops the run (nothing more goes out). Every send goes through the ledger: the whole plan
recorded ``pending`` before the first request, each intent committed before its request and its
result after, so a rerun (cron) never sends twice and never skips one, and `audiopipe status` knows
what a stopped run left.

The batch is built in stages, one module each; this module keeps their everyday names importable
from one place:

- :mod:`~audiopipe.campaign.settings`: :class:`BatchSettings`, :class:`SendRules`;
- :mod:`~audiopipe.campaign.run`: :func:`run_batch` (locks, the ledger, the note in the folder);
- :mod:`~audiopipe.campaign.stages`: discover → settle → prepare → plan → send → report over a :class:`BatchRun`;
- :mod:`~audiopipe.campaign.planner`: prepared files × contacts as deliveries, recorded pending;
- :mod:`~audiopipe.campaign.decisions`: what the ledger says about a send before it goes;
- :mod:`~audiopipe.campaign.sender`: :class:`BatchSender`, the send stage;
- :mod:`~audiopipe.campaign.pacing`: :class:`RateLimiter` and the 429 pause all workers share;
- :mod:`~audiopipe.campaign.results`: :class:`RowResult`, :class:`BatchResult`, :class:`BatchInterrupted`.
"""

from __future__ import annotations

from audiopipe.campaign.pacing import RateLimiter, SharedPacer
from audiopipe.campaign.planner import Delivery, Plan, PlanLedger, plan_deliveries, record_plan
from audiopipe.campaign.results import (
    ST_ALREADY,
    ST_BLOCKED,
    ST_FAILED,
    ST_INVALID,
    ST_NOT_SENT,
    ST_SENT,
    ST_UNKNOWN,
    ST_WOULD_SEND,
    STATUSES,
    BatchInterrupted,
    BatchResult,
    ProgressCallback,
    ReportStatus,
    RowResult,
)
from audiopipe.campaign.run import no_valid_rows, run_batch
from audiopipe.campaign.sender import AudioClient, BatchSender, SendLedger
from audiopipe.campaign.settings import BatchSettings, SendRules
from audiopipe.campaign.stages import BatchRun

Sender = AudioClient  # the name this protocol had when the batch was one module

__all__ = [
    "STATUSES",
    "ST_ALREADY",
    "ST_BLOCKED",
    "ST_FAILED",
    "ST_INVALID",
    "ST_NOT_SENT",
    "ST_SENT",
    "ST_UNKNOWN",
    "ST_WOULD_SEND",
    "AudioClient",
    "BatchInterrupted",
    "BatchResult",
    "BatchRun",
    "BatchSender",
    "BatchSettings",
    "Delivery",
    "Plan",
    "PlanLedger",
    "ProgressCallback",
    "RateLimiter",
    "ReportStatus",
    "RowResult",
    "SendLedger",
    "SendRules",
    "Sender",
    "SharedPacer",
    "no_valid_rows",
    "plan_deliveries",
    "record_plan",
    "run_batch",
]
