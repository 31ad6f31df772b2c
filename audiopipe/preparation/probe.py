"""probe(path) -> MediaInfo: what an input is, asked of ffprobe once.

Inputs are opened as :mod:`opening` says (plain files, real containers only); a probed playlist
format is refused as well, in case the whitelist is ever widened.

The duration is the chosen audio stream's own (a video whose picture runs on after the sound lasts
as long as its sound), counted from its packets when the container only guessed it from a bitrate.
An input whose decoding would cost far more than its bytes suggest (a 1 Hz sample rate, hundreds of
channels, hours declared in a few kilobytes) is refused here, before any ffmpeg work is done.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from audiopipe.errors import FFmpegError, InputError, LimitExceeded, os_reason
from audiopipe.preparation.opening import PLAYLIST_FORMATS, ffmpeg_path_arg, input_flags
from audiopipe.runner import ffmpeg_base, ffprobe_base, run, telling_line

PROBE_TIMEOUT = 60.0

# What real audio looks like. Outside these, decoding costs far more than the file's size suggests
# (a 100 KB WAV at 1 Hz holds 14 hours, which ffmpeg must resample to 48 kHz).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 32
# The fewest bits a second of real audio takes in any codec: codec2's lowest mode uses 450 bit/s,
# lossless codecs store digital silence in about 200. A file claiming more seconds than its bytes
# could hold at this rate is lying about its duration.
MIN_BITRATE = 100
# Codecs whose smallest frames cost more than that (PCM: exactly rate x channels x bits).
CODEC_MIN_BITRATE = {"mp3": 8000, "mp2": 8000, "mp1": 32000, "ac3": 32000, "eac3": 32000}
# How far under that floor a declared duration may put the file before it is refused.
FLOOR_SLACK = 0.5
# ffmpeg's own word that a container's duration is a guess from its bitrate, not a count.
ESTIMATED = "Estimating duration from bitrate"


@dataclass(frozen=True)
class AudioStream:
    index: int              # absolute stream index in the file
    audio_index: int        # index among audio streams (for -map 0:a:N)
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str
    bit_rate: int | None    # bit/s, when known


@dataclass(frozen=True)
class MediaInfo:
    path: str
    container: str          # ffprobe format_name
    size: int               # bytes
    duration: float         # seconds
    bit_rate: int | None    # whole file, bit/s
    audio: AudioStream      # the chosen stream: the default one, else the first
    audio_streams: int
    video_streams: int      # real video, cover art not counted
    attached_pictures: int  # cover art
    brand: str | None       # major_brand of MP4-family files
    tags: tuple[str, ...] = ()  # names of tags that say something about the sender (title, GPS...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN -> None


def _explain(stderr: str, path: Path) -> str:
    last = telling_line(stderr) or "ffprobe could not read it"
    for prefix in (f"file:{Path(path).absolute()}: ", f"{path}: "):
        last = last.replace(prefix, "")
    if "not on whitelist" in stderr or "whitelist" in last:
        return "is a playlist or an unsupported container; refused (only real audio/video files are read)"
    if any(sign in stderr for sign in ("Invalid data found", "Invalid argument", "moov atom not found",
                                       "Failed to read frame size", "could not find codec parameters")):
        return "is not an audio or video file ffmpeg can read (corrupt, truncated or another kind of file)"
    return f"cannot be read: {last}"


def check_readable(p: Path) -> int:
    """The size of ``p``; :class:`InputError` when it is missing, not a file, or empty."""
    try:
        st = p.stat()
    except (OSError, ValueError) as exc:  # a link loop, a name over 255 bytes, no permission...
        dangling = isinstance(exc, FileNotFoundError) and p.is_symlink()
        raise InputError(p, "a link to a file that does not exist" if dangling else os_reason(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(p, "not a regular file")
    size = st.st_size
    if size == 0:
        raise InputError(p, "the file is empty")
    return size


def probe(path: str | Path) -> MediaInfo:
    """Describe ``path``; raise :class:`InputError` for anything that is not usable audio."""
    p = Path(path)
    size = check_readable(p)
    # warnings too: ffmpeg says when it guessed a duration
    argv = [*ffprobe_base(), "-loglevel", "warning", *input_flags(),
            "-of", "json", "-show_format", "-show_streams", ffmpeg_path_arg(p)]
    try:
        out = run(argv, timeout=PROBE_TIMEOUT, what="ffprobe")
    except LimitExceeded as exc:
        raise exc.for_input(p) from None
    except FFmpegError as exc:
        raise InputError(p, _explain(exc.stderr, p)) from None
    try:
        data = json.loads(out.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        raise InputError(p, "ffprobe gave no readable description") from None
    info = media_info_from_json(p, size, data, duration_known=False)
    if duration_is_a_guess(data, info, out.stderr):
        try:
            counted = measured_duration(p, info.audio.audio_index, decode=False,
                                        timeout=reading_timeout(size, 0.0))
        except LimitExceeded as exc:
            raise exc.for_input(p) from None
        except FFmpegError as exc:
            raise InputError(p, _explain(exc.stderr, p)) from None
        if counted <= 0:
            raise InputError(p, "has zero duration (no audio in it)")
        info = replace(info, duration=counted)
    check_duration(info)
    return info


def reading_timeout(size: int, duration: float) -> float:
    """Wall-clock seconds for reading a whole file (demuxing or decoding it): generous for any disk
    (1 MB/s) and any decoder (20x real time), and tied to the bytes there, not to a claim."""
    return 60.0 + size / 1e6 + duration / 20


def measured_duration(path: str | Path, audio_index: int, *, decode: bool, timeout: float) -> float:
    """Seconds of one audio stream really in the file, by ffmpeg reading it to the end: its packets'
    timestamps (``decode=False``: demuxing only, cheap), or its decoded samples (``decode=True``:
    damaged or missing frames show too)."""
    return read_to_end(path, audio_index, decode=decode, timeout=timeout)[0]


def read_to_end(path: str | Path, audio_index: int, *, decode: bool, timeout: float) -> tuple[float, str]:
    """:func:`measured_duration`, and what ffmpeg said was wrong on the way (errors only: a CRC
    mismatch, a damaged frame), which it reports without failing."""
    argv = [*ffmpeg_base(), "-nostats", "-progress", "pipe:1", *input_flags(),
            "-i", ffmpeg_path_arg(path), "-map", f"0:a:{audio_index}"]
    if not decode:
        argv += ["-c:a", "copy"]
    argv += ["-f", "null", "-"]
    out = run(argv, timeout=timeout, what="ffmpeg (reading the audio to the end)")
    times = re.findall(rb"^out_time_us=(\d+)\s*$", out.stdout, flags=re.MULTILINE)
    return (int(times[-1]) / 1e6 if times else 0.0), out.stderr


def duration_is_a_guess(data: dict[str, Any], info: MediaInfo, stderr: str) -> bool:
    """Whether ``info.duration`` must be counted from packets: the demuxer estimated it from a
    bitrate (ADTS, an MP3 without a Xing header; exact for PCM, so not counted), or it is the
    container's because the audio stream has none of its own and other streams may outlast it, or
    there is none at all (Matroska written to a pipe)."""
    if info.duration <= 0:
        return True
    if ESTIMATED in stderr:
        return not info.audio.codec.startswith("pcm_")
    streams = data.get("streams") or []
    chosen: dict[str, Any] = next((s for s in streams if _int(s.get("index")) == info.audio.index), {})
    others = [s for s in streams if s is not chosen
              and not (s.get("disposition") or {}).get("attached_pic")]
    return stream_duration(chosen) is None and bool(others)


def stream_duration(stream: dict[str, Any]) -> float | None:
    """The stream's own duration: ffprobe's field, else Matroska's ``DURATION`` tag (HH:MM:SS.ns)."""
    own = _float(stream.get("duration"))
    if own and own > 0:
        return own
    tags = {str(k).lower(): str(v) for k, v in (stream.get("tags") or {}).items()}
    m = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", tags.get("duration", "").strip())
    if not m:
        return None
    seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return seconds if seconds > 0 else None


def min_bitrate(audio: AudioStream) -> int:
    """The fewest bits per second ``audio``'s codec can carry a second of sound in."""
    if audio.codec.startswith("pcm_"):
        bits = re.search(r"\d+", audio.codec)  # pcm_s16le -> 16; mulaw, alaw -> 8
        return audio.sample_rate * audio.channels * (int(bits.group()) if bits else 8)
    return CODEC_MIN_BITRATE.get(audio.codec, MIN_BITRATE)


def check_stream(path: Path, rate: int, channels: int, size: int) -> None:
    """Refuse sample rates and channel counts no real recording has: decoding them costs far more
    than the file's size suggests."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(path, f"declares a sample rate of {rate:,} Hz, outside the {MIN_SAMPLE_RATE:,} to "
                               f"{MAX_SAMPLE_RATE:,} Hz of real audio: decoding it would cost far more than "
                               f"its {size:,} bytes suggest; refused (re-export it at a usual rate)")
    if channels > MAX_CHANNELS:
        raise InputError(path, f"declares {channels} audio channels (at most {MAX_CHANNELS} are taken): "
                               f"decoding it would cost far more than its {size:,} bytes suggest; refused")


def check_duration(info: MediaInfo) -> None:
    """Refuse a declared duration the file's bytes cannot hold (a forged header, a damaged file)."""
    floor = min_bitrate(info.audio)
    if info.size * 8 / info.duration >= floor * FLOOR_SLACK:
        return
    hours = f" ({info.duration / 3600:.1f} hours)" if info.duration >= 3600 else ""
    raise InputError(info.path, f"declares {info.duration:,.0f} s{hours} of {info.audio.codec} audio in "
                                f"{info.size:,} bytes, {info.size * 8 / info.duration:,.0f} bit/s where it "
                                f"needs at least {floor:,}: its header is wrong or the file is damaged; "
                                f"refused")


# Tags that only describe the file's technical make-up; anything else (title, artist, comment,
# location, dates...) is the sender's metadata and must not reach a customer.
TECHNICAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name",
                            "vendor_id", "language", "duration", "encoder_options"})


def personal_tags(*tag_maps: dict[str, Any]) -> tuple[str, ...]:
    names = {str(k) for m in tag_maps for k in m if str(k).lower() not in TECHNICAL_TAGS}
    return tuple(sorted(names))


def media_info_from_json(path: Path, size: int, data: dict[str, Any], *,
                         duration_known: bool = True) -> MediaInfo:
    """Build a MediaInfo from ffprobe's JSON (pure; unit-tested on its own). With
    ``duration_known=False`` a missing duration is left at 0 for the caller to count."""
    fmt = data.get("format") or {}
    container = str(fmt.get("format_name") or "")
    if not container:
        raise InputError(path, "is not an audio or video file ffmpeg can read")
    if set(container.split(",")) & PLAYLIST_FORMATS:
        raise InputError(path, f"is a playlist ({container}), refused: it could pull in other files")
    streams = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    pictures = [s for s in streams if s.get("codec_type") == "video"
                and (s.get("disposition") or {}).get("attached_pic")]
    video = [s for s in streams if s.get("codec_type") == "video" and s not in pictures]
    if not audio:
        raise InputError(path, "has no audio stream" + (" (video only)" if video else ""))
    chosen_pos = next((i for i, s in enumerate(audio) if (s.get("disposition") or {}).get("default")), 0)
    s = audio[chosen_pos]
    codec = str(s.get("codec_name") or "")
    rate = _int(s.get("sample_rate")) or 0
    channels = _int(s.get("channels")) or 0
    if not codec or codec == "none" or rate <= 0 or channels <= 0:
        raise InputError(path, "its audio stream cannot be decoded (unknown codec or no sample rate)")
    check_stream(path, rate, channels, size)
    # the audio stream's own duration: the container's may be a longer video's
    duration = stream_duration(s) or _float(fmt.get("duration")) or 0.0
    if duration <= 0 and duration_known:
        raise InputError(path, "has zero duration (no audio in it)")
    tags = fmt.get("tags") or {}
    brand = tags.get("major_brand")
    return MediaInfo(
        path=str(path),
        container=container,
        size=size,
        duration=duration,
        bit_rate=_int(fmt.get("bit_rate")),
        audio=AudioStream(
            index=_int(s.get("index")) or 0,
            audio_index=chosen_pos,
            codec=codec,
            sample_rate=rate,
            channels=channels,
            channel_layout=str(s.get("channel_layout") or ""),
            bit_rate=_int(s.get("bit_rate")),
        ),
        audio_streams=len(audio),
        video_streams=len(video),
        attached_pictures=len(pictures),
        brand=str(brand).strip() if brand else None,
        tags=personal_tags(tags, s.get("tags") or {}),
    )
