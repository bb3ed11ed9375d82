"""A reduce attempt's shuffle: getting partition ``p`` of every map output
onto this worker, from its own store or from other workers' shuffle
servers, as soon as each map is announced (so the shuffle overlaps the
map phase).

Each try's run is placed in the shuffle memory when its length fits the
budget, else on disk; its frame checksums are checked before it is
accepted; a failed try is retried with backoff, then reported to the
jobtracker (enough reports and it re-runs the map elsewhere, announcing a
new location, which supersedes any fetch in progress).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, BinaryIO, Callable

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from .. import shuffle
from ..kvstore import KeyValueStore
from ..records import CorruptFrame, verify_segment
from ..shufflememory import ShuffleMemory
from ..wire import JobInit, MapLocation

FETCH_RETRIES = 4
#: After FETCH_RETRIES failed tries, seconds before trying again (by then
#: the jobtracker may have announced a new location).
FETCH_FAILED_PAUSE = 2.0

Run = tuple[str, int, int]  # path, offset, length


class ReduceFetch:
    """The runs of one reduce attempt: where each map's output is, the
    fetch of each, and the files they landed in."""

    log = Logger()

    def __init__(self, reactor: Any, attempt_id: str, job: JobInit, partition: int,
                 work_dir: str, *, memory: Callable[[], ShuffleMemory], store: KeyValueStore,
                 is_local: Callable[[MapLocation], bool],
                 report_failure: Callable[[str, MapLocation], None]) -> None:
        self._reactor = reactor
        self.attempt_id = attempt_id
        self.job = job
        self.partition = partition
        self.work_dir = work_dir
        self._memory = memory
        self._store = store
        self._is_local = is_local
        self._report_failure = report_failure
        self.cancelled = False
        #: map index -> (path, offset, length) once local
        self.runs: dict[int, Run] = {}
        self.kinds: set[str] = set()
        #: paths of run files in the shuffle memory (accepted or being
        #: fetched): released when the attempt ends
        self.in_memory: set[str] = set()
        self.locations: dict[int, MapLocation] = {}
        self.fetching: dict[int, defer.Deferred[None]] = {}
        #: map index -> the number of its latest fetch, the only one whose
        #: outcome counts (a newer location supersedes a fetch in progress)
        self.fetch_number: dict[int, int] = {}
        self._all_fetched: defer.Deferred[None] = defer.Deferred()
        if job.num_maps == 0:
            self._all_fetched.callback(None)

    async def all_fetched(self) -> list[Run]:
        """Every map's run, in map order, once all are local."""
        await self._all_fetched
        return [self.runs[i] for i in sorted(self.runs)]

    def bytes_in_memory(self) -> int:
        return sum(length for path, _, length in self.runs.values() if path in self.in_memory)

    def locate(self, loc: MapLocation) -> None:
        """A map's output is at ``loc``. A re-run map is announced again:
        its newest location wins, also over a fetch in progress from the old
        one (whose worker may be stopped: that fetch would wait for a timeout)."""
        self.locations[loc.index] = loc
        stale = self.fetching.pop(loc.index, None)
        self._start(loc.index)
        if stale is not None:
            self.log.info("Map {m} was run again: {aid} fetches it from {host}:{port}",
                          m=loc.index, aid=self.attempt_id, host=loc.host, port=loc.port)
            stale.cancel()

    def cancel(self) -> None:
        """The attempt ended: stop every fetch, give back the memory."""
        self.cancelled = True
        for d in self.fetching.values():
            d.cancel()
        if not self._all_fetched.called:
            self._all_fetched.cancel()
            # Nobody may wait on it any more: the cancel is no error.
            self._all_fetched.addErrback(lambda f: f.trap(defer.CancelledError))
        self.release()

    def release(self) -> None:
        """Give the shuffle memory of every run back (the reduce child is
        done with them, or the attempt ended)."""
        memory = self._memory()
        for path in self.in_memory:
            memory.release(path)
        self.in_memory.clear()

    def _start(self, index: int) -> None:
        if self.cancelled or index in self.runs or index in self.fetching:
            return
        loc = self.locations[index]
        number = self.fetch_number[index] = self.fetch_number.get(index, 0) + 1
        d = defer.Deferred.fromCoroutine(self._fetch(loc, number))
        if not d.called:
            self.fetching[index] = d
        d.addErrback(self._fetch_failed, loc, number)

    async def _fetch(self, loc: MapLocation, number: int) -> None:
        index = loc.index

        def superseded() -> bool:
            # Cancelling a fetch can surface as another error (a cancelled
            # name lookup is a DNSLookupError): its number tells for sure.
            return self.cancelled or self.fetch_number.get(index) != number

        name = f"run-{index:05d}-{number}.seg"
        run: Run
        if self._is_local(loc):
            run = await self._local_run(index, os.path.join(self.work_dir, name))
        else:
            delay = 0.2
            for tries in range(1, FETCH_RETRIES + 1):
                if superseded():
                    raise defer.CancelledError()
                try:
                    run = await self.fetch_once(loc, name)
                    break
                except (shuffle.ShuffleError, CorruptFrame) as e:
                    if tries == FETCH_RETRIES or superseded():
                        raise
                    self.log.info("Fetch of map {m} for {aid} failed ({e}); retrying",
                                  m=index, aid=self.attempt_id, e=e)
                    await task.deferLater(self._reactor, delay)
                    delay *= 2
        if superseded():
            self._discard(run[0])
            raise defer.CancelledError()
        self.fetching.pop(index, None)
        self.runs[index] = run
        self.kinds.update(loc.kinds)
        if len(self.runs) == self.job.num_maps and not self._all_fetched.called:
            self._all_fetched.callback(None)

    async def fetch_once(self, loc: MapLocation, name: str, memory: bool = True) -> Run:
        """One try at fetching a run: into the shuffle memory if its length
        (known from the reply header) fits the budget, else to the attempt's
        dir on disk. Whatever fails, its file is removed."""
        placed: list[str] = []
        try:
            with contextlib.ExitStack() as files:
                def open_dest(length: int) -> BinaryIO:
                    placed.append(self._place(name, length, memory))
                    return files.enter_context(open(placed[-1], "wb"))

                n = await shuffle.fetch(self._reactor, loc.host, loc.port, self.job.job_id,
                                        loc.index, self.partition, self.job.token, open_dest)
            self._memory().written(placed[0])
            # Corrupt data is never merged: check every frame's CRC (off the
            # reactor thread) before accepting the run.
            await threads.deferToThread(verify_segment, placed[0])
        except BaseException as e:
            in_memory = any(path in self.in_memory for path in placed)
            for path in placed:
                self._discard(path)
            # A tmpfs filled by others meanwhile, or a directory removed
            # under us: not worth failing the reduce over, the disk may do.
            if not (in_memory and isinstance(e, OSError)) or self.cancelled:
                raise
            self.log.warn("Cannot keep map {m}'s run for {aid} in memory ({e}); fetching "
                          "it to disk", m=loc.index, aid=self.attempt_id, e=e)
        else:
            return placed[0], 0, n
        return await self.fetch_once(loc, name, memory=False)

    def _place(self, name: str, length: int, memory: bool = True) -> str:
        path = None if self.cancelled or not memory else self._memory().place(
            f"{self.attempt_id}-{name}", length)
        if path is None:
            return os.path.join(self.work_dir, name)
        self.in_memory.add(path)
        return path

    def _discard(self, path: str) -> None:
        """Remove a run that will not be merged (a failed or superseded fetch).
        A path in memory is the budget's to remove: if the attempt's end
        released it already, the name may belong to a new reservation."""
        if path in self.in_memory:
            self.in_memory.discard(path)
            self._memory().release(path)
        elif os.path.dirname(path) == self.work_dir and os.path.lexists(path):
            os.unlink(path)

    async def _local_run(self, index: int, link: str) -> Run:
        """A map output of this very worker, as a run: checked like a
        fetched one, and hard-linked into the attempt's dir, so that a
        re-run of the map here (which replaces the store's file) cannot
        pull it from under the reduce."""
        try:
            source, offset, length = self._store.lookup(self.job.job_id, index, self.partition)
            try:
                os.link(source, link)
            except OSError:
                link = source  # a file system without hard links: read it in place
            await threads.deferToThread(verify_segment, link, offset, length)
        except (KeyError, OSError, CorruptFrame) as e:
            raise shuffle.ShuffleError(f"local output of map {index}: {e}") from None
        return link, offset, length

    def _fetch_failed(self, failure: Any, loc: MapLocation, number: int) -> None:
        """Our retries are spent: tell the jobtracker (enough such reports
        and it runs the map again, announcing a new location) and try
        again later with the newest location we know."""
        index = loc.index
        if self.cancelled or self.fetch_number.get(index) != number:
            return  # the attempt ended, or a newer location superseded this fetch
        self.fetching.pop(index, None)
        if not failure.check(shuffle.ShuffleError, CorruptFrame):
            # Writing the run failed here: not the map's fault, but ours.
            if not self._all_fetched.called:
                self._all_fetched.errback(failure)
            return
        self.log.warn("Cannot fetch map {m} for {aid} from {host}:{port}: {e}", m=index,
                      aid=self.attempt_id, host=loc.host, port=loc.port,
                      e=failure.getErrorMessage())
        self._report_failure(self.attempt_id, loc)
        self._reactor.callLater(FETCH_FAILED_PAUSE, self._start, index)
