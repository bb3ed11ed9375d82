"""Running one task child process from a daemon.

The daemon writes the task spec to a file, spawns ``python -m pytxmr.task``,
collects the one-line JSON result from file descriptor 3, and keeps the
child's stdout and stderr (the user's prints) in a bounded log file. A child
that dies without a result (exit, signal, memory) becomes an error dict
like any other failure; the daemon itself is never at risk.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

import pytxmr

from .task import RESULT_FD

#: Bytes of a task's stdout+stderr kept in its log; the rest is dropped
#: (with a note), so a chatty task cannot fill a worker's disk.
MAX_LOG_BYTES = 1 << 20
_MAX_RESULT_BYTES = 16 << 20
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pytxmr.__file__)))


def child_env() -> dict[str, str]:
    """The environment of task children: the daemon's, plus the path that
    finds this very pytxmr package even when it is not installed."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class _TaskProcess(protocol.ProcessProtocol):
    """One child process. A warm one waits (having imported pytxmr.task)
    until ``assign`` gives it a task; until then it has no log and no
    result Deferred."""

    def __init__(self) -> None:
        self._log: Any = None
        self._logged = 0
        self._result = bytearray()
        self._done: defer.Deferred[dict[str, Any]] | None = None
        self.ended = False
        #: Fires once the process has ended (and been reaped).
        self.finished: defer.Deferred[None] = defer.Deferred()
        self.killed_because: str | None = None

    def assign(self, log_path: str, spec_path: str, done: defer.Deferred[dict[str, Any]]) -> None:
        self._log = open(log_path, "ab")
        self._done = done
        self.transport.write(spec_path.encode("utf-8") + b"\n")
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if self._log is None:
            return  # a warm child has nothing to say before its task
        if fd == RESULT_FD:
            if len(self._result) < _MAX_RESULT_BYTES:
                self._result += data
            return
        room = MAX_LOG_BYTES - self._logged
        if room > 0:
            self._log.write(data[:room])
            if len(data) > room:
                self._log.write(b"\n[pytxmr: log truncated]\n")
        self._logged += len(data)

    def kill(self, why: str) -> None:
        self.killed_because = why
        try:
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.finished.callback(None)
        if self._done is None:
            return  # a warm child that died idle: the pool drops it
        self._log.close()
        self._done.callback(self._outcome(reason))

    def _outcome(self, reason: Failure) -> dict[str, Any]:
        for line in bytes(self._result).splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("result"), dict):
                result: dict[str, Any] = message["result"]
                return result
        if self.killed_because:
            why = self.killed_because
        else:
            exc = reason.value
            sig = getattr(exc, "signal", None)
            code = getattr(exc, "exitCode", None)
            if sig:
                why = f"the task process was killed by signal {signal.Signals(sig).name}"
            else:
                why = f"the task process exited with code {code} before reporting a result"
        return {"ok": False, "error": {"type": "TaskProcessDied", "message": why,
                                       "traceback": self._log_tail()}}

    def _log_tail(self) -> str:
        try:
            with open(self._log.name, "rb") as f:
                f.seek(max(0, os.path.getsize(self._log.name) - 4096))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def _spawn(reactor: IReactorProcess) -> _TaskProcess:
    proto = _TaskProcess()
    reactor.spawnProcess(
        proto,
        sys.executable,
        [sys.executable, "-m", "pytxmr.task", "--stdin"],
        env=child_env(),
        childFDs={0: "w", 1: "r", 2: "r", RESULT_FD: "r"},
    )
    return proto


class WarmPool:
    """Children started ahead of need, each having imported pytxmr.task and
    waiting for one task on stdin: a task then starts in a few milliseconds
    instead of the 50-100 of a Python start. Each child still runs one task
    only, so no state leaks from one user's task into the next."""

    def __init__(self, reactor: IReactorProcess, size: int) -> None:
        self._reactor = reactor
        self.size = size
        self._idle: list[_TaskProcess] = []
        #: Every live child, idle or at work.
        self._children: set[_TaskProcess] = set()
        self.running = False

    def start(self) -> None:
        self.running = True
        self._fill()

    def _fill(self) -> None:
        self._idle = [p for p in self._idle if not p.ended]
        while self.running and len(self._idle) < self.size:
            self._idle.append(self._spawn())

    def _spawn(self) -> _TaskProcess:
        proto = _spawn(self._reactor)
        self._children.add(proto)
        proto.finished.addCallback(lambda _: self._children.discard(proto))
        return proto

    def take(self) -> _TaskProcess:
        """An idle child (a fresh one if none is ready); refills behind."""
        while self._idle:
            proto = self._idle.pop(0)
            if not proto.ended:
                break
        else:
            proto = self._spawn()
        if self.running:
            self._reactor.callLater(0, self._fill)  # type: ignore[attr-defined]
        return proto

    def stop(self) -> defer.Deferred[None]:
        """Kill every child, idle or at work (the daemon is going away).
        Fires once all have ended, so that the daemon exits after reaping
        them rather than leaving them to init."""
        self.running = False
        self._idle = []
        children = list(self._children)
        for proto in children:
            if not proto.ended:
                proto.kill("the pool stopped")
        return defer.gatherResults([p.finished for p in children]).addCallback(lambda _: None)


class TaskChild:
    """One running task process: ``result`` fires with its result dict."""

    log = Logger()

    def __init__(self, reactor: Any, spec: dict[str, Any], work_dir: str,
                 timeout: float | None = None, pool: WarmPool | None = None) -> None:
        self._clock: IReactorTime = reactor
        self.work_dir = work_dir
        self.log_path = os.path.join(work_dir, "task.log")
        os.makedirs(work_dir, exist_ok=True)
        spec_path = os.path.join(work_dir, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        done: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._proto = pool.take() if pool is not None else _spawn(reactor)
        self._proto.assign(self.log_path, spec_path, done)
        self._timer: IDelayedCall | None = None
        if timeout:
            self._timer = self._clock.callLater(
                timeout, self.kill, f"the task took longer than {timeout:g}s")
        self.result = done
        done.addBoth(self._cancel_timer)

    def _cancel_timer(self, value: Any) -> Any:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        return value

    def kill(self, why: str = "the task was killed") -> None:
        self._proto.kill(why)
