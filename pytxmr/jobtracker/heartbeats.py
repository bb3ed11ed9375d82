"""The jobtracker's heartbeat pacing: how often it asks each tasktracker to
heartbeat, and how long one may stay silent before it is lost.

PB's cost of receiving a heartbeat (about 100 us) dwarfs the logic's, so the
interval grows with the cluster to keep the heartbeats a second bounded, as
Hadoop's ``mapreduce.jobtracker.heartbeats.in.second`` does. Scheduling does
not wait for heartbeats (the jobtracker pushes tasks, attempts report at
once): a longer interval only delays progress and the detection of a hung
worker. Pure: ``JobTracker`` calls it, with the number of live workers.
"""

from __future__ import annotations

import math

#: Heartbeats a second the jobtracker asks of the whole cluster: at 1,000
#: workers each heartbeats every 10 s (docs/architecture.md, "The
#: jobtracker at cluster scale"). Hadoop's default too.
DEFAULT_HEARTBEATS_PER_SECOND = 100.0
#: Heartbeats in a row a worker may miss, at the interval it was told,
#: before it is lost (when that outlasts the configured expiry).
MISSED_HEARTBEATS = 5


def heartbeat_interval(live_workers: int, per_second: float) -> float:
    """The interval that keeps ``live_workers`` to ``per_second`` heartbeats
    a second, rounded up to a tenth of a second, so that a worker restarts
    its timer only when the cluster changed by that much."""
    return math.ceil(10 * live_workers / per_second) / 10


def announce_wait(workers: int, per_second: float) -> float:
    """Seconds to gather map outputs before announcing them to the
    ``workers`` running a job's reduces (one call to each).

    Short on a small cluster: 20 ms plus 1 ms per worker, at most 1 s. On a
    large one, long enough that the calls a second stay within the
    heartbeats' budget: PB's cost of sending one (about 100 us) is what
    matters there, as for heartbeats (at 1,000 workers, an announcement to
    each every second would take a tenth of a core; every 10 s, 1%).
    """
    return max(min(1.0, 0.02 + workers / 1000), workers / per_second)


class Pacing:
    """The interval each worker was last told, and the expiry that follows.

    A worker adopts the interval it is told in the answer to its heartbeat
    (never one shorter than its own), and that heartbeat is the one the
    expiry counts from: a worker told a longer interval as the cluster
    grows is not lost by the shorter expiry, and one told a shorter one as
    it shrinks is held to it from its next heartbeat on. A worker that
    ignores the answer (an older one) keeps heartbeating at its own pace,
    well within the longer expiry."""

    def __init__(self, expiry: float, per_second: float = DEFAULT_HEARTBEATS_PER_SECOND) -> None:
        self.expiry = expiry
        self.per_second = per_second
        #: Per worker whose told interval outlasts ``expiry`` by
        #: ``MISSED_HEARTBEATS``: its own, longer, expiry.
        self._longer: dict[str, float] = {}

    def tell(self, wid: str, live_workers: int) -> float:
        """The interval to answer ``wid``'s heartbeat with, noted for its expiry."""
        interval = heartbeat_interval(live_workers, self.per_second)
        expiry = MISSED_HEARTBEATS * interval
        if expiry > self.expiry:
            self._longer[wid] = expiry
        else:
            self._longer.pop(wid, None)
        return interval

    def expiry_of(self, wid: str) -> float:
        """Seconds ``wid`` may go unheard before it is lost."""
        return self._longer.get(wid, self.expiry)

    @property
    def longer_expiries(self) -> dict[str, float]:
        """The workers whose expiry is not ``expiry``: theirs."""
        return self._longer

    def forget(self, wid: str) -> None:
        self._longer.pop(wid, None)
