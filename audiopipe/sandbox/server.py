"""Serving the sandbox: werkzeug's development server, bounded against hostile or broken clients.

werkzeug's handler trusts its clients: no socket timeout, a thread per connection however many,
a drain of up to 10 GB after each answer, "Connection: close" on every answer, HTML error pages,
and tracebacks on stderr. The classes below keep its request parsing and WSGI environ and bound
the rest: every read under a timeout, the request head under a size cap and a deadline, the raw
body bytes capped (the app caps each body by its kind, :mod:`audiopipe.sandbox.bodies`), keep-alive
only after a body read to its end, ``max_connections`` served at once, errors answered in the API's
JSON shape with one log line, and every open connection closed when the sandbox stops.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from audiopipe.errors import UsageError
from audiopipe.sandbox.bodies import BodyTooLarge, body_read_to_end
from audiopipe.sandbox.config import KiB, MiB, SandboxConfig
from audiopipe.text import safe

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * KiB            # the request line and headers, all together (nginx allows 32 KiB)
_LINGER_BYTES = 1 * MiB              # taken and dropped after refusing a body before its end, so that
_LINGER_SECONDS = 1.0                # the client reads the answer rather than a reset; then we close
_LISTEN_BACKLOG = 128


class HeadTooLarge(http.client.LineTooLong):
    """The request line and headers are over MAX_HEAD_BYTES (a LineTooLong, so that http.server's
    header parser answers 431 for it)."""

    def __init__(self) -> None:
        super().__init__("request head")


class SocketReader(io.RawIOBase):
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


class Handler(WSGIRequestHandler):
    """werkzeug's request handler, bounded: every read under a timeout, the request head under a
    size cap and a deadline, keep-alive only after a body read to its end, errors answered in the
    API's JSON shape with one log line (never a traceback), and no unbounded drain."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # an error answer to a garbled request line still has a status line
    disable_nagle_algorithm = True  # an answer's head and body are two writes on a kept-alive connection
    server: Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # http.server and werkzeug read self.rfile: make it the bounded one
        idle = self.server.config.idle_timeout
        self.connection.settimeout(idle)
        self._reader = SocketReader(self.connection, idle)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        config = self.server.config
        self.close_connection = True  # until a well-formed HTTP/1.1 request says otherwise
        # http.server's own "not parsed yet" (its error path reads them); typeshed says command is a str
        self.command, self.request_version, self.requestline = None, "", ""  # type: ignore[assignment]
        self.raw_requestline = b""
        self._reader.phase(config.header_timeout, MAX_HEAD_BYTES, HeadTooLarge)
        try:
            try:
                self.raw_requestline = self.rfile.readline(65537)
            except HeadTooLarge:
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
            self._reader.phase(config.body_timeout, raw_limit, lambda: BodyTooLarge(raw_limit))
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
                      and not self.server.stopping.is_set() and body_read_to_end(environ))
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
            if not body_read_to_end(environ):
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
            log.error("sandbox: %s while answering %s: %s", type(exc).__name__, safe(self.requestline), exc)
            log.debug("sandbox: traceback", exc_info=True)
            return "500 INTERNAL SERVER ERROR", [("Content-Type", "application/json")], b'{"message": "Server Error"}'
        return answer[0], answer[1], body

    def _linger(self) -> None:
        """After answering a body we did not read to its end, take and drop a bounded amount more,
        so the client reads our answer rather than a reset; then the connection closes."""
        self._reader.phase(_LINGER_SECONDS, _LINGER_BYTES)
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while self.rfile.read1(64 * KiB):
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
            message = f"The request headers are too large ({MAX_HEAD_BYTES // KiB} KiB and 100 headers at most)."
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
        log.debug("sandbox: %s %s %s", self.address_string(), safe(getattr(self, "requestline", "")), code)

    def log(self, type: str, message: str, *args: Any) -> None:
        # What reaches here is a client's mistake (a refusal, a timeout): one line, not an error of ours.
        text = message % args if args else message
        log.info("sandbox: %s: %s", self.address_string(), safe(text.rstrip()))


class Server(ThreadedWSGIServer):
    """werkzeug's threaded server, with ``config.max_connections`` connections served at once (the
    others wait in the listen queue), the open ones closed when the sandbox stops, and an error a
    handler lets through reported in one log line."""

    def __init__(self, config: SandboxConfig, app: Callable[..., Any], *, fd: int,
                 stopping: threading.Event) -> None:
        self.config = config
        self.stopping = stopping
        # The raw bytes of a body, chunk framing included, are capped too: 1-byte chunks cost more
        # to read than the bytes they carry.
        self.raw_body_limit = 2 * max(config.post_limit, config.max_json_body) + MAX_HEAD_BYTES
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(config.host, config.port, app, handler=Handler, fd=fd)

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
        log.log(logging.ERROR if type == "error" else logging.DEBUG, "sandbox: %s", safe(first))
        if rest:
            log.debug("%s", rest)


def bind_server(config: SandboxConfig, app: Callable[..., Any], stopping: threading.Event) -> Server:
    """A :class:`Server` for ``app`` on ``config.host``/``config.port``, listening but not yet serving.

    The socket is bound here, not by werkzeug, which prints to stderr and calls sys.exit() when binding
    fails: this raises :class:`UsageError` instead (port in use, bad host).
    """
    host, port = config.host, config.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"sandbox host {host!r} cannot be resolved: {exc.strerror}") from exc
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(_LISTEN_BACKLOG)
        # werkzeug dups the descriptor, so ours is closed below either way.
        return Server(config, app, fd=sock.fileno(), stopping=stopping)
    except OSError as exc:
        raise UsageError(f"the sandbox cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        sock.close()
