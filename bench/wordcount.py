#!/usr/bin/env python3
"""pytxmr word-count benchmark against the peers, side by side in one run.

    python bench/wordcount.py --mb 50 [--mb 100 ...] [--runs 3]
        [--systems inline,run,submit,batch-run,batch-submit]
        [--peers inline,combine,mp_pool,dask,pyspark,mrjob]
        [--peers-python /tmp/peers-venv/bin/python]
        [--baseline-tree DIR]
        [--out-dir /tmp/pytxmr-bench] [--plot bench/wordcount.png] [--corpus FILE]

    python bench/wordcount.py --job inverted_index --mb 50 [--runs 1]

For every size: generate (or reuse) the corpus, read it once (page cache),
make the reference output, then run every system and peer ``--runs`` times,
round by round (each round runs every entry once, the starting entry rotating
by one each round, so machine noise hits all entries alike). Each run's wall
time and peak RSS are measured, its output is checked against the reference,
and a table per size is printed and written as JSON (and optionally a PNG
plot of the median time against the input size). With ``--baseline-tree``
every pytxmr system also runs from another checkout, in the same rounds.

Standard library only, besides this checkout's pytxmr.testing (matplotlib is
used for ``--plot`` when installed). Linux only (peak RSS comes from wait4()
and /proc). The parts are in bench/pytxmrbench/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from types import FrameType

from pytxmrbench import REPO
from pytxmrbench.report import plot
from pytxmrbench.results import read_results
from pytxmrbench.session import cleanup, run
from pytxmrbench.systems import DEFAULT_PEERS, DEFAULT_PEERS_PY, DEFAULT_SYSTEMS, SYSTEMS

DEFAULT_SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md for the columns and the peers setup.")
    ap.add_argument("--job", choices=["wordcount", "inverted_index"], default="wordcount")
    ap.add_argument("--mb", type=float, action="append",
                    help="corpus size in MB (10^6 bytes); repeat for several sizes")
    ap.add_argument("--corpus", help="use this file as the (only) corpus instead of generating")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each entry (default 3)")
    ap.add_argument("--systems", help=f"pytxmr entries (default {DEFAULT_SYSTEMS}; "
                    "for --job inverted_index: inline,run,submit); known: " + ", ".join(SYSTEMS))
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help=f"peers from ../shared/bench/peers (default {DEFAULT_PEERS}; "
                    "also: counter; '' for none)")
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PY if os.path.exists(DEFAULT_PEERS_PY) else None,
                    help=f"python that has dask, pyspark and mrjob (default {DEFAULT_PEERS_PY} if present)")
    ap.add_argument("--baseline-tree", metavar="DIR",
                    help="another checkout of pytxmr (e.g. `git worktree add /tmp/pytxmr-base "
                    "COMMIT`): run every selected pytxmr system from it too, in the same rounds, "
                    "labelled '(baseline)', with its own cluster for submit")
    ap.add_argument("--shared-bench", default=DEFAULT_SHARED,
                    help="the shared bench folder (make_corpus.py, peers/) (default ../shared/bench)")
    ap.add_argument("--out-dir", default="/tmp/pytxmr-bench", help="corpora, outputs, logs, JSON")
    ap.add_argument("--plot", help="write a PNG of median time vs input size here")
    ap.add_argument("--plot-from", nargs="+", metavar="JSON",
                    help="only plot earlier results (with --plot), run nothing")
    ap.add_argument("--split-files", type=int, default=8,
                    help="--job inverted_index: cut the corpus into this many files (default 8)")
    ap.add_argument("--cluster-slots", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="slots per tasktracker of the submit cluster (default CPU count / 2, "
                    "as `run --workers 2` uses)")
    ap.add_argument("--sample-interval", type=float, default=0.1,
                    help="seconds between /proc samples of the process trees (default 0.1)")
    ap.add_argument("--disk-interval", type=float, default=0.5,
                    help="seconds between samples of the disk under a run's TMPDIR and the "
                    "cluster's work dirs (default 0.5)")
    ap.add_argument("--counters", action="store_true",
                    help="run the pytxmr commands without -q and report the job's counters "
                    "(map output, shuffle and shuffle-on-disk bytes)")
    ap.add_argument("--wait-idle", type=float, default=60, metavar="SECONDS",
                    help="before each run wait up to this long for the machine's other load "
                    "to fall below 0.3 cores (default 60; 0 = do not wait)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                    help="run pytxmr from the working tree itself instead of a snapshot of "
                    "pytxmr/ and examples/ taken at the start (OUT_DIR/src-HASH)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every run's output")
    args = ap.parse_args(argv)

    if args.plot_from:
        if not args.plot:
            ap.error("--plot-from needs --plot")
        plot(read_results(args.plot_from), args.plot)
        return 0
    if not args.mb and not args.corpus:
        ap.error("give --mb SIZE (repeatable) or --corpus FILE")
    if args.mb and args.corpus:
        ap.error("--mb and --corpus exclude each other")
    if args.baseline_tree and not all(
            os.path.isdir(os.path.join(args.baseline_tree, d)) for d in ("pytxmr", "examples")):
        ap.error(f"--baseline-tree {args.baseline_tree}: no pytxmr/ and examples/ there")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup)
    try:
        return run(args)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
