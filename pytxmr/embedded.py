"""``python -m pytxmr run``: a whole cluster on loopback for one job.

It starts the very jobtracker and tasktracker services the daemons run
(in this process, with an ephemeral secret and temporary work directories;
their tasks still run in child processes, forked by one zygote they
share), submits through the same client API as ``submit``, and tears
everything down, also on error. Its workers share one file system: a
reduce links the other worker's map outputs as it links its own, where
separate daemons would send them through the shuffle server. The zygote
is the caller's: ``run`` starts it before it imports this module and the
daemons' code, so that its own start (a Python process importing the task
code, 0.07 s) does not delay the job's first task.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
import tempfile
from typing import Any

from . import client, jobtracker, tasktracker
from .child import Zygote
from .kvstore import KeyValueStore, delete_paths
from .services import DaemonReactor


def _store_of(workers: list[tasktracker.TaskTracker], wid: str) -> KeyValueStore | None:
    """The store of the worker ``wid`` now is (a worker lost and registered
    again has a new id)."""
    return next((w.store for w in workers if w.wid == wid), None)


def _remove(tmp: str) -> None:
    """Remove the run's directory; say what a task left there that cannot
    go (a file it made immutable), rather than leave it unsaid."""
    try:
        delete_paths([tmp])
    except OSError as e:
        print(f"pytxmr: {e}", file=sys.stderr)


async def run_embedded(reactor: DaemonReactor, job: client.JobSubmission, *, zygote: Zygote,
                       workers: int,
                       slots: int, progress: client.ProgressCallback | None = None
                       ) -> dict[str, Any]:
    """Run ``job`` (see ``client.submission``) on a local cluster
    whose daemons fork their tasks and checks from ``zygote``, a started
    one (the caller stops it, after this returns)."""
    secret = secrets.token_hex(32).encode()
    async with contextlib.AsyncExitStack() as stack:
        tmp = tempfile.mkdtemp(prefix="pytxmr-run-")
        stack.callback(_remove, tmp)
        jt = jobtracker.make_service(jobtracker.Config(
            listen="tcp:0:interface=127.0.0.1", workdir=os.path.join(tmp, "jobtracker")),
            reactor, secret=secret, checkers=zygote)
        stack.push_async_callback(jt.stopService)
        # Once every tasktracker stopped (their callbacks come first), before
        # the jobtracker stops: nothing of theirs commits any more.
        stack.callback(jt.jt.workers_stopped)
        await jt.startService()
        tts = []
        for i in range(workers):
            tt = tasktracker.make_service(tasktracker.Config(
                jobtracker=f"tcp:host=127.0.0.1:port={jt.port}", slots=slots,
                shuffle_listen="tcp:0:interface=127.0.0.1:backlog=1024",
                advertise_host="127.0.0.1", workdir=os.path.join(tmp, f"tasktracker-{i}")),
                reactor, secret=secret, zygote=zygote)
            stack.push_async_callback(tt.stopService)
            await tt.startService()
            tts.append(tt)
        for tt in tts:
            await tt.registered()
        # One process, one file system: a reduce links a neighbour's map
        # outputs as it does its own worker's, instead of sending them
        # through TCP and back in this one process (0.12 s of a 200 MB
        # sort's critical path, with both cores idle).
        workers_here = [tt.tt for tt in tts]
        for tt in workers_here:
            tt.neighbour_store = functools.partial(_store_of, workers_here)
        return await client.submit(reactor, f"127.0.0.1:{jt.port}", secret, job, progress)
