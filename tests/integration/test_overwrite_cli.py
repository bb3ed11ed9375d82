"""``--overwrite`` refusals as a user meets them: through ``run --inline``,
``run`` and ``submit``, exit 2 with the files checked intact afterwards
(the pure check is unit-tested in tests/unit/test_overwrite.py)."""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest
from procs import Cluster, base_env, run_cli, wait_for
from test_cluster import barrier_job
from trees import snapshot
from wordcounts import WORDCOUNT, assert_committed, assert_ok

from pytxmr.output import OUTPUT_MARK


def cli_refuses(args: list[str], cwd: Path, home: Path, match: str) -> None:
    before = snapshot(cwd)
    rc, out, err = run_cli(*args, env=base_env(home), cwd=cwd)
    assert rc == 2, f"exit {rc}\n{out}\n{err}"
    assert match in err and "nothing was deleted" in err, err
    assert "Traceback" not in err, err
    assert snapshot(cwd) == before


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "words.txt").write_text("a b a\n")
    (ws / "sales.csv").write_text("id,amount\n1,10\n")
    (ws / "job.py").write_text(WORDCOUNT.read_text())
    return ws


@pytest.mark.parametrize("mode", [["run", "--inline"], ["run"]])
def test_run_refuses_unsafe_overwrites(workspace: Path, mode: list[str]) -> None:
    """`run` and `run --inline`: a data file, a workspace holding the input,
    a directory of unrelated files; exit 2 and nothing touched."""
    home = workspace.parent
    base = [*mode, "job.py", "data/words.txt", "--overwrite", "-o"]
    cli_refuses([*base, "sales.csv"], workspace, home, "not a directory")
    cli_refuses([*base, "."], workspace, home, "the job's input")
    cli_refuses([*base, "data"], workspace, home, "the job's input")
    (workspace / "reports").mkdir()
    (workspace / "reports" / "q3.txt").write_text("numbers")
    cli_refuses([*base, "reports"], workspace, home, "not a pytxmr output")


def test_submit_refuses_unsafe_overwrites(cluster: Cluster) -> None:
    """The jobtracker refuses at submission, before the module is even checked,
    and keeps serving."""
    ws = cluster.base / "overwrite-ws"
    (ws / "data").mkdir(parents=True)
    data = ws / "data" / "words.txt"
    data.write_text("a b a\n")
    sales = ws / "sales.csv"
    sales.write_text("id,amount\n1,10\n")
    before = snapshot(ws)
    for out, match in ((sales, "not a directory"), (ws, "the job's input"),
                       (cluster.home, "home directory")):
        rc, _, err = cluster.submit(WORDCOUNT, [data], out, "--overwrite")
        assert rc == 2 and match in err and "nothing was deleted" in err, err
    assert snapshot(ws) == before
    out = ws / "out"
    assert_ok(cluster.submit(WORDCOUNT, [data], out, "--reducers", "1"), cluster)
    assert_ok(cluster.submit(WORDCOUNT, [data], out, "--overwrite", "--reducers", "1"), cluster)
    assert_committed(out, 1)
    # The new output as input of the next job: overwriting it would delete that input.
    rc, _, err = cluster.submit(WORDCOUNT, [out / "part-00000"], out, "--overwrite")
    assert rc == 2 and "the job's input" in err, err
    assert_committed(out, 1)


def earlier_output(cluster: Cluster, name: str) -> tuple[Path, Path, Path]:
    """A workspace with a text and the output of an earlier job on it."""
    ws = cluster.base / name
    ws.mkdir()
    data = ws / "words.txt"
    data.write_text("a b a\n")
    earlier = ws / "earlier"
    assert_ok(cluster.submit(WORDCOUNT, [data], earlier, "--reducers", "1"), cluster)
    return ws, data, earlier


def overwrite_refused(cluster: Cluster, data: Path, output: Path, why: str) -> None:
    before = snapshot(output)
    rc, _, err = cluster.submit(WORDCOUNT, [data], output, "--overwrite")
    assert rc == 2 and why in err, err
    assert snapshot(output) == before


@contextlib.contextmanager
def held_job(cluster: Cluster, ws: Path, inputs: list[Path], out: Path) -> Iterator[None]:
    """A job held in its maps (``barrier_job``), its output prepared, while
    the block runs; then let go, and it must succeed."""
    barrier = ws / "barrier"
    job = ws / "held.py"
    job.write_text(barrier_job(barrier))
    held = cluster.popen_submit(job, inputs, out, "--reducers", "1")
    try:
        wait_for(lambda: (out / OUTPUT_MARK).exists(), 20, "the held job's output")
        yield
        barrier.touch()
        assert_ok((held.wait(60), *held.communicate()), cluster)
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()


def test_a_running_jobs_output_and_input_are_not_overwritten(cluster: Cluster) -> None:
    """A second job may not replace, nest in or hold a running job's output,
    nor replace the earlier output the running job reads."""
    ws, data, earlier = earlier_output(cluster, "overlap-ws")
    out = ws / "out"
    with held_job(cluster, ws, [earlier], out):
        for other in (out, out / "inner", ws):
            rc, _, err = cluster.submit(WORDCOUNT, [data], other, "--overwrite")
            assert rc == 2 and "of the running job" in err, err
        overwrite_refused(cluster, data, earlier, "an input of the running job")
    assert_committed(out, 1)


def test_a_running_jobs_output_is_not_overwritten_by_another_cluster(cluster: Cluster) -> None:
    """A job of another jobtracker (another `run`, or `run --inline`) knew
    nothing of the running one: its --overwrite deleted that output as it
    was written, and both jobs succeeded with parts of each. The running
    job holds its output's mark locked; once it ended, the output may be
    replaced again."""
    ws = cluster.base / "other-cluster-ws"
    ws.mkdir()
    data = ws / "words.txt"
    data.write_text("a b a\n")
    out = ws / "out"
    home = cluster.base / "other-home"
    home.mkdir()
    args = [str(WORDCOUNT), str(data), "-o", str(out), "--overwrite"]
    with held_job(cluster, ws, [data], out):
        for mode in (["run"], ["run", "--inline"]):
            before = snapshot(out)
            rc, _, err = run_cli(*mode, *args, env=base_env(home), cwd=ws)
            assert rc == 2 and "a job is writing it now" in err, err
            assert "nothing was deleted" in err and snapshot(out) == before
    assert_committed(out, 1)
    rc, _, err = run_cli("run", *args, "--reducers", "2", env=base_env(home), cwd=ws)
    assert rc == 0, err
    assert_committed(out, 2)


def test_a_running_jobs_output_is_no_input_until_it_ends(cluster: Cluster) -> None:
    """A job may not read another's output while that one writes it: it
    read the part files committed so far as if they were all. Once the
    first job has ended, its output is an input as any other."""
    ws = cluster.base / "partial-ws"
    ws.mkdir()
    data = ws / "words.txt"
    data.write_text("a b a\n")
    out = ws / "out"
    with held_job(cluster, ws, [data], out):
        for given in (out, out / OUTPUT_MARK):
            rc, _, err = cluster.submit(WORDCOUNT, [given], ws / "reader")
            assert rc == 2 and "which is not complete" in err and str(out) in err, err
            assert not (ws / "reader").exists()
    assert_ok(cluster.submit(WORDCOUNT, [out], ws / "reader"), cluster)


def test_an_input_of_a_job_being_admitted_is_not_overwritten(cluster: Cluster) -> None:
    """A job reading an earlier output is still being admitted (its module
    checked) when another asks to overwrite that output: refused, and the
    first job reads what it listed."""
    ws, data, earlier = earlier_output(cluster, "admitting-ws")
    importing, barrier = ws / "importing", ws / "barrier"
    slow = ws / "slow_import.py"
    slow.write_text(f"""import os, time
open({str(importing)!r}, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists({str(barrier)!r}) and time.monotonic() < deadline:
    time.sleep(0.01)
""" + WORDCOUNT.read_text())
    reader = cluster.popen_submit(slow, [earlier], ws / "counted", "--reducers", "1")
    refused_while_held(cluster, reader, importing, barrier, lambda: overwrite_refused(
        cluster, data, earlier, "an input of a job being submitted"))
    assert_counts_of(earlier, ws / "counted")


def refused_while_held(cluster: Cluster, reader: subprocess.Popen[str], held: Path,
                       barrier: Path, refusals: Callable[[], None]) -> None:
    """Once ``held`` exists (the reader waits on ``barrier``), ``refusals``
    are made; then the reader is let go and succeeds."""
    try:
        wait_for(held.exists, 30, f"{held.name}, the reader held")
        refusals()
        barrier.touch()
        assert_ok((reader.wait(60), *reader.communicate()), cluster)
    finally:
        barrier.touch()
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def assert_counts_of(earlier: Path, out: Path) -> None:
    """``out`` counts the words of ``earlier``'s part file, intact."""
    words = Counter((earlier / "part-00000").read_text().split())
    assert (out / "part-00000").read_text() == "".join(
        f"{w}\t{n}\n" for w, n in sorted(words.items()))


def test_an_input_read_by_a_later_step_is_not_overwritten(cluster: Cluster) -> None:
    """A two-step job given a glob: while its second step runs (the step
    whose maps may read the input again, as the total-order sort's do), the
    files the glob matched stay protected, not only the step's own."""
    ws, data, earlier = earlier_output(cluster, "later-step-ws")
    in_step_2, barrier = ws / "in-step-2", ws / "barrier"
    job = ws / "two_steps.py"
    job.write_text(f"""import os, time
from pytxmr import Step, combiners


def words(key, line):
    for word in line.split():
        yield word, 1


def held(key, value):
    open({str(in_step_2)!r}, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists({str(barrier)!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield key, value


steps = [Step(map=words, reduce=combiners.sum), Step(map=held, reduce=combiners.sum)]
""")
    out = ws / "out"
    reader = cluster.popen_submit(job, [f"{earlier}/part-*"], out, "--reducers", "1")
    alias = ws.parent / "later-step-alias"
    alias.symlink_to(ws)

    def refusals() -> None:
        overwrite_refused(cluster, data, earlier, "an input of the running job")
        # Its output through a symbolic link: step 2's own input is there.
        overwrite_refused(cluster, data, alias / "out", f"overlaps the output {out}")

    refused_while_held(cluster, reader, in_step_2, barrier, refusals)
    assert_counts_of(earlier, out)
