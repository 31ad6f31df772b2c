"""The formats audiopipe can produce, and what the API accepts as it is.

Numbers here are the planner's model of each encoder; they were measured with ffmpeg 5.1 (Debian 12)
and are checked after every encode anyway (verify + re-plan), so a small error costs a pass, not a
rejected message.
"""

from __future__ import annotations

from dataclasses import dataclass

from audiopipe.errors import ToolMissingError, UsageError
from audiopipe.runner import audio_encoders

LOSSLESS_CODECS = frozenset({
    "flac", "alac", "wavpack", "tta", "ape", "mlp", "truehd", "shorten", "als",
})


def is_lossless(codec: str) -> bool:
    return codec.startswith("pcm_") or codec in LOSSLESS_CODECS


@dataclass(frozen=True)
class TargetFormat:
    name: str                 # what the user types: ogg, mp3, m4a, aac, amr
    extension: str            # output file extension (also what the server's sniff must map to)
    muxer: str                # ffmpeg -f
    encoder: str              # ffmpeg -c:a
    codec: str                # codec_name ffprobe reports for the result
    container: str            # format_name ffprobe reports for a file of this kind
    content_type: str         # what we send as the part's Content-Type
    floor: int                # lowest sensible bitrate, bit/s
    ceiling_per_channel: int  # highest sensible bitrate per channel, bit/s
    steps: tuple[int, ...] = ()   # discrete bitrates the encoder takes (empty: any whole kbit/s)
    fixed_overhead: int = 0       # container bytes that do not grow with duration
    overhead_per_second: float = 0.0  # container bytes per second of audio, whatever the rate
    bytes_per_frame: float = 0.0  # container bytes per codec frame (ADTS headers, MP4 sample tables)
    frame_samples: int = 1024     # samples per codec frame
    bitrate_factor: float = 1.0   # how far the encoder overshoots its nominal bitrate
    max_channels: int = 2

    def bytes_per_second(self, bitrate: float, sample_rate: int) -> float:
        """Expected output bytes per second of audio at ``bitrate`` (the planner's size model)."""
        frames = sample_rate / self.frame_samples if self.bytes_per_frame else 0.0
        return bitrate / 8 * self.bitrate_factor + self.overhead_per_second + frames * self.bytes_per_frame

    def ceiling(self, channels: int) -> int:
        return self.ceiling_per_channel * max(1, min(channels, self.max_channels))

    def require_encoder(self) -> None:
        if self.encoder not in audio_encoders():
            raise ToolMissingError(
                f"format {self.name!r} needs the ffmpeg encoder {self.encoder!r}, which this ffmpeg "
                f"build does not have; choose another --format (ogg, mp3, m4a or aac) or install an "
                f"ffmpeg built with {self.encoder}")


MP3_STEPS = (8000, 16000, 24000, 32000, 40000, 48000, 56000, 64000, 80000, 96000, 112000,
             128000, 144000, 160000, 192000, 224000, 256000, 320000)
AMR_STEPS = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)

FORMATS: dict[str, TargetFormat] = {
    "ogg": TargetFormat(
        name="ogg", extension="ogg", muxer="ogg", encoder="libopus", codec="opus", container="ogg",
        content_type="audio/ogg", floor=6000, ceiling_per_channel=64000,
        # CBR Opus in Ogg measured at exactly bitrate/8 + 77.4 bytes/s (6 to 64 kbit/s).
        fixed_overhead=4096, overhead_per_second=80.0),
    "mp3": TargetFormat(
        name="mp3", extension="mp3", muxer="mp3", encoder="libmp3lame", codec="mp3", container="mp3",
        content_type="audio/mpeg", floor=8000, ceiling_per_channel=160000, steps=MP3_STEPS,
        fixed_overhead=4096, bitrate_factor=1.001),
    "m4a": TargetFormat(
        name="m4a", extension="m4a", muxer="ipod", encoder="aac", codec="aac",
        container="mov,mp4,m4a,3gp,3g2,mj2", content_type="audio/mp4", floor=16000,
        ceiling_per_channel=128000, fixed_overhead=8192, bytes_per_frame=4.5, bitrate_factor=1.04),
    "aac": TargetFormat(
        name="aac", extension="aac", muxer="adts", encoder="aac", codec="aac", container="aac",
        content_type="audio/aac", floor=16000, ceiling_per_channel=128000,
        fixed_overhead=1024, bytes_per_frame=7.0, bitrate_factor=1.04),
    "amr": TargetFormat(
        name="amr", extension="amr", muxer="amr", encoder="libopencore_amrnb", codec="amr_nb",
        container="amr", content_type="audio/amr", floor=4750, ceiling_per_channel=12200,
        steps=AMR_STEPS, fixed_overhead=64, bytes_per_frame=1.0, frame_samples=160, max_channels=1),
}

FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> TargetFormat:
    try:
        return FORMATS[name.lower().lstrip(".")]
    except KeyError:
        raise UsageError(f"unknown format {name!r}: choose one of {', '.join(FORMAT_NAMES)}") from None


# What the API accepts as it is: (ffprobe container, codec) -> the format it is, for files we keep.
ACCEPTABLE_AS_IS: dict[tuple[str, str], str] = {
    ("mp3", "mp3"): "mp3",
    ("ogg", "opus"): "ogg",
    ("mov,mp4,m4a,3gp,3g2,mj2", "aac"): "m4a",
    ("aac", "aac"): "aac",
    ("amr", "amr_nb"): "amr",
}
