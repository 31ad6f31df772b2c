"""The sandbox under attack: malformed requests, oversized and endless bodies, idle and slow
connections, many connections, hostile file names.

Real sockets against a real sandbox on 127.0.0.1. The traceback checks run it as
``audiopipe -v sandbox`` in a subprocess and read everything it wrote to stderr; the other tests use
the in-process ``make_sandbox`` fixture with short timeouts.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from helpers import CONTACT, WS, start_reading_stderr

pytestmark = pytest.mark.timeout(60)

TOKEN = "hardening-token"
AUDIO_PATH = f"/api/v3/workspaces/{WS}/contacts/{CONTACT}/messages/audio"
MiB = 1 << 20
# Short limits keep every test quick; the defaults are SandboxConfig's. SLACK is what a busy
# machine may add to a timeout before the server acts on it.
FAST = {"idle_timeout": 0.5, "header_timeout": 1.0, "body_timeout": 1.5}
SLACK = 2.0
FAST_FLAGS = ["--idle-timeout", "0.5", "--header-timeout", "1", "--body-timeout", "1.5"]


# --- raw HTTP ----------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def head(method: str = "POST", path: str = AUDIO_PATH, headers: list[tuple[str, str]] | None = None,
         *, auth: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(body: bytes, content_type: str = "application/json") -> bytes:
    return head(headers=[("Content-Type", content_type), ("Content-Length", str(len(body)))]) + body


def chunked(content_type: str = "application/json") -> bytes:
    return head(headers=[("Content-Type", content_type), ("Transfer-Encoding", "chunked")])


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())


def exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 10) -> Answer:
    """Send ``data`` (then end our side, if asked) and read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before taking everything: read what it said
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


MP = "multipart/form-data; boundary=b0undary"

# name -> (request bytes, end our side after sending?, expected status)
MALFORMED: dict[str, tuple[bytes, bool, int]] = {
    "json nested arrays": (post(b'{"file": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"), False, 422),
    "json nested objects": (post(b"{\"a\": " * 8_000 + b"1" + b"}" * 8_000), False, 422),
    "json array": (post(b"[1, 2]"), False, 422),
    "json string": (post(b'"https://cdn.example.com/a.mp3"'), False, 422),
    "json null": (post(b"null"), False, 422),
    "json file a number": (post(b'{"file": 12}'), False, 422),
    "json file an object": (post(b'{"file": {"url": "https://cdn.example.com/a.mp3"}}'), False, 422),
    "json file an empty list": (post(b'{"file": []}'), False, 422),
    "json file a 5000-digit number": (post(b'{"file": 1' + b"0" * 5000 + b"}"), False, 422),
    "json truncated": (post(b'{"file": "https://cdn.exa'), False, 422),
    "json not utf-8": (post(b'{"file": "https://cdn.example.com/\xff\xfe.mp3"}'), False, 422),
    "json body over 64 KiB": (post(b'{"file": "' + b"a" * 70_000 + b'"}'), False, 413),
    "urlencoded not utf-8": (post(b"file=\xff\xfe", "application/x-www-form-urlencoded"), False, 422),
    "chunked size not hex": (chunked() + b"zz\r\nabc\r\n0\r\n\r\n", False, 400),
    "chunked size negative": (chunked() + b"-5\r\nabc\r\n0\r\n\r\n", False, 400),
    "chunked data without its CRLF": (chunked() + b"3\r\nabcXY0\r\n\r\n", False, 400),
    "chunked body cut short": (chunked() + b"10\r\n{\"file\"", True, 400),
    "chunked multipart, bad size": (chunked(MP) + b"zz\r\n--b0undary\r\n", False, 400),
    "chunked and Content-Length": (head(headers=[("Content-Type", "application/json"), ("Content-Length", "2"),
                                                 ("Transfer-Encoding", "chunked")]) + b"2\r\n{}\r\n0\r\n\r\n",
                                   False, 400),
    "transfer-encoding gzip": (head(headers=[("Content-Type", "application/json"),
                                             ("Transfer-Encoding", "gzip")]) + b"{}", False, 400),
    "content-length not a number": (head(headers=[("Content-Type", "application/json"),
                                                  ("Content-Length", "abc")]) + b"{}", False, 400),
    "content-length negative": (head(headers=[("Content-Type", "application/json"),
                                              ("Content-Length", "-5")]) + b"{}", False, 400),
    "content-length twice, different": (head(headers=[("Content-Type", "application/json"), ("Content-Length", "2"),
                                                      ("Content-Length", "3")]) + b"{}", False, 400),
    "content-length longer than the body": (head(headers=[("Content-Type", "application/json"),
                                                          ("Content-Length", "1000")]) + b'{"file"', True, 400),
    "multipart truncated": (post(multipart([("file", "a.mp3", b"ID3")])[:-20], MP), False, 422),
    "multipart without boundary": (post(b"--x\r\n\r\n", "multipart/form-data"), False, 422),
    "multipart with 5000 parts": (post(multipart([("f", None, b"x")] * 5000), MP), False, 413),
    "multipart file name not utf-8": (post(b'--b0undary\r\nContent-Disposition: form-data; name="file"; '
                                           b'filename="\xff\xfe.mp3"\r\n\r\nID3\r\n--b0undary--\r\n', MP),
                                      False, 422),
    "request line of binary garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", False, 400),
    "request line over 64 KiB": (head("GET", "/" + "a" * 70_000), False, 414),
    "bad HTTP version": (b"GET /_sandbox/health HTTP/x.y\r\n\r\n", False, 400),
    "one header over 64 KiB": (head(headers=[("X-Big", "a" * 70_000)]), False, 431),
    "150 headers": (head(headers=[(f"X-H{i}", "a") for i in range(150)]), False, 431),
    "headers over 64 KiB in total": (head(headers=[(f"X-H{i}", "a" * 2000) for i in range(60)]), False, 431),
    "header not utf-8": (b"POST " + AUDIO_PATH.encode() + b" HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n"
                         b"Content-Length: 0\r\n\r\n", False, 401),
    "header line without a colon": (b"GET /_sandbox/health HTTP/1.1\r\n\x00\x01garbage\r\n\r\n", False, 200),
    "path not utf-8": (b"POST /api/v3/\xff\xfe HTTP/1.1\r\nContent-Length: 0\r\n\r\n", False, 404),
    "unknown method": (head("BREW"), False, 405),
}


def assert_api_shaped(answer: Answer, status: int) -> None:
    assert answer.status == status, answer
    if status == 200:
        return
    assert answer.headers["content-type"].startswith("application/json"), answer
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body


# --- the sandbox as a subprocess ---------------------------------------------------------------

@dataclass
class SandboxProcess:
    proc: subprocess.Popen[str]
    port: int
    stderr: list[str] = field(default_factory=list)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        return "".join(self.stderr)


def start_cli_sandbox(data_dir: Path, *flags: str) -> SandboxProcess:
    started = start_reading_stderr([sys.executable, "-m", "audiopipe", "-v", "sandbox", "--port", "0",
                                    "--token", TOKEN, "--data", str(data_dir), *flags],
                                   until="listening on", timeout=30)
    found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/api/v3", started.text)
    if found is None:
        started.proc.kill()
        pytest.fail("the sandbox did not start:\n" + started.text)
    return SandboxProcess(started.proc, int(found.group(1)), started.lines)


@pytest.fixture(scope="module")
def cli_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    sandbox = start_cli_sandbox(tmp_path_factory.mktemp("cli-sandbox"), *FAST_FLAGS)
    yield sandbox
    sandbox.stop()


def upload(base: str, path: Path, name: str | None = None) -> requests.Response:
    with path.open("rb") as fh:
        return requests.post(f"{base}{AUDIO_PATH}", headers={"Authorization": f"Bearer {TOKEN}"},
                             files={"file": (name or path.name, fh)}, timeout=10)


# --- malformed requests: a 4xx in the API's shape, never a traceback ----------------------------

@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_a_4xx_in_the_api_shape(cli_sandbox, name):
    data, half_close, status = MALFORMED[name]
    assert_api_shaped(exchange(cli_sandbox.port, data, half_close=half_close), status)


def test_malformed_requests_leave_no_traceback_and_one_line_each(tmp_path, audio_dir):
    sandbox = start_cli_sandbox(tmp_path / "data", *FAST_FLAGS)
    try:
        started_lines = len(sandbox.stderr)
        for data, half_close, _ in MALFORMED.values():
            exchange(sandbox.port, data, half_close=half_close)
        survived = upload(f"http://127.0.0.1:{sandbox.port}", audio_dir / "tone.mp3")
    finally:
        stderr = sandbox.stop()
    assert survived.status_code == 201, survived.text
    assert "Traceback" not in stderr and "Error on request" not in stderr, stderr
    log_lines = [line for line in sandbox.stderr[started_lines:] if "audiopipe.sandbox." in line]
    assert len(log_lines) <= len(MALFORMED) + 2, "\n".join(log_lines)  # + the stored upload, + stopped


# --- bodies are capped while they stream --------------------------------------------------------

def push_chunked(port: int, request_head: bytes, total: int, piece: int = 64 * 1024) -> tuple[int, Answer | None]:
    """Stream ``total`` bytes as a chunked body until the server answers or stops us; return how
    many bytes we managed to send, and the server's answer if it gave one."""
    frame = b"%x\r\n" % piece + b"x" * piece + b"\r\n"
    sent = 0
    answer: Answer | None = None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(request_head)
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    answer = read_answer(sock)  # it answered before the body was complete
                    break
                sock.sendall(frame)
                sent += piece
            # Keep pushing: a server that stopped reading must also stop us from sending.
            while sent < total:
                sock.sendall(frame)
                sent += piece
        except OSError:
            pass  # reset, broken pipe, or a send that timed out: the server is not taking more
        if answer is None:
            try:
                answer = read_answer(sock)
            except (OSError, http.client.HTTPException):
                pass
    return sent, answer


@pytest.mark.parametrize("content_type", ["application/json", MP])
def test_a_200_mb_chunked_body_is_cut_off_early_with_413(make_sandbox, audio_dir, content_type):
    sandbox = make_sandbox(post_max_size=2 * MiB, **FAST)
    sent, answer = push_chunked(sandbox.port, chunked(content_type), 200 * MiB)

    assert answer is not None, f"no answer after pushing {sent / MiB:.0f} MiB"
    assert answer.status == 413
    assert answer.json() == {"message": "The POST data is too large."}
    assert sent < 40 * MiB, f"the server took {sent / MiB:.0f} MiB before stopping us"
    assert upload(sandbox.base_url, audio_dir / "tone.mp3").status_code == 201


def test_a_chunked_body_over_the_proxy_limit_gets_the_proxys_413(make_sandbox):
    sandbox = make_sandbox(proxy_body_limit=50_000, **FAST)
    sent, answer = push_chunked(sandbox.port, chunked(MP), 50 * MiB)
    assert answer is not None and answer.status == 413
    assert answer.headers["content-type"].startswith("text/html")
    assert sent < 40 * MiB


def test_declared_length_over_the_json_cap_is_refused_before_reading(make_sandbox):
    sandbox = make_sandbox(**FAST)
    request = head(headers=[("Content-Type", "application/json"), ("Content-Length", str(200 * MiB))])
    started = time.monotonic()
    answer = exchange(sandbox.port, request)  # no body sent at all
    assert answer.status == 413 and answer.json() == {"message": "The POST data is too large."}
    assert time.monotonic() - started < SLACK


# --- idle, slow and many connections ------------------------------------------------------------

def closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Read until the server closes; return what it sent and how long that took."""
    sock.settimeout(seconds)
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def test_idle_connection_is_closed_without_an_answer(make_sandbox):
    sandbox = make_sandbox(**FAST)
    with socket.create_connection(("127.0.0.1", sandbox.port)) as sock:
        received, elapsed = closed_within(sock, 5)
    assert received == b""
    assert elapsed < FAST["idle_timeout"] + SLACK


def _trickle(sandbox, opening: bytes, drip) -> tuple[Answer, float]:
    """Send ``opening``, then one ``drip(i)`` every 0.2 s (never idle, never done) until the sandbox
    answers or drops us; the answer and how long it took."""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(opening)
        started = time.monotonic()
        try:
            for i in range(40):
                sock.sendall(drip(i))
                if select.select([sock], [], [], 0.2)[0]:
                    break
        except OSError:
            pass
        return read_answer(sock), time.monotonic() - started


def test_slow_headers_get_408_within_the_header_timeout(make_sandbox):
    answer, elapsed = _trickle(make_sandbox(**FAST), f"POST {AUDIO_PATH} HTTP/1.1\r\n".encode(),
                               lambda i: f"X-Slow-{i}: a\r\n".encode())
    assert_api_shaped(answer, 408)
    assert elapsed < FAST["header_timeout"] + SLACK


def test_slow_body_gets_408_within_the_body_timeout(make_sandbox):
    opening = head(headers=[("Content-Type", "application/json"), ("Content-Length", "1000")])
    answer, elapsed = _trickle(make_sandbox(**FAST), opening, lambda _: b" ")  # a byte every 0.2 s
    assert_api_shaped(answer, 408)
    assert elapsed < FAST["body_timeout"] + SLACK


def test_keep_alive_serves_a_busy_client_then_drops_it_when_idle(make_sandbox, served_mp3_url):
    sandbox = make_sandbox(**{**FAST, "idle_timeout": 1.5})
    body = json.dumps({"file": served_mp3_url}).encode()
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(head("GET", "/_sandbox/health", auth=False))
            health = read_answer(sock)
            assert health.status == 200 and health.headers.get("connection") != "close"
            time.sleep(0.5)  # busy: pauses well under the idle timeout
            sock.sendall(post(body))
            created = read_answer(sock)
            assert created.status == 201 and created.headers.get("connection") != "close"
        received, elapsed = closed_within(sock, 5)
    assert received == b"" and elapsed < 1.5 + SLACK
    assert len(sandbox.messages()) == 3


def test_an_unread_body_closes_the_connection(make_sandbox):
    # A 401 is answered before the body is read: the rest of it must not be taken for the next request.
    sandbox = make_sandbox(**FAST)
    smuggled = head("GET", "/_sandbox/health", auth=False)
    request = head(headers=[("Content-Type", "application/json"), ("Content-Length", str(len(smuggled)))],
                   auth=False) + smuggled
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
        assert answer.status == 401 and answer.headers.get("connection") == "close"
        received, _ = closed_within(sock, 5)
    assert received == b""


def test_stop_closes_kept_alive_connections_at_once(make_sandbox):
    sandbox = make_sandbox(idle_timeout=30)
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(head("GET", "/_sandbox/health", auth=False))
        assert read_answer(sock).status == 200
        sandbox.stop()
        received, elapsed = closed_within(sock, 5)
    assert received == b"" and elapsed < SLACK


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_connections_are_capped_and_the_server_still_answers(make_sandbox):
    sandbox = make_sandbox(max_connections=3, **FAST)
    before = handler_threads()
    idle = [socket.create_connection(("127.0.0.1", sandbox.port)) for _ in range(12)]
    try:
        time.sleep(0.3)
        assert handler_threads() - before <= 3
        answer = requests.get(f"{sandbox.base_url}/_sandbox/health", timeout=10)  # waits its turn
        assert answer.status_code == 200
    finally:
        for sock in idle:
            sock.close()


# --- what the client names a file never names a stored file -------------------------------------

@pytest.mark.parametrize("name", ["../../../escape.mp3", "/tmp/absolute.mp3", "..\\..\\windows.mp3",
                                  "a/../../b/../../c.mp3", "..", ".mp3", "évil\u202e3pm.mp3"])
def test_stored_file_name_never_comes_from_the_client(make_sandbox, audio_dir, tmp_path, name):
    sandbox = make_sandbox(**FAST)
    response = upload(sandbox.base_url, audio_dir / "tone.mp3", name=name)

    assert response.status_code == 201, response.text
    message_id = response.json()["data"]["id"]
    files_dir = sandbox.config.data_dir / "files"
    assert [p.name for p in files_dir.iterdir()] == [f"{message_id}.mp3"]
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert all(p.startswith("sandbox") for p in everything), everything
