#!/usr/bin/env python3
"""The small job, taken apart: where `submit`'s time goes (issue 15).

    python bench/smalljob.py [--corpus ../shared/data/warandpeace.txt] [--runs 7]
        [--out-dir /tmp/pytxmr-smalljob] [--wait-idle 5] [--baseline-tree DIR]

One cluster (1 jobtracker, 2 tasktrackers of 1 slot, as bench/wordcount.py
starts for ``submit``) runs from a snapshot of this tree; round by round
(the first entry rotating) it measures:

- ``inline.py``: the peer, one Python process (../shared/bench/peers);
- ``submit``: ``python -m pytxmr submit examples/wordcount.py CORPUS -o OUT``;
- ``client``: ``python -m pytxmr jobs``, the fixed cost of any command-line
  client: Python's start, the imports (Twisted, PB), the connection, the
  login, one call;
- ``submit+agent`` and ``client+agent``: the same two commands with
  ``PYTXMR_AGENT=on``, run in children of a client agent started (and
  checked to be listening) before the first round (pytxmr/agent.py);
- ``run`` (cold: its daemons started for the job) and ``run+agent``;
- ``api``: the same job submitted by a Python process already connected
  (``pytxmr.client.run_job``, as a notebook or a workflow scheduler
  would); its figure is the time from the submission to the result, taken
  in that process.

With ``--baseline-tree DIR`` (another checkout), its ``submit``, ``run``
and their ``+agent`` entries run in the same rounds, labelled
``(baseline)``, with a cluster and an agent of their own.

Every output (``inline.py``'s, ``submit``'s, ``api``'s) is checked against
the count of ``line.split()`` tokens: a wrong output fails the run (exit
1). See bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
DEFAULT_CORPUS = os.path.join(TOP, "..", "shared", "data", "warandpeace.txt")
DEFAULT_SHARED = os.path.join(TOP, "..", "shared", "bench")
API_JOB = "--api-job"  # the api entry's process
BASELINE = " (baseline)"  # the --baseline-tree entries' label


def api_job(address: str, secret_file: str, job: str, corpus: str, out: str,
            result_path: str) -> None:
    """The ``api`` entry's process: connect, then time one job. It imports
    pytxmr from the snapshot (PYTHONPATH), as the other entries do: this
    tree's directory is not on its path."""
    from twisted.internet import defer, task

    from pytxmr import client

    async def main(reactor: object) -> None:
        with open(secret_file, "rb") as f:
            secret = f.read().strip()
        conn = await client.connect(reactor, address, secret)
        try:
            submission = client.submission(job, [corpus], out, overwrite=True)
            t0 = time.perf_counter()
            result = await client.run_job(reactor, conn, submission)
            seconds = time.perf_counter() - t0
        finally:
            conn.close()
        with open(result_path, "w") as f:
            json.dump({"job_s": seconds, "state": result["state"],
                       "elapsed": result.get("elapsed"), "client": client.__file__}, f)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))


def main() -> int:
    sys.path[:0] = [HERE, TOP]
    from pytxmrbench import log
    from pytxmrbench.measure import kill_live, run_measured, wait_idle
    from pytxmrbench.reference import check_output, load_counts, wordcount_reference
    from pytxmrbench.report import fmt, median, print_table
    from pytxmrbench.results import make_snapshot
    from pytxmrbench.systems import Tree, daemon_pids, start_cluster, stop_agents, stop_clusters

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--shared-bench", default=DEFAULT_SHARED)
    p.add_argument("--out-dir", default="/tmp/pytxmr-smalljob")
    p.add_argument("--wait-idle", type=float, default=5.0,
                   help="wait up to this many seconds for the machine to be idle before a run")
    p.add_argument("--baseline-tree", metavar="DIR",
                   help="another checkout whose submit, run and +agent entries run too")
    a = p.parse_args()
    if a.baseline_tree and not os.path.isdir(os.path.join(a.baseline_tree, "pytxmr")):
        p.error(f"--baseline-tree {a.baseline_tree}: no pytxmr/ there")
    corpus = os.path.abspath(a.corpus)
    inline_py = os.path.join(os.path.abspath(a.shared_bench), "peers", "inline.py")
    for path in (corpus, inline_py):
        if not os.path.exists(path):
            log(f"{path} not found (../shared is needed)")
            return 2
    out_dir = os.path.abspath(a.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    atexit.register(kill_live)
    atexit.register(stop_clusters)
    atexit.register(stop_agents)
    src, sha = make_snapshot(TOP, out_dir)
    home = tempfile.mkdtemp(prefix="home-", dir=out_dir)
    env = dict(os.environ, PYTHONPATH=src, HOME=home)
    tree = Tree("pytxmr", src, env)
    ref, source = wordcount_reference(corpus, os.path.abspath(a.shared_bench), env, out_dir)
    log(f"sources {sha[:16]} ({src}); reference: {source}")
    cluster = start_cluster(tree, out_dir, workers=2, slots=1)
    py = sys.executable
    api_result = os.path.join(out_dir, "api-result.json")
    runtime, agent_pid = start_agent(env, src)
    # Each tree: its sources, cluster, environment without and with its agent, agent.
    trees = {"": (src, cluster, env, dict(env, PYTXMR_AGENT="86400", XDG_RUNTIME_DIR=runtime),
                  agent_pid)}
    names = ["inline.py", "submit", "client", "api", "submit+agent", "client+agent", "run",
             "run+agent"]
    if a.baseline_tree:
        bsrc = os.path.abspath(a.baseline_tree)
        benv = dict(os.environ, PYTHONPATH=bsrc, HOME=home)
        bcluster = start_cluster(Tree("baseline", bsrc, benv), out_dir, workers=2, slots=1)
        bruntime, bagent = start_agent(benv, bsrc)
        trees[BASELINE] = (bsrc, bcluster, benv,
                           dict(benv, PYTXMR_AGENT="86400", XDG_RUNTIME_DIR=bruntime), bagent)
        names += [n + BASELINE for n in ("submit", "submit+agent", "run", "run+agent")]

    def tree_of(name: str) -> tuple[Any, ...]:
        return trees[BASELINE if name.endswith(BASELINE) else ""]

    def command(name: str, out: str) -> list[str]:
        where, on, _, _, _ = tree_of(name)
        job = os.path.join(where, "examples", "wordcount.py")
        if name == "inline.py":
            return [py, inline_py, corpus, out]
        if name.startswith("submit"):
            return [py, "-m", "pytxmr", "submit", job, corpus, "-o", out, "--overwrite", "-q",
                    *on.client_args()]
        if name.startswith("client"):
            return [py, "-m", "pytxmr", "jobs", *on.client_args()]
        if name.startswith("run"):
            return [py, "-m", "pytxmr", "run", job, corpus, "-o", out, "--overwrite", "-q"]
        return [py, os.path.abspath(__file__), API_JOB, on.address,
                str(on.secret_file), job, corpus, out, api_result]
    results: dict[str, list[dict]] = {name: [] for name in names}
    failed = False
    for round_ in range(a.runs):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            wait_idle(a.wait_idle)
            slug = name.replace(BASELINE, "-baseline")
            out = os.path.join(out_dir, f"out-{slug}")
            where, on, plain_env, agent_env, agent = tree_of(name)
            # The daemons' CPU is the cluster entries' own, not other load.
            daemons = [] if name == "inline.py" or name.startswith("run") else \
                daemon_pids(on)
            with_agent = "+agent" in name
            if with_agent:  # the command runs in its child
                daemons.append(agent)
            run = run_measured(command(name, out), os.path.join(out_dir, f"{slug}.log"),
                               env=agent_env if with_agent else plain_env, cwd=where,
                               daemon_roots=daemons)
            if run["rc"] != 0:
                run["output"] = f"exit {run['rc']}"
            elif name.startswith("client"):
                run["output"] = "-"
            else:
                run["output"] = check_output(out, ref, load_counts)
            if name == "api" and run["rc"] == 0:
                with open(api_result) as f:
                    reported = json.load(f)
                os.remove(api_result)
                run["job_s"] = reported["job_s"]
                if not reported["client"].startswith(src + os.sep):
                    run["output"] = f"CLIENT NOT FROM THE SNAPSHOT: {reported['client']}"
            failed |= run["output"] not in ("SAME", "-")
            results[name].append(run)
            job_s = f", job {run['job_s']:.2f} s" if "job_s" in run else ""
            log(f"round {round_ + 1} {name}: {run['wall_s']:.3f} s{job_s}, other load "
                f"{run['other_load']:.2f}, {run['output']}")
    figure = {name: median([r.get("job_s", r["wall_s"]) for r in runs])
              for name, runs in results.items()}
    base = figure["inline.py"]
    rows = [[name, fmt(median([r["wall_s"] for r in runs]), ".3f"), fmt(figure[name], ".3f"),
             fmt(figure[name] / base if base else None),
             ", ".join(sorted({r["output"] for r in runs}))]
            for name, runs in results.items()]
    log(f"\n{os.path.basename(corpus)}, {a.runs} round(s), medians (api: the job's time "
        f"in a connected process):")
    print_table(["entry", "wall s", "figure s", "/ inline.py", "output"], rows, {1, 2, 3})
    rest = figure["submit"] - figure["client"] - figure["api"]
    log(f"\nsubmit {figure['submit']:.2f} s = the client's start, imports and login "
        f"{figure['client']:.2f} s + the job {figure['api']:.2f} s + {rest:+.2f} s")
    for _, _, _, _, agent in trees.values():
        if not os.path.exists(f"/proc/{agent}"):
            log(f"!!! a client agent (pid {agent}) left: its +agent entries ran without it")
            failed = True
    for name, label, target in (
            ("submit", "submit", 1.0), ("submit+agent", "submit with the agent", 1.0),
            ("api", "a connected client's job", 1.0), ("run", "cold run", 1.25),
            ("run+agent", "run with the agent", 1.25)):
        ratio = figure[name] / base
        log(f"target: small job: {label} vs inline.py (at most {target:g}x): "
            f"{figure[name]:.2f} s / {base:.2f} s = {ratio:.2f} "
            f"{'met' if ratio <= target else 'MISSED'}")
    if failed:
        log("!!! an output did not match the reference !!!")
    return 1 if failed else 0


def start_agent(env: dict[str, str], cwd: str) -> tuple[str, int]:
    """A client agent for the +agent entries, listening (its runtime
    directory, its pid); stop_agents ends it."""
    from pytxmrbench.systems import agents_in, launch_agent

    runtime = tempfile.mkdtemp(prefix="pytxmr-agent-")
    launch_agent(runtime, dict(env, PYTXMR_AGENT="86400", XDG_RUNTIME_DIR=runtime), cwd,
                 "smalljob")
    return runtime, agents_in(runtime)[0]


if __name__ == "__main__":
    if sys.argv[1:2] == [API_JOB]:  # ADDRESS SECRET JOB CORPUS OUT RESULT
        api_job(*sys.argv[2:8])
        sys.exit(0)
    sys.exit(main())
