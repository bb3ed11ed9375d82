"""The tasktracker's shuffle memory in real daemons (tests/procs.py):
fetched runs in a tmpfs directory up to ``--shuffle-memory``, on disk
beyond it, nothing left behind; the output compared with a
``collections.Counter`` reference."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Cluster, Daemon, wait_for

from pytxmr import shufflememory

WORDCOUNT = ROOT / "examples" / "wordcount.py"

needs_shm = pytest.mark.skipif(not os.access(shufflememory.SHM_ROOT, os.W_OK),
                               reason="no writable /dev/shm")


# --- real daemons ---------------------------------------------------------------------

def _corpus(root: Path, files: int = 3, lines: int = 2500) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        path = root / f"in{n}.txt"
        path.write_text("".join(f"w{(i * 7919 + n) % 1500} x{i % 13} shared\n"
                                for i in range(lines)))
        paths.append(path)
    return paths


def _reference(paths: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for p in paths:
        counts.update(p.read_text().split())
    return counts


def _output(out: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for part in sorted(out.glob("part-*")):
        for line in part.read_text().splitlines():
            word, n = line.rsplit("\t", 1)
            assert word not in counts, word
            counts[word] = int(n)
    return counts


def _api(c: Cluster, path: str) -> Any:
    import urllib.request

    assert c.jobtracker is not None
    url = f"http://127.0.0.1:{c.jobtracker.ready['web_port']}/api/{path}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _framework_counters(c: Cluster) -> dict[str, int]:
    """The pytxmr counters of the cluster's one job."""
    [job] = _api(c, "jobs")
    counters: dict[str, int] = _api(c, f"jobs/{job['job_id']}")["counters"]["pytxmr"]
    return counters


def _memory_dir(workdir: Path) -> Path:
    return Path(shufflememory.memory_dir(str(workdir)))


def _runs(workdir: Path) -> list[str]:
    """The run files in a tasktracker's memory directory."""
    try:
        return sorted(p.name for p in _memory_dir(workdir).iterdir() if p.suffix == ".seg")
    except FileNotFoundError:
        return []


#: A word count whose reduces, once their runs are fetched, wait for MARKS/go.
HELD_REDUCE = '''\
import os
import sys
import time

MARKS = {marks!r}


def map(offset, line):
    for word in line.split():
        yield word, 1


def reduce(key, values):
    if not getattr(sys, "_held", False):
        sys._held = True
        open(os.path.join(MARKS, f"reducing-{{os.getpid()}}"), "a").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(MARKS, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
    yield key, sum(values)
'''


def _held_job(base: Path) -> tuple[Path, Path]:
    marks = base / "marks"
    marks.mkdir()
    job = base / "held.py"
    job.write_text(HELD_REDUCE.format(marks=str(marks)))
    return job, marks


def _two_workers(make_cluster: Callable[[], Cluster], *options: str,
                 default_workdir: bool = False) -> tuple[Cluster, list[Daemon]]:
    c = make_cluster()
    c.start_jobtracker()
    tts = [c.start_tasktracker(2, "--heartbeat", "0.3", *options,
                               default_workdir=default_workdir) for _ in range(2)]
    return c, tts


@contextlib.contextmanager
def _held_submission(c: Cluster) -> Iterator[tuple[subprocess.Popen[str], Path, list[Path], Path]]:
    """Submit a word count whose two reduces wait, their runs fetched, until
    ``_release``; yields once both run: (submitter, marks, inputs, output).
    The submitter is killed on the way out unless it has finished."""
    job, marks = _held_job(c.base)
    inputs = _corpus(c.base / "in")
    out = c.base / "out"
    proc = c.popen_submit(job, inputs, out, "--reducers", "2", "--split-size", "16K", "-q")
    try:
        wait_for(lambda: len(list(marks.glob("reducing-*"))) == 2, 60, "both reduces to run")
        yield proc, marks, inputs, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _release(c: Cluster, proc: subprocess.Popen[str], marks: Path) -> None:
    """Let the held reduces finish; the job must succeed."""
    (marks / "go").touch()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{stdout}\n{stderr}\n{c.logs()}"


@needs_shm
def test_fetched_runs_that_fit_are_kept_in_memory_and_removed_after(
        make_cluster: Callable[[], Cluster]) -> None:
    """While the reduces run, their fetched runs are files in the workers'
    tmpfs directories; the output is exact, the counters say how many bytes
    came through memory, and nothing is left after the job or the stop."""
    c, tts = _two_workers(make_cluster)
    workdirs = [tt.workdir for tt in tts]
    assert all(w is not None and _memory_dir(w).is_dir() for w in workdirs)
    with _held_submission(c) as (proc, marks, inputs, out):
        held = [name for w in workdirs for name in _runs(w)]  # type: ignore[arg-type]
        assert held, "no fetched run in memory"
        _release(c, proc, marks)
    assert _output(out) == _reference(inputs)
    counters = _framework_counters(c)
    assert counters["shuffle bytes in memory"] > 0, counters
    assert (counters["shuffle bytes in memory"] + counters["shuffle bytes on disk"]
            == counters["shuffle bytes"])
    for w in workdirs:
        assert _runs(w) == []  # type: ignore[arg-type]
    c.stop_all()  # which also fails if a cleanly stopped worker left its directory


@needs_shm
def test_a_one_byte_budget_sends_every_run_to_disk(
        make_cluster: Callable[[], Cluster]) -> None:
    """Runs that do not fit are fetched to disk, and the output is the same."""
    c, _ = _two_workers(make_cluster, "--shuffle-memory", "1")
    inputs = _corpus(c.base / "in")
    out = c.base / "out"
    rc, stdout, stderr = c.submit(WORDCOUNT, inputs, out, "--reducers", "2",
                                  "--split-size", "16K", "-q")
    assert rc == 0, f"{stdout}\n{stderr}\n{c.logs()}"
    assert _output(out) == _reference(inputs)
    counters = _framework_counters(c)
    assert counters["shuffle bytes in memory"] == 0
    assert counters["shuffle bytes on disk"] == counters["shuffle bytes"] > 0


@needs_shm
def test_a_restarted_tasktracker_removes_the_runs_its_killed_predecessor_left(
        make_cluster: Callable[[], Cluster]) -> None:
    """A SIGKILLed worker cannot clean up: the next one on its work dir
    (claimed with the work dir lock) empties its tmpfs directory at start,
    and the job still finishes exactly."""
    c, tts = _two_workers(make_cluster, default_workdir=True)
    workdirs = [c.home / ".pytxmr" / "tasktracker", c.home / ".pytxmr" / "tasktracker-2"]
    with _held_submission(c) as (proc, marks, inputs, out):
        victim = next(i for i, w in enumerate(workdirs) if _runs(w))
        left = _runs(workdirs[victim])
        tts[victim].stop(signal.SIGKILL)
        assert _runs(workdirs[victim]) == left  # nobody cleaned up
        # The lock died with the victim: its successor claims the same work dir.
        restarted = c.start_tasktracker(2, "--heartbeat", "0.3", default_workdir=True)
        assert not set(_runs(workdirs[victim])) & set(left), "leftovers not removed"
        assert _memory_dir(workdirs[victim]).is_dir()
        _release(c, proc, marks)
    assert _output(out) == _reference(inputs)
    for w in workdirs:
        assert _runs(w) == []
    survivor = tts[1 - victim]
    for daemon in (restarted, survivor):
        assert daemon.stop() == []
        assert daemon.proc.returncode == 0
    for w in workdirs:
        assert not _memory_dir(w).exists(), "a clean stop leaves no shuffle memory"
    c.stop_all()
