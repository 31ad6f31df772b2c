"""parse_size / parse_bitrate: sizes and bitrates written the way people write them."""

from __future__ import annotations

import pytest

from audiopipe.errors import UsageError
from audiopipe.units import parse_bitrate, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("16MB", 16_000_000),
        ("15MiB", 15 * 1024**2),
        ("500KB", 500_000),
        ("16000000", 16_000_000),
        ("1.5MB", 1_500_000),
        ("16mb", 16_000_000),
        ("16 MB", 16_000_000),
        ("  2M ", 2_000_000),
        ("1G", 1_000_000_000),
        ("1GiB", 1024**3),
        ("64KiB", 65_536),
        ("500k", 500_000),
        ("1234b", 1234),
        ("16,000,000", 16_000_000),
        ("16_000_000", 16_000_000),
        ("16384KiB", 16_777_216),  # the server's max:16384 limit, exactly
        (40_000, 40_000),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["2.01MB", "4.02MB", "4.35MB", "1.15MB", "0.29MB", "9.99MB"])
def test_parse_size_decimal_is_exact(text: str) -> None:
    # Float arithmetic must not lose a byte: 2.01 MB is 2,010,000 bytes, not 2,009,999.
    number = text[:-2]
    whole, frac = number.split(".")
    assert parse_size(text) == int(whole) * 1_000_000 + int(frac.ljust(6, "0"))


@pytest.mark.parametrize(
    "text",
    ["", "   ", "MB", "abc", "16XB", "16 M B", "-5MB", "1.5.5MB", "16MBs", "0", "0MB", "0.0001KB", 0, -3,
     "16e6", "ten MB"],
)
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_parse_size_message_shows_the_way_to_write_it() -> None:
    with pytest.raises(UsageError, match="16MB"):
        parse_size("lots")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("64k", 64_000),
        ("64K", 64_000),
        ("64kbps", 64_000),
        ("64 kbit/s", 64_000),
        ("64kb/s", 64_000),
        ("64000", 64_000),
        ("32.5k", 32_500),
        ("1.5m", 1_500_000),
        ("1M", 1_000_000),
        ("2mbps", 2_000_000),
        ("1000", 1000),
        (96_000, 96_000),
    ],
)
def test_parse_bitrate(text: str | int, expected: int) -> None:
    assert parse_bitrate(text) == expected


@pytest.mark.parametrize("text", ["32.3k", "64.1k", "128.2k", "130.7k"])
def test_parse_bitrate_decimal_is_exact(text: str) -> None:
    whole, frac = text[:-1].split(".")
    assert parse_bitrate(text) == int(whole) * 1000 + int(frac) * 100


@pytest.mark.parametrize("text", ["", "k", "fast", "64x", "64 kHz", "-64k", "64k64", "999", "0.5k", 500, 0])
def test_parse_bitrate_rejects(text: str | int) -> None:
    with pytest.raises(UsageError):
        parse_bitrate(text)


def test_parse_bitrate_too_low_says_unit() -> None:
    with pytest.raises(UsageError, match="bit/s"):
        parse_bitrate("64")


def test_a_decimal_comma_is_refused_not_read_as_thousands() -> None:
    from audiopipe.units import parse_size

    with pytest.raises(UsageError, match="dot for decimals"):
        parse_size("1,5MB")
    assert parse_size("16,000,000") == 16_000_000


def test_a_parse_error_carries_the_setting_it_is_for() -> None:
    with pytest.raises(UsageError) as err:
        parse_size("lots", field="max_size")
    assert err.value.field == "max_size" and str(err.value).startswith("cannot read size 'lots'")
    with pytest.raises(UsageError) as err:
        parse_bitrate("64")
    assert err.value.field == "bitrate"
