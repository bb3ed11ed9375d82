"""Tests of the status site, the task logs and the job history.

Most tests drive a real ``JobTracker`` (real job module check in its zygote,
real clock) with ``pytxmr.testing.FakeWorker`` tasktrackers, and read its JSON API and pages over
HTTP from ``web_site``; one runs an in-process cluster (real task children)
with a slow job and checks that the site answers quickly while it runs, that
logs arrive and that prints never reach the output. Trial ``TestCase`` with
``async def`` tests (see STYLE.md). The site's pure parts are unit-tested in
tests/unit/test_web_helpers.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from base64 import b64encode
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, process, reactor, utils
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.spread import pb
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from pytxmr import client, jobtracker, tasktracker, views
from pytxmr import history as history_module
from pytxmr.child import Zygote
from pytxmr.jobtracker import JobTracker
from pytxmr.tasklog import format_logs
from pytxmr.testing.fakes import FakeWorker
from pytxmr.web import web_password, web_site
from pytxmr.wire import (COMMIT_DENIED, AttemptResult, Heartbeat, Registration, SubmissionError,
                         TaskError, UnknownJob)
from waiting import wait_for

WORDCOUNT = """\
import pytxmr

def map(offset, line):
    for word in line.split():
        yield word, 1

def reduce(word, counts):
    yield word, sum(counts)
"""

HOSTILE = "<script>alert('x')</script>"


def launched(worker: FakeWorker, method: str) -> list[str]:
    """The attempt ids of the ``launch_map`` or ``launch_reduce`` calls a worker got."""
    return [args[1] for args in worker.named(method)]


def fresh_dir(case: Any) -> str:
    """A temporary directory removed after the test."""
    path = tempfile.mkdtemp(prefix="pytxmr-web-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


async def children_reaped() -> None:
    await wait_for(lambda: not process.reapProcessHandlers)


async def http_get(url: str, password: str | None = None) -> tuple[int, bytes, Any]:
    headers = Headers()
    if password is not None:
        token = b64encode(b"anyone:" + password.encode())
        headers.addRawHeader(b"Authorization", b"Basic " + token)
    response = await Agent(reactor).request(b"GET", url.encode(), headers)
    with warnings.catch_warnings():  # Twisted's own transport lacks abortConnection
        warnings.simplefilter("ignore", DeprecationWarning)
        body = await readBody(response)
    return response.code, body, response.headers


class JobTrackerCase(TestCase):
    """A JobTracker in a temporary work dir, its site on a free port, and
    fake tasktrackers."""

    timeout = 60

    def setUp(self) -> None:
        self.tmp = fresh_dir(self)
        self.workdir = os.path.join(self.tmp, "jt")
        self.inputs = os.path.join(self.tmp, "in.txt")
        with open(self.inputs, "w") as f:
            f.write("a b c\nb c\n")
        self.jt = self.start_jobtracker()
        self.ports: list[Any] = []

    def start_jobtracker(self, retention: int = 100, resume_grace: float = 12.0) -> JobTracker:
        self.zygote = Zygote(reactor)  # checks submitted modules, as a daemon's does
        self.zygote.start()
        # Fake workers send no heartbeats: none is lost during a test.
        jt = JobTracker(reactor, reactor, self.workdir, expiry=600,
                        history_retention=retention, checkers=self.zygote,
                        resume_grace=resume_grace)
        jt.start()
        self.addCleanup(self.stop_jobtracker, jt)
        return jt

    async def restart(self, retention: int = 100, resume_grace: float = 12.0) -> JobTracker:
        await self.stop_jobtracker(self.jt)
        self.jt = self.start_jobtracker(retention, resume_grace)
        return self.jt

    async def stop_jobtracker(self, jt: JobTracker) -> None:
        await jt.stop()  # again after a test's own stop: it does nothing then
        await jt.history.flush()
        await self.zygote.stop()
        for port in self.ports:
            await port.stopListening()
        self.ports = []
        await children_reaped()

    def job_file(self, name: str = "job.py", source: str = WORDCOUNT) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(source)
        return path

    async def submit(self, jt: JobTracker | None = None, job_path: str | None = None,
                     out: str = "out") -> str:
        spec = client.submission(job_path or self.job_file(), [self.inputs],
                                 os.path.join(self.tmp, out), overwrite=True).spec
        return await (jt or self.jt).submit(spec)

    def add_worker(self, jt: JobTracker | None = None, slots: int = 2) -> tuple[str, FakeWorker]:
        worker = FakeWorker()
        wid = (jt or self.jt).register(worker, Registration("127.0.0.1", 9, slots))
        return wid, worker

    async def serve(self, jt: JobTracker | None = None, password: str | None = None) -> str:
        port = reactor.listenTCP(0, web_site(jt or self.jt, password), interface="127.0.0.1")
        self.ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def get_json(self, base: str, path: str) -> Any:
        code, body, _ = await http_get(base + path)
        self.assertEqual(code, 200, body)
        return json.loads(body)


class CountersAndApiTests(JobTrackerCase):

    async def run_job_with_retries(self) -> tuple[str, str, str]:
        """One map that fails once, succeeds, is lost with its worker and
        succeeds again; then the reduce. Returns the job id and workers."""
        w1, m1 = self.add_worker(slots=1)  # first: the job gets one reduce
        job_id = await self.submit()
        [first] = launched(m1, "launch_map")
        self.jt.attempt_failed(w1, first, TaskError("ValueError", "bad <line>",
                                                    f"Traceback: {HOSTILE}", "oops " + HOSTILE))
        second = launched(m1, "launch_map")[-1]
        self.assertNotEqual(first, second)
        counters = {"user": {"lines": 2}, "pytxmr": {"map input records": 2}}
        self.jt.attempt_done(w1, second, AttemptResult(counters, ("str",), "map printed this"))
        w2, m2 = self.add_worker()
        self.jt.worker_disconnected(w1)  # its map output is lost: the map runs again
        third = launched(m2, "launch_map")[-1]
        self.jt.attempt_done(w2, third, AttemptResult(counters, ("str",)))
        reduce = launched(m2, "launch_reduce")[-1]
        self.assertTrue(self.jt.may_commit(w2, reduce))
        self.jt.attempt_done(w2, reduce,
                             AttemptResult({"pytxmr": {"reduce output records": 3}}))
        await self.jt.wait(job_id)  # its output is final: the job has ended
        return job_id, w1, w2

    async def test_retried_attempts_are_not_counted_twice(self) -> None:
        """A job's counters add up each task's committed attempt only."""
        job_id, _, _ = await self.run_job_with_retries()
        result = await self.jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded")
        counters = result["counters"]
        self.assertEqual(counters["user"]["lines"], 2)
        self.assertEqual(counters["pytxmr"]["map input records"], 2)
        self.assertEqual(counters["pytxmr"]["reduce output records"], 3)
        self.assertEqual(counters["pytxmr"]["failed map attempts"], 1)

    async def test_live_counters_match_the_final_ones(self) -> None:
        """The status page's running totals use the same rule as the end."""
        forget = self.jt.scheduler.forget_job
        forgotten = []

        def keep(sched_id: str) -> None:
            forgotten.append(self.jt.scheduler.jobs[sched_id])
            forget(sched_id)

        self.jt.scheduler.forget_job = keep  # type: ignore[method-assign]
        job_id, _, _ = await self.run_job_with_retries()
        await self.jt.wait(job_id)
        self.assertEqual([sjob.id for sjob in forgotten], [job_id])
        self.assertEqual(views.live_counters(forgotten), self.jt.status(job_id)["counters"])

    async def test_a_history_that_cannot_be_written_is_said_in_one_line(self) -> None:
        """A full or read-only disk under the history: one error naming it,
        no traceback, and the job still ends as it did."""
        blocker = os.path.join(self.tmp, "not-a-directory")
        with open(blocker, "w") as f:
            f.write("x")
        self.jt.history.directory = os.path.join(blocker, "history")
        with capturedLogs() as events:
            job_id, _, _ = await self.run_job_with_retries()
            result = await self.jt.wait(job_id)
            await self.jt.history.flush()
        self.assertEqual(result["state"], "succeeded")
        said = [e for e in events if "job history" in e.get("log_format", "")]
        self.assertEqual(len(said), 1, said)
        self.assertEqual(said[0]["log_level"], LogLevel.error)
        self.assertNotIn("log_failure", said[0])
        self.assertIn(self.jt.history.directory, formatEvent(said[0]))

    async def test_an_ended_job_leaves_the_scheduler_and_is_read_from_the_history(
            self) -> None:
        """Its tasks and attempts leave memory at its end; its detail and
        logs are read back from disk, alike."""
        job_id, _, _ = await self.run_job_with_retries()
        await self.jt.wait(job_id)  # its end: the history has it
        self.assertEqual((self.jt.jobs, self.jt.scheduler.jobs, self.jt.scheduler.attempts),
                         ({}, {}, {}))
        self.assertNotIn("tasks", self.jt.history.summaries[job_id])
        detail = await self.jt.job_view(job_id)
        self.assertEqual([len(t["attempts"]) for t in detail["tasks"]], [3, 2])
        self.assertEqual(set(detail["phases"]), {"map", "reduce"})
        self.assertEqual(self.jt.status(job_id)["counters"], detail["counters"])
        [entry] = await self.jt.logs(job_id, detail["tasks"][0]["attempts"][1]["id"])
        self.assertEqual(entry["log"], "map printed this")

    async def test_json_api_describes_workers_jobs_and_attempts(self) -> None:
        """/api/workers, /api/jobs and /api/jobs/JOB serve the documented fields."""
        job_id, w1, w2 = await self.run_job_with_retries()
        base = await self.serve()
        workers = await self.get_json(base, "/api/workers")
        self.assertEqual([(w["wid"], w["alive"]) for w in workers], [(w2, True), (w1, False)])
        self.assertEqual(workers[1]["failures"], 1)
        for key in ("host", "shuffle_port", "slots", "running", "heartbeat_age",
                    "shuffle_memory_used", "shuffle_memory_budget"):
            self.assertIn(key, workers[0])
        [job] = await self.get_json(base, "/api/jobs")
        self.assertEqual((job["job_id"], job["state"]), (job_id, "succeeded"))
        self.assertEqual(job["maps"]["done"], 1)
        self.assertEqual(job["counters"]["user"]["lines"], 2)
        detail = await self.get_json(base, f"/api/jobs/{job_id}")
        self.assertEqual([t["id"] for t in detail["tasks"]],
                         [f"{job_id}_m00000", f"{job_id}_r00000"])
        states = [a["state"] for a in detail["tasks"][0]["attempts"]]
        self.assertEqual(states, ["failed", "succeeded", "succeeded"])
        failed = detail["tasks"][0]["attempts"][0]
        self.assertEqual(failed["error"]["traceback"], f"Traceback: {HOSTILE}")
        self.assertTrue(failed["has_log"])
        self.assertIsNotNone(detail["phases"]["map"])
        log = await self.get_json(base, f"/api/jobs/{job_id}/attempts/{failed['id']}/log")
        self.assertEqual(log["log"], "oops " + HOSTILE)
        code, body, _ = await http_get(base + "/api/jobs/job_nope")
        self.assertEqual(code, 404)
        self.assertIn("error", json.loads(body))
        code, body, _ = await http_get(base + "/api/jobs/%ff%fe")  # was the HTML page
        self.assertEqual((code, json.loads(body)), (404, {"error": "bad path: not UTF-8"}))

    async def test_heartbeats_report_the_shuffle_memory_to_the_cluster_page(self) -> None:
        """What a worker holds in RAM for reduces shows beside it; a
        malformed report is ignored, never an error."""
        w1, _ = self.add_worker()
        w2, _ = self.add_worker()
        w3, _ = self.add_worker()
        self.jt.heartbeat(w1, Heartbeat((), (3 << 20, 256 << 20)))
        self.jt.heartbeat(w2, Heartbeat((), (0, 0)))
        # What the PB adapter makes of malformed reports (wire.Heartbeat.from_wire).
        for bad in (None, "x", {"shuffle_memory": {"used": -1, "budget": 5}},
                    {"shuffle_memory": {"used": "1", "budget": 5}}, {"shuffle_memory": [1, 2]}):
            self.jt.heartbeat(w3, Heartbeat.from_wire(bad))
        base = await self.serve()
        workers = {w["wid"]: w for w in await self.get_json(base, "/api/workers")}
        self.assertEqual((workers[w1]["shuffle_memory_used"], workers[w1]["shuffle_memory_budget"]),
                         (3 << 20, 256 << 20))
        self.assertIsNone(workers[w3]["shuffle_memory_budget"])
        _, body, _ = await http_get(base + "/")
        text = body.decode()
        self.assertIn("3.0 MiB of 256.0 MiB", text)
        self.assertIn("<td>off</td>", text)

    async def test_pages_escape_hostile_file_names_errors_and_logs(self) -> None:
        """A job file named like markup cannot inject script into the pages."""
        path = self.job_file(f"{HOSTILE}.py".replace("/", "_"))
        w1, m1 = self.add_worker()
        job_id = await self.submit(job_path=path)
        [aid] = launched(m1, "launch_map")
        self.jt.attempt_failed(w1, aid, TaskError("Boom", HOSTILE, HOSTILE, HOSTILE))
        base = await self.serve()
        for url in ("/", f"/jobs/{job_id}", f"/jobs/{job_id}/attempts/{aid}/log"):
            code, body, headers = await http_get(base + url)
            self.assertEqual(code, 200, url)
            text = body.decode()
            self.assertNotIn("<script>alert", text, url)
            self.assertIn("&lt;script&gt;alert", text, url)
            self.assertIn(b"script-src 'self'",
                          headers.getRawHeaders(b"Content-Security-Policy")[0])

    async def test_job_page_draws_a_timeline_of_maps_and_reduces(self) -> None:
        """The job page has an SVG bar per attempt, coloured by kind."""
        job_id, _, _ = await self.run_job_with_retries()
        base = await self.serve()
        code, body, _ = await http_get(base + f"/jobs/{job_id}")
        text = body.decode()
        self.assertEqual(code, 200)
        self.assertIn('<svg id="timeline"', text)
        self.assertEqual(len(re.findall(r'class="bar map', text)), 3)
        self.assertEqual(len(re.findall(r'class="bar reduce killed', text)), 1)  # with w1
        self.assertEqual(len(re.findall(r'class="bar reduce succeeded', text)), 1)
        self.assertIn('data-live="0"', text)
        self.assertIn("lines", text)

    async def test_logs_by_job_task_and_attempt(self) -> None:
        """``logs`` returns every attempt's output, or a chosen task's."""
        job_id, _, _ = await self.run_job_with_retries()
        everything = await self.jt.logs(job_id)
        self.assertEqual(len(everything), 5)  # 3 maps, 2 reduces
        maps = await self.jt.logs(job_id, "m0")
        self.assertEqual([e["log"] for e in maps], ["oops " + HOSTILE, "map printed this", None])
        self.assertEqual(await self.jt.logs(job_id, f"{job_id}_m00000"), maps)
        [one] = await self.jt.logs(job_id, maps[1]["attempt"])
        self.assertEqual(one["log"], "map printed this")
        self.assertIn("map printed this", format_logs(maps))
        with self.assertRaises(UnknownJob):
            await self.jt.logs(job_id, "m7")

    async def test_running_job_page_keeps_refreshing(self) -> None:
        """A running job's page polls; its counters show what is committed so far."""
        w1, m1 = self.add_worker()
        job_id = await self.submit()
        [aid] = launched(m1, "launch_map")
        self.jt.attempt_done(w1, aid, AttemptResult({"user": {"lines": 2}}, ("str",)))
        base = await self.serve()
        code, body, _ = await http_get(base + f"/jobs/{job_id}")
        self.assertIn('data-live="1"', body.decode())
        [job] = await self.get_json(base, "/api/jobs")
        self.assertEqual((job["state"], job["counters"]["user"]), ("running", {"lines": 2}))

    async def test_password_protects_the_site(self) -> None:
        """With a password (beyond loopback), a request without it gets 401."""
        base = await self.serve(password=web_password(b"secret"))
        code, _, _ = await http_get(base + "/api/jobs")
        self.assertEqual(code, 401)
        code, _, _ = await http_get(base + "/api/jobs", password="wrong")
        self.assertEqual(code, 401)
        code, body, _ = await http_get(base + "/api/jobs", password=web_password(b"secret"))
        self.assertEqual((code, json.loads(body)), (200, []))


class _Refusing(FakeWorker):
    """A tasktracker no map can be sent to (as a split whose path PB could
    not carry could not)."""

    def launch_map(self, *args: Any) -> None:
        raise UnicodeEncodeError("utf-8", "caf\udce9", 3, 4, "surrogates not allowed")


class LaunchTests(JobTrackerCase):

    async def test_a_task_that_cannot_be_sent_fails_its_attempt(self) -> None:
        """It was neither launched nor failed: its job waited for ever."""
        refusing = _Refusing()
        self.jt.register(refusing, Registration("127.0.0.1", 9, 1))
        job_id = await self.submit()
        result = await self.jt.wait(job_id)
        self.assertEqual(result["state"], "failed")
        self.assertEqual(result["error"]["type"], "LaunchFailed")
        self.assertIn("could not send the task to its tasktracker (UnicodeEncodeError",
                      result["error"]["message"])
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 4)  # its attempts


    async def test_an_attempt_whose_result_never_came_runs_again(self) -> None:
        """Its worker got it and no longer runs it, and no result came (a
        report dropped): it stayed running for ever, and its job with it."""
        wid, worker = self.add_worker(slots=1)
        job_id = await self.submit()
        [first] = launched(worker, "launch_map")
        self.jt.heartbeat(wid, Heartbeat((first,), launches=1))  # running
        self.jt.heartbeat(wid, Heartbeat((), launches=0))  # sent before the launch came
        self.assertEqual(launched(worker, "launch_map"), [first])
        self.jt.heartbeat(wid, Heartbeat((), launches=1))
        [_, second] = launched(worker, "launch_map")
        self.jt.attempt_done(wid, second, AttemptResult({"user": {"lines": 2}}, ("str",)))
        [reduce] = launched(worker, "launch_reduce")
        self.jt.heartbeat(wid, Heartbeat((reduce,), launches=3))
        self.assertTrue(self.jt.may_commit(wid, reduce))
        self.jt.attempt_done(wid, reduce, AttemptResult())
        result = await self.jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded")
        self.assertEqual(result["counters"]["pytxmr"]["failed map attempts"], 1)
        [lost] = await self.jt.logs(job_id, first)
        self.assertEqual(lost["state"], "failed")
        detail = await self.get_json(await self.serve(), f"/api/jobs/{job_id}")
        attempt = detail["tasks"][0]["attempts"][0]
        self.assertEqual((attempt["id"], attempt["error"]["type"]), (first, "ResultLost"))
        self.assertIn("ended on tasktracker w1 without a result", attempt["error"]["message"])


class TaskOutputTests(JobTrackerCase):

    async def test_what_a_running_or_killed_attempt_printed_is_shown(self) -> None:
        """A log came with a result only: a hung task being debugged, and a
        killed one, showed "[no output]"."""
        from pytxmr.jobtracker import runninglogs

        self.patch(runninglogs, "FRESH", 0)  # each call here asks the worker again
        wid, worker = self.add_worker(slots=1)
        job_id = await self.submit()
        [aid] = launched(worker, "launch_map")
        [entry] = await self.jt.logs(job_id, aid)
        self.assertEqual((entry["state"], entry["log"]), ("running", None))
        self.assertIn("[no output so far]", format_logs([entry]))
        worker.running_logs[aid] = None  # a stopped tasktracker: not "no output"
        [entry] = await self.jt.logs(job_id, aid)
        self.assertIn("[running; its tasktracker did not say what it printed so far]",
                      format_logs([entry]))
        worker.running_logs[aid] = "so far\n"
        [entry] = await self.jt.logs(job_id, aid)
        self.assertEqual(entry["log"], "so far\n")
        self.assertEqual(await self.jt.attempt_log(job_id, aid), "so far\n")
        # The page links it; not where logs are their owners' only (--users).
        link = f'href="/jobs/{job_id}/attempts/{aid}/log"'
        base = await self.serve()
        self.assertIn(link, (await http_get(f"{base}/jobs/{job_id}"))[1].decode())
        [attempt] = (await self.get_json(base, f"/api/jobs/{job_id}"))["tasks"][0]["attempts"]
        self.assertTrue(attempt["has_log"])
        port = reactor.listenTCP(0, web_site(self.jt, logs=False), interface="127.0.0.1")
        self.ports.append(port)
        owners_only = f"http://127.0.0.1:{port.getHost().port}"
        self.assertNotIn(link, (await http_get(f"{owners_only}/jobs/{job_id}"))[1].decode())
        self.jt.killed_log(wid, aid, "not killed\n")  # running: its own words come later
        self.jt.attempt_failed(wid, aid, TaskError(COMMIT_DENIED, "another committed"))
        self.jt.killed_log(wid, aid, "printed before the kill\n")
        [entry] = await self.jt.logs(job_id, aid)
        self.assertEqual((entry["state"], entry["log"]), ("killed", "printed before the kill\n"))


    async def test_running_attempts_not_asked_for_their_output_say_so(self) -> None:
        """Beyond the first ASKED, they said "[no output so far]"."""
        from pytxmr.jobtracker import runninglogs

        self.patch(runninglogs, "ASKED", 1)
        wid, worker = self.add_worker(slots=2)
        spec = client.submission(self.job_file(), [self.inputs], os.path.join(self.tmp, "out"),
                                 split_size=6).spec
        job_id = await self.jt.submit(spec)
        first, second = launched(worker, "launch_map")
        worker.running_logs.update({first: "one\n", second: "two\n"})
        text = format_logs(await self.jt.logs(job_id))
        self.assertIn("one\n[running: its output so far]", text)
        self.assertIn("[running; its output so far is asked for 1 running attempts at a time: "
                      "ask for its task]", text)
        self.assertIn("two\n", format_logs(await self.jt.logs(job_id, second)))


class CommitWaitTests(JobTrackerCase):
    """A killed job cleaned its output at once, while an attempt it had let
    commit still uploaded its part: the upload landed after, over the part
    of the next job writing the same prefix (a wrong answer under its
    ``_SUCCESS``, a tester's)."""

    async def committing(self) -> tuple[str, str, str, defer.Deferred[Any]]:
        """A job whose one reduce, on a new worker, is let commit: the
        worker, the reduce, the job and its end."""
        wid, worker = self.add_worker(slots=1)
        job_id = await self.submit()
        [m] = launched(worker, "launch_map")
        self.jt.attempt_done(wid, m, AttemptResult({}, ("str",)))
        [r] = launched(worker, "launch_reduce")
        self.assertTrue(self.jt.may_commit(wid, r))
        return wid, r, job_id, self.jt.wait(job_id)

    async def killed_while_committing(self) -> tuple[str, str, str, defer.Deferred[Any]]:
        wid, r, job_id, ended = await self.committing()
        self.jt.kill(job_id)
        await task_sleep(0.05)
        self.assertFalse(ended.called)  # its output is left alone meanwhile
        return wid, r, job_id, ended

    async def test_a_killed_job_cleans_its_output_once_its_commits_ended(self) -> None:
        """Meanwhile it is told as running, finishing: it said "succeeded"
        before its _SUCCESS was written, and could turn "failed" then."""
        wid, r, job_id, ended = await self.killed_while_committing()
        status = self.jt.status(job_id)
        self.assertEqual((status["state"], status["finishing"]), ("running", "killed"))
        [listed] = [j for j in self.jt.list_jobs() if j["job_id"] == job_id]
        self.assertEqual((listed["state"], listed["finishing"]), ("running", "killed"))
        self.jt.commit_ended(wid, r)
        result = await ended
        self.assertEqual(result["state"], "killed")
        self.assertNotIn("finishing", result)
        self.assertEqual(self.jt.status(job_id)["state"], "killed")

    async def test_a_killed_job_is_finishing_until_its_output_is_free(self) -> None:
        """It was told "killed" while its output was still its own (the
        logs of its killed attempts awaited, its history written): a
        submission of that output with --overwrite was refused as "the
        output of the running job" for a second and more (a tester's)."""
        wid, worker = self.add_worker(slots=1)
        job_id = await self.submit()
        launched(worker, "launch_map")
        ended = self.jt.wait(job_id)
        self.jt.kill(job_id)
        status = self.jt.status(job_id)
        self.assertEqual((status["state"], status["finishing"]), ("running", "killed"))
        self.assertEqual((await ended)["state"], "killed")
        self.assertEqual(self.jt.status(job_id)["state"], "killed")
        await self.submit()  # at once: the output is free

    async def test_a_lost_worker_s_commit_is_waited_for_until_it_is_back(self) -> None:
        """Lost, its commit ended the wait at once, while its upload went
        on; and the same process, registered again on a new connection
        (a reset one), was not heard: the output was cleaned under it."""
        self.jt = await self.restart(resume_grace=0.5)
        wid, r, _, ended = await self.killed_while_committing()
        self.jt.worker_disconnected(wid)
        again = self.jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1, committing=(r,)))
        self.jt.worker_disconnected(again)
        again = self.jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1, committing=(r,)))
        await task_sleep(0.8)  # past the grace: it is back
        self.assertFalse(ended.called)
        self.jt.commit_ended(again, r)
        self.assertEqual((await ended)["state"], "killed")

    async def test_a_worker_back_after_the_grace_is_still_waited_for(self) -> None:
        """Paused past its expiry and the grace (a VM's pause), it came back
        with its upload going on: the killed job had been cleaned, and the
        part landed over the next job's, under its _SUCCESS (a tester's)."""
        self.jt = await self.restart(resume_grace=0.2)
        wid, r, _, ended = await self.killed_while_committing()
        self.jt.worker_disconnected(wid)
        await task_sleep(0.5)
        self.assertFalse(ended.called)
        back = self.jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1, committing=(r,)))
        await task_sleep(0.05)
        self.assertFalse(ended.called)
        self.jt.commit_ended(back, r)
        self.assertEqual((await ended)["state"], "killed")

    async def test_a_commit_its_worker_no_longer_lists_has_ended(self) -> None:
        """Its word was lost (a report dropped): a job waited 10 minutes."""
        wid, r, _, ended = await self.killed_while_committing()
        self.jt.heartbeat(wid, Heartbeat(committing=(r,)))
        self.jt.heartbeat(wid, Heartbeat())  # a worker that does not say
        await task_sleep(0.05)
        self.assertFalse(ended.called)
        self.jt.heartbeat(wid, Heartbeat(committing=()))
        self.assertEqual((await ended)["state"], "killed")

    async def test_a_succeeding_job_does_not_wait_for_a_lost_worker_s_commit(self) -> None:
        """Its part, landing late, is the job's own, as the one that replaced
        it: a dead worker would hold the _SUCCESS for 10 minutes."""
        w1, _, job_id, ended = await self.committing()
        w2, worker2 = self.add_worker(jt=None)
        self.jt.worker_disconnected(w1)
        [m2] = launched(worker2, "launch_map")  # its output was lost with w1
        self.jt.attempt_done(w2, m2, AttemptResult({}, ("str",)))
        [r2] = launched(worker2, "launch_reduce")
        self.assertTrue(self.jt.may_commit(w2, r2))
        started = time.monotonic()
        self.jt.attempt_done(w2, r2, AttemptResult())
        self.assertEqual((await ended)["state"], "succeeded")
        self.assertLess(time.monotonic() - started, 5)  # not the grace's 12 s

    async def test_a_lost_worker_that_does_not_come_back_is_waited_for_a_while(
            self) -> None:
        from pytxmr.jobtracker import tracker

        self.patch(tracker, "COMMITS_WAIT", 0.3)
        wid, _, _, ended = await self.killed_while_committing()
        self.jt.worker_disconnected(wid)
        started = time.monotonic()
        self.assertEqual((await ended)["state"], "killed")
        self.assertGreater(time.monotonic() - started, 0.2)

    def landed_part(self) -> str:
        """A part the committing attempt wrote: the cleaning removes it."""
        part = os.path.join(self.tmp, "out", "part-00000")
        with open(part, "w") as f:
            f.write("a\t1\n")
        return part

    async def test_a_stopping_jobtracker_leaves_the_job_to_its_next_start(self) -> None:
        """Its stop (SIGTERM) waited as long as the commits could take (10
        minutes); then it cleaned the output at once, and its next start
        let another job take it as the parts still landed. The journal has
        the job as ending, and its commits: the next start waits for them."""
        _, r, job_id, _ = await self.killed_while_committing()
        part = self.landed_part()
        started = time.monotonic()
        await self.jt.stop()
        self.assertLess(time.monotonic() - started, 5)
        self.assertTrue(os.path.exists(part))  # not cleaned
        jt = await self.restart()
        status = jt.status(job_id)
        self.assertEqual((status["state"], status["finishing"]), ("running", "killed"))
        ended = jt.wait(job_id)
        wid = jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1, committing=(r,)))
        await task_sleep(0.05)
        self.assertFalse(ended.called)
        with self.assertRaises(SubmissionError):  # still its output
            await self.submit(jt)
        jt.commit_ended(wid, r)  # as the worker's upload ends
        self.assertEqual((await ended)["state"], "killed")
        self.assertFalse(os.path.exists(part))
        await self.submit(jt)

    async def test_a_restarted_jobtracker_waits_only_for_the_commits_still_made(
            self) -> None:
        """A worker back at the address of a commit that it no longer makes
        (it ended while the jobtracker was down): the job is cleaned at once."""
        _, _, job_id, _ = await self.killed_while_committing()
        part = self.landed_part()
        jt = await self.restart()
        ended = jt.wait(job_id)
        jt.register(FakeWorker(), Registration("127.0.0.1", 8, 1, committing=()))  # another
        # A worker from before workers said what they commit: it may.
        older = jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1))
        await task_sleep(0.05)
        self.assertFalse(ended.called)
        jt.worker_disconnected(older)
        jt.register(FakeWorker(), Registration("127.0.0.1", 9, 1, committing=()))
        self.assertEqual((await ended)["state"], "killed")
        self.assertFalse(os.path.exists(part))

    async def test_a_commit_whose_worker_does_not_come_back_is_not_waited_for(
            self) -> None:
        from pytxmr.jobtracker import tracker

        _, _, job_id, _ = await self.killed_while_committing()
        self.patch(tracker, "COMMITS_WAIT", 0.3)
        with capturedLogs() as events:
            jt = await self.restart()
            started = time.monotonic()
            self.assertEqual((await jt.wait(job_id))["state"], "killed")
        self.assertGreater(time.monotonic() - started, 0.2)
        self.assertTrue(any("No tasktracker came back at 127.0.0.1:9" in formatEvent(e)
                            for e in events))

    async def test_a_commit_that_never_says_it_ended_is_waited_for_a_while(self) -> None:
        from pytxmr.jobtracker import tracker

        self.patch(tracker, "COMMITS_WAIT", 0.2)
        _, _, _, ended = await self.killed_while_committing()
        self.assertEqual((await ended)["state"], "killed")


class BundleTests(JobTrackerCase):

    async def test_a_bundle_a_client_found_there_is_there_for_its_submission(self) -> None:
        """The client sends no bundle the jobtracker has: an identical job
        that ended in between took it away, and the submission was refused
        ("the job's bundle ... was not uploaded")."""
        self.add_worker()
        stop = os.path.join(self.tmp, "stop.txt")
        with open(stop, "w") as f:
            f.write("the\n")
        first, second = (client.submission(self.job_file(), [self.inputs],
                                           os.path.join(self.tmp, out), files=[stop])
                         for out in ("a", "b"))
        shipped = first.bundle
        self.assertTrue(self.jt.put_bundle("up", shipped.sha256, len(shipped.data), 0,
                                           shipped.data))
        job_id = await self.jt.submit(first.spec)
        self.assertTrue(self.jt.has_bundle(second.bundle.sha256))
        self.jt.kill(job_id)
        self.assertEqual((await self.jt.wait(job_id))["state"], "killed")
        second_id = await self.jt.submit(second.spec)
        self.assertEqual(self.jt.status(second_id)["state"], "running")


class WorkerNameTests(JobTrackerCase):

    def test_a_worker_is_named_by_its_id_or_its_shuffle_address(self) -> None:
        from pytxmr.wire import NoSuchWorker

        wid, _ = self.add_worker()
        self.assertEqual(self.jt._worker_named(wid), wid)
        self.assertEqual(self.jt._worker_named("127.0.0.1:9"), wid)
        for name in ("127.0.0.1:8", "127.0.0.1:x", "w99", "nonsense"):
            with self.assertRaises(NoSuchWorker):
                self.jt._worker_named(name)


class WaitingForWorkersTests(JobTrackerCase):
    """Jobs submitted while no worker is registered are planned once
    workers come (the tracker's queue of unplanned jobs)."""

    def setUp(self) -> None:
        super().setUp()
        from pytxmr.jobtracker import tracker

        self.tracker_module = tracker
        self.patch(tracker, "PLAN_SETTLE", 0.3)
        self.patch(tracker, "PLAN_MAX_WAIT", 0.8)

    def started(self, job_id: str) -> bool:
        return job_id in self.jt.scheduler.jobs

    async def test_waiting_jobs_start_in_order_within_a_bounded_wait(self) -> None:
        """A job submitted once a worker came does not overtake the one that
        waited for it; workers that keep registering do not hold them past
        PLAN_MAX_WAIT."""
        first = await self.submit(out="out1")
        self.add_worker(slots=1)
        began = time.monotonic()
        second = await self.submit(out="out2")
        self.assertFalse(self.started(second))  # behind the first, not before it
        while not self.started(first):  # a worker every 0.2 s: never settled
            self.add_worker(slots=1)
            await task_sleep(0.2)
            self.assertLess(time.monotonic() - began, 5, "the planning waited for ever")
        self.assertGreater(time.monotonic() - began, 0.6)
        await wait_for(lambda: self.started(second))
        self.assertEqual([j for j in self.jt.scheduler.jobs], [first, second])
        slots = len(self.jt.workers)
        # Planned for them all: all but the last, when it came as the plan
        # was being made (in a thread) on a loaded machine.
        self.assertIn(self.jt.status(first)["num_reducers"], (slots - 1, slots))
        self.assertGreater(slots, 2)

    async def test_a_job_that_cannot_be_planned_fails_and_the_next_one_starts(self) -> None:
        """An unexpected error planning one job left it and every job after
        it running for ever, with no task."""
        plan = self.tracker_module.plan_tasks
        calls = []

        def broken_once(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("the planner broke")
            return plan(*args)

        self.patch(self.tracker_module, "plan_tasks", broken_once)
        first = await self.submit(out="out1")
        second = await self.submit(out="out2")
        self.add_worker()
        await wait_for(lambda: self.started(second))
        status = await self.jt.wait(first)
        self.assertEqual(status["state"], "failed")
        self.assertIn("could not plan the job's tasks: the planner broke",
                      status["error"]["message"])
        self.assertTrue(self.jt.status(second)["state"] == "running")
        self.flushLoggedErrors(RuntimeError)


async def task_sleep(seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds)


class HistoryTests(JobTrackerCase):

    async def finish_job(self, jt: JobTracker,
                         worker: tuple[str, FakeWorker] | None = None) -> str:
        """A job of one map and one reduce, run on a new worker or ``worker``."""
        wid, mind = worker or self.add_worker(jt, slots=1)
        job_id = await self.submit(jt)
        [m] = [a for a in launched(mind, "launch_map") if a.startswith(job_id)]
        jt.attempt_done(wid, m, AttemptResult({"user": {"lines": 2}}, ("str",), "printed <b>"))
        for r in [a for a in launched(mind, "launch_reduce") if a.startswith(job_id)]:
            jt.attempt_done(wid, r, AttemptResult())
        self.assertEqual((await jt.wait(job_id))["state"], "succeeded")
        return job_id

    async def test_finished_jobs_are_listed_after_a_restart(self) -> None:
        """History survives the restart that wipes WORKDIR/jobs."""
        job_id = await self.finish_job(self.jt)
        jt = await self.restart()
        self.assertEqual([j["job_id"] for j in jt.list_jobs()], [job_id])
        self.assertEqual(jt.status(job_id)["counters"]["user"], {"lines": 2})
        self.assertEqual((await jt.wait(job_id))["state"], "succeeded")
        detail = await jt.job_view(job_id)
        self.assertEqual(detail["inputs"], [self.inputs])
        self.assertEqual(len(detail["tasks"]), 2)
        [entry] = await jt.logs(job_id, "m0")
        self.assertEqual(entry["log"], "printed <b>")
        base = await self.serve(jt)
        [listed] = await self.get_json(base, "/api/jobs")
        self.assertEqual(listed["state"], "succeeded")
        code, body, _ = await http_get(base + f"/jobs/{job_id}/attempts/{entry['attempt']}/log")
        self.assertIn("printed &lt;b&gt;", body.decode())

    async def test_new_job_ids_do_not_reuse_old_ones(self) -> None:
        """A restart within the same second must not reissue a job id."""
        first = await self.finish_job(self.jt)
        jt = await self.restart()
        second = await self.finish_job(jt)
        self.assertNotEqual(first, second)
        self.assertEqual(len(jt.list_jobs()), 2)

    async def test_retention_deletes_the_oldest_jobs(self) -> None:
        """Only the newest ``retention`` jobs stay, on disk and in listings."""
        await self.finish_job(self.jt)
        jt = await self.restart(retention=1)
        second = await self.finish_job(jt)
        await jt.history.flush()
        files = sorted(os.listdir(os.path.join(self.workdir, "history")))
        self.assertEqual(files, [f"{second}.json", f"{second}.logs.json",
                                 f"{second}.page.json", f"{second}.summary.json"])
        jt = await self.restart(retention=1)
        self.assertEqual([j["job_id"] for j in jt.list_jobs()], [second])

    async def test_fewer_jobs_than_retention_are_all_kept_whole(self) -> None:
        """Between retention/2 and retention jobs, only the newest
        (retention - count) kept their tasks, and a restart listed only
        them (a negative start of the newest ``retention``)."""
        jt = await self.restart(retention=3)
        worker = self.add_worker(jt)
        jobs = [await self.finish_job(jt, worker) for _ in range(2)]
        for job_id in jobs:
            self.assertEqual(len((await jt.job_view(job_id))["tasks"]), 3)
        jt = await self.restart(retention=3)
        self.assertEqual([j["job_id"] for j in jt.list_jobs()], jobs)
        for job_id in jobs:
            self.assertEqual(len((await jt.job_view(job_id))["tasks"]), 3)

    async def test_beyond_retention_a_job_keeps_its_result_not_its_tasks(self) -> None:
        """``--history-retention`` bounds the details on disk; the results of
        the last 100 jobs stay known, for ``status`` and ``wait``."""
        jt = await self.restart(retention=1)
        worker = self.add_worker(jt)
        first = await self.finish_job(jt, worker)
        second = await self.finish_job(jt, worker)
        await jt.history.flush()
        self.assertEqual(sorted(os.listdir(os.path.join(self.workdir, "history"))),
                         [f"{second}.json", f"{second}.logs.json", f"{second}.page.json",
                          f"{second}.summary.json"])
        self.assertEqual((await jt.wait(first))["counters"]["user"], {"lines": 2})
        self.assertEqual(jt.status(first)["state"], "succeeded")
        self.assertEqual((await jt.job_view(first))["tasks"], [])
        self.assertEqual(len((await jt.job_view(second))["tasks"]), 3)  # 2 reduces: 2 slots
        self.assertEqual([j["job_id"] for j in jt.jobs_view()], [first, second])

    async def test_a_history_written_without_summaries_still_loads(self) -> None:
        """Details stored before summaries were (or a crash between the two
        writes): the summary is made from the detail, once."""
        job_id = await self.finish_job(self.jt)
        await self.jt.history.flush()
        summary_path = os.path.join(self.workdir, "history", f"{job_id}.summary.json")
        os.remove(summary_path)
        jt = await self.restart()
        self.assertEqual(jt.status(job_id)["counters"]["user"], {"lines": 2})
        with open(summary_path) as f:
            self.assertNotIn("tasks", json.load(f))
        self.assertEqual(len((await jt.job_view(job_id))["tasks"]), 2)

    async def test_what_a_write_cut_short_left_in_the_history_goes(self) -> None:
        """A full disk cut a job's writes short: its .tmp and the files
        written before it stayed for ever (no retention looks at a job
        without its summary or detail); a restart removes them, and a
        write that fails leaves none."""
        job_id = await self.finish_job(self.jt)
        await self.jt.history.flush()
        history = os.path.join(self.workdir, "history")
        left = ["job_20990101000000_0009.logs.json", "job_20990101000000_0009.json.tmp",
                f"{job_id}.json.tmp"]
        for name in left:
            with open(os.path.join(history, name), "w") as f:
                f.write("{}")
        jt = await self.restart()
        self.assertEqual(sorted(os.listdir(history)), [
            f"{job_id}.json", f"{job_id}.logs.json", f"{job_id}.page.json",
            f"{job_id}.summary.json"])
        # The history's writes fail (its module's json alone: the journal's go on).
        self.patch(history_module, "json", SimpleNamespace(
            dumps=lambda *a, **kw: (_ for _ in ()).throw(OSError(28, "full")),
            load=json.load, loads=json.loads))
        second = await self.finish_job(jt)
        await jt.history.flush()
        self.assertEqual([n for n in os.listdir(history) if n.startswith(second)], [])

    async def test_an_ended_jobs_page_is_read_without_its_detail(self) -> None:
        """Its page comes from JOB.page.json (of a size that does not grow
        with the job), its JSON is JOB.json unparsed; a history stored
        without a page view gets it made from the detail."""
        job_id = await self.finish_job(self.jt)
        await self.jt.history.flush()
        base = os.path.join(self.workdir, "history", job_id)
        with open(base + ".json") as f:
            detail = json.load(f)
        with open(base + ".page.json") as f:
            stored = json.load(f)
        self.assertEqual(stored, views.page_view(detail))
        self.assertEqual([a["id"] for a in stored["attempts"]],
                         [a["id"] for t in detail["tasks"] for a in t["attempts"]])
        site = await self.serve(self.jt)
        # /api/jobs/JOB serves the stored detail as it is, not parsed again.
        code, body, _ = await http_get(site + f"/api/jobs/{job_id}")
        with open(base + ".json", "rb") as f:
            self.assertEqual((code, body), (200, f.read()))
        os.remove(base + ".json")  # not read for the page
        self.assertEqual(await self.jt.job_page_view(job_id), stored)
        code, body, _ = await http_get(site + f"/jobs/{job_id}")
        self.assertEqual(code, 200)
        self.assertIn(stored["attempts"][0]["id"], body.decode())
        # A history written before page views were: made once, from the detail.
        with open(base + ".json", "w") as f:
            json.dump(detail, f)
        os.remove(base + ".page.json")
        jt = await self.restart()
        self.assertEqual(await jt.job_page_view(job_id), stored)
        self.assertTrue(os.path.exists(base + ".page.json"))
        # One that is not a page (a hand-edited or garbled history): the same.
        with open(base + ".page.json", "w") as f:
            json.dump({"job_id": job_id}, f)
        self.assertEqual(await jt.job_page_view(job_id), stored)
        code, body, _ = await http_get(await self.serve(jt) + f"/jobs/{job_id}")
        self.assertEqual(code, 200)

    async def test_a_garbled_summary_is_made_again_and_logs_are_not_read_at_start(
            self) -> None:
        """A summary that does not parse is made again from the detail; the
        (possibly large) logs files are left alone until asked for."""
        job_id = await self.finish_job(self.jt)
        await self.jt.history.flush()
        base = os.path.join(self.workdir, "history", job_id)
        with open(f"{base}.summary.json", "w") as f:
            f.write("{garbled")
        read = []
        real_read = history_module._read_json

        def reading(path: str) -> object:
            read.append(os.path.basename(path))
            return real_read(path)

        self.patch(history_module, "_read_json", reading)
        jt = await self.restart()
        self.assertEqual(sorted(read), [f"{job_id}.json", f"{job_id}.summary.json"])
        self.assertEqual(jt.status(job_id)["counters"]["user"], {"lines": 2})
        with open(f"{base}.summary.json") as f:
            self.assertEqual(json.load(f)["job_id"], job_id)

    async def test_reports_after_the_end_are_dropped(self) -> None:
        """A late report of an ended job's attempt, or its worker lost
        afterwards, changes nothing and keeps no log for it."""
        wid, mind = self.add_worker()  # 2 slots: 2 reduces
        job_id = await self.submit()
        [m] = launched(mind, "launch_map")
        self.jt.attempt_done(wid, m, AttemptResult({"user": {"lines": 2}}, ("str",)))
        [r1, r2] = launched(mind, "launch_reduce")
        self.jt.attempt_done(wid, r1, AttemptResult())
        waiting = self.jt.wait(job_id)  # before the end
        self.jt.attempt_done(wid, r2, AttemptResult())
        before = await waiting
        self.jt.attempt_done(wid, r2, AttemptResult({}, (), "late log"))
        self.jt.attempt_failed(wid, m, TaskError("E", "late", "", "late error log"))
        self.jt.worker_disconnected(wid)
        self.assertIsNone(self.jt.task_logs.get(r2))
        self.assertIsNone(self.jt.task_logs.get(m))
        after = await self.jt.wait(job_id)
        self.assertEqual(before["state"], "succeeded")
        # One answer, whenever ``wait`` was asked: progress included.
        self.assertEqual({**before, "workers": 0}, after)
        self.assertEqual(after["maps"]["done"], 1)

    async def test_an_attempt_log_is_read_without_the_jobs_detail(self) -> None:
        """One attempt's log is looked up in the logs file alone; an
        attempt that is not the job's is still refused."""
        job_id = await self.finish_job(self.jt)
        [entry] = await self.jt.logs(job_id, "m0")

        async def no_detail(job_id: str) -> None:
            raise AssertionError("the whole detail was read")

        self.patch(self.jt.history, "detail", no_detail)
        self.assertEqual(await self.jt.attempt_log(job_id, entry["attempt"]), "printed <b>")
        self.patch(self.jt.history, "detail", history_module.JobHistory.detail.__get__(
            self.jt.history))
        with self.assertRaises(UnknownJob):
            await self.jt.attempt_log(job_id, f"{job_id}_m00007_0")

    async def test_retention_zero_keeps_results_only(self) -> None:
        """``--history-retention 0``: nothing on disk; the result stays known
        while the jobtracker runs, its tasks and logs go at the end."""
        jt = await self.restart(retention=0)
        job_id = await self.finish_job(jt)
        await jt.history.flush()
        self.assertEqual(os.listdir(os.path.join(self.workdir, "history")), [])
        self.assertEqual(jt.status(job_id)["counters"]["user"], {"lines": 2})
        self.assertEqual((await jt.job_view(job_id))["tasks"], [])
        self.assertEqual(await jt.logs(job_id), [])
        jt = await self.restart(retention=0)
        with self.assertRaises(UnknownJob):
            jt.status(job_id)

    async def test_jobs_failed_by_a_stop_are_recorded(self) -> None:
        """A job running when the jobtracker stops is kept as failed."""
        job_id = await self.submit()
        jt = await self.restart()
        self.assertEqual(jt.status(job_id)["state"], "failed")
        self.assertEqual(jt.status(job_id)["error"]["type"], "JobTrackerStopped")


SLOW_JOB = """\
import sys, time
import pytxmr

def map(offset, line):
    print("map stdout", offset)
    print("map stderr", offset, file=sys.stderr)
    sys.stdout.flush()
    pytxmr.counter("user", "lines", 1)
    time.sleep(float(line.split()[0]))
    for word in line.split()[1:]:
        yield word, 1

def reduce(word, counts):
    print("reduce stdout", word)
    yield word, sum(counts)
"""


async def stop_if_running(svc: Any) -> None:
    if svc.running:
        await svc.stopService()
    await children_reaped()


class LiveClusterTests(TestCase):
    """An in-process cluster (the embedded run's services) with real task
    children and the status site on a free port."""

    timeout = 120

    async def test_site_answers_quickly_while_a_long_job_runs(self) -> None:
        """Handlers never block the reactor; prints reach logs, not output."""
        tmp = fresh_dir(self)
        secret = b"test-secret"
        jts = jobtracker.make_service(jobtracker.Config(
            listen="tcp:0:interface=127.0.0.1", workdir=os.path.join(tmp, "jt"),
            ready_file=os.path.join(tmp, "jt.ready"),
            web_listen="tcp:0:interface=127.0.0.1"), reactor, secret=secret)
        self.addCleanup(stop_if_running, jts)
        await jts.startService()
        port = jts.port
        ready = json.load(open(os.path.join(tmp, "jt.ready")))
        self.assertEqual(ready["web_port"], jts.web_port)
        base = f"http://127.0.0.1:{jts.web_port}"
        tts = tasktracker.make_service(tasktracker.Config(
            jobtracker=f"tcp:host=127.0.0.1:port={port}", slots=2,
            shuffle_listen="tcp:0:interface=127.0.0.1", advertise_host="127.0.0.1",
            workdir=os.path.join(tmp, "tt")), reactor, secret=secret)
        self.addCleanup(stop_if_running, tts)
        await tts.startService()
        await tts.registered()
        job_path = os.path.join(tmp, "slow.py")
        with open(job_path, "w") as f:
            f.write(SLOW_JOB)
        inp = os.path.join(tmp, "in.txt")
        with open(inp, "w") as f:
            f.write("2 a b c\n0 b c\n")
        conn = await client.connect(reactor, f"127.0.0.1:{port}", secret)
        self.addCleanup(conn.close)
        job_id = await conn.call("submit", client.submission(
            job_path, [inp], os.path.join(tmp, "out"), split_size=1).spec)
        finished = defer.Deferred.fromCoroutine(conn.call("wait", job_id))
        await wait_for(lambda: any(a.state.value == "running" and a.kind == "map"
                                   for a in jts.jt.scheduler.attempts.values()))
        for url in ("/", f"/jobs/{job_id}", f"/api/jobs/{job_id}", "/api/workers"):
            start = time.monotonic()
            code, body, _ = await http_get(base + url)
            self.assertEqual(code, 200)
            self.assertLess(time.monotonic() - start, 0.5, url)
        self.assertEqual(json.loads(body)[0]["running"] != [], True)
        # What the sleeping map printed so far, from its tasktracker: it
        # showed "[no output]" until it ended (a hung task, never).
        so_far: list[dict[str, Any]] = []
        while not any("map stdout 0" in (e["log"] or "") for e in so_far):
            self.assertFalse(finished.called, "the job should still be running")
            so_far = await conn.call("logs", job_id, "m0")
        self.assertEqual(so_far[0]["state"], "running")
        self.assertIn("map stdout 0\n", format_logs(so_far))
        self.assertIn("[running: its output so far]", format_logs(so_far))
        code, body, _ = await http_get(base + f"/api/jobs/{job_id}/attempts/"
                                              f"{so_far[0]['attempt']}/log")
        self.assertIn("map stdout 0", json.loads(body)["log"])
        self.assertFalse(finished.called, "the job should still be running")
        result = await finished
        self.assertEqual(result["state"], "succeeded", result)
        self.assertEqual(result["counters"]["user"]["lines"], 2)
        # Prints went to the logs, never into the output.
        lines = []
        for name in sorted(os.listdir(os.path.join(tmp, "out"))):
            if name.startswith("part-"):
                lines += open(os.path.join(tmp, "out", name)).read().splitlines()
        self.assertEqual(sorted(lines), ["a\t1", "b\t2", "c\t2"])
        logs = await conn.call("logs", job_id)
        text = format_logs(logs)
        self.assertIn("map stdout 0", text)
        self.assertIn("map stderr 0", text)
        self.assertIn("reduce stdout b", text)
        # The CLI prints the same, from another process.
        env = dict(os.environ, PYTXMR_SECRET=secret.decode())
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "pytxmr", "logs", job_id, "m0", "--jobtracker",
                             f"127.0.0.1:{port}"], env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(b"map stdout 0", out)
        self.assertNotIn(b"reduce stdout", out)
        detail = json.loads((await http_get(base + f"/api/jobs/{job_id}"))[1])
        self.assertEqual(detail["state"], "succeeded")
        await tts.stopService()
        await jts.stopService()
        conn.close()
        # The jobtracker's side of the connection sees the close a moment later.
        await wait_for(lambda: not any(isinstance(getattr(r, "protocol", None), pb.Broker)
                                       for r in reactor.getReaders()))
        await children_reaped()
