"""A jobtracker that dies in the narrow windows around a job's end or
between its steps: its next start on the same work directory finishes
what was being finished, never deletes a result, never runs again a job
that was over, and never forgets one.

A real daemon killed at those exact points is hard to time; here the
jobtracker runs in this process with fake tasktrackers, a BaseException
stands where its process died (nothing after it runs, its journal is
closed as the process's death closes it), and a second JobTracker starts
on the same work directory (tests/integration/test_resume.py kills real
daemons in the wider windows)."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from twisted.internet import defer, reactor, task

from pytxmr import client, output
from pytxmr.jobtracker import JobTracker
from pytxmr.jobtracker.admission import OUTPUT_MARKER
from pytxmr.testing.fakes import FakeWorker
from pytxmr.wire import AttemptResult, SubmissionError, step_job_id
from test_web import JobTrackerCase, launched
from waiting import wait_for

TWO_STEPS = """\
from pytxmr import Step, combiners

def words(offset, line):
    for word in line.split():
        yield word, 1

steps = [Step(map=words, reduce=combiners.sum), Step(reduce=combiners.sum)]
"""


class Died(BaseException):
    """Where the jobtracker's process died."""


def map_counts(records: int) -> AttemptResult:
    return AttemptResult({"pytxmr": {"map input records": records}}, ("str",))


REDUCED = AttemptResult({"pytxmr": {"reduce output records": 1}})


class RestartWindowTests(JobTrackerCase):

    def die(self, jt: JobTracker) -> None:
        """What a SIGKILL leaves: the work directory and journal as they
        are; nothing more is written, and its jobs' outputs are let go
        (their locks were the process's)."""
        jt._periodic_loop.stop()
        jt.journal.close()
        for job_id in list(jt.jobs):
            jt.admission.release_output(job_id)
        jt._ending.clear()  # what it was ending never ends: its stop waits for none

    def restart(self, resume_grace: float = 0) -> JobTracker:
        jt = JobTracker(reactor, reactor, self.workdir, expiry=600, checkers=self.zygote,
                        resume_grace=resume_grace)
        jt.start()

        async def stop() -> None:
            await jt.stop()
            await jt.history.flush()

        self.addCleanup(stop)
        return jt

    def dies_once(self, obj: Any, name: str) -> Callable[..., Any]:
        """Patch ``obj.name`` to die on its first call, as itself after."""
        real = getattr(obj, name)
        calls = []

        def once(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:
                raise Died(name)
            return real(*args, **kwargs)

        self.patch(obj, name, once)
        return once

    def run_step(self, jt: JobTracker, wid: str, worker: FakeWorker, parts_in: str,
                 records: int, last: Callable[[], None] | None = None) -> None:
        """Every launched map, then every reduce (each committing a part
        file in ``parts_in``, as a reduce does); ``last`` runs just before
        the last reduce's report (the jobtracker may die on it)."""
        for aid in launched(worker, "launch_map"):
            jt.attempt_done(wid, aid, map_counts(records))
        reduces = [args for args in worker.named("launch_reduce")]
        self.assertTrue(reduces)
        os.makedirs(parts_in, exist_ok=True)
        for n, (_, aid, partition, _) in enumerate(reduces):
            with open(os.path.join(parts_in, output.part_name(partition)), "w") as f:
                f.write(f"w{partition}\t1\n")
            self.assertTrue(jt.may_commit(wid, aid))
            if n == len(reduces) - 1 and last is not None:
                last()
            jt.attempt_done(wid, aid, REDUCED)

    def out(self) -> str:
        return os.path.join(self.tmp, "out")

    def parts(self) -> list[str]:
        return sorted(n for n in os.listdir(self.out()) if n.startswith("part-"))

    async def test_a_job_that_died_writing_success_is_finished_not_deleted(self) -> None:
        """All its reduces committed, the jobtracker died finishing the
        output: the next start writes _SUCCESS, keeps the parts, records
        the job as succeeded (with its counters) and a waiter gets it."""
        wid, worker = self.add_worker()
        job_id = await self.submit()
        self.dies_once(output, "finish_output")
        with self.assertRaises(Died):
            self.run_step(self.jt, wid, worker, self.out(), 2)
        self.die(self.jt)
        parts = self.parts()
        jt = self.restart()
        result = await jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded")
        self.assertEqual(result["counters"]["pytxmr"]["map input records"], 2)
        self.assertEqual(self.parts(), parts)
        self.assertTrue(os.path.exists(os.path.join(self.out(), output.SUCCESS)))
        self.assertEqual(jt.journal.running_jobs(), {})
        self.assertEqual(jt.list_jobs()[0]["state"], "succeeded")

    async def test_a_job_whose_last_reduce_was_committed_ends_at_the_next_start(self) -> None:
        """The jobtracker died after journaling the last reduce's commit,
        before the job's end: nothing is left to run, and the job ends."""
        wid, worker = self.add_worker()
        job_id = await self.submit()
        self.dies_once(self.jt, "_job_done")
        with self.assertRaises(Died):
            self.run_step(self.jt, wid, worker, self.out(), 2)
        self.die(self.jt)
        jt = self.restart()
        _, again = self.add_worker(jt)
        result = await jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded")
        self.assertEqual(launched(again, "launch_map") + launched(again, "launch_reduce"), [])
        self.assertEqual(len(self.parts()), 2)
        self.assertTrue(os.path.exists(os.path.join(self.out(), output.SUCCESS)))

    async def test_a_killed_job_that_died_cleaning_up_is_not_run_again(self) -> None:
        """Killed by its user, the jobtracker died emptying its output: the
        next start empties it and records it killed; no task runs again."""
        wid, worker = self.add_worker()
        job_id = await self.submit()
        for aid in launched(worker, "launch_map"):
            self.jt.attempt_done(wid, aid, map_counts(2))
        self.dies_once(output, "abort_output")
        with self.assertRaises(Died):
            self.jt.kill(job_id)
        self.die(self.jt)
        with open(os.path.join(self.out(), "part-00000"), "w") as f:
            f.write("a committed part of the killed job\n")
        jt = self.restart()
        _, again = self.add_worker(jt)
        result = await jt.wait(job_id)
        self.assertEqual(result["state"], "killed")
        self.assertEqual(self.parts(), [])
        self.assertEqual(launched(again, "launch_map") + launched(again, "launch_reduce"), [])
        self.assertEqual(jt.journal.running_jobs(), {})

    async def test_a_job_that_died_between_its_steps_goes_on_with_the_next(self) -> None:
        """Step 1's last reduce committed, the jobtracker died before step 2
        started: the next start starts step 2, and the job's counters hold
        step 1's maps as well as step 2's."""
        wid, worker = self.add_worker()
        job_id = await self.submit(job_path=self.job_file("two_steps.py", TWO_STEPS))
        self.dies_once(self.jt, "_next_step")
        step_1_parts = os.path.join(self.out(), output.TEMPORARY, "step-1")
        with self.assertRaises(Died):
            self.run_step(self.jt, wid, worker, step_1_parts, 2)
        self.die(self.jt)
        jt = self.restart(resume_grace=1.0)
        await task.deferLater(reactor, 0.3, lambda: None)  # step 2's listing is long done
        wid2, again = self.add_worker(jt)  # back within the grace: step 2 counts its slots
        await wait_for(lambda: launched(again, "launch_map"))
        self.assertEqual(jt.jobs[job_id].num_reducers, 2)
        self.run_step(jt, wid2, again, self.out(), 5)
        result = await jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded", result)
        maps = len(launched(worker, "launch_map")) * 2 + len(launched(again, "launch_map")) * 5
        self.assertEqual(result["counters"]["pytxmr"]["map input records"], maps)
        self.assertEqual({args[0] for args in again.named("launch_map")},
                         {step_job_id(job_id, 1)})

    async def test_a_job_that_died_before_its_history_was_written_ends_again(self) -> None:
        """Its output final and its work directory gone, the jobtracker died
        before the history had it: the next start ends it again (the
        output stays as it is), and the history has it."""
        wid, worker = self.add_worker()
        job_id = await self.submit()
        never: defer.Deferred[None] = defer.Deferred()
        self.patch(self.jt.history, "record", lambda detail, logs: never)
        self.run_step(self.jt, wid, worker, self.out(), 2)
        self.assertTrue(self.jt.jobs[job_id].finishing)  # its output is still its own
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "jobs", job_id)))
        self.die(self.jt)
        jt = self.restart()
        result = await jt.wait(job_id)
        self.assertEqual(result["state"], "succeeded")
        self.assertEqual(len(self.parts()), 2)
        self.assertEqual(jt.history.summaries[job_id]["state"], "succeeded")

    async def test_a_stop_waits_for_the_ends_it_caused(self) -> None:
        """SIGTERM fails the running jobs; the journal is closed only once
        their outputs are emptied and the history has them, so the next
        start has nothing of them to do again."""
        self.add_worker()
        job_id = await self.submit()
        writing: defer.Deferred[None] = defer.Deferred()
        record = self.jt.history.record

        def held(detail: Any, logs: Any) -> defer.Deferred[None]:
            return record(detail, logs).addCallback(lambda _: writing)

        self.patch(self.jt.history, "record", held)
        stopped = self.jt.stop()
        self.assertFalse(stopped.called)
        writing.callback(None)
        await stopped
        jt = self.restart()
        self.assertEqual(jt.journal.running_jobs(), {})
        self.assertEqual(jt.history.summaries[job_id]["state"], "failed")

    async def test_run_s_own_stopped_workers_leave_no_commit_to_wait_for(self) -> None:
        """An interrupted ``run`` stops its tasktrackers, then its
        jobtracker, as a reduce let commit had committed its part but not
        said so: the jobtracker left the job ending for its next start,
        which ``run``'s never has, and the output kept ``_temporary`` and
        the part (once in 60 Ctrl-C's). Its workers stopped in this
        process, nothing of theirs commits any more (a question to commit
        still on its way is refused): the output is cleaned. A daemon's
        stop still leaves such a job to its next start."""
        for stopped_first in (True, False):
            out = os.path.join(self.tmp, f"out-{stopped_first}")
            wid, worker = self.add_worker()
            await self.submit(out=os.path.basename(out))
            for aid in launched(worker, "launch_map"):
                self.jt.attempt_done(wid, aid, map_counts(2))
            _, aid, partition, _ = next(iter(worker.named("launch_reduce")))
            self.assertTrue(self.jt.may_commit(wid, aid))
            with open(os.path.join(out, output.part_name(partition)), "w") as f:
                f.write("w\t1\n")  # its commit landed; its report never comes
            os.makedirs(os.path.join(out, output.TEMPORARY, "attempt"), exist_ok=True)
            if stopped_first:
                self.jt.workers_stopped()
                # Another worker's question, on its way as it stopped (seen
                # in a stopped run's log): nobody is there to commit.
                for _, late, _, _ in list(worker.named("launch_reduce"))[1:]:
                    self.assertFalse(self.jt.may_commit(wid, late))
            await self.jt.stop()
            left = sorted(os.listdir(out))
            if stopped_first:
                self.assertEqual(left, [output.OUTPUT_MARK])
                self.jt = self.restart()
            else:
                self.assertIn(output.part_name(partition), left)

    async def test_an_output_that_cannot_be_finished_fails_the_job(self) -> None:
        """A store's own error (botocore's, not an OSError) finishing the
        output: the job fails with it, its waiters hear so, and a stop does
        not wait for it forever."""
        wid, worker = self.add_worker()
        job_id = await self.submit()

        def unreachable(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("Could not connect to the endpoint URL")

        self.patch(output, "finish_output", unreachable)
        self.run_step(self.jt, wid, worker, self.out(), 2)
        result = await self.jt.wait(job_id)
        self.assertEqual(result["state"], "failed")
        self.assertIn("Could not connect", result["error"]["message"])
        await self.jt.stop()

    async def test_an_interrupted_object_store_output_is_held_while_it_is_cleaned(
            self) -> None:
        """A job the journal does not have (it died in its admission) left an
        S3 output the next start cleans in a thread: meanwhile no submission
        may prepare an output in it."""
        out = "s3://bucket/interrupted"
        interrupted = os.path.join(self.workdir, "jobs", "job_20261205000000_0042")
        os.makedirs(interrupted)
        with open(os.path.join(interrupted, OUTPUT_MARKER), "w") as f:
            f.write(out)
        cleaned = threading.Event()

        def cleaning(path: str, opts: Any = None) -> bool:
            cleaned.wait(30)
            return True

        self.patch(output, "abort_unfinished", cleaning)
        jt = self.restart()
        spec = client.submission(self.job_file(), [self.inputs], out + "/inner").spec
        try:
            with self.assertRaises(SubmissionError) as refused:
                await jt.submit(spec)
        finally:
            cleaned.set()
        self.assertIn("of the interrupted job job_20261205000000_0042", str(refused.exception))
        await wait_for(lambda: not jt.admission._claimed)
