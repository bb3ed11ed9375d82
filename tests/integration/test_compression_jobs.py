"""``--compress lz4`` end to end: the CLI's check of the option, and real
clusters running compressed jobs (output checked against Counter). The
codec itself is unit-tested in tests/unit/test_compression.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from procs import Cluster, base_env, run_cli
from wordcounts import (
    WORDCOUNT,
    assert_committed,
    assert_ok,
    merged,
    part_files,
    read_wordcount,
    word_counts,
)


def test_cli_refuses_an_unknown_codec(tmp_path: Path) -> None:
    """``--compress`` takes known names only."""
    (tmp_path / "home").mkdir()
    rc, _, err = run_cli("run", str(WORDCOUNT), str(WORDCOUNT), "-o", str(tmp_path / "o"),
                         "--compress", "zstd", "--inline",
                         env=base_env(tmp_path / "home"), cwd=tmp_path)
    assert rc == 2 and "invalid choice: 'zstd'" in err


# ---------------------------------------------------------------- real jobs


INVERTED_INDEX = WORDCOUNT.parent / "inverted_index.py"


def materialized(stdout: str) -> int:
    m = re.search(r"map output materialized bytes\s+([\d,]+)", stdout)
    assert m, stdout
    return int(m.group(1).replace(",", ""))


def test_wordcount_with_lz4_matches_counter(cluster: Cluster, corpus: Path) -> None:  # noqa: F811
    """The whole path with compressed spills and shuffle gives Counter's counts."""
    out = cluster.base / "wc-lz4"
    assert_ok(cluster.submit(WORDCOUNT, [corpus], out, "--reducers", "3", "--split-size", "256K",
                             "--compress", "lz4"), cluster)
    assert_committed(out, 3)
    assert merged(read_wordcount(out)) == word_counts(corpus.iterdir())


def test_inverted_index_with_lz4_is_right_and_shuffles_fewer_bytes(
        cluster: Cluster, corpus: Path) -> None:  # noqa: F811
    """Map outputs really are compressed (file names repeat in every record), and
    the index is the reference's with or without compression."""
    files = sorted(corpus.glob("part*.txt"))
    reference: dict[str, set[str]] = {}
    for path in files:
        for word in set(path.read_text(encoding="utf-8").split()):
            reference.setdefault(word, set()).add(path.name)
    sizes = {}
    for compress in ([], ["--compress", "lz4"]):
        out = cluster.base / f"ii-lz4-{len(compress)}"
        stdout = assert_ok(cluster.submit(INVERTED_INDEX, files, out, "--reducers", "2",
                                          "--split-size", "256K", *compress), cluster)
        assert_committed(out, 2)
        got = {}
        for part in part_files(out):
            for line in part.read_text(encoding="utf-8").splitlines():
                word, names = line.split("\t")
                got[word] = set(json.loads(names))
        assert got == reference
        sizes[bool(compress)] = materialized(stdout)
    assert sizes[True] < 0.8 * sizes[False], sizes


def test_run_inline_with_lz4_writes_the_same_part_files(tmp_path: Path,
                                                        corpus: Path) -> None:  # noqa: F811
    """``run --inline --compress lz4`` runs the same job, with the same result."""
    env = base_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    inputs = [str(p) for p in sorted(corpus.glob("part*.txt"))[2:]]
    for compress in ([], ["--compress", "lz4"]):
        assert_ok(run_cli("run", str(WORDCOUNT), *inputs, "-o", str(tmp_path / f"o{len(compress)}"),
                          "--reducers", "2", "--split-size", "256K", "--inline", *compress,
                          env=env, cwd=tmp_path))
    plain, packed = part_files(tmp_path / "o0"), part_files(tmp_path / "o2")
    assert [p.read_bytes() for p in plain] == [p.read_bytes() for p in packed]


class Lz4LessCluster(Cluster):
    """A cluster whose daemons (and so task children) cannot import lz4."""

    blocked = True

    @property
    def env(self) -> dict[str, str]:
        env = base_env(self.home)
        if self.blocked:
            env["PYTHONPATH"] = str(self.base / "no-lz4") + os.pathsep + env["PYTHONPATH"]
        return env


def test_workers_without_lz4_fail_the_job_with_what_to_install(tmp_path: Path) -> None:
    """The client has lz4, the workers do not: the task failure tells the user the fix."""
    c = Lz4LessCluster(tmp_path)
    (tmp_path / "no-lz4" / "lz4").mkdir(parents=True)
    (tmp_path / "no-lz4" / "lz4" / "__init__.py").write_text(
        "raise ImportError('lz4 is hidden by the test')\n")
    data = tmp_path / "in.txt"
    data.write_text("a b a\n" * 100)
    try:
        c.start_jobtracker()
        c.start_tasktracker(1)
        c.blocked = False  # the client's own check passes
        rc, out, err = c.submit(WORDCOUNT, [data], tmp_path / "out", "--compress", "lz4",
                                "--max-attempts", "1")
        assert rc == 1, f"{out}\n{err}"
        assert "pip install lz4 (or 'pytxmr[lz4]')" in err, err
    finally:
        c.stop_all()
