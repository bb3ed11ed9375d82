"""The jobtracker's journal (``pytxmr.journal``) and what the scheduler
does with it after a restart (``Scheduler.resume``, ``map_output_held``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytxmr.jobtracker.job import JobRecord, StepPlan, job_from_plan, plan_of
from pytxmr.journal import JOURNAL_LOG_TAIL, Committed, Journal
from pytxmr.scheduler import (
    AnnounceMapOutputs,
    JobDone,
    LaunchMap,
    LaunchReduce,
    Scheduler,
    State,
)
from pytxmr.splits import Split
from pytxmr.views import task_progress


def _splits(n: int) -> list[Split]:
    return [Split(i, f"/data/in{i}.txt", 0, 100, False) for i in range(n)]


def _job() -> JobRecord:
    return JobRecord(
        id="job_20261204000000_0007", filename="/jobs/wc.py", source_path="/jt/jobs/x/job.py",
        token=b"\x01" * 32, output="/out", splits=_splits(3), num_reducers=2, map_name="map",
        reduce_name="reduce", buffer_records=None, submitted=12.5, inputs=["/data"],
        args={"n": "5"}, steps=[StepPlan(None, False, "lines"), StepPlan(1, False, "file", True)],
        owner="alice", input_files=[f"/data/in{i}.txt" for i in range(3)])


def test_a_job_and_its_tasks_come_back_from_the_journal(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, True))
    journal.step_started(job.id, 0, job.splits, 2)
    journal.task_committed(job.id, 0, "map", 1, Committed(
        "a1", {"pytxmr": {"map input records": 3}}, ("str",)))
    journal.task_committed(job.id, 0, "map", 1, Committed(  # a re-run replaces the earlier one
        "a2", {"pytxmr": {"map input records": 3}}, ("str",), 100.5, 102.25, "said hi\n"))
    journal.task_committed(job.id, 0, "reduce", 0, Committed("r0", {"pytxmr": {"x": 1}}))
    journal.close()

    again = Journal(str(tmp_path))
    again.open()
    (journaled,) = again.running_jobs().values()
    assert journaled.plan["max_attempts"] == 4 and journaled.plan["speculative"] is True
    step = journaled.steps[0]
    assert step.splits == job.splits and step.num_reducers == 2
    assert {i: c.attempt_id for i, c in step.maps.items()} == {1: "a2"}
    assert step.maps[1] == Committed("a2", {"pytxmr": {"map input records": 3}}, ("str",),
                                     100.5, 102.25, "said hi\n")
    assert step.reduces[0].counters == {"pytxmr": {"x": 1}}
    back = job_from_plan(json.loads(json.dumps(journaled.plan)), journaled)
    assert back == job
    again.job_ended(job.id)
    assert again.running_jobs() == {}


def test_the_commits_a_job_allowed_come_back_until_they_ended(tmp_path: Path) -> None:
    """A restarted jobtracker cleaned a killed job's output at once, while
    an attempt it had let commit still uploaded its part: the part landed
    in the output of the next job writing there."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, False), (job.splits, 2))
    journal.commit_allowed(job.id, "r0", "10.0.0.5", 7001)
    journal.commit_allowed(job.id, "r1", "10.0.0.6", 7002)
    journal.commit_allowed("job_gone", "r9", "10.0.0.6", 7002)  # no such job
    journal.commit_ended("r1")
    journal.close()
    again = Journal(str(tmp_path))
    again.open()
    assert again._db is not None
    # A job's records without their job are deleted as the journal opens.
    assert sorted(again._db.execute("SELECT attempt_id FROM commits")) == [("r0",)]
    assert {job_id: j.commits for job_id, j in again.running_jobs().items()} == {
        job.id: {"r0": ("10.0.0.5", 7001)}}
    again.job_ended(job.id)
    assert list(again._db.execute("SELECT attempt_id FROM commits")) == []
    again.close()


def test_a_job_and_its_first_step_go_in_together_or_not_at_all(tmp_path: Path) -> None:
    """A jobtracker killed between the two records (a tester: as it logged
    the submission) left a job without a step: it could not resume, and
    was failed without a word, nor a history, while its client had lost
    the connection."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, False), (job.splits, 2))
    (journaled,) = journal.running_jobs().values()
    assert journaled.steps[0].splits == job.splits and journaled.steps[0].num_reducers == 2
    journal.job_ended(job.id)
    assert journal._db is not None
    journal._db.execute("DROP TABLE steps")  # the step's record fails
    journal.job_started(job.id, plan_of(job, 4, False), (job.splits, 2))
    assert list(journal._db.execute("SELECT job_id FROM jobs")) == []
    journal.close()


def test_a_committed_tasks_log_is_journaled_to_its_end(tmp_path: Path) -> None:
    """A restart reads a running job's journal into memory: 64 KB logs of
    thousands of maps would be gigabytes. Their ends are kept."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, True))
    journal.step_started(job.id, 0, job.splits, 2)
    log = "".join(f"line {i}\n" for i in range(20000))
    journal.task_committed(job.id, 0, "map", 0, Committed("a1", {}, ("str",), 1.0, 2.0, log))
    (journaled,) = journal.running_jobs().values()
    kept = journaled.steps[0].maps[0].log
    assert len(kept) < JOURNAL_LOG_TAIL + 100 and kept.endswith("line 19999\n")
    assert kept.startswith("[pytxmr: the log's start is not kept")
    journal.close()


def test_a_job_at_a_later_step_still_holds_its_inputs(tmp_path: Path) -> None:
    """Back at step 2, the job runs step 2's splits and still names the files
    its first step listed (an ``--overwrite`` must spare them)."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, False))
    journal.step_started(job.id, 0, job.splits, 2)
    later = [Split(0, "/out/_temporary/step-1/part-00000", 0, 10, False)]
    journal.step_started(job.id, 1, later, 1)
    (journaled,) = journal.running_jobs().values()
    back = job_from_plan(journaled.plan, journaled)
    assert back is not None and back.step == 1 and back.splits == later
    assert back.input_files == job.input_files
    assert back.files_read() == [*job.input_files, "/out/_temporary/step-1/part-00000"]
    journal.close()


def test_a_job_whose_first_step_record_is_lost_holds_every_steps_files(tmp_path: Path) -> None:
    """The journal tolerates a failed write: without step 1's record, the
    files of every step it has are the job's (never fewer than it reads)."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, False))
    journal.step_started(job.id, 1, [Split(0, "/out/_temporary/step-1/part-00000", 0, 10, False)],
                         1)
    journal.step_started(job.id, 2, [Split(0, "/out/_temporary/step-2/part-00000", 0, 10, False)],
                         1)
    (journaled,) = journal.running_jobs().values()
    back = job_from_plan(journaled.plan, journaled)
    assert back is not None and back.step == 2
    assert back.input_files == ["/out/_temporary/step-1/part-00000",
                                "/out/_temporary/step-2/part-00000"]
    journal.close()


def test_a_job_without_a_step_is_not_resumed(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    journal.job_started("job_1", plan_of(_job(), 4, False))
    (journaled,) = journal.running_jobs().values()
    assert job_from_plan(journaled.plan, journaled) is None


def test_a_resumed_job_waits_for_its_workers_then_keeps_what_they_hold() -> None:
    s = Scheduler()
    s.worker_joined("w9", "h9", 9009, 2, 0.0)
    acts = s.resume("j", 3, 2, 1.0, done={("reduce", 1): Committed("j_r00001_0", {"u": {"n": 1}})},
                    hold_until=5.0, attempt_offset=1000, kept=[0, 2])
    assert acts == []  # held: the workers may come back with outputs
    assert s.jobs["j"].reduces[1].state is State.SUCCEEDED
    # Not counted done until their workers say so, but said to be awaited.
    assert task_progress(s.jobs["j"], "map")["awaited"] == 2
    acts = s.map_output_held("w9", "j", 2, Committed("j_m00002_0", {"u": {"n": 2}}, ("str",),
                                                      -3.0, -1.5), 2.0)
    assert s.jobs["j"].maps[2].state is State.SUCCEEDED
    kept = s.attempts["j_m00002_0"]
    assert (kept.started, kept.finished) == (-3.0, -1.5)  # as it ran, before the restart
    assert task_progress(s.jobs["j"], "map")["awaited"] == 1
    assert s.jobs["j"].starts["map"] == [-3.0] and s.jobs["j"].ends["map"] == [-1.5]
    assert s.jobs["j"].map_locations[2].wid == "w9"
    assert not [a for a in acts if isinstance(a, (LaunchMap, LaunchReduce))]
    assert s.tick(4.0) == []
    acts = s.tick(5.0)  # the grace is over: the rest runs
    assert "awaited" not in task_progress(s.jobs["j"], "map")
    launched = {(type(a).__name__, getattr(a, "index", getattr(a, "partition", None)))
                for a in acts if isinstance(a, (LaunchMap, LaunchReduce))}
    assert launched == {("LaunchMap", 0), ("LaunchMap", 1), ("LaunchReduce", 0)}
    assert all(a.attempt_id.endswith("_1000") for a in acts
               if isinstance(a, (LaunchMap, LaunchReduce)))
    # A held output reported late ends the attempt running it again.
    acts = s.map_output_held("w9", "j", 0, Committed("j_m00000_0", {}, ("str",)), 6.0)
    assert s.jobs["j"].maps[0].state is State.SUCCEEDED
    assert any(isinstance(a, AnnounceMapOutputs) for a in acts)
    earlier = s.resume("k", 1, 1, 1.0, done={("reduce", 0): Committed("k_r0", {})}, finished=True)
    assert earlier == [] and s.jobs["k"].state is State.SUCCEEDED


def test_a_resumed_job_waits_no_longer_once_its_kept_maps_are_back() -> None:
    """The grace is for workers to bring back the maps done before the
    restart: once every one is back, or if none was done, the rest runs at
    once (a resumed job sat out the whole grace, 12 s by default)."""
    s = Scheduler()
    s.worker_joined("w9", "h9", 9009, 2, 0.0)
    assert s.resume("q", 2, 1, 1.0, done={}, hold_until=50.0, kept=[0, 1]) == []
    acts = s.map_output_held("w9", "q", 0, Committed("q_m0", {}, ("str",)), 2.0)
    assert not [a for a in acts if isinstance(a, (LaunchMap, LaunchReduce))]
    acts = s.map_output_held("w9", "q", 1, Committed("q_m1", {}, ("str",)), 3.0)
    assert [a.partition for a in acts if isinstance(a, LaunchReduce)] == [0]
    acts = s.resume("n", 2, 1, 4.0, done={}, hold_until=50.0, kept=[])
    assert {a.index for a in acts if isinstance(a, LaunchMap)} == {0, 1}
    # An ended job awaits nothing: killed in the grace, its status said
    # its maps were awaited for ever (in the history too); nor does a
    # finished step.
    s.resume("k", 3, 1, 5.0, done={}, hold_until=50.0, kept=[0, 1])
    assert task_progress(s.jobs["k"], "map")["awaited"] == 2
    s.kill_job("k", 6.0)
    assert "awaited" not in task_progress(s.jobs["k"], "map")
    s.resume("f", 3, 1, 5.0, done={}, hold_until=50.0, kept=[0, 1], finished=True)
    assert "awaited" not in task_progress(s.jobs["f"], "map")


def test_a_resumed_step_whose_tasks_were_all_done_ends_at_once() -> None:
    """Its last task was committed just before the crash: nothing is left
    to run, and the step ends (a job whose next step never started goes on,
    instead of waiting forever); partly done, it does not."""
    s = Scheduler()
    done = {("reduce", i): Committed(f"j_r{i}", {}) for i in range(2)}
    acts = s.resume("j", 3, 2, 1.0, done=done, hold_until=5.0)
    assert [a for a in acts if isinstance(a, JobDone)] == [JobDone("j", State.SUCCEEDED, None)]
    assert s.jobs["j"].state is State.SUCCEEDED
    only_maps = {("map", i): Committed(f"m_m{i}", {}) for i in range(3)}
    assert JobDone("m", State.SUCCEEDED, None) in s.resume("m", 3, 0, 1.0, done=only_maps)
    del done[("reduce", 1)]
    assert not [a for a in s.resume("p", 3, 2, 1.0, done=done) if isinstance(a, JobDone)]


def test_a_job_ending_is_journaled_until_it_ended(tmp_path: Path) -> None:
    """While its output is finished or cleaned, the journal says how the job
    ended (its next start then ends it so, never resumes it); once it ended,
    nothing of it is left."""
    journal = Journal(str(tmp_path))
    journal.open()
    job = _job()
    journal.job_started(job.id, plan_of(job, 4, False))
    journal.step_started(job.id, 0, job.splits, 2)
    assert journal.running_jobs()[job.id].ending is None
    error = {"type": "Killed", "message": "killed by alice", "traceback": ""}
    journal.job_ending(job.id, "killed", error)
    journal.close()
    again = Journal(str(tmp_path))
    again.open()
    assert again.running_jobs()[job.id].ending == {"state": "killed", "error": error}
    again.job_ended(job.id)
    assert again.running_jobs() == {}
    assert again._db is not None
    assert again._db.execute("SELECT COUNT(*) FROM ending").fetchone() == (0,)


@pytest.mark.parametrize("damage", ["garbage", "directory", "foreign", "bad row"])
def test_a_journal_that_cannot_be_read_is_named(tmp_path: Path, damage: str) -> None:
    """The jobtracker failed to start with sqlite's traceback alone."""
    import sqlite3

    from pytxmr.journal import FILE, JournalError

    path = tmp_path / FILE
    if damage == "garbage":
        path.write_bytes(bytes(range(256)) * 20)
    elif damage == "directory":
        path.mkdir()
    else:
        db = sqlite3.connect(path)
        if damage == "foreign":
            db.execute("CREATE TABLE jobs (x)")
        else:
            db.close()
            journal = Journal(str(tmp_path))
            journal.open()
            journal.close()
            db = sqlite3.connect(path)
            db.execute("INSERT INTO jobs VALUES ('job_1', '{not json')")
        db.commit()
        db.close()
    journal = Journal(str(tmp_path))
    with pytest.raises(JournalError, match=rf"cannot read the journal {path} \(.+\): it is "
                                           r"damaged, or not pytxmr's. Move it aside"):
        journal.open()
        journal.running_jobs()
    journal.close()


@pytest.mark.parametrize("free", [0, 10 << 30])
def test_a_journal_that_cannot_be_opened_on_a_full_disk_is_not_called_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """SQLite says "disk I/O error" of a full disk: the message said the
    journal was damaged and to move it aside, which loses the jobs it
    would resume once space is back."""
    from pytxmr import journal

    (tmp_path / journal.FILE).mkdir()  # sqlite cannot open it
    monkeypatch.setattr(journal, "free_space", lambda path: free)
    with pytest.raises(journal.JournalError) as e:
        Journal(str(tmp_path)).open()
    if free:
        assert "it is damaged, or not pytxmr's. Move it aside" in str(e.value)
    else:
        assert "its disk is full (0 bytes free). Free some space and start again: the " \
            "journal is kept" in str(e.value)
