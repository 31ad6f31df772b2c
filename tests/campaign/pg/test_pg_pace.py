"""One pace for every worker, held in one PostgreSQL row: slots booked from several processes are
spaced by 1/rate, and a 429's pause holds back everyone, including a worker already waiting for a
slot it booked before the pause."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(120)

BOOKER = textwrap.dedent("""
    import sys
    import psycopg
    from audiopipe.campaign.pg.pace import book
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        for _ in range(int(sys.argv[2])):
            print(repr(book(conn, "api").at), flush=True)
""")


@pytest.mark.slow
def test_slots_booked_by_many_processes_are_spaced_by_one_over_the_rate(open_pg, pg_url):
    rate = 50.0
    open_pg().set_pace("api", rate)
    children = [subprocess.Popen([sys.executable, "-c", BOOKER, pg_url, "40"], stdout=subprocess.PIPE, text=True)
                for _ in range(3)]
    slots = sorted(float(line) for child in children for line in child.communicate(timeout=60)[0].split())
    assert [child.returncode for child in children] == [0, 0, 0] and len(slots) == 120
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 1 / rate - 1e-5  # no two slots closer than the pace, whoever booked them
    assert slots[-1] - slots[0] >= 119 / rate - 1e-3


def test_waiting_for_turns_keeps_the_pace(open_pg):
    worker = open_pg()
    worker.set_pace("api", 20.0)
    start = time.monotonic()
    for _ in range(11):
        assert worker.wait_turn("api")
    assert time.monotonic() - start >= 10 / 20.0 - 0.02


def test_a_pace_with_no_row_or_no_rate_does_not_wait(open_pg):
    worker = open_pg()
    start = time.monotonic()
    assert worker.wait_turn("nobody-set-this")
    worker.set_pace("api", None)
    for _ in range(20):
        assert worker.wait_turn("api")
    assert time.monotonic() - start < 5


def test_a_pause_holds_back_every_worker_even_one_already_waiting(open_pg):
    """A worker booked a slot ~1 s ahead; a 429 then pauses the pace for 2 s. When its slot comes, the
    worker sees the pause and books again: it goes only after the pause, not in it."""
    waiting, other = open_pg(), open_pg()
    waiting.set_pace("api", 2.0)          # one slot every 0.5 s
    for _ in range(2):
        other.wait_turn("api")            # the next free slot is now ~0.5-1 s ahead
    went_at: list[float] = []
    thread = threading.Thread(target=lambda: waiting.wait_turn("api") and went_at.append(time.monotonic()))
    thread.start()
    time.sleep(0.2)
    other.pause("api", 2.0)
    paused_until = time.monotonic() + 2.0
    thread.join(timeout=30)
    assert went_at and went_at[0] >= paused_until - 0.05
    assert waiting.wait_turn("api")       # and the pace goes on after it


def test_a_shorter_pause_does_not_cut_a_longer_one(open_pg):
    worker = open_pg()
    worker.set_pace("api", 1000.0)
    worker.pause("api", 1.5)
    worker.pause("api", 0.1)
    start = time.monotonic()
    assert worker.wait_turn("api")
    assert time.monotonic() - start >= 1.3


def test_waiting_stops_when_asked(open_pg):
    worker = open_pg()
    worker.set_pace("api", 1000.0)
    worker.pause("api", 30)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    assert worker.wait_turn("api", stop) is False
    assert time.monotonic() - start < 5
