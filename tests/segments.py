"""Reading segments whole, record by record, each as (key, list of values)
(a PAIRS frame's values come as 1-tuples): for the tests' checks only (the
reduce side streams a frame at a time, see pytxmr.merge)."""

from __future__ import annotations

from typing import Any, BinaryIO

from pytxmr.records import iter_frames_file, read_frames


def read_segment(f: BinaryIO, offset: int, length: int) -> list[tuple[Any, list[Any]]]:
    return [(k, list(vs)) for frame in read_frames(f, offset, length) for k, vs in frame]


def iter_segment_file(path: str, offset: int = 0,
                      length: int | None = None) -> list[tuple[Any, list[Any]]]:
    return [(k, list(vs)) for frame in iter_frames_file(path, offset, length) for k, vs in frame]
