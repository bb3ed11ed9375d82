"""Input formats: how a map task turns its Split into the (key, value) pairs given to the mapper.

A job module picks one by setting its ``reader`` attribute (default: lines);
the map task child calls it once per split. Pure stdlib, no Twisted.

Writing your own reader: any callable ``reader(split, encoding, errors)``
returning an iterator of (key, value) pairs will do. Build it on
pytxmr.splits.read_lines (or read_chunks) so that it keeps their guarantee
that each line of a file is read by exactly one split::

    from pytxmr.splits import read_lines

    def csv_rows(split, encoding, errors):
        for offset, line in read_lines(split, encoding, errors):
            yield offset, line.split(",")

    reader = csv_rows  # in the job module

A reader that must see a whole file says so with ``reader.split_by = "file"``:
each input file is then one split (``csv_rows``, ``whole_files`` do). The
formats, their keys and values: docs/input-formats.md.
"""

from __future__ import annotations

import csv
import io
import json
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Iterator

from pytxmr import storage
from pytxmr.splits import InputError, Split, read_chunks, read_file_bytes, read_lines

__all__ = ["Reader", "csv_dicts", "csv_rows", "json_lines", "lines", "parquet_rows",
           "path_lines", "whole_files", "whole_files_bytes"]

#: The reader protocol: (split, encoding, errors) -> iterator of (key, value).
Reader = Callable[[Split, str, str], Iterator[tuple[Any, Any]]]

_second = itemgetter(1)


def lines(
    split: Split, encoding: str = "utf-8", errors: str = "strict"
) -> Iterator[tuple[int, str]]:
    """The default reader: (byte offset in the file, line), like Hadoop's TextInputFormat."""
    return read_lines(split, encoding, errors)


def path_lines(
    split: Split, encoding: str = "utf-8", errors: str = "strict"
) -> Iterator[tuple[str, str]]:
    """(file path, line): for jobs that need to know which file a line is in (an inverted index)."""
    # zip/map keep the per-line step in C, like read_lines itself.
    return zip(repeat(split.path), map(_second, read_lines(split, encoding, errors)))


# --- structured formats ------------------------------------------------------


def json_lines(split: Split, encoding: str = "utf-8",
               errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """(byte offset of the line, the line's JSON value), one JSON document
    per line; blank lines are skipped. Split like ``lines``."""
    loads = json.loads
    for offset, line in read_lines(split, encoding, errors):
        if not line.strip():
            continue
        try:
            value = loads(line)
        except ValueError as e:
            raise InputError(f"{storage.redact(split.path)}: byte {offset}: not a JSON "
                             f"document ({e})", path=split.path, offset=offset) from None
        yield offset, value


def _csv_lines(split: Split, encoding: str, errors: str) -> Iterator[str]:
    """The file's lines with their newlines, as the csv module wants them
    (a quoted field may span lines)."""
    for _, text in read_chunks(split, encoding=encoding, errors=errors):
        yield from io.StringIO(text)


def csv_rows(split: Split, encoding: str = "utf-8",
             errors: str = "strict") -> Iterator[tuple[int, list[str]]]:
    """(row number from 0, the row's fields), every row of a CSV file. A
    quoted field may hold newlines, so a file is one split (``split_by``)."""
    for n, row in enumerate(csv.reader(_csv_lines(split, encoding, errors))):
        yield n, row


def csv_dicts(split: Split, encoding: str = "utf-8",
              errors: str = "strict") -> Iterator[tuple[int, dict[str, str]]]:
    """(row number from 0, the row as a dict keyed by the header row), the
    data rows of a CSV file whose first row names its columns (missing
    fields are None, extra ones under the key None, as ``csv.DictReader``
    gives them). One split per file, as ``csv_rows``."""
    for n, row in enumerate(csv.DictReader(_csv_lines(split, encoding, errors))):
        yield n, row


def whole_files(split: Split, encoding: str = "utf-8",
                errors: str = "strict") -> Iterator[tuple[str, str]]:
    """(the file's path, its whole text): one record per file, for many
    small files (documents, JSON files)."""
    yield split.path, read_file_bytes(split).decode(encoding, errors)


def whole_files_bytes(split: Split, encoding: str = "utf-8",
                      errors: str = "strict") -> Iterator[tuple[str, bytes]]:
    """(the file's path, its bytes, decompressed): one record per file."""
    yield split.path, read_file_bytes(split)


def parquet_rows(split: Split, encoding: str = "utf-8",
                 errors: str = "strict") -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number in the file, the row as a dict) of a Parquet file, with
    pyarrow (``pip install 'pytxmr[parquet]'``). Split like Hadoop's and
    Spark's Parquet readers: a row group belongs to the split in which its
    first byte lies, so each is read by exactly one split."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{storage.redact(split.path)}: reading Parquet needs pyarrow: "
                         "pip install 'pytxmr[parquet]'", path=split.path) from None
    from .rangereader import open_input

    with open_input(split.path, whole=False) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow's own errors: not a Parquet file, truncated...
            raise InputError(f"{storage.redact(split.path)}: not a readable Parquet file "
                             f"({e})", path=split.path) from None
        row = 0
        meta = pf.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            first = min(_column_start(group.column(c)) for c in range(group.num_columns))
            if split.whole or split.start <= first < split.end:
                for n, record in enumerate(pf.read_row_group(g).to_pylist(), row):
                    yield n, record
            row += group.num_rows


def _column_start(column: Any) -> int:
    """The first byte of a column chunk: its dictionary page if it has one."""
    offset = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset is not None:
        offset = min(offset, column.dictionary_page_offset)
    return int(offset)


for _whole in (csv_rows, csv_dicts, whole_files, whole_files_bytes):
    _whole.split_by = "file"  # type: ignore[attr-defined]
