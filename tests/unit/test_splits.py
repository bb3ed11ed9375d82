"""Tests for pytxmr.splits (inputs, splits, line reading) and pytxmr.readers."""

from __future__ import annotations

import bz2
import gc
import gzip
import io
import json
import lzma
import os
import pickle
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytxmr import readers, splits, storage
from pytxmr.storage import InputFile, StorageError
from pytxmr.splits import (
    BLOCK_SIZE,
    DEFAULT_MAX_LINE_BYTES,
    InputDecodeError,
    InputError,
    RecordTooLarge,
    Split,
    compute_splits,
    is_compressed,
    read_chunks,
    read_lines,
)

# ---------------------------------------------------------------- helpers


def expand_inputs(patterns: list[str]) -> list[str]:
    return [f.path for f in storage.expand_inputs(patterns)]


def reference_lines(data: bytes, encoding: str | None = "utf-8"
                    ) -> list[tuple[int, str | bytes, bool]]:
    """(offset, line, terminated) of every line, computed the slow obvious
    way (the line left as bytes if ``encoding`` is None). A last line is
    terminated by a '\\r' as by a '\\n'."""
    out = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end]
        terminated = nl >= 0 or line.endswith(b"\r")
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append((pos, line if encoding is None else line.decode(encoding), terminated))
        pos = end + 1
    return out


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def all_lines(path: str, split_size: int, **kwargs: object) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for split in compute_splits([path], split_size):
        out.extend(read_lines(split, **kwargs))  # type: ignore[arg-type]
    return out


def whole(path: str) -> Split:
    return Split(0, path, 0, os.path.getsize(path), False)


# Pieces that make line boundaries interesting: CRLF, lone CR, empty lines,
# multi-byte characters that a split boundary can cut in the middle.
PIECES = st.sampled_from(["a", "bc", "é", "€", " ", "\n", "\n", "\r", "\r\n", "\n\n"])
CONTENTS = st.lists(PIECES, max_size=60).map(lambda ps: "".join(ps).encode("utf-8"))
BLOCK_SIZES = st.sampled_from([1, 2, 3, 5, 8, 64, BLOCK_SIZE])
#: The same, with bytes that are not UTF-8 (a job's input_bytes reads them).
BYTE_CONTENTS = st.lists(
    st.sampled_from([b"a", b"bc", "é".encode(), b"\xff", b"\xe9", b" ", b"\n", b"\r", b"\r\n"]),
    max_size=60).map(b"".join)

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ---------------------------------------------------------------- Split


def test_split_dict_round_trips_through_json() -> None:
    """Splits travel over PB and JSON as plain dicts; nothing may be lost on the way."""
    split = Split(3, "/data/in.txt", 100, 200, False, ("host-a", "host-b"))
    d = json.loads(json.dumps(split.to_wire()))
    assert Split.from_wire(d) == split
    assert d == {
        "index": 3,
        "path": "/data/in.txt",
        "start": 100,
        "end": 200,
        "whole": False,
        "hosts": ["host-a", "host-b"],
    }


def test_split_is_frozen_and_hashable() -> None:
    """The scheduler keys tables by split, so splits must be immutable values."""
    split = Split(0, "/a", 0, 10, False, ["h"])  # type: ignore[arg-type]
    assert split.hosts == ("h",)
    assert {split: 1}[Split(0, "/a", 0, 10, False, ("h",))] == 1
    assert split.length == 10
    with pytest.raises(AttributeError):
        split.start = 5  # type: ignore[misc]


def test_split_from_wire_defaults_hosts() -> None:
    """Hosts are optional locality hints; a peer may leave them out."""
    split = Split.from_wire({"index": 0, "path": "/a", "start": 0, "end": 0, "whole": False})
    assert split.hosts == ()


@pytest.mark.parametrize(
    "changes",
    [
        {"index": True},
        {"index": -1},
        {"start": "0"},
        {"path": "relative.txt"},
        {"path": 5},
        {"start": 20, "end": 10},
        {"whole": 1},
        {"whole": True, "start": 5},
        {"hosts": "host-a"},
        {"hosts": [1]},
    ],
)
def test_split_from_wire_rejects_malformed_data(changes: dict[str, object]) -> None:
    """Data from the wire is checked at the boundary, not deep inside a task."""
    d = {**Split(0, "/a", 0, 10, False).to_wire(), **changes}
    if d.get("whole") is True:
        d["end"] = 30
    with pytest.raises(ValueError):
        Split.from_wire(d)


def test_split_from_wire_names_a_missing_key() -> None:
    """A protocol mismatch must say which field is missing."""
    with pytest.raises(ValueError, match="'end'"):
        Split.from_wire({"index": 0, "path": "/a", "start": 0, "whole": False})


def test_input_errors_are_value_errors_that_pickle() -> None:
    """Task children report errors to their parent; path and offset must survive."""
    err = InputDecodeError("bad", path="/x", offset=7)
    assert isinstance(err, InputError) and isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.path, copy.offset) == (InputDecodeError, "bad", "/x", 7)


# ---------------------------------------------------------------- expand_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    for name in ["b.txt", "a.txt", ".hidden", "_SUCCESS"]:
        (tmp_path / "d" / name).write_text(name)
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "deep.txt").write_text("deep")
    (tmp_path / "x1.log").write_text("x1")
    (tmp_path / "x2.log").write_text("x2")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_hidden").mkdir()
    (tmp_path / "only_hidden" / "_logs").write_text("")
    return tmp_path


def test_expand_inputs_file_gives_its_absolute_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers may run in another directory: paths must be absolute."""
    monkeypatch.chdir(tree)
    assert expand_inputs(["x1.log"]) == [str(tree / "x1.log")]


def test_expand_inputs_directory_lists_visible_files_sorted(tree: Path) -> None:
    """Like Hadoop: a directory means its files, without _SUCCESS, dotfiles or subdirectories."""
    assert expand_inputs([str(tree / "d")]) == [str(tree / "d/a.txt"), str(tree / "d/b.txt")]


def test_expand_inputs_glob_is_sorted(tree: Path) -> None:
    """Deterministic order makes split numbers and outputs reproducible."""
    assert expand_inputs([str(tree / "x*.log")]) == [str(tree / "x1.log"), str(tree / "x2.log")]


def test_expand_inputs_glob_matching_a_directory_reads_its_files(tree: Path) -> None:
    """A glob over output directories of an earlier job must read their part files."""
    assert expand_inputs([str(tree / "[d]")]) == [str(tree / "d/a.txt"), str(tree / "d/b.txt")]


def test_expand_inputs_expands_tilde(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Users quote globs to keep them from the shell, which then leaves '~' to us."""
    monkeypatch.setenv("HOME", str(tree))
    assert expand_inputs(["~/x*.log", "~/d/a.txt"]) == [
        str(tree / "x1.log"),
        str(tree / "x2.log"),
        str(tree / "d" / "a.txt"),
    ]


def test_expand_inputs_keeps_pattern_order_and_drops_duplicates(tree: Path) -> None:
    """A file named twice must not be counted twice in the job's output."""
    got = expand_inputs([str(tree / "x2.log"), str(tree / "x*.log"), str(tree / "d" / "a.txt")])
    assert got == [str(tree / "x2.log"), str(tree / "x1.log"), str(tree / "d" / "a.txt")]


def test_expand_inputs_explicit_hidden_file_is_read(tree: Path) -> None:
    """Only directory listings skip hidden names; a file the user names is used."""
    assert expand_inputs([str(tree / "d" / "_SUCCESS")]) == [str(tree / "d" / "_SUCCESS")]


def test_expand_inputs_existing_name_with_glob_characters_is_literal(tmp_path: Path) -> None:
    """A file really named 'a[1].txt' must not be treated as a pattern that misses it."""
    path = tmp_path / "a[1].txt"
    path.write_text("x")
    assert expand_inputs([str(path)]) == [str(path)]


def test_expand_inputs_missing_path_names_it(tree: Path) -> None:
    """The user must see which input is wrong before any task runs."""
    with pytest.raises(StorageError, match="does not exist: .*nope.txt") as info:
        expand_inputs([str(tree / "x1.log"), str(tree / "nope.txt")])
    assert isinstance(info.value, ValueError)


def test_expand_inputs_glob_without_match_names_it(tree: Path) -> None:
    """An empty glob is almost always a typo; running on no data would hide it."""
    with pytest.raises(StorageError, match=r"\*.csv.*matches no files"):
        expand_inputs([str(tree / "*.csv")])


@pytest.mark.parametrize("name", ["empty", "only_hidden"])
def test_expand_inputs_directory_without_files_names_it(tree: Path, name: str) -> None:
    """An empty input directory usually means the previous job wrote elsewhere."""
    with pytest.raises(StorageError, match=f"{name} has no files"):
        expand_inputs([str(tree / name)])


def test_expand_inputs_rejects_a_bare_string(tree: Path) -> None:
    """A string is a sequence of characters; iterating it would expand each letter."""
    with pytest.raises(TypeError):
        expand_inputs(str(tree / "x1.log"))


# ---------------------------------------------------------------- compute_splits


def test_compute_splits_cuts_byte_ranges_last_one_shorter(tmp_path: Path) -> None:
    """Split sizes bound a map task's work; the remainder goes to a shorter last split."""
    path = write(tmp_path / "f.txt", b"x" * 25)
    assert [(s.index, s.start, s.end, s.whole) for s in compute_splits([path], 10)] == [
        (0, 0, 10, False),
        (1, 10, 20, False),
        (2, 20, 25, False),
    ]


def test_compute_splits_exact_multiple_has_no_empty_tail(tmp_path: Path) -> None:
    """An empty trailing split would be a useless map task."""
    path = write(tmp_path / "f.txt", b"x" * 20)
    assert [(s.start, s.end) for s in compute_splits([path], 10)] == [(0, 10), (10, 20)]


def test_compute_splits_numbers_consecutively_across_files(tmp_path: Path) -> None:
    """Split indexes name map tasks and their outputs: unique and dense from 0."""
    a = write(tmp_path / "a.txt", b"x" * 15)
    b = write(tmp_path / "b.txt", b"y" * 5)
    splits = compute_splits([a, b], 10)
    assert [(s.index, s.path, s.start, s.end) for s in splits] == [
        (0, a, 0, 10),
        (1, a, 10, 15),
        (2, b, 0, 5),
    ]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".GZ", ".zst"])
def test_compute_splits_compressed_file_is_one_whole_split(tmp_path: Path, suffix: str) -> None:
    """A compressed stream cannot be entered in the middle, so one task reads it all."""
    path = write(tmp_path / f"f.txt{suffix}", b"z" * 100)
    assert compute_splits([path], 10) == [Split(0, path, 0, 100, True)]
    assert is_compressed(path)


@pytest.mark.parametrize("url, compressed", [
    ("https://h/f.txt.gz?X-Amz-Signature=ab&t=1", True),
    ("http://h/f.txt.GZ#part", True),
    ("http://h/f.txt?name=f.gz", False),
    ("s3://b/f.txt?.gz", True),  # a key may hold a "?"
    ("/data/f.txt?.gz", True),  # and so may a file's name
])
def test_a_urls_suffix_is_its_paths(url: str, compressed: bool) -> None:
    """A signed URL's query hid the .gz before it: its bytes were read as lines."""
    assert is_compressed(url) is compressed


def test_an_archive_behind_a_query_is_refused() -> None:
    with pytest.raises(InputError, match="this format is not supported"):
        compute_splits([InputFile("http://h/a.tar.gz?x=1", 10)], 10)


def test_compute_splits_empty_file_gets_one_empty_split(tmp_path: Path) -> None:
    """Empty inputs must still give the job a map task, so empty jobs complete."""
    path = write(tmp_path / "empty.txt", b"")
    assert compute_splits([path], 10) == [Split(0, path, 0, 0, False)]
    assert list(read_lines(compute_splits([path], 10)[0])) == []


def test_compute_splits_makes_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Splits are read by workers that may have another working directory."""
    write(tmp_path / "f.txt", b"abc")
    monkeypatch.chdir(tmp_path)
    assert compute_splits(["f.txt"], 10)[0].path == str(tmp_path / "f.txt")


@pytest.mark.parametrize("size", [0, -1])
def test_compute_splits_rejects_non_positive_split_size(tmp_path: Path, size: int) -> None:
    """A zero split size would create infinitely many splits."""
    with pytest.raises(ValueError, match="split_size"):
        compute_splits([write(tmp_path / "f.txt", b"abc")], size)


def test_compute_splits_missing_file_names_it(tmp_path: Path) -> None:
    """A file deleted after expansion must still be reported by name."""
    with pytest.raises(InputError, match="gone.txt"):
        compute_splits([str(tmp_path / "gone.txt")], 10)


def test_compute_splits_refuses_unsupported_compression(tmp_path: Path) -> None:
    """Reading a .lz4 file as text would feed mappers garbage (silently with 'replace')."""
    with pytest.raises(InputError, match="not supported"):
        compute_splits([write(tmp_path / "f.lz4", b"\x04\x22\x4d\x18")], 10)
    # Archives of files, and suffixes no reader here takes, are no text either.
    for name in ("logs.tar.gz", "logs.tgz", "logs.tar", "f.txt.lzma", "f.txt.gzip"):
        with pytest.raises(InputError, match=f"{name}: this format is not supported \\(an "
                                             "archive of files, or a compression"):
            compute_splits([write(tmp_path / name, gzip.compress(b"a\n"))], 10)


def _reference_splits(files: list[storage.InputFile], split_size: int,
                      split_by: str) -> list[Split]:
    """compute_splits as its docstring says it, one case at a time."""
    out: list[Split] = []
    for f in files:
        if is_compressed(f.path) or not f.ranged:
            out.append(Split(len(out), f.path, 0, f.size, True))
        elif split_by == "file" or f.size == 0:
            out.append(Split(len(out), f.path, 0, f.size, False))
        else:
            start = 0
            while start < f.size:
                out.append(Split(len(out), f.path, start, min(start + split_size, f.size), False))
                start += split_size
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.booleans(), st.sampled_from(["a.txt", "b.gz"])),
                max_size=6),
       st.integers(1, 120), st.sampled_from(["lines", "file"]))
def test_compute_and_count_splits_agree_with_a_reference(
        files: list[tuple[int, bool, str]], split_size: int, split_by: str) -> None:
    """Splits of ranged, unranged, compressed and empty inputs, both
    policies; count_splits counts them from the sizes alone."""
    inputs = [storage.InputFile(f"/d/{i}-{name}", size, ranged)
              for i, (size, ranged, name) in enumerate(files)]
    expected = _reference_splits(inputs, split_size, split_by)
    assert compute_splits(inputs, split_size, split_by) == expected
    assert splits.count_splits(inputs, split_size, split_by) == len(expected)


# ---------------------------------------------------------------- read_lines: examples


def test_read_lines_yields_offsets_and_lines_without_newlines(tmp_path: Path) -> None:
    """The mapper gets Hadoop's (byte offset, line) pairs."""
    path = write(tmp_path / "f.txt", b"one\ntwo\n\nthree\n")
    assert list(read_lines(whole(path))) == [(0, "one"), (4, "two"), (8, ""), (9, "three")]


def test_read_lines_strips_one_carriage_return(tmp_path: Path) -> None:
    """Windows files must give the same lines; only one '\\r' is line-ending."""
    path = write(tmp_path / "f.txt", b"a\r\nb\r\r\nc\rd\n\r\n")
    assert list(read_lines(whole(path))) == [(0, "a"), (3, "b\r"), (7, "c\rd"), (11, "")]


def test_read_lines_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    """Many files lack a final newline; their last record must not be lost."""
    path = write(tmp_path / "f.txt", b"a\nlast\r")
    assert list(read_lines(whole(path))) == [(0, "a"), (2, "last")]


def test_read_lines_offsets_count_bytes_not_characters(tmp_path: Path) -> None:
    """Offsets must match byte positions in the file, also for UTF-8 text."""
    path = write(tmp_path / "f.txt", "é€\nà\n".encode())
    assert list(read_lines(whole(path))) == [(0, "é€"), (6, "à")]


def test_read_lines_line_starting_at_split_start_belongs_to_that_split(tmp_path: Path) -> None:
    """When the previous split ends exactly at a newline, the next line is ours, not skipped."""
    path = write(tmp_path / "f.txt", b"abc\ndef\nghi\n")
    assert list(read_lines(Split(0, path, 0, 4, False))) == [(0, "abc")]
    assert list(read_lines(Split(1, path, 4, 8, False))) == [(4, "def")]
    assert list(read_lines(Split(2, path, 8, 12, False))) == [(8, "ghi")]


def test_read_lines_skips_partial_first_line_and_finishes_last(tmp_path: Path) -> None:
    """A line belongs to the split it starts in, even if it ends in the next one."""
    path = write(tmp_path / "f.txt", b"abc\ndefgh\nij\n")
    assert list(read_lines(Split(0, path, 0, 6, False))) == [(0, "abc"), (4, "defgh")]
    assert list(read_lines(Split(1, path, 6, 13, False))) == [(10, "ij")]


def test_read_lines_split_inside_one_line_yields_nothing(tmp_path: Path) -> None:
    """A split that no line starts in must give an empty map task, not a duplicate."""
    path = write(tmp_path / "f.txt", b"a" * 100 + b"\nb\n")
    assert list(read_lines(Split(1, path, 10, 20, False))) == []
    assert list(read_lines(Split(1, path, 10, 20, False), block_size=3)) == []


def test_read_lines_every_split_size_on_tricky_content(tmp_path: Path) -> None:
    """Exhaustive over split and block sizes: no line lost or read twice at any boundary."""
    data = "x\r\n\n\réé\r\n€\n\nlong line here\nend\r".encode()
    path = write(tmp_path / "f.txt", data)
    expected = [(off, line) for off, line, _ in reference_lines(data)]
    for block_size in (1, 2, 3, 7, BLOCK_SIZE):
        for split_size in range(1, len(data) + 2):
            assert all_lines(path, split_size, block_size=block_size) == expected


@pytest.mark.parametrize(
    ("suffix", "opener"), [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)]
)
def test_read_lines_reads_compressed_files_whole(
    tmp_path: Path, suffix: str, opener: object
) -> None:
    """Compressed inputs are common; offsets are positions in the uncompressed text."""
    data = b"".join(b"line %d\r\n" % i for i in range(5000)) + b"tail"
    path = str(tmp_path / f"f{suffix}")
    with opener(path, "wb") as f:  # type: ignore[operator]
        f.write(data)
    [split] = compute_splits([path], 100)
    expected = [(off, line) for off, line, _ in reference_lines(data)]
    assert list(read_lines(split, block_size=1000)) == expected
    assert list(read_lines(split)) == expected


def test_read_lines_reads_multi_frame_zstd_whole(tmp_path: Path) -> None:
    """A .zst file of several frames (as pzstd and zstd -T write them) is read
    to its end, not to the end of its first frame."""
    zstd = _zstd()
    data = b"".join(b"line %d\n" % i for i in range(20000)) + b"tail"
    path = write(tmp_path / "f.txt.zst", zstd.compress(data[:70000]) + zstd.compress(data[70000:]))
    [split] = compute_splits([path], 100)
    expected = [(off, line) for off, line, _ in reference_lines(data)]
    assert list(read_lines(split, block_size=1000)) == expected


def _zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        zstd = pytest.importorskip("backports.zstd")
    return zstd


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
@pytest.mark.parametrize("read", ["all", "one line"])
def test_reading_a_compressed_input_closes_its_file(tmp_path: Path, suffix: str, read: str) -> None:
    """Closing a decompressor leaves the file it was given open: a
    descriptor, or a store's connection, held until it is collected."""
    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
                ".zst": lambda data: _zstd().compress(data)}[suffix]
    path = write(tmp_path / f"f.txt{suffix}", compress(b"a\nb\n"))
    [split] = compute_splits([path], 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        lines = read_lines(split)
        if read == "all":
            assert [line for _, line in lines] == ["a", "b"]
        else:
            assert next(lines) == (0, "a")
        del lines  # a map that stopped early
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("cut", ["last byte", "half", "all"])
def test_a_cut_zstd_input_fails_as_a_cut_gz_does(tmp_path: Path, cut: str) -> None:
    """zstandard's stream reader ended quietly where the bytes did: a job
    counted part of the file (or none of it) and succeeded."""
    zstd = _zstd()
    whole = zstd.compress(b"".join(b"line %d\n" % i for i in range(50000)))
    kept = {"last byte": len(whole) - 1, "half": len(whole) // 2, "all": 0}[cut]
    path = write(tmp_path / "cut.txt.zst", whole[:kept])
    with pytest.raises(InputError, match="cut.txt.zst: corrupt or truncated compressed input"):
        list(read_lines(compute_splits([path], 10)[0]))


def test_read_lines_whole_split_of_plain_file_reads_it_all(tmp_path: Path) -> None:
    """A whole-file split of an uncompressed file (e.g. made by hand) reads every line."""
    path = write(tmp_path / "f.txt", b"a\nb")
    assert list(read_lines(Split(0, path, 0, 1, True))) == [(0, "a"), (2, "b")]


def test_a_file_that_shrank_since_its_listing_fails_its_reader(tmp_path: Path) -> None:
    """Its splits were cut from its listed size: a local file truncated
    during the job was read in part, with no error (an object in a store
    failed so already)."""
    data = b"".join(b"line%02d\n" % i for i in range(20))
    path = write(tmp_path / "f.txt", data)
    cut = compute_splits([path], 20)
    whole = compute_splits([path], 1 << 20, split_by="file")[0]
    with open(path, "r+b") as f:
        f.truncate(10)
    for split in (cut[0], cut[-1], whole):
        with pytest.raises(InputError, match=r"f.txt: the file changed during the job: it "
                                             r"had at least \d+ bytes, it has 10 now"):
            list(read_lines(split))
    with pytest.raises(InputError, match="changed during the job"):
        splits.read_file_bytes(whole)
    # ...and one that shrinks while it is read ends before its split's end.
    with pytest.raises(storage.StorageError, match="f.txt: the file changed during the job: "
                                                   "it had at least 60 bytes, it has fewer now"):
        list(splits._segments_of(io.BytesIO(data[:10]), "f.txt", 40, 60, 1 << 20, 8))
    with pytest.raises(storage.StorageError, match="it had at least 40 bytes, it has fewer"):
        list(splits._segments_of(io.BytesIO(data[:10]), "f.txt", 0, 40, 1 << 20, 8))


def test_read_lines_corrupt_compressed_file_names_it(tmp_path: Path) -> None:
    """A truncated download must be reported as such, with its path."""
    full = gzip.compress(b"hello\n" * 10000)
    path = write(tmp_path / "bad.gz", full[: len(full) // 2])
    with pytest.raises(InputError, match="bad.gz: corrupt or truncated"):
        list(read_lines(compute_splits([path], 10)[0]))


# ---------------------------------------------------------------- read_lines: limits and errors


def test_read_lines_line_at_the_limit_is_accepted(tmp_path: Path) -> None:
    """The limit is inclusive, in bytes without the newline."""
    path = write(tmp_path / "f.txt", b"a" * 10 + b"\n" + b"b" * 10)
    for block_size in (4, BLOCK_SIZE):
        got = read_lines(whole(path), max_line_bytes=10, block_size=block_size)
        assert [len(line) for _, line in got] == [10, 10]


@pytest.mark.parametrize("block_size", [4, BLOCK_SIZE])
@pytest.mark.parametrize("tail", [b"\nok\n", b""])
def test_read_lines_too_long_line_names_file_and_offset(
    tmp_path: Path, block_size: int, tail: bytes
) -> None:
    """A binary or newline-free file must fail clearly, not exhaust the worker's memory."""
    path = write(tmp_path / "f.txt", b"short\n" + b"a" * 11 + tail)
    message = r"f\.txt: the line at byte offset 6 is longer"
    with pytest.raises(RecordTooLarge, match=message) as info:
        list(read_lines(whole(path), max_line_bytes=10, block_size=block_size))
    assert (info.value.path, info.value.offset) == (path, 6)
    assert isinstance(info.value, InputError)


def test_read_lines_too_long_line_bounds_memory(tmp_path: Path) -> None:
    """The reader gives up after max_line_bytes plus a block, not after the whole line."""
    path = write(tmp_path / "f.bin", b"\0" * (32 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLarge):
            list(read_lines(whole(path), max_line_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_read_lines_long_line_of_previous_split_is_skipped_without_error(tmp_path: Path) -> None:
    """Only the split owning an oversized line fails; the others skip it cheaply."""
    path = write(tmp_path / "f.txt", b"a" * 5000 + b"\nok\n")
    splits = compute_splits([path], 1000)
    with pytest.raises(RecordTooLarge):
        list(read_lines(splits[0], max_line_bytes=100))
    assert list(read_lines(splits[1], max_line_bytes=100)) == []
    assert list(read_lines(splits[-1], max_line_bytes=100)) == [(5001, "ok")]


def test_default_max_line_bytes_is_64_mib() -> None:
    """The documented default; jobs rely on long lines (e.g. JSON records) being accepted."""
    assert DEFAULT_MAX_LINE_BYTES == 64 << 20


@pytest.mark.parametrize("block_size", [3, BLOCK_SIZE])
def test_read_lines_decode_error_names_file_offset_and_remedy(
    tmp_path: Path, block_size: int
) -> None:
    """Dirty input is common: the user must learn where it is and how to tolerate it."""
    path = write(tmp_path / "f.txt", b"good\nalso good\nbad \xff here\nfine\n")
    with pytest.raises(InputDecodeError) as info:
        list(read_lines(whole(path), block_size=block_size))
    message = str(info.value)
    assert f"{path}: cannot decode the line at byte offset 15 as utf-8" in message
    assert 'encoding_errors = "replace"' in message and "surrogateescape" in message
    assert (info.value.path, info.value.offset) == (path, 15)


def test_read_lines_replace_and_surrogateescape_tolerate_bad_bytes(tmp_path: Path) -> None:
    """The documented remedies must work, and surrogateescape must keep the raw bytes."""
    path = write(tmp_path / "f.txt", b"ok\nbad \xff\r\n\xe2\x82\nz")
    assert list(read_lines(whole(path), errors="replace")) == [
        (0, "ok"),
        (3, "bad \ufffd"),
        (10, "\ufffd"),
        (13, "z"),
    ]
    lines = [line for _, line in read_lines(whole(path), errors="surrogateescape")]
    raw = [line.encode("utf-8", "surrogateescape") for line in lines]
    assert raw == [b"ok", b"bad \xff", b"\xe2\x82", b"z"]


def test_read_lines_other_ascii_compatible_encodings(tmp_path: Path) -> None:
    """Legacy inputs (Latin-1, Shift-JIS) must decode with byte offsets intact."""
    path = write(tmp_path / "f.txt", "café\nnaïve\r\n".encode("latin-1"))
    assert list(read_lines(whole(path), encoding="latin-1")) == [(0, "café"), (5, "naïve")]
    path = write(tmp_path / "j.txt", "日本\n語\n".encode("shift_jis"))
    assert list(read_lines(whole(path), encoding="shift_jis")) == [(0, "日本"), (5, "語")]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoding": "utf-16"}, "not ASCII-compatible"),
        ({"encoding": "no-such-codec"}, "unknown encoding"),
        ({"errors": "no-such-handler"}, "unknown encoding error handler"),
        ({"max_line_bytes": 0}, "max_line_bytes"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_read_lines_rejects_bad_options_at_call_time(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    """Job configuration mistakes are reported before reading, with a clear message."""
    path = write(tmp_path / "f.txt", b"abc\n")
    with pytest.raises(ValueError, match=match):
        read_lines(whole(path), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- read_chunks


def test_read_chunks_groups_whole_lines(tmp_path: Path) -> None:
    """Batch mappers get whole lines only, normalised to '\\n' endings."""
    path = write(tmp_path / "f.txt", b"aa\r\nbb\ncc\ndd")
    assert list(read_chunks(whole(path), target_bytes=5)) == [(0, "aa\nbb\n"), (7, "cc\ndd")]
    assert list(read_chunks(whole(path))) == [(0, "aa\nbb\ncc\ndd")]


def test_undecoded_chunks_are_whole_lines_of_bytes(tmp_path: Path) -> None:
    """The bytes of a job's input_bytes: not decoded, so not refused, and
    with '\\n' line ends as the text's."""
    path = write(tmp_path / "f.txt", b"a\xff\r\nbb\ncc\r")
    assert list(read_chunks(whole(path), target_bytes=5, encoding=None)) == [
        (0, b"a\xff\nbb\n"), (7, b"cc\n")]
    assert list(read_lines(whole(path), None)) == [(0, b"a\xff"), (4, b"bb"), (7, b"cc")]


def test_read_chunks_keep_an_empty_last_line_ended_by_a_carriage_return(
        tmp_path: Path) -> None:
    """'\\r' alone on the last line is an empty line to read_lines, so the
    chunk's text keeps it: a map_split must not lose a record a map gets."""
    path = write(tmp_path / "f.txt", b"a\nb\n\r")
    assert [line for _, line in read_lines(whole(path))] == ["a", "b", ""]
    assert list(read_chunks(whole(path))) == [(0, "a\nb\n\n")]
    assert list(read_chunks(whole(path), encoding=None)) == [(0, b"a\nb\n\n")]
    last = write(tmp_path / "g.txt", b"a\nlast\r")
    assert list(read_chunks(whole(last))) == [(0, "a\nlast\n")]


def test_read_chunks_decode_error_names_the_line(tmp_path: Path) -> None:
    """Chunked reading must point at the bad line as precisely as read_lines."""
    path = write(tmp_path / "f.txt", b"good\nbad \xff\n")
    with pytest.raises(InputDecodeError, match="byte offset 5"):
        list(read_chunks(whole(path)))


def test_read_chunks_rejects_zero_target(tmp_path: Path) -> None:
    """A zero target would make empty chunks forever."""
    with pytest.raises(ValueError, match="target_bytes"):
        read_chunks(whole(write(tmp_path / "f.txt", b"a\n")), target_bytes=0)


# ---------------------------------------------------------------- properties


@PROPERTY
@given(data=CONTENTS, split_size=st.integers(1, 70), block_size=BLOCK_SIZES)
def test_no_line_lost_or_duplicated_for_any_split_size(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, split_size: int, block_size: int
) -> None:
    """The core guarantee of splitting: each line is read once, by the split it starts in."""
    path = write(tmp_path_factory.mktemp("p") / "f.txt", data)
    got = []
    for split in compute_splits([path], split_size):
        lines = list(read_lines(split, block_size=block_size))
        assert all(split.start <= off < split.end for off, _ in lines)
        got.extend(lines)
    assert got == [(off, line) for off, line, _ in reference_lines(data)]


@PROPERTY
@given(
    data=CONTENTS,
    split_size=st.integers(1, 70),
    target=st.integers(1, 40),
    block_size=BLOCK_SIZES,
)
def test_read_chunks_text_is_read_lines_joined(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    split_size: int,
    target: int,
    block_size: int,
) -> None:
    """Batch and per-line mappers must see exactly the same records."""
    path = write(tmp_path_factory.mktemp("p") / "f.txt", data)
    terminated = {off: term for off, _, term in reference_lines(data)}
    for split in compute_splits([path], split_size):
        lines = list(read_lines(split))
        chunks = list(read_chunks(split, target, block_size=block_size))
        k = 0
        for i, (off, text) in enumerate(chunks):
            # A chunk holds the lines from its offset up to the next chunk's.
            next_off = chunks[i + 1][0] if i + 1 < len(chunks) else split.end + len(data)
            n = sum(1 for line_off, _ in lines[k:] if line_off < next_off)
            group = lines[k : k + n]
            assert group and off == group[0][0]
            last_newline = "\n" if terminated[group[-1][0]] else ""
            assert text == "\n".join(line for _, line in group) + last_newline
            # ...and a map_split splitting it at '\n' gets them back.
            body = text[:-1] if text.endswith("\n") else text
            assert body.split("\n") == [line for _, line in group]
            if i + 1 < len(chunks):  # all but the last reach the target size
                assert next_off - off >= target
            k += n
        assert k == len(lines)


@PROPERTY
@given(data=BYTE_CONTENTS, split_size=st.integers(1, 70), target=st.integers(1, 40),
       block_size=BLOCK_SIZES)
def test_undecoded_lines_and_chunks_are_the_bytes_of_the_decoded_ones(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, split_size: int, target: int,
    block_size: int,
) -> None:
    """encoding None (a job's input_bytes) reads the same lines and chunks,
    as bytes: Latin-1 decodes every byte to one character, so its str
    lines encoded back are the reference, whatever the bytes."""
    path = write(tmp_path_factory.mktemp("p") / "f.txt", data)
    got = []
    for split in compute_splits([path], split_size):
        lines = list(read_lines(split, None, block_size=block_size))
        assert lines == [(off, line.encode("latin-1"))
                         for off, line in read_lines(split, "latin-1", block_size=block_size)]
        got.extend(lines)
        chunks = list(read_chunks(split, target, None, block_size=block_size))
        assert chunks == [(off, text.encode("latin-1")) for off, text in
                          read_chunks(split, target, "latin-1", block_size=block_size)]
    assert got == [(off, line) for off, line, _ in reference_lines(data, None)]


@settings(PROPERTY, max_examples=50)
@given(data=CONTENTS, block_size=BLOCK_SIZES)
def test_compressed_whole_split_matches_reference(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, block_size: int
) -> None:
    """Compressed inputs obey the same line rules as plain ones."""
    path = write(tmp_path_factory.mktemp("p") / "f.gz", gzip.compress(data))
    [split] = compute_splits([path], 1)
    assert list(read_lines(split, block_size=block_size)) == [
        (off, line) for off, line, _ in reference_lines(data)
    ]


# ---------------------------------------------------------------- readers


def test_lines_reader_is_read_lines(tmp_path: Path) -> None:
    """The default reader gives Hadoop's (offset, line) pairs."""
    path = write(tmp_path / "f.txt", b"a\nb\n")
    assert list(readers.lines(whole(path), "utf-8", "strict")) == [(0, "a"), (2, "b")]


def test_path_lines_reader_keys_lines_by_file(tmp_path: Path) -> None:
    """An inverted index needs to know which file each line came from."""
    path = write(tmp_path / "f.txt", b"a\r\n\xff\n")
    got = readers.path_lines(whole(path), "utf-8", "replace")
    assert list(got) == [(path, "a"), (path, "\ufffd")]


# ---------------------------------------------------------------- architecture


def test_pure_modules_do_not_import_twisted() -> None:
    """Task children import these modules; Twisted would cost start-up time and couple layers."""
    code = (
        "import sys, pytxmr.splits, pytxmr.readers, pytxmr.sizes; "
        "print([m for m in sys.modules if m.split('.')[0] == 'twisted'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("total, slots, expected", [
    (0, 2, 1 << 20),                   # an empty input: the smallest split
    (3 << 20, 2, 3 << 19),             # one map per slot
    (50_000_000, 2, 25_000_000),       # one wave
    (300_000_000, 2, 75_000_000),      # two waves of 75 MB
    (1 << 30, 2, 128 << 20),           # four full waves
    (5 << 20, 0, 5 << 20),             # no slot yet: one map
    (10 << 20, 64, 1 << 20),           # more slots than MBs: 1 MiB maps
])
def test_default_split_size_cuts_whole_waves_within_bounds(total: int, slots: int,
                                                           expected: int) -> None:
    assert splits.default_split_size(total, slots) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(1, 500))
def test_default_split_size_never_leaves_a_partial_last_wave_of_large_maps(
        total: int, slots: int) -> None:
    size = splits.default_split_size(total, slots)
    assert splits.MIN_DEFAULT_SPLIT_SIZE <= size <= splits.MAX_DEFAULT_SPLIT_SIZE
    maps = -(-total // size)
    if splits.MIN_DEFAULT_SPLIT_SIZE < size < splits.MAX_DEFAULT_SPLIT_SIZE:
        assert maps % slots == 0, "the last wave leaves slots idle"


@pytest.mark.parametrize("encoding", ["utf-8", None], ids=["str", "bytes"])
def test_long_lines_are_read_with_few_copies(tmp_path: Path, encoding: str | None) -> None:
    """Lines of many blocks (up to DEFAULT_MAX_LINE_BYTES): the line's
    bytes, its text, the text with the lines after it and their split were
    held at once, and the segment while the next line was read: a map of
    63 MB lines at 343 MB."""
    import tracemalloc

    size = 8 << 20
    lines = [f"k{i}\t" + "x" * size + ("\r" if i == 1 else "") for i in range(3)]
    path = write(tmp_path / "long.txt", "".join(f"{line}\nshort {i}\n" for i, line in
                                                enumerate(lines)).encode())
    tracemalloc.start()
    try:
        got = [(off, len(line)) for off, line in read_lines(whole(path), encoding)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    data = Path(path).read_bytes()
    assert got == [(off, len(line)) for off, line, _ in reference_lines(data)]
    assert peak < 3.5 * size, f"{peak / size:.2f} times a line traced"
