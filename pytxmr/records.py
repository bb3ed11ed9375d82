"""The record format of spill files and of the shuffle wire.

A map's output for one partition is a *segment*: a sequence of frames, each
holding a batch of ``(key, values)`` records packed with msgpack. The same
bytes are written by the map child, stored and served by the tasktracker
without being decoded, and read by the reduce child. Nothing here is pickle:
a segment written on another host only ever decodes to plain data.

Format version 3 (see docs/record-format.md)::

    frame   = header payload
    header  = codec:u8  length:u32be  crc32:u32be     (9 bytes)
    payload = msgpack array [k1, vs1, k2, vs2, ...]   (codec 1)
            | size:u32le lz4-block(msgpack array)       (codec 2)
            | msgpack array [k1, v1, k2, v2, ...]     (codec | PAIRS)
            | nothing                                   (RUN_BREAK)

``vs`` is a list of values; a PAIRS frame holds records of one value each
(no list per value), read back as ``(key, (value,))``. A RUN_BREAK ends one
sorted run of a segment and starts another: a map's spills are stored one
after the other rather than merged (``segment_runs``). Tuples travel as msgpack ext type 1 and integers
beyond 64 bits as ext type 2, so that both come back as what was sent. The
crc32 covers the codec byte and the payload as stored (``frame_crc``), so
a daemon checks a compressed frame without decompressing it, and every
reader takes both codecs.
"""

from __future__ import annotations

import os
import struct
import zlib
from itertools import chain, islice
from operator import itemgetter
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import msgpack

FORMAT_VERSION = 3
CODEC_MSGPACK = 1
#: The msgpack payload compressed with LZ4 (``lz4.block``, its size first).
CODEC_LZ4 = 2
_CODECS = frozenset({CODEC_MSGPACK, CODEC_LZ4})
#: A flag of the codec byte (since format 2): the payload is ``[k1, v1, ...]``,
#: records of one value each, which then cost no list to write or read.
PAIRS = 0x10
#: The codec byte of an empty frame (since format 2) between two sorted runs of
#: one segment: spills kept apart cost no decoding merge on the map side.
RUN_BREAK = 0x20
RUN_BREAK_FRAME = struct.pack(">BII", RUN_BREAK, 0, 0)
_FRAME_CODECS = _CODECS | {c | PAIRS for c in _CODECS}
#: Each codec byte's crc32, which a frame's goes on from: a flipped PAIRS
#: flag would read the records wrongly rather than fail to.
_CODEC_CRCS = {c: zlib.crc32(bytes((c,))) for c in _FRAME_CODECS}
#: What a job may ask for as ``compress`` (None: plain frames).
COMPRESSION_CODECS = {"lz4": CODEC_LZ4}
FRAME_HEADER = struct.Struct(">BII")
#: Records per frame: large enough to amortise the per-frame cost, small
#: enough that a reader holds little (a frame is decoded whole).
FRAME_RECORDS = 4096
#: A frame larger than this is refused on reading: a corrupt or hostile
#: length field must not make a reader allocate gigabytes. It is also the
#: largest a single (key, values) record may encode to.
MAX_FRAME_BYTES = 256 << 20
#: Writers cut frames at about this size as well as at FRAME_RECORDS. A
#: merge holds a frame of each of its runs (merge.MERGE_FACTOR): frames of
#: 8 MiB took a reduce of 2 KB values past 1 GB.
FRAME_TARGET_BYTES = 1 << 20
#: Records (values, of one key's record) ``_flush`` packs first to size a
#: frame's payload before it packs the whole.
_SAMPLE = 16

_EXT_TUPLE = 1
_EXT_BIGINT = 2
#: Tuples nest at most this deep: each level re-enters msgpack, and a
#: deeper key (or a hostile frame) would overflow the C stack.
MAX_NESTING = 64
_depth = [0]
# Lone surrogates come from inputs decoded with errors="surrogateescape";
# they must survive the round trip.
_UNICODE_ERRORS = "surrogatepass"

Record = tuple[Any, Sequence[Any]]


class CorruptFrame(ValueError):
    """A frame failed its checksum or does not parse: never merge it."""


class RecordTooLarge(ValueError):
    """One record encodes to more than a frame may hold."""


class RecordTypeError(TypeError):
    """A map or reduce emitted a key or value of a type pytxmr cannot carry."""


def short_repr(value: Any, limit: int = 100) -> str:
    """A key or value in an error message: at most ``limit`` characters,
    and never an error of its own (a user's ``__repr__``, an int beyond
    Python's 4300 digits)."""
    try:
        text = repr(value)
    except Exception:
        if type(value) is int:
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__qualname__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


class CodecUnavailable(RuntimeError):
    """A frame codec needs a package this Python does not have."""


def _lz4_block() -> Any:
    try:
        import lz4.block
    except ImportError:
        raise CodecUnavailable(
            "lz4 compression needs the lz4 package, which this Python does not have: "
            "pip install lz4 (or 'pytxmr[lz4]')") from None
    return lz4.block


def codec_for(compress: str | None) -> int:
    """The frame codec of a job's ``compress`` option (None: plain msgpack).
    Raises ValueError for an unknown name, CodecUnavailable when its package
    is missing."""
    if compress is None:
        return CODEC_MSGPACK
    codec = COMPRESSION_CODECS.get(compress)
    if codec is None:
        names = ", ".join(repr(n) for n in COMPRESSION_CODECS)
        raise ValueError(f"unknown compression codec {compress!r}: use {names} or none")
    _lz4_block()
    return codec


def _pack_tuple(obj: tuple) -> msgpack.ExtType:
    if _depth[0] >= MAX_NESTING:
        raise RecordTypeError(f"tuples nested deeper than {MAX_NESTING} levels: {obj!r:.200}")
    _depth[0] += 1
    try:
        return msgpack.ExtType(_EXT_TUPLE, _packer().pack(list(obj)))
    finally:
        _depth[0] -= 1


def int_to_bytes(n: int) -> bytes:
    """Two's complement, big-endian: exact for ints of any size (decimal
    text is refused beyond 4300 digits by Python 3.11)."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def _pack_default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        return _pack_tuple(obj)
    if t is int:
        return msgpack.ExtType(_EXT_BIGINT, int_to_bytes(obj))
    # Subclasses of the plain types (IntEnum, str subclasses...) travel as
    # their base type: strict_types sends them here.
    for base in (bool, int, float, str, bytes, list, dict):
        if isinstance(obj, base):
            # str's own value: str() of a (str, Enum) member is "Color.RED".
            return str.__str__(obj) if base is str else base(obj)
    if isinstance(obj, tuple):
        return _pack_tuple(tuple(obj))
    raise RecordTypeError(
        f"unsupported type {t.__module__}.{t.__qualname__}: {obj!r:.200}; "
        "keys may be str, bytes, int, float, bool, None or tuples of these, "
        "values also lists and dicts"
    )


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        if _depth[0] >= MAX_NESTING:
            raise CorruptFrame(f"tuples nested deeper than {MAX_NESTING} levels")
        _depth[0] += 1
        try:
            items = _unpack(data)
        finally:
            _depth[0] -= 1
        if type(items) is not list:
            raise CorruptFrame("a tuple ext does not hold an array")
        return tuple(items)
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise CorruptFrame(f"unknown msgpack ext type {code}")


def _packer() -> msgpack.Packer:
    return msgpack.Packer(
        default=_pack_default,
        strict_types=True,
        use_bin_type=True,
        unicode_errors=_UNICODE_ERRORS,
    )


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data,
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
        unicode_errors=_UNICODE_ERRORS,
    )


def _frame(payload: bytes, codec: int, flags: int = 0) -> bytes:
    """The frame of a msgpack ``payload``, compressed if ``codec`` says so;
    ``flags`` (PAIRS or 0) go into its codec byte."""
    if codec == CODEC_LZ4:
        packed = _lz4_block().compress(payload, store_size=True)
        # Frames are self-describing: one that does not shrink is stored
        # plain, and its reader skips the decompression.
        if len(packed) < len(payload):
            return FRAME_HEADER.pack(CODEC_LZ4 | flags, len(packed),
                                     frame_crc(CODEC_LZ4 | flags, packed)) + packed
    return FRAME_HEADER.pack(CODEC_MSGPACK | flags, len(payload),
                             frame_crc(CODEC_MSGPACK | flags, payload)) + payload


def encode_frame(records: list[Record], packer: msgpack.Packer | None = None,
                 codec: int = CODEC_MSGPACK) -> bytes:
    """One frame holding ``records`` (a list of ``(key, values)`` pairs)."""
    return _frame((packer or _packer()).pack(list(chain.from_iterable(records))), codec)


def _decompress(data: bytes) -> bytes:
    """The msgpack payload of an LZ4 frame; its stated size is checked
    before anything is allocated."""
    if len(data) < 4:
        raise CorruptFrame("lz4 frame payload too short")
    size = int.from_bytes(data[:4], "little")
    if size > MAX_FRAME_BYTES:
        raise CorruptFrame(f"lz4 frame decompresses to {size} bytes, over the frame limit")
    block = _lz4_block()
    try:
        return block.decompress(data)  # fails unless exactly ``size`` bytes come out
    except (block.LZ4BlockError, ValueError) as e:
        raise CorruptFrame(f"lz4 frame does not decompress: {e}") from None


def frame_crc(codec: int, payload: bytes) -> int:
    """The crc32 of a frame's codec byte and payload (the payload as
    stored); ``codec`` one of the frames' codecs, not RUN_BREAK."""
    return zlib.crc32(payload, _CODEC_CRCS[codec])


def decode_payload(codec: int, payload: bytes, crc: int) -> list[Any]:
    """The flat ``[k1, vs1, ...]`` list of a frame (``[k1, v1, ...]`` for
    a PAIRS frame), checked against its crc."""
    if codec not in _FRAME_CODECS:
        raise CorruptFrame(f"unknown frame codec {codec}")
    if frame_crc(codec, payload) != crc:
        raise CorruptFrame("frame checksum mismatch")
    if codec & ~PAIRS == CODEC_LZ4:
        payload = _decompress(payload)
    try:
        flat = _unpack(payload)
    except CorruptFrame:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise CorruptFrame(f"frame does not decode: {e}") from None
    if type(flat) is not list or len(flat) % 2:
        raise CorruptFrame("frame payload is not a record list")
    return flat


def _lists_of_values(records: list[Record]) -> list[Any]:
    """``[k1, vs1, ...]`` of streamed records, every ``vs`` a list: a merge
    gives the values of PAIRS frames as 1-tuples, which msgpack would
    store as tuple values."""
    flat = list(chain.from_iterable(records))
    flat[1::2] = map(list, flat[1::2])
    return flat


_first, _second = itemgetter(0), itemgetter(1)


#: Containers are judged by a few of their items: a guess per item let a
#: merge gather 4,096 dicts of 120 KB each (350 MB) for one frame.
_CONTAINERS = frozenset({list, tuple, dict})
#: The types a streamed write sizes in one lookup: True, a byte a
#: character; False, ``weight``'s sample (numbers: not looked at).
_SIZED = {str: True, bytes: True, **dict.fromkeys(_CONTAINERS, False)}
_ITEMS_SAMPLED = 2
#: A container of at most this many items is weighed whole: a record's
#: fields, a 100 KB body after an id and a time stamp (judged by those two,
#: 4,096 such values were gathered for one frame: 750 MB).
_ITEMS_WHOLE = 8
_DEPTH_SAMPLED = 3
#: A streamed write weighs a container value once every this many records
#: (about 5 us for a JSON event's dict: merges of them ran 2.3 times as
#: long when it weighed each), its records' shapes alike.
_REWEIGH = 16


def weight(obj: Any, depth: int = 0) -> int:
    """About the bytes ``obj`` encodes to, counted cheaply: from a str's or
    bytes' length, a container's from its length and a few of its items,
    a number's few."""
    t = type(obj)
    if t is str or t is bytes:
        return len(obj)
    if t not in _CONTAINERS or not obj:
        return 9
    n = len(obj)
    if depth >= _DEPTH_SAMPLED:
        return 16 * n
    if t is dict:
        if n <= _ITEMS_WHOLE:
            return sum(weight(k, depth + 1) + weight(v, depth + 1) for k, v in obj.items())
        head = [weight(k, depth + 1) + weight(v, depth + 1)
                for k, v in islice(obj.items(), _ITEMS_SAMPLED)]
        k, v = next(reversed(obj.items()))
        last = weight(k, depth + 1) + weight(v, depth + 1)
    else:
        if n <= _ITEMS_WHOLE:
            return sum(weight(x, depth + 1) for x in obj)
        head = [weight(x, depth + 1) for x in obj[:_ITEMS_SAMPLED]]
        last = weight(obj[-1], depth + 1)
    # The last item as itself (a row's text field), the others as the first.
    return last + (n - 1) * sum(head) // len(head)


def _flat(pairs: list[tuple[Any, Any]]) -> list[Any]:
    """``[k1, v1, k2, v2, ...]`` of 2-tuples: two passes of C calls, a sixth
    faster than chaining them (one tuple iterator each) on a sorted spill,
    whose tuples lie scattered in memory."""
    flat: list[Any] = [None] * (2 * len(pairs))
    flat[0::2] = map(_first, pairs)
    flat[1::2] = map(_second, pairs)
    return flat


class SegmentWriter:
    """Writes records to a file as frames of ``codec``; counts what it wrote
    (``bytes`` as stored)."""

    def __init__(self, f: BinaryIO, frame_records: int = FRAME_RECORDS,
                 codec: int = CODEC_MSGPACK) -> None:
        if codec not in _CODECS:
            raise ValueError(f"unknown frame codec {codec}")
        if codec == CODEC_LZ4:
            _lz4_block()  # fail now, not at the first full frame
        self._f = f
        self._frame_records = frame_records
        self._codec = codec
        self._packer = _packer()
        self.records = 0
        self.bytes = 0

    def write(self, records: Iterable[Record]) -> None:
        n = self._frame_records
        if type(records) is list:
            # A spill's sorted partition: slices, without a step per record.
            for i in range(0, len(records), n):
                self._flush(_flat(records[i:i + n]))
            return
        batch: list[Record] = []
        append = batch.append
        values = size = 0
        target = FRAME_TARGET_BYTES
        weighed = per_container = 0
        for r in records:
            append(r)
            # Values and their bytes (judged by the first; inline, but for
            # a container's), not records: a merge's records of one key of
            # many values each, or of 100 KB values, held 400 MB.
            vs = r[1]
            count = len(vs)
            values += count
            if count:
                first = vs[0]
                by_length = _SIZED.get(type(first))
                if by_length:
                    size += len(first) * count
                elif by_length is not None:
                    if not weighed % _REWEIGH:
                        per_container = weight(first)
                    weighed += 1
                    size += per_container * count
            if values >= n or size >= target:
                self._flush(_lists_of_values(batch))
                batch = []
                append = batch.append
                values = size = 0
        if batch:
            self._flush(_lists_of_values(batch))

    def write_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        """Records of one value each, given as ``(key, value)`` tuples (a
        map's pairs, a folding combiner's totals): PAIRS frames."""
        n = self._frame_records
        for i in range(0, len(pairs), n):
            self._flush(_flat(pairs[i:i + n]), PAIRS)

    def _flush(self, flat: list[Any], flags: int = 0) -> None:
        """Write the records ``[k1, vs1, k2, vs2, ...]`` (``[k1, v1, ...]``
        with PAIRS in ``flags``) as a frame."""
        # Sizes are those of the msgpack payload: a reader decompresses it whole.
        pieces = self._pieces(flat, flags)
        if pieces > 1:
            # Big values, sized from a sample: packed whole first, 4,096 of
            # 100 KB took a map to four times its buffer.
            self._cut(flat, flags, pieces)
            return
        payload = self._packer.pack(flat)
        size = FRAME_HEADER.size + len(payload)
        if size > FRAME_TARGET_BYTES and (len(flat) > 2 or (
                not flags & PAIRS and len(flat[1]) > 1
                # The values' share: each piece repeats the key (a key of
                # 1 MiB was written once per value).
                and size - len(self._packer.pack(flat[0])) > FRAME_TARGET_BYTES)):
            del payload  # not held while its halves are packed
            self._cut(flat, flags, 2)
            return
        if len(payload) > MAX_FRAME_BYTES:
            raise RecordTooLarge(
                f"the record of key {flat[0]!r:.100} encodes to {size:,} bytes, more than "
                f"the {MAX_FRAME_BYTES:,} a record may have")
        frame = _frame(payload, self._codec, flags)
        self._f.write(frame)
        self.records += len(flat) // 2
        self.bytes += len(frame)

    def _pieces(self, flat: list[Any], flags: int) -> int:
        """Into how many frames of about FRAME_TARGET_BYTES ``flat`` goes,
        from its first records' (or its one record's first values') size."""
        if len(flat) > 2:
            # A quarter at most: records of many values each (one key's,
            # cut by a merge) are few to a frame.
            whole, sample = len(flat), flat[:2 * max(1, min(_SAMPLE, len(flat) // 8))]
        elif not flags & PAIRS and len(flat[1]) > _SAMPLE:
            whole, sample = len(flat[1]), flat[1][:_SAMPLE]
        else:
            return 1
        if len(sample) == whole:
            return 1
        estimate = len(self._packer.pack(sample)) * whole // len(sample)
        return -(-estimate // FRAME_TARGET_BYTES)

    def _cut(self, flat: list[Any], flags: int, pieces: int) -> None:
        """Write ``flat`` as ``pieces`` frames: of records, or of one key's
        many values (a combiner's, a merge's of many spills) as consecutive
        records of that key, as a run may hold (one record of them all
        failed a job over 256 MiB)."""
        if len(flat) > 2:
            step = -(-len(flat) // (2 * pieces)) * 2
            for i in range(0, len(flat), step):
                self._flush(flat[i:i + step], flags)
            return
        key, values = flat
        step = -(-len(values) // pieces)
        for i in range(0, len(values), step):
            self._flush([key, values[i:i + step]])


def _headers(f: BinaryIO, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
    """``(codec, size, crc)`` of each frame of the segment at ``offset``;
    the caller reads (or skips) the ``size`` bytes of each payload before
    asking for the next. Raises CorruptFrame for a header that is cut or
    whose length runs past the segment or over the frame limit."""
    f.seek(offset)
    remaining = length
    hsize = FRAME_HEADER.size
    while remaining > 0:
        header = f.read(hsize)
        if len(header) != hsize or remaining < hsize:
            raise CorruptFrame("truncated frame header")
        codec, size, crc = FRAME_HEADER.unpack(header)
        if size > MAX_FRAME_BYTES or size > remaining - hsize:
            raise CorruptFrame(f"frame length {size} exceeds its segment")
        if codec == RUN_BREAK and (size or crc):
            raise CorruptFrame("a run break with a payload")
        remaining -= hsize + size
        yield codec, size, crc


def read_frames(f: BinaryIO, offset: int, length: int) -> Iterator[list[Record]]:
    """The records of the segment at ``offset``, a frame's list at a time
    (one frame in memory). Run breaks are passed over: the runs of a
    segment come one after the other (``segment_runs`` tells them apart)."""
    for codec, size, crc in _headers(f, offset, length):
        if codec == RUN_BREAK:
            continue
        payload = f.read(size)
        if len(payload) != size:
            raise CorruptFrame("truncated frame payload")
        it = iter(decode_payload(codec, payload, crc))
        # A PAIRS frame's values come as 1-tuples, made in C by zip.
        yield list(zip(it, zip(it) if codec & PAIRS else it))


def largest_frame(path: str, offset: int, length: int) -> int:
    """The largest payload of the segment at ``offset`` in ``path`` (what
    a reader of it holds at once), from the frames' headers alone and an
    LZ4 frame's stated size (its stored one was 250 times smaller)."""
    largest = 0
    with open(path, "rb") as f:
        for codec, stored, _ in _headers(f, offset, length):
            size = stored
            if codec & ~PAIRS == CODEC_LZ4 and stored >= 4:
                size = int.from_bytes(f.read(4), "little")
                stored -= 4
            f.seek(stored, 1)
            largest = max(largest, size)
    return largest


def segment_runs(path: str, offset: int, length: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of each sorted run of the segment at ``offset``
    in ``path``, from the frames' headers alone (no payload is read)."""
    runs = []
    start = pos = offset
    with open(path, "rb") as f:
        for codec, size, _ in _headers(f, offset, length):
            if codec == RUN_BREAK:
                runs.append((start, pos - start))
                start = pos + FRAME_HEADER.size
            else:
                f.seek(size, 1)
            pos += FRAME_HEADER.size + size
    runs.append((start, pos - start))
    return [r for r in runs if r[1] > 0]


def iter_frames_file(path: str, offset: int = 0, length: int | None = None) -> Iterator[list[Record]]:
    """The frames of a segment stored in ``path``; the file is closed at the end."""
    # A tiny run needs no 1 MB buffer (thousands of tiny maps' runs).
    buffering = 1 << 20 if length is None else min(1 << 20, max(length, 8192))
    with open(path, "rb", buffering=buffering) as f:
        if length is None:
            f.seek(0, 2)
            length = f.tell() - offset
        yield from read_frames(f, offset, length)


def verify_segment(path: str, offset: int = 0, length: int | None = None) -> int:
    """Check the checksum of every frame of the segment at ``offset`` in
    ``path`` (the whole file by default); its frame count (run breaks
    included). Raises CorruptFrame: a fetcher discards such a run and
    fetches it again. Compressed frames are checked as stored: no codec
    package is needed."""
    frames = 0
    # A tiny run needs no 1 MB buffer (thousands of tiny maps' runs).
    buffering = 1 << 20 if length is None else min(1 << 20, max(length, 8192))
    with open(path, "rb", buffering=buffering) as f:
        if length is None:
            length = os.fstat(f.fileno()).st_size - offset
        for codec, size, crc in _headers(f, offset, length):
            if codec not in _FRAME_CODECS and codec != RUN_BREAK:
                raise CorruptFrame(f"bad frame header: unknown codec {codec}")
            payload = f.read(size)
            if len(payload) != size:
                raise CorruptFrame("truncated frame payload")
            if codec != RUN_BREAK and frame_crc(codec, payload) != crc:
                raise CorruptFrame("frame checksum mismatch")
            frames += 1
    return frames
