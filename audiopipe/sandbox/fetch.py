"""Fetching the URL of a ``{"file": URL}`` message, as the real server must do it safely.

A server that fetches whatever URL a client names is a way into the network it runs in (SSRF). So:
only http and https; the host is resolved once, every address it resolves to must be in the
sandbox's allow-list (:class:`~audiopipe.sandbox.config.FetchPolicy`, loopback by default), and the
connection goes to that very address (the ``Host`` header and TLS name stay the URL's), so a DNS
answer that changes between the check and the connection cannot slip past. A redirect is followed
only a few times, each hop checked the same way. The body is read under a cap (the file limit: one
byte more and the fetch stops), a connect timeout, a timeout per read and a deadline for the whole
fetch, which a watchdog enforces by shutting the socket. Nothing of the client's is forwarded: no
cookies, no credentials (user-info in the URL is never sent).

What goes wrong is a :class:`FetchRefused` whose text says why in a few words, fit for a 422; it
never holds the URL, whose query may be a signature (:func:`shown_url` is the URL for logs).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from audiopipe.errors import AudiopipeError
from audiopipe.sandbox.config import FetchPolicy
from audiopipe.send.origin import redact

T = TypeVar("T")
_MAX_ADDRESSES = 3  # tried, each within the connect timeout (the watchdog cannot cut a connect short)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY = 4096  # bytes of an error's body read for its code and message
_PLAIN = re.compile(r"[^A-Za-z0-9 .,:'()-]")
_HEADERS = {"User-Agent": "audiopipe-sandbox", "Accept": "*/*", "Accept-Encoding": "identity",
            "Connection": "close"}


class FetchRefused(AudiopipeError):
    """The URL was not fetched, or not in full; ``str()`` says why, without the URL."""


class FetchTooLarge(FetchRefused):
    """The body is over the file limit (announced, or counted as it came)."""


def shown_url(url: str) -> str:
    """``url`` as logs and the stored message show it: the path kept; user-info, query (a presigned
    URL's signature) and fragment masked."""
    return redact(url)


def error_words(response: http.client.HTTPResponse) -> str:
    """`` (Code: Message)`` from an object store's XML error body (``AccessDenied: Request has
    expired``), else nothing: what a refusal's reason is worth quoting, read under a small cap and kept
    to plain words (never the body's other fields, which can echo the request)."""
    body = response.read(_ERROR_BODY).decode("utf-8", "replace")
    found = [m.group(1) for tag in ("Code", "Message") if (m := re.search(f"<{tag}>([^<]{{1,200}})</{tag}>", body))]
    words = ": ".join(" ".join(_PLAIN.sub(" ", w).split())[:100] for w in found)
    return f" ({words})" if words else ""


@dataclass(frozen=True)
class Target:
    """One hop of a fetch: where to connect (``addresses``, checked) and what to ask for."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]  # every address the host resolved to, each allowed: tried in order
    path: str  # the request target: path and query


def check_target(url: str, policy: FetchPolicy) -> Target:
    """The checked target of ``url``: http(s), and a host whose every address the policy allows."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused("the URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused("only http and https URLs are fetched")
    port = port or (443 if scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchRefused("its host name does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses or not all(policy.allows(a) for a in addresses):
        raise FetchRefused("its host is not one the server may fetch from")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port, tuple(addresses), path)


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the host name resolves to by then."""

    def __init__(self, target: Target, policy: FetchPolicy) -> None:
        super().__init__(target.host, target.port, timeout=policy.connect_timeout)
        self.addresses = target.addresses
        self.policy = policy

    def connect(self) -> None:
        failed: OSError | None = None
        for address in self.addresses[:_MAX_ADDRESSES]:  # as create_connection does with a name, but only these
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout)
                return
            except OSError as exc:
                failed = exc
        assert failed is not None  # a target has at least one address
        raise failed


class _PinnedHTTPS(_PinnedHTTP):
    """The same over TLS, the certificate checked against the URL's host name."""

    def connect(self) -> None:
        super().connect()
        cafile = str(self.policy.ca_file) if self.policy.ca_file is not None else None
        self.sock = ssl.create_default_context(cafile=cafile).wrap_socket(self.sock, server_hostname=self.host)


class Fetch:
    """The body of a URL, as a readable file object: ``with Fetch(url, policy, cap) as body:
    body.read(n)``. Entering follows the redirects and checks the answer; reading counts against
    ``max_bytes``; every step raises :class:`FetchRefused` when it fails."""

    def __init__(self, url: str, policy: FetchPolicy, max_bytes: int) -> None:
        self.url = url
        self.policy = policy
        self.max_bytes = max_bytes
        self.received = 0
        self._conn: _PinnedHTTP | None = None
        self._response: http.client.HTTPResponse | None = None
        self._lock = threading.Lock()
        self._expired = False
        self._watchdog = threading.Timer(policy.deadline, self._expire)
        self._watchdog.daemon = True

    def __enter__(self) -> Fetch:
        self._watchdog.start()
        try:
            self._response = self._follow()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def read(self, size: int = -1, /) -> bytes:
        assert self._response is not None, "read() outside the with block"
        room = self.max_bytes - self.received + 1  # one byte past the cap proves the body is over it
        want = room if size < 0 else min(size, room)
        response = self._response
        data = self._guarded(lambda: response.read1(want))
        if not data and want:
            self._check_complete(response)
        self.received += len(data)
        if self.received > self.max_bytes:
            raise FetchTooLarge(f"it is over {self.max_bytes} bytes")
        return data

    def close(self) -> None:
        self._watchdog.cancel()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- the steps

    def _follow(self) -> http.client.HTTPResponse:
        url = self.url
        for hop in range(self.policy.max_redirects + 1):
            response = self._get(check_target(url, self.policy))
            location = response.getheader("Location")
            if response.status not in REDIRECTS or not location:
                return self._checked(response)
            if hop == self.policy.max_redirects:
                break
            url = urljoin(url, location.strip())
        raise FetchRefused(f"the origin redirected more than {self.policy.max_redirects} times")

    def _get(self, target: Target) -> http.client.HTTPResponse:
        kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        conn = kind(target, self.policy)
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # the previous hop's
            self._conn = conn

        def request() -> http.client.HTTPResponse:
            conn.connect()
            if self._expired:  # the watchdog fired while connecting: it had no socket to shut yet
                raise self._too_slow()
            assert conn.sock is not None
            conn.sock.settimeout(self.policy.read_timeout)
            conn.request("GET", target.path, headers=_HEADERS)
            return conn.getresponse()

        return self._guarded(request)

    def _checked(self, response: http.client.HTTPResponse) -> http.client.HTTPResponse:
        if response.status != 200:
            said = f"the origin answered {response.status} {response.reason}".rstrip()
            raise FetchRefused(said + self._guarded(lambda: error_words(response)))
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise FetchTooLarge(f"the origin announced {int(length)} bytes")  # refused unread
        return response

    def _check_complete(self, response: http.client.HTTPResponse) -> None:
        """At the end of the body: was it all there? (http.client's read1 takes a short body, or
        one the watchdog cut, as its end.)"""
        if self._expired:
            raise self._too_slow()
        if response.length:  # what the Content-Length announced and did not come
            raise FetchRefused("the origin closed the connection before the end of the file")

    def _guarded(self, step: Callable[[], T]) -> T:
        """Run one network step, turning what the network raises into a :class:`FetchRefused`."""
        if self._expired:
            raise self._too_slow()
        try:
            return step()
        except FetchRefused:
            raise
        except TimeoutError:
            raise self._too_slow() if self._expired else FetchRefused("the origin timed out") from None
        except ssl.SSLError as exc:
            raise FetchRefused(f"TLS failed ({exc.reason or type(exc).__name__})") from None
        except ConnectionRefusedError:
            raise FetchRefused("the origin refused the connection") from None
        except (OSError, http.client.HTTPException) as exc:
            if self._expired:
                raise self._too_slow() from None
            raise FetchRefused(f"the connection failed ({type(exc).__name__})") from None

    def _too_slow(self) -> FetchRefused:
        return FetchRefused(f"it took longer than {self.policy.deadline:g} s")

    def _expire(self) -> None:
        """The watchdog: past the deadline, cut the connection; the read blocked on it fails at once."""
        self._expired = True
        with self._lock:
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
