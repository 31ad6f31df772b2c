"""The checks the real server makes of a request to the audio route, and the words it refuses with.

The route is ``POST /api/v3/workspaces/<workspace>/contacts/<contact>/messages/audio`` with a bearer
token, UUID path parameters (Laravel's ``whereUuid``), and the rule
``required|file|mimes:aac,amr,mp3,m4a,ogg|max:16384`` on the ``file`` field (docs/api.md §1-2). The
type is decided by a libmagic sniff of the content, never by the file name; PHP's
``upload_max_filesize`` drops a larger file before Laravel sees it. Each function here answers one
question and decides nothing else.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Request

from audiopipe.preparation.sniff import ALLOWED_EXTENSIONS, Sniff, sniff
from audiopipe.sandbox.config import SandboxConfig

# Laravel's whereUuid() pattern: hyphenated, any case, nothing around it.
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

MSG_REQUIRED = "The file field is required."
MSG_UPLOAD_FAILED = "The file failed to upload."
MSG_URL = "The file field must be a valid URL."
_MAX_URL = 2048
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def authorized(request: Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def are_uuids(*values: str) -> bool:
    return all(UUID_RE.fullmatch(value) for value in values)


class FileKind(Enum):
    UPLOAD = "upload"    # an uploaded file
    TEXT = "text"        # a value that is not a file: taken as the URL of one
    MISSING = "missing"  # nothing Laravel's ``required`` accepts


@dataclass(frozen=True)
class FileInput:
    """What the request's ``file`` input holds: an upload, a value (any JSON value), or nothing."""

    kind: FileKind
    upload: FileStorage | None = None
    value: object = None


def file_input(request: Request) -> FileInput:
    """Where the ``file`` input is, as Laravel's input bag would see it.

    A multipart text field or a form field named ``file`` is taken as a URL; an upload without a
    file name is PHP's "no file was uploaded", i.e. missing.
    """
    if request.mimetype in _FORMS:
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            return FileInput(FileKind.UPLOAD, upload=upload)
        text = request.form.get("file")
        if text is not None and text.strip():
            return FileInput(FileKind.TEXT, value=text)
        return FileInput(FileKind.MISSING)
    if request.is_json:
        body = json_object(request.get_data(cache=False))
        value = body.get("file") if body is not None else None
        return FileInput(FileKind.MISSING) if is_blank(value) else FileInput(FileKind.TEXT, value=value)
    return FileInput(FileKind.MISSING)


def json_object(data: bytes) -> dict[str, Any] | None:
    """A JSON body as Laravel's input bag sees it: an object, or nothing at all (PHP's json_decode
    gives up on bad syntax, bad UTF-8 and deep nesting; here json.loads raises)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def is_blank(value: object) -> bool:
    """What Laravel's ``required`` refuses: null, an empty or blank string, an empty array."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, (list, dict)) and not value)


def is_http_url(value: object) -> bool:
    """Whether ``value`` is an http(s) URL with a host, as Laravel's ``url`` rule would take it."""
    if not isinstance(value, str) or not value or len(value) > _MAX_URL or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def mimes_message() -> str:
    """The 422 message of the ``mimes:`` rule, naming the types in the rule's own order."""
    order = [e for e in ("aac", "amr", "mp3", "m4a", "ogg") if e in ALLOWED_EXTENSIONS]
    return f"The file field must be a file of type: {', '.join(order)}."


def upload_problems(path: Path, size: int, config: SandboxConfig) -> tuple[Sniff | None, list[str]]:
    """What the server says of an uploaded file of ``size`` bytes kept at ``path``: its sniff (None
    when PHP dropped it unread), and the messages of the rules it breaks (none: accepted)."""
    if config.php_upload_limit is not None and size > config.php_upload_limit:
        return None, [MSG_UPLOAD_FAILED]  # PHP drops the file; Laravel stops at "uploaded"
    return file_problems(path, size, config)


def file_problems(path: Path, size: int, config: SandboxConfig) -> tuple[Sniff, list[str]]:
    """What the ``file`` rule says of the ``size`` bytes at ``path``, uploaded or fetched from a URL:
    their sniff, and the messages of the rules they break (none: accepted)."""
    seen = sniff(path)
    problems = []
    if not seen.accepted:
        problems.append(mimes_message())
    if size > config.max_bytes:  # Laravel compares size/1024 against max:, as a float
        problems.append(size_message(config))
    return seen, problems


def size_message(config: SandboxConfig) -> str:
    """The 422 message of the ``max:`` rule."""
    return f"The file field must not be greater than {config.max_kb} kilobytes."


def fetch_message(reason: str) -> str:
    """The 422 message for a ``{"file": URL}`` whose fetch failed, with why (never the URL itself:
    its query may be a signature)."""
    return f"The file could not be fetched from its URL: {reason}."


def client_file_name(name: str | None) -> str | None:
    """The name the client gave its file, without any folders (some clients send a full path)."""
    if not name:
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1] or None


def url_file_name(url: str) -> str | None:
    """The file name a URL's path ends with, if any."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
