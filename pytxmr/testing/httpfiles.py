"""An HTTP file server for tests of HTTP inputs: Twisted's own static
``File`` resource on a loopback port, as a real process, in one of the
ways real servers behave:

- ``normal``: byte ranges served (206), as by nginx or S3's website mode;
- ``norange``: ``Range`` ignored, the whole file every time (200);
- ``fail``: 500 for every request;
- ``truncate``: a GET's body stops halfway and the connection closes.

``python -m pytxmr.testing.httpfiles DIR --mode MODE --port-file F``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("normal", "norange", "fail", "truncate")


def _resource(root: str, mode: str) -> Any:
    from twisted.internet import reactor
    from twisted.web import static

    class Files(static.File):
        def render_GET(self, request: Any) -> Any:
            if mode == "norange":
                request.requestHeaders.removeHeader(b"range")
            elif mode == "fail":
                request.setResponseCode(500)
                return b"internal error\n"
            elif mode == "truncate" and request.method == b"GET" and not self.isdir():
                size = self.getsize()
                request.setHeader(b"content-length", str(size).encode())
                with open(self.path, "rb") as f:
                    request.write(f.read(size // 2))
                # Let the half go out, then drop the connection.
                reactor.callLater(0.2, request.transport.abortConnection)
                return static.server.NOT_DONE_YET
            return super().render_GET(request)

    return Files(root)


def serve(root: str, mode: str, port_file: str) -> None:
    from twisted.internet import endpoints, reactor
    from twisted.web import server

    site = server.Site(_resource(root, mode))

    def listening(port: Any) -> None:
        Path(port_file).write_text(json.dumps({"port": port.getHost().port}))

    endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site).addCallback(
        listening)
    reactor.run()  # type: ignore[attr-defined]


class HTTPFiles:
    """The server as a child process, for a test: ``url(name)``, ``stop()``."""

    def __init__(self, root: Path, mode: str = "normal") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.root = Path(root)
        self.mode = mode
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> HTTPFiles:
        port_file = self.root.parent / f".httpfiles-{self.mode}-{os.getpid()}.json"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytxmr.testing.httpfiles", str(self.root),
             "--mode", self.mode, "--port-file", str(port_file)],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text():
                self.port = json.loads(port_file.read_text())["port"]
                port_file.unlink()
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the HTTP file server ({self.mode}) did not start")

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> HTTPFiles:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root")
    p.add_argument("--mode", choices=MODES, default="normal")
    p.add_argument("--port-file", required=True)
    a = p.parse_args(argv)
    serve(a.root, a.mode, a.port_file)


if __name__ == "__main__":
    main()
