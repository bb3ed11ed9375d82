"""Unit tests for pytxmr.merge: merging sorted runs and grouping equal keys."""

from __future__ import annotations

import collections
import os
import tempfile
from typing import Any, Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr.keys import kinds_of, record_sort_key, total_order
from pytxmr.merge import (
    RunRef,
    group_values,
    merge_runs,
    recombined,
    reduce_run_count,
)
from pytxmr.records import CODEC_LZ4, CODEC_MSGPACK, SegmentWriter
from strategies import keys as any_keys

Record = tuple[Any, list[Any]]


def write_runs(directory: str, runs: list[list[Record]], frame_records: int = 3) -> list[RunRef]:
    """Each run as a segment of one shared file, behind some junk, as a map's data file holds them."""
    path = os.path.join(directory, "runs.data")
    refs = []
    with open(path, "wb") as f:
        w = SegmentWriter(f, frame_records=frame_records)
        f.write(b"junk")
        for run in runs:
            start = f.tell()
            before = w.bytes
            w.write(run)
            refs.append((path, start, w.bytes - before))
            f.write(b"x")  # segments need not be adjacent
    return refs


def sorted_run(records: list[Record], sort_key: Callable[[Record], Any]) -> list[Record]:
    """A run as a map spill makes it: one record per distinct key, sorted."""
    grouped: dict[Any, list[Any]] = {}
    for k, vs in records:
        grouped.setdefault(k, []).extend(vs)
    return sorted(grouped.items(), key=sort_key)


str_runs = st.lists(
    st.lists(st.tuples(st.text(max_size=3), st.lists(st.integers(), min_size=1, max_size=3)), max_size=12),
    max_size=6,
)
mixed_runs = st.lists(
    st.lists(st.tuples(any_keys, st.lists(st.integers(), min_size=1, max_size=2)), max_size=8),
    max_size=5,
)


def check_sorted_permutation(runs: list[list[Record]]) -> None:
    kinds = kinds_of(k for run in runs for k, _ in run)
    sort_key = record_sort_key(kinds)
    runs = [sorted_run(run, record_sort_key(kinds_of(k for k, _ in run))) for run in runs]
    with tempfile.TemporaryDirectory() as d:
        merged = list(merge_runs(write_runs(d, runs), sort_key))
    order = [total_order(k) for k, _ in merged]
    assert order == sorted(order)
    flat_in = collections.Counter((repr(k), v) for run in runs for k, vs in run for v in vs)
    flat_out = collections.Counter((repr(k), v) for k, vs in merged for v in vs)
    assert flat_in == flat_out
    assert len(merged) == sum(map(len, runs))


@settings(max_examples=100, deadline=None)
@given(str_runs)
def test_merge_of_sorted_str_runs_is_sorted_and_a_permutation(runs: list[list[Record]]) -> None:
    """The reduce side relies on one sorted stream holding exactly the records of every run."""
    check_sorted_permutation(runs)


@settings(max_examples=100, deadline=None)
@given(mixed_runs)
def test_merge_of_runs_of_mixed_kinds_is_sorted_and_a_permutation(runs: list[list[Record]]) -> None:
    """Runs sorted by Python's order (one kind each) and by the total order merge into one order."""
    check_sorted_permutation(runs)


def test_merge_of_one_run_and_of_no_run(tmp_path: Any) -> None:
    """Partitions with a single map output or none at all are common edge cases."""
    assert list(merge_runs([], lambda r: r[0])) == []
    one = write_runs(str(tmp_path), [[("a", [1])]])
    assert list(merge_runs(one, lambda r: r[0])) == [("a", [1])]


def test_a_run_out_of_order_fails_the_merge_instead_of_spinning(tmp_path: Any) -> None:
    """Only a bug writes an unsorted run, but then the reduce must fail, not
    loop for ever (a frame whose keys go down never reaches the bound)."""
    runs = [[("d", [0]), ("b", [0]), ("a", [0])], [("c", [1]), ("e", [1])]]
    with pytest.raises(ValueError, match="not sorted"):
        list(merge_runs(write_runs(str(tmp_path), runs, frame_records=3), lambda r: r[0]))


def test_merge_is_stable_across_runs(tmp_path: Any) -> None:
    """Equal keys come out in run order, which keeps a key's values in map order."""
    runs = [[("a", [0]), ("b", [0])], [("a", [1])], [("a", [2]), ("c", [2])]]
    merged = list(merge_runs(write_runs(str(tmp_path), runs), lambda r: r[0]))
    assert merged == [("a", [0]), ("a", [1]), ("a", [2]), ("b", [0]), ("c", [2])]


def test_group_values_groups_equal_keys_across_runs_in_run_order(tmp_path: Any) -> None:
    """reduce is called once per key, with that key's values from every run, run by run."""
    runs = [
        [("a", [1, 2]), ("c", [3])],
        [("a", [4]), ("b", [5]), ("c", [6, 7])],
        [("b", [8]), ("d", [9])],
    ]
    stream = merge_runs(write_runs(str(tmp_path), runs, frame_records=1), lambda r: r[0])
    got = [(k, list(vs)) for k, vs in group_values(stream)]
    assert got == [("a", [1, 2, 4]), ("b", [5, 8]), ("c", [3, 6, 7]), ("d", [9])]


def test_group_values_groups_keys_python_considers_equal(tmp_path: Any) -> None:
    """1, 1.0 and True are one key: their values reach one reduce call."""
    sort_key = record_sort_key(["num", "str"])
    runs = [[(1, ["int"]), ("x", [0])], [(1.0, ["float"])], [(True, ["bool"]), ("x", [1])]]
    merged = merge_runs(write_runs(str(tmp_path), runs), sort_key)
    got = [(k, list(vs)) for k, vs in group_values(merged)]
    assert got == [(1, ["int", "float", "bool"]), ("x", [0, 1])]


def test_group_values_streams_values_lazily() -> None:
    """A key with millions of values must not be materialised: values are pulled as reduce reads them."""
    pulled = []

    def records() -> Iterator[Record]:
        for i in range(1000):
            pulled.append(i)
            yield ("k", [i])
        yield ("z", [0])

    groups = group_values(records())
    key, values = next(groups)
    assert key == "k"
    assert not isinstance(values, (list, tuple)) and iter(values) is values
    assert len(pulled) <= 2  # groupby looks one record ahead at most
    assert next(values) == 0
    assert sum(values) == sum(range(1, 1000))
    assert [(k, list(vs)) for k, vs in groups] == [("z", [0])]


def test_group_values_of_empty_stream() -> None:
    """An empty partition yields no reduce call at all."""
    assert list(group_values(iter([]))) == []


def test_recombined_combines_only_keys_of_several_records(tmp_path: Any) -> None:
    """A key's lone record passes as it is, its combiner not called (a
    run's records were combined as it was written); a key of several
    records gets one call with all their values, in run order."""
    runs = [[("a", [1]), ("b", [2, 3]), ("c", [4])], [("a", [5]), ("d", [6])], [("a", [7])]]
    calls: list[tuple[str, list[int]]] = []

    def combine(key: str, values: Iterator[int]) -> list[list[int]]:
        calls.append((key, list(values)))
        return [[sum(calls[-1][1])]]

    merged = merge_runs(write_runs(str(tmp_path), runs, frame_records=1), lambda r: r[0])
    assert list(recombined(merged, combine)) == [("a", [13]), ("b", [2, 3]), ("c", [4]),
                                                ("d", [6])]
    assert calls == [("a", [1, 5, 7])]


@settings(max_examples=50, deadline=None)
@given(str_runs)
def test_recombined_totals_are_a_counter_s(runs: list[list[Record]]) -> None:
    """Summed by a combiner, the merged runs give each key the total that
    collections.Counter gives, in one record a key."""
    sort_key = record_sort_key(["str"])
    runs = [sorted_run(run, sort_key) for run in runs]
    expected: collections.Counter[str] = collections.Counter()
    for run in runs:
        for k, vs in run:
            expected[k] += sum(vs)
    with tempfile.TemporaryDirectory() as d:
        merged = merge_runs(write_runs(d, runs), sort_key)
        got = list(recombined(merged, lambda key, values: [[sum(values)]]))
    assert {k: sum(vs) for k, vs in got} == dict(expected)
    assert len(got) == len(expected)


def multiset_groups(records: Iterator[Record]) -> list[tuple[Any, list[Any]]]:
    return [(k, sorted(vs)) for k, vs in group_values(records)]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.lists(st.integers(), min_size=1, max_size=3)), max_size=10),
        min_size=10,
        max_size=10,
    ),
    st.integers(2, 4),
)
def test_reduce_run_count_with_a_small_factor_gives_the_same_merge(
    runs: list[list[Record]], factor: int
) -> None:
    """Merging in passes (to bound open files) must not change what reduce sees."""
    runs = [sorted_run(r, lambda rec: rec[0]) for r in runs]
    sort_key = record_sort_key(["num"])
    with tempfile.TemporaryDirectory() as d:
        refs = write_runs(d, runs)
        expected = multiset_groups(merge_runs(refs, sort_key))
        tmp = os.path.join(d, "tmp")
        os.mkdir(tmp)
        fewer = reduce_run_count(refs, sort_key, tmp, factor=factor)
        assert len(fewer) <= factor
        assert all(r in refs or r[0].startswith(tmp) for r in fewer)
        got = multiset_groups(merge_runs(fewer, sort_key))
    assert got == expected


def test_reduce_run_count_with_factor_3_over_10_runs(tmp_path: Any) -> None:
    """The concrete case: 10 runs, at most 3 at a time, same keys and values in the end."""
    runs = [[(k, [f"r{i}k{k}"]) for k in range(i, 40, 3)] for i in range(10)]
    refs = write_runs(str(tmp_path), runs)
    sort_key = record_sort_key(["num"])
    expected = multiset_groups(merge_runs(refs, sort_key))
    fewer = reduce_run_count(refs, sort_key, str(tmp_path), factor=3)
    assert 1 <= len(fewer) <= 3
    merged = list(merge_runs(fewer, sort_key))
    assert [k for k, _ in merged] == sorted(k for k, _ in merged)
    assert multiset_groups(iter(merged)) == expected
    assert sum(len(vs) for _, vs in expected) == sum(len(r) for r in runs)


def test_reduce_run_count_leaves_few_runs_alone(tmp_path: Any) -> None:
    """Below the factor nothing is rewritten (no extra disk pass)."""
    refs = write_runs(str(tmp_path), [[("a", [1])], [("b", [2])]])
    assert reduce_run_count(refs, record_sort_key(["str"]), str(tmp_path), factor=2) == refs
    assert sorted(os.listdir(tmp_path)) == ["runs.data"]


@pytest.mark.parametrize("codec", [CODEC_MSGPACK, CODEC_LZ4], ids=["plain", "lz4"])
def test_runs_of_big_frames_are_merged_fewer_at_a_time(tmp_path: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       codec: int) -> None:
    """A merge holds a frame of each run: 64 runs of 4 MB values took a
    reduce to 590 MB (an LZ4 frame's size is its decompressed one: stored,
    it is 250 times smaller). Within MERGE_MEMORY, the same merge in the
    end; and each pass's file goes once merged again (at a factor of 2,
    they piled up)."""
    import pytxmr.merge as merge

    monkeypatch.setattr(merge, "MERGE_MEMORY", 30_000)
    refs = []
    with open(tmp_path / "runs.data", "wb") as f:
        w = SegmentWriter(f, frame_records=1, codec=codec)
        for i in range(8):
            start, before = f.tell(), w.bytes
            w.write([(k, ["v" * 10_000]) for k in range(i, 16, 8)])
            refs.append((str(tmp_path / "runs.data"), start, w.bytes - before))
    sort_key = record_sort_key(["num"])
    expected = multiset_groups(merge_runs(refs, sort_key))
    passes = tmp_path / "passes"
    passes.mkdir()
    fewer = reduce_run_count(refs, sort_key, str(passes), factor=64)
    assert len(fewer) <= 3, fewer  # 30,000 bytes hold three frames of 10 KB
    assert multiset_groups(merge_runs(fewer, sort_key)) == expected
    assert sorted(p.name for p in passes.iterdir()) == sorted(
        os.path.basename(p) for p, _, _ in fewer if p.startswith(str(passes)))
    monkeypatch.setattr(merge, "MERGE_MEMORY", 10_000)  # one frame at a time: a factor of 2
    more = tmp_path / "more"
    more.mkdir()
    two = reduce_run_count(refs, sort_key, str(more), factor=64)
    assert len(two) == 2
    assert multiset_groups(merge_runs(two, sort_key)) == expected
    assert len(list(more.iterdir())) <= 2
