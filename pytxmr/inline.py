"""``run --inline``: a whole job in this one process, without daemons.

For debugging (a breakpoint in ``map`` just works) and as the baseline the
benchmarks compare against. It runs the same map and reduce code as the
task children, so partitioning, sort order and output files are identical.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from typing import Mapping, Sequence

from . import counters as _counters
from . import output, storage
from .counters import FRAMEWORK
from .jobmodule import load_module, resolve
from .mapper import DEFAULT_BUFFER_RECORDS, run_map
from .records import codec_for
from .reducer import run_reduce
from .splits import MAX_DEFAULT_SPLIT_SIZE, compute_splits


def run_inline(
    job_path: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    num_reducers: int | None = None,
    split_size: int | None = None,
    overwrite: bool = False,
    map_name: str = "map",
    reduce_name: str = "reduce",
    buffer_records: int = DEFAULT_BUFFER_RECORDS,
    slots: int = 1,
    compress: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, dict[str, int]]:
    """Run the job; returns its counters. Raises on any error.

    ``slots`` are those of the cluster to imitate: without ``num_reducers``
    the job gets the reducers it would get there, and so the same part
    files. Splits are as large as a cluster's may be: in one process, more
    of them would only mean more spills."""
    codec = codec_for(compress)  # before any output is touched
    with open(job_path, encoding="utf-8") as f:
        source = f.read()
    job = resolve(load_module(source, os.path.abspath(job_path)), map_name, reduce_name)
    reducers = num_reducers or job.num_reducers or slots
    storage.check_no_credentials([*inputs, output_dir])
    opts = storage.check_options(storage_options)
    storage.use_options(opts)
    inputs = [storage.normalize(p) for p in inputs]
    output_dir = storage.normalize(output_dir)
    files = storage.expand_inputs(inputs, opts)
    splits = compute_splits(files, split_size or MAX_DEFAULT_SPLIT_SIZE)
    output.prepare_output_dir(output_dir, overwrite, inputs=inputs,
                              input_files=[f.path for f in files], opts=opts)
    counters = _counters.reset()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as in task children (see pytxmr.task)
    work = tempfile.mkdtemp(prefix="pytxmr-inline-")
    try:
        indexes = []
        records: dict[int, int] = {}
        for split in splits:
            out = run_map(job, split, reducers, work, counters,
                          buffer_records=buffer_records, name=f"map-{split.index:05d}",
                          codec=codec)
            with open(out.index_path) as f:
                indexes.append((out.data_path, json.load(f)))
        kinds = sorted({k for _, index in indexes for k in index["kinds"]})
        for p in range(reducers):
            runs = [(path, ix["partitions"][p]["offset"], ix["partitions"][p]["length"])
                    for path, ix in indexes]
            attempt = f"inline_r{p:05d}"
            part = output.attempt_path(output_dir, attempt, p, work)
            before = counters.get(FRAMEWORK, "reduce output records")
            run_reduce(job, runs, kinds, part, work, counters)
            output.commit_part(output_dir, attempt, p, work, opts)
            records[p] = counters.get(FRAMEWORK, "reduce output records") - before
        output.finish_output(output_dir, opts, "inline", records)
    except BaseException:
        output.abort_output(output_dir, opts)
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
        shutil.rmtree(work, ignore_errors=True)
    return counters.to_dict()
