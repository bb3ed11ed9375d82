"""Unit tests for pytxmr.shufflememory: the budget of fetched runs kept in
RAM, and the tmpfs directory a tasktracker claims, cleans and removes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytxmr import shufflememory
from pytxmr.shufflememory import RunPlacement, ShuffleMemory


def test_runs_go_to_memory_while_they_fit_the_budget(tmp_path: Path) -> None:
    """The budget is shared by every run: the one that would overflow it goes to disk."""
    memory = ShuffleMemory(str(tmp_path), 100)
    first = memory.place("a.seg", 60)
    assert first == str(tmp_path / "a.seg")
    assert memory.place("b.seg", 41) is None
    assert memory.place("c.seg", 40) == str(tmp_path / "c.seg")
    assert (memory.used, memory.available) == (100, 0)
    assert memory.place("d.seg", 1) is None
    assert memory.place("empty.seg", 0) is not None  # costs nothing


def test_releasing_a_run_removes_its_file_and_gives_its_bytes_back(tmp_path: Path) -> None:
    """Budget comes back only with the file gone: RAM is really freed."""
    memory = ShuffleMemory(str(tmp_path), 100)
    path = memory.place("a.seg", 80)
    assert path is not None
    Path(path).write_bytes(b"x" * 80)
    assert memory.holds(path)
    memory.release(path)
    assert not os.path.exists(path)
    assert (memory.used, memory.holds(path)) == (0, False)
    memory.release(path)  # twice: nothing more
    memory.release(str(tmp_path / "never-placed.seg"))
    assert memory.used == 0
    assert memory.place("b.seg", 100) is not None


def test_releasing_a_run_whose_file_was_never_written_is_fine(tmp_path: Path) -> None:
    """A fetch may fail before it created its file."""
    memory = ShuffleMemory(str(tmp_path), 10)
    path = memory.place("a.seg", 10)
    assert path is not None
    memory.release(path)
    assert memory.used == 0


def test_release_all_empties_the_budget(tmp_path: Path) -> None:
    """At stop, every run still held is removed."""
    memory = ShuffleMemory(str(tmp_path), 100)
    paths = [memory.place(f"{i}.seg", 10) for i in range(5)]
    for p in paths:
        assert p is not None
        Path(p).touch()
    memory.release_all()
    assert memory.used == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("directory,budget", [(None, 100), ("dir", 0)])
def test_without_a_directory_or_a_budget_every_run_goes_to_disk(
        tmp_path: Path, directory: str | None, budget: int) -> None:
    """``--shuffle-memory 0``, or no usable tmpfs: the disk, as before."""
    memory = ShuffleMemory(directory and str(tmp_path / directory), budget)
    assert not memory.enabled
    assert memory.place("a.seg", 0) is None
    assert memory.place("b.seg", 1) is None


def test_a_run_that_fits_the_budget_but_not_the_tmpfs_goes_to_disk(tmp_path: Path) -> None:
    """Others may fill /dev/shm meanwhile: a full tmpfs would fail the reduce."""
    free = [10 << 20]
    memory = ShuffleMemory(str(tmp_path), 1 << 30, free_space=lambda: free[0])
    assert memory.place("a.seg", 4 << 20) is not None
    free[0] = 4 << 20
    assert memory.place("b.seg", 4 << 20) is None
    assert memory.used == 4 << 20


def test_a_name_cannot_be_placed_twice(tmp_path: Path) -> None:
    """Two fetches writing one file would corrupt each other: a bug, made loud."""
    memory = ShuffleMemory(str(tmp_path), 100)
    memory.place("a.seg", 1)
    with pytest.raises(ValueError):
        memory.place("a.seg", 1)


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        ShuffleMemory("/nowhere", -1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1000), st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=60))
def test_the_budget_is_never_exceeded_and_always_adds_up(budget: int,
                                                         ops: list[tuple[bool, int]]) -> None:
    """Whatever the order of placements and releases, ``used`` is the sum of
    what is held and never more than the budget."""
    memory = ShuffleMemory("/nonexistent-dir", budget)
    held: dict[str, int] = {}
    for n, (place, size) in enumerate(ops):
        if place or not held:
            path = memory.place(f"{n}.seg", size)
            if budget and size <= budget - sum(held.values()):
                assert path is not None
                held[path] = size
            else:
                assert path is None
        else:
            path = sorted(held)[size % len(held)]
            del held[path]
            memory.release(path)
        assert memory.used == sum(held.values()) <= max(budget, 0)


def test_the_default_budget_is_256m_or_half_the_free_tmpfs() -> None:
    """A small /dev/shm (64 MiB in a default container) is not filled up."""
    assert shufflememory.default_budget(64 << 30) == 256 << 20
    assert shufflememory.default_budget(64 << 20) == 32 << 20
    assert shufflememory.default_budget(0) == 0


# --- the directory --------------------------------------------------------------------

def test_the_directory_is_named_after_the_work_dir_and_the_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted daemon on the same work dir finds its predecessor's; two
    work dirs or two users never share one."""
    a = shufflememory.memory_dir(str(tmp_path / "a"), "/dev/shm")
    assert a == shufflememory.memory_dir(str(tmp_path / "a"), "/dev/shm")
    assert a != shufflememory.memory_dir(str(tmp_path / "b"), "/dev/shm")
    assert os.path.dirname(a) == "/dev/shm"
    assert os.path.basename(a).startswith(f"pytxmr-{os.getuid()}-")
    monkeypatch.chdir(tmp_path)
    assert shufflememory.memory_dir("a", "/dev/shm") == a


def test_claiming_empties_what_a_crashed_predecessor_left(tmp_path: Path) -> None:
    """Runs of a SIGKILLed daemon would hold RAM until a reboot."""
    path = tmp_path / "mem"
    lock = shufflememory.claim_memory_dir(str(path), "/work")
    lock.close()  # the daemon dies
    (path / "job_1_r00000_0-run-00001-1.seg").write_bytes(b"x" * 100)
    (path / "stray").mkdir()
    lock = shufflememory.claim_memory_dir(str(path), "/work")
    try:
        assert sorted(p.name for p in path.iterdir()) == [".lock", ".workdir"]
        assert (path / ".workdir").read_text() == "/work"
        assert (path.stat().st_mode & 0o777) == 0o700
    finally:
        lock.close()


def test_a_held_directory_is_neither_claimed_nor_emptied(tmp_path: Path) -> None:
    """Two daemons on one work dir: the second must not delete the first's runs."""
    path = tmp_path / "mem"
    lock = shufflememory.claim_memory_dir(str(path), "/work")
    try:
        (path / "live.seg").write_bytes(b"x")
        with pytest.raises(OSError, match="another tasktracker"):
            shufflememory.claim_memory_dir(str(path), "/work")
        assert (path / "live.seg").exists()
    finally:
        lock.close()


def test_a_missing_tmpfs_cannot_be_claimed(tmp_path: Path) -> None:
    """No /dev/shm (not Linux, a minimal container): the caller falls back to disk."""
    with pytest.raises(OSError):
        shufflememory.claim_memory_dir(str(tmp_path / "no-shm" / "mem"), "/work")


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    """/dev/shm is shared: another user could plant a link to make us empty
    (or write into) a directory of their choice."""
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious").write_text("keep")
    (tmp_path / "mem").symlink_to(target)
    with pytest.raises(OSError):
        shufflememory.claim_memory_dir(str(tmp_path / "mem"), "/work")
    assert (target / "precious").exists()


def test_removing_the_directory_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "mem"
    lock = shufflememory.claim_memory_dir(str(path), "/work")
    (path / "a.seg").write_bytes(b"x")
    shufflememory.remove_memory_dir(str(path), lock)
    assert not path.exists()
    assert lock.closed


def test_orphans_are_removed_when_nobody_holds_them(tmp_path: Path) -> None:
    """A crashed daemon must not keep RAM until a tasktracker restarts on its
    work dir (maybe never): the next tasktracker of the host frees it; a live
    daemon keeps its own."""
    root = tmp_path / "shm"
    root.mkdir()
    locks = {}
    for name in ("gone", "alive", "restartable"):
        workdir = tmp_path / name
        workdir.mkdir()
        path = shufflememory.memory_dir(str(workdir), str(root))
        locks[name] = shufflememory.claim_memory_dir(path, str(workdir))
        (Path(path) / "run.seg").write_bytes(b"x")
    (tmp_path / "gone").rmdir()
    (tmp_path / "alive").rmdir()
    locks["gone"].close()
    locks["restartable"].close()
    other = root / "someone-else"
    other.mkdir()
    try:
        removed = shufflememory.remove_orphans(str(root))
        assert sorted(removed) == sorted(shufflememory.memory_dir(str(tmp_path / n), str(root))
                                         for n in ("gone", "restartable"))
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [os.path.basename(shufflememory.memory_dir(str(tmp_path / "alive"), str(root))),
             "someone-else"])
    finally:
        locks["alive"].close()
    assert shufflememory.remove_orphans(str(tmp_path / "no-such-root")) == []


def test_the_lock_is_a_flock_that_dies_with_its_holder(tmp_path: Path) -> None:
    """A SIGKILLed daemon holds nothing: its successor gets the directory."""
    path = tmp_path / "mem"
    code = (f"import os, sys; from pytxmr import shufflememory; "
            f"shufflememory.claim_memory_dir({str(path)!r}, '/work'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with open(path / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_module_does_not_import_twisted() -> None:
    """Pure logic, as tests/unit/test_layout.py asks of the other pure modules."""
    code = ("import json, sys, pytxmr.shufflememory; "
            "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'twisted']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert json.loads(out) == []


def test_a_failing_free_space_probe_sends_runs_to_disk(tmp_path: Path) -> None:
    """A probe that raises (the directory was removed) means 'does not fit'."""
    def gone() -> int:
        raise FileNotFoundError(str(tmp_path / "gone"))

    memory = ShuffleMemory(str(tmp_path), 1 << 20, free_space=gone)
    assert memory.place("r0", 10) is None
    assert memory.used == 0


def test_runs_still_being_written_count_against_the_free_space(tmp_path: Path) -> None:
    """Concurrent fetches each see the same free space: what is reserved but
    not yet written must not be promised twice (the tmpfs would fill)."""
    free = [int(2.5 * (1 << 20))]
    memory = ShuffleMemory(str(tmp_path), 1 << 30, free_space=lambda: free[0])
    first = memory.place("r0", 1 << 20)
    assert first is not None
    assert memory.place("r1", 1 << 20) is None  # r0's MiB is not written yet
    memory.written(first)  # now the probe would show it; pretend it freed some
    assert memory.place("r1", 1 << 20) is not None
    memory.release(first)
    memory.written(first)  # released already: nothing happens
    assert memory.used == 1 << 20


# --- one attempt's placement ------------------------------------------------------------

def _placement(tmp_path: Path, budget: int = 100) -> tuple[ShuffleMemory, RunPlacement]:
    (tmp_path / "shm").mkdir()
    (tmp_path / "attempt").mkdir()
    memory = ShuffleMemory(str(tmp_path / "shm"), budget)
    return memory, RunPlacement(lambda: memory, str(tmp_path / "attempt"), "a1")


def test_an_attempts_runs_go_to_memory_while_the_budget_allows_then_to_its_dir(
        tmp_path: Path) -> None:
    """The attempt's id names its runs in the directory every attempt shares."""
    memory, placement = _placement(tmp_path)
    first = placement.place("run-0.seg", 60)
    assert first == str(tmp_path / "shm" / "a1-run-0.seg") and placement.in_memory(first)
    second = placement.place("run-1.seg", 60)
    assert second == str(tmp_path / "attempt" / "run-1.seg") and not placement.in_memory(second)
    forced = placement.place("run-2.seg", 1, memory=False)
    assert forced == str(tmp_path / "attempt" / "run-2.seg")
    assert memory.used == 60 and placement.memory_paths == {first}


def test_the_budget_is_asked_at_each_placement(tmp_path: Path) -> None:
    """The service swaps the worker's budget when it claims its tmpfs: an
    attempt launched before must use the new one."""
    current = [ShuffleMemory(None, 0)]
    (tmp_path / "shm").mkdir()
    placement = RunPlacement(lambda: current[0], str(tmp_path), "a1")
    assert not placement.in_memory(placement.place("r0", 1))
    current[0] = ShuffleMemory(str(tmp_path / "shm"), 10)
    assert placement.in_memory(placement.place("r1", 1))


def test_discarding_a_run_removes_its_file_and_gives_its_memory_back(tmp_path: Path) -> None:
    """A failed or superseded try leaves neither file nor reservation."""
    memory, placement = _placement(tmp_path)
    in_memory = placement.place("r0", 10)
    on_disk = placement.place("r1", 1, memory=False)
    Path(in_memory).write_bytes(b"x" * 10)
    Path(on_disk).write_bytes(b"x")
    placement.discard(in_memory)
    placement.discard(on_disk)
    assert (memory.used, placement.memory_paths) == (0, set())
    assert not os.path.exists(in_memory) and not os.path.exists(on_disk)
    placement.discard(on_disk)  # twice, or a file never written: nothing
    placement.discard(placement.place("r2", 1, memory=False))


def test_discarding_never_removes_a_file_outside_the_attempts_dir(tmp_path: Path) -> None:
    """A local run read in place is the store's file: not ours to delete."""
    _, placement = _placement(tmp_path)
    source = tmp_path / "store.data"
    source.write_bytes(b"map output")
    placement.discard(str(source))
    assert source.exists()


def test_a_run_released_by_the_attempts_end_is_not_released_twice(tmp_path: Path) -> None:
    """Once given back, a name may be reserved anew: a late discard must not
    release somebody else's run."""
    memory, placement = _placement(tmp_path)
    path = placement.place("r0", 10)
    placement.release()
    assert memory.used == 0 and not os.path.exists(path)
    again = memory.place("a1-r0", 10)  # the same file name, reserved anew
    placement.discard(path)
    assert again == path and memory.holds(path) and memory.used == 10


def test_release_gives_back_only_this_attempts_memory(tmp_path: Path) -> None:
    """Attempts share the budget; each gives back its own when it ends."""
    memory, placement = _placement(tmp_path)
    other = RunPlacement(lambda: memory, str(tmp_path / "attempt"), "a2")
    mine, theirs = placement.place("r0", 10), other.place("r0", 20)
    for p in (mine, theirs):
        Path(p).write_bytes(b"x")
    placement.release()
    assert memory.used == 20 and os.path.exists(theirs) and not os.path.exists(mine)
    assert placement.memory_paths == set()


def test_after_close_runs_go_to_disk(tmp_path: Path) -> None:
    """A try that ends after its attempt must not take memory back."""
    memory, placement = _placement(tmp_path)
    placement.place("r0", 10)
    placement.close()
    assert memory.used == 0
    assert not placement.in_memory(placement.place("r1", 10))


def test_a_landing_is_placed_by_the_length_the_transport_gives(tmp_path: Path) -> None:
    """The transport asks the landing for a file once it knows the run's
    length; the run counts as written only once whole."""
    free = [(10 << 20) + (1 << 20) + 5]
    (tmp_path / "shm").mkdir()
    memory = ShuffleMemory(str(tmp_path / "shm"), 1 << 30, free_space=lambda: free[0])
    placement = RunPlacement(lambda: memory, str(tmp_path), "a1")
    landing = placement.landing("r0")
    assert landing.path is None
    with landing:
        landing(10 << 20).write(b"x")
        # Still being written: a second run is not promised the same free space.
        assert memory.place("other", 10 << 20) is None
    assert landing.path is not None and landing.in_memory
    assert Path(landing.path).read_bytes() == b"x"
    assert memory.place("other", 10 << 20) is not None  # r0 is written now
    landing.discard()
    assert not os.path.exists(landing.path) and landing.in_memory  # where it was placed


def test_a_landing_that_fails_is_not_written(tmp_path: Path) -> None:
    """A partial run is discarded, never counted as whole."""
    (tmp_path / "shm").mkdir()
    memory = ShuffleMemory(str(tmp_path / "shm"), 1 << 30,
                           free_space=lambda: (10 << 20) + (1 << 20) + 5)
    placement = RunPlacement(lambda: memory, str(tmp_path), "a1")
    landing = placement.landing("r0")
    with pytest.raises(ConnectionError):
        with landing:
            landing(10 << 20).write(b"part")
            raise ConnectionError("reset")
    assert landing.path is not None
    assert memory.place("other", 10 << 20) is None  # r0 still counts as being written
    landing.discard()
    assert memory.used == 0


def test_a_landing_links_a_local_map_output_into_the_attempts_dir(tmp_path: Path) -> None:
    """A re-run of the map here replaces the store's file: the link keeps the
    reduce's run, at no copy."""
    _, placement = _placement(tmp_path)
    source = tmp_path / "store.data"
    source.write_bytes(b"map output")
    landing = placement.landing("r0")
    path = landing.link(str(source))
    assert path == landing.path == str(tmp_path / "attempt" / "r0")
    assert os.path.samefile(path, source) and not landing.in_memory
    landing.discard()
    assert not os.path.exists(path) and source.exists()


def test_without_hard_links_a_local_output_is_read_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some file systems cannot link: the store's file is read as it is, and
    discarding the landing leaves it alone."""
    _, placement = _placement(tmp_path)
    source = tmp_path / "store.data"
    source.write_bytes(b"map output")

    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    landing = placement.landing("r0")
    assert landing.link(str(source)) == str(source) and landing.path is None
    landing.discard()
    assert source.exists()
