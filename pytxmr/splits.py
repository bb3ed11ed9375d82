"""How input files become splits, and how a map task reads its split back.

The master calls expand_inputs and compute_splits when a job is submitted and
ships each Split (as a plain dict) to a worker; the map task child reads it
with read_lines or read_chunks, the per-record hot path. Pure stdlib: nothing
here imports Twisted, the daemons import this module, never the reverse.
"""

from __future__ import annotations

import bz2
import codecs
import functools
import gzip
import lzma
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from operator import add
from typing import IO, Any, Iterator, Mapping, Sequence

from pytxmr import rangereader, storage
from pytxmr.sizes import format_size
from pytxmr.storage import COMPRESSED_SUFFIXES, InputFile

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_BLOCK_SIZE",
    "COMPRESSED_SUFFIXES",
    "DEFAULT_MAX_LINE_BYTES",
    "InputDecodeError",
    "InputError",
    "RecordTooLarge",
    "SPLIT_POLICIES",
    "Split",
    "compute_splits",
    "count_splits",
    "default_split_size",
    "is_compressed",
    "read_chunks",
    "read_file_bytes",
    "read_lines",
    "split_policy",
]

#: Longest line (in bytes, without its '\n') a reader accepts. A bigger one is
#: almost always a binary or a newline-free file given by mistake, and reading
#: it whole could exhaust a worker's memory, so it fails the task instead.
DEFAULT_MAX_LINE_BYTES = 64 << 20

#: Bytes read_lines reads and decodes at a time. Per block, Python runs once
#: and the per-line work (split, offsets) stays in C. Measured here: 64 KiB
#: beats 4 MiB (7.9 vs 5.3 M lines/s): the block's line objects stay in cache.
BLOCK_SIZE = 64 << 10

#: Bytes read_chunks reads at a time (chunks are joined from these blocks).
CHUNK_BLOCK_SIZE = 1 << 20

#: Suffixes read whole through a streaming decompressor (one split per file):
#: these formats cannot be entered in the middle.


def _zstd_reader(raw: IO[bytes]) -> IO[bytes]:
    """Python's own zstd file (3.14's ``compression.zstd``, its backport
    before): frame after frame, and an input that ends inside one fails as
    a truncated .gz does, where zstandard's stream reader ended quietly
    there (a cut download counted as part of a file)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[no-redef]
        except ImportError:
            raise InputError(f"{storage.redact(raw.name)}: reading .zst input needs the "
                             "backports.zstd package (Python's compression.zstd before "
                             "3.14): pip install 'pytxmr[zstd]'", path=raw.name) from None
    return zstd.ZstdFile(raw)  # type: ignore[no-any-return]


#: Decompressing readers over a binary file, by suffix.
_DECOMPRESSORS: dict[str, Any] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
    ".zst": _zstd_reader,
    ".zstd": _zstd_reader,
}

# Compressed formats pytxmr cannot read: refusing them beats feeding the
# mapper binary garbage (silently so with encoding_errors = "replace").
_UNSUPPORTED_SUFFIXES = (".lz4", ".zip", ".7z", ".snappy", ".lzo", ".br", ".lzma", ".gzip",
                         ".tar", ".tgz", ".tbz2", ".txz", ".tar.gz", ".tar.bz2", ".tar.xz",
                         ".tar.zst")

# Past the split's end only the last line remains to be read: read small.
_TAIL_READ = 64 << 10

_NO_END = sys.maxsize

# The +1 (or +2 for '\r\n') per line of the offsets, added in C by map(add, ...).
_ONES = repeat(1)
_TWOS = repeat(2)

# Codecs in which every ASCII byte decodes to the same single character, so
# character counts of an ASCII block equal its byte counts.
_ASCII_TRANSPARENT = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"})

_GLOB_MAGIC = re.compile(r"[*?[]")


def is_glob(pattern: str) -> bool:
    return _GLOB_MAGIC.search(pattern) is not None


_DECODE_HINT = (
    'if the input is not clean {encoding}, set encoding_errors = "replace" '
    '(or "surrogateescape") in the job module'
)


class InputError(ValueError):
    """A problem with the user's input, not a framework bug: the message names the path."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable across the task child boundary.
        return (type(self), (self.args[0], self.path, self.offset))


class RecordTooLarge(InputError):
    """A line longer than max_line_bytes: usually a binary or newline-free file given by mistake."""


class InputDecodeError(InputError):
    """A line that is not valid in the job's encoding; names the file and byte offset."""


@dataclass(frozen=True)
class Split:
    """One map task's share of the input: the lines that start in [start, end) of path.

    ``path`` is an absolute local path or a URL (``storage``). A compressed
    file, or one behind an HTTP server that cannot serve ranges, is read
    whole (whole=True, start=0, end=its size). Only plain types inside,
    because splits travel over PB and JSON.
    """

    index: int
    path: str
    start: int
    end: int
    whole: bool
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Splits also arrive from the wire: check what a peer could get wrong.
        for name in ("index", "start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Split.{name} must be an int >= 0, got {value!r}")
        if not isinstance(self.path, str) or not (
                os.path.isabs(self.path) or storage.is_remote(self.path)):
            raise ValueError(f"Split.path must be an absolute path or a URL, got {self.path!r}")
        if self.start > self.end:
            raise ValueError(f"Split start {self.start} is after its end {self.end}")
        if not isinstance(self.whole, bool):
            raise ValueError(f"Split.whole must be a bool, got {self.whole!r}")
        if self.whole and self.start != 0:
            raise ValueError("a whole-file Split must start at 0")
        if isinstance(self.hosts, str) or not isinstance(self.hosts, (list, tuple)) \
                or not all(isinstance(h, str) for h in self.hosts):
            raise ValueError(f"Split.hosts must be a list of strings, got {self.hosts!r}")
        object.__setattr__(self, "hosts", tuple(self.hosts))

    @property
    def length(self) -> int:
        """Bytes of the file this split covers (on disk), for scheduling and progress."""
        return self.end - self.start

    def to_wire(self) -> dict[str, Any]:
        """Plain-typed form for PB and JSON (no jelly, no Copyable)."""
        return {"index": self.index, "path": self.path, "start": self.start,
                "end": self.end, "whole": self.whole, "hosts": list(self.hosts)}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Split:
        """Rebuild a Split from to_wire's output; ValueError if it is malformed
        (``__post_init__`` checks every field)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a split must be a dict, got {type(d).__name__}")
        try:
            return cls(index=d["index"], path=d["path"], start=d["start"], end=d["end"],
                       whole=d["whole"], hosts=d.get("hosts", ()))
        except KeyError as e:
            raise ValueError(f"split dict lacks the key {e.args[0]!r}: {dict(d)!r}") from None


# ---------------------------------------------------------------- inputs


def is_compressed(path: str) -> bool:
    """True if path is read whole through a decompressor (by its suffix)."""
    return storage.suffixed(path).endswith(COMPRESSED_SUFFIXES)


#: The largest split a job gets without --split-size: Hadoop's block size.
#: A map has fixed costs (a process, sorting and spilling its distinct keys,
#: one more run for every reduce to merge) that larger splits amortize.
MAX_DEFAULT_SPLIT_SIZE = 128 << 20
#: The smallest: below it, a map's start costs more than its work.
MIN_DEFAULT_SPLIT_SIZE = 1 << 20


def default_split_size(total: int, slots: int) -> int:
    """The split size that cuts ``total`` bytes into whole waves of maps over
    ``slots`` (one map per slot when the input allows), within the bounds
    above: a small input still uses every slot, and no slot idles through a
    last, partial wave."""
    slots = max(1, slots)
    waves = max(1, -(-total // (slots * MAX_DEFAULT_SPLIT_SIZE)))
    per_map = -(-total // (slots * waves))
    return min(MAX_DEFAULT_SPLIT_SIZE, max(MIN_DEFAULT_SPLIT_SIZE, per_map))


#: How a reader's input may be cut: "lines", byte ranges whose records are
#: the lines starting in them; "file", one split per file (a record may span
#: lines, as a quoted CSV field does, or the record is the file).
SPLIT_POLICIES = ("lines", "file")


def _check_split_by(policy: object) -> str:
    if not isinstance(policy, str) or policy not in SPLIT_POLICIES:
        raise ValueError(f"a reader's split_by must be 'lines' or 'file', not {policy!r}")
    return policy


def split_policy(reader: Any) -> str:
    """The split policy a reader declares with its ``split_by`` attribute
    ("lines" when it has none), checked: the planner cuts the input by it,
    so a typo must fail the submission, not every map."""
    return _check_split_by(getattr(reader, "split_by", "lines"))


def compute_splits(inputs: Sequence[InputFile | str], split_size: int,
                   split_by: str = "lines") -> list[Split]:
    """Cut files into byte ranges of split_size (one map task each).

    ``inputs`` come from ``storage.expand_inputs`` (a plain string is a
    local path, stat'ed here). Compressed files, and files whose server
    serves no ranges, are one whole split each; with ``split_by="file"``
    (``split_policy`` of the job's reader) every file is one split,
    [0, size). An empty file still gets one (empty) split so that every
    input has a map task. Indexes run from 0 across all files in the
    given order.
    """
    splits: list[Split] = []
    for item, whole, starts in _plan_starts(inputs, split_size, split_by):
        for start in starts:
            splits.append(Split(len(splits), item.path, start,
                                min(start + starts.step, item.size), whole))
    return splits


def count_splits(inputs: Sequence[InputFile | str], split_size: int,
                 split_by: str = "lines") -> int:
    """How many splits ``compute_splits`` makes of ``inputs``, from their
    sizes alone: a jobtracker refuses a job of millions of maps without
    making them (a split size of a few bytes is a typo)."""
    return sum(len(starts) for _, _, starts in _plan_starts(inputs, split_size, split_by))


def _plan_starts(inputs: Sequence[InputFile | str], split_size: int,
                 split_by: str = "lines") -> list[tuple[InputFile, bool, range]]:
    """Per input: the file, whether it is read whole, and its splits' start
    offsets (a range whose step is the split's length, the last one cut at
    the file's end)."""
    if isinstance(split_size, bool) or not isinstance(split_size, int):
        raise TypeError(f"split_size must be an int, got {split_size!r}")
    if split_size < 1:
        raise ValueError(f"split_size must be at least 1 byte, got {split_size}")
    _check_split_by(split_by)
    planned = []
    for item in inputs:
        if isinstance(item, str):
            path = os.path.abspath(item)
            try:
                item = InputFile(path, os.stat(path).st_size)
            except OSError as e:
                raise InputError(f"cannot read input {path}: {e.strerror}", path=path) from e
        path, size = item.path, item.size
        if storage.suffixed(path).endswith(_UNSUPPORTED_SUFFIXES):
            raise InputError(
                f"input {storage.redact(path)}: this format is not supported (an archive of "
                f"files, or a compression pytxmr does not read); use "
                f"{', '.join(COMPRESSED_SUFFIXES)} or uncompressed files",
                path=path,
            )
        whole = is_compressed(path) or not item.ranged
        # One split [0, size) (an empty file: [0, 0)), unless cut by lines.
        step = split_size if size and not whole and split_by == "lines" else max(size, 1)
        planned.append((item, whole, range(0, max(size, 1), step)))
    return planned


# ---------------------------------------------------------------- reading


@functools.lru_cache(maxsize=64)
def check_codec(encoding: str, errors: str) -> bool:
    """Validate the job's codec; True if ASCII bytes decode one-to-one (the fast path)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise ValueError(
            f"unknown encoding error handler {errors!r} "
            "(use 'strict', 'replace', 'surrogateescape', 'ignore' or 'backslashreplace')"
        ) from None
    try:
        compatible = "\n\r".encode(name) == b"\n\r" and b"\n\r".decode(name) == "\n\r"
    except UnicodeError:
        compatible = False
    if not compatible:
        raise ValueError(
            f"encoding {encoding!r} cannot be split into lines at '\\n' bytes "
            "(it is not ASCII-compatible, e.g. UTF-16); convert the input to UTF-8"
        )
    return name in _ASCII_TRANSPARENT or name.startswith("iso8859-")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def decode_error(
    path: str, offset: int, encoding: str, exc: UnicodeDecodeError
) -> InputDecodeError:
    return InputDecodeError(
        f"{path}: cannot decode the line at byte offset {offset} as {encoding} "
        f"({exc.reason}); " + _DECODE_HINT.format(encoding=encoding),
        path=path,
        offset=offset,
    )


def _too_large(path: str, offset: int, max_line_bytes: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"{path}: the line at byte offset {offset} is longer than the limit of "
        f"{max_line_bytes} bytes ({format_size(max_line_bytes)}); is it a binary "
        "or newline-free file? (a record that spans lines wants a reader of its own, "
        "split_by = \"file\": docs/input-formats.md)",
        path=path,
        offset=offset,
    )


def _check_line_lengths(path: str, pos: int, seg: bytes, max_line_bytes: int) -> None:
    if len(seg) <= max_line_bytes + 1:  # a line plus its '\n' fits: nothing to scan
        return
    if max(map(len, seg.split(b"\n"))) <= max_line_bytes:
        return
    i = 0
    while True:  # the error path: find the offending line's offset
        j = seg.find(b"\n", i)
        j = len(seg) if j < 0 else j
        if j - i > max_line_bytes:
            raise _too_large(path, pos + i, max_line_bytes)
        i = j + 1


def _read_size(nxt: int, end: int, block_size: int) -> int:
    left = end - nxt
    if left >= block_size:
        return block_size
    return max(left, min(_TAIL_READ, block_size))


def _segments_of(
    f: IO[bytes], path: str, start: int, end: int, max_line_bytes: int, block_size: int
) -> Iterator[tuple[int, bytes]]:
    pos = start  # offset of the first byte not yet yielded (a line start)
    nxt = start  # offset of the next byte f.read returns
    blk = b""
    if start > 0:
        # The line we begin in belongs to the previous split, unless it starts
        # exactly at start: looking from start-1 covers both cases at once.
        f.seek(start - 1)
        nxt = start - 1
        while True:
            if nxt >= end:
                return
            chunk = f.read(_read_size(nxt, end, block_size))
            if not chunk:
                _check_not_shrunk(path, nxt, end)
                return
            i = chunk.find(b"\n")
            if i >= 0:
                pos = nxt + i + 1
                nxt += len(chunk)
                if pos >= end:
                    return
                blk = chunk[i + 1 :]
                break
            nxt += len(chunk)

    pending: list[bytes] = []  # the partial line starting at pos, in pieces
    pending_len = 0
    while True:
        if blk:
            # A line longer than a block ends a segment of its own (it may
            # be 64 MB: the lines after it are not copied with it), the
            # rest of its last block taken as a block of its own.
            alone = pending_len >= block_size
            nl = blk.find(b"\n") if alone else blk.rfind(b"\n")
            if nl < 0:
                pending.append(blk)
                pending_len += len(blk)
                if pending_len > max_line_bytes:
                    raise _too_large(path, pos, max_line_bytes)
            else:
                cut = nl + 1
                if pending:
                    # One copy per block: join takes the memoryview without slicing.
                    seg = b"".join([*pending, memoryview(blk)[:cut]])
                    pending = []
                elif cut == len(blk):
                    seg = blk
                else:
                    seg = blk[:cut]
                seg_end = pos + len(seg)  # where the line after seg starts
                if seg_end > end:
                    # Keep only the lines starting before end; the rest is the
                    # next split's. The line containing end-1 ends our split.
                    seg = seg[: seg.find(b"\n", end - pos - 1) + 1]
                    _check_line_lengths(path, pos, seg, max_line_bytes)
                    yield pos, seg
                    return
                _check_line_lengths(path, pos, seg, max_line_bytes)
                yield pos, seg
                del seg  # not held while the next line is read (64 MB lines)
                pos = seg_end
                if pos >= end:
                    return
                if cut < len(blk) and alone:
                    pending_len = 0
                    blk = blk[cut:]
                    continue
                if cut < len(blk):
                    rest = blk[cut:]
                    pending = [rest]
                    pending_len = len(rest)
                    if pending_len > max_line_bytes:
                        raise _too_large(path, pos, max_line_bytes)
                else:
                    pending_len = 0
        blk = f.read(_read_size(nxt, end, block_size))
        if not blk:
            _check_not_shrunk(path, nxt, end)
            if pending:
                yield pos, b"".join(pending)  # the file's last line, without '\n'
            return
        nxt += len(blk)


def _check_not_shrunk(path: str, at: int, end: int) -> None:
    """The file ended at ``at``, before its split's ``end``: it had at least
    ``end`` bytes when the job listed it, so it shrank, and its lines would
    be counted in part."""
    if at < end != _NO_END:
        raise storage.shrunk(path, end)


@contextmanager
def open_split(split: Split) -> Iterator[tuple[IO[bytes], Any]]:
    """The split's file as bytes (through its decompressor when it is read
    whole), and that decompressor (None for plain bytes). Closing a
    decompressor leaves the file it was given open: both are closed here."""
    path = split.path
    try:
        raw = rangereader.open_input(path, whole=split.whole, size=split.end)
    except OSError as e:
        raise InputError(f"cannot open input {storage.redact(path)}: {e.strerror or e}",
                         path=path) from e
    except storage.StorageError as e:
        raise InputError(str(e), path=path) from e
    with raw:
        decompress = (_DECOMPRESSORS.get(os.path.splitext(storage.suffixed(path))[1])
                      if split.whole else None)
        if decompress is None:
            yield raw, None
        else:
            with decompress(raw) as f:
                yield f, decompress


def read_file_bytes(split: Split) -> bytes:
    """All the bytes of a split's file (decompressed), for readers of whole
    files; the split must start at 0 (``split_by = "file"``)."""
    if split.start:
        raise ValueError("read_file_bytes reads whole files: use split_by = 'file'")
    with open_split(split) as (f, decompress):
        try:
            if split.whole:
                return f.read()
            parts, left = [], split.end
            while left and (block := f.read(left)):
                parts.append(block)
                left -= len(block)
            _check_not_shrunk(split.path, split.end - left, split.end)
            return b"".join(parts)
        except (OSError, EOFError, storage.StorageError) as e:
            what = ("corrupt or truncated compressed input" if decompress is not None
                    else "cannot read input")
            raise InputError(f"{storage.redact(split.path)}: {what}: {e}",
                             path=split.path) from e


def segments(split: Split, max_line_bytes: int, block_size: int) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) runs of whole lines owned by split.

    Each run ends with b'\\n' except the unterminated last line of a file.
    """
    path = split.path
    shown = storage.redact(path)
    if split.whole:
        start, end = 0, _NO_END
    else:
        if split.start >= split.end:
            return
        start, end = split.start, split.end
    with open_split(split) as (f, decompress):
        try:
            yield from _segments_of(f, shown, start, end, max_line_bytes, block_size)
        except storage.StorageError as e:
            raise InputError(str(e), path=path) from e
        except Exception as e:
            # Only reading runs in here (the map consumes what we yield), but
            # a store's client (aiohttp) and a decompressor (zstd) raise
            # their own errors.
            if not (isinstance(e, (OSError, EOFError)) or storage.is_remote(path)
                    or decompress is not None):
                raise
            what = ("corrupt or truncated compressed input" if decompress is not None
                    else "cannot read input")
            raise InputError(f"{shown}: {what}: {storage.describe(e)}", path=path) from e


def _line_batches(
    split: Split, encoding: str, errors: str, max_line_bytes: int, block_size: int
) -> Iterator[Iterator[tuple[int, str]]]:
    transparent = check_codec(encoding, errors)
    path = split.path
    for pos, seg in segments(split, max_line_bytes, block_size):
        terminated = seg[-1] == 10  # b"\n"
        if terminated and len(seg) > block_size and seg.find(b"\n") == len(seg) - 1:
            # One long line: decoded without its end, it is the line (no
            # copy of 64 MB made by split, with the bytes and text held).
            end = len(seg) - 1 - (seg[-2] == 13)  # b"\r"
            try:
                line = str(memoryview(seg)[:end], encoding, errors)
            except UnicodeDecodeError as e:
                raise decode_error(path, pos, encoding, e) from e
            del seg
            yield iter(((pos, line),))
            del line
            continue
        try:
            text = seg.decode(encoding, errors)
        except UnicodeDecodeError as e:
            raise decode_error(path, pos + seg.rfind(b"\n", 0, e.start) + 1, encoding, e) from e
        crlf = "\r" in text
        # Strip exactly one '\r' before each '\n' (replace does not overlap).
        stripped = text.replace("\r\n", "\n") if crlf else text
        lines = stripped.split("\n")
        if terminated:
            lines.pop()
        elif crlf and lines[-1].endswith("\r"):
            lines[-1] = lines[-1][:-1]
        # Offsets need each line's length in the file: the fast paths read it
        # off the decoded lines when characters are bytes (ASCII text).
        ascii_text = transparent and seg.isascii()
        if ascii_text and not crlf:
            lengths, step = map(len, lines), _ONES
        elif ascii_text and terminated and len(text) - len(stripped) == len(lines):
            lengths, step = map(len, lines), _TWOS  # a Windows file: all '\r\n'
        else:
            raw = seg.split(b"\n")
            if terminated:
                raw.pop()
            if len(raw) != len(lines):
                # The codec made or swallowed newlines: decode line by line.
                lines = [_strip_cr(s) for s in _decode_each(path, pos, raw, encoding, errors)]
            lengths, step = map(len, raw), _ONES
        batch = zip(accumulate(map(add, lengths, step), initial=pos), lines)
        # What the batch no longer needs goes before the next segment is read.
        del seg, text, stripped, lines, lengths
        yield batch


def _strip_cr(line: str) -> str:
    return line[:-1] if line.endswith("\r") else line


def _byte_line_batches(split: Split, max_line_bytes: int, block_size: int
                       ) -> Iterator[Iterator[tuple[int, bytes]]]:
    """_line_batches' lines left as bytes: each line's length in the file
    is its length, plus the '\\r' stripped from it."""
    for pos, seg in segments(split, max_line_bytes, block_size):
        raw = seg.split(b"\n")
        if seg[-1] == 10:  # b"\n"
            raw.pop()
        lines = [_strip_byte_cr(line) for line in raw] if b"\r" in seg else raw
        batch = zip(accumulate(map(add, map(len, raw), _ONES), initial=pos), lines)
        del seg, raw, lines
        yield batch


def _strip_byte_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def _decode_each(
    path: str, pos: int, raw: list[bytes], encoding: str, errors: str
) -> Iterator[str]:
    for line in raw:
        try:
            yield line.decode(encoding, errors)
        except UnicodeDecodeError as e:
            raise decode_error(path, pos, encoding, e) from e
        pos += len(line) + 1


def read_lines(
    split: Split,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    *,
    block_size: int = BLOCK_SIZE,
) -> Iterator[tuple[int, Any]]:
    """Yield (byte offset, line) for every line that starts inside the split.

    The offset is in the uncompressed file; the line comes without its
    '\\n' and without one trailing '\\r'. The last line is read past
    split.end, and a split with start > 0 skips the partial line it begins in,
    so across all the splits of a file each line is read exactly once,
    whatever the split size. Raises RecordTooLarge for a line over
    max_line_bytes (bytes, without the '\\n') and InputDecodeError for a line
    that does not decode. The encoding must be ASCII-compatible (UTF-8,
    Latin-1...): lines are cut at b'\\n' before decoding. ``encoding``
    None: the lines are the file's bytes, undecoded (a job's
    ``input_bytes``).
    """
    _check_positive("max_line_bytes", max_line_bytes)
    _check_positive("block_size", block_size)
    if encoding is None:
        return chain.from_iterable(_byte_line_batches(split, max_line_bytes, block_size))
    check_codec(encoding, errors)  # fail at the call, not at the first next()
    # chain(zip(...)) keeps the per-line step in C: Python runs once per block.
    return chain.from_iterable(_line_batches(split, encoding, errors, max_line_bytes, block_size))


def _decode_chunk(path: str, pos: int, data: bytes, encoding: str | None, errors: str
                  ) -> tuple[int, Any]:
    if encoding is None:
        if b"\r" in data:  # what the str text below gets done to it
            data = data.replace(b"\r\n", b"\n")
            if data.endswith(b"\r"):
                data = data[:-1] + b"\n"
        return pos, data
    try:
        text = data.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise decode_error(path, pos + data.rfind(b"\n", 0, e.start) + 1, encoding, e) from e
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        # Only the file's last line ends so: the '\r' ends it, as read_lines
        # has it, and an empty one ('\n\r') stays a line of the text.
        if text.endswith("\r"):
            text = text[:-1] + "\n"
    return pos, text


def _chunks(
    split: Split,
    target_bytes: int,
    encoding: str | None,
    errors: str,
    max_line_bytes: int,
    block_size: int,
) -> Iterator[tuple[int, Any]]:
    path = split.path
    parts: list[bytes] = []  # whole lines of the chunk being gathered
    parts_len = 0
    first = 0  # offset of its first line
    for pos, seg in segments(split, max_line_bytes, block_size):
        i, n = 0, len(seg)
        while i < n:
            if not parts:
                first = pos + i
            need = target_bytes - parts_len
            if n - i < need:
                parts.append(seg[i:] if i else seg)
                parts_len += n - i
                break
            # End the chunk with the line that reaches target_bytes.
            j = seg.find(b"\n", i + need - 1)
            j = n if j < 0 else j + 1
            parts.append(seg[i:j] if i or j < n else seg)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            yield _decode_chunk(path, first, data, encoding, errors)
            parts, parts_len, i = [], 0, j
    if parts:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        yield _decode_chunk(path, first, data, encoding, errors)


def read_chunks(
    split: Split,
    target_bytes: int = 4 << 20,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    *,
    block_size: int = CHUNK_BLOCK_SIZE,
) -> Iterator[tuple[int, Any]]:
    """Yield (offset of the first line, text) chunks of whole lines, about target_bytes each.

    For batch map functions that handle much text at once (e.g.
    Counter(text.split())) at a fraction of the per-line cost. The lines and
    their ownership are exactly read_lines': a chunk's text is
    '\\n'.join(its lines) + '\\n', except that the file's last line gets no
    '\\n' if it had no line end (a last '\\r' is one). A chunk holds at
    least target_bytes of the file unless it is the split's last, and ends
    with the line that reaches it.
    ``encoding`` None: the chunks are bytes, undecoded.
    """
    _check_positive("target_bytes", target_bytes)
    _check_positive("max_line_bytes", max_line_bytes)
    _check_positive("block_size", block_size)
    if encoding is not None:
        check_codec(encoding, errors)
    return _chunks(split, target_bytes, encoding, errors, max_line_bytes, block_size)
