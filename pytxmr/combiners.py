"""Built-in combiners that the map side can apply as values are produced.

A job may use any generator as its combiner; one of these says more: that
the values of a key fold with an associative, commutative operation. The
map task then folds each value into its key's running total the moment
``map`` yields it (no list per key, no combine pass, as
``inline.py --mode combine`` does by hand), which is the cheapest a word
count can be in Python. They also work as ordinary combiners and reducers.

    from pytxmr import combiners
    combine = combiners.sum
"""

from __future__ import annotations

import builtins
import operator
import sys
from typing import Any, Callable, Iterable, Iterator


class FoldCombiner:
    """A combiner defined by a binary operation ``op(a, b)``; ``whole``
    folds a whole iterable at once (``sum`` for ``operator.add``), and
    ``apart`` names the value types for which ``whole`` is not ``op`` in
    turn (floats, which ``sum`` adds with compensation from Python 3.12)."""

    def __init__(self, name: str, op: Callable[[Any, Any], Any],
                 whole: Callable[[Iterable[Any]], Any],
                 apart: frozenset[type] = frozenset()) -> None:
        self.__name__ = self.__qualname__ = name
        self.__module__ = __name__
        self.op = op
        self.whole = whole
        self.apart = apart

    def __call__(self, key: Any, values: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        yield key, self.whole(values)

    def __repr__(self) -> str:
        return f"pytxmr.combiners.{self.__name__}"

    def refused(self, role: str, key: str, e: TypeError) -> TypeError:
        """Values this fold cannot take, at the key ``key`` (its short
        repr), named as ``role = combiners.NAME``, not by their types only."""
        return TypeError(f"{role} = combiners.{self.__name__} at the key {key}: {e}")


#: Numbers add up (as the built-in ``sum`` does: floats with compensation
#: from Python 3.12, complex numbers from 3.14).
sum = FoldCombiner("sum", operator.add, builtins.sum,
                   frozenset(t for t, since in ((float, (3, 12)), (complex, (3, 14)))
                             if sys.version_info >= since))
#: The smallest value (any values that compare).
min = FoldCombiner("min", builtins.min, builtins.min)
#: The largest value.
max = FoldCombiner("max", builtins.max, builtins.max)
