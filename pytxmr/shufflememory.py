"""The tasktracker's shuffle memory: fetched runs kept in RAM, up to a budget.

A reduce attempt's fetched runs go to files in a tmpfs directory (Linux
``/dev/shm``) while they fit in the worker's budget, and to the attempt's
work dir on disk beyond it. The reduce child, another process, reads both
kinds of file alike, without a copy. Pure logic, no Twisted: the tasktracker
decides where each fetch goes with ``ShuffleMemory.place``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from typing import IO

__all__ = [
    "DEFAULT_BUDGET",
    "SHM_ROOT",
    "ShuffleMemory",
    "claim_memory_dir",
    "default_budget",
    "free_space",
    "memory_dir",
    "remove_memory_dir",
    "remove_orphans",
]

#: Where tmpfs is on Linux: RAM that processes share through files.
SHM_ROOT = "/dev/shm"
#: The budget unless configured: this, or half of the tmpfs's free space if less.
DEFAULT_BUDGET = 256 << 20
#: Left free on the tmpfs beyond a run (its blocks, other users of /dev/shm).
_SLACK = 1 << 20
_LOCK = ".lock"
#: The absolute work dir this memory dir belongs to (for cleaning up after
#: a crashed daemon whose work dir is gone).
_OWNER = ".workdir"
_PREFIX = "pytxmr-"


class ShuffleMemory:
    """The budget of run files in a directory: reserved when a run is
    placed there, given back when its file is removed.

    ``directory`` None or ``budget`` 0 keeps every run on disk.
    ``free_space`` (bytes free on the directory's file system, asked at
    each placement) keeps a run out of a tmpfs that others filled meanwhile.
    """

    def __init__(self, directory: str | None, budget: int,
                 free_space: Callable[[], int] | None = None) -> None:
        if budget < 0:
            raise ValueError(f"a shuffle memory budget cannot be negative: {budget}")
        self.directory = directory
        self.budget = budget if directory is not None else 0
        self._free_space = free_space
        self._sizes: dict[str, int] = {}
        #: Placed runs still being written: the file system's free space
        #: does not show them yet.
        self._unwritten: dict[str, int] = {}
        self.used = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def available(self) -> int:
        return self.budget - self.used

    def place(self, name: str, length: int) -> str | None:
        """The path in memory where a run of ``length`` bytes called ``name``
        goes, its length reserved; None if it does not fit (then it goes
        to disk)."""
        if self.directory is None or not self.enabled or length > self.available:
            return None
        if self._free_space is not None:
            try:
                free = self._free_space()
            except OSError:  # the directory was removed (e.g. logind's RemoveIPC)
                return None
            if length + _SLACK + sum(self._unwritten.values()) > free:
                return None
        path = os.path.join(self.directory, name)
        if path in self._sizes:
            raise ValueError(f"{name} is already in the shuffle memory")
        self._sizes[path] = length
        self._unwritten[path] = length
        self.used += length
        return path

    def written(self, path: str) -> None:
        """The run at ``path`` is whole on the file system (whose free
        space now counts it); nothing if it is not one of ours."""
        self._unwritten.pop(path, None)

    def holds(self, path: str) -> bool:
        return path in self._sizes

    def release(self, path: str) -> None:
        """Remove the run file at ``path`` and give its length back (nothing
        if ``path`` is not one of ours, or was released already)."""
        length = self._sizes.pop(path, None)
        if length is None:
            return
        self._unwritten.pop(path, None)
        self.used -= length
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def release_all(self) -> None:
        for path in list(self._sizes):
            self.release(path)


def memory_dir(workdir: str, root: str = SHM_ROOT) -> str:
    """The memory directory of the tasktracker whose work dir is ``workdir``:
    named after it and the user, so that a restarted daemon finds what its
    crashed predecessor left there."""
    digest = hashlib.sha256(os.path.abspath(workdir).encode("utf-8", "surrogateescape"))
    return os.path.join(root, f"{_PREFIX}{os.getuid()}-{digest.hexdigest()[:20]}")


def claim_memory_dir(path: str, workdir: str) -> IO[str]:
    """Create or reuse the directory ``path``, lock it for this process (the
    lock dies with it) and empty it of a crashed predecessor's runs. Returns
    the lock, to keep open while the directory is used.

    Raises OSError when the directory cannot be used: its parent is missing
    or read-only, it is not a private directory of this user (another user
    may create names in a shared /dev/shm), or another live daemon of the
    same work dir holds it.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory of this user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    fd = os.open(os.path.join(path, _LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise OSError(f"{path} is used by another tasktracker of the same work dir") from None
    try:
        _empty(path)
        with open(os.path.join(path, _OWNER), "w", encoding="utf-8",
                  errors="surrogateescape") as f:
            f.write(os.path.abspath(workdir))
    except OSError:
        lock.close()
        raise
    return lock


def remove_memory_dir(path: str, lock: IO[str] | None) -> None:
    """Remove the directory (a clean stop), then let go of its lock."""
    shutil.rmtree(path, ignore_errors=True)
    if lock is not None:
        lock.close()


def remove_orphans(root: str = SHM_ROOT) -> list[str]:
    """Remove this user's memory directories that no live daemon holds and
    whose work dir is gone (a crashed daemon that will never restart there:
    tmpfs would keep its runs in RAM until a reboot). Returns their paths."""
    prefix = f"{_PREFIX}{os.getuid()}-"
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            with open(os.path.join(path, _OWNER), encoding="utf-8",
                      errors="surrogateescape") as f:
                workdir = f.read()
            if not workdir or os.path.exists(workdir):
                continue
            fd = os.open(os.path.join(path, _LOCK), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "r+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def free_space(path: str) -> int:
    """Bytes an unprivileged user may still write on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def default_budget(free: int) -> int:
    """DEFAULT_BUDGET, or half of the tmpfs's free space if that is less."""
    return max(0, min(DEFAULT_BUDGET, free // 2))


def _empty(path: str) -> None:
    with os.scandir(path) as it:
        entries = [e for e in it if e.name != _LOCK]
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
