"""``pytxmr.testing.run_job``: a job run on records in the test's own
process, as a user's unit test would (the docs' example included)."""

from __future__ import annotations

import json
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pytxmr
from pytxmr import Step, combiners
from pytxmr.testing import run_job

ROOT = Path(__file__).resolve().parents[2]
LINES = ["a b a", "c a b", "d"]


def test_the_docs_example() -> None:
    """docs/jobs.md, "Testing a job", word for word."""
    out = run_job(str(ROOT / "examples/top_words.py"), LINES, args={"n": "2"})
    assert out == [("a", 3), ("b", 2)]
    assert dict(run_job(str(ROOT / "examples/wordcount.py"), LINES, maps=2)) == Counter(
        " ".join(LINES).split())


def test_pairs_come_typed_part_after_part() -> None:
    def pair_up(key: object, value: tuple[int, str]):
        yield value[1], (value[0], key)

    def keep(key: str, values):
        yield key, sorted(values)

    job = types.SimpleNamespace(map=pair_up, reduce=keep, num_reducers=1)
    out = run_job(job, [(1, (5, "x")), (2, (6, "y")), (3, (7, "x"))])
    assert out == [("x", [(5, 1), (7, 3)]), ("y", [(6, 2)])]


def test_hooks_run_per_map_task_and_the_combiner_per_map() -> None:
    seen: list[str] = []

    def start() -> None:
        seen.append("init")

    job = types.SimpleNamespace(
        map=lambda k, line: ((w, 1) for w in line.split()), map_init=start,
        combine=combiners.sum, reduce=lambda w, ns: [(w, sum(ns))])
    out = run_job(job, ["x y", "x", "z x"], maps=3, num_reducers=2)
    assert dict(out) == {"x": 3, "y": 1, "z": 1} and seen == ["init"] * 3


def test_steps_and_sorted_values() -> None:
    def by_first(key: object, line: str):
        first, n = line.split()
        yield first, int(n)

    def ordered(key: str, values):
        yield key, list(values)

    job = types.SimpleNamespace(steps=[
        Step(map=by_first, reduce=ordered, sort_values=True),
        Step(map=lambda k, vs: [(len(vs), k)], reduce=lambda n, ks: [(n, sorted(ks))],
             num_reducers=1)])
    out = run_job(job, ["a 3", "b 1", "a 1", "a 2", "c 9"])
    assert out == [(1, ["b", "c"]), (3, ["a"])]


def test_a_batch_api_job_takes_lines(tmp_path: Path) -> None:
    """examples/wordcount_batch.py reads bytes (input_bytes): str lines are
    written as UTF-8, bytes lines as they are."""
    lines = [*LINES, "caf\u00e9 a"] * 10
    out = run_job(str(ROOT / "examples/wordcount_batch.py"), lines, maps=2)
    assert dict(out) == Counter(" ".join(lines).encode().split())
    out = run_job(str(ROOT / "examples/wordcount_batch.py"), [b"x \xff x", b"\xff"])
    assert dict(out) == {b"x": 2, b"\xff": 2}


def test_a_map_of_input_bytes_gets_bytes_lines() -> None:
    job = types.SimpleNamespace(map=lambda offset, line: [(line, type(line).__name__)],
                                reduce=lambda k, vs: [(k, list(vs))], input_bytes=True)
    assert run_job(job, [b"a\xff"], num_reducers=1) == [(b"a\xff", ["bytes"])]
    # A str line is the file's line: its UTF-8, as the batch API's is.
    assert run_job(job, ["caf\u00e9"], num_reducers=1) == [("caf\u00e9".encode(), ["bytes"])]
    assert run_job(job, [b"\xff".decode("utf-8", "surrogateescape")], num_reducers=1) == [
        (b"\xff", ["bytes"])]


def test_bad_arguments_are_refused_as_on_a_cluster() -> None:
    from pytxmr.jobargs import ArgumentError

    with pytest.raises(ArgumentError, match="'many' is not a valid positive_int"):
        run_job(str(ROOT / "examples/top_words.py"), LINES, args={"n": "many"})


@pytest.mark.parametrize("option, value", [
    ("reducers", -3), ("reducers", 0), ("split_size", 0), ("max_attempts", True),
    ("buffer_records", 1.5),
])
def test_the_api_refuses_bad_counts_inline_as_on_a_cluster(
        tmp_path: Path, option: str, value: object) -> None:
    """`pytxmr.run(..., inline=True)` ran reducers=-3 into an IndexError
    and reducers=0 as the default: refused, as the jobtracker refuses them."""
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    with pytest.raises(pytxmr.ClusterError, match=rf"{option}.* at least 1"):
        pytxmr.run(str(ROOT / "examples/wordcount.py"), str(data), str(tmp_path / "out"),
                   inline=True, **{option: value})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options", [
    {"workers": -1}, {"workers": 0}, {"slots": -2}, {"slots": 0}, {"workers": 1.5},
    {"slots": -1, "inline": True},
])
def test_the_api_refuses_workers_and_slots_the_command_line_refuses(
        tmp_path: Path, options: dict[str, object]) -> None:
    """workers=-1 hung the call, workers=0 divided by zero, slots=-2 failed
    deep in Twisted, slots=-1 ran inline: refused as --workers and --slots are."""
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    with pytest.raises(pytxmr.ClusterError, match="must be a whole number, at least 1"):
        pytxmr.run(str(ROOT / "examples/wordcount.py"), str(data), str(tmp_path / "out"),
                   timeout=30, **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inline", [True, False])
def test_a_misspelt_option_is_refused_by_name(tmp_path: Path, inline: bool) -> None:
    """A misspelling raised a bare TypeError on a cluster and, inline, a
    ClusterError quoting run_inline's signature; refused, the option named,
    before any cluster starts."""
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    with pytest.raises(pytxmr.ClusterError, match=r"no such option: reducer \(the options: "
                       r"args, .*reducers"):
        pytxmr.run(str(ROOT / "examples/wordcount.py"), str(data), str(tmp_path / "out"),
                   inline=inline, reducer=2)
    assert not (tmp_path / "out").exists()


def test_inline_takes_a_cluster_s_options_and_warns_of_a_timeout(tmp_path: Path) -> None:
    """max_attempts and speculative, valid on a cluster, were refused inline
    (run_inline had no such arguments), as `run --inline` takes them; a
    timeout was ignored without a word."""
    data = tmp_path / "in.txt"
    data.write_text("a b a\n")
    result = pytxmr.run(str(ROOT / "examples/wordcount.py"), str(data), str(tmp_path / "out"),
                        inline=True, max_attempts=2, speculative=True)
    assert dict(result.records()) == Counter("a b a".split())
    with pytest.warns(RuntimeWarning, match="timeout does not apply inline"):
        result = pytxmr.run(str(ROOT / "examples/wordcount.py"), str(data),
                            str(tmp_path / "out2"), inline=True, timeout=5)
    assert dict(result.records()) == Counter("a b a".split())


def test_a_job_object_that_cannot_be_pickled_is_refused_with_a_way_out(tmp_path: Path) -> None:
    """A closure over a lock gave cloudpickle's bare TypeError ("cannot
    pickle '_thread.lock' object"), which named neither the job nor a fix."""
    import threading

    lock = threading.Lock()

    def locked_words(offset: int, line: str):
        with lock:
            yield from ((w, 1) for w in line.split())

    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    job = types.SimpleNamespace(map=locked_words, reduce=combiners.sum)
    with pytest.raises(pytxmr.ClusterError, match=r"cannot travel to its tasks.*"
                       r"TypeError: cannot pickle '_thread.lock'.*give the job as a module"):
        pytxmr.run(job, str(data), str(tmp_path / "out"), workers=1)
    assert not (tmp_path / "out").exists()


def test_a_client_without_its_secret_or_certificates_is_a_cluster_error(tmp_path: Path) -> None:
    """The docs promise ClusterError for what the cluster's side refuses:
    a missing secret file raised SecretError, a missing TLS directory
    TLSError."""
    from pytxmr.secret import SecretError
    from pytxmr.tls import TLSError

    with pytest.raises(pytxmr.ClusterError, match="nosuch") as no_secret:
        pytxmr.Client("127.0.0.1:1", secret_file=str(tmp_path / "nosuch"))
    assert isinstance(no_secret.value.__cause__, SecretError)
    secret = tmp_path / "secret"
    secret.write_text("0" * 64 + "\n")
    secret.chmod(0o600)
    with pytest.raises(pytxmr.ClusterError) as no_tls:
        pytxmr.Client("127.0.0.1:1", secret_file=str(secret), tls=str(tmp_path / "nocerts"))
    assert isinstance(no_tls.value.__cause__, TLSError)


@pytest.mark.parametrize("inline", [True, False])
def test_the_api_takes_pathlib_paths_wherever_it_takes_paths(tmp_path: Path, inline: bool) -> None:
    """A Path worked for the job, but inputs, output, py_files and files
    failed deep inside (expected string or bytes-like object)."""
    data = tmp_path / "in.txt"
    data.write_text("a b a\n")
    helper = tmp_path / "helper.py"
    helper.write_text("X = 1\n")
    result = pytxmr.run(ROOT / "examples/wordcount.py", [data], tmp_path / "out", inline=inline,
                        py_files=helper, files=[data], timeout=None if inline else 60)
    assert dict(result.records()) == {"a": 2, "b": 1}
    result = pytxmr.run(ROOT / "examples/wordcount.py", data, tmp_path / "out2", inline=inline,
                        timeout=None if inline else 60)
    assert dict(result.records()) == {"a": 2, "b": 1}


@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("inputs, output, why", [
    ([], "out", "no inputs given"),
    ("", "out", "an input is an empty path"),
    (["in.txt", ""], "out", "an input is an empty path"),
    ("in.txt", "", "the output is an empty path"),
])
def test_no_input_or_an_empty_path_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool, inputs: object,
        output: str, why: str) -> None:
    """An empty path named the working directory (an unset "$INPUT" read
    every file there), and inline, no input at all made an empty output."""
    monkeypatch.chdir(tmp_path)
    Path("in.txt").write_text("a b\n")
    with pytest.raises(pytxmr.ClusterError, match=why):
        pytxmr.run(str(ROOT / "examples/wordcount.py"), inputs, output, inline=inline,
                   timeout=None if inline else 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_inline_the_api_fails_and_refuses_jobs_as_on_a_cluster(tmp_path: Path) -> None:
    """A job that fails raises JobFailed (check=False: its failed result),
    a refused one ClusterError: the user's KeyError and the module's
    ArgumentError came out as they were."""
    from pytxmr.jobargs import ArgumentError

    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    job = tmp_path / "job.py"
    job.write_text("def map(k, line):\n    yield line, 1\n\n"
                   "def reduce(k, vs):\n    raise KeyError('no ' + k)\n")
    with pytest.raises(pytxmr.JobFailed, match="KeyError: 'no a b'") as info:
        pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True)
    assert info.value.result.state == "failed" and "job.py" in str(info.value)
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out2"), inline=True, check=False)
    assert (result.ok, result.error and result.error["type"]) == (False, "KeyError")
    assert not (tmp_path / "out2" / "_SUCCESS").exists()
    with pytest.raises(pytxmr.ClusterError, match="not a valid int") as refused:
        pytxmr.run(str(ROOT / "examples/threshold.py"), str(data), str(tmp_path / "out3"),
                   inline=True, args={"min_count": "x"})
    assert isinstance(refused.value.__cause__, ArgumentError)
    assert not (tmp_path / "out3").exists()


@pytest.mark.parametrize("code", [0, 3])
def test_a_job_s_sys_exit_inline_fails_the_job_not_the_caller(tmp_path: Path, code: int) -> None:
    """sys.exit() in a job's code ended the program that ran it inline
    (exit 0 with no output, or 3, the status of an unreachable cluster),
    and pytxmr.run(..., check=False) raised SystemExit: a task's failure,
    as on a cluster; at import, the job's refusal."""
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    job = tmp_path / "job.py"
    job.write_text(f"import sys\n\ndef map(k, line):\n    sys.exit({code})\n    yield line, 1\n")
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True, check=False)
    assert result.state == "failed" and result.error is not None
    assert (result.error["type"], result.error["message"]) == ("SystemExit", f"SystemExit: {code}")
    assert "job.py" in result.error["traceback"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_PYTXMR_OUTPUT"]
    job.write_text(f"import sys\nsys.exit({code})\n")
    with pytest.raises(pytxmr.ClusterError, match=f"SystemExit: {code}"):
        pytxmr.run(str(job), str(data), str(tmp_path / "out2"), inline=True)


def test_inline_jobs_from_several_threads_run_one_after_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inline job takes the process's working directory, counters and
    arguments while it runs: four at once failed (a task directory gone
    under another job) or could mix them."""
    import threading

    monkeypatch.chdir(tmp_path)
    text = "a b a\nc a b\nd a\n"
    Path("in.txt").write_text(text)  # relative paths: read against this directory
    counts = Counter(text.split())
    results: dict[int, object] = {}

    def job(n: int) -> None:
        try:
            results[n] = pytxmr.run(str(ROOT / "examples/threshold.py"), "in.txt", f"out{n}",
                                    inline=True, args={"min_count": str(n)})
            results[-n] = run_job(str(ROOT / "examples/threshold.py"), text.splitlines(),
                                  args={"min_count": str(n)})
        except Exception as e:
            results[n] = e

    threads = [threading.Thread(target=job, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(1, 5):
        expected = {w: c for w, c in counts.items() if c >= n}
        result = results[n]
        assert isinstance(result, pytxmr.JobResult), result
        assert dict(result.records()) == expected
        assert result.output == str(tmp_path / f"out{n}")
        assert result.counters["pytxmr"]["map input records"] == 3
        assert dict(results[-n]) == expected  # type: ignore[call-overload]
    assert Path.cwd() == tmp_path


def test_the_api_takes_one_py_file_as_a_path(tmp_path: Path) -> None:
    """A string is one path, as for ``inputs`` (it was read a letter at a time)."""
    (tmp_path / "helper.py").write_text("WORDS = {'a'}\n")
    job = tmp_path / "job.py"
    job.write_text("import helper\n\ndef map(k, line):\n"
                   "    for w in line.split():\n        if w in helper.WORDS:\n"
                   "            yield w, 1\n\ndef reduce(k, vs):\n    yield k, sum(vs)\n")
    data = tmp_path / "in.txt"
    data.write_text("a b a\n")
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True,
                        py_files=str(tmp_path / "helper.py"))
    assert dict(result.records()) == {"a": 2}


COUNTS_PER_FILE = """
import os
import pytxmr


def map(key, line):
    if key == 0:  # a file's first line names its counters
        for i in range(int(os.environ.get("NAMES", "0"))):
            pytxmr.counter("per file", f"{line}-{i}")
    yield line, 1


def reduce(key, values):
    yield key, sum(values)
"""


@pytest.mark.parametrize("files, per_file, refused", [(2, 200, False), (9, 250, True)])
def test_inline_bounds_counters_per_task_and_per_step_as_a_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: int, per_file: int,
        refused: bool) -> None:
    """Each task may keep 250 counters and a step's tasks 2,000 together, as
    on a cluster: two maps of 200 each pass (inline used to bound the whole
    job at 250), nine of 250 fail the job with TooManyCounters."""
    job = tmp_path / "job.py"
    job.write_text(COUNTS_PER_FILE)
    inputs = []
    for n in range(files):
        inputs.append(str(tmp_path / f"in{n}.txt"))
        Path(inputs[-1]).write_text(f"f{n}\n")
    monkeypatch.setenv("NAMES", str(per_file))
    if refused:
        with pytest.raises(pytxmr.JobFailed, match="TooManyCounters.*counted 2,250 distinct"):
            pytxmr.run(str(job), inputs, str(tmp_path / "out"), inline=True)
        assert not (tmp_path / "out" / "_SUCCESS").exists()
    else:
        result = pytxmr.run(str(job), inputs, str(tmp_path / "out"), inline=True)
        assert len(result.counters["per file"]) == files * per_file


def test_a_none_value_is_written_as_its_key_alone_and_read_back_so(tmp_path: Path) -> None:
    """Text output writes ``(key, None)`` as the key's line alone (Hadoop's
    NullWritable), from a reduce and from a map-only job alike, and
    ``records()`` reads such a line back as ``(key, None)``, also when the
    key's JSON is a pair (the job says its output is text: no line is
    taken for a jsonl pair, as ``(["a", "y"], None)`` was read as
    ``("a", "y")``); an empty str value keeps its tab. jsonl output
    writes and reads None values as JSON. (On a cluster: the API script
    of tests/integration/test_authoring.py.)"""
    data = tmp_path / "in.txt"
    lines = ["b x", "a y", "b z", "c"]
    data.write_text("\n".join(lines) + "\n")
    job = tmp_path / "job.py"
    body = ("def map(k, line):\n    yield line, None\n    yield line[:1], ''\n"
            "    yield tuple(line.split()) + ('t',), None\n    yield '[\"x\", 1]', None\n\n"
            "def reduce(k, vs):\n    for v in vs:\n        yield k, v\n")
    job.write_text(body)
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True, reducers=1)
    assert result.output_format == "text"
    expected = ([(line, None) for line in lines] + [(line[0], "") for line in lines]
                + [(line.split() + ["t"], None) for line in lines])
    # Text: a field that reads as JSON comes back as that (the str key too).
    assert sorted(map(repr, result.records())) == sorted(
        map(repr, expected + [(["x", 1], None)] * 4))
    text = (tmp_path / "out" / "part-00000").read_text()
    assert sorted(text.splitlines()) == sorted(
        lines + [f"{line[0]}\t" for line in lines] + ['["x", 1]'] * 4
        + [json.dumps(line.split() + ["t"]) for line in lines])
    job.write_text(body + "output_format = 'jsonl'\n")
    result = pytxmr.run(str(job), str(data), str(tmp_path / "jsonl"), inline=True, reducers=1)
    assert result.output_format == "jsonl"
    assert sorted(map(repr, result.records())) == sorted(
        map(repr, expected + [('["x", 1]', None)] * 4))
    assert all(json.loads(line)[1] in (None, "")
               for line in (tmp_path / "jsonl" / "part-00000").read_text().splitlines())
    job.write_text("def map(k, line):\n    yield line, None\n")  # no reduce: map-only
    pytxmr.run(str(job), str(data), str(tmp_path / "maponly"), inline=True)
    written = [line for p in sorted((tmp_path / "maponly").glob("part-*"))
               for line in p.read_text().splitlines()]
    assert sorted(written) == sorted(lines)


def test_a_str_enum_key_travels_and_is_written_as_its_value(tmp_path: Path) -> None:
    """A (str, Enum) member equals its value: it groups with it and is
    written as it, not as ``C.RED`` (str() of the member) nor JSON-quoted."""
    data = tmp_path / "in.txt"
    data.write_text("x\n")
    job = tmp_path / "job.py"
    enum = "import enum\nclass C(str, enum.Enum):\n    RED = 'red'\n\n"
    job.write_text(enum + "def map(k, line):\n    yield C.RED, C.RED\n    yield 'red', 'plain'\n\n"
                   "def reduce(k, vs):\n    yield k, sorted(vs)\n")
    pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True, reducers=1)
    assert (tmp_path / "out" / "part-00000").read_text() == 'red\t["plain", "red"]\n'
    job.write_text(enum + "def map(k, line):\n    yield C.RED, C.RED\n")
    pytxmr.run(str(job), str(data), str(tmp_path / "maponly"), inline=True)
    assert [p.read_text() for p in (tmp_path / "maponly").glob("part-*")] == ["red\tred\n"]


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_bytes_that_are_not_utf8_come_back_and_jsonl_stays_json(tmp_path: Path,
                                                                 fmt: str) -> None:
    """Words read with surrogateescape: text output writes their bytes back
    as they were, jsonl output escapes them (\\udce9: every line is UTF-8
    JSON), and records() reads both back as the job had them (it failed
    with UnicodeDecodeError)."""
    data = tmp_path / "in.txt"
    raw = b"caf\xe9 \xff caf\xe9 plain\n"
    data.write_bytes(raw)
    job = tmp_path / "job.py"
    job.write_text(f"encoding_errors = 'surrogateescape'\noutput_format = '{fmt}'\n"
                   "def map(k, line):\n    for w in line.split():\n        yield w, 1\n\n"
                   "def reduce(k, vs):\n    yield k, sum(vs)\n")
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True, reducers=1)
    expected = Counter(raw.decode("utf-8", "surrogateescape").split())
    assert dict(result.records()) == expected
    written = (tmp_path / "out" / "part-00000").read_bytes()
    if fmt == "jsonl":
        assert dict(json.loads(line) for line in written.decode("utf-8").splitlines()) == expected
    else:
        assert b"caf\xe9\t2\n" in written


def test_jsonl_records_read_ints_of_any_size(tmp_path: Path) -> None:
    """jsonl writes an int of 5,000 digits exactly; records() read it back
    (json.loads stops at 4,300 digits)."""
    data = tmp_path / "in.txt"
    data.write_text("x\n")
    job = tmp_path / "job.py"
    job.write_text("output_format = 'jsonl'\ndef map(k, line):\n    yield -10 ** 5000, 10 ** 4400\n\n"
                   "def reduce(k, vs):\n    yield k, sum(vs)\n")
    result = pytxmr.run(str(job), str(data), str(tmp_path / "out"), inline=True, reducers=1)
    assert list(result.records()) == [(-10 ** 5000, 10 ** 4400)]


def test_a_helper_modules_state_is_each_tasks_and_each_runs_own(tmp_path: Path) -> None:
    """A job's helper beside it, holding an in-mapper combiner's counts,
    kept them from one task to the next and from one call to the next: a
    test's answer depended on the tests before it."""
    (tmp_path / "imc_buffer.py").write_text("from collections import Counter\n"
                                            "counts = Counter()\n")
    job = tmp_path / "imc.py"
    job.write_text("import imc_buffer\n\n\n"
                   "def map(key, line):\n    imc_buffer.counts.update(line.split())\n"
                   "    return ()\n\n\n"
                   "def map_final():\n    yield from imc_buffer.counts.items()\n\n\n"
                   "def reduce(word, counts):\n    yield word, sum(counts)\n")
    expected = Counter(" ".join(LINES).split())
    for maps in (1, 1, 2, 3):
        assert dict(run_job(str(job), LINES, maps=maps)) == expected


def test_a_jobs_path_may_start_with_a_tilde(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As the command line and pytxmr.run take it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "wc.py").write_text((ROOT / "examples" / "wordcount.py").read_text())
    assert dict(run_job("~/wc.py", LINES)) == Counter(" ".join(LINES).split())


def test_a_step_without_a_map_blames_the_step_before_for_its_keys() -> None:
    """Step 1's reduce yielded list keys; step 2, without a map, shuffled
    them and failed saying "map must yield ... (unsupported key type
    list)", of a job whose only map yields str keys."""
    from pytxmr.records import RecordTypeError

    def count(word: str, ones: Any) -> Any:
        yield [word, 1], sum(ones)

    def total(key: Any, values: Any) -> Any:
        yield key, sum(values)

    job = types.SimpleNamespace(steps=[
        Step(map=lambda k, line: ((w, 1) for w in line.split()), reduce=count),
        Step(reduce=total)])
    with pytest.raises(RecordTypeError, match=r"^the step before this one \(this step has no "
                                              r"map.*unsupported key type list"):
        run_job(job, LINES)
