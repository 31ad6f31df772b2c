"""probe(path) -> MediaInfo on the committed fixtures, the refusals, and the pure JSON step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audiopipe.errors import InputError
from audiopipe.preparation.probe import MediaInfo, media_info_from_json, probe

MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"


# --- readable inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, container, codec, rate, channels",
    [
        ("tone.wav", "wav", "pcm_s16le", 44100, 2),
        ("tone.flac", "flac", "flac", 44100, 2),
        ("tone.mp3", "mp3", "mp3", 44100, 2),
        ("tone.m4a", MP4_FAMILY, "aac", 44100, 2),
        ("isom.m4a", MP4_FAMILY, "aac", 44100, 2),
        ("tone.aac", "aac", "aac", 44100, 2),
        ("vorbis.ogg", "ogg", "vorbis", 44100, 2),
        ("oggflac.ogg", "ogg", "flac", 22050, 1),
        ("voice.opus", "ogg", "opus", 48000, 1),
        ("tone.webm", "matroska,webm", "opus", 48000, 2),
        ("surround.wav", "wav", "pcm_u8", 48000, 8),
        ("hires.flac", "flac", "flac", 96000, 2),
        ("mulaw.wav", "wav", "pcm_mulaw", 8000, 1),
        ("silence.wav", "wav", "pcm_s16le", 8000, 1),
        ("short.wav", "wav", "pcm_s16le", 44100, 1),
        ("cover.mp3", "mp3", "mp3", 44100, 1),
    ],
)
def test_probe_readable(audio_dir: Path, name: str, container: str, codec: str, rate: int,
                        channels: int) -> None:
    path = audio_dir / name
    info = probe(path)
    assert isinstance(info, MediaInfo)
    assert info.path == str(path)
    assert info.container == container
    assert info.audio.codec == codec
    assert info.audio.sample_rate == rate
    assert info.audio.channels == channels
    assert info.size == path.stat().st_size
    assert info.audio_streams == 1
    assert info.audio.audio_index == 0


@pytest.mark.parametrize(
    "name, seconds",
    [("tone.wav", 2.0), ("tone.mp3", 2.04), ("tone.m4a", 2.0), ("voice.opus", 2.0),
     ("surround.wav", 1.0), ("hires.flac", 1.0), ("silence.wav", 2.0), ("short.wav", 0.05)],
)
def test_probe_duration(audio_dir: Path, name: str, seconds: float) -> None:
    assert probe(audio_dir / name).duration == pytest.approx(seconds, abs=0.05)


def test_short_wav_is_50_ms(audio_dir: Path) -> None:
    assert probe(audio_dir / "short.wav").duration == pytest.approx(0.05, abs=0.002)


def test_surround_has_eight_channels(audio_dir: Path) -> None:
    info = probe(audio_dir / "surround.wav")
    assert info.audio.channels == 8
    assert info.audio.channel_layout == "7.1"


def test_hires_flac(audio_dir: Path) -> None:
    info = probe(audio_dir / "hires.flac")
    assert info.audio.sample_rate == 96000
    assert info.audio.codec == "flac"


def test_mulaw_wav(audio_dir: Path) -> None:
    info = probe(audio_dir / "mulaw.wav")
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("pcm_mulaw", 8000, 1)


def test_brand_m4a_vs_isom(audio_dir: Path) -> None:
    assert probe(audio_dir / "tone.m4a").brand == "M4A"   # ipod muxer, sniffs audio/x-m4a
    assert probe(audio_dir / "isom.m4a").brand == "isom"  # mp4 muxer, sniffs video/mp4
    assert probe(audio_dir / "video.mp4").brand == "isom"
    assert probe(audio_dir / "tone.mp3").brand is None
    assert probe(audio_dir / "tone.wav").brand is None


def test_liar_wav_is_really_mp3(audio_dir: Path) -> None:
    info = probe(audio_dir / "liar.wav")
    assert info.container == "mp3"
    assert info.audio.codec == "mp3"


def test_video_mp4_has_one_video_stream(audio_dir: Path) -> None:
    info = probe(audio_dir / "video.mp4")
    assert info.container == MP4_FAMILY
    assert info.video_streams == 1
    assert info.attached_pictures == 0
    assert info.audio_streams == 1
    assert info.audio.index == 1          # the video is stream 0
    assert info.audio.audio_index == 0
    assert (info.audio.codec, info.audio.channels) == ("aac", 1)


def test_cover_art_is_not_video(audio_dir: Path) -> None:
    info = probe(audio_dir / "cover.mp3")
    assert info.attached_pictures == 1
    assert info.video_streams == 0
    assert info.audio.codec == "mp3"
    assert info.audio.index == 0


def test_multi_mka_chooses_the_default_second_stream(audio_dir: Path) -> None:
    info = probe(audio_dir / "multi.mka")
    assert info.container == "matroska,webm"
    assert info.audio_streams == 2
    assert info.audio.audio_index == 1
    assert info.audio.index == 1
    # The second stream is 48 kHz stereo; the first (not default) is 44.1 kHz mono.
    assert (info.audio.sample_rate, info.audio.channels) == (48000, 2)


def test_truncated_wav_reports_what_is_really_there(audio_dir: Path) -> None:
    # The header claims 4 s; only 1 s of samples is in the file.
    assert probe(audio_dir / "truncated.wav").duration == pytest.approx(1.0, abs=0.01)


def test_to_dict_round_trips(audio_dir: Path) -> None:
    d = probe(audio_dir / "tone.mp3").to_dict()
    assert d["container"] == "mp3"
    assert d["audio"]["codec"] == "mp3"
    assert d["audio"]["bit_rate"] == 128000


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, words",
    [
        ("noaudio.mp4", ["no audio", "video only"]),
        ("empty.mp3", ["empty"]),
        ("truncated.m4a", ["not an audio or video file", "truncated"]),
        ("random.wav", ["not an audio or video file"]),
        ("playlist.mp3", ["playlist"]),
        ("text.mp3", []),
    ],
)
def test_refused(audio_dir: Path, name: str, words: list[str]) -> None:
    path = audio_dir / name
    with pytest.raises(InputError) as err:
        probe(path)
    reason = err.value.reason
    assert reason and reason.strip()
    assert err.value.path == str(path)
    assert str(path) in str(err.value)
    for word in words:
        assert word in reason, (name, reason)


def test_text_mp3_reason_is_explanatory(audio_dir: Path) -> None:
    with pytest.raises(InputError) as err:
        probe(audio_dir / "text.mp3")
    assert "not an audio or video file" in err.value.reason
    assert "file:" not in err.value.reason


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        probe(tmp_path / "nope.wav")
    assert "no such file" in err.value.reason


def test_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        probe(tmp_path)
    assert "not a regular file" in err.value.reason


def _elsewhere_copy(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tone.mp3 in a folder other than the playlist's (a 'private' recording)."""
    private = tmp_path_factory.mktemp("elsewhere") / "private.mp3"
    shutil.copyfile(audio_dir / "tone.mp3", private)
    assert probe(private).container == "mp3"  # it is a perfectly good file on its own
    return private


@pytest.mark.parametrize("absolute", ["file_url", "plain_path"])
def test_hls_playlist_pointing_elsewhere_is_refused(
        audio_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        absolute: str) -> None:
    private = _elsewhere_copy(audio_dir, tmp_path_factory)
    segment = private.as_uri() if absolute == "file_url" else str(private)
    assert private.parent != tmp_path
    playlist = tmp_path / "x.mp3"
    playlist.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
                        f"#EXTINF:2.0,\n{segment}\n#EXT-X-ENDLIST\n", encoding="ascii")
    with pytest.raises(InputError) as err:
        probe(playlist)
    assert "playlist" in err.value.reason


def test_ffconcat_named_wav_is_refused(audio_dir: Path, tmp_path: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    private = _elsewhere_copy(audio_dir, tmp_path_factory)
    concat = tmp_path / "x.wav"
    concat.write_text(f"ffconcat version 1.0\nfile '{private}'\n", encoding="ascii")
    with pytest.raises(InputError) as err:
        probe(concat)
    assert "playlist" in err.value.reason


# --- media_info_from_json: pure, hand-written ffprobe output ------------------------------------

def _audio(index: int, *, default: int = 0, rate: str = "44100", channels: int = 2,
           codec: str = "mp3") -> dict:
    return {"index": index, "codec_type": "audio", "codec_name": codec, "sample_rate": rate,
            "channels": channels, "channel_layout": "stereo" if channels == 2 else "mono",
            "bit_rate": "128000", "disposition": {"default": default, "attached_pic": 0}}


def _doc(streams: list[dict], *, format_name: str = "mp3", duration: str | None = "12.5",
         tags: dict | None = None) -> dict:
    fmt: dict = {"format_name": format_name, "bit_rate": "128000"}
    if duration is not None:
        fmt["duration"] = duration
    if tags:
        fmt["tags"] = tags
    return {"format": fmt, "streams": streams}


P = Path("/in/x.mp3")


def test_json_plain_file() -> None:
    info = media_info_from_json(P, 1234, _doc([_audio(0)]))
    assert info.path == str(P)
    assert info.size == 1234
    assert info.container == "mp3"
    assert info.duration == 12.5
    assert info.bit_rate == 128000
    assert info.audio.codec == "mp3"
    assert info.audio.sample_rate == 44100
    assert info.audio.channels == 2
    assert info.audio.bit_rate == 128000
    assert (info.audio_streams, info.video_streams, info.attached_pictures) == (1, 0, 0)
    assert info.brand is None


@pytest.mark.parametrize("name", ["hls", "concat", "ffconcat", "dash", "image2", "hls,applehttp"])
def test_json_playlist_format_refused(name: str) -> None:
    with pytest.raises(InputError) as err:
        media_info_from_json(P, 100, _doc([_audio(0)], format_name=name))
    assert "playlist" in err.value.reason


def test_json_format_name_containing_but_not_equal_to_playlist_is_fine() -> None:
    # "mov,mp4,m4a,..." must not be mistaken for a playlist because of substring matches.
    info = media_info_from_json(P, 100, _doc([_audio(0, codec="aac")], format_name=MP4_FAMILY))
    assert info.container == MP4_FAMILY


@pytest.mark.parametrize("duration", ["0", "0.000000", "-1", "nan", None, "N/A"])
def test_json_zero_or_missing_duration_refused(duration: str | None) -> None:
    with pytest.raises(InputError) as err:
        media_info_from_json(P, 100, _doc([_audio(0)], duration=duration))
    assert "zero duration" in err.value.reason


def test_json_duration_falls_back_to_the_stream() -> None:
    stream = dict(_audio(0), duration="3.25")
    assert media_info_from_json(P, 100, _doc([stream], duration=None)).duration == 3.25


def test_json_default_stream_chosen() -> None:
    streams = [
        {"index": 0, "codec_type": "video", "codec_name": "h264", "disposition": {"default": 1}},
        _audio(1, default=0, rate="44100", channels=1),
        _audio(2, default=1, rate="48000", channels=2, codec="aac"),
        _audio(3, default=0, rate="22050", channels=1),
    ]
    info = media_info_from_json(P, 100, _doc(streams, format_name="matroska,webm"))
    assert info.audio.index == 2
    assert info.audio.audio_index == 1
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 2)
    assert (info.audio_streams, info.video_streams) == (3, 1)


def test_json_first_stream_when_none_is_default() -> None:
    streams = [_audio(0, rate="32000"), _audio(1, rate="48000")]
    info = media_info_from_json(P, 100, _doc(streams))
    assert (info.audio.index, info.audio.audio_index, info.audio.sample_rate) == (0, 0, 32000)


def test_json_attached_picture_counted_apart_from_video() -> None:
    pic = {"index": 1, "codec_type": "video", "codec_name": "mjpeg",
           "disposition": {"default": 0, "attached_pic": 1}}
    info = media_info_from_json(P, 100, _doc([_audio(0), pic]))
    assert (info.video_streams, info.attached_pictures) == (0, 1)


def test_json_brand_is_stripped() -> None:
    info = media_info_from_json(P, 100, _doc([_audio(0, codec="aac")], format_name=MP4_FAMILY,
                                             tags={"major_brand": "M4A "}))
    assert info.brand == "M4A"


def test_json_no_audio_refused() -> None:
    video = {"index": 0, "codec_type": "video", "codec_name": "h264", "disposition": {}}
    with pytest.raises(InputError) as err:
        media_info_from_json(P, 100, _doc([video], format_name=MP4_FAMILY))
    assert "no audio" in err.value.reason and "video only" in err.value.reason
    with pytest.raises(InputError) as err:
        media_info_from_json(P, 100, _doc([]))
    assert "no audio" in err.value.reason


def test_json_no_format_refused() -> None:
    with pytest.raises(InputError):
        media_info_from_json(P, 100, {})
    with pytest.raises(InputError):
        media_info_from_json(P, 100, {"format": {"format_name": ""}, "streams": [_audio(0)]})


@pytest.mark.parametrize("bad", [{"codec_name": "none"}, {"codec_name": None},
                                 {"sample_rate": "0"}, {"sample_rate": None}, {"channels": 0}])
def test_json_undecodable_stream_refused(bad: dict) -> None:
    stream = dict(_audio(0), **bad)
    with pytest.raises(InputError) as err:
        media_info_from_json(P, 100, _doc([stream]))
    assert "cannot be decoded" in err.value.reason
