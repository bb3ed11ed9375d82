"""Waiting on the real reactor until a condition holds, with a deadline (no
sleep that guesses how long something takes): for the tests of in-process
daemons (tests/component, tests/integration)."""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet import reactor, task


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` is true, polling the reactor, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        await task.deferLater(reactor, 0.02)
