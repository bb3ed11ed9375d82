"""The task child: runs one map, reduce or submission check.

A daemon's zygote (``pytxmr.zygote``) forks one child per task attempt and
calls ``run`` in it with the task's spec (``python -m pytxmr.task SPEC.json``
does the same in a fresh process), so that user code never runs inside a
daemon: if it raises, exits, hangs or is killed, only this process goes. It
loads the job module from source, runs the map, the reduce
or the check, and reports one JSON line ``{"result": ...}`` on file
descriptor 3 (stdout and stderr are the user's, captured as task logs).
It imports nothing from Twisted, and neither does the zygote.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import signal
import sys
import traceback
from typing import Any, BinaryIO

from . import counters as _counters
from . import jobargs, storage
from .counters import FRAMEWORK, Counters
from .jobmodule import (JOB_MODULE, Job, JobDefinition, define, describe_error,
                        forget_file_names, load_module)
from .mapper import DEFAULT_BUFFER_RECORDS, run_map, run_map_only
from .partfile import part_writer
from .records import CODEC_MSGPACK, CodecUnavailable, codec_for
from .reducer import run_reduce
from .splits import Split

RESULT_FD = 3
#: How the result is written, as this module was imported: a job that
#: patches ``json.dumps`` does not change it (see ``zygote._dumps``).
_dumps = json.dumps
#: Whether the job of the last task run here lets this process run another
#: of its tasks (``JobDefinition.reuse_processes``).
reusable = False
#: Bytes reserved for the result while the task runs (cut back after it).
RESULT_ROOM = 256 << 10
#: Memory kept back for reporting a MemoryError (``run``).
RESERVE_BYTES = 1 << 20
#: The pack file this process appends its small map outputs to, kept open
#: from one map to the next.
_pack: BinaryIO | None = None


def _pack_file(path: str | None) -> BinaryIO | None:
    global _pack
    if path is None:
        return None
    if _pack is None or _pack.name != path:
        if _pack is not None:
            _pack.close()
        _pack = open(path, "ab")
    return _pack


def die_with_parent(signum: int = signal.SIGKILL, name: bytes | None = None) -> None:
    """Ask Linux to send ``signum`` (by default: kill) to this process when
    its parent dies, so that no orphaned task outlives a crashed daemon;
    with ``name``, the name ``ps`` and ``top`` show for it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15
        libc.prctl(PR_SET_PDEATHSIG, signum)
        if name is not None:
            libc.prctl(PR_SET_NAME, ctypes.c_char_p(name))
    except (OSError, AttributeError):
        pass


def _limit_memory(limit: int | None) -> None:
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def load_job(spec: dict[str, Any]) -> JobDefinition:
    """The job of a task spec's "job" part, its arguments set for
    ``pytxmr.args()`` and its bundle's modules and files at hand."""
    if spec.get("bundle_dir"):
        from .bundle import enter, refuse_shadowed

        # (A task before in this process forgot its imports: ``forget``.)
        refuse_shadowed(spec["bundle_dir"])
        enter(spec["bundle_dir"], os.getcwd())
    with open(spec["source_path"], encoding="utf-8") as f:
        source = f.read()
    module = load_module(source, spec["filename"])
    definition = define(module, spec.get("map_name", "map"), spec.get("reduce_name", "reduce"))
    jobargs.use(jobargs.parse(definition.arguments, spec.get("args") or {}))
    return definition


def forget(spec: dict[str, Any]) -> None:
    """In a process that runs another task next: drop what this one loaded
    (its job's module, the modules its bundle shipped), for the collector."""
    sys.modules.pop(JOB_MODULE, None)
    forget_file_names()  # its other name: it held the module past the collector
    bundle_dir = spec.get("job", {}).get("bundle_dir")
    if bundle_dir:
        from .bundle import forget_imports

        forget_imports(bundle_dir)


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the task ``spec`` describes in this process; plain-data result."""
    counters = _counters.reset()  # a reused process ran other tasks before
    started = _counters.cpu_seconds()
    kind = spec["kind"]
    storage.use_options(spec["job"].get("storage_options") or {})
    global reusable
    reusable = False  # until the job says so (a job that fails to load does not)
    # The task's own directory: the job's module may change the working one
    # as it loads (``os.chdir(os.path.dirname(__file__))``), and the maps of
    # a worker then spilled into one directory, each taking another's files.
    work_dir = os.getcwd()
    # The codec's package before the job's modules: a job that ships its own
    # lz4.py is refused (``bundle.refuse_shadowed``; at its submission, by
    # the check), where the framework took it for the codec's ("needs the
    # lz4 package"). CodecUnavailable (lz4 missing on this worker) fails the
    # attempt, saying what to install; a jobtracker needs no lz4.
    try:
        codec = codec_for(spec.get("compress"))
    except CodecUnavailable:
        if kind != "check":
            raise
        codec = CODEC_MSGPACK  # the check runs no map
    definition = load_job(spec["job"])
    reusable = definition.reuse_processes
    # Map and reduce build millions of small acyclic objects; the cyclic
    # collector would traverse them all again and again (measured: a third
    # of a word count's time). Reference counting still frees them, and the
    # process ends with the task.
    gc.disable()
    if kind == "check":
        return {"steps": definition.summary()}
    result = _run(kind, spec, definition.steps[spec["job"].get("step", 0)], counters, work_dir,
                  codec)
    # For this task alone: a reused process ran others before.
    _counters.count_cpu(counters, started)
    return {**result, "counters": counters.to_dict()}


def _run(kind: str, spec: dict[str, Any], job: Job, counters: Counters,
         work_dir: str, codec: int) -> dict[str, Any]:
    """Run a map or reduce in ``work_dir``; its result, but the counters."""
    split = Split.from_wire(spec["split"]) if kind == "map" else None
    if kind == "map" and job.map_only:
        assert split is not None
        with part_writer(spec["output_path"], spec.get("output_format") or job.output_format
                         ) as part:
            run_map_only(job, split, part.put, counters)
        counters.incr(FRAMEWORK, "output bytes", part.bytes)
        return {}
    if kind == "map":
        assert split is not None
        out = run_map(
            job,
            split,
            spec["num_partitions"],
            spec["data_path"],
            counters,
            buffer_records=spec.get("buffer_records") or DEFAULT_BUFFER_RECORDS,
            codec=codec,
            spill_dir=work_dir,
            pack=_pack_file(spec.get("pack")),
        )
        return {"data_path": out.data_path, "table": out.table, "kinds": out.kinds}
    if kind == "reduce":
        run_reduce(
            job,
            [tuple(r) for r in spec["runs"]],
            spec["kinds"],
            spec["output_path"],
            spec["tmp_dir"],
            counters,
            spec.get("output_format"),
        )
        return {}
    raise ValueError(f"unknown task kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the task of the spec file ``argv[0]``, in the file's directory."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    return run(spec, os.path.dirname(os.path.abspath(argv[0])))


def run(spec: dict[str, Any], work_dir: str) -> int:
    """Run the task ``spec`` in ``work_dir``, report its result on
    ``RESULT_FD``; the process's exit status."""
    die_with_parent()
    os.chdir(work_dir)
    try:
        report = os.fdopen(RESULT_FD, "w", encoding="utf-8")
    except OSError:
        report = sys.stdout
    else:
        try:
            # The result's room, taken now: on a disk the task fills, the
            # report of that very failure must still be written.
            os.posix_fallocate(RESULT_FD, 0, RESULT_ROOM)
        except OSError:
            pass  # a file system without it: as before
    _limit_memory(spec.get("memory_limit"))
    # Room for the report of a MemoryError: memory filled by many small
    # objects left none, and the report failed with another MemoryError.
    # Address space (what the memory limit bounds), mapped but not touched:
    # a bytearray's zeroed pages cost every task 0.6 ms.
    reserve = mmap.mmap(-1, RESERVE_BYTES)
    try:
        result = {"ok": True, **execute(spec)}
    except MemoryError as e:
        del reserve
        # What the task's frames hold (its data) goes; their lines stay.
        traceback.clear_frames(e.__traceback__)
        result = {"ok": False, "error": describe_error(e, spec["job"]["filename"])}
        result["error"]["message"] = "MemoryError: the task exceeded its memory limit"
    except BaseException as e:  # user code may raise anything, SystemExit included
        result = {"ok": False, "error": describe_error(e, spec["job"]["filename"])}
    report.write(_dumps({"result": result}) + "\n")
    report.flush()
    try:  # the room reserved beyond the result: not part of it
        os.ftruncate(RESULT_FD, os.lseek(RESULT_FD, 0, os.SEEK_CUR))
    except OSError:
        pass
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: user atexit hooks or threads must not keep
    # a finished task alive.
    os._exit(code)
