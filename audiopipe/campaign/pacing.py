"""One pace for every worker of a batch, and the pause a 429 puts on all of them.

:class:`RateLimiter` hands out send slots ``1/rate`` apart across threads; a 429 pauses every worker
for its Retry-After (they resume spread over a moment, not all at once into the same limit).
:class:`SharedPacer` is the :class:`~audiopipe.send.retry.Pacer` a batch's send loop runs under: it
waits for a slot, pauses everyone on a 429, backs off alone after a connection failure, and gives up
as soon as the run's stop event is set.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from audiopipe.errors import SendError
from audiopipe.send.answers import Outcome, outcome_of
from audiopipe.send.retry import RetryPolicy


class RateLimiter:
    """One pace for every worker, plus a shared pause that a 429 sets."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._spread = 0.0
        self._rng = random.Random()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            # workers resume spread over a moment, not all at once into the same limit
            self._spread = min(1.0, max(seconds, 0.05) * 0.5)

    def wait(self, stop: threading.Event) -> bool:
        """Block until this worker may send; False if the run was stopped meanwhile."""
        while True:
            with self._lock:
                now = self._clock()
                booked = now >= self._paused_until
                if booked:
                    slot = max(now, self._next)
                    self._next = slot + self.interval
                    delay = slot - now
                else:
                    delay = self._paused_until - now + self._rng.uniform(0, self._spread)
            if delay > 0 and stop.wait(delay):
                return False
            if booked:
                with self._lock:
                    if self._clock() < self._paused_until:
                        continue  # a 429 paused everyone while we waited for our slot
                return not stop.is_set()


class SharedPacer:
    """A batch's pacer: every worker under one :class:`RateLimiter` and one stop event."""

    def __init__(self, limiter: RateLimiter, stop: threading.Event, policy: RetryPolicy,
                 rng: random.Random | None = None) -> None:
        self.limiter = limiter
        self.stop = stop
        self.policy = policy
        self._rng = rng or random.Random()

    def ready(self) -> bool:
        return self.limiter.wait(self.stop)

    def wait_after(self, attempt: int, error: SendError, *, retrying: bool) -> bool:
        if outcome_of(error) is Outcome.SLOW_DOWN:
            # every worker waits, not only this one (its next ready() does), even after its last try
            self.limiter.pause(self.policy.delay(attempt, error, self._rng))
            return True
        return not retrying or not self.stop.wait(self.policy.delay(attempt, error, self._rng))
