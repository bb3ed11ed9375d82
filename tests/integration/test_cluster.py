"""Integration tests: real ``python -m pytxmr.jobtracker`` and
``python -m pytxmr.tasktracker`` processes on free loopback ports, driven by
``python -m pytxmr submit/jobs/status/kill/run`` as a user would.

Job output is compared with an independent computation (``Counter`` over
``line.split()``, or a reference written in the test). Jobs that must stay
busy wait on a barrier file the test creates, never on a timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
from procs import ROOT, Cluster, base_env, run_cli, wait_for
from wordcounts import (
    WAR_AND_PEACE,
    WORDCOUNT,
    WORDCOUNT_BATCH,
    assert_committed,
    assert_ok,
    corpus_files,
    merged,
    part_files,
    read_wordcount,
    word_counts,
)

from pytxmr import shufflememory

# --- job modules written by the tests -----------------------------------------

FILE_STATS = '''\
"""Per file: lines and words by (file name, words per line mod 3)."""
import os

import pytxmr.readers

reader = pytxmr.readers.path_lines
output_format = "jsonl"


def map(path, line):
    n = len(line.split())
    yield (os.path.basename(path), n % 3), [1, n]


def combine(key, values):
    lines = words = 0
    for a, b in values:
        lines += a
        words += b
    yield key, [lines, words]


reduce = combine
'''


def file_stats_reference(paths: Iterable[Path]) -> dict[tuple[str, int], list[int]]:
    ref: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for path in paths:
        data = path.read_bytes()
        if not data:
            continue
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the newline ends the last line; it starts none
        for raw in lines:
            n = len(raw.decode("utf-8").split())
            ref[(path.name, n % 3)][0] += 1
            ref[(path.name, n % 3)][1] += n
    return dict(ref)


def read_jsonl(output: Path) -> list[dict[Any, Any]]:
    parts = []
    for path in part_files(output):
        part = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, value = json.loads(line)
            key = tuple(key)
            assert key not in part
            part[key] = value
        parts.append(part)
    return parts


def barrier_job(barrier: Path) -> str:
    """A word count whose maps wait until ``barrier`` exists (or fail after
    a minute, so that a broken test cannot hang forever)."""
    return f'''\
import os
import time

BARRIER = {str(barrier)!r}


def map(key, value):
    deadline = time.monotonic() + 60
    while not os.path.exists(BARRIER):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the barrier")
        time.sleep(0.01)
    for word in value.split():
        yield word, 1


def reduce(key, values):
    yield key, sum(values)
'''


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def attempt_dirs(tasktracker_workdir: Path, kind: str = "m") -> list[Path]:
    """Working dirs of tasks of running jobs on a tasktracker: an
    attempt's (store/JOB/ATTEMPT), or for maps a reused process's
    (store/JOB/runner-PID)."""
    pattern = rf"^job_.*_{kind}\d+_\d+$" + (r"|^runner-\d+$" if kind == "m" else "")
    return [p for p in tasktracker_workdir.glob("store/job_*/*")
            if p.is_dir() and re.search(pattern, p.name)]


# --- results -------------------------------------------------------------------

def test_wordcount_of_a_generated_corpus_matches_counter(cluster: Cluster, corpus: Path) -> None:
    """The whole path (many splits, two workers, shuffle, two reducers) gives
    exactly the counts of an independent computation."""
    out = cluster.base / "wc-corpus"
    stdout = assert_ok(cluster.submit(WORDCOUNT, [corpus], out, "--reducers", "2",
                                      "--split-size", "256K"), cluster)
    maps = int(re.search(r"(\d+) maps", stdout).group(1))
    assert maps >= 10
    assert_committed(out, 2)
    assert merged(read_wordcount(out)) == word_counts(corpus.iterdir())


@pytest.mark.parametrize("job, reducers", [(WORDCOUNT, 3), (WORDCOUNT_BATCH, 2)],
                         ids=["per-record", "batch"])
def test_wordcount_of_war_and_peace_matches_counter(cluster: Cluster, job: Path,
                                                    reducers: int) -> None:
    """A real text (UTF-8 punctuation, CRLF or not) counts like Counter,
    with the per-record API and with the batch one (map_split)."""
    if not WAR_AND_PEACE.exists():
        pytest.skip(f"{WAR_AND_PEACE} is absent")
    out = cluster.base / f"wc-wp-{job.stem}"
    assert_ok(cluster.submit(job, [WAR_AND_PEACE], out, "--reducers", str(reducers),
                             "--split-size", "512K"), cluster)
    assert_committed(out, reducers)
    assert merged(read_wordcount(out)) == word_counts([WAR_AND_PEACE])


def test_a_listed_file_whose_name_is_not_utf8_is_read(cluster: Cluster) -> None:
    """Its split's path holds a surrogate (os.fsdecode): sending the split
    to a worker raised in the jobtracker, and the job waited for that map
    for ever."""
    data = cluster.base / "odd-names"
    data.mkdir()
    (data / os.fsdecode(b"caf\xe9.txt")).write_text("hello caf\n")
    for i in range(3):
        (data / f"a{i}.txt").write_text("a b\n")
    out = cluster.base / "wc-odd-names"
    assert_ok(cluster.submit(WORDCOUNT, [data], out, timeout=60), cluster)
    assert merged(read_wordcount(out)) == word_counts(sorted(data.iterdir()))


def test_one_two_and_three_reducers_partition_the_same_result(cluster: Cluster,
                                                              corpus: Path) -> None:
    """Each key is in exactly one part file, and the reducer count does not
    change the union of the results."""
    reference = word_counts(corpus_files(corpus)[:2])
    for n in (1, 2, 3):
        out = cluster.base / f"wc-r{n}"
        # A glob, expanded by pytxmr (not by a shell).
        assert_ok(cluster.submit(WORDCOUNT, [corpus / "part[01].txt"], out, "--reducers", str(n),
                                 "--split-size", "512K"), cluster)
        assert_committed(out, n)
        parts = read_wordcount(out)
        assert sum(len(p) for p in parts) == len(merged(parts)), "a key in two part files"
        assert merged(parts) == reference
        for part in parts:
            assert list(part) == sorted(part), "keys of a part file are sorted"
        if n > 1:
            assert all(parts), "a reducer got no key"


def test_custom_job_with_tuple_keys_list_values_and_a_reader(cluster: Cluster,
                                                            corpus: Path) -> None:
    """A job that is not an example (its own reader, tuple keys, list values,
    a combiner, JSON-lines output) matches a reference computed here."""
    job = write(cluster.base / "file_stats.py", FILE_STATS)
    out = cluster.base / "stats"
    assert_ok(cluster.submit(job, [corpus], out, "--reducers", "3", "--split-size", "300K"),
              cluster)
    assert_committed(out, 3)
    parts = read_jsonl(out)
    assert sum(len(p) for p in parts) == len(merged(parts))
    assert merged(parts) == file_stats_reference(corpus.iterdir())


def test_two_jobs_submitted_at_once_both_complete(cluster: Cluster, corpus: Path) -> None:
    """Concurrent jobs share the workers without mixing their data."""
    job = write(cluster.base / "file_stats2.py", FILE_STATS)
    inputs = corpus_files(corpus)[1:3]
    a = cluster.popen_submit(WORDCOUNT, inputs, cluster.base / "two-a", "--reducers", "2",
                             "--split-size", "256K")
    b = cluster.popen_submit(job, inputs, cluster.base / "two-b", "--reducers", "2",
                             "--split-size", "256K")
    try:
        results = [(p.wait(60), *p.communicate()) for p in (a, b)]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        assert_ok(r, cluster)
    assert merged(read_wordcount(cluster.base / "two-a")) == word_counts(inputs)
    assert merged(read_jsonl(cluster.base / "two-b")) == file_stats_reference(inputs)


def test_run_and_run_inline_write_identical_part_files(tmp_path: Path, corpus: Path) -> None:
    """The embedded cluster and the in-process baseline partition and sort
    the same way, and a tiny map buffer (many spills, merged) changes
    nothing either."""
    job = write(tmp_path / "file_stats.py", FILE_STATS)
    env = base_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    inputs = [str(p) for p in corpus_files(corpus)[2:]]
    modes = {"run": [], "inline": ["--inline"], "buffer": ["--buffer-records", "7"]}
    for name, path in (("wc", WORDCOUNT), ("stats", job)):
        spilled = {}
        for mode, extra in modes.items():
            out = assert_ok(run_cli("run", str(path), *inputs, "-o", str(tmp_path / f"{name}-{mode}"),
                                    "--reducers", "3", "--split-size", "256K", *extra,
                                    env=env, cwd=tmp_path))
            spilled[mode] = int(re.search(r"spilled records +([\d,]+)", out)[1].replace(",", ""))
        if name == "wc":  # thousands of words: a buffer of 7 values spills often
            assert spilled["buffer"] > spilled["run"], spilled
        first = tmp_path / f"{name}-run"
        assert_committed(first, 3)
        for mode in modes:
            other = tmp_path / f"{name}-{mode}"
            assert_committed(other, 3)
            for pa, pb in zip(part_files(first), part_files(other)):
                assert pa.read_bytes() == pb.read_bytes(), f"{name} {mode}: {pa.name} differs"


@pytest.mark.skipif(not os.access(shufflememory.SHM_ROOT, os.W_OK),
                    reason="fetched runs land on disk anyway without a writable /dev/shm")
def test_run_links_its_other_workers_map_outputs_instead_of_fetching_them(
        tmp_path: Path, corpus: Path) -> None:
    """``run``'s two workers share its process and file system: a reduce
    links the other worker's map outputs as it does its own, so no run comes
    through a shuffle server into memory (fetched, it would land there)."""
    inputs = corpus_files(corpus)
    env = base_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    out = assert_ok(run_cli("run", str(WORDCOUNT), *map(str, inputs), "-o", str(tmp_path / "out"),
                            "--workers", "2", "--reducers", "2", "--split-size", "64K",
                            env=env, cwd=tmp_path))
    assert merged(read_wordcount(tmp_path / "out")) == word_counts(inputs)
    counter = {name: int(re.search(rf"{name} +([\d,]+)", out)[1].replace(",", ""))
               for name in ("shuffle bytes", "shuffle bytes in memory", "shuffle bytes on disk")}
    assert counter["shuffle bytes in memory"] == 0, out
    assert counter["shuffle bytes on disk"] == counter["shuffle bytes"] > 0, out


def test_run_and_a_plain_submit_start_without_pyopenssl(cluster: Cluster, tmp_path: Path,
                                                       corpus: Path) -> None:
    """Neither makes a TLS connection nor runs the job's code in its own
    process: pyOpenSSL, which Twisted's TCP imports whenever it is
    installed, is left out of both (40-80 ms of their start). Their
    answers are still right."""
    inputs = corpus_files(corpus)[:3]
    (tmp_path / "home").mkdir()
    env = {**base_env(tmp_path / "home"), "PYTHONPROFILEIMPORTTIME": "1"}
    commands = {
        "run": ["run", str(WORDCOUNT), *map(str, inputs), "-o", str(tmp_path / "run")],
        "submit": ["submit", str(WORDCOUNT), *map(str, inputs), "-o", str(tmp_path / "submit"),
                   *cluster.client_args()],
    }
    for name, args in commands.items():
        rc, out, err = run_cli(*args, env=env, cwd=tmp_path)
        assert rc == 0, err
        imported = {line.rsplit("|", 1)[1].strip() for line in err.splitlines()
                    if line.startswith("import time:")}
        assert "twisted.internet.tcp" in imported, f"{name}: the import log is not read"
        # (A blocked "import OpenSSL" is logged too, in microseconds: what
        # is never loaded without pyOpenSSL is the cryptography it loads.)
        assert not {m for m in imported if m.split(".")[0] in ("cryptography",
                                                               "service_identity")}, name
        assert merged(read_wordcount(tmp_path / name)) == word_counts(inputs)


BUSY_JOB = '''\
"""A word count whose every task first burns 0.2 s of its own CPU."""
import time


def _burn():
    start = time.process_time()
    while time.process_time() - start < 0.2:
        pass


def map_init():
    _burn()


def reduce_init():
    _burn()


def map(key, value):
    for word in value.split():
        yield word, 1


def reduce(key, values):
    yield key, sum(values)
'''


def test_cpu_ms_counts_the_cpu_of_every_task(cluster: Cluster, tmp_path: Path) -> None:
    """Each task reports its own CPU ("cpu ms", as Hadoop's "CPU time
    spent"), the job's total is their sum: at least what the tasks burnt
    by the clock of their own process, on a cluster and in one process."""
    data = write(tmp_path / "in.txt", "a b a\nc a b\n" * 1000)
    job = write(tmp_path / "busy.py", BUSY_JOB)

    def cpu_ms(out: str) -> int:
        return int(re.search(r"cpu ms +([\d,]+)", out)[1].replace(",", ""))

    out = assert_ok(cluster.submit(job, [data], tmp_path / "cluster", "--reducers", "2",
                                   "--split-size", "8K"), cluster)
    maps = int(re.search(r"(\d+) maps", out)[1])
    assert maps >= 2
    assert 200 * (maps + 2) <= cpu_ms(out) < 200 * (maps + 2) + 5000, out
    env = base_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    out = assert_ok(run_cli("run", "--inline", str(job), str(data), "-o", str(tmp_path / "inline"),
                            "--reducers", "2", env=env, cwd=tmp_path))
    assert 200 * 3 <= cpu_ms(out) < 200 * 3 + 5000, out
    for where in ("cluster", "inline"):
        assert merged(read_wordcount(tmp_path / where)) == word_counts([data])
    # A streaming map's command is a process of its own: its CPU counts too.
    burn = write(tmp_path / "burn.py", "import sys, time\n"
                 "start = time.process_time()\n"
                 "while time.process_time() - start < 0.3:\n    pass\n"
                 "for line in sys.stdin:\n    print(line.split()[0], 1, sep='\\t')\n")
    out = assert_ok(cluster.cli("submit", "--mapper", f"{sys.executable} {burn}", str(data),
                                "-o", str(tmp_path / "streaming")), cluster)
    assert 300 <= cpu_ms(out) < 300 + 5000, out


# --- refused submissions ---------------------------------------------------------

def test_broken_job_modules_are_refused_and_the_next_job_runs(cluster: Cluster) -> None:
    """A module that does not compile, has a reduce of the wrong signature
    or raises on import is refused with file and line; the cluster keeps
    serving. (A module without reduce is a map-only job.)"""
    data = write(cluster.base / "small.txt", "a b a\nc a b\n")
    syntax = write(cluster.base / "bad_syntax.py",
                   "def map(k, v):\n    yield v, 1\n\ndef reduce(k, vs)\n    yield k, 1\n")
    no_reduce = write(cluster.base / "bad_reduce.py", "def map(k, v):\n    yield v, 1\n"
                                                      "def reduce(k):\n    yield k, 1\n")
    raises = write(cluster.base / "raises.py",
                   "import os\n\nraise ValueError('import-time failure 42')\n"
                   "def map(k, v):\n    yield v, 1\n")
    cases = [
        (syntax, [f'File "{syntax}", line 4', "SyntaxError"]),
        (no_reduce, [str(no_reduce), "'reduce' must take (key, values)"]),
        (raises, [str(raises), "line 3", "ValueError: import-time failure 42"]),
    ]
    for job, expected in cases:
        out = cluster.base / f"out-{job.stem}"
        rc, stdout, err = cluster.submit(job, [data], out)
        assert rc != 0, stdout
        for text in expected:
            assert text in err, f"{text!r} not in:\n{err}"
        assert not out.exists(), "a refused job must not create its output"
        assert "pytxmr/task.py" not in err, f"the framework's frames are noise:\n{err}"
        # run --inline refuses it in the same words, with the same status.
        inline = run_cli("run", "--inline", str(job), str(data), "-o", str(out),
                         env=cluster.env, cwd=cluster.base)
        assert (inline[0], inline[2]) == (2, err), inline
        assert not out.exists()
    # Relative paths are relative to the submitter's working directory.
    assert_ok(cluster.submit(WORDCOUNT, [data.name], "out-after-bad"), cluster)
    assert merged(read_wordcount(cluster.base / "out-after-bad")) == {"a": 3, "b": 2, "c": 1}


def test_missing_input_is_refused(cluster: Cluster) -> None:
    """A missing input path is an error at submission, naming the path."""
    missing = cluster.base / "no-such-input.txt"
    out = cluster.base / "out-missing"
    rc, _, err = cluster.submit(WORDCOUNT, [missing], out)
    assert rc != 0
    assert str(missing) in err
    assert not out.exists()


def test_a_job_of_too_many_tasks_is_refused_and_the_next_job_runs(cluster: Cluster) -> None:
    """--split-size 1 (a typo for 1M) would make a map per byte: the
    jobtracker refuses it at once, naming the counts and the way out, and
    serves the next job (it used to take the job: 2.3 GB of jobtracker for
    War and Peace, and every slot for hours)."""
    data = cluster.base / "split-typo.txt"
    data.write_text("a b c\n" * 40_000)  # 240,000 bytes: 240,000 one-byte splits
    out = cluster.base / "out-split-typo"
    start = time.monotonic()
    rc, _, err = cluster.submit(WORDCOUNT, [data], out, "--split-size", "1")
    assert rc == 2, err
    assert time.monotonic() - start < 20
    assert ("the job would have 240,000 maps and 4 reduces, more than the 100,000 tasks a job "
            "may have (a jobtracker's --max-tasks-per-job; `run` has the default): "
            "--split-size 1 cuts 240,000 bytes") in err
    assert not out.exists()
    assert_ok(cluster.submit(WORDCOUNT, [data], out, "--split-size", "64K"), cluster)
    assert merged(read_wordcount(out)) == {"a": 40_000, "b": 40_000, "c": 40_000}


UNSENDABLE_REPORTS = {
    # A message of undecodable bytes (surrogateescape), of 2 MB: the report
    # reached no jobtracker, and the job waited for it for ever.
    "surrogates": ('def map(k, line):\n    raise ValueError(f"bad line: {line}")\n',
                   r"ValueError: bad line: caf\udce9"),
    "huge": ('def map(k, line):\n    raise ValueError("bad: " + "x" * 2_000_000)\n',
             "characters cut]"),
    "counter": ("import pytxmr\n"
                "def map(k, line):\n    pytxmr.counter('g', 'n', 2**100)\n    yield k, 1\n",
                "OverflowError: pytxmr.counter('g', 'n'): the total "
                "1,267,650,600,228,229,401,496,703,205,376 is beyond"),
    # Past pytxmr.counter's checks: the worker's own check, then whatever
    # the wire refuses, fails the attempt.
    "big-total": ("import pytxmr.counters\n"
                  "def map(k, line):\n    pytxmr.counters.current.incr('g', 'n', 2**70)\n"
                  "    yield k, 1\n",
                  "the counter 'g' / 'n' is 1,180,591,620,717,411,303,424, beyond what 64 "
                  "bits hold"),
    "bad-name": ("import pytxmr.counters\n"
                 "def map(k, line):\n    pytxmr.counters.current.incr('g\\udce9', 'n', 1)\n"
                 "    yield k, 1\n",
                 "the attempt's report cannot be sent to the jobtracker: UnicodeEncodeError"),
}


@pytest.mark.parametrize("case", sorted(UNSENDABLE_REPORTS))
def test_a_report_the_wire_cannot_carry_fails_the_attempt(cluster: Cluster, case: str) -> None:
    """The attempt fails with what went wrong, and the cluster serves the
    next job (each of these held its slots for ever)."""
    source, expected = UNSENDABLE_REPORTS[case]
    job = cluster.base / f"unsendable_{case.replace('-', '_')}.py"
    job.write_text('encoding_errors = "surrogateescape"\n' + source
                   + "def reduce(k, vs):\n    yield k, sum(vs)\n")
    data = cluster.base / "unsendable.txt"
    data.write_bytes(b"caf\xe9\n")
    rc, out, err = cluster.submit(job, [data], cluster.base / f"out-unsendable-{case}",
                                  "--max-attempts", "1", timeout=60)
    assert rc == 1, out + err
    assert expected in err
    clean = cluster.base / "clean.txt"
    clean.write_text("a b a\n")
    assert_ok(cluster.submit(WORDCOUNT, [clean], cluster.base / f"out-after-{case}"), cluster)
    assert merged(read_wordcount(cluster.base / f"out-after-{case}")) == {"a": 2, "b": 1}


def test_a_work_directory_in_use_is_refused_to_a_second_daemon(cluster: Cluster) -> None:
    """A second jobtracker on a live one's work directory resumed its job,
    then failed it and emptied its finished output; a second tasktracker
    cleaned away the first's map outputs. Both are refused, naming the
    holder, and the cluster goes on."""
    jobtracker, worker = cluster.jobtracker, cluster.tasktrackers[0]
    assert jobtracker is not None and jobtracker.workdir and worker.workdir
    for module, workdir, holder in (
            (["pytxmr.jobtracker", "--port", "0", "--no-web"], jobtracker.workdir, jobtracker),
            (["pytxmr.tasktracker", "--jobtracker", cluster.address], worker.workdir, worker)):
        proc = subprocess.run([sys.executable, "-m", *module, "--workdir", str(workdir),
                               *cluster.client_args()[2:]],
                              capture_output=True, text=True, env=cluster.env, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert (f"the work directory {workdir} is in use by another daemon (pid {holder.pid})"
                in proc.stderr)
    data = write(cluster.base / "after-second.txt", "a b a\n")
    assert_ok(cluster.submit(WORDCOUNT, [data], cluster.base / "out-after-second"), cluster)
    assert merged(read_wordcount(cluster.base / "out-after-second")) == {"a": 2, "b": 1}


@pytest.mark.parametrize("mistake", ["damaged journal", "workdir a file", "listen",
                                     "shuffle listen"])
def test_a_daemon_that_cannot_start_says_why_in_one_line(tmp_path: Path, mistake: str) -> None:
    """A damaged journal exited 1 with sqlite's traceback alone; a file as
    --workdir said "[Errno 17] File exists", a bad --listen "invalid
    literal for int() with base 10"."""
    workdir = tmp_path / "work"
    daemon, args = "jobtracker", ["--port", "0", "--no-web"]
    if mistake == "damaged journal":
        workdir.mkdir()
        (workdir / "journal.sqlite").write_bytes(b"not a database" * 400)
        said = (f"jobtracker: cannot read the journal {workdir / 'journal.sqlite'} (file is not "
                f"a database): it is damaged, or not pytxmr's. Move it aside")
    elif mistake == "workdir a file":
        workdir.write_text("")
        said = f"jobtracker: the work directory {workdir} is a file, not a directory"
    elif mistake == "listen":
        args = ["--listen", "tcp:notaport", "--no-web"]
        said = "jobtracker: --listen tcp:notaport: not an endpoint to listen on (invalid literal"
    else:
        secret = tmp_path / "secret"
        secret.write_text("s" * 64)
        secret.chmod(0o600)
        daemon, args = "tasktracker", ["--shuffle-listen", "tcp:x", "--jobtracker", "127.0.0.1:1",
                                       "--secret-file", str(secret)]
        said = "tasktracker: --shuffle-listen tcp:x: not an endpoint to listen on (invalid literal"
    proc = subprocess.run([sys.executable, "-m", f"pytxmr.{daemon}", *args,
                           "--workdir", str(workdir)],
                          capture_output=True, text=True, env=base_env(tmp_path), timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_existing_output_is_refused_and_left_untouched(cluster: Cluster) -> None:
    """As in Hadoop, an existing output directory is never overwritten
    without --overwrite."""
    data = write(cluster.base / "small2.txt", "x y\n")
    out = cluster.base / "out-exists"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    rc, _, err = cluster.submit(WORDCOUNT, [data], out)
    assert rc != 0
    assert "already exists" in err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    # Nor with it: the directory is not a pytxmr output (tests/unit/test_overwrite.py).
    rc, _, err = cluster.submit(WORDCOUNT, [data], out, "--overwrite")
    assert rc == 2 and "not a pytxmr output" in err, err
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    assert_ok(cluster.submit(WORDCOUNT, [data], out, "--overwrite", "--reducers", "1"), cluster)
    assert_committed(out, 1)
    assert merged(read_wordcount(out)) == {"x": 1, "y": 1}


def test_a_job_gets_a_reducer_per_slot_by_default(cluster: Cluster) -> None:
    """Without --reducers or num_reducers, the reduce phase uses every slot
    (the shared cluster: 2 tasktrackers of 2 slots)."""
    data = write(cluster.base / "small4.txt", "p q r s t u v w\n")
    out = cluster.base / "out-default-reducers"
    assert_ok(cluster.submit(WORDCOUNT, [data], out), cluster)
    assert_committed(out, 4)
    assert merged(read_wordcount(out)) == {w: 1 for w in "pqrstuvw"}


def test_a_map_that_always_raises_fails_the_job_with_the_user_traceback(
        cluster: Cluster) -> None:
    """The submitter sees the exception and the line of its own module."""
    data = write(cluster.base / "small3.txt", "a b\nc d\n")
    job = write(cluster.base / "boom.py",
                "def helper(v):\n    raise KeyError('boom ' + v)\n\n"
                "def map(k, v):\n    yield helper(v), 1\n\n"
                "def reduce(k, vs):\n    yield k, sum(vs)\n")
    out = cluster.base / "out-boom"
    rc, stdout, err = cluster.submit(job, [data], out, "--max-attempts", "2")
    assert rc != 0, stdout
    assert f'File "{job}", line 5, in map' in err, err
    assert f'File "{job}", line 2, in helper' in err, err
    assert "KeyError: 'boom a b'" in err, err
    assert not (out / "_SUCCESS").exists()


# --- authentication -------------------------------------------------------------------

def test_a_tasktracker_with_a_wrong_secret_is_refused(cluster: Cluster) -> None:
    """It exits non-zero with a message saying what is wrong, instead of
    retrying forever."""
    bad = write(cluster.base / "wrong-secret", "not-the-secret\n")
    tt = cluster.start_tasktracker(1, wait=False, secret_file=bad)
    wait_for(lambda: tt.proc.poll() is not None, 20, "the refused tasktracker to exit")
    assert tt.proc.returncode != 0
    assert "wrong cluster secret" in tt.log(), tt.log()
    assert not tt.ready_path.exists()
    assert "Traceback" not in tt.log(), tt.log()
    assert cluster.jobtracker is not None
    assert "Refused a tasktracker login: wrong cluster secret" in cluster.jobtracker.log()


def test_a_submit_with_a_wrong_secret_is_refused(cluster: Cluster) -> None:
    """The submitter is told that the secret is wrong, not shown a traceback."""
    bad = write(cluster.base / "wrong-secret2", "also-not-the-secret\n")
    data = write(cluster.base / "small4.txt", "x\n")
    out = cluster.base / "out-wrong-secret"
    rc, _, err = cluster.submit(WORDCOUNT, [data], out, secret_file=bad)
    assert rc != 0
    assert "wrong cluster secret" in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("address, message, status", [
    ("7373", "a port needs a host, e.g. 127.0.0.1:7373", 2),
    ("127.0.0.1:70000", "a port from 1 to 65535", 2),
    # Not a usage error: exit 3, as for any jobtracker not reached.
    ("nosuchhost.invalid:7373", "cannot reach the jobtracker at nosuchhost.invalid:7373", 3),
    ("nosuchhost.invalid", "cannot reach the jobtracker at nosuchhost.invalid:7373", 3),
    ("http://127.0.0.1:7373", "not a URL", 2),
])
def test_a_bad_jobtracker_address_is_named_at_once(cluster: Cluster, address: str,
                                                   message: str, status: int) -> None:
    """Issue 14: ``--jobtracker 7373`` was looked up as a host name and hung
    for more than 10 minutes."""
    start = time.monotonic()
    rc, _, err = run_cli("jobs", "--jobtracker", address, "--secret-file",
                         str(cluster.secret_file), env=cluster.env, cwd=cluster.base, timeout=30)
    assert rc == status and message in err, err
    assert time.monotonic() - start < 15


def test_one_host_needs_no_setup_with_the_default_secret_and_work_dirs(
        make_cluster: Any) -> None:
    """Without --secret-file and --workdir: the jobtracker creates
    HOME/.pytxmr/cluster-secret (0600), two tasktrackers and submit find it,
    and each tasktracker gets its own work dir under HOME/.pytxmr."""
    c: Cluster = make_cluster()
    c.secret_file = None
    c.start_jobtracker(default_workdir=True)
    secret = c.home / ".pytxmr" / "cluster-secret"
    assert secret.exists()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert len(secret.read_text().strip()) >= 32
    c.start_tasktracker(1, default_workdir=True)
    c.start_tasktracker(1, default_workdir=True)
    data = write(c.base / "in.txt", "p q p\n" * 1000)
    assert_ok(c.submit(WORDCOUNT, [data], c.base / "out", "--split-size", "2K",
                       "--reducers", "2", secret_file=None), c)
    assert merged(read_wordcount(c.base / "out")) == {"p": 2000, "q": 1000}
    homes = sorted(p.name for p in (c.home / ".pytxmr").iterdir())
    assert homes == ["cluster-secret", "jobtracker", "tasktracker", "tasktracker-2"], homes
    # $PYTXMR_SECRET comes before the default file.
    env = {**c.env, "PYTXMR_SECRET": "not-it"}
    rc, _, err = run_cli("jobs", "--jobtracker", c.address, env=env, cwd=c.base)
    assert rc != 0 and "wrong cluster secret" in err
    env["PYTXMR_SECRET"] = secret.read_text().strip()
    rc, out, err = run_cli("jobs", "--jobtracker", c.address, env=env, cwd=c.base)
    assert rc == 0 and "succeeded" in out, err


def test_a_tasktracker_started_before_the_jobtracker_waits_for_it(make_cluster: Any) -> None:
    """Start order does not matter: a tasktracker retries until the
    jobtracker is up, then registers."""
    c: Cluster = make_cluster()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tt = c.start_tasktracker(1, wait=False, jobtracker=f"127.0.0.1:{port}")
    wait_for(lambda: "retry" in tt.log(), 20, "the tasktracker to retry")
    c.start_jobtracker("--port", str(port))
    tt.wait_ready()
    data = write(c.base / "in.txt", "z\n")
    assert_ok(c.submit(WORDCOUNT, [data], c.base / "out"), c)


@pytest.mark.parametrize("peer", ["silent", "closing"])
def test_a_jobtracker_gone_quiet_in_the_login_leaves_no_stuck_or_noisy_tasktracker(
        make_cluster: Any, peer: str) -> None:
    """Something that accepts the tasktracker's connection and then says
    nothing (or hangs up) in the middle of its login: the tasktracker
    retries (a lost login used to hang for ever, or to leave Twisted's
    ClientService an 'Unhandled Error') and stops at once on SIGTERM."""
    c: Cluster = make_cluster()
    accepted: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        tt = c.start_tasktracker(1, wait=False,
                                 jobtracker=f"127.0.0.1:{server.getsockname()[1]}")
        try:
            server.settimeout(20)
            for _ in range(2 if peer == "closing" else 1):
                conn, _ = server.accept()
                accepted.append(conn)
                if peer == "closing":
                    conn.close()  # during the login: the tasktracker connects again
            started = time.monotonic()
            tt.proc.send_signal(signal.SIGTERM)
            assert tt.proc.wait(10) == 0, tt.log()
            assert time.monotonic() - started < 3, tt.log()
        finally:
            for conn in accepted:
                conn.close()
    assert "Traceback" not in tt.log() and "Unhandled" not in tt.log(), tt.log()


# --- robustness -----------------------------------------------------------------------

def _poke(port: int, payload: bytes) -> None:
    """Send ``payload`` and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(1.0)
        try:
            while s.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def _banana(*items: object) -> bytes:
    """Items in Banana, PB's encoding: str, int and lists of them."""
    out = b""
    for item in items:
        if isinstance(item, str):
            out += bytes([len(item)]) + b"\x82" + item.encode()
        elif isinstance(item, int):
            out += bytes([item]) + b"\x81"
        else:
            assert isinstance(item, list)
            out += bytes([len(item)]) + b"\x80" + _banana(*item)
    return out


#: Banana that is no PB: after the dialect, messages of the wrong shape,
#: answers to no question, references to nothing.
NOT_PB = [_banana("pb", 5), _banana("pb", []), _banana("pb", ["zork", 1]),
          _banana("pb", ["message"]), _banana("pb", ["answer", 99, 1]),
          _banana("pb", ["decref", 77]), _banana("pb", ["message", 1, "root", "login", 1, 2, 3])]


_MALFORMED_CALLS = """
import sys
from twisted.internet import defer, task
from pytxmr import client

async def main(reactor):
    with open(sys.argv[2], "rb") as f:
        conn = await client.connect(reactor, sys.argv[1], f.read().strip())
    for method, *args in (("nonexistent",), ("jobs", 1, 2), ("status",)):
        try:
            await conn.call(method, *args)
        except client.ClusterError as e:
            print(e)
    print(len(await conn.call("jobs")) >= 0)
    conn.close()

task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
"""


def test_a_logged_in_peer_s_malformed_calls_are_refused_in_a_line(cluster: Cluster) -> None:
    """A call of no method, or with arguments its method does not take,
    logged a traceback each in the jobtracker's log ("Peer will receive
    following PB traceback"): any user of a cluster with users may send
    them. Refused with a line each; the session goes on."""
    assert cluster.jobtracker is not None
    script = write(cluster.base / "malformed.py", _MALFORMED_CALLS)
    proc = subprocess.run([sys.executable, str(script), cluster.address,
                           str(cluster.secret_file)], capture_output=True, text=True,
                          timeout=60, env=cluster.env, cwd=cluster.base)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in said[:3]] == [
        "a malformed call of 'nonexistent'", "a malformed call of 'jobs'",
        "a malformed call of 'status'"], said
    assert said[3] == "True", said
    log = wait_for(lambda: (text := cluster.jobtracker.log()).count("Refused a malformed call of")
                   >= 3 and text, 10, "a line for each")
    assert "Refused a malformed call of 'nonexistent' (no such method)" in log, log
    assert "Traceback" not in log and "Unhandled Error" not in log, log


def test_garbage_on_the_ports_does_not_harm_the_cluster(cluster: Cluster) -> None:
    """Random bytes and an HTTP request on the PB and shuffle ports are
    dropped; the daemons keep running jobs. Banana that is not PB is
    dropped with a line each, where each was a traceback in the
    jobtracker's log; a client sent to a port that is not PB says so, where
    it printed Twisted's tracebacks."""
    assert cluster.jobtracker is not None
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(20000))
    http = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n"
    shuffle_ports = [tt.ready["shuffle_port"] for tt in cluster.tasktrackers if tt.ready]
    for port in [cluster.jobtracker.ready["port"], *shuffle_ports]:
        for payload in (garbage, http, b"\x00" * 5 + b"\xff" * 70000):
            _poke(port, payload)
    for payload in NOT_PB:
        _poke(cluster.jobtracker.ready["port"], payload)
    for daemon in [cluster.jobtracker, *cluster.tasktrackers[:2]]:
        assert daemon.proc.poll() is None, f"{daemon.name} died:\n{daemon.log()[-3000:]}"
    log = wait_for(lambda: (text := cluster.jobtracker.log()).count(": not PB (") >= len(NOT_PB)
                   and text, 10, "a line for each")
    assert "Traceback" not in log and "Unhandled Error" not in log, log
    assert "Refused a malformed call of 'login' before login" in log, log
    rc, _, err = run_cli("jobs", "--jobtracker", f"127.0.0.1:{shuffle_ports[0]}",
                         *cluster.client_args()[2:], env=cluster.env, cwd=cluster.base)
    assert rc == 2, err
    assert f"what answers at 127.0.0.1:{shuffle_ports[0]} does not speak PB" in err, err
    assert "Traceback" not in err, err
    data = write(cluster.base / "after-garbage.txt", "after garbage garbage\n" * 50)
    out = cluster.base / "out-after-garbage"
    assert_ok(cluster.submit(WORDCOUNT, [data], out, "--reducers", "2"), cluster)
    assert merged(read_wordcount(out)) == {"after": 50, "garbage": 100}


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_peer_that_sends_much_before_it_logs_in_is_dropped(make_cluster: Any) -> None:
    """Banana nests lists without a limit: 10 MB of list openings, from
    anyone who could connect, took the jobtracker from 60 to 700 MB until
    the login timer dropped them. And a flood of garbage connections wrote
    a line each: now the first 20, then a sample. (A cluster of its own:
    the count of drops starts at 0.)"""
    cluster: Cluster = make_cluster()
    jobtracker = cluster.start_jobtracker()
    cluster.start_tasktrackers(2, 1)
    port = jobtracker.ready["port"]
    before = _rss_kb(jobtracker.proc.pid)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with contextlib.suppress(OSError):  # reset once the jobtracker has had enough
            s.sendall(b"\x01\x80" * 5_000_000)
    wait_for(lambda: "bytes and no login" in jobtracker.log(), 10, "the peer to be dropped")
    assert _rss_kb(jobtracker.proc.pid) - before < 50_000
    for _ in range(40):
        _poke(port, b"\x00" * 5 + b"\xff" * 100)
    wait_for(lambda: jobtracker.log().count("Dropped a connection from") >= 20, 10,
             "the first drops to be said")
    assert jobtracker.log().count("Dropped a connection from") <= 21
    data = write(cluster.base / "after-flood.txt", "after flood flood\n" * 50)
    out = cluster.base / "out-after-flood"
    assert_ok(cluster.submit(WORDCOUNT, [data], out), cluster)
    assert merged(read_wordcount(out)) == {"after": 50, "flood": 100}


def test_a_tasktracker_says_why_it_is_not_registered(cluster: Cluster, tmp_path: Path) -> None:
    """Sent to a port where nothing listens, it logged only ClientService's
    "Scheduling retry 7 to connect <TCP4ClientEndpoint object at 0x...>";
    sent to a port that is not PB, a traceback at every try."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    shuffle = cluster.tasktrackers[0].ready["shuffle_port"]
    for port, why in ((closed, f"cannot reach it at 127.0.0.1:{closed} (Connection was refused"),
                      (shuffle, "cannot log in to it: what answers there does not speak PB")):
        log = tmp_path / f"tt-{port}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytxmr.tasktracker", "--jobtracker", f"127.0.0.1:{port}",
                 "--workdir", str(tmp_path / f"tt-{port}"), *cluster.client_args()[2:]],
                stdout=out, stderr=subprocess.STDOUT, env=cluster.env)
        try:
            wait_for(lambda: log.read_text().count("Scheduling retry") >= 3, 30, "three tries")
        finally:
            proc.terminate()
            proc.wait(30)
        text = log.read_text()
        assert text.count("Not registered with the jobtracker: ") == 1, text
        assert f"Not registered with the jobtracker: {why}" in text, text
        assert f"to connect the jobtracker at 127.0.0.1:{port} in " in text, text
        assert "Traceback" not in text and "object at 0x" not in text, text


def test_a_tasktracker_whose_login_gets_no_answer_says_so_and_tries_again(
        make_cluster: Any) -> None:
    """A port whose server waits for its client to speak first (a web
    server, a store) held the login for ever, the tasktracker silent."""
    from pytxmr.tasktracker.pbadapter import LOGIN_TIMEOUT

    c: Cluster = make_cluster()
    accepted: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        tt = c.start_tasktracker(1, wait=False, jobtracker=f"127.0.0.1:{port}")
        try:
            server.settimeout(LOGIN_TIMEOUT + 20)
            # Its login; a second connection asking whether the port speaks
            # TLS (a ClientHello) once the first heard nothing; its next login.
            for _ in range(3):
                conn, _ = server.accept()
                accepted.append(conn)
            accepted[1].settimeout(5)
            assert accepted[1].recv(1) == b"\x16"  # a TLS handshake record
            assert (f"Not registered with the jobtracker: cannot log in to it: no answer in "
                    f"{LOGIN_TIMEOUT:g}s: is it the jobtracker's port?") in tt.log(), tt.log()
            tt.proc.send_signal(signal.SIGTERM)
            assert tt.proc.wait(10) == 0, tt.log()
        finally:
            for conn in accepted:
                conn.close()
    assert "Traceback" not in tt.log(), tt.log()


def test_job_control_commands_list_show_and_kill_a_job(cluster: Cluster,
                                                       corpus: Path) -> None:
    """jobs, status and kill work on a running job; the submitter of a killed
    job exits non-zero and no task child survives it."""
    barrier = cluster.base / "never-opened"
    job = write(cluster.base / "blocked.py", barrier_job(barrier))
    out = cluster.base / "out-killed"
    sub = cluster.popen_submit(job, [corpus_files(corpus)[0]], out, "--split-size", "256K")
    try:
        def running_job() -> str | None:
            if sub.poll() is not None:
                pytest.fail(f"submit ended early: {sub.communicate()}")
            rc, stdout, err = cluster.cli("jobs")
            assert rc == 0, err
            m = re.search(r"^(job_\S+)\s+running\b.*blocked\.py", stdout, re.MULTILINE)
            return m.group(1) if m else None

        job_id = wait_for(running_job, 20, "the job to be listed as running", 0.1)
        wait_for(lambda: any(attempt_dirs(tt.workdir) for tt in cluster.tasktrackers), 20,
                 "a map attempt to start")
        rc, stdout, err = cluster.cli("status", job_id, "--json")
        assert rc == 0, err
        status = json.loads(stdout)
        assert status["state"] == "running" and status["maps"]["total"] >= 3
        rc, stdout, err = cluster.cli("status", job_id)
        assert rc == 0 and stdout.startswith(f"{job_id}  running  ") and "maps" in stdout
        rc, stdout, err = cluster.cli("kill", job_id, "--json")
        assert rc == 0, err
        killed = json.loads(stdout)
        # Killed; while its output is cleaned (the logs of its killed
        # attempts awaited, its history written), "running" for programs.
        assert killed.get("finishing", killed["state"]) == "killed", killed
        # Its tasks are no longer shown running.
        assert killed["maps"]["running"] == 0 and killed["reduces"]["running"] == 0
        rc = sub.wait(30)
        _, err = sub.communicate()
        assert rc != 0
        assert "killed" in err, err
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert not (out / "_SUCCESS").exists()
    rc, stdout, _ = cluster.cli("status", job_id)
    assert stdout.startswith(f"{job_id}  killed  "), stdout
    rc, _, err = cluster.cli("kill", job_id)
    assert rc == 1 and f"{job_id} has ended (killed): nothing to kill" in err
    wait_for(lambda: not any(attempt_dirs(tt.workdir) for tt in cluster.tasktrackers), 20,
             "the killed job's attempts to be cleaned up")
    # The killed maps' children end.
    live = [tt for tt in cluster.tasktrackers if tt.proc.poll() is None]
    wait_for(lambda: all(not tt.task_children() for tt in live), 20,
             "the killed maps' processes to end")
    rc, _, err = cluster.cli("status", "job_no_such_job")
    assert rc != 0 and "no job" in err


def test_an_interrupted_submit_says_what_goes_on_without_it(cluster: Cluster,
                                                            corpus: Path) -> None:
    """Ctrl-C on `submit` only stops its waiting: it names the job that goes
    on running and how to stop it; interrupted while the jobtracker was
    still checking the module, the submission is withdrawn (it was admitted
    and ran, a job no one had an id of, and until then could be neither
    listed nor killed)."""
    barrier = cluster.base / "interrupted-barrier"
    job = write(cluster.base / "waited.py", barrier_job(barrier))
    sub = cluster.popen_submit(job, [corpus_files(corpus)[0]], cluster.base / "out-waited", "-q")
    try:
        def running_job() -> str | None:
            rc, stdout, err = cluster.cli("jobs")
            m = re.search(r"^(job_\S+)\s+running\b.*waited\.py", stdout, re.MULTILINE)
            return m.group(1) if m else None

        job_id = wait_for(running_job, 20, "the job to be listed as running", 0.1)
        sub.send_signal(signal.SIGINT)
        assert sub.wait(20) == 130
        assert sub.communicate()[1] == (
            f"pytxmr: interrupted: {job_id} goes on running on the cluster "
            f"(`pytxmr kill {job_id}` stops it)\n")
        rc, stdout, _ = cluster.cli("status", job_id)
        assert stdout.startswith(f"{job_id}  running  "), stdout
        barrier.touch()
        wait_for(lambda: cluster.cli("status", job_id)[1].startswith(f"{job_id}  succeeded"),
                 30, "the job to succeed without its submitter")
        # The module's first import (the jobtracker's check) takes 15 s.
        checking = cluster.base / "checking"
        slow = write(cluster.base / "slow_import.py", WORDCOUNT.read_text() + textwrap.dedent(f"""
            import os as _os, time as _time
            if not _os.path.exists({str(checking)!r}):
                open({str(checking)!r}, "w").close()
                _time.sleep(15)
            """))
        out = cluster.base / "out-slow-import"
        sub = cluster.popen_submit(slow, [corpus_files(corpus)[0]], out, "-q")
        wait_for(checking.exists, 20, "the jobtracker to check the module")
        sub.send_signal(signal.SIGINT)
        assert sub.wait(20) == 130
        assert sub.communicate()[1] == (
            "pytxmr: interrupted: the job was being submitted: the jobtracker withdraws it, "
            "unless it had admitted it already (see `pytxmr jobs`)\n")
        jobtracker = cluster.jobtracker
        assert jobtracker is not None and jobtracker.workdir is not None
        wait_for(lambda: "was withdrawn: its client went away" in jobtracker.log(), 10,
                 "the submission to be withdrawn")
        assert not list((jobtracker.workdir / "jobs").iterdir())  # its files gone
        assert not out.exists()
        assert "slow_import.py" not in cluster.cli("jobs")[1]
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_a_tasktracker_started_during_a_job_gets_tasks(make_cluster: Any,
                                                       corpus: Path) -> None:
    """A worker that joins a running job takes pending tasks."""
    c: Cluster = make_cluster()
    c.start_jobtracker()
    first = c.start_tasktracker(1)
    barrier = c.base / "barrier"
    job = write(c.base / "slow.py", barrier_job(barrier))
    inputs = corpus_files(corpus)[:1]
    sub = c.popen_submit(job, inputs, c.base / "out", "--split-size", "128K", "--reducers", "2")
    try:
        wait_for(lambda: attempt_dirs(first.workdir), 20, "the first map on the first worker")
        late = c.start_tasktracker(1)
        wait_for(lambda: attempt_dirs(late.workdir), 20, "a map on the late worker")
        barrier.touch()
        assert_ok((sub.wait(60), *sub.communicate()), c)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert merged(read_wordcount(c.base / "out")) == word_counts(inputs)


def test_sigterm_ends_a_tasktrackers_children_and_cleans_its_work_dir(
        make_cluster: Any, corpus: Path) -> None:
    """A stopped worker leaves no task process and no map output behind."""
    c: Cluster = make_cluster()
    c.start_jobtracker()
    tt = c.start_tasktracker(2)
    job = write(c.base / "stuck.py", barrier_job(c.base / "never"))
    sub = c.popen_submit(job, corpus_files(corpus)[:1], c.base / "out", "--split-size", "256K")
    try:
        wait_for(lambda: len(attempt_dirs(tt.workdir)) == 2, 20, "two running maps")
        children = wait_for(lambda: tt.task_children(), 10, "task children")
        tt.proc.send_signal(signal.SIGTERM)
        assert tt.proc.wait(15) == 0, tt.log()
        # Ended and reaped by the tasktracker itself, not left to init.
        alive = [p for p in children if p.is_running()]
        assert not alive, f"task children outlived the tasktracker: {alive}"
        leftovers = [p for p in tt.workdir.rglob("*") if p.name != ".lock"]
        assert leftovers == [], leftovers
        assert "Traceback" not in tt.log(), tt.log()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def _scratch_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment with a HOME and a TMPDIR of their own (the latter
    returned too), to see what a run leaves there."""
    env = base_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)
    return env, scratch


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_an_interrupted_run_stops_its_cluster_and_leaves_nothing(
        tmp_path: Path, corpus: Path, sig: int, request: pytest.FixtureRequest) -> None:
    """Ctrl-C, SIGTERM or its terminal closed (SIGHUP, which killed it with
    its files left) during `run`: its services stop, the job fails (an
    empty output directory), and no process, temporary directory or
    shuffle memory is left behind."""
    job = write(tmp_path / "stuck.py", barrier_job(tmp_path / "never"))
    env, scratch = _scratch_env(tmp_path)
    out = tmp_path / "out"
    memory: set[Path] = set()
    # Should `run` leave its shuffle memory (RAM), the test must not.
    request.addfinalizer(lambda: [shutil.rmtree(m, ignore_errors=True) for m in memory])
    # A shell runs background jobs with SIGINT ignored, and a child inherits
    # that (so would `run`, and Twisted then leaves SIGINT alone): restore it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "run", str(job), str(corpus_files(corpus)[0]),
         "-o", str(out), "--split-size", "256K", "-q"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_dirs = wait_for(lambda: [p for tt in scratch.glob("pytxmr-run-*/tasktracker-*")
                                     for p in attempt_dirs(tt)], 20, "running maps")
        memory.update(Path(shufflememory.memory_dir(str(p.parents[2]))) for p in run_dirs)
        assert memory and all(m.is_dir() for m in memory)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "no zygote or task process"
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as e:
            alive = [c.pid for c in children if c.is_running()]
            raise AssertionError(f"`run` still up 30s after the signal: {e.stderr!r}, "
                                 f"children alive {alive}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err  # 130 after Ctrl-C, 143 after SIGTERM, 129
    assert "interrupted" in err and "Traceback" not in err, err
    assert not [p for p in children if p.is_running()], "processes outlived `run`"
    assert list(scratch.iterdir()) == []
    # Only the mark that lets a rerun --overwrite it.
    assert [p.name for p in out.iterdir()] == ["_PYTXMR_OUTPUT"]
    assert not [m for m in memory if m.exists()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_an_interrupted_inline_run_leaves_nothing(tmp_path: Path, corpus: Path,
                                                  sig: int) -> None:
    """SIGTERM, or SIGHUP as its terminal closes (which killed it, its files
    left), unwinds ``run --inline`` as Ctrl-C does."""
    job = write(tmp_path / "stuck.py", barrier_job(tmp_path / "never"))
    env, scratch = _scratch_env(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "run", "--inline", str(job),
         str(corpus_files(corpus)[0]), "-o", str(out), "-q"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: (out / "_PYTXMR_OUTPUT").exists(), 30, "the job to claim its output")
        time.sleep(0.3)  # in its map
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert list(scratch.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ["_PYTXMR_OUTPUT"]


@pytest.mark.parametrize("inline", [False, True], ids=["run", "inline"])
def test_a_run_whose_terminal_closes_stops_and_leaves_nothing(tmp_path: Path, corpus: Path,
                                                              inline: bool) -> None:
    """Its terminal closed (SIGHUP, then writes to it fail with EIO): `run`
    unwinds, and says it was interrupted (129), where its message to the
    gone terminal made it "stopping failed" (1)."""
    import fcntl
    import pty
    import termios

    job = write(tmp_path / "stuck.py", barrier_job(tmp_path / "never"))
    env, scratch = _scratch_env(tmp_path)
    out = tmp_path / "out"
    master, slave = pty.openpty()

    def terminal() -> None:  # the session's controlling terminal, as a shell's
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "run", *(["--inline"] if inline else []), str(job),
         str(corpus_files(corpus)[0]), "-o", str(out)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, preexec_fn=terminal)
    os.close(slave)
    try:
        # Its output claimed, the job is under way (a loaded machine can take
        # seconds from the scratch directory to there).
        wait_for(lambda: (out / "_PYTXMR_OUTPUT").exists(), 30, "the job to claim its output")
        time.sleep(0.5)  # in its maps
        os.close(master)  # the terminal closes: its session leader gets SIGHUP
        master = -1
        assert proc.wait(30) == 128 + signal.SIGHUP
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(scratch.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ["_PYTXMR_OUTPUT"]


_INTERRUPTED_API = """
import os, signal, sys, threading, time
import pytxmr

job, data, out, started, again = sys.argv[1:6]
signal.signal(signal.SIGINT, signal.default_int_handler)

def interrupt():
    while not os.path.exists(started):
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
try:
    pytxmr.run(job, data, out)
except KeyboardInterrupt:
    print("left", sorted(os.listdir(out)))
print("again", pytxmr.run(again, data, out, overwrite=True).ok)
"""


def test_an_interrupted_python_api_run_stops_its_cluster_and_job(tmp_path: Path) -> None:
    """Ctrl-C in a program blocked in ``pytxmr.run`` stops the local cluster
    and fails the job, as it does for `run`: the cluster ran on in the
    background, the job finished into the output, and a second ``run``
    was refused meanwhile (its output being written)."""
    started = tmp_path / "started"
    job = write(tmp_path / "stuck.py", "import os, time\n\n"
                f"def map(key, value):\n    open({str(started)!r}, 'w').close()\n"
                "    time.sleep(60)\n    yield value, 1\n")
    data = write(tmp_path / "in.txt", "a b\nc\n")
    script = write(tmp_path / "script.py", _INTERRUPTED_API)
    env, scratch = _scratch_env(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), str(job), str(data), str(out),
                           str(started), str(ROOT / "examples" / "wordcount.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only the mark that lets a rerun --overwrite it; then the rerun's output.
    assert proc.stdout.splitlines() == ["left ['_PYTXMR_OUTPUT']", "again True"], proc.stderr
    assert merged(read_wordcount(out)) == {"a": 1, "b": 1, "c": 1}
    assert list(scratch.iterdir()) == []


def _processes_with(marker: str, but: int | None = None) -> list[psutil.Process]:
    """Processes whose command line holds ``marker`` (but ``but``, the
    command that names it)."""
    return [p for p in psutil.process_iter(["cmdline"])
            if marker in " ".join(p.info["cmdline"] or ()) and p.pid not in (but, os.getpid())]


def test_no_process_a_task_starts_outlives_it(tmp_path: Path) -> None:
    """What a task starts (a streaming job's commands, a process the job's
    code leaves running) ends with it, whether `run` ends the task or the
    task ends: they were left to init, sleeping for ever."""
    left, streaming = f"98{random.randrange(10**6)}.5", f"98{random.randrange(10**6)}.6"
    data = write(tmp_path / "in.txt", "a\nb\n")
    job = write(tmp_path / "spawns.py", "import subprocess\n\n"
                f"def map(k, line):\n    subprocess.Popen(['sleep', '{left}'])\n"
                "    yield line, 1\n\ndef reduce(k, vs):\n    yield k, sum(vs)\n")
    env = base_env(tmp_path)
    try:
        rc, out, err = run_cli("run", str(job), str(data), "-o", str(tmp_path / "o1"), "-q",
                               env=env, cwd=tmp_path)
        assert rc == 0, err
        assert _processes_with(left) == []
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytxmr", "run", "--mapper", f"sleep {streaming}; cat",
             "--reducer", "cat", str(data), "-o", str(tmp_path / "o2"), "-q"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=tmp_path)
        try:
            wait_for(lambda: [p for p in _processes_with(streaming, but=proc.pid)
                              if p.info["cmdline"] == ["sleep", streaming]],
                     20, "the mapper's command")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert _processes_with(streaming) == []  # neither `sh -c` nor its `sleep`
    finally:
        for p in _processes_with(left) + _processes_with(streaming):
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_a_sigkilled_tasktracker_leaves_no_command_of_its_tasks(make_cluster: Any) -> None:
    """A SIGKILLed tasktracker takes its zygote and task children with it
    (PR_SET_PDEATHSIG), and each child's guard then kills its process
    group: a streaming command does not run on under init."""
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktracker(1)
    marker = f"97{random.randrange(10**6)}.5"
    data = write(cluster.base / "in-killed.txt", "a\nb\n")
    sub = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "submit", "--mapper", f"sleep {marker}; cat",
         "--reducer", "cat", str(data), "-o", str(cluster.base / "out-killed-tt"), "-q",
         "--reconnect-timeout", "0", *cluster.client_args()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cluster.env, cwd=cluster.base)
    try:
        wait_for(lambda: [p for p in _processes_with(marker, but=sub.pid)
                          if p.info["cmdline"] == ["sleep", marker]], 20, "the mapper's command")
        for tt in cluster.tasktrackers:
            tt.proc.send_signal(signal.SIGKILL)
            tt.proc.wait(10)
        wait_for(lambda: _processes_with(marker, but=sub.pid) == [], 10,
                 "the command to end with its task")
    finally:
        for p in _processes_with(marker, but=sub.pid):
            with contextlib.suppress(psutil.Error):
                p.kill()
        sub.kill()
        sub.communicate()


GROUP_CHECKS = """
import os
import signal
import subprocess


def _guards():
    \"\"\"Processes named pytxmr-guard in this task's process group.\"\"\"
    found = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    comm, rest = f.read().rsplit(")", 1)
            except OSError:
                continue
            if comm.endswith("(pytxmr-guard") and int(rest.split()[2]) == os.getpgrp():
                found += 1
    return found


def map(key, line):
    before = _guards()
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
        os.killpg(0, sig)  # its own group: the guard is in it
    child = subprocess.Popen(["true"])
    waited, _ = os.waitpid(-1, 0)  # any child: its own only
    try:
        os.waitpid(-1, 0)
        more = "another child"
    except ChildProcessError:
        more = "none"
    yield "checks", (before, _guards(), waited == child.pid, more)


def reduce(key, values):
    for value in values:
        yield key, value
"""


def test_a_tasks_signals_to_its_group_and_waits_for_any_child_are_its_own(
        tmp_path: Path) -> None:
    """The guard is in the task's group but is no child of the task's: a
    task that signals its own group (SIGHUP, SIGTERM, SIGUSR1) neither ends
    it nor is killed by it, and waiting for any child finds the task's own."""
    job = write(tmp_path / "group.py", GROUP_CHECKS)
    data = write(tmp_path / "in.txt", "a\n")
    rc, _, err = run_cli("run", str(job), str(data), "-o", str(tmp_path / "out"), "-q",
                         env=base_env(tmp_path), cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "out" / "part-00000").read_text() + (
        tmp_path / "out" / "part-00001").read_text() == 'checks\t[1, 1, true, "none"]\n'


def test_ctrl_c_before_main_handles_it_says_interrupted_only(tmp_path: Path) -> None:
    """main() imports the client and daemon code before its own handling of
    Ctrl-C starts: an interrupt there is no error worth a traceback either."""
    code = ("import pytxmr.cli as cli\n"
            "def main(argv=None):\n"
            "    raise KeyboardInterrupt\n"
            "cli.main = main\n"
            "cli.entry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=base_env(tmp_path), cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (130, "pytxmr: interrupted\n"), done.stderr


@pytest.mark.parametrize("inline", [False, True])
def test_a_corrupt_gz_fails_the_job_and_a_missing_input_is_refused_alike_inline(
        tmp_path: Path, inline: bool) -> None:
    """Exit statuses as documented, with and without --inline: a corrupt
    .gz is found while the maps read it, so the job fails (1), naming the
    file; a missing input is refused before anything runs (2)."""
    import gzip

    (tmp_path / "home").mkdir()
    data = gzip.compress((ROOT / "data" / "sample.txt").read_bytes() * 20)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(data[:len(data) // 2])  # truncated
    flags = ["--inline"] if inline else []
    rc, _, err = run_cli("run", str(WORDCOUNT), str(bad), "-o", str(tmp_path / "o1"), "-q",
                         *flags, env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert rc == 1, err
    assert re.search(r"failed: pytxmr.splits.InputError: .*bad.gz: corrupt or truncated", err), err
    assert not (tmp_path / "o1" / "_SUCCESS").exists()
    rc, _, err = run_cli("run", str(WORDCOUNT), str(tmp_path / "none.gz"), "-o",
                         str(tmp_path / "o2"), "-q", *flags,
                         env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert (rc, err) == (2, f"pytxmr: input path does not exist: {tmp_path / 'none.gz'}\n")
    # The user's error: its summary line (run --inline printed the traceback alone) and
    # the traceback from the user's code.
    job = write(tmp_path / "bad.py", "def map(k, v):\n    raise ValueError('bad ' + v)\n"
                "    yield v, 1\n")
    rc, _, err = run_cli("run", str(job), str(ROOT / "data" / "sample.txt"), "-o",
                         str(tmp_path / "o3"), "-q", *flags,
                         env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert rc == 1, err
    assert re.search(r"^(inline job|job_\S+) failed: ValueError: bad ", err, re.M), err
    assert f'File "{job}", line 2, in map' in err, err


@pytest.mark.parametrize("inline", [False, True])
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, inline: bool) -> None:
    """`pytxmr run ... | head`: the summary cannot be written, which is no
    error worth a traceback, nor a failure: the job itself is done."""
    (tmp_path / "home").mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "run", str(WORDCOUNT), str(ROOT / "data" / "sample.txt"),
         "-o", str(out), *(["--inline"] if inline else [])],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before anything is written: the first write fails
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert err == "", err
    assert_committed(out, 2)


@pytest.mark.parametrize("inline", [False, True])
def test_a_job_module_in_another_encoding_runs_as_python_reads_it(tmp_path: Path,
                                                                  inline: bool) -> None:
    (tmp_path / "home").mkdir()
    job = tmp_path / "latin1.py"
    job.write_bytes(b"# -*- coding: latin-1 -*-\ndef map(offset, line):\n"
                    b"    yield 'caf\xe9', len(line.split())\n\n"
                    b"def reduce(key, values):\n    yield key, sum(values)\n")
    out = tmp_path / "out"
    rc, _, err = run_cli("run", str(job), str(ROOT / "data" / "sample.txt"), "-o", str(out),
                         *(["--inline"] if inline else []),
                         env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert rc == 0, err
    words = sum(len(line.split()) for line in (ROOT / "data" / "sample.txt").open())
    parts = "".join(p.read_text(encoding="utf-8") for p in sorted(out.glob("part-*")))
    assert parts == f"café\t{words}\n"


def test_a_command_started_with_its_stderr_closed_keeps_its_status(tmp_path: Path) -> None:
    """``2>&-``: Python has no sys.stderr; the command failed with 120
    (writing to nothing) instead of its own status."""
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytxmr", "run", "--inline", str(tmp_path / "missing.py"),
         str(ROOT / "data" / "sample.txt"), "-o", str(tmp_path / "out")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2),
        env=base_env(tmp_path / "home"), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2


@pytest.mark.parametrize("how", ["run", "inline", "submit"])
def test_a_failure_is_its_status_when_stderr_s_reader_went_away(tmp_path: Path,
                                                                how: str) -> None:
    """`pytxmr run ... 2>&1 | head -2`: the failure, written after the
    reader left, ended the command with status 0 (a tester's)."""
    (tmp_path / "home").mkdir()
    job = write(tmp_path / "broken.py", "def map(offset, line)\n    yield line, 1\n")
    command = {"run": ["run"], "inline": ["run", "--inline"],
               "submit": ["submit", "--jobtracker", "127.0.0.1:1"]}[how]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", *command, str(WORDCOUNT if how == "submit" else job),
         str(ROOT / "data" / "sample.txt"), "-o", str(tmp_path / "out")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**base_env(tmp_path / "home"), "PYTXMR_SECRET": "s"}, cwd=tmp_path)
    assert proc.stderr is not None
    proc.stderr.close()  # before anything is written
    assert proc.wait(60) == (3 if how == "submit" else 2)


def test_a_job_survives_a_tasktracker_killed_in_the_middle(make_cluster: Any,
                                                           corpus: Path) -> None:
    """Attempts and map outputs lost with a SIGKILLed worker are run again
    elsewhere; the output is still exact."""
    c: Cluster = make_cluster()
    c.start_jobtracker()
    keep = c.start_tasktracker(1)
    doomed = c.start_tasktracker(1)
    barrier = c.base / "barrier"
    job = write(c.base / "slow.py", barrier_job(barrier))
    inputs = corpus_files(corpus)[:1]
    sub = c.popen_submit(job, inputs, c.base / "out", "--split-size", "128K", "--reducers", "2")
    try:
        wait_for(lambda: attempt_dirs(keep.workdir) and attempt_dirs(doomed.workdir), 20,
                 "maps running on both workers")
        doomed.proc.kill()
        doomed.proc.wait(10)
        barrier.touch()
        stdout = assert_ok((sub.wait(60), *sub.communicate()), c)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert "killed map attempts" in stdout
    assert_committed(c.base / "out", 2)
    assert merged(read_wordcount(c.base / "out")) == word_counts(inputs)


def test_a_jobtracker_listening_on_a_unix_socket(make_cluster: Any) -> None:
    """--listen takes any endpoint string: a UNIX socket's crashed the
    jobtracker at its start (a UNIX address has no port)."""
    c: Cluster = make_cluster()
    sock = c.base / "jt.sock"
    jt = c.start_jobtracker("--listen", f"unix:{sock}")
    assert jt.ready["port"] is None
    assert f"Jobtracker listening on {sock} " in jt.log()
    address = f"unix:path={sock}"
    c.start_tasktracker(1, jobtracker=address)
    data = write(c.base / "in.txt", "one two two\n")
    assert_ok(run_cli("submit", str(WORDCOUNT), str(data), "-o", str(c.base / "out"), "-q",
                      "--jobtracker", address, "--secret-file", str(c.secret_file),
                      env=c.env, cwd=c.base), c)
    assert merged(read_wordcount(c.base / "out")) == {"one": 1, "two": 2}


def test_tasktrackers_log_in_again_after_the_jobtracker_restarts(make_cluster: Any) -> None:
    """A restarted jobtracker (same port) gets its workers back without
    restarting them, and runs jobs."""
    c: Cluster = make_cluster()
    jt = c.start_jobtracker()
    c.start_tasktracker(1)
    port = jt.ready["port"]
    data = write(c.base / "in.txt", "one two two\n")
    assert_ok(c.submit(WORDCOUNT, [data], c.base / "out1"), c)
    jt.stop()
    c.start_jobtracker("--port", str(port))
    assert_ok(c.submit(WORDCOUNT, [data], c.base / "out2"), c)
    assert merged(read_wordcount(c.base / "out2")) == {"one": 1, "two": 2}
    tt_log = c.tasktrackers[0].log()
    assert tt_log.count("Registered with the jobtracker as") == 2, tt_log


def test_a_job_on_a_cluster_without_workers_says_so_and_waits(tmp_path: Path) -> None:
    """Not a silent `map 0%` for ever: the submitter is told no worker is
    registered; the job runs once one is, cut into tasks for the slots of
    the workers that registered (a reduce a slot, a map per slot's share of
    3 MB), not for the one slot of a cluster without any."""
    c = Cluster(tmp_path)
    proc = None
    try:
        c.start_jobtracker()
        text = "".join(f"w{i % 997} x{i % 13}\n" for i in range(400_000))
        assert 3 << 20 < len(text) < 4 << 20
        data = write(tmp_path / "in.txt", text)
        proc = c.popen_submit(WORDCOUNT, [data], tmp_path / "out")
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "no tasktracker is registered with the jobtracker" in line, line
        c.start_tasktrackers(2, 2)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert merged(read_wordcount(tmp_path / "out")) == word_counts([data])
        assert_committed(tmp_path / "out", 4)
        assert c.jobtracker is not None
        assert re.search(r"planned for the 4 slots registered: \S*wordcount.py, 4 maps, "
                         r"4 reduces", c.jobtracker.log()), c.jobtracker.log()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        c.stop_all()


def test_a_job_planned_when_workers_come_keeps_within_the_task_limit(tmp_path: Path) -> None:
    """Admitted as one map and one reduce, within --max-tasks-per-job; cut
    for the slots of the workers that came it would be over: it runs as
    admitted instead of failing for them. (Over for 2 slots too: a loaded
    machine may plan it before the second worker registers.)"""
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker("--max-tasks-per-job", "2")
        data = write(tmp_path / "in.txt", "a b a\n")
        proc = c.popen_submit(WORDCOUNT, [data], tmp_path / "out")
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "no tasktracker is registered with the jobtracker" in line, line
            c.start_tasktrackers(2, 2)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert merged(read_wordcount(tmp_path / "out")) == {"a": 2, "b": 1}
        assert_committed(tmp_path / "out", 1)
        assert c.jobtracker is not None
        assert re.search(r"keeps its tasks for one slot \(for [24]: .*more than the 2 tasks a job "
                         r"may have.*\): \S*wordcount.py, 1 maps, 1 reduces",
                         c.jobtracker.log()), c.jobtracker.log()
    finally:
        c.stop_all()


def test_ctrl_c_during_a_login_says_interrupted(tmp_path: Path) -> None:
    """A listening port that never accepts (its backlog takes the
    connection, nothing answers): interrupted during the login, a client
    said "did not answer the login within 10s" and exited 3, as though
    the 10 s had passed and trying again might help."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytxmr", "jobs", "--jobtracker", f"127.0.0.1:{port}",
             "--secret-file", str(write(tmp_path / "secret", "s" * 32))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=base_env(tmp_path), cwd=tmp_path)
        try:
            time.sleep(2.5)  # connected, and asked whether it speaks TLS: no answer
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (proc.returncode, err) == (130, "pytxmr: interrupted\n"), err
