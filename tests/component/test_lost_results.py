"""A real jobtracker and tasktracker (the daemons' services, in one process,
over PB on loopback, with real task children): an attempt whose result
never reaches the jobtracker is noticed by the worker's next heartbeats
(its count of launches got, and its live attempts) and runs again. Before,
it stayed "running" for ever, and its job with it. And the output of the
attempts of a killed job, which send no result, is kept."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pytxmr import client, jobtracker, tasktracker
from pytxmr.tasklog import format_logs
from wordcounts import WORDCOUNT, hanging_job, read_wordcount

SECRET = b"lost-results-secret"


class DropsResults:
    """The tasktracker's jobtracker, but the first result of a map and the
    first of a reduce never arrive."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dropped: dict[str, str] = {}  # "m" or "r" -> the attempt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def attempt_done(self, attempt_id: str, result: Any) -> None:
        kind = attempt_id.rsplit("_", 2)[-2][0]  # JOB_m00003_0: "m"
        if kind not in self.dropped:
            self.dropped[kind] = attempt_id
            return
        await self.inner.attempt_done(attempt_id, result)


async def stop_if_running(svc: Any) -> None:
    if svc.running:
        await svc.stopService()


class InProcessCluster(TestCase):
    """A jobtracker and a tasktracker of 2 slots, and three small inputs."""

    timeout = 90

    async def setUp(self) -> None:  # type: ignore[override]
        self.tmp = Path(tempfile.mkdtemp(prefix="pytxmr-lost-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.jts = jobtracker.make_service(jobtracker.Config(
            listen="tcp:0:interface=127.0.0.1", workdir=str(self.tmp / "jt")),
            reactor, secret=SECRET)
        self.addCleanup(stop_if_running, self.jts)
        await self.jts.startService()
        self.tts = tasktracker.make_service(tasktracker.Config(
            jobtracker=f"tcp:host=127.0.0.1:port={self.jts.port}", slots=2,
            shuffle_listen="tcp:0:interface=127.0.0.1", advertise_host="127.0.0.1",
            workdir=str(self.tmp / "tt"), heartbeat=0.2), reactor, secret=SECRET)
        self.addCleanup(stop_if_running, self.tts)
        await self.tts.startService()
        await self.tts.registered()
        self.inputs = []
        for n in range(3):
            path = self.tmp / f"in{n}.txt"
            path.write_text("".join(f"w{i % (7 + n)} x{n}\n" for i in range(200)))
            self.inputs.append(str(path))

    async def run_job(self) -> dict[str, Any]:
        conn = await client.connect(reactor, f"127.0.0.1:{self.jts.port}", SECRET)
        self.addCleanup(conn.close)
        job_id = await conn.call("submit", client.submission(
            str(WORDCOUNT), self.inputs, str(self.tmp / "out"), reducers=2).spec)
        waited = defer.Deferred.fromCoroutine(conn.call("wait", job_id))
        result: dict[str, Any] = await waited.addTimeout(45, reactor)
        return result


class LostResultTests(InProcessCluster):

    async def test_results_that_never_arrive_run_again(self) -> None:
        """A map's and a reduce's: the output is a Counter's of the input."""
        tt = self.tts.tt
        tt.jobtracker = dropping = DropsResults(tt.jobtracker)
        result = await self.run_job()
        self.assertEqual(result["state"], "succeeded", result)
        self.assertEqual(sorted(dropping.dropped), ["m", "r"])
        expected: Counter[str] = Counter()
        for path in self.inputs:
            expected.update(Path(path).read_text().split())
        got: Counter[str] = Counter()
        for part in read_wordcount(self.tmp / "out"):
            got.update(part)
        self.assertEqual(got, expected)
        framework = result["counters"]["pytxmr"]
        self.assertEqual((framework["failed map attempts"],
                          framework["failed reduce attempts"]), (1, 1))
        self.assertFalse(os.path.exists(self.tmp / "out" / "_temporary"))


HUNG = hanging_job("before the hang")


class KilledJobLogTests(InProcessCluster):

    async def test_a_killed_jobs_hung_tasks_keep_what_they_printed(self) -> None:
        """Their output came with a result only; the history then took the
        job's logs before the killed attempts sent theirs."""
        job_path = self.tmp / "hung.py"
        job_path.write_text(HUNG)
        conn = await client.connect(reactor, f"127.0.0.1:{self.jts.port}", SECRET)
        self.addCleanup(conn.close)
        job_id = await conn.call("submit", client.submission(
            str(job_path), self.inputs[:2], str(self.tmp / "out"), reducers=1).spec)
        printed: list[dict[str, Any]] = []
        while sum("before the hang" in (e["log"] or "") for e in printed) < 2:
            printed = await conn.call("logs", job_id)
        await conn.call("kill", job_id)
        result = await defer.Deferred.fromCoroutine(conn.call("wait", job_id)).addTimeout(
            30, reactor)
        self.assertEqual(result["state"], "killed")
        logs = await conn.call("logs", job_id)
        maps = [e for e in logs if e["kind"] == "map"]
        self.assertEqual([e["state"] for e in maps], ["killed", "killed"])
        for e in maps:
            self.assertIn("before the hang w0 x", e["log"])
        self.assertNotIn("[no output]", format_logs(maps))
