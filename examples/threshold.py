"""Word count with a threshold passed as a job argument: only the words seen
at least ``min_count`` times are written.

The job declares its argument (name, type, default, help), so a missing or
malformed value is refused at submission and
``python -m pytxmr run examples/threshold.py --help-job`` lists it. Tasks
read it with ``pytxmr.args()``. Run it with::

    python -m pytxmr run examples/threshold.py data/sample.txt -o /tmp/common --arg min_count=20
"""

from collections.abc import Iterable, Iterator

from pytxmr import Arg, args, combiners

arguments = [Arg("min_count", int, default=2, help="the least count a word needs to be listed")]


def map(offset: int, line: str) -> Iterator[tuple[str, int]]:
    for word in line.split():
        yield word, 1


combine = combiners.sum


def reduce(word: str, counts: Iterable[int]) -> Iterator[tuple[str, int]]:
    n = sum(counts)
    if n >= args()["min_count"]:
        yield word, n
