"""docs/api.md §5 as a table: every HTTP answer and every failed request read into a typed result and
an outcome, by the pure functions of audiopipe.send.answers (no client, no server)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    GaveUp,
    OutcomeUnknown,
    RateLimited,
    RefusedError,
    SendError,
    TokenRefused,
)
from audiopipe.send.answers import Answer, Asked, Outcome, SentMessage, outcome_of, read_answer, read_failure
from audiopipe.send.origin import check_url

BASE = "https://api.example.com/api/v3"
TARGET = check_url(f"{BASE}/workspaces/w/contacts/c/messages/audio", base=False)
ASKED = Asked(TARGET, TARGET.origin, BASE, "LANCEPILOT_TOKEN", retry_after_cap=300.0)


# status, body, headers -> the type read, created (False: definitely not; None: may be), outcome, words it says
ANSWERS: list[tuple[int, dict[str, Any], dict[str, str], type, bool | None, Outcome, tuple[str, ...]]] = [
    (201, {"data": {"id": 42}}, {}, SentMessage, True, Outcome.SENT, ()),
    (200, {"data": "not an object"}, {}, SentMessage, True, Outcome.SENT, ()),
    (401, {"message": "Unauthenticated."}, {}, AuthError, False, Outcome.STOP, ("401", "LANCEPILOT_TOKEN")),
    (404, {"message": "Resource not found."}, {}, RefusedError, False, Outcome.REFUSED, ("404", BASE, "/api/v3")),
    (413, {}, {}, RefusedError, False, Outcome.REFUSED, ("413", "--max-size")),
    (422, {"message": "Validation error", "errors": {"file": ["The file failed to upload."]}}, {},
     RefusedError, False, Outcome.REFUSED, ("422", "file: The file failed to upload.")),
    (422, {"message": "Validation error", "errors": None}, {}, RefusedError, False, Outcome.REFUSED,
     ("422", "Validation error")),
    (429, {}, {"retry_after": "7"}, RateLimited, False, Outcome.SLOW_DOWN, ("429", "retry after 7 s")),
    (429, {}, {}, RateLimited, False, Outcome.SLOW_DOWN, ("429",)),
    (500, {}, {}, OutcomeUnknown, None, Outcome.UNKNOWN, ("500", "may have been created")),
    (502, {}, {}, OutcomeUnknown, None, Outcome.UNKNOWN, ("502",)),
    (301, {}, {"location": "/api/v4/x?sig=secret"}, RefusedError, False, Outcome.REFUSED, ("301", "/api/v4/x")),
    (302, {}, {"location": "http://evil.example/x?token=t"}, RefusedError, False, Outcome.REFUSED,
     ("302", "http://evil.example")),
    (307, {}, {}, RefusedError, False, Outcome.REFUSED, ("307", "no Location")),
    (400, {"message": "Bad request"}, {}, RefusedError, False, Outcome.REFUSED, ("400", "Bad request")),
    (418, {}, {}, RefusedError, False, Outcome.REFUSED, ("418", "I'm a teapot")),
]


@pytest.mark.parametrize(("status", "body", "headers", "kind", "created", "outcome", "said"), ANSWERS)
def test_every_answer_is_read_into_one_type_and_outcome(status, body, headers, kind, created, outcome, said):
    reason = "I'm a teapot" if status == 418 else ""
    read = read_answer(Answer(status, body, reason, **headers), ASKED)
    assert type(read) is kind
    assert outcome_of(read) is outcome
    if isinstance(read, SendError):
        assert read.created is created and read.status == status
        assert all(word in str(read) for word in said), str(read)
        assert "secret" not in str(read) and "token=t" not in str(read)  # a Location's query is never shown
    else:
        assert read.status == status and read.id == ("42" if status == 201 else None)


def test_a_429_carries_its_retry_after_capped():
    read = read_answer(Answer(429, {}, retry_after="100000"), ASKED)
    assert isinstance(read, RateLimited) and read.retry_after == 300.0 and read.retryable
    assert read_answer(Answer(429, {}, retry_after="soon"), ASKED).retry_after is None


def test_a_422_keeps_the_servers_errors_by_field():
    read = read_answer(Answer(422, {"errors": {"file": ["a", "b"], "other": "c"}}), ASKED)
    assert isinstance(read, RefusedError)
    assert read.errors == {"file": ["a", "b"], "other": ["c"]}


# the outcome of each error type, whichever way it was made
OUTCOMES: list[tuple[SendError, Outcome]] = [
    (AuthError("401"), Outcome.STOP),
    (TokenRefused("401 before any work"), Outcome.STOP),
    (OutcomeUnknown("reset mid-request"), Outcome.UNKNOWN),
    (RateLimited("429", retry_after=2.0), Outcome.SLOW_DOWN),
    (ConnectFailed("connection refused"), Outcome.RETRY),
    (GaveUp("not sent after 5 attempts"), Outcome.NOT_SENT),
    (RefusedError("422"), Outcome.REFUSED),
    (SendError("anything else definite"), Outcome.REFUSED),
]


@pytest.mark.parametrize(("error", "outcome"), OUTCOMES, ids=lambda v: type(v).__name__)
def test_the_outcome_of_each_error(error, outcome):
    assert outcome_of(error) is outcome


def test_a_tls_mismatch_is_not_sent_but_not_worth_retrying_at_once():
    failed = ConnectFailed("the TLS handshake failed; nothing was sent")
    failed.retryable = False
    assert outcome_of(failed) is Outcome.NOT_SENT


def test_whatever_may_exist_is_unknown_before_anything_else():
    """At most once: an error that may have created the message is never retried, whatever its type says."""
    odd = RateLimited("a 429 that may have been created")
    odd.created = None
    assert outcome_of(odd) is Outcome.UNKNOWN


def test_a_refused_connection_is_read_as_nothing_sent():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = check_url(f"http://127.0.0.1:{port}/api/v3/x", base=False)
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        requests.post(str(url), timeout=5)
    read = read_failure(info.value, url, connect_timeout=5)
    assert isinstance(read, ConnectFailed) and read.retryable and read.created is False
    assert outcome_of(read) is Outcome.RETRY
    assert "connection refused" in str(read) and "nothing was sent" in str(read)


def test_a_read_timeout_is_read_as_unknown():
    url = check_url("http://127.0.0.1:1/api/v3/x", base=False)
    read = read_failure(requests.exceptions.ReadTimeout("read timed out"), url, connect_timeout=5)
    assert isinstance(read, OutcomeUnknown) and outcome_of(read) is Outcome.UNKNOWN
    assert "no answer from 127.0.0.1:1 before the read timeout" in str(read)
