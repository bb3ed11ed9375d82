"""A reduce attempt's shuffle: getting partition ``p`` of every map output
onto this worker, from its own store or from other workers' shuffle
servers, as soon as each map is announced (so the shuffle overlaps the
map phase).

``ReduceFetch`` (one per reduce attempt) runs a small state machine per
map on an injected clock (``State``: tries with backoff, a report to the
jobtracker and a pause once they are spent, a newer location superseding
either). The transfer is an injected ``Fetcher``: ``from_shuffle`` (another
worker's shuffle server) or ``from_store`` (this worker's own map outputs),
each checking every frame's CRC before the run is accepted. Where the bytes
land is the attempt's ``shufflememory.RunPlacement``'s to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .. import shuffle
from ..kvstore import KeyValueStore
from ..records import CorruptFrame, verify_segment
from ..shufflememory import Landing, RunPlacement
from ..wire import JobInit, MapLocation


@dataclass(frozen=True)
class FetchPolicy:
    """How hard a reduce tries to fetch one map's output before it tells
    the jobtracker (the tasktracker's ``--fetch-*`` options;
    docs/fault-tolerance.md).

    A connection to a stopped or cut-off worker fails after
    ``connect_timeout``, apart from ``timeout``, the longest silence of a
    connected server (a busy one may be slow): a round of ``retries`` tries
    to an unreachable worker then costs about ``retries * connect_timeout``
    plus the backoffs, seconds, not minutes.
    """

    connect_timeout: float = 5.0
    timeout: float = 60.0
    retries: int = 4
    #: Seconds before the second try of a round; doubled before each next one.
    first_backoff: float = 0.2
    #: After a round's failed tries, seconds before the next round (by then
    #: the jobtracker may have announced a new location).
    failed_pause: float = 2.0

    def __post_init__(self) -> None:
        if min(self.connect_timeout, self.timeout, self.first_backoff, self.failed_pause) <= 0 \
                or self.retries < 1:
            raise ValueError("fetch timeouts and pauses must be positive, retries at least 1")

#: A try that failed because of the map's worker or the network: worth
#: another. Any other error is our own (the disk we write to) and fails
#: the attempt, not the map.
RETRYABLE = (shuffle.ShuffleError, CorruptFrame)

Run = tuple[str, int, int]  # path, offset, length
#: One try at a map's run: from ``MapLocation`` into ``Landing``, its frames
#: checked. Returns the run; raises one of RETRYABLE, or anything else for a
#: failure of our own.
Fetcher = Callable[[MapLocation, Landing], Awaitable[Run]]

_T = TypeVar("_T")


class State(Enum):
    """Where one map's fetch is. The transitions, all in ``ReduceFetch``:

    =====================  ===========================  ==========================
    from                   on                           to
    =====================  ===========================  ==========================
    WAITING                a location                   FETCHING, try 1
    FETCHING               the run                      DONE
    FETCHING, try n        a retryable error            BACKING_OFF; after the
                                                        round's last try, PAUSED
                                                        (and reported); a round
                                                        after the first is one
                                                        try
    FETCHING               another error (our disk)     FAILED (so is the attempt)
    BACKING_OFF            0.2 s * 2**(n-1) later       FETCHING, try n+1
    PAUSED                 policy.failed_pause later    FETCHING, try 1, at the
                                                        newest location
    FETCHING, BACKING_OFF  a new location               FETCHING, try 1 there
    or PAUSED
    DONE or FAILED         a new location               (unchanged)
    any                    the location it has          (unchanged)
    any                    cancel                       CANCELLED
    =====================  ===========================  ==========================

    A local map output gets one try per round (the store has it or not).
    """

    WAITING = "waiting for a location"
    FETCHING = "fetching"
    BACKING_OFF = "backing off"
    PAUSED = "reported, pausing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class _Map:
    """One map's fetch: its state and what it waits on."""

    index: int
    loc: MapLocation
    state: State = State.WAITING
    #: Rounds started (one per location and per pause): names the run's
    #: file, as a superseded round's may still be in place.
    rounds: int = 0
    #: Tries of this round so far.
    tries: int = 0
    #: Whether its fetch from ``loc`` was reported as failed.
    reported: bool = False
    #: FETCHING: the try whose outcome counts (its location is ``loc``).
    in_flight: defer.Deferred[Run] | None = None
    #: BACKING_OFF, PAUSED: the next try.
    timer: IDelayedCall | None = None


class ReduceFetch:
    """The runs of one reduce attempt: where each map's output is, the
    fetch of each, and the files they landed in."""

    log = Logger()

    def __init__(self, clock: IReactorTime, attempt_id: str, num_maps: int,
                 placement: RunPlacement, *, fetch: Fetcher, fetch_local: Fetcher,
                 is_local: Callable[[MapLocation], bool],
                 report_failure: Callable[[str, MapLocation], None],
                 policy: FetchPolicy = FetchPolicy()) -> None:
        self._clock = clock
        self.policy = policy
        self.attempt_id = attempt_id
        self.num_maps = num_maps
        self.placement = placement
        self._fetch = fetch
        self._fetch_local = fetch_local
        self._is_local = is_local
        self._report_failure = report_failure
        self.cancelled = False
        self._maps: dict[int, _Map] = {}
        #: map index -> (path, offset, length) once local
        self.runs: dict[int, Run] = {}
        self.kinds: set[str] = set()
        self._all_fetched: defer.Deferred[None] = defer.Deferred()
        if num_maps == 0:
            self._all_fetched.callback(None)

    # --- what the worker sees -----------------------------------------------------

    async def all_fetched(self) -> list[Run]:
        """Every map's run, in map order, once all are local."""
        await self._all_fetched
        return [self.runs[i] for i in sorted(self.runs)]

    def bytes_in_memory(self) -> int:
        return sum(length for path, _, length in self.runs.values()
                   if self.placement.in_memory(path))

    def state(self, index: int) -> State:
        if self.cancelled:
            return State.CANCELLED
        m = self._maps.get(index)
        return State.WAITING if m is None else m.state

    def release(self) -> None:
        """Give the shuffle memory of every run back (the reduce child is
        done with them, or the attempt ended)."""
        self.placement.release()

    async def fetch_once(self, loc: MapLocation, name: str) -> Run:
        """One try at map ``loc.index``'s run, as the file ``name``: in the
        shuffle memory if its length (known from the reply header) fits the
        budget, else in the attempt's dir on disk. Whatever fails, its file
        is removed."""
        fetcher = self._fetch_local if self._is_local(loc) else self._fetch
        landing = self.placement.landing(name)
        try:
            return await fetcher(loc, landing)
        except BaseException as e:
            landing.discard()
            # A tmpfs filled by others meanwhile, or a directory removed
            # under us: not worth failing the reduce over, the disk may do.
            if not (landing.in_memory and isinstance(e, OSError)) or self.cancelled:
                raise
            self.log.warn("Cannot keep map {m}'s run for {aid} in memory ({e}); fetching "
                          "it to disk", m=loc.index, aid=self.attempt_id, e=e)
        landing = self.placement.landing(name, memory=False)
        try:
            return await fetcher(loc, landing)
        except BaseException:
            landing.discard()
            raise

    # --- the transitions --------------------------------------------------------------

    def locate(self, loc: MapLocation) -> None:
        """A map's output is at ``loc``. A re-run map is announced again:
        its newest location wins, also over a fetch in progress from the old
        one (whose worker may be stopped: that fetch would wait for a timeout)."""
        if self.cancelled:
            return
        known = self._maps.get(loc.index)
        if known is not None and known.loc == loc:
            # Announced again (to a reduce launched with it, by the batch
            # sent to every reduce): stopping the fetch would waste it.
            return
        m = self._maps.setdefault(loc.index, _Map(loc.index, loc))
        m.loc, m.reported = loc, False
        if m.state in (State.DONE, State.FAILED):
            return
        if m.state is not State.WAITING:
            self.log.info("Map {m} was run again: {aid} fetches it from {host}:{port}",
                          m=loc.index, aid=self.attempt_id, host=loc.host, port=loc.port)
            self._stop(m)
        self._new_round(m)

    def cancel(self) -> None:
        """The attempt ended: stop every fetch, give back the memory."""
        # First: a try that fails on being stopped must not fetch again to disk.
        self.cancelled = True
        for m in self._maps.values():
            self._stop(m)
            m.state = State.CANCELLED
        if not self._all_fetched.called:
            self._all_fetched.cancel()
            # Nobody may wait on it any more: the cancel is no error.
            self._all_fetched.addErrback(lambda f: f.trap(defer.CancelledError))
        self.placement.close()

    def _new_round(self, m: _Map) -> None:
        m.rounds += 1
        self._try(m, 1)

    def _try(self, m: _Map, tries: int) -> None:
        m.state, m.tries, m.timer = State.FETCHING, tries, None
        d = defer.Deferred.fromCoroutine(
            self.fetch_once(m.loc, f"run-{m.index:05d}-{m.rounds}.seg"))
        # Set before the outcome is looked at: a fake fetch may end at once.
        m.in_flight = d
        outcome = defer.Deferred.fromCoroutine(self._tried(m, d))
        outcome.addErrback(lambda f: self.log.failure("Fetch of map {m} crashed", f, m=m.index))

    async def _tried(self, m: _Map, d: defer.Deferred[Run]) -> None:
        try:
            run = await d
        except Exception as e:
            # Stopping a try can surface as another error (a cancelled name
            # lookup is a DNSLookupError): which try counts tells for sure.
            if m.in_flight is d:
                m.in_flight = None
                self._failed(m, e)
            return
        if m.in_flight is not d:
            self.placement.discard(run[0])  # superseded, or the attempt ended
            return
        m.in_flight, m.state = None, State.DONE
        self.runs[m.index] = run
        self.kinds.update(m.loc.kinds)
        if len(self.runs) == self.num_maps and not self._all_fetched.called:
            self._all_fetched.callback(None)

    def _failed(self, m: _Map, e: Exception) -> None:
        loc, tries = m.loc, m.tries
        if not isinstance(e, RETRYABLE):
            m.state = State.FAILED
            if not self._all_fetched.called:
                self._all_fetched.errback(e)
            return
        # A map output of this very worker is either in the store or not:
        # no use trying it again at once.
        policy = self.policy
        # After a round's report, one try per round: the jobtracker wants
        # more reports to act, and they should come seconds apart. A new
        # location (the map run again) gets its tries: one refusal there
        # was reported at once, and the map run yet again.
        if tries < (1 if self._is_local(loc) or m.reported else policy.retries):
            self.log.info("Fetch of map {m} for {aid} failed ({e}); retrying",
                          m=m.index, aid=self.attempt_id, e=e)
            m.state = State.BACKING_OFF
            m.timer = self._clock.callLater(policy.first_backoff * 2 ** (tries - 1),
                                            self._try, m, tries + 1)
            return
        self.log.warn("Cannot fetch map {m} for {aid} from {host}:{port}: {e}", m=m.index,
                      aid=self.attempt_id, host=loc.host, port=loc.port, e=e)
        # The state first: the report may bring a new location at once.
        m.state, m.reported = State.PAUSED, True
        m.timer = self._clock.callLater(policy.failed_pause, self._new_round, m)
        # Enough such reports and the jobtracker runs the map again,
        # announcing its new location.
        self._report_failure(self.attempt_id, loc)

    def _stop(self, m: _Map) -> None:
        """Whatever ``m`` waits on, it is not waited for any more."""
        timer, m.timer = m.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        # Forgotten before it is cancelled: its outcome, also one it
        # reaches on being cancelled, no longer counts.
        d, m.in_flight = m.in_flight, None
        if d is not None:
            d.cancel()


# --- the transfers ---------------------------------------------------------------------

def from_shuffle(reactor: Any, pool: shuffle.ShufflePool, job: JobInit,
                 partition: int) -> Fetcher:
    """Fetch a run from the shuffle server of the map's worker, over one of
    ``pool``'s connections.

    ``reactor`` provides IReactorThreads."""

    async def fetch(loc: MapLocation, landing: Landing) -> Run:
        with landing:
            n = await pool.fetch(loc.host, loc.port, job.job_id, loc.index, partition,
                                 job.token, landing)
        assert landing.path is not None  # a fetch that returns opened it
        # Corrupt data is never merged: check every frame's CRC before
        # accepting the run.
        await verified(reactor, landing.path, 0, n)
        return landing.path, 0, n

    return fetch


def from_store(reactor: Any, store_of: Callable[[str], KeyValueStore | None], job_id: str,
               partition: int) -> Fetcher:
    """A map output of this very worker (or of a neighbour in this process,
    ``store_of`` the map's worker's store), as a run: linked from the store
    and checked like a fetched one."""

    async def fetch(loc: MapLocation, landing: Landing) -> Run:
        try:
            store = store_of(loc.wid)
            if store is None:
                raise KeyError(f"worker {loc.wid}'s store is not in this process")
            source, offset, length = store.lookup(job_id, loc.index, partition)
            path = landing.link(source)
            await verified(reactor, path, offset, length)
        except (KeyError, OSError, CorruptFrame) as e:
            raise shuffle.ShuffleError(f"local output of map {loc.index}: {e}") from None
        return path, offset, length

    return fetch


#: Runs up to this size are checked on the reactor's thread: handing them
#: to a thread would cost more than the check (tiny maps' runs are tiny).
VERIFY_INLINE_BYTES = 64 * 1024


def verified(reactor: Any, path: str, offset: int, length: int) -> defer.Deferred[int]:
    """Check every frame's CRC of the run, off the reactor's thread unless small."""
    if length <= VERIFY_INLINE_BYTES:
        return defer.maybeDeferred(verify_segment, path, offset, length)
    return in_thread(reactor, verify_segment, path, offset, length)


def in_thread(reactor: Any, f: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
