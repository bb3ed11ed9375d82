"""The sort order of keys.

Keys of one job are normally of one kind (all str, all numbers...), and are
then sorted by Python's own comparison, which is the fastest. Where kinds
mix, a total order extends it: None < numbers (bool, int, float compare
numerically) < str < bytes < tuple (element by element, same rule). The two
orders agree wherever Python's comparison is defined, so runs sorted either
way merge correctly under the total order.
"""

from __future__ import annotations

from functools import partial
from operator import itemgetter, ne
from typing import Any, Callable, Iterable

#: The key-kind names recorded for each run (``kinds_of``).
_KIND = {
    str: "str",
    int: "num",
    float: "num",
    bool: "num",
    bytes: "bytes",
}

first = itemgetter(0)
second = itemgetter(1)

#: Why a NaN is no key (nor a value of a ``sort_values`` job).
NAN_REFUSED = ("a NaN cannot be sorted or grouped (it is equal to nothing, not even "
               "itself, so equal keys around it would be split apart): map it to None "
               "or to the str 'nan'")


def find_nan(items: list[Any]) -> bool:
    """Whether a NaN float is among ``items`` (at their top level): the one
    value that is not equal to itself. A pass of C comparisons, most of
    them of an object with itself."""
    return any(map(ne, items, items))


def total_order(key: Any) -> tuple:
    """A sort key that orders any mix of supported key types (TypeError for
    any other, and for a NaN)."""
    t = type(key)
    if t is str:
        return (2, key)
    if t is int or t is bool:
        return (1, key)
    if t is float:
        if key != key:
            raise TypeError(NAN_REFUSED)
        return (1, key)
    if key is None:
        return (0, 0)
    if t is bytes:
        return (3, key)
    if isinstance(key, tuple):
        return (4, tuple(map(total_order, key)))
    if isinstance(key, (int, float)):
        if key != key:
            raise TypeError(NAN_REFUSED)
        return (1, key)
    if isinstance(key, str):
        return (2, key)
    if isinstance(key, bytes):
        return (3, key)
    raise TypeError(f"unsupported key type {type(key).__qualname__}: {key!r:.200}")


def kinds_of(keys: Iterable[Any]) -> list[str]:
    """The kinds of a run's keys (decides how runs may be compared)."""
    return sorted({_KIND.get(t, "other") for t in set(map(type, keys))})


def record_sort_key(kinds: Iterable[str]) -> Callable[[tuple], Any]:
    """How to order ``(key, values)`` records whose keys are of ``kinds``.

    Python's own order where every key is of one plain kind; the total order
    otherwise (None is not orderable by Python, and tuples may mix kinds
    inside).
    """
    ks = set(kinds)
    if len(ks) <= 1 and "other" not in ks:
        return first
    return lambda record: total_order(record[0])


def value_record_order(record: tuple) -> tuple:
    """The order of a ``sort_values`` job's stored records, ``(key,
    [value])``: by key, then by value, both in the total order."""
    return (total_order(record[0]), total_order(record[1][0]))


def merge_order(job: Any, kinds: Iterable[str]) -> Callable[[tuple], Any]:
    """How a job's stored records merge: by key, or by key and value for a
    job that asked for its values sorted (one value per record then)."""
    return value_record_order if job.sort_values else record_sort_key(kinds)


def sort_by_utf8(records: list[tuple], utf8: list[bytes]) -> None:
    """Sort ``records`` (str keys, duplicates allowed) in place by their keys' UTF-8,
    ``utf8[i]`` being record ``i``'s.

    UTF-8 orders as the code points do, so this is Python's str order. It
    is about twice as fast where words mix ASCII and other text: str
    comparison then leaves its one-byte fast path, while bytes compare with
    ``memcmp``. The key function hands each record its bytes in order
    (``list.sort`` computes the keys first, in list order) without a
    Python call per record.
    """
    if len(records) != len(utf8):
        raise ValueError("one UTF-8 key per record is needed")
    records.sort(key=partial(next, iter(utf8)))
