"""One send loop for every sender: request, read the outcome, wait as the pacer says, request again.

Only what was definitely not created is sent again (docs/api.md §5); which of those outcomes a
caller retries, and how it waits, are its own: ``send`` sleeps in its thread and leaves a TLS
mismatch alone, a batch's workers share one pace and one 429 pause (see
:mod:`audiopipe.campaign.pacing`) and treat a TLS failure like any connection failure.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from audiopipe.errors import GaveUp, SendError
from audiopipe.send.answers import RETRY_AFTER_CAP, Outcome, SentMessage, outcome_of

log = logging.getLogger(__name__)

# What a send retries by default: the server asked to slow down, or the request never left.
RETRIED = frozenset({Outcome.SLOW_DOWN, Outcome.RETRY})


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

    def delay(self, attempt: int, error: SendError, rng: random.Random) -> float:
        """How long to wait after ``attempt`` ended in ``error``: the server's Retry-After (capped)
        when it gave one, else the backoff."""
        if error.retry_after is not None:
            return min(error.retry_after, self.retry_after_cap)
        return self.backoff(attempt, rng)


class Pacer(Protocol):
    """When a sender may make its next request."""

    def ready(self) -> bool:
        """Block until a request may go; False when the sender was stopped meanwhile (send nothing)."""

    def wait_after(self, attempt: int, error: SendError, *, retrying: bool) -> bool:
        """``attempt`` ended in ``error``, definitely not created. When ``retrying``, wait until the
        next request may go; False when the sender was stopped meanwhile. Called on the last attempt
        too, where a pacer shared by several senders may still act (a 429 pauses them all)."""


class SendStopped(SendError):
    """The pacer said stop before the next request: nothing more was sent. ``attempts`` requests
    had gone out before (each definitely not created)."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


def send_with_retries(request: Callable[[], SentMessage], pacer: Pacer, *, attempts: int,
                      retried: frozenset[Outcome] = RETRIED) -> SentMessage:
    """``request()`` until it creates a message, at most ``attempts`` times (at least once).

    An outcome not in ``retried`` is raised as it came (unknown, refused, 401...); running out of
    attempts, or a pacer that stops while waiting to retry, raises :class:`GaveUp` from the last
    error; a pacer that stops before a request raises :class:`SendStopped`.
    """
    attempt = 0
    while True:
        attempt += 1
        if not pacer.ready():
            raise SendStopped("stopped before sending", attempts=attempt - 1)
        try:
            msg = request()
        except SendError as exc:
            if outcome_of(exc) not in retried:
                raise
            again = attempt < attempts
            if not pacer.wait_after(attempt, exc, retrying=again) or not again:
                raise GaveUp(f"not sent after {attempt} attempts: {exc}", status=exc.status,
                             retry_after=exc.retry_after) from exc
            continue
        return dataclasses.replace(msg, attempts=attempt)


class SleepPacer:
    """One sender on its own: every request may go at once; a retry sleeps the policy's delay
    (Retry-After plus up to 0.25 s of jitter, or the backoff)."""

    def __init__(self, policy: RetryPolicy, rng: random.Random, *, sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[float, SendError], None] | None = None) -> None:
        self.policy = policy
        self._rng = rng
        self._sleep = sleep
        self._on_wait = on_wait

    def ready(self) -> bool:
        return True

    def wait_after(self, attempt: int, error: SendError, *, retrying: bool) -> bool:
        if not retrying:
            return True
        wait = self.policy.delay(attempt, error, self._rng)
        if error.retry_after is not None:
            wait += self._rng.uniform(0, 0.25)
        log.info("not sent (%s); waiting %.1f s before attempt %d", error, wait, attempt + 1)
        if self._on_wait:
            self._on_wait(wait, error)
        self._sleep(wait)
        return True
