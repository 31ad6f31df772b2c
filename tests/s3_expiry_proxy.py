"""A proxy in front of moto's S3 server that refuses an expired presigned GET, as AWS does.

moto serves a presigned URL after it expires; AWS answers ``403 AccessDenied: Request has expired``.
This proxy (real HTTP on 127.0.0.1, every request forwarded to moto as it came) checks a request whose
query is presigned (``X-Amz-Date`` and ``X-Amz-Expires``) against its own clock first: past the
expiry it answers AWS's 403 and its XML body, and forwards nothing. Its clock is the real one plus
``skew``: a test signs URLs now and moves the proxy's "now" past their lifetime (:meth:`advance`)
instead of sleeping. Point ``AWS_ENDPOINT_URL`` at :attr:`url` and the store, boto3's presigner and the
sandbox's fetches all go through it. Only what the tests need: no signature check (moto does none).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ExpiryProxy:
    """``url``: where to send S3 requests; ``refused``: expired presigned GETs answered 403, by path;
    ``forwarded``: requests passed on, by method; ``signatures``: every presigned URL's signature seen
    (for tests to look for where it must never show)."""

    def __init__(self, server: ThreadingHTTPServer, upstream: str) -> None:
        self.server = server
        self.upstream = urlsplit(upstream)
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.skew = 0.0
        self.refused: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.signatures: set[str] = set()

    def now(self) -> float:
        return time.time() + self.skew

    def advance(self, seconds: float) -> None:
        """Move the proxy's clock forward: URLs signed before now expire as if that time had passed."""
        self.skew += seconds

    def expired(self, query: str) -> tuple[str, str] | None:
        """(expires, now) in AWS's format when ``query`` is a presigned one past its lifetime, else None."""
        fields = parse_qs(query)
        date, lifetime = fields.get("X-Amz-Date", [None])[0], fields.get("X-Amz-Expires", [None])[0]
        if date is None or lifetime is None:
            return None
        signed = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        expires = signed + int(lifetime)
        if self.now() <= expires:
            return None
        return _aws_time(expires), _aws_time(self.now())


def _aws_time(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expired_body(lifetime: str, expires: str, now: str) -> bytes:
    """AWS's answer to an expired presigned URL (its fields, as S3 sends them)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>Request has expired</Message><X-Amz-Expires>{lifetime}</X-Amz-Expires>"
            f"<Expires>{expires}</Expires><ServerTime>{now}</ServerTime>"
            f"<RequestId>EXPIRYPROXY0001</RequestId></Error>").encode()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


@contextmanager
def expiry_proxy(upstream: str) -> Iterator[ExpiryProxy]:
    """A proxy to ``upstream`` (moto's endpoint) on a free loopback port, until the block ends."""
    box: list[ExpiryProxy] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            proxy = box[0]
            path, _, query = self.path.partition("?")
            body = _read_body(self)
            proxy.signatures.update(parse_qs(query).get("X-Amz-Signature", []))
            late = proxy.expired(query) if self.command in ("GET", "HEAD") else None
            if late is not None:
                proxy.refused[path] += 1
                lifetime = parse_qs(query)["X-Amz-Expires"][0]
                self._answer(403, [("Content-Type", "application/xml")], _expired_body(lifetime, *late))
                return
            proxy.forwarded[self.command] += 1
            conn = http.client.HTTPConnection(proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}]
                self._answer(answer.status, kept, data, length=answer.getheader("Content-Length"))
            finally:
                conn.close()

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes, length: str | None = None) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            # a HEAD's answer announces the object's size and carries no body
            self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.append(ExpiryProxy(server, upstream))
    thread = threading.Thread(target=server.serve_forever, name="expiry-proxy", daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
