"""A tasktracker that cannot set up a job (its disk full) fails the job's
attempts as they come, so that they run elsewhere: they were left
"running" for ever, holding their slots, and the job hung (a drain of
the worker too)."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pytxmr import tasktracker
from pytxmr.child import Zygote
from pytxmr.testing.fakes import FakeJobTracker
from pytxmr.wire import JobInit, Split

JOB = "job_9"
TOKEN = b"t" * 32


class CannotSetUpTests(TestCase):
    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="pytxmr-ttlaunch-")
        self.addCleanup(shutil.rmtree, base, True)
        self.tt = tasktracker.TaskTracker(reactor, Clock(), os.path.join(base, "work"), 1,
                                          zygote=Zygote(reactor))  # never started
        self.jobtracker = FakeJobTracker()
        self.tt.registered("w1", self.jobtracker)
        self.tt.store.startup_cleanup()
        self.addCleanup(self.tt.shuffle_pool.close)
        # Where the job's directory goes, a file: its making fails (OSError),
        # as on a full disk.
        with open(os.path.join(self.tt.store.root, JOB), "w"):
            pass
        self.tt.init_job(JobInit(JOB, "", "job.py", TOKEN, "map", "reduce", 1, 1, base))

    async def test_its_attempts_fail_as_they_come(self) -> None:
        self.assertNotIn(JOB, self.tt.jobs)
        self.tt.launch_map(JOB, f"{JOB}_m00000_0", Split(0, "/nowhere", 0, 10, False))
        self.tt.launch_reduce(JOB, f"{JOB}_r00000_0", 0, [])
        await task.deferLater(reactor, 0)
        failed = self.jobtracker.named("attempt_failed")
        self.assertEqual([a for a, _ in failed], [f"{JOB}_m00000_0", f"{JOB}_r00000_0"])
        for _, error in failed:
            self.assertEqual(error.type, "LaunchFailed")
            self.assertIn("the job could not be set up on this tasktracker", error.message)
        self.assertEqual(self.tt.attempts, {})
