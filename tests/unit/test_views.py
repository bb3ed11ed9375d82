"""Job counters as the jobtracker reports them: committed attempts only,
plus the wall time of each phase."""

from __future__ import annotations

from pytxmr.counters import FRAMEWORK
from pytxmr.scheduler import Scheduler
from pytxmr import views as views_module
from pytxmr.views import live_counters
from pytxmr.wire import AttemptResult


def test_phase_wall_times_and_committed_counters_only() -> None:
    """A failed attempt's counters never count; each phase's wall time runs
    from its first attempt's start to its last committed attempt's end."""
    s = Scheduler()
    s.worker_joined("w1", "h", 1, 2, now=0)
    s.submit("j", num_maps=2, num_reducers=1, now=0)
    s.attempt_failed("j_m00000_0", 1.0, {"type": "E", "message": "", "traceback": ""})
    s.attempt_succeeded("j_m00001_0", 1.5, AttemptResult({"user": {"n": 5}}))
    s.attempt_succeeded("j_m00000_1", 3.0, AttemptResult({"user": {"n": 7}}))
    job = s.jobs["j"]
    assert live_counters([job])[FRAMEWORK]["map phase wall ms"] == 3000
    assert "reduce phase wall ms" not in live_counters([job])[FRAMEWORK]
    assert s.may_commit("j_r00000_0")
    s.attempt_succeeded("j_r00000_0", 4.5, AttemptResult({FRAMEWORK: {"shuffle bytes": 10}}))
    counters = live_counters([job])
    assert counters["user"] == {"n": 12}
    assert counters[FRAMEWORK]["failed map attempts"] == 1
    assert counters[FRAMEWORK]["shuffle bytes"] == 10
    assert counters[FRAMEWORK]["reduce phase wall ms"] == 4500


def test_a_draining_worker_is_shown_as_such() -> None:
    from pytxmr.__main__ import describe_workers
    from pytxmr.pages import workers_table

    s = Scheduler()
    s.worker_joined("w1", "h1", 9001, 2, 0.0)
    s.worker_joined("w2", "h2", 9002, 2, 0.0)
    s.drain("w1", 1.0)  # nothing on it: it stops at once, still alive until it does
    views = [views_module.worker_view(w, 2.0) for w in s.workers.values()]
    assert [v["draining"] for v in views] == [True, False]
    assert "draining" in workers_table(views)
    lines = describe_workers(views).splitlines()
    assert "draining" in lines[0] and "alive" in lines[1]
