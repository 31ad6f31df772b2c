"""What this machine's ffmpeg can do for a format: the capability checks the data table in
:mod:`formats` leaves out, because answering them means running ffmpeg."""

from __future__ import annotations

from audiopipe.errors import ToolMissingError
from audiopipe.preparation.formats import TargetFormat
from audiopipe.runner import audio_encoders

__all__ = ["audio_encoders", "has_encoder", "require_encoder"]


def has_encoder(fmt: TargetFormat) -> bool:
    """Whether this ffmpeg build has the encoder ``fmt`` needs (asked of ffmpeg once per binary)."""
    return fmt.encoder in audio_encoders()


def require_encoder(fmt: TargetFormat) -> None:
    """:class:`ToolMissingError`, saying what to do, unless this ffmpeg can encode ``fmt``."""
    if not has_encoder(fmt):
        raise ToolMissingError(
            f"format {fmt.name!r} needs the ffmpeg encoder {fmt.encoder!r}, which this ffmpeg "
            f"build does not have; choose another --format (ogg, mp3, m4a or aac) or install an "
            f"ffmpeg built with {fmt.encoder}")
