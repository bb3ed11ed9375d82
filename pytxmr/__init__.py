"""pytxmr: MapReduce for Python 3 on Twisted.

This module stays import-light: task child processes import it, and every
millisecond of start-up is paid per task.
"""

__version__ = "0.1.0"

from .counters import counter
from .jobargs import Arg, args
from .steps import Step

__all__ = ["Arg", "Client", "ClusterError", "JobFailed", "JobResult", "Step", "args",
           "counter", "run", "__version__"]

#: The synchronous API, imported on first use: task children, which import
#: this package, never need Twisted's client side.
_API = frozenset({"Client", "ClusterError", "JobFailed", "JobResult", "run"})


def __getattr__(name: str) -> object:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pytxmr' has no attribute {name!r}")
