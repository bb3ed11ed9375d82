"""Job output in an object store (``-o s3://bucket/prefix``): the commit
protocol where there is no rename.

A reduce attempt writes its part file on its worker's disk; only the
attempt the jobtracker allows to commit uploads it, to
``PREFIX/part-NNNNN``. An object store makes an upload visible whole or
not at all (a multipart upload only when it is completed), so a reader
never sees a partial part file, and a later attempt's upload replaces an
earlier one's whole. ``_SUCCESS`` is written last and holds a manifest
(each part's name, size and records) so that a reader can check that the
output is complete. ``--overwrite`` removes only an earlier pytxmr output,
by the same rules as on a local disk (``output.check_overwrite``).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import storage
from .outputrules import (
    OUTPUT_MARK,
    SUCCESS,
    TEMPORARY,
    InputsInUse,
    MayReplace,
    OutputExistsError,
    OutputGone,
    OutputTaken,
    UnsafeOverwrite,
    foreign_files,
    mark_field,
    mark_text,
    refuse_foreign_owner,
    written_for_another,
)
from .storage import StorageError

MANIFEST_VERSION = 1


def _names(fs: Any, path: str) -> list[str] | None:
    """The names under the prefix ``path``; None if there is nothing. The
    empty object ``path/`` that a console makes for a "folder" is the
    prefix itself, as an empty directory is on a disk: not a name in it."""
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return None
    names = [posixpath.basename(e.rstrip("/")) for e in entries
             if e.rstrip("/") != path.rstrip("/")]
    return [n for n in names if n] or None


def _is_object(fs: Any, path: str) -> bool:
    try:
        return fs.info(path).get("type") == "file"
    except FileNotFoundError:
        return False


def check_overwrite(url: str, names: Sequence[str] | None, is_object: bool, *,
                    inputs: Iterable[str], in_use: Iterable[InputsInUse] = (),
                    objects: Callable[[], Iterable[str]], mark: Callable[[], str],
                    may_replace: MayReplace = None) -> None:
    """Refuse (``UnsafeOverwrite``) to replace what is not an earlier
    pytxmr output, what holds or lies in an input of this job, or what
    holds an input of another (``in_use``): the prefix's current
    ``names``, and every object below it (``objects``, listed only for a
    prefix marked as an output), decide, as a directory's do on a local
    disk; as does the owner its ``mark`` names (``may_replace``)."""
    shown = storage.redact(url)

    def refuse(why: str) -> UnsafeOverwrite:
        return UnsafeOverwrite(f"refusing to overwrite {shown}: {why}; nothing was deleted")

    if is_object:
        raise refuse("it is an object, not a prefix (an output is a prefix of part files)")
    bucket_root = url.split("://", 1)[1].strip("/")
    if "/" not in bucket_root:
        raise refuse("it is a whole bucket (give a prefix inside it)")
    for pattern in inputs:
        if not storage.is_remote(pattern):
            continue
        fixed = storage.normalize(pattern)
        magic = min((fixed.find(c) for c in "*?[" if c in fixed), default=-1)
        base = fixed[:magic].rsplit("/", 1)[0] if magic >= 0 else fixed
        if storage.inside(url, base) or storage.inside(base, url):
            raise refuse(f"it holds, or lies in, the job's input {storage.redact(pattern)}")
    for job in in_use:  # another job's: what it listed, and what it named
        held = next((p for p in (*job.files, *job.inputs)
                     if storage.is_remote(p) and storage.inside(storage.normalize(p), url)), None)
        if held is not None:
            raise refuse(f"it holds {storage.redact(held)}, an input of {job.whose}")
    if not names:
        return
    if not set(names) & {OUTPUT_MARK, SUCCESS}:
        raise refuse(f"it is not a pytxmr output (it has no {OUTPUT_MARK} or {SUCCESS} object)")
    foreign = foreign_files(objects())
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise refuse(f"it holds objects pytxmr did not write: {', '.join(foreign[:3])}{more}")
    owned = refuse_foreign_owner(mark(), may_replace) if OUTPUT_MARK in names else None
    if owned:
        raise refuse(owned)


def read_mark(fs: Any, path: str) -> str:
    """The text of the prefix ``path``'s mark ("" once it is gone)."""
    try:
        data: bytes = fs.cat_file(f"{path}/{OUTPUT_MARK}")
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


def objects_below(fs: Any, path: str) -> list[str]:
    """Every object under the prefix ``path``, relative to it (but its
    "folder" object, ``path/``)."""
    return [rel for key in fs.find(path)
            if key.startswith(path) and (rel := key[len(path):].lstrip("/"))]


def listing(url: str, opts: Mapping[str, str] | None) -> tuple[Any, str, list[str] | None, bool]:
    """The prefix's file system, path, names and whether it is an object."""
    fs, path = storage.filesystem(url, opts)
    try:
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            # s3fs says False for any failure of its probes: a store that
            # refused the connection, or the credentials, was said to have
            # no such bucket. Its listing says which.
            try:
                fs.ls(bucket)
            except FileNotFoundError:
                pass
            raise StorageError(f"the bucket of the output {storage.redact(url)} does not exist")
        return fs, path, _names(fs, path), _is_object(fs, path)
    except Exception as e:
        raise storage.store_error(url, e, "list the output") from e


def prepare(url: str, overwrite: bool, *, inputs: Iterable[str],
            opts: Mapping[str, str], in_use: Iterable[InputsInUse] = (), owner: str = "",
            may_replace: MayReplace = None, job: str = "") -> None:
    """Refuse an existing output unless told to replace it (and then only a
    pytxmr output, no other user's), remove it, and mark the prefix as a
    pytxmr output of ``owner``'s ``job``."""
    fs, path, names, is_object = listing(url, opts)
    outer = _output_around(fs, url, path)
    if outer is not None:  # as on a disk: its --overwrite then refused "objects not its own"
        raise OutputExistsError(
            f"the output {storage.redact(url)} lies in {storage.scheme(url)}://{outer}, the "
            f"output of an earlier job: give it a place of its own")
    if names or is_object:
        if not overwrite:
            raise OutputExistsError(
                f"output {storage.redact(url)} already exists (use --overwrite to replace it)")
        check_overwrite(url, names, is_object, inputs=inputs, in_use=in_use,
                        objects=lambda: objects_below(fs, path),
                        mark=lambda: read_mark(fs, path), may_replace=may_replace)
        # _SUCCESS first: a deletion cut short must not leave what looks
        # like a whole output; the mark last: nor one no --overwrite takes
        # again ("not a pytxmr output", its parts left to remove by hand).
        _remove(fs, url, path, sorted(names or (), key=lambda name: (
            name != SUCCESS, name == OUTPUT_MARK)))
    _create_mark(fs, url, path, mark_text("prefix", owner, job), job)


def _create_mark(fs: Any, url: str, path: str, text: str, job: str) -> None:
    """Write the prefix's mark only if it has none: of two jobs that found
    the prefix free at once, the second is refused here, as a local
    directory's ``makedirs`` refuses it. S3 (since 2024), MinIO and
    SeaweedFS honour ``If-None-Match: *``; a store that ignores it (or says
    it does not implement it) lets the last job's mark stand, and that
    job's ``check_mark`` fail the other."""
    key = f"{path}/{OUTPUT_MARK}"
    call = getattr(fs, "call_s3", None)
    if call is None:
        storage.retrying(url, "write", lambda: fs.pipe_file(key, text.encode()))
        return
    bucket, _, name = key.partition("/")

    def put() -> None:
        try:
            call("put_object", Bucket=bucket, Key=name, Body=text.encode(), IfNoneMatch="*")
        except Exception as e:
            code, status = storage.s3_error(e)
            if code != "NotImplemented" and status != 501:
                raise
            fs.pipe_file(key, text.encode())

    try:
        storage.retrying(url, "write", put)  # a refusal (412) is not tried again
    except Exception as e:
        code, status = storage.s3_error(e)
        if code != "PreconditionFailed" and status != 412:
            raise
        # A retry of a put that had been done (its answer lost) finds this
        # job's own mark.
        if mark_field(read_mark(fs, path), "job") != job:
            raise OutputExistsError(
                f"another job made the output {storage.redact(url)} as this one was "
                f"preparing it: give another output, or resubmit with --overwrite once "
                f"that job has ended") from None


def check_mark(url: str, opts: Mapping[str, str], job: str) -> None:
    """Refuse to go on writing the prefix unless its mark still names
    ``job``: OutputGone once the mark is gone (the prefix was removed),
    OutputTaken when another job's replaced it (another cluster's
    ``--overwrite``, while this job's jobtracker was down or as it ran)."""
    fs, path = storage.filesystem(url, opts)
    text = storage.retrying(url, "read the mark of", lambda: read_mark(fs, path))
    shown = storage.redact(url)
    if not text:
        raise OutputGone(f"its output {shown} was removed or replaced (its {OUTPUT_MARK} is "
                         f"gone)")
    if written_for_another(text, job):
        raise OutputTaken(f"another job (of another jobtracker, or a `run`) replaced its "
                          f"output {shown}")


def _output_around(fs: Any, url: str, path: str) -> str | None:
    """The earlier pytxmr output (a prefix with its mark) that the output
    ``url``, at ``path`` (``bucket/a/b``), lies in; a bucket is never one."""
    parts = path.strip("/").split("/")
    for outer in ("/".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)):
        mark = f"{outer}/{OUTPUT_MARK}"
        if storage.retrying(url, "list the output", lambda: fs.exists(mark)):
            return outer
    return None


def _remove(fs: Any, url: str, path: str, names: Iterable[str]) -> None:
    for name in names:
        target = f"{path}/{name}"
        storage.retrying(url, "remove", lambda: fs.rm(target, recursive=True))


def upload_part(url: str, local: str, name: str, opts: Mapping[str, str]) -> None:
    """Upload a committing attempt's part file: visible whole once done."""
    fs, path = storage.filesystem(url, opts)
    storage.retrying(url, "upload to", lambda: fs.put_file(local, f"{path}/{name}"))


def remove_part(url: str, name: str, opts: Mapping[str, str]) -> None:
    """Remove one part object (an upload that ended after its job did)."""
    fs, path = storage.filesystem(url, opts)
    storage.retrying(url, "remove", lambda: fs.rm(f"{path}/{name}"))


def manifest(url: str, opts: Mapping[str, str], job_id: str,
             records: Mapping[str, int]) -> dict[str, Any]:
    """What ``_SUCCESS`` holds: every part as listed by the store now
    (name, size) and the records its reduce wrote."""
    fs, path = storage.filesystem(url, opts)
    entries = storage.retrying(url, "list the output",
                               lambda: fs.ls(path, detail=True, refresh=True))
    sizes = {posixpath.basename(e["name"].rstrip("/")): int(e.get("size") or 0)
             for e in entries}
    missing = sorted(set(records) - set(sizes))
    if missing:
        raise StorageError(f"{storage.redact(url)}: committed parts are missing from the "
                           f"store: {', '.join(missing[:3])}")
    parts = [{"name": n, "size": sizes[n], "records": records[n]} for n in sorted(records)]
    return {"pytxmr_manifest": MANIFEST_VERSION, "job": job_id, "parts": parts}


def finish(url: str, opts: Mapping[str, str], job_id: str, records: Mapping[str, int],
           job: str = "") -> None:
    """Remove the data between a job's steps, if any; write ``_SUCCESS``,
    with its manifest, last; not if the prefix is no longer ``job``'s
    (``check_mark``)."""
    if job:
        check_mark(url, opts, job)
    fs, path = storage.filesystem(url, opts)
    if TEMPORARY in (_names(fs, path) or []):
        _remove(fs, url, path, [TEMPORARY])
    body = json.dumps(manifest(url, opts, job_id, records), indent=1).encode() + b"\n"
    storage.retrying(url, "write", lambda: fs.pipe_file(f"{path}/{SUCCESS}", body))


def abort(url: str, opts: Mapping[str, str], job: str = "") -> None:
    """After a failed or killed job: remove its part files (alone they would
    look like a result), another job's ``_SUCCESS`` and any upload left
    incomplete under the prefix; nothing if the prefix is no longer
    ``job``'s (``check_mark``), or holds its ``_SUCCESS``."""
    if job:
        check_mark(url, opts, job)
    fs, path = storage.filesystem(url, opts)
    names = _names(fs, path) or []
    if job and SUCCESS in names and _success_of(fs, url, path) == job.split(" ")[0]:
        return  # a result: the job had finished it (its end not journaled: a full disk)
    # A _SUCCESS too: one there now is another job's, that wrote it as
    # this one replaced its output.
    _remove(fs, url, path, [n for n in names
                            if n.startswith("part-") or n in (TEMPORARY, SUCCESS)])
    _abort_uploads(fs, path)


def _success_of(fs: Any, url: str, path: str) -> str:
    """The job whose manifest the prefix's ``_SUCCESS`` is ("" if none can
    be read)."""
    try:
        data = storage.retrying(url, "read", lambda: fs.cat_file(f"{path}/{SUCCESS}"))
        found = json.loads(data).get("job", "")
    except (StorageError, ValueError, AttributeError):
        return ""
    return found if isinstance(found, str) else ""


def _abort_uploads(fs: Any, path: str) -> None:
    """S3 keeps the parts of an upload its writer never completed (a killed
    worker's) out of sight but billed; end them."""
    call = getattr(fs, "call_s3", None)
    if call is None:
        return
    bucket, _, prefix = path.partition("/")
    try:
        listed = call("list_multipart_uploads", Bucket=bucket, Prefix=prefix + "/")
        for up in listed.get("Uploads", []):
            call("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    except Exception:  # best effort: the parts are invisible either way
        pass
