"""The jobtracker's heartbeat pacing (pytxmr.jobtracker.heartbeats): the
interval grows with the cluster to bound PB's cost, and a worker's expiry
follows the interval it was told, without a reactor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytxmr.jobtracker.heartbeats import (
    DEFAULT_HEARTBEATS_PER_SECOND,
    MISSED_HEARTBEATS,
    Pacing,
    announce_wait,
    heartbeat_interval,
)
from pytxmr.scheduler import Scheduler
from pytxmr.wire import heartbeat_interval_from_wire


@pytest.mark.parametrize("workers, per_second, interval", [
    (1, 100.0, 0.1), (100, 100.0, 1.0), (1000, 100.0, 10.0), (1000, 200.0, 5.0),
    (1001, 100.0, 10.1), (0, 100.0, 0.0), (3, 2.0, 1.5),
])
def test_the_interval_bounds_the_heartbeats_a_second(workers: int, per_second: float,
                                                     interval: float) -> None:
    """Hadoop's heartbeats.in.second: the cluster sends at most that many."""
    assert heartbeat_interval(workers, per_second) == interval


@given(st.integers(0, 100_000), st.floats(0.5, 10_000))
def test_the_interval_is_never_shorter_than_the_bound_asks(workers: int,
                                                            per_second: float) -> None:
    """Rounded up, never down, and by at most a tenth of a second."""
    interval = heartbeat_interval(workers, per_second)
    assert workers / per_second - 1e-9 <= interval <= workers / per_second + 0.1 + 1e-9


@pytest.mark.parametrize("workers, wait", [
    (1, 0.021), (2, 0.022), (20, 0.2), (100, 1.0), (1000, 10.0), (5000, 50.0),
])
def test_announcements_wait_longer_on_a_larger_cluster(workers: int, wait: float) -> None:
    """A few milliseconds on a small cluster; on a large one, at most the
    heartbeats' calls a second (100 by default) to the workers running reduces."""
    assert announce_wait(workers, DEFAULT_HEARTBEATS_PER_SECOND) == pytest.approx(wait)


@given(st.integers(1, 100_000), st.floats(0.5, 10_000))
def test_announcements_cost_no_more_calls_a_second_than_heartbeats(workers: int,
                                                                   per_second: float) -> None:
    assert workers / announce_wait(workers, per_second) <= per_second * (1 + 1e-9)


def test_a_small_cluster_keeps_the_configured_expiry() -> None:
    """Existing clusters (and the fault tests' short expiries) see no change."""
    pacing = Pacing(expiry=10.0)
    assert pacing.tell("w1", 50) == 0.5
    assert pacing.expiry_of("w1") == 10.0 and pacing.longer_expiries == {}
    # Exactly the configured expiry: still the configured one.
    assert pacing.tell("w1", 200) == 2.0 and pacing.expiry_of("w1") == 10.0


def test_a_worker_told_a_longer_interval_may_miss_that_many_of_its_heartbeats() -> None:
    """Told 10 s at 1,000 workers, the 10 s expiry would lose it at once."""
    pacing = Pacing(expiry=10.0, per_second=DEFAULT_HEARTBEATS_PER_SECOND)
    assert pacing.tell("w1", 1000) == 10.0
    assert pacing.expiry_of("w1") == MISSED_HEARTBEATS * 10.0
    # A worker not told yet (just registered, on its own 1 s) keeps the short one.
    assert pacing.expiry_of("w2") == 10.0


def test_the_expiry_follows_the_cluster_as_it_shrinks() -> None:
    """Told a shorter interval, a worker is held to it from that heartbeat on."""
    pacing = Pacing(expiry=10.0)
    pacing.tell("w1", 1000)
    assert pacing.tell("w1", 300) == 3.0 and pacing.expiry_of("w1") == 15.0
    assert pacing.tell("w1", 100) == 1.0 and pacing.expiry_of("w1") == 10.0
    assert pacing.longer_expiries == {}


def test_a_lost_worker_is_forgotten() -> None:
    """A worker that comes back registers anew, on its own interval."""
    pacing = Pacing(expiry=10.0)
    pacing.tell("w1", 1000)
    pacing.forget("w1")
    pacing.forget("w1")
    assert pacing.expiry_of("w1") == 10.0


def test_expired_workers_use_their_own_longer_expiry() -> None:
    """The scheduler applies the pacing's expiries, each from its worker's last heartbeat."""
    s = Scheduler()
    pacing = Pacing(expiry=10.0)
    for wid in ("w1", "w2"):
        s.worker_joined(wid, "h", 1, 1, 0.0)
    s.heartbeat("w1", 1.0)
    pacing.tell("w1", 1000)  # answered that heartbeat: every 10 s, lost after 50
    s.heartbeat("w2", 1.0)   # w2 (e.g. an older worker ignoring it) told nothing longer
    assert s.expired_workers(12.0, pacing.expiry, pacing.longer_expiries) == ["w2"]
    assert s.expired_workers(51.0, pacing.expiry, pacing.longer_expiries) == ["w2"]
    assert s.expired_workers(51.5, pacing.expiry, pacing.longer_expiries) == ["w1", "w2"]


@pytest.mark.parametrize("answer, interval", [
    (None, None), (2.5, 2.5), (3, 3.0), (0, 0.0), (-1.0, None), (float("nan"), None),
    (float("inf"), None), (True, None), ("5", None), ({"interval": 5}, None),
])
def test_a_heartbeats_answer_is_an_interval_or_nothing(answer: object,
                                                        interval: float | None) -> None:
    """An older jobtracker answers None; nothing else odd changes a worker's pace."""
    assert heartbeat_interval_from_wire(answer) == interval
