"""The built-in folding combiners: the map side's fast path must give what
the same job with a plain generator combiner gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pytxmr import combiners
from pytxmr.counters import FRAMEWORK
from pytxmr.inline import run_inline

MAP = """
def map(offset, line):
    for word in line.split():
        yield word, len(word) * (1 if int(offset) % 2 else -1)
"""


def job(tmp_path: Path, file: str, name: str, combine: str) -> Path:
    path = tmp_path / f"{file}.py"
    path.write_text(f"from pytxmr import combiners\n{MAP}\n{combine}\n"
                    f"def reduce(key, values):\n    yield key, {name}(values)\n")
    return path


def corpus(tmp_path: Path) -> Path:
    rng = random.Random(7)
    words = [f"w{i}" * rng.randint(1, 3) for i in range(300)]
    path = tmp_path / "in.txt"
    path.write_text("".join(" ".join(rng.choices(words, k=12)) + "\n" for _ in range(3000)))
    return path


def part_files(out: Path) -> str:
    return "".join(p.read_text() for p in sorted(out.glob("part-*")))


@pytest.mark.parametrize("name", ["sum", "min", "max"])
@pytest.mark.parametrize("buffer_records", [150, 1_000_000])
def test_folding_combiner_matches_a_generator_combiner(tmp_path: Path, name: str,
                                                       buffer_records: int) -> None:
    """Folding values as they are produced (with many spills or none) must
    change nothing but speed."""
    data = corpus(tmp_path)
    fold = job(tmp_path, "fold", name, f"combine = combiners.{name}")
    plain = job(tmp_path, "plain", name,
                f"def combine(key, values):\n    yield key, {name}(values)\n")
    c1 = run_inline(str(fold), [str(data)], str(tmp_path / "a"), num_reducers=3,
                    buffer_records=buffer_records)
    c2 = run_inline(str(plain), [str(data)], str(tmp_path / "b"), num_reducers=3,
                    buffer_records=buffer_records)
    assert part_files(tmp_path / "a") == part_files(tmp_path / "b")
    assert c1[FRAMEWORK]["map output records"] == c2[FRAMEWORK]["map output records"] == 36000


def test_folding_combiners_work_as_plain_generators() -> None:
    """They stay ordinary combiners: any code path may call them with values."""
    assert list(combiners.sum("k", iter([1, 2, 3]))) == [("k", 6)]
    assert list(combiners.sum("k", iter([]))) == [("k", 0)]
    assert list(combiners.min("k", [3, 1, 2])) == [("k", 1)]
    assert list(combiners.max("k", [3, 1, 2])) == [("k", 3)]
