"""Unit tests for a sort's fast path: the pair buffer, range partitions as
data, spills kept apart as runs and the identity reduce, each against an
independent reference (sorted(), collections.Counter) and against the
general path it replaces."""

from __future__ import annotations

import bisect
import collections
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr import mapper, reducers
from pytxmr.counters import FRAMEWORK, Counters
from pytxmr.jobmodule import load_module, resolve
from pytxmr.mapper import run_map
from pytxmr.partition import RangePartition
from pytxmr.records import CODEC_LZ4, CODEC_MSGPACK, FRAME_RECORDS, segment_runs
from pytxmr.reducer import run_reduce
from pytxmr.splits import compute_splits
from strategies import texts

CUTS = ["F", "P"]

#: The sort of examples/total_order_sort.py, with fixed cut points.
SORT = f"""
import bisect
from pytxmr import reducers
from pytxmr.partition import RangePartition

def map(offset, line):
    yield line[:3], line[4:]

partition = RangePartition(lambda n: {CUTS!r})
reduce = reducers.identity
"""
#: The same job as plain functions: the general path.
SORT_BY_CALLS = SORT.replace("RangePartition(lambda n: {0!r})".format(CUTS),
                             "lambda key, n: bisect.bisect_right({0!r}, key)".format(CUTS))
SORT_BY_CALLS += """
def reduce(key, values):
    for value in values:
        yield key, value
"""


def make_records(path: Path, n: int = 3000, seed: int = 1) -> list[str]:
    """Lines ``KEY VALUE``: 3-letter keys, many repeated, unique values."""
    rng = random.Random(seed)
    keys = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3)) for _ in range(400)]
    lines = [f"{rng.choice(keys)} v{i:05d}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def run_job(tmp_path: Path, source: str, inputs: list[str], *, buffer_records: int,
            codec: int = CODEC_MSGPACK, reducers_: int = 3) -> tuple[list[str], Counters, list[Any]]:
    """Map every split and reduce every partition in this process; the
    part files, the counters and the maps' outputs."""
    job = resolve(load_module(textwrap.dedent(source), str(tmp_path / "job.py")))
    counters = Counters()
    work = tmp_path / "work"
    work.mkdir()
    outputs = []
    for split in compute_splits(inputs, 1 << 20):
        outputs.append(run_map(job, split, reducers_, str(work / f"map-{split.index}.data"),
                               counters, buffer_records=buffer_records, codec=codec))
    kinds = sorted({k for out in outputs for k in out.kinds})
    parts = []
    for p in range(reducers_):
        runs = [(out.data_path, *out.table[p][:2]) for out in outputs]
        part = str(tmp_path / f"part-{p}")
        run_reduce(job, runs, kinds, part, str(work), counters)
        parts.append(part)
    return parts, counters, outputs


def check_sorted(parts: list[str], lines: list[str]) -> None:
    """The parts read in order are the input sorted by key, every line once,
    each part in its range."""
    got = [Path(p).read_text().splitlines() for p in parts]
    flat = [line.split("\t") for part in got for line in part]
    assert [k for k, _ in flat] == sorted(line[:3] for line in lines)
    assert collections.Counter(f"{k} {v}" for k, v in flat) == collections.Counter(lines)
    for i, part in enumerate(got):
        assert {bisect.bisect_right(CUTS, line[:3]) for line in part} <= {i}


@pytest.mark.parametrize("source, reducers_", [(SORT, 3), (SORT_BY_CALLS, 3), (SORT_BY_CALLS, 1)],
                         ids=["ranges", "scattered", "one-partition"])
def test_a_spill_leaves_the_buffer_in_the_order_its_pairs_were_made(
        tmp_path: Path, source: str, reducers_: int) -> None:
    """A spill sorts a copy: the buffer then frees its pairs in the order
    they were made, their order in the heap (see ``mapper._sorted``: three
    times faster than freeing them in sorted order)."""
    job = resolve(load_module(textwrap.dedent(source), str(tmp_path / "job.py")))
    buffer = mapper.MapOutputBuffer(job, reducers_, str(tmp_path), Counters())
    pairs = [(line[:3], line[4:]) for line in make_records(tmp_path / "in.txt", 500)]
    made = list(pairs)
    assert made != sorted(made)
    buffer.spill_pairs(pairs)
    assert pairs == made
    assert buffer.output_records == len(made)


@pytest.mark.parametrize("buffer_records, spills", [(10_000, 1), (700, 5), (100, 30)],
                         ids=["one-spill", "spills-apart", "spills-merged"])
@pytest.mark.parametrize("codec", [CODEC_MSGPACK, CODEC_LZ4], ids=["plain", "lz4"])
def test_a_sort_by_range_partition_matches_sorted(tmp_path: Path, buffer_records: int,
                                                  spills: int, codec: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One spill, spills kept apart as runs (up to SPILLS_KEPT_APART) and
    spills merged give the sorted input, and the same part files as the
    job written as plain functions."""
    if codec == CODEC_LZ4:
        pytest.importorskip("lz4")
    monkeypatch.setattr(mapper, "resident_bytes", lambda: 0)  # a buffer that does not grow
    lines = make_records(tmp_path / "in.txt")
    (tmp_path / "fast").mkdir()
    fast, counters, outputs = run_job(tmp_path / "fast", SORT, [str(tmp_path / "in.txt")],
                                      buffer_records=buffer_records, codec=codec)
    check_sorted(fast, lines)
    out, = outputs
    runs = segment_runs(out.data_path, *out.table[1][:2])
    assert len(runs) == (spills if 1 < spills <= mapper.SPILLS_KEPT_APART else 1)
    assert sum(records for _, _, records in out.table) == len(lines)
    (tmp_path / "calls").mkdir()
    slow, slow_counters, _ = run_job(tmp_path / "calls", SORT_BY_CALLS,
                                     [str(tmp_path / "in.txt")], buffer_records=buffer_records,
                                     codec=codec)
    for a, b in zip(fast, slow):
        assert Path(a).read_text() == Path(b).read_text()
    for name in ("map output records", "reduce input records", "reduce input groups",
                 "reduce output records", "output bytes"):
        assert counters.get(FRAMEWORK, name) == slow_counters.get(FRAMEWORK, name), name
    assert counters.get(FRAMEWORK, "reduce input groups") == len({line[:3] for line in lines})


def test_spills_with_a_combiner_are_merged_into_one_run(tmp_path: Path) -> None:
    """A combiner shrinks what it merges: those spills are merged, not kept apart."""
    path = tmp_path / "in.txt"
    lines = make_records(path)
    source = """
        def map(offset, line):
            yield line[:3], 1
        def combine(key, values):
            yield key, sum(values)
        reduce = combine
    """
    parts, _, outputs = run_job(tmp_path, source, [str(path)], buffer_records=300)
    out, = outputs
    for offset, length, _ in out.table:
        assert len(segment_runs(out.data_path, offset, length)) <= 1
    got = {k: int(v) for part in parts for k, v in
           (line.split("\t") for line in Path(part).read_text().splitlines())}
    assert got == collections.Counter(line[:3] for line in lines)


def test_identity_reduce_keeps_the_first_of_equal_keys(tmp_path: Path) -> None:
    """1, 1.0 and True are one key: written straight, the group's first key
    stands for all, as the generator's groupby gives."""
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nc\n")
    source = """
        from pytxmr import reducers
        def map(offset, line):
            yield {"a": 1, "b": 1.0, "c": True}[line], line
        reduce = reducers.identity
    """
    parts, counters, _ = run_job(tmp_path, source, [str(path)], buffer_records=10, reducers_=1)
    lines = Path(parts[0]).read_text().splitlines()
    assert len({line.split("\t")[0] for line in lines}) == 1
    assert sorted(line.split("\t")[1] for line in lines) == ["a", "b", "c"]
    assert counters.get(FRAMEWORK, "reduce input groups") == 1


def test_identity_is_the_generator_it_names() -> None:
    assert list(reducers.identity("k", iter([1, 2]))) == [("k", 1), ("k", 2)]


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, max_size=60), st.lists(texts, min_size=0, max_size=5))
def test_split_sorted_gives_each_key_the_partition_of_a_call(keys: list[str],
                                                             cuts: list[str]) -> None:
    """Cutting the sorted records at the cut points puts each where
    bisect_right(cuts, key) does, in order."""
    cuts.sort()
    n = len(cuts) + 1
    part = RangePartition(lambda _: cuts)
    records = sorted((k, i) for i, k in enumerate(keys))
    parts = part.split_sorted(records, n)
    assert len(parts) == n
    assert [r for p in parts for r in p] == records
    for i, p in enumerate(parts):
        assert all(part(k, n) == i for k, _ in p)


@pytest.mark.parametrize("cuts, error", [(["b", "a"], "not sorted"), (["a"], "2 are needed")])
def test_bad_cut_points_fail_the_map(cuts: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RangePartition(lambda n: cuts).split_sorted([("a", 1)], 3)


@pytest.mark.parametrize("key, hint", [(b"alpha", "input_bytes"), (5, "keys' type")])
def test_cut_points_of_another_type_than_the_keys_say_so(key: object, hint: str) -> None:
    """A job whose map yields bytes (input_bytes) but whose cuts are str:
    the error names the key, the cuts and the way out, on both paths."""
    part = RangePartition(lambda n: ["beta", "gamma"])
    with pytest.raises(TypeError, match=f"{key!r} .*cannot be compared.*{hint}"):
        part.split_sorted([(key, 1)], 3)
    with pytest.raises(TypeError, match=f"{key!r} .*cannot be compared.*{hint}"):
        part(key, 3)


def test_an_incomparable_key_is_shown_short() -> None:
    """A huge key (or an int beyond Python's 4300 digits) and many cuts: the
    error that each failed attempt keeps stays short."""
    part = RangePartition(lambda n: [str(i) for i in range(n - 1)])
    for key in (b"x" * 1_000_000, 7 ** 6000):
        with pytest.raises(TypeError, match=r"cannot be compared.*\(99 in all\)") as info:
            part(key, 100)
        assert len(str(info.value)) < 400


def test_identity_reduce_writes_every_value_of_records_of_many(tmp_path: Path) -> None:
    """After a combiner, records hold many values each: every one is written,
    under its key, in key order (against Counter and sorted())."""
    path = tmp_path / "in.txt"
    lines = make_records(path, n=2000)
    source = """
        from pytxmr import reducers
        def map(offset, line):
            yield line[:3], line[4:]
        def combine(key, values):
            for value in values:
                yield key, value
        reduce = reducers.identity
    """
    parts, counters, _ = run_job(tmp_path, source, [str(path)], buffer_records=500, reducers_=2)
    got = [line.replace("\t", " ") for part in parts for line in Path(part).read_text().splitlines()]
    assert collections.Counter(got) == collections.Counter(lines)
    for part in parts:
        keys = [line[:3] for line in Path(part).read_text().splitlines()]
        assert keys == sorted(keys)
    assert counters.get(FRAMEWORK, "reduce output records") == len(lines)
    assert counters.get(FRAMEWORK, "reduce input groups") == len({line[:3] for line in lines})


def test_identity_reduce_writes_values_of_any_type_as_the_generator_does(tmp_path: Path) -> None:
    """Str keys with values that are not str (ints, None, tuples, text with
    tabs): the lines made inline and by text_line are the generator's."""
    path = tmp_path / "in.txt"
    make_records(path, n=1500)
    body = (
        "def map(offset, line):\n"
        "    i = int(line[5:])\n"
        "    yield line[:3], [line[4:], i, None, (i, 'a\\tb'), {'k': i}, 2.5][i % 6]\n")
    fast = body + "\nfrom pytxmr import reducers\nreduce = reducers.identity\n"
    slow = body + "\ndef reduce(key, values):\n    for v in values:\n        yield key, v\n"
    (tmp_path / "fast").mkdir()
    (tmp_path / "slow").mkdir()
    a, _, _ = run_job(tmp_path / "fast", fast, [str(path)], buffer_records=400)
    b, _, _ = run_job(tmp_path / "slow", slow, [str(path)], buffer_records=400)
    for x, y in zip(a, b):
        assert Path(x).read_text() == Path(y).read_text()
    assert sum(len(Path(x).read_text().splitlines()) for x in a) == 1500


def test_identity_reduce_switches_from_pair_lines_to_its_loop_mid_partition(
        tmp_path: Path) -> None:
    """Frames of one str value a record are written a frame at a time by
    one comprehension; from the first frame that is not (here: int values
    from key "M" on), the loop takes over. Lines and counters are still
    the generator's, groups spanning frames counted once (against a set)."""
    path = tmp_path / "in.txt"
    lines = make_records(path, n=20_000)
    body = ("def map(offset, line):\n"
            "    yield line[:3], line[4:] if line < 'M' else int(line[5:])\n")
    fast = body + "\nfrom pytxmr import reducers\nreduce = reducers.identity\n"
    slow = body + "\ndef reduce(key, values):\n    for v in values:\n        yield key, v\n"
    runs = {}
    for name, source in (("fast", fast), ("slow", slow)):
        (tmp_path / name).mkdir()
        runs[name] = run_job(tmp_path / name, source, [str(path)], buffer_records=10_000,
                             reducers_=1)
    (a,), fast_counters, _ = runs["fast"]
    (b,), slow_counters, _ = runs["slow"]
    assert Path(a).read_text() == Path(b).read_text()
    assert sum(line < "M" for line in lines) > 2 * FRAME_RECORDS  # frames of both kinds
    assert fast_counters.get(FRAMEWORK, "reduce input groups") == len({x[:3] for x in lines})
    for name in ("reduce input groups", "reduce output records", "output bytes"):
        assert fast_counters.get(FRAMEWORK, name) == slow_counters.get(FRAMEWORK, name), name


def test_a_sort_of_lines_writes_the_lines_sorted(tmp_path: Path) -> None:
    """Each line its own key of value None (examples/total_order_sort.py):
    the parts read in order are sorted(lines), duplicates kept; lines of
    both None and str values in one frame are the generator's."""
    path = tmp_path / "in.txt"
    lines = make_records(path, n=6000)
    lines += lines[:500]  # the same lines twice: one key, two values
    path.write_text("\n".join(lines) + "\n")
    source = SORT.replace("yield line[:3], line[4:]", "yield line, None")
    parts, counters, _ = run_job(tmp_path, source, [str(path)], buffer_records=1000)
    got = [Path(p).read_text().splitlines() for p in parts]
    assert [line for part in got for line in part] == sorted(lines)
    for i, part in enumerate(got):
        assert {bisect.bisect_right(CUTS, line) for line in part} <= {i}
    assert counters.get(FRAMEWORK, "reduce input groups") == len(set(lines))
    mixed = SORT.replace("yield line[:3], line[4:]",
                         "yield line[:3], None if line[4:] < 'v03000' else line[4:]")
    slow = SORT_BY_CALLS.replace("yield line[:3], line[4:]",
                                 "yield line[:3], None if line[4:] < 'v03000' else line[4:]")
    texts = {}
    for name, src in (("fast", mixed), ("slow", slow)):
        (tmp_path / name).mkdir()
        parts = run_job(tmp_path / name, src, [str(path)], buffer_records=1000)[0]
        texts[name] = [Path(p).read_text() for p in parts]
    fast = texts["fast"]
    assert fast == texts["slow"]
    assert sum(part.count("\t") for part in fast) == sum(line[4:] >= "v03000" for line in lines)


def test_memory_kept_from_a_spill_does_not_spill_the_next_buffer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process keeps a spilled buffer's memory: still over budget after a
    spill, it fills the next buffer to the count that fitted, unless it grows."""
    rss = [mapper.MEMORY_BUDGET // 2]
    monkeypatch.setattr(mapper, "resident_bytes", lambda: rss[0])
    fill = mapper._Fill(1_000_000)
    assert fill.due(fill.look) == 0
    rss[0] = mapper.MEMORY_BUDGET + 1
    assert fill.due(589_824) == 589_824  # over budget: full at what it holds
    fill.emptied(589_824)
    assert fill.limit == 589_824
    assert fill.due(fill.look) == 0  # as much memory as after the spill: go on
    rss[0] += mapper.MEMORY_SLACK + 1
    assert fill.due(fill.look) == fill.look  # grown over it: full


@pytest.mark.parametrize("reused", [0, 40 << 20], ids=["growing", "memory-reused-first"])
def test_large_values_are_looked_at_before_they_fill_the_memory(
        monkeypatch: pytest.MonkeyPatch, reused: int) -> None:
    """5 KB values: the memory was looked at every MEMORY_PROBE values, so
    a buffer held 320 MB before it spilled. Now the looks come as often as
    the values grow the process, also when it first refills memory a spill
    freed (``reused`` bytes, its resident size flat meanwhile)."""
    value = 5000
    base = 100 << 20
    buffered = [0]
    monkeypatch.setattr(mapper, "resident_bytes",
                        lambda: base + max(0, value * buffered[0] - reused))
    fill = mapper._Fill(1_000_000)
    while True:
        buffered[0] = fill.look
        if fill.due(buffered[0]):
            break
    held = value * buffered[0] - reused
    assert mapper.MEMORY_BUDGET < base + held <= mapper.MEMORY_BUDGET + 2 * mapper.PROBE_GROWTH
