"""The map side of a task: run ``map`` over a split, buffer, spill, merge.

Map output is grouped per key in a dict as it is produced (so the combiner,
the partitioner, the sort and the encoder see each distinct key once per
spill, not once per record). When the buffer holds ``buffer_records``
values it is combined, partitioned, sorted and spilled as a run; at the end
the runs are merged into one data file plus an index, as Hadoop does.
Runs in a task child process; nothing here touches the reactor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .counters import FRAMEWORK, Counters
from .jobmodule import Job
from .keys import kinds_of, record_sort_key
from .merge import group_values, merge_records, open_runs
from .records import RecordTypeError, SegmentWriter
from .splits import Split

DEFAULT_BUFFER_RECORDS = 1_000_000
INDEX_FORMAT = 1

PartitionTable = list[tuple[int, int, int]]  # (offset, length, records) per partition


@dataclass(frozen=True)
class MapOutput:
    data_path: str
    index_path: str
    kinds: list[str]


def _bad_pair(exc: Exception, item: Any) -> Exception:
    """A clear error for map output that is not a ``(key, value)`` pair or
    whose key cannot be a dict key, instead of a bare internal TypeError."""
    if isinstance(item, tuple) and len(item) == 2:
        key = item[0]
        return RecordTypeError(
            f"map emitted a key of unsupported type {type(key).__qualname__}: {key!r:.200} "
            "(keys may be str, bytes, int, float, bool, None or tuples of these)"
        )
    return RecordTypeError(f"map must yield (key, value) pairs, got {item!r:.200}")


def _raised_here(exc: BaseException) -> bool:
    """True when ``exc`` was raised by this module's own code (the driver
    loop), not by the user's function it called."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == __file__


def combined_values(key: Any, values: Iterable[Any], combine: Callable[..., Any]) -> list[Any]:
    """The combiner's output values for one key.

    A combiner must yield the key it was given: its output is merged back
    into sorted runs, where another key would break the order.
    """
    out = []
    for k, v in combine(key, iter(values)):
        if k != key:
            raise ValueError(f"combine({key!r:.100}, ...) yielded another key {k!r:.100}")
        out.append(v)
    return out


class MapOutputBuffer:
    """Spills grouped map output as sorted, partitioned runs."""

    def __init__(self, job: Job, num_partitions: int, out_dir: str, counters: Counters) -> None:
        self._job = job
        self._num_partitions = num_partitions
        self._out_dir = out_dir
        self._counters = counters
        self._spills: list[tuple[str, PartitionTable]] = []
        self.kinds: set[str] = set()

    def _partitioned(self, groups: dict[Any, list[Any]]) -> list[list[tuple[Any, list[Any]]]]:
        n = self._num_partitions
        if n == 1:
            return [list(groups.items())]
        parts: list[list[tuple[Any, list[Any]]]] = [[] for _ in range(n)]
        appends = [p.append for p in parts]
        partition = self._job.partition
        checked = partition.__module__ != "pytxmr.partition"
        for item in groups.items():
            p = partition(item[0], n)
            if checked and (type(p) is not int or not 0 <= p < n):
                raise ValueError(
                    f"partition({item[0]!r:.100}, {n}) returned {p!r:.50}; "
                    f"it must return an int in [0, {n})"
                )
            appends[p](item)
        return parts

    def spill(self, groups: dict[Any, list[Any]]) -> None:
        if not groups:
            return
        c = self._counters
        if self._job.combine is not None:
            c.incr(FRAMEWORK, "combine input records", sum(map(len, groups.values())))
            combine = self._job.combine
            groups = {k: combined_values(k, vs, combine) for k, vs in groups.items()}
            c.incr(FRAMEWORK, "combine output records", sum(map(len, groups.values())))
        kinds = kinds_of(groups)
        self.kinds.update(kinds)
        sort_key = record_sort_key(kinds)
        path = os.path.join(self._out_dir, f"spill-{len(self._spills)}.data")
        table: PartitionTable = []
        with open(path, "wb", buffering=1 << 20) as f:
            writer = SegmentWriter(f)
            for part in self._partitioned(groups):
                part.sort(key=sort_key)
                start, records = writer.bytes, writer.records
                writer.write(part)
                table.append((start, writer.bytes - start, writer.records - records))
        c.incr(FRAMEWORK, "spilled records", writer.records)
        self._spills.append((path, table))

    def finish(self, name: str) -> MapOutput:
        """Merge the spills into ``name.data`` and ``name.index``."""
        data_path = os.path.join(self._out_dir, name + ".data")
        index_path = os.path.join(self._out_dir, name + ".index")
        if not self._spills:
            # An empty split still has an (empty) output for every partition.
            open(data_path, "wb").close()
            table = [(0, 0, 0)] * self._num_partitions
        elif len(self._spills) == 1:
            path, table = self._spills[0]
            os.replace(path, data_path)
        else:
            table = self._merge_spills(data_path)
        c = self._counters
        c.incr(FRAMEWORK, "map output materialized bytes", sum(t[1] for t in table))
        index = {
            "format": INDEX_FORMAT,
            "partitions": [{"offset": o, "length": n, "records": r} for o, n, r in table],
            "kinds": sorted(self.kinds),
        }
        with open(index_path, "w") as f:
            json.dump(index, f)
        return MapOutput(data_path, index_path, sorted(self.kinds))

    def _merge_spills(self, data_path: str) -> PartitionTable:
        sort_key = record_sort_key(self.kinds)
        combine = self._job.combine
        table: PartitionTable = []
        with open(data_path, "wb", buffering=1 << 20) as f:
            writer = SegmentWriter(f)
            for p in range(self._num_partitions):
                runs = [(path, *t[p][:2]) for path, t in self._spills]
                merged = merge_records(open_runs(runs), sort_key)
                if combine is not None:
                    merged = (
                        (key, combined_values(key, values, combine))
                        for key, values in group_values(merged)
                    )
                start, records = writer.bytes, writer.records
                writer.write(merged)
                table.append((start, writer.bytes - start, writer.records - records))
        for path, _ in self._spills:
            os.unlink(path)
        return table


def run_map(
    job: Job,
    split: Split,
    num_partitions: int,
    out_dir: str,
    counters: Counters,
    buffer_records: int = DEFAULT_BUFFER_RECORDS,
    name: str = "map",
) -> MapOutput:
    """Run one map task over ``split``; its output goes to ``out_dir``."""
    buffer = MapOutputBuffer(job, num_partitions, out_dir, counters)
    mapfn = job.map
    groups: dict[Any, list[Any]] = {}
    get = groups.get
    buffered = 0
    in_records = 0
    out_records = 0
    item: Any = None
    records: Iterable[tuple[Any, Any]] = job.reader(split, "utf-8", job.encoding_errors)
    try:
        for key, value in records:
            in_records += 1
            for item in mapfn(key, value):
                k, v = item
                vs = get(k)
                if vs is None:
                    groups[k] = [v]
                else:
                    vs.append(v)
                buffered += 1
            if buffered >= buffer_records:
                buffer.spill(groups)
                groups = {}
                get = groups.get
                out_records += buffered
                buffered = 0
    except (TypeError, ValueError) as e:
        if _raised_here(e):
            raise _bad_pair(e, item) from None
        raise
    out_records += buffered
    buffer.spill(groups)
    del groups
    counters.incr(FRAMEWORK, "map input records", in_records)
    counters.incr(FRAMEWORK, "map output records", out_records)
    return buffer.finish(name)

