"""Running task children from a daemon.

A daemon keeps one zygote (``pytxmr.zygote``): a process that has imported
the task code and forks one child per task, so that a task starts in a few
milliseconds instead of paying a Python start-up (50-100 ms of CPU). The
child writes its result to a file and its stdout and stderr (the user's
prints) to a log bounded by the zygote; a child that dies without a result (exit, signal,
memory) becomes an error dict like any other failure. User code runs only
in the children: the daemon and the zygote never import a job module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any, Callable, Mapping, Sequence

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import storage
from .sizes import FULL_DISK, free_space
from .tasklog import read_tail

_MAX_RESULT_BYTES = 16 << 20
#: Seconds a task killed through the zygote may take to end before it is
#: killed by its pid (a zygote stopped, or wedged, kills nothing).
KILL_BY_PID_AFTER = 5.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: What task children keep of their daemon's environment: the system's
#: basics and the stores' credential chains (docs/storage.md). Nothing
#: else, so that a job sees the same environment whether its daemons were
#: started by its own ``run`` or long ago on another host: values reach a
#: job as its arguments (``--arg``), never through the submitter's shell.
TASK_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                      "SHELL", "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV", "SSL_CERT_FILE",
                      "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY",
                      "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"})
TASK_ENV_PREFIXES = ("LC_", "AWS_", "BOTO_", "FSSPEC_", "GOOGLE_", "AZURE_")


def task_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items()
            if k in TASK_ENV or k.startswith(TASK_ENV_PREFIXES)}


#: The zygote's program: ``python -m pytxmr.zygote`` without the
#: directory it starts in on its path, where a user's ``logging.py`` or
#: ``msgpack.py`` was imported before any of its code could drop it
#: ("the task's zygote died"). PYTHONPATH finds pytxmr (``child_env``).
#: Once it has served (its children reaped, its reports flushed), it ends
#: without the interpreter's teardown: 7 ms of every ``run``'s end. An
#: argument "spare": the client agent's (``zygote_argv``), its tasks' argv
#: the same.
_ZYGOTE = ("import os, sys; del sys.path[0]; from pytxmr.zygote import serve; "
           "spare = sys.argv[1:] == ['spare']; del sys.argv[1:]; serve(spare); os._exit(0)")


def zygote_argv(spare: bool = False) -> list[str]:
    """How a zygote is started (in the environment ``child_env`` gives); a
    ``spare``, by the client agent for a ``run`` to come (``agent._Spare``)."""
    return [sys.executable, "-c", _ZYGOTE, *(["spare"] if spare else [])]


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of task children: the daemon's basics (``TASK_ENV``,
    of ``environ``, by default ours), plus the path that finds this very
    pytxmr package even when it is not installed."""
    env = task_env(os.environ if environ is None else environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def kill_group(pid: int) -> None:
    """Kill a task child and what it started (its process group, which it
    leads from its first instruction: until then, the child alone)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class _Forked:
    """One forked task child, as the zygote reports it."""

    def __init__(self, zygote: Zygote, request_id: int) -> None:
        self._zygote = zygote
        self._id = request_id
        self.pid: int | None = None
        #: What the process had read before this task (a reused one's earlier tasks).
        self.read_before = 0
        self.kill_requested: str | None = None
        self.status: defer.Deferred[int | None] = defer.Deferred()

    def kill(self, why: str) -> None:
        if self.kill_requested is None:
            self.kill_requested = why
        if self.pid is not None and not self.status.called:
            self._zygote.kill(self._id, self.pid, self.status)


class Zygote(protocol.ProcessProtocol):
    """The daemon's side of ``python -m pytxmr.zygote``."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor  # IReactorProcess and IReactorTime
        self._next_id = 0
        self._by_id: dict[int, _Forked] = {}
        self._by_pid: dict[int, _Forked] = {}
        self._buffer = b""
        self._ended: defer.Deferred[None] | None = None
        self.running = False

    def start(self) -> None:
        self._begin()
        argv = zygote_argv()
        try:
            self._reactor.spawnProcess(self, argv[0], argv, env=child_env(),
                                       childFDs={0: "w", 1: "r", 2: "r"})
        except BaseException:
            # Never started: a stop has no process to end, nor to wait for
            # (it raised AttributeError, which hid this error).
            self.running = False
            self._ended = None
            raise

    def adopt(self, stdio: int, stderr: int) -> None:
        """Take over a zygote already started as ``start`` would start it,
        by the client agent for its next ``run`` (``pytxmr.agent``): its
        stdin and stdout are the socket ``stdio``, its stderr ``stderr``
        (the descriptors are ours to close). Not our child: its end is the
        end of its stdout."""
        self._begin()
        out = _Stream(self.outReceived, self.processEnded)
        for fd, stream in ((stdio, out), (stderr, _Stream(self.errReceived, None))):
            try:
                self._reactor.adoptStreamConnection(fd, socket.AF_UNIX, _Given(stream))
            finally:
                os.close(fd)
        self.transport = _Stdin(out)

    def _begin(self) -> None:
        self.running = True
        self._ended = defer.Deferred()
        self._buffer = b""

    def fork(self, spec: dict[str, Any], cwd: str, log_path: str, result_path: str,
             preload: Sequence[str] = (), reuse: str | None = None) -> _Forked:
        """Run a task in a child; with ``reuse`` (a job's id), in a process
        that ran an earlier task of the same key, if one is free (see
        ``pytxmr.zygote``): no fork, no copied pages, for each tiny task."""
        if not self.running:
            raise RuntimeError("the zygote is not running")
        self._next_id += 1
        child = _Forked(self, self._next_id)
        self._by_id[self._next_id] = child
        request: dict[str, Any] = {"id": self._next_id, "spec": spec, "cwd": cwd, "log": log_path,
                   "result": result_path, "preload": list(preload)}
        if reuse is not None:
            request["reuse"] = reuse
        self.transport.write(json.dumps(request).encode() + b"\n")
        return child

    def kill(self, request_id: int, pid: int, ended: defer.Deferred[int | None]) -> None:
        """Kill the task of ``request_id`` (in process ``pid``) and what it
        started. Through the zygote while it runs: it knows which task a
        process runs now, where our view is a message behind, and a task
        that just ended may have handed its process to the next of its job
        (killed with it, by pid). By pid if it has not ``ended`` a while
        later, or when stopping (every task goes)."""
        if not (self.running and self.transport is not None):
            kill_group(pid)
            return
        self.transport.write(json.dumps({"kill": request_id}).encode() + b"\n")
        late = self._reactor.callLater(KILL_BY_PID_AFTER, kill_group, pid)

        def cancel(result: object) -> object:
            if late.active():
                late.cancel()
            return result

        ended.addBoth(cancel)

    def retire(self, reuse: str) -> None:
        """No more tasks of ``reuse`` (its job ended): its idle processes exit."""
        if self.running and self.transport is not None:
            self.transport.write(json.dumps({"retire": reuse}).encode() + b"\n")

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            if "started" in message:
                child = self._by_id.pop(message["id"])
                child.pid = message["started"]
                if message.get("reused"):
                    child.read_before = io_bytes(child.pid, ("rchar:",)) or 0
                self._by_pid[child.pid] = child
                if child.kill_requested is not None:
                    child.kill(child.kill_requested)
            elif "ended" in message:
                child = self._by_pid.pop(message["ended"], None)
                if child is not None:
                    child.status.callback(message["status"])

    def errReceived(self, data: bytes) -> None:
        self.log.error("zygote: {text}", text=data.decode("utf-8", "replace").rstrip())

    def processEnded(self, reason: Failure) -> None:
        orphans = list(self._by_id.values()) + list(self._by_pid.values())
        self._by_id.clear()
        self._by_pid.clear()
        for child in orphans:
            if child.pid is not None:
                kill_group(child.pid)
        ended, self._ended = self._ended, None
        try:
            if self.running:
                self.log.error("The task zygote died ({why}); starting another",
                               why=reason.getErrorMessage())
                # Before the orphans' ends are said: a task waiting for a
                # slot one frees is forked at once, and went to the dead one.
                self.start()
        finally:
            for child in orphans:
                child.status.callback(None)
            if ended is not None:
                ended.callback(None)

    def stop(self) -> defer.Deferred[None]:
        """End the zygote and every task child it forked; fires when the
        zygote has reaped them and exited."""
        self.running = False
        for child in list(self._by_pid.values()) + list(self._by_id.values()):
            # A child whose start is not reported yet is killed when it is.
            child.kill("the daemon is stopping")
        ended = self._ended or defer.succeed(None)
        if self._ended is not None:
            self.transport.closeStdin()
        return ended


@implementer(IHalfCloseableProtocol)
class _Stream(protocol.Protocol):
    """An adopted zygote's stdout or stderr: its data to ``received``, its
    end (once the zygote has ended) to ``ended``."""

    def __init__(self, received: Callable[[bytes], None],
                 ended: Callable[[Failure], None] | None) -> None:
        self._received = received
        self._ended = ended

    def dataReceived(self, data: bytes) -> None:
        self._received(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # the zygote closed it: it exited

    def writeConnectionLost(self) -> None:
        pass  # we closed its stdin: it reads its end, and exits

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._ended is not None:
            self._ended(reason)


class _Given(protocol.Factory):
    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def buildProtocol(self, addr: Any) -> _Stream:
        return self._stream


class _Stdin:
    """What ``Zygote`` uses of a process transport, on an adopted zygote."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        self._stream.transport.write(data)

    def closeStdin(self) -> None:
        self._stream.transport.loseWriteConnection()


def _outcome(result_path: str, log: str, status: int | None,
             killed_because: str | None, work_dir: str) -> dict[str, Any]:
    """The task's result, or an error saying how its process died (with the
    end of its ``log``)."""
    try:
        with open(result_path, "rb") as f:
            data = f.read(_MAX_RESULT_BYTES)
    except OSError:
        data = b""
    for line in data.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("result"), dict):
            result: dict[str, Any] = message["result"]
            return result
    if killed_because:
        why = killed_because
    elif status is None:
        why = "the task's zygote died"
    elif status < 0:
        why = f"the task process was killed by signal {signal.Signals(-status).name}"
    else:
        why = f"the task process exited with code {status} before reporting a result"
        why += _full_disk(os.path.dirname(result_path), work_dir, os.path.dirname(work_dir))
    return {"ok": False, "error": {"type": "TaskProcessDied", "message": why,
                                   "traceback": log[-4096:]}}


def _full_disk(*dirs: str) -> str:
    """Why a task may have died without a word: its log and its result had
    no room (a map that failed on a full disk said only that it exited)."""
    for d in dict.fromkeys(dirs):
        try:
            free = free_space(d)
        except OSError:
            continue
        if free < FULL_DISK:
            return (f" (the disk of {d} is full: {free:,} bytes free, no room for its log "
                    f"and result)")
    return ""


def io_bytes(pid: int, kinds: tuple[str, ...] = ("rchar:", "wchar:")) -> int | None:
    """Bytes a process has read and written so far (Linux's /proc/PID/io;
    ``("rchar:",)``: read only); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(kinds))
    except (OSError, ValueError, IndexError):
        return None


class TaskChild:
    """One running task: ``result`` fires with its result dict.

    ``timeout`` bounds its wall-clock time; ``stall_timeout`` kills it when
    it has made no progress for that long, as Hadoop's task timeout does:
    progress is input read or output written (the child's I/O counters), so
    a slow task that works is left alone while a hung one, or one spinning
    in a loop that reads and writes nothing, is ended.
    """

    def __init__(self, clock: IReactorTime, zygote: Zygote, spec: dict[str, Any],
                 work_dir: str, timeout: float | None = None,
                 stall_timeout: float | None = None, scratch: tuple[str, str] | None = None,
                 reuse: str | None = None) -> None:
        self.work_dir = work_dir  # made by the child (a mkdir is slow on a busy disk)
        # The log and the result: in the work dir, or (``scratch``: the
        # directory and a name for them) where they cost less, a tmpfs.
        if scratch is None:
            self.log_path = os.path.join(work_dir, "task.log")
            result_path = os.path.join(work_dir, "result.json")
        else:
            self.log_path = os.path.join(scratch[0], f"{scratch[1]}.log")
            result_path = os.path.join(scratch[0], f"{scratch[1]}.result")
        self._scratch = scratch is not None
        #: The end of the task's log (``tasklog.read_tail``), once it ended.
        self.log = ""
        split_path = spec.get("split", {}).get("path", "")
        self._child = zygote.fork(spec, work_dir, self.log_path, result_path,
                                  storage.client_modules(split_path), reuse)
        self._clock = clock
        self._timer: IDelayedCall | None = None
        if timeout:
            self._timer = clock.callLater(timeout, self.kill,
                                          f"the task took longer than {timeout:g}s")
        self._watch: task.LoopingCall | None = None
        if stall_timeout:
            self._io: int | None = None
            self._progressed = clock.seconds()
            self._watch = task.LoopingCall(self._check_progress, stall_timeout)
            self._watch.clock = clock
            self._watch.start(min(1.0, stall_timeout / 4), now=False)
        self.result: defer.Deferred[dict[str, Any]] = self._child.status.addCallback(
            self._ended, result_path)

    def _check_progress(self, stall_timeout: float) -> None:
        now = self._clock.seconds()
        io = io_bytes(self._child.pid) if self._child.pid is not None else None
        if io is not None and io != self._io:
            self._io, self._progressed = io, now
        elif now - self._progressed >= stall_timeout:
            self.kill(f"the task made no progress (read or wrote nothing) for "
                      f"{stall_timeout:g}s")

    def _ended(self, status: int | None, result_path: str) -> dict[str, Any]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        self.log = read_tail(self.log_path)
        outcome = _outcome(result_path, self.log, status, self._child.kill_requested,
                           self.work_dir)
        if self._scratch:  # read: no use keeping them
            for path in (self.log_path, result_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return outcome

    def kill(self, why: str = "the task was killed") -> None:
        self._child.kill(why)

    def bytes_read(self) -> int:
        """What the task has read so far (its input, or its runs): 0 before
        it started or where /proc cannot tell."""
        pid = self._child.pid
        if pid is None:
            return 0
        return max(0, (io_bytes(pid, ("rchar:",)) or 0) - self._child.read_before)
