"""Job arguments, as pure functions: declarations, parsing and the
``--help-job`` text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytxmr.cli import main
from pytxmr.cli import parse as parse_command_line
from pytxmr.jobargs import REQUIRED, Arg, ArgumentError, check_pairs, describe, parse

DECLARED = (Arg("threshold", int, help="the least count shown"),
            Arg("ratio", float, default=0.5),
            Arg("verbose", bool, default=False),
            Arg("mode", default="fast", choices=("fast", "exact")))


def test_declared_arguments_are_typed_and_defaulted() -> None:
    assert parse(DECLARED, {"threshold": "50"}) == {
        "threshold": 50, "ratio": 0.5, "verbose": False, "mode": "fast"}
    values = parse(DECLARED, {"threshold": "7", "ratio": "2.5", "verbose": "yes",
                              "mode": "exact"})
    assert values == {"threshold": 7, "ratio": 2.5, "verbose": True, "mode": "exact"}


def test_undeclared_arguments_are_strings() -> None:
    assert parse(None, {"a": "1", "b": "x"}) == {"a": "1", "b": "x"}


@pytest.mark.parametrize("given, message", [
    ({}, "the job needs the argument threshold: --arg threshold=VALUE \\(the least count"),
    ({"threshold": "fifty"}, "argument threshold: 'fifty' is not a valid int"),
    ({"threshold": "1", "verbose": "maybe"}, "argument verbose: 'maybe' is not a valid bool"),
    ({"threshold": "1", "mode": "slow"}, "argument mode: 'slow' is not one of fast, exact"),
    ({"threshold": "1", "treshold": "2"}, "declares no argument treshold \\(it takes: threshold"),
])
def test_bad_arguments_are_named(given: dict[str, str], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        parse(DECLARED, given)


def test_an_argument_given_twice_is_refused() -> None:
    assert check_pairs([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}
    with pytest.raises(ArgumentError, match="argument a is given twice"):
        check_pairs([("a", "1"), ("a", "2")])
    with pytest.raises(ArgumentError, match="must be an identifier"):
        check_pairs([("not a name", "1")])
    # The command line's NAME=VALUE given to the Python API: a clear refusal.
    with pytest.raises(ArgumentError, match="are \\(name, value\\) pairs or a dict, not 'a=1'"):
        check_pairs(["a=1"])  # type: ignore[list-item]
    with pytest.raises(ArgumentError, match="not 'n5'"):
        check_pairs(["n5"])  # type: ignore[list-item]


def test_declarations_are_checked() -> None:
    with pytest.raises(ArgumentError, match="must be an identifier"):
        Arg("two words")
    with pytest.raises(ArgumentError, match="must be callable"):
        Arg("n", type=3)  # type: ignore[arg-type]
    assert Arg("n").default is REQUIRED and Arg("n").required
    with pytest.raises(ArgumentError, match="its default 'slow' is not one of fast, exact"):
        Arg("mode", default="slow", choices=("fast", "exact"))
    assert Arg("mode", default=None, choices=("fast",)).default is None
    assert Arg("mode", choices=("fast",)).required


def test_a_default_given_as_text_is_read_as_the_text_of_an_arg() -> None:
    """As argparse reads a str default, when the argument is not given: a
    job run without it got the str "8" (or "abc") where --arg n=8 gives
    the int 8."""
    assert parse((Arg("n", int, default="8"),), {}) == {"n": 8}
    assert parse((Arg("on", bool, default="yes"),), {}) == {"on": True}
    assert parse((Arg("n", int, default=None),), {}) == {"n": None}  # not text: as it is
    bad = (Arg("n", int, default="abc"),)
    with pytest.raises(ArgumentError, match="argument n: its default 'abc' is not a valid int"):
        parse(bad, {})
    assert parse(bad, {"n": "2"}) == {"n": 2}  # given: the default is not read
    outside = (Arg("n", int, default="3", choices=(1, 2)),)
    with pytest.raises(ArgumentError, match="argument n: its default '3' is not one of 1, 2"):
        parse(outside, {})
    assert parse(outside, {"n": "1"}) == {"n": 1}


def test_help_lists_each_argument() -> None:
    text = describe(DECLARED, "top.py")
    assert text.splitlines() == [
        "arguments of top.py (--arg NAME=VALUE):",
        "  threshold (int, required): the least count shown",
        "  ratio (float, default 0.5)",
        "  verbose (bool, default False)",
        "  mode (str, default 'fast'; one of fast, exact)",
    ]
    assert "declares no arguments" in describe(None, "job.py")
    assert describe((), "job.py") == "job.py takes no arguments"


@pytest.mark.parametrize("before", [[], ["-o", "out"], ["--reducers", "2"], ["--arg", "n=1"],
                                    ["--py-files", "helper.py"]])
def test_help_job_finds_the_job_among_the_options(
        before: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An option before the job was taken for it (``cannot read the job
    module out``), and ``--py-files helper.py`` made the helper the job."""
    (tmp_path / "helper.py").write_text("X = 1\n")
    job = tmp_path / "job.py"
    job.write_text("from pytxmr import Arg\narguments = [Arg('n', int, 10, 'how many')]\n"
                   "def map(k, v):\n    yield v, 1\ndef reduce(k, vs):\n    yield k, 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # help_job puts the job's dir first
    assert main(["run", *before, "job.py", "--help-job"]) == 0
    assert "n (int, default 10): how many" in capsys.readouterr().out
    assert main(["submit", *before, "job.py", "--help-j"]) == 0  # as argparse reads it
    assert "n (int, default 10): how many" in capsys.readouterr().out
    assert main(["run", "--mapper", "cat", "--help-job", "in.txt"]) == 0
    assert "mapper (command, required)" in capsys.readouterr().out


def test_help_job_imports_what_the_job_ships(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A job that imports a package shipped with --py-files, and reads a
    file shipped with --files at import: --help-job failed with
    ModuleNotFoundError, which the job itself does not."""
    package = tmp_path / "ext" / "extpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("DEFAULT = 7\n")
    (tmp_path / "conf.txt").write_text("from the shipped file\n")
    job = tmp_path / "jobdir" / "job.py"
    job.parent.mkdir()
    job.write_text("import extpkg\nfrom pytxmr import Arg\nHELP = open('conf.txt').read().strip()\n"
                   "arguments = [Arg('n', int, extpkg.DEFAULT, HELP)]\n"
                   "def map(k, v):\n    yield v, 1\ndef reduce(k, vs):\n    yield k, 1\n")
    argv = ["run", str(job), "--help-job", "--py-files", str(package),
            "--files", str(tmp_path / "conf.txt")]
    assert main(argv) == 0, capsys.readouterr().err
    assert "n (int, default 7): from the shipped file" in capsys.readouterr().out
    assert main(argv[:3] + argv[5:]) == 2
    assert "No module named 'extpkg'" in capsys.readouterr().err
    assert "extpkg" not in sys.modules


@pytest.mark.parametrize("argv", [
    ["job.py", "--reducers", "2", "in.txt", "-o", "out"],
    ["job.py", "-o", "out", "in.txt", "--reducers", "2"],
    ["--reducers", "2", "job.py", "in.txt", "-o", "out"],
])
def test_options_may_come_between_the_job_and_its_inputs(argv: list[str]) -> None:
    """`run job.py --reducers 2 in.txt` said "unrecognized arguments: in.txt"."""
    for command in ("run", "submit"):
        a = parse_command_line([command, *argv])
        assert (a.command, a.job, a.inputs, a.output, a.reducers) == (
            command, "job.py", ["in.txt"], "out", 2)


def test_status_shows_arguments_as_a_shell_would_take_them_back() -> None:
    """`sp=a b` read as two arguments; an empty one and a newline were lost."""
    import shlex

    from pytxmr.cli import describe_job

    args = {"sp": "a b", "empty": "", "eq": "x=y", "q": "it's"}
    text = describe_job({"job_id": "job_1", "state": "running", "args": args})
    [line] = [line for line in text.splitlines() if line.startswith("  arguments ")]
    said = shlex.split(line[len("  arguments "):])
    assert dict(a.split("=", 1) for a in said) == args
    text = describe_job({"job_id": "job_1", "state": "running",
                         "args": {"nl": "one\ntwo 'x'"}})
    assert text.splitlines()[-1] == "  arguments $'nl=one\\ntwo \\'x\\''"
    # bash reads it back, non-ASCII included (\\xe9 would be a byte there).
    import subprocess

    value = "café\n\xa0\x85\\ 😀\x01"
    text = describe_job({"job_id": "job_1", "state": "running", "args": {"v": value}})
    word = text.splitlines()[-1][len("  arguments "):]
    back = subprocess.run(["bash", "-c", f"printf '%s' {word}"], capture_output=True,
                          env={"LC_ALL": "C.UTF-8"}, check=True).stdout
    assert back.decode("utf-8") == f"v={value}"
