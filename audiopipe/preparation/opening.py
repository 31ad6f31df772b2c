"""How ffprobe and ffmpeg open an input: through the ``file:`` protocol only, with a whitelist of
real containers, so a playlist or concat file (an HLS file named ``.mp3``) can never pull another
recording off the disk (docs/api.md §6).

One set of options for every child that reads an input (probe, the decode check, encode, remux), in
the two shapes they are passed in: keyword options for ffmpeg-python, flags for an argv built by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

# Demuxers audiopipe will open. Anything else (hls, concat, image2, data URIs...) is refused.
INPUT_FORMATS = (
    "wav", "w64", "rf64", "flac", "mp3", "ogg", "mov", "matroska", "aac", "amr", "amrnb", "amrwb",
    "aiff", "caf", "au", "asf", "avi", "flv", "mpeg", "mpegts", "ac3", "eac3", "dts", "truehd",
    "wv", "ape", "tta", "mpc", "mpc8", "dsf", "voc", "loas", "mlp", "shn", "xwma", "rm", "3gp",
    "gsm", "mp2", "s337m", "sox", "wsaud",
)
FORMAT_WHITELIST = ",".join(INPUT_FORMATS)
# Formats that name other files. Refused even when probed (in case the whitelist is ever widened).
PLAYLIST_FORMATS = frozenset({"hls", "applehttp", "concat", "ffconcat", "dash", "m3u8", "image2",
                              "tee", "data", "subfile"})


def input_options() -> dict[str, str]:
    """ffmpeg options every input is opened with (for ffprobe and ffmpeg alike)."""
    return {"format_whitelist": FORMAT_WHITELIST, "protocol_whitelist": "file"}


def input_flags() -> list[str]:
    """:func:`input_options` as command-line flags, to go before the input on an argv."""
    return [arg for key, value in input_options().items() for arg in (f"-{key}", value)]


def ffmpeg_path_arg(path: str | Path) -> str:
    """A path ffmpeg reads as a plain file, even if its name looks like ``concat:`` or ``http:``."""
    return "file:" + os.fspath(Path(path).absolute())
