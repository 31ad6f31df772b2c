"""The Lancepilot API client: one audio message per call, every outcome typed.

REFERENCE §5 decides everything here. The API has no idempotency key, so a request is repeated only
when the message was definitely not created: connection failures before anything was sent, and 429.
Every other outcome gets exactly one request. A read timeout, a reset or a 5xx is *unknown*: the
message may exist, and resending could reach the customer twice.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlparse

import requests
from requests_toolbelt import MultipartEncoder

from .errors import (AuthError, ConnectFailed, GaveUp, OutcomeUnknown, RateLimited, RefusedError,
                     SendError, UsageError)
from .formats import FORMATS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://lancepilot.com/api/v3"
USER_AGENT = "audiopipe/0.1 (+https://pypi.org/project/audiopipe)"
RETRY_AFTER_CAP = 300.0
MAX_REDIRECTS = 3

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
        try:
            token = Path(path).expanduser().read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        if not token:
            raise UsageError(f"{source} is empty: put the API token in it")
    token = (token or "").strip()
    if not token:
        raise UsageError("no API token: set LANCEPILOT_TOKEN, or give --token-file / LANCEPILOT_TOKEN_FILE")
    # An HTTP header carries printable ASCII only; a pasted zero-width space or emoji would fail
    # mid-request. Refuse it here, before anything is recorded or sent.
    if not all(33 <= ord(c) < 127 for c in token):
        raise UsageError(f"{source} holds characters a token cannot have (spaces, accents, invisible "
                         "or non-ASCII characters); copy it again")
    return token, source


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


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _caused_by_connect(exc: BaseException) -> bool:
    """True when requests failed before a connection existed (so nothing was sent)."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (NewConnectionError, ConnectTimeoutError, NameResolutionError,
                          requests.exceptions.ConnectTimeout)):
            return True
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return False


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
        self.base_url = (base_url or os.environ.get("LANCEPILOT_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        parsed = urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"base URL {self.base_url!r} must look like https://host/api/v3")
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname) and not allow_insecure_http:
            raise UsageError(f"refusing to send the token over plain http to {parsed.hostname}; use https "
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
        self.session.trust_env = not _is_loopback(parsed.hostname)

    def __repr__(self) -> str:  # never the token
        return f"LancepilotClient(base_url={self.base_url!r}, token=<hidden>)"

    def __enter__(self) -> "LancepilotClient":
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

    # -- one request, every answer typed ----------------------------------------------------------

    def _post(self, url: str, make_body: Callable[[], dict[str, Any]]) -> SentMessage:
        target = url
        for _hop in range(MAX_REDIRECTS + 1):
            kwargs = make_body()
            fh = kwargs.pop("_file", None)
            headers = dict(kwargs.pop("headers", {}))
            if self._may_carry_token(url, target):
                headers["Authorization"] = f"Bearer {self._token}"
            log.debug("POST %s", target)
            try:
                resp = self.session.post(target, headers=headers, allow_redirects=False,
                                         timeout=(self.connect_timeout, self.read_timeout), **kwargs)
            except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL,
                    requests.exceptions.MissingSchema) as exc:
                # raised before any connection: nothing was sent
                raise RefusedError(f"cannot send to {target}: {type(exc).__name__}") from None
            except requests.exceptions.RequestException as exc:
                raise self._transport_error(exc, target) from None
            finally:
                if fh is not None:
                    fh.close()
            if resp.status_code in (307, 308) and resp.headers.get("Location"):
                target = urljoin(target, resp.headers["Location"])
                resp.close()
                log.info("redirected to %s", target)
                continue
            return self._result(resp)
        raise RefusedError(f"too many redirects (last: {target})", status=None)

    @staticmethod
    def _may_carry_token(origin: str, target: str) -> bool:
        """The token goes only to the configured host, and never down to plain http."""
        o, t = urlparse(origin), urlparse(target)
        if (t.hostname, t.port) != (o.hostname, o.port):
            return False
        return not (o.scheme == "https" and t.scheme != "https")

    @staticmethod
    def _transport_error(exc: requests.exceptions.RequestException, url: str) -> SendError:
        host = urlparse(url).netloc
        if _caused_by_connect(exc):
            return ConnectFailed(f"could not connect to {host}: {type(exc).__name__}; nothing was sent")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return OutcomeUnknown(f"no answer from {host} before the read timeout; the message may "
                                  "have been created")
        return OutcomeUnknown(f"the connection to {host} failed mid-request ({type(exc).__name__}); "
                              "the message may have been created")

    def _result(self, resp: requests.Response) -> SentMessage:
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
            raise RefusedError(f"the server answered {status} redirecting to "
                               f"{resp.headers.get('Location', '?')}: fix the base URL", status=status)
        raise RefusedError(f"refused by the server ({status}): {server_msg}", status=status)
