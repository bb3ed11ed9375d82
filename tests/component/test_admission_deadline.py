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
