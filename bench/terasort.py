#!/usr/bin/env python3
"""TeraSort-style sort benchmark: pytxmr against GNU sort (and PySpark).

    python bench/terasort.py --mb 200 [--mb 1000] [--runs 3] [--reducers 2]
        [--systems run,inline,gnu-sort,pyspark] [--keep] [--out-dir /tmp/sortbench]
        [--baseline-tree DIR]

For each size: generate N = MB * 10**4 records of 100 bytes (a 10-character
printable random key, a tab, an 88-character value, a newline; deterministic
from ``--seed``), read the input once for its multiset digest, then run each
entry ``--runs`` times, round by round (the first entry rotating each round):

- ``run``: ``python -m pytxmr run examples/total_order_sort.py IN -o OUT``
  (the embedded cluster, 2 workers, daemons included in the time);
- ``inline``: the same with ``--inline`` (one process);
- ``gnu-sort``: ``LC_ALL=C sort --parallel=2 -S BUF -T DIR -o OUT/part-00000 IN``;
- ``pyspark``: ``sc.textFile(IN).map(lambda l: (l[:10], l)).sortByKey()``
  ``.values().saveAsTextFile(OUT)`` on ``local[2]``, with ``--peers-python``
  (default /tmp/peers-venv/bin/python, else this python), skipped with a
  note when pyspark or java is missing.

With ``--baseline-tree`` (another checkout, e.g. ``git worktree add
/tmp/sort-base COMMIT``) ``run`` and ``inline`` also run from it, with its
own ``examples/total_order_sort.py``, in the same rounds, labelled
"(baseline)": before and after, and GNU sort, under the same noise.

Every output is checked: its part files, read in part order, must be sorted
by key (the first 10 bytes) and be a permutation of the input lines (same
count, same bytes, same sum and xor of the lines' hashes: a multiset
digest). A wrong or missing output fails the run and the script exits 1.
Each run is measured with bench/pytxmrbench's ``run_measured``: wall time,
CPU, and the peak RSS of every process of its tree (/proc polled every
0.1 s, plus GNU time's maximum), reported per process role. Results also
go to OUT_DIR/results-terasort-DATE.json. See bench/RESULTS.md ("Sort").
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import operator
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from itertools import islice
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pytxmrbench import MB, REPO, log  # noqa: E402
from pytxmrbench.measure import kill_live, run_measured, wait_idle  # noqa: E402
from pytxmrbench.results import machine_info, source_state  # noqa: E402

RECORD = 100
KEY_LEN = 10
DEFAULT_PEERS_PY = "/tmp/peers-venv/bin/python"
SYSTEMS = ("run", "inline", "gnu-sort", "pyspark")
LABELS = {"run": "pytxmr run --workers 2", "inline": "pytxmr run --inline",
          "gnu-sort": "GNU sort --parallel=2", "pyspark": "pyspark sortByKey local[2]"}

PYSPARK_SCRIPT = r"""
import sys
from pyspark import SparkConf, SparkContext
inp, out, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
conf = SparkConf().setMaster("local[2]").setAppName("terasort")
sc = SparkContext(conf=conf)
sc.setLogLevel("ERROR")
(sc.textFile(inp).map(lambda l: (l[:10], l)).sortByKey(numPartitions=parts)
   .values().saveAsTextFile(out))
sc.stop()
"""


# ---------------------------------------------------------------- the records

# 95 printable ASCII characters (space to ~), as gensort -a uses.
_PRINTABLE = bytes(32 + b % 95 for b in range(256))


def generate(path: str, n: int, seed: int) -> None:
    """``n`` records of 100 bytes: KEY(10) TAB ROW(32 hex) 2 spaces FILL(54) LF."""
    rng = random.Random(seed)
    fills = [bytes([65 + j]) * 54 for j in range(16)]
    tmp = path + ".tmp"
    with open(tmp, "wb", buffering=1 << 20) as f:
        for base in range(0, n, 100_000):
            m = min(100_000, n - base)
            keys = rng.randbytes(m * KEY_LEN).translate(_PRINTABLE)
            f.write(b"".join(b"%s\t%032X  %s\n" % (keys[i * KEY_LEN:(i + 1) * KEY_LEN],
                                                   base + i, fills[(base + i) & 15])
                             for i in range(m)))
    os.replace(tmp, path)


def input_for(out_dir: str, mb: float, seed: int) -> tuple[str, int]:
    n = int(mb * MB) // RECORD
    path = os.path.join(out_dir, f"records-{n}-seed{seed}.txt")
    if not (os.path.exists(path) and os.path.getsize(path) == n * RECORD):
        log(f"generating {n:,} records ({n * RECORD / MB:.0f} MB) into {path}")
        t = time.perf_counter()
        generate(path, n, seed)
        log(f"  {time.perf_counter() - t:.1f} s")
    return path, n


# ---------------------------------------------------------------- the check

def _line_batches(paths: list[str]):
    for p in paths:
        with open(p, "rb", buffering=1 << 20) as f:
            while True:
                lines = f.readlines(8 << 20)
                if not lines:
                    break
                yield lines


_key = operator.itemgetter(slice(0, KEY_LEN))


def digest(paths: list[str], check_order: bool) -> dict[str, Any]:
    """count, bytes, sum and xor of the lines' hashes (one process: one
    hash salt), and, with check_order, whether keys never decrease."""
    count = size = total = xor = 0
    last = b""
    ordered = True
    first_bad = None
    for lines in _line_batches(paths):
        hashes = list(map(hash, lines))
        count += len(lines)
        size += sum(map(len, lines))
        total += sum(hashes)
        xor ^= functools.reduce(operator.xor, hashes, 0)
        if check_order and ordered:
            keys = list(map(_key, lines))
            if keys[0] < last or not all(map(operator.le, keys, islice(keys, 1, None))):
                ordered = False
                first_bad = count - len(lines) + next(
                    (i for i, (a, b) in enumerate(zip([last] + keys, keys)) if b < a), 0)
            last = keys[-1]
    return {"count": count, "bytes": size, "sum": total & (2**64 - 1), "xor": xor,
            "ordered": ordered, "first_unordered_line": first_bad}


def part_files(out: str) -> list[str]:
    if not os.path.isdir(out):
        return []
    return [os.path.join(out, p) for p in sorted(os.listdir(out)) if p.startswith("part-")]


def check_output(out: str, ref: dict[str, Any]) -> tuple[str, list[int]]:
    """("SAME" or what is wrong, the lines of each part file)."""
    parts = part_files(out)
    if not parts:
        return "NO OUTPUT", []
    got = digest(parts, check_order=True)
    sizes = [os.path.getsize(p) // RECORD for p in parts]
    if not got["ordered"]:
        return f"NOT SORTED (line {got['first_unordered_line']})", sizes
    for field in ("count", "bytes", "sum", "xor"):
        if got[field] != ref[field]:
            return f"NOT A PERMUTATION ({field}: {got[field]} != {ref[field]})", sizes
    return "SAME", sizes


# ---------------------------------------------------------------- the entries

def pyspark_python(args: argparse.Namespace) -> tuple[str | None, str]:
    """(python that has pyspark, note) or (None, why it is skipped)."""
    py = args.peers_python or (DEFAULT_PEERS_PY if os.path.exists(DEFAULT_PEERS_PY)
                               else sys.executable)
    if shutil.which("java") is None:
        return None, "pyspark skipped: no java on PATH"
    ok = subprocess.run([py, "-c", "import pyspark"], capture_output=True)
    if ok.returncode != 0:
        return None, f"pyspark skipped: {py} cannot import pyspark"
    return py, f"pyspark with {py}"


BASELINE = "@base"


def label(system: str) -> str:
    if system.endswith(BASELINE):
        return LABELS[system[:-len(BASELINE)]] + " (baseline)"
    return LABELS[system]


def command(system: str, inp: str, out: str, args: argparse.Namespace,
            spark_py: str | None) -> tuple[list[str], dict[str, str], str]:
    """The command of an entry, its environment and its directory."""
    tree = REPO
    if system.endswith(BASELINE):
        tree, system = args.baseline_tree, system[:-len(BASELINE)]
    env = dict(os.environ, PYTHONPATH=tree, LC_ALL="C")
    py = sys.executable
    job = os.path.join(tree, "examples", "total_order_sort.py")
    if system == "run":
        return ([py, "-m", "pytxmr", "run", "--workers", "2", job, inp, "-o", out, "-q",
                 "--reducers", str(args.reducers)] + args.pytxmr_opt, env, tree)
    if system == "inline":
        return ([py, "-m", "pytxmr", "run", "--inline", job, inp, "-o", out, "-q",
                 "--reducers", str(args.reducers)] + args.pytxmr_opt, env, tree)
    if system == "gnu-sort":
        os.makedirs(out)
        return (["sort", "--parallel=2", "-S", args.sort_buffer, "-T", out,
                 "-o", os.path.join(out, "part-00000"), inp], env, tree)
    if system == "pyspark":
        script = os.path.join(args.out_dir, "pyspark_sort.py")
        with open(script, "w") as f:
            f.write(PYSPARK_SCRIPT)
        assert spark_py
        return [spark_py, script, inp, out, str(args.reducers)], env, tree
    raise ValueError(system)


def peaks_by_role(processes: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    roles: dict[str, tuple[float, int]] = {}
    for p in processes:
        mb, n = roles.get(p["role"], (0.0, 0))
        roles[p["role"]] = (max(mb, p["peak_mb"]), n + 1)
    return roles


# ---------------------------------------------------------------- one size

def bench_size(mb: float, args: argparse.Namespace, systems: list[str],
               spark_py: str | None) -> dict[str, Any]:
    inp, n = input_for(args.out_dir, mb, args.seed)
    t = time.perf_counter()
    ref = digest([inp], check_order=False)
    log(f"\n== {n:,} records, {n * RECORD / MB:.0f} MB: {inp} (digest {time.perf_counter() - t:.1f} s)")
    if ref["count"] != n or ref["bytes"] != n * RECORD:
        raise SystemExit(f"{inp}: {ref['count']} lines, {ref['bytes']} bytes: not {n} records")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for r in range(args.runs):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for system in order:
            load = wait_idle(args.wait_idle) if args.wait_idle else 0.0
            out = os.path.join(args.out_dir, f"out-{system}-{n}-r{r}")
            shutil.rmtree(out, ignore_errors=True)
            cmd, env, cwd = command(system, inp, out, args, spark_py)
            res = run_measured(cmd, out + ".log", env=env, cwd=cwd, timeout=args.timeout,
                               interval=args.sample_interval)
            if res["rc"] != 0:
                verdict, parts = f"FAILED (exit {res['rc']}, see {out}.log)", []
            else:
                verdict, parts = check_output(out, ref)
            res.update(verdict=verdict, parts=parts, load_before=load, round=r)
            runs[system].append(res)
            roles = ", ".join(f"{role} {mb_:.0f}" for role, (mb_, _) in sorted(
                peaks_by_role(res["processes"]).items(), key=lambda x: -x[1][0]))
            mark = "" if verdict == "SAME" else "!!! "
            log(f"  {mark}{label(system):39} {res['wall_s']:7.2f} s  cpu {res['cpu_s']:6.1f} s  "
                f"largest {res['peak_rss_mb']:4.0f} MB ({roles})  other load "
                f"{res['other_load']:.2f}  {verdict}")
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    if not args.keep_input:
        os.remove(inp)
    return {"mb": n * RECORD / MB, "records": n, "runs": runs}


def report(sizes: list[dict[str, Any]], systems: list[str]) -> bool:
    """Print the tables; True when every run's output was right."""
    ok = True
    targets: list[str] = []
    per_mb: dict[str, list[str]] = {s: [] for s in systems}
    for size in sizes:
        runs = size["runs"]
        med = {s: statistics.median(r["wall_s"] for r in rs)
               for s, rs in runs.items() if rs and all(r["verdict"] == "SAME" for r in rs)}
        gnu = med.get("gnu-sort")
        log(f"\n### {size['records']:,} records ({size['mb']:.0f} MB)\n")
        log("| entry | median s | min s | s per MB | CPU s | x GNU sort | largest process MB "
            "| peak MB per role (processes) | records per part | output |")
        log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
        for s in systems:
            rs = runs.get(s) or []
            if not rs:
                continue
            walls = [r["wall_s"] for r in rs]
            m = statistics.median(walls)
            verdicts = {r["verdict"] for r in rs}
            good = verdicts == {"SAME"}
            ok &= good
            roles = peaks_by_role([p for r in rs for p in r["processes"]])
            nruns = len(rs)
            role_text = ", ".join(f"{role} {mb_:.0f} ({max(1, cnt // nruns)})" for role, (mb_, cnt)
                                  in sorted(roles.items(), key=lambda x: -x[1][0]))
            largest = max(r["peak_rss_mb"] for r in rs)
            parts = rs[-1]["parts"]
            part_text = (f"{min(parts):,}-{max(parts):,} in {len(parts)}" if parts else "-")
            ratio = f"{m / gnu:.2f}" if gnu and good else "-"
            log(f"| {label(s)} | {m:.2f} | {min(walls):.2f} | {m / size['mb']:.4f} | "
                f"{statistics.median(r['cpu_s'] for r in rs):.1f} | {ratio} | {largest:.0f} | "
                f"{role_text} | {part_text} | {'SAME' if good else '!!! ' + '; '.join(sorted(verdicts))} |")
            if good:
                per_mb[s].append(f"{size['mb']:.0f} MB: {m / size['mb'] * 1000:.1f} ms/MB")
            if s == "run" and good and gnu:
                targets.append(f"target at {size['mb']:.0f} MB: run / GNU sort = {m:.2f} / "
                               f"{gnu:.2f} = {m / gnu:.2f} (<= 2.5: "
                               f"{'met' if m / gnu <= 2.5 else 'MISSED'})")
            if s in ("run", "inline"):
                targets.append(f"target at {size['mb']:.0f} MB: every process of {label(s)} "
                               f"under 300 MB: largest {largest:.0f} MB "
                               f"({'met' if largest < 300 else 'MISSED'})")
        log("\nevery run, in round order: wall s (other load in cores)")
        for s in systems:
            rs = runs.get(s) or []
            if rs:
                log(f"  {label(s):39} " + "  ".join(f"{r['wall_s']:6.2f} ({r['other_load']:.2f})"
                                                    for r in rs))
    log("")
    for t in targets:
        log(t)
    if len(sizes) > 1:
        log("time per MB (linearity): " + "; ".join(
            f"{label(s)}: {', '.join(v)}" for s, v in per_mb.items() if v))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, action="append",
                    help="input size in MB (10^6 bytes; repeatable; default 200)")
    ap.add_argument("--runs", type=int, default=1, help="timed runs of each entry (default 1)")
    ap.add_argument("--reducers", type=int, default=2,
                    help="pytxmr reducers (and pyspark partitions) (default 2)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"entries to run (default {','.join(SYSTEMS)})")
    ap.add_argument("--seed", type=int, default=1, help="the records' seed (default 1)")
    ap.add_argument("--sort-buffer", default="512M",
                    help="GNU sort's -S (default 512M)")
    ap.add_argument("--pytxmr-opt", action="append", default=[], metavar="OPT",
                    help="an extra option of the pytxmr commands, e.g. --pytxmr-opt=--compress=lz4")
    ap.add_argument("--peers-python", help="python with pyspark (default "
                    f"{DEFAULT_PEERS_PY} if it exists, else this python)")
    ap.add_argument("--out-dir", default="/tmp/sortbench", help="inputs, outputs, logs, JSON")
    ap.add_argument("--keep", action="store_true", help="keep every output (default: removed "
                    "once checked) and the inputs")
    ap.add_argument("--keep-input", action="store_true",
                    help="keep the generated inputs for the next invocation")
    ap.add_argument("--wait-idle", type=float, default=30, metavar="SECONDS",
                    help="before each run wait up to this long for the machine's other load "
                    "to fall below 0.3 cores (default 30; 0: do not wait)")
    ap.add_argument("--sample-interval", type=float, default=0.1,
                    help="seconds between /proc samples (default 0.1)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--baseline-tree", metavar="DIR",
                    help="another checkout of pytxmr: run and inline also run from it, in the "
                    "same rounds, labelled '(baseline)'")
    args = ap.parse_args(argv)
    args.keep_input = args.keep_input or args.keep
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if args.baseline_tree:
        if not os.path.isfile(os.path.join(args.baseline_tree, "examples", "total_order_sort.py")):
            ap.error(f"--baseline-tree {args.baseline_tree}: no examples/total_order_sort.py there")
        systems = [e for s in systems
                   for e in ((s, s + BASELINE) if s in ("run", "inline") else (s,))]
    os.makedirs(args.out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    atexit.register(kill_live)

    spark_py = None
    if "pyspark" in systems:
        spark_py, note = pyspark_python(args)
        log(note)
        if spark_py is None:
            systems.remove("pyspark")
    state = source_state(REPO)
    log(f"pytxmr from {REPO}: commit {state.get('commit')}, sources {state['sources_sha256']}"
        + (f", uncommitted: {', '.join(state['changed'])}" if state.get("changed") else ""))
    sizes = [bench_size(mb, args, systems, spark_py) for mb in (args.mb or [200])]
    ok = report(sizes, systems)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out_dir, f"results-terasort-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"job": "terasort", "machine": machine_info(), "source": state,
                   "argv": sys.argv, "sizes": sizes}, f, indent=1)
    log(f"results: {path}")
    if not ok:
        log("!!! a run failed or gave a wrong answer")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
