"""What ``run`` (the command, and ``pytxmr.run``) needs before any daemon
code is imported: the task slots of its local cluster, and its zygote,
started first so that its start overlaps the imports that follow.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import Zygote


#: Seconds an interrupted `run` (the command, or ``pytxmr.run``) may take
#: to stop what it started: its cluster, its job, its files.
UNWIND_TIMEOUT = 15.0


def default_slots(workers: int) -> int:
    """Task slots per tasktracker of `run`: the CPUs shared among them."""
    return max(1, (os.cpu_count() or 1) // workers)


def start_zygote() -> Zygote:
    """``run``'s one zygote, which forks every task and check of its
    daemons (three zygotes starting at once made the first map wait
    0.1-0.2 s longer on 2 cores). It starts first: its own start then
    overlaps this process's imports of the client and daemon code instead
    of delaying the job's first task (0.04 s off every ``run``)."""
    from twisted.internet import reactor

    from .child import Zygote

    global _given
    zygote = Zygote(reactor)
    if _given is not None:  # the client agent's, started as ours would be: 0.04 s sooner
        given, _given = _given, None
        zygote.adopt(*given)
    else:
        zygote.start()
    return zygote


#: A zygote started for this process's ``run`` (see give_zygote).
_given: tuple[int, int] | None = None


def give_zygote(stdio: int, stderr: int) -> None:
    """A zygote the client agent started for this ``run`` command's child
    (``agent._Spare``): ``start_zygote`` adopts it (``child.Zygote.adopt``)."""
    global _given
    _given = stdio, stderr
