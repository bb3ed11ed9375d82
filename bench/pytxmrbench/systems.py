"""What gets run: the pytxmr entries (commands of a pytxmr source tree: the
one measured, and a baseline to compare it with), the peers of
../shared/bench/peers, and the clusters that the submit entries talk to."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytxmr.testing.processes import Cluster

from . import log

DEFAULT_PEERS_PY = "/tmp/peers-venv/bin/python"
#: Daemon start-up on a busy machine: far more than it takes, only bounds a hang.
CLUSTER_START_TIMEOUT = 60.0

# name -> (label, job module, pytxmr command kind, job options)
SYSTEMS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "inline": ("pytxmr run --inline", "wordcount.py", "inline", ()),
    "run": ("pytxmr run --workers 2", "wordcount.py", "run", ()),
    "submit": ("pytxmr submit (1 JT + 2 TT)", "wordcount.py", "submit", ()),
    "batch-inline": ("pytxmr batch run --inline", "wordcount_batch.py", "inline", ()),
    "batch-run": ("pytxmr batch run --workers 2", "wordcount_batch.py", "run", ()),
    "batch-submit": ("pytxmr batch submit", "wordcount_batch.py", "submit", ()),
    # The same cluster with TLS on every port (its own cluster, side by side).
    "submit-tls": ("pytxmr submit, TLS", "wordcount.py", "submit-tls", ()),
    "batch-submit-tls": ("pytxmr batch submit, TLS", "wordcount_batch.py", "submit-tls", ()),
    # Spills and the shuffle compressed (docs/record-format.md).
    "run-lz4": ("pytxmr run --workers 2 --compress lz4", "wordcount.py", "run",
                ("--compress", "lz4")),
    "submit-lz4": ("pytxmr submit --compress lz4", "wordcount.py", "submit",
                   ("--compress", "lz4")),
    # The same commands run by a client agent's child (PYTXMR_AGENT=on,
    # pytxmr/agent.py), the agent started before the rounds.
    "run-agent": ("pytxmr run --workers 2, agent", "wordcount.py", "run-agent", ()),
    "batch-run-agent": ("pytxmr batch run --workers 2, agent", "wordcount_batch.py", "run-agent",
                        ()),
    "submit-agent": ("pytxmr submit, agent", "wordcount.py", "submit-agent", ()),
    "batch-submit-agent": ("pytxmr batch submit, agent", "wordcount_batch.py", "submit-agent",
                           ()),
}
DEFAULT_SYSTEMS = "inline,run,submit,batch-run,batch-submit"

# name -> (label, script, extra args, needs the peers python, modules it imports)
PEERS: dict[str, tuple[str, str, list[str], bool, tuple[str, ...]]] = {
    "inline": ("inline.py (group)", "inline.py", [], False, ()),
    "combine": ("inline.py --mode combine", "inline.py", ["--mode", "combine"], False, ()),
    "counter": ("counter.py", "counter.py", [], False, ()),
    "mp_pool": ("mp_pool.py --workers 2", "mp_pool.py", ["--workers", "2"], False, ()),
    "dask": ("dask bag (processes, 2)", "dask_bag.py",
             ["--scheduler", "processes", "--workers", "2"], True, ("dask.bag",)),
    "pyspark": ("pyspark local[2]", "pyspark_local.py", ["--master", "local[2]"], True,
                ("pyspark",)),
    "mrjob": ("mrjob -r local (2 cores)", "mrjob_local.py",
              ["-r", "local", "--num-cores", "2"], True, ("mrjob",)),
}
DEFAULT_PEERS = "inline,combine,mp_pool,dask,pyspark,mrjob"


@dataclass
class Tree:
    """A pytxmr source tree whose commands are measured: "pytxmr" (the
    working tree) or "baseline" (--baseline-tree), each with its own cluster."""

    name: str
    src: str  # holds pytxmr/ and examples/: a snapshot, or the tree itself
    env: dict[str, str]  # PYTHONPATH=src first; commands run in src too
    cluster: Cluster | None = None
    #: The cluster of the -tls entries: TLS on every port, certificates in its directory.
    tls_cluster: Cluster | None = None
    #: The runtime directory of the -agent entries' client agent (see start_agent).
    agent_runtime: str | None = None

    def label(self, label: str) -> str:
        return label if self.name == "pytxmr" else f"{label} ({self.name})"


@dataclass
class Entry:
    key: str
    label: str
    build: Callable[[list[str], str], list[str]]  # (inputs, output) -> command
    env: dict[str, str]
    cwd: str
    tree: Tree | None = None  # None: a peer
    uses_cluster: bool = False
    tls: bool = False  # on the tree's TLS cluster
    uses_agent: bool = False


_AGENT_DIRS: list[str] = []  # the -agent entries' runtime directories


def pytxmr_entry(name: str, tree: Tree, job: str, quiet: bool = True) -> Entry:
    """System `name` of SYSTEMS run from `tree`, on examples/`job` of that
    tree; with `quiet` False, without -q (the command prints its counters)."""
    label, _, kind, options = SYSTEMS[name]
    job_path = os.path.join(tree.src, "examples", job)
    py = sys.executable
    tail = [*options, *(["-q"] if quiet else [])]

    def build(inputs: list[str], out: str) -> list[str]:
        if kind == "inline":
            return [py, "-m", "pytxmr", "run", "--inline", job_path, *inputs, "-o", out, *tail]
        if kind in ("run", "run-agent"):
            return [py, "-m", "pytxmr", "run", "--workers", "2", job_path, *inputs, "-o", out,
                    *tail]
        cluster = tree.tls_cluster if kind == "submit-tls" else tree.cluster
        assert cluster is not None
        tls = ["--tls", str(cluster.base / "certs" / "client")] if kind == "submit-tls" else []
        return [py, "-m", "pytxmr", "submit", job_path, *inputs, "-o", out,
                *cluster.client_args(), *tls, *tail]

    env = tree.env
    if kind.endswith("-agent"):
        if tree.agent_runtime is None:
            tree.agent_runtime = tempfile.mkdtemp(prefix="pytxmr-bench-agent-")
            _AGENT_DIRS.append(tree.agent_runtime)
        # A day: idle between its entries (other entries, larger sizes), the
        # agent must not leave, or its entries would run without it.
        env = dict(env, PYTXMR_AGENT="86400", XDG_RUNTIME_DIR=tree.agent_runtime)
    return Entry(f"{tree.name}:{name}", tree.label(label), build, env, tree.src, tree,
                 uses_cluster=kind.startswith("submit"), tls=kind == "submit-tls",
                 uses_agent=kind.endswith("-agent"))


def peer_entries(names: list[str], shared: str, peers_py: str | None, env: dict[str, str],
                 cwd: str) -> tuple[list[Entry], list[str]]:
    entries, notes = [], []
    peers_dir = os.path.join(shared, "peers")
    importable: dict[str, bool] = {}
    for name in names:
        if name not in PEERS:
            notes.append(f"unknown peer {name!r} skipped (known: {', '.join(PEERS)})")
            continue
        label, script, extra, venv, modules = PEERS[name]
        path = os.path.join(peers_dir, script)
        if not os.path.exists(path):
            notes.append(f"peer {name}: {path} not found, skipped")
            continue
        py = sys.executable
        if venv:
            if not peers_py or not os.path.exists(peers_py):
                notes.append(f"peer {name}: no peers python (--peers-python; default "
                             f"{DEFAULT_PEERS_PY}, see ../shared/bench/README.md), skipped")
                continue
            missing = []
            for m in modules:
                if m not in importable:
                    importable[m] = subprocess.run(
                        [peers_py, "-c", f"import {m}"], capture_output=True).returncode == 0
                if not importable[m]:
                    missing.append(m)
            if missing:
                notes.append(f"peer {name}: {peers_py} cannot import {', '.join(missing)}, skipped")
                continue
            if name == "pyspark" and shutil.which("java") is None:
                notes.append("peer pyspark: no `java` on PATH (needs Java 17+), skipped")
                continue
            py = peers_py

        def build(inputs: list[str], out: str, py: str = py, path: str = path,
                  extra: list[str] = extra) -> list[str]:
            return [py, path, inputs[0], out, *extra]

        entries.append(Entry(f"peer:{name}", label, build, env, cwd))
    return entries, notes


_CLUSTERS: list[Cluster] = []  # started and not stopped yet


def start_cluster(tree: Tree, log_dir: str, workers: int, slots: int,
                  tls: bool = False) -> Cluster:
    """1 jobtracker + `workers` tasktrackers started from the tree's source
    (port 0, ready files, a fresh secret, HOME and the work directories in a
    temporary directory; with ``tls``, certificates made there by
    ``pytxmr certs`` and TLS on every port); stop_clusters stops it."""
    base = Path(tempfile.mkdtemp(prefix="pytxmr-bench-cluster-"))
    prefix = ("cluster-" if tree.name == "pytxmr" else f"cluster-{tree.name}-") + (
        "tls-" if tls else "")
    cluster = Cluster(base, pythonpath=tree.src, log_dir=Path(log_dir), log_prefix=prefix)
    _CLUSTERS.append(cluster)
    t0 = time.perf_counter()
    options: list[str] = []
    if tls:
        subprocess.run([sys.executable, "-m", "pytxmr", "certs", str(base / "certs"),
                        "127.0.0.1,localhost"], env=tree.env, cwd=tree.src, check=True,
                       capture_output=True)
        options = ["--tls", str(base / "certs" / "127.0.0.1")]
    cluster.start_jobtracker(*options, wait=False).wait_ready(CLUSTER_START_TIMEOUT)
    cluster.start_tasktrackers(workers, slots, *options, timeout=CLUSTER_START_TIMEOUT)
    if tls:
        tree.tls_cluster = cluster
    else:
        tree.cluster = cluster
    log(f"{tree.label('cluster')} up in {time.perf_counter() - t0:.2f} s: jobtracker "
        f"{cluster.address}, {workers} tasktrackers x {slots} slots "
        f"(pids {', '.join(str(d.pid) for d in cluster.daemons)}; "
        f"logs in {log_dir}/{prefix}*.log)")
    return cluster


def daemon_pids(cluster: Cluster) -> list[int]:
    """The pids of the cluster's daemons; RuntimeError if one of them died."""
    dead = [d for d in cluster.daemons if d.proc.poll() is not None]
    if dead:
        raise RuntimeError("cluster daemon(s) died: " + ", ".join(
            f"{d.name} pid {d.pid} status {d.proc.returncode}" for d in dead))
    return [d.pid for d in cluster.daemons]


def start_agent(entry: Entry) -> None:
    """Start the client agent of ``entry``'s tree; see launch_agent."""
    assert entry.tree is not None and entry.tree.agent_runtime is not None
    launch_agent(entry.tree.agent_runtime, entry.env, entry.cwd, entry.tree.label("pytxmr"))


def launch_agent(runtime: str, env: dict[str, str], cwd: str, label: str) -> None:
    """Start a client agent in ``runtime`` (a command that fails at once
    starts it) and wait until it listens; RuntimeError if it does not (a
    tree older than the agent has none). stop_agents ends it."""
    if runtime not in _AGENT_DIRS:
        _AGENT_DIRS.append(runtime)
    subprocess.run([sys.executable, "-m", "pytxmr", "jobs", "--jobtracker", "127.0.0.1:1",
                    "--secret-file", os.devnull], env=env, cwd=cwd, capture_output=True)
    deadline = time.monotonic() + CLUSTER_START_TIMEOUT
    while not agents_in(runtime) or not glob.glob(os.path.join(runtime, "pytxmr", "*.sock")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: no client agent started (a tree without "
                               f"pytxmr/agent.py?)")
        time.sleep(0.05)


def agent_pids(tree: Tree) -> list[int]:
    """The pids of the tree's agent (its children, the commands, are its
    tree: measured as a cluster's daemons are)."""
    return agents_in(tree.agent_runtime) if tree.agent_runtime else []


def agents_in(runtime: str) -> list[int]:
    """The agents (and their children) started with ``runtime``: their
    command lines name it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"pytxmr.agent" in cmdline and runtime.encode() in cmdline:
            found.append(int(pid))
    return found


def stop_agents() -> None:
    for runtime in _AGENT_DIRS:
        for pid in agents_in(runtime):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(runtime, ignore_errors=True)
    _AGENT_DIRS.clear()


def stop_clusters() -> None:
    """Stop every cluster started (also on an error, Ctrl-C or SIGTERM):
    SIGTERM to each daemon, SIGKILL after 10 s; remove its directory."""
    while _CLUSTERS:
        cluster = _CLUSTERS.pop()
        try:
            report = cluster.stop()
        except Exception as e:  # keep going: every process must go
            print(f"cluster stop failed: {e}", file=sys.stderr)
        else:
            if report.orphans or report.leaked_memory:
                log(f"note: the cluster left processes {report.orphans} (killed) and shuffle "
                    f"memory {report.leaked_memory} (removed)")
        shutil.rmtree(cluster.base, ignore_errors=True)
