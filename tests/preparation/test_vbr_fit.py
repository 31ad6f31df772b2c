"""Opus in constrained VBR on real speech: the first encode fits a tight budget and uses most of it.

Real ffmpeg on speech made here: espeak-ng sentences in three voices with pauses over a faint noise
floor, or, where espeak-ng is missing, a synthetic voice (a gliding harmonic source with a syllable
envelope and pauses). No quality numbers: those are bench/bench_quality.py's.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from audiopipe.preparation import formats
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.settings import PrepareSettings

FFMPEG = shutil.which("ffmpeg")
ESPEAK = shutil.which("espeak-ng")
SENTENCES = ("Hello, it's Maria from the clinic. Your appointment has moved to half past ten.",
             "Please call me back when you get this message; it is about the delivery on Tuesday.",
             "We moved the meeting to four o'clock, and the room is on the second floor.")
VOICES = ("en", "en-us+f3", "en-gb-scotland+m3")
# What a synthetic voice is made of when espeak-ng is missing: harmonics of a gliding pitch, a
# 4.3 Hz syllable envelope, a pause of about 0.9 s every 4.3 s (a fifth of the time, as in the
# espeak-ng speech), breath noise.
SYNTHETIC = ("aevalsrc='0.4*(0.5*sin(2*PI*(120+25*sin(2*PI*0.7*t))*t)+0.3*sin(4*PI*(120+25*sin(2*PI*0.7*t))*t)"
             "+0.2*sin(6*PI*(120+25*sin(2*PI*0.7*t))*t))*(0.5+0.5*sin(2*PI*4.3*t))*gt(sin(2*PI*0.23*t),-0.8)'"
             ":s=48000:d=40[v];anoisesrc=c=pink:r=48000:a=0.01:d=40[b];[v][b]amix=inputs=2:normalize=0[out]")

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg to make and encode the speech")


def run_ffmpeg(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40 s of mono 48 kHz speech with pauses (espeak-ng, else the synthetic voice)."""
    folder = tmp_path_factory.mktemp("speech")
    dest = folder / "speech.wav"
    if ESPEAK is None:
        run_ffmpeg("-filter_complex", SYNTHETIC, "-map", "[out]", "-ac", "1", str(dest))
        return dest
    inputs, graph = [], []
    for i in range(9):
        clip = folder / f"c{i}.wav"
        subprocess.run([ESPEAK, "-v", VOICES[i % 3], "-s", str(140 + 12 * (i % 4)), "-w", str(clip),
                        SENTENCES[i % 3]], check=True, capture_output=True, timeout=60)
        inputs += ["-i", str(clip)]
        graph.append(f"[{i}:a]aresample=48000,apad=pad_dur={0.3 + 0.2 * (i % 4):.1f}[a{i}]")
    joined = "".join(f"[a{i}]" for i in range(9))
    graph += [f"{joined}concat=n=9:v=0:a=1[s]", "anoisesrc=c=pink:a=0.003:r=48000:d=120[n]",
              "[s][n]amix=inputs=2:normalize=0:duration=first[out]"]
    run_ffmpeg(*inputs, "-filter_complex", ";".join(graph), "-map", "[out]", "-ac", "1", str(dest))
    return dest


def seconds_of(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return float(out.stdout)


def packet_sizes(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return [int(line.strip(",")) for line in out.stdout.split()]


@pytest.mark.parametrize("kbps", [8, 10, 12, 24])
def test_low_budget_speech_fits_first_time_and_uses_most_of_the_budget(speech: Path, tmp_path: Path,
                                                                       kbps: int) -> None:
    budget = int(seconds_of(speech) * kbps * 1000 / 8)  # what a recording this long gets at kbps
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="ogg", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.passes == 1, f"the first encode did not fit {budget:,} bytes"
    assert out.size <= budget
    assert out.size >= 0.92 * budget, f"{out.size:,} bytes use {out.size / budget:.1%} of {budget:,}"
    sizes = packet_sizes(out.path)
    # variable bitrate: pauses cost far less than speech (CBR packets would all be one size)
    assert min(sizes) * 3 < max(sizes), (min(sizes), max(sizes))


def test_a_first_encode_over_budget_converges_by_what_was_measured(speech: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A size model that under-estimates Opus by a third: the re-plan scales by what the first encode
    measured, so the second one fits (and is not far under the budget)."""
    ogg = formats.FORMATS["ogg"]
    wrong = replace(ogg, factor_bands=(), speech_factor_bands=(), bitrate_factor=0.66)
    monkeypatch.setitem(formats.FORMATS, "ogg", wrong)
    budget = int(seconds_of(speech) * 24000 / 8)
    result = prepare_file(speech, tmp_path / "out", PrepareSettings(format="ogg", max_size=budget, cache=False))
    (out,) = result.outputs
    assert result.passes == 2
    assert 0.85 * budget <= out.size <= budget


# --- the fill: an output the size model over-estimated is encoded once more, higher -----------------

@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of mono band-limited noise, silent three seconds in four: constrained VBR codes the
    silences for almost nothing, so the first encode comes out near half the speech-sized estimate."""
    dest = tmp_path_factory.mktemp("gated") / "gated.wav"
    run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=20:c=pink:r=48000:a=0.3:seed=7,lowpass=f=3000,"
               "volume=enable='gt(mod(t\\,4)\\,1)':volume=0", "-ac", "1", str(dest))
    return dest


def leftovers(folder: Path) -> list[str]:
    """The files in ``folder`` but the note audiopipe keeps beside its outputs."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".audiopipe.json"))


@pytest.mark.parametrize("budget", [30_000, 40_000, 60_000])
def test_a_budget_the_first_encode_left_half_unused_is_filled(gated: Path, tmp_path: Path, budget: int) -> None:
    once = prepare_file(gated, tmp_path / "once",
                        PrepareSettings(format="ogg", max_size=budget, cache=False, max_passes=1))
    assert once.passes == 1 and once.outputs[0].size < 0.7 * budget  # what the size model foresaw
    filled = prepare_file(gated, tmp_path / "out", PrepareSettings(format="ogg", max_size=budget, cache=False))
    (out,) = filled.outputs
    assert 2 <= filled.passes <= 3
    # (Opus's size is not smooth in the bitrate on every content: its bandwidth and mode switch at
    # some rates, so a fill that overshot and came down again may land short of FILL_BELOW)
    assert 1.3 * once.outputs[0].size <= out.size <= budget, f"{out.size:,} bytes of {budget:,}"
    assert out.bitrate is not None and once.outputs[0].bitrate is not None
    assert out.bitrate > once.outputs[0].bitrate
    assert leftovers(tmp_path / "out") == [out.path.name]  # no temp file of the passes


@pytest.mark.parametrize("max_passes", [2, 3])
def test_whatever_the_fill_meets_the_output_fits_and_is_the_only_file(gated: Path, tmp_path: Path,
                                                                      max_passes: int) -> None:
    """With fewer passes allowed, a fill that overshoots is dropped and the first output stands."""
    settings = PrepareSettings(format="ogg", max_size=30_000, cache=False, max_passes=max_passes)
    result = prepare_file(gated, tmp_path / "out", settings)
    (out,) = result.outputs
    assert out.size <= 30_000 and result.passes <= max_passes
    assert leftovers(tmp_path / "out") == [out.path.name]


def test_no_fill_above_the_bitrate_asked_for(gated: Path, tmp_path: Path) -> None:
    """--bitrate caps the fill as it caps the plan: the output stays small, in one pass."""
    settings = PrepareSettings(format="ogg", max_size=200_000, bitrate=16000, cache=False)
    result = prepare_file(gated, tmp_path / "out", settings)
    (out,) = result.outputs
    assert result.passes == 1 and out.bitrate == 16000 and out.size < 0.5 * 200_000


@pytest.mark.parametrize("seconds", [20, 40])
def test_silence_that_takes_no_more_bits_is_not_encoded_again_and_again(tmp_path: Path, seconds: int) -> None:
    """A silent recording leaves any budget unused: one fill pass finds it does not grow, and the
    fill stops there (Opus took 3 encodes before: its second pass came out smaller still)."""
    silent = tmp_path / "silent.wav"
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", str(seconds), str(silent))
    budget = seconds * 2_000  # 16 kbit/s: the budget limits the bitrate
    result = prepare_file(silent, tmp_path / "out", PrepareSettings(format="ogg", max_size=budget, cache=False))
    (out,) = result.outputs
    assert out.size <= budget and result.first_fit
    assert result.passes == 2  # the first, and the one fill pass that found nothing to fill
    assert leftovers(tmp_path / "out") == [out.path.name]
