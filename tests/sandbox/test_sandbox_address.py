"""`audiopipe sandbox` says where it really listens, and every URL it prints answers.

Run as a real process; the test reads its startup lines and connects to each printed URL.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import Reading, start_reading_stderr

from audiopipe.sandbox.listen import reach

TOKEN = "address-test-token"


class Started(Reading):
    def urls(self) -> list[str]:
        return re.findall(r"^  url:   (\S+)", self.text, re.M)


@pytest.fixture
def start(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[subprocess.Popen[str]] = []

    def run(*flags: str, token: str | None = TOKEN) -> Started:
        sb = start_reading_stderr([sys.executable, "-m", "audiopipe", "sandbox",
                                   *(["--token", token] if token else []),
                                   "--data", str(tmp_path / f"data{len(started)}"), *flags],
                                  until="Ctrl-C to stop", timeout=20)
        started.append(sb.proc)
        if not sb.ready or sb.proc.poll() is not None:
            pytest.fail("the sandbox did not start:\n" + sb.text)
        return Started(sb.proc, sb.lines, sb.ready)

    yield run
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def answers(url: str) -> bool:
    """The sandbox at this API URL answers an authenticated request."""
    origin = url.rsplit("/api/v3", 1)[0]
    resp = requests.get(f"{origin}/_sandbox/messages", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5)
    return resp.status_code == 200 and resp.json() == []


def test_every_address_shows_the_real_address_port_and_urls_that_answer(start) -> None:  # type: ignore[no-untyped-def]
    sb = start("--host", "0.0.0.0", "--port", "0")
    listening = re.search(r"^sandbox listening on 0\.0\.0\.0:(\d+) \(every IPv4 address of this machine\)$",
                          sb.text, re.M)
    assert listening, sb.text
    port = int(listening.group(1))
    assert port != 0
    urls = sb.urls()
    assert urls[0] == f"http://127.0.0.1:{port}/api/v3", sb.text  # the one to use on this machine
    assert "0.0.0.0" not in "".join(urls)  # not an address a client can connect to
    for url in urls:
        assert url.endswith(f":{port}/api/v3") and answers(url), url
    assert re.search(r"^audiopipe: warning: the sandbox is reachable from the network", sb.text, re.M)
    assert f"LANCEPILOT_BASE_URL=http://127.0.0.1:{port}/api/v3 " in sb.text


def test_the_default_address_with_port_0_shows_the_port_bound(start) -> None:  # type: ignore[no-untyped-def]
    sb = start("--port", "0")
    listening = re.search(r"^sandbox listening on (http://127\.0\.0\.1:(\d+)/api/v3)$", sb.text, re.M)
    assert listening, sb.text
    assert int(listening.group(2)) != 0 and answers(listening.group(1))
    assert "warning" not in sb.text  # loopback only: nothing to warn about


def test_the_public_default_token_is_called_out(start) -> None:  # type: ignore[no-untyped-def]
    sb = start("--host", "0.0.0.0", "--port", "0", token=None)
    assert "the token is the default 'sandbox-token': set --token" in sb.text, sb.text


def ipv6_dual_stack() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
            return not s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_dual_stack(), reason="no dual-stack IPv6 here")
def test_the_ipv6_wildcard_lists_both_loopbacks(start) -> None:  # type: ignore[no-untyped-def]
    sb = start("--host", "::", "--port", "0")
    listening = re.search(r"^sandbox listening on \[::\]:(\d+) \(every IPv4 and IPv6 address", sb.text, re.M)
    assert listening, sb.text
    port = int(listening.group(1))
    urls = sb.urls()
    assert urls[:2] == [f"http://127.0.0.1:{port}/api/v3", f"http://[::1]:{port}/api/v3"]
    for url in urls:
        assert answers(url), url


def test_reach_of_one_address() -> None:
    local = reach("127.0.0.1", 8765, path="/api/v3")
    assert (local.url, local.local_url, local.wildcard, local.from_network) == (
        "http://127.0.0.1:8765/api/v3", "http://127.0.0.1:8765/api/v3", False, False)
    lan = reach("192.0.2.7", 8765)
    assert (lan.url, lan.local_url, lan.wildcard, lan.from_network) == ("http://192.0.2.7:8765", None, False, True)
    v6 = reach("::1", 8765)
    assert v6.url == "http://[::1]:8765" and not v6.from_network
