"""The built-in input formats (``pytxmr.readers``): each record read by
exactly one split, whatever the split size, checked against the standard
library's (or pyarrow's) reading of the whole file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytxmr import readers
from pytxmr.splits import (
    InputDecodeError,
    InputError,
    Split,
    compute_splits,
    split_policy,
)
from pytxmr.storage import InputFile

#: Tiny sizes cut inside lines, quoted fields and characters; the last is
#: bigger than every file here.
SIZES = [1, 7, 64, 1000, 1 << 20]


def read_all(reader: Callable[..., Any], paths: list[Path], size: int,
             encoding: str = "utf-8", errors: str = "strict") -> list[Any]:
    """Every record of every split, planned as a job plans them."""
    files = [InputFile(str(p), p.stat().st_size) for p in paths]
    splits = compute_splits(files, size, split_by=split_policy(reader))
    return [record for s in splits for record in reader(s, encoding, errors)]


def open_text(path: Path) -> io.TextIOBase:
    """The file as the csv docs want it: newline="", decompressed if .gz."""
    raw = gzip.open(path) if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": i, "name": rng.choice(["ä", "b c", 'q"uote', "x\ny", "€ \r\n"]),
             "tags": rng.sample(range(9), 2), "ok": rng.random() < 0.5} for i in range(n)]


def reference_json_lines(data: bytes) -> list[tuple[int, Any]]:
    """(offset, value) of each non-blank line, cut by hand."""
    out, pos = [], 0
    for raw in data.split(b"\n"):
        if raw.strip():
            out.append((pos, json.loads(raw)))
        pos += len(raw) + 1
    return out


# ---------------------------------------------------------------- JSON lines


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("last", ["", "end"], ids=["trailing-newline", "no-trailing-newline"])
def test_json_lines_reads_each_document_once(tmp_path: Path, size: int, newline: str,
                                             last: str) -> None:
    docs = [json.dumps(d, ensure_ascii=False) for d in events(120)]
    body = newline.join(docs[:60]) + newline + " " + newline + newline.join(docs[60:])
    path = tmp_path / "e.jsonl"
    path.write_bytes((body + (newline if not last else "")).encode())
    got = read_all(readers.json_lines, [path], size)
    assert got == reference_json_lines(path.read_bytes())
    assert len(got) == 120


@pytest.mark.parametrize("size", [1, 7, 64])
def test_json_lines_reads_gzip_input_whole(tmp_path: Path, size: int) -> None:
    data = "\n".join(json.dumps(d) for d in events(80)).encode()
    paths = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"]
    paths[0].write_bytes(gzip.compress(data))
    paths[1].write_bytes(data)
    files = [InputFile(str(p), p.stat().st_size) for p in paths]
    assert compute_splits(files, size)[0].whole
    assert read_all(readers.json_lines, paths, size) == reference_json_lines(data) * 2


def test_json_lines_of_an_empty_or_blank_file_are_none(tmp_path: Path) -> None:
    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n \r\n\t\n")
    assert read_all(readers.json_lines, [empty, blank], 2) == []


@pytest.mark.parametrize("size", [1, 4, 1 << 20])
def test_bad_json_names_the_file_and_offset(tmp_path: Path, size: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"bad\.jsonl: byte 9: not a JSON document "
                                         r"\(Expecting value") as info:
        read_all(readers.json_lines, [path], size)
    assert (info.value.path, info.value.offset) == (str(path), 9)


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(docs=st.lists(st.one_of(st.integers(), st.text(max_size=5),
                               st.dictionaries(st.text(max_size=3), st.booleans(),
                                               max_size=2)), max_size=15),
       blanks=st.lists(st.booleans(), min_size=15, max_size=15),
       size=st.integers(1, 40))
def test_json_lines_property(tmp_path: Path, docs: list[Any], blanks: list[bool],
                             size: int) -> None:
    text = "".join(json.dumps(d, ensure_ascii=False) + ("\n\n" if b else "\n")
                   for d, b in zip(docs, blanks))
    path = tmp_path / "p.jsonl"
    path.write_bytes(text.encode())
    assert read_all(readers.json_lines, [path], size) == reference_json_lines(text.encode())


# ---------------------------------------------------------------- CSV

CSV_ROWS = [["id", "text", "n"], ["1", "plain", "3"], ["2", "with, comma", "4"],
            ["3", "two\nlines", "5"], ["4", 'a "quoted" word', ""], ["5", "ü\r\nx", "6"],
            ["6", "", "trailing\n"]]


def write_csv(path: Path, rows: list[list[str]], lineterminator: str = "\n",
              compress: bool = False) -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=lineterminator).writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("lineterminator", ["\n", "\r\n"])
def test_csv_rows_match_csv_reader_whatever_the_split_size(tmp_path: Path, size: int,
                                                           lineterminator: str) -> None:
    paths = [write_csv(tmp_path / f"t{i}.csv", CSV_ROWS * (i + 1), lineterminator)
             for i in range(3)]
    paths.append(write_csv(tmp_path / "z.csv.gz", CSV_ROWS, lineterminator, compress=True))
    got = read_all(readers.csv_rows, paths, size)
    expected = [(n, row) for p in paths for n, row in enumerate(csv.reader(open_text(p)))]
    assert got == expected
    assert ["5", "ü\r\nx", "6"] in [row for _, row in got]  # quoted CRLF kept, as csv does


@pytest.mark.parametrize("size", SIZES)
def test_csv_dicts_match_dict_reader(tmp_path: Path, size: int) -> None:
    path = tmp_path / "t.csv"
    path.write_text('name,age\nada,36\n"bob\nby",\nshort\nlong,1,extra\n"x, y",7')
    gz = write_csv(tmp_path / "t.csv.gz", CSV_ROWS * 3, compress=True)
    got = read_all(readers.csv_dicts, [path, gz], size)
    expected = [(n, row) for p in (path, gz) for n, row in enumerate(csv.DictReader(open_text(p)))]
    assert got == expected
    assert got[:3] == [(0, {"name": "ada", "age": "36"}), (1, {"name": "bob\nby", "age": ""}),
                       (2, {"name": "short", "age": None})]


def test_csv_of_empty_files_and_header_only_files(tmp_path: Path) -> None:
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text("a,b")
    assert read_all(readers.csv_dicts, [empty, header], 1) == []
    assert read_all(readers.csv_rows, [empty, header], 1) == [(0, ["a", "b"])]


@pytest.mark.parametrize("reader", ["csv_rows", "csv_dicts"])
def test_csv_errors_name_the_line_of_the_row(tmp_path: Path, reader: str) -> None:
    """csv_dicts named the line of the last row read whole (2, not 5)."""
    path = tmp_path / "big.csv"
    path.write_text('h1,h2\n1,2\n"a\nb",3\n4,"' + "x" * 80 + '"\n5,6\n')
    old = csv.field_size_limit(50)
    try:
        with pytest.raises(InputError, match=r"big\.csv: line 5: not readable as CSV"):
            read_all(getattr(readers, reader), [path], 1 << 20)
    finally:
        csv.field_size_limit(old)


def test_csv_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text('a\n"' + "x\n" * 40 + '"\n')
    old = csv.field_size_limit(50)
    try:
        with pytest.raises(InputError, match=r"big\.csv: line \d+: not readable as CSV"):
            read_all(readers.csv_rows, [path], 1 << 20)
    finally:
        csv.field_size_limit(old)
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"a,b\nc,\xe9\n")
    with pytest.raises(InputDecodeError, match=r"latin\.csv: cannot decode the line at "
                                               r"byte offset 4 as utf-8"):
        read_all(readers.csv_rows, [bad], 1 << 20)
    assert read_all(readers.csv_rows, [bad], 1, "latin-1") == [(0, ["a", "b"]), (1, ["c", "é"])]


def test_csv_readers_refuse_a_split_that_does_not_start_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", CSV_ROWS)
    with pytest.raises(ValueError, match="split_by = 'file'"):
        readers.csv_rows(Split(1, str(path), 5, 10, False), "utf-8", "strict")


@PROPERTY
@given(rows=st.lists(st.lists(st.text(alphabet='ab,"\n\r é', max_size=6), min_size=1,
                              max_size=3), max_size=8),
       size=st.integers(1, 30))
def test_csv_rows_property(tmp_path: Path, rows: list[list[str]], size: int) -> None:
    path = write_csv(tmp_path / "p.csv", rows, "\r\n")
    expected = list(enumerate(csv.reader(open_text(path))))
    assert read_all(readers.csv_rows, [path], size) == expected


# ---------------------------------------------------------------- whole files


def test_whole_files_give_one_record_per_file(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"doc{i}.txt"
        path.write_bytes(f"document {i}\r\nsecond line é\n".encode() * (i + 1))
        paths.append(path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    gz = tmp_path / "packed.txt.gz"
    gz.write_bytes(gzip.compress(b"inside\n"))
    every = [*paths, empty, gz]
    for size in (1, 7, 64):
        got = read_all(readers.whole_files, every, size)
        assert got == [(str(p), p.read_bytes().decode()) for p in [*paths, empty]] + \
            [(str(gz), "inside\n")]
        raw = read_all(readers.whole_files_bytes, every, size)
        assert raw == [(str(p), p.read_bytes()) for p in [*paths, empty]] + \
            [(str(gz), b"inside\n")]


def test_whole_files_decode_error_names_the_file_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(InputDecodeError, match=r"latin\.txt: cannot decode byte 3 as utf-8"):
        read_all(readers.whole_files, [path], 1)
    assert read_all(readers.whole_files, [path], 1, errors="replace") == \
        [(str(path), "caf\ufffd\n")]


# ---------------------------------------------------------------- split policy


def test_a_file_policy_makes_one_split_per_file(tmp_path: Path) -> None:
    files = [InputFile(str(tmp_path / "big.txt"), 2000), InputFile(str(tmp_path / "e.txt"), 0),
             InputFile(str(tmp_path / "c.txt.gz"), 500)]
    assert len(compute_splits(files, 100)) == 22
    got = compute_splits(files, 100, split_by="file")
    assert [(s.index, s.start, s.end, s.whole) for s in got] == \
        [(0, 0, 2000, False), (1, 0, 0, False), (2, 0, 500, True)]
    with pytest.raises(ValueError, match="split_by must be 'lines' or 'file', not 'rows'"):
        compute_splits(files, 100, split_by="rows")


def test_split_policy_reads_and_checks_the_readers_attribute() -> None:
    assert [split_policy(r) for r in (readers.lines, readers.path_lines, readers.json_lines,
                                      readers.parquet_rows)] == ["lines"] * 4
    assert [split_policy(r) for r in (readers.csv_rows, readers.csv_dicts, readers.whole_files,
                                      readers.whole_files_bytes)] == ["file"] * 4

    def odd(split: Any, encoding: str, errors: str) -> Any:
        return iter(())

    for bad in ("rows", None, "FILE"):
        odd.split_by = bad  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match=f"split_by must be 'lines' or 'file', not {bad!r}"):
            split_policy(odd)


def test_readers_import_neither_twisted_nor_pyarrow() -> None:
    code = ("import sys, pytxmr.readers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'pyarrow', 'fsspec')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def memory_store(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """fsspec's in-memory store, standing for s3://, and a folder of it."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    root = f"/pytxmr-formats-{tmp_path.name}"
    fs.mkdir(root)
    yield fs, root
    fs.rm(root, recursive=True)


def read_urls(store: tuple[Any, str], reader: Callable[..., Any], names: list[str],
              size: int) -> list[Any]:
    fs, root = store
    files = [InputFile(f"memory://{root}/{n}", fs.size(f"{root}/{n}")) for n in names]
    splits = compute_splits(files, size, split_by=split_policy(reader))
    return [r for s in splits for r in reader(s, "utf-8", "strict")]


def test_readers_read_urls_through_ranged_reads(memory_store: tuple[Any, str]) -> None:
    """A URL is opened through rangereader (never open()), split or whole."""
    fs, root = memory_store
    jsonl = "\n".join(json.dumps(d) for d in events(40)).encode()
    table = b'a,b\r\n1,"x\r\ny"\r\n2,3\r\n'
    fs.pipe({f"{root}/e.jsonl": jsonl, f"{root}/e.jsonl.gz": gzip.compress(jsonl),
             f"{root}/t.csv": table})
    assert read_urls(memory_store, readers.json_lines, ["e.jsonl", "e.jsonl.gz"], 13) == \
        reference_json_lines(jsonl) * 2
    expected = list(enumerate(csv.DictReader(io.StringIO(table.decode(), newline=""))))
    assert read_urls(memory_store, readers.csv_dicts, ["t.csv"], 3) == expected
    assert read_urls(memory_store, readers.whole_files_bytes, ["t.csv"], 3) == \
        [(f"memory://{root}/t.csv", table)]


# ---------------------------------------------------------------- Parquet


def write_parquet(path: Path, rows: list[dict[str, Any]], group: int, **kwargs: Any) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group, **kwargs)
    return path


@pytest.mark.parametrize("size", [1, 7, 64, 300, 2000, 1 << 30])
def test_parquet_rows_read_each_row_group_once(tmp_path: Path, size: int) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    # Small files: a 1-byte split size makes a split (a footer read) per byte.
    rows = [{"id": i, "word": f"w{i % 7}", "score": i / 3, "tags": [i % 3]} for i in range(60)]
    paths = [write_parquet(tmp_path / "a.parquet", rows, 6, store_schema=False),
             write_parquet(tmp_path / "b.parquet", rows[:25], 4, use_dictionary=False,
                           store_schema=False),
             write_parquet(tmp_path / "c.parquet", [], 10)]
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups == 10
    got = read_all(readers.parquet_rows, paths, size)
    assert got == [r for p in paths for r in enumerate(pq.read_table(p).to_pylist())]


def test_parquet_rows_of_a_compressed_file_are_read_whole(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"id": i} for i in range(100)]
    plain = write_parquet(tmp_path / "t.parquet", rows, 30)
    packed = tmp_path / "t.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_all(readers.parquet_rows, [packed], 7) == list(enumerate(pq.read_table(plain)
                                                                         .to_pylist()))


def test_parquet_rows_of_a_url(tmp_path: Path, memory_store: tuple[Any, str]) -> None:
    fs, root = memory_store
    rows = [{"id": i} for i in range(50)]
    fs.pipe(f"{root}/t.parquet", write_parquet(tmp_path / "t.parquet", rows, 7).read_bytes())
    assert read_urls(memory_store, readers.parquet_rows, ["t.parquet"], 100) == \
        list(enumerate(rows))


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet\n")
    with pytest.raises(InputError, match=r"fake\.parquet: not a readable Parquet file"):
        read_all(readers.parquet_rows, [path], 1 << 20)


def test_parquet_without_pyarrow_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails
    split = Split(0, str(tmp_path / "t.parquet"), 0, 10, False)
    with pytest.raises(InputError, match=r"needs pyarrow: pip install 'pytxmr\[parquet\]'"):
        readers.parquet_rows(split, "utf-8", "strict")  # at the call, before any next()
