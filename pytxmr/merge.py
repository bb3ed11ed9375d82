"""Merging sorted runs and grouping equal keys (pure; used by both sides).

A run is one sorted segment on disk, named by ``(path, offset, length)``;
a map's output may hold several sorted runs per segment, one per spill,
parted by run breaks (``records.segment_runs``), and each is merged as a
run of its own. Merges stream: each run holds one decoded frame in memory, and a key's
values reach ``reduce`` as an iterator chained across runs, never as a list
of everything.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator, Sequence

from .records import (CODEC_MSGPACK, Record, SegmentWriter, iter_frames_file, largest_frame,
                      segment_runs)

RunRef = tuple[str, int, int]

#: Runs merged at once; more are first merged in passes, to bound open files
#: and memory (Hadoop's io.sort.factor).
MERGE_FACTOR = 64
#: What a merge's runs hold at once, at most: a frame of each. Frames of
#: one 4 MB value each, 64 of them, took a reduce to 590 MB; such runs
#: are merged fewer at a time.
MERGE_MEMORY = 64 << 20

_first = itemgetter(0)
_second = itemgetter(1)


def merge_runs(runs: Sequence[RunRef], sort_key: Callable[[Record], Any],
               tally: list[int] | None = None) -> Iterator[Record]:
    """The records of the sorted runs stored at ``runs``, in one sorted stream
    (their number added to ``tally[0]`` when given)."""
    return chain.from_iterable(merge_batches(runs, sort_key, tally))


def merge_batches(runs: Sequence[RunRef], sort_key: Callable[[Record], Any],
                  tally: list[int] | None = None) -> Iterator[list[Record]]:
    """``merge_runs``'s records a sorted list at a time, for a consumer that
    takes them so (no Python step per record).

    ``heapq.merge`` costs about 550 ns a record in Python; this merges a
    frame at a time instead: every record up to the smallest of the runs'
    current last keys can safely go out, so those are gathered and put in
    order by one C timsort (which finds the sorted runs in them). Memory
    stays at one frame per run.
    """
    sources = [iter_frames_file(path, offset, length)
               for path, offset, length in sorted_runs(runs)]
    if tally is not None:
        sources = [_counted(source, tally) for source in sources]
    return _merge_frames(sources, sort_key)


def sorted_runs(runs: Sequence[RunRef]) -> list[RunRef]:
    """The sorted runs that ``runs`` hold (a segment may hold several)."""
    return [(path, *sub) for path, offset, length in runs if length > 0
            for sub in segment_runs(path, offset, length)]


def _counted(frames: Iterator[list[Record]], tally: list[int]) -> Iterator[list[Record]]:
    """Frames as they come, adding their record counts to ``tally[0]``."""
    for frame in frames:
        tally[0] += len(frame)
        yield frame


def _merge_frames(sources: list[Iterator[list[Record]]],
                  sort_key: Callable[[Record], Any]) -> Iterator[list[Record]]:
    live: list[list[Any]] = []  # [frame, position, source]
    for source in sources:
        frame = next(source, None)
        while frame is not None and not frame:
            frame = next(source, None)
        if frame is not None:
            live.append([frame, 0, source])
    while len(live) > 1:
        bound = min(sort_key(entry[0][-1]) for entry in live)
        batch: list[Record] = []
        for entry in live:
            frame, pos = entry[0], entry[1]
            cut = bisect_right(frame, bound, pos, key=sort_key)
            batch += frame[pos:cut]
            entry[1] = cut
        if not batch:
            # The run whose last key is the bound always gives at least
            # that record, unless its frame is out of order: fail, not spin.
            raise ValueError("a run to merge is not sorted by key")
        batch.sort(key=sort_key)
        yield batch
        for entry in live:
            while entry[1] == len(entry[0]):
                frame = next(entry[2], None)
                if frame is None:
                    entry[0] = None
                    break
                entry[0], entry[1] = frame, 0
        live = [entry for entry in live if entry[0] is not None]
    for frame, pos, source in live:
        yield frame[pos:]
        yield from source


def group_values(records: Iterable[Record]) -> Iterator[tuple[Any, Iterator[Any]]]:
    """``(key, values)`` for each distinct key of a sorted record stream."""
    for key, group in groupby(records, key=_first):
        yield key, chain.from_iterable(map(_second, group))


def recombined(records: Iterable[Record],
               combine: Callable[[Any, Iterator[Any]], Iterable[Sequence[Any]]]
               ) -> Iterator[Record]:
    """A sorted record stream with ``combine`` (a key and its values to
    lists of values) run over a key's values where they come in more than
    one record. A key's lone record passes as it is: a run's records were
    combined as the run was written (or hold a key's one value), and a
    combiner may run any number of times. Where most keys are distinct (an
    index, in-mapper combining) that spares a call of the user's combiner
    for nearly every key of a map's merge."""
    for key, group in groupby(records, key=_first):
        lone = next(group)
        more = next(group, None)
        if more is None:
            yield lone
            continue
        values = chain(lone[1], more[1], chain.from_iterable(map(_second, group)))
        for chunk in combine(key, values):
            yield key, chunk


def reduce_run_count(
    runs: list[RunRef], sort_key: Callable[[Record], Any], tmp_dir: str, factor: int = MERGE_FACTOR,
    codec: int = CODEC_MSGPACK,
) -> list[RunRef]:
    """Merge runs in passes until at most ``factor`` remain (fewer, if
    their frames are large: MERGE_MEMORY), written in ``codec``; a pass's
    file goes once a later pass has merged it."""
    if factor < 2:
        raise ValueError("the merge factor must be at least 2")
    runs = sorted_runs(runs)
    if len(runs) > 2:
        biggest = max(largest_frame(*run) for run in runs)
        factor = max(2, min(factor, MERGE_MEMORY // max(biggest, 1)))
    n = 0
    passes: set[str] = set()  # the files of our passes, not yet merged again
    while len(runs) > factor:
        batch, runs = runs[:factor], runs[factor:]
        path = os.path.join(tmp_dir, f"merge-{n}.seg")
        n += 1
        with open(path, "wb", buffering=1 << 20) as f:
            writer = SegmentWriter(f, codec=codec)
            writer.write(merge_runs(batch, sort_key))
        runs.append((path, 0, writer.bytes))
        for merged in passes.intersection(p for p, _, _ in batch):
            # Merged again at a factor of 2 (frames of huge values), every
            # pass's file stayed: N log N times the runs' size on disk.
            os.unlink(merged)
            passes.discard(merged)
        passes.add(path)
    return runs
