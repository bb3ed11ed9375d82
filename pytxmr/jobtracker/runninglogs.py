"""What running attempts printed so far, asked of their tasktrackers.

A log comes with an attempt's result; a running one's (a task being
debugged, a hung one) is asked of its tasktracker when someone looks
(``logs``, the log page). Each ask costs a PB call and a read of the log
on the tasktracker, and the log page of a cluster without users is
anyone's: so whoever asks for an attempt while an ask is on its way, or
within ``FRESH`` seconds of its answer, gets that answer (a page many
reload, a script that polls) instead of another call.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ..ports import IWorker

#: The running attempts whose output so far one call asks their
#: tasktrackers for, and for how long.
ASKED = 50
TIMEOUT = 5.0
#: Seconds an answer serves the asks for the same attempt that follow it.
FRESH = 1.0


class _Ask:
    """One ask of a tasktracker, its answer handed to every waiter."""

    def __init__(self, d: defer.Deferred[str | None], clock: IReactorTime) -> None:
        self.answered_at: float | None = None
        self._clock = clock
        self._answer: str | None | Failure = None
        self._waiting: list[defer.Deferred[str | None]] = []
        d.addBoth(self._answered)

    def _answered(self, answer: str | None | Failure) -> None:
        self._answer = answer
        self.answered_at = self._clock.seconds()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._fire(d)

    def wait(self) -> defer.Deferred[str | None]:
        d: defer.Deferred[str | None] = defer.Deferred()
        if self.answered_at is None:
            self._waiting.append(d)
        else:
            self._fire(d)
        return d

    def _fire(self, d: defer.Deferred[str | None]) -> None:
        if isinstance(self._answer, Failure):
            d.errback(self._answer)
        else:
            d.callback(self._answer)


class RunningLogs:
    """The asks on their way, and the answers still fresh, by attempt id."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._asks: dict[str, _Ask] = {}

    async def ask(self, attempts: Iterable[dict[str, Any]], workers: dict[str, Any]
                  ) -> tuple[dict[str, str], dict[str, str]]:
        """What the first ``ASKED`` running attempts among ``attempts`` (as
        ``views`` describes them) printed so far, from their tasktrackers
        (``workers``: worker id -> its connection, with ``worker``, an
        ``IWorker``); and why the others' is not known."""
        asked: dict[str, defer.Deferred[str | None]] = {}
        notes: dict[str, str] = {}
        for a in attempts:
            conn = workers.get(a["wid"]) if a["state"] == "running" else None
            if conn is None:
                continue
            if len(asked) == ASKED:
                notes[a["id"]] = (f"running; its output so far is asked for {ASKED} "
                                  f"running attempts at a time: ask for its task")
                continue
            asked[a["id"]] = self._ask(a["id"], conn.worker)
        logs = {}
        for aid, d in asked.items():
            try:
                text = await d
            except Exception:  # a timeout; an adapter answers None for the rest
                text = None
            if text:
                logs[aid] = text
            elif text is None:  # no answer (a stopped worker), or none it could give
                notes[aid] = "running; its tasktracker did not say what it printed so far"
        return logs, notes

    def _ask(self, attempt_id: str, worker: IWorker) -> defer.Deferred[str | None]:
        now = self._clock.seconds()
        for aid in [aid for aid, ask in self._asks.items()
                    if ask.answered_at is not None and now - ask.answered_at >= FRESH]:
            del self._asks[aid]
        ask = self._asks.get(attempt_id)
        if ask is None:
            d = defer.Deferred.fromCoroutine(worker.running_log(attempt_id))
            ask = self._asks[attempt_id] = _Ask(d.addTimeout(TIMEOUT, self._clock), self._clock)
        return ask.wait()
