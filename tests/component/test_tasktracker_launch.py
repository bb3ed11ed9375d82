"""A tasktracker that cannot set up a job (its disk full) fails the job's
attempts as they come, so that they run elsewhere: they were left
"running" for ever, holding their slots, and the job hung (a drain of
the worker too)."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pytxmr import tasktracker
from pytxmr.child import Zygote
from pytxmr.testing.fakes import FakeJobTracker
from pytxmr.wire import AttemptResult, CallRefused, JobInit, Split
from waiting import wait_for
from wordcounts import hanging_job

JOB = "job_9"
TOKEN = b"t" * 32


class IdleTaskTracker(TestCase):
    """A tasktracker whose zygote never started (no task runs), registered
    with a FakeJobTracker; ``init_job`` sets up the job."""

    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="pytxmr-ttlaunch-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.tt = tasktracker.TaskTracker(reactor, Clock(), os.path.join(self.base, "work"), 1,
                                          zygote=Zygote(reactor))  # never started
        self.jobtracker = FakeJobTracker()
        self.tt.registered("w1", self.jobtracker)
        self.tt.store.startup_cleanup()
        self.addCleanup(self.tt.shuffle_pool.close)

    def init_job(self) -> None:
        self.tt.init_job(JobInit(JOB, "", "job.py", TOKEN, "map", "reduce", 1, 1, self.base))


class CannotSetUpTests(IdleTaskTracker):
    def setUp(self) -> None:
        super().setUp()
        # Where the job's directory goes, a file: its making fails (OSError),
        # as on a full disk.
        with open(os.path.join(self.tt.store.root, JOB), "w"):
            pass
        self.init_job()

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


class ScratchTests(IdleTaskTracker):
    """Every task's log and result went to the worker's tmpfs: once other
    programs filled it (a small /dev/shm), every task failed, "no room for
    its log and result", on a worker with a work disk of 67 GB free (a
    tester's)."""

    def test_a_tmpfs_that_others_filled_is_not_used(self) -> None:
        from pytxmr.shufflememory import ShuffleMemory
        from pytxmr.tasktracker import worker

        shm = os.path.join(self.base, "shm")
        os.mkdir(shm)
        self.tt.memory = ShuffleMemory(shm, 1 << 20)
        self.assertEqual(self.tt._scratch("a1"), (shm, "a1"))
        self.patch(worker, "free_space", lambda path: worker.SCRATCH_ROOM - 1)
        self.assertIsNone(self.tt._scratch("a1"))  # the attempt's directory


class CannotSetUpReasonTests(IdleTaskTracker):

    def test_the_reason_a_job_could_not_be_set_up_is_in_its_attempts_failure(self) -> None:
        """Said only in the tasktracker's log: the job's error did not name
        the full disk (a tester's)."""
        with open(os.path.join(self.tt.store.root, JOB), "w"):
            pass  # where the job's directory goes: its making fails
        self.init_job()
        self.tt.launch_map(JOB, f"{JOB}_m00000_0", Split(0, "/nowhere", 0, 10, False))
        [(_, error)] = self.jobtracker.named("attempt_failed")
        self.assertRegex(error.message, r"the job could not be set up on this tasktracker "
                                        r"\(\[Errno 17\] File exists: .*job_9")
        self.tt.destroy_job(JOB)
        self.assertEqual(self.tt._not_set_up, {})


class CrashTests(IdleTaskTracker):
    """A fault of the tasktracker's own while it runs an attempt (here: a
    zygote that is not running) fails the attempt: it stayed live on the
    worker for ever, its slot taken, and its heartbeats named it live."""

    def setUp(self) -> None:
        super().setUp()
        self.init_job()

    async def test_the_attempt_fails_and_leaves(self) -> None:
        self.tt.launch_map(JOB, f"{JOB}_m00000_0", Split(0, "/nowhere", 0, 10, False))
        await task.deferLater(reactor, 0)
        [(aid, error)] = self.jobtracker.named("attempt_failed")
        self.assertEqual((aid, error.type), (f"{JOB}_m00000_0", "TaskTrackerError"))
        self.assertIn("RuntimeError: the zygote is not running", error.message)
        self.assertEqual(self.tt.attempts, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


SLEEPER = hanging_job("printed")


class RunningTaskTracker(TestCase):
    """A tasktracker with a running zygote, registered with a fake
    jobtracker (``jobtracker_type``), and a job of ``source`` on one line."""

    timeout = 60
    source = ""
    jobtracker_type: type[FakeJobTracker] = FakeJobTracker

    async def setUp(self) -> None:  # type: ignore[override]
        base = tempfile.mkdtemp(prefix="pytxmr-ttrun-")
        self.addCleanup(shutil.rmtree, base, True)
        zygote = Zygote(reactor)
        zygote.start()
        self.addCleanup(zygote.stop)
        self.tt = tasktracker.TaskTracker(reactor, reactor, os.path.join(base, "work"), 1,
                                          zygote=zygote)
        self.jobtracker = self.jobtracker_type()
        self.tt.registered("w1", self.jobtracker)
        self.tt.store.startup_cleanup()
        self.addCleanup(self.tt.shuffle_pool.close)
        self.tt.init_job(JobInit(JOB, self.source, "job.py", TOKEN, "map", "reduce", 1, 1,
                                 base))
        self.addCleanup(self.tt.destroy_job, JOB)
        self.input = os.path.join(base, "in.txt")
        with open(self.input, "w") as f:
            f.write("one\n")

    def map_only(self, source: str = "def map(offset, line):\n    yield offset, line\n",
                 out: str | None = None) -> tuple[str, str]:
        """A map-only job of ``source`` writing ``out``, by default a local
        output (with no ``_temporary``), and its attempt, launched: (the
        output, the attempt)."""
        if out is None:
            out = os.path.join(os.path.dirname(self.input), "out")
            os.mkdir(out)
        self.tt.init_job(JobInit("job_8", source, "job.py", TOKEN, "map", "reduce", 1, 0, out))
        self.addCleanup(self.tt.destroy_job, "job_8")
        aid = "job_8_m00000_0"
        self.tt.launch_map("job_8", aid, Split(0, self.input, 0, 4, False))
        return out, aid


class TaskOutputTests(RunningTaskTracker):
    """A running attempt's output so far, and a killed attempt's: each went
    to the jobtracker only with a result, which neither has."""

    source = SLEEPER

    async def test_running_then_killed(self) -> None:
        aid = f"{JOB}_m00000_0"
        self.tt.launch_map(JOB, aid, Split(0, self.input, 0, 4, False))
        await wait_for(lambda: "printed one" in (self.tt.running_log(aid) or ""))
        self.assertIsNone(self.tt.running_log(f"{JOB}_m00001_0"))
        self.tt.kill_attempt(JOB, aid)
        await wait_for(lambda: self.jobtracker.named("killed_log"))
        [(killed, log)] = self.jobtracker.named("killed_log")
        self.assertEqual(killed, aid)
        self.assertIn("printed one\n", log)
        self.assertEqual(self.jobtracker.named("attempt_failed"), [])

    async def test_settled_waits_for_a_killed_attempt_to_send_its_output(self) -> None:
        """A drained tasktracker stopped in the tick its attempts were
        killed: their output never left it (a tester)."""
        aid = f"{JOB}_m00000_0"
        self.tt.launch_map(JOB, aid, Split(0, self.input, 0, 4, False))
        await wait_for(lambda: "printed one" in (self.tt.running_log(aid) or ""))
        self.tt.kill_attempt(JOB, aid)
        await self.tt.settled(30)
        [(killed, _)] = self.jobtracker.named("killed_log")
        self.assertEqual(killed, aid)
        await self.tt.settled(30)  # nothing running: at once


QUICK = """\
def map(offset, line):
    yield line, 1

def reduce(key, values):
    yield key, sum(values)
"""


class RefusesResults(FakeJobTracker):
    """Refuses every result, as a jobtracker refuses a malformed one."""

    async def attempt_done(self, attempt_id: str, result: AttemptResult) -> None:
        raise CallRefused("BadMessage: counters must map group -> name -> int")


class ReportTests(RunningTaskTracker):

    source = QUICK
    jobtracker_type = RefusesResults

    async def test_a_refused_result_fails_its_attempt_with_the_reason(self) -> None:
        """It was dropped: the heartbeats then failed the attempt as a result
        never received, hiding why."""
        aid = f"{JOB}_m00000_0"
        self.tt.launch_map(JOB, aid, Split(0, self.input, 0, 4, False))
        await wait_for(lambda: self.jobtracker.named("attempt_failed"))
        [(failed, error)] = self.jobtracker.named("attempt_failed")
        self.assertEqual((failed, error.type), (aid, "ReportError"))
        self.assertIn("the jobtracker refused it: BadMessage: counters must map", error.message)
        self.assertEqual(self.tt.attempts, {})

    async def test_an_attempt_that_cannot_be_set_up_fails(self) -> None:
        """Its launch was refused after the attempt was made: live here for
        ever, with nothing running it."""
        def broken(attempt: object) -> str:
            raise OSError(28, "No space left on device")

        self.tt._data_path = broken  # type: ignore[method-assign]
        aid = f"{JOB}_m00000_0"
        self.tt.launch_map(JOB, aid, Split(0, self.input, 0, 4, False))
        await task.deferLater(reactor, 0)
        [(failed, error)] = self.jobtracker.named("attempt_failed")
        self.assertEqual((failed, error.type), (aid, "LaunchFailed"))
        self.assertIn("OSError: [Errno 28] No space left on device", error.message)
        self.assertEqual(self.tt.attempts, {})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class KillsAsItLetsCommit(FakeJobTracker):
    """Lets an attempt commit, and ends its job as the answer travels."""

    tt: tasktracker.TaskTracker

    async def may_commit(self, attempt_id: str) -> bool:
        allowed = await super().may_commit(attempt_id)
        self.tt.destroy_job(attempt_id.rsplit("_", 2)[0])
        return allowed


class CommitEndedTests(RunningTaskTracker):
    """The jobtracker cleans a killed job's output once the attempts it let
    commit said they no longer write it: one cleaned at once had a late
    upload land over the next job's output (a tester's)."""

    source = QUICK
    jobtracker_type = KillsAsItLetsCommit

    async def test_an_attempt_let_commit_and_killed_says_it_ended(self) -> None:
        self.jobtracker.tt = self.tt  # type: ignore[attr-defined]
        out, aid = self.map_only()
        await wait_for(lambda: self.jobtracker.named("commit_ended"))
        self.assertEqual(self.jobtracker.named("commit_ended"), [(aid,)])
        self.assertEqual([n for n in os.listdir(out) if n.startswith("part-")], [])
        self.assertEqual(self.jobtracker.named("attempt_done"), [])


class LosesItAsItLetsCommit(FakeJobTracker):
    """Lets an attempt commit, and is lost (it restarts) as the commit runs."""

    tt: tasktracker.TaskTracker

    async def may_commit(self, attempt_id: str) -> bool:
        # Its heartbeats say it commits from the question on.
        self.committing_asked = set(self.tt.committing)
        allowed = await super().may_commit(attempt_id)
        self.tt.forget_everything()
        return allowed


class CommitAcrossARestartTests(RunningTaskTracker):
    """A jobtracker restarted as a killed job's attempt committed cleaned
    the output at once: the part landed after. A restarted jobtracker now
    waits for what the worker says as it registers again."""

    source = QUICK
    jobtracker_type = LosesItAsItLetsCommit

    async def test_a_commit_that_ended_meanwhile_is_told_to_the_next_jobtracker(
            self) -> None:
        """Here it ends at once (the attempt was killed as the jobtracker
        was lost): the next jobtracker hears of it as the worker registers."""
        self.jobtracker.tt = self.tt  # type: ignore[attr-defined]
        out, aid = self.map_only()
        await wait_for(lambda: self.jobtracker.named("may_commit"))
        await wait_for(lambda: not self.tt.committing)
        self.assertEqual(self.jobtracker.committing_asked, {aid})  # type: ignore[attr-defined]
        self.assertEqual(self.jobtracker.named("commit_ended"), [])  # the lost one
        restarted = FakeJobTracker()
        self.tt.registered("w7", restarted)
        self.assertEqual(restarted.named("commit_ended"), [(aid,)])
        self.tt.registered("w8", FakeJobTracker())  # told once
        self.assertEqual([n for n in os.listdir(out) if n.startswith("part-")], [])

    async def test_a_commit_under_way_is_in_the_registration(self) -> None:
        """What ``Registration.committing`` carries."""
        self.jobtracker.tt = self.tt  # type: ignore[attr-defined]
        entered: defer.Deferred[None] = defer.Deferred()
        going_on: defer.Deferred[None] = defer.Deferred()

        async def slow_commit(attempt: object, result: dict[str, object]) -> dict[str, object]:
            entered.callback(None)
            await going_on
            return result

        self.tt._commit_allowed = slow_commit  # type: ignore[method-assign,assignment]
        self.tt.registered("w1", FakeJobTracker())
        _, aid = self.map_only()
        await entered
        self.assertEqual(self.tt.committing, {aid})
        going_on.callback(None)
        await wait_for(lambda: not self.tt.committing)


class UnfinishedPartTests(RunningTaskTracker):
    """A failed job's output kept ``_temporary/ATTEMPT/part-NNNNN``: an
    attempt that began its part as the job ended made ``_temporary`` again
    after the end had removed it (a tester's)."""

    source = SLEEPER

    async def test_a_killed_attempt_s_part_goes_with_what_it_made_again(self) -> None:
        out, aid = self.map_only(SLEEPER.split("\n\n\ndef reduce")[0])  # map-only
        await wait_for(lambda: "printed one" in (self.tt.running_log(aid) or ""))
        self.assertTrue(os.path.isdir(os.path.join(out, "_temporary", aid)))
        self.tt.destroy_job("job_8")  # the job ended
        await self.tt.settled(30)
        await wait_for(lambda: os.listdir(out) == [])

    async def test_a_failed_attempt_s_part_goes_while_its_job_runs(self) -> None:
        out, aid = self.map_only("def map(offset, line):\n    raise ValueError('no')\n")
        await wait_for(lambda: self.jobtracker.named("attempt_failed"))
        self.assertEqual(os.listdir(out), ["_temporary"])  # the job's, while it runs
        self.assertEqual(os.listdir(os.path.join(out, "_temporary")), [])


class LateUploadTests(RunningTaskTracker):
    """A killed job's part that landed after its abort is withdrawn, by the
    registration that was let commit only: a restarted jobtracker gives the
    same worker ids again, and may have resumed the job, whose new attempt
    commits that part anew."""

    source = QUICK

    async def setUp(self) -> None:  # type: ignore[override]
        import threading

        from pytxmr import output

        self.uploading = threading.Event()
        self.landed = threading.Event()
        self.withdrawn: list[int] = []

        def commit_part(*args: object) -> str:
            self.uploading.set()
            self.landed.wait(30)
            return "memory://bucket/out/part-00000"

        self.patch(output, "commit_part", commit_part)
        self.patch(output, "withdraw_part",
                   lambda out, index, opts, marked: self.withdrawn.append(index))
        await super().setUp()

    async def upload_held(self) -> None:
        self.map_only(out="memory://bucket/out")
        await wait_for(self.uploading.is_set)

    async def test_a_part_of_a_job_killed_as_it_uploaded_is_withdrawn(self) -> None:
        await self.upload_held()
        self.tt.destroy_job("job_8")
        self.landed.set()
        await wait_for(lambda: self.withdrawn)
        self.assertEqual(self.withdrawn, [0])

    async def test_one_uploaded_as_the_jobtracker_restarted_is_left(self) -> None:
        await self.upload_held()
        self.tt.forget_everything()
        self.tt.registered("w1", FakeJobTracker())  # the same id, from another jobtracker
        self.landed.set()
        await wait_for(lambda: not self.tt.committing)
        await task.deferLater(reactor, 0.1)
        self.assertEqual(self.withdrawn, [])
