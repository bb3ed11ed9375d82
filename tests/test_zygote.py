"""The zygote forks task children; a chatty task's prints stay bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from pytxmr.zygote import BoundedLog


def test_bounded_log_keeps_the_head_and_says_it_cut(tmp_path: Path) -> None:
    """A task printing without end must not fill the worker's disk."""
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    log = BoundedLog(fd, 100)
    for _ in range(1000):
        print("0123456789", file=log)
    os.close(fd)
    data = path.read_bytes()
    assert data.startswith(b"0123456789\n") and data.endswith(b"[pytxmr: log truncated]\n")
    assert len(data) < 200


def test_zygote_forks_a_task_and_reports_its_exit(tmp_path: Path) -> None:
    """Each request becomes a child whose result, log and exit status come back."""
    job = tmp_path / "job.py"
    job.write_text("print('hello from the check')\n"
                   "def map(k, v):\n    yield v, 1\n"
                   "def reduce(k, vs):\n    yield k, sum(vs)\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "check", "job": {
        "source_path": str(job), "filename": str(job)}}))
    zygote = subprocess.Popen([sys.executable, "-m", "pytxmr.zygote"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        request = {"id": 1, "spec": str(spec), "log": str(tmp_path / "log"),
                   "result": str(tmp_path / "result")}
        assert zygote.stdin and zygote.stdout
        zygote.stdin.write(json.dumps(request).encode() + b"\n")
        zygote.stdin.flush()
        started = json.loads(zygote.stdout.readline())
        ended = json.loads(zygote.stdout.readline())
        assert started["id"] == 1 and ended == {"ended": started["started"], "status": 0}
        result = json.loads((tmp_path / "result").read_text())["result"]
        assert result == {"ok": True, "num_reducers": None}
        assert (tmp_path / "log").read_text() == "hello from the check\n"
    finally:
        assert zygote.stdin
        zygote.stdin.close()  # the zygote's cue to reap its children and exit
        assert zygote.wait(10) == 0


def test_io_bytes_grow_when_a_process_reads(tmp_path: Path) -> None:
    """The stall check's notion of progress: a process's bytes read and written."""
    from pytxmr.child import io_bytes

    before = io_bytes(os.getpid())
    if before is None:
        import pytest

        pytest.skip("no /proc/PID/io here")
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    (tmp_path / "f").read_bytes()
    after = io_bytes(os.getpid())
    assert after is not None and after >= before + 200_000


def test_a_stopping_zygote_kills_a_child_whose_start_was_not_yet_reported(
        monkeypatch: Any) -> None:
    """A fork requested just before the daemon stops: the zygote forks it
    anyway and waits for it before exiting, so it must die when its start
    is reported, or the daemon's stop waits on a task nobody killed."""
    from pytxmr import child

    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(child.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    zygote = child.Zygote(reactor=None)  # type: ignore[arg-type]
    zygote.running = True
    zygote._ended = Deferred()
    zygote.transport = StringTransport()
    zygote.transport.closeStdin = lambda: None  # type: ignore[attr-defined]
    forked = zygote.fork("spec", "log", "result")
    zygote.stop()
    assert killed == []  # its pid is not known yet
    zygote.outReceived(json.dumps({"started": 4242, "id": 1}).encode() + b"\n")
    assert killed == [(4242, signal.SIGKILL)]
    assert forked.kill_requested == "the daemon is stopping"
