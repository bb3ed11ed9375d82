"""Merging sorted runs and grouping equal keys (pure; used by both sides).

A run is one sorted segment on disk, named by ``(path, offset, length)``.
Merges stream: each run holds one decoded frame in memory, and a key's
values reach ``reduce`` as an iterator chained across runs, never as a list
of everything.
"""

from __future__ import annotations

import heapq
import os
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator, Sequence

from .records import Record, SegmentWriter, iter_segment_file

RunRef = tuple[str, int, int]

#: Runs merged at once; more are first merged in passes, to bound open files
#: and memory (Hadoop's io.sort.factor).
MERGE_FACTOR = 64

_first = itemgetter(0)
_second = itemgetter(1)


def merge_records(runs: Sequence[Iterable[Record]], sort_key: Callable[[Record], Any]) -> Iterator[Record]:
    """The records of sorted ``runs``, in one sorted stream."""
    if len(runs) == 1:
        return iter(runs[0])
    return heapq.merge(*runs, key=sort_key)


def group_values(records: Iterable[Record]) -> Iterator[tuple[Any, Iterator[Any]]]:
    """``(key, values)`` for each distinct key of a sorted record stream."""
    for key, group in groupby(records, key=_first):
        yield key, chain.from_iterable(map(_second, group))


def open_runs(runs: Sequence[RunRef]) -> list[Iterator[Record]]:
    return [iter_segment_file(path, offset, length) for path, offset, length in runs]


def reduce_run_count(
    runs: list[RunRef], sort_key: Callable[[Record], Any], tmp_dir: str, factor: int = MERGE_FACTOR
) -> list[RunRef]:
    """Merge runs in passes until at most ``factor`` remain."""
    if factor < 2:
        raise ValueError("the merge factor must be at least 2")
    runs = list(runs)
    n = 0
    while len(runs) > factor:
        batch, runs = runs[:factor], runs[factor:]
        path = os.path.join(tmp_dir, f"merge-{n}.seg")
        n += 1
        with open(path, "wb", buffering=1 << 20) as f:
            writer = SegmentWriter(f)
            writer.write(merge_records(open_runs(batch), sort_key))
        runs.append((path, 0, writer.bytes))
    return runs
