"""``pytxmr.counter`` as a job's code calls it: a counter must reach the
jobtracker, so its names, its total and how many a task keeps are checked
where the job's code counts, with the job's own line in the traceback."""

from __future__ import annotations

import pytest

from pytxmr import counters
from pytxmr.counters import COUNTER_MAX, FRAMEWORK, MAX_COUNTER_NAME, MAX_USER_COUNTERS


@pytest.fixture(autouse=True)
def fresh() -> None:
    counters.reset()


def test_a_total_beyond_64_bits_is_refused_where_it_is_counted() -> None:
    counters.counter("g", "n", COUNTER_MAX - 1)
    counters.counter("g", "n", 1)
    with pytest.raises(OverflowError, match=r"pytxmr.counter\('g', 'n'\): the total "
                                            r"9,223,372,036,854,775,808 is beyond the 64 bits"):
        counters.counter("g", "n", 1)
    with pytest.raises(OverflowError, match=r"the total of 1329 bits is beyond the 64 bits"):
        counters.counter("g", "n", 10 ** 400)  # no float of it: it failed making the message
    with pytest.raises(OverflowError):
        counters.counter("g", "m", -2**64)
    assert counters.current.to_dict() == {"g": {"n": COUNTER_MAX}}


@pytest.mark.parametrize("group, name, match", [
    ("g", "x" * (MAX_COUNTER_NAME + 1), "longer than 100 characters"),
    ("x" * (MAX_COUNTER_NAME + 1), "n", "longer than 100 characters"),
    ("caf\udce9", "n", "lone surrogate"),
    ("g", "\udce9", "lone surrogate"),
])
def test_names_must_be_short_text(group: str, name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        counters.counter(group, name)
    assert counters.current.to_dict() == {}


def test_the_frameworks_group_is_not_a_jobs_to_count_in() -> None:
    """`counter("pytxmr", "map input records", 1000)` was taken, and the
    job reported 1,000 more lines than its input had."""
    counters.current.incr(FRAMEWORK, "map input records", 3)
    for group, name in ((FRAMEWORK, "map input records"), (FRAMEWORK, "new"),
                        ("pytxmr ", "map input records"), ("PyTxMR", "x")):  # its look-alikes
        with pytest.raises(ValueError, match="the group 'pytxmr' is pytxmr's own"):
            counters.counter(group, name, 1000)
    assert counters.current.to_dict() == {FRAMEWORK: {"map input records": 3}}


def test_a_task_keeps_a_bounded_number_of_counters() -> None:
    """A counter per key would make a report no worker can send; the
    framework's own counters do not count, and counting again is free."""
    counters.current.incr(FRAMEWORK, "map input records", 5)
    for i in range(MAX_USER_COUNTERS):
        counters.counter("words", str(i))
    counters.counter("words", "0", 2)
    with pytest.raises(ValueError, match=f"a task may keep {MAX_USER_COUNTERS} counters"):
        counters.counter("other", "one more")
    assert counters.current.get("words", "0") == 3
