"""--voice-note: WhatsApp plays a voice message inline only up to 512 KB.

Whether a recording can fit that at a bitrate worth listening to decides the byte budget (and
whether a small enough source may go as it is); after the work, the verdict says whether the result
will play inline, and if not, why.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.plan import DoesNotFit, plan, seconds_that_fit
from audiopipe.preparation.probe import MediaInfo
from audiopipe.preparation.results import PrepareResult
from audiopipe.preparation.settings import PrepareSettings

log = logging.getLogger(__name__)

VOICE_NOTE_BUDGET = 512_000     # WhatsApp plays a voice note inline up to 512 KB
VOICE_NOTE_MIN_BITRATE = 12_000  # below this, a longer note is better sent as a plain file
VOICE_NOTE_FORMAT = "ogg"        # mono Opus in Ogg is what WhatsApp shows as a voice message


def voice_note_fits(info: MediaInfo) -> tuple[bool, float]:
    """Whether the whole of ``info`` fits a 512 KB voice note at a bitrate worth listening to, and
    how many seconds at most would."""
    fmt = FORMATS[VOICE_NOTE_FORMAT]
    most = seconds_that_fit(fmt, VOICE_NOTE_BUDGET, VOICE_NOTE_MIN_BITRATE, 48000, speech=True)
    try:
        p = plan(info, fmt, VOICE_NOTE_BUDGET, channels=1, voice_note=True)
    except DoesNotFit:
        return False, most
    return p.bitrate >= VOICE_NOTE_MIN_BITRATE, most


def budget_for(info: MediaInfo, settings: PrepareSettings) -> int:
    """The byte budget: --max-size, or 512 KB for a voice note when the duration allows."""
    if settings.voice_note and settings.max_size > VOICE_NOTE_BUDGET and voice_note_fits(info)[0]:
        return VOICE_NOTE_BUDGET
    return settings.max_size


def with_verdict(result: PrepareResult, settings: PrepareSettings) -> PrepareResult:
    """``result`` with the voice-note verdict when one was asked for (unchanged otherwise)."""
    return voice_note_verdict(result) if settings.voice_note else result


def voice_note_verdict(result: PrepareResult) -> PrepareResult:
    """Say whether a --voice-note came out small enough for WhatsApp to play it inline, and if not why."""
    biggest = max(o.size for o in result.outputs)
    if biggest <= VOICE_NOTE_BUDGET:
        return replace(result, voice_note_inline=True)
    fits, most = voice_note_fits(result.info)
    limit = f"{VOICE_NOTE_BUDGET // 1000} KB"
    if not fits:
        why = (f"{_minutes(result.source_duration)} is too long to fit {limit} (about {_minutes(most)} fits at "
               f"{VOICE_NOTE_MIN_BITRATE // 1000} kb/s, the least worth listening to)")
    else:
        why = f"it came out at {biggest:,} bytes, over {limit}"
    note = f"not a voice note WhatsApp plays inline: {why}; at {biggest:,} bytes it shows as an audio file"
    log.info("%s: %s", result.source, note)
    return replace(result, voice_note_inline=False, notes=(*result.notes, note))


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"
