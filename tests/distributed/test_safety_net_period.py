"""The safety nets (reaper, prepare takeover, token top-up, stalled jobs) run every 10 seconds.

procrastinate reads a periodic task's ``cron`` with croniter, whose optional sixth field is the
*seconds*, last: ``"*/10 * * * * *"`` is every second of every tenth minute (sixty runs, then nine
minutes of nothing: a killed worker's prepare or tokens waited up to nine minutes for a takeover, which
the chaos tests met as a hang). Checked on the App's own periodic registry, through croniter, as
procrastinate's deferrer computes its ticks."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from croniter import croniter

from audiopipe.distributed.app import heartbeat_every, make_app, stalled_after


def test_every_periodic_task_of_the_app_ticks_every_10_seconds_at_any_minute() -> None:
    app = make_app("postgresql:///never-opened")
    tasks = app.periodic_registry.periodic_tasks
    assert {name for name, _ in tasks} == {"audiopipe.maintain", "audiopipe.retry_stalled"}
    for start in (datetime(2026, 11, 30, 6, 3, 7), datetime(2026, 11, 30, 6, 10, 0, 500000)):
        for periodic in tasks.values():
            ticks = croniter(periodic.cron, start)
            times = [ticks.get_next(datetime) for _ in range(7)]
            gaps = {b - a for a, b in pairwise(times)}
            assert gaps == {timedelta(seconds=10)}, (periodic.cron, times)
            assert times[0] - start <= timedelta(seconds=10)


@pytest.mark.parametrize(("lease", "beat", "stalled"), [(60.0, 5.0, 15.0), (15.0, 5.0, 15.0), (6.0, 2.0, 6.0),
                                                         (3.0, 1.0, 3.0), (1.0, 1 / 3, 1.0)])
def test_a_short_lease_puts_a_dead_workers_jobs_back_sooner(lease: float, beat: float, stalled: float) -> None:
    """A killed worker's token jobs come back after ``stalled_after`` (never before three missed
    heartbeats, never later than the default 15 s): tests and a small demo with a short lease do not
    wait the default out."""
    assert heartbeat_every(lease) == pytest.approx(beat)
    assert stalled_after(lease) == pytest.approx(stalled)
    assert stalled_after(lease) >= 3 * heartbeat_every(lease)
