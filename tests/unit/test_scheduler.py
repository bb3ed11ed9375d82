"""Unit tests for pytxmr.scheduler: the jobtracker's decisions, with the time passed by hand."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr.counters import FRAMEWORK, MAX_STEP_USER_COUNTERS, Counters
from pytxmr.journal import Committed
from pytxmr.wire import AttemptResult
from pytxmr.scheduler import (
    BLACKLIST_FAILURES,
    COMMIT_DENIED,
    LOST_WORKERS_KEPT,
    FETCH_FAILURES_TO_RERUN,
    PROGRESS_UNITS,
    AnnounceMapOutputs,
    Attempt,
    DestroyJob,
    InitJob,
    JobDone,
    KillAttempt,
    LaunchMap,
    LaunchReduce,
    MapLocation,
    OutputKept,
    ResultLost,
    Scheduler,
    State,
    StopWorker,
    Task,
    ended_order,
)

ERROR = {"type": "RuntimeError", "message": "boom", "traceback": "..."}
LAUNCHES = (LaunchMap, LaunchReduce)


class Driver:
    """A Scheduler plus a clock advanced by hand and a log of every action."""

    def __init__(self) -> None:
        self.s = Scheduler()
        self.now = 0.0
        self.log: list[Any] = []

    def _record(self, actions: list[Any]) -> list[Any]:
        for a in actions:
            if isinstance(a, (*LAUNCHES, InitJob)):
                assert self.s.workers[a.wid].alive, f"{a} sent to a lost worker"
        self.log.extend(actions)
        return actions

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now

    def join(self, wid: str, slots: int = 2) -> list[Any]:
        port = 9000 + len(self.s.workers)
        return self._record(self.s.worker_joined(wid, f"host-{wid}", port, slots, self.tick()))

    def lose(self, wid: str) -> list[Any]:
        return self._record(self.s.worker_lost(wid, self.tick()))

    def submit(self, job_id: str, maps: int, reduces: int, **kw: Any) -> list[Any]:
        return self._record(self.s.submit(job_id, maps, reduces, self.tick(), **kw))

    def succeed(self, aid: str, kinds: tuple[str, ...] = ("str",)) -> list[Any]:
        now = self.tick()
        # Counters that differ from attempt to attempt, and one that is 0.
        result = AttemptResult({"user": {"n": 1, "at": int(now)}, FRAMEWORK: {"none": 0}},
                               tuple(kinds))
        return self._record(self.s.attempt_succeeded(aid, now, result))

    def fail(self, aid: str, error: dict[str, str] = ERROR) -> list[Any]:
        return self._record(self.s.attempt_failed(aid, self.tick(), dict(error)))

    def fetch_failed(self, reduce_aid: str, index: int, map_aid: str | None = None) -> list[Any]:
        return self._record(self.s.fetch_failed(reduce_aid, index, self.tick(), map_aid))

    def running(self, job: str | None = None, kind: str | None = None,
                index: int | None = None, wid: str | None = None) -> list[Attempt]:
        return sorted(
            (a for a in self.s.attempts.values()
             if a.state is State.RUNNING
             and (job is None or a.job_id == job)
             and (kind is None or a.kind == kind)
             and (index is None or a.index == index)
             and (wid is None or a.wid == wid)),
            key=lambda a: a.id,
        )

    def maps_done(self, job_id: str) -> bool:
        """Whether a reduce of the job could have fetched every map output by now."""
        job = self.s.jobs[job_id]
        return len(job.map_locations) == job.num_maps

    def complete(self, aid: str) -> list[Any]:
        """Report an attempt's success as a tasktracker does: a reduce asks to commit first."""
        a = self.s.attempts[aid]
        if a.kind == "reduce" and not self.s.may_commit(aid):
            return self.fail(aid)
        return self.succeed(aid)

    def run_to_completion(self, rounds: int = 200) -> None:
        """Every map succeeds; every reduce succeeds once all map outputs are in."""
        for _ in range(rounds):
            live = self.running()
            if not live:
                return
            for a in live:
                if self.s.attempts[a.id].state is State.RUNNING and (
                    a.kind == "map" or self.maps_done(a.job_id)
                ):
                    self.complete(a.id)
        raise AssertionError("jobs did not finish")

    def done(self) -> dict[str, JobDone]:
        return {a.job_id: a for a in self.log if isinstance(a, JobDone)}


def launches(actions: list[Any], cls: type = object) -> list[Any]:
    return [a for a in actions if isinstance(a, LAUNCHES) and isinstance(a, cls)]


def counters_afresh(job: Any) -> dict[str, dict[str, int]]:
    """A job's counters added up from all its attempts: those of each
    task's committed attempt once it succeeded, the failed and killed
    attempts counted, and the wall time of each phase whose every task
    succeeded, from its first attempt's start to its last committed end."""
    totals = Counters()
    for t in job.maps + job.reduces:
        for a in t.attempts:
            if a.id == t.committed and a.state is State.SUCCEEDED:
                totals.add_all(a.counters)
        for state in ("failed", "killed"):
            n = sum(a.state.value == state for a in t.attempts)
            if n:
                totals.incr(FRAMEWORK, f"{state} {t.kind} attempts", n)
    for kind, tasks in (("map", job.maps), ("reduce", job.reduces)):
        done = [a for t in tasks for a in t.attempts
                if a.id == t.committed and a.finished is not None]
        if done and len(done) == len(tasks):
            start = min(a.started for t in tasks for a in t.attempts)
            end = max(a.finished for a in done)
            totals.incr(FRAMEWORK, f"{kind} phase wall ms", round(1000 * (end - start)))
    return totals.to_dict()


def check_invariants(d: Driver) -> None:
    """What must hold after every event."""
    s = d.s
    for w in s.workers.values():
        running = [a for a in s.attempts.values() if a.state is State.RUNNING and a.wid == w.wid]
        if not w.alive:
            assert not running, f"attempts still running on lost worker {w.wid}"
        for kind in ("map", "reduce"):
            n = sum(1 for a in running if a.kind == kind)
            assert n <= w.slots, f"{w.wid} runs {n} {kind}s on {w.slots} slots"
            assert w.used[kind] == n, "the slots counted in use are the running attempts"
    for kind in ("map", "reduce"):
        # The free workers, and their buckets by free slots, are the workers' own counts.
        free = {w.wid: w.slots - w.used[kind] for w in s.workers.values()
                if w.alive and not w.draining and w.used[kind] < w.slots}
        assert s._free[kind] == free
        assert s._by_free[kind] == {n: sorted(wid for wid, f in free.items() if f == n)
                                    for n in set(free.values())}
    for job in s.jobs.values():
        # The counts a status call reads agree with the tasks themselves.
        for kind in ("map", "reduce"):
            tasks = job.tasks(kind)
            assert job.running[kind] == {t.index for t in tasks if t.state is State.RUNNING}
            assert job.succeeded[kind] == sum(t.state is State.SUCCEEDED for t in tasks)
            assert job.failed_attempts[kind] == sum(t.failures for t in tasks)
            # Speculation's indexes: its median's sorted durations (of every
            # attempt that ran to success, even one whose output was lost
            # later), and the running tasks that want a backup.
            assert job.durations[kind] == sorted(
                a.finished - a.started for t in tasks for a in t.attempts
                if a.state is State.SUCCEEDED or (a.error or {}).get("type") == "MapOutputLost")
            assert job.backups[kind] == {t.index for t in tasks if t.backup}
            assert all(tasks[i].state is State.RUNNING for i in job.backups[kind])
            # The progress sum kept by differences is the sum recounted.
            assert job.progress[kind] == sum(
                round(PROGRESS_UNITS * max((a.progress for a in t.running()), default=0.0))
                for t in tasks if t.state is State.RUNNING)
        # Its attempts that did not succeed, by when they ended (its page's list).
        assert job.unsuccessful == sorted(
            (a for t in job.maps + job.reduces for a in t.attempts
             if a.state in (State.FAILED, State.KILLED)), key=ended_order)
        # The counters kept task by task are those counted afresh.
        assert job.counters_so_far().to_dict() == counters_afresh(job)
        for task in job.maps + job.reduces:
            running_task = task.running()
            # A speculative job may run one backup, on another worker; others never run a task twice.
            limit = 2 if getattr(job, "speculative", False) else 1
            assert len(running_task) <= limit, f"task {job.id} {task.kind} {task.index} runs too often"
            assert len({a.wid for a in running_task}) == len(running_task), "two attempts on one worker"
            if running_task:
                assert task.state is State.RUNNING, f"{task.kind} {task.index} runs but is {task.state}"
            if job.state is not State.RUNNING:
                assert not task.running(), "a finished job still has running attempts"
            else:
                assert task.failures <= job.max_attempts, f"{task.kind} {task.index} failed too often"


# ---------------------------------------------------------------- launching


def test_maps_are_launched_on_free_slots_only() -> None:
    """A worker must never be given more tasks than it has slots for."""
    d = Driver()
    d.join("w1", slots=2)
    acts = d.submit("j1", maps=5, reduces=1)
    maps = launches(acts, LaunchMap)
    assert [(a.wid, a.index) for a in maps] == [("w1", 0), ("w1", 1)]
    assert len(launches(acts, LaunchReduce)) == 1  # reduces have their own slots
    check_invariants(d)
    acts = d.succeed(maps[0].attempt_id)
    assert [(a.wid, a.index) for a in launches(acts, LaunchMap)] == [("w1", 2)]
    acts = d.join("w2", slots=1)
    assert [(a.wid, a.index) for a in launches(acts, LaunchMap)] == [("w2", 3)]
    check_invariants(d)
    # No free map slot: a new job's map waits (its reduce has a slot of its own).
    assert launches(d.submit("j2", maps=1, reduces=1), LaunchMap) == []


def test_no_worker_means_no_launch_until_one_joins() -> None:
    """Jobs submitted before any worker wait; they start when a worker joins."""
    d = Driver()
    assert d.submit("j1", maps=1, reduces=1) == []
    acts = d.join("w1", slots=1)
    assert [type(a) for a in acts] == [InitJob, LaunchMap, LaunchReduce]


def test_init_job_precedes_the_first_task_of_a_job_on_each_worker() -> None:
    """A worker must know a job (its module, its output) before it runs any of its tasks."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=4, reduces=2)
    d.join("w3", slots=1)
    d.run_to_completion()
    seen: set[tuple[str, str]] = set()
    inits = []
    for a in d.log:
        if isinstance(a, InitJob):
            inits.append((a.wid, a.job_id))
            seen.add((a.wid, a.job_id))
        elif isinstance(a, LAUNCHES):
            assert (a.wid, a.job_id) in seen, f"{a} before InitJob"
    assert len(inits) == len(set(inits)), "a job was initialised twice on one worker"
    assert {wid for wid, _ in inits} == {"w1", "w2", "w3"}


def test_reduces_get_announced_map_outputs() -> None:
    """Reduces fetch during the map phase: each map output's location must reach them."""
    d = Driver()
    d.join("w1", slots=1)
    acts = d.submit("j1", maps=2, reduces=1)
    [m0] = launches(acts, LaunchMap)
    [r0] = launches(acts, LaunchReduce)
    assert r0.map_outputs == ()
    acts = d.succeed(m0.attempt_id, kinds=("num", "str"))
    loc = MapLocation(0, "w1", "host-w1", 9000, ("num", "str"), m0.attempt_id)
    assert AnnounceMapOutputs("j1", (loc,), ("w1",)) in acts
    # A reduce launched later (a retry) gets every known location at launch.
    acts = d.fail(r0.attempt_id)
    [r1] = launches(acts, LaunchReduce)
    assert r1.map_outputs == (loc,)


def test_announcements_go_to_every_worker_running_a_reduce_of_the_job() -> None:
    """Each worker with a reduce of the job needs the location, and only once."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    acts = d.submit("j1", maps=2, reduces=2)
    m = launches(acts, LaunchMap)[0]
    acts = d.succeed(m.attempt_id)
    [ann] = [a for a in acts if isinstance(a, AnnounceMapOutputs)]
    assert ann.wids == ("w1", "w2")


# ---------------------------------------------------------------- failures


def test_failed_attempt_is_retried_on_another_worker() -> None:
    """A task that failed on a worker (a bad disk, a missing library) should try elsewhere."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    acts = d.submit("j1", maps=1, reduces=1)
    [m] = launches(acts, LaunchMap)
    acts = d.fail(m.attempt_id)
    [retry] = launches(acts, LaunchMap)
    assert retry.index == 0
    assert retry.wid != m.wid
    assert retry.attempt_id != m.attempt_id


def test_a_failed_task_waits_for_a_worker_it_did_not_fail_on() -> None:
    """As Hadoop's: never again where it failed while another worker may
    take it, even a busy one. A disk full on one worker failed a job of
    --max-attempts 2 twice there while the other worker was busy; the free
    worker takes the next task meanwhile."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=3, reduces=1, max_attempts=2)
    [on_w1] = d.running("j1", "map", wid="w1")
    [on_w2] = d.running("j1", "map", wid="w2")
    acts = d.fail(on_w1.id)
    [next_on_w1] = launches(acts, LaunchMap)
    assert (next_on_w1.wid, next_on_w1.index) == ("w1", 2)
    acts = d.fail(next_on_w1.attempt_id)  # w1 is free again: both failed tasks wait
    assert launches(acts, LaunchMap) == []
    acts = d.succeed(on_w2.id)
    [retry] = launches(acts, LaunchMap)
    assert retry.wid == "w2" and retry.index in (on_w1.index, 2)
    [last] = launches(d.succeed(retry.attempt_id), LaunchMap)
    assert last.wid == "w2" and {retry.index, last.index} == {on_w1.index, 2}
    d.succeed(last.attempt_id)
    assert d.s.jobs["j1"].succeeded["map"] == 3 and d.s.jobs["j1"].state is State.RUNNING
    check_invariants(d)


def test_a_task_that_failed_on_every_worker_runs_again_on_one() -> None:
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=1, reduces=1, max_attempts=4)
    [a] = d.running("j1", "map")
    [b] = launches(d.fail(a.id), LaunchMap)
    assert b.wid != a.wid
    [c] = launches(d.fail(b.attempt_id), LaunchMap)
    assert c.index == 0


def test_failing_max_attempts_times_fails_the_job_and_kills_running_attempts() -> None:
    """A deterministic bug must end the job with its error, not retry forever or leave tasks running."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=3, reduces=1, max_attempts=3)
    for _ in range(2):
        [a] = d.running("j1", "map", 0)
        acts = d.fail(a.id)
        assert not any(isinstance(x, JobDone) for x in acts)
    others = {a.id for a in d.running("j1")} - {a.id for a in d.running("j1", "map", 0)}
    [last] = d.running("j1", "map", 0)
    acts = d.fail(last.id)
    done = [x for x in acts if isinstance(x, JobDone)]
    assert done == [JobDone("j1", State.FAILED, ERROR)]
    killed = {x.attempt_id for x in acts if isinstance(x, KillAttempt)}
    assert killed == others and others
    assert {x.wid for x in acts if isinstance(x, DestroyJob)} == {"w1", "w2"}
    assert launches(acts) == []
    assert d.running("j1") == []
    assert d.s.jobs["j1"].state is State.FAILED
    # Late reports of the killed attempts change nothing.
    for aid in killed:
        assert d.succeed(aid) == []
        assert d.fail(aid) == []
    check_invariants(d)


def test_a_job_whose_tasks_count_too_many_distinct_counters_fails() -> None:
    """Each task may keep 250 counters; together a job's may not exceed
    MAX_STEP_USER_COUNTERS: its maps counting the same names are fine, but
    names that differ from map to map (a counter per key) fail the job at
    the attempt that crosses the limit, its running attempts killed."""
    d = Driver()
    d.join("w1", slots=3)
    maps = -(-MAX_STEP_USER_COUNTERS // 250) + 1
    d.submit("j2", maps=3, reduces=1)

    def succeed(job_id: str, names: list[str]) -> list[Any]:
        [a, *_] = d.running(job_id, "map")
        result = AttemptResult({"user": dict.fromkeys(names, 1), FRAMEWORK: {"x": 1}}, ("str",))
        return d._record(d.s.attempt_succeeded(a.id, d.tick(), result))

    same = [f"n{i}" for i in range(250)]
    for _ in range(3):
        assert not any(isinstance(x, JobDone) for x in succeed("j2", same))
    assert d.s.jobs["j2"].user_counters == {("user", n) for n in same}
    d.submit("j1", maps=maps, reduces=1)
    for m in range(maps - 1):
        acts = succeed("j1", [f"k{m}-{i}" for i in range(250)])
        assert not any(isinstance(x, JobDone) for x in acts)
    acts = succeed("j1", [f"k{maps}-{i}" for i in range(250)])
    [done] = [x for x in acts if isinstance(x, JobDone)]
    assert done.state is State.FAILED and done.error is not None
    assert done.error["type"] == "TooManyCounters"
    assert (f"counted {maps * 250:,} distinct counters, more than the "
            f"{MAX_STEP_USER_COUNTERS:,} a step of a job may have") in done.error["message"]
    assert d.s.jobs["j1"].state is State.FAILED and d.running("j1") == []
    check_invariants(d)


def test_counters_restored_after_a_restart_count_towards_the_limit() -> None:
    """A resumed step's committed tasks (from the journal) keep their
    counter names: the limit does not start again after a restart."""
    d = Driver()
    d.join("w1", slots=2)
    restored = {"user": {f"r{i}": 1 for i in range(MAX_STEP_USER_COUNTERS - 100)}}
    d._record(d.s.resume("j1", 1, 2, d.tick(), done={("reduce", 0): Committed("j1_r00000_0", restored)}))
    assert len(d.s.jobs["j1"].user_counters) == MAX_STEP_USER_COUNTERS - 100
    [m] = d.running("j1", "map")
    result = AttemptResult({"user": {f"m{i}": 1 for i in range(200)}}, ("str",))
    acts = d._record(d.s.attempt_succeeded(m.id, d.tick(), result))
    [done] = [x for x in acts if isinstance(x, JobDone)]
    assert done.state is State.FAILED and done.error is not None
    assert done.error["type"] == "TooManyCounters"


def test_failures_of_other_tasks_do_not_add_up() -> None:
    """max_attempts counts per task: many tasks failing once each is not a reason to fail the job."""
    d = Driver()
    d.join("w1", slots=4)
    d.join("w2", slots=4)
    d.submit("j1", maps=4, reduces=1, max_attempts=2)
    for i in range(4):
        [a] = d.running("j1", "map", i)
        d.fail(a.id)
    assert d.s.jobs["j1"].state is State.RUNNING
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED


def test_a_worker_with_repeated_failures_gets_no_more_attempts_of_the_job() -> None:
    """A broken worker must not eat every retry of a job while healthy workers exist."""
    d = Driver()
    d.join("w1", slots=1)
    d.submit("j1", maps=6, reduces=1, max_attempts=10)
    for _ in range(BLACKLIST_FAILURES):
        [a] = d.running("j1", "map", wid="w1")
        d.fail(a.id)
    # Blacklisted, but the only worker: it keeps running the job rather than hang it.
    [a1] = d.running("j1", "map", wid="w1")
    acts = d.join("w2", slots=1)
    assert {x.wid for x in launches(acts, LaunchMap)} == {"w2"}
    acts = d.succeed(a1.id)
    assert launches(acts, LaunchMap) == []  # w1 is free but blacklisted, w2 is busy
    acts = d.lose("w2")
    assert {x.wid for x in launches(acts, LaunchMap)} == {"w1"}  # the last usable worker


def test_a_lost_workers_running_attempts_and_completed_maps_are_rescheduled() -> None:
    """Map outputs live on the worker's disk: if reduces still need them, the maps run again."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=3, reduces=2)
    m_on_w1 = d.running("j1", "map", wid="w1")
    assert m_on_w1
    for a in m_on_w1:
        d.succeed(a.id)
    done_on_w1 = {a.index for a in m_on_w1}
    running_on_w1 = {(a.kind, a.index) for a in d.running("j1", wid="w1")}
    assert done_on_w1 and running_on_w1
    acts = d.lose("w1")
    relaunched = {(a.index if isinstance(a, LaunchMap) else a.partition,
                   "map" if isinstance(a, LaunchMap) else "reduce") for a in launches(acts)}
    assert all(x.wid == "w2" for x in launches(acts))
    need = {(i, "map") for i in done_on_w1} | {(i, k) for k, i in running_on_w1}
    # Everything w1 held is pending again or already relaunched on w2 (w2's slots permitting).
    pending_or_running = {
        (t.index, t.kind) for t in d.s.jobs["j1"].maps + d.s.jobs["j1"].reduces
        if t.state in (State.PENDING, State.RUNNING)
    }
    assert need <= pending_or_running
    assert relaunched <= need | pending_or_running
    assert all(loc.wid != "w1" for loc in d.s.jobs["j1"].map_locations.values())
    check_invariants(d)
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED
    assert d.s.jobs["j1"].map_locations.keys() == {0, 1, 2}
    assert all(loc.wid == "w2" for loc in d.s.jobs["j1"].map_locations.values())


def test_a_drained_worker_takes_no_task_moves_its_outputs_then_stops() -> None:
    """Drain: no new tasks; its completed maps run again elsewhere while it
    still serves them (their locations stay until the new ones are in);
    then StopWorker, before the job ends."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=4, reduces=2)
    for a in d.running("j1", "map", wid="w1"):
        d.succeed(a.id)
    on_w1 = {i for i, loc in d.s.jobs["j1"].map_locations.items() if loc.wid == "w1"}
    assert on_w1
    since = len(d.log)
    acts = d._record(d.s.drain("w1", d.tick()))
    assert not [a for a in acts if isinstance(a, StopWorker)]
    assert all(x.wid == "w2" for x in launches(acts))
    # Still served from w1 until the new outputs are in.
    assert {i for i, loc in d.s.jobs["j1"].map_locations.items() if loc.wid == "w1"} == on_w1
    stops: list[Any] = []
    for _ in range(50):
        live = d.running("j1", "map") + d.running("j1", "reduce", wid="w1")
        if not live:
            break
        for a in live:
            stops += [x for x in d.complete(a.id) if isinstance(x, StopWorker)]
        check_invariants(d)
        assert all(x.wid == "w2" for x in launches(d.log[since:]))
    assert stops == [StopWorker("w1")]
    assert d.s.jobs["j1"].state is State.RUNNING  # w1 stops before the job ends
    assert all(loc.wid == "w2" for loc in d.s.jobs["j1"].map_locations.values())
    assert not d.running(wid="w1")
    d.lose("w1")  # it stopped
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED


def test_maps_being_moved_off_a_drained_worker_are_done_when_the_job_succeeds() -> None:
    """The reduces finish while a drain moves maps: the job's maps are all
    done (their committed outputs are what the reduces read), not killed;
    a succeeded job showed "maps 7/13 done" in its status and history."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=4, reduces=1)
    for _ in range(10):
        for a in d.running("j1", "map"):
            d.succeed(a.id)
    job = d.s.jobs["j1"]
    assert job.all_succeeded("map") and d.running("j1", "reduce")
    d._record(d.s.drain("w1", d.tick()))
    moved = [t.index for t in job.maps if t.state is not State.SUCCEEDED]
    assert moved  # w1's maps run again elsewhere
    for a in d.running("j1", "reduce"):
        d.succeed(a.id)
    check_invariants(d)
    assert job.state is State.SUCCEEDED
    assert [t.state for t in job.maps] == [State.SUCCEEDED] * 4 and job.all_succeeded("map")


def test_a_map_run_again_off_a_drained_worker_may_get_a_backup() -> None:
    """The map's old, committed attempt still serves its output while it
    runs again: that is no attempt committing now, and a straggling rerun
    gets its backup."""
    d = Driver()
    for wid in ("w1", "w2", "w3", "w4"):
        d.join(wid, slots=1)
    d.submit("j", maps=2, reduces=1, speculative=True)
    for a in d.running("j", "map"):
        d.succeed(a.id)
    index, drained = 0, d.s.jobs["j"].map_locations[0].wid
    d._record(d.s.drain(drained, d.tick()))
    (rerun,) = d.running("j", "map", index)
    d.tick(100)
    backups = launches(d._record(d.s.tick(d.now)), LaunchMap)
    assert [(b.index, b.wid != rerun.wid) for b in backups] == [(index, True)]
    check_invariants(d)


def drained_map_output(**submit: Any) -> tuple[Driver, int, MapLocation, Attempt]:
    """A job of two maps done and a reduce running, on three workers of a
    slot; the worker of one map's output (not the reduce's) drained."""
    d = Driver()
    for wid in ("w1", "w2", "w3"):
        d.join(wid, slots=1)
    d.submit("j", maps=2, reduces=1, **submit)
    for a in d.running("j", "map"):
        d.succeed(a.id)
    (reduce,) = d.running("j", "reduce")
    index, loc = next((i, loc) for i, loc in d.s.jobs["j"].map_locations.items()
                      if loc.wid != reduce.wid)
    d._record(d.s.drain(loc.wid, d.tick()))
    return d, index, loc, reduce


@pytest.mark.parametrize("how", ["fetch failures", "worker lost"])
def test_a_lost_output_of_a_map_run_again_off_a_drained_worker_is_not_run_a_third_time(
        how: str) -> None:
    """The old output, still served while the map runs again, is lost (it
    cannot be fetched, or its worker is lost): the map is running already
    and gets no second attempt beside the rerun."""
    d, index, loc, reduce = drained_map_output()
    (rerun,) = d.running("j", "map", index)
    since = len(d.log)
    if how == "worker lost":
        d.lose(loc.wid)
    else:
        for _ in range(FETCH_FAILURES_TO_RERUN):
            d.fetch_failed(reduce.id, index, loc.attempt_id)
    assert index not in d.s.jobs["j"].map_locations, "the output counts as lost"
    assert d.running("j", "map", index) == [rerun]
    assert not launches(d.log[since:], LaunchMap)
    check_invariants(d)
    d.run_to_completion()
    assert d.done()["j"].state is State.SUCCEEDED


def test_a_map_that_fails_to_run_again_off_a_drained_worker_keeps_its_output_there() -> None:
    """Moving a map's output off a drained worker is no reason to fail its
    job: when every attempt to run it again fails, the old output, still
    served, stays the map's; the worker stops once the job needs it no
    more."""
    d, index, loc, _ = drained_map_output(max_attempts=2)
    for _ in range(2):  # max_attempts failures
        (rerun,) = d.running("j", "map", index)
        d.fail(rerun.id)
        check_invariants(d)
    assert [a for a in d.log if isinstance(a, OutputKept)] == [OutputKept("j", index, loc.wid, 2)]
    task = d.s.jobs["j"].maps[index]
    assert d.s.jobs["j"].state is State.RUNNING
    assert task.state is State.SUCCEEDED and task.committed == loc.attempt_id
    assert d.s.jobs["j"].map_locations[index] == loc
    assert not d.running("j", "map")
    assert StopWorker(loc.wid) not in d.log, "its output is still needed"
    d.run_to_completion()
    assert d.done()["j"].state is State.SUCCEEDED
    assert StopWorker(loc.wid) in d.log


def test_a_backup_of_a_map_run_again_in_vain_off_a_drained_worker_is_killed() -> None:
    """A speculative job: the rerun's backup runs when the rerun uses the
    last attempt. The map keeps its old output, and the backup is killed
    rather than followed by more attempts than the job allows."""
    d, index, loc, _ = drained_map_output(max_attempts=1, speculative=True)
    d.join("w4", slots=1)
    (rerun,) = d.running("j", "map", index)
    d._record(d.s.tick(d.tick(5)))
    (backup,) = [a for a in d.running("j", "map", index) if a.id != rerun.id]
    since = len(d.log)
    d.fail(rerun.id)
    check_invariants(d)
    task = d.s.jobs["j"].maps[index]
    assert task.state is State.SUCCEEDED and task.committed == loc.attempt_id
    assert KillAttempt(backup.wid, "j", backup.id) in d.log[since:]
    assert OutputKept("j", index, loc.wid, 1) in d.log[since:]
    for _ in range(3):
        d._record(d.s.tick(d.tick(5)))
    assert not launches(d.log[since:], LaunchMap), "no attempt beyond the last"
    d.run_to_completion()
    assert d.done()["j"].state is State.SUCCEEDED


def test_a_worker_blacklisted_for_a_job_is_used_when_the_others_drain() -> None:
    """Never blacklisting the last usable worker counts a draining one as
    unusable: else the job's pending tasks would wait for ever."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j", maps=8, reduces=1, max_attempts=8)
    for _ in range(10):
        failing = d.running("j", "map", wid="w1")
        if d.s.workers["w1"].failures.get("j", 0) >= BLACKLIST_FAILURES or not failing:
            break
        d.fail(failing[0].id)
    assert d.s.workers["w1"].failures["j"] >= BLACKLIST_FAILURES
    d._record(d.s.drain("w2", d.tick()))
    for a in d.running("j", wid="w2"):
        d.complete(a.id)
    check_invariants(d)
    assert d.running("j", wid="w1"), "the blacklisted worker is the only one left"


def test_the_last_worker_drains_when_its_jobs_end() -> None:
    d = Driver()
    d.join("w1", slots=2)
    d.submit("j1", maps=2, reduces=1)
    for a in d.running("j1", "map"):
        d.succeed(a.id)
    acts = d._record(d.s.drain("w1", d.tick()))
    assert not [a for a in acts if isinstance(a, (StopWorker, LaunchMap))]
    assert d.s.jobs["j1"].maps[0].state is State.SUCCEEDED  # nowhere else to run it
    d.submit("j2", maps=1, reduces=1)
    assert not d.running("j2")  # a draining worker takes no new job either
    (reduce,) = d.running("j1", "reduce")
    acts = d.complete(reduce.id)
    # j1 ended; j2 has nothing on w1 (it waits for another worker): w1 stops.
    assert d.done()["j1"].state is State.SUCCEEDED
    assert [a for a in acts if isinstance(a, StopWorker)] == [StopWorker("w1")]


def test_completed_maps_of_a_lost_worker_stay_done_when_no_reduce_needs_them() -> None:
    """Once every reduce has its output, re-running maps would be wasted work."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=2, reduces=2)
    d.submit("j2", maps=1, reduces=1)
    for a in d.running("j1", "map"):
        d.succeed(a.id)
    for a in d.running("j1", "reduce"):
        d.complete(a.id)
    assert d.done()["j1"].state is State.SUCCEEDED
    acts = d.lose("w1")
    assert all(a.job_id == "j2" for a in launches(acts))


def test_a_stale_attempts_success_after_a_loss_is_ignored() -> None:
    """A worker declared lost may still report: its attempt was replaced and must not count."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=1, reduces=1)
    [m] = d.running("j1", "map")
    d.lose(m.wid)
    [m2] = d.running("j1", "map")
    assert m2.id != m.id
    assert d.succeed(m.id) == []
    assert d.fail(m.id) == []
    assert d.s.jobs["j1"].maps[0].state is State.RUNNING
    assert d.s.jobs["j1"].maps[0].failures == 0
    assert 0 not in d.s.jobs["j1"].map_locations
    assert d.s.may_commit(m.id) is False
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED


def test_events_for_unknown_workers_and_attempts_are_harmless() -> None:
    """Messages can arrive late or twice over the network."""
    d = Driver()
    assert d.lose("nobody") == []
    assert d.succeed("no-such-attempt") == []
    assert d.fail("no-such-attempt") == []
    d.join("w1", slots=1)
    d.submit("j1", maps=1, reduces=1)
    d.lose("w1")
    assert d.lose("w1") == []


# ---------------------------------------------------------------- fetch failures


def fetch_setup(reduces: int) -> tuple[Driver, str, list[str]]:
    """Map 0 done on w1, then ``reduces`` reduces running on w1 and w2:
    (driver, map attempt, reduce attempts)."""
    d = Driver()
    d.join("w1", slots=1)
    acts = d.submit("j1", maps=1, reduces=reduces)
    [m] = launches(acts, LaunchMap)
    d.succeed(m.attempt_id)
    d.join("w2", slots=reduces)
    rs = [a.id for a in d.running("j1", "reduce")]
    assert len(rs) == reduces
    return d, m.attempt_id, rs


def test_one_reducers_first_report_among_many_does_not_rerun_a_map() -> None:
    """A hiccup seen by one reducer of many is not a lost output: three
    reports, or reports from half the running reduces, are."""
    d, m, rs = fetch_setup(reduces=6)
    assert d.fetch_failed(rs[0], 0, m) == []
    assert d.fetch_failed(rs[0], 0, m) == []
    assert 0 in d.s.jobs["j1"].map_locations
    acts = d.fetch_failed(rs[0], 0, m)
    assert [(a.wid, a.index) for a in launches(acts)] == [("w2", 0)]
    d2, m2, rs2 = fetch_setup(reduces=6)
    d2.fetch_failed(rs2[0], 0, m2)
    d2.fetch_failed(rs2[1], 0, m2)
    assert launches(d2.fetch_failed(rs2[2], 0, m2))  # half of the six


def test_a_lost_output_fails_its_attempt_and_runs_again_on_another_worker() -> None:
    """As in Hadoop, the map attempt whose output cannot be served is a
    failed attempt: counted, charged to its worker, avoided for the retry;
    the new location reaches the reduces."""
    d, m, rs = fetch_setup(reduces=2)
    acts = d.fetch_failed(rs[0], 0, m)  # one of two running reduces
    [m2] = launches(acts, LaunchMap)
    assert m2.wid == "w2"
    assert d.s.attempts[m].state is State.FAILED
    assert d.s.attempts[m].error["type"] == "MapOutputLost"
    job = d.s.jobs["j1"]
    assert job.maps[0].failures == 1 and job.maps[0].committed is None
    assert d.s.workers["w1"].failures == {"j1": 1}
    assert 0 not in job.map_locations
    acts = d.succeed(m2.attempt_id)
    [loc] = {a.map_outputs for a in acts if isinstance(a, AnnounceMapOutputs)}
    assert (loc[0].wid, loc[0].attempt_id) == ("w2", m2.attempt_id)
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED


def test_a_late_report_about_an_older_output_is_ignored() -> None:
    """A report sent before the reducer heard of the re-run must not
    condemn the new output."""
    d, m, rs = fetch_setup(reduces=2)
    [m2] = launches(d.fetch_failed(rs[0], 0, m), LaunchMap)
    d.succeed(m2.attempt_id)
    assert d.fetch_failed(rs[1], 0, m) == []
    assert d.fetch_failed(rs[1], 0, "no-such-attempt") == []
    assert d.s.jobs["j1"].map_locations[0].attempt_id == m2.attempt_id
    assert d.s.attempts[m2.attempt_id].state is State.SUCCEEDED


def test_reports_from_maps_dead_or_unknown_attempts_are_harmless() -> None:
    """Only a live reduce attempt may blame a map output."""
    d, m, rs = fetch_setup(reduces=1)
    assert d.fetch_failed(m, 0, m) == []  # a map does not fetch
    assert d.fetch_failed("no-such-attempt", 0) == []
    assert d.fetch_failed(rs[0], 7) == []  # no such map
    d.fail(rs[0])
    assert d.fetch_failed(rs[0], 0, m) == []
    assert d.s.jobs["j1"].maps[0].failures == 0


def cut_off_setup(workers: int) -> tuple[Driver, list[Attempt], dict[str, tuple[int, str]]]:
    """A map done on each of ``workers`` workers, then two reduces running
    on two of them: (driver, reduces, worker -> (map index, its attempt))."""
    d = Driver()
    for i in range(workers):
        d.join(f"w{i + 1}", slots=1)
    d.submit("j1", maps=workers, reduces=2)
    for a in d.running("j1", "map"):
        d.succeed(a.id)
    reduces = d.running("j1", "reduce")
    assert len(reduces) == 2 and reduces[0].wid != reduces[1].wid
    locations = d.s.jobs["j1"].map_locations.values()
    return d, reduces, {loc.wid: (loc.index, loc.attempt_id) for loc in locations}


def test_a_reduce_that_cannot_fetch_from_two_workers_is_the_one_cut_off() -> None:
    """Outputs a reduce of another worker fetched (it succeeded since): the
    reduce fails, not the maps (a worker whose TLS certificate expired
    blamed a healthy worker's map until the map had no attempts left, and
    the job failed)."""
    d, (r, other), maps = cut_off_setup(workers=3)
    d.succeed(other.id)
    far = sorted(set(maps) - {r.wid})
    d.fetch_failed(r.id, *maps[far[0]])  # one worker: its output may be lost
    acts = d.fetch_failed(r.id, *maps[far[1]])
    assert KillAttempt(r.wid, "j1", r.id) in acts
    assert d.s.attempts[r.id].state is State.FAILED
    error = d.s.attempts[r.id].error
    assert error["type"] == "FetchFailed" and r.wid in error["message"]
    assert all(w in error["message"] for w in far)
    index, attempt = maps[far[1]]
    assert d.s.jobs["j1"].map_locations[index].attempt_id == attempt
    assert all(r.id not in reports for reports in d.s.jobs["j1"].fetch_failures.values())
    assert all(x.wid != r.wid for x in launches(acts, LaunchReduce))
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED


def test_outputs_no_reduce_elsewhere_fetched_are_the_ones_lost() -> None:
    """Without a reduce of another worker that fetched them, two workers'
    outputs a reduce cannot fetch are lost (two workers died at once), not
    the reduce: the first of the job's reduces to report them was cut off."""
    d, (r, other), maps = cut_off_setup(workers=4)
    z1, z2 = sorted(set(maps) - {r.wid, other.wid})
    acts = [*d.fetch_failed(r.id, *maps[z1]), *d.fetch_failed(r.id, *maps[z2])]
    assert not any(isinstance(x, KillAttempt) for x in acts)
    assert d.s.attempts[r.id].state is State.RUNNING
    assert [d.s.attempts[maps[z][1]].error["type"] for z in (z1, z2)] == ["MapOutputLost"] * 2


def test_a_map_whose_output_is_lost_max_attempts_times_fails_the_job() -> None:
    """An output that cannot be served from anywhere must end the job, not
    loop forever."""
    d, m, rs = fetch_setup(reduces=1)
    d.s.jobs["j1"].max_attempts = 2
    [m2] = launches(d.fetch_failed(rs[0], 0, m), LaunchMap)
    d.succeed(m2.attempt_id)
    acts = d.fetch_failed(rs[0], 0, m2.attempt_id)
    [done] = [a for a in acts if isinstance(a, JobDone)]
    assert done.state is State.FAILED and done.error["type"] == "MapOutputLost"


def test_a_lost_workers_maps_forget_their_fetch_failure_reports() -> None:
    """Reports about an output that is gone anyway do not count against
    the re-run map's new output."""
    d, m, rs = fetch_setup(reduces=6)
    d.fetch_failed(rs[0], 0, m)
    d.fetch_failed(rs[0], 0, m)
    d.join("w3", slots=1)
    [m2] = launches(d.lose("w1"), LaunchMap)
    d.succeed(m2.attempt_id)
    assert d.fetch_failed(rs[0], 0, m2.attempt_id) == []
    assert d.s.jobs["j1"].map_locations[0].attempt_id == m2.attempt_id


# ---------------------------------------------------------------- commit


def test_may_commit_grants_exactly_one_attempt_per_reduce_task() -> None:
    """Two attempts renaming their part files would make the output depend on timing."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=1, reduces=1)
    [r] = d.running("j1", "reduce")
    [m] = d.running("j1", "map")
    assert d.s.may_commit(m.id) is False  # maps do not commit output
    assert d.s.may_commit("no-such-attempt") is False
    assert d.s.may_commit(r.id) is True
    assert d.s.may_commit(r.id) is True  # asking again (a retried RPC) is fine
    d.lose(r.wid)
    [r2] = d.running("j1", "reduce")
    assert d.s.may_commit(r.id) is False  # the dead attempt may not commit any more
    granted = [a for a in (r.id, r2.id) if d.s.may_commit(a)]
    assert len(granted) <= 1


@pytest.mark.parametrize("end", ["fails", "its worker is lost"])
def test_an_attempt_allowed_to_commit_that_then_ends_does_not_block_the_task(end: str) -> None:
    """If the attempt that got the commit dies before finishing (its rename
    raised, or its worker was lost between may_commit and attempt_done), a
    retry must be able to commit."""
    d = Driver()
    d.join("w1", slots=1)
    d.join("w2", slots=1)
    d.submit("j1", maps=1, reduces=1)
    d.succeed(d.running("j1", "map")[0].id)
    [r] = d.running("j1", "reduce")
    assert d.s.may_commit(r.id)
    if end == "fails":
        d.fail(r.id)
    else:
        d.lose(r.wid)
    [r2] = d.running("j1", "reduce")
    assert d.s.may_commit(r2.id) is True
    d.succeed(r2.id)
    assert d.done()["j1"].state is State.SUCCEEDED


def test_committed_attempts_counters_are_the_ones_kept() -> None:
    """Job counters add up the committed attempt of each task only."""
    d = Driver()
    d.join("w1", slots=1)
    d.submit("j1", maps=1, reduces=1)
    [m] = d.running("j1", "map")
    d.succeed(m.id)
    task = d.s.jobs["j1"].maps[0]
    assert task.committed == m.id
    assert d.s.attempts[m.id].counters["user"]["n"] == 1


def straggling_reduce_with_a_backup(d: Driver, max_attempts: int) -> tuple[Attempt, Attempt]:
    """Job j1 on two workers: reduce 0 done, reduce 1 slow enough to get a backup attempt."""
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=1, reduces=2, max_attempts=max_attempts, speculative=True)
    d.succeed(d.running("j1", "map")[0].id)
    d.complete(d.running("j1", "reduce", 0)[0].id)
    d.tick(60)
    d._record(d.s.tick(d.now))
    first, backup = d.running("j1", "reduce", 1)
    assert first.wid != backup.wid
    return first, backup


def test_an_attempt_failing_beside_its_backup_counts_at_once() -> None:
    """The task stays running (its backup runs on): its failed attempt
    still counts in the counters so far."""
    d = Driver()
    first, backup = straggling_reduce_with_a_backup(d, max_attempts=4)
    job = d.s.jobs["j1"]
    before = job.counters_so_far().to_dict()
    assert "failed reduce attempts" not in before[FRAMEWORK]
    d.fail(first.id)
    assert job.reduces[1].state is State.RUNNING
    counters = job.counters_so_far().to_dict()
    assert counters[FRAMEWORK]["failed reduce attempts"] == 1
    assert counters == counters_afresh(job)


def test_a_straggler_that_failed_once_gets_its_backup_where_it_failed_if_nowhere_else() -> None:
    """The worker running it is no place for its backup, and the one it
    failed on is the only other: the backup runs there (it never ran, as
    if the worker running the task were still untried)."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=1, reduces=2, speculative=True)
    d.succeed(d.running("j1", "map")[0].id)
    d.complete(d.running("j1", "reduce", 0)[0].id)
    [first] = d.running("j1", "reduce", 1)
    d.fail(first.id)
    [second] = d.running("j1", "reduce", 1)
    assert second.wid != first.wid
    d.tick(60)
    d._record(d.s.tick(d.now))
    assert {a.wid for a in d.running("j1", "reduce", 1)} == {first.wid, second.wid}


def test_speculative_backup_of_a_straggler_runs_on_another_worker() -> None:
    """A backup on the straggler's own worker would be as slow as the straggler."""
    d = Driver()
    first, backup = straggling_reduce_with_a_backup(d, max_attempts=4)
    check_invariants(d)
    assert d.s.may_commit(first.id) is True
    assert d.s.may_commit(backup.id) is False  # exactly one of the two may commit
    acts = d.succeed(first.id)
    assert KillAttempt(backup.wid, "j1", backup.id) in acts
    assert d.done()["j1"].state is State.SUCCEEDED


def test_the_losing_speculative_attempts_commit_denial_does_not_fail_the_job() -> None:
    """Being refused the commit because the other attempt won is not a failure of the task."""
    d = Driver()
    first, backup = straggling_reduce_with_a_backup(d, max_attempts=1)
    assert d.s.may_commit(first.id) is True  # first is renaming its part file...
    assert d.s.may_commit(backup.id) is False
    denied = {"type": "CommitDenied", "message": "another attempt committed first", "traceback": ""}
    acts = d._record(d.s.attempt_failed(backup.id, d.tick(), denied))
    assert not any(isinstance(a, JobDone) for a in acts)
    assert KillAttempt(first.wid, "j1", first.id) not in acts
    d.succeed(first.id)
    assert d.done()["j1"].state is State.SUCCEEDED


def test_watching_for_stragglers_costs_the_running_tasks_not_the_finished_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick and a map done of a speculative job look at its running
    tasks only: with 1,000 maps of which 996 are done, no task's attempts
    are listed beyond the 4 that run (and the straggler still gets its backup)."""
    d = Driver()
    d.join("w1", slots=2)
    d.join("w2", slots=2)
    d.submit("j1", maps=1000, reduces=1, speculative=True)
    for _ in range(996):
        d.succeed(d.running("j1", "map")[0].id)
    listed: list[int] = []
    running = Task.running
    monkeypatch.setattr(Task, "running", lambda t: listed.append(t.index) or running(t))
    d.tick(60)
    assert d._record(d.s.tick(d.now)) == []  # every running map straggles; no slot is free
    assert set(listed) <= {996, 997, 998, 999}
    listed.clear()
    acts = d.succeed(d.running("j1", "map", 996)[0].id)  # a slot frees: a backup takes it
    assert set(listed) <= {996, 997, 998, 999}
    backups = launches(acts, LaunchMap)
    assert len(backups) == 1 and backups[0].index in (997, 998, 999)


def test_a_tasks_progress_is_its_furthest_running_attempts() -> None:
    """A status call reads a sum kept up to date: when the furthest of two
    attempts ends, the task counts the other's progress, not its own best."""
    d = Driver()
    first, backup = straggling_reduce_with_a_backup(d, max_attempts=4)
    job = d.s.jobs["j1"]
    d.s.heartbeat(first.wid, d.tick(), {first.id: 0.5})
    d.s.heartbeat(backup.wid, d.tick(), {backup.id: 0.9})
    assert job.progress["reduce"] == 0.9 * PROGRESS_UNITS
    assert d.s.may_commit(first.id) is True
    d._record(d.s.attempt_failed(backup.id, d.tick(), {
        "type": COMMIT_DENIED, "message": "another attempt committed first", "traceback": ""}))
    assert job.progress["reduce"] == 0.5 * PROGRESS_UNITS  # not the denied backup's 0.9
    d.succeed(first.id)
    assert job.progress["reduce"] == 0


# ---------------------------------------------------------------- jobs and workers


def test_two_jobs_both_finish_in_submission_order() -> None:
    """Jobs share the cluster: the first submitted gets slots first, and both complete."""
    d = Driver()
    d.join("w1", slots=2)
    d.submit("j1", maps=3, reduces=2)
    d.submit("j2", maps=2, reduces=1)
    first_maps = [a.job_id for a in d.log if isinstance(a, LaunchMap)]
    assert first_maps == ["j1", "j1"]
    d.run_to_completion()
    done = d.done()
    assert done["j1"].state is State.SUCCEEDED and done["j2"].state is State.SUCCEEDED
    assert sum(isinstance(a, JobDone) for a in d.log) == 2
    assert {(a.wid, a.job_id) for a in d.log if isinstance(a, DestroyJob)} == {("w1", "j1"), ("w1", "j2")}
    check_invariants(d)


def test_kill_job_kills_its_attempts_and_reports_killed() -> None:
    """A killed job must free its slots for the other jobs at once."""
    d = Driver()
    d.join("w1", slots=1)
    d.submit("j1", maps=2, reduces=1)
    d.submit("j2", maps=1, reduces=1)
    running = {a.id for a in d.running("j1")}
    acts = d._record(d.s.kill_job("j1", d.tick()))
    assert {a.attempt_id for a in acts if isinstance(a, KillAttempt)} == running
    assert [a.state for a in acts if isinstance(a, JobDone)] == [State.KILLED]
    assert {a.job_id for a in launches(acts)} == {"j2"}
    assert d.s.kill_job("j1", d.tick()) == []


def test_a_killed_step_says_its_job_s_id() -> None:
    """A two-step job killed in its second step said "job job_1-s2 was
    killed": the step's id, which no user knows."""
    d = Driver()
    d.join("w1", slots=1)
    d.submit("job_1-s2", maps=1, reduces=1)
    done = [a for a in d._record(d.s.kill_job("job_1-s2", d.tick())) if isinstance(a, JobDone)]
    assert [a.error for a in done] == [
        {"type": "JobKilled", "message": "job job_1 was killed", "traceback": ""}]


def test_expired_workers_are_those_not_heard_from() -> None:
    """A SIGSTOPped worker is only noticed by missing heartbeats."""
    d = Driver()
    d.s.worker_joined("w1", "h", 1, 1, 0.0)
    d.s.worker_joined("w2", "h", 2, 1, 0.0)
    d.s.heartbeat("w1", 8.0)
    assert d.s.expired_workers(10.0, expiry=10.0) == []  # exactly the expiry is still alive
    assert d.s.expired_workers(12.0, expiry=10.0) == ["w2"]
    d.s.worker_lost("w2", 12.0)
    assert d.s.expired_workers(12.0, expiry=10.0) == []  # lost once, not again
    d.s.heartbeat("w2", 13.0)  # a late heartbeat does not revive a lost worker
    assert d.s.workers["w2"].alive is False
    assert d.s.expired_workers(30.0, expiry=10.0) == ["w1"]
    d.s.heartbeat("nobody", 30.0)


def test_a_forgotten_job_leaves_nothing_on_its_workers() -> None:
    """Its failures per worker stayed for ever: a thousand jobs on, each
    worker listed every job that had failed on it."""
    d = Driver()
    d.join("w1", slots=1)
    d.submit("job_1", maps=1, reduces=0)
    (a,) = d.running()
    d.fail(a.id)
    w = d.s.workers["w1"]
    assert w.failures == {"job_1": 1} and w.failed_total == 1
    d._record(d.s.kill_job("job_1", d.tick()))
    d.s.forget_job("job_1")
    assert w.failures == {} and w.failed_total == 1  # the status page's lifetime count


def test_only_the_last_lost_workers_are_kept() -> None:
    """Each restart of a tasktracker is a new worker: the lost ones were
    kept for ever, and every tick looked at each."""
    d = Driver()
    d.join("live")
    for n in range(LOST_WORKERS_KEPT + 5):
        d.join(f"gone{n:03d}")
        d.lose(f"gone{n:03d}")
    lost = [wid for wid, w in d.s.workers.items() if not w.alive]
    assert lost == [f"gone{n:03d}" for n in range(5, LOST_WORKERS_KEPT + 5)]
    assert d.s.workers["live"].alive
    d.submit("job_1", maps=2, reduces=1)
    d.run_to_completion()
    assert d.done()["job_1"].state is State.SUCCEEDED


def test_a_worker_that_joined_first_and_is_lost_last_is_kept_even_draining() -> None:
    """Forgotten in the order they joined, the first worker went the moment
    it was lost: a draining one then raised KeyError in the drain's pass,
    its attempts left running, and the jobtracker's periodic loop with it."""
    d = Driver()
    d.join("old", slots=1)
    d.join("other", slots=1)
    d.submit("job_1", maps=2, reduces=1)
    for a in d.running(kind="map"):
        d.succeed(a.id)
    for n in range(LOST_WORKERS_KEPT + 1):
        d.join(f"gone{n:03d}")
        d.lose(f"gone{n:03d}")
    d._record(d.s.drain("old", d.tick()))
    d.lose("old")  # raised KeyError
    assert "old" in d.s.workers and not d.s.workers["old"].alive
    lost = [wid for wid, w in d.s.workers.items() if not w.alive]
    assert lost[-1] == "old" and len(lost) <= LOST_WORKERS_KEPT + 1
    d.run_to_completion()
    assert d.done()["job_1"].state is State.SUCCEEDED


def _sent(d: Driver, actions: list[Any], first: int = 1) -> list[Attempt]:
    """Number the launches among ``actions`` as the jobtracker sends them."""
    launched = [a for a in actions if isinstance(a, LAUNCHES)]
    for n, a in enumerate(launched, first):
        d.s.sent(a.attempt_id, n)
    return [d.s.attempts[a.attempt_id] for a in launched]


def test_an_attempt_its_worker_got_and_no_longer_runs_fails_and_runs_again() -> None:
    """Its result never reached us (a report dropped): it stayed running
    for ever, and its job with it."""
    d = Driver()
    d.join("w1", slots=2)
    lost, kept = _sent(d, d.submit("job_1", maps=2, reduces=0))
    actions = d._record(d.s.heartbeat("w1", d.tick(), live=[kept.id], launches=2))
    assert actions[0] == ResultLost("w1", "job_1", lost.id)
    assert lost.state is State.FAILED and lost.error["type"] == "ResultLost"
    assert "ended on tasktracker w1 without a result" in lost.error["message"]
    assert [a.index for a in d.running(kind="map")] == [0, 1]  # run again
    assert kept.state is State.RUNNING
    # Its retry, not yet numbered by the jobtracker, is not taken for lost.
    assert d.s.heartbeat("w1", d.tick(), live=[kept.id], launches=2) == []


def test_a_heartbeat_sent_before_the_launch_arrived_loses_nothing() -> None:
    """The worker's count of launches says which of ours it had got."""
    d = Driver()
    d.join("w1", slots=2)
    first, second = _sent(d, d.submit("job_1", maps=2, reduces=0))
    assert d.s.heartbeat("w1", d.tick(), live=[], launches=0) == []
    assert d.s.heartbeat("w1", d.tick(), live=[first.id], launches=1) == []
    assert d.s.heartbeat("w1", d.tick(), live=[first.id, second.id], launches=2) == []
    # A worker that does not count (an older one), or a malformed beat: nothing.
    assert d.s.heartbeat("w1", d.tick(), live=[]) == []
    assert d.s.heartbeat("w1", d.tick(), launches=5) == []
    assert [a.state for a in (first, second)] == [State.RUNNING] * 2
    # Ended attempts are not its to run: a result that arrived ends it first.
    d.succeed(first.id)
    assert d.s.heartbeat("w1", d.tick(), live=[second.id], launches=2) == []


def test_results_lost_again_and_again_fail_the_job() -> None:
    """Counted as failures: a worker that loses every result does not
    keep a job going round for ever."""
    d = Driver()
    d.join("w1", slots=1)
    _sent(d, d.submit("job_1", maps=1, reduces=0, max_attempts=2))
    (retry,) = _sent(d, d._record(d.s.heartbeat("w1", d.tick(), live=[], launches=1)), first=2)
    d._record(d.s.heartbeat("w1", d.tick(), live=[], launches=2))
    assert retry.state is State.FAILED
    (done,) = d.done().values()
    assert done.state is State.FAILED and done.error["type"] == "ResultLost"


# ---------------------------------------------------------------- random event sequences


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "speculative"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_event_sequences_keep_the_invariants(speculative: bool, data: st.DataObject) -> None:
    """No event order may run a task twice, overfill a worker, commit twice, or fail a job unfairly."""
    d = Driver()
    granted: dict[tuple[str, int], set[str]] = {}  # reduce task -> attempts allowed to commit
    committed_success: dict[tuple[str, int], set[str]] = {}
    real_failures: dict[tuple[str, str, int], int] = {}  # failures not caused by the scheduler
    jobs: list[str] = []
    killed_by_us: set[str] = set()
    n_workers = 0
    history: list[str] = []

    def live(aid: str) -> bool:
        a = d.s.attempts[aid]
        return a.state is State.RUNNING and d.s.jobs[a.job_id].state is State.RUNNING

    def ask_commit(aid: str) -> bool:
        a = d.s.attempts[aid]
        was_live = live(aid)
        if d.s.may_commit(aid):
            assert was_live, "a dead attempt was allowed to commit"
            granted.setdefault((a.job_id, a.index), set()).add(aid)
            return True
        return False

    def fail_for_real(aid: str) -> None:
        a = d.s.attempts[aid]
        if live(aid):
            key = (a.job_id, a.kind, a.index)
            real_failures[key] = real_failures.get(key, 0) + 1
        d.fail(aid)

    def report(aid: str, ok: bool) -> None:
        """What a tasktracker does when the attempt's child exits."""
        a = d.s.attempts[aid]
        if not ok:
            fail_for_real(aid)
            return
        if a.kind == "reduce":
            if live(aid) and not d.maps_done(a.job_id):
                return  # a reduce cannot finish before it has every map output
            if not ask_commit(aid):
                # The scheduler's decision, not a real failure: the
                # tasktracker reports it as such (see tasktracker.worker.TaskTracker._commit).
                d.fail(aid, {"type": COMMIT_DENIED, "message": "another attempt committed first",
                             "traceback": ""})
                return
        was_live = live(aid)
        d.succeed(aid)
        if was_live and a.kind == "reduce":
            committed_success.setdefault((a.job_id, a.index), set()).add(aid)

    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        alive = sorted(w.wid for w in d.s.workers.values() if w.alive)
        running = d.running()
        committable = [a for a in running if a.kind == "reduce" and d.maps_done(a.job_id)]
        choices = ["join", "submit"]
        if alive:
            choices += ["lose", "drain"]
        if running:
            choices += ["succeed", "succeed", "succeed", "fail"]
        if committable:
            choices += ["commit then die", "ask to commit"]
        reducing = [a for a in running if a.kind == "reduce"
                    and d.s.jobs[a.job_id].map_locations]
        if reducing:
            choices.append("fetch fails")
        if history:
            choices.append("stale")
        if jobs:
            choices.append("kill")
        if speculative and running:
            choices += ["wait", "wait"]
        if running:
            choices.append("progress")
        event = data.draw(st.sampled_from(choices), label="event")
        if event == "join" and n_workers < 5:
            n_workers += 1
            d.join(f"w{n_workers}", slots=data.draw(st.integers(1, 3), label="slots"))
        elif event == "submit" and len(jobs) < 3:
            job = f"j{len(jobs) + 1}"
            jobs.append(job)
            extra = {"speculative": True} if speculative else {}
            d.submit(job, data.draw(st.integers(0, 4), label="maps"),
                     data.draw(st.integers(1, 3), label="reduces"),
                     max_attempts=data.draw(st.integers(1, 4), label="max_attempts"), **extra)
        elif event == "wait":
            # Stragglers: time passes, the periodic tick may launch backup attempts.
            d.tick(data.draw(st.floats(0.5, 20), label="seconds"))
            d._record(d.s.tick(d.now))
        elif event == "lose":
            d.lose(data.draw(st.sampled_from(alive), label="lost"))
        elif event == "drain":
            d._record(d.s.drain(data.draw(st.sampled_from(alive), label="drained"), d.tick()))
        elif event == "progress":
            # A heartbeat says how far some of its worker's attempts are
            # (or one of another worker's, which must not count).
            a = data.draw(st.sampled_from(running), label="progressing attempt")
            wid = a.wid if data.draw(st.booleans(), label="own worker") else alive[0]
            d.s.heartbeat(wid, d.tick(), {a.id: data.draw(st.floats(0, 1), label="progress")})
        elif event in ("succeed", "fail"):
            a = data.draw(st.sampled_from(running), label="attempt")
            history.append(a.id)
            report(a.id, event == "succeed")
        elif event == "commit then die":
            # Allowed to commit, then the rename fails or the worker dies before attempt_done.
            a = data.draw(st.sampled_from(committable), label="committing attempt")
            history.append(a.id)
            if ask_commit(a.id):
                if data.draw(st.booleans(), label="worker dies"):
                    d.lose(a.wid)
                else:
                    fail_for_real(a.id)
        elif event == "fetch fails":
            # A reducer cannot fetch a map output (counted like a failure
            # of that map once enough reports came in).
            a = data.draw(st.sampled_from(reducing), label="reporting reduce")
            job = d.s.jobs[a.job_id]
            index = data.draw(st.sampled_from(sorted(job.map_locations)), label="map")
            before = job.maps[index].failures
            d.fetch_failed(a.id, index, job.map_locations[index].attempt_id)
            if job.maps[index].failures > before:
                key = (a.job_id, "map", index)
                real_failures[key] = real_failures.get(key, 0) + 1
        elif event == "ask to commit":
            # Allowed to commit and renaming: its report comes in a later event.
            a = data.draw(st.sampled_from(committable), label="committing attempt")
            ask_commit(a.id)
        elif event == "stale":
            aid = data.draw(st.sampled_from(history), label="stale attempt")
            report(aid, data.draw(st.booleans(), label="stale ok"))
        elif event == "kill":
            job = data.draw(st.sampled_from(jobs), label="killed job")
            if d.s.jobs[job].state is State.RUNNING:
                killed_by_us.add(job)
            d._record(d.s.kill_job(job, d.tick()))
        check_invariants(d)
        # The worker picked for any task is the one a look at every free
        # worker picks (the buckets by free slots only find it sooner).
        for job in d.s.jobs.values():
            for task in job.maps + job.reduces:
                failed_on = {a.wid for a in task.attempts if a.state is State.FAILED}
                busy_on = {a.wid for a in task.running()}
                assert (d.s._pick_worker(job, task, task.kind)
                        is d.s._pick_among_all(job, failed_on, busy_on, task.kind))
        for key, aids in granted.items():
            live_granted = [a for a in aids if d.s.attempts[a].state is State.RUNNING]
            assert len(live_granted) <= 1, f"two live attempts of {key} may commit: {live_granted}"
        for key, aids in committed_success.items():
            assert len(aids) <= 1, f"two attempts of {key} committed and succeeded: {aids}"

    # Let the cluster finish: a worker if none is left to take tasks, then
    # every attempt succeeds.
    if not any(w.alive and not w.draining for w in d.s.workers.values()):
        d.join("wlast", slots=2)
    for _ in range(200):
        live_now = d.running()
        if not live_now:
            break
        for a in live_now:
            if d.s.attempts[a.id].state is State.RUNNING:
                report(a.id, True)
        check_invariants(d)
    else:
        raise AssertionError("jobs did not finish")

    done = d.done()
    assert sum(isinstance(a, JobDone) for a in d.log) == len(done), "a job finished twice"
    for job in jobs:
        assert job in done, f"{job} never finished"
        if job in killed_by_us:
            continue
        if done[job].state is State.FAILED:
            limit = d.s.jobs[job].max_attempts
            assert any(n >= limit for (j, _, _), n in real_failures.items() if j == job), (
                f"{job} failed although no task failed {limit} times: {done[job].error}"
            )
        else:
            assert done[job].state is State.SUCCEEDED
            for r in range(d.s.jobs[job].num_reducers):
                assert len(committed_success.get((job, r), ())) == 1
    # Nothing is launched for a job after it is done.
    finished_at = {a.job_id: i for i, a in enumerate(d.log) if isinstance(a, JobDone)}
    for i, a in enumerate(d.log):
        if isinstance(a, LAUNCHES):
            assert i < finished_at[a.job_id]


@pytest.mark.parametrize("slots", [1, 3])
def test_a_job_with_no_maps_runs_its_reduces(slots: int) -> None:
    """An input without splits still gives a job whose reduces write (empty) part files."""
    d = Driver()
    d.join("w1", slots=slots)
    acts = d.submit("j1", maps=0, reduces=2)
    assert len(launches(acts, LaunchReduce)) == min(2, slots)
    d.run_to_completion()
    assert d.done()["j1"].state is State.SUCCEEDED
