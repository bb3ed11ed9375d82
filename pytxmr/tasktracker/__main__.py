"""``python -m pytxmr.tasktracker``: parse the command line into a frozen
``Config``, claim a work dir, build the service, run it until
SIGTERM/SIGINT (or until the jobtracker refuses us)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from dataclasses import replace
from typing import Any, Sequence

from twisted.internet import defer

from ..daemon import add_logging_options, claim_workdir, lock_workdir, notify_ready, run_daemon
from .. import addresses
from ..secret import load_secret
from ..tls import ClusterTLS, TLSError
from ..sizes import size_argument
from ..wire import DEFAULT_HEARTBEAT, DEFAULT_PORT, jobtracker_endpoint
from .fetch import FetchPolicy
from .pbadapter import DEFAULT_KEEP_OUTPUTS
from .service import Config, TaskTrackerService, make_service


def parse_args(argv: Sequence[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m pytxmr.tasktracker",
                                description="The pytxmr tasktracker (worker) daemon.")
    p.add_argument("--jobtracker", default=f"127.0.0.1:{DEFAULT_PORT}",
                   help=f"jobtracker HOST:PORT (default 127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                   help="task processes at once (default: CPU count)")
    p.add_argument("--shuffle-port", type=int, default=0,
                   help="shuffle server port (default 0: a free port)")
    p.add_argument("--shuffle-interface",
                   help="address the shuffle server listens on (default: the advertised "
                        "address; 0.0.0.0 for every interface)")
    p.add_argument("--shuffle-listen", help="Twisted endpoint string for the shuffle server")
    p.add_argument("--advertise-host",
                   help="host name or address reducers on other hosts use to reach this "
                        "worker's shuffle server (default: the local address this host "
                        "reaches the jobtracker from)")
    p.add_argument("--fetch-connect-timeout", type=_seconds, default=FetchPolicy.connect_timeout,
                   help="seconds a reducer waits to connect to another worker's shuffle "
                        f"server (default {FetchPolicy.connect_timeout:g})")
    p.add_argument("--fetch-timeout", type=_seconds, default=FetchPolicy.timeout,
                   help="seconds a connected shuffle server may stay silent (default "
                        f"{FetchPolicy.timeout:g})")
    p.add_argument("--fetch-retries", type=int, default=FetchPolicy.retries,
                   help="tries of a map output before the jobtracker is told it cannot be "
                        f"fetched (default {FetchPolicy.retries})")
    p.add_argument("--workdir", help="work directory (default ~/.pytxmr/tasktracker, or "
                   "tasktracker-2, -3... when another tasktracker of this host holds it)")
    p.add_argument("--secret-file", help="cluster secret file")
    p.add_argument("--ready-file", help="write JSON with the shuffle port and wid here "
                   "once registered")
    p.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT,
                   help="seconds between heartbeats, at the least (a jobtracker of a large "
                        "cluster asks for longer: its --heartbeats-per-second)")
    p.add_argument("--task-timeout", type=float, default=None,
                   help="kill a task attempt that makes no progress (reads or writes "
                        "nothing) for this many seconds")
    p.add_argument("--task-memory", type=size_argument, default=None,
                   help="address-space cap of each task process, e.g. 2G (a task over it "
                        "fails with MemoryError; the tasktracker is unaffected)")
    p.add_argument("--shuffle-memory", type=_budget_argument, default=None,
                   help="fetched map outputs this worker keeps in RAM (a tmpfs directory "
                        "under /dev/shm) at once, over all its reduces; beyond it they go "
                        "to disk (default: 256M, or half the free space of /dev/shm if "
                        "less; 0: always disk)")
    p.add_argument("--keep-outputs", type=float, default=DEFAULT_KEEP_OUTPUTS,
                   help="seconds completed map outputs are kept after losing the jobtracker, "
                        "for a restarted one to resume its jobs with (default "
                        f"{DEFAULT_KEEP_OUTPUTS:g}; 0: drop them at once)")
    p.add_argument("--tls", metavar="DIR",
                   help="TLS to the jobtracker, on the shuffle server and to other workers: "
                        "DIR holds ca.pem, cert.pem and key.pem ('python -m pytxmr certs')")
    add_logging_options(p)
    a = p.parse_args(argv)
    if a.slots < 1:
        p.error("--slots must be at least 1")
    if a.fetch_retries < 1:
        p.error("--fetch-retries must be at least 1")
    if not a.heartbeat > 0:
        p.error("--heartbeat must be more than 0 seconds")
    try:
        jt = jobtracker_endpoint(a.jobtracker)
    except ValueError as e:
        p.error(str(e))
    # A burst of reducers connects at once: a short backlog means 1 s retries.
    # (None: on the advertised address, decided at start.)
    listen = a.shuffle_listen or (
        f"tcp:{a.shuffle_port}:interface={a.shuffle_interface}:backlog=1024"
        if a.shuffle_interface else None)
    # "": claimed at start (the default work dir, or -2, -3... beside it).
    workdir = os.path.abspath(a.workdir) if a.workdir else ""
    fetch = FetchPolicy(a.fetch_connect_timeout, a.fetch_timeout, a.fetch_retries)
    try:
        tls = ClusterTLS.load(a.tls, need_own=True) if a.tls else None
    except TLSError as e:
        p.error(str(e))
    if tls is not None and addresses.endpoint_host_port(jt) is None:
        p.error("with --tls, give --jobtracker as HOST:PORT")
    return Config(jt, a.slots, listen, a.advertise_host, workdir,
                  a.secret_file, a.ready_file, a.heartbeat, a.task_timeout, a.task_memory,
                  a.shuffle_memory, shuffle_port=a.shuffle_port, fetch=fetch, tls=tls,
                  keep_outputs=a.keep_outputs), a


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _budget_argument(text: str) -> int:
    """A size, or zero in any spelling (off)."""
    if re.fullmatch(r"\s*0*(\.0*)?\s*([KMGTP]i?B?|B)?\s*", text, re.IGNORECASE) and "0" in text:
        return 0
    return size_argument(text)


def main(argv: Sequence[str] | None = None) -> None:
    config, args = parse_args(sys.argv[1:] if argv is None else argv)
    locks: list[Any] = []  # held for the daemon's life

    async def start(reactor: Any) -> TaskTrackerService:
        secret = load_secret(config.secret_file)
        workdir = config.workdir
        if workdir:
            locks.append(lock_workdir(workdir, "tasktracker"))
        else:
            workdir, lock = claim_workdir(os.path.join(os.path.expanduser("~"), ".pytxmr",
                                                       "tasktracker"))
            locks.append(lock)
        svc = make_service(replace(config, workdir=workdir), reactor, secret=secret)
        await svc.startService()
        # SIGUSR1: drain (as `pytxmr drain`), then stop; from the handler,
        # only a hand-over to the reactor is safe.
        signal.signal(signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(
            lambda: defer.Deferred.fromCoroutine(svc.connection.request_drain())))
        registered = defer.Deferred.fromCoroutine(svc.registered())
        registered.addCallback(lambda wid: notify_ready(f"registered as {wid}"))
        registered.addErrback(lambda f: None)
        return svc

    run_daemon(start, args, "tasktracker")


if __name__ == "__main__":
    main()
