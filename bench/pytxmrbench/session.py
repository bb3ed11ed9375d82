"""One invocation of the benchmark: the source trees measured and what runs
from them, the corpora, every size's rounds, tables and targets, the JSON."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Any

from . import MB, REPO, log
from .corpus import ensure_corpus, split_corpus, warm_up
from .measure import kill_live
from .reference import (Loader, cached_index_reference, load_counts, load_index,
                        wordcount_reference)
from .report import (baseline_lines, index_table, plot, summarize, time_per_mb_lines,
                     wordcount_table, wordcount_targets)
from .results import describe, machine_info, make_snapshot, source_state, write_results
from .rounds import run_rounds
from .systems import (DEFAULT_SYSTEMS, SYSTEMS, Entry, Tree, agent_pids, peer_entries,
                      pytxmr_entry, start_agent, start_cluster, stop_agents, stop_clusters)

_TEMP_DIRS: list[str] = []


def cleanup() -> None:
    """atexit and signal path: stop the clusters and agents, kill anything left running."""
    stop_clusters()
    stop_agents()
    kill_live()
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    _TEMP_DIRS.clear()


def measured_tree(name: str, top: str, args: argparse.Namespace, out_dir: str,
                  home: str) -> tuple[Tree, dict[str, Any]]:
    """The pytxmr of the source tree `top` as the runs see it (a snapshot of
    it unless --no-snapshot; HOME in a temporary directory; every command
    runs in the source root, as `python -m` puts the working directory first
    on sys.path), and the tree's state."""
    state = source_state(top)
    log(f"{name if name == 'pytxmr' else f'{name} {top}'}: {describe(state)}")
    src = top
    if args.snapshot:
        src, state["sources_sha256"] = make_snapshot(top, out_dir)
        state["snapshot"] = src
        log(("" if name == "pytxmr" else f"{name}: ")
            + f"measuring a snapshot of pytxmr/ and examples/: {src}")
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HOME"] = home
    return Tree(name, src, env), state


def changed_sources(top: str, state: dict[str, Any], after: dict[str, Any],
                    snapshot: bool) -> str | None:
    """What to say if the tree's sources changed while the benchmark ran."""
    if after["sources_sha256"] == state["sources_sha256"]:
        return None
    what = "the working tree's" if top == REPO else f"{top}'s"
    if snapshot:
        return (f"note: {what} pytxmr/ or examples/ changed while the benchmark ran "
                f"({state['sources_sha256']} -> {after['sources_sha256']}); every run "
                f"measured the snapshot {state['sources_sha256']}")
    return (f"!!! {what} pytxmr sources (pytxmr/, examples/) CHANGED while the benchmark ran: "
            f"{state['sources_sha256']} -> {after['sources_sha256']}; the runs did "
            "not all measure the same code (use the default snapshot) !!!")


def size_label(meta: dict[str, Any]) -> str:
    return f"{meta['mb']:g} MB" if "mb" in meta else f"{meta['bytes'] / MB:.3g} MB"


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now().astimezone()
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    shared = os.path.abspath(args.shared_bench)
    index_mode = args.job == "inverted_index"
    command = "python bench/wordcount.py " + shlex.join(sys.argv[1:])
    machine = machine_info()
    log(f"# pytxmr {args.job} benchmark, {started:%Y-%m-%d %H:%M %Z}")
    log(f"$ {command}")
    log(f"machine: {machine}")

    home = tempfile.mkdtemp(prefix="pytxmr-bench-home-")
    _TEMP_DIRS.append(home)
    tops = {"pytxmr": REPO}
    if args.baseline_tree:
        tops["baseline"] = os.path.abspath(args.baseline_tree)
    trees: list[Tree] = []
    sources: dict[str, dict[str, Any]] = {}
    for name, top in tops.items():
        tree, sources[name] = measured_tree(name, top, args, out_dir, home)
        trees.append(tree)
    main = trees[0]

    # what runs: each system from every tree (side by side in the rounds), then the peers
    systems = args.systems or ("inline,run,submit" if index_mode else DEFAULT_SYSTEMS)
    names = [s for s in systems.split(",") if s]
    entries: list[Entry] = []
    notes: list[str] = []
    for name in names:
        if name not in SYSTEMS:
            notes.append(f"unknown system {name!r} skipped (known: {', '.join(SYSTEMS)})")
            continue
        job = SYSTEMS[name][1]
        if index_mode:
            if name.startswith("batch"):
                notes.append(f"system {name} skipped in --job inverted_index")
                continue
            job = "inverted_index.py"
        entries += [pytxmr_entry(name, tree, job, quiet=not args.counters) for tree in trees]
    if not index_mode:
        peers = [p for p in (args.peers or "").split(",") if p]
        pe, pn = peer_entries(peers, shared, args.peers_python, main.env, main.src)
        entries += pe
        notes += pn
    for n in notes:
        log(f"note: {n}")
    if not entries:
        log("nothing to run")
        return 2
    log("entries: " + ", ".join(e.label for e in entries))

    corpora = []
    if args.corpus:
        c = os.path.abspath(args.corpus)
        corpora.append((c, {"generator": "given file", "bytes": os.path.getsize(c)}))
    else:
        for mb in args.mb:
            corpora.append(ensure_corpus(mb, out_dir, shared))

    for tree in trees:
        for tls in (False, True):
            if any(e.uses_cluster and e.tree is tree and e.tls == tls for e in entries):
                start_cluster(tree, out_dir, workers=2, slots=args.cluster_slots, tls=tls)
        agented = [e for e in entries if e.uses_agent and e.tree is tree]
        if agented:
            try:
                start_agent(agented[0])
            except RuntimeError as e:
                log(f"note: {e}: its agent entries skipped")
                entries = [x for x in entries if x not in agented]

    sizes = []
    mismatches = 0
    for corpus, meta in corpora:
        nbytes = meta["bytes"]
        log("")
        label = size_label(meta)
        log(f"## {label}: {corpus} ({meta['generator']})")
        if index_mode:
            inputs = split_corpus(corpus, args.split_files)
            log(f"split into {len(inputs)} files in {os.path.dirname(inputs[0])}")
        else:
            inputs = [corpus]
        log(f"warm-up read: {warm_up(inputs):.2f} s")
        t0 = time.perf_counter()
        ref: dict[bytes, Any]
        loader: Loader
        if index_mode:
            ref, ref_desc = cached_index_reference(inputs)
            loader = load_index
        else:
            ref, ref_desc = wordcount_reference(corpus, shared, main.env, out_dir)
            loader = load_counts
        log(f"reference: {ref_desc}, {len(ref):,} keys ({time.perf_counter() - t0:.1f} s)")
        tag = f"{args.job}-{label.replace(' ', '')}"
        results = run_rounds(entries, inputs, args.runs, out_dir, ref, loader, args, tag)
        del ref
        for tree in trees:
            if any(e.uses_agent and e.tree is tree for e in entries) and not agent_pids(tree):
                log(f"!!! {tree.label('pytxmr')}: its client agent left during the rounds: "
                    f"its agent entries may have run without it !!!")
                mismatches += 1
        size: dict[str, Any] = {
            "label": label, "corpus": corpus, "bytes": nbytes, "meta": meta, "inputs": inputs,
            "reference": ref_desc, "order": [(e.key, e.label) for e in entries],
            "runs": results, "summary": {k: summarize(v) for k, v in results.items()}}
        for v in results.values():
            mismatches += sum(1 for r in v if r["check"] != "SAME")
        log("")
        log(f"### {args.job}, {label} ({nbytes:,} bytes), {args.runs} run(s) each, medians")
        if index_mode:
            size["table"] = index_table(size)
        else:
            size["table"] = wordcount_table(size)
            size["targets"] = wordcount_targets(size)
            if size["targets"]:
                log("")
                for line in size["targets"]:
                    log(f"target: {line}")
        if args.baseline_tree:
            size["baseline"] = baseline_lines(size)
            log("")
            log(f"### before/after: this tree vs the baseline {tops['baseline']} (ratio below "
                "1.00: less now)")
            for line in size["baseline"]:
                log(line)
        sizes.append(size)

    if index_mode and len(sizes) > 1:
        log("")
        log("### time per MB across sizes (linear = constant s/MB)")
        for line in time_per_mb_lines(sizes):
            log(line)

    finished = datetime.datetime.now().astimezone()
    after = {name: source_state(top) for name, top in tops.items()}
    for name, top in tops.items():
        msg = changed_sources(top, sources[name], after[name], args.snapshot)
        if msg:
            log(msg)
            notes.append(msg)
    result = {"job": args.job, "command": command, "started": started.isoformat(),
              "finished": finished.isoformat(), "machine": machine, "notes": notes,
              "source": sources["pytxmr"], "source_after": after["pytxmr"],
              "runs_per_entry": args.runs, "cluster_slots": args.cluster_slots,
              "sample_interval_s": args.sample_interval, "disk_interval_s": args.disk_interval,
              "counters_read": args.counters, "wait_idle_s": args.wait_idle,
              "sizes": sizes}
    if args.baseline_tree:
        result["baseline_source"] = sources["baseline"]
        result["baseline_source_after"] = after["baseline"]
    json_path = write_results(result, out_dir, started.strftime("%Y%m%d-%H%M%S"))
    log("")
    log(f"results: {json_path}")
    if args.plot:
        plot([result], args.plot)
    if mismatches:
        log(f"!!! {mismatches} run(s) FAILED or gave output DIFFERENT from the reference !!!")
        return 1
    log("every output matched the reference")
    return 0
