"""Job modules: loading a user's job from its source, and reporting its errors.

Only task child processes (and the submission check, itself a child) call
``load``: importing a job runs user code, which must never run inside a
daemon. Tracebacks name the user's own file and lines even on a worker that
never had the file, because the source is registered with ``linecache``.
"""

from __future__ import annotations

import importlib.util
import inspect
import keyword
import linecache
import os
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import jobargs, readers, stepdata
from .partition import default_partition
from .splits import split_policy
from .steps import Step

ENCODING_ERRORS = ("strict", "replace", "surrogateescape", "ignore", "backslashreplace")
OUTPUT_FORMATS = ("text", "jsonl")


class JobDefinitionError(Exception):
    """The module imports but is not a usable job (e.g. no ``map``)."""


@dataclass(frozen=True)
class Job:
    """The callables and settings a task of one step needs, resolved from
    the module (or from one of its ``steps``)."""

    map: Callable[..., Any] | None
    map_chunk: Callable[..., Any] | None
    map_split: Callable[..., Any] | None
    #: None: a map-only step (its maps write part files, no shuffle).
    reduce: Callable[..., Any] | None
    combine: Callable[..., Any] | None
    partition: Callable[[Any, int], int]
    reader: Callable[..., Any]
    num_reducers: int | None
    encoding_errors: str
    output_format: str
    map_init: Callable[[], Any] | None = None
    map_final: Callable[[], Any] | None = None
    reduce_init: Callable[[], Any] | None = None
    reduce_final: Callable[[], Any] | None = None
    sort_values: bool = False
    #: The map reads the input's bytes undecoded (the module's ``input_bytes``).
    input_bytes: bool = False
    #: ``num_reducers`` is a Step's, which ``--reducers`` does not override.
    fixed_reducers: bool = False

    @property
    def map_only(self) -> bool:
        return self.reduce is None


@dataclass(frozen=True)
class JobDefinition:
    """A job module as the framework sees it: its steps, in order, and the
    arguments it declares (None: any, as strings)."""

    steps: tuple[Job, ...]
    arguments: tuple[jobargs.Arg, ...] | None
    #: Whether its tasks may share a task process, one after another
    #: (the module's ``reuse_processes``; docs/jobs.md).
    reuse_processes: bool = True

    def summary(self) -> list[dict[str, Any]]:
        """Plain data for the submission check's report: what the
        jobtracker must know of each step to plan it."""
        return [{"num_reducers": s.num_reducers, "map_only": s.map_only,
                 "fixed_reducers": s.fixed_reducers,
                 "split_by": split_policy(s.reader) if i == 0 else "file",
                 "output_format": s.output_format}
                for i, s in enumerate(self.steps)]


#: The name a job's module is loaded under.
JOB_MODULE = "pytxmr_job"


#: The names of the job modules loaded here (``_file_name``), each with
#: the module it stood for before (an inline job's caller's own).
_aliases: list[tuple[str, types.ModuleType | None]] = []


def load_module(source: str, filename: str) -> types.ModuleType:
    """Execute ``source`` as a fresh module whose code claims ``filename``."""
    lines = source.splitlines(True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType(JOB_MODULE)
    module.__file__ = filename
    sys.modules[JOB_MODULE] = module
    _file_name(module, filename)
    with jobargs.loading():
        exec(code, module.__dict__)
    return module


def _file_name(module: types.ModuleType, filename: str) -> None:
    """Make ``module`` importable by its file's name too, as a script's
    helpers import it (``from myjob import STOPWORDS``): the same module,
    not a second copy, whose ``map_init`` never ran (the job's file is not
    on a task's path; inline, its caller may have imported it, or run it as
    its script). Not a name another file has: a job in ``code.py`` would
    shadow the standard library's."""
    forget_file_names()  # an earlier job's, loaded in this process
    stem = os.path.splitext(os.path.basename(filename))[0]
    if not stem.isidentifier() or keyword.iskeyword(stem):
        return
    own = sys.modules.get(stem)
    if own is None:
        try:
            spec = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            return
        if spec is not None and not _same_file(spec.origin, filename):
            return
    elif not _same_file(getattr(own, "__file__", None), filename):
        return
    _aliases.append((stem, own))
    sys.modules[stem] = module


def _same_file(path: str | None, filename: str) -> bool:
    try:
        return path is not None and os.path.samefile(path, filename)
    except OSError:  # a worker, which never had the submitter's file
        return False


def forget_file_names() -> None:
    """Unlist the job modules loaded here under their files' names, the
    caller's own module of that name back: an inline job's caller imports
    its own ``myjob`` after the job."""
    while _aliases:
        stem, own = _aliases.pop()
        if own is None:
            sys.modules.pop(stem, None)
        else:
            sys.modules[stem] = own


class _Checker:
    """Checks the callables of a module or of one of its steps, naming
    ``where`` (the file, and the step) in every refusal."""

    def __init__(self, where: str, get: Callable[[str], Any]) -> None:
        self.where = where
        self._get = get

    def refuse(self, text: str) -> JobDefinitionError:
        return JobDefinitionError(f"{self.where}: {text}")

    def required(self, name: str, params: str, what: str = "function") -> Callable[..., Any]:
        if self._get(name) is None:
            raise self.refuse(f"the job module has no {name!r} {what}")
        return self.optional(name, params)  # type: ignore[return-value]

    def optional(self, name: str, params: str) -> Callable[..., Any] | None:
        """``name``, which is called with ``params`` (such as "key, values")."""
        fn = self._get(name)
        if fn is None:
            return None
        if not callable(fn):
            raise self.refuse(f"{name!r} is not callable")
        # Refused here, at submission, a wrong signature would otherwise
        # fail every task with a TypeError the framework's loop raised.
        try:
            # The function as called: not what a decorator's wrapper wraps.
            inspect.signature(fn, follow_wrapped=False).bind(
                *(params.split(", ") if params else ()))
        except TypeError:
            raise self.refuse(f"{name!r} must take ({params})") from None
        except ValueError:  # no signature to inspect (some builtins): trust it
            pass
        return fn

    def job(self, map: Callable[..., Any], reduce: Callable[..., Any] | None,
            reader: Callable[..., Any], settings: Settings, **batch: Any) -> Job:
        """The Job of these map, reduce and reader, with the rest (combine,
        partition, hooks...) looked up and checked here."""
        errors, output_format, input_bytes = settings
        if input_bytes and reader not in _BYTES_READERS:
            raise self.refuse(
                f"input_bytes gives map the input's lines as bytes, from the readers "
                f"lines and path_lines; the reader {getattr(reader, '__name__', reader)!r} "
                f"reads its input its own way")
        return Job(
            map=map, map_chunk=batch.pop("map_chunk", None),
            map_split=batch.pop("map_split", None), reduce=reduce,
            combine=self.optional("combine", "key, values"),
            partition=self.optional("partition", "key, num_partitions") or default_partition,
            reader=reader, num_reducers=self.num_reducers(), encoding_errors=errors,
            output_format=output_format, sort_values=self.sort_values(),
            input_bytes=input_bytes,
            **{name: self.optional(name, "") for name in HOOKS}, **batch)

    def num_reducers(self) -> int | None:
        n = self._get("num_reducers")
        if n is not None and (type(n) is not int or n < 1):
            raise self.refuse("num_reducers must be a positive int")
        return n

    def sort_values(self) -> bool:
        value = self._get("sort_values")
        if value not in (None, True, False):
            raise self.refuse("sort_values must be True or False")
        return bool(value)


#: The hooks a job (or a step) may define: called with no arguments once per
#: task, before its first record and after its last; generators whose pairs
#: are output like map's (or reduce's).
HOOKS = ("map_init", "map_final", "reduce_init", "reduce_final")
_REDUCE_SIDE = ("combine", "partition", "num_reducers", "reduce_init", "reduce_final",
                "sort_values")


#: A job module's settings of how its input is read and its output
#: written: encoding_errors, output_format and input_bytes.
Settings = tuple[str, str, bool]

#: The readers that give bytes lines to a job with ``input_bytes``.
_BYTES_READERS = (readers.lines, readers.path_lines)


def _settings(module: types.ModuleType) -> Settings:
    where = module.__file__
    errors = getattr(module, "encoding_errors", "strict")
    if errors not in ENCODING_ERRORS:
        raise JobDefinitionError(
            f"{where}: encoding_errors must be one of {', '.join(ENCODING_ERRORS)}")
    output_format = getattr(module, "output_format", "text")
    if output_format not in OUTPUT_FORMATS:
        raise JobDefinitionError(f"{where}: output_format must be 'text' or 'jsonl'")
    input_bytes = getattr(module, "input_bytes", False)
    if not isinstance(input_bytes, bool):
        raise JobDefinitionError(f"{where}: input_bytes must be True or False")
    return errors, output_format, input_bytes


def _check_reduce_side(check: _Checker, has: Callable[[str], bool], reduce: Any) -> None:
    if reduce is None:
        extra = [name for name in _REDUCE_SIDE if has(name)]
        if extra:
            raise check.refuse(f"{extra[0]!r} needs a reduce: a job (or step) without "
                               f"reduce is map-only")


def resolve(module: types.ModuleType, map_name: str = "map", reduce_name: str = "reduce") -> Job:
    """The one-step job a module defines at module level; raises
    JobDefinitionError naming what is wrong."""
    check = _Checker(str(module.__file__), lambda name: getattr(module, name, None))
    settings = _settings(module)
    # The batch APIs replace map when defined: map_chunk(offset, text) gets
    # many whole lines at once, map_split(chunks) a whole split's chunks.
    map_chunk = check.optional("map_chunk", "offset, text")
    map_split = check.optional("map_split", "chunks")
    if map_chunk and map_split:
        raise check.refuse("define map_chunk or map_split, not both")
    if map_name != "map" and (map_chunk or map_split):
        raise check.refuse(
            f"the module's {'map_split' if map_split else 'map_chunk'} "
            f"replaces map: it cannot be chosen with --map {map_name}")
    reader = check.optional("reader", "split, encoding, errors")
    if reader and (map_chunk or map_split):
        raise check.refuse("map_chunk and map_split read text chunks; "
                           "a job with its own reader defines map")
    # No reduce makes a map-only job, unless a reduce was asked for by name.
    if reduce_name != "reduce":
        reduce = check.required(reduce_name, "key, values")
    else:
        reduce = check.optional(reduce_name, "key, values")
    _check_reduce_side(check, lambda name: getattr(module, name, None) is not None, reduce)
    reader = reader or readers.lines
    _check_split_policy(check, reader)
    return check.job(None if map_chunk or map_split else check.required(map_name, "key, value"),
                     reduce, reader, settings, map_chunk=map_chunk, map_split=map_split)


def _check_split_policy(check: _Checker, reader: Any) -> None:
    try:
        split_policy(reader)
    except ValueError as e:
        raise check.refuse(str(e)) from None


def identity_map(key: Any, value: Any) -> Any:
    """The map of a step that has none: its input pairs (the step before
    it yielded them) are shuffled as they are."""
    yield key, value


def _resolve_step(module: types.ModuleType, step: Any, n: int, count: int) -> Job:
    where = f"{module.__file__}, step {n + 1} of {count}"
    if not isinstance(step, Step):
        raise JobDefinitionError(f"{module.__file__}: steps must be a list of pytxmr.Step; "
                                 f"item {n + 1} is a {type(step).__name__}")
    check = _Checker(where, lambda name: getattr(step, name))
    if step.map is None and step.reduce is None:
        raise check.refuse("a step needs a map or a reduce")
    if n > 0 and step.reader is not None:
        raise check.refuse("only the first step has a reader: later steps read the "
                           "pairs of the step before")
    reduce = check.optional("reduce", "key, values")
    _check_reduce_side(check, lambda name: getattr(step, name) not in (None, False), reduce)
    reader = check.optional("reader", "split, encoding, errors")
    if reader is None:
        reader = readers.lines if n == 0 else stepdata.read_pairs
    _check_split_policy(check, reader)
    errors, output_format, input_bytes = _settings(module)
    # Only the first step reads the input: later ones read pairs.
    return check.job(check.optional("map", "key, value") or identity_map, reduce, reader,
                     (errors, output_format, input_bytes and n == 0), fixed_reducers=True)


def define(module: types.ModuleType, map_name: str = "map",
           reduce_name: str = "reduce") -> JobDefinition:
    """The job a module defines: its ``steps``, or one step of its
    module-level functions; raises JobDefinitionError naming what is wrong."""
    try:
        arguments = jobargs.declared(module)
    except jobargs.ArgumentError as e:
        raise JobDefinitionError(str(e)) from None
    reuse = getattr(module, "reuse_processes", True)
    if not isinstance(reuse, bool):
        raise JobDefinitionError(f"{module.__file__}: reuse_processes must be True or False")
    steps = getattr(module, "steps", None)
    if steps is None:
        return JobDefinition((resolve(module, map_name, reduce_name),), arguments, reuse)
    where = module.__file__
    if not isinstance(steps, (list, tuple)) or not steps:
        raise JobDefinitionError(f"{where}: steps must be a non-empty list of pytxmr.Step")
    if map_name != "map" or reduce_name != "reduce":
        raise JobDefinitionError(f"{where}: a job with steps names its functions in them; "
                                 f"--map and --reduce do not apply")
    for name in ("map", "reduce", "map_split", "map_chunk", "combine", *HOOKS):
        fn = getattr(module, name, None)
        if not callable(fn):
            continue
        if any(fn in getattr(step, "__dict__", {}).values() for step in steps):
            # It is in a Step already: its name is what a one-step job reads.
            raise JobDefinitionError(
                f"{where}: the module defines both steps and {name!r} (the name a job "
                f"without steps gives its {name}); the Step has it: rename the function "
                f"(say, step_{name})")
        raise JobDefinitionError(
            f"{where}: the module defines both steps and {name!r}: put {name!r} "
            f"in a Step, or drop steps")
    # A step's settings, which its Step gives: at module level they would be
    # silently ignored (a total order's partitioner lost).
    for name in ("partition", "reader"):
        value = getattr(module, name, None)
        if callable(value) and all(getattr(s, name, None) is not value for s in steps):
            raise JobDefinitionError(
                f"{where}: the module defines {name!r} beside steps, and no Step uses it: "
                f"give it to the Step it is for ({name}=...)")
    for name in ("num_reducers", "sort_values"):
        value = getattr(module, name, None)
        if value is not None and not (name == "sort_values" and value is False):
            raise JobDefinitionError(
                f"{where}: the module sets {name!r} beside steps, which would not use it: "
                f"set it in the Step it is for ({name}=...)")
    return JobDefinition(tuple(_resolve_step(module, s, n, len(steps))
                               for n, s in enumerate(steps)), arguments, reuse)



#: Errors of a job module that does not load whose message says it all
#: (file and line): their traceback would only show the framework's frames.
_SELF_EXPLAINED = frozenset({"SyntaxError", "IndentationError", "TabError",
                             "JobDefinitionError", "ArgumentError"})


def refusal_text(error: Mapping[str, Any], bundle_dir: str | None = None) -> str:
    """What a submitter is told of a job module that does not load (an
    error as ``describe_error`` gives it): the same from a cluster's check
    and from ``run --inline``. Files of the job's bundle are named as they
    are in it (``helper.py``), not where it was unpacked."""
    message = str(error.get("message", "the job module check failed"))
    trace = str(error.get("traceback", ""))
    if error.get("type") in _SELF_EXPLAINED:
        for kind in ("JobDefinitionError: ", "ArgumentError: "):
            message = message.split(kind, 1)[-1]
        trace = ""
    text = f"{message}\n{trace}".rstrip()
    if bundle_dir:
        text = text.replace(os.path.join(bundle_dir, "py") + os.sep, "")
    return text


class JobExited(Exception):
    """A job's code raised SystemExit (``sys.exit()``) in this process, in
    ``run --inline``: its task's failure, as in a task child on a cluster,
    not the end of the program that ran it. Described as its cause."""


def describe_error(exc: BaseException, filename: str | None = None) -> dict[str, str]:
    """Plain data for an exception: its type, message and a traceback that
    starts at the user's code when the user's file is in it. pytxmr's own
    verdicts on what the code gave it (a map's output that is no pair)
    come without pytxmr's frames, which say nothing of the user's code."""
    if isinstance(exc, JobExited) and exc.__cause__ is not None:
        exc = exc.__cause__
    tb = exc.__traceback__
    if filename is not None:
        t = tb
        while t is not None and t.tb_frame.f_code.co_filename != filename:
            t = t.tb_next
        if t is not None:
            tb = t
        elif type(exc).__module__.startswith(f"{__package__}."):
            tb = None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {
        "type": type(exc).__name__,
        "message": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        "traceback": text,
    }
