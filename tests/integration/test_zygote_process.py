"""A real zygote process forks a task child and reports its exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path


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
                                                 "fixed_reducers": False, "split_by": "lines"}]}
        assert (tmp_path / "log").read_text() == "hello from the check\n"
    finally:
        assert zygote.stdin
        zygote.stdin.close()  # the zygote's cue to reap its children and exit
        assert zygote.wait(10) == 0


def test_a_zygote_outlives_a_terminals_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C reaches a terminal's whole foreground group: the zygote of a
    `run` died of it (and its daemon started another, mid-unwinding); it
    is its daemon's to end. Its task children handle SIGINT as Python does."""
    job = tmp_path / "job.py"
    job.write_text("import signal\nprint(signal.getsignal(signal.SIGINT).__name__)\n"
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
            assert (tmp_path / f"log{n}").read_text() == "default_int_handler\n"
            zygote.send_signal(signal.SIGINT)
        assert zygote.poll() is None
    finally:
        zygote.stdin.close()
        assert zygote.wait(10) == 0
