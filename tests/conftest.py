"""Shared pytest fixtures. Keep each fixture small and documented; add new ones below."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pg_fixtures", "s3_fixtures"]  # a throwaway PostgreSQL cluster; moto's S3 server


def _expected_seconds(item: pytest.Item) -> float:
    slow = item.get_closest_marker("slow")
    return float(slow.kwargs.get("seconds", 10)) if slow else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deal the slow tests out first, the longest first, one share per xdist worker. worksteal gives
    each worker a contiguous share of the list and lets an idle one take the tail of another's queue:
    slow tests collected together (or last) would run one after another on one worker and finish the
    run alone. The order is the same on every worker: each sorts the same collection the same way."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = _dealt(items, workers)


def _dealt(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    slow = sorted((i for i in items if _expected_seconds(i)), key=_expected_seconds, reverse=True)
    rest = [i for i in items if not _expected_seconds(i)]
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in slow:  # each to the share with the least expected time so far
        least = loads.index(min(loads))
        shares[least].append(item)
        loads[least] += _expected_seconds(item)
    dealt: list[pytest.Item] = []
    left = len(items)
    for n, share in enumerate(shares):
        size = left // (workers - n)  # how worksteal cuts the list: evenly, the first shares the smaller
        left -= size
        fill = max(0, size - len(share))
        dealt += share + rest[:fill]
        rest = rest[fill:]
    return dealt + rest


@pytest.fixture(autouse=True)
def _no_settle_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test files are written just before a batch runs: don't wait for them to settle (the
    settle rule has its own test, which sets it explicitly)."""
    monkeypatch.setenv("AUDIOPIPE_SETTLE", "0")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures folder (regenerate with ``.venv/bin/python fixtures/make_fixtures.py``)."""
    return Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="session")
def audio_dir(fixtures_dir: Path) -> Path:
    """``fixtures/audio``: the small audio files described in ``fixtures/README.md``."""
    return fixtures_dir / "audio"


@pytest.fixture
def make_sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start in-process sandboxes on free ports; all are stopped after the test.

    The token is the test module's ``TOKEN``. By default every sandbox of a test shares one data
    folder; a module with ``SANDBOX_RESTARTS = True`` stops the running one first (a restart that
    keeps what was stored), one with ``SANDBOX_FRESH_DATA = True`` gives each its own folder.
    Keyword arguments are ``SandboxConfig`` fields.
    """
    from audiopipe.sandbox.app import Sandbox, SandboxConfig

    module = request.module
    started: list[Sandbox] = []

    def factory(**overrides: Any) -> Sandbox:
        if getattr(module, "SANDBOX_RESTARTS", False):
            for sb in started:
                sb.stop()
        name = f"data{len(started)}" if getattr(module, "SANDBOX_FRESH_DATA", False) else "sandbox"
        settings: dict[str, Any] = {"token": getattr(module, "TOKEN", "test-token"),
                                    "data_dir": tmp_path / name}
        settings.update(overrides)
        sb = Sandbox(SandboxConfig(**settings)).start()
        started.append(sb)
        return sb

    yield factory
    for sb in started:
        sb.stop()


@pytest.fixture
def audio_copy(tmp_path: Path, audio_dir: Path) -> Path:
    """A private copy of ``fixtures/audio`` to run a batch on: a batch notes in its folder which
    ledger recorded it (``.audiopipe-ledger``), and the committed fixtures must stay as they are."""
    import shutil

    dest = tmp_path / "audio"
    shutil.copytree(audio_dir, dest)
    return dest
