"""The tasktracker daemon as a tree of services: its work dir and shuffle
memory, its zygote (unless ``run`` shares one), the shuffle server, the
connection to the jobtracker and the heartbeat. Started in that order,
stopped in the reverse one (``services.AsyncMultiService``): the
heartbeat stops first, the attempts end with the connection, and the
store goes last, once no child can write into it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, endpoints, task
from twisted.logger import Logger

from .. import addresses, shuffle, shufflememory
from ..child import Zygote
from ..daemon import FatalError, write_ready_file
from ..services import AsyncMultiService, CallbackService, DaemonReactor, zygote_service
from ..shufflememory import ShuffleMemory
from ..sizes import format_size
from ..trees import remove_tree
from ..wire import DEFAULT_HEARTBEAT, CallRefused, Heartbeat, Registration, Unreachable
from .fetch import FetchPolicy
from .pbadapter import DEFAULT_KEEP_OUTPUTS, JobTrackerConnection
from .worker import TaskTracker

if TYPE_CHECKING:
    from ..tls import ClusterTLS


@dataclass(frozen=True)
class Config:
    jobtracker: str
    slots: int
    #: The shuffle server's endpoint (None: ``shuffle_port`` on the
    #: advertised address, see ``pytxmr.addresses``).
    shuffle_listen: str | None
    #: What reducers on other hosts connect to (None: the local address
    #: this host reaches the jobtracker from).
    advertise_host: str | None
    workdir: str
    secret_file: str | None = None
    ready_file: str | None = None
    heartbeat: float = DEFAULT_HEARTBEAT
    task_timeout: float | None = None
    task_memory: int | None = None
    #: RAM for fetched runs over all reduce attempts (None: the default, 0: none)
    shuffle_memory: int | None = None
    #: the tmpfs the shuffle memory lives in
    shuffle_memory_root: str = shufflememory.SHM_ROOT
    shuffle_port: int = 0
    fetch: FetchPolicy = FetchPolicy()
    #: TLS on our PB connection, shuffle server and fetches (None: plain TCP).
    tls: ClusterTLS | None = None
    keep_outputs: float = DEFAULT_KEEP_OUTPUTS


class TaskTrackerService(AsyncMultiService):
    """The worker daemon; ``tt`` is its logic."""

    log = Logger()

    def __init__(self, reactor: DaemonReactor, config: Config, secret: bytes,
                 zygote: Zygote | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self.config = config
        zygote, own = zygote_service(reactor, zygote)
        self.tt = TaskTracker(reactor, reactor, config.workdir, config.slots, zygote=zygote,
                              task_timeout=config.task_timeout,
                              task_memory=config.task_memory, fetch_policy=config.fetch,
                              tls=config.tls)
        #: The host name (or address) reducers are told to fetch from.
        self.advertise_host = config.advertise_host or ""
        self._memory_lock: Any = None
        self._shuffle_port: Any = None
        self._shuffle_factory: shuffle.ShuffleServerFactory | None = None
        CallbackService("store", self._start_store, self._stop_store).setServiceParent(self)
        if own is not None:
            own.setServiceParent(self)
        CallbackService("shuffle server", self._listen,
                        self._stop_listening).setServiceParent(self)
        self.connection = JobTrackerConnection(reactor, config.jobtracker, secret, self.tt,
                                               self._registration, config.tls,
                                               config.keep_outputs,
                                               on_registered=self._registered_as)
        self.connection.setServiceParent(self)
        #: Seconds between heartbeats: ours, or longer if the jobtracker asks.
        self.heartbeat_interval = config.heartbeat
        self._beats = task.LoopingCall(self._beat)
        self._beats.clock = reactor
        CallbackService("heartbeat", lambda: self._start_beats(now=True),
                        self._stop_beats).setServiceParent(self)
        #: Ends the daemon (``JobTrackerConnection.ended``).
        self.ended = self.connection.ended

    def _start_store(self) -> None:
        os.makedirs(self.config.workdir, exist_ok=True)
        self.tt.store.startup_cleanup()
        # Bundles of jobs a crashed run had: fetched again by hash if needed.
        shutil.rmtree(self.tt.bundles.root, ignore_errors=True)
        self._start_memory()

    def _stop_store(self) -> None:
        remove_tree(self.tt.store.root, ignore_errors=True)
        shutil.rmtree(self.tt.bundles.root, ignore_errors=True)
        self._stop_memory()

    def _start_memory(self) -> None:
        """Claim this work dir's tmpfs directory (emptied of what a crashed
        predecessor left) and size the budget; on any trouble, runs go to disk."""
        budget = self.config.shuffle_memory
        if budget == 0:
            return
        root = self.config.shuffle_memory_root
        for path in shufflememory.remove_orphans(root):
            self.log.info("Removed {path}, the fetched runs of a crashed tasktracker",
                          path=path)
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

    async def _listen(self) -> None:
        self._shuffle_factory = shuffle.ShuffleServerFactory(self.tt.store, self._reactor)
        listen = self.config.shuffle_listen
        if not listen or not self.advertise_host:
            advertise, listen = self._addresses()
        try:
            endpoint = endpoints.serverFromString(self._reactor, listen)
        except ValueError as e:  # e.g. "invalid literal for int()" of a port
            raise FatalError(f"--shuffle-listen {listen}: not an endpoint to listen on "
                             f"({e}); e.g. tcp:7380:interface=10.0.0.7") from None
        factory: Any = self._shuffle_factory
        if self.config.tls is not None:  # reducers must show a certificate of our CA
            factory = self.config.tls.wrap_server(factory, self._reactor, require_peer=True)
        self._shuffle_port = await endpoint.listen(factory)
        self.shuffle_port = self._shuffle_port.getHost().port
        self.log.info("Shuffle server listening on {host}:{port}, advertised as {adv}",
                      host=self._shuffle_port.getHost().host, port=self.shuffle_port,
                      adv=self.advertise_host)

    def _addresses(self) -> tuple[str, str]:
        """The advertised host and the shuffle server's endpoint, defaults
        filled in (``pytxmr.addresses``)."""
        config = self.config
        if not self.advertise_host:
            target = addresses.endpoint_host_port(config.jobtracker)
            try:
                self.advertise_host = (addresses.local_address_toward(*target)
                                       if target else "127.0.0.1")
            except OSError as e:
                raise FatalError(f"cannot tell which address reaches the jobtracker "
                                 f"({e}): give --advertise-host") from None
        if config.shuffle_listen:
            return self.advertise_host, config.shuffle_listen
        try:
            interface = addresses.listen_address(self.advertise_host)
        except OSError as e:
            raise FatalError(f"cannot resolve the advertised host {self.advertise_host} "
                             f"({e}): give --shuffle-interface") from None
        interface = interface.replace(":", "\\:")
        return self.advertise_host, f"tcp:{config.shuffle_port}:interface={interface}:backlog=1024"

    async def _stop_listening(self) -> None:
        if self._shuffle_port is not None:
            await self._shuffle_port.stopListening()
        if self._shuffle_factory is not None:
            await self._shuffle_factory.disconnect_all()

    def _registration(self) -> Registration:
        # A new login may reach another jobtracker (a restarted one, an
        # older one): its expiry counts from our registration, so we
        # heartbeat at our own pace until it asks for another.
        self._adopt_interval(None)
        return Registration(self.advertise_host, self.shuffle_port, self.config.slots,
                            os.getpid(), held=self.tt.held_outputs(),
                            committing=tuple(sorted(self.tt.committing)))

    def _beat(self) -> None:
        jobtracker = self.tt.jobtracker
        if jobtracker is None:
            return
        memory = self.tt.memory
        beat = Heartbeat(tuple(sorted(self.tt.attempts)), (memory.used, memory.budget),
                         self.tt.progress(), self.tt.launches, tuple(sorted(self.tt.committing)))

        async def send() -> None:
            try:
                interval = await jobtracker.heartbeat(beat)
            except CallRefused as e:
                # Declared lost while we were away (e.g. stopped): start afresh.
                self.log.warn("Heartbeat refused ({e}); logging in again", e=e)
                self.connection.relogin()
                return
            except Unreachable:
                return  # the disconnect notification handles it
            if self.tt.jobtracker is jobtracker:
                self._adopt_interval(interval)

        defer.Deferred.fromCoroutine(send())

    def _adopt_interval(self, asked: float | None) -> None:
        """Heartbeat every ``asked`` seconds, as the jobtracker answered the
        last heartbeat, but never more often than our own interval; at our
        own if it asked for none (a jobtracker from before it did). The
        next heartbeat then comes one new interval from now, the moment the
        jobtracker counts our expiry from."""
        own = self.config.heartbeat
        interval = own if asked is None else max(own, asked)
        if interval == self.heartbeat_interval:
            return
        self.log.debug("Heartbeating every {s:g}s", s=interval)
        self.heartbeat_interval = interval
        if self._beats.running:
            self._beats.stop()
            self._start_beats(now=False)

    def _start_beats(self, now: bool) -> None:
        # Its Deferred fires when the loop stops, and fails only if a beat raised.
        self._beats.start(self.heartbeat_interval, now=now).addErrback(
            lambda f: self.log.failure("Heartbeats stopped", f))

    def _stop_beats(self) -> None:
        if self._beats.running:
            self._beats.stop()

    async def registered(self) -> str:
        """The worker id of the first registration."""
        return await self.connection.first_registration

    def _registered_as(self, wid: str) -> None:
        """Each registration writes the ready file: a jobtracker that
        restarted gives every worker a new id, and ``drain`` of the old one
        drained another worker."""
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, {
                "shuffle_port": self.shuffle_port, "wid": wid, "pid": os.getpid()})


def make_service(config: Config, reactor: DaemonReactor, *, secret: bytes,
                 zygote: Zygote | None = None) -> TaskTrackerService:
    """The tasktracker daemon, not started (``await svc.startService()``)."""
    return TaskTrackerService(reactor, config, secret, zygote)
