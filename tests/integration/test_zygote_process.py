"""A real zygote process forks a task child and reports its exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from pytxmr.zygote import STANDBY_NAME


def test_zygote_forks_a_task_and_reports_its_exit(tmp_path: Path) -> None:
    """Each request becomes a child whose result, log and exit status come back."""
    job = tmp_path / "job.py"
    job.write_text("print('hello from the check')\n"
                   "def map(k, v):\n    yield v, 1\n"
                   "def reduce(k, vs):\n    yield k, sum(vs)\n")
    spec = {"kind": "check", "job": {"source_path": str(job), "filename": str(job)}}
    zygote = subprocess.Popen([sys.executable, "-m", "pytxmr.zygote"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        request = {"id": 1, "spec": spec, "cwd": str(tmp_path), "log": str(tmp_path / "log"),
                   "result": str(tmp_path / "result")}
        assert zygote.stdin and zygote.stdout
        zygote.stdin.write(json.dumps(request).encode() + b"\n")
        zygote.stdin.flush()
        started = json.loads(zygote.stdout.readline())
        ended = json.loads(zygote.stdout.readline())
        assert started["id"] == 1 and ended == {"ended": started["started"], "status": 0}
        result = json.loads((tmp_path / "result").read_text())["result"]
        assert result == {"ok": True, "steps": [{"num_reducers": None, "map_only": False,
                                                 "fixed_reducers": False, "split_by": "lines",
                                                 "output_format": "text"}]}
        assert (tmp_path / "log").read_text() == "hello from the check\n"
    finally:
        assert zygote.stdin
        zygote.stdin.close()  # the zygote's cue to reap its children and exit
        assert zygote.wait(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_zygote_outlives_a_signal_to_its_daemons_group(tmp_path: Path, sig: int) -> None:
    """Ctrl-C reaches a terminal's whole foreground group, and a SIGTERM
    sent to a daemon's group reaches its zygote: the zygote died of it
    (and its daemon started another, mid-unwinding); it is its daemon's to
    end. Its task children handle SIGINT as Python does, and die of SIGTERM."""
    job = tmp_path / "job.py"
    job.write_text("import signal\nprint(signal.getsignal(signal.SIGINT).__name__,"
                   " signal.getsignal(signal.SIGTERM).name)\n"
                   "def map(k, v):\n    yield v, 1\n")
    spec = {"kind": "check", "job": {"source_path": str(job), "filename": str(job)}}
    zygote = subprocess.Popen([sys.executable, "-m", "pytxmr.zygote"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert zygote.stdin and zygote.stdout
    try:
        for n in (1, 2):
            request = {"id": n, "spec": spec, "cwd": str(tmp_path),
                       "log": str(tmp_path / f"log{n}"), "result": str(tmp_path / f"result{n}")}
            zygote.stdin.write(json.dumps(request).encode() + b"\n")
            zygote.stdin.flush()
            started = json.loads(zygote.stdout.readline())
            assert json.loads(zygote.stdout.readline()) == {"ended": started["started"],
                                                            "status": 0}
            assert (tmp_path / f"log{n}").read_text() == "default_int_handler SIG_DFL\n"
            zygote.send_signal(sig)
        assert zygote.poll() is None
    finally:
        zygote.stdin.close()
        assert zygote.wait(10) == 0


#: Run as a subreaper (as a container's PID 1 that does not reap would be
#: the parent of what the zygote leaves): a zygote that ran tasks, one of
#: them a reused runner, and was told to stop must leave no process, not
#: even a zombie (a guard it did not reap).
_SUBREAPER = r"""
import ctypes, json, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
tmp, job = sys.argv[1], sys.argv[2]
zygote = subprocess.Popen([sys.executable, "-m", "pytxmr.zygote"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
spec = {"kind": "check", "job": {"source_path": job, "filename": job}}
for n, reuse in ((1, None), (2, "job_a")):
    request = {"id": n, "spec": spec, "cwd": tmp, "log": f"{tmp}/log{n}",
               "result": f"{tmp}/result{n}", "reuse": reuse}
    zygote.stdin.write(json.dumps(request).encode() + b"\n")
    zygote.stdin.flush()
    started = json.loads(zygote.stdout.readline())
    assert json.loads(zygote.stdout.readline())["ended"] == started["started"]
zygote.stdin.close()
assert zygote.wait(10) == 0
time.sleep(0.3)
left = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            left.append(stat.split(" (")[1].split(")")[0] + " " + stat.rsplit(")", 1)[1].split()[0])
print(json.dumps(left))
"""


def test_a_stopped_zygote_leaves_no_process_nor_zombie(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("def map(k, v):\n    yield v, 1\n")
    done = subprocess.run([sys.executable, "-c", _SUBREAPER, str(tmp_path), str(job)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


class ZygoteProcess:
    """A real zygote, asked to run check tasks of job modules in ``base``;
    its stdin closed at the end (its cue to reap its children and exit)."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.base = base
        self.proc = subprocess.Popen([sys.executable, "-m", "pytxmr.zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.started: dict[str, Any] = {}  # what the zygote said of the last task it started

    def run(self, n: int, job: Path, **more: Any) -> int:
        """Start task ``n`` (log ``logN``, result ``resultN``); its pid."""
        assert self.proc.stdin and self.proc.stdout
        spec = {"kind": "check", "job": {"source_path": str(job), "filename": str(job)}}
        request = {"id": n, "spec": spec, "cwd": str(self.base),
                   "log": str(self.base / f"log{n}"), "result": str(self.base / f"result{n}"),
                   **more}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        self.started = json.loads(self.proc.stdout.readline())
        return int(self.started["started"])

    def ended(self) -> dict[str, Any]:
        assert self.proc.stdout
        return dict(json.loads(self.proc.stdout.readline()))

    def kill(self, n: int) -> None:
        """The daemon's kill of task ``n``."""
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"kill": n}).encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


def test_what_a_task_writes_to_its_descriptors_is_bounded(tmp_path: Path) -> None:
    """A subprocess's output and C-level writes count against the task's
    log limit with its prints: they went to the log file directly, and one
    task could fill the worker's tmpfs. The task itself runs on, and the
    zygote serves the next one."""
    job = tmp_path / "job.py"
    job.write_text("import os, subprocess, sys\n"
                   "print('the head')\n"
                   "os.write(1, b'x' * 3_000_000)\n"
                   "subprocess.run([sys.executable, '-c', 'import os; os.write(2, b\"y\" * 3_000_000)'],"
                   " check=True)\n"
                   "print('the end', flush=True)\n"
                   "def map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        for n, limit in ((1, 1000), (2, 5000)):
            pid = zygote.run(n, job, log_limit=limit)
            assert zygote.ended() == {"ended": pid, "status": 0}
            log = (tmp_path / f"log{n}").read_bytes()
            assert log.startswith(b"the head\nxxxx"), log[:100]
            assert log.endswith(b"\n[pytxmr: log truncated]\n") and len(log) <= limit + 50
            assert json.loads((tmp_path / f"result{n}").read_text())["result"]["ok"]
    finally:
        zygote.close()


def test_a_program_that_leaves_the_tasks_stdout_non_blocking_breaks_no_print(
        tmp_path: Path) -> None:
    """A task's stdout is a pipe, whose flags its children share: one that
    set it non-blocking (node does) had the task's next large print fail
    with BlockingIOError, and the next task of a reused process too."""
    job = tmp_path / "job.py"
    job.write_text("import subprocess, sys\n"
                   "subprocess.run([sys.executable, '-c', 'import os; os.set_blocking(1, False)'],"
                   " check=True)\n"
                   "for i in range(8):\n    print('chunk', i, 'y' * 200_000)\n"
                   "print('the end', flush=True)\n"
                   "def map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        pid = zygote.run(1, job, log_limit=4 << 20)
        assert zygote.ended() == {"ended": pid, "status": 0}
        assert json.loads((tmp_path / "result1").read_text())["result"]["ok"]
        log = (tmp_path / "log1").read_text()
        assert log.count("chunk") == 8 and log.endswith("the end\n")
    finally:
        zygote.close()


def test_a_task_holds_no_other_task_s_log(tmp_path: Path) -> None:
    """The zygote holds each running task's log open: a task forked
    meanwhile inherited it (another job's, another user's log to write
    in), and a reused process kept it, deleted, for its life."""
    import time

    writer = tmp_path / "writer.py"
    writer.write_text("import time\nprint('A', flush=True)\ntime.sleep(3)\n"
                      "def map(k, v):\n    yield v, 1\n")
    looker = tmp_path / "looker.py"
    looker.write_text("import os\nfor fd in os.listdir('/proc/self/fd'):\n"
                      "    try:\n        print(os.readlink(f'/proc/self/fd/{fd}'))\n"
                      "    except OSError:\n        pass\n"
                      "def map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        zygote.run(1, writer)
        deadline = time.monotonic() + 10
        while not (tmp_path / "log1").exists() or not (tmp_path / "log1").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        zygote.run(2, looker)
        assert {zygote.ended()["status"] for _ in range(2)} == {0}
        seen = (tmp_path / "log2").read_text()
        assert str(tmp_path / "log1") not in seen, seen
    finally:
        zygote.close()


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def _wait_for(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return got


def test_an_idle_zygote_s_first_task_runs_in_a_process_forked_before_it_was_due(
        tmp_path: Path) -> None:
    """The standby: a job's first tasks wait for no fork. A task asked for
    while another runs is forked as before; once no task ran for a while,
    a new standby waits. Each runs as a task alone would: its own process
    group, its job's module fresh, its end said as soon as it is done."""
    slow = tmp_path / "slow.py"
    slow.write_text("import os, time\nprint(os.getpid(), os.getpgrp(), flush=True)\n"
                    "time.sleep(1)\ndef map(k, v):\n    yield v, 1\n")
    quick = tmp_path / "quick.py"
    quick.write_text("import os, sys\nprint(os.getpid(), 'slow' in sys.modules)\n"
                     "def map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        before = _wait_for(lambda: _children(zygote.proc.pid))  # the standby and its guard
        first = zygote.run(1, slow)
        assert first in before
        second = zygote.run(2, quick)
        assert second not in before
        assert [zygote.ended() for _ in range(2)] == [{"ended": second, "status": 0},
                                                      {"ended": first, "status": 0}]
        assert (tmp_path / "log1").read_text().split() == [str(first), str(first)]
        assert (tmp_path / "log2").read_text().split() == [str(second), "False"]
        # A new standby, forked once all was quiet (STANDBY_QUIET); the
        # ended tasks' guards may linger a moment.
        [standby] = _wait_for(lambda: {pid for pid in _children(zygote.proc.pid) - before
                                       if _name(pid) == STANDBY_NAME.decode()})
        third = zygote.run(3, quick)
        assert third == standby
        assert zygote.ended() == {"ended": third, "status": 0}
        assert (tmp_path / "log3").read_text().split() == [str(third), "False"]
    finally:
        zygote.close()


def test_a_kill_names_a_task_not_the_process_that_ran_it(tmp_path: Path) -> None:
    """A reused process ended task 1 and took task 2 of its job: a kill of
    task 1, late, leaves task 2 running; one of task 2 ends it at once."""
    quick = tmp_path / "quick.py"
    quick.write_text("def map(k, v):\n    yield v, 1\n")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\ndef map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        first = zygote.run(1, quick, reuse="job")
        assert zygote.ended() == {"ended": first, "status": 0}
        second = zygote.run(2, slow, reuse="job")
        assert second == first and zygote.started.get("reused")
        zygote.kill(1)
        time.sleep(0.5)
        with open(f"/proc/{second}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in "RS"  # running or asleep, not dead
        began = time.monotonic()
        zygote.kill(2)
        assert zygote.ended() == {"ended": second, "status": -signal.SIGKILL}
        assert time.monotonic() - began < 2  # by the zygote, not the daemon's late pid kill
    finally:
        zygote.close()


def test_a_standby_that_died_is_replaced_and_the_task_runs_all_the_same(
        tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("print('ran')\ndef map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        for pid in _wait_for(lambda: _children(zygote.proc.pid)):
            os.kill(pid, signal.SIGKILL)  # the standby and its guard
        time.sleep(0.2)
        pid = zygote.run(1, job)
        assert zygote.ended() == {"ended": pid, "status": 0}
        assert (tmp_path / "log1").read_text() == "ran\n"
        assert json.loads((tmp_path / "result1").read_text())["result"]["ok"]
    finally:
        zygote.close()


def test_a_stopped_standby_is_not_handed_a_task(tmp_path: Path) -> None:
    """A standby stopped (``SIGSTOP``, by hand) took the next task, which
    waited for ever: with the client agent, a ``run`` failed after 30 s
    with "importing the job module took longer than 30s", which blamed
    the job. It is killed, and the task forked."""
    job = tmp_path / "job.py"
    job.write_text("print('ran')\ndef map(k, v):\n    yield v, 1\n")
    zygote = ZygoteProcess(tmp_path)
    try:
        [standby] = _wait_for(lambda: [pid for pid in _children(zygote.proc.pid)
                                       if _name(pid) == STANDBY_NAME.decode()])
        os.kill(standby, signal.SIGSTOP)
        began = time.monotonic()
        pid = zygote.run(1, job)
        assert pid != standby
        assert zygote.ended() == {"ended": pid, "status": 0}
        assert time.monotonic() - began < 10
        assert (tmp_path / "log1").read_text() == "ran\n"
        _wait_for(lambda: not os.path.exists(f"/proc/{standby}"))
    finally:
        zygote.close()


def test_a_standby_s_task_sees_what_was_made_after_it_was_forked(tmp_path: Path) -> None:
    """A PYTHONPATH directory made after the zygote started (the user's
    ``pip install --target deps`` after an ImportError): the standby,
    forked before, had noted it missing, and the task failed again."""
    deps = tmp_path / "deps"
    job = tmp_path / "job.py"
    job.write_text("import helper\nprint(helper.WHO)\ndef map(k, v):\n    yield v, 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(deps), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    zygote = ZygoteProcess(tmp_path, env=env)
    try:
        before = _wait_for(lambda: _children(zygote.proc.pid))
        deps.mkdir()
        (deps / "helper.py").write_text("WHO = 'the helper'\n")
        pid = zygote.run(1, job)
        assert pid in before
        assert zygote.ended() == {"ended": pid, "status": 0}
        assert (tmp_path / "log1").read_text() == "the helper\n"
    finally:
        zygote.close()


def test_a_task_whose_store_client_the_zygote_imports_first_is_forked_after(
        tmp_path: Path) -> None:
    """A map of an http(s) input asks the zygote to import the store's
    client before the fork (``preload``), so that each map shares it: a
    standby forked before has not imported it, though the zygote has
    since (a second map asked for while the first runs)."""
    pytest.importorskip("fsspec.implementations.http")
    looks = "import sys, time\nprint('fsspec.implementations.http' in sys.modules)\n"
    slow = write(tmp_path / "slow.py", looks + "time.sleep(1)\n")
    quick = write(tmp_path / "quick.py", looks)
    zygote = ZygoteProcess(tmp_path)
    try:
        before = _wait_for(lambda: _children(zygote.proc.pid))
        first = zygote.run(1, slow, preload=["fsspec.implementations.http"])
        second = zygote.run(2, quick, preload=["fsspec.implementations.http"])
        assert not {first, second} & before
        assert sorted([zygote.ended()["ended"] for _ in range(2)]) == sorted([first, second])
        assert (tmp_path / "log1").read_text() == (tmp_path / "log2").read_text() == "True\n"
    finally:
        zygote.close()


def write(path: Path, module: str) -> Path:
    """A job module: ``module``'s statements, then a map."""
    path.write_text(module + "def map(k, v):\n    yield v, 1\n")
    return path
