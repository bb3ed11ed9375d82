"""What a result is measured on and where it is kept: the machine, the state
of a pytxmr source tree (commit, uncommitted files, a hash of its sources),
the snapshot of it that the runs use, and the JSON of an invocation."""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import log


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"node": platform.node(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "kernel": platform.release()}
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


def source_state(top: str) -> dict[str, Any]:
    """The pytxmr code in the source tree `top`: git commit, changed files, hash."""
    state: dict[str, Any] = {"tree": top, "sources_sha256": sources_hash(top)}
    try:
        state["commit"] = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", top, "status", "--porcelain", "--", "pytxmr", "examples"],
            capture_output=True, text=True).stdout.split("\n")
        state["changed"] = [line.strip() for line in changed if line.strip()]
    except OSError:
        pass
    return state


def describe(state: dict[str, Any]) -> str:
    return (f"commit {state.get('commit', '?')}, sources {state['sources_sha256']}"
            + (f", uncommitted changes in {', '.join(state['changed'])}"
               if state.get("changed") else ""))


def make_snapshot(top: str, out_dir: str) -> tuple[str, str]:
    """Copy pytxmr/ and examples/ (and setup.py, README.md) of the source
    tree `top` into OUT_DIR/src-HASH, so that every run of this invocation,
    the daemons and their task children import the same code even if the
    tree is edited meanwhile. Returns (directory, hash of the copied sources)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for attempt in range(5):
        tmp = tempfile.mkdtemp(prefix="src-tmp-", dir=out_dir)
        for sub in ("pytxmr", "examples"):
            shutil.copytree(os.path.join(top, sub), os.path.join(tmp, sub), ignore=ignore)
        for name in ("setup.py", "README.md"):
            if os.path.exists(os.path.join(top, name)):
                shutil.copy2(os.path.join(top, name), tmp)
        sha = sources_hash(tmp)
        # Bytecode, as `pip install` writes it: without it (PYTHONDONTWRITEBYTECODE
        # set, as on this machine) every run compiled some 40 modules from
        # source, 0.1-0.15 s of each command, in the daemons and tasks too.
        compileall.compile_dir(tmp, quiet=1)
        # a copy taken in the middle of someone's edit may not even import
        ok = subprocess.run([sys.executable, "-c", ("import pytxmr.__main__, pytxmr.jobtracker, "
                                                    "pytxmr.tasktracker, pytxmr.task, pytxmr.inline")],
                            cwd=tmp, env=dict(os.environ, PYTHONPATH=tmp),
                            capture_output=True, text=True)
        if ok.returncode == 0 and sha == sources_hash(top):
            break
        shutil.rmtree(tmp, ignore_errors=True)
        why = ok.stderr.strip().splitlines()[-1:] if ok.returncode else ["changed while copying"]
        log(f"snapshot attempt {attempt + 1}: {why[0] if why else '?'}; retrying in 5 s")
        time.sleep(5)
    else:
        raise SystemExit(f"could not take a consistent, importable snapshot of {top}/pytxmr/")
    dst = os.path.join(out_dir, f"src-{sha}")
    if os.path.exists(dst):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst, sha


def write_results(result: dict[str, Any], out_dir: str, stamp: str) -> str:
    """OUT_DIR/results-JOB-STAMP.json, and a copy as OUT_DIR/results-JOB.json
    (the latest); returns the first one's path."""
    json_path = os.path.join(out_dir, f"results-{result['job']}-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    shutil.copyfile(json_path, os.path.join(out_dir, f"results-{result['job']}.json"))
    return json_path


def read_results(paths: list[str]) -> list[dict[str, Any]]:
    results = []
    for p in paths:
        with open(p) as f:
            results.append(json.load(f))
    return results
