"""prepare_file / prepare_many: keep or convert, fit the budget, trim/split/fail, the cache, batches.

Real ffmpeg on the committed fixtures and on a few files generated into tmp_path; every output is
re-read with ffprobe and libmagic directly. Nothing is written outside tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import magic
import pytest
from helpers import files_in, settings

from audiopipe.errors import FFmpegError, InputError, PrepareError
from audiopipe.preparation import formats
from audiopipe.preparation.formats import MPEG1_RATES, MPEG2_RATES, MPEG25_RATES
from audiopipe.preparation.inputs import collect_inputs
from audiopipe.preparation.pipeline import prepare_file, prepare_many
from audiopipe.preparation.plan import DoesNotFit
from audiopipe.preparation.results import PrepareOutcome
from audiopipe.preparation.settings import PrepareSettings

REAL_FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
                         capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)


def duration_of(path: Path) -> float:
    return float(ffprobe(path)["format"]["duration"])


def mime_of(path: Path) -> str:
    return magic.from_file(str(path), mime=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def generate(dest: Path, source: str, *extra: str) -> Path:
    subprocess.run([REAL_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, *extra, str(dest)],
                   check=True, timeout=60)
    return dest


@pytest.fixture(scope="module")
def ramp60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of mono pink noise at 44.1 kHz whose level rises steadily: later parts are louder."""
    return generate(tmp_path_factory.mktemp("gen") / "ramp.wav",
                    "anoisesrc=d=60:c=pink:r=44100:a=0.5:seed=3,volume=0.03+t/60:eval=frame",
                    "-c:a", "pcm_s16le")


@pytest.fixture(scope="module")
def speech60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of speech-like stereo: band-limited noise in syllable-rate bursts, 48 kHz."""
    return generate(tmp_path_factory.mktemp("gen") / "speech.wav",
                    "anoisesrc=d=60:c=pink:r=48000:a=0.4:seed=5,tremolo=f=4:d=0.9,"
                    "highpass=f=120,lowpass=f=3800", "-ac", "2", "-c:a", "pcm_s16le")


def mean_volume(path: Path) -> float:
    out = subprocess.run([REAL_FFMPEG, "-nostdin", "-hide_banner", "-i", str(path), "-af", "volumedetect",
                          "-f", "null", "-"], capture_output=True, text=True, check=True, timeout=60)
    line = next(x for x in out.stderr.splitlines() if "mean_volume" in x)
    return float(line.split("mean_volume:")[1].split()[0])


# --- kept byte for byte, or not ------------------------------------------------------------------

@pytest.mark.parametrize("name, out_name, mime", [
    ("tone.mp3", "tone.mp3", "audio/mpeg"),
    ("tone.m4a", "tone.m4a", "audio/x-m4a"),
    ("tone.aac", "tone.aac", "audio/x-hx-aac-adts"),
    ("voice.opus", "voice.ogg", "audio/ogg"),
    ("liar.wav", "liar.mp3", "audio/mpeg"),  # MP3 content under a .wav name: named for what it is
])
def test_kept_byte_for_byte(audio_dir: Path, tmp_path: Path, name: str, out_name: str, mime: str) -> None:
    src = audio_dir / name
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert result.action == "kept"
    assert result.passes == 0 and result.plan is None
    (o,) = result.outputs
    assert o.path == tmp_path / "out" / out_name
    assert sha256(o.path) == sha256(src) == result.source_sha256
    assert mime_of(o.path) == mime == o.mime
    assert files_in(tmp_path / "out") == [out_name]


@pytest.mark.parametrize("name, why", [
    ("vorbis.ogg", "WhatsApp takes Ogg with Opus only"),
    ("oggflac.ogg", "FLAC in Ogg"),
])
def test_not_kept(audio_dir: Path, tmp_path: Path, name: str, why: str) -> None:
    src = audio_dir / name
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert result.action == "transcoded", why
    (o,) = result.outputs
    assert sha256(o.path) != sha256(src)
    assert mime_of(o.path) == "audio/ogg"
    assert ffprobe(o.path)["streams"][0]["codec_name"] == "opus"


def audio_packets(path: Path) -> list[str]:
    """The audio packets' sizes: equal lists mean the audio was copied, not re-encoded."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "packet=size", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.strip(",") for line in out.split()]


@pytest.mark.parametrize("name, out_name, mime, why", [
    ("isom.m4a", "isom.m4a", "audio/x-m4a", "brand isom sniffs video/mp4: the server refuses it"),
    ("cover.mp3", "cover.mp3", "audio/mpeg", "the cover art and tags must not be sent"),
    ("tone.webm", "tone.ogg", "audio/ogg", "Opus, but in WebM"),
    ("video.mp4", "video.m4a", "audio/x-m4a", "AAC beside a video track"),
])
def test_remuxed_without_a_second_encode(audio_dir: Path, tmp_path: Path, name: str, out_name: str,
                                         mime: str, why: str) -> None:
    src = audio_dir / name
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert result.action == "remuxed", why
    (o,) = result.outputs
    assert o.path.name == out_name
    assert mime_of(o.path) == mime == o.mime
    assert audio_packets(o.path) == audio_packets(src)  # the very same audio
    probed = ffprobe(o.path)
    assert [s["codec_type"] for s in probed["streams"]] == ["audio"]
    tags = {k.lower() for k in (probed["format"].get("tags") or {})}
    assert not tags & {"title", "artist", "comment", "album"}


def test_tags_alone_make_a_remux(tmp_path: Path, audio_dir: Path) -> None:
    tagged = tmp_path / "tagged.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(audio_dir / "tone.m4a"), "-c", "copy",
                    "-metadata", "artist=Private Sender", "-metadata", "location=+48.85+002.35/",
                    "-f", "ipod", str(tagged)], check=True, timeout=60)
    result = prepare_file(tagged, tmp_path / "out", settings(tmp_path))
    assert result.action == "remuxed" and result.info.tags
    tags = ffprobe(result.outputs[0].path)["format"].get("tags") or {}
    assert "artist" not in tags and "location" not in tags


def test_reencode_forces_transcode(audio_dir: Path, tmp_path: Path) -> None:
    result = prepare_file(audio_dir / "tone.mp3", tmp_path / "out", settings(tmp_path, reencode=True))
    assert result.action == "transcoded"
    assert result.passes == 1
    (o,) = result.outputs
    assert o.path.name == "tone.ogg"
    assert ffprobe(o.path)["streams"][0]["codec_name"] == "opus"
    assert result.plan is not None and result.plan.bitrate <= 128000  # never above the 128k source


def test_kept_file_over_budget_is_transcoded(audio_dir: Path, tmp_path: Path) -> None:
    src = audio_dir / "tone.mp3"  # 33,037 bytes
    result = prepare_file(src, tmp_path / "out", settings(tmp_path, max_size=20_000))
    assert result.action == "transcoded"
    assert result.outputs[0].path.stat().st_size <= 20_000


def test_voice_note_does_not_keep_an_mp3(audio_dir: Path, tmp_path: Path) -> None:
    result = prepare_file(audio_dir / "tone.mp3", tmp_path / "out", settings(tmp_path, voice_note=True))
    assert result.action == "transcoded"
    stream = ffprobe(result.outputs[0].path)["streams"][0]
    assert (stream["codec_name"], stream["channels"]) == ("opus", 1)


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["noaudio.mp4", "empty.mp3", "truncated.m4a", "text.mp3", "random.wav",
                                  "playlist.mp3", "missing.wav"])
def test_refusals(audio_dir: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        prepare_file(audio_dir / name, out, settings(tmp_path))
    assert caught.value.path == str(audio_dir / name)
    assert files_in(out) == []
    assert files_in(tmp_path / "cache") == []


def test_refusal_reasons(audio_dir: Path, tmp_path: Path) -> None:
    def reason(name: str) -> str:
        with pytest.raises(InputError) as caught:
            prepare_file(audio_dir / name, tmp_path / "out", settings(tmp_path))
        return caught.value.reason

    assert "no audio" in reason("noaudio.mp4")
    assert "empty" in reason("empty.mp3")
    assert "playlist" in reason("playlist.mp3")
    assert "no such file" in reason("missing.wav")


# --- fitting the budget --------------------------------------------------------------------------

def test_fit_small_budget(ramp60: Path, tmp_path: Path) -> None:
    budget = 200_000
    result = prepare_file(ramp60, tmp_path / "out", settings(tmp_path, max_size=budget))
    assert result.action == "transcoded"
    (o,) = result.outputs
    size = o.path.stat().st_size
    assert size <= budget
    assert size > budget * 0.8  # the budget was used, not thrown away on a needlessly low bitrate
    assert duration_of(o.path) == pytest.approx(60.0, abs=0.3)
    assert result.plan is not None and result.plan.bitrate < 64000
    assert mime_of(o.path) == "audio/ogg"


def test_replan_after_overshoot(ramp60: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the size model believe Opus comes out 40 % smaller than it does: the first encode overshoots.
    monkeypatch.setitem(formats.FORMATS, "ogg", replace(formats.FORMATS["ogg"], bitrate_factor=0.6))
    budget = 200_000
    result = prepare_file(ramp60, tmp_path / "out", PrepareSettings(max_size=budget, cache=False))
    assert result.action == "transcoded"
    assert result.passes >= 2
    (o,) = result.outputs
    assert o.path.stat().st_size <= budget
    assert duration_of(o.path) == pytest.approx(60.0, abs=0.3)
    assert files_in(tmp_path / "out") == ["ramp.ogg"]


def test_mp3_replan_lowers_the_sample_rate_with_the_bitrate(ramp60: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first MP3 plan (48k at 32 kHz) overshoots; the re-plan must move to an MPEG-2 rate, or LAME
    turns 24k at 32 kHz back into 32k and the output never shrinks."""
    monkeypatch.setitem(formats.FORMATS, "mp3", replace(formats.FORMATS["mp3"], bitrate_factor=0.5))
    budget = 190_000
    result = prepare_file(ramp60, tmp_path / "out", PrepareSettings(format="mp3", max_size=budget, cache=False))
    assert result.action == "transcoded"
    assert result.passes >= 2
    (o,) = result.outputs
    assert o.path.stat().st_size <= budget
    stream = ffprobe(o.path)["streams"][0]
    rate, bitrate = int(stream["sample_rate"]), int(stream["bit_rate"])
    assert (rate in MPEG1_RATES and bitrate >= 32000) or rate in MPEG2_RATES + MPEG25_RATES


def test_trim(ramp60: Path, tmp_path: Path) -> None:
    budget = 40_000  # even 6 kbit/s Opus holds only about 42 s of the 60
    result = prepare_file(ramp60, tmp_path / "out", settings(tmp_path, max_size=budget))
    assert result.action == "trimmed"
    assert result.kept_duration is not None and 30.0 < result.kept_duration < 60.0
    (o,) = result.outputs
    assert o.path.name == "ramp.ogg"
    assert o.path.stat().st_size <= budget
    assert duration_of(o.path) == pytest.approx(result.kept_duration, abs=0.1)
    assert result.plan is not None and result.plan.fade_out > 0
    assert mime_of(o.path) == "audio/ogg"
    assert files_in(tmp_path / "out") == ["ramp.ogg"]


def test_split(ramp60: Path, tmp_path: Path) -> None:
    budget = 25_000
    out = tmp_path / "out"
    result = prepare_file(ramp60, out, settings(tmp_path, max_size=budget, on_overflow="split"))
    assert result.action == "split"
    n = len(result.outputs)
    assert n >= 2  # about 30 s of 6 kbit/s Opus fit 25 KB (Ogg's headers are 180 bytes, not the 4 KB once assumed)
    names = [f"ramp.part{i}of{n}.ogg" for i in range(1, n + 1)]
    assert [o.path.name for o in result.outputs] == names
    assert [(o.part, o.parts) for o in result.outputs] == [(i, n) for i in range(1, n + 1)]
    assert files_in(out) == sorted(names)
    durations = []
    for o in result.outputs:
        assert o.path.stat().st_size <= budget
        assert mime_of(o.path) == "audio/ogg"
        durations.append(duration_of(o.path))
    assert sum(durations) == pytest.approx(60.0, abs=0.1 * n)
    # in order: the source gets louder, so must each part
    volumes = [mean_volume(o.path) for o in result.outputs]
    assert volumes == sorted(volumes)


def test_fail(ramp60: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DoesNotFit) as caught:
        prepare_file(ramp60, out, settings(tmp_path, max_size=40_000, on_overflow="fail"))
    assert isinstance(caught.value, PrepareError)
    assert 30.0 < caught.value.fits_seconds < 60.0
    assert files_in(out) == []


def test_less_than_a_second_fits(ramp60: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    # A container that takes 8 KB whatever the length (M4A's tables as the model once had them) and
    # 2.1 KB a second at the floor: 0.1 s would fit. (Every format is now modelled at its measured
    # overhead, so 4 KB, the least --max-size takes, holds over a second of any of them.)
    monkeypatch.setitem(formats.FORMATS, "m4a", replace(formats.FORMATS["m4a"], fixed_overhead=8192))
    with pytest.raises(PrepareError, match="max-size"):
        prepare_file(ramp60, out, settings(tmp_path, max_size=8500, format="m4a"))
    assert files_in(out) == []


@pytest.mark.parametrize("fmt", ["mp3", "m4a"])
def test_trim_other_formats(ramp60: Path, tmp_path: Path, fmt: str) -> None:
    budget = 60_000
    result = prepare_file(ramp60, tmp_path / "out", PrepareSettings(format=fmt, max_size=budget, cache=False))
    assert result.action == "trimmed"
    (o,) = result.outputs
    assert o.path.stat().st_size <= budget
    assert duration_of(o.path) == pytest.approx(result.kept_duration, abs=0.25)


# --- voice notes ---------------------------------------------------------------------------------

def test_voice_note(speech60: Path, tmp_path: Path) -> None:
    result = prepare_file(speech60, tmp_path / "out", settings(tmp_path, voice_note=True))
    (o,) = result.outputs
    assert o.path.name == "speech.ogg"
    assert o.path.stat().st_size <= 512_000
    data = ffprobe(o.path)
    stream = data["streams"][0]
    assert (stream["codec_name"], stream["channels"]) == ("opus", 1)
    assert data["format"]["format_name"] == "ogg"
    assert mime_of(o.path) == "audio/ogg"
    assert result.plan is not None and result.plan.application == "voip"
    assert duration_of(o.path) == pytest.approx(60.0, abs=0.3)


def test_voice_note_normalized(tmp_path: Path) -> None:
    quiet = generate(tmp_path / "quiet.wav", "anoisesrc=d=60:c=pink:r=16000:a=0.02:seed=9,tremolo=f=4:d=0.9")
    result = prepare_file(quiet, tmp_path / "out", PrepareSettings(voice_note=True, normalize=True, cache=False))
    (o,) = result.outputs
    assert result.plan is not None and result.plan.normalize
    assert o.path.stat().st_size <= 512_000
    assert ffprobe(o.path)["streams"][0]["channels"] == 1
    # loudnorm really ran: the quiet input came out much louder
    assert mean_volume(o.path) > mean_volume(quiet) + 6


# --- the cache -----------------------------------------------------------------------------------

STUB = """#!/bin/sh
echo "$@" >> "{log}"
for a in "$@"; do
  case "$a" in -version|-encoders) exec "{real}" "$@";; esac
done
exit 1
"""


def install_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AUDIOPIPE_FFMPEG -> a stub that answers -version/-encoders like ffmpeg and fails anything else."""
    log = tmp_path / "stub.log"
    stub = tmp_path / "bin" / "ffmpeg"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(STUB.format(log=log, real=REAL_FFMPEG))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(stub))
    return log


def encode_calls(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [x for x in log.read_text().splitlines() if "-version" not in x and "-encoders" not in x]


def test_cache_hit_does_not_encode(audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(tmp_path)
    first = prepare_file(audio_dir / "tone.wav", tmp_path / "one", s)
    assert not first.cached and first.action == "transcoded"

    log = install_stub(tmp_path, monkeypatch)
    second = prepare_file(audio_dir / "tone.wav", tmp_path / "two", s)
    assert second.cached
    assert encode_calls(log) == []  # ffmpeg was only asked its version
    assert second.action == first.action and second.plan == first.plan
    assert [o.path.name for o in second.outputs] == ["tone.ogg"]
    assert sha256(second.outputs[0].path) == sha256(first.outputs[0].path)
    assert second.outputs[0].size == first.outputs[0].size
    assert second.info.duration == first.info.duration
    assert files_in(tmp_path / "two") == ["tone.ogg"]

    # the stub really fails an encode: a miss (other settings) shows it
    with pytest.raises(FFmpegError):
        prepare_file(audio_dir / "tone.wav", tmp_path / "three", settings(tmp_path, bitrate=32000))
    assert encode_calls(log) != []


def test_cache_restores_under_a_new_name(audio_dir: Path, tmp_path: Path) -> None:
    s = settings(tmp_path, max_size=25_000, on_overflow="split")
    src = tmp_path / "long.wav"
    generate(src, "sine=f=300:d=40:r=16000")
    first = prepare_file(src, tmp_path / "one", s)
    assert first.action == "split"
    again = prepare_file(src, tmp_path / "two", s, name="renamed")
    assert again.cached
    n = len(first.outputs)
    assert [o.path.name for o in again.outputs] == [f"renamed.part{i}of{n}.ogg" for i in range(1, n + 1)]
    for a, b in zip(first.outputs, again.outputs, strict=True):
        assert sha256(a.path) == sha256(b.path)


def test_cache_kept_file(audio_dir: Path, tmp_path: Path) -> None:
    s = settings(tmp_path)
    prepare_file(audio_dir / "liar.wav", tmp_path / "one", s)
    again = prepare_file(audio_dir / "liar.wav", tmp_path / "two", s)
    assert again.cached and again.action == "kept"
    assert again.outputs[0].path.name == "liar.mp3"
    assert sha256(again.outputs[0].path) == sha256(audio_dir / "liar.wav")


def test_cache_misses_on_other_settings_or_content(audio_dir: Path, tmp_path: Path) -> None:
    prepare_file(audio_dir / "tone.wav", tmp_path / "one", settings(tmp_path))
    other = prepare_file(audio_dir / "tone.wav", tmp_path / "two", settings(tmp_path, bitrate=32000))
    assert not other.cached
    assert other.plan is not None and other.plan.bitrate <= 32000
    assert int(ffprobe(other.outputs[0].path)["format"]["bit_rate"]) < 40000
    # same name, other content
    src = tmp_path / "in" / "tone.wav"
    src.parent.mkdir()
    shutil.copyfile(audio_dir / "mulaw.wav", src)
    changed = prepare_file(src, tmp_path / "three", settings(tmp_path))
    assert not changed.cached
    assert ffprobe(changed.outputs[0].path)["streams"][0]["channels"] == 1


def test_damaged_cache_entry_is_a_miss_and_is_repaired(audio_dir: Path, tmp_path: Path) -> None:
    s = settings(tmp_path)
    prepare_file(audio_dir / "tone.flac", tmp_path / "one", s)
    entries = [m.parent for m in (tmp_path / "cache").glob("*/*/manifest.json")]
    assert len(entries) == 1
    stored = [f for f in entries[0].iterdir() if f.name != "manifest.json"]
    assert [f.name for f in stored] == ["tone.ogg"]
    stored[0].unlink()

    again = prepare_file(audio_dir / "tone.flac", tmp_path / "two", s)
    assert not again.cached
    assert mime_of(again.outputs[0].path) == "audio/ogg"
    assert ffprobe(again.outputs[0].path)["streams"][0]["codec_name"] == "opus"

    third = prepare_file(audio_dir / "tone.flac", tmp_path / "three", s)
    assert third.cached  # the damaged entry was replaced, not left to miss forever
    assert sha256(third.outputs[0].path) == sha256(again.outputs[0].path)


def test_cache_off_writes_no_cache(audio_dir: Path, tmp_path: Path) -> None:
    s = PrepareSettings(cache=False, cache_dir=tmp_path / "cache")
    prepare_file(audio_dir / "tone.wav", tmp_path / "one", s)
    second = prepare_file(audio_dir / "tone.wav", tmp_path / "two", s)
    assert not second.cached
    assert not (tmp_path / "cache").exists()


# --- batches -------------------------------------------------------------------------------------

def make_batch(audio_dir: Path, root: Path) -> Path:
    folder = root / "batch"
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for name in ("tone.wav", "tone.mp3", "voice.opus", "text.mp3", "empty.mp3", "random.wav", "noaudio.mp4"):
        shutil.copyfile(audio_dir / name, folder / name)
    shutil.copyfile(audio_dir / "hires.flac", folder / "sub" / "deep" / "hires.flac")
    shutil.copyfile(audio_dir / "tone.wav", folder / ".secret.wav")
    shutil.copyfile(audio_dir / "tone.wav", folder / ".hidden" / "inside.wav")
    (folder / "notes.txt").write_text("not audio\n")
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    return folder


def test_collect_inputs(audio_dir: Path, tmp_path: Path) -> None:
    folder = make_batch(audio_dir, tmp_path)
    items = collect_inputs([folder, audio_dir / "tone.flac", tmp_path / "missing.wav"])
    got = [(str(i.path.relative_to(folder)) if folder in i.path.parents else i.path.name, str(i.out_subdir))
           for i in items]
    assert got == [
        ("empty.mp3", "."), ("noaudio.mp4", "."), ("random.wav", "."), ("sub/deep/hires.flac", "sub/deep"),
        ("text.mp3", "."), ("tone.mp3", "."), ("tone.wav", "."), ("voice.opus", "."),
        ("tone.flac", "."), ("missing.wav", "."),  # named directly: always tried (and refused in turn)
    ]


def test_prepare_many_mixed_batch(audio_dir: Path, tmp_path: Path) -> None:
    folder = make_batch(audio_dir, tmp_path)
    items = collect_inputs([folder])
    out = tmp_path / "out"
    seen: list[PrepareOutcome] = []
    outcomes = prepare_many(items, out, settings(tmp_path), jobs=2, progress=seen.append)
    assert [o.source for o in outcomes] == [i.path for i in items]  # one per input, in order
    assert len(seen) == len(items)
    by_name = {o.source.name: o for o in outcomes}
    for bad in ("text.mp3", "empty.mp3", "random.wav", "noaudio.mp4"):
        assert not by_name[bad].ok
        assert isinstance(by_name[bad].error, InputError)
        assert by_name[bad].to_dict()["ok"] is False
    for good in ("tone.wav", "tone.mp3", "voice.opus", "hires.flac"):
        assert by_name[good].ok and by_name[good].error is None
    written = [str(f.path.relative_to(out)) for o in outcomes if o.result for f in o.result.outputs]
    assert len(set(written)) == 4
    assert files_in(out) == sorted(written)  # nothing else: no temp .part file, no stray output
    assert not [f for f in files_in(out) if f.endswith(".part")]
    assert by_name["hires.flac"].result.outputs[0].path == out / "sub" / "deep" / "hires.ogg"  # type: ignore[union-attr]
    assert by_name["voice.opus"].result.outputs[0].path == out / "voice.ogg"  # type: ignore[union-attr]
    kept_mp3 = by_name["tone.mp3"].result.outputs[0].path  # type: ignore[union-attr]
    assert sha256(kept_mp3) == sha256(audio_dir / "tone.mp3")
    wav_out = by_name["tone.wav"].result.outputs[0].path  # type: ignore[union-attr]
    assert wav_out.suffix == ".ogg" and wav_out.name.startswith("tone")
    for f in files_in(out):
        assert mime_of(out / f) in {"audio/ogg", "audio/mpeg"}


def test_same_stem_inputs_do_not_overwrite(audio_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(audio_dir / "tone.wav", folder / "a.wav")      # stereo, 2 s
    shutil.copyfile(audio_dir / "oggflac.ogg", folder / "a.ogg")   # mono; both become Ogg/Opus
    shutil.copyfile(audio_dir / "tone.mp3", folder / "a.mp3")      # kept as .mp3
    out = tmp_path / "out"
    outcomes = prepare_many(collect_inputs([folder]), out, PrepareSettings(cache=False), jobs=2)
    assert all(o.ok for o in outcomes)
    paths = [o.result.outputs[0].path for o in outcomes if o.result]
    assert len(set(paths)) == 3
    assert files_in(out) == sorted(p.name for p in paths)
    by_source = {o.source.name: o.result.outputs[0].path for o in outcomes if o.result}
    assert ffprobe(by_source["a.wav"])["streams"][0]["channels"] == 2
    assert ffprobe(by_source["a.ogg"])["streams"][0]["channels"] == 1
    assert sha256(by_source["a.mp3"]) == sha256(audio_dir / "tone.mp3")


def test_prepare_many_accepts_plain_paths_sequentially(audio_dir: Path, tmp_path: Path) -> None:
    outcomes = prepare_many([audio_dir / "tone.m4a", audio_dir / "text.mp3"], tmp_path / "out",
                            PrepareSettings(cache=False), jobs=1)
    assert [o.ok for o in outcomes] == [True, False]
    assert files_in(tmp_path / "out") == ["tone.m4a"]
    assert sha256(tmp_path / "out" / "tone.m4a") == sha256(audio_dir / "tone.m4a")
