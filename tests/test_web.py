"""Tests of the status site, the task logs and the job history.

Component tests drive a real ``JobTracker`` (real job module check, real
clock) with fake tasktracker minds, and read its JSON API and pages over
HTTP from ``web_site``; one integration test runs an in-process cluster
(real task children) with a slow job and checks that the site answers
quickly while it runs, that logs arrive and that prints never reach the
output. Trial ``TestCase`` with ``async def`` tests (see STYLE.md).
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
from typing import Any, Callable

from twisted.internet import defer, process, reactor, task, utils
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from pytxmr import client, jobtracker, pages, tasktracker, views
from pytxmr.history import JobHistory
from pytxmr.jobtracker import JobTracker
from pytxmr.tasklog import LogKeeper, format_logs, logs_reply, read_tail
from pytxmr.web import beyond_loopback, web_password, web_site

WORDCOUNT = """\
import pytxmr

def map(offset, line):
    for word in line.split():
        yield word, 1

def reduce(word, counts):
    yield word, sum(counts)
"""

HOSTILE = "<script>alert('x')</script>"


class FakeMind:
    """A tasktracker's mind that records what the jobtracker asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.broker = None

    def callRemote(self, method: str, *args: Any) -> defer.Deferred[None]:
        self.calls.append((method, *args))
        return defer.succeed(None)

    def launched(self, method: str) -> list[str]:
        return [c[2] for c in self.calls if c[0] == method]


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` is true, polling the reactor, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        await task.deferLater(reactor, 0.02)


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

    def start_jobtracker(self, retention: int = 100) -> JobTracker:
        jt = JobTracker(reactor, self.workdir, expiry=1000, history_retention=retention)
        jt.start()
        self.addCleanup(self.stop_jobtracker, jt)
        return jt

    async def stop_jobtracker(self, jt: JobTracker) -> None:
        if jt._expiry_loop is not None and jt._expiry_loop.running:
            jt.stop()
        await jt.history.flush()
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
                                 os.path.join(self.tmp, out), overwrite=True)
        return await (jt or self.jt).submit(spec)

    def add_worker(self, jt: JobTracker | None = None, slots: int = 2) -> tuple[str, FakeMind]:
        mind = FakeMind()
        wid = (jt or self.jt).register(mind, {"protocol": jobtracker.PROTOCOL_VERSION,
                                              "host": "127.0.0.1", "port": 9, "slots": slots})
        return wid, mind

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
        job_id = await self.submit()
        w1, m1 = self.add_worker()
        [first] = m1.launched("launch_map")
        self.jt.attempt_failed(w1, first, {"type": "ValueError", "message": "bad <line>",
                                           "traceback": f"Traceback: {HOSTILE}",
                                           "log": "oops " + HOSTILE})
        second = m1.launched("launch_map")[-1]
        self.assertNotEqual(first, second)
        self.jt.attempt_done(w1, second, {"kinds": ["str"], "log": "map printed this",
                                          "counters": {"user": {"lines": 2},
                                                       "pytxmr": {"map input records": 2}}})
        w2, m2 = self.add_worker()
        self.jt.worker_disconnected(w1)  # its map output is lost: the map runs again
        third = m2.launched("launch_map")[-1]
        self.jt.attempt_done(w2, third, {"kinds": ["str"],
                                         "counters": {"user": {"lines": 2},
                                                      "pytxmr": {"map input records": 2}}})
        reduce = m2.launched("launch_reduce")[-1]
        self.assertTrue(self.jt.may_commit(w2, reduce))
        self.jt.attempt_done(w2, reduce, {"counters": {"pytxmr": {"reduce output records": 3}}})
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
        job_id, _, _ = await self.run_job_with_retries()
        sjob = self.jt.scheduler.jobs[job_id]
        self.assertEqual(views.live_counters(sjob), self.jt.jobs[job_id].counters)

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

    async def test_heartbeats_report_the_shuffle_memory_to_the_cluster_page(self) -> None:
        """What a worker holds in RAM for reduces shows beside it; a
        malformed report is ignored, never an error."""
        w1, _ = self.add_worker()
        w2, _ = self.add_worker()
        w3, _ = self.add_worker()
        self.jt.heartbeat(w1, {"attempts": [], "shuffle_memory": {"used": 3 << 20,
                                                                   "budget": 256 << 20}})
        self.jt.heartbeat(w2, {"attempts": [], "shuffle_memory": {"used": 0, "budget": 0}})
        for bad in (None, "x", {"shuffle_memory": {"used": -1, "budget": 5}},
                    {"shuffle_memory": {"used": "1", "budget": 5}}, {"shuffle_memory": [1, 2]}):
            self.jt.heartbeat(w3, bad)
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
        job_id = await self.submit(job_path=path)
        w1, m1 = self.add_worker()
        [aid] = m1.launched("launch_map")
        self.jt.attempt_failed(w1, aid, {"type": "Boom", "message": HOSTILE,
                                         "traceback": HOSTILE, "log": HOSTILE})
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
        with self.assertRaises(pb.Error):
            await self.jt.logs(job_id, "m7")

    async def test_running_job_page_keeps_refreshing(self) -> None:
        """A running job's page polls; its counters show what is committed so far."""
        job_id = await self.submit()
        w1, m1 = self.add_worker()
        [aid] = m1.launched("launch_map")
        self.jt.attempt_done(w1, aid, {"kinds": ["str"], "counters": {"user": {"lines": 2}}})
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


class HistoryTests(JobTrackerCase):

    async def finish_job(self, jt: JobTracker) -> str:
        job_id = await self.submit(jt)
        wid, mind = self.add_worker(jt)
        [m] = mind.launched("launch_map")
        jt.attempt_done(wid, m, {"kinds": ["str"], "log": "printed <b>",
                                 "counters": {"user": {"lines": 2}}})
        [r] = mind.launched("launch_reduce")
        jt.attempt_done(wid, r, {"counters": {}})
        self.assertEqual((await jt.wait(job_id))["state"], "succeeded")
        return job_id

    async def restart(self, retention: int = 100) -> JobTracker:
        await self.stop_jobtracker(self.jt)
        self.jt = self.start_jobtracker(retention)
        return self.jt

    async def test_finished_jobs_are_listed_after_a_restart(self) -> None:
        """History survives the restart that wipes WORKDIR/jobs."""
        job_id = await self.finish_job(self.jt)
        jt = await self.restart()
        self.assertEqual([j["job_id"] for j in jt.list_jobs()], [job_id])
        self.assertEqual(jt.status(job_id)["counters"]["user"], {"lines": 2})
        self.assertEqual((await jt.wait(job_id))["state"], "succeeded")
        detail = jt.job_view(job_id)
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
        self.assertEqual(files, [f"{second}.json", f"{second}.logs.json"])
        jt = await self.restart(retention=1)
        self.assertEqual([j["job_id"] for j in jt.list_jobs()], [second])

    async def test_jobs_failed_by_a_stop_are_recorded(self) -> None:
        """A job running when the jobtracker stops is kept as failed."""
        job_id = await self.submit()
        jt = await self.restart()
        self.assertEqual(jt.status(job_id)["state"], "failed")
        self.assertEqual(jt.status(job_id)["error"]["type"], "JobTrackerStopped")


class PureTests(SynchronousTestCase):

    def test_loopback_endpoints_need_no_password(self) -> None:
        """Only TCP on a loopback interface (or a UNIX socket) is open without auth."""
        self.assertFalse(beyond_loopback("tcp:7374:interface=127.0.0.1"))
        self.assertFalse(beyond_loopback(r"tcp6:7374:interface=\:\:1"))
        self.assertFalse(beyond_loopback("unix:/tmp/s.sock"))
        self.assertTrue(beyond_loopback("tcp:7374"))
        self.assertTrue(beyond_loopback("tcp:7374:interface=0.0.0.0"))
        self.assertTrue(beyond_loopback("tcp:port=7374:interface=10.1.2.3"))
        self.assertTrue(beyond_loopback("ssl:7374:privateKey=k.pem"))

    def test_web_options_reach_the_config(self) -> None:
        """--web-port/--web-interface/--web-listen/--no-web build the endpoint."""
        def config(*args: str) -> jobtracker.Config:
            return jobtracker.parse_args(list(args))[0]

        self.assertEqual(config().web_listen, "tcp:7374:interface=127.0.0.1")
        self.assertEqual(config("--web-port", "0").web_listen, "tcp:0:interface=127.0.0.1")
        self.assertEqual(config("--web-listen", "unix:/x").web_listen, "unix:/x")
        self.assertIsNone(config("--no-web").web_listen)
        self.assertEqual(config("--history-retention", "5").history_retention, 5)

    def test_log_keeper_is_bounded(self) -> None:
        """Old logs go first when the total exceeds the bound."""
        keeper = LogKeeper(max_chars=10)
        keeper.put("job_1_m00000_0", "123456")
        keeper.put("job_1_m00001_0", "abcdef")
        self.assertIsNone(keeper.get("job_1_m00000_0"))
        self.assertEqual(keeper.for_job("job_1"), {"job_1_m00001_0": "abcdef"})

    def test_logs_reply_is_bounded(self) -> None:
        """A ``logs`` reply stays far below PB's limits."""
        attempts = [{"id": f"j_1_m{i:05d}_0", "kind": "map", "index": i, "wid": "w1",
                     "state": "succeeded"} for i in range(3)]
        logs = {a["id"]: "x" * 60 for a in attempts}
        reply = logs_reply(attempts, logs, max_chars=100)
        self.assertEqual([e["omitted"] for e in reply], [False, True, True])

    def test_read_tail_keeps_the_end(self) -> None:
        """The tail of a big log is sent, with a note of what was cut."""
        path = os.path.join(fresh_dir(self), "log")
        with open(path, "w") as f:
            f.write("a" * 100 + "THE END")
        text = read_tail(path, limit=10)
        self.assertTrue(text.endswith("aaaTHE END"))
        self.assertIn("last 10 bytes", text)
        self.assertEqual(read_tail(path + "-missing"), "")

    def test_history_ignores_foreign_files(self) -> None:
        """Only JOB.json files named for their job id are loaded."""
        d = fresh_dir(self)
        with open(os.path.join(d, "notes.json"), "w") as f:
            f.write("{}")
        with open(os.path.join(d, "job_1_0001.json"), "w") as f:
            json.dump({"job_id": "job_2_0002"}, f)
        h = JobHistory(d)
        h.load()
        self.assertEqual(list(h.jobs), [])

    def test_view_modules_do_not_import_twisted(self) -> None:
        """Views, pages and log bounds are pure logic, testable without a reactor."""
        import subprocess

        code = ("import sys, pytxmr.views, pytxmr.pages, pytxmr.tasklog; "
                "print([m for m in sys.modules if m.split('.')[0] == 'twisted'])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        self.assertEqual(out.stdout.strip(), "[]")

    def test_timeline_lanes_do_not_overlap(self) -> None:
        """Concurrent attempts on one worker get lanes of their own."""
        attempts = [{"id": f"a{i}", "kind": "map", "index": i, "wid": "w1", "state": "succeeded",
                     "started": 100.0, "finished": 101.0} for i in range(2)]
        detail = {"submitted": 100.0, "finished": 101.0,
                  "tasks": [{"attempts": attempts}]}
        svg = pages.timeline_svg(detail, 101.0)
        ys = re.findall(r'class="bar map succeeded" x="[\d.]+" y="([\d.]+)"', svg)
        self.assertEqual(len(set(ys)), 2)


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
        jts = jobtracker.JobTrackerService(reactor, jobtracker.Config(
            listen="tcp:0:interface=127.0.0.1", workdir=os.path.join(tmp, "jt"),
            secret_file=None, ready_file=os.path.join(tmp, "jt.ready"),
            web_listen="tcp:0:interface=127.0.0.1"), secret)
        jts.startService()
        self.addCleanup(stop_if_running, jts)
        port = await jts.listening()
        ready = json.load(open(os.path.join(tmp, "jt.ready")))
        self.assertEqual(ready["web_port"], jts.web_port)
        base = f"http://127.0.0.1:{jts.web_port}"
        tts = tasktracker.TaskTrackerService(reactor, tasktracker.Config(
            jobtracker=f"tcp:host=127.0.0.1:port={port}", slots=2,
            shuffle_listen="tcp:0:interface=127.0.0.1", advertise_host="127.0.0.1",
            workdir=os.path.join(tmp, "tt"), secret_file=None, ready_file=None), secret)
        await tts.start()
        self.addCleanup(stop_if_running, tts)
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
            job_path, [inp], os.path.join(tmp, "out"), split_size=1))
        finished = defer.Deferred.fromCoroutine(conn.call("wait", job_id))
        await wait_for(lambda: any(a.state.value == "running" and a.kind == "map"
                                   for a in jts.jt.scheduler.attempts.values()))
        for url in ("/", f"/jobs/{job_id}", f"/api/jobs/{job_id}", "/api/workers"):
            start = time.monotonic()
            code, body, _ = await http_get(base + url)
            self.assertEqual(code, 200)
            self.assertLess(time.monotonic() - start, 0.5, url)
        self.assertEqual(json.loads(body)[0]["running"] != [], True)
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
        await children_reaped()
