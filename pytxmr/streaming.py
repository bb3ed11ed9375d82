"""Streaming jobs: Hadoop Streaming's model, for map and reduce programs
in any language.

A command runs as a pipe for the whole of a task (``/bin/sh -c CMD``, so
quotes and pipelines work): a map task writes its input lines to the
mapper's stdin; a reduce task writes ``key<TAB>value`` lines, sorted by key,
to the reducer's. Each line a command prints becomes a pair: the key up to
its first tab, the value after it (a line without a tab is a key with an
empty value). A command that exits non-zero, or dies, fails its attempt
with the tail of its stderr; all of its stderr goes to the task's log.

The built-in job modules ``pytxmr/jobs/streaming.py`` and
``streaming_map_only.py`` wire this to the hooks of a job (start in
``map_init``, one pipe per task). No Twisted: this runs in task children.
"""

from __future__ import annotations

import collections
import shlex
import shutil
import subprocess
import sys
import threading
from typing import IO, Any, Iterator

#: Bytes of a command's stderr shown in the error of a failed attempt.
STDERR_TAIL = 4096
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class StreamingError(RuntimeError):
    """A streaming command failed: its exit status and its stderr's tail."""


def command(text: str) -> str:
    """An ``Arg`` type: a shell command whose program exists here (so that a
    typo is refused at submission, on the jobtracker's host)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot parse the command {text!r}: {e}") from None
    if not words:
        raise ValueError("the command is empty")
    program = words[0]
    if "=" in program or program in _SHELL_WORDS:
        return text  # an assignment or a shell construct: the shell will tell
    if shutil.which(program) is None:
        raise ValueError(f"no such command: {program}")
    return text


_SHELL_WORDS = frozenset({"(", "{", "if", "for", "while", "case", "exec", "cd", "set",
                          "export", "!", "time", "until"})


def parse(line: str) -> tuple[str, str]:
    key, _, value = line.partition("\t")
    return key, value


class Pipe:
    """One command, fed lines by the task and read by a thread, so that
    neither side waits for the other (a command that prints as it reads
    would otherwise block on a full stdout pipe while we block on its full
    stdin)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=1 << 16)
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self._stdin = self._proc.stdin
        self._out: collections.deque[list[str]] = collections.deque()
        self._tail = bytearray()
        self._closed_early = False
        self._readers = [threading.Thread(target=self._read_out, args=(self._proc.stdout,),
                                          daemon=True),
                         threading.Thread(target=self._read_err, args=(self._proc.stderr,),
                                          daemon=True)]
        for t in self._readers:
            t.start()

    def _read_out(self, f: IO[bytes]) -> None:
        while True:
            lines = f.readlines(1 << 16)
            if not lines:
                return
            self._out.append([b.decode(_ENCODING, _ERRORS).rstrip("\n") for b in lines])

    def _read_err(self, f: IO[bytes]) -> None:
        err = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        while block := f.read1(1 << 16) if hasattr(f, "read1") else f.read(1 << 16):
            if err is not None:
                err.write(block)
                err.flush()
            self._tail += block
            del self._tail[:-STDERR_TAIL]

    def feed(self, line: str) -> None:
        """Write one line (its newline added) to the command's stdin."""
        if self._closed_early:
            return
        try:
            self._stdin.write(line.encode(_ENCODING, _ERRORS) + b"\n")
        except BrokenPipeError:
            # It stopped reading (``head -1``): that is its right, and its
            # exit status alone says whether it failed.
            self._closed_early = True

    def ready(self) -> Iterator[tuple[str, str]]:
        """The pairs the command printed so far."""
        out = self._out
        while out:
            for line in out.popleft():
                yield parse(line)

    def close(self) -> Iterator[tuple[str, str]]:
        """End its input, wait for it, and yield the rest of its pairs;
        StreamingError if it failed."""
        try:
            self._stdin.close()
        except BrokenPipeError:
            pass
        status = self._proc.wait()
        for t in self._readers:
            t.join()
        yield from self.ready()
        if status != 0:
            how = (f"was killed by signal {-status}" if status < 0
                   else f"exited with status {status}")
            tail = self._tail.decode(_ENCODING, "replace").rstrip()
            raise StreamingError(f"the command {self.cmd!r} {how}"
                                 + (f"; its stderr ends with:\n{tail}" if tail else
                                    " (it wrote nothing to stderr)"))


# --- the two sides of a streaming job, for its job modules -----------------------

_pipes: dict[str, Pipe] = {}


def start(side: str, cmd: str) -> None:
    _pipes[side] = Pipe(cmd)


def map_line(_: Any, line: str) -> Iterator[tuple[str, str]]:
    pipe = _pipes["map"]
    pipe.feed(line)
    return pipe.ready()


def reduce_group(key: str, values: Any) -> Iterator[tuple[str, str]]:
    pipe = _pipes["reduce"]
    feed = pipe.feed
    for value in values:
        feed(f"{key}\t{value}")
    return pipe.ready()


def finish(side: str) -> Iterator[tuple[str, str]]:
    yield from _pipes.pop(side).close()
