"""Unit tests for pytxmr.keys: the sort order of keys."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr import keys as keys_module
from pytxmr.keys import kinds_of, record_sort_key, sort_by_utf8, total_order
from strategies import floats, integers, keys, texts

numbers = st.one_of(integers, floats, st.booleans())


@st.composite
def same_shape_tuples(draw: st.DrawFn, depth: int = 0) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Two tuples whose elements are pairwise of one kind, so Python can compare them."""
    kinds: list[st.SearchStrategy[Any]] = [texts, st.binary(max_size=6), numbers, st.none()]
    n = draw(st.integers(0, 4))
    a: list[Any] = []
    b: list[Any] = []
    for _ in range(n):
        if depth < 2 and draw(st.booleans()):
            x, y = draw(same_shape_tuples(depth + 1))
        else:
            kind = draw(st.sampled_from(kinds))
            x, y = draw(kind), draw(kind)
            if draw(st.integers(0, 3)) == 0:
                y = x  # equal elements are what make tuple comparison go deeper
        a.append(x)
        b.append(y)
    # A prefix of a tuple sorts before it.
    cut = draw(st.integers(0, n))
    if draw(st.booleans()):
        b = b[:cut]
    return tuple(a), tuple(b)


def python_order(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def total(a: Any, b: Any) -> int:
    ta, tb = total_order(a), total_order(b)
    return (ta > tb) - (ta < tb)


pairs_of_one_kind = st.one_of(
    st.tuples(texts, texts),
    st.tuples(st.binary(max_size=8), st.binary(max_size=8)),
    st.tuples(numbers, numbers),
    same_shape_tuples(),
)


@settings(max_examples=400, deadline=None)
@given(pairs_of_one_kind)
def test_total_order_agrees_with_python_where_python_compares(pair: tuple[Any, Any]) -> None:
    """Runs sorted by Python's order merge under the total order only if the two agree."""
    a, b = pair
    try:
        expected = python_order(a, b)
    except TypeError:  # None vs None deep in a tuple is equal, never compared by <
        return
    assert total(a, b) == expected
    assert (total_order(a) == total_order(b)) == (a == b)


@pytest.mark.parametrize(
    "a, b",
    [
        (1, True),
        (1, 1.0),
        (0, -0.0),
        (False, 0.0),
        (2**53, float(2**53)),
        ((1, "a"), (1.0, "a")),
        ((True, (0, None)), (1, (False, None))),
    ],
    ids=repr,
)
def test_keys_python_considers_equal_are_equal_in_the_total_order(a: Any, b: Any) -> None:
    """Equal keys must sort together, or group_values would call reduce twice for one key."""
    assert a == b
    assert total_order(a) == total_order(b)


def test_big_ints_and_floats_compare_exactly() -> None:
    """Numbers compare numerically and exactly, as Python does, even beyond float precision."""
    assert total(2**53 + 1, float(2**53)) == 1
    assert total(-(2**80), -1e30) == 1  # -2**80 ~ -1.2e24 > -1e30
    assert total(10**400, float("inf")) == -1
    assert total(float("-inf"), -(10**400)) == -1


RANK = {type(None): 0, bool: 1, int: 1, float: 1, str: 2, bytes: 3, tuple: 4}


@settings(max_examples=200, deadline=None)
@given(keys, keys)
def test_mixed_kinds_order_none_numbers_str_bytes_tuple(a: Any, b: Any) -> None:
    """The documented rule for mixed kinds: None < numbers < str < bytes < tuple."""
    ra, rb = RANK[type(a)], RANK[type(b)]
    if ra != rb:
        assert total(a, b) == (ra > rb) - (ra < rb)


def test_mixed_key_list_sorts_in_the_documented_order() -> None:
    """A concrete mixed list, as a job with str and int keys would produce it."""
    expected = [
        None,
        -(2**70),
        -1.5,
        False,
        1,
        2.5,
        10,
        "",
        "10",
        "a",
        "\u00e9",
        b"",
        b"a",
        (),
        (None,),
        (1, "a"),
        (1, "a", None),
        (2,),
        ("a", 1),
        (b"a",),
        ((1,),),
    ]
    shuffled = expected[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=total_order) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(keys, max_size=15))
def test_total_order_is_a_total_preorder_on_any_keys(ks: list[Any]) -> None:
    """Sorting any mix of supported keys never fails and is consistent (antisymmetric, transitive)."""
    ordered = sorted(ks, key=total_order)
    for x, y in zip(ordered, ordered[1:]):
        assert not total_order(y) < total_order(x)
    for x, y, z in itertools.islice(itertools.combinations(ks, 3), 200):
        if total(x, y) <= 0 and total(y, z) <= 0:
            assert total(x, z) <= 0


@pytest.mark.parametrize("bad", [{1}, [1], object(), (1, [2])], ids=["set", "list", "object",
                                                                     "tuple-of-list"])
def test_total_order_refuses_unsupported_keys(bad: Any) -> None:
    """An unsupported key must fail, not sort somewhere arbitrary."""
    with pytest.raises(TypeError):
        total_order(bad)


def test_kinds_of_names_plain_kinds_and_other() -> None:
    """Kinds decide how runs are compared: numbers are one kind, tuples and None are 'other'."""
    assert kinds_of([]) == []
    assert kinds_of(["a", "b"]) == ["str"]
    assert kinds_of([1, 2.5, True]) == ["num"]
    assert kinds_of([b"x"]) == ["bytes"]
    assert kinds_of(["a", 1]) == ["num", "str"]
    assert kinds_of([(1,)]) == ["other"]
    assert kinds_of([None]) == ["other"]


@pytest.mark.parametrize("kinds", [[], ["str"], ["num"], ["bytes"], ("str", "str")])
def test_record_sort_key_uses_the_plain_key_for_one_plain_kind(kinds: Any) -> None:
    """One plain kind sorts by Python's own order on the key, the fast path."""
    sort_key = record_sort_key(kinds)
    assert sort_key is keys_module.first
    assert sort_key(("k", [1])) == "k"


@pytest.mark.parametrize(
    "kinds", [["num", "str"], ["other"], ["str", "other"], ["bytes", "num"]], ids=repr
)
def test_record_sort_key_uses_the_total_order_otherwise(kinds: list[str]) -> None:
    """Mixed kinds, None or tuples need the total order: Python's would raise or mis-sort."""
    sort_key = record_sort_key(kinds)
    assert sort_key(((1, "a"), [0])) == total_order((1, "a"))
    records = [("b", [1]), (2, [2]), (None, [3]), ((1,), [4]), (b"a", [5]), (1.5, [6])]
    assert [k for k, _ in sorted(records, key=sort_key)] == [None, 1.5, 2, "b", b"a", (1,)]


@settings(max_examples=60, deadline=None)
@given(st.lists(keys, max_size=15))
def test_record_sort_key_of_the_records_own_kinds_sorts_them_like_the_total_order(
    ks: list[Any],
) -> None:
    """Whichever sort key kinds_of selects, the result is the total order (so runs merge)."""
    records = [(k, [i]) for i, k in enumerate(ks)]
    by_kinds = sorted(records, key=record_sort_key(kinds_of(ks)))
    by_total = sorted(records, key=lambda r: total_order(r[0]))
    assert [total_order(k) for k, _ in by_kinds] == [total_order(k) for k, _ in by_total]


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, unique=True, max_size=40))
def test_sort_by_utf8_is_pythons_str_order(words: list[str]) -> None:
    """Spills sort str keys by their UTF-8 (surrogates included): reducers
    merge the runs by str comparison, so both orders must agree."""
    records = [(w, [i]) for i, w in enumerate(words)]
    sort_by_utf8(records, [w.encode("utf-8", "surrogatepass") for w in words])
    assert records == sorted((w, [i]) for i, w in enumerate(words))


def test_sort_by_utf8_refuses_a_missing_key() -> None:
    with pytest.raises(ValueError, match="one UTF-8 key per record"):
        sort_by_utf8([("b", 1), ("a", 2)], [b"b"])


NAN_JOBS = {
    "pairs": "def map(k, line):\n    for w in line.split():\n        yield float(w), 1\n",
    "combiner": ("def map(k, line):\n    for w in line.split():\n        yield float(w), 1\n"
                 "def combine(k, vs):\n    yield k, sum(vs)\n"),
    "fold": ("from pytxmr import combiners\ncombine = combiners.sum\n"
             "def map(k, line):\n    for w in line.split():\n        yield float(w), 1\n"),
    "tuple": "def map(k, line):\n    for w in line.split():\n        yield ('x', float(w)), 1\n",
    "tuple-fold": ("from pytxmr import combiners\ncombine = combiners.sum\n"
                   "def map(k, line):\n    for w in line.split():\n        yield ('x', float(w)), 1\n"),
    "tuple-combiner": ("def map(k, line):\n    for w in line.split():\n        yield ('x', float(w)), 1\n"
                       "def combine(k, vs):\n    yield k, sum(vs)\n"),
    "sort_values": ("sort_values = True\n"
                    "def map(k, line):\n    for w in line.split():\n        yield 'k', float(w)\n"),
}


@pytest.mark.parametrize("kind", sorted(NAN_JOBS))
def test_a_nan_key_or_sorted_value_fails_the_map_naming_it(tmp_path: Any, kind: str) -> None:
    """A NaN equals nothing, itself included: keys equal to each other on
    both sides of one were merged as different keys (``1.0`` counted as
    two keys around a ``nan``), and a ``sort_values`` job's values came out
    of order. The map fails, saying what to do (a NaN in a tuple key with a
    combiner was a bare TypeError from pytxmr's sort); a map-only job, which
    sorts nothing, writes it."""
    import pytxmr

    data = tmp_path / "in.txt"
    data.write_text("1 nan 1 0.5\n2 0.5 nan\n")
    job = tmp_path / "job.py"
    job.write_text(NAN_JOBS[kind] + "def reduce(k, vs):\n    yield k, sum(vs)\n")
    with pytest.raises(Exception, match="a NaN cannot be sorted or grouped") as info:
        pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True)
    assert "map it to None or to the str 'nan'" in str(info.value)
    # Said as the map's bad output, not a TypeError from pytxmr's own sort.
    assert "RecordTypeError" in str(info.value), info.value
    job.write_text(NAN_JOBS["pairs"])
    pytxmr.run(str(job), str(data), str(tmp_path / "maponly"), inline=True)
    assert sum("NaN\t1" in p.read_text() for p in (tmp_path / "maponly").glob("part-*")) == 1


def test_total_order_refuses_a_nan_and_finds_one() -> None:
    with pytest.raises(TypeError, match="NaN"):
        total_order(float("nan"))
    with pytest.raises(TypeError, match="NaN"):
        total_order((1, float("nan")))
    assert keys_module.find_nan([1, 2.0, "a", float("nan")])
    assert not keys_module.find_nan([1, 2.0, "a", float("inf"), None, (1, 2)])
