"""The stable partitioner: which reduce partition a key belongs to.

It must give the same answer in every process, on every host and Python
version, so it hashes a canonical encoding of the key with CRC-32 and never
uses the built-in ``hash()`` (salted per process for str and bytes). Keys
that Python considers equal (1, 1.0 and True) encode alike, since the reduce
side groups them together. ``RangePartition`` is the other kind a job may
give: key ranges as data, which a map spill applies to its sorted keys.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any, Callable, Iterable, Sequence
from zlib import crc32

from .records import short_repr

_LEN = struct.Struct(">I")


def _int_bytes(n: int) -> bytes:
    if -(1 << 63) <= n < 1 << 63:
        return b"i%d" % n
    # Decimal text is refused beyond 4300 digits (Python 3.11).
    return b"I" + n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def canonical_bytes(key: Any) -> bytes:
    """A byte string that is equal for equal keys of any supported type."""
    t = type(key)
    if t is str:
        # No type tag: default_partition's fast path hashes str keys as
        # plain UTF-8, and both paths must agree.
        return key.encode("utf-8", "surrogatepass")
    if t is bool or t is int:
        return _int_bytes(key)
    if t is float:
        if key.is_integer():
            return _int_bytes(int(key))
        return b"f" + repr(key).encode("ascii")
    if key is None:
        return b"N"
    if t is bytes:
        return b"b" + key
    if isinstance(key, tuple):
        parts = [canonical_bytes(k) for k in key]
        return b"t" + b"".join(_LEN.pack(len(p)) + p for p in parts)
    for base in (str, int, float, bytes):
        if isinstance(key, base):
            return canonical_bytes(base(key))
    raise TypeError(f"unsupported key type {t.__qualname__}: {key!r:.200}")


_BYTES_TAG_CRC = crc32(b"b")


def default_partition(key: Any, num_partitions: int) -> int:
    """The partition of ``key``: a CRC-32 of its canonical bytes, modulo n."""
    if type(key) is str:
        # The common case, kept to a couple of C calls per key.
        return crc32(key.encode("utf-8", "surrogatepass")) % num_partitions
    return crc32(canonical_bytes(key)) % num_partitions


def partition_ids(keys: Iterable[Any], num_partitions: int,
                  partition: Callable[[Any, int], int] = default_partition,
                  utf8: Sequence[bytes] | None = None) -> list[int]:
    """The partition of each of ``keys``.

    ``utf8``, the keys' UTF-8 when they are all str, lets the default
    partitioner hash those bytes in one C call per key: a map spill asks
    this for every distinct key, and a Python call per key would be a good
    part of its cost. A user's partitioner is checked, since a bad answer
    would send records nowhere.
    """
    n = num_partitions
    if partition is default_partition:
        if utf8 is not None:
            return [crc32(b) % n for b in utf8]
        # bytes keys (a job's input_bytes) in C too: the CRC of
        # canonical_bytes' b"b" + key, without the concatenation.
        return [crc32(k, _BYTES_TAG_CRC) % n if type(k) is bytes else default_partition(k, n)
                for k in keys]
    ids = []
    for key in keys:
        p = partition(key, n)
        if type(p) is not int or not 0 <= p < n:
            raise ValueError(
                f"partition({key!r:.100}, {n}) returned {p!r:.50}; "
                f"it must return an int in [0, {n})"
            )
        ids.append(p)
    return ids


def scatter(items: Iterable[Any], ids: Iterable[int], num_partitions: int) -> list[list[Any]]:
    """``items`` sorted out into their partitions (``ids``, one per item),
    keeping their order."""
    parts: list[list[Any]] = [[] for _ in range(num_partitions)]
    appends = [p.append for p in parts]
    for p, item in zip(ids, items):
        appends[p](item)
    return parts


class RangePartition:
    """A partitioner by key ranges (a total-order sort's): partition ``i``
    of ``n`` holds the keys ``k`` with ``cuts[i - 1] <= k < cuts[i]``, where
    ``cut_points(n)`` gives the ``n - 1`` sorted cuts.

    Given as data, the ranges cost a map no call per key: a spill sorts its
    pairs once and cuts the sorted run where the cut points fall
    (``split_sorted``). Called as a function it is ``bisect_right(cuts,
    key)``, what the spill gives too. ``cut_points`` is asked when a map
    spills, so it may depend on what the map has read (a sample).

        partition = RangePartition(lambda n: CUTS[n])
    """

    def __init__(self, cut_points: Callable[[int], Sequence[Any]]) -> None:
        self._cut_points = cut_points

    def __call__(self, key: Any, num_partitions: int) -> int:
        cuts = self._cut_points(num_partitions)
        try:
            return bisect_right(cuts, key)
        except TypeError as e:
            raise _incomparable(key, cuts) from e

    def cut_points(self, num_partitions: int) -> Sequence[Any]:
        """The job's cut points for ``num_partitions``, checked."""
        cuts = self._cut_points(num_partitions)
        if len(cuts) != num_partitions - 1:
            raise ValueError(f"cut_points({num_partitions}) gave {len(cuts)} cuts; "
                             f"{num_partitions - 1} are needed")
        if any(b < a for a, b in zip(cuts, cuts[1:])):
            raise ValueError(f"cut_points({num_partitions}) are not sorted")
        return cuts

    def split_sorted(self, records: list[Any], num_partitions: int) -> list[list[Any]]:
        """``records`` (sorted by their keys, ``record[0]``) cut into their
        partitions, as slices."""
        cuts = self.cut_points(num_partitions)
        try:
            bounds = [bisect_left(records, cut, key=_first) for cut in cuts]
        except TypeError as e:
            raise _incomparable(records[0][0], cuts) from e
        return [records[a:b] for a, b in zip([0, *bounds], [*bounds, len(records)])]


_first = itemgetter(0)


def _incomparable(key: Any, cuts: Sequence[Any]) -> TypeError:
    hint = " (an input_bytes map's keys are bytes: so are its cut points)" if type(key) is bytes else ""
    shown = ", ".join(map(short_repr, cuts[:3])) + (f", ... ({len(cuts)} in all)" if len(cuts) > 3 else "")
    return TypeError(f"RangePartition: the key {short_repr(key)} ({type(key).__name__}) cannot be "
                     f"compared with the cut points [{shown}]: give cut points of the keys' "
                     f"type{hint}")

