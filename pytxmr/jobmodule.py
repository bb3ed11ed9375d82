"""Job modules: loading a user's job from its source, and reporting its errors.

Only task child processes (and the submission check, itself a child) call
``load``: importing a job runs user code, which must never run inside a
daemon. Tracebacks name the user's own file and lines even on a worker that
never had the file, because the source is registered with ``linecache``.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable

from . import readers
from .partition import default_partition

ENCODING_ERRORS = ("strict", "replace", "surrogateescape", "ignore", "backslashreplace")
OUTPUT_FORMATS = ("text", "jsonl")


class JobDefinitionError(Exception):
    """The module imports but is not a usable job (e.g. no ``map``)."""


@dataclass(frozen=True)
class Job:
    """The callables and settings a task needs, resolved from the module."""

    map: Callable[..., Any] | None
    map_chunk: Callable[..., Any] | None
    map_split: Callable[..., Any] | None
    reduce: Callable[..., Any]
    combine: Callable[..., Any] | None
    partition: Callable[[Any, int], int]
    reader: Callable[..., Any]
    num_reducers: int | None
    encoding_errors: str
    output_format: str


def load_module(source: str, filename: str) -> types.ModuleType:
    """Execute ``source`` as a fresh module whose code claims ``filename``."""
    lines = source.splitlines(True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType("pytxmr_job")
    module.__file__ = filename
    sys.modules["pytxmr_job"] = module
    exec(code, module.__dict__)
    return module


def resolve(module: types.ModuleType, map_name: str = "map", reduce_name: str = "reduce") -> Job:
    """The job a module defines; raises JobDefinitionError naming what is wrong."""

    def required(name: str, params: str) -> Callable[..., Any]:
        fn = getattr(module, name, None)
        if fn is None:
            raise JobDefinitionError(f"{module.__file__}: the job module has no {name!r} function")
        return optional(name, params)  # type: ignore[return-value]

    def optional(name: str, params: str) -> Callable[..., Any] | None:
        """``name``, which is called with ``params`` (such as "key, values")."""
        fn = getattr(module, name, None)
        if fn is None:
            return None
        if not callable(fn):
            raise JobDefinitionError(f"{module.__file__}: {name!r} is not callable")
        # Refused here, at submission, a wrong signature would otherwise
        # fail every task with a TypeError the framework's loop raised.
        try:
            # The function as called: not what a decorator's wrapper wraps.
            inspect.signature(fn, follow_wrapped=False).bind(*params.split(", "))
        except TypeError:
            raise JobDefinitionError(
                f"{module.__file__}: {name!r} must take ({params})") from None
        except ValueError:  # no signature to inspect (some builtins): trust it
            pass
        return fn

    num_reducers = getattr(module, "num_reducers", None)
    if num_reducers is not None and (type(num_reducers) is not int or num_reducers < 1):
        raise JobDefinitionError(f"{module.__file__}: num_reducers must be a positive int")
    errors = getattr(module, "encoding_errors", "strict")
    if errors not in ENCODING_ERRORS:
        raise JobDefinitionError(
            f"{module.__file__}: encoding_errors must be one of {', '.join(ENCODING_ERRORS)}"
        )
    output_format = getattr(module, "output_format", "text")
    if output_format not in OUTPUT_FORMATS:
        raise JobDefinitionError(f"{module.__file__}: output_format must be 'text' or 'jsonl'")
    # The batch APIs replace map when defined: map_chunk(offset, text) gets
    # many whole lines at once, map_split(chunks) a whole split's chunks.
    map_chunk = optional("map_chunk", "offset, text")
    map_split = optional("map_split", "chunks")
    if map_chunk and map_split:
        raise JobDefinitionError(
            f"{module.__file__}: define map_chunk or map_split, not both")
    if map_name != "map" and (map_chunk or map_split):
        raise JobDefinitionError(
            f"{module.__file__}: the module's {'map_split' if map_split else 'map_chunk'} "
            f"replaces map: it cannot be chosen with --map {map_name}")
    reader = optional("reader", "split, encoding, errors")
    if reader and (map_chunk or map_split):
        raise JobDefinitionError(
            f"{module.__file__}: map_chunk and map_split read text chunks; "
            f"a job with its own reader defines map")
    return Job(
        map=None if map_chunk or map_split else required(map_name, "key, value"),
        map_chunk=map_chunk,
        map_split=map_split,
        reduce=required(reduce_name, "key, values"),
        combine=optional("combine", "key, values"),
        partition=optional("partition", "key, num_partitions") or default_partition,
        reader=reader or readers.lines,
        num_reducers=num_reducers,
        encoding_errors=errors,
        output_format=output_format,
    )


def describe_error(exc: BaseException, filename: str | None = None) -> dict[str, str]:
    """Plain data for an exception: its type, message and a traceback that
    starts at the user's code when the user's file is in it."""
    tb = exc.__traceback__
    if filename is not None:
        t = tb
        while t is not None and t.tb_frame.f_code.co_filename != filename:
            t = t.tb_next
        if t is not None:
            tb = t
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {
        "type": type(exc).__name__,
        "message": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        "traceback": text,
    }
