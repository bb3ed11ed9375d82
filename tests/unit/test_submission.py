"""A submission checked without a reactor: ``jobtracker.submission`` turns a
client's plain-data spec into a typed ``Submission`` or names what is
wrong, and ``jobtracker.job.JobRecord`` gives what workers and submitters
are sent."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pytxmr.jobtracker.__main__ import parse_args
from pytxmr.jobtracker.service import make_service
from pytxmr.jobtracker.job import JobRecord, StepPlan
from pytxmr.jobtracker.submission import (
    DEFAULT_MAX_TASKS_PER_JOB,
    Submission,
    check_failure,
    plan_tasks,
    validate_submission,
)
from pytxmr.scheduler import DEFAULT_MAX_ATTEMPTS
from pytxmr.splits import Split
from pytxmr.storage import InputFile, expand_inputs
from pytxmr.wire import PROTOCOL_VERSION, JobInit, ProtocolMismatch, SubmissionError

SPEC: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "source": "def map(k, v): ...",
                        "filename": "/jobs/wc.py", "inputs": ["/data/a.txt"], "output": "/out"}


def test_a_minimal_spec_gets_the_defaults() -> None:
    """Options a client leaves out take the documented defaults."""
    assert validate_submission(SPEC) == Submission(
        "def map(k, v): ...", "/jobs/wc.py", ("/data/a.txt",), "/out",
        max_attempts=DEFAULT_MAX_ATTEMPTS)


def test_every_option_is_carried() -> None:
    """What the client asked for is what the job gets."""
    sub = validate_submission({**SPEC, "reducers": 3, "split_size": 1 << 20, "overwrite": True,
                               "map_name": "m", "reduce_name": "r", "max_attempts": 2,
                               "speculative": True, "buffer_records": 10, "compress": "lz4"})
    assert (sub.reducers, sub.split_size, sub.overwrite, sub.map_name, sub.reduce_name,
            sub.max_attempts, sub.speculative, sub.buffer_records, sub.compress) == (
        3, 1 << 20, True, "m", "r", 2, True, 10, "lz4")


@pytest.mark.parametrize("change, message", [
    ({"inputs": []}, "no inputs given"),
    ({"inputs": ["/a", ""]}, "no inputs given"),
    ({"inputs": "/a"}, "'inputs' has the wrong type"),
    ({"output": "relative/out"}, "invalid output"),
    ({"output": "/data/a.txt"}, "also an input"),
    ({"reducers": 0}, "invalid reducers: 0"),
    ({"reducers": True}, "'reducers' has the wrong type"),
    ({"split_size": -1}, "invalid split_size"),
    ({"map_name": "not an identifier"}, "invalid map_name"),
    ({"max_attempts": 0}, "invalid max_attempts"),
    ({"buffer_records": "many"}, "'buffer_records' has the wrong type"),
    ({"compress": "zstd"}, "unknown compression codec 'zstd'"),
    ({"source": None}, "the submission has no 'source'"),
    ({"output": "https://h/out"}, "http\\(s\\) URLs are inputs only"),
    ({"output": "s3://u:pw@bucket/out"}, "a URL with credentials"),
    ({"storage_options": {"secret_key": "x"}}, "looks like a credential"),
    ({"storage_options": {"endpoint_url": 3}}, "NAME=VALUE strings"),
    # It goes to each worker in one message, which holds 640 KB: a job of
    # 700 KB of arguments was admitted and stuck holding every slot.
    ({"args": {f"a{i}": "x" * 100_000 for i in range(6)}},
     "the job's module and arguments take 600,030 bytes, more than the 524,288"),
    ({"source": "#" * 600_000}, "take 600,000 bytes"),
])
def test_a_bad_field_is_named(change: dict[str, Any], message: str) -> None:
    """The submitter learns which field is wrong, before anything runs."""
    spec = {**SPEC, **change}
    if change.get("source", "") is None:
        del spec["source"]
    with pytest.raises(SubmissionError, match=message):
        validate_submission(spec)


def test_a_dict_that_is_no_submission_is_not_called_an_old_client() -> None:
    """submit({}) was answered "the client speaks protocol None (oldest
    None) ... upgrade the older side"."""
    with pytest.raises(SubmissionError, match="names no protocol version: make it with "
                       "pytxmr.client.submission"):
        validate_submission({})


def test_urls_are_taken_as_given() -> None:
    sub = validate_submission({**SPEC, "inputs": ["s3://b/in/*.txt", "http://h/x"],
                               "output": "s3://b/out",
                               "storage_options": {"endpoint_url": "http://127.0.0.1:1"}})
    assert sub.inputs == ("s3://b/in/*.txt", "http://h/x") and sub.output == "s3://b/out"
    assert sub.storage_options == {"endpoint_url": "http://127.0.0.1:1"}


def test_another_protocol_or_a_non_dict_is_refused() -> None:
    """A client of another version is told so, not misread."""
    with pytest.raises(ProtocolMismatch, match="client speaks protocol 1"):
        validate_submission({**SPEC, "protocol": 1})
    validate_submission({**SPEC, "protocol": 3})  # the previous version: compatible
    with pytest.raises(SubmissionError, match="a submission is a dict"):
        validate_submission(["not", "a", "dict"])


ONE_STEP = [StepPlan(None, False, "lines")]


def test_splits_fill_whole_waves_of_the_slots(tmp_path: Path) -> None:
    """Without --split-size, one split per slot when the input allows."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b"word\n" * 300_000)  # 1.5 MB each
    files = expand_inputs([str(tmp_path)])
    splits, reduces = plan_tasks(files, None, None, ONE_STEP, slots=4)
    assert reduces == 4
    assert len(splits) == 4 and list(dict.fromkeys(s.path for s in splits)) == [
        str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert len(plan_tasks(files, 1 << 30, None, ONE_STEP, slots=4)[0]) == 2
    by_file = [StepPlan(None, False, "file")]
    assert len(plan_tasks(files, 1 << 20, 3, by_file, slots=4)[0]) == 2


def test_a_split_size_typo_is_refused_from_the_sizes_alone() -> None:
    """--split-size 1 instead of 1M: refused with the counts, the default's
    count and the option to change, before a split is made (a petabyte at
    one byte a split would never be made at all)."""
    files = [InputFile("/data/a.txt", 3_264_550)]
    with pytest.raises(SubmissionError) as e:
        plan_tasks(files, 1, None, ONE_STEP, slots=4)
    assert str(e.value) == (
        "the job would have 3,264,550 maps and 4 reduces, more than the 100,000 tasks a job "
        "may have (a jobtracker's --max-tasks-per-job; `run` has the default): --split-size 1 "
        "cuts 3,264,550 bytes of input into 3,264,550 splits; give a larger one, or none (the "
        "default would make 4 maps)")
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match="1,000,000,000,000,000 maps"):
            plan_tasks([InputFile("s3://b/huge", 10**15)], 1, None, ONE_STEP, slots=4)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_the_task_limit_counts_maps_and_reduces_of_every_step() -> None:
    """Maps and reduces of a step together, up to the limit itself; a later
    step's maps are the part files of the one before (its reduces, or its
    maps if it has none)."""
    files = [InputFile("/data/a.txt", 1000)]
    assert len(plan_tasks(files, 100, 2, ONE_STEP, slots=1, max_tasks=12)[0]) == 10
    with pytest.raises(SubmissionError, match="10 maps and 3 reduces, more than the 12 tasks"):
        plan_tasks(files, 100, 3, ONE_STEP, slots=1, max_tasks=12)
    with pytest.raises(SubmissionError, match=r"1 map and 200,000 reduces.*\(--reducers\)$"):
        plan_tasks(files, None, 200_000, ONE_STEP, slots=1)
    own = [StepPlan(None, False, "lines"), StepPlan(150_000, False, "file", True)]
    with pytest.raises(SubmissionError, match=r"^step 2 of the job would have 4 maps and "
                                              r"150,000 reduces.*\(the module's num_reducers\)$"):
        plan_tasks(files, None, None, own, slots=4)
    # Step 1 has 10 maps and 60 reduces; step 2 reads its 60 part files.
    two = [StepPlan(None, False, "lines"), StepPlan(None, False, "file")]
    assert plan_tasks(files, 100, 60, two, slots=1, max_tasks=120)[1] == 60
    with pytest.raises(SubmissionError, match=r"^step 2 of the job would have 60 maps and 60 "):
        plan_tasks(files, 100, 60, two, slots=1, max_tasks=119)
    map_only_first = [StepPlan(None, True, "lines"), StepPlan(None, False, "file")]
    with pytest.raises(SubmissionError, match=r"step 2 of the job would have 10 maps and 5 "
                                              r"reduces.*part files of step 1"):
        plan_tasks(files, 100, 5, map_only_first, slots=1, max_tasks=14)
    many = [InputFile(f"/data/{i}.txt", 10) for i in range(20)]
    with pytest.raises(SubmissionError, match="its 20 input files are a map each at least"):
        plan_tasks(many, None, 1, ONE_STEP, slots=1, max_tasks=20)
    # A split size to blame, but the default would be refused too: the files.
    with pytest.raises(SubmissionError, match="its 20 input files are a map each at least"):
        plan_tasks(many, 5, 1, ONE_STEP, slots=1, max_tasks=20)


def test_the_task_limit_is_the_jobtrackers_option() -> None:
    """--max-tasks-per-job reaches the jobtracker's config; the default
    leaves room for the 50,000-map job of bench/jtsim.py."""
    assert parse_args([])[0].max_tasks_per_job == DEFAULT_MAX_TASKS_PER_JOB >= 52_000
    assert parse_args(["--max-tasks-per-job", "2"])[0].max_tasks_per_job == 2
    with pytest.raises(SystemExit):
        parse_args(["--max-tasks-per-job", "1"])
    for expiry in ("0", "-1", "nan"):  # workers were lost as soon as they joined
        with pytest.raises(SystemExit):
            parse_args(["--expiry", expiry])
    from twisted.internet import reactor

    config = parse_args(["--max-tasks-per-job", "7", "--workdir", "/nonexistent"])[0]
    service = make_service(config, reactor, secret=b"s" * 32)  # not started
    assert service.jt.admission.max_tasks == 7


@pytest.mark.parametrize("error, expected", [
    ({"type": "SyntaxError", "message": "job.py, line 3: invalid syntax",
      "traceback": "child frames"}, "job.py, line 3: invalid syntax"),
    ({"type": "JobDefinitionError", "message": "JobDefinitionError: job.py: no 'map'",
      "traceback": "child frames"}, "job.py: no 'map'"),
    ({"type": "TaskProcessDied", "message": "ran longer than 30s"},
     "importing the job module took longer than 30s"),
    ({"type": "ValueError", "message": "boom", "traceback": "Traceback: user code"},
     "boom\nTraceback: user code"),
])
def test_a_failed_check_explains_itself(error: dict[str, str], expected: str) -> None:
    """Errors that name file and line drop the child's own frames; others keep the user's."""
    assert check_failure(error, 30.0) == expected


def test_a_job_record_tells_workers_and_submitters_what_they_need() -> None:
    """The init a worker gets and the result a submitter gets come from one record."""
    job = JobRecord("job_1", "/jobs/wc.py", "/work/jobs/job_1/job.py", b"t", "/out",
                    [Split(0, "/a", 0, 10, False), Split(1, "/a", 10, 20, False)], 3, "map",
                    "reduce", None, submitted=100.0, compress="lz4")
    assert job.init("src") == JobInit("job_1", "src", "/jobs/wc.py", b"t", "map", "reduce",
                                      2, 3, "/out", None, "lz4")
    assert job.running
    result = job.result(now=102.5)
    assert (result["state"], result["elapsed"], result["num_maps"], result["num_reducers"]) == (
        "running", 2.5, 2, 3)
    job.state, job.finished = "succeeded", 101.0
    assert not job.running and job.result(now=500.0)["elapsed"] == 1.0


@pytest.mark.parametrize("where, message", [
    ("job", "the job module's path '.*j\\\\xe9.py' is not UTF-8"),
    ("input", "the input '.*in\\\\xe9.txt' is not UTF-8"),
    ("output", "the output '.*out\\\\xe9' is not UTF-8"),
    ("arg", "the argument n's value '\\\\xe9' is not UTF-8"),
])
def test_a_name_that_is_not_utf8_is_refused_by_the_client(tmp_path: Path, where: str,
                                                          message: str) -> None:
    """Python holds it as surrogates (os.fsdecode), which PB's UTF-8
    strings cannot carry: PB raised a traceback from its depths."""
    from pytxmr import client

    odd = "\udce9"
    for name in ("j.py", f"j{odd}.py"):
        (tmp_path / name).write_text("def map(k, v):\n    yield v, 1\n")
    for name in ("in.txt", f"in{odd}.txt"):
        (tmp_path / name).write_text("a\n")
    job = tmp_path / (f"j{odd}.py" if where == "job" else "j.py")
    data = tmp_path / (f"in{odd}.txt" if where == "input" else "in.txt")
    out = tmp_path / (f"out{odd}" if where == "output" else "out")
    args = {"n": odd} if where == "arg" else {}
    with pytest.raises(client.ClusterError, match=message + ".*run the job with --inline"):
        client.submission(str(job), [str(data)], str(out), args=args)
    assert client.submission(str(tmp_path / "j.py"), [str(tmp_path / "in.txt")],
                             str(tmp_path / "out")).spec["output"] == str(tmp_path / "out")
