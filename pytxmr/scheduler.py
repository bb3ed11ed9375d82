"""Scheduling decisions of the jobtracker, as pure logic.

The scheduler holds the state of workers, jobs, tasks and attempts, and
answers each event (a worker joined or was lost, a job was submitted, an
attempt finished or failed) with the actions the jobtracker must carry out
(init a job on a worker, launch or kill an attempt, announce map outputs to
reducers, destroy a job, finish a job). It never touches the reactor or the
network, and takes the time as an argument, so every decision is tested
quickly and deterministically.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import heapq
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Protocol, Union

from .counters import FRAMEWORK, Counters, TooManyCounters, add_user_names
from .wire import COMMIT_DENIED, OUTPUT_TAKEN, AttemptResult, MapLocation, job_of

DEFAULT_MAX_ATTEMPTS = 4


class State(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"


# --- actions ---------------------------------------------------------------

@dataclass(frozen=True)
class InitJob:
    wid: str
    job_id: str


@dataclass(frozen=True)
class LaunchMap:
    wid: str
    job_id: str
    attempt_id: str
    index: int


@dataclass(frozen=True)
class LaunchReduce:
    wid: str
    job_id: str
    attempt_id: str
    partition: int
    map_outputs: tuple[MapLocation, ...]


@dataclass(frozen=True)
class KillAttempt:
    wid: str
    job_id: str
    attempt_id: str


@dataclass(frozen=True)
class AnnounceMapOutputs:
    """Tell the workers running the job's reduces (``wids``) where new map
    outputs are: one action per map output, however many workers."""

    job_id: str
    map_outputs: tuple[MapLocation, ...]
    wids: tuple[str, ...]


@dataclass(frozen=True)
class DestroyJob:
    wid: str
    job_id: str


@dataclass(frozen=True)
class StopWorker:
    """A drained worker: nothing runs on it and no job needs its map
    outputs any more; it may stop."""

    wid: str


@dataclass(frozen=True)
class JobDone:
    job_id: str
    state: State
    error: dict[str, str] | None


@dataclass(frozen=True)
class OutputKept:
    """Running a map again off its drained worker failed every attempt: its
    output stays there, and so does the worker, until the job ends (for
    the operator who waits for it to stop)."""

    job_id: str
    index: int
    wid: str
    failures: int


@dataclass(frozen=True)
class ResultLost:
    """An attempt its worker no longer runs, though it got its launch,
    ended without a result we received: failed, for the log to say so."""

    wid: str
    job_id: str
    attempt_id: str


Action = Union[InitJob, LaunchMap, LaunchReduce, KillAttempt, AnnounceMapOutputs, DestroyJob,
               JobDone, StopWorker, OutputKept, ResultLost]


# --- state -----------------------------------------------------------------

class CommittedTask(Protocol):
    """A task done before a restart, as the jobtracker's journal has it
    (``journal.Committed``)."""

    attempt_id: str
    counters: dict[str, dict[str, int]]
    kinds: tuple[str, ...]
    started: float | None
    finished: float | None


@dataclass
class Attempt:
    id: str
    job_id: str
    kind: str  # "map" | "reduce"
    index: int
    wid: str
    started: float
    state: State = State.RUNNING
    finished: float | None = None
    error: dict[str, str] | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How far it is (0 to 1), as its worker's last heartbeat said.
    progress: float = 0.0
    #: Its launch's number among those sent to its worker (None: not sent).
    sent: int | None = None


#: Progress is summed in millionths: an integer sum kept up to date by
#: differences never drifts from the sum it stands for.
PROGRESS_UNITS = 1_000_000


class Task:
    """One map or reduce of a job. Its state changes keep its job's
    indexes current (``Job.queue``, ``Job.succeeded``), so that no decision
    scans a job's tasks."""

    def __init__(self, kind: str, index: int, job: Job | None = None) -> None:
        self.kind = kind
        self.index = index
        self.attempts: list[Attempt] = []
        self._committed: str | None = None
        #: Its share of its job's counters as last added (``Job.counters_so_far``).
        self.counted: tuple[Mapping[str, Mapping[str, int]], ...] = ()
        self.failures = 0
        self._job = job
        self._state = State.PENDING
        #: Its share of its job's ``progress`` (PROGRESS_UNITS).
        self._progress = 0
        if job is not None:
            job.changed(self, None, State.PENDING)

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        old, self._state = self._state, value
        if self._job is not None and old is not value:
            self._job.changed(self, old, value)
        self.progress_changed()
        self.touched()

    @property
    def committed(self) -> str | None:
        """The id of the attempt whose output counts."""
        return self._committed

    @committed.setter
    def committed(self, value: str | None) -> None:
        self._committed = value
        self.touched()

    def touched(self) -> None:
        """Its state, its committed attempt or one of its attempts changed:
        its job recounts its share of the counters when they are next
        asked for (``Job.counters_so_far``)."""
        if self._job is not None:
            self._job.touched.add(self)

    def committed_attempt(self) -> Attempt | None:
        for a in self.attempts:
            if a.id == self._committed:
                return a
        return None

    def counters_share(self) -> tuple[Mapping[str, Mapping[str, int]], ...]:
        """What it adds to its job's counters: its committed attempt's (the
        attempt's own dict, not a copy), once that succeeded (a retried or
        backup attempt never counts twice), and how many of its attempts
        failed or were killed."""
        a = self.committed_attempt()
        share = (a.counters,) if a is not None and a.state is State.SUCCEEDED else ()
        for state in (State.FAILED, State.KILLED):
            n = sum(a.state is state for a in self.attempts)
            if n:
                share += ({FRAMEWORK: {f"{state.value} {self.kind} attempts": n}},)
        return share

    @property
    def backup(self) -> bool:
        """While it runs: a speculative backup attempt is wanted or running
        (``Job.backups``)."""
        return self._job is not None and self.index in self._job.backups[self.kind]

    def running(self) -> list[Attempt]:
        return [a for a in self.attempts if a.state is State.RUNNING]

    def progress_changed(self) -> None:
        """Recount its share of its job's progress after one of its attempts
        reported progress or ended, or it changed state: while it runs, its
        furthest running attempt's progress; else nothing."""
        share = 0
        if self._state is State.RUNNING:
            furthest = 0.0
            for a in self.attempts:
                if a.state is State.RUNNING and a.progress > furthest:
                    furthest = a.progress
            share = round(PROGRESS_UNITS * furthest)
        if share != self._progress:
            if self._job is not None:
                self._job.progress[self.kind] += share - self._progress
            self._progress = share

    def attempt_failed(self) -> None:
        """One more failed attempt, counted for its job too."""
        self.failures += 1
        if self._job is not None:
            self._job.failed_attempts[self.kind] += 1


@dataclass
class Worker:
    wid: str
    host: str
    port: int
    slots: int
    joined: float
    last_seen: float
    alive: bool = True
    #: Job id -> its attempts that failed here, while the job is known
    #: (it is blacklisted here at BLACKLIST_FAILURES).
    failures: dict[str, int] = field(default_factory=dict)
    #: Attempts that failed here, of every job.
    failed_total: int = 0
    #: (bytes used, budget) of its shuffle memory, as its last heartbeat said
    shuffle_memory: tuple[int, int] | None = None
    #: Taking no new tasks, to stop once nothing needs it (``Scheduler.drain``).
    draining: bool = False
    #: StopWorker was decided for it.
    stopping: bool = False

    def __post_init__(self) -> None:
        self.attempts: set[str] = set()
        #: Its running attempts of each kind (its attempts, counted).
        self.used = {"map": 0, "reduce": 0}

    def failed(self, job_id: str) -> None:
        self.failures[job_id] = self.failures.get(job_id, 0) + 1
        self.failed_total += 1


def _still_served(job: Job, task: Task) -> bool:
    """Whether the map's committed output is where reducers fetch it: it
    runs again only to move off a drained worker."""
    loc = job.map_locations.get(task.index)
    return loc is not None and task.committed is not None and loc.attempt_id == task.committed


def ended_order(a: Attempt) -> tuple[float, str]:
    """The order of a job's attempts that did not succeed: by when they
    ended, as its page lists them."""
    return (a.finished or 0.0, a.id)


@dataclass
class Job:
    id: str
    num_maps: int
    num_reducers: int
    submitted: float
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    speculative: bool = False
    state: State = State.RUNNING
    finished: float | None = None
    error: dict[str, str] | None = None
    #: A resumed job launches nothing before this time (or before every
    #: map in ``awaited`` is back): the workers that hold its map outputs
    #: have time to come back and say so.
    hold_until: float = 0.0
    #: Added to attempt numbers: a resumed job's attempts never reuse the
    #: id of one from before the restart (a worker may hold its files).
    attempt_offset: int = 0

    def __post_init__(self) -> None:
        #: Per kind, the indexes of its pending tasks (a heap: the lowest
        #: first; lazily cleaned: an index whose task is no longer pending
        #: is dropped when it comes up), and their set.
        self.queue: dict[str, list[int]] = {"map": [], "reduce": []}
        self._queued: dict[str, set[int]] = {"map": set(), "reduce": set()}
        self.succeeded = {"map": 0, "reduce": 0}
        #: Per kind, the indexes of its running tasks, and its failed attempts
        #: (so that a status call costs the running tasks, not all of them).
        self.running: dict[str, set[int]] = {"map": set(), "reduce": set()}
        self.failed_attempts = {"map": 0, "reduce": 0}
        #: The (group, name) of every user counter its succeeded attempts
        #: counted: bounded (counters.MAX_STEP_USER_COUNTERS), as each task's are.
        self.user_counters: set[tuple[str, str]] = set()
        #: Per kind, the sum of its running tasks' progress in PROGRESS_UNITS
        #: (``Task.progress_changed``): a status call adds nothing up.
        self.progress = {"map": 0, "reduce": 0}
        #: Per kind, how long its attempts that ran to success took, sorted:
        #: speculation's median, with no sort of the job's attempts per tick.
        self.durations: dict[str, list[float]] = {"map": [], "reduce": []}
        #: Per kind, the indexes of its running tasks that want a backup
        #: attempt or run one (speculation).
        self.backups: dict[str, set[int]] = {"map": set(), "reduce": set()}
        #: Workers running its reduces -> how many.
        self.reduce_workers: dict[str, int] = {}
        self._reduce_wids: tuple[str, ...] | None = ()
        #: ``counters_so_far``: the tasks touched since it last ran; the
        #: totals of the tasks' shares (``Task.counted``): (group, name) ->
        #: [sum, tasks that have it]; each phase's wall ms once over; per
        #: kind, the tasks whose committed attempt has ended.
        self.touched: set[Task] = set()
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._phase_ms: dict[str, int] = {}
        self._ended: dict[str, set[int]] = {"map": set(), "reduce": set()}
        #: For its page (``views.job_page_view``), kept as attempts start and
        #: end so that a page costs what it shows, not the job's size: per
        #: kind, the times its attempts started and ended (sorted: in the
        #: order they did, the clock does not go back, and those from before
        #: a restart put in their places), and its attempts that
        #: failed or were killed, sorted by when they ended (``ended_order``):
        #: a lost map output fails an attempt that ended long before.
        self.starts: dict[str, list[float]] = {"map": [], "reduce": []}
        self.ends: dict[str, list[float]] = {"map": [], "reduce": []}
        self.unsuccessful: list[Attempt] = []
        self.maps = [Task("map", i, self) for i in range(self.num_maps)]
        self.reduces = [Task("reduce", i, self) for i in range(self.num_reducers)]
        self.map_locations: dict[int, MapLocation] = {}
        self.inited: set[str] = set()
        #: map index -> the reduce attempts that reported its current output
        #: unfetchable, one entry per report
        self.fetch_failures: dict[int, list[str]] = {}
        #: reduce attempt -> worker -> the map attempt whose output there it
        #: last reported unfetchable
        self.unreachable: dict[str, dict[str, str]] = {}
        #: The maps whose output stays on a drained worker: running them
        #: again elsewhere failed ``max_attempts`` times.
        self.unmoved: set[int] = set()
        #: A resumed job's maps done before the restart whose workers have
        #: not yet come back to say they kept them (until ``hold_until``).
        self.awaited: set[int] = set()

    def counters_so_far(self) -> Counters:
        """The counters of its tasks' shares (``Task.counters_share``) and
        each phase's wall time once all its tasks' committed attempts ended:
        what the job reports at its end, and so far while it runs. Only the
        tasks touched since the last call are recounted: a status page that
        shows them every second costs the tasks that changed, not all."""
        for task in self.touched:
            committed = task.committed_attempt()
            if committed is not None and committed.finished is not None:
                self._ended[task.kind].add(task.index)
            else:
                self._ended[task.kind].discard(task.index)
            for counters in task.counted:
                for group, names in counters.items():
                    for name, n in names.items():
                        total = self._totals[group, name]
                        total[0] -= n
                        total[1] -= 1
                        if not total[1]:
                            del self._totals[group, name]
            task.counted = task.counters_share()
            for counters in task.counted:
                for group, names in counters.items():
                    for name, n in names.items():
                        total = self._totals.setdefault((group, name), [0, 0])
                        total[0] += n
                        total[1] += 1
            self._phase_ms.pop(task.kind, None)
        self.touched.clear()
        counters = Counters()
        for (group, name), (n, _) in self._totals.items():
            counters.incr(group, name, n)
        for kind in ("map", "reduce"):
            tasks = self.tasks(kind)
            if not tasks or len(self._ended[kind]) < len(tasks):
                continue
            if kind not in self._phase_ms:
                # From its first attempt's start to its last committed
                # attempt's end (reduces include their shuffle).
                start = min(a.started for t in tasks for a in t.attempts)
                end = max(a.finished or a.started for t in tasks for a in t.attempts
                          if a.id == t.committed)
                self._phase_ms[kind] = round(1000 * (end - start))
            counters.incr(FRAMEWORK, f"{kind} phase wall ms", self._phase_ms[kind])
        return counters

    def tasks(self, kind: str) -> list[Task]:
        return self.maps if kind == "map" else self.reduces

    def changed(self, task: Task, old: State | None, new: State) -> None:
        if new is State.PENDING and task.index not in self._queued[task.kind]:
            heapq.heappush(self.queue[task.kind], task.index)
            self._queued[task.kind].add(task.index)
        if old is State.SUCCEEDED:
            self.succeeded[task.kind] -= 1
        if new is State.SUCCEEDED:
            self.succeeded[task.kind] += 1
        if old is State.RUNNING:
            self.running[task.kind].discard(task.index)
            self.backups[task.kind].discard(task.index)  # a rerun straggles, or not, anew
        if new is State.RUNNING:
            self.running[task.kind].add(task.index)

    def set_aside(self, kind: str) -> int:
        """Take its lowest pending task off the queue (``next_pending``'s):
        it waits for another worker while the free ones take the next."""
        index = heapq.heappop(self.queue[kind])
        self._queued[kind].discard(index)
        return index

    def put_back(self, kind: str, indexes: Iterable[int]) -> None:
        """Queue again the pending tasks set aside."""
        tasks = self.tasks(kind)
        for index in indexes:
            if tasks[index].state is State.PENDING and index not in self._queued[kind]:
                heapq.heappush(self.queue[kind], index)
                self._queued[kind].add(index)

    def next_pending(self, kind: str) -> Task | None:
        """Its lowest pending task of ``kind``, if any."""
        queue, tasks = self.queue[kind], self.tasks(kind)
        while queue:
            task = tasks[queue[0]]
            if task.state is State.PENDING:
                return task
            self._queued[kind].discard(heapq.heappop(queue))
        return None

    def reduce_wids(self) -> tuple[str, ...]:
        """The workers running its reduces, sorted (kept until they change)."""
        if self._reduce_wids is None:
            self._reduce_wids = tuple(sorted(self.reduce_workers))
        return self._reduce_wids

    def reduce_started(self, wid: str) -> None:
        self.reduce_workers[wid] = self.reduce_workers.get(wid, 0) + 1
        self._reduce_wids = None

    def reduce_ended(self, wid: str) -> None:
        left = self.reduce_workers.get(wid, 0) - 1
        if left > 0:
            self.reduce_workers[wid] = left
        else:
            self.reduce_workers.pop(wid, None)
        self._reduce_wids = None

    def all_succeeded(self, kind: str) -> bool:
        return self.succeeded[kind] == len(self.tasks(kind))


#: A worker on which this many attempts of a job failed gets no more of them
#: (unless no other worker is left).
BLACKLIST_FAILURES = 3
#: Lost (or drained) workers remembered, the last ones, for the status page.
LOST_WORKERS_KEPT = 50
#: Reports that a map output cannot be fetched (each after the reducer's own
#: retries) before the map runs again: one hiccup is not enough, as in
#: Hadoop. Reports from half the running reduces are enough too (a small
#: job has fewer than 3 reducers, and a reducer that has its runs never
#: reports).
FETCH_FAILURES_TO_RERUN = 3

#: A reduce attempt that cannot fetch from this many workers, whose outputs
#: a reduce of another worker fetched (it succeeded since), is the one cut
#: off (a network fault at its end, its worker's TLS certificate expired):
#: it fails, instead of the maps, as Hadoop's reducer fails itself when its
#: fetches fail from too many places.
CUT_OFF_REDUCE_WORKERS = 2
#: Speculation: a running attempt slower than this many times the median
#: duration of its job's finished tasks of the same kind gets a backup...
SPECULATIVE_SLOWDOWN = 2.0
#: ...once it has run at least this long (seconds).
SPECULATIVE_MIN_RUNTIME = 1.0


class Scheduler:
    """Workers, jobs and attempts, and what to do when something happens."""

    def __init__(self) -> None:
        self.workers: dict[str, Worker] = {}
        self.jobs: dict[str, Job] = {}
        self.attempts: dict[str, Attempt] = {}
        #: The workers being drained (usually none: checked at each decision).
        self._draining: set[str] = set()
        #: Per kind, the workers that could take a task of it now (alive,
        #: not draining, a free slot) -> their free slots: a full cluster
        #: decides nothing...
        self._free: dict[str, dict[str, int]] = {"map": {}, "reduce": {}}
        #: ...and, per kind, free slots -> those workers' ids, sorted: the
        #: worker with the most free slots is found without a scan.
        self._by_free: dict[str, dict[int, list[str]]] = {"map": {}, "reduce": {}}

    def _refresh(self, w: Worker) -> None:
        """After a change of ``w``'s slots in use, liveness or draining."""
        for kind in ("map", "reduce"):
            free = w.slots - w.used[kind] if w.alive and not w.draining else 0
            was = self._free[kind].get(w.wid, 0)
            if free == was:
                continue
            buckets = self._by_free[kind]
            if was:
                bucket = buckets[was]
                del bucket[bisect.bisect_left(bucket, w.wid)]
                if not bucket:
                    del buckets[was]
            if free > 0:
                self._free[kind][w.wid] = free
                bisect.insort(buckets.setdefault(free, []), w.wid)
            else:
                self._free[kind].pop(w.wid, None)

    # --- events --------------------------------------------------------

    def worker_joined(self, wid: str, host: str, port: int, slots: int, now: float) -> list[Action]:
        w = self.workers[wid] = Worker(wid, host, port, max(1, slots), now, now)
        self._refresh(w)
        return self._schedule(now)

    def sent(self, attempt_id: str, number: int) -> None:
        """The attempt's launch went to its worker, as the ``number``-th."""
        a = self.attempts.get(attempt_id)
        if a is not None:
            a.sent = number

    def heartbeat(self, wid: str, now: float,
                  progress: Mapping[str, float] | None = None,
                  live: Collection[str] | None = None,
                  launches: int | None = None) -> list[Action]:
        """``live``: the attempts the worker runs, once it got ``launches``
        launches. An attempt of ours it got and no longer runs ended
        without a result that reached us (a report dropped, a launch it
        refused): it fails, to run again, or its job waits for it for ever.
        Hadoop reconciles a tracker's report with its own view so too."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            return []
        w.last_seen = now
        for aid, p in (progress or {}).items():
            a = self.attempts.get(aid)
            if a is not None and a.wid == wid and a.state is State.RUNNING and a.progress != p:
                a.progress = p
                self.jobs[a.job_id].tasks(a.kind)[a.index].progress_changed()
        if live is None or launches is None:
            return []
        live = set(live)
        ended = [self.attempts[aid] for aid in w.attempts if aid not in live]
        actions: list[Action] = []
        for a in sorted((a for a in ended if a.sent is not None and a.sent <= launches),
                        key=lambda a: a.id):
            if a.state is not State.RUNNING:  # its job ended with an earlier one's failure
                continue
            actions.append(ResultLost(wid, a.job_id, a.id))
            actions += self._attempt_failed(a, now, {
                "type": "ResultLost", "traceback": "",
                "message": f"the attempt ended on tasktracker {wid} without a result the "
                           f"jobtracker received"})
        return actions

    def _forget_lost_workers(self) -> None:
        """All but the LOST_WORKERS_KEPT last lost workers: every tasktracker
        restart is a new worker, and each was kept for ever (and looked at
        by every tick)."""
        lost = [wid for wid, w in self.workers.items()
                if not w.alive and wid not in self._draining]
        for wid in lost[:-LOST_WORKERS_KEPT]:
            del self.workers[wid]

    def expired_workers(self, now: float, expiry: float,
                        longer: Mapping[str, float] | None = None) -> list[str]:
        """Workers not heard from for ``expiry`` seconds, or for their own
        expiry in ``longer`` (those told to heartbeat less often)."""
        longer = longer or {}
        return [w.wid for w in self.workers.values()
                if w.alive and now - w.last_seen > longer.get(w.wid, expiry)]

    def worker_lost(self, wid: str, now: float) -> list[Action]:
        """Re-run what was lost with a worker: its running attempts, and its
        completed maps whose output a reduce still needs."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            return []
        w.alive = False
        self._refresh(w)
        # Last in the order: the lost ones are in the order they were lost.
        self.workers[wid] = self.workers.pop(wid)
        actions: list[Action] = []
        for aid in sorted(w.attempts):
            a = self.attempts[aid]
            if a.state is State.RUNNING:
                self._end_attempt(a, State.KILLED, now, {"type": "WorkerLost",
                                                         "message": f"worker {wid} was lost",
                                                         "traceback": ""})
        for job in self._running_jobs():
            job.inited.discard(wid)
            reduces_left = not job.all_succeeded("reduce")
            for index, loc in list(job.map_locations.items()):
                if loc.wid == wid and reduces_left:
                    del job.map_locations[index]
                    job.unmoved.discard(index)
                    job.fetch_failures.pop(index, None)
                    task = job.maps[index]
                    task.committed = None
                    if not task.running():  # else run again off a drained worker
                        task.state = State.PENDING
            for task in job.maps + job.reduces:
                if task.state is State.RUNNING and not task.running():
                    task.state = State.PENDING
        actions += self._schedule(now)
        self._forget_lost_workers()
        return actions

    def drain(self, wid: str, now: float) -> list[Action]:
        """Take no new tasks on ``wid``; let its running attempts end; run
        its completed maps again elsewhere while it goes on serving their
        outputs (a reduce fetches from whichever location it has, and the
        newer one is announced), so that it can stop before the jobs end;
        then StopWorker. Without another worker its outputs are served
        until their jobs end."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            return []
        if w.draining:
            return self._schedule(now)
        w.draining = True
        self._refresh(w)
        self._draining.add(wid)
        actions: list[Action] = []
        if self._others_than_draining():
            # What would only delay the stop runs again elsewhere: a map
            # (its output would have to move anyway) and a reduce still
            # waiting for map outputs (it has only fetched so far).
            for aid in sorted(w.attempts):
                a = self.attempts[aid]
                job = self.jobs[a.job_id]
                if a.kind == "map":
                    moves = not job.all_succeeded("reduce")
                else:
                    moves = len(job.map_locations) < job.num_maps
                if a.state is State.RUNNING and moves:
                    self._end_attempt(a, State.KILLED, now, {
                        "type": "WorkerDraining", "traceback": "",
                        "message": f"worker {wid} is being drained"})
                    actions.append(KillAttempt(wid, job.id, aid))
                    task = job.tasks(a.kind)[a.index]
                    if task.state is State.RUNNING and not task.running():
                        task.state = State.PENDING
        return actions + self._schedule(now)

    def submit(self, job_id: str, num_maps: int, num_reducers: int, now: float,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS, speculative: bool = False) -> list[Action]:
        self.jobs[job_id] = Job(job_id, num_maps, num_reducers, now, max_attempts, speculative)
        return self._schedule(now)

    def resume(self, job_id: str, num_maps: int, num_reducers: int, now: float, *,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS, speculative: bool = False,
               done: Mapping[tuple[str, int], CommittedTask],
               finished: bool = False, hold_until: float = 0.0,
               attempt_offset: int = 0, kept: Iterable[int] = ()) -> list[Action]:
        """A job of the jobtracker's journal, after a restart: ``done``
        (kind, index) -> the committed attempt, are the tasks whose results
        are durable (committed reduces, a map-only job's maps); a
        ``finished`` job (an earlier step) has nothing left to run, nor has
        one whose ``done`` are all its durable tasks (it ends at once). Its
        completed maps (``kept``) come back as workers report them
        (``map_output_held``); nothing is launched until they all have, or
        until ``hold_until``."""
        job = self.jobs[job_id] = Job(job_id, num_maps, num_reducers, now, max_attempts,
                                      speculative, hold_until=hold_until,
                                      attempt_offset=attempt_offset)
        for (kind, index), committed in sorted(done.items()):
            self._restored(job, job.tasks(kind)[index], committed, "", now)
        if finished:
            job.state, job.finished, job.hold_until = State.SUCCEEDED, now, 0.0
            return []
        job.awaited = {i for i in kept if job.maps[i].state is not State.SUCCEEDED}
        if not job.awaited or hold_until <= now:  # nothing to wait for
            job.hold_until, job.awaited = 0.0, set()
        if job.all_succeeded("reduce" if job.reduces else "map"):
            # Its last task was committed just before the crash: the step is
            # done, and the job goes on (to its next step, or its end).
            return self._finish_job(job, State.SUCCEEDED, None, now)
        return self._schedule(now)

    def map_output_held(self, wid: str, job_id: str, index: int, held: CommittedTask,
                        now: float) -> list[Action]:
        """A worker that came back after a restart holds the output of map
        ``index`` of a running job, written by ``held`` (which the journal
        had as the committed attempt): it need not run again."""
        job, w = self.jobs.get(job_id), self.workers.get(wid)
        if job is None or job.state is not State.RUNNING or w is None or not w.alive \
                or not 0 <= index < job.num_maps or index in job.map_locations:
            return []
        task = job.maps[index]
        if task.state is State.SUCCEEDED:
            return []
        actions: list[Action] = []
        for other in task.running():
            self._end_attempt(other, State.KILLED, now, None)
            actions.append(KillAttempt(other.wid, job.id, other.id))
        self._restored(job, task, held, wid, now)
        job.awaited.discard(index)
        if not job.awaited:  # every one is back: no need to wait longer
            job.hold_until = 0.0
        job.inited.add(wid)
        loc = MapLocation(index, wid, w.host, w.port, held.kinds, held.attempt_id)
        job.map_locations[index] = loc
        if job.reduce_workers:
            actions.append(AnnounceMapOutputs(job.id, (loc,), job.reduce_wids()))
        return actions + self._schedule(now)

    def _restored(self, job: Job, task: Task, committed: CommittedTask, wid: str,
                  now: float) -> None:
        # Its times as it ran (a journal of an older version has none).
        started = now if committed.started is None else committed.started
        finished = now if committed.finished is None else committed.finished
        a = Attempt(committed.attempt_id, job.id, task.kind, task.index, wid, started,
                    State.SUCCEEDED, finished, None, committed.counters, 1.0)
        with contextlib.suppress(TooManyCounters):  # it was counted before the restart
            add_user_names(job.user_counters, committed.counters)
        task.attempts.append(a)
        bisect.insort(job.starts[task.kind], started)  # kept sorted, as views need
        bisect.insort(job.ends[task.kind], finished)
        task.state = State.SUCCEEDED
        task.committed = committed.attempt_id
        self.attempts[committed.attempt_id] = a

    def fetch_failed(self, attempt_id: str, map_index: int, now: float,
                     map_attempt_id: str | None = None) -> list[Action]:
        """A reduce attempt could not fetch the output of map ``map_index``
        (written by ``map_attempt_id``) after its own retries. Enough such
        reports and the output counts as lost: the attempt that wrote it
        is failed (as in Hadoop, it counts towards the task's attempts and
        its worker's failures, so the map runs again preferably elsewhere)
        and the new location is announced as usual."""
        a = self._live_attempt(attempt_id)
        if a is None or a.kind != "reduce":
            return []
        job = self.jobs[a.job_id]
        loc = job.map_locations.get(map_index)
        if loc is None or map_attempt_id not in (None, loc.attempt_id):
            return []  # already being re-run, or a report about an older output
        unreachable = job.unreachable.setdefault(a.id, {})
        unreachable[loc.wid] = loc.attempt_id
        fetched = sorted(w for w, m in unreachable.items()
                         if w != a.wid and self._fetched_elsewhere(job, m, a.wid))
        if len(fetched) >= CUT_OFF_REDUCE_WORKERS:
            return self._cut_off(job, a, fetched, now)
        reports = job.fetch_failures.setdefault(map_index, [])
        reports.append(a.id)
        running_reduces = sum(len(t.running()) for t in job.reduces)
        if len(reports) < FETCH_FAILURES_TO_RERUN and 2 * len(set(reports)) < running_reduces:
            return []
        del job.map_locations[map_index]
        job.unmoved.discard(map_index)
        del job.fetch_failures[map_index]
        task = job.maps[map_index]
        error = {"type": "MapOutputLost", "traceback": "",
                 "message": f"{len(reports)} reports from {len(set(reports))} reduce attempts "
                            f"that the output of map {map_index} on {loc.wid} cannot be fetched"}
        lost = self.attempts.get(task.committed or "")
        if lost is not None:
            lost.state = State.FAILED
            lost.error = error
            bisect.insort(job.unsuccessful, lost, key=ended_order)
            w = self.workers.get(lost.wid)
            if w is not None:
                w.failed(job.id)
        task.committed = None
        task.attempt_failed()
        if task.failures >= job.max_attempts:
            task.state = State.FAILED
            return self._finish_job(job, State.FAILED, error, now) + self._schedule(now)
        if not task.running():  # a map run again off a drained worker runs already
            task.state = State.PENDING
        return self._schedule(now)

    def _fetched_elsewhere(self, job: Job, map_attempt_id: str, wid: str) -> bool:
        """Whether a reduce of another worker than ``wid`` succeeded since
        the map attempt's output was made: it fetched that output. Asked
        on a report only; it looks at the job's reduce attempts."""
        m = self.attempts.get(map_attempt_id)
        return m is not None and m.finished is not None and any(
            r.state is State.SUCCEEDED and r.wid != wid and (r.finished or 0) >= m.finished
            for t in job.reduces for r in t.attempts)

    def _cut_off(self, job: Job, a: Attempt, workers: list[str], now: float) -> list[Action]:
        """Fail the reduce attempt ``a``, which cannot fetch from
        ``workers``, and withdraw its reports against their maps."""
        for reports in job.fetch_failures.values():
            reports[:] = [r for r in reports if r != a.id]
        error = {"type": "FetchFailed", "traceback": "",
                 "message": f"reduce {a.index}'s attempt on {a.wid} could not fetch map "
                            f"outputs from {', '.join(workers)}, which a reduce of another "
                            f"worker fetched: {a.wid} may be cut off from them (a network "
                            f"fault at its end, an expired TLS certificate)"}
        return [KillAttempt(a.wid, job.id, a.id), *self._attempt_failed(a, now, error)]

    def tick(self, now: float) -> list[Action]:
        """Periodic decisions: backup attempts for stragglers, and resumed
        jobs whose wait for their workers is over."""
        released = False
        for job in self._running_jobs():
            if job.hold_until and job.hold_until <= now:
                job.hold_until, released = 0.0, True
                job.awaited.clear()  # run again, those not reported
        return self._schedule(now) if self._speculate(now) or released else []

    def attempt_succeeded(self, attempt_id: str, now: float, result: AttemptResult) -> list[Action]:
        a = self._live_attempt(attempt_id)
        if a is None:
            return []
        job = self.jobs[a.job_id]
        task = job.tasks(a.kind)[a.index]
        actions: list[Action] = []
        self._end_attempt(a, State.SUCCEEDED, now, None)
        a.counters = result.counters
        if task.state is State.SUCCEEDED:
            return self._schedule(now)  # another attempt won already
        try:
            add_user_names(job.user_counters, result.counters)
        except TooManyCounters as e:
            task.state = State.FAILED
            error = {"type": "TooManyCounters", "message": str(e)}
            return self._finish_job(job, State.FAILED, error, now) + self._schedule(now)
        task.state = State.SUCCEEDED
        task.committed = a.id
        for other in task.running():
            self._end_attempt(other, State.KILLED, now, None)
            actions.append(KillAttempt(other.wid, job.id, other.id))
        if a.kind == "map" and not job.reduces:
            # A map-only job: the map committed its part file.
            if job.all_succeeded("map"):
                actions += self._finish_job(job, State.SUCCEEDED, None, now)
        elif a.kind == "map":
            job.unmoved.discard(a.index)
            w = self.workers[a.wid]
            loc = MapLocation(a.index, a.wid, w.host, w.port, result.kinds, a.id)
            job.map_locations[a.index] = loc
            if job.reduce_workers:
                actions.append(AnnounceMapOutputs(job.id, (loc,), job.reduce_wids()))
        elif job.all_succeeded("reduce"):
            actions += self._finish_job(job, State.SUCCEEDED, None, now)
        return actions + self._schedule(now)

    def attempt_failed(self, attempt_id: str, now: float, error: dict[str, str]) -> list[Action]:
        a = self._live_attempt(attempt_id)
        if a is None:
            return []
        if error.get("type") == COMMIT_DENIED:
            self._end_attempt(a, State.KILLED, now, error)
            return self._schedule(now)
        if error.get("type") == OUTPUT_TAKEN:  # every other attempt would find it so
            self._end_attempt(a, State.FAILED, now, error)
            job = self.jobs[a.job_id]
            job.tasks(a.kind)[a.index].state = State.FAILED
            return self._finish_job(job, State.FAILED, error, now) + self._schedule(now)
        return self._attempt_failed(a, now, error)

    def _attempt_failed(self, a: Attempt, now: float, error: dict[str, str]) -> list[Action]:
        job = self.jobs[a.job_id]
        task = job.tasks(a.kind)[a.index]
        self._end_attempt(a, State.FAILED, now, error)
        w = self.workers.get(a.wid)
        if w is not None:
            w.failed(job.id)
        task.attempt_failed()
        if task.state is State.SUCCEEDED:
            return self._schedule(now)
        if task.failures >= job.max_attempts and a.kind == "map" and _still_served(job, task):
            # Run again off a drained worker, in vain: its output stays
            # there, and a backup of the rerun has no more attempts to use.
            job.unmoved.add(task.index)
            loc = job.map_locations[task.index]
            actions: list[Action] = [OutputKept(job.id, task.index, loc.wid, task.failures)]
            for other in task.running():
                self._end_attempt(other, State.KILLED, now, None)
                actions.append(KillAttempt(other.wid, job.id, other.id))
            task.state = State.SUCCEEDED
            return actions + self._schedule(now)
        if task.failures >= job.max_attempts:
            task.state = State.FAILED
            return self._finish_job(job, State.FAILED, error, now) + self._schedule(now)
        if not task.running():
            task.state = State.PENDING
        return self._schedule(now)

    def may_commit(self, attempt_id: str) -> bool:
        """Whether a reduce attempt (or a map attempt of a map-only job) may
        move its output into place: only the first attempt of each task to
        ask, and only while it is live."""
        a = self._live_attempt(attempt_id)
        if a is None:
            return False
        job = self.jobs[a.job_id]
        if a.kind == "map" and job.reduces:
            return False
        task = job.tasks(a.kind)[a.index]
        if task.committed is None:
            task.committed = a.id
        return task.committed == a.id

    def kill_job(self, job_id: str, now: float) -> list[Action]:
        job = self.jobs.get(job_id)
        if job is None or job.state is not State.RUNNING:
            return []
        # The job's id, not its step's (job_..._0038-s2), which no user knows.
        error = {"type": "JobKilled", "message": f"job {job_of(job_id)} was killed",
                 "traceback": ""}
        return self._finish_job(job, State.KILLED, error, now) + self._schedule(now)

    def forget_job(self, job_id: str) -> None:
        job = self.jobs.pop(job_id)
        for t in job.maps + job.reduces:
            for a in t.attempts:
                self.attempts.pop(a.id, None)
        for w in self.workers.values():  # a thousand jobs on, they were all still there
            w.failures.pop(job_id, None)

    # --- decisions -----------------------------------------------------

    def _live_attempt(self, attempt_id: str) -> Attempt | None:
        a = self.attempts.get(attempt_id)
        if a is None or a.state is not State.RUNNING:
            return None
        if self.jobs[a.job_id].state is not State.RUNNING:
            return None
        return a

    def _end_attempt(self, a: Attempt, state: State, now: float, error: dict[str, str] | None) -> None:
        a.state = state
        a.finished = now
        a.error = error
        job = self.jobs[a.job_id]
        task = job.tasks(a.kind)[a.index]
        task.progress_changed()
        task.touched()
        job.ends[a.kind].append(now)
        job.unreachable.pop(a.id, None)
        if state is State.SUCCEEDED:
            bisect.insort(job.durations[a.kind], now - a.started)
        else:
            bisect.insort(job.unsuccessful, a, key=ended_order)
            if task.committed == a.id and task.state is not State.SUCCEEDED:
                # It was allowed to commit but never finished: another
                # attempt must be able to (its rename replaces any file).
                task.committed = None
        w = self.workers.get(a.wid)
        if w is not None and a.id in w.attempts:
            w.attempts.discard(a.id)
            w.used[a.kind] -= 1
            self._refresh(w)
            if a.kind == "reduce":
                job.reduce_ended(a.wid)

    def _finish_job(self, job: Job, state: State, error: dict[str, str] | None, now: float) -> list[Action]:
        actions: list[Action] = []
        job.state = state
        job.finished = now
        job.error = error
        job.awaited.clear()  # an ended job awaits nothing (its status kept them for ever)
        for task in job.maps + job.reduces:
            for a in task.running():
                self._end_attempt(a, State.KILLED, now, None)
                actions.append(KillAttempt(a.wid, job.id, a.id))
            if task.state in (State.RUNNING, State.PENDING):
                # Not "running" in status and the job page any more. A map
                # being moved off a draining worker when the reduces finish
                # is done: its committed output is the one they read.
                done = state is State.SUCCEEDED and task.committed is not None
                task.state = State.SUCCEEDED if done else State.KILLED
        actions.append(JobDone(job.id, state, error))
        for wid in sorted(job.inited):
            if wid in self.workers and self.workers[wid].alive:
                actions.append(DestroyJob(wid, job.id))
        return actions

    def _running_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state is State.RUNNING]

    def _usable(self, job: Job, w: Worker) -> bool:
        if not w.alive:
            return False
        if w.failures.get(job.id, 0) < BLACKLIST_FAILURES:
            return True
        # Never blacklist the last usable worker: the job would hang.
        return not self._takes_elsewhere(job, set())

    def _others_than_draining(self) -> bool:
        """Whether a worker not being drained is alive to take moved work."""
        return any(o.alive and not o.draining for o in self.workers.values())

    def _drain_actions(self) -> list[Action]:
        """Move the needed map outputs off draining workers (once another
        worker can take them) and stop those that nothing needs."""
        actions: list[Action] = []
        for wid in sorted(self._draining):
            w = self.workers.get(wid)
            if w is None or not w.alive:
                self._draining.discard(wid)
                continue
            others = self._others_than_draining()
            needed = False
            for job in self._running_jobs():
                if job.all_succeeded("reduce"):
                    continue
                for index, loc in job.map_locations.items():
                    if loc.wid != wid:
                        continue
                    needed = True
                    task = job.maps[index]
                    if others and task.state is State.SUCCEEDED and index not in job.unmoved:
                        task.state = State.PENDING  # its location stays, served meanwhile
            if not needed and not w.attempts:
                self._draining.discard(wid)
                w.stopping = True
                actions.append(StopWorker(wid))
        return actions

    def _launch(self, job: Job, task: Task, w: Worker, now: float) -> list[Action]:
        actions: list[Action] = []
        if w.wid not in job.inited:
            job.inited.add(w.wid)
            actions.append(InitJob(w.wid, job.id))
        short = "m" if task.kind == "map" else "r"
        aid = f"{job.id}_{short}{task.index:05d}_{len(task.attempts) + job.attempt_offset}"
        a = Attempt(aid, job.id, task.kind, task.index, w.wid, now)
        task.attempts.append(a)
        job.starts[task.kind].append(now)
        task.state = State.RUNNING
        self.attempts[aid] = a
        w.attempts.add(aid)
        w.used[task.kind] += 1
        self._refresh(w)
        if task.kind == "reduce":
            job.reduce_started(w.wid)
        if task.kind == "map":
            actions.append(LaunchMap(w.wid, job.id, aid, task.index))
        else:
            locations = tuple(job.map_locations[i] for i in sorted(job.map_locations))
            actions.append(LaunchReduce(w.wid, job.id, aid, task.index, locations))
        return actions

    def _pick_worker(self, job: Job, task: Task, kind: str) -> Worker | None:
        """The usable worker with the most free slots (the highest id among
        equals), never one where this task already failed while the cluster
        has a worker it did not fail on (None: the task waits for that one,
        as Hadoop's does; a disk full on one worker failed a job of
        ``--max-attempts 2`` twice there while another was busy). From the
        most free slots down, the first worker neither failed on, nor
        running the task, nor blacklisted for the job is that one; only when
        there is none does every free worker get looked at."""
        failed_on = {a.wid for a in task.attempts if a.state is State.FAILED}
        # A backup attempt goes to another worker than the straggler's.
        busy_on = {a.wid for a in task.running()}
        buckets = self._by_free[kind]
        for free in sorted(buckets, reverse=True):
            for wid in reversed(buckets[free]):
                w = self.workers[wid]
                if (wid not in failed_on and wid not in busy_on
                        and w.failures.get(job.id, 0) < BLACKLIST_FAILURES):
                    return w
        return self._pick_among_all(job, failed_on, busy_on, kind)

    def _pick_among_all(self, job: Job, failed_on: set[str], busy_on: set[str],
                        kind: str) -> Worker | None:
        best: Worker | None = None
        best_key: tuple[bool, int, str] | None = None
        for wid, free in self._free[kind].items():
            w = self.workers[wid]
            if w.wid in busy_on or not self._usable(job, w):
                continue
            key = (w.wid not in failed_on, free, w.wid)
            if best_key is None or key > best_key:
                best, best_key = w, key
        if best is not None and best.wid in failed_on and self._takes_elsewhere(
                job, failed_on | busy_on):
            return None
        return best

    def _takes_elsewhere(self, job: Job, tried: set[str]) -> bool:
        """Whether a worker none of ``tried`` (where a task failed or runs)
        may take the job's tasks: alive, not draining, not blacklisted."""
        return any(w.alive and not w.draining and w.wid not in tried
                   and w.failures.get(job.id, 0) < BLACKLIST_FAILURES
                   for w in self.workers.values())

    def _speculate(self, now: float) -> bool:
        """Mark straggling tasks of speculative jobs for a backup attempt:
        against the median of the durations kept sorted, over the running
        tasks only, so that a tick costs what runs, not the job's size."""
        marked = False
        for job in self._running_jobs():
            if not job.speculative:
                continue
            for kind in ("map", "reduce"):
                durations = job.durations[kind]
                if not durations:
                    continue
                median = durations[len(durations) // 2]
                threshold = max(SPECULATIVE_MIN_RUNTIME, SPECULATIVE_SLOWDOWN * median)
                tasks = job.tasks(kind)
                for index in job.running[kind] - job.backups[kind]:
                    running = tasks[index].running()
                    if len(running) == 1 and now - running[0].started > threshold:
                        job.backups[kind].add(index)
                        marked = True
        return marked

    def _schedule(self, now: float) -> list[Action]:
        """Fill free slots: jobs in submission order, maps before reduces.

        Reduces start at once: they fetch map outputs as they are announced
        (the shuffle overlaps the map phase) and hold no process until every
        map output is in, so they cannot starve the maps.
        """
        actions: list[Action] = self._drain_actions() if self._draining else []
        for job in self._running_jobs():
            if job.hold_until > now:
                continue
            for kind in ("map", "reduce"):
                # Backups first (few, and only in speculative jobs), then the
                # pending tasks, lowest first, while a worker takes them: a
                # job's tasks of one kind all fit the same workers.
                tasks = job.tasks(kind)
                for index in sorted(job.backups[kind]):
                    task = tasks[index]
                    running = task.running()
                    # Not while the one running is allowed to commit: it is ending.
                    if (len(running) == 1 and running[0].id != task.committed
                            and self._free[kind]):
                        w = self._pick_worker(job, task, kind)
                        if w is not None:
                            actions += self._launch(job, task, w, now)
                waiting: list[int] = []  # for a worker they did not fail on
                while self._free[kind]:
                    task = job.next_pending(kind)
                    if task is None:
                        break
                    w = self._pick_worker(job, task, kind)
                    if w is None:
                        if not task.failures:
                            break  # no free worker takes the job's tasks
                        waiting.append(job.set_aside(kind))
                        continue
                    actions += self._launch(job, task, w, now)
                if waiting:
                    job.put_back(kind, waiting)
        return actions
