"""Streaming jobs (``--mapper CMD --reducer CMD``), run in one process by
the framework's own code (``run_inline``) with real shell commands; each
answer checked against an independent computation (a Counter, the lines
themselves)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

import pytxmr
from pytxmr.inline import run_inline
from pytxmr.jobargs import ArgumentError
from pytxmr.streaming import STDERR_TAIL, Pipe, StreamingError, command, parse

JOBS = Path(pytxmr.__file__).parent / "jobs"
FULL = str(JOBS / "streaming.py")
MAP_ONLY = str(JOBS / "streaming_map_only.py")
SPLIT_WORDS = "awk '{for (i = 1; i <= NF; i++) print $i \"\\t\" 1}'"
#: A reducer in Hadoop's style: a key's lines end where the key changes.
SUM_SORTED = ("awk -F'\\t' '$1 != k {if (NR > 1) print k \"\\t\" n; k = $1; n = 0} "
              "{n += $2} END {if (NR) print k \"\\t\" n}'")
WORDS = ("Prince Andrew Natasha Pierre Moscow war peace the of and to a in that he "
         "was his with French army Napoleon Kutúzov Rostóv été Straße Zhérkov").split()


def novel(path: Path, lines: int, seed: int = 1812) -> Path:
    """War-and-peace-like text: sentences of capitalised and accented words."""
    rng = random.Random(seed)
    path.write_text("".join(" ".join(rng.choices(WORDS, k=rng.randint(1, 14))) + ".\n"
                            for _ in range(lines)), encoding="utf-8")
    return path


@pytest.fixture
def text(tmp_path: Path) -> Path:
    return novel(tmp_path / "in.txt", 3000)


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (there is no pytest-timeout here)."""
    def expired(*_: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def part_lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("part-*"))
            for line in p.read_text(encoding="utf-8").splitlines()]


def test_a_word_count_in_awk_matches_a_counter(text: Path, tmp_path: Path) -> None:
    with deadline(120):
        run_inline(FULL, [str(text)], str(tmp_path / "out"), num_reducers=2,
                   split_size=20_000, args={"mapper": SPLIT_WORDS, "reducer": SUM_SORTED})
    pairs = [line.split("\t") for line in part_lines(tmp_path / "out")]
    assert len(pairs) == len({k for k, _ in pairs}), "a key's lines reached two reducers"
    assert {k: int(v) for k, v in pairs} == Counter(text.read_text(encoding="utf-8").split())


def test_a_reducer_reads_its_partition_sorted_by_utf8_bytes(text: Path, tmp_path: Path) -> None:
    """One reducer process per reduce task: `cat` shows what it was given,
    every pair of its partition in the order of the keys' UTF-8 bytes."""
    run_inline(FULL, [str(text)], str(tmp_path / "out"), num_reducers=2, split_size=20_000,
               args={"mapper": SPLIT_WORDS, "reducer": "cat"})
    parts = sorted((tmp_path / "out").glob("part-*"))
    assert len(parts) == 2
    for part in parts:
        keys = [line.split("\t")[0] for line in part.read_text(encoding="utf-8").splitlines()]
        assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
    got = Counter(line.split("\t")[0] for line in part_lines(tmp_path / "out"))
    assert got == Counter(text.read_text(encoding="utf-8").split())


def test_a_map_only_job_writes_the_commands_lines(text: Path, tmp_path: Path) -> None:
    run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"), split_size=10_000,
               args={"mapper": "cut -d' ' -f1,2 | tr ' ' '\\t'"})
    expected = []
    for line in text.read_text(encoding="utf-8").splitlines():
        words = line.split()
        # cut prints a one-word line as it is: a key with an empty value.
        expected.append("\t".join(words[:2]) if len(words) > 1 else words[0] + "\t")
    assert part_lines(tmp_path / "out") == expected


def test_one_mapper_process_per_map_task(text: Path, tmp_path: Path) -> None:
    """`wc -l` prints once, at the end of its input: one count per split."""
    run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"), split_size=10_000,
               args={"mapper": "wc -l"})
    counts = [int(line) for line in part_lines(tmp_path / "out")]
    assert len(counts) == len(list((tmp_path / "out").glob("part-*"))) > 1
    assert sum(counts) == len(text.read_text(encoding="utf-8").splitlines())


def test_a_value_keeps_everything_after_the_first_tab(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("k\tv1\tv2\nno tab here\n\n")
    run_inline(FULL, [str(tmp_path / "in.txt")], str(tmp_path / "out"), num_reducers=1,
               args={"mapper": "cat", "reducer": "cat"})
    assert part_lines(tmp_path / "out") == ["\t", "k\tv1\tv2", "no tab here\t"]
    assert parse("a\tb\tc") == ("a", "b\tc")
    assert parse("solo") == ("solo", "") and parse("") == ("", "")


def test_bytes_that_are_not_utf8_pass_through(tmp_path: Path) -> None:
    data = b"caf\xe9 au lait\n\xff\xfe\tx\n"
    (tmp_path / "in.txt").write_bytes(data)
    run_inline(MAP_ONLY, [str(tmp_path / "in.txt")], str(tmp_path / "out"),
               args={"mapper": "cat"})
    assert (tmp_path / "out" / "part-00000").read_bytes() == b"caf\xe9 au lait\t\n\xff\xfe\tx\n"


@pytest.mark.parametrize("lines", [30, 200_000], ids=["small", "larger-than-the-pipes"])
def test_a_failing_command_fails_the_job_with_its_stderr(tmp_path: Path, lines: int) -> None:
    """Whether it failed before reading (a broken pipe while we still write)
    or after: the error names the command, its status and its stderr."""
    big = novel(tmp_path / "in.txt", lines)
    mapper = "sh -c 'echo boom >&2; exit 3'"
    with deadline(120), pytest.raises(StreamingError) as failed:
        run_inline(MAP_ONLY, [str(big)], str(tmp_path / "out"), args={"mapper": mapper})
    assert str(failed.value) == (f"the command {mapper!r} exited with status 3; "
                                 f"its stderr ends with:\nboom")
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_command_failing_while_fed_says_only_its_error(tmp_path: Path) -> None:
    """A broken pipe while map still wrote was chained to the error: the
    submitter saw a traceback of pytxmr's, "During handling of the above
    exception", and the error twice."""
    big = novel(tmp_path / "in.txt", 200_000)
    with deadline(120), pytest.raises(StreamingError) as failed:
        run_inline(MAP_ONLY, [str(big)], str(tmp_path / "out"),
                   args={"mapper": "head -1 >/dev/null; exit 3"})
    assert failed.value.__context__ is None and failed.value.__cause__ is None


def test_a_killed_reducer_fails_the_job(text: Path, tmp_path: Path) -> None:
    with pytest.raises(StreamingError, match=r"was killed by signal 9 \(SIGKILL\) "
                                             r"\(it wrote nothing to stderr\)"):
        run_inline(FULL, [str(text)], str(tmp_path / "out"),
                   args={"mapper": "cat", "reducer": "kill -9 $$"})


def test_the_error_shows_only_the_tail_of_stderr(text: Path, tmp_path: Path) -> None:
    mapper = "cat >/dev/null; seq 100000 >&2; echo the-end >&2; exit 1"
    with pytest.raises(StreamingError) as failed:
        run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"), args={"mapper": mapper})
    message = str(failed.value)
    assert message.endswith("\n99999\n100000\nthe-end") and "\n1\n2\n" not in message
    assert len(message) < STDERR_TAIL + 200


def test_stderr_goes_to_the_tasks_own(text: Path, tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"),
               args={"mapper": "echo 'to the task log' >&2; cat"})
    assert "to the task log" in capfd.readouterr().err


def test_a_succeeding_command_s_stderr_reaches_the_task_s_whole(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Its copy was waited for only when the command failed: the task ended
    first, and the end of a succeeding command's stderr was not in its log
    (14 of 40 tasks of a tester's)."""
    pipe = Pipe("seq 1 100000 >&2; cat; (sleep 0.3; echo the-end >&2) >/dev/null &")
    pipe.feed("a")
    assert list(pipe.close()) == ["a"]
    assert capfd.readouterr().err.endswith("\n99999\n100000\nthe-end\n")


def test_a_command_that_stops_reading_decides_by_its_exit_status(tmp_path: Path) -> None:
    """`head -1` exits 0 without reading its input: allowed (Hadoop would
    fail it on the broken pipe). The input is larger than every buffer, so
    the pipe does break while map still writes."""
    big = novel(tmp_path / "in.txt", 200_000)
    first = big.read_text(encoding="utf-8").split("\n", 1)[0]
    with deadline(120):
        run_inline(MAP_ONLY, [str(big)], str(tmp_path / "out"), args={"mapper": "head -1"})
        assert part_lines(tmp_path / "out") == [first + "\t"]
        with pytest.raises(StreamingError, match="exited with status 4; its stderr ends "
                                                 "with:\nstopped"):
            run_inline(MAP_ONLY, [str(big)], str(tmp_path / "out2"),
                       args={"mapper": "head -1; echo stopped >&2; exit 4"})


def test_a_command_that_prints_more_than_it_reads_does_not_deadlock() -> None:
    """Both pipes fill up many times over while the caller only writes."""
    pipe = Pipe("awk '{for (i = 0; i < 100; i++) print NR \"\\t\" $0}'")
    got: list[str] = []
    with deadline(120):
        for n in range(5000):
            pipe.feed(f"line {n}")
            got.extend(pipe.ready())
        got.extend(pipe.close())
    assert len(got) == 500_000
    assert got[-1] == "5000\tline 4999" and got[:100] == ["1\tline 0"] * 100


def test_a_child_left_running_does_not_hold_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sleep 60 & cat` exits once its input ends, but the sleep holds its
    stdout: the task waited for that end for ever (and a failed command's
    error came only when the sleep ended)."""
    import time

    from pytxmr import streaming

    monkeypatch.setattr(streaming, "_ERROR_WAIT", 0.5)
    monkeypatch.setattr(streaming, "_POLL", 0.05)
    pids = tmp_path / "pids"
    started = time.monotonic()
    try:
        pipe = Pipe(f"sleep 60 & echo $! >>{pids}; cat")
        pipe.feed("a")
        assert list(pipe.close()) == ["a"]
        with pytest.raises(StreamingError, match="exited with status 3"):
            list(Pipe(f"sleep 60 & echo $! >>{pids}; exit 3").close())
        assert time.monotonic() - started < 10
    finally:  # on a cluster they end with the task's process group
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("mapper, fails", [
    ("sleep 60 >/dev/null 2>&1 & echo $! >>{pids}; cat", False),
    ("sleep 60 >/dev/null 2>&1 & echo $! >>{pids}; head -1; exit 3", True),
], ids=["left-running", "failed-task"])
def test_inline_what_a_command_started_ends_with_its_task(
        text: Path, tmp_path: Path, mapper: str, fails: bool) -> None:
    """On a cluster a task's process group ends with it, what its commands
    left running too; inline, a `sleep 60 &` ran on after the job, and a
    failed task's command was left waiting for input for ever."""
    pids = tmp_path / "pids"
    mapper = mapper.format(pids=pids)
    try:
        with deadline(120), (pytest.raises(StreamingError) if fails
                             else contextlib.nullcontext()):
            run_inline(FULL, [str(text)], str(tmp_path / "out"), split_size=40_000,
                       args={"mapper": mapper, "reducer": "cat"})
        started = [int(pid) for pid in pids.read_text().split()]
        assert started
        # Killed (SIGKILL) as the job ends; gone a moment later (they ran 60 s).
        deadline_at = time.monotonic() + 10
        while [pid for pid in started if _alive(pid)] and time.monotonic() < deadline_at:
            time.sleep(0.05)
        assert not [pid for pid in started if _alive(pid)]
    finally:
        for pid in pids.read_text().split() if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_a_command_its_failed_task_left_reading_is_killed() -> None:
    """A task that failed before its final hook left its command waiting
    for more input, and a thread writing to it."""
    from pytxmr.streaming import INLINE

    with deadline(30):
        with INLINE.tracked():
            pipe = Pipe("cat")
            pipe.feed("a")
            pid = pipe._proc.pid
        assert not _alive(pid)
        for t in pipe._threads:  # the writer told to end, the reader at the pipe's end
            t.join(10)
            assert not t.is_alive(), t


def test_what_a_command_prints_ahead_of_the_task_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A command printing a hundred lines a line of input filled a queue
    without end while the task wrote its input (3.6 GB in a task): now it
    waits on its stdout once _HELD_BATCHES are held, as on a full pipe."""
    from pytxmr import streaming

    monkeypatch.setattr(streaming, "_HELD_BATCHES", 4, raising=False)
    monkeypatch.setattr(streaming, "STDIN_BUFFER", 1 << 16)
    pipe = Pipe("awk '{for (i = 0; i < 100; i++) print NR \"\\t\" $0}'")
    got = 0
    most = 0
    with deadline(120):
        for n in range(20_000):
            pipe.feed(f"line {n}")
            if n % 2000 == 0:  # the task busy elsewhere: the command waits
                time.sleep(0.05)
                most = max(most, pipe._lines.qsize())
            got += sum(1 for _ in pipe.ready())
        got += sum(1 for _ in pipe.close())
    assert got == 2_000_000
    assert most <= 4 + 1, most  # the batches held, and the end


def test_a_command_that_prints_before_it_reads_gives_each_record_a_bounded_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that prints without reading its input (``seq``, ``yes |
    head``): once the writer's queue was full, the record being handed over
    waited for the command to read, taking its lines meanwhile, all of them
    (ten million lines of one record: a map of 1.5 GB). Its input is held
    instead, and each record takes the lines printed so far."""
    from pytxmr import streaming

    monkeypatch.setattr(streaming, "STDIN_BUFFER", 1 << 16)
    pipe = Pipe("seq -w 1 2000000; cat >/dev/null")  # lines of 8 bytes
    got = most = 0
    with deadline(120):
        for n in range(100_000):  # 1.4 MB: the pipe's, the queue's and more
            pipe.feed(f"line {n:08d}")
            lines = sum(1 for _ in pipe.ready())
            got += lines
            most = max(most, lines)
        got += sum(1 for _ in pipe.close())
    assert got == 2_000_000
    assert most <= streaming._HELD_BATCHES * (streaming._READ // 8 + 1), most


def test_input_held_for_a_slow_command_goes_in_whole_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Input held while the writer is busy is handed over as chunks of
    STDIN_BUFFER, not a chunk per record (a write and a queue hand-off
    each, and 40 bytes of object a 14-byte line)."""
    from pytxmr import streaming

    monkeypatch.setattr(streaming, "STDIN_BUFFER", 4096)
    pipe = Pipe("sleep 0.5; cat")
    sizes: list[int] = []
    for name in ("put", "put_nowait"):
        real = getattr(pipe._chunks, name)

        def spy(item: Any, *args: Any, real: Any = real, **kwargs: Any) -> None:
            real(item, *args, **kwargs)
            sizes.append(len(item) if item is not None else -1)

        setattr(pipe._chunks, name, spy)
    got = 0
    with deadline(60):
        for n in range(20_000):
            pipe.feed(f"line {n:08d}")
            got += sum(1 for _ in pipe.ready())
        got += sum(1 for _ in pipe.close())
    assert got == 20_000
    assert sizes[-1] == -1 and min(sizes[:-2]) >= 4096, sizes  # the last chunk: what is left


def test_long_lines_a_command_prints_ahead_are_bounded_by_their_bytes() -> None:
    """A batch of one long line took one of the _HELD_BATCHES: a command
    printing 20 MB lines could have 64 of them held. A batch takes room
    once per _HELD_BYTES of it."""
    from pytxmr import streaming

    line = "x" * 4_000_000
    pipe = Pipe(f"{sys.executable} -c \"import sys\n"
                f"for _ in range(10): sys.stdout.write('x' * {len(line)} + chr(10))\"")
    with deadline(60):
        held = -1
        while held != pipe._lines.qsize():  # until the command waits
            held = pipe._lines.qsize()
            time.sleep(0.5)
        per_line = 1 + len(line) // streaming._HELD_BYTES
        assert held <= streaming._HELD_BATCHES // per_line, held
        assert list(pipe.close()) == [line] * 10


def test_long_input_lines_reach_the_command_whole() -> None:
    """A long line is handed to the command as a chunk of its own, its
    newline after it: the lines around it keep their order."""
    lines = ["a", "\u00e9" * 1_500_000, "b\tc", "x" * 3_000_000, "d"]
    pipe = Pipe("cat")
    got = []
    with deadline(60):
        for line in lines:
            pipe.feed(line)
            got.extend(pipe.ready())
        got.extend(pipe.close())
    assert got == lines


def test_output_lines_are_cut_as_hadoop_cuts_them(tmp_path: Path) -> None:
    """LF or CR LF ends a line; a last line may lack one; a long line of
    multi-byte characters spans many reads."""
    script = tmp_path / "out.py"
    script.write_text("import sys\n"
                      "sys.stdout.buffer.write(b'a\\r\\nb\\tc\\r\\n\\r\\r\\n' + "
                      "'\u00e9'.encode() * 100_000 + b'\\nlast')\n")
    pipe = Pipe(f"{sys.executable} {script}")
    assert list(pipe.close()) == ["a", "b\tc", "\r", "\u00e9" * 100_000, "last"]


def test_a_command_that_does_not_exist_is_refused(text: Path, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="no such command: nosuchprogram"):
        run_inline(MAP_ONLY, [str(text)], str(tmp_path / "out"),
                   args={"mapper": "nosuchprogram --flag"})
    with pytest.raises(ArgumentError, match="argument reducer: .*no such command: nope"):
        run_inline(FULL, [str(text)], str(tmp_path / "out"),
                   args={"mapper": "cat", "reducer": "LC_ALL=C nope"})
    with pytest.raises(ArgumentError, match="the job needs the argument reducer"):
        run_inline(FULL, [str(text)], str(tmp_path / "out"), args={"mapper": "cat"})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cmd", ["cat", "LC_ALL=C sort -k1,1", "cut -f1|uniq -c", "/bin/cat",
                                 "awk '{print $1 \"\\t\" 1}'", "(cd /tmp && cat)",
                                 "$SHELL -c cat", "exec cat", "read header; cat", "exit 3",
                                 "command cat", "<in.txt cat", "2>/dev/null cat",
                                 "LC_ALL=C 2>&1 sort"])
def test_a_command_whose_program_exists_is_taken_as_it_is(cmd: str) -> None:
    """Builtins and leading redirections are the shell's: `read header; cat`
    (a mapper that skips a header) was "no such command: read"."""
    assert command(cmd) == cmd


@pytest.mark.parametrize("cmd, error", [
    ("", "the command is empty"), ("   ", "the command is empty"),
    ("A=1", "no program in the command"), ("nosuch -v", "no such command: nosuch"),
    ("/no/such/program", "no such command: /no/such/program"),
    ("2>/dev/null nosuch", "no such command: nosuch"), ("<x", "no program in the command"),
    ("awk '{print}", "cannot parse the command"),
])
def test_a_command_that_cannot_run_is_refused(cmd: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        command(cmd)


@pytest.mark.parametrize("argv, streaming_args", [
    (["--mapper", "", "in.txt"], [("mapper", "")]),
    (["--mapper", "cat", "--reducer", "", "in.txt"], [("mapper", "cat"), ("reducer", "")]),
])
def test_an_empty_command_is_a_command_to_refuse_not_none(
        argv: list[str], streaming_args: list[tuple[str, str]]) -> None:
    """`--mapper ''` was taken for no --mapper ("give the job module and
    at least one input"): it is checked as a command, which names it."""
    from pytxmr.cli import parse

    a = parse(["run", *argv, "-o", "out"])
    assert a.args == streaming_args and a.inputs == ["in.txt"]


def test_a_job_module_given_with_mapper_is_named_as_an_input(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`run --mapper cat wordcount.py in.txt` counted the module's lines as
    input without a word: the user meant one or the other."""
    from pytxmr.cli import parse

    a = parse(["run", "--mapper", "cat", "wordcount.py", "in.txt", "-o", "out"])
    assert a.inputs == ["wordcount.py", "in.txt"]
    assert "wordcount.py is read as an input" in capsys.readouterr().err
    parse(["run", "--mapper", "cat", "in.txt", "code.py", "-o", "out"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("option, command", [("--reduce", "--reducer"), ("--map", "--mapper")])
def test_a_function_name_given_for_a_command_names_the_command_option(
        option: str, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --mapper cat --reduce cat` (for --reducer) said that pytxmr's
    own streaming module, a file the user never heard of, has no 'cat'."""
    from pytxmr.cli import parse

    with pytest.raises(SystemExit) as exit:
        parse(["run", "--mapper", "cat", option, "cat", "in.txt", "-o", "out"])
    assert exit.value.code == 2
    assert f"a streaming job (--mapper) takes its command with {command}" in \
        capsys.readouterr().err
