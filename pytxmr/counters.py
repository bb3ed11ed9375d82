"""Counters: named totals that tasks report and jobs add up.

A task child keeps one ``Counters``; user code adds to it through
``pytxmr.counter(group, name, n)``. The jobtracker adds up the counters of
each task's *committed* attempt only, so retried attempts never count twice.
"""

from __future__ import annotations

import resource
import time
from typing import Mapping

#: The group of the counters pytxmr itself keeps.
FRAMEWORK = "pytxmr"
#: Counters travel as msgpack integers: 64 bits, as Hadoop's longs.
COUNTER_MIN, COUNTER_MAX = -(1 << 63), (1 << 63) - 1


def shown_total(n: int) -> str:
    """A counter's total for a message: exact, unless it is too long to
    show (a float of it, as ``:g`` makes, fails beyond 1e308)."""
    return f"{n:,}" if n.bit_length() <= 128 else f"of {n.bit_length()} bits"
#: A task's own counters, and the characters of a group's or counter's name,
#: at most: a report of them must reach the jobtracker (PB sends 640 KiB at
#: most), and the counters of every task add up there (Hadoop allows a job
#: 120 counters).
MAX_USER_COUNTERS = 250
MAX_COUNTER_NAME = 100

CounterDict = dict[str, dict[str, int]]


class Counters:
    """``group -> name -> int``, plain data so it can cross PB and JSON."""

    def __init__(self, initial: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._groups: CounterDict = {}
        if initial:
            self.add_all(initial)

    def incr(self, group: str, name: str, n: int = 1) -> None:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = {}
        g[name] = g.get(name, 0) + n

    def add_all(self, other: Mapping[str, Mapping[str, int]]) -> None:
        for group, names in other.items():
            for name, n in names.items():
                self.incr(group, name, n)

    def add_user(self, group: str, name: str, n: int) -> None:
        """A user's ``counter``: its names and total must be sendable."""
        g = self._groups.get(group)
        total = None if g is None else g.get(name)
        if total is None:
            self._check_new(group, name)
            total = 0
        total += n
        if not COUNTER_MIN <= total <= COUNTER_MAX:
            raise OverflowError(f"pytxmr.counter({group!r:.100}, {name!r:.100}): the total "
                                f"{shown_total(total)} is beyond the 64 bits a counter holds")
        self.incr(group, name, n)

    def _check_new(self, group: str, name: str) -> None:
        for text in (group, name):
            if len(text) > MAX_COUNTER_NAME:
                raise ValueError(f"pytxmr.counter: the name {text!r:.100}... is longer than "
                                 f"{MAX_COUNTER_NAME} characters")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"pytxmr.counter: the name {text!r} is not text (a lone "
                                 f"surrogate, as surrogateescape decodes a bad byte)") from None
        if sum(len(names) for g, names in self._groups.items() if g != FRAMEWORK) \
                >= MAX_USER_COUNTERS:
            raise ValueError(f"pytxmr.counter: a task may keep {MAX_USER_COUNTERS} counters; "
                             f"({group!r:.100}, {name!r:.100}) would be one more (a counter per "
                             f"key or value is a job's output, not a counter)")

    def get(self, group: str, name: str) -> int:
        return self._groups.get(group, {}).get(name, 0)

    def to_dict(self) -> CounterDict:
        return {g: dict(names) for g, names in self._groups.items()}


#: Distinct user counters the tasks of a job's step may count together (each
#: task may keep MAX_USER_COUNTERS): the jobtracker keeps, sends and stores
#: them all. Hadoop's limit is 120 a job.
MAX_STEP_USER_COUNTERS = 2000


class TooManyCounters(ValueError):
    """A step's tasks counted more distinct user counters than it may have."""


def add_user_names(names: set[tuple[str, str]], counters: CounterDict) -> None:
    """Add a task's user counter names to those of its step's other tasks,
    ``names``; TooManyCounters if that makes too many."""
    for group, counted in counters.items():
        if group != FRAMEWORK:
            names.update((group, name) for name in counted)
    if len(names) > MAX_STEP_USER_COUNTERS:
        raise TooManyCounters(
            f"the job's tasks counted {len(names):,} distinct counters, more than the "
            f"{MAX_STEP_USER_COUNTERS:,} a step of a job may have: a counter per key or "
            f"value is a job's output, not a counter")


#: The counters of the task running in this process (a task child runs one).
current = Counters()


def reset() -> Counters:
    """Start counting afresh (``run --inline`` runs several jobs in one process)."""
    global current
    current = Counters()
    return current


def counter(group: str, name: str, n: int = 1) -> None:
    """Add ``n`` to a user counter from inside map, combine or reduce."""
    if not isinstance(group, str) or not isinstance(name, str) or type(n) is not int:
        raise TypeError("pytxmr.counter(group: str, name: str, n: int = 1)")
    if group == FRAMEWORK:  # its "map input records" were the job's to change
        _refuse_framework_group()
    # A counter already kept, its total in range: a job may count per record.
    g = current._groups.get(group)
    total = None if g is None else g.get(name)
    if total is not None and COUNTER_MIN <= total + n <= COUNTER_MAX:
        g[name] = total + n  # type: ignore[index]
        return
    if group.strip().casefold() == FRAMEWORK:  # a look-alike, new: never kept
        _refuse_framework_group()
    current.add_user(group, name, n)


def _refuse_framework_group() -> None:
    raise ValueError(f"pytxmr.counter: the group {FRAMEWORK!r} is pytxmr's own; "
                     f"give your counters a group of their own")


def cpu_seconds() -> float:
    """The CPU this process and its children that ended (the commands of a
    streaming task) have spent so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def count_cpu(counters: Counters, since: float) -> None:
    """Add the CPU spent since ``cpu_seconds()`` said ``since`` as "cpu ms",
    as Hadoop's "CPU time spent": summed over a job, what it cost."""
    counters.incr(FRAMEWORK, "cpu ms", round(1000 * (cpu_seconds() - since)))
