"""Text for people: untrusted strings escaped before they reach a terminal or a log, and sizes and
durations written the one way audiopipe writes them. Used by every layer; prints nothing."""

from __future__ import annotations

import re

# Characters a terminal may act on rather than show: C0 and C1 controls (ESC, BEL, CR, the one-byte
# CSI), DEL, the bidirectional overrides that make text read differently from what it is, line and
# paragraph separators, and lone surrogates (bytes of a file name that are not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for a byte that is not UTF-8: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(text: object) -> str:
    """``text`` with every control character written out as an escape (``\\x1b``), so that a file
    name or a CSV cell can neither drive the terminal nor forge a line of output."""
    return _UNSAFE.sub(_escaped, str(text))


def human_size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
