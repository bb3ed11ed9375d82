"""Real processes for the integration tests: a jobtracker and tasktrackers
started as ``python -m`` daemons on free loopback ports, and the
``python -m pytxmr`` command line run as a subprocess.

Every process a test starts is ended at teardown, also when the test fails:
SIGTERM, then SIGKILL after a timeout; the daemons' task children must be
gone too. Waiting is always on a condition with a deadline, never a sleep.
Each cluster gets its own HOME, so nothing touches the real ``~/.pytxmr``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytxmr import shufflememory

ROOT = Path(__file__).resolve().parent.parent
#: Starting a daemon (interpreter + Twisted import + bind) takes well under this.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: A submit in these tests finishes in seconds; this only bounds a hang.
SUBMIT_TIMEOUT = 60.0


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns a true value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop("PYTXMR_SECRET", None)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
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
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} before it "
                            f"was ready:\n{self.log()[-4000:]}")
            try:
                return json.loads(self.ready_path.read_text())
            except (OSError, ValueError):
                return None

        self.ready = wait_for(ready, timeout, f"{self.name} to be ready")
        return self.ready

    def task_children(self) -> list[psutil.Process]:
        """The processes running tasks (user code): the children that the
        daemon's zygote forked, i.e. its grandchildren."""
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
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> list[int]:
        """End the daemon (``sig``, then SIGKILL after ``timeout``); the pids
        of its descendants that outlived it (each then killed)."""
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        _, alive = psutil.wait_procs(descendants, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        return [p.pid for p in alive]


class Cluster:
    """Daemons started for a test, and the CLI run against them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.secret_file: Path | None = base / "secret"
        self.secret_file.write_text("integration-test-secret\n")
        self.daemons: list[Daemon] = []
        self.jobtracker: Daemon | None = None
        self.tasktrackers: list[Daemon] = []
        self._n = 0

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.home)

    @property
    def address(self) -> str:
        assert self.jobtracker is not None
        return f"127.0.0.1:{self.jobtracker.ready['port']}"

    def _spawn(self, name: str, args: Sequence[str], workdir: Path | None) -> Daemon:
        self._n += 1
        if any(d.name == name for d in self.daemons):
            name = f"{name}-{self._n}"  # a restart: keep the first one's log
        log_path = self.base / f"{name}.log"
        ready_path = self.base / f"{name}.ready.json"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *args, "--ready-file", str(ready_path),
                 *(["--workdir", str(workdir)] if workdir else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.base)
        daemon = Daemon(name, proc, log_path, ready_path, workdir)
        self.daemons.append(daemon)
        return daemon

    def _secret_args(self, secret_file: Path | None) -> list[str]:
        return ["--secret-file", str(secret_file)] if secret_file else []

    def start_jobtracker(self, *extra: str, wait: bool = True,
                         default_workdir: bool = False) -> Daemon:
        jt = self._spawn("jobtracker", ["-m", "pytxmr.jobtracker", "--port", "0", "--web-port", "0",
                                        *self._secret_args(self.secret_file), *extra],
                         None if default_workdir else self.base / "jt-work")
        self.jobtracker = jt
        if wait:
            jt.wait_ready()
        return jt

    def start_tasktracker(self, slots: int = 2, *extra: str, wait: bool = True,
                          secret_file: Path | None | str = "default",
                          jobtracker: str | None = None,
                          default_workdir: bool = False) -> Daemon:
        secret = self.secret_file if secret_file == "default" else secret_file
        name = f"tasktracker{len(self.tasktrackers) + 1}"
        tt = self._spawn(name, ["-m", "pytxmr.tasktracker",
                                "--jobtracker", jobtracker or self.address,
                                "--slots", str(slots),
                                *self._secret_args(secret), *extra],  # type: ignore[arg-type]
                         None if default_workdir else self.base / f"{name}-work")
        self.tasktrackers.append(tt)
        if wait:
            tt.wait_ready()
        return tt

    def start_tasktrackers(self, count: int, slots: int = 2, *extra: str) -> list[Daemon]:
        """``count`` tasktrackers started at once (their start-ups overlap),
        each ready when this returns."""
        tts = [self.start_tasktracker(slots, *extra, wait=False) for _ in range(count)]
        for tt in tts:
            tt.wait_ready()
        return tts

    def cli(self, *args: str, timeout: float = SUBMIT_TIMEOUT,
            secret_file: Path | None | str = "default") -> tuple[int, str, str]:
        """``python -m pytxmr ARGS --jobtracker ... --secret-file ...``."""
        secret = self.secret_file if secret_file == "default" else secret_file
        return run_cli(*args, "--jobtracker", self.address,
                       *self._secret_args(secret),  # type: ignore[arg-type]
                       env=self.env, cwd=self.base, timeout=timeout)

    def submit(self, job: str | Path, inputs: Sequence[str | Path], output: str | Path,
               *options: str, **kw: Any) -> tuple[int, str, str]:
        """``python -m pytxmr submit JOB INPUT... -o OUTPUT OPTIONS``."""
        return self.cli("submit", str(job), *map(str, inputs), "-o", str(output),
                        *options, **kw)

    def popen_submit(self, job: str | Path, inputs: Sequence[str | Path],
                     output: str | Path, *options: str) -> subprocess.Popen[str]:
        assert self.secret_file is not None
        return subprocess.Popen(
            [sys.executable, "-m", "pytxmr", "submit", str(job), *map(str, inputs),
             "-o", str(output), *options, "--jobtracker", self.address,
             "--secret-file", str(self.secret_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=self.env, cwd=self.base)

    def logs(self) -> str:
        return "\n".join(f"===== {d.name} =====\n{d.log()[-3000:]}" for d in self.daemons)

    def stop_all(self) -> None:
        """Tasktrackers first, then the jobtracker; fails on orphaned children."""
        orphans: dict[str, list[int]] = {}
        for daemon in reversed(self.daemons):
            left = daemon.stop()
            if left:
                orphans[daemon.name] = left
        # A daemon that stopped cleanly removed its shuffle memory (tmpfs);
        # a SIGKILLed one leaves it for its next start to clean, and no
        # next start comes here.
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
        assert not orphans, f"task children outlived their daemons: {orphans}"
        assert not leaked, f"cleanly stopped tasktrackers left their shuffle memory: {leaked}"
        for daemon in self.daemons:
            log = daemon.log()
            assert "Unhandled" not in log, f"{daemon.name} logged an unhandled error:\n{log}"


def run_cli(*args: str, env: dict[str, str], cwd: Path,
            timeout: float = SUBMIT_TIMEOUT) -> tuple[int, str, str]:
    """Run ``python -m pytxmr ARGS``; (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "pytxmr", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"python -m pytxmr {' '.join(args)} did not finish in {timeout:g}s:\n"
                    f"{out}\n{err}")
    return proc.returncode, out, err
