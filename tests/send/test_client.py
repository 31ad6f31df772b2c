"""The Lancepilot client over real HTTP: against the in-process sandbox for every outcome of
docs/api.md §5, and against tiny recording servers for what the sandbox cannot show (the multipart
part headers, redirects and where the token goes)."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import CONTACT, MAX_BYTES, MIMES_MSG, SIZE_MSG, WS, RecordingServer
from http_folder import ServedFolder, serve_folder

from audiopipe.errors import (
    AuthError,
    ConnectFailed,
    GaveUp,
    OutcomeUnknown,
    RateLimited,
    RefusedError,
    SendError,
    UsageError,
)
from audiopipe.preparation.sniff import sniff
from audiopipe.sandbox.app import Faults, Sandbox, SandboxConfig
from audiopipe.send.client import MAX_REDIRECTS, LancepilotClient, RetryPolicy, SentMessage, parse_retry_after

pytestmark = pytest.mark.timeout(60)

TOKEN = "client-test-token"
CANARY = "CANARY-7f3e9b2a"
FAST = RetryPolicy(base=0.01, cap=0.05)


# ---- helpers and fixtures


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def free_port() -> int:
    """A port nobody listens on (bound, read back, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def padded_mp3(src: Path, dest: Path, size: int) -> Path:
    """A real MP3 padded with zero bytes to ``size``: libmagic looks at the head, so it still sniffs audio/mpeg."""
    shutil.copyfile(src, dest)
    with dest.open("ab") as fh:
        fh.truncate(size)
    assert dest.stat().st_size == size
    assert sniff(dest).mime == "audio/mpeg"
    return dest


class RecordingSleep:
    """The client's ``sleep``: records each wait; ``then`` runs after a given call (1-based)."""

    def __init__(self, actions: dict[int, Callable[[], None]] | None = None) -> None:
        self.waits: list[float] = []
        self.actions = actions or {}

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        action = self.actions.get(len(self.waits))
        if action is not None:
            action()


@pytest.fixture
def make_client() -> Iterator[Callable[..., LancepilotClient]]:
    clients: list[LancepilotClient] = []

    def factory(base_url: str, token: str = TOKEN, **kwargs: Any) -> LancepilotClient:
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("sleep", RecordingSleep())
        kwargs.setdefault("connect_timeout", 2.0)
        kwargs.setdefault("read_timeout", 10.0)
        client = LancepilotClient(token=token, base_url=base_url, seed=1, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


Recorder = RecordingServer  # records every request and answers with ``respond(recorder, request)``


@pytest.fixture
def make_recorder() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def factory(respond: Callable[..., tuple[int, dict[str, str], bytes]]) -> Recorder:
        recorder = Recorder(respond)
        started.append(recorder)
        return recorder

    yield factory
    for recorder in started:
        recorder.close()


def created(recorder: Recorder, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    body = b'{"status": 201, "message": "Resource created successfully.", "data": {"id": "rec-%d"}}' % len(
        recorder.requests)
    return 201, {"Content-Type": "application/json"}, body


def file_part_headers(body: bytes) -> str:
    """The header block of the multipart part named ``file``."""
    match = re.search(rb'(Content-Disposition: form-data; name="file"[^\r]*\r\n(?:[^\r]+\r\n)*)\r\n', body)
    assert match, body[:300]
    return match.group(1).decode()


# ---- 201: what the server receives and stores


@pytest.mark.parametrize("name, mime", [
    ("tone.mp3", "audio/mpeg"),
    ("tone.m4a", "audio/x-m4a"),
    ("tone.aac", "audio/x-hx-aac-adts"),
    ("voice.opus", "audio/ogg"),
])
def test_upload_is_created_and_stored_byte_for_byte(make_sandbox, make_client, audio_dir, name, mime):
    sandbox = make_sandbox()
    client = make_client(sandbox.url)
    src = audio_dir / name

    msg = client.send_audio(WS, CONTACT, src)

    assert isinstance(msg, SentMessage)
    assert (msg.status, msg.attempts) == (201, 1)
    [stored] = sandbox.messages()
    assert msg.id == stored["id"] and uuid.UUID(msg.id)
    assert sha256(Path(stored["file_path"])) == sha256(src) == stored["sha256"]
    assert stored["file_name"] == name
    assert stored["mime"] == mime
    assert (stored["workspace_id"], stored["contact_id"]) == (WS, CONTACT)
    assert sandbox.request_count == 1


@pytest.mark.parametrize("name, content_type", [
    ("tone.mp3", "audio/mpeg"),
    ("tone.m4a", "audio/mp4"),
    ("tone.aac", "audio/aac"),
    ("voice.opus", "audio/ogg"),
])
def test_multipart_part_carries_name_and_content_type(make_recorder, make_client, audio_dir, name, content_type):
    recorder = make_recorder(created)
    client = make_client(recorder.origin + "/api/v3")

    msg = client.send_audio(WS, CONTACT, audio_dir / name)

    assert msg.id == "rec-1"
    [request] = recorder.requests
    assert request["path"] == f"/api/v3/workspaces/{WS}/contacts/{CONTACT}/messages/audio"
    assert request["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    headers = file_part_headers(request["body"])
    assert f'filename="{name}"' in headers
    assert f"Content-Type: {content_type}\r\n" in headers
    assert (audio_dir / name).read_bytes() in request["body"]


def test_filename_and_content_type_can_be_overridden(make_recorder, make_client, audio_dir):
    recorder = make_recorder(created)
    client = make_client(recorder.origin + "/api/v3")
    client.send_audio(WS, CONTACT, audio_dir / "voice.opus", filename="hello.ogg", content_type="audio/ogg")
    headers = file_part_headers(recorder.requests[0]["body"])
    assert 'filename="hello.ogg"' in headers and "Content-Type: audio/ogg\r\n" in headers


@pytest.fixture
def cdn(tmp_path: Path, audio_dir: Path) -> Iterator[ServedFolder]:
    """A real origin on 127.0.0.1 serving copies of tone.mp3 (the sandbox fetches a URL message, as the
    server must: a URL it cannot fetch is a 422)."""
    root = tmp_path / "cdn" / "audio"
    root.mkdir(parents=True)
    for name in ("hello.mp3", "first.mp3", "second.mp3"):
        shutil.copyfile(audio_dir / "tone.mp3", root / name)
    with serve_folder(tmp_path / "cdn") as served:
        yield served


def test_url_is_sent_as_json_and_stored(make_sandbox, make_client, cdn, audio_dir):
    sandbox = make_sandbox()
    client = make_client(sandbox.url)
    url = f"{cdn.url}/audio/hello.mp3"

    msg = client.send_audio(WS, CONTACT, url)

    [stored] = sandbox.messages()
    assert msg.id == stored["id"]
    assert stored["url"] == url and msg.data["url"] == url
    assert cdn.gets["/audio/hello.mp3"] == 1  # fetched once, by the sandbox
    assert stored["sha256"] == hashlib.sha256((audio_dir / "tone.mp3").read_bytes()).hexdigest()


def test_non_http_url_and_missing_file_are_usage_errors(make_sandbox, make_client, tmp_path):
    sandbox = make_sandbox()
    client = make_client(sandbox.url)
    with pytest.raises(UsageError, match="only http"):
        client.send_audio(WS, CONTACT, "ftp://example.com/a.mp3")
    with pytest.raises(UsageError, match="no such file"):
        client.send_audio(WS, CONTACT, tmp_path / "nope.mp3")
    assert sandbox.request_count == 0


# ---- refusals: typed, with the server's reasons, never retried


def test_401_is_auth_error_and_not_retried(make_sandbox, make_client, audio_dir):
    sandbox = make_sandbox()
    sleep = RecordingSleep()
    client = make_client(sandbox.url, token="wrong-token", sleep=sleep)

    with pytest.raises(AuthError) as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.status == 401
    assert info.value.created is False and info.value.outcome == "not sent"
    assert sandbox.request_count == 1 and sleep.waits == []
    assert sandbox.messages() == []


@pytest.mark.parametrize("workspace, contact", [("12345", CONTACT), (WS, "not-a-uuid"), (WS, "")])
def test_non_uuid_is_refused_before_any_request(make_sandbox, make_client, audio_dir, workspace, contact):
    sandbox = make_sandbox()
    client = make_client(sandbox.url)
    with pytest.raises(UsageError, match="is not a UUID"):
        client.send_audio(workspace, contact, audio_dir / "tone.mp3")
    assert sandbox.request_count == 0


def test_uuid_is_normalised(make_sandbox, make_client, audio_dir):
    sandbox = make_sandbox()
    client = make_client(sandbox.url)
    client.send_audio(WS.upper(), "{" + CONTACT.replace("-", "") + "}", audio_dir / "tone.mp3")
    [stored] = sandbox.messages()
    assert (stored["workspace_id"], stored["contact_id"]) == (WS, CONTACT)


def test_unknown_contact_in_strict_mode_is_404(make_sandbox, make_client, audio_dir, tmp_path):
    csv_path = tmp_path / "contacts.csv"
    csv_path.write_text(f"contact,workspace\n{CONTACT},{WS}\n", encoding="utf-8")
    sandbox = make_sandbox(contacts_csv=csv_path)
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep)

    with pytest.raises(RefusedError) as info:
        client.send_audio(WS, str(uuid.uuid4()), audio_dir / "tone.mp3")

    assert info.value.status == 404 and info.value.created is False
    assert sandbox.request_count == 1 and sleep.waits == []
    assert client.send_audio(WS, CONTACT, audio_dir / "tone.mp3").id == sandbox.messages()[0]["id"]


@pytest.mark.parametrize("name", ["isom.m4a", "tone.wav"])
def test_422_carries_the_servers_errors(make_sandbox, make_client, audio_dir, name):
    sandbox = make_sandbox()
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep)

    # Named .m4a and sent as audio/mp4: the server sniffs the content (video/mp4, audio/x-wav) anyway.
    with pytest.raises(RefusedError) as info:
        client.send_audio(WS, CONTACT, audio_dir / name, filename="talk.m4a")

    exc = info.value
    assert exc.status == 422 and exc.created is False
    assert exc.errors == {"file": [MIMES_MSG]}
    assert "aac, amr, mp3, m4a, ogg" in exc.errors["file"][0]
    assert "aac, amr, mp3, m4a, ogg" in str(exc)
    assert sandbox.request_count == 1 and sleep.waits == []
    assert sandbox.messages() == []


def test_413_from_the_proxy(make_sandbox, make_client, audio_dir):
    sandbox = make_sandbox(proxy_body_limit=50_000)
    client = make_client(sandbox.url)

    with pytest.raises(RefusedError) as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.wav")  # about 350 kB

    assert info.value.status == 413 and info.value.created is False
    assert "413" in str(info.value)
    assert sandbox.request_count == 1 and sandbox.messages() == []


def test_php_upload_limit_is_422_failed_to_upload(make_sandbox, make_client, audio_dir):
    src = audio_dir / "tone.mp3"
    sandbox = make_sandbox(php_upload_limit=src.stat().st_size - 1)
    client = make_client(sandbox.url)

    with pytest.raises(RefusedError) as info:
        client.send_audio(WS, CONTACT, src)

    assert info.value.status == 422
    assert info.value.errors == {"file": ["The file failed to upload."]}
    assert "The file failed to upload." in str(info.value)
    assert sandbox.request_count == 1 and sandbox.messages() == []


def test_size_limit_is_16384_kibibytes_exactly(make_sandbox, make_client, audio_dir, tmp_path):
    sandbox = make_sandbox()
    client = make_client(sandbox.url, read_timeout=30.0)
    big = padded_mp3(audio_dir / "tone.mp3", tmp_path / "big.mp3", MAX_BYTES)

    msg = client.send_audio(WS, CONTACT, big)
    [stored] = sandbox.messages()
    assert msg.id == stored["id"]
    assert stored["size"] == MAX_BYTES and stored["sha256"] == sha256(big)

    with big.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RefusedError) as info:
        client.send_audio(WS, CONTACT, big)
    assert info.value.status == 422
    assert info.value.errors == {"file": [SIZE_MSG]}
    assert len(sandbox.messages()) == 1 and sandbox.request_count == 2


# ---- 429: wait Retry-After, then send; exactly one message


def test_429_waits_retry_after_then_sends_once(make_sandbox, make_client, audio_dir):
    # seed 1 draws 0.13 then 0.85: the first request gets the 429, the second goes through.
    sandbox = make_sandbox(faults=Faults(seed=1, rate_429=0.5, retry_after=2))
    sleep = RecordingSleep()
    waits_seen: list[tuple[float, SendError]] = []
    client = make_client(sandbox.url, sleep=sleep)

    msg = client.send_audio(WS, CONTACT, audio_dir / "tone.mp3",
                            on_wait=lambda w, e: waits_seen.append((w, e)))

    assert len(sleep.waits) == 1 and sleep.waits[0] >= 2.0
    assert sleep.waits[0] <= 2.0 + 0.25  # Retry-After plus a little jitter, not the backoff
    [(wait, exc)] = waits_seen
    assert wait == sleep.waits[0] and isinstance(exc, RateLimited) and exc.retry_after == 2.0
    assert msg.attempts == 2
    [stored] = sandbox.messages()
    assert msg.id == stored["id"]
    assert sandbox.request_count == 2


def test_429_with_rps_limit_really_waits(make_sandbox, make_client, cdn):
    sandbox = make_sandbox(faults=Faults(rps_limit=1, retry_after=1))
    first, second = f"{cdn.url}/audio/first.mp3", f"{cdn.url}/audio/second.mp3"
    assert requests.post(f"{sandbox.url}/workspaces/{WS}/contacts/{CONTACT}/messages/audio",
                         headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"file": first}, timeout=5).status_code == 201
    sleep = RecordingSleep()
    sleep.actions = {1: lambda: time.sleep(sleep.waits[-1])}
    client = make_client(sandbox.url, sleep=sleep)

    msg = client.send_audio(WS, CONTACT, second)

    assert sleep.waits and sleep.waits[0] >= 1.0
    assert msg.attempts == 2
    assert [m["url"] for m in sandbox.messages()] == [first, second]


def test_429_forever_gives_up_after_the_bound(make_sandbox, make_client):
    sandbox = make_sandbox(faults=Faults(rate_429=1.0, retry_after=7))
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep, retry=RetryPolicy(attempts=3, base=0.01, cap=0.05))

    with pytest.raises(GaveUp) as info:
        client.send_audio(WS, CONTACT, "https://x.example/a.mp3")

    assert info.value.created is False and info.value.status == 429
    assert isinstance(info.value.__cause__, RateLimited)
    assert len(sleep.waits) == 2 and all(w >= 7 for w in sleep.waits)
    assert sandbox.request_count == 3 and sandbox.messages() == []


def test_parse_retry_after_seconds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("0") == 0.0


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    later = email.utils.format_datetime(datetime.fromtimestamp(now + 30, tz=timezone.utc), usegmt=True)
    earlier = email.utils.format_datetime(datetime.fromtimestamp(now - 30, tz=timezone.utc), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after(earlier, now=now) == 0.0  # in the past: go now, never negative
    # RFC 850 form, also an HTTP-date (RFC 9110 §5.6.7)
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:00 GMT", now=1_700_000_000.0) == 40.0


def test_parse_retry_after_asctime_date_is_utc_whatever_the_local_zone(monkeypatch):
    # asctime dates carry no zone; HTTP says they are UTC. Parsed as local time they are hours off.
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after("Tue Nov 14 22:14:00 2023", now=1_700_000_000.0) == 40.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1e3", "12 seconds", "Mon, 99 Foo 2023"])
def test_parse_retry_after_garbage_is_none(value):
    assert parse_retry_after(value) is None


def test_parse_retry_after_is_capped():
    assert parse_retry_after("86400") == 300.0
    assert parse_retry_after("9" * 400) == 300.0
    assert parse_retry_after("86400", cap=10) == 10.0
    far = email.utils.format_datetime(datetime.fromtimestamp(2_000_000_000, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(far, now=1_700_000_000.0) == 300.0


# ---- connection failures: nothing was sent, so retrying is safe


def test_connection_refused_is_retried_then_gives_up(make_client, make_sandbox, audio_dir):
    port = free_port()
    sleep = RecordingSleep()
    policy = RetryPolicy(attempts=4, base=0.01, cap=0.05)
    client = make_client(f"http://127.0.0.1:{port}/api/v3", sleep=sleep, retry=policy)

    with pytest.raises(GaveUp) as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    exc = info.value
    assert exc.created is False and exc.status is None and exc.outcome == "not sent"
    assert isinstance(exc.__cause__, ConnectFailed)
    assert "nothing was sent" in str(exc) and "after 4 attempts" in str(exc)
    assert len(sleep.waits) == policy.attempts - 1
    assert all(0 <= w <= policy.cap for w in sleep.waits)
    # Something listening there now has received nothing.
    sandbox = make_sandbox(port=port)
    assert sandbox.messages() == [] and sandbox.request_count == 0


def test_connection_refused_then_the_server_comes_up(make_client, tmp_path, audio_dir):
    port = free_port()
    config = SandboxConfig(token=TOKEN, data_dir=tmp_path / "late", port=port)
    sandbox = Sandbox(config)
    sleep = RecordingSleep({2: sandbox.start})  # after the 2nd refused attempt
    client = make_client(f"http://127.0.0.1:{port}/api/v3", sleep=sleep)
    try:
        msg = client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
        assert msg.attempts == 3 and len(sleep.waits) == 2
        [stored] = sandbox.messages()
        assert msg.id == stored["id"]
        assert sandbox.request_count == 1
    finally:
        sandbox.stop()


def test_send_once_does_not_retry(make_client, audio_dir):
    sleep = RecordingSleep()
    client = make_client(f"http://127.0.0.1:{free_port()}/api/v3", sleep=sleep)
    with pytest.raises(ConnectFailed) as info:
        client.send_once(WS, CONTACT, audio_dir / "tone.mp3")
    assert info.value.retryable and info.value.created is False
    assert sleep.waits == []


# ---- the outcome is unknown: exactly one request, never retried


def test_500_is_unknown_and_not_retried(make_sandbox, make_client, audio_dir):
    sandbox = make_sandbox(faults=Faults(rate_500=1.0))
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep)

    with pytest.raises(OutcomeUnknown) as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.created is None and info.value.outcome == "unknown"
    assert info.value.status == 500
    assert sandbox.request_count == 1 and sleep.waits == []


@pytest.mark.parametrize("mode, status", [("drop", None), ("502", 502)])
def test_lost_answer_is_unknown_and_the_message_exists(make_sandbox, make_client, audio_dir, mode, status):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode=mode))
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep)

    with pytest.raises(OutcomeUnknown) as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.created is None and info.value.status == status
    assert sandbox.request_count == 1 and sleep.waits == []
    [stored] = sandbox.messages()
    assert stored["sha256"] == sha256(audio_dir / "tone.mp3")


def test_lost_answer_read_timeout_is_unknown(make_sandbox, make_client, audio_dir):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="delay", lost_delay=3.0))
    sleep = RecordingSleep()
    client = make_client(sandbox.url, sleep=sleep, read_timeout=0.5)

    started = time.monotonic()
    with pytest.raises(OutcomeUnknown, match="read timeout") as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
    assert time.monotonic() - started < 2.5

    assert info.value.created is None
    assert sandbox.request_count == 1 and sleep.waits == []
    assert len(sandbox.messages()) == 1
    sandbox.stop()  # wakes the delayed answer


# ---- the token never shows


def _exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts += [str(e), repr(e)]
        e = e.__cause__ or e.__context__
    return texts


def test_token_canary_never_appears(make_sandbox, make_client, make_recorder, audio_dir, tmp_path, caplog):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    old_levels = {name: logging.getLogger(name).level for name in ("urllib3", "audiopipe", "audiopipe.send.client")}
    for name in old_levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    def expect(exc_type: type[BaseException], call: Callable[[], Any]) -> None:
        with pytest.raises(exc_type) as info:
            call()
        texts.extend(_exception_texts(info.value))

    try:
        mp3 = audio_dir / "tone.mp3"
        ok = make_sandbox(token=CANARY, data_dir=tmp_path / "ok")
        client = make_client(ok.url, token=CANARY)
        texts.append(repr(client))
        texts.append(repr(client.send_audio(WS, CONTACT, mp3)))  # the canary went out and worked

        wrong = make_sandbox(data_dir=tmp_path / "wrong")  # expects TOKEN, gets the canary
        expect(AuthError, lambda: make_client(wrong.url, token=CANARY).send_audio(WS, CONTACT, mp3))
        expect(UsageError, lambda: client.send_audio(WS, "nope", mp3))
        expect(RefusedError, lambda: client.send_audio(WS, CONTACT, audio_dir / "isom.m4a"))

        csv_path = tmp_path / "contacts.csv"
        csv_path.write_text(f"contact\n{CONTACT}\n", encoding="utf-8")
        strict = make_sandbox(token=CANARY, data_dir=tmp_path / "strict", contacts_csv=csv_path)
        expect(RefusedError, lambda: make_client(strict.url, token=CANARY).send_audio(WS, str(uuid.uuid4()), mp3))
        proxy = make_sandbox(token=CANARY, data_dir=tmp_path / "proxy", proxy_body_limit=1000)
        expect(RefusedError, lambda: make_client(proxy.url, token=CANARY).send_audio(WS, CONTACT, mp3))
        php = make_sandbox(token=CANARY, data_dir=tmp_path / "php", php_upload_limit=1000)
        expect(RefusedError, lambda: make_client(php.url, token=CANARY).send_audio(WS, CONTACT, mp3))
        limited = make_sandbox(token=CANARY, data_dir=tmp_path / "429", faults=Faults(rate_429=1.0))
        expect(GaveUp, lambda: make_client(limited.url, token=CANARY).send_audio(WS, CONTACT, mp3))
        expect(GaveUp, lambda: make_client(f"http://127.0.0.1:{free_port()}/api/v3",
                                           token=CANARY).send_audio(WS, CONTACT, mp3))
        for name, faults, timeout in [
            ("500", Faults(rate_500=1.0), 10.0),
            ("drop", Faults(rate_lost=1.0, lost_mode="drop"), 10.0),
            ("502", Faults(rate_lost=1.0, lost_mode="502"), 10.0),
            ("delay", Faults(rate_lost=1.0, lost_mode="delay", lost_delay=3.0), 0.3),
        ]:
            sandbox = make_sandbox(token=CANARY, data_dir=tmp_path / name, faults=faults)
            expect(OutcomeUnknown, lambda sandbox=sandbox, timeout=timeout:
                   make_client(sandbox.url, token=CANARY, read_timeout=timeout).send_audio(WS, CONTACT, mp3))
            sandbox.stop()
        expect(UsageError, lambda: LancepilotClient(token=CANARY, base_url="http://api.example.com/v3"))
        # a token pasted into the URL's user-info, or the URL's password, is never echoed
        for url in (f"https://{CANARY}@api.example.com/v3", f"https://user:{CANARY}@api.example.com/v3",
                    f"http://{CANARY}\\@127.0.0.1:{free_port()}/v3", f"{ok.url}?token={CANARY}"):
            expect(UsageError, lambda url=url: LancepilotClient(token=TOKEN, base_url=url))
        elsewhere = make_recorder(lambda r, req: (307, {"Location": f"http://localhost:{ok.port}/x?t={CANARY}"}, b""))
        expect(RefusedError, lambda: make_client(elsewhere.origin + "/api/v3", token=CANARY)
               .send_audio(WS, CONTACT, mp3))
        refused = make_client(f"http://127.0.0.1:{free_port()}/api/v3", token=CANARY, retry=RetryPolicy(attempts=1))
        expect(ConnectFailed, lambda: refused.send_once(WS, CONTACT, mp3))
        expect(ConnectFailed, lambda: make_client(f"https://127.0.0.1:{ok.port}/api/v3", token=CANARY)
               .send_once(WS, CONTACT, mp3))  # a TLS handshake with a plain http server
        expect(UsageError, lambda: LancepilotClient(token=CANARY + " x", base_url=ok.url))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in old_levels.items():
            logging.getLogger(name).setLevel(level)

    logged = stream.getvalue()
    assert "POST http://127.0.0.1" in logged  # our debug lines were captured...
    assert "urllib3.connectionpool" in caplog.text or "Starting new HTTP connection" in logged  # ...and urllib3's
    assert len(texts) > 30
    everything = "\n".join([logged, caplog.text, *texts, *(r.getMessage() for r in caplog.records)])
    assert CANARY not in everything
    assert CANARY.split("-")[1] not in everything


# ---- redirects: the token stays with its host


def test_307_to_another_host_is_refused_and_nothing_goes_there(make_recorder, make_client, audio_dir):
    other = make_recorder(created)
    first = make_recorder(lambda r, req: (307, {"Location": other.origin + "/elsewhere/audio"}, b""))
    client = make_client(first.origin + "/api/v3")

    with pytest.raises(RefusedError, match="another origin") as info:
        client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.created is False and info.value.status == 307
    assert first.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert other.requests == []  # neither the body nor the token; tests/send/test_origin.py has the rest


def test_307_to_the_same_host_keeps_the_token(make_recorder, make_client, audio_dir):
    def respond(recorder: Recorder, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if request["path"].startswith("/api/"):
            return 307, {"Location": "/v4/moved"}, b""
        return created(recorder, request)

    server = make_recorder(respond)
    client = make_client(server.origin + "/api/v3")

    msg = client.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert msg.id == "rec-2"
    assert [r["path"] for r in server.requests][1] == "/v4/moved"
    assert [r["headers"].get("Authorization") for r in server.requests] == [f"Bearer {TOKEN}"] * 2
    assert (audio_dir / "tone.mp3").read_bytes() in server.requests[1]["body"]


def test_redirect_loop_stops(make_recorder, make_client):
    server = make_recorder(lambda r, req: (308, {"Location": req["path"]}, b""))
    client = make_client(server.origin + "/api/v3")
    with pytest.raises(RefusedError, match="too many redirects") as info:
        client.send_audio(WS, CONTACT, "https://x.example/a.mp3")
    assert info.value.created is False
    assert len(server.requests) == MAX_REDIRECTS + 1


def test_other_redirects_are_not_followed(make_recorder, make_client):
    server = make_recorder(lambda r, req: (302, {"Location": "http://127.0.0.1:9/x"}, b""))
    client = make_client(server.origin + "/api/v3")
    with pytest.raises(RefusedError, match="302") as info:
        client.send_audio(WS, CONTACT, "https://x.example/a.mp3")
    assert info.value.status == 302 and len(server.requests) == 1


@pytest.mark.parametrize("origin, target, allowed", [
    ("https://api.example.com/v3", "https://api.example.com/v4/x", True),
    ("https://api.example.com/v3", "http://api.example.com/v3", False),        # downgrade
    ("https://api.example.com:8443/v3", "http://api.example.com:8443/v3", False),
    ("https://api.example.com/v3", "https://evil.example.net/v3", False),
    ("https://api.example.com/v3", "https://api.example.com:8443/v3", False),  # another port
    ("https://api.example.com/v3", "https://sub.api.example.com/v3", False),
    ("http://127.0.0.1:8000/v3", "http://127.0.0.1:8000/x", True),
    ("http://127.0.0.1:8000/v3", "https://127.0.0.1:8000/x", False),           # another origin, even up
    ("https://api.example.com/v3", "https://api.example.com:443/x", True),     # the default port
    ("https://api.example.com/v3", "https://API.example.com/x", True),
    ("http://127.0.0.1:8000/v3", "http://evil.example\\@127.0.0.1:8000/x", False),  # ambiguous
    ("http://127.0.0.1:8000/v3", "http://evil.example#@127.0.0.1:8000/x", False),
    ("http://127.0.0.1:8000/v3", "http://127.0.0.1:8001/x", False),
    ("http://127.0.0.1:8000/v3", "http://localhost:8000/x", False),
])
def test_may_carry_token(origin, target, allowed):
    assert LancepilotClient._may_carry_token(origin, target) is allowed


def test_plain_http_only_to_loopback(monkeypatch):
    monkeypatch.delenv("LANCEPILOT_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="plain http"):
        LancepilotClient(token=TOKEN, base_url="http://api.example.com/api/v3")
    with pytest.raises(UsageError, match="plain http"):
        LancepilotClient(token=TOKEN, base_url="http://10.0.0.5:8000/api/v3")
    with pytest.raises(UsageError, match="must start with https://"):
        LancepilotClient(token=TOKEN, base_url="ftp://api.example.com/api/v3")
    for ok in ("http://127.0.0.1:8000/api/v3", "http://localhost/api/v3", "http://[::1]:8000/api/v3",
               "https://api.example.com/api/v3"):
        LancepilotClient(token=TOKEN, base_url=ok).close()
    client = LancepilotClient(token=TOKEN, base_url="http://api.example.com/api/v3/", allow_insecure_http=True)
    assert client.base_url == "http://api.example.com/api/v3"
    assert TOKEN not in repr(client)
    client.close()


# ---- streaming: the file is never read into memory

# Runs in a child process: tracemalloc sees every thread, and werkzeug's server (the in-process
# sandbox) allocates a 10 MB buffer when it drains the socket after each answer, which would be
# counted against the client.
_MEASURE = """
import json, sys, tracemalloc
from pathlib import Path
import requests
from audiopipe.send.client import LancepilotClient
mode, base, token, ws, contact, path = sys.argv[1:]
client = LancepilotClient(token=token, base_url=base, read_timeout=60)
tracemalloc.start()
if mode == "client":
    result = client.send_audio(ws, contact, Path(path)).id
else:  # the naive way: requests builds the whole multipart body in memory
    with open(path, "rb") as fh:
        result = requests.post(f"{base}/workspaces/{ws}/contacts/{contact}/messages/audio", files={"file": fh},
                               headers={"Authorization": f"Bearer {token}"}, timeout=60).json()["data"]["id"]
print(json.dumps({"id": result, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def _peak_upload(mode: str, sandbox: Sandbox, path: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, mode, sandbox.url, TOKEN, WS, CONTACT, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_15mb_upload_keeps_memory_flat(make_sandbox, audio_dir, tmp_path):
    sandbox = make_sandbox()
    big = padded_mp3(audio_dir / "tone.mp3", tmp_path / "big.mp3", 15 * 1024 * 1024)

    client = _peak_upload("client", sandbox, big)
    naive = _peak_upload("naive", sandbox, big)

    assert naive["peak"] > 15 * 1024 * 1024  # the measurement does see a file read into memory
    assert client["peak"] < 2 * 1024 * 1024, f"peak {client['peak'] / 1e6:.1f} MB"
    first, second = sandbox.messages()
    assert (client["id"], naive["id"]) == (first["id"], second["id"])
    assert first["sha256"] == sha256(big)
