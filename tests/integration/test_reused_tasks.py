"""A job's maps share task processes (``pytxmr.zygote``'s runners), and
still see what a process of their own would show them: a fresh copy of the
job's module, their own counters; a crash costs only the task that crashed,
and a process that a task left a thread running in, or that failed, runs
nothing more. Under ``run`` (real daemons, one zygote) and on a cluster of
daemons; each output is checked against the input lines."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from procs import ROOT, Cluster, base_env, run_cli

#: The map reports, per line: its process, how many tasks that process ran
#: (kept in os.environ, which outlives a task), and how many lines this
#: copy of the module saw (its own global: 1 if the module is fresh).
JOB = '''
import os
import threading
import time

SEEN = []


def map(key, line):
    SEEN.append(line)
    seq = int(os.environ.get("TEST_TASKS_RUN", "0")) + 1
    os.environ["TEST_TASKS_RUN"] = str(seq)
    word, _, arg = line.partition(" ")
    if word == "crash" and not os.path.exists(arg):
        open(arg, "w").close()
        os._exit(3)
    if word == "thread":
        threading.Thread(target=time.sleep, args=(60,)).start()
    yield line, f"{os.getpid()} {seq} {len(SEEN)}"


def reduce(key, values):
    for value in values:
        yield key, value
'''

MAPS = 60


def inputs(base: Path) -> list[Path]:
    """One line per file, so one map per line: plain ones, one that
    crashes its process the first time, one that leaves a thread."""
    base.mkdir()
    lines = [f"line {i}" for i in range(MAPS - 2)]
    lines.insert(20, f"crash {base / 'crashed-once'}")
    lines.insert(40, "thread x")
    paths = []
    for i, line in enumerate(lines):
        path = base / f"in-{i:03d}.txt"
        path.write_text(line + "\n")
        paths.append(path)
    return paths


def check(out: Path, paths: list[Path], stdout: str) -> None:
    lines = [p.read_text().strip() for p in paths]
    got = {}
    for part in sorted(out.glob("part-*")):
        for row in part.read_text().splitlines():
            line, value = row.split("\t")
            assert line not in got, f"{line!r} twice"
            got[line] = tuple(int(v) for v in value.split())
    assert sorted(got) == sorted(lines)
    # Each task saw a fresh module: its global held its one line only.
    assert {seen for _, _, seen in got.values()} == {1}
    # Processes were reused: far fewer than the maps.
    pids = Counter(pid for pid, _, _ in got.values())
    assert len(pids) < MAPS // 3, pids
    # The process that a task left a thread running in ran nothing after it.
    pid, seq, _ = got["thread x"]
    assert all(s <= seq for p, s, _ in got.values() if p == pid)
    # The crashed map ran again (elsewhere or in a new process): the job
    # succeeded with every line, and the counters count each map once.
    assert re.search(rf"map input records\s+{MAPS}\n", stdout), stdout
    assert re.search(rf"reduce output records\s+{MAPS}\n", stdout), stdout


def test_run_reuses_task_processes_with_a_fresh_module_each(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    paths = inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli("run", str(job), *map(str, paths), "-o", str(out),
                                 env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    check(out, paths, stdout)


def test_a_cluster_reuses_task_processes(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktrackers(2)
    job = tmp_path / "job.py"
    job.write_text(JOB)
    paths = inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc, stdout, stderr = cluster.submit(job, paths, out)
    assert rc == 0, stderr + cluster.logs()
    check(out, paths, stdout)
