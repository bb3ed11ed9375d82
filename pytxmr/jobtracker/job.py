"""A job as the jobtracker knows it beyond the scheduler's view: where its
source and output are, its splits, its state and result. Pure: the logic
(``tracker``) keeps the waiting submitters, this only the facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..splits import Split
from ..wire import JobInit


@dataclass
class JobRecord:
    id: str
    filename: str
    source_path: str
    token: bytes
    output: str
    splits: list[Split]
    num_reducers: int
    map_name: str
    reduce_name: str
    buffer_records: int | None
    submitted: float
    state: str = "running"
    error: dict[str, str] | None = None
    finished: float | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    compress: str | None = None
    storage_options: dict[str, str] = field(default_factory=dict)
    #: Ended, its output being finished (an object store's calls in a
    #: thread): ``wait`` still waits.
    finishing: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    def init(self, source: str) -> JobInit:
        """What a worker is sent before its first task of this job."""
        return JobInit(self.id, source, self.filename, self.token, self.map_name,
                       self.reduce_name, len(self.splits), self.num_reducers, self.output,
                       self.buffer_records, self.compress, dict(self.storage_options))

    def result(self, now: float) -> dict[str, Any]:
        """What ``wait`` and ``status`` return (``status`` adds progress)."""
        end = self.finished if self.finished is not None else now
        return {"job_id": self.id, "state": self.state, "error": self.error,
                "counters": self.counters, "elapsed": end - self.submitted,
                "output": self.output, "filename": self.filename,
                "num_maps": len(self.splits), "num_reducers": self.num_reducers}
