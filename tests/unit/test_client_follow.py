"""A waiting client's watch on its jobtracker (``client._follow``), on a
fake clock and a fake connection: a silent jobtracker is taken as lost;
an answer, even a refusal, is not silence."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from pytxmr import client


class FakeConnection:
    """``wait`` never ends; ``status`` answers as ``status`` says."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self.status = status
        self.aborted: list[str] = []
        self._wait: defer.Deferred[Any] = defer.Deferred()

    async def call(self, method: str, *args: Any) -> Any:
        if method == "wait":
            return await self._wait
        return await self.status()

    def abort(self, why: str) -> None:
        self.aborted.append(why)
        if not self._wait.called:
            self._wait.errback(client.ClusterUnreachable(why))


def follow(conn: FakeConnection, clock: Clock,
           progress: client.ProgressCallback | None) -> defer.Deferred[Any]:
    following = client._follow(clock, conn, "job_1", progress, 0.5)  # type: ignore[arg-type]
    d = defer.Deferred.fromCoroutine(following)
    d.addErrback(lambda f: f.trap(client.ClusterUnreachable))
    return d


def advance(clock: Clock, seconds: float, step: float = 0.5) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)


def never() -> defer.Deferred[Any]:
    return defer.Deferred()


async def refused() -> Any:
    raise client.ClusterError("refused")


async def answered() -> Any:
    return {"state": "running"}


def broken_progress(status: Any) -> None:
    raise BrokenPipeError("stdout closed")


@pytest.mark.parametrize("progress", [None, broken_progress], ids=["quiet", "progress"])
def test_a_jobtracker_that_stops_answering_is_taken_as_lost(progress: Any) -> None:
    clock = Clock()
    conn = FakeConnection(never)
    follow(conn, clock, progress)
    advance(clock, client.SILENCE_TIMEOUT - 1)
    assert conn.aborted == []
    advance(clock, 3)
    assert conn.aborted and "no answer from the jobtracker" in conn.aborted[0]


@pytest.mark.parametrize("status, progress", [
    (refused, None),  # a refusal is an answer
    (answered, broken_progress),  # a progress bar's failure is no silence of the jobtracker
], ids=["refused", "progress-fails"])
def test_a_jobtracker_that_answers_is_not_lost(status: Any, progress: Any) -> None:
    clock = Clock()
    conn = FakeConnection(status)
    follow(conn, clock, progress)
    advance(clock, 4 * client.SILENCE_TIMEOUT)
    assert conn.aborted == []


def test_a_client_stopped_for_a_while_does_not_take_its_jobtracker_as_lost() -> None:
    """Ctrl-Z, then fg: the clock jumped while nothing ran here."""
    clock = Clock()
    conn = FakeConnection(answered)
    follow(conn, clock, None)
    advance(clock, 2)
    clock.advance(10 * client.SILENCE_TIMEOUT)
    assert conn.aborted == []


class Back:
    """A jobtracker come back: ``jobs`` lists ``jobs``."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.closed = False

    async def call(self, method: str, *args: Any) -> Any:
        assert method == "jobs"
        return self.jobs

    def close(self) -> None:
        self.closed = True


class LostDuringSubmit:
    async def call(self, method: str, *args: Any) -> Any:
        raise client.ClusterUnreachable("lost the connection to the jobtracker")


def submit(back: Back | None, said: list[str]) -> Any:
    """Submit, the jobtracker lost and back 5 s later."""
    clock = Clock()
    clock.advance(1000)

    async def reconnect() -> Back:
        assert back is not None
        clock.advance(5)
        return back

    d = defer.Deferred.fromCoroutine(client.submit_spec(
        clock, LostDuringSubmit(), {"output": "/out/wc/"},  # type: ignore[arg-type]
        said.append, reconnect if back is not None else None))
    failures: list[Any] = []
    d.addErrback(failures.append)
    return failures[0].value if failures else d.result


def test_a_job_admitted_before_the_jobtracker_went_away_is_found_again() -> None:
    """The client said only "lost the connection", with no job id: run
    again, the job was refused (its output taken), or with --overwrite
    ran twice. A running job writing the output is the submission's."""
    back = Back([{"job_id": "job_1", "state": "failed", "output": "/out/wc", "elapsed": 1},
                 # An earlier one, whose presence the lost answer may have refused it for.
                 {"job_id": "job_0", "state": "running", "output": "/out/wc", "elapsed": 60},
                 {"job_id": "job_2", "state": "running", "output": "/out/wc", "elapsed": 4},
                 {"job_id": "job_3", "state": "running", "output": "/out/other", "elapsed": 1},
                 # Killed early, its output still being cleaned: its time stopped.
                 {"job_id": "job_4", "state": "running", "finishing": "killed",
                  "output": "/out/wc", "elapsed": 1}])
    said: list[str] = []
    assert submit(back, said) == (back, "job_2")
    assert said[-1] == "the jobtracker is back: it had admitted the job as job_2"
    assert not back.closed


def test_a_job_the_jobtracker_came_back_without_is_said_uncertain() -> None:
    back = Back([{"job_id": "job_1", "state": "succeeded", "output": "/out/wc", "elapsed": 1},
                 {"job_id": "job_0", "state": "running", "output": "/out/wc", "elapsed": 60}])
    error = submit(back, [])
    assert isinstance(error, client.SubmissionUncertain)  # exit 3, as a lost connection
    assert "came back without a running job writing /out/wc" in str(error) and back.closed
    error = submit(None, [])
    assert isinstance(error, client.SubmissionUncertain)
    assert "the job may have been admitted; see `pytxmr jobs`" in str(error)


def test_a_wait_that_loses_the_jobtracker_names_the_job() -> None:
    """A quiet submit had said no job id: nothing to `wait` for."""
    class Lost:
        async def call(self, method: str, *args: Any) -> Any:
            raise client.ClusterUnreachable("lost the connection to the jobtracker")

    d = defer.Deferred.fromCoroutine(client.follow(Clock(), Lost(), "job_7"))  # type: ignore[arg-type]
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert "the job job_7 may go on once the jobtracker is back (`pytxmr wait job_7`)" in str(
        failures[0].value)


@pytest.mark.parametrize("interval", [client.PROGRESS_INTERVAL, client.QUIET_INTERVAL])
def test_a_waiter_that_watches_the_status_polls_at_its_interval(interval: float) -> None:
    """A quiet ``submit -q`` keeps the status it last saw (to say what goes
    on if it is interrupted) and polled 6 times as often as before."""
    clock = Clock()
    polls: list[float] = []

    async def status() -> Any:
        polls.append(clock.seconds())
        return {"state": "running"}

    following = client._follow(clock, FakeConnection(status), "job_1",  # type: ignore[arg-type]
                               lambda s: None, interval)
    d = defer.Deferred.fromCoroutine(following)
    d.addErrback(lambda f: f.trap(client.ClusterUnreachable, defer.CancelledError))
    advance(clock, 9.0)
    assert len(polls) == int(9.0 / interval)
    d.cancel()
