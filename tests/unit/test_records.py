"""Unit tests for pytxmr.records: the frame format of spill files and of the shuffle."""

from __future__ import annotations

import collections
import enum
import io
import struct
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segments import iter_segment_file, read_segment
from strategies import assert_same, keys, values

from pytxmr.records import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    PAIRS,
    RUN_BREAK,
    RUN_BREAK_FRAME,
    CorruptFrame,
    RecordTypeError,
    SegmentWriter,
    decode_payload,
    encode_frame,
    read_frames,
    segment_runs,
    verify_segment,
)

# ---------------------------------------------------------------- helpers


def roundtrip(records: list[tuple[Any, list[Any]]]) -> list[tuple[Any, list[Any]]]:
    frame = encode_frame(records)
    return list(read_segment(io.BytesIO(frame), 0, len(frame)))


def read_all(data: bytes, length: int | None = None) -> list[tuple[Any, list[Any]]]:
    return list(read_segment(io.BytesIO(data), 0, len(data) if length is None else length))


def frame_of(payload: bytes, codec: int = 1) -> bytes:
    """A frame with a correct header and checksum around any payload."""
    return FRAME_HEADER.pack(codec, len(payload), zlib.crc32(bytes((codec,)) + payload)) + payload


def sample_frame() -> bytes:
    return encode_frame([("a", [1, 2]), ((1, "b"), [None, b"x"]), (2**70, [{"k": [1.5]}])])


def sample_pairs_frame() -> bytes:
    buf = io.BytesIO()
    SegmentWriter(buf).write_pairs([("a", 1), ("b", [2]), ("c", 3)])
    assert buf.getvalue()[0] == PAIRS | 1
    return buf.getvalue()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "key",
    [
        "",
        "plain",
        "caf\u00e9 \u65e5\u672c \U0001f600",
        "lone \udc80\udcff surrogates \ud800",
        b"",
        b"\x00\xff bytes",
        0,
        -1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        10**40,
        -(10**40),
        0.5,
        -0.0,
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        (),
        (1,),
        (1, "a", (2.5, (None, b"z")), True),
    ],
    ids=repr,
)
def test_every_key_type_round_trips_with_its_type(key: Any) -> None:
    """A key must come back as exactly what was sent: equal is not enough (1 vs True vs 1.0)."""
    [(k, vs)] = roundtrip([(key, [key])])
    assert_same(k, key)
    assert_same(vs, [key])


def test_tuple_comes_back_as_tuple_and_list_as_list() -> None:
    """msgpack alone turns tuples into lists; keys and composite values depend on the difference."""
    value = [(1, [2, (3,)]), [(4,)], {"t": (5, 6), "l": [5, 6]}]
    [(k, [v])] = roundtrip([((1, (2, 3)), [value])])
    assert type(k) is tuple and type(k[1]) is tuple
    assert type(v) is list
    assert type(v[0]) is tuple and type(v[0][1]) is list and type(v[0][1][1]) is tuple
    assert type(v[1]) is list and type(v[1][0]) is tuple
    assert type(v[2]["t"]) is tuple and type(v[2]["l"]) is list
    assert_same(v, value)


def test_dict_values_with_tuple_and_int_keys_round_trip() -> None:
    """Dict values may have any key kind, tuples included (msgpack's strict map keys would refuse them)."""
    value = {1: "one", (1, "a"): [2], None: b"n", b"k": {"x": 2**80}, 2.5: True}
    [(_, [v])] = roundtrip([("k", [value])])
    assert_same(v, value)


def test_nan_value_round_trips() -> None:
    """A NaN value must survive (it is a float like any other)."""
    [(_, [v])] = roundtrip([("k", [float("nan")])])
    assert type(v) is float and v != v


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(keys, st.lists(values, max_size=3)), max_size=6))
def test_any_supported_records_round_trip(records: list[tuple[Any, list[Any]]]) -> None:
    """Whatever a job may emit comes back with the same types and values, in order."""
    assert_same([list(r) for r in roundtrip(records)], [list(r) for r in records])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(keys, st.lists(keys, max_size=2)), max_size=25),
    st.integers(1, 7),
)
def test_segment_writer_splits_into_frames_and_reads_back(
    records: list[tuple[Any, list[Any]]], frame_records: int
) -> None:
    """Segments hold many frames; a reader must see the records of all of them in order."""
    buf = io.BytesIO()
    buf.write(b"junk before")
    offset = buf.tell()
    writer = SegmentWriter(buf, frame_records=frame_records)
    writer.write(iter(records))
    buf.write(b"junk after")
    assert writer.records == len(records)
    assert writer.bytes == buf.tell() - offset - len(b"junk after")
    got = list(read_segment(buf, offset, writer.bytes))
    assert_same([list(r) for r in got], [list(r) for r in records])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(keys, values), max_size=25), st.integers(1, 7))
def test_write_pairs_stores_records_of_one_value_each(
    pairs: list[tuple[Any, Any]], frame_records: int
) -> None:
    """A map's pairs (and a folding combiner's totals) are PAIRS frames: no
    list per value, fewer bytes than (key, [value]) records, read back as
    the same records."""
    by_pairs, by_records = io.BytesIO(), io.BytesIO()
    w = SegmentWriter(by_pairs, frame_records=frame_records)
    w.write_pairs(pairs)
    SegmentWriter(by_records, frame_records=frame_records).write([(k, [v]) for k, v in pairs])
    assert (w.records, w.bytes) == (len(pairs), len(by_pairs.getvalue()))
    assert w.bytes == len(by_records.getvalue()) - len(pairs)  # one array header each
    data = by_pairs.getvalue()
    if data:
        assert data[0] == PAIRS | 1
    got = list(read_segment(by_pairs, 0, w.bytes))
    assert_same([list(r) for r in got], [[k, [v]] for k, v in pairs])


def test_a_pairs_frame_reads_its_values_as_one_tuples() -> None:
    """The merge and the reduce take a record's values as any sequence; a
    PAIRS frame's cost no Python object beyond what zip makes."""
    buf = io.BytesIO()
    SegmentWriter(buf).write_pairs([("a", 1), ("b", [2])])
    assert list(read_frames(buf, 0, len(buf.getvalue()))) == [[("a", (1,)), ("b", ([2],))]]


def test_run_breaks_part_a_segment_into_its_sorted_runs(tmp_path: Any) -> None:
    """A map's spills stored one after the other: readers pass over the
    breaks, segment_runs finds each run, verify_segment counts the breaks."""
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        f.write(b"junk")
        w = SegmentWriter(f)
        w.write_pairs([("a", 1), ("c", 2)])
        first = w.bytes
        f.write(RUN_BREAK_FRAME)
        w.write([("b", [3, 4])])
    length = w.bytes + len(RUN_BREAK_FRAME)
    assert segment_runs(str(path), 4, length) == [(4, first),
                                                 (4 + first + len(RUN_BREAK_FRAME), w.bytes - first)]
    assert iter_segment_file(str(path), 4, length) == [("a", [1]), ("c", [2]), ("b", [3, 4])]
    assert verify_segment(str(path), 4, length) == 3
    assert segment_runs(str(path), 4, first) == [(4, first)]


def test_a_run_break_with_a_payload_is_corrupt() -> None:
    bad = FRAME_HEADER.pack(RUN_BREAK, 1, 0) + b"x"
    with pytest.raises(CorruptFrame, match="run break"):
        read_all(sample_frame() + bad)


def test_iter_segment_file_reads_a_whole_file_or_a_slice(tmp_path: Any) -> None:
    """Map outputs are read both whole (spills) and by (offset, length) (one partition)."""
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        w = SegmentWriter(f, frame_records=2)
        w.write([("a", [1]), ("b", [2]), ("c", [3])])
        first = w.bytes
        w.write([("d", [4])])
    assert [k for k, _ in iter_segment_file(str(path))] == ["a", "b", "c", "d"]
    assert list(iter_segment_file(str(path), first, w.bytes - first)) == [("d", [4])]
    assert list(iter_segment_file(str(path), 0, first)) == [("a", [1]), ("b", [2]), ("c", [3])]


def test_subclasses_of_plain_types_travel_as_their_base_type() -> None:
    """IntEnum, str subclasses and named tuples are common in user code and must not fail."""

    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    Point = collections.namedtuple("Point", "x y")
    [(k, vs)] = roundtrip([(Point(1, Name("a")), [Colour.RED, Name("b")])])
    assert_same(k, (1, "a"))
    assert_same(vs, [1, "b"])


def test_deeply_nested_but_reasonable_tuples_round_trip() -> None:
    """Tuples nest through an ext type per level: a few dozen levels must work."""
    key: Any = ("leaf",)
    for _ in range(50):
        key = (key, 1)
    [(k, _)] = roundtrip([(key, [key])])
    assert_same(k, key)


@pytest.mark.parametrize("key", [7**6000, -(7**6000), 2**40000 - 1], ids=["big", "-big", "2**40000-1"])
def test_int_beyond_4300_digits_round_trips(key: int) -> None:
    """The docs promise ints of any size stay exact; Python 3.11 refuses decimal text beyond 4300 digits."""
    [(k, vs)] = roundtrip([(key, [-key, (key,)])])
    assert_same(k, key)
    assert_same(vs, [-key, (key,)])


def test_decoding_deeply_nested_tuples_never_crashes_the_process() -> None:
    """Too deep a key or a hostile nested frame is refused cleanly, never a segfault of the reduce."""
    code = textwrap.dedent(
        """
        import io, zlib, msgpack
        from pytxmr.records import (FRAME_HEADER, CorruptFrame, RecordTypeError,
                                    encode_frame, read_frames)
        key = ()
        for _ in range(300):
            key = (key,)
        try:
            frame = encode_frame([(key, [1])])
        except RecordTypeError:
            print("refused")
        else:
            try:
                [[(k, _)]] = read_frames(io.BytesIO(frame), 0, len(frame))
                print("ok" if k == key else "wrong")
            except CorruptFrame:
                print("refused")
        # The same nesting crafted by hand, as a hostile peer would send it.
        inner = msgpack.packb([])
        for _ in range(300):
            inner = msgpack.packb([msgpack.ExtType(1, inner)])
        payload = msgpack.packb([msgpack.ExtType(1, inner), []])
        frame = FRAME_HEADER.pack(1, len(payload), zlib.crc32(b"\\x01" + payload)) + payload
        try:
            list(read_frames(io.BytesIO(frame), 0, len(frame)))
            print("ok")
        except CorruptFrame:
            print("refused")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-500:]}"
    lines = proc.stdout.split()
    assert len(lines) == 2 and set(lines) <= {"ok", "refused"}, proc.stdout


# ---------------------------------------------------------------- unsupported types


_UNSUPPORTED = [({1, 2}, "set"), (frozenset({1}), "frozenset"), (object(), "object"), (1j, "complex")]


def _placements(bad: Any) -> list[tuple[str, tuple[Any, list[Any]]]]:
    out = [
        ("key", (bad, [1])),
        ("key inside a tuple", ((1, bad), [1])),
        ("value", ("k", [bad])),
        ("nested value", ("k", [[1, {"a": (2, bad)}]])),
    ]
    try:
        out.append(("dict key in value", ("k", [{bad: 1}])))
    except TypeError:
        pass  # unhashable: cannot be a dict key anyway
    return out


@pytest.mark.parametrize(
    "record, name",
    [
        pytest.param(record, name, id=f"{name}-{where}")
        for bad, name in _UNSUPPORTED
        for where, record in _placements(bad)
    ],
)
def test_unsupported_types_raise_record_type_error_naming_the_type(
    record: tuple[Any, list[Any]], name: str
) -> None:
    """A user emitting a set or an object must learn which type is wrong, not get a msgpack error."""
    with pytest.raises(RecordTypeError) as info:
        encode_frame([record])
    assert name in str(info.value)
    assert isinstance(info.value, TypeError)


def test_segment_writer_raises_record_type_error_too() -> None:
    """The spill path goes through SegmentWriter, which must report the same clear error."""
    with pytest.raises(RecordTypeError, match="set"):
        SegmentWriter(io.BytesIO()).write([("k", [1]), ("j", [{3}])])


# ---------------------------------------------------------------- corruption


def test_every_flipped_payload_byte_is_detected() -> None:
    """A bit flip on disk or on the wire must never decode into wrong records."""
    frame = sample_frame()
    for i in range(FRAME_HEADER.size, len(frame)):
        for bit in (0x01, 0x80):
            data = bytearray(frame)
            data[i] ^= bit
            with pytest.raises(CorruptFrame):
                read_all(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_raises_corrupt_frame(data: st.DataObject) -> None:
    """Header or payload, any damaged byte is reported as CorruptFrame and nothing else."""
    frame = encode_frame([("k", [1, "two", (3,)]), (b"j", [None])])
    frame2 = frame + encode_frame([("z", [2**80])])
    i = data.draw(st.integers(0, len(frame2) - 1))
    x = data.draw(st.integers(1, 255))
    damaged = bytearray(frame2)
    damaged[i] ^= x
    with pytest.raises(CorruptFrame):
        read_all(bytes(damaged))


@pytest.mark.parametrize("cut", [1, 4, FRAME_HEADER.size - 1])
def test_truncated_header_raises_corrupt_frame(cut: int) -> None:
    """A file cut inside a frame header (a crashed writer) is corrupt, not empty."""
    frame = sample_frame()
    data = frame + frame[:cut]
    with pytest.raises(CorruptFrame, match="header"):
        read_all(data)
    # The segment claims more bytes than the file holds.
    with pytest.raises(CorruptFrame):
        read_all(frame[:cut], length=len(frame))


@pytest.mark.parametrize("cut", [FRAME_HEADER.size, FRAME_HEADER.size + 1, -1])
def test_truncated_payload_raises_corrupt_frame(cut: int) -> None:
    """A file cut inside a payload is corrupt, whether the segment length or the file is short."""
    frame = sample_frame()
    short = frame[:cut]
    with pytest.raises(CorruptFrame):
        read_all(short, length=len(frame))  # the file is short
    with pytest.raises(CorruptFrame):
        read_all(frame, length=len(short))  # the segment is short


@pytest.mark.parametrize("size", [MAX_FRAME_BYTES + 1, 2**32 - 1, 1 << 30])
def test_huge_length_field_raises_corrupt_frame_without_allocating(size: int) -> None:
    """A hostile length must not make a reader allocate or read gigabytes."""
    header = FRAME_HEADER.pack(1, size, 0)

    class Exploding(io.BytesIO):
        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            assert n is None or n < (1 << 20), f"tried to read {n} bytes"
            return super().read(n)

    f = Exploding(header + b"\x00" * 64)
    with pytest.raises(CorruptFrame, match="length"):
        list(read_segment(f, 0, 1 << 40))  # the segment claims to be huge too


def test_unknown_codec_raises_corrupt_frame() -> None:
    """A frame from a future format version must be refused, not misread."""
    payload = msgpack.packb(["k", [1]])
    with pytest.raises(CorruptFrame, match="codec"):
        read_all(frame_of(payload, codec=3))  # 1 is msgpack, 2 lz4 (test_compression.py)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(msgpack.packb(5), id="not a list"),
        pytest.param(msgpack.packb(["k"]), id="odd length"),
        pytest.param(b"\x92\xa5ab", id="truncated msgpack"),
        pytest.param(msgpack.packb(["k", []]) + b"\x01", id="extra data"),
        pytest.param(b"\x92\xa1\xff\x90", id="invalid utf-8"),
        pytest.param(b"\xc1", id="reserved byte"),
        pytest.param(b"\x91" * 100_000, id="deep arrays"),
        pytest.param(msgpack.packb([msgpack.ExtType(9, b""), []]), id="unknown ext type"),
        pytest.param(msgpack.packb([msgpack.ExtType(1, b"\x92\x01"), []]), id="truncated tuple"),
        pytest.param(b"\x92\xd4\xff\x00\x90", id="bad timestamp"),
    ],
)
def test_checksummed_but_malformed_payloads_raise_corrupt_frame(payload: bytes) -> None:
    """A frame with a correct checksum but a bad payload (a bug or a hostile peer) is still CorruptFrame."""
    with pytest.raises(CorruptFrame):
        read_all(frame_of(payload))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(msgpack.packb([msgpack.ExtType(1, msgpack.packb(5)), []]), id="tuple of int"),
        pytest.param(b"\x92\x81\x91\x01\x01\x90", id="list as map key"),
        pytest.param(b"\x92\x81\x80\x01\x01\x90", id="dict as map key"),
    ],
)
def test_checksummed_payloads_that_raise_type_errors_raise_corrupt_frame(payload: bytes) -> None:
    """Callers catch CorruptFrame to refetch or fail cleanly; any other exception escapes them."""
    with pytest.raises(CorruptFrame):
        read_all(frame_of(payload))


def test_decode_payload_checks_the_checksum() -> None:
    """The shuffle server may hand payloads straight to decode_payload."""
    payload = msgpack.packb(["k", [1]])
    assert decode_payload(1, payload, zlib.crc32(b"\x01" + payload)) == ["k", [1]]
    with pytest.raises(CorruptFrame, match="checksum"):
        decode_payload(1, payload, zlib.crc32(b"\x01" + payload) ^ 1)
    with pytest.raises(CorruptFrame, match="checksum"):
        decode_payload(1, payload, zlib.crc32(payload))  # the codec byte counts too


def test_a_changed_codec_byte_never_reads_as_another_frame() -> None:
    """The checksum covers the codec byte: a flipped PAIRS flag would read
    a frame's records wrongly (a list of values taken as one value) rather
    than fail, as would a plain frame taken for a compressed one."""
    for frame in (encode_frame([("k", [1, 2]), ("j", [3])]), sample_pairs_frame()):
        for x in range(1, 256):
            damaged = bytes((frame[0] ^ x,)) + frame[1:]
            with pytest.raises(CorruptFrame):
                read_all(damaged)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_corrupt_frame(data: bytes) -> None:
    """Whatever garbage a reader is given, the only failure is CorruptFrame."""
    try:
        records = read_all(data)
    except CorruptFrame:
        return
    assert records == [] and data == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0, 1, 2, 255]))
def test_random_payload_behind_a_plausible_header_raises_corrupt_frame(
    payload: bytes, codec: int
) -> None:
    """Garbage that gets past the header checks is stopped by the checksum."""
    header = FRAME_HEADER.pack(codec, len(payload), zlib.crc32(payload) ^ 0x5A5A5A5A)
    with pytest.raises(CorruptFrame):
        read_all(header + payload)


def test_empty_segment_has_no_records() -> None:
    """A partition a map produced nothing for is a zero-length segment."""
    assert read_all(b"") == []
    assert list(read_segment(io.BytesIO(sample_frame()), 5, 0)) == []


def test_frame_header_layout_is_the_documented_one() -> None:
    """The on-disk header is a documented format: codec u8, length u32be, crc32 u32be."""
    payload = msgpack.packb(["k", [1]])
    frame = encode_frame([("k", [1])])
    assert frame[:1] == b"\x01"
    assert struct.unpack(">I", frame[1:5])[0] == len(frame) - 9
    # The crc32 of the codec byte and the payload.
    assert struct.unpack(">I", frame[5:9])[0] == zlib.crc32(frame[:1] + frame[9:])
    assert frame[9:] == payload


def test_frames_are_cut_by_size_as_well_as_by_count(tmp_path: Any) -> None:
    """Big values must not make a frame that readers refuse as too large."""
    import pytxmr.records as records

    big = "x" * (3 << 20)
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        w = records.SegmentWriter(f)
        w.write([(f"k{i}", [big]) for i in range(10)])
    assert records.verify_segment(str(path)) >= 4  # 30 MB in frames of about 8 MB
    assert [k for k, _ in iter_segment_file(str(path))] == [f"k{i}" for i in range(10)]
    with open(path, "wb") as f:
        records.SegmentWriter(f).write_pairs([(f"k{i}", big) for i in range(10)])
    assert records.verify_segment(str(path)) >= 4
    assert list(iter_segment_file(str(path))) == [(f"k{i}", [big]) for i in range(10)]


def test_one_keys_many_values_are_cut_into_records_of_that_key(tmp_path: Any,
                                                               monkeypatch: Any) -> None:
    """A combiner's values of one key (or a merge's of many spills) were one
    record, which failed its job beyond the frame limit."""
    import pytxmr.records as records

    monkeypatch.setattr(records, "MAX_FRAME_BYTES", 1 << 20)
    monkeypatch.setattr(records, "FRAME_TARGET_BYTES", 256 << 10)
    values = [f"{i:06d}" + "v" * 5000 for i in range(600)]  # 3 MB
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        records.SegmentWriter(f).write(iter([("a", ["x"]), ("hot", values), ("z", ["y"])]))
    got = list(iter_segment_file(str(path)))
    assert [k for k, _ in got][0] == "a" and [k for k, _ in got][-1] == "z"
    assert {k for k, _ in got[1:-1]} == {"hot"} and len(got) > 10
    assert [v for k, vs in got[1:-1] for v in vs] == values


class _Sizes:
    """A packer that notes the size of every payload it makes."""

    def __init__(self, packer: Any) -> None:
        self._packer = packer
        self.sizes: list[int] = []

    def pack(self, obj: Any) -> bytes:
        payload = self._packer.pack(obj)
        self.sizes.append(len(payload))
        return payload


@pytest.mark.parametrize("shape", ["pairs", "records", "one key", "records of one key"])
def test_big_values_are_cut_into_frames_before_they_are_packed(tmp_path: Any, monkeypatch: Any,
                                                                shape: str) -> None:
    """A frame's worth of records was packed whole first, then halved, each
    level's payload held: 4,096 values of 100 KB took a map to four times
    its buffer. A merge's records of one key of many values each (a
    filtering combiner's) went in one frame of every value."""
    import pytxmr.records as records

    monkeypatch.setattr(records, "FRAME_TARGET_BYTES", 1 << 20)
    values = [f"{i:06d}" + "v" * 20_000 for i in range(400)]  # 8 MB
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        writer = records.SegmentWriter(f)
        writer._packer = sizes = _Sizes(writer._packer)  # type: ignore[assignment]
        if shape == "pairs":
            writer.write_pairs([(f"k{i:03d}", v) for i, v in enumerate(values)])
        elif shape == "records":
            writer.write(iter([(f"k{i:03d}", [v]) for i, v in enumerate(values)]))
        elif shape == "one key":
            writer.write(iter([("hot", values)]))
        else:
            writer.write(iter([("hot", values[i:i + 40]) for i in range(0, 400, 40)]))
    assert max(sizes.sizes) < 2 * records.FRAME_TARGET_BYTES, sorted(sizes.sizes)[-3:]
    got = list(iter_segment_file(str(path)))
    assert [v for _, vs in got for v in vs] == values
    assert records.verify_segment(str(path)) >= 8


def test_a_huge_key_s_values_are_not_cut_for_the_key_s_size(tmp_path: Any) -> None:
    """Each piece of one key's values repeats the key: one of 1.1 MB was
    counted against every piece, which went down to one value each (the
    key written once per value)."""
    import pytxmr.records as records

    key = "k" * 1_100_000
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        writer = records.SegmentWriter(f)
        writer.write(iter([(key, list(range(64)))]))
    assert writer.bytes < 2 * len(key)
    assert list(iter_segment_file(str(path))) == [(key, list(range(64)))]


def test_a_frame_of_lines_is_packed_once(tmp_path: Any) -> None:
    """Values of a few hundred bytes (lines, JSON events) made frames of 1-2
    MiB, packed whole, found too big and packed again as halves."""
    import pytxmr.records as records

    with open(tmp_path / "seg", "wb") as f:
        writer = records.SegmentWriter(f)
        writer._packer = sizes = _Sizes(writer._packer)  # type: ignore[assignment]
        writer.write_pairs([(f"k{i:05d}", "x" * 400) for i in range(4096)])
    assert sum(sizes.sizes) < 1.05 * writer.bytes, (sum(sizes.sizes), writer.bytes)


@pytest.mark.parametrize("kind", ["str", "dict", "list"])
def test_streamed_records_are_written_a_frame_s_bytes_at_a_time(tmp_path: Any,
                                                                kind: str) -> None:
    """A merge's records of 100 KB values (text, a JSON event's dict, a
    list of lines) were held 4,096 at a time (400 MB); a container's
    items were guessed at 16-32 bytes each, whatever they held."""
    import pytxmr.records as records

    taken = [0]
    value: Any = {"str": "v" * 100_000,
                  "dict": {f"field{i}": "x" * 200 for i in range(500)},
                  "list": ["line " * 4_000] * 5}[kind]

    def records_of_big_values() -> Any:
        for i in range(100):
            taken[0] += 1
            yield f"k{i:03d}", [value]

    first_flush: list[int] = []
    with open(tmp_path / "seg", "wb") as f:
        writer = records.SegmentWriter(f)
        flush = writer._flush

        def noted(flat: list[Any], flags: int = 0) -> None:
            first_flush.append(taken[0])
            flush(flat, flags)

        writer._flush = noted  # type: ignore[method-assign]
        writer.write(records_of_big_values())
    assert first_flush[0] <= 12, first_flush[:3]
    assert len(list(iter_segment_file(str(tmp_path / "seg")))) == 100


def test_a_record_larger_than_a_frame_fails_clearly(tmp_path: Any, monkeypatch: Any) -> None:
    """One record over the frame limit is refused at write time, naming its key."""
    import pytxmr.records as records

    monkeypatch.setattr(records, "MAX_FRAME_BYTES", 1 << 20)
    with open(tmp_path / "seg", "wb") as f:
        with pytest.raises(records.RecordTooLarge, match="huge"):
            records.SegmentWriter(f).write([("huge", ["y" * (2 << 20)])])


@pytest.mark.parametrize("value", [
    {f"field{i}": "x" * 200 for i in range(500)},
    ["line " * 4_000] * 5,
    ("a" * 1_000, b"b" * 5_000),
    [{"text": "t" * 3_000, "n": 7}] * 40,
    [[["deep" * 500] * 3] * 3] * 3,
    {f"f{i}": i for i in range(5_000)},
    {"id": 1, "ts": 1_700_000_000, "body": "b" * 100_000},
    [1, 2, 3, 4, 5, "x" * 50_000],
    {**{f"col{i}": i for i in range(19)}, "text": "t" * 1_000},
    [f"item {i}" for i in range(100)] + ["x" * 2_000],
], ids=["dict", "list", "tuple", "events", "nested", "small-items", "body-last",
        "big-last-item", "row-ending-in-text", "long-list-big-last"])
def test_a_container_s_weight_is_about_its_encoded_size(value: Any) -> None:
    """``weight`` sizes the batches that frames are cut from: a guess per
    item was 30 times short for a dict of 200-character fields, and a
    sample of a record's first two fields 3,000 times short where a 100 KB
    body came after an id and a time stamp (a merge gathered 4,096 of
    them: 750 MB)."""
    import msgpack

    from pytxmr.records import weight

    encoded = len(msgpack.packb(value))
    assert encoded / 2 <= weight(value) <= 2 * encoded, (weight(value), encoded)


def test_a_container_that_holds_itself_is_weighed() -> None:
    from pytxmr.records import weight

    loop: list[Any] = ["x" * 100]
    loop.append(loop)
    assert weight(loop) > 0
