"""Where a job's data lives: local paths, and URLs of the stores fsspec
reaches (``s3://``, ``http(s)://``; ``file://`` is a local path).

Local files keep their own fast path (``open(..., buffering=0)``, ``glob``),
untouched by this module's remote half. A remote input is listed and sized
through its store's own listing at submission, and read back by map tasks
in ranged reads (``rangereader``). fsspec and its
store implementations (s3fs, aiohttp) are optional extras, imported only
when a URL needs them.

Store options (``--storage-option endpoint_url=...``) travel with the job;
credentials never do: each host reads them from its store's standard
places (for S3 the ``AWS_*`` environment variables, ``~/.aws``, instance
roles). No Twisted here: the jobtracker calls this in a thread, the task
children directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

__all__ = [
    "InputFile",
    "StorageError",
    "check_options",
    "describe",
    "expand_inputs",
    "filesystem",
    "is_remote",
    "join",
    "local_path",
    "normalize",
    "options",
    "parent",
    "redact",
    "retrying",
    "s3_error",
    "use_options",
]

#: Tries of one remote operation inside a task before the attempt fails
#: (then the scheduler's own retries apply), and the first backoff.
RETRIES = 4
BACKOFF = 0.5
#: Seconds to connect to a store, and to wait for its next bytes.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_MAGIC = re.compile(r"[*?[]")
_HIDDEN_PREFIXES = (".", "_")

#: Option names that would put a secret into the job's spec, history and
#: status page: credentials come from each host's environment instead.
_SECRET_WORDS = ("secret", "password", "token", "key", "credential", "passwd", "auth")
#: Named like a secret but not one.
_NOT_SECRET = frozenset({"requester_pays", "use_listings_cache", "version_aware"})

_EXTRAS = {"s3": "s3", "s3a": "s3", "http": "http", "https": "http"}

#: The client modules of each store, which take 0.1-0.6 s to import: a
#: zygote imports them once (``preload``) instead of every map it forks.
_CLIENT_MODULES = {"s3": ("s3fs",), "s3a": ("s3fs",),
                   "http": ("fsspec.implementations.http",),
                   "https": ("fsspec.implementations.http",)}
PRELOADABLE = frozenset(m for ms in _CLIENT_MODULES.values() for m in ms)

_T = TypeVar("_T")


class StorageError(ValueError):
    """A problem with a URL the user gave: the message names it."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.path))


class NotFound(StorageError):
    """The store says the URL holds nothing."""


@dataclass(frozen=True)
class InputFile:
    """An input as submission found it: its path (absolute) or URL, its
    size, and whether its store serves byte ranges (else one map reads it
    whole, as one stream)."""

    path: str
    size: int
    ranged: bool = True


# ---------------------------------------------------------------- names


def scheme(path: str) -> str | None:
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a store other than the local disk."""
    s = scheme(path)
    return s is not None and s != "file"


def suffixed(path: str) -> str:
    """What an input's suffix (``.gz``) is read from, in lower case: an
    HTTP URL's path, without its query (a signed URL's token: the
    ``.gz`` before it went unseen, and the gzip's bytes were read as
    lines). An object's key may hold a ``?``: other paths are whole."""
    if scheme(path) in ("http", "https"):
        path = urllib.parse.urlsplit(path).path
    return path.lower()


def client_modules(path: str) -> tuple[str, ...]:
    """The modules reading ``path`` will import (none for a local path)."""
    return _CLIENT_MODULES.get(scheme(path) or "", ())


def local_path(path: str) -> str:
    """A local path or ``file://`` URL as an absolute path."""
    if scheme(path) == "file":
        rest = path[len("file://"):]
        if rest.startswith("localhost/"):  # RFC 8089: the host may be named
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):
            # file://data/x was read as ./data/x, file://localhost/x as ./localhost/x.
            raise StorageError(f"{path}: a file:// URL names a path on this host, "
                               f"file:///path (or file://localhost/path)", path)
        return os.path.abspath(rest)
    return os.path.abspath(os.path.expanduser(path))


#: The process's working directory, which an inline job (``run --inline``,
#: ``pytxmr.run(inline=True)``) makes its tasks' own while it runs. It
#: holds this lock meanwhile, and so does what reads a job's relative
#: paths in another thread: they are read against the caller's directory,
#: never a job's.
WORKING_DIRECTORY = threading.RLock()


def check_named(inputs: Sequence[str], output: str) -> None:
    """Refuse what would quietly name the working directory: no input, or
    an empty path (an unset ``"$INPUT"`` in a script read every file
    there)."""
    if not inputs:
        raise StorageError("no inputs given")
    if "" in inputs:
        raise StorageError("an input is an empty path: give a path or a URL")
    if output == "":
        raise StorageError("the output is an empty path: give a path or a URL")


def normalize(path: str) -> str:
    """What a job records for an input or output: an absolute local path,
    or the URL as given (a store's trailing '/' dropped; an HTTP URL's is
    part of the resource's name, or of its query: kept)."""
    if is_remote(path):
        # A scheme in any case (RFC 3986), as fsspec knows it: S3:// was
        # "Protocol not known: S3".
        s = scheme(path)
        path = f"{s}://{path.split('://', 1)[1]}"
        if s in ("http", "https"):
            return path  # http://h/export/ was read as http://h/export
        return path.rstrip("/") if not path.endswith("://") else path
    return local_path(path)


def normalize_input(path: str) -> str:
    """``normalize``, an input's: a local path's trailing '/', which names
    directories only (``data/*/``), kept for the listing."""
    normal = normalize(path)
    if not is_remote(path) and path.endswith("/") and not normal.endswith("/"):
        normal += "/"
    return normal


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else os.path.join(base, name)


def parent(path: str) -> str:
    if is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(path)


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (normalized, same store:
    ``s3a://`` and ``S3://`` name ``s3://``'s objects)."""
    if is_remote(root):
        path, root = _canonical(path), _canonical(root)
        sep = "/"
    else:
        sep = os.sep
    return path == root or path.startswith(root.rstrip(sep) + sep)


#: Schemes that name another's objects.
_SAME_STORE = {"s3a": "s3"}


def _canonical(url: str) -> str:
    """For ``inside``, which guards deletions: the same store's scheme, and
    '//' as one '/' (SeaweedFS and MinIO read s3://b//o/k as s3://b/o/k, an
    input an ``--overwrite`` of s3://b/o deleted; AWS S3 reads another key:
    one more refusal there)."""
    s = scheme(url)
    if s is None:
        return url
    return f"{_SAME_STORE.get(s, s)}://{re.sub('/{2,}', '/', url.split('://', 1)[1])}"


def check_no_credentials(paths: Iterable[str]) -> None:
    """Refuse a URL with a ``user:password@`` part: the job records its
    inputs and output (history, status page)."""
    for path in paths:
        if is_remote(path) and redact(path) != path:
            raise StorageError(f"{redact(path)}: a URL with credentials in it would be recorded "
                               "with the job; give them through the store's standard places "
                               "(see docs/storage.md)", redact(path))


def redact(path: str) -> str:
    """A URL without a ``user:password@`` part, for logs and pages: up to
    the authority's last '@' (a password's own '@' was shown after it)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1", path)


def describe(e: BaseException) -> str:
    """The store's error in a few words (botocore's and aiohttp's own
    messages are good; an OSError's strerror is better than its repr)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e) or type(e).__name__
    return text.splitlines()[0] if text.strip() else type(e).__name__


# ---------------------------------------------------------------- options


def check_options(opts: Any) -> dict[str, str]:
    """The job's store options as ``{name: value}`` strings, refusing any
    whose name says it is a secret (they would be recorded with the job)."""
    if opts is None:
        return {}
    if not isinstance(opts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in opts.items()):
        raise StorageError("storage options are NAME=VALUE strings")
    for name in opts:
        lowered = name.lower()
        if name in _DICT_OPTIONS:  # s3fs failed: "'str' object has no attribute 'copy'"
            raise StorageError(
                f"the storage option {name!r} takes a dict, which NAME=VALUE cannot give; "
                f"pytxmr sets it (give endpoint_url and region_name as options of their own)")
        if lowered not in _NOT_SECRET and any(w in lowered for w in _SECRET_WORDS):
            raise StorageError(
                f"the storage option {name!r} looks like a credential: pytxmr does not record "
                "secrets with a job; give them to every host through the store's standard "
                "places (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, a role)")
    return dict(opts)


#: The file systems' options whose values are dicts (s3fs's): pytxmr's own.
_DICT_OPTIONS = frozenset({"client_kwargs", "config_kwargs", "s3_additional_kwargs"})

_options: dict[str, str] = {}


def use_options(opts: Mapping[str, str]) -> None:
    """The store options of the job this process works for (a task child
    serves one job)."""
    _options.clear()
    _options.update(opts)


def options() -> dict[str, str]:
    return dict(_options)


def _typed(value: str) -> Any:
    """Option values arrive as strings; fsspec wants booleans and numbers."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


#: Suffixes of the files a map reads whole, through a decompressor.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")


def _fs_kwargs(url_scheme: str, opts: Mapping[str, str], compressed: bool = False
               ) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if url_scheme in ("http", "https"):
        opts = {}  # the job's options are its object store's (endpoint_url...)
    for name, value in opts.items():
        if url_scheme in ("s3", "s3a") and name in ("endpoint_url", "region_name"):
            client[name] = value  # botocore's, not s3fs's
        else:
            kwargs[name] = _typed(value)
    if url_scheme in ("http", "https"):
        import aiohttp

        # A server that stops sending mid-body must fail the read, not hang it.
        kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)}
        if compressed:
            # Its bytes as they are: a server may say a .gz file's own
            # encoding (Content-Encoding: gzip, as Twisted's static files
            # do), and aiohttp then unzipped what pytxmr unzips too. And
            # asked for as they are: a server that gzips what it sends (a
            # .xz too, as nginx's gzip_types may) sent bytes that are no
            # xz, "corrupt or truncated compressed input".
            kwargs["client_kwargs"]["auto_decompress"] = False
            kwargs["client_kwargs"]["headers"] = {"Accept-Encoding": "identity"}
    if url_scheme in ("s3", "s3a"):
        # Fail in seconds, not minutes, when an endpoint cannot be reached:
        # the task's own retries (``retrying``) and the scheduler's follow.
        kwargs.setdefault("config_kwargs", {"connect_timeout": CONNECT_TIMEOUT,
                                            "read_timeout": READ_TIMEOUT,
                                            "retries": {"max_attempts": 2}})
        if client:
            kwargs["client_kwargs"] = client
    return kwargs


def filesystem(url: str, opts: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it, listing
    the store as it is now."""
    s = scheme(url) or "file"
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise StorageError(f"{redact(url)}: reading URLs needs fsspec: "
                           f"pip install 'pytxmr[{_EXTRAS.get(s, 's3')}]'", url) from None
    # Known to fsspec, or registered with it (a plugin's entry point).
    if s not in fsspec.available_protocols() and s not in fsspec.registry:
        raise StorageError(f"{redact(url)}: no store is known for {s}://", url)
    try:
        compressed = suffixed(url).endswith(COMPRESSED_SUFFIXES)
        fs, path = url_to_fs(url, **_fs_kwargs(s, options() if opts is None else opts,
                                               compressed))
    except ImportError as e:
        # pytxmr's extra where it has one; else fsspec's words, which name
        # the store's package (gs://: gcsfs; there is no pytxmr[gs]).
        how = (f" ({e.name or e}): pip install 'pytxmr[{_EXTRAS[s]}]'" if s in _EXTRAS
               else f": {e}")
        raise StorageError(f"{redact(url)}: {s}:// needs another package{how}", url) from None
    except Exception as e:  # a store that cannot start (hdfs:// without its JVM)
        raise store_error(url, e, f"open the {s}:// store of") from None
    # fsspec keeps one instance per options, and its listings, for the
    # process's life: a jobtracker would list a prefix as it was at its
    # first job, missing new objects and an object's new size.
    fs.invalidate_cache()
    if s in ("s3", "s3a"):
        # s3fs tries each call 5 times, each of which botocore tries twice,
        # and a task's reads and writes are ``retrying``'s 4 times over: a
        # store that never answered held a call 10 minutes (40 a task's).
        # botocore's two tries, and ours, remain.
        fs.retries = 1
    return fs, path


def store_error(url: str, e: BaseException, doing: str) -> StorageError:
    """A store's exception as a message naming the URL."""
    shown = redact(url)
    if isinstance(e, StorageError):
        return e
    status = _http_status(e)
    if status is not None and status != 404:
        # fsspec's HTTP store reports any failed status as FileNotFoundError.
        return StorageError(f"cannot {doing} {shown}: the server answered {status}", url)
    option = re.search(r"unexpected keyword argument '(\w+)'", str(e))
    if isinstance(e, TypeError) and option:  # s3fs passes options on to its client
        return StorageError(f"cannot {doing} {shown}: the storage option {option[1]!r} is not "
                            f"one its store takes (see docs/storage.md)", url)
    if _timed_out(e):
        # fsspec's HTTP store reports a server that never answers as missing.
        return StorageError(f"cannot {doing} {shown}: the server did not answer in time", url)
    lost = _connection_error(e)
    if lost is not None:  # ...and one it cannot connect to, too
        said = {ConnectionRefusedError: "the server refused the connection",
                ConnectionResetError: "the server reset the connection"}
        return StorageError(f"cannot {doing} {shown}: "
                            f"{said.get(type(lost)) or describe(lost)}", url)
    loop = next((c for c in _causes(e) if type(c).__name__ == "TooManyRedirects"), None)
    if loop is not None:  # fsspec's HTTP store says FileNotFoundError for it too
        return StorageError(f"cannot {doing} {shown}: the server redirected it too many "
                            f"times (a loop?)", url)
    if isinstance(e, FileNotFoundError):
        return NotFound(f"{shown} does not exist", url)
    where = ("(the jobtracker's host lists a job's inputs and output, the tasktrackers' "
             "read and write them)")
    if isinstance(e, PermissionError):
        return StorageError(f"access to {shown} was denied ({describe(e)}); check the "
                            f"credentials where it is used {where}", url)
    if any(type(c).__name__ == "NoCredentialsError" for c in _causes(e)):
        # botocore's "Unable to locate credentials", said by the jobtracker
        # to a client that has them: which host lacks them?
        return StorageError(f"cannot {doing} {shown}: no credentials were found on the host "
                            f"that tried {where}", url)
    return StorageError(f"cannot {doing} {shown}: {describe(e)}", url)


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and its causes, each once: a chain may loop (``raise e from e``
    of an error re-raised as itself; it spun a job's abort for ever)."""
    met: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in met:
        met.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _http_status(e: BaseException) -> int | None:
    """The HTTP status behind a store's exception (aiohttp's), if any (not
    its 0 of a redirect loop, which answered nothing)."""
    for seen in _causes(e):
        status = getattr(seen, "status", None)
        if isinstance(status, int) and status > 0 and type(seen).__module__.startswith("aiohttp"):
            return status
    return None


def s3_error(e: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind ``e`` (("", 0) if none):
    s3fs raises an OSError whose cause is botocore's error."""
    for seen in _causes(e):
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return (response.get("Error", {}).get("Code", ""),
                    response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return "", 0


def _refused_by_s3(e: BaseException) -> bool:
    """A 4xx of S3's behind s3fs's OSError (a conditional write refused,
    412, is an EINVAL there: it was tried 4 times), but a timeout or too
    many requests, which may pass."""
    status = s3_error(e)[1]
    return 400 <= status < 500 and status not in (408, 429)


def _timed_out(e: BaseException) -> bool:
    return any(isinstance(seen, TimeoutError) for seen in _causes(e))


def shrunk(path: str, listed: int, now: int | None = None) -> StorageError:
    """An input that now ends before the ``listed`` bytes its job's listing
    found: read, it would be counted in part."""
    what = "object" if is_remote(path) else "file"
    has = "fewer" if now is None else f"{now:,}"
    return StorageError(f"{redact(path)}: the {what} changed during the job: it had at least "
                        f"{listed:,} bytes, it has {has} now", path)


def _connection_error(e: BaseException) -> BaseException | None:
    """The connection that failed behind a store's exception (refused,
    reset), which fsspec's HTTP store reports as a missing file."""
    return next((seen for seen in _causes(e) if isinstance(seen, ConnectionError)), None)


def _permanent(e: BaseException) -> bool:
    status = _http_status(e)
    if status is not None:
        return status < 500  # a 5xx may pass; a 4xx will not
    if _connection_error(e) is not None:  # a server restarting: may come back
        return False
    return _refused_by_s3(e) or isinstance(e, (
        FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
        StorageError, ValueError))


def retrying(url: str, doing: str, f: Callable[[], _T], *, tries: int = RETRIES,
             sleep: Callable[[float], None] = time.sleep) -> _T:
    """``f()``, tried again with backoff after a transient error (a lost
    connection, a 5xx); a missing object or a refusal fails at once."""
    delay = BACKOFF
    for attempt in range(1, tries + 1):
        try:
            return f()
        except Exception as e:
            if _permanent(e) or attempt == tries:
                raise store_error(url, e, doing) from e
        sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- listing


#: Said when a listing finds nothing: what it may have skipped.
_HIDDEN_SKIPPED = " (names starting with '.' or '_' are skipped below its first wildcard)"


def _visible(name: str) -> bool:
    return not name.startswith(_HIDDEN_PREFIXES)


def _literal_prefix(pattern: str) -> str:
    """A glob's directories before its first component with a wildcard."""
    parts = pattern.split("/")
    wild = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    return "/".join(parts[:wild])


def _visible_below(match: str, prefix: str) -> bool:
    """Whether what a glob matched lies in no hidden directory, and is none,
    below the glob's literal ``prefix``: ``_temporary/`` of a job's output
    matched by ``out/*`` (or ``out/**``) is skipped as ``_SUCCESS`` is, as
    Hadoop skips them; a hidden directory the user wrote out is read."""
    rest = match[len(prefix):] if match.startswith(prefix) else match
    return all(_visible(part) for part in rest.split("/") if part)


def _local_dir_files(directory: str) -> list[InputFile]:
    try:
        with os.scandir(directory) as entries:
            return [InputFile(os.path.abspath(e.path), e.stat().st_size)
                    for e in entries if _visible(e.name) and e.is_file()]
    except OSError as e:
        raise StorageError(f"cannot list input directory {directory}: {e.strerror}",
                           directory) from e


def _expand_local(pattern: str) -> list[InputFile]:
    path = local_path(pattern)
    # A trailing '/' names directories only, as the shell and glob read it:
    # 'g/*/' read the files beside g's subdirectories too.
    dirs_only = pattern.endswith("/")
    if os.path.isdir(path):
        files = _local_dir_files(path)
        if not files:
            raise StorageError(
                f"input directory {path} has no files "
                "(names starting with '.' or '_' are skipped, subdirectories are not read)", path)
        return sorted(files, key=lambda f: f.path)
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise StorageError(f"input {path} is not a regular file", path)
        if dirs_only:
            raise StorageError(f"input {pattern}: {path} is a file, not a directory", path)
        return [InputFile(path, os.path.getsize(path))]
    if not _GLOB_MAGIC.search(path):
        raise StorageError(f"input path does not exist: {path}", path)
    files: list[InputFile] = []
    prefix = _literal_prefix(path)
    for match in glob.glob(path, recursive=True):
        if not _visible_below(match, prefix):
            continue
        if os.path.isdir(match):
            files.extend(_local_dir_files(match))
        elif os.path.isfile(match) and not dirs_only:
            files.append(InputFile(os.path.abspath(match), os.path.getsize(match)))
    if not files:
        raise StorageError(f"input pattern {pattern!r} matches no files{_HIDDEN_SKIPPED}",
                           pattern)
    return sorted(files, key=lambda f: f.path)


def _url_of(fs: Any, url: str, fs_path: str) -> str:
    """The URL of a path a listing returned (s3fs drops the scheme)."""
    s = scheme(url)
    return fs_path if scheme(fs_path) else f"{s}://{fs_path.lstrip('/')}"


def _file_of(url: str, info: Mapping[str, Any]) -> InputFile:
    """A listed file; one whose store does not say its size (an HTTP server
    without Content-Length) is read whole, as one stream, never as empty."""
    size = info.get("size")
    return InputFile(url, int(size or 0), size is not None)


def _files_of(fs: Any, url: str, entries: Iterable[Mapping[str, Any]]) -> list[InputFile]:
    found = []
    for info in entries:
        name = info["name"].rstrip("/")
        if info.get("type") == "file" and _visible(posixpath.basename(name)):
            found.append(_file_of(_url_of(fs, url, name), info))
    return found


def _expand_remote(pattern: str, opts: Mapping[str, str] | None) -> list[InputFile]:
    fs, path = filesystem(pattern, opts)
    shown = redact(pattern)
    globbing = bool(_GLOB_MAGIC.search(path)) and scheme(pattern) not in ("http", "https")
    try:
        info = None
        if globbing:
            # A name that holds '[' or '*' is itself first, as a local path is.
            with contextlib.suppress(FileNotFoundError):
                info = fs.info(path)
        if globbing and info is None:
            prefix = _literal_prefix(path)
            listed = [entry for name, entry in fs.glob(path, detail=True).items()
                      if _visible_below(name.rstrip("/"), prefix)]
            files = _files_of(fs, pattern, listed)
            for entry in listed:  # a matched prefix stands for its files
                if entry.get("type") == "directory":
                    files.extend(_files_of(fs, pattern, fs.ls(entry["name"], detail=True)))
            if not files:
                raise StorageError(f"input pattern {shown!r} matches no files{_HIDDEN_SKIPPED}",
                                   pattern)
        else:
            info = info or fs.info(path)
            if info.get("type") == "directory":
                files = _files_of(fs, pattern, fs.ls(path, detail=True))
                if not files:
                    raise StorageError(f"input {shown} has no files (names starting with "
                                       "'.' or '_' are skipped, sub-prefixes are not read)",
                                       pattern)
            else:
                if _listing_page(pattern, info):
                    raise StorageError(
                        f"input {shown} is an HTML page at a directory's URL (a server's list "
                        f"of its files?), not a file: HTTP has no directories to read, so "
                        f"give each file's URL (or keep the files in a store that lists "
                        f"them, such as s3://)", pattern)
                files = [_file_of(normalize(pattern), info)]
    except Exception as e:
        error = store_error(pattern, e, "list")
        if isinstance(error, NotFound) and not globbing and _GLOB_MAGIC.search(
                urllib.parse.urlsplit(pattern).path):
            error = NotFound(f"{error}; HTTP has no listing to match a wildcard against: "
                             f"give each file's URL (or keep the files in a store that lists "
                             f"them, such as s3://)", pattern)
        raise error from e
    if scheme(pattern) in ("http", "https"):
        files = [InputFile(f.path, f.size, f.ranged and _serves_ranges(f.path)) for f in files]
    return sorted(files, key=lambda f: f.path)


def _listing_page(url: str, info: Mapping[str, Any]) -> bool:
    """An HTTP answer that is a page of links rather than a file: HTML at a
    URL ending in '/' (or redirected to one), as a server lists a
    directory; or at its root, whose '/' a submission drops. Read as an
    input, its markup's words were counted."""
    if scheme(url) not in ("http", "https"):
        return False
    path = urllib.parse.urlsplit(str(info.get("url") or url)).path
    return (str(info.get("mimetype") or "").startswith("text/html")
            and (path.endswith("/") or not path))


def _as_sent(url: str) -> str:
    """An HTTP URL as aiohttp sends it: a space or a letter beyond ASCII
    escaped in its path and query, its host name in IDNA."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").encode("idna").decode()
    netloc = f"{host}:{parts.port}" if parts.port else host
    safe = "/?#[]@!$&'()*+,;=%~:"
    return urllib.parse.urlunsplit((parts.scheme, netloc, urllib.parse.quote(parts.path, safe),
                                    urllib.parse.quote(parts.query, safe), ""))


def _serves_ranges(url: str) -> bool:
    """Whether an HTTP server answers a range request with the range (206):
    many serve only whole files, which one map then streams."""
    import urllib.error
    import urllib.request

    # Compression accepted as the reads (aiohttp) accept it: a server that
    # compresses on the fly may then drop the range.
    request = urllib.request.Request(_as_sent(url), headers={
        "Range": "bytes=0-0", "Accept-Encoding": "gzip, deflate"})
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:
            return response.status == 206
    except urllib.error.HTTPError as e:
        if e.code == 416:  # an empty file has no byte 0
            return True
        raise store_error(url, e, "read") from e
    except OSError as e:
        raise store_error(url, e, "read") from e


def _identity(path: str, heads: dict[str, str]) -> str:
    """What makes two inputs one file: a local file's path with its links
    resolved (one named again through a symbolic link, or in a linked
    directory, was read twice, its words counted twice), a URL's text.
    Not inode numbers: an overlay file system (a container's) may give two
    files one, and one of them would go unread. ``heads``: the resolved
    directories so far (a directory of 100,000 files is resolved once)."""
    if is_remote(path):
        return path
    if os.path.islink(path):
        return os.path.realpath(path)
    head, name = os.path.split(path)
    if head not in heads:
        heads[head] = os.path.realpath(head)
    return os.path.join(heads[head], name)


def expand_inputs(patterns: Sequence[str],
                  opts: Mapping[str, str] | None = None) -> list[InputFile]:
    """The job's input arguments (files, directories or prefixes, globs with
    ``**``) as files with their sizes, in a deterministic order, each once.

    A directory stands for its visible files, not recursively (names
    starting with '.' or '_', such as ``_SUCCESS``, are skipped, as in
    Hadoop). A missing path, an empty directory or a glob matching nothing
    is an error now, before any task runs.
    """
    if isinstance(patterns, (str, bytes)):
        raise TypeError("expand_inputs takes a list of patterns, not a single string")
    seen: dict[str, InputFile] = {}
    heads: dict[str, str] = {}
    for pattern in patterns:
        found = (_expand_remote(pattern, opts) if is_remote(pattern)
                 else _expand_local(pattern))
        for f in found:
            seen.setdefault(_identity(f.path, heads), f)
    for f in seen.values():
        if f.size == 0 and f.ranged and suffixed(f.path).endswith(COMPRESSED_SUFFIXES):
            # gzip and zstd read it as empty, bz2 and xz fail on it.
            raise StorageError(f"input {redact(f.path)} is empty, which no compressed file is "
                               f"(an upload that failed?)", f.path)
    return list(seen.values())
