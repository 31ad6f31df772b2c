"""The batch's pace (audiopipe.campaign.pacing) on an injected clock: slots 1/rate apart across
workers, the pause a 429 puts on all of them, and a stop that ends every wait."""

from __future__ import annotations

import random
import threading

from audiopipe.campaign.pacing import RateLimiter, SharedPacer
from audiopipe.errors import ConnectFailed, RateLimited
from audiopipe.send.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TickingStop(threading.Event):
    """The run's stop event, whose waits move the injected clock instead of sleeping; it is set
    once the clock passes ``stop_at``."""

    def __init__(self, clock: Clock, stop_at: float | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.stop_at = stop_at
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.now += timeout
        if self.stop_at is not None and self.clock.now >= self.stop_at:
            self.set()
        return self.is_set()


def test_slots_are_one_interval_apart():
    clock = Clock()
    stop = TickingStop(clock)
    limiter = RateLimiter(10.0, clock=clock)
    starts = []
    for _ in range(4):
        assert limiter.wait(stop)
        starts.append(round(clock.now - 1000.0, 6))
    assert starts == [0.0, 0.1, 0.2, 0.3]


def test_no_rate_means_no_wait():
    clock = Clock()
    stop = TickingStop(clock)
    limiter = RateLimiter(0, clock=clock)
    assert all(limiter.wait(stop) for _ in range(100))
    assert stop.waits == [] and clock.now == 1000.0


def test_a_pause_holds_every_worker_then_spreads_them():
    clock = Clock()
    stop = TickingStop(clock)
    limiter = RateLimiter(0, clock=clock)
    limiter.pause(5.0)
    limiter.pause(2.0)  # a shorter pause does not shorten the longer one
    assert limiter.wait(stop)
    assert 1005.0 <= clock.now <= 1005.0 + 1.0  # spread over at most a second


def test_a_stop_ends_the_wait():
    clock = Clock()
    stop = TickingStop(clock, stop_at=1001.0)
    limiter = RateLimiter(0, clock=clock)
    limiter.pause(30.0)
    assert limiter.wait(stop) is False
    stop = TickingStop(clock)
    stop.set()
    assert RateLimiter(0, clock=clock).wait(stop) is False


def test_a_429_pauses_every_worker_even_after_its_senders_last_try():
    clock = Clock()
    stop = TickingStop(clock)
    limiter = RateLimiter(0, clock=clock)
    pacer = SharedPacer(limiter, stop, RetryPolicy(), random.Random(1))
    other = SharedPacer(limiter, stop, RetryPolicy(), random.Random(2))  # another worker, same limiter
    assert pacer.wait_after(5, RateLimited("429", retry_after=7.0), retrying=False)
    assert stop.waits == []  # this worker gives up at once...
    assert other.ready()     # ...and the next worker's request waits out the pause
    assert clock.now >= 1007.0


def test_a_connection_failure_backs_off_alone_and_stops_with_the_run():
    clock = Clock()
    stop = TickingStop(clock)
    limiter = RateLimiter(0, clock=clock)
    pacer = SharedPacer(limiter, stop, RetryPolicy(base=1.0, cap=1.0), random.Random(1))
    assert pacer.wait_after(1, ConnectFailed("refused"), retrying=True)
    assert len(stop.waits) == 1 and 0 <= stop.waits[0] <= 1.0
    assert pacer.wait_after(2, ConnectFailed("refused"), retrying=False) and len(stop.waits) == 1
    start = clock.now
    assert pacer.ready() and clock.now == start  # nobody else was paused
    stop.set()
    assert pacer.wait_after(3, ConnectFailed("refused"), retrying=True) is False
    assert pacer.ready() is False
