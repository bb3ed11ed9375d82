"""Job output: the text forms of records and the atomic commit of part files.

A reduce attempt writes ``OUTPUT/_temporary/<attempt>/part-NNNNN``; only the
attempt the jobtracker allows to commit renames it to ``OUTPUT/part-NNNNN``
(a rename within one file system is atomic), and ``_SUCCESS`` is written
when every part is in. A reader of OUTPUT therefore never sees a partial or
duplicated part file.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import sys
from typing import Any, Callable

TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
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


class OutputExistsError(Exception):
    """The output directory exists and --overwrite was not given."""


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot write {type(obj).__qualname__} as JSON")


def _json(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, default=_json_default)
    except ValueError:  # an int beyond 4300 digits
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return json.dumps(obj, ensure_ascii=False, default=_json_default)
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
    return _json(obj)


def text_line(key: Any, value: Any) -> str:
    kt, vt = type(key), type(value)
    if kt is str and (vt is int or vt is str):
        # A word count's lines: formatted at once, a fifth of the per-key
        # cost of a reduce.
        try:
            return f"{key}\t{value}\n"
        except ValueError:  # an int beyond 4300 digits
            pass
    return f"{to_text(key)}\t{to_text(value)}\n"


def json_line(key: Any, value: Any) -> str:
    return _json([key, value]) + "\n"


FORMATTERS: dict[str, Callable[[Any, Any], str]] = {"text": text_line, "jsonl": json_line}


def prepare_output_dir(path: str, overwrite: bool) -> None:
    """Refuse an existing output (as Hadoop does) unless told to replace it."""
    if os.path.lexists(path):
        if not overwrite:
            raise OutputExistsError(
                f"output directory {path} already exists (use --overwrite to replace it)"
            )
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputExistsError(f"the parent directory of the output {path} does not exist")
    os.makedirs(os.path.join(path, TEMPORARY))


def attempt_path(output: str, attempt_id: str, partition: int) -> str:
    """Where a reduce attempt writes its part file before commit."""
    return os.path.join(output, TEMPORARY, attempt_id, part_name(partition))


def commit_part(output: str, attempt_id: str, partition: int) -> str:
    """Move an attempt's part file into place; returns the final path."""
    final = os.path.join(output, part_name(partition))
    os.replace(attempt_path(output, attempt_id, partition), final)
    shutil.rmtree(os.path.join(output, TEMPORARY, attempt_id), ignore_errors=True)
    return final


def finish_output(output: str) -> None:
    """Remove the temporary area and mark the job done with ``_SUCCESS``."""
    shutil.rmtree(os.path.join(output, TEMPORARY), ignore_errors=True)
    with open(os.path.join(output, SUCCESS), "w"):
        pass


def abort_output(output: str) -> None:
    """After a failed or killed job: remove every attempt's files, the
    committed part files too (alone, they would look like a result).

    The directory itself stays, empty, as Hadoop leaves it: resubmit with
    ``--overwrite``. ``_temporary`` goes first, so that an attempt still
    renaming its part file after this fails instead of leaving one.
    """
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
