"""A jobtracker that dies (SIGKILL) resumes its jobs when started again on
its work directory: the tasktrackers come back with the map outputs they
kept, committed reduces stay committed, the rest runs again, and the
waiting submitter goes on waiting and exits 0. Outputs and counters are
checked against an independent count."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from procs import Cluster, wait_for
from wordcounts import merged, read_wordcount, slow_wordcount


def _inputs(tmp_path: Path, files: int) -> tuple[list[Path], Counter[str], int]:
    paths, expected, lines = [], Counter[str](), 0
    for n in range(files):
        text = "".join(f"w{(n * 7 + i) % 23} v{i % 13} both\n" for i in range(3))
        path = tmp_path / f"in{n:02d}.txt"
        path.write_text(text)
        expected.update(text.split())
        lines += 3
        paths.append(path)
    return paths, expected, lines


def _status(c: Cluster, job_id: str) -> dict[str, Any] | None:
    rc, out, _ = c.cli("status", job_id, "--json")
    return json.loads(out) if rc == 0 else None


def _restart_and_finish(c: Cluster, submitter: subprocess.Popen[str]) -> str:
    """SIGKILL the jobtracker, start it again on its port and work dir, and
    wait for the submitter, which must succeed; its stderr."""
    assert c.jobtracker is not None
    try:
        port = c.jobtracker.ready["port"]
        c.jobtracker.proc.send_signal(signal.SIGKILL)
        c.jobtracker.proc.wait(10)
        c.start_jobtracker("--port", str(port), "--resume-grace", "5")
        _, stderr = submitter.communicate(timeout=120)
        assert submitter.returncode == 0, stderr + c.logs()
        return stderr
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()


def _maps_run_again(c: Cluster, job_id: str) -> int:
    """Map attempts the restarted jobtracker launched (theirs are numbered
    from 1000 on; the kept ones keep the number they had)."""
    assert c.jobtracker is not None
    url = f"http://127.0.0.1:{c.jobtracker.ready['web_port']}/api/jobs/{job_id}"
    with urllib.request.urlopen(url, timeout=10) as r:
        detail = json.load(r)
    return sum(1 for t in detail["tasks"] if t["kind"] == "map" for a in t["attempts"]
               if int(a["id"].rsplit("_", 1)[1]) >= 1000)


def _job_id(c: Cluster) -> str:
    def running() -> str | None:
        rc, out, _ = c.cli("jobs")
        ids = [line.split()[0] for line in out.splitlines() if " running " in line]
        return ids[0] if ids else None

    return wait_for(running, 30, "the job to run")


def test_a_job_resumes_after_the_jobtracker_is_killed_during_its_maps(tmp_path: Path) -> None:
    job = tmp_path / "slow.py"
    job.write_text(slow_wordcount(0.4, 0.05))
    inputs, expected, lines = _inputs(tmp_path, 16)
    c = Cluster(tmp_path / "cluster")
    try:
        c.start_jobtracker()
        c.start_tasktrackers(2, 2)
        submitter = c.popen_submit(job, inputs, tmp_path / "out", "--reducers", "2")
        job_id = _job_id(c)
        done = wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] >= 5
                        and s["maps"]["done"], 60, "five maps to be done")
        t0 = time.monotonic()
        stderr = _restart_and_finish(c, submitter)
        print(f"resumed and finished {time.monotonic() - t0:.1f}s after the restart")
        assert "the jobtracker is back; still waiting for" in stderr, stderr
        assert merged(read_wordcount(tmp_path / "out")) == expected
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
        assert result["counters"]["pytxmr"]["map input records"] == lines
        for tt in c.tasktrackers:
            assert "Lost the jobtracker" in tt.log()
    finally:
        c.stop_all()


def test_committed_reduces_stay_committed_across_a_restart(tmp_path: Path) -> None:
    job = tmp_path / "slow.py"
    job.write_text(slow_wordcount(0.4, 0.05))
    inputs, expected, lines = _inputs(tmp_path, 4)
    c = Cluster(tmp_path / "cluster")
    out = tmp_path / "out"
    try:
        c.start_jobtracker()
        c.start_tasktrackers(2, 1)
        submitter = c.popen_submit(job, inputs, out, "--reducers", "8")
        job_id = _job_id(c)
        committed = wait_for(lambda: (n := len(list(out.glob("part-*")))) >= 2 and n, 90,
                             "two reduces to commit")
        before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
        _restart_and_finish(c, submitter)
        assert merged(read_wordcount(out)) == expected
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
        assert result["counters"]["pytxmr"]["map input records"] == lines
        assert result["counters"]["pytxmr"]["reduce output records"] == len(expected)
    finally:
        c.stop_all()


def test_no_map_runs_again_when_the_jobtracker_dies_between_maps_and_reduces(
        tmp_path: Path) -> None:
    """Every map done, no reduce committed (they are slow): after the
    restart, every map output comes back from the workers and none runs
    again."""
    job = tmp_path / "slow.py"
    job.write_text(slow_wordcount(0.1, 0.3))
    inputs, expected, lines = _inputs(tmp_path, 8)
    c = Cluster(tmp_path / "cluster")
    out = tmp_path / "out"
    try:
        c.start_jobtracker()
        c.start_tasktrackers(2, 2)
        submitter = c.popen_submit(job, inputs, out, "--reducers", "2")
        job_id = _job_id(c)
        wait_for(lambda: (s := _status(c, job_id)) and s["maps"]["done"] == 8 or None, 60,
                 "every map to be done")
        assert not list(out.glob("part-*"))
        _restart_and_finish(c, submitter)
        assert merged(read_wordcount(out)) == expected
        assert _maps_run_again(c, job_id) == 0
        result = _status(c, job_id)
        assert result is not None
        assert result["counters"]["pytxmr"]["map input records"] == lines
    finally:
        c.stop_all()
