"""What one request came to, read without side effects: docs/api.md §5 as code.

Two readings, both pure (no session, no clock but Retry-After's, nothing sent):

- :func:`read_answer` turns the server's HTTP answer into a :class:`SentMessage` or a typed
  :class:`~audiopipe.errors.SendError`; :func:`read_failure` does the same for a request that got no
  answer (it never left, or broke on the way), saying whether the message may exist.
- :func:`outcome_of` turns either into an :class:`Outcome`: what the sender does next. The API has no
  idempotency key, so only what was definitely not created may be sent again; an unknown outcome
  is sent at most once.

The client (:mod:`audiopipe.send.client`) and the batch's sender act on these; neither decides
what an answer means on its own.
"""

from __future__ import annotations

import email.utils
import enum
import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import requests

from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    GaveUp,
    OutcomeUnknown,
    RateLimited,
    RefusedError,
    SendError,
)
from audiopipe.send.origin import AmbiguousURL, CheckedURL, Origin, resolve_redirect

RETRY_AFTER_CAP = 300.0


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


class Outcome(str, enum.Enum):
    """What a sender does after one request."""

    SENT = "sent"            # created: record its id
    UNKNOWN = "unknown"      # may have been created: never sent again without a person's word
    REFUSED = "refused"      # the server looked and said no (404, 413, 422...): the same again fails too
    STOP = "stop"            # 401: the token is wrong; nothing more may go out
    SLOW_DOWN = "slow_down"  # 429: not created; wait Retry-After (every worker of a batch), then again
    RETRY = "retry"          # the request never left (refused, DNS, connect timeout): back off, again
    NOT_SENT = "not_sent"    # not created, and seconds will not mend it (a TLS mismatch, retries spent)

    def __str__(self) -> str:
        return self.value


def outcome_of(result: SentMessage | SendError) -> Outcome:
    """The :class:`Outcome` of a request's result (see the table in docs/api.md §5)."""
    if isinstance(result, SentMessage):
        return Outcome.SENT
    return _error_outcome(result)


def _error_outcome(error: SendError) -> Outcome:
    if isinstance(error, AuthError):
        return Outcome.STOP
    if error.created is None:  # checked before the rest: at most once for whatever may exist
        return Outcome.UNKNOWN
    if isinstance(error, RateLimited):
        return Outcome.SLOW_DOWN
    if error.retryable:
        return Outcome.RETRY
    return Outcome.NOT_SENT if isinstance(error, (ConnectFailed, GaveUp)) else Outcome.REFUSED


# --- an HTTP answer ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """The parts of an HTTP answer that decide what it means."""

    status: int
    body: dict[str, Any]          # the JSON object the server sent; {} when it sent none
    reason: str = ""              # the status line's text
    retry_after: str | None = None  # the Retry-After header, as sent
    location: str | None = None     # the Location header, as sent

    @classmethod
    def of(cls, resp: requests.Response) -> Answer:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        return cls(resp.status_code, body if isinstance(body, dict) else {}, resp.reason or "",
                   resp.headers.get("Retry-After"), resp.headers.get("Location"))


@dataclass(frozen=True)
class Asked:
    """Where a request went and with what, for the messages its answer is read into."""

    target: CheckedURL            # the URL this answer came from
    origin: Origin                # the configured origin: a redirect elsewhere is shown by origin only
    base_url: str
    token_source: str             # where the token came from, for a 401
    retry_after_cap: float = RETRY_AFTER_CAP


def read_answer(answer: Answer, asked: Asked) -> SentMessage | SendError:
    """The server's answer as a created message or the typed error it means (returned, not raised)."""
    if 200 <= answer.status < 300:
        data = answer.body.get("data")
        return SentMessage(data=data if isinstance(data, dict) else {}, status=answer.status)
    reader = _READERS.get(answer.status)
    if reader is None:
        reader = _server_error if answer.status >= 500 else _redirect if 300 <= answer.status < 400 else _refused
    return reader(answer, asked)


def _unauthenticated(answer: Answer, asked: Asked) -> SendError:
    return AuthError(f"the server refused the token (401 Unauthenticated): check {asked.token_source}",
                     status=answer.status)


def _rate_limited(answer: Answer, asked: Asked) -> SendError:
    wait = parse_retry_after(answer.retry_after, cap=asked.retry_after_cap)
    return RateLimited(f"rate limited (429){f', retry after {wait:.0f} s' if wait is not None else ''}",
                       status=answer.status, retry_after=wait)


def _invalid(answer: Answer, asked: Asked) -> SendError:
    found = answer.body.get("errors")
    errors: dict[str, Any] = found if isinstance(found, dict) else {}
    detail = "; ".join(f"{k}: {' '.join(map(str, v if isinstance(v, list) else [v]))}"
                       for k, v in errors.items()) or _server_message(answer)
    return RefusedError(f"refused by the server (422): {detail}", status=answer.status,
                        errors={k: list(v) if isinstance(v, list) else [str(v)] for k, v in errors.items()})


def _not_found(answer: Answer, asked: Asked) -> SendError:
    return RefusedError("the workspace or contact was not found (404); check the UUIDs, and that "
                        f"the base URL ({asked.base_url}) ends in /api/v3", status=answer.status)


def _too_large(answer: Answer, asked: Asked) -> SendError:
    return RefusedError("the file is too large for the server (413): lower --max-size", status=answer.status)


def _server_error(answer: Answer, asked: Asked) -> SendError:
    return OutcomeUnknown(f"server error {answer.status}; the message may have been created", status=answer.status)


def _redirect(answer: Answer, asked: Asked) -> SendError:
    """A redirect the client did not follow (a 301/302/303, or a 307/308 without a Location)."""
    where = (describe_location(asked.target, answer.location, asked.origin) if answer.location
             else "nowhere (no Location)")
    return RefusedError(f"the server answered {answer.status} redirecting to {where}: fix the base URL",
                        status=answer.status)


def _refused(answer: Answer, asked: Asked) -> SendError:
    return RefusedError(f"refused by the server ({answer.status}): {_server_message(answer)}", status=answer.status)


def _server_message(answer: Answer) -> str:
    return str(answer.body.get("message") or answer.reason or "").strip()


_READERS: dict[int, Callable[[Answer, Asked], SendError]] = {
    401: _unauthenticated, 404: _not_found, 413: _too_large, 422: _invalid, 429: _rate_limited,
}


def describe_location(current: CheckedURL, location: str, origin: Origin) -> str:
    """Where a redirect points, for a message: a path on ``origin``, else the other origin alone
    (a query string may hold a signature or a token, and is never shown)."""
    try:
        new = resolve_redirect(current, location)
    except AmbiguousURL:
        return "an ambiguous address"
    return (new.path or "/") if new.origin == origin else str(new.origin)


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


# --- no answer ---------------------------------------------------------------------------------

def read_failure(exc: requests.exceptions.RequestException, target: CheckedURL,
                 connect_timeout: float) -> SendError:
    """A request that got no answer, in one plain line (no Python class names) that says whether
    anything may have been sent: :class:`ConnectFailed` when it certainly was not (retryable,
    unless a TLS mismatch: that does not mend in seconds), :class:`OutcomeUnknown` otherwise."""
    chain = _exception_chain(exc)
    reason = _nothing_sent_reason(exc, chain, target.origin, connect_timeout)
    if reason is not None:
        failed = ConnectFailed(f"{reason}; nothing was sent")
        failed.retryable = _first(chain, ssl.SSLError) is None
        return failed
    return OutcomeUnknown(f"{_mid_request_reason(exc, chain, target.origin.netloc)}; the message may have "
                          "been created")


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
    from urllib3.exceptions import NewConnectionError

    host = origin.netloc
    lookup = _lookup_failure(chain, origin)
    if lookup is not None:
        return lookup
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


def _lookup_failure(chain: list[BaseException], origin: Origin) -> str | None:
    """Why the host name gave no address, when that is what failed."""
    from urllib3.exceptions import NameResolutionError

    if not _first(chain, NameResolutionError, socket.gaierror):
        return None
    lookup = _first(chain, socket.gaierror)
    if lookup is not None and lookup.errno == socket.EAI_AGAIN:
        return f"could not look up the host name {origin.host} (DNS did not answer)"
    return f"the host name {origin.host} was not found (DNS)"


# What broke once the request may have reached the server, the first match in the chain winning.
_MID_REQUEST: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((ssl.SSLError,), "the TLS connection to {host} broke mid-request"),
    ((ConnectionResetError,), "the connection to {host} was reset mid-request"),
    ((BrokenPipeError,), "{host} closed the connection while the file was being sent"),
    ((http.client.RemoteDisconnected,), "{host} closed the connection without answering"),
    ((requests.exceptions.ChunkedEncodingError, http.client.IncompleteRead), "the answer from {host} was cut off"),
)


def _mid_request_reason(exc: BaseException, chain: list[BaseException], host: str) -> str:
    """What broke once the request may have reached the server."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer from {host} before the read timeout"
    for types, said in _MID_REQUEST:
        if _first(chain, *types):
            return said.format(host=host)
    return f"the connection to {host} failed mid-request"
