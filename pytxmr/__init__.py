"""pytxmr: MapReduce for Python 3 on Twisted.

This module stays import-light: task child processes import it, and every
millisecond of start-up is paid per task; so does every command, before it
knows whether the client agent runs it (``pytxmr.__main__``). What it
offers is imported on first use.
"""

from .syspath import drop_if_main as _drop_if_main

_drop_if_main()

__version__ = "0.1.0"

__all__ = ["Arg", "Client", "ClusterError", "JobFailed", "JobResult", "Step", "args",
           "counter", "run", "__version__"]

#: Where each name lives. The synchronous API's module imports Twisted's
#: client side, which task children never need.
_HOMES = {"counter": "counters", "Arg": "jobargs", "args": "jobargs", "Step": "steps",
          "Client": "api", "ClusterError": "api", "JobFailed": "api", "JobResult": "api",
          "run": "api"}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pytxmr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # once: pytxmr.counter may be called per record
    return value
