"""The data between the steps of a multi-step job: each step's reduce
output as the ``(key, value)`` pairs its reduce yielded (not their text
form), in the record frames of ``records``, one file per reduce, read whole
by one map of the next step.

The files live under the job's output (``_temporary/step-N/``), where
every worker can reach them since every worker writes the output, and are
removed with the rest of ``_temporary`` when the job ends.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterator, Mapping

from . import storage
from .outputrules import TEMPORARY
from .rangereader import open_input
from .records import FRAME_TARGET_BYTES, SegmentWriter, read_frames, weight
from .splits import Split

#: The part-file format of a step that the next step reads.
PAIRS = "pairs"


def step_output(output: str, step: int, count: int) -> str:
    """Where step ``step`` (0-based) of ``count`` commits its part files:
    the job's output for the last step."""
    if step == count - 1:
        return output
    return storage.join(storage.join(output, TEMPORARY), f"step-{step + 1}")


def job_output(output: str, output_format: str | None) -> str:
    """The job's output, from a step's (``step_output``) and its part
    files' format (``step_format``): a step before the last writes pairs
    below the job's output."""
    return output if output_format is None else storage.parent(storage.parent(output))


def step_format(step: int, count: int) -> str | None:
    """The part-file format of step ``step``: the job's own (None) for the
    last step, pairs for the next step otherwise."""
    return None if step == count - 1 else PAIRS


def step_inputs(output: str, step: int, count: int,
                opts: Mapping[str, str]) -> list[storage.InputFile]:
    """The input files of step ``step`` > 0: the parts of the step before."""
    parts = storage.join(step_output(output, step - 1, count), "part-*")
    return sorted(storage.expand_inputs([parts], opts), key=lambda f: f.path)


class PairWriter:
    """Writes pairs as records of one value each (PAIRS frames, see
    ``SegmentWriter.write_pairs``), a frame at a time."""

    BATCH = 4096

    def __init__(self, f: BinaryIO) -> None:
        self._writer = SegmentWriter(f)
        self._batch: list[tuple[Any, Any]] = []
        self._size = 0

    def add(self, pair: tuple[Any, Any]) -> None:
        self._batch.append(pair)
        # Bytes too: 4,096 values of 100 KB held a step's reduce at 450 MB.
        self._size += weight(pair[0]) + weight(pair[1])
        if len(self._batch) >= self.BATCH or self._size >= FRAME_TARGET_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self._writer.write_pairs(self._batch)
            self._batch = []
            self._size = 0

    @property
    def bytes(self) -> int:
        return self._writer.bytes


def read_pairs(split: Split, encoding: str = "utf-8",
               errors: str = "strict") -> Iterator[tuple[Any, Any]]:
    """The reader of every step after the first: the pairs of one part file
    of the step before, as they were yielded."""
    with open_input(split.path, whole=True) as f:
        for frame in read_frames(f, 0, split.end):
            for key, values in frame:
                for value in values:
                    yield key, value
