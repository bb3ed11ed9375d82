"""Job counters as the jobtracker reports them: committed attempts only,
plus the wall time of each phase."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pytxmr.counters import FRAMEWORK
from pytxmr.jobtracker.job import StepPlan
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
    from pytxmr.cli import describe_workers
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
    # Gone: w1 after its drain stopped it, w2 lost (it was listed "lost" alike).
    assert s.workers["w1"].stopping  # the drain told it to stop
    s.worker_lost("w1", 3.0)
    s.worker_lost("w2", 3.0)
    views = [views_module.worker_view(w, 4.0) for w in s.workers.values()]
    assert [v["drained"] for v in views] == [True, False]
    assert ["drained" in line for line in describe_workers(views).splitlines()] == [True, False]
    assert ">drained<" in workers_table(views) and ">lost<" in workers_table(views)


def big_job(monkeypatch: Any, shown: int = 20) -> tuple[Scheduler, Any]:
    """A job with more attempts than its page lists (``PAGE_ATTEMPTS``
    made small): maps done, failed, killed and running, reduces running."""
    monkeypatch.setattr(views_module, "PAGE_ATTEMPTS", shown)
    s = Scheduler()
    s.worker_joined("w1", "h1", 1, 6, now=0.0)
    s.worker_joined("w2", "h2", 2, 6, now=0.0)
    s.submit("j", num_maps=20, num_reducers=2, now=0.0)
    error = {"type": "E", "message": "", "traceback": ""}
    now = 1.0
    for step in range(40):
        running = sorted((a for a in s.attempts.values()
                          if a.state.value == "running" and a.kind == "map"), key=lambda a: a.id)
        if len(running) <= 3:
            break
        now += 0.5
        a = running[step % len(running)]
        if step % 7 == 3:
            s.attempt_failed(a.id, now, error)
        else:
            s.attempt_succeeded(a.id, now, AttemptResult({"user": {"n": 1}}, ("str",)))
    s.worker_lost("w2", now + 0.25)  # kills its attempts; its maps run again
    record = SimpleNamespace(
        id="j", state="running", filename="job.py", inputs=["in"], output="out",
        map_name="map", reduce_name="reduce", splits=[None] * 20, num_reducers=2,
        submitted=0.0, finished=None, error=None, counters={}, args={}, step=0,
        steps=[StepPlan(None, False, "lines")],
        owner="me")
    return s, record


def test_a_big_jobs_page_shows_a_bounded_part_that_agrees_with_its_detail(
        monkeypatch: Any) -> None:
    """A page lists PAGE_ATTEMPTS attempts, those that did not succeed
    first, and charts how many ran; its phases and counts are the detail's,
    and the history's page view of the detail is the same page."""
    s, record = big_job(monkeypatch)
    job, now = s.jobs["j"], 30.0
    detail = views_module.job_detail(record, [job], s, now)
    view = views_module.job_page_view(record, [job], s, now)
    attempts = [a for t in detail["tasks"] for a in t["attempts"]]
    assert view["attempts_total"] == len(attempts) > 20
    assert view["phases"] == detail["phases"]
    states = [a["state"] for a in view["attempts"]]
    assert len(states) == 20 and "succeeded" in states
    assert {"running", "failed", "killed"} <= set(states)
    first_success = states.index("succeeded")
    assert "succeeded" not in states[:first_success] and set(states[first_success:]) == {
        "succeeded"}
    assert states.count("failed") + states.count("killed") == sum(
        a["state"] in ("failed", "killed") for a in attempts)
    by_id = {a["id"]: a for a in attempts}
    assert all(by_id[a["id"]] == a for a in view["attempts"])
    # The chart: at each moment, the attempts started and not yet ended.
    c = view["concurrency"]
    step = (c["end"] - c["start"]) / c["samples"]
    for i in range(c["samples"]):
        t = c["start"] + (i + 0.5) * step
        for kind in ("map", "reduce"):
            assert c["series"][kind][i] == sum(
                1 for a in attempts if a["kind"] == kind and a["started"] <= t
                and (a["finished"] is None or a["finished"] > t))
    assert max(c["series"]["map"]) > 0 and max(c["series"]["reduce"]) > 0
    # The history's page of the job once ended is the live page at its end.
    s.kill_job("j", now)
    record.state, record.finished = "killed", now
    detail = views_module.job_detail(record, [job], s, now)
    live = views_module.job_page_view(record, [job], s, now)
    stored = views_module.page_view(detail)
    assert stored == live


def test_a_big_jobs_page_draws_its_concurrency_not_its_attempts(monkeypatch: Any) -> None:
    from pytxmr import pages

    s, record = big_job(monkeypatch)
    view = views_module.job_page_view(record, [s.jobs["j"]], s, 30.0)
    html = pages.job_page(view, 30.0)
    assert "too many to draw one by one" in html
    assert 'class="area map"' in html and 'class="area reduce"' in html
    assert 'class="bar ' not in html  # no bar per attempt
    assert html.count("<tr class=") == 20
    assert f"The first 20 of {view['attempts_total']} attempts" in html
    # A small job's page draws every attempt.
    monkeypatch.setattr(views_module, "PAGE_ATTEMPTS", 2000)
    view = views_module.job_page_view(record, [s.jobs["j"]], s, 30.0)
    assert view["concurrency"] is None and len(view["attempts"]) == view["attempts_total"]
    html = pages.job_page(view, 30.0)
    assert html.count('class="bar ') == view["attempts_total"]


def test_an_ended_jobs_page_is_its_live_page_wherever_the_list_is_cut(monkeypatch: Any) -> None:
    """Attempts that did not succeed are listed by the time they ended, live
    as stored: a map output lost after its attempt succeeded (failed late,
    ended early) is where the stored page puts it, whatever the length."""
    s, record = big_job(monkeypatch)
    job = s.jobs["j"]
    lost = min(job.map_locations)
    reduces = [a for a in s.attempts.values() if a.kind == "reduce" and a.state.value == "running"]
    for i in range(3):
        s.fetch_failed(reduces[i % len(reduces)].id, lost, 29.0 + i / 10)
    assert lost not in job.map_locations
    s.kill_job("j", 30.0)
    record.state, record.finished = "killed", 30.0
    detail = views_module.job_detail(record, [job], s, 30.0)
    total = sum(len(t["attempts"]) for t in detail["tasks"])
    for shown in range(1, total + 1):
        monkeypatch.setattr(views_module, "PAGE_ATTEMPTS", shown)
        live = views_module.job_page_view(record, [job], s, 30.0)
        assert views_module.page_view(detail) == live, f"{shown} attempts shown"


def test_the_progress_line_shows_100_percent_only_when_the_phase_is_done() -> None:
    """99 of 100 maps done and the last at two thirds is 99.67%: shown as
    99%, not rounded up to a 100% that its count contradicts."""
    import io

    from pytxmr.cli import Progress

    out = io.StringIO()
    progress = Progress(out)
    for done, percent in ((99, 99 + 2 / 3), (100, 100.0)):
        progress({"job_id": "j", "maps": {"done": done, "total": 100, "percent": percent},
                  "reduces": {"done": 19, "total": 20, "percent": 95 + 0.95 * 5}})
    assert out.getvalue().splitlines() == ["j: map  99% (99/100) reduce  99% (19/20)",
                                           "j: map 100% (100/100) reduce  99% (19/20)"]


def test_the_progress_line_of_a_job_that_is_over_says_it_is_finishing() -> None:
    """Killed, its output being cleaned: its line showed its last progress
    and nothing else (a tester's)."""
    import io

    from pytxmr.cli import Progress

    out = io.StringIO()
    Progress(out)({"job_id": "j", "maps": {"done": 7, "total": 7, "percent": 100.0},
                   "reduces": {"done": 0, "total": 4, "percent": 0.0}, "finishing": "killed"})
    assert out.getvalue() == "j: map 100% (7/7) reduce   0% (0/4) (killed, finishing)\n"


def test_an_interrupted_wait_of_a_job_that_is_over_does_not_say_to_kill_it() -> None:
    from pytxmr.cli import _what_goes_on

    assert _what_goes_on("j", {"finishing": "killed"}, False) == (
        "interrupted: j is over (killed); its output is being made final on the cluster "
        "(`pytxmr status j`)")
    assert _what_goes_on("j", {"state": "running"}, False) == (
        "interrupted: j goes on running on the cluster (`pytxmr kill j` stops it)")


def test_the_progress_bar_ends_its_line_before_a_message_and_omits_no_reduces() -> None:
    """On a terminal the bar is rewritten in place ("\\r"): ``end`` gives
    what follows a line of its own (a lost connection's message was
    appended to the bar), once; a map-only step shows no "reduce 100% (0/0)"."""
    import io

    from pytxmr.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = Progress(out)
    progress({"job_id": "j", "maps": {"done": 1, "total": 2, "percent": 50.0},
              "reduces": {"done": 0, "total": 0, "percent": 100.0}})
    progress.end()
    progress.end()
    out.write("pytxmr: lost the connection\n")
    assert out.getvalue() == ("\r[#####.....] j: map  50% (1/2)\n"
                              "pytxmr: lost the connection\n")


def test_the_jobs_table_shows_maps_awaited_after_a_restart() -> None:
    """Maps done before the jobtracker's restart, not yet brought back by
    their workers, are not shown as 0 done and nothing else."""
    from pytxmr import pages

    maps = {"total": 8, "done": 0, "running": 0, "failed_attempts": 0, "percent": 0.0}
    job = {"job_id": "job_1", "owner": "", "filename": "wc.py", "state": "running",
           "maps": {**maps, "awaited": 8}, "reduces": {**maps, "total": 2},
           "submitted": 0.0, "elapsed": 1.0}
    html = pages.jobs_table([job])
    assert "0/8 <span" in html and "(8 awaited)</span>" in html
    assert "awaited" not in pages.jobs_table([{**job, "maps": maps}])
