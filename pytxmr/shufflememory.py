"""The tasktracker's shuffle memory: fetched runs kept in RAM, up to a budget.

A reduce attempt's fetched runs go to files in a tmpfs directory (Linux
``/dev/shm``) while they fit in the worker's budget, and to the attempt's
work dir on disk beyond it. The reduce child, another process, reads both
kinds of file alike, without a copy. Pure logic, no Twisted: the worker's
``ShuffleMemory`` is the budget, and each reduce attempt's ``RunPlacement``
(used by ``tasktracker.fetch``) decides where each of its runs lands.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from types import TracebackType
from typing import IO, BinaryIO

from .trees import empty_directory
from .sizes import free_space

__all__ = [
    "DEFAULT_BUDGET",
    "SHM_ROOT",
    "Landing",
    "RunPlacement",
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
#: The absolute work dir this memory dir belongs to: what an operator
#: looking at /dev/shm wants to know (the directory is named by its hash).
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


class RunPlacement:
    """Where one reduce attempt's fetched runs land: in the worker's shuffle
    memory while its budget allows, else in the attempt's dir on disk. The
    one owner of the attempt's memory: it knows which runs are there and
    gives them back, one by one or all at once.

    ``memory`` is asked at each placement: the service swaps the worker's
    ``ShuffleMemory`` when it claims, or gives up, its tmpfs directory.
    """

    def __init__(self, memory: Callable[[], ShuffleMemory], work_dir: str, prefix: str) -> None:
        self._memory = memory
        self.work_dir = work_dir
        #: Names runs in the memory directory, which every attempt of the
        #: worker shares.
        self._prefix = prefix
        self._in_memory: set[str] = set()
        self.closed = False

    def place(self, name: str, length: int, *, memory: bool = True) -> str:
        """The path a run called ``name`` of ``length`` bytes goes to: in
        memory (its length reserved) if ``memory`` and the budget allow,
        else on disk."""
        path = None
        if memory and not self.closed:
            path = self._memory().place(f"{self._prefix}-{name}", length)
        if path is None:
            return os.path.join(self.work_dir, name)
        self._in_memory.add(path)
        return path

    def landing(self, name: str, *, memory: bool = True) -> Landing:
        """The destination of one try at fetching the run ``name``."""
        return Landing(self, name, memory)

    def in_memory(self, path: str) -> bool:
        return path in self._in_memory

    @property
    def memory_paths(self) -> frozenset[str]:
        return frozenset(self._in_memory)

    def written(self, path: str) -> None:
        """The run at ``path`` is whole (the tmpfs's free space now shows it)."""
        if path in self._in_memory:
            self._memory().written(path)

    def discard(self, path: str) -> None:
        """Remove a run that will not be merged (a failed or superseded
        fetch). A path in memory is the budget's to remove: once
        ``release`` gave it back, the name may belong to a new reservation."""
        if path in self._in_memory:
            self._in_memory.discard(path)
            self._memory().release(path)
        elif os.path.dirname(path) == self.work_dir and os.path.lexists(path):
            os.unlink(path)

    def release(self) -> None:
        """Give back the memory of every run (the reduce child is done with
        them, or the attempt ended)."""
        memory = self._memory()
        for path in self._in_memory:
            memory.release(path)
        self._in_memory.clear()

    def close(self) -> None:
        """The attempt ended: release everything, and place no more run in
        memory (a fetch that ends late must not take the budget back)."""
        self.closed = True
        self.release()


class Landing:
    """Where one try at fetching a run writes it. The shuffle transport
    calls it with the run's length, from the reply header, and writes to the
    file it returns; a map output of this very worker is linked to it
    instead. ``path`` stays None until either happened."""

    def __init__(self, placement: RunPlacement, name: str, memory: bool) -> None:
        self._placement = placement
        self._name = name
        self._memory = memory
        self._file: BinaryIO | None = None
        self.path: str | None = None
        #: Where the run was placed (kept after a discard, which the
        #: fetcher's caller decides on from it).
        self.in_memory = False

    def __call__(self, length: int) -> BinaryIO:
        self.path = self._placement.place(self._name, length, memory=self._memory)
        self.in_memory = self._placement.in_memory(self.path)
        self._file = open(self.path, "wb")
        return self._file

    def link(self, source: str) -> str:
        """The path to read a map output of this worker from: ``source``
        hard-linked into the attempt's dir, so that a re-run of the map here
        (which replaces the store's file) cannot pull it from under the
        reduce; ``source`` itself on a file system without hard links."""
        path = self._placement.place(self._name, 0, memory=False)
        try:
            os.link(source, path)
        except OSError:
            return source
        self.path = path
        return path

    def __enter__(self) -> Landing:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the file the transport wrote; whole unless it failed."""
        if self._file is None:
            return
        file, self._file = self._file, None
        file.close()
        if kind is None and self.path is not None:
            self._placement.written(self.path)

    def discard(self) -> None:
        """Remove what this try wrote (nothing if it wrote nothing)."""
        if self.path is not None:
            self._placement.discard(self.path)


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
        empty_directory(path, keep=lambda entry, dir_fd: entry.name == _LOCK)
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
    """Remove this user's memory directories that no live daemon holds: a
    crashed (SIGKILLed) daemon's, whose runs tmpfs would keep in RAM until a
    reboot. Nothing in them is of use any more: a daemon restarted on the
    same work dir is a new worker, which empties its directory anyway.
    Returns their paths."""
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


def default_budget(free: int) -> int:
    """DEFAULT_BUDGET, or half of the tmpfs's free space if that is less."""
    return max(0, min(DEFAULT_BUDGET, free // 2))


