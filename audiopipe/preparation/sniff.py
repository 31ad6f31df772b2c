"""What the server will think a file is.

The Lancepilot API is a Laravel app whose rule ``mimes:aac,amr,mp3,m4a,ogg`` ignores the file name:
it sniffs the content with libmagic and maps the MIME type to the FIRST extension Symfony's MimeTypes
table lists for it (docs/api.md §2). We do exactly the same, so a file we call acceptable is one the
server accepts, and the sandbox refuses exactly what the server refuses.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from audiopipe.errors import ToolMissingError

ALLOWED_EXTENSIONS = frozenset({"aac", "amr", "mp3", "m4a", "ogg"})

# libmagic MIME -> first extension in symfony/mime's table. Only the first entry matters to Laravel.
MIME_FIRST_EXTENSION: dict[str, str] = {
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/x-m4a": "m4a",
    "audio/mp4": "m4a",
    "audio/x-hx-aac-adts": "aac",
    "audio/aac": "aac",
    "audio/x-aac": "aac",
    "audio/amr": "amr",
    "audio/amr-wb": "awb",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "audio/webm": "weba",
    "application/ogg": "ogx",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/x-aiff": "aif",
    "video/x-matroska": "mkv",
    "video/3gpp": "3gp",
    "audio/3gpp": "3gpp",
    "video/quicktime": "mov",
    "video/x-msvideo": "avi",
    "audio/x-ms-wma": "wma",
    "video/x-ms-asf": "asf",
    "audio/basic": "au",
    "text/plain": "txt",
}

class _MimeGuesser(Protocol):
    """The part of python-magic's ``Magic`` used here."""

    def from_file(self, filename: str) -> str: ...

    def from_buffer(self, buffer: bytes) -> str: ...


_lock = threading.Lock()


@functools.cache  # one libmagic handle per process; a failure is not cached, so a later call tries again
def _get_magic() -> _MimeGuesser:
    try:
        import magic  # python-magic, a binding to libmagic

        guesser: _MimeGuesser = magic.Magic(mime=True)
    except (ImportError, OSError) as exc:
        raise ToolMissingError(
            "libmagic is missing (needed to check files the way the server does): "
            "install it (Debian/Ubuntu: 'sudo apt-get install libmagic1'; macOS: 'brew install libmagic')"
        ) from exc
    return guesser


def sniff_mime(path: str | Path) -> str:
    """The MIME type libmagic gives the content of ``path`` (the name is ignored)."""
    m = _get_magic()
    with _lock:  # a libmagic handle is not safe to share between threads
        return str(m.from_file(str(path)))


def sniff_mime_buffer(data: bytes) -> str:
    m = _get_magic()
    with _lock:
        return str(m.from_buffer(data))


@dataclass(frozen=True)
class Sniff:
    mime: str
    extension: str | None  # Symfony's first extension for that MIME, None if unknown

    @property
    def accepted(self) -> bool:
        return self.extension in ALLOWED_EXTENSIONS


def server_view(mime: str) -> Sniff:
    return Sniff(mime=mime, extension=MIME_FIRST_EXTENSION.get(mime))


def sniff(path: str | Path) -> Sniff:
    """What the server will make of ``path``: its MIME type, extension, and whether it is accepted."""
    return server_view(sniff_mime(path))
