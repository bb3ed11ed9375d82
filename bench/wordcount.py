#!/usr/bin/env python3
"""pytxmr word-count benchmark against the peers, side by side in one run.

    python bench/wordcount.py --mb 50 [--mb 100 ...] [--runs 3]
        [--systems inline,run,submit,batch-run,batch-submit]
        [--peers inline,combine,mp_pool,dask,pyspark,mrjob]
        [--peers-python /tmp/peers-venv/bin/python]
        [--out-dir /tmp/pytxmr-bench] [--plot bench/wordcount.png] [--corpus FILE]

    python bench/wordcount.py --job inverted_index --mb 50 [--runs 1]

For every size: generate (or reuse) the corpus, read it once (page cache),
make the reference output, then run every system and peer ``--runs`` times,
round by round (each round runs every entry once, the starting entry rotating
by one each round, so machine noise hits all entries alike). Each run's wall
time and peak RSS are measured, its output is checked against the reference,
and a table per size is printed and written as JSON (and optionally a PNG
plot of the median time against the input size).

Standard library only (matplotlib is used for ``--plot`` when installed).
Linux only (peak RSS comes from wait4() and /proc). See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
import itertools
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))
DEFAULT_PEERS_PY = "/tmp/peers-venv/bin/python"
MB = 1_000_000  # 1 MB = 10**6 bytes throughout (corpus sizes and RSS alike)
PY = sys.executable

# name -> (label, job module, pytxmr command kind)
SYSTEMS = {
    "inline": ("pytxmr run --inline", "wordcount.py", "inline"),
    "run": ("pytxmr run --workers 2", "wordcount.py", "run"),
    "submit": ("pytxmr submit (1 JT + 2 TT)", "wordcount.py", "submit"),
    "batch-inline": ("pytxmr batch run --inline", "wordcount_batch.py", "inline"),
    "batch-run": ("pytxmr batch run --workers 2", "wordcount_batch.py", "run"),
    "batch-submit": ("pytxmr batch submit", "wordcount_batch.py", "submit"),
}
DEFAULT_SYSTEMS = "inline,run,submit,batch-run,batch-submit"

# name -> (label, script, extra args, needs the peers python, modules it imports)
PEERS = {
    "inline": ("inline.py (group)", "inline.py", [], False, ()),
    "combine": ("inline.py --mode combine", "inline.py", ["--mode", "combine"], False, ()),
    "counter": ("counter.py", "counter.py", [], False, ()),
    "mp_pool": ("mp_pool.py --workers 2", "mp_pool.py", ["--workers", "2"], False, ()),
    "dask": ("dask bag (processes, 2)", "dask_bag.py",
             ["--scheduler", "processes", "--workers", "2"], True, ("dask.bag",)),
    "pyspark": ("pyspark local[2]", "pyspark_local.py", ["--master", "local[2]"], True,
                ("pyspark",)),
    "mrjob": ("mrjob -r local (2 cores)", "mrjob_local.py",
              ["-r", "local", "--num-cores", "2"], True, ("mrjob",)),
}
DEFAULT_PEERS = "inline,combine,mp_pool,dask,pyspark,mrjob"

BASE_INLINE = "pytxmr:inline"
BASE_INLINE_PY = "peer:inline"
BASE_MP_POOL = "peer:mp_pool"


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Processes: start, measure, always stop
# --------------------------------------------------------------------------

_LIVE: dict[int, str] = {}  # process-group leaders we started and have not reaped
_CLUSTERS: list["Cluster"] = []
_TEMP_DIRS: list[str] = []


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_table(cpu: dict[int, int] | None = None) -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgrp) of every process (one /proc scan, ~1 ms); fills
    `cpu` with pid -> utime + stime (clock ticks) when given."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(b")") + 2:].split()
        table[int(d)] = (int(fields[1]), int(fields[2]))
        if cpu is not None:
            cpu[int(d)] = int(fields[11]) + int(fields[12])
    return table


def _descendants(roots, table) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, (_, pg) in _proc_table().items() if pg == pgid]


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB; (0, 0) for a zombie or a vanished process."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _reset_hwm(pid: int) -> bool:
    """Reset a process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _TICK


def _tree_cpu(roots) -> dict[int, int]:
    """pid -> utime + stime + cutime + cstime (ticks: its own CPU and that of
    the children it reaped) of every process in the trees of `roots`."""
    out = {}
    for pid in _descendants(list(roots), _proc_table()) if roots else ():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(b")") + 2:].split()
        out[pid] = sum(int(x) for x in fields[11:15])
    return out


def _tree_cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two _tree_cpu readings (processes new since
    `before` count in full; those gone by `after` are lost unless reaped by
    one still there)."""
    return sum(v - before.get(pid, 0) for pid, v in after.items()) / _TICK


def wait_idle(max_wait: float, threshold: float = 0.3, probe: float = 0.5) -> float:
    """Wait (at most max_wait s) until the machine's other load, measured over
    `probe` s while this benchmark runs nothing, is below `threshold` cores.
    Returns the load last measured."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, s0 = _busy_cpu_s(), sum(os.times()[:2])
        time.sleep(probe)
        load = max(0.0, _busy_cpu_s() - b0 - (sum(os.times()[:2]) - s0)) / probe
        if load < threshold or time.monotonic() >= deadline:
            return load


def role_of(cmd: str, parent_cmd: str = "") -> str:
    """jobtracker, tasktracker, task, zygote (a warm task-process pool; what
    it forks is a task), client (submit), run, inline; other."""
    words = cmd.split()
    modules = [w[len("pytxmr."):] for w in words if w.startswith("pytxmr.")]
    if modules:
        if cmd == parent_cmd:  # forked without exec: a task of a pool process
            return "task"
        return modules[0]
    if "pytxmr" in words and "submit" in words:
        return "client"
    if "pytxmr" in words and "run" in words:
        return "inline" if "--inline" in words else "run"
    return "other"


class Sampler(threading.Thread):
    """Polls the process trees of a run: each process's peak RSS (VmHWM, read
    every `interval` s) and the peak of the summed RSS (VmRSS) of the trees."""

    def __init__(self, roots: list[int], daemon_roots: list[int], interval: float) -> None:
        super().__init__(daemon=True)
        self.roots, self.daemon_roots, self.interval = roots, daemon_roots, interval
        self.stop_event = threading.Event()
        self.peak_kb: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self.ppid: dict[int, int] = {}
        self.tree_kb = 0
        self.daemon_tree_kb = 0
        # CPU ticks of every process ever seen in the trees (also after it is
        # orphaned and leaves them): first and last reading
        self.cpu_first: dict[int, int] = {}
        self.cpu_last: dict[int, int] = {}
        self.ticks = 0

    def cpu_s(self) -> float:
        """CPU seconds the processes seen in the trees used while sampled
        (processes new in the run count from zero)."""
        return sum(last - self.cpu_first[pid] for pid, last in self.cpu_last.items()) / _TICK

    def tick(self) -> None:
        cpu: dict[int, int] = {}
        table = _proc_table(cpu)
        run_pids = _descendants(self.roots, table)
        daemon_pids = _descendants(self.daemon_roots, table)
        for pid in run_pids | daemon_pids | (self.cpu_last.keys() & table.keys()):
            if pid not in self.cpu_first:
                self.cpu_first[pid] = cpu.get(pid, 0) if self.ticks == 0 else 0
            self.cpu_last[pid] = cpu.get(pid, 0)
        self.ticks += 1
        total = dtotal = 0
        for pid in run_pids | daemon_pids:
            if pid in self.roots:  # the launcher (GNU time): not part of the run
                continue
            rss, hwm = _status_kb(pid)
            if pid not in self.cmd:
                self.cmd[pid] = _cmdline(pid)
                self.ppid[pid] = table[pid][0]
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm, rss)
            total += rss
            if pid in daemon_pids:
                dtotal += rss
        self.tree_kb = max(self.tree_kb, total)
        self.daemon_tree_kb = max(self.daemon_tree_kb, dtotal)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception:  # a process vanishing mid-read must not stop sampling
                pass
            self.stop_event.wait(self.interval)

    def finish(self) -> None:
        self.stop_event.set()
        self.join()


# A process forked from this (large) benchmark process would inherit its
# memory until exec, and Linux counts that in the child's maximum RSS (what
# wait4() reports). So each run is started through a small launcher that
# forks the command itself and reports the command's rusage: GNU time when
# present, else the few lines below (a bare python, about 10 MB).
_LAUNCHER = r"""
import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([ru.ru_maxrss, ru.ru_utime, ru.ru_stime], f)
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""
GNU_TIME = "/usr/bin/time"


def _have_gnu_time() -> bool:
    try:
        return subprocess.run([GNU_TIME, "-f", "%M", "-o", os.devnull, "true"],
                              capture_output=True).returncode == 0
    except OSError:
        return False


HAVE_GNU_TIME = _have_gnu_time()


def _launch_cmd(cmd: list[str], rusage_file: str) -> list[str]:
    if HAVE_GNU_TIME:
        return [GNU_TIME, "-f", "%M %U %S", "-o", rusage_file, "--", *cmd]
    return [PY, "-S", "-c", _LAUNCHER, rusage_file, *cmd]


def _read_rusage(rusage_file: str) -> tuple[int, float] | None:
    """(max RSS kB, user+sys CPU s) of the command, from the launcher's file."""
    try:
        with open(rusage_file) as f:
            text = f.read()
    except OSError:
        return None
    try:
        if HAVE_GNU_TIME:
            # GNU time prefixes "Command exited with non-zero status N" lines
            kb, user, sys_ = text.strip().splitlines()[-1].split()
            return int(kb), float(user) + float(sys_)
        kb, user, sys_ = json.loads(text)
        return int(kb), user + sys_
    except (ValueError, IndexError):
        return None


def run_measured(cmd: list[str], log_path: str, *, env=None, cwd=None, timeout: float = 3600,
                 daemon_roots: list[int] = (), interval: float = 0.1) -> dict[str, Any]:
    """Run `cmd` in its own process group; wall time, exit status, peak RSS.

    The largest process's peak RSS is the larger of what the launcher reports
    (GNU time's %M: the maximum over the command and every descendant it
    waited for) and the VmHWM of every process polled in /proc during the run
    (this also covers the daemons of `daemon_roots`, whose VmHWM is reset at
    the start of the run, and their task children)."""
    daemon_pids = sorted(_descendants(list(daemon_roots), _proc_table())) if daemon_roots else []
    for pid in daemon_pids:
        _reset_hwm(pid)
    rusage_file = log_path + ".rusage"
    if os.path.exists(rusage_file):
        os.remove(rusage_file)
    with open(log_path, "wb") as logf:
        logf.write(("$ " + shlex.join(cmd) + "\n").encode())
        logf.flush()
        daemon_cpu0 = _tree_cpu(daemon_roots)
        self_cpu0 = sum(os.times()[:2])
        busy0 = _busy_cpu_s()
        t0 = time.perf_counter()
        p = subprocess.Popen(_launch_cmd(cmd, rusage_file), stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        _LIVE[p.pid] = shlex.join(cmd)
        sampler = Sampler([p.pid], list(daemon_roots), interval)
        sampler.start()
        timed_out = []

        def on_timeout() -> None:
            timed_out.append(True)
            _kill_group(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        left: list[str] = []
        try:
            p.wait()
            wall = time.perf_counter() - t0
            busy = _busy_cpu_s() - busy0
            daemon_cpu = _tree_cpu_delta(daemon_cpu0, _tree_cpu(daemon_roots))
            self_cpu = sum(os.times()[:2]) - self_cpu0
        finally:
            timer.cancel()
            sampler.finish()
            # processes left running in the run's process group (should be none)
            # (a moment's grace: e.g. multiprocessing's resource tracker exits by itself)
            for _ in range(10):
                left = [c for c in (_cmdline(pid) for pid in _group_members(p.pid)
                                    if pid != p.pid) if c]  # (zombies have no cmdline)
                if not left:
                    break
                time.sleep(0.1)
            _kill_group(p.pid, signal.SIGKILL)
            _LIVE.pop(p.pid, None)
    for pid in daemon_pids:  # exact per-run peak of the long-lived daemons
        _, hwm = _status_kb(pid)
        sampler.peak_kb[pid] = max(sampler.peak_kb.get(pid, 0), hwm)
        sampler.cmd.setdefault(pid, _cmdline(pid))
    sampler.peak_kb.pop(p.pid, None)  # the launcher itself
    procs = []
    for pid, kb in sampler.peak_kb.items():
        cmdline = sampler.cmd.get(pid, "")
        parent = sampler.cmd.get(sampler.ppid.get(pid, 0), "")
        procs.append({"pid": pid, "role": role_of(cmdline, parent), "peak_mb": kb * 1024 / MB,
                      "daemon": pid in daemon_pids, "cmd": cmdline[:200]})
    ru = _read_rusage(rusage_file)
    launcher_kb, cpu = ru if ru else (0, None)
    largest_kb = max([launcher_kb] + list(sampler.peak_kb.values()))
    # the launcher's rusage misses processes orphaned by the command (not
    # reaped through it); the polling misses the last moments of short ones
    run_cpu = max((cpu or 0) + daemon_cpu, sampler.cpu_s())
    return {
        "rc": p.returncode, "timed_out": bool(timed_out), "wall_s": wall, "cpu_s": run_cpu,
        # CPU used on the machine during the run by processes that are not the
        # run's (nor the benchmark's own sampling): other users' load, in cores
        "other_load": max(0.0, busy - run_cpu - self_cpu) / wall if wall > 0 else 0.0,
        "peak_rss_mb": largest_kb * 1024 / MB,
        "launcher_maxrss_mb": launcher_kb * 1024 / MB,
        "tree_mb": sampler.tree_kb * 1024 / MB,
        "daemon_tree_mb": sampler.daemon_tree_kb * 1024 / MB if daemon_roots else None,
        "processes": procs, "stragglers": left,
    }


def _wait_ready(path: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


class Cluster:
    """1 jobtracker + N tasktrackers started for the benchmark (port 0, ready
    files, a temporary secret, HOME in a temporary directory); always stopped."""

    def __init__(self, env: dict[str, str], log_dir: str, workers: int, slots: int) -> None:
        self.env, self.log_dir, self.workers, self.slots = dict(env), log_dir, workers, slots
        self.procs: list[subprocess.Popen] = []
        self.tmp = ""
        self.port = 0
        self.secret_file = ""

    def _start(self, name: str, args: list[str], ready: str) -> dict:
        logf = open(os.path.join(self.log_dir, f"cluster-{name}.log"), "ab")
        cmd = [PY, *args]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             env=self.env, cwd=self.tmp, start_new_session=True)
        logf.close()
        self.procs.append(p)
        _LIVE[p.pid] = shlex.join(cmd)
        return _wait_ready(ready, p, name)

    def start(self) -> None:
        _CLUSTERS.append(self)
        self.tmp = tempfile.mkdtemp(prefix="pytxmr-bench-cluster-")
        home = os.path.join(self.tmp, "home")
        os.makedirs(home)
        self.env["HOME"] = home
        self.secret_file = os.path.join(self.tmp, "secret")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        t0 = time.perf_counter()
        jt_ready = os.path.join(self.tmp, "jobtracker.ready")
        info = self._start("jobtracker", [
            "-m", "pytxmr.jobtracker", "--port", "0", "--ready-file", jt_ready,
            "--workdir", os.path.join(self.tmp, "jobtracker"),
            "--secret-file", self.secret_file], jt_ready)
        self.port = int(info["port"])
        for i in range(self.workers):
            ready = os.path.join(self.tmp, f"tasktracker-{i}.ready")
            self._start(f"tasktracker-{i}", [
                "-m", "pytxmr.tasktracker", "--jobtracker", f"127.0.0.1:{self.port}",
                "--slots", str(self.slots), "--ready-file", ready,
                "--workdir", os.path.join(self.tmp, f"tasktracker-{i}"),
                "--secret-file", self.secret_file], ready)
        log(f"cluster up in {time.perf_counter() - t0:.2f} s: jobtracker 127.0.0.1:{self.port}, "
            f"{self.workers} tasktrackers x {self.slots} slots "
            f"(pids {', '.join(str(p.pid) for p in self.procs)}; logs in {self.log_dir})")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.poll() is not None]
        if dead:
            raise RuntimeError("cluster daemon(s) died: " + ", ".join(
                f"pid {p.pid} status {p.returncode}" for p in dead))

    def stop(self) -> None:
        """SIGTERM to each daemon's process group, then SIGKILL after 10 s."""
        if self in _CLUSTERS:
            _CLUSTERS.remove(self)
        live = [p for p in self.procs if p.poll() is None]
        for p in reversed(live):  # tasktrackers first, then the jobtracker
            _kill_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            _kill_group(p.pid, signal.SIGKILL)  # the daemon if still there, and its children
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _LIVE.pop(p.pid, None)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""


def cleanup() -> None:
    """atexit and signal path: stop the clusters, kill anything left running."""
    for c in list(_CLUSTERS):
        try:
            c.stop()
        except Exception as e:  # keep going: every process must go
            print(f"cluster stop failed: {e}", file=sys.stderr)
    for pgid in list(_LIVE):
        _kill_group(pgid, signal.SIGTERM)
    if _LIVE:
        time.sleep(0.5)
    for pgid in list(_LIVE):
        _kill_group(pgid, signal.SIGKILL)
        _LIVE.pop(pgid, None)
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    _TEMP_DIRS.clear()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def builtin_corpus(path: str, mb: float, seed: int) -> None:
    """A simple Zipf corpus (used when ../shared/bench/make_corpus.py is absent):
    200,000 pseudo-words, weight of rank r = 1/(r + 2.7), lines of 60-100
    characters, words separated by one space; ASCII whitespace only."""
    vrng = random.Random(20240101)
    vocab, seen = [], set()
    while len(vocab) < 200_000:
        w = "".join(vrng.choices("abcdefghijklmnopqrstuvwxyz", k=max(2, min(14, int(vrng.gauss(6.5, 2.5))))))
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    cum = list(itertools.accumulate(1.0 / (r + 2.7) for r in range(1, len(vocab) + 1)))
    rng = random.Random(seed)
    target, written = int(mb * MB), 0
    with open(path, "wb") as out:
        while written < target:
            words = rng.choices(vocab, cum_weights=cum, k=100_000)
            lines, line, n = [], [], 0
            want = rng.randint(60, 100)
            for w in words:
                line.append(w)
                n += len(w) + 1
                if n > want:
                    lines.append(" ".join(line))
                    written += n  # the line and its '\n'
                    line, n, want = [], 0, rng.randint(60, 100)
                    if written >= target:  # stop after the line that reaches the size
                        break
            out.write(("\n".join(lines) + "\n").encode())


def ensure_corpus(mb: float, out_dir: str, shared: str) -> tuple[str, dict]:
    """The corpus of `mb` MB in out_dir, generated once (seed 1) and cached."""
    gen = os.path.join(shared, "make_corpus.py")
    generator = "make_corpus.py --seed 1" if os.path.exists(gen) else "built-in (seed 1)"
    name = f"corpus{mb:g}.txt"
    path = os.path.join(out_dir, name)
    meta_path = path + ".meta.json"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta["generator"] == generator and meta["mb"] == mb
                and os.path.getsize(path) == meta["bytes"]):
            return path, meta
    except (OSError, ValueError, KeyError):
        pass
    log(f"generating {path} ({mb:g} MB, {generator}) ...")
    t0 = time.perf_counter()
    tmp = path + ".tmp"
    if os.path.exists(gen):
        subprocess.run([PY, gen, "--mb", f"{mb:g}", "--out", tmp, "--seed", "1"], check=True)
    else:
        log(f"  ({gen} not found: using the built-in generator)")
        builtin_corpus(tmp, mb, 1)
    os.replace(tmp, path)
    meta = {"generator": generator, "mb": mb, "bytes": os.path.getsize(path),
            "sha256": _sha256(path)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"  {meta['bytes']:,} bytes in {time.perf_counter() - t0:.1f} s, sha256 {meta['sha256']}")
    return path, meta


def warm_up(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass
    return time.perf_counter() - t0


def split_corpus(path: str, parts: int) -> list[str]:
    """Cut `path` at line boundaries into `parts` files of about equal size (cached)."""
    base = os.path.splitext(path)[0]
    d = f"{base}-split{parts}"
    names = [os.path.join(d, f"{os.path.basename(base)}-{i:02d}.txt") for i in range(parts)]
    stamp = os.path.join(d, "DONE")
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(path):
        return names
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        cuts = [0]
        for i in range(1, parts):
            f.seek(max(cuts[-1], size * i // parts))
            f.readline()
            cuts.append(f.tell())
        cuts.append(size)
        for name, a, b in zip(names, cuts, cuts[1:]):
            f.seek(a)
            with open(name, "wb") as out:
                left = b - a
                while left:
                    block = f.read(min(left, 1 << 22))
                    out.write(block)
                    left -= len(block)
    open(stamp, "w").close()
    return names


# --------------------------------------------------------------------------
# Checking outputs
# --------------------------------------------------------------------------

class Malformed(Exception):
    pass


def _keyed_lines(paths: list[str], parse: Callable[[bytes], Any],
                 what: str) -> dict[bytes, Any]:
    """key -> parse(value) over `key<TAB>value` lines (rpartition on the last
    tab; a key at most once, across all the part files of an output too)."""
    out: dict[bytes, Any] = {}
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.endswith(b"\n"):
                    line = line[:-1]
                key, sep, value = line.rpartition(b"\t")
                if not sep:
                    raise Malformed(f"{path}:{n}: no tab in line {line[:80]!r}")
                try:
                    out_value = parse(value)
                except ValueError:
                    raise Malformed(f"{path}:{n}: {what}: {value[:80]!r}") from None
                if key in out:
                    raise Malformed(f"{path}:{n}: word {key[:80]!r} appears twice")
                out[key] = out_value
    return out


def load_counts(paths: list[str]) -> dict[bytes, int]:
    """word -> count, with the same rules as ../shared/bench/check_same.py."""
    return _keyed_lines(paths, int, "count is not an integer")


def _file_names(value: bytes) -> tuple[str, ...]:
    names = json.loads(value)
    if not isinstance(names, list) or names != sorted(set(names)):
        raise ValueError("not a sorted list of distinct names")
    return tuple(names)


def load_index(paths: list[str]) -> dict[bytes, tuple[str, ...]]:
    """word -> tuple of file names, from `word<TAB>["a", "b"]` lines."""
    return _keyed_lines(paths, _file_names, "value is not a sorted JSON list of distinct names")


def compare(ref: dict, got: dict) -> str:
    only_ref = ref.keys() - got.keys()
    only_got = got.keys() - ref.keys()
    differ = [w for w in ref.keys() & got.keys() if ref[w] != got[w]]
    if not (only_ref or only_got or differ):
        return "SAME"
    return (f"DIFFERENT: {len(ref)} vs {len(got)} keys; missing {len(only_ref)} "
            f"e.g. {sorted(only_ref)[:3]}, extra {len(only_got)} e.g. {sorted(only_got)[:3]}, "
            f"different values {len(differ)} e.g. "
            f"{[(w, ref[w], got[w]) for w in sorted(differ)[:3]]}")


def output_files(out: str) -> list[str]:
    if os.path.isdir(out):
        return sorted(os.path.join(out, n) for n in os.listdir(out) if n.startswith("part-"))
    return [out] if os.path.exists(out) else []


def check_output(out: str, ref: dict, loader) -> str:
    files = output_files(out)
    if not files:
        return "NO OUTPUT"
    try:
        got = loader(files)
    except Malformed as e:
        return f"MALFORMED: {e}"
    return compare(ref, got)


def wordcount_reference(corpus: str, shared: str, env: dict) -> tuple[dict, str]:
    """inline.py's output (cached beside the corpus), else an in-script count."""
    inline_py = os.path.join(shared, "peers", "inline.py")
    if os.path.exists(inline_py):
        ref = corpus + ".ref-inline.tsv"
        if not (os.path.exists(ref) and os.path.getmtime(ref) >= os.path.getmtime(corpus)):
            log("reference: running inline.py (untimed) ...")
            t0 = time.perf_counter()
            subprocess.run([PY, inline_py, corpus, ref + ".tmp"], check=True, env=env)
            os.replace(ref + ".tmp", ref)
            log(f"  done in {time.perf_counter() - t0:.1f} s")
        return load_counts([ref]), f"inline.py output ({ref})"
    log(f"reference: {inline_py} not found; counting in the benchmark script")
    c: Counter = Counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            c.update(line.split())
    return {w.encode(): n for w, n in c.items()}, "in-script count of line.split() tokens"


def index_reference(files: list[str]) -> dict[bytes, tuple[str, ...]]:
    """word -> sorted tuple of the base names of the files containing it."""
    sets: dict[str, set] = {}
    for path in files:
        name = os.path.basename(path)
        words: set = set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                words.update(line.split())
        for w in words:
            s = sets.get(w)
            if s is None:
                sets[w] = {name}
            else:
                s.add(name)
    return {w.encode(): tuple(sorted(s)) for w, s in sets.items()}


# --------------------------------------------------------------------------
# Entries (what gets run) and reporting
# --------------------------------------------------------------------------

class Entry:
    def __init__(self, key: str, label: str, build, uses_cluster: bool = False) -> None:
        self.key, self.label, self.build, self.uses_cluster = key, label, build, uses_cluster


def pytxmr_entry(key: str, label: str, job: str, kind: str, cluster_ref: list, src: str) -> Entry:
    job_path = os.path.join(src, "examples", job)

    def build(inputs: list[str], out: str) -> list[str]:
        if kind == "inline":
            return [PY, "-m", "pytxmr", "run", "--inline", job_path, *inputs, "-o", out, "-q"]
        if kind == "run":
            return [PY, "-m", "pytxmr", "run", "--workers", "2", job_path, *inputs, "-o", out, "-q"]
        c = cluster_ref[0]
        return [PY, "-m", "pytxmr", "submit", job_path, *inputs, "-o", out,
                "--jobtracker", f"127.0.0.1:{c.port}", "--secret-file", c.secret_file, "-q"]

    return Entry(key, label, build, uses_cluster=(kind == "submit"))


def peer_entries(names: list[str], shared: str, peers_py: str | None) -> tuple[list[Entry], list[str]]:
    entries, notes = [], []
    peers_dir = os.path.join(shared, "peers")
    importable: dict[str, bool] = {}
    for name in names:
        if name not in PEERS:
            notes.append(f"unknown peer {name!r} skipped (known: {', '.join(PEERS)})")
            continue
        label, script, extra, venv, modules = PEERS[name]
        path = os.path.join(peers_dir, script)
        if not os.path.exists(path):
            notes.append(f"peer {name}: {path} not found, skipped")
            continue
        py = PY
        if venv:
            if not peers_py or not os.path.exists(peers_py):
                notes.append(f"peer {name}: no peers python (--peers-python; default "
                             f"{DEFAULT_PEERS_PY}, see ../shared/bench/README.md), skipped")
                continue
            missing = []
            for m in modules:
                if m not in importable:
                    importable[m] = subprocess.run(
                        [peers_py, "-c", f"import {m}"], capture_output=True).returncode == 0
                if not importable[m]:
                    missing.append(m)
            if missing:
                notes.append(f"peer {name}: {peers_py} cannot import {', '.join(missing)}, skipped")
                continue
            if name == "pyspark" and shutil.which("java") is None:
                notes.append("peer pyspark: no `java` on PATH (needs Java 17+), skipped")
                continue
            py = peers_py

        def build(inputs, out, py=py, path=path, extra=extra):
            return [py, path, inputs[0], out, *extra]

        entries.append(Entry(f"peer:{name}", label, build))
    return entries, notes


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def summarize(runs: list[dict]) -> dict[str, Any]:
    ok = [r for r in runs if r["rc"] == 0]
    checks = sorted({r["check"] for r in runs})
    return {
        "runs": len(runs), "ok_runs": len(ok),
        "median_wall_s": median([r["wall_s"] for r in ok]),
        "min_wall_s": min([r["wall_s"] for r in ok], default=None),
        "max_wall_s": max([r["wall_s"] for r in ok], default=None),
        "peak_rss_mb": max([r["peak_rss_mb"] for r in ok], default=None),
        "tree_mb": max([r["tree_mb"] for r in ok], default=None),
        "daemon_tree_mb": max([r["daemon_tree_mb"] for r in ok if r["daemon_tree_mb"] is not None],
                              default=None),
        "median_cpu_s": median([r["cpu_s"] for r in ok]),
        "max_other_load": max([r["other_load"] for r in runs], default=None),
        "check": "SAME" if checks == ["SAME"] else "; ".join(c.split(":")[0] for c in checks),
    }


def print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [line(headers), "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                                         for i, w in enumerate(widths)) + "|"]
    out += [line(r) for r in rows]
    text = "\n".join(out)
    log(text)
    return text


def wordcount_table(size: dict) -> str:
    s = size["summary"]
    base = {k: (s.get(k) or {}).get("median_wall_s") for k in (BASE_INLINE, BASE_INLINE_PY, BASE_MP_POOL)}

    def ratio(t, b):
        return fmt(t / b, ".2f") if t is not None and b else "-"

    rows = []
    for key, label in size["order"]:
        r = s[key]
        t = r["median_wall_s"]
        mbps = size["bytes"] / MB / t if t else None
        check = r["check"] if r["check"] == "SAME" else f"!!! {r['check']} !!!"
        if r["ok_runs"] < r["runs"]:
            check += f" ({r['runs'] - r['ok_runs']} FAILED)"
        rows.append([label, fmt(t), fmt(r["min_wall_s"]), fmt(mbps, ".1f"), fmt(r["median_cpu_s"], ".1f"),
                     fmt(r["peak_rss_mb"], ".0f"), fmt(r["tree_mb"], ".0f"),
                     fmt(r["daemon_tree_mb"], ".0f"),
                     ratio(t, base[BASE_INLINE]), ratio(t, base[BASE_INLINE_PY]),
                     ratio(t, base[BASE_MP_POOL]), fmt(r["max_other_load"], ".2f"), check])
    text = print_table(["system", "median s", "min s", "MB/s", "CPU s", "peak RSS MB", "tree MB",
                        "daemons MB", "x run --inline", "x inline.py", "x mp_pool",
                        "other load", "output"],
                       rows, right={1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
    return text + "\n" + per_run_lines(size)


def per_run_lines(size: dict) -> str:
    """Every run's wall time (and the other load during it), in run order."""
    lines = ["", "every run, in round order: wall s (other load in cores)"]
    for key, label in size["order"]:
        runs = sorted(size["runs"][key], key=lambda r: r["round"])
        lines.append(f"  {label:<30} " + "  ".join(
            f"{r['wall_s']:6.2f} ({r['other_load']:.2f})" if r["rc"] == 0 else "FAILED"
            for r in runs))
    text = "\n".join(lines)
    log(text)
    return text


def wordcount_targets(size: dict) -> list[str]:
    """The issue's word-count targets, checked on this size's medians."""
    s = size["summary"]

    def t(key):
        return (s.get(key) or {}).get("median_wall_s")

    out = []

    def target(desc, a, b, limit):
        ta, tb = t(a), t(b)
        if ta is None or tb is None:
            return
        r = ta / tb
        verdict = "met" if r <= limit else f"MISSED by {100 * (r / limit - 1):.0f}%"
        out.append(f"{desc}: {ta:.2f} s / {tb:.2f} s = {r:.2f} (target <= {limit:.3g}) {verdict}")

    target("run --workers 2 vs run --inline (>= 1.6x faster)", "pytxmr:run", BASE_INLINE, 1 / 1.6)
    target("run --inline vs inline.py (no slower)", BASE_INLINE, BASE_INLINE_PY, 1.0)
    for peer in ("dask", "pyspark", "mrjob"):
        target(f"run --workers 2 vs {peer} (faster)", "pytxmr:run", f"peer:{peer}", 1.0)
        target(f"submit vs {peer} (faster)", "pytxmr:submit", f"peer:{peer}", 1.0)
    target("batch run vs mp_pool.py (within 1.3x)", "pytxmr:batch-run", BASE_MP_POOL, 1.3)
    target("batch submit vs mp_pool.py (within 1.3x)", "pytxmr:batch-submit", BASE_MP_POOL, 1.3)
    if size["bytes"] < 10 * MB:  # the small job (War and Peace, 3.3 MB)
        for key, desc, limit in (("pytxmr:submit", "small job: submit to a running cluster", 0.5),
                                 ("pytxmr:run", "small job: run, daemons included", 1.5)):
            if t(key) is not None:
                verdict = ("met" if t(key) < limit
                           else f"MISSED by {100 * (t(key) / limit - 1):.0f}%")
                out.append(f"{desc}: {t(key):.2f} s (target < {limit} s) {verdict}")
    return out


def machine_info() -> dict[str, Any]:
    info = {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------

def plot(results: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"--plot: matplotlib is not installed for {PY}; no plot written "
            "(pip install matplotlib, or re-plot later with --plot-from RESULTS.json)")
        return
    series: dict[str, dict[float, float]] = {}
    jobs = sorted({res.get("job", "wordcount") for res in results})
    for res in results:
        for size in res["sizes"]:
            mb = size["meta"].get("mb") or round(size["bytes"] / MB, 3)
            for key, label in size["order"]:
                t = size["summary"][key]["median_wall_s"]
                if t is not None:
                    name = label if len(jobs) == 1 else f"{res.get('job', 'wordcount')}: {label}"
                    series.setdefault(name, {})[mb] = t
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    colors = plt.get_cmap("tab20").colors
    for i, (label, pts) in enumerate(sorted(series.items(), key=lambda kv: -max(kv[1].values()))):
        xs = sorted(pts)
        pytxmr = "pytxmr" in label
        ax.plot(xs, [pts[x] for x in xs], marker="o" if pytxmr else "s",
                linestyle="-" if pytxmr else "--", color=colors[(2 * i) % 20 + (i >= 10)],
                linewidth=2 if pytxmr else 1.3, label=label)
    all_x = sorted({x for pts in series.values() for x in pts})
    if len(all_x) > 1 and all_x[-1] / all_x[0] >= 4:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.set_xticks(all_x)
    ax.set_xticklabels([f"{x:g}" for x in all_x])
    ax.set_xlabel("input size (MB, 10^6 bytes)")
    ax.set_ylabel("median wall time (s)")
    ax.set_title(f"{' + '.join(jobs)}: median wall time vs input size "
                 f"({results[0]['machine'].get('cpus')} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", title="solid: pytxmr, dashed: peers",
              title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def run_rounds(entries: list[Entry], inputs: list[str], runs: int, out_dir: str, env: dict,
               ref: dict, loader, args, cluster_ref: list, tag: str,
               src: str) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {e.key: [] for e in entries}
    run_dir = os.path.join(out_dir, "runs", tag)
    os.makedirs(run_dir, exist_ok=True)
    for r in range(runs):
        k = r % len(entries)
        order = entries[k:] + entries[:k]
        log(f"-- round {r + 1}/{runs}: {', '.join(e.label for e in order)}")
        for e in order:
            name = e.key.replace(":", "-")
            out = os.path.join(run_dir, f"{name}-r{r + 1}" + ("" if e.key.startswith("pytxmr") else ".tsv"))
            remove(out)
            daemon_roots = []
            if e.uses_cluster:
                cluster_ref[0].check_alive()
                daemon_roots = cluster_ref[0].pids()
            cmd = e.build(inputs, out)
            if args.wait_idle > 0:
                load = wait_idle(args.wait_idle)
                if load >= 0.3:
                    log(f"   (machine still busy after waiting {args.wait_idle:g} s: "
                        f"{load:.2f} cores used by other processes)")
            res = run_measured(cmd, out + ".log", env=env, cwd=src, timeout=args.timeout,
                               daemon_roots=daemon_roots, interval=args.sample_interval)
            if res["rc"] != 0:
                res["check"] = "FAILED" + (" (timeout)" if res["timed_out"] else f" (rc {res['rc']})")
            else:
                res["check"] = check_output(out, ref, loader)
            res["round"] = r + 1
            results[e.key].append(res)
            extra = f", daemons tree {res['daemon_tree_mb']:.0f} MB" if res["daemon_tree_mb"] else ""
            log(f"   {e.label:<30} {res['wall_s']:8.2f} s  CPU {res['cpu_s']:7.2f} s  peak RSS "
                f"{res['peak_rss_mb']:6.0f} MB  tree {res['tree_mb']:6.0f} MB{extra}  "
                f"other load {res['other_load']:.2f}  {res['check'].split(':')[0]}")
            if res["check"] != "SAME":
                log(f"   !!! {e.label}: {res['check']} !!! (log: {out}.log)")
                if res["rc"] != 0:
                    with open(out + ".log", "rb") as f:
                        tail = f.read()[-1500:].decode("utf-8", "replace")
                    log("   " + tail.replace("\n", "\n   "))
            if res["stragglers"]:
                log(f"   note: {len(res['stragglers'])} process(es) of this run were still "
                    f"running after it exited (killed): {res['stragglers']}")
            if not args.keep_outputs:
                remove(out)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md for the columns and the peers setup.")
    ap.add_argument("--job", choices=["wordcount", "inverted_index"], default="wordcount")
    ap.add_argument("--mb", type=float, action="append",
                    help="corpus size in MB (10^6 bytes); repeat for several sizes")
    ap.add_argument("--corpus", help="use this file as the (only) corpus instead of generating")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each entry (default 3)")
    ap.add_argument("--systems", help=f"pytxmr entries (default {DEFAULT_SYSTEMS}; "
                    "for --job inverted_index: inline,run,submit); known: " + ", ".join(SYSTEMS))
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help=f"peers from ../shared/bench/peers (default {DEFAULT_PEERS}; "
                    "also: counter; '' for none)")
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PY if os.path.exists(DEFAULT_PEERS_PY) else None,
                    help=f"python that has dask, pyspark and mrjob (default {DEFAULT_PEERS_PY} if present)")
    ap.add_argument("--shared-bench", default=DEFAULT_SHARED,
                    help="the shared bench folder (make_corpus.py, peers/) (default ../shared/bench)")
    ap.add_argument("--out-dir", default="/tmp/pytxmr-bench", help="corpora, outputs, logs, JSON")
    ap.add_argument("--plot", help="write a PNG of median time vs input size here")
    ap.add_argument("--plot-from", nargs="+", metavar="JSON",
                    help="only plot earlier results (with --plot), run nothing")
    ap.add_argument("--split-files", type=int, default=8,
                    help="--job inverted_index: cut the corpus into this many files (default 8)")
    ap.add_argument("--cluster-slots", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="slots per tasktracker of the submit cluster (default CPU count / 2, "
                    "as `run --workers 2` uses)")
    ap.add_argument("--sample-interval", type=float, default=0.1,
                    help="seconds between /proc samples of the process trees (default 0.1)")
    ap.add_argument("--wait-idle", type=float, default=60, metavar="SECONDS",
                    help="before each run wait up to this long for the machine's other load "
                    "to fall below 0.3 cores (default 60; 0 = do not wait)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                    help="run pytxmr from the working tree itself instead of a snapshot of "
                    "pytxmr/ and examples/ taken at the start (OUT_DIR/src-HASH)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every run's output")
    args = ap.parse_args(argv)

    if args.plot_from:
        if not args.plot:
            ap.error("--plot-from needs --plot")
        results = []
        for p in args.plot_from:
            with open(p) as f:
                results.append(json.load(f))
        plot(results, args.plot)
        return 0
    if not args.mb and not args.corpus:
        ap.error("give --mb SIZE (repeatable) or --corpus FILE")
    if args.mb and args.corpus:
        ap.error("--mb and --corpus exclude each other")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup)
    try:
        return bench(args)
    finally:
        cleanup()


def sources_hash(top: str) -> str:
    """A hash of the .py files of top/pytxmr and top/examples."""
    h = hashlib.sha256()
    for sub in ("pytxmr", "examples"):
        for root, dirs, files in os.walk(os.path.join(top, sub)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    h.update(os.path.relpath(path, top).encode() + b"\0")
                    with open(path, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()[:16]


def source_state() -> dict[str, Any]:
    """The pytxmr code in the working tree: git commit, changed files, hash."""
    state: dict[str, Any] = {"sources_sha256": sources_hash(REPO)}
    try:
        state["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip()
        state["changed"] = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "pytxmr", "examples"],
            capture_output=True, text=True).stdout.split("\n")
        state["changed"] = [line.strip() for line in state["changed"] if line.strip()]
    except OSError:
        pass
    return state


def make_snapshot(out_dir: str) -> tuple[str, str]:
    """Copy pytxmr/ and examples/ (and setup.py, README.md) into
    OUT_DIR/src-HASH, so that every run of this invocation, the daemons and
    their task children import the same code even if the working tree is
    edited meanwhile. Returns (directory, hash of the copied sources)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for attempt in range(5):
        tmp = tempfile.mkdtemp(prefix="src-tmp-", dir=out_dir)
        for sub in ("pytxmr", "examples"):
            shutil.copytree(os.path.join(REPO, sub), os.path.join(tmp, sub), ignore=ignore)
        for name in ("setup.py", "README.md"):
            if os.path.exists(os.path.join(REPO, name)):
                shutil.copy2(os.path.join(REPO, name), tmp)
        sha = sources_hash(tmp)
        # a copy taken in the middle of someone's edit may not even import
        ok = subprocess.run([PY, "-c", "import pytxmr.__main__, pytxmr.jobtracker, "
                             "pytxmr.tasktracker, pytxmr.task, pytxmr.inline"],
                            cwd=tmp, env=dict(os.environ, PYTHONPATH=tmp),
                            capture_output=True, text=True)
        if ok.returncode == 0 and sha == sources_hash(REPO):
            break
        shutil.rmtree(tmp, ignore_errors=True)
        why = ok.stderr.strip().splitlines()[-1:] if ok.returncode else ["changed while copying"]
        log(f"snapshot attempt {attempt + 1}: {why[0] if why else '?'}; retrying in 5 s")
        time.sleep(5)
    else:
        raise SystemExit("could not take a consistent, importable snapshot of pytxmr/")
    dst = os.path.join(out_dir, f"src-{sha}")
    if os.path.exists(dst):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst, sha


def size_label(meta: dict) -> str:
    return f"{meta['mb']:g} MB" if "mb" in meta else f"{meta['bytes'] / MB:.3g} MB"


def bench(args) -> int:
    started = datetime.datetime.now().astimezone()
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    shared = os.path.abspath(args.shared_bench)
    index_mode = args.job == "inverted_index"
    command = "python bench/wordcount.py " + shlex.join(sys.argv[1:])
    machine = machine_info()
    log(f"# pytxmr {args.job} benchmark, {started:%Y-%m-%d %H:%M %Z}")
    log(f"$ {command}")
    log(f"machine: {machine}")
    source = source_state()
    log(f"pytxmr: commit {source.get('commit', '?')}, sources {source['sources_sha256']}"
        + (f", uncommitted changes in {', '.join(source['changed'])}" if source.get("changed") else ""))

    # pytxmr commands: this repo's pytxmr (a snapshot of it unless
    # --no-snapshot), HOME in a temporary directory; every command runs in
    # the source root (`python -m` puts the working directory first on sys.path)
    if args.snapshot:
        src, sha = make_snapshot(out_dir)
        source["snapshot"] = src
        source["sources_sha256"] = sha
        log(f"measuring a snapshot of pytxmr/ and examples/: {src}")
    else:
        src = REPO
    home = tempfile.mkdtemp(prefix="pytxmr-bench-home-")
    _TEMP_DIRS.append(home)
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HOME"] = home

    # what runs
    names = [s for s in (args.systems or ("inline,run,submit" if index_mode else DEFAULT_SYSTEMS)).split(",") if s]
    cluster_ref: list[Cluster] = []
    entries, notes = [], []
    for name in names:
        if name not in SYSTEMS:
            notes.append(f"unknown system {name!r} skipped (known: {', '.join(SYSTEMS)})")
            continue
        label, job, kind = SYSTEMS[name]
        if index_mode:
            if name.startswith("batch"):
                notes.append(f"system {name} skipped in --job inverted_index")
                continue
            job = "inverted_index.py"
        entries.append(pytxmr_entry(f"pytxmr:{name}", label, job, kind, cluster_ref, src))
    if not index_mode:
        peers = [p for p in (args.peers or "").split(",") if p]
        pe, pn = peer_entries(peers, shared, args.peers_python)
        entries += pe
        notes += pn
    for n in notes:
        log(f"note: {n}")
    if not entries:
        log("nothing to run")
        return 2
    log("entries: " + ", ".join(e.label for e in entries))

    corpora = []
    if args.corpus:
        c = os.path.abspath(args.corpus)
        corpora.append((c, {"generator": "given file", "bytes": os.path.getsize(c)}))
    else:
        for mb in args.mb:
            corpora.append(ensure_corpus(mb, out_dir, shared))

    if any(e.uses_cluster for e in entries):
        cluster = Cluster(env, out_dir, workers=2, slots=args.cluster_slots)
        cluster.start()
        cluster_ref.append(cluster)

    sizes = []
    mismatches = 0
    for corpus, meta in corpora:
        nbytes = meta["bytes"]
        log("")
        label = size_label(meta)
        log(f"## {label}: {corpus} ({meta['generator']})")
        if index_mode:
            inputs = split_corpus(corpus, args.split_files)
            log(f"split into {len(inputs)} files in {os.path.dirname(inputs[0])}")
        else:
            inputs = [corpus]
        log(f"warm-up read: {warm_up(inputs):.2f} s")
        t0 = time.perf_counter()
        if index_mode:
            ref, ref_desc = index_reference(inputs), "in-script index (word -> sorted file names)"
            loader = load_index
        else:
            ref, ref_desc = wordcount_reference(corpus, shared, env)
            loader = load_counts
        log(f"reference: {ref_desc}, {len(ref):,} keys ({time.perf_counter() - t0:.1f} s)")
        tag = f"{args.job}-{label.replace(' ', '')}"
        results = run_rounds(entries, inputs, args.runs, out_dir, env, ref, loader, args,
                             cluster_ref, tag, src)
        del ref
        size = {"label": label, "corpus": corpus, "bytes": nbytes, "meta": meta, "inputs": inputs,
                "reference": ref_desc, "order": [(e.key, e.label) for e in entries],
                "runs": results, "summary": {k: summarize(v) for k, v in results.items()}}
        for k, v in results.items():
            mismatches += sum(1 for r in v if r["check"] != "SAME")
        log("")
        log(f"### {args.job}, {label} ({nbytes:,} bytes), {args.runs} run(s) each, medians")
        if index_mode:
            size["table"] = index_table(size)
        else:
            size["table"] = wordcount_table(size)
            size["targets"] = wordcount_targets(size)
            if size["targets"]:
                log("")
                for line in size["targets"]:
                    log(f"target: {line}")
        sizes.append(size)

    if index_mode and len(sizes) > 1:
        log("")
        log("### time per MB across sizes (linear = constant s/MB)")
        for key, label in sizes[0]["order"]:
            parts = []
            for s in sizes:
                t = s["summary"][key]["median_wall_s"]
                parts.append(f"{s['label']}: {fmt(t / (s['bytes'] / MB) if t else None, '.4f')} s/MB")
            log(f"{label}: " + ", ".join(parts))

    finished = datetime.datetime.now().astimezone()
    source_after = source_state()
    if source_after["sources_sha256"] != source["sources_sha256"]:
        if args.snapshot:
            msg = ("note: the working tree's pytxmr/ or examples/ changed while the benchmark ran "
                   f"({source['sources_sha256']} -> {source_after['sources_sha256']}); every run "
                   f"measured the snapshot {source['sources_sha256']}")
        else:
            msg = ("!!! the pytxmr sources (pytxmr/, examples/) CHANGED while the benchmark ran: "
                   f"{source['sources_sha256']} -> {source_after['sources_sha256']}; the runs did "
                   "not all measure the same code (use the default snapshot) !!!")
        log(msg)
        notes.append(msg)
    result = {"job": args.job, "command": command, "started": started.isoformat(),
              "finished": finished.isoformat(), "machine": machine, "notes": notes,
              "source": source, "source_after": source_after,
              "runs_per_entry": args.runs, "cluster_slots": args.cluster_slots,
              "sample_interval_s": args.sample_interval, "wait_idle_s": args.wait_idle,
              "sizes": sizes}
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(out_dir, f"results-{args.job}-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    shutil.copyfile(json_path, os.path.join(out_dir, f"results-{args.job}.json"))
    log("")
    log(f"results: {json_path}")
    if args.plot:
        plot([result], args.plot)
    if mismatches:
        log(f"!!! {mismatches} run(s) FAILED or gave output DIFFERENT from the reference !!!")
        return 1
    log("every output matched the reference")
    return 0


def index_table(size: dict) -> str:
    rows = []
    for key, label in size["order"]:
        runs = [r for r in size["runs"][key] if r["rc"] == 0]
        s = size["summary"][key]
        t = s["median_wall_s"]
        roles: dict[str, float] = {}
        counts: dict[str, set] = {}
        for r in runs:
            for p in r["processes"]:
                if p["role"] == "other":
                    continue
                roles[p["role"]] = max(roles.get(p["role"], 0), p["peak_mb"])
                counts.setdefault(p["role"], set()).add((r["round"], p["pid"]))
        # the wait4 figure covers the command and the task children it reaped
        top = max([r["peak_rss_mb"] for r in runs], default=None)
        per_role = ", ".join(f"{role} {mb:.0f} ({len(counts[role]) // max(1, len(runs))}x)"
                             for role, mb in sorted(roles.items(), key=lambda kv: -kv[1]))
        under = "-" if top is None else ("yes" if top < 300 else "NO")
        check = s["check"] if s["check"] == "SAME" else f"!!! {s['check']} !!!"
        rows.append([label, fmt(t), fmt(s["min_wall_s"]), fmt(size["bytes"] / MB / t if t else None, ".1f"),
                     fmt(top, ".0f"), fmt(s["tree_mb"], ".0f"), fmt(s["daemon_tree_mb"], ".0f"),
                     under, per_role, check])
    text = print_table(["system", "median s", "min s", "MB/s", "largest process MB", "tree MB",
                        "daemons MB", "all < 300 MB",
                        "peak MB per pytxmr process role (processes per run)", "output"],
                       rows, right={1, 2, 3, 4, 5, 6})
    return text + "\n" + per_run_lines(size)


if __name__ == "__main__":
    sys.exit(main())
