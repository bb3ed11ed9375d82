"""``run --inline``: a whole job in this one process, without daemons.

For debugging (a breakpoint in ``map`` just works) and as the baseline the
benchmarks compare against. It runs the same map and reduce code as the
task children, so partitioning, sort order and output files are identical.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import types
import uuid
from typing import Callable, Iterator, Mapping, Sequence

from . import counters as _counters
from . import bundle, jobargs, output, stepdata, storage, streaming
from .counters import FRAMEWORK, Counters, add_user_names
from .jobmodule import (Job, JobDefinition, JobDefinitionError, JobExited, define,
                        describe_error, forget_file_names, load_module, refusal_text)
from .mapper import DEFAULT_BUFFER_RECORDS, run_map, run_map_only
from .partfile import part_writer
from .records import CODEC_MSGPACK, codec_for
from .reducer import run_reduce
from .jobtracker.job import StepPlan
from .jobtracker.submission import plan_tasks
from .trees import empty_directory, links_into, remove_tree
from .splits import MAX_DEFAULT_SPLIT_SIZE, Split, compute_splits
from .steps import reduce_tasks
from .syspath import drop_working_directory


def run_inline(
    job_path: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    py_files: Sequence[str] = (),
    files: Sequence[str] = (),
    num_reducers: int | None = None,
    split_size: int | None = None,
    overwrite: bool = False,
    map_name: str = "map",
    reduce_name: str = "reduce",
    buffer_records: int = DEFAULT_BUFFER_RECORDS,
    slots: int = 1,
    compress: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    started: Callable[[str], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Run the job; returns its counters. Raises on any error. ``started``
    is called once the job is admitted (its inputs planned, its output
    prepared), with the format of its output ("text" or "jsonl"): an error
    after that is the job's failure, not a refusal.

    ``slots`` are those of the cluster to imitate: without ``num_reducers``
    the job gets the reducers it would get there, and so the same part
    files. Splits are as large as a cluster's may be: in one process, more
    of them would only mean more spills."""
    # An inline job takes the process's globals while it runs: its working
    # directory (the tasks'), sys.path and the job's modules, its counters
    # and arguments. Jobs from several threads run one after another.
    with storage.WORKING_DIRECTORY:
        codec = codec_for(compress)  # before any output is touched
        job_path = os.path.abspath(os.path.expanduser(job_path))
        source = _read_source(job_path)
        given = jobargs.check_pairs(args.items() if isinstance(args, Mapping) else (args or ()))
        storage.check_named(inputs, output_dir)
        storage.check_no_credentials([*inputs, output_dir])
        # Before the working directory changes to the tasks' own.
        inputs = [storage.normalize_input(p) for p in inputs]
        output_dir = storage.normalize(output_dir)
        work = tempfile.mkdtemp(prefix="pytxmr-inline-")
        try:
            with _shipped(job_path, py_files, files, work) as unpacked:
                def fresh() -> Sequence[Job]:
                    if unpacked is not None:  # its modules afresh too, as a task's are
                        bundle.forget_imports(unpacked)
                    return define(load_module(source, job_path), map_name, reduce_name).steps

                definition = _loaded(source, job_path, map_name, reduce_name, unpacked)
                jobargs.use(jobargs.parse(definition.arguments, given))
                check_reducers(definition, num_reducers)
                return _run(definition, fresh, inputs, output_dir, work,
                            num_reducers=num_reducers, split_size=split_size, overwrite=overwrite,
                            buffer_records=buffer_records, slots=slots, codec=codec,
                            storage_options=storage_options, started=started)
        finally:
            remove_tree(work, ignore_errors=True)


def load_job(job_path: str, py_files: Sequence[str] = (), files: Sequence[str] = (),
             map_name: str = "map", reduce_name: str = "reduce") -> JobDefinition:
    """The job module's definition as ``run --inline`` loads it (its shipped
    code and files in place), for ``--help-job``: a helper module shipped
    with ``--py-files`` was not found there."""
    with storage.WORKING_DIRECTORY:
        job_path = os.path.abspath(os.path.expanduser(job_path))
        source = _read_source(job_path)
        work = tempfile.mkdtemp(prefix="pytxmr-inline-")
        try:
            with _shipped(job_path, py_files, files, work) as unpacked:
                return _loaded(source, job_path, map_name, reduce_name, unpacked)
        finally:
            remove_tree(work, ignore_errors=True)


def _read_source(job_path: str) -> str:
    try:
        return bundle.read_source(job_path)
    except OSError as e:
        raise JobDefinitionError(
            f"cannot read the job module {job_path}: {e.strerror}") from None
    except ValueError as e:
        raise JobDefinitionError(f"cannot read the job module {job_path}: {e}") from None


def _loaded(source: str, job_path: str, map_name: str, reduce_name: str,
            bundle_dir: str | None) -> JobDefinition:
    """The job, or its refusal as a cluster's check words it (a module
    that does not load is the user's error, not the framework's)."""
    try:
        return define(load_module(source, job_path), map_name, reduce_name)
    except JobDefinitionError:
        raise
    except (Exception, SystemExit) as e:  # sys.exit() at import: refused, as a check refuses it
        raise JobDefinitionError(refusal_text(describe_error(e, job_path), bundle_dir)) from e


@contextlib.contextmanager
def _shipped(job_path: str, py_files: Sequence[str], files: Sequence[str],
             work: str) -> Iterator[str | None]:
    """The job's bundle as its tasks see it on a cluster: its modules first
    on ``sys.path``, its files in the working directory (a task directory,
    for the time of the job); all undone at the end, its modules unloaded,
    so that the next job in this process imports them afresh. Yields the
    bundle's unpacked directory (None when the job ships nothing)."""
    shipped = bundle.build(job_path, py_files, files)
    path, cwd = list(sys.path), os.getcwd()
    unpacked = None
    aside: dict[str, types.ModuleType] = {}
    try:
        drop_working_directory()
        task_dir = os.path.join(work, TASK_DIR)
        os.makedirs(task_dir)
        if shipped is not None:
            store = bundle.BundleStore(os.path.join(work, BUNDLES_DIR))
            store.receive(shipped.sha256, 0, shipped.data, "inline", final=True)
            unpacked = store.unpacked(shipped.sha256)
            aside = bundle.set_aside(unpacked)
            bundle.refuse_shadowed(unpacked)
            bundle.enter(unpacked, task_dir)
        os.chdir(task_dir)
        yield unpacked
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        if unpacked:
            bundle.forget_imports(unpacked, every=True)
        forget_file_names()
        sys.modules.update(aside)  # the caller's own, over the job's of the same name


#: In an inline job's work directory: the tasks' working directory, and
#: the job's unpacked bundle.
TASK_DIR, BUNDLES_DIR = "task", "bundles"


def _fresh_task_dir(work: str) -> None:
    """Empty the tasks' working directory of what the task before left
    there, as a cluster's task starts in a directory of its own; the
    job's shipped files stay linked."""
    task_dir = os.path.join(work, TASK_DIR)
    if not os.path.isdir(task_dir):  # run_steps of pytxmr.testing: none
        return
    empty_directory(task_dir, keep=links_into(os.path.join(work, BUNDLES_DIR)))


def _run(definition: JobDefinition, fresh: StepsFactory, inputs: Sequence[str],
         output_dir: str, work: str,
         *, num_reducers: int | None, split_size: int | None,
         overwrite: bool, buffer_records: int, slots: int, codec: int,
         storage_options: Mapping[str, str] | None,
         started: Callable[[str], None] | None = None) -> dict[str, dict[str, int]]:
    opts = storage.check_options(storage_options)
    storage.use_options(opts)
    files = storage.expand_inputs(inputs, opts)
    # Refused as `run` would refuse it: a split size of a few bytes makes
    # millions of maps here too (94 s and 1.4 GB for 300 KB at one byte).
    steps = [StepPlan(**plan) for plan in definition.summary()]
    splits, _ = plan_tasks(files, split_size, num_reducers, steps, slots,
                           default_size=MAX_DEFAULT_SPLIT_SIZE)
    # Its mark names the job, as a cluster's does: a jobtracker restarted
    # meanwhile resumes none of its own jobs into it.
    mark = f"inline-{uuid.uuid4().hex}"
    claim = output.prepare_output_dir(output_dir, overwrite, inputs=inputs,
                                      input_files=[f.path for f in files], opts=opts, job=mark)
    counters = _counters.reset()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as in task children (see pytxmr.task)
    cpu_start = _counters.cpu_seconds()
    try:
        if started is not None:
            started(steps[-1].output_format)
        try:
            records = run_steps(definition.steps, fresh, splits, output_dir, work, opts,
                                counters, num_reducers=num_reducers, slots=slots,
                                buffer_records=buffer_records, codec=codec, mark=mark)
        except SystemExit as e:
            raise JobExited(f"the job's code exited ({e.code!r})") from e
        _counters.count_cpu(counters, cpu_start)  # as a cluster's tasks count theirs
        output.finish_output(output_dir, opts, "inline", records, mark)
    except BaseException:
        with contextlib.suppress(output.OutputTaken):  # another job's now: left as it is
            output.abort_output(output_dir, opts, mark)
        raise
    finally:
        if claim is not None:
            claim.close()
        if gc_was_enabled:
            gc.enable()
    return counters.to_dict()


#: A job's steps, from a module loaded afresh: each task gets its own, as
#: each task on a cluster is a process of its own (module-level state, such
#: as a hook's, is per task).
StepsFactory = Callable[[], Sequence[Job]]


def run_steps(steps: Sequence[Job], fresh: StepsFactory, splits: Sequence[Split],
              output_dir: str, work: str,
              opts: Mapping[str, str], counters: Counters, *, num_reducers: int | None,
              slots: int, buffer_records: int = DEFAULT_BUFFER_RECORDS,
              codec: int = CODEC_MSGPACK, last_format: str | None = None,
              mark: str = "") -> dict[int, int]:
    """Run the steps in order, the first over ``splits``, each later one
    over the part files of the one before; the records of each of the last
    step's part files. ``steps`` plan the run; each task runs on a step
    from ``fresh()``. ``last_format`` overrides the job's output format;
    ``mark``, the job as its output's mark names it, is checked before
    each upload to an object store (``output.commit_part``)."""
    count = len(steps)
    marked = (output_dir, mark) if mark else None
    records: dict[int, int] = {}
    with streaming.INLINE.tracked():  # a streaming job's commands end with their tasks
        for n, step in enumerate(steps):
            if n:
                splits = compute_splits(stepdata.step_inputs(output_dir, n, count, opts),
                                        MAX_DEFAULT_SPLIT_SIZE, split_by="file")
            where = stepdata.step_output(output_dir, n, count)
            fmt = stepdata.step_format(n, count) or last_format
            step_work = os.path.join(work, f"step-{n + 1}")
            os.makedirs(step_work)

            def task_step(n: int = n) -> Job:  # each task's own, in a directory as it was
                streaming.INLINE.end()  # what the task before started
                _fresh_task_dir(work)
                return fresh()[n]

            if step.map_only:
                records = _map_only_step(task_step, splits, where, fmt, step_work, opts,
                                         counters, marked)
            else:
                reducers = reduce_tasks(step.num_reducers, False, step.fixed_reducers,
                                        num_reducers, slots)
                records = _map_reduce_step(task_step, splits, reducers, where, fmt,
                                           step_work, opts, counters, buffer_records, codec,
                                           marked)
    return records


def check_reducers(definition: JobDefinition, num_reducers: int | None) -> None:
    """``--reducers`` makes no sense for a job whose every step is map-only."""
    if num_reducers is not None and all(s.map_only for s in definition.steps):
        raise JobDefinitionError("the job is map-only (it has no reduce): "
                                 "--reducers does not apply")


@contextlib.contextmanager
def _task_counters(counters: Counters, names: set[tuple[str, str]]) -> Iterator[Counters]:
    """A task's own counters, as a task process keeps them (its user
    counters bounded as a task's are); added, once it succeeded, to the
    job's ``counters``, and its user counters' names to those of its step,
    ``names`` (bounded as on a cluster: TooManyCounters)."""
    task = _counters.reset()
    yield task
    counted = task.to_dict()
    counters.add_all(counted)
    add_user_names(names, counted)


def _map_only_step(task_step: Callable[[], Job], splits: Sequence[Split], where: str, fmt: str | None,
                   work: str, opts: Mapping[str, str], counters: Counters,
                   marked: tuple[str, str] | None) -> dict[int, int]:
    records: dict[int, int] = {}
    names: set[tuple[str, str]] = set()
    for split in splits:
        attempt = f"inline_m{split.index:05d}"
        step = task_step()
        with _task_counters(counters, names) as task:
            with part_writer(output.attempt_path(where, attempt, split.index, work),
                             fmt or step.output_format) as part:
                run_map_only(step, split, part.put, task)
            task.incr(FRAMEWORK, "output bytes", part.bytes)
        output.commit_part(where, attempt, split.index, work, opts, marked)
        records[split.index] = task.get(FRAMEWORK, "map output records")
    return records


def _map_reduce_step(task_step: Callable[[], Job], splits: Sequence[Split], reducers: int, where: str,
                     fmt: str | None, work: str, opts: Mapping[str, str], counters: Counters,
                     buffer_records: int, codec: int,
                     marked: tuple[str, str] | None) -> dict[int, int]:
    names: set[tuple[str, str]] = set()
    outputs = []
    for split in splits:
        with _task_counters(counters, names) as task:
            outputs.append(run_map(task_step(), split, reducers,
                                   os.path.join(work, f"map-{split.index:05d}.data"), task,
                                   buffer_records=buffer_records, codec=codec))
    kinds = sorted({k for out in outputs for k in out.kinds})
    records: dict[int, int] = {}
    for p in range(reducers):
        runs = [(out.data_path, *out.table[p][:2]) for out in outputs]
        attempt = f"inline_r{p:05d}"
        part = output.attempt_path(where, attempt, p, work)
        with _task_counters(counters, names) as task:
            run_reduce(task_step(), runs, kinds, part, work, task, fmt)
        output.commit_part(where, attempt, p, work, opts, marked)
        records[p] = task.get(FRAMEWORK, "reduce output records")
    return records
