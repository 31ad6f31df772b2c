"""The Lancepilot sandbox, over real HTTP, with real audio made by ffmpeg and sniffed by libmagic."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import CONTACT, MAX_BYTES, MIMES_MSG, SIZE_MSG, WS

from audiopipe.errors import UsageError
from audiopipe.preparation.sniff import sniff
from audiopipe.sandbox.app import Faults, Sandbox, SandboxConfig, load_contacts, serve

pytestmark = pytest.mark.timeout(60)

TOKEN = "sandbox-test-token"

# name -> ffmpeg output options; each is one second of a 440 Hz tone (docs/api.md §2 for the brands).
AUDIO_RECIPES: dict[str, list[str]] = {
    "tone.mp3": ["-c:a", "libmp3lame", "-b:a", "32k"],
    "tone.m4a": ["-c:a", "aac"],                 # ipod muxer, brand "M4A ": audio/x-m4a
    "isom.m4a": ["-c:a", "aac", "-f", "mp4"],    # brand "isom": video/mp4, refused
    "tone.aac": ["-c:a", "aac"],                 # ADTS
    "voice.opus": ["-c:a", "libopus", "-b:a", "16k"],
    "vorbis.ogg": ["-c:a", "libvorbis"],
    "tone.wav": [],
}


@pytest.fixture(scope="session")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("audio")
    files = {}
    for name, options in AUDIO_RECIPES.items():
        out = folder / name
        subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-ac", "1", *options, str(out)],
                       check=True, timeout=60)
        files[name] = out
    return files


def audio_url(sandbox: Sandbox, workspace: str = WS, contact: str = CONTACT) -> str:
    return f"{sandbox.url}/workspaces/{workspace}/contacts/{contact}/messages/audio"


def bearer(token: str | None = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def post_file(sandbox: Sandbox, path: Path, *, name: str | None = None, token: str | None = TOKEN,
              timeout: float | tuple[float, float] = 10, **url_args: str) -> requests.Response:
    with path.open("rb") as fh:
        return requests.post(audio_url(sandbox, **url_args), headers=bearer(token),
                             files={"file": (name or path.name, fh)}, timeout=timeout)


_SERVED: dict[str, str] = {}  # "url": the served_mp3_url of this session, set by _served_mp3 below


@pytest.fixture(autouse=True)
def _served_mp3(served_mp3_url: str) -> None:
    _SERVED["url"] = served_mp3_url


def post_url(sandbox: Sandbox, value: object = None, **kwargs: Any) -> requests.Response:
    """Post ``{"file": value}``, by default the URL of a real MP3 the sandbox can fetch."""
    value = _SERVED["url"] if value is None else value
    return requests.post(audio_url(sandbox), headers=bearer(), json={"file": value}, timeout=10, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_files(sandbox: Sandbox) -> list[Path]:
    return sorted((sandbox.config.data_dir / "files").iterdir())


# ---- accepted and refused content


@pytest.mark.parametrize("name, mime", [
    ("tone.mp3", "audio/mpeg"),
    ("tone.m4a", "audio/x-m4a"),
    ("tone.aac", "audio/x-hx-aac-adts"),
    ("voice.opus", "audio/ogg"),
    ("vorbis.ogg", "audio/ogg"),
])
def test_accepted_audio_is_created_and_stored(make_sandbox, audio, name, mime):
    sandbox = make_sandbox()
    response = post_file(sandbox, audio[name])

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == 201 and body["message"] == "Resource created successfully."
    data = body["data"]
    assert uuid.UUID(data["id"])
    assert (data["workspace_id"], data["contact_id"], data["type"]) == (WS, CONTACT, "audio")
    assert data["file_name"] == name
    assert data["mime"] == mime
    assert data["size"] == audio[name].stat().st_size
    assert data["sha256"] == sha256(audio[name])
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]

    [message] = sandbox.messages()
    assert {k: message[k] for k in data} == data
    stored = Path(message["file_path"])
    assert stored.parent == sandbox.config.data_dir / "files"
    assert stored.name.startswith(data["id"] + ".")
    assert sha256(stored) == data["sha256"]
    assert sandbox.request_count == 1


@pytest.mark.parametrize("name", ["isom.m4a", "tone.wav"])
def test_content_outside_the_list_is_refused_whatever_its_name(make_sandbox, audio, name):
    sandbox = make_sandbox()
    response = post_file(sandbox, audio[name], name="renamed.m4a")

    assert response.status_code == 422
    assert response.json() == {"message": "Validation error", "errors": {"file": [MIMES_MSG]}}
    assert sandbox.messages() == []
    assert stored_files(sandbox) == []  # no leftover partial file either


def test_missing_file_field(make_sandbox, audio):
    sandbox = make_sandbox()
    with audio["tone.mp3"].open("rb") as fh:
        multipart = requests.post(audio_url(sandbox), headers=bearer(), data={"caption": "hi"},
                                  files={"audio": ("tone.mp3", fh)}, timeout=10)
    empty_json = requests.post(audio_url(sandbox), headers=bearer(), json={}, timeout=10)
    no_body = requests.post(audio_url(sandbox), headers=bearer(), timeout=10)

    expected = {"message": "Validation error", "errors": {"file": ["The file field is required."]}}
    for response in (multipart, empty_json, no_body):
        assert response.status_code == 422
        assert response.json() == expected
    assert sandbox.messages() == []


@pytest.mark.parametrize("value", ["ftp://example.com/a.mp3", "not a url", "https://", "file:///etc/passwd", 42])
def test_bad_url_is_refused(make_sandbox, value):
    sandbox = make_sandbox()
    response = post_url(sandbox, value)

    assert response.status_code == 422
    assert response.json()["errors"] == {"file": ["The file field must be a valid URL."]}
    assert sandbox.messages() == []


def test_json_url_is_fetched_and_stored(make_sandbox, served_mp3_url, audio_dir):
    sandbox = make_sandbox()
    response = post_url(sandbox, served_mp3_url)

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["url"] == served_mp3_url
    assert data["file_name"] == "hello world.mp3"
    assert data["sha256"] == sha256(audio_dir / "tone.mp3") and data["mime"] == "audio/mpeg"
    [message] = sandbox.messages()
    assert message["url"] == served_mp3_url
    assert stored_files(sandbox) == [Path(message["file_path"])]


# ---- auth and routing


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_missing_or_wrong_token(make_sandbox, audio, token):
    sandbox = make_sandbox()
    response = post_file(sandbox, audio["tone.mp3"], token=token)

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}
    assert sandbox.messages() == []


def test_token_is_checked_before_the_path(make_sandbox, audio):
    sandbox = make_sandbox()
    response = post_file(sandbox, audio["tone.mp3"], token="wrong", contact="not-a-uuid")
    assert response.status_code == 401


@pytest.mark.parametrize("where", ["workspace", "contact"])
def test_non_uuid_path_is_not_found(make_sandbox, audio, where):
    sandbox = make_sandbox()
    response = post_file(sandbox, audio["tone.mp3"], **{where: "12345"})

    assert response.status_code == 404
    assert response.json() == {"message": "Resource not found.", "status": 404}
    assert sandbox.messages() == []


def test_unknown_route_is_json_404(make_sandbox):
    sandbox = make_sandbox()
    response = requests.post(f"{sandbox.url}/workspaces/{WS}/contacts/{CONTACT}/messages/video",
                             headers=bearer(), json={"file": "https://x.example/a.mp4"}, timeout=10)
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_strict_mode_knows_only_listed_contacts(make_sandbox, tmp_path):
    other_contact, other_ws = str(uuid.uuid4()), str(uuid.uuid4())
    anywhere = str(uuid.uuid4())
    csv_path = tmp_path / "contacts.csv"
    csv_path.write_text(f"Contact_ID,workspace,name\n{CONTACT.upper()},{WS},Ann\n{anywhere},,Bob\n",
                        encoding="utf-8")
    sandbox = make_sandbox(contacts_csv=csv_path)

    assert post_url(sandbox).status_code == 201
    unlisted = requests.post(audio_url(sandbox, contact=other_contact), headers=bearer(),
                             json={"file": "https://x.example/a.mp3"}, timeout=10)
    wrong_ws = requests.post(audio_url(sandbox, workspace=other_ws), headers=bearer(),
                             json={"file": "https://x.example/a.mp3"}, timeout=10)
    any_ws = requests.post(audio_url(sandbox, workspace=other_ws, contact=anywhere), headers=bearer(),
                           json={"file": _SERVED["url"]}, timeout=10)

    assert unlisted.status_code == 404
    assert unlisted.json() == {"message": "Resource not found.", "status": 404}
    assert wrong_ws.status_code == 404
    assert any_ws.status_code == 201
    assert len(sandbox.messages()) == 2


def test_contacts_csv_without_contact_column_is_a_usage_error(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("name,phone\nAnn,123\n", encoding="utf-8")
    with pytest.raises(UsageError, match="contact column"):
        load_contacts(csv_path)
    csv_path.write_text("contact\nnot-a-uuid\n", encoding="utf-8")
    with pytest.raises(UsageError, match="line 2"):
        load_contacts(csv_path)


# ---- sizes and limits in front of the rule


def test_size_limit_is_16384_kibibytes_exactly(make_sandbox, audio, tmp_path):
    sandbox = make_sandbox()
    big = tmp_path / "big.mp3"
    shutil.copyfile(audio["tone.mp3"], big)
    with big.open("ab") as fh:
        fh.truncate(MAX_BYTES)  # pads with zero bytes after the real MP3 frames
    assert big.stat().st_size == MAX_BYTES
    assert sniff(big).mime == "audio/mpeg"  # libmagic looks at the head, so it is still an MP3

    at_limit = post_file(sandbox, big)
    assert at_limit.status_code == 201, at_limit.text
    assert at_limit.json()["data"]["size"] == MAX_BYTES
    assert at_limit.json()["data"]["sha256"] == sha256(big)

    with big.open("ab") as fh:
        fh.write(b"\0")
    assert sniff(big).mime == "audio/mpeg"
    over = post_file(sandbox, big)
    assert over.status_code == 422
    assert over.json()["errors"] == {"file": [SIZE_MSG]}
    assert len(sandbox.messages()) == 1
    assert len(stored_files(sandbox)) == 1


def test_php_upload_limit_fails_the_upload(make_sandbox, audio):
    size = audio["tone.mp3"].stat().st_size
    sandbox = make_sandbox(php_upload_limit=size - 1)
    response = post_file(sandbox, audio["tone.mp3"])

    assert response.status_code == 422
    assert response.json() == {"message": "Validation error", "errors": {"file": ["The file failed to upload."]}}
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_proxy_body_limit_answers_413_html(make_sandbox, audio):
    sandbox = make_sandbox(proxy_body_limit=50_000)
    over = post_file(sandbox, audio["tone.wav"])  # about 88 kB
    under = post_file(sandbox, audio["tone.mp3"])

    assert over.status_code == 413
    assert over.headers["Content-Type"].startswith("text/html")
    assert "413 Request Entity Too Large" in over.text
    assert under.status_code == 201
    assert len(sandbox.messages()) == 1


# ---- faults


def test_seeded_429_has_retry_after(make_sandbox, audio):
    sandbox = make_sandbox(faults=Faults(seed=1, rate_429=1.0, retry_after=3))
    response = post_file(sandbox, audio["tone.mp3"])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert sandbox.messages() == []


def test_fault_draws_are_reproducible(tmp_path):
    def statuses(data_dir: Path) -> list[int]:
        config = SandboxConfig(token=TOKEN, data_dir=data_dir, faults=Faults(seed=7, rate_429=0.5))
        with Sandbox(config) as sandbox:
            return [post_url(sandbox).status_code for _ in range(12)]

    first, second = statuses(tmp_path / "a"), statuses(tmp_path / "b")
    assert first == second
    assert {201, 429} == set(first)


def test_rps_limit(make_sandbox):
    sandbox = make_sandbox(faults=Faults(rps_limit=2))
    codes = [post_url(sandbox).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    time.sleep(1.05)
    assert post_url(sandbox).status_code == 201


def test_500_fault_stores_nothing(make_sandbox, audio):
    sandbox = make_sandbox(faults=Faults(rate_500=1.0))
    response = post_file(sandbox, audio["tone.mp3"])

    assert response.status_code == 500
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_lost_answer_drop_stores_but_client_sees_connection_error(make_sandbox, audio):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="drop"))
    with pytest.raises(requests.ConnectionError):
        post_file(sandbox, audio["tone.mp3"])

    [message] = sandbox.messages()
    assert message["sha256"] == sha256(audio["tone.mp3"])
    assert sandbox.request_count == 1  # requests did not retry the POST behind our back


def test_lost_answer_502_stores(make_sandbox, audio):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="502"))
    response = post_file(sandbox, audio["tone.mp3"])

    assert response.status_code == 502
    assert "502 Bad Gateway" in response.text
    assert len(sandbox.messages()) == 1


def test_lost_answer_delay_gives_read_timeout_but_stores(make_sandbox, audio):
    sandbox = make_sandbox(faults=Faults(rate_lost=1.0, lost_mode="delay", lost_delay=5.0))
    with pytest.raises(requests.ReadTimeout):
        post_file(sandbox, audio["tone.mp3"], timeout=(2.0, 0.3))
    assert len(sandbox.messages()) == 1

    started = time.monotonic()
    sandbox.stop()  # wakes the delayed answer instead of waiting for it
    assert time.monotonic() - started < 2.0


def test_latency_is_added(make_sandbox):
    sandbox = make_sandbox(faults=Faults(latency=0.3))
    started = time.monotonic()
    assert post_url(sandbox).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_fault_settings_are_checked():
    with pytest.raises(UsageError):
        Faults(rate_429=1.5)
    with pytest.raises(UsageError):
        Faults(lost_mode="sometimes")
    with pytest.raises(UsageError):
        SandboxConfig(token="", data_dir=Path("x"))


# ---- inspector, persistence, life cycle


def test_inspector_lists_messages(make_sandbox, audio):
    sandbox = make_sandbox()
    post_file(sandbox, audio["tone.mp3"])
    post_url(sandbox)
    base = sandbox.url.removesuffix("/api/v3")

    health = requests.get(f"{base}/_sandbox/health", timeout=10)
    listing = requests.get(f"{base}/_sandbox/messages", timeout=10)

    assert health.json() == {"ok": True}
    assert listing.status_code == 200
    assert listing.json() == sandbox.messages()
    assert [m["url"] is None for m in listing.json()] == [True, False]


def test_messages_survive_a_restart(tmp_path, audio):
    config = SandboxConfig(token=TOKEN, data_dir=tmp_path / "data")
    with Sandbox(config) as sandbox:
        created = post_file(sandbox, audio["tone.mp3"]).json()["data"]
    with Sandbox(config) as sandbox:
        [message] = sandbox.messages()
        assert message["id"] == created["id"]
        assert sha256(Path(message["file_path"])) == created["sha256"]
        assert post_url(sandbox).status_code == 201
        assert len(sandbox.messages()) == 2
    assert len(Sandbox(config).messages()) == 2  # readable while stopped too


def test_token_is_not_in_repr(tmp_path):
    config = SandboxConfig(token=TOKEN, data_dir=tmp_path)
    assert TOKEN not in repr(config)


def test_busy_port_is_a_usage_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match="cannot listen"):
            Sandbox(SandboxConfig(token=TOKEN, data_dir=tmp_path, port=port)).start()


def test_serve_starts_fast_and_returns_when_asked(tmp_path):
    stop = threading.Event()
    ready: list[Sandbox] = []
    started = time.monotonic()
    thread = threading.Thread(target=serve, args=(SandboxConfig(token=TOKEN, data_dir=tmp_path),),
                              kwargs={"stop_event": stop, "on_ready": ready.append})
    thread.start()
    try:
        deadline = started + 5
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready, "serve() did not become ready"
        assert time.monotonic() - started < 1.0
        base = ready[0].url.removesuffix("/api/v3")
        assert requests.get(f"{base}/_sandbox/health", timeout=5).json() == {"ok": True}
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
