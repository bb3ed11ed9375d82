"""Word count: the canonical MapReduce job.

A word is a token of ``value.split()`` (whitespace split, case kept,
punctuation kept), the same definition as the benchmark peers use. The
combiner sums the counts of one map's output before the shuffle, so each map
sends at most one record per distinct word. Run it with::

    python -m pytxmr run examples/wordcount.py data/sample.txt -o /tmp/wc

The output is one ``word<TAB>count`` line per distinct word in
``/tmp/wc/part-NNNNN``.
"""

from collections.abc import Iterable, Iterator


def map(key: int, value: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every word of the line ``value``."""
    for word in value.split():
        yield word, 1


def combine(key: str, values: Iterable[int]) -> Iterator[tuple[str, int]]:
    """Sum partial counts; the output is a partial count again."""
    yield key, sum(values)


def reduce(key: str, values: Iterable[int]) -> Iterator[tuple[str, int]]:
    """Yield ``(word, total count)``."""
    yield key, sum(values)
