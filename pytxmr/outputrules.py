"""What makes a directory or prefix a pytxmr output, for ``output`` (local
directories) and ``objectoutput`` (object-store prefixes) alike: its names
and the refusals of an output that exists."""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
#: Written into an output when pytxmr creates it, and kept: the sign that
#: ``--overwrite`` may remove it. (``_SUCCESS`` is one too, for outputs
#: written before the mark existed.) Its leading '_' keeps it out of a
#: later job's inputs, as Hadoop's readers skip ``_SUCCESS``.
OUTPUT_MARK = "_PYTXMR_OUTPUT"
_PART_NAME = re.compile(r"part-\d{5,}\Z")


class OutputExistsError(Exception):
    """The output exists and --overwrite was not given."""


class UnsafeOverwrite(OutputExistsError):
    """--overwrite was given for a path pytxmr must not delete."""


class OutputTaken(Exception):
    """Another job writes the output now, or has written it since."""


class OutputGone(OutputTaken):
    """The output's mark is gone: the output was removed, or replaced by
    what is no pytxmr output."""


class OutputsOverlap(ValueError):
    """A job's output would share, nest in or hold another job's."""


class InputsInUse(NamedTuple):
    """The inputs of another job, running or being admitted (its patterns,
    and the files they matched): no ``--overwrite`` deletes them."""

    #: Whose they are, for a refusal: "the running job job_..._0001".
    whose: str
    inputs: Sequence[str]
    files: Sequence[str]


#: Whether the submitter may replace an output of this owner (``User.may_control``
#: under ``--users``); None: anyone may (a cluster of one secret's holders).
MayReplace = Optional[Callable[[str], bool]]

def mark_text(what: str, owner: str, job: str = "") -> str:
    """The text of an output's mark: what it says to a reader, the owner
    of the job that made it (a user's name; none if unknown), and that
    job (a restarted jobtracker resumes a job into its own output only)."""
    return (f"This {what} is the output of a pytxmr job: `--overwrite` may replace it.\n"
            f"pytxmr refuses to overwrite a {what} without it.\n"
            + (f"owner: {owner}\n" if owner else "") + (f"job: {job}\n" if job else ""))


def mark_field(text: str, name: str) -> str:
    """A field (``owner``, ``job``) of a mark's text; "" if it has none."""
    return next((line[len(name) + 2:] for line in text.splitlines()
                 if line.startswith(f"{name}: ")), "")


def job_mark(job_id: str, token: bytes) -> str:
    """The job as its output's mark names it: its id, which another
    jobtracker's job may have too (ids are times and counts), and a hash of
    its random shuffle token, which no other's has, and which its journal
    keeps across restarts (wherever the jobtracker runs then)."""
    return f"{job_id} {hashlib.sha256(token).hexdigest()[:16]}"


def written_for_another(mark: str, job: str) -> bool:
    """Whether the mark's text names a job other than ``job`` (its id, and
    its token's hash if both say one: ``job_mark``)."""
    theirs, mine = mark_field(mark, "job").split(), job.split()
    if not theirs:  # an output older than the job field
        return False
    return theirs[0] != mine[0] or len(theirs) > 1 and len(mine) > 1 and theirs[1] != mine[1]


def refuse_foreign_owner(text: str, may_replace: MayReplace) -> str | None:
    """Why the output whose mark says ``text`` is not the submitter's to
    replace; None if it is."""
    if may_replace is None:
        return None
    owner = mark_field(text, "owner")
    if not owner or may_replace(owner):
        return None
    return f"it is the output of a job of {owner}: only they or an administrator may replace it"


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def is_part_name(name: str) -> bool:
    return _PART_NAME.match(name) is not None


def foreign_files(files: Iterable[str]) -> list[str]:
    """The files (objects) an output holds that pytxmr did not write, as
    paths relative to it, '/'-separated, sorted: anything but its marks and
    part files, and below ``_temporary`` anything but part files (attempts'
    and steps' directories hold only those)."""
    foreign = []
    for rel in files:
        top, _, rest = rel.partition("/")
        if rest:
            ours = top == TEMPORARY and is_part_name(rest.rpartition("/")[2])
        else:
            ours = top in (OUTPUT_MARK, SUCCESS) or is_part_name(top)
        if not ours:
            foreign.append(rel)
    return sorted(foreign)
