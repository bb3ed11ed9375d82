"""The tasktracker: the worker daemon (``python -m pytxmr.tasktracker``).

Its rooms: ``worker`` (``TaskTracker``: jobs and attempts, run in child
processes, map outputs kept in the KeyValueStore, reports through
``ports.IJobTracker``), ``fetch`` (a reduce attempt's shuffle),
``pbadapter`` (PB in and out, and the connection that stays logged in),
``service`` (the service tree) and ``__main__`` (the command line). The
shuffle server is ``pytxmr.shuffle``. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The package's public names, imported when first used: its pure rooms
#: (e.g. ``submission``) then import without Twisted, as tests/unit/test_layout.py checks.
_PUBLIC = {"Config": "service", "TaskTrackerService": "service", "make_service": "service",
           "TaskTracker": "worker"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
