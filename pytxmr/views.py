"""Plain-data views of the jobtracker's state.

The JSON API (``/api/...``), the HTML status pages and the job history all
describe workers, jobs, tasks and attempts with these dicts, so that a job
loaded from history renders exactly like a live one. Pure logic: it reads
the scheduler's dataclasses and the jobtracker's job records (duck-typed,
so this module imports nothing from the daemons) and takes the time as an
argument. ``IJobTrackerStatus`` is what the status site may ask of the
jobtracker: all it reads, and nothing it could change.
"""

from __future__ import annotations

import bisect
import heapq
from itertools import chain, islice
from typing import Any, Callable, Iterable

from zope.interface import Interface

from .counters import FRAMEWORK, Counters
from .scheduler import PROGRESS_UNITS, Attempt, Job, Scheduler, State, Worker, ended_order


class IJobTrackerStatus(Interface):
    """The jobtracker as the status site (``pytxmr.web``) reads it."""

    def now() -> float:
        """The jobtracker's clock."""

    def workers_view() -> list[dict[str, Any]]:
        """Every worker (``workers_view`` below)."""

    def jobs_view() -> list[dict[str, Any]]:
        """Every known job, live and from the history, oldest first."""

    async def job_view(job_id: str) -> dict[str, Any]:
        """One job in detail (an ended one's read from disk);
        ``wire.UnknownJob`` if there is none."""

    async def job_json(job_id: str) -> bytes:
        """``job_view`` as JSON, for ``/api/jobs/JOB``."""

    async def job_page_view(job_id: str) -> dict[str, Any]:
        """What the job's page shows (``page_view``), of a size that does
        not grow with the job; ``wire.UnknownJob`` if there is none."""

    async def attempt_log(job_id: str, attempt_id: str) -> str | None:
        """An attempt's log tail; ``wire.UnknownJob`` if there is none."""

    def metrics_text() -> bytes:
        """The Prometheus exposition of its metrics (``pytxmr.metrics``)."""

def task_id(job_id: str, kind: str, index: int) -> str:
    return f"{job_id}_{'m' if kind == 'map' else 'r'}{index:05d}"


def worker_view(w: Worker, now: float) -> dict[str, Any]:
    return {
        "wid": w.wid,
        "host": w.host,
        "shuffle_port": w.port,
        "slots": w.slots,
        "alive": w.alive,
        "draining": w.alive and w.draining,
        # Gone once drained, as told to stop: not lost, as a crashed worker is.
        "drained": not w.alive and w.stopping,
        "joined": w.joined,
        "last_heartbeat": w.last_seen,
        "heartbeat_age": now - w.last_seen if w.alive else None,
        "running": sorted(w.attempts),
        "failures": w.failed_total,
        "failures_by_job": dict(w.failures),
        "shuffle_memory_used": w.shuffle_memory[0] if w.shuffle_memory else None,
        "shuffle_memory_budget": w.shuffle_memory[1] if w.shuffle_memory else None,
    }


def workers_view(scheduler: Scheduler, now: float) -> list[dict[str, Any]]:
    """Live workers first, then the lost ones the scheduler keeps."""
    alive = [w for w in scheduler.workers.values() if w.alive]
    lost = [w for w in scheduler.workers.values() if not w.alive]
    return [worker_view(w, now) for w in alive + lost]


def part_records(sjob: Job) -> dict[int, int]:
    """Records of each committed part file (of a reduce, or of a map of a
    map-only job), for an object-store output's manifest."""
    tasks, name = ((sjob.reduces, "reduce output records") if sjob.reduces
                   else (sjob.maps, "map output records"))
    return {t.index: a.counters.get(FRAMEWORK, {}).get(name, 0)
            for t in tasks for a in t.attempts
            if a.id == t.committed and a.state is State.SUCCEEDED}


def live_counters(sjobs: list[Job]) -> dict[str, dict[str, int]]:
    """The counters of the committed attempts so far of a job's steps, with
    the failed and killed attempts counted and each phase's wall time once
    it is over (``Job.counters_so_far``): a failed or superseded attempt
    never counts."""
    totals = Counters()
    for sjob in sjobs:
        totals.add_all(sjob.counters_so_far().to_dict())
    return totals.to_dict()


def task_progress(job: Job, kind: str) -> dict[str, Any]:
    """How far a job's maps (or reduces) are: tasks done and running, and a
    percent that counts each running task's progress (its furthest
    attempt's, as heartbeats report it), not only the tasks done. From the
    scheduler's counts and progress sum: a poll costs nothing per task."""
    total = len(job.tasks(kind))
    done = job.succeeded[kind]
    running = job.running[kind]
    partial = job.progress[kind] / PROGRESS_UNITS
    progress = {
        "total": total,
        "done": done,
        "running": len(running),
        "failed_attempts": job.failed_attempts[kind],
        "percent": 100.0 * (done + partial) / total if total else 100.0,
    }
    if kind == "map" and job.awaited:
        # Done before a restart: not counted done until their workers come
        # back, which read as if they were lost.
        progress["awaited"] = len(job.awaited)
    return progress


def _phase(attempts: Iterable[Attempt], now: float) -> dict[str, float] | None:
    spans = [(a.started, a.finished if a.finished is not None else now) for a in attempts]
    if not spans:
        return None
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return {"start": start, "end": end, "seconds": end - start}


def job_summary(job: Any, sjobs: list[Job], now: float) -> dict[str, Any]:
    """One job as the job list shows it. ``job`` is a ``JobRecord``,
    ``sjobs`` the scheduler's jobs of its steps started so far."""
    end = job.finished if job.finished is not None else now
    running = job.state == "running"
    sjob = sjobs[-1] if sjobs else None
    state = getattr(job, "shown_state", job.state)
    summary: dict[str, Any] = {
        "job_id": job.id,
        "state": state,
        "filename": job.filename,
        "inputs": list(getattr(job, "inputs", []) or []),
        "output": job.output,
        "map_name": job.map_name,
        "reduce_name": job.reduce_name,
        "num_maps": len(job.splits),
        "num_reducers": job.num_reducers,
        "submitted": job.submitted,
        "finished": job.finished,
        "elapsed": end - job.submitted,
        "error": job.error,
        "counters": live_counters(sjobs) if running and sjobs else job.counters,
        "args": dict(getattr(job, "args", {}) or {}),
        "step": getattr(job, "step", 0) + 1,
        "steps": len(getattr(job, "steps", ()) or ()) or 1,
        "owner": getattr(job, "owner", ""),
        "output_format": job.steps[-1].output_format if getattr(job, "steps", None) else "text",
    }
    if state != job.state:
        summary["finishing"] = job.state  # its output not final yet
    if sjob is not None:
        summary["maps"] = task_progress(sjob, "map")
        summary["reduces"] = task_progress(sjob, "reduce")
        summary["failed_attempts"] = (summary["maps"]["failed_attempts"]
                                      + summary["reduces"]["failed_attempts"])
    return summary


def attempt_view(a: Attempt, scheduler: Scheduler, now: float,
                 has_log: Callable[[str], bool]) -> dict[str, Any]:
    w = scheduler.workers.get(a.wid)
    end = a.finished if a.finished is not None else now
    return {
        "id": a.id,
        "kind": a.kind,
        "index": a.index,
        "wid": a.wid,
        "host": w.host if w is not None else None,
        "state": a.state.value,
        "started": a.started,
        "finished": a.finished,
        "duration": end - a.started,
        "progress": 1.0 if a.state is State.SUCCEEDED else a.progress,
        "error": a.error,
        "counters": a.counters,
        # A running one's output so far comes from its tasktracker.
        "has_log": a.state is State.RUNNING or has_log(a.id),
    }


def job_detail(job: Any, sjobs: list[Job], scheduler: Scheduler, now: float,
               has_log: Callable[[str], bool] = lambda aid: False) -> dict[str, Any]:
    """Everything about one job: the summary, its phases, and each task
    with its attempts (of every step). Also what the job history stores."""
    detail = job_summary(job, sjobs, now)
    tasks: list[dict[str, Any]] = []
    for step, sjob in enumerate(sjobs, 1):
        for t in sjob.maps + sjob.reduces:
            tasks.append({
                "id": task_id(sjob.id, t.kind, t.index),
                "kind": t.kind,
                "index": t.index,
                "step": step,
                "state": t.state.value,
                "failures": t.failures,
                "committed": t.committed,
                "attempts": [attempt_view(a, scheduler, now, has_log) for a in t.attempts],
            })
    if sjobs:
        everything = [t for sjob in sjobs for t in sjob.maps + sjob.reduces]
        detail["phases"] = {
            kind: _phase((a for t in everything if t.kind == kind for a in t.attempts), now)
            for kind in ("map", "reduce")}
    detail["tasks"] = tasks
    return detail


def job_page_view(job: Any, sjobs: list[Job], scheduler: Scheduler, now: float,
                  has_log: Callable[[str], bool] = lambda aid: False) -> dict[str, Any]:
    """What a live job's page shows (``page_view``), from what the scheduler
    keeps for it (``Job.starts``, ``ends``, ``running``, ``unsuccessful``):
    a page re-fetches itself every second, and made from the whole detail,
    a 50,000-map job's took 0.8 s of the reactor each time."""
    view = job_summary(job, sjobs, now)
    # Steps run one after the other: their times, joined, stay sorted.
    starts = {kind: list(chain.from_iterable(sj.starts[kind] for sj in sjobs)) for kind in KINDS}
    ends = {kind: list(chain.from_iterable(sj.ends[kind] for sj in sjobs)) for kind in KINDS}
    if sjobs:
        view["phases"] = {kind: _phase_of(starts[kind], ends[kind], now) for kind in KINDS}
    total = sum(map(len, starts.values()))
    if total <= PAGE_ATTEMPTS:
        attempts = [a for sjob in sjobs for t in sjob.maps + sjob.reduces for a in t.attempts]
    else:
        attempts = [a for sjob in sjobs for kind in KINDS for i in sorted(sjob.running[kind])
                    for a in sjob.tasks(kind)[i].running()]
        # By when they ended, as the stored page lists them.
        attempts += islice(heapq.merge(*(sjob.unsuccessful for sjob in sjobs),
                                       key=ended_order), PAGE_ATTEMPTS)
        attempts += _succeeded(sjobs, PAGE_ATTEMPTS - len(attempts))
    view["attempts"] = [attempt_view(a, scheduler, now, has_log)
                        for a in attempts[:PAGE_ATTEMPTS]]
    return _with_chart(view, total, starts, ends, now)


def _succeeded(sjobs: list[Job], wanted: int) -> list[Attempt]:
    """Up to ``wanted`` attempts that succeeded, in task order: the scan
    stops at the last of them (tasks succeed about in order)."""
    found: list[Attempt] = []
    for sjob in sjobs:
        left = sum(map(len, sjob.ends.values())) - len(sjob.unsuccessful)
        for t in chain(sjob.maps, sjob.reduces):
            if len(found) >= wanted or not left:
                break
            for a in t.attempts:
                if a.state is State.SUCCEEDED:
                    found.append(a)
                    left -= 1
    return found[:wanted]


def page_view(detail: dict[str, Any]) -> dict[str, Any]:
    """What the page of the job ``detail`` shows (the history stores it
    beside the detail, so that an ended job's page reads no detail): its
    summary and phases, every attempt if there are at most
    ``PAGE_ATTEMPTS``, else that many, those that did not succeed first,
    and ``concurrency``, how many attempts ran at each moment."""
    view = {k: v for k, v in detail.items() if k != "tasks"}
    attempts = [a for t in detail.get("tasks", []) for a in t["attempts"]]
    now = detail.get("finished") or max((a["finished"] or a["started"] for a in attempts),
                                        default=detail["submitted"])
    if len(attempts) > PAGE_ATTEMPTS:
        rest = [a for a in attempts if a["state"] != "succeeded"]
        attempts = ([a for a in rest if a["state"] == "running"]
                    + sorted((a for a in rest if a["state"] != "running"),
                             key=lambda a: (a["finished"] or now, a["id"]))
                    + [a for a in attempts if a["state"] == "succeeded"])
    starts = {kind: sorted(a["started"] for a in attempts if a["kind"] == kind)
              for kind in KINDS}
    ends = {kind: sorted(a["finished"] for a in attempts
                         if a["kind"] == kind and a["finished"] is not None) for kind in KINDS}
    view["attempts"] = attempts[:PAGE_ATTEMPTS]
    return _with_chart(view, len(attempts), starts, ends, now)


#: Attempts that a job's page lists, and draws one by one on its timeline.
PAGE_ATTEMPTS = 2000
#: The moments at which the chart that a bigger job's page draws instead
#: counts the running attempts.
CONCURRENCY_SAMPLES = 300
KINDS = ("map", "reduce")


def _phase_of(starts: list[float], ends: list[float], now: float) -> dict[str, float] | None:
    """A phase from its attempts' sorted start and end times (``_phase``)."""
    if not starts:
        return None
    end = now if len(ends) < len(starts) else ends[-1]
    return {"start": starts[0], "end": end, "seconds": end - starts[0]}


def _with_chart(view: dict[str, Any], total: int, starts: dict[str, list[float]],
                ends: dict[str, list[float]], now: float) -> dict[str, Any]:
    view["attempts_total"] = total
    view["concurrency"] = None
    if total > PAGE_ATTEMPTS:
        last = max([view.get("finished") or now] + [e[-1] for e in ends.values() if e])
        view["concurrency"] = concurrency(starts, ends, view["submitted"], last,
                                          CONCURRENCY_SAMPLES)
    return view


def concurrency(starts: dict[str, list[float]], ends: dict[str, list[float]], first: float,
                last: float, samples: int) -> dict[str, Any]:
    """How many attempts of each kind ran at ``samples`` moments evenly
    spread over [first, last], from the sorted times they started and
    ended: a binary search per moment, whatever the number of attempts."""
    step = (last - first) / samples
    moments = [first + (i + 0.5) * step for i in range(samples)]
    # (Never below 0: a clock set back leaves times out of order.)
    series = {kind: [max(0, bisect.bisect_right(starts[kind], t)
                         - bisect.bisect_right(ends[kind], t)) for t in moments]
              for kind in KINDS}
    return {"start": first, "end": last, "samples": samples, "series": series}
def result_of(detail: dict[str, Any]) -> dict[str, Any]:
    """The ``status``/``wait`` result (what the submitter prints) of a job
    detail, e.g. one loaded from the history."""
    keys = ("job_id", "state", "error", "counters", "elapsed", "output", "filename",
            "num_maps", "num_reducers", "maps", "reduces", "failed_attempts", "args",
            "step", "steps", "owner", "output_format")
    return {k: detail[k] for k in keys if k in detail}


def find_attempts(detail: dict[str, Any], which: str | None) -> list[dict[str, Any]]:
    """The attempts of a job detail that ``which`` names: None for all, an
    attempt id, a task id (``JOB_m00003``), or short forms like ``m3``,
    ``r0``, ``map 3``."""
    attempts = [a for t in detail.get("tasks", []) for a in t["attempts"]]
    if which is None or not which.strip():
        return attempts
    which = which.strip()
    exact = [a for a in attempts if a["id"] == which or a["id"].rsplit("_", 1)[0] == which]
    if exact:
        return exact
    short = which.replace(" ", "").lower()
    for prefix, kind in (("map", "map"), ("reduce", "reduce"), ("m", "map"), ("r", "reduce")):
        rest = short[len(prefix):]
        if short.startswith(prefix) and rest.isdigit():
            return [a for a in attempts if a["kind"] == kind and a["index"] == int(rest)]
    return []
