"""A real S3 service for the tests: moto's standalone server, no mocks inside the test process.

One ``moto_server`` per test session (per xdist worker), listening on a free loopback port, started
the first time a test asks for it and killed at the end. A test that uses S3 gets the standard AWS
settings pointing at it (``AWS_ENDPOINT_URL``, fake credentials, a region; the user's own ``~/.aws``
files hidden), which subprocesses it starts inherit, and a fresh bucket of its own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_buckets = itertools.count()


@dataclass
class MotoServer:
    """The running server: its endpoint URL and where its output goes."""

    endpoint: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"  # the venv's, even when its bin is not on PATH
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        pytest.fail("moto_server was not found: `make venv` installs it (moto[server], the test extra)", pytrace=False)
    return found


def _wait_until_it_answers(endpoint: str, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"moto_server exited ({child.returncode}): {log.read_text(errors='replace')[-2000:]}",
                        pytrace=False)
        try:
            if requests.get(endpoint, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            time.sleep(0.1)
    pytest.fail(f"moto_server did not answer at {endpoint} within 60 s", pytrace=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 server on a free loopback port for this session."""
    folder = Path(tempfile.mkdtemp(prefix="audiopipe-moto-"))
    log = folder / "log"
    port = free_port()
    with open(log, "wb") as out:
        child = subprocess.Popen([_binary(), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL)
    server = MotoServer(f"http://127.0.0.1:{port}", log)
    try:
        _wait_until_it_answers(server.endpoint, child, log)
        yield server
    finally:
        child.kill()
        child.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The standard AWS settings pointing at the session's moto server (fake credentials; no ~/.aws
    read), and the local cache in the test's folder. Returns the endpoint URL."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    settings = {"AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_ACCESS_KEY_ID": "testing-key-id",
                "AWS_SECRET_ACCESS_KEY": "testing-secret-key", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true", "AUDIOPIPE_CACHE_DIR": str(tmp_path / "cache")}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return moto_server.endpoint


@pytest.fixture
def s3_client(s3_env: str) -> S3Client:
    """A plain boto3 client on the moto server, for tests to look behind the store's back."""
    import boto3

    return boto3.client("s3")


@pytest.fixture
def s3_bucket(s3_client: S3Client) -> str:
    """A fresh, empty bucket on the moto server (its name)."""
    name = f"audiopipe-test-{os.getpid()}-{next(_buckets)}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_spec(s3_bucket: str) -> str:
    """``s3://<fresh bucket>/prepared``: a store spec, as ``--store`` and a campaign's settings hold it."""
    return f"s3://{s3_bucket}/prepared"


@pytest.fixture(params=["directory", "s3"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store spec as ``--store`` takes it, once a folder and once ``s3://`` on the moto server: for the
    tests that must pass on every kind of store (moto is started only for the second)."""
    if request.param == "s3":
        return str(request.getfixturevalue("s3_spec"))
    return str(tmp_path / "store")
