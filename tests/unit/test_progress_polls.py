"""How often a client polls a job's progress (``client.progress_interval``):
a ``status`` call costs the jobtracker per running attempt, so a client
following a large job polls less often; the job's end comes by ``wait``."""

from __future__ import annotations

import pytest
from twisted.internet import task

from pytxmr.client import RUNNING_PER_POLL_SECOND, progress_interval


def status(maps_running: int, reduces_running: int) -> dict[str, object]:
    return {"state": "running", "maps": {"running": maps_running, "total": 50_000},
            "reduces": {"running": reduces_running, "total": 2_000}}


@pytest.mark.parametrize("maps, reduces, interval", [
    (0, 0, 0.5), (100, 100, 0.5), (500, 0, 0.5), (2_000, 0, 2.0), (1_000, 2_000, 3.0),
])
def test_a_job_with_many_running_attempts_is_polled_less_often(
        maps: int, reduces: int, interval: float) -> None:
    assert progress_interval(status(maps, reduces), 0.5) == interval
    assert RUNNING_PER_POLL_SECOND * interval >= maps + reduces


def test_a_status_without_progress_keeps_the_interval() -> None:
    """A job between steps, or one the jobtracker only has in its history."""
    assert progress_interval({"state": "succeeded"}, 0.5) == 0.5


def test_a_looping_call_takes_the_new_interval_from_its_next_call() -> None:
    """What ``client._follow`` relies on: the poll's ``interval`` set from
    within a call spaces the calls from then on (on the loop's own grid,
    multiples of the interval since its start)."""
    clock = task.Clock()
    calls: list[float] = []

    def poll() -> None:
        calls.append(clock.seconds())
        loop.interval = progress_interval(status(3_000, 0), 0.5)

    loop = task.LoopingCall(poll)
    loop.clock = clock
    loop.start(0.5, now=False)
    clock.pump([0.5] * 20)
    loop.stop()
    assert calls[:3] == [0.5, 3.0, 6.0]
