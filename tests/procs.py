"""Real processes for the integration tests: pytxmr.testing.processes (a
jobtracker and tasktrackers as ``python -m`` daemons on free loopback ports,
the ``python -m pytxmr`` command line) run from this checkout, with
pytest's failures where a wait or a command runs out of time.

Every process a test starts is ended at teardown, also when the test fails
(``Cluster.stop_all``), and the test fails if a daemon's task children
outlived it, a cleanly stopped tasktracker left its shuffle memory, or a
daemon logged an unhandled error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest

from pytxmr.testing import processes
from pytxmr.testing.processes import START_TIMEOUT, STOP_TIMEOUT, SUBMIT_TIMEOUT, Daemon

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "START_TIMEOUT", "STOP_TIMEOUT", "SUBMIT_TIMEOUT", "Cluster", "Daemon",
           "base_env", "run_cli", "wait_for"]

P = ParamSpec("P")
R = TypeVar("R")


def _failing_on_timeout(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, with its TimeoutError turned into a test failure that shows its message."""
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TimeoutError as e:
            message = str(e)
        pytest.fail(message)  # outside the except: no "during handling" chain

    return call


wait_for = _failing_on_timeout(processes.wait_for)
run_cli = _failing_on_timeout(processes.run_cli)


def base_env(home: Path) -> dict[str, str]:
    """The daemons' and the CLI's environment: HOME at ``home``, this checkout first."""
    return processes.daemon_env(home, ROOT)


class Cluster(processes.Cluster):
    """Daemons started for a test from this checkout, and the CLI run against them."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, pythonpath=ROOT)

    cli = _failing_on_timeout(processes.Cluster.cli)

    def stop_all(self) -> None:
        """Tasktrackers first, then the jobtracker; fails on what they left behind."""
        report = self.stop()
        assert not report.orphans, f"task children outlived their daemons: {report.orphans}"
        assert not report.leaked_memory, (
            f"cleanly stopped tasktrackers left their shuffle memory: {report.leaked_memory}")
        for daemon in self.daemons:
            log = daemon.log()
            assert "Unhandled" not in log, f"{daemon.name} logged an unhandled error:\n{log}"
