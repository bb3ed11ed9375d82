"""The tasktracker's shuffle memory: fetched runs in a tmpfs directory up to
``--shuffle-memory``, on disk beyond it; nothing left behind.

A component test drives the tasktracker's fetch against a real shuffle
server on loopback; integration tests run real daemons (tests/procs.py)
and compare the output with a ``collections.Counter`` reference.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Cluster, Daemon, wait_for
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from pytxmr import shufflememory, tasktracker
from pytxmr.records import CorruptFrame, SegmentWriter
from pytxmr.shuffle import ShuffleServerFactory
from pytxmr.shufflememory import ShuffleMemory, free_space

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TOKEN = b"t" * 32
JOB = "job_7"

needs_shm = pytest.mark.skipif(not os.access(shufflememory.SHM_ROOT, os.W_OK),
                               reason="no writable /dev/shm")


# --- the option -----------------------------------------------------------------------

def test_the_option_takes_sizes_and_zero() -> None:
    """0 turns the shuffle memory off; sizes are spelled as everywhere else."""
    base = ["--jobtracker", "127.0.0.1:1"]
    assert tasktracker.parse_args(base)[0].shuffle_memory is None
    for zero in ("0", "0M", "00", "0.0G", "0KiB"):
        assert tasktracker.parse_args([*base, "--shuffle-memory", zero])[0].shuffle_memory == 0
    assert tasktracker.parse_args([*base, "--shuffle-memory", "64M"])[0].shuffle_memory == 64 << 20
    with pytest.raises(SystemExit):
        tasktracker.parse_args([*base, "--shuffle-memory", "-1"])


def _service(tmp_path: Path, **config: Any) -> tasktracker.TaskTrackerService:
    return tasktracker.TaskTrackerService(reactor, tasktracker.Config(
        jobtracker="tcp:127.0.0.1:1", slots=1, shuffle_listen="tcp:0",
        advertise_host="127.0.0.1", workdir=str(tmp_path / "work"), secret_file=None,
        ready_file=None, **config), b"secret")


def test_without_a_tmpfs_runs_go_to_disk_with_one_log_line(tmp_path: Path) -> None:
    """No /dev/shm (or not writable): the worker still works, as before."""
    svc = _service(tmp_path, shuffle_memory_root=str(tmp_path / "no-shm"))
    with capturedLogs() as events:
        svc._start_memory()
    assert not svc.tt.memory.enabled
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1 and "disk only" in warnings[0]["log_format"]
    svc._stop_memory()


def test_the_service_claims_sizes_and_removes_its_memory_dir(tmp_path: Path) -> None:
    """The default budget is bounded by the tmpfs's free space; a clean stop
    removes the directory."""
    root = tmp_path / "shm"
    root.mkdir()
    svc = _service(tmp_path, shuffle_memory_root=str(root))
    svc._start_memory()
    memory = svc.tt.memory
    assert memory.directory == shufflememory.memory_dir(str(tmp_path / "work"), str(root))
    assert memory.budget == shufflememory.default_budget(shufflememory.free_space(str(root)))
    path = memory.place("a.seg", 1)
    assert path is not None
    Path(path).write_bytes(b"x")
    svc._stop_memory()
    assert list(root.iterdir()) == []
    off = _service(tmp_path, shuffle_memory_root=str(root), shuffle_memory=0)
    off._start_memory()
    assert not off.tt.memory.enabled and list(root.iterdir()) == []


# --- the tasktracker's fetch, against a real shuffle server ---------------------------

def _segment(n: int) -> bytes:
    buf = io.BytesIO()
    SegmentWriter(buf, frame_records=16).write((f"k{i:05d}", [i]) for i in range(n))
    return buf.getvalue()


class FetchIntoMemoryTests(TestCase):
    """TaskTracker._fetch_once places each run by its length and removes it
    whatever happens to its fetch or its attempt."""

    async def setUp(self) -> None:  # type: ignore[override]
        base = tempfile.mkdtemp(prefix="pytxmr-ttmem-")
        self.addCleanup(shutil.rmtree, base, True)
        self.tt = tasktracker.TaskTracker(reactor, os.path.join(base, "work"), 1, "127.0.0.1")
        self.tt.store.startup_cleanup()
        self.mem_dir = os.path.join(base, "shm")
        os.mkdir(self.mem_dir)
        self.tt.memory = ShuffleMemory(self.mem_dir, 1 << 20,
                                       free_space=lambda: free_space(self.mem_dir))
        self.tt.init_job(JOB, {"token": TOKEN, "source": "", "filename": "job.py",
                               "map_name": "map", "reduce_name": "reduce", "num_maps": 2,
                               "num_reducers": 1, "output": base})
        self.good, self.bad = _segment(500), bytearray(_segment(500))
        self.bad[len(self.bad) // 2] ^= 0xFF
        for map_id, seg in ((0, self.good), (1, bytes(self.bad))):
            data = os.path.join(base, f"m{map_id}.data")
            index = os.path.join(base, f"m{map_id}.index")
            Path(data).write_bytes(seg)
            Path(index).write_text(json.dumps({"format": 1, "partitions": [
                {"offset": 0, "length": len(seg), "records": 500}]}))
            self.tt.store.add_map_output(JOB, map_id, data, index)
        factory = ShuffleServerFactory(self.tt.store, reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.disconnect_all)
        self.port = port.getHost().port
        self.attempt = self.tt._new_attempt(JOB, f"{JOB}_r00000_0", "reduce", 0)

    def loc(self, map_id: int) -> dict[str, Any]:
        return {"map": map_id, "host": "127.0.0.1", "port": self.port, "wid": "w9",
                "kinds": ["str"]}

    async def test_a_run_that_fits_is_fetched_into_memory(self) -> None:
        """Its file is in the tmpfs directory, its length reserved until released."""
        path, offset, length = await self.tt._fetch_once(self.attempt, self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.mem_dir)
        self.assertEqual((offset, length), (0, len(self.good)))
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual(self.tt.memory.used, len(self.good))
        self.assertIn(path, self.attempt.in_memory)
        self.tt._kill(self.attempt, "test")
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))

    async def test_a_run_beyond_the_budget_goes_to_the_attempts_dir(self) -> None:
        """What does not fit in memory goes to disk, as before."""
        self.tt.memory = ShuffleMemory(self.mem_dir, len(self.good) - 1)
        path, _, _ = await self.tt._fetch_once(self.attempt, self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.attempt.in_memory), (0, set()))

    async def test_a_corrupt_run_leaves_neither_file_nor_reservation(self) -> None:
        """A failed try gives its budget back at once (the retry places it again)."""
        with self.assertRaises(CorruptFrame):
            await self.tt._fetch_once(self.attempt, self.loc(1), "r1.seg")
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))
        self.assertEqual(self.attempt.in_memory, set())

    async def test_a_refused_fetch_leaves_nothing(self) -> None:
        """An error reply (here: a map this server never ran) creates no run."""
        from pytxmr.shuffle import ShuffleError

        with self.assertRaises(ShuffleError):
            await self.tt._fetch_once(self.attempt, self.loc(5), "r5.seg")
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))

    async def test_a_removed_memory_directory_sends_runs_to_disk(self) -> None:
        """The directory removed under us (systemd-logind's RemoveIPC does
        that at logout): the free-space probe fails, and runs go to disk
        rather than failing every reduce of the worker."""
        shutil.rmtree(self.mem_dir)
        for map_id in (0, 0):
            path, _, _ = await self.tt._fetch_once(self.attempt, self.loc(map_id), "r0.seg")
            self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
            self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.attempt.in_memory), (0, set()))

    async def test_a_run_that_cannot_be_written_in_memory_goes_to_disk(self) -> None:
        """A tmpfs filled by others between the check of its free space and
        the write: the run is fetched again to disk rather than failing the
        reduce."""
        self.tt.memory = ShuffleMemory(self.mem_dir, 1 << 20, free_space=lambda: 1 << 30)
        shutil.rmtree(self.mem_dir)  # any write there fails now
        with capturedLogs() as events:
            path, _, _ = await self.tt._fetch_once(self.attempt, self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.attempt.in_memory), (0, set()))
        self.assertEqual(len([e for e in events if "to disk" in e.get("log_format", "")]), 1)

    async def test_destroying_the_job_releases_its_runs(self) -> None:
        """The jobtracker's destroy_job (and a lost jobtracker) end every attempt."""
        await self.tt._fetch_once(self.attempt, self.loc(0), "r0.seg")
        self.tt.destroy_job(JOB)
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))


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
