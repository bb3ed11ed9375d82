"""examples/total_order_sort.py, end to end: a total-order sort whose cut
points are sampled from the input (two steps: sample, then sort), under
``run`` (daemons), ``run --inline`` and ``submit``. Each output is checked
against Python's ``sorted()`` of the input: the part files read in order are the input's
lines sorted, every line as often as in the input."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from procs import ROOT, Cluster, base_env, run_cli

JOB = ROOT / "examples" / "total_order_sort.py"
KEY = 10


def records(rng: random.Random, n: int, alphabet: str) -> list[str]:
    """bench/terasort.py's format: a 10-character key, a tab, a value."""
    return [f"{''.join(rng.choices(alphabet, k=KEY))}\t{rng.getrandbits(64):016x} row {i}"
            for i in range(n)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two input files (the sample must cover both): printable keys in
    one, keys from a four-letter alphabet in the other (many duplicates:
    keys equal to a cut point, and whole reducers' worth of one key);
    a few lines whose key is not followed by a tab, or is not ASCII, lines
    that occur twice."""
    rng = random.Random(15)
    printable = "".join(chr(c) for c in range(32, 127))
    base = tmp_path_factory.mktemp("sortin")
    a, b = base / "a.txt", base / "b.txt"
    a.write_text("\n".join(records(rng, 3000, printable)) + "\n")
    dup = records(rng, 2000, "abcd")
    dup += [f"{'c' * KEY}\t{i}" for i in range(300)] + ["nokeytab-x-y", "short"]
    dup += ["\u00e9t\u00e9\tx", "\u65e5\u672c\u8a9e\ty", "zzzzzzzzzz\u00ff"]  # code point order
    dup += dup[:100]
    rng.shuffle(dup)
    b.write_text("\n".join(dup) + "\n", encoding="utf-8")
    return [a, b]


def check_sorted(out: Path, inputs: list[Path], reducers: int) -> None:
    parts = sorted(out.glob("part-*"))
    assert [p.name for p in parts] == [f"part-{i:05d}" for i in range(reducers)]
    assert (out / "_SUCCESS").exists()
    got = [line for p in parts for line in p.read_text(encoding="utf-8").splitlines()]
    lines = [line for f in inputs for line in f.read_text(encoding="utf-8").splitlines()]
    # The input lines, in part order, sorted as Python sorts str.
    assert got == sorted(lines)
    # The sampled cut points share the work: no part empty or holding most lines.
    sizes = [len(p.read_text().splitlines()) for p in parts]
    assert max(sizes) < 0.6 * len(lines), sizes


@pytest.mark.parametrize("mode", ["run", "inline"])
def test_run_sorts_by_sampled_ranges(mode: str, inputs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "sorted"
    args = ["run", *(["--inline", "-q"] if mode == "inline" else []), str(JOB),
            *map(str, inputs), "-o", str(out), "--reducers", "3", "--split-size", "64K"]
    rc, stdout, stderr = run_cli(*args, env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stderr
    check_sorted(out, inputs, 3)
    if mode == "run":  # the summary's counts are the last step's, and it says so
        assert re.match(r"job_\S+ succeeded in [\d.]+s: 2 steps, the last of 3 maps, "
                        r"3 reduces; output in ", stdout), stdout


def test_submit_sorts_by_sampled_ranges(make_cluster, inputs: list[Path]) -> None:
    cluster: Cluster = make_cluster()
    cluster.start_jobtracker()
    cluster.start_tasktrackers(2)
    out = cluster.base / "sorted"
    rc, _, err = cluster.submit(JOB, inputs, out, "--reducers", "2", "--split-size", "100K")
    assert rc == 0, err + cluster.logs()
    check_sorted(out, inputs, 2)


def test_lines_that_start_alike_are_shared_with_a_longer_prefix(tmp_path: Path) -> None:
    """Lines that all start with one date: cut points of their first 10
    characters send them all to one reducer (still sorted); ``--arg
    prefix=24`` samples enough of each line to share them. A prefix of 0
    is refused before the job runs."""
    rng = random.Random(7)
    data = tmp_path / "dated.txt"
    lines = [f"2024-01-01 {rng.getrandbits(48):012x} row {i}" for i in range(3000)]
    data.write_text("\n".join(lines) + "\n")
    env = base_env(tmp_path / "home")
    for prefix, shared in ((None, False), ("24", True)):
        out = tmp_path / f"out-{prefix}"
        option = ["--arg", f"prefix={prefix}"] if prefix else []
        rc, _, stderr = run_cli("run", "--inline", "-q", str(JOB), str(data), "-o", str(out),
                                "--reducers", "3", *option, env=env, cwd=ROOT, timeout=120)
        assert rc == 0, stderr
        parts = [p.read_text().splitlines() for p in sorted(out.glob("part-*"))]
        assert [line for part in parts for line in part] == sorted(lines)
        assert (max(map(len, parts)) < 0.6 * len(lines)) == shared, list(map(len, parts))
    rc, _, stderr = run_cli("run", "--inline", str(JOB), str(data), "-o", str(tmp_path / "x"),
                            "--arg", "prefix=0", env=env, cwd=ROOT, timeout=120)
    assert rc == 2 and "prefix" in stderr and "at least 1" in stderr, stderr
    assert not (tmp_path / "x").exists()
