"""The jobtracker's journal: what it must know to resume its jobs after a
restart, in its work directory, written as things happen.

An SQLite database in WAL mode (the standard library's ``sqlite3``): each
record is one transaction, so a crash at any instant leaves the journal as
it was after the last whole record, never half of one. Kept: each running
job as submitted (its plan: splits, token, options, owner), each step it
started, each task it committed (the attempt, its counters, for a map the
kinds of its keys, its times and the end of its log), the attempts it let
write to its output that have not said they are done (and where they run),
how it is ending while its output is finished or cleaned, and its end. A
finished job's records are deleted once its output is final: the history
(``pytxmr.history``) keeps finished jobs.

``synchronous=NORMAL``: durable across a crash of the process (what the
jobtracker guards against); a power loss may lose the last records, never
the journal's consistency.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from .sizes import FULL_DISK, free_space
from .splits import Split

FILE = "journal.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, plan TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (job_id TEXT, step INTEGER, plan TEXT NOT NULL,
                                  PRIMARY KEY (job_id, step));
CREATE TABLE IF NOT EXISTS tasks (job_id TEXT, step INTEGER, kind TEXT, idx INTEGER,
                                  attempt_id TEXT NOT NULL, result TEXT NOT NULL,
                                  PRIMARY KEY (job_id, step, kind, idx));
CREATE TABLE IF NOT EXISTS ending (job_id TEXT PRIMARY KEY, outcome TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (attempt_id TEXT PRIMARY KEY, job_id TEXT NOT NULL,
                                    host TEXT NOT NULL, port INTEGER NOT NULL);
"""

_TABLES = ("jobs", "steps", "tasks", "ending", "commits")

#: The end of a committed task's log that the journal keeps: a restart
#: reads every one of a running job's into memory (64 KB tails of 10,000
#: chatty maps were 640 MB).
JOURNAL_LOG_TAIL = 4 << 10


def journaled_log(log: str) -> str:
    if len(log) <= JOURNAL_LOG_TAIL:
        return log
    return "[pytxmr: the log's start is not kept across a jobtracker restart]\n" + log[
        -JOURNAL_LOG_TAIL:]


@dataclass
class Committed:
    """A task that was done when the journal was last written."""

    attempt_id: str
    counters: dict[str, dict[str, int]]
    kinds: tuple[str, ...] = ()
    # What the status page and ``logs`` show of it after a restart (a
    # duration of 0 and no log before).
    started: float | None = None
    finished: float | None = None
    log: str = ""


@dataclass
class StepState:
    """One started step of a job: its splits and reducers, and its tasks
    that were done."""

    splits: list[Split]
    num_reducers: int
    maps: dict[int, Committed] = field(default_factory=dict)
    reduces: dict[int, Committed] = field(default_factory=dict)


@dataclass
class JournaledJob:
    """A job that was running: its plan as ``JobRecord`` fields, and its steps."""

    plan: dict[str, Any]
    steps: dict[int, StepState] = field(default_factory=dict)
    #: How it ended, if it was ending (its output being finished or
    #: cleaned): {"state": ..., "error": ...}; None while it runs.
    ending: dict[str, Any] | None = None
    #: The attempts let commit that had not said they were done: attempt
    #: id -> the (host, port) of their worker's shuffle server.
    commits: dict[str, tuple[str, int]] = field(default_factory=dict)


class JournalError(Exception):
    """The journal cannot be read: the jobtracker does not start, rather
    than drop its jobs' resumption unsaid."""


def _unreadable(path: str, e: Exception) -> JournalError:
    try:
        free = free_space(os.path.dirname(path))
    except OSError:
        free = FULL_DISK
    if free < FULL_DISK or "full" in str(e):
        return JournalError(f"cannot open the journal {path} ({e}): its disk is full "
                            f"({free:,} bytes free). Free some space and start again: the "
                            f"journal is kept, and the jobs it has as running resume")
    return JournalError(f"cannot read the journal {path} ({e}): it is damaged, or not "
                        f"pytxmr's. Move it aside to start without it (the jobs it had as "
                        f"running then do not resume), or give another --workdir")


class Journal:
    log = Logger()

    def __init__(self, workdir: str) -> None:
        self.path = os.path.join(workdir, FILE)
        self._db: sqlite3.Connection | None = None
        self._failing = False

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise _unreadable(self.path, e) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            # A job's records without the job (written while its own could
            # not be, a full disk): no start reads them, none deletes them.
            for table in _TABLES[1:]:
                db.execute(f"DELETE FROM {table} WHERE job_id NOT IN (SELECT job_id FROM jobs)")
        except sqlite3.Error as e:
            db.close()
            raise _unreadable(self.path, e) from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, sql: str, *args: Any) -> None:
        """A record; none once closed (a report that arrives while the
        jobtracker stops). A journal that cannot be written (a full disk)
        is logged, and the jobs go on: only their resumption is lost."""
        self._write_all([(sql, args)])

    def _write_all(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Records that go in together, or not at all."""
        if self._db is None:
            return
        try:
            if len(statements) == 1:
                self._db.execute(*statements[0])
            else:
                with self._db:  # a transaction
                    self._db.execute("BEGIN")
                    for sql, args in statements:
                        self._db.execute(sql, args)
        except sqlite3.Error as e:
            if not self._failing:
                self.log.error("Cannot write the journal {path} ({e}): the running jobs "
                               "will not resume after a crash", path=self.path, e=e)
            self._failing = True
        else:
            self._failing = False

    def job_started(self, job_id: str, plan: dict[str, Any],
                    first_step: tuple[list[Split], int] | None = None) -> None:
        """With its ``first_step`` (splits, reduces) in the same transaction:
        a crash between the two left a job without a step, which could not
        resume and was failed without a word (nor a history)."""
        job = ("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (job_id, json.dumps(plan)))
        self._write_all([job] + ([self._step(job_id, 0, *first_step)] if first_step else []))

    def step_started(self, job_id: str, step: int, splits: list[Split],
                     num_reducers: int) -> None:
        self._write_all([self._step(job_id, step, splits, num_reducers)])

    @staticmethod
    def _step(job_id: str, step: int, splits: list[Split],
              num_reducers: int) -> tuple[str, tuple[Any, ...]]:
        plan = {"splits": [s.to_wire() for s in splits], "num_reducers": num_reducers}
        return "INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", (job_id, step, json.dumps(plan))

    def task_committed(self, job_id: str, step: int, kind: str, index: int,
                       task: Committed) -> None:
        result = json.dumps({"counters": task.counters, "kinds": list(task.kinds),
                             "started": task.started, "finished": task.finished,
                             "log": journaled_log(task.log)})
        self._write("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?)", job_id, step,
                    kind, index, task.attempt_id, result)

    def job_ending(self, job_id: str, state: str, error: dict[str, str] | None) -> None:
        """The job is over (``state``) and its output is being finished or
        cleaned: after a crash, that is done again, never the job resumed."""
        self._write("INSERT OR REPLACE INTO ending VALUES (?, ?)", job_id,
                    json.dumps({"state": state, "error": error}))

    def commit_allowed(self, job_id: str, attempt_id: str, host: str, port: int) -> None:
        """An attempt may write its part into the job's output: until it
        says it is done, the output is not cleaned nor given to another
        job, across a restart too (its upload would land after)."""
        self._write("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?)", attempt_id, job_id,
                    host, port)

    def commit_ended(self, attempt_id: str) -> None:
        self._write("DELETE FROM commits WHERE attempt_id = ?", attempt_id)

    def job_ended(self, job_id: str) -> None:
        self._write_all([(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
                         for table in _TABLES])

    def running_jobs(self) -> dict[str, JournaledJob]:
        """Every job the journal has as running, with its steps and tasks."""
        try:
            return self._running_jobs()
        except (sqlite3.Error, ValueError, KeyError, TypeError) as e:  # JSON, its fields
            raise _unreadable(self.path, e) from None

    def _running_jobs(self) -> dict[str, JournaledJob]:
        assert self._db is not None, "the journal is not open"
        jobs = {job_id: JournaledJob(json.loads(plan))
                for job_id, plan in self._db.execute("SELECT job_id, plan FROM jobs")}
        for job_id, step, plan in self._db.execute("SELECT job_id, step, plan FROM steps"):
            if job_id in jobs:
                p = json.loads(plan)
                jobs[job_id].steps[step] = StepState(
                    [Split.from_wire(s) for s in p["splits"]], p["num_reducers"])
        for job_id, step, kind, index, attempt_id, result in self._db.execute(
                "SELECT job_id, step, kind, idx, attempt_id, result FROM tasks"):
            state = jobs[job_id].steps.get(step) if job_id in jobs else None
            if state is None:
                continue
            r = json.loads(result)
            committed = Committed(attempt_id, r["counters"], tuple(r.get("kinds", ())),
                                  r.get("started"), r.get("finished"), r.get("log") or "")
            (state.maps if kind == "map" else state.reduces)[index] = committed
        for job_id, outcome in self._db.execute("SELECT job_id, outcome FROM ending"):
            if job_id in jobs:
                jobs[job_id].ending = json.loads(outcome)
        for attempt_id, job_id, host, port in self._db.execute(
                "SELECT attempt_id, job_id, host, port FROM commits"):
            if job_id in jobs:
                jobs[job_id].commits[attempt_id] = (host, port)
        return jobs
