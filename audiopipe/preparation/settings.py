"""PrepareSettings: how to prepare, checked when made, so a wrong setting fails before any work.

Its own module so that the policy ("can this go as it is?"), the conversion and the pipeline can
all read the settings without importing one another.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiopipe.errors import UsageError, setting
from audiopipe.preparation.formats import TargetFormat, get_format

DEFAULT_MAX_SIZE = 16_000_000
SERVER_LIMIT = 16_777_216     # Laravel's max:16384, in KiB
MIN_MAX_SIZE = 4096           # a smaller budget holds no audio at all


class Overflow(str, enum.Enum):
    """What to do when even the lowest bitrate cannot hold the whole recording in the budget."""

    TRIM = "trim"     # keep the start that fits, with a short fade-out
    SPLIT = "split"   # equal parts, each planned for its own length
    FAIL = "fail"     # refuse the file (DoesNotFit)

    def __str__(self) -> str:
        return self.value


OVERFLOW_CHOICES = tuple(o.value for o in Overflow)


@dataclass(frozen=True)
class PrepareSettings:
    """How to prepare. Every field has the CLI's default."""

    format: str = "ogg"
    max_size: int = DEFAULT_MAX_SIZE
    bitrate: int | None = None        # a ceiling, bit/s
    channels: int | None = None
    normalize: bool = False
    voice_note: bool = False
    on_overflow: str = Overflow.TRIM.value
    reencode: bool = False
    max_passes: int = 4
    cache: bool = True
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        get_format(self.format)
        if self.on_overflow not in OVERFLOW_CHOICES:
            raise UsageError(f"{setting('on_overflow')} must be one of {', '.join(OVERFLOW_CHOICES)}, "
                             f"got {self.on_overflow!r}", field="on_overflow")
        if self.max_size < MIN_MAX_SIZE:
            raise UsageError(f"{setting('max_size')} {self.max_size} is too small to hold any audio "
                             f"(at least {MIN_MAX_SIZE} bytes)", field="max_size")
        if self.max_size > SERVER_LIMIT:
            raise UsageError(f"{setting('max_size')} {self.max_size:,} is over the server's limit of "
                             f"{SERVER_LIMIT:,} bytes (16384 KB): it would refuse such files", field="max_size")
        if self.voice_note and self.format != "ogg":
            raise UsageError(f"{setting('voice_note')} makes mono Ogg/Opus (what WhatsApp shows as a voice "
                             f"message); drop {setting('format')} {self.format}", field="voice_note")
        if self.bitrate is not None and not 4000 <= self.bitrate <= 512000:
            raise UsageError(f"{setting('bitrate')} {self.bitrate // 1000}k is outside 4k..512k", field="bitrate")
        if self.channels is not None and self.channels not in (1, 2):
            raise UsageError(f"{setting('channels')} must be 1 (mono) or 2 (stereo)", field="channels")
        if self.max_passes < 1:
            raise UsageError(f"{setting('max_passes')} must be at least 1", field="max_passes")

    @property
    def target(self) -> TargetFormat:
        return get_format(self.format)

    def cache_fields(self) -> dict[str, Any]:
        """What decides the output (not where the cache lives)."""
        d = asdict(self)
        for k in ("cache", "cache_dir"):
            d.pop(k)
        return d
