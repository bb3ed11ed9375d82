"""The reduce side of a task: merge fetched runs, group keys, call ``reduce``.

Runs in a task child process. The fetched runs are already on local disk
(the tasktracker fetched them during the map phase); they are merged as
streams, so neither a large partition nor a key with millions of values
has to fit in memory.
"""

from __future__ import annotations

import os
from typing import Sequence

from .counters import FRAMEWORK, Counters
from .jobmodule import Job
from .keys import record_sort_key
from .merge import RunRef, group_values, merge_runs, reduce_run_count
from .output import ENCODING_ERRORS, FORMATTERS
from .records import RecordTypeError


def run_reduce(
    job: Job,
    runs: Sequence[RunRef],
    kinds: Sequence[str],
    output_path: str,
    tmp_dir: str,
    counters: Counters,
) -> None:
    """Reduce the sorted ``runs`` of one partition into ``output_path``."""
    sort_key = record_sort_key(kinds)
    runs = reduce_run_count([r for r in runs if r[2] > 0], sort_key, tmp_dir)
    reducefn = job.reduce
    line = FORMATTERS[job.output_format]
    groups = 0
    out_records = 0
    records = [0]  # (key, values) records read, counted a frame at a time
    os.makedirs(os.path.dirname(output_path), exist_ok=True)
    with open(output_path, "w", encoding="utf-8", errors=ENCODING_ERRORS,
              newline="\n", buffering=1 << 20) as out:
        write = out.write
        if runs:
            for key, values in group_values(merge_runs(runs, sort_key, records)):
                groups += 1
                for item in reducefn(key, values):
                    try:
                        k, v = item
                    except (TypeError, ValueError) as e:
                        raise RecordTypeError(
                            f"reduce must yield (key, value) pairs, not {item!r:.100} "
                            f"({e})") from None
                    write(line(k, v))
                    out_records += 1
        size = out.tell()
    counters.incr(FRAMEWORK, "reduce input records", records[0])
    counters.incr(FRAMEWORK, "reduce input groups", groups)
    counters.incr(FRAMEWORK, "reduce output records", out_records)
    counters.incr(FRAMEWORK, "output bytes", size)
