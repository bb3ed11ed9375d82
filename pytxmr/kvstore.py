"""The tasktracker's index of finished map outputs, by (job, map, partition).

One KeyValueStore per tasktracker, shared by all jobs. Map attempts write their
output under the job's work dir (a file of its own, or a stretch of a pack
file that a task process shares among its small outputs) and report where
each partition's segment lies; the store remembers it so the shuffle server
(pytxmr.shuffle) can stream it without decoding. Pure Python: nothing here
imports Twisted.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any

from .trees import remove_tree

__all__ = [
    "KeyValueStore",
    "check_table",
    "delete_paths",
    "valid_job_id",
]

# Job ids become path components and appear in shuffle requests: keep them
# boring enough that no id can name a parent directory or a hidden file.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# Written by startup_cleanup; its absence on a non-empty root means the
# directory is not ours and must not be emptied (a mistyped --work-dir
# pointing at $HOME should fail, not delete it).
_MARKER = ".pytxmr-kvstore"


def valid_job_id(job_id: object) -> bool:
    """Whether job_id is a str safe to use as a directory name."""
    return (
        isinstance(job_id, str)
        and _JOB_ID_RE.fullmatch(job_id) is not None
        and ".." not in job_id
    )


def _check_job_id(job_id: str) -> None:
    if not valid_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_table(table: Any, data_path: str, data_size: int) -> tuple[tuple[int, int], ...]:
    """A map attempt's table of its segments, one ``[offset, length,
    records]`` per partition, as (offset, length) pairs.

    Raises ValueError (naming the file) if it is not such a list or if a
    segment lies beyond the end of the data file.
    """
    if not isinstance(table, (list, tuple)):
        raise ValueError(f"{data_path}: the table of segments must be a list")
    segments = []
    for i, entry in enumerate(table):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3
                and all(map(_is_count, entry))):
            raise ValueError(f"{data_path}: partition {i} needs non-negative int "
                             f"offset, length, records")
        offset, length, _ = entry
        if offset + length > data_size:
            raise ValueError(f"{data_path}: partition {i} ends at {offset + length}, "
                             f"beyond the {data_size}-byte data file")
        segments.append((offset, length))
    return tuple(segments)


@dataclass(frozen=True)
class _MapOutput:
    data_path: str
    segments: tuple[tuple[int, int], ...]
    #: In a pack that a task process appends its maps' outputs to.
    packed: bool = False


@dataclass
class _Job:
    token: bytes
    work_dir: str
    maps: dict[int, _MapOutput]


class KeyValueStore:
    """Finished map outputs of every job this tasktracker runs.

    Methods do small, blocking file-system work (the size of a data file,
    renaming a job's tree); deleting a job's files is ``delete_paths``, apart.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._jobs: dict[str, _Job] = {}

    def startup_cleanup(self) -> None:
        """Delete what a crashed previous run left under root, and create root.

        Raises ValueError if root exists, is not empty and was not created by
        a KeyValueStore (its marker file is missing).
        """
        self._jobs.clear()
        if os.path.lexists(self.root) and not os.path.isdir(self.root):
            raise ValueError(f"{self.root} exists and is not a directory")
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        with os.scandir(self.root) as it:
            entries = list(it)
        names = {e.name for e in entries}
        if names and _MARKER not in names:
            raise ValueError(
                f"refusing to empty {self.root}: not empty and not a pytxmr store "
                f"(no {_MARKER} file); choose an empty or new directory"
            )
        for entry in entries:
            if entry.name == _MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path, ignore_errors=True)
            else:
                _unlink_quietly(entry.path)
        with open(os.path.join(self.root, _MARKER), "w", encoding="utf-8") as f:
            f.write("Owned by a pytxmr tasktracker; emptied at each start.\n")

    def add_job(self, job_id: str, token: bytes) -> str:
        """Register a job and its shuffle token; create and return its work dir.

        Registering the same job again with the same token is a no-op (an
        init retried after a reconnect); with another token it is a ValueError.
        """
        _check_job_id(job_id)
        if not isinstance(token, bytes) or not token:
            raise ValueError("the shuffle token must be non-empty bytes")
        job = self._jobs.get(job_id)
        if job is not None:
            if job.token != token:
                raise ValueError(f"job {job_id} is already registered with another token")
            os.makedirs(job.work_dir, mode=0o700, exist_ok=True)
            return job.work_dir
        work_dir = os.path.join(self.root, job_id)
        os.makedirs(work_dir, mode=0o700, exist_ok=True)
        self._jobs[job_id] = _Job(token=token, work_dir=work_dir, maps={})
        return work_dir

    def job_dir(self, job_id: str) -> str:
        """The work dir of a registered job (KeyError if unknown)."""
        return self._job(job_id).work_dir

    def add_map_output(self, job_id: str, map_id: int, data_path: str, table: Any,
                       packed: bool = False) -> None:
        """Index a finished map attempt's output: its data file and its
        table of segments (see ``check_table``); ``packed``: in a pack,
        which its process may append the next map's output to.

        Replaces an earlier output of the same map (a re-executed map) and
        deletes the earlier file, unless other outputs share it or it is a
        pack (deleted with the job: its process may be writing the next
        output to it, which then named a file gone). On an invalid table,
        raises ValueError and keeps the earlier output.
        """
        job = self._job(job_id)
        if not _is_count(map_id):
            raise ValueError(f"map id must be a non-negative int, not {map_id!r}")
        data_path = os.path.abspath(data_path)
        if os.path.dirname(data_path) != job.work_dir:
            raise ValueError(f"{data_path}: a map output outside the job's directory")
        segments = check_table(table, data_path, os.path.getsize(data_path))
        old = job.maps.get(map_id)
        job.maps[map_id] = _MapOutput(data_path, segments, packed)
        if old is not None and not old.packed and old.data_path != data_path and not any(
                output.data_path == old.data_path for output in job.maps.values()):
            _unlink_quietly(old.data_path)

    def lookup(self, job_id: str, map_id: int, partition: int) -> tuple[str, int, int]:
        """Where partition's segment of a map output lives: (path, offset, length)."""
        job = self._job(job_id)
        output = job.maps.get(map_id) if isinstance(map_id, int) else None
        if output is None:
            raise KeyError(f"unknown map {map_id!r} of job {job_id}")
        n = len(output.segments)
        if not (isinstance(partition, int) and 0 <= partition < n):
            raise KeyError(f"partition {partition!r} out of range: map {map_id} has {n}")
        offset, length = output.segments[partition]
        return output.data_path, offset, length

    def token(self, job_id: str) -> bytes:
        """The job's shuffle token (KeyError if unknown)."""
        return self._job(job_id).token

    def has_job(self, job_id: str) -> bool:
        return job_id in self._jobs

    def jobs(self) -> list[str]:
        """Ids of the registered jobs, sorted."""
        return sorted(self._jobs)

    def remove_job(self, job_id: str) -> list[str]:
        """Forget a job at once and move its work dir aside; return the paths
        to delete (``delete_paths``). A job of thousands of maps takes long
        to delete, seconds on a busy disk: a caller on a reactor thread
        deletes them in a thread.

        Idempotent: an unknown (but valid) job id still has its directory
        removed, if any. Open readers of its files keep reading (POSIX unlink).
        """
        _check_job_id(job_id)
        self._jobs.pop(job_id, None)
        work_dir = os.path.join(self.root, job_id)
        if not os.path.isdir(work_dir):
            return []
        # Aside under a name no job has (ids start with a letter or a digit),
        # so that the same job id may be registered again now.
        aside = os.path.join(self.root, f".removed-{job_id}-{os.urandom(4).hex()}")
        os.rename(work_dir, aside)
        return [aside]

    def _job(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except (KeyError, TypeError):
            raise KeyError(f"unknown job {job_id!r}") from None


def delete_paths(paths: list[str]) -> None:
    """Delete what ``KeyValueStore.remove_job`` set aside, as much of it as
    can go; an OSError then names what stays (a file a task made
    immutable), for the log."""
    left = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if os.path.lexists(path):
            left.append(path)
    if left:
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise OSError(f"{left[0]}{more} could not be deleted (a file in it made immutable, "
                      "or owned by another user?)")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
