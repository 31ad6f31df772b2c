"""The batch's progress bars: one at a time ("preparing", then "sending"), closed for good before any
other line is written, and a send rate that counts requests only.

The batch calls its progress callback from worker threads, and an interrupted batch may still call
it while the CLI is writing its last lines. So every bar operation takes one lock, and once
:meth:`BatchBars.close` has run nothing draws again: no bar is redrawn over or after a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from audiopipe.cli.console import progress_bar

STAGE_NAMES = {"prepare": "preparing", "send": "sending"}
# tqdm's own rate counts every row; a rerun that only skips rows already sent would show a send
# rate it never had, so the sending bar shows ours (requests per second) in its postfix instead
SEND_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class BatchBars:
    """A :data:`audiopipe.campaign.batch.ProgressCallback` that draws the bars (when ``enabled``) and calls
    ``on_stage("preparing" | "sending")`` as each stage begins, drawn or not."""

    def __init__(self, enabled: bool, on_stage: Callable[[str], None] | None = None) -> None:
        self.enabled = enabled
        self.on_stage = on_stage
        self._lock = threading.Lock()
        self._bar: Any = None
        self._stage: str | None = None
        self._closed = False
        self._skipped = 0
        self._started = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            if self._closed:
                return
            if stage == "skip":
                self._skipped = done
                return
            if stage != self._stage:
                self._begin(stage, total)
            if self._bar is None:
                return
            if stage == "send":
                self._bar.set_postfix_str(self._send_postfix(done, total), refresh=False)
            self._bar.update(done - self._bar.n)

    def _begin(self, stage: str, total: int) -> None:
        if self._bar is not None:
            self._bar.close()  # the finished stage's bar stays on screen, complete; one bar is live
            self._bar = None
        self._stage = stage
        self._started = time.monotonic()
        name = STAGE_NAMES.get(stage, stage)
        if self.on_stage is not None:
            self.on_stage(name)
        if self.enabled and total:
            self._bar = progress_bar(total, name, enabled=True, unit="file" if stage == "prepare" else "msg",
                                     bar_format=SEND_FORMAT if stage == "send" else None)

    def _send_postfix(self, done: int, total: int) -> str:
        requests = done - self._skipped
        elapsed = time.monotonic() - self._started
        parts = []
        if requests > 0 and elapsed > 0:
            rate = requests / elapsed
            parts.append(f"{rate:.1f} msg/s")
            if done < total:
                parts.append(f"{_clock((total - done) / rate)} left")
        if self._skipped:
            parts.append(f"{self._skipped} skipped (handled by an earlier run)")
        return ", ".join(parts)

    def close(self) -> None:
        """Close the live bar (left on screen as it is) and draw nothing after this."""
        with self._lock:
            self._closed = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None
