"""Can this input be sent as it is? The rules, one refusal a line, the first that applies wins.

``copyable``: its audio may go out unchanged (kept, or copied into another container: no second
lossy encode). ``acceptable``: the file itself may go byte for byte, because the server will take it
and nothing in it (tags, cover art, video) should not reach a customer.
"""

from __future__ import annotations

from collections.abc import Iterator

from audiopipe.preparation.formats import ACCEPTABLE_AS_IS, FORMATS
from audiopipe.preparation.probe import MediaInfo
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.preparation.voicenote import VOICE_NOTE_BUDGET, VOICE_NOTE_FORMAT, voice_note_fits

# codec -> the format its audio can be copied into unchanged (a remux: no second lossy encode)
COPY_INTO = {"mp3": "mp3", "opus": "ogg", "aac": "m4a", "amr_nb": "amr"}

BITRATE_SLACK = 1.05   # a source this far over the --bitrate ceiling still counts as under it
BUDGET_SHARE = 0.98    # the audio alone may fill this much of the budget; the rest is container


def copyable(info: MediaInfo, settings: PrepareSettings) -> tuple[str | None, str]:
    """The format the audio can go out in without re-encoding (kept or remuxed), or None and why."""
    as_format = ACCEPTABLE_AS_IS.get((info.container, info.audio.codec)) or COPY_INTO.get(info.audio.codec)
    why = next(_why_not_copied(info, settings, as_format), None)
    if why is not None:
        return None, why
    assert as_format is not None  # no format is one of the refusals
    return as_format, ""


def _why_not_copied(info: MediaInfo, settings: PrepareSettings, as_format: str | None) -> Iterator[str]:
    if settings.reencode:
        yield "re-encode asked for"
    if settings.normalize:
        yield "loudness normalisation asked for"
    if as_format is None:
        yield f"{info.audio.codec} in {info.container} is not a type the API takes"
    if settings.voice_note and (as_format != VOICE_NOTE_FORMAT or info.audio.channels != 1):
        yield "a voice note must be mono Ogg/Opus"
    if settings.voice_note and info.size > VOICE_NOTE_BUDGET and voice_note_fits(info)[0]:
        yield f"a voice note plays inline only at {VOICE_NOTE_BUDGET // 1000} KB or less"
    if settings.channels is not None and info.audio.channels != settings.channels:
        yield f"{info.audio.channels} channels where {settings.channels} were asked for"
    bitrate = info.audio.bit_rate or info.bit_rate or 0
    if settings.bitrate and bitrate > settings.bitrate * BITRATE_SLACK:
        yield "its bitrate is over the --bitrate ceiling"
    audio_bytes = bitrate * info.duration / 8 if info.audio.bit_rate else info.size
    if audio_bytes > settings.max_size * BUDGET_SHARE:
        yield f"its audio alone is over the {settings.max_size:,}-byte budget"


def acceptable(info: MediaInfo, settings: PrepareSettings, sniffed_extension: str | None) -> tuple[bool, str]:
    """Whether ``info`` can be sent byte for byte; the reason when not."""
    as_format, why = copyable(info, settings)
    if as_format is None:
        return False, why
    why_not = next(_why_not_as_is(info, settings, sniffed_extension, as_format), None)
    return (False, why_not) if why_not is not None else (True, "already acceptable")


def _why_not_as_is(info: MediaInfo, settings: PrepareSettings, sniffed_extension: str | None,
                   as_format: str) -> Iterator[str]:
    if ACCEPTABLE_AS_IS.get((info.container, info.audio.codec)) != as_format:
        yield f"{info.audio.codec} in {info.container} must be put in a .{as_format} container"
    if sniffed_extension != FORMATS[as_format].extension:
        yield f"the content would be taken by the server as .{sniffed_extension or 'unknown'}"
    if info.attached_pictures:
        yield "it carries cover art"
    if info.video_streams:
        yield "it carries video"
    if info.audio_streams != 1:
        yield f"it has {info.audio_streams} audio streams"
    if info.tags:
        yield f"it carries the sender's tags ({', '.join(info.tags)})"
    if info.size > settings.max_size:
        yield f"{info.size:,} bytes is over the {settings.max_size:,}-byte budget"
