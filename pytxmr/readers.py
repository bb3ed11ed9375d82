"""Input formats: how a map task turns its Split into the (key, value) pairs given to the mapper.

A job module picks one by setting its ``reader`` attribute (default: lines);
the map task child calls it once per split. Pure stdlib, no Twisted.

Writing your own reader: any callable ``reader(split, encoding, errors)``
returning an iterator of (key, value) pairs will do. Build it on
pytxmr.splits.read_lines (or read_chunks) so that it keeps their guarantee
that each line of a file is read by exactly one split::

    from pytxmr.splits import read_lines

    def csv_rows(split, encoding, errors):
        for offset, line in read_lines(split, encoding, errors):
            yield offset, line.split(",")

    reader = csv_rows  # in the job module

A reader that must see a whole file (e.g. JSON documents) should only be used
with compressed inputs or a split size larger than every file.
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Iterator

from pytxmr.splits import Split, read_lines

__all__ = ["Reader", "lines", "path_lines"]

#: The reader protocol: (split, encoding, errors) -> iterator of (key, value).
Reader = Callable[[Split, str, str], Iterator[tuple[Any, Any]]]

_second = itemgetter(1)


def lines(
    split: Split, encoding: str = "utf-8", errors: str = "strict"
) -> Iterator[tuple[int, str]]:
    """The default reader: (byte offset in the file, line), like Hadoop's TextInputFormat."""
    return read_lines(split, encoding, errors)


def path_lines(
    split: Split, encoding: str = "utf-8", errors: str = "strict"
) -> Iterator[tuple[str, str]]:
    """(file path, line): for jobs that need to know which file a line is in (an inverted index)."""
    # zip/map keep the per-line step in C, like read_lines itself.
    return zip(repeat(split.path), map(_second, read_lines(split, encoding, errors)))
