"""The batch's send stage on its own (audiopipe.campaign.sender): planned deliveries out through a
real client to a real sandbox, each send recorded in a real SQLite ledger. Planning and sending
use separate ledger connections, as a planner and its workers on other machines would."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from audiopipe.campaign.ledger import DEFERRED, PENDING, SENT, UNKNOWN, SendKey, SqliteLedger
from audiopipe.campaign.pacing import RateLimiter, SharedPacer
from audiopipe.campaign.planner import Delivery, planned_sends, record_plan
from audiopipe.campaign.results import ReportStatus
from audiopipe.campaign.sender import AUTH_STOPPED, LEDGER_STATE, ROW_STATUS, BatchSender, PartEnd
from audiopipe.campaign.settings import SendRules
from audiopipe.preparation.cache import file_sha256
from audiopipe.preparation.pipeline import OutputFile
from audiopipe.sandbox.app import Faults
from audiopipe.send.answers import Outcome
from audiopipe.send.client import LancepilotClient
from audiopipe.send.retry import RetryPolicy

pytestmark = pytest.mark.timeout(120)

TOKEN = "sender-test-token"
SANDBOX_FRESH_DATA = True
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
PEOPLE = ["5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21",
          "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"]
RULES = SendRules("spring", attempts=3)


def output(path: Path, part: int = 1, parts: int = 1) -> OutputFile:
    ogg = path.suffix == ".opus"
    return OutputFile(path, path.stat().st_size, "ogg" if ogg else "mp3", "audio/ogg" if ogg else "audio/mpeg",
                      "audio/ogg" if ogg else "audio/mpeg", "opus" if ogg else "mp3", 1.0, None, part, parts)


def delivery(contact: str, *outputs: OutputFile, source: str = "source-a", label: str = "talk.mp3") -> Delivery:
    return Delivery(2, contact, WS, label, {"name": "someone"}, source, outputs,
                    tuple(file_sha256(o.path) for o in outputs), "kept", 1.0)


def sender(ledger: SqliteLedger, client: LancepilotClient, rules: SendRules = RULES,
           ends: list[PartEnd] | None = None) -> BatchSender:
    stop = threading.Event()
    pacer = SharedPacer(RateLimiter(0), stop, RetryPolicy(base=0.01, cap=0.02))
    return BatchSender(ledger, client, rules, pacer, stop, on_part=ends.append if ends is not None else None)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


def test_planned_sends_go_out_once_and_a_second_sender_only_reads_the_ledger(make_sandbox, audio_dir,
                                                                            ledger_path):
    sb = make_sandbox()
    deliveries = [delivery(c, output(audio_dir / "tone.mp3")) for c in PEOPLE]
    with SqliteLedger(ledger_path) as planner:
        assert record_plan(planner, "work-1", RULES.campaign, deliveries, {"folder": "f"}) == 0
        assert planner.counts()[PENDING] == 3
    ends: list[PartEnd] = []
    with SqliteLedger(ledger_path) as led, LancepilotClient(token=TOKEN, base_url=sb.url) as client:
        rows = sender(led, client, ends=ends).send_all(deliveries, concurrency=3)
        assert [r.status for r in rows] == [ReportStatus.SENT] * 3 and ends == [PartEnd.REQUEST] * 3
        stored = {m["id"]: m for m in sb.messages()}
        for r in rows:  # the id each row reports is the message the sandbox holds for that contact
            assert stored[r.message_id]["contact_id"] == r.contact and stored[r.message_id]["file_name"] == "talk.mp3"
            assert r.extra == {"name": "someone"} and r.action == "kept"
            assert r.size == (audio_dir / "tone.mp3").stat().st_size
        assert {row.key.contact: (row.state, row.message_id) for row in led.rows()} == {
            r.contact: (SENT, r.message_id) for r in rows}

        ends.clear()
        again = sender(led, client, ends=ends).send_all(deliveries, concurrency=3)
    assert [r.status for r in again] == [ReportStatus.ALREADY] * 3 and ends == [PartEnd.LEDGER] * 3
    assert [r.message_id for r in again] == [r.message_id for r in rows]
    assert sb.request_count == 3 and len(sb.messages()) == 3


def test_a_401_stops_every_worker_and_nothing_more_goes_out(make_sandbox, audio_dir, ledger_path):
    sb = make_sandbox()
    deliveries = [delivery(c, output(audio_dir / "tone.mp3")) for c in PEOPLE]
    ends: list[PartEnd] = []
    with SqliteLedger(ledger_path) as led, LancepilotClient(token="wrong-token", base_url=sb.url) as client:
        record_plan(led, "work-1", RULES.campaign, deliveries, {})
        send = sender(led, client, ends=ends)
        rows = send.send_all(deliveries, concurrency=1)
        states = sorted(row.state for row in led.rows())
    assert send.stopped == AUTH_STOPPED
    assert [r.status for r in rows] == [ReportStatus.NOT_SENT] * 3
    assert "401" in rows[0].error and all(r.error == f"not sent: {AUTH_STOPPED}" for r in rows[1:])
    assert ends == [PartEnd.REQUEST, PartEnd.STOPPED, PartEnd.STOPPED]  # a display does not count the last two
    assert states == [DEFERRED, PENDING, PENDING]  # the next run sends all three
    assert sb.request_count == 1 and sb.messages() == []


def test_an_unknown_outcome_is_sent_at_most_once_and_holds_back_the_later_parts(make_sandbox, audio_dir,
                                                                                ledger_path):
    split = delivery(PEOPLE[0], output(audio_dir / "tone.mp3", 1, 2), output(audio_dir / "voice.opus", 2, 2))
    failing = make_sandbox(faults=Faults(rate_500=1.0))
    with SqliteLedger(ledger_path) as led, LancepilotClient(token=TOKEN, base_url=failing.url) as client:
        rows = sender(led, client).send_all([split], concurrency=1)
        assert [(r.part, r.status) for r in rows] == [(1, ReportStatus.UNKNOWN), (2, ReportStatus.BLOCKED)]
        assert "500" in rows[0].error and "blocked by part 1, whose outcome is unknown" in rows[1].error
        first = led.get(SendKey(RULES.campaign, WS, PEOPLE[0], "source-a", 1))
        assert first is not None and (first.state, first.attempts) == (UNKNOWN, 1)
        assert led.get(SendKey(RULES.campaign, WS, PEOPLE[0], "source-a", 2)) is None  # never begun
    assert failing.request_count == 1

    healthy = make_sandbox()
    with SqliteLedger(ledger_path) as led, LancepilotClient(token=TOKEN, base_url=healthy.url) as client:
        again = sender(led, client).send_all([split], concurrency=1)
        assert [r.status for r in again] == [ReportStatus.UNKNOWN, ReportStatus.BLOCKED] and healthy.request_count == 0
        told = sender(led, client, SendRules(RULES.campaign, retry_unknown=True)).send_all([split], concurrency=1)
    assert [r.status for r in told] == [ReportStatus.SENT, ReportStatus.SENT]
    assert [m["file_name"] for m in healthy.messages()] == ["tone.mp3", "voice.opus"]  # in order, by part name


def test_429s_are_retried_up_to_the_bound_then_left_for_the_next_run(make_sandbox, audio_dir, ledger_path):
    sb = make_sandbox(faults=Faults(rate_429=1.0, retry_after=0))
    with SqliteLedger(ledger_path) as led, LancepilotClient(token=TOKEN, base_url=sb.url) as client:
        [row] = sender(led, client).send_all([delivery(PEOPLE[0], output(audio_dir / "tone.mp3"))], concurrency=1)
        [kept] = led.rows()
    assert row.status == ReportStatus.NOT_SENT and row.error.startswith("not sent after 3 attempts: rate limited (429)")
    assert (kept.state, kept.attempts, kept.status) == (DEFERRED, 3, 429)
    assert sb.request_count == 3 and sb.messages() == []


def test_nothing_listening_is_deferred_after_the_bound(audio_dir, ledger_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with SqliteLedger(ledger_path) as led, \
            LancepilotClient(token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/v3", connect_timeout=1) as client:
        [row] = sender(led, client).send_all([delivery(PEOPLE[0], output(audio_dir / "tone.mp3"))], concurrency=1)
        [kept] = led.rows()
    assert row.status == ReportStatus.NOT_SENT and "not sent after 3 attempts" in row.error
    assert "connection refused" in row.error
    assert (kept.state, kept.attempts) == (DEFERRED, 3)


def test_the_same_content_for_one_contact_goes_once_whatever_its_names(make_sandbox, audio_dir, ledger_path):
    sb = make_sandbox()
    tone = output(audio_dir / "tone.mp3")
    twice = [delivery(PEOPLE[0], tone, label="talk.mp3"), delivery(PEOPLE[0], tone, label="copy/talk.mp3"),
             delivery(PEOPLE[1], tone, label="talk.mp3")]
    with SqliteLedger(ledger_path) as led, LancepilotClient(token=TOKEN, base_url=sb.url) as client:
        rows = sender(led, client).send_all(twice, concurrency=4)
    assert [r.status for r in rows] == [ReportStatus.SENT, ReportStatus.ALREADY, ReportStatus.SENT]
    assert rows[1].error == "same content as talk.mp3, already sent" and rows[1].message_id == rows[0].message_id
    assert sb.request_count == 2


def test_planned_sends_are_every_part_of_every_delivery(audio_dir):
    split = delivery(PEOPLE[0], output(audio_dir / "tone.mp3", 1, 2), output(audio_dir / "voice.opus", 2, 2))
    sends = planned_sends([split, delivery(PEOPLE[1], output(audio_dir / "tone.mp3"))], "spring")
    assert [(s.key.contact, s.key.part, s.parts, s.file) for s in sends] == [
        (PEOPLE[0], 1, 2, "talk.mp3"), (PEOPLE[0], 2, 2, "talk.mp3"), (PEOPLE[1], 1, 1, "talk.mp3")]
    assert sends[1].prepared_sha256 == file_sha256(audio_dir / "voice.opus")


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_has_a_ledger_state_and_a_report_status(outcome):
    """Only a created message is recorded sent; only what may exist is unknown; a refusal is failed;
    everything else definitely not created is deferred, so the next run sends it."""
    expected = {Outcome.SENT: (SENT, ReportStatus.SENT), Outcome.UNKNOWN: (UNKNOWN, ReportStatus.UNKNOWN),
                Outcome.REFUSED: ("failed", ReportStatus.FAILED)}.get(outcome, (DEFERRED, ReportStatus.NOT_SENT))
    assert (LEDGER_STATE[outcome], ROW_STATUS[outcome]) == expected
