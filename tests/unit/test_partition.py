"""Unit tests for pytxmr.partition: the stable partitioner."""

from __future__ import annotations

import collections
import enum
import json
import os
import subprocess
import sys
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr.partition import canonical_bytes, default_partition, partition_ids, scatter
from strategies import keys, texts

#: Keys whose partitions must not depend on the process (fixed, all kinds).
FIXED_KEYS: list[Any] = [
    "",
    "the",
    "caf\u00e9",
    "x\udcff",
    b"the",
    0,
    1,
    -7,
    2**70,
    -(2**70),
    2.5,
    -0.5,
    float("inf"),
    None,
    True,
    False,
    ("the", 1),
    ((1, b"a"), None),
    (),
] + [f"word{i}" for i in range(50)] + [(i, f"w{i}") for i in range(20)]

NUM_PARTITIONS = [1, 2, 7, 100, 2**31 - 1]


def encode_key(key: Any) -> Any:
    """JSON form of a key for the subprocess (tuples and bytes tagged)."""
    if isinstance(key, tuple):
        return {"t": [encode_key(k) for k in key]}
    if isinstance(key, bytes):
        return {"b": key.hex()}
    if isinstance(key, float):
        return {"f": repr(key)}
    if isinstance(key, str):
        return {"s": key.encode("utf-8", "surrogatepass").hex()}
    return key


_CHILD = r"""
import json, sys
from pytxmr.partition import default_partition

def decode(x):
    if isinstance(x, dict):
        (tag, v), = x.items()
        if tag == "t":
            return tuple(decode(e) for e in v)
        if tag == "b":
            return bytes.fromhex(v)
        if tag == "f":
            return float(v)
        if tag == "s":
            return bytes.fromhex(v).decode("utf-8", "surrogatepass")
    return x

spec = json.load(sys.stdin)
keys = [decode(k) for k in spec["keys"]]
print(json.dumps([[default_partition(k, n) for n in spec["ns"]] for k in keys]))
"""


def partitions_in_this_process() -> list[list[int]]:
    return [[default_partition(k, n) for n in NUM_PARTITIONS] for k in FIXED_KEYS]


# ---------------------------------------------------------------- range and equality


@settings(max_examples=500, deadline=None)
@given(keys, st.integers(1, 2**40))
def test_default_partition_is_in_range_for_any_key(key: Any, n: int) -> None:
    """A partition outside [0, n) would index past the reducers' list."""
    p = default_partition(key, n)
    assert type(p) is int
    assert 0 <= p < n


@pytest.mark.parametrize(
    "equal_keys",
    [
        [1, 1.0, True],
        [0, 0.0, -0.0, False],
        [2**53, float(2**53)],
        [10**20, 1e20],
        [(1, "a"), (1.0, "a"), (True, "a")],
        [((0, b"x"), None), ((False, b"x"), None), ((-0.0, b"x"), None)],
    ],
    ids=repr,
)
def test_keys_python_considers_equal_share_a_partition(equal_keys: list[Any]) -> None:
    """The reduce side groups 1, 1.0 and True as one key: they must all reach the same reducer."""
    assert all(k == equal_keys[0] for k in equal_keys)
    for n in NUM_PARTITIONS:
        assert len({default_partition(k, n) for k in equal_keys}) == 1
    assert len({canonical_bytes(k) for k in equal_keys}) == 1


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**80), 2**80), st.integers(1, 1000))
def test_an_int_and_the_float_equal_to_it_share_a_partition(i: int, n: int) -> None:
    """Whenever float(i) == i, the two are the same key and must not be split between reducers."""
    f = float(i)
    if f == i:
        assert default_partition(i, n) == default_partition(f, n)
        assert default_partition((i, "x"), n) == default_partition((f, "x"), n)


@settings(max_examples=300, deadline=None)
@given(texts, st.integers(1, 2**32))
def test_str_fast_path_agrees_with_canonical_bytes(key: str, n: int) -> None:
    """default_partition skips canonical_bytes for str keys: both paths must give one answer."""
    assert default_partition(key, n) == zlib.crc32(canonical_bytes(key)) % n


def test_subclasses_partition_like_their_base_type() -> None:
    """An IntEnum or a str subclass equals its plain value and must land in the same partition."""

    class Level(enum.IntEnum):
        HIGH = 3

    class Word(str):
        pass

    Pair = collections.namedtuple("Pair", "a b")
    for n in NUM_PARTITIONS:
        assert default_partition(Level.HIGH, n) == default_partition(3, n)
        assert default_partition(Word("abc"), n) == default_partition("abc", n)
        assert default_partition(Pair("a", 1), n) == default_partition(("a", 1), n)


@pytest.mark.parametrize(
    "bad, name",
    [({1}, "set"), ([1], "list"), ({"a": 1}, "dict"), (object(), "object"), (1j, "complex"),
     (("ok", [1]), "list")],
    # Not repr: an object's names its address, which differs between the
    # processes of a parallel run (pytest-xdist), each collecting the tests.
    ids=["set", "list", "dict", "object", "complex", "tuple-of-list"],
)
def test_unsupported_key_raises_type_error_naming_the_type(bad: Any, name: str) -> None:
    """A key type that cannot be hashed stably must fail loudly, never fall back to hash()."""
    with pytest.raises(TypeError, match=name):
        default_partition(bad, 7)


def test_keys_spread_over_all_partitions() -> None:
    """A hash that piles keys into few reducers would serialize the reduce phase."""
    n = 8
    counts = collections.Counter(default_partition(f"key-{i}", n) for i in range(16_000))
    assert set(counts) == set(range(n))
    assert max(counts.values()) < 1.15 * 16_000 / n
    ints = collections.Counter(default_partition(i, n) for i in range(16_000))
    assert max(ints.values()) < 1.15 * 16_000 / n


# ---------------------------------------------------------------- stability


def test_partitions_are_the_same_in_processes_with_any_hash_seed() -> None:
    """Maps on different hosts must agree on every key's reducer, whatever PYTHONHASHSEED says."""
    expected = partitions_in_this_process()
    spec = json.dumps({"keys": [encode_key(k) for k in FIXED_KEYS], "ns": NUM_PARTITIONS})
    procs = []
    for seed in ["0", "1", "42", "4000000000", "random"]:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        procs.append((seed, proc))
    try:
        for seed, proc in procs:
            out, err = proc.communicate(spec, timeout=60)
            assert proc.returncode == 0, err
            assert json.loads(out) == expected, f"PYTHONHASHSEED={seed}"
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


#: (key, partition of 7, partition of 2**32 i.e. the raw CRC-32): changing the
#: hash moves every job's keys between part files, so it must be deliberate.
PINNED = [
    ("", 0, 0),
    ("the", 3, 1011183078),
    ("caf\xe9", 5, 2561491637),
    ("x\udcff", 4, 3133360122),
    (b"the", 6, 1936675936),
    (0, 3, 3544183485),
    (1, 3, 2755183147),
    (-7, 4, 550557277),
    (2**63 - 1, 6, 1083131349),
    (2**63, 1, 3525231046),
    (-(2**63), 5, 1022734284),
    (-(2**63) - 1, 1, 3744976376),
    (2**70, 2, 1605846811),
    (2.5, 6, 1163037490),
    (-0.5, 2, 4225182348),
    (float("inf"), 6, 664798504),
    (None, 2, 1130791706),
    (True, 3, 2755183147),
    (("the", 1), 3, 1491447989),
    (((1, b"a"), None), 5, 1930784938),
    ((), 5, 2238339752),
]


@pytest.mark.parametrize("key, p7, crc", PINNED, ids=[ascii(k) for k, _, _ in PINNED])
def test_pinned_partitions_do_not_change(key: Any, p7: int, crc: int) -> None:
    """Output layout of existing jobs depends on these exact numbers."""
    assert default_partition(key, 7) == p7
    assert default_partition(key, 2**32) == crc


def test_str_keys_hash_as_plain_utf8_crc32() -> None:
    """The documented hash for text keys: CRC-32 of the UTF-8 bytes, so other tools can reproduce it."""
    assert default_partition("the", 2**32) == zlib.crc32(b"the")
    assert default_partition("caf\u00e9", 1000) == zlib.crc32("caf\u00e9".encode()) % 1000


def test_int_beyond_4300_digits_has_a_partition() -> None:
    """Keys may be ints of any size; Python 3.11 refuses decimal text beyond 4300 digits."""
    key = 7**6000
    assert 0 <= default_partition(key, 7) < 7
    assert default_partition(key, 2**32) == 3228458222
    assert default_partition(float(2**1000), 7) == default_partition(2**1000, 7)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, unique=True), st.integers(1, 9))
def test_partition_ids_from_utf8_agree_with_default_partition(words: list[str], n: int) -> None:
    """The spill hashes the UTF-8 it already has for str keys: every key
    must land where default_partition puts it, or a reducer would miss it."""
    utf8 = [w.encode("utf-8", "surrogatepass") for w in words]
    assert partition_ids(words, n, default_partition, utf8) == [
        default_partition(w, n) for w in words]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12), keys), unique=True), st.integers(1, 9))
def test_partition_ids_of_bytes_keys_agree_with_default_partition(ks: list[Any], n: int) -> None:
    """bytes keys (a job's input_bytes) are hashed in C: each must land where
    default_partition puts it, among keys of other kinds too."""
    assert partition_ids(ks, n) == [default_partition(k, n) for k in ks]


@settings(max_examples=100, deadline=None)
@given(st.lists(keys, max_size=30), st.integers(1, 5))
def test_scatter_puts_each_item_in_its_partition_in_order(ks: list[Any], n: int) -> None:
    items = [(k, i) for i, k in enumerate(ks)]
    parts = scatter(items, partition_ids(ks, n), n)
    assert sorted(i for part in parts for _, i in part) == list(range(len(ks)))
    for p, part in enumerate(parts):
        assert all(default_partition(k, n) == p for k, _ in part)
        assert [i for _, i in part] == sorted(i for _, i in part)


@pytest.mark.parametrize("answer", ["3", "-1", "'0'", "1.0", "None"])
def test_scatter_refuses_a_user_partitioner_answer_out_of_range(answer: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def partition(key, n):\n    return {answer}\n", namespace)
    with pytest.raises(ValueError, match=r"must return an int in \[0, 3\)"):
        partition_ids(["a"], 3, namespace["partition"])
