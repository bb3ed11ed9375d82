"""The PB adapters of both daemons, over a real PB connection in memory
(``twisted.test.iosim``): a tasktracker logs in and registers, the
jobtracker's ``PBWorker`` calls reach the tasktracker's logic as the same
typed records the ``FakeWorker`` records, the tasktracker's
``PBJobTracker`` calls reach the jobtracker's logic as the ``FakeJobTracker``
records them, and refusals come back as ``wire`` errors."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim

from pytxmr import wire
from pytxmr.auth import login
from pytxmr.jobtracker.pbadapter import pb_factory
from pytxmr.pbwire import client_factory, pack
from pytxmr.tasktracker.pbadapter import PBJobTracker, TaskTrackerMind
from pytxmr.testing.fakes import FakeJobTracker, FakeWorker
from pytxmr.wire import (
    AttemptResult,
    Heartbeat,
    JobInit,
    MapLocation,
    Registration,
    Split,
    TaskError,
)

SECRET = b"s3cret"
INIT = JobInit("job_1", "def map(k, v): ...", "/jobs/wc.py", b"\x00token", "map", "reduce",
               3, 2, "/out", 1000, "lz4")
SPLIT = Split(1, "/data/a.txt", 100, 200, False, ("h1",))
LOCS = (MapLocation(0, "w1", "10.0.0.1", 7000, ("str", "int"), "job_1_m00000_0"),
        MapLocation(2, "w2", "10.0.0.2", 7001, (), "job_1_m00002_1"))


class RecordingTracker:
    """The jobtracker's logic as the avatar calls it: records typed calls
    as the FakeJobTracker does, and keeps the worker it registered."""

    def __init__(self) -> None:
        self.fake = FakeJobTracker()
        self.worker: Any = None
        self.registration: Registration | None = None
        self.refuse_heartbeats = False
        #: What a heartbeat is answered with: None as a jobtracker before
        #: the pacing (and the FakeJobTracker) answers.
        self.interval: float | None = None
        #: The live worker that advertises some address already, if any.
        self.holder: Any = None
        self.disconnected: list[str] = []

    def worker_at(self, host: str, port: int) -> Any:
        return self.holder if self.holder is not None and (host, port) == (
            self.holder.host, self.holder.port) else None

    def worker_disconnected(self, wid: str) -> None:
        self.disconnected.append(wid)

    def register(self, worker: Any, reg: Registration) -> str:
        self.worker, self.registration = worker, reg
        return "w7"

    def heartbeat(self, wid: str, beat: Heartbeat) -> float | None:
        if self.refuse_heartbeats:
            raise wire.UnknownWorker(f"unknown worker {wid}: register again")
        self.fake.calls.append(("heartbeat", (beat,)))
        return self.interval

    def attempt_done(self, wid: str, aid: str, result: AttemptResult) -> None:
        self.fake.calls.append(("attempt_done", (aid, result)))

    def attempt_failed(self, wid: str, aid: str, error: TaskError) -> None:
        self.fake.calls.append(("attempt_failed", (aid, error)))

    def killed_log(self, wid: str, aid: str, log: str) -> None:
        self.fake.calls.append(("killed_log", (aid, log)))

    def fetch_failed(self, wid: str, aid: str, index: int, map_aid: str | None) -> None:
        self.fake.calls.append(("fetch_failed", (aid, index, map_aid)))

    def may_commit(self, wid: str, aid: str) -> bool:
        self.fake.calls.append(("may_commit", (aid,)))
        return aid.endswith("_0")

    def commit_ended(self, wid: str, aid: str) -> None:
        self.fake.calls.append(("commit_ended", (aid,)))

    def drain(self, wid: str) -> dict[str, Any]:
        self.fake.calls.append(("drain", ()))
        return {}


class RecordingTaskTracker:
    """The tasktracker's logic as its mind calls it, recording into a FakeWorker."""

    def __init__(self) -> None:
        self.fake = FakeWorker()
        self.launches = 0

    def running_log(self, aid: str) -> str | None:
        return self.fake.running_logs.get(aid)

    def init_job(self, init: JobInit) -> None:
        self.fake.init_job(init)

    def launch_map(self, job_id: str, aid: str, split: Split) -> None:
        self.fake.launch_map(job_id, aid, split)

    def launch_reduce(self, job_id: str, aid: str, partition: int, locs: Any) -> None:
        self.fake.launch_reduce(job_id, aid, partition, locs)

    def map_outputs(self, job_id: str, locs: Any) -> None:
        self.fake.map_outputs(job_id, locs)

    def kill_attempt(self, job_id: str, aid: str) -> None:
        self.fake.kill_attempt(job_id, aid)

    def destroy_job(self, job_id: str) -> None:
        self.fake.destroy_job(job_id)


def result_of(d: defer.Deferred[Any], pump: iosim.IOPump) -> Any:
    pump.flush()
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the call did not complete"
    if isinstance(results[0], Failure):
        value = results[0].value
        # A remote error arrives as a CopiedFailure, whose value is its text.
        raise value if isinstance(value, BaseException) else RuntimeError(value)
    return results[0]


def _logged_in() -> tuple[RecordingTracker, RecordingTaskTracker, Any, iosim.IOPump]:
    """A worker's logic logged in to a jobtracker's, over PB in memory."""
    clock = Clock()
    jt, tt = RecordingTracker(), RecordingTaskTracker()
    server = pb_factory(jt, SECRET, clock)  # type: ignore[arg-type]
    client = client_factory()
    _, _, pump = iosim.connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None), clock=clock)
    mind = TaskTrackerMind(tt, tt.fake.stop, tt.fake.draining)
    perspective = result_of(defer.Deferred.fromCoroutine(
        login(client, wire.ROLE_TASKTRACKER, SECRET, mind)), pump)
    return jt, tt, perspective, pump


@pytest.fixture
def linked() -> tuple[RecordingTracker, RecordingTaskTracker, PBJobTracker, iosim.IOPump]:
    jt, tt, perspective, pump = _logged_in()
    reg = Registration("10.0.0.9", 7123, 4, 99)
    assert result_of(perspective.callRemote("register", reg.to_wire()), pump) == "w7"
    assert jt.registration == reg
    return jt, tt, PBJobTracker(perspective), pump


@pytest.mark.parametrize("pid", [99, 100], ids=["the same process", "another"])
def test_a_live_workers_address_is_refused_unless_its_process_registers_again(
        pid: int) -> None:
    """Two tasktrackers advertising one address were both taken. The same
    process come back on a new connection, while its old one lingers,
    replaces its registration (refused, it would have stopped for good)."""
    from pytxmr.jobtracker.tracker import WorkerConnection

    jt, _, perspective, pump = _logged_in()
    jt.holder = WorkerConnection("w3", FakeWorker(), "10.0.0.9", 7123, 4, pid)
    registered = perspective.callRemote("register",
                                        Registration("10.0.0.9", 7123, 4, 99).to_wire())
    if pid == 99:
        assert result_of(registered, pump) == "w7" and jt.disconnected == ["w3"]
    else:
        with pytest.raises(RuntimeError, match="which the live tasktracker w3 advertises"):
            result_of(registered, pump)
        assert jt.registration is None and jt.disconnected == []


def test_pbworker_calls_arrive_as_the_fake_records_them(linked: Any) -> None:
    """What the jobtracker sends a worker arrives typed and equal, as a FakeWorker has it."""
    jt, tt, _, pump = linked
    expected = FakeWorker()
    for port in (jt.worker, expected):
        port.init_job(INIT)
        port.launch_map("job_1", "job_1_m00001_0", SPLIT)
        port.launch_reduce("job_1", "job_1_r00001_0", 1, LOCS[:1])
        port.map_outputs("job_1", LOCS)
        port.kill_attempt("job_1", "job_1_m00001_0")
        port.destroy_job("job_1")
        port.draining()
        port.stop()
    pump.flush()
    assert tt.fake.calls == expected.calls


def test_the_worker_counts_the_launches_it_gets_refused_ones_too(linked: Any) -> None:
    """Its heartbeats say how many (``Heartbeat.launches``): an attempt it
    got and does not run ended, even one whose launch it refused."""
    jt, tt, _, pump = linked
    jt.worker.launch_map("job_1", "job_1_m00001_0", SPLIT)
    refused = jt.worker._mind.callRemote("launch_reduce", "job_1", "job_1_r00001_0", "one",
                                         pack([]))
    pump.flush()
    with pytest.raises(RuntimeError, match="partition number"):
        result_of(refused, pump)
    assert tt.launches == 2 and len(tt.fake.named("launch_map")) == 1


def test_a_running_attempts_output_so_far_comes_back(linked: Any) -> None:
    """For ``logs`` of a task being debugged: none from a worker that has none."""
    jt, tt, _, pump = linked
    tt.fake.running_logs["job_1_m00001_0"] = "printed\n"
    for aid, text in (("job_1_m00001_0", "printed\n"), ("job_1_m00002_0", None)):
        assert result_of(defer.Deferred.fromCoroutine(jt.worker.running_log(aid)),
                         pump) == text


def test_a_launch_that_cannot_be_sent_raises(linked: Any) -> None:
    """For the jobtracker to fail its attempt, and not count it as sent."""
    jt, tt, _, pump = linked
    with pytest.raises(Exception, match="too long"):
        jt.worker.launch_map("job_1", "a" * 1_000_000, SPLIT)
    pump.flush()
    assert tt.launches == 0


def test_pbjobtracker_calls_arrive_as_the_fake_records_them(linked: Any) -> None:
    """What a worker reports arrives typed and equal; may_commit's answer comes back."""
    jt, _, port, pump = linked
    expected = FakeJobTracker()
    expected.commits["job_1_r00001_1"] = False
    beat = Heartbeat(("job_1_m00001_0",), (10, 100))
    done = AttemptResult({"framework": {"map input records": 5}}, ("str",), "printed\n")
    error = TaskError("ValueError", "bad line", "Traceback...", None)
    answers = []
    for target in (port, expected):
        for call in (target.heartbeat(beat), target.attempt_done("job_1_m00001_0", done),
                     target.attempt_failed("job_1_m00002_0", error),
                     target.fetch_failed("job_1_r00001_0", 2, "job_1_m00002_1"),
                     target.may_commit("job_1_r00001_0"), target.may_commit("job_1_r00001_1"),
                     target.drain(), target.killed_log("job_1_m00003_0", "café\n"),
                     target.commit_ended("job_1_r00001_0")):
            answers.append(result_of(defer.Deferred.fromCoroutine(call), pump))
    assert jt.fake.calls == expected.calls
    assert answers[:9] == answers[9:] == [None, None, None, None, True, False, None, None, None]


def test_the_interval_a_heartbeat_is_answered_with_comes_back(linked: Any) -> None:
    """The jobtracker paces its workers through the heartbeat's answer."""
    jt, _, port, pump = linked
    jt.interval = 10.0
    assert result_of(defer.Deferred.fromCoroutine(port.heartbeat(Heartbeat())), pump) == 10.0
    jt.interval = None
    assert result_of(defer.Deferred.fromCoroutine(port.heartbeat(Heartbeat())), pump) is None


def test_a_refusal_comes_back_as_call_refused(linked: Any) -> None:
    """A worker the jobtracker no longer knows learns it, and registers again."""
    jt, _, port, pump = linked
    jt.refuse_heartbeats = True
    with pytest.raises(wire.CallRefused, match="unknown worker w7"):
        result_of(defer.Deferred.fromCoroutine(port.heartbeat(Heartbeat())), pump)


def test_a_malformed_record_is_refused_by_the_adapter(linked: Any) -> None:
    """Bad fields never reach the logic: the peer is told what is wrong."""
    jt, _, port, pump = linked
    d = port.perspective.callRemote("attempt_done", "a", pack({"counters": {"g": {"n": "x"}}}))
    with pytest.raises(RuntimeError, match="counters must map"):
        result_of(d, pump)
    assert jt.fake.calls == []


def test_a_worker_of_protocol_3_or_4_is_refused_and_records_come_packed() -> None:
    """Workers of 3 and 4 cannot read the map outputs of 5 (record format
    2): refused at register, saying why. Records come packed
    (``pbwire.pack``) from every worker that may register."""
    jt, tt, perspective, pump = _logged_in()
    reg = Registration("10.0.0.9", 7123, 4, 99).to_wire()
    v3 = {k: v for k, v in reg.items() if k not in ("min_protocol", "held")}
    for old in ({**v3, "protocol": 3}, {**reg, "protocol": 4, "min_protocol": 3}):
        with pytest.raises(RuntimeError, match="upgrade the older side"):
            result_of(perspective.callRemote("register", old), pump)
    assert jt.registration is None
    assert result_of(perspective.callRemote("register", reg), pump) == "w7"
    with pytest.raises(RuntimeError, match="must come packed"):
        result_of(perspective.callRemote("attempt_done", "a", {"counters": {}}), pump)  # plain
    assert jt.fake.calls == []
    # A heartbeat still says its worker is alive, whatever else it says.
    beat = Heartbeat(("job_1_m00001_0",), (10, 100))
    result_of(perspective.callRemote("heartbeat", beat.to_wire()), pump)
    assert jt.fake.calls == [("heartbeat", (Heartbeat(),))]


def test_a_reduce_launched_with_thousands_of_map_outputs_gets_them_all(linked: Any) -> None:
    """Launched once the maps were done (a retry, a resumed job), a reduce
    of 7,200 maps or more was sent their locations in one string, over
    Banana's 640 KB: the launch failed, every attempt, and the job with it.
    Over PB for real: each location arrives, in order."""
    jt, tt, _, pump = linked
    many = [MapLocation(i, f"w{i % 50}", f"10.0.{i % 250}.{i % 200}", 40000 + i % 999,
                        ("str", "int"), f"job_1_m{i:05d}_1003") for i in range(12000)]
    jt.worker.launch_reduce("job_1", "job_1_r00000_1000", 0, many)
    jt.worker.map_outputs("job_1", many[:9000])
    pump.flush()
    launched = [args for name, args in tt.fake.calls if name == "launch_reduce"]
    assert len(launched) == 1 and launched[0][:3] == ("job_1", "job_1_r00000_1000", 0)
    told = [loc for name, args in tt.fake.calls if name == "map_outputs" for loc in args[1]]
    assert [*launched[0][3], *told] == many + many[:9000]
