"""Hypothesis strategies for the keys and values pytxmr carries (shared by the unit tests)."""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import strategies as st

#: Text that includes lone surrogates: inputs decoded with surrogateescape carry them.
texts = st.text(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=12
)

#: Integers of every size the codec must carry exactly: small, 64-bit edges and beyond.
integers = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(-(2**300), 2**300),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
)

floats = st.floats(allow_nan=False)

#: One key of any plain kind (no tuples).
plain_keys = st.one_of(texts, st.binary(max_size=12), integers, floats, st.booleans(), st.none())

#: Any supported key: plain kinds and (nested) tuples of them.
keys = st.recursive(plain_keys, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=10)

#: Any supported value: keys plus lists and dicts (NaN included: it must survive too).
values = st.recursive(
    st.one_of(plain_keys, st.just(math.nan), keys),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=12,
)


def assert_same(a: Any, b: Any) -> None:
    """Equal *and* of the same types all the way down (1 == 1.0 == True is not enough)."""
    assert type(a) is type(b), (a, b)
    if type(a) is float:
        assert struct.pack(">d", a) == struct.pack(">d", b), (a, b)
    elif type(a) in (list, tuple):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif type(a) is dict:
        assert len(a) == len(b), (a, b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb)
            assert_same(va, vb)
    else:
        assert a == b, (a, b)
