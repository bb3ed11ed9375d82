"""Fakes of the daemons' outbound ports, for component tests that drive
one daemon's logic on a ``Clock`` without processes or sockets: a
``FakeWorker`` (``ports.IWorker``, what the jobtracker calls) and a
``FakeJobTracker`` (``ports.IJobTracker``, what a tasktracker calls).

Each records the calls made to it as ``(method, args)`` tuples of typed
records, in order. ``tests/unit/test_ports_contract.py`` checks that each
fake has exactly the methods and signatures of the real PB implementation.
"""

from __future__ import annotations

from typing import Any, Sequence

from zope.interface import implementer

from ..bundle import CHUNK_BYTES
from ..ports import IJobTracker, IWorker
from ..wire import (
    AttemptResult,
    CallRefused,
    Heartbeat,
    JobInit,
    MapLocation,
    Split,
    TaskError,
    Unreachable,
)


@implementer(IWorker)
class FakeWorker:
    """A registered tasktracker that only listens. ``connected`` turns
    False when the jobtracker disconnects it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.connected = True
        #: What ``running_log`` answers, per attempt id ("" if absent: no
        #: output yet; None: cannot say).
        self.running_logs: dict[str, str | None] = {}

    def named(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of ``method``, in order."""
        return [args for name, args in self.calls if name == method]

    def init_job(self, init: JobInit) -> None:
        self.calls.append(("init_job", (init,)))

    def launch_map(self, job_id: str, attempt_id: str, split: Split) -> None:
        self.calls.append(("launch_map", (job_id, attempt_id, split)))

    def launch_reduce(self, job_id: str, attempt_id: str, partition: int,
                      locations: Sequence[MapLocation]) -> None:
        self.calls.append(("launch_reduce", (job_id, attempt_id, partition, tuple(locations))))

    def map_outputs(self, job_id: str, locations: Sequence[MapLocation]) -> None:
        self.calls.append(("map_outputs", (job_id, tuple(locations))))

    def kill_attempt(self, job_id: str, attempt_id: str) -> None:
        self.calls.append(("kill_attempt", (job_id, attempt_id)))

    def destroy_job(self, job_id: str) -> None:
        self.calls.append(("destroy_job", (job_id,)))

    def stop(self) -> None:
        self.calls.append(("stop", ()))

    def draining(self) -> None:
        self.calls.append(("draining", ()))

    async def running_log(self, attempt_id: str) -> str | None:
        return self.running_logs.get(attempt_id, "")

    def disconnect(self) -> None:
        self.calls.append(("disconnect", ()))
        self.connected = False


@implementer(IJobTracker)
class FakeJobTracker:
    """A jobtracker that records reports and grants commits as told:
    ``commits`` answers ``may_commit`` per attempt id (default: yes);
    ``refuse`` makes every call raise ``CallRefused`` (as for a worker
    declared lost), ``unreachable`` every call raise ``Unreachable``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.commits: dict[str, bool] = {}
        self.refuse = False
        self.unreachable = False
        self.bundles: dict[str, bytes] = {}

    def named(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]

    def _record(self, method: str, *args: Any) -> None:
        if self.unreachable:
            raise Unreachable("the fake jobtracker is unreachable")
        if self.refuse:
            raise CallRefused("unknown worker: register again")
        self.calls.append((method, args))

    async def heartbeat(self, beat: Heartbeat) -> float | None:
        self._record("heartbeat", beat)
        return None  # as a jobtracker that asks for no interval: the worker keeps its own

    async def attempt_done(self, attempt_id: str, result: AttemptResult) -> None:
        self._record("attempt_done", attempt_id, result)

    async def attempt_failed(self, attempt_id: str, error: TaskError) -> None:
        self._record("attempt_failed", attempt_id, error)

    async def fetch_failed(self, attempt_id: str, map_index: int, map_attempt_id: str) -> None:
        self._record("fetch_failed", attempt_id, map_index, map_attempt_id)

    async def may_commit(self, attempt_id: str) -> bool:
        self._record("may_commit", attempt_id)
        return self.commits.get(attempt_id, True)

    async def killed_log(self, attempt_id: str, log: str) -> None:
        self._record("killed_log", attempt_id, log)

    async def commit_ended(self, attempt_id: str) -> None:
        self._record("commit_ended", attempt_id)

    async def drain(self) -> None:
        self._record("drain")

    async def bundle_chunk(self, sha256: str, offset: int) -> bytes:
        """From ``bundles`` (SHA-256 -> bytes), as the jobtracker serves them."""
        self._record("bundle_chunk", sha256, offset)
        return self.bundles[sha256][offset:offset + CHUNK_BYTES]
