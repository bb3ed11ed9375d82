"""Writing a part file: the last step's text (``key<TAB>value`` or JSON
lines, ``output.FORMATTERS``), or, between the steps of a multi-step job,
the pairs themselves (``stepdata``). Reduces and map-only maps write
through it alike."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .output import ENCODING_ERRORS, FORMATTERS
from .records import RecordTypeError
from .stepdata import PAIRS, PairWriter


class Written:
    """What a part writer wrote, known once it is closed."""

    bytes = 0


@contextmanager
def part_writer(path: str, fmt: str) -> Iterator[tuple[Callable[[Any, Any], None], Written]]:
    """``write(key, value)`` into a new part file at ``path`` in ``fmt``
    ("text", "jsonl" or PAIRS)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written = Written()
    if fmt == PAIRS:
        with open(path, "wb", buffering=1 << 20) as f:
            pairs = PairWriter(f)
            yield pairs, written
            pairs.flush()
            written.bytes = pairs.bytes
        return
    line = FORMATTERS[fmt]
    with open(path, "w", encoding="utf-8", errors=ENCODING_ERRORS,
              newline="\n", buffering=1 << 20) as out:
        write = out.write
        yield lambda k, v: write(line(k, v)), written
        written.bytes = out.tell()


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
        write(k, v)
        n += 1
    return n
