"""The client agent (``PYTXMR_AGENT``): a cluster command run in a child of
the agent behaves as it does in its own process (output, messages, exit
status, Ctrl-C), a caller killed takes its command with it, and an agent
serves only callers like the one that started it, and leaves when idle.

Each test has a runtime directory of its own (``XDG_RUNTIME_DIR``), and
kills whatever agent and command children it leaves there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from procs import ROOT, Cluster, base_env, wait_for
from test_cluster import barrier_job, write
from wordcounts import WORDCOUNT, corpus_files, merged, read_wordcount, word_counts

from pytxmr.zygote import STANDBY_NAME


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A private runtime directory (short: a socket's path is at most 107
    bytes), and the end of every process started with it."""
    path = Path(tempfile.mkdtemp(prefix="agent-", dir="/tmp"))
    try:
        yield path
    finally:
        try:
            for caller in _CALLERS:
                if caller.poll() is None:
                    caller.kill()
                caller.wait()
                for stream in (caller.stdin, caller.stdout, caller.stderr):
                    if stream is not None:
                        stream.close()
            _CALLERS.clear()
            for proc in agents(path):
                for p in [*proc.children(recursive=True), proc]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.wait(10)
        finally:
            shutil.rmtree(path, ignore_errors=True)


def agents(runtime: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "pytxmr.agent" in " ".join(cmdline) and any(str(runtime) in a for a in cmdline):
            found.append(proc)
    return found


def listening(proc: psutil.Process, runtime: Path) -> bool:
    """Whether ``proc`` listens on a socket in ``runtime``."""
    try:
        conns = getattr(proc, "net_connections", proc.connections)(kind="unix")
    except psutil.NoSuchProcess:
        return False
    return any(str(c.laddr).startswith(str(runtime)) for c in conns)


def the_agent(runtime: Path) -> psutil.Process:
    """The one agent listening in ``runtime``, once it is."""
    def found() -> psutil.Process | None:
        live = [p for p in agents(runtime) if listening(p, runtime)]
        return live[0] if len(live) == 1 else None

    return wait_for(found, 30, "an agent to listen", 0.05)


def agent_env(cluster: Cluster, runtime: Path, **more: str) -> dict[str, str]:
    return dict(cluster.env, PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime), **more)


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytxmr", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


#: The callers a test left running: the runtime fixture kills them.
_CALLERS: list[subprocess.Popen[str]] = []


def popen_cli(env: dict[str, str], cwd: Path, *args: str,
              **options: Any) -> subprocess.Popen[str]:
    """``python -m pytxmr ARGS`` left running, its output captured."""
    caller = subprocess.Popen([sys.executable, "-m", "pytxmr", *args], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, **options)
    _CALLERS.append(caller)
    return caller


def test_a_command_runs_in_an_agent_child_as_in_its_own_process(
        cluster: Cluster, corpus: Path, runtime: Path) -> None:
    """The first command starts the agent; the next ones run in its children,
    on the caller's streams, in its working directory, with its environment
    (here the cluster secret, which the agent's own lacks) and its exit
    status: the same output, messages and statuses as without it."""
    assert cluster.secret_file is not None
    env = agent_env(cluster, runtime, PYTXMR_SECRET=cluster.secret_file.read_text().strip())
    first = cli(env, cluster.base, "jobs", "--jobtracker", cluster.address)
    assert first.returncode == 0, first.stderr
    agent = the_agent(runtime)
    assert "PYTXMR_SECRET" not in agent.environ()
    # A job whose maps wait: its command is seen running in a child of the
    # agent, writing to the caller's pipe.
    barrier = cluster.base / "agent-barrier"
    job = write(cluster.base / "agent_waited.py", barrier_job(barrier))
    inputs = corpus_files(corpus)[:2]
    caller = popen_cli(env, cluster.base, "submit", str(job), *map(str, inputs), "-o",
                       "out-agent", "--jobtracker", cluster.address)

    def command() -> psutil.Process | None:  # once it has become the caller's
        found = [p for p in agent.children() if p.cwd() == str(cluster.base)]
        return found[0] if found else None

    child = wait_for(command, 30, "the agent to fork the command", 0.05)
    assert os.stat(f"/proc/{child.pid}/fd/1").st_ino == \
        os.stat(f"/proc/{caller.pid}/fd/1").st_ino
    barrier.touch()
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    assert re.search(r"^job_\S+ succeeded in ", out, re.MULTILINE), out
    assert merged(read_wordcount(cluster.base / "out-agent")) == word_counts(inputs)
    # Refused (exit 2) and unreachable (exit 3): said and ended as without it.
    missing = ("submit", str(WORDCOUNT), "no-such-input", "-o", "out-none",
               *cluster.client_args())
    unreachable = ("jobs", "--jobtracker", "127.0.0.1:1",
                   "--secret-file", str(cluster.secret_file))
    for args in (missing, unreachable):
        here = cli(dict(env, PYTXMR_AGENT="off"), cluster.base, *args)
        there = cli(env, cluster.base, *args)
        assert here.returncode in (2, 3), here.stderr
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode, here.stdout, here.stderr)
    assert the_agent(runtime).pid == agent.pid  # one agent served them all


def test_ctrl_c_and_a_killed_caller_reach_the_command(
        cluster: Cluster, corpus: Path, runtime: Path) -> None:
    """Ctrl-C on a caller is its command's: it says the job goes on and exits
    130 (SIGHUP, its terminal closed: 129). A caller killed (SIGKILL, which
    it cannot pass on) takes its command with it, as it would in its own
    process; a command killed (the OOM killer's SIGKILL) kills its caller
    by the same signal (not an exit of 137). A signal the caller was started
    ignoring (nohup's SIGHUP) is ignored by its command too; a Ctrl-Z the
    caller cannot stop for stops nothing."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    agent = the_agent(runtime)
    barrier = cluster.base / "agent-ctrl-c-barrier"
    job = write(cluster.base / "agent_interrupted.py", barrier_job(barrier))
    try:
        for sig in (signal.SIGINT, signal.SIGKILL, signal.SIGHUP):
            caller = popen_cli(env, cluster.base, "submit", str(job),
                               str(corpus_files(corpus)[0]), "-o", f"out-{sig.name}", "-q",
                               *cluster.client_args())

            def running_job() -> str | None:
                m = re.search(rf"^(job_\S+)\s+running\b.*out-{sig.name}",
                              cluster.cli("jobs")[1], re.MULTILINE)
                return m.group(1) if m else None

            job_id = wait_for(running_job, 30, "the job to run", 0.1)
            child = max(agent.children(), key=lambda p: p.create_time())
            caller.send_signal(sig)
            caller.wait(30)
            _, err = caller.communicate()
            if sig != signal.SIGKILL:
                assert (caller.returncode, err) == (128 + sig, (
                    f"pytxmr: interrupted: {job_id} goes on running on the cluster "
                    f"(`pytxmr kill {job_id}` stops it)\n"))
            wait_for(lambda: ended(child), 30, "the command to end")
            assert cluster.cli("status", job_id)[1].startswith(f"{job_id}  running")
            cluster.cli("kill", job_id)
        # The command killed (the OOM killer's SIGKILL): so is its caller.
        caller = popen_cli(env, cluster.base, "submit", str(job), str(corpus_files(corpus)[0]),
                           "-o", "out-oom", "-q", *cluster.client_args())
        wait_for(lambda: "out-oom" in cluster.cli("jobs")[1], 30, "the job to run", 0.1)
        max(agent.children(), key=lambda p: p.create_time()).kill()
        _, err = caller.communicate(timeout=30)
        assert caller.returncode == -signal.SIGKILL and not err, (caller.returncode, err)
        # Started ignoring SIGHUP (nohup), the command ignores it too.
        caller = popen_cli(env, cluster.base, "submit", str(job), str(corpus_files(corpus)[0]),
                           "-o", "out-nohup", "-q", *cluster.client_args(),
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        wait_for(lambda: "out-nohup" in cluster.cli("jobs")[1], 30, "the job to run", 0.1)
        caller.send_signal(signal.SIGHUP)
        barrier.touch()
        _, err = caller.communicate(timeout=60)
        assert caller.returncode == 0, err
        # Ctrl-Z where no shell can continue the caller (a session of its own,
        # whose stop the kernel discards): the command is not left stopped.
        tstp = cluster.base / "agent-tstp-barrier"
        job = write(cluster.base / "agent_tstp.py", barrier_job(tstp))
        caller = popen_cli(env, cluster.base, "submit", str(job), str(corpus_files(corpus)[0]),
                           "-o", "out-tstp", "-q", *cluster.client_args(),
                           start_new_session=True)
        try:
            wait_for(lambda: "out-tstp" in cluster.cli("jobs")[1], 30, "the job to run", 0.1)
            caller.send_signal(signal.SIGTSTP)
            tstp.touch()
            _, err = caller.communicate(timeout=60)
        finally:
            tstp.touch()
        assert caller.returncode == 0, err
    finally:
        barrier.touch()


def test_an_agent_serves_only_its_like_and_leaves_when_idle(
        cluster: Cluster, runtime: Path, tmp_path: Path) -> None:
    """A caller whose Python starts otherwise (here its warnings, its
    interpreter flags, its priority, its personality) gets an agent of its own; an idle one
    leaves, and its files with it; a caller whose pytxmr changed since its
    agent imported it retires that agent, which leaves, and starts its own."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    first = the_agent(runtime)

    def own_agent(command: list[str], env: dict[str, str], seen: set[int]) -> psutil.Process:
        """The agent the command starts, listening."""
        done = subprocess.run([*command, "-m", "pytxmr", "jobs", *cluster.client_args()],
                              env=env, cwd=cluster.base, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "ResourceWarning" not in done.stderr  # -X dev: the agent started is no Popen
        return wait_for(lambda: ([p for p in agents(runtime)
                                  if p.pid not in seen and listening(p, runtime)] or [None])[0],
                        30, "an agent of its own")

    seen = {first.pid}
    warned = own_agent([sys.executable], dict(env, PYTHONWARNINGS="ignore::DeprecationWarning",
                                              PYTXMR_AGENT="3"), seen)
    assert listening(first, runtime)
    warned.wait(30)  # idle for 3 s
    files = sorted(p.name for p in (runtime / "pytxmr").iterdir())
    assert len(files) == 3 and all(f.startswith(files[0]) for f in files)  # first's only
    seen.add(warned.pid)
    dev = own_agent([sys.executable, "-X", "dev"], env, seen)
    assert "dev" in " ".join(dev.cmdline())
    seen.add(dev.pid)
    niced = own_agent(["nice", "-n", "5", sys.executable], env, seen)
    assert niced.nice() == os.getpriority(os.PRIO_PROCESS, 0) + 5
    seen.add(niced.pid)
    started = [dev, niced]
    if shutil.which("setarch"):  # no address randomization: in exec'd processes only
        started.append(own_agent(["setarch", "-R", sys.executable], env, seen))
        seen.add(started[-1].pid)
    for proc in started:
        proc.kill()
        proc.wait(10)
    assert first.is_running()
    # pytxmr edited (here a copy of it) under its agent: the agent retires.
    shutil.copytree(ROOT / "pytxmr", tmp_path / "src" / "pytxmr")
    copied = dict(env, PYTHONPATH=str(tmp_path / "src"))
    before = own_agent([sys.executable], copied, seen)
    seen.add(before.pid)
    source = tmp_path / "src" / "pytxmr" / "cli.py"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    after = own_agent([sys.executable], copied, seen)
    before.wait(30)  # retired, with no command of its own running
    assert after.is_running() and first.is_running()


def test_an_agent_holds_none_of_its_first_callers_descriptors(
        cluster: Cluster, runtime: Path) -> None:
    """A descriptor its first caller inherited (a cron script's lock, a
    shell's ``2> >(tee log)``) went with the agent it started, and was held
    for the agent's idle time: the pipe's reader waited for the end."""
    read, write = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-m", "pytxmr", "jobs", *cluster.client_args()],
                              env=agent_env(cluster, runtime), cwd=cluster.base,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, pass_fds=[write])
        assert done.returncode == 0, done.stderr
        agent = the_agent(runtime)
        os.close(write)
        write = -1
        inode = os.fstat(read).st_ino
        held = [f for f in os.listdir(f"/proc/{agent.pid}/fd")
                if os.readlink(f"/proc/{agent.pid}/fd/{f}") == f"pipe:[{inode}]"]
        assert held == []
        assert os.read(read, 1) == b""  # no writer left: the end
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def test_an_agent_leaves_after_its_last_callers_idle_time(cluster: Cluster,
                                                          runtime: Path) -> None:
    """PYTXMR_AGENT=SECS is the idle time of the agent that serves the
    command, not only of the one it starts: an agent started for 15
    minutes kept that after a caller asked for 2 seconds."""
    cli(dict(agent_env(cluster, runtime), PYTXMR_AGENT="900"), cluster.base, "jobs",
        *cluster.client_args())
    agent = the_agent(runtime)
    done = cli(dict(agent_env(cluster, runtime), PYTXMR_AGENT="2"), cluster.base, "jobs",
               *cluster.client_args())
    assert done.returncode == 0, done.stderr
    agent.wait(30)


def test_commands_that_end_together_each_get_their_status(cluster: Cluster,
                                                          runtime: Path) -> None:
    """Children ending at once: one reaped before the agent read its word
    on its pipe, in the same wake-up, killed the agent (KeyError), and its
    other commands' callers exited 3 (outcome unknown) or 1 (a traceback:
    the connection reset)."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    agent = the_agent(runtime)
    for _ in range(20):
        callers = [popen_cli(env, cluster.base, "workers", *cluster.client_args())
                   for _ in range(12)]
        for caller in callers:
            _, err = caller.communicate(timeout=60)
            assert caller.returncode == 0, err
    assert the_agent(runtime).pid == agent.pid


def test_a_caller_that_gives_up_on_its_agent_runs_the_command_once(
        cluster: Cluster, corpus: Path, runtime: Path) -> None:
    """An agent that does not answer (stopped here) is given ANSWER_TIMEOUT;
    then the caller runs the command itself, and the agent, once it goes
    on, must not run it a second time."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    agent = the_agent(runtime)
    agent.suspend()
    try:
        done = cli(env, cluster.base, "submit", str(WORDCOUNT), str(corpus_files(corpus)[0]),
                   "-o", "out-once", "-q", *cluster.client_args())
    finally:
        agent.resume()
    assert done.returncode == 0, done.stderr
    wait_for(lambda: not agent.children(), 30, "the agent's child of the late request to leave")
    listed = [line for line in cluster.cli("jobs")[1].splitlines() if "out-once" in line]
    assert len(listed) == 1, listed


def test_a_caller_whose_agent_dies_ends_with_its_command(
        cluster: Cluster, corpus: Path, runtime: Path) -> None:
    """The agent killed mid-command: its child goes on with the caller's
    streams, and the caller waits for it (a script retrying on exit 3 must
    not submit again while the first submission runs), then says that its
    outcome is unknown."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    agent = the_agent(runtime)
    barrier = cluster.base / "agent-dies-barrier"
    job = write(cluster.base / "agent_dies.py", barrier_job(barrier))
    caller = popen_cli(env, cluster.base, "submit", str(job), str(corpus_files(corpus)[0]),
                       "-o", "out-agent-dies", *cluster.client_args())
    try:
        wait_for(lambda: "out-agent-dies" in cluster.cli("jobs")[1], 30, "the job to run", 0.1)
        agent.kill()
        agent.wait(10)
        with pytest.raises(subprocess.TimeoutExpired):
            caller.wait(1)
        barrier.touch()
        out, err = caller.communicate(timeout=60)
    finally:
        barrier.touch()
    assert caller.returncode == 3
    assert re.search(r"^job_\S+ succeeded in ", out, re.MULTILINE), out
    assert "the client agent ended before its command" in err


def test_run_in_an_agent_child_counts_and_stops_as_in_its_own_process(
        corpus: Path, runtime: Path, tmp_path: Path) -> None:
    """`run` starts its local cluster in the agent's child (its tasks a
    zygote's children) and counts right; Ctrl-C stops it all, as in its own
    process: "interrupted", 130, no process left."""
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime))
    inputs = corpus_files(corpus)[:2]
    first = cli(env, tmp_path, "jobs", "--jobtracker", "127.0.0.1:1", "--secret-file", "none")
    assert first.returncode == 2, first.stderr  # no such file: said, and the agent starts
    agent = the_agent(runtime)
    done = cli(env, tmp_path, "run", str(WORDCOUNT), *map(str, inputs), "-o", "out-run", "-q")
    assert done.returncode == 0, done.stderr
    assert merged(read_wordcount(tmp_path / "out-run")) == word_counts(inputs)
    barrier = tmp_path / "run-barrier"
    job = write(tmp_path / "run_waited.py", barrier_job(barrier))
    caller = popen_cli(env, tmp_path, "run", str(job), str(inputs[0]), "-o", "out-stopped")
    try:
        # Its maps wait at the barrier: task processes under the agent's child.
        wait_for(lambda: len(busy(agent.children(recursive=True))) >= 3, 30, "the tasks to run",
                 0.05)
        started = agent.children(recursive=True)  # the child, its zygote, its tasks
        caller.send_signal(signal.SIGINT)
        _, err = caller.communicate(timeout=60)
    finally:
        barrier.touch()
    assert caller.returncode == 130, err
    assert err.endswith("pytxmr: interrupted\n"), err
    wait_for(lambda: all(map(ended, started)), 30, "every process of the run to end")
    assert not (tmp_path / "out-stopped" / "_SUCCESS").exists()


def ended(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie too). A command's child exits
    just after its caller is told how it ended, and may go between two
    looks at it."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def spares(agent: psutil.Process) -> list[psutil.Process]:
    """The agent's spare zygotes: not a command's child that has told its
    caller how it ended and is yet to exit."""
    found = []
    for child in agent.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[-1:] == ["spare"]:  # child.zygote_argv(spare=True)
                found.append(child)
    return found


def busy(processes: list[psutil.Process]) -> list[psutil.Process]:
    """``processes`` but zygotes' standbys and task guards, which wait."""
    names = {STANDBY_NAME.decode(), "pytxmr-guard"}
    found = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            if p.name() not in names:
                found.append(p)
    return found


IO_PRIORITY_JOB = """
import os

import psutil

# Each import's (the module check's, each task's), in the file LOG names.
with open(os.path.join(os.path.dirname(__file__), LOG), "a") as f:
    _prio = psutil.Process().ionice()
    f.write(f"{int(_prio.ioclass)} {_prio.value}\\n")


def map(key, line):
    prio = psutil.Process().ionice()
    yield "ioprio", f"{int(prio.ioclass)} {prio.value} {os.getppid()}"


def reduce(key, values):
    yield key, ",".join(sorted(set(values)))
"""


def test_a_command_takes_its_callers_io_priority(runtime: Path, tmp_path: Path) -> None:
    """An agent started by ``ionice -c 3 pytxmr ...`` (a cron job's) made
    every later command's tasks do idle-class I/O, and a command under
    ``ionice`` got the agent's class: a command takes its caller's."""
    if shutil.which("ionice") is None:
        pytest.skip("needs ionice(1)")
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime))
    data = tmp_path / "in.txt"
    data.write_text("a line\n")
    subprocess.run(["ionice", "-c", "3", sys.executable, "-m", "pytxmr", "jobs", "--jobtracker",
                    "127.0.0.1:1", "--secret-file", "none"], env=env, cwd=tmp_path,
                   capture_output=True, timeout=120)
    agent = the_agent(runtime)
    assert agent.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
    plain = psutil.Process().ionice()
    for n, (prefix, expected) in enumerate([
            ([], (int(plain.ioclass), plain.value)),
            (["ionice", "-c", "2", "-n", "7"], (int(psutil.IOPRIO_CLASS_BE), 7))]):
        job = write(tmp_path / f"io_priority_{n}.py",
                    IO_PRIORITY_JOB.replace("LOG", repr(f"imports-{n}")))
        if n:  # the zygote the agent started for it, with its standby (which checks the module)
            wait_for(lambda: any(p.name() == STANDBY_NAME.decode()
                                 for p in agent.children(recursive=True)), 30,
                     "the spare zygote's standby", 0.05)
        done = subprocess.run([*prefix, sys.executable, "-m", "pytxmr", "run", str(job), str(data),
                               "-o", f"out-{n}", "-q"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        [line] = (tmp_path / f"out-{n}" / "part-00000").read_text().splitlines()
        ioclass, value, _ = line.split("\t")[1].split()
        assert (int(ioclass), int(value)) == expected, prefix
        imports = (tmp_path / f"imports-{n}").read_text().splitlines()
        assert len(imports) >= 3 and set(imports) == {f"{expected[0]} {expected[1]}"}, prefix
    assert the_agent(runtime).pid == agent.pid  # both ran through it


ZYGOTE_JOB = """
import os


def map(key, line):
    # A task's parent is its zygote; the zygote's parent, its starter.
    with open(f"/proc/{os.getppid()}/stat") as f:
        starter = f.read().rsplit(")", 1)[1].split()[1]
    yield "starter", starter
    yield "profile", os.environ.get("AWS_PROFILE", "")


def reduce(key, values):
    yield key, ",".join(sorted(set(values)))
"""


def test_a_run_takes_the_zygote_its_agent_started_for_it_only_where_it_fits(
        runtime: Path, tmp_path: Path) -> None:
    """Once a `run` ended, its agent starts a zygote for the next, which
    that run's child takes (instead of waiting for its own to start), if
    its own would have been the same: the environment tasks get (here
    AWS_PROFILE), the directory, the umask. It is the agent's child."""
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime))
    job = write(tmp_path / "zygote_of.py", ZYGOTE_JOB)
    data = tmp_path / "in.txt"
    data.write_text("a line\n")
    first = cli(env, tmp_path, "jobs", "--jobtracker", "127.0.0.1:1", "--secret-file", "none")
    assert first.returncode == 2, first.stderr  # no such file: said, and the agent starts
    agent = the_agent(runtime).pid
    outcomes = []
    for n, (profile, umask) in enumerate([("one", 0o022), ("one", 0o022), ("two", 0o022),
                                          ("two", 0o077), ("two", 0o077)]):
        done = subprocess.run([sys.executable, "-m", "pytxmr", "run", str(job), str(data),
                               "-o", f"out-{n}", "-q"], env=dict(env, AWS_PROFILE=profile),
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              umask=umask, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        found = dict(line.split("\t") for part in sorted((tmp_path / f"out-{n}").glob("part-*"))
                     for line in part.read_text().splitlines())
        outcomes.append((found["profile"], found["starter"] == str(agent)))
    # Each takes the agent's zygote if the run before it was like it.
    assert outcomes == [("one", False), ("one", True), ("two", False), ("two", False),
                        ("two", True)]
    assert all(part.stat().st_mode & 0o077 == 0 for part in (tmp_path / "out-4").glob("part-*"))
    assert the_agent(runtime).pid == agent


def test_a_directory_of_pythonpath_made_after_a_run_is_the_next_runs(runtime: Path,
                                                                    tmp_path: Path) -> None:
    """A run failed to import its helper (its PYTHONPATH directory did not
    exist yet); the user made it and ran again, on the zygote the agent had
    started meanwhile, which had noted the directory missing for good."""
    deps = tmp_path / "deps"
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime))
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{deps}"
    job = write(tmp_path / "with_helper.py",
                "import helper_made_later\n\n\ndef map(key, line):\n"
                "    yield 'x', helper_made_later.X\n\n\ndef reduce(key, values):\n"
                "    yield key, sum(values)\n")
    data = tmp_path / "in.txt"
    data.write_text("a line\n")
    cli(env, tmp_path, "jobs", "--jobtracker", "127.0.0.1:1", "--secret-file", "none")
    agent = the_agent(runtime)
    failed = cli(env, tmp_path, "run", str(job), str(data), "-o", "out-0", "-q")
    assert failed.returncode == 2 and "helper_made_later" in failed.stderr, failed.stderr
    # The spare, started as the run ended (after its caller was told), and
    # given the time to import the task code with deps missing.
    wait_for(lambda: len(spares(agent)) == 1, 30, "the agent's spare zygote", 0.05)
    time.sleep(1)
    deps.mkdir()
    (deps / "helper_made_later.py").write_text("X = 7\n")
    done = cli(env, tmp_path, "run", str(job), str(data), "-o", "out-1", "-q")
    assert done.returncode == 0, done.stderr
    assert merged(read_wordcount(tmp_path / "out-1")) == {"x": 7}


def test_a_spare_zygote_that_died_is_reaped_and_none_takes_it(runtime: Path,
                                                              tmp_path: Path) -> None:
    """A spare that died while no command ran was a zombie until the next
    one, which took it (and, finding it dead, started its own zygote)."""
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime))
    job = write(tmp_path / "zygote_of.py", ZYGOTE_JOB)
    data = tmp_path / "in.txt"
    data.write_text("a line\n")
    cli(env, tmp_path, "jobs", "--jobtracker", "127.0.0.1:1", "--secret-file", "none")
    agent = the_agent(runtime)
    starters = []
    for n in range(3):
        done = cli(env, tmp_path, "run", str(job), str(data), "-o", f"out-{n}", "-q")
        assert done.returncode == 0, done.stderr
        found = dict(line.split("\t") for part in sorted((tmp_path / f"out-{n}").glob("part-*"))
                     for line in part.read_text().splitlines())
        starters.append(found["starter"] == str(agent.pid))
        if n == 1:
            [spare] = wait_for(lambda: spares(agent), 30, "the agent's spare zygote", 0.05)
            spare.kill()
            wait_for(lambda: not agent.children(), 30, "the agent to reap its spare", 0.05)
    assert starters == [False, True, False]
    wait_for(lambda: len(spares(agent)) == 1, 30, "the next run's spare", 0.05)


def test_a_run_on_its_agents_zygote_ends_with_its_child_not_with_its_agent(
        corpus: Path, runtime: Path, tmp_path: Path) -> None:
    """The zygote a run child took from its agent is the agent's child, but
    ends with the run: a caller killed (its child with it) leaves no task
    running; an agent killed leaves the run to end as it would have (its
    caller cannot tell how: exit 3)."""
    # TMPDIR: the directory of the run killed (its child's) stays in tmp_path.
    env = dict(base_env(tmp_path), PYTXMR_AGENT="60", XDG_RUNTIME_DIR=str(runtime),
               TMPDIR=str(tmp_path))
    inputs = corpus_files(corpus)[:2]
    barrier = tmp_path / "spare-barrier"
    job = write(tmp_path / "spare_waited.py", barrier_job(barrier))
    try:
        for killed in ("caller", "agent"):
            cli(env, tmp_path, "jobs", "--jobtracker", "127.0.0.1:1", "--secret-file", "none")
            agent = the_agent(runtime)
            done = cli(env, tmp_path, "run", str(WORDCOUNT), str(inputs[0]), "-o",
                       f"out-{killed}-first", "-q")
            assert done.returncode == 0, done.stderr
            # The next run's zygote, started as the run ended (after its caller was told).
            [spare] = wait_for(lambda: spares(agent), 30, "the agent's spare zygote", 0.05)
            # One attempt a task: a zygote lost (and replaced) would fail the job.
            caller = popen_cli(env, tmp_path, "run", str(job), *map(str, inputs), "-o",
                               f"out-{killed}", "--max-attempts", "1")
            wait_for(lambda: len(busy(spare.children())) >= 2, 30, "the maps to run", 0.05)
            tasks = spare.children(recursive=True)
            if killed == "caller":
                caller.kill()
                caller.wait(30)
                wait_for(lambda: all(map(ended, [spare, *tasks])), 30, "the run's tasks to end")
                assert not barrier.exists()
            else:
                agent.kill()
                agent.wait(30)
                barrier.touch()
                _, err = caller.communicate(timeout=120)
                assert caller.returncode == 3, err
                assert "outcome is unknown" in err
                assert merged(read_wordcount(tmp_path / f"out-{killed}")) == word_counts(inputs)
    finally:
        barrier.touch()


def test_a_child_runs_nothing_before_its_callers_go(
        cluster: Cluster, corpus: Path, runtime: Path) -> None:
    """A caller that handed its command over and has not said go (it may
    give up, and run the command itself): the child the agent forked for it
    runs nothing meanwhile, and leaves when the caller does, so that the
    command never runs twice."""
    env = agent_env(cluster, runtime)
    cli(env, cluster.base, "jobs", *cluster.client_args())
    the_agent(runtime)
    argv = ["pytxmr", "submit", str(WORDCOUNT), str(corpus_files(corpus)[0]), "-o", "out-nogo",
            "-q", *cluster.client_args()]
    code = ("import os, socket, sys, time\n"
            "from pytxmr import agent\n"
            "identity = agent._identity()\n"
            "path = agent.socket_path(identity)\n"
            f"request = {{'stamp': agent.stamp(identity), 'argv': {argv!r}, 'cwd': os.getcwd(),\n"
            "           'path0': sys.path[0], 'env': dict(os.environ), 'umask': 0o22,\n"
            "           'ignored': [], 'unbuffered': False}\n"
            "conn = socket.socket(socket.AF_UNIX)\n"
            "print(agent._hand_over(conn, conn.makefile('rb'), path, request), flush=True)\n"
            "sys.stdin.read()  # until the test lets it go, without a go\n")
    caller = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cluster.base,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    _CALLERS.append(caller)
    assert caller.stdout is not None and caller.stdin is not None
    child = psutil.Process(int(caller.stdout.readline()))
    time.sleep(2)  # a command run at once would have submitted by now
    assert "out-nogo" not in cluster.cli("jobs")[1]
    assert child.is_running()
    caller.stdin.close()
    assert caller.wait(30) == 0
    wait_for(lambda: ended(child), 30, "the child to leave with its caller")
    assert "out-nogo" not in cluster.cli("jobs")[1]


def test_a_caller_in_a_directory_it_could_not_reach_by_path(runtime: Path,
                                                            tmp_path: Path) -> None:
    """Its directory goes to the child as a descriptor: entered by its path,
    one whose parent the caller may no longer search (``chmod 000``) was
    refused (exit 1, where the command runs without the agent)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1), to give up reading past permissions")
    # Without the capabilities that let root past a directory's mode.
    fenced = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    env = {**base_env(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime), "PYTXMR_AGENT": "on"}
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    jobs = [*fenced, sys.executable, "-m", "pytxmr", "jobs", "--jobtracker", "127.0.0.1:9",
            "--secret-file", str(secret)]
    first = subprocess.run(jobs, env=env, cwd=here, capture_output=True, text=True, timeout=60)
    assert first.returncode == 3, first.stderr  # nothing listens there
    wait_for(lambda: agents(runtime) and listening(agents(runtime)[0], runtime), 30,
             "the agent to listen")
    (tmp_path / "a").chmod(0)
    try:
        there = subprocess.run(jobs, env=env, cwd=here, capture_output=True, text=True,
                               timeout=60)
    finally:
        (tmp_path / "a").chmod(0o755)
    assert (there.returncode, there.stderr) == (first.returncode, first.stderr)


def test_an_agent_imports_nothing_from_where_its_first_caller_ran(runtime: Path,
                                                                  tmp_path: Path) -> None:
    """``python -m pytxmr`` drops its directory from the path, but the agent
    it started put it back for its own start: a user's socket.py there was
    imported, every time, and the agent died without a word."""
    here = tmp_path / "project"
    here.mkdir()
    marker = tmp_path / "imported"
    write(here / "socket.py", f"open({str(marker)!r}, 'a').close()\nraise ImportError\n")
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    env = {**base_env(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime), "PYTXMR_AGENT": "on"}
    jobs = ("jobs", "--jobtracker", "127.0.0.1:9", "--secret-file", str(secret))
    first = cli(env, here, *jobs)
    assert first.returncode == 3, first.stderr  # nothing listens there
    agent = the_agent(runtime)
    second = cli(env, here, *jobs)
    assert (second.returncode, second.stderr) == (first.returncode, first.stderr)
    assert the_agent(runtime).pid == agent.pid
    assert not marker.exists()
