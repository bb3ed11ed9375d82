"""The zygote: a process that has imported the task code and forks a child
per task (``python -m pytxmr.zygote``).

Starting Python and importing pytxmr costs 50-100 ms of CPU per task; a
fork costs about one. A daemon keeps one zygote and sends it one JSON line
per task on stdin; the zygote forks, the child runs the task exactly as
``python -m pytxmr.task`` would (its own process, its own fresh copy of the
user's module, stdout and stderr into the task's log, the result into a
file), and the zygote reports each start and end as JSON lines on stdout.
The zygote never imports a job module itself, so no user code can alter it.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import select
import signal
import sys
from typing import Any

from . import storage, task


#: Bytes of a task's prints kept in its log; the rest is dropped with a note,
#: so that a chatty task cannot fill a worker's disk.
MAX_LOG_BYTES = 1 << 20


class BoundedLog(io.TextIOBase):
    """The task's stdout and stderr: the user's prints, up to a limit."""

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._room = limit

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._room > 0:
            data = text.encode("utf-8", "backslashreplace")
            if len(data) > self._room:
                data = data[:self._room] + b"\n[pytxmr: log truncated]\n"
            self._room -= len(data)
            os.write(self._fd, data)
        return len(text)


def _child(request: dict[str, Any], inherited: list[int]) -> None:
    """In the forked child: wire the fds as a task expects, then run it."""
    for fd in inherited:
        os.close(fd)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    result = os.open(request["result"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(result, task.RESULT_FD)
    for fd in (log, result, devnull):
        if fd > task.RESULT_FD:
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    sys.stdin = open(0, closefd=False)
    sys.stdout = sys.stderr = BoundedLog(1, request.get("log_limit", MAX_LOG_BYTES))
    code = 1
    try:
        code = task.main([request["spec"]])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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


def serve() -> None:
    task.die_with_parent()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    buffered = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _report({"ended": pid, "status": os.waitstatus_to_exitcode(status)})
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                # The daemon closed our stdin: it is stopping (and has
                # killed its tasks). Reap them, so none outlives us.
                while True:
                    try:
                        os.waitpid(-1, 0)
                    except ChildProcessError:
                        return
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                _preload(request.get("preload", []))
                pid = os.fork()
                if pid == 0:
                    _child(request, [wake_r, wake_w])
                _report({"started": pid, "id": request["id"]})


if __name__ == "__main__":
    serve()
