"""A real HTTP origin for the sandbox's URL fetches: a small http.server in a thread, on a loopback
address of the test's choice, whose routes serve files, errors, redirects, slow or endless bodies,
and which counts what it was asked and how many body bytes it managed to send."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

Route = Callable[["OriginHandler"], None]
_CHUNK = 1 << 20


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    origin: Origin

    def do_GET(self) -> None:
        self.origin.record(self.path, dict(self.headers.items()))
        route = self.origin.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def send_body(self, data: bytes) -> bool:
        """Write ``data`` (counted as it goes); False when the client hung up."""
        try:
            for start in range(0, len(data), _CHUNK):
                self.wfile.write(data[start:start + _CHUNK])
                self.origin.count(len(data[start:start + _CHUNK]))
        except OSError:
            self.close_connection = True
            return False
        return True

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass


class Origin:
    """``routes``: path -> what to do with the request (see the helpers below). ``requests`` holds
    (path with query, headers) of every GET, ``sent`` the body bytes written, ``connections`` the
    connections accepted."""

    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent = 0
        self.connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(OriginHandler):
            origin = outer

        class Listener(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                outer.connections += 1
                return True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the sandbox hanging up mid-body is what some tests want

        self.server = Listener((host, 0), Handler)
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, headers))

    def count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def untouched(self) -> bool:
        return self.connections == 0 and not self.requests

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(data: bytes, content_type: str = "application/octet-stream") -> Route:
    def route(h: OriginHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.send_body(data)
    return route


def status(code: int) -> Route:
    def route(h: OriginHandler) -> None:
        h.send_error(code)
    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(h: OriginHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


def endless(total: int, *, announce: bool) -> Route:
    """``total`` bytes of zeros, with a Content-Length or (HTTP/1.0 style) until the connection closes."""
    def route(h: OriginHandler) -> None:
        h.send_response(200)
        if announce:
            h.send_header("Content-Length", str(total))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        chunk = bytes(_CHUNK)
        for _ in range(total // _CHUNK):
            if not h.send_body(chunk):
                return
    return route


def slow(before_headers: float = 0.0, trickle: float = 0.0) -> Route:
    """Wait ``before_headers`` seconds, then send a body of 100 bytes one every ``trickle`` seconds
    (all waits end when the origin closes)."""
    def route(h: OriginHandler) -> None:
        if h.origin.stopping.wait(before_headers):
            return
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):
            if h.origin.stopping.wait(trickle):
                return
            if not h.send_body(b"x"):
                return
    return route


def short(data: bytes, announced: int) -> Route:
    """``data`` under a Content-Length of ``announced`` (more), then the connection closes."""
    def route(h: OriginHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(announced))
        h.end_headers()
        h.send_body(data)
        h.close_connection = True
    return route
