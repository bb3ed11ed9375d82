"""The job history: finished jobs kept in ``WORKDIR/history``.

When a job ends the jobtracker records its detail (definition, state,
times, counters, tasks and attempts with their errors: see ``views``) as
``JOB.json``, its summary (the detail without tasks and phases) as
``JOB.summary.json``, what its page shows (``views.page_view``: a size
that does not grow with the job) as ``JOB.page.json``, and the logs of its
attempts as ``JOB.logs.json``, for the newest ``retention`` jobs (older
files are deleted). Only the
summaries stay in memory, also of the jobs beyond ``retention`` up to
``remembered``, so that ``status`` and ``wait`` still answer for them; a
detail is a few KB per task (100 MB for a 50,000-map job), read from disk
when asked for. At start the summaries are loaded, so finished jobs stay
listed after a restart. Files are read, written and deleted in a thread,
one operation at a time, never on the reactor thread.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from typing import Any, Callable, Iterable

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from .kvstore import valid_job_id
from .views import page_view

DEFAULT_RETENTION = 100
#: Finished jobs whose summaries stay in memory even beyond ``retention``.
DEFAULT_REMEMBERED = 100
#: What a detail has beyond its summary.
_DETAIL_ONLY = ("tasks", "phases")
#: The files kept beside a job's JOB.json.
_COMPANIONS = (".logs.json", ".summary.json", ".page.json")
_SEQ_RE = re.compile(r"_(\d+)$")


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            # dumps, not dump: json.dump encodes in Python, chunk by chunk,
            # and a job's end waits for its history (1-2 ms of a small job).
            f.write(json.dumps(data))
        os.replace(tmp, path)
    except BaseException:
        _remove([tmp])  # a full disk: no .tmp left for ever
        raise


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def summary_of(detail: dict[str, Any]) -> dict[str, Any]:
    """A job detail without its tasks: what a job list and ``status`` show."""
    return {k: v for k, v in detail.items() if k not in _DETAIL_ONLY}


def _companion(directory: str, job_id: str, suffix: str,
               make: Callable[[dict[str, Any]], dict[str, Any]],
               keys: Iterable[str] = ()) -> dict[str, Any] | None:
    """A stored job's summary or page view (``suffix``); made from its
    detail, once, if it has none (a history written before these were, or
    a crash between the files) or one without the ``keys`` it must have."""
    base = os.path.join(directory, job_id)
    try:
        data = _read_json(base + suffix)
    except ValueError:
        data = None  # made again from the detail
    if isinstance(data, dict) and data.get("job_id") == job_id and all(k in data for k in keys):
        return data
    detail = _read_json(f"{base}.json")
    if not isinstance(detail, dict) or detail.get("job_id") != job_id:
        return None
    data = make(detail)
    try:
        _write_json(base + suffix, data)
    except OSError:
        pass  # made from the detail again next time
    return data


class JobHistory:
    """Finished jobs: their summaries in memory, their details and logs on disk."""

    log = Logger()

    def __init__(self, directory: str, retention: int = DEFAULT_RETENTION,
                 remembered: int = DEFAULT_REMEMBERED) -> None:
        self.directory = directory
        self.retention = max(0, retention)
        self.remembered = max(self.retention, remembered)
        #: Job id -> summary, oldest first; the newest ``retention`` have
        #: their files on disk.
        self.summaries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = defer.DeferredLock()
        self._pending: set[defer.Deferred[Any]] = set()

    def _paths(self, job_id: str) -> list[str]:
        base = os.path.join(self.directory, job_id)
        return [f"{base}.json", *(base + suffix for suffix in _COMPANIONS)]

    def load(self) -> None:
        """Read the history at start (before the reactor serves anyone)."""
        os.makedirs(self.directory, exist_ok=True)
        found = []
        for name in os.listdir(self.directory):
            job_id = name[:-len(".json")]
            if (not name.endswith(".json") or name.endswith(_COMPANIONS)
                    or not valid_job_id(job_id)):
                continue
            try:
                summary = _companion(self.directory, job_id, ".summary.json", summary_of)
            except (OSError, ValueError) as e:
                self.log.warn("Skipping the unreadable history file {name}: {e}", name=name, e=e)
                continue
            if summary is not None:
                found.append(summary)
        found.sort(key=lambda d: (d.get("finished") or 0, d["job_id"]))
        for summary in found[:max(0, len(found) - self.retention)]:
            _remove(self._paths(summary["job_id"]))
        kept = found[max(0, len(found) - self.retention):] if self.retention else []
        self.summaries = OrderedDict((d["job_id"], d) for d in kept)
        # What a write cut short left (a full disk): a .tmp, or a job's
        # companions without its detail, which no retention removes.
        for name in os.listdir(self.directory):
            job_id = name.split(".", 1)[0]
            orphan = name.endswith(_COMPANIONS) and not os.path.exists(
                os.path.join(self.directory, f"{job_id}.json"))
            if (name.endswith(".tmp") or orphan) and valid_job_id(job_id):
                _remove([os.path.join(self.directory, name)])
        if self.summaries:
            self.log.info("Loaded {n} finished jobs from {dir}", n=len(self.summaries),
                          dir=self.directory)

    def max_seq(self) -> int:
        """The highest job sequence number in the history, so that new job
        ids never reuse an old one after a restart."""
        seqs = [int(m.group(1)) for j in self.summaries if (m := _SEQ_RE.search(j))]
        return max(seqs, default=0)

    def summary(self, job_id: str) -> dict[str, Any] | None:
        return self.summaries.get(job_id) if isinstance(job_id, str) else None

    def record(self, detail: dict[str, Any], logs: dict[str, str]) -> defer.Deferred[None]:
        """Keep a finished job: its summary here, and its detail and logs
        on disk (written in the background) if ``retention`` allows; fires
        once they are written (or could not be: that is logged)."""
        if not self.remembered:
            return defer.succeed(None)
        job_id = detail["job_id"]
        self.summaries.pop(job_id, None)
        summary = self.summaries[job_id] = summary_of(detail)
        ids = list(self.summaries)
        # The one job this pushes out of the newest ``retention``: its files go.
        evicted = self._paths(ids[-self.retention - 1]) if len(ids) > self.retention else []
        while len(self.summaries) > self.remembered:
            self.summaries.popitem(last=False)
        if not self.retention:
            return defer.succeed(None)
        return self._background(self._write, job_id, detail, summary, logs, evicted)

    def _stored(self, job_id: str) -> bool:
        """Whether the job's files are on disk: it is among the newest ``retention``."""
        ids = list(self.summaries)
        return bool(self.retention) and job_id in ids[max(0, len(ids) - self.retention):]

    def _write(self, job_id: str, detail: dict[str, Any], summary: dict[str, Any],
               logs: dict[str, str], evicted: list[str]) -> None:
        detail_path, logs_path, summary_path, page_path = self._paths(job_id)
        os.makedirs(self.directory, exist_ok=True)
        try:
            if logs:
                _write_json(logs_path, logs)
            _write_json(detail_path, detail)
            _write_json(page_path, page_view(detail))
            _write_json(summary_path, summary)
        except OSError:
            _remove(self._paths(job_id))  # not half a job, which no retention removes
            raise
        _remove(evicted)

    async def detail(self, job_id: str) -> dict[str, Any] | None:
        """A stored job's detail, read from disk in a thread (after the
        writes in progress); None if it is not stored or cannot be read."""
        if not self._stored(job_id):
            return None
        data = await self._read(job_id, "detail", _read_json, self._paths(job_id)[0])
        return data if isinstance(data, dict) and data.get("job_id") == job_id else None

    async def detail_json(self, job_id: str) -> bytes | None:
        """A stored job's detail as its file holds it, not parsed (read in a
        thread); None if it is not stored or not its detail."""
        if not self._stored(job_id):
            return None
        data = await self._read(job_id, "detail", _read_bytes, self._paths(job_id)[0])
        start = json.dumps({"job_id": job_id})[:-1].encode()  # as _write_json begins it
        if isinstance(data, bytes) and data.startswith(start) and data.rstrip().endswith(b"}"):
            return data
        return None

    async def page_view(self, job_id: str) -> dict[str, Any] | None:
        """What a stored job's page shows (read in a thread; made from its
        detail, once, if the history was written without it); None if it
        is not stored or cannot be read."""
        if not self._stored(job_id):
            return None
        # What a page shows: its summary's fields, and its attempts.
        keys = [*self.summaries[job_id], "attempts"]
        data = await self._read(job_id, "page", _companion, self.directory, job_id,
                                ".page.json", page_view, keys)
        return data if isinstance(data, dict) and data.get("job_id") == job_id else None

    async def read_logs(self, job_id: str) -> dict[str, str]:
        """The stored logs of a finished job's attempts (read in a thread)."""
        if not self._stored(job_id):
            return {}
        data = await self._read(job_id, "logs", _read_json, self._paths(job_id)[1])
        return data if isinstance(data, dict) else {}

    async def _read(self, job_id: str, what: str, read: Any, *args: Any) -> Any:
        try:
            return await self._lock.run(threads.deferToThread, read, *args)
        except (OSError, ValueError) as e:
            self.log.warn("Cannot read the {what} of {job}: {e}", what=what, job=job_id, e=e)
            return None

    def _background(self, fn: Any, *args: Any) -> defer.Deferred[None]:
        d = self._lock.run(threads.deferToThread, fn, *args)
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                if result.check(OSError):  # a full or read-only disk: said in one line
                    self.log.error("Cannot write the job history in {dir}: {e}",
                                   dir=self.directory, e=result.value)
                else:
                    self.log.failure("Cannot write the job history", result)

        return d.addBoth(done)

    async def flush(self) -> None:
        """Wait for the pending writes (before stopping)."""
        while self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
