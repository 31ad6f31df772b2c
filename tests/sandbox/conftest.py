"""Fixtures of the sandbox's tests: a real origin for the URL messages they post."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_origin import Origin, serve


@pytest.fixture(scope="session")
def served_mp3_url(audio_dir: Path) -> Iterator[str]:
    """The URL of ``fixtures/audio/tone.mp3`` served on 127.0.0.1 (the sandbox fetches a URL message,
    so a test that posts one needs a file the sandbox can reach), named ``hello world.mp3``."""
    origin = Origin({"/audio/hello%20world.mp3": serve((audio_dir / "tone.mp3").read_bytes(), "audio/mpeg")})
    yield origin.url("/audio/hello%20world.mp3")
    origin.close()
