#!/usr/bin/env python3
"""Where a sort's time goes in a pytxmr task, against the least a Python
task could do: one 100 MB map and one reduce, in this process.

    python bench/sort_paths.py RECORDS.txt [--by-calls]   # e.g. bench/terasort.py's 200 MB input

Times (CPU seconds of this process) for bench/terasort.py's records, split
in two halves of the file (two maps, 2 partitions cut at the key "O"):

- ``run_map``: pytxmr's map task (pytxmr.mapper.run_map) of a one-step
  job whose map yields ``(line, None)`` and whose partitioner is
  a ``RangePartition`` of the cut points (``--by-calls``: a ``bisect``
  over them, called per key), the map of examples/total_order_sort.py;
- a prototype of the same map: a list of pairs, one ``list.sort`` by the
  line, the partitions found by bisecting the sorted keys, and frames of
  flat ``[k, v, k, v, ...]`` msgpack (no per-key list, no per-key call);
- ``run_reduce`` of partition 0 (both maps' runs) with the identity reduce
  (``pytxmr.reducers.identity``; ``--by-calls``: a generator), against
  writing the merged records straight to the file (the same output,
  checked byte for byte);
- sorting 1,000,000 records by their keys' UTF-8 (``keys.sort_by_utf8``,
  what a spill does for str keys) against sorting them by the str keys.

A diagnostic for bench/RESULTS.md ("Sort (issue 15)"), not a target; it
uses pytxmr's internals, so it may need updating when they change.
"""

from __future__ import annotations

import bisect
import gc
import os
import shutil
import sys
import tempfile
import time
import types
from itertools import chain
from operator import itemgetter

import msgpack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytxmr.counters import Counters  # noqa: E402
from pytxmr.jobmodule import define  # noqa: E402
from pytxmr.keys import record_sort_key, sort_by_utf8  # noqa: E402
from pytxmr.mapper import run_map  # noqa: E402
from pytxmr.merge import merge_runs  # noqa: E402
from pytxmr.records import FRAME_RECORDS  # noqa: E402
from pytxmr.reducer import run_reduce  # noqa: E402
from pytxmr.splits import Split, read_lines  # noqa: E402

JOB = '''
from pytxmr import reducers
from pytxmr.partition import RangePartition
CUTS = ["O"]
def map(offset, line):
    yield line, None
partition = RangePartition(lambda n: CUTS)
reduce = reducers.identity
'''
#: The same job as plain functions: a call per key, a generator per key.
JOB_BY_CALLS = '''
import bisect
CUTS = ["O"]
def map(offset, line):
    yield line, None
def partition(key, n):
    return bisect.bisect_right(CUTS, key)
def reduce(key, values):
    for value in values:
        yield key, value
'''
CUTS = ["O"]


def cpu() -> float:
    return time.process_time()


def prototype_map(split: Split, path: str) -> dict[str, float]:
    t = [cpu()]
    pairs = [(line, None) for _, line in read_lines(split)]
    t.append(cpu())
    pairs.sort(key=itemgetter(0))
    t.append(cpu())
    keys = list(map(itemgetter(0), pairs))
    bounds = [0] + [bisect.bisect_left(keys, c) for c in CUTS] + [len(keys)]
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, "wb", buffering=1 << 20) as f:
        for a, b in zip(bounds, bounds[1:]):
            for i in range(a, b, FRAME_RECORDS):
                f.write(packer.pack(list(chain.from_iterable(pairs[i:min(b, i + FRAME_RECORDS)]))))
    t.append(cpu())
    del pairs, keys
    t.append(cpu())
    return {"read and pair": t[1] - t[0], "sort": t[2] - t[1],
            "cut, encode, write": t[3] - t[2], "free": t[4] - t[3], "total": t[4] - t[0]}


def main() -> None:
    path = sys.argv[1]
    size = os.path.getsize(path)
    module = types.ModuleType("sortjob")
    module.__file__ = "sortjob.py"
    exec(JOB_BY_CALLS if "--by-calls" in sys.argv[2:] else JOB, module.__dict__)
    job = define(module).steps[0]
    gc.disable()  # as in a task
    work = tempfile.mkdtemp(prefix="sort-paths-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        halves = [Split(0, path, 0, size // 2, False), Split(1, path, size // 2, size, False)]
        runs = []
        for i, split in enumerate(halves):
            out = os.path.join(work, f"map{i}")
            os.makedirs(out)
            t = cpu()
            mo = run_map(job, split, 2, os.path.join(out, "map.data"), Counters())
            if i == 0:
                print(f"map of {split.length / 1e6:.0f} MB: pytxmr run_map {cpu() - t:.2f} CPU s")
            runs.append((mo.data_path, *mo.table[0][:2]))
        proto = prototype_map(halves[0], os.path.join(work, "proto.data"))
        print("  prototype " + f"{proto['total']:.2f} CPU s (" + ", ".join(
            f"{k} {v:.2f}" for k, v in proto.items() if k != "total") + ")")

        part_path, proto_path = os.path.join(work, "part-0"), os.path.join(work, "proto-0")
        t = cpu()
        run_reduce(job, runs, ["str"], part_path, work, Counters())
        reduce_s = cpu() - t
        t = cpu()
        n = 0
        with open(proto_path, "w", buffering=1 << 20) as f:
            batch: list[str] = []
            for key, values in merge_runs(runs, record_sort_key(["str"])):
                for _ in values:
                    batch.append(f"{key}\n")
                if len(batch) >= FRAME_RECORDS:
                    n += len(batch)
                    f.write("".join(batch))
                    batch = []
            n += len(batch)
            f.write("".join(batch))
        direct_s = cpu() - t
        t = cpu()
        sum(1 for _ in merge_runs(runs, record_sort_key(["str"])))
        merge_s = cpu() - t
        with open(part_path, "rb") as a, open(proto_path, "rb") as b:
            assert a.read() == b.read(), "the identity fast path wrote another output"
        print(f"reduce of {n:,} records (2 runs): pytxmr run_reduce {reduce_s:.2f} CPU s; "
              f"merged records written straight {direct_s:.2f} (the merge alone {merge_s:.2f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    items = [(line, [None]) for _, line in islice_lines(path, 1_000_000)]
    a, b = list(items), list(items)
    t = cpu()
    utf8 = [k.encode("utf-8", "surrogatepass") for k, _ in a]
    sort_by_utf8(a, utf8)
    utf8_s = cpu() - t
    t = cpu()
    b.sort(key=itemgetter(0))
    str_s = cpu() - t
    assert a == b
    print(f"sort 1,000,000 records: by UTF-8 bytes (encode included) {utf8_s:.2f} CPU s, "
          f"by str key {str_s:.2f}")


def islice_lines(path: str, n: int):
    from itertools import islice
    return islice(read_lines(Split(0, path, 0, os.path.getsize(path), False)), n)


if __name__ == "__main__":
    main()
