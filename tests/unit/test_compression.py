"""Codec 2 (LZ4) frames: unit tests of pytxmr.records, and the ``compress``
job option as the client and the jobtracker check it. The same option through
the CLI and real clusters is in tests/integration/test_compression_jobs.py."""

from __future__ import annotations

import io
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segments import iter_segment_file, read_segment
from strategies import assert_same, keys, values
from wordcounts import WORDCOUNT

from pytxmr import client, records
from pytxmr.jobtracker.submission import validate_submission
from pytxmr.keys import record_sort_key
from pytxmr.merge import merge_runs
from pytxmr.wire import SubmissionError
from pytxmr.records import (
    CODEC_LZ4,
    CODEC_MSGPACK,
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    CodecUnavailable,
    CorruptFrame,
    SegmentWriter,
    codec_for,
    encode_frame,
    verify_segment,
)


# ---------------------------------------------------------------- helpers


def read_all(data: bytes) -> list[tuple[Any, list[Any]]]:
    return list(read_segment(io.BytesIO(data), 0, len(data)))


def lz4_frame(records: list[tuple[Any, list[Any]]]) -> bytes:
    frame = encode_frame(records, codec=CODEC_LZ4)
    assert frame[0] == CODEC_LZ4, "the test records must be compressible"
    return frame


def frame_of(stored: bytes, codec: int = CODEC_LZ4) -> bytes:
    """A frame with a correct header and checksum around any stored payload."""
    return FRAME_HEADER.pack(codec, len(stored), zlib.crc32(bytes((codec,)) + stored)) + stored


def compressible(records: list[tuple[Any, list[Any]]]) -> list[tuple[Any, list[Any]]]:
    """``records`` and enough repetitions of a record for LZ4 to pay."""
    return records + [("padding", ["the same words again and again"] * 20)] * 20


@pytest.fixture
def no_lz4(monkeypatch: pytest.MonkeyPatch) -> None:
    """This Python as if the lz4 package were not installed."""
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.block", None)


# ---------------------------------------------------------------- round trips


KEYS = ["", "caf\u00e9 \U0001f600", "lone \udc80 surrogate", b"\x00\xff", 0, -1, 2**64, -(10**40),
        7**6000, 0.5, -0.0, float("inf"), True, False, None, (), (1, "a", (2.5, (None, b"z")))]


@pytest.mark.parametrize("key", KEYS, ids=[f"{type(k).__name__}-{i}" for i, k in enumerate(KEYS)])
def test_every_key_type_round_trips_through_lz4_frames(key: Any) -> None:
    """Compression must not change what a reducer sees: same values, same types."""
    recs = compressible([(key, [key, [key], {"k": (key,)}])])
    got = read_all(lz4_frame(recs))
    assert_same([list(r) for r in got], [list(r) for r in recs])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(keys, st.lists(values, max_size=3)), max_size=30), st.integers(1, 9))
def test_any_records_written_with_lz4_read_back(records_: list[tuple[Any, list[Any]]],
                                                frame_records: int) -> None:
    """Whatever a job may emit survives a compressed segment, in order."""
    buf = io.BytesIO()
    writer = SegmentWriter(buf, frame_records=frame_records, codec=CODEC_LZ4)
    writer.write(compressible(records_))
    assert writer.bytes == len(buf.getvalue())
    assert_same([list(r) for r in read_all(buf.getvalue())],
                [list(r) for r in compressible(records_)])


def test_compressed_frames_are_smaller_and_checksummed_as_stored() -> None:
    """The crc covers the codec byte and the stored bytes: daemons verify
    frames without decompressing."""
    recs = compressible([("k", [1])])
    plain, packed = encode_frame(recs), lz4_frame(recs)
    assert len(packed) < len(plain) / 2
    codec, size, crc = FRAME_HEADER.unpack(packed[:FRAME_HEADER.size])
    stored = packed[FRAME_HEADER.size:]
    assert (codec, size, crc) == (CODEC_LZ4, len(stored), zlib.crc32(bytes((codec,)) + stored))
    assert lz4.block.decompress(stored) == plain[FRAME_HEADER.size:]


def test_a_frame_lz4_cannot_shrink_is_stored_plain() -> None:
    """Incompressible frames cost the reader no decompression; they stay readable."""
    recs = [("k", [os.urandom(4000)])]
    frame = encode_frame(recs, codec=CODEC_LZ4)
    assert frame[0] == CODEC_MSGPACK
    assert read_all(frame) == recs


def test_codec_1_and_codec_2_frames_mix_in_one_segment(tmp_path: Path) -> None:
    """Frames are self-describing: a reducer merges runs of any codecs without configuration."""
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        w1 = SegmentWriter(f, frame_records=3)
        w1.write(compressible([("a", [1])])[:5])
        w2 = SegmentWriter(f, frame_records=7, codec=CODEC_LZ4)
        w2.write(compressible([("b", [2])])[:9])
        w1.write([("z", [3])])
    data = path.read_bytes()
    codecs, pos = [], 0
    while pos < len(data):
        codec, size, _ = FRAME_HEADER.unpack_from(data, pos)
        codecs.append(codec)
        pos += FRAME_HEADER.size + size
    assert codecs[:2] == [1, 1] and CODEC_LZ4 in codecs and codecs[-1] == 1
    expected = compressible([("a", [1])])[:5] + compressible([("b", [2])])[:9] + [("z", [3])]
    assert list(iter_segment_file(str(path))) == expected
    assert verify_segment(str(path)) == len(codecs)


def test_merge_of_a_plain_and_a_compressed_run_is_sorted(tmp_path: Path) -> None:
    """The reduce side merges runs written by maps with and without compression."""
    runs = []
    for n, codec in enumerate((CODEC_MSGPACK, CODEC_LZ4)):
        path = tmp_path / f"run{n}"
        recs = [(f"k{i:04d}", [n, "some value text"]) for i in range(n, 3000, 2)]
        with open(path, "wb") as f:
            w = SegmentWriter(f, frame_records=500, codec=codec)
            w.write(recs)
        runs.append((str(path), 0, w.bytes))
    merged_ = list(merge_runs(runs, record_sort_key(["str"])))
    assert [k for k, _ in merged_] == [f"k{i:04d}" for i in range(3000)]


def test_verify_segment_checks_compressed_frames_without_lz4(tmp_path: Path,
                                                            no_lz4: None) -> None:
    """The tasktracker verifies fetched runs whether or not it has the codec package."""
    path = tmp_path / "seg"
    path.write_bytes(encode_frame([("a", [1])]) + frame_of(b"\x10\x00\x00\x00" + b"x" * 12))
    assert verify_segment(str(path)) == 2
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFrame, match="checksum"):
        verify_segment(str(path))


# ---------------------------------------------------------------- corruption and limits


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_compressed_payload_with_a_good_checksum_raises_corrupt_frame(
        data: st.DataObject) -> None:
    """A compressed payload that passes its crc but is damaged (a bug, a hostile
    peer) is CorruptFrame and nothing else."""
    stored = bytearray(lz4_frame(compressible([("k", [1, "two", (3,)])]))[FRAME_HEADER.size:])
    for _ in range(data.draw(st.integers(1, 3))):
        stored[data.draw(st.integers(0, len(stored) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        recs = read_all(frame_of(bytes(stored)))
    except CorruptFrame:
        return
    assert all(type(r) is tuple and type(r[1]) is list for r in recs)  # a lucky valid stream


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_as_a_checksummed_lz4_payload_raise_corrupt_frame(stored: bytes) -> None:
    """Garbage behind a valid codec-2 header and crc never raises another exception type."""
    try:
        read_all(frame_of(stored))
    except CorruptFrame:
        pass


@pytest.mark.parametrize("stored", [b"", b"\x01\x00", b"\x05\x00\x00\x00",
                                    b"\x20\x00\x00\x00\x00", b"\xff\xff\xff\xff\x10abc"],
                         ids=["empty", "short size", "no block", "block too short", "huge size"])
def test_malformed_lz4_payloads_raise_corrupt_frame(stored: bytes) -> None:
    """Edge cases of the size prefix and block are CorruptFrame."""
    with pytest.raises(CorruptFrame):
        read_all(frame_of(stored))


def test_a_stated_size_over_the_limit_is_refused_before_decompressing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny hostile frame must not make a reader allocate up to 4 GiB."""
    called = []
    monkeypatch.setattr(lz4.block, "decompress", lambda *a, **k: called.append(a))
    stored = (MAX_FRAME_BYTES + 1).to_bytes(4, "little") + b"\x00" * 8
    with pytest.raises(CorruptFrame, match="limit"):
        read_all(frame_of(stored))
    assert not called


def test_a_frame_that_decompresses_past_the_limit_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound on a frame is its decompressed size, not its stored size."""
    frame = lz4_frame([("k", ["a" * (2 << 20)])])
    assert len(frame) < 1 << 20
    monkeypatch.setattr(records, "MAX_FRAME_BYTES", 1 << 20)
    with pytest.raises(CorruptFrame, match="limit"):
        read_all(frame)


def test_a_stated_size_that_lies_raises_corrupt_frame() -> None:
    """The size prefix must match what the block decompresses to."""
    stored = bytearray(lz4_frame(compressible([("k", [1])]))[FRAME_HEADER.size:])
    for delta in (-1, 1):
        lying = bytearray(stored)
        lying[:4] = (int.from_bytes(stored[:4], "little") + delta).to_bytes(4, "little")
        with pytest.raises(CorruptFrame):
            read_all(frame_of(bytes(lying)))


def test_writer_cuts_frames_by_their_uncompressed_size(tmp_path: Path) -> None:
    """Compressible big values still make frames a reader may decompress (about 8 MB)."""
    path = tmp_path / "seg"
    with open(path, "wb") as f:
        w = SegmentWriter(f, codec=CODEC_LZ4)
        w.write([(f"k{i}", ["x" * (3 << 20)]) for i in range(10)])
    assert w.bytes < 1 << 20
    assert verify_segment(str(path)) >= 4
    assert [k for k, _ in iter_segment_file(str(path))] == [f"k{i}" for i in range(10)]


# ---------------------------------------------------------------- lz4 missing, bad names


def test_reading_lz4_frames_without_lz4_says_what_to_install(no_lz4: None) -> None:
    """A reducer without the package fails with the fix, not an ImportError deep in a merge."""
    stored = lz4.block.compress(encode_frame([("k", [1])] * 50)[FRAME_HEADER.size:],
                                store_size=True)
    with pytest.raises(CodecUnavailable, match=r"pip install lz4 \(or 'pytxmr\[lz4\]'\)"):
        read_all(frame_of(stored))


def test_writing_lz4_without_lz4_fails_at_once(no_lz4: None) -> None:
    """The writer, the task child's codec_for and the client all refuse up front."""
    with pytest.raises(CodecUnavailable, match="pip install lz4"):
        SegmentWriter(io.BytesIO(), codec=CODEC_LZ4)
    with pytest.raises(CodecUnavailable, match="pip install lz4"):
        codec_for("lz4")
    with pytest.raises(client.ClusterError, match="pip install lz4"):
        client.submission(str(WORDCOUNT), ["in.txt"], "out", compress="lz4")
    assert codec_for(None) == CODEC_MSGPACK


def test_unknown_codec_names_are_refused_by_client_and_jobtracker() -> None:
    """A typo must fail the submission clearly, not run uncompressed."""
    with pytest.raises(ValueError, match="unknown compression codec 'zstd'"):
        codec_for("zstd")
    with pytest.raises(client.ClusterError, match="unknown compression codec 'zstd'"):
        client.submission(str(WORDCOUNT), ["in.txt"], "out", compress="zstd")
    spec = client.submission(str(WORDCOUNT), ["in.txt"], "out", compress="lz4").spec
    assert validate_submission(spec).compress == "lz4"
    spec.pop("compress")
    assert validate_submission(spec).compress is None
    for bad, message in (("zstd", "unknown compression codec 'zstd'"), (4, "wrong type")):
        with pytest.raises(SubmissionError, match=message):
            validate_submission({**spec, "compress": bad})
