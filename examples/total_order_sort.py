"""TeraSort-style total-order sort, its cut points sampled from the input.

Sorts lines, keeping every line (duplicates included), so that
``part-00000``, ``part-00001``, ... read in order are one sorted file::

    python -m pytxmr run examples/total_order_sort.py records.txt -o /tmp/sorted
    cat /tmp/sorted/part-* | LC_ALL=C sort -c && echo sorted

Lines sort by their characters' code points, which for UTF-8 is the byte
order of ``LC_ALL=C sort``. Each line is its own key, with the value
``None``, which the text output writes as the key alone: the output lines
are the input lines (each ending in a newline, a CRLF line's in LF). A record of ``bench/terasort.py`` (a 10-character
key, a tab, a value) starts with its key, so sorting the lines sorts the
records by key (and equal keys by the rest of the line). One string a
record, rather than a key and a value cut from the line, made the sort's
200 MB run a tenth faster.

How the cut points are found. As Hadoop's ``TotalOrderPartitioner`` does,
the reducers get key ranges whose bounds are quantiles of a sample of the
keys, so that they get about the same number of records whatever the keys
look like. Hadoop's client samples the input before it submits and ships a
partition file; a pytxmr job never runs code in the client (under ``run``
and ``submit`` the client sends the module's source, and a task knows only
its own split, not the job's other inputs). So the job has two steps, and
the sample travels inside it:

1. **Sample.** Step 1's ``reader`` does not read its split: it reads a few
   hundred lines from ``WINDOWS`` places spread over the split (a few
   reads of 64 KB; the whole split is never read here) and yields one
   record, ``(split, sampled keys)``, a key being the first ``prefix``
   characters of a sampled line (``--arg prefix=N``, default ``KEY_LEN``,
   10: lines whose first ``prefix`` characters are alike, such as lines
   that start with a date, all go to one reducer, sorted, unless it is
   raised). Its ``map`` sends that sample
   to every reducer of the step (``FANOUT`` copies, keys ``(0, i)``; the
   partitioner sends ``(0, i)`` to reducer ``i % n``) and cuts the split
   into ``PIECES`` byte ranges, keys ``(1, ordinal)``, dealt round robin
   over the reducers. Each reducer of step 1 merges all the samples it
   got (from every split of every input file) into one sorted sample and
   yields it, then yields the pieces it was dealt.
2. **Sort.** Step 2 has one map per reducer of step 1 (each reads one
   part file of step 1). Its ``map`` keeps the sample, then reads each of
   its pieces of the *original input* with ``pytxmr.splits.read_lines`` and
   yields ``(line, None)`` for every line. Its ``partition`` is a
   ``pytxmr.partition.RangePartition`` whose ``n - 1`` cut points come
   from the sample (the same sample in every map, hence the same cut
   points): a line goes to ``bisect_right(cuts, line)``, and a map's
   spill cuts its sorted pairs at the cut points, with no call per line.
   Its ``reduce`` is ``pytxmr.reducers.identity``, every value of a key
   (a line that occurs twice is one key of two values: both are written),
   which the reduce task writes straight out.

Step 1 costs a few small tasks (no pass over the data), so this is a
single pass over the input, like a one-step job, while working the same
under ``run``, ``run --inline`` and ``submit``, on any number of input
files or URLs (every worker reaches the input, as step 1's maps do).
``--reducers N`` (default: one per slot) gives both steps ``N`` reducers,
hence step 2 ``N`` maps and ``N`` part files. At most ``FANOUT`` (128)
reducers: beyond that some reducers of step 1 get no sample, and the job
fails, saying so, if one of them is dealt a piece of the input (whether
one is depends on the number of splits). Compressed inputs are read whole by one map, and
sampled from their beginning only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pytxmr import Arg, Step, args, reducers
from pytxmr.partition import RangePartition
from pytxmr.splits import Split, read_lines

#: Characters of each sampled line kept as a candidate cut point, by
#: default (``--arg prefix=N``): enough to tell TeraSort keys apart. A line
#: compares with a cut as a whole (a line that starts with the cut sorts
#: after it), so any length sorts right; but lines that share their first
#: ``prefix`` characters all go to one reducer.
KEY_LEN = 10
#: Places of a split that step 1 samples, and lines read at each.
WINDOWS = 10
LINES_PER_WINDOW = 100
#: Copies of each map's sample in step 1: one per reducer (of at most this many).
FANOUT = 128
#: Byte ranges each split is cut into for step 2's maps (dealt round robin).
PIECES = 16

_SAMPLE_SEP = "\n"  # a line, hence a key, never holds one


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(f"must be at least 1, not {n}")
    return n


arguments = [Arg("prefix", positive_int, default=KEY_LEN,
                 help="characters of each sampled line kept as a cut point: raise it for "
                      "lines that start alike (dates, paths, URLs), which would otherwise "
                      "all go to one reducer")]


# ---------------------------------------------------------------- step 1: sample


def sample_split(split: Split, encoding: str, errors: str) -> Iterator[tuple[dict, str]]:
    """Step 1's reader: one record per split, ``(split, its sampled keys)``."""
    if split.whole:  # compressed: no random access, sample its start
        windows = [split]
        per_window = WINDOWS * LINES_PER_WINDOW
    else:
        step = split.length / WINDOWS
        bounds = [split.start + round(i * step) for i in range(WINDOWS + 1)]
        windows = [Split(split.index, split.path, a, b, False)
                   for a, b in zip(bounds, bounds[1:]) if a < b]
        per_window = LINES_PER_WINDOW
    n = args()["prefix"]
    keys = [line[:n] for w in windows
            for _, line in islice(read_lines(w, encoding, errors), per_window)]
    # The piece readers of step 2 decode as this reader was told to.
    yield dict(split.to_wire(), encoding=encoding, errors=errors), _SAMPLE_SEP.join(keys)


def fan_out(split: dict, sample: str) -> Iterator[tuple[tuple[int, int], Any]]:
    """The sample to every reducer of step 1, the split's pieces round robin."""
    for i in range(FANOUT):
        yield (0, i), sample
    if split["whole"]:
        pieces = [split]
    else:
        start, end = split["start"], split["end"]
        step = (end - start) / PIECES
        bounds = [start + round(i * step) for i in range(PIECES + 1)]
        pieces = [dict(split, start=a, end=b) for a, b in zip(bounds, bounds[1:]) if a < b]
    for k, piece in enumerate(pieces):
        yield (1, split["index"] * PIECES + k), piece


def by_tag(key: tuple[int, int], num_partitions: int) -> int:
    """Step 1's partitioner: sample copy ``i`` and piece ``i`` to reducer ``i % n``."""
    return key[1] % num_partitions


_merged = False  # this reduce task has yielded its sample


def plan(key: tuple[int, int], values: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Step 1's reduce: the whole sample once (keys (0, i) come first), then
    the pieces this reducer was dealt."""
    global _merged
    if key[0] == 0:
        if not _merged:
            _merged = True
            keys = sorted(k for sample in values if sample for k in sample.split(_SAMPLE_SEP))
            yield "sample", keys
    else:
        for piece in values:
            yield "piece", piece


# ---------------------------------------------------------------- step 2: sort

_sample: list[str] | None = None
_cuts: dict[int, list[str]] = {}


def read_piece(kind: str, value: Any) -> Iterator[tuple[str, None]]:
    """Step 2's map: remember the sample; read a piece of the input."""
    global _sample
    if kind == "sample":
        _sample = value
        return
    if _sample is None:
        raise RuntimeError(f"no sample before the first piece: more than {FANOUT} "
                           "reducers? (see the module's docstring)")
    for _, line in read_lines(Split.from_wire(value), value["encoding"], value["errors"]):
        yield line, None


def cut_points(num_partitions: int) -> list[str]:
    """The ``n - 1`` keys that cut the sample into ``n`` equal shares."""
    cuts = _cuts.get(num_partitions)
    if cuts is None:
        assert _sample is not None
        s, n = _sample, num_partitions
        cuts = [s[len(s) * i // n] for i in range(1, n)] if s else []
        _cuts[num_partitions] = cuts
    return cuts


steps = [
    Step(reader=sample_split, map=fan_out, partition=by_tag, reduce=plan),
    # Lines below the first cut to reducer 0, and so on; every line out, in
    # order (keys arrive sorted).
    Step(map=read_piece, partition=RangePartition(cut_points), reduce=reducers.identity),
]
