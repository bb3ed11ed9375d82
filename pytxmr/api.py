"""The synchronous Python API: ``pytxmr.run(...)`` and ``pytxmr.Client``.

For scripts, threads and notebooks, which have no reactor of their own:
Twisted's reactor runs in a thread of its own (crochet, the library made
for exactly this), started on first use, and each call blocks until its
answer, so a notebook runs any number of jobs, one after another or from
several threads. Code that already runs a reactor uses the asynchronous
API (``pytxmr.client``) instead.

``job`` may be a path, an imported module, or a module-like object defined
in the calling code (a class or namespace with ``map``, ``reduce``...):
such an object is sent to the tasks with cloudpickle, in its bundle.
"""

from __future__ import annotations

import decimal
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from . import client as _client
from . import storage
from .client import ClusterError
from .outputrules import is_part_name
from .sizes import parse_size

__all__ = ["Client", "ClusterError", "JobFailed", "JobResult", "run"]

#: The names of a job module that a module-like object's job is made of.
JOB_NAMES = ("map", "reduce", "combine", "partition", "reader", "map_chunk", "map_split",
             "map_init", "map_final", "reduce_init", "reduce_final", "steps", "arguments",
             "num_reducers", "encoding_errors", "output_format", "sort_values",
             "input_bytes")
PICKLE_NAME = "_pytxmr_job.pickle"


class JobFailed(Exception):
    """The job ran and failed (or was killed); ``result`` says how."""

    def __init__(self, result: JobResult) -> None:
        error = result.error or {}
        text = f"{result.job_id} {result.state}: {error.get('message', '')}"
        if error.get("traceback", "").strip() not in ("", error.get("message")):
            text += "\n" + error["traceback"].rstrip()
        super().__init__(text)
        self.result = result


@dataclass(frozen=True)
class JobResult:
    """A job's outcome, or its state so far (``Client.status``)."""

    job_id: str
    state: str
    output: str
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed: float = 0.0
    error: dict[str, str] | None = None
    #: Progress of a running job: {"maps": {"done", "total", ...}, ...}.
    progress: dict[str, Any] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: "text" or "jsonl" ("": a jobtracker too old to say; ``records`` guesses).
    output_format: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any],
                  storage_options: Mapping[str, str] | None = None) -> JobResult:
        return cls(job_id=str(d.get("job_id", "")), state=str(d.get("state", "")),
                   output=str(d.get("output", "")), counters=dict(d.get("counters") or {}),
                   elapsed=float(d.get("elapsed") or 0.0), error=d.get("error"),
                   progress={k: d[k] for k in ("maps", "reduces", "step", "steps",
                                                  "failed_attempts") if k in d},
                   args=dict(d.get("args") or {}),
                   storage_options=dict(storage_options or {}),
                   output_format=str(d.get("output_format") or ""))

    def records(self) -> Iterator[tuple[Any, Any]]:
        """The output's pairs, part file after part file. JSON-lines output
        comes back exactly (tuples as lists); in text output a field that
        reads as JSON (a number, a list...) comes back as that, any other
        as the string, and a line without a tab as its key and None."""
        if not self.ok:
            raise JobFailed(self)
        if storage.is_remote(self.output):
            fs, root = storage.filesystem(self.output, self.storage_options)
            listed, opener = fs.ls(root, detail=False), fs.open
        else:
            root = storage.local_path(self.output)
            listed, opener = [os.path.join(root, n) for n in os.listdir(root)], open
        parse = _PARSERS.get(self.output_format, _guessed_line)
        for name in sorted(p for p in listed if is_part_name(os.path.basename(p.rstrip("/")))):
            # Bytes that are not UTF-8 (input read with surrogateescape, written
            # back as the bytes they were) come back as the job had them.
            with opener(name, "rt", encoding="utf-8", errors="surrogateescape",
                        newline="\n") as f:
                for line in f:
                    yield parse(line.rstrip("\n"))


def _loads(text: str) -> Any:
    return json.loads(text, parse_int=_json_int)


def _json_int(digits: str) -> int:
    """An int of any size, as the writer writes them: ``int()`` of a str
    stops at 4300 digits, a Decimal's conversion does not."""
    return int(digits) if len(digits) < 4300 else int(decimal.Decimal(digits))


def _jsonl_line(line: str) -> tuple[Any, Any]:
    key, value = _loads(line)
    return key, value


def _text_line(line: str) -> tuple[Any, Any]:
    key, tab, value = line.partition("\t")
    return _field(key), _field(value) if tab else None  # no tab: a None value's line


def _guessed_line(line: str) -> tuple[Any, Any]:
    """A line of an output whose format is not known: a JSON pair is taken
    for a jsonl line (a text line of a None value whose key's JSON is a
    pair would be read as that pair)."""
    if line.startswith("["):
        try:
            pair = _loads(line)
            if isinstance(pair, list) and len(pair) == 2:
                return pair[0], pair[1]
        except ValueError:
            pass
    return _text_line(line)


_PARSERS = {"text": _text_line, "jsonl": _jsonl_line}


def _field(text: str) -> Any:
    try:
        return _loads(text)
    except ValueError:
        return text


# --- the reactor thread ---------------------------------------------------------

_setup_lock = threading.Lock()
_set_up = False


def _in_reactor(f: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Call the coroutine function ``f(reactor, *args)`` in the reactor's
    thread and block for its result."""
    global _set_up
    import crochet
    from twisted.internet import defer, reactor

    with _setup_lock:
        if not _set_up:
            crochet.setup()
            _set_up = True
    result = crochet.run_in_reactor(
        lambda: defer.Deferred.fromCoroutine(f(reactor, *args)))()
    try:
        return result.wait(timeout)
    except crochet.TimeoutError:
        _unwind(result)
        raise ClusterError(f"no answer within {timeout:g}s") from None
    except BaseException:
        # Ctrl-C in the calling thread: what the call started stops, as
        # `run`'s cluster and job stop on SIGINT; they ran on, finished
        # the job and kept its output.
        _unwind(result)
        raise


def _unwind(result: Any) -> None:
    """Cancel a call in the reactor's thread and wait for it to unwind."""
    from .localcluster import UNWIND_TIMEOUT

    result.cancel()
    try:
        result.wait(UNWIND_TIMEOUT)
    except Exception:  # cancelled, as it should be; or stopping failed or took too long
        pass


# --- jobs as paths, modules or objects -----------------------------------------------

class _JobFile:
    """A job as a file to ship: its own path, or a module written for an
    object (with its pickle among the shipped files); removed on close."""

    def __init__(self, job: Any) -> None:
        self._tmp: str | None = None
        self.files: list[str] = []
        self.py_files: list[str] = []
        if isinstance(job, (str, os.PathLike)):
            self.path = os.fspath(job)
        elif isinstance(job, types.ModuleType) and str(getattr(job, "__file__", "")).endswith(".py"):
            package = _own_package(job.__name__) if "." in job.__name__ else None
            self.path = self._import(job.__name__, package) if package else str(job.__file__)
        else:
            self.path = self._write(job)

    def _import(self, name: str, package: str) -> str:
        """A module inside the caller's own package runs as that package's
        module (its relative imports, its package's other modules), not as
        a file of its own: a job file that imports it, the package shipped."""
        self._tmp = tempfile.mkdtemp(prefix="pytxmr-job-")
        path = os.path.join(self._tmp, name.rpartition(".")[2] + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# The job module {name}, imported from its package.\n"
                    f"import importlib\n\n"
                    f"globals().update((k, v) for k, v in vars(importlib.import_module({name!r}))"
                    f".items() if not k.startswith('__'))\n")
        self.py_files = [package]
        return path

    def _write(self, job: Any) -> str:
        import pickle

        import cloudpickle

        namespace = {name: getattr(job, name) for name in JOB_NAMES
                     if getattr(job, name, None) is not None}
        if "map" not in namespace and "steps" not in namespace and \
                "map_split" not in namespace and "map_chunk" not in namespace:
            raise TypeError(f"{job!r} is not a job: give a path, a module, or an object "
                            f"with map (and reduce) or steps")
        module = getattr(job, "__module__", None) or getattr(job, "__name__", None)
        registered = None
        if module and module not in ("__main__", "builtins") and not module.startswith("pytxmr"):
            # Functions of an importable module are pickled by reference;
            # the workers may not have that module: send them by value.
            imported = sys.modules.get(module)
            if imported is not None:
                cloudpickle.register_pickle_by_value(imported)
                registered = imported
        try:
            data = cloudpickle.dumps(namespace)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as e:
            # cloudpickle's own words name the object, not the way out.
            raise ClusterError(
                f"{job!r} cannot travel to its tasks: what its functions use cannot be "
                f"pickled ({type(e).__name__}: {e}); make it inside the functions, or "
                f"give the job as a module") from e
        finally:
            if registered is not None:
                cloudpickle.unregister_pickle_by_value(registered)
        self._tmp = tempfile.mkdtemp(prefix="pytxmr-job-")
        pickle_path = os.path.join(self._tmp, PICKLE_NAME)
        with open(pickle_path, "wb") as f:
            f.write(data)
        name = getattr(job, "__qualname__", None) or getattr(job, "__name__", None) or "job"
        path = os.path.join(self._tmp, re.sub(r"\W", "_", name) + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# The job {name}, sent by value from the submitting program.\n"
                    f"from pytxmr.api import job_namespace\n\n"
                    f"globals().update(job_namespace({PICKLE_NAME!r}))\n")
        self.files.append(pickle_path)
        self.py_files = _local_modules(namespace)
        return path

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _local_modules(namespace: Mapping[str, Any]) -> list[str]:
    """The caller's own modules that a job object's functions come from (a
    script's ``jobs.py``), and those that they, or the script, import from
    their directory, or the whole package of a module inside one: they
    travel in the job's bundle, as a job file's helpers do, for the tasks
    cannot import them from the caller's directory. The standard library,
    installed packages and pytxmr stay."""
    from .bundle import local_imports

    steps = namespace.get("steps") or ()
    found: dict[str, None] = {}
    names: dict[str, None] = {}
    for fn in [*namespace.values(), *(v for s in steps for v in vars(s).values())]:
        while isinstance(fn, functools.partial):  # functools' own, but of a function of ours
            fn = fn.func
        name = getattr(fn, "__module__", None) if callable(fn) else None
        if name:
            names[name] = None
    if "__main__" in names and _own_file("__main__") is None:
        # A notebook, the REPL, ``python -``: no file to read its imports
        # from, so what it has imported from its directory (its own
        # modules' functions went by reference, and the tasks could not
        # import them). Not what else it holds (IPython's get_ipython).
        here = os.path.realpath(os.getcwd())
        for value in list(vars(sys.modules["__main__"]).values()):
            name = (value.__name__ if isinstance(value, types.ModuleType)
                    else getattr(value, "__module__", None) if callable(value) else None)
            path = _own_file(name) if isinstance(name, str) and name != "__main__" else None
            if path is not None and os.path.realpath(path).startswith(here + os.sep):
                names[str(name)] = None
    for name in names:
        package = _own_package(name)
        if package:
            # A package, or a module inside one, is imported by the
            # package's name: it goes whole, as --py-files ships one.
            found[package] = None
            continue
        path = _own_file(name)
        if path is None:
            continue
        if name != "__main__":  # whose functions are sent by value
            found[path] = None
        found.update((p, None) for p, imported in local_imports(path) if imported != "pytxmr")
    return list(found)


def _own_file(name: str) -> str | None:
    """The file of the module ``name``'s top-level module or package, if
    it is the caller's own: not pytxmr, not in the standard library or
    among the installed packages."""
    import site
    import sysconfig

    top = name.partition(".")[0]
    path = getattr(sys.modules.get(top), "__file__", None)
    if top == "pytxmr" or not path or not path.endswith(".py"):
        return None
    paths = sysconfig.get_paths()
    installed = [os.path.realpath(p) for p in (
        *(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
        # Debian's dist-packages, a user's site (pip install --user).
        *site.getsitepackages(), site.getusersitepackages())]
    if any(os.path.commonpath([os.path.realpath(path), p]) == p for p in installed):
        return None
    return path


def _own_package(name: str) -> str | None:
    """The directory of the caller's own package that the module ``name``
    is, or is inside."""
    path = _own_file(name)
    return os.path.dirname(path) if path and os.path.basename(path) == "__init__.py" else None


def job_namespace(name: str) -> dict[str, Any]:
    """In a task: the names of a job sent as an object (its pickle is one
    of the job's files, in the working directory)."""
    import pickle

    with open(name, "rb") as f:
        namespace: dict[str, Any] = pickle.load(f)
    return namespace


def _command_line(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as the command line's: a size may be written as it is
    there ("64M"); a bad one refuses the job, as the cluster would."""
    known = _client.submission.__kwdefaults__
    unknown = sorted(set(options) - set(known))
    if unknown:  # a misspelling raised a TypeError on a cluster, inline a ClusterError
        raise ClusterError(f"no such option: {', '.join(unknown)} (the options: "
                           f"{', '.join(sorted(known))})")
    out = dict(options)
    if out.get("split_size") is not None:
        try:
            out["split_size"] = parse_size(out["split_size"])
        except ValueError as e:
            raise ClusterError(f"split_size: {e}") from None
    # Checked here for both ways to run, as the jobtracker checks them: a
    # negative count of reducers ran inline into an IndexError.
    for name in ("reducers", "split_size", "max_attempts", "buffer_records"):
        value = out.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise ClusterError(f"{name} must be an int of at least 1, not {value!r}")
    for name in ("py_files", "files"):  # one path, as inputs may be
        if out.get(name) is not None:
            out[name] = _paths(out[name])
    return out


def _paths(given: Any) -> list[str]:
    """Paths as the API takes them: one (a str or a ``pathlib.Path``), or
    several."""
    if isinstance(given, (str, os.PathLike)):
        return [os.fspath(given)]
    return [os.fspath(p) for p in given]


#: What the API takes as inputs: a path or URL, or several.
Inputs = Union[Sequence[Union[str, "os.PathLike[str]"]], str, "os.PathLike[str]"]


def _submission(job: _JobFile, inputs: Inputs, output: str | os.PathLike[str],
                options: dict[str, Any]) -> _client.JobSubmission:
    files = [*options.pop("files", ()), *job.files]
    py_files = [*options.pop("py_files", ()), *job.py_files]
    return _client.submission(job.path, _paths(inputs), os.fspath(output), files=files,
                              py_files=py_files, **options)


# --- the API ----------------------------------------------------------------------

def run(job: Any, inputs: Inputs, output: str | os.PathLike[str], *, inline: bool = False,
        workers: int = 2, slots: int | None = None, timeout: float | None = None,
        check: bool = True, **options: Any) -> JobResult:
    """Run ``job`` on a local cluster started for it (as ``python -m pytxmr
    run`` does), or in this process with ``inline=True``; its result.

    ``options`` are those of ``client.submission``: ``args``, ``py_files``,
    ``files``, ``reducers``, ``split_size``, ``overwrite``,
    ``storage_options``, ``compress``... ``timeout`` (seconds) stops the
    cluster and the job; inline it does not apply (a RuntimeWarning). A
    failed job raises ``JobFailed``
    unless ``check`` is false; a refused one raises ``ClusterError``, inline
    too (its ``__cause__`` the error that refused it).
    """
    from .localcluster import default_slots

    for name, count in (("workers", workers), ("slots", slots)):
        # As the command line's --workers and --slots are: -1 worker hung
        # the call, 0 divided by zero.
        if count is not None and (type(count) is not int or count < 1):
            raise ClusterError(f"{name} must be a whole number, at least 1, not {count!r}")
    if inline and timeout is not None:
        # It runs in this thread, to its end, where nothing can stop it: it
        # was ignored without a word. A warning, not a refusal: the same
        # call may switch between the two ways to run.
        warnings.warn("timeout does not apply inline: an inline job runs in this process "
                      "until it ends", RuntimeWarning, stacklevel=2)
    slots = slots or default_slots(workers)
    options = _command_line(options)
    job_file = _JobFile(job)
    try:
        if inline:
            result = _run_inline(job_file, inputs, output, workers * slots, options)
        else:
            submission = _submission(job_file, inputs, output, dict(options))

            async def go(reactor: Any) -> dict[str, Any]:
                from . import embedded
                from .localcluster import start_zygote

                zygote = start_zygote()
                try:
                    return await embedded.run_embedded(reactor, submission, zygote=zygote,
                                                       workers=workers, slots=slots)
                finally:
                    await zygote.stop()

            result = JobResult.from_dict(_in_reactor(go, timeout=timeout),
                                         options.get("storage_options"))
    finally:
        job_file.close()
    if check and not result.ok:
        raise JobFailed(result)
    return result


def _run_inline(job: _JobFile, inputs: Inputs, output: str | os.PathLike[str], slots: int,
                options: Mapping[str, Any]) -> JobResult:
    import time

    from .inline import run_inline
    from .jobmodule import describe_error

    names = {"reducers": "num_reducers"}
    # Retries and backups are a cluster's: inline, a failed task fails the
    # job at once (as `run --inline` ignores --max-attempts, --speculative).
    kwargs = {names.get(k, k): v for k, v in options.items()
              if k not in ("max_attempts", "speculative")}
    kwargs["files"] = [*kwargs.get("files", ()), *job.files]
    kwargs["py_files"] = [*kwargs.get("py_files", ()), *job.py_files]
    start = time.perf_counter()
    formats: list[str] = []
    counters: dict[str, dict[str, int]] = {}
    error = None
    with storage.WORKING_DIRECTORY:  # its relative output too: see inline.run_inline
        where = storage.normalize(os.fspath(output))
        try:
            counters = run_inline(job.path, _paths(inputs), os.fspath(output), slots=slots,
                                  started=formats.append, **kwargs)
        except Exception as e:
            if not formats:  # before it started: refused, as by a jobtracker
                raise ClusterError(str(e)) from e
            error = describe_error(e, job.path)  # failed, as a job on a cluster fails
    return JobResult("inline", "failed" if error else "succeeded", where,
                     counters, time.perf_counter() - start, error,
                     args=dict(options.get("args") or {}),
                     storage_options=dict(options.get("storage_options") or {}),
                     output_format=formats[0])


class Client:
    """A running cluster's jobtracker, as blocking calls. One connection per
    call: a client object is cheap, holds nothing open, and may be shared
    by threads."""

    def __init__(self, address: str = "127.0.0.1:7373", secret_file: str | None = None,
                 timeout: float = 10.0, *, tls: str | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        """``tls``: a directory with the cluster CA's ``ca.pem`` (TLS to the
        jobtracker); ``user`` and ``password``: log in as a user, at a
        jobtracker with a users file, instead of with the cluster secret."""
        from .secret import SecretError, load_secret
        from .tls import ClusterTLS, TLSError

        self.address = address
        self.timeout = timeout
        try:  # a ClusterError, as any refusal of the API is (the cause kept)
            self._secret = b"" if user else load_secret(secret_file)
            self._login: dict[str, Any] = {
                "tls": ClusterTLS.load(tls, need_own=False) if tls else None}
        except (SecretError, TLSError) as e:
            raise ClusterError(str(e)) from e
        if user:
            self._login.update(user=user, password=password or "")

    async def _connect(self, reactor: Any) -> Any:
        return await _client.connect(reactor, self.address, self._secret, self.timeout,
                                     **self._login)

    def _call(self, method: str, *args: Any) -> Any:
        async def go(reactor: Any) -> Any:
            conn = await self._connect(reactor)
            try:
                return await conn.call(method, *args)
            finally:
                conn.close()

        return _in_reactor(go)

    def submit(self, job: Any, inputs: Inputs, output: str | os.PathLike[str], *,
               wait: bool = True, check: bool = True, **options: Any) -> JobResult:
        """Submit ``job`` (options as for ``run``); with ``wait`` (the
        default) block until it ends and return its result, else return at
        once with its state."""
        options = _command_line(options)
        job_file = _JobFile(job)
        opts = dict(options.get("storage_options") or {})
        try:
            submission = _submission(job_file, inputs, output, dict(options))

            async def go(reactor: Any) -> dict[str, Any]:
                conn = await self._connect(reactor)
                try:
                    if wait:
                        return await _client.run_job(
                            reactor, conn, submission,
                            reconnect=lambda: self._connect(reactor))
                    if submission.bundle is not None:
                        await _client.upload(conn, submission.bundle)
                    job_id = await conn.call("submit", submission.spec)
                    return await conn.call("status", job_id)
                finally:
                    conn.close()

            result = JobResult.from_dict(_in_reactor(go), opts)
        finally:
            job_file.close()
        if wait and check and not result.ok:
            raise JobFailed(result)
        return result

    def status(self, job_id: str) -> JobResult:
        return JobResult.from_dict(self._call("status", job_id))

    def wait(self, job_id: str, check: bool = True) -> JobResult:
        """Block until the job ends, also across a restart of the jobtracker."""
        async def go(reactor: Any) -> dict[str, Any]:
            conn = await self._connect(reactor)
            try:
                return await _client.follow(reactor, conn, job_id,
                                            reconnect=lambda: self._connect(reactor))
            finally:
                conn.close()

        result = JobResult.from_dict(_in_reactor(go))
        if check and not result.ok:
            raise JobFailed(result)
        return result

    def kill(self, job_id: str) -> JobResult:
        return JobResult.from_dict(self._call("kill", job_id))

    def jobs(self) -> list[JobResult]:
        return [JobResult.from_dict(d) for d in self._call("jobs")]
