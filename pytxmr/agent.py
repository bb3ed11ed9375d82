"""The client agent: a process that has imported the command line and forks
a child per command (``PYTXMR_AGENT=on``).

A cluster command (``submit``, ``jobs``, ``status``...) spends about 0.2 s
importing Twisted, PB and cred before it says a word to the jobtracker: as
long as a small job takes on the cluster (``run`` imports its daemons too).
With ``PYTXMR_AGENT`` set, the first such command starts an agent in the
background and runs as before; the next ones hand their arguments,
working directory, environment and standard streams to it over a Unix
socket. The agent forks a child that runs the command as ``python -m
pytxmr`` would have (``cli.entry``, its output on the caller's streams),
passes on the signals the caller gets (Ctrl-C does what it does there),
and the child's exit status becomes the caller's. It is the zygote's idea
(``pytxmr.zygote``) applied to the client, as a build tool's daemon is.
Once a ``run`` ended, the agent starts a zygote for the next (``_Spare``).

The agent serves only its own user (the socket's directory is private,
and each peer's uid is checked), and only callers of its identity (the
same Python, interpreter settings, pytxmr, import path, startup
environment, groups, priority, limits, personality, namespaces: see
``_identity``; others have agents of their own) whose pytxmr sources and
installed packages have not changed since it imported them (else it
retires, and the caller starts a fresh one). It exits after
``PYTXMR_AGENT``'s idle time, its last caller's. Without an agent, or if
it cannot take a command, the command runs in its own process; an agent
that dies (or stops) under a running command leaves that command's
outcome unknown to its caller (exit 3), as a lost jobtracker does.

The caller's side (``delegated``) runs before anything heavy is imported,
so it uses the standard library's light modules only.
"""

from __future__ import annotations

# _signal and _socket, not signal and socket: those make enums of their
# constants as they are imported, 7 ms of a caller's start (which is 25 ms).
import _signal
import _socket
import os
import stat
import sys
import zlib

TYPE_CHECKING = False  # typing itself is 3 ms of a caller's start
if TYPE_CHECKING:
    import socket
    from typing import Any, NoReturn

#: What PYTXMR_AGENT turns on; a number is the idle time in seconds.
ENV = "PYTXMR_AGENT"
DEFAULT_IDLE = 900.0
ON = frozenset({"1", "on", "yes", "true"})
OFF = frozenset({"", "0", "off", "no", "false"})

#: The commands that talk to a running jobtracker, and ``run`` (its local
#: cluster's daemons are this process's own code, its tasks a zygote's
#: children, as in its own process). Not the local ones (``certs``,
#: ``users``...): they import little, and ``users`` asks for passwords.
COMMANDS = frozenset({"run", "submit", "jobs", "wait", "status", "kill", "workers", "drain",
                      "logs"})

#: Signals the caller passes on to the command's child. SIGKILL cannot be:
#: the agent kills the child when its caller's connection closes.
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
             _signal.SIGUSR1, _signal.SIGUSR2)

#: The environment the agent and its children were started with, as far as
#: it decides how Python starts (encodings, hash seed, warnings, time zone,
#: the dynamic linker's LD_PRELOAD, the C library's allocator: glibc reads
#: MALLOC_ARENA_MAX and GLIBC_TUNABLES once, at a process's start): a
#: caller whose own differs gets an agent of its own.
_STARTUP_ENV = ("PYTHON", "LANG", "LC_", "TZ", "LD_", "MALLOC_", "GLIBC_TUNABLES")

#: A request larger than this is not one (a caller's environment is a few KB).
MAX_REQUEST = 4 << 20

#: How long a caller waits for its agent to fork the command's child (a
#: millisecond, usually) before it runs the command itself; and for its
#: word on how the child ended, once it has.
ANSWER_TIMEOUT = 2.0


def idle_limit(value: str | None) -> float | None:
    """``PYTXMR_AGENT``'s meaning: None for no agent, or how long an idle
    agent lives, in seconds."""
    text = (value or "").strip().lower()
    if text in OFF:
        return None
    if text in ON:
        return DEFAULT_IDLE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        print(f"pytxmr: {ENV}={value!r} is not on, off or a number of seconds; "
              f"running without the agent", file=sys.stderr)
        return None
    return seconds


def _package_stamps() -> list[list[Any]]:
    """pytxmr's own sources, as (path, mtime, size): an edited or upgraded
    pytxmr is not the one an agent imported."""
    top = os.path.dirname(os.path.abspath(__file__))
    stamps: list[list[Any]] = []
    todo = [top]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False) and e.name != "__pycache__":
                    todo.append(e.path)
                elif e.name.endswith(".py"):
                    st = e.stat()
                    stamps.append([e.path[len(top):], st.st_mtime_ns, st.st_size])
    return sorted(stamps)


def _import_path() -> tuple[str, list[str]]:
    """The command's own first entry of ``sys.path`` (its script's
    directory, or the working directory of ``python -m``, which pytxmr
    dropped: ``syspath.drop_if_main``) and the entries after it, which a
    caller and its agent share."""
    from .syspath import dropped

    if dropped:
        return dropped[0], sys.path
    return (sys.path[0] if sys.path else ""), sys.path[1:]


def _installs() -> list[list[Any]]:
    """The mtimes of the import path's package directories: a package
    installed or removed changes its directory's. (Not every directory's:
    a project's or a home directory's changes with every file saved.)"""
    stamps: list[list[Any]] = []
    for entry in _import_path()[1]:
        if os.path.basename(entry) in ("site-packages", "dist-packages"):
            try:
                stamps.append([entry, os.stat(entry).st_mtime_ns])
            except OSError:
                stamps.append([entry, None])
    return stamps


def _identity() -> str:
    """Who may share an agent: the same Python, interpreter settings, pytxmr
    and import path (the entries after the caller's own directory), the
    same startup environment, and what a child has of the agent's, not of
    its caller's: groups (the files it may open), priority, resource
    limits, CPUs, scheduling policy, cgroup, OOM score, personality, core
    dump filter, capabilities (``nice pytxmr run``, ``ulimit -v``,
    ``taskset``, ``chrt``, ``systemd-run``, ``choom``, ``setarch``,
    ``setpriv``), and namespaces and root (a command run in another network
    namespace must reach that network's jobtracker). The I/O priority
    (``ionice``), which only a system call tells, a child takes from its
    caller instead (``_io_priority``)."""
    import resource

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_STARTUP_ENV))
    limits = [resource.getrlimit(getattr(resource, name)) for name in sorted(dir(resource))
              if name.startswith("RLIMIT_")]
    places = []
    for ns in ("net", "mnt", "pid", "uts", "ipc", "user"):
        try:
            places.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            places.append("")
    status = _proc("status")  # capabilities (setpriv, capsh), no_new_privs, seccomp
    # personality: `setarch -R` (no address randomization), `linux32`.
    places += [_proc("cgroup"), _proc("oom_score_adj"), _proc("personality"),
               _proc("coredump_filter"),
               [line for line in status.splitlines() if line.startswith(_STATUS_FIELDS)]]
    root = os.stat("/")
    return repr([sys.executable, sys.flags, sys.warnoptions,
                 sorted(map(str, sys._xoptions.items())),
                 os.path.dirname(os.path.abspath(__file__)), _import_path()[1], env,
                 os.getgid(), os.getegid(), sorted(os.getgroups()),
                 os.getpriority(os.PRIO_PROCESS, 0), limits, sorted(os.sched_getaffinity(0)),
                 os.sched_getscheduler(0), places, (root.st_dev, root.st_ino)])


#: The lines of /proc/self/status a child has of the agent, not of its caller.
_STATUS_FIELDS = ("Cap", "NoNewPrivs", "Seccomp")


def _proc(name: str) -> str:
    """/proc/self/NAME, or "" where there is none."""
    try:
        with open(f"/proc/self/{name}") as f:
            return f.read()
    except OSError:
        return ""


def stamp(identity: str) -> str:
    """What a caller and its agent must share for a child of the agent to run
    a command as the caller itself would: its identity, and the versions of
    what the agent imported."""
    return repr([identity, sys.version, _installs(), _package_stamps()])


def socket_path(identity: str) -> str | None:
    """Where this Python's agent listens: a directory only this user may use
    ($XDG_RUNTIME_DIR, else one of our own under /tmp), or None if there is
    no such directory (the command then runs without an agent)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "pytxmr") if runtime else f"/tmp/pytxmr-agent-{os.getuid()}"
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(base)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # not ours alone: another user could listen there
    # One per identity: callers that differ never share, nor retire, an agent.
    path = os.path.join(base, f"agent-{zlib.crc32(identity.encode()):08x}.sock")
    return path if len(path.encode()) < 100 else None  # sun_path holds 108 bytes


def _streams_open() -> bool:
    """Whether stdin, stdout and stderr are all open: a command started with
    one closed runs here, where Python's own handling of that applies."""
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return False
    return True


def _runs_here(argv: list[str]) -> bool:
    """Whether a command must run in its own process: it names one of its
    own file descriptors (``--secret-file <(...)``: only the standard
    streams go to the child), or it may ask for a password (on /dev/tty,
    which a child of the agent has not), or it loads the job's module itself
    (``run --inline``, ``--help-job``)."""
    if any("/dev/fd/" in a or "/proc/self/" in a for a in argv):
        return True
    options = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")]
    # argparse takes abbreviations: --in for --inline, --help-j for --help-job.
    if any("--help-job".startswith(o) and len(o) > 6 for o in options) or (
            argv[1] == "run" and any("--inline".startswith(o) and len(o) > 2 for o in options)):
        # The job's modules load in the command's process: what the agent
        # imported (html, calendar...) would shadow a helper of that name.
        return True
    user = os.environ.get("PYTXMR_USER") or any("--user".startswith(o) and len(o) > 2
                                                 for o in options)
    password = os.environ.get("PYTXMR_PASSWORD") or any(
        "--password-file".startswith(o) and len(o) > 4 for o in options)
    return bool(user and not password and os.isatty(0))


def delegated(argv: list[str]) -> int | None:
    """Run ``argv`` (``sys.argv``) in a child of this user's agent: the
    command's exit status, or None if it is to run in this process (no
    agent wanted, not a cluster command, no agent running: one is started
    for the next command)."""
    idle = idle_limit(os.environ.get(ENV))
    if idle is None or len(argv) < 2 or argv[1] not in COMMANDS or not _streams_open() \
            or _runs_here(argv):
        return None
    try:
        return _delegate(argv, idle)
    except KeyboardInterrupt:
        # Before the command ran (it runs once we pass signals on, which
        # then raise nothing here): said as a command's own start says it,
        # not as a traceback. Its child, left waiting for our go, is ended.
        print("pytxmr: interrupted", file=sys.stderr)
        return 128 + _signal.SIGINT


def _delegate(argv: list[str], idle: float) -> int | None:
    identity = _identity()  # 0.4 ms: once
    path = socket_path(identity)
    if path is None:
        return None
    umask = os.umask(0o22)
    os.umask(umask)
    try:
        request = {"stamp": stamp(identity), "idle": idle, "argv": list(argv),
                   "cwd": os.getcwd(), "path0": _import_path()[0], "env": dict(os.environ),
                   "umask": umask,
                   # what we were started ignoring (nohup, a shell's background)
                   "ignored": [int(sig) for sig in FORWARDED
                               if _signal.getsignal(sig) == _signal.SIG_IGN],
                   # python -u: in no flag an agent's start could be given
                   "unbuffered": bool(getattr(sys.stdout, "write_through", False))}
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:  # the working directory is gone, no sockets: run here, and fail here
        return None
    try:
        answers = _Lines(conn)
        try:
            pid = _hand_over(conn, answers, path, request)
        except OSError:  # none there, a full backlog, no answer in time
            pid = None
        if pid is None:  # none there, or one that may not serve us: a fresh one
            _start_agent(path, idle)
            return None
        return _await_child(conn, answers, pid, request["ignored"])
    finally:
        conn.close()


class _Lines:
    """The agent's answers, a line at a time (``socket.makefile``'s
    ``readline``, without importing ``socket``)."""

    def __init__(self, conn: _socket.socket) -> None:
        self._conn = conn
        self._pending = b""

    def readline(self) -> bytes:
        while b"\n" not in self._pending:
            data = self._conn.recv(4096)
            if not data:  # its end: what came before it
                line, self._pending = self._pending, b""
                return line
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"


def _hand_over(conn: _socket.socket, answers: _Lines, path: str,
               request: dict[str, Any]) -> int | None:
    """Send the request, then (if the agent takes it) our standard streams;
    the child's pid, or None if the agent retired instead. The streams go
    last: sent to an agent that never reads them, they would keep our
    reader waiting for their end after we are gone."""
    conn.settimeout(ANSWER_TIMEOUT)
    conn.connect(path)
    # Its repr, read back with ast.literal_eval: json is 5 ms of a caller's start.
    body = repr(request).encode()
    conn.sendall(len(body).to_bytes(4, "big") + body)
    if answers.readline() != b"streams\n":
        return None
    # Our directory too, as a descriptor: by its path, one whose parents the
    # child may not search (chmod 000 ../..) could not be entered.
    here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, here))  # C ints
        conn.sendmsg([b"s"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    finally:
        os.close(here)
    answer = answers.readline().split()
    if len(answer) != 2 or answer[0] != b"pid":
        return None
    return int(answer[1])


def _die_of(signum: int) -> None:
    """End by ``signum`` (the OOM killer's SIGKILL, a SIGHUP), as the
    command did; without a core of our own (a SIGQUIT's, a SIGSEGV's: the
    command's, not ours)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if signum != _signal.SIGKILL:  # whose action cannot be set
        _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _await_child(conn: _socket.socket, answers: _Lines, pid: int, ignored: list[int]) -> int:
    """Let the child run, and pass our signals on to it until the agent says
    how it ended: its exit status, as a shell reports it (128 + a signal
    that killed it)."""

    import select

    try:  # the child itself, not whatever process gets its pid once it is reaped
        child: int | None = os.pidfd_open(pid)
    except OSError:
        child = None

    def forward(signum: int, frame: Any) -> None:
        try:
            if child is None:
                os.kill(pid, signum)
            else:
                _signal.pidfd_send_signal(child, signum)
        except OSError:  # it has ended
            pass

    def stop(signum: int, frame: Any) -> None:
        """Ctrl-Z stops the command, then us; it goes on when we do, or at
        once if our stop was discarded (a process group with no shell)."""
        forward(_signal.SIGSTOP, frame)
        _signal.signal(_signal.SIGTSTP, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGTSTP)
        forward(_signal.SIGCONT, frame)
        _signal.signal(_signal.SIGTSTP, stop)

    for signum in FORWARDED:
        if signum not in ignored:
            _signal.signal(signum, forward)
    if _signal.getsignal(_signal.SIGTSTP) != _signal.SIG_IGN:
        _signal.signal(_signal.SIGTSTP, stop)
    conn.settimeout(None)
    try:
        conn.sendall(b"go\n")  # now the child runs: we will not run the command here
    except OSError:  # the agent died since it forked the child
        pass  # (which then never runs it): said below
    if child is not None:  # ended: the agent says so at once, unless it is stopped
        select.select([conn, child], [], [])
        if not select.select([conn], [], [], 0)[0]:
            conn.settimeout(ANSWER_TIMEOUT)
    try:
        answer = answers.readline().split()
    except OSError:  # no answer in time, or the agent died (a reset connection)
        answer = []
    if len(answer) == 2 and answer[0] == b"exit":
        code = os.waitstatus_to_exitcode(int(answer[1]))
        if code < 0:  # killed by a signal: so are we, as our parent must see
            _die_of(-code)
            return 128 - code  # a signal that does not end a process
        return code
    # The agent went away (killed, out of memory) or does not answer. Its
    # child goes on with our streams: we end with it (and pass it our
    # signals until then), so that no one retries a command still running;
    # but no one can tell its status.
    if child is not None:
        select.select([child], [], [])  # readable once it has ended
    print(f"pytxmr: the client agent ended before its command (pid {pid}), or does not "
          f"answer; the command's outcome is unknown", file=sys.stderr)
    return 3  # EXIT_UNREACHABLE: trying again may tell


def _start_agent(path: str, idle: float) -> None:
    """Start an agent for the next command, in the background, in a session
    of its own, holding none of our streams (a ``$(pytxmr jobs)`` must not
    wait for it). Two started at once: one takes the socket, one leaves."""
    import subprocess

    # No secret in its environment (each child gets its own caller's).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTXMR_PASSWORD", "PYTXMR_SECRET")}
    code = ("import sys; sys.path[0] = sys.argv[1]; from pytxmr.agent import main; "
            "sys.exit(main(sys.argv[2:]))")
    # A directory python -m pytxmr dropped stays dropped: the agent's own
    # imports (socket...) found a user's module there, and it died.
    from .syspath import dropped

    first = os.devnull if dropped else _import_path()[0]
    argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code,
            first, path, str(idle)]
    # Spawned, not a Popen: one left running warns (ResourceWarning) in a
    # command with warnings on. In our directory: a relative entry of
    # PYTHONPATH means what it means here. None of our descriptors goes
    # with it: what Python opened is not inheritable (PEP 446), but what we
    # inherited is (a cron script's lock on fd 9, a shell's `2> >(tee
    # log)`), and the agent would hold it for its idle time.
    actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_descriptors()]
    try:
        os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    except OSError:
        pass  # no agent, then: every command runs in its own process


def _inherited_descriptors() -> list[int]:
    """Our inheritable descriptors past the standard streams."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    held = []
    for fd in fds:
        try:
            if fd > 2 and os.get_inheritable(fd):
                held.append(fd)
        except OSError:
            pass  # the listing's own descriptor, closed since
    return held


# The agent's side: nothing below runs in a caller.

#: What a command imports (the rest follows from these): a cluster
#: command's, and ``run``'s daemons.
_WARM = ("twisted.internet.default", "twisted.internet.epollreactor",
         "twisted.internet.endpoints", "pytxmr.cli", "pytxmr.client", "pytxmr.addresses",
         "pytxmr.auth", "pytxmr.jobmodule", "pytxmr.output", "pytxmr.pbwire", "pytxmr.readers",
         "pytxmr.secret", "pytxmr.tls", "pytxmr.users", "pytxmr.embedded",
         "pytxmr.localcluster", "pytxmr.jobtracker.service", "pytxmr.tasktracker.service")


def _warm() -> None:
    """Import what a cluster command imports, but for the reactor itself:
    each child installs its own (an epoll reactor made here would be one
    epoll set shared by every child)."""
    import importlib

    for name in _WARM:
        importlib.import_module(name)
    # Each command's parser, as either name of the program would build it,
    # and a command line parsed once: what argparse imports and compiles on
    # its first parse (2 ms), and the 3-4 ms of building a parser in a
    # child, are every child's already.
    from .cli import parse, prebuild_parsers

    prebuild_parsers(COMMANDS)
    parse(["submit", "job.py", "input", "-o", "output"])
    try:
        importlib.import_module("psutil")  # each child's _io_priority
    except ImportError:
        pass
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("a reactor was installed while warming up")


#: In a command's child: the pipe on which it tells the agent its exit
#: status before it exits (see exit_process).
_ended_fd: int | None = None


def _fork() -> tuple[int | None, int, int]:
    """Fork a command's child, which waits for its caller's go: (its pid,
    the pipe to send the go on, the pipe it says its exit status on), (0,
    -1, -1) in the child once it has its go, or (None, -1, -1) if no child
    could be made. The signals a caller passes on wait, blocked, until the
    child is its command (see main): one that came before would be the
    agent's, and interrupt nothing of the command's."""
    global _ended_fd
    try:
        go_r, go_w = os.pipe()
    except OSError:
        return None, -1, -1
    try:
        ended_r, ended_w = os.pipe()
    except OSError:
        for fd in (go_r, go_w):
            os.close(fd)
        return None, -1, -1
    _signal.pthread_sigmask(_signal.SIG_BLOCK, FORWARDED)
    try:
        pid = os.fork()
    except OSError:
        for fd in (go_r, go_w, ended_r, ended_w):
            os.close(fd)
        pid = None
    if pid == 0:
        for fd in (go_w, ended_r):
            os.close(fd)
        go = os.read(go_r, 1)
        os.close(go_r)
        if go != b"g":  # our caller gave up on us, and runs the command itself
            os._exit(0)
        _ended_fd = ended_w
        return 0, -1, -1
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, FORWARDED)
    if pid is None:
        return None, -1, -1
    for fd in (go_r, ended_w):
        os.close(fd)
    return pid, go_w, ended_r


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("cut short")
        data += chunk
    return data


class _Request:
    """A caller's command, received: what its child becomes."""

    def __init__(self, conn: socket.socket, fds: list[int], body: dict[str, Any],
                 caller: int) -> None:
        self.conn = conn
        self.fds = fds
        self.body = body
        self.caller = caller  # its pid
        self.zygote: _Spare | None = None  # for a run: the agent's spare, if it fits

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.conn.close()


def _run_key(body: dict[str, Any]) -> tuple[Any, ...] | None:
    """For a ``run`` request, what its zygote is started with: the
    environment a zygote gets of the caller's, the caller's directory and
    umask. (The rest, Python and its settings, limits, priority,
    namespaces, is the agent's identity, and so its caller's; the I/O
    priority the child gives it, see main.)"""
    argv = body.get("argv")
    if not isinstance(argv, list) or argv[1:2] != ["run"]:
        return None
    from .child import child_env

    return tuple(sorted(child_env(body["env"]).items())), body["cwd"], body["umask"]


#: Seconds a spare zygote waits for its run: it holds the environment a
#: run's tasks get (credentials among it), as that run's own zygote did.
SPARE_IDLE = 60.0


class _Spare:
    """A zygote started by the agent for its next ``run`` command, as that
    command's child would start its own (``child.Zygote.start``), once the
    last ``run`` like it ended: the child adopts it (``localcluster.give_zygote``)
    instead of waiting 0.04-0.06 s for its own to import the task code.
    It is the agent's child, but ends with whoever holds its stdin: the
    agent, then the child that took it (``zygote.serve``'s ``spare``)."""

    def __init__(self, pid: int, stdio: int, stderr: int, key: tuple[Any, ...],
                 expires: float) -> None:
        self.pid = pid
        self.stdio = stdio  # our end of its stdin and stdout
        self.stderr = stderr
        self.key = key
        self.expires = expires  # time.monotonic()'s

    @classmethod
    def start(cls, key: tuple[Any, ...]) -> _Spare | None:
        import socket
        import time

        from .child import zygote_argv

        env, cwd, umask = key
        argv = zygote_argv(spare=True)
        try:  # by its path: one we cannot enter gets no spare, rather than one that fails
            here = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        stdio, stderr = socket.socketpair(), socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            pid = None
        if pid == 0:
            try:  # as a process Twisted spawns: no signal ignored, the streams wired
                for signum in _signal.valid_signals():
                    if _signal.getsignal(signum) == _signal.SIG_IGN:
                        _signal.signal(signum, _signal.SIG_DFL)
                for fd, end in ((0, stdio[1]), (1, stdio[1]), (2, stderr[1])):
                    os.dup2(end.fileno(), fd)  # the rest closes at the exec
                # Where the command's own zygote starts: its import path is
                # made absolute from there (it leaves for / once started).
                os.fchdir(here)
                os.umask(umask)
                os.execve(argv[0], argv, dict(env))
            finally:
                os._exit(127)
        os.close(here)
        stdio[1].close()
        stderr[1].close()
        if pid is None:
            stdio[0].close()
            stderr[0].close()
            return None
        return cls(pid, stdio[0].detach(), stderr[0].detach(), key,
                   time.monotonic() + SPARE_IDLE)

    def close(self) -> None:
        for fd in (self.stdio, self.stderr):
            os.close(fd)


class Agent:
    """Accepts callers, forks a child per command, reports each child's end
    to its caller, and exits when idle."""

    def __init__(self, listener: socket.socket, path: str, lock_fd: int, own_stamp: str,
                 idle: float) -> None:
        self.listener = listener
        self.path = path
        self.inode = os.stat(path).st_ino  # the socket's file, as bound
        self.lock_fd: int | None = lock_fd  # held while we take callers
        self.stamp = own_stamp
        self.idle = idle
        #: pid: its caller's connection; None once told how the child ended
        self.children: dict[int, socket.socket | None] = {}
        self.waiting: dict[int, int] = {}  # pid: the pipe its child awaits its go on
        self.ending: dict[int, int] = {}  # pid: the pipe its child says its exit status on
        self.retired = False
        #: A zygote started for the next ``run`` like the last (see _Spare),
        #: and what each ``run`` child's zygote is started with.
        self.spare: _Spare | None = None
        self.runs: dict[int, tuple[Any, ...]] = {}

    def serve(self) -> _Request | None:
        """Serve until idle (None), or, in a forked child, return its request."""
        import selectors
        import time

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        _signal.set_wakeup_fd(wake_w)
        _signal.signal(_signal.SIGCHLD, lambda signum, frame: None)  # wakes the select
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "children")
        last = time.monotonic()
        while not (self.retired and not self.children):
            timeout = min(self.idle, 60.0)
            if self.spare is not None:
                timeout = max(0.0, min(timeout, self.spare.expires - time.monotonic()))
            events = sel.select(timeout=timeout)
            if self.spare is not None and time.monotonic() >= self.spare.expires:
                self.spare.close()  # unused: it ends (and is reaped below)
                self.spare = None
            for key, _ in events:
                if sel.get_map().get(key.fd) is not key:
                    # Done with earlier in this batch: a child reaped (its
                    # pipe closed), a caller told (its connection closed).
                    continue
                if key.data == "accept":
                    request = self._accept(sel)
                    if request is None:
                        continue
                    run = _run_key(request.body)
                    if run is not None and self.spare is not None and self.spare.key == run:
                        request.zygote, self.spare = self.spare, None
                    # The child waits for its caller's go: a caller that gave
                    # up on us runs the command itself, which must not run twice.
                    pid, go_w, ended_r = _fork()
                    if pid == 0:  # the child: none of the agent's files stay open
                        _signal.set_wakeup_fd(-1)
                        sel.close()
                        for fd in (wake_r, wake_w):
                            os.close(fd)
                        self._as_child()
                        return request
                    if request.zygote is not None:  # the child's now (or, unforked, no one's)
                        request.zygote.close()
                    if pid is None:  # out of files or processes: the caller runs it
                        request.close()
                        continue
                    self._started(sel, request, pid, go_w, ended_r)
                    if run is not None:
                        self.runs[pid] = run
                    # The last caller's idle time is ours (PYTXMR_AGENT=SECS).
                    idle = request.body.get("idle")
                    if isinstance(idle, (int, float)) and 0 < idle < float("inf"):
                        self.idle = float(idle)
                elif key.data == "children":
                    os.read(wake_r, 4096)
                    self._reap(sel)
                elif isinstance(key.data, tuple):  # ("ended", pid)
                    self._ended(sel, key.data[1])
                else:  # a caller's connection: it closed, or sent what it may not
                    self._caller_said(sel, key.fileobj, key.data)
            if events:
                last = time.monotonic()
            elif (not self.children and time.monotonic() - last >= self.idle) \
                    or not self._still_ours():
                self._retire(sel)
            self._reap(sel)  # a SIGCHLD lost to a full pipe
        return None

    def _accept(self, sel: Any) -> _Request | None:
        import ast
        import socket

        try:
            conn, _ = self.listener.accept()
        except OSError:
            return None
        try:
            conn.settimeout(1.0)  # a caller sends its request at once: others wait meanwhile
            creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            caller = int.from_bytes(creds[0:4], sys.byteorder)
            if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
                conn.close()  # the directory is private; still, not our user's
                return None
            size = int.from_bytes(_read(conn, 4), "big")
            if not 0 < size <= MAX_REQUEST:
                raise ValueError("not a request")
            body = ast.literal_eval(_read(conn, size).decode())
            if not isinstance(body, dict):
                raise ValueError("not a request")
            if body.get("stamp") != self.stamp:
                # pytxmr or a package changed since we imported them: retire,
                # so that the caller's new agent can listen here, and finish
                # our children first.
                self._retire(sel)
                conn.sendall(b"stale\n")
                raise ValueError("not ours")
            conn.sendall(b"streams\n")
            _, fds, _, _ = socket.recv_fds(conn, 1, 4)
        except Exception:  # a caller gone, or not one: no command
            conn.close()
            return None
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        return _Request(conn, fds, body, caller)

    def _started(self, sel: Any, request: _Request, pid: int, go: int, ended: int) -> None:
        for fd in request.fds:
            os.close(fd)
        conn = request.conn
        try:
            conn.sendall(b"pid %d\n" % pid)
        except OSError:
            pass
        conn.setblocking(False)
        self.children[pid] = conn
        self.waiting[pid] = go
        self.ending[pid] = ended
        sel.register(conn, 1, pid)  # EVENT_READ: its caller left
        sel.register(ended, 1, ("ended", pid))

    def _ended(self, sel: Any, pid: int) -> None:
        """A child said its exit status, or ended without a word (then its
        reaping tells). Its caller hears it now, not once the kernel has torn
        down a copy of the agent (3-7 ms); the child has let go of the
        caller's streams already."""
        ended = self.ending.pop(pid, None)
        if ended is None:  # reaped already
            return
        try:
            said = os.read(ended, 8)
        except OSError:
            said = b""
        sel.unregister(ended)
        os.close(ended)
        conn = self.children.get(pid)
        if not said.endswith(b"\n") or not said[:-1].isdigit() or conn is None:
            return
        self.children[pid] = None
        self._tell(sel, conn, int(said) << 8)  # a wait status: that of an exit

    def _tell(self, sel: Any, conn: socket.socket, status: int) -> None:
        """Tell a caller how its child ended, and let it go."""
        try:
            sel.unregister(conn)
        except KeyError:
            pass  # its caller had gone
        try:
            conn.setblocking(True)
            conn.sendall(b"exit %d\n" % status)
        except OSError:
            pass
        conn.close()

    def _caller_said(self, sel: Any, conn: socket.socket, pid: int) -> None:
        """A caller's connection became readable: its go (its child runs the
        command), or its end. A caller that ended (killed: SIGKILL cannot be
        passed on) takes its command with it, as in its own process."""
        try:
            data = conn.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        go = self.waiting.pop(pid, None)
        if go is not None:
            if data.startswith(b"g"):  # "go\n"
                try:
                    os.write(go, b"g")
                except OSError:  # the child is gone already (killed): reaped soon
                    pass
            os.close(go)  # without its go, the child leaves at once
        if data:
            return
        sel.unregister(conn)
        try:
            os.kill(pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap(self, sel: Any) -> None:
        while True:  # a spare, or a zygote a child took, may end while none runs
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare.pid:  # it died
                self.spare.close()
                self.spare = None
                continue
            if pid not in self.children:
                continue  # an orphan we adopted: a zygote we gave a child, a spare we closed
            conn = self.children.pop(pid)
            go = self.waiting.pop(pid, None)
            if go is not None:
                os.close(go)
            ended = self.ending.pop(pid, None)
            if ended is not None:  # it died before it could say
                sel.unregister(ended)
                os.close(ended)
            if conn is not None:  # else told already (_ended)
                self._tell(sel, conn, status)
            run = self.runs.pop(pid, None)
            if run is not None and not self.retired and (self.spare is None
                                                         or self.spare.key != run):
                if self.spare is not None:  # for a run unlike the last: it goes
                    self.spare.close()
                # Now, not as it ran: two zygotes starting at once slowed its tasks.
                self.spare = _Spare.start(run)

    def _still_ours(self) -> bool:
        """Whether the socket's path still leads to us (a /tmp cleaner, or a
        newer agent, may have taken it)."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def _retire(self, sel: Any) -> None:
        """Take no more callers: free the path (and its lock) for a new agent,
        and leave no file behind (an identity, e.g. a terminal's cgroup, may
        never come back)."""
        if self.retired:
            return
        self.retired = True
        if self._still_ours():
            os.unlink(self.path)
        sel.unregister(self.listener)
        self.listener.close()
        if self.spare is not None:
            self.spare.close()  # it reads its stdin's end, and exits
            self.spare = None
        if self.lock_fd is not None:
            # Removed while held: an agent that opens it after this finds its
            # lock on a file no longer there, and leaves (see main).
            for suffix in (".log", ".lock"):
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass
            os.close(self.lock_fd)
            self.lock_fd = None

    def _as_child(self) -> None:
        """In a forked child: a caller waits for its connection's end, and a
        new agent for the lock."""
        self.listener.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
        if self.spare is not None:  # not ours to take (a command given one has it)
            self.spare.close()
        for conn in self.children.values():
            if conn is not None:
                conn.close()
        for fd in (*self.waiting.values(), *self.ending.values()):
            os.close(fd)


def _io_priority(source: int, target: int, children: bool = False) -> None:
    """Give process ``target`` the I/O priority of ``source``: a child takes
    its caller's (a cron job's ``ionice -c 3 pytxmr ...`` that started the
    agent made every later command's disk I/O idle, and a command under
    ``ionice`` got the agent's), and gives it to the zygote it adopts, and
    with ``children`` to that zygote's children, forked before (its standby,
    which takes the job's module check: psutil finds them by reading every
    process's /proc entry, 2 ms, so only there). (psutil: Python has no
    call for it, and the system call's number differs by architecture.)"""
    try:
        import psutil
    except ImportError:  # installed before psutil was a dependency: as before it
        return
    try:
        wanted = psutil.Process(source).ionice()
        given = psutil.Process(target)
        # The target first: what it forks from now on takes its priority.
        if given.ionice() != wanted:
            _set_io_priority(psutil, given, wanted)
        forked = given.children() if children else []
    except (psutil.Error, OSError):
        return  # the caller is gone (and its command with it), or its class is not ours to take
    for child in forked:
        try:
            if child.ionice() != wanted:
                _set_io_priority(psutil, child, wanted)
        except (psutil.Error, OSError):
            pass  # ended meanwhile


def _set_io_priority(psutil: Any, process: Any, wanted: Any) -> None:
    if wanted.ioclass in (psutil.IOPRIO_CLASS_RT, psutil.IOPRIO_CLASS_BE):
        process.ionice(wanted.ioclass, wanted.value)
    else:
        process.ionice(wanted.ioclass)


def _become(request: _Request) -> None:
    """The forked child becomes the caller's process: its streams, working
    directory, environment, arguments and signals."""
    import io
    import time

    body = request.body
    _io_priority(request.caller, os.getpid())
    request.conn.close()
    for fd, target in zip(request.fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    for signum in FORWARDED:  # as Python sets them up, from what the caller inherited
        if signum in body["ignored"]:
            _signal.signal(signum, _signal.SIG_IGN)
        else:
            _signal.signal(signum, _signal.default_int_handler if signum == _signal.SIGINT
                           else _signal.SIG_DFL)
    os.umask(body["umask"])
    os.environ.clear()
    os.environ.update(body["env"])
    time.tzset()
    sys.argv = list(body["argv"])
    sys.path.insert(0, body["path0"])  # the agent's own first entry is gone (see main)
    unbuffered = bool(body.get("unbuffered"))

    def stream(fd: int, old: Any, errors: str | None, line: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        if fd == 0:
            binary: Any = io.BufferedReader(raw)
        else:
            # Python's own size: the file's block size (a pipe's 4 KiB)
            size = os.fstat(fd).st_blksize
            binary = raw if unbuffered else io.BufferedWriter(
                raw, size if size > 1 else io.DEFAULT_BUFFER_SIZE)
        return io.TextIOWrapper(binary, encoding=old.encoding, errors=errors or old.errors,
                                line_buffering=line, write_through=unbuffered and fd != 0)

    sys.stdin = sys.__stdin__ = stream(0, sys.__stdin__, None, os.isatty(0))
    sys.stdout = sys.__stdout__ = stream(1, sys.__stdout__, None, os.isatty(1))
    sys.stderr = sys.__stderr__ = stream(2, sys.__stderr__, "backslashreplace", True)
    os.fchdir(request.fds[3])  # last: if it fails, the error goes to the caller's stderr
    os.close(request.fds[3])


def main(argv: list[str]) -> int:
    """The agent: ``argv`` is its socket's path and its idle time. Returns
    when it is done; in a forked child, runs a command (and exits with it)."""
    import fcntl
    import gc
    import socket

    path, idle = argv[0], float(argv[1])
    own_stamp = stamp(_identity())  # before the imports: a caller computes it before its own
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path + ".lock").st_ino != os.fstat(lock_fd).st_ino:
            return 0  # a retired agent's lock, removed meanwhile: ours is not the lock
    except (BlockingIOError, FileNotFoundError):
        return 0  # another caller's agent got there first
    log = os.open(path + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 2)  # why an agent could not start, or died
    os.close(log)
    os.chdir("/")  # no directory of the first caller's held busy
    # Imports from no caller's directory: a job's own idna.py there would be
    # every later command's. (pytxmr, imported, finds its modules by itself.)
    del sys.path[0]
    _warm()
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a dead agent's: the lock says none lives
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    gc.collect()
    gc.freeze()  # children do not copy the agent's objects by touching them
    request = Agent(listener, path, lock_fd, own_stamp, idle).serve()
    if request is None:
        return 0
    try:
        _become(request)
    except OSError as e:
        print(f"pytxmr: {e}", file=sys.stderr)
        exit_process(1)
    if request.zygote is not None:
        from .localcluster import give_zygote

        give_zygote(request.zygote.stdio, request.zygote.stderr)
        # Ours, our caller's: its tasks'.
        _io_priority(os.getpid(), request.zygote.pid, children=True)
    from .cli import entry, interrupted_status

    try:
        # What the caller passed on meanwhile is delivered now, to the command.
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, FORWARDED)
        entry()
        code = 0
    except KeyboardInterrupt:  # before the command's own handling began
        print("pytxmr: interrupted", file=sys.stderr)
        code = interrupted_status(None)
    except SystemExit as e:  # as Python reads it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    exit_process(code)


def exit_process(code: int) -> NoReturn:
    """End a command's child, or its caller, as Python ends a process, but
    for tearing down the interpreter: 0.02 s of a child (as much as the
    rest of a ``jobs``; the agent made most of what there is to tear down),
    2-3 ms of a caller. A child says its status to the agent first."""
    import atexit

    if "threading" in sys.modules:  # else none was started (a caller's case)
        import threading

        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with it closed (a caller's ``>&-``)
            continue
        try:
            stream.flush()
        except Exception as e:  # said, and ended, as Python's own exit does
            try:
                print(f"Exception ignored in: {stream!r}\n{type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
            except Exception:
                pass
            code = 120
    if _ended_fd is not None:
        # The caller's streams and directory go first: a reader of its pipe
        # (``$(pytxmr jobs)``) sees their end, and an ``umount`` of its
        # directory no user, once the caller exits, not once we do.
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.chdir("/")
            os.write(_ended_fd, b"%d\n" % (code & 0xFF))  # what the kernel would keep
        except OSError:
            pass  # out of descriptors, or the agent is gone: our reaping tells
    os._exit(code)
