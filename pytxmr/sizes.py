"""Human-readable byte sizes for configuration and messages, and the free
bytes of a disk.

Used by the command line and job options (``--split-size 64M``) and by error
messages elsewhere in the package. Pure stdlib, imports nothing from Twisted.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction

__all__ = ["FULL_DISK", "format_size", "free_space", "parse_size"]

#: Free bytes under which a file system counts as full, for the messages
#: that blame a failure on it (SQLite says "disk I/O error" of a full disk,
#: a task that could write neither its log nor its result says nothing).
FULL_DISK = 1 << 20


def free_space(path: str) -> int:
    """Bytes an unprivileged user may still write on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize

# Binary multiples, as storage people mean them in block and split sizes.
_MULTIPLIERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

_SIZE_RE = re.compile(
    r"""^\s*
    (?P<number>\d+(?:\.\d*)?|\.\d+)
    \s*
    (?:(?P<unit>[kmgtp])(?P<suffix>i?b)?|(?P<bytes>b))?
    \s*$""",
    re.IGNORECASE | re.VERBOSE,
)

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(text: str | int) -> int:
    """Turn '64M', '1.5G', '8KiB' or '123' into a positive number of bytes.

    Multiples are binary (K = 1024). Fractions are rounded down to whole bytes.
    Raises ValueError naming the bad text, so a typo in a flag is reported as
    such rather than as a confusing failure later.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}: expected a number of bytes such as 64M")
    if isinstance(text, int):
        value = text
    elif isinstance(text, str):
        match = _SIZE_RE.match(text)
        if match is None:
            if text.strip().startswith("-"):
                raise ValueError(f"invalid size {text!r}: a size must be positive")
            raise ValueError(
                f"invalid size {text!r}: expected a number with an optional unit "
                "K, M, G, T or P (binary multiples), e.g. 8K, 64M, 1.5G, 64MiB"
            )
        unit = (match.group("unit") or "").lower()
        value = int(Fraction(match.group("number")) * _MULTIPLIERS[unit])
    else:
        raise ValueError(f"invalid size {text!r}: expected a string such as '64M'")
    if value < 1:
        raise ValueError(f"invalid size {text!r}: a size must be at least 1 byte")
    return value


def format_size(n: int) -> str:
    """Render a byte count for humans, e.g. 67108864 -> '64.0 MiB'."""
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def size_argument(text: str) -> int:
    """``parse_size`` as an argparse ``type=``: errors become usage errors."""
    import argparse

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
