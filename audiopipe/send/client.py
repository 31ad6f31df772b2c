"""The Lancepilot API client: one audio message per call, every outcome typed.

docs/api.md §5 decides everything here. The API has no idempotency key, so a request is repeated only
when the message was definitely not created: connection failures before anything was sent, and 429.
Every other outcome gets exactly one request. A read timeout, a reset or a 5xx is *unknown*: the
message may exist, and resending could reach the customer twice.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import logging
import os
import random
import re
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from requests_toolbelt import MultipartEncoder

from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    GaveUp,
    OutcomeUnknown,
    RateLimited,
    RefusedError,
    SendError,
    TokenRefused,
    UsageError,
)
from audiopipe.preparation.formats import FORMATS
from audiopipe.send.origin import AmbiguousURL, CheckedURL, Origin, check_url, redact, resolve_redirect
from audiopipe.smallfile import NOT_REGULAR, SmallFileError, read_small_file

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://lancepilot.com/api/v3"
USER_AGENT = "audiopipe/0.1 (+https://pypi.org/project/audiopipe)"
RETRY_AFTER_CAP = 300.0
MAX_REDIRECTS = 3
TOKEN_FILE_LIMIT = 4096  # bytes; API tokens are far shorter, so more means the wrong file
# What people paste along with the token: the scheme of the header it goes in ("Bearer abc").
_BEARER_PREFIX = re.compile(r"bearer(\s+|$)", re.IGNORECASE)
_HEADER_NAME = re.compile(r"authorization\s*:", re.IGNORECASE)

CONTENT_TYPES = {f".{fmt.extension}": fmt.content_type for fmt in FORMATS.values()}
CONTENT_TYPES[".opus"] = "audio/ogg"


def check_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a UUID (like 0b7e4f9c-1d2a-4c7e-9a51-3f0d2c8b6e11)") from None


def load_token(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, str]:
    """The token and where it came from: the argument, then a token file given here, then
    ``LANCEPILOT_TOKEN``, then ``LANCEPILOT_TOKEN_FILE``. A token file named explicitly wins over
    the environment, so a stale exported token cannot shadow it."""
    token, source = token_setting(token, token_file)
    token = _without_bearer(token, source)
    # An HTTP header carries printable ASCII only; a pasted zero-width space or emoji would fail
    # mid-request. Refuse it here, before anything is recorded or sent.
    if not all(33 <= ord(c) < 127 for c in token):
        raise UsageError(f"{source} holds characters a token cannot have (spaces, accents, invisible "
                         "or non-ASCII characters); copy it again")
    return token, source


def token_setting(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, str]:
    """The token as it was set (spaces around it removed, nothing else) and where it came from;
    :class:`UsageError` when there is none. :func:`load_token` is what a request uses."""
    source = "the token given"
    if not token and token_file:
        path, source = token_file, f"the token file {token_file}"
    elif not token and os.environ.get("LANCEPILOT_TOKEN"):
        token, source, path = os.environ["LANCEPILOT_TOKEN"], "LANCEPILOT_TOKEN", None
    elif not token and os.environ.get("LANCEPILOT_TOKEN_FILE"):
        path = os.environ["LANCEPILOT_TOKEN_FILE"]
        source = f"the token file {path} (LANCEPILOT_TOKEN_FILE)"
    else:
        path = None
    if path and not token:
        token = _read_token_file(path, source)
        if not token:
            raise UsageError(f"{source} is empty: put the API token in it")
    token = (token or "").strip()
    if not token:
        raise UsageError("no API token: set LANCEPILOT_TOKEN, or give --token-file / LANCEPILOT_TOKEN_FILE")
    return token, source


def _without_bearer(token: str, source: str) -> str:
    """The token without the ``Bearer `` a copy of the whole header value brings along (any case,
    any spaces): audiopipe writes that word itself, and "Bearer Bearer abc" is refused as 401."""
    if _HEADER_NAME.match(token):
        raise UsageError(f"{source} holds a whole 'Authorization:' header; keep only the token that "
                         "follows 'Authorization: Bearer '")
    prefix = _BEARER_PREFIX.match(token)
    if prefix is None:
        return token
    log.debug("%s begins with 'Bearer ': using the token that follows it", source)
    rest = token[prefix.end():].strip()
    if not rest:
        raise UsageError(f"{source} holds only the word 'Bearer': put the API token itself there")
    return rest


def _read_token_file(path: str | Path, source: str) -> str:
    """A token file read bounded: a device (/dev/zero), a pipe or a folder named by mistake must
    neither exhaust memory nor wait forever for a writer, so only a small regular file is read."""
    try:
        data = read_small_file(path, TOKEN_FILE_LIMIT)
    except SmallFileError as exc:
        if str(exc) == NOT_REGULAR:
            raise UsageError(f"{source} is {NOT_REGULAR}: give the file that holds the token") from None
        if str(exc).startswith("larger than"):
            raise UsageError(f"{source} is {exc}, far too large for a token: is it the right file?") from None
        raise UsageError(f"cannot read {source}: {exc}") from None
    return data.decode("utf-8", errors="replace").strip()


def parse_retry_after(value: str | None, *, now: float | None = None, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped; None if absent."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always UTC
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), cap)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries only where the message was definitely not created (connect failures, 429)."""

    attempts: int = 5          # requests in all, the first included
    base: float = 0.5          # first backoff, seconds
    cap: float = 30.0          # longest backoff
    retry_after_cap: float = RETRY_AFTER_CAP

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base × 2^attempt)] (attempt counts from 1)."""
        return rng.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class SentMessage:
    """A created message: the ``data`` the API returned, and its id when it has one."""

    data: dict[str, Any]
    status: int = 201
    attempts: int = 1

    @property
    def id(self) -> str | None:
        value = self.data.get("id")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class TokenCheck:
    """What one request that cannot create a message said about the token (see
    :meth:`LancepilotClient.check_token`)."""

    accepted: bool | None  # True: authenticated, then refused as invalid (422); False: 401; None: no verdict
    status: int | None     # the answer's HTTP status; None when no answer came
    seconds: float         # the request's whole time, connecting included
    detail: str            # one line for a person

    def require(self) -> TokenCheck:
        """Raise :class:`TokenRefused` when the server refused the token; otherwise ``self``."""
        if self.accepted is False:
            raise TokenRefused(self.detail, status=self.status)
        return self


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it (causes, contexts, urllib3's ``reason``), outermost first."""
    chain: list[BaseException] = []
    stack: list[object] = [exc]
    while stack:
        e = stack.pop(0)
        if not isinstance(e, BaseException) or any(e is seen for seen in chain):
            continue  # ssl.SSLError's ``reason`` is a string, not an exception
        chain.append(e)
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())])
    return chain


def _in_tls_handshake(exc: ssl.SSLError) -> bool:
    """True when the TLS error came from the handshake, before any HTTP byte could be sent."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "do_handshake"


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate not trusted: {exc.verify_message}"
    reason = str(getattr(exc, "reason", "") or "").replace("_", " ").lower()
    if reason == "wrong version number":
        return "the server does not speak TLS there: is it an http:// address?"
    return reason or "handshake failed"


def _first(chain: list[BaseException], *types: type[BaseException]) -> Any:
    return next((e for e in chain if isinstance(e, types)), None)


def _nothing_sent_reason(exc: BaseException, chain: list[BaseException], origin: Origin,
                         connect_timeout: float) -> str | None:
    """Why the request never left, when it certainly did not (no connection, or no TLS session)."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    host = origin.netloc
    if _first(chain, NameResolutionError, socket.gaierror):
        lookup = _first(chain, socket.gaierror)
        if lookup is not None and lookup.errno == socket.EAI_AGAIN:
            return f"could not look up the host name {origin.host} (DNS did not answer)"
        return f"the host name {origin.host} was not found (DNS)"
    if _first(chain, ConnectionRefusedError):
        return f"could not connect to {host}: connection refused (is the server running, on that port?)"
    # requests' own test: urllib3's NewConnectionError subclasses ConnectTimeoutError
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"could not connect to {host}: timed out after {connect_timeout:g} s"
    if _first(chain, NewConnectionError):
        cause = _first(chain, OSError)
        return f"could not connect to {host}" + (f": {cause.strerror.lower()}" if cause and cause.strerror else "")
    tls = _first(chain, ssl.SSLError)
    if tls is not None and _in_tls_handshake(tls):
        return f"the TLS handshake with {host} failed ({_tls_reason(tls)})"
    return None


def _mid_request_reason(exc: BaseException, chain: list[BaseException], host: str) -> str:
    """What broke once the request may have reached the server."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer from {host} before the read timeout"
    if _first(chain, ssl.SSLError):
        return f"the TLS connection to {host} broke mid-request"
    if _first(chain, ConnectionResetError):
        return f"the connection to {host} was reset mid-request"
    if _first(chain, BrokenPipeError):
        return f"{host} closed the connection while the file was being sent"
    if _first(chain, http.client.RemoteDisconnected):
        return f"{host} closed the connection without answering"
    if _first(chain, requests.exceptions.ChunkedEncodingError, http.client.IncompleteRead):
        return f"the answer from {host} was cut off"
    return f"the connection to {host} failed mid-request"


def parse_base_url(url: str) -> CheckedURL:
    """The base URL read once, strictly (see :mod:`audiopipe.send.origin`); one UsageError line otherwise."""
    try:
        checked = check_url(url, base=True)
    except AmbiguousURL as exc:
        raise UsageError(f"base URL {redact(url)!r} refused: {exc}. Write it as https://host[:port]/path, "
                         f"e.g. {DEFAULT_BASE_URL}") from None
    return dataclasses.replace(checked, path=checked.path.rstrip("/"))


def _log_answer(target: CheckedURL, started: float, status: int | None, outcome: object) -> None:
    """One line a request, for -v: method, path (the token travels in a header, never here), the
    answer's status, how long it took, and the message id or what went wrong."""
    log.info("POST %s -> %s in %.0f ms: %s", target.path, status if status is not None else "no answer",
             (time.monotonic() - started) * 1000, outcome)


def configured_base_url() -> str | None:
    """``LANCEPILOT_BASE_URL``, or None when it is not set. Set but empty (a script's variable that
    came out blank) is refused: quietly falling back to the real API would send a sandbox's or a
    staging token to production."""
    value = os.environ.get("LANCEPILOT_BASE_URL")
    if value is not None and not value.strip():
        raise UsageError("LANCEPILOT_BASE_URL is set but empty: unset it to use the real API "
                         f"({DEFAULT_BASE_URL}), or give the URL you mean")
    return value


class LancepilotClient:
    """A session with the Lancepilot API. Use it as a context manager::

        with LancepilotClient() as client:            # token from LANCEPILOT_TOKEN
            msg = client.send_audio(workspace, contact, "ready/talk.ogg")
            print(msg.id)
    """

    def __init__(self, token: str | None = None, base_url: str | None = None, *,
                 token_file: str | Path | None = None, connect_timeout: float = 10.0,
                 read_timeout: float = 120.0, retry: RetryPolicy | None = None,
                 allow_insecure_http: bool = False, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None) -> None:
        self._base = parse_base_url(base_url or configured_base_url() or DEFAULT_BASE_URL)
        self.origin = self._base.origin
        self.base_url = str(self._base)  # rebuilt from the checked parts: what requests connects to
        if self.origin.scheme == "http" and not self.origin.is_loopback and not allow_insecure_http:
            raise UsageError(f"refusing to send the token over plain http to {self.origin.host}; use https "
                             "(plain http is allowed for 127.0.0.1/localhost, e.g. the sandbox)")
        self._token, self.token_source = load_token(token, token_file)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = random.Random(seed)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        # A loopback sandbox is never reached through an HTTP proxy from the environment, which
        # would see the bearer token in clear text.
        self.session.trust_env = not self.origin.is_loopback

    def __repr__(self) -> str:  # never the token
        return f"LancepilotClient(base_url={self.base_url!r}, token=<hidden>)"

    def __enter__(self) -> LancepilotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- the endpoint ------------------------------------------------------------------------

    def endpoint(self, workspace: str, contact: str) -> str:
        ws = check_uuid(workspace, "workspace")
        ct = check_uuid(contact, "contact")
        return f"{self.base_url}/workspaces/{ws}/contacts/{ct}/messages/audio"

    def send_audio(self, workspace: str, contact: str, file_or_url: str | Path, *,
                   filename: str | None = None, content_type: str | None = None,
                   on_wait: Callable[[float, SendError], None] | None = None) -> SentMessage:
        """Send one audio message; retry only what definitely was not created.

        ``file_or_url``: a path (uploaded as multipart field ``file``, streamed from disk) or an
        http(s) URL (sent as JSON). Returns the created message; raises a :class:`SendError`
        subclass otherwise (``GaveUp`` after the retry bound).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                msg = self.send_once(workspace, contact, file_or_url, filename=filename,
                                     content_type=content_type)
                return SentMessage(data=msg.data, status=msg.status, attempts=attempt)
            except SendError as exc:
                if not exc.retryable:
                    raise
                if attempt >= self.retry.attempts:
                    raise GaveUp(f"not sent after {attempt} attempts: {exc}", status=exc.status,
                                 retry_after=exc.retry_after) from exc
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    wait = min(exc.retry_after, self.retry.retry_after_cap) + self._rng.uniform(0, 0.25)
                else:
                    wait = self.retry.backoff(attempt, self._rng)
                log.info("not sent (%s); waiting %.1f s before attempt %d", exc, wait, attempt + 1)
                if on_wait:
                    on_wait(wait, exc)
                self._sleep(wait)

    def send_once(self, workspace: str, contact: str, file_or_url: str | Path, *,
                  filename: str | None = None, content_type: str | None = None) -> SentMessage:
        """Exactly one request (plus same-request 307/308 redirects); no retries."""
        url = self.endpoint(workspace, contact)
        source = str(file_or_url)
        is_url = isinstance(file_or_url, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source)
        if is_url:
            if urlparse(source).scheme not in ("http", "https"):
                raise UsageError(f"{source!r}: only http(s) URLs can be sent by URL")
            return self._post(url, lambda: {"json": {"file": source}})
        path = Path(file_or_url)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        name = filename or path.name
        ctype = content_type or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")

        def body() -> dict[str, Any]:
            fh = open(path, "rb")
            enc = MultipartEncoder(fields={"file": (name, fh, ctype)})
            return {"data": enc, "headers": {"Content-Type": enc.content_type}, "_file": fh}

        return self._post(url, body)

    def check_token(self, workspace: str, contact: str) -> TokenCheck:
        """Learn whether the server takes the token, with one request that cannot create a message.

        It is a POST to the audio endpoint of ``workspace``/``contact`` whose JSON body is ``{}``:
        the API's rule makes ``file`` required, and Laravel checks the token (middleware) before it
        validates, so the answer is 401 for a wrong token and 422 "The file field is required." for
        a good one (docs/api.md §1). Exactly one request, never retried; a 429, a 5xx or a broken
        connection gives no verdict. A server that answers 2xx to it is not the API audiopipe was
        written for: that is a :class:`UsageError`, and the caller must send nothing more.
        """
        url = self.endpoint(workspace, contact)
        started = time.perf_counter()
        try:
            made = self._post(url, lambda: {"data": b"{}", "headers": {"Content-Type": "application/json"}})
        except AuthError as exc:
            return TokenCheck(False, exc.status, time.perf_counter() - started,
                              f"{exc}; found out before preparing anything, nothing was sent")
        except SendError as exc:
            took = time.perf_counter() - started
            if exc.status == 422:
                return TokenCheck(True, 422, took, "the token was accepted (an empty request is refused "
                                                   "with 422, as it must be)")
            return TokenCheck(None, exc.status, took, f"could not check the token: {exc}")
        finally:
            # The upload comes after the encode, maybe minutes later: an idle connection the server
            # closes just as the file goes out would make its outcome unknown. Start afresh then.
            self.session.close()
        raise UsageError(f"the server at {self.origin} answered {made.status} to a request without a file, "
                         "which the Lancepilot API refuses (422): it is not the API audiopipe knows"
                         + (f", and it may have created message {made.id}" if made.id else "")
                         + f"; check the base URL ({self.base_url}). Nothing more was sent")

    # -- one request, every answer typed ----------------------------------------------------------

    def _post(self, url: str, make_body: Callable[[], dict[str, Any]]) -> SentMessage:
        target = check_url(url, base=False)  # built from the checked base URL and two UUIDs
        for _hop in range(MAX_REDIRECTS + 1):
            if target.origin != self.origin:  # _follow never lets this happen; the token depends on it
                raise RefusedError(f"refusing to send to {target.origin}, not the configured {self.origin}")
            kwargs = make_body()
            fh = kwargs.pop("_file", None)
            headers = dict(kwargs.pop("headers", {}))
            headers["Authorization"] = f"Bearer {self._token}"
            log.debug("POST %s", target)
            started = time.monotonic()
            try:
                resp = self.session.post(str(target), headers=headers, allow_redirects=False,
                                         timeout=(self.connect_timeout, self.read_timeout), **kwargs)
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.InvalidHeader):
                # raised before any connection, and sending again would not change it
                raise RefusedError(f"the request to {target.origin} could not be built (an invalid address "
                                   "or header); nothing was sent") from None
            except requests.exceptions.RequestException as exc:
                failed = self._transport_error(exc, target)
                _log_answer(target, started, None, failed)
                raise failed from None
            finally:
                if fh is not None:
                    fh.close()
            if resp.status_code in (307, 308) and resp.headers.get("Location"):
                resp.close()
                _log_answer(target, started, resp.status_code, "redirect")
                target = self._follow(target, resp.status_code, resp.headers["Location"])
                log.info("redirected to %s", target)
                continue
            try:
                sent = self._result(resp, target)
            except SendError as exc:
                _log_answer(target, started, resp.status_code, exc)
                raise
            _log_answer(target, started, resp.status_code, f"message {sent.id or '(no id)'}")
            return sent
        raise RefusedError(f"too many redirects (last: {target.path})", status=None)

    def _follow(self, current: CheckedURL, status: int, location: str) -> CheckedURL:
        """Where a 307/308 of the POST may go: the same origin only (same scheme, host and port).

        A redirect answer creates nothing, so refusing to follow it is a definite "not created".
        Another origin never gets the upload (nor the token), and its answer is never taken for
        the API's: an https API that redirects to http, or to another host, is misconfigured or
        compromised, and the user must look.
        """
        try:
            new = resolve_redirect(current, location)
        except AmbiguousURL as exc:
            raise RefusedError(f"the server answered {status} redirecting the upload to an address audiopipe "
                               f"will not follow ({exc}); nothing was sent there, check the base URL "
                               f"({self.base_url})", status=status) from None
        if new.origin != self.origin:
            downgrade = " (down from https to plain http)" if (self.origin.scheme, new.origin.scheme) == (
                "https", "http") else ""
            raise RefusedError(f"the server answered {status} redirecting the upload to another origin, "
                               f"{new.origin}{downgrade}; not followed, nothing was sent there: check the "
                               f"base URL ({self.base_url})", status=status)
        return new

    def _describe_location(self, current: CheckedURL, location: str) -> str:
        """Where a redirect points, for a message: a path on this origin, else the other origin
        alone (a query string may hold a signature or a token, and is never shown)."""
        try:
            new = resolve_redirect(current, location)
        except AmbiguousURL:
            return "an ambiguous address"
        return (new.path or "/") if new.origin == self.origin else str(new.origin)

    @staticmethod
    def _may_carry_token(origin: str, target: str) -> bool:
        """The token goes only to the configured origin: same scheme, host and port."""
        try:
            return check_url(origin, base=False).origin == check_url(target, base=False).origin
        except AmbiguousURL:
            return False

    def _transport_error(self, exc: requests.exceptions.RequestException, url: CheckedURL) -> SendError:
        """One plain line (no Python class names) that says whether anything may have been sent."""
        chain = _exception_chain(exc)
        reason = _nothing_sent_reason(exc, chain, url.origin, self.connect_timeout)
        if reason is not None:
            failed = ConnectFailed(f"{reason}; nothing was sent")
            tls = _first(chain, ssl.SSLError)
            # a certificate or protocol mismatch does not mend in seconds: say so now, not after retries
            failed.retryable = tls is None
            return failed
        return OutcomeUnknown(f"{_mid_request_reason(exc, chain, url.origin.netloc)}; the message may have "
                              "been created")

    def _result(self, resp: requests.Response, target: CheckedURL) -> SentMessage:
        status = resp.status_code
        body = _json(resp)
        server_msg = str(body.get("message") or resp.reason or "").strip()
        if 200 <= status < 300:
            data = body.get("data")
            return SentMessage(data=data if isinstance(data, dict) else {}, status=status)
        if status == 401:
            raise AuthError(f"the server refused the token (401 Unauthenticated): check {self.token_source}",
                            status=status)
        if status == 429:
            wait = parse_retry_after(resp.headers.get("Retry-After"), cap=self.retry.retry_after_cap)
            raise RateLimited(f"rate limited (429){f', retry after {wait:.0f} s' if wait is not None else ''}",
                              status=status, retry_after=wait)
        if status == 422:
            errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
            detail = "; ".join(f"{k}: {' '.join(map(str, v if isinstance(v, list) else [v]))}"
                               for k, v in errors.items()) or server_msg
            raise RefusedError(f"refused by the server (422): {detail}", status=status,
                               errors={k: list(v) if isinstance(v, list) else [str(v)] for k, v in errors.items()})
        if status == 404:
            raise RefusedError("the workspace or contact was not found (404); check the UUIDs, and that "
                               f"the base URL ({self.base_url}) ends in /api/v3", status=status)
        if status == 413:
            raise RefusedError("the file is too large for the server (413): lower --max-size", status=status)
        if status >= 500:
            raise OutcomeUnknown(f"server error {status}; the message may have been created", status=status)
        if 300 <= status < 400:
            location = resp.headers.get("Location")
            where = self._describe_location(target, location) if location else "nowhere (no Location)"
            raise RefusedError(f"the server answered {status} redirecting to {where}: fix the base URL",
                               status=status)
        raise RefusedError(f"refused by the server ({status}): {server_msg}", status=status)
