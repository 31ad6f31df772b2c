"""``Faults.answer_429_on``: a 429 on the POSTs named by their number, whatever the draws say, and each
POST's arrival in the sandbox's log (what a test of the shared pause reads its timestamps from)."""

from __future__ import annotations

import logging

import pytest
import requests
from helpers import CONTACT, WS

from audiopipe.errors import UsageError
from audiopipe.sandbox.app import Faults, Sandbox

TOKEN = "sandbox-429-token"


def post_url(sandbox: Sandbox, url: str) -> requests.Response:
    return requests.post(f"{sandbox.url}/workspaces/{WS}/contacts/{CONTACT}/messages/audio",
                         headers={"Authorization": f"Bearer {TOKEN}"}, json={"file": url}, timeout=10)


def test_the_named_posts_get_a_429_with_retry_after_and_the_others_do_not(make_sandbox, caplog,  # type: ignore[no-untyped-def]
                                                                          served_mp3_url) -> None:
    sandbox = make_sandbox(faults=Faults(answer_429_on=frozenset({2, 4}), retry_after=2))
    with caplog.at_level(logging.DEBUG, logger="audiopipe.sandbox.faults"):
        answers = [post_url(sandbox, served_mp3_url) for _ in range(5)]
    assert [a.status_code for a in answers] == [201, 429, 201, 429, 201]
    assert answers[1].headers["Retry-After"] == "2"
    assert len(sandbox.messages()) == 3  # a 429 stores nothing
    said = [r.getMessage() for r in caplog.records if r.name == "audiopipe.sandbox.faults"]
    assert [m for m in said if "arrived" in m] == [f"sandbox: request {n} arrived" for n in range(1, 6)]
    assert [m for m in said if "429" in m] == ["sandbox: 429 to request 2, retry after 2 s",
                                               "sandbox: 429 to request 4, retry after 2 s"]


@pytest.mark.parametrize("bad", [frozenset({0}), frozenset({-3, 1})])
def test_a_post_number_below_1_is_refused(bad: frozenset[int]) -> None:
    with pytest.raises(UsageError, match="answer_429_on"):
        Faults(answer_429_on=bad)
