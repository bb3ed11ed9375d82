"""The jobtracker: the master daemon (``python -m pytxmr.jobtracker``).

Its rooms: ``submission`` (pure: a spec checked into a ``Submission``),
``job`` (pure: ``JobRecord``), ``admission`` (the checks a submission
passes, in a thread and a child process), ``tracker`` (``JobTracker``: jobs,
workers, the scheduler's actions carried out through ``ports.IWorker``),
``pbadapter`` (PB in and out), ``service`` (the service tree) and
``__main__`` (the command line). See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The package's public names, imported when first used: its pure rooms
#: (e.g. ``submission``) then import without Twisted, as tests/unit/test_layout.py checks.
_PUBLIC = {"Config": "service", "JobTrackerService": "service", "make_service": "service",
           "JobTracker": "tracker"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
