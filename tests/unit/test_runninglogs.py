"""Asking tasktrackers what their running attempts printed so far: one
call per attempt however many ask at once or just after, since the log
page of a cluster without users is anyone's."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from pytxmr.jobtracker import runninglogs
from pytxmr.jobtracker.runninglogs import RunningLogs


class Worker:
    """A tasktracker whose answers the test gives, one Deferred per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, defer.Deferred[str | None]]] = []

    async def running_log(self, attempt_id: str) -> str | None:
        d: defer.Deferred[str | None] = defer.Deferred()
        self.calls.append((attempt_id, d))
        return await d


class Conn:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker


def attempt(aid: str, wid: str = "w1", state: str = "running") -> dict[str, Any]:
    return {"id": aid, "wid": wid, "state": state}


def ask(logs: RunningLogs, *aids: str, workers: dict[str, Any]) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(logs.ask([attempt(a) for a in aids], workers))


def test_asks_on_their_way_and_just_answered_share_one_call() -> None:
    clock, worker = task.Clock(), Worker()
    workers = {"w1": Conn(worker)}
    logs = RunningLogs(clock)
    first = ask(logs, "a", "b", workers=workers)
    second = ask(logs, "a", workers=workers)
    assert [aid for aid, _ in worker.calls] == ["a", "b"]
    worker.calls[0][1].callback("so far\n")
    worker.calls[1][1].callback("")  # asked, nothing printed yet
    assert first.result == ({"a": "so far\n"}, {})
    assert second.result == ({"a": "so far\n"}, {})
    clock.advance(runninglogs.FRESH / 2)
    assert ask(logs, "a", "b", workers=workers).result == ({"a": "so far\n"}, {})
    assert len(worker.calls) == 2
    clock.advance(runninglogs.FRESH / 2)
    again = ask(logs, "a", workers=workers)
    assert [aid for aid, _ in worker.calls] == ["a", "b", "a"]
    worker.calls[2][1].callback("so far\nand more\n")
    assert again.result == ({"a": "so far\nand more\n"}, {})


def test_a_worker_that_does_not_answer_costs_one_wait_for_all() -> None:
    clock, worker = task.Clock(), Worker()
    workers = {"w1": Conn(worker)}
    logs = RunningLogs(clock)
    waits = [ask(logs, "a", workers=workers) for _ in range(3)]
    assert len(worker.calls) == 1
    clock.advance(runninglogs.TIMEOUT)
    note = "running; its tasktracker did not say what it printed so far"
    assert [w.result for w in waits] == [({}, {"a": note})] * 3
    clock.advance(runninglogs.FRESH)
    ask(logs, "a", workers=workers)
    assert len(worker.calls) == 2


def test_only_running_attempts_of_known_workers_are_asked() -> None:
    worker = Worker()
    logs = RunningLogs(task.Clock())
    d = defer.Deferred.fromCoroutine(logs.ask(
        [attempt("a", state="succeeded"), attempt("b", wid="gone"), attempt("c")],
        {"w1": Conn(worker)}))
    assert [aid for aid, _ in worker.calls] == ["c"]
    worker.calls[0][1].callback(None)
    assert d.result == ({}, {"c": "running; its tasktracker did not say what it printed so far"})


def test_an_ask_that_fails_otherwise_says_so_like_no_answer() -> None:
    """Only a timeout was caught: any other failure left ``ask`` with it,
    and the asks not awaited yet as unhandled errors."""
    worker = Worker()
    logs = RunningLogs(task.Clock())
    d = ask(logs, "a", "b", workers={"w1": Conn(worker)})
    worker.calls[0][1].errback(RuntimeError("a bug in an adapter"))
    worker.calls[1][1].callback("b's\n")
    note = "running; its tasktracker did not say what it printed so far"
    assert d.result == ({"b": "b's\n"}, {"a": note})
