"""The word-count benchmark's parts (bench/wordcount.py is the command line):

- measure: run a command in its own process group; wall time, CPU, peak RSS
- disk: the peak disk (and shuffle memory) of a run's work directories
- counters: the job's counters, read from what the command printed
- corpus: generate, cache, split and pre-read the input
- reference: the expected outputs and the check of every run's output
- systems: what runs (pytxmr from a source tree, the peers) and the clusters
- rounds: every entry run round by round on one input
- report: the tables, the targets, the before/after lines, the plot
- results: the machine, the measured sources (snapshots) and the JSON
- session: one invocation, from the arguments to the results
"""

import os
import sys

MB = 1_000_000  # 1 MB = 10**6 bytes throughout (corpus sizes and RSS alike)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The cluster helper (pytxmr.testing) is this checkout's, installed or not.
if REPO not in sys.path:
    sys.path.insert(1, REPO)

# Every entry's commands run in their own processes, whatever the shell
# says: a client agent (PYTXMR_AGENT) is an entry of its own where measured.
os.environ.pop("PYTXMR_AGENT", None)


def log(msg: str = "") -> None:
    print(msg, flush=True)
