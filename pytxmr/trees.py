"""Removing the directory trees tasks work in, whatever the tasks left there.

A task may leave a tree its owner cannot delete as it is: an unpacked
archive or a Go module cache holds directories of mode 0555, and a file
in such a directory cannot be unlinked. The owner may make them writable
again, and a tasktracker does, rather than leave them on its disk for
ever, or fail the next map of a reused process on them.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Callable

__all__ = ["empty_directory", "links_into", "remove_tree"]


def remove_tree(path: str, ignore_errors: bool = False) -> None:
    """``shutil.rmtree``, made writable first where a directory refused."""
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        _make_writable(path)
    except OSError:
        if not ignore_errors:
            raise
    shutil.rmtree(path, ignore_errors=ignore_errors)


def _make_writable(path: str) -> None:
    """Give the owner read, write and search of every directory under
    ``path`` (and itself), never through a symbolic link."""
    _own_directory(path)
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            # Before os.walk lists it: a directory of mode 0 cannot be.
            _own_directory(os.path.join(root, name))


def _own_directory(path: str) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    except OSError:
        pass  # not ours, or gone: the removal says what it could not do


def links_into(directory: str) -> Callable[[os.DirEntry[str]], bool]:
    """An ``empty_directory`` keep: the symlinks into ``directory`` (a task
    directory's links to its job's shipped files)."""
    prefix = directory.rstrip(os.sep) + os.sep
    return lambda entry: entry.is_symlink() and os.readlink(entry.path).startswith(prefix)


def empty_directory(path: str, keep: Callable[[os.DirEntry[str]], bool] = lambda entry: False
                    ) -> None:
    """Delete what ``path`` holds but the entries ``keep`` spares:
    subdirectories with their trees, anything else (a symlink too) unlinked,
    never followed. A ``path`` that is no longer a directory (a task made
    its working directory a symbolic link, to files of its owner's
    elsewhere, which were deleted) is made an empty one again."""
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)
        os.mkdir(path)
        return
    _own_directory(path)  # a task may have left its working directory read-only
    with os.scandir(path) as it:
        entries = [e for e in it if not keep(e)]
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)
