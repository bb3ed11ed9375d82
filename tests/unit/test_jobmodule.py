"""Unit tests for pytxmr.jobmodule: loading a user's job from source and reporting its errors."""

from __future__ import annotations

import linecache
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from pytxmr import readers
from pytxmr import stepdata
from pytxmr.jobmodule import (JobDefinitionError, define, describe_error, forget_file_names,
                              load_module, resolve)
from pytxmr.partition import default_partition

USER_SOURCE = '''\
"""A user's job."""
LIMIT = 3


def helper(value):
    return value["missing key in user code"]


def map(key, value):
    yield value, helper({})


def reduce(key, values):
    yield key, sum(values)
'''


def fresh_filename(tmp_path: Path) -> str:
    """A path that does not exist on this host, as on a worker that never had the file."""
    return str(tmp_path / "not-on-disk" / "user_job.py")


def test_load_module_runs_the_source_as_a_module_claiming_the_filename(tmp_path: Path) -> None:
    """Module-level code runs once, and the functions know the user's filename."""
    filename = fresh_filename(tmp_path)
    module = load_module(USER_SOURCE, filename)
    assert module.LIMIT == 3
    assert module.__file__ == filename
    assert module.map.__code__.co_filename == filename


def test_a_job_module_is_importable_by_its_file_s_name(tmp_path: Path) -> None:
    """As a script's helpers import it: the very module, not a second copy
    of it (its top level ran once); only under a name no other module has
    (a job in ``code.py`` would shadow the standard library's), and the
    last job's only."""
    import code

    module = load_module("LIMIT = []\n", str(tmp_path / "user_job_by_name.py"))
    try:
        from user_job_by_name import LIMIT  # type: ignore[import-not-found]

        assert LIMIT is module.LIMIT
        assert load_module("", str(tmp_path / "code.py")) is not sys.modules["code"]
        assert sys.modules["code"] is code
        assert "user_job_by_name" not in sys.modules  # the earlier job's
        later = load_module("", str(tmp_path / "other_job_by_name.py"))
        assert sys.modules["other_job_by_name"] is later
        for odd in ("my-job.py", "class.py", "pytxmr_job.py"):
            before = dict(sys.modules)
            load_module("", str(tmp_path / odd))
            assert {k for k in sys.modules if k not in before} == set(), odd
    finally:
        forget_file_names()
    assert "other_job_by_name" not in sys.modules


def test_a_job_its_caller_imported_or_runs_is_the_job_s_module_while_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline, the caller may have imported the job's file itself, or run
    it as its script (its directory first on the path): a helper's
    ``import myjob`` got that other copy, whose ``map_init`` never ran (a
    wrong answer, reported as a success). The caller's own is back after."""
    job = tmp_path / "callers_job.py"
    job.write_text("STOP = set()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = load_module(job.read_text(), str(job))  # found on the path: the same file
        assert sys.modules["callers_job"] is module
        forget_file_names()
        assert "callers_job" not in sys.modules
        import callers_job  # type: ignore[import-not-found]

        module = load_module(job.read_text(), str(job))
        assert sys.modules["callers_job"] is module
        forget_file_names()
        assert sys.modules["callers_job"] is callers_job
        other = tmp_path / "elsewhere" / "callers_job.py"  # another file of that name
        other.parent.mkdir()
        other.write_text("")
        assert load_module("", str(other)) is not sys.modules["callers_job"]
    finally:
        forget_file_names()
        sys.modules.pop("callers_job", None)


def test_load_module_registers_the_source_in_linecache(tmp_path: Path) -> None:
    """Workers never have the job file: tracebacks can only show its lines through linecache."""
    filename = fresh_filename(tmp_path)
    load_module(USER_SOURCE, filename)
    linecache.checkcache()  # what traceback formatting does must not drop the entry
    assert linecache.getline(filename, 6) == '    return value["missing key in user code"]\n'
    assert linecache.getlines(filename) == USER_SOURCE.splitlines(True)


def test_tracebacks_show_the_users_lines(tmp_path: Path) -> None:
    """A failing map must show the user their own code, not just file names and numbers."""
    filename = fresh_filename(tmp_path)
    module = load_module(USER_SOURCE, filename)
    with pytest.raises(KeyError) as info:
        list(module.map(0, "x"))
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{filename}", line 6, in helper' in text
    assert 'return value["missing key in user code"]' in text
    assert f'File "{filename}", line 10, in map' in text
    assert "yield value, helper({})" in text


def test_syntax_error_names_the_users_file_and_line(tmp_path: Path) -> None:
    """A typo in the job must be reported with the user's file and line."""
    filename = fresh_filename(tmp_path)
    with pytest.raises(SyntaxError) as info:
        load_module("def map(k, v):\n    yield k v\n", filename)
    assert info.value.filename == filename
    assert info.value.lineno == 2


# ---------------------------------------------------------------- resolve


def module_of(tmp_path: Path, source: str) -> Any:
    return load_module(source, fresh_filename(tmp_path))


MINIMAL = "def map(k, v):\n    yield k, v\ndef reduce(k, vs):\n    yield k, 1\n"


def test_resolve_minimal_job_gets_the_defaults(tmp_path: Path) -> None:
    """Only map and reduce are required; everything else has a documented default."""
    job = resolve(module_of(tmp_path, MINIMAL))
    assert job.combine is None
    assert job.partition is default_partition
    assert job.reader is readers.lines
    assert job.num_reducers is None
    assert job.encoding_errors == "strict"
    assert job.output_format == "text"


def test_resolve_picks_up_the_optional_names(tmp_path: Path) -> None:
    """combine, partition, reader and the settings in the module are what the tasks use."""
    source = MINIMAL + (
        "import pytxmr.readers\n"
        "def combine(k, vs):\n    yield k, sum(vs)\n"
        "def partition(k, n):\n    return 0\n"
        "reader = pytxmr.readers.path_lines\n"
        "num_reducers = 4\n"
        "encoding_errors = 'surrogateescape'\n"
        "output_format = 'jsonl'\n"
    )
    module = module_of(tmp_path, source)
    job = resolve(module)
    assert job.combine is module.combine
    assert job.partition is module.partition
    assert job.reader is readers.path_lines
    assert job.num_reducers == 4
    assert job.encoding_errors == "surrogateescape"
    assert job.output_format == "jsonl"


def test_resolve_uses_the_requested_function_names(tmp_path: Path) -> None:
    """`--mapper NAME --reducer NAME` selects other functions of the module."""
    source = "def m2(k, v):\n    yield k, v\ndef r2(k, vs):\n    yield k, 1\n"
    module = module_of(tmp_path, source)
    job = resolve(module, "m2", "r2")
    assert job.reduce is module.r2
    with pytest.raises(JobDefinitionError, match="'map'"):
        resolve(module)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def reduce(k, vs):\n    yield k, 1\n", "no 'map' function"),
        ("map = 3\ndef reduce(k, vs):\n    yield k, 1\n", "'map' is not callable"),
        (MINIMAL + "combine = 'sum'\n", "'combine' is not callable"),
        (MINIMAL + "partition = 7\n", "'partition' is not callable"),
        (MINIMAL + "map_split = 1\n", "'map_split' is not callable"),
        (MINIMAL + "def map_chunk(o, t):\n    yield t, 1\ndef map_split(cs):\n    yield 1, 1\n",
         "define map_chunk or map_split, not both"),
        ("def map_split(cs):\n    yield 1, 1\ndef reduce(k, vs):\n    yield k, 1\n"
         "def reader(split, encoding, errors):\n    yield 1, 1\n", "its own reader defines map"),
    ],
    ids=["no map", "map not callable", "combine not callable", "partition not callable",
         "map_split not callable", "both batch APIs", "batch API with a reader"],
)
def test_resolve_names_missing_or_uncallable_functions(tmp_path: Path, source: str, message: str) -> None:
    """A job without map or reduce must be refused at submission, naming what is missing."""
    module = module_of(tmp_path, source)
    with pytest.raises(JobDefinitionError, match=message) as info:
        resolve(module)
    assert module.__file__ in str(info.value)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def map(line):\n    yield line, 1\ndef reduce(k, vs):\n    yield k, 1\n",
         r"'map' must take \(key, value\)"),
        ("def map(k, v):\n    yield k, v\ndef reduce(k):\n    yield k, 1\n",
         r"'reduce' must take \(key, values\)"),
        (MINIMAL + "def combine(k, vs, extra):\n    yield k, 1\n", r"'combine' must take"),
        (MINIMAL + "def partition(key):\n    return 0\n", r"'partition' must take \(key, num_partitions\)"),
        ("def map_split():\n    return {}\ndef reduce(k, vs):\n    yield k, 1\n", r"'map_split' must take \(chunks\)"),
        (MINIMAL + "def reader(split):\n    yield 1, 1\n", r"'reader' must take \(split, encoding, errors\)"),
    ],
    ids=["map", "reduce", "combine", "partition", "map_split", "reader"],
)
def test_resolve_refuses_a_function_of_the_wrong_signature(
        tmp_path: Path, source: str, message: str) -> None:
    """Refused at submission, not by every task with a TypeError raised in
    the framework's own loop."""
    with pytest.raises(JobDefinitionError, match=message):
        resolve(module_of(tmp_path, source))


def test_resolve_takes_signatures_that_accept_the_call(tmp_path: Path) -> None:
    """Defaults, *args, callables without an inspectable signature and a
    decorator's wrapper (called as it is, whatever it wraps) are fine."""
    job = resolve(module_of(tmp_path, (
        "def map(key, value, extra=1):\n    yield key, value\n"
        "def reduce(*args):\n    yield args[0], 1\n"
        "from pytxmr import combiners\ncombine = combiners.sum\n"
        "partition = max\n"
        "import functools\n"
        "def counted(fn):\n"
        "    @functools.wraps(fn)\n"
        "    def wrapper(key, values):\n"
        "        return fn(key, values, 1)\n"
        "    return wrapper\n"
        "@counted\n"
        "def map_chunk_unused(key, values, n):\n"
        "    yield key, n\n"
        "reduce2 = map_chunk_unused\n")), reduce_name="reduce2")
    assert job.partition is max and job.combine is not None


@pytest.mark.parametrize("value", ["0", "-1", "'2'", "2.0", "True", "[2]"])
def test_resolve_refuses_a_bad_num_reducers(tmp_path: Path, value: str) -> None:
    """Zero, negative or non-int reducers would break partitioning later, far from the cause."""
    with pytest.raises(JobDefinitionError, match="num_reducers must be a positive int"):
        resolve(module_of(tmp_path, MINIMAL + f"num_reducers = {value}\n"))


@pytest.mark.parametrize("value", ["'bogus'", "'surrogatepass'", "None", "1"])
def test_resolve_refuses_a_bad_encoding_errors(tmp_path: Path, value: str) -> None:
    """An unknown error handler must fail at submission, not in every map task."""
    with pytest.raises(JobDefinitionError, match="encoding_errors must be one of"):
        resolve(module_of(tmp_path, MINIMAL + f"encoding_errors = {value}\n"))


@pytest.mark.parametrize("value", ["'ignore'", "'replace'", "'surrogateescape'", "'backslashreplace'"])
def test_resolve_accepts_the_documented_encoding_errors(tmp_path: Path, value: str) -> None:
    """Every handler the docs list is accepted."""
    assert resolve(module_of(tmp_path, MINIMAL + f"encoding_errors = {value}\n")).encoding_errors == value.strip("'")


def test_resolve_refuses_a_bad_output_format(tmp_path: Path) -> None:
    """Only the documented output formats exist."""
    with pytest.raises(JobDefinitionError, match="output_format"):
        resolve(module_of(tmp_path, MINIMAL + "output_format = 'csv'\n"))


# ---------------------------------------------------------------- describe_error


def framework_call(fn: Any, *args: Any) -> Any:
    """Stands in for the task driver: frames above the user's code that the user should not see."""
    return list(fn(*args))


def test_describe_error_starts_the_traceback_at_the_users_file(tmp_path: Path) -> None:
    """The submitter wants their own frames first, not pytxmr's task machinery."""
    filename = fresh_filename(tmp_path)
    module = load_module(USER_SOURCE, filename)
    try:
        framework_call(module.map, 0, "x")
    except KeyError as e:
        described = describe_error(e, filename)
    else:
        pytest.fail("the user's map did not raise")
    tb = described["traceback"]
    assert described["type"] == "KeyError"
    assert described["message"] == "KeyError: 'missing key in user code'"
    assert tb.startswith("Traceback (most recent call last):\n")
    first_frame = tb.splitlines()[1]
    assert first_frame.startswith(f'  File "{filename}", line 10, in map')
    assert "framework_call" not in tb and __file__ not in tb
    assert 'return value["missing key in user code"]' in tb
    assert tb.rstrip().endswith("KeyError: 'missing key in user code'")


def test_describe_error_keeps_the_whole_traceback_when_the_user_file_is_not_in_it(tmp_path: Path) -> None:
    """An error in pytxmr itself (or before user code ran) must keep every frame for debugging."""
    try:
        framework_call(iter, 5)
    except TypeError as e:
        described = describe_error(e, fresh_filename(tmp_path))
        without = describe_error(e)
    assert "framework_call" in described["traceback"]
    assert described == without
    assert described["type"] == "TypeError"


def test_describe_error_is_plain_data(tmp_path: Path) -> None:
    """The result crosses PB and JSON: only str values."""
    try:
        raise ValueError("x" * 10)
    except ValueError as e:
        described = describe_error(e)
    assert set(described) == {"type", "message", "traceback"}
    assert all(type(v) is str for v in described.values())


def test_a_batch_api_replaces_map(tmp_path: Path) -> None:
    job = resolve(module_of(tmp_path, "def map_split(chunks):\n    yield 1, 1\n"
                                      "def reduce(k, vs):\n    yield k, 1\n"))
    assert job.map is None and job.map_chunk is None and job.map_split is not None


def test_map_cannot_be_chosen_beside_a_batch_api(tmp_path: Path) -> None:
    module = module_of(tmp_path, "def map_split(chunks):\n    yield 1, 1\n"
                                 "def other(k, v):\n    yield k, v\n"
                                 "def reduce(k, vs):\n    yield k, 1\n")
    with pytest.raises(JobDefinitionError, match="map_split replaces map: it cannot be chosen "
                                                  "with --map other"):
        resolve(module, "other")


# ---------------------------------------------------------------- map-only, hooks, steps


def test_a_module_without_reduce_is_map_only(tmp_path: Path) -> None:
    job = resolve(module_of(tmp_path, "def map(k, v):\n    yield k, v\n"))
    assert job.map_only and job.reduce is None
    with pytest.raises(JobDefinitionError, match="no 'r2' function"):
        resolve(module_of(tmp_path, "def map(k, v):\n    yield k, v\n"), reduce_name="r2")


@pytest.mark.parametrize("extra", [
    "def combine(k, vs):\n    yield k, 1\n", "num_reducers = 2\n",
    "def partition(k, n):\n    return 0\n", "sort_values = True\n",
    "def reduce_final():\n    yield 1, 1\n"])
def test_a_map_only_job_refuses_what_needs_a_reduce(tmp_path: Path, extra: str) -> None:
    with pytest.raises(JobDefinitionError, match="needs a reduce: a job .or step. without "
                                                  "reduce is map-only"):
        resolve(module_of(tmp_path, "def map(k, v):\n    yield k, v\n" + extra))


def test_hooks_take_no_arguments(tmp_path: Path) -> None:
    job = resolve(module_of(tmp_path, MINIMAL + "def map_init():\n    pass\n"
                                                "def reduce_final():\n    yield 1, 2\n"))
    assert job.map_init is not None and job.reduce_final is not None and job.map_final is None
    with pytest.raises(JobDefinitionError, match=r"'map_final' must take \(\)"):
        resolve(module_of(tmp_path, MINIMAL + "def map_final(k):\n    pass\n"))


def test_sort_values_must_be_a_bool(tmp_path: Path) -> None:
    assert resolve(module_of(tmp_path, MINIMAL + "sort_values = True\n")).sort_values
    with pytest.raises(JobDefinitionError, match="sort_values must be True or False"):
        resolve(module_of(tmp_path, MINIMAL + "sort_values = 'yes'\n"))


def test_input_bytes_must_be_a_bool_and_read_lines(tmp_path: Path) -> None:
    assert not resolve(module_of(tmp_path, MINIMAL)).input_bytes
    assert resolve(module_of(tmp_path, MINIMAL + "input_bytes = True\n")).input_bytes
    with pytest.raises(JobDefinitionError, match="input_bytes must be True or False"):
        resolve(module_of(tmp_path, MINIMAL + "input_bytes = 1\n"))
    path_lines = MINIMAL + "import pytxmr.readers\nreader = pytxmr.readers.path_lines\n"
    assert resolve(module_of(tmp_path, path_lines + "input_bytes = True\n")).input_bytes
    with pytest.raises(JobDefinitionError, match="the reader 'json_lines' reads its input its own way"):
        resolve(module_of(tmp_path, MINIMAL + "import pytxmr.readers\n"
                          "reader = pytxmr.readers.json_lines\ninput_bytes = True\n"))


STEPS = (
    "from pytxmr import Step\n"
    "def count(k, v):\n    yield v, 1\n"
    "def total(k, vs):\n    yield k, sum(vs)\n"
    "def top(k, vs):\n    yield k, max(vs)\n"
    "def swap(k, v):\n    yield v, k\n"
)


def test_steps_are_resolved_in_order(tmp_path: Path) -> None:
    module = module_of(tmp_path, STEPS + "steps = [Step(map=count, reduce=total, num_reducers=3),"
                                         " Step(reduce=top), Step(map=swap)]\n")
    definition = define(module)
    first, second, third = definition.steps
    assert first.map is module.count and first.num_reducers == 3 and first.reader is readers.lines
    assert second.reduce is module.top and second.reader is stepdata.read_pairs
    assert list(second.map(1, 2)) == [(1, 2)]  # no map: the pairs pass on
    assert third.map_only
    assert definition.summary() == [
        {"num_reducers": 3, "map_only": False, "fixed_reducers": True, "split_by": "lines",
         "output_format": "text"},
        {"num_reducers": None, "map_only": False, "fixed_reducers": True, "split_by": "file",
         "output_format": "text"},
        {"num_reducers": None, "map_only": True, "fixed_reducers": True, "split_by": "file",
         "output_format": "text"}]


def test_input_bytes_is_the_first_steps_only(tmp_path: Path) -> None:
    """Later steps read the pairs of the step before, not the input."""
    first, second = define(module_of(tmp_path, STEPS + "input_bytes = True\n"
                                      "steps = [Step(map=count, reduce=total), Step(reduce=top)]\n"
                                      )).steps
    assert first.input_bytes and not second.input_bytes


@pytest.mark.parametrize("steps, message", [
    ("steps = Step(map=count)\n", "steps must be a non-empty list of pytxmr.Step"),
    ("steps = []\n", "steps must be a non-empty list of pytxmr.Step"),
    ("steps = [Step(map=count), count]\n", "item 2 is a function"),
    ("steps = [Step()]\n", "step 1 of 1: a step needs a map or a reduce"),
    ("steps = [Step(map=count, reduce=len)]\n", r"step 1 of 1: 'reduce' must take \(key, values\)"),
    ("steps = [Step(map=count), Step(map=swap, num_reducers=2)]\n",
     "step 2 of 2: 'num_reducers' needs a reduce"),
    ("steps = [Step(map=count, reduce=total, map_init=count)]\n",
     r"'map_init' must take \(\)"),
    ("steps = [Step(map=count, reduce=total), Step(map=swap, reader=count)]\n",
     "only the first step has a reader"),
    ("steps = [Step(map=count, reduce=total)]\ndef reduce(k, vs):\n    yield k, 1\n",
     "defines both steps and 'reduce': put 'reduce' in a Step, or drop steps"),
    # In a Step already: "put 'map' in a Step" said what the user had done.
    ("def map(k, v):\n    yield v, 1\nsteps = [Step(map=map, reduce=total)]\n",
     r"defines both steps and 'map' \(the name a job without steps gives its map\); the Step "
     r"has it: rename the function \(say, step_map\)"),
    ("def map(k, v):\n    yield v, 1\nsteps = [(1, 2)]\n",  # not a Step: a TypeError before
     "the module defines both steps and 'map': put 'map' in a Step"),
    # Ignored, silently: a job's total order lost to the default partitioner.
    ("steps = [Step(map=count, reduce=total)]\ndef partition(k, n):\n    return 0\n",
     "defines 'partition' beside steps, and no Step uses it"),
    ("from pytxmr import readers\nreader = readers.path_lines\n"
     "steps = [Step(map=count, reduce=total)]\n",
     "defines 'reader' beside steps, and no Step uses it"),
    ("steps = [Step(map=count, reduce=total)]\nnum_reducers = 1\n",
     "sets 'num_reducers' beside steps"),
    ("steps = [Step(map=count, reduce=total)]\nsort_values = True\n",
     "sets 'sort_values' beside steps"),
    ("steps = [Step(map=count, reduce=total)]\nnum_reducers = 0\n",  # 0 == False
     "sets 'num_reducers' beside steps"),
])
def test_bad_steps_are_named(tmp_path: Path, steps: str, message: str) -> None:
    with pytest.raises(JobDefinitionError, match=message):
        define(module_of(tmp_path, STEPS + steps))


def test_a_step_may_use_the_module_s_own_partition_and_reader(tmp_path: Path) -> None:
    """A module-level function that a Step is given is the step's."""
    job = define(module_of(tmp_path, STEPS + (
        "from pytxmr import readers\nreader = readers.path_lines\n"
        "def partition(k, n):\n    return 0\n"
        "steps = [Step(map=count, reduce=total, reader=reader, partition=partition)]\n")))
    assert job.steps[0].partition.__name__ == "partition"
    assert job.steps[0].reader.__name__ == "path_lines"


def test_steps_cannot_be_picked_by_name(tmp_path: Path) -> None:
    with pytest.raises(JobDefinitionError, match="--map and --reduce do not apply"):
        define(module_of(tmp_path, STEPS + "steps = [Step(map=count)]\n"), "count")


def test_declared_arguments_come_with_the_definition(tmp_path: Path) -> None:
    definition = define(module_of(tmp_path, MINIMAL + "from pytxmr import Arg\n"
                                                      "arguments = [Arg('n', int, default=3)]\n"))
    assert [a.name for a in definition.arguments or ()] == ["n"]
    with pytest.raises(JobDefinitionError, match="'arguments' must be a list of pytxmr.Arg"):
        define(module_of(tmp_path, MINIMAL + "arguments = ['n']\n"))
    with pytest.raises(JobDefinitionError, match="the argument n is declared twice"):
        define(module_of(tmp_path, MINIMAL + "from pytxmr import Arg\n"
                                             "arguments = [Arg('n'), Arg('n')]\n"))


def test_reuse_processes_is_true_unless_the_module_says_false(tmp_path: Path) -> None:
    """Maps share processes by default; a job may ask for one each, and
    anything but a bool is refused at submission."""
    assert define(module_of(tmp_path, MINIMAL)).reuse_processes is True
    assert define(module_of(tmp_path, MINIMAL + "reuse_processes = False\n")
                  ).reuse_processes is False
    with pytest.raises(JobDefinitionError, match="reuse_processes must be True or False"):
        define(module_of(tmp_path, MINIMAL + "reuse_processes = 0\n"))


def test_only_the_directory_python_put_first_leaves_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m` puts the working directory first: a task must not import
    from there (no other host has it), but PYTHONPATH naming the same
    directory is the user's, and stays."""
    from pytxmr.syspath import drop_working_directory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(tmp_path), "/elsewhere"])
    drop_working_directory()
    assert sys.path == [str(tmp_path), "/elsewhere"]
    monkeypatch.setattr(sys, "path", ["/elsewhere", str(tmp_path)])
    drop_working_directory()  # not first: PYTHONPATH's
    assert sys.path == ["/elsewhere", str(tmp_path)]


def test_a_removed_working_directory_is_nothing_to_drop(tmp_path: Path) -> None:
    """A command started in a directory removed since (``pytxmr jobs`` uses
    no path) ended in a traceback of os.getcwd()."""
    import os

    from pytxmr.syspath import drop_working_directory

    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    path = list(sys.path)
    try:
        os.chdir(gone)
        gone.rmdir()
        drop_working_directory()
    finally:
        os.chdir(here)
        sys.path[:] = path
