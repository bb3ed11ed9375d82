"""The tasktracker's logic: the jobs it was given and their attempts.

``TaskTracker`` runs each attempt in a child process forked by the zygote
(at most ``slots`` at once), keeps finished map outputs in its
KeyValueStore, has a reduce attempt's runs fetched (``fetch``), commits
the part file the jobtracker allows, and reports through the
``ports.IJobTracker`` port. It knows nothing of PB (``pbadapter``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import output, shuffle, stepdata, storage
from ..bundle import CHUNK_BYTES, BundleError, BundleStore
from ..child import TaskChild, Zygote
from ..counters import FRAMEWORK
from ..kvstore import KeyValueStore, delete_paths
from ..outputrules import job_mark
from ..ports import IJobTracker
from ..services import at_most
from ..shufflememory import RunPlacement, ShuffleMemory
from ..sizes import free_space
from ..trees import remove_tree
from ..zygote import MAX_LOG_BYTES
from ..tasklog import read_tail
from ..wire import (COMMIT_DENIED, OUTPUT_TAKEN, AttemptResult, BadMessage, CallRefused,
                    JobInit, MapLocation, Split, TaskError, Unreachable, job_of, sendable)
from .fetch import FetchPolicy, ReduceFetch, from_shuffle, from_store, in_thread

if TYPE_CHECKING:
    from ..tls import ClusterTLS

#: The job module's source, in the job's work dir (attempts' dirs beside it).
SOURCE = "job.py"

#: A running map's progress once its split is read: its last spill (a sort's
#: map spends a third of its time sorting and writing it after its last
#: read) and its commit are the rest, as in Hadoop's map and sort phases.
#: Without it a job showed "map 100% (0/2)" for that third.
MAP_READ_SHARE = 2 / 3
#: A reduce's progress by its maps fetched, then by its runs read; the rest
#: is its last records and its output's commit (an upload, to a store).
REDUCE_FETCH_SHARE = 0.5
REDUCE_READ_SHARE = 0.45


@dataclass
class Attempt:
    """A task attempt on this worker, from launch to report."""

    id: str
    job: JobInit
    kind: str
    index: int
    work_dir: str
    child: TaskChild | None = None
    killed: bool = False
    #: a reduce attempt's fetches of its runs
    fetch: ReduceFetch | None = field(default=None, repr=False)
    #: Bytes its process will read: its split's, or a reduce's fetched runs.
    size: int = 0

    def progress(self) -> float:
        """From 0 to 1, for the progress bar, and under 1 until the attempt
        ends: a map by the bytes of its split read, up to MAP_READ_SHARE;
        a reduce half by the maps fetched, then by its runs read, up to
        REDUCE_READ_SHARE more."""
        child = self.child
        read = min(1.0, child.bytes_read() / self.size) if child is not None and self.size \
            else 0.0
        if self.kind == "map":
            return MAP_READ_SHARE * read
        fetch = self.fetch
        fetched = len(fetch.runs) / fetch.num_maps if fetch is not None and fetch.num_maps else 1.0
        return min(1.0, REDUCE_FETCH_SHARE * fetched + REDUCE_READ_SHARE * read)


def _job_spec(attempt: Attempt, bundle_dir: str | None) -> dict[str, Any]:
    job = attempt.job
    return {"source_path": os.path.join(os.path.dirname(attempt.work_dir), SOURCE),
            "filename": job.filename, "map_name": job.map_name, "reduce_name": job.reduce_name,
            "storage_options": dict(job.storage_options), "args": dict(job.args),
            "step": job.step, "bundle_dir": bundle_dir}


class Awaited:
    """A result that many may wait for (one bundle fetch, every attempt of
    the jobs that need it), and that fails each of them alike."""

    def __init__(self, d: defer.Deferred[Any]) -> None:
        self._done = False
        self._result: Any = None
        self._waiters: list[defer.Deferred[Any]] = []
        d.addBoth(self._fire)

    def _fire(self, result: Any) -> None:
        self._done, self._result = True, result
        for waiter in self._waiters:
            waiter.callback(result)  # a Failure errbacks it
        self._waiters = []

    def wait(self) -> defer.Deferred[Any]:
        waiter: defer.Deferred[Any] = defer.Deferred()
        if self._done:
            waiter.callback(self._result)
        else:
            self._waiters.append(waiter)
        return waiter


#: What a task's log (bounded: ``MAX_LOG_BYTES``) and result may take in
#: the tmpfs, with room to spare.
SCRATCH_ROOM = 4 * MAX_LOG_BYTES


def _tell(word: Coroutine[Any, Any, None]) -> None:
    """A word to the jobtracker that may go unheard: it is gone, or from
    before the call."""
    defer.Deferred.fromCoroutine(word).addErrback(lambda f: f.trap(Exception))


def _failed(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message, "traceback": ""}}


class TaskTracker:
    """The worker's jobs and attempts; what the jobtracker can ask of it."""

    log = Logger()

    def __init__(self, reactor: IReactorProcess, clock: IReactorTime, workdir: str, slots: int,
                 *, zygote: Zygote, task_timeout: float | None = None,
                 task_memory: int | None = None,
                 fetch_policy: FetchPolicy = FetchPolicy(),
                 tls: ClusterTLS | None = None) -> None:
        self._reactor = reactor
        self._clock = clock
        self.workdir = workdir
        self.slots = slots
        self.task_timeout = task_timeout
        self.task_memory = task_memory
        self.fetch_policy = fetch_policy
        #: Our certificate for other workers' shuffle servers (None: no TLS).
        self.tls = tls
        #: Kept-alive connections to other workers' shuffle servers.
        self.shuffle_pool = shuffle.ShufflePool(reactor, fetch_policy.timeout,
                                                fetch_policy.connect_timeout, tls)
        self.store = KeyValueStore(os.path.join(workdir, "store"))
        self.bundles = BundleStore(os.path.join(workdir, "bundles"))
        #: Per job with a bundle: its unpacked directory, once fetched.
        self._bundle_dirs: dict[str, Awaited] = {}
        #: Bundles being fetched (one fetch however many jobs need one).
        self._fetching: dict[str, Awaited] = {}
        #: Disabled until the service found a usable tmpfs directory.
        self.memory = ShuffleMemory(None, 0)
        self.processes = defer.DeferredSemaphore(slots)
        self.zygote = zygote
        self.jobs: dict[str, JobInit] = {}
        self.attempts: dict[str, Attempt] = {}
        self.wid: str | None = None
        #: The store of another worker of this very process by its worker id
        #: (``run``'s cluster; None for any other): its map outputs are
        #: linked from there, as our own are, not sent through its shuffle
        #: server and back through this same process.
        self.neighbour_store: Callable[[str], KeyValueStore | None] = lambda wid: None
        #: The jobtracker while we are registered with it.
        self.jobtracker: IJobTracker | None = None
        #: Launches received since we registered, sent with each heartbeat.
        self.launches = 0
        #: How many times we registered: a registration's identity (a
        #: restarted jobtracker gives the same worker ids again).
        self.registrations = 0
        #: Each attempt's coroutine until it ends (a killed one's too).
        self._running: dict[str, defer.Deferred[Any]] = {}
        #: Per job: map index -> the attempt whose output we hold, as reported
        #: done to the jobtracker (a restarted one takes them back).
        self.held: dict[str, dict[int, str]] = {}
        #: Drops the outputs kept after losing the jobtracker, if it does
        #: not come back in time.
        self._keep_timer: Any = None
        #: Per job whose setting up failed here: why (its attempts say it).
        self._not_set_up: dict[str, str] = {}
        #: Attempts that ask to commit or write their part (told with each
        #: heartbeat: the jobtracker's wait for the others ends).
        self.committing: set[str] = set()
        #: Killed attempts whose commit ended with no jobtracker to tell:
        #: told to the next one we register with (it may be waiting for
        #: them to clean their job's output).
        self._untold_commits: set[str] = set()

    def progress(self) -> dict[str, float]:
        """How far each live attempt is (sent with the heartbeat)."""
        return {aid: round(a.progress(), 3) for aid, a in self.attempts.items()}

    def registered(self, wid: str, jobtracker: IJobTracker) -> None:
        self.wid = wid
        self.jobtracker = jobtracker
        self.launches = 0
        self.registrations += 1
        if self._keep_timer is not None and self._keep_timer.active():
            self._keep_timer.cancel()  # it decides about them now (destroy_job)
        self._keep_timer = None
        for aid in sorted(self._untold_commits):
            _tell(jobtracker.commit_ended(aid))
        self._untold_commits.clear()

    def running_log(self, attempt_id: str) -> str | None:
        """What a running attempt has printed so far (its log's tail; ""
        before its process started); None for one that does not run here."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None:
            return None
        return read_tail(attempt.child.log_path) if attempt.child is not None else ""

    def held_outputs(self) -> tuple[tuple[str, int, str], ...]:
        """What to tell a jobtracker at registration (``Registration.held``)."""
        return tuple((job_id, index, aid) for job_id, maps in sorted(self.held.items())
                     for index, aid in sorted(maps.items()))

    # --- what the jobtracker asks ---------------------------------------------

    def init_job(self, init: JobInit) -> None:
        try:
            work_dir = self.store.add_job(init.job_id, init.token)
            with open(os.path.join(work_dir, SOURCE), "w", encoding="utf-8") as f:
                f.write(init.source)
        except OSError as e:  # its attempts here fail as they come (_new_attempt)
            self.log.error("Cannot set up job {job} here: {e}", job=init.job_id, e=e)
            try:
                delete_paths(self.store.remove_job(init.job_id))
            except OSError as left:
                self.log.error("{left}", left=left)
            self._not_set_up[init.job_id] = str(e)
            return
        self.jobs[init.job_id] = init
        if init.bundle is not None:
            self.bundles.use(init.bundle, init.job_id)
            self._bundle_dirs[init.job_id] = self._bundle(init.bundle)

    def _bundle(self, sha256: str) -> Awaited:
        """The unpacked directory of a bundle, fetched from the jobtracker
        unless it is here already; one fetch for every job that needs it."""
        fetching = self._fetching.get(sha256)
        if fetching is None:
            d = defer.Deferred.fromCoroutine(self._fetch_bundle(sha256))
            fetching = self._fetching[sha256] = Awaited(d)
            d.addBoth(lambda _: self._fetching.pop(sha256, None))
        return fetching

    async def _fetch_bundle(self, sha256: str) -> str:
        if not self.bundles.has(sha256):
            jobtracker = self.jobtracker
            if jobtracker is None:
                raise BundleError("no jobtracker to fetch the job's bundle from")
            offset = 0
            upload = "fetch"
            while True:
                data = await jobtracker.bundle_chunk(sha256, offset)
                # Sizes are not sent: a short chunk (maybe empty) is the last.
                final = len(data) < CHUNK_BYTES
                await in_thread(self._reactor, self.bundles.receive, sha256, offset, data,
                                upload, final)
                offset += len(data)
                if final:
                    break
        return await in_thread(self._reactor, self.bundles.unpacked, sha256)

    def launch_map(self, job_id: str, attempt_id: str, split: Split) -> None:
        attempt = self._new_attempt(job_id, attempt_id, "map", split.index)
        if attempt is None:
            return
        attempt.size = split.length
        job = attempt.job
        spec = {"kind": "map", "split": split.to_wire(), "num_partitions": job.num_reducers,
                "buffer_records": job.buffer_records, "compress": job.compress}
        try:
            if job.num_reducers:
                spec["data_path"] = self._data_path(attempt)
            else:  # map-only: the map writes a part file
                spec["output_path"] = output.attempt_path(job.output, attempt.id,
                                                          attempt.index, attempt.work_dir)
                spec["output_format"] = job.output_format
        except Exception as e:
            self._abandon(attempt, e)
            return
        self._spawn(attempt, self._run_map(attempt, spec))

    def launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                      locations: Sequence[MapLocation]) -> None:
        attempt = self._new_attempt(job_id, attempt_id, "reduce", partition)
        if attempt is None:
            return
        job = attempt.job
        try:
            attempt.fetch = ReduceFetch(
                self._clock, attempt.id, job.num_maps,
                RunPlacement(lambda: self.memory, attempt.work_dir, attempt.id),
                fetch=from_shuffle(self._reactor, self.shuffle_pool, job, partition),
                fetch_local=from_store(self._reactor, self.store_of, job_id, partition),
                is_local=lambda loc: self.store_of(loc.wid) is not None,
                report_failure=self._fetch_failed,
                policy=self.fetch_policy)
        except Exception as e:
            self._abandon(attempt, e)
            return
        self._spawn(attempt, self._run_reduce(attempt))
        self.map_outputs(job_id, locations)

    def store_of(self, wid: str) -> KeyValueStore | None:
        """The store holding worker ``wid``'s map outputs, if it is ours or
        a neighbour's in this process."""
        return self.store if wid == self.wid else self.neighbour_store(wid)

    def map_outputs(self, job_id: str, locations: Sequence[MapLocation]) -> None:
        for attempt in list(self.attempts.values()):
            if attempt.fetch is not None and attempt.job.job_id == job_id and not attempt.killed:
                for loc in locations:
                    attempt.fetch.locate(loc)

    def _fetch_failed(self, attempt_id: str, loc: MapLocation) -> None:
        if self.jobtracker is not None:
            d = defer.Deferred.fromCoroutine(
                self.jobtracker.fetch_failed(attempt_id, loc.index, loc.attempt_id))
            d.addErrback(lambda f: f.trap(Unreachable))

    def kill_attempt(self, job_id: str, attempt_id: str) -> None:
        attempt = self.attempts.pop(attempt_id, None)
        if attempt is not None:
            self._kill(attempt, "killed by the jobtracker")

    def destroy_job(self, job_id: str) -> None:
        for attempt in [a for a in self.attempts.values() if a.job.job_id == job_id]:
            del self.attempts[attempt.id]
            self._kill(attempt, "the job ended")
        self.jobs.pop(job_id, None)
        self._not_set_up.pop(job_id, None)
        self.held.pop(job_id, None)
        self.zygote.retire(job_id)
        d = in_thread(self._reactor, delete_paths, self.store.remove_job(job_id))
        d.addErrback(lambda f: self.log.failure("Deleting job {job}'s files failed", f, job=job_id))
        self._bundle_dirs.pop(job_id, None)
        self.bundles.release(job_id)

    def forget_everything(self, keep_outputs: float = 0.0) -> None:
        """Lost contact with the jobtracker: it reschedules our work, so end
        every attempt and drop every job (we come back as a new incarnation)
        but, for ``keep_outputs`` seconds, the completed map outputs: a
        jobtracker that restarted resumes its jobs with them."""
        self.jobtracker = None
        for attempt in list(self.attempts.values()):
            del self.attempts[attempt.id]
            self._kill(attempt, "lost the jobtracker")
        for job_id in list(self.jobs):
            if not (keep_outputs and self.held.get(job_id)):
                self.destroy_job(job_id)
        self.wid = None
        if self.held and self._keep_timer is None:
            self._keep_timer = self._clock.callLater(keep_outputs, self._drop_kept)

    def kept_until(self) -> float | None:
        """When the map outputs kept for a restarted jobtracker are dropped;
        None when none are kept (or a jobtracker took them back)."""
        if self.jobtracker is None and self.held and self._keep_timer is not None:
            return float(self._keep_timer.getTime())
        return None

    def _drop_kept(self) -> None:
        self._keep_timer = None
        if self.jobtracker is None and self.held:
            self.log.info("No jobtracker took back our {n} kept map outputs: dropped",
                          n=sum(len(m) for m in self.held.values()))
            for job_id in list(self.jobs):
                self.destroy_job(job_id)

    # --- attempts ----------------------------------------------------------------

    def _new_attempt(self, job_id: str, attempt_id: str, kind: str,
                     index: int) -> Attempt | None:
        """The attempt, set up to run; None if it cannot be (reported
        failed, to run elsewhere: it held its slot for ever, its job hung)."""
        job = self.jobs.get(job_id)
        if job is None:  # its init_job failed here (a full disk)
            why = self._not_set_up.get(job_id, "it is not known here")
            self._cannot_launch(attempt_id, f"the job could not be set up on this tasktracker "
                                            f"({why})")
            return None
        work_dir = os.path.join(self.store.job_dir(job_id), attempt_id)
        if kind == "reduce":  # its fetched runs may land there; a map's
            try:  # child makes its own
                os.makedirs(work_dir, exist_ok=True)
            except OSError as e:
                self._cannot_launch(attempt_id, f"cannot make its directory: {e}")
                return None
        attempt = Attempt(attempt_id, job, kind, index, work_dir)
        self.attempts[attempt_id] = attempt
        return attempt

    def _abandon(self, attempt: Attempt, e: Exception) -> None:
        """Setting up the attempt failed (a fault of ours): it fails, to run
        elsewhere. It stayed live here, with nothing running it."""
        self.log.failure("Attempt {attempt} cannot be set up", attempt=attempt.id)
        del self.attempts[attempt.id]
        self._cannot_launch(attempt.id, f"{type(e).__name__}: {e}")

    def _cannot_launch(self, attempt_id: str, why: str) -> None:
        self.log.warn("Attempt {attempt} cannot start: {why}", attempt=attempt_id, why=why)
        jobtracker = self.jobtracker
        if jobtracker is not None:
            error = TaskError("LaunchFailed", f"the attempt cannot start on this "
                                              f"tasktracker: {why}")
            d = defer.Deferred.fromCoroutine(jobtracker.attempt_failed(attempt_id, error))
            d.addErrback(lambda f: f.trap(Unreachable))

    def _spawn(self, attempt: Attempt, coro: Coroutine[Any, Any, None]) -> None:
        d = defer.Deferred.fromCoroutine(coro)
        d.addErrback(self._crashed, attempt)
        self._running[attempt.id] = d

        def ended(result: object) -> object:
            self._running.pop(attempt.id, None)
            if attempt.killed:
                self._discard(attempt)
            return result

        d.addBoth(ended)

    def _discard(self, attempt: Attempt) -> None:
        """What a killed attempt left (its child ended): its directory, a
        reduce's fetched runs and merges in it, and a map's output file.
        They stayed until the job's end: a backup that lost, or a reduce
        killed with its fetches, kept a copy of its partition on disk."""
        paths = [attempt.work_dir]
        if attempt.kind == "map":
            paths.append(self._data_path(attempt))
        unfinished = self._unfinished_part(attempt)

        def discard() -> None:
            try:
                delete_paths(paths)
            finally:  # what could go went; the part of a local output all the same
                if unfinished is not None:
                    unfinished()

        d = in_thread(self._reactor, discard)
        d.addErrback(lambda f: self.log.failure("Deleting attempt {attempt}'s files failed", f,
                                                attempt=attempt.id))

    def _unfinished_part(self, attempt: Attempt) -> Callable[[], None] | None:
        """What removes the part an attempt that did not commit began beside
        a local output: begun as its job ended, after the end had removed
        ``_temporary``, it made that again (a tester's failed jobs kept
        ``_temporary/ATTEMPT/part-NNNNN``). Once the job has ended here,
        what it left of ``_temporary`` goes too."""
        job = attempt.job
        if storage.is_remote(job.output) or (attempt.kind == "map" and job.num_reducers):
            return None
        # Its job ended: the jobtracker said so (not lost: a restarted one
        # may resume it, whose attempts make _temporary again).
        top = (stepdata.job_output(job.output, job.output_format)
               if job.job_id not in self.jobs and self.jobtracker is not None else None)
        return functools.partial(output.discard_attempt, job.output, attempt.id, top)

    def settled(self, timeout: float) -> defer.Deferred[None]:
        """Fires once every attempt's coroutine has ended (a killed one's
        sends its output), or after ``timeout`` seconds."""
        if not self._running:
            return defer.succeed(None)
        return at_most(defer.DeferredList(list(self._running.values()), consumeErrors=True),
                       timeout, self._clock)

    def _crashed(self, failure: Failure, attempt: Attempt) -> defer.Deferred[None]:
        """A fault of ours while running the attempt: it fails, to run
        again. It stayed live here, its slot taken for ever, and its job
        waited for it (heartbeats named it live)."""
        self.log.failure("Attempt {attempt} crashed", failure, attempt=attempt.id)
        self._kill(attempt, "the tasktracker failed to run it")
        d = defer.Deferred.fromCoroutine(self._report(attempt, _failed(
            "TaskTrackerError", f"the tasktracker failed to run the attempt: "
                                f"{failure.type.__name__}: {failure.getErrorMessage()}")))
        return d.addErrback(lambda f: self.log.failure("Attempt {attempt}'s failure was not "
                                                       "reported", f, attempt=attempt.id))

    def _kill(self, attempt: Attempt, why: str) -> None:
        attempt.killed = True
        if attempt.child is not None:
            attempt.child.kill(why)
        if attempt.fetch is not None:
            # Now, not when the attempt's coroutine ends: it may wait long
            # for a process slot. A child still reading a run keeps its
            # pages until it dies.
            attempt.fetch.cancel()

    async def _run_child(self, attempt: Attempt, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Run the attempt's child when a process slot is free (and its
        job's bundle is here); None if the attempt was killed meanwhile."""
        bundle_dir = None
        ready = self._bundle_dirs.get(attempt.job.job_id)
        if ready is not None:
            try:
                bundle_dir = await ready.wait()
            except (BundleError, Unreachable, OSError) as e:
                return None if attempt.killed else _failed(
                    "BundleError", f"cannot fetch the job's shipped code and files: {e}")
        spec["job"] = _job_spec(attempt, bundle_dir)
        await self.processes.acquire()
        try:
            if attempt.killed:
                return None
            spec["memory_limit"] = self.task_memory
            attempt.child = TaskChild(self._reactor, self.zygote, spec, attempt.work_dir,
                                      stall_timeout=self.task_timeout,
                                      scratch=self._scratch(attempt.id),
                                      # A job's tasks may share processes: tiny maps
                                      # by the thousand, and a reduce after a map
                                      # spares a fork and its copied pages.
                                      reuse=attempt.job.job_id)
            result = await attempt.child.result
        finally:
            self.processes.release()
        if attempt.killed:
            self._send_killed_log(attempt, attempt.child.log)
            return None
        return result

    def _send_killed_log(self, attempt: Attempt, log: str) -> None:
        """What a killed attempt printed (a backup that lost, a hung task
        killed with its job): it went with no result, and was lost."""
        if self.jobtracker is not None and log:
            _tell(self.jobtracker.killed_log(attempt.id, log))

    def _scratch(self, attempt_id: str) -> tuple[str, str] | None:
        """Where a task's log and result go: the worker's tmpfs directory when
        it has one (file creation and deletion there cost microseconds, on a
        busy disk milliseconds: thousands of tiny tasks feel it), else the
        attempt's dir. Both are read and deleted when the task ends. Not a
        tmpfs that others filled since (a small /dev/shm): every task of the
        worker failed, "no room for its log and result"."""
        directory = self.memory.directory
        if not directory or not os.path.isdir(directory):
            return None
        try:
            if free_space(directory) < SCRATCH_ROOM:
                return None
        except OSError:
            return None
        return directory, attempt_id

    async def _run_map(self, attempt: Attempt, spec: dict[str, Any]) -> None:
        result = await self._run_child(attempt, spec)
        if result is None:
            return
        if result.get("ok") and not attempt.job.num_reducers:
            result = await self._commit(attempt, result)
        elif result.get("ok"):
            try:
                self.store.add_map_output(attempt.job.job_id, attempt.index,
                                          result["data_path"], result["table"],
                                          packed=os.path.basename(result["data_path"])
                                          != os.path.basename(self._data_path(attempt)))
            except (OSError, ValueError, KeyError) as e:
                result = _failed(type(e).__name__, str(e))
        await self._report(attempt, result)

    async def _run_reduce(self, attempt: Attempt) -> None:
        assert attempt.fetch is not None
        try:
            await self._reduce(attempt, attempt.fetch)
        finally:
            attempt.fetch.release()  # however the attempt ended

    async def _reduce(self, attempt: Attempt, fetch: ReduceFetch) -> None:
        try:
            runs = await fetch.all_fetched()
        except defer.CancelledError:
            return
        except Exception as e:  # our own disk, not a map's worker
            self._kill(attempt, "a fetch failed")
            await self._report(attempt, _failed(type(e).__name__,
                                                f"cannot store a fetched map output: {e}"))
            return
        if attempt.killed:
            return
        job = attempt.job
        shuffled = attempt.size = sum(length for _, _, length in runs)
        in_memory = fetch.bytes_in_memory()
        spec = {"kind": "reduce", "output_format": job.output_format, "compress": job.compress,
                "runs": runs, "kinds": sorted(fetch.kinds),
                "output_path": output.attempt_path(job.output, attempt.id, attempt.index,
                                                   attempt.work_dir),
                "tmp_dir": attempt.work_dir}
        result = await self._run_child(attempt, spec)
        fetch.release()  # the child is done with them
        if result is None:
            return
        if result.get("ok"):
            framework = result.setdefault("counters", {}).setdefault(FRAMEWORK, {})
            framework["shuffle bytes"] = shuffled
            framework["shuffle bytes in memory"] = in_memory
            framework["shuffle bytes on disk"] = shuffled - in_memory
            result = await self._commit(attempt, result)
        await self._report(attempt, result)

    async def _commit(self, attempt: Attempt, result: dict[str, Any]) -> dict[str, Any]:
        """Move the part file into place if the jobtracker says this attempt
        is the one that commits."""
        if self.jobtracker is None:
            return _failed("Disconnected", "lost the jobtracker before commit")
        jobtracker = self.jobtracker
        # From the question on: a heartbeat sent as it travels, without it,
        # would end the jobtracker's wait for a commit it just allowed.
        self.committing.add(attempt.id)
        try:
            allowed = await jobtracker.may_commit(attempt.id)
        except Unreachable as e:
            # E.g. UnknownWorker: we were declared lost meanwhile, and this
            # attempt with us; the jobtracker ignores whatever it reports.
            self.committing.discard(attempt.id)
            return _failed("Disconnected", f"cannot ask to commit: {e}")
        if not allowed:
            self.committing.discard(attempt.id)
            return _failed(COMMIT_DENIED, "another attempt committed first")
        try:
            return await self._commit_allowed(attempt, result)
        finally:
            self.committing.discard(attempt.id)
            if attempt.killed:
                # Its job ended as it committed (or asked to), or we lost
                # the jobtracker: the job's cleaning waits for this word
                # (its report goes nowhere), in a restarted jobtracker too.
                if self.jobtracker is not None:
                    _tell(self.jobtracker.commit_ended(attempt.id))
                else:
                    self._untold_commits.add(attempt.id)

    async def _commit_allowed(self, attempt: Attempt, result: dict[str, Any]
                              ) -> dict[str, Any]:
        if attempt.killed:
            return _failed(COMMIT_DENIED, "killed while it asked to commit")
        job = attempt.job
        marked = (stepdata.job_output(job.output, job.output_format),
                  job_mark(job_of(job.job_id), job.token))
        commit = functools.partial(output.commit_part, job.output, attempt.id, attempt.index,
                                   attempt.work_dir, job.storage_options, marked)
        registration = self.registrations
        try:
            if storage.is_remote(job.output):  # an upload: off the reactor
                await in_thread(self._reactor, commit)
                if (attempt.killed and job.job_id not in self.jobs and self.jobtracker is not None
                        and self.registrations == registration):
                    # The job ended (killed, failed) as it uploaded: its
                    # abort did not see this part (the jobtracker's, when
                    # lost, may resume the job: it commits the part again).
                    await in_thread(self._reactor, output.withdraw_part, job.output,
                                    attempt.index, job.storage_options, marked)
            else:
                commit()
        except output.OutputTaken as e:
            return _failed(OUTPUT_TAKEN, f"cannot commit the part file: {e}")
        except (OSError, ValueError) as e:
            return _failed("CommitFailed", f"cannot commit the part file: {e}")
        return result

    async def _report(self, attempt: Attempt, result: dict[str, Any]) -> None:
        jobtracker = self.jobtracker
        if self.attempts.pop(attempt.id, None) is None or jobtracker is None:
            return  # killed, or the jobtracker is gone (it reschedules)
        # The tail of the user's prints goes with the report: the status
        # page and `pytxmr logs` show it.
        log = attempt.child.log if attempt.child is not None else ""
        done = None
        if result.get("ok"):
            try:
                done = AttemptResult.from_wire({"counters": result.get("counters", {}),
                                                "kinds": list(result.get("kinds", ())),
                                                "log": log})
            except BadMessage as e:
                result = _failed("CounterError", str(e))
        try:
            if done is not None:
                await jobtracker.attempt_done(attempt.id, done)
                if attempt.kind == "map" and attempt.job.num_reducers:
                    self.held.setdefault(attempt.job.job_id, {})[attempt.index] = attempt.id
            else:
                error = TaskError.from_wire({**result.get("error", {}), "log": log})
                await jobtracker.attempt_failed(attempt.id, error)
        except CallRefused as e:
            # A failure refused: we are unknown there (declared lost). A
            # result refused (malformed) fails with the reason, where the
            # heartbeats would fail it as never received.
            if done is not None:
                done = None
                await self._report_unsent(attempt, jobtracker,
                                          f"the jobtracker refused it: {sendable(str(e), 1000)}")
        except Unreachable:
            pass  # disconnected: the jobtracker reschedules
        except Exception as e:
            # A report the wire cannot carry must still end the attempt, or
            # its job waits for it for ever, holding its slot.
            done = None
            await self._report_unsent(attempt, jobtracker,
                                      f"{type(e).__name__}: {sendable(str(e), 1000)}")
        if attempt.kind == "reduce" or done is None or not attempt.job.num_reducers:
            remove_tree(attempt.work_dir, ignore_errors=True)
        unfinished = self._unfinished_part(attempt) if done is None else None
        if unfinished is not None:
            unfinished()
        if attempt.kind == "map" and attempt.job.num_reducers and done is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._data_path(attempt))

    async def _report_unsent(self, attempt: Attempt, jobtracker: IJobTracker, why: str) -> None:
        self.log.warn("Attempt {attempt}'s report cannot be sent ({why}): reported as "
                      "failed", attempt=attempt.id, why=why)
        with contextlib.suppress(Unreachable):
            await jobtracker.attempt_failed(attempt.id, TaskError(
                "ReportError", f"the attempt's report cannot be sent to the jobtracker: {why}"))

    def _data_path(self, attempt: Attempt) -> str:
        """A map's output file, unless it goes to its process's pack."""
        return os.path.join(os.path.dirname(attempt.work_dir), attempt.id + ".data")
