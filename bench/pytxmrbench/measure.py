"""Run one command and measure it: wall time, CPU, the peak RSS of every
process of its tree (and of the daemons it talks to), the peak disk of its
work directories, the machine's other load; and never leave a process of it
running."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from pytxmr.testing.processes import process_table, process_trees

from . import MB
from .disk import DiskSampler

_LIVE: dict[int, str] = {}  # process-group leaders we started and have not reaped
_TICK = os.sysconf("SC_CLK_TCK")


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_live() -> None:
    """atexit and signal path: end every run still going (SIGTERM, then SIGKILL)."""
    for pgid in list(_LIVE):
        _kill_group(pgid, signal.SIGTERM)
    if _LIVE:
        time.sleep(0.5)
    for pgid in list(_LIVE):
        _kill_group(pgid, signal.SIGKILL)
        _LIVE.pop(pgid, None)


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


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _TICK


def _tree_cpu(roots: list[int]) -> dict[int, int]:
    """pid -> utime + stime + cutime + cstime (ticks: its own CPU and that of
    the children it reaped) of every process in the trees of `roots`."""
    if not roots:
        return {}
    table = process_table()
    return {pid: table[pid].ticks + table[pid].reaped_ticks
            for pid in process_trees(roots, table)}


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
        table = process_table()
        run_pids = process_trees(self.roots, table)
        daemon_pids = process_trees(self.daemon_roots, table)
        for pid in run_pids | daemon_pids | (self.cpu_last.keys() & table.keys()):
            if pid not in self.cpu_first:
                self.cpu_first[pid] = table[pid].ticks if self.ticks == 0 else 0
            self.cpu_last[pid] = table[pid].ticks
        self.ticks += 1
        total = dtotal = 0
        for pid in run_pids | daemon_pids:
            if pid in self.roots:  # the launcher (GNU time): not part of the run
                continue
            rss, hwm = _status_kb(pid)
            if pid not in self.cmd:
                self.cmd[pid] = _cmdline(pid)
                self.ppid[pid] = table[pid].ppid
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
    return [sys.executable, "-S", "-c", _LAUNCHER, rusage_file, *cmd]


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


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, stat in process_table().items() if stat.pgrp == pgid]


def run_measured(cmd: list[str], log_path: str, *, env: dict[str, str] | None = None,
                 cwd: str | None = None, timeout: float = 3600,
                 daemon_roots: list[int] | None = None, interval: float = 0.1,
                 disk_roots: list[str] | None = None, disk_interval: float = 0.5
                 ) -> dict[str, Any]:
    """Run `cmd` in its own process group; wall time, exit status, peak RSS,
    and the peak bytes on disk under `disk_roots` (see disk.DiskSampler).

    The largest process's peak RSS is the larger of what the launcher reports
    (GNU time's %M: the maximum over the command and every descendant it
    waited for) and the VmHWM of every process polled in /proc during the run
    (this also covers the daemons of `daemon_roots`, whose VmHWM is reset at
    the start of the run, and their task children)."""
    daemon_roots = daemon_roots or []
    daemon_pids = sorted(process_trees(daemon_roots, process_table())) if daemon_roots else []
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
        sampler = Sampler([p.pid], daemon_roots, interval)
        sampler.start()
        disk = DiskSampler(disk_roots or [], disk_interval)
        if disk_roots:
            disk.start()
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
            if disk_roots:
                disk.finish()
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
        "peak_disk_mb": disk.peak_disk / MB if disk_roots else None,
        "peak_shm_mb": disk.peak_shm / MB if disk_roots else None,
        "peak_disk_shm_mb": disk.peak_both / MB if disk_roots else None,
        "disk_samples": disk.samples,
        "processes": procs, "stragglers": left,
    }
