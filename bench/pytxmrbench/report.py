"""What is printed of the runs: each size's summary and table, every run's
time, the issue's targets as met or missed, the before/after lines of a
baseline tree, and the plot of the median time against the input size."""

from __future__ import annotations

import statistics
import sys
from typing import Any

from . import MB, log
from .counters import shown

BASE_INLINE = "pytxmr:inline"
BASE_INLINE_PY = "peer:inline"
BASE_MP_POOL = "peer:mp_pool"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["rc"] == 0]
    checks = sorted({r["check"] for r in runs})
    return {
        "runs": len(runs), "ok_runs": len(ok),
        "median_wall_s": median([r["wall_s"] for r in ok]),
        "min_wall_s": min([r["wall_s"] for r in ok], default=None),
        "max_wall_s": max([r["wall_s"] for r in ok], default=None),
        "peak_rss_mb": max([r["peak_rss_mb"] for r in ok], default=None),
        "tree_mb": max([r["tree_mb"] for r in ok], default=None),
        "daemon_tree_mb": max([r["daemon_tree_mb"] for r in ok if r["daemon_tree_mb"] is not None],
                              default=None),
        "peak_disk_mb": _most(ok, "peak_disk_mb"),
        "peak_shm_mb": _most(ok, "peak_shm_mb"),
        "peak_disk_shm_mb": _most(ok, "peak_disk_shm_mb"),
        # the most over the runs of each counter shown (MB)
        "counters_mb": {name: max(v) / MB for name, v in _counter_values(ok).items()},
        "median_cpu_s": median([r["cpu_s"] for r in ok]),
        "max_other_load": max([r["other_load"] for r in runs], default=None),
        "check": "SAME" if checks == ["SAME"] else "; ".join(c.split(":")[0] for c in checks),
    }


def _most(runs: list[dict[str, Any]], field: str) -> float | None:
    return max([r[field] for r in runs if r.get(field) is not None], default=None)


def _counter_values(runs: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in runs:
        for name, v in shown(r.get("counters") or {}).items():
            out.setdefault(name, []).append(v)
    return out


def disk_cell(summary: dict[str, Any]) -> str:
    """Peak MB on disk under the run's work dirs (+ in shuffle memory)."""
    if summary["peak_disk_mb"] is None:
        return "-"
    shm = summary["peak_shm_mb"]
    return fmt(summary["peak_disk_mb"], ".0f") + (f" (+{shm:.0f})" if shm else "")


def shuffle_cell(summary: dict[str, Any]) -> str:
    """The job's counters in MB: map output / shuffled (of which on disk)."""
    c = summary["counters_mb"]
    if not c:
        return "-"
    return (f"{fmt(c.get('map output materialized bytes'), '.0f')} / "
            f"{fmt(c.get('shuffle bytes'), '.0f')} ({fmt(c.get('shuffle bytes on disk'), '.0f')})")


def print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [line(headers), "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                                         for i, w in enumerate(widths)) + "|"]
    out += [line(r) for r in rows]
    text = "\n".join(out)
    log(text)
    return text


def wordcount_table(size: dict[str, Any]) -> str:
    s = size["summary"]
    base = {k: (s.get(k) or {}).get("median_wall_s") for k in (BASE_INLINE, BASE_INLINE_PY, BASE_MP_POOL)}

    def ratio(t: float | None, b: float | None) -> str:
        return fmt(t / b, ".2f") if t is not None and b else "-"

    rows = []
    for key, label in size["order"]:
        r = s[key]
        t = r["median_wall_s"]
        mbps = size["bytes"] / MB / t if t else None
        check = r["check"] if r["check"] == "SAME" else f"!!! {r['check']} !!!"
        if r["ok_runs"] < r["runs"]:
            check += f" ({r['runs'] - r['ok_runs']} FAILED)"
        rows.append([label, fmt(t), fmt(r["min_wall_s"]), fmt(mbps, ".1f"), fmt(r["median_cpu_s"], ".1f"),
                     fmt(r["peak_rss_mb"], ".0f"), fmt(r["tree_mb"], ".0f"),
                     fmt(r["daemon_tree_mb"], ".0f"), disk_cell(r),
                     ratio(t, base[BASE_INLINE]), ratio(t, base[BASE_INLINE_PY]),
                     ratio(t, base[BASE_MP_POOL]), fmt(r["max_other_load"], ".2f"), check])
    text = print_table(["system", "median s", "min s", "MB/s", "CPU s", "peak RSS MB", "tree MB",
                        "daemons MB", "disk MB (+shm)", "x run --inline", "x inline.py",
                        "x mp_pool", "other load", "output"],
                       rows, right={1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
    return text + "\n" + per_run_lines(size)


def index_table(size: dict[str, Any]) -> str:
    rows = []
    for key, label in size["order"]:
        runs = [r for r in size["runs"][key] if r["rc"] == 0]
        s = size["summary"][key]
        t = s["median_wall_s"]
        roles: dict[str, float] = {}
        counts: dict[str, set[tuple[int, int]]] = {}
        for r in runs:
            for p in r["processes"]:
                if p["role"] == "other":
                    continue
                roles[p["role"]] = max(roles.get(p["role"], 0), p["peak_mb"])
                counts.setdefault(p["role"], set()).add((r["round"], p["pid"]))
        # the wait4 figure covers the command and the task children it reaped
        top = max([r["peak_rss_mb"] for r in runs], default=None)
        per_role = ", ".join(f"{role} {mb:.0f} ({len(counts[role]) // max(1, len(runs))}x)"
                             for role, mb in sorted(roles.items(), key=lambda kv: -kv[1]))
        under = "-" if top is None else ("yes" if top < 300 else "NO")
        check = s["check"] if s["check"] == "SAME" else f"!!! {s['check']} !!!"
        rows.append([label, fmt(t), fmt(s["min_wall_s"]), fmt(size["bytes"] / MB / t if t else None, ".1f"),
                     fmt(s["median_cpu_s"], ".1f"), fmt(top, ".0f"), fmt(s["tree_mb"], ".0f"),
                     fmt(s["daemon_tree_mb"], ".0f"), under, disk_cell(s), shuffle_cell(s),
                     per_role, check])
    text = print_table(["system", "median s", "min s", "MB/s", "CPU s", "largest process MB",
                        "tree MB", "daemons MB", "all < 300 MB", "disk MB (+shm)",
                        "map out / shuffle (on disk) MB",
                        "peak MB per pytxmr process role (processes per run)", "output"],
                       rows, right={1, 2, 3, 4, 5, 6, 7, 9, 10})
    return text + "\n" + per_run_lines(size)


def per_run_lines(size: dict[str, Any]) -> str:
    """Every run's wall time (and the other load during it), in run order."""
    lines = ["", "every run, in round order: wall s (other load in cores)"]
    width = max(30, *(len(label) for _, label in size["order"]))
    for key, label in size["order"]:
        runs = sorted(size["runs"][key], key=lambda r: r["round"])
        lines.append(f"  {label:<{width}} " + "  ".join(
            f"{r['wall_s']:6.2f} ({r['other_load']:.2f})" if r["rc"] == 0 else "FAILED"
            for r in runs))
    text = "\n".join(lines)
    log(text)
    return text


def wordcount_targets(size: dict[str, Any]) -> list[str]:
    """The issue's word-count targets, checked on this size's medians."""
    s = size["summary"]

    def t(key: str) -> float | None:
        return (s.get(key) or {}).get("median_wall_s")

    out = []

    def target(desc: str, a: str, b: str, limit: float) -> None:
        ta, tb = t(a), t(b)
        if ta is None or tb is None:
            return
        r = ta / tb
        verdict = "met" if r <= limit else f"MISSED by {100 * (r / limit - 1):.0f}%"
        out.append(f"{desc}: {ta:.2f} s / {tb:.2f} s = {r:.2f} (target <= {limit:.3g}) {verdict}")

    small = size["bytes"] < 10 * MB  # the small job (War and Peace, 3.3 MB)
    if not small:
        target("run --workers 2 vs run --inline (at most 0.56)", "pytxmr:run", BASE_INLINE, 0.56)
    target("run --inline vs inline.py (no slower)", BASE_INLINE, BASE_INLINE_PY, 1.0)
    for peer in ("dask", "pyspark", "mrjob"):
        target(f"run --workers 2 vs {peer} (faster)", "pytxmr:run", f"peer:{peer}", 1.0)
        target(f"submit vs {peer} (faster)", "pytxmr:submit", f"peer:{peer}", 1.0)
    target("batch run vs mp_pool.py (within 1.15x)", "pytxmr:batch-run", BASE_MP_POOL, 1.15)
    target("batch submit vs mp_pool.py (within 1.15x)", "pytxmr:batch-submit", BASE_MP_POOL, 1.15)
    if not small:
        target("with the agent: run --workers 2 vs run --inline (at most 0.56)",
               "pytxmr:run-agent", BASE_INLINE, 0.56)
    target("with the agent: batch run vs mp_pool.py (within 1.15x)", "pytxmr:batch-run-agent",
           BASE_MP_POOL, 1.15)
    target("with the agent: batch submit vs mp_pool.py (within 1.15x)",
           "pytxmr:batch-submit-agent", BASE_MP_POOL, 1.15)
    if small:
        target("small job: submit to a running cluster vs inline.py (no slower)",
               "pytxmr:submit", BASE_INLINE_PY, 1.0)
        target("small job: run, daemons included, vs inline.py (within 1.25x)",
               "pytxmr:run", BASE_INLINE_PY, 1.25)
        target("small job, with the agent: submit vs inline.py (no slower)",
               "pytxmr:submit-agent", BASE_INLINE_PY, 1.0)
    return out


def baseline_lines(size: dict[str, Any]) -> list[str]:
    """Each pytxmr system measured from both trees: this tree's medians
    against the baseline's (a ratio below 1.00: less now than before)."""
    s = size["summary"]
    out = []
    for key, label in size["order"]:
        tree, _, name = key.partition(":")
        base = s.get(f"baseline:{name}")
        if tree != "pytxmr" or base is None:
            continue
        now = s[key]
        out.append(f"{label}: median {_versus(now, base, 'median_wall_s', '.2f', ' s')}, "
                   f"CPU {_versus(now, base, 'median_cpu_s', '.2f', ' s')}, "
                   f"peak RSS {_versus(now, base, 'peak_rss_mb', '.0f', ' MB')}")
    return out


def _versus(now: dict[str, Any], base: dict[str, Any], field: str, spec: str, unit: str) -> str:
    a, b = now[field], base[field]
    return f"{fmt(a, spec)} vs {fmt(b, spec)}{unit}" + (f" = {a / b:.2f}" if a is not None and b else "")


def time_per_mb_lines(sizes: list[dict[str, Any]]) -> list[str]:
    """Each entry's median seconds per MB at every size (linear time: equal)."""
    out = []
    for key, label in sizes[0]["order"]:
        parts = []
        for s in sizes:
            t = s["summary"][key]["median_wall_s"]
            parts.append(f"{s['label']}: {fmt(t / (s['bytes'] / MB) if t else None, '.4f')} s/MB")
        out.append(f"{label}: " + ", ".join(parts))
    return out


def plot(results: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"--plot: matplotlib is not installed for {sys.executable}; no plot written "
            "(pip install matplotlib, or re-plot later with --plot-from RESULTS.json)")
        return
    series: dict[str, dict[float, float]] = {}
    jobs = sorted({res.get("job", "wordcount") for res in results})
    for res in results:
        for size in res["sizes"]:
            mb = size["meta"].get("mb") or round(size["bytes"] / MB, 3)
            for key, label in size["order"]:
                t = size["summary"][key]["median_wall_s"]
                if t is not None:
                    name = label if len(jobs) == 1 else f"{res.get('job', 'wordcount')}: {label}"
                    series.setdefault(name, {})[mb] = t
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    colors = plt.get_cmap("tab20").colors
    for i, (label, pts) in enumerate(sorted(series.items(), key=lambda kv: -max(kv[1].values()))):
        xs = sorted(pts)
        pytxmr = "pytxmr" in label
        ax.plot(xs, [pts[x] for x in xs], marker="o" if pytxmr else "s",
                linestyle="-" if pytxmr else "--", color=colors[(2 * i) % 20 + (i >= 10)],
                linewidth=2 if pytxmr else 1.3, label=label)
    all_x = sorted({x for pts in series.values() for x in pts})
    if len(all_x) > 1 and all_x[-1] / all_x[0] >= 4:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        seconds = FuncFormatter(lambda y, _: f"{y:g}")  # 20, not 2 x 10^1
        ax.yaxis.set_major_formatter(seconds)
        ax.yaxis.set_minor_formatter(seconds)
    else:
        ax.set_ylim(bottom=0)
    ax.set_xticks(all_x)
    ax.set_xticklabels([f"{x:g}" for x in all_x])
    ax.set_xlabel("input size (MB, 10^6 bytes)")
    ax.set_ylabel("median wall time (s)")
    ax.set_title(f"{' + '.join(jobs)}: median wall time vs input size "
                 f"({results[0]['machine'].get('cpus')} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", title="solid: pytxmr, dashed: peers",
              title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")
