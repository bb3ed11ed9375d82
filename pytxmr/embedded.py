"""``python -m pytxmr run``: a whole cluster on loopback for one job.

It starts the very jobtracker and tasktracker services the daemons run
(in this process, with an ephemeral secret and temporary work directories;
their tasks still run in child processes), submits through the same client
API as ``submit``, and tears everything down, also on error.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from typing import Any

from . import client, jobtracker, tasktracker


async def run_embedded(reactor: Any, spec: dict[str, Any], *, workers: int, slots: int,
                       progress: client.ProgressCallback | None = None) -> dict[str, Any]:
    """Run the job ``spec`` (see ``client.submission``) on a local cluster."""
    secret = secrets.token_hex(32).encode()
    tmp = tempfile.mkdtemp(prefix="pytxmr-run-")
    jt = jobtracker.JobTrackerService(reactor, jobtracker.Config(
        listen="tcp:0:interface=127.0.0.1", workdir=os.path.join(tmp, "jobtracker"),
        secret_file=None, ready_file=None), secret)
    tts: list[tasktracker.TaskTrackerService] = []
    try:
        jt.startService()
        port = await jt.listening()
        for i in range(workers):
            tt = tasktracker.TaskTrackerService(reactor, tasktracker.Config(
                jobtracker=f"tcp:host=127.0.0.1:port={port}", slots=slots,
                shuffle_listen="tcp:0:interface=127.0.0.1:backlog=1024", advertise_host="127.0.0.1",
                workdir=os.path.join(tmp, f"tasktracker-{i}"), secret_file=None,
                ready_file=None), secret)
            tts.append(tt)
            await tt.start()
        for tt in tts:
            await tt.registered()
        return await client.submit(reactor, f"127.0.0.1:{port}", secret, spec, progress)
    finally:
        for tt in tts:
            await tt.stopService()
        await jt.stopService()
        shutil.rmtree(tmp, ignore_errors=True)
