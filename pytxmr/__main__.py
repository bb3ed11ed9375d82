"""The ``pytxmr`` command (its console script and ``python -m pytxmr``).

This module only decides where a command runs: in a child of the client
agent when one is wanted (``PYTXMR_AGENT``, see ``pytxmr.agent``), else
here. It imports nothing heavy: what the agent spares a command is
importing the command line (``pytxmr.cli``) and Twisted.
"""

import _signal
import sys


def entry() -> None:
    try:
        from .agent import delegated

        code = delegated(sys.argv)
        if code is None:
            from .cli import entry as run_here
    except KeyboardInterrupt:  # as the command's own start says it (cli.entry)
        print("pytxmr: interrupted", file=sys.stderr)
        sys.exit(128 + _signal.SIGINT)
    if code is not None:
        from .agent import exit_process

        exit_process(code)
    run_here()


if __name__ == "__main__":
    entry()
