"""audiopipe: any audio in, a file the Lancepilot audio-message API accepts out, sent exactly once.

The everyday API is here; the stages are importable on their own (``audiopipe.preparation.probe``
and the rest are modules)::

    from audiopipe import PrepareSettings, prepare, probe

    info = probe("talk.flac")
    result = prepare("talk.flac", "ready/", PrepareSettings(format="mp3", max_size=5_000_000))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audiopipe.errors import (
    AudiopipeError,
    AuthError,
    ConnectFailed,
    FFmpegError,
    GaveUp,
    InputError,
    OutcomeUnknown,
    OutputClash,
    OutputError,
    PrepareError,
    RateLimited,
    RefusedError,
    SendError,
    ToolMissingError,
    UsageError,
)
from audiopipe.preparation.formats import FORMATS, TargetFormat
from audiopipe.preparation.inputs import collect_inputs
from audiopipe.preparation.pipeline import prepare_file, prepare_many
from audiopipe.preparation.plan import DoesNotFit, EncodePlan, plan
from audiopipe.preparation.probe import AudioStream, MediaInfo, probe
from audiopipe.preparation.results import OutputFile, PrepareAction, PrepareOutcome, PrepareResult
from audiopipe.preparation.segment import prepare, to_segment
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.preparation.sniff import Sniff, sniff
from audiopipe.version import __version__

if TYPE_CHECKING:
    from audiopipe.campaign.batch import BatchInterrupted, BatchResult, BatchSettings, RowResult, run_batch
    from audiopipe.campaign.ledger import Ledger, SqliteLedger
    from audiopipe.send.client import LancepilotClient, RetryPolicy, SentMessage

# The sending half is imported when first asked for: `import audiopipe` for preparing alone stays
# free of requests, SQLite and the batch machinery.
_LAZY = {
    "BatchInterrupted": "audiopipe.campaign.batch", "BatchResult": "audiopipe.campaign.batch",
    "BatchSettings": "audiopipe.campaign.batch", "RowResult": "audiopipe.campaign.batch",
    "run_batch": "audiopipe.campaign.batch",
    "Ledger": "audiopipe.campaign.ledger", "SqliteLedger": "audiopipe.campaign.ledger",
    "LancepilotClient": "audiopipe.send.client", "RetryPolicy": "audiopipe.send.client",
    "SentMessage": "audiopipe.send.client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiopipe' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "AudioStream",
    "AudiopipeError",
    "AuthError",
    "BatchInterrupted",
    "BatchResult",
    "BatchSettings",
    "ConnectFailed",
    "DoesNotFit",
    "EncodePlan",
    "FFmpegError",
    "GaveUp",
    "InputError",
    "LancepilotClient",
    "Ledger",
    "MediaInfo",
    "OutcomeUnknown",
    "OutputClash",
    "OutputError",
    "OutputFile",
    "PrepareAction",
    "PrepareError",
    "PrepareOutcome",
    "PrepareResult",
    "PrepareSettings",
    "RateLimited",
    "RefusedError",
    "RetryPolicy",
    "RowResult",
    "SendError",
    "SentMessage",
    "Sniff",
    "SqliteLedger",
    "TargetFormat",
    "ToolMissingError",
    "UsageError",
    "__version__",
    "collect_inputs",
    "plan",
    "prepare",
    "prepare_file",
    "prepare_many",
    "probe",
    "run_batch",
    "sniff",
    "to_segment",
]
