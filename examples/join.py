"""Reduce-side join: each user's name with the total amount of their orders.

Two inputs, told apart by their file names (the ``path_lines`` reader gives
the path of the file each line comes from): ``users*.tsv`` holds
``user_id<TAB>name`` lines, ``orders*.tsv`` holds ``user_id<TAB>amount``
lines. The map tags each record with its side and keys it by user id, so both
sides of one user meet in one reduce call. Run it with::

    python -m pytxmr run examples/join.py data/join/users.tsv data/join/orders.tsv -o /tmp/join

Each output line is ``name<TAB>total`` (the total a decimal string, exact to
the cent). Every user appears, with ``0`` if they have no orders (a left outer
join); orders of an unknown user id are dropped. Two users with the same name
give two lines. Blank lines are skipped; a line of another file name, one without
a tab, or an amount that is not a number fails the task with a ValueError
naming it.
"""

import os
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation

import pytxmr.readers

reader = pytxmr.readers.path_lines

USER = "U"
ORDERS = "O"


def _side(path: str) -> str:
    name = os.path.basename(path)
    if name.startswith("users"):
        return USER
    if name.startswith("orders"):
        return ORDERS
    raise ValueError(f"join.py: {path!r} is neither a users* nor an orders* file")


def map(key: str, value: str) -> Iterator[tuple[str, tuple[str, str]]]:
    """Yield ``(user_id, (side, name or amount))`` for a line of either input."""
    if not value.strip():
        return
    user_id, sep, field = value.partition("\t")
    if not sep:
        raise ValueError(f"join.py: no tab in line {value!r} of {key!r}")
    side = _side(key)
    if side == ORDERS:
        try:  # fail in the map, where the line and file are known
            Decimal(field)
        except InvalidOperation:
            raise ValueError(f"join.py: bad amount in line {value!r} of {key!r}") from None
    yield user_id.strip(), (side, field.strip())


def combine(
    key: str, values: Iterable[tuple[str, str]]
) -> Iterator[tuple[str, tuple[str, str]]]:
    """Sum one map's orders of a user into one record; pass names through."""
    total = None
    for side, field in values:
        if side == ORDERS:
            total = Decimal(field) if total is None else total + Decimal(field)
        else:
            yield key, (side, field)
    if total is not None:
        yield key, (ORDERS, str(total))


def reduce(key: str, values: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Yield ``(name, total amount)`` for a known user; nothing otherwise."""
    names = []
    total = Decimal(0)
    for side, field in values:
        if side == USER:
            names.append(field)
        else:
            total += Decimal(field)
    for name in names:
        yield name, str(total)
