"""The jobtracker's PB adapter: what peers may call (the realm, an avatar
per logged-in tasktracker or client, each method a few lines that check,
delegate and translate) and ``PBWorker``, the ``IWorker`` port over a
tasktracker's mind. PB stops here: the tracker sees typed records and
``wire`` errors only.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Awaitable, Callable, Optional, Sequence

from twisted.cred import portal
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from .. import shuffle, wire
from ..auth import (
    USER_PREFIX,
    AnonymousRefused,
    NoCertificate,
    NoUsers,
    ScramProof,
    SecretChecker,
    UsersChecker,
    decoy_key,
    scram_server,
)
from ..bundle import is_digest
from ..pbwire import Broker, FloodSample, pack, refusals_as_pb_errors, unpack
from ..ports import IWorker
from ..tls import (CERTIFICATE_NOT_FOR_HOST, ClusterTLS, is_tls_record, peer_certificate,
                   tls_refusal)
from ..users import User, UsersFile, valid_name
from ..wire import (
    ROLE_TASKTRACKER,
    AttemptResult,
    Heartbeat,
    JobInit,
    MapLocation,
    Registration,
    Split,
    TaskError,
)
from .admission import Submitter
from .tracker import JobTracker

#: Seconds a PB peer has to log in before its connection is dropped.
LOGIN_TIMEOUT = 30.0
#: What a peer may send before it has logged in (a login takes a few hundred bytes).
LOGIN_BYTES = 64 << 10
#: Dropped peers said one by one; of a flood beyond them, a sample
#: (``pbwire.FloodSample``): 3,000 garbage connections wrote 3,000 lines.
DROPS_SAID = 20
#: Map output locations in one call: a string Banana sends holds 640 KB,
#: which the locations of 7,200 maps filled (about 90 bytes each), and a
#: reduce launched after them failed to be sent, every attempt.
LOCATIONS_PER_CALL = 2000
#: Seconds a registering worker's shuffle server has to accept a connection.
PROBE_TIMEOUT = 5.0


@implementer(IWorker)
class PBWorker:
    """The calls the jobtracker makes to one tasktracker, over its mind.
    Fire and forget: a lost connection is the disconnect notification's
    business, anything else is logged."""

    log = Logger()

    def __init__(self, mind: pb.RemoteReference) -> None:
        self._mind = mind
        self.name = "a tasktracker"

    def _call(self, method: str, *args: Any) -> None:
        # A call that cannot be sent (Banana refuses it) raises at once: it
        # went up into whatever the jobtracker was doing, which it undid not.
        defer.maybeDeferred(self._mind.callRemote, method, *args).addErrback(
            self._failed, method)

    def _failed(self, failure: Failure, method: str) -> None:
        if failure.check(pb.DeadReferenceError, pb.PBConnectionLost):
            return
        self.log.failure("Remote call {method} to {wid} failed", failure, method=method,
                         wid=self.name)

    def init_job(self, init: JobInit) -> None:
        self._call("init_job", init.job_id, pack(init.to_wire()))

    def _launch(self, method: str, *args: Any) -> None:
        """A launch that cannot be sent raises: the jobtracker fails its
        attempt, and counts only the launches sent (``Heartbeat.launches``)."""
        try:
            d = self._mind.callRemote(method, *args)
        except pb.DeadReferenceError:
            return  # the disconnect notification's business
        d.addErrback(self._failed, method)

    def launch_map(self, job_id: str, attempt_id: str, split: Split) -> None:
        self._launch("launch_map", job_id, attempt_id, split.index,
                     pack(split.to_wire(), surrogates=True))

    def launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                      locations: Sequence[MapLocation]) -> None:
        # A reduce launched once the maps are done (a retry, a resumed job)
        # gets every map's output at once: the rest follow the launch, in
        # order, on this connection.
        self._launch("launch_reduce", job_id, attempt_id, partition,
                     pack([loc.to_wire() for loc in locations[:LOCATIONS_PER_CALL]]))
        self.map_outputs(job_id, locations[LOCATIONS_PER_CALL:])

    def map_outputs(self, job_id: str, locations: Sequence[MapLocation]) -> None:
        for start in range(0, len(locations), LOCATIONS_PER_CALL):
            self._call("map_outputs", job_id, pack(
                [loc.to_wire() for loc in locations[start:start + LOCATIONS_PER_CALL]]))

    def kill_attempt(self, job_id: str, attempt_id: str) -> None:
        self._call("kill_attempt", job_id, attempt_id)

    def destroy_job(self, job_id: str) -> None:
        self._call("destroy_job", job_id)

    def stop(self) -> None:
        self._call("stop")

    def draining(self) -> None:
        # A hint: a tasktracker from before the call does without it.
        defer.maybeDeferred(self._mind.callRemote, "draining").addErrback(lambda _: None)

    async def running_log(self, attempt_id: str) -> str | None:
        try:
            text = await self._mind.callRemote("running_log", attempt_id)
        except Exception:  # lost; or a tasktracker from before the call
            return None
        return text if isinstance(text, str) else None

    def disconnect(self) -> None:
        # Abort, not lose: a stopped peer reads nothing, so a graceful
        # close could wait on our unsent bytes forever.
        transport = self._mind.broker.transport
        if transport is not None:
            transport.abortConnection()


#: Checks that a registering tasktracker's shuffle server answers at the
#: address it advertises: None if it does, else why not.
ShuffleProbe = Callable[[str, int], Awaitable[Optional[str]]]


class _StrictAvatar(pb.Avatar):
    """An avatar whose peer's call of no method, or with arguments its
    method does not take, is refused with one log line: PB logged each
    with a traceback ("Peer will receive following PB traceback"), and
    any user of a cluster with users may send them."""

    log = Logger()

    def perspectiveMessageReceived(self, broker: pb.Broker, message: Any, args: Any,
                                   kw: Any) -> Any:
        args = broker.unserialize(args, self)
        kw = broker.unserialize(kw, self)
        name = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        method = getattr(self, f"perspective_{name}", None)
        try:
            if method is None:
                raise TypeError("no such method")
            state = method(*args, **kw)
        except TypeError as e:
            # Its arguments checked only once the call failed: nothing more
            # per heartbeat. A TypeError from within is the jobtracker's own.
            if method is not None and _takes(method, args, kw):
                raise
            self.log.warn("Refused a malformed call of {m!r} ({e})", m=name[:60], e=str(e)[:200])
            raise pb.Error(f"a malformed call of {name[:60]!r}: {e}") from None
        return broker.serialize(state, self, method, args, kw)


def _takes(method: Callable[..., Any], args: Sequence[Any], kw: dict[str, Any]) -> bool:
    try:
        inspect.signature(method).bind(*args, **kw)
    except TypeError:
        return False
    return True


class TaskTrackerAvatar(_StrictAvatar):
    """A logged-in tasktracker. ``wid`` is set by ``register``."""

    def __init__(self, jt: JobTracker, mind: pb.RemoteReference,
                 probe: ShuffleProbe | None = None) -> None:
        self.jt = jt
        self.worker = PBWorker(mind)
        self.wid: str | None = None
        self._probe = probe
        self._registering = False

    @refusals_as_pb_errors
    def perspective_register(self, info: dict[str, Any]) -> defer.Deferred[str]:
        if self.wid is not None or self._registering:
            raise pb.Error("already registered")
        return defer.Deferred.fromCoroutine(self._register(Registration.from_wire(info)))

    async def _register(self, reg: Registration) -> str:
        """A worker whose reducers' peers could not fetch from it would only
        make maps run again and again: refused, saying why."""
        self._registering = True
        try:
            if self._probe is not None:
                problem = await self._probe(reg.host, reg.port)
                if problem is not None:
                    if CERTIFICATE_NOT_FOR_HOST in problem:
                        remedy = (f"give it a --tls directory whose certificate names "
                                  f"{reg.host} ('python -m pytxmr certs'), or --advertise-host "
                                  f"a name its certificate has")
                    else:
                        remedy = ("start it with --advertise-host set to a name or address "
                                  "other hosts reach it at")
                    self.log.warn("Refused tasktracker {host}:{port}: {problem}",
                                  host=reg.host, port=reg.port, problem=problem)
                    raise wire.Refused(
                        f"this tasktracker advertises its shuffle server as "
                        f"{reg.host}:{reg.port}, which the jobtracker cannot reach ({problem}); "
                        f"{remedy}")
            self._refuse_a_taken_address(reg)  # after the probe: no wait until registered
            self.wid = self.worker.name = self.jt.register(self.worker, reg)
            return self.wid
        finally:
            self._registering = False

    def _refuse_a_taken_address(self, reg: Registration) -> None:
        """Another live tasktracker's shuffle address: its peers would fetch
        from the other. The same process come back on a new connection,
        while its old one lingers (reset where we never saw it), replaces
        its registration: refused, it would have stopped for good."""
        holder = self.jt.worker_at(reg.host, reg.port)
        if holder is None:
            return
        if reg.pid is not None and holder.pid == reg.pid:
            self.log.info("Tasktracker {wid} registers again on a new connection: its old "
                          "one is dropped", wid=holder.wid)
            self.jt.worker_disconnected(holder.wid)
            return
        self.log.warn("Refused tasktracker {host}:{port}: tasktracker {wid} advertises that "
                      "address", host=reg.host, port=reg.port, wid=holder.wid)
        raise wire.Refused(
            f"this tasktracker advertises its shuffle server as {reg.host}:{reg.port}, which "
            f"the live tasktracker {holder.wid} advertises already: give each its own "
            f"--shuffle-port (or --advertise-host)")

    @refusals_as_pb_errors
    def perspective_heartbeat(self, status: bytes) -> float:
        try:
            beat = Heartbeat.from_wire(unpack(status))
        except wire.BadMessage:
            beat = Heartbeat()  # it still says its worker is alive (Heartbeat.from_wire)
        return self.jt.heartbeat(self.wid, beat)

    @refusals_as_pb_errors
    def perspective_attempt_done(self, attempt_id: str, result: bytes) -> None:
        self.jt.attempt_done(self.wid, str(attempt_id), AttemptResult.from_wire(unpack(result)))

    @refusals_as_pb_errors
    def perspective_attempt_failed(self, attempt_id: str, error: bytes) -> None:
        self.jt.attempt_failed(self.wid, str(attempt_id), TaskError.from_wire(unpack(error)))

    @refusals_as_pb_errors
    def perspective_fetch_failed(self, attempt_id: str, map_index: int,
                                 map_attempt_id: str | None = None) -> None:
        if type(map_index) is not int:
            raise wire.BadMessage("fetch_failed takes an attempt id and a map index")
        self.jt.fetch_failed(self.wid, str(attempt_id), map_index,
                             None if map_attempt_id is None else str(map_attempt_id))

    @refusals_as_pb_errors
    def perspective_may_commit(self, attempt_id: str) -> bool:
        return self.jt.may_commit(self.wid, str(attempt_id))

    @refusals_as_pb_errors
    def perspective_commit_ended(self, attempt_id: str) -> None:
        self.jt.commit_ended(self.wid, str(attempt_id))

    @refusals_as_pb_errors
    def perspective_killed_log(self, attempt_id: str, log: bytes) -> None:
        record = unpack(log)
        text = record.get("log") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise wire.BadMessage("killed_log takes an attempt id and its log")
        self.jt.killed_log(self.wid, str(attempt_id), text)

    @refusals_as_pb_errors
    def perspective_drain(self) -> None:
        if self.wid is None:
            raise wire.UnknownWorker("register first")
        self.jt.drain(self.wid)

    @refusals_as_pb_errors
    def perspective_bundle_chunk(self, sha256: str, offset: int) -> bytes:
        if not is_digest(sha256) or type(offset) is not int or offset < 0:
            raise wire.BadMessage("bundle_chunk takes a SHA-256 and an offset")
        return self.jt.bundle_chunk(self.wid, sha256, offset)

    def logout(self) -> None:
        if self.wid is not None:
            self.jt.worker_disconnected(self.wid)


async def probe_shuffle(reactor: Any, host: str, port: int, timeout: float = PROBE_TIMEOUT,
                        tls: ClusterTLS | None = None) -> str | None:
    """None if a pytxmr shuffle server greets a connection to ``host:port``
    within ``timeout`` (with ``tls``, after a handshake in which it shows a
    certificate of the cluster CA for ``host``): a worker that advertised
    another server's port (the jobtracker's own) was taken, and its
    reducers' peers waited out their fetch timeouts there."""
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is not None:
        endpoint = tls.wrap_client(host, endpoint)
    greeting = _Greeting()
    factory = protocol.Factory.forProtocol(lambda: greeting)
    factory.noisy = False
    timer = reactor.callLater(timeout, greeting.done.cancel)
    try:
        await endpoint.connect(factory)
        await greeting.done
    except defer.CancelledError:
        return f"no shuffle server's greeting in {timeout:g}s"
    except Exception as e:  # ConnectError, DNSLookupError, timeouts: all say "no"
        return str(e) or type(e).__name__
    finally:
        if timer.active():
            timer.cancel()
        if greeting.transport is not None:  # whatever answered, or did not: we are done
            greeting.transport.abortConnection()
    return None


class _Greeting(protocol.Protocol):
    """Fires ``done`` once the server's first bytes are a shuffle server's
    greeting; fails it on others, or when the connection ends first (a
    certificate the probe does not accept)."""

    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()
        self._received = b""

    def dataReceived(self, data: bytes) -> None:
        self._received += data
        if self.done.called or len(self._received) < len(shuffle.MAGIC):
            return
        if self._received.startswith(shuffle.MAGIC):
            self.done.callback(None)
        else:
            self.done.errback(ConnectionError("what answers there is not a pytxmr shuffle "
                                              "server"))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            why = tls_refusal(reason)
            self.done.errback(ConnectionError(
                f"the TLS handshake failed: {why}" if why else "the connection closed "
                "before the shuffle server's greeting"))


class ClientAvatar(_StrictAvatar):
    """A logged-in submitter or job-control client: a user (who may kill
    and read the logs of their own jobs, or of all as an administrator), or
    (None) a holder of the cluster secret where there are no users, who may
    do anything and whose jobs are owned by the name its client sends."""

    def __init__(self, jt: JobTracker, user: User | None = None) -> None:
        self.jt = jt
        self.user = user
        #: Names this session's uploads apart from another's of the same bundle.
        self.upload = os.urandom(8).hex()
        #: Its submissions in progress are withdrawn when it logs out.
        self.submitter = Submitter()

    def logout(self) -> None:
        self.submitter.lost()

    @refusals_as_pb_errors
    def perspective_has_bundle(self, sha256: str) -> bool:
        if not is_digest(sha256):
            raise wire.BadMessage("has_bundle takes a SHA-256")
        return self.jt.has_bundle(sha256)

    @refusals_as_pb_errors
    def perspective_put_bundle(self, sha256: str, size: int, offset: int, data: bytes) -> bool:
        if not (is_digest(sha256) and type(size) is int and type(offset) is int
                and isinstance(data, bytes)):
            raise wire.BadMessage("put_bundle takes a SHA-256, a size, an offset and bytes")
        return self.jt.put_bundle(self.upload, sha256, size, offset, data)

    @refusals_as_pb_errors
    def perspective_submit(self, spec: dict[str, Any]) -> defer.Deferred[str]:
        if self.user is not None:
            owner, may_replace = self.user.name, self.user.may_control
        else:  # one secret's holders: who they say, and any may replace any output
            claimed = spec.get("user") if isinstance(spec, dict) else None
            owner = claimed if isinstance(claimed, str) and valid_name(claimed) else ""
            may_replace = None
        return defer.Deferred.fromCoroutine(
            self.jt.submit(spec, owner=owner, may_replace=may_replace, submitter=self.submitter))

    def _may_control(self, job_id: str, what: str) -> None:
        if self.user is None:
            return
        owner = self.jt.owner(str(job_id))
        if not self.user.may_control(owner):
            raise wire.NotAllowed(f"job {job_id} belongs to {owner or 'nobody'}: only they or "
                                  f"an administrator may {what}")

    @refusals_as_pb_errors
    def perspective_wait(self, job_id: str) -> defer.Deferred[dict[str, Any]]:
        return self.jt.wait(job_id)

    @refusals_as_pb_errors
    def perspective_status(self, job_id: str) -> dict[str, Any]:
        return self.jt.status(job_id)

    @refusals_as_pb_errors
    def perspective_jobs(self) -> list[dict[str, Any]]:
        return self.jt.list_jobs()

    @refusals_as_pb_errors
    def perspective_workers(self) -> list[dict[str, Any]]:
        return self.jt.workers_view()

    @refusals_as_pb_errors
    def perspective_drain(self, worker: str) -> dict[str, Any]:
        if self.user is not None and not self.user.admin:
            raise wire.NotAllowed("only an administrator may drain a tasktracker")
        return self.jt.drain(str(worker))

    @refusals_as_pb_errors
    def perspective_kill(self, job_id: str) -> dict[str, Any]:
        self._may_control(job_id, "kill it")
        return self.jt.kill(job_id)

    @refusals_as_pb_errors
    def perspective_logs(self, job_id: str,
                         which: str | None = None) -> defer.Deferred[list[dict[str, Any]]]:
        self._may_control(job_id, "read its logs")
        return defer.Deferred.fromCoroutine(
            self.jt.logs(str(job_id), None if which is None else str(which)))


@implementer(portal.IRealm)
class JobTrackerRealm:
    def __init__(self, jt: JobTracker, probe: ShuffleProbe | None = None,
                 workers_need_certificates: bool = False,
                 users: UsersFile | None = None) -> None:
        self.jt = jt
        self.probe = probe
        self.workers_need_certificates = workers_need_certificates
        self.users = users

    def requestAvatar(self, avatar_id: bytes, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("only PB perspectives")
        if not isinstance(mind, pb.RemoteReference):
            raise pb.Error("log in with a mind (a pb.Referenceable)")
        broker = mind.broker
        if isinstance(broker, _GuardedBroker):
            broker.logged_in()
        if avatar_id == ROLE_TASKTRACKER:
            if self.workers_need_certificates and peer_certificate(broker.transport) is None:
                # The TLS layer checked any certificate sent; none was.
                raise NoCertificate("a tasktracker must show a certificate of the cluster "
                                    "CA (start it with --tls DIR)")
            avatar: Any = TaskTrackerAvatar(self.jt, mind, self.probe)
            return pb.IPerspective, avatar, avatar.logout
        client = ClientAvatar(self.jt, self._user(avatar_id))
        return pb.IPerspective, client, client.logout

    def _user(self, avatar_id: bytes) -> User | None:
        """Who a client is; None when there are no users (the cluster
        secret's clients may do anything, and name themselves)."""
        if not avatar_id.startswith(USER_PREFIX):
            return None
        name = avatar_id[len(USER_PREFIX):].decode("utf-8")
        verifier = self.users.get(name) if self.users is not None else None
        return User(name, admin=verifier is not None and verifier.admin)


class _GuardedBroker(Broker):
    """A broker that drops a peer speaking something other than PB (a port
    scan, an HTTP request) with one log line instead of a traceback, and
    one that does not log in within LOGIN_TIMEOUT or LOGIN_BYTES."""

    log = Logger()
    _deadline: Any = None
    #: Bytes received before the login (None once logged in).
    _before_login: int | None = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        # A peer must log in within LOGIN_TIMEOUT: connections that never
        # do would otherwise hold a file descriptor each, for ever.
        self._deadline = self.factory.clock.callLater(LOGIN_TIMEOUT, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._before_login is not None:
            # Banana nests lists without a limit: 10 MB of list openings
            # from anyone who could connect took the jobtracker to 700 MB.
            self._before_login += len(data)
            if self._before_login > LOGIN_BYTES:
                self._drop(f"{self._before_login:,} bytes and no login")
                return
        super().dataReceived(data)

    def logged_in(self) -> None:
        self._before_login = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()

    def _too_slow(self) -> None:
        self._drop(f"no login in {LOGIN_TIMEOUT:g}s")

    def _drop(self, why: str) -> None:
        self._say(why)
        self.transport.abortConnection()

    def _say(self, why: str) -> None:
        """One line per dropped peer, but of a flood a few: the first ones,
        the first from each host (one misconfigured is not lost among a
        scan's), a sample of the rest."""
        peer = self.transport.getPeer()
        host = getattr(peer, "host", peer)
        dropped = self.factory.dropped
        if dropped.say(host):
            self.log.warn("Dropped a connection from {host}:{port}: {why} ({n} so far)",
                          host=host, port=getattr(peer, "port", ""), why=why, n=dropped.count)

    def connectionLost(self, reason: Any) -> None:
        self.logged_in()  # cancels the deadline
        super().connectionLost(reason)

    def garbled(self, e: Exception) -> None:
        peer = self.transport.getPeer()
        host, port = getattr(peer, "host", peer), getattr(peer, "port", "")
        if is_tls_record(self.first_bytes):  # tls.speaks_tls: a late greeting, no attack
            self.log.info("A plain-text client at {host}:{port} asked whether this port "
                          "speaks TLS: it does not", host=host, port=port)
            return
        self._say(f"not PB ({type(e).__name__}: {e})")


class _LoginWrapper(pb._PortalWrapper):
    """What a peer may call before it logs in: the login methods (PB's, and
    a user's, ``auth.user_login``); anything else is refused with one log
    line (PB would log a traceback)."""

    log = Logger()

    def __init__(self, portal: portal.Portal, broker: pb.Broker,
                 users: UsersFile | None, decoy_key: bytes) -> None:
        super().__init__(portal, broker)
        self.users = users
        self.decoy_key = decoy_key

    def remoteMessageReceived(self, broker: pb.Broker, message: str, args: Any,
                              kw: Any) -> Any:
        if message not in ("login", "loginAnonymous", "user_login"):
            self.log.warn("Refused a call of {m!r} before login", m=str(message)[:60])
            raise pb.Error("log in first")
        try:
            return super().remoteMessageReceived(broker, message, args, kw)
        except pb.Error:
            raise
        except Exception as e:  # arguments of the wrong shape (PB's own check fails)
            self.log.warn("Refused a malformed call of {m!r} before login ({e})", m=message,
                          e=f"{type(e).__name__}: {e}")
            raise pb.Error("a malformed call") from None

    def remote_user_login(self, client_first: str) -> list[Any]:
        if self.users is None:
            raise NoUsers("this jobtracker has no users file: log in with the cluster "
                          "secret (no --user)")
        if not isinstance(client_first, str) or len(client_first) > 4096:
            raise pb.Error("user_login takes SCRAM's first message")
        try:
            server, name = scram_server(self.users, client_first, self.decoy_key)
        except NoUsers as e:  # the users file is broken or gone: nobody gets in
            self.log.error("Refused a user login: {why}", why=str(e))
            raise
        return [server.get_server_first(), _UserChallenger(self.portal, self.broker, name,
                                                           server)]


class _UserChallenger(pb.Referenceable, pb._JellyableAvatarMixin):
    """The second half of one user's login (``auth.user_login``)."""

    def __init__(self, portal: portal.Portal, broker: pb.Broker, name: str,
                 server: Any) -> None:
        self.portal = portal
        self.broker = broker
        self._proof: ScramProof | None = ScramProof(name, server, "")

    def remote_finish(self, client_final: str, mind: Any) -> defer.Deferred[list[Any]]:
        proof, self._proof = self._proof, None
        if proof is None or not isinstance(client_final, str):
            raise pb.Error("finish takes SCRAM's final message, once")
        proof.client_final = client_final
        d = self.portal.login(proof, mind, pb.IPerspective)
        d.addCallback(self._cbLogin)
        d.addCallback(lambda perspective: [proof.server_final, perspective])
        return d


@implementer(pb.IPBRoot)
class _LoginRoot(pb._PortalRoot):
    """PB's root for a portal (private in Twisted, stable for two decades),
    handing out the wrapper above."""

    def __init__(self, portal: portal.Portal, users: UsersFile | None,
                 decoy_key: bytes) -> None:
        super().__init__(portal)
        self.users = users
        self.decoy_key = decoy_key

    def rootObject(self, broker: pb.Broker) -> _LoginWrapper:
        return _LoginWrapper(self.portal, broker, self.users, self.decoy_key)


def pb_factory(jt: JobTracker, secret: bytes, clock: Any, probe: ShuffleProbe | None = None,
               *, workers_need_certificates: bool = False,
               users: UsersFile | None = None) -> pb.PBServerFactory:
    """The PB server; ``probe`` checks registering workers' shuffle servers
    (the daemon's: ``probe_shuffle``); with TLS, tasktrackers must log in
    over a connection on which they showed a certificate; with ``users``,
    people log in as users, and the cluster secret is the workers' only."""
    checkers = [SecretChecker(secret, clients=users is None), AnonymousRefused()]
    if users is not None:
        checkers.append(UsersChecker())
    realm = JobTrackerRealm(jt, probe, workers_need_certificates, users)
    factory = pb.PBServerFactory(_LoginRoot(portal.Portal(realm, checkers), users,
                                            decoy_key(secret)))
    factory.protocol = _GuardedBroker
    factory.noisy = False
    factory.clock = clock
    factory.dropped = FloodSample(DROPS_SAID)  # _GuardedBroker._say
    return factory
