"""The error hierarchy. Every error audiopipe raises on purpose is an :class:`AudiopipeError`.

Only the CLI turns these into messages and exit codes; the library raises them with a message a
user can act on (what went wrong, where, and how to fix it).
"""

from __future__ import annotations

from pathlib import Path


class AudiopipeError(Exception):
    """Base of every error raised by audiopipe on purpose."""


class UsageError(AudiopipeError):
    """A setting or argument is not valid (bad size, unknown format, bad UUID...)."""


class ToolMissingError(AudiopipeError):
    """ffmpeg, ffprobe, an encoder or libmagic is not available."""


class FFmpegError(AudiopipeError):
    """An ffmpeg/ffprobe run failed or timed out; carries the command and the tail of stderr."""

    def __init__(self, message: str, *, argv: list[str] | None = None, stderr: str = "",
                 returncode: int | None = None) -> None:
        super().__init__(message)
        self.argv = argv or []
        self.stderr = stderr
        self.returncode = returncode


class InputError(AudiopipeError):
    """An input file cannot be used: missing, empty, corrupt, no audio, a playlist..."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class PrepareError(AudiopipeError):
    """A file could be read but not turned into an acceptable output (does not fit, verify failed)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
