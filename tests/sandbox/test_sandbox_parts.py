"""The sandbox's parts on their own: strict mode's contacts (read with the campaign's column
vocabulary), the fault injector, the message store, the upload checks and the body meter. Real
files, real SQLite, real libmagic, real werkzeug requests; the HTTP round trips are in test_sandbox*.py."""

from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from audiopipe.campaign.contacts import read_contacts
from audiopipe.errors import UsageError
from audiopipe.sandbox.bodies import BodyLimit, BodyMeter, BodyTooLarge, body_limit
from audiopipe.sandbox.checks import MSG_UPLOAD_FAILED, FileKind, file_input, mimes_message, upload_problems
from audiopipe.sandbox.config import Faults, LostMode, SandboxConfig
from audiopipe.sandbox.faults import Drop, FaultInjector
from audiopipe.sandbox.store import PART_SUFFIX, MessageStore, new_row, stored_messages
from audiopipe.sandbox.strict import KnownContacts, load_contacts

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
OTHER_WS = "7c1d9e2a-4b3f-4a5e-9c8d-1e2f3a4b5c6d"
C = [str(uuid.UUID(int=0xC0FFEE00 + i, version=4)) for i in range(4)]


def config(tmp_path: Path, **kw: object) -> SandboxConfig:
    return SandboxConfig(token="t", data_dir=tmp_path / "data", **kw)  # type: ignore[arg-type]


# --- strict mode: one column vocabulary with the campaign ---------------------------------------

def test_strict_mode_reads_the_headers_a_campaign_reads(tmp_path, audio_dir):
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(f"Contact UUID,Workspace-ID,name\n{C[0]},{WS},Ann\n{C[1].upper()},{WS},Bob\n")
    known = load_contacts(csv_path)
    sent_to = read_contacts(csv_path, audio_dir)
    assert sorted(known) == sorted(r.contact for r in sent_to.rows) == sorted(C[:2])
    assert known[C[0]] == frozenset({WS})


def test_strict_mode_names_every_contact_alias_when_none_is_there(tmp_path):
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(f"phone\n{C[0]}\n")
    with pytest.raises(UsageError, match="contact_uuid"):
        load_contacts(csv_path)


def test_known_contacts_by_workspace(tmp_path):
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(f"contact,workspace\n{C[0]},{WS}\n{C[0]},{OTHER_WS}\n{C[1]},\n{C[2]},{WS}\n")
    known = KnownContacts.from_csv(csv_path)
    assert known.exists(WS, C[0]) and known.exists(OTHER_WS, C[0])
    assert known.exists(WS, C[1]) and known.exists(OTHER_WS, C[1])  # listed without one: everywhere
    assert known.exists(WS, C[2]) and not known.exists(OTHER_WS, C[2])
    assert not known.exists(WS, C[3])
    assert KnownContacts.from_csv(None).exists(WS, C[3])  # no list: everyone exists


# --- faults ----------------------------------------------------------------------------------------

def decisions(injector: FaultInjector, n: int) -> list[int | None]:
    return [None if (answer := injector.before_checks()) is None else answer.status_code for _ in range(n)]


def test_the_same_seed_draws_the_same_faults():
    faults = Faults(seed=7, rate_500=0.3, rate_429=0.3)
    first = decisions(FaultInjector(faults, threading.Event()), 40)
    assert first == decisions(FaultInjector(faults, threading.Event()), 40)
    assert {None, 500, 429} <= set(first)
    assert first != decisions(FaultInjector(Faults(seed=8, rate_500=0.3, rate_429=0.3), threading.Event()), 40)


def test_the_rate_window_refuses_past_the_limit_and_admits_again_a_second_later():
    injector = FaultInjector(Faults(rps_limit=2, retry_after=3), threading.Event())
    assert decisions(injector, 3) == [None, None, 429]
    assert injector.before_checks().headers["Retry-After"] == "3"  # type: ignore[union-attr]
    time.sleep(1.05)
    assert decisions(injector, 1) == [None]


def test_a_lost_answer_in_each_mode():
    stopping = threading.Event()
    with pytest.raises(Drop):
        FaultInjector(Faults(rate_lost=1.0, lost_mode="drop"), stopping).lose_answer("m")
    answer = FaultInjector(Faults(rate_lost=1.0, lost_mode="502"), stopping).lose_answer("m")
    assert answer is not None and answer.status_code == 502 and "nginx" in answer.get_data(as_text=True)
    started = time.monotonic()
    assert FaultInjector(Faults(rate_lost=1.0, lost_mode="delay", lost_delay=0.2), stopping).lose_answer("m") is None
    assert time.monotonic() - started >= 0.2
    assert FaultInjector(Faults(rate_lost=0.0), stopping).lose_answer("m") is None


def test_a_fault_sleep_ends_at_once_when_the_sandbox_stops():
    stopping = threading.Event()
    injector = FaultInjector(Faults(latency=30.0), stopping)
    threading.Timer(0.1, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(Drop):
        injector.before_checks()
    assert time.monotonic() - started < 5


def test_lost_mode_is_a_vocabulary_that_equals_its_plain_names():
    assert Faults(lost_mode="502").lost_mode is LostMode.PROXY_502
    assert LostMode.DROP == "drop" and str(LostMode.MIXED) == "mixed"
    with pytest.raises(UsageError, match="lost_mode"):
        Faults(lost_mode="sometimes")


# --- the store ---------------------------------------------------------------------------------------

def upload_of(path: Path, name: str | None = None) -> FileStorage:
    return FileStorage(io.BytesIO(path.read_bytes()), filename=name or path.name)


def test_a_kept_upload_is_stored_whole_and_a_refused_one_leaves_nothing(tmp_path, audio_dir):
    store = MessageStore(tmp_path)
    try:
        with store.spool(upload_of(audio_dir / "tone.mp3")) as kept:
            store.keep(kept, "mp3", new_row(WS, C[0], message_id=kept.message_id, size=kept.size,
                                            sha256=kept.sha256, mime="audio/mpeg"))
        with store.spool(upload_of(audio_dir / "tone.wav")) as refused:
            assert refused.path.exists()
        [message] = store.messages()
    finally:
        store.close()
    assert message["id"] == kept.message_id and message["size"] == (audio_dir / "tone.mp3").stat().st_size
    assert Path(message["file_path"]).read_bytes() == (audio_dir / "tone.mp3").read_bytes()
    assert sorted(p.name for p in store.files_dir.iterdir()) == [f"{kept.message_id}.mp3"]
    assert stored_messages(tmp_path) == [message]  # read back by another store, as after a restart


def test_a_new_store_removes_what_a_crash_left_half_written(tmp_path):
    leftover = tmp_path / "files" / f"{uuid.uuid4()}{PART_SUFFIX}"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half")
    MessageStore(tmp_path).close()
    assert not leftover.exists()


# --- the upload checks ----------------------------------------------------------------------------

def test_upload_checks_sniff_the_content_and_weigh_the_size(tmp_path, audio_dir):
    mp3, wav = audio_dir / "tone.mp3", audio_dir / "tone.wav"
    seen, problems = upload_problems(mp3, mp3.stat().st_size, config(tmp_path))
    assert (seen is not None and seen.accepted, problems) == (True, [])
    seen, problems = upload_problems(wav, wav.stat().st_size, config(tmp_path))
    assert problems == [mimes_message()]
    _, problems = upload_problems(mp3, 2048 * 1024 + 1, config(tmp_path, max_kb=2048))
    assert problems == ["The file field must not be greater than 2048 kilobytes."]
    seen, problems = upload_problems(mp3, 10_001, config(tmp_path, php_upload_limit=10_000))
    assert (seen, problems) == (None, [MSG_UPLOAD_FAILED])  # PHP dropped it: nothing was sniffed


@pytest.mark.parametrize(("build", "kind"), [
    ({"data": {"file": (io.BytesIO(b"x"), "a.mp3")}}, FileKind.UPLOAD),
    ({"data": {"file": (io.BytesIO(b"x"), "")}}, FileKind.MISSING),  # PHP: no file was uploaded
    ({"data": {"file": "https://example.com/a.mp3"}}, FileKind.TEXT),
    ({"json": {"file": "https://example.com/a.mp3"}}, FileKind.TEXT),
    ({"json": {"file": []}}, FileKind.MISSING),
    ({"data": b"[1, 2", "content_type": "application/json"}, FileKind.MISSING),
    ({"data": b"file=x", "content_type": "text/plain"}, FileKind.MISSING),
])
def test_where_the_file_input_is(build, kind):
    request = Request(EnvironBuilder(method="POST", **build).get_environ())
    assert file_input(request).kind is kind


# --- the body meter -----------------------------------------------------------------------------------

def test_the_meter_stops_one_byte_past_the_limit_and_knows_when_a_body_ended():
    whole = BodyMeter(io.BytesIO(b"x" * 10), BodyLimit(10, proxy=False))
    assert whole.read() == b"x" * 10 and whole.ended and whole.count == 10
    over = BodyMeter(io.BytesIO(b"x" * 11), BodyLimit(10, proxy=True))
    with pytest.raises(BodyTooLarge) as caught:
        over.read()
    assert caught.value.proxy and not over.ended


def test_each_body_is_capped_by_its_kind_and_the_proxy_first(tmp_path):
    own = config(tmp_path, max_json_body=1000)
    behind_proxy = config(tmp_path, max_json_body=1000, proxy_body_limit=500)
    multipart = {"CONTENT_TYPE": "multipart/form-data; boundary=x"}
    assert body_limit(multipart, own) == BodyLimit(own.post_limit, proxy=False)
    assert body_limit({"CONTENT_TYPE": "application/json"}, own) == BodyLimit(1000, proxy=False)
    assert body_limit(multipart, behind_proxy) == BodyLimit(500, proxy=True)
