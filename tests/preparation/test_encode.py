"""encode / verify and every fixture through prepare_file, checked independently of audiopipe.

Every output is re-read with ffprobe (a subprocess, ``-of json``) and libmagic, not with audiopipe's
own probe/sniff, so a bug there cannot hide a bad output. All output goes under tmp_path.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import magic
import pytest
from helpers import files_in, settings

from audiopipe.errors import FFmpegError, PrepareError, ToolMissingError
from audiopipe.preparation.encode import encode, verify
from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.plan import plan
from audiopipe.preparation.probe import probe
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.runner import audio_encoders

MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
# What the Laravel rule mimes:aac,amr,mp3,m4a,ogg takes (docs/api.md §2), written out independently.
SERVER_ACCEPTS = {"audio/mpeg", "audio/ogg", "audio/x-m4a", "audio/mp4", "audio/x-hx-aac-adts",
                  "audio/aac", "audio/x-aac", "audio/amr"}
# format -> (codec, ffprobe format_name, libmagic MIME)
TARGETS = {
    "ogg": ("opus", "ogg", "audio/ogg"),
    "mp3": ("mp3", "mp3", "audio/mpeg"),
    "m4a": ("aac", MP4_FAMILY, "audio/x-m4a"),
    "aac": ("aac", "aac", "audio/x-hx-aac-adts"),
}
REAL_FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def ffprobe(path: Path, *extra: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", *extra,
                          str(path)], capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)


def mime_of(path: Path) -> str:
    return magic.from_file(str(path), mime=True)


def all_tags(data: dict) -> dict[str, str]:
    tags = {k.lower(): v for k, v in (data["format"].get("tags") or {}).items()}
    for s in data["streams"]:
        tags.update({k.lower(): v for k, v in (s.get("tags") or {}).items()})
    return tags




def check_output(path: Path, fmt: str, *, source_duration: float, max_size: int = 16_000_000) -> dict:
    """The server's and WhatsApp's view of one output, asked of ffprobe and libmagic directly."""
    codec, container, mime = TARGETS[fmt]
    assert path.suffix == "." + fmt
    found = mime_of(path)
    assert found in SERVER_ACCEPTS
    assert found == mime
    data = ffprobe(path)
    assert data["format"]["format_name"] == container
    streams = data["streams"]
    assert [s["codec_type"] for s in streams] == ["audio"]  # one audio stream, no video, no cover
    assert streams[0]["codec_name"] == codec
    tags = all_tags(data)
    assert "title" not in tags and "artist" not in tags
    assert path.stat().st_size <= max_size
    duration = float(data["format"]["duration"])
    # codec delay and frame padding: up to ~0.18 s for AAC or MP3 at 8 kHz (1024-sample priming)
    assert duration == pytest.approx(source_duration, abs=max(0.2, source_duration * 0.02))
    return data


# --- every fixture with the default settings ---------------------------------------------------

DEFAULT_CASES = [
    # fixture, action, output name, format
    ("tone.wav", "transcoded", "tone.ogg", "ogg"),
    ("tone.flac", "transcoded", "tone.ogg", "ogg"),
    ("tone.mp3", "kept", "tone.mp3", "mp3"),
    ("tone.m4a", "kept", "tone.m4a", "m4a"),
    ("isom.m4a", "remuxed", "isom.m4a", "m4a"),
    ("tone.aac", "kept", "tone.aac", "aac"),
    ("vorbis.ogg", "transcoded", "vorbis.ogg", "ogg"),
    ("oggflac.ogg", "transcoded", "oggflac.ogg", "ogg"),
    ("voice.opus", "kept", "voice.ogg", "ogg"),
    ("tone.webm", "remuxed", "tone.ogg", "ogg"),
    ("video.mp4", "remuxed", "video.m4a", "m4a"),
    ("multi.mka", "remuxed", "multi.m4a", "m4a"),
    ("surround.wav", "transcoded", "surround.ogg", "ogg"),
    ("hires.flac", "transcoded", "hires.ogg", "ogg"),
    ("mulaw.wav", "transcoded", "mulaw.ogg", "ogg"),
    ("liar.wav", "kept", "liar.mp3", "mp3"),
    ("silence.wav", "transcoded", "silence.ogg", "ogg"),
    ("short.wav", "transcoded", "short.ogg", "ogg"),
    ("cover.mp3", "remuxed", "cover.mp3", "mp3"),
]


@pytest.mark.parametrize("name, action, out_name, fmt", DEFAULT_CASES, ids=[c[0] for c in DEFAULT_CASES])
def test_every_fixture_default_settings(audio_dir: Path, tmp_path: Path, name: str, action: str,
                                        out_name: str, fmt: str) -> None:
    src = audio_dir / name
    out = tmp_path / "out"
    source_duration = float(ffprobe(src)["format"]["duration"])
    result = prepare_file(src, out, settings(tmp_path))
    assert result.action == action
    assert files_in(out) == [out_name]  # exactly one file, nothing temporary left over
    (o,) = result.outputs
    assert o.path == out / out_name
    assert o.size == o.path.stat().st_size
    assert o.format == fmt
    assert o.mime == mime_of(o.path)
    check_output(o.path, fmt, source_duration=source_duration)
    assert result.passes == (0 if action == "kept" else 1)


def test_cover_art_and_tags_do_not_leak(audio_dir: Path, tmp_path: Path) -> None:
    src = audio_dir / "cover.mp3"
    before = ffprobe(src)
    assert before["format"]["tags"]["title"] == "Secret"  # the fixture really carries them
    assert any(s["codec_type"] == "video" for s in before["streams"])
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    path = result.outputs[0].path
    data = ffprobe(path)
    assert "title" not in all_tags(data) and "artist" not in all_tags(data)
    assert [s["codec_type"] for s in data["streams"]] == ["audio"]
    raw = path.read_bytes()
    assert b"Secret" not in raw and b"Fixture Artist" not in raw and b"JFIF" not in raw


def test_default_stream_of_multi_stream_file_is_used(audio_dir: Path, tmp_path: Path) -> None:
    # multi.mka: stream #0 is 44.1 kHz mono (not default), #1 is 48 kHz stereo (default)
    result = prepare_file(audio_dir / "multi.mka", tmp_path / "out", settings(tmp_path))
    assert result.info.audio.audio_index == 1
    (stream,) = ffprobe(result.outputs[0].path)["streams"]
    assert stream["channels"] == 2 and stream["sample_rate"] == "48000"
    forced = prepare_file(audio_dir / "multi.mka", tmp_path / "re", settings(tmp_path, reencode=True))
    assert forced.plan is not None and forced.plan.audio_index == 1
    assert ffprobe(forced.outputs[0].path)["streams"][0]["channels"] == 2


def test_audio_is_taken_out_of_a_video(audio_dir: Path, tmp_path: Path) -> None:
    result = prepare_file(audio_dir / "video.mp4", tmp_path / "out", settings(tmp_path))
    data = ffprobe(result.outputs[0].path)
    assert [s["codec_type"] for s in data["streams"]] == ["audio"]
    assert data["streams"][0]["channels"] == 1


# --- every target format -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["ogg", "mp3", "m4a", "aac"])
@pytest.mark.parametrize("name", ["tone.wav", "hires.flac", "mulaw.wav"])
def test_target_format(audio_dir: Path, tmp_path: Path, fmt: str, name: str) -> None:
    src = audio_dir / name
    result = prepare_file(src, tmp_path / "out", settings(tmp_path, format=fmt))
    assert result.action == "transcoded"
    (o,) = result.outputs
    assert o.path.name == f"{src.stem}.{fmt}"
    data = check_output(o.path, fmt, source_duration=float(ffprobe(src)["format"]["duration"]))
    stream = data["streams"][0]
    assert int(stream["sample_rate"]) <= (48000 if fmt == "ogg" else int(ffprobe(src)["streams"][0]["sample_rate"]))
    if fmt == "m4a":
        assert data["format"]["tags"]["major_brand"].strip() == "M4A"
    assert files_in(tmp_path / "out") == [o.path.name]


def test_mp3_output_uses_a_legal_rate_for_its_bitrate(tmp_path: Path) -> None:
    # 22.05 kHz stereo: MPEG-2 takes at most 160 kbit/s; the plan must not upsample to reach more
    src = tmp_path / "narrow.wav"
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "sine=f=330:d=2:r=22050", "-ac", "2", str(src)], check=True, timeout=60)
    result = prepare_file(src, tmp_path / "out", settings(tmp_path, format="mp3"))
    stream = ffprobe(result.outputs[0].path)["streams"][0]
    assert int(stream["sample_rate"]) == 22050
    assert int(stream["bit_rate"]) <= 160000


def test_amr_needs_its_encoder(audio_dir: Path, tmp_path: Path) -> None:
    if "libopencore_amrnb" in audio_encoders():
        pytest.skip("this ffmpeg has libopencore_amrnb: the missing-encoder path cannot be tested")
    with pytest.raises(ToolMissingError, match="libopencore_amrnb"):
        prepare_file(audio_dir / "tone.wav", tmp_path / "out", settings(tmp_path, format="amr"))
    assert files_in(tmp_path / "out") == []


def test_adts_output_with_quiet_passages_verifies(tmp_path: Path) -> None:
    """ffprobe estimates an ADTS file's duration from the first frames' bitrate: with 20 s of noise
    then 20 s of silence it reads about 21 s. The real duration (frames × 1024) must be used."""
    src = tmp_path / "halfsilent.wav"
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "anoisesrc=d=20:c=pink:r=16000:a=0.3,apad=whole_dur=40", str(src)], check=True, timeout=60)
    result = prepare_file(src, tmp_path / "out", settings(tmp_path, format="aac"))
    (o,) = result.outputs
    assert mime_of(o.path) == "audio/x-hx-aac-adts"
    assert o.duration == pytest.approx(40.0, abs=0.25)
    # counted independently: packets × 1024 samples
    data = ffprobe(o.path, "-count_packets")
    stream = data["streams"][0]
    assert int(stream["nb_read_packets"]) * 1024 / int(stream["sample_rate"]) == pytest.approx(40.0, abs=0.25)


# --- encode() and verify() directly ------------------------------------------------------------

def test_encode_then_verify(audio_dir: Path, tmp_path: Path) -> None:
    info = probe(audio_dir / "tone.wav")
    p = plan(info, FORMATS["mp3"], 100_000)
    dest = tmp_path / "o" / "x.mp3"
    assert encode(info.path, p, dest) == dest
    assert files_in(tmp_path / "o") == ["x.mp3"]
    checked = verify(dest, FORMATS["mp3"], budget=100_000, expected_duration=p.duration)
    assert checked.size == dest.stat().st_size <= 100_000
    assert checked.mime == "audio/mpeg" == mime_of(dest)
    stream = ffprobe(dest)["streams"][0]
    assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == \
        ("mp3", p.sample_rate, p.channels)


def test_encode_seeks_and_cuts(tmp_path: Path) -> None:
    src = tmp_path / "ten.wav"
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=10:r=16000",
                    str(src)], check=True, timeout=60)
    info = probe(src)
    p = plan(info, FORMATS["ogg"], 1_000_000, start=6.0, duration=3.0, fade_out=1.0)
    dest = encode(src, p, tmp_path / "cut.ogg")
    assert float(ffprobe(dest)["format"]["duration"]) == pytest.approx(3.0, abs=0.05)


def test_verify_refuses_the_wrong_kind(audio_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "x.ogg"
    shutil.copyfile(audio_dir / "tone.wav", wav)
    with pytest.raises(PrepareError, match="audio/x-wav"):
        verify(wav, FORMATS["ogg"], budget=10**9, expected_duration=None)
    vorbis = tmp_path / "v.ogg"  # sniffs audio/ogg, but is not Opus
    shutil.copyfile(audio_dir / "vorbis.ogg", vorbis)
    with pytest.raises(PrepareError, match="vorbis"):
        verify(vorbis, FORMATS["ogg"], budget=10**9, expected_duration=None)
    isom = tmp_path / "i.m4a"  # brand isom: the server sees video/mp4
    shutil.copyfile(audio_dir / "isom.m4a", isom)
    with pytest.raises(PrepareError, match="video/mp4"):
        verify(isom, FORMATS["m4a"], budget=10**9, expected_duration=None)


def test_verify_catches_short_output(audio_dir: Path, tmp_path: Path) -> None:
    opus = tmp_path / "v.ogg"
    shutil.copyfile(audio_dir / "voice.opus", opus)
    checked = verify(opus, FORMATS["ogg"], budget=10**9, expected_duration=2.0)
    assert checked.info.duration == pytest.approx(2.0, abs=0.05)
    with pytest.raises(PrepareError, match="lasts"):
        verify(opus, FORMATS["ogg"], budget=10**9, expected_duration=4.0)


# --- failures leave nothing behind ----------------------------------------------------------------

STUB = """#!/bin/sh
echo "$@" >> "{log}"
for a in "$@"; do
  case "$a" in -version|-encoders) exec "{real}" "$@";; esac
done
for last in "$@"; do :; done
case "$last" in file:*) printf 'half an ogg file' > "${{last#file:}}";; esac
echo "stub ffmpeg: simulated failure" >&2
exit 1
"""


@pytest.fixture()
def failing_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AUDIOPIPE_FFMPEG -> a stub that writes a partial output file then exits 1 (it answers -version
    and -encoders like the real ffmpeg). Returns the stub's log of calls."""
    log = tmp_path / "stub.log"
    stub = tmp_path / "bin" / "ffmpeg"
    stub.parent.mkdir()
    stub.write_text(STUB.format(log=log, real=REAL_FFMPEG))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(stub))
    return log


def test_no_partial_output_when_ffmpeg_fails(audio_dir: Path, tmp_path: Path, failing_ffmpeg: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FFmpegError, match="simulated failure"):
        prepare_file(audio_dir / "tone.wav", out, PrepareSettings(cache=False))
    calls = [line for line in failing_ffmpeg.read_text().splitlines() if "-version" not in line
             and "-encoders" not in line]
    assert calls, "the stub ffmpeg was never asked to encode"
    written = calls[-1].split()[-1]
    assert written.startswith("file:") and written.endswith(".part")
    assert not Path(written[len("file:"):]).exists()  # the stub wrote it; audiopipe removed it
    assert files_in(out) == []


def test_failed_encode_keeps_previous_output(audio_dir: Path, tmp_path: Path, failing_ffmpeg: Path) -> None:
    info = probe(audio_dir / "tone.wav")
    dest = tmp_path / "o" / "tone.ogg"
    dest.parent.mkdir()
    dest.write_bytes(b"previous good output")
    with pytest.raises(FFmpegError):
        encode(info.path, plan(info, FORMATS["ogg"], 100_000), dest)
    assert dest.read_bytes() == b"previous good output"
    assert files_in(dest.parent) == ["tone.ogg"]


def test_real_ffmpeg_failure_leaves_nothing(audio_dir: Path, tmp_path: Path) -> None:
    info = probe(audio_dir / "tone.wav")
    bad = replace(plan(info, FORMATS["ogg"], 100_000), sample_rate=44100)  # libopus refuses 44.1 kHz
    with pytest.raises(FFmpegError) as caught:
        encode(info.path, bad, tmp_path / "o" / "x.ogg")
    assert caught.value.returncode not in (None, 0)
    assert caught.value.stderr  # ffmpeg's own reason is carried
    written = caught.value.argv[-1]
    assert written.startswith("file:" + str(tmp_path / "o")) and written.endswith(".part")
    assert files_in(tmp_path / "o") == []


def test_missing_ffmpeg_is_a_tool_error(audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(tmp_path / "nope" / "ffmpeg"))
    with pytest.raises(ToolMissingError, match="AUDIOPIPE_FFMPEG"):
        prepare_file(audio_dir / "tone.wav", tmp_path / "out", PrepareSettings(cache=False))
    assert files_in(tmp_path / "out") == []
