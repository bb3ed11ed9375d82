"""Jobs as their authors write them, on a real cluster (a jobtracker and
two tasktrackers as processes, ``submit`` from the command line, the
Python API from a script): arguments, shipped code and files, map-only
jobs, steps, sorted values and streaming commands. Each answer is checked
against an independent computation, and every refusal leaves the cluster
serving."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from procs import Cluster
from wordcounts import merged, read_wordcount

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WORDS = ["apple", "pear", "fig", "kiwi", "plum", "lime", "date", "yuzu", "nut", "oat",
         "rye", "bean"]


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(11)
    path = tmp_path_factory.mktemp("text") / "in.txt"
    path.write_text("".join(" ".join(rng.choices(WORDS, weights=range(1, 13), k=9)) + "\n"
                            for _ in range(20_000)))
    return path


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("part-*")) for line in p.read_text().splitlines()]


def counts(out: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split("\t") for line in lines(out))}


def status(cluster: Cluster, stdout: str) -> dict:
    job_id = stdout.split()[0]
    rc, out, err = cluster.cli("status", job_id, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_arguments_are_typed_checked_and_recorded(cluster: Cluster, text: Path) -> None:
    out = cluster.base / "threshold"
    rc, stdout, err = cluster.submit(EXAMPLES / "threshold.py", [text], out,
                                     "--arg", "min_count=15000")
    assert rc == 0, err + cluster.logs()
    expected = {w: n for w, n in Counter(text.read_text().split()).items() if n >= 15000}
    assert counts(out) == expected and 0 < len(expected) < len(WORDS)
    assert status(cluster, stdout)["args"] == {"min_count": "15000"}
    for bad, message in ((["--arg", "min_count=lots"], "'lots' is not a valid int"),
                         (["--arg", "minimum=2"], "declares no argument minimum"),
                         (["--arg", "min_count=1", "--arg", "min_count=2"], "given twice")):
        rc, _, err = cluster.submit(EXAMPLES / "threshold.py", [text], cluster.base / "bad",
                                    *bad)
        assert rc == 2 and message in err, err
        assert not (cluster.base / "bad").exists()


SHIPPED = """
    import helper
    from pkg import table

    def map(offset, line):
        stop = set(open("stop.txt").read().split())
        for word in line.split():
            if word not in stop:
                yield helper.shout(word), 1
        if offset == 0:
            yield "where:" + helper.__file__, 1

    def reduce(word, ones):
        yield word, sum(ones) * table.FACTOR
"""


def test_helper_modules_and_files_travel_with_the_job(cluster: Cluster, text: Path,
                                                      tmp_path: Path) -> None:
    job = write(tmp_path / "code" / "job.py", SHIPPED)
    write(tmp_path / "code" / "helper.py", "def shout(w):\n    return w.upper()\n")
    write(tmp_path / "code" / "pkg" / "__init__.py", "")
    write(tmp_path / "code" / "pkg" / "table.py", "FACTOR = 2\n")
    stop = write(tmp_path / "data" / "stop.txt", "fig kiwi\n")
    # Over Banana's 640 KiB: the bundle goes in chunks.
    (tmp_path / "data" / "noise.bin").write_bytes(os.urandom(1_500_000))
    out = tmp_path / "out"
    rc, _, err = cluster.submit(job, [text], out, "--files", str(stop),
                                "--files", str(tmp_path / "data" / "noise.bin"))
    assert rc == 0, err + cluster.logs()
    got = counts(out)
    where = [k for k in got if k.startswith("where:")]
    got = {k: v for k, v in got.items() if not k.startswith("where:")}
    expected = {w.upper(): 2 * n for w, n in Counter(text.read_text().split()).items()
                if w not in ("fig", "kiwi")}
    assert got == expected
    # The tasks imported the helper from their worker's copy of the bundle.
    assert where and all("tasktracker" in w and "/bundles/" in w for w in where), where
    # ...which went with the job from every tasktracker (the jobtracker
    # keeps it a minute more, for a client that found it there: test_bundle).
    for daemon in cluster.daemons:
        assert daemon.workdir is not None
        if daemon.name != "jobtracker":
            assert not list((daemon.workdir / "bundles").glob("*")), daemon.name


def test_a_broken_helper_is_refused_with_its_file_and_line(cluster: Cluster, text: Path,
                                                           tmp_path: Path) -> None:
    job = write(tmp_path / "job.py", "import helper\ndef map(k, v):\n    yield v, 1\n")
    write(tmp_path / "helper.py", "X = 1\ndef broken(:\n    pass\n")
    rc, _, err = cluster.submit(job, [text], tmp_path / "out")
    assert rc == 2 and "helper.py" in err and "line 2" in err, err
    rc, _, err = cluster.submit(job, [text], tmp_path / "out", "--files", "nowhere.txt")
    assert rc == 2 and "--files nowhere.txt: no such file" in err, err
    rc, _, err = cluster.submit(EXAMPLES / "wordcount.py", [text], tmp_path / "still")
    assert rc == 0, err
    # A helper the task processes would never use: they have Python's csv.
    shadowed = write(tmp_path / "own" / "job.py", "import csv\ndef map(k, v):\n"
                                                    "    yield v, csv.MINE\n")
    write(tmp_path / "own" / "csv.py", "MINE = 1\n")
    rc, _, err = cluster.submit(shadowed, [text], tmp_path / "shadowed")
    assert rc == 2 and "the job ships its own module 'csv', but its task processes" in err, err


def test_a_helper_imports_the_job_s_module_by_its_file_s_name(cluster: Cluster, text: Path,
                                                              tmp_path: Path) -> None:
    """As a script's helper does (``from myjob import STOP``): on a cluster
    and inline, the very module the task loaded, not a second copy of it;
    a task found no module of that name."""
    from procs import base_env, run_cli

    job = write(tmp_path / "myjob.py", """
        import helper

        STOP = {"fig", "kiwi"}

        def map(offset, line):
            same = helper.stop() is STOP
            for word in line.split():
                if word not in helper.stop():
                    yield (word if same else "a copy of myjob"), 1

        def reduce(word, ones):
            yield word, sum(ones)
    """)
    write(tmp_path / "helper.py", """
        def stop():
            from myjob import STOP
            return STOP
    """)
    expected = {w: n for w, n in Counter(text.read_text().split()).items()
                if w not in ("fig", "kiwi")}
    rc, _, err = cluster.submit(job, [text], tmp_path / "out")
    assert rc == 0, err + cluster.logs()
    assert counts(tmp_path / "out") == expected
    rc, _, err = run_cli("run", "--inline", str(job), str(text), "-o", str(tmp_path / "inline"),
                         env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert rc == 0, err
    assert counts(tmp_path / "inline") == expected


def test_a_job_of_two_steps_runs_as_one(cluster: Cluster, text: Path, tmp_path: Path) -> None:
    out = tmp_path / "top"
    rc, stdout, err = cluster.submit(EXAMPLES / "top_words.py", [text], out, "--arg", "n=4",
                                     "--split-size", "64K")
    assert rc == 0, err + cluster.logs()
    ranked = sorted(Counter(text.read_text().split()).items(), key=lambda p: (-p[1], p[0]))
    assert lines(out) == [f"{w}\t{n}" for w, n in ranked[:4]]
    assert sorted(p.name for p in out.iterdir()) == ["_PYTXMR_OUTPUT", "_SUCCESS",
                                                     "part-00000"]
    info = status(cluster, stdout)
    assert (info["step"], info["steps"]) == (2, 2)
    rc, out_page, _ = cluster.cli("logs", stdout.split()[0])
    assert rc == 0 and "-s2_m00000" in out_page  # step 2's attempts are the job's


def test_a_job_without_reduce_is_map_only(cluster: Cluster, text: Path, tmp_path: Path) -> None:
    job = write(tmp_path / "grep.py", """
        def map(offset, line):
            if line.startswith("bean"):
                yield offset, line
    """)
    out = tmp_path / "out"
    rc, _, err = cluster.submit(job, [text], out, "--split-size", "100K")
    assert rc == 0, err + cluster.logs()
    expected, offset = [], 0
    for line in text.read_bytes().splitlines(keepends=True):
        if line.startswith(b"bean"):
            expected.append(f"{offset}\t{line.decode().rstrip()}")
        offset += len(line)
    assert lines(out) == expected
    assert len(list(out.glob("part-*"))) == -(-text.stat().st_size // (100 << 10))
    rc, _, err = cluster.submit(job, [text], tmp_path / "again", "--reducers", "2")
    assert rc == 2 and "map-only" in err


def test_values_sorted_across_maps_and_spills(cluster: Cluster, tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = [(rng.choice("xyz"), rng.randrange(10**9)) for _ in range(100_000)]
    inp = tmp_path / "rows.txt"
    inp.write_text("".join(f"{k} {v}\n" for k, v in rows))
    job = write(tmp_path / "sorted.py", """
        sort_values = True

        def map(offset, line):
            key, value = line.split()
            yield key, int(value)

        def reduce(key, values):
            last, n, ordered = -1, 0, True
            for v in values:
                ordered = ordered and v >= last
                last, n = v, n + 1
            yield key, [n, ordered]
    """)
    rc, _, err = cluster.submit(job, [inp], tmp_path / "out", "--split-size", "256K",
                                "--buffer-records", "20000")
    assert rc == 0, err + cluster.logs()
    got = {k: json.loads(v) for k, v in (line.split("\t") for line in lines(tmp_path / "out"))}
    assert got == {k: [n, True] for k, n in Counter(k for k, _ in rows).items()}


@pytest.mark.parametrize("steps, message", [
    ("steps = 'not a list'", "steps must be a non-empty list of pytxmr.Step"),
    ("steps = [Step(map=m), m]", "item 2 is a function"),
    ("steps = [Step(map=m, map_init=m)]", "'map_init' must take ()"),
])
def test_bad_steps_are_refused_at_submission(cluster: Cluster, text: Path, tmp_path: Path,
                                             steps: str, message: str) -> None:
    job = write(tmp_path / "bad.py", f"from pytxmr import Step\ndef m(k, v):\n    yield k, v\n"
                                     f"{steps}\n")
    rc, _, err = cluster.submit(job, [text], tmp_path / "out")
    assert rc == 2 and message in err, err


API_SCRIPT = """
import os, sys, threading, types
from collections import Counter
import pytxmr

address, secret, text, out = sys.argv[1:]
os.makedirs(out)

def words(key, line):
    for w in line.split():
        yield w, 1

def total(word, ones):
    yield word, sum(ones)

job = types.SimpleNamespace(map=words, reduce=total)        # defined right here
cluster = pytxmr.Client(address, secret_file=secret)
result = cluster.submit(job, [text], out + "/a")
assert result.ok, result
assert dict(result.records()) == Counter(open(text).read().split()), "records"
assert cluster.status(result.job_id).state == "succeeded"
try:
    cluster.submit("{examples}/threshold.py", [text], out + "/b", args={{"min_count": "x"}})
except pytxmr.ClusterError as e:
    assert "not a valid int" in str(e), e
else:
    raise AssertionError("a bad argument was not refused")
local = pytxmr.run("{examples}/top_words.py", text, out + "/c", args={{"n": "3"}})
# Sizes as the command line writes them.
inline = pytxmr.run("{examples}/top_words.py", text, out + "/d", args={{"n": "3"}}, inline=True,
                    split_size="256K")
sized = pytxmr.run("{examples}/wordcount.py", text, out + "/s", split_size="256K")
assert sized.progress["maps"]["total"] == -(-os.path.getsize(text) // 262144), sized.progress
try:
    pytxmr.run("{examples}/wordcount.py", text, out + "/x", split_size="2X")
except pytxmr.ClusterError as e:
    assert "invalid size '2X'" in str(e), e
else:
    raise AssertionError("a bad split_size was not refused")
assert list(local.records()) == list(inline.records()) and len(list(local.records())) == 3
# A None value's line is its key alone; the job says its output is text, so a
# key whose JSON is a pair is read back as that key, not as a jsonl pair.
from pytxmr import reducers
def bigrams(key, line):
    for a, b in zip(line.split(), line.split()[1:]):
        yield (a, b), None
keyed = pytxmr.run(types.SimpleNamespace(map=bigrams, reduce=reducers.identity), text, out + "/k")
assert keyed.output_format == "text", keyed
assert Counter(repr(k) for k, v in keyed.records() if v is None) == Counter(
    repr([a, b]) for line in open(text) for a, b in zip(line.split(), line.split()[1:]))
results = {{}}
def in_thread(n):
    results[n] = pytxmr.run("{examples}/wordcount.py", text, out + f"/t{{n}}")
threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert [dict(results[n].records()) for n in range(2)] == [dict(Counter(open(text).read().split()))] * 2
try:
    pytxmr.run(types.SimpleNamespace(map=words, reduce=lambda k, vs: 1 / 0), text, out + "/e")
except pytxmr.JobFailed as e:
    assert "ZeroDivisionError" in str(e) and e.result.state == "failed"
else:
    raise AssertionError("a failing job did not raise")
print("api ok")
"""


def test_the_python_api_from_a_plain_script(cluster: Cluster, text: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(API_SCRIPT.format(examples=EXAMPLES))
    proc = subprocess.run([sys.executable, str(script), cluster.address,
                           str(cluster.secret_file), str(text), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=240, env=cluster.env,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "api ok" in proc.stdout, proc.stderr + cluster.logs()


BESIDE_INLINE_SCRIPT = """
import os, sys, threading, time, types
from collections import Counter
import pytxmr

address, secret = sys.argv[1:3]
here = os.getcwd()
with open("in.txt", "w") as f:
    f.write("a b a\\n")

def slow(key, line):
    time.sleep(3)
    yield line, 1

inline = threading.Thread(target=pytxmr.run, daemon=True, kwargs=dict(
    job=types.SimpleNamespace(map=slow), inputs=os.path.abspath("in.txt"),
    output=os.path.abspath("slow"), inline=True))
inline.start()
while os.getcwd() == here:  # the inline job's tasks' directory now
    time.sleep(0.01)
client = pytxmr.Client(address, secret_file=secret)
started = time.monotonic()  # absolute paths: no need to wait for the inline job
at_once = client.submit("{examples}/wordcount.py", [os.path.join(here, "in.txt")],
                        os.path.join(here, "at-once"), wait=False)
assert time.monotonic() - started < 2.5 and inline.is_alive(), time.monotonic() - started
result = client.submit("{examples}/wordcount.py", ["in.txt"], "counted")
assert not inline.is_alive()  # relative paths: it waited
assert client.wait(at_once.job_id).ok
assert result.output == os.path.join(here, "counted"), result.output
assert dict(result.records()) == {{"a": 2, "b": 1}}
print("beside ok")
"""


def test_relative_paths_beside_an_inline_job_are_the_callers(
        cluster: Cluster, tmp_path: Path) -> None:
    """An inline job makes the process's working directory its tasks'
    while it runs: a job submitted from another thread meanwhile read its
    relative input there, or wrote its output there (then deleted). It
    waits for the inline job now, unless its paths are absolute."""
    script = tmp_path / "script.py"
    script.write_text(BESIDE_INLINE_SCRIPT.format(examples=EXAMPLES))
    proc = subprocess.run([sys.executable, str(script), cluster.address,
                           str(cluster.secret_file)],
                          capture_output=True, text=True, timeout=120, env=cluster.env,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "beside ok" in proc.stdout, proc.stderr + cluster.logs()


def _run_script(cluster: Cluster, text: Path, tmp_path: Path, script: str,
                fileless: bool = False) -> Counter[str]:
    """Run ``script`` (ADDRESS SECRET TEXT OUT) from ``tmp_path``, as a
    file or, ``fileless``, read from standard input (``python -``, as a
    notebook's, without a file); the counts of the text's words in upper
    case, which its jobs should give."""
    (tmp_path / "out").mkdir()
    if not fileless:
        write(tmp_path / "script.py", script)
    proc = subprocess.run([sys.executable, "-" if fileless else "script.py", cluster.address,
                           str(cluster.secret_file), str(text), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=240, env=cluster.env,
                          cwd=tmp_path, input=script if fileless else None)
    assert proc.returncode == 0, proc.stderr + cluster.logs()
    return Counter(word.upper() for word in text.read_text().split())


OBJECTS_SCRIPT = """
import functools, sys, types
from pytxmr import combiners
import pytxmr
import jobs

address, secret, text, out = sys.argv[1:5]
cluster = pytxmr.Client(address, secret_file=secret)
def shout(key, line):  # __main__'s, sent by value; jobs' by reference
    for word in line.split():
        yield jobs.norm(word) + "!", 1
for name, job in [("class", jobs.Job), ("namespace", jobs.NS),
                  ("main", types.SimpleNamespace(map=shout, reduce=jobs.total)),
                  ("partial", types.SimpleNamespace(map=functools.partial(jobs.suffixed, "?"),
                                                    reduce=combiners.sum))]:
    result = cluster.submit(job, [text], out + "/" + name)
    assert result.ok, result
    print(name, sorted(result.records())[:2])
"""


def test_a_job_object_s_own_modules_travel_with_it(cluster: Cluster, text: Path,
                                                    tmp_path: Path) -> None:
    """Functions of the caller's own modules (jobs.py beside the script),
    and what those import from their directory, reached the tasks by
    reference only: No module named 'jobs', or 'textutil' (a partial of
    such a function too: its module is functools)."""
    write(tmp_path / "textutil.py", "def norm(word):\n    return word.upper()\n")
    write(tmp_path / "jobs.py", "import types\nfrom textutil import norm\n\n"
          "def words(key, line):\n    for word in line.split():\n        yield norm(word), 1\n\n"
          "def total(word, ones):\n    yield word, sum(ones)\n\n"
          "def suffixed(suffix, key, line):\n    for word, one in words(key, line):\n"
          "        yield word + suffix, one\n\n"
          "class Job:\n    map = words\n    reduce = total\n\n"
          "NS = types.SimpleNamespace(map=words, reduce=total)\n")
    counts = _run_script(cluster, text, tmp_path, OBJECTS_SCRIPT)
    for name, suffix in (("class", ""), ("namespace", ""), ("main", "!"), ("partial", "?")):
        assert merged(read_wordcount(tmp_path / "out" / name)) == {
            w + suffix: n for w, n in counts.items()}, name


FILELESS_SCRIPT = """
import sys, types
import pytxmr
from pytxmr import combiners
from textutil import norm

address, secret, text, out = sys.argv[1:5]
def words(key, line):
    for word in line.split():
        yield norm(word), 1
job = types.SimpleNamespace(map=words, reduce=combiners.sum)
result = pytxmr.Client(address, secret_file=secret).submit(job, [text], out + "/main")
assert result.ok, result
"""


def test_a_job_object_of_a_program_without_a_file_takes_its_modules(
        cluster: Cluster, text: Path, tmp_path: Path) -> None:
    """A notebook, the REPL, ``python -``: no file to read the imports of,
    so its own modules' functions (textutil.norm) reached the tasks by
    reference only: No module named 'textutil'."""
    write(tmp_path / "textutil.py", "def norm(word):\n    return word.upper()\n")
    counts = _run_script(cluster, text, tmp_path, FILELESS_SCRIPT, fileless=True)
    assert merged(read_wordcount(tmp_path / "out" / "main")) == counts


PACKAGE_SCRIPT = """
import sys, types
import pytxmr
from proj.jobs import Job, words
import proj.modjob

address, secret, text, out = sys.argv[1:5]
cluster = pytxmr.Client(address, secret_file=secret)
import proj
for name, job in [("class", Job), ("namespace", types.SimpleNamespace(map=words, reduce=proj.total)),
                  ("module", proj.modjob)]:
    result = cluster.submit(job, [text], out + "/" + name)
    assert result.ok, result
"""


def test_a_job_object_from_a_package_takes_its_package_along(cluster: Cluster, text: Path,
                                                             tmp_path: Path) -> None:
    """Functions of a module inside the caller's own package (proj/jobs.py),
    and what it imports from that package, reached the tasks by reference
    only: No module named 'proj'. Such a module given as the job ran as a
    file of its own: its relative imports failed."""
    write(tmp_path / "proj" / "__init__.py", "def total(word, ones):\n    yield word, sum(ones)\n")
    write(tmp_path / "proj" / "text" / "__init__.py", "")
    write(tmp_path / "proj" / "text" / "norm.py", "def norm(word):\n    return word.upper()\n")
    write(tmp_path / "proj" / "jobs.py", "from proj import total\nfrom proj.text.norm import norm\n\n"
          "def words(key, line):\n    for word in line.split():\n        yield norm(word), 1\n\n"
          "class Job:\n    map = words\n    reduce = total\n")
    write(tmp_path / "proj" / "modjob.py", "from . import total as reduce\n"
          "from .text.norm import norm\n\n"
          "def map(key, line):\n    for word in line.split():\n        yield norm(word), 1\n")
    counts = _run_script(cluster, text, tmp_path, PACKAGE_SCRIPT)
    for name in ("class", "namespace", "module"):
        assert merged(read_wordcount(tmp_path / "out" / name)) == counts, name


def test_a_streaming_job_runs_shell_commands(cluster: Cluster, text: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mapper = "awk '{for (i = 1; i <= NF; i++) print $i \"\\t\" 1}'"
    rc, _, err = cluster.cli("submit", "--mapper", mapper, "--reducer", "cut -f1 | uniq -c",
                             str(text), "-o", str(out), "--reducers", "3")
    assert rc == 0, err + cluster.logs()
    got = {w: int(n) for n, w in (line.split() for line in lines(out))}
    assert got == Counter(text.read_text().split())
    rc, _, err = cluster.cli("submit", "--mapper", "nosuchprogram -v", str(text), "-o",
                             str(tmp_path / "refused"))
    assert rc == 2 and "no such command: nosuchprogram" in err, err
    rc, _, err = cluster.cli("submit", "--mapper", "cat >/dev/null; echo broken >&2; exit 4",
                             str(text), "-o", str(tmp_path / "failed"), "--max-attempts", "1")
    assert rc == 1 and "exited with status 4" in err and "broken" in err, err


def test_what_a_subprocess_of_a_task_writes_is_bounded_in_its_log(
        cluster: Cluster, text: Path, tmp_path: Path) -> None:
    """A task's subprocess writes to the task's own descriptors, not
    through its prints: 4 MB of it went into the worker's tmpfs whole. The
    log keeps its head, up to the limit (1 MiB), and the job succeeds."""
    job = write(tmp_path / "noisy.py", """
        import subprocess

        def map(offset, line):
            if offset == 0:
                subprocess.run(["sh", "-c", "head -c 4000000 /dev/zero | tr '\\\\0' y >&2"],
                               check=True)
            for word in line.split():
                yield word, 1

        def reduce(word, counts):
            yield word, sum(counts)
    """)
    out = tmp_path / "out"
    rc, stdout, err = cluster.submit(job, [text], out)
    assert rc == 0, err + cluster.logs()
    assert merged(read_wordcount(out)) == Counter(text.read_text().split())
    rc, logs, err = cluster.cli("logs", stdout.split()[0], "m0")
    assert rc == 0, err
    assert "yyyy\n[pytxmr: log truncated]\n" in logs, logs[:300]
    kept = [int(n) for n in re.findall(r"only the last \d+ bytes of (\d+) are kept", logs)]
    assert kept and max(kept) <= (1 << 20) + 100, kept


def test_the_submitters_environment_never_reaches_the_tasks(tmp_path: Path) -> None:
    """Under `run` the daemons are the submitter's own children, yet a job
    sees what it would see under `submit`: nothing of the shell it came
    from (values travel as --arg)."""
    from procs import base_env, run_cli

    job = write(tmp_path / "env.py", """
        import os

        def map(offset, line):
            yield "leak", os.environ.get("PYTXMR_TEST_THRESHOLD", "absent")
            yield "path", "set" if os.environ.get("PATH") else "missing"
    """)
    data = write(tmp_path / "in.txt", "x\n")
    env = {**base_env(tmp_path / "home"), "PYTXMR_TEST_THRESHOLD": "50"}
    rc, _, err = run_cli("run", str(job), str(data), "-o", str(tmp_path / "out"), env=env,
                         cwd=tmp_path)
    assert rc == 0, err
    assert lines(tmp_path / "out") == ["leak\tabsent", "path\tset"]


def test_the_submitters_directory_is_no_place_to_import_from(tmp_path: Path) -> None:
    """Under `run` the daemons start in the submitter's directory, whose
    modules `python -m` would put on their tasks' path: a job importing one
    worked there and failed on every cluster. Not under `run --inline`
    either: both fail as `submit` does."""
    from procs import base_env, run_cli

    write(tmp_path / "here_only.py", "def f(x):\n    return 'HERE:' + x\n")
    job = write(tmp_path / "sub" / "job.py", """
        def map(offset, line):
            import here_only  # not beside the job: not shipped

            yield here_only.f(line), 1
    """)
    data = write(tmp_path / "in.txt", "x\n")
    env = base_env(tmp_path / "home")
    for inline in ([], ["--inline"]):
        rc, _, err = run_cli("run", *inline, str(job), str(data), "-o",
                             str(tmp_path / f"out{len(inline)}"), env=env, cwd=tmp_path)
        assert rc == 1 and "No module named 'here_only'" in err, (inline, rc, err)


def test_modules_where_the_command_runs_are_not_pytxmr_s(tmp_path: Path) -> None:
    """``python -m`` puts its directory first on the path: a user's
    msgpack.py or logging.py there was imported by the command and by
    ``run``'s zygote, which died ("the task's zygote died")."""
    from procs import base_env, run_cli

    for name in ("msgpack", "logging", "socket"):
        write(tmp_path / f"{name}.py", f"raise SystemExit('the user\\'s {name}.py')\n")
    data = write(tmp_path / "in.txt", "b a b\n")
    env = base_env(tmp_path / "home")
    rc, _, err = run_cli("run", str(EXAMPLES / "wordcount.py"), str(data), "-o",
                         str(tmp_path / "out"), env=env, cwd=tmp_path)
    assert rc == 0, err
    assert counts(tmp_path / "out") == {"a": 1, "b": 2}
    rc, _, err = run_cli("jobs", "--jobtracker", "127.0.0.1:9", "--secret-file",
                         str(data), env=env, cwd=tmp_path)
    assert rc == 3 and "cannot reach the jobtracker" in err, err
    for daemon in ("pytxmr.jobtracker", "pytxmr.tasktracker"):  # a daemon started there
        proc = subprocess.run([sys.executable, "-m", daemon, "--help"], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (daemon, proc.stderr)
    # The user's own choice, PYTHONPATH=., stays: a job's import finds it
    # inline too (dropped again, it was "No module named 'cwdmod'").
    mine = tmp_path / "mine"  # without the decoys: PYTHONPATH=. would find them
    write(mine / "cwdmod.py", "VAL = 'x'\n")
    job = write(tmp_path / "elsewhere" / "job.py", """
        def map(offset, line):
            import cwdmod
            for word in line.split():
                yield word + cwdmod.VAL, 1

        def reduce(word, ones):
            yield word, sum(ones)
    """)
    for inline in ([], ["--inline"]):
        out = tmp_path / f"pp{len(inline)}"
        rc, _, err = run_cli("run", *inline, str(job), str(data), "-o", str(out),
                             env={**env, "PYTHONPATH": "."}, cwd=mine)
        assert rc == 0, (inline, err)
        assert counts(out) == {"ax": 1, "bx": 2}


def test_relative_paths_in_a_removed_directory_are_refused(tmp_path: Path) -> None:
    """They cannot be found: said in a line (exit 2), where the command
    ended in a traceback (exit 1); absolute paths still run."""
    from procs import base_env

    gone = tmp_path / "gone"
    gone.mkdir()
    data = write(tmp_path / "in.txt", "b a b\n")
    env = base_env(tmp_path / "home")
    script = ("import os, sys, runpy; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
              "sys.argv = ['pytxmr', *sys.argv[2:]]; runpy.run_module('pytxmr', "
              "run_name='__main__')")
    for inline in ([], ["--inline"]):
        gone.mkdir(exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", script, str(gone), "run", *inline,
                               str(EXAMPLES / "wordcount.py"), "in.txt", "-o", "out"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, (inline, proc.stderr)
        assert proc.stderr == ("pytxmr: the working directory was removed: give the job, its "
                               "inputs and its output as absolute paths\n"), proc.stderr
    gone.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", script, str(gone), "run",
                           str(EXAMPLES / "wordcount.py"), str(data), "-o",
                           str(tmp_path / "out"), "-q"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert counts(tmp_path / "out") == {"a": 1, "b": 2}


@pytest.mark.parametrize("inline", [False, True], ids=["run", "inline"])
def test_a_job_shipping_a_module_named_as_the_codec_is_told_so(tmp_path: Path,
                                                                 inline: bool) -> None:
    """A job with its own lz4.py, run with --compress lz4, where the command
    was started: the CLI imported that file as the codec ("needs the lz4
    package", which was installed), and a task would have too."""
    from procs import base_env, run_cli

    write(tmp_path / "lz4.py", "X = 1\n")
    job = write(tmp_path / "job.py", "import lz4\n\n\ndef map(k, line):\n"
                                     "    yield line, lz4.X\n")
    data = write(tmp_path / "in.txt", "a\n")
    rc, _, err = run_cli("run", str(job), str(data), "-o", str(tmp_path / "out"), "--compress",
                         "lz4", "--max-attempts", "1", *(["--inline"] if inline else []),
                         env=base_env(tmp_path / "home"), cwd=tmp_path, timeout=120)
    assert rc == 2, err  # refused at its submission, by the module's check
    assert "the job ships its own module 'lz4'" in err and "rename the job's lz4" in err, err
