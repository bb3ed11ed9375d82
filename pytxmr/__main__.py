"""The ``pytxmr`` command (its console script and ``python -m pytxmr``).

This module only decides where a command runs: in a child of the client
agent when one is wanted (``PYTXMR_AGENT``, see ``pytxmr.agent``), else
here. It imports nothing heavy: what the agent spares a command is
importing the command line (``pytxmr.cli``) and Twisted.
"""

import sys

from .agent import delegated


def entry() -> None:
    code = delegated(sys.argv)
    if code is not None:
        sys.exit(code)
    from .cli import entry as run_here

    run_here()


if __name__ == "__main__":
    entry()
