"""The daemons' outbound ports: every call the jobtracker makes to a
worker (``IWorker``) and every call a worker makes to the jobtracker
(``IJobTracker``), in the protocol's typed records.

The logic of each daemon talks to its peers only through these; the PB
implementations sit beside each daemon's inbound adapter
(``jobtracker.pbadapter.PBWorker``, ``tasktracker.pbadapter.PBJobTracker``),
and ``pytxmr.testing`` has fakes checked against them by one contract test
(as Buildbot's worker ``Connection`` and its fake are).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import Attribute, Interface

from .wire import AttemptResult, Heartbeat, JobInit, MapLocation, Split, TaskError


class IWorker(Interface):
    """A registered tasktracker as the jobtracker sees it. Calls are fire
    and forget: a worker that cannot be reached is noticed by its lost
    connection or its missed heartbeats, not by a call's outcome."""

    wid = Attribute("the worker id the jobtracker gave at registration")

    def init_job(init: JobInit) -> None:
        """Before the worker's first task of a job: its source and options."""

    def launch_map(job_id: str, attempt_id: str, split: Split) -> None:
        """Run a map attempt on ``split``. Raises if it cannot be sent (the
        jobtracker fails the attempt): the worker counts the launches it
        gets, and says how many in its heartbeats."""

    def launch_reduce(job_id: str, attempt_id: str, partition: int,
                      locations: Sequence[MapLocation]) -> None:
        """Run a reduce attempt; ``locations``: the map outputs known so far.
        Raises if it cannot be sent, as ``launch_map``."""

    def map_outputs(job_id: str, locations: Sequence[MapLocation]) -> None:
        """Map outputs finished (or re-run) since: fetch them."""

    def kill_attempt(job_id: str, attempt_id: str) -> None:
        """End an attempt (lost the race, speculation, a killed job)."""

    def destroy_job(job_id: str) -> None:
        """The job ended: drop its map outputs and files."""

    def stop() -> None:
        """It was drained: nothing runs on it and no job needs its map
        outputs; stop cleanly."""

    def draining() -> None:
        """It is being drained: it asks a jobtracker it registers with
        anew (one restarted forgets it) to drain it again."""

    async def running_log(attempt_id: str) -> str | None:
        """What a running attempt has printed so far (``logs`` of a task
        being debugged; a log comes with the result only); None if the
        worker cannot say (it does not run it, it does not answer)."""

    def disconnect() -> None:
        """Cut the connection at once (a worker declared lost must come
        back as a new incarnation); a stopped peer reads nothing, so this
        must not wait on unsent bytes."""


class IJobTracker(Interface):
    """The jobtracker as a registered tasktracker sees it. A call that
    cannot be made or is refused raises ``wire.Unreachable``."""

    async def heartbeat(beat: Heartbeat) -> float | None:
        """I am alive; refused when the jobtracker no longer knows us. The
        answer: the interval to heartbeat at, at the least (None from a
        jobtracker that says none: ``wire.heartbeat_interval_from_wire``)."""

    async def attempt_done(attempt_id: str, result: AttemptResult) -> None:
        """An attempt succeeded (for a reduce: committed)."""

    async def attempt_failed(attempt_id: str, error: TaskError) -> None:
        """An attempt failed (for a reduce that lost the commit race: COMMIT_DENIED)."""

    async def fetch_failed(attempt_id: str, map_index: int, map_attempt_id: str) -> None:
        """A reduce cannot fetch a map's output after its own retries."""

    async def may_commit(attempt_id: str) -> bool:
        """Whether this attempt is the one whose part file becomes the output."""

    async def killed_log(attempt_id: str, log: str) -> None:
        """The log of an attempt it killed (a result brings the others)."""

    async def commit_ended(attempt_id: str) -> None:
        """An attempt it let commit, killed since, no longer writes its
        job's output (the job's cleaning waits for it)."""

    async def drain() -> None:
        """Drain me (``Scheduler.drain``): I will be told to stop."""

    async def bundle_chunk(sha256: str, offset: int) -> bytes:
        """Up to ``bundle.CHUNK_BYTES`` of a running job's bundle from
        ``offset`` (empty past its end)."""
