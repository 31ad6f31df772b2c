"""The token and the upload go only to the origin the user configured (issue 7 §2), over real HTTP:
the configured server and a second origin both listen on loopback, and the second must receive
nothing at all (not a connection) when a base URL is ambiguous or a redirect points elsewhere.
Also: a connection failure is one plain line (no Python class names) that says what was sent."""

from __future__ import annotations

import csv
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CONTACT, WS, RecordingServer, clean_environ, invoke

from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.errors import ConnectFailed, OutcomeUnknown, RefusedError, SendError, UsageError
from audiopipe.send.client import LancepilotClient, RetryPolicy

pytestmark = pytest.mark.timeout(60)

TOKEN = "origin-test-token"
CANARY = "CANARY-5d1e8c4a"
ONCE = RetryPolicy(attempts=1)
# What a Python class name looks like in a message (ConnectionError, NewConnectionError, ...).
CLASS_NAME = re.compile(r"[A-Z][a-z]+[A-Z]\w*|Error\b|Exception\b|Errno|Max retries|HTTPS?Connection")

Respond = Callable[["Server", dict[str, Any]], tuple[int, dict[str, str], bytes]]


Server = RecordingServer  # counts connections, records requests, answers with ``respond(server, request)``


def created(server: Server, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """What a hostile second origin answers: a 201 with a plausible message id."""
    return 201, {"Content-Type": "application/json"}, b'{"data": {"id": "from-elsewhere"}}'


def redirect_to(location: str | Callable[[], str], status: int = 307) -> Respond:
    return lambda server, request: (status, {"Location": location() if callable(location) else location}, b"")


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(respond: Respond = created, tls: ssl.SSLContext | None = None) -> Server:
        started.append(Server(respond, tls))
        return started[-1]

    yield factory
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the real openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


@pytest.fixture
def tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


def client(base_url: str, token: str = TOKEN, **kwargs: Any) -> LancepilotClient:
    kwargs.setdefault("retry", ONCE)
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("read_timeout", 5.0)
    return LancepilotClient(token=token, base_url=base_url, **kwargs)


def cli(*args: str, base_url: str, tmp_path: Path, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    """``audiopipe ARGS`` as a user runs it (in process), the API settings in the environment."""
    env = clean_environ(drop=("LANCEPILOT_", "AUDIOPIPE_"), LANCEPILOT_BASE_URL=base_url, LANCEPILOT_TOKEN=token,
                        AUDIOPIPE_SETTLE="0", AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path))
    done = invoke(args, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    assert token not in done.stdout + done.stderr
    return done


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ---- a redirect of the POST to another origin is never followed


def other_origins(api: Server, other: Server) -> dict[str, str]:
    """Locations on another origin than ``api``, each one an address that ``other`` listens on."""
    return {
        "another port": f"{other.origin}/api/v3/elsewhere?sig=SECRET-SIG",
        "another host name": f"http://localhost:{other.port}/api/v3/elsewhere?sig=SECRET-SIG",
        "scheme-relative": f"//localhost:{other.port}/elsewhere?sig=SECRET-SIG",
    }


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("kind", ["another port", "another host name", "scheme-relative"])
def test_redirect_to_another_origin_sends_nothing_there(make_server, audio_dir, status, kind):
    other = make_server(created)
    api = make_server(redirect_to(lambda: other_origins(api, other)[kind], status))

    with client(api.origin + "/api/v3") as c, pytest.raises(RefusedError) as info:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert other.untouched()  # not the body, not the token, not even a connection
    assert len(api.requests) == 1
    exc = info.value
    assert exc.created is False and exc.status == status
    message = str(exc)
    assert f"{status}" in message and "another origin" in message and "nothing was sent there" in message
    assert f":{other.port}" in message  # where it pointed...
    assert "SECRET-SIG" not in message and "elsewhere" not in message  # ...host only


def test_redirect_to_the_sandbox_on_another_port_reaches_nothing(make_server, make_sandbox, audio_dir):
    sandbox = make_sandbox()
    endpoint = f"{sandbox.url}/workspaces/{WS}/contacts/{CONTACT}/messages/audio"
    api = make_server(redirect_to(endpoint))
    with client(api.origin + "/api/v3") as c, pytest.raises(RefusedError, match="another origin"):
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
    assert sandbox.request_count == 0 and sandbox.messages() == []


@pytest.mark.parametrize("location", [
    "http://127.0.0.1:{other}\\@127.0.0.1:{api}/api/v3/x",   # backslash: urllib and urllib3 disagree
    "http://user@127.0.0.1:{api}/api/v3/x",                  # user-info, even on the same origin
    "/api/v3/x\t/y",                                         # a tab urllib would drop
    "http://127.0.0.1%2e:{api}/api/v3/x",                    # a percent-encoded host
])
def test_redirect_to_an_ambiguous_address_is_not_followed(make_server, audio_dir, location):
    other = make_server(created)
    api = make_server(redirect_to(lambda: location.format(other=other.port, api=api.port)))

    with client(api.origin + "/api/v3") as c, pytest.raises(RefusedError, match="will not follow") as info:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.created is False
    assert other.untouched() and len(api.requests) == 1


def test_cli_send_redirected_elsewhere_exits_1_and_prints_no_id(make_server, audio_dir, tmp_path):
    other = make_server(created)
    api = make_server(redirect_to(lambda: f"{other.origin}/x"))

    done = cli("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=api.origin + "/api/v3",
               tmp_path=tmp_path)

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # no message id: the API created nothing
    line = one_line(done.stderr)
    assert "another origin" in line and "not created" in line and "from-elsewhere" not in line
    assert other.untouched() and len(api.requests) == 1


def test_batch_records_a_redirect_elsewhere_as_failed_not_sent(make_server, audio_dir, tmp_path):
    other = make_server(created)
    api = make_server(redirect_to(lambda: f"{other.origin}/x"))
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "tone.mp3").write_bytes((audio_dir / "tone.mp3").read_bytes())
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"contact\n{CONTACT}\n", encoding="utf-8")
    state, report = tmp_path / "ledger.sqlite3", tmp_path / "report.csv"
    args = ["batch", str(folder), "--contacts", str(contacts), "-w", WS, "--state", str(state), "--quiet",
            "--rate", "0", "--report", str(report)]

    done = cli(*args, base_url=api.origin + "/api/v3", tmp_path=tmp_path)

    assert done.returncode == 1, done.stderr
    with open(report, newline="", encoding="utf-8") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["status"] == "failed" and row["message_id"] == ""
    assert "another origin" in row["error"]
    with SqliteLedger(state) as ledger:
        [recorded] = ledger.rows()
    assert recorded.state == "failed" and recorded.message_id is None
    uploads = lambda: [r for r in api.requests if r["body"] != b"{}"]  # noqa: E731 (not the token checks)
    assert other.untouched() and len(uploads()) == 1

    again = cli(*args, base_url=api.origin + "/api/v3", tmp_path=tmp_path)  # a refusal stays failed
    assert again.returncode == 1 and len(uploads()) == 1 and other.untouched()


def test_same_origin_redirect_is_still_followed_with_the_body(make_server, audio_dir):
    def respond(server: Server, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if request["path"].startswith("/api/v3/"):
            return 308, {"Location": f"http://127.0.0.1:{server.port}/v4/moved?x=1#frag"}, b""
        return created(server, request)

    api = make_server(respond)
    with client(api.origin + "/api/v3") as c:
        assert c.send_audio(WS, CONTACT, audio_dir / "tone.mp3").id == "from-elsewhere"
    assert [r["path"] for r in api.requests][1] == "/v4/moved?x=1"
    assert [r["headers"].get("Authorization") for r in api.requests] == [f"Bearer {TOKEN}"] * 2
    assert (audio_dir / "tone.mp3").read_bytes() in api.requests[1]["body"]


# ---- https never goes down to http


@pytest.mark.parametrize("same_port", [True, False])
def test_https_redirect_down_to_http_on_the_same_host_is_refused(make_server, tls, certificate, audio_dir,
                                                                 same_port):
    plain = make_server(created)
    api = make_server(redirect_to(lambda: f"http://127.0.0.1:{api.port if same_port else plain.port}/api/v3/x"),
                      tls=tls)

    with client(api.origin + "/api/v3") as c:
        c.session.verify = str(certificate[0])  # trust the test's own certificate, nothing else
        with pytest.raises(RefusedError, match="down from https to plain http") as info:
            c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert info.value.created is False
    assert len(api.requests) == 1 and api.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert plain.untouched()


def test_https_same_origin_redirect_keeps_tls_and_the_token(make_server, tls, certificate, audio_dir):
    def respond(server: Server, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return (307, {"Location": "/v4/moved"}, b"") if request["path"].startswith("/api/") else created(
            server, request)

    api = make_server(respond, tls=tls)
    with client(api.origin + "/api/v3") as c:
        c.session.verify = str(certificate[0])
        assert c.send_audio(WS, CONTACT, audio_dir / "tone.mp3").id == "from-elsewhere"
    assert [r["headers"].get("Authorization") for r in api.requests] == [f"Bearer {TOKEN}"] * 2


# ---- ambiguous base URLs: refused before any connection

AMBIGUOUS = [
    ("http://{other}\\@{api}/api/v3", "backslash"),          # urllib: api; urllib3 connects to other
    ("http://{api}\\@{other}/api/v3", "backslash"),
    ("http://{other}#@{api}/api/v3", "fragment"),
    ("http://{other}?@{api}/api/v3", "query"),
    ("http://{api}@{other}/api/v3", "user-info"),            # looks like host:port, is user-info
    ("http://user:hunter2-secret@{api}/api/v3", "user-info"),
    ("http://{api}/api/v3#x", "fragment"),
    ("http://{api}/api/v3?x=1", "query"),
    ("http://127.0.0.1\t:{api_port}/api/v3", "tab"),          # urllib drops tabs and newlines
    ("http://{api}/api\n/v3", "newline"),
    (" http://{api}/api/v3", "space"),
    ("http://{api}/api/v3\x00", "control character"),
    ("http://127.0.0.1%2e:{api_port}/api/v3", "percent-encoded"),
    ("http://%31%32%37.0.0.1:{api_port}/api/v3", "percent-encoded"),
    ("http://\uff4cocalhost:{api_port}/api/v3", "non-ASCII"),  # a fullwidth l
    ("http://localhost\u3002:{api_port}/api/v3", "non-ASCII"),  # an ideographic full stop
    ("http://localhost.:{api_port}/api/v3", "ends in a dot"),
    ("http://127.1:{api_port}/api/v3", "plain IPv4"),
    ("http://0x7f.0.0.1:{api_port}/api/v3", "plain IPv4"),
    ("http://2130706433:{api_port}/api/v3", "plain IPv4"),
    ("http://0177.0.0.1:{api_port}/api/v3", "plain IPv4"),
    ("http://127.0.0.1:/api/v3", "empty port"),
    ("http://127.0.0.1:0/api/v3", "port"),
    ("http://[::1%25lo]:{api_port}/api/v3", "percent-encoded"),
    ("http://{api}/api/../v3", ". or .."),
    ("http:/{api}/api/v3", "must start with"),
    ("http:///api/v3", "no host"),
]


@pytest.mark.parametrize("template, reason", AMBIGUOUS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(AMBIGUOUS)])
def test_ambiguous_base_url_is_refused_before_any_connection(make_server, audio_dir, template, reason):
    api, other = make_server(created), make_server(created)
    url = template.format(api=f"127.0.0.1:{api.port}", api_port=api.port, other=f"127.0.0.1:{other.port}")

    # Constructing and sending in one go: a client that accepted the URL would send right here.
    with pytest.raises(UsageError) as info, client(url, token=CANARY) as c:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")

    assert api.untouched() and other.untouched()
    message = str(info.value)
    assert "\n" not in message and reason in message and message.startswith("base URL ")
    assert CANARY not in message and "hunter2" not in message


@pytest.mark.parametrize("url, normalised", [
    ("HTTP://LocalHost:{port}/api/v3/", "http://localhost:{port}/api/v3"),
    ("http://127.0.0.1:0{port}/api/v3", "http://127.0.0.1:{port}/api/v3"),
    ("http://[0:0::1]:{port}/api/v3", "http://[::1]:{port}/api/v3"),
])
def test_a_clean_base_url_is_normalised_and_used_as_normalised(make_server, audio_dir, url, normalised):
    api = make_server(created)
    try:
        c = client(url.format(port=api.port))
    except UsageError as exc:
        if "[" in url:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        raise
    with c:
        assert c.base_url == normalised.format(port=api.port)
        if "[" in url:
            return  # the server listens on IPv4 only
        assert c.send_audio(WS, CONTACT, audio_dir / "tone.mp3").id == "from-elsewhere"
    assert api.requests[0]["headers"]["Host"] in (f"localhost:{api.port}", f"127.0.0.1:{api.port}")


def test_https_default_port_is_the_same_origin():
    with client("https://API.example.com:443/api/v3") as c:
        assert c.base_url == "https://api.example.com/api/v3"
        assert c._may_carry_token(c.base_url, "https://api.example.com:443/v4")
        assert not c._may_carry_token(c.base_url, "http://api.example.com:443/v4")


def test_cli_refuses_an_ambiguous_base_url_with_exit_2(make_server, audio_dir, tmp_path):
    api, other = make_server(created), make_server(created)
    url = f"http://127.0.0.1:{other.port}\\@127.0.0.1:{api.port}/api/v3"
    done = cli("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, base_url=url, tmp_path=tmp_path)
    assert done.returncode == 2
    assert "backslash" in one_line(done.stderr) and done.stdout == ""
    assert api.untouched() and other.untouched()


# ---- a connection failure is one plain line that says whether anything went out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full: the kernel drops new SYNs, so a connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    held = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        held.append(s)
    yield listener.getsockname()[1]
    for s in held:
        s.close()
    listener.close()


def hang_up(server: Server, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    raise ConnectionAbortedError("the test server hangs up without answering")


def assert_plain(exc: SendError, *expected: str) -> str:
    message = str(exc)
    assert "\n" not in message
    assert not CLASS_NAME.search(message), message
    for text in expected:
        assert text in message, message
    return message


def test_refused_connection_is_plain():
    with client(f"http://127.0.0.1:{free_port()}/api/v3") as c, pytest.raises(ConnectFailed) as info:
        c.send_once(WS, CONTACT, "https://x.example/a.mp3")
    assert_plain(info.value, "could not connect", "connection refused", "nothing was sent")


def test_dns_failure_is_plain():
    with client("https://no-such-host.invalid/api/v3") as c, pytest.raises(ConnectFailed) as info:
        c.send_once(WS, CONTACT, "https://x.example/a.mp3")
    assert_plain(info.value, "no-such-host.invalid", "DNS", "nothing was sent")


def test_connect_timeout_is_plain(full_backlog):
    started = time.monotonic()
    with client(f"http://127.0.0.1:{full_backlog}/api/v3", connect_timeout=0.5) as c, \
            pytest.raises(ConnectFailed) as info:
        c.send_once(WS, CONTACT, "https://x.example/a.mp3")
    assert time.monotonic() - started < 5
    assert_plain(info.value, "could not connect", "timed out after 0.5 s", "nothing was sent")


def test_untrusted_certificate_is_plain_and_not_retried(make_server, tls, audio_dir):
    api = make_server(created, tls=tls)
    waits: list[float] = []
    with client(api.origin + "/api/v3", retry=RetryPolicy(attempts=3, base=0.01), sleep=waits.append) as c, \
            pytest.raises(ConnectFailed) as info:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
    assert_plain(info.value, "TLS handshake", "certificate not trusted", "nothing was sent")
    assert api.requests == [] and waits == []  # one try: a certificate does not mend in seconds


def test_https_to_a_plain_http_port_is_plain(make_server, audio_dir):
    api = make_server(created)
    with client(f"https://127.0.0.1:{api.port}/api/v3") as c, pytest.raises(ConnectFailed) as info:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
    assert_plain(info.value, "TLS handshake", "http://", "nothing was sent")
    assert api.requests == []


def test_server_hanging_up_mid_request_is_plain_and_unknown(make_server, audio_dir):
    api = make_server(hang_up)
    with client(api.origin + "/api/v3") as c, pytest.raises(OutcomeUnknown) as info:
        c.send_audio(WS, CONTACT, audio_dir / "tone.mp3")
    message = assert_plain(info.value, "127.0.0.1", "may have been created")
    assert "closed the connection" in message or "was reset" in message
    assert len(api.requests) == 1


def test_cli_connection_error_is_one_plain_line(tmp_path, audio_dir):
    done = cli("send", str(audio_dir / "tone.mp3"), "-w", WS, "-c", CONTACT, "--retries", "0",
               base_url=f"http://127.0.0.1:{free_port()}/api/v3", tmp_path=tmp_path)
    assert done.returncode == 5
    line = one_line(done.stderr)
    assert "connection refused" in line and "nothing was sent" in line
    assert not CLASS_NAME.search(line.removeprefix("audiopipe: error: ")), line


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_base_url_variable_is_refused_not_taken_for_the_real_api(
        value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A script whose variable came out blank must not send its (sandbox, staging) token to production."""
    from audiopipe.errors import UsageError
    from audiopipe.send.client import LancepilotClient

    monkeypatch.setenv("LANCEPILOT_BASE_URL", value)
    with pytest.raises(UsageError, match="LANCEPILOT_BASE_URL is set but empty"):
        LancepilotClient(token="t0k3n")
    env = clean_environ(drop=("LANCEPILOT_", "AUDIOPIPE_"), LANCEPILOT_BASE_URL=value, LANCEPILOT_TOKEN="t0k3n",
                        HOME=str(tmp_path))
    proc = invoke(["send", "--url", "https://example.invalid/a.mp3", "-w", "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11",
                   "-c", "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"], env=env)
    # blank: "set but empty"; spaces: refused as a URL with a space; either way nothing goes out
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "set but empty" in proc.stderr or "refused: it contains a space" in proc.stderr, proc.stderr
    doctor = invoke(["doctor"], env=env)
    assert any(line.startswith("fail") and "base URL" in line for line in doctor.stdout.splitlines()), \
        doctor.stdout
