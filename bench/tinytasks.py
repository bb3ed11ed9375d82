#!/usr/bin/env python3
"""Tiny tasks: a word count of N one-line files, a map each (issue 15).

    python bench/tinytasks.py [--files 2000] [--runs 3] [--baseline-tree DIR]
        [--systems run,inline] [--out-dir /tmp/pytxmr-tiny]

Writes N files of one line (eight words, deterministic) and runs, round by
round (the first entry rotating), ``python -m pytxmr run
examples/wordcount.py FILE... -o OUT`` (daemons included in the time) from a
snapshot of this tree, and from a snapshot of ``--baseline-tree`` as
``run-baseline`` when given; ``inline`` is ``run --inline``, the same maps
in one process. Every output is checked against ``collections.Counter``
over the files (a wrong output fails the run and the script exits 1). The
figure of the target is the wall time divided by the number of maps; CPU
is the whole process tree's. See bench/RESULTS.md ("Tiny tasks").
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path[:0] = [HERE, TOP]

from pytxmrbench.measure import kill_live, run_measured  # noqa: E402
from pytxmrbench.report import fmt, median, print_table  # noqa: E402
from pytxmrbench.results import make_snapshot  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog and then runs far away".split()


def make_inputs(directory: str, n: int) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(directory, f"f{i:05d}.txt")
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(7)] + [f"n{i % 97}"]
        with open(path, "w") as f:
            f.write(" ".join(words) + "\n")
        paths.append(path)
    return paths


def reference(paths: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        with open(path) as f:
            counts.update(f.read().split())
    return counts


def check(out: str, expected: Counter[str]) -> str:
    got: Counter[str] = Counter()
    try:
        names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    except OSError as e:
        return f"no output: {e}"
    for name in names:
        with open(os.path.join(out, name)) as f:
            for line in f:
                word, count = line.rstrip("\n").split("\t")
                got[word] += int(count)
    return "SAME" if got == expected else f"DIFFERENT ({len(got)} words, {len(expected)} expected)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--systems", default="run")
    p.add_argument("--baseline-tree")
    p.add_argument("--out-dir", default="/tmp/pytxmr-tiny")
    a = p.parse_args()
    atexit.register(kill_live)
    os.makedirs(a.out_dir, exist_ok=True)
    paths = make_inputs(os.path.join(a.out_dir, f"in-{a.files}"), a.files)
    expected = reference(paths)
    trees = {"this tree": make_snapshot(TOP, a.out_dir)}
    if a.baseline_tree:
        trees["baseline"] = make_snapshot(os.path.abspath(a.baseline_tree), a.out_dir)
    entries = []
    for system in a.systems.split(","):
        for label, (src, sha) in trees.items():
            name = system if label == "this tree" else f"{system}-baseline"
            extra = ["--inline"] if system == "inline" else []
            entries.append((name, src, sha, extra))
    results: dict[str, list[dict]] = {name: [] for name, *_ in entries}
    failed = False
    for round_ in range(a.runs):
        for k in range(len(entries)):
            name, src, sha, extra = entries[(round_ + k) % len(entries)]
            out = os.path.join(a.out_dir, f"out-{name}")
            cmd = [sys.executable, "-m", "pytxmr", "run", *extra,
                   os.path.join(src, "examples", "wordcount.py"), os.path.dirname(paths[0]),
                   "-o", out,
                   "--overwrite", "-q"]
            run = run_measured(cmd, os.path.join(a.out_dir, f"{name}.log"),
                               env=dict(os.environ, PYTHONPATH=src), cwd=a.out_dir)
            run["output"] = check(out, expected) if run["rc"] == 0 else f"exit {run['rc']}"
            failed |= run["output"] != "SAME"
            results[name].append(run)
            print(f"round {round_ + 1} {name} ({sha[:8]}): {run['wall_s']:.2f} s, "
                  f"cpu {run['cpu_s']:.2f} s, other load {run['other_load']:.2f}, "
                  f"{run['output']}", flush=True)
    rows = []
    for name, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        rows.append([name, fmt(median(walls)), fmt(min(walls)),
                     fmt(median(walls) * 1000 / a.files, ".1f"),
                     fmt(median([r["cpu_s"] for r in runs])),
                     fmt(max(r["peak_rss_mb"] for r in runs), ".0f"),
                     ", ".join(sorted({r["output"] for r in runs}))])
    print(f"\n{a.files} one-line files, {a.runs} run(s) each, medians:")
    print_table(["entry", "median s", "min s", "ms per map", "CPU s", "largest process MB",
                       "output"], rows, {1, 2, 3, 4, 5})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
