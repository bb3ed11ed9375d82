"""Real pytxmr processes for tests and benchmarks: a jobtracker and
tasktrackers started as ``python -m`` daemons on free loopback ports (port 0,
read back from their ready files), and the ``python -m pytxmr`` command line.

Every daemon is ended by ``Cluster.stop``: SIGTERM, then SIGKILL after a
timeout, and descendants that outlive their daemon are killed and reported.
Waiting is on a condition with a deadline, never a fixed sleep. Each cluster
has its own HOME, so nothing touches the real ``~/.pytxmr``. Linux only
(process trees come from /proc); no test framework: an unmet expectation
raises AssertionError, a wait that runs out raises TimeoutError.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pytxmr import shufflememory, task

if TYPE_CHECKING:
    import psutil

#: Starting a daemon (interpreter + Twisted import + bind) takes well under this.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: A small submitted job finishes in seconds; this only bounds a hang.
SUBMIT_TIMEOUT = 60.0
#: How long a stopped daemon's descendants may take to end before they count as orphans.
ORPHAN_GRACE = 5.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns a true value; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class ProcStat(NamedTuple):
    """What ``/proc/PID/stat`` says of one process (times in clock ticks)."""

    ppid: int
    pgrp: int
    state: str  # R, S, D, Z (a zombie: it has exited)...
    ticks: int  # utime + stime: its own CPU
    reaped_ticks: int  # cutime + cstime: the CPU of the children it waited for
    start: int  # starttime: with the pid, names the process across pid reuse


def process_table() -> dict[int, ProcStat]:
    """pid -> ProcStat of every process on the machine (one /proc scan, about 1 ms)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended meanwhile
            continue
        # The command name before ")" may itself hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = ProcStat(
            ppid=int(fields[1]), pgrp=int(fields[2]), state=fields[0].decode(),
            ticks=int(fields[11]) + int(fields[12]),
            reaped_ticks=int(fields[13]) + int(fields[14]), start=int(fields[19]))
    return table


def process_trees(roots: Iterable[int], table: dict[int, ProcStat]) -> set[int]:
    """The pids of the trees rooted at ``roots``: the roots still in ``table``
    and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    out: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def _running(processes: dict[int, int]) -> dict[int, int]:
    """Those of ``processes`` (pid -> start) that have not ended."""
    table = process_table()
    return {pid: start for pid, start in processes.items()
            if pid in table and table[pid].start == start and table[pid].state not in "ZX"}


def dying_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for a test server: it gets SIGKILL when ``parent``
    dies, even by SIGKILL (``task.die_with_parent``), and exits at once if
    ``parent`` died before that took effect."""
    def preexec() -> None:
        task.die_with_parent()
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def daemon_env(home: Path, pythonpath: Path | str | None = None) -> dict[str, str]:
    """This process's environment with HOME at ``home``, no PYTXMR_SECRET nor
    PYTXMR_AGENT (a test's or benchmark's commands run in their own
    processes unless it says otherwise), unbuffered output and
    ``pythonpath`` (a source tree) first on PYTHONPATH."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop("PYTXMR_SECRET", None)
    env.pop("PYTXMR_AGENT", None)
    if pythonpath is not None:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(pythonpath) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Daemon:
    """One daemon subprocess, its log file and its ready file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_path: Path
    workdir: Path | None  # None: the daemon's default (under HOME)
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The ready file's contents (ports...), once the daemon has written it."""
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before "
                                     f"it was ready:\n{self.log()[-4000:]}")
            try:
                info: dict[str, Any] = json.loads(self.ready_path.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                return None
            return info

        self.ready = wait_for(ready, timeout, f"{self.name} to be ready")
        return self.ready

    def task_children(self) -> list[psutil.Process]:
        """The processes running tasks (user code): the children that the
        daemon's zygote forked, i.e. its grandchildren, but its standby,
        which waits for a task, and that standby's guard (in its group).
        psutil's Process objects, which stay tied to the process if its pid
        is reused; psutil is a test extra, imported only here."""
        import psutil

        from ..zygote import STANDBY_NAME

        try:
            zygotes = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for zygote in zygotes:
            try:
                out.extend(zygote.children(recursive=True))
            except psutil.Error:
                pass
        standby = set()
        for p in out:
            with contextlib.suppress(psutil.Error):
                if p.name() == STANDBY_NAME.decode():
                    standby.add(p.pid)
        return [p for p in out if p.pid not in standby and _group(p.pid) not in standby]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> list[int]:
        """End the daemon (``sig``, then SIGKILL after ``timeout``); the pids
        of its descendants that outlived it by ORPHAN_GRACE (each then killed)."""
        family: dict[int, int] = {}
        if self.proc.poll() is None:  # once reaped, its pid may name another process
            table = process_table()
            family = {pid: table[pid].start for pid in process_trees([self.pid], table)
                      if pid != self.pid}
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        deadline = time.monotonic() + ORPHAN_GRACE
        alive = _running(family)
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = _running(alive)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(alive)


@dataclass
class StopReport:
    """What stopping a cluster found left behind (nothing, when all went well)."""

    #: daemon name -> pids of its descendants that outlived it (killed since)
    orphans: dict[str, list[int]]
    #: shuffle memory directories that cleanly stopped tasktrackers left (removed since)
    leaked_memory: list[str]


class Cluster:
    """A jobtracker and tasktrackers as real processes, and the command line
    run against them. The daemons' files (ready files, work directories, HOME,
    a fresh secret) are under ``base``; their logs are
    ``log_dir/LOG_PREFIX+NAME.log`` (``log_dir`` defaults to ``base``)."""

    def __init__(self, base: Path, *, pythonpath: Path | str | None = None,
                 log_dir: Path | None = None, log_prefix: str = "") -> None:
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.pythonpath = pythonpath
        self.log_dir = log_dir or base
        self.log_prefix = log_prefix
        self.secret_file: Path | None = base / "secret"
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        self.daemons: list[Daemon] = []
        self.jobtracker: Daemon | None = None
        self.tasktrackers: list[Daemon] = []
        self._n = 0

    @property
    def env(self) -> dict[str, str]:
        """The environment of the daemons and of the command line."""
        return daemon_env(self.home, self.pythonpath)

    @property
    def address(self) -> str:
        assert self.jobtracker is not None
        return f"127.0.0.1:{self.jobtracker.ready['port']}"

    def _spawn(self, name: str, args: Sequence[str], workdir: Path | None) -> Daemon:
        self._n += 1
        if any(d.name == name for d in self.daemons):
            name = f"{name}-{self._n}"  # a restart: keep the first one's log
        log_path = self.log_dir / f"{self.log_prefix}{name}.log"
        ready_path = self.base / f"{name}.ready.json"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [*self.command_prefix(name), sys.executable, *args, "--ready-file",
                 str(ready_path),
                 *(["--workdir", str(workdir)] if workdir else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.base)
        daemon = Daemon(name, proc, log_path, ready_path, workdir)
        self.daemons.append(daemon)
        return daemon

    def command_prefix(self, name: str) -> list[str]:
        """What a daemon's command runs under (``ip netns exec NS`` for a
        host of the multi-host tier); nothing here."""
        return []

    def _secret_args(self, secret_file: Path | None | str) -> list[str]:
        secret = self.secret_file if secret_file == "default" else secret_file
        return ["--secret-file", str(secret)] if secret else []

    def start_jobtracker(self, *extra: str, wait: bool = True,
                         default_workdir: bool = False) -> Daemon:
        jt = self._spawn("jobtracker", ["-m", "pytxmr.jobtracker", "--port", "0", "--web-port", "0",
                                        *self._secret_args("default"), *extra],
                         None if default_workdir else self.base / "jt-work")
        self.jobtracker = jt
        if wait:
            jt.wait_ready()
        return jt

    def start_tasktracker(self, slots: int = 2, *extra: str, wait: bool = True,
                          secret_file: Path | None | str = "default",
                          jobtracker: str | None = None,
                          default_workdir: bool = False) -> Daemon:
        """One tasktracker; ``secret_file`` "default" is the cluster's own."""
        name = f"tasktracker{len(self.tasktrackers) + 1}"
        tt = self._spawn(name, ["-m", "pytxmr.tasktracker",
                                "--jobtracker", jobtracker or self.address,
                                "--slots", str(slots),
                                *self._secret_args(secret_file), *extra],
                         None if default_workdir else self.base / f"{name}-work")
        self.tasktrackers.append(tt)
        if wait:
            tt.wait_ready()
        return tt

    def start_tasktrackers(self, count: int, slots: int = 2, *extra: str,
                           timeout: float = START_TIMEOUT) -> list[Daemon]:
        """``count`` tasktrackers started at once (their start-ups overlap),
        each ready when this returns."""
        tts = [self.start_tasktracker(slots, *extra, wait=False) for _ in range(count)]
        for tt in tts:
            tt.wait_ready(timeout)
        return tts

    def client_args(self, secret_file: Path | None | str = "default") -> list[str]:
        """``--jobtracker ADDRESS --secret-file FILE``, for a client command."""
        return ["--jobtracker", self.address, *self._secret_args(secret_file)]

    def cli(self, *args: str, timeout: float = SUBMIT_TIMEOUT,
            secret_file: Path | None | str = "default") -> tuple[int, str, str]:
        """``python -m pytxmr ARGS --jobtracker ... --secret-file ...``."""
        return run_cli(*args, *self.client_args(secret_file), env=self.env, cwd=self.base,
                       timeout=timeout)

    def submit(self, job: str | Path, inputs: Sequence[str | Path], output: str | Path,
               *options: str, **kw: Any) -> tuple[int, str, str]:
        """``python -m pytxmr submit JOB INPUT... -o OUTPUT OPTIONS``."""
        return self.cli("submit", str(job), *map(str, inputs), "-o", str(output),
                        *options, **kw)

    def popen_submit(self, job: str | Path, inputs: Sequence[str | Path],
                     output: str | Path, *options: str) -> subprocess.Popen[str]:
        """The same submission left running; the caller ends it."""
        return subprocess.Popen(
            [sys.executable, "-m", "pytxmr", "submit", str(job), *map(str, inputs),
             "-o", str(output), *options, *self.client_args()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=self.env, cwd=self.base)

    def logs(self) -> str:
        return "\n".join(f"===== {d.name} =====\n{d.log()[-3000:]}" for d in self.daemons)

    def stop(self) -> StopReport:
        """Stop every daemon, tasktrackers first, then the jobtracker; remove
        the shuffle memory (tmpfs) of their work directories."""
        orphans: dict[str, list[int]] = {}
        for daemon in reversed(self.daemons):
            left = daemon.stop()
            if left:
                orphans[daemon.name] = left
        # A daemon that stopped cleanly removed its shuffle memory; a
        # SIGKILLed one leaves it for its next start to clean, and no next
        # start comes here.
        clean: set[Path] = set()
        killed: set[Path] = set()
        for d in self.daemons:
            if d.workdir is not None:
                (clean if d.proc.returncode == 0 else killed).add(d.workdir)
            else:  # the default work dir, ~/.pytxmr/tasktracker or -2, -3...
                killed.update(self.home.glob(".pytxmr/tasktracker*"))
        memory = {w: Path(shufflememory.memory_dir(str(w))) for w in clean | killed}
        leaked = [str(memory[w]) for w in clean - killed if memory[w].exists()]
        for path in memory.values():
            shutil.rmtree(path, ignore_errors=True)
        return StopReport(orphans, leaked)


def run_cli(*args: str, env: dict[str, str], cwd: Path,
            timeout: float = SUBMIT_TIMEOUT) -> tuple[int, str, str]:
    """Run ``python -m pytxmr ARGS``: (exit code, stdout, stderr);
    TimeoutError (the command killed) after ``timeout``."""
    proc = subprocess.Popen([sys.executable, "-m", "pytxmr", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise TimeoutError(f"python -m pytxmr {' '.join(args)} did not finish in "
                           f"{timeout:g}s:\n{out}\n{err}") from None
    return proc.returncode, out, err


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
