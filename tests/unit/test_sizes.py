"""Tests for pytxmr.sizes: parsing and printing byte sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytxmr.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", 123),
        ("8K", 8 << 10),
        ("8k", 8 << 10),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("2T", 2 << 40),
        ("1.5M", 3 << 19),
        ("64MB", 64 << 20),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("8 KiB", 8 << 10),
        (" 16k ", 16 << 10),
        ("100B", 100),
        ("0.5K", 512),
        (".5K", 512),
    ],
)
def test_parse_size_accepts_common_spellings(text: str, expected: int) -> None:
    """Users write sizes in many ways on the command line; all usual ones must work."""
    assert parse_size(text) == expected


def test_parse_size_multiples_are_binary() -> None:
    """Split and block sizes are binary (K=1024), as in Hadoop and as users expect."""
    assert parse_size("1K") == 1024
    assert parse_size("1M") == 1024 * 1024


def test_parse_size_rounds_fractions_down() -> None:
    """A fraction of a byte cannot be used; rounding down is predictable."""
    assert parse_size("1.0001K") == 1024


def test_parse_size_accepts_positive_int() -> None:
    """Config values may already be ints (e.g. from JSON)."""
    assert parse_size(4096) == 4096


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "12X", "M", "1.2.3M", "1 M B", "64iB", "1e6", "K64", "0x10", "ten"],
)
def test_parse_size_rejects_garbage_with_the_text_in_the_message(text: str) -> None:
    """A typo in a flag must be reported as such, quoting what was typed."""
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["-1", "-8K", " -64M"])
def test_parse_size_rejects_negatives(text: str) -> None:
    """A negative size is a mistake and the message must say it must be positive."""
    with pytest.raises(ValueError, match="positive"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "0K", "0.0M", "0.1", 0])
def test_parse_size_rejects_zero(text: str | int) -> None:
    """A zero split or buffer size would loop forever or divide by zero later."""
    with pytest.raises(ValueError, match="at least 1 byte"):
        parse_size(text)


@pytest.mark.parametrize("value", [True, None, 1.5, b"8K"])
def test_parse_size_rejects_other_types(value: object) -> None:
    """A wrong type from a config file gets a ValueError, not a confusing TypeError later."""
    with pytest.raises(ValueError):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (64 << 20, "64.0 MiB"),
        (3 << 30, "3.0 GiB"),
        (5 << 40, "5.0 TiB"),
        (2 << 50, "2.0 PiB"),
        (4096 << 50, "4096.0 PiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    """Messages show sizes the way users wrote them (binary units)."""
    assert format_size(n) == expected


@given(st.integers(min_value=1, max_value=1 << 60))
def test_format_size_parses_back_close_to_the_original(n: int) -> None:
    """What a message prints can be pasted back as an option (within its rounding)."""
    text = format_size(n).replace(" ", "")
    assert abs(parse_size(text) - n) <= n // 20 + 1  # one decimal: at most 5% off
