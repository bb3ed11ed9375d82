"""The zygote: a process that has imported the task code and forks a child
per task (``python -m pytxmr.zygote``).

Starting Python and importing pytxmr costs 50-100 ms of CPU per task; a
fork costs about one. A daemon keeps one zygote and sends it one JSON line
per task on stdin (the task's spec in it: no file to write and delete per
task); the zygote forks, the child runs the task exactly as
``python -m pytxmr.task`` would (its own process, its own fresh copy of the
user's module, stdout and stderr into the task's log, the result into a
file), and the zygote reports each start and end as JSON lines on stdout.
The zygote never imports a job module itself, so no user code can alter it.
"""

from __future__ import annotations

import _signal
import contextlib
import faulthandler
import fcntl
import gc
import importlib
import io
import json
import os
import resource
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

from . import storage, task
from .trees import empty_directory, links_into


#: Bytes of a task's output kept in its log; the rest is dropped with a note,
#: so that a chatty task cannot fill a worker's disk.
MAX_LOG_BYTES = 1 << 20
TRUNCATED = b"\n[pytxmr: log truncated]\n"


def bounded(data: bytes, room: int) -> tuple[bytes, int]:
    """What of ``data`` fits in ``room`` bytes of a log, with the note that
    the rest was cut (unless what fits ends with it: the task's own cut,
    see ``_Output``), and the room left."""
    if room <= 0:
        return b"", 0
    if len(data) > room:
        kept = data[:room]
        return (kept if kept.endswith(TRUNCATED) else kept + TRUNCATED), 0
    return data, room - len(data)


class BoundedLog(io.TextIOBase):
    """The task's ``sys.stdout`` and ``sys.stderr``: the user's prints, up
    to a limit, dropped here rather than piped to the zygote to be dropped
    there (see ``_Output``). It has what code expects of a standard stream
    (``fileno()``, ``buffer``, ``encoding``): a job that worked in one
    process (``run --inline``) failed in a task, e.g.
    ``subprocess.run(cmd, stdout=sys.stdout)``."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._room = limit
        self.buffer = _BoundedBytes(self)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if self._room > 0:
            self.write_bytes(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        data, self._room = bounded(data, self._room)
        if data:
            write_all(self._fd, data)


class _BoundedBytes(io.RawIOBase):
    """``sys.stdout.buffer`` of a task: bytes, counted with its prints."""

    def __init__(self, log: BoundedLog) -> None:
        self._log = log

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._log.fileno()

    def write(self, data: Any) -> int:
        self._log.write_bytes(bytes(data))
        return len(data)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data``: a write to a pipe of more than it holds (a request
    with a 100 KB job argument) that a signal interrupts (SIGCHLD, here
    often) returns having written part, and the task process then waited
    for the rest for ever."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            # A task's stdout, a pipe whose flags its children share: a
            # program may leave it non-blocking (node does).
            select.select([], [fd], [])


def _runner_dir(spec: dict[str, Any]) -> str | None:
    """A map's working directory in a process that runs many: one per
    process next to the job's outputs, emptied for each task (a directory
    made per task costs a millisecond on a busy disk, as much as a tiny
    map's work), and beside it the pack its small outputs are appended to."""
    if spec.get("kind") != "map" or not spec.get("data_path"):
        return None
    cwd = os.path.join(os.path.dirname(spec["data_path"]), f"runner-{os.getpid()}")
    spec["pack"] = cwd + ".data"
    if not os.path.lexists(cwd):
        os.mkdir(cwd)
        return cwd
    bundle = spec["job"].get("bundle_dir")
    # What the task before left goes; the job's shipped files stay linked.
    try:
        empty_directory(cwd, links_into(bundle) if bundle else None)
    except OSError:
        # Left so that it cannot go (an immutable file: `chattr +i`): not
        # this task's failure. It works in a directory of its own; the
        # job's removal says what stays.
        return tempfile.mkdtemp(prefix=os.path.basename(cwd) + "-", dir=os.path.dirname(cwd))
    return cwd


def _run_one(request: dict[str, Any], runner: bool = False) -> int:
    """In a forked child: wire the fds as a task expects, run it; its status.
    Its stdout and stderr are the zygote's pipe already (``_child``)."""
    cwd = _runner_dir(request["spec"]) if runner else None
    if cwd is None:
        cwd = request["cwd"]
        os.makedirs(cwd, exist_ok=True)
    # The log and the result go to the worker's tmpfs directory, or without
    # one to the attempt's directory, which a runner's map does not work in.
    # The log is made here, where its failure is the task's; the zygote
    # appends to it what the task writes.
    os.makedirs(os.path.dirname(request["result"]), exist_ok=True)
    os.close(os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    # Its stdin first: a task before in this process may have closed fd 0,
    # which the result would have taken.
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)
        os.close(devnull)
    result = os.open(request["result"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if result != task.RESULT_FD:
        os.dup2(result, task.RESULT_FD)
        os.close(result)
    sys.stdin = open(0, closefd=False)
    sys.stdout = sys.stderr = BoundedLog(1, request.get("log_limit", MAX_LOG_BYTES))
    code = 1
    try:
        code = task.run(request["spec"], cwd)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _left_processes() -> bool:
    """Whether the task left processes it started running (those that
    ended are reaped): their output, in our stdout, would go to the next
    task's log, as their work would share its time."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _wire_output(output: int) -> None:
    """The task's stdout and stderr: ``output``, its own pipe to the zygote
    (each task of a reused process gets one, so that what an earlier one
    left there, a redirection, a flag, a process still writing, is not its).
    A pipe received after a task closed its stdout is fd 1 itself: moved
    first, it is not closed as the stdout it became."""
    if output < 3:
        moved = fcntl.fcntl(output, fcntl.F_DUPFD, 3)
        os.close(output)
        output = moved
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)


def send_request(sock: int, data: bytes, output: int) -> None:
    """Send a reused process its next request, and with it the task's
    output pipe (``output``, the write end)."""
    with socket.socket(fileno=sock) as s:
        try:
            sent = socket.send_fds(s, [data], [output])  # the fd goes with the first bytes
            write_all(sock, data[sent:])
        finally:
            s.detach()


def receive_request(sock: int, pending: bytearray) -> tuple[bytes, int | None] | None:
    """The next request line from the zygote (``pending``: what was read
    beyond the last one) and the output pipe sent with it; None once the
    zygote closed its end."""
    output = None
    with socket.socket(fileno=sock) as s:
        try:
            while b"\n" not in pending:
                data, fds, _, _ = socket.recv_fds(s, 65536, 1)
                if not data:
                    return None
                pending += data
                if fds:
                    output = fds[0]
        finally:
            s.detach()
    end = pending.index(b"\n")
    line = bytes(pending[:end])
    del pending[:end + 1]
    return line, output


def _child(request: dict[str, Any] | None, inherited: list[int], requests: int | None,
           replies: int, output: int | None) -> None:
    """In the forked child: run the request's task, its stdout and stderr
    into ``output`` (the zygote's pipe), and say its end on ``replies``
    (the done pipe) before this process ends: the exit of a process that
    ran a task, and the zygote's reaping of it, took 1-2 ms more. With
    ``requests`` (a socket), take the next ones of its job, until it
    should not or the zygote closes the socket. A ``request`` of None: a
    standby, forked before a task was due, whose first request comes on
    ``requests`` as the next ones do (``Zygote.standby``)."""
    code, done = 1, 0
    try:  # whatever happens, this process never returns into the zygote's loop
        os.setpgid(0, 0)  # the group of what the task starts (see end_group)
        for fd in inherited:
            os.close(fd)
        if output is not None:
            _wire_output(output)
        else:  # not the zygote's reports: nothing may write there meanwhile
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a task is a Python program
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        gc.disable()  # as the task does (pytxmr.task.execute), and before it imports
        signals, limits, fds = _Signals(), _Limits(), _open_fds()
        logged = _root_logging()
        pending = bytearray()
        if request is None:
            assert requests is not None
            try:  # named as ``ps`` shows it meanwhile
                with open("/proc/self/comm", "rb") as f:
                    name: bytes | None = f.read().rstrip(b"\n")
            except OSError:
                name = None  # not named, then: it could not be named back
            task.die_with_parent(signal.SIGKILL, None if name is None else STANDBY_NAME)
            received = receive_request(requests, pending)
            if received is None:
                return  # the zygote let us go
            task.die_with_parent(signal.SIGKILL, name)
            line, output = received
            if output is not None:
                _wire_output(output)
            request = json.loads(line)
            # What the zygote does before each fork (we were forked before).
            _forget_missing_paths()
        reusable = request.get("reuse") is not None
        code = _run_one(request, reusable)
        while True:
            done += 1
            signals.restore()
            _reset_logging(logged)
            retire = (not reusable or not limits.restore()
                      or not _fit_for_more(code, done) or _left_processes()
                      or _open_fds() > fds + RUNNER_MAX_NEW_FDS)
            os.write(replies, _dumps({"done": request["id"], "status": code,
                                          "retire": retire}).encode() + b"\n")
            if retire:
                return
            # A module is a cycle (its functions' globals are its dict),
            # which only the collector frees, and the collector is off in a
            # task: a file or connection a job's module opened as it loaded
            # stayed open for each map the process ran. Collected now; what
            # lives on (the modules the job imported) frozen out of the next
            # collections' sight, as the zygote's own objects are, so that
            # each walks only what its task made.
            task.forget(request["spec"])
            gc.collect()
            gc.freeze()
            assert requests is not None
            received = receive_request(requests, pending)
            if received is None:
                return  # the zygote let us go
            line, output = received
            code = 1  # if it cannot even start: a failure
            if output is not None:
                _wire_output(output)
            request = json.loads(line)
            code = _run_one(request, True)
    except BaseException:
        # Not the task's own failure (task.run reports those): this
        # process's, between tasks. Said in the log of the task it ran, or
        # was to run, on its pipe itself (its sys.stderr may be the task
        # before's, whose room its own output may have taken).
        with contextlib.suppress(OSError):
            write_all(2, traceback.format_exc().encode(errors="replace"))
        raise
    finally:
        os._exit(code)


class _Signals:
    """What a task of a reused process starts with of signals: their
    handlers, the mask, no timer. A map that set an alarm and left it set
    had it strike the next map of its process (a record skipped as "too
    slow" by a job that succeeded), or the loop between them."""

    _TIMERS = ((_signal.ITIMER_REAL, _signal.SIGALRM), (_signal.ITIMER_VIRTUAL, _signal.SIGVTALRM),
               (_signal.ITIMER_PROF, _signal.SIGPROF))

    # _signal's own functions: signal's make an enum of each answer, 0.1 ms
    # for all the handlers, a few percent of a tiny map.
    def __init__(self) -> None:
        self._mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, ())
        # None: a handler not set from Python, which cannot be set back.
        self._handlers = {n: h for n in _signal.valid_signals()
                          if (h := _signal.getsignal(n)) is not None}

    def restore(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        _signal.set_wakeup_fd(-1)
        for timer, signum in self._TIMERS:
            _signal.setitimer(timer, 0)
            # Ignoring a signal discards it if it is pending (it fired as
            # the task ended, or the task blocked it).
            _signal.signal(signum, _signal.SIG_IGN)
        for signum in _signal.sigpending():
            # Blocked by the task and come since: the task's, not to be
            # delivered once unblocked, under a default that would end
            # this process.
            _signal.signal(signum, _signal.SIG_IGN)
        for signum, handler in self._handlers.items():
            if _signal.getsignal(signum) is not handler:
                _signal.signal(signum, handler)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._mask)


class _Limits:
    """What a task of a reused process starts with of its settings: the
    umask, the resource limits, its CPU priority and CPUs. A map's
    ``os.umask(0o777)`` made the next maps' results unreadable to their
    daemon ("exited before reporting a result"), a map's CPU limit,
    counted over every map the process ran, killed a later one with
    SIGXCPU, and a map's ``os.nice(5)`` added up, map after map, and
    slowed its job's reduce."""

    _RESOURCES = tuple(getattr(resource, name) for name in dir(resource)
                       if name.startswith("RLIMIT_"))

    def __init__(self) -> None:
        self._umask = os.umask(0o22)
        os.umask(self._umask)
        self._limits = [(r, resource.getrlimit(r)) for r in self._RESOURCES]
        self._cpu = _cpu_settings()

    def restore(self) -> bool:
        """Set them back; False where one cannot be (a task lowered its
        hard limit, raised its niceness, changed its CPUs): the process then
        takes no more tasks."""
        os.umask(self._umask)
        restored = _cpu_settings() == self._cpu
        for r, limit in self._limits:
            if resource.getrlimit(r) != limit:
                try:
                    resource.setrlimit(r, limit)
                except (ValueError, OSError):
                    restored = False
        return restored


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (``T`` in /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def _root_logging() -> tuple[list[Any], int]:
    """The root logger's handlers and level, if ``logging`` is loaded."""
    if "logging" not in sys.modules:
        return [], 30  # logging.WARNING, its default
    import logging

    return list(logging.root.handlers), logging.root.level


def _reset_logging(saved: tuple[list[Any], int]) -> None:
    """Set the root logger back as a task of a reused process found it: a
    map's ``logging.basicConfig`` wrote every next task's log records to
    that map's own log, whose allowance it had used up (they were dropped),
    and made the next tasks' own ``basicConfig`` do nothing."""
    if "logging" not in sys.modules:
        return
    import logging

    handlers, level = saved
    for handler in [h for h in logging.root.handlers if h not in handlers]:
        logging.root.removeHandler(handler)
        with contextlib.suppress(Exception):  # a user's handler may fail to close
            handler.close()
    logging.root.setLevel(level)


def _cpu_settings() -> tuple[int, frozenset[int]]:
    """The process's niceness and the CPUs it may run on: a process may
    raise the one and narrow the other, but not always undo it."""
    return os.getpriority(os.PRIO_PROCESS, 0), frozenset(os.sched_getaffinity(0))


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


#: What a task process says its end with, as this module was imported: a
#: job that patches ``json.dumps`` (a module's attribute) does not change
#: it, where a patched one's "done" line killed the zygote, and with it
#: other jobs' tasks.
_dumps = json.dumps

#: A task process runs the next map of its job (``reuse``) while it is fit:
#: at most this many tasks (what a job's module does outside itself builds
#: up, map after map: a patch of ``json.dumps`` that wraps the one it
#: finds was 986 wrappers deep, near the recursion limit, and twice as
#: slow), ...
RUNNER_MAX_TASKS = 200
#: ... and while it is this small (a task that leaked or held much goes
#: with its process, as a task run alone would), ...
RUNNER_MAX_RSS = 128 << 20
#: ... and holds at most this many more file descriptors than it began
#: with (a logging handler a job's module adds to the root logger as it
#: loads opened a file per map: 1,000 of them, and innocent maps failed).
RUNNER_MAX_NEW_FDS = 32


def _fit_for_more(code: int, done: int) -> bool:
    """Whether this process may run another task after one that ended with
    ``code``: not after a failure, a thread left running, a grown heap, nor
    for a job that asks for a process per task."""
    if code != 0 or done >= RUNNER_MAX_TASKS or threading.active_count() > 1 \
            or not task.reusable:
        return False
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return False
    return rss <= RUNNER_MAX_RSS


def _forget_missing_paths() -> None:
    """Forget that entries of the import path were missing: Python notes
    it once (``sys.path_importer_cache``) and never looks again, and a task
    forked from us inherits the note. A directory of PYTHONPATH made after
    we started (``pip install --target deps`` after an ImportError) was not
    seen by the jobs that followed: a zygote lives as long as its daemon,
    or waits for the client agent's next run."""
    for entry in [e for e, finder in sys.path_importer_cache.items() if finder is None]:
        del sys.path_importer_cache[entry]


def _preload(names: list[str]) -> None:
    """Import a store's client here, once, so that every child forked
    after has it (only the known ones: never a name a job chose). A
    failure is the child's to report, when it imports the module itself."""
    for name in names:
        if name in storage.PRELOADABLE and name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:
                pass


def _report(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Output:
    """A task process's stdout and stderr, a pipe that the zygote copies
    into the log of the task it runs, up to the log's limit, and reads and
    drops beyond. Its Python prints are bounded in the task already
    (``BoundedLog``); this bounds what is written to the descriptors
    themselves, by a command a streaming task runs, a subprocess, C code:
    a task could fill the worker's tmpfs, and every task with it. A pipe
    bounds it at every moment, where a check of the log's size would let
    through what a task writes between two checks."""

    #: Bytes read at most as a task ends: a process that left the task's
    #: group and writes for ever would hold the zygote there.
    DRAIN_LIMIT = 16 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd  # our end, non-blocking; -1 once closed
        self.log = -1  # the task's log, open while it runs
        self._path: str | None = None  # the running task's log
        self._room = 0

    def start(self, path: str, limit: int) -> None:
        """The next task's output goes to ``path``: its prints' room
        (``BoundedLog``), and the note that cut them, fit."""
        self._path, self._room = path, limit + len(TRUNCATED)

    def copy(self) -> bool:
        """Copy what the pipe holds (one read); False at its end: every
        writer closed it."""
        return self._read() != b""

    def finish(self) -> None:
        """The task ended: what it wrote goes to its log before its end is
        reported; later output is no task's."""
        read = 0
        while self.fd >= 0 and read < self.DRAIN_LIMIT:
            data = self._read()
            if not data:
                break
            read += len(data)
        if self.log >= 0:
            os.close(self.log)
        self.log, self._path, self._room = -1, None, 0

    def _read(self) -> bytes | None:
        """One read, copied; None if the pipe is empty, b"" at its end (then
        closed)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if data:
            self._append(data)
        else:
            self.close()
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _append(self, data: bytes) -> None:
        if self._path is None:
            return
        if self.log < 0:
            try:
                # Never blocking, never through a link: the task may have
                # made its log a FIFO, whose open waited for a reader for
                # ever, and every task of the worker with the zygote.
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK
                             | os.O_NOFOLLOW, 0o600)
            except OSError:
                return  # its directory not made yet (by the task: _run_one), or removed
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                self._path = None  # the task's output goes nowhere else
                return
            self.log = fd
        data, self._room = bounded(data, self._room)
        try:
            write_all(self.log, data)
        except OSError:
            self._room = 0  # a full disk: the task's to notice, not ours


class _Runner:
    """A task process: one that says when its task is done (and may take
    another task of its job, ``reuse``, or is a standby waiting for its
    first)."""

    def __init__(self, key: str | None, requests: int, replies: int) -> None:
        self.key = key  # None: it takes no task of a job's after its own
        self.requests = requests  # our end of its request socket, or -1
        self.replies = replies  # our end of its done pipe
        self.busy = True
        self.buffered = b""
        self.idle_since = 0.0


#: Seconds an idle task process waits for another task of its job.
RUNNER_IDLE = 5.0
#: Seconds without a request or a task's output, no task running, before
#: the zygote forks its standby (``Zygote.standby``) again.
STANDBY_QUIET = 0.5
#: The standby's name in ``ps``, until it takes a task.
STANDBY_NAME = b"pytxmr-standby"


class Zygote:
    """The zygote's state: the task processes it forked, those that can be
    reused by job, and the daemon's requests."""

    def __init__(self, wake: tuple[int, int]) -> None:
        self.wake = wake
        self.runners: dict[int, _Runner] = {}
        self.by_reply: dict[int, int] = {}  # a runner's done pipe -> its pid
        #: The task children alive (or not reaped yet), and the guard of
        #: each (see fork_guard) -> its child. Other children are orphans of
        #: their groups that we adopted (see _adopt_orphans).
        self.children: set[int] = set()
        self.guards: dict[int, int] = {}
        #: Each task child's output (see _Output), and by our end's fd.
        self.outputs: dict[int, _Output] = {}
        self.by_output: dict[int, _Output] = {}
        #: A task process forked before its task was due, which takes the
        #: next request that no runner of its job takes: a fork (1-2 ms, 5
        #: when the CPUs are busy) is then not in the way of a job's first
        #: tasks. Forked while no task runs (``idle``): forked as one
        #: started, it took as long from the tasks starting with it.
        self.standby: int | None = None
        #: The store clients the standby has (see _preload): imported before
        #: it was forked.
        self.standby_preloaded: frozenset[str] = frozenset()
        #: Task processes let go while they ran no task (their last task's
        #: end was said on their done pipe, or they had none): their exit
        #: is not said.
        self.retired: set[int] = set()
        #: The request each task process runs now, by its pid (see ``kill``).
        self.running: dict[int, Any] = {}

    def handle(self, request: dict[str, Any]) -> None:
        if "kill" in request:
            self.kill(request["kill"])
            return
        if "retire" in request:
            for pid, runner in list(self.runners.items()):
                if runner.key == request["retire"] and not runner.busy:
                    self._forget(pid)
            return
        key = request.get("reuse")
        limit = request.get("log_limit", MAX_LOG_BYTES)
        for pid, runner in list(self.runners.items()):
            if key is not None and runner.key == key and not runner.busy:
                if self._hand(pid, runner, request, limit):
                    return
        preload = request.get("preload", [])
        if self.standby is not None and all(n in self.standby_preloaded
                                            or n not in storage.PRELOADABLE for n in preload):
            pid, self.standby = self.standby, None
            runner = self.runners[pid]
            runner.key = key
            if self._hand(pid, runner, request, limit):
                return
        _forget_missing_paths()
        _preload(preload)
        out_r, out_w = os.pipe()
        try:
            pid = self._fork(request, key is not None, (out_r, out_w))
        except OSError:
            os.close(out_r)
            raise
        finally:
            os.close(out_w)
        self._output(pid, out_r, request["log"], limit)
        self.running[pid] = request["id"]
        _report({"started": pid, "id": request["id"]})

    def kill(self, request_id: Any) -> None:
        """Kill the task of the daemon's request ``request_id``, and what it
        started, if it still runs: its process may run the next task of its
        job by now (the daemon kills by request, not by pid, for that)."""
        for pid, running in self.running.items():
            if running == request_id:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # not leading its group yet: itself
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                except PermissionError:
                    pass  # its group holds a process not ours: reaped, it goes (end_group)
                # Dying, not reaped yet: no next task of its job is handed to it.
                del self.running[pid]
                if pid in self.runners:
                    self._forget(pid)
                return

    def _hand(self, pid: int, runner: _Runner, request: dict[str, Any], limit: int) -> bool:
        """Send an idle task process ``request``; False if it just died
        (its end is reaped in the loop), or is stopped (``SIGSTOP``: its
        task waited for ever, and a module check failed for want of time,
        blaming the job): that one is killed, and let go."""
        if _stopped(pid):
            end_group(pid)
            self._forget(pid)
            return False
        out_r, out_w = os.pipe()
        try:
            send_request(runner.requests, json.dumps(request).encode() + b"\n", out_w)
        except OSError:
            os.close(out_r)
            return False
        finally:
            os.close(out_w)
        self._output(pid, out_r, request["log"], limit)
        runner.busy = True
        self.running[pid] = request["id"]
        _report({"started": pid, "id": request["id"], "reused": True})
        return True

    def idle(self) -> bool:
        """Whether no task runs (and no request waits: see ``serve``)."""
        return not any(runner.busy for runner in self.runners.values())

    def fork_standby(self) -> None:
        """Fork the standby (see ``standby``); none if no process can be forked."""
        try:
            self.standby = self._fork(None, True)
        except OSError:
            self.standby = None
        else:
            self.runners[self.standby].busy = False
            self.standby_preloaded = frozenset(n for n in storage.PRELOADABLE
                                               if n in sys.modules)

    def _fork(self, request: dict[str, Any] | None, takes_more: bool,
              output: tuple[int, int] | None = None) -> int:
        """Fork a task process for ``request`` (None: a standby), writing to
        ``output`` (a pipe: its read end is ours, its write end closed here);
        with ``takes_more``, one that can be sent more requests. Its pid."""
        # Our objects out of the collector's sight before a fork.
        gc.freeze()
        done_r, done_w = os.pipe()
        requests = None
        try:
            if takes_more:
                requests = socket.socketpair()
            pid = os.fork()
        except OSError:
            os.close(done_r)
            os.close(done_w)
            if requests is not None:
                requests[0].close()
                requests[1].close()
            raise
        if pid == 0:
            inherited = [*self.inherited(), done_r]
            theirs = None
            if output is not None:
                inherited.append(output[0])
            if requests is not None:
                inherited.append(requests[0].detach())
                theirs = requests[1].detach()
            _child(request, inherited, theirs, done_w, None if output is None else output[1])
        os.close(done_w)
        self.children.add(pid)
        with contextlib.suppress(OSError):  # as the child does: whichever runs first
            os.setpgid(pid, pid)
        guard = fork_guard(pid)
        if guard is not None:
            self.guards[guard] = pid
        ours = -1
        if requests is not None:
            requests[1].close()
            ours = requests[0].detach()
        key = None if request is None else request.get("reuse")
        self.runners[pid] = _Runner(key, ours, done_r)
        self.by_reply[done_r] = pid
        return pid

    def inherited(self) -> list[int]:
        """The zygote's own fds, which a new child closes: its wake pipe,
        its ends of the runners' pipes (not the done pipe of a runner that
        exited and is not reaped yet: closed already), of the children's
        outputs, and the logs they go to (another task's, another user's)."""
        return [*self.wake, *(fd for r in self.runners.values()
                              for fd in (r.requests, r.replies) if fd >= 0),
                *self.by_output, *(o.log for o in self.outputs.values() if o.log >= 0)]

    def _output(self, pid: int, fd: int, log: str, limit: int) -> None:
        """Child ``pid``'s task writes to ``fd`` (our end of its pipe)."""
        os.set_blocking(fd, False)
        output = self.outputs[pid] = self.by_output[fd] = _Output(fd)
        output.start(log, limit)

    def copied(self, fd: int) -> None:
        """A child's output is readable."""
        output = self.by_output[fd]
        if not output.copy():
            del self.by_output[fd]

    def replied(self, fd: int, now: float) -> None:
        """A runner's done pipe is readable: a task ended, or it exited."""
        pid = self.by_reply[fd]
        runner = self.runners[pid]
        data = os.read(fd, 65536)
        if not data:  # it exited: reaped soon, no more to read
            del self.by_reply[fd]
            os.close(fd)
            runner.replies = -1
            return
        runner.buffered += data
        while b"\n" in runner.buffered:
            line, runner.buffered = runner.buffered.split(b"\n", 1)
            try:
                message = json.loads(line)
                status, retire = int(message["status"]), bool(message["retire"])
            except (ValueError, TypeError, KeyError):
                # Not the words of our code (the job's broke them): a
                # failure, and the process goes.
                status, retire = 1, True
            runner.busy = False
            runner.idle_since = now
            self.running.pop(pid, None)
            # Its pipe goes with its task: a process the task left writing
            # there gets EPIPE, and the next task a pipe of its own.
            self._end_output(pid)
            _report({"ended": pid, "status": status})
            if retire:
                self._forget(pid)
                return

    def reaped(self, pid: int, status: int) -> None:
        if pid not in self.children:
            # A guard (killed with its child's group), or an adopted
            # orphan: reaping it was all there was to do.
            self.guards.pop(pid, None)
            return
        self.children.discard(pid)
        self.running.pop(pid, None)
        self.end_group(pid)
        self._end_output(pid)
        if pid == self.standby:
            self.standby = None
        if pid in self.runners:
            self._forget(pid)
        if pid in self.retired:  # the daemon waits for nothing of it
            self.retired.discard(pid)
            return
        _report({"ended": pid, "status": os.waitstatus_to_exitcode(status)})

    def end_group(self, pid: int) -> None:
        """``end_group`` of a reaped child, and the end of its guard: one
        slow to start joins the group after it was killed (a process the
        task left, a zombie now, keeps the group there), and would wait for
        our death, and we for its, for ever."""
        end_group(pid)
        for guard, child in list(self.guards.items()):
            if child == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(guard, signal.SIGKILL)

    def expire(self, now: float) -> None:
        for pid, runner in list(self.runners.items()):
            if not runner.busy and pid != self.standby and now - runner.idle_since >= RUNNER_IDLE:
                self._forget(pid)

    def let_all_go(self) -> None:
        """We are stopping: idle runners exit, and a child writing its
        output gets EPIPE instead of waiting for our read."""
        for pid in list(self.runners):
            self._forget(pid)
        self.standby = None
        for output in self.outputs.values():
            output.close()
        self.by_output.clear()

    def _end_output(self, pid: int) -> None:
        """Child ``pid``'s task ended: what it wrote, to its log, and its
        pipe closed."""
        output = self.outputs.pop(pid, None)
        if output is not None:
            fd = output.fd
            output.finish()
            output.close()
            self.by_output.pop(fd, None)

    def _forget(self, pid: int) -> None:
        """No more tasks for it: an idle runner exits when its request socket
        closes, a busy one after its task."""
        runner = self.runners.pop(pid)
        if not runner.busy:
            self.retired.add(pid)
        self.by_reply.pop(runner.replies, None)
        for fd in (runner.requests, runner.replies):
            if fd >= 0:
                os.close(fd)


def fork_guard(child: int) -> int | None:
    """Fork the guard of task child ``child``'s process group; its pid, or
    None if no process can be forked now (the task then runs unguarded).

    We end the group of each child we reap (``end_group``), but a SIGKILLed
    tasktracker takes us and our children with it at once (their
    PR_SET_PDEATHSIG), and what they had started (a streaming task's
    commands) was left to init. The guard, a child of ours in the group
    (``pytxmr-guard`` in ``ps``), is told of our death by PR_SET_PDEATHSIG
    too, and then kills the group, itself included. It is no child of the
    task's (whose ``os.wait()`` must find only its own), holds no fd, and
    waits with every signal blocked: a signal the task sends its own group
    neither ends the guard nor, unless we are gone, sets it off."""
    zygote = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # a limit on processes: the task still runs
        return None
    if pid:
        return pid
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        signal.set_wakeup_fd(-1)
        for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
            with contextlib.suppress(OSError):
                os.close(fd)  # our pipes to the daemon and to the runners
        os.setpgid(0, child)  # fails if the group is gone: nothing to guard
        task.die_with_parent(signal.SIGHUP, b"pytxmr-guard")
        while os.getppid() == zygote:  # else we died before it asked to be told
            signal.sigwait({signal.SIGHUP})
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)


def end_group(pid: int) -> None:
    """Kill what a task child that ended left running: each child leads a
    process group, which the commands of a streaming task, and processes a
    job's code starts, join (unless they leave it). A task killed, or done,
    leaves none behind, as a container's end does on YARN."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _adopt_orphans() -> None:
    """Be the parent of what our children's groups leave behind (a streaming
    task's commands, killed with their group), so that we reap them: init
    does not always (in a container, PID 1 may be any program)."""
    try:
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass


def serve(spare: bool = False) -> None:
    """Serve the daemon's requests until our stdin ends. A ``spare``, started
    by the client agent for a ``run`` to come (``agent._Spare``), serves the
    ``run`` child that adopts it, and lives as long as whoever holds our
    stdin: not with the agent, our parent (the job would die with it), and
    not in the directory the agent started us in (held busy for nothing)."""
    if spare:
        os.chdir("/")  # our import path is absolute already (site made it so)
    else:
        task.die_with_parent()
    _adopt_orphans()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # A terminal's Ctrl-C reaches the whole foreground group, this process
    # too, as does a SIGTERM sent to a daemon's group (``kill -- -PGID``, a
    # supervisor stopping the group): its daemon ends it (and its tasks) as
    # it unwinds, by closing our stdin; dying here instead had the daemon
    # start another zygote.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    zygote = Zygote((wake_r, wake_w))
    zygote.fork_standby()
    buffered = b""
    while True:
        # Idle, we fork the standby when nothing came for STANDBY_QUIET.
        wanted = zygote.standby is None and zygote.idle()
        ready, _, _ = select.select([0, wake_r, *zygote.by_reply, *zygote.by_output], [], [],
                                    STANDBY_QUIET if wanted else RUNNER_IDLE / 2)
        if not ready and wanted:
            zygote.fork_standby()
        now = time.monotonic()
        for fd in ready:
            if fd in zygote.by_output:
                zygote.copied(fd)
        # Ends of tasks first, so a runner that just finished one may take
        # the next request.
        for fd in ready:
            if fd in zygote.by_reply:
                zygote.replied(fd, now)
        if wake_r in ready:
            os.read(wake_r, 4096)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            zygote.reaped(pid, status)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                # The daemon closed our stdin: it is stopping (and has
                # killed its tasks), or it died (a run child that adopted
                # us, which no death signal of ours follows: its tasks are
                # ours to end). Reap them, so none outlives us.
                zygote.let_all_go()
                for pid in list(zygote.children):
                    end_group(pid)
                # Our children and their guards; not adopted orphans that
                # still run (one that left its group may run for ever, and
                # goes to init as we exit), but those that ended, which
                # nobody else would reap.
                while zygote.children or zygote.guards:
                    try:
                        pid, _ = os.waitpid(-1, 0)
                    except ChildProcessError:
                        return
                    zygote.guards.pop(pid, None)
                    if pid in zygote.children:
                        zygote.children.discard(pid)
                        zygote.end_group(pid)
                with contextlib.suppress(ChildProcessError):
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
                return
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                zygote.handle(json.loads(line))
        zygote.expire(now)


if __name__ == "__main__":
    serve()
