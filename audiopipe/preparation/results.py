"""What preparing reports: the result of one input (its outputs and what was done), the outcome of
one input in a batch (a result or an error), and the progress of an encode.

Plain frozen data with ``to_dict`` for JSON; nothing here does any work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiopipe.errors import AudiopipeError
from audiopipe.preparation.plan import EncodePlan
from audiopipe.preparation.probe import MediaInfo


class PrepareAction(str, enum.Enum):
    """What was done to an input. Equal to the plain strings reports, JSON and the ledger hold."""

    KEPT = "kept"                # sent byte for byte
    REMUXED = "remuxed"          # its audio copied unchanged into an accepted container
    TRANSCODED = "transcoded"    # converted whole
    TRIMMED = "trimmed"          # converted, and cut to what fits (on_overflow=trim)
    SPLIT = "split"              # converted into parts that each fit (on_overflow=split)
    FAILED = "failed"            # an outcome with no result

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class OutputFile:
    path: Path
    size: int
    format: str          # ogg, mp3, m4a, aac, amr
    content_type: str    # for the upload's part header
    mime: str            # what libmagic (and so the server) sees
    codec: str
    duration: float
    bitrate: int | None
    part: int = 1
    parts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class PrepareResult:
    source: Path
    source_sha256: str
    info: MediaInfo
    action: PrepareAction
    outputs: tuple[OutputFile, ...]
    passes: int = 0      # encodes it took (the longest part, when split); 0 when kept
    first_fit: bool = True  # the first encode (of every part) fitted the budget: no re-plan from an overshoot
    kept_duration: float | None = None  # seconds kept, when trimmed
    cached: bool = False
    plan: EncodePlan | None = None
    reused: bool = False  # the outputs were already in place from an earlier run: nothing was written
    voice_note_inline: bool | None = None  # --voice-note: whether it came out at 512 KB or less
    notes: tuple[str, ...] = ()            # what the user should know (why a voice note is not inline)

    @property
    def source_duration(self) -> float:
        return self.info.duration

    @property
    def duration_sent(self) -> float:
        """Seconds of audio in the outputs, as measured on them (every part's, when split)."""
        return sum(o.duration for o in self.outputs)

    @property
    def trimmed_seconds(self) -> float:
        """Seconds of the source that were cut off (0 unless trimmed)."""
        if self.action != PrepareAction.TRIMMED:
            return 0.0
        return max(0.0, self.source_duration - self.duration_sent)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source), "sha256": self.source_sha256, "action": str(self.action),
            "format": self.outputs[0].format if self.outputs else None, "size": self.size,
            "source_duration": round(self.source_duration, 3), "duration_sent": round(self.duration_sent, 3),
            "trimmed_seconds": round(self.trimmed_seconds, 3),
            "passes": self.passes, "first_fit": self.first_fit, "kept_duration": self.kept_duration,
            "cached": self.cached, "reused": self.reused,
            "voice_note_inline": self.voice_note_inline, "notes": list(self.notes),
            "input": self.info.to_dict(), "outputs": [o.to_dict() for o in self.outputs],
            "plan": asdict(self.plan) if self.plan else None,
        }


@dataclass(frozen=True)
class EncodeProgress:
    """How far one encode is: ``done`` of ``total`` seconds of audio (ffmpeg's own count)."""

    source: Path
    done: float
    total: float
    attempt: int = 1     # more than 1 when re-encoding at a lower bitrate after an overshoot
    part: int = 1
    parts: int = 1


EncodeProgressCallback = Callable[[EncodeProgress], None]


@dataclass(frozen=True)
class PrepareOutcome:
    """One input's result for batch runs: either ``result`` or ``error`` is set."""

    source: Path
    result: PrepareResult | None = None
    error: AudiopipeError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict[str, Any]:
        if self.result:
            return dict(self.result.to_dict(), ok=True)
        return {"source": str(self.source), "ok": False, "action": str(PrepareAction.FAILED),
                "error": str(self.error)}


OutcomeCallback = Callable[[PrepareOutcome], None]
