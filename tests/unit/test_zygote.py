"""The task children's bounds and progress, without a process: a chatty
task's prints stay bounded (the zygote's log), and the stall check's
reading of a process's I/O."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pytxmr.zygote import (
    TRUNCATED,
    BoundedLog,
    Zygote,
    _Limits,
    _Output,
    _Runner,
    fork_guard,
    receive_request,
)


def test_bounded_log_keeps_the_head_and_says_it_cut(tmp_path: Path) -> None:
    """A task printing without end must not fill the worker's disk."""
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    log = BoundedLog(fd, 100)
    for _ in range(1000):
        print("0123456789", file=log)
    os.close(fd)
    data = path.read_bytes()
    assert data.startswith(b"0123456789\n") and data.endswith(b"[pytxmr: log truncated]\n")
    assert len(data) < 200


def test_bounded_log_is_a_stream_as_code_expects(tmp_path: Path) -> None:
    """A task's sys.stdout had no fileno() nor buffer: a job that ran in one
    process (``run --inline``) failed on a cluster, e.g. with
    ``subprocess.run(cmd, stdout=sys.stdout)``."""
    import subprocess

    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    log = BoundedLog(fd, 40)
    subprocess.run(["echo", "from a child"], stdout=log, check=True)
    log.buffer.write(b"bytes\n")
    print("printed", file=log)
    log.buffer.write(b"x" * 100)  # over the limit: counted with the prints
    os.close(fd)
    assert (log.encoding, log.isatty(), log.fileno()) == ("utf-8", False, fd)
    data = path.read_bytes()
    assert data.startswith(b"from a child\nbytes\nprinted\n")
    assert data.endswith(b"[pytxmr: log truncated]\n") and len(data) < 100


def test_io_bytes_grow_when_a_process_reads(tmp_path: Path) -> None:
    """The stall check's notion of progress: a process's bytes read and written."""
    from pytxmr.child import io_bytes

    before = io_bytes(os.getpid())
    if before is None:
        pytest.skip("no /proc/PID/io here")
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    (tmp_path / "f").read_bytes()
    after = io_bytes(os.getpid())
    assert after is not None and after >= before + 200_000


def test_a_new_child_closes_only_the_zygotes_open_fds() -> None:
    """A runner that exited but is not reaped yet has its done pipe closed
    already: a child forked meanwhile must not close it again (EBADF made
    that child run on as a second zygote)."""
    zygote = Zygote((3, 4))
    zygote.runners[100] = _Runner("job_a", 10, 11)
    r, w = os.pipe()
    os.close(w)
    zygote.runners[101] = _Runner("job_a", 12, r)
    zygote.by_reply = {11: 100, r: 101}
    zygote.replied(r, 0.0)  # end of file: runner 101 exited
    assert zygote.inherited() == [3, 4, 10, 11, 12]


def test_a_task_process_that_says_garbage_fails_its_task_not_the_zygote(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A job that patched what its process says its end with: the zygote
    died reading that, and every task on the worker with it. The task
    fails, and its process takes no more."""
    r, w = os.pipe()
    zygote = Zygote((3, 4))
    zygote.runners[101] = _Runner("job_a", -1, r)
    zygote.by_reply = {r: 101}
    zygote.running[101] = 7
    try:
        os.write(w, b"PATCHED\n")
        zygote.replied(r, 0.0)
        assert json.loads(capsys.readouterr().out) == {"ended": 101, "status": 1}
        assert 101 not in zygote.running and 101 in zygote.retired
    finally:
        os.close(w)
        with contextlib.suppress(OSError):
            os.close(r)


@pytest.mark.parametrize("change", ["nice", "cpus", "none"])
def test_a_process_whose_task_changed_its_cpu_priority_or_cpus_takes_no_more(
        change: str) -> None:
    """A map's ``os.nice(5)`` and ``sched_setaffinity`` went on to every next
    task of its process, its job's reduce too, niceness adding up map after
    map; a process may not always set them back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            limits = _Limits()
            if change == "nice":
                os.nice(1)
            elif change == "cpus":
                os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            os.write(w, b"1" if limits.restore() else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        fit = os.read(r, 1)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    cpus_narrowed = len(os.sched_getaffinity(0)) > 1
    assert fit == (b"1" if change == "none" or (change == "cpus" and not cpus_narrowed)
                   else b"0")


def test_a_reaped_childs_guard_goes_with_it_even_outside_its_group(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A guard slow to start joined its child's group after the group was
    killed (a process the task left, a zombie, kept the group there): it
    waited for the zygote's death, and the zygote's stop for it, for ever
    (`run` hung after a job whose maps left short-lived processes). Here
    the guard never joined: it goes all the same."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    guard = os.fork()
    if guard == 0:  # in the test's group, not the child's
        time.sleep(60)
        os._exit(0)
    zygote = Zygote((3, 4))
    zygote.children.add(child)
    zygote.guards[guard] = child
    try:
        _, status = os.waitpid(child, 0)
        zygote.reaped(child, status)
        reaped, status = os.waitpid(guard, 0)
        assert reaped == guard and os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(guard, signal.SIGKILL)
            os.waitpid(guard, 0)
    assert json.loads(capsys.readouterr().out) == {"ended": child, "status": 0}


def test_a_guard_that_cannot_be_forked_leaves_its_task_unguarded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a limit on processes (cgroup pids.max, RLIMIT_NPROC) the task
    still runs, without its guard: the fork's error is not the task's."""
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert fork_guard(12345) is None


def test_a_request_is_sent_whole_however_the_socket_takes_it(
        monkeypatch: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A write that a signal interrupts returns having written part: a
    reused task process waited for the rest of its request (a 100 KB job
    argument) for ever. The request brings the task's own output pipe."""
    ours, theirs = socket.socketpair()
    real_send_fds, real_write = socket.send_fds, os.write
    calls: list[int] = []

    def short_send_fds(sock: socket.socket, buffers: list[bytes], fds: list[int]) -> int:
        calls.append(-1)
        return real_send_fds(sock, [bytes(buffers[0][:1000])], fds)

    def short_write(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1000]))  # as an interrupted write does

    zygote = Zygote((3, 4))
    zygote.runners[100] = runner = _Runner("job_a", ours.detach(), 11)
    runner.busy = False
    log = tmp_path / "log"
    request = {"id": 7, "reuse": "job_a", "spec": {"args": "x" * 4500}, "log": str(log)}
    monkeypatch.setattr(socket, "send_fds", short_send_fds)
    monkeypatch.setattr(os, "write", short_write)
    output = -1
    try:
        zygote.handle(request)
        monkeypatch.undo()
        assert runner.busy and len(calls) > 4
        assert json.loads(capsys.readouterr().out) == {"started": 100, "id": 7, "reused": True}
        received = receive_request(theirs.fileno(), bytearray())
        assert received is not None
        line, output = received  # type: ignore[assignment]
        assert json.loads(line) == request and output is not None
        os.write(output, b"the task's own pipe\n")
        zygote.copied(zygote.outputs[100].fd)
        assert log.read_bytes() == b"the task's own pipe\n"
    finally:
        os.close(runner.requests)
        theirs.close()
        if output >= 0:
            os.close(output)
        for o in zygote.outputs.values():
            o.close()


def _output(tmp_path: Path) -> tuple[_Output, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return _Output(r), w


def test_a_tasks_output_keeps_its_head_whatever_writes_it(tmp_path: Path) -> None:
    """What a task writes to its descriptors (a subprocess, a streaming
    command's stderr, C code) is bounded with its prints: it went to the
    log file itself, and a tester's task wrote 5 MB into the worker's tmpfs."""
    output, w = _output(tmp_path)
    log = tmp_path / "log"
    output.start(str(log), 100)
    try:
        for _ in range(40):
            os.write(w, b"0123456789" * 50)
            assert output.copy()
        output.finish()
        os.write(w, b"after the task")  # no task's: dropped
        output.copy()
    finally:
        output.close()
        os.close(w)
    data = log.read_bytes()
    assert data == (b"0123456789" * 50)[:100 + len(TRUNCATED)] + TRUNCATED


def test_prints_cut_by_the_task_get_no_second_note(tmp_path: Path) -> None:
    """The task's own cut (BoundedLog, its note included) fits the room."""
    output, w = _output(tmp_path)
    log = tmp_path / "log"
    output.start(str(log), 40)
    task_log = BoundedLog(w, 40)
    try:
        print("x" * 100, file=task_log)
        os.write(w, b"then a subprocess writes\n")
        output.finish()
    finally:
        output.close()
        os.close(w)
    assert log.read_bytes() == b"x" * 40 + TRUNCATED


def test_a_reused_process_s_tasks_each_get_their_own_output(tmp_path: Path) -> None:
    """A runner's pipe outlives its tasks: each task's output, read to its
    end when the task ends, is its log's; the room is each task's."""
    output, w = _output(tmp_path)
    try:
        for n in (1, 2):
            output.start(str(tmp_path / f"log{n}"), 10)
            os.write(w, f"task {n} ".encode() * 10)
            output.finish()
        os.close(w)
        w = -1
        assert not output.copy() and output.fd == -1  # every writer gone
    finally:
        output.close()
        if w >= 0:
            os.close(w)
    for n in (1, 2):
        written = f"task {n} ".encode() * 10
        assert (tmp_path / f"log{n}").read_bytes() == written[:10 + len(TRUNCATED)] + TRUNCATED


def test_a_log_that_cannot_be_written_costs_the_zygote_nothing(tmp_path: Path) -> None:
    output, w = _output(tmp_path)
    output.start(str(tmp_path / "gone" / "log"), 100)
    try:
        os.write(w, b"x" * 1000)
        assert output.copy()
        output.finish()
    finally:
        output.close()
        os.close(w)
    assert not (tmp_path / "gone").exists()


def test_a_log_the_task_made_a_fifo_or_a_link_holds_nothing(tmp_path: Path) -> None:
    """The zygote opens the task's log: a task that made it a FIFO had the
    open wait for a reader for ever, the zygote with it, and every task of
    the worker; one that made it a link had it write where the link goes."""
    import threading

    fifo, elsewhere, link = tmp_path / "fifo", tmp_path / "elsewhere", tmp_path / "link"
    os.mkfifo(fifo)
    elsewhere.write_bytes(b"")
    link.symlink_to(elsewhere)
    for path in (fifo, link):
        output, w = _output(tmp_path)
        output.start(str(path), 100)
        os.write(w, b"x" * 10)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (output.copy(), output.finish(), done.set()))
        worker.start()
        try:
            assert done.wait(5), f"the zygote waited on the log {path.name}"
        finally:
            if not done.is_set():  # let the thread go: a reader for the FIFO
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            worker.join(5)
            output.close()
            os.close(w)
    assert elsewhere.read_bytes() == b""


def test_a_working_directory_made_a_link_is_not_followed(tmp_path: Path) -> None:
    """A map replaced its process's working directory with a symbolic link
    to its owner's files elsewhere: emptying it for the next map deleted
    them. It is made a directory again; nothing it led to is touched."""
    from pytxmr.trees import empty_directory

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    runner = tmp_path / "runner-1"
    runner.symlink_to(elsewhere)
    empty_directory(str(runner))
    assert runner.is_dir() and not runner.is_symlink() and not list(runner.iterdir())
    assert (elsewhere / "keep.txt").read_text() == "mine\n"


def test_only_the_jobs_own_links_to_its_files_stay_for_the_next_map(tmp_path: Path) -> None:
    """A map that linked ``words.txt`` to a shipped ``stop.txt`` left that
    link to every next map of its process (which failed to make its own:
    FileExistsError); the job's own links, by their files' names, stay."""
    from pytxmr.trees import empty_directory, links_into

    files = tmp_path / "bundle" / "files"
    files.mkdir(parents=True)
    (files / "stop.txt").write_text("the\n")
    runner = tmp_path / "runner-1"
    runner.mkdir()
    (runner / "stop.txt").symlink_to(files / "stop.txt")
    (runner / "words.txt").symlink_to(files / "stop.txt")
    (runner / "out.txt").write_text("left\n")
    empty_directory(str(runner), links_into(str(tmp_path / "bundle")))
    assert [p.name for p in runner.iterdir()] == ["stop.txt"]
    assert (files / "stop.txt").read_text() == "the\n"


def test_a_working_directory_swapped_for_a_link_while_emptied_is_not_followed(
        tmp_path: Path) -> None:
    """A process a map left running swaps the working directory for a link
    to its owner's files while the next map's emptying lists it: what goes
    is what the directory held, never what the link leads to."""
    from pytxmr.trees import empty_directory

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    (elsewhere / "tree").mkdir()
    runner = tmp_path / "runner-1"
    runner.mkdir()
    (runner / "keep.txt").write_text("left\n")
    (runner / "tree").mkdir()
    moved = tmp_path / "moved"

    def swap(entry: os.DirEntry[str], dir_fd: int) -> bool:
        if not moved.exists():
            runner.rename(moved)
            runner.symlink_to(elsewhere)
        return False

    empty_directory(str(runner), swap)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt", "tree"]
    assert (elsewhere / "keep.txt").read_text() == "mine\n"
    assert not list(moved.iterdir())


def test_a_read_only_directory_swapped_for_a_link_is_not_made_writable_through_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A map left a read-only directory, and a process it left running
    swapped it for a link to a directory of its owner's between the look
    (a directory, mode 0500) and the change: the change followed the link,
    and made that directory writable."""
    from pytxmr import trees

    victim = tmp_path / "victim"
    victim.mkdir(mode=0o500)
    runner = tmp_path / "runner-1"
    runner.mkdir()
    (runner / "locked").mkdir(mode=0o500)
    moved = tmp_path / "moved"
    real_chmod = os.chmod

    def swapped_first(path: Any, mode: int, **kw: Any) -> None:
        if not moved.exists():
            (runner / "locked").rename(moved)
            (runner / "locked").symlink_to(victim)
        real_chmod(path, mode, **kw)

    monkeypatch.setattr(trees.os, "chmod", swapped_first)
    runner_fd = os.open(runner, os.O_RDONLY)
    try:
        trees._own_directory("locked", runner_fd)
    finally:
        os.close(runner_fd)
    assert victim.stat().st_mode & 0o777 == 0o500
    assert moved.stat().st_mode & 0o700 == 0o700  # the directory it looked at


def test_a_kill_reaches_the_task_of_its_request_only(tmp_path: Path) -> None:
    """The daemon's kill names a request: a process that ended that task
    and took the next of its job (a reused process) is not killed for it."""
    wake = os.pipe()
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        zygote = Zygote(wake)
        zygote.running[task.pid] = 2  # it ran request 1, and runs request 2 now
        zygote.kill(1)
        assert task.poll() is None
        zygote.kill(2)
        assert task.wait(10) == -signal.SIGKILL
    finally:
        if task.poll() is None:
            task.kill()
        task.wait()
        for fd in wake:
            os.close(fd)


def test_a_read_only_directory_is_made_writable_where_proc_is_not_mounted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changed through its /proc link, it stayed read-only in a container
    without /proc (and its files could not go): there it is opened to be
    read, and changed through that descriptor."""
    from pytxmr import trees

    real_chmod = os.chmod

    def no_proc(path: Any, mode: int, **kw: Any) -> None:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", path)
        real_chmod(path, mode, **kw)

    monkeypatch.setattr(trees.os, "chmod", no_proc)
    (tmp_path / "locked").mkdir(mode=0o500)
    trees._own_directory(str(tmp_path / "locked"), None)
    assert (tmp_path / "locked").stat().st_mode & 0o700 == 0o700


def test_a_map_works_elsewhere_when_what_the_map_before_left_cannot_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An immutable file (`chattr +i`) left in a reused process's working
    directory failed every next map of that process, none of them at
    fault: the next one gets a directory of its own."""
    import pytxmr.zygote as zygote

    spec: dict[str, Any] = {"kind": "map", "data_path": str(tmp_path / "m-1.data"), "job": {}}
    first = zygote._runner_dir(dict(spec))
    assert first is not None
    Path(first, "lock.bin").write_text("held\n")

    def refused(path: str, keep: Any = None) -> None:
        raise PermissionError(1, "Operation not permitted", os.path.join(path, "lock.bin"))

    monkeypatch.setattr(zygote, "empty_directory", refused)
    again = dict(spec)
    second = zygote._runner_dir(again)
    assert second is not None and second != first
    assert os.path.dirname(second) == str(tmp_path) and not os.listdir(second)
    assert again["pack"] == first + ".data"  # the process's pack all the same


def test_a_standby_that_cannot_be_made_holds_no_descriptor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of descriptors, the idle zygote tries again every STANDBY_QUIET:
    each try kept a pipe, until no task could be forked at all."""
    from pytxmr import zygote as zygote_module

    def no_more(*args: Any) -> Any:
        raise OSError(24, "Too many open files")

    wake = os.pipe()
    try:
        zygote = Zygote(wake)
        monkeypatch.setattr(zygote_module.socket, "socketpair", no_more)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            zygote.fork_standby()
        assert zygote.standby is None and not zygote.runners
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        for fd in wake:
            os.close(fd)
