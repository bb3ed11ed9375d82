"""The ``pytxmr`` command line: run, submit, jobs, status, kill.

``run`` is the embedded default (a local cluster for one job, or
``--inline`` in this process); the others talk to a running jobtracker.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import json
import os
import shlex
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Sequence

from . import storage
from .localcluster import UNWIND_TIMEOUT, default_slots, start_zygote
from .sizes import size_argument
from .wire import AWAITED_MAPS, RECONNECT_TIMEOUT

if TYPE_CHECKING:
    from .child import Zygote
    from .client import JobSubmission


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def _job_options(p: argparse.ArgumentParser, output_required: bool) -> None:
    p.add_argument("paths", nargs="+", metavar="JOB.py INPUT",
                   help="the job module (a .py file with map and reduce; none with --mapper), "
                        "then the input files, directories or globs: local paths or URLs "
                        "(s3://, http(s)://, file://; see docs/storage.md)")
    p.add_argument("--mapper", metavar="CMD", help="a streaming job: a shell command that "
                   "reads lines and writes key<TAB>value lines (see docs/streaming.md)")
    p.add_argument("--reducer", metavar="CMD", help="the streaming job's reduce command "
                   "(it reads its partition's lines sorted by key); none: map-only")
    p.add_argument("-o", "--output", required=output_required,
                   help="output directory or s3:// prefix (must not exist)")
    p.add_argument("--arg", dest="args", action="append", default=[], type=_name_value,
                   metavar="NAME=VALUE", help="an argument of the job, read in its tasks with "
                   "pytxmr.args() (repeatable; --help-job lists what the job declares)")
    p.add_argument("--py-files", dest="py_files", action="append", default=[], metavar="PATH",
                   help="a module, package directory or .zip to ship with the job (repeatable; "
                        "modules the job imports from its own directory travel anyway)")
    p.add_argument("--files", dest="files", action="append", default=[], metavar="PATH",
                   help="a data file tasks open by its base name in their working directory "
                        "(repeatable)")
    p.add_argument("--help-job", action="store_true",
                   help="list the job's declared arguments and exit")
    p.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                   type=_name_value, metavar="NAME=VALUE",
                   help="a store option for the job's URLs, e.g. endpoint_url=http://host:8333 "
                        "(repeatable; never a credential: see docs/storage.md)")
    p.add_argument("--reducers", type=_positive, help="number of reduce tasks "
                   "(default: the module's num_reducers, else one per slot of the cluster)")
    p.add_argument("--split-size", type=size_argument,
                   help="map split size, e.g. 8M, 64M, 1G (default: input size spread "
                        "over the cluster's slots, between 1M and 128M; run --inline: 128M)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--map", dest="map_name", default="map", help="map function name")
    p.add_argument("--reduce", dest="reduce_name", default="reduce", help="reduce function name")
    p.add_argument("--max-attempts", type=_positive, help="attempts per task before the job "
                   "fails (default 4)")
    p.add_argument("--speculative", action="store_true",
                   help="run backup attempts of straggling tasks (the first to finish wins)")
    p.add_argument("--buffer-records", type=_positive,
                   help="map output values a map buffers before it combines and spills "
                        "(default 1000000)")
    p.add_argument("--compress", choices=["lz4"], help="compress spills and the shuffle "
                   "(needs the lz4 package; default: off, see docs/record-format.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobtracker", default="127.0.0.1:7373", help="HOST:PORT of the jobtracker")
    p.add_argument("--secret-file", help="cluster secret file")
    # Their defaults come from the environment as a command line is parsed
    # (_FROM_ENVIRONMENT): not as a parser is built, once per process.
    p.add_argument("--user",
                   help="log in as this user, at a jobtracker with a users file (default "
                        "$PYTXMR_USER); the password from $PYTXMR_PASSWORD, --password-file, "
                        "or asked for")
    p.add_argument("--password-file", help="a file whose first line is --user's password")
    p.add_argument("--tls", metavar="DIR",
                   help="connect over TLS, checking the jobtracker's certificate against "
                        "DIR/ca.pem (default $PYTXMR_TLS); DIR/cert.pem and key.pem, if "
                        "there, are shown to it")


def _reconnect_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reconnect-timeout", type=float, default=RECONNECT_TIMEOUT,
                   metavar="SECS", help="how long to try to reach a lost jobtracker again "
                   f"(a restarted one resumes its jobs; default {RECONNECT_TIMEOUT:g}; 0: give "
                   "up at once, exit 3)")


def login_options(a: argparse.Namespace) -> dict[str, Any]:
    """How a cluster command logs in: ``client.connect``'s keywords."""
    from .tls import ClusterTLS
    from .users import read_password

    options: dict[str, Any] = {"tls": ClusterTLS.load(a.tls, need_own=False) if a.tls else None}
    if a.user:
        options["user"] = a.user
        options["password"] = read_password(a.user, a.password_file)
    return options


def build_parser(help_job: bool = False, command: str | None = None
                 ) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line's parser, and the parser of each command (``run``
    and ``submit`` parse options between their paths). For ``help_job``,
    a job command needs no output. With ``command``, only that command's
    options are added (the others' names and help stay, for ``--help`` and
    the refusal of a name that is none): 3 ms of every command's start.
    Built once per process: the client agent builds its commands' parsers
    before it forks their children (``agent._warm``)."""
    # "pytxmr" when started as the console script, as usage shows it.
    started_as = os.path.basename(sys.argv[0])
    return _parser(PROGS[0] if started_as == "pytxmr" else PROGS[1], help_job, command)


#: The program's names in usage: as its console script, as a module.
PROGS = ("pytxmr", "python -m pytxmr")


def prebuild_parsers(commands: Iterable[str]) -> None:
    """Build the parsers of ``commands`` under either name (see build_parser)."""
    for prog in PROGS:
        for command in commands:
            _parser(prog, False, command)


@functools.cache
def _parser(prog: str, help_job: bool, command: str | None
            ) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = argparse.ArgumentParser(prog=prog, description="pytxmr: MapReduce for Python on Twisted.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"pytxmr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, (text, options) in _COMMANDS.items():
        parsers[name] = c = sub.add_parser(name, help=text)
        if command is None or command == name:
            options(c, help_job)
    return p, {"run": parsers["run"], "submit": parsers["submit"]}


def _run_options(run: argparse.ArgumentParser, help_job: bool) -> None:
    _job_options(run, output_required=not help_job)
    run.add_argument("--workers", type=_positive, default=2, help="tasktrackers (default 2)")
    run.add_argument("--slots", type=_positive, help="task processes per tasktracker "
                     "(default: CPU count / workers)")
    run.add_argument("--inline", action="store_true",
                     help="run in this one process, no daemons (debugging, baseline)")


def _submit_options(submit: argparse.ArgumentParser, help_job: bool) -> None:
    _job_options(submit, output_required=not help_job)
    _cluster_options(submit)
    _reconnect_option(submit)


def _wait_options(wait: argparse.ArgumentParser, help_job: bool) -> None:
    wait.add_argument("job_id")
    wait.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    _cluster_options(wait)
    _reconnect_option(wait)


def _job_id_options(c: argparse.ArgumentParser, help_job: bool) -> None:
    """``status``'s and ``kill``'s."""
    c.add_argument("job_id")
    c.add_argument("--json", action="store_true", help="the jobtracker's answer as JSON")
    _cluster_options(c)


def _workers_options(workers: argparse.ArgumentParser, help_job: bool) -> None:
    workers.add_argument("--json", action="store_true", help="the jobtracker's answer as JSON")
    _cluster_options(workers)


def _drain_options(drain: argparse.ArgumentParser, help_job: bool) -> None:
    drain.add_argument("worker", help="its worker id (w3) or HOST:PORT of its shuffle server")
    _cluster_options(drain)


def _logs_options(logs: argparse.ArgumentParser, help_job: bool) -> None:
    logs.add_argument("job_id")
    logs.add_argument("task", nargs="?", help="a task (m3, r0, JOB_m00003) or an attempt id "
                      "(default: every attempt)")
    _cluster_options(logs)


def _web_password_options(web: argparse.ArgumentParser, help_job: bool) -> None:
    web.add_argument("--secret-file", help="cluster secret file")


def _certs_options(certs: argparse.ArgumentParser, help_job: bool) -> None:
    certs.add_argument("outdir", help="where: OUTDIR/ca.pem and ca-key.pem (the CA; kept "
                       "here, reused to add hosts), OUTDIR/HOST/ per host, OUTDIR/client/")
    certs.add_argument("hosts", nargs="+", metavar="HOST[,NAME...]",
                       help="a host: its names and addresses, comma-separated, e.g. "
                            "jt.example.com,10.0.0.1 (its directory: the first)")
    certs.add_argument("--days", type=_positive, default=825,
                       help="validity of the host certificates (default 825)")


def _users_options(users: argparse.ArgumentParser, help_job: bool) -> None:
    users.add_argument("action", choices=["add", "remove", "list"])
    users.add_argument("name", nargs="?")
    users.add_argument("--file", required=True, help="the users file")
    users.add_argument("--admin", action=argparse.BooleanOptionalAction,
                       help="add: an administrator, who may kill and read any job (an "
                            "existing user keeps what they were unless told)")
    users.add_argument("--password-file", help="add: read the password from this file "
                       "(default: $PYTXMR_PASSWORD, or asked for twice)")


#: Each command: its help, and what adds its options.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser, bool], None]]] = {
    "run": ("run a job on a local cluster started for it", _run_options),
    "submit": ("submit a job to a running cluster", _submit_options),
    "jobs": ("list the cluster's jobs", lambda c, _: _cluster_options(c)),
    "wait": ("wait for a job's end, with its progress, from any client; exit 0 if it "
             "succeeded, 1 if not", _wait_options),
    "status": ("show a job's state", _job_id_options),
    "kill": ("kill a running job", _job_id_options),
    "workers": ("list the cluster's tasktrackers", _workers_options),
    "drain": ("stop giving a tasktracker tasks, move the map outputs jobs need off it, then "
              "stop it (an administrator's)", _drain_options),
    "logs": ("show what a job's task attempts printed", _logs_options),
    "web-password": ("print the status page password (derived from the cluster secret)",
                     _web_password_options),
    "certs": ("make a cluster CA and a TLS directory per host (for the daemons' --tls)",
              _certs_options),
    "users": ("manage a jobtracker's users file (--users)", _users_options),
}


def manage_users(a: argparse.Namespace) -> int:
    from .users import UsersError, UsersFile, make_verifier, read_password

    users = UsersFile(a.file)
    if a.action == "list":
        # A mistyped path listed nothing with status 0, as an empty file.
        if not os.path.exists(users.path):
            raise UsersError(f"no users file {users.path}")
        listed = sorted(users.users().items())
        for name, verifier in listed:
            print(f"{name}{'  (admin)' if verifier.admin else ''}")
        if not listed:
            print(f"no users in {users.path}", file=sys.stderr)
        return 0
    if not a.name:
        raise UsersError(f"users {a.action}: give a user name")
    if a.action == "remove":
        users.remove(a.name)
        print(f"removed {a.name} from {users.path}")
        return 0
    before = users.users().get(a.name)
    admin = a.admin if a.admin is not None else bool(before and before.admin)
    password = read_password(a.name, a.password_file, confirm=True)
    users.put(a.name, make_verifier(password, admin=admin))
    role = "administrator" if admin else "user"
    if before is None:
        print(f"added {role} {a.name} to {users.path}")
    else:  # a password changed; a role only when asked (it used to drop --admin)
        was = "administrator" if before.admin else "user"
        change = f", now {role} (was {was})" if was != role else ""
        print(f"changed the password of {was} {a.name} in {users.path}{change}")
    return 0


class Progress:
    """A live bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, stream: Any = None) -> None:
        # sys.stderr now, not at import: entry() wraps it (_Diagnostics).
        stream = sys.stderr if stream is None else stream
        self._stream = stream
        self._tty = stream.isatty()
        self._last = ""

    def __call__(self, status: dict[str, Any]) -> None:
        maps, reduces = status.get("maps"), status.get("reduces")
        if not maps or reduces is None:
            return
        # Truncated, not rounded: 99.7% of a phase whose last task runs is not 100%.
        mp = int(maps.get("percent", 100 * maps["done"] / max(1, maps["total"])))
        rp = int(reduces.get("percent", 100 * reduces["done"] / max(1, reduces["total"])))
        step = (f"step {status['step']}/{status['steps']} "
                if status.get("steps", 1) > 1 else "")
        text = f"{status['job_id']}: {step}map {mp:3d}% ({maps['done']}/{maps['total']})"
        if maps.get("awaited"):
            text += f" ({maps['awaited']} {AWAITED_MAPS})"
        if reduces["total"]:  # a map-only step has none to show
            text += f" reduce {rp:3d}% ({reduces['done']}/{reduces['total']})"
        if status.get("failed_attempts"):
            text += f" failed attempts {status['failed_attempts']}"
        if status.get("finishing"):  # over: its output is being made final
            text += f" ({status['finishing']}, finishing)"
        if self._tty:
            bar = "#" * int(mp / 10) + "." * (10 - int(mp / 10))
            self._stream.write(f"\r[{bar}] {text}")
            self._stream.flush()
        elif text != self._last:
            self._stream.write(text + "\n")
        self._last = text

    def end(self) -> None:
        """End the bar's line (a terminal's), so that what follows has its own."""
        if self._tty and self._last:
            self._stream.write("\n")
        self._last = ""


def print_result(result: dict[str, Any], quiet: bool) -> int:
    if result["state"] == "succeeded":
        if not quiet:
            tasks = f"{result['num_maps']} maps, {result['num_reducers']} reduces"
            if result.get("steps", 1) > 1:  # the counts are the last step's
                tasks = f"{result['steps']} steps, the last of {tasks}"
            print(f"{result['job_id']} succeeded in {result['elapsed']:.2f}s: {tasks}; "
                  f"output in {result['output']}")
            print_counters(result.get("counters") or {})
        return 0
    err = result.get("error") or {}
    print(f"{result['job_id']} {result['state']}: {err.get('message', '')}", file=sys.stderr)
    if err.get("traceback", "").strip() not in ("", err.get("message")):
        print(err["traceback"].rstrip(), file=sys.stderr)
    return 1


#: Exit statuses besides 0 (done) and 1 (the job failed or was killed):
#: a command, its job or its login refused (as argparse's usage errors);
#: the jobtracker not reached, or lost (trying again later may work).
EXIT_REFUSED, EXIT_UNREACHABLE = 2, 3


def _say(text: str) -> None:
    print(f"pytxmr: {text}", file=sys.stderr)


def interrupted_status(signum: int | None) -> int:
    """The exit status of a command ended by a signal, as shells report it:
    128 + the signal's number (130 after Ctrl-C, 143 after SIGTERM)."""
    return 128 + (signum or signal.SIGINT)


#: The signal ``run --inline`` was interrupted by (it unwinds by exception).
_inline_signal: list[int] = []


def react_interruptibly(command: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``command(reactor)`` under the reactor; its exit code.

    SIGINT, SIGTERM or SIGHUP (its terminal closed) stops the reactor, but
    first the command is cancelled and given UNWIND_TIMEOUT seconds to
    unwind, so that `run` stops its cluster, fails its job (no part file
    looks like a result) and removes its files. A second signal exits at
    once.
    """
    from twisted.internet import defer, task

    code = [1]
    interrupted = [False]

    async def go(reactor: Any) -> None:
        # The reactor's signal handlers are installed once it runs: a
        # signal before that must not catch a cluster half started.
        await task.deferLater(reactor, 0)
        if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:  # not nohup's
            # As SIGTERM: killed by it, run left its files and _temporary.
            signal.signal(signal.SIGHUP, reactor.sigTerm)
        try:
            code[0] = await command(reactor)
        except BrokenPipeError:
            code[0] = _stdout_closed()
        except StdoutUnwritable as e:
            code[0] = _unwritable(e)
        except defer.CancelledError:
            print("pytxmr: interrupted", file=sys.stderr)
            # Twisted records the signal that stopped it (what react() uses).
            code[0] = interrupted_status(getattr(reactor, "_exitSignal", None))
        except Exception as e:
            if not interrupted[0]:
                raise
            print(f"pytxmr: interrupted, and stopping failed: {e}", file=sys.stderr)
            code[0] = 1

    def again(signum: int, frame: Any) -> None:
        print("pytxmr: interrupted again: exiting now", file=sys.stderr)
        os._exit(interrupted_status(signum))  # task processes die with us (PR_SET_PDEATHSIG)

    def start(reactor: Any) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(go(reactor))

        def unwind() -> defer.Deferred[None] | None:
            if d.called:
                return None
            interrupted[0] = True
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    signal.signal(signum, again)
            d.cancel()
            done: defer.Deferred[None] = defer.Deferred()
            d.addBoth(lambda result: (done.called or done.callback(None), result)[1])

            def late(f: Any) -> None:
                f.trap(defer.TimeoutError)
                print(f"pytxmr: still stopping after {UNWIND_TIMEOUT:g}s; exiting (temporary "
                      f"files may be left)", file=sys.stderr)

            done.addTimeout(UNWIND_TIMEOUT, reactor).addErrback(late)
            return done

        reactor.addSystemEventTrigger("before", "shutdown", unwind)
        return d

    try:
        task.react(start)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return code[0]


def shown_state(job: dict[str, Any]) -> str:
    """A job's state for people: one that ended, its output not final yet
    (``finishing``), is still running for programs."""
    return f"{job['finishing']}, finishing" if job.get("finishing") else job["state"]


def describe_job(status: dict[str, Any]) -> str:
    """``status`` and ``kill`` for people (``--json`` for programs)."""
    lines = [f"{status['job_id']}  {shown_state(status)}  {status.get('elapsed', 0):.2f}s  "
             f"{status.get('filename', '')} -> {status.get('output', '')}"]
    if status.get("owner"):
        lines.append(f"  owner    {status['owner']}")
    if status.get("steps", 1) > 1:
        lines.append(f"  step {status['step']} of {status['steps']}")
    for kind in ("maps", "reduces"):
        p = status.get(kind)
        if p:
            lines.append(f"  {kind:<8} {p['done']}/{p['total']} done, {p['running']} running"
                         + (f"; {p['awaited']} {AWAITED_MAPS}" if p.get("awaited") else ""))
    if status.get("failed_attempts"):
        lines.append(f"  failed attempts {status['failed_attempts']}")
    if status.get("args"):
        lines.append("  arguments " + " ".join(_shell_word(f"{k}={v}")
                                                for k, v in sorted(status["args"].items())))
    err = status.get("error") or {}
    if err.get("message"):
        lines.append(f"  error: {err['message']}")
    return "\n".join(lines)


def _shell_word(text: str) -> str:
    """``text`` as a shell would take it back (`sp=a b` read as two
    arguments); with a control character, in bash's $'...' form, on one line."""
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c(c) for c in text) + "'"


_ANSI_C = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _ansi_c(c: str) -> str:
    """One character inside bash's $'...': \\xHH stands for a byte there, not
    a character, so the rest of what is not printable is \\u or \\U."""
    if c in _ANSI_C:
        return _ANSI_C[c]
    if c.isprintable():
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


def describe_workers(workers: list[dict[str, Any]]) -> str:
    lines = []
    for w in workers:
        state = ("draining" if w.get("draining") else "alive" if w["alive"]
                 else "drained" if w.get("drained") else "lost")
        lines.append(f"{w['wid']:<6} {state:<9} {w['host']}:{w['shuffle_port']:<6} "
                     f"{w['slots']} slots, {len(w['running'])} running")
    return "\n".join(lines) if lines else "no tasktracker"


def print_counters(counters: dict[str, dict[str, int]]) -> None:
    for group in sorted(counters):
        print(f"  {group}")
        for name in sorted(counters[group]):
            print(f"    {name:<32} {counters[group][name]:>14,}")


def makes_no_tls_connection(a: argparse.Namespace) -> bool:
    """Whether this command's process makes no TLS connection and runs no
    user code: ``run`` (its daemons talk over loopback in the clear, URLs
    are read with the standard library's ``ssl``, tasks run in zygote
    children), or a cluster command without ``--tls``. Not ``run
    --inline``: the job's own code runs in its process."""
    if a.command == "run":
        return not a.inline
    return hasattr(a, "jobtracker") and not a.tls


def spare_pyopenssl() -> None:
    """Keep pyOpenSSL out of this process: Twisted's TCP imports it for
    ``startTLS`` whenever it is installed, and does without it when it is
    not. It is 40-80 ms of a command's start (a sixth of a small ``run``);
    its TLS is only for the cluster's own connections (``pytxmr.tls``)."""
    sys.modules.setdefault("OpenSSL", None)  # None: "import OpenSSL" raises ImportError


def _spec(a: argparse.Namespace) -> JobSubmission:
    """The submission of ``run`` or ``submit``; refused (exit 2) where its
    paths cannot be read: a removed working directory, or one whose parent
    may not be searched, ended in a traceback (exit 1)."""
    from .bundle import BundleError
    from .client import submission

    try:
        return submission(a.job, a.inputs, a.output, args=a.args, py_files=a.py_files,
                          files=a.files, reducers=a.reducers, split_size=a.split_size,
                          overwrite=a.overwrite, map_name=a.map_name,
                          reduce_name=a.reduce_name, max_attempts=a.max_attempts,
                          speculative=a.speculative, buffer_records=a.buffer_records,
                          compress=a.compress, storage_options=dict(a.storage_options))
    except OSError as e:
        if isinstance(e, FileNotFoundError) and e.filename is None:  # os.getcwd()
            raise BundleError("the working directory was removed: give the job, its inputs "
                              "and its output as absolute paths") from None
        if e.filename is None:
            raise
        raise BundleError(f"cannot read {e.filename}: {e.strerror}") from None


def _stdout_closed() -> int:
    """Our reader went away (``pytxmr run ... | head``): no traceback, no
    second error when Python flushes stdout at exit, and success: only what
    succeeded prints to stdout (a failure goes to stderr), so the command
    had done its work when the reader stopped reading."""
    _to_nowhere(sys.stdout.fileno())
    return 0


def _unwritable(e: Exception) -> int:
    """Said, and what is left of our output goes nowhere (Python's own
    flush at exit would fail again)."""
    print(f"pytxmr: {e}", file=sys.stderr)
    _to_nowhere(sys.stdout.fileno())
    return 1


def _to_nowhere(fd: int) -> None:
    """What is written to ``fd`` from now on goes nowhere: its reader left."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _raise_interrupt(signum: int, frame: Any) -> None:
    _inline_signal.append(signum)
    raise KeyboardInterrupt


def run_inline_command(a: argparse.Namespace) -> int:
    from .inline import run_inline
    from .mapper import DEFAULT_BUFFER_RECORDS
    from .counters import TooManyCounters
    from .splits import InputError
    from .storage import StorageError

    # SIGTERM and SIGHUP (its terminal closed) unwind as Ctrl-C does: the
    # output is aborted, files removed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:  # not nohup's
        signal.signal(signal.SIGHUP, _raise_interrupt)

    start = time.perf_counter()
    # The reducers `run` would have, so that both write the same part files.
    slots = a.workers * (a.slots or default_slots(a.workers))
    running: list[bool] = []
    try:
        counters = run_inline(a.job, a.inputs, a.output, args=a.args, py_files=a.py_files,
                              files=a.files, num_reducers=a.reducers,
                              split_size=a.split_size, overwrite=a.overwrite,
                              map_name=a.map_name, reduce_name=a.reduce_name,
                              slots=slots, compress=a.compress,
                              buffer_records=a.buffer_records or DEFAULT_BUFFER_RECORDS,
                              storage_options=dict(a.storage_options),
                              started=lambda _format: running.append(True))
    except FileNotFoundError as e:
        if running or e.filename is not None:
            raise
        # os.getcwd(), for a relative path: refused, as run refuses it (_spec)
        print("pytxmr: the working directory was removed: give the job, its inputs and its "
              "output as absolute paths", file=sys.stderr)
        return EXIT_REFUSED
    except (InputError, StorageError, TooManyCounters) as e:
        if not running:
            raise  # refused before it ran: main says so (status 2)
        # Found while the tasks ran (a corrupt .gz, an undecodable line, a
        # store that failed, too many counters): the job failed, as under `run`.
        print(f"inline job failed: {type(e).__module__}.{type(e).__qualname__}: {e}",
              file=sys.stderr)
        return 1
    if not a.quiet:
        print(f"inline job succeeded in {time.perf_counter() - start:.2f}s; "
              f"output in {storage.redact(storage.normalize(a.output))}")
        print_counters(counters)
    return 0


def _what_goes_on(job_id: str | None, seen: dict[str, Any], submitting: bool) -> str:
    """Said as a wait is interrupted: only the waiting stops."""
    if job_id and seen.get("finishing"):
        return (f"interrupted: {job_id} is over ({seen['finishing']}); its output is being made "
                f"final on the cluster (`pytxmr status {job_id}`)")
    if job_id:
        return (f"interrupted: {job_id} goes on running on the cluster (`pytxmr kill {job_id}` "
                f"stops it)")
    if submitting:
        return ("interrupted: the job was being submitted: the jobtracker withdraws it, unless "
                "it had admitted it already (see `pytxmr jobs`)")
    return "interrupted: the job's files were being sent: it was not submitted"


def _seen(seen: dict[str, Any], progress: Progress | None, status: dict[str, Any]) -> None:
    seen.clear()
    seen.update(status)
    if progress is not None:
        progress(status)


async def cluster_command(reactor: Any, a: argparse.Namespace,
                          zygote: Zygote | None = None) -> int:
    """``run`` (on ``zygote``, which this stops) or a command to a running
    jobtracker."""
    progress = None if getattr(a, "quiet", True) else Progress()
    try:
        if zygote is not None:
            try:
                # Only here: a client needs none of the daemons' code.
                from . import embedded

                result = await embedded.run_embedded(
                    reactor, _spec(a), zygote=zygote, workers=a.workers,
                    slots=a.slots or default_slots(a.workers), progress=progress)
            finally:
                await zygote.stop()
            if progress:
                progress.end()
            return print_result(result, a.quiet)
        from twisted.internet.defer import CancelledError

        from . import client
        from .secret import load_secret

        options = login_options(a)
        # A user needs no cluster secret (nor a secret file on their machine).
        secret = b"" if options.get("user") else load_secret(a.secret_file)
        conn = await client.connect(reactor, a.jobtracker, secret, **options)

        def say(text: str) -> None:
            if progress:
                progress.end()  # a line of its own, not after a terminal's bar
            _say(text)

        try:
            if a.command in ("submit", "wait"):
                def reconnect() -> Awaitable[client.Connection]:
                    return client.connect(reactor, a.jobtracker, secret, **options)

                job_id = None if a.command == "submit" else a.job_id
                submitting = False
                seen: dict[str, Any] = {}  # the job's last status
                again = reconnect if a.reconnect_timeout > 0 else None
                try:
                    if job_id is None:
                        job = _spec(a)
                        if job.bundle is not None:
                            await client.upload(conn, job.bundle)
                        submitting = True
                        on, job_id = await client.submit_spec(reactor, conn, job.spec, say,
                                                              again, a.reconnect_timeout)
                        if on is not conn:  # the jobtracker came back during the submission
                            conn.close()
                            conn = on
                    result = await client.follow(
                        reactor, conn, job_id, functools.partial(_seen, seen, progress),
                        interval=client.PROGRESS_INTERVAL if progress else client.QUIET_INTERVAL,
                        notify=say, reconnect=again, reconnect_timeout=a.reconnect_timeout)
                except CancelledError:
                    say(_what_goes_on(job_id, seen, submitting))
                    return interrupted_status(getattr(reactor, "_exitSignal", None))
                finally:
                    if progress:
                        progress.end()  # also before the error main prints
                return print_result(result, a.quiet)
            if a.command == "jobs":
                for job in await conn.call("jobs"):
                    print(f"{job['job_id']}  {shown_state(job):<10} {job.get('owner') or '-':<10} "
                          f"{job['elapsed']:8.2f}s  {job['filename']} -> {job['output']}")
                return 0
            if a.command == "workers":
                answer = await conn.call("workers")
                print(json.dumps(answer, indent=2) if a.json else describe_workers(answer))
                return 0
            if a.command == "drain":
                w = await conn.call("drain", a.worker)
                print(f"{w['wid']} ({w['host']}:{w['shuffle_port']}) is draining: it takes no "
                      f"new task and stops once no job needs it")
                if w.get("others_taking_tasks") == 0:
                    print("pytxmr: no other tasktracker takes tasks: the running jobs' waiting "
                          "tasks wait for one to register", file=sys.stderr)
                return 0
            if a.command == "logs":
                from .tasklog import format_logs

                entries = await conn.call("logs", a.job_id, a.task)
                if entries:
                    print(format_logs(entries))
                else:  # it printed an empty line
                    _say(f"no task log of {a.job_id}: no attempt of it has started, or the "
                         f"job history no longer keeps its tasks (--history-retention)")
                return 0
            if a.command == "kill":
                before = await conn.call("status", a.job_id)
                if before["state"] != "running":
                    print(f"{a.job_id} has ended ({before['state']}): nothing to kill",
                          file=sys.stderr)
                    return 1
                if before.get("finishing"):
                    print(f"{a.job_id} has ended ({before['finishing']}); its output is being "
                          f"made final: nothing to kill", file=sys.stderr)
                    return 1
            answer = await conn.call(a.command, a.job_id)
            print(json.dumps(answer, indent=2) if a.json else describe_job(answer))
            return 0
        finally:
            conn.close()
    finally:
        if progress:
            progress.end()


def help_job(argv: Sequence[str]) -> int:
    """``run JOB.py --help-job`` (or ``submit``): the job's declared
    arguments, found by importing it here, in the user's own process (as
    ``run --inline`` does), with its directory on ``sys.path``."""
    a = _parse_job_command(build_parser(help_job=True, command=argv[0])[1], argv)
    from .bundle import BundleError
    from .inline import load_job
    from .jobargs import describe
    from .jobmodule import JobDefinitionError

    job = _streaming_job(a) if a.mapper is not None else a.paths[0]
    try:
        definition = load_job(job, a.py_files, a.files)
    except (JobDefinitionError, BundleError) as e:
        print(f"pytxmr: {e}", file=sys.stderr)
        return 2
    print(describe(definition.arguments, job))
    return 0


STREAMING_JOBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs")


def _streaming_job(a: argparse.Namespace) -> str:
    """The module of a streaming job (``--mapper``): pytxmr's own."""
    return os.path.join(STREAMING_JOBS, "streaming.py" if a.reducer is not None
                        else "streaming_map_only.py")


#: Options whose default is an environment variable's value, read as each
#: command line is parsed: a parser is built once per process, and the
#: client agent's serve every caller (each with an environment of its own).
_FROM_ENVIRONMENT = {"user": "PYTXMR_USER", "tls": "PYTXMR_TLS"}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with a job command's paths sorted into its job
    module and inputs (a streaming job's module is pytxmr's own)."""
    a = _parse(argv)
    for name, variable in _FROM_ENVIRONMENT.items():
        if getattr(a, name, "") is None:
            setattr(a, name, os.environ.get(variable))
    return a


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    # A command's own options only: its name comes first (the top parser
    # has only --help and --version).
    parser, commands = build_parser(command=argv[0] if argv else None)
    if argv[:1] not in (["run"], ["submit"]):
        return parser.parse_args(argv)
    a = _parse_job_command(commands, argv)
    parser = commands[a.command]
    if a.reducer is not None and a.mapper is None:
        parser.error("--reducer needs --mapper")
    if a.mapper is not None:  # '' too: refused as a command, not taken for none
        if any(name in ("mapper", "reducer") for name, _ in a.args):
            parser.error("--mapper and --reducer set the streaming job's arguments; "
                         "do not give them with --arg")
        for given, option, command in ((a.map_name, "--map", "--mapper"),
                                       (a.reduce_name, "--reduce", "--reducer")):
            if given != option[2:]:  # it named the streaming module's functions
                parser.error(f"{option} names a job module's function; a streaming job "
                             f"(--mapper) takes its command with {command}")
        a.job = _streaming_job(a)
        a.inputs = a.paths
        if a.paths and a.paths[0].endswith(".py"):
            print(f"pytxmr: note: a streaming job (--mapper) has no job module; {a.paths[0]} "
                  "is read as an input (without --mapper it would be the job)", file=sys.stderr)
        a.args = [*a.args, ("mapper", a.mapper)] + (
            [("reducer", a.reducer)] if a.reducer is not None else [])
    elif len(a.paths) < 2:
        parser.error("give the job module and at least one input")
    else:
        a.job, a.inputs = a.paths[0], a.paths[1:]
    return a


def _parse_job_command(commands: dict[str, argparse.ArgumentParser],
                       argv: Sequence[str]) -> argparse.Namespace:
    """``run`` or ``submit``: options may come between the job and its
    inputs (``run job.py --reducers 2 in.txt``), as argparse alone reads
    them only before or after all the paths."""
    a = commands[argv[0]].parse_intermixed_args(argv[1:])
    a.command = argv[0]
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .syspath import drop_working_directory

    drop_working_directory()  # unless python -m pytxmr did (drop_if_main): an agent's child
    if argv[:1] in (["run"], ["submit"]) and any(
            len(arg) > 6 and "--help-job".startswith(arg) for arg in argv[1:]):
        # As argparse reads it (--help-j too): else the job ran instead.
        return help_job(argv)
    a = parse(argv)
    if makes_no_tls_connection(a):
        spare_pyopenssl()
    zygote = start_zygote() if a.command == "run" and not a.inline else None
    from .auth import LoginRefused
    from .client import ClusterError
    from .bundle import BundleError
    from .jobargs import ArgumentError
    from .jobmodule import JobDefinitionError
    from .output import OutputExistsError
    from .records import CodecUnavailable
    from .splits import InputError
    from .secret import SecretError
    from .storage import StorageError
    from .tls import TLSError
    from .users import UsersError
    from .wire import SubmissionError

    try:
        if a.command == "run" and a.inline:
            return run_inline_command(a)
        if a.command == "web-password":
            from .secret import load_secret
            from .web import web_password

            print(web_password(load_secret(a.secret_file)))
            return 0
        if a.command in ("certs", "users"):
            try:
                return make_certs_command(a) if a.command == "certs" else manage_users(a)
            except OSError as e:  # a directory that is a file, a file it may not write...
                print(f"pytxmr: {e.filename or a.command}: {e.strerror or e}", file=sys.stderr)
                return EXIT_REFUSED

        async def command(reactor: Any) -> int:
            try:
                return await cluster_command(reactor, a, zygote)
            except (ClusterError, LoginRefused, SecretError, TLSError, UsersError) as e:
                print(f"pytxmr: {e}", file=sys.stderr)
                return _failure_status(e)
            except BundleError as e:  # its files, read by the client (_spec)
                print(f"pytxmr: {e}", file=sys.stderr)
                return EXIT_REFUSED

        return react_interruptibly(command)
    except (ClusterError, LoginRefused, SecretError, CodecUnavailable, TLSError,
            UsersError) as e:
        print(f"pytxmr: {e}", file=sys.stderr)
        return _failure_status(e)
    except (OutputExistsError, InputError, StorageError, ArgumentError, BundleError,
            JobDefinitionError, SubmissionError) as e:  # run --inline: refused, as a submission is
        print(f"pytxmr: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:  # run --inline, or before the reactor started
        print("pytxmr: interrupted", file=sys.stderr)
        return interrupted_status(_inline_signal[0] if _inline_signal else None)
    except BrokenPipeError:  # run --inline, jobs, status... | head
        return _stdout_closed()
    except StdoutUnwritable as e:  # run --inline
        return _unwritable(e)
    except Exception as e:
        from .jobmodule import describe_error

        if a.command == "run" and a.inline:  # the job failed: said as `run` says it
            err = describe_error(e, os.path.abspath(a.job))
            print(f"inline job failed: {err['message']}\n{err['traceback'].rstrip()}",
                  file=sys.stderr)
            return 1
        raise


def make_certs_command(a: argparse.Namespace) -> int:
    from .tls import make_certs

    hosts = [[n.strip() for n in h.split(",") if n.strip()] for h in a.hosts]
    for path in make_certs(a.outdir, hosts, days=a.days):
        print(path)
    return 0


def _failure_status(e: Exception) -> int:
    """3 where the job's outcome is unknown to the client (trying again may
    tell), 2 for a refusal."""
    from .client import ClusterUnreachable, JobLost

    return EXIT_UNREACHABLE if isinstance(e, (ClusterUnreachable, JobLost)) else EXIT_REFUSED


class _Diagnostics:
    """``sys.stderr`` for a command whose reader may go (``run ... 2>&1 |
    head``, or a terminal closed, whose writes fail with EIO): its next
    progress line, or the job's failure, stopped the command, with status
    0 whatever the job did (or 1 after SIGHUP, "stopping failed"). What
    comes after goes nowhere, and the command goes on to its own status."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError as e:
            if not _reader_gone(e):
                raise
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            if not _reader_gone(e):
                raise
            self._gone()

    def _gone(self) -> None:
        _to_nowhere(self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _reader_gone(e: OSError) -> bool:
    """A pipe's reader left (EPIPE), or a terminal hung up (EIO)."""
    return isinstance(e, BrokenPipeError) or e.errno == errno.EIO


class StdoutUnwritable(OSError):
    """Standard output took no more (a full disk, ``> /dev/full``, a name
    its encoding cannot write): said, not a traceback. An OSError still,
    for a job's own code under ``run --inline`` that catches one."""


class _Results:
    """``sys.stdout``, whose failures other than its reader's leaving
    (EPIPE, or EIO from a terminal hung up: see ``_stdout_closed``) are a
    ``StdoutUnwritable``."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except (OSError, UnicodeEncodeError) as e:
            raise _failure(e) from None

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise _failure(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _failure(e: OSError | UnicodeEncodeError) -> OSError:
    if isinstance(e, OSError) and _reader_gone(e):
        return e if isinstance(e, BrokenPipeError) else BrokenPipeError(e.errno, e.strerror)
    return StdoutUnwritable(f"cannot write to standard output: {_reason(e)}")


def _reason(e: BaseException) -> str:
    if isinstance(e, UnicodeEncodeError):
        return f"{e.encoding} cannot encode {e.object[e.start:e.end]!r}"
    return getattr(e, "strerror", None) or str(e)


def entry() -> None:
    """Run the command of ``sys.argv`` in this process (``pytxmr.__main__``
    decides where it runs)."""
    if sys.stderr is not None:  # None: started with its stderr closed (2>&-)
        sys.stderr = _Diagnostics(sys.stderr)
    if sys.stdout is not None:
        sys.stdout = _Results(sys.stdout)
    try:
        code = main()
    except KeyboardInterrupt:  # while main imported what it needs, before its own handling
        print("pytxmr: interrupted", file=sys.stderr)
        code = interrupted_status(None)
    except BrokenPipeError:  # before main's own handling (--help-job)
        code = _stdout_closed()
    except StdoutUnwritable as e:  # --help, --help-job
        code = _unwritable(e)
    try:
        if sys.stdout is not None:
            # Here, not at exit: a reader gone after the last print (`jobs |
            # head -1`) made Python's own flush fail (exit 120).
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed()
    except StdoutUnwritable as e:
        code = _unwritable(e) if code == 0 else code  # said; a failure's own status stays
    # Spare Python's exit the cyclic collector's passes over every object
    # the command created (0.02-0.03 s of each command): nothing at exit
    # depends on them.
    gc.freeze()
    sys.exit(code)
