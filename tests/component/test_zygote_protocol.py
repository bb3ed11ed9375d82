"""The daemon's side of the zygote (``child.Zygote``) on a fake transport:
a stop races with a fork whose start is not reported yet."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


def test_a_stopping_zygote_kills_a_child_whose_start_was_not_yet_reported(
        monkeypatch: Any) -> None:
    """A fork requested just before the daemon stops: the zygote forks it
    anyway and waits for it before exiting, so it must die when its start
    is reported, or the daemon's stop waits on a task nobody killed."""
    from pytxmr import child

    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(child.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    transport = StringTransport()
    transport.closeStdin = lambda: None  # type: ignore[attr-defined]

    class ProcessReactor:
        """Spawns nothing: the zygote's process is the transport above."""

        def spawnProcess(self, protocol: Any, *args: Any, **kw: Any) -> StringTransport:
            protocol.makeConnection(transport)
            return transport

    zygote = child.Zygote(ProcessReactor())  # type: ignore[arg-type]
    zygote.start()
    forked = zygote.fork({"kind": "check"}, "cwd", "log", "result")
    zygote.stop()
    assert killed == []  # its pid is not known yet
    zygote.outReceived(json.dumps({"started": 4242, "id": 1}).encode() + b"\n")
    assert killed == [(4242, signal.SIGKILL)]
    assert forked.kill_requested == "the daemon is stopping"


def test_a_zygote_that_could_not_be_started_stops_with_nothing_to_end() -> None:
    """Its python not executable (a daemon run as another user): the start
    fails with that error, and the daemon's stop, which followed, no longer
    hid it behind an AttributeError of its own."""
    from pytxmr import child

    class ProcessReactor:
        def spawnProcess(self, protocol: Any, *args: Any, **kw: Any) -> None:
            raise PermissionError(13, "Permission denied")

    zygote = child.Zygote(ProcessReactor())  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        zygote.start()
    assert not zygote.running
    stopped: list[object] = []
    zygote.stop().addCallback(stopped.append)
    assert stopped == [None]


def test_a_task_is_killed_through_the_zygote_which_knows_what_its_process_runs(
        monkeypatch: Any) -> None:
    """Killed by its pid, a task that had just ended took with it the next
    task of its job, which the zygote had handed its process to before we
    read the first one's end: the kill goes to the zygote, by request. A
    task the zygote did not end (the zygote stopped) is killed by its pid
    a while later."""
    from twisted.internet.task import Clock

    from pytxmr import child

    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(child.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(child.os, "killpg", lambda pid, sig: killed.append((pid, sig)))
    transport = StringTransport()

    class ProcessReactor(Clock):
        def spawnProcess(self, protocol: Any, *args: Any, **kw: Any) -> StringTransport:
            protocol.makeConnection(transport)
            return transport

    reactor = ProcessReactor()
    zygote = child.Zygote(reactor)
    zygote.start()
    first = zygote.fork({"kind": "map"}, "cwd", "log", "result", reuse="job")
    second = zygote.fork({"kind": "map"}, "cwd", "log", "result", reuse="job")
    for n, pid in ((1, 4242), (2, 4343)):
        zygote.outReceived(json.dumps({"started": pid, "id": n}).encode() + b"\n")
    transport.clear()
    first.kill("a backup that lost")
    second.kill("past its timeout")
    assert killed == []
    assert [json.loads(line) for line in transport.value().splitlines()] == [
        {"kill": 1}, {"kill": 2}]
    zygote.outReceived(json.dumps({"ended": 4242, "status": -9}).encode() + b"\n")
    reactor.advance(child.KILL_BY_PID_AFTER)
    assert killed == [(4343, signal.SIGKILL)]  # the one not said to have ended


def test_a_task_forked_as_a_dead_zygote_s_tasks_end_goes_to_the_new_zygote(
        monkeypatch: Any) -> None:
    """The zygote died: its tasks' ends were said before another was
    started, and a task waiting for the slot one freed was sent, at once,
    to the dead zygote, where it waited for ever."""
    from pytxmr import child

    monkeypatch.setattr(child, "kill_group", lambda pid: None)
    transports: list[StringTransport] = []

    class ProcessReactor:
        def spawnProcess(self, protocol: Any, *args: Any, **kw: Any) -> StringTransport:
            transport = StringTransport()
            transports.append(transport)
            protocol.makeConnection(transport)
            return transport

    zygote = child.Zygote(ProcessReactor())  # type: ignore[arg-type]
    zygote.start()
    first = zygote.fork({"kind": "map"}, "cwd", "log", "result")
    zygote.outReceived(json.dumps({"started": 4242, "id": 1}).encode() + b"\n")
    first.status.addCallback(lambda _: zygote.fork({"kind": "map"}, "cwd", "log", "result"))
    zygote.processEnded(Failure(RuntimeError("killed")))
    assert len(transports) == 2
    assert [json.loads(line)["id"] for line in transports[1].value().splitlines()] == [2]
