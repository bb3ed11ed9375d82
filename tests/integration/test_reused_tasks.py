"""A job's maps share task processes (``pytxmr.zygote``'s runners), and
still see what a process of their own would show them: a fresh copy of the
job's module, their own counters, a working directory without the files
the map before left (the job's shipped files still there); a crash costs
only the task that crashed,
and a process that a task left a thread or a process running in, or that
failed, runs nothing more; each task's log holds what it wrote, whatever
the task before left in its process. Under ``run`` (real daemons, one zygote) and on a cluster of
daemons; each output is checked against the input lines."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from procs import ROOT, Cluster, base_env, run_cli
from wordcounts import merged, read_wordcount

#: The map reports, per line: its process, how many tasks that process ran
#: (kept in os.environ, which outlives a task), how many lines this copy of
#: the module saw (its own global: 1 if the module is fresh), how many files
#: it found in its working directory besides the shipped one (0: the map
#: before took its files with it), what the shipped file says, and how much
#: of 100 KB one write to its stdout took. It leaves a file behind.
JOB = '''
import os
import subprocess
import sys
import threading
import time

SEEN = []


def map(key, line):
    SEEN.append(line)
    seq = int(os.environ.get("TEST_TASKS_RUN", "0")) + 1
    os.environ["TEST_TASKS_RUN"] = str(seq)
    word, _, arg = line.partition(" ")
    if word == "crash" and not os.path.exists(arg):
        open(arg, "w").close()
        os._exit(3)
    if word == "thread":
        threading.Thread(target=time.sleep, args=(60,)).start()
    written = os.write(1, b"." * 100_000)
    if word == "nonblock":  # as node does to its stdout
        subprocess.run([sys.executable, "-c", "import os; os.set_blocking(1, False)"])
    if word == "leave":
        subprocess.Popen(["sleep", "2"])
    found = len([name for name in os.listdir(".") if name != "shipped.txt"])
    with open("shipped.txt") as f:
        shipped = f.read().strip()
    with open("left-behind.txt", "w") as f:
        f.write(line)
    os.mkdir("left-behind")
    yield line, f"{os.getpid()} {seq} {len(SEEN)} {found} {shipped} {written}"


def reduce(key, values):
    for value in values:
        yield key, value
'''

MAPS = 60


def inputs(base: Path) -> list[Path]:
    """One line per file, so one map per line: plain ones, one that
    crashes its process the first time, one that leaves a thread; and
    beside them the file the job ships."""
    base.mkdir()
    (base.parent / "shipped.txt").write_text("7\n")
    lines = [f"line {i}" for i in range(MAPS - 4)]
    lines.insert(10, "nonblock x")
    lines.insert(20, f"crash {base / 'crashed-once'}")
    lines.insert(35, "leave x")
    lines.insert(40, "thread x")
    paths = []
    for i, line in enumerate(lines):
        path = base / f"in-{i:03d}.txt"
        path.write_text(line + "\n")
        paths.append(path)
    return paths


def check(out: Path, paths: list[Path], stdout: str) -> None:
    lines = [p.read_text().strip() for p in paths]
    got = {}
    for part in sorted(out.glob("part-*")):
        for row in part.read_text().splitlines():
            line, value = row.split("\t")
            assert line not in got, f"{line!r} twice"
            got[line] = tuple(int(v) for v in value.split())
    assert sorted(got) == sorted(lines)
    # Each task saw a fresh module: its global held its one line only; an
    # empty working directory but for the job's shipped file, which it read.
    assert {seen for _, _, seen, *_ in got.values()} == {1}
    assert {found for _, _, _, found, *_ in got.values()} == {0}
    assert {shipped for *_, shipped, _ in got.values()} == {7}
    # Each write to its stdout took all: an earlier task's program in the
    # same process had left the pipe non-blocking (nonblock x).
    assert {written for *_, written in got.values()} == {100_000}
    # Processes were reused: far fewer than the maps.
    pids = Counter(pid for pid, *_ in got.values())
    assert len(pids) < MAPS // 3, pids
    # The process that a task left a thread running in ran nothing after
    # it, nor one it left a process running in (whose work would share the
    # next task's time).
    for line in ("thread x", "leave x"):
        pid, seq, *_ = got[line]
        assert all(s <= seq for p, s, *_ in got.values() if p == pid), line
    # The crashed map ran again (elsewhere or in a new process): the job
    # succeeded with every line, and the counters count each map once.
    assert re.search(rf"map input records\s+{MAPS}\n", stdout), stdout
    assert re.search(rf"reduce output records\s+{MAPS}\n", stdout), stdout


#: Each map writes its line to its stdout and stderr; some leave them
#: redirected, or a process of their group that writes after the task ended.
LOG_JOB = '''
import os
import subprocess
import time


def map(key, line):
    time.sleep(0.05)  # the time the late writer of the map before writes in
    os.write(1, f"OUT {line}\\n".encode())
    print("ERR", line, file=__import__("sys").stderr)
    word = line.split()[0]
    if word == "silence":
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    if word == "late":  # its shell exits at once; the subshell writes later
        subprocess.run(["sh", "-c", f"(sleep 0.02; echo LATE {line}) &"])
    if word == "closing":  # the next task's pipe then came as fd 1, and was closed
        os.close(1)
    if word == "unread":  # the next task's result then went to fd 0, taken by its stdin
        os.close(0)
    yield line, 1
'''


def test_each_task_of_a_reused_process_logs_only_what_it_wrote(make_cluster,
                                                              tmp_path: Path) -> None:
    """A reused process's stdout and stderr were one pipe for all its tasks:
    what a task left writing there (a process of its group) went to the
    next task's log (87 of 300 in a tester's job), and a task that
    redirected them left the next tasks without their output; a task that
    closed them had the next one's output go to its result, and fail."""
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktrackers(1, 2)
    job = tmp_path / "job.py"
    job.write_text(LOG_JOB)
    kinds = {0: "late", 1: "silence", 2: "closing", 4: "unread"}
    lines = [f"{kinds.get(i % 7 if i % 3 else 0, 'plain')} {i}"
             for i in range(40)]
    (tmp_path / "in").mkdir()
    paths = []
    for i, line in enumerate(lines):
        paths.append(tmp_path / "in" / f"{i:03d}.txt")
        paths[-1].write_text(line + "\n")
    rc, stdout, stderr = cluster.submit(job, paths, tmp_path / "out")
    assert rc == 0, stderr + cluster.logs()
    time.sleep(0.2)  # the last late writers' time to write (nowhere)
    job_id = stdout.split()[0]
    rc, logs, err = cluster.cli("logs", job_id)
    assert rc == 0, err
    rc, status, err = cluster.cli("status", job_id, "--json")
    assert rc == 0 and json.loads(status)["failed_attempts"] == 0, status + err
    entries = re.split(r"^==> \S+_m(\d+)_\d+ .*<==$", logs, flags=re.M)[1:]
    by_map = {int(entries[i]): entries[i + 1] for i in range(0, len(entries), 2)}
    # A map's index is its file's, as the inputs are listed in order.
    assert sorted(by_map) == list(range(40))
    for index, text in by_map.items():
        written = re.findall(r"^(?:OUT|ERR|LATE) (.*)$", text, flags=re.M)
        assert written == [lines[index]] * 2, (index, text)


def test_run_reuses_task_processes_with_a_fresh_module_each(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    paths = inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli("run", str(job), *map(str, paths), "-o", str(out),
                                 "--files", str(tmp_path / "shipped.txt"),
                                 env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    check(out, paths, stdout)


@pytest.mark.parametrize("tmpfs", [True, False], ids=["tmpfs", "no-tmpfs"])
def test_a_cluster_reuses_task_processes(make_cluster, tmp_path: Path, tmpfs: bool) -> None:
    """Without shuffle memory (no tmpfs directory), a task's log and result
    go to its attempt's directory: a reused process's map makes it."""
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktrackers(2, 2, *([] if tmpfs else ["--shuffle-memory", "0"]))
    job = tmp_path / "job.py"
    job.write_text(JOB)
    paths = inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc, stdout, stderr = cluster.submit(job, paths, out, "--files", str(tmp_path / "shipped.txt"))
    assert rc == 0, stderr + cluster.logs()
    check(out, paths, stdout)


def test_a_job_that_changes_directory_as_it_loads_keeps_its_maps_apart(tmp_path: Path) -> None:
    """``os.chdir(os.path.dirname(__file__))`` at the module's top: the maps
    of a worker spilled into that one directory, each renaming another's
    spills as its own; the job "succeeded" with records lost and counted
    twice. The framework's files stay in the task's own directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = tmp_path / "chdir_job.py"
    job.write_text(f"import os\nos.chdir({str(elsewhere)!r})\n\n\n"
                   "def map(key, line):\n"
                   "    left = os.listdir('.')\n"
                   "    if left:\n"
                   "        raise RuntimeError(f'the framework wrote here: {left}')\n"
                   "    for word in line.split():\n"
                   "        yield word, 1\n\n\n"
                   "def reduce(word, counts):\n"
                   "    yield word, sum(counts)\n")
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i % 997} v{i % 13} both\n" for i in range(12000)))
    out = tmp_path / "out"
    rc, _, stderr = run_cli("run", str(job), str(data), "-o", str(out), "--split-size", "40K",
                            "--buffer-records", "500", "--max-attempts", "1",
                            env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    assert merged(read_wordcount(out)) == Counter(data.read_text().split())
    assert not list(elsewhere.iterdir())


#: In-mapper combining kept in a helper module beside the job.
HELPER = "from collections import Counter\ncounts = Counter()\n"
COMBINING_JOB = '''import wc_buffer


def map(key, line):
    wc_buffer.counts.update(line.split())
    return ()


def map_final():
    yield from wc_buffer.counts.items()


def reduce(word, counts):
    yield word, sum(counts)
'''


@pytest.mark.parametrize("inline", [False, True], ids=["run", "inline"])
def test_a_helper_modules_state_is_each_tasks_own(tmp_path: Path, inline: bool) -> None:
    """The job's module is loaded afresh for each task, and now so are the
    modules it ships: a counter kept in a helper went on from one map to the
    next of a reused process (and of `run --inline`), and words were counted
    two to four times, the job succeeding."""
    (tmp_path / "wc_buffer.py").write_text(HELPER)
    job = tmp_path / "imc.py"
    job.write_text(COMBINING_JOB)
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i % 97} v{i % 7} the\n" for i in range(20000)))
    out = tmp_path / "out"
    rc, _, stderr = run_cli("run", str(job), str(data), "-o", str(out), "--split-size", "20K",
                            *(["--inline"] if inline else []),
                            env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    assert merged(read_wordcount(out)) == Counter(data.read_text().split())


def test_what_a_jobs_module_opens_as_it_loads_is_closed_after_each_map(tmp_path: Path) -> None:
    """A module that opens a file (a connection, say) as it loads: each map
    of a reused process loads it afresh, and the old copies, kept alive by
    their own cycles, held their files open (1,504 connections at once for
    1,500 maps, by a tester's count)."""
    job = tmp_path / "opener.py"
    job.write_text(f"import os\nHELD = open({str(job)!r})\n\n\n"
                   "def map(key, line):\n"
                   "    yield 'fds', len(os.listdir('/proc/self/fd'))\n\n\n"
                   "def reduce(key, values):\n"
                   "    yield key, max(values)\n")
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"in-{i:02d}.txt")
        paths[-1].write_text("x\n")
    out = tmp_path / "out"
    rc, _, stderr = run_cli("run", str(job), *map(str, paths), "-o", str(out), "--slots", "1",
                            "--reducers", "1", env=base_env(tmp_path / "home"), cwd=ROOT,
                            timeout=120)
    assert rc == 0, stderr
    [(key, most)] = [row.split("\t") for row in (out / "part-00000").read_text().splitlines()]
    assert key == "fds" and int(most) < 16, most


@pytest.mark.parametrize("inline", [False, True], ids=["run", "inline"])
def test_a_shipped_package_with_an_extension_module_loads_in_every_task(
        tmp_path: Path, inline: bool) -> None:
    """Its package imported afresh found its extension module (which loads
    once a process) in sys.modules, and lacked the attribute that import
    sets: "module 'cpkg' has no attribute '_bisect'", in every reused
    process's second map and in each of run --inline's."""
    import _bisect
    import shutil

    extension = getattr(_bisect, "__file__", None)
    if extension is None:
        pytest.skip("this Python's _bisect is built in")
    package = tmp_path / "cpkg"
    package.mkdir()
    shutil.copy(extension, package / Path(extension).name)
    (package / "__init__.py").write_text("import cpkg._bisect\n\n\n"
                                         "def where(x):\n"
                                         "    return cpkg._bisect.bisect_left([1, 3, 5], x)\n")
    job = tmp_path / "job.py"
    job.write_text("import cpkg\n\n\ndef map(key, line):\n"
                   "    yield line.strip(), cpkg.where(int(line))\n\n\n"
                   "def reduce(key, values):\n    yield key, sum(values)\n")
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"in-{i:02d}.txt")
        paths[-1].write_text(f"{i}\n")
    out = tmp_path / "out"
    rc, _, stderr = run_cli("run", str(job), *map(str, paths), "-o", str(out), "--slots", "1",
                            "--max-attempts", "1", *(["--inline"] if inline else []),
                            env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    got = dict(row.split("\t") for part in out.glob("part-*")
               for row in part.read_text().splitlines())
    assert got == {str(i): str(sum(1 for v in (1, 3, 5) if v < i)) for i in range(12)}


#: A job whose maps leave their process what strikes, fails or slows the
#: next map there: an alarm left set, read-only directories, open files,
#: a umask, a CPU limit.
LEAVING_JOB = '''
import os
import resource
import signal
import time


class Struck(Exception):
    pass


def _struck(signum, frame):
    raise Struck()


signal.signal(signal.SIGALRM, _struck)


def map(key, line):
    seq = int(os.environ.get("TEST_TASKS_RUN", "0")) + 1
    os.environ["TEST_TASKS_RUN"] = str(seq)
    word = line.split()[0]
    mask = os.umask(0o22)
    os.umask(mask)
    if (mask, resource.getrlimit(resource.RLIMIT_CPU)[0]) != (@UMASK@, @CPU@):  # the test's
        yield line, "struck"
        return
    if word == "umask":
        os.umask(0o077)
    if word == "cpulimit":  # counted over every map of the process
        resource.setrlimit(resource.RLIMIT_CPU, (100_000, resource.RLIM_INFINITY))
    if word == "alarm":  # a record's time limit, not cancelled
        signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        time.sleep(0.05)
    except Struck:
        yield line, "struck"
        return
    if word == "readonly":  # as an unpacked archive, a Go module cache
        os.makedirs("tree/sub")
        open("tree/sub/file", "w").close()
        os.chmod("tree/sub", 0o555)
        os.chmod("tree", 0o555)
        os.chmod(".", 0o555)
    if word == "unreadable":  # its working directory not to be listed
        os.makedirs("locked/in")
        os.chmod("locked", 0)
        os.chmod(".", 0o300)
    if word == "files":  # a logging handler per load, say
        os.held_by_test = [open(os.devnull) for _ in range(40)]
    if word == "blocked":  # a signal it blocked, come and left pending
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        os.kill(os.getpid(), signal.SIGUSR1)
    yield line, f"{os.getpid()} {seq}"


def reduce(key, values):
    for value in values:
        yield key, value
'''


def test_what_a_map_leaves_in_its_process_does_not_strike_the_next(tmp_path: Path) -> None:
    """A map's alarm, left set, struck a later map of its process (records
    dropped as "too slow" by a job that succeeded), as did its umask and
    CPU limit (results unreadable, a SIGXCPU); a read-only tree left in the
    working directory (or the directory itself left unreadable) failed the
    next map, with an empty error, and stayed on disk; a process that
    leaked files took more maps; a signal a map blocked, unblocked after
    it, would end its process."""
    fenced: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv(1) as root, to give up writing past permissions")
        # Without the capabilities that let root past a directory's mode.
        fenced = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    job = tmp_path / "leaving.py"
    mask = os.umask(0o22)
    os.umask(mask)
    job.write_text(LEAVING_JOB.replace("@UMASK@", str(mask)).replace(
        "@CPU@", str(resource.getrlimit(resource.RLIMIT_CPU)[0])))
    lines = [f"line {i}" for i in range(30)]
    lines[3], lines[12], lines[20], lines[25] = "alarm x", "readonly x", "files x", "blocked x"
    lines[16], lines[6], lines[9] = "unreadable x", "umask x", "cpulimit x"
    paths = []
    for i, line in enumerate(lines):
        paths.append(tmp_path / f"in-{i:02d}.txt")
        paths[-1].write_text(line + "\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = {**base_env(tmp_path / "home"), "TMPDIR": str(tmp)}
    proc = subprocess.run([*fenced, sys.executable, "-m", "pytxmr", "run", str(job),
                           *map(str, paths), "-o", str(out), "--slots", "1", "--workers", "1",
                           "--max-attempts", "1"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [row.split("\t") for part in out.glob("part-*") for row in part.read_text().splitlines()]
    got = dict(rows)
    assert sorted(got) == sorted(lines) and len(rows) == len(lines)
    assert "struck" not in got.values(), got
    ran = {line: tuple(map(int, value.split())) for line, value in got.items()}
    pids = Counter(pid for pid, _ in ran.values())
    assert len(pids) < 10, pids  # the processes were reused
    pid, seq = ran["files x"]
    assert all(s <= seq for p, s in ran.values() if p == pid), ran
    pid, seq = ran["blocked x"]  # one slot: the next map ran there, the process alive
    assert any(s > seq for p, s in ran.values() if p == pid), ran
    assert not list(tmp.iterdir())  # the read-only tree went with the run's directory


#: Each word's map process, and what its reduce finds: its own process, how
#: many lines its copy of the module saw (0: a fresh copy), and whether its
#: working directory holds what the map left there.
MAP_THEN_REDUCE_JOB = '''
import os

SEEN = []


def map(key, line):
    SEEN.append(line)
    with open("left-behind.txt", "w") as f:
        f.write(line)
    for word in line.split():
        yield word, os.getpid()


def reduce(word, pids):
    yield word, f"{sorted(set(pids))} {os.getpid()} {len(SEEN)} {os.path.exists('left-behind.txt')}"
'''


def _map_then_reduce(make_cluster, tmp_path: Path, text: str,
                     lines: str) -> tuple[Cluster, str, Path, Path]:
    """The job ``text`` over ``lines``, one map and one reduce on one
    tasktracker of one slot (the reduce may take the map's process);
    (the cluster, the submitter's stdout, the output, the input)."""
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktrackers(1, 1)
    job = tmp_path / "job.py"
    job.write_text(text)
    data = tmp_path / "in.txt"
    data.write_text(lines)
    out = tmp_path / "out"
    rc, stdout, stderr = cluster.submit(job, [data], out, "--reducers", "1", "--max-attempts", "1")
    assert rc == 0, stderr + cluster.logs()
    return cluster, stdout, out, data


@pytest.mark.parametrize("reuse", [True, False])
def test_a_reduce_takes_the_process_of_its_worker_s_map(make_cluster, tmp_path: Path,
                                                         reuse: bool) -> None:
    """A small job's reduce spared the fork of a process of its own (15 ms
    of its time): it runs in the idle process of its worker's map, with a
    fresh copy of the module and an emptied directory, as a map after a
    map does; in one of its own when the job says ``reuse_processes =
    False``."""
    _, _, out, _ = _map_then_reduce(
        make_cluster, tmp_path,
        MAP_THEN_REDUCE_JOB + ("" if reuse else "\nreuse_processes = False\n"), "a b\nb c\n")
    got = dict(line.split("\t") for line in (out / "part-00000").read_text().splitlines())
    assert sorted(got) == ["a", "b", "c"]
    [(map_pids, reduce_pid, seen, left)] = {
        tuple(re.fullmatch(r"(\[\d+\]) (\d+) (\d+) (\w+)", value).groups())  # type: ignore[union-attr]
        for value in got.values()}
    assert (seen, left) == ("0", "False")
    assert (map_pids == f"[{reduce_pid}]") == reuse, (map_pids, reduce_pid)


#: A map that breaks ``json.dumps`` for whatever runs after it in its process.
JSON_PATCHING_JOB = '''
import json


def map(key, line):
    for word in line.split():
        yield word, 1


def map_final():
    json.dumps = lambda *args, **kwargs: "PATCHED"
    return ()


def reduce(word, counts):
    yield word, sum(counts)
'''


def test_a_job_that_patches_json_breaks_neither_its_tasks_nor_the_zygote(
        make_cluster, tmp_path: Path) -> None:
    """A map patched ``json.dumps``: its process said its end, and wrote its
    result, with the patch, and the zygote, failing to read that, died,
    killing the tasks of every job on the worker. What the framework says
    is said with the functions of before the job, and a zygote that reads
    garbage from a task process fails that task, not itself."""
    cluster, _, out, data = _map_then_reduce(make_cluster, tmp_path, JSON_PATCHING_JOB,
                                             "a b\nb c\n")
    assert merged(read_wordcount(out)) == Counter(data.read_text().split())
    assert "zygote died" not in cluster.logs()


#: A map that sets logging up and logs more than its log keeps.
LOGGING_JOB = '''
import logging


def map(key, line):
    for word in line.split():
        yield word, 1


def map_final():
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for _ in range(1200):
        logging.info("m" * 1000)
    return ()


def reduce(word, counts):
    logging.warning("REDUCE LOGGED %s", word)
    yield word, sum(counts)
'''


def test_a_map_s_logging_setup_does_not_swallow_the_next_task_s_log(
        make_cluster, tmp_path: Path) -> None:
    """The map's ``basicConfig`` handler wrote to that map's log, its 1 MB
    used up: the reduce that followed in its process logged into it, and
    nothing of it was kept. The root logger is set back between tasks."""
    cluster, stdout, _, _ = _map_then_reduce(make_cluster, tmp_path, LOGGING_JOB, "a b\n")
    job_id = re.search(r"(job_\S+) succeeded", stdout).group(1)  # type: ignore[union-attr]
    rc, logs, stderr = cluster.cli("logs", job_id)
    assert rc == 0, stderr
    assert "REDUCE LOGGED a" in logs and "REDUCE LOGGED b" in logs, logs[-2000:]
