"""Misbehaviour on purpose (:class:`~audiopipe.sandbox.config.Faults`): added latency, a 500 before
anything is stored, 429s (drawn, over a requests-per-second window, or on the POSTs numbered in
``answer_429_on``), and the dangerous case of docs/api.md §5, a message created whose answer is then lost.
Each POST of the audio route is numbered as it arrives (a debug line ``sandbox: request N arrived``: a
test reads the arrival times from it), and each fault is one info line.

All draws come from one seeded ``random.Random`` under one lock, so a run is reproducible as long as
the requests arrive in the same order. A sleep ends at once when the sandbox stops: the connection
is then dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque

from werkzeug.wrappers import Response

from audiopipe.sandbox.answers import NGINX_502, html_answer, server_error, too_many_attempts
from audiopipe.sandbox.config import CONCRETE_LOST_MODES, Faults, LostMode

log = logging.getLogger(__name__)

_RATE_WINDOW_S = 1.0
_DEFAULT_RATE_LIMIT = 60  # what X-RateLimit-Limit says when 429s are drawn rather than counted


class Drop(Exception):
    """Raised inside the app to drop the connection without answering."""


class FaultInjector:
    """Applies one sandbox's :class:`Faults` to the requests of its audio route."""

    def __init__(self, faults: Faults, stopping: threading.Event) -> None:
        self.faults = faults
        self._stopping = stopping
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()  # the draws and the rate window
        self._rate_window: deque[float] = deque()
        self._arrived = 0  # POSTs of the audio route so far (answer_429_on counts them)

    def before_checks(self) -> Response | None:
        """What happens before the request is looked at: latency, then a 500 or a 429 (or None)."""
        faults = self.faults
        with self._lock:
            self._arrived += 1
            number = self._arrived
        log.debug("sandbox: request %d arrived", number)
        self.sleep(faults.latency)
        if self._draw(faults.rate_500):
            log.info("sandbox: fault 500 (nothing stored)")
            return server_error()
        if self._over_rps() or self._draw(faults.rate_429) or number in faults.answer_429_on:
            log.info("sandbox: 429 to request %d, retry after %s s", number, faults.retry_after)
            return too_many_attempts(faults.retry_after, faults.rps_limit or _DEFAULT_RATE_LIMIT)
        return None

    def lose_answer(self, message_id: str) -> Response | None:
        """Whether the answer to a stored message is lost: a 502 to send instead, a :class:`Drop`,
        or None, to answer as usual (after a delay that outlasts the client's read timeout)."""
        if not self._draw(self.faults.rate_lost):
            return None
        mode = self._lost_mode()
        log.info("sandbox: message %s stored, answer lost (%s)", message_id, mode)
        if mode is LostMode.DROP:
            raise Drop
        if mode is LostMode.PROXY_502:
            return html_answer(502, NGINX_502)
        self.sleep(self.faults.lost_delay)
        return None

    def sleep(self, seconds: float) -> None:
        """Sleep, unless the sandbox is stopping: then drop the connection at once."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise Drop

    def _draw(self, probability: float) -> bool:
        if probability <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def _lost_mode(self) -> LostMode:
        mode = LostMode(self.faults.lost_mode)
        if mode is not LostMode.MIXED:
            return mode
        with self._lock:
            return self._rng.choice(CONCRETE_LOST_MODES)

    def _over_rps(self) -> bool:
        """A sliding one-second window of admitted requests; refused ones do not count (as in
        Laravel's throttle, which checks before it records a hit)."""
        limit = self.faults.rps_limit
        if limit is None:
            return False
        now = time.monotonic()
        with self._lock:
            while self._rate_window and now - self._rate_window[0] >= _RATE_WINDOW_S:
                self._rate_window.popleft()
            if len(self._rate_window) >= limit:
                return True
            self._rate_window.append(now)
            return False
