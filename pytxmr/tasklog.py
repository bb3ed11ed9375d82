"""Task attempt logs: from the worker's ``task.log`` to the status page.

A task child's stdout and stderr are captured by ``child`` into a bounded
``task.log``; the tasktracker sends its tail with the attempt's report, and
the jobtracker keeps the tails of recent attempts here, bounded in total,
for the status page, the JSON API and ``python -m pytxmr logs``. Pure
logic, no reactor.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from .wire import MAX_LOG_TAIL, job_of

#: The tail of a task log sent with an attempt report (PB strings are
#: limited to 640 KiB; a tail is what people read anyway).
TAIL_BYTES = MAX_LOG_TAIL - 256  # and read_tail's note of what it left out
#: Log text the jobtracker keeps in memory over all attempts.
MAX_TOTAL_CHARS = 64 << 20
#: Log text one ``logs`` call returns at most (PB-safe).
MAX_REPLY_CHARS = 512 << 10


def read_tail(path: str, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the file at ``path`` as text ("" if absent)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                f.seek(size - limit)
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if size > limit:
        text = f"[pytxmr: only the last {limit} bytes of {size} are kept]\n" + text
    return text


def attempt_job(attempt_id: str) -> str:
    """``JOB_m00003_0`` -> ``JOB``."""
    return attempt_id.rsplit("_", 2)[0]


class LogKeeper:
    """Attempt id -> log tail, oldest dropped first beyond ``max_chars``."""

    def __init__(self, max_chars: int = MAX_TOTAL_CHARS, tail: int = TAIL_BYTES) -> None:
        self.max_chars = max_chars
        self.tail = tail
        self._logs: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def put(self, attempt_id: str, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        # A worker is trusted, but bound what one report can cost us anyway.
        text = text[-4 * self.tail:]
        self.pop(attempt_id)
        self._logs[attempt_id] = text
        self._chars += len(text)
        while self._chars > self.max_chars and self._logs:
            _, old = self._logs.popitem(last=False)
            self._chars -= len(old)

    def get(self, attempt_id: str) -> str | None:
        return self._logs.get(attempt_id)

    def has(self, attempt_id: str) -> bool:
        return attempt_id in self._logs

    def pop(self, attempt_id: str) -> str | None:
        text = self._logs.pop(attempt_id, None)
        if text is not None:
            self._chars -= len(text)
        return text

    def for_job(self, job_id: str) -> dict[str, str]:
        # Every step's attempts (their job ids are the job's with "-sN").
        return {aid: text for aid, text in self._logs.items()
                if job_of(attempt_job(aid)) == job_id}

    def drop_job(self, job_id: str) -> None:
        for aid in list(self.for_job(job_id)):
            self.pop(aid)


def logs_reply(attempts: list[dict[str, Any]], logs: dict[str, str],
               notes: dict[str, str] | None = None,
               max_chars: int = MAX_REPLY_CHARS) -> list[dict[str, Any]]:
    """What ``logs`` returns: one entry per attempt with its log, the total
    bounded (later logs are left out with a note to ask for their task),
    and for a log not known, why (``notes``: a running attempt's)."""
    reply = []
    budget = max_chars
    for a in attempts:
        text = logs.get(a["id"])
        entry = {"attempt": a["id"], "kind": a["kind"], "index": a["index"], "wid": a["wid"],
                 "host": a.get("host"), "state": a["state"], "log": text, "omitted": False}
        if notes and a["id"] in notes:
            entry["note"] = notes[a["id"]]
        if text is not None and len(text) > budget:
            entry["log"] = None
            entry["omitted"] = True
        elif text is not None:
            budget -= len(text)
        reply.append(entry)
    return reply


def format_logs(entries: list[dict[str, Any]]) -> str:
    """The text ``python -m pytxmr logs`` prints."""
    out = []
    for e in entries:
        # An attempt without a worker was restored from the journal: it ran
        # before the jobtracker restarted, which kept its result alone.
        where = (f"worker {e['wid']} on {e.get('host') or '?'}" if e["wid"] else
                 "before the jobtracker restarted")
        out.append(f"==> {e['attempt']} ({e['kind']} {e['index']}, {e['state']}, {where}) <==")
        if e.get("omitted"):
            out.append(f"[log left out: too much text at once; run: python -m pytxmr logs "
                       f"{attempt_job(e['attempt'])} {e['attempt']}]")
        elif e.get("log"):
            out.append(e["log"].rstrip("\n"))
            if e["state"] == "running":
                out.append("[running: its output so far]")
        elif e.get("note"):
            out.append(f"[{e['note']}]")
        elif not e["wid"]:
            out.append("[its log was not kept across the restart]")
        else:
            out.append("[no output so far]" if e["state"] == "running" else "[no output]")
        out.append("")
    return "\n".join(out)
