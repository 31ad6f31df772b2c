"""probe(path) -> MediaInfo: what an input is, asked of ffprobe once.

Inputs are opened through the ``file:`` protocol only and with a whitelist of real containers, so a
playlist or concat file (an HLS file named ``.mp3``) can never pull another recording off the disk
(docs/api.md §6); a probed playlist format is refused as well, in case the whitelist is ever widened.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import FFmpegError, InputError, os_reason
from .runner import ffprobe_base, run, telling_line

# Demuxers audiopipe will open. Anything else (hls, concat, image2, data URIs...) is refused.
INPUT_FORMATS = (
    "wav", "w64", "rf64", "flac", "mp3", "ogg", "mov", "matroska", "aac", "amr", "amrnb", "amrwb",
    "aiff", "caf", "au", "asf", "avi", "flv", "mpeg", "mpegts", "ac3", "eac3", "dts", "truehd",
    "wv", "ape", "tta", "mpc", "mpc8", "dsf", "voc", "loas", "mlp", "shn", "xwma", "rm", "3gp",
    "gsm", "mp2", "s337m", "sox", "wsaud",
)
FORMAT_WHITELIST = ",".join(INPUT_FORMATS)
PLAYLIST_FORMATS = frozenset({"hls", "applehttp", "concat", "ffconcat", "dash", "m3u8", "image2",
                              "tee", "data", "subfile"})

PROBE_TIMEOUT = 60.0


def input_options() -> dict[str, str]:
    """ffmpeg options every input is opened with (for ffprobe and ffmpeg alike)."""
    return {"format_whitelist": FORMAT_WHITELIST, "protocol_whitelist": "file"}


def ffmpeg_path_arg(path: str | Path) -> str:
    """A path ffmpeg reads as a plain file, even if its name looks like ``concat:`` or ``http:``."""
    return "file:" + os.fspath(Path(path).absolute())


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
    argv = ffprobe_base()
    for key, value in input_options().items():
        argv += [f"-{key}", value]
    argv += ["-of", "json", "-show_format", "-show_streams", ffmpeg_path_arg(p)]
    try:
        out = run(argv, timeout=PROBE_TIMEOUT, what="ffprobe")
    except FFmpegError as exc:
        raise InputError(p, _explain(exc.stderr, p)) from None
    try:
        data = json.loads(out.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        raise InputError(p, "ffprobe gave no readable description") from None
    return media_info_from_json(p, size, data)


# Tags that only describe the file's technical make-up; anything else (title, artist, comment,
# location, dates...) is the sender's metadata and must not reach a customer.
TECHNICAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name",
                            "vendor_id", "language", "duration", "encoder_options"})


def personal_tags(*tag_maps: dict[str, Any]) -> tuple[str, ...]:
    names = {str(k) for m in tag_maps for k in m if str(k).lower() not in TECHNICAL_TAGS}
    return tuple(sorted(names))


def media_info_from_json(path: Path, size: int, data: dict[str, Any]) -> MediaInfo:
    """Build a MediaInfo from ffprobe's JSON (pure; unit-tested on its own)."""
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
    duration = _float(fmt.get("duration")) or _float(s.get("duration")) or 0.0
    if duration <= 0:
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
