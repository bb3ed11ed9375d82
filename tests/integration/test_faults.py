"""Fault injection into real daemons: lost and stopped workers, a killed
jobtracker, failing, hanging, exiting and greedy user code, corrupt map
outputs, bad input and abuse of the shuffle port.

Faults are injected deterministically: the test jobs write marker files
(``MARKS/started-PID``...) so that the test knows which phase they are in,
and wait on barrier files the test creates; "only the first attempt" is an
``O_EXCL`` marker, never a timer. Every scenario checks the same things: the
output equals an independent ``Counter``, exactly one committed attempt per
task (one ``part-NNNNN`` each, ``_SUCCESS``, no ``_temporary``), no task
process outlives its attempt, and the cluster still runs a new job.

Expiries and timeouts are the daemons' options, set short here (heartbeat
0.3 s, expiry 2-3 s, task timeout 3 s), so that the file runs in well under
three minutes on two cores.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from procs import ROOT, Cluster, Daemon, wait_for

WORDCOUNT = ROOT / "examples" / "wordcount.py"
#: Bounds a fault scenario's job; they take a few seconds.
JOB_TIMEOUT = 60.0
HEARTBEAT = ("--heartbeat", "0.3")


# --- inputs and references ------------------------------------------------------------

def make_corpus(root: Path, sizes: Iterable[int], seed: int) -> list[Path]:
    """Files of deterministic random words (a few hundred KB in all)."""
    rng = random.Random(seed)
    vocab = sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(rng.randint(1, 7)))
                    for _ in range(2000)})
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, size in enumerate(sizes):
        words = rng.choices(vocab, k=size // 5)
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        path = root / f"in{n}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def word_counts(paths: Iterable[Path], errors: str = "strict") -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        for line in path.read_bytes().decode("utf-8", errors).split("\n"):
            counts.update(line.split())
    return counts


def line_count(paths: Iterable[Path]) -> int:
    return sum(p.read_bytes().count(b"\n") for p in paths)


def read_output(output: Path) -> dict[str, int]:
    """The union of the part files' ``word<TAB>count`` lines; fails on a
    key found twice (in one part or in two)."""
    counts: dict[str, int] = {}
    for path in sorted(output.glob("part-*")):
        for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
            word, count = line.rsplit("\t", 1)
            assert word not in counts, f"{word!r} twice in the output ({path.name})"
            counts[word] = int(count)
    return counts


def append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def line_of(path: Path, text: str) -> int:
    """The line number of the first line of ``path`` containing ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# --- job modules ----------------------------------------------------------------------

#: Markers and barriers shared by the test jobs. ``once(name)`` is true for
#: exactly one caller in the whole cluster (an O_EXCL create).
PRELUDE = '''\
import os
import signal
import sys
import time

import pytxmr

MARKS = {marks!r}
# Each map in a process of its own: the scenarios mark and stop processes.
reuse_processes = False


def mark(name):
    with open(os.path.join(MARKS, name), "a"):
        pass


def once(name):
    try:
        os.close(os.open(os.path.join(MARKS, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def wait_file(*names, limit=60.0):
    """Wait until one of the files exists; fail after ``limit`` seconds so
    that a broken test cannot hang forever."""
    deadline = time.monotonic() + limit
    while not any(os.path.exists(os.path.join(MARKS, n)) for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never created " + " or ".join(names))
        time.sleep(0.01)
'''

WORDCOUNT_TAIL = '''

def reduce(key, values):
    yield key, sum(values)
'''


def job_source(marks: Path, map_body: str, tail: str = WORDCOUNT_TAIL) -> str:
    """A word count whose ``map(key, value)`` runs ``map_body`` (indented
    code that may use ``value``) before yielding its words."""
    body = "\n".join("    " + line for line in map_body.strip("\n").splitlines())
    return (PRELUDE.format(marks=str(marks)) + "\n\ndef map(key, value):\n" + body
            + "\n    for word in value.split():\n        yield word, 1\n" + tail)


#: Every map waits, once started, until the test opens ``go`` (or ``go-PID``
#: for this process only).
BARRIER_MAP = '''\
if not getattr(sys, "_started", False):
    sys._started = True
    mark(f"started-{os.getpid()}")
    wait_file("go", f"go-{os.getpid()}")
'''


# --- the cluster's view ---------------------------------------------------------------

def api(cluster: Cluster, path: str) -> Any:
    assert cluster.jobtracker is not None
    url = f"http://127.0.0.1:{cluster.jobtracker.ready['web_port']}/api/{path}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def worker(cluster: Cluster, wid: str) -> dict[str, Any]:
    return next(w for w in api(cluster, "workers") if w["wid"] == wid)


def job_ids(cluster: Cluster) -> set[str]:
    return {j["job_id"] for j in api(cluster, "jobs")}


def new_job(cluster: Cluster, before: set[str], what: str = "the job") -> str:
    """The id of the one job submitted since ``before`` was taken."""
    def appeared() -> str | None:
        new = job_ids(cluster) - before
        return new.pop() if new else None
    return wait_for(appeared, 20, f"{what} to be submitted", 0.05)


def progress(cluster: Cluster, job_id: str, kind: str) -> dict[str, Any]:
    return next(j for j in api(cluster, "jobs") if j["job_id"] == job_id)[kind]


def started(marks: Path) -> set[int]:
    """Pids of the task processes whose map has started (BARRIER_MAP)."""
    return {int(p.name.split("-")[1]) for p in marks.glob("started-*")}


def pids_of(daemon: Daemon) -> set[int]:
    return {p.pid for p in daemon.task_children()}


def descendants(daemon: Daemon) -> list[psutil.Process]:
    try:
        return psutil.Process(daemon.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone(pids: Iterable[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def task_processes(cluster: Cluster) -> list[psutil.Process]:
    """Processes working in a daemon's work dir: task children (and the
    jobtracker's check children), wherever they are in the process tree."""
    base = str(cluster.base) + os.sep
    out = []
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(base) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def assert_no_task_processes(cluster: Cluster, timeout: float = 15) -> None:
    """Once jobs are over, no task process is left: not under a live daemon,
    not orphaned by a dead one."""
    wait_for(lambda: not task_processes(cluster), timeout,
             "every task process to end (orphans?)", 0.05)


def run(proc: subprocess.Popen[str], timeout: float = JOB_TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the submitter did not finish in {timeout:g}s:\n{out}\n{err}")
    return proc.returncode, out, err


def ok(result: tuple[int, str, str], cluster: Cluster) -> str:
    rc, out, err = result
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}\n{cluster.logs()}"
    return out


def job_id_of(stdout: str) -> str:
    m = re.search(r"^(job_\S+) succeeded", stdout, re.MULTILINE)
    assert m, stdout
    return m.group(1)


def attempts(detail: dict[str, Any], state: str | None = None,
             kind: str | None = None) -> list[dict[str, Any]]:
    return [a for t in detail["tasks"] for a in t["attempts"]
            if (state is None or a["state"] == state) and (kind is None or a["kind"] == kind)]


def counters(detail: dict[str, Any], group: str = "pytxmr") -> dict[str, int]:
    return detail["counters"].get(group, {})


def check_job(cluster: Cluster, job_id: str, output: Path, reducers: int,
              reference: Counter[str] | dict[str, int]) -> dict[str, Any]:
    """The output is exact and committed once per task; nothing is left
    running; the job's detail (returned) agrees."""
    names = sorted(p.name for p in output.iterdir())
    assert names == ["_PYTXMR_OUTPUT", "_SUCCESS"] + [f"part-{i:05d}" for i in range(reducers)], names
    assert read_output(output) == dict(reference)
    detail = api(cluster, f"jobs/{job_id}")
    assert detail["state"] == "succeeded", detail["error"]
    for task in detail["tasks"]:
        by_id = {a["id"]: a for a in task["attempts"]}
        assert task["state"] == "succeeded", task
        assert by_id[task["committed"]]["state"] == "succeeded", task
        if task["kind"] == "reduce":
            assert sum(a["state"] == "succeeded" for a in task["attempts"]) == 1, task
    assert_no_task_processes(cluster)
    return detail


def assert_serves(cluster: Cluster, name: str) -> None:
    """The cluster still runs a job, correctly."""
    data = cluster.base / f"{name}-after.txt"
    data.write_text("still serving\nserving jobs\n")
    out = cluster.base / f"{name}-after"
    ok(cluster.submit(WORDCOUNT, [data], out, "--reducers", "2", "-q"), cluster)
    assert read_output(out) == {"still": 1, "serving": 2, "jobs": 1}
    assert (out / "_SUCCESS").exists()


def submit_popen(cluster: Cluster, job: Path, inputs: list[Path], output: Path,
                 *options: str) -> subprocess.Popen[str]:
    return cluster.popen_submit(job, inputs, output, "-q", *options)


class Scenario:
    """One test's directory: its marks dir, its inputs and job modules."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.dir = cluster.base / name
        self.marks = self.dir / "marks"
        self.marks.mkdir(parents=True)
        self.output = self.dir / "out"

    def job(self, map_body: str = "", tail: str = WORDCOUNT_TAIL, name: str = "job") -> Path:
        path = self.dir / f"{name}.py"
        path.write_text(job_source(self.marks, map_body or "pass", tail), encoding="utf-8")
        return path

    def corpus(self, sizes: Iterable[int] = (60_000, 50_000, 40_000), seed: int = 1) -> list[Path]:
        return make_corpus(self.dir / "in", sizes, seed)

    def open(self, name: str = "go") -> None:
        (self.marks / name).touch()


class ReduceSlotBlocker:
    """A job holding every reduce slot of the cluster while its one map
    waits on a barrier: the reduces of a job submitted next cannot start
    (so cannot fetch) until ``release``. It holds one process slot."""

    def __init__(self, cluster: Cluster, scenario: Scenario, reduce_slots: int,
                 wait: bool = True) -> None:
        self.cluster = cluster
        self.marks = scenario.dir / "blocker-marks"
        self.marks.mkdir()
        job = scenario.dir / "blocker.py"
        job.write_text(job_source(self.marks, BARRIER_MAP), encoding="utf-8")
        self.input = scenario.dir / "blocker.txt"
        self.input.write_text("blocking the reduce slots\n")
        self.output = scenario.dir / "blocker-out"
        self.reducers = reduce_slots
        before = job_ids(cluster)
        self.proc = submit_popen(cluster, job, [self.input], self.output,
                                 "--reducers", str(reduce_slots))
        try:
            self.job_id = new_job(cluster, before, "the blocker job")
            wait_for(lambda: started(self.marks), 20, "the blocker's map to start")
            if wait:
                self.wait_holding()
        except BaseException:
            self.end()
            raise

    def wait_holding(self) -> None:
        wait_for(lambda: progress(self.cluster, self.job_id, "reduces")["running"]
                 == self.reducers, 20, "the blocker's reduces to hold every reduce slot", 0.05)

    def release(self) -> None:
        (self.marks / "go").touch()
        ok(run(self.proc), self.cluster)
        assert read_output(self.output) == word_counts([self.input])

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def map_outputs(tasktracker: Daemon, job_id: str) -> list[Path]:
    """The data files of the job's finished maps on a tasktracker: a map's
    own, or a task process's pack of small outputs."""
    assert tasktracker.workdir is not None
    return sorted(tasktracker.workdir.glob(f"store/{job_id}/*.data"))


def corrupt_throughout(data: Path, every: int = 256) -> int:
    """Flip a byte every ``every`` bytes of a data file (so every segment
    of its map outputs, each some KB, gets flipped bytes); how many."""
    flipped = 0
    with data.open("r+b") as f:
        for offset in range(every // 2, data.stat().st_size, every):
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x5A]))
            flipped += 1
    return flipped


def submit_maps_only(c: Cluster, s: Scenario, seed: int) -> tuple[subprocess.Popen[str], str, list[Path]]:
    """Submit a word count (2 reducers, 32K splits) while a ReduceSlotBlocker
    holds the reduce slots; return once all its maps are done."""
    inputs = s.corpus(seed=seed)
    before = job_ids(c)
    proc = submit_popen(c, WORDCOUNT, inputs, s.output, "--reducers", "2",
                        "--split-size", "32K")
    try:
        job_id = new_job(c, before)
        wait_for(lambda: progress(c, job_id, "maps")["percent"] == 100, 30,
                 "the maps to finish", 0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, job_id, inputs


def submit_held_maps(c: Cluster, s: Scenario, seed: int) -> tuple[subprocess.Popen[str], str, list[Path]]:
    """Submit a word count (2 reducers, 32K splits) whose maps wait on the
    scenario's barrier; return once four of them run (both workers busy)."""
    inputs = s.corpus(seed=seed)
    before = job_ids(c)
    proc = submit_popen(c, s.job(BARRIER_MAP), inputs, s.output, "--reducers", "2",
                        "--split-size", "32K")
    try:
        job_id = new_job(c, before)
        wait_for(lambda: len(started(s.marks)) == 4, 20, "maps running on both workers")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, job_id, inputs


def two_workers(make_cluster: Callable[[], Cluster], *jt_options: str) -> tuple[Cluster, Daemon, Daemon]:
    c = make_cluster()
    c.start_jobtracker(*jt_options)
    keep, victim = c.start_tasktrackers(2, 2, *HEARTBEAT)
    return c, keep, victim


def lost_after(cluster: Cluster, wid: str, since: float) -> float:
    """Seconds from ``since`` until the jobtracker lists ``wid`` as lost."""
    wait_for(lambda: not worker(cluster, wid)["alive"], 30, f"{wid} to be declared lost", 0.02)
    return time.monotonic() - since


def shuffle_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` after the greeting; everything the server sends
    until it closes (fails if it keeps the connection open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return data
            except TimeoutError:
                pytest.fail(f"the shuffle server kept a connection open after {payload[:60]!r}")
            if not chunk:
                return data
            data += chunk


def request(obj: Any) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack(">I", len(payload)) + payload


# --- clusters -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A jobtracker (expiry 3 s, module check 2 s) and two tasktrackers of
    two slots, for the faults that leave the daemons running."""
    c = Cluster(tmp_path_factory.mktemp("shared"))
    try:
        c.start_jobtracker("--expiry", "3", "--check-timeout", "2")
        c.start_tasktrackers(2, 2, *HEARTBEAT)
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One tasktracker whose tasks get 3 s and 256 MiB of address space."""
    c = Cluster(tmp_path_factory.mktemp("limited"))
    try:
        c.start_jobtracker()
        c.start_tasktracker(2, *HEARTBEAT, "--task-timeout", "3", "--task-memory", "256M")
        yield c
    finally:
        c.stop_all()


# --- lost and stopped tasktrackers, lost map outputs ----------------------------------

def test_a_tasktracker_killed_during_a_map(make_cluster: Callable[[], Cluster]) -> None:
    """SIGKILL with maps in progress: the loss is noticed at once (the
    connection drops), the attempts run again elsewhere, its task processes
    die with it."""
    c, _, victim = two_workers(make_cluster)
    s = Scenario(c, "kill-map")
    proc, job_id, inputs = submit_held_maps(c, s, seed=12)
    try:
        doomed = [p.pid for p in descendants(victim)]
        assert pids_of(victim) & started(s.marks)
        t0 = time.monotonic()
        victim.proc.kill()
        detected = lost_after(c, victim.ready["wid"], t0)
        wait_for(lambda: gone(doomed), 10, "the killed worker's processes to die")
        s.open()
        ok(run(proc), c)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert detected < 1.0, detected
    print(f"SIGKILLed tasktracker lost after {detected:.3f}s")
    detail = check_job(c, job_id, s.output, 2, word_counts(inputs))
    assert counters(detail)["killed map attempts"] >= 1
    assert detail["failed_attempts"] == 0
    assert_serves(c, s.name)


def test_a_tasktracker_killed_while_its_reduce_writes_its_output(
        make_cluster: Callable[[], Cluster]) -> None:
    """SIGKILL while a reduce has half written its part file: that attempt's
    file is never committed, the reduce (and the lost maps) run again on
    the other worker, and the output is exact."""
    c, keep, victim = two_workers(make_cluster)
    s = Scenario(c, "kill-reduce")
    inputs = s.corpus(seed=21)
    tail = '''

def reduce(key, values):
    if once("reduce-writing"):
        yield "JUNK", "x" * (4 << 20)  # past the writer's buffer: on disk
        mark(f"writing-{os.getpid()}")
        wait_file("never", limit=50)
    yield key, sum(values)
'''
    before = job_ids(c)
    proc = submit_popen(c, s.job(tail=tail), inputs, s.output, "--reducers", "2",
                        "--split-size", "32K")
    try:
        job_id = new_job(c, before)
        writing = wait_for(lambda: list(s.marks.glob("writing-*")), 30, "a reduce writing")
        pid = int(writing[0].name.split("-")[1])
        doomed = victim if pid in pids_of(victim) else keep
        assert pid in pids_of(doomed)
        doomed.proc.kill()
        wait_for(lambda: gone([pid]), 10, "the writing reduce to die with its worker")
        ok(run(proc), c)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    detail = check_job(c, job_id, s.output, 2, word_counts(inputs))
    assert counters(detail)["killed reduce attempts"] >= 1
    assert "JUNK" not in (s.output / "part-00000").read_text()
    assert "JUNK" not in (s.output / "part-00001").read_text()
    assert_serves(c, s.name)


def test_a_tasktracker_killed_after_the_maps_before_the_shuffle(
        make_cluster: Callable[[], Cluster]) -> None:
    """All maps done, no reducer has fetched yet (a blocker job holds the
    reduce slots): the completed maps of the killed worker run again on the
    other one, and the reducers get everything from there."""
    c, keep, victim = two_workers(make_cluster)
    s = Scenario(c, "kill-shuffle")
    blocker = ReduceSlotBlocker(c, s, reduce_slots=4)
    proc = None
    try:
        proc, job_id, inputs = submit_maps_only(c, s, seed=13)
        assert progress(c, job_id, "reduces")["running"] == 0
        lost = {a["id"] for t in api(c, f"jobs/{job_id}")["tasks"] if t["kind"] == "map"
                for a in t["attempts"]
                if a["id"] == t["committed"] and a["wid"] == victim.ready["wid"]}
        assert lost and map_outputs(victim, job_id), "no map ran on the victim"
        doomed = [p.pid for p in descendants(victim)]
        victim.proc.kill()
        lost_after(c, victim.ready["wid"], time.monotonic())
        wait_for(lambda: gone(doomed), 10, "the killed worker's processes to die")
        blocker.release()
        ok(run(proc), c)
    finally:
        blocker.end()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    detail = check_job(c, job_id, s.output, 2, word_counts(inputs))
    rerun = [t for t in detail["tasks"] if any(a["id"] in lost for a in t["attempts"])]
    assert len(rerun) == len(lost)
    for task in rerun:
        assert task["committed"] not in lost
        assert {a["wid"] for a in task["attempts"] if a["id"] == task["committed"]} == {
            keep.ready["wid"]}
    assert_serves(c, s.name)


def test_a_stopped_tasktracker_expires_and_rejoins_as_a_new_worker(
        make_cluster: Callable[[], Cluster]) -> None:
    """SIGSTOP past the expiry: the worker is declared lost, its work runs
    elsewhere; after SIGCONT its old attempts' results are ignored, it kills
    its orphaned tasks and registers again under a new worker id."""
    c, keep, victim = two_workers(make_cluster, "--expiry", "2")
    s = Scenario(c, "stop")
    proc, job_id, inputs = submit_held_maps(c, s, seed=14)
    try:
        finishing, orphan = sorted(pids_of(victim) & started(s.marks))
        old_wid = victim.ready["wid"]
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGSTOP)
        detected = lost_after(c, old_wid, t0)
        # Its work moves to the other worker, once that one has room.
        for pid in pids_of(keep) & started(s.marks):
            s.open(f"go-{pid}")
        wait_for(lambda: len(started(s.marks)) >= 6, 20, "the lost maps to start again")
        # While it sleeps, one of its maps finishes (its result waits to be
        # reported); the other still runs when it wakes up.
        s.open(f"go-{finishing}")
        wait_for(lambda: gone([finishing]), 10, "the finishing map to end")
        victim.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: victim.log().count("Registered with the jobtracker as") == 2, 20,
                 "the woken worker to register again")
        wait_for(lambda: gone([orphan]), 10, "the woken worker to kill its orphaned task")
        new_wid = re.findall(r"Registered with the jobtracker as (\w+)", victim.log())[-1]
        assert new_wid != old_wid
        assert worker(c, new_wid)["alive"] and not worker(c, old_wid)["alive"]
        s.open()
        ok(run(proc), c)
    finally:
        if victim.proc.poll() is None:
            victim.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Its last heartbeat came up to 0.3 s before the stop; the expiry is
    # checked every 0.5 s.
    assert 2.0 - 0.3 <= detected < 3.5, detected
    print(f"SIGSTOPped tasktracker lost after {detected:.3f}s (expiry 2s)")
    detail = check_job(c, job_id, s.output, 2, word_counts(inputs))
    old = [a for a in attempts(detail) if a["wid"] == old_wid]
    assert old and all(a["state"] == "killed" for a in old), old
    assert all(a["error"]["type"] == "WorkerLost" for a in old if a["kind"] == "map")
    assert_serves(c, s.name)


def test_reducers_fetching_from_a_stopped_tasktracker_turn_to_the_rerun_maps(
        make_cluster: Callable[[], Cluster]) -> None:
    """Reducers stuck on the shuffle port of a SIGSTOPped worker (it
    accepts, never answers) fetch again from where its maps run again once
    it expires, instead of waiting for their fetch timeout."""
    c = make_cluster()
    c.start_jobtracker("--expiry", "3")
    keep = c.start_tasktracker(2, *HEARTBEAT)
    s = Scenario(c, "stop-shuffle")
    # Its map and two of its reduces on the first worker, the other two
    # reduces on the second one once it joins.
    blocker = ReduceSlotBlocker(c, s, reduce_slots=4, wait=False)
    proc = None
    try:
        victim = c.start_tasktracker(2, *HEARTBEAT)
        blocker.wait_holding()
        proc, job_id, inputs = submit_maps_only(c, s, seed=17)
        assert map_outputs(victim, job_id), "no map ran on the victim"
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGSTOP)
        blocker.release()  # the job's reduces start on the first worker, and fetch
        ok(run(proc), c)
        elapsed = time.monotonic() - t0
    finally:
        if victim.proc.poll() is None:
            victim.proc.send_signal(signal.SIGCONT)
        blocker.end()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "was run again" in keep.log(), keep.log()[-3000:]
    assert elapsed < 15, elapsed
    print(f"job done {elapsed:.3f}s after its reducers' source was stopped (expiry 3s)")
    check_job(c, job_id, s.output, 2, word_counts(inputs))
    wait_for(lambda: victim.log().count("Registered with the jobtracker as") == 2, 20,
             "the woken worker to register again")
    assert_serves(c, s.name)


def test_a_map_output_that_cannot_be_fetched_runs_again_elsewhere(
        make_cluster: Callable[[], Cluster]) -> None:
    """A worker whose shuffle server cannot be reached (its advertised
    address refuses connections) while its jobtracker connection is fine:
    reducers report, and its maps run again on the other worker. (The
    jobtracker would refuse such a worker at registration: not checked.)"""
    c = make_cluster()
    c.start_jobtracker("--no-shuffle-check")
    keep = c.start_tasktracker(2, *HEARTBEAT)
    c.start_tasktracker(2, *HEARTBEAT, "--shuffle-interface", "127.0.0.1",
                        "--advertise-host", "127.0.0.2")
    s = Scenario(c, "unreachable")
    inputs = s.corpus(seed=18)
    stdout = ok(c.submit(WORDCOUNT, inputs, s.output, "--reducers", "2", "--split-size", "32K"),
                c)
    detail = check_job(c, job_id_of(stdout), s.output, 2, word_counts(inputs))
    lost = attempts(detail, "failed", "map")
    assert lost and all(a["error"]["type"] == "MapOutputLost" for a in lost), lost
    for task in detail["tasks"]:
        if any(a in lost for a in task["attempts"]):
            committed = next(a for a in task["attempts"] if a["id"] == task["committed"])
            assert committed["wid"] == keep.ready["wid"]
    assert "Cannot fetch map" in keep.log()


def test_corrupt_map_outputs_on_disk_are_detected_and_the_maps_run_again(
        shared: Cluster) -> None:
    """Flipped bytes in stored map outputs fail their frame checksums, read
    by a reducer on the same worker (a local run) or fetched by one on the
    other; the maps run again and the output is exact."""
    s = Scenario(shared, "corrupt")
    blocker = ReduceSlotBlocker(shared, s, reduce_slots=4)
    proc = None
    try:
        proc, job_id, inputs = submit_maps_only(shared, s, seed=5)
        corrupted = {t["committed"] for t in api(shared, f"jobs/{job_id}")["tasks"]
                     if t["kind"] == "map"}
        assert len(corrupted) == progress(shared, job_id, "maps")["total"]
        for tt in shared.tasktrackers:
            for data in map_outputs(tt, job_id):
                assert corrupt_throughout(data) > 0
        t0 = time.monotonic()
        blocker.release()
        ok(run(proc), shared)
        print(f"corrupt outputs re-run, job done {time.monotonic() - t0:.3f}s after the "
              "reduces could start")
    finally:
        blocker.end()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    detail = check_job(shared, job_id, s.output, 2, word_counts(inputs))
    assert attempts(detail, "failed", "reduce") == [], "a corrupt map output fails no reduce"
    for task in detail["tasks"]:
        if task["kind"] == "map":
            assert task["committed"] not in corrupted, task
    assert_serves(shared, s.name)


# --- a lost jobtracker ----------------------------------------------------------------

def test_a_killed_jobtracker_fails_its_submitters_and_gets_its_workers_back(
        make_cluster: Callable[[], Cluster]) -> None:
    """SIGKILL the jobtracker mid-job (one reduce committed, the other one
    running): a submitter that does not wait for it to come back
    (--reconnect-timeout 0) exits 3 within seconds with a clear error; the
    tasktrackers kill their tasks, keep trying, and serve the restarted
    jobtracker (same port) without a restart of their own; the restarted
    one resumes the job with its committed reduce (test_resume.py has the
    rest), and a kill empties its output as any killed job's."""
    c, one, two = two_workers(make_cluster)
    jt = c.jobtracker
    assert jt is not None
    port = jt.ready["port"]
    s = Scenario(c, "kill-jt")
    inputs = s.corpus(seed=15)
    append_line(inputs[0], "TRIGGER")
    tail = '''

def reduce(key, values):
    if key == "TRIGGER":
        mark(f"reducing-{os.getpid()}")
        wait_file("never")
    yield key, sum(values)
'''
    before = job_ids(c)
    # With its progress report on, as a user runs it.
    proc = c.popen_submit(s.job(tail=tail), inputs, s.output, "--reducers", "2",
                          "--split-size", "32K", "--reconnect-timeout", "0")
    try:
        new_job(c, before)
        wait_for(lambda: list(s.output.glob("part-*")) and list(s.marks.glob("reducing-*")),
                 20, "one reduce committed, the other one running")
        doomed = [p.pid for p in descendants(jt)]
        tasks = {int(p.name.split("-")[1]) for p in s.marks.glob("reducing-*")}
        t0 = time.monotonic()
        jt.proc.kill()
        rc, stdout, err = run(proc, timeout=15)
        noticed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 3, (rc, stdout, err)  # not reached: trying again may work
    assert "lost the connection to the jobtracker" in err, err
    assert "Traceback" not in err, err
    assert noticed < 5, noticed
    print(f"submitter exited {noticed:.3f}s after the jobtracker was killed")
    wait_for(lambda: gone(tasks), 10, "the tasktrackers to kill their tasks")
    wait_for(lambda: gone(doomed), 10, "the jobtracker's children to die")
    for tt in (one, two):
        wait_for(lambda tt=tt: "Lost the jobtracker" in tt.log(), 10, "the loss to be logged")
    assert not (s.output / "_SUCCESS").exists()
    c.start_jobtracker("--port", str(port))
    assert c.jobtracker is not None
    (job_id,) = job_ids(c) - before
    assert f"Job {job_id} resumed at step 1 of 1" in c.jobtracker.log()
    assert len(list(s.output.glob("part-*"))) == 1  # committed: it stays
    rc, _, err = c.cli("kill", job_id)
    assert rc == 0, err
    assert [p.name for p in s.output.iterdir()] == ["_PYTXMR_OUTPUT"]
    t0 = time.monotonic()
    for tt in (one, two):
        wait_for(lambda tt=tt: tt.log().count("Registered with the jobtracker as") == 2, 20,
                 "the tasktrackers to register again")
    print(f"tasktrackers back {time.monotonic() - t0:.3f}s after the jobtracker restarted")
    assert_no_task_processes(c)
    out = s.dir / "out-after"
    stdout = ok(c.submit(WORDCOUNT, inputs, out, "--reducers", "2", "--split-size", "32K"), c)
    detail = check_job(c, job_id_of(stdout), out, 2, word_counts(inputs))
    assert {a["wid"] for a in attempts(detail, "succeeded", "map")} == {"w1", "w2"}


# --- failing user code ----------------------------------------------------------------

def test_a_map_that_raises_once_is_retried_and_its_counters_count_once(
        shared: Cluster) -> None:
    """A transient failure costs one attempt, not the job; the failed
    attempt's counters (it had counted most of its split) are dropped."""
    s = Scenario(shared, "raise-once")
    inputs = s.corpus()
    append_line(inputs[0], "TRIGGER at the end of a split")
    job = s.job('pytxmr.counter("user", "lines")\n'
                'if "TRIGGER" in value and once("raised"):\n'
                '    raise ValueError("injected failure")')
    stdout = ok(shared.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "16K"),
                shared)
    assert "failed map attempts" in stdout
    detail = check_job(shared, job_id_of(stdout), s.output, 2, word_counts(inputs))
    assert counters(detail)["failed map attempts"] == 1
    assert counters(detail, "user") == {"lines": line_count(inputs)}
    [failed] = attempts(detail, "failed")
    assert failed["error"]["message"] == "ValueError: injected failure"
    assert f'File "{job}", line {line_of(job, "injected failure")}, in map' in \
        failed["error"]["traceback"]
    assert_serves(shared, s.name)


def test_a_map_that_always_raises_fails_its_job_and_spares_a_concurrent_one(
        shared: Cluster) -> None:
    """After --max-attempts the job fails with the user's traceback; a job
    running beside it on the same workers finishes exactly."""
    s = Scenario(shared, "raise-always")
    other_in = s.dir / "other.txt"
    other_in.write_text("beside the failing job\nthe job beside\n")
    other_out = s.dir / "other-out"
    before = job_ids(shared)
    other = submit_popen(shared, s.job(BARRIER_MAP, name="other"), [other_in], other_out,
                         "--reducers", "2")
    try:
        new_job(shared, before, "the other job")
        wait_for(lambda: started(s.marks), 20, "the other job's map to start")
        inputs = s.corpus()
        append_line(inputs[1], "TRIGGER again")
        bad = s.job('if "TRIGGER" in value:\n'
                    '    raise KeyError("always " + value.split()[0])', name="bad")
        rc, stdout, err = shared.submit(bad, inputs, s.output, "--max-attempts", "3",
                                        "--split-size", "16K", "--reducers", "2")
        assert rc == 1, (stdout, err)
        assert "failed: KeyError: 'always TRIGGER'" in err, err
        assert f'File "{bad}", line {line_of(bad, "KeyError(")}, in map' in err, err
        assert [p.name for p in s.output.iterdir()] == ["_PYTXMR_OUTPUT"], "a failed job leaves an empty output directory"
        failed_job = next(j for j in api(shared, "jobs") if j["output"] == str(s.output))
        assert failed_job["state"] == "failed"
        assert failed_job["counters"]["pytxmr"]["failed map attempts"] == 3
        assert (other.poll() is None and started(s.marks)
                and not (other_out / "_SUCCESS").exists()), "the other job still runs"
        s.open()
        stdout = ok(run(other), shared)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert read_output(other_out) == word_counts([other_in])
    assert sorted(p.name for p in other_out.iterdir()) == [
        "_PYTXMR_OUTPUT", "_SUCCESS", "part-00000", "part-00001"]
    assert_no_task_processes(shared)
    assert_serves(shared, s.name)


@pytest.mark.parametrize("fault, message", [
    ("sys.exit(3)", "SystemExit: 3"),
    ("os._exit(1)", "the task process exited with code 1 before reporting a result"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "the task process was killed by signal SIGKILL"),
], ids=["sys.exit", "os._exit", "SIGKILL"])
def test_a_map_that_exits_or_kills_itself_once_is_retried(
        shared: Cluster, fault: str, message: str) -> None:
    """However a task process ends without a result, only that attempt
    fails, with a message saying how it ended."""
    s = Scenario(shared, "exit-" + re.sub(r"\W+", "-", fault))
    inputs = s.corpus(seed=2)
    append_line(inputs[2], "TRIGGER the exit")
    job = s.job(f'if "TRIGGER" in value and once("exited"):\n    {fault}')
    stdout = ok(shared.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "32K"),
                shared)
    detail = check_job(shared, job_id_of(stdout), s.output, 2, word_counts(inputs))
    [failed] = attempts(detail, "failed")
    assert message in failed["error"]["message"], failed["error"]
    assert counters(detail)["failed map attempts"] == 1
    assert_serves(shared, s.name)


def test_a_hanging_map_is_killed_after_the_task_timeout_and_retried(limited: Cluster) -> None:
    """--task-timeout ends an attempt that makes no progress; the retry
    succeeds and the hung process is gone."""
    s = Scenario(limited, "hang")
    inputs = s.corpus(seed=10)
    append_line(inputs[0], "TRIGGER the hang")
    job = s.job('if "TRIGGER" in value and once("hung"):\n'
                '    mark(f"hung-{os.getpid()}")\n'
                '    wait_file("never", limit=50)')
    start = time.monotonic()
    stdout = ok(limited.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "32K"),
                limited)
    assert time.monotonic() - start < 20
    detail = check_job(limited, job_id_of(stdout), s.output, 2, word_counts(inputs))
    [failed] = attempts(detail, "failed")
    assert failed["error"]["message"] == (
        "the task made no progress (read or wrote nothing) for 3s")
    [hung] = [int(p.name.split("-")[1]) for p in s.marks.glob("hung-*")]
    assert gone([hung])
    assert_serves(limited, s.name)


@pytest.mark.parametrize("hog, where", [
    ("hog = bytearray(1 << 30)", "bytearray("),
    ("hog = []\nfor i in range(10 ** 8):\n    hog.append('x' * 100 + str(i))", "hog.append("),
], ids=["one-block", "many-objects"])
def test_a_map_over_its_memory_cap_fails_alone_and_is_retried(limited: Cluster, hog: str,
                                                              where: str) -> None:
    """--task-memory: the greedy attempt gets a MemoryError, its
    tasktracker is untouched, and the retry succeeds. Memory filled by many
    small objects too: the error's report then found no memory left for
    itself ("exited with code 1 before reporting a result")."""
    s = Scenario(limited, "memory-block" if "bytearray" in hog else "memory-objects")
    inputs = s.corpus(seed=11)
    append_line(inputs[1], "TRIGGER the hog")
    job = s.job('if "TRIGGER" in value and once("hog"):\n'
                + "\n".join(f"    {line}" for line in hog.splitlines()))
    stdout = ok(limited.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "32K"),
                limited)
    detail = check_job(limited, job_id_of(stdout), s.output, 2, word_counts(inputs))
    [failed] = attempts(detail, "failed")
    assert failed["error"]["message"] == "MemoryError: the task exceeded its memory limit"
    assert f'File "{job}", line {line_of(job, where)}, in map' in failed["error"]["traceback"]
    assert limited.tasktrackers[0].proc.poll() is None
    assert_serves(limited, s.name)


def test_a_reduce_failing_while_writing_leaves_no_partial_part_file(shared: Cluster) -> None:
    """A reduce attempt that wrote megabytes and then failed is never
    committed: the retry's part file is the only one, complete."""
    s = Scenario(shared, "reduce-fails")
    inputs = s.corpus(seed=3)
    tail = '''

def reduce(key, values):
    sys._keys = getattr(sys, "_keys", 0) + 1
    if sys._keys == 50 and once("reduce-failed"):
        yield "JUNK", "x" * (4 << 20)  # past the writer's buffer: on disk
        mark("junk-written")
        raise RuntimeError("injected reduce failure")
    yield key, sum(values)
'''
    job = s.job(tail=tail)
    stdout = ok(shared.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "32K"),
                shared)
    assert (s.marks / "junk-written").exists()
    detail = check_job(shared, job_id_of(stdout), s.output, 2, word_counts(inputs))
    assert counters(detail)["failed reduce attempts"] == 1
    [failed] = attempts(detail, "failed")
    assert failed["kind"] == "reduce"
    assert "injected reduce failure" in failed["error"]["message"]
    assert_serves(shared, s.name)


def test_a_failed_job_leaves_no_part_file_that_looks_valid(shared: Cluster) -> None:
    """One reduce commits, the other fails for good: the job fails, and the
    committed part file goes too (its output directory is left empty)."""
    s = Scenario(shared, "failed-reduce")
    inputs = s.corpus(seed=16)
    append_line(inputs[0], "TRIGGER")
    tail = f'''

import glob


def reduce(key, values):
    if key == "TRIGGER":
        wait_for_part = time.monotonic() + 30
        while not glob.glob({str(s.output / "part-*")!r}) and time.monotonic() < wait_for_part:
            time.sleep(0.01)
        raise RuntimeError("this reduce always fails")
    yield key, sum(values)
'''
    rc, stdout, err = shared.submit(s.job(tail=tail), inputs, s.output, "--reducers", "2",
                                    "--max-attempts", "2")
    assert rc == 1, (stdout, err)
    assert "RuntimeError: this reduce always fails" in err
    assert [p.name for p in s.output.iterdir()] == ["_PYTXMR_OUTPUT"]
    assert_no_task_processes(shared)


def test_speculation_backs_up_a_straggler_and_commits_one_attempt(shared: Cluster) -> None:
    """--speculative: a map that hangs on its first attempt gets a backup on
    the other worker; the backup wins, the straggler is killed."""
    s = Scenario(shared, "speculative")
    inputs = s.corpus(seed=4)
    append_line(inputs[1], "STRAGGLER line")
    job = s.job('if "STRAGGLER" in value and once("straggling"):\n'
                '    mark(f"straggler-{os.getpid()}")\n'
                '    wait_file("never", limit=50)')
    stdout = ok(shared.submit(job, inputs, s.output, "--reducers", "2", "--split-size", "32K",
                              "--speculative"), shared)
    detail = check_job(shared, job_id_of(stdout), s.output, 2, word_counts(inputs))
    [straggler_pid] = [int(p.name.split("-")[1]) for p in s.marks.glob("straggler-*")]
    assert gone([straggler_pid])
    # On a loaded machine another map may look slow enough for a backup
    # too: every backed-up task commits one attempt and the others are killed.
    backed_up = [t for t in detail["tasks"] if len(t["attempts"]) > 1]
    for task in backed_up:
        states = sorted(a["state"] for a in task["attempts"])
        assert states == ["killed", "succeeded"], task
        assert task["attempts"][0]["wid"] != task["attempts"][1]["wid"]
    # The straggler lost to its backup.
    assert any(t["attempts"][0]["state"] == "killed" for t in backed_up), backed_up
    assert detail["failed_attempts"] == 0
    assert_serves(shared, s.name)


# --- bad input ------------------------------------------------------------------------

def test_bad_submissions_are_refused_before_anything_runs(shared: Cluster) -> None:
    """A module hanging on import, reducers < 1 (option or module), max
    attempts < 1 and a glob matching nothing: a clear error, no job, no
    output directory, no process left."""
    s = Scenario(shared, "refused")
    data = s.dir / "in.txt"
    data.write_text("a b\n")
    hangs = s.dir / "hangs.py"
    hangs.write_text("import time\n\ntime.sleep(60)\n\ndef map(k, v):\n    yield v, 1\n\n"
                     "def reduce(k, vs):\n    yield k, 1\n")
    zero = s.dir / "zero.py"
    zero.write_text("num_reducers = 0\n\ndef map(k, v):\n    yield v, 1\n\n"
                    "def reduce(k, vs):\n    yield k, 1\n")
    before = job_ids(shared)
    cases = [
        ((hangs, [data]), (), "importing the job module took longer than 2s"),
        ((WORDCOUNT, [data]), ("--reducers", "0"), "--reducers: must be at least 1, not 0"),
        ((WORDCOUNT, [data]), ("--max-attempts", "0"), "--max-attempts: must be at least 1"),
        ((zero, [data]), (), f"{zero}: num_reducers must be a positive int"),
        ((WORDCOUNT, [s.dir / "nothing-*.txt"]), (), f"{s.dir / 'nothing-*.txt'}"),
    ]
    for (job, inputs), options, message in cases:
        start = time.monotonic()
        rc, stdout, err = shared.submit(job, inputs, s.output, *options)
        assert rc != 0 and message in err, (job, options, stdout, err)
        assert "Traceback" not in err, err
        assert not s.output.exists(), "a refused job must not create its output"
        assert time.monotonic() - start < 10
    assert job_ids(shared) == before, "a refused job is not a job"
    assert_no_task_processes(shared)
    assert_serves(shared, s.name)


def test_input_that_is_not_utf8_fails_clearly_unless_the_job_says_replace(
        shared: Cluster) -> None:
    """By default an undecodable line fails the task naming the file and
    byte offset; with encoding_errors = "replace" the job succeeds."""
    s = Scenario(shared, "not-utf8")
    [good] = s.corpus(sizes=[20_000], seed=6)
    raw = s.dir / "raw.txt"
    head = b"fine line here\nanother fine line\n"
    raw.write_bytes(head + b"bad \xff\xfe bytes \xc3 here\n" + b"fine again\n")
    rc, stdout, err = shared.submit(WORDCOUNT, [good, raw], s.output, "--max-attempts", "2")
    assert rc == 1, (stdout, err)
    assert f"{raw}: cannot decode the line at byte offset {len(head)} as utf-8" in err, err
    assert 'encoding_errors = "replace"' in err, err
    assert [p.name for p in s.output.iterdir()] == ["_PYTXMR_OUTPUT"]
    replacing = s.dir / "replacing.py"
    replacing.write_text(WORDCOUNT.read_text() + '\nencoding_errors = "replace"\n')
    out = s.dir / "out-replace"
    stdout = ok(shared.submit(replacing, [good, raw], out, "--reducers", "2"), shared)
    reference = word_counts([good, raw], errors="replace")
    assert "\ufffd\ufffd" in reference
    check_job(shared, job_id_of(stdout), out, 2, reference)


def test_empty_files_and_very_long_lines(shared: Cluster) -> None:
    """An empty input, a line of megabytes, and a line over the documented
    limit (64 MiB, a clear error naming file and offset)."""
    s = Scenario(shared, "odd-lines")
    empty = s.dir / "empty.txt"
    empty.write_bytes(b"")
    stdout = ok(shared.submit(WORDCOUNT, [empty], s.output, "--reducers", "2"), shared)
    check_job(shared, job_id_of(stdout), s.output, 2, {})
    long = s.dir / "long.txt"
    words = [f"w{i % 5000}" for i in range(1_000_000)]
    long.write_text("short line\n" + " ".join(words) + "\nlast\n")
    [small] = s.corpus(sizes=[10_000], seed=7)
    out = s.dir / "out-long"
    stdout = ok(shared.submit(WORDCOUNT, [empty, long, small], out, "--reducers", "2",
                              "--split-size", "1M"), shared)
    check_job(shared, job_id_of(stdout), out, 2, word_counts([long, small]))
    huge = s.dir / "huge.txt"
    with huge.open("wb") as f:
        f.write(b"first\n")
        f.write(b"y" * ((64 << 20) + 1))
        f.write(b"\n")
    out = s.dir / "out-huge"
    rc, stdout, err = shared.submit(WORDCOUNT, [huge], out, "--max-attempts", "1",
                                    "--split-size", "256M")
    huge.unlink()
    assert rc == 1, (stdout, err)
    assert f"{huge}: the line at byte offset 6 is longer than the limit" in err, err
    for tt in shared.tasktrackers:
        assert tt.proc.poll() is None
    assert_serves(shared, s.name)


def test_keys_and_values_of_unsupported_types_fail_the_job_with_a_clear_error(
        shared: Cluster) -> None:
    """A map yielding what pytxmr cannot carry fails with the type named,
    not with an obscure error from deep inside the shuffle."""
    s = Scenario(shared, "bad-type")
    data = s.dir / "in.txt"
    data.write_text("one line\n")
    for what, pair, message in [
            ("key", "object(), 1", "RecordTypeError: map must yield (key, value) pairs"),
            ("value", "v, {1, 2}", "RecordTypeError: unsupported type builtins.set")]:
        job = s.dir / f"bad_{what}.py"
        job.write_text(f"def map(k, v):\n    yield {pair}\n\n"
                       "def reduce(k, vs):\n    yield k, 1\n")
        out = s.dir / f"out-{what}"
        rc, stdout, err = shared.submit(job, [data], out, "--max-attempts", "1")
        assert rc == 1, (stdout, err)
        # Its first line (after the progress a slow machine prints).
        [said] = [line for line in err.splitlines() if " failed: " in line][:1]
        assert message in said, err
        assert [p.name for p in out.iterdir()] == ["_PYTXMR_OUTPUT"]
    assert_no_task_processes(shared)


# --- the shuffle port under abuse -----------------------------------------------------

def test_abuse_of_the_shuffle_port_does_not_disturb_a_running_job(shared: Cluster) -> None:
    """Hundreds of idle connections (more than the server's limit), random
    bytes, HTTP, huge and bogus length fields, path-like and foreign job
    ids: each gets an error or a closed connection, memory stays bounded,
    and the job running meanwhile shuffles and finishes exactly."""
    s = Scenario(shared, "wire")
    inputs = s.corpus(seed=8)
    before = job_ids(shared)
    proc = submit_popen(shared, s.job(BARRIER_MAP), inputs, s.output, "--reducers", "2",
                        "--split-size", "32K")
    idle: list[socket.socket] = []
    try:
        job_id = new_job(shared, before)
        wait_for(lambda: len(started(s.marks)) == 4, 20, "four maps to start")
        ports = [tt.ready["shuffle_port"] for tt in shared.tasktrackers]
        rss = [psutil.Process(tt.pid).memory_info().rss for tt in shared.tasktrackers]
        for port in ports:
            for _ in range(515):  # the server's limit is 512
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                # Read the greeting: connecting faster than the server
                # accepts overflows its listen backlog (1 s SYN retries).
                assert idle[-1].recv(20)
        rng = random.Random(9)
        refusals = {
            bytes(rng.randrange(256) for _ in range(5000)): b"",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n": b"",
            struct.pack(">I", 0xFFFFFFFF) + b"x" * 100: b"request too long",
            request([1, 2, 3]): b"malformed request",
            request({"job": job_id, "map": -1, "partition": 0, "mac": "0"}): b"malformed",
            request({"job": "../" * 8 + "etc", "map": 0, "partition": 0, "mac": "00"}):
                b"not authorized",
            request({"job": job_id, "map": 0, "partition": 0, "mac": "ab" * 32}):
                b"not authorized",
            request({"job": "job_20000101000000_0001", "map": 0, "partition": 0,
                     "mac": "ab" * 32}): b"not authorized",
        }
        for port in ports:
            for payload, expected in refusals.items():
                reply = shuffle_exchange(port, payload)
                assert reply.startswith(b"TXS1"), reply[:40]
                assert expected in reply, (payload[:80], reply)
            # A truncated frame: its length promises more than ever comes.
            with socket.create_connection(("127.0.0.1", port)) as t:
                t.sendall(struct.pack(">I", 4000) + b"{")
                idle.append(t.dup())
        s.open()
        ok(run(proc), shared)
        for tt, before_rss in zip(shared.tasktrackers, rss, strict=True):
            grown = psutil.Process(tt.pid).memory_info().rss - before_rss
            assert grown < 64 << 20, f"{tt.name} grew by {grown >> 20} MiB"
            log = tt.log()
            assert log.count("Refused shuffle request") <= 2 * len(refusals), log[-5000:]
            assert "Traceback" not in log, log[-5000:]
    finally:
        for sock in idle:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_job(shared, job_id, s.output, 2, word_counts(inputs))
    assert_serves(shared, s.name)


#: Run in a subprocess (the test process has no reactor): logins the
#: jobtracker must refuse, one JSON line each.
PB_PROBE = '''
import json, sys
from twisted.cred import credentials
from twisted.internet import defer, task
from twisted.spread import pb
from pytxmr.auth import LoginRefused, login

async def main(reactor):
    port = int(sys.argv[1])
    async def factory():
        f = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, f)
        return f
    f = await factory()
    try:
        await f.login(credentials.Anonymous())
        print(json.dumps(["anonymous", "accepted"]))
    except pb.RemoteError as e:
        print(json.dumps(["anonymous", e.remoteType.decode()]))
    f = await factory()
    root = await f.getRootObject()
    try:
        await root.callRemote("submit", {})
        print(json.dumps(["no login", "accepted"]))
    except pb.RemoteError as e:
        print(json.dumps(["no login", str(e)]))
    f = await factory()
    try:
        await login(f, b"client", b"not the secret")
        print(json.dumps(["wrong secret", "accepted"]))
    except LoginRefused as e:
        print(json.dumps(["wrong secret", str(e)]))

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
'''


def test_logins_without_the_secret_get_one_line_refusals(shared: Cluster) -> None:
    """Anonymous logins, calls before logging in and a wrong secret on the
    PB port: each is refused with an error for the peer and one log line
    for the operator, not a traceback."""
    jt = shared.jobtracker
    assert jt is not None
    before = jt.log()
    probe = subprocess.run([sys.executable, "-c", PB_PROBE, str(jt.ready["port"])],
                           capture_output=True, text=True, timeout=30, env=shared.env)
    assert probe.returncode == 0, probe.stderr
    answers = dict(json.loads(line) for line in probe.stdout.splitlines())
    assert answers == {
        "anonymous": "pytxmr.auth.WrongSecret",
        "no login": "log in first",
        "wrong secret": "the jobtracker refused the login: wrong cluster secret "
                        "(check --secret-file / $PYTXMR_SECRET)",
    }, answers
    wait_for(lambda: "wrong cluster secret" in jt.log()[len(before):], 10, "the refusals logged")
    log = jt.log()[len(before):]
    assert log.count("Refused an anonymous login") == 1, log
    assert log.count("Refused a call of 'submit' before login") == 1, log
    assert log.count("Refused a client login: wrong cluster secret") == 1, log
    assert "Traceback" not in log and "Unhandled" not in log, log
    assert_serves(shared, "pb-refusals")
