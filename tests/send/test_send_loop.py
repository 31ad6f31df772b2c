"""The one send loop (audiopipe.send.retry) that the client and the batch share: what it retries,
how it asks its pacer, when it gives up. The requests here are scripted answers: the loop is what
is under test (the real client and the real batch run through it in test_client and test_batch)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from audiopipe.errors import AuthError, ConnectFailed, GaveUp, OutcomeUnknown, RateLimited, SendError
from audiopipe.send.answers import Outcome, SentMessage
from audiopipe.send.retry import RETRIED, RetryPolicy, SendStopped, SleepPacer, send_with_retries


def scripted(*answers: SentMessage | SendError) -> tuple[Callable[[], SentMessage], list[int]]:
    """A request that gives ``answers`` in turn, and the list of requests it was asked for."""
    made: list[int] = []

    def request() -> SentMessage:
        made.append(len(made) + 1)
        answer = answers[len(made) - 1]
        if isinstance(answer, SendError):
            raise answer
        return answer

    return request, made


class Pacer:
    """Says yes (or no, from a given call on), and records how it was asked."""

    def __init__(self, stop_ready_at: int | None = None, stop_waiting: bool = False) -> None:
        self.readies = 0
        self.waits: list[tuple[int, str, bool]] = []
        self.stop_ready_at = stop_ready_at
        self.stop_waiting = stop_waiting

    def ready(self) -> bool:
        self.readies += 1
        return self.stop_ready_at is None or self.readies < self.stop_ready_at

    def wait_after(self, attempt: int, error: SendError, *, retrying: bool) -> bool:
        self.waits.append((attempt, type(error).__name__, retrying))
        return not self.stop_waiting


CREATED = SentMessage({"id": "m1"})


def test_not_created_is_sent_again_until_it_is():
    request, made = scripted(RateLimited("429", retry_after=1.0), ConnectFailed("refused"), CREATED)
    pacer = Pacer()
    msg = send_with_retries(request, pacer, attempts=5)
    assert msg.id == "m1" and msg.attempts == 3 and len(made) == 3
    assert pacer.readies == 3
    assert pacer.waits == [(1, "RateLimited", True), (2, "ConnectFailed", True)]


@pytest.mark.parametrize("error", [OutcomeUnknown("reset"), AuthError("401")], ids=["unknown", "401"])
def test_unknown_and_401_get_exactly_one_request(error):
    request, made = scripted(error, CREATED)
    pacer = Pacer()
    with pytest.raises(type(error)):
        send_with_retries(request, pacer, attempts=5)
    assert made == [1] and pacer.waits == []


def test_running_out_of_attempts_gives_up_from_the_last_error_and_still_tells_the_pacer():
    last = RateLimited("429 again", retry_after=3.0)
    request, made = scripted(RateLimited("429", retry_after=3.0), last)
    pacer = Pacer()
    with pytest.raises(GaveUp) as info:
        send_with_retries(request, pacer, attempts=2)
    assert info.value.__cause__ is last and info.value.created is False
    assert str(info.value) == "not sent after 2 attempts: 429 again" and info.value.retry_after == 3.0
    assert len(made) == 2
    # the last 429 is told too (a shared pacer pauses every worker), but not as a wait before another try
    assert pacer.waits == [(1, "RateLimited", True), (2, "RateLimited", False)]


def test_one_attempt_at_least():
    request, made = scripted(ConnectFailed("refused"))
    with pytest.raises(GaveUp, match="after 1 attempts"):
        send_with_retries(request, Pacer(), attempts=0)
    assert made == [1]


def test_a_pacer_that_stops_before_a_request_sends_nothing_more():
    request, made = scripted(ConnectFailed("refused"), CREATED)
    with pytest.raises(SendStopped) as info:
        send_with_retries(request, Pacer(stop_ready_at=2), attempts=5)
    assert made == [1] and info.value.attempts == 1 and info.value.created is False
    with pytest.raises(SendStopped) as info:
        send_with_retries(scripted(CREATED)[0], Pacer(stop_ready_at=1), attempts=5)
    assert info.value.attempts == 0


def test_a_pacer_that_stops_while_waiting_gives_up_at_once():
    request, made = scripted(ConnectFailed("refused"), CREATED)
    with pytest.raises(GaveUp, match="not sent after 1 attempts: refused"):
        send_with_retries(request, Pacer(stop_waiting=True), attempts=5)
    assert made == [1]


def test_which_outcomes_are_retried_is_the_callers():
    tls = ConnectFailed("the TLS handshake failed")
    tls.retryable = False  # docs/api.md §5: send does not retry it, a batch does
    request, made = scripted(tls, CREATED)
    with pytest.raises(ConnectFailed):
        send_with_retries(request, Pacer(), attempts=5)
    assert made == [1]
    request, made = scripted(tls, CREATED)
    assert send_with_retries(request, Pacer(), attempts=5, retried=RETRIED | {Outcome.NOT_SENT}).attempts == 2


def test_the_policy_waits_retry_after_capped_else_a_jittered_backoff():
    policy = RetryPolicy(base=0.5, cap=4.0, retry_after_cap=60.0)
    rng = random.Random(3)
    assert policy.delay(1, RateLimited("429", retry_after=7.0), rng) == 7.0
    assert policy.delay(1, RateLimited("429", retry_after=600.0), rng) == 60.0
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.delay(attempt, ConnectFailed("refused"), rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits) and max(waits) > ceiling / 2


def test_the_sleep_pacer_sleeps_only_between_requests():
    slept: list[float] = []
    told: list[tuple[float, SendError]] = []
    pacer = SleepPacer(RetryPolicy(), random.Random(1), sleep=slept.append, on_wait=lambda w, e: told.append((w, e)))
    limited = RateLimited("429", retry_after=2.0)
    assert pacer.ready()
    assert pacer.wait_after(1, limited, retrying=True)
    assert 2.0 <= slept[0] <= 2.25 and told == [(slept[0], limited)]  # Retry-After plus a little jitter
    assert pacer.wait_after(2, limited, retrying=False) and len(slept) == 1  # no sleep before giving up
