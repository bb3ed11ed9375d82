"""The tasktracker's PB adapter: the mind the jobtracker calls (each
method checks the typed record and delegates), ``PBJobTracker`` (the
``IJobTracker`` port over our perspective), and ``JobTrackerConnection``,
the service that stays logged in: it logs in and registers again after
every reconnect, as a new incarnation.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from ..addresses import endpoint_host_port
from ..auth import LoginRefused, login
from ..daemon import FatalError
from ..pbwire import call, client_factory, pack, refusals_as_pb_errors, unpack
from ..ports import IJobTracker
from ..services import DaemonReactor, at_most
from ..tls import (PLAIN_TEXT, TLS_PROBE_AFTER, ClusterTLS, not_tls_text, speaks_plain_text,
                   speaks_tls, tls_refusal)
from ..tls import client_endpoint as jobtracker_client_endpoint
from ..wire import (
    ROLE_TASKTRACKER,
    AttemptResult,
    BadMessage,
    Heartbeat,
    JobInit,
    MapLocation,
    Registration,
    TaskError,
    Unreachable,
    heartbeat_interval_from_wire,
    split_from_wire,
)
from .worker import TaskTracker


def _locations(locations: Any) -> list[MapLocation]:
    if not isinstance(locations, list):
        raise BadMessage("map locations must be a list")
    return [MapLocation.from_wire(loc) for loc in locations]


#: Seconds a drained tasktracker waits for the attempts it was told to
#: kill to end (and send their output) before it stops.
DRAINED_SETTLE = 1.0
#: Seconds a stopping tasktracker waits for its connection to the
#: jobtracker to close before it cuts it.
STOP_TIMEOUT = 2.0


class TaskTrackerMind(pb.Referenceable):
    """What the jobtracker may call on us: check, delegate."""

    def __init__(self, tt: TaskTracker, stop: Callable[[], None],
                 draining: Callable[[], None]) -> None:
        self.tt = tt
        self._stop = stop
        self._draining = draining

    @refusals_as_pb_errors
    def remote_init_job(self, job_id: str, info: bytes) -> None:
        self.tt.init_job(JobInit.from_wire(job_id, unpack(info)))

    @refusals_as_pb_errors
    def remote_launch_map(self, job_id: str, attempt_id: str, index: int,
                          split: bytes) -> None:
        # Counted first: a launch we refuse ends its attempt too.
        self.tt.launches += 1
        self.tt.launch_map(str(job_id), str(attempt_id),
                           split_from_wire(unpack(split, surrogates=True)))

    @refusals_as_pb_errors
    def remote_launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                             locations: bytes) -> None:
        self.tt.launches += 1
        if type(partition) is not int:
            raise BadMessage("launch_reduce takes a partition number")
        self.tt.launch_reduce(str(job_id), str(attempt_id), partition,
                              _locations(unpack(locations)))

    @refusals_as_pb_errors
    def remote_running_log(self, attempt_id: str) -> str | None:
        return self.tt.running_log(str(attempt_id))

    @refusals_as_pb_errors
    def remote_map_outputs(self, job_id: str, locations: bytes) -> None:
        self.tt.map_outputs(str(job_id), _locations(unpack(locations)))

    def remote_kill_attempt(self, job_id: str, attempt_id: str) -> None:
        self.tt.kill_attempt(str(job_id), str(attempt_id))

    def remote_destroy_job(self, job_id: str) -> None:
        self.tt.destroy_job(str(job_id))

    def remote_stop(self) -> None:
        self._stop()

    def remote_draining(self) -> None:
        self._draining()


@implementer(IJobTracker)
class PBJobTracker:
    """The calls a worker makes to the jobtracker, over its perspective."""

    def __init__(self, perspective: pb.RemoteReference) -> None:
        self.perspective = perspective  # held: a dropped perspective is logged out

    # Packed: a jobtracker that registered us speaks protocol 5 at least.
    async def heartbeat(self, beat: Heartbeat) -> float | None:
        """The interval the jobtracker asks for, if it says one."""
        return heartbeat_interval_from_wire(
            await call(self.perspective, "heartbeat", pack(beat.to_wire())))

    async def attempt_done(self, attempt_id: str, result: AttemptResult) -> None:
        await call(self.perspective, "attempt_done", attempt_id, pack(result.to_wire()))

    async def attempt_failed(self, attempt_id: str, error: TaskError) -> None:
        await call(self.perspective, "attempt_failed", attempt_id, pack(error.to_wire()))

    async def fetch_failed(self, attempt_id: str, map_index: int, map_attempt_id: str) -> None:
        await call(self.perspective, "fetch_failed", attempt_id, map_index, map_attempt_id)

    async def may_commit(self, attempt_id: str) -> bool:
        return bool(await call(self.perspective, "may_commit", attempt_id))

    async def commit_ended(self, attempt_id: str) -> None:
        await call(self.perspective, "commit_ended", attempt_id)

    async def killed_log(self, attempt_id: str, log: str) -> None:
        text = log.encode("utf-8", "replace").decode("utf-8")  # msgpack takes no surrogates
        await call(self.perspective, "killed_log", attempt_id, pack({"log": text}))

    async def drain(self) -> None:
        await call(self.perspective, "drain")

    async def bundle_chunk(self, sha256: str, offset: int) -> bytes:
        data = await call(self.perspective, "bundle_chunk", sha256, offset)
        if not isinstance(data, bytes):
            raise Unreachable("the jobtracker sent a bundle chunk that is not bytes")
        return data


class _PBReconnectingFactory(protocol.Factory):
    """A fresh PBClientFactory per connection, so that ClientService can
    reconnect and we log in again on each new broker."""

    noisy = False

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return client_factory().buildProtocol(addr)


@implementer(IStreamClientEndpoint)
class _SaysWhyNot:
    """The jobtracker's endpoint, whose failed connects are told to
    ``failed`` (ClientService only schedules its next try, naming the
    endpoint by its repr: ours names the address)."""

    def __init__(self, endpoint: IStreamClientEndpoint, address: str,
                 failed: Callable[[Failure], None]) -> None:
        self._endpoint, self._address, self._failed = endpoint, address, failed

    def connect(self, factory: protocol.Factory) -> defer.Deferred[Any]:
        def failed(f: Failure) -> Failure:
            self._failed(f)
            return f

        return self._endpoint.connect(factory).addErrback(failed)

    def __repr__(self) -> str:
        return f"the jobtracker at {self._address}"


#: Seconds a login may take, as a client's: a TLS handshake and a few
#: round trips, even over a slow link.
LOGIN_TIMEOUT = 10.0

#: Seconds before the next try to reach and log in to the jobtracker, by
#: the tries failed in a row: 0.2 s, growing half again each time, to 10 s.
backoff = backoffPolicy(initialDelay=0.2, maxDelay=10.0)

#: Seconds a tasktracker keeps its completed map outputs after losing the
#: jobtracker, for a restarted one to resume its jobs with.
DEFAULT_KEEP_OUTPUTS = 300.0


class JobTrackerConnection(service.Service):
    """Logged in and registered with the jobtracker, again after every
    reconnect (with backoff); the tasktracker forgets its work on each loss.
    ``registration()`` gives what to register with, at each login."""

    log = Logger()

    def __init__(self, reactor: DaemonReactor, address: str, secret: bytes, tt: TaskTracker,
                 registration: Any, tls: ClusterTLS | None = None,
                 keep_outputs: float = DEFAULT_KEEP_OUTPUTS,
                 on_registered: Callable[[str], None] | None = None) -> None:
        self.setName("jobtracker connection")
        self._reactor = reactor
        self._address = address
        self._secret = secret
        self.tt = tt
        self._registration = registration
        self._tls = tls
        self._keep_outputs = keep_outputs
        #: Told the worker id of every registration.
        self._on_registered = on_registered
        self._last_login_problem: str | None = None
        #: Logins failed in a row (a TLS handshake refused, a port that is
        #: not the jobtracker's): ClientService counts each as a connection
        #: made, so its own backoff never grew and we retried every second.
        self._failed_logins = 0
        #: A drain asked for while the jobtracker was away: asked again then.
        self._drain_later: Any = None
        #: We are being drained: a jobtracker we register with anew (one
        #: restarted, which forgot it) is asked again.
        self._drain_wanted = False
        self._mind = TaskTrackerMind(tt, self.drained, self.draining)
        self._client: ClientService | None = None
        #: The broker of a login in progress, and what fires when it ends.
        self._login_in_progress: tuple[pb.Broker, defer.Deferred[None]] | None = None
        self._jobtracker: PBJobTracker | None = None
        #: The worker id of the first registration.
        self.first_registration: defer.Deferred[str] = defer.Deferred()
        #: Ends the daemon: fails when it cannot go on (the jobtracker refused
        #: our secret), fires once the jobtracker says we are drained.
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._draining_done = False

    def startService(self) -> None:
        super().startService()
        endpoint = jobtracker_client_endpoint(self._reactor, self._address, self._tls)
        self._client = ClientService(
            _SaysWhyNot(endpoint, self._shown_address(), self._cannot_connect),
            _PBReconnectingFactory(),
            retryPolicy=self.retry_delay,
            prepareConnection=self._login, clock=self._reactor)
        self._client.startService()

    def retry_delay(self, tries: int) -> float:
        """ClientService's retry policy, for its failed ``tries`` to
        connect and our failed logins."""
        return float(backoff(tries + self._failed_logins))

    def relogin(self) -> None:
        """Drop the connection: ClientService reconnects, we log in anew."""
        if self._jobtracker is not None:
            self._jobtracker.perspective.broker.transport.loseConnection()

    def _login(self, broker: pb.Broker) -> defer.Deferred[None]:
        """ClientService's prepareConnection.

        Its state machine has no transition for a connection lost while
        this runs (automat NoTransition, logged as an unhandled error), and
        PB never fails a login whose connection went before the jobtracker
        spoke (it would wait for ever). So a connection lost during the
        login ends it at once, and normally: ClientService then sees a
        connection made and lost, and reconnects (or stops, see stopService).
        """
        ended: defer.Deferred[None] = defer.Deferred()
        self._login_in_progress = (broker, ended)
        broker.notifyOnDisconnect(lambda: broker.factory.clientConnectionLost(
            None, Failure(pb.PBConnectionLost("the connection to the jobtracker was lost"))))

        # A peer that never answers (a port whose server waits for its
        # client to speak: a web server, a store) held the login for ever.
        silent = self._reactor.callLater(LOGIN_TIMEOUT, self._no_answer, broker)
        probing: list[defer.Deferred[None]] = []
        probe = (None if self._tls else self._reactor.callLater(
            TLS_PROBE_AFTER, lambda: probing.append(self._probe_tls(broker))))

        def end(result: Any) -> Any:
            for call_ in (silent, probe):
                if call_ is not None and call_.active():
                    call_.cancel()
            for asking in probing:
                asking.cancel()
            self._login_in_progress = None
            ended.callback(None)
            return result

        return defer.Deferred.fromCoroutine(self._do_login(broker)).addBoth(end)

    async def _do_login(self, broker: pb.Broker) -> None:
        try:
            perspective = await login(broker.factory, ROLE_TASKTRACKER, self._secret, self._mind)
            reg: Registration = self._registration()
            wid = await perspective.callRemote("register", reg.to_wire())
        except pb.PBConnectionLost:
            if self.running:  # not our own stop
                self._login_lost(broker)
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
            if not self.ended.called:
                self._reactor.callLater(0, self.ended.errback, error)
            return
        self._failed_logins = 0
        jobtracker = self._jobtracker = PBJobTracker(perspective)
        self.tt.registered(wid, jobtracker)
        perspective.notifyOnDisconnect(lambda _: self._disconnected(jobtracker))
        self._last_login_problem = None
        self.log.info("Registered with the jobtracker as {wid}", wid=wid)
        if self._drain_later is not None:  # asked while the jobtracker was away
            self._drain_later.cancel()
            self._drain_again()
        elif self._drain_wanted:
            self.log.info("We were being drained: asking this jobtracker again")
            self._drain_again()
        if self._on_registered is not None:
            self._on_registered(wid)
        if not self.first_registration.called:
            self.first_registration.callback(wid)

    def draining(self) -> None:
        """The jobtracker drains us (``pytxmr drain``, or our SIGUSR1)."""
        self._drain_wanted = True

    def drained(self) -> None:
        """The jobtracker drained us: the daemon stops, cleanly, once the
        attempts it killed as it did so have ended (a second at most):
        their output goes to it first (``killed_log``), or was lost."""
        if self.ended.called or self._draining_done:
            return
        self._draining_done = True
        self.log.info("Drained: no task runs here and no job needs our map outputs; "
                      "stopping")

        def stop(_: object) -> None:
            if not self.ended.called:
                self.ended.callback(None)

        self.tt.settled(DRAINED_SETTLE).addBoth(stop)

    async def request_drain(self) -> None:
        """Ask to be drained (SIGUSR1). Without a jobtracker, stop now,
        unless we keep map outputs for a restarted one (its jobs' work):
        then ask it once it is back, or stop once they are dropped."""
        self._drain_wanted = True
        if self._jobtracker is None:
            until = self.tt.kept_until()
            if until is None:
                self.drained()
            elif self._drain_later is None:
                wait = max(0.0, until - self._reactor.seconds())
                self.log.info("Draining: the jobtracker is away; asking it once it is back "
                              "(it may resume jobs with the map outputs kept here), or "
                              "stopping once they are dropped, in {s:.0f}s", s=wait)
                self._drain_later = self._reactor.callLater(wait + 0.01, self._drain_again)
            return
        self.log.info("Asking the jobtracker to drain this tasktracker")
        try:
            await self._jobtracker.drain()
        except Unreachable as e:
            self.log.warn("Cannot ask to be drained ({e}): stopping now", e=e)
            self.drained()

    def _shown_address(self) -> str:
        """HOST:PORT, as given, for the endpoint string we were given."""
        host_port = endpoint_host_port(self._address)
        return f"{host_port[0]}:{host_port[1]}" if host_port else self._address

    def _cannot_connect(self, failure: Failure) -> None:
        self._problem(f"cannot reach it at {self._shown_address()} "
                      f"({failure.getErrorMessage()})")

    def _drain_again(self) -> None:
        self._drain_later = None
        defer.Deferred.fromCoroutine(self.request_drain())

    def _probe_tls(self, broker: pb.Broker) -> defer.Deferred[None]:
        """No greeting yet: does the jobtracker's port speak TLS? Then this
        login ends now, saying so (see ``client.connect``)."""
        async def probe() -> None:
            if broker.currentDialect is None and await speaks_tls(self._reactor, self._address):
                broker.uses_tls = True  # type: ignore[attr-defined]
                broker.transport.abortConnection()

        return defer.Deferred.fromCoroutine(probe()).addErrback(lambda _: None)

    def _no_answer(self, broker: pb.Broker) -> None:
        broker.silent = True  # type: ignore[attr-defined]
        broker.transport.abortConnection()

    def _login_lost(self, broker: pb.Broker) -> None:
        """Say why a login's connection ended, once per reason (it retries
        with backoff): a TLS handshake that failed, or a jobtracker that
        never spoke, which is how a TLS port treats a plain-text client."""
        self._failed_logins += 1
        if (self._tls is not None and broker.currentDialect is None
                and not getattr(broker, "silent", False)
                and not tls_refusal(getattr(broker, "lost_reason", None))):
            # Dropped before our handshake ended: a plain jobtracker? Asked
            # after the login ended (see _login), said once we know.
            defer.Deferred.fromCoroutine(self._ask_if_plain(broker))
            return
        self._problem(f"cannot log in to it: {self._lost_text(broker)}")

    async def _ask_if_plain(self, broker: pb.Broker) -> None:
        try:
            broker.plain_text = await speaks_plain_text(  # type: ignore[attr-defined]
                self._reactor, self._address)
        except Exception:  # unreachable now: nothing more to tell
            pass
        if self.running:
            self._problem(f"cannot log in to it: {self._lost_text(broker)}")

    def _lost_text(self, broker: pb.Broker) -> str:
        why = tls_refusal(getattr(broker, "lost_reason", None))
        if getattr(broker, "uses_tls", False):
            text = "its port speaks TLS: give --tls DIR (see docs/deploy.md)"
        elif getattr(broker, "silent", False):  # a TLS port waits for a plain client too
            text = (f"no answer in {LOGIN_TIMEOUT:g}s: is it the jobtracker's port? "
                    f"(--jobtracker HOST:PORT)" + ("" if self._tls else
                                                   "; does it use TLS? then give --tls DIR"))
        elif getattr(broker, "plain_text", False) or PLAIN_TEXT in (why or ""):
            # A plain jobtracker drops our ClientHello as garbage, often
            # before our OpenSSL reads its greeting (PLAIN_TEXT): one text
            # for both, not two that take turns in the log.
            text = not_tls_text("it")
        elif why:
            text = f"the TLS handshake failed ({why})"
        elif getattr(broker, "not_pb", None) is not None:
            text = ("what answers there does not speak PB: is it the jobtracker's port? "
                    "(--jobtracker HOST:PORT)")
        elif self._tls is None and broker.currentDialect is None:
            text = ("it closed the connection before it spoke PB (it stopped? or it uses "
                    "TLS: then give --tls DIR)")
        else:
            text = "the connection was lost during the login"
        return text

    def _problem(self, text: str) -> None:
        """Say why we are not registered, once per reason: we retry with backoff."""
        if text != self._last_login_problem:
            self._last_login_problem = text
            self.log.warn("Not registered with the jobtracker: {why}; retrying", why=text)

    def _disconnected(self, jobtracker: PBJobTracker) -> None:
        if jobtracker is not self._jobtracker:
            return
        if self.running:
            garbage = getattr(jobtracker.perspective.broker, "not_pb", None)
            why = "" if garbage is None else (
                f" (it sent what could not be read: {type(garbage).__name__}: {garbage})")
            self.log.warn("Lost the jobtracker{why}; ending our tasks and reconnecting (map "
                          "outputs kept for {s:g}s, for a restarted jobtracker)",
                          why=why, s=self._keep_outputs)
        self._jobtracker = None
        self.tt.forget_everything(self._keep_outputs if self.running else 0.0)

    async def _stop(self) -> None:
        if self._drain_later is not None:
            self._drain_later.cancel()
            self._drain_later = None
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
            stopping = self._client.stopService()
            if self._jobtracker is not None:
                # A TLS close waits for the jobtracker's close_notify: one
                # cut off from us never sends it, and SIGTERM stopped
                # nothing until the network healed (minutes).
                transport = self._jobtracker.perspective.broker.transport
                at_most(stopping, STOP_TIMEOUT, self._reactor).addCallback(
                    lambda _: stopping.called or transport.abortConnection())
            await stopping
        self.tt.forget_everything()
        self.tt.shuffle_pool.close()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())
