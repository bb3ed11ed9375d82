"""Input formats: how a map task turns its Split into the (key, value) pairs given to the mapper.

A job module picks one by setting its ``reader`` attribute (default: lines);
the map task child calls it once per split. Pure stdlib, no Twisted.

Writing your own reader: any callable ``reader(split, encoding, errors)``
returning an iterator of (key, value) pairs will do. Build it on
pytxmr.splits.read_lines (or read_chunks) so that it keeps their guarantee
that each line of a file is read by exactly one split::

    from pytxmr.splits import read_lines

    def tsv_rows(split, encoding, errors):
        for offset, line in read_lines(split, encoding, errors):
            yield offset, line.split("\t")

    reader = tsv_rows  # in the job module

A reader that must see a whole file says so with ``reader.split_by = "file"``
(``splits.split_policy``): each input file is then one split, [0, size)
(``csv_rows``, ``whole_files`` do). The formats, their keys and values:
docs/input-formats.md.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import nullcontext
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Iterator

from pytxmr import storage
from pytxmr.splits import (
    CHUNK_BLOCK_SIZE,
    DEFAULT_MAX_LINE_BYTES,
    InputDecodeError,
    InputError,
    Split,
    check_codec,
    decode_error,
    open_split,
    segments,
    read_file_bytes,
    read_lines,
)

__all__ = ["Reader", "csv_dicts", "csv_rows", "json_lines", "lines", "parquet_rows",
           "path_lines", "whole_files", "whole_files_bytes"]

#: The reader protocol: (split, encoding, errors) -> iterator of (key, value).
Reader = Callable[[Split, str, str], Iterator[tuple[Any, Any]]]

_second = itemgetter(1)


def lines(
    split: Split, encoding: str | None = "utf-8", errors: str = "strict"
) -> Iterator[tuple[int, Any]]:
    """The default reader: (byte offset in the file, line), like Hadoop's
    TextInputFormat. The line is bytes for a job with ``input_bytes``
    (``encoding`` None)."""
    return read_lines(split, encoding, errors)


def path_lines(
    split: Split, encoding: str | None = "utf-8", errors: str = "strict"
) -> Iterator[tuple[str, Any]]:
    """(file path, line): for jobs that need to know which file a line is
    in (an inverted index). Bytes lines as ``lines``'."""
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
    """The file's lines as ``open(path, newline="")`` gives them to the csv
    module: ends kept, a '\r\n' in a quoted field left as is."""
    if split.start:
        raise ValueError("CSV readers read whole files: a reader built on them "
                         "needs split_by = 'file'")
    check_codec(encoding, errors)  # fail at the call, as read_lines does
    return _csv_text(split, encoding, errors)


def _csv_text(split: Split, encoding: str, errors: str) -> Iterator[str]:
    shown = storage.redact(split.path)
    # Runs of whole lines cut at b'\n': a character or a '\r\n' is never cut.
    for pos, seg in segments(split, DEFAULT_MAX_LINE_BYTES, CHUNK_BLOCK_SIZE):
        try:
            text = seg.decode(encoding, errors)
        except UnicodeDecodeError as e:
            raise decode_error(shown, pos + seg.rfind(b"\n", 0, e.start) + 1,
                                encoding, e) from e
        yield from io.StringIO(text, newline="")


def _csv_records(split: Split, rows: Any) -> Iterator[tuple[int, Any]]:
    """(row number, row), csv's own errors (a field over csv.field_size_limit)
    turned into an InputError that names the file and line."""
    try:
        yield from enumerate(rows)
    except csv.Error as e:
        # A DictReader's own line_num is the last row read whole's.
        line = getattr(rows, "reader", rows).line_num
        raise InputError(f"{storage.redact(split.path)}: line {line}: not "
                         f"readable as CSV ({e})", path=split.path) from None


def csv_rows(split: Split, encoding: str = "utf-8",
             errors: str = "strict") -> Iterator[tuple[int, list[str]]]:
    """(row number from 0, the row's fields), every row of a CSV file, as
    ``csv.reader`` reads it. A quoted field may hold newlines, so a file is
    one split (``split_by``)."""
    return _csv_records(split, csv.reader(_csv_lines(split, encoding, errors)))


def csv_dicts(split: Split, encoding: str = "utf-8",
              errors: str = "strict") -> Iterator[tuple[int, dict[str, str]]]:
    """(row number from 0 after the header, the row as a dict keyed by the
    header row), the data rows of a CSV file whose first row names its
    columns (missing fields are None, extra ones under the key None, as
    ``csv.DictReader`` gives them). One split per file, as ``csv_rows``."""
    return _csv_records(split, csv.DictReader(_csv_lines(split, encoding, errors)))


def whole_files(split: Split, encoding: str = "utf-8",
                errors: str = "strict") -> Iterator[tuple[str, str]]:
    """(the file's path, its whole text): one record per file, for many
    small files (documents, JSON files)."""
    data = read_file_bytes(split)
    try:
        text = data.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise InputDecodeError(
            f"{storage.redact(split.path)}: cannot decode byte {e.start} as {encoding} "
            f'({e.reason}); if the input is not clean {encoding}, set encoding_errors = '
            '"replace" in the job module', path=split.path, offset=e.start) from None
    yield split.path, text


def whole_files_bytes(split: Split, encoding: str = "utf-8",
                      errors: str = "strict") -> Iterator[tuple[str, bytes]]:
    """(the file's path, its bytes, decompressed): one record per file."""
    yield split.path, read_file_bytes(split)


#: Rows turned into Python objects at a time: bounds a map's memory to a
#: batch's dicts (and the row group's Arrow columns), whatever the group size.
_PARQUET_BATCH_ROWS = 8192


def parquet_rows(split: Split, encoding: str = "utf-8",
                 errors: str = "strict") -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number in the file, the row as a dict) of a Parquet file, with
    pyarrow (``pip install 'pytxmr[parquet]'``). Split by byte ranges: a
    row group belongs to the split in which its first byte lies (Hadoop
    and Spark take its midpoint: any one point works), so planning needs
    only file sizes and each group is read by exactly one split."""
    try:  # here, not at import: task children import this module
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{storage.redact(split.path)}: reading Parquet needs pyarrow: "
                         "pip install 'pytxmr[parquet]'", path=split.path) from None
    return _parquet_rows(split, pq)


def _parquet_rows(split: Split, pq: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    shown = storage.redact(split.path)
    # Compressed, or behind a server without ranges: Parquet must seek.
    opened = (nullcontext((io.BytesIO(read_file_bytes(split)), None)) if split.whole
              else open_split(split))
    with opened as (source, _):
        try:
            pf = pq.ParquetFile(source)
        except Exception as e:  # pyarrow's own errors: not a Parquet file, truncated...
            raise InputError(f"{shown}: not a readable Parquet file ({e})",
                             path=split.path) from None
        meta = pf.metadata
        row = 0  # the file's row number of the group's first row
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            # Its first column chunk's first byte (parquet-mr's getOffset);
            # a group without columns has no bytes: the split at 0 takes it.
            first = _column_start(group.column(0)) if group.num_columns else 0
            if split.whole or split.start <= first < split.end:
                batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[g])
                n = row
                while True:
                    try:
                        batch = next(batches, None)
                    except (OSError, ValueError) as e:  # a corrupt page, a failed read
                        raise InputError(f"{shown}: row group {g}: {e}",
                                         path=split.path) from e
                    if batch is None:
                        break
                    yield from enumerate(batch.to_pylist(), n)
                    n += batch.num_rows
            row += group.num_rows


def _column_start(column: Any) -> int:
    """The first byte of a column chunk: its dictionary page if it has one."""
    offset = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset is not None:
        offset = min(offset, column.dictionary_page_offset)
    return int(offset)


for _whole in (csv_rows, csv_dicts, whole_files, whole_files_bytes):
    _whole.split_by = "file"  # type: ignore[attr-defined]
