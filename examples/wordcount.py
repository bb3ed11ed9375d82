"""Word count: the canonical MapReduce job.

A word is a token of ``value.split()`` (whitespace split, case kept,
punctuation kept), the same definition as the benchmark peers use. The
combiner sums the counts of one map's output before the shuffle, so each map
sends at most one record per distinct word. It is the built-in
``pytxmr.combiners.sum``, which does what ``def combine(word, counts): yield
word, sum(counts)`` would, but tells the map side that counts may be added up
the moment ``map`` yields them: no list of 1s per word, the fastest a word
count gets in Python. Run it with::

    python -m pytxmr run examples/wordcount.py data/sample.txt -o /tmp/wc

The output is one ``word<TAB>count`` line per distinct word in
``/tmp/wc/part-NNNNN``.
"""

from collections.abc import Iterable, Iterator

from pytxmr import combiners


def map(key: int, value: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every word of the line ``value``."""
    for word in value.split():
        yield word, 1


#: Sums partial counts; its output is a partial count again.
combine = combiners.sum


def reduce(key: str, values: Iterable[int]) -> Iterator[tuple[str, int]]:
    """Yield ``(word, total count)``."""
    yield key, sum(values)
