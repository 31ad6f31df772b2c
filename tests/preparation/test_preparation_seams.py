"""The seams the preparation stage was cut along: format rules as data on the format (the planner
never asks which format it holds), the capability check apart from the data table, one source of the
input-opening options, the named result of a conversion, the action and overflow vocabularies, and
a package whose every stage is importable as a module.

Pure checks on hand-built values, and one real conversion (real ffmpeg) for the named result.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import pytest

import audiopipe
from audiopipe.errors import InputError, PrepareError
from audiopipe.preparation import opening
from audiopipe.preparation.encode import build_argv
from audiopipe.preparation.formats import FORMATS, MP3_RATE_BANDS, TargetFormat
from audiopipe.preparation.outputs import OutputGuard, Protected
from audiopipe.preparation.plan import DoesNotFit, EncodePlan, choose_sample_rate, plan, replan
from audiopipe.preparation.probe import AudioStream, MediaInfo, probe
from audiopipe.preparation.results import PrepareAction, PrepareOutcome
from audiopipe.preparation.settings import OVERFLOW_CHOICES, Overflow, PrepareSettings
from audiopipe.preparation.transcode import Transcoded, transcode

PACKAGE = Path(audiopipe.__file__).parent / "preparation"


def make_info(rate: int = 44100, channels: int = 2, duration: float = 60.0, codec: str = "pcm_s16le",
              bit_rate: int | None = None) -> MediaInfo:
    return MediaInfo(path="/in/put.wav", container="wav", size=10_000_000, duration=duration, bit_rate=None,
                     audio=AudioStream(index=0, audio_index=0, codec=codec, sample_rate=rate, channels=channels,
                                       channel_layout="", bit_rate=bit_rate),
                     audio_streams=1, video_streams=0, attached_pictures=0, brand=None)


def outcome(info: MediaInfo, fmt: TargetFormat, budget: int, **kw: Any) -> object:
    """What the planner makes of it: the plan without its format name, or how much would fit."""
    try:
        return replace(plan(info, fmt, budget, **kw), format="")
    except DoesNotFit as exc:
        return ("does not fit", exc.fits_seconds)


# --- format rules are data on the format -------------------------------------------------------

@pytest.mark.parametrize("name", list(FORMATS))
def test_a_renamed_format_is_planned_exactly_the_same(name: str) -> None:
    """The planner reads a format's fields, never its name: a copy under another name plans alike."""
    fmt = FORMATS[name]
    twin = replace(fmt, name=f"not-{name}")
    for rate in (8000, 11025, 16000, 22050, 32000, 44100, 48000):
        for channels in (1, 2):
            for duration in (2.0, 95.0, 1800.0, 4 * 3600.0):
                info = make_info(rate=rate, channels=channels, duration=duration)
                for budget in (40_000, 1_000_000, 16_000_000):
                    for kw in ({}, {"voice_note": True}, {"channels": 2, "bitrate_cap": 64000}):
                        assert outcome(info, twin, budget, **kw) == outcome(info, fmt, budget, **kw)
        for bitrate in range(fmt.floor, fmt.ceiling(2) + 1, 4000):
            assert choose_sample_rate(twin, bitrate, 2, rate) == choose_sample_rate(fmt, bitrate, 2, rate)


def test_no_branch_on_a_format_name_is_left_in_the_planner() -> None:
    tree = ast.parse((PACKAGE / "plan.py").read_text())
    compared = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Compare)
                and any(isinstance(side, ast.Attribute) and side.attr == "name"
                        for side in (node.left, *node.comparators))]
    assert compared == []


def test_a_new_format_brings_its_own_rules() -> None:
    """A format the planner has never seen is planned by what its fields say."""
    made_up = TargetFormat(
        name="speex-ish", extension="spx", muxer="ogg", encoder="libspeex", codec="speex", container="ogg",
        content_type="audio/ogg", floor=4000, ceiling_per_channel=40000, fixed_sample_rate=16000,
        stereo_min=10**9, speech_below=20000)
    p = plan(make_info(channels=2, duration=60.0), made_up, 120_000)  # about 15 kbit/s
    assert p.format == "speex-ish" and p.sample_rate == 16000
    assert p.channels == 1          # never stereo under its stereo_min
    assert p.application == "voip"  # at or under its speech_below
    roomy = replace(made_up, stereo_min=0, speech_below=None, fixed_sample_rate=None)
    p = plan(make_info(channels=2, duration=60.0), roomy, 1_000_000)
    assert p.channels == 2 and p.application == "audio" and p.sample_rate != 16000


def test_mp3_rate_bands_move_the_rate_to_one_that_takes_the_bitrate() -> None:
    mp3 = FORMATS["mp3"]
    # MPEG-2 rates take at most 160 kbit/s, MPEG-1 rates at least 32
    assert choose_sample_rate(mp3, 192000, 2, 22050) == 44100
    assert choose_sample_rate(mp3, 24000, 1, 48000) in (8000, 11025, 12000, 16000, 22050, 24000)
    # MPEG-2.5 over 64 kbit/s goes up to 22.05 kHz only when the source has it
    mpeg25 = MP3_RATE_BANDS[0]
    assert mpeg25.move(11025, 96000, source_rate=44100) == 22050
    assert mpeg25.move(11025, 96000, source_rate=11025) == 11025
    assert mpeg25.move(11025, 48000, source_rate=44100) == 11025  # a bitrate it takes: stays
    assert mp3.highest_bitrate_at(22050) == 160000
    assert mp3.highest_bitrate_at(44100) == 320000
    assert FORMATS["ogg"].highest_bitrate_at(8000) is None
    # so a 22.05 kHz source is never planned above what 22.05 kHz takes
    assert plan(make_info(rate=22050, duration=5.0), mp3, 16_000_000).bitrate <= 160000


def test_replan_steps_down_by_the_formats_own_steps() -> None:
    mp3 = FORMATS["mp3"]
    first = plan(make_info(duration=600.0), mp3, 5_000_000)
    lower = replan(first, mp3, int(first.budget * 1.2))
    assert isinstance(lower, EncodePlan) and lower.bitrate in mp3.steps and lower.bitrate < first.bitrate


def test_the_format_table_runs_nothing() -> None:
    """formats.py is data: it imports neither the runner nor subprocess (encoders.py asks ffmpeg)."""
    tree = ast.parse((PACKAGE / "formats.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top_level for a in n.names} | {n.module for n in top_level
                                                            if isinstance(n, ast.ImportFrom)}
    assert not {"subprocess", "audiopipe.runner", "runner", "audiopipe.preparation.encoders"} & names


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_encoders_answer_what_this_ffmpeg_can_make() -> None:
    from audiopipe.errors import ToolMissingError
    from audiopipe.preparation.encoders import has_encoder, require_encoder

    assert has_encoder(FORMATS["ogg"])
    require_encoder(FORMATS["ogg"])
    ghost = replace(FORMATS["ogg"], name="ghost", encoder="no-such-encoder")
    assert not has_encoder(ghost)
    with pytest.raises(ToolMissingError, match="no-such-encoder"):
        require_encoder(ghost)
    assert not hasattr(ghost, "require_encoder")  # the format is data: it runs nothing


# --- one way to open an input ----------------------------------------------------------------

def test_every_child_opens_inputs_with_the_same_options(tmp_path: Path) -> None:
    flags = opening.input_flags()
    assert flags == ["-format_whitelist", opening.FORMAT_WHITELIST, "-protocol_whitelist", "file"]
    p = plan(make_info(duration=10.0), FORMATS["ogg"], 1_000_000)
    argv = build_argv(tmp_path / "in.wav", p, tmp_path / "out.ogg")
    i = argv.index("-i")
    before_input = argv[:i]
    for key, value in opening.input_options().items():
        assert before_input[before_input.index(f"-{key}") + 1] == value
    assert argv[i + 1] == f"file:{(tmp_path / 'in.wav').absolute()}"
    assert not {"hls", "concat", "data"} & set(opening.FORMAT_WHITELIST.split(","))


# --- vocabularies and errors ---------------------------------------------------------------

def test_actions_and_overflow_choices_are_the_old_strings() -> None:
    assert [a.value for a in PrepareAction] == ["kept", "remuxed", "transcoded", "trimmed", "split", "failed"]
    for action in PrepareAction:
        assert action == action.value and str(action) == action.value and f"{action:<11}" == f"{action.value:<11}"
        assert json.dumps({"action": action}) == json.dumps({"action": action.value})
        assert {action.value: 1}[action] == 1
    assert OVERFLOW_CHOICES == ("trim", "split", "fail") and Overflow("split") is Overflow.SPLIT
    as_enum, as_text = PrepareSettings(on_overflow=Overflow.SPLIT), PrepareSettings(on_overflow="split")
    assert json.dumps(as_enum.cache_fields()) == json.dumps(as_text.cache_fields())
    failed = PrepareOutcome(Path("x.wav"), error=InputError("x.wav", "the file is empty")).to_dict()
    assert failed["action"] == "failed" and type(failed["action"]) is str


def test_a_prepare_error_is_an_input_error() -> None:
    """One ``except InputError`` catches every failure of one file; both names stay importable."""
    err = PrepareError("a.wav", "does not fit")
    assert isinstance(err, InputError) and (err.path, err.reason, str(err)) == ("a.wav", "does not fit",
                                                                               "a.wav: does not fit")
    assert issubclass(DoesNotFit, InputError)
    assert audiopipe.PrepareError is PrepareError and audiopipe.InputError is InputError


# --- the package: modules are modules, the everyday API is functions -------------------------------

STAGE_MODULES = ("cache", "encode", "encoders", "fill", "formats", "inputs", "opening", "outputs", "pipeline", "plan",
                 "policy", "probe", "results", "reuse", "segment", "settings", "sizing", "sniff", "transcode",
                 "voicenote")


def test_every_stage_module_imports_as_a_module() -> None:
    import importlib

    for name in STAGE_MODULES:
        module = importlib.import_module(f"audiopipe.preparation.{name}")
        assert isinstance(module, ModuleType)
        assert getattr(importlib.import_module("audiopipe.preparation"), name) is module
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(STAGE_MODULES)


def test_the_top_level_exports_the_functions() -> None:
    from audiopipe.preparation import pipeline, segment, sniff
    from audiopipe.preparation import plan as plan_module
    from audiopipe.preparation import probe as probe_module

    for name in ("probe", "prepare", "prepare_file", "prepare_many", "plan", "sniff"):
        assert isinstance(getattr(audiopipe, name), FunctionType), name
    assert audiopipe.prepare is segment.prepare and audiopipe.prepare_file is pipeline.prepare_file
    assert audiopipe.probe is probe_module.probe and audiopipe.plan is plan_module.plan
    assert audiopipe.sniff is sniff.sniff


def test_no_preparation_module_is_over_400_lines() -> None:
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


# --- the named result of a conversion --------------------------------------------------------

@pytest.fixture(scope="module")
def twenty_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs ffmpeg")
    path = tmp_path_factory.mktemp("gen") / "talk.wav"
    subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "anoisesrc=d=20:c=pink:r=44100:a=0.3:seed=7", "-c:a", "pcm_s16le", str(path)], check=True)
    return path


@pytest.mark.parametrize("overflow", ["trim", "split"])
def test_transcode_says_what_it_made(twenty_seconds: Path, tmp_path: Path, overflow: str) -> None:
    settings = PrepareSettings(max_size=12_000, on_overflow=overflow, cache=False)
    made = transcode(twenty_seconds, probe(twenty_seconds), settings, tmp_path / "out" / "talk",
                     guard=OutputGuard(Protected()))
    assert isinstance(made, Transcoded) and isinstance(made.plan, EncodePlan)
    assert made.passes >= 1 and all(o.size <= 12_000 for o in made.outputs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(o.path.name for o in made.outputs)
    if overflow == "trim":
        assert made.action == PrepareAction.TRIMMED == "trimmed" and len(made.outputs) == 1
        assert made.kept_duration is not None and 5.0 < made.kept_duration < 20.0
        assert made.plan.fade_out > 0
    else:
        assert made.action == PrepareAction.SPLIT == "split" and made.kept_duration is None
        count = len(made.outputs)
        assert count >= 2 and [(o.part, o.parts) for o in made.outputs] == [(i + 1, count) for i in range(count)]
        assert sum(o.duration for o in made.outputs) == pytest.approx(20.0, abs=0.1 * count)
        assert made.plan.start > 0  # the last part's plan


def test_transcode_fails_as_asked(twenty_seconds: Path, tmp_path: Path) -> None:
    settings = PrepareSettings(max_size=12_000, on_overflow=Overflow.FAIL.value, cache=False)
    with pytest.raises(DoesNotFit):
        transcode(twenty_seconds, probe(twenty_seconds), settings, tmp_path / "out" / "talk",
                  guard=OutputGuard(Protected()))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

