"""The lifecycle shape both daemons share: a tree of services, started in
order (a child may take time, e.g. to bind its port) and stopped in the
reverse order, each child's stop awaited before the next begins.

Twisted's ``MultiService`` stops its children all at once; a daemon's
parts depend on each other on the way down (the jobs fail before the
zygote goes, the shuffle server serves until the attempts ended), so this
one awaits them one by one, as Buildbot's ``AsyncMultiService`` does.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)

from .child import Zygote


class DaemonReactor(Protocol):
    """What a daemon's service tree uses of the reactor: its clock (heartbeats,
    timeouts, backoff), processes (the zygote) and TCP (the ports it listens
    on, the connections its endpoint strings make)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,
                  **kw: Any) -> IDelayedCall: ...

    def spawnProcess(self, processProtocol: Any, executable: bytes | str,
                     args: Sequence[bytes | str] = (), env: Mapping[Any, Any] | None = None,
                     path: Any = None, uid: int | None = None, gid: int | None = None,
                     usePTY: bool = False, childFDs: Mapping[int, Any] | None = None
                     ) -> IProcessTransport: ...

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> IListeningPort: ...

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,
                   bindAddress: tuple[str, int] | None = None) -> IConnector: ...


class AsyncMultiService(service.MultiService):
    """Children started one after another (``startService`` may return a
    Deferred), stopped in reverse, one after another; a child that fails
    to start stops those started before it."""

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        service.Service.startService(self)
        return defer.Deferred.fromCoroutine(self._start_children())

    async def _start_children(self) -> None:
        try:
            for child in self:
                result = child.startService()
                if isinstance(result, defer.Deferred):
                    await result
        except BaseException:
            # A daemon that cannot start (a port taken) leaves nothing running.
            await self.stopService()
            raise

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                result = child.stopService()
                if isinstance(result, defer.Deferred):
                    await result


class CallbackService(service.Service):
    """A child made of two functions: what starting and stopping it does."""

    def __init__(self, name: str, start: Callable[[], Awaitable[Any] | None],
                 stop: Callable[[], Awaitable[Any] | None]) -> None:
        self.setName(name)
        self._start = start
        self._stop = stop

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        super().startService()
        return defer.ensureDeferred(_maybe_await(self._start()))

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(_maybe_await(self._stop()))


async def _maybe_await(result: Awaitable[Any] | None) -> None:
    if result is not None:
        await result


def zygote_service(reactor: IReactorProcess, given: Zygote | None) -> tuple[Zygote, service.Service | None]:
    """The zygote a daemon forks its tasks from: its own, started and stopped
    as its first child, unless one is given (``run`` shares one zygote by
    all its daemons and stops it itself)."""
    if given is not None:
        return given, None
    zygote = Zygote(reactor)
    return zygote, CallbackService("zygote", zygote.start, zygote.stop)


def at_most(d: defer.Deferred[Any], seconds: float, clock: IReactorTime) -> defer.Deferred[None]:
    """Fires once ``d`` has, or after ``seconds``, whichever is first,
    leaving ``d`` alone (a wait that is worth a bounded delay, as a stop's
    for the output of the attempts it killed)."""
    done: defer.Deferred[None] = defer.Deferred()
    timer = clock.callLater(seconds, lambda: done.called or done.callback(None))

    def fired(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not done.called:
            done.callback(None)
        return result

    d.addBoth(fired)
    return done


class Awaited:
    """Per job, the attempts whose word an ended job waits for (the logs of
    the attempts it killed, the end of the commits it allowed): what fires
    once each has come, or after a bound."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._by_job: dict[str, set[str]] = {}
        self._job_of: dict[str, str] = {}
        self._waits: dict[str, defer.Deferred[None]] = {}

    def add(self, job_id: str, attempt_id: str) -> None:
        self._by_job.setdefault(job_id, set()).add(attempt_id)
        self._job_of[attempt_id] = job_id

    def came(self, attempt_id: str) -> bool:
        """``attempt_id``'s word came (or will never come); whether it was
        awaited."""
        job_id = self._job_of.pop(attempt_id, None)
        if job_id is None:
            return False
        left = self._by_job[job_id]
        left.discard(attempt_id)
        waiting = self._waits.get(job_id)
        if not left and waiting is not None and not waiting.called:
            waiting.callback(None)
        return True

    def wait(self, job_id: str, seconds: float,
             still: Callable[[str], bool] = lambda aid: True) -> defer.Deferred[None] | None:
        """Fires once the job's attempts that are ``still`` awaited have
        come, or after ``seconds``; None if none is awaited. Either way the
        job is forgotten then."""
        awaited = {aid for aid in self._by_job.get(job_id, ()) if still(aid)}
        if not awaited:
            self.forget(job_id)
            return None
        self._by_job[job_id] = awaited
        ended: defer.Deferred[None] = defer.Deferred()
        self._waits[job_id] = ended

        def done(result: Any) -> Any:
            self.forget(job_id)
            return result

        return at_most(ended, seconds, self._clock).addBoth(done)

    def forget(self, job_id: str) -> None:
        for aid in self._by_job.pop(job_id, ()):
            self._job_of.pop(aid, None)
        self._waits.pop(job_id, None)

    def attempts(self) -> list[str]:
        return list(self._job_of)

    def of_job(self, job_id: str) -> list[str]:
        return list(self._by_job.get(job_id, ()))

    def awaits(self, job_id: str, still: Callable[[str], bool] = lambda aid: True) -> bool:
        return any(still(aid) for aid in self._by_job.get(job_id, ()))

    def waiting(self) -> list[str]:
        """The jobs that wait for their attempts' words."""
        return [job_id for job_id, d in self._waits.items() if not d.called]

    def end_all(self) -> None:
        """No more waiting (the jobtracker stops)."""
        for waiting in list(self._waits.values()):
            if not waiting.called:
                waiting.callback(None)
