"""pytxmr: MapReduce for Python 3 on Twisted.

This module stays import-light: task child processes import it, and every
millisecond of start-up is paid per task.
"""

__version__ = "0.1.0"

from .counters import counter

__all__ = ["counter", "__version__"]
