"""The map side of a task: run ``map`` over a split, buffer, spill, merge.

Without a combiner, map output is kept as it comes, a list of ``(key,
value)`` pairs sorted once per spill and written as records of one value
each. With a combiner (or sorted values) it is grouped per key in a dict
(so the combiner, the partitioner, the sort and the encoder see each
distinct key once per spill). When the buffer holds ``buffer_records``
values, or the process is over its memory budget, it is partitioned,
sorted and spilled as a run; at the end the runs are stored one after the
other in one data file (merged, when a combiner can shrink them or when
there are many), as Hadoop does, and the table of where each partition's
segment lies goes back to the tasktracker with the task's result. A tiny
map's output, in a process that runs many maps, is appended to that
process's pack file instead of a file of its own.
Runs in a task child process; nothing here touches the reactor.
"""

from __future__ import annotations

import contextlib
import io
import operator
import os
import tempfile
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from .combiners import FoldCombiner
from .counters import FRAMEWORK, Counters
from .jobmodule import Job, identity_map
from .keys import (NAN_REFUSED, find_nan, first, kinds_of, merge_order, record_sort_key,
                   second, sort_by_utf8, total_order)
from .merge import MERGE_FACTOR, RunRef, merge_runs, recombined, reduce_run_count
from .partfile import call_hook, naming, write_pairs
from .partition import RangePartition, default_partition, partition_ids, scatter
from .records import (CODEC_MSGPACK, FRAME_RECORDS, FRAME_TARGET_BYTES, RUN_BREAK_FRAME,
                      RecordTypeError, SegmentWriter, short_repr, weight)
from .splits import Split, read_chunks

DEFAULT_BUFFER_RECORDS = 1_000_000
#: The map child's resident memory the buffer may grow into: while the
#: process stays below it, the buffer doubles (fewer combine passes and
#: spills for small values); above it, it halves back towards
#: ``buffer_records``.
MEMORY_BUDGET = 160 << 20
#: Values buffered between two looks at the process's memory, at most;
#: at first (a map's values may be large) and when values grow memory
#: fast, fewer: as many as take about PROBE_GROWTH bytes, at least
#: MIN_PROBE. A look reads /proc (about 10 us).
MEMORY_PROBE = 1 << 16
MIN_PROBE = 64
PROBE_GROWTH = 8 << 20
#: Growth over the memory held when the buffer was last emptied that, over
#: the budget, fills the buffer (see _Fill).
MEMORY_SLACK = 16 << 20
_MAX_GROWTH = 16
#: A map without a combiner stores up to this many spills one after the
#: other, each a sorted run of its own that the reduce merges (no decoding
#: and encoding again here); more are merged, to bound a reduce's fan-in.
#: So does a map whose spills all come from one dict (their keys distinct,
#: there is nothing to combine across them).
SPILLS_KEPT_APART = 16
#: Distinct keys a spill of one value a key sorts and writes at a time,
#: at most: its own lists (its records, their keys' UTF-8, partitions, the
#: sorted copies) cost about 130 bytes a key, as much as the buffer. A
#: map_split's dict of 1.3 million words, spilled whole, took a map to
#: 350 MB. (A buffer of values lists weighs more a key than its spill.)
SPILL_RUN_KEYS = 1 << 18
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: A map output of at most this many bytes, in one spill, goes to the pack
#: file when the map has one: creating a file costs up to a millisecond of
#: system time on a busy disk (measured: 0.8 ms here), a tiny map's whole
#: work is less.
PACK_LIMIT = 1 << 20
#: Keys of a spill get a UTF-8 copy (the default partitioner's bytes, a
#: faster sort) unless they average this many characters or more: the
#: copy would double the memory of a buffer of large keys right when it is
#: full (10 KB keys took a map from its 160 MB budget to 300 MB).
UTF8_COPY_MAX_KEY = 1 << 10

PartitionTable = list[tuple[int, int, int]]  # (offset, length, records) per partition


@dataclass(frozen=True)
class MapOutput:
    data_path: str
    #: Where each partition's segment lies in ``data_path``.
    table: PartitionTable
    kinds: list[str]


class _SpillFile:
    """A spill being written: kept in memory while it is at most ``hold``
    bytes (then ``held`` is its bytes and no file was made), else the file
    at ``path``."""

    def __init__(self, path: str, hold: int) -> None:
        self._path = path
        self._hold = hold
        self._memory: io.BytesIO | None = io.BytesIO() if hold else None
        self._file = None if hold else open(path, "wb", buffering=1 << 20)
        self.held: bytes | None = None

    def write(self, data: bytes) -> int:
        if self._memory is not None:
            if self._memory.tell() + len(data) <= self._hold:
                return self._memory.write(data)
            self._file = open(self._path, "wb", buffering=1 << 20)
            self._file.write(self._memory.getbuffer())
            self._memory = None
        assert self._file is not None
        return self._file.write(data)

    def close(self) -> None:
        if self._memory is not None:
            self.held, self._memory = self._memory.getvalue(), None
        elif self._file is not None:
            self._file.close()


def _raised_by_driver(exc: BaseException) -> bool:
    """True when ``exc`` comes from ``run_map``'s own unpacking or dict
    insertion (a bad pair or key), not from user code or a spill."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code in _DRIVER_CODE


def _who(mapfn: Any, key: Any) -> str:
    """What a record's pairs come from, for messages: batches of pairs are
    keyed by their hook, or None for map_split's."""
    if mapfn is _pairs_of_batch:
        return "map_split" if key is None else _hook_name(key)
    return getattr(mapfn, "__name__", "map")


def _hook_name(hook: Any) -> str:
    return getattr(hook, "__name__", "a map hook")  # a partial has none


def _bad_output(exc: BaseException) -> RecordTypeError:
    """The driver's error at a map's output, said of the user's code: the
    function or hook that yielded it, and the item when it is at hand (a
    map_split's batch), else the record being mapped. The driver's frame
    holds them; the user's own frames are gone."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    seen = tb.tb_frame.f_locals if tb is not None else {}
    mapfn, key, value = seen.get("mapfn"), seen.get("key"), seen.get("value")
    who = _who(mapfn, key)
    batched = mapfn is _pairs_of_batch  # value: a batch of its pairs
    record = "" if batched else f", at its record ({short_repr(key)}, {short_repr(value)})"
    if "unpack" not in str(exc) and "not iterable" not in str(exc):  # a key that does not hash
        return RecordTypeError(
            f"{who} must yield (key, value) pairs whose key is str, bytes, int, float, bool, "
            f"None or a tuple of these ({exc}){record}")
    if batched:
        for item in value:
            try:
                _, _ = item
            except (TypeError, ValueError):
                return RecordTypeError(f"{who} must return or yield (key, value) pairs, "
                                       f"not {short_repr(item)} ({exc})")
    return RecordTypeError(f"{who} must yield (key, value) pairs ({exc}){record}")


def _refused_values(exc: BaseException, fold: FoldCombiner) -> TypeError | None:
    """The fold loop's TypeError, when the values caused it, not the key
    (which hashes) nor the pair's shape (the pair in hand folds again
    without it): ``(1, 2)`` to ``combiners.sum`` was reported as a key of
    a type no record may carry. Named as the reduce side names it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if not isinstance(exc, TypeError) or tb is None or tb.tb_frame.f_code is not _FOLD_CODE:
        return None
    local = tb.tb_frame.f_locals
    if "k" not in local or "v" not in local:
        return None
    k, v, partial = local["k"], local["v"], local["partial"]
    try:
        hash(k)
    except TypeError:
        return None
    try:
        if fold.op is operator.add:
            partial.get(k, 0) + v
        elif k in partial:
            fold.op(partial[k], v)
    except TypeError as again:
        return fold.refused("combine", short_repr(k), again)
    return None


def combined_values(key: Any, values: Iterable[Any], combine: Callable[..., Any]) -> list[Any]:
    """The combiner's output values for one key (of one buffer's)."""
    return [v for chunk in combined_chunks(key, values, combine) for v in chunk]


def combined_chunks(key: Any, values: Iterable[Any], combine: Callable[..., Any]
                    ) -> Iterator[list[Any]]:
    """The combiner's output values for one key, a frame's worth at a time
    (FRAME_RECORDS, or FRAME_TARGET_BYTES): a combiner that passes on what
    it is given (a filter) yields each of a hot key's values of every spill
    again.

    A combiner must yield the key it was given: its output is merged back
    into sorted runs, where another key would break the order.
    """
    out: list[Any] = []
    size = 0
    for k, v in combine(key, iter(values)):
        if k != key:
            raise ValueError(f"combine({key!r:.100}, ...) yielded another key {k!r:.100}")
        out.append(v)
        size += weight(v)
        if len(out) >= FRAME_RECORDS or size >= FRAME_TARGET_BYTES:
            yield out
            out = []
            size = 0
    if out:
        yield out


def _combining(combine: Callable[..., Any]
               ) -> Callable[[Any, Iterator[Any]], Iterable[list[Any]]]:
    """A key's values to the combiner's, in frames (one value, folded)."""
    if isinstance(combine, FoldCombiner):
        whole = combine.whole
        return lambda key, values: ([whole(values)],)
    return lambda key, values: combined_chunks(key, values, combine)


class MapOutputBuffer:
    """Spills grouped map output as sorted, partitioned runs."""

    def __init__(self, job: Job, num_partitions: int, spill_dir: str, counters: Counters,
                 codec: int = CODEC_MSGPACK, pack: BinaryIO | None = None) -> None:
        self._job = job
        self._codec = codec  # of spills and the output (records.CODEC_*)
        self._num_partitions = num_partitions
        self._spill_dir = spill_dir
        self._counters = counters
        self._pack = pack
        self._spills: list[tuple[str, PartitionTable]] = []
        #: Calls of ``spill``: one, and the spills' keys are distinct.
        self._spilled_mappings = 0
        #: The first spill's bytes while it is small and the only one.
        self._held: bytes | None = None
        self.kinds: set[str] = set()
        self.output_records = 0

    def full_folded(self, partial: dict[Any, Any], added: int) -> None:
        """Spill the running totals of a folding combiner."""
        self.output_records += added
        c = self._counters
        c.incr(FRAMEWORK, "combine input records", added)
        c.incr(FRAMEWORK, "combine output records", len(partial))
        if partial:
            self.spill(partial, folded=True, run_keys=SPILL_RUN_KEYS)

    def spill_distinct(self, pairs: Mapping[Any, Any], limit: int) -> None:
        """Spill the pairs of a ``map_split``'s dict, ``limit`` keys a run at
        most.

        Its keys are distinct, so there is nothing to group or combine, and
        taking it as it is spares a per-pair copy into the buffer.
        """
        self.output_records += len(pairs)
        if self._job.combine is not None:
            # The combiner had nothing to do: its counters say so.
            self._counters.incr(FRAMEWORK, "combine input records", 0)
            self._counters.incr(FRAMEWORK, "combine output records", 0)
        self.spill(pairs, folded=True, run_keys=min(limit, SPILL_RUN_KEYS))

    def full(self, groups: dict[Any, list[Any]], added: int, limit: int) -> dict[Any, list[Any]]:
        """The buffer took ``added`` more values: combine it in memory and,
        if it is still over half of ``limit`` (0 at the end), spill it.
        Returns the dict the map goes on filling."""
        self.output_records += added
        combine = self._job.combine
        if combine is not None:
            c = self._counters
            multi = before = after = 0
            for k, vs in groups.items():
                # One value needs no combining: a combiner may run zero or
                # more times per key, so skipping it is always correct.
                if len(vs) > 1:
                    multi += 1
                    before += len(vs)
                    groups[k] = vs = combined_values(k, vs, combine)
                    after += len(vs)
            c.incr(FRAMEWORK, "combine input records", before)
            c.incr(FRAMEWORK, "combine output records", after)
            # Few distinct keys: combining in memory keeps the buffer small,
            # and one spill at the end is all the task writes.
            if limit and len(groups) - multi + after <= limit // 2:
                return groups
        if groups:
            self.spill(groups)
        return {}

    def spill_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        """Spill a map's ``(key, value)`` pairs as they came (no combiner)."""
        self.output_records += len(pairs)
        if pairs:
            self._spill_items(pairs, folded=True, unchecked=True)

    def spill(self, groups: Mapping[Any, Any], folded: bool = False,
              run_keys: int = 0) -> None:
        """Write ``groups`` (key -> list of values, or key -> one value if
        ``folded``) as a sorted, partitioned run, or runs of ``run_keys``
        keys at most (a folding combiner's totals, a map_split's dict: one
        value a key, where the spill's own lists weigh most)."""
        if not groups:
            return
        run_keys = run_keys or len(groups)
        self._spilled_mappings += 1
        write = self._spill_by_value if self._job.sort_values else self._spill_items
        # One pass over the mapping: a user's mapping may not iterate its
        # keys in the order of its items().
        items = iter(groups.items())
        while run := list(islice(items, run_keys)):
            write(run, folded)

    def _spill_items(self, items: list[Any], folded: bool, unchecked: bool = False) -> None:
        """Sort and partition ``items`` (``(key, values)``, or ``(key,
        value)`` if ``folded``; left in their order, see _sorted) and write
        them as a run.
        ``unchecked``: no dict has refused unhashable keys yet."""
        keys = list(map(first, items))
        kinds = kinds_of(keys)
        if unchecked and "other" in kinds:
            _check_keys(keys, self._job)
        _refuse_nan_keys(keys, kinds)
        self.kinds.update(kinds)
        n = self._num_partitions
        partition = self._job.partition
        # The keys' UTF-8 serves the default partitioner, and sorts str keys
        # that are not all ASCII twice as fast; ASCII str sort as fast.
        utf8 = None
        if (kinds == ["str"] and ((n > 1 and partition is default_partition)
                                  or not all(map(str.isascii, keys)))
                and sampled_size(keys) < UTF8_COPY_MAX_KEY * len(keys)):
            utf8 = [k.encode("utf-8", "surrogatepass") for k in keys]
        del keys
        try:
            parts = self._sorted_parts(items, utf8, kinds)
        except TypeError as e:
            if str(e) == NAN_REFUSED:  # inside a tuple key (a top-level one: refused above)
                raise RecordTypeError(f"map yielded a key that holds a NaN: {NAN_REFUSED}") \
                    from None
            raise
        self._write_spill(parts, folded)

    def _sorted_parts(self, items: list[Any], utf8: list[bytes] | None,
                      kinds: list[str]) -> list[list[Any]]:
        n = self._num_partitions
        partition = self._job.partition
        if n > 1 and isinstance(partition, RangePartition) and kinds in _PLAIN_KINDS:
            # Sorted once, and cut where the cut points fall in the sorted
            # keys: no call per key, no scatter.
            return partition.split_sorted(_sorted(items, utf8, kinds), n)
        if n == 1:
            parts = [items]
            utf8_parts = [utf8]
        else:
            ids = partition_ids(map(first, items), n, partition, utf8)
            parts = scatter(items, ids, n)
            utf8_parts = scatter(utf8, ids, n) if utf8 is not None else [None] * n
        del utf8
        return [_sorted(part, part_utf8, kinds) for part, part_utf8 in zip(parts, utf8_parts)]

    def _spill_by_value(self, items: list[Any], folded: bool) -> None:
        """``sort_values``: one record per value, by key and then by value,
        so that merges stream each key's values in order. Each key's list
        is sorted in place and written a batch at a time: a key with
        millions of values costs no more memory than its list already does."""
        keys = list(map(first, items))
        kinds = kinds_of(keys)
        _refuse_nan_keys(keys, kinds)
        self.kinds.update(kinds)
        n = self._num_partitions
        parts = [items] if n == 1 else scatter(items, partition_ids(keys, n, self._job.partition), n)
        sort_key = record_sort_key(kinds)
        parts = [sorted(part, key=sort_key) for part in parts]  # not in place: see _sorted
        self._write_spill(parts, folded=True, write=_write_sorted_values(folded))

    def _write_spill(self, parts: list[list[Any]], folded: bool,
                     write: Callable[[SegmentWriter, list[Any]], None] | None = None) -> None:
        self._write_held()  # a second spill: the first needs its file now
        path = os.path.join(self._spill_dir, f"spill-{len(self._spills)}.data")
        table: PartitionTable = []
        with naming(path):
            f = _SpillFile(path, PACK_LIMIT if self._pack is not None and not self._spills else 0)
            try:
                writer = SegmentWriter(f, codec=self._codec)
                if write is None:
                    write = SegmentWriter.write_pairs if folded else SegmentWriter.write
                for part in parts:
                    start, records = writer.bytes, writer.records
                    write(writer, part)
                    table.append((start, writer.bytes - start, writer.records - records))
            finally:
                f.close()
        self._held = f.held
        self._counters.incr(FRAMEWORK, "spilled records", writer.records)
        self._spills.append((path, table))

    def _write_held(self) -> None:
        if self._held is not None:
            path = self._spills[0][0]
            with naming(path), open(path, "wb") as f:
                f.write(self._held)
            self._held = None

    def finish(self, data_path: str) -> MapOutput:
        """Store the spills as the output: appended to the pack, or in the
        file ``data_path``."""
        if not self._spills:
            # An empty split still has an (empty) output for every partition.
            table = [(0, 0, 0)] * self._num_partitions
            if self._pack is not None:
                data_path = self._pack.name
            else:
                open(data_path, "wb").close()
        elif self._held is not None and self._pack is not None:
            pack, held = self._pack, self._held
            with naming(pack.name):
                start = pack.seek(0, os.SEEK_END)
                pack.write(held)
                pack.flush()
            table = [(offset + start, n, r) for offset, n, r in self._spills[0][1]]
            data_path = pack.name
        elif len(self._spills) == 1:
            path, table = self._spills[0]
            os.replace(path, data_path)
        elif ((self._job.combine is None or self._spilled_mappings == 1)
              and len(self._spills) <= SPILLS_KEPT_APART):
            table = self._concatenate_spills(data_path)
        else:
            table = self._merge_spills(data_path)
        c = self._counters
        c.incr(FRAMEWORK, "map output materialized bytes", sum(t[1] for t in table))
        return MapOutput(data_path, table, sorted(self.kinds))

    def _concatenate_spills(self, data_path: str) -> PartitionTable:
        """Each partition's segments of every spill, one after the other
        with a run break between them: bytes copied, nothing decoded (the
        reduce merges them as runs of their own)."""
        table: PartitionTable = []
        with naming(data_path), open(data_path, "wb", buffering=0) as out:
            files = [open(path, "rb") for path, _ in self._spills]
            try:
                pos = 0
                for p in range(self._num_partitions):
                    start = pos
                    records = 0
                    for f, (_, spill_table) in zip(files, self._spills):
                        offset, length, n = spill_table[p]
                        if not length:
                            continue
                        if pos > start:
                            out.write(RUN_BREAK_FRAME)
                            pos += len(RUN_BREAK_FRAME)
                        _copy_range(f.fileno(), out.fileno(), offset, length)
                        pos += length
                        records += n
                    table.append((start, pos - start, records))
            finally:
                for f in files:
                    f.close()
        for path, _ in self._spills:
            os.unlink(path)
        return table

    def _merge_spills(self, data_path: str) -> PartitionTable:
        sort_key = merge_order(self._job, self.kinds)
        # Sorted by value, a key's values may be spread over several runs'
        # records: combined again, they would be combined out of order.
        combine = None if self._job.sort_values else self._job.combine
        table: PartitionTable = []
        with naming(data_path), open(data_path, "wb", buffering=1 << 20) as f:
            writer = SegmentWriter(f, codec=self._codec)
            for p in range(self._num_partitions):
                runs: list[RunRef] = [(path, *t[p][:2]) for path, t in self._spills]
                with contextlib.ExitStack() as passes:
                    if len(runs) > 2:
                        # Hundreds of spills (a small --buffer-records), or
                        # a few of huge values, merged at once held a frame
                        # of each.
                        runs = reduce_run_count(runs, sort_key, passes.enter_context(
                            tempfile.TemporaryDirectory(dir=self._spill_dir)), MERGE_FACTOR,
                            self._codec)
                    merged = merge_runs(runs, sort_key)
                    if combine is not None:
                        merged = recombined(merged, _combining(combine))
                    start, records = writer.bytes, writer.records
                    writer.write(merged)
                table.append((start, writer.bytes - start, writer.records - records))
        for path, _ in self._spills:
            os.unlink(path)
        return table


_PLAIN_KINDS = (["str"], ["num"], ["bytes"])


def _sorted(items: list[Any], utf8: list[bytes] | None, kinds: list[str]) -> list[Any]:
    """A spill's ``items`` sorted by key (``utf8``: their str keys' UTF-8,
    in the same order), in a new list.

    Not in place: the caller's list keeps the records in the order they
    were made, hence in the order they lie in the heap, and frees them in
    that order once the spill is written. Freed in sorted order instead,
    scattered over the heap, they took three times as long (0.42 s against
    0.14 s for 1.8 million pairs; a sort job's map spent a tenth of its time
    there), and left the allocator's free lists scattered for the next fill.
    """
    ordered = list(items)
    if utf8 is not None:
        sort_by_utf8(ordered, utf8)
    else:
        ordered.sort(key=record_sort_key(kinds))
    return ordered


def sampled_size(keys: list[str]) -> int:
    """About how many characters ``keys`` hold, from 64 of them at most:
    a spill of a million words must not pay a call per key for it."""
    step = max(1, len(keys) // 64)
    return sum(map(len, keys[::step])) * step


def _refuse_nan_keys(keys: list[Any], kinds: list[str]) -> None:
    """A spill's keys hold no NaN (see keys.NAN_REFUSED); only numbers can."""
    if "num" in kinds and find_nan(keys):
        raise RecordTypeError(f"map yielded a NaN key: {NAN_REFUSED}")


def _check_keys(keys: list[Any], job: Job) -> None:
    """Refuse a key of a type no record may carry (a list, a set...), with
    its type named: the pair buffer holds any object until it spills."""
    try:
        for key in keys:
            total_order(key)
    except TypeError as e:
        # A step without a map shuffles the pairs of the step before: the
        # message blamed the user's only map, which yielded str keys.
        who = ("the step before this one (this step has no map: the pairs that step's reduce "
               "yielded are shuffled as they are)" if job.map is identity_map else "map")
        raise RecordTypeError(
            f"{who} must yield (key, value) pairs whose key is str, bytes, int, float, "
            f"bool, None or a tuple of these ({e})") from None


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes at ``offset`` of file ``src`` to the end of
    ``dst``, in the kernel."""
    while length:
        n = os.copy_file_range(src, dst, length, offset)
        if n == 0:
            raise OSError(f"a spill ends {length} bytes short of its index")
        offset += n
        length -= n


def _write_sorted_values(folded: bool) -> Callable[[SegmentWriter, list[Any]], None]:
    """Write a partition's (key, values) items, sorted by key, as one
    record per value with each key's values sorted."""

    def write(writer: SegmentWriter, part: list[Any]) -> None:
        # A key's one value needs no sort, only the check that it can be
        # sorted, made a frame's values at once: a call per key took a map
        # of 800,000 distinct words three times as long.
        batch: list[tuple[Any, Any]] = []

        def flush() -> None:
            nonlocal batch
            _check_sortable(list(map(second, batch)))
            writer.write_pairs(batch)
            batch = []

        for key, values in part:
            if folded:
                batch.append((key, values))
            elif len(values) == 1:
                batch.append((key, values[0]))
            else:
                sort_values(values)
                for i in range(0, len(values), FRAME_RECORDS):
                    batch.extend(zip(repeat(key), values[i:i + FRAME_RECORDS]))
                    if len(batch) >= FRAME_RECORDS:
                        flush()
            if len(batch) >= FRAME_RECORDS:
                flush()
        if batch:
            flush()

    return write


def sort_values(values: list[Any]) -> None:
    """Sort one key's values in place, in the order of keys: Python's own
    for one kind of value, the total order for a mix."""
    with _sortable():
        kinds = _checked_kinds(values)
        if len(kinds) == 1 and kinds != ["other"]:
            values.sort()
        else:
            values.sort(key=total_order)


def _check_sortable(values: list[Any]) -> None:
    """Refuse, as ``sort_values`` would, a value it could not sort."""
    with _sortable():
        if "other" in _checked_kinds(values):
            for value in values:
                total_order(value)


def _checked_kinds(values: list[Any]) -> list[str]:
    kinds = kinds_of(values)
    if "num" in kinds and find_nan(values):
        raise TypeError(NAN_REFUSED)
    return kinds


@contextlib.contextmanager
def _sortable() -> Iterator[None]:
    try:
        yield
    except TypeError as e:
        raise RecordTypeError(
            f"sort_values sorts values in the order of keys: they must be str, bytes, "
            f"int, float, bool, None or tuples of these ({e})") from None


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def next_limit(limit: int, base: int, rss: int, budget: int = MEMORY_BUDGET) -> int:
    """The buffer size after a full buffer, given the memory now in use."""
    if not rss:
        return limit
    if rss < budget // 2 and limit < base * _MAX_GROWTH:
        return limit * 2
    if rss > budget:
        return max(base, limit // 2)
    return limit


def _counting_lines(chunks: Iterable[tuple[int, Any]], tally: list[int]) -> Iterator[tuple[int, Any]]:
    """Chunks (str, or bytes) as they come, counting their lines for the
    input counter."""
    newline = None
    for offset, text in chunks:
        if newline is None:
            newline = b"\n" if type(text) is bytes else "\n"
        tally[0] += text.count(newline) + (not text.endswith(newline))
        yield offset, text


def _encoding(job: Job) -> str | None:
    """How a map decodes its input: not at all with ``input_bytes``."""
    return None if job.input_bytes else "utf-8"


#: Pairs of map_split handed to the hot loops at a time.
SPLIT_BATCH = 4096

#: Text map_split gets at a time. Small, so that a chunk, its decoded text
#: and the words split from it stay in the CPU cache while the user's code
#: counts them: a word count's map runs 17-20% faster than with 4 MB chunks
#: (one map alone or two side by side; 16-96 KB all measured alike).
#: map_chunk keeps read_chunks' few MB: each of its chunks yields its own
#: pairs, so smaller chunks would mean more of them.
SPLIT_CHUNK_BYTES = 64 << 10


def _batches(pairs: Iterable[tuple[Any, Any]], who: str = "map_split"
             ) -> Iterator[list[tuple[Any, Any]]]:
    try:
        it = iter(pairs)
    except TypeError:
        raise RecordTypeError(
            f"{who} must return or yield (key, value) pairs, not "
            f"{type(pairs).__name__}") from None
    while batch := list(islice(it, SPLIT_BATCH)):
        yield batch


def _distinct(pairs: Any) -> Mapping[Any, Any] | None:
    """The dict behind a ``map_split`` result that is a dict's ``items()``,
    whose keys are distinct by construction; else None. (A dict returned
    as it is stays what it always was, an iterable of its keys.)"""
    if type(pairs) is _DICT_ITEMS:
        return pairs.mapping
    return None


_DICT_ITEMS: Any = type({}.items())


def _pairs_of_batch(_: Any, batch: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return batch


Phase = tuple[Iterable[tuple[Any, Any]], Callable[..., Any]]


def _hook_batches(hook: Callable[[], Any], tally: list[int]
                  ) -> Iterator[tuple[Callable[[], Any], list[tuple[Any, Any]]]]:
    """A hook's pairs as records of SPLIT_BATCH pairs, counted in ``tally``:
    the buffer may spill between them, as between a map's records. One
    record of them all, a map_final of an in-mapper combining's million
    keys (or a streaming command's output once its input ended) was held
    whole: gigabytes."""
    for batch in _batches(call_hook(hook), _hook_name(hook)):
        tally[0] += 1
        yield hook, batch


def _phases(job: Job, records: Iterable[tuple[Any, Any]], mapfn: Callable[..., Any],
            tally: list[int]) -> list[Phase]:
    """The records and the function that turns each into pairs: the map's,
    with the job's hooks before and after them (their records counted in
    ``tally``)."""
    phases: list[Phase] = []
    if job.map_init is not None:
        phases.append((_hook_batches(job.map_init, tally), _pairs_of_batch))
    phases.append((records, mapfn))
    if job.map_final is not None:
        phases.append((_hook_batches(job.map_final, tally), _pairs_of_batch))
    return phases


class _Fill:
    """When a map's buffer is full: at ``limit`` values, or at once when the
    process is over its memory budget and has grown since the buffer was
    last emptied (or the map began). Large values fill the budget long
    before the count: the memory is looked at every few values (MIN_PROBE
    after a spill, then twice as many each time up to MEMORY_PROBE, but no
    more than grew it by about PROBE_GROWTH so far), and the
    count a buffer held when over budget is the most it holds from then on.
    (Every MEMORY_PROBE values, 5 KB values made a buffer of 320 MB.)

    The growth matters: a process keeps the memory of a spilled buffer (the
    allocator's arenas) and refills it without growing, so a resident size
    still over budget right after a spill said nothing about the next
    buffer, and spilled it every MEMORY_PROBE values (69 spills of a 500 MB
    map, too many to keep apart, merged again)."""

    def __init__(self, buffer_records: int) -> None:
        self.limit = self.floor = buffer_records
        #: The count at which to call ``due`` next.
        self.look = self._step = min(buffer_records, MIN_PROBE)
        # Resident bytes when the buffer was last emptied (or the map began:
        # a zygote's child starts with its parent's memory).
        self._emptied_at = resident_bytes()

    def due(self, buffered: int) -> int:
        """0 while the buffer may take more; else the limit it is full at."""
        if buffered >= self.limit:
            return self.limit
        rss = resident_bytes()
        if rss > MEMORY_BUDGET and rss > self._emptied_at + MEMORY_SLACK:
            self.floor = buffered
            return buffered
        # At most twice the last step: memory a spill freed is taken again
        # before the resident size grows.
        grown = rss - self._emptied_at
        step = min(2 * self._step, MEMORY_PROBE)
        if grown > 0:
            step = max(MIN_PROBE, min(step, PROBE_GROWTH * buffered // grown))
        self._step = step
        self.look = min(self.limit, buffered + step)
        return 0

    def emptied(self, limit: int) -> None:
        """The buffer, full at ``limit`` (from ``due``), was emptied."""
        self._emptied_at = rss = resident_bytes()
        if limit == self.limit:
            self.limit = next_limit(limit, self.floor, rss)
        else:
            self.limit = limit
        self.look = self._step = min(self.limit, MIN_PROBE)


def _group_loop(phases: list[Phase], buffer: MapOutputBuffer, buffer_records: int) -> int:
    """The hot loop with a combiner: group each map output value under its
    key; returns the number of records read (hooks' included)."""
    groups: dict[Any, list[Any]] = {}
    get = groups.get
    buffered = 0
    in_records = 0
    fill = _Fill(buffer_records)
    look = fill.look
    for records, mapfn in phases:
        for key, value in records:
            in_records += 1
            for k, v in mapfn(key, value):
                vs = get(k)
                if vs is None:
                    groups[k] = [v]
                else:
                    vs.append(v)
                buffered += 1
            if buffered >= look:
                limit = fill.due(buffered)
                if limit:
                    groups = buffer.full(groups, buffered, limit)
                    get = groups.get
                    buffered = 0
                    fill.emptied(limit)
                look = fill.look
    buffer.full(groups, buffered, 0)
    return in_records


def _pair_loop(phases: list[Phase], buffer: MapOutputBuffer, buffer_records: int) -> int:
    """The hot loop without a combiner: each pair as it comes, into a list
    sorted once per spill (a dict of one-element lists costs about three
    times as much per pair); returns the number of records read."""
    pairs: list[tuple[Any, Any]] = []
    append = pairs.append
    in_records = 0
    fill = _Fill(buffer_records)
    look = fill.look
    for records, mapfn in phases:
        for key, value in records:
            in_records += 1
            for k, v in mapfn(key, value):
                append((k, v))
            if len(pairs) >= look:
                limit = fill.due(len(pairs))
                if limit:
                    buffer.spill_pairs(pairs)
                    pairs = []
                    append = pairs.append
                    fill.emptied(limit)
                look = fill.look
    buffer.spill_pairs(pairs)
    return in_records


def _fold_loop(phases: list[Phase], combiner: FoldCombiner, buffer: MapOutputBuffer,
               buffer_records: int) -> int:
    """The hot loop for a folding combiner: each value joins its key's
    running total at once, so the buffer holds one value per distinct key
    and spills only when the distinct keys fill it (or the memory: a
    map_final yielding the million keys of the map's own Counter)."""
    partial: dict[Any, Any] = {}
    get = partial.get
    produced = 0
    in_records = 0
    op = combiner.op
    missing = _MISSING
    fill = _Fill(buffer_records)
    look = fill.look
    for records, mapfn in phases:
        for key, value in records:
            in_records += 1
            # The pairs are counted by enumerate, in C: ``produced += 1``
            # per pair was a tenth of a word count's loop.
            n = 0
            if op is operator.add:
                for n, (k, v) in enumerate(mapfn(key, value), 1):
                    partial[k] = get(k, 0) + v
            else:
                for n, (k, v) in enumerate(mapfn(key, value), 1):
                    old = get(k, missing)
                    partial[k] = v if old is missing else op(old, v)
            produced += n
            if len(partial) >= look:
                limit = fill.due(len(partial))
                if limit:
                    buffer.full_folded(partial, produced)
                    partial = {}
                    get = partial.get
                    produced = 0
                    fill.emptied(limit)
                look = fill.look
    buffer.full_folded(partial, produced)
    return in_records


_MISSING = object()
_FOLD_CODE = _fold_loop.__code__
_DRIVER_CODE = frozenset({_group_loop.__code__, _pair_loop.__code__, _FOLD_CODE})


def run_map(
    job: Job,
    split: Split,
    num_partitions: int,
    data_path: str,
    counters: Counters,
    buffer_records: int = DEFAULT_BUFFER_RECORDS,
    codec: int = CODEC_MSGPACK,
    spill_dir: str | None = None,
    pack: BinaryIO | None = None,
) -> MapOutput:
    """Run one map task over ``split``; its output goes to ``data_path``
    (or is appended to ``pack``, if small), its spills to ``spill_dir``
    (by default ``data_path``'s directory)."""
    buffer = MapOutputBuffer(job, num_partitions, spill_dir or os.path.dirname(data_path),
                             counters, codec, pack)
    lines, hook_records = [0], [0]
    hooks = (job.map_init is not None) + (job.map_final is not None)
    if job.map_split is not None and not hooks:
        pairs = job.map_split(_split_chunks(job, split, lines))
        distinct = _distinct(pairs)
        if distinct is not None:
            buffer.spill_distinct(distinct, buffer_records)
            return _finish(buffer, split, lines[0], counters, data_path)
        phases: list[Phase] = [(_split_batches(lambda: pairs), _pairs_of_batch)]
    else:
        phases = _phases(job, *_map_input(job, split, lines), hook_records)
    try:
        if isinstance(job.combine, FoldCombiner):
            in_records = _fold_loop(phases, job.combine, buffer, buffer_records)
        elif job.combine is None and not job.sort_values:
            in_records = _pair_loop(phases, buffer, buffer_records)
        else:
            in_records = _group_loop(phases, buffer, buffer_records)
    except (TypeError, ValueError) as e:
        if _raised_by_driver(e):
            if isinstance(job.combine, FoldCombiner):
                refused = _refused_values(e, job.combine)
                if refused is not None:
                    raise refused from None
            raise _bad_output(e) from None
        raise
    return _finish(buffer, split,
                   in_records - hook_records[0] if job.map is not None else lines[0],
                   counters, data_path)


def _map_input(job: Job, split: Split, lines: list[int]
               ) -> tuple[Iterable[tuple[Any, Any]], Callable[..., Any]]:
    """The records a map task calls its function with, and that function."""
    errors, encoding = job.encoding_errors, _encoding(job)
    if job.map_split is not None:
        map_split = job.map_split
        return _split_batches(lambda: map_split(_split_chunks(job, split, lines))), _pairs_of_batch
    if job.map_chunk is not None:
        return _counting_lines(read_chunks(split, encoding=encoding, errors=errors),
                               lines), job.map_chunk
    assert job.map is not None
    return job.reader(split, encoding, errors), job.map


def _split_chunks(job: Job, split: Split, lines: list[int]) -> Iterator[tuple[int, Any]]:
    """The chunks of text a ``map_split`` is given, their lines counted."""
    return _counting_lines(read_chunks(split, SPLIT_CHUNK_BYTES, _encoding(job),
                                       job.encoding_errors), lines)


def _split_batches(pairs: Callable[[], Iterable[tuple[Any, Any]]]
                   ) -> Iterator[tuple[None, list[tuple[Any, Any]]]]:
    """The pairs of a ``map_split`` as records of batches, between which the
    loops check the buffer. ``pairs`` calls it when its phase comes: after
    map_init, which a map_split that returns its pairs (a plain function)
    ran before, its state not yet made."""
    for batch in _batches(pairs()):
        yield None, batch


def run_map_only(job: Job, split: Split, write: Callable[[Any, Any], None],
                 counters: Counters) -> None:
    """A map of a map-only step: its pairs go to ``write`` as they come,
    with no buffer, sort or shuffle."""
    lines, hook_records = [0], [0]
    in_records = produced = 0
    for records, mapfn in _phases(job, *_map_input(job, split, lines), hook_records):
        named = None if mapfn is _pairs_of_batch else _who(mapfn, None)
        for key, value in records:
            in_records += 1
            produced += write_pairs(mapfn(key, value), write, named or _who(mapfn, key))
    counters.incr(FRAMEWORK, "map input records",
                  in_records - hook_records[0] if job.map is not None else lines[0])
    counters.incr(FRAMEWORK, "map input bytes", split.length)
    counters.incr(FRAMEWORK, "map output records", produced)


def _finish(buffer: MapOutputBuffer, split: Split, in_records: int, counters: Counters,
            data_path: str) -> MapOutput:
    counters.incr(FRAMEWORK, "map input records", in_records)
    counters.incr(FRAMEWORK, "map input bytes", split.length)
    counters.incr(FRAMEWORK, "map output records", buffer.output_records)
    return buffer.finish(data_path)
