"""The jobtracker daemon as a tree of services: its zygote (for module
checks; unless ``run`` shares one), the jobs (``JobTracker``), the PB
listener, the status site and, last, the ready file. Started in that order,
stopped in the reverse one (``services.AsyncMultiService``)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, endpoints
from twisted.logger import Logger

from ..child import Zygote
from ..daemon import FatalError, write_ready_file
from ..history import DEFAULT_RETENTION as DEFAULT_HISTORY_RETENTION
from ..journal import JournalError
from ..services import AsyncMultiService, CallbackService, DaemonReactor, zygote_service
from .heartbeats import DEFAULT_HEARTBEATS_PER_SECOND
from .submission import DEFAULT_MAX_TASKS_PER_JOB
from .pbadapter import pb_factory, probe_shuffle
from .tracker import DEFAULT_CHECK_TIMEOUT, DEFAULT_EXPIRY, DEFAULT_RESUME_GRACE, JobTracker

if TYPE_CHECKING:
    from ..tls import ClusterTLS
    from ..users import UsersFile


@dataclass(frozen=True)
class Config:
    listen: str
    workdir: str
    secret_file: str | None = None
    ready_file: str | None = None
    expiry: float = DEFAULT_EXPIRY
    check_timeout: float = DEFAULT_CHECK_TIMEOUT
    #: The status site's endpoint string; None: no status site.
    web_listen: str | None = None
    #: Basic auth on the status site even on loopback (beyond, always).
    web_auth: bool = False
    history_retention: int = DEFAULT_HISTORY_RETENTION
    #: Refuse a registering worker whose advertised shuffle server does not
    #: answer the jobtracker (off where the jobtracker does not see the
    #: workers as they see each other).
    check_shuffle: bool = True
    #: TLS on the PB port, the status site and the shuffle probe (None: plain TCP).
    tls: ClusterTLS | None = None
    #: People's logins (None: clients log in with the cluster secret).
    users: UsersFile | None = None
    resume_grace: float = DEFAULT_RESUME_GRACE
    #: The cluster's heartbeats a second, which sets each worker's interval
    #: once the cluster is large (``heartbeats.Pacing``).
    heartbeats_per_second: float = DEFAULT_HEARTBEATS_PER_SECOND
    #: The most maps and reduces a step of a job may have.
    max_tasks_per_job: int = DEFAULT_MAX_TASKS_PER_JOB


class JobTrackerService(AsyncMultiService):
    """The jobtracker daemon; ``port`` and ``web_port`` once started."""

    log = Logger()

    def __init__(self, reactor: DaemonReactor, config: Config, secret: bytes,
                 checkers: Zygote | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self.config = config
        self._secret = secret
        zygote, own = zygote_service(reactor, checkers)
        if own is not None:
            own.setServiceParent(self)
        self.jt = JobTracker(reactor, reactor, config.workdir, expiry=config.expiry,
                             check_timeout=config.check_timeout,
                             history_retention=config.history_retention, checkers=zygote,
                             resume_grace=config.resume_grace,
                             heartbeats_per_second=config.heartbeats_per_second,
                             max_tasks_per_job=config.max_tasks_per_job,
                             metrics=bool(config.web_listen))
        self._port: Any = None
        self.port: int | None = None
        #: Where it listens, as its log says it: "port 7373", or a socket's path.
        self.listening = ""
        self.web: Any = None
        self.web_port: int | None = None
        for name, start, stop in (("jobs", self._start_jobs, self._stop_jobs),
                                  ("pb", self._listen, self._stop_listening),
                                  ("status site", self._start_web, self._stop_web),
                                  ("ready", self._ready, lambda: None)):
            CallbackService(name, start, stop).setServiceParent(self)

    def _start_jobs(self) -> None:
        try:
            self.jt.start()
        except JournalError as e:
            raise FatalError(str(e)) from None

    async def _stop_jobs(self) -> None:
        await self.jt.stop()
        await self.jt.history.flush()

    async def _listen(self) -> None:
        try:
            endpoint = endpoints.serverFromString(self._reactor, self.config.listen)
        except ValueError as e:  # e.g. "invalid literal for int()" of a port
            raise FatalError(f"--listen {self.config.listen}: not an endpoint to listen on "
                             f"({e}); e.g. tcp:7373:interface=10.0.0.5") from None
        tls = self.config.tls
        probe = (functools.partial(probe_shuffle, self._reactor, tls=tls)
                 if self.config.check_shuffle else None)
        factory: Any = pb_factory(self.jt, self._secret, self._reactor, probe,
                                  workers_need_certificates=tls is not None,
                                  users=self.config.users)
        if tls is not None:  # tasktrackers' certificates checked, clients' optional
            factory = tls.wrap_server(factory, self._reactor, require_peer=False)
        self._port = await endpoint.listen(factory)
        host = self._port.getHost()
        self.port = getattr(host, "port", None)  # None on a UNIX socket
        self.listening = f"port {self.port}" if self.port is not None else os.fsdecode(host.name)

    async def _stop_listening(self) -> None:
        if self._port is not None:
            # A port already closed answers None, not a Deferred.
            await defer.maybeDeferred(self._port.stopListening)

    async def _start_web(self) -> None:
        if not self.config.web_listen:
            return
        # Imported here: twisted.web is 20 ms of every `run`'s start,
        # whose jobtracker has no status site.
        from ..web import StatusServer

        self.web = StatusServer(self._reactor, self.jt, self.config.web_listen,
                                self._secret, self.config.web_auth, tls=self.config.tls,
                                logs=self.config.users is None)
        self.web_port = await self.web.start()

    async def _stop_web(self) -> None:
        if self.web is not None:
            await self.web.stop()

    def _ready(self) -> None:
        self.log.info("Jobtracker listening on {where} (work dir {workdir})",
                      where=self.listening, workdir=self.config.workdir)
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, {"port": self.port, "pid": os.getpid(),
                                                      "web_port": self.web_port})


def make_service(config: Config, reactor: DaemonReactor, *, secret: bytes,
                 checkers: Zygote | None = None) -> JobTrackerService:
    """The jobtracker daemon, not started (``await svc.startService()``)."""
    return JobTrackerService(reactor, config, secret, checkers)
