"""Inverted index: for every word, the input files that contain it.

The ``path_lines`` reader gives ``(absolute path of the input file, line)``;
the index keeps the file's base name, so two inputs with the same base name in
different directories count as one. Words are tokens of ``value.split()``, as
in wordcount.py. Run it with::

    python -m pytxmr run examples/inverted_index.py data/sample.txt data/README.md -o /tmp/ii

Each output line is ``word<TAB>["file", ...]`` (a sorted JSON list).
"""

import os
from collections.abc import Iterable, Iterator

import pytxmr.readers

reader = pytxmr.readers.path_lines


def map(key: str, value: str) -> Iterator[tuple[str, str]]:
    """Yield ``(word, file base name)`` once per distinct word of the line."""
    name = os.path.basename(key)
    for word in set(value.split()):
        yield word, name


def combine(key: str, values: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Yield each ``(word, file)`` pair once: a map sees a word on many lines."""
    for name in set(values):
        yield key, name


def reduce(key: str, values: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(word, sorted list of the distinct files containing it)``."""
    yield key, sorted(set(values))
