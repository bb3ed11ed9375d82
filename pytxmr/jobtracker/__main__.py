"""``python -m pytxmr.jobtracker``: parse the command line into a frozen
``Config``, build the service, run it until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from ..daemon import add_logging_options, lock_workdir, notify_ready, run_daemon
from ..history import DEFAULT_RETENTION as DEFAULT_HISTORY_RETENTION
from ..secret import load_secret
from ..tls import ClusterTLS, TLSError
from ..users import UsersError, load_users
from ..wire import DEFAULT_PORT, DEFAULT_WEB_PORT
from .heartbeats import DEFAULT_HEARTBEATS_PER_SECOND, MISSED_HEARTBEATS
from .service import Config, JobTrackerService, make_service
from .submission import DEFAULT_MAX_TASKS_PER_JOB
from .tracker import DEFAULT_CHECK_TIMEOUT, DEFAULT_EXPIRY, DEFAULT_RESUME_GRACE


def parse_args(argv: Sequence[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m pytxmr.jobtracker",
                                description="The pytxmr jobtracker (master) daemon.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"PB port (default {DEFAULT_PORT}; 0 picks a free port)")
    p.add_argument("--interface", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for a cluster)")
    p.add_argument("--listen", help="Twisted endpoint string; overrides --port/--interface")
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".pytxmr",
                                                     "jobtracker"),
                   help="work directory (default ~/.pytxmr/jobtracker)")
    p.add_argument("--secret-file", help="cluster secret file (default: the secret itself "
                   "in $PYTXMR_SECRET, else ~/.pytxmr/cluster-secret, created on first start)")
    p.add_argument("--ready-file", help="write JSON with the bound port here once listening")
    p.add_argument("--expiry", type=float, default=DEFAULT_EXPIRY,
                   help=f"seconds without heartbeat before a tasktracker is lost "
                        f"(default {DEFAULT_EXPIRY:g})")
    p.add_argument("--heartbeats-per-second", type=float,
                   default=DEFAULT_HEARTBEATS_PER_SECOND,
                   help="heartbeats a second from the whole cluster: each tasktracker is told "
                        "to heartbeat every WORKERS / this many seconds once that is longer "
                        "than its own --heartbeat, and is lost after missing "
                        f"{MISSED_HEARTBEATS} of those if that is longer than --expiry "
                        f"(default {DEFAULT_HEARTBEATS_PER_SECOND:g}: 10 s at 1,000 workers)")
    p.add_argument("--check-timeout", type=float, default=DEFAULT_CHECK_TIMEOUT,
                   help="seconds a job module may take to import at submission")
    p.add_argument("--max-tasks-per-job", type=int, default=DEFAULT_MAX_TASKS_PER_JOB,
                   metavar="N",
                   help="refuse a job one of whose steps would have more than N maps and "
                        f"reduces (default {DEFAULT_MAX_TASKS_PER_JOB:,}: a split size of a "
                        "few bytes is a typo that would hold every slot for hours)")
    p.add_argument("--web-port", type=int, default=DEFAULT_WEB_PORT,
                   help=f"status site HTTP port (default {DEFAULT_WEB_PORT}; 0 picks a free "
                        "port, reported in the ready file as web_port)")
    p.add_argument("--web-interface", default="127.0.0.1",
                   help="address of the status site (default 127.0.0.1; beyond loopback it "
                        "asks for the password 'python -m pytxmr web-password' prints)")
    p.add_argument("--web-listen", help="Twisted endpoint string for the status site; "
                   "overrides --web-port/--web-interface")
    p.add_argument("--web-auth", action="store_true",
                   help="ask for the status site password on loopback too")
    p.add_argument("--no-web", action="store_true", help="no status site")
    p.add_argument("--history-retention", type=int, default=DEFAULT_HISTORY_RETENTION,
                   help=f"finished jobs kept in WORKDIR/history across restarts "
                        f"(default {DEFAULT_HISTORY_RETENTION}; 0 keeps none)")
    p.add_argument("--no-shuffle-check", action="store_true",
                   help="register workers without checking that their advertised shuffle "
                        "server answers the jobtracker (for networks where the jobtracker "
                        "does not reach the workers as they reach each other)")
    p.add_argument("--resume-grace", type=float, default=DEFAULT_RESUME_GRACE,
                   help="seconds a job resumed after a crash waits at most for the "
                        "tasktrackers that hold its map outputs before running those maps "
                        f"again (default {DEFAULT_RESUME_GRACE:g})")
    p.add_argument("--tls", metavar="DIR",
                   help="TLS on the PB port and the status site: DIR holds ca.pem, cert.pem "
                        "and key.pem ('python -m pytxmr certs' makes them); tasktrackers must "
                        "then show a certificate of that CA")
    p.add_argument("--users", metavar="FILE",
                   help="a users file ('python -m pytxmr users'): people log in by name and "
                        "password, own their jobs, and only administrators act on others'; "
                        "the cluster secret is then the tasktrackers' only")
    add_logging_options(p)
    a = p.parse_args(argv)
    if not 0 <= a.web_port <= 65535:
        p.error("--web-port must be in 0..65535")
    if not a.expiry > 0:
        p.error("--expiry must be more than 0 seconds (a worker is lost that long after its "
                "last heartbeat)")
    if not a.heartbeats_per_second > 0:
        p.error("--heartbeats-per-second must be more than 0")
    if a.history_retention < 0:
        p.error("--history-retention must be at least 0")
    if a.max_tasks_per_job < 2:
        p.error("--max-tasks-per-job must be at least 2 (a map and a reduce)")
    web_interface = a.web_interface.replace(":", "\\:")  # IPv6 colons, escaped
    web_listen = None if a.no_web else (
        a.web_listen or f"tcp:{a.web_port}:interface={web_interface}")
    if a.port < 0 or a.port > 65535:
        p.error("--port must be in 0..65535")
    listen = a.listen or f"tcp:{a.port}:interface={a.interface}"
    try:
        tls = ClusterTLS.load(a.tls, need_own=True) if a.tls else None
        users = load_users(a.users) if a.users else None
    except (TLSError, UsersError) as e:
        p.error(str(e))
    return Config(listen, os.path.abspath(a.workdir), a.secret_file, a.ready_file,
                  a.expiry, a.check_timeout, web_listen=web_listen, web_auth=a.web_auth,
                  history_retention=a.history_retention,
                  check_shuffle=not a.no_shuffle_check, tls=tls, users=users,
                  resume_grace=a.resume_grace,
                  heartbeats_per_second=a.heartbeats_per_second,
                  max_tasks_per_job=a.max_tasks_per_job), a


def main(argv: Sequence[str] | None = None) -> None:
    config, args = parse_args(sys.argv[1:] if argv is None else argv)
    locks: list[Any] = []  # held for the daemon's life

    async def start(reactor: Any) -> JobTrackerService:
        secret = load_secret(config.secret_file, create=True)  # first: ~/.pytxmr is 0700
        locks.append(lock_workdir(config.workdir, "jobtracker"))
        svc = make_service(config, reactor, secret=secret)
        await svc.startService()
        notify_ready(f"listening on {svc.listening}")
        return svc

    run_daemon(start, args, "jobtracker")


if __name__ == "__main__":
    main()
