"""Every entry run `runs` times on one input, round by round: each round runs
every entry once and its first entry rotates by one each round, so that
machine noise and cache effects hit every entry alike. Each run is measured
(with TMPDIR a directory of its own, whose disk is sampled) and its output
checked at once."""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from . import MB, log
from .counters import read_counters, shown
from .measure import run_measured, wait_idle
from .reference import Loader, check_output
from .systems import Entry, agent_pids, daemon_pids


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def run_rounds(entries: list[Entry], inputs: list[str], runs: int, out_dir: str,
               ref: dict[bytes, Any], loader: Loader, args: argparse.Namespace,
               tag: str) -> dict[str, list[dict[str, Any]]]:
    """entry key -> its runs' measurements (see run_measured), each with its
    round, its output's check ("SAME" or what is wrong) and the counters the
    command printed. A run's TMPDIR is a fresh directory (where `run` puts
    its daemons' work dirs); its disk, and that of the cluster's work dirs
    for a submit, is sampled during the run."""
    results: dict[str, list[dict[str, Any]]] = {e.key: [] for e in entries}
    run_dir = os.path.join(out_dir, "runs", tag)
    os.makedirs(run_dir, exist_ok=True)
    width = max(30, *(len(e.label) for e in entries))
    for r in range(runs):
        k = r % len(entries)
        order = entries[k:] + entries[:k]
        log(f"-- round {r + 1}/{runs}: {', '.join(e.label for e in order)}")
        for e in order:
            name = e.key.replace(":", "-")
            # pytxmr writes a directory of part files, a peer one file
            out = os.path.join(run_dir, f"{name}-r{r + 1}" + ("" if e.tree else ".tsv"))
            remove(out)
            tmp = out + ".tmp"
            remove(tmp)
            os.makedirs(tmp)
            daemon_roots = []
            disk_roots = [tmp]
            if e.uses_cluster:
                assert e.tree is not None
                cluster = e.tree.tls_cluster if e.tls else e.tree.cluster
                assert cluster is not None
                daemon_roots = daemon_pids(cluster)
                disk_roots.append(str(cluster.base))
            if e.uses_agent:
                assert e.tree is not None
                daemon_roots += agent_pids(e.tree)
            cmd = e.build(inputs, out)
            if args.wait_idle > 0:
                load = wait_idle(args.wait_idle)
                if load >= 0.3:
                    log(f"   (machine still busy after waiting {args.wait_idle:g} s: "
                        f"{load:.2f} cores used by other processes)")
            res = run_measured(cmd, out + ".log", env={**e.env, "TMPDIR": tmp}, cwd=e.cwd,
                               timeout=args.timeout, daemon_roots=daemon_roots,
                               interval=args.sample_interval, disk_roots=disk_roots,
                               disk_interval=args.disk_interval)
            res["left_in_tmpdir"] = sorted(os.listdir(tmp))
            remove(tmp)
            res["counters"] = read_counters(out + ".log")
            if res["rc"] != 0:
                res["check"] = "FAILED" + (" (timeout)" if res["timed_out"] else f" (rc {res['rc']})")
            else:
                res["check"] = check_output(out, ref, loader)
            res["round"] = r + 1
            results[e.key].append(res)
            extra = f", daemons tree {res['daemon_tree_mb']:.0f} MB" if res["daemon_tree_mb"] else ""
            extra += f"  disk {res['peak_disk_mb']:.0f} MB (+ shm {res['peak_shm_mb']:.0f} MB)"
            extra += "".join(f", {name} {v / MB:.0f} MB"
                             for name, v in shown(res["counters"]).items())
            log(f"   {e.label:<{width}} {res['wall_s']:8.2f} s  CPU {res['cpu_s']:7.2f} s  peak RSS "
                f"{res['peak_rss_mb']:6.0f} MB  tree {res['tree_mb']:6.0f} MB{extra}  "
                f"other load {res['other_load']:.2f}  {res['check'].split(':')[0]}")
            if res["check"] != "SAME":
                log(f"   !!! {e.label}: {res['check']} !!! (log: {out}.log)")
                if res["rc"] != 0:
                    with open(out + ".log", "rb") as f:
                        tail = f.read()[-1500:].decode("utf-8", "replace")
                    log("   " + tail.replace("\n", "\n   "))
            if res["left_in_tmpdir"]:
                log(f"   note: this run left {res['left_in_tmpdir'][:5]} in its TMPDIR (removed)")
            if res["stragglers"]:
                log(f"   note: {len(res['stragglers'])} process(es) of this run were still "
                    f"running after it exited (killed): {res['stragglers']}")
            if not args.keep_outputs:
                remove(out)
    return results
