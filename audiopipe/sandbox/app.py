"""A local sandbox of the Lancepilot audio-message API, for tests and dry runs.

It answers ``POST /api/v3/workspaces/<workspace>/contacts/<contact>/messages/audio`` the way the real
Laravel server does (docs/api.md §1-2): bearer token, UUID path parameters, the
``required|file|mimes:aac,amr,mp3,m4a,ogg|max:16384`` rule decided by a libmagic sniff of the content
(never the file name), PHP's ``upload_max_filesize`` and a front proxy's body limit. It can also
misbehave on purpose (:class:`Faults`): latency, 429 with ``Retry-After``, 500 before anything is
stored, and the dangerous case of docs/api.md §5, "created but the answer is lost".

Against broken or hostile clients it is bounded (see :class:`SandboxConfig`): a malformed request gets
a 4xx in the API's JSON shape and one log line, bodies are capped as they stream (chunked ones too),
slow and idle connections are dropped, and only so many are served at once.

Every created message is stored durably (SQLite in WAL mode plus the uploaded bytes under
``data_dir/files/``) so a test, or a person, can check what the "customer" would have received,
also after a restart. ``GET /_sandbox/messages`` lists them; ``GET /_sandbox/health`` says it is up.

Use it in-process::

    with Sandbox(SandboxConfig(token="t", data_dir=tmp_path)) as sb:
        requests.post(f"{sb.url}/workspaces/{ws}/contacts/{c}/messages/audio", ...)
        assert len(sb.messages()) == 1

or from the CLI through :func:`serve` / :func:`run_forever`. This module never prints; it logs to the
``audiopipe.sandbox.app`` logger, and never logs the token.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import http.client
import io
import json
import logging
import os
import random
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)
from werkzeug.http import parse_options_header
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from audiopipe.errors import UsageError
from audiopipe.preparation.sniff import ALLOWED_EXTENSIONS, MIME_FIRST_EXTENSION, sniff
from audiopipe.smallfile import SmallFileError, read_small_file

__all__ = [
    "LOST_MODES",
    "Faults",
    "Sandbox",
    "SandboxConfig",
    "load_contacts",
    "run_forever",
    "serve",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v3"
LOST_MODES = frozenset({"drop", "502", "delay", "mixed"})
_CONCRETE_LOST_MODES = ("drop", "502", "delay")  # the order "mixed" draws from: keep it stable

# Laravel's whereUuid() pattern: hyphenated, any case, nothing around it.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_COPY_CHUNK = 1 << 16
_KiB, _MiB = 1 << 10, 1 << 20
_DB_NAME = "messages.sqlite3"
_FILES_DIR = "files"
_PART_SUFFIX = ".part"
_STOP_GRACE_S = 5.0  # how long stop() waits for requests still being handled

_MSG_REQUIRED = "The file field is required."
_MSG_UPLOAD_FAILED = "The file failed to upload."
_MSG_URL = "The file field must be a valid URL."
_MSG_POST_TOO_LARGE = "The POST data is too large."  # Laravel's PostTooLargeException, rendered as JSON

_NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(kw_only=True)
class Faults:
    """Misbehaviour on purpose. All draws come from one ``random.Random(seed)``, so a run is
    reproducible as long as the requests arrive in the same order.

    Applied, in this order, to POSTs on the audio route: ``latency``; ``rate_500`` (nothing stored);
    ``rps_limit`` then ``rate_429`` (429 with ``Retry-After: retry_after``); then, after a message
    was validated and stored, ``rate_lost``: the answer is lost in the way ``lost_mode`` says
    (``"drop"`` the connection, a ``"502"`` from the proxy, or a ``"delay"`` of ``lost_delay``
    seconds so the client's read timeout fires; ``"mixed"`` picks one of the three at random).
    """

    seed: int = 0
    latency: float = 0.0
    rate_429: float = 0.0
    rps_limit: int | None = None
    retry_after: int = 1
    rate_500: float = 0.0
    rate_lost: float = 0.0
    lost_mode: str = "mixed"
    lost_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_500", "rate_lost"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"faults.{name} must be a probability between 0 and 1, not {value!r}")
        if self.latency < 0 or self.lost_delay < 0:
            raise UsageError("faults.latency and faults.lost_delay must not be negative")
        if self.rps_limit is not None and self.rps_limit < 1:
            raise UsageError(f"faults.rps_limit must be at least 1 (or None for no limit), not {self.rps_limit!r}")
        if self.retry_after < 0:
            raise UsageError(f"faults.retry_after must not be negative, not {self.retry_after!r}")
        if self.lost_mode not in LOST_MODES:
            raise UsageError(f"faults.lost_mode must be one of {sorted(LOST_MODES)}, not {self.lost_mode!r}")


@dataclass(kw_only=True)
class SandboxConfig:
    """How the sandbox listens, what it accepts, and how it misbehaves.

    ``port=0`` picks a free port (read it back from :attr:`Sandbox.url`). ``max_kb`` is Laravel's
    ``max:`` in KiB: ``max_kb * 1024`` bytes is accepted, one byte more is not. ``php_upload_limit``
    (bytes) mimics a smaller PHP ``upload_max_filesize``: a larger file is refused with 422
    "The file failed to upload.". ``proxy_body_limit`` (bytes) mimics nginx's
    ``client_max_body_size``: a larger ``Content-Length`` gets a 413 HTML page before the body is
    parsed (chunked bodies are counted as they stream). ``contacts_csv`` turns on strict mode: only
    the contacts it lists exist.

    What a hostile or broken client can cost is bounded. ``post_max_size`` (bytes) is PHP's: a
    multipart body over it gets Laravel's 413 (default: the file limit plus 4 MiB, so a file just
    over ``max_kb`` still gets the 422 that names the limit). ``max_json_body`` caps every other body
    (JSON, form-urlencoded): a URL message is tiny. ``idle_timeout`` is how long a connection may
    stay silent (between keep-alive requests, or within one); ``header_timeout`` is how long the
    request line and headers may take in all, ``body_timeout`` the body; ``max_connections``
    connections are served at once, the others wait in the listen queue.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str
    data_dir: Path
    max_kb: int = 16384
    php_upload_limit: int | None = None
    proxy_body_limit: int | None = None
    post_max_size: int | None = None
    max_json_body: int = 64 * _KiB
    idle_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    max_connections: int = 64
    contacts_csv: Path | None = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise UsageError("the sandbox needs a non-empty token (clients must send 'Authorization: Bearer <token>')")
        self.data_dir = Path(self.data_dir).expanduser()
        if self.contacts_csv is not None:
            self.contacts_csv = Path(self.contacts_csv).expanduser()
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, not {self.port!r}")
        if self.max_kb < 1:
            raise UsageError(f"max_kb must be at least 1, not {self.max_kb!r}")
        for name in ("php_upload_limit", "proxy_body_limit", "post_max_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive number of bytes (or None), not {value!r}")
        if self.max_json_body < 1:
            raise UsageError(f"max_json_body must be a positive number of bytes, not {self.max_json_body!r}")
        for name in ("idle_timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_connections < 1:
            raise UsageError(f"max_connections must be at least 1, not {self.max_connections!r}")

    @property
    def max_bytes(self) -> int:
        """The largest accepted file, in bytes (Laravel's kilobytes are 1024 bytes)."""
        return self.max_kb * 1024

    @property
    def post_limit(self) -> int:
        """The largest multipart body the app reads (``post_max_size`` or its default)."""
        return self.post_max_size if self.post_max_size is not None else self.max_bytes + 4 * _MiB

    def __repr__(self) -> str:  # never show the token, even in a traceback or a log line
        return (f"SandboxConfig(host={self.host!r}, port={self.port!r}, token='***', data_dir={self.data_dir!r}, "
                f"max_kb={self.max_kb!r}, php_upload_limit={self.php_upload_limit!r}, "
                f"proxy_body_limit={self.proxy_body_limit!r}, post_max_size={self.post_max_size!r}, "
                f"max_json_body={self.max_json_body!r}, idle_timeout={self.idle_timeout!r}, "
                f"header_timeout={self.header_timeout!r}, body_timeout={self.body_timeout!r}, "
                f"max_connections={self.max_connections!r}, contacts_csv={self.contacts_csv!r}, "
                f"faults={self.faults!r})")


# Contacts of strict mode: contact UUID -> the workspaces it belongs to, or None for "any workspace".
Contacts = dict[str, frozenset[str] | None]

_CONTACT_COLUMNS = ("contact", "contact_id", "id")
_WORKSPACE_COLUMNS = ("workspace", "workspace_id")
_CONTACTS_LIMIT = 256 * 1024 * 1024  # a strict-mode list is a test fixture; anything larger is a mistake


def load_contacts(path: str | Path) -> Contacts:
    """Read the contacts of strict mode from a CSV.

    The contact column is the first of ``contact``, ``contact_id``, ``id`` (header names are
    case-insensitive); an optional ``workspace``/``workspace_id`` column ties a contact to a
    workspace, an empty one means any workspace. Raises :class:`UsageError` on a bad file.
    """
    path = Path(path)
    try:
        text = read_small_file(path, _CONTACTS_LIMIT).decode("utf-8-sig")
    except SmallFileError as exc:
        raise UsageError(f"cannot read the contacts CSV {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a readable UTF-8 CSV: {exc}") from None
    try:
        with io.StringIO(text, newline="") as fh:
            reader = csv.DictReader(fh)
            headers = {name.strip().lower(): name for name in (reader.fieldnames or []) if name}
            contact_col = next((headers[c] for c in _CONTACT_COLUMNS if c in headers), None)
            workspace_col = next((headers[c] for c in _WORKSPACE_COLUMNS if c in headers), None)
            if contact_col is None:
                raise UsageError(f"{path}: no contact column; name one of {', '.join(_CONTACT_COLUMNS)}")
            found: dict[str, set[str] | None] = {}
            for row in reader:
                contact = (row.get(contact_col) or "").strip()
                if not contact:
                    continue
                if not _UUID_RE.fullmatch(contact):
                    raise UsageError(f"{path}, line {reader.line_num}: contact {contact!r} is not a UUID")
                workspace = (row.get(workspace_col) or "").strip() if workspace_col else ""
                if workspace and not _UUID_RE.fullmatch(workspace):
                    raise UsageError(f"{path}, line {reader.line_num}: workspace {workspace!r} is not a UUID")
                key = contact.lower()
                if not workspace:
                    found[key] = None  # listed once without a workspace: it exists everywhere
                elif key not in found:
                    found[key] = {workspace.lower()}
                elif found[key] is not None:
                    found[key].add(workspace.lower())  # type: ignore[union-attr]
    except csv.Error as exc:
        raise UsageError(f"{path} is not a readable CSV: {exc}") from None
    return {c: (frozenset(ws) if ws is not None else None) for c, ws in found.items()}


# --------------------------------------------------------------------------------------------
# Storage


class _Store:
    """The messages table and the uploaded files. One SQLite connection, shared under a lock
    (request threads are short-lived, so per-thread connections would only pile up)."""

    def __init__(self, data_dir: Path) -> None:
        self.files_dir = data_dir / _FILES_DIR
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.files_dir.glob(f"*{_PART_SUFFIX}"):  # from a run that crashed mid-upload
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / _DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " id TEXT PRIMARY KEY, workspace TEXT NOT NULL, contact TEXT NOT NULL, file_name TEXT,"
            " size INTEGER, sha256 TEXT, mime TEXT, url TEXT, created_at TEXT NOT NULL)"
        )

    def insert(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (id, workspace, contact, file_name, size, sha256, mime, url, created_at)"
                " VALUES (:id, :workspace, :contact, :file_name, :size, :sha256, :mime, :url, :created_at)",
                row,
            )

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT id, workspace, contact, file_name, size, sha256, mime, url, created_at"
                                   " FROM messages ORDER BY rowid")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, values)) for values in cur.fetchall()]

    def file_path(self, message_id: str, mime: str | None) -> Path | None:
        ext = MIME_FIRST_EXTENSION.get(mime or "")
        return self.files_dir / f"{message_id}.{ext}" if ext else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API's ``data`` object."""
    return {
        "id": row["id"],
        "workspace_id": row["workspace"],
        "contact_id": row["contact"],
        "type": "audio",
        "file_name": row["file_name"],
        "size": row["size"],
        "sha256": row["sha256"],
        "mime": row["mime"],
        "url": row["url"],
        "created_at": row["created_at"],
    }


def _inspected(store: _Store, row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the inspector shows it: the API's data plus where the bytes are kept."""
    data = _public(row)
    path = store.file_path(row["id"], row["mime"]) if row["url"] is None else None
    data["file_path"] = str(path) if path is not None else None
    return data


class _HashingWriter:
    """A write-only file object that hashes and counts what goes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._fh.write(data)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # Laravel's JSON dates


# --------------------------------------------------------------------------------------------
# Responses


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def _html(status: int, body: str) -> Response:
    return Response(body, status=status, mimetype="text/html")


def _not_found() -> Response:
    return _json(404, {"message": "Resource not found.", "status": 404})


def _invalid(*messages: str) -> Response:
    return _json(422, {"message": "Validation error", "errors": {"file": list(messages)}})


def _mimes_message() -> str:
    order = [e for e in ("aac", "amr", "mp3", "m4a", "ogg") if e in ALLOWED_EXTENSIONS]
    return f"The file field must be a file of type: {', '.join(order)}."


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > 2048 or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


class _Drop(Exception):
    """Raised inside the app to drop the connection without answering."""


# --------------------------------------------------------------------------------------------
# The HTTP layer: werkzeug's development server, bounded
#
# werkzeug's handler trusts its clients: no socket timeout, a thread per connection however many,
# a drain of up to 10 GB after each answer, "Connection: close" on every answer, HTML error pages,
# and tracebacks on stderr. The classes below keep its request parsing and WSGI environ and bound
# the rest; the app (Sandbox._wsgi) caps each body by its kind and answers like the API.

_METER_KEY = "audiopipe.sandbox.body"  # the app's _BodyMeter in the environ, read back by the handler
_MAX_HEAD_BYTES = 64 * _KiB           # the request line and headers, all together (nginx allows 32 KiB)
_LINGER_BYTES = 1 * _MiB              # taken and dropped after refusing a body before its end, so that
_LINGER_SECONDS = 1.0                 # the client reads the answer rather than a reset; then we close
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """A client's bytes, fit for one log line: no terminal escapes, no forged lines."""
    return _CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _BodyTooLarge(RequestEntityTooLarge):
    """A body is over a cap: ``proxy`` says whose, nginx's (413 HTML) or PHP's (413 JSON)."""

    def __init__(self, limit: int, *, proxy: bool = False) -> None:
        super().__init__(f"the body is over {limit} bytes")
        self.limit, self.proxy = limit, proxy


class _MalformedBody(BadRequest):
    description = "The request body is malformed: bad chunked encoding, or shorter than its Content-Length."


class _BodyTimeout(HTTPException):
    code = 408
    description = "The request body did not arrive in time."


class _HeadTooLarge(http.client.LineTooLong):
    """The request line and headers are over _MAX_HEAD_BYTES (a LineTooLong, so that http.server's
    header parser answers 431 for it)."""

    def __init__(self) -> None:
        super().__init__("request head")


@dataclass(frozen=True)
class _BodyLimit:
    limit: int
    proxy: bool  # nginx's client_max_body_size rather than PHP's post_max_size or our JSON cap


class _BodyMeter(io.RawIOBase):
    """The request body as the app reads it (de-chunked), counted. Over the limit it raises
    :class:`_BodyTooLarge` at once: a chunked body is cut off as it streams, not after. A read
    that times out or finds bad framing raises the matching 4xx, never an OSError."""

    def __init__(self, stream: BinaryIO, limit: _BodyLimit) -> None:
        super().__init__()
        self._stream = stream
        self.limit = limit
        self.count = 0
        self.ended = False  # the stream said it was over (for chunked: its last chunk came)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.ended:
            return 0
        room = self.limit.limit - self.count + 1  # one byte past the limit proves the body is over it
        view = memoryview(buffer).cast("B")[:room]
        try:
            n = self._stream.readinto(view)  # type: ignore[attr-defined]
        except TimeoutError:
            raise _BodyTimeout() from None
        except (OSError, ValueError):  # how werkzeug's de-chunker and a reset socket report
            raise _MalformedBody() from None
        if not n:
            self.ended = True
            return 0
        self.count += n
        if self.count > self.limit.limit:
            raise _BodyTooLarge(self.limit.limit, proxy=self.limit.proxy)
        return n


def _body_read_to_end(environ: dict[str, Any]) -> bool:
    """Whether the app read the request body to its end, so the next request starts right after."""
    meter = environ.get(_METER_KEY)
    if environ.get("wsgi.input_terminated"):  # chunked
        return isinstance(meter, _BodyMeter) and meter.ended
    length = environ.get("CONTENT_LENGTH") or "0"
    if length == "0":
        return True
    return isinstance(meter, _BodyMeter) and str(meter.count) == length


class _SocketReader(io.RawIOBase):
    """A connection's socket as a raw stream whose reads are bounded in time and in bytes.

    A read waits at most ``idle_timeout``, and never past the deadline of the current phase (the
    request head, its body, the linger after an answer). A phase may also cap the bytes read in
    it: past them a read raises ``over()``, or is the end of the stream when ``over`` is None.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle = idle_timeout
        self._deadline: float | None = None
        self._budget: int | None = None
        self._over: Callable[[], BaseException] | None = None
        self.received = 0  # bytes read in the current phase

    def phase(self, seconds: float, budget: int, over: Callable[[], BaseException] | None = None) -> None:
        self._deadline = time.monotonic() + seconds
        self._budget, self._over, self.received = budget, over, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._budget is not None:
            room = self._budget - self.received
            if room <= 0:
                if self._over is None:
                    return 0
                raise self._over()
            view = view[:room]
        timeout = self._idle
        if self._deadline is not None:
            timeout = min(timeout, self._deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("the client took too long")
        self._sock.settimeout(timeout)
        try:
            n = self._sock.recv_into(view)
        finally:
            self._sock.settimeout(self._idle)  # what a send may wait
        self.received += n
        return n


def _no_write(data: bytes) -> None:
    raise AssertionError("the sandbox's app returns its body, it never calls write()")


class _Handler(WSGIRequestHandler):
    """werkzeug's request handler, bounded: every read under a timeout, the request head under a
    size cap and a deadline, keep-alive only after a body read to its end, errors answered in the
    API's JSON shape with one log line (never a traceback), and no unbounded drain."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # an error answer to a garbled request line still has a status line
    disable_nagle_algorithm = True  # an answer's head and body are two writes on a kept-alive connection
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # http.server and werkzeug read self.rfile: make it the bounded one
        idle = self.server.config.idle_timeout
        self.connection.settimeout(idle)
        self._reader = _SocketReader(self.connection, idle)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        config = self.server.config
        self.close_connection = True  # until a well-formed HTTP/1.1 request says otherwise
        self.command, self.request_version, self.requestline = None, "", ""  # type: ignore[assignment]
        self.raw_requestline = b""
        self._reader.phase(config.header_timeout, _MAX_HEAD_BYTES, _HeadTooLarge)
        try:
            try:
                self.raw_requestline = self.rfile.readline(65537)
            except _HeadTooLarge:
                self.send_error(414, "The request line is too long.")
                return
            if not self.raw_requestline:
                return  # the client closed its idle connection
            if not self.parse_request():
                return  # it answered already
            problem = self._framing_problem()
            if problem is not None:
                self.send_error(400, problem)
                return
            raw_limit = self.server.raw_body_limit
            self._reader.phase(config.body_timeout, raw_limit, lambda: _BodyTooLarge(raw_limit))
            self.run_wsgi()
        except TimeoutError:
            self.close_connection = True
            if self._reader.received == 0 and not self.raw_requestline:
                log.debug("sandbox: closed a connection idle for %s s", config.idle_timeout)
                return
            self.send_error(408, "The request did not arrive in time.")

    def _framing_problem(self) -> str | None:
        """Why the body's length is ambiguous, or None. Two lengths, or a length and chunked, are
        how requests get smuggled past a proxy: refused, as nginx does."""
        codings = [c.strip().lower() for v in self.headers.get_all("Transfer-Encoding") or [] for c in v.split(",")]
        lengths = [n.strip() for v in self.headers.get_all("Content-Length") or [] for n in v.split(",")]
        if codings:
            if codings != ["chunked"]:
                return "The only Transfer-Encoding accepted is chunked."
            if lengths:
                return "A request cannot have both a Content-Length and a Transfer-Encoding."
        if lengths and (len(set(lengths)) != 1 or not (lengths[0].isascii() and lengths[0].isdigit())):
            return "The Content-Length must be one whole number of bytes."
        return None

    def run_wsgi(self) -> None:
        self.environ = environ = self.make_environ()
        status, headers, body = self._call_app(environ)
        if status.startswith("444"):  # the app dropped the connection on purpose
            self.close_connection = True
            return
        keep_alive = (not self.close_connection and self.request_version == "HTTP/1.1"
                      and not self.server.stopping.is_set() and _body_read_to_end(environ))
        code, _, reason = status.partition(" ")
        try:
            self.send_response(int(code), reason)
            for name, value in headers:
                if name.lower() != "connection":
                    self.send_header(name, value)
            if not keep_alive:
                self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(body)
        except OSError:  # the client is gone
            self.close_connection = True
            return
        if not keep_alive:
            self.close_connection = True
            if not _body_read_to_end(environ):
                self._linger()

    def _call_app(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return _no_write

        try:
            chunks = self.server.app(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
        except Exception as exc:  # the app answers everything itself: this is a bug in it
            log.error("sandbox: %s while answering %s: %s", type(exc).__name__, _printable(self.requestline), exc)
            log.debug("sandbox: traceback", exc_info=True)
            return "500 INTERNAL SERVER ERROR", [("Content-Type", "application/json")], b'{"message": "Server Error"}'
        return answer[0], answer[1], body

    def _linger(self) -> None:
        """After answering a body we did not read to its end, take and drop a bounded amount more,
        so the client reads our answer rather than a reset; then the connection closes."""
        self._reader.phase(_LINGER_SECONDS, _LINGER_BYTES)
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while self.rfile.read1(64 * _KiB):
                pass
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's error page, as the API's JSON; the connection closes after it."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        if code == 431:  # http.server says "Line too long" or "Too many headers"
            message = f"The request headers are too large ({_MAX_HEAD_BYTES // _KiB} KiB and 100 headers at most)."
        self.log_error("%d %s", code, message or phrase)
        self.close_connection = True
        body = json.dumps({"message": message or phrase}).encode()
        try:
            self.send_response(code, phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client is gone

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("sandbox: %s %s %s", self.address_string(), _printable(getattr(self, "requestline", "")), code)

    def log(self, type: str, message: str, *args: Any) -> None:
        # What reaches here is a client's mistake (a refusal, a timeout): one line, not an error of ours.
        text = message % args if args else message
        log.info("sandbox: %s: %s", self.address_string(), _printable(text.rstrip()))


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server, with ``config.max_connections`` connections served at once (the
    others wait in the listen queue), the open ones closed when the sandbox stops, and an error a
    handler lets through reported in one log line."""

    def __init__(self, config: SandboxConfig, app: Callable[..., Any], *, fd: int,
                 stopping: threading.Event) -> None:
        self.config = config
        self.stopping = stopping
        # The raw bytes of a body, chunk framing included, are capped too: 1-byte chunks cost more
        # to read than the bytes they carry.
        self.raw_body_limit = 2 * max(config.post_limit, config.max_json_body) + _MAX_HEAD_BYTES
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(config.host, config.port, app, handler=_Handler, fd=fd)

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._slots.acquire(timeout=0.05):
            if self.stopping.is_set():
                self.shutdown_request(request)
                return
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        self._slots.release()

    def close_connections(self) -> None:
        """End every open connection (idle keep-alive ones included): the sandbox is stopping."""
        with self._open_lock:
            still_open = list(self._open)
        for sock in still_open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        level = logging.INFO if isinstance(exc, OSError) else logging.ERROR  # OSError: the client's socket
        log.log(level, "sandbox: a connection failed: %s: %s", type(exc).__name__, exc)
        log.debug("sandbox: traceback", exc_info=True)

    def log(self, type: str, message: str, *args: Any) -> None:
        text = message % args if args else message
        first, _, rest = text.partition("\n")
        log.log(logging.ERROR if type == "error" else logging.DEBUG, "sandbox: %s", _printable(first))
        if rest:
            log.debug("%s", rest)


class _Request(Request):
    # The API reads one field; PHP takes at most 20 files. (werkzeug's max_form_memory_size stays:
    # it also bounds the parser's buffer, which holds more than one 64 KiB read at times.)
    max_form_parts = 32


# --------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """The Lancepilot API sandbox. ``start()`` serves it from a background thread; ``stop()`` ends it.

    ``url`` is the API base (``http://127.0.0.1:PORT/api/v3``), ``messages()`` what was created,
    ``request_count`` how many POSTs arrived (whatever their fate).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._contacts: Contacts | None = (
            load_contacts(config.contacts_csv) if config.contacts_csv is not None else None
        )
        self._rng = random.Random(config.faults.seed)
        self._rng_lock = threading.Lock()
        self._rate_window: deque[float] = deque()
        self._count_lock = threading.Lock()
        self._request_count = 0
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._store: _Store | None = None
        self._urls = Map([
            Rule(f"{API_PREFIX}/workspaces/<workspace>/contacts/<contact>/messages/audio",
                 methods=["POST"], endpoint="audio"),
            Rule("/_sandbox/messages", methods=["GET"], endpoint="inspect"),
            Rule("/_sandbox/health", methods=["GET"], endpoint="health"),
        ])

    # ---- life cycle

    def start(self) -> Sandbox:
        """Bind the port and serve from a daemon thread; returns as soon as it accepts connections.

        Raises :class:`UsageError` if the address cannot be bound (port in use, bad host).
        """
        if self._server is not None:
            raise UsageError("this sandbox is already running")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = _Store(self.config.data_dir)
        self._stopping.clear()
        try:
            self._server = self._make_server()
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox:{self.port}", daemon=True)
        self._thread.start()
        log.info("Lancepilot sandbox listening on %s (data in %s)", self.url, self.config.data_dir)
        return self

    def _make_server(self) -> _Server:
        # Bind the socket ourselves: werkzeug prints to stderr and calls sys.exit() when binding fails.
        host, port = self.config.host, self.config.port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise UsageError(f"sandbox host {host!r} cannot be resolved: {exc.strerror}") from exc
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
            # werkzeug dups the descriptor, so ours is closed below either way.
            return _Server(self.config, self._wsgi, fd=sock.fileno(), stopping=self._stopping)
        except OSError as exc:
            raise UsageError(f"the sandbox cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving, wake requests sleeping in a fault, and close the store. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()  # serve_forever() returns and closes the listening socket
        if thread is not None:
            thread.join()
        with self._inflight_cond:
            self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=_STOP_GRACE_S)
        server.close_connections()  # idle keep-alive ones would otherwise wait for their timeout
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = None
        log.info("Lancepilot sandbox stopped")

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests look at

    @property
    def port(self) -> int:
        if self._server is None:
            raise UsageError("the sandbox is not running: call start() first")
        return int(self._server.port)

    @property
    def address(self) -> tuple[str, int, bool]:
        """What the listening socket is really bound to: its address (a wildcard such as ``0.0.0.0``
        stays one), its port (the real one when ``port`` was 0), and whether an IPv6 socket takes
        IPv4 connections too (dual stack)."""
        if self._server is None:
            raise UsageError("the sandbox is not running: call start() first")
        sock = self._server.socket
        host, port = sock.getsockname()[:2]
        dual = sock.family == socket.AF_INET6 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return str(host), int(port), dual

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, with a wildcard host replaced by the loopback address."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.config.host, self.config.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base to give a client, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        return self.base_url + API_PREFIX

    @property
    def request_count(self) -> int:
        """POST requests received since ``__init__``, answered or not."""
        with self._count_lock:
            return self._request_count

    def messages(self) -> list[dict[str, Any]]:
        """Every stored message, oldest first: the API's ``data`` plus ``file_path`` (None for a URL)."""
        if self._store is not None:
            store = self._store
            return [_inspected(store, r) for r in store.rows()]
        return stored_messages(self.config.data_dir)

    # ---- WSGI

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._inflight_cond:
            self._inflight += 1
        # Every read of the body goes through the meter, chunked or not (werkzeug caps only what a
        # Content-Length announces); the handler asks it afterwards whether the body was read to its end.
        environ["wsgi.input"] = environ[_METER_KEY] = _BodyMeter(environ["wsgi.input"], self._body_limit(environ))
        request = _Request(environ)
        try:
            try:
                response = self._dispatch(request)
            except _Drop:
                self._drop(environ)
                response = Response(b"", status=444)  # nginx's "closed without answering"; never sent
            except RequestEntityTooLarge as exc:  # ours, or werkzeug's (too many multipart parts)
                response = self._too_large(request, exc)
            except HTTPException as exc:  # a malformed or late body
                if isinstance(exc, ClientDisconnected):  # werkzeug's words for a body cut short
                    exc = _MalformedBody()
                log.info("sandbox: %s for %s %s: %s", exc.code, request.method, _printable(request.path),
                         exc.description)
                response = _json(exc.code or 400, {"message": exc.description or exc.name})
            except Exception as exc:  # the boundary: log the cause, answer like Laravel in production
                log.error("sandbox: %s while handling %s %s: %s", type(exc).__name__, request.method,
                          _printable(request.path), exc)
                log.debug("sandbox: traceback", exc_info=True)
                response = _json(500, {"message": "Server Error"})
            return response(environ, start_response)
        finally:
            request.close()  # removes werkzeug's temporary upload files
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()

    @staticmethod
    def _drop(environ: dict[str, Any]) -> None:
        # Shut the socket down, both ways: the client sees the connection end without an answer.
        # The handler writes nothing for a 444 and closes it afterwards (closing it here would make
        # the handler's own clean-up fail with EBADF).
        sock = environ.get("werkzeug.socket")
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body_limit(self, environ: dict[str, Any]) -> _BodyLimit:
        """The cap on this request's body: a multipart upload may be as large as PHP's post_max_size,
        anything else is a small JSON or form message; nginx's limit, when lower, comes first."""
        mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()
        own = self.config.post_limit if mimetype == "multipart/form-data" else self.config.max_json_body
        proxy = self.config.proxy_body_limit
        if proxy is not None and proxy <= own:
            return _BodyLimit(proxy, proxy=True)
        return _BodyLimit(own, proxy=False)

    @staticmethod
    def _too_large(request: Request, exc: RequestEntityTooLarge) -> Response:
        log.info("sandbox: 413 for %s %s: %s", request.method, _printable(request.path), exc.description)
        if isinstance(exc, _BodyTooLarge) and exc.proxy:
            return _html(413, _NGINX_413)
        return _json(413, {"message": _MSG_POST_TOO_LARGE})

    def _dispatch(self, request: Request) -> Response:
        if request.method == "POST":
            with self._count_lock:
                self._request_count += 1
        meter = request.environ[_METER_KEY]
        declared = request.content_length
        if declared is not None and declared > meter.limit.limit:
            # Refused on the header alone, as nginx and Laravel's ValidatePostSize do, before the
            # token is checked; the handler closes the connection rather than read the body.
            raise _BodyTooLarge(meter.limit.limit, proxy=meter.limit.proxy)
        adapter = self._urls.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(m for m in (exc.valid_methods or []) if m != "HEAD"))
            return _json(405, {"message": f"The {request.method} method is not supported for route "
                                          f"{request.path}. Supported methods: {allowed}."})
        except NotFound:
            return _not_found()
        if endpoint == "health":
            return _json(200, {"ok": True})
        if endpoint == "inspect":
            return _json(200, self.messages())
        return self._audio(request, args["workspace"], args["contact"])

    # ---- faults

    def _draw(self, probability: float) -> bool:
        if probability <= 0.0:
            return False
        with self._rng_lock:
            return self._rng.random() < probability

    def _lost_mode(self) -> str:
        mode = self.config.faults.lost_mode
        if mode != "mixed":
            return mode
        with self._rng_lock:
            return self._rng.choice(_CONCRETE_LOST_MODES)

    def _over_rps(self) -> bool:
        """A sliding one-second window of admitted requests; refused ones do not count (as in
        Laravel's throttle, which checks before it records a hit)."""
        limit = self.config.faults.rps_limit
        if limit is None:
            return False
        now = time.monotonic()
        with self._rng_lock:
            while self._rate_window and now - self._rate_window[0] >= 1.0:
                self._rate_window.popleft()
            if len(self._rate_window) >= limit:
                return True
            self._rate_window.append(now)
            return False

    def _too_many(self) -> Response:
        f = self.config.faults
        return _json(429, {"message": "Too Many Attempts."}, headers={
            "Retry-After": str(f.retry_after),
            "X-RateLimit-Limit": str(f.rps_limit or 60),
            "X-RateLimit-Remaining": "0",
        })

    def _sleep(self, seconds: float) -> None:
        """Sleep, unless the sandbox is stopping: then drop the connection at once."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Drop

    # ---- the route

    def _audio(self, request: Request, workspace: str, contact: str) -> Response:
        faults = self.config.faults
        self._sleep(faults.latency)
        if self._draw(faults.rate_500):
            log.info("sandbox: fault 500 (nothing stored)")
            return _json(500, {"message": "Server Error"})
        if self._over_rps() or self._draw(faults.rate_429):
            log.info("sandbox: 429, retry after %s s", faults.retry_after)
            return self._too_many()

        if not self._authorized(request):
            return _json(401, {"message": "Unauthenticated."})
        if not (_UUID_RE.fullmatch(workspace) and _UUID_RE.fullmatch(contact)):
            return _not_found()
        workspace, contact = workspace.lower(), contact.lower()
        if self._contacts is not None:
            if contact not in self._contacts:
                return _not_found()
            workspaces = self._contacts[contact]
            if workspaces is not None and workspace not in workspaces:
                return _not_found()

        kind, value = self._file_input(request)
        if kind == "missing":
            return _invalid(_MSG_REQUIRED)
        if kind == "upload":
            assert isinstance(value, FileStorage)
            result = self._store_upload(value, workspace, contact)
        else:
            if not _is_http_url(value):
                return _invalid(_MSG_URL)
            result = self._store_url(str(value), workspace, contact)
        if isinstance(result, Response):
            return result

        if self._draw(faults.rate_lost):
            mode = self._lost_mode()
            log.info("sandbox: message %s stored, answer lost (%s)", result["id"], mode)
            if mode == "drop":
                raise _Drop
            if mode == "502":
                return _html(502, _NGINX_502)
            self._sleep(faults.lost_delay)
        return _json(201, {"status": 201, "message": "Resource created successfully.", "data": result})

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token.strip().encode(), self.config.token.encode())

    @staticmethod
    def _file_input(request: Request) -> tuple[str, object]:
        """Where the ``file`` input is: ("upload", FileStorage), ("text", value) or ("missing", None).

        A multipart text field or a form field named ``file`` is taken as a URL, like Laravel's input
        bag would; an upload without a file name is PHP's "no file was uploaded", i.e. missing.
        """
        mimetype = request.mimetype
        if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            upload = request.files.get("file")
            if upload is not None and upload.filename:
                return "upload", upload
            text = request.form.get("file")
            if text is not None and text.strip():
                return "text", text
            return "missing", None
        if request.is_json:
            body = _json_object(request.get_data(cache=False))
            value = body.get("file") if body is not None else None
            if _is_blank(value):
                return "missing", None
            return "text", value
        return "missing", None

    def _store_upload(self, upload: FileStorage, workspace: str, contact: str) -> dict[str, Any] | Response:
        assert self._store is not None
        config = self.config
        message_id = str(uuid.uuid4())
        part = self._store.files_dir / f"{message_id}{_PART_SUFFIX}"
        final: Path | None = None
        try:
            # Streamed: werkzeug already spooled the part to disk; copy it in chunks, hashing as we go.
            with part.open("wb") as fh:
                writer = _HashingWriter(fh)
                upload.save(writer, buffer_size=_COPY_CHUNK)  # type: ignore[arg-type]
                fh.flush()  # no fsync: the sandbox must survive its clients' crashes, not power cuts
            size = writer.size
            if config.php_upload_limit is not None and size > config.php_upload_limit:
                return _invalid(_MSG_UPLOAD_FAILED)  # PHP drops the file; Laravel stops at "uploaded"
            seen = sniff(part)
            errors = []
            if not seen.accepted:
                errors.append(_mimes_message())
            if size > config.max_bytes:  # Laravel compares size/1024 against max:, as a float
                errors.append(f"The file field must not be greater than {config.max_kb} kilobytes.")
            if errors:
                log.info("sandbox: 422 for %r (%s, %d bytes): %s", upload.filename, seen.mime, size, errors)
                return _invalid(*errors)
            final = self._store.files_dir / f"{message_id}.{seen.extension}"
            os.replace(part, final)
            row = {"id": message_id, "workspace": workspace, "contact": contact,
                   "file_name": _client_file_name(upload.filename), "size": size,
                   "sha256": writer.sha256.hexdigest(), "mime": seen.mime, "url": None,
                   "created_at": _now_iso()}
            self._store.insert(row)
            final = None  # committed: keep it
            log.info("sandbox: stored message %s (%s, %d bytes)", message_id, seen.mime, size)
            return _public(row)
        finally:
            part.unlink(missing_ok=True)
            if final is not None:
                final.unlink(missing_ok=True)

    def _store_url(self, url: str, workspace: str, contact: str) -> dict[str, Any]:
        assert self._store is not None
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
        row = {"id": str(uuid.uuid4()), "workspace": workspace, "contact": contact, "file_name": name,
               "size": None, "sha256": None, "mime": None, "url": url, "created_at": _now_iso()}
        self._store.insert(row)
        log.info("sandbox: stored message %s (URL, not fetched)", row["id"])
        return _public(row)


def _json_object(data: bytes) -> dict[str, Any] | None:
    """A JSON body as Laravel's input bag sees it: an object, or nothing at all (PHP's json_decode
    gives up on bad syntax, bad UTF-8 and deep nesting; here json.loads raises)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_blank(value: object) -> bool:
    """What Laravel's ``required`` refuses: null, an empty or blank string, an empty array."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, (list, dict)) and not value)


def _client_file_name(name: str | None) -> str | None:
    if not name:
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1] or None  # some clients send a full path


# --------------------------------------------------------------------------------------------
# For the CLI


def stored_messages(data_dir: str | Path) -> list[dict[str, Any]]:
    """The messages a sandbox stored in ``data_dir``, oldest first (it need not be running)."""
    data_dir = Path(data_dir).expanduser()
    if not (data_dir / _DB_NAME).exists():
        return []
    store = _Store(data_dir)
    try:
        return [_inspected(store, r) for r in store.rows()]
    finally:
        store.close()


def serve(config: SandboxConfig, *, stop_event: threading.Event | None = None,
          on_ready: Callable[[Sandbox], None] | None = None) -> None:
    """Run a sandbox until ``stop_event`` is set or Ctrl-C; then stop it cleanly and return.

    ``on_ready(sandbox)`` is called once it accepts connections (to show ``sandbox.url``, which
    is only known then when ``port`` is 0). Raises :class:`UsageError` if it cannot listen.
    """
    event = stop_event if stop_event is not None else threading.Event()
    sandbox = Sandbox(config)
    try:
        sandbox.start()
        if on_ready is not None:
            on_ready(sandbox)
        while not event.wait(0.2):  # a timed wait keeps Ctrl-C deliverable in the main thread
            pass
    except KeyboardInterrupt:
        log.info("sandbox: interrupted")
    finally:
        sandbox.stop()


def run_forever(config: SandboxConfig) -> None:
    """:func:`serve` until Ctrl-C."""
    serve(config)

