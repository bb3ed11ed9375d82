#!/usr/bin/env python3
"""The jobtracker at cluster scale, in simulation: the real ``JobTracker``
driven by many fake tasktrackers in one process, on a simulated clock.

    python bench/jtsim.py --workers 1000 --maps 50000            # the issue's scale
    python bench/jtsim.py --workers 50 --maps 2000 --json out.json
    python bench/jtsim.py --workers 1000 --maps 50000 --max-events 3   # a partial run
    python bench/jtsim.py --workers 50 --maps 2000 --profile jt.prof   # cProfile of the tracker
    python bench/jtsim.py --workers 50 --maps 2000 --tracemalloc       # memory per job and task

What is real: ``JobTracker`` and everything under it (the scheduler, the
admission of the job, metrics, task logs, the job's end and its history),
called exactly as the PB adapter calls it (``register(worker,
Registration)``, ``heartbeat(wid, Heartbeat)``, ``attempt_done``,
``may_commit``, ``status``, ``submit(spec)``). The job is submitted as a
client submits it (``client.submission``): ``examples/wordcount.py``
checked in a real zygote child, and real input, one file of ``"x\\n" *
maps`` cut with a split size of 2 bytes into exactly ``--maps`` splits.

What is simulated: each tasktracker is a ``SimWorker`` (an ``IWorker``)
that records what the jobtracker tells it and "runs" each launched attempt
for a simulated duration: a map reports ``attempt_done`` after
``--map-seconds`` x U(0.5, 1.5); a reduce, once it has been told where
every map output is (its ``launch_reduce`` locations plus the
``map_outputs`` announcements its worker received), asks ``may_commit``
and reports ``attempt_done`` ``--reduce-seconds`` x U(0.5, 1.5) later.
Every worker heartbeats with its live attempts and their progress, first
every ``--heartbeat`` seconds (default ``wire.DEFAULT_HEARTBEAT``) at
phases spread over the interval, then at the interval the jobtracker
answers (never shorter than its own, as a tasktracker does; it grows with
the cluster: ``--heartbeats-per-second``), and a submitting client polls ``status``
every 0.5 s as the CLI's progress bar does. With ``--page-poll S``, a
browser follows the job's status page too: the page is made (its view and
its HTML, as ``web`` serves it) every S seconds, as the page's script
fetches it every second. Time is a
``twisted.internet.task.Clock`` (ordered by a heap: a thousand workers'
timers); the jobtracker's own periodic check runs on it too.

What is measured: the CPU (``time.process_time``) spent inside each call
into the jobtracker, and only there (the fakes' own work is a list append
during the call; scheduling the simulated completions happens after it),
minus the cost of reading the clock twice (calibrated at start). The
outbound calls are counted, not timed. PB's cost is added from a model
(``--pb`` measures it over an in-memory connection): receiving a heartbeat
(``--pb-heartbeat-us``) in the "% of a core" figures with PB's
heartbeats; and in the figure "with every PB call", the jobtracker's own
share of PB's CPU for every call it receives (``INBOUND``: heartbeats,
attempts' results, ``may_commit``, ``status``; ``--pb-call-in-us``) and
every call it makes (``--pb-call-out-us``).
Memory: the process's RSS at each stage, and with ``--tracemalloc`` the
bytes allocated by ``pytxmr`` code still held at each stage.

At the end it checks, by its own count, that the job succeeded and that
every map and every reduce reported success exactly once.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import io
import json
import os
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != REPO:
    sys.path.insert(0, REPO)  # this checkout's pytxmr, and its zygote's too

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.base import DelayedCall  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402
from zope.interface import implementer  # noqa: E402

from pytxmr import client, pages  # noqa: E402
from pytxmr.child import Zygote  # noqa: E402
from pytxmr.counters import FRAMEWORK  # noqa: E402
from pytxmr.jobtracker.heartbeats import DEFAULT_HEARTBEATS_PER_SECOND  # noqa: E402
from pytxmr.jobtracker.tracker import JobTracker  # noqa: E402
from pytxmr.ports import IWorker  # noqa: E402
from pytxmr.wire import DEFAULT_HEARTBEAT, AttemptResult, Heartbeat, Registration  # noqa: E402

JOB = os.path.join(REPO, "examples", "wordcount.py")
#: A tasktracker's default shuffle memory, as its heartbeat reports it.
SHUFFLE_BUDGET = 256 << 20
STATUS_POLL = 0.5  # client.run_job's default interval
#: PB's CPU to receive one heartbeat of 4 attempts and answer it, in
#: microseconds, as ``--pb`` measures it (``pb_costs``; 100-105 us on the
#: machine of bench/RESULTS.md): added to the logic's figures per heartbeat.
PB_HEARTBEAT_US = 105.0
#: The jobtracker's own share of PB's CPU, microseconds, as ``--pb``
#: measures it (``pb_costs``, 2026-12-04): receiving a call and answering
#: it (``heartbeat_jobtracker_us``: 45 us, where both sides take 61), and
#: making a call and receiving its answer (``map_outputs_jobtracker_us``:
#: 42 us, where both sides take 98). The figure "with every PB call"
#: charges them to every call received (``INBOUND``) and made.
PB_CALL_IN_US = 45.0
PB_CALL_OUT_US = 42.0
INBOUND = ("heartbeat", "map done", "reduce done", "may commit", "status")
DECILES = 10


# --- a Clock for thousands of timers ---------------------------------------

class HeapClock(task.Clock):
    """``Clock`` whose pending calls are a heap (``Clock`` re-sorts its
    whole list at every call and every step: quadratic with a thousand
    heartbeat timers). Deterministic: ties run in the order scheduled."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = 0

    def callLater(self, delay: float, f: Callable[..., object], *args: object,
                  **kw: object) -> DelayedCall:
        dc = DelayedCall(self.rightNow + delay, f, args, kw, lambda c: None, self._push,
                         self.seconds)
        self._push(dc)
        return dc

    def _push(self, dc: DelayedCall) -> None:
        heapq.heappush(self._heap, (dc.getTime(), self._seq, dc))
        self._seq += 1

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [dc for _, _, dc in self._heap if not (dc.cancelled or dc.called)]

    def next_time(self) -> float | None:
        while self._heap:
            t, _, dc = self._heap[0]
            if dc.cancelled or dc.called or dc.getTime() < t:
                heapq.heappop(self._heap)  # cancelled, or reset earlier (pushed again)
            elif dc.getTime() > t:  # delayed: its turn comes later
                heapq.heappop(self._heap)
                dc.activate_delay()
                self._push(dc)
            else:
                return t
        return None

    def step(self) -> bool:
        """Run the next pending call; False when there is none."""
        t = self.next_time()
        if t is None:
            return False
        _, _, dc = heapq.heappop(self._heap)
        self.rightNow = max(self.rightNow, t)
        dc.called = 1
        dc.func(*dc.args, **dc.kw)
        return True

    def advance(self, amount: float) -> None:
        end = self.rightNow + amount
        while (t := self.next_time()) is not None and t <= end:
            self.step()
        self.rightNow = end


# --- measuring ---------------------------------------------------------------

def _timer_overhead(n: int = 20000) -> float:
    """Seconds that two process_time readings around a call of nothing add."""
    pt = time.process_time_ns
    f = _nothing
    best = None
    for _ in range(3):
        total = 0
        for _ in range(n):
            t0 = pt()
            f()
            total += pt() - t0
        best = total if best is None else min(best, total)
    return best / n / 1e9


def _nothing() -> None:
    return None


class Meter:
    """CPU inside the jobtracker's calls, per kind of call and per window:
    a tenth of the maps each (by maps finished), then the reduce phase."""

    def __init__(self, total_tasks: int, overhead: float,
                 profile: cProfile.Profile | None = None) -> None:
        self.cpu: Counter[str] = Counter()
        self.n: Counter[str] = Counter()
        self.overhead = overhead
        self.total_maps = max(1, total_tasks)
        self.finished = 0  # maps reported done so far
        self.dec_cpu = [Counter() for _ in range(DECILES + 1)]
        self.dec_n = [Counter() for _ in range(DECILES + 1)]
        self.max_call: dict[str, float] = {}
        self.profile = profile
        self.during: Callable[[], None] = _nothing
        self.last = 0.0
        #: Per window: the sum over map-done events of (maps not yet
        #: launched) x workers, what _pick_worker scans in vain.
        self.dec_pending_workers = [0] * (DECILES + 1)
        #: Map-done events with every map launched already: their CPU.
        self.tail_cpu = 0.0
        self.tail_n = 0

    def timed(self, kind: str, f: Callable[..., Any], *args: Any) -> Any:
        pt = time.process_time_ns
        prof = self.profile
        if prof is not None:
            prof.enable()
        t0 = pt()
        result = f(*args)
        spent = (pt() - t0) / 1e9 - self.overhead
        if prof is not None:
            prof.disable()
        self.cpu[kind] += spent
        self.n[kind] += 1
        d = self.finished * DECILES // self.total_maps
        self.dec_cpu[d][kind] += spent
        self.dec_n[d][kind] += 1
        if spent > self.max_call.get(kind, 0.0):
            self.max_call[kind] = spent
        self.last = spent
        self.during()
        return result

    def total(self, kinds: tuple[str, ...] | None = None) -> float:
        return sum(v for k, v in self.cpu.items() if kinds is None or k in kinds)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def traced_pytxmr_bytes() -> int:
    """Bytes allocated by pytxmr's own lines and still held (tracemalloc)."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, os.path.join(REPO, "pytxmr", "*"))])
    return sum(s.size for s in snap.statistics("filename"))


def top_pytxmr_lines(n: int = 12) -> list[tuple[str, int, int]]:
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, os.path.join(REPO, "pytxmr", "*"))])
    out = []
    for s in snap.statistics("lineno")[:n]:
        frame = s.traceback[0]
        out.append((f"{os.path.relpath(frame.filename, REPO)}:{frame.lineno}", s.size, s.count))
    return out


# --- the fake tasktrackers -----------------------------------------------------

@implementer(IWorker)
class SimWorker:
    """A tasktracker that only pretends: what the jobtracker tells it goes
    to the simulation's outbox (an append, inside the timed call); the
    simulation acts on it after the call."""

    def __init__(self, sim: Simulation, index: int) -> None:
        self.sim = sim
        self.index = index
        self.wid = ""
        #: attempt id -> (kind, started, duration or None: a reduce waiting for maps)
        self.running: dict[str, list[Any]] = {}
        #: Map locations announced to this worker (map_outputs), in all.
        self.announced = 0
        #: Launches it got, as its heartbeats say (``Heartbeat.launches``).
        self.launches = 0

    def init_job(self, init: Any) -> None:
        self.sim.outbox.append(("init_job", self, init.job_id))

    def launch_map(self, job_id: str, attempt_id: str, split: Any) -> None:
        self.sim.outbox.append(("launch_map", self, attempt_id, split.index))

    def launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                      locations: Any) -> None:
        self.sim.outbox.append(("launch_reduce", self, attempt_id, partition,
                                len(locations), self.announced))

    def map_outputs(self, job_id: str, locations: Any) -> None:
        self.announced += len(locations)
        self.sim.announce_calls += 1

    def kill_attempt(self, job_id: str, attempt_id: str) -> None:
        self.sim.outbox.append(("kill_attempt", self, attempt_id))

    def destroy_job(self, job_id: str) -> None:
        self.sim.outbox.append(("destroy_job", self, job_id))

    def disconnect(self) -> None:
        self.sim.outbox.append(("disconnect", self))


# --- the simulation ---------------------------------------------------------------

@dataclass
class Config:
    workers: int = 1000
    maps: int = 50000
    slots: int = 2
    reducers: int | None = None
    heartbeat: float = DEFAULT_HEARTBEAT
    heartbeats_per_second: float = DEFAULT_HEARTBEATS_PER_SECOND
    pb_heartbeat_us: float = PB_HEARTBEAT_US
    pb_call_in_us: float = PB_CALL_IN_US
    pb_call_out_us: float = PB_CALL_OUT_US
    map_seconds: float = 10.0
    reduce_seconds: float = 10.0
    status_poll: float = STATUS_POLL
    page_poll: float = 0.0
    speculative: bool = False
    seed: int = 1
    max_events: int | None = None
    max_cpu: float | None = None
    profile: str | None = None
    tracemalloc: bool = False
    workdir: str | None = None


MAP_COUNTERS = ("map input records", "map input bytes", "map output records",
                "combine input records", "combine output records", "spilled records",
                "map output materialized bytes")
REDUCE_COUNTERS = ("reduce input records", "reduce input groups", "reduce output records",
                   "output bytes", "shuffle bytes", "shuffle bytes in memory",
                   "shuffle bytes on disk")


class Simulation:

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.clock = HeapClock()
        self.outbox: list[tuple[Any, ...]] = []
        self.calls: Counter[str] = Counter()
        self.announce_calls = 0
        self.maps_done: Counter[int] = Counter()      # map index -> successes reported
        self.reduces_done: Counter[int] = Counter()   # partition -> successes reported
        self.maps_launched: Counter[int] = Counter()
        self.reduces_launched: Counter[int] = Counter()
        self.events = 0  # attempts reported done
        self.stopped_early = ""
        self.stages: dict[str, dict[str, float]] = {}
        self.job_id = ""
        self.num_reducers = 0
        self.profile = cProfile.Profile() if cfg.profile else None
        self.meter = Meter(1, 0.0)
        self.job_end_cpu = 0.0

    # ----- stages
    def stage(self, name: str) -> None:
        d = {"rss": rss_bytes(), "sim_time": self.clock.seconds(),
             "process_cpu": time.process_time()}
        if self.cfg.tracemalloc:
            d["pytxmr_traced"] = traced_pytxmr_bytes()
            d["all_traced"] = tracemalloc.get_traced_memory()[0]
        self.stages[name] = d

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        tmp = tempfile.mkdtemp(prefix="jtsim-", dir=cfg.workdir)
        zygote = Zygote(reactor)
        zygote.start()
        jt = self.jt = JobTracker(reactor, self.clock, os.path.join(tmp, "jt"), checkers=zygote,
                                  heartbeats_per_second=cfg.heartbeats_per_second)
        try:
            return await self._run(jt, tmp)
        finally:
            await jt.stop()
            await jt.history.flush()
            await zygote.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    async def _run(self, jt: JobTracker, tmp: str) -> dict[str, Any]:
        cfg = self.cfg
        overhead = _timer_overhead()
        self.meter = meter = Meter(1, overhead, self.profile)
        meter.during = self._drain
        # The job's input: exactly `maps` splits of 2 bytes.
        inp = os.path.join(tmp, "input.txt")
        with open(inp, "w") as f:
            f.write("x\n" * cfg.maps)
        jt.start()
        periodic = jt._periodic_loop.f
        jt._periodic_loop.f = lambda: meter.timed("periodic", periodic)
        self.stage("start")

        self.workers = [SimWorker(self, i) for i in range(cfg.workers)]
        for w in self.workers:
            reg = Registration(f"10.{w.index // 62500}.{w.index // 250 % 250}.{w.index % 250}",
                               7000, cfg.slots, 1000 + w.index)
            w.wid = meter.timed("register", jt.register, w, reg)
        self.stage("registered")

        spec = client.submission(JOB, [inp], os.path.join(tmp, "out"), split_size=2,
                                 reducers=cfg.reducers, speculative=cfg.speculative).spec
        # The first scheduling pass (Scheduler.submit, and the launches):
        # timed apart from the admission (module check, splits).
        start_step = jt._start_step
        jt._start_step = lambda job, **kw: meter.timed(  # type: ignore[method-assign]
            "first schedule", lambda: start_step(job, **kw))
        t0 = time.process_time()
        self.job_id = await jt.submit(spec)
        submit_cpu = time.process_time() - t0
        job = jt.jobs[self.job_id]
        num_maps, self.num_reducers = len(job.splits), job.num_reducers
        del job  # the memory of the ended job is the jobtracker's to drop
        if num_maps != cfg.maps:
            raise SystemExit(f"expected {cfg.maps} splits, the job has {num_maps}")
        meter.total_maps = cfg.maps
        self.stage("submitted")

        # Heartbeats, spread over the interval; the client's status poll.
        for w in self.workers:
            self.clock.callLater(cfg.heartbeat * (w.index + 1) / cfg.workers, self._beat, w)
        if cfg.status_poll:
            self.clock.callLater(cfg.status_poll, self._poll)
        if cfg.page_poll:
            self.clock.callLater(cfg.page_poll, self._page)
        started = self.clock.seconds()
        cpu_start = time.process_time()
        while self._running():
            if cfg.max_events is not None and self.events >= cfg.max_events:
                self.stopped_early = f"--max-events {cfg.max_events}"
                break
            if cfg.max_cpu is not None and meter.total() >= cfg.max_cpu:
                self.stopped_early = f"--max-cpu {cfg.max_cpu:g}"
                break
            if not self.clock.step():
                raise SystemExit("nothing left to happen, and the job is not done")
        sim_seconds = self.clock.seconds() - started
        wall_cpu = time.process_time() - cpu_start
        if not self.stopped_early:
            # Once its history is written, the ended job's memory is what stays.
            await jt.history.flush()
            self.stage("finished")
        result = await jt.wait(self.job_id) if not self.stopped_early else jt.kill(self.job_id)
        await jt.history.flush()
        if self.profile is not None and self.cfg.profile:
            self.profile.dump_stats(self.cfg.profile)
        return self.report(result, submit_cpu, sim_seconds, wall_cpu)

    # ----- what the workers do
    def _beat(self, w: SimWorker) -> None:
        now = self.clock.seconds()
        progress = {}
        for aid, entry in w.running.items():
            if entry[0] == "map":
                progress[aid] = min(1.0, (now - entry[1]) / entry[2])
            else:  # a reduce: half the maps fetched, as TaskTracker.progress says
                progress[aid] = 0.5 * w.announced / max(1, self.cfg.maps)
        beat = Heartbeat(tuple(sorted(w.running)), (0, SHUFFLE_BUDGET), progress, w.launches)
        asked = self.meter.timed("heartbeat", self.jt.heartbeat, w.wid, beat)
        self.clock.callLater(max(self.cfg.heartbeat, asked), self._beat, w)

    def _running(self) -> bool:
        job = self.jt.jobs.get(self.job_id)  # an ended job is in the history only
        return job is not None and job.running

    def _poll(self) -> None:
        self.meter.timed("status", self.jt.status, self.job_id)
        if self._running():
            self.clock.callLater(self.cfg.status_poll, self._poll)

    def _page(self) -> None:
        if not self._running():
            return
        self.meter.timed("page", self._make_page)
        self.clock.callLater(self.cfg.page_poll, self._page)

    def _make_page(self) -> None:
        """The job's page, as ``web`` makes it for a live job (the view is
        ready at once: nothing is read from disk)."""
        views = getattr(self.jt, "job_page_view", None) or self.jt.job_view  # a tree before it
        d = defer.Deferred.fromCoroutine(views(self.job_id))
        view: list[Any] = []
        d.addCallback(view.append)
        pages.job_page(view[0], self.jt.now())

    def _map_done(self, w: SimWorker, aid: str, index: int) -> None:
        if w.running.pop(aid, None) is None:
            return  # killed meanwhile
        self.maps_done[index] += 1
        self.events += 1
        counters = {FRAMEWORK: {name: 1 for name in MAP_COUNTERS}}
        m = self.meter
        pending = self.cfg.maps - len(self.maps_launched)
        m.dec_pending_workers[m.finished * DECILES // m.total_maps] += pending * len(self.workers)
        m.timed("map done", self.jt.attempt_done, w.wid, aid,
                AttemptResult(counters, ("str",), None))
        if pending == 0:
            m.tail_cpu += m.last
            m.tail_n += 1
        self.meter.finished += 1  # the windows count the maps done before the event
        if len(self.maps_done) == self.cfg.maps:
            # After the jobtracker's last announcements: to many workers it
            # gathers them for up to 1 s (JobTracker._announce).
            self.clock.callLater(1.0, self._reduces_may_start)

    def _reduces_may_start(self) -> None:
        for w in self.workers:
            for aid, entry in w.running.items():
                if entry[0] == "reduce" and entry[2] is None:
                    self._reduce_ready(w, aid, entry)

    def _reduce_ready(self, w: SimWorker, aid: str, entry: list[Any]) -> None:
        _, known, announced_at_launch, partition = entry[3]
        told = known + w.announced - announced_at_launch
        if told < self.cfg.maps:
            raise SystemExit(f"reduce {aid} was told of {told} map outputs of {self.cfg.maps}")
        entry[1] = self.clock.seconds()
        entry[2] = self.cfg.reduce_seconds * self.rng.uniform(0.5, 1.5)
        self.clock.callLater(entry[2], self._reduce_done, w, aid, partition)

    def _reduce_done(self, w: SimWorker, aid: str, partition: int) -> None:
        if aid not in w.running:
            return
        if not self.meter.timed("may commit", self.jt.may_commit, w.wid, aid):
            raise SystemExit(f"reduce {aid} was refused the commit")
        del w.running[aid]
        self.reduces_done[partition] += 1
        self.events += 1
        counters = {FRAMEWORK: {name: 1 for name in REDUCE_COUNTERS}}
        t0 = time.process_time()
        self.meter.timed("reduce done", self.jt.attempt_done, w.wid, aid,
                         AttemptResult(counters, (), None))
        if not self._running():
            self.job_end_cpu = time.process_time() - t0

    def _drain(self) -> None:
        """Act on what the last call told the workers: start the simulated attempts."""
        box, self.outbox = self.outbox, []
        now = self.clock.seconds()
        for item in box:
            kind, w = item[0], item[1]
            self.calls[kind] += 1
            if kind in ("launch_map", "launch_reduce"):
                w.launches += 1
            if kind == "launch_map":
                aid, index = item[2], item[3]
                self.maps_launched[index] += 1
                duration = self.cfg.map_seconds * self.rng.uniform(0.5, 1.5)
                w.running[aid] = ["map", now, duration]
                self.clock.callLater(duration, self._map_done, w, aid, index)
            elif kind == "launch_reduce":
                aid, partition, known, announced = item[2:6]
                self.reduces_launched[partition] += 1
                entry = ["reduce", now, None, (aid, known, announced, partition)]
                w.running[aid] = entry
                if len(self.maps_done) == self.cfg.maps:
                    self._reduce_ready(w, aid, entry)
            elif kind == "kill_attempt":
                w.running.pop(item[2], None)
            elif kind == "disconnect":
                raise SystemExit(f"worker {w.wid} was declared lost")

    # ----- the report
    def report(self, result: dict[str, Any], submit_cpu: float, sim_seconds: float,
               wall_cpu: float) -> dict[str, Any]:
        cfg, m = self.cfg, self.meter
        maps_once = sum(1 for i in range(cfg.maps) if self.maps_done[i] == 1)
        reduces_once = sum(1 for i in range(self.num_reducers) if self.reduces_done[i] == 1)
        event_kinds = ("map done", "reduce done", "may commit")
        sched_cpu = m.total(("first schedule", *event_kinds))
        launched = sum(self.maps_launched.values()) + sum(self.reduces_launched.values())
        per = {k: {"calls": m.n[k], "cpu_s": m.cpu[k],
                   "us_per_call": 1e6 * m.cpu[k] / m.n[k] if m.n[k] else None,
                   "max_ms": 1e3 * m.max_call.get(k, 0.0)} for k in sorted(m.n)}
        deciles = []
        for d in range(DECILES + 1):
            row: dict[str, Any] = {}
            for k in ("heartbeat", "map done", "reduce done", "status"):
                n = m.dec_n[d][k]
                row[k] = {"calls": n, "us_per_call": 1e6 * m.dec_cpu[d][k] / n if n else None}
            n = m.dec_n[d]["map done"]
            row["pending_x_workers"] = m.dec_pending_workers[d] / n if n else None
            deciles.append(row)
        tail_us = 1e6 * m.tail_cpu / m.tail_n if m.tail_n else None
        # What each (pending map x worker) pair costs a map-done event:
        # the first window against the events with nothing pending.
        first = deciles[0]
        pair_ns = None
        if tail_us is not None and first["pending_x_workers"]:
            pair_ns = (1e3 * (first["map done"]["us_per_call"] - tail_us)
                       / first["pending_x_workers"])
        hb = per.get("heartbeat", {}).get("us_per_call") or 0.0
        beats_per_s = m.n["heartbeat"] / sim_seconds if sim_seconds else 0.0
        loop_cpu = m.total(tuple(k for k in m.n if k not in ("register", "first schedule")))
        out = {
            "config": asdict(cfg),
            "job": {"id": self.job_id, "maps": cfg.maps, "reduces": self.num_reducers,
                    "state": result.get("state"), "stopped_early": self.stopped_early or None},
            "check": {"maps_done_once": maps_once, "reduces_done_once": reduces_once,
                      "maps_done_reports": sum(self.maps_done.values()),
                      "reduces_done_reports": sum(self.reduces_done.values()),
                      "maps_launched": sum(self.maps_launched.values()),
                      "reduces_launched": sum(self.reduces_launched.values())},
            "timer_overhead_us": 1e6 * m.overhead,
            "calls": per,
            "deciles": deciles,
            "map_done_nothing_pending": {"calls": m.tail_n, "us_per_call": tail_us},
            "ns_per_pending_map_x_worker": pair_ns,
            "outbound": {**dict(self.calls), "map_outputs": self.announce_calls},
            "submit_cpu_s": submit_cpu,
            "job_end_cpu_s": self.job_end_cpu,
            "sim_seconds": sim_seconds,
            "sim_process_cpu_s": wall_cpu,
            "cpu_per_scheduled_task_us": 1e6 * sched_cpu / launched if launched else None,
            "heartbeats_per_second": beats_per_s,
            "heartbeat_core_fraction": hb * 1e-6 * beats_per_s,
            "loop_core_fraction": loop_cpu / sim_seconds if sim_seconds else None,
            "stages": self.stages,
        }
        with_pb(out, cfg.pb_heartbeat_us, cfg.pb_call_in_us, cfg.pb_call_out_us)
        if cfg.tracemalloc:
            out["top_pytxmr_lines"] = top_pytxmr_lines()
        return out


def with_pb(r: dict[str, Any], pb_us: float, in_us: float, out_us: float) -> None:
    """Add PB's ``pb_us`` per heartbeat received (both sides) to the "% of
    a core" figures; and, in the figure "with every PB call", the
    jobtracker's share: ``in_us`` per call received (``INBOUND``) and
    ``out_us`` per call made."""
    pb = pb_us * 1e-6 * r["heartbeats_per_second"]
    r["pb_heartbeat_us"] = pb_us
    r["pb_call_in_us"] = in_us
    r["pb_call_out_us"] = out_us
    r["heartbeat_core_fraction_with_pb"] = r["heartbeat_core_fraction"] + pb
    inbound = sum(r["calls"].get(k, {}).get("calls", 0) for k in INBOUND)
    outbound = sum(r["outbound"].values())
    sim = r["sim_seconds"]
    r["pb_calls_per_second"] = {"inbound": inbound / sim if sim else None,
                                "outbound": outbound / sim if sim else None}
    every_call = (in_us * inbound + out_us * outbound) * 1e-6 / sim if sim else 0.0
    loop = r["loop_core_fraction"]
    r["loop_core_fraction_with_pb"] = loop + pb if loop is not None else None
    r["loop_core_fraction_with_every_pb_call"] = loop + every_call if loop is not None else None


def print_report(r: dict[str, Any]) -> None:
    cfg, job, chk = r["config"], r["job"], r["check"]
    p = print
    p(f"jtsim: {cfg['workers']} workers x {cfg['slots']} slots, {job['maps']} maps, "
      f"{job['reduces']} reduces, heartbeat {cfg['heartbeat']:g}s, maps {cfg['map_seconds']:g}s "
      f"and reduces {cfg['reduce_seconds']:g}s x U(0.5,1.5)")
    p(f"job {job['state']}" + (f" (stopped early: {job['stopped_early']})"
                               if job["stopped_early"] else "")
      + f"; simulated {r['sim_seconds']:.1f}s; the simulation took {r['sim_process_cpu_s']:.1f}s "
      f"of CPU in all")
    p(f"check: maps done exactly once {chk['maps_done_once']}/{job['maps']}, reduces "
      f"{chk['reduces_done_once']}/{job['reduces']}; launched {chk['maps_launched']} maps, "
      f"{chk['reduces_launched']} reduces")
    p(f"timer overhead subtracted: {r['timer_overhead_us']:.2f} us per call")
    p(f"{'call':<16}{'calls':>10}{'CPU s':>10}{'us/call':>12}{'max ms':>10}")
    for k, v in r["calls"].items():
        us = v["us_per_call"]
        p(f"{k:<16}{v['calls']:>10}{v['cpu_s']:>10.3f}{us if us is not None else 0:>12.1f}"
          f"{v['max_ms']:>10.2f}")
    p(f"admission + first schedule (submit, process CPU): {r['submit_cpu_s']:.2f}s; "
      f"the job's end (last reduce done): {r['job_end_cpu_s'] * 1e3:.1f} ms")
    p(f"CPU per scheduled task: {r['cpu_per_scheduled_task_us'] or 0:.1f} us")
    hps, pb_us = r["heartbeats_per_second"], r["pb_heartbeat_us"]
    p(f"heartbeats alone, {cfg['workers']} workers, {hps:.0f} a second (every "
      f"{cfg['workers'] / hps if hps else 0:.1f}s each): "
      f"{100 * r['heartbeat_core_fraction']:.3f}% of a core; with PB's "
      f"{pb_us:.0f} us to receive each: {100 * r['heartbeat_core_fraction_with_pb']:.2f}%")
    if r["loop_core_fraction"] is not None:
        p(f"everything after the submission (heartbeats, events, status, periodic) over "
          f"simulated time: {100 * r['loop_core_fraction']:.2f}% of a core; with PB's "
          f"heartbeats: {100 * r['loop_core_fraction_with_pb']:.2f}%")
        rates = r["pb_calls_per_second"]
        p(f"with every PB call ({rates['inbound']:.0f} received a second at "
          f"{r['pb_call_in_us']:.0f} us, {rates['outbound']:.0f} made at "
          f"{r['pb_call_out_us']:.0f} us): "
          f"{100 * r['loop_core_fraction_with_every_pb_call']:.2f}% of a core")
    p("by window (maps finished before the call; then the reduce phase), us per call (calls):")
    p(f"{'window':<8}" + "".join(f"{k:>16}" for k in ("heartbeat", "map done", "reduce done",
                                                      "status")))
    for d, row in enumerate(r["deciles"]):
        if not any(v["calls"] for k, v in row.items() if k != "pending_x_workers"):
            continue
        cells = []
        for k, v in row.items():
            if k == "pending_x_workers":
                continue
            us = v["us_per_call"]
            cells.append(f"{us:>10.1f} ({v['calls']:>4})" if us is not None else f"{'-':>16}")
        name = f"{d * 10:>3}%" if d < DECILES else "reduces"
        pw = row["pending_x_workers"]
        p(f"{name:<8}" + "".join(f"{c:>16}" for c in cells)
          + (f"   pending maps x workers {pw:,.0f}" if pw is not None else ""))
    tail = r["map_done_nothing_pending"]
    if tail["calls"]:
        p(f"map done with every map launched already: {tail['us_per_call']:.1f} us "
          f"({tail['calls']} calls)")
    if r["ns_per_pending_map_x_worker"] is not None:
        p(f"a map done costs {r['ns_per_pending_map_x_worker']:.0f} ns more per (pending map x "
          f"worker), first window against those")
    p(f"outbound calls (counted, not timed): {r['outbound']}")
    base = r["stages"]["registered"]
    for name, st in r["stages"].items():
        line = f"stage {name:<11} RSS {st['rss'] / 2**20:8.1f} MiB"
        if "pytxmr_traced" in st:
            line += (f"  pytxmr-held {st['pytxmr_traced'] / 2**20:8.2f} MiB "
                     f"(+{(st['pytxmr_traced'] - base['pytxmr_traced']) / 2**20:.2f} "
                     f"since registered), all traced "
                     f"+{(st['all_traced'] - base['all_traced']) / 2**20:.2f} MiB")
        p(line)
    tasks = job["maps"] + job["reduces"]
    for name in ("submitted", "finished"):
        st = r["stages"].get(name)
        if st is None:
            continue
        rss = st["rss"] - base["rss"]
        line = f"per task at {name}: RSS {rss / tasks:.0f} B"
        if "pytxmr_traced" in st:
            line += (f", pytxmr-held {(st['pytxmr_traced'] - base['pytxmr_traced']) / tasks:.0f} B"
                     f", all traced {(st['all_traced'] - base['all_traced']) / tasks:.0f} B")
        p(line)
    for where, size, count in r.get("top_pytxmr_lines", []):
        p(f"  {size / 2**20:8.2f} MiB {count:>9} blocks  {where}")
    if "pb_us" in r:
        p("PB per call (in-memory connection, us): " + ", ".join(
            f"{k[:-3]} {v:.1f}" for k, v in r["pb_us"].items()))
    p(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def print_profile(path: str, n: int = 25) -> None:
    s = io.StringIO()
    stats = pstats.Stats(path, stream=s)
    stats.sort_stats("tottime").print_stats(n)
    print(s.getvalue())


def pb_costs(n: int = 3000) -> dict[str, float]:
    """What PB adds per call, over an in-memory connection (``iosim``, as
    ``tests/component/test_pb_adapters.py``): the jobtracker sending one
    ``map_outputs`` with one location (the call alone, then the delivery
    and the answer on both sides), and a heartbeat of 4 attempts received
    (decoded, checked, dispatched to a logic that does nothing, answered;
    the worker's decoding of the answer included); and of each, the
    jobtracker's own share (``*_jobtracker_us``: the call made or the answer
    sent, and the bytes its protocol received). Microseconds per call."""
    from twisted.test import iosim

    from pytxmr import wire
    from pytxmr.auth import login
    from pytxmr.jobtracker.pbadapter import pb_factory
    from pytxmr.pbwire import client_factory, pack
    from pytxmr.tasktracker.pbadapter import TaskTrackerMind
    from pytxmr.wire import MapLocation

    class Logic:  # both daemons' logic, doing nothing
        worker: Any = None

        def register(self, worker: Any, reg: Any) -> str:
            self.worker = worker
            return "w1"

        def heartbeat(self, wid: str, beat: Any) -> float:
            return 10.0  # the interval a jobtracker of 1,000 workers answers

        def map_outputs(self, job_id: str, locations: Any) -> None:
            pass

        def worker_disconnected(self, wid: str) -> None:
            pass

    secret = b"jtsim"
    clock = task.Clock()
    logic = Logic()
    server, cf = pb_factory(logic, secret, clock), client_factory()  # type: ignore[arg-type]
    _, jt_side, pump = iosim.connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: cf.buildProtocol(None), clock=clock)
    # The jobtracker's share of a delivery: what its protocol does with the
    # bytes it receives (a call's answer), apart from the worker's side.
    jt_received = [0.0]
    jt_data_received = jt_side.dataReceived

    def timed_data_received(data: bytes) -> None:
        t0 = time.process_time()
        jt_data_received(data)
        jt_received[0] += time.process_time() - t0

    jt_side.dataReceived = timed_data_received  # type: ignore[method-assign]

    def result(d: Any) -> Any:
        pump.flush()
        out: list[Any] = []
        d.addBoth(out.append)
        return out[0]

    perspective = result(defer.Deferred.fromCoroutine(
        login(cf, wire.ROLE_TASKTRACKER, secret,
              TaskTrackerMind(logic, lambda: None))))  # type: ignore[arg-type]
    result(perspective.callRemote("register", Registration("10.0.0.1", 7000, 2).to_wire()))
    port = logic.worker
    loc = (MapLocation(17, "w12", "10.0.0.12", 7000, ("str",), "job_1-s0_m00017_0"),)
    aids = tuple(f"job_1-s0_m{i:05d}_0" for i in range(4))
    packed = pack(Heartbeat(aids, (0, SHUFFLE_BUDGET), {a: 0.5 for a in aids}, 4).to_wire())
    pt = time.process_time
    out: dict[str, float] = {}
    # One call at a time: iosim's pump (and banana's buffer) grow
    # quadratic with many calls queued.
    for _ in range(2):  # the first round warms up
        send = delivery = receive = jt_answer = jt_beat = 0.0
        for _ in range(n):
            t0 = pt()
            port.map_outputs("job_1-s0", loc)
            t1 = pt()
            jt_received[0] = 0.0
            pump.flush()
            t2 = pt()
            jt_answer += jt_received[0]
            perspective.callRemote("heartbeat", packed)
            t3 = pt()
            jt_received[0] = 0.0
            pump.flush()
            t4 = pt()
            jt_beat += jt_received[0]
            send += t1 - t0
            delivery += t2 - t1
            receive += t4 - t3
        out["map_outputs_send_us"] = 1e6 * send / n
        out["map_outputs_delivery_us"] = 1e6 * delivery / n
        out["map_outputs_jobtracker_us"] = 1e6 * (send + jt_answer) / n
        out["heartbeat_receive_us"] = 1e6 * receive / n
        out["heartbeat_jobtracker_us"] = 1e6 * jt_beat / n
    return out


reactor: Any = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--maps", type=int, default=50000)
    p.add_argument("--slots", type=int, default=2, help="slots per worker")
    p.add_argument("--reducers", type=int, default=None,
                   help="default: as the jobtracker decides (one per slot)")
    p.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT,
                   help="the workers' own interval (the jobtracker may ask for longer)")
    p.add_argument("--heartbeats-per-second", type=float,
                   default=DEFAULT_HEARTBEATS_PER_SECOND,
                   help="the jobtracker's option of that name")
    p.add_argument("--pb-heartbeat-us", type=float, default=PB_HEARTBEAT_US,
                   help=f"PB's CPU per heartbeat received, added to the %% of a core "
                        f"(default {PB_HEARTBEAT_US:g}, measured with --pb; with --pb, "
                        f"what it measures)")
    p.add_argument("--pb-call-in-us", type=float, default=PB_CALL_IN_US,
                   help=f"the jobtracker's PB CPU per call it receives, in the %% of a core "
                        f"with every PB call (default {PB_CALL_IN_US:g}; with --pb, what it "
                        f"measures)")
    p.add_argument("--pb-call-out-us", type=float, default=PB_CALL_OUT_US,
                   help=f"the jobtracker's PB CPU per call it makes, likewise (default "
                        f"{PB_CALL_OUT_US:g})")
    p.add_argument("--map-seconds", type=float, default=10.0)
    p.add_argument("--reduce-seconds", type=float, default=10.0)
    p.add_argument("--status-poll", type=float, default=STATUS_POLL,
                   help="seconds between the client's status calls (0: none)")
    p.add_argument("--page-poll", type=float, default=0.0,
                   help="a browser on the job's status page: made every SECONDS (0: none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-events", type=int, default=None,
                   help="stop after this many attempts reported done (a partial run)")
    p.add_argument("--max-cpu", type=float, default=None,
                   help="stop once the jobtracker has spent this much CPU (s)")
    p.add_argument("--profile", default=None, help="cProfile the jobtracker's calls into FILE")
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace pytxmr's allocations (slower: CPU figures not comparable)")
    p.add_argument("--workdir", default=None, help="where the temporary files go")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--pb", action="store_true",
                   help="also measure what PB adds per call (pb_costs)")
    p.add_argument("--speculative", action="store_true",
                   help="submit the job with speculative execution (its maps take 0.5 to 1.5 "
                        "times --map-seconds: none straggles, what is measured is the watch)")
    a = p.parse_args(argv)
    cfg = Config(workers=a.workers, maps=a.maps, slots=a.slots, reducers=a.reducers,
                 heartbeat=a.heartbeat, heartbeats_per_second=a.heartbeats_per_second,
                 pb_heartbeat_us=a.pb_heartbeat_us, pb_call_in_us=a.pb_call_in_us,
                 pb_call_out_us=a.pb_call_out_us,
                 map_seconds=a.map_seconds,
                 reduce_seconds=a.reduce_seconds, status_poll=a.status_poll,
                 page_poll=a.page_poll,
                 speculative=a.speculative, seed=a.seed,
                 max_events=a.max_events, max_cpu=a.max_cpu, profile=a.profile,
                 tracemalloc=a.tracemalloc, workdir=a.workdir)
    if cfg.tracemalloc:
        tracemalloc.start()
    # The jobtracker's log lines go nowhere (a daemon writes them to a file;
    # few happen per event): not kept in memory either.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    global reactor
    from twisted.internet import reactor as the_reactor
    reactor = the_reactor

    async def go(_: Any) -> None:
        r = await Simulation(cfg).run()
        if a.pb:
            r["pb_us"] = pb = pb_costs()
            with_pb(r, pb["heartbeat_receive_us"], pb["heartbeat_jobtracker_us"],
                    pb["map_outputs_jobtracker_us"])
        print_report(r)
        if cfg.profile:
            print_profile(cfg.profile)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(r, f, indent=1)
        check = r["check"]
        if r["job"]["stopped_early"] is None and not (
                r["job"]["state"] == "succeeded"
                and check["maps_done_once"] == check["maps_done_reports"] == cfg.maps
                and check["reduces_done_once"] == check["reduces_done_reports"]
                == r["job"]["reduces"]):
            raise SystemExit("FAILED: the job did not run every task exactly once")

    def show(failure: Any) -> Any:
        if not failure.check(SystemExit):
            failure.printTraceback(file=sys.stderr)
        else:
            print(failure.value, file=sys.stderr)
        return failure

    task.react(lambda r: defer.Deferred.fromCoroutine(go(r)).addErrback(show), [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
