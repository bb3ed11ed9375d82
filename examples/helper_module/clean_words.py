"""Word count of normalised words, with a helper module and a data file.

``textnorm.py``, beside this file, is imported as any module would be: it
travels with the job to every worker (pytxmr finds it from the import
statement). ``stopwords.txt`` is shipped with ``--files`` and opened by its
base name in the task's working directory. Run it with::

    python -m pytxmr run examples/helper_module/clean_words.py data/sample.txt -o /tmp/clean --files examples/helper_module/stopwords.txt
"""

from collections.abc import Iterable, Iterator

import textnorm
from pytxmr import combiners

_stop: frozenset[str] | None = None


def map_init() -> None:
    global _stop
    with open("stopwords.txt", encoding="utf-8") as f:
        _stop = frozenset(f.read().split())


def map(offset: int, line: str) -> Iterator[tuple[str, int]]:
    assert _stop is not None
    for word in textnorm.words(line):
        if word not in _stop:
            yield word, 1


combine = combiners.sum


def reduce(word: str, counts: Iterable[int]) -> Iterator[tuple[str, int]]:
    yield word, sum(counts)
