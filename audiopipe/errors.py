"""The error hierarchy. Every error audiopipe raises on purpose is an :class:`AudiopipeError`.

Only the CLI turns these into messages and exit codes; the library raises them with a message a
user can act on (what went wrong, where, and how to fix it).

A message that names a setting names it with :func:`setting` (``setting("max_size")``), and the
error says which setting it is about in ``field``: ``str(error)`` then reads ``max_size`` as the
library calls it, and a front end writes its own word for it (the CLI its flag, ``--max-size``)
with :meth:`AudiopipeError.message`.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path

# A setting named in a message, between two NULs: no file name, CSV cell or campaign name can hold
# a NUL, so nothing a user gave is ever taken for one.
_SETTING = re.compile("\x00([a-z][a-z0-9_]*)\x00")


def setting(name: str) -> str:
    """``name`` (a setting as the library calls it: ``max_size``) marked inside a message, so that each
    reader of the message can write it its own way (see :func:`named`)."""
    return f"\x00{name}\x00"


def named(text: str, name: Callable[[str], str] = str) -> str:
    """``text`` with every :func:`setting` in it written as ``name(setting)``: by default the library's
    own name (``max_size``); ``named(text, setting)`` keeps the marks, to carry them into another error."""
    return _SETTING.sub(lambda m: name(m.group(1)), text)


class AudiopipeError(Exception):
    """Base of every error raised by audiopipe on purpose.

    ``field``: the setting the error is about, as the library calls it (``max_size``, ``contacts``,
    ``state``), or None; the message names it (and any other) with :func:`setting`."""

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field

    def __str__(self) -> str:
        return named(super().__str__())

    def message(self, name: Callable[[str], str]) -> str:
        """The message with each setting it names written as ``name(setting)`` (the CLI: its flag)."""
        return named(super().__str__(), name)


class UsageError(AudiopipeError):
    """A setting or argument is not valid (bad size, unknown format, bad UUID...)."""


class ToolMissingError(AudiopipeError):
    """ffmpeg, ffprobe, an encoder or libmagic is not available."""


class FFmpegError(AudiopipeError):
    """An ffmpeg/ffprobe run failed or timed out; carries the command and the tail of stderr."""

    def __init__(self, message: str, *, argv: list[str] | None = None, stderr: str = "",
                 returncode: int | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.argv = argv or []
        self.stderr = stderr
        self.returncode = returncode


class LimitExceeded(FFmpegError):
    """An ffmpeg/ffprobe child was stopped by one of audiopipe's limits: ``limit`` is ``memory``,
    ``cpu`` or ``time``, and the message says which setting raises it (and, once known, the input)."""

    def __init__(self, message: str, *, limit: str, argv: list[str] | None = None, stderr: str = "",
                 returncode: int | None = None, path: str | Path | None = None, field: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, argv=argv, stderr=stderr,
                         returncode=returncode, field=field)
        self.reason = message
        self.limit = limit
        self.path = str(path) if path else None

    def for_input(self, path: str | Path) -> LimitExceeded:
        """The same error, naming the input it happened on."""
        return LimitExceeded(self.reason, limit=self.limit, argv=self.argv, stderr=self.stderr,
                             returncode=self.returncode, path=path, field=self.field)


class InputError(AudiopipeError):
    """An input file cannot be used: missing, empty, corrupt, no audio, a playlist..."""

    def __init__(self, path: str | Path, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", field=field)
        self.path = str(path)
        self.reason = reason


class PrepareError(InputError):
    """An InputError met after reading the file: no acceptable output came of it (does not fit, verify failed)."""


class SendError(AudiopipeError):
    """An upload did not end in a created message.

    ``created`` says what is known: ``False`` when the message was definitely not created (safe to
    send again later), ``None`` when it may have been (never resend automatically).
    """

    created: bool | None = False
    retryable = False  # whether waiting and sending again may succeed

    def __init__(self, message: str, *, status: int | None = None, errors: dict[str, list[str]] | None = None,
                 retry_after: float | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.errors = errors or {}
        self.retry_after = retry_after

    @property
    def outcome(self) -> str:
        return "unknown" if self.created is None else "not sent"


class AuthError(SendError):
    """401: the token is wrong or missing; stop the whole run."""


class TokenRefused(AuthError):
    """401 to the token check made before any work: nothing was prepared, nothing was sent."""


class RefusedError(SendError):
    """404, 413, 422 or another 4xx: the server looked at the request and refused it."""


class RateLimited(SendError):
    """429: nothing was created; wait ``retry_after`` seconds and send again."""

    retryable = True


class ConnectFailed(SendError):
    """The request never reached the server (refused, DNS, connect timeout)."""

    retryable = True


class GaveUp(SendError):
    """Retried as far as allowed and still not sent (connection failures or 429s)."""


class OutcomeUnknown(SendError):
    """The body may have reached the server but no answer came back (timeout, reset, 5xx)."""

    created = None


# What a user can do about the OS errors audiopipe meets on paths it is given or writes to.
_OS_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied: check its permissions (and those of the folders above it)",
    errno.EPERM: "operation not permitted: check its permissions",
    errno.ENAMETOOLONG: "the name is too long (a file name has at most 255 bytes): rename it",
    errno.ELOOP: "a symbolic link loop (a link that leads back to itself): fix or remove the link",
    errno.ENOSPC: "no space left on the disk: free some space or choose another place",
    errno.EDQUOT: "over the disk quota: free some space or choose another place",
    errno.EROFS: "a read-only file system: choose a writable place",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder, not a file",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files on this machine: try again later",
    errno.EIO: "an input/output error: the disk or network share may be failing",
    errno.EFBIG: "the file is too large for this file system",
}


def os_reason(exc: BaseException) -> str:
    """A short reason, with what to do, for an error met on a path.

    Takes an OSError, pathlib's RuntimeError for a symlink loop (Python < 3.13 raises that instead
    of ELOOP), or the ValueError of a path holding a NUL byte.
    """
    if isinstance(exc, OSError):
        return _OS_REASONS.get(exc.errno or 0) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    if isinstance(exc, RuntimeError) and "symlink loop" in str(exc).lower():
        return _OS_REASONS[errno.ELOOP]
    if isinstance(exc, ValueError) and "null" in str(exc).lower():
        return "the name holds a NUL byte, which no file name can"
    return str(exc) or type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """One line for an OSError nothing else explained: the path(s) it names, then the reason."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where}: {os_reason(exc)}" if where else os_reason(exc)


class OutputError(AudiopipeError):
    """An output cannot go where asked: a file audiopipe did not write is in the way (and
    ``overwrite`` was not given), a folder has the output's name, or the folder cannot be made."""

    def __init__(self, path: str | Path, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", field=field)
        self.path = str(path)
        self.reason = reason


class OutputClash(UsageError):
    """An output would replace one of the run's own files (an input recording, the contacts CSV,
    the ledger): refused before any work, whatever ``overwrite`` says."""
