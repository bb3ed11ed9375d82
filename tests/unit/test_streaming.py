"""Streaming jobs (``--mapper CMD --reducer CMD``), run by the framework's
own code in one process, with real shell commands; each answer checked
against a Counter or the lines themselves."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

import pytxmr
from pytxmr.inline import run_inline
from pytxmr.jobargs import ArgumentError
from pytxmr.streaming import StreamingError, command, parse

JOBS = Path(pytxmr.__file__).parent / "jobs"
FULL = str(JOBS / "streaming.py")
MAP_ONLY = str(JOBS / "streaming_map_only.py")
SPLIT_WORDS = "awk '{for (i = 1; i <= NF; i++) print $i \"\\t\" 1}'"
SUM = "awk -F'\\t' '{n[$1] += $2} END {for (k in n) print k \"\\t\" n[k]}'"


@pytest.fixture
def text(tmp_path: Path) -> Path:
    rng = random.Random(4)
    words = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "été"]
    path = tmp_path / "in.txt"
    path.write_text("".join(" ".join(rng.choices(words, k=7)) + "\n" for _ in range(3000)))
    return path


def part_lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("part-*"))
            for line in p.read_text(encoding="utf-8").splitlines()]


def test_a_word_count_in_awk_matches_a_counter(text: Path, tmp_path: Path) -> None:
    run_inline(FULL, [str(text)], str(tmp_path / "out"), num_reducers=3, split_size=20_000,
               args={"mapper": SPLIT_WORDS, "reducer": SUM})
    got = {k: int(v) for k, v in (line.split("\t") for line in part_lines(tmp_path / "out"))}
    assert got == Counter(text.read_text().split())


def test_the_reducer_sees_its_partition_sorted_by_key(text: Path, tmp_path: Path) -> None:
    """One reducer process per reduce task reads key<TAB>value lines in key
    order: `uniq -c` counts each key's lines in one go."""
    run_inline(FULL, [str(text)], str(tmp_path / "out"), num_reducers=2,
               args={"mapper": SPLIT_WORDS, "reducer": "cut -f1 | uniq -c"})
    got = {w: int(n) for n, w in (line.split() for line in part_lines(tmp_path / "out"))}
    assert got == Counter(text.read_text().split())


def test_a_map_only_job_writes_the_commands_lines(text: Path, tmp_path: Path) -> None:
    run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"), split_size=10_000,
               args={"mapper": "cut -d' ' -f1,2 | tr ' ' '\\t'"})
    expected = ["\t".join(line.split()[:2]) for line in text.read_text().splitlines()]
    assert part_lines(tmp_path / "out") == expected


def test_a_value_keeps_everything_after_the_first_tab(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("k\tv1\tv2\nno tab here\n")
    run_inline(MAP_ONLY, [str(tmp_path / "in.txt")], str(tmp_path / "out"),
               args={"mapper": "cat"})
    assert part_lines(tmp_path / "out") == ["k\tv1\tv2", "no tab here\t"]
    assert parse("a\tb\tc") == ("a", "b\tc") and parse("solo") == ("solo", "")


def test_a_failing_command_fails_with_its_stderr(text: Path, tmp_path: Path) -> None:
    with pytest.raises(StreamingError, match="exited with status 3; its stderr ends "
                                             "with:\nboom"):
        run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"),
                   args={"mapper": "sh -c 'cat >/dev/null; echo boom >&2; exit 3'"})
    with pytest.raises(StreamingError, match="killed by signal 9"):
        run_inline(FULL, [str(text)], str(tmp_path / "out2"),
                   args={"mapper": "cat", "reducer": "kill -9 $$"})


def test_a_command_that_stops_reading_decides_by_its_exit_status(text: Path,
                                                                  tmp_path: Path) -> None:
    run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"), args={"mapper": "head -1"})
    assert part_lines(tmp_path / "out") == [text.read_text().splitlines()[0] + "\t"]


def test_a_command_that_does_not_exist_is_refused(text: Path, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="no such command: nosuchprogram"):
        run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"),
                   args={"mapper": "nosuchprogram --flag"})
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="the command is empty"):
        command("  ")
    assert command("LC_ALL=C sort") == "LC_ALL=C sort"
