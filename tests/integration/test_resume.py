"""A jobtracker that dies (SIGKILL) resumes its jobs when started again on
its work directory: the tasktrackers come back with the map outputs they
kept, committed reduces stay committed, the rest runs again, and the
waiting submitter goes on waiting and exits 0. Outputs and counters are
checked against an independent count."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from procs import Cluster, wait_for
from wordcounts import merged, read_wordcount, slow_wordcount


@dataclass
class Running:
    """A slow word count submitted to a cluster of its own (``_running``)."""

    cluster: Cluster
    submitter: subprocess.Popen[str]
    job_id: str
    out: Path
    expected: Counter[str]
    lines: int


@contextlib.contextmanager
def _running(tmp_path: Path, files: int, slots: int, reducers: int, map_sleep: float,
             reduce_sleep: float, say: str = "") -> Iterator[Running]:
    """2 tasktrackers of ``slots``; ``files`` input files of 3 lines each;
    the map prints ``say`` and its line if given; every process stopped at
    the end, also on failure."""
    job = tmp_path / "slow.py"
    text = slow_wordcount(map_sleep, reduce_sleep)
    if say:
        text = text.replace("def map(key, line):\n", f"def map(key, line):\n"
                            f"    print({say!r}, line.split()[0])\n")
    job.write_text(text)
    inputs, expected = [], Counter[str]()
    for n in range(files):
        text = "".join(f"w{(n * 7 + i) % 23} v{i % 13} both\n" for i in range(3))
        path = tmp_path / f"in{n:02d}.txt"
        path.write_text(text)
        expected.update(text.split())
        inputs.append(path)
    c = Cluster(tmp_path / "cluster")
    out = tmp_path / "out"
    submitter: subprocess.Popen[str] | None = None
    try:
        c.start_jobtracker()
        c.start_tasktrackers(2, slots)
        submitter = c.popen_submit(job, inputs, out, "--reducers", str(reducers))
        yield Running(c, submitter, _job_id(c), out, expected, 3 * files)
    finally:
        if submitter is not None and submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
        c.stop_all()


def _status(c: Cluster, job_id: str) -> dict[str, Any] | None:
    rc, out, _ = c.cli("status", job_id, "--json")
    return json.loads(out) if rc == 0 else None


def _kill_jobtracker(c: Cluster) -> int:
    """SIGKILL the jobtracker; the port to start it again on."""
    assert c.jobtracker is not None
    port: int = c.jobtracker.ready["port"]
    c.jobtracker.proc.send_signal(signal.SIGKILL)
    c.jobtracker.proc.wait(10)
    return port


def _remove_as_reduces_go_on(path: Path) -> None:
    """Remove ``path`` as a user would with ``rm -rf``: the jobtracker is
    down, but a reduce it let commit may be renaming its part and removing
    its attempt's directory meanwhile, under the removal's feet, and one
    starting may make its attempt's directory (a directory not empty by
    the time it is removed)."""
    deadline = time.monotonic() + 30
    while path.exists():
        try:
            shutil.rmtree(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise
            assert time.monotonic() < deadline, f"{path} still there"


def _restart_and_finish(c: Cluster, submitter: subprocess.Popen[str]) -> str:
    """SIGKILL the jobtracker, start it again on its port and work dir, and
    wait for the submitter, which must succeed; its stderr."""
    try:
        port = _kill_jobtracker(c)
        c.start_jobtracker("--port", str(port), "--resume-grace", "5")
        _, stderr = submitter.communicate(timeout=120)
        assert submitter.returncode == 0, stderr + c.logs()
        return stderr
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()


def _detail(c: Cluster, job_id: str) -> dict[str, Any]:
    assert c.jobtracker is not None
    url = f"http://127.0.0.1:{c.jobtracker.ready['web_port']}/api/jobs/{job_id}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _reduces_done(c: Cluster, job_id: str) -> list[int]:
    """The reduces the jobtracker has as committed."""
    return [t["index"] for t in _detail(c, job_id)["tasks"]
            if t["kind"] == "reduce" and t["state"] == "succeeded"]


def _maps_run_again(c: Cluster, job_id: str) -> int:
    """Map attempts the restarted jobtracker launched (theirs are numbered
    from 1000 on; the kept ones keep the number they had)."""
    return sum(1 for t in _detail(c, job_id)["tasks"] if t["kind"] == "map"
               for a in t["attempts"] if int(a["id"].rsplit("_", 1)[1]) >= 1000)


def _job_id(c: Cluster) -> str:
    def running() -> str | None:
        rc, out, _ = c.cli("jobs")
        ids = [line.split()[0] for line in out.splitlines() if " running " in line]
        return ids[0] if ids else None

    return wait_for(running, 30, "the job to run")


def test_a_job_resumes_after_the_jobtracker_is_killed_during_its_maps(tmp_path: Path) -> None:
    with _running(tmp_path, 16, 2, 2, 0.4, 0.05) as r:
        c, job_id = r.cluster, r.job_id
        done = wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] >= 5
                        and s["maps"]["done"], 60, "five maps to be done")
        t0 = time.monotonic()
        stderr = _restart_and_finish(c, r.submitter)
        print(f"resumed and finished {time.monotonic() - t0:.1f}s after the restart")
        assert "the jobtracker is back; still waiting for" in stderr, stderr
        assert merged(read_wordcount(r.out)) == r.expected
        assert c.jobtracker is not None
        log = c.jobtracker.log()
        assert f"Job {job_id} resumed at step 1 of 1" in log, log
        kept = sum(int(line.split(" kept ")[1].split()[0])
                   for line in log.splitlines() if " kept " in line)
        assert kept >= done, (kept, done, log)
        assert _maps_run_again(c, job_id) == 16 - kept
        # The counters of the maps done before the kill came from the journal.
        result = _status(c, job_id)
        assert result is not None and result["state"] == "succeeded"
        assert result["counters"]["pytxmr"]["map input records"] == r.lines
        for tt in c.tasktrackers:
            assert "Lost the jobtracker" in tt.log()


def test_committed_reduces_stay_committed_across_a_restart(tmp_path: Path) -> None:
    with _running(tmp_path, 4, 1, 8, 0.4, 0.05) as r:
        c, job_id, out = r.cluster, r.job_id, r.out
        # Committed as the jobtracker has it (journaled): a part file is in
        # place a moment before, and one whose report the kill cuts off is
        # written again by the rerun of its reduce, as Hadoop's would be.
        done = wait_for(lambda: len(d := _reduces_done(c, job_id)) >= 2 and d, 90,
                        "two reduces to commit")
        committed = len(done)
        before = {f"part-{i:05d}": (out / f"part-{i:05d}").stat().st_mtime_ns for i in done}
        _restart_and_finish(c, r.submitter)
        assert merged(read_wordcount(out)) == r.expected
        assert sorted(p.name for p in out.glob("part-*")) == [f"part-{i:05d}" for i in range(8)]
        # Not written again: the same files, untouched.
        for name, mtime in before.items():
            assert (out / name).stat().st_mtime_ns == mtime, name
        assert c.jobtracker is not None
        log = c.jobtracker.log()
        resumed = [line for line in log.splitlines() if f"Job {job_id} resumed" in line]
        assert resumed and int(resumed[0].split(" maps and ")[1].split()[0]) >= committed, log
        result = _status(c, job_id)
        assert result is not None
        assert result["counters"]["pytxmr"]["map input records"] == r.lines
        assert result["counters"]["pytxmr"]["reduce output records"] == len(r.expected)


def test_no_map_runs_again_when_the_jobtracker_dies_between_maps_and_reduces(
        tmp_path: Path) -> None:
    """Every map done, no reduce committed (they are slow): after the
    restart, every map output comes back from the workers and none runs
    again."""
    with _running(tmp_path, 8, 2, 2, 0.1, 0.3, say="mapping") as r:
        c, job_id = r.cluster, r.job_id
        wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] == 8 or None, 60,
                 "every map to be done")
        assert not list(r.out.glob("part-*"))
        _restart_and_finish(c, r.submitter)
        assert merged(read_wordcount(r.out)) == r.expected
        assert _maps_run_again(c, job_id) == 0
        result = _status(c, job_id)
        assert result is not None
        assert result["counters"]["pytxmr"]["map input records"] == r.lines
        # The kept maps show how long they ran (3 lines of 0.1 s each), and
        # their logs: a duration of 0 and no log before.
        maps = [t for t in _detail(c, job_id)["tasks"] if t["kind"] == "map"]
        assert len(maps) == 8
        for t in maps:
            (a,) = t["attempts"]
            assert a["duration"] >= 0.3, a
        rc, out, err = c.cli("logs", job_id)
        assert rc == 0, err
        assert out.count("mapping w") == 3 * 8, out


def test_maps_done_before_a_restart_are_shown_awaited_until_their_workers_return(
        tmp_path: Path) -> None:
    """Between the restart and the tasktrackers' return, status said "maps
    0/8 done" of a job whose maps were all done: they are said to be
    awaited, and once the workers are back, done (none runs again)."""
    with _running(tmp_path, 8, 2, 2, 0.1, 0.3) as r:
        c, job_id = r.cluster, r.job_id
        wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] == 8 or None, 60,
                 "every map to be done")
        for tt in c.tasktrackers:
            tt.proc.send_signal(signal.SIGSTOP)
        try:
            port = _kill_jobtracker(c)
            c.start_jobtracker("--port", str(port), "--resume-grace", "60")
            status = _status(c, job_id)
            assert status is not None and status["maps"]["done"] == 0, status
            assert status["maps"]["awaited"] == 8, status
            rc, out, _ = c.cli("status", job_id)
            assert ("maps     0/8 done, 0 running; 8 done before the jobtracker's restart, "
                    "awaited from their tasktrackers") in out, out
        finally:
            for tt in c.tasktrackers:
                tt.proc.send_signal(signal.SIGCONT)
        _, stderr = r.submitter.communicate(timeout=120)
        assert r.submitter.returncode == 0, stderr + c.logs()
        assert merged(read_wordcount(r.out)) == r.expected
        assert _maps_run_again(c, job_id) == 0
        status = _status(c, job_id)
        assert status is not None and "awaited" not in status["maps"], status


def test_a_submitter_whose_jobtracker_is_silent_says_so_and_waits_on(tmp_path: Path) -> None:
    """A partition (here: the jobtracker stopped) is silent, and TCP gives
    up on it after some 15 minutes: the waiting submitter printed nothing
    all that time. It takes the connection as lost once its status polls go
    unanswered, says so, and goes on waiting once the jobtracker answers."""
    from pytxmr.client import SILENCE_TIMEOUT

    with _running(tmp_path, 16, 2, 2, 0.4, 0.05) as r:
        c = r.cluster
        assert c.jobtracker is not None
        c.jobtracker.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(SILENCE_TIMEOUT + 5)
        finally:
            c.jobtracker.proc.send_signal(signal.SIGCONT)
        _, stderr = r.submitter.communicate(timeout=120)
        assert r.submitter.returncode == 0, stderr + c.logs()
        assert (f"pytxmr: no answer from the jobtracker in {SILENCE_TIMEOUT:g}s (a network "
                f"partition? it is stopped?); trying to reach it again for") in stderr, stderr
        assert f"the jobtracker is back; still waiting for {r.job_id}" in stderr, stderr
        assert merged(read_wordcount(r.out)) == r.expected


def test_a_submitter_whose_jobtracker_came_back_without_its_job_says_why(
        tmp_path: Path) -> None:
    """Started again on another work directory, the jobtracker resumes none
    of the jobs it had: the waiting submitter says so and what it means,
    where it said only "no job", and exits 3, as when the jobtracker stays
    away: the job's outcome is unknown (2 says it was refused)."""
    with _running(tmp_path, 8, 2, 2, 0.4, 0.05) as r:
        c = r.cluster
        port = _kill_jobtracker(c)
        c.start_jobtracker("--port", str(port), default_workdir=True)
        _, stderr = r.submitter.communicate(timeout=60)
        assert r.submitter.returncode == 3, stderr
        assert (f"pytxmr: the jobtracker came back without {r.job_id}: it was started on "
                f"another --workdir, or its work directory was lost, so the job's outcome is "
                f"unknown (its output has _SUCCESS if it succeeded)\n") in stderr, stderr


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_job_whose_output_was_removed_meanwhile_is_not_resumed(tmp_path: Path,
                                                                 how: str) -> None:
    """Its mark gone, the output is no longer the job's: the resumed job
    wrote its parts and _SUCCESS into whatever was there (a user's files;
    nothing, and then reported success with the parts committed before
    the crash missing), and emptied its _temporary."""
    with _running(tmp_path, 4, 1, 8, 0.4, 0.05) as r:
        c = r.cluster
        wait_for(lambda: len(_reduces_done(c, r.job_id)) >= 2 or None, 90,
                 "two reduces to commit")
        port = _kill_jobtracker(c)
        _remove_as_reduces_go_on(r.out)
        if how == "replaced":
            (r.out / "_temporary").mkdir(parents=True)
            (r.out / "_temporary" / "notes.txt").write_text("precious\n")
            (r.out / "part-00002").write_text("mine\n")
        c.start_jobtracker("--port", str(port), "--resume-grace", "2")
        _, stderr = r.submitter.communicate(timeout=60)
        assert r.submitter.returncode == 1, stderr
        assert (f"{r.job_id} failed: its output {r.out} was removed or replaced (its "
                f"_PYTXMR_OUTPUT is gone) while the jobtracker was down") in stderr, stderr
        assert (_status(c, r.job_id) or {}).get("state") == "failed"
        if how == "removed":
            assert not r.out.exists()
        else:
            assert sorted(str(p.relative_to(r.out)) for p in r.out.rglob("*")) == [
                "_temporary", "_temporary/notes.txt", "part-00002"]
            assert (r.out / "part-00002").read_text() == "mine\n"


def _files_lost_in_a_crash(r: Running) -> int:
    """Two reduces committed, the jobtracker SIGKILLed, the job's files
    gone from its work directory; the port to start it again on."""
    c = r.cluster
    wait_for(lambda: len(_reduces_done(c, r.job_id)) >= 2 or None, 90, "two reduces to commit")
    port = _kill_jobtracker(c)
    shutil.rmtree(c.base / "jt-work" / "jobs" / r.job_id)
    return port


def test_a_job_whose_files_are_gone_fails_and_its_output_is_emptied(tmp_path: Path) -> None:
    """It was dropped without a word: no history, no log line, and its
    output left half written."""
    with _running(tmp_path, 4, 1, 8, 0.4, 0.05) as r:
        c = r.cluster
        port = _files_lost_in_a_crash(r)
        c.start_jobtracker("--port", str(port), "--resume-grace", "2")
        _, stderr = r.submitter.communicate(timeout=60)
        assert r.submitter.returncode == 1, stderr
        why = "its files (its module, its shipped code) are gone from the jobtracker's work"
        assert f"{r.job_id} failed: {why}" in stderr, stderr
        assert f"Job {r.job_id} cannot resume: {why}" in c.jobtracker.log()
        assert (_status(c, r.job_id) or {}).get("state") == "failed"
        assert sorted(p.name for p in r.out.iterdir()) == ["_PYTXMR_OUTPUT"]


def test_a_job_whose_end_was_not_journaled_keeps_its_output(tmp_path: Path) -> None:
    """It succeeded, but its jobtracker's disk was full: its end was not
    journaled, and its files went as it ended. The next start failed it
    (its files gone) and emptied its output under its _SUCCESS."""
    with _running(tmp_path, 4, 1, 8, 0.4, 0.05) as r:
        c = r.cluster
        port = _files_lost_in_a_crash(r)
        # As it was once it ended: its output final.
        shutil.rmtree(r.out / "_temporary", ignore_errors=True)
        (r.out / "_SUCCESS").write_text("")
        before = sorted(p.name for p in r.out.iterdir())
        assert [n for n in before if n.startswith("part-")]
        c.start_jobtracker("--port", str(port), "--resume-grace", "2")
        wait_for(lambda: (_status(c, r.job_id) or {}).get("state") == "succeeded", 30,
                 "the job to be known as succeeded")
        assert sorted(p.name for p in r.out.iterdir()) == before


@pytest.mark.parametrize("other_job", ["writing", "finished"])
def test_a_job_whose_output_another_job_took_meanwhile_is_not_resumed(
        tmp_path: Path, other_job: str) -> None:
    """While the jobtracker was down (its lock of the output gone with
    it), a job of another cluster replaced the output, and writes it or
    has finished: the restarted jobtracker resumed its job into that
    output anyway (over the other's parts), or cleaned them as an
    interrupted job's. It leaves the output to the other job (which holds
    its mark, or is named in it), and the job fails, saying so (its
    submitter was told the jobtracker came back without it)."""
    import sys

    from procs import base_env
    from test_cluster import barrier_job

    from pytxmr.output import claimed_elsewhere

    with _running(tmp_path, 8, 2, 2, 0.4, 0.05) as r:
        c = r.cluster
        port = _kill_jobtracker(c)
        barrier = tmp_path / "barrier"
        (tmp_path / "other.py").write_text(barrier_job(barrier))
        (tmp_path / "other-home").mkdir()
        (tmp_path / "other.txt").write_text("x y x\n")
        other = subprocess.Popen(
            [sys.executable, "-m", "pytxmr", "run", "other.py", "other.txt", "-o", str(r.out),
             "--overwrite", "--reducers", "1"], cwd=tmp_path, env=base_env(tmp_path / "other-home"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: claimed_elsewhere(str(r.out)), 60, "the other job's output")
            if other_job == "finished":
                barrier.touch()
                _, err = other.communicate(timeout=60)
                assert other.returncode == 0, err
            c.start_jobtracker("--port", str(port))
            _, stderr = r.submitter.communicate(timeout=60)
            assert r.submitter.returncode == 1, stderr
            assert f"{r.job_id} failed: another job (of another jobtracker, or a `run`) " \
                f"replaced its output {r.out} while the jobtracker was down" in stderr, stderr
            assert f"Job {r.job_id} cannot resume: another job" in c.jobtracker.log()
            assert (_status(c, r.job_id) or {}).get("state") == "failed"
            barrier.touch()
            _, err = other.communicate(timeout=60)
            assert other.returncode == 0, err
        finally:
            barrier.touch()
            if other.poll() is None:
                other.kill()
                other.communicate()
        assert (r.out / "part-00000").read_text() == "x\t2\ny\t1\n"
        assert not (r.out / "part-00001").exists()


def test_a_drain_asked_while_the_jobtracker_is_away_waits_for_it(tmp_path: Path) -> None:
    """SIGUSR1 while the jobtracker was down stopped the tasktracker at
    once, dropping the map outputs it had just said it kept for a restarted
    jobtracker. It asks the jobtracker once it is back, which drains it as
    any other: its outputs served until its maps ran again elsewhere."""
    with _running(tmp_path, 8, 2, 2, 0.3, 1.0) as r:
        c, job_id = r.cluster, r.job_id
        wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] == 8 or None, 60,
                 "the maps to be done")
        port = _kill_jobtracker(c)
        draining = c.tasktrackers[0]
        wait_for(lambda: "Lost the jobtracker" in draining.log() or None, 30, "the loss")
        draining.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "Draining: the jobtracker is away" in draining.log() or None, 30,
                 "the drain to wait")
        time.sleep(0.5)
        assert draining.proc.poll() is None, draining.log()
        c.start_jobtracker("--port", str(port), "--resume-grace", "5")
        _, stderr = r.submitter.communicate(timeout=120)
        assert r.submitter.returncode == 0, stderr + c.logs()
        assert merged(read_wordcount(r.out)) == r.expected
        wait_for(lambda: draining.proc.poll() is not None or None, 60, "the drained worker to stop")
        assert draining.proc.returncode == 0 and "Drained" in draining.log(), draining.log()
        wid = draining.log().split("Registered with the jobtracker as ")[-1].split()[0]
        assert f"Tasktracker {wid} is drained: stopping it" in c.jobtracker.log()
