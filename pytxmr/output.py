"""Job output: the text forms of records and the atomic commit of part files.

A reduce attempt writes ``OUTPUT/_temporary/<attempt>/part-NNNNN``; only the
attempt the jobtracker allows to commit renames it to ``OUTPUT/part-NNNNN``
(a rename within one file system is atomic), and ``_SUCCESS`` is written
when every part is in. A reader of OUTPUT therefore never sees a partial or
duplicated part file. ``--overwrite`` removes only what is recognisably an
earlier pytxmr output (see ``check_overwrite``). An output in an object
store (a URL) follows the same rules with uploads for renames
(``objectoutput``).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import sys
import time
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import objectoutput, storage
from .outputrules import (
    OUTPUT_MARK,
    SUCCESS,
    TEMPORARY,
    InputsInUse,
    OutputExistsError,
    OutputGone,
    OutputsOverlap,
    OutputTaken,
    MayReplace,
    UnsafeOverwrite,
    foreign_files,
    mark_text,
    part_name,
    refuse_foreign_owner,
    written_for_another,
)
from .splits import is_glob

#: The error handler of output files: lone surrogates U+DC80-U+DCFF (from
#: input decoded with "surrogateescape") become the raw bytes they stand
#: for; other lone surrogates are written as their UTF-8-like encoding
#: ("surrogatepass") rather than failing the reduce.
ENCODING_ERRORS = "pytxmr-output"


def _output_errors(exc: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start:exc.end]:
        c = ord(ch)
        out += bytes([c - 0xDC00]) if 0xDC80 <= c <= 0xDCFF else ch.encode("utf-8", "surrogatepass")
    return bytes(out), exc.end


codecs.register_error(ENCODING_ERRORS, _output_errors)


def _int_text(n: int) -> str:
    try:
        return str(n)
    except ValueError:  # beyond Python's 4300-digit guard: ints are exact here
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return str(n)
        finally:
            sys.set_int_max_str_digits(limit)


#: What travels as bytes (msgpack's bin): written as bytes, by map-only
#: tasks as after a shuffle.
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _BYTES_LIKE):
        return bytes(obj).decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot write {type(obj).__qualname__} as JSON")


_JSON_KEY_TYPES = (str, int, float, bool, type(None))


def _json_keys(obj: Any) -> Any:
    """``obj`` with every dict key JSON cannot have (bytes, a tuple) as its
    text form: a dict value (a ``Counter`` too) may have any key a job's
    key may be."""
    if isinstance(obj, dict):
        out = {k if type(k) in _JSON_KEY_TYPES else to_text(k): _json_keys(v)
               for k, v in obj.items()}
        if len(out) < len(obj):
            seen: dict[str, Any] = {}
            for k in obj:
                text = k if type(k) in _JSON_KEY_TYPES else to_text(k)
                if text in seen:
                    raise TypeError(f"cannot write a dict whose keys {seen[text]!r:.100} and "
                                    f"{k!r:.100} are written alike: make them distinct")
                seen[text] = k
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_keys(v) for v in obj]
    return obj


def _dumps(obj: Any, allow_nan: bool) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, default=_json_default, allow_nan=allow_nan)
    except TypeError:
        return json.dumps(_json_keys(obj), ensure_ascii=False, default=_json_default,
                          allow_nan=allow_nan)


def _json(obj: Any, allow_nan: bool = True) -> str:
    try:
        return _dumps(obj, allow_nan)
    except ValueError:  # an int beyond 4300 digits
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return _dumps(obj, allow_nan)
        finally:
            sys.set_int_max_str_digits(limit)


def to_text(obj: Any) -> str:
    """The text form of a key or value: str as is, bytes as UTF-8 with
    backslash escapes, everything else as JSON (tuples as arrays)."""
    t = type(obj)
    if t is str:
        return obj
    if t is int:
        return _int_text(obj)
    if t is bytes:
        return obj.decode("utf-8", "backslashreplace")
    if isinstance(obj, str):  # a subclass (a StrEnum member): its value, as is
        return str.__str__(obj)
    if isinstance(obj, _BYTES_LIKE):
        return bytes(obj).decode("utf-8", "backslashreplace")
    return _json(obj)


def text_line(key: Any, value: Any) -> str:
    """``key<TAB>value``; the key alone for a None value, as Hadoop's text
    output does for a NullWritable: a job of keys only (a sort of lines, a
    distinct) writes lines, not lines ending in a tab and ``null``."""
    kt, vt = type(key), type(value)
    if kt is str and (vt is int or vt is str):
        # A word count's lines: formatted at once, a fifth of the per-key
        # cost of a reduce.
        try:
            return f"{key}\t{value}\n"
        except ValueError:  # an int beyond 4300 digits
            pass
    if value is None:
        return f"{to_text(key)}\n"
    return f"{to_text(key)}\t{to_text(value)}\n"


def json_line(key: Any, value: Any) -> str:
    """One ``[key, value]`` JSON document: one that any JSON parser reads,
    so a NaN or an infinite float, which Python's ``json`` would write as
    the non-JSON ``NaN`` or ``Infinity``, is refused (a TypeError, as for
    any value that cannot be written), and a lone surrogate (a byte that
    was not UTF-8, read with ``surrogateescape``) is written as its ``\\u``
    escape, not as the raw byte it stands for, which no parser reads."""
    try:
        line = _json([key, value], allow_nan=False)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise
        raise TypeError("JSON has no NaN or Infinity, and every jsonl line must be "
                        "JSON: write None or a str (such as 'nan') instead") from None
    if not line.isascii() and _SURROGATE.search(line):
        line = _SURROGATE.sub(_escaped, line)
    return line + "\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(m: re.Match[str]) -> str:
    return f"\\u{ord(m[0]):04x}"


FORMATTERS: dict[str, Callable[[Any, Any], str]] = {"text": text_line, "jsonl": json_line}


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both real, absolute paths,
    or both URLs)."""
    if storage.is_remote(path) or storage.is_remote(root):
        return storage.is_remote(path) and storage.inside(path, root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _glob_matches(path_parts: Sequence[str], pattern_parts: Sequence[str]) -> bool:
    """A path against a glob, component by component; ``**`` spans any
    number of components, as recursive globs do."""
    if not pattern_parts:
        return not path_parts
    head, rest = pattern_parts[0], pattern_parts[1:]
    if head == "**":
        return any(_glob_matches(path_parts[i:], rest) for i in range(len(path_parts) + 1))
    return (bool(path_parts) and fnmatch.fnmatchcase(path_parts[0], head)
            and _glob_matches(path_parts[1:], rest))


def _overlapping_input(out: str, patterns: Iterable[str], files: Iterable[str],
                       lies_in: bool = True) -> str | None:
    """The first input that ``out`` contains or (with ``lies_in``) that
    contains ``out``: another job's input directory may hold outputs (it
    read the files it listed)."""
    ancestors = [out]
    while os.path.dirname(ancestors[-1]) != ancestors[-1]:
        ancestors.append(os.path.dirname(ancestors[-1]))
    for pattern in patterns:
        path = os.path.abspath(os.path.expanduser(pattern))
        if is_glob(path):
            parts = path.split(os.sep)
            if lies_in and any(_glob_matches(a.split(os.sep), parts) for a in ancestors):
                return pattern
            continue
        real = os.path.realpath(path)
        if (lies_in and inside(out, real)) or inside(real, out):
            return pattern
    return _file_inside(files, out)


def _file_inside(files: Iterable[str], out: str) -> str | None:
    """The first local file whose real path lies in ``out``, with one
    ``realpath`` per directory and an ``lstat`` per file: a file that is no
    symbolic link is where its directory really is (a running job's 50,000
    files in 100 directories: 0.55 s with a ``realpath`` each, 0.11 s so)."""
    dirs: dict[str, bool] = {}
    for f in files:
        if storage.is_remote(f):
            continue
        head = os.path.dirname(f)
        hit = dirs.get(head)
        if hit is None:
            hit = dirs[head] = inside(os.path.realpath(head), out)
        if hit or (os.path.islink(f) and inside(os.path.realpath(f), out)):
            return f
    return None


def check_overwrite(path: str, *, inputs: Sequence[str] = (), input_files: Iterable[str] = (),
                    protected: Iterable[str] = (), opts: Mapping[str, str] | None = None,
                    in_use: Iterable[InputsInUse] = (),
                    busy: Iterable[tuple[str, str]] = (), may_replace: MayReplace = None) -> None:
    """Refuse (UnsafeOverwrite) to let ``--overwrite`` delete ``path`` unless
    it is an earlier pytxmr output, or an empty directory, that holds none
    of this job's inputs nor of other jobs' (``in_use``) and lies in none
    of its own, nor in or around a work directory (``protected``), the
    home directory or the root, and is no other user's (``may_replace``
    its owner); first, refuse (OutputsOverlap) one that overlaps another
    job's output (``busy``, see ``refuse_overlap``).

    Made at submission and again just before the deletion: Hadoop never
    deletes an output path, and an overwrite that guesses wrong loses data.
    """
    refuse_overlap(path, busy, resolve=True)
    if storage.is_remote(path):
        fs, where, names, is_object = objectoutput.listing(path, opts or {})
        objectoutput.check_overwrite(path, names, is_object, inputs=inputs, in_use=in_use,
                                     objects=lambda: objectoutput.objects_below(fs, where),
                                     mark=lambda: objectoutput.read_mark(fs, where),
                                     may_replace=may_replace)
        return
    shown = path
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.lexists(path):
        return

    def refuse(why: str) -> UnsafeOverwrite:
        return UnsafeOverwrite(f"refusing to overwrite {shown}: {why}; nothing was deleted")

    if os.path.islink(path):
        raise refuse("it is a symbolic link (give the directory it points to)")
    if not os.path.isdir(path):
        raise refuse("it is not a directory (an output is a directory of part files)")
    real = os.path.realpath(path)
    home = os.path.realpath(os.path.expanduser("~"))
    if real == os.sep or inside(home, real):
        raise refuse("it is the root or the home directory, or holds it")
    work = _work_directory_of(real, protected)
    if work is not None:
        raise refuse(f"it is, holds or lies in the pytxmr work directory {work}")
    overlap = _overlapping_input(real, inputs, input_files)
    if overlap is not None:
        raise refuse(f"it holds, or lies in, the job's input {overlap}")
    for job in in_use:
        overlap = _overlapping_input(real, job.inputs, job.files, lies_in=False)
        if overlap is not None:
            raise refuse(f"it holds {overlap}, an input of {job.whose}")
    names = set(os.listdir(path))
    if not names:
        return
    if not names & {OUTPUT_MARK, SUCCESS}:
        raise refuse(f"it is not a pytxmr output (it has no {OUTPUT_MARK} or {SUCCESS} file)")
    if claimed_elsewhere(path):
        raise refuse("a job is writing it now (a job of another jobtracker, or of another "
                     "`run`)")
    try:
        owned = refuse_foreign_owner(_read_mark(path), may_replace)
    except OSError as e:  # a directory, unreadable...
        raise refuse(f"cannot read its {OUTPUT_MARK}: {e.strerror}") from None
    if owned:
        raise refuse(owned)
    try:
        foreign = foreign_files(_files_below(path))
    except OSError as e:  # a directory it cannot read: rmtree could not either
        raise refuse(f"cannot read {e.filename}: {e.strerror}") from None
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise refuse(f"it holds files pytxmr did not write: {', '.join(foreign[:3])}{more}")


def _output_around(real: str) -> str | None:
    """The pytxmr output that the real directory ``real`` is or lies in."""
    while True:
        if os.path.exists(os.path.join(real, OUTPUT_MARK)):
            return real
        up = os.path.dirname(real)
        if up == real:
            return None
        real = up


def _work_directory_of(real: str, protected: Iterable[str]) -> str | None:
    """The pytxmr work directory (``protected``, and ~/.pytxmr: the
    daemons' default ones and the cluster secret) that the real path
    ``real`` is, holds or lies in; None if none."""
    home = os.path.realpath(os.path.expanduser("~"))
    for work in (*protected, os.path.join(home, ".pytxmr")):
        work = os.path.realpath(work)
        if inside(real, work) or inside(work, real):
            return work
    return None


def refuse_overlap(out: str, busy: Iterable[tuple[str, str]], *, resolve: bool = False) -> None:
    """Refuse (OutputsOverlap) an output that shares, nests in or holds
    another job's (``busy``: whose, output). With ``resolve``, local paths
    are compared where they really are, a symbolic link or ``..`` on the
    way (calls to the file system: in a thread)."""
    def where(p: str) -> str:
        if not resolve or storage.is_remote(p):
            return p
        return os.path.realpath(os.path.expanduser(p))

    mine = where(out)
    for whose, other in busy:
        theirs = where(other)
        if inside(mine, theirs) or inside(theirs, mine):
            raise OutputsOverlap(f"the output {out} overlaps the output {other} of {whose}")


def _lock(f: IO[Any], tries: int = 1) -> bool:
    """Whether ``f``'s lock was taken; False if another holds it (after
    ``tries``: a probe holds it a moment). A file system without locks
    takes any."""
    for n in range(tries):
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
        else:
            return True
        if n + 1 < tries:
            time.sleep(0.02)
    return False


def claim(path: str, job: str) -> IO[Any] | None:
    """The local output ``path``'s mark, held locked while a job of this
    process writes there (``prepare_output_dir`` takes it first): another
    jobtracker's job, or another ``run``, which knows nothing of this one,
    is refused its ``--overwrite`` meanwhile. The lock ends when the file
    is closed, or with this process (a crashed jobtracker holds nothing).
    None for an object store's output (it has no locks: a resumed job reads
    its mark, ``objectoutput.check_mark``, in a thread); OutputTaken when
    another process holds it, or the mark names another job than ``job``
    (which replaced it while this one's was away); OutputGone when the mark
    is gone (a resumed job wrote its parts and ``_SUCCESS`` into whatever
    was there, and emptied its ``_temporary``)."""
    if storage.is_remote(path):
        return None
    try:
        # For writing: NFS emulates flock with fcntl locks, whose exclusive
        # lock needs it.
        f = open(os.path.join(path, OUTPUT_MARK), "r+b")
    except (FileNotFoundError, NotADirectoryError):
        raise OutputGone(f"its output {path} was removed or replaced (its {OUTPUT_MARK} is "
                         f"gone)") from None
    except OSError as e:
        raise OutputTaken(f"its output's {OUTPUT_MARK} cannot be opened in {path} "
                          f"({e.strerror or e})") from None
    try:
        if not _lock(f, tries=5):
            raise OutputTaken(f"another job writes {path} now")
        if written_for_another(f.read().decode("utf-8", "replace"), job):
            raise OutputTaken(f"another job has written {path} since")
    except BaseException:
        f.close()
        raise
    return f


def _read_mark(path: str) -> str:
    """The text of the local output ``path``'s mark ("" for an output
    older than the mark: its ``_SUCCESS`` alone), as ``objectoutput.read_mark``."""
    try:
        with open(os.path.join(path, OUTPUT_MARK), encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def claimed_elsewhere(path: str) -> bool:
    """Whether the local output ``path`` is being written by a job another
    process, or another claim of this one, holds (``claim``)."""
    try:
        with open(os.path.join(path, OUTPUT_MARK), "r+b") as f:  # for writing: see claim
            return not _lock(f)
    except OSError:
        return False


def _files_below(path: str) -> Iterator[str]:
    """Every file under ``path`` (not through symbolic links: ``rmtree``
    removes a link, never what it points to), relative, '/'-separated."""
    def unreadable(e: OSError) -> None:
        raise e

    for top, _, files in os.walk(path, onerror=unreadable):
        for name in files:
            yield os.path.relpath(os.path.join(top, name), path).replace(os.sep, "/")


def refuse_unwritable(path: str) -> None:
    """Refuse (OutputExistsError) an output no job may have, whatever is
    there: an http(s) URL, or a name a store's client reads as a pattern."""
    if storage.scheme(path) in ("http", "https"):
        raise OutputExistsError(f"cannot write the output to {storage.redact(path)}: "
                                "http(s) URLs are inputs only")
    if storage.is_remote(path) and "//" in path.split("://", 1)[1]:
        raise OutputExistsError(
            f"the output {storage.redact(path)} has an empty segment (//), which stores read "
            f"apart (S3 as a key that starts with '/', others as one '/'): name it without")
    if is_glob(path):
        # An object store's client deletes by pattern: the output
        # s3://b/res[12] replaced or cleaned was res1/ and res2/ too; and a
        # multi-step job reads its steps' parts by pattern.
        raise OutputExistsError(
            f"the output {storage.redact(path)} holds *, ? or [, which a store's client and "
            f"a job's later steps read as a pattern: name it without them")


def prepare_output_dir(path: str, overwrite: bool, *, inputs: Sequence[str] = (),
                       input_files: Iterable[str] = (), protected: Iterable[str] = (),
                       opts: Mapping[str, str] | None = None,
                       in_use: Iterable[InputsInUse] = (),
                       busy: Iterable[tuple[str, str]] = (), owner: str = "",
                       may_replace: MayReplace = None, job: str = "") -> IO[Any] | None:
    """Refuse an existing output (as Hadoop does) unless told to replace it,
    and then only an earlier pytxmr output (``check_overwrite``, here again
    right before anything is deleted); refuse, first, one that overlaps
    another job's output however it is spelled (``refuse_overlap``). The
    output's mark names ``owner`` and ``job``. The job's ``claim`` of its
    new output, which it holds until it ends."""
    refuse_unwritable(path)
    refuse_overlap(path, busy, resolve=True)
    if storage.is_remote(path):
        objectoutput.prepare(path, overwrite, inputs=inputs, opts=opts or {}, in_use=in_use,
                             owner=owner, may_replace=may_replace, job=job)
        return None
    try:
        return _prepare_local(path, overwrite, inputs=inputs, input_files=input_files,
                              protected=protected, in_use=in_use, owner=owner,
                              may_replace=may_replace, job=job)
    except (FileNotFoundError, FileExistsError) as e:  # gone or made meanwhile
        if isinstance(e, FileNotFoundError) and e.filename is not None and os.path.abspath(
                e.filename) == os.path.abspath(path) and not os.path.lexists(path):
            # Its own mkdir, in a parent there: the file system makes no
            # directory there (/proc), no other job.
            raise OutputExistsError(f"cannot make the output directory {path}: "
                                    f"{e.strerror}") from None
        raise OutputExistsError(f"the output {path} changed as this job was preparing it "
                                f"({e.strerror}: {e.filename}): another job is making or "
                                f"replacing it now") from None
    except OSError as e:  # a read-only file system, a directory not ours...
        raise OutputExistsError(f"cannot prepare the output {path}: {e.strerror}"
                                + (f": {e.filename}" if e.filename else "")) from None


def _prepare_local(path: str, overwrite: bool, *, inputs: Sequence[str],
                   input_files: Iterable[str], protected: Iterable[str],
                   in_use: Iterable[InputsInUse], owner: str, may_replace: MayReplace,
                   job: str) -> IO[Any]:
    # Before anything is deleted: an output made inside another before
    # these checks existed was emptied, then refused.
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputExistsError(f"the parent directory of the output {path} " + (
            f"is a file: {parent}" if os.path.lexists(parent) else "does not exist"))
    work = _work_directory_of(os.path.join(os.path.realpath(parent), os.path.basename(path)),
                              protected)
    if work is not None and not os.path.lexists(path):  # (check_overwrite refuses one there)
        raise OutputExistsError(f"the output {path} lies in the pytxmr work directory {work}: "
                                f"give an output elsewhere")
    outer = _output_around(os.path.realpath(parent))
    if outer is not None:  # whose --overwrite would then refuse "files pytxmr did not write"
        raise OutputExistsError(f"the output {path} lies in {outer}, the output of an earlier "
                                f"job: give it a place of its own")
    if os.path.lexists(path):
        if not overwrite:
            raise OutputExistsError(
                f"output directory {path} already exists (use --overwrite to replace it)"
            )
        check_overwrite(path, inputs=inputs, input_files=input_files, protected=protected,
                        in_use=in_use, may_replace=may_replace)
        # _SUCCESS first: a deletion cut short (a killed jobtracker) must not
        # leave what looks like a whole output; the mark last: nor one no
        # --overwrite takes again.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, SUCCESS))
        for name in os.listdir(path):
            target = os.path.join(path, name)
            if name == OUTPUT_MARK:
                continue
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        shutil.rmtree(path)
    os.makedirs(os.path.join(path, TEMPORARY))
    # Locked before it is in place (the lock goes with the file): another
    # job's check never finds it unlocked.
    made = os.path.join(path, TEMPORARY, OUTPUT_MARK)
    mark = open(made, "w+", encoding="utf-8")
    _lock(mark)
    mark.write(mark_text("directory", owner, job))
    mark.flush()
    os.replace(made, os.path.join(path, OUTPUT_MARK))
    return mark


def attempt_path(output: str, attempt_id: str, partition: int, work_dir: str = "") -> str:
    """Where a reduce attempt writes its part file before commit: beside the
    output, or, for an object store, in the attempt's ``work_dir``."""
    if storage.is_remote(output):
        return os.path.join(work_dir, part_name(partition))
    return os.path.join(output, TEMPORARY, attempt_id, part_name(partition))


def commit_part(output: str, attempt_id: str, partition: int, work_dir: str = "",
                opts: Mapping[str, str] | None = None,
                marked: tuple[str, str] | None = None) -> str:
    """Move (or upload) an attempt's part file into place; the final path.
    An upload first reads the mark of ``marked``'s output (the job's, which
    a step's ``output`` lies in) for its job: a part of a job whose prefix
    another job took (another cluster's ``--overwrite``) went over that
    job's parts (``OutputTaken`` now)."""
    if storage.is_remote(output):
        if marked is not None:
            objectoutput.check_mark(marked[0], opts or {}, marked[1])
        name = part_name(partition)
        objectoutput.upload_part(output, attempt_path(output, attempt_id, partition, work_dir),
                                 name, opts or {})
        return storage.join(output, name)
    final = os.path.join(output, part_name(partition))
    os.replace(attempt_path(output, attempt_id, partition), final)
    shutil.rmtree(os.path.join(output, TEMPORARY, attempt_id), ignore_errors=True)
    return final


def discard_attempt(output: str, attempt_id: str, top: str | None = None) -> None:
    """Remove what an attempt that did not commit left beside a local
    output. With ``top``, the job's output (the job has ended), the
    ``_temporary`` directories it left empty go too: an attempt that began
    its part as its job ended made them again after the job's end had
    removed them."""
    if storage.is_remote(output):
        return
    here = os.path.join(output, TEMPORARY, attempt_id)
    shutil.rmtree(here, ignore_errors=True)
    if top is None:
        return
    last = os.path.join(top, TEMPORARY)
    directory = os.path.dirname(here)
    while directory.startswith(last):
        try:
            os.rmdir(directory)  # only an empty one
        except FileNotFoundError:
            pass
        except OSError:
            return
        directory = os.path.dirname(directory)


def withdraw_part(output: str, partition: int, opts: Mapping[str, str] | None,
                  marked: tuple[str, str]) -> None:
    """Remove a part an attempt uploaded as its job ended (killed, failed):
    the job's abort, done meanwhile, did not see it, and alone it looks like
    a result; only while the prefix is still the job's (``marked``, as for
    ``commit_part``)."""
    objectoutput.check_mark(marked[0], opts or {}, marked[1])
    objectoutput.remove_part(output, part_name(partition), opts or {})


def finish_output(output: str, opts: Mapping[str, str] | None = None, job_id: str = "",
                  records: Mapping[int, int] | None = None, job: str = "") -> None:
    """Remove the temporary area and mark the job done with ``_SUCCESS``;
    in an object store, ``_SUCCESS`` lists the parts (``records``: the
    records of each partition's committed part), once the prefix's mark
    is found to name ``job`` still (a local output is held by ``claim``)."""
    if storage.is_remote(output):
        objectoutput.finish(output, opts or {}, job_id,
                            {part_name(p): n for p, n in (records or {}).items()}, job)
        return
    shutil.rmtree(os.path.join(output, TEMPORARY), ignore_errors=True)
    with open(os.path.join(output, SUCCESS), "w"):
        pass


def abort_unfinished(output: str, opts: Mapping[str, str] | None, job: str) -> bool:
    """``abort_output``, unless the job finished (its ``_SUCCESS`` is there:
    a result, whatever else went wrong) or the output is no longer the
    job's (``job``'s): another job's now (another jobtracker's, written
    while this one was down), or its mark is gone (removed, and whatever
    is there now someone else's); whether it aborted."""
    if storage.is_remote(output):
        fs, where, names, _ = objectoutput.listing(output, opts)
        finished = names is None or SUCCESS in names or OUTPUT_MARK not in names or (
            written_for_another(objectoutput.read_mark(fs, where), job))
    else:
        try:
            taken = (not os.path.exists(os.path.join(output, OUTPUT_MARK))
                     or written_for_another(_read_mark(output), job))
        except OSError:
            taken = False
        finished = (os.path.exists(os.path.join(output, SUCCESS)) or taken
                    or claimed_elsewhere(output))
    if not finished:
        abort_output(output, opts)
    return not finished


def abort_output(output: str, opts: Mapping[str, str] | None = None, job: str = "") -> None:
    """After a failed or killed job: remove every attempt's files, the
    committed part files too (alone, they would look like a result); in an
    object store, only while the prefix's mark names ``job``; nothing of
    an output with the job's ``_SUCCESS`` (a result).

    The directory itself stays, empty, as Hadoop leaves it: resubmit with
    ``--overwrite``. ``_temporary`` goes first, so that an attempt still
    renaming its part file after this fails instead of leaving one.
    """
    if storage.is_remote(output):
        objectoutput.abort(output, opts or {}, job)
        return
    if os.path.exists(os.path.join(output, SUCCESS)):
        # The job had finished it, its end not journaled (a full disk): it
        # was emptied under its _SUCCESS.
        return
    shutil.rmtree(os.path.join(output, TEMPORARY), ignore_errors=True)
    try:
        names = os.listdir(output)
    except OSError:
        return
    for name in names:
        if name.startswith("part-"):
            try:
                os.unlink(os.path.join(output, name))
            except OSError:
                pass
