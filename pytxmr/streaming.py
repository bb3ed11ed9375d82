"""Streaming jobs: Hadoop Streaming's model, for map and reduce programs
in any language.

A command runs as a pipe for the whole of a task (``/bin/sh -c CMD``, so
quotes and pipelines work): a map task writes its input lines to the
mapper's stdin; a reduce task writes ``key<TAB>value`` lines, sorted by key,
to the reducer's. Each line a command prints becomes a pair (``parse``). A
command that exits non-zero, or dies, fails its attempt with the tail of its
stderr; all of its stderr goes to the task's log. One that stops reading
early (``head -1``) is judged by its exit status alone.

The built-in job modules ``pytxmr/jobs/streaming.py`` and
``streaming_map_only.py`` wire ``MapSide`` and ``ReduceSide`` to a job's
hooks: one process per task, started by ``map_init`` (``reduce_init``).
No Twisted: this runs in task children.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from itertools import islice
from typing import Any, Iterable, Iterator

from .jobargs import args

__all__ = ["INLINE", "Pipe", "StreamingError", "MapSide", "ReduceSide", "command", "parse"]

#: Bytes of a command's stderr shown in the error of a failed attempt.
STDERR_TAIL = 4096
#: Input buffered before a write to the command: few system calls per line.
STDIN_BUFFER = 1 << 20
_READ = 1 << 16
#: Values of a key written to a reducer at a time.
_BATCH = 4096
#: Seconds a command's stdout (its lines), or its stderr, may stay open
#: once it exited (held by a child it left running) before the task goes
#: on with what was read.
_ERROR_WAIT = 5.0
#: Seconds between looks at whether a command whose stdout is still open
#: has exited.
_POLL = 0.5
#: Chunks of STDIN_BUFFER input queued for the writer thread at most.
_QUEUED_INPUT = 2
#: Input held beyond those while the command does not read, the task going
#: on with its next records and taking the command's lines as they come,
#: a record's worth at a time (between records, a map's buffer spills).
#: Past it, the task waits for the command to read, taking its lines
#: meanwhile: all of them one record's output (a command that printed ten
#: million lines before it read, 900 MB).
_HELD_INPUT = 16 << 20
#: Seconds between the task's looks at the command's output while the
#: writer thread is busy.
_FEED_POLL = 0.01
#: Batches of output lines (one read of up to 64 KB each) held at most,
#: a batch of long lines counting once per _HELD_BYTES of them.
_HELD_BATCHES = 64
_HELD_BYTES = 1 << 18
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
_EOF = None
_NOTHING: tuple[int, list[str]] = (0, [])  # no batch came in _POLL

#: Leading words the shell itself runs (keywords and builtins): no program
#: to look up.
_SHELL_WORDS = frozenset({
    "(", "{", "!", "if", "for", "while", "until", "case", "time", "exec", "eval",
    "cd", "set", "export", "unset", "ulimit", "umask", "trap", ".", ":", "read", "exit",
    "return", "command", "wait", "shift", "break", "continue", "readonly", "local",
    "getopts", "hash", "type", "alias", "unalias", "jobs", "kill", "pwd", "times",
    "source", "test", "[", "true", "false", "echo", "printf"})

#: Shell redirection operators, as shlex's punctuation splits them.
_REDIRECTIONS = frozenset({"<", ">", ">>", "<<", "<<<", ">&", "<&", "&>", ">|", "<>"})


class StreamingError(RuntimeError):
    """A streaming command failed: its exit status and its stderr's tail,
    which is all a submitter sees of a program that is not Python."""


def command(text: str) -> str:
    """An ``Arg`` type: a shell command whose program exists here, so that a
    typo is refused at submission (on the jobtracker's host) rather than
    failing every task attempt."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as e:
        raise ValueError(f"cannot parse the command {text!r}: {e}") from None
    # Assignments and redirections before a program (``LC_ALL=C sort``,
    # ``2>/dev/null cat``, ``<x cat``) are the shell's.
    while words:
        if "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            del words[0]
        elif words[0].isdigit() and len(words) > 1 and words[1] in _REDIRECTIONS:
            del words[0]  # the descriptor of 2>...
        elif words[0] in _REDIRECTIONS:
            del words[:2]  # the operator and its file
        else:
            break
    if not words:
        raise ValueError("the command is empty" if not text.strip()
                         else f"no program in the command {text!r}")
    program = words[0]
    if program in _SHELL_WORDS or "$" in program or "`" in program:
        return text  # the shell's own, or known only when it runs
    if shutil.which(program) is None:
        raise ValueError(f"no such command: {program}")
    return text


def parse(line: str) -> tuple[str, str]:
    """A command's output line as a pair, as Hadoop Streaming reads it: the
    key up to the first tab, the value after it (further tabs included); a
    line without a tab is a key with an empty value."""
    key, _, value = line.partition("\t")
    return key, value


_Batch = tuple[int, list[str]]


def _read_lines(f: io.RawIOBase, out: queue.SimpleQueue[_Batch | None],
                room: threading.Semaphore, abandoned: threading.Event) -> None:
    """Drain a command's stdout: the whole lines of each read, as one batch
    (with the room it takes), then ``_EOF``; a line ends at LF or CR LF, as
    in Hadoop. A batch takes ``room`` (_HELD_BATCHES, once per _HELD_BYTES),
    given back as the task takes it: while the task does not, the command
    waits on its stdout, as a full pipe makes it (a command printing a
    hundred lines a line had gigabytes held here, and one printing 50 MB
    lines 650 MB). A function, not a method: a running thread must not keep
    its Pipe (and so the command's stdin) alive."""
    # A line's start: grown in place (a long line's by mremap, no copy, no
    # heap of pieces left behind), decoded from where it is.
    pending = bytearray()

    def put(item: _Batch | None) -> None:
        units = 1 if item is None else item[0]
        while units and not abandoned.is_set():  # a failed task takes no more
            if room.acquire(timeout=_POLL):
                units -= 1
        if not units:
            out.put(item)

    try:
        while block := f.read(_READ):
            cut = block.rfind(b"\n") + 1
            if not cut:
                pending += block
                continue
            pending += memoryview(block)[:cut]
            whole, pending = [pending], bytearray(memoryview(block)[cut:])
            units = min(_HELD_BATCHES, 1 + len(whole[0]) // _HELD_BYTES)
            put((units, _lines_of(whole)))
        if pending:  # a last line without its newline
            put((1, [pending.decode(_ENCODING, _ERRORS)]))
    finally:
        f.close()
        put(_EOF)


def _lines_of(whole: list[bytearray]) -> list[str]:
    """The lines of the bytes in ``whole`` (taken from it: not held by the
    caller while decoded), which end with a newline; one long line is
    decoded as itself, without a copy of it to split."""
    data = whole.pop()
    if len(data) > _HELD_BYTES and data.find(b"\n") == len(data) - 1:
        end = len(data) - 1 - (data[-2] == 13)  # b"\r"
        return [str(memoryview(data)[:end], _ENCODING, _ERRORS)]
    text = data.decode(_ENCODING, _ERRORS)
    del data
    lines = text.replace("\r\n", "\n").split("\n")
    lines.pop()  # after the last newline
    return lines


def _chunks_of(pieces: list[str]) -> list[bytes]:
    """``pieces`` of input encoded as few chunks, a long one alone."""
    chunks: list[bytes] = []
    run: list[str] = []
    for piece in pieces:
        if len(piece) >= STDIN_BUFFER:
            if run:
                chunks.append("".join(run).encode(_ENCODING, _ERRORS))
                run = []
            chunks.append(piece.encode(_ENCODING, _ERRORS))
        else:
            run.append(piece)
    if run:
        chunks.append("".join(run).encode(_ENCODING, _ERRORS))
    return chunks


def _write_chunks(f: io.RawIOBase, chunks: queue.Queue[bytes | None],
                  stopped: threading.Event) -> None:
    """Feed a command's stdin the chunks the task hands over, until None; a
    command that closed its stdin (``head -1``) sets ``stopped``, and the
    rest is dropped. A thread of its own: the task's thread, which takes
    the command's output, never blocks on a command waiting for it to."""
    try:
        while (chunk := chunks.get()) is not None:
            view = memoryview(chunk)
            while view and not stopped.is_set():
                try:
                    view = view[f.write(view) or 0:]
                except BrokenPipeError:
                    stopped.set()
    finally:
        try:
            f.close()
        except BrokenPipeError:
            stopped.set()


def _copy_stderr(f: io.RawIOBase, tail: bytearray) -> None:
    """Drain a command's stderr into this task's (its log), keeping its last
    ``STDERR_TAIL`` bytes for the error of a failed attempt."""
    decode = codecs.getincrementaldecoder(_ENCODING)("replace").decode
    try:
        while block := f.read(_READ):
            sys.stderr.write(decode(block))
            sys.stderr.flush()
            tail += block
            del tail[:-STDERR_TAIL]
    finally:
        f.close()


class Pipe:
    """One command fed lines by the calling thread through a writer thread,
    its stdout and stderr drained by threads of their own, so that neither
    side ever waits for the other: a command that prints as it reads would
    otherwise block on a full stdout while we block on its full stdin. What
    is held in between is bounded both ways (_QUEUED_INPUT chunks of
    STDIN_BUFFER input and _HELD_INPUT more, _HELD_BATCHES of output)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        # On a cluster, in the task's process group, which ends with it.
        self._proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      bufsize=0, start_new_session=INLINE.active)
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self._pending: list[str] = []  # input not handed to the writer yet
        self._pending_len = 0
        self._unsent: list[bytes | None] = []  # encoded, the writer's queue full
        self._unsent_len = 0
        self._long = False  # a line of STDIN_BUFFER or more is pending
        self._input_open = True
        self._chunks: queue.Queue[bytes | None] = queue.Queue(_QUEUED_INPUT)
        self._stopped = threading.Event()  # it closed its stdin early
        self._abandoned = threading.Event()  # it failed: its output goes nowhere
        # A SimpleQueue: empty() and get_nowait() in C, once per record.
        self._lines: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(_HELD_BATCHES)
        self._eof = False
        self._waited = False  # for a child it left running, in close()
        self._tail = bytearray()
        self._threads = [
            threading.Thread(target=_write_chunks, daemon=True,
                             args=(self._proc.stdin, self._chunks, self._stopped)),
            threading.Thread(target=_read_lines, daemon=True, args=(
                self._proc.stdout, self._lines, self._room, self._abandoned))]
        self._err_thread = threading.Thread(
            target=_copy_stderr, args=(self._proc.stderr, self._tail), daemon=True)
        for t in (*self._threads, self._err_thread):
            t.start()
        INLINE.add(self)

    def feed(self, line: str) -> None:
        """Write one line (its newline added) to the command's stdin; lines
        after the command stopped reading and exited 0 are dropped."""
        if len(line) < STDIN_BUFFER:
            self.write(line + "\n")
        elif self._input_open:
            # Not copied to add its newline, nor into a chunk with the lines
            # before it: encoded alone (a 20 MB line was held four times).
            self._pending += (line, "\n")
            self._pending_len += len(line) + 1
            self._long = True

    def write(self, text: str) -> None:
        """Write whole lines, each with its newline: many at once cost one
        call instead of one per line. ``ready`` hands them over."""
        if self._input_open:
            self._pending.append(text)
            self._pending_len += len(text)

    def ready(self) -> Iterator[str]:
        """The lines the command printed so far, once the input written is
        handed to the writer (as chunks of STDIN_BUFFER; see _hand_over)."""
        if self._pending_len >= STDIN_BUFFER or self._unsent:
            yield from self._hand_over()
        yield from self._drain()

    def _hand_over(self, last: bool = False) -> Iterator[str]:
        """The pending input to the writer, once there is STDIN_BUFFER of it
        (all of it, then its end, with ``last``); held while the writer is
        busy, up to _HELD_INPUT, else waited for, yielding the command's
        lines meanwhile."""
        if self._pending and (last or self._pending_len >= STDIN_BUFFER):
            pending, self._pending, self._pending_len = self._pending, [], 0
            if self._long:
                chunks = _chunks_of(pending)
                self._long = False
            else:
                chunks = [chunk] if (chunk := "".join(pending).encode(_ENCODING, _ERRORS)) else []
            del pending
            self._unsent += chunks
            self._unsent_len += sum(map(len, chunks))
        unsent = self._unsent
        if last:
            unsent.append(None)
        while unsent and self._input_open:
            if self._stopped.is_set():
                self._stopped_reading()
                break
            item = unsent[0]
            held = not last and self._unsent_len <= _HELD_INPUT
            try:
                if held:
                    self._chunks.put_nowait(item)
                else:
                    self._chunks.put(item, timeout=_FEED_POLL)
            except queue.Full:
                if held:
                    return  # handed over at a later record, or at the end
                yield from self._drain()
                continue
            del unsent[0]
            self._unsent_len -= len(item) if item is not None else 0
        if not self._input_open:  # it stopped reading: dropped
            unsent.clear()
            self._unsent_len = 0
        self._input_open = self._input_open and not last

    def _stopped_reading(self) -> None:
        """It closed its stdin early (``head -1``): fine if it then exits 0,
        as its exit status alone says whether it failed; one that failed
        fails the attempt now if it has exited, else when it does."""
        self._input_open = False
        self._chunks.put(None)  # the writer drops what it still has
        status = self._proc.poll()
        if status is not None:
            self._check(status)

    def _drain(self) -> Iterator[str]:
        lines = self._lines
        while not lines.empty():
            batch = lines.get_nowait()
            if batch is _EOF:
                self._room.release()
                self._eof = True
                return
            self._room.release(batch[0])
            yield from batch[1]

    def close(self) -> Iterator[str]:
        """End its input, then yield the rest of its lines as they come;
        StreamingError once it has exited if it failed."""
        yield from self._hand_over(last=True)
        yield from self._drain()
        exited: float | None = None
        while not self._eof:
            try:
                batch = self._lines.get(timeout=_POLL)
            except queue.Empty:
                batch = _NOTHING
            if batch is _EOF:
                self._room.release()
                self._eof = True
                continue
            if batch is not _NOTHING:
                self._room.release(batch[0])
                yield from batch[1]
            if exited is None:
                if self._proc.poll() is not None:
                    exited = time.monotonic()
            elif time.monotonic() - exited > _ERROR_WAIT:
                # It exited, but a child it left running (``sleep 200 &``)
                # holds its stdout (and its stderr, surely): not waited for
                # again (the task's end kills it).
                self._waited = True
                break
        if self._eof:
            for t in self._threads:
                t.join()
        self._check(self._proc.wait())

    def kill(self) -> None:
        """Kill the command and what it left running: its process group,
        its own when it runs inline. Its writer drops what it holds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._stopped.set()
        while True:  # the writer's end, to a thread that may be waiting for input
            try:
                self._chunks.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._chunks.get_nowait()
        self._proc.wait()

    def _check(self, status: int) -> None:
        if status != 0:
            self._abandoned.set()
        # Its stderr to the end, into the task's log: a command that
        # succeeded had the end of it cut off (in 14 of 40 tasks) as the
        # task ended before the thread that copies it.
        self._err_thread.join(0 if self._waited else _ERROR_WAIT)
        if status == 0:
            return
        if status < 0:
            try:
                name = f" ({signal.Signals(-status).name})"
            except ValueError:
                name = ""
            how = f"was killed by signal {-status}{name}"
        else:
            how = f"exited with status {status}"
        tail = bytes(self._tail)
        if len(tail) == STDERR_TAIL:  # cut: drop a character's leftover bytes
            tail = tail.lstrip(bytes(range(0x80, 0xC0)))
        text = tail.decode(_ENCODING, "replace").rstrip()
        raise StreamingError(f"the command {self.cmd!r} {how}"
                             + (f"; its stderr ends with:\n{text}" if text
                                else " (it wrote nothing to stderr)"))


class InlineCommands:
    """The commands of the tasks a job runs in this process (inline, or
    ``pytxmr.testing``), each in a process group of its own, killed with
    what it left running (``sleep 200 &``) as the next task starts and as
    the job ends; a failed task's command too. A cluster's task ends with
    its process group, its commands' processes with it; inline, they were
    left running for ever."""

    def __init__(self) -> None:
        self._pipes: list[Pipe] | None = None

    @property
    def active(self) -> bool:
        return self._pipes is not None

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        """While a job runs its tasks in this process."""
        self._pipes = []
        try:
            yield
        finally:
            self.end()
            self._pipes = None

    def add(self, pipe: Pipe) -> None:
        if self._pipes is not None:
            self._pipes.append(pipe)

    def end(self) -> None:
        """A task is over: its commands and what they started end."""
        if self._pipes:
            pipes, self._pipes = self._pipes, []
            for pipe in pipes:
                pipe.kill()


#: This process's inline tasks' commands (inline.run_steps tracks them).
INLINE = InlineCommands()


class _Side:
    """A task's command, named by the job argument ``arg``: started by the
    init hook, finished by the final hook. One per job module, which is
    loaded afresh for each task, so one process per task as in Hadoop."""

    def __init__(self, arg: str) -> None:
        self._arg = arg
        self._pipe: Pipe | None = None

    def init(self) -> None:
        """The ``*_init`` hook: start the command."""
        self._pipe = Pipe(args()[self._arg])

    def final(self) -> Iterator[tuple[str, str]]:
        """The ``*_final`` hook: the pairs it prints once its input ends."""
        pipe, self._pipe = self._pipe, None
        assert pipe is not None, "the init hook starts the command"
        return map(parse, pipe.close())


class MapSide(_Side):
    """``map_init``, ``map`` and ``map_final`` of a streaming job: the task's
    input lines (without their offsets) through the command."""

    def map(self, offset: Any, line: str) -> Iterator[tuple[str, str]]:
        pipe = self._pipe
        assert pipe is not None, "map_init starts the command"
        pipe.feed(line)
        return map(parse, pipe.ready())


class ReduceSide(_Side):
    """``reduce_init``, ``reduce`` and ``reduce_final`` of a streaming job:
    ``key<TAB>value`` lines, keys in order, through the command."""

    def reduce(self, key: str, values: Iterable[str]) -> Iterator[tuple[str, str]]:
        pipe = self._pipe
        assert pipe is not None, "reduce_init starts the command"
        # A batch of a key's values as one string: a line per value, joined in C.
        prefix = key + "\t"
        between = "\n" + prefix
        values = iter(values)
        while batch := list(islice(values, _BATCH)):
            pipe.write(prefix + between.join(batch) + "\n")
        return map(parse, pipe.ready())

