"""A target planned while its prepare ends is expanded all the same: the plan holds the prepare until it
commits, so the prepare's end waits and then sees the new target (real PostgreSQL, two connections)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from helpers import WS, contacts_for
from prepare_helpers import count, tokens

from audiopipe.campaign.pg import prepares
from audiopipe.campaign.pg.recipes import recipe_of, save_recipe
from audiopipe.preparation.settings import PrepareSettings

pytestmark = pytest.mark.timeout(60)
SOURCE = "5a" * 32
PART = {"key": "ab" * 32 + ".ogg", "sha256": "ab" * 32, "size": 10, "duration": 1.0, "content_type": "audio/ogg"}


def waiting_for_a_lock(url: str) -> bool:
    return count(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                      "AND datname = current_database()") > 0


def test_a_target_planned_while_its_prepare_ends_is_expanded(pg_url):
    first, late = contacts_for(2)
    recipe = recipe_of(PrepareSettings(cache=False), "/store")
    with psycopg.connect(pg_url, autocommit=True) as plan, psycopg.connect(pg_url, autocommit=True) as worker:
        with plan.transaction():  # the first plan, and a worker preparing its source
            plan.execute("INSERT INTO campaigns (campaign) VALUES ('spring')")
            save_recipe(plan, recipe)
            prepares.record_targets(plan, recipe.id, [prepares.Target("spring", WS, first, SOURCE, "talk.wav")])
            prepares.record_prepares(plan, recipe.id, {SOURCE: SOURCE + ".wav"})
        worker.execute("INSERT INTO workers (id, host, pid) VALUES ('w1', 'here', 1)")
        claim = prepares.claim_prepare(worker, SOURCE, recipe.id, "w1", lease=60)
        assert claim is not None

        ended: list[object] = []
        with plan.transaction():  # a rerun adds a contact while the worker ends the prepare
            prepares.record_targets(plan, recipe.id, [prepares.Target("spring", WS, late, SOURCE, "talk.wav")])
            prepares.lock_prepares(plan, "spring", [SOURCE])
            ender = threading.Thread(target=lambda: ended.append(prepares.finish_ready(worker, claim, [PART])))
            ender.start()
            deadline = time.monotonic() + 20
            while not waiting_for_a_lock(pg_url):
                assert time.monotonic() < deadline, "the prepare's end did not wait for the plan"
                time.sleep(0.02)
            assert prepares.expand_ready(plan, "spring") == {}  # not ready yet, as the plan sees it
        ender.join(20)
    assert ended == [{"spring": 2}]  # the end saw both targets, the late one included
    assert count(pg_url, "SELECT count(*) FROM sends WHERE state = 'pending' AND stored = %s", PART["key"]) == 2
    assert tokens(pg_url, "spring") == 2
