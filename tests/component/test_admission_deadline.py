"""A submission whose inputs cannot be listed in time (a store that
accepts connections and never answers) is refused, and the jobtracker's
admission goes on: the listing, in a thread, is the jobtracker's only
wait on the stores before a job is admitted."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from pytxmr import client
from pytxmr.bundle import BundleStore
from pytxmr.jobtracker import admission
from pytxmr.jobtracker.admission import LISTING_TIMEOUT, Admission
from pytxmr.wire import SubmissionError


class ListingDeadlineTests(TestCase):

    timeout = 30

    async def test_a_listing_that_never_ends_refuses_the_job(self) -> None:
        work = tempfile.mkdtemp(prefix="pytxmr-admission-")  # not trial's mktemp: the cwd
        self.addCleanup(shutil.rmtree, work, True)
        job = os.path.join(work, "job.py")
        with open(job, "w") as f:
            f.write("def map(k, line):\n    yield line, 1\n")
        entered, release = threading.Event(), threading.Event()

        def never_answers(sub: object, busy: object) -> list[object]:
            entered.set()
            release.wait(20)
            return []

        self.patch(admission, "_listed_inputs", never_answers)
        self.addCleanup(release.set)
        clock = task.Clock()
        adm = Admission(reactor, clock, work, None, 30.0,  # type: ignore[arg-type]
                        BundleStore(os.path.join(work, "bundles")))
        spec = client.submission(job, ["s3://bucket/in/*.txt"], "s3://bucket/out").spec
        admitting = defer.Deferred.fromCoroutine(adm.admit(spec, 2, lambda: []))
        for _ in range(1000):  # the reactor's thread pool runs the listing
            if entered.is_set():
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(entered.is_set())
        clock.advance(LISTING_TIMEOUT - 1)
        self.assertNoResult(admitting)
        clock.advance(1)
        refused = self.failureResultOf(admitting, SubmissionError)
        self.assertEqual(str(refused.value),
                         "could not list the inputs within 60s: does the store of "
                         "s3://bucket/in/*.txt answer?")
        jobs = os.path.join(work, "jobs")  # nothing of the job was made
        self.assertEqual(os.listdir(jobs) if os.path.isdir(jobs) else [], [])


class WorkDirectoryTests(TestCase):

    timeout = 30

    async def test_a_job_whose_files_cannot_be_written_names_the_work_directory(self) -> None:
        """A full disk: the submitter was told "[Errno 28] No space left on
        device", which named neither the disk nor whose it is."""
        work = tempfile.mkdtemp(prefix="pytxmr-admission-")
        self.addCleanup(shutil.rmtree, work, True)
        job, data = os.path.join(work, "job.py"), os.path.join(work, "in.txt")
        with open(job, "w") as f:
            f.write("def map(k, line):\n    yield line, 1\n")
        with open(data, "w") as f:
            f.write("a\n")
        with open(os.path.join(work, "jobs"), "w"):  # no directory can be made there
            pass
        adm = Admission(reactor, task.Clock(), work, None, 30.0,  # type: ignore[arg-type]
                        BundleStore(os.path.join(work, "bundles")))
        spec = client.submission(job, [data], os.path.join(work, "out")).spec
        with self.assertRaises(SubmissionError) as refused:
            await adm.admit(spec, 2, lambda: [])
        self.assertIn(f"the jobtracker cannot write the job's files in its work directory "
                      f"{work}: ", str(refused.exception))
        self.assertFalse(os.path.exists(os.path.join(work, "out")))
