"""The jobtracker's Prometheus metrics (``/metrics`` on its status site),
with the official client library.

Counters and the histogram grow as things happen (a job or an attempt
ends); gauges are read from the jobtracker's state when scraped, so
nothing on the scheduling path pays for them. Each jobtracker has its own
registry (tests start many in one process).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Attempt durations: from a tiny task to a long reduce.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _State(Collector):
    """Gauges of the cluster as it is now."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._state()
        yield GaugeMetricFamily("pytxmr_workers", "Tasktrackers registered and alive",
                                value=s["workers"])
        yield GaugeMetricFamily("pytxmr_slots", "Task slots of the live tasktrackers",
                                value=s["slots"])
        running = GaugeMetricFamily("pytxmr_running_attempts", "Task attempts running",
                                    labels=["kind"])
        pending = GaugeMetricFamily("pytxmr_pending_tasks", "Tasks of running jobs waiting "
                                    "for a slot", labels=["kind"])
        for kind in ("map", "reduce"):
            running.add_metric([kind], s["running"][kind])
            pending.add_metric([kind], s["pending"][kind])
        yield running
        yield pending
        yield GaugeMetricFamily("pytxmr_running_jobs", "Jobs running", value=s["jobs"])


class Metrics:
    """What the jobtracker counts, and ``expose()`` for a scrape."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_State(state))
        self.jobs = Counter("pytxmr_jobs_finished", "Jobs ended, by final state",
                            ["state"], registry=self.registry)
        self.attempts = Counter("pytxmr_attempts_finished", "Task attempts reported, by kind "
                                "and outcome", ["kind", "outcome"], registry=self.registry)
        self.durations = Histogram("pytxmr_attempt_seconds", "Wall time of reported task "
                                   "attempts", ["kind"], buckets=DURATION_BUCKETS,
                                   registry=self.registry)
        self.shuffle = Counter("pytxmr_shuffle_bytes", "Map output bytes fetched by the "
                               "committed reduce attempts of ended jobs", registry=self.registry)

    def attempt_ended(self, kind: str, outcome: str, seconds: float) -> None:
        self.attempts.labels(kind, outcome).inc()
        self.durations.labels(kind).observe(seconds)

    def job_ended(self, state: str, shuffle_bytes: int) -> None:
        self.jobs.labels(state).inc()
        self.shuffle.inc(shuffle_bytes)

    def expose(self) -> bytes:
        return generate_latest(self.registry)
