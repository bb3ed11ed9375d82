"""The tasktracker: the worker daemon (``python -m pytxmr.tasktracker``).

It logs in to the jobtracker (again after every reconnect, as a new
incarnation), runs the tasks it is given in child processes (at most
``slots`` at once), keeps finished map outputs in its KeyValueStore and
serves them on its shuffle port. A reduce attempt fetches its partition of
each map output as soon as the jobtracker announces the map, so the shuffle
overlaps the map phase; its child starts once every run is local: in the
shuffle memory (a tmpfs directory) while the worker's budget lasts, on disk
beyond it (pytxmr.shufflememory).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Sequence

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, protocol, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb

from . import output, shuffle, shufflememory
from .auth import LoginRefused, login
from .client import jobtracker_endpoint
from .child import TaskChild, Zygote
from .daemon import (
    FatalError,
    add_logging_options,
    claim_workdir,
    run_daemon,
    write_ready_file,
)
from .counters import FRAMEWORK
from .kvstore import KeyValueStore
from .records import (
    CorruptFrame,
    verify_segment,
)
from .scheduler import COMMIT_DENIED
from .secret import load_secret
from .shufflememory import ShuffleMemory
from .sizes import format_size, size_argument
from .tasklog import read_tail
from .wire import (
    DEFAULT_HEARTBEAT,
    DEFAULT_PORT,
    PROTOCOL_VERSION,
    ROLE_TASKTRACKER,
    client_factory,
)

FETCH_RETRIES = 4
#: After FETCH_RETRIES failed tries, seconds before trying again (by then
#: the jobtracker may have announced a new location).
FETCH_FAILED_PAUSE = 2.0


@dataclass
class JobInfo:
    job_id: str
    work_dir: str
    source_path: str
    filename: str
    token: bytes
    map_name: str
    reduce_name: str
    num_maps: int
    num_reducers: int
    output: str
    buffer_records: int | None
    compress: str | None = None


@dataclass
class Attempt:
    """A task attempt on this worker, from launch to report."""

    id: str
    job: JobInfo
    kind: str
    index: int
    work_dir: str
    child: TaskChild | None = None
    killed: bool = False
    # reduce attempts: map index -> (path, offset, length) once local
    runs: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    #: paths of this attempt's run files in the shuffle memory (accepted or
    #: being fetched): released when the attempt ends
    in_memory: set[str] = field(default_factory=set)
    locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)
    fetching: dict[int, defer.Deferred[None]] = field(default_factory=dict)
    #: map index -> the number of its latest fetch, the only one whose
    #: outcome counts (a newer location supersedes a fetch in progress)
    fetch_number: dict[int, int] = field(default_factory=dict)
    all_fetched: defer.Deferred[None] = field(default_factory=defer.Deferred)


def _job_spec(job: JobInfo) -> dict[str, Any]:
    return {"source_path": job.source_path, "filename": job.filename,
            "map_name": job.map_name, "reduce_name": job.reduce_name}


class TaskTracker:
    """The worker's jobs and attempts; what the jobtracker can ask of it."""

    log = Logger()

    def __init__(self, reactor: Any, workdir: str, slots: int, advertise_host: str,
                 task_timeout: float | None = None, task_memory: int | None = None,
                 zygote: Zygote | None = None) -> None:
        self._reactor = reactor
        self.workdir = workdir
        self.slots = slots
        self.advertise_host = advertise_host
        self.task_timeout = task_timeout
        self.task_memory = task_memory
        self.store = KeyValueStore(os.path.join(workdir, "store"))
        #: Disabled until the service found a usable tmpfs directory.
        self.memory = ShuffleMemory(None, 0)
        self.processes = defer.DeferredSemaphore(slots)
        #: Ours to start and stop unless given (``run`` shares one by all).
        self.own_zygote = zygote is None
        self.zygote = zygote or Zygote(reactor)
        self.jobs: dict[str, JobInfo] = {}
        self.attempts: dict[str, Attempt] = {}
        self.wid: str | None = None
        self.shuffle_port: int = 0
        self.jobtracker: pb.RemoteReference | None = None

    # --- what the jobtracker asks ---------------------------------------------

    def init_job(self, job_id: str, info: dict[str, Any]) -> None:
        work_dir = self.store.add_job(job_id, info["token"])
        source_path = os.path.join(work_dir, "job.py")
        with open(source_path, "w", encoding="utf-8") as f:
            f.write(info["source"])
        self.jobs[job_id] = JobInfo(
            job_id, work_dir, source_path, info["filename"], info["token"], info["map_name"],
            info["reduce_name"], info["num_maps"], info["num_reducers"], info["output"],
            info.get("buffer_records"), info.get("compress"))

    def launch_map(self, job_id: str, attempt_id: str, index: int, split: dict[str, Any]) -> None:
        attempt = self._new_attempt(job_id, attempt_id, "map", index)
        spec = {"kind": "map", "job": _job_spec(attempt.job), "split": split,
                "num_partitions": attempt.job.num_reducers, "out_dir": attempt.work_dir,
                "buffer_records": attempt.job.buffer_records,
                "compress": attempt.job.compress}
        self._spawn(self._run_map(attempt, spec))

    def launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                      locations: list[dict[str, Any]]) -> None:
        attempt = self._new_attempt(job_id, attempt_id, "reduce", partition)
        self._spawn(self._run_reduce(attempt))
        self.map_outputs(job_id, locations)

    def map_outputs(self, job_id: str, locations: list[dict[str, Any]]) -> None:
        for attempt in list(self.attempts.values()):
            if attempt.kind != "reduce" or attempt.job.job_id != job_id or attempt.killed:
                continue
            for loc in locations:
                # A re-run map is announced again: its newest location wins,
                # also over a fetch in progress from the old one (whose
                # worker may be stopped: that fetch would wait for a timeout).
                attempt.locations[loc["map"]] = loc
                stale = attempt.fetching.pop(loc["map"], None)
                self._start_fetch(attempt, loc["map"])
                if stale is not None:
                    self.log.info("Map {m} was run again: {aid} fetches it from {host}:{port}",
                                  m=loc["map"], aid=attempt.id, host=loc["host"],
                                  port=loc["port"])
                    stale.cancel()

    def _start_fetch(self, attempt: Attempt, index: int) -> None:
        if attempt.killed or index in attempt.runs or index in attempt.fetching:
            return
        loc = attempt.locations[index]
        number = attempt.fetch_number[index] = attempt.fetch_number.get(index, 0) + 1
        d = defer.Deferred.fromCoroutine(self._fetch(attempt, loc, number))
        if not d.called:
            attempt.fetching[index] = d
        d.addErrback(self._fetch_failed, attempt, loc, number)

    def kill_attempt(self, job_id: str, attempt_id: str) -> None:
        attempt = self.attempts.pop(attempt_id, None)
        if attempt is not None:
            self._kill(attempt, "killed by the jobtracker")

    def destroy_job(self, job_id: str) -> None:
        for attempt in [a for a in self.attempts.values() if a.job.job_id == job_id]:
            del self.attempts[attempt.id]
            self._kill(attempt, "the job ended")
        self.jobs.pop(job_id, None)
        self.store.remove_job(job_id)

    def forget_everything(self) -> None:
        """Lost contact with the jobtracker: it reschedules our work, so end
        every attempt and drop every job (we come back as a new incarnation)."""
        for job_id in list(self.jobs):
            self.destroy_job(job_id)
        self.wid = None

    # --- attempts ----------------------------------------------------------------

    def _new_attempt(self, job_id: str, attempt_id: str, kind: str, index: int) -> Attempt:
        job = self.jobs[job_id]
        work_dir = os.path.join(job.work_dir, attempt_id)
        os.makedirs(work_dir, exist_ok=True)
        attempt = Attempt(attempt_id, job, kind, index, work_dir)
        self.attempts[attempt_id] = attempt
        return attempt

    def _spawn(self, coro: Any) -> None:
        d = defer.Deferred.fromCoroutine(coro)
        d.addErrback(lambda f: self.log.failure("Attempt crashed", f))

    def _kill(self, attempt: Attempt, why: str) -> None:
        attempt.killed = True
        if attempt.child is not None:
            attempt.child.kill(why)
        for d in attempt.fetching.values():
            d.cancel()
        if not attempt.all_fetched.called:
            attempt.all_fetched.cancel()
            # Nobody waits on it for a map attempt: the cancel is no error.
            attempt.all_fetched.addErrback(lambda f: f.trap(defer.CancelledError))
        # Now, not when the attempt's coroutine ends: it may wait long for a
        # process slot. A child still reading a run keeps its pages until it dies.
        self._release_memory(attempt)

    def _release_memory(self, attempt: Attempt) -> None:
        for path in attempt.in_memory:
            self.memory.release(path)
        attempt.in_memory.clear()

    async def _run_child(self, attempt: Attempt, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Run the attempt's child when a process slot is free; None if the
        attempt was killed meanwhile."""
        await self.processes.acquire()
        try:
            if attempt.killed:
                return None
            spec["memory_limit"] = self.task_memory
            attempt.child = TaskChild(self._reactor, self.zygote, spec, attempt.work_dir,
                                      stall_timeout=self.task_timeout)
            result = await attempt.child.result
        finally:
            self.processes.release()
        return None if attempt.killed else result

    async def _run_map(self, attempt: Attempt, spec: dict[str, Any]) -> None:
        result = await self._run_child(attempt, spec)
        if result is None:
            return
        if result.get("ok"):
            try:
                self.store.add_map_output(attempt.job.job_id, attempt.index,
                                          result["data_path"], result["index_path"])
            except (OSError, ValueError, KeyError) as e:
                result = {"ok": False, "error": {"type": type(e).__name__, "message": str(e),
                                                 "traceback": ""}}
        await self._report(attempt, result, {"kinds": result.get("kinds", []),
                                             "counters": result.get("counters", {})})

    async def _run_reduce(self, attempt: Attempt) -> None:
        try:
            await self._reduce(attempt)
        finally:
            self._release_memory(attempt)  # however the attempt ended

    async def _reduce(self, attempt: Attempt) -> None:
        if attempt.job.num_maps:
            try:
                await attempt.all_fetched
            except defer.CancelledError:
                return
            except Exception as e:  # our own disk, not a map's worker
                self._kill(attempt, "a fetch failed")
                await self._report(attempt, {"ok": False, "error": {
                    "type": type(e).__name__, "traceback": "",
                    "message": f"cannot store a fetched map output: {e}"}}, {})
                return
        if attempt.killed:
            return
        job = attempt.job
        runs = [attempt.runs[i] for i in sorted(attempt.runs)]
        shuffled = sum(length for _, _, length in runs)
        in_memory = sum(length for path, _, length in runs if path in attempt.in_memory)
        spec = {"kind": "reduce", "job": _job_spec(job), "runs": runs,
                "kinds": sorted(attempt.kinds),
                "output_path": output.attempt_path(job.output, attempt.id, attempt.index),
                "tmp_dir": attempt.work_dir}
        result = await self._run_child(attempt, spec)
        self._release_memory(attempt)  # the child is done with them
        if result is None:
            return
        if result.get("ok"):
            framework = result.setdefault("counters", {}).setdefault(FRAMEWORK, {})
            framework["shuffle bytes"] = shuffled
            framework["shuffle bytes in memory"] = in_memory
            framework["shuffle bytes on disk"] = shuffled - in_memory
            result = await self._commit(attempt, result)
        await self._report(attempt, result, {"counters": result.get("counters", {})})

    async def _commit(self, attempt: Attempt, result: dict[str, Any]) -> dict[str, Any]:
        """Move the part file into place if the jobtracker says this attempt
        is the one that commits."""
        if self.jobtracker is None:
            return {"ok": False, "error": {"type": "Disconnected", "traceback": "",
                                           "message": "lost the jobtracker before commit"}}
        try:
            allowed = await self.jobtracker.callRemote("may_commit", attempt.id)
        except (pb.RemoteError, pb.PBConnectionLost, pb.DeadReferenceError) as e:
            # E.g. UnknownWorker: we were declared lost meanwhile, and this
            # attempt with us; the jobtracker ignores whatever it reports.
            return {"ok": False, "error": {"type": "Disconnected", "traceback": "",
                                           "message": f"cannot ask to commit: {e}"}}
        if attempt.killed:
            allowed = False  # killed while asking: another attempt commits
        if not allowed:
            return {"ok": False, "error": {"type": COMMIT_DENIED, "traceback": "",
                                           "message": "another attempt committed first"}}
        try:
            output.commit_part(attempt.job.output, attempt.id, attempt.index)
        except OSError as e:
            return {"ok": False, "error": {"type": "CommitFailed", "traceback": "",
                                           "message": f"cannot commit the part file: {e}"}}
        return result

    async def _report(self, attempt: Attempt, result: dict[str, Any],
                      details: dict[str, Any]) -> None:
        if self.attempts.pop(attempt.id, None) is None or self.jobtracker is None:
            return  # killed, or the jobtracker is gone (it reschedules)
        # The tail of the user's prints goes with the report: the status
        # page and `pytxmr logs` show it.
        log = read_tail(os.path.join(attempt.work_dir, "task.log"))
        try:
            if result.get("ok"):
                await self.jobtracker.callRemote("attempt_done", attempt.id,
                                                 {**details, "log": log})
            else:
                await self.jobtracker.callRemote("attempt_failed", attempt.id,
                                                 {**result.get("error", {}), "log": log})
        except (pb.PBConnectionLost, pb.DeadReferenceError):
            pass
        if attempt.kind == "reduce" or not result.get("ok"):
            shutil.rmtree(attempt.work_dir, ignore_errors=True)

    # --- the shuffle, reduce side ---------------------------------------------------

    async def _fetch(self, attempt: Attempt, loc: dict[str, Any], number: int) -> None:
        job = attempt.job
        index = loc["map"]

        def superseded() -> bool:
            # Cancelling a fetch can surface as another error (a cancelled
            # name lookup is a DNSLookupError): its number tells for sure.
            return attempt.killed or attempt.fetch_number.get(index) != number

        name = f"run-{index:05d}-{number}.seg"
        run: tuple[str, int, int]
        if loc["wid"] == self.wid:
            path = os.path.join(attempt.work_dir, name)
            run = await self._local_run(job.job_id, index, attempt.index, path)
        else:
            delay = 0.2
            for tries in range(1, FETCH_RETRIES + 1):
                if superseded():
                    raise defer.CancelledError()
                try:
                    run = await self._fetch_once(attempt, loc, name)
                    break
                except (shuffle.ShuffleError, CorruptFrame) as e:
                    if tries == FETCH_RETRIES or superseded():
                        raise
                    self.log.info("Fetch of map {m} for {aid} failed ({e}); retrying",
                                  m=index, aid=attempt.id, e=e)
                    await task.deferLater(self._reactor, delay)
                    delay *= 2
            path = run[0]
        if superseded():
            self._discard_run(attempt, path)
            raise defer.CancelledError()
        attempt.fetching.pop(index, None)
        attempt.runs[index] = run
        attempt.kinds.update(loc["kinds"])
        if len(attempt.runs) == job.num_maps and not attempt.all_fetched.called:
            attempt.all_fetched.callback(None)

    async def _fetch_once(self, attempt: Attempt, loc: dict[str, Any], name: str,
                          memory: bool = True) -> tuple[str, int, int]:
        """One try at fetching a run: into the shuffle memory if its length
        (known from the reply header) fits the budget, else to the attempt's
        dir on disk. Whatever fails, its file is removed."""
        job = attempt.job
        placed: list[str] = []
        try:
            with contextlib.ExitStack() as files:
                def open_dest(length: int) -> BinaryIO:
                    placed.append(self._run_path(attempt, name, length, memory))
                    return files.enter_context(open(placed[-1], "wb"))

                n = await shuffle.fetch(self._reactor, loc["host"], loc["port"], job.job_id,
                                        loc["map"], attempt.index, job.token, open_dest)
            self.memory.written(placed[0])
            # Corrupt data is never merged: check every frame's CRC (off the
            # reactor thread) before accepting the run.
            await threads.deferToThread(verify_segment, placed[0])
        except BaseException as e:
            in_memory = any(path in attempt.in_memory for path in placed)
            for path in placed:
                self._discard_run(attempt, path)
            # A tmpfs filled by others meanwhile, or a directory removed
            # under us: not worth failing the reduce over, the disk may do.
            if not (in_memory and isinstance(e, OSError)) or attempt.killed:
                raise
            self.log.warn("Cannot keep map {m}'s run for {aid} in memory ({e}); fetching "
                          "it to disk", m=loc["map"], aid=attempt.id, e=e)
        else:
            return placed[0], 0, n
        return await self._fetch_once(attempt, loc, name, memory=False)

    def _run_path(self, attempt: Attempt, name: str, length: int, memory: bool = True) -> str:
        path = None if attempt.killed or not memory else self.memory.place(
            f"{attempt.id}-{name}", length)
        if path is None:
            return os.path.join(attempt.work_dir, name)
        attempt.in_memory.add(path)
        return path

    def _discard_run(self, attempt: Attempt, path: str) -> None:
        """Remove a run that will not be merged (a failed or superseded fetch).
        A path in memory is the budget's to remove: if the attempt's end
        released it already, the name may belong to a new reservation."""
        if path in attempt.in_memory:
            attempt.in_memory.discard(path)
            self.memory.release(path)
        elif os.path.dirname(path) == attempt.work_dir and os.path.lexists(path):
            os.unlink(path)

    async def _local_run(self, job_id: str, index: int, partition: int,
                         link: str) -> tuple[str, int, int]:
        """A map output of this very worker, as a run: checked like a
        fetched one, and hard-linked into the attempt's dir, so that a
        re-run of the map here (which replaces the store's file) cannot
        pull it from under the reduce."""
        try:
            source, offset, length = self.store.lookup(job_id, index, partition)
            try:
                os.link(source, link)
            except OSError:
                link = source  # a file system without hard links: read it in place
            await threads.deferToThread(verify_segment, link, offset, length)
        except (KeyError, OSError, CorruptFrame) as e:
            raise shuffle.ShuffleError(f"local output of map {index}: {e}") from None
        return link, offset, length

    def _fetch_failed(self, failure: Any, attempt: Attempt, loc: dict[str, Any],
                      number: int) -> None:
        """Our retries are spent: tell the jobtracker (enough such reports
        and it runs the map again, announcing a new location) and try
        again later with the newest location we know."""
        index = loc["map"]
        if attempt.killed or attempt.fetch_number.get(index) != number:
            return  # the attempt ended, or a newer location superseded this fetch
        attempt.fetching.pop(index, None)
        if not failure.check(shuffle.ShuffleError, CorruptFrame):
            # Writing the run failed here: not the map's fault, but ours.
            if not attempt.all_fetched.called:
                attempt.all_fetched.errback(failure)
            return
        self.log.warn("Cannot fetch map {m} for {aid} from {host}:{port}: {e}", m=index,
                      aid=attempt.id, host=loc["host"], port=loc["port"],
                      e=failure.getErrorMessage())
        if self.jobtracker is not None:
            d = self.jobtracker.callRemote("fetch_failed", attempt.id, index,
                                           loc.get("attempt"))
            d.addErrback(lambda f: None)
        self._reactor.callLater(FETCH_FAILED_PAUSE, self._start_fetch, attempt, index)


class TaskTrackerMind(pb.Referenceable):
    """What the jobtracker may call on us: validate, delegate."""

    def __init__(self, tt: TaskTracker) -> None:
        self.tt = tt

    def remote_init_job(self, job_id: str, info: dict[str, Any]) -> None:
        self.tt.init_job(job_id, info)

    def remote_launch_map(self, job_id: str, attempt_id: str, index: int,
                          split: dict[str, Any]) -> None:
        self.tt.launch_map(job_id, attempt_id, index, split)

    def remote_launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                             locations: list[dict[str, Any]]) -> None:
        self.tt.launch_reduce(job_id, attempt_id, partition, locations)

    def remote_map_outputs(self, job_id: str, locations: list[dict[str, Any]]) -> None:
        self.tt.map_outputs(job_id, locations)

    def remote_kill_attempt(self, job_id: str, attempt_id: str) -> None:
        self.tt.kill_attempt(job_id, attempt_id)

    def remote_destroy_job(self, job_id: str) -> None:
        self.tt.destroy_job(job_id)


class _PBReconnectingFactory(protocol.Factory):
    """A fresh PBClientFactory per connection, so that ClientService can
    reconnect and we log in again on each new broker."""

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return client_factory().buildProtocol(addr)


@dataclass(frozen=True)
class Config:
    jobtracker: str
    slots: int
    shuffle_listen: str
    advertise_host: str
    workdir: str | None
    secret_file: str | None
    ready_file: str | None
    heartbeat: float = DEFAULT_HEARTBEAT
    task_timeout: float | None = None
    task_memory: int | None = None
    #: RAM for fetched runs over all reduce attempts (None: the default, 0: none)
    shuffle_memory: int | None = None
    #: the tmpfs the shuffle memory lives in
    shuffle_memory_root: str = shufflememory.SHM_ROOT


class TaskTrackerService(service.Service):
    """The worker daemon: shuffle server, jobtracker connection, heartbeats."""

    log = Logger()

    def __init__(self, reactor: Any, config: Config, secret: bytes,
                 zygote: Zygote | None = None) -> None:
        self._reactor = reactor
        self.config = config
        self._secret = secret
        self.tt = TaskTracker(reactor, config.workdir, config.slots, config.advertise_host,
                              config.task_timeout, config.task_memory,
                              zygote=zygote)
        self._mind = TaskTrackerMind(self.tt)
        self._shuffle_port: Any = None
        self._client: ClientService | None = None
        #: The broker of a login in progress, and what fires when it ends.
        self._login_in_progress: tuple[pb.Broker, defer.Deferred[None]] | None = None
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._memory_lock: Any = None
        self._perspective: pb.RemoteReference | None = None
        self._registered: defer.Deferred[str] = defer.Deferred()
        #: Fails when the daemon cannot go on (the jobtracker refused our secret).
        self.fatal: defer.Deferred[None] = defer.Deferred()

    async def start(self) -> None:
        """Listen for the shuffle, then keep connected to the jobtracker."""
        self.startService()
        os.makedirs(self.config.workdir, exist_ok=True)
        self.tt.store.startup_cleanup()
        self._start_memory()
        if self.tt.own_zygote:
            self.tt.zygote.start()
        factory = shuffle.ShuffleServerFactory(self.tt.store, self._reactor)
        self._shuffle_factory = factory
        endpoint = endpoints.serverFromString(self._reactor, self.config.shuffle_listen)
        self._shuffle_port = await endpoint.listen(factory)
        self.tt.shuffle_port = self._shuffle_port.getHost().port
        self.log.info("Shuffle server listening on port {port}", port=self.tt.shuffle_port)
        jt_endpoint = endpoints.clientFromString(self._reactor, self.config.jobtracker)
        self._client = ClientService(
            jt_endpoint, _PBReconnectingFactory(),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            prepareConnection=self._login, clock=self._reactor)
        self._client.startService()
        self._heartbeat.start(self.config.heartbeat, now=False)

    def _start_memory(self) -> None:
        """Claim this work dir's tmpfs directory (emptied of what a crashed
        predecessor left) and size the budget; on any trouble, runs go to disk."""
        budget = self.config.shuffle_memory
        if budget == 0:
            return
        root = self.config.shuffle_memory_root
        for path in shufflememory.remove_orphans(root):
            self.log.info("Removed {path}, left by a crashed tasktracker whose work dir is "
                          "gone", path=path)
        workdir = self.tt.workdir
        path = shufflememory.memory_dir(workdir, root)
        try:
            self._memory_lock = shufflememory.claim_memory_dir(path, workdir)
            free = shufflememory.free_space(path)
        except OSError as e:
            self.log.warn("Fetched map outputs go to disk only: cannot use {root} ({e})",
                          root=root, e=e)
            return
        if budget is None:
            budget = shufflememory.default_budget(free)
        self.tt.memory = ShuffleMemory(path, budget,
                                       free_space=lambda: shufflememory.free_space(path))
        self.log.info("Fetched map outputs up to {size} in memory, in {path}",
                      size=format_size(budget), path=path)

    def _stop_memory(self) -> None:
        self.tt.memory.release_all()
        if self.tt.memory.directory is not None:
            shufflememory.remove_memory_dir(self.tt.memory.directory, self._memory_lock)
        self.tt.memory = ShuffleMemory(None, 0)
        self._memory_lock = None

    async def registered(self) -> str:
        """The worker id of the first registration (writes the ready file)."""
        wid = await self._registered
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, {
                "shuffle_port": self.tt.shuffle_port, "wid": wid, "pid": os.getpid()})
        return wid

    def _login(self, broker: pb.Broker) -> defer.Deferred[None]:
        """ClientService's prepareConnection.

        Its state machine has no transition for a connection lost while
        this runs (automat NoTransition, logged as an unhandled error), and
        PB never fails a login whose connection went before the jobtracker
        spoke (it would wait for ever). So a connection lost during the
        login ends it at once, and normally: ClientService then sees a
        connection made and lost, and reconnects (or stops, see _stop).
        """
        ended: defer.Deferred[None] = defer.Deferred()
        self._login_in_progress = (broker, ended)
        broker.notifyOnDisconnect(lambda: broker.factory.clientConnectionLost(
            None, Failure(pb.PBConnectionLost("the connection to the jobtracker was lost"))))

        def end(result: Any) -> Any:
            self._login_in_progress = None
            ended.callback(None)
            return result

        return defer.Deferred.fromCoroutine(self._do_login(broker)).addBoth(end)

    async def _do_login(self, broker: pb.Broker) -> None:
        try:
            perspective = await login(broker.factory, ROLE_TASKTRACKER, self._secret, self._mind)
            wid = await perspective.callRemote("register", {
                "protocol": PROTOCOL_VERSION, "host": self.config.advertise_host,
                "port": self.tt.shuffle_port, "slots": self.config.slots, "pid": os.getpid()})
        except pb.PBConnectionLost:
            return  # see _login
        except (LoginRefused, pb.RemoteError) as e:
            # Retrying cannot help (a wrong secret, another protocol version):
            # give up. Returning normally hands the connection to
            # ClientService, whose stop closes it (after a failed
            # prepareConnection it would stay open while it retries forever);
            # the daemon stops once this returned, when ClientService is in
            # a state that can stop.
            error = e if isinstance(e, LoginRefused) else FatalError(
                f"the jobtracker refused to register this tasktracker: {e}")
            self.log.error("{e}", e=error)
            if not self.fatal.called:
                self._reactor.callLater(0, self.fatal.errback, error)
            return
        self._perspective = perspective  # keep it: dropped, the session logs out
        self.tt.jobtracker = perspective
        self.tt.wid = wid
        perspective.notifyOnDisconnect(self._disconnected)
        self.log.info("Registered with the jobtracker as {wid}", wid=wid)
        if not self._registered.called:
            self._registered.callback(wid)

    def _disconnected(self, perspective: pb.RemoteReference) -> None:
        if perspective is not self._perspective:
            return
        if self.running:
            self.log.warn("Lost the jobtracker; ending our tasks and reconnecting")
        self._perspective = None
        self.tt.jobtracker = None
        self.tt.forget_everything()

    def _beat(self) -> None:
        if self._perspective is None:
            return
        memory = self.tt.memory
        d = self._perspective.callRemote("heartbeat", {
            "attempts": sorted(self.tt.attempts),
            "shuffle_memory": {"used": memory.used, "budget": memory.budget}})

        def failed(f: Any) -> None:
            if f.check(pb.PBConnectionLost, pb.DeadReferenceError):
                return
            # Declared lost while we were away (e.g. stopped): start afresh.
            self.log.warn("Heartbeat refused ({e}); logging in again", e=f.getErrorMessage())
            if self._perspective is not None:
                self._perspective.broker.transport.loseConnection()

        d.addErrback(failed)

    async def _stop(self) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._client is not None:
            if self._login_in_progress is not None:
                # Stopped during a login, ClientService would leave its
                # connection open: end the login first (see _login).
                broker, ended = self._login_in_progress
                broker.transport.abortConnection()
                await ended
                # That resumed inside the login's callbacks: ClientService's
                # own come after them.
                await task.deferLater(self._reactor, 0, lambda: None)
            await self._client.stopService()
        self.tt.forget_everything()
        if self.tt.own_zygote:
            await self.tt.zygote.stop()
        if self._shuffle_port is not None:
            await self._shuffle_port.stopListening()
            await self._shuffle_factory.disconnect_all()
        shutil.rmtree(self.tt.store.root, ignore_errors=True)
        self._stop_memory()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


def parse_args(argv: Sequence[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m pytxmr.tasktracker",
                                description="The pytxmr tasktracker (worker) daemon.")
    p.add_argument("--jobtracker", default=f"127.0.0.1:{DEFAULT_PORT}",
                   help=f"jobtracker HOST:PORT (default 127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                   help="task processes at once (default: CPU count)")
    p.add_argument("--shuffle-port", type=int, default=0,
                   help="shuffle server port (default 0: a free port)")
    p.add_argument("--shuffle-interface", default="0.0.0.0",
                   help="address the shuffle server listens on (default 0.0.0.0)")
    p.add_argument("--shuffle-listen", help="Twisted endpoint string for the shuffle server")
    p.add_argument("--advertise-host", default="127.0.0.1",
                   help="host name reducers on other hosts use to reach this worker's "
                        "shuffle server (default 127.0.0.1: single-host clusters)")
    p.add_argument("--workdir", help="work directory (default ~/.pytxmr/tasktracker, or "
                   "tasktracker-2, -3... when another tasktracker of this host holds it)")
    p.add_argument("--secret-file", help="cluster secret file")
    p.add_argument("--ready-file", help="write JSON with the shuffle port and wid here "
                   "once registered")
    p.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT,
                   help="seconds between heartbeats")
    p.add_argument("--task-timeout", type=float, default=None,
                   help="kill a task attempt that makes no progress (reads or writes "
                        "nothing) for this many seconds")
    p.add_argument("--task-memory", type=size_argument, default=None,
                   help="address-space cap of each task process, e.g. 2G (a task over it "
                        "fails with MemoryError; the tasktracker is unaffected)")
    p.add_argument("--shuffle-memory", type=_budget_argument, default=None,
                   help="fetched map outputs this worker keeps in RAM (a tmpfs directory "
                        "under /dev/shm) at once, over all its reduces; beyond it they go "
                        "to disk (default: 256M, or half the free space of /dev/shm if "
                        "less; 0: always disk)")
    add_logging_options(p)
    a = p.parse_args(argv)
    if a.slots < 1:
        p.error("--slots must be at least 1")
    try:
        jt = jobtracker_endpoint(a.jobtracker)
    except ValueError as e:
        p.error(str(e))
    # A burst of reducers connects at once: a short backlog means 1 s retries.
    listen = a.shuffle_listen or (
        f"tcp:{a.shuffle_port}:interface={a.shuffle_interface}:backlog=1024")
    workdir = os.path.abspath(a.workdir) if a.workdir else None
    return Config(jt, a.slots, listen, a.advertise_host, workdir,
                  a.secret_file, a.ready_file, a.heartbeat, a.task_timeout, a.task_memory,
                  a.shuffle_memory), a


def _budget_argument(text: str) -> int:
    """A size, or zero in any spelling (off)."""
    if re.fullmatch(r"\s*0*(\.0*)?\s*([KMGTP]i?B?|B)?\s*", text, re.IGNORECASE) and "0" in text:
        return 0
    return size_argument(text)


def main(argv: Sequence[str] | None = None) -> None:
    config, args = parse_args(sys.argv[1:] if argv is None else argv)
    locks: list[Any] = []  # held for the daemon's life

    async def start(reactor: Any) -> TaskTrackerService:
        secret = load_secret(config.secret_file)
        workdir = config.workdir
        if workdir is None:
            workdir, lock = claim_workdir(os.path.join(os.path.expanduser("~"), ".pytxmr",
                                                       "tasktracker"))
            locks.append(lock)
        svc = TaskTrackerService(reactor, replace(config, workdir=workdir), secret)
        await svc.start()
        registered = defer.Deferred.fromCoroutine(svc.registered())
        registered.addErrback(lambda f: None)
        return svc

    run_daemon(start, args, "tasktracker")


if __name__ == "__main__":
    main()
