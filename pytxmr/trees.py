"""Removing the directory trees tasks work in, whatever the tasks left there.

A task may leave a tree its owner cannot delete as it is: an unpacked
archive or a Go module cache holds directories of mode 0555, and a file
in such a directory cannot be unlinked. The owner may make them writable
again, and a tasktracker does, rather than leave them on its disk for
ever, or fail the next map of a reused process on them.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
from typing import Callable

__all__ = ["empty_directory", "links_into", "remove_tree"]


def remove_tree(path: str, ignore_errors: bool = False, dir_fd: int | None = None) -> None:
    """``shutil.rmtree``, made writable first where a directory refused."""
    try:
        _rmtree(path, False, dir_fd)
        return
    except PermissionError:
        _make_writable(path, dir_fd)
    except OSError:
        if not ignore_errors:
            raise
    _rmtree(path, ignore_errors, dir_fd)


def _rmtree(path: str, ignore_errors: bool, dir_fd: int | None) -> None:
    if dir_fd is None:
        shutil.rmtree(path, ignore_errors=ignore_errors)
    elif sys.version_info >= (3, 11):
        shutil.rmtree(path, ignore_errors=ignore_errors, dir_fd=dir_fd)
    else:  # rmtree takes no dir_fd before 3.11: the descriptor's own directory
        shutil.rmtree(f"/proc/self/fd/{dir_fd}/{path}", ignore_errors=ignore_errors)


def _make_writable(path: str, dir_fd: int | None) -> None:
    """Give the owner read, write and search of every directory under
    ``path`` (and itself), never through a symbolic link."""
    _own_directory(path, dir_fd)
    for _, dirs, _, root_fd in os.fwalk(path, dir_fd=dir_fd):
        for name in dirs:
            # Before os.fwalk lists it: a directory of mode 0 cannot be.
            _own_directory(name, root_fd)


def _own_directory(path: str, dir_fd: int | None) -> None:
    """Give the owner read, write and search of the directory ``path``.
    Opened first, never through a symbolic link, and changed through that
    descriptor: by its name, a link a task's leftover process put in its
    place after the look would have been followed, to any directory the
    daemon may change."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return  # not a directory, or gone: the removal says what it could not do
    try:
        st = os.fstat(fd)
        if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            wanted = stat.S_IMODE(st.st_mode) | stat.S_IRWXU
            try:
                # fchmod takes no O_PATH descriptor; its /proc link is that inode.
                os.chmod(f"/proc/self/fd/{fd}", wanted)
            except FileNotFoundError:
                # No /proc (a container without it): by its name, as before.
                # Tasks run as the daemon's user: a link swapped in leads to
                # nothing they could not change themselves.
                os.chmod(path, wanted, dir_fd=dir_fd)
    except OSError:
        pass  # not ours: the removal says what it could not do
    finally:
        os.close(fd)


#: What ``empty_directory`` spares: an entry of the directory, listed by
#: its descriptor (``entry.name`` is relative to the second argument).
Keep = Callable[[os.DirEntry[str], int], bool]


def links_into(directory: str) -> Keep:
    """An ``empty_directory`` keep: the symlinks into ``directory`` by the
    base names of their targets (a task directory's links to its job's
    shipped files); not one a task made there under another name."""
    prefix = directory.rstrip(os.sep) + os.sep

    def keep(entry: os.DirEntry[str], dir_fd: int) -> bool:
        if not entry.is_symlink():
            return False
        target = os.path.normpath(os.readlink(entry.name, dir_fd=dir_fd))
        return target.startswith(prefix) and os.path.basename(target) == entry.name

    return keep


def empty_directory(path: str, keep: Keep | None = None) -> None:
    """Delete what ``path`` holds but the entries ``keep`` spares:
    subdirectories with their trees, anything else (a symlink too) unlinked,
    never followed. A ``path`` that is no longer a directory (a task made
    its working directory a symbolic link, to files of its owner's
    elsewhere, which were deleted) is made an empty one again.

    The directory is opened once, not through a link, and emptied through
    that descriptor: should a process the task left running swap it for a
    link meanwhile, what the link leads to is not touched."""
    try:
        fd = _open_directory(path)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        os.unlink(path)
        os.mkdir(path)
        return
    try:
        st = os.fstat(fd)
        if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:  # a task left it read-only
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        with os.scandir(fd) as it:
            entries = [e for e in it if keep is None or not keep(e, fd)]
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.name, dir_fd=fd)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)


def _open_directory(path: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except PermissionError:  # a task left it unreadable
        _own_directory(path, None)
        return os.open(path, flags)
