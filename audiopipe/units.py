"""Parsing sizes and bitrates the way people write them."""

from __future__ import annotations

import re

from audiopipe.errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "k": 1000, "m": 1000**2, "g": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, *, field: str | None = None) -> int:
    """``16MB`` -> 16,000,000; ``15MiB`` -> 15,728,640; ``500KB`` -> 500,000; ``1234`` -> 1234.

    ``field``: the setting the size is for (``max_size``), carried by the :class:`UsageError`."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(text)
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise UsageError(f"cannot read size {text!r}: write it like 16MB, 15MiB, 500KB or 16000000",
                             field=field)
        number = m.group(1)
        if "," in number and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", number):
            # "1,5MB" is a decimal comma, not 15 MB: refuse rather than guess
            raise UsageError(f"cannot read size {text!r}: use a dot for decimals (1.5MB); commas only "
                             "group thousands (16,000,000)", field=field)
        value = round(float(number.replace("_", "").replace(",", "")) * _SIZE_UNITS[unit])
    if value <= 0:
        raise UsageError(f"size must be above zero, got {text!r}", field=field)
    return value


_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(k|kbps|kbit/s|kb/s|m|mbps|)?\s*$", re.IGNORECASE)


def parse_bitrate(text: str | int, *, field: str | None = "bitrate") -> int:
    """``64k``, ``64kbps``, ``64000`` -> 64000 bit/s; a :class:`UsageError` about ``field`` when it cannot be read."""
    if isinstance(text, int):
        value = text
    else:
        m = _RATE.match(text)
        if not m:
            raise UsageError(f"cannot read bitrate {text!r}: write it like 64k or 64000", field=field)
        unit = (m.group(2) or "").lower()
        scale = 1000 if unit.startswith("k") else 1_000_000 if unit.startswith("m") else 1
        value = round(float(m.group(1)) * scale)
    if value < 1000:
        raise UsageError(f"bitrate {text!r} is too low: it is in bit/s, e.g. 32k", field=field)
    return value
