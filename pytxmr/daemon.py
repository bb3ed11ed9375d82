"""What the daemons' mains share: logging options, ready files, and running
a service under ``task.react`` until SIGTERM/SIGINT or a fatal error."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import socket
import sys
from typing import Any, Awaitable, Callable

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)

from .auth import LoginRefused
from .secret import SecretError


class FatalError(Exception):
    """The daemon cannot go on; the message is shown to the user."""


def add_logging_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warn", "error", "critical"])
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="human-readable lines (default) or JSON lines")


def setup_logging(level: str, fmt: str, stream: io.TextIOBase | None = None) -> None:
    out = stream or sys.stderr
    observer = jsonFileLogObserver(out) if fmt == "json" else textFileLogObserver(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)


def write_ready_file(path: str, data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def notify_ready(status: str) -> None:
    """Tell a service manager that asked for it (systemd's ``Type=notify``
    sets ``$NOTIFY_SOCKET``) that the daemon is ready; nothing otherwise."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    message = f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}".encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message)
    except OSError as e:
        Logger().warn("Cannot tell the service manager we are ready ({e})", e=e)


def claim_workdir(base: str) -> tuple[str, Any]:
    """The first of ``base``, ``base-2``, ``base-3``... that no running
    daemon holds, locked for this process (the lock dies with it). A
    directory left by a crashed daemon is claimed again and cleaned, while
    two daemons on one host never share one."""
    n = 1
    while True:
        path = base if n == 1 else f"{base}-{n}"
        lock = _lock(path)
        if lock is not None:
            return path, lock
        n += 1


def lock_workdir(path: str, name: str) -> Any:
    """Hold the work directory ``path`` given to this daemon (``name``) for
    its life, or FatalError naming the process that holds it: a second
    jobtracker on one resumed the first's job, then failed it and emptied
    its finished output; a second tasktracker cleaned away the first's map
    outputs."""
    lock = _lock(path)
    if lock is None:
        try:
            with open(os.path.join(path, ".lock"), encoding="utf-8") as f:
                holder = f" (pid {int(f.read().strip())})"
        except (OSError, ValueError):
            holder = ""
        raise FatalError(f"the work directory {path} is in use by another daemon{holder}: "
                         f"give each {name} its own --workdir")
    return lock


def _lock(path: str) -> Any:
    """``path``'s lock file, locked and naming this process; None if another holds it."""
    import fcntl

    if os.path.exists(path) and not os.path.isdir(path):
        raise FatalError(f"the work directory {path} is a file, not a directory: give "
                         f"--workdir a directory (made if missing)")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        lock = open(os.path.join(path, ".lock"), "a+", encoding="utf-8")
    except OSError as e:
        raise _unusable(path, e) from e
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    try:
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    except OSError as e:
        with contextlib.suppress(OSError):  # the unwritten line again
            lock.close()
        raise _unusable(path, e) from e
    return lock


def _unusable(path: str, e: OSError) -> FatalError:
    """A start on a full disk said only "[Errno 28] No space left on device"."""
    why = "its disk is full" if e.errno == errno.ENOSPC else e.strerror or str(e)
    return FatalError(f"cannot use the work directory {path}: {why}")


def run_daemon(start: Callable[[Any], Awaitable[Any]], args: argparse.Namespace,
               name: str) -> None:
    """Start the service ``start`` builds and run until a signal stops the
    reactor (the service is stopped cleanly first) or the service's
    ``ended`` Deferred fires (a clean stop: drained) or fails."""
    setup_logging(args.log_level, args.log_format)

    async def main(reactor: Any) -> None:
        try:
            svc = await start(reactor)
        except (SecretError, LoginRefused, FatalError, OSError, ValueError,
                CannotListenError) as e:
            print(f"{name}: {e}", file=sys.stderr)
            raise SystemExit(2)
        stopping = {"done": False}

        def stop() -> Any:
            if not stopping["done"]:
                stopping["done"] = True
                return svc.stopService()
            return None

        reactor.addSystemEventTrigger("before", "shutdown", stop)
        ended: defer.Deferred[None] = getattr(svc, "ended", defer.Deferred())
        try:
            await ended
        except (LoginRefused, FatalError) as e:
            print(f"{name}: {e}", file=sys.stderr)
            await defer.maybeDeferred(stop)
            raise SystemExit(2)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
