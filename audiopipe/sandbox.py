"""A local sandbox of the Lancepilot audio-message API, for tests and dry runs.

It answers ``POST /api/v3/workspaces/<workspace>/contacts/<contact>/messages/audio`` the way the real
Laravel server does (REFERENCE §1-2): bearer token, UUID path parameters, the
``required|file|mimes:aac,amr,mp3,m4a,ogg|max:16384`` rule decided by a libmagic sniff of the content
(never the file name), PHP's ``upload_max_filesize`` and a front proxy's body limit. It can also
misbehave on purpose (:class:`Faults`): latency, 429 with ``Retry-After``, 500 before anything is
stored, and the dangerous case of REFERENCE §5, "created but the answer is lost".

Every created message is stored durably (SQLite in WAL mode plus the uploaded bytes under
``data_dir/files/``) so a test, or a person, can check what the "customer" would have received,
also after a restart. ``GET /_sandbox/messages`` lists them; ``GET /_sandbox/health`` says it is up.

Use it in-process::

    with Sandbox(SandboxConfig(token="t", data_dir=tmp_path)) as sb:
        requests.post(f"{sb.url}/workspaces/{ws}/contacts/{c}/messages/audio", ...)
        assert len(sb.messages()) == 1

or from the CLI through :func:`serve` / :func:`run_forever`. This module never prints; it logs to the
``audiopipe.sandbox`` logger, and never logs the token.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
import os
import random
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .errors import UsageError
from .sniff import ALLOWED_EXTENSIONS, MIME_FIRST_EXTENSION, sniff

__all__ = [
    "Faults",
    "LOST_MODES",
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

_MAX_JSON_BODY = 1 << 20  # a URL message is tiny; refuse to buffer anything bigger
_COPY_CHUNK = 1 << 16
_DB_NAME = "messages.sqlite3"
_FILES_DIR = "files"
_PART_SUFFIX = ".part"
_STOP_GRACE_S = 5.0  # how long stop() waits for requests still being handled

_MSG_REQUIRED = "The file field is required."
_MSG_UPLOAD_FAILED = "The file failed to upload."
_MSG_URL = "The file field must be a valid URL."

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
    parsed. ``contacts_csv`` turns on strict mode: only the contacts it lists exist.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str
    data_dir: Path
    max_kb: int = 16384
    php_upload_limit: int | None = None
    proxy_body_limit: int | None = None
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
        for name in ("php_upload_limit", "proxy_body_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive number of bytes (or None), not {value!r}")

    @property
    def max_bytes(self) -> int:
        """The largest accepted file, in bytes (Laravel's kilobytes are 1024 bytes)."""
        return self.max_kb * 1024

    def __repr__(self) -> str:  # never show the token, even in a traceback or a log line
        return (f"SandboxConfig(host={self.host!r}, port={self.port!r}, token='***', data_dir={self.data_dir!r}, "
                f"max_kb={self.max_kb!r}, php_upload_limit={self.php_upload_limit!r}, "
                f"proxy_body_limit={self.proxy_body_limit!r}, contacts_csv={self.contacts_csv!r}, "
                f"faults={self.faults!r})")


# Contacts of strict mode: contact UUID -> the workspaces it belongs to, or None for "any workspace".
Contacts = dict[str, frozenset[str] | None]

_CONTACT_COLUMNS = ("contact", "contact_id", "id")
_WORKSPACE_COLUMNS = ("workspace", "workspace_id")


def load_contacts(path: str | Path) -> Contacts:
    """Read the contacts of strict mode from a CSV.

    The contact column is the first of ``contact``, ``contact_id``, ``id`` (header names are
    case-insensitive); an optional ``workspace``/``workspace_id`` column ties a contact to a
    workspace, an empty one means any workspace. Raises :class:`UsageError` on a bad file.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
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
    except OSError as exc:
        raise UsageError(f"cannot read the contacts CSV {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable UTF-8 CSV: {exc}") from exc
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


class _JsonTooLarge(HTTPException):
    code = 413
    description = "The JSON body is too large."


class _Handler(WSGIRequestHandler):
    """werkzeug's handler, logging through our logger (werkzeug's own would print to stderr).

    HTTP/1.1 keeps connections alive between requests, as the real API behind its proxy does.
    """

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug('%s "%s" %s', self.address_string(), getattr(self, "requestline", ""), code)

    def log(self, type: str, message: str, *args: Any) -> None:
        level = logging.ERROR if type == "error" else logging.DEBUG
        log.log(level, message.rstrip(), *args)


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
        self._server: BaseWSGIServer | None = None
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

    def _make_server(self) -> BaseWSGIServer:
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
            return make_server(host, port, self._wsgi, threaded=True, request_handler=_Handler,
                               fd=sock.fileno())
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
        request = Request(environ)
        try:
            try:
                response = self._dispatch(request)
            except _Drop:
                self._drop(environ)
                response = Response(b"", status=444)  # nginx's "closed without answering"; never sent
            except HTTPException as exc:  # werkzeug's own refusals (a form field too big...)
                response = _json(exc.code or 400, {"message": exc.description or exc.name})
            except Exception:  # the boundary: log the cause, answer like Laravel in production
                log.exception("sandbox: error while handling %s %s", request.method, request.path)
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
        # werkzeug's handler closes it afterwards; closing it here would make werkzeug's own
        # clean-up fail with EBADF and log a traceback, while its write to a shut socket is a
        # BrokenPipeError it treats as a dropped connection.
        sock = environ.get("werkzeug.socket")
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, request: Request) -> Response:
        if request.method == "POST":
            with self._count_lock:
                self._request_count += 1
        limit = self.config.proxy_body_limit
        if limit is not None and request.content_length is not None and request.content_length > limit:
            # nginx refuses on the header alone; werkzeug's handler discards the unread body after
            # the answer so the client gets to read it.
            log.info("sandbox: 413, body of %d bytes over the proxy limit of %d", request.content_length, limit)
            return _html(413, _NGINX_413)
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
            if request.content_length is not None and request.content_length > _MAX_JSON_BODY:
                raise _JsonTooLarge()
            body = request.get_json(silent=True)  # malformed JSON is an empty input bag to Laravel
            value = body.get("file") if isinstance(body, dict) else None
            if value is None or (isinstance(value, str) and not value.strip()):
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

