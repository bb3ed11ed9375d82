"""Writing a part file: the last step's text (``key<TAB>value`` or JSON
lines, ``output.FORMATTERS``), or, between the steps of a multi-step job,
the pairs themselves (``stepdata``). Reduces and map-only maps write
through it alike."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .output import ENCODING_ERRORS, FORMATTERS
from .records import RecordTypeError, short_repr
from .stepdata import PAIRS, PairWriter


class Part:
    """An open part file. ``put(key, value)`` writes a pair;
    ``raw(line(key, value))`` does the same with a call less per record,
    for a reduce's hot loop. ``bytes``: its size, once closed."""

    def __init__(self, raw: Callable[[Any], Any], line: Callable[[Any, Any], Any]) -> None:
        self.raw = raw
        self.line = line
        self.bytes = 0

    def put(self, key: Any, value: Any) -> None:
        self.raw(self.line(key, value))


def _pair(key: Any, value: Any) -> tuple[Any, Any]:
    return key, value


#: The errors of a write that its file's name helps with. Not the others
#: the code inside the block raises: a user's reduce that timed out on a
#: lookup service said "OSError: [Errno None] ...: '.../part-00000'".
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


@contextmanager
def naming(path: str) -> Iterator[None]:
    """An OSError of writing ``path`` (a full disk: "No space left on
    device") names the file, as a write's own error does not."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno not in _DISK_ERRORS:
            raise
        raise OSError(e.errno, e.strerror or str(e), path) from e


@contextmanager
def part_writer(path: str, fmt: str) -> Iterator[Part]:
    """A new part file at ``path`` in ``fmt`` ("text", "jsonl" or PAIRS)."""
    with naming(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _part_writer(path, fmt) as part:
            yield part


@contextmanager
def _part_writer(path: str, fmt: str) -> Iterator[Part]:
    if fmt == PAIRS:
        with open(path, "wb", buffering=1 << 20) as f:
            pairs = PairWriter(f)
            part = Part(pairs.add, _pair)
            yield part
            pairs.flush()
            part.bytes = pairs.bytes
        return
    with open(path, "w", encoding="utf-8", errors=ENCODING_ERRORS,
              newline="\n", buffering=1 << 20) as out:
        part = Part(out.write, FORMATTERS[fmt])
        yield part
        part.bytes = out.tell()


def call_hook(hook: Callable[[], Any]) -> Iterable[Any]:
    """A hook's output: a generator's pairs, or nothing if it returns None."""
    return hook() or ()


def write_pairs(items: Iterable[Any], write: Callable[[Any, Any], None], who: str) -> int:
    """Write the pairs ``items`` (of ``who``: "map" or "reduce"); how many."""
    n = 0
    for item in items:
        try:
            k, v = item
        except (TypeError, ValueError) as e:
            raise RecordTypeError(f"{who} must yield (key, value) pairs, not {item!r:.100} "
                                  f"({e})") from None
        try:
            write(k, v)
        except RecordTypeError:
            raise
        except TypeError as e:
            raise unwritable(who, k, v, e) from None
        n += 1
    return n


def unwritable(who: str, k: Any, v: Any, e: TypeError) -> RecordTypeError:
    """The pair ``who`` yielded that cannot be written, named: the user's
    own frames are gone by the time it is."""
    return RecordTypeError(f"{who} yielded ({short_repr(k)}, {short_repr(v)}), which cannot be "
                           f"written: {e}")

