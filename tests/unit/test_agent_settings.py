"""The client agent's pure parts: what PYTXMR_AGENT means, and where (not)
to listen."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from pytxmr import agent


@pytest.mark.parametrize("value, idle", [
    (None, None), ("", None), ("off", None), ("0", None), ("No", None),
    ("on", agent.DEFAULT_IDLE), ("1", agent.DEFAULT_IDLE), ("TRUE", agent.DEFAULT_IDLE),
    ("30", 30.0), (" 2.5 ", 2.5),
])
def test_pytxmr_agent_is_off_on_or_an_idle_time(value: str | None, idle: float | None) -> None:
    assert agent.idle_limit(value) == idle


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "sometimes"])
def test_a_meaningless_pytxmr_agent_is_said_and_means_off(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.idle_limit(value) is None
    assert f"PYTXMR_AGENT={value!r} is not on, off or a number of seconds" in \
        capsys.readouterr().err


def test_no_agent_listens_where_another_user_could(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = agent.socket_path(agent._identity())
    assert path is not None and os.path.dirname(path) == str(tmp_path / "pytxmr")
    assert os.stat(tmp_path / "pytxmr").st_mode & 0o777 == 0o700
    os.chmod(tmp_path / "pytxmr", 0o755)  # readable by others: not private
    assert agent.socket_path(agent._identity()) is None
    os.rmdir(tmp_path / "pytxmr")
    os.symlink(tmp_path, tmp_path / "pytxmr")  # someone else's directory, through a link
    assert agent.socket_path(agent._identity()) is None


def test_commands_that_are_not_a_cluster_clients_never_go_to_an_agent(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTXMR_AGENT", "on")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for argv in (["pytxmr"], ["pytxmr", "certs", "d", "h"],
                 ["pytxmr", "users", "list", "--file", "f"], ["pytxmr", "--version"]):
        assert agent.delegated(argv) is None
    assert not (tmp_path / "pytxmr").exists()  # nor was one started for them


def test_commands_naming_their_own_fds_or_asking_a_password_run_in_their_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTXMR_USER", raising=False)
    monkeypatch.delenv("PYTXMR_PASSWORD", raising=False)
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    assert agent._runs_here(["pytxmr", "jobs", "--secret-file", "/dev/fd/63"])
    assert agent._runs_here(["pytxmr", "jobs", "--user", "ann"])
    assert agent._runs_here(["pytxmr", "jobs", "--use=ann"])
    assert not agent._runs_here(["pytxmr", "jobs", "--user", "ann", "--password-file", "p"])
    # argparse takes --u for --user too.
    assert agent._runs_here(["pytxmr", "jobs", "--u", "ann"])
    # The job's module loads in the command's process, where what the agent
    # imported (html, calendar...) would shadow a helper of that name.
    assert agent._runs_here(["pytxmr", "submit", "job.py", "--help-job"])
    assert agent._runs_here(["pytxmr", "run", "--inline", "job.py", "in", "-o", "o"])
    assert agent._runs_here(["pytxmr", "run", "job.py", "in", "-o", "o", "--inl"])
    assert agent._runs_here(["pytxmr", "run", "--in", "job.py", "in", "-o", "o"])
    assert agent._runs_here(["pytxmr", "submit", "job.py", "--help-j"])
    assert not agent._runs_here(["pytxmr", "run", "job.py", "in", "-o", "o"])
    assert not agent._runs_here(["pytxmr", "submit", "job.py", "in", "-o", "o", "--help"])
    assert not agent._runs_here(["pytxmr", "jobs", "--secret-file", "s"])
    monkeypatch.setenv("PYTXMR_USER", "ann")
    assert agent._runs_here(["pytxmr", "jobs"])
    monkeypatch.setenv("PYTXMR_PASSWORD", "pw")
    assert not agent._runs_here(["pytxmr", "jobs"])
    monkeypatch.delenv("PYTXMR_PASSWORD")
    monkeypatch.setattr(os, "isatty", lambda fd: False)  # no terminal: no prompt
    assert not agent._runs_here(["pytxmr", "jobs"])


def test_the_package_imports_a_name_once() -> None:
    import pytxmr

    counter = pytxmr.counter
    assert pytxmr.__dict__["counter"] is counter  # later uses cost a dict lookup


def test_a_caller_in_another_network_namespace_has_an_agent_of_its_own() -> None:
    """Its commands must reach that network's jobtracker, not the agent's."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    code = "from pytxmr import agent; print(agent._identity())"
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    there = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True,
                           text=True)
    if there.returncode != 0:
        pytest.skip(f"unshare -n is not allowed here: {there.stderr.strip()}")
    assert here.returncode == 0, here.stderr
    assert here.stdout != there.stdout


def test_a_caller_with_its_own_preload_oom_score_or_capabilities_has_an_agent_of_its_own(
        ) -> None:
    """A child of the agent has the agent's: a command run under ``setpriv``
    (fewer capabilities), ``choom`` or with ``LD_PRELOAD`` (a proxy
    wrapper) or ``MALLOC_ARENA_MAX`` ran with the agent's."""
    import subprocess
    import sys

    code = "from pytxmr import agent; print(agent._identity())"
    oom = ("with open('/proc/self/oom_score_adj', 'w') as f:\n    f.write('500')\n")
    # The allocator's settings, read once at a process's start: a child of
    # the agent has the agent's.
    arenas = {"MALLOC_ARENA_MAX": "2"}
    here, preloaded, choomed, allocated = (
        subprocess.run([sys.executable, "-c", prefix + code], capture_output=True, text=True,
                       env={**os.environ, **more}, check=True).stdout
        for prefix, more in (("", {}), ("", {"LD_BIND_NOW": "1"}), (oom, {}), ("", arenas)))
    assert here != preloaded and here != choomed and here != allocated


def test_a_parser_built_before_the_fork_parses_each_command_line_afresh(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The agent builds its commands' parsers once (``cli.prebuild_parsers``);
    each child parses with them: nothing one command line gave may show in
    the next, defaults taken from the environment are the caller's (each
    child's, not the agent's), and usage names the program as the caller
    started it."""
    from pytxmr import cli

    monkeypatch.setenv("PYTXMR_USER", "alice")  # the agent's, as it started
    monkeypatch.setenv("PYTXMR_TLS", "/home/alice/tls")
    cli.prebuild_parsers(agent.COMMANDS)
    monkeypatch.setenv("PYTXMR_USER", "bob")  # a caller's, in the child
    monkeypatch.delenv("PYTXMR_TLS")
    a = cli.parse(["status", "job_1"])
    assert (a.user, a.tls) == ("bob", None)
    a = cli.parse(["submit", "job.py", "in.txt", "-o", "out", "--user", "carol", "--tls", ""])
    assert (a.user, a.tls) == ("carol", "")
    job = ["submit", "job.py", "in.txt", "-o", "out"]
    first = cli.parse([*job, "--arg", "n=1", "--py-files", "lib.py", "--storage-option",
                       "region=x", "--files", "data.txt"])
    assert first.args == [("n", "1")] and first.py_files == ["lib.py"]
    again = cli.parse(job)
    assert (again.args, again.py_files, again.files, again.storage_options) == ([], [], [], [])
    assert cli.parse(["run", "job.py", "--reducers", "3", "in.txt", "-o", "out"]).inputs == \
        ["in.txt"]
    assert cli.parse(["run", "job.py", "in.txt", "-o", "out"]).reducers is None
    for argv0, prog in (("/usr/bin/pytxmr", "pytxmr"), ("/x/pytxmr/__main__.py",
                                                        "python -m pytxmr")):
        monkeypatch.setattr("sys.argv", [argv0])
        with pytest.raises(SystemExit):
            cli.parse(["status"])
        assert f"usage: {prog} status" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["_identity", "_hand_over", "_await_child", "_start_agent"])
def test_ctrl_c_before_the_agent_s_child_runs_the_command_is_said_not_a_traceback(
        where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """A caller interrupted while it finds its agent, hands the command
    over or starts an agent (before its child may run the command): exit
    130 and "interrupted", as a command interrupted in its own start; it
    printed a KeyboardInterrupt traceback and exited 1."""
    monkeypatch.setenv("PYTXMR_AGENT", "60")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(agent, "_streams_open", lambda: True)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    if where == "_start_agent":  # no agent answers: one is started for the next command
        monkeypatch.setattr(agent, "_hand_over", lambda *args: None)
    elif where == "_await_child":
        monkeypatch.setattr(agent, "_hand_over", lambda *args: 4242)
    monkeypatch.setattr(agent, where, interrupted)
    assert agent.delegated(["pytxmr", "jobs"]) == 130
    assert capsys.readouterr().err == "pytxmr: interrupted\n"


def test_ctrl_c_while_the_command_line_s_code_is_imported_is_said_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The command interrupted as it imports ``pytxmr.agent`` (0.01 s) or,
    running in its own process, ``pytxmr.cli`` (0.05 s): a KeyboardInterrupt
    traceback, where a later Ctrl-C says "interrupted"."""
    import sys
    import types

    from pytxmr import __main__ as main

    class Importing(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise KeyboardInterrupt

    def ran() -> None:
        raise AssertionError("the command ran")

    monkeypatch.delenv("PYTXMR_AGENT", raising=False)
    command_line = types.ModuleType("pytxmr.cli")
    command_line.entry = ran  # type: ignore[attr-defined]
    for importing, cli in (("pytxmr.cli", Importing("pytxmr.cli")),
                           ("pytxmr.agent", command_line)):
        monkeypatch.setitem(sys.modules, "pytxmr.cli", cli)
        monkeypatch.setitem(sys.modules, importing, Importing(importing))
        with pytest.raises(SystemExit) as exited:
            main.entry()
        assert exited.value.code == 130
        assert capsys.readouterr().err == "pytxmr: interrupted\n"


def test_a_command_child_takes_its_caller_s_io_priority_without_a_scan_of_every_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a run child's adopted zygote has children to give it to: psutil
    finds a process's children by reading every process's /proc entry
    (2 ms with 120 processes, on the way of every command)."""
    psutil = pytest.importorskip("psutil")

    def scanned(self: object, recursive: bool = False) -> list[object]:
        raise AssertionError("every process scanned")

    monkeypatch.setattr(psutil.Process, "children", scanned)
    agent._io_priority(os.getpid(), os.getpid())


@pytest.mark.parametrize("code", [0, 3, 300])
def test_a_command_child_says_its_status_once_its_caller_s_streams_are_let_go(
        code: int, tmp_path: Path) -> None:
    """Its caller hears how it ended before the kernel tears down its copy
    of the agent (3-7 ms), so by then what it printed is all out, and the
    caller's streams and directory are let go (an ``umount`` of it found
    the child there); the status is the one its exit gives. The child is
    held at its exit here, to see it in between."""
    ended_r, ended_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ended_r)
            os.close(out_r)
            os.chdir(tmp_path)
            os.dup2(out_w, 1)
            os.close(out_w)
            sys.stdout = open(1, "w", closefd=False)
            print("all of it", end="")  # in the buffer until the exit flushes it
            agent._ended_fd = ended_w
            os._exit = lambda status: signal.pause()  # type: ignore[assignment]
            agent.exit_process(code)
        finally:
            os._exit(99)
    try:
        os.close(ended_w)
        os.close(out_w)
        with os.fdopen(ended_r, "rb") as said:
            assert said.readline() == b"%d\n" % (code & 0xFF)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        os.set_blocking(out_r, False)
        with os.fdopen(out_r, "rb") as out:
            assert out.read() == b"all of it"
            assert out.read() == b""  # its end: no other holder, the child alive
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
