"""The built-in input formats (``pytxmr.readers``): each record read by
exactly one split, whatever the split size, checked against the standard
library's (or pyarrow's) reading of the whole file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest

from pytxmr import readers
from pytxmr.jobmodule import split_policy
from pytxmr.splits import InputError, compute_splits
from pytxmr.storage import InputFile

SIZES = [1, 7, 64, 1000, 1 << 20]


def read_all(reader: Callable[..., Any], paths: list[Path], size: int) -> list[Any]:
    files = [InputFile(str(p), p.stat().st_size) for p in paths]
    splits = compute_splits(files, size, split_by=split_policy(reader))
    return [record for s in splits for record in reader(s, "utf-8", "strict")]


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": i, "name": rng.choice(["ä", "b c", 'q"uote', "x\ny"]),
             "tags": rng.sample(range(9), 2), "ok": rng.random() < 0.5} for i in range(n)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_json_lines_reads_each_document_once(tmp_path: Path, size: int, newline: str) -> None:
    docs = events(200)
    path = tmp_path / "e.jsonl"
    body = newline.join(json.dumps(d, ensure_ascii=False) for d in docs)
    path.write_bytes((body + newline + newline + body).encode())  # a blank line inside
    got = read_all(readers.json_lines, [path], size)
    assert [v for _, v in got] == docs + docs
    offsets = [k for k, _ in got]
    data = path.read_bytes()
    assert all(json.loads(data[o:data.index(b"\n", o)]) == v for o, v in got[:50])
    assert offsets == sorted(offsets)


def test_json_lines_reads_compressed_input_and_a_last_line_without_newline(
        tmp_path: Path) -> None:
    docs = events(50)
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(d) for d in docs).encode()))
    assert [v for _, v in read_all(readers.json_lines, [path], 10)] == docs


def test_bad_json_names_the_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"bad.jsonl: byte 9: not a JSON document"):
        read_all(readers.json_lines, [path], 1 << 20)


CSV_ROWS = [["id", "text", "n"], ["1", "plain", "3"], ["2", "with, comma", "4"],
            ["3", "two\nlines", "5"], ["4", 'a "quoted" word', ""], ["5", "ü\r\nx", "6"]]


@pytest.mark.parametrize("size", SIZES)
def test_csv_rows_keep_quoted_newlines_whatever_the_split_size(tmp_path: Path,
                                                               size: int) -> None:
    paths = []
    for i in range(3):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(CSV_ROWS * (i + 1))
        path = tmp_path / f"t{i}.csv"
        path.write_text(buf.getvalue())
        paths.append(path)
    got = read_all(readers.csv_rows, paths, size)
    expected = [row for p in paths for row in csv.reader(io.StringIO(p.read_text(), newline=""))]
    # read_chunks drops a '\r' before a newline, inside quotes too.
    assert [r for _, r in got] == [[f.replace("\r\n", "\n") for f in row] for row in expected]
    assert [k for k, _ in got][:7] == list(range(6)) + [0]


def test_csv_dicts_take_their_keys_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("name,age\nada,36\n\"bob\nby\",\nshort\n")
    got = read_all(readers.csv_dicts, [path], 3)
    assert got == [(0, {"name": "ada", "age": "36"}), (1, {"name": "bob\nby", "age": ""}),
                   (2, {"name": "short", "age": None})]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_all(readers.csv_dicts, [empty], 3) == []


def test_whole_files_give_one_record_per_file(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(f"document {i}\nsecond line\n" * (i + 1))
        paths.append(path)
    gz = tmp_path / "packed.txt.gz"
    gz.write_bytes(gzip.compress(b"inside\n"))
    got = read_all(readers.whole_files, [*paths, gz], 4)
    assert got == [(str(p), p.read_text()) for p in paths] + [(str(gz), "inside\n")]
    raw = read_all(readers.whole_files_bytes, paths[:1], 4)
    assert raw == [(str(paths[0]), paths[0].read_bytes())]


def test_a_file_policy_makes_one_split_per_file(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"x\n" * 1000)
    files = [InputFile(str(path), 2000)]
    assert len(compute_splits(files, 100)) == 20
    assert [(s.start, s.end) for s in compute_splits(files, 100, split_by="file")] == [(0, 2000)]
    assert split_policy(readers.lines) == "lines" and split_policy(readers.csv_rows) == "file"

    def odd(split: Any, encoding: str, errors: str) -> Any:
        return iter(())

    odd.split_by = "rows"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="split_by must be 'lines' or 'file', not 'rows'"):
        split_policy(odd)


@pytest.mark.parametrize("size", [1, 300, 5000, 1 << 30])
def test_parquet_rows_read_each_row_group_once(tmp_path: Path, size: int) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"id": i, "word": f"w{i % 7}", "score": i / 3} for i in range(1000)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=90)
    got = read_all(readers.parquet_rows, [path], size)
    assert got == list(enumerate(pq.read_table(path).to_pylist()))


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet\n")
    with pytest.raises(InputError, match="fake.parquet: not a readable Parquet file"):
        read_all(readers.parquet_rows, [path], 1 << 20)
