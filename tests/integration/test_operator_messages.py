"""What an operator reads: daemon logs without Twisted's factory noise,
and a task's failure that names its cause (a full disk)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs import ROOT, Cluster, base_env


def test_daemon_logs_have_no_factory_noise(tmp_path: Path) -> None:
    """Twisted's "Starting factory <... at 0x7f...>" lines say nothing to an
    operator: none at the default level, through a whole job."""
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        c.start_tasktracker(2)
        data = tmp_path / "in.txt"
        data.write_text("a b a\n" * 100)
        rc, _, err = c.submit(Path(__file__).resolve().parents[2] / "examples" / "wordcount.py",
                              [data], tmp_path / "out", "--reducers", "2")
        assert rc == 0, err
        for daemon in c.daemons:
            assert "Starting factory" not in daemon.log(), daemon.log()
            assert "Stopping factory" not in daemon.log(), daemon.log()
    finally:
        c.stop_all()


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_daemon_started_on_a_full_disk_says_so(tmp_path: Path) -> None:
    """Its one line was "[Errno 28] No space left on device", naming
    neither the directory nor what to do."""
    with small_disk(tmp_path, "64k") as disk:
        with open(disk / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while f.write(b"x" * 4096):
                pass
        for daemon, args in (("jobtracker", ["--port", "0", "--no-web"]),
                             ("tasktracker", ["--jobtracker", "127.0.0.1:1"])):
            workdir = disk / daemon
            proc = subprocess.run([sys.executable, "-m", f"pytxmr.{daemon}", *args,
                                   "--workdir", str(workdir)], capture_output=True, text=True,
                                  env=base_env(tmp_path), timeout=30)
            assert proc.returncode == 2, proc.stderr
            assert (f"{daemon}: cannot use the work directory {workdir}: "
                    in proc.stderr.splitlines()[0]), proc.stderr
            assert "its disk is full" in proc.stderr, proc.stderr


def test_a_task_that_dies_on_a_full_disk_is_said_to(tmp_path: Path) -> None:
    """A worker whose disk is nearly full from the start: its map could
    write neither its log nor its result, and failed with "exited with code
    1 before reporting a result", its log "[no output]"."""
    with small_disk(tmp_path, "2m") as disk:
        c = Cluster(tmp_path)
        try:
            c.start_jobtracker()
            c.start_tasktracker(1, "--shuffle-memory", "0", "--workdir", str(disk / "tt"),
                                default_workdir=True)
            with open(disk / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > 64 << 10:
                    f.write(b"x" * 4096)
            data = tmp_path / "in.txt"
            data.write_text("".join(f"w{i} v{i % 7}\n" for i in range(100000)))
            rc, _, err = c.submit(ROOT / "examples" / "wordcount.py", [data], tmp_path / "out",
                                  "--max-attempts", "1")
            assert rc == 1, err
            assert f"the disk of {disk}" in err and "is full: " in err, err
        finally:
            c.stop_all()


def test_a_full_disk_is_named_in_the_attempts_error(tmp_path: Path) -> None:
    """A map that fills its worker's disk fails with "No space left on
    device" and the file's path, not with a process that died silently."""
    with small_disk(tmp_path, "4m") as disk:
        _fill_a_workers_disk(tmp_path, disk)


def _fill_a_workers_disk(tmp_path: Path, disk: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        c.start_tasktracker(1, "--shuffle-memory", "0", "--workdir", str(disk / "tt"),
                            default_workdir=True)
        job = tmp_path / "big.py"
        job.write_text("def map(k, v):\n    for i in range(400000):\n"
                       "        yield f'{v}-{i}-' + 'x' * 20, i\n"
                       "def reduce(k, vs):\n    yield k, sum(vs)\n")
        data = tmp_path / "in.txt"
        data.write_text("a\n")
        rc, _, err = c.submit(job, [data], tmp_path / "out", "--max-attempts", "1",
                              "--buffer-records", "20000")
        assert rc == 1, err
        assert "No space left on device" in err and str(disk) in err, err
    finally:
        c.stop_all()


def test_the_jobtracker_serves_prometheus_metrics(tmp_path: Path) -> None:
    """/metrics on the status site: workers, slots, tasks, jobs by state,
    attempt durations, shuffle bytes, failures (parsed by the official
    client's own parser)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    c = Cluster(tmp_path)
    try:
        jt = c.start_jobtracker()
        c.start_tasktrackers(2, 2)
        data = tmp_path / "in.txt"
        data.write_text("a b a\n" * 2000)
        root = Path(__file__).resolve().parents[2]
        rc, _, err = c.submit(root / "examples" / "wordcount.py", [data], tmp_path / "out",
                              "--reducers", "2", "--split-size", "4K")
        assert rc == 0, err
        bad = tmp_path / "bad.py"
        bad.write_text("def map(k, v):\n    raise ValueError('no')\n")
        rc, _, _ = c.submit(bad, [data], tmp_path / "out2", "--max-attempts", "1")
        assert rc == 1
        url = f"http://127.0.0.1:{jt.ready['web_port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("pytxmr_workers", ())] == 2
        assert samples[("pytxmr_slots", ())] == 4
        assert samples[("pytxmr_running_jobs", ())] == 0
        assert samples[("pytxmr_jobs_finished_total", (("state", "succeeded"),))] == 1
        assert samples[("pytxmr_jobs_finished_total", (("state", "failed"),))] == 1
        maps = samples[("pytxmr_attempts_finished_total", (("kind", "map"), ("outcome", "succeeded")))]
        assert maps == -(-data.stat().st_size // 4096)
        assert samples[("pytxmr_attempts_finished_total", (("kind", "map"), ("outcome", "failed")))] >= 1
        assert samples[("pytxmr_attempt_seconds_count", (("kind", "reduce"),))] == 2
        assert samples[("pytxmr_shuffle_bytes_total", ())] > 0
    finally:
        c.stop_all()


def test_progress_moves_inside_a_task(tmp_path: Path) -> None:
    """Not `map 0%` for a whole map phase: heartbeats carry each attempt's
    progress (bytes of its split read), and status counts it."""
    import json
    import time

    c = Cluster(tmp_path)
    proc = None
    try:
        c.start_jobtracker()
        c.start_tasktracker(1, "--heartbeat", "0.2")
        job = tmp_path / "slow.py"
        job.write_text("import time\n"
                       "def map(k, line):\n    time.sleep(0.0004)\n    yield line[:1], 1\n"
                       "def reduce(k, vs):\n    yield k, sum(vs)\n")
        data = tmp_path / "in.txt"
        data.write_text("x" * 99 + "\n" * 1 + ("y" * 99 + "\n") * 30000)  # 3 MB, one split
        proc = c.popen_submit(job, [data], tmp_path / "out", "--split-size", "8M", "-q")
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            rc, out, _ = c.cli("jobs")
            job_id = out.split()[0] if rc == 0 and out.strip() else None
            if job_id:
                rc, out, _ = c.cli("status", job_id, "--json")
                status = json.loads(out)
                maps = status.get("maps") or {}
                if maps.get("done") == 0 and 0 < maps.get("percent", 0) < 100:
                    seen.append(maps["percent"])
                if len(seen) >= 2 and seen[-1] > seen[0]:
                    break
            time.sleep(0.2)
        assert len(seen) >= 2 and seen[-1] > seen[0], seen
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        c.stop_all()


def test_wait_attaches_to_a_job_from_another_client(tmp_path: Path) -> None:
    """``pytxmr wait JOB``: the summary and exit status of ``submit``, for a
    job that client did not submit; 1 for a failed job, 2 for no such job."""
    c = Cluster(tmp_path)
    slow = tmp_path / "slow.py"
    slow.write_text("import time\n\ndef map(key, line):\n    time.sleep(3)\n"
                    "    if line == 'boom':\n        raise ValueError('boom')\n"
                    "    yield line, 1\n\ndef reduce(key, values):\n    yield key, sum(values)\n")
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("a\nb\na\n")
    bad.write_text("boom\n")
    try:
        c.start_jobtracker()
        c.start_tasktracker(2)
        for data, status in ((good, 0), (bad, 1)):
            submitter = c.popen_submit(slow, [data], tmp_path / f"out-{data.stem}",
                                       "--max-attempts", "1")
            try:
                from procs import wait_for

                def job_id() -> str | None:
                    rc, out, _ = c.cli("jobs")
                    running = [line.split()[0] for line in out.splitlines()
                               if "running" in line and data.stem in line]
                    return running[0] if running else None

                job = wait_for(job_id, 30, "the job to run")
                rc, out, err = c.cli("wait", job)
                assert rc == status, (rc, out, err)
                if status == 0:
                    assert f"{job} succeeded" in out, out
                else:
                    assert f"{job} failed" in err and "boom" in err, err
                assert submitter.wait(30) == status
            finally:
                if submitter.poll() is None:
                    submitter.kill()
                submitter.communicate()
        rc, _, err = c.cli("wait", "job_19700101000000_0042")
        assert rc == 2 and "no job" in err, err
    finally:
        c.stop_all()


def test_logs_of_a_job_with_no_attempt_say_so(tmp_path: Path) -> None:
    """A job none of whose attempts has started (no worker yet) has no task
    log: ``logs`` says why, where it printed an empty line."""
    from procs import wait_for
    from wordcounts import WORDCOUNT

    c = Cluster(tmp_path)
    proc = None
    try:
        c.start_jobtracker()
        data = tmp_path / "in.txt"
        data.write_text("a b\n")
        proc = c.popen_submit(WORDCOUNT, [data], tmp_path / "out", "-q")

        def job_id() -> str | None:
            rc, out, _ = c.cli("jobs")
            return out.split()[0] if rc == 0 and out.strip() else None

        job = wait_for(job_id, 30, "the job to be admitted")
        rc, out, err = c.cli("logs", job)
        assert rc == 0 and out == "", out
        assert f"no task log of {job}: no attempt of it has started" in err, err
    finally:
        if proc is not None:
            proc.kill()
            proc.communicate()
        c.stop_all()


def test_a_reader_gone_before_the_output_is_flushed_is_no_error(tmp_path: Path) -> None:
    """``pytxmr jobs | head -1``: a reader that leaves after the command's
    last print made Python's flush at exit fail (exit 120), and
    ``--help-job`` into a closed pipe ended in a traceback."""
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    for args in (["submit", str(ROOT / "examples" / "threshold.py"), "--help-job"],
                 ["web-password", "--secret-file", str(secret)]):
        r, w = os.pipe()
        os.close(r)
        try:
            proc = subprocess.run([sys.executable, "-m", "pytxmr", *args], stdout=w,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                  env=base_env(tmp_path), timeout=60)
        finally:
            os.close(w)
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, \
            proc.stderr
        assert proc.returncode == 0, (args, proc.returncode, proc.stderr)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_standard_output_that_takes_nothing_more_is_said_so(tmp_path: Path) -> None:
    """``run ... > /dev/full`` (a full disk), or an output name the
    encoding of standard output cannot write: the job's summary ended in
    Twisted's traceback ("main function encountered error"). Now it is
    said, with status 1; the job's output is there all the same."""
    data = tmp_path / "in.txt"
    data.write_text("a b a\n")
    job = ROOT / "examples" / "wordcount.py"
    cases = [(["run", str(job), str(data), "-o", "out-run"], {}, "No space left on device"),
             (["run", "--inline", str(job), str(data), "-o", "out-inline"], {},
              "No space left on device"),
             (["run", str(job), str(data), "-o", "out-\u00fc"], {"PYTHONIOENCODING": "ascii"},
              "ascii cannot encode")]
    for args, env, reason in cases:
        with open("/dev/full" if not env else os.devnull, "w") as sink:
            stdout = sink if not env else subprocess.PIPE
            proc = subprocess.run([sys.executable, "-m", "pytxmr", *args], stdout=stdout,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                  env={**base_env(tmp_path), **env}, timeout=120)
        assert proc.returncode == 1, (args, proc.stderr)
        said = f"pytxmr: cannot write to standard output: {reason}"
        assert any(line.startswith(said) for line in proc.stderr.splitlines()), proc.stderr
        assert "Traceback" not in proc.stderr and "encountered error" not in proc.stderr, \
            proc.stderr
        assert (tmp_path / args[-1] / "_SUCCESS").exists()
