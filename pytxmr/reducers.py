"""Built-in reducers the reduce side knows, as it knows ``pytxmr.combiners``.

A job may use any generator as its reducer; this one says more: every
value of a key goes out as it came. The reduce task then writes the merged
records straight to the part file, with no generator, ``groupby`` or
iterator per key (a third of a sort's reduce otherwise).

    from pytxmr import reducers
    reduce = reducers.identity
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator


def identity(key: Any, values: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Each value of ``key`` as the pair ``(key, value)``."""
    for value in values:
        yield key, value
