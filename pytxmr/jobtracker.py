"""The jobtracker: the master daemon (``python -m pytxmr.jobtracker``).

``JobTracker`` owns the jobs and turns what tasktrackers and clients say
into scheduler events, and the scheduler's actions into remote calls.
The PB adapter (the realm and its two avatars) only validates, delegates
and translates; ``JobTrackerService`` wires the lifecycle. User code never
runs here: a submitted module is checked in a child process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from twisted.application import service
from twisted.cred import portal
from twisted.internet import defer, endpoints, task, threads
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.spread import banana, pb
from zope.interface import implementer

from . import output, scheduler as sched, views, wire
from .auth import AnonymousRefused, SecretChecker
from .child import TaskChild, Zygote
from .daemon import add_logging_options, run_daemon, write_ready_file
from .history import DEFAULT_RETENTION as DEFAULT_HISTORY_RETENTION, JobHistory
from .records import COMPRESSION_CODECS
from .scheduler import Action, MapLocation, Scheduler, State
from .secret import load_secret
from .splits import Split, compute_splits, default_split_size, expand_inputs
from .tasklog import LogKeeper, logs_reply
from .wire import (
    DEFAULT_PORT,
    DEFAULT_WEB_PORT,
    PROTOCOL_VERSION,
    ROLE_TASKTRACKER,
    ProtocolMismatch,
    SubmissionError,
    UnknownJob,
    UnknownWorker,
)

if TYPE_CHECKING:
    from .web import StatusServer

#: Seconds a PB peer has to log in before its connection is dropped.
LOGIN_TIMEOUT = 30.0
DEFAULT_EXPIRY = 10.0
DEFAULT_CHECK_TIMEOUT = 30.0
#: Errors of the submission check whose message says it all (file and line).
_SELF_EXPLAINED = frozenset({"SyntaxError", "IndentationError", "TabError",
                             "JobDefinitionError"})
#: In a running job's work dir: the path of its output directory.
OUTPUT_MARKER = "output"
#: Finished jobs kept in memory for ``status``/``wait`` after they end.
FINISHED_JOBS_KEPT = 100


@dataclass
class JobRecord:
    """What the jobtracker knows of a job beyond the scheduler's view."""

    id: str
    filename: str
    source_path: str
    token: bytes
    output: str
    splits: list[Split]
    num_reducers: int
    map_name: str
    reduce_name: str
    buffer_records: int | None
    submitted: float
    state: str = "running"
    error: dict[str, str] | None = None
    finished: float | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    waiters: list[defer.Deferred[dict[str, Any]]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    compress: str | None = None


@dataclass
class WorkerConnection:
    wid: str
    mind: pb.RemoteReference
    host: str
    port: int
    slots: int


def _location(loc: MapLocation) -> dict[str, Any]:
    return {"map": loc.index, "wid": loc.wid, "host": loc.host, "port": loc.port,
            "kinds": list(loc.kinds), "attempt": loc.attempt_id}


class JobTracker:
    """Jobs, workers and the scheduler; everything a remote call can ask."""

    log = Logger()

    def __init__(self, reactor: Any, workdir: str, *, expiry: float = DEFAULT_EXPIRY,
                 check_timeout: float = DEFAULT_CHECK_TIMEOUT,
                 history_retention: int = DEFAULT_HISTORY_RETENTION,
                 checkers: Zygote | None = None) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.workdir = workdir
        self.expiry = expiry
        self.check_timeout = check_timeout
        self.scheduler = Scheduler()
        self.workers: dict[str, WorkerConnection] = {}
        self.jobs: dict[str, JobRecord] = {}
        self._worker_seq = 0
        self._job_seq = 0
        self._expiry_loop: task.LoopingCall | None = None
        self._stopping = False
        #: Submissions in progress (each fires when it ends) and their checks.
        self._submissions: set[defer.Deferred[None]] = set()
        self._checks: set[TaskChild] = set()
        self.history = JobHistory(os.path.join(workdir, "history"), history_retention)
        self.task_logs = LogKeeper()
        #: Ours to start and stop unless given (``run`` shares one by all).
        self._own_checkers = checkers is None
        self._checkers = checkers or Zygote(reactor)

    # --- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        jobs_dir = os.path.join(self.workdir, "jobs")
        # Leftovers of a crashed run are of no use: its jobs are gone
        # (resuming them is a later step), failed like any other job.
        self._abort_interrupted_jobs(jobs_dir)
        shutil.rmtree(jobs_dir, ignore_errors=True)
        os.makedirs(jobs_dir, exist_ok=True)
        # Finished jobs live beside jobs/ (wiped above) and outlive restarts.
        self.history.load()
        self._job_seq = max(self._job_seq, self.history.max_seq())
        self._expiry_loop = task.LoopingCall(self._periodic)
        self._expiry_loop.clock = self._clock
        self._expiry_loop.start(max(0.05, self.expiry / 4), now=False)
        if self._own_checkers:
            self._checkers.start()

    def _abort_interrupted_jobs(self, jobs_dir: str) -> None:
        """Clean the output directories of the jobs a crash interrupted,
        as a failed job's: no part file that looks like a result."""
        try:
            job_ids = sorted(os.listdir(jobs_dir))
        except OSError:
            return
        for job_id in job_ids:
            try:
                with open(os.path.join(jobs_dir, job_id, OUTPUT_MARKER), encoding="utf-8") as f:
                    out = f.read()
            except OSError:
                continue  # refused or interrupted before its output was prepared
            if os.path.exists(os.path.join(out, output.SUCCESS)):
                continue
            output.abort_output(out)
            self.log.warn("Job {job} was running when the jobtracker stopped: it failed, and "
                          "its output directory {out} is left empty", job=job_id, out=out)

    def stop(self) -> defer.Deferred[None]:
        """Fail the running jobs and refuse the submissions in progress;
        fires once those have ended (their checks killed) and, with a
        zygote of its own, its children too."""
        self._stopping = True
        if self._expiry_loop is not None and self._expiry_loop.running:
            self._expiry_loop.stop()
        for child in list(self._checks):
            child.kill("the jobtracker is stopping")
        checkers = self._checkers.stop() if self._own_checkers else defer.succeed(None)
        error = {"type": "JobTrackerStopped", "message": "the jobtracker stopped", "traceback": ""}
        for job in list(self.jobs.values()):
            if job.state == "running":
                self._job_done(job, "failed", error)
        shutil.rmtree(os.path.join(self.workdir, "jobs"), ignore_errors=True)
        # Submissions in progress end refused (see submit); waiting for them
        # keeps the reactor up until each has removed what it had made.
        ended = defer.gatherResults([checkers, *self._submissions])
        return ended.addCallback(lambda _: None)

    def clock(self) -> IReactorTime:
        return self._clock

    def _now(self) -> float:
        return self._clock.seconds()

    # --- workers -----------------------------------------------------------

    def register(self, mind: pb.RemoteReference, info: dict[str, Any]) -> str:
        if info.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"tasktracker speaks protocol {info.get('protocol')!r}, "
                f"this jobtracker {PROTOCOL_VERSION}")
        host, port, slots = info.get("host"), info.get("port"), info.get("slots")
        if not (isinstance(host, str) and isinstance(port, int) and isinstance(slots, int)
                and slots >= 1):
            raise pb.Error("register needs host (str), port (int) and slots (int >= 1)")
        self._worker_seq += 1
        wid = f"w{self._worker_seq}"
        self.workers[wid] = WorkerConnection(wid, mind, host, port, slots)
        self.log.info("Tasktracker {wid} joined: {host}:{port}, {slots} slots",
                      wid=wid, host=host, port=port, slots=slots)
        self._execute(self.scheduler.worker_joined(wid, host, port, slots, self._now()))
        return wid

    def worker_disconnected(self, wid: str) -> None:
        if self.workers.pop(wid, None) is not None:
            self.log.info("Tasktracker {wid} disconnected", wid=wid)
            self._execute(self.scheduler.worker_lost(wid, self._now()))

    def _check_live(self, wid: str | None) -> str:
        if wid is None or wid not in self.workers:
            raise UnknownWorker(f"unknown worker {wid}: register again")
        return wid

    def heartbeat(self, wid: str | None, status: Any = None) -> None:
        wid = self._check_live(wid)
        self.scheduler.heartbeat(wid, self._now())
        memory = status.get("shuffle_memory") if isinstance(status, dict) else None
        if isinstance(memory, dict):
            used, budget = memory.get("used"), memory.get("budget")
            if type(used) is int and type(budget) is int and 0 <= used and 0 <= budget:
                self.scheduler.workers[wid].shuffle_memory = (used, budget)

    def _periodic(self) -> None:
        """Lost workers (missed heartbeats) and stragglers (speculation)."""
        for wid in self.scheduler.expired_workers(self._now(), self.expiry):
            self.log.warn("Tasktracker {wid} missed heartbeats for {s:g}s: lost", wid=wid,
                          s=self.expiry)
            conn = self.workers.pop(wid, None)
            self._execute(self.scheduler.worker_lost(wid, self._now()))
            if conn is not None:
                # When it wakes up it must log in again as a new incarnation.
                # Abort, not lose: a stopped peer reads nothing, so a
                # graceful close could wait on our unsent bytes forever.
                broker = conn.mind.broker
                if broker.transport is not None:
                    broker.transport.abortConnection()
        self._execute(self.scheduler.tick(self._now()))

    def attempt_done(self, wid: str | None, attempt_id: str, result: dict[str, Any]) -> None:
        self._check_live(wid)
        self.task_logs.put(attempt_id, result.get("log"))
        self._execute(self.scheduler.attempt_succeeded(attempt_id, self._now(), result))

    def attempt_failed(self, wid: str | None, attempt_id: str, error: dict[str, Any]) -> None:
        self._check_live(wid)
        self.task_logs.put(attempt_id, error.get("log"))
        error = {k: str(error.get(k, "")) for k in ("type", "message", "traceback")}
        self.log.info("Attempt {aid} failed: {msg}", aid=attempt_id, msg=error["message"])
        self._execute(self.scheduler.attempt_failed(attempt_id, self._now(), error))

    def fetch_failed(self, wid: str | None, attempt_id: str, map_index: int,
                     map_attempt_id: str | None = None) -> None:
        self._check_live(wid)
        self.log.info("Attempt {aid} cannot fetch the output of map {m}", aid=attempt_id,
                      m=map_index)
        self._execute(self.scheduler.fetch_failed(attempt_id, map_index, self._now(),
                                                  map_attempt_id))

    def may_commit(self, wid: str | None, attempt_id: str) -> bool:
        self._check_live(wid)
        return self.scheduler.may_commit(attempt_id)

    # --- jobs ----------------------------------------------------------------

    def _refuse_if_stopping(self) -> None:
        # A submission that was checking its module or inputs when the
        # jobtracker stopped must not go on into a removed work directory.
        if self._stopping:
            raise SubmissionError("the jobtracker is stopping")

    async def submit(self, spec: dict[str, Any]) -> str:
        """Check and start a job; raises SubmissionError with the reason."""
        ended: defer.Deferred[None] = defer.Deferred()
        self._submissions.add(ended)
        try:
            return await self._submit(spec)
        finally:
            self._submissions.discard(ended)
            ended.callback(None)

    async def _submit(self, spec: dict[str, Any]) -> str:
        self._refuse_if_stopping()
        request = _validate_submission(spec)
        slots = sum(w.slots for w in self.workers.values())
        self._refuse_running_output(request["output"])
        try:
            splits = await threads.deferToThread(
                _splits, request["inputs"], request["split_size"], slots)
            if request["overwrite"]:
                # Before the module check: a refusal costs nothing then.
                await threads.deferToThread(
                    output.check_overwrite, request["output"], inputs=request["inputs"],
                    input_files=_split_paths(splits), protected=[self.workdir])
        except (ValueError, output.OutputExistsError) as e:  # InputError and friends
            raise SubmissionError(str(e)) from None
        self._refuse_if_stopping()
        self._job_seq += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self._now()))
        job_id = f"job_{stamp}_{self._job_seq:04d}"
        job_dir = os.path.join(self.workdir, "jobs", job_id)
        os.makedirs(job_dir)
        source_path = os.path.join(job_dir, "job.py")
        with open(source_path, "w", encoding="utf-8") as f:
            f.write(request["source"])
        try:
            defaults = await self._check_module(job_id, source_path, request)
            self._refuse_if_stopping()
            # Default: a reducer per slot, so the reduce phase uses the
            # whole cluster as the map phase does.
            reducers = request["reducers"] or defaults.get("num_reducers") or max(1, slots)
            self._refuse_running_output(request["output"])
            try:
                await threads.deferToThread(
                    output.prepare_output_dir, request["output"], request["overwrite"],
                    inputs=request["inputs"], input_files=_split_paths(splits),
                    protected=[self.workdir])
            except (output.OutputExistsError, OSError) as e:
                raise SubmissionError(str(e)) from None
            if self._stopping:  # the output just made is no job's
                shutil.rmtree(request["output"], ignore_errors=True)
                self._refuse_if_stopping()
            # The output directory is the job's own now: should the
            # jobtracker crash, its next start cleans it (see start).
            with open(os.path.join(job_dir, OUTPUT_MARKER), "w", encoding="utf-8") as f:
                f.write(request["output"])
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        job = JobRecord(
            id=job_id, filename=request["filename"], source_path=source_path,
            token=os.urandom(32), output=request["output"], splits=splits,
            num_reducers=reducers, map_name=request["map_name"],
            reduce_name=request["reduce_name"], buffer_records=request["buffer_records"],
            submitted=self._now(), inputs=request["inputs"], compress=request["compress"],
        )
        self.jobs[job_id] = job
        self.log.info("Job {job} submitted: {file}, {maps} maps, {reduces} reduces",
                      job=job_id, file=job.filename, maps=len(splits), reduces=reducers)
        self._execute(self.scheduler.submit(job_id, len(splits), reducers, self._now(),
                                            request["max_attempts"], request["speculative"]))
        return job_id

    def _refuse_running_output(self, out: str) -> None:
        """Two running jobs never share, nest or delete each other's output."""
        for job in self.jobs.values():
            if job.state == "running" and (output.inside(out, job.output)
                                           or output.inside(job.output, out)):
                raise SubmissionError(f"the output {out} overlaps the output {job.output} "
                                      f"of the running job {job.id}")

    async def _check_module(self, job_id: str, source_path: str,
                            request: dict[str, Any]) -> dict[str, Any]:
        """Import the module in a child process: it must load and define
        map and reduce. A hostile or hanging module harms only that child."""
        spec = {"kind": "check", "job": {"source_path": source_path,
                                         "filename": request["filename"],
                                         "map_name": request["map_name"],
                                         "reduce_name": request["reduce_name"]}}
        work = os.path.join(self.workdir, "jobs", job_id, "check")
        child = TaskChild(self._reactor, self._checkers, spec, work,
                          timeout=self.check_timeout)
        self._checks.add(child)
        try:
            result = await child.result
        finally:
            self._checks.discard(child)
        if not result.get("ok"):
            err = result.get("error", {})
            message = err.get("message", "the job module check failed")
            traceback = err.get("traceback", "")
            if err.get("type") == "TaskProcessDied" and "longer than" in message:
                message = f"importing the job module took longer than {self.check_timeout:g}s"
            elif err.get("type") in _SELF_EXPLAINED:
                # The message names the file (and line); the traceback would
                # only show the task child's own frames.
                message = message.split("JobDefinitionError: ", 1)[-1]
                traceback = ""
            raise SubmissionError(f"{message}\n{traceback}".rstrip())
        return result

    def wait(self, job_id: str) -> defer.Deferred[dict[str, Any]]:
        old = self._old_result(job_id)
        if old is not None:
            return defer.succeed(old)
        job = self._job(job_id)
        if job.state != "running":
            return defer.succeed(self._result(job))
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        job.waiters.append(d)
        return d

    def kill(self, job_id: str) -> dict[str, Any]:
        old = self._old_result(job_id)
        if old is not None:
            return old
        self._job(job_id)
        self._execute(self.scheduler.kill_job(job_id, self._now()))
        return self.status(job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        old = self._old_result(job_id)
        if old is not None:
            return old
        job = self._job(job_id)
        result = self._result(job)
        sjob = self.scheduler.jobs.get(job_id)
        if sjob is not None:
            for kind, tasks in (("maps", sjob.maps), ("reduces", sjob.reduces)):
                result[kind] = {
                    "total": len(tasks),
                    "done": sum(t.state is State.SUCCEEDED for t in tasks),
                    "running": sum(t.state is State.RUNNING for t in tasks),
                }
            result["failed_attempts"] = sum(t.failures for t in sjob.maps + sjob.reduces)
        return result

    def list_jobs(self) -> list[dict[str, Any]]:
        old = [views.result_of(d) for j, d in self.history.jobs.items() if j not in self.jobs]
        return old + [self.status(j) for j in self.jobs]

    # --- views: the status site, ``logs`` and the job history ------------------

    def now(self) -> float:
        return self._now()

    def _old_result(self, job_id: str) -> dict[str, Any] | None:
        """The result of a job known only from the history."""
        if not isinstance(job_id, str) or job_id in self.jobs:
            return None
        detail = self.history.get(job_id)
        return views.result_of(detail) if detail is not None else None

    def workers_view(self) -> list[dict[str, Any]]:
        return views.workers_view(self.scheduler, self._now())

    def jobs_view(self) -> list[dict[str, Any]]:
        """Every known job, oldest first, finished ones from the history too."""
        now = self._now()
        old = [{k: v for k, v in d.items() if k not in ("tasks", "phases")}
               for j, d in self.history.jobs.items() if j not in self.jobs]
        live = [views.job_summary(j, self.scheduler.jobs.get(j.id), now)
                for j in self.jobs.values()]
        return sorted(old + live, key=lambda s: s["submitted"])

    def job_view(self, job_id: str) -> dict[str, Any]:
        """One job with its tasks and attempts (``views.job_detail``)."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            detail = self.history.get(job_id)
            if detail is None:
                raise UnknownJob(f"no job {job_id!r}")
            return detail
        return views.job_detail(job, self.scheduler, self._now(), self.task_logs.has)

    async def _job_logs(self, job_id: str) -> dict[str, str]:
        if job_id in self.jobs:
            return self.task_logs.for_job(job_id)
        return await self.history.read_logs(job_id)

    async def attempt_log(self, job_id: str, attempt_id: str) -> str | None:
        """The log tail of one attempt (None when it printed nothing)."""
        if not any(a["id"] == attempt_id
                   for a in views.find_attempts(self.job_view(job_id), None)):
            raise UnknownJob(f"no attempt {attempt_id!r} in job {job_id!r}")
        return (await self._job_logs(job_id)).get(attempt_id)

    async def logs(self, job_id: str, which: str | None = None) -> list[dict[str, Any]]:
        """The logs of a job's attempts; ``which`` picks a task or an
        attempt (see ``views.find_attempts``)."""
        attempts = views.find_attempts(self.job_view(job_id), which)
        if which and not attempts:
            raise UnknownJob(f"no task or attempt {which!r} in job {job_id!r}")
        return logs_reply(attempts, await self._job_logs(job_id))

    def _job(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def _result(self, job: JobRecord) -> dict[str, Any]:
        end = job.finished if job.finished is not None else self._now()
        return {"job_id": job.id, "state": job.state, "error": job.error,
                "counters": job.counters, "elapsed": end - job.submitted,
                "output": job.output, "filename": job.filename,
                "num_maps": len(job.splits), "num_reducers": job.num_reducers}

    def _job_done(self, job: JobRecord, state: str, error: dict[str, str] | None) -> None:
        job.state = state
        job.error = error
        job.finished = self._now()
        sjob = self.scheduler.jobs.get(job.id)
        if sjob is not None:
            job.counters = views.live_counters(sjob)
        try:
            if state == "succeeded":
                output.finish_output(job.output)
            else:
                output.abort_output(job.output)
        except OSError as e:
            self.log.error("Cannot finish the output of {job}: {e}", job=job.id, e=e)
            if state == "succeeded":
                job.state = "failed"
                job.error = {"type": "OutputError", "message": str(e), "traceback": ""}
        shutil.rmtree(os.path.dirname(job.source_path), ignore_errors=True)
        self.log.info("Job {job} {state} in {secs:.3f}s", job=job.id, state=job.state,
                      secs=job.finished - job.submitted)
        self.history.record(self.job_view(job.id), self.task_logs.for_job(job.id))
        waiters, job.waiters = job.waiters, []
        for d in waiters:
            d.callback(self._result(job))
        self._forget_old_jobs()

    def _forget_old_jobs(self) -> None:
        done = [j for j in self.jobs.values() if j.state != "running"]
        for job in done[:max(0, len(done) - FINISHED_JOBS_KEPT)]:
            del self.jobs[job.id]
            self.scheduler.forget_job(job.id)
            self.task_logs.drop_job(job.id)

    # --- carrying out the scheduler's decisions --------------------------------

    def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, sched.JobDone):
                job = self.jobs.get(action.job_id)
                if job is not None:
                    self._job_done(job, action.state.value, action.error)
                continue
            conn = self.workers.get(action.wid)
            if conn is None:
                continue
            job = self.jobs[action.job_id]
            if isinstance(action, sched.InitJob):
                with open(job.source_path, encoding="utf-8") as f:
                    source = f.read()
                self._call(conn, "init_job", job.id, {
                    "source": source, "filename": job.filename, "token": job.token,
                    "map_name": job.map_name, "reduce_name": job.reduce_name,
                    "num_maps": len(job.splits), "num_reducers": job.num_reducers,
                    "output": job.output, "buffer_records": job.buffer_records,
                    "compress": job.compress,
                })
            elif isinstance(action, sched.LaunchMap):
                self._call(conn, "launch_map", job.id, action.attempt_id, action.index,
                           job.splits[action.index].to_dict())
            elif isinstance(action, sched.LaunchReduce):
                self._call(conn, "launch_reduce", job.id, action.attempt_id, action.partition,
                           [_location(loc) for loc in action.map_outputs])
            elif isinstance(action, sched.AnnounceMapOutputs):
                self._call(conn, "map_outputs", job.id,
                           [_location(loc) for loc in action.map_outputs])
            elif isinstance(action, sched.KillAttempt):
                self._call(conn, "kill_attempt", job.id, action.attempt_id)
            elif isinstance(action, sched.DestroyJob):
                self._call(conn, "destroy_job", job.id)

    def _call(self, conn: WorkerConnection, method: str, *args: Any) -> None:
        d = conn.mind.callRemote(method, *args)
        d.addErrback(self._call_failed, conn.wid, method)

    def _call_failed(self, failure: Any, wid: str, method: str) -> None:
        if failure.check(pb.DeadReferenceError, pb.PBConnectionLost):
            return  # the disconnect notification handles the loss
        self.log.failure("Remote call {method} to {wid} failed", failure, method=method, wid=wid)


def _splits(inputs: list[str], split_size: int | None, slots: int) -> list[Split]:
    """The job's splits; without a split size, whole waves over the slots."""
    paths = expand_inputs(inputs)
    if split_size is None:
        split_size = default_split_size(sum(os.path.getsize(p) for p in paths), slots)
    return compute_splits(paths, split_size)


def _split_paths(splits: Sequence[Split]) -> list[str]:
    return list(dict.fromkeys(s.path for s in splits))


def _known_codec(name: str) -> bool:
    if name not in COMPRESSION_CODECS:
        raise SubmissionError(f"unknown compression codec {name!r}: use "
                              f"{', '.join(map(repr, COMPRESSION_CODECS))} or none")
    return True


def _validate_submission(spec: Any) -> dict[str, Any]:
    """Plain, typed submission fields, or SubmissionError naming the bad one."""
    if not isinstance(spec, dict):
        raise SubmissionError("a submission is a dict")
    if spec.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolMismatch(f"client speaks protocol {spec.get('protocol')!r}, "
                               f"this jobtracker {PROTOCOL_VERSION}")

    def get(name: str, kind: type | tuple[type, ...], default: Any = ..., check: Any = None) -> Any:
        value = spec.get(name, default)
        if value is ...:
            raise SubmissionError(f"the submission has no {name!r}")
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                  and kind is int):
            raise SubmissionError(f"{name!r} has the wrong type")
        if check is not None and value is not None and not check(value):
            raise SubmissionError(f"invalid {name}: {value!r}")
        return value

    inputs = get("inputs", list)
    if not inputs or not all(isinstance(p, str) and p for p in inputs):
        raise SubmissionError("no inputs given")
    out = get("output", str, check=os.path.isabs)
    if any(os.path.abspath(p) == os.path.abspath(out) for p in inputs):
        raise SubmissionError("the output directory is also an input")
    return {
        "source": get("source", str),
        "filename": get("filename", str),
        "inputs": inputs,
        "output": out,
        "reducers": get("reducers", int, None, lambda n: n >= 1),
        "split_size": get("split_size", int, None, lambda n: n >= 1),
        "overwrite": bool(get("overwrite", bool, False)),
        "map_name": get("map_name", str, "map", str.isidentifier),
        "reduce_name": get("reduce_name", str, "reduce", str.isidentifier),
        "max_attempts": get("max_attempts", int, sched.DEFAULT_MAX_ATTEMPTS, lambda n: n >= 1),
        "speculative": bool(get("speculative", bool, False)),
        "buffer_records": get("buffer_records", int, None, lambda n: n >= 1),
        # Checked by name only: the workers, not the jobtracker, need the codec.
        "compress": get("compress", str, None, _known_codec),
    }


# --- the PB adapter ------------------------------------------------------------

class TaskTrackerAvatar(pb.Avatar):
    """A logged-in tasktracker. ``wid`` is set by ``register``."""

    def __init__(self, jt: JobTracker, mind: pb.RemoteReference) -> None:
        self.jt = jt
        self.mind = mind
        self.wid: str | None = None

    def perspective_register(self, info: dict[str, Any]) -> str:
        if self.wid is not None:
            raise pb.Error("already registered")
        if not isinstance(info, dict):
            raise pb.Error("register takes a dict")
        self.wid = self.jt.register(self.mind, info)
        return self.wid

    def perspective_heartbeat(self, status: dict[str, Any]) -> None:
        self.jt.heartbeat(self.wid, status)

    def perspective_attempt_done(self, attempt_id: str, result: dict[str, Any]) -> None:
        self.jt.attempt_done(self.wid, str(attempt_id), result if isinstance(result, dict) else {})

    def perspective_attempt_failed(self, attempt_id: str, error: dict[str, Any]) -> None:
        self.jt.attempt_failed(self.wid, str(attempt_id), error if isinstance(error, dict) else {})

    def perspective_fetch_failed(self, attempt_id: str, map_index: int,
                                 map_attempt_id: str | None = None) -> None:
        if type(map_index) is not int:
            raise pb.Error("fetch_failed takes an attempt id and a map index")
        self.jt.fetch_failed(self.wid, str(attempt_id), map_index,
                             None if map_attempt_id is None else str(map_attempt_id))

    def perspective_may_commit(self, attempt_id: str) -> bool:
        return self.jt.may_commit(self.wid, str(attempt_id))

    def logout(self) -> None:
        if self.wid is not None:
            self.jt.worker_disconnected(self.wid)


class ClientAvatar(pb.Avatar):
    """A logged-in submitter or job-control client."""

    def __init__(self, jt: JobTracker) -> None:
        self.jt = jt

    def perspective_submit(self, spec: dict[str, Any]) -> defer.Deferred[str]:
        return defer.Deferred.fromCoroutine(self.jt.submit(spec))

    def perspective_wait(self, job_id: str) -> defer.Deferred[dict[str, Any]]:
        return self.jt.wait(job_id)

    def perspective_status(self, job_id: str) -> dict[str, Any]:
        return self.jt.status(job_id)

    def perspective_jobs(self) -> list[dict[str, Any]]:
        return self.jt.list_jobs()

    def perspective_kill(self, job_id: str) -> dict[str, Any]:
        return self.jt.kill(job_id)

    def perspective_logs(self, job_id: str,
                         which: str | None = None) -> defer.Deferred[list[dict[str, Any]]]:
        return defer.Deferred.fromCoroutine(
            self.jt.logs(str(job_id), None if which is None else str(which)))


@implementer(portal.IRealm)
class JobTrackerRealm:
    def __init__(self, jt: JobTracker) -> None:
        self.jt = jt

    def requestAvatar(self, avatar_id: bytes, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("only PB perspectives")
        if not isinstance(mind, pb.RemoteReference):
            raise pb.Error("log in with a mind (a pb.Referenceable)")
        broker = mind.broker
        if isinstance(broker, _GuardedBroker):
            broker.logged_in()
        if avatar_id == ROLE_TASKTRACKER:
            avatar: Any = TaskTrackerAvatar(self.jt, mind)
            return pb.IPerspective, avatar, avatar.logout
        return pb.IPerspective, ClientAvatar(self.jt), lambda: None


class _GuardedBroker(wire.Broker):
    """A broker that drops a peer speaking something other than PB (a port
    scan, an HTTP request) with one log line instead of a traceback."""

    log = Logger()
    _deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # A peer must log in within LOGIN_TIMEOUT: connections that never
        # do would otherwise hold a file descriptor each, for ever.
        self._deadline = self.factory.clock.callLater(LOGIN_TIMEOUT, self._too_slow)

    def logged_in(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()

    def _too_slow(self) -> None:
        peer = self.transport.getPeer()
        self.log.warn("Dropped a connection from {host}:{port}: no login in {s:g}s",
                      host=getattr(peer, "host", peer), port=getattr(peer, "port", ""),
                      s=LOGIN_TIMEOUT)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:
        self.logged_in()  # cancels the deadline
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
        except (banana.BananaError, NotImplementedError) as e:  # banana's "bad type byte"
            peer = self.transport.getPeer()
            self.log.warn("Dropped a connection from {host}:{port}: not PB ({e})",
                          host=getattr(peer, "host", peer), port=getattr(peer, "port", ""), e=e)
            self.transport.abortConnection()


class _LoginWrapper(pb._PortalWrapper):
    """What a peer may call before it logs in: the login methods; anything
    else is refused with one log line (PB would log a traceback)."""

    log = Logger()

    def remoteMessageReceived(self, broker: pb.Broker, message: str, args: Any,
                              kw: Any) -> Any:
        if message not in ("login", "loginAnonymous"):
            self.log.warn("Refused a call of {m!r} before login", m=str(message)[:60])
            raise pb.Error("log in first")
        return super().remoteMessageReceived(broker, message, args, kw)


@implementer(pb.IPBRoot)
class _LoginRoot(pb._PortalRoot):
    """PB's root for a portal (private in Twisted, stable for two decades),
    handing out the wrapper above."""

    def rootObject(self, broker: pb.Broker) -> _LoginWrapper:
        return _LoginWrapper(self.portal, broker)


def pb_factory(jt: JobTracker, secret: bytes) -> pb.PBServerFactory:
    checkers = [SecretChecker(secret), AnonymousRefused()]
    factory = pb.PBServerFactory(_LoginRoot(portal.Portal(JobTrackerRealm(jt), checkers)))
    factory.protocol = _GuardedBroker
    factory.clock = jt.clock()
    return factory


# --- the service ----------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    listen: str
    workdir: str
    secret_file: str | None
    ready_file: str | None
    expiry: float = DEFAULT_EXPIRY
    check_timeout: float = DEFAULT_CHECK_TIMEOUT
    #: The status site's endpoint string; None: no status site.
    web_listen: str | None = None
    #: Basic auth on the status site even on loopback (beyond, always).
    web_auth: bool = False
    history_retention: int = DEFAULT_HISTORY_RETENTION


class JobTrackerService(service.Service):
    """The jobtracker daemon: the PB server and the job manager behind it."""

    log = Logger()

    def __init__(self, reactor: Any, config: Config, secret: bytes,
                 checkers: Zygote | None = None) -> None:
        self._reactor = reactor
        self.config = config
        self._secret = secret
        self.jt = JobTracker(reactor, config.workdir, expiry=config.expiry,
                             check_timeout=config.check_timeout,
                             history_retention=config.history_retention, checkers=checkers)
        self._listening: defer.Deferred[Any] | None = None
        self._port: Any = None
        self.port: int | None = None
        self.web: StatusServer | None = None
        self._web_started: defer.Deferred[int | None] | None = None
        self.web_port: int | None = None

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.config.workdir, exist_ok=True)
        self.jt.start()
        endpoint = endpoints.serverFromString(self._reactor, self.config.listen)
        self._listening = endpoint.listen(pb_factory(self.jt, self._secret))
        self._listening.addCallback(self._bound)
        if self.config.web_listen:
            # Imported here: twisted.web is 20 ms of every `run`'s start,
            # whose jobtracker has no status site.
            from .web import StatusServer

            self.web = StatusServer(self._reactor, self.jt, self.config.web_listen,
                                    self._secret, self.config.web_auth)
            self._web_started = defer.Deferred.fromCoroutine(self.web.start())

    def _bound(self, listening_port: Any) -> Any:
        self._port = listening_port
        self.port = listening_port.getHost().port
        return listening_port

    async def listening(self) -> int:
        """The bound PB port, once listening (writes the ready file)."""
        assert self._listening is not None, "startService first"
        await self._listening
        if self._web_started is not None:
            self.web_port = await self._web_started
        self.log.info("Jobtracker listening on port {port} (work dir {workdir})",
                      port=self.port, workdir=self.config.workdir)
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, {"port": self.port, "pid": os.getpid(),
                                                      "web_port": self.web_port})
        return self.port

    async def _stop(self) -> None:
        await self.jt.stop()
        if self._port is not None:
            await self._port.stopListening()
        if self._web_started is not None:
            await self._web_started
        if self.web is not None:
            await self.web.stop()
        await self.jt.history.flush()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


def parse_args(argv: Sequence[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m pytxmr.jobtracker",
                                description="The pytxmr jobtracker (master) daemon.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"PB port (default {DEFAULT_PORT}; 0 picks a free port)")
    p.add_argument("--interface", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for a cluster)")
    p.add_argument("--listen", help="Twisted endpoint string; overrides --port/--interface")
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".pytxmr",
                                                     "jobtracker"),
                   help="work directory (default ~/.pytxmr/jobtracker)")
    p.add_argument("--secret-file", help="cluster secret file (default: $PYTXMR_SECRET, "
                   "else ~/.pytxmr/cluster-secret, created on first start)")
    p.add_argument("--ready-file", help="write JSON with the bound port here once listening")
    p.add_argument("--expiry", type=float, default=DEFAULT_EXPIRY,
                   help=f"seconds without heartbeat before a tasktracker is lost "
                        f"(default {DEFAULT_EXPIRY:g})")
    p.add_argument("--check-timeout", type=float, default=DEFAULT_CHECK_TIMEOUT,
                   help="seconds a job module may take to import at submission")
    p.add_argument("--web-port", type=int, default=DEFAULT_WEB_PORT,
                   help=f"status site HTTP port (default {DEFAULT_WEB_PORT}; 0 picks a free "
                        "port, reported in the ready file as web_port)")
    p.add_argument("--web-interface", default="127.0.0.1",
                   help="address of the status site (default 127.0.0.1; beyond loopback it "
                        "asks for the password 'python -m pytxmr web-password' prints)")
    p.add_argument("--web-listen", help="Twisted endpoint string for the status site; "
                   "overrides --web-port/--web-interface")
    p.add_argument("--web-auth", action="store_true",
                   help="ask for the status site password on loopback too")
    p.add_argument("--no-web", action="store_true", help="no status site")
    p.add_argument("--history-retention", type=int, default=DEFAULT_HISTORY_RETENTION,
                   help=f"finished jobs kept in WORKDIR/history across restarts "
                        f"(default {DEFAULT_HISTORY_RETENTION}; 0 keeps none)")
    add_logging_options(p)
    a = p.parse_args(argv)
    if not 0 <= a.web_port <= 65535:
        p.error("--web-port must be in 0..65535")
    if a.history_retention < 0:
        p.error("--history-retention must be at least 0")
    web_interface = a.web_interface.replace(":", "\\:")  # IPv6 colons, escaped
    web_listen = None if a.no_web else (
        a.web_listen or f"tcp:{a.web_port}:interface={web_interface}")
    if a.port < 0 or a.port > 65535:
        p.error("--port must be in 0..65535")
    listen = a.listen or f"tcp:{a.port}:interface={a.interface}"
    return Config(listen, os.path.abspath(a.workdir), a.secret_file, a.ready_file,
                  a.expiry, a.check_timeout, web_listen=web_listen, web_auth=a.web_auth,
                  history_retention=a.history_retention), a


def main(argv: Sequence[str] | None = None) -> None:
    config, args = parse_args(sys.argv[1:] if argv is None else argv)

    async def start(reactor: Any) -> service.Service:
        secret = load_secret(config.secret_file, create=True)
        svc = JobTrackerService(reactor, config, secret)
        svc.startService()
        await svc.listening()
        return svc

    run_daemon(start, args, "jobtracker")


if __name__ == "__main__":
    main()
