"""Where pytxmr's processes import from: not the directory they were
started in.

``python -m`` puts the working directory first on ``sys.path``. A user's
``logging.py`` or ``msgpack.py`` there was then imported by pytxmr's
own command and zygote, which failed ("the task's zygote died"), and a
job's code imported modules from the submitter's directory that its
bundle does not ship, and failed on every other host.
"""

from __future__ import annotations

import os
import sys

#: What ``drop_if_main`` dropped (``python -m``'s working directory): the
#: command's own first entry, which a child of the client agent gets and
#: drops in its turn.
dropped: list[str] = []


def drop_if_main() -> None:
    """In ``python -m pytxmr...`` (the command, a daemon), before the
    package's first import: a user's ``msgpack.py`` where a jobtracker was
    started was what it imported, and it failed."""
    orig = getattr(sys, "orig_argv", [])
    # While Python looks for the module to run, argv[0] is "-m".
    if sys.argv[:1] != ["-m"] or "-m" not in orig[:-1]:
        return
    if orig[orig.index("-m") + 1].partition(".")[0] == "pytxmr":
        entry = drop_working_directory()
        if entry is not None:
            dropped.append(entry)


def drop_working_directory() -> str | None:
    """Take the working directory off ``sys.path``, where ``python -m`` put
    it; kept where pytxmr itself is imported from it (a source tree run in
    place). The entry dropped, if any. Only the entry Python put first
    goes: once ``drop_if_main`` dropped it, what is first is the user's
    (``PYTHONPATH=.``), and stays."""
    if dropped:
        return None
    try:
        here = os.getcwd()
    except FileNotFoundError:  # removed: nothing is imported from there
        return None
    if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) == here:
        return None
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        return sys.path.pop(0)
    return None
