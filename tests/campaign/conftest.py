"""Fixtures of the batch tests here (test_batch, test_batch_options): a small broadcast folder, a ledger,
and batch settings over them. A test module's own fixture of the same name wins (most have their own
``folder``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES_WS

from audiopipe.campaign.batch import BatchSettings
from audiopipe.campaign.ledger import SqliteLedger
from audiopipe.preparation.pipeline import PrepareSettings


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    """A small broadcast folder: one file to convert, two to send as they are."""
    f = tmp_path / "recordings"
    f.mkdir()
    for name in ("tone.wav", "tone.mp3", "voice.opus"):
        shutil.copy(audio_dir / name, f / name)
    return f


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "state" / "ledger.sqlite3") as led:
        yield led


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., BatchSettings]:
    """``settings(folder, contacts, **fields)``: BatchSettings for the fixtures' workspace, no pacing, no
    settling, the cache in the test's folder (``prepare={...}``: PrepareSettings fields)."""
    def make(folder: Path, contacts: Path, **kw: Any) -> BatchSettings:
        prep = kw.pop("prepare", {})
        base: dict[str, Any] = {"folder": folder, "contacts": contacts, "workspace": FIXTURES_WS, "rate": 0,
                                "concurrency": 4, "settle": 0,
                                "prepare": PrepareSettings(cache_dir=tmp_path / "cache", **prep)}
        base.update(kw)
        return BatchSettings(**base)
    return make
