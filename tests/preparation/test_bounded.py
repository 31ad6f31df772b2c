"""Bounded work for any input: absurd inputs refused before ffmpeg works on them, every child under
memory and CPU limits, kept files decoded to the end, durations taken from the audio stream.

Every input is a real file written here (by ffmpeg, or byte by byte for the headers no encoder would
write); every limit is hit by the real ffmpeg. No timing is asserted beyond a generous bound.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import time
import wave
from pathlib import Path

import pytest
from helpers import files_in, invoke, settings

from audiopipe.errors import InputError, LimitExceeded, UsageError
from audiopipe.preparation.encode import encode, encode_timeout
from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.plan import plan
from audiopipe.preparation.probe import media_info_from_json, probe, reading_timeout
from audiopipe.runner import ChildLimits, run

MIB = 1024 * 1024


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def duration_of(path: Path) -> float:
    """The audio stream's duration as ffprobe reads it (not audiopipe's probe)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return float(out.stdout.strip())


def decoded_seconds(path: Path) -> float:
    """Seconds of audio that really decode, counted from the decoded samples."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                          "-f", "s16le", "-ac", "1", "-ar", "8000", "-"], capture_output=True,
                         check=True, timeout=60)
    return len(out.stdout) / 2 / 8000


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = invoke(args, env=dict(os.environ, **(env or {})))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("audiopipe: error:")]


@pytest.fixture()
def ffmpeg_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AUDIOPIPE_FFMPEG -> a wrapper that logs each command line, then runs the real ffmpeg."""
    log = tmp_path / "ffmpeg-calls.log"
    real = shutil.which("ffmpeg")
    spy = tmp_path / "spy" / "ffmpeg"
    spy.parent.mkdir()
    spy.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    spy.chmod(spy.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("AUDIOPIPE_FFMPEG", str(spy))
    return log


def ffmpeg_reads(log: Path) -> list[str]:
    """The logged ffmpeg runs that opened an input (not ``-version``, asked for the cache key)."""
    calls = log.read_text().splitlines() if log.exists() else []
    return [c for c in calls if " -i " in f" {c} "]


# --- inputs that cost far more than their size: refused before any encode ---------------------------

def write_wav(path: Path, *, rate: int, channels: int, frames: int) -> Path:
    """A PCM WAV with any header values (the ``wave`` module writes what it is told)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(range(256)) * (frames * channels * 2 // 256))
    return path


@pytest.mark.parametrize("rate, channels, words", [
    (1, 1, "sample rate of 1 Hz"),           # 100 KB declaring 14 hours: what was seen
    (500, 1, "sample rate of 500 Hz"),
    (2_000_000, 1, "sample rate of 2,000,000 Hz"),
    (8000, 64, "64 audio channels"),
])
def test_absurd_stream_refused_before_any_encode(tmp_path: Path, ffmpeg_spy: Path, rate: int,
                                                 channels: int, words: str) -> None:
    src = write_wav(tmp_path / "absurd.wav", rate=rate, channels=channels, frames=50_000 // channels)
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert time.monotonic() - started < 60  # it used to take 5 minutes of CPU
    assert words in caught.value.reason and "refused" in caught.value.reason
    assert caught.value.path == str(src)
    assert ffmpeg_reads(ffmpeg_spy) == []  # ffprobe looked; ffmpeg never touched it
    assert files_in(tmp_path / "out") == []


def test_one_hz_wav_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "one-hz.wav", rate=1, channels=1, frames=50_000)
    proc = cli("prepare", str(src), "--out", str(tmp_path / "out"), "--no-cache")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert str(src) in line and "1 Hz" in line
    assert files_in(tmp_path / "out") == []


def forged_mp3(tmp_path: Path, frames: int) -> Path:
    """A 5-second MP3 whose Xing/Info header is rewritten to count ``frames`` frames."""
    src = tmp_path / "five.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:duration=5", "-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1",
           str(src))
    data = bytearray(src.read_bytes())
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0 and struct.unpack(">I", data[at + 4:at + 8])[0] & 1, "no frame count in the header"
    data[at + 8:at + 12] = struct.pack(">I", frames)
    forged = tmp_path / "forged.mp3"
    forged.write_bytes(bytes(data))
    return forged


def forged_flac(tmp_path: Path, samples: int) -> Path:
    """A 5-second FLAC whose STREAMINFO claims ``samples`` samples (36 bits at bytes 18..25)."""
    src = tmp_path / "five.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:duration=5", "-c:a", "flac", str(src))
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC"
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | samples
    data[18:26] = packed.to_bytes(8, "big")
    forged = tmp_path / "forged.flac"
    forged.write_bytes(bytes(data))
    return forged


@pytest.mark.parametrize("make, hours", [
    (lambda tmp: forged_mp3(tmp, 10_000_000), 72.6),          # 40 KB claiming 3 days
    (lambda tmp: forged_flac(tmp, 44100 * 3600 * 30), 30.0),  # 60 KB claiming 30 hours
])
def test_absurd_declared_duration_refused_before_any_encode(tmp_path: Path, ffmpeg_spy: Path, make,
                                                            hours: float) -> None:
    src = make(tmp_path)
    with pytest.raises(InputError) as caught:
        prepare_file(src, tmp_path / "out", settings(tmp_path))
    reason = caught.value.reason
    assert f"({hours:.1f} hours)" in reason and "header is wrong" in reason and "refused" in reason
    assert ffmpeg_reads(ffmpeg_spy) == []  # no encode, no remux, no decode
    assert files_in(tmp_path / "out") == []


def test_a_real_low_bitrate_file_is_not_mistaken_for_a_forged_one(tmp_path: Path) -> None:
    src = tmp_path / "low.mp3"  # 8 kbit/s, the lowest MP3 there is
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=20:c=pink:r=8000", "-c:a", "libmp3lame", "-b:a", "8k",
           "-ar", "8000", str(src))
    assert probe(src).duration == pytest.approx(20, abs=0.3)
    silent = tmp_path / "silent.flac"  # digital silence compresses to almost nothing
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "600", "-c:a", "flac", str(silent))
    assert probe(silent).duration == pytest.approx(600, abs=0.5)


def test_timeouts_follow_the_work_not_the_claim() -> None:
    assert encode_timeout(2 * 3600) < 2 * 3600  # ffmpeg works far faster than real time
    assert encode_timeout(2 * 3600, normalize=True) > encode_timeout(2 * 3600)  # loudnorm is slow
    assert encode_timeout(10**9, normalize=True) <= 12 * 3600  # whatever a plan says
    assert reading_timeout(100_000, 60) < 70       # reading 100 KB is quick, whatever it claims


# --- every child under memory and CPU limits ---------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_every_child_runs_under_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    def soft_limits() -> tuple[str, str]:
        """(address space, CPU time) as the child itself sees them."""
        seen = run(["cat", "/proc/self/limits"], what="cat").stdout.decode().splitlines()
        return tuple(next(line[len(name):].split()[0] for line in seen if line.startswith(name))
                     for name in ("Max address space", "Max cpu time"))  # type: ignore[return-value]

    monkeypatch.delenv("AUDIOPIPE_FFMPEG_MEMORY", raising=False)
    monkeypatch.delenv("AUDIOPIPE_FFMPEG_CPU", raising=False)
    assert soft_limits() == (str(1024 * MIB), "3600")
    monkeypatch.setenv("AUDIOPIPE_FFMPEG_MEMORY", "2GiB")
    monkeypatch.setenv("AUDIOPIPE_FFMPEG_CPU", "7200")
    assert soft_limits() == (str(2048 * MIB), "7200")


@pytest.mark.parametrize("memory, cpu, expected", [
    (None, None, ChildLimits(memory=1024 * MIB, cpu=3600)),
    ("2048", "600", ChildLimits(memory=2048 * MIB, cpu=600)),
    ("1.5GiB", "90.5", ChildLimits(memory=1536 * MIB, cpu=90)),
    ("0", "0", ChildLimits(memory=None, cpu=None)),  # 0 turns a limit off
])
def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch, memory: str | None, cpu: str | None,
                                     expected: ChildLimits) -> None:
    for name, value in (("AUDIOPIPE_FFMPEG_MEMORY", memory), ("AUDIOPIPE_FFMPEG_CPU", cpu)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ChildLimits.from_env() == expected


@pytest.mark.parametrize("name, value", [("AUDIOPIPE_FFMPEG_MEMORY", "lots"),
                                         ("AUDIOPIPE_FFMPEG_MEMORY", "-5"),
                                         ("AUDIOPIPE_FFMPEG_CPU", "1h")])
def test_bad_limit_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=name):
        ChildLimits.from_env()


def test_bad_limit_in_the_cli_exits_2(tmp_path: Path, audio_dir: Path) -> None:
    proc = cli("prepare", str(audio_dir / "tone.wav"), "--out", str(tmp_path / "out"), "--no-cache",
               env={"AUDIOPIPE_FFMPEG_MEMORY": "lots"})
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "AUDIOPIPE_FFMPEG_MEMORY" in line


def test_memory_limit_is_one_clear_line(tmp_path: Path, audio_dir: Path) -> None:
    out = tmp_path / "out"
    proc = cli("prepare", str(audio_dir / "tone.wav"), str(audio_dir / "tone.mp3"), "--out", str(out),
               "--no-cache", env={"AUDIOPIPE_FFMPEG_MEMORY": "40"})
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 2  # one per input; the batch went on to the second
    for line, name in zip(lines, ("tone.wav", "tone.mp3"), strict=True):
        assert str(audio_dir / name) in line
        assert "memory" in line and "40 MiB" in line and "AUDIOPIPE_FFMPEG_MEMORY" in line
    assert len(proc.stderr.strip().splitlines()) == 3  # the two errors and the summary, nothing else
    assert files_in(out) == []


def test_encode_stopped_by_the_memory_limit_leaves_nothing(tmp_path: Path, audio_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe(audio_dir / "tone.wav")  # probed without the tiny limit
    monkeypatch.setenv("AUDIOPIPE_FFMPEG_MEMORY", "40MiB")
    with pytest.raises(LimitExceeded) as caught:
        encode(info.path, plan(info, FORMATS["ogg"], 100_000), tmp_path / "o" / "tone.ogg")
    assert caught.value.limit == "memory"
    assert "\n" not in str(caught.value) and "AUDIOPIPE_FFMPEG_MEMORY" in str(caught.value)
    assert files_in(tmp_path / "o") == []


@pytest.fixture(scope="module")
def long_noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 minutes of mono pink noise: loudness normalisation of it takes seconds of CPU."""
    path = tmp_path_factory.mktemp("noise") / "noise.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=300:c=pink:r=44100", "-c:a", "pcm_s16le", str(path))
    return path


def test_cpu_limit_is_one_clear_line(tmp_path: Path, long_noise: Path) -> None:
    started = time.monotonic()
    proc = cli("prepare", str(long_noise), "--out", str(tmp_path / "out"), "--no-cache", "--normalize",
               env={"AUDIOPIPE_FFMPEG_CPU": "1"})
    assert time.monotonic() - started < 60
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert str(long_noise) in line and "CPU-time limit of 1 s" in line and "AUDIOPIPE_FFMPEG_CPU" in line
    assert files_in(tmp_path / "out") == []


def test_wall_timeout_names_its_setting(tmp_path: Path, long_noise: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOPIPE_FFMPEG_TIMEOUT", "0.5")
    with pytest.raises(LimitExceeded) as caught:
        prepare_file(long_noise, tmp_path / "out", settings(tmp_path, normalize=True))
    assert caught.value.limit == "time" and caught.value.path == str(long_noise)
    assert "AUDIOPIPE_FFMPEG_TIMEOUT" in str(caught.value)
    assert files_in(tmp_path / "out") == []


# --- kept and remuxed files are decoded to the end ------------------------------------------------

def truncated(src: Path, dest: Path, keep: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


@pytest.fixture()
def truncated_mp3(tmp_path: Path) -> Path:
    """Header (Xing) says 5 s; only the first 48 % of the bytes (2.4 s) are there."""
    whole = tmp_path / "whole.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:duration=5", "-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1",
           str(whole))
    return truncated(whole, tmp_path / "cut.mp3", 0.48)


def test_truncated_mp3_with_a_long_header_is_not_kept(tmp_path: Path, truncated_mp3: Path) -> None:
    assert duration_of(truncated_mp3) == pytest.approx(5.04, abs=0.05)  # the lie the header tells
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        prepare_file(truncated_mp3, out, settings(tmp_path))
    reason = caught.value.reason
    assert "declares 5.04 s" in reason and "truncated" in reason and "refused" in reason
    assert files_in(out) == [] and files_in(tmp_path / "cache") == []


def test_truncated_mp3_with_cover_art_is_not_remuxed_either(tmp_path: Path, truncated_mp3: Path,
                                                            audio_dir: Path) -> None:
    whole = tmp_path / "covered.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:duration=5", "-i", str(audio_dir / "cover.mp3"),
           "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-b:a", "64k", "-c:v", "copy",
           "-disposition:v", "attached_pic", str(whole))
    cut = truncated(whole, tmp_path / "covered-cut.mp3", 0.5)
    with pytest.raises(InputError, match="truncated"):
        prepare_file(cut, tmp_path / "out", settings(tmp_path))
    assert files_in(tmp_path / "out") == []


def test_m4a_cut_short_is_not_kept(tmp_path: Path) -> None:
    whole = tmp_path / "whole.m4a"  # moov first, so the cut file still declares all 5 s
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:duration=5", "-c:a", "aac", "-b:a", "64k", "-f", "ipod",
           "-movflags", "+faststart", str(whole))
    cut = truncated(whole, tmp_path / "cut.m4a", 0.5)
    with pytest.raises(InputError, match="truncated"):
        prepare_file(cut, tmp_path / "out", settings(tmp_path))
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["tone.mp3", "tone.m4a", "tone.aac", "voice.opus"])
def test_whole_files_are_still_kept(audio_dir: Path, tmp_path: Path, name: str) -> None:
    result = prepare_file(audio_dir / name, tmp_path / "out", settings(tmp_path))
    assert result.action == "kept"
    assert result.outputs[0].duration == pytest.approx(decoded_seconds(audio_dir / name), abs=0.1)


# --- durations are the audio stream's --------------------------------------------------------------

@pytest.mark.parametrize("container, audio_codec, out_ext, piped", [
    ("mp4", ["-c:a", "aac", "-b:a", "64k"], "m4a", False),
    ("matroska", ["-c:a", "libopus", "-b:a", "32k"], "ogg", False),  # the stream's DURATION tag
    ("matroska", ["-c:a", "libopus", "-b:a", "32k"], "ogg", True),   # no duration at all: counted
])
def test_video_whose_picture_outlasts_its_audio(tmp_path: Path, container: str, audio_codec: list[str],
                                                out_ext: str, piped: bool) -> None:
    src = tmp_path / f"talk.{'mp4' if container == 'mp4' else 'mkv'}"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=6",
            "-f", "lavfi", "-i", "sine=f=440:duration=2", "-map", "0", "-map", "1", "-c:v", "mpeg4",
            *audio_codec, "-f", container]
    if piped:  # written to a pipe, Matroska gets no durations at all
        with src.open("wb") as sink:
            subprocess.run([*argv, "pipe:1"], stdout=sink, check=True, timeout=120)
    else:
        subprocess.run([*argv, str(src)], check=True, timeout=120)
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert result.action == "remuxed"
    assert result.info.duration == pytest.approx(2.0, abs=0.1)
    (o,) = result.outputs
    assert o.path.suffix == "." + out_ext
    assert o.duration == pytest.approx(2.0, abs=0.1)
    assert duration_of(o.path) == pytest.approx(2.0, abs=0.1)
    converted = prepare_file(src, tmp_path / "mp3", settings(tmp_path, format="mp3", reencode=True))
    assert converted.action == "transcoded"
    assert duration_of(converted.outputs[0].path) == pytest.approx(2.0, abs=0.1)


def test_guessed_duration_is_counted_from_the_packets(tmp_path: Path) -> None:
    src = tmp_path / "vbr.mp3"  # VBR without a Xing header: quiet start, loud end
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-f", "lavfi", "-i",
           "anoisesrc=d=8:c=white:r=44100", "-filter_complex", "[0]atrim=0:8[a];[a][1]concat=n=2:v=0:a=1",
           "-c:a", "libmp3lame", "-q:a", "0", "-write_xing", "0", str(src))
    guessed = duration_of(src)  # ffprobe's estimate from the first frames' bitrate
    assert abs(guessed - 16) > 2, "the fixture no longer fools the estimate"
    assert probe(src).duration == pytest.approx(16, abs=0.1)
    result = prepare_file(src, tmp_path / "out", settings(tmp_path))
    assert result.action == "kept" and result.outputs[0].duration == pytest.approx(16, abs=0.1)


def test_json_prefers_the_audio_streams_own_duration() -> None:
    doc = {"format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "6.0"},
           "streams": [{"index": 0, "codec_type": "video", "codec_name": "mpeg4", "duration": "6.0"},
                       {"index": 1, "codec_type": "audio", "codec_name": "aac", "sample_rate": "44100",
                        "channels": 1, "duration": "2.0"}]}
    assert media_info_from_json(Path("v.mp4"), 100_000, doc).duration == 2.0
    doc["streams"][1].pop("duration")
    doc["streams"][1]["tags"] = {"DURATION": "00:00:02.500000000"}
    assert media_info_from_json(Path("v.mkv"), 100_000, doc).duration == 2.5


def test_a_damaged_ogg_is_not_kept_as_it_is(tmp_path: Path) -> None:
    """ffmpeg decodes past a page whose CRC does not match (it exits 0), but what goes out byte for
    byte must be sound: the damage is found by the decode check and the file refused."""
    good = tmp_path / "good.ogg"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=5", "-c:a", "libopus",
                    "-ac", "1", str(good)], check=True)
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped inside an audio page
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = cli("prepare", str(good), str(damaged), "--out", str(out), "--no-cache")
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and str(damaged) in lines[0] and "damaged" in lines[0], proc.stderr
    assert (out / "good.ogg").read_bytes() == good.read_bytes()  # the sound one is still kept as it is
    assert not (out / "damaged.ogg").exists()
