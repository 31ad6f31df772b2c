"""The pydub edge: an AudioSegment in, a prepared file out, and back to a segment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydub import AudioSegment
from pydub.generators import Sine

import audiopipe
from audiopipe import PrepareSettings, prepare, to_segment
from audiopipe.preparation.sniff import sniff


def test_prepare_accepts_an_audio_segment(tmp_path: Path) -> None:
    segment = Sine(440).to_audio_segment(duration=1500).set_channels(1)
    result = prepare(segment, tmp_path / "out", PrepareSettings(cache=False), name="greeting")
    out = result.outputs[0]
    assert out.path == tmp_path / "out" / "greeting.ogg"
    assert result.action == "transcoded" and out.codec == "opus"
    assert sniff(out.path).accepted
    assert abs(out.duration - 1.5) < 0.1
    assert not list((tmp_path / "out").glob("*.wav"))  # the temporary WAV stays out of the output


def test_overrides_and_round_trip(tmp_path: Path, audio_dir: Path) -> None:
    result = prepare(audio_dir / "tone.wav", tmp_path, format="mp3", cache=False)
    assert result.outputs[0].path.suffix == ".mp3"
    back = to_segment(result)
    assert isinstance(back, AudioSegment)
    assert abs(len(back) - 2000) < 100  # milliseconds
    assert back.channels == 2


def test_a_kept_file_is_still_byte_for_byte(tmp_path: Path, audio_dir: Path) -> None:
    result = audiopipe.prepare(str(audio_dir / "tone.mp3"), tmp_path, cache=False)
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    assert result.action == "kept"
    assert digest(result.outputs[0].path) == digest(audio_dir / "tone.mp3")


def test_unknown_override_is_a_type_error(tmp_path: Path, audio_dir: Path) -> None:
    with pytest.raises(TypeError):
        prepare(audio_dir / "tone.wav", tmp_path, not_a_setting=1)
