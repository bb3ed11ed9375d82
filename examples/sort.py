"""Total-order sort: the distinct words of the input, globally sorted.

Each reducer gets its keys sorted, but the default partitioner (a hash) scatters
neighbouring keys over all reducers. Here ``partition`` assigns each reducer a
range of keys instead, by the code point of the key's first character, so
that concatenating part-00000, part-00001, ... gives every word in code point
order (the order of Python's ``str`` comparison and of ``LC_ALL=C sort``)::

    python -m pytxmr run examples/sort.py data/sample.txt -o /tmp/sorted
    cat /tmp/sorted/part-* | cut -f1 | LC_ALL=C sort -c && echo sorted

Each output line is ``word<TAB>count``. The ranges are cut from a fixed guess
of how English words are spread over their first letters, so the reducers
get similar loads only when the words are mostly ASCII/Latin: every word
starting beyond ASCII lands in the last reducer or two, and a corpus that is
mostly Greek or Chinese ends up on one reducer. (Hadoop's
TotalOrderPartitioner samples the input to pick its cut points instead.)
Some part files are empty when there are more reducers than first letters.
"""

from collections.abc import Iterable, Iterator

num_reducers = 4

# Relative share of distinct English words per first letter (dictionary
# words, not running text: the combiner leaves each map about one record per
# distinct word, so distinct words are what a reducer receives).
_LETTER_WEIGHTS = {
    "a": 5.7, "b": 6.0, "c": 9.4, "d": 6.1, "e": 3.9, "f": 4.1, "g": 3.3,
    "h": 3.7, "i": 3.9, "j": 1.1, "k": 1.0, "l": 3.1, "m": 5.6, "n": 2.2,
    "o": 2.5, "p": 7.7, "q": 0.5, "r": 6.0, "s": 11.0, "t": 5.0, "u": 2.9,
    "v": 1.5, "w": 2.7, "x": 0.1, "y": 0.6, "z": 0.5,
}
_CAPITALS = 0.2  # capitalised words (names, sentence starts) per lowercase one
_DIGIT = 0.1
_PUNCTUATION = 0.02  # other printable ASCII: quotes, brackets, dashes...
_LATIN = 0.3  # U+0080..U+024F: Latin-1 Supplement, Latin Extended-A/B
_BEYOND = 3.0  # U+0250 and up: curly quotes, dashes, other scripts
_LATIN_END = 0x250


def _ascii_weight(cp: int) -> float:
    c = chr(cp)
    if "a" <= c <= "z":
        return _LETTER_WEIGHTS[c]
    if "A" <= c <= "Z":
        return _CAPITALS * _LETTER_WEIGHTS[c.lower()]
    if "0" <= c <= "9":
        return _DIGIT
    if 33 <= cp <= 126:
        return _PUNCTUATION
    return 0.0  # whitespace never starts a token; control characters rarely


def _midpoints(weights: list[float]) -> list[float]:
    """The middle of each slice on the [0, 1) line, slices in the given order.

    Every key of one slice goes to the partition under the slice's middle:
    a non-decreasing function of the slice's position, hence of the key.
    """
    total = sum(weights)
    mids = []
    start = 0.0
    for w in weights:
        mids.append((start + w / 2) / total)
        start += w
    return mids


*_ASCII_MID, _LATIN_MID, _BEYOND_MID = _midpoints(
    [_ascii_weight(cp) for cp in range(128)] + [_LATIN, _BEYOND]
)


def partition(key: str, num_partitions: int) -> int:
    """The reducer for ``key``: keys in code point order give reducers in order.

    For any keys ``k1 <= k2``: ``partition(k1, n) <= partition(k2, n)``, and
    every key (the empty string included) maps into ``range(n)``.
    """
    if not key:
        return 0
    cp = ord(key[0])
    if cp < 128:
        mid = _ASCII_MID[cp]
    elif cp < _LATIN_END:
        mid = _LATIN_MID
    else:
        mid = _BEYOND_MID
    return min(int(mid * num_partitions), num_partitions - 1)


def map(key: int, value: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every word (``value.split()``) of the line."""
    for word in value.split():
        yield word, 1


def combine(key: str, values: Iterable[int]) -> Iterator[tuple[str, int]]:
    """Sum partial counts."""
    yield key, sum(values)


def reduce(key: str, values: Iterable[int]) -> Iterator[tuple[str, int]]:
    """Yield ``(word, count)``; keys arrive sorted within the partition."""
    yield key, sum(values)
