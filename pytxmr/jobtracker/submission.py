"""Checking a submission, as pure functions: the typed ``Submission`` a
client's plain-data spec becomes (or ``SubmissionError`` naming what is
wrong), the job's splits, and the message of a failed module check.

The tracker runs the file-system parts (splits, the overwrite check) in a
thread and the module check in a child process; everything here is tested
without a reactor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .. import jobargs, output, storage
from .. import scheduler as sched
from ..bundle import is_digest
from ..jobmodule import refusal_text
from ..records import COMPRESSION_CODECS
from ..splits import Split, compute_splits, count_splits, default_split_size
from ..steps import reduce_tasks
from ..wire import SubmissionError, check_protocol, definition_too_big
from .job import StepPlan


@dataclass(frozen=True)
class Submission:
    source: str
    filename: str
    inputs: tuple[str, ...]
    output: str
    reducers: int | None = None
    split_size: int | None = None
    overwrite: bool = False
    map_name: str = "map"
    reduce_name: str = "reduce"
    max_attempts: int = sched.DEFAULT_MAX_ATTEMPTS
    speculative: bool = False
    buffer_records: int | None = None
    #: Checked by name only: the workers, not the jobtracker, need the codec.
    compress: str | None = None
    #: Non-secret options of the stores of its URLs (``storage``).
    storage_options: Mapping[str, str] = field(default_factory=dict)
    #: The job's arguments (``jobargs``), checked against its declarations
    #: by the module check.
    args: Mapping[str, str] = field(default_factory=dict)
    #: The SHA-256 of its uploaded bundle (``bundle``), if it ships any.
    bundle: str | None = None


def _known_codec(name: str) -> bool:
    if name not in COMPRESSION_CODECS:
        raise SubmissionError(f"unknown compression codec {name!r}: use "
                              f"{', '.join(map(repr, COMPRESSION_CODECS))} or none")
    return True


def _at_least_one(n: int) -> bool:
    return n >= 1


def _absolute_or_url(path: str) -> bool:
    return os.path.isabs(path) or storage.is_remote(path)


def validate_submission(spec: Any) -> Submission:
    """The typed submission, or SubmissionError naming the bad field."""
    if not isinstance(spec, Mapping):
        raise SubmissionError("a submission is a dict")
    if "protocol" not in spec:  # submit({}) said "the client speaks protocol None"
        raise SubmissionError("the submission names no protocol version: make it with "
                              "pytxmr.client.submission")
    check_protocol(spec, "the client")

    def get(name: str, kind: type, default: Any = ...,
            check: Callable[[Any], bool] | None = None) -> Any:
        value = spec.get(name, default)
        if value is ...:
            raise SubmissionError(f"the submission has no {name!r}")
        if value is not None and (not isinstance(value, kind)
                                  or isinstance(value, bool) and kind is int):
            raise SubmissionError(f"{name!r} has the wrong type")
        if check is not None and value is not None and not check(value):
            raise SubmissionError(f"invalid {name}: {value!r}")
        return value

    inputs = get("inputs", list)
    if not inputs or not all(isinstance(p, str) and p for p in inputs):
        raise SubmissionError("no inputs given")
    out = get("output", str, check=_absolute_or_url)
    if any(storage.normalize(p) == storage.normalize(out) for p in inputs):
        raise SubmissionError("the output directory is also an input")
    try:
        output.refuse_unwritable(out)
    except output.OutputExistsError as e:
        raise SubmissionError(str(e)) from None
    try:
        storage.check_no_credentials([*inputs, out])
        storage_options = storage.check_options(spec.get("storage_options"))
    except storage.StorageError as e:
        raise SubmissionError(str(e)) from None
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise SubmissionError("'args' must map argument names to strings")
    try:
        args = jobargs.check_pairs(args.items())
    except jobargs.ArgumentError as e:
        raise SubmissionError(str(e)) from None
    source = get("source", str)
    too_big = definition_too_big(source, args)
    if too_big:
        raise SubmissionError(too_big)
    return Submission(
        source=source,
        filename=get("filename", str),
        inputs=tuple(inputs),
        output=out,
        reducers=get("reducers", int, None, _at_least_one),
        split_size=get("split_size", int, None, _at_least_one),
        overwrite=bool(get("overwrite", bool, False)),
        map_name=get("map_name", str, "map", str.isidentifier),
        reduce_name=get("reduce_name", str, "reduce", str.isidentifier),
        max_attempts=get("max_attempts", int, sched.DEFAULT_MAX_ATTEMPTS, _at_least_one),
        speculative=bool(get("speculative", bool, False)),
        buffer_records=get("buffer_records", int, None, _at_least_one),
        compress=get("compress", str, None, _known_codec),
        storage_options=storage_options,
        args=args,
        bundle=get("bundle", str, None, is_digest),
    )


#: The most tasks (maps and reduces) one step of a job may have unless the
#: jobtracker says otherwise (``--max-tasks-per-job``), as Hadoop's
#: ``mapred.jobtracker.maxtasks.per.job``: a split size typed as 1 instead
#: of 1M made 3.3 million maps of War and Peace, 2.3 GB of jobtracker and
#: hours of every slot. Simulated at 50,000 maps, a job costs the
#: jobtracker about 2 KB a task while it runs.
DEFAULT_MAX_TASKS_PER_JOB = 100_000


def step_reducers(step: StepPlan, option: int | None, slots: int) -> int:
    return reduce_tasks(step.num_reducers, step.map_only, step.fixed_reducers, option, slots)


def plan_tasks(files: Sequence[storage.InputFile], split_size: int | None,
               reducers_option: int | None, steps: Sequence[StepPlan], slots: int,
               max_tasks: int = DEFAULT_MAX_TASKS_PER_JOB,
               default_size: int | None = None) -> tuple[list[Split], int]:
    """The first step's splits and reduces, once every step is known to
    stay within ``max_tasks`` (a later step has a map per part file of the
    step before). Without a split size, ``default_size``, else whole waves
    over the slots. The counts come from the sizes: nothing is made for a
    job refused."""
    total = sum(f.size for f in files)
    default = default_size or default_split_size(total, slots)
    size = split_size or default
    split_by = steps[0].split_by
    try:
        maps = count_splits(files, size, split_by)
    except ValueError as e:
        raise SubmissionError(str(e)) from None
    reduces_of = [step_reducers(step, reducers_option, slots) for step in steps]
    for n, (step, reduces) in enumerate(zip(steps, reduces_of), 1):
        if maps + reduces > max_tasks:
            raise SubmissionError(_too_many_tasks(
                files, split_size, default, split_by, reducers_option, steps, n, maps,
                reduces, max_tasks))
        maps = reduces or maps
    return compute_splits(files, size, split_by=split_by), reduces_of[0]


def _too_many_tasks(files: Sequence[storage.InputFile], split_size: int | None, default: int,
                    split_by: str, reducers_option: int | None, steps: Sequence[StepPlan],
                    n: int, maps: int, reduces: int, max_tasks: int) -> str:
    """Why step ``n`` has too many tasks, and what to change."""
    step = steps[n - 1]
    what = "" if len(steps) == 1 else f"step {n} of "
    # `run` starts its jobtracker with the default: the option is no help there.
    message = (f"{what}the job would have {_count(maps, 'map')} and "
               f"{_count(reduces, 'reduce')}, more than the {max_tasks:,} tasks a job may "
               f"have (a jobtracker's --max-tasks-per-job; `run` has the default): ")
    if reduces >= maps:
        own = step.num_reducers and (step.fixed_reducers or not reducers_option)
        whose = "the module's num_reducers" if own else "--reducers"
        return message + f"give fewer reduces ({whose})"
    if n > 1:
        return message + f"its maps are the part files of step {n - 1}, which has too many"
    if split_size is not None and maps > len(files):
        default_maps = count_splits(files, default, split_by)
        if default_maps + reduces <= max_tasks:
            total = sum(f.size for f in files)
            return message + (f"--split-size {split_size:,} cuts {total:,} bytes of input "
                              f"into {maps:,} splits; give a larger one, or none (the default "
                              f"would make {_count(default_maps, 'map')})")
    return message + f"its {_count(len(files), 'input file')} are a map each at least"


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def check_failure(error: Mapping[str, Any], check_timeout: float,
                  bundle_dir: str | None = None) -> str:
    """The message a submitter gets for a module that failed its check;
    files of its bundle are named as they are in the bundle (``helper.py``),
    not where the jobtracker unpacked them."""
    if error.get("type") == "TaskProcessDied" and "longer than" in str(error.get("message")):
        error = {**error, "message": f"importing the job module took longer than "
                                     f"{check_timeout:g}s"}
    return refusal_text(error, bundle_dir)
