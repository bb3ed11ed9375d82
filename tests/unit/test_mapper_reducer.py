"""Unit tests for the task bodies: pytxmr.mapper.run_map, pytxmr.reducer.run_reduce and
pytxmr.inline.run_inline, run in this process against independent references."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytxmr import mapper
from pytxmr.counters import FRAMEWORK, Counters
from pytxmr.inline import run_inline
from pytxmr.jobmodule import load_module, resolve
from pytxmr.keys import record_sort_key
from pytxmr.mapper import run_map
from pytxmr.merge import merge_runs, reduce_run_count
from pytxmr.output import OutputExistsError
from pytxmr.partition import default_partition
from pytxmr.records import RecordTypeError
from pytxmr.reducer import run_reduce
from pytxmr.splits import InputDecodeError, compute_splits
from pytxmr.wire import SubmissionError

WORDCOUNT = """
def map(key, value):
    for word in value.split():
        yield word, 1

def reduce(key, values):
    yield key, sum(values)
"""

WORDCOUNT_COMBINER = WORDCOUNT + """
def combine(key, values):
    yield key, sum(values)
"""

# ---------------------------------------------------------------- helpers


def make_inputs(directory: Path, seed: int = 1, files: int = 3, lines: int = 800) -> list[str]:
    """Text files of words from a small vocabulary (some non-ASCII, some popular)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)] + ["the", "caf\u00e9", "\u65e5\u672c", "a\tb"]
    paths = []
    for f in range(files):
        path = directory / f"in-{f}.txt"
        text = "\n".join(
            " ".join(rng.choice(vocab) if rng.random() < 0.7 else "the" for _ in range(rng.randint(0, 12)))
            for _ in range(lines)
        )
        path.write_text(text + ("\n" if f % 2 else ""), encoding="utf-8")
        paths.append(str(path))
    return paths


def reference_wordcount(paths: list[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for p in paths:
        with open(p, encoding="utf-8", newline="") as f:
            for line in f.read().split("\n"):
                counts.update(line.split())
    return counts


def run_job(
    tmp_path: Path,
    source: str,
    inputs: list[str],
    *,
    num_reducers: int = 1,
    split_size: int = 4096,
    buffer_records: int = mapper.DEFAULT_BUFFER_RECORDS,
    packed: bool = False,
) -> tuple[list[str], Counters]:
    """Map every split, then reduce every partition, as the tasktrackers would; returns
    the part files' paths and the job's counters."""
    job = resolve(load_module(textwrap.dedent(source), str(tmp_path / "job.py")))
    counters = Counters()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    outputs = []
    with contextlib.ExitStack() as stack:
        # As in a process that runs many maps: small outputs go to one pack.
        pack = stack.enter_context(open(work / "runner.data", "ab")) if packed else None
        for split in compute_splits(inputs, split_size):
            out = run_map(job, split, num_reducers, str(work / f"map-{split.index:05d}.data"),
                          counters, buffer_records=buffer_records, pack=pack)
            assert len(out.table) == num_reducers
            outputs.append(out)
    kinds = sorted({k for out in outputs for k in out.kinds})
    parts = []
    for p in range(num_reducers):
        runs = [(out.data_path, *out.table[p][:2]) for out in outputs]
        part = str(tmp_path / "out" / f"part-{p:05d}")
        run_reduce(job, runs, kinds, part, str(work), counters)
        parts.append(part)
    return parts, counters


def read_text_parts(parts: list[str]) -> list[list[tuple[str, str]]]:
    out = []
    for part in parts:
        with open(part, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
        assert text == "" or text.endswith("\n")
        out.append([tuple(line.rsplit("\t", 1)) for line in text.splitlines()])  # type: ignore[misc]
    return out


def counts_of(parts: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lines in read_text_parts(parts):
        for word, n in lines:
            assert word not in counts, f"{word!r} reduced twice"
            counts[word] = int(n)
    return counts


def count_spills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the spills the map side writes from now on: their
    items (keys, or pairs for a map without a combiner)."""
    spills: list[int] = []
    real_write = mapper.MapOutputBuffer._write_spill

    def counting_write(self: Any, parts: Any, *args: Any, **kwargs: Any) -> None:
        spills.append(sum(map(len, parts)))
        real_write(self, parts, *args, **kwargs)

    monkeypatch.setattr(mapper.MapOutputBuffer, "_write_spill", counting_write)
    return spills


# ---------------------------------------------------------------- word count vs Counter


@pytest.mark.parametrize("packed", [False, True], ids=["files", "packed"])
@pytest.mark.parametrize("source", [WORDCOUNT, WORDCOUNT_COMBINER], ids=["plain", "combiner"])
@pytest.mark.parametrize("num_reducers", [1, 3])
def test_wordcount_matches_counter(tmp_path: Path, source: str, num_reducers: int,
                                   packed: bool) -> None:
    """The end-to-end map/sort/merge/reduce path gives exactly what collections.Counter gives."""
    inputs = make_inputs(tmp_path)
    parts, counters = run_job(tmp_path, source, inputs, num_reducers=num_reducers, packed=packed)
    expected = reference_wordcount(inputs)
    assert counts_of(parts) == dict(expected)
    for p, lines in enumerate(read_text_parts(parts)):
        words = [w for w, _ in lines]
        assert words == sorted(words), "a part file's keys must be sorted"
        assert all(default_partition(w, num_reducers) == p for w in words)
    assert counters.get(FRAMEWORK, "map output records") == sum(expected.values())
    assert counters.get(FRAMEWORK, "reduce input groups") == len(expected)
    assert counters.get(FRAMEWORK, "reduce output records") == len(expected)
    assert counters.get(FRAMEWORK, "map input records") == sum(
        len(open(p, encoding="utf-8").read().splitlines()) for p in inputs
    )


@pytest.mark.parametrize("source", [WORDCOUNT, WORDCOUNT_COMBINER], ids=["plain", "combiner"])
def test_tiny_buffer_with_many_spills_gives_the_same_output(
    tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spilling and merging spills must not change a single byte of the output."""
    inputs = make_inputs(tmp_path)
    (tmp_path / "one").mkdir()
    one, _ = run_job(tmp_path / "one", source, inputs, num_reducers=2, split_size=1 << 20)
    spills = count_spills(monkeypatch)
    (tmp_path / "many").mkdir()
    many, _ = run_job(tmp_path / "many", source, inputs, num_reducers=2, split_size=1 << 20,
                      buffer_records=5)
    assert len(spills) > 3 * len(inputs), "the tiny buffer should have spilled many times"
    for a, b in zip(one, many):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert counts_of(many) == dict(reference_wordcount(inputs))
    # In a process with a pack, the first spill waits in memory: a second
    # one writes it out, and the spills are merged as without a pack.
    (tmp_path / "packed").mkdir()
    packed, _ = run_job(tmp_path / "packed", source, inputs, num_reducers=2,
                        split_size=1 << 20, buffer_records=5, packed=True)
    for a, b in zip(one, packed):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_small_outputs_go_to_the_pack_and_large_ones_to_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A map's output of one small spill is appended to the process's pack
    (no file of its own: creating one costs a busy disk a millisecond); a
    larger one, or one of several spills, gets its own file."""
    inputs = make_inputs(tmp_path)
    job = resolve(load_module(textwrap.dedent(WORDCOUNT_COMBINER), str(tmp_path / "job.py")))
    work = tmp_path / "work"
    work.mkdir()
    splits = compute_splits(inputs, 1 << 20)
    with open(work / "runner.data", "ab") as pack:
        small = [run_map(job, split, 2, str(work / f"m{split.index}.data"), Counters(),
                         pack=pack) for split in splits]
        assert {out.data_path for out in small} == {pack.name}
        assert sorted(os.listdir(work)) == ["runner.data"]
        # Each map's stretch of the pack follows the one before.
        starts = [out.table[0][0] for out in small]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        monkeypatch.setattr(mapper, "PACK_LIMIT", 10)
        big = run_map(job, splits[0], 2, str(work / "big.data"), Counters(), pack=pack)
        assert big.data_path == str(work / "big.data")
        several = run_map(job, splits[0], 2, str(work / "several.data"), Counters(),
                          buffer_records=5, pack=pack)
        assert several.data_path == str(work / "several.data")
    # The same records either way, wherever they are.
    for p in range(2):
        runs = [[(out.data_path, *out.table[p][:2])] for out in (small[0], big, several)]
        decoded = [list(merge_runs(r, record_sort_key(["str"]))) for r in runs]
        assert decoded[0] == decoded[1] == decoded[2]


WORDCOUNT_MAP_SPLIT = """
from collections import Counter

def map_split(chunks):
    counts = Counter()
    for offset, text in chunks:
        counts.update(text.split())
    return counts.items()

def reduce(key, values):
    yield key, sum(values)
"""

WORDCOUNT_MAP_CHUNK = """
from collections import Counter

def map_chunk(offset, text):
    yield from Counter(text.split()).items()

def reduce(key, values):
    yield key, sum(values)
"""

#: map_split results the framework takes as distinct keys (a dict's
#: items(), even of a dict that iterates its keys in another order) or as
#: any stream of pairs (a generator).
MAP_SPLIT_ODD_DICT = WORDCOUNT_MAP_SPLIT.replace("return counts.items()", """
    class Reversed(dict):
        def __iter__(self):
            return reversed(list(super().__iter__()))
    return Reversed(counts).items()""")
MAP_SPLIT_STREAM = WORDCOUNT_MAP_SPLIT.replace("return counts.items()",
                                               "yield from counts.items()")

FOLD = "\nfrom pytxmr import combiners\ncombine = combiners.sum\n"
BYTES = "\ninput_bytes = True\n"


@pytest.mark.parametrize("source", [WORDCOUNT_MAP_SPLIT, WORDCOUNT_MAP_SPLIT + FOLD,
                                    MAP_SPLIT_ODD_DICT, MAP_SPLIT_STREAM, MAP_SPLIT_STREAM + FOLD,
                                    WORDCOUNT_MAP_CHUNK, WORDCOUNT_MAP_CHUNK + FOLD,
                                    WORDCOUNT_MAP_SPLIT + FOLD + BYTES,
                                    WORDCOUNT_MAP_CHUNK + BYTES, WORDCOUNT + BYTES],
                         ids=["split", "split-fold", "split-odd-dict", "split-stream",
                              "split-stream-fold", "chunk", "chunk-fold", "split-fold-bytes",
                              "chunk-bytes", "map-bytes"])
@pytest.mark.parametrize("buffer_records", [mapper.DEFAULT_BUFFER_RECORDS, 7])
@pytest.mark.parametrize("num_reducers", [1, 3])
def test_batch_apis_match_counter(tmp_path: Path, source: str, buffer_records: int,
                                  num_reducers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """map_split and map_chunk give what Counter gives, also when the buffer
    fills in the middle of a split (map_split's one stream of pairs must
    still spill), and count the split's lines as map input records."""
    spills = count_spills(monkeypatch)
    monkeypatch.setattr(mapper, "SPLIT_BATCH", 3)
    inputs = make_inputs(tmp_path)
    parts, counters = run_job(tmp_path, source, inputs, num_reducers=num_reducers,
                              split_size=1 << 20, buffer_records=buffer_records)
    expected = reference_wordcount(inputs)
    assert counts_of(parts) == dict(expected)
    assert counters.get(FRAMEWORK, "map input records") == sum(
        len(open(p, encoding="utf-8").read().splitlines()) for p in inputs)
    if buffer_records == 7 and "map_split" in source:
        assert len(spills) > 3 * len(inputs), "a full buffer must spill within a split"
    elif "def map(" in source:
        pass  # a buffer of records, not of chunks
    else:  # one chunk per (small) file: a buffer is checked after each chunk
        assert len(spills) == len(inputs)


@pytest.mark.parametrize("source", [WORDCOUNT, WORDCOUNT_MAP_SPLIT, WORDCOUNT_MAP_CHUNK])
def test_input_bytes_maps_see_the_bytes_of_the_file(tmp_path: Path, source: str) -> None:
    """Bytes that are not UTF-8 are read, not refused, and come back out
    as they were (the text output writes bytes keys as the UTF-8 they
    decode to, other bytes escaped)."""
    path = tmp_path / "in.bin"
    path.write_bytes(b"caf\xc3\xa9 \xff\r\n\xff x\n")
    with pytest.raises(InputDecodeError):
        run_job(tmp_path, source, [str(path)])
    parts, counters = run_job(tmp_path, source + BYTES, [str(path)])
    assert counts_of(parts) == {"caf\u00e9": 1, "\\xff": 2, "x": 1}
    assert counters.get(FRAMEWORK, "map input records") == 2


def test_map_split_yielding_a_non_pair_raises_record_type_error(tmp_path: Path) -> None:
    body = "def map_split(chunks):\n    for offset, text in chunks:\n        yield from text.split()\n"
    with pytest.raises(RecordTypeError, match=r"\(key, value\) pairs"):
        map_job(tmp_path, body)


def test_map_split_returning_none_names_the_problem(tmp_path: Path) -> None:
    body = "def map_split(chunks):\n    for offset, text in chunks:\n        pass\n"
    with pytest.raises(RecordTypeError, match="map_split must return or yield .* not NoneType"):
        map_job(tmp_path, body)


def test_an_error_in_a_lazy_map_split_result_is_the_users(tmp_path: Path) -> None:
    """A ValueError raised while the framework iterates what map_split
    returned is the user's (their int() failed), not a bad pair."""
    body = ("def map_split(chunks):\n    words = [w for _, t in chunks for w in t.split()]\n"
            "    return zip(words, map(int, words))\n")
    with pytest.raises(ValueError, match="invalid literal for int"):
        map_job(tmp_path, body)


def test_map_split_errors_come_from_the_users_code(tmp_path: Path) -> None:
    body = "def map_split(chunks):\n    yield 'a', 1\n    raise KeyError('boom')\n"
    with pytest.raises(KeyError, match="boom"):
        map_job(tmp_path, body)
    body = "def map_split(chunks):\n    yield 'a', 1\n    raise TypeError('mine')\n"
    with pytest.raises(TypeError, match="^mine$"):
        map_job(tmp_path, body)


def test_combiner_reduces_map_output_records(tmp_path: Path) -> None:
    """The combiner is the main speed-up: it must actually shrink what is written per map."""
    inputs = make_inputs(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, plain = run_job(tmp_path / "a", WORDCOUNT, inputs, split_size=1 << 20)
    _, combined = run_job(tmp_path / "b", WORDCOUNT_COMBINER, inputs, split_size=1 << 20)
    assert combined.get(FRAMEWORK, "map output materialized bytes") < plain.get(
        FRAMEWORK, "map output materialized bytes"
    )


# ---------------------------------------------------------------- keys and values


MIXED_KEYS = """
output_format = "jsonl"

def map(offset, line):
    kind, _, text = line.partition(":")
    if kind == "s":
        yield text, 1
    elif kind == "i":
        yield int(text), 1
    elif kind == "f":
        yield float(text), 1
    elif kind == "b":
        yield text.encode(), 1
    elif kind == "n":
        yield None, 1
    elif kind == "t":
        a, b = text.split(",")
        yield (int(a), b), 1
    elif kind == "T":
        yield True, 1

def reduce(key, values):
    yield key, sum(values)
"""


def test_mixed_key_kinds_are_sorted_by_the_total_order(tmp_path: Path) -> None:
    """A job with str and int (and other) keys must not fail and must sort as documented."""
    lines = [
        "s:b", "i:10", "t:2,a", "s:10", "n:", "b:zz", "i:-3", "f:2.5", "t:1,b",
        "s:a", "i:1", "f:1.0", "T:", "t:1,a", "b:aa", "s:b", "i:10",
    ]
    random.Random(3).shuffle(lines)
    paths = []
    for i in range(3):  # several maps with different key kinds each
        path = tmp_path / f"in{i}.txt"
        path.write_text("\n".join(lines[i::3]) + "\n")
        paths.append(str(path))
    parts, _ = run_job(tmp_path, MIXED_KEYS, paths, buffer_records=2)
    got = [json.loads(line) for line in Path(parts[0]).read_text().splitlines()]
    keys = [k for k, _ in got]
    counts = [n for _, n in got]
    # None < numbers < str < bytes < tuple; 1, 1.0 and True are one key.
    assert keys[0] is None
    assert keys[1:5] == [-3, 1, 2.5, 10]
    assert keys[5:8] == ["10", "a", "b"]
    assert keys[8:10] == ["aa", "zz"]  # bytes, written as text
    assert keys[10:] == [[1, "a"], [1, "b"], [2, "a"]]
    assert counts[2] == 3, "1, 1.0 and True must be reduced as one key"
    assert counts[4] == 2 and counts[7] == 2


STREAMING = """
def map(offset, line):
    yield line, 1

def reduce(key, values):
    if isinstance(values, (list, tuple)) or iter(values) is not values:
        raise AssertionError(f"reduce got {type(values).__name__}, not an iterator")
    n = 0
    for v in values:
        n += v
    yield key, n
"""


def test_a_key_with_200k_values_streams_to_reduce(tmp_path: Path) -> None:
    """A popular key must reach reduce as an iterator chained across runs, never as one list."""
    path = tmp_path / "in.txt"
    path.write_text("hot\n" * 200_000 + "cold\n" * 3)
    parts, counters = run_job(tmp_path, STREAMING, [str(path)], split_size=256 << 10,
                              buffer_records=50_000)
    assert read_text_parts(parts) == [[("cold", "3"), ("hot", "200000")]]
    assert counters.get(FRAMEWORK, "reduce input groups") == 2


def test_empty_input_file_gives_an_empty_part_file(tmp_path: Path) -> None:
    """An empty input is valid: the job succeeds with empty (but present) part files."""
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    parts, counters = run_job(tmp_path, WORDCOUNT_COMBINER, [str(path)], num_reducers=2)
    assert [Path(p).read_bytes() for p in parts] == [b"", b""]
    assert counters.get(FRAMEWORK, "map input records") == 0
    assert counters.get(FRAMEWORK, "reduce input groups") == 0


BIG_INT_JOB = """
output_format = "%s"

def map(offset, line):
    yield 7 ** 6000 + len(line), 7 ** 6000

def reduce(key, values):
    yield key - 7 ** 6000, sum(values)
"""


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_ints_beyond_4300_digits_can_be_written_as_output(tmp_path: Path, fmt: str) -> None:
    """Keys and values may be ints of any size all the way through, output included."""
    path = tmp_path / "in.txt"
    path.write_text("a\nbb\n")
    parts, _ = run_job(tmp_path, BIG_INT_JOB % fmt, [str(path)])
    lines = Path(parts[0]).read_text().splitlines()
    assert len(lines) == 2
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        big = str(7**6000)
    finally:
        sys.set_int_max_str_digits(old)
    assert all(big in line for line in lines)


DICT_KEYS_JOB = """
output_format = "%s"

def map(offset, line):
    word = line.strip()
    yield word[:1], word.encode()

def reduce(key, values):
    words = sorted(values)
    yield key, {"n": len(words), b"first": words[0], (len(words), b"last"): [{words[-1]: 1}]}
"""


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_a_dict_value_with_keys_json_cannot_have_is_written(tmp_path: Path, fmt: str) -> None:
    """A dict value may have any key a job's key may be (bytes, a tuple):
    such a key is written as its text form, as a key of the output is."""
    path = tmp_path / "in.txt"
    path.write_text("apple\navocado\nbanana\n")
    parts, _ = run_job(tmp_path, DICT_KEYS_JOB % fmt, [str(path)])
    lines = Path(parts[0]).read_text().splitlines()
    pairs = [json.loads(line) for line in lines] if fmt == "jsonl" else \
        [[k, json.loads(v)] for k, v in (line.split("\t") for line in lines)]
    assert pairs == [
        ["a", {"n": 2, "first": "apple", '[2, "last"]': [{"avocado": 1}]}],
        ["b", {"n": 1, "first": "banana", '[1, "last"]': [{"banana": 1}]}],
    ]


def test_a_counter_value_of_bytes_keys_is_written_and_keys_written_alike_are_refused() -> None:
    """A Counter (a dict too) of an input_bytes job's words is written; keys
    that would be written alike fail clearly rather than lose an entry."""
    from pytxmr.output import json_line, text_line

    stripes = collections.Counter([b"caf\xc3\xa9", b"a", b"a", (1, b"x")])
    assert json.loads(text_line("k", stripes).split("\t")[1]) == {
        "caf\u00e9": 1, "a": 2, '[1, "x"]': 1}
    assert json.loads(json_line(b"k", collections.OrderedDict(stripes))) == [
        "k", {"caf\u00e9": 1, "a": 2, '[1, "x"]': 1}]
    for alike in ({b"a": 1, "a": 2}, {("a",): 1, '["a"]': 2}):
        with pytest.raises(TypeError, match="written alike"):
            text_line("k", [alike])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1, -float("inf")],
                                   {"mean": float("nan")}], ids=["nan", "inf", "list", "dict"])
def test_jsonl_refuses_what_json_has_not_and_text_writes_it(tmp_path: Path, value: Any) -> None:
    """Python's json writes NaN and Infinity, which no JSON parser reads: a
    jsonl line refuses them, naming the pair, where text lines keep them."""
    from pytxmr.output import json_line, text_line

    with pytest.raises(TypeError, match="JSON has no NaN or Infinity"):
        json_line("k", value)
    assert text_line("k", value).startswith("k\t")
    body = (f"output_format = 'jsonl'\nimport math\n\ndef map(k, v):\n    yield v, 1\n\n"
            f"def reduce(key, values):\n    yield key, {value!r}\n")
    body = body.replace("nan", "math.nan").replace("inf", "math.inf")
    identity = body.split("def reduce")[0].replace("def map(k, v):\n    yield v, 1",
                                                   f"def map(k, v):\n    yield v, {value!r}")
    identity = identity.replace("nan", "math.nan").replace("inf", "math.inf")
    identity += "from pytxmr import reducers\nreduce = reducers.identity\n"
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    for i, source in enumerate((body, identity)):  # the generator's pairs, and the identity's
        (tmp_path / str(i)).mkdir()
        with pytest.raises(RecordTypeError, match=r"reduce yielded \('a', .*JSON has no NaN"):
            run_job(tmp_path / str(i), source, [str(path)])


# ---------------------------------------------------------------- user errors


def map_job(tmp_path: Path, body: str, **kwargs: Any) -> None:
    """Run only the maps of a job whose module is ``body`` over a small input."""
    path = tmp_path / "in.txt"
    if not path.exists():
        path.write_text("a b\nc d d\ne f\n" * 4)
    run_job(tmp_path, body + "\ndef reduce(key, values):\n    yield key, 1\n", [str(path)], **kwargs)


@pytest.mark.parametrize(
    "emit",
    ["word", "1", "(word,)", "(word, 1, 2)", "None"],
)
def test_map_yielding_a_non_pair_raises_record_type_error(tmp_path: Path, emit: str) -> None:
    """A map that yields words instead of pairs is the most common mistake: say what is wrong."""
    body = f"def map(k, v):\n    for word in v.split():\n        yield {emit}\n"
    with pytest.raises(RecordTypeError, match=r"\(key, value\) pairs"):
        map_job(tmp_path, body)


@pytest.mark.parametrize("emit", ["key", "1", "(key,)", "(key, 1, 2)", "None"])
def test_reduce_yielding_a_non_pair_raises_record_type_error(tmp_path: Path, emit: str) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a b\nc d d\n")
    source = (WORDCOUNT + f"\ndef reduce(key, values):\n    yield {emit}\n")
    with pytest.raises(RecordTypeError, match=r"reduce must yield \(key, value\) pairs"):
        run_job(tmp_path, source, [str(path)])


@pytest.mark.parametrize("body, error", [
    ("    return sum(values)\n", r"reduce must yield \(key, value\) pairs \(or return a list "
                                r"of them\); at the key 'a' it returned 1"),
    ("    yield key, object()\n", r"reduce yielded \('a', <object .*>\), which cannot be "
                                r"written: cannot write object as JSON"),
    ("    yield (key, {1}), 1\n", r"reduce yielded \(\('a', \{1\}\), 1\), which cannot be "
                                r"written: cannot write set as JSON"),
    ("    class Odd:\n        def __repr__(self):\n            raise TypeError('no repr')\n"
     "    yield key, Odd()\n", r"reduce yielded \('a', <a reduce.<locals>.Odd>\), which cannot"),
], ids=["returns-a-number", "unwritable-value", "unwritable-key", "failing-repr"])
def test_a_reduce_whose_output_cannot_be_written_names_it(tmp_path: Path, body: str,
                                                          error: str) -> None:
    """Its frames are gone when its pairs are written: the error names the
    pair (or what it returned), not only a type."""
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    source = WORDCOUNT + "\ndef reduce(key, values):\n" + body
    with pytest.raises(RecordTypeError, match=error):
        run_job(tmp_path, source, [str(path)])


@pytest.mark.parametrize("body, error", [
    ("    raise ValueError('mine')\n    yield key, 1\n", "^mine$"),
    ("    raise TypeError('mine')\n    yield key, 1\n", "^mine$"),
    # Errors of C code the framework's loop drives are the user's too
    # (builtins.map: the module's map is the job's).
    ("    return zip(repeat(key), builtins.map(int, ['x']))\n", "invalid literal for int"),
    ("    return builtins.map(add, repeat(key), [1])\n", "can only concatenate str"),
], ids=["value-error", "type-error", "lazy-value-error", "lazy-type-error"])
def test_errors_raised_by_reduce_itself_are_the_users(tmp_path: Path, body: str,
                                                      error: str) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a b\n")
    source = (WORDCOUNT + "\nimport builtins\nfrom itertools import repeat\nfrom operator import add\n"
              "def reduce(key, values):\n" + body)
    with pytest.raises((ValueError, TypeError), match=error) as caught:
        run_job(tmp_path, source, [str(path)])
    assert not isinstance(caught.value, RecordTypeError)


@pytest.mark.parametrize("key, name", [("[word]", "list"), ("{word: 1}", "dict"), ("{word}", "set")])
def test_map_yielding_an_unhashable_key_raises_record_type_error(
    tmp_path: Path, key: str, name: str
) -> None:
    """An unhashable key fails in the grouping dict: the message must name the key's type."""
    body = f"def map(k, v):\n    for word in v.split():\n        yield {key}, 1\n"
    with pytest.raises(RecordTypeError, match=name):
        map_job(tmp_path, body)


@pytest.mark.parametrize("num_reducers", [1, 2])
def test_map_yielding_an_unsupported_hashable_key_raises_type_error(
    tmp_path: Path, num_reducers: int
) -> None:
    """A frozenset key is hashable but not a supported key: fail with its type named."""
    body = "def map(k, v):\n    for word in v.split():\n        yield frozenset(word), 1\n"
    with pytest.raises(TypeError, match="frozenset"):
        map_job(tmp_path, body, num_reducers=num_reducers)


def test_map_yielding_an_unsupported_value_raises_record_type_error(tmp_path: Path) -> None:
    """A set value (a typical mistake) fails with the type named, not a msgpack error."""
    body = "def map(k, v):\n    for word in v.split():\n        yield word, {word}\n"
    with pytest.raises(RecordTypeError, match="set"):
        map_job(tmp_path, body)


def test_type_error_raised_by_user_map_is_not_relabelled(tmp_path: Path) -> None:
    """The user's own TypeError must reach them as is, with their message, not as a pytxmr error."""
    body = "def map(k, v):\n    raise TypeError('my own bug')\n    yield\n"
    with pytest.raises(TypeError, match="my own bug") as info:
        map_job(tmp_path, body)
    assert not isinstance(info.value, RecordTypeError)


def test_user_map_returning_none_names_the_problem(tmp_path: Path) -> None:
    """A map that returns instead of yielding must get a pytxmr error, not a bare TypeError."""
    body = "def map(k, v):\n    if k == 0:\n        return [(v, 1)]\n"
    with pytest.raises(RecordTypeError, match="NoneType"):
        map_job(tmp_path, body)


@pytest.mark.parametrize("returned", ["7", "-1", "'0'", "1.0"])
def test_custom_partition_out_of_range_raises_value_error_naming_it(
    tmp_path: Path, returned: str
) -> None:
    """A partition outside range(num_partitions) would silently mis-route or crash: name it."""
    body = (
        "def map(k, v):\n    for word in v.split():\n        yield word, 1\n"
        f"def partition(key, n):\n    return {returned}\n"
    )
    with pytest.raises(ValueError, match=r"partition\(.*returned") as info:
        map_job(tmp_path, body, num_reducers=2)
    assert returned in str(info.value)


def test_custom_partition_out_of_range_raises_value_error_with_a_small_buffer(tmp_path: Path) -> None:
    """The error a user gets must not depend on how much map output is buffered."""
    body = (
        "def map(k, v):\n    for word in v.split():\n        yield word, 1\n"
        "def partition(key, n):\n    return 7\n"
    )
    with pytest.raises(ValueError, match=r"partition\(.*returned 7") as info:
        map_job(tmp_path, body, num_reducers=2, buffer_records=1)
    assert not isinstance(info.value, TypeError)
    assert "(key, value) pairs" not in str(info.value)


COMBINE_OTHER_KEY = (
    "def map(k, v):\n    for word in v.split():\n        yield word, 1\n"
    "def combine(key, values):\n    yield key + 'x', sum(values)\n"
)


def test_combiner_yielding_another_key_raises(tmp_path: Path) -> None:
    """A combiner that changes keys would break the sort order of runs: fail the task."""
    with pytest.raises(ValueError, match="another key"):
        map_job(tmp_path, COMBINE_OTHER_KEY)


def test_combiner_yielding_another_key_raises_value_error_with_a_small_buffer(tmp_path: Path) -> None:
    """The documented ValueError must not turn into a misleading 'map must yield pairs' error."""
    with pytest.raises(ValueError, match="another key") as info:
        map_job(tmp_path, COMBINE_OTHER_KEY, buffer_records=4)
    assert "(key, value) pairs" not in str(info.value)


# ---------------------------------------------------------------- run_inline


COUNTING_JOB = WORDCOUNT_COMBINER + """
import pytxmr

def map(key, value):
    pytxmr.counter("user", "lines")
    for word in value.split():
        yield word, 1
"""


def write_job(tmp_path: Path, source: str) -> str:
    path = tmp_path / "job.py"
    path.write_text(source)
    return str(path)


def test_run_inline_writes_part_files_and_success(tmp_path: Path) -> None:
    """`run --inline` is the debugging path: same output layout as the cluster."""
    inputs = make_inputs(tmp_path)
    out = tmp_path / "out"
    run_inline(write_job(tmp_path, WORDCOUNT_COMBINER), inputs, str(out), num_reducers=3,
               split_size=8192)
    assert sorted(os.listdir(out)) == [
        "_PYTXMR_OUTPUT", "_SUCCESS", "part-00000", "part-00001", "part-00002"]
    assert (out / "_SUCCESS").read_bytes() == b""
    parts = [str(out / f"part-{p:05d}") for p in range(3)]
    assert counts_of(parts) == dict(reference_wordcount(inputs))


def test_run_inline_refuses_an_existing_output_without_overwrite(tmp_path: Path) -> None:
    """Overwriting results by accident loses data: refuse unless told, and leave them intact."""
    inputs = make_inputs(tmp_path, lines=20)
    job = write_job(tmp_path, WORDCOUNT)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep me")
    with pytest.raises(OutputExistsError):
        run_inline(job, inputs, str(out))
    assert os.listdir(out) == ["precious"]
    with pytest.raises(OutputExistsError, match="not a pytxmr output"):
        run_inline(job, inputs, str(out), overwrite=True)
    assert (out / "precious").read_text() == "keep me"
    (out / "precious").unlink()
    run_inline(job, inputs, str(out), overwrite=True)  # an empty directory is no one's data
    assert sorted(os.listdir(out)) == ["_PYTXMR_OUTPUT", "_SUCCESS", "part-00000"]


def test_run_inline_refuses_a_job_run_would_refuse_for_its_tasks(tmp_path: Path) -> None:
    """--split-size 1 meant as 1M: refused from the sizes, as `run`'s
    jobtracker refuses it (one byte a map took 94 s and 1.4 GB for 300 KB
    here), naming what its own default split (128 MiB) would make."""
    data = tmp_path / "in.txt"
    data.write_bytes(b"a b\n" * 750_000)  # 3 MB: 3 splits at a cluster's default for 4 slots
    out = tmp_path / "out"
    with pytest.raises(SubmissionError, match=r"would have 3,000,000 maps and 4 reduces, .*"
                                              r"\(the default would make 1 map\)$"):
        run_inline(write_job(tmp_path, WORDCOUNT), [str(data)], str(out), split_size=1, slots=4)
    assert not out.exists()


def test_run_inline_does_not_accumulate_counters_across_runs(tmp_path: Path) -> None:
    """Two inline jobs in one process must each report only their own counts."""
    inputs = make_inputs(tmp_path, lines=50)
    job = write_job(tmp_path, COUNTING_JOB)
    first = run_inline(job, inputs, str(tmp_path / "o1"))
    second = run_inline(job, inputs, str(tmp_path / "o2"))
    # CPU is measured, not counted: each run has its own, which differ.
    assert {r[FRAMEWORK].pop("cpu ms") >= 0 for r in (first, second)} == {True}
    assert first == second
    lines = sum(len(open(p, encoding="utf-8").read().splitlines()) for p in inputs)
    assert first["user"]["lines"] == lines
    assert first[FRAMEWORK]["map input records"] == lines


def test_run_inline_failure_leaves_no_success_marker(tmp_path: Path) -> None:
    """A failed job's output must never look usable."""
    inputs = make_inputs(tmp_path, lines=20)
    job = write_job(tmp_path, "def map(k, v):\n    yield v, 1\ndef reduce(k, vs):\n    raise RuntimeError('boom')\n    yield\n")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        run_inline(job, inputs, str(out))
    assert not (out / "_SUCCESS").exists()
    assert not (out / "_temporary").exists()


def test_a_buffer_over_the_memory_budget_spills_before_its_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large values: the map spills when its process is over the memory
    budget, long before the buffer's count, and the output is unchanged."""
    monkeypatch.setattr(mapper, "MEMORY_PROBE", 100)
    monkeypatch.setattr(mapper, "MIN_PROBE", 100)
    # Over budget, and growing at every look.
    rss = itertools.count(mapper.MEMORY_BUDGET + 1, mapper.MEMORY_SLACK + 1)
    monkeypatch.setattr(mapper, "resident_bytes", lambda: next(rss))
    spills = count_spills(monkeypatch)  # of pairs: the job has no combiner
    data = tmp_path / "in.txt"
    data.write_text("".join(f"k{i % 97} {'x' * 50}\n" for i in range(1000)))
    source = """
        def map(key, line):
            k, v = line.split()
            yield k, v

        def reduce(key, values):
            yield key, len(list(values))
    """
    parts, _ = run_job(tmp_path, source, [str(data)], split_size=1 << 20)
    assert spills[:-1] == [100] * 9 and len(spills) == 10  # 1,000 values, 100 at a time
    got = {k: int(v) for part in read_text_parts(parts) for k, v in part}
    assert got == collections.Counter(f"k{i % 97}" for i in range(1000))


def test_a_folding_combiner_s_buffer_over_the_memory_budget_spills_before_its_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-mapper combining with combiners.sum: map_final yields the map's
    own Counter, a million keys, while the process is over its budget. The
    running totals spilled only at the buffer's count (304 MB for a 209 MB
    Counter); now also when the memory grew, and the answer is the same."""
    monkeypatch.setattr(mapper, "MEMORY_PROBE", 100)
    monkeypatch.setattr(mapper, "MIN_PROBE", 100)
    rss = itertools.count(mapper.MEMORY_BUDGET + 1, mapper.MEMORY_SLACK + 1)
    monkeypatch.setattr(mapper, "resident_bytes", lambda: next(rss))
    spills = count_spills(monkeypatch)
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i % 10_000} w{i % 7}\n" for i in range(30_000)))
    source = """
        from collections import Counter

        from pytxmr import combiners

        counts = Counter()

        def map(key, line):
            counts.update(line.split())
            return ()

        def map_final():
            return counts.items()

        combine = combiners.sum
        reduce = combiners.sum
    """
    parts, _ = run_job(tmp_path, source, [str(data)], split_size=1 << 20)
    # 10,000 distinct keys, spilled at each look: a batch of map_final's.
    batch = mapper.SPLIT_BATCH
    assert spills == [batch, batch, 10_000 - 2 * batch]
    got = {k: int(v) for part in read_text_parts(parts) for k, v in part}
    assert got == collections.Counter(data.read_text().split())


def test_a_hook_that_yields_many_pairs_spills_between_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-mapper combining's map_final (or a streaming command's output once
    its input ended) yields a map's pairs at once: as one record they were
    held whole, the buffer never spilling (gigabytes); now the buffer
    spills between batches of them, and the answer is the same."""
    source = textwrap.dedent("""
        from collections import Counter

        counts = None

        def map_init():
            global counts
            counts = Counter()

        def map(offset, line):
            counts.update(line.split())
            return ()

        def map_final():
            for word, n in counts.items():
                for i in range(n):  # one pair a word's occurrence: many
                    yield word, 1

        def reduce(word, ones):
            yield word, sum(ones)
    """)
    job = resolve(load_module(source, "combining.py"))
    inputs = make_inputs(tmp_path, files=1, lines=3000)
    spilled: list[int] = []
    spill = mapper.MapOutputBuffer.spill_pairs

    def counted(self: Any, pairs: list[Any]) -> None:
        spilled.append(len(pairs))
        spill(self, pairs)

    monkeypatch.setattr(mapper.MapOutputBuffer, "spill_pairs", counted)
    counters = Counters()
    [split] = compute_splits(inputs, 1 << 30)
    out = run_map(job, split, 1, str(tmp_path / "m.data"), counters, buffer_records=1000)
    total = sum(reference_wordcount(inputs).values())
    assert sum(spilled) == total > 4 * mapper.SPLIT_BATCH
    # Spilled as the buffer filled (its limit grows while memory allows),
    # not once with every pair.
    assert len(spilled) >= 3 and max(spilled) < total // 2, spilled
    assert counters.get(FRAMEWORK, "map input records") == 3000  # the hooks' batches are not
    runs = [(out.data_path, *out.table[0][:2])]
    got = collections.Counter()
    for key, values in merge_runs(runs, record_sort_key(["str"])):
        got[key] += sum(values)
    assert got == reference_wordcount(inputs)


BYTES_LIKE_JOB = """
class Raw(bytes):
    pass


def map(k, line):
    yield "a", bytearray(b"x y")
    yield "b", memoryview(b"\\\\xff z")
    yield "c", [bytearray(b"in"), Raw(b"raw")]
    yield Raw(b"d"), Raw(b"sub")
"""


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_bytes_like_values_are_written_as_bytes_map_only_as_after_a_shuffle(
        tmp_path: Path, fmt: str) -> None:
    """A map-only job failed on a bytearray or memoryview ("cannot write
    bytearray as JSON"), and wrote a bytes subclass as JSON: the same job
    with a reduce, whose shuffle makes them bytes, wrote them as bytes."""
    data = tmp_path / "in.txt"
    data.write_text("one\n")
    job = tmp_path / "job.py"
    job.write_text(BYTES_LIKE_JOB + f"output_format = {fmt!r}\n")
    run_inline(str(job), [str(data)], str(tmp_path / "maponly"))
    job.write_text(BYTES_LIKE_JOB + f"output_format = {fmt!r}\n"
                   "def reduce(k, vs):\n    for v in vs:\n        yield k, v\n")
    run_inline(str(job), [str(data)], str(tmp_path / "shuffled"), num_reducers=1)

    def lines(out: str) -> list[str]:
        return sorted(line for part in (tmp_path / out).glob("part-*")
                      for line in part.read_text().splitlines())

    expected = {"text": ['a\tx y', 'b\t\\xff z', 'c\t["in", "raw"]', 'd\tsub'],
                "jsonl": ['["a", "x y"]', '["b", "\\\\xff z"]',
                          '["c", ["in", "raw"]]', '["d", "sub"]']}[fmt]
    assert lines("maponly") == lines("shuffled") == expected


def test_only_a_disk_error_inside_a_part_writer_is_named_by_the_part(tmp_path: Any) -> None:
    """A user's reduce that timed out on a lookup service said "OSError:
    [Errno None] the lookup service did not answer: '.../part-00000'",
    sending the user to the output's disk; ECONNREFUSED the same."""
    import errno

    from pytxmr.partfile import part_writer

    path = str(tmp_path / "part-00000")
    for raised in (TimeoutError("the lookup service did not answer"),
                   ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")):
        with pytest.raises(type(raised)) as caught:
            with part_writer(path, "text"):
                raise raised
        assert caught.value is raised
    with pytest.raises(OSError) as full:
        with part_writer(path, "text"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert full.value.filename == path


FILTERING_COMBINER = """
def map(offset, line):
    for word in line.split():
        yield "every word", word
        yield word, 1

def combine(key, values):
    for value in values:  # a filter that keeps all: a hot key's values pass on
        yield key, value

def reduce(key, values):
    yield key, sum(1 for _ in values)
"""


def test_a_map_merges_many_spills_in_passes_and_a_combiner_s_values_in_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of spills were merged at once, a frame of each in memory;
    and a combiner that passes a hot key's values on gave all of them, of
    every spill, as one list. Merged in passes of MERGE_FACTOR runs, its
    values cut into records of FRAME_RECORDS, the answer is the same."""
    import pytxmr.records as records

    monkeypatch.setattr(mapper, "MERGE_FACTOR", 3)
    monkeypatch.setattr(mapper, "FRAME_RECORDS", 50)
    merged_at_once: list[int] = []
    spills: list[int] = []

    def merge(runs: Any, sort_key: Any) -> Any:
        merged_at_once.append(len(runs))
        return merge_runs(runs, sort_key)

    def passes(runs: Any, *args: Any) -> Any:
        spills.append(len(runs))
        return reduce_run_count(runs, *args)

    monkeypatch.setattr(mapper, "merge_runs", merge)
    monkeypatch.setattr(mapper, "reduce_run_count", passes)
    rng = random.Random(5)
    path = tmp_path / "in.txt"
    path.write_text("".join(" ".join(rng.choices(["ant", "bee", "cat", "dog", "elk"], k=10))
                            + "\n" for _ in range(600)))
    job = resolve(load_module(FILTERING_COMBINER, str(tmp_path / "job.py")))
    [split] = compute_splits([str(path)], 1 << 20)
    counters = Counters()
    out = run_map(job, split, 1, str(tmp_path / "map.data"), counters, buffer_records=400)
    assert spills and spills[0] > 3, spills  # more than MERGE_FACTOR
    assert merged_at_once and max(merged_at_once) <= 3, merged_at_once
    frames = list(records.read_frames(open(out.data_path, "rb"), *out.table[0][:2]))
    assert max(len(vs) for frame in frames for _, vs in frame) <= 50
    # A frame is cut once it has FRAME_RECORDS values: with its last record's.
    assert max(sum(len(vs) for _, vs in frame) for frame in frames) < records.FRAME_RECORDS + 50
    part = str(tmp_path / "out" / "part-00000")
    run_reduce(job, [(out.data_path, *out.table[0][:2])], out.kinds, part, str(tmp_path),
               counters)
    words = path.read_text().split()
    expected = {**collections.Counter(words), "every word": len(words)}
    with open(part) as f:
        assert {k: int(v) for k, v in (line.rstrip("\n").split("\t") for line in f)} == expected


def test_big_values_go_a_frame_s_bytes_at_a_time(tmp_path: Path) -> None:
    """A filtering combiner's values, and a step's pairs for the next step,
    were held 4,096 at a time: 400 MB of 100 KB values."""
    from pytxmr.mapper import combined_chunks
    from pytxmr.records import FRAME_TARGET_BYTES
    from segments import iter_segment_file
    from pytxmr.stepdata import PairWriter

    big = ["v" * 100_000] * 100
    chunks = list(combined_chunks("k", iter(big), lambda k, vs: ((k, v) for v in vs)))
    assert max(len(c) for c in chunks) <= FRAME_TARGET_BYTES // 100_000 + 1
    assert [v for c in chunks for v in c] == big
    with open(tmp_path / "step", "wb") as f:
        writer = PairWriter(f)
        for i, value in enumerate(big):
            writer.add((i, value))
            assert len(writer._batch) <= FRAME_TARGET_BYTES // 100_000 + 1
        writer.flush()
    assert [(k, v) for k, vs in iter_segment_file(str(tmp_path / "step")) for v in vs] == \
        list(enumerate(big))


def test_a_spill_of_large_keys_makes_no_copy_of_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffer full of 10 KB keys, spilled to two partitions: their UTF-8
    copy doubled the memory the buffer held (a map at 300 MB for its
    160 MB budget). The spill is sorted and partitioned all the same."""
    import tracemalloc

    from segments import iter_segment_file

    job = resolve(load_module("def map(k, v):\n    yield v, 1\n", str(tmp_path / "job.py")))
    buffer = mapper.MapOutputBuffer(job, 2, str(tmp_path), Counters())
    rng = random.Random(5)
    keys = [f"{rng.randrange(10**6):06d}é" * 1500 for _ in range(800)]  # 8.4 MB, not ASCII
    pairs = [(k, 1) for k in keys]
    tracemalloc.start()
    try:
        buffer.spill_pairs(pairs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes traced to spill 8.4 MB of keys"
    path, table = buffer._spills[0]
    got = [[] for _ in table]
    for p, (offset, length, _) in enumerate(table):
        got[p] = [k for k, vs in iter_segment_file(path, offset, length) for _ in vs]
    for p, part in enumerate(got):
        assert part == sorted(k for k in keys if default_partition(k, 2) == p)


WORDCOUNT_MAP_FINAL = """
from collections import Counter

totals = Counter()

def map(key, line):
    totals.update(line.split())
    return ()

def map_final():
    yield from totals.items()

def reduce(key, values):
    yield key, sum(values)
"""


@pytest.mark.parametrize("sort_values", [False, True], ids=["plain", "sort_values"])
@pytest.mark.parametrize("api", ["map_split", "map_final"])
def test_a_dict_of_many_keys_is_spilled_in_runs_kept_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str, sort_values: bool) -> None:
    """In-mapper combining (a map_split returning its Counter's items, or a
    map_final yielding them): 1.3 million words spilled at once took a map
    to 350 MB. A spill writes SPILL_RUN_KEYS keys at a time; the runs of
    one dict hold distinct keys, so the map keeps them apart, unmerged."""
    monkeypatch.setattr(mapper, "SPILL_RUN_KEYS", 100)
    spills = count_spills(monkeypatch)
    merges = []
    real_merge = mapper.MapOutputBuffer._merge_spills
    monkeypatch.setattr(mapper.MapOutputBuffer, "_merge_spills",
                        lambda self, path: merges.append(path) or real_merge(self, path))
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i % 997} v{i % 13} w{i * 7 % 991}\n" for i in range(6000)))
    source = (WORDCOUNT_MAP_SPLIT if api == "map_split" else WORDCOUNT_MAP_FINAL) + (
        f"from pytxmr import combiners\ncombine = combiners.sum\nsort_values = {sort_values}\n")
    parts, _ = run_job(tmp_path, source, [str(data)], num_reducers=3, split_size=1 << 20)
    assert counts_of(parts) == collections.Counter(data.read_text().split())
    distinct = len(set(data.read_text().split()))
    assert spills == [100] * (distinct // 100) + [distinct % 100]
    assert not merges


def test_a_buffer_of_values_lists_is_spilled_as_one_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only spills of one value a key (a folding combiner's totals, a
    map_split's dict) are cut into SPILL_RUN_KEYS runs: cutting a combiner's
    buffer too multiplied a reduce's runs, and took jobs past the 16 spills
    a map keeps apart."""
    monkeypatch.setattr(mapper, "SPILL_RUN_KEYS", 100)
    spills = count_spills(monkeypatch)
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i % 997} v{i % 13}\n" for i in range(6000)))
    parts, _ = run_job(tmp_path, WORDCOUNT_COMBINER, [str(data)], num_reducers=3,
                       split_size=1 << 20)
    assert counts_of(parts) == collections.Counter(data.read_text().split())
    assert spills == [len(set(data.read_text().split()))]
