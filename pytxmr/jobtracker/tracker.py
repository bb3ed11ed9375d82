"""The jobtracker's logic: jobs, workers and the scheduler.

``JobTracker`` turns what tasktrackers and clients say into scheduler
events, and the scheduler's actions into calls on each worker's
``IWorker`` port. It knows nothing of PB: the adapter (``pbadapter``)
validates and delegates inbound calls and implements the port outbound.
User code never runs here: ``Admission`` checks a module in a child process.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .. import objectoutput, output, scheduler as sched, stepdata, storage, views
from ..bundle import CHUNK_BYTES, MAX_BUNDLE_BYTES, BundleError, BundleStore
from ..child import Zygote
from ..counters import FRAMEWORK
from ..history import DEFAULT_RETENTION as DEFAULT_HISTORY_RETENTION, JobHistory
from ..journal import Committed, Journal
from ..outputrules import MayReplace, job_mark
from ..ports import IWorker
from ..scheduler import Action, Scheduler, State
from ..services import Awaited
from ..tasklog import LogKeeper, logs_reply
from ..splits import MAX_DEFAULT_SPLIT_SIZE, compute_splits
from ..storage import InputFile
from ..wire import (
    OUTPUT_TAKEN,
    AttemptResult,
    Heartbeat,
    Registration,
    SubmissionError,
    TaskError,
    UnknownJob,
    NoSuchWorker,
    UnknownWorker,
    step_of,
)
from .admission import Admission, Submitter, SubmissionWithdrawn, interrupted_outputs
from .submission import DEFAULT_MAX_TASKS_PER_JOB, plan_tasks, step_reducers
from .heartbeats import DEFAULT_HEARTBEATS_PER_SECOND, Pacing, announce_wait
from .job import JobRecord, job_from_plan, plan_of
from .runninglogs import RunningLogs

if TYPE_CHECKING:
    from ..metrics import Metrics

DEFAULT_EXPIRY = 10.0
DEFAULT_CHECK_TIMEOUT = 30.0
#: Seconds a resumed job waits for the workers that hold its map outputs
#: to come back before its maps run again (they reconnect with a backoff
#: of at most 10 s).
DEFAULT_RESUME_GRACE = 12.0
#: Seconds an ended job waits for the logs of the attempts it killed.
KILLED_LOGS_WAIT = 1.0
#: Seconds a killed or failed job waits, before it cleans its output, for
#: the attempts it let commit to end their commits (an upload of a part
#: takes minutes on a slow link): one that landed after the cleaning went
#: over the next job's output of the same prefix.
COMMITS_WAIT = 600.0
#: Seconds a bundle stays after its last job, and after a client last
#: found it there: a client that found it submits without uploading it,
#: and was refused when an identical job ended in between.
BUNDLE_LINGER = 60.0
#: Seconds without another worker registering before the jobs that waited
#: for workers are planned for the slots registered.
PLAN_SETTLE = 1.0
#: ...and at most this long after the first of them registered.
PLAN_MAX_WAIT = 5.0


@dataclass
class WorkerConnection:
    wid: str
    worker: IWorker
    host: str
    port: int
    slots: int
    pid: int | None = None
    #: Launches sent to it: its heartbeats say how many it got.
    launches: int = 0


@implementer(views.IJobTrackerStatus)
class JobTracker:
    """Jobs, workers and the scheduler; everything a remote call can ask."""

    log = Logger()

    def __init__(self, reactor: IReactorProcess, clock: IReactorTime, workdir: str, *,
                 expiry: float = DEFAULT_EXPIRY,
                 check_timeout: float = DEFAULT_CHECK_TIMEOUT,
                 history_retention: int = DEFAULT_HISTORY_RETENTION,
                 checkers: Zygote, resume_grace: float = DEFAULT_RESUME_GRACE,
                 heartbeats_per_second: float = DEFAULT_HEARTBEATS_PER_SECOND,
                 max_tasks_per_job: int = DEFAULT_MAX_TASKS_PER_JOB,
                 metrics: bool = True) -> None:
        self._reactor = reactor
        self._clock = clock
        self.workdir = workdir
        self.expiry = expiry
        self.pacing = Pacing(expiry, heartbeats_per_second)
        self.scheduler = Scheduler()
        self.workers: dict[str, WorkerConnection] = {}
        self.running_logs = RunningLogs(clock)
        #: The jobs running, or ending (their output being finished); a job
        #: that has ended lives in ``history``.
        self.jobs: dict[str, JobRecord] = {}
        self._waiters: dict[str, list[defer.Deferred[dict[str, Any]]]] = {}
        #: Per job: (max attempts, speculative), for each of its steps.
        self._max_attempts: dict[str, tuple[int, bool]] = {}
        self._worker_seq = 0
        self._periodic_loop = task.LoopingCall(self._periodic)
        self._periodic_loop.clock = clock
        self.bundles = BundleStore(os.path.join(workdir, "bundles"), BUNDLE_LINGER, self.now)
        self.admission = Admission(reactor, clock, workdir, checkers, check_timeout,
                                   self.bundles, max_tasks_per_job)
        #: The scheduler's job ids (one per started step) -> their job.
        self._by_sched: dict[str, JobRecord] = {}
        self.history = JobHistory(os.path.join(workdir, "history"), history_retention)
        self.task_logs = LogKeeper()
        #: None without a status site to serve them (``run``'s jobtracker):
        #: Prometheus' client is 10-14 ms of a start.
        self.metrics: Metrics | None = None
        if metrics:
            from .. import metrics as prometheus

            self.metrics = prometheus.Metrics(self._metrics_state)
        self.journal = Journal(workdir)
        self.resume_grace = resume_grace
        #: Per step of a resumed job (its scheduler id): map index -> the
        #: attempt the journal had as committed, for the workers' reports.
        self._resumable: dict[str, dict[int, Committed]] = {}
        #: Per ended job, until its output is final and the history has it.
        self._ending: dict[str, defer.Deferred[None]] = {}
        #: Until when workers may still be coming back after a restart.
        self._workers_back_at = 0.0
        #: Jobs submitted while no worker was registered, to be cut into
        #: tasks for the slots of those that register: their input files
        #: as listed, and their split size.
        self._unplanned: dict[str, tuple[list[InputFile], int | None]] = {}
        self._last_registered = 0.0
        #: The first registration since jobs began to wait (None: none yet).
        self._first_registered: float | None = None
        self._plan_call: IDelayedCall | None = None
        self._planning = False
        #: Per step job: map outputs to announce together (``_announce``),
        #: and when.
        self._announcing: dict[str, list[Any]] = {}
        self._announce_timers: dict[str, IDelayedCall] = {}
        #: Per job: the attempts killed whose logs may still come
        #: (``killed_log``), and the attempts let commit (``may_commit``)
        #: that have not said they ended: what an ended job waits for.
        self._kill_logs = Awaited(clock)
        self._committing = Awaited(clock)
        self._workers_stopped = False  # see workers_stopped
        #: The worker of each attempt let commit: its id, and the (host,
        #: port) of its shuffle server.
        self._commit_workers: dict[str, tuple[str, tuple[str, int]]] = {}
        #: Commits whose worker is gone (lost, or from before a restart),
        #: until a worker at their address registers again and says whether
        #: they go on, or until the time here (``_await_claim``).
        self._unclaimed_commits: dict[str, tuple[tuple[str, int], float]] = {}
        self._unclaimed_timer: IDelayedCall | None = None
        #: Jobs left ending in the journal as the jobtracker stopped.
        self._left_ending: set[str] = set()
        self._stopping = False

    # --- lifecycle -------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        jobs_dir = self.admission.jobs_dir
        self.journal.open()
        # Finished jobs live beside jobs/ and outlive restarts.
        self.history.load()
        resumed = self._resume_jobs()
        # The other leftovers of a crashed run: jobs that cannot resume
        # (their files are gone), failed like any other job.
        for job_id, out in interrupted_outputs(jobs_dir):
            if job_id in resumed:
                continue
            if storage.is_remote(out):
                # The store's calls take time: not at start, in a thread,
                # the output held from other submissions meanwhile.
                cleaning = self._in_thread(output.abort_unfinished, out, None, job_id)
                self.admission.hold(f"the interrupted job {job_id}", out, cleaning)
                cleaning.addCallbacks(
                    lambda aborted, job_id=job_id, out=out: self._interrupted(job_id, out, aborted),
                    lambda f, out=out: self.log.warn("Cannot clean {out}: {e}", out=out,
                                                     e=f.getErrorMessage()))
            else:
                self._interrupted(job_id, out, output.abort_unfinished(out, None, job_id))
        os.makedirs(jobs_dir, exist_ok=True)
        for name in os.listdir(jobs_dir):
            if name not in resumed:
                shutil.rmtree(os.path.join(jobs_dir, name), ignore_errors=True)
        # Bundles of those jobs, and uploads never submitted.
        kept = {job.bundle for job in self.jobs.values() if job.bundle}
        if os.path.isdir(self.bundles.root):
            for name in os.listdir(self.bundles.root):
                if name.split(".")[0] not in kept:  # NAME/, NAME.zip, NAME.UPLOAD.part
                    path = os.path.join(self.bundles.root, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
        self.admission.start(max([self.history.max_seq()] + [_seq(j) for j in self.jobs]))
        self._periodic_loop.start(max(0.05, self.expiry / 4), now=False)

    def _interrupted(self, job_id: str, out: str, aborted: bool) -> None:
        if aborted:
            self.log.warn("Job {job} was running when the jobtracker stopped: it failed, and "
                          "its output directory {out} is left empty", job=job_id, out=out)

    def stop(self) -> defer.Deferred[Any]:
        """Fail the running jobs and refuse the submissions in progress;
        fires once those have ended (their checks killed) and every ended
        job's output is final (an object store's calls, the history's
        writes): only then is the journal closed, its records deleted."""
        if self._periodic_loop.running:
            self._periodic_loop.stop()
        if self._plan_call is not None and self._plan_call.active():
            self._plan_call.cancel()
        if self._unclaimed_timer is not None and self._unclaimed_timer.active():
            self._unclaimed_timer.cancel()
        submissions = self.admission.stop()
        self._stopping = True  # the killed attempts' logs are not waited for
        # Nor their commits (a job's output was cleaned 10 minutes later):
        # the jobs that wait for some are left to the next start.
        for job_id in self._committing.waiting():
            self._leave_ending(self.jobs[job_id])
        self._committing.end_all()
        error = {"type": "JobTrackerStopped", "message": "the jobtracker stopped", "traceback": ""}
        for job in list(self.jobs.values()):
            if job.running:
                self._job_done(job, "failed", error)

        def close(_: Any) -> None:
            shutil.rmtree(self.admission.jobs_dir, ignore_errors=True)
            shutil.rmtree(self.bundles.root, ignore_errors=True)
            self.journal.close()

        ending = [submissions, *self._ending.values()]
        return defer.DeferredList(ending, consumeErrors=True).addCallback(close)

    def _resume_jobs(self) -> set[str]:
        """Take back the jobs the journal has as running (a crash, a
        SIGKILL): committed tasks stay committed, completed maps come back
        as their workers report them, the rest is scheduled again once the
        workers had ``resume_grace`` seconds to come back. A job that was
        ending (its output being finished or cleaned) ends again, as it was
        ending. The ids resumed."""
        resumed = set()
        now = self.now()
        for job_id, journaled in sorted(self.journal.running_jobs().items()):
            plan, ending = journaled.plan, journaled.ending
            job = job_from_plan(plan, journaled)
            if job is None:
                self.journal.job_ended(job_id)
                continue
            lost = ending is None and (not os.path.exists(job.source_path) or (
                job.bundle and not self.bundles.has(job.bundle)))
            taken = self.admission.claim_output(job_id, job.token, job.output)
            if taken is not None:
                why = f"{taken} while the jobtracker was down: it is left as it is"
                self.log.warn("Job {job} cannot resume: {why}", job=job_id, why=why)
                job.output_taken = True
                ending = {"state": "failed", "error": {
                    "type": "OutputTaken", "message": why, "traceback": ""}}
            elif lost and not storage.is_remote(job.output) and os.path.exists(
                    os.path.join(job.output, output.SUCCESS)):
                # It had succeeded, its end not journaled (a full disk): its
                # files went as it ended.
                self.log.info("Job {job} had succeeded (its output has its _SUCCESS)",
                              job=job_id)
                ending = {"state": "succeeded", "error": None}
            elif lost:
                # Failed as a job is, with its output emptied and a history:
                # it went without a word.
                why = ("its files (its module, its shipped code) are gone from the "
                       "jobtracker's work directory")
                self.log.warn("Job {job} cannot resume: {why}", job=job_id, why=why)
                ending = {"state": "failed", "error": {
                    "type": "JobFilesLost", "message": why, "traceback": ""}}
            generation = plan.get("generation", 0) + 1
            if ending is None:
                self.journal.job_started(job_id, {**plan, "generation": generation})
                self._workers_back_at = now + self.resume_grace
            if job.bundle and self.bundles.has(job.bundle):
                self.bundles.use(job.bundle, job_id)  # released as the job ends
            self.jobs[job_id] = job
            for aid, where in journaled.commits.items():
                self._committing.add(job_id, aid)
                self._await_claim(aid, where)
            max_attempts, speculative = plan["max_attempts"], plan["speculative"]
            self._max_attempts[job_id] = (max_attempts, speculative)
            actions: list[Action] = []
            for n, step in sorted(journaled.steps.items()):
                sched_id = job.sched_id(n)
                self._by_sched[sched_id] = job
                finished = n < job.step or ending is not None
                # The tasks whose results are durable; the maps of a step
                # whose reduces are all done too, for their counters (their
                # outputs are no longer needed).
                durable = [("reduce", step.reduces)] if step.num_reducers else []
                if finished or len(step.reduces) == step.num_reducers:
                    durable.append(("map", step.maps))
                actions += self.scheduler.resume(
                    sched_id, len(step.splits), step.num_reducers, now,
                    max_attempts=max_attempts, speculative=speculative,
                    done={(kind, i): c for kind, tasks in durable for i, c in tasks.items()},
                    finished=finished, hold_until=now + self.resume_grace,
                    attempt_offset=1000 * generation, kept=step.maps)
                for kind, tasks in durable:
                    for c in tasks.values():
                        self._keep_log(c.attempt_id, c.log)
                if not finished and len(step.reduces) < step.num_reducers:
                    self._resumable[sched_id] = dict(step.maps)
            resumed.add(job_id)
            if ending is not None:
                self.log.info("Job {job} was ending ({state}) when the jobtracker stopped: "
                              "its output is made final now", job=job_id, state=ending["state"])
                self._job_done(job, ending["state"], ending["error"])
                continue
            self.log.info("Job {job} resumed at step {n} of {count}: {maps} maps and "
                          "{reduces} reduces were done", job=job_id, n=job.step + 1,
                          count=len(job.steps), maps=len(journaled.steps[job.step].maps),
                          reduces=len(journaled.steps[job.step].reduces))
            if storage.is_remote(job.output):
                self._check_resumed_output(job)
            # A step whose tasks were all done ends now: the job goes on.
            self._execute(actions)
        return resumed

    def _check_resumed_output(self, job: JobRecord) -> None:
        """Read a resumed job's object-store mark (it has no lock to take
        again, as ``claim_output`` takes a local one's), in a thread: an
        output removed or replaced while the jobtracker was down fails the
        job at once, and is left as it is. (Every upload of a part reads
        the mark too: ``output.commit_part``.)"""
        def taken(f: Any) -> None:
            f.trap(output.OutputTaken)
            if job.running:
                why = f"{f.value} while the jobtracker was down: it is left as it is"
                self.log.warn("Job {job} cannot resume: {why}", job=job.id, why=why)
                job.output_taken = True
                self._job_done(job, "failed", {"type": "OutputTaken", "message": why,
                                               "traceback": ""})

        def unread(f: Any) -> None:  # the store unreachable: the uploads read it again
            self.log.warn("Cannot read the mark of {out} for the resumed job {job}: {e}",
                          out=job.output, job=job.id, e=f.getErrorMessage())

        self._in_thread(objectoutput.check_mark, job.output, job.storage_options,
                        job_mark(job.id, job.token)).addErrback(taken).addErrback(unread)

    def now(self) -> float:
        return self._clock.seconds()

    # --- workers -----------------------------------------------------------

    def register(self, worker: IWorker, reg: Registration) -> str:
        self._worker_seq += 1
        wid = f"w{self._worker_seq}"
        self.workers[wid] = WorkerConnection(wid, worker, reg.host, reg.port, reg.slots, reg.pid)
        self.log.info("Tasktracker {wid} joined: {host}:{port}, {slots} slots",
                      wid=wid, host=reg.host, port=reg.port, slots=reg.slots)
        # The map outputs it kept while it was away: those of a resumed job
        # that the journal has as committed count as done; it drops its
        # other jobs first (before any task of theirs is launched on it).
        taken = [h for h in reg.held if (c := self._resumable.get(h[0], {}).get(h[1]))
                 is not None and c.attempt_id == h[2]]
        for sched_id in sorted({h[0] for h in reg.held} - {h[0] for h in taken}):
            worker.destroy_job(sched_id)
        if self._unclaimed_commits:
            self._claim_commits(wid, reg)
        actions = self.scheduler.worker_joined(wid, reg.host, reg.port, reg.slots, self.now())
        self._last_registered = self.now()
        if self._unplanned and self._first_registered is None:
            self._first_registered = self._last_registered
        self._plan_soon()
        for sched_id, index, attempt_id in taken:
            committed = self._resumable[sched_id][index]
            actions += self.scheduler.map_output_held(wid, sched_id, index, committed,
                                                      self.now())
            self._keep_log(attempt_id, committed.log)
        if taken:
            self.log.info("Tasktracker {wid} kept {n} map outputs of resumed jobs", wid=wid,
                          n=len(taken))
        # Sent once the worker has its id (the answer to its registration
        # goes first): a map of a job it kept, launched before, ran and
        # reported while the worker did not know its jobtracker yet, and its
        # result was dropped, the attempt "running" for ever (a resume of
        # 5,000 kept maps took the registration 1-2 s).
        self._clock.callLater(0, self._execute, actions)
        return wid

    def drain(self, wid: str) -> dict[str, Any]:
        """Stop giving ``wid`` tasks and stop it once nothing needs it
        (``Scheduler.drain``); its view. ``wid`` may also be HOST:PORT."""
        wid = self._worker_named(wid)
        if not self.scheduler.workers[wid].draining:
            self.log.info("Draining tasktracker {wid}", wid=wid)
            self.workers[wid].worker.draining()
        self._execute(self.scheduler.drain(wid, self.now()))
        view = views.worker_view(self.scheduler.workers[wid], self.now())
        # The draining command warns when none takes tasks any more: the
        # running jobs then wait for a worker to register.
        view["others_taking_tasks"] = sum(1 for other, w in self.scheduler.workers.items()
                                          if other != wid and w.alive and not w.draining)
        return view

    def _worker_named(self, name: str) -> str:
        if name in self.workers:
            return name
        host, _, port = name.rpartition(":")
        conn = self.worker_at(host, int(port)) if port.isdigit() else None
        if conn is not None:
            return conn.wid
        raise NoSuchWorker(f"no live tasktracker {name!r} (a worker id such as w1, or "
                                f"the HOST:PORT of its shuffle server)")

    def worker_at(self, host: str, port: int) -> WorkerConnection | None:
        """The live worker whose shuffle server is at ``host:port``, if any."""
        return next((conn for conn in self.workers.values()
                     if (conn.host, conn.port) == (host, port)), None)

    def worker_disconnected(self, wid: str) -> None:
        self.pacing.forget(wid)
        if self.workers.pop(wid, None) is not None:
            self.log.info("Tasktracker {wid} disconnected", wid=wid)
            self._commits_lost(wid)
            self._execute(self.scheduler.worker_lost(wid, self.now()))

    def _check_live(self, wid: str | None) -> str:
        if wid is None or wid not in self.workers:
            raise UnknownWorker(f"unknown worker {wid}: register again")
        return wid

    def heartbeat(self, wid: str | None, beat: Heartbeat) -> float:
        """The answer: the interval, in seconds, the worker should heartbeat
        at from now on (at the least: ``heartbeats.Pacing``)."""
        wid = self._check_live(wid)
        actions = self.scheduler.heartbeat(wid, self.now(), beat.progress,
                                           beat.attempts, beat.launches)
        if beat.shuffle_memory is not None:
            self.scheduler.workers[wid].shuffle_memory = beat.shuffle_memory
        if beat.committing is not None and self._commit_workers:
            self._commits_not_made(wid, beat.committing)
        self._execute(actions)
        return self.pacing.tell(wid, len(self.workers))

    def _periodic(self) -> None:
        """Lost workers (missed heartbeats), stragglers (speculation), and
        bundles that lingered unused."""
        self.bundles.sweep()
        for wid in self.scheduler.expired_workers(self.now(), self.expiry,
                                                  self.pacing.longer_expiries):
            self.log.warn("Tasktracker {wid} missed heartbeats for {s:g}s: lost", wid=wid,
                          s=self.pacing.expiry_of(wid))
            self.pacing.forget(wid)
            conn = self.workers.pop(wid, None)
            self._commits_lost(wid)
            self._execute(self.scheduler.worker_lost(wid, self.now()))
            if conn is not None:
                # When it wakes up it must log in again as a new incarnation.
                conn.worker.disconnect()
        self._execute(self.scheduler.tick(self.now()))

    def attempt_done(self, wid: str | None, attempt_id: str, result: AttemptResult) -> None:
        self._check_live(wid)
        self._commit_came(attempt_id)
        self._keep_log(attempt_id, result.log)
        actions = self.scheduler.attempt_succeeded(attempt_id, self.now(), result)
        self._journal_commit(attempt_id, result)
        # Before the actions: the job's end forgets its attempts.
        self._attempt_metrics(attempt_id)
        self._execute(actions)

    def _journal_commit(self, attempt_id: str, result: AttemptResult) -> None:
        """Before the actions that follow it (the job's end deletes its records)."""
        a = self.scheduler.attempts.get(attempt_id)
        sjob = self.scheduler.jobs.get(a.job_id) if a is not None else None
        job = self._by_sched.get(a.job_id) if a is not None else None
        if a is None or sjob is None or job is None:
            return
        if sjob.tasks(a.kind)[a.index].committed == attempt_id:
            self.journal.task_committed(job.id, step_of(a.job_id), a.kind, a.index, Committed(
                attempt_id, result.counters, result.kinds, a.started, a.finished,
                self.task_logs.get(attempt_id) or ""))

    def attempt_failed(self, wid: str | None, attempt_id: str, error: TaskError) -> None:
        self._check_live(wid)
        self._commit_came(attempt_id)
        self._keep_log(attempt_id, error.log)
        self.log.info("Attempt {aid} failed: {msg}", aid=attempt_id, msg=error.message)
        actions = self.scheduler.attempt_failed(attempt_id, self.now(), error.describe())
        self._attempt_metrics(attempt_id)
        self._execute(actions)

    def killed_log(self, wid: str | None, attempt_id: str, log: str) -> None:
        """The log of an attempt we killed (a backup that lost, a killed
        job's...): its page linked to no log, and its prints were lost."""
        self._check_live(wid)
        a = self.scheduler.attempts.get(attempt_id)
        job = self._by_sched.get(a.job_id) if a is not None else None
        if a is None or job is None or a.wid != wid or a.state is not State.KILLED:
            return
        self._keep_log(attempt_id, log)
        self._kill_logs.came(attempt_id)

    def _killed_logs(self, job: JobRecord) -> defer.Deferred[None]:
        """Fires once the attempts killed as the job ended sent their logs
        (a hung task's prints are why one looks at a killed job's), or
        after KILLED_LOGS_WAIT: the history took the job's logs at once,
        and they came after."""
        attempts = self.scheduler.attempts
        waiting = None if self._stopping else self._kill_logs.wait(
            job.id, KILLED_LOGS_WAIT, lambda aid: not self.task_logs.has(aid)
            and aid in attempts and attempts[aid].wid in self.workers)  # not a lost worker's
        if waiting is None:
            self._kill_logs.forget(job.id)
            return defer.succeed(None)
        return waiting

    def _keep_log(self, attempt_id: str, log: str) -> None:
        # A report that comes after its job ended belongs to no job here.
        if attempt_id in self.scheduler.attempts:
            self.task_logs.put(attempt_id, log)

    def _attempt_metrics(self, attempt_id: str) -> None:
        a = self.scheduler.attempts.get(attempt_id)
        if a is not None and a.finished is not None and self.metrics is not None:
            self.metrics.attempt_ended(a.kind, a.state.value, a.finished - a.started)

    def _metrics_state(self) -> dict[str, Any]:
        """The gauges of ``metrics``, read at scrape time."""
        live = [w for w in self.scheduler.workers.values() if w.alive]
        # From the scheduler's counts: a scrape costs the workers and the
        # jobs, not their tasks (in a running job, a task not running nor
        # succeeded is pending).
        running = {kind: sum(w.used[kind] for w in self.scheduler.workers.values())
                   for kind in ("map", "reduce")}
        jobs = [j for j in self.scheduler.jobs.values() if j.state is State.RUNNING]
        pending = {kind: sum(len(j.tasks(kind)) - j.succeeded[kind] - len(j.running[kind])
                             for j in jobs) for kind in ("map", "reduce")}
        return {"workers": len(live), "slots": sum(w.slots for w in live),
                "running": running, "pending": pending,
                "jobs": sum(j.running for j in self.jobs.values())}

    def metrics_text(self) -> bytes:
        assert self.metrics is not None, "a status site needs the jobtracker's metrics"
        return self.metrics.expose()

    def fetch_failed(self, wid: str | None, attempt_id: str, map_index: int,
                     map_attempt_id: str | None = None) -> None:
        self._check_live(wid)
        self.log.info("Attempt {aid} cannot fetch the output of map {m}", aid=attempt_id,
                      m=map_index)
        self._execute(self.scheduler.fetch_failed(attempt_id, map_index, self.now(),
                                                  map_attempt_id))

    def may_commit(self, wid: str | None, attempt_id: str) -> bool:
        wid = self._check_live(wid)
        if self._workers_stopped:  # a question still on its way: nobody to commit
            return False
        allowed = self.scheduler.may_commit(attempt_id)
        a = self.scheduler.attempts.get(attempt_id)
        job = self._by_sched.get(a.job_id) if a is not None else None
        if allowed and job is not None:
            self._committing.add(job.id, attempt_id)
            conn = self.workers[wid]
            self._commit_workers[attempt_id] = (wid, (conn.host, conn.port))
            self.journal.commit_allowed(job.id, attempt_id, conn.host, conn.port)
        return allowed

    def commit_ended(self, wid: str | None, attempt_id: str) -> None:
        """An attempt let commit, killed meanwhile (its job ended), is done
        with its job's output: its upload landed and was withdrawn, or
        failed, or never began."""
        self._check_live(wid)
        self._commit_came(attempt_id)

    def workers_stopped(self) -> None:
        """Every worker has stopped, in this process (``run``'s, stopped
        before us): a commit to a local output is made in a worker's
        reactor turn, so what they were let commit there has landed or
        never will. A job's end need not wait for it: an interrupted ``run``
        left its output with ``_temporary`` and a part, for a next start its
        jobtracker never has. (An upload to an object store runs in a
        thread: still waited for.) A worker's question to commit still on
        its way here is refused."""
        self._workers_stopped = True
        for job in self.jobs.values():
            if not storage.is_remote(job.output):
                for attempt_id in self._committing.of_job(job.id):
                    self._commit_came(attempt_id)

    def _commit_came(self, attempt_id: str) -> None:
        self._commit_workers.pop(attempt_id, None)
        self._unclaimed_commits.pop(attempt_id, None)
        if self._committing.came(attempt_id):
            self.journal.commit_ended(attempt_id)

    def _commits_lost(self, wid: str) -> None:
        """A lost worker's uploads may still land: its commits are waited
        for until it registers again (on a new connection, a reset one's
        process) and says which go on, or for COMMITS_WAIT."""
        if self._stopping:  # the journal keeps them for the next start
            return
        for aid, (where, address) in list(self._commit_workers.items()):
            if where == wid:
                del self._commit_workers[aid]
                self._await_claim(aid, address)

    def _commits_not_made(self, wid: str, committing: Sequence[str]) -> None:
        """``wid`` no longer commits what it does not list: its word that
        the commit ended (a report, ``commit_ended``) was lost. A job whose
        reduce's result was dropped waited for it 10 minutes at its end."""
        making = set(committing)
        for aid, (where, _) in list(self._commit_workers.items()):
            if where == wid and aid not in making:
                self._commit_came(aid)

    def _await_claim(self, attempt_id: str, address: tuple[str, int]) -> None:
        """As long as a live worker's commit: a worker paused past its
        expiry and the resume grace (a VM's pause, a partition from the
        jobtracker alone) came back with its upload going on, which landed
        over the next job's part once the killed job was cleaned (a
        tester's)."""
        self._unclaimed_commits[attempt_id] = (address, self.now() + COMMITS_WAIT)
        if self._unclaimed_timer is None:
            self._unclaimed_timer = self._clock.callLater(COMMITS_WAIT, self._commits_unclaimed)

    def _claim_commits(self, wid: str, reg: Registration) -> None:
        """A worker back (after our restart, or its loss): of the commits
        awaited at its address, those it says it still makes are its own
        again; the others ended while it was away. A worker from before
        it said (``committing`` None) leaves them to COMMITS_WAIT."""
        if reg.committing is None:
            return
        address = (reg.host, reg.port)
        for aid, (where, _) in list(self._unclaimed_commits.items()):
            if where == address:
                del self._unclaimed_commits[aid]
                if aid in reg.committing:
                    self._commit_workers[aid] = (wid, address)
                else:
                    self._commit_came(aid)

    def _commits_unclaimed(self) -> None:
        """No worker came back in time for these commits: the job no
        longer waits for them, as for a live worker's after COMMITS_WAIT."""
        self._unclaimed_timer = None
        now = self.now()
        for aid, ((host, port), until) in list(self._unclaimed_commits.items()):
            if until <= now:
                self.log.warn("No tasktracker came back at {host}:{port} to say whether attempt "
                              "{aid} still commits its part: its job no longer waits for it",
                              host=host, port=port, aid=aid)
                self._commit_came(aid)
        if self._unclaimed_commits:
            first = min(until for _, until in self._unclaimed_commits.values())
            self._unclaimed_timer = self._clock.callLater(max(0.0, first - now),
                                                          self._commits_unclaimed)

    def _still_committing(self, job: JobRecord) -> Callable[[str], bool]:
        """The commits a job's end waits for: each, for a job that failed or
        was killed (a part landing after the cleaning would be in the next
        job's output); for one that succeeded, not a gone worker's (its
        part, landing late, is this job's own, as the one that replaced it:
        a dead worker held the _SUCCESS 10 minutes)."""
        if job.state != "succeeded":
            return lambda aid: True
        return lambda aid: aid not in self._unclaimed_commits

    def _commits_ended(self, job: JobRecord) -> defer.Deferred[None] | None:
        """Fires once the attempts of ``job`` let commit have ended their
        commits, or after COMMITS_WAIT; None if none has to."""
        waiting = self._committing.wait(job.id, COMMITS_WAIT, self._still_committing(job))
        if waiting is not None:
            self.log.info("Job {job} waits for its attempts to end their commits before it "
                          "{does} its output", job=job.id,
                          does="finishes" if job.state == "succeeded" else "cleans")
        return waiting

    def bundle_chunk(self, wid: str | None, sha256: str, offset: int) -> bytes:
        """A piece of a running job's bundle, for a worker fetching it."""
        self._check_live(wid)
        if not self.bundles.in_use(sha256):
            raise UnknownJob(f"no running job ships the bundle {sha256[:12]}")
        return self.bundles.read(sha256, offset, CHUNK_BYTES)

    # --- clients' uploads ------------------------------------------------------

    def has_bundle(self, sha256: str) -> bool:
        return self.bundles.has(sha256)

    def put_bundle(self, upload: str, sha256: str, size: int, offset: int,
                   data: bytes) -> bool:
        """One chunk of a client's upload; True once the bundle is whole."""
        if not 0 < size <= MAX_BUNDLE_BYTES or offset + len(data) > size:
            raise SubmissionError(f"a bundle has 1 to {MAX_BUNDLE_BYTES} bytes "
                                  f"(see docs/jobs.md)")
        final = offset + len(data) == size
        try:
            self.bundles.receive(sha256, offset, data, upload, final)
            return final
        except BundleError as e:
            raise SubmissionError(str(e)) from None

    # --- jobs ----------------------------------------------------------------

    async def submit(self, spec: Any, owner: str = "", may_replace: MayReplace = None,
                     submitter: Submitter | None = None) -> str:
        """Check and start a job of ``owner`` (who may replace the outputs
        of the owners ``may_replace`` says), unless its ``submitter`` goes
        away meanwhile; raises SubmissionError with the reason."""
        slots = self._slots()
        try:
            admitted = await self.admission.admit(
                spec, slots, lambda: [j for j in self.jobs.values() if j.running or j.finishing],
                owner, may_replace, submitter)
        except SubmissionWithdrawn:
            self.log.info("A submission{by} was withdrawn: its client went away before "
                          "it was admitted", by=f" by {owner}" if owner else "")
            raise
        job, sub = admitted.job, admitted.submission
        job.owner = owner
        self.jobs[job.id] = job
        self._max_attempts[job.id] = (sub.max_attempts, sub.speculative)
        # With its first step, in one transaction; a job planned once the
        # workers come is journaled as it is meanwhile: a crash resumes it
        # all the same (as it is).
        self.journal.job_started(job.id, plan_of(job, sub.max_attempts, sub.speculative),
                                 (job.splits, job.num_reducers))
        by = f" by {owner}" if owner else ""
        if not slots or self._unplanned:
            # Cut for one slot, it would run as one reduce (and a map per
            # 128 MB) on the cluster that comes: it is cut again for the
            # slots of the workers that register. A job submitted while
            # others wait goes after them.
            self._unplanned[job.id] = (admitted.files, sub.split_size)
            self.log.info("Job {job} submitted{by}: {file}; {why}: its tasks are planned once "
                          "they are", job=job.id, by=by, file=job.filename,
                          why="no tasktracker is registered" if not slots else
                          "jobs before it wait for tasktrackers")
            self._plan_soon()
            return job.id
        self._log_plan(job, f"submitted{by}")
        self._start_step(job, journaled=True)
        return job.id

    def _slots(self) -> int:
        return sum(w.slots for w in self.workers.values())

    def _log_plan(self, job: JobRecord, what: str) -> None:
        self.log.info("Job {job} {what}: {file}, {steps}{maps} maps, {reduces} reduces",
                      job=job.id, what=what, file=job.filename, maps=len(job.splits),
                      reduces=job.num_reducers,
                      steps=f"{len(job.steps)} steps, first: " if len(job.steps) > 1 else "")

    def _plan_soon(self) -> None:
        """Plan the jobs waiting for workers once the workers registering
        have settled: PLAN_SETTLE seconds without another (tasktrackers
        started together register within a second), PLAN_MAX_WAIT after
        the first at the latest (workers that keep registering do not hold
        them for ever), and not before those of a restart are back."""
        if not self._unplanned or not self._slots() or self._planning:
            return
        first = self._first_registered or self._last_registered
        at = max(min(self._last_registered + PLAN_SETTLE, first + PLAN_MAX_WAIT),
                 self._workers_back_at)
        if self._plan_call is not None and self._plan_call.active():
            self._plan_call.cancel()
        self._plan_call = self._clock.callLater(max(0.0, at - self.now()), self._plan)

    def _plan(self) -> None:
        self._plan_call = None
        defer.Deferred.fromCoroutine(self._plan_waiting()).addErrback(
            lambda f: self.log.failure("Cannot plan the jobs waiting for workers", f))

    async def _plan_waiting(self) -> None:
        """Start the waiting jobs in the order they came, each planned for
        the slots registered; those submitted meanwhile join the queue."""
        self._planning = True
        try:
            while self._unplanned and (slots := self._slots()):
                job_id, (files, split_size) = next(iter(self._unplanned.items()))
                job = self.jobs[job_id]  # a job leaves _unplanned as it ends
                try:
                    await self._plan_one(job, files, split_size, slots)
                except Exception as e:  # a bug: that job fails, not the ones after it
                    self.log.failure("Cannot plan {job}", job=job_id)
                    if job.running:
                        self._job_done(job, "failed", {
                            "type": type(e).__name__, "traceback": "",
                            "message": f"the jobtracker could not plan the job's tasks: {e}"})
                self._unplanned.pop(job_id, None)
        finally:
            self._planning = False
        if not self._unplanned:
            self._first_registered = None
        else:  # the workers left meanwhile: the next registration plans them
            self._plan_soon()

    async def _plan_one(self, job: JobRecord, files: list[InputFile], split_size: int | None,
                        slots: int) -> None:
        what = f"planned for the {slots} slots registered"
        try:
            # In a thread, as at admission: 100,000 splits take 0.2 s.
            splits, reduces = await self._in_thread(
                plan_tasks, files, split_size, job.reducers_option, job.steps, slots,
                self.admission.max_tasks)
        except SubmissionError as e:
            # Admitted as it was cut for one slot: it runs so, rather than
            # fail for the workers that came.
            splits, reduces = job.splits, job.num_reducers
            what = f"keeps its tasks for one slot (for {slots}: {e})"
        if not job.running:  # killed, or the jobtracker stopped, meanwhile
            return
        job.splits, job.num_reducers = splits, reduces
        self._log_plan(job, what)
        self._start_step(job)

    def _start_step(self, job: JobRecord, journaled: bool = False) -> None:
        sched_id = job.sched_id(job.step)
        self._by_sched[sched_id] = job
        if not journaled:
            self.journal.step_started(job.id, job.step, job.splits, job.num_reducers)
        max_attempts, speculative = self._max_attempts[job.id]
        self._execute(self.scheduler.submit(sched_id, len(job.splits), job.num_reducers,
                                            self.now(), max_attempts, speculative))

    async def _next_step(self, job: JobRecord) -> None:
        """The step before succeeded: plan the next from its part files."""
        wait = self._workers_back_at - self.now()
        if wait > 0:  # just restarted: its reducers count the workers coming back
            await task.deferLater(self._clock, wait, lambda: None)
        step = job.step + 1
        plan = job.steps[step]
        try:
            files = await self._in_thread(stepdata.step_inputs, job.output, step,
                                          len(job.steps), job.storage_options)
            splits = compute_splits(files, MAX_DEFAULT_SPLIT_SIZE, split_by="file")
        except (OSError, ValueError) as e:
            if job.running:
                self._job_done(job, "failed", {
                    "type": "StepError", "traceback": "",
                    "message": f"cannot read the output of step {step} for step {step + 1}: {e}"})
            return
        if not job.running:  # killed, or the jobtracker stopped, meanwhile
            return
        slots = self._slots()
        job.step, job.splits = step, splits
        job.num_reducers = step_reducers(plan, job.reducers_option, slots)
        self.log.info("Job {job} step {n} of {count}: {maps} maps, {reduces} reduces",
                      job=job.id, n=step + 1, count=len(job.steps), maps=len(splits),
                      reduces=job.num_reducers)
        self._start_step(job)

    def wait(self, job_id: str) -> defer.Deferred[dict[str, Any]]:
        old = self._old_result(job_id)
        if old is not None:
            return defer.succeed(old)
        self._job(job_id)  # running, or ending: ended ones are the history's
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiters.setdefault(job_id, []).append(d)
        return d

    def kill(self, job_id: str) -> dict[str, Any]:
        old = self._old_result(job_id)
        if old is not None:
            return old
        job = self._job(job_id)
        sjob = self.scheduler.jobs.get(job.sched_id(job.step))
        if sjob is not None and sjob.state is State.RUNNING:
            self._execute(self.scheduler.kill_job(sjob.id, self.now()))
        elif job.running:  # between two steps
            self._job_done(job, "killed", {"type": "JobKilled", "traceback": "",
                                           "message": f"job {job_id} was killed"})
        return self.status(job_id)

    def owner(self, job_id: str) -> str:
        """Whose job it is (raises UnknownJob)."""
        old = self._old_result(job_id)
        if old is not None:
            return str(old.get("owner", ""))
        return self._job(job_id).owner

    def status(self, job_id: str) -> dict[str, Any]:
        old = self._old_result(job_id)
        if old is not None:
            return old
        job = self._job(job_id)
        result = job.result(self.now())
        result["workers"] = len(self.workers)
        sjob = self.scheduler.jobs.get(job.sched_id(job.step))
        if sjob is not None:
            for key, kind in (("maps", "map"), ("reduces", "reduce")):
                result[key] = views.task_progress(sjob, kind)
            result["failed_attempts"] = sum(sjob.failed_attempts.values())
        return result

    def list_jobs(self) -> list[dict[str, Any]]:
        old = [self._old_result(j) for j in self.history.summaries if j not in self.jobs]
        return old + [self.status(j) for j in self.jobs]

    def _old_result(self, job_id: str) -> dict[str, Any] | None:
        """The result of a job that has ended (it is in the history)."""
        if not isinstance(job_id, str) or job_id in self.jobs:
            return None
        summary = self.history.summary(job_id)
        if summary is None:
            return None
        return {**views.result_of(summary), "workers": len(self.workers)}

    # --- views: the status site, ``logs`` and the job history ------------------

    def workers_view(self) -> list[dict[str, Any]]:
        return views.workers_view(self.scheduler, self.now())

    def jobs_view(self) -> list[dict[str, Any]]:
        """Every known job, oldest first, finished ones from the history too."""
        now = self.now()
        old = [s for j, s in self.history.summaries.items() if j not in self.jobs]
        live = [views.job_summary(j, self._step_jobs(j), now) for j in self.jobs.values()]
        return sorted(old + live, key=lambda s: s["submitted"])

    async def job_view(self, job_id: str) -> dict[str, Any]:
        """One job with its tasks and attempts (``views.job_detail``); an
        ended job's from the history on disk."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is not None:
            return self._live_detail(job)
        summary = self.history.summary(job_id)
        if summary is None:
            raise UnknownJob(f"no job {job_id!r}")
        detail = await self.history.detail(job_id)
        # Beyond --history-retention only its summary is kept: no tasks.
        return detail if detail is not None else {**summary, "tasks": []}

    async def job_json(self, job_id: str) -> bytes:
        """``job_view`` as JSON; an ended job's stored detail as it is on
        disk, neither parsed nor encoded again (for a 50,000-map job, 35 MB
        and 0.8 s of the reactor, the GIL held)."""
        if isinstance(job_id, str) and job_id not in self.jobs:
            stored = await self.history.detail_json(job_id)
            if stored is not None:
                return stored
        return json.dumps(await self.job_view(job_id), indent=1).encode()

    async def job_page_view(self, job_id: str) -> dict[str, Any]:
        """What the job's status page shows (``views.page_view``); an ended
        job's as the history stored it, without reading its detail."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is not None:
            return views.job_page_view(job, self._step_jobs(job), self.scheduler, self.now(),
                                       self.task_logs.has)
        summary = self.history.summary(job_id)
        if summary is None:
            raise UnknownJob(f"no job {job_id!r}")
        view = await self.history.page_view(job_id)
        return view if view is not None else views.page_view({**summary, "tasks": []})

    def _ended_detail(self, job: JobRecord) -> dict[str, Any]:
        """What the history keeps of an ended job: its detail, as it ended
        (it is still told as finishing until the history has it)."""
        detail = self._live_detail(job)
        detail["state"] = job.state
        detail.pop("finishing", None)
        return detail

    def _live_detail(self, job: JobRecord) -> dict[str, Any]:
        return views.job_detail(job, self._step_jobs(job), self.scheduler, self.now(),
                                self.task_logs.has)

    def _step_jobs(self, job: JobRecord) -> list[sched.Job]:
        """The scheduler's jobs of the steps started so far, in order."""
        found = (self.scheduler.jobs.get(s) for s in job.started_steps())
        return [sjob for sjob in found if sjob is not None]

    async def _job_logs(self, job_id: str) -> dict[str, str]:
        if isinstance(job_id, str) and job_id in self.jobs:
            return self.task_logs.for_job(job_id)
        return await self.history.read_logs(job_id)

    async def attempt_log(self, job_id: str, attempt_id: str) -> str | None:
        """The log tail of one attempt (None when it printed nothing); of a
        running one, what it printed so far."""
        logs = await self._job_logs(job_id)
        if attempt_id in logs:  # no need to read an ended job's whole detail
            return logs[attempt_id]
        found = [a for a in views.find_attempts(await self.job_view(job_id), None)
                 if a["id"] == attempt_id]
        if not found:
            raise UnknownJob(f"no attempt {attempt_id!r} in job {job_id!r}")
        return (await self.running_logs.ask(found, self.workers))[0].get(attempt_id)

    async def logs(self, job_id: str, which: str | None = None) -> list[dict[str, Any]]:
        """The logs of a job's attempts; ``which`` picks a task or an
        attempt (see ``views.find_attempts``); of the running ones, what
        they printed so far."""
        # The logs first: if the history drops the job between the two
        # reads, no attempt is listed without its log.
        logs = await self._job_logs(job_id)
        attempts = views.find_attempts(await self.job_view(job_id), which)
        if which and not attempts:
            raise UnknownJob(f"no task or attempt {which!r} in job {job_id!r}")
        running, notes = await self.running_logs.ask(attempts, self.workers)
        return logs_reply(attempts, {**running, **logs}, notes)

    def _job(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def _job_done(self, job: JobRecord, state: str, error: dict[str, str] | None) -> None:
        # Until its output is final: should the jobtracker die meanwhile,
        # its next start finishes (or cleans) it again, never resumes it.
        self.journal.job_ending(job.id, state, error)
        self._unplanned.pop(job.id, None)
        self._ending[job.id] = defer.Deferred()
        # Its output stays its own (no other job takes it) until it is final
        # and the history has it (``_ended``).
        job.finishing = True
        for sched_id in job.started_steps():
            self._resumable.pop(sched_id, None)
        job.state = state
        job.error = error
        job.finished = self.now()
        sjobs = self._step_jobs(job)
        records: dict[int, int] = {}
        if sjobs:
            job.counters = views.live_counters(sjobs)
            records = views.part_records(sjobs[-1])
        for sjob in sjobs:
            if sjob.state is State.RUNNING:  # the jobtracker stops: end its tasks too
                self._execute(self.scheduler.kill_job(sjob.id, self.now()))
        if job.output_taken:  # another job's now: left as it is
            self._output_ended(job, None)
            return
        mark = job_mark(job.id, job.token)
        if state == "succeeded":
            end = functools.partial(output.finish_output, job.output, job.storage_options,
                                    job.id, records, mark)
        else:
            end = functools.partial(output.abort_output, job.output, job.storage_options, mark)
        # A commit under way would land after the cleaning, or over the part
        # of the attempt that committed after it (a lost worker's, a resumed
        # job's of before the restart) once the output is final.
        if self._stopping and self._committing.awaits(job.id, self._still_committing(job)):
            self._leave_ending(job)
            return
        waiting = self._commits_ended(job)

        def finish(_: object = None) -> None:
            if job.id in self._left_ending:  # the jobtracker stopped as it waited
                return
            if not storage.is_remote(job.output):
                self._output_ended(job, _outcome(end))
                return
            # An object store's calls take time: in a thread, and the job
            # ends for its waiters once its output is final.
            self._in_thread(_outcome, end).addCallback(lambda e: self._output_ended(job, e))

        if waiting is None:
            finish()
        else:
            waiting.addCallback(finish)

    def _leave_ending(self, job: JobRecord) -> None:
        """The jobtracker stops while attempts it let commit may still write
        to the job's output: cleaning it now would not keep their parts from
        landing there after, in another job's output. The journal keeps the
        job as ending, and those commits: the next start waits for them
        (their workers say, as they register again), then makes the output
        final."""
        self.log.warn("Job {job} is {state} as the jobtracker stops, while attempts may still "
                      "commit parts to {out}: the jobtracker's next start makes the output "
                      "final once they ended", job=job.id, state=job.state, out=job.output)
        self._left_ending.add(job.id)
        self.admission.release_output(job.id)  # its lock: this process ends
        self._ending.pop(job.id).callback(None)

    def _in_thread(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        reactor: Any = self._reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    def _output_ended(self, job: JobRecord, error: Exception | None) -> None:
        if error is not None:
            self.log.error("Cannot finish the output of {job}: {e}", job=job.id, e=error)
            if job.state == "succeeded":
                job.state = "failed"
                job.error = {"type": "OutputError", "message": str(error), "traceback": ""}
        shutil.rmtree(os.path.dirname(job.source_path), ignore_errors=True)
        self.bundles.release(job.id)
        self.log.info("Job {job} {state} in {secs:.3f}s", job=job.id, state=job.state,
                      secs=job.finished - job.submitted)
        self._killed_logs(job).addCallback(lambda _: self.history.record(
            self._ended_detail(job), self.task_logs.for_job(job.id))).addBoth(
            lambda _: self._ended(job))

    def _ended(self, job: JobRecord) -> None:
        job.finishing = False
        # Its output is final and the history has it: no restart touches it
        # again, and from now on another job may replace it.
        self.journal.job_ended(job.id)
        self.admission.release_output(job.id)
        if self.metrics is not None:
            self.metrics.job_ended(job.state,
                                   job.counters.get(FRAMEWORK, {}).get("shuffle bytes", 0))
        # What ``status`` and a later ``wait`` give too.
        result = self.status(job.id)
        self._forget(job)
        for d in self._waiters.pop(job.id, []):
            d.callback(result)
        self._ending.pop(job.id).callback(None)

    def _forget(self, job: JobRecord) -> None:
        """An ended job is the history's: its tasks, attempts and splits
        (a few KB per task) leave memory now, not 100 jobs later."""
        del self.jobs[job.id]
        self._max_attempts.pop(job.id, None)
        self._committing.forget(job.id)
        live = set(self._committing.attempts())  # the wait may have forgotten some
        for places in (self._commit_workers, self._unclaimed_commits):
            for aid in [aid for aid in places if aid not in live]:
                del places[aid]
        for sched_id in job.started_steps():
            self._by_sched.pop(sched_id, None)
            if sched_id in self.scheduler.jobs:
                self.scheduler.forget_job(sched_id)
        self.task_logs.drop_job(job.id)

    # --- carrying out the scheduler's decisions --------------------------------

    def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, sched.JobDone):
                job = self._by_sched.get(action.job_id)
                if job is None or not job.running:
                    continue
                if action.state is State.SUCCEEDED and job.step + 1 < len(job.steps):
                    self._spawn(self._next_step(job))
                else:
                    if (action.error or {}).get("type") == OUTPUT_TAKEN:
                        job.output_taken = True  # a task found another's mark: left as it is
                    self._job_done(job, action.state.value, action.error)
                continue
            if isinstance(action, sched.AnnounceMapOutputs):
                self._announce(action)
                continue
            if isinstance(action, sched.ResultLost):
                self.log.warn("Attempt {aid} ended on tasktracker {wid} without a result we "
                              "received: counted as failed", aid=action.attempt_id,
                              wid=action.wid)
                continue
            if isinstance(action, sched.OutputKept):
                self.log.warn("Map {index} of {job} failed {n} times to run again off the "
                              "draining tasktracker {wid}: its output stays there, and the "
                              "tasktracker stops once the job no longer needs it",
                              index=action.index, job=action.job_id, n=action.failures,
                              wid=action.wid)
                continue
            conn = self.workers.get(action.wid)
            if conn is None:
                continue
            if isinstance(action, sched.StopWorker):
                self.log.info("Tasktracker {wid} is drained: stopping it", wid=action.wid)
                conn.worker.stop()
                continue
            worker = conn.worker
            # DestroyJob comes after the job's end (JobDone), which forgot it.
            if isinstance(action, sched.KillAttempt):
                worker.kill_attempt(action.job_id, action.attempt_id)
                killed = self._by_sched.get(action.job_id)
                if killed is not None:
                    self._kill_logs.add(killed.id, action.attempt_id)
                continue
            if isinstance(action, sched.DestroyJob):
                worker.destroy_job(action.job_id)
                continue
            job = self._by_sched[action.job_id]
            if isinstance(action, sched.InitJob):
                with open(job.source_path, encoding="utf-8") as f:
                    worker.init_job(job.init(f.read()))
            elif isinstance(action, sched.LaunchMap):
                self._launch(conn, action.attempt_id, worker.launch_map, action.job_id,
                             action.attempt_id, job.splits[action.index])
            elif isinstance(action, sched.LaunchReduce):
                self._launch(conn, action.attempt_id, worker.launch_reduce, action.job_id,
                             action.attempt_id, action.partition, action.map_outputs)

    def _launch(self, conn: WorkerConnection, attempt_id: str, send: Callable[..., None],
                *args: Any) -> None:
        """Send a task; one that cannot be sent fails its attempt. It was
        neither launched nor failed, and its job waited for it for ever (a
        split whose path PB could not carry). One sent is numbered, for
        the heartbeats to tell when its worker got it."""
        try:
            send(*args)
            conn.launches += 1
            self.scheduler.sent(attempt_id, conn.launches)
        except Exception as e:
            self.log.failure("Cannot send attempt {aid} to its tasktracker", aid=attempt_id)
            error = {"type": "LaunchFailed", "traceback": "",
                     "message": f"the jobtracker could not send the task to its tasktracker "
                                f"({type(e).__name__}: {e})"}
            # Once the actions being carried out are: failing the job now
            # would forget it under the launches that follow this one.
            self._clock.callLater(0, lambda: self._execute(
                self.scheduler.attempt_failed(attempt_id, self.now(), error)))

    def _announce(self, action: sched.AnnounceMapOutputs) -> None:
        """New map outputs to the workers running the job's reduces, gathered
        for a while and sent together: a job of thousands of tiny maps would
        otherwise cost a call per map and per worker, as would any job on a
        large cluster. The wait grows with the workers
        (``heartbeats.announce_wait``); the output of the job's last map
        goes at once, as the reduces then wait for nothing else."""
        pending = self._announcing.setdefault(action.job_id, [])
        pending.extend(action.map_outputs)
        sjob = self.scheduler.jobs.get(action.job_id)
        if sjob is not None and sjob.all_succeeded("map"):
            self._flush_announcements(action.job_id)
        elif len(pending) == len(action.map_outputs):
            self._announce_timers[action.job_id] = self._clock.callLater(
                announce_wait(len(action.wids), self.pacing.per_second),
                self._flush_announcements, action.job_id)

    def _flush_announcements(self, job_id: str) -> None:
        timer = self._announce_timers.pop(job_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        locations = tuple(self._announcing.pop(job_id, ()))
        sjob = self.scheduler.jobs.get(job_id)
        if locations and sjob is not None and sjob.state is State.RUNNING:
            # To the workers running its reduces now: a newer one got them at launch.
            self._tell_locations(job_id, sjob.reduce_wids(), locations)

    def _tell_locations(self, job_id: str, wids: Sequence[str],
                        locations: Sequence[Any]) -> None:
        for wid in wids:
            conn = self.workers.get(wid)
            if conn is not None:
                conn.worker.map_outputs(job_id, locations)

    def _spawn(self, coro: Any) -> None:
        d = defer.Deferred.fromCoroutine(coro)
        d.addErrback(lambda f: self.log.failure("Starting the next step failed", f))


def _outcome(f: Any) -> Exception | None:
    """Run ``f``; the error that ended it (a store's or the disk's), if any."""
    try:
        f()
    except Exception as e:  # a store's client has errors of its own (botocore's)
        return e
    return None


def _seq(job_id: str) -> int:
    """The sequence number of a job id (``job_STAMP_0042``: 42)."""
    tail = job_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0
