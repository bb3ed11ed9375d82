"""The disk a run's work directories take, sampled while it runs: the bytes
allocated to the files under them (map outputs, spills, fetched runs), and
the tmpfs shuffle memory (/dev/shm) of the tasktrackers working there."""

from __future__ import annotations

import glob
import os
import threading

#: pytxmr.shufflememory's memory directories: SHM_ROOT/pytxmr-UID-HASH, each
#: with a `.workdir` file naming the tasktracker's work dir.
SHM_ROOT = "/dev/shm"
_SHM_PREFIX = f"pytxmr-{os.getuid()}-"
_SHM_OWNER = ".workdir"


def tree_bytes(path: str, seen: set[tuple[int, int]]) -> int:
    """Bytes allocated (st_blocks, as du counts) to the files under `path`;
    a file already in `seen` (another hard link to it) is not counted again.
    Files and directories that vanish while walked are skipped."""
    total = 0
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident not in seen:
                    seen.add(ident)
                    total += st.st_blocks * 512
    return total


def shm_dirs(roots: list[str], shm_root: str = SHM_ROOT) -> list[str]:
    """The shuffle-memory directories of tasktrackers whose work dir is
    under one of `roots` (others' pytxmr daemons may share the tmpfs)."""
    prefixes = [os.path.join(os.path.abspath(r), "") for r in roots]
    out = []
    for path in glob.glob(os.path.join(glob.escape(shm_root), _SHM_PREFIX + "*")):
        try:
            with open(os.path.join(path, _SHM_OWNER), encoding="utf-8",
                      errors="surrogateescape") as f:
                owner = os.path.join(f.read().strip(), "")
        except OSError:
            continue
        if any(owner.startswith(p) for p in prefixes):
            out.append(path)
    return out


class DiskSampler(threading.Thread):
    """Every `interval` s: the bytes on disk under `roots` and in their
    tasktrackers' shuffle memory; the peak of each, and of their sum."""

    def __init__(self, roots: list[str], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.stop_event = threading.Event()
        self.peak_disk = self.peak_shm = self.peak_both = 0
        self.samples = 0

    def tick(self) -> None:
        seen: set[tuple[int, int]] = set()
        disk = sum(tree_bytes(r, seen) for r in self.roots)
        shm = sum(tree_bytes(d, seen) for d in shm_dirs(self.roots))
        self.peak_disk = max(self.peak_disk, disk)
        self.peak_shm = max(self.peak_shm, shm)
        self.peak_both = max(self.peak_both, disk + shm)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.tick()
            self.stop_event.wait(self.interval)

    def finish(self) -> None:
        self.stop_event.set()
        self.join()
