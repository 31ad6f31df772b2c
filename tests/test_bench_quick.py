"""Every benchmark still runs end to end, in its smallest mode, and its own correctness checks pass.

Timings are never asserted (this machine is shared): only that each benchmark exits 0, printed its
table, and did not report a failed check (messages stored once, one encode per unique file, cache
hits with the same bytes, a wrong token ending in exit 3, ...). Each bench writes its inputs and
results into tmp_path (``--work`` / ``--out``), never into the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import unmeasured

ROOT = Path(__file__).resolve().parent.parent

# (script and its smallest mode, a line of its table that must be printed, what its output folder holds)
BENCHES = [
    (["bench/run.py", "--smoke"], "| cache (4 files)", "results-smoke.json"),
    (["bench/bench_batch.py", "--smoke"], "| audiopipe, --concurrency 4 (default) | ffmpeg encodes", "batch.json"),
    (["bench/bench_upload.py", "--smoke"], "| audiopipe client (streams from disk)", "upload.json"),
    (["bench/bench_preflight.py", "--quick"], "| one token check (median / p90)", "preflight.md"),
    (["bench/bench_distributed.py", "--quick"], "| throughput, 3 workers vs 1", "distributed.json"),
    (["bench/bench_url.py", "--quick"], "| ratio upload / url |", "url.json"),
    (["bench/calibrate_sizes.py", "--quick"], "| payload / target", "calibrate_sizes-quick.md"),
    (["bench/quality_rates.py", "--smoke"], "| 24k mono ", "quality_rates.md"),
]
# their sources are espeak-ng speech (make system-deps installs it)
SPEAKING = {"bench/calibrate_sizes.py", "bench/quality_rates.py"}
SCORING = {"bench/quality_rates.py"}  # it scores with PESQ (the bench extra's pesq)


@pytest.mark.slow(seconds=30)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the benchmarks need ffmpeg")
@pytest.mark.parametrize(("argv", "table_line", "written"), BENCHES, ids=[Path(b[0][0]).stem for b in BENCHES])
def test_every_benchmark_runs_in_its_quick_mode(tmp_path: Path, argv: list[str], table_line: str,
                                                written: str) -> None:
    """One test per bench, so that the test runners share them out."""
    pytest.importorskip("psutil")
    if argv[0] in SPEAKING and shutil.which("espeak-ng") is None:
        pytest.skip("this bench speaks with espeak-ng (make system-deps installs it)")
    if argv[0] in SCORING:
        pytest.importorskip("pesq", reason="this bench scores with the bench extra's pesq")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, *argv, "--out", str(out), "--work", str(work)], cwd=ROOT,
                          env=unmeasured(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    said = f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0, said
    assert table_line in proc.stdout, f"{' '.join(argv)} printed no table:\n{proc.stdout[-2000:]}"
    assert "FAILED" not in proc.stdout + proc.stderr, said
    assert (out / written).is_file()


def test_a_bench_whose_measured_thing_fails_says_so_in_one_line(tmp_path: Path) -> None:
    """The shared failure contract (bench/common.py run_main): one line on stderr, exit 1, no traceback."""
    pytest.importorskip("psutil")
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'ffmpeg: broken on purpose' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([sys.executable, "bench/bench_preflight.py", "--quick", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bench_preflight: FAILED: ffmpeg could not make the input: ffmpeg: broken on purpose")
    assert (tmp_path / "out" / "bench_preflight-failure.txt").is_file()  # the traceback, kept aside


@pytest.mark.slow(seconds=20)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the benchmarks need ffmpeg")
@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="the quality bench speaks with espeak-ng (make system-deps installs it)")
def test_the_quality_bench_runs_in_its_smoke_mode(tmp_path: Path) -> None:
    """bench_quality.py --smoke: a case of every lossy format prepared within its budget, scored with
    PESQ or the spectral proxy against each plain command at a matched size, the CPU run done, the
    tables printed (quality numbers and timings are the bench's, never asserted here)."""
    pytest.importorskip("pesq", reason="the quality bench needs the bench extra's pesq")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, "bench/bench_quality.py", "--smoke", "--out", str(out), "--work", str(work)],
                          cwd=ROOT, env=unmeasured(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FAILED" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
    for line in ("**Opus (`--format ogg`)** against", "**MP3 (`--format mp3`)** against",
                 "**M4A, AAC (`--format m4a`)** against", "| CPU (user+sys", "| format ", "| speech "):
        assert line in proc.stdout, f"no {line!r} in:\n{proc.stdout[-3000:]}"
    assert (out / "quality.md").is_file()
    ran = json.loads((out / "quality.json").read_text())
    assert {c["format"] for c in ran["cases"]} == {"ogg", "mp3", "m4a"}
    assert {c["source"] for c in ran["cases"]} == {"speech", "music"}
    for case in ran["cases"]:
        assert 0 < case["size"] <= case["budget"], case
        assert case["plains"] and all(p["size"] > 0 and p["score"] > 0 for p in case["plains"]), case
    assert ran["cpu"] and all(r["audiopipe_size"] <= r["budget"] and r["plains"] for r in ran["cpu"]), ran["cpu"]
