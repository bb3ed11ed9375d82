"""Drain and rolling upgrades, with real daemons: every tasktracker is
drained (``pytxmr drain``, or SIGUSR1) and replaced, one at a time, while
one job runs; the job succeeds with the output of an independent count."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from procs import Cluster, wait_for
from wordcounts import merged, read_wordcount, slow_wordcount


@contextlib.contextmanager
def submitted(c: Cluster, job: Path, inputs: list[Path], out: Path,
              *options: str) -> Iterator[subprocess.Popen[str]]:
    """A submission left running; killed if it still runs at the end."""
    sub = c.popen_submit(job, inputs, out, *options)
    try:
        yield sub
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()


def slow_job(base: Path, map_sleep: float, lines: list[str]
             ) -> tuple[Path, list[Path], Counter[str]]:
    """A word count whose maps take ``map_sleep`` s, a file per line, and
    the counts it must give."""
    job = base / "slow.py"
    job.write_text(slow_wordcount(map_sleep))
    inputs = []
    for n, line in enumerate(lines):
        inputs.append(base / f"in{n:02d}.txt")
        inputs[-1].write_text(line + "\n")
    return job, inputs, Counter(" ".join(lines).split())


def test_a_rolling_upgrade_during_one_job(tmp_path: Path) -> None:
    job, inputs, expected = slow_job(tmp_path, 1.2,
                                     [f"w{n % 7} w{n % 5} shared" for n in range(60)])
    c = Cluster(tmp_path / "cluster")
    try:
        c.start_jobtracker()
        c.start_tasktrackers(3, 2)
        with submitted(c, job, inputs, tmp_path / "out", "--reducers", "3") as submitter:
            wait_for(lambda: "running" in c.cli("jobs")[1] or None, 30, "the job to run")
            for n, old in enumerate(list(c.tasktrackers)):
                wid = old.wait_ready()["wid"]
                if n == 1:  # the signal, as a service manager would send it
                    old.proc.send_signal(signal.SIGUSR1)
                else:
                    rc, out, err = c.cli("drain", wid)
                    assert rc == 0 and "is draining" in out, err
                    assert "no other tasktracker takes tasks" not in err, err
                    rc, out, _ = c.cli("workers")
                    # Draining, or already stopped (it had nothing to move).
                    assert any(line.startswith(wid) and ("draining" in line or "drained" in line)
                               for line in out.splitlines()), out
                t0 = time.monotonic()
                wait_for(lambda old=old: old.proc.poll() is not None or None, 60,
                         f"{wid} to stop once drained")
                assert old.proc.returncode == 0, old.log()
                assert "Drained" in old.log()
                print(f"{wid} drained in {time.monotonic() - t0:.1f}s")
                c.start_tasktracker(2)  # its upgraded successor
                assert submitter.poll() is None, "the job ended before every worker was drained"
            stdout, stderr = submitter.communicate(timeout=120)
            assert submitter.returncode == 0, stderr + c.logs()
        assert merged(read_wordcount(tmp_path / "out")) == expected
        assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
            "part-00000", "part-00001", "part-00002"]
        assert c.jobtracker is not None
        log = c.jobtracker.log()
        assert log.count("is drained: stopping it") == 3, log
        assert "failed" not in stdout
    finally:
        c.stop_all()


def test_drain_names_an_unknown_worker(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        rc, _, err = c.cli("drain", "w42")
        assert rc == 2 and "no live tasktracker 'w42'" in err, err
        rc, out, _ = c.cli("workers")
        assert rc == 0 and out.strip() == "no tasktracker"
    finally:
        c.stop_all()


def test_draining_the_last_worker_says_that_jobs_will_wait(tmp_path: Path) -> None:
    """Its running jobs' tasks wait for a new worker: the operator is told
    (the job stalled with no word)."""
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        wid = c.start_tasktracker(1).wait_ready()["wid"]
        rc, out, err = c.cli("drain", wid)
        assert rc == 0 and "is draining" in out, err
        assert "no other tasktracker takes tasks: the running jobs' waiting tasks wait" in err
    finally:
        c.stop_all()


def test_a_lost_worker_is_not_counted_as_taking_tasks(tmp_path: Path) -> None:
    """Draining the last live worker warns, also when a lost one is still
    listed: it was counted as taking tasks, and the jobs stalled unsaid."""
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker("--expiry", "1")
        lost = c.start_tasktracker(1, "--heartbeat", "0.2")
        wid = c.start_tasktracker(1, "--heartbeat", "0.2").wait_ready()["wid"]
        lost.stop(signal.SIGKILL)

        def listed_lost() -> bool:
            rc, out, _ = c.cli("workers", "--json")
            return rc == 0 and any(not w["alive"] for w in json.loads(out))

        wait_for(listed_lost, 20, "the killed worker to be listed lost")
        rc, out, err = c.cli("drain", wid)
        assert rc == 0 and "is draining" in out, err
        assert "no other tasktracker takes tasks" in err, err
    finally:
        c.stop_all()


def test_the_ready_file_names_the_worker_id_of_the_last_registration(tmp_path: Path) -> None:
    """A jobtracker that restarts gives every worker a new id: the ready
    file says the new one. It kept the first, and ``drain`` of it drained
    the worker that registered next under that id."""
    c = Cluster(tmp_path)
    try:
        jt = c.start_jobtracker("--expiry", "2")
        port = jt.ready["port"]
        gone = c.start_tasktracker(1, "--heartbeat", "0.2")
        tt = c.start_tasktracker(1, "--heartbeat", "0.2")
        first = tt.wait_ready()["wid"]
        gone.stop()  # so that tt's id after the restart is another one
        jt.proc.send_signal(signal.SIGKILL)
        jt.proc.wait(10)
        c.start_jobtracker("--port", str(port), "--expiry", "2")

        def registered_again() -> str | None:
            wid = json.loads(tt.ready_path.read_text())["wid"]
            rc, out, _ = c.cli("workers", "--json")
            live = {w["wid"] for w in json.loads(out) if w["alive"]} if rc == 0 else set()
            return wid if wid in live else None

        again = wait_for(registered_again, 30, "the ready file to name the new id")
        other = c.start_tasktracker(1, "--heartbeat", "0.2").wait_ready()["wid"]
        assert other != again, (first, again, other)
        rc, out, err = c.cli("drain", again)
        assert rc == 0, err
        wait_for(lambda: tt.proc.poll() is not None, 30, "the drained worker to exit")
        assert c.tasktrackers[-1].proc.poll() is None  # the other one runs on
    finally:
        c.stop_all()


def test_a_drain_outlives_a_restart_of_the_jobtracker(tmp_path: Path) -> None:
    """The drain lived in the jobtracker's memory: one restarted (a rolling
    upgrade of the jobtracker) gave the draining worker tasks again, and
    the operator waited for ever for it to stop. The worker, told it is
    being drained, asks a jobtracker it registers with anew."""
    # Maps of 2.5 s: with maps of 1 s, on a loaded machine, the job ended
    # before `jobs` and `drain` had answered, and the worker drained then.
    job, inputs, expected = slow_job(tmp_path, 2.5, [f"w{n % 3} shared" for n in range(8)])
    c = Cluster(tmp_path / "cluster")
    try:
        jt = c.start_jobtracker("--expiry", "2")
        port = jt.ready["port"]
        # The only worker: its running maps go on as it drains (none could
        # take them), so it is still draining as the jobtracker goes.
        drained = c.start_tasktracker(2, "--heartbeat", "0.2")
        with submitted(c, job, inputs, tmp_path / "out", "--reconnect-timeout", "60") as submitter:
            wait_for(lambda: "running" in c.cli("jobs")[1] or None, 30, "the job to run")
            rc, out, err = c.cli("drain", drained.wait_ready()["wid"])
            assert rc == 0 and "is draining" in out, err
            jt.proc.send_signal(signal.SIGKILL)
            jt.proc.wait(10)
            c.start_jobtracker("--port", str(port), "--expiry", "2")
            other = c.start_tasktracker(2, "--heartbeat", "0.2")
            wait_for(lambda: drained.proc.poll() is not None or None, 60,
                     "the draining worker to stop once drained by the new jobtracker")
            assert drained.proc.returncode == 0 and "asking this jobtracker again" in drained.log()
            stdout, stderr = submitter.communicate(timeout=120)
            assert submitter.returncode == 0, stderr + c.logs()
        assert merged(read_wordcount(tmp_path / "out")) == expected
        assert other.proc.poll() is None
    finally:
        c.stop_all()
