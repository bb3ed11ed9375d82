"""The job history: finished jobs kept in ``WORKDIR/history``.

When a job ends the jobtracker records its detail (definition, state,
times, counters, tasks and attempts with their errors: see ``views``) as
``JOB.json``, and the logs of its attempts as ``JOB.logs.json``. At start
it loads them, so finished jobs stay listed after a restart, up to
``retention`` jobs (older files are deleted). Files are written and
deleted in a thread, one operation at a time, never on the reactor thread.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from .kvstore import valid_job_id

DEFAULT_RETENTION = 100
_SEQ_RE = re.compile(r"_(\d+)$")


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class JobHistory:
    """The finished jobs on disk and their details in memory."""

    log = Logger()

    def __init__(self, directory: str, retention: int = DEFAULT_RETENTION) -> None:
        self.directory = directory
        self.retention = max(0, retention)
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # oldest first
        self._lock = defer.DeferredLock()
        self._pending: set[defer.Deferred[Any]] = set()

    def _paths(self, job_id: str) -> list[str]:
        base = os.path.join(self.directory, job_id)
        return [f"{base}.json", f"{base}.logs.json"]

    def load(self) -> None:
        """Read the history at start (before the reactor serves anyone)."""
        os.makedirs(self.directory, exist_ok=True)
        found = []
        for name in os.listdir(self.directory):
            job_id = name[:-len(".json")]
            if not name.endswith(".json") or name.endswith(".logs.json") \
                    or not valid_job_id(job_id):
                continue
            try:
                detail = _read_json(os.path.join(self.directory, name))
            except (OSError, ValueError) as e:
                self.log.warn("Skipping the unreadable history file {name}: {e}", name=name, e=e)
                continue
            if isinstance(detail, dict) and detail.get("job_id") == job_id:
                found.append(detail)
        found.sort(key=lambda d: (d.get("finished") or 0, d["job_id"]))
        for detail in found[:max(0, len(found) - self.retention)]:
            _remove(self._paths(detail["job_id"]))
        self.jobs = OrderedDict((d["job_id"], d) for d in found[len(found) - self.retention:]
                                if self.retention)
        if self.jobs:
            self.log.info("Loaded {n} finished jobs from {dir}", n=len(self.jobs),
                          dir=self.directory)

    def max_seq(self) -> int:
        """The highest job sequence number in the history, so that new job
        ids never reuse an old one after a restart."""
        seqs = [int(m.group(1)) for j in self.jobs if (m := _SEQ_RE.search(j))]
        return max(seqs, default=0)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id) if isinstance(job_id, str) else None

    def record(self, detail: dict[str, Any], logs: dict[str, str]) -> None:
        """Keep a finished job; written to disk in the background."""
        if not self.retention:
            return
        job_id = detail["job_id"]
        self.jobs.pop(job_id, None)
        self.jobs[job_id] = detail
        evicted: list[str] = []
        while len(self.jobs) > self.retention:
            old, _ = self.jobs.popitem(last=False)
            evicted += self._paths(old)
        json_path, logs_path = self._paths(job_id)
        self._background(self._write, json_path, detail, logs_path, logs, evicted)

    def _write(self, json_path: str, detail: dict[str, Any], logs_path: str,
               logs: dict[str, str], evicted: list[str]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        if logs:
            _write_json(logs_path, logs)
        _write_json(json_path, detail)
        _remove(evicted)

    async def read_logs(self, job_id: str) -> dict[str, str]:
        """The stored logs of a finished job's attempts (read in a thread)."""
        if job_id not in self.jobs:
            return {}
        try:
            data = await self._lock.run(threads.deferToThread, _read_json,
                                        self._paths(job_id)[1])
        except (OSError, ValueError) as e:
            self.log.warn("Cannot read the logs of {job}: {e}", job=job_id, e=e)
            return {}
        return data if isinstance(data, dict) else {}

    def _background(self, fn: Any, *args: Any) -> None:
        d = self._lock.run(threads.deferToThread, fn, *args)
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                self.log.failure("Cannot write the job history", result)

        d.addBoth(done)

    async def flush(self) -> None:
        """Wait for the pending writes (before stopping)."""
        while self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
