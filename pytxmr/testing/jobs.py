"""``run_job``: a job run on a list of records, for its author's own unit
tests, with no daemon and no input file.

It runs the framework's own map and reduce code (``pytxmr.inline``), so
combiners, partitioners, hooks, sorted values and steps apply exactly as on
a cluster; only the input is given as records instead of being read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .. import counters as _counters
from .. import jobargs, stepdata, storage
from ..inline import run_steps
from ..bundle import local_imports
from ..jobmodule import Job, JobDefinition, define, load_module
from ..readers import Reader
from ..outputrules import is_part_name
from ..splits import Split, compute_splits
from ..storage import InputFile


def run_job(job: Any, records: Iterable[Any], *,
            args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
            num_reducers: int = 2, maps: int = 1) -> list[tuple[Any, Any]]:
    """The output pairs of ``job`` (a path, a module, or a module-like
    object) run on ``records``: the ``(key, value)`` pairs its first map is
    called with (a plain string ``line``, or bytes, stands for ``(None,
    line)``, and a string reaches a map of ``input_bytes`` as its UTF-8, as
    the file's line would; a job with ``map_split`` or ``map_chunk`` takes
    lines only). The pairs come as
    the last step yielded them, part file after part file (``num_reducers``
    of them unless a step fixes its own); the records are shared among
    ``maps`` map tasks, each with its own hooks and combiner."""
    given = jobargs.check_pairs(args.items() if isinstance(args, Mapping) else (args or ()))
    with (storage.WORKING_DIRECTORY, _loaded(job) as load,
          tempfile.TemporaryDirectory(prefix="pytxmr-test-") as work):
        definition = load()
        jobargs.use(jobargs.parse(definition.arguments, given))
        as_bytes = definition.steps[0].input_bytes
        items = [(None, _file_bytes(r) if as_bytes and isinstance(r, str) else r)
                 if isinstance(r, (str, bytes)) else tuple(r) for r in records]
        reader, splits = _first_input(definition, items, maps, work)

        def fresh() -> list[Job]:
            steps = list(load().steps)
            if reader is not None:
                steps[0] = dataclasses.replace(steps[0], reader=reader)
            return steps

        out = os.path.join(work, "out")
        os.makedirs(out)
        _counters.reset()
        run_steps(definition.steps, fresh, splits, out, work, {}, _counters.current,
                  num_reducers=num_reducers,
                  slots=num_reducers, last_format=stepdata.PAIRS)
        return [pair for name in sorted(n for n in os.listdir(out) if is_part_name(n))
                for pair in _pairs(os.path.join(out, name))]


def _file_bytes(line: str) -> bytes:
    """A str line as a file holds it: its UTF-8, and the bytes that a
    decoding with "surrogateescape" stood for as they were."""
    return line.encode("utf-8", "surrogateescape")


def _pairs(path: str) -> Iterator[tuple[Any, Any]]:
    yield from stepdata.read_pairs(Split(0, path, 0, os.path.getsize(path), True))


def _first_input(definition: JobDefinition, items: list[tuple[Any, Any]], maps: int,
                 work: str) -> tuple[Reader | None, list[Split]]:
    """The first step's splits of ``items``, and the reader that gives a
    split its share (None: the splits are text files, for a batch API)."""
    first = definition.steps[0]
    maps = max(1, min(maps, len(items) or 1))
    share = [items[i::maps] for i in range(maps)]
    if first.map is None:  # a batch API reads text: write the lines out
        paths = []
        for i, part in enumerate(share):
            path = os.path.join(work, f"input-{i}.txt")
            with open(path, "wb") as f:
                f.writelines((line if isinstance(line, bytes) else _file_bytes(line)) + b"\n"
                             for _, line in part)
            paths.append(InputFile(path, os.path.getsize(path)))
        return None, compute_splits(paths, 1 << 40, split_by="file")

    def reader(split: Split, encoding: str, errors: str) -> Iterator[tuple[Any, Any]]:
        return iter(share[split.index])

    return reader, [Split(i, "/pytxmr-testing/records", 0, 0, False) for i in range(maps)]


@contextlib.contextmanager
def _loaded(job: Any) -> Iterator[Callable[[], JobDefinition]]:
    """A loader of the job's definition. A path (or a module with a file)
    is loaded afresh for each task, with its directory importable, so that
    module-level state is per task as on a cluster; an object is what it
    is, its state shared by the tasks."""
    path = getattr(job, "__file__", None) if isinstance(job, types.ModuleType) else None
    if isinstance(job, (str, os.PathLike)) or (path or "").endswith(".py"):
        path = os.path.abspath(os.path.expanduser(os.fspath(path or job)))
        with open(path, encoding="utf-8") as f:
            source = f.read()
        # The modules beside it that it imports are loaded afresh for each
        # task too (those the caller had imported stay the caller's).
        own = {name for _, name in local_imports(path)}
        before = set(sys.modules)

        def forget() -> None:
            for name in [n for n in sys.modules
                         if n.partition(".")[0] in own and n not in before]:
                del sys.modules[name]

        def load() -> JobDefinition:
            forget()
            return define(load_module(source, path))

        sys.path.insert(0, os.path.dirname(path))
        try:
            yield load
        finally:
            sys.path.remove(os.path.dirname(path))
            forget()
        return
    if not isinstance(job, types.ModuleType):
        module = types.ModuleType(getattr(job, "__name__", "job"))
        module.__file__ = getattr(job, "__qualname__", None) or repr(job)
        module.__dict__.update({n: getattr(job, n) for n in dir(job) if not n.startswith("__")})
        job = module
    yield lambda: define(job)
