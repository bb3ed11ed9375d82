"""The most frequent words: two steps in one job, the second a top-N.

Step 1 counts words (a word count with its combiner). Step 2 reads step 1's
``(word, count)`` pairs as they were yielded: each of its maps keeps only
its best ``n`` in a heap (``map`` adds to it, ``map_final`` yields it, so a
map sends ``n`` pairs, not one per word), and its one reducer picks the best
``n`` of those. Ties go to the word that sorts first. Run it with::

    python -m pytxmr run examples/top_words.py data/sample.txt -o /tmp/top --arg n=10

The output, in ``/tmp/top/part-00000``, is ``word<TAB>count`` lines, most
frequent first.
"""

import heapq
from collections.abc import Iterable, Iterator

from pytxmr import Arg, Step, args, combiners

def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(f"must be at least 1, not {n}")
    return n


arguments = [Arg("n", positive_int, default=10, help="how many words to list")]

#: One map task's best (count, word) pairs so far, worst first; a word with
#: the same count but a later spelling ranks below (hence the negated key).
_best: list[tuple[int, "_Reversed"]] = []


class _Reversed(str):
    """A word that compares in reverse, so that among equal counts the heap
    drops the word that sorts last."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)

    def __le__(self, other: str) -> bool:
        return str.__ge__(self, other)

    def __ge__(self, other: str) -> bool:
        return str.__le__(self, other)


def words(offset: int, line: str) -> Iterator[tuple[str, int]]:
    for word in line.split():
        yield word, 1


def total(word: str, counts: Iterable[int]) -> Iterator[tuple[str, int]]:
    yield word, sum(counts)


def keep(word: str, count: int) -> tuple[()]:
    """Keep (count, word) if it is among this map's best ``n``."""
    entry = (count, _Reversed(word))
    if len(_best) < args()["n"]:
        heapq.heappush(_best, entry)
    elif entry > _best[0]:
        heapq.heapreplace(_best, entry)
    return ()


def keep_final() -> Iterator[tuple[None, tuple[int, str]]]:
    for count, word in _best:
        yield None, (count, str(word))


def top(_: None, pairs: Iterable[tuple[int, str]]) -> Iterator[tuple[str, int]]:
    best = heapq.nsmallest(args()["n"], pairs, key=lambda p: (-p[0], p[1]))
    for count, word in best:
        yield word, count


steps = [
    Step(map=words, combine=combiners.sum, reduce=total),
    Step(map=keep, map_final=keep_final, reduce=top, num_reducers=1),
]
