"""The status site's pure parts: which endpoints need a password, the web
options, the bounds of task logs and replies, the job history's loading
and the timeline's lanes. The site itself, serving a real jobtracker, is in
tests/integration/test_web.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pytxmr import pages
from pytxmr.jobtracker import Config
from pytxmr.jobtracker.__main__ import parse_args
from pytxmr.history import JobHistory
from pytxmr.tasklog import LogKeeper, format_logs, logs_reply, read_tail
from pytxmr.web import beyond_loopback


def fresh_dir(case: Any) -> str:
    """A temporary directory removed after the test."""
    path = tempfile.mkdtemp(prefix="pytxmr-web-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


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
        def config(*args: str) -> Config:
            return parse_args(list(args))[0]

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

    def test_logs_of_attempts_restored_after_a_restart_say_so(self) -> None:
        """An attempt the journal restored has no worker and no log: said as
        such, not as "worker  on ?" with "[no output]"."""
        attempts = [{"id": "j_1_r00000_0", "kind": "reduce", "index": 0, "wid": "",
                     "state": "succeeded"},
                    {"id": "j_1_r00001_1000", "kind": "reduce", "index": 1, "wid": "w3",
                     "host": "10.0.0.2", "state": "succeeded"}]
        text = format_logs(logs_reply(attempts, {}))
        self.assertEqual(text.splitlines(), [
            "==> j_1_r00000_0 (reduce 0, succeeded, before the jobtracker restarted) <==",
            "[its log was not kept across the restart]", "",
            "==> j_1_r00001_1000 (reduce 1, succeeded, worker w3 on 10.0.0.2) <==",
            "[no output]"])
        view = {"job_id": "j_1", "submitted": 0.0, "steps": 1, "attempts": [
            dict(a, started=1.0, duration=0.5, error=None) for a in attempts]}
        table = pages.attempts_table(view)
        self.assertIn('<td> <span class="host">before the jobtracker restarted</span></td>', table)
        self.assertIn('<td>w3 <span class="host">10.0.0.2</span></td>', table)

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
        self.assertEqual(list(h.summaries), [])

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
        view = {"submitted": 100.0, "finished": 101.0, "attempts": attempts}
        svg = pages.timeline_svg(view, 101.0)
        ys = re.findall(r'class="bar map succeeded" x="[\d.]+" y="([\d.]+)"', svg)
        self.assertEqual(len(set(ys)), 2)
