"""MP3 and AAC on real speech: the first encode fits a tight budget and uses most of it.

Real ffmpeg on test_vbr_fit's espeak-ng speech (about 50 s, three voices, pauses). MP3's budgets fall
between two of LAME's CBR steps, where the plan takes LAME's ABR, sized by its measured overshoot (under
28k in the first encode; above, in the fill, after CBR on the step under the budget); AAC
is the native encoder's -b:a, sized the same way. The size models were measured on espeak-ng speech
(bench/calibrate_sizes.py), so these need it: the synthetic voice test_vbr_fit falls back to comes out
further under ABR's target. No quality numbers (those are the bench's).
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from test_vbr_fit import ESPEAK, FFMPEG, packet_sizes, seconds_of, speech

from audiopipe.preparation import formats
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.settings import PrepareSettings

__all__ = ["speech"]  # the fixture, from test_vbr_fit

pytestmark = [pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg to make and encode the speech"),
              pytest.mark.skipif(ESPEAK is None, reason="the size model is measured on espeak-ng speech "
                                                        "(make system-deps installs it)")]


def sample_rate_of(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout.strip().strip(","))


@pytest.mark.parametrize("kbps", [20, 30])
def test_mp3_between_two_steps_fits_first_time_and_uses_more_than_the_step(speech: Path, tmp_path: Path,
                                                                           kbps: int) -> None:
    """20k and 30k lie between LAME's 16k and 24k, 24k and 32k steps, where CBR on the lower step would
    use 80 % of the budget: LAME's ABR at the budget, its frames on several of the MPEG version's
    bitrates (a CBR stream's are all one size, give or take a padding byte). Sized for the voices it
    overshoots most, so a mix of voices uses 85-93 % (and LAME takes whole kbit/s)."""
    seconds = seconds_of(speech)
    budget = int(seconds * kbps * 1000 / 8)  # what a recording this long gets at kbps
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="mp3", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.first_fit, f"the first encode did not fit {budget:,} bytes"
    assert result.plan is not None and result.plan.rate_control == "abr"
    step = max(s for s in formats.MP3_STEPS if s <= kbps * 1000)
    assert out.size <= budget
    assert out.size >= max(0.85 * budget, 1.08 * seconds * step / 8), \
        f"{out.size:,} bytes use {out.size / budget:.1%} of {budget:,}"
    assert sample_rate_of(out.path) == result.plan.sample_rate  # LAME kept the rate planned
    assert len(set(packet_sizes(out.path))) > 3


@pytest.mark.parametrize("kbps", [75, 110])
def test_mp3_above_43k_fits_first_time_and_the_fill_uses_the_budget(speech: Path, tmp_path: Path, kbps: int) -> None:
    """75k and 110k lie between LAME's 64k and 80k, 96k and 112k steps, where CBR on the lower step
    uses 85-87 %: the first encode is that step (it fits), and the fill takes LAME's ABR above it,
    sized first for the voices it overshoots most, then by what it measured. The fullest output that
    fits is kept, under its real name; no temp file is left."""
    budget = int(seconds_of(speech) * kbps * 1000 / 8)
    out_dir = tmp_path / "out"
    result = prepare_file(speech, out_dir, PrepareSettings(format="mp3", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.first_fit, f"the first encode did not fit {budget:,} bytes"
    assert 2 <= result.passes <= 3  # the step, then one or two ABR passes
    assert result.plan is not None and result.plan.rate_control == "abr"
    assert 0.92 * budget <= out.size <= budget, f"{out.size:,} bytes use {out.size / budget:.1%} of {budget:,}"
    assert sample_rate_of(out.path) == result.plan.sample_rate
    assert len(set(packet_sizes(out.path))) > 3  # ABR: frames on several bitrates (CBR's are one size)
    left = sorted(p.name for p in out_dir.iterdir() if p != out.path)
    assert all(name.endswith(".audiopipe.json") for name in left), left  # the result's record; no temp file


def test_mp3_between_28k_and_43k_stays_on_the_step(speech: Path, tmp_path: Path) -> None:
    """44k lies between the 40k and 48k steps: ABR there (32 kHz) scored under CBR on the 40k step even
    when fuller, so the step stays, in one encode, though it uses under 92 %."""
    budget = int(seconds_of(speech) * 44000 / 8)
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="mp3", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.passes == 1 and result.plan is not None
    assert (result.plan.rate_control, result.plan.bitrate) == ("cbr", 40000)
    assert 0.85 * budget <= out.size < 0.92 * budget


@pytest.mark.parametrize(("kbps", "rate"), [(18, 16000), (24, 48000), (48, 48000)])
def test_m4a_fits_first_time_and_uses_most_of_the_budget(speech: Path, tmp_path: Path, kbps: int, rate: int) -> None:
    """Both sides of AAC's rate ladder: 16 kHz under 21k, the source's 48 kHz from there (where the
    native encoder's size per target differs)."""
    budget = int(seconds_of(speech) * kbps * 1000 / 8)
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="m4a", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.first_fit, f"the first encode did not fit {budget:,} bytes"
    assert out.size <= budget
    assert out.size >= 0.92 * budget, f"{out.size:,} bytes use {out.size / budget:.1%} of {budget:,}"
    assert result.plan is not None and result.plan.sample_rate == rate
    assert sample_rate_of(out.path) == rate


def test_an_abr_encode_over_budget_converges_by_what_was_measured(speech: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A size model that takes LAME's ABR for exact (it overshoots speech by about a fifth): the
    re-plan stays in ABR, scaled by what the first encode measured, and the second one fits."""
    mp3 = formats.FORMATS["mp3"]
    assert mp3.between_steps is not None
    exact = replace(mp3.between_steps, factor_bands=(), speech_factor_bands=(), bitrate_factor=1.0)
    monkeypatch.setitem(formats.FORMATS, "mp3", replace(mp3, between_steps=exact))
    budget = int(seconds_of(speech) * 20000 / 8)
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="mp3", max_size=budget, cache=False))
    (out,) = result.outputs
    assert not result.first_fit and result.passes >= 2  # (a third pass would be the fill's)
    assert result.plan is not None and result.plan.rate_control == "abr"
    assert 0.85 * budget <= out.size <= budget
