"""Unit tests for the tasktracker's pure helpers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pytxmr.records import CorruptFrame, SegmentWriter
from pytxmr.records import verify_segment as verify_run


def segment(records: int) -> bytes:
    buf = io.BytesIO()
    SegmentWriter(buf, frame_records=10).write((f"k{i:04d}", [i]) for i in range(records))
    return buf.getvalue()


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, list[tuple[int, int]]]:
    """Three segments back to back, as in a map's data file: (path, [(offset, length)])."""
    parts = [segment(35), b"", segment(7)]
    path = tmp_path / "map.data"
    path.write_bytes(b"".join(parts))
    offsets, pos = [], 0
    for p in parts:
        offsets.append((pos, len(p)))
        pos += len(p)
    return path, offsets


def test_a_local_run_is_checked_within_its_segment_only(
        data_file: tuple[Path, list[tuple[int, int]]]) -> None:
    """A reduce reads its partition of a map's data file: damage in another
    partition is not its business."""
    path, segments = data_file
    (first, first_len), _, (last, last_len) = segments
    data = bytearray(path.read_bytes())
    data[last + last_len // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    verify_run(str(path), first, first_len)
    verify_run(str(path), *segments[1])  # an empty segment
    with pytest.raises(CorruptFrame, match="checksum"):
        verify_run(str(path), last, last_len)


@pytest.mark.parametrize("cut", [1, 5, 100])
def test_a_run_cut_short_is_corrupt(data_file: tuple[Path, list[tuple[int, int]]],
                                    cut: int) -> None:
    """A length that ends inside a frame (a truncated file, a wrong index)
    is never taken for a complete run."""
    path, segments = data_file
    offset, length = segments[0]
    with pytest.raises(CorruptFrame):
        verify_run(str(path), offset, length - cut)
    path.write_bytes(path.read_bytes()[:offset + length - cut])
    with pytest.raises(CorruptFrame):
        verify_run(str(path), offset, length)


class _Child:
    """A task child that has read ``read`` bytes."""

    def __init__(self, read: int) -> None:
        self.read = read

    def bytes_read(self) -> int:
        return self.read


def test_a_running_attempt_is_never_shown_done() -> None:
    """A map that has read its whole split still sorts, spills and commits,
    and a reduce that has read its runs still commits: their progress
    grows with what they read (and fetched) but stays under 1, so a job
    shows 100% only when its tasks are done (it showed "map 100% (0/2)"
    through a sort's last spills)."""
    from types import SimpleNamespace

    from pytxmr.tasktracker.worker import Attempt

    m = Attempt("m", None, "map", 0, "/nowhere", child=_Child(0), size=1000)  # type: ignore[arg-type]
    seen = []
    for read in (0, 500, 1000, 5000):  # more than its split: the last line's end
        m.child.read = read  # type: ignore[union-attr]
        seen.append(m.progress())
    assert seen == sorted(seen) and seen[0] == 0 and 0.5 < seen[-1] < 1 and seen[2] == seen[3]
    r = Attempt("r", None, "reduce", 0, "/nowhere", child=_Child(0), size=1000,  # type: ignore[arg-type]
                fetch=SimpleNamespace(runs={}, num_maps=4))  # type: ignore[arg-type]
    seen = []
    for fetched, read in ((0, 0), (2, 0), (4, 0), (4, 500), (4, 1000), (4, 2000)):
        r.fetch.runs = dict.fromkeys(range(fetched))  # type: ignore[union-attr]
        r.child.read = read  # type: ignore[union-attr]
        seen.append(r.progress())
    assert seen == sorted(seen) and seen[0] == 0 and 0.9 < seen[-1] < 1


def test_logins_failed_in_a_row_lengthen_the_wait_before_the_next_try() -> None:
    """A TLS handshake refused is a connection made, for ClientService:
    its backoff never grew, and a tasktracker of another CA tried every
    second for ever. A registration starts again from the shortest wait."""
    from twisted.internet.task import Clock
    from twisted.spread import pb

    from pytxmr.tasktracker.pbadapter import JobTrackerConnection

    conn = JobTrackerConnection(Clock(), "tcp:host=127.0.0.1:port=1", b"secret", tt=None,
                                registration=None)
    assert conn.retry_delay(1) < 1.5
    broker = pb.Broker()
    broker.silent = True  # type: ignore[attr-defined]  # as a port that never answers
    for _ in range(9):
        conn._login_lost(broker)
    assert conn.retry_delay(1) > 7  # 0.2 s x 1.5 ** 10, and a second of jitter at most
