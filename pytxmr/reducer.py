"""The reduce side of a task: merge fetched runs, group keys, call ``reduce``.

Runs in a task child process. The fetched runs are already on local disk
(the tasktracker fetched them during the map phase); they are merged as
streams, so neither a large partition nor a key with millions of values
has to fit in memory.
"""

from __future__ import annotations

import operator
from itertools import chain, islice
from typing import Any, Callable, Iterable, Sequence

from .combiners import FoldCombiner
from .counters import FRAMEWORK, Counters
from .jobmodule import Job
from .keys import merge_order
from .merge import RunRef, group_values, merge_batches, merge_runs, reduce_run_count
from .output import text_line
from .partfile import call_hook, part_writer, unwritable, write_pairs
from .records import Record, RecordTypeError, short_repr
from .stepdata import PAIRS
from .reducers import identity

_first = operator.itemgetter(0)


def run_reduce(
    job: Job,
    runs: Sequence[RunRef],
    kinds: Sequence[str],
    output_path: str,
    tmp_dir: str,
    counters: Counters,
    output_format: str | None = None,
) -> None:
    """Reduce the sorted ``runs`` of one partition into ``output_path``, in
    ``output_format`` (default: the job's; ``partfile.PAIRS`` between steps)."""
    sort_key = merge_order(job, kinds)
    runs = reduce_run_count([r for r in runs if r[2] > 0], sort_key, tmp_dir)
    reducefn = job.reduce
    assert reducefn is not None, "a map-only step has no reduce task"
    groups = 0
    out_records = 0
    records = [0]  # (key, values) records read, counted a frame at a time
    fmt = output_format or job.output_format
    with part_writer(output_path, fmt) as part:
        write, line = part.raw, part.line
        if job.reduce_init is not None:
            out_records += write_pairs(call_hook(job.reduce_init), part.put, "reduce_init")
        # Lines are joined a batch at a time: the pairs between steps are not lines.
        if runs and reducefn is identity and fmt != PAIRS:
            groups, written = _write_merged(merge_batches(runs, sort_key, records), write, line,
                                            list(kinds) == ["str"])
            out_records += written
        elif runs and isinstance(reducefn, FoldCombiner):
            groups = _write_folded(merge_batches(runs, sort_key, records), write, line, reducefn)
            out_records += groups
        elif runs:
            for key, values in group_values(merge_runs(runs, sort_key, records)):
                groups += 1
                items = reducefn(key, values)
                try:
                    items = iter(items)
                except TypeError:
                    raise RecordTypeError(
                        f"reduce must yield (key, value) pairs (or return a list of them); "
                        f"at the key {short_repr(key)} it returned {short_repr(items)}") from None
                for item in items:
                    try:
                        k, v = item
                    except (TypeError, ValueError) as e:
                        raise RecordTypeError(
                            f"reduce must yield (key, value) pairs, not {item!r:.100} "
                            f"({e})") from None
                    try:
                        write(line(k, v))
                    except RecordTypeError:
                        raise
                    except TypeError as e:
                        raise unwritable("reduce", k, v, e) from None
                    out_records += 1
        if job.reduce_final is not None:
            out_records += write_pairs(call_hook(job.reduce_final), part.put, "reduce_final")
    counters.incr(FRAMEWORK, "reduce input records", records[0])
    counters.incr(FRAMEWORK, "reduce input groups", groups)
    counters.incr(FRAMEWORK, "reduce output records", out_records)
    counters.incr(FRAMEWORK, "output bytes", part.bytes)


def _write_merged(batches: Iterable[list[Record]], write: Callable[[str], Any],
                  line: Callable[[Any, Any], str], str_keys: bool) -> tuple[int, int]:
    """The identity reduce: every value of the merged records written under
    its group's key (the first of equal keys, as ``groupby`` gives it to a
    reduce: 1, 1.0 and True are one key), a batch of lines at a time;
    (groups, records written).

    With ``str_keys``, text lines of str values are made inline, as
    ``text_line`` makes them: a call per line would cost a third more.
    """
    groups = written = 0
    last: Any = _NO_KEY
    inline = pairs = str_keys and line is text_line
    for batch in batches:
        if pairs and batch:
            text = _pair_lines(batch)
            if text is not None:
                keys = list(map(_first, batch))
                groups += (keys[0] != last) + sum(map(operator.ne, keys, islice(keys, 1, None)))
                last = keys[-1]
                written += len(keys)
                write(text)
                continue
            pairs = False  # records of several values: the loop below from now on
        lines: list[str] = []
        append = lines.append
        for key, values in batch:
            if key != last:
                last = key
                groups += 1
            for value in values:
                if inline and type(value) is str:
                    append(f"{last}\t{value}\n")
                else:
                    try:
                        append(line(last, value))
                    except RecordTypeError:
                        raise
                    except TypeError as e:  # as the generator's pairs are named
                        raise unwritable("reduce", last, value, e) from None
            written += len(values)
        write("".join(lines))
    return groups, written


class _NotStr(Exception):
    pass


def _not_str() -> str:
    raise _NotStr


def _pair_lines(batch: list[Record]) -> str | None:
    """The text lines of a batch of str-keyed records of one str (or None)
    value each (a map's pairs, unless a combiner grouped them), made by one
    comprehension: a fifth faster than _write_merged's loop. None if a
    record has several values or a value is another type."""
    try:
        return "".join([f"{k}\t{v}\n" if type(v) is str else f"{k}\n" if v is None else _not_str()
                        for k, (v,) in batch])
    except (ValueError, _NotStr):  # ValueError: not exactly one value
        return None


def _write_folded(batches: Iterable[list[Record]], write: Callable[[Any], Any],
                  line: Callable[[Any, Any], Any], fold: FoldCombiner) -> int:
    """A built-in folding reducer (``reduce = combiners.sum``): each key's
    values fold into its total as the merged records pass, with no
    generator, ``groupby`` or iterator per key (half a word count's reduce
    otherwise); returns the number of keys. The result is what ``whole``
    (the built-in ``sum``, ``min``, ``max``) gives of all the key's values
    in the order a reduce sees them: ints add up exactly in any grouping,
    but ``sum`` adds floats with compensation from Python 3.12, so there a
    key's values from the first float on are gathered for one ``whole``
    (``fold.apart``: a list as long as the key's values)."""
    op, whole, apart = fold.op, fold.whole, fold.apart
    summing = bool(apart) and op is operator.add
    groups = 0
    last: Any = _NO_KEY
    total: Any = None
    first: Any = ()
    gathered: list[Any] | None = None
    # A fold's TypeError names the key; a merge's comes out as it is, and a
    # total that cannot be written is named as a reduce's pair would be.
    for batch in chain(batches, _END_BATCH):
        for key, values in batch:
            if key != last:
                if groups:
                    if gathered is not None:
                        total = _whole(fold, last, gathered)
                    try:
                        write(line(last, total))
                    except RecordTypeError:
                        raise
                    except TypeError as e:
                        raise unwritable("reduce", last, total, e) from None
                if key is _END:
                    break
                last = key
                groups += 1
                try:
                    total = whole(values)
                except TypeError as e:
                    raise _fold_error(fold, key, e) from None
                first, gathered = values, None
                continue
            try:
                if gathered is not None:
                    gathered += values
                elif summing:
                    if type(total) in apart:  # ``whole`` of the first record's floats
                        gathered = [*first, *values]
                        continue
                    rest = iter(values)
                    for value in rest:
                        if type(value) in apart:
                            gathered = [total, value, *rest]  # exact so far: one term
                            break
                        total = total + value
                else:
                    for value in values:
                        total = op(total, value)
            except TypeError as e:
                raise _fold_error(fold, key, e) from None
    return groups


def _whole(fold: FoldCombiner, key: Any, values: list[Any]) -> Any:
    """``whole`` of the values a key gathered (its floats, from Python 3.12)."""
    try:
        return fold.whole(values)
    except TypeError as e:
        raise _fold_error(fold, key, e) from None


def _fold_error(fold: FoldCombiner, key: Any, e: TypeError) -> TypeError:
    return fold.refused("reduce", short_repr(key), e)


_NO_KEY = object()
#: After a merge's last batch: the last key's total is written as any other's.
_END = object()
_END_BATCH = ([(_END, [])],)
