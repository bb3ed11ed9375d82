"""Deployment: the systemd units in deploy/systemd are valid (checked by
``systemd-analyze verify`` where it exists), and the daemons tell a
service manager that asks ($NOTIFY_SOCKET, as ``Type=notify`` sets it)
that they are ready."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT, Cluster

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_the_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    # As installed: the venv's python in place of /opt/pytxmr/venv's.
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/pytxmr/venv/bin/python", sys.executable))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_the_daemons_tell_systemd_they_are_ready(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)

        class Notified(Cluster):
            @property
            def env(self) -> dict[str, str]:
                return {**super().env, "NOTIFY_SOCKET": path}

        c = Notified(tmp_path)
        try:
            jt = c.start_jobtracker()
            message = sock.recv(4096).decode()
            assert "READY=1" in message and f"MAINPID={jt.pid}" in message
            assert f"STATUS=listening on port {jt.ready['port']}" in message
            tt = c.start_tasktracker(1)
            message = sock.recv(4096).decode()
            assert "READY=1" in message and f"MAINPID={tt.pid}" in message
            assert "STATUS=registered as w1" in message
        finally:
            c.stop_all()
