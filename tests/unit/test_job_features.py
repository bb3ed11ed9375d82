"""What a job's author writes beyond map and reduce, run in one process
(``run_inline``, the same map and reduce code as the cluster's tasks):
arguments, hooks, map-only jobs, steps, sorted values and shipped code.
Each answer is checked against an independent computation."""

from __future__ import annotations

import importlib
import json
import random
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from pytxmr.inline import run_inline
from pytxmr.jobargs import ArgumentError
from pytxmr.jobmodule import JobDefinitionError

WORDS = ["apple", "pear", "fig", "kiwi", "plum", "lime", "date", "yuzu", "nut", "oat"]


def corpus(tmp_path: Path, lines: int = 2000, seed: int = 7) -> Path:
    rng = random.Random(seed)
    path = tmp_path / "in.txt"
    path.write_text("".join(" ".join(rng.choices(WORDS, weights=range(1, 11), k=8)) + "\n"
                            for _ in range(lines)))
    return path


def job(tmp_path: Path, source: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def parts(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("part-*")) for line in p.read_text().splitlines()]


def counts(lines: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split("\t") for line in lines)}


def word_counter(path: Path) -> Counter[str]:
    return Counter(path.read_text().split())


ARGS_JOB = """
    import pytxmr
    from pytxmr import Arg

    arguments = [Arg("min_count", int, help="the least count shown"),
                 Arg("suffix", default="")]

    def map(offset, line):
        for word in line.split():
            yield word + pytxmr.args()["suffix"], 1

    def reduce(word, ones):
        n = sum(ones)
        if n >= pytxmr.args()["min_count"]:
            yield word, n
"""


def test_arguments_reach_the_tasks_typed(tmp_path: Path) -> None:
    inp = corpus(tmp_path)
    run_inline(job(tmp_path, ARGS_JOB), [str(inp)], str(tmp_path / "out"),
               args={"min_count": "1500", "suffix": "!"}, num_reducers=2)
    expected = {w + "!": n for w, n in word_counter(inp).items() if n >= 1500}
    assert counts(parts(tmp_path / "out")) == expected and expected


@pytest.mark.parametrize("args, message", [
    ({}, "needs the argument min_count"),
    ({"min_count": "many"}, "'many' is not a valid int"),
    ({"min_count": "1", "other": "2"}, "declares no argument other"),
    ([("min_count", "1"), ("min_count", "2")], "given twice"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: Any,
                                                        message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        run_inline(job(tmp_path, ARGS_JOB), [str(corpus(tmp_path))], str(tmp_path / "out"),
                   args=args)
    assert not (tmp_path / "out").exists()


def test_arguments_read_at_the_top_level_are_refused(tmp_path: Path) -> None:
    """The module's top level runs before its declarations parse them: it
    read {} there (a KeyError naming nothing), or .get() a default whatever
    was given, or in a reused process the task before's arguments."""
    source = """
        from pytxmr import Arg, args

        arguments = [Arg("n", int, default=4)]
        N = args().get("n", "MISSING")

        def map(offset, line):
            yield "n", N
    """
    with pytest.raises(JobDefinitionError, match=r"pytxmr.args\(\) is not known while the job "
                                                  r"module is imported.*call it in map"):
        run_inline(job(tmp_path, source), [str(corpus(tmp_path))], str(tmp_path / "out"),
                   args={"n": "7"})


def test_a_helper_that_fails_to_load_is_named_as_in_the_bundle(tmp_path: Path) -> None:
    """As a cluster's check names it (helper.py), not where run --inline
    unpacked the bundle (/tmp/pytxmr-inline-.../bundles/SHA/py/helper.py)."""
    (tmp_path / "helper.py").write_text("X = 1\nraise ValueError('bad helper')\n")
    source = "import helper\n\ndef map(offset, line):\n    yield line, helper.X\n"
    with pytest.raises(JobDefinitionError) as info:
        run_inline(job(tmp_path, source), [str(corpus(tmp_path))], str(tmp_path / "out"))
    text = str(info.value)
    assert 'File "helper.py", line 2' in text and "ValueError: bad helper" in text, text
    assert "bundles" not in text, text


def test_a_helper_that_would_lose_to_a_module_imported_already_is_refused(
        tmp_path: Path) -> None:
    """A csv.py beside the job was shipped and silently never used: the
    process had imported Python's csv. One named as nothing imported yet
    (graphlib.py) is the job's own, as before."""
    __import__("csv")  # imported already, as in every task process

    (tmp_path / "csv.py").write_text("MINE = 1\n")
    source = "import csv\n\ndef map(offset, line):\n    yield line, csv.MINE\n"
    with pytest.raises(JobDefinitionError, match="the job ships its own module 'csv', but its "
                                                 "task processes have imported another"):
        run_inline(job(tmp_path, source), [str(corpus(tmp_path, 3))], str(tmp_path / "out"))
    (tmp_path / "graphlib.py").write_text("MINE = 2\n")
    source = "import graphlib\n\ndef map(offset, line):\n    yield 'mine', graphlib.MINE\n"
    run_inline(job(tmp_path, source), [str(corpus(tmp_path, 3))], str(tmp_path / "out2"))
    assert parts(tmp_path / "out2") == ["mine\t2"] * 3



def _callers_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module and a package beside the job, importable by the caller too
    (none of their names imported yet)."""
    (tmp_path / "textutil.py").write_text("def norm(w):\n    return w.upper()\n")
    (tmp_path / "wordpkg").mkdir()
    (tmp_path / "wordpkg" / "__init__.py").write_text("from .inner import SUFFIX\n")
    (tmp_path / "wordpkg" / "inner.py").write_text("SUFFIX = '!'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("textutil", "wordpkg", "wordpkg.inner"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_helper_the_caller_imported_itself_is_the_job_s_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller of an inline job imported the job's helper (the job
    module, say) from the very file the job ships: that is no other
    module, and the job ran with it on a cluster, but was refused here.
    A package too; another module of the name is refused still."""
    _callers_helpers(tmp_path, monkeypatch)
    __import__("textutil")
    __import__("wordpkg")
    source = ("import textutil, wordpkg\n\ndef map(offset, line):\n"
              "    yield textutil.norm(line) + wordpkg.SUFFIX, 1\n")
    run_inline(job(tmp_path, source), [str(corpus(tmp_path, 2))], str(tmp_path / "out"))
    assert len(parts(tmp_path / "out")) == 2
    assert all(line.endswith("!\t1") and line == line.upper() for line in parts(tmp_path / "out"))
    other = tmp_path / "other"  # the caller's own textutil, not the job's
    other.mkdir()
    (other / "textutil.py").write_text("def norm(w):\n    return w.lower()\n")
    monkeypatch.syspath_prepend(str(other))
    del sys.modules["textutil"]
    __import__("textutil")
    with pytest.raises(JobDefinitionError, match="its own module 'textutil', but its task"):
        run_inline(job(tmp_path, source), [str(corpus(tmp_path, 2))], str(tmp_path / "out2"))


def test_a_helper_the_caller_imported_then_edited_runs_as_it_is_now(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook imported the job's helper, then the helper was edited:
    inline, the job ran the caller's stale copy (a cluster's task imports
    the file as it is). The caller keeps its own module objects."""
    _callers_helpers(tmp_path, monkeypatch)
    mine = {name: importlib.import_module(name) for name in ("textutil", "wordpkg.inner")}
    (tmp_path / "textutil.py").write_text("def norm(w):\n    return 'edited ' + w\n")
    (tmp_path / "wordpkg" / "inner.py").write_text("SUFFIX = '?'\n")
    source = ("import textutil, wordpkg\n\ndef map(offset, line):\n"
              "    yield textutil.norm(line) + wordpkg.SUFFIX, 1\n")
    run_inline(job(tmp_path, source), [str(corpus(tmp_path, 2))], str(tmp_path / "out"))
    lines = parts(tmp_path / "out")
    assert len(lines) == 2 and all(line.startswith("edited ") and line.endswith("?\t1")
                                   for line in lines), lines
    assert sys.modules["textutil"] is mine["textutil"] and mine["textutil"].norm("a") == "A"
    assert sys.modules["wordpkg.inner"] is mine["wordpkg.inner"]
    assert sys.modules["wordpkg"].SUFFIX == "!"


HOOKS_JOB = """
    from collections import Counter

    totals = None

    def map_init():
        global totals
        totals = Counter()

    def map(offset, line):
        totals.update(line.split())
        return ()

    def map_final():
        yield from totals.items()
        yield "__maps__", 1

    def reduce_init():
        yield "__reduces__", 1

    def reduce(word, counts):
        yield word, sum(counts)

    def reduce_final():
        yield "__end__", 0
"""


def test_hooks_run_once_per_task_around_the_records(tmp_path: Path) -> None:
    """In-mapper combining: map keeps a Counter, map_final emits it."""
    inp = corpus(tmp_path)
    counters = run_inline(job(tmp_path, HOOKS_JOB), [str(inp)], str(tmp_path / "out"),
                          num_reducers=3, split_size=4096)
    lines = parts(tmp_path / "out")
    assert lines.count("__reduces__\t1") == 3 and lines.count("__end__\t0") == 3
    got = counts([line for line in lines if not line.startswith(("__reduces__", "__end__"))])
    maps = got.pop("__maps__")
    assert got == dict(word_counter(inp))
    assert maps == counters["pytxmr"]["map input bytes"] // 4096 + 1 > 1
    assert counters["pytxmr"]["map input records"] == 2000


SPLIT_HOOKS_JOB = """
    from collections import Counter

    seen = None

    def map_init():
        global seen
        seen = Counter()

    def map_split(chunks):  # a plain function: its pairs are made at its call
        for offset, text in chunks:
            seen.update(text.split())
        return list(seen.items())

    def map_final():
        yield "__maps__", len(seen) > 0

    def reduce(word, counts):
        yield word, sum(counts)
"""


def test_a_map_split_that_returns_its_pairs_runs_after_map_init(tmp_path: Path) -> None:
    """map_init makes the state map_split uses: called when its records'
    turn comes, not when the map is set up (it failed on seen None)."""
    inp = corpus(tmp_path)
    run_inline(job(tmp_path, SPLIT_HOOKS_JOB), [str(inp)], str(tmp_path / "out"),
               split_size=4096)
    got = counts(parts(tmp_path / "out"))
    maps = got.pop("__maps__")
    assert got == dict(word_counter(inp))
    assert maps == (inp.stat().st_size - 1) // 4096 + 1 > 1  # every map's seen was filled


SCRATCH_JOB = """
    import os

    def map_init():
        with open("scratch.txt", "a") as f:  # a task's own file, in its own directory
            f.write("x\\n")

    def map(offset, line):
        return ()

    def map_final():
        with open("scratch.txt") as f:
            lines = len(f.readlines())
        shipped = open("stop.txt").read().strip() if os.path.exists("stop.txt") else None
        yield (lines, shipped), 1

    def reduce(key, ones):
        yield key, sum(ones)
"""


def test_each_inline_task_starts_in_a_working_directory_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a cluster: what a map left in its working directory is gone
    for the next (the job's shipped files stay), and none of it lands in
    the submitter's directory (a job without a bundle ran in it)."""
    inp = corpus(tmp_path)
    stop = tmp_path / "stop.txt"
    stop.write_text("the\n")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    maps = (inp.stat().st_size - 1) // 4096 + 1
    for files, expected in (([str(stop)], '"the"'), ([], "null")):
        out = tmp_path / f"out{len(files)}"
        run_inline(job(tmp_path, SCRATCH_JOB), [str(inp)], str(out), files=files,
                   split_size=4096)
        assert parts(out) == [f"[1, {expected}]\t{maps}"]
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("source, said", [
    ("def map(offset, line):\n    yield from line.split()\n",
     "map must yield (key, value) pairs (too many values to unpack (expected 2)), at its "
     "record (6, 'xyz')"),
    ("def map(offset, line):\n    return ()\ndef map_final():\n    return 42\n",
     "map_final must return or yield (key, value) pairs, not int"),
    ("def map_split(chunks):\n    return [(w, 1) for _, t in chunks for w in t.split()] + "
     "['ab c']\n", "map_split must return or yield (key, value) pairs, not 'ab c' (too many "
     "values to unpack (expected 2))"),
    ("from pytxmr import combiners\ncombine = combiners.sum\n"
     "def map(offset, line):\n    yield [line], 1\n",
     "map must yield (key, value) pairs whose key is str, bytes, int, float, bool, None or a "
     "tuple of these (unhashable type: 'list'), at its record (0, 'ab cd')"),
])
def test_a_map_output_that_is_no_pair_is_said_of_the_code_that_gave_it(
        tmp_path: Path, source: str, said: str) -> None:
    """Named: the function or hook that yielded it, the item or the record
    at hand; it read "map must yield pairs whose key is str..." for a bare
    word of a map, a map_final's 42 and a map_split's str alike."""
    from pytxmr.jobmodule import describe_error
    from pytxmr.records import RecordTypeError

    data = tmp_path / "in.txt"
    data.write_text("ab cd\nxyz\n")
    path = job(tmp_path, source + "def reduce(k, vs):\n    yield k, sum(vs)\n")
    with pytest.raises(RecordTypeError) as info:
        run_inline(path, [str(data)], str(tmp_path / "out"))
    assert str(info.value) == said
    # pytxmr's frames say nothing of the user's code: the message alone.
    assert describe_error(info.value, path)["traceback"].strip() == (
        f"pytxmr.records.RecordTypeError: {said}")


@pytest.mark.parametrize("hook", ["map_final", "reduce_init", "reduce_final"])
def test_a_hook_that_yields_no_pair_is_named(tmp_path: Path, hook: str) -> None:
    """A map-only job's map_final, and the reduce's hooks, were "map" and
    "reduce" in the message."""
    from pytxmr.records import RecordTypeError

    data = tmp_path / "in.txt"
    data.write_text("ab cd\n")
    reduce = "" if hook == "map_final" else "def reduce(k, vs):\n    yield k, sum(vs)\n"
    path = job(tmp_path, f"def map(offset, line):\n    yield line, 1\n{reduce}"
                         f"def {hook}():\n    yield 'lone'\n")
    with pytest.raises(RecordTypeError, match=f"^{hook} must yield \\(key, value\\) pairs, "
                                              "not 'lone'"):
        run_inline(path, [str(data)], str(tmp_path / "out"))


def test_a_hook_that_is_no_function_runs(tmp_path: Path) -> None:
    """A partial has no __name__, which naming the hook of a map-only job
    took for granted (every map failed)."""
    data = tmp_path / "in.txt"
    data.write_text("ab cd\n")
    path = job(tmp_path, "import functools\n\ndef map(offset, line):\n    yield line, 1\n\n"
                         "def _final(tag):\n    yield tag, 0\n\n"
                         "map_final = functools.partial(_final, 'end')\n")
    run_inline(path, [str(data)], str(tmp_path / "out"))
    assert sorted(parts(tmp_path / "out")) == ["ab cd\t1", "end\t0"]


MAP_ONLY_JOB = """
    def map(offset, line):
        words = line.split()
        if "yuzu" in words:
            yield offset, len(words)
"""


def test_a_job_without_reduce_writes_its_maps_output(tmp_path: Path) -> None:
    inp = corpus(tmp_path)
    counters = run_inline(job(tmp_path, MAP_ONLY_JOB), [str(inp)], str(tmp_path / "out"),
                          split_size=5000)
    out = tmp_path / "out"
    expected, offset = [], 0
    for line in inp.read_bytes().splitlines(keepends=True):
        if b"yuzu" in line.split():
            expected.append(f"{offset}\t8")
        offset += len(line)
    assert parts(out) == expected  # part-NNNNN per map, in input order
    assert len(list(out.glob("part-*"))) == -(-inp.stat().st_size // 5000)
    assert (out / "_SUCCESS").exists() and not (out / "_temporary").exists()
    assert "reduce input records" not in counters["pytxmr"]
    with pytest.raises(JobDefinitionError, match="map-only"):
        run_inline(job(tmp_path, MAP_ONLY_JOB), [str(inp)], str(tmp_path / "out2"),
                   num_reducers=2)


TOP_JOB = """
    import heapq
    from pytxmr import Arg, Step, args, combiners

    arguments = [Arg("n", int, default=3)]
    best = []

    def words(offset, line):
        for word in line.split():
            yield word, 1

    def total(word, counts):
        yield word, sum(counts)

    def keep(word, count):
        heapq.heappush(best, (count, word))
        if len(best) > args()["n"]:
            heapq.heappop(best)
        return ()

    def keep_final():
        for count, word in best:
            yield None, (count, word)

    def top(_, pairs):
        for count, word in heapq.nlargest(args()["n"], pairs):
            yield word, count

    steps = [Step(map=words, combine=combiners.sum, reduce=total, num_reducers=3),
             Step(map=keep, map_final=keep_final, reduce=top, num_reducers=1)]
"""


def test_steps_feed_each_other_typed_pairs(tmp_path: Path) -> None:
    inp = corpus(tmp_path)
    out = tmp_path / "out"
    counters = run_inline(job(tmp_path, TOP_JOB), [str(inp)], str(out), args={"n": "4"})
    expected = sorted(((n, w) for w, n in word_counter(inp).items()), reverse=True)[:4]
    assert parts(out) == [f"{w}\t{n}" for n, w in expected]
    assert sorted(p.name for p in out.iterdir()) == ["_PYTXMR_OUTPUT", "_SUCCESS", "part-00000"]
    # Both steps' counters add up: step 2 read what step 1 wrote.
    assert counters["pytxmr"]["reduce output records"] == len(word_counter(inp)) + 4


SORTED_VALUES_JOB = """
    sort_values = True

    def map(offset, line):
        key, value = line.split()
        yield key, int(value)

    def reduce(key, values):
        values = list(values)
        yield key, [values[0], values[-1], len(values), values == sorted(values)]
"""


def test_sorted_values_reach_reduce_in_order_across_many_spills(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [(rng.choice("abc"), rng.randrange(-10**6, 10**6)) for _ in range(60_000)]
    inp = tmp_path / "in.txt"
    inp.write_text("".join(f"{k} {v}\n" for k, v in rows))
    run_inline(job(tmp_path, SORTED_VALUES_JOB), [str(inp)], str(tmp_path / "out"),
               num_reducers=2, split_size=100_000, buffer_records=5000)
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, v in rows:
        by_key[k].append(v)
    got = {k: json.loads(v) for k, v in (line.split("\t") for line in parts(tmp_path / "out"))}
    assert got == {k: [min(vs), max(vs), len(vs), True] for k, vs in by_key.items()}


def test_sorted_values_must_be_orderable(tmp_path: Path) -> None:
    source = "sort_values = True\ndef map(k, v):\n    yield 'k', {'a': 1}\n" \
             "def reduce(k, vs):\n    yield k, 1\n"
    (tmp_path / "in.txt").write_text("x\ny\n")
    with pytest.raises(TypeError, match="sort_values sorts values"):
        run_inline(job(tmp_path, source), [str(tmp_path / "in.txt")], str(tmp_path / "out"))


@pytest.mark.parametrize("value", ["{'a': 1}", "float('nan')", "[1, 2]"])
@pytest.mark.parametrize("combine", [False, True], ids=["plain", "combiner"])
def test_a_key_s_one_value_must_be_orderable_too(tmp_path: Path, value: str,
                                                 combine: bool) -> None:
    """A key's one value is not sorted, but checked as sort_values would
    (the check of a batch of them at once): refused by the map, not left
    to fail a reduce's merge."""
    source = ("sort_values = True\n"
              + ("from pytxmr import combiners\ncombine = combiners.max\n" if combine else "")
              + "def map(k, v):\n"
              f"    yield v, ({value} if v == 'bad' else 1)\n"
              "def reduce(k, vs):\n    yield k, 1\n")
    (tmp_path / "in.txt").write_text("a\nbad\nc\n")
    with pytest.raises(TypeError, match="sort_values sorts values"):
        run_inline(job(tmp_path, source), [str(tmp_path / "in.txt")], str(tmp_path / "out"))


SHIPPED_JOB = """
    import textnorm

    def map(offset, line):
        stop = set(open("stop.txt").read().split())
        for word in textnorm.words(line):
            if word not in stop:
                yield word, 1

    def reduce(word, ones):
        yield word, sum(ones)
"""


def test_helper_modules_and_files_ship_with_the_job(tmp_path: Path) -> None:
    inp = corpus(tmp_path)
    code = tmp_path / "code"
    code.mkdir()
    (code / "textnorm.py").write_text("def words(line):\n    return line.upper().split()\n")
    stop = tmp_path / "data" / "stop.txt"
    stop.parent.mkdir()
    stop.write_text("FIG\nKIWI\n")
    run_inline(job(code, SHIPPED_JOB), [str(inp)], str(tmp_path / "out"), files=[str(stop)])
    expected = {w.upper(): n for w, n in word_counter(inp).items() if w not in ("fig", "kiwi")}
    assert counts(parts(tmp_path / "out")) == expected
    import sys
    assert "textnorm" not in sys.modules  # gone with the job: the next one imports afresh
