"""The sandbox's WSGI app: its routes, and the boundary that turns whatever happens into an answer in
the API's shape.

Three routes: the audio route of the real API, ``GET /_sandbox/messages`` (what was stored, for
tests and people) and ``GET /_sandbox/health``. The audio route runs as the real server would, one
step after the other: faults first (:mod:`~audiopipe.sandbox.faults`), then who may post
(token, UUIDs, strict mode's contacts), then the ``file`` input (:mod:`~audiopipe.sandbox.checks`;
a URL is fetched first, :mod:`~audiopipe.sandbox.fetch`), then storing
(:mod:`~audiopipe.sandbox.store`), and last, perhaps, losing the answer.

Every body is read through a meter that caps it by its kind (:mod:`~audiopipe.sandbox.bodies`); a
malformed request gets a 4xx in the API's JSON shape and one log line, an error of ours a 500 and
one log line, never a traceback on the client's side.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from audiopipe.preparation.sniff import Sniff
from audiopipe.sandbox import answers, checks, fetch
from audiopipe.sandbox.bodies import METER_KEY, BodyMeter, BodyTooLarge, MalformedBody, body_limit
from audiopipe.sandbox.config import API_PREFIX, SandboxConfig
from audiopipe.sandbox.faults import Drop, FaultInjector
from audiopipe.sandbox.store import MessageStore, Spooled, new_row, public, stored_messages
from audiopipe.sandbox.strict import KnownContacts
from audiopipe.text import safe

log = logging.getLogger(__name__)

_DROPPED = 444  # nginx's "closed without answering": the handler sends nothing for it


class _Request(Request):
    # The API reads one field; PHP takes at most 20 files. (werkzeug's max_form_memory_size stays:
    # it also bounds the parser's buffer, which holds more than one 64 KiB read at times.)
    max_form_parts = 32


class SandboxApp:
    """The WSGI app of one sandbox. ``store`` is set while the sandbox runs; ``request_count`` counts
    the POSTs that arrived, whatever their fate; :meth:`wait_idle` waits for requests in progress."""

    def __init__(self, config: SandboxConfig, stopping: threading.Event) -> None:
        self.config = config
        self.store: MessageStore | None = None
        self.contacts = KnownContacts.from_csv(config.contacts_csv)
        self.faults = FaultInjector(config.faults, stopping)
        self._count_lock = threading.Lock()
        self._request_count = 0
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._urls = Map([
            Rule(f"{API_PREFIX}/workspaces/<workspace>/contacts/<contact>/messages/audio",
                 methods=["POST"], endpoint="audio"),
            Rule("/_sandbox/messages", methods=["GET"], endpoint="inspect"),
            Rule("/_sandbox/health", methods=["GET"], endpoint="health"),
        ])

    @property
    def request_count(self) -> int:
        with self._count_lock:
            return self._request_count

    def wait_idle(self, timeout: float) -> None:
        """Wait until no request is being handled, or ``timeout`` seconds."""
        with self._inflight_cond:
            self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=timeout)

    # ---- the boundary

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._inflight_cond:
            self._inflight += 1
        # Every read of the body goes through the meter, chunked or not (werkzeug caps only what a
        # Content-Length announces); the handler asks it afterwards whether the body was read to its end.
        environ["wsgi.input"] = environ[METER_KEY] = BodyMeter(environ["wsgi.input"], body_limit(environ, self.config))
        request = _Request(environ)
        try:
            return self._answer(request)(environ, start_response)
        finally:
            request.close()  # removes werkzeug's temporary upload files
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()

    def _answer(self, request: Request) -> Response:
        """The answer to any request: the route's, or the one for what went wrong on the way."""
        try:
            return self._dispatch(request)
        except Drop:
            _drop_connection(request.environ)
            return Response(b"", status=_DROPPED)  # never sent
        except RequestEntityTooLarge as exc:  # ours, or werkzeug's (too many multipart parts)
            return _too_large(request, exc)
        except HTTPException as exc:  # a malformed or late body
            if isinstance(exc, ClientDisconnected):  # werkzeug's words for a body cut short
                exc = MalformedBody()
            log.info("sandbox: %s for %s %s: %s", exc.code, request.method, safe(request.path), exc.description)
            return answers.json_answer(exc.code or 400, {"message": exc.description or exc.name})
        except Exception as exc:  # the boundary: log the cause, answer like Laravel in production
            log.error("sandbox: %s while handling %s %s: %s", type(exc).__name__, request.method,
                      safe(request.path), exc)
            log.debug("sandbox: traceback", exc_info=True)
            return answers.server_error()

    def _dispatch(self, request: Request) -> Response:
        if request.method == "POST":
            with self._count_lock:
                self._request_count += 1
        meter = request.environ[METER_KEY]
        declared = request.content_length
        if declared is not None and declared > meter.limit.limit:
            # Refused on the header alone, as nginx and Laravel's ValidatePostSize do, before the
            # token is checked; the handler closes the connection rather than read the body.
            raise BodyTooLarge(meter.limit.limit, proxy=meter.limit.proxy)
        adapter = self._urls.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed as exc:
            allowed = sorted(m for m in (exc.valid_methods or []) if m != "HEAD")
            return answers.method_not_allowed(request.method, request.path, allowed)
        except NotFound:
            return answers.not_found()
        if endpoint == "health":
            return answers.json_answer(200, {"ok": True})
        if endpoint == "inspect":
            stored = self.store.messages() if self.store is not None else stored_messages(self.config.data_dir)
            return answers.json_answer(200, stored)
        return self._audio(request, args["workspace"], args["contact"])

    def _store(self) -> MessageStore:
        if self.store is None:
            raise RuntimeError("the sandbox is not running: it has no store open")
        return self.store

    # ---- the audio route, step by step

    def _audio(self, request: Request, workspace: str, contact: str) -> Response:
        refused = self.faults.before_checks() or self._refusal(request, workspace, contact)
        if refused is not None:
            return refused
        stored = self._receive(request, workspace.lower(), contact.lower())
        if isinstance(stored, Response):
            return stored
        return self.faults.lose_answer(stored["id"]) or answers.created(stored)

    def _refusal(self, request: Request, workspace: str, contact: str) -> Response | None:
        """Who may not post here: no valid token (401), a path that names no contact (404)."""
        if not checks.authorized(request, self.config.token):
            return answers.unauthenticated()
        if not checks.are_uuids(workspace, contact):
            return answers.not_found()
        if not self.contacts.exists(workspace.lower(), contact.lower()):
            return answers.not_found()
        return None

    def _receive(self, request: Request, workspace: str, contact: str) -> dict[str, Any] | Response:
        """Store what the ``file`` input holds: the created message's data, or the 422 refusing it."""
        given = checks.file_input(request)
        if given.kind is checks.FileKind.MISSING:
            return answers.invalid(checks.MSG_REQUIRED)
        if given.upload is not None:  # FileKind.UPLOAD
            return self._store_upload(given.upload, workspace, contact)
        if not checks.is_http_url(given.value):
            return answers.invalid(checks.MSG_URL)
        return self._store_url(str(given.value), workspace, contact)

    def _store_upload(self, upload: FileStorage, workspace: str, contact: str) -> dict[str, Any] | Response:
        store = self._store()
        with store.spool(upload) as spooled:
            seen, problems = checks.upload_problems(spooled.path, spooled.size, self.config)
            if seen is None:  # PHP dropped the file unread, and says no more
                return answers.invalid(*problems)
            row = new_row(workspace, contact, message_id=spooled.message_id,
                          file_name=checks.client_file_name(upload.filename), size=spooled.size,
                          sha256=spooled.sha256, mime=seen.mime)
            return self._keep(spooled, seen, problems, row, repr(upload.filename))

    def _store_url(self, url: str, workspace: str, contact: str) -> dict[str, Any] | Response:
        """Fetch the URL (:mod:`~audiopipe.sandbox.fetch`), check what came as an upload is checked,
        and store it; the row and the logs hold the URL with its query masked (a signature)."""
        shown = fetch.shown_url(url)
        store = self._store()
        try:
            with fetch.Fetch(url, self.config.fetch, self.config.max_bytes) as body, store.spool(body) as spooled:
                seen, problems = checks.file_problems(spooled.path, spooled.size, self.config)
                row = new_row(workspace, contact, message_id=spooled.message_id, file_name=checks.url_file_name(url),
                              size=spooled.size, sha256=spooled.sha256, mime=seen.mime, url=shown)
                return self._keep(spooled, seen, problems, row, safe(shown))
        except fetch.FetchTooLarge as exc:
            log.info("sandbox: 422 for %s: %s", safe(shown), exc)
            return answers.invalid(checks.size_message(self.config))
        except fetch.FetchRefused as exc:
            log.info("sandbox: 422 for %s: not fetched: %s", safe(shown), exc)
            return answers.invalid(checks.fetch_message(str(exc)))

    def _keep(self, spooled: Spooled, seen: Sniff, problems: list[str], row: dict[str, Any],
              what: str) -> dict[str, Any] | Response:
        """Store a checked file (uploaded or fetched) with its row, or the 422 naming its problems."""
        if problems:
            log.info("sandbox: 422 for %s (%s, %d bytes): %s", what, seen.mime, spooled.size, problems)
            return answers.invalid(*problems)
        assert seen.extension is not None  # accepted: it is one of the allowed extensions
        self._store().keep(spooled, seen.extension, row)
        log.info("sandbox: stored message %s from %s (%s, %d bytes)", row["id"], what, seen.mime, spooled.size)
        return public(row)


def _too_large(request: Request, exc: RequestEntityTooLarge) -> Response:
    log.info("sandbox: 413 for %s %s: %s", request.method, safe(request.path), exc.description)
    if isinstance(exc, BodyTooLarge) and exc.proxy:
        return answers.html_answer(413, answers.NGINX_413)
    return answers.json_answer(413, {"message": answers.MSG_POST_TOO_LARGE})


def _drop_connection(environ: dict[str, Any]) -> None:
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
