"""The ``pytxmr`` command (its console script and ``python -m pytxmr``).

This module only decides where a command runs: in a child of the client
agent when one is wanted (``PYTXMR_AGENT``, see ``pytxmr.agent``), else
here. It imports nothing heavy: what the agent spares a command is
importing the command line (``pytxmr.cli``) and Twisted.
"""

import sys

from .syspath import drop_working_directory, dropped

# First: the agent's imports (socket...) and the command's (msgpack...)
# would find a user's module of that name where ``python -m`` was run.
_entry = drop_working_directory()
if _entry is not None:
    dropped.append(_entry)

from .agent import delegated  # noqa: E402


def entry() -> None:
    code = delegated(sys.argv)
    if code is not None:
        sys.exit(code)
    from .cli import entry as run_here

    run_here()


if __name__ == "__main__":
    entry()
