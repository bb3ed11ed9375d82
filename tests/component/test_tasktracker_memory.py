"""The tasktracker's shuffle memory, in one process: ``--shuffle-memory``
parsing, the service's tmpfs directory, and the tasktracker's fetch against
a real shuffle server on loopback placing runs in memory up to the budget,
on disk beyond it, nothing left behind. Real daemons running jobs with it
are in tests/integration/test_tasktracker_memory_cluster.py."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from pytxmr import shufflememory, tasktracker
from pytxmr.child import Zygote
from pytxmr.tasktracker.__main__ import parse_args
from pytxmr.tasktracker.fetch import FetchPolicy, State
from pytxmr.testing.fakes import FakeJobTracker
from pytxmr.wire import JobInit, MapLocation
from pytxmr.records import CorruptFrame, SegmentWriter
from pytxmr.shuffle import ShuffleError, ShuffleServerFactory
from pytxmr.shufflememory import ShuffleMemory, free_space

FETCH_RETRIES = FetchPolicy().retries
TOKEN = b"t" * 32
JOB = "job_7"


# --- the option -----------------------------------------------------------------------

def test_the_option_takes_sizes_and_zero() -> None:
    """0 turns the shuffle memory off; sizes are spelled as everywhere else."""
    base = ["--jobtracker", "127.0.0.1:1"]
    assert parse_args(base)[0].shuffle_memory is None
    for zero in ("0", "0M", "00", "0.0G", "0KiB"):
        assert parse_args([*base, "--shuffle-memory", zero])[0].shuffle_memory == 0
    assert parse_args([*base, "--shuffle-memory", "64M"])[0].shuffle_memory == 64 << 20
    with pytest.raises(SystemExit):
        parse_args([*base, "--shuffle-memory", "-1"])


def _service(tmp_path: Path, **config: Any) -> tasktracker.TaskTrackerService:
    return tasktracker.make_service(tasktracker.Config(
        jobtracker="tcp:127.0.0.1:1", slots=1, shuffle_listen="tcp:0",
        advertise_host="127.0.0.1", workdir=str(tmp_path / "work"), **config),
        reactor, secret=b"secret")


def test_without_a_tmpfs_runs_go_to_disk_with_one_log_line(tmp_path: Path) -> None:
    """No /dev/shm (or not writable): the worker still works, as before."""
    svc = _service(tmp_path, shuffle_memory_root=str(tmp_path / "no-shm"))
    with capturedLogs() as events:
        svc.getServiceNamed("store").startService()
    assert not svc.tt.memory.enabled
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1 and "disk only" in warnings[0]["log_format"]
    svc.getServiceNamed("store").stopService()


def test_the_service_claims_sizes_and_removes_its_memory_dir(tmp_path: Path) -> None:
    """The default budget is bounded by the tmpfs's free space; a clean stop
    removes the directory."""
    root = tmp_path / "shm"
    root.mkdir()
    svc = _service(tmp_path, shuffle_memory_root=str(root))
    svc.getServiceNamed("store").startService()
    memory = svc.tt.memory
    assert memory.directory == shufflememory.memory_dir(str(tmp_path / "work"), str(root))
    assert memory.budget == shufflememory.default_budget(shufflememory.free_space(str(root)))
    path = memory.place("a.seg", 1)
    assert path is not None
    Path(path).write_bytes(b"x")
    svc.getServiceNamed("store").stopService()
    assert list(root.iterdir()) == []
    off = _service(tmp_path, shuffle_memory_root=str(root), shuffle_memory=0)
    off.getServiceNamed("store").startService()
    assert not off.tt.memory.enabled and list(root.iterdir()) == []


# --- the tasktracker's fetch, against a real shuffle server ---------------------------

def _segment(n: int) -> bytes:
    buf = io.BytesIO()
    SegmentWriter(buf, frame_records=16).write((f"k{i:05d}", [i]) for i in range(n))
    return buf.getvalue()


class FetchIntoMemoryTests(TestCase):
    """A reduce attempt's ``ReduceFetch.fetch_once`` places each run by its
    length and removes it whatever happens to its fetch or its attempt; the
    worker's fetch retries on its clock (a ``Clock`` here) and reports to the
    jobtracker. The state machine alone is in test_fetch.py."""

    async def setUp(self) -> None:  # type: ignore[override]
        base = tempfile.mkdtemp(prefix="pytxmr-ttmem-")
        self.addCleanup(shutil.rmtree, base, True)
        self.base = base
        # The transfers use the reactor; the fetches' delays, this clock.
        self.clock = Clock()
        self.tt = tasktracker.TaskTracker(reactor, self.clock, os.path.join(base, "work"), 1,
                                          zygote=Zygote(reactor))  # never started: no task runs
        self.jobtracker = FakeJobTracker()
        self.tt.registered("w1", self.jobtracker)
        self.tt.store.startup_cleanup()
        self.mem_dir = os.path.join(base, "shm")
        os.mkdir(self.mem_dir)
        self.tt.memory = ShuffleMemory(self.mem_dir, 1 << 20,
                                       free_space=lambda: free_space(self.mem_dir))
        self.tt.init_job(JobInit(JOB, "", "job.py", TOKEN, "map", "reduce", 2, 1, base))
        self.good, self.bad = _segment(500), bytearray(_segment(500))
        self.bad[len(self.bad) // 2] ^= 0xFF
        self.store_output(0, self.good)
        self.store_output(1, bytes(self.bad))
        factory = ShuffleServerFactory(self.tt.store, reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.disconnect_all)
        self.port = port.getHost().port
        # No map announced yet: the attempt waits, and the tests fetch by hand.
        self.tt.launch_reduce(JOB, f"{JOB}_r00000_0", 0, [])
        self.attempt = self.tt.attempts[f"{JOB}_r00000_0"]
        assert self.attempt.fetch is not None
        self.fetch = self.attempt.fetch
        self.addCleanup(self.tt.destroy_job, JOB)
        self.addCleanup(self.tt.shuffle_pool.close)

    def store_output(self, map_id: int, seg: bytes) -> None:
        """Map ``map_id``'s output, as this worker's store keeps it (replacing
        an earlier one, as a re-run map does)."""
        data = os.path.join(self.tt.store.job_dir(JOB), f"m{map_id}.data")
        Path(data).write_bytes(seg)
        self.tt.store.add_map_output(JOB, map_id, data, [[0, len(seg), 500]])

    def loc(self, map_id: int, wid: str = "w9") -> MapLocation:
        return MapLocation(map_id, wid, "127.0.0.1", self.port, ("str",), f"m{map_id}")

    async def until(self, state: State, map_id: int) -> None:
        """Wait for the real transfers (sockets, threads) to bring map
        ``map_id``'s fetch to ``state``."""
        deadline = reactor.seconds() + 30
        while self.fetch.state(map_id) is not state:
            self.assertLess(reactor.seconds(), deadline,
                            f"map {map_id} is {self.fetch.state(map_id)}, not {state}")
            await task.deferLater(reactor, 0.01)

    async def test_a_run_that_fits_is_fetched_into_memory(self) -> None:
        """Its file is in the tmpfs directory, its length reserved until released."""
        path, offset, length = await self.fetch.fetch_once(self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.mem_dir)
        self.assertEqual((offset, length), (0, len(self.good)))
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual(self.tt.memory.used, len(self.good))
        self.assertTrue(self.fetch.placement.in_memory(path))
        self.tt.kill_attempt(JOB, self.attempt.id)
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))

    async def test_a_run_beyond_the_budget_goes_to_the_attempts_dir(self) -> None:
        """What does not fit in memory goes to disk, as before."""
        self.tt.memory = ShuffleMemory(self.mem_dir, len(self.good) - 1)
        path, _, _ = await self.fetch.fetch_once(self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.fetch.placement.memory_paths), (0, set()))

    async def test_a_corrupt_run_leaves_neither_file_nor_reservation(self) -> None:
        """A failed try gives its budget back at once (the retry places it again)."""
        with self.assertRaises(CorruptFrame):
            await self.fetch.fetch_once(self.loc(1), "r1.seg")
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))
        self.assertEqual(self.fetch.placement.memory_paths, set())

    async def test_a_refused_fetch_leaves_nothing(self) -> None:
        """An error reply (here: a map this server never ran) creates no run."""
        with self.assertRaises(ShuffleError):
            await self.fetch.fetch_once(self.loc(5), "r5.seg")
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))

    async def test_a_removed_memory_directory_sends_runs_to_disk(self) -> None:
        """The directory removed under us (systemd-logind's RemoveIPC does
        that at logout): the free-space probe fails, and runs go to disk
        rather than failing every reduce of the worker."""
        shutil.rmtree(self.mem_dir)
        for map_id in (0, 0):
            path, _, _ = await self.fetch.fetch_once(self.loc(map_id), "r0.seg")
            self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
            self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.fetch.placement.memory_paths), (0, set()))

    async def test_a_run_that_cannot_be_written_in_memory_goes_to_disk(self) -> None:
        """A tmpfs filled by others between the check of its free space and
        the write: the run is fetched again to disk rather than failing the
        reduce."""
        self.tt.memory = ShuffleMemory(self.mem_dir, 1 << 20, free_space=lambda: 1 << 30)
        shutil.rmtree(self.mem_dir)  # any write there fails now
        with capturedLogs() as events:
            path, _, _ = await self.fetch.fetch_once(self.loc(0), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
        self.assertEqual(Path(path).read_bytes(), self.good)
        self.assertEqual((self.tt.memory.used, self.fetch.placement.memory_paths), (0, set()))
        self.assertEqual(len([e for e in events if "to disk" in e.get("log_format", "")]), 1)

    async def test_a_killed_reduce_attempt_s_runs_on_disk_go_with_it(self) -> None:
        """They stayed until the job's end: a backup that lost, or a reduce
        killed with its fetches, kept a copy of its partition on disk."""
        self.tt.memory = ShuffleMemory(self.mem_dir, 0)  # every run to disk
        self.tt.map_outputs(JOB, [self.loc(0)])
        await self.until(State.DONE, 0)
        self.assertEqual(len(os.listdir(self.attempt.work_dir)), 1)
        self.tt.kill_attempt(JOB, self.attempt.id)
        deadline = reactor.seconds() + 30
        while os.path.exists(self.attempt.work_dir):
            if reactor.seconds() > deadline:  # its listing only then: it may go meanwhile
                self.fail(f"still there: {os.listdir(self.attempt.work_dir)}")
            await task.deferLater(reactor, 0.01)
        self.assertIn(JOB, self.tt.jobs)  # the job goes on

    async def test_destroying_the_job_releases_its_runs(self) -> None:
        """The jobtracker's destroy_job (and a lost jobtracker) end every attempt."""
        await self.fetch.fetch_once(self.loc(0), "r0.seg")
        self.tt.destroy_job(JOB)
        self.assertEqual((self.tt.memory.used, os.listdir(self.mem_dir)), (0, []))

    async def test_a_local_map_output_is_linked_and_checked(self) -> None:
        """A map of this worker is read from its store through a hard link
        in the attempt's dir: no copy, and a re-run map cannot pull it away."""
        path, offset, length = await self.fetch.fetch_once(self.loc(0, wid="w1"), "r0.seg")
        self.assertEqual(os.path.dirname(path), self.attempt.work_dir)
        self.assertTrue(os.path.samefile(path, self.tt.store.lookup(JOB, 0, 0)[0]))
        self.assertEqual((offset, length), (0, len(self.good)))
        self.assertEqual(self.tt.memory.used, 0)

    async def test_a_corrupt_local_map_output_is_a_failed_fetch(self) -> None:
        """Checked like a fetched run; its link is removed."""
        with self.assertRaises(ShuffleError):
            await self.fetch.fetch_once(self.loc(1, wid="w1"), "r1.seg")
        self.assertEqual(os.listdir(self.attempt.work_dir), [])

    async def test_the_worker_retries_on_its_clock_reports_and_takes_the_new_location(
            self) -> None:
        """The whole walk on this worker: a corrupt run is tried FETCH_RETRIES
        times on the worker's clock, reported once to the jobtracker, and the
        map's re-run (here, on this worker) is fetched at once."""
        self.tt.map_outputs(JOB, [self.loc(1)])
        for n in range(FETCH_RETRIES - 1):
            await self.until(State.BACKING_OFF, 1)
            self.assertEqual(self.tt.memory.used, 0)
            self.clock.advance(0.2 * 2 ** n)
        await self.until(State.PAUSED, 1)
        self.assertEqual(self.jobtracker.named("fetch_failed"),
                         [(self.attempt.id, 1, "m1")])
        self.store_output(1, self.good)
        self.tt.map_outputs(JOB, [self.loc(1, wid="w1")])
        await self.until(State.DONE, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.jobtracker.named("fetch_failed")), 1)
        self.assertEqual(os.listdir(self.attempt.work_dir), ["run-00001-2.seg"])
        self.assertEqual(self.fetch.state(0), State.WAITING)  # so the reduce does not start


def test_a_heartbeat_must_be_a_positive_interval() -> None:
    """-1 came out of the reactor's timer as "interval must be >= 0"."""
    base = ["--jobtracker", "127.0.0.1:1"]
    assert parse_args([*base, "--heartbeat", "0.2"])[0].heartbeat == 0.2
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SystemExit):
            parse_args([*base, "--heartbeat", bad])
