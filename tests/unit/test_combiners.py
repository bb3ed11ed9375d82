"""The built-in folding combiners: the map side's fast path must give what
the same job with a plain generator combiner gives."""

from __future__ import annotations

import builtins
import collections
import math
import operator
import random
import sys
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from pytxmr import combiners
from pytxmr.counters import FRAMEWORK
from pytxmr.inline import run_inline
from pytxmr.output import text_line
from pytxmr.records import RecordTypeError

MAP = """
def map(offset, line):
    for word in line.split():
        yield word, len(word) * (int(offset) % 11 - 5)
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


MIXED = """
from pytxmr import combiners

def map(offset, line):
    n = int(offset)
    # Keys that compare equal across kinds (1, 1.0, True), and float values
    # whose sum depends on the order they are added in.
    for key in (1, 1.0, True, "a", ("t", 2), None, n % 7):
        yield key, (n % 13) * 0.1 + 1e-9 * n
"""


@pytest.mark.parametrize("name", ["sum", "min", "max"])
@pytest.mark.parametrize("combine", [
    "", "combine = combiners.{name}",
    # keeps every value: records of many values each
    "def combine(key, values):\n    for v in values:\n        yield key, v\n"])
def test_a_folding_reducer_matches_a_generator_reducer(tmp_path: Path, name: str,
                                                       combine: str) -> None:
    """The reduce side folds each key's values itself for ``reduce =
    combiners.X``: the part files must be those of the generator, byte for
    byte (float totals included), with and without a combiner and spills."""
    data = corpus(tmp_path)
    fold = tmp_path / "fold.py"
    fold.write_text(f"from pytxmr import combiners\n{MAP}\n{combine.format(name=name)}\n"
                    f"reduce = combiners.{name}\n")
    plain = job(tmp_path, "plain", name, combine.format(name=name))
    for module, out in ((fold, "a"), (plain, "b")):
        run_inline(str(module), [str(data)], str(tmp_path / out), num_reducers=3,
                   buffer_records=5000, split_size=40_000)
    assert part_files(tmp_path / "a") == part_files(tmp_path / "b")
    reference = collections.defaultdict(list)
    for offset, line in enumerate_lines(data):
        for word in line.split():
            reference[word].append(len(word) * (offset % 11 - 5))
    fold_of = getattr(builtins, name)
    expected = sorted(f"{w}\t{fold_of(vs)}" for w, vs in reference.items())
    assert sorted(part_files(tmp_path / "a").splitlines()) == expected


@pytest.mark.parametrize("name", ["sum", "min", "max"])
def test_a_folding_reducer_groups_keys_as_a_generator_is_given_them(tmp_path: Path,
                                                                    name: str) -> None:
    """1, 1.0 and True are one key, named as the first of them merged;
    the float totals add up in the order a generator would."""
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{i}\n" for i in range(400)))
    fold = tmp_path / "fold.py"
    fold.write_text(f"{MIXED}\nreduce = combiners.{name}\n")
    plain = tmp_path / "plain.py"
    plain.write_text(f"{MIXED}\ndef reduce(key, values):\n    yield key, {name}(values)\n")
    for module, out in ((fold, "a"), (plain, "b")):
        run_inline(str(module), [str(data)], str(tmp_path / out), num_reducers=2,
                   split_size=600)
    assert part_files(tmp_path / "a") == part_files(tmp_path / "b")
    # 0-6 (1, 1.0 and True among them), "a", ("t", 2) and None
    assert len(part_files(tmp_path / "a").splitlines()) == 10


def test_a_folding_reducer_feeds_the_next_step(tmp_path: Path) -> None:
    """Between steps the totals go out as typed pairs, not text."""
    data = corpus(tmp_path)
    module = tmp_path / "steps.py"
    module.write_text(
        "from pytxmr import Step, combiners\n" + MAP.replace("def map(", "def words(") +
        "def by_total(word, total):\n    yield total % 5, 1\n"
        "steps = [Step(map=words, combine=combiners.sum, reduce=combiners.sum, num_reducers=3),\n"
        "         Step(map=by_total, reduce=combiners.sum, num_reducers=1)]\n")
    run_inline(str(module), [str(data)], str(tmp_path / "out"))
    totals = collections.Counter()
    for offset, line in enumerate_lines(data):
        for word in line.split():
            totals[word] += len(word) * (offset % 11 - 5)
    expected = collections.Counter(t % 5 for t in totals.values())
    assert part_files(tmp_path / "out") == "".join(f"{k}\t{n}\n" for k, n in sorted(expected.items()))


def enumerate_lines(path: Path) -> list[tuple[int, str]]:
    """(byte offset, line) of each line, as the map sees them."""
    lines, offset = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        lines.append((offset, line.decode()))
        offset += len(line)
    return lines


def test_a_folding_reducer_sums_floats_as_sum_does() -> None:
    """From Python 3.12 ``sum`` adds floats with compensation, so a key's
    floats may not be added one record at a time: with a compensating
    ``whole`` (what ``sum`` is there), each key's result must be ``whole``
    of all its values, across records and batches."""
    from pytxmr.reducer import _write_folded

    records = {
        "a": [[0.1], [0.1], [0.1], [1e16], [1.0], [-1e16]],  # floats from the start
        "b": [[1], [2, True], [1e16], [1.0, -1e16]],  # an exact int prefix, then floats
        "c": [[1e16, 1.0], [-1e16], [2]],  # the first record's floats
        "d": [[2**70], [3], [-(2**70)]],  # ints only: added as they come
    }
    flat = [(k, vs) for k in sorted(records) for vs in records[k]]
    batches = [flat[:4], flat[4:9], flat[9:]]  # a key's records in two batches
    fsum = combiners.FoldCombiner("fsum", operator.add, math.fsum, frozenset((float,)))
    lines: list[str] = []
    groups = _write_folded(batches, lines.append, lambda k, v: f"{k}\t{v!r}", fsum)
    assert groups == 4
    expected = {k: math.fsum(v for vs in rs for v in vs) for k, rs in records.items()}
    assert lines == [f"{k}\t{expected[k]!r}" for k in sorted(records)]
    assert expected["a"] == 1.3 and expected["b"] == 5.0  # where adding in turn is off
    # With the built-in sum, what the generator reducer would write.
    lines.clear()
    _write_folded(batches, lines.append, lambda k, v: f"{k}\t{v!r}", combiners.sum)
    assert lines == [f"{k}\t{sum(v for vs in rs for v in vs)!r}" for k, rs in records.items()]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="sum compensates floats: they are gathered")
def test_the_built_in_sum_folds_a_key_of_floats_in_constant_memory() -> None:
    """Before Python 3.12 ``sum`` adds floats in turn: a folding reducer
    keeps a running total, however many values a key has."""
    import tracemalloc

    from pytxmr.reducer import _write_folded

    n = 300_000
    batches = ([("k", [0.1])] * 1000 for _ in range(n // 1000))
    lines: list[str] = []
    tracemalloc.start()
    try:
        _write_folded(batches, lines.append, lambda k, v: f"{k}\t{v!r}", combiners.sum)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [f"k\t{sum([0.1] * n)!r}"]
    assert peak < 1 << 20, f"{peak} bytes traced for one key of {n} floats"


@pytest.mark.parametrize("name, complaint", [("sum", "unsupported operand"),
                                             ("min", "not supported between")])
def test_a_folding_reducer_names_the_key_it_cannot_fold(tmp_path: Path, name: str,
                                                        complaint: str) -> None:
    """A value the fold cannot take (a str among ints): the error says at
    which key, as a reduce of the user's own would show its line."""
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{i}\n" for i in range(200)))
    module = tmp_path / "bad.py"
    module.write_text("from pytxmr import combiners\n"
                      "def map(offset, line):\n"
                      "    n = int(line)\n"
                      "    yield ('odd' if n % 2 else 'even'), (str(n) if n == 150 else n)\n"
                      f"reduce = combiners.{name}\n")
    with pytest.raises(Exception) as info:
        run_inline(str(module), [str(data)], str(tmp_path / "out"), split_size=300)
    message = str(info.value)
    assert f"combiners.{name} at the key 'even'" in message and complaint in message


def test_a_folding_reducer_blames_itself_only_for_its_own_errors() -> None:
    """A TypeError from the merge feeding the reduce is not the fold's: it
    comes out as it was raised, not as "combiners.sum at the key ..." (which
    would send the user to the values); a total that cannot be written is
    named as a reduce's unwritable pair is."""
    from pytxmr.reducer import _write_folded

    def merged() -> Iterator[list[tuple[str, list[int]]]]:
        yield [("a", [1]), ("a", [2])]
        raise TypeError("the merge's own")

    with pytest.raises(TypeError) as info:
        _write_folded(merged(), [].append, lambda k, v: f"{k}\t{v}", combiners.sum)
    assert str(info.value) == "the merge's own"

    with pytest.raises(RecordTypeError) as info:
        _write_folded([[("k", [Decimal(1)]), ("k", [Decimal(2)])]], [].append, text_line,
                      combiners.sum)
    assert str(info.value).startswith("reduce yielded ('k', Decimal('3')), which cannot be written")
    with pytest.raises(TypeError, match=r"combiners\.sum at the key 'b': unsupported"):
        _write_folded([[("a", [1]), ("b", [2]), ("b", ["x"])]], [].append,
                      lambda k, v: f"{k}\t{v}", combiners.sum)


@pytest.mark.parametrize("name, values, complaint", [
    ("sum", "(1, 2)", "combine = combiners.sum at the key 'k': unsupported operand"),
    ("max", "None", "combine = combiners.max at the key 'k': '>' not supported"),
    ("min", "{}", "combine = combiners.min at the key 'k': '<' not supported"),
])
def test_a_folding_combiner_names_the_key_of_values_it_cannot_fold(
        tmp_path: Path, name: str, values: str, complaint: str) -> None:
    """Values the map side's fold cannot take were reported as a key of a
    type no record may carry; a bad key or a bad pair still is."""
    data = tmp_path / "in.txt"
    data.write_text("a b\nc\n")

    def run(body: str) -> str:
        module = tmp_path / "job.py"
        module.write_text(f"from pytxmr import combiners\ndef map(offset, line):\n{body}"
                          f"combine = combiners.{name}\n"
                          "def reduce(k, vs):\n    yield k, list(vs)\n")
        with pytest.raises(Exception) as info:
            run_inline(str(module), [str(data)], str(tmp_path / "out"), overwrite=True)
        return str(info.value)

    assert complaint in run(f"    for w in line.split():\n        yield 'k', {values}\n")
    assert "whose key is str" in run("    yield [line], 1\n")
    assert "(expected 2, got 1)" in run("    yield 'a', 1\n    yield 'b',\n")
