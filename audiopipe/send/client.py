"""The Lancepilot API client: one audio message per call, every outcome typed.

docs/api.md §5 decides everything here. The API has no idempotency key, so a request is repeated only
when the message was definitely not created: connection failures before anything was sent, and 429.
Every other outcome gets exactly one request. A read timeout, a reset or a 5xx is *unknown*: the
message may exist, and resending could reach the customer twice.

This module makes the requests (the session, the endpoint, the upload, same-origin redirects); what
an answer means is read in :mod:`audiopipe.send.answers`, the retry loop is
:mod:`audiopipe.send.retry`, where the token comes from is :mod:`audiopipe.send.tokens`, and where
it may go is :mod:`audiopipe.send.origin`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from requests_toolbelt import MultipartEncoder

from audiopipe.errors import AuthError, RefusedError, SendError, TokenRefused, UsageError, setting
from audiopipe.preparation.formats import FORMATS
from audiopipe.send.answers import (
    RETRY_AFTER_CAP,
    Answer,
    Asked,
    SentMessage,
    parse_retry_after,
    read_answer,
    read_failure,
)
from audiopipe.send.by_url import redact_file_url, redact_urls_in
from audiopipe.send.origin import AmbiguousURL, CheckedURL, check_url, redact, resolve_redirect
from audiopipe.send.retry import RetryPolicy, SleepPacer, send_with_retries
from audiopipe.send.tokens import TOKEN_FILE_LIMIT, load_token, token_setting

__all__ = [  # the names callers import from here; the token, answer and retry rules live in their own modules
    "CONTENT_TYPES", "DEFAULT_BASE_URL", "MAX_REDIRECTS", "RETRY_AFTER_CAP", "TOKEN_FILE_LIMIT", "USER_AGENT",
    "LancepilotClient", "RetryPolicy", "SentMessage", "TokenCheck", "check_uuid", "configured_base_url",
    "load_token", "parse_base_url", "parse_retry_after", "token_setting",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://lancepilot.com/api/v3"
USER_AGENT = "audiopipe/0.1 (+https://pypi.org/project/audiopipe)"
MAX_REDIRECTS = 3

CONTENT_TYPES = {f".{fmt.extension}": fmt.content_type for fmt in FORMATS.values()}
CONTENT_TYPES[".opus"] = "audio/ogg"


def check_uuid(value: str, field: str) -> str:
    """``value`` as a canonical UUID; a :class:`UsageError` about the setting ``field`` (``workspace``,
    ``contact``) when it is not one."""
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise UsageError(f"{setting(field)} {value!r} is not a UUID (like 0b7e4f9c-1d2a-4c7e-9a51-3f0d2c8b6e11)",
                         field=field) from None


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
             (time.monotonic() - started) * 1000, redact_urls_in(str(outcome)))


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

    def __init__(self, token: str | None = None, base_url: str | None = None, *,  # noqa: PLR0913 - the public settings, each a keyword with a default
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
        pacer = SleepPacer(self.retry, self._rng, sleep=self._sleep, on_wait=on_wait)
        return send_with_retries(lambda: self.send_once(workspace, contact, file_or_url, filename=filename,
                                                        content_type=content_type),
                                 pacer, attempts=self.retry.attempts)

    def send_once(self, workspace: str, contact: str, file_or_url: str | Path, *,
                  filename: str | None = None, content_type: str | None = None) -> SentMessage:
        """Exactly one request (plus same-request 307/308 redirects); no retries."""
        url = self.endpoint(workspace, contact)
        source = str(file_or_url)
        is_url = isinstance(file_or_url, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source)
        if is_url:
            if urlparse(source).scheme not in ("http", "https"):
                raise UsageError(f"{redact_file_url(source)!r}: only http(s) URLs can be sent by URL")
            try:
                return self._post(url, lambda: {"json": {"file": source}})
            except SendError as exc:  # a server quoting the URL it could not fetch: never its signature
                exc.args = tuple(redact_urls_in(a) if isinstance(a, str) else a for a in exc.args)
                raise
        path = Path(file_or_url)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        name = filename or path.name
        ctype = content_type or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")

        def body() -> dict[str, Any]:
            fh = open(path, "rb")  # noqa: SIM115 - streamed by the request, closed by _post once it is sent
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
                failed = read_failure(exc, target, self.connect_timeout)
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
            read = read_answer(Answer.of(resp), Asked(target, self.origin, self.base_url, self.token_source,
                                                      self.retry.retry_after_cap))
            if isinstance(read, SendError):
                _log_answer(target, started, resp.status_code, read)
                raise read
            _log_answer(target, started, resp.status_code, f"message {read.id or '(no id)'}")
            return read
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

    @staticmethod
    def _may_carry_token(origin: str, target: str) -> bool:
        """The token goes only to the configured origin: same scheme, host and port."""
        try:
            return check_url(origin, base=False).origin == check_url(target, base=False).origin
        except AmbiguousURL:
            return False
