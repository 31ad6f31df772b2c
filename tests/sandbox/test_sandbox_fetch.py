"""The sandbox in URL mode, over real HTTP both ways: it fetches ``{"file": URL}`` from a real origin
on loopback (only from allowed addresses, capped, timed), checks the bytes as an upload, and stores
them, with the URL's query never kept or logged."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fetch_origin import Origin, OriginHandler, Route, endless, redirect, serve, short, slow, status
from helpers import CONTACT, MIMES_MSG, SIZE_MSG, WS, start_reading_stderr

from audiopipe.errors import UsageError
from audiopipe.sandbox.app import FetchPolicy, Sandbox

pytestmark = pytest.mark.timeout(60)

TOKEN = "sandbox-fetch-token"
SANDBOX_FRESH_DATA = True
SECRET = "c0ffee5ecret51gnature"


@pytest.fixture
def origins() -> Iterator[Any]:
    started: list[Origin] = []

    def start(routes: dict[str, Any], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Origin:
        origin = Origin(routes, host, tls)
        started.append(origin)
        return origin

    yield start
    for origin in started:
        origin.close()


def post_url(sandbox: Sandbox | str, url: str, **headers: str) -> requests.Response:
    base = sandbox if isinstance(sandbox, str) else sandbox.url
    return requests.post(f"{base}/workspaces/{WS}/contacts/{CONTACT}/messages/audio",
                         headers={"Authorization": f"Bearer {TOKEN}", **headers}, json={"file": url}, timeout=30)


def post_file(sandbox: Sandbox, path: Path) -> requests.Response:
    with path.open("rb") as fh:
        return requests.post(f"{sandbox.url}/workspaces/{WS}/contacts/{CONTACT}/messages/audio",
                             headers={"Authorization": f"Bearer {TOKEN}"}, files={"file": (path.name, fh)}, timeout=30)


def refusal(response: requests.Response) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "Validation error"
    return list(body["errors"]["file"])


def stored_files(sandbox: Sandbox) -> list[Path]:
    folder = sandbox.config.data_dir / "files"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("name", "mime"), [("voice.opus", "audio/ogg"), ("tone.mp3", "audio/mpeg")])
def test_a_file_by_url_is_fetched_checked_and_stored_as_an_upload_would_be(make_sandbox, origins, audio_dir,
                                                                           name, mime):
    data = (audio_dir / name).read_bytes()
    origin = origins({f"/audio/{name}": serve(data)})
    sandbox = make_sandbox()

    response = post_url(sandbox, origin.url(f"/audio/{name}"), Cookie="session=abc")

    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert created["sha256"] == hashlib.sha256(data).hexdigest()
    assert (created["size"], created["mime"], created["file_name"]) == (len(data), mime, name)
    [message] = sandbox.messages()
    assert message["id"] == created["id"] and Path(message["file_path"]).read_bytes() == data
    [(path, headers)] = origin.requests
    assert path == f"/audio/{name}"
    assert not {"authorization", "cookie"} & {h.lower() for h in headers}  # nothing of the client's goes on


def test_the_signature_of_a_presigned_url_is_used_but_never_stored_or_logged(make_sandbox, origins, audio_dir,
                                                                             caplog):
    caplog.set_level(logging.DEBUG, logger="audiopipe.sandbox")
    origin = origins({"/bucket/key.opus": serve((audio_dir / "voice.opus").read_bytes()), "/gone.opus": status(403)})
    sandbox = make_sandbox()
    query = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={SECRET}"

    accepted = post_url(sandbox, origin.url("/bucket/key.opus") + query)
    refused = post_url(sandbox, origin.url("/gone.opus") + query)

    assert accepted.status_code == 201 and refusal(refused)
    assert [path for path, _ in origin.requests] == ["/bucket/key.opus" + query, "/gone.opus" + query]
    [message] = sandbox.messages()
    assert message["url"].startswith(origin.url("/bucket/key.opus"))  # the path is kept
    for text in (accepted.text, refused.text, str(message), caplog.text):
        assert SECRET not in text
    assert "/gone.opus" in caplog.text  # the refusal is logged, by its path


def test_an_address_outside_the_allow_list_is_refused_without_a_connection(make_sandbox, origins, audio_dir):
    data = (audio_dir / "voice.opus").read_bytes()
    elsewhere = origins({"/a.opus": serve(data)}, host="127.0.0.2")
    here = origins({"/a.opus": serve(data)})
    sandbox = make_sandbox(fetch=FetchPolicy(allow=("127.0.0.1/32",)))

    by_address = post_url(sandbox, elsewhere.url("/a.opus"))
    # "localhost" resolves to 127.0.0.1 (and perhaps ::1): both outside an allow-list of 127.0.0.2
    strict = make_sandbox(fetch=FetchPolicy(allow=("127.0.0.2",)))
    by_name = post_url(strict, f"http://localhost:{here.port}/a.opus")

    for response in (by_address, by_name):
        assert refusal(response) == ["The file could not be fetched from its URL: "
                                     "its host is not one the server may fetch from."]
    assert elsewhere.untouched() and here.untouched()
    assert sandbox.messages() == [] and strict.messages() == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (not for "localhost"), made by the real openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


def test_https_is_fetched_from_the_checked_address_with_the_urls_name_verified(make_sandbox, origins, certificate,
                                                                               audio_dir):
    data = (audio_dir / "voice.opus").read_bytes()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    origin = origins({"/a.opus": serve(data)}, tls=context)
    trusting = make_sandbox(fetch=FetchPolicy(ca_file=certificate[0]))

    fetched = post_url(trusting, origin.url("/a.opus"))
    # connected to 127.0.0.1 all the same, but the name checked is the URL's: the certificate is not for it
    by_name = post_url(trusting, f"https://localhost:{origin.port}/a.opus")
    untrusted = post_url(make_sandbox(), origin.url("/a.opus"))

    assert fetched.status_code == 201 and fetched.json()["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "TLS failed" in refusal(by_name)[0] and "TLS failed" in refusal(untrusted)[0]
    assert len(origin.requests) == 1


def test_a_non_loopback_address_of_this_machine_is_refused_by_default(make_sandbox, origins, audio_dir):
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    origin = origins({"/a.opus": serve((audio_dir / "voice.opus").read_bytes())}, host=address)
    sandbox = make_sandbox()  # the default allow-list: loopback only

    assert "may fetch from" in refusal(post_url(sandbox, origin.url("/a.opus")))[0]
    assert origin.untouched()
    allowed = make_sandbox(fetch=FetchPolicy(allow=(f"{address}/32",)))
    assert post_url(allowed, origin.url("/a.opus")).status_code == 201  # the switch lets it through


@pytest.mark.parametrize(("code", "reason"), [(404, "404 Not Found"), (403, "403 Forbidden")])
def test_an_error_from_the_origin_is_a_422_with_its_status(make_sandbox, origins, code, reason):
    origin = origins({"/x.mp3": status(code)})
    sandbox = make_sandbox()

    assert refusal(post_url(sandbox, origin.url("/x.mp3"))) == [
        f"The file could not be fetched from its URL: the origin answered {reason}."]
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_a_body_cut_short_is_a_422_not_half_a_file(make_sandbox, origins, audio_dir):
    data = (audio_dir / "tone.mp3").read_bytes()  # its first half still sniffs as MP3
    origin = origins({"/half.mp3": short(data[:len(data) // 2], len(data))})
    sandbox = make_sandbox()

    assert refusal(post_url(sandbox, origin.url("/half.mp3"))) == [
        "The file could not be fetched from its URL: the origin closed the connection before the end of the file."]
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_an_unreachable_origin_is_a_422(make_sandbox):
    with socket.socket() as probe:  # a port nothing listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        response = post_url(make_sandbox(), f"http://127.0.0.1:{port}/x.mp3")
    assert refusal(response) == ["The file could not be fetched from its URL: the origin refused the connection."]


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "until-close"])
def test_a_body_over_the_limit_is_refused_without_reading_it_all(make_sandbox, origins, announce):
    total = 128 << 20
    origin = origins({"/big.mp3": endless(total, announce=announce)})
    sandbox = make_sandbox()  # the real limit: 16384 KB

    assert refusal(post_url(sandbox, origin.url("/big.mp3"))) == [SIZE_MSG]
    # What the origin sent is the limit at most, plus what the sockets' buffers held when it was cut off.
    assert origin.sent < 48 << 20
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_a_slow_origin_is_a_422_after_the_timeout(make_sandbox, origins):
    origin = origins({"/silent.mp3": slow(before_headers=30), "/trickle.mp3": slow(trickle=0.2)})
    sandbox = make_sandbox(fetch=FetchPolicy(read_timeout=0.5, deadline=2))

    silent = post_url(sandbox, origin.url("/silent.mp3"))
    trickle = post_url(sandbox, origin.url("/trickle.mp3"))  # each byte within the read timeout, 20 s in all

    assert refusal(silent) == ["The file could not be fetched from its URL: the origin timed out."]
    assert refusal(trickle) == ["The file could not be fetched from its URL: it took longer than 2 s."]
    assert 0 < origin.sent < 100
    assert sandbox.messages() == []


def test_a_text_file_by_url_is_refused_as_its_upload_is(make_sandbox, origins, audio_dir):
    text = audio_dir / "text.mp3"
    origin = origins({"/text.mp3": serve(text.read_bytes(), "audio/mpeg")})  # the origin's type is no excuse
    sandbox = make_sandbox()

    by_url = refusal(post_url(sandbox, origin.url("/text.mp3")))

    assert by_url == [MIMES_MSG] == refusal(post_file(sandbox, text))
    assert sandbox.messages() == [] and stored_files(sandbox) == []


def test_redirects_are_followed_only_where_each_hop_is_allowed(make_sandbox, origins, audio_dir):
    data = (audio_dir / "voice.opus").read_bytes()
    elsewhere = origins({"/a.opus": serve(data)}, host="127.0.0.2")
    origin = origins({"/a.opus": serve(data), "/moved": redirect("/a.opus", 301),
                      "/away": redirect(elsewhere.url("/a.opus")), "/loop": redirect("/loop", 307)})
    sandbox = make_sandbox(fetch=FetchPolicy(allow=("127.0.0.1/32",)))

    moved = post_url(sandbox, origin.url("/moved"))
    away = post_url(sandbox, origin.url("/away"))
    loop = post_url(sandbox, origin.url("/loop"))

    assert moved.status_code == 201 and moved.json()["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert refusal(away) == ["The file could not be fetched from its URL: "
                             "its host is not one the server may fetch from."]
    assert elsewhere.untouched()
    assert refusal(loop) == ["The file could not be fetched from its URL: the origin redirected more than 3 times."]
    assert [p for p, _ in origin.requests].count("/loop") == 4  # the first ask and 3 hops
    assert len(sandbox.messages()) == 1


def test_fetch_policy_takes_networks_and_addresses_and_nothing_else():
    policy = FetchPolicy(allow=("127.0.0.1/8,10.0.0.0/8", "192.0.2.7", "::1"))
    assert [str(n) for n in policy.networks] == ["127.0.0.0/8", "10.0.0.0/8", "192.0.2.7/32", "::1/128"]
    assert policy.allows("10.1.2.3") and policy.allows("::ffff:10.1.2.3") and policy.allows("::1")
    assert not policy.allows("192.0.2.8") and not policy.allows("::ffff:192.0.2.8") and not policy.allows("fe80::1")
    with pytest.raises(UsageError, match="host names are not taken"):
        FetchPolicy(allow=("cdn.example.com",))
    with pytest.raises(UsageError, match="deadline"):
        FetchPolicy(deadline=0)


def test_the_cli_switch_adds_networks_to_the_allow_list(tmp_path, origins, audio_dir):
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    origin = origins({"/a.opus": serve((audio_dir / "voice.opus").read_bytes())}, host=address)
    answers, banners = {}, {}
    for label, flags in (("default", []), ("allowed", ["--fetch-allow", f"10.0.0.0/8,{address}/32"])):
        started = start_reading_stderr([sys.executable, "-m", "audiopipe", "sandbox", "--port", "0", "--token", TOKEN,
                                        "--data", str(tmp_path / label), *flags], until="Ctrl-C", timeout=30)
        try:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+/api/v3)", started.text)
            assert found is not None, started.text
            answers[label], banners[label] = post_url(found.group(1), origin.url("/a.opus")), started.text
        finally:
            started.proc.terminate()
            started.proc.wait(10)

    assert refusal(answers["default"]) and answers["allowed"].status_code == 201
    assert "fetch: URL messages only from 127.0.0.0/8, ::1/128 (" in banners["default"]
    assert f"127.0.0.0/8, ::1/128, 10.0.0.0/8, {address}/32" in banners["allowed"]
    bad = subprocess.run([sys.executable, "-m", "audiopipe", "sandbox", "--port", "0", "--data", str(tmp_path / "bad"),
                          "--fetch-allow", "cdn.example.com"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "'cdn.example.com' is not an IP address or network" in bad.stderr


def _own_non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def xml_error(code: int, body: bytes) -> Route:
    def route(h: OriginHandler) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.send_body(body)
    return route


def test_an_object_stores_error_is_quoted_by_its_code_and_message_only(make_sandbox, origins):
    body = (b'<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>The signature\x1b[31m does '
            b'not match &lt;b&gt;</Message><SignatureProvided>f00dfeed</SignatureProvided>'
            b'<StringToSign>AWS4-HMAC-SHA256 secret-ish</StringToSign></Error>')
    origin = origins({"/x.mp3": xml_error(403, body)})
    [said] = refusal(post_url(make_sandbox(), origin.url("/x.mp3")))
    assert said == ("The file could not be fetched from its URL: the origin answered 403 Forbidden "
                    "(SignatureDoesNotMatch: The signature 31m does not match lt b gt).")
    assert "f00dfeed" not in said and "StringToSign" not in said
