"""Unit tests of the example jobs in examples/, without any daemon.

Each example's functions are driven by a tiny in-test MapReduce (map per
split, combine, partition, group, sort, reduce) and compared with an answer
computed independently with Counter, sets and dicts. The framework itself is
tested elsewhere; these tests pin down what the examples compute.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import types
import zlib
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA = ROOT / "data"


def load_example(name: str) -> types.ModuleType:
    """Import examples/<name>.py from its path (examples/ is not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"pytxmr_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wordcount() -> types.ModuleType:
    return load_example("wordcount")


@pytest.fixture(scope="module")
def inverted_index() -> types.ModuleType:
    return load_example("inverted_index")


# Module level: Hypothesis tests cannot take function-scoped fixtures.
_SORT = load_example("sort")


@pytest.fixture(scope="module")
def sort_job() -> types.ModuleType:
    return _SORT


@pytest.fixture(scope="module")
def join() -> types.ModuleType:
    return load_example("join")


def _hash_partition(key: Any, num_partitions: int) -> int:
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass")) % num_partitions


def _combine_group(combine: Any, key: Any, values: list[Any]) -> list[Any]:
    out = []
    for ckey, cvalue in combine(key, iter(values)):
        assert ckey == key, "a combiner keeps the key it was given"
        out.append(cvalue)
    return out


def run_mapreduce(
    job: types.ModuleType,
    splits: Iterable[Iterable[tuple[Any, Any]]],
    num_partitions: int = 1,
    combine_rounds: int = 1,
) -> list[list[tuple[Any, Any]]]:
    """Run ``job`` over ``splits`` (one list of input records per map task).

    Returns the reduce output of each partition, in order. ``combine_rounds``
    0 skips the combiner; 2 combines two halves of each key's values, then
    combines the results again (a combiner may run any number of times).
    """
    partition = getattr(job, "partition", None) or _hash_partition
    combine = getattr(job, "combine", None)
    shuffled: list[dict[Any, list[Any]]] = [defaultdict(list) for _ in range(num_partitions)]
    for split in splits:
        groups: dict[Any, list[Any]] = defaultdict(list)
        for key, value in split:
            for mkey, mvalue in job.map(key, value):
                groups[mkey].append(mvalue)
        if combine is not None and combine_rounds > 0:
            for key, values in list(groups.items()):
                if combine_rounds >= 2:
                    half = len(values) // 2
                    values = _combine_group(combine, key, values[:half]) + _combine_group(
                        combine, key, values[half:]
                    )
                groups[key] = _combine_group(combine, key, values)
        for key, values in groups.items():
            p = partition(key, num_partitions)
            assert 0 <= p < num_partitions
            shuffled[p][key].extend(values)
    outputs = []
    for part in shuffled:
        out: list[tuple[Any, Any]] = []
        for key in sorted(part):
            out.extend(job.reduce(key, iter(part[key])))
        outputs.append(out)
    return outputs


def line_records(lines: list[str]) -> list[tuple[int, str]]:
    """What the default reader gives: (byte offset of the line, line)."""
    records = []
    offset = 0
    for line in lines:
        records.append((offset, line))
        offset += len(line.encode("utf-8")) + 1
    return records


def flatten(outputs: list[list[tuple[Any, Any]]]) -> list[tuple[Any, Any]]:
    return [pair for part in outputs for pair in part]


TEXT = [
    "the cat sat on the mat",
    "The Cat  sat\ton the\u00a0mat, again",
    "",
    "   ",
    "na\u00efve caf\u00e9 r\u00e9sum\u00e9 the \u201cquoted\u201d words",
    "the the the",
    "\u4e2d\u6587 \u0394\u03b5\u03bb\u03c4\u03b1 zebra Zebra 42 -dash- (paren)",
]


def test_example_docstrings_name_runnable_commands() -> None:
    """Each example documents a command whose job and input files exist."""
    for name in ("wordcount", "inverted_index", "sort", "join", "top_words", "threshold",
                 "json_events"):
        doc = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
        match = re.search(rf"python -m pytxmr run (examples/{name}\.py) (.+?) -o \S+", doc)
        assert match, f"{name}.py has no 'python -m pytxmr run' command"
        for path in [match.group(1), *match.group(2).split()]:
            assert (ROOT / path).is_file(), f"{name}.py's command names missing {path}"


def test_wordcount_docstring_has_the_readme_command(wordcount: types.ModuleType) -> None:
    """The README's first command is the one the example itself documents."""
    assert (
        "python -m pytxmr run examples/wordcount.py data/sample.txt -o /tmp/wc"
        in wordcount.__doc__
    )


@pytest.mark.parametrize("combine_rounds", [0, 1, 2])
@pytest.mark.parametrize("num_partitions", [1, 3])
def test_wordcount_counts_whitespace_split_tokens(
    wordcount: types.ModuleType, combine_rounds: int, num_partitions: int
) -> None:
    """Counts equal Counter over str.split() tokens, however often combine runs."""
    splits = [line_records(TEXT[:3]), line_records(TEXT[3:]), line_records(TEXT)]
    expected = Counter(w for split in splits for _, line in split for w in line.split())
    result = flatten(run_mapreduce(wordcount, splits, num_partitions, combine_rounds))
    assert len(result) == len(expected), "one output line per distinct word"
    assert dict(result) == expected


def test_wordcount_on_sample_text(wordcount: types.ModuleType) -> None:
    """The shipped sample gives the same counts as a plain Counter."""
    lines = (DATA / "sample.txt").read_text(encoding="utf-8").splitlines()
    splits = [line_records(lines[i : i + 50]) for i in range(0, len(lines), 50)]
    expected = Counter(w for line in lines for w in line.split())
    assert dict(flatten(run_mapreduce(wordcount, splits, num_partitions=4))) == expected


def test_sample_text_is_a_few_hundred_lines_of_prose() -> None:
    """data/sample.txt stays the small English input the README promises."""
    text = (DATA / "sample.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert 200 <= len(lines) <= 400
    assert text.endswith("\n")
    assert Counter(text.split())["the"] > 100


FILES = {
    "/data/a/alpha.txt": ["the cat sat", "the cat ran", "cat cat cat"],
    "/data/b/beta.txt": ["a dog ran", "", "The dog"],
    "/data/gamma.log": ["cat and dog", "gamma only words"],
}


def path_records(files: dict[str, list[str]]) -> list[list[tuple[str, str]]]:
    """What pytxmr.readers.path_lines gives, one split per file."""
    return [[(path, line) for line in lines] for path, lines in files.items()]


def test_inverted_index_uses_the_path_lines_reader(inverted_index: types.ModuleType) -> None:
    """The index needs the file of each line, which only path_lines gives."""
    import pytxmr.readers

    assert inverted_index.reader is pytxmr.readers.path_lines


@pytest.mark.parametrize("combine_rounds", [0, 1, 2])
def test_inverted_index_lists_sorted_base_names(
    inverted_index: types.ModuleType, combine_rounds: int
) -> None:
    """Every word maps to the sorted, distinct base names of the files holding it."""
    expected: dict[str, set[str]] = defaultdict(set)
    for path, lines in FILES.items():
        for line in lines:
            for word in line.split():
                expected[word].add(os.path.basename(path))
    outputs = run_mapreduce(
        inverted_index, path_records(FILES), num_partitions=2, combine_rounds=combine_rounds
    )
    result = flatten(outputs)
    assert len(result) == len(expected)
    assert dict(result) == {w: sorted(names) for w, names in expected.items()}
    assert dict(result)["cat"] == ["alpha.txt", "gamma.log"]


def test_inverted_index_one_split_spread_over_several_map_tasks(
    inverted_index: types.ModuleType,
) -> None:
    """A file read by two map tasks still appears once in each word's list."""
    path = "/data/a/alpha.txt"
    records = [(path, line) for line in FILES[path]]
    splits = [records[:1], records[1:]]
    result = dict(flatten(run_mapreduce(inverted_index, splits)))
    assert result == {w: ["alpha.txt"] for w in ("the", "cat", "sat", "ran")}


def test_inverted_index_combiner_emits_each_word_file_pair_once(
    inverted_index: types.ModuleType,
) -> None:
    """After combining, a map sends one (word, file) record, not one per line."""
    records = [("/x/f.txt", "cat cat"), ("/x/f.txt", "cat dog"), ("/x/g.txt", "cat")]
    groups: dict[str, list[str]] = defaultdict(list)
    for key, value in records:
        for word, name in inverted_index.map(key, value):
            groups[word].append(name)
    assert Counter(groups["cat"]) == {"f.txt": 2, "g.txt": 1}, "map dedups within a line"
    combined = {
        w: sorted(_combine_group(inverted_index.combine, w, vs)) for w, vs in groups.items()
    }
    assert combined == {"cat": ["f.txt", "g.txt"], "dog": ["f.txt"]}


SORT_WORDS = [
    "apple", "Apple", "banana", "zebra", "Zebra", "", "a", "aa", "\u00e9t\u00e9",
    "\u00c9cole", "\u4e2d\u6587", "\u201cquoted\u201d", "42", "-dash", "(paren)", "_under",
    "{brace}", "~tilde", "\x7fdel", "mango", "Mango", "quince", "x", "y", "\U0001f600",
]


@pytest.mark.parametrize("num_partitions", [1, 2, 3, 4, 7, 16, 100])
@pytest.mark.parametrize("combine_rounds", [0, 1])
def test_sort_concatenated_parts_are_globally_sorted(
    sort_job: types.ModuleType, num_partitions: int, combine_rounds: int
) -> None:
    """part-00000, part-00001, ... read in order give every distinct word sorted."""
    rng = random.Random(num_partitions)
    words = [w for w in SORT_WORDS if w] * 3
    rng.shuffle(words)
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    splits = [line_records(lines[: len(lines) // 2]), line_records(lines[len(lines) // 2 :])]
    expected = Counter(w for line in lines for w in line.split())
    result = flatten(run_mapreduce(sort_job, splits, num_partitions, combine_rounds))
    assert [w for w, _ in result] == sorted(expected)
    assert dict(result) == expected


def test_sort_has_several_reducers_by_default(sort_job: types.ModuleType) -> None:
    """With one reducer the custom partitioner would show nothing."""
    assert isinstance(sort_job.num_reducers, int) and sort_job.num_reducers > 1


def test_sort_spreads_lowercase_english_over_reducers(sort_job: types.ModuleType) -> None:
    """The key ranges give each of four reducers some of a-z (no idle reducer)."""
    used = {sort_job.partition(chr(c), 4) for c in range(ord("a"), ord("z") + 1)}
    assert used >= {1, 2, 3}


@pytest.mark.parametrize("num_partitions", [1, 2, 3, 4, 5, 8, 31, 1000])
def test_sort_partition_monotone_over_first_characters(
    sort_job: types.ModuleType, num_partitions: int
) -> None:
    """Single-character keys in code point order get non-decreasing partitions."""
    code_points = [*range(0, 0x800), *range(0x800, 0x110000, 251), 0x10FFFF]
    parts = [sort_job.partition(chr(cp), num_partitions) for cp in code_points]
    assert sort_job.partition("", num_partitions) == 0
    assert all(0 <= p < num_partitions for p in parts)
    assert parts == sorted(parts)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=8),
    st.text(max_size=8),
    st.integers(min_value=1, max_value=10_000),
)
def test_sort_partition_is_monotone_and_in_range(k1: str, k2: str, num_partitions: int) -> None:
    """k1 <= k2 implies partition(k1) <= partition(k2), both in range(n)."""
    p1 = _SORT.partition(k1, num_partitions)
    p2 = _SORT.partition(k2, num_partitions)
    assert 0 <= p1 < num_partitions
    assert 0 <= p2 < num_partitions
    if k1 <= k2:
        assert p1 <= p2
    if k2 <= k1:
        assert p2 <= p1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=30), st.integers(min_value=1, max_value=12))
def test_sort_partition_sorts_random_lists(words: list[str], num_partitions: int) -> None:
    """Sorting by (partition, key) is the same as sorting by key."""
    by_partition = sorted(words, key=lambda w: (_SORT.partition(w, num_partitions), w))
    assert by_partition == sorted(words)


def read_join_data() -> dict[str, list[str]]:
    return {
        str((DATA / "join" / name).resolve()): (DATA / "join" / name)
        .read_text(encoding="utf-8")
        .splitlines()
        for name in ("users.tsv", "orders.tsv")
    }


def test_join_uses_the_path_lines_reader(join: types.ModuleType) -> None:
    """The side of a record is told by its file, which only path_lines gives."""
    import pytxmr.readers

    assert join.reader is pytxmr.readers.path_lines


def test_join_sample_data_has_the_promised_shape() -> None:
    """About 20 users and 100 orders, tab separated, ids shared."""
    data = read_join_data()
    users, orders = data.values()
    assert len(users) == 20
    assert len(orders) == 100
    assert all(line.count("\t") == 1 for line in users + orders)
    user_ids = {line.split("\t")[0] for line in users}
    order_ids = {line.split("\t")[0] for line in orders}
    assert user_ids - order_ids, "some user without orders shows the outer join"
    assert order_ids - user_ids, "some order of an unknown user shows it is dropped"


@pytest.mark.parametrize("combine_rounds", [0, 1, 2])
@pytest.mark.parametrize("num_partitions", [1, 4])
def test_join_totals_orders_per_user_name(
    join: types.ModuleType, combine_rounds: int, num_partitions: int
) -> None:
    """Every user appears once with the exact sum of their orders (0 if none)."""
    data = read_join_data()
    users_path, orders_path = data
    names = dict(line.split("\t") for line in data[users_path])
    cents: Counter[str] = Counter()
    for line in data[orders_path]:
        user_id, amount = line.split("\t")
        whole, frac = amount.split(".")
        cents[user_id] += int(whole) * 100 + int(frac)
    expected = {names[uid]: Decimal(cents[uid]) / 100 for uid in names}
    orders = [(orders_path, line) for line in data[orders_path]]
    splits = [
        [(users_path, line) for line in data[users_path]],
        orders[:40],
        orders[40:],
    ]
    result = flatten(run_mapreduce(join, splits, num_partitions, combine_rounds))
    assert len(result) == len(names)
    assert {name: Decimal(total) for name, total in result} == expected
    assert all(isinstance(total, str) for _, total in result)


def test_join_small_case_by_hand(join: types.ModuleType) -> None:
    """Cents add exactly; a user without orders gets 0; unknown users vanish."""
    orders = [("1", "0.10"), ("1", "0.20"), ("9", "5.00")]
    splits = [
        [("/in/users.tsv", "1\tAnn"), ("/in/users.tsv", "2\tBob"), ("/in/users.tsv", "")],
        [("/in/orders.tsv", f"{uid}\t{amount}") for uid, amount in orders],
    ]
    assert sorted(flatten(run_mapreduce(join, splits))) == [("Ann", "0.30"), ("Bob", "0")]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/in/products.tsv", "1\tlamp"),
        ("/in/users.tsv", "no tab here"),
        ("/in/orders.tsv", "1\tten euros"),
    ],
)
def test_join_rejects_bad_input_with_a_value_error(
    join: types.ModuleType, path: str, line: str
) -> None:
    """A line the join cannot place fails the task with a message naming it."""
    with pytest.raises(ValueError, match=re.escape(path)):
        list(join.map(path, line))


# ---------------------------------------------------------------- jobs of the authoring API
# Run by the framework's own code (pytxmr.testing.run_job, run_inline) on
# the sample data, each compared with a Counter.


def _sample_words() -> Counter[str]:
    return Counter((DATA / "sample.txt").read_text(encoding="utf-8").split())


@pytest.mark.parametrize("n, maps", [(1, 1), (10, 3), (1000, 4)])
def test_top_words_lists_the_most_frequent_first(n: int, maps: int) -> None:
    from pytxmr.testing import run_job

    lines = (DATA / "sample.txt").read_text(encoding="utf-8").splitlines()
    out = run_job(str(EXAMPLES / "top_words.py"), lines, args={"n": str(n)}, maps=maps)
    ranked = sorted(_sample_words().items(), key=lambda p: (-p[1], p[0]))
    assert out == ranked[:n]


@pytest.mark.parametrize("n", ["0", "-3"])
def test_top_words_refuses_fewer_than_one_word(n: str) -> None:
    """It failed with an IndexError in a task."""
    from pytxmr.jobargs import ArgumentError
    from pytxmr.testing import run_job

    with pytest.raises(ArgumentError, match=f"must be at least 1, not {n}"):
        run_job(str(EXAMPLES / "top_words.py"), ["a b"], args={"n": n})


def test_threshold_keeps_the_common_words(tmp_path: Path) -> None:
    from pytxmr.inline import run_inline

    run_inline(str(EXAMPLES / "threshold.py"), [str(DATA / "sample.txt")],
               str(tmp_path / "out"), args={"min_count": "20"}, num_reducers=2)
    got = dict(line.split("\t") for p in sorted((tmp_path / "out").glob("part-*"))
               for line in p.read_text(encoding="utf-8").splitlines())
    assert {w: int(n) for w, n in got.items()} == {
        w: n for w, n in _sample_words().items() if n >= 20}


def test_clean_words_uses_its_helper_and_its_stopwords(tmp_path: Path) -> None:
    from pytxmr.inline import run_inline

    job = EXAMPLES / "helper_module" / "clean_words.py"
    doc = job.read_text(encoding="utf-8")
    assert "--files examples/helper_module/stopwords.txt" in doc
    run_inline(str(job), [str(DATA / "sample.txt")], str(tmp_path / "out"),
               files=[str(EXAMPLES / "helper_module" / "stopwords.txt")])
    stop = set((EXAMPLES / "helper_module" / "stopwords.txt").read_text().split())
    text = (DATA / "sample.txt").read_text(encoding="utf-8").lower()
    expected = Counter(w for w in re.findall(r"[^\W_]+(?:'[^\W_]+)*", text) if w not in stop)
    got = {w: int(n) for p in sorted((tmp_path / "out").glob("part-*"))
           for w, n in (line.split("\t") for line in p.read_text(encoding="utf-8").splitlines())}
    assert got == dict(expected)


def test_json_events_totals_each_event_type(tmp_path: Path) -> None:
    from pytxmr.inline import run_inline

    run_inline(str(EXAMPLES / "json_events.py"), [str(DATA / "events.jsonl")],
               str(tmp_path / "out"), num_reducers=2, split_size=4096)
    got = dict(json.loads(line) for p in sorted((tmp_path / "out").glob("part-*"))
               for line in p.read_text(encoding="utf-8").splitlines())
    expected: dict[str, dict[str, int]] = defaultdict(lambda: {"events": 0, "cents": 0})
    for line in (DATA / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        expected[event["type"]]["events"] += 1
        expected[event["type"]]["cents"] += event.get("cents", 0)
    assert got == dict(expected) and len(got) == 4
