"""Shared pytest fixtures. Keep each fixture small and documented; add new ones below."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures folder (regenerate with ``.venv/bin/python fixtures/make_fixtures.py``)."""
    return Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="session")
def audio_dir(fixtures_dir: Path) -> Path:
    """``fixtures/audio``: the small audio files described in ``fixtures/README.md``."""
    return fixtures_dir / "audio"
