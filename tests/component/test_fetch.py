"""The reduce-side fetch's state machine (``tasktracker.fetch.ReduceFetch``)
on a ``Clock`` advanced by hand, with fake fetchers that the test ends as
it likes: no sockets, no processes. The runs land in a real budget
(``ShuffleMemory`` on a temporary directory), so that every test also
checks that nothing is left behind. The real transfers, against a real
shuffle server, are in test_tasktracker_memory.py."""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from pytxmr.records import CorruptFrame
from pytxmr.shuffle import ShuffleError
from pytxmr.shufflememory import Landing, RunPlacement, ShuffleMemory
from pytxmr.tasktracker.fetch import FetchPolicy, ReduceFetch, Run, State
from pytxmr.wire import MapLocation

FETCH_RETRIES = FetchPolicy().retries
FETCH_FAILED_PAUSE = FetchPolicy().failed_pause

ATTEMPT = "job_1_r00000_0"
#: This worker: a location there is a map output of our own store.
HERE = "w0"


def loc(index: int, host: str = "h1", wid: str = "w1", kinds: tuple[str, ...] = ("str",)
        ) -> MapLocation:
    return MapLocation(index, wid, host, 7000, kinds, f"m{index}@{host}")


@dataclass
class Try:
    """One call of a fake fetcher, ended by the test."""

    loc: MapLocation
    landing: Landing
    at: float
    d: defer.Deferred[Run]

    def land(self, data: bytes = b"run") -> str:
        """Write ``data`` as the transport does once a reply header gave its length."""
        with self.landing:
            self.landing(len(data)).write(data)
        assert self.landing.path is not None
        return self.landing.path

    def succeed(self, data: bytes = b"run") -> Run:
        run = (self.land(data), 0, len(data))
        self.d.callback(run)
        return run

    def fail(self, error: BaseException) -> None:
        self.d.errback(Failure(error))


class FakeFetcher:
    """Records each try; its outcome is the test's to decide. ``stubborn``
    tries finish although they were cancelled (a check already running in
    a thread does), and land the run then; ``cancelled_with`` is the error
    a cancelled try fails with (CancelledError by default)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tries: list[Try] = []
        self.stubborn = False
        self.cancelled_with: BaseException | None = None

    def __call__(self, location: MapLocation, landing: Landing) -> defer.Deferred[Run]:
        error = self.cancelled_with
        d: defer.Deferred[Run] = defer.Deferred(
            None if error is None else lambda d: d.errback(Failure(error)))
        t = Try(location, landing, self.clock.seconds(), d)
        self.tries.append(t)
        if not self.stubborn:
            return t.d
        return defer.Deferred.fromCoroutine(self._stubborn(t))

    async def _stubborn(self, t: Try) -> Run:
        try:
            return await t.d
        except defer.CancelledError:
            return t.land(), 0, 3

    @property
    def last(self) -> Try:
        return self.tries[-1]


class Harness:
    """A reduce attempt's fetch, its clock, fakes and budget."""

    def __init__(self, base: Path, budget: int = 1 << 20) -> None:
        self.clock = Clock()
        self.shm = base / "shm"
        self.work_dir = base / "attempt"
        self.shm.mkdir()
        self.work_dir.mkdir()
        self.memory = ShuffleMemory(str(self.shm), budget)
        self.remote = FakeFetcher(self.clock)
        self.local = FakeFetcher(self.clock)
        self.reports: list[tuple[str, MapLocation]] = []
        #: What the jobtracker does on a report, beyond recording it.
        self.on_report: Callable[[MapLocation], None] = lambda location: None

    def fetch(self, num_maps: int = 1) -> ReduceFetch:
        return ReduceFetch(
            self.clock, ATTEMPT, num_maps,
            RunPlacement(lambda: self.memory, str(self.work_dir), ATTEMPT),
            fetch=self.remote, fetch_local=self.local, is_local=lambda loc: loc.wid == HERE,
            report_failure=self._report)

    def _report(self, attempt_id: str, location: MapLocation) -> None:
        self.reports.append((attempt_id, location))
        self.on_report(location)

    def left_behind(self) -> list[str]:
        """Run files still in the memory dir or the attempt's dir."""
        return sorted(os.listdir(self.shm)) + sorted(os.listdir(self.work_dir))

    def pending(self) -> list[float]:
        """When the clock's pending calls are due."""
        return sorted(c.getTime() for c in self.clock.getDelayedCalls())


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test makes its own Clock: nothing may be scheduled on the global
    reactor; and no error may be logged (a crashed transition, a Deferred
    whose failure nobody handled)."""
    before = len(reactor.getDelayedCalls())
    failures: list[Any] = []

    def observe(event: Any) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
        gc.collect()  # an unhandled failure is logged when its Deferred goes
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(reactor.getDelayedCalls()) == before
    assert [formatEvent(e) for e in failures] == []


def all_fetched(fetch: ReduceFetch) -> list[Any]:
    """What ``all_fetched`` ended with, if it did: [result] or [Failure]."""
    outcome: list[Any] = []
    defer.Deferred.fromCoroutine(fetch.all_fetched()).addBoth(outcome.append)
    return outcome


def fail_round(fetcher: FakeFetcher, clock: Clock, error: BaseException) -> None:
    """Fail every try of a round, advancing the clock through the backoffs."""
    for n in range(FETCH_RETRIES):
        fetcher.last.fail(error)
        if n < FETCH_RETRIES - 1:
            clock.advance(0.2 * 2 ** n)


# --- fetched at once, or after retries ----------------------------------------------------

def test_a_run_fetched_at_the_first_try_is_done(h: Harness) -> None:
    """The common case: one try, the run accepted, nothing scheduled."""
    fetch = h.fetch()
    outcome = all_fetched(fetch)
    assert fetch.state(0) is State.WAITING
    fetch.locate(loc(0))
    assert fetch.state(0) is State.FETCHING and len(h.remote.tries) == 1
    assert h.remote.last.loc == loc(0)
    run = h.remote.last.succeed(b"12345")
    assert fetch.state(0) is State.DONE
    assert outcome == [[run]]
    assert os.path.dirname(run[0]) == str(h.shm) and h.memory.used == 5
    assert fetch.bytes_in_memory() == 5 and fetch.kinds == {"str"}
    assert (h.reports, h.pending()) == ([], [])


def test_failed_tries_back_off_doubling_then_a_try_succeeds(h: Harness) -> None:
    """0.2 s, 0.4 s, 0.8 s between tries: a busy map worker gets a breather,
    and corrupt data counts as a failed try like a network error."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    errors = [ShuffleError("refused"), CorruptFrame("bad crc"), ShuffleError("reset")]
    for n, error in enumerate(errors):
        h.remote.last.land()  # a try fails after writing part of its run
        h.remote.last.fail(error)
        assert fetch.state(0) is State.BACKING_OFF
        assert h.pending() == [pytest.approx(h.clock.seconds() + 0.2 * 2 ** n)]
        assert h.memory.used == 0 and h.left_behind() == []
        h.clock.advance(0.2 * 2 ** n)
        assert fetch.state(0) is State.FETCHING
    assert [t.at for t in h.remote.tries] == pytest.approx([0, 0.2, 0.6, 1.4])
    run = h.remote.last.succeed()
    assert fetch.state(0) is State.DONE and all_fetched(fetch) == [[run]]
    assert h.reports == []


def test_spent_retries_report_once_then_pause_and_try_again(h: Harness) -> None:
    """After FETCH_RETRIES failed tries the jobtracker hears of it once (enough
    reports and it re-runs the map), and the fetch tries again after the pause."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    fail_round(h.remote, h.clock, ShuffleError("connection refused"))
    assert len(h.remote.tries) == FETCH_RETRIES
    assert h.reports == [(ATTEMPT, loc(0))]
    assert fetch.state(0) is State.PAUSED
    assert h.pending() == [pytest.approx(1.4 + FETCH_FAILED_PAUSE)]
    h.clock.advance(FETCH_FAILED_PAUSE - 0.01)
    assert len(h.remote.tries) == FETCH_RETRIES
    h.clock.advance(0.02)
    assert fetch.state(0) is State.FETCHING and len(h.remote.tries) == FETCH_RETRIES + 1
    # A new round: the run gets a name of its own.
    run = h.remote.last.succeed()
    assert run[0].endswith("run-00000-2.seg")
    assert fetch.state(0) is State.DONE and len(h.reports) == 1


def test_a_second_spent_round_reports_again(h: Harness) -> None:
    """Each round's failure is a new report: the jobtracker counts them.
    A later round is one try: the reports come seconds apart."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    fail_round(h.remote, h.clock, ShuffleError("refused"))
    h.clock.advance(FETCH_FAILED_PAUSE)
    h.remote.last.fail(ShuffleError("refused"))
    assert h.reports == [(ATTEMPT, loc(0))] * 2
    assert fetch.state(0) is State.PAUSED
    assert len(h.remote.tries) == FETCH_RETRIES + 1


# --- a newer location -------------------------------------------------------------------

def test_a_newer_location_supersedes_a_fetch_in_progress(h: Harness) -> None:
    """The map was run again elsewhere: waiting on the old worker (maybe
    stopped) would cost a timeout; the old try is stopped and its file removed."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    old = h.remote.last
    old_path = old.land(b"partial")
    assert h.memory.used == 7
    fetch.locate(loc(0, host="h2"))
    assert old.d.called  # cancelled
    assert not os.path.exists(old_path) and h.memory.used == 0
    assert fetch.state(0) is State.FETCHING and h.remote.last.loc.host == "h2"
    run = h.remote.last.succeed()
    assert all_fetched(fetch) == [[run]] and h.left_behind() == [os.path.basename(run[0])]


def test_the_same_location_again_leaves_the_fetch_alone(h: Harness) -> None:
    """A reduce launched with a map's location got it again in the batch
    announced to every reduce: its fetch was stopped and started again,
    with "Map N was run again" logged for a map that ran once."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    first = h.remote.last
    first.land(b"partial")
    fetch.locate(loc(0))
    assert not first.d.called and len(h.remote.tries) == 1
    first.fail(ShuffleError("refused"))
    fetch.locate(loc(0))  # nor a backoff cut short
    assert fetch.state(0) is State.BACKING_OFF and len(h.remote.tries) == 1


def test_the_outcome_of_a_superseded_try_is_ignored(h: Harness) -> None:
    """A try that completes although it was stopped must neither count as
    the map's run nor keep its file or its memory."""
    h.remote.stubborn = True
    fetch = h.fetch()
    fetch.locate(loc(0))
    fetch.locate(loc(0, host="h2"))  # the first try ends now, with a run
    assert fetch.state(0) is State.FETCHING
    assert h.memory.used == 0 and h.left_behind() == []
    run = h.remote.last.succeed(b"newer")
    assert all_fetched(fetch) == [[run]] and h.memory.used == 5


def test_a_newer_location_during_backoff_is_fetched_at_once(h: Harness) -> None:
    """No use waiting out a backoff meant for the old worker."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    h.remote.last.fail(ShuffleError("refused"))
    fetch.locate(loc(0, host="h2"))
    assert fetch.state(0) is State.FETCHING
    assert (h.remote.last.loc.host, h.remote.last.at, h.pending()) == ("h2", 0, [])
    h.clock.advance(10)
    assert len(h.remote.tries) == 2


def test_a_newer_location_during_the_pause_is_fetched_at_once(h: Harness) -> None:
    """The report worked: the re-run map's new location is tried without
    waiting for the pause, which then never starts a try of its own."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    fail_round(h.remote, h.clock, ShuffleError("refused"))
    fetch.locate(loc(0, host="h2"))
    assert fetch.state(0) is State.FETCHING and h.pending() == []
    assert h.remote.last.loc.host == "h2"
    h.clock.advance(FETCH_FAILED_PAUSE)
    assert len(h.remote.tries) == FETCH_RETRIES + 1


@pytest.mark.parametrize("reported_first", [False, True], ids=["in-backoff", "after-report"])
def test_a_newer_location_gets_all_its_tries_before_a_report(h: Harness,
                                                             reported_first: bool) -> None:
    """One refusal at the re-run map's worker was reported at once (its
    location counted as a later round), and enough such reports had the
    map run yet again, an attempt more against its --max-attempts."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    if reported_first:
        fail_round(h.remote, h.clock, ShuffleError("refused"))
    else:
        h.remote.last.fail(ShuffleError("refused"))
    reports = len(h.reports)
    fetch.locate(loc(0, host="h2"))
    tries = len(h.remote.tries)
    fail_round(h.remote, h.clock, ShuffleError("refused"))
    assert len(h.remote.tries) - tries == FETCH_RETRIES - 1
    assert h.reports[reports:] == [(ATTEMPT, loc(0, host="h2"))]
    h.clock.advance(FETCH_FAILED_PAUSE)  # a later round there: one try, then a report
    h.remote.last.fail(ShuffleError("refused"))
    assert h.reports[reports:] == [(ATTEMPT, loc(0, host="h2"))] * 2
    assert fetch.state(0) is State.PAUSED


def test_a_location_announced_during_the_report_wins(h: Harness) -> None:
    """A jobtracker that answers the report with a new location at once
    (synchronously) must not see it overwritten by the pause."""
    fetch = h.fetch()
    h.on_report = lambda location: fetch.locate(loc(0, host="h2"))
    fetch.locate(loc(0))
    fail_round(h.remote, h.clock, ShuffleError("refused"))
    assert fetch.state(0) is State.FETCHING and h.remote.last.loc.host == "h2"
    assert h.pending() == []


def test_a_done_map_ignores_a_later_location(h: Harness) -> None:
    """A map announced again after its run is here: the run is as good."""
    fetch = h.fetch(num_maps=2)
    fetch.locate(loc(0))
    run = h.remote.last.succeed()
    fetch.locate(loc(0, host="h2"))
    assert fetch.state(0) is State.DONE and len(h.remote.tries) == 1
    assert os.path.exists(run[0])


# --- cancel in each state ---------------------------------------------------------------

def _bring_to(state: State, h: Harness, fetch: ReduceFetch) -> None:
    if state is State.WAITING:
        return
    fetch.locate(loc(0))
    if state is State.DONE:
        h.remote.last.succeed()
    else:
        h.remote.last.land()  # part of the run is in memory
    if state is State.BACKING_OFF:
        h.remote.last.fail(ShuffleError("refused"))
    elif state is State.PAUSED:
        fail_round(h.remote, h.clock, ShuffleError("refused"))
    assert fetch.state(0) is state


@pytest.mark.parametrize("state", [State.WAITING, State.FETCHING, State.BACKING_OFF,
                                   State.PAUSED, State.DONE])
def test_cancel_leaves_nothing_behind(h: Harness, state: State) -> None:
    """A killed attempt gives its memory back at once and tries nothing more,
    whatever its fetches were doing."""
    fetch = h.fetch(num_maps=2)
    outcome = all_fetched(fetch)
    _bring_to(state, h, fetch)
    tries = len(h.remote.tries)
    fetch.cancel()
    assert fetch.state(0) is State.CANCELLED
    assert h.memory.used == 0 and os.listdir(h.shm) == []
    assert h.pending() == [] and all(t.d.called for t in h.remote.tries)
    assert len(outcome) == 1 and outcome[0].check(defer.CancelledError)
    fetch.locate(loc(1))
    h.clock.advance(60)
    assert len(h.remote.tries) == tries


def test_a_try_stopped_by_cancel_is_not_fetched_again_to_disk(h: Harness) -> None:
    """A try in memory that fails on being stopped with a disk-like error must
    not start a disk fetch for an attempt that ended."""
    h.remote.cancelled_with = OSError(errno.EIO, "aborted")
    fetch = h.fetch()
    fetch.locate(loc(0))
    h.remote.last.land()
    fetch.cancel()
    assert len(h.remote.tries) == 1 and h.left_behind() == []


# --- our own disk, the memory, local runs -----------------------------------------------

def test_a_failure_of_our_own_disk_fails_the_attempt(h: Harness) -> None:
    """A run we cannot write to disk is not the map's fault: no report (the
    map is fine), no retry; the attempt fails with the error."""
    h.memory = ShuffleMemory(None, 0)
    fetch = h.fetch()
    outcome = all_fetched(fetch)
    fetch.locate(loc(0))
    h.remote.last.land()
    h.remote.last.fail(OSError(errno.ENOSPC, "No space left on device"))
    assert fetch.state(0) is State.FAILED
    assert len(outcome) == 1 and outcome[0].check(OSError)
    assert h.reports == [] and h.pending() == [] and h.left_behind() == []


def test_a_run_that_cannot_be_written_in_memory_is_fetched_again_to_disk(h: Harness) -> None:
    """A tmpfs filled by others meanwhile: the disk may do, and it is not a
    failed try of the map."""
    fetch = h.fetch()
    fetch.locate(loc(0))
    assert h.remote.last.land() and h.remote.last.landing.in_memory
    h.remote.last.fail(OSError(errno.ENOSPC, "No space left on device"))
    assert len(h.remote.tries) == 2 and fetch.state(0) is State.FETCHING
    assert h.memory.used == 0 and os.listdir(h.shm) == []
    run = h.remote.last.succeed()
    assert os.path.dirname(run[0]) == str(h.work_dir)
    assert fetch.bytes_in_memory() == 0 and h.reports == []


def test_runs_beyond_the_budget_go_to_disk(tmp_path: Path) -> None:
    """The budget is shared: the run that would overflow it is placed on disk,
    and the counters tell the two apart."""
    h = Harness(tmp_path, budget=5)
    fetch = h.fetch(num_maps=2)
    fetch.locate(loc(0))
    fetch.locate(loc(1))
    first, second = h.remote.tries
    in_memory = first.succeed(b"12345")
    on_disk = second.succeed(b"678")
    assert os.path.dirname(in_memory[0]) == str(h.shm)
    assert os.path.dirname(on_disk[0]) == str(h.work_dir)
    assert fetch.bytes_in_memory() == 5
    fetch.release()
    assert h.memory.used == 0 and os.listdir(h.shm) == []


def test_a_local_map_output_comes_from_the_local_fetcher(h: Harness) -> None:
    """A map this worker ran is taken from its own store, not over the network."""
    fetch = h.fetch()
    fetch.locate(loc(0, wid=HERE))
    assert (len(h.local.tries), len(h.remote.tries)) == (1, 0)
    run = h.local.last.succeed()
    assert fetch.state(0) is State.DONE and all_fetched(fetch) == [[run]]


def test_a_missing_local_output_is_reported_without_backoff(h: Harness) -> None:
    """Our own store either has the output or not: trying it again at once
    is no use, the jobtracker must hear of it now."""
    fetch = h.fetch()
    fetch.locate(loc(0, wid=HERE))
    h.local.last.fail(ShuffleError("local output of map 0: unknown map"))
    assert fetch.state(0) is State.PAUSED
    assert h.reports == [(ATTEMPT, loc(0, wid=HERE))]
    fetch.locate(loc(0, host="h2"))  # re-run elsewhere
    assert h.remote.last.loc.host == "h2"


# --- every map ----------------------------------------------------------------------------

def test_all_fetched_waits_for_every_map_and_lists_runs_in_map_order(h: Harness) -> None:
    """The reduce merges runs in map order; it starts only once all are here."""
    fetch = h.fetch(num_maps=3)
    outcome = all_fetched(fetch)
    for index in (2, 0, 1):
        fetch.locate(loc(index, kinds=("int",) if index == 2 else ("str",)))
    by_map = {t.loc.index: t for t in h.remote.tries}
    runs = {i: by_map[i].succeed(f"run{i}".encode()) for i in (1, 2)}
    assert outcome == []
    runs[0] = by_map[0].succeed(b"run0")
    assert outcome == [[runs[0], runs[1], runs[2]]]
    assert fetch.kinds == {"str", "int"}


def test_a_job_without_maps_has_all_its_runs_at_once(h: Harness) -> None:
    """Zero maps: the reduce must not wait for an announcement that never comes."""
    assert all_fetched(h.fetch(num_maps=0)) == [[]]
