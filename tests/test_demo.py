"""``make demo`` is the README's first command: it runs here end to end, in a folder of its own, so
that it cannot silently stop working (the distributed demo's path is covered by the shared-batch and
worker tests, which run the same commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import unmeasured


@pytest.mark.slow(seconds=30)
def test_make_demo_sends_every_message_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "audiopipe.cli.demo"], cwd=tmp_path, env=unmeasured(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo finished: every message sent exactly once" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert (tmp_path / "demo").is_dir()
