"""An HTTP file server for tests of HTTP inputs: Twisted's own static
``File`` resource on a loopback port, as a real process, behaving in one
of the ways real servers do:

- ``normal``: ``Accept-Ranges: bytes``, byte ranges answered with 206
  (as nginx, S3 or any CDN);
- ``norange``: ``Range`` ignored, the whole file with 200 every time, no
  ``Accept-Ranges`` (as many dynamic servers and some proxies);
- ``fail``: 500 for every request, HEAD included;
- ``truncate``: HEAD and headers as ``normal``, but every GET of a file
  sends its ``Content-Length`` and then only the first half of that body
  before the server closes the connection (a dropped transfer);
- ``nolength``: ranges as ``normal``, but a whole file (GET or HEAD) comes
  without ``Content-Length``, chunked (as a server that generates it);
- ``dropclose``: no ranges; HEAD as ``normal``, but a GET is answered in
  HTTP/1.0 without ``Content-Length`` (the body ends when the connection
  does) and the connection closes after half the file;
- ``gzip``: no ranges; a file (a ``.xz`` too) gzipped as it is sent to a
  client that accepts it, with ``Content-Encoding: gzip`` (as nginx with
  ``gzip_types`` set wide).

Run ``python -m pytxmr.testing.httpfiles DIR [--port 0] [--mode MODE]
[--port-file F]``: it prints the port it listens on, on a line of its
own, and also writes it to ``F`` (atomically) if given. ``HTTPFiles``
runs it for a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from pytxmr.testing.processes import dying_with

MODES = ("normal", "norange", "fail", "truncate", "nolength", "dropclose", "gzip")
START_TIMEOUT = 30.0


def _resource(root: str, mode: str) -> Any:
    from twisted.web import resource, static

    if mode == "fail":
        class Failing(resource.Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain")
                return b"internal server error (pytxmr.testing.httpfiles --mode fail)\n"

        return Failing()
    if mode == "gzip":
        return _Gzipping(root)

    class Files(static.File):
        def render_GET(self, request: Any) -> Any:
            dropped: set[bytes] = set()
            if mode in ("norange", "dropclose"):
                # As a server that knows nothing of ranges: the header is
                # never read, and never advertised.
                request.requestHeaders.removeHeader(b"range")
                request.requestHeaders.removeHeader(b"if-range")
                dropped.add(b"accept-ranges")
            if mode == "dropclose" and request.method == b"GET":
                request.clientproto = b"HTTP/1.0"  # a body delimited by the close
                dropped.add(b"content-length")
            if mode == "nolength" and not request.getHeader(b"range"):
                dropped.add(b"content-length")
            if dropped:
                set_header = request.setHeader

                def setHeader(name: bytes, value: bytes) -> None:
                    if name.lower() not in dropped:
                        set_header(name, value)

                request.setHeader = setHeader
            return super().render_GET(request)

        # static.File binds render_HEAD to its own render_GET.
        render_HEAD = render_GET

        def makeProducer(self, request: Any, fileForReading: Any) -> Any:
            producer = super().makeProducer(request, fileForReading)
            if mode in ("truncate", "dropclose"):
                _truncate_body(request, self.getFileSize())
            return producer

    return Files(root)


def _Gzipping(root: str) -> Any:
    import gzip

    from twisted.web import resource

    class Gzipping(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            name = request.path.decode().lstrip("/")
            path = os.path.join(root, name)
            if "/" in name or name.startswith(".") or not os.path.isfile(path):
                request.setResponseCode(404)
                return b"no such file\n"
            with open(path, "rb") as f:
                data = f.read()
            if b"gzip" in (request.getHeader(b"accept-encoding") or b""):
                request.setHeader(b"content-encoding", b"gzip")
                data = gzip.compress(data)
            request.setHeader(b"content-type", b"application/octet-stream")
            return data

        render_HEAD = render_GET

    return Gzipping()


def _truncate_body(request: Any, length: int) -> None:
    """Let through only the first half of the ``length`` bytes of the body,
    then close the connection (after what was let through is sent:
    loseConnection, not abort)."""
    budget = length // 2
    write = request.write
    closed = False

    def cut(data: bytes) -> None:
        nonlocal budget, closed
        if closed:
            return
        part = data[:budget]
        budget -= len(part)
        write(part)  # even b"": the headers go out with the first write
        if budget <= 0:
            closed = True
            # The channel's, not its transport's: the channel is a producer
            # of that transport for the connection's life, so the
            # transport's waited for it (Twisted's 60 s idle timeout).
            request.channel.loseConnection()

    request.write = cut


def serve(root: str, mode: str, port: int = 0, port_file: str | None = None) -> None:
    from twisted.internet import reactor
    from twisted.web import server

    site = server.Site(_resource(root, mode))
    listening = reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    actual = listening.getHost().port
    if port_file:
        tmp = f"{port_file}.tmp"
        Path(tmp).write_text(f"{actual}\n")
        os.replace(tmp, port_file)
    print(actual, flush=True)
    reactor.run()  # type: ignore[attr-defined]


class HTTPFiles:
    """The server as a child process (its own process group, killed with
    it; it also dies if this process does): ``start()`` returns once it
    listens; ``url(name)``; ``stop()``. A context manager too."""

    def __init__(self, root: Path | str, mode: str = "normal") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> HTTPFiles:
        if self.proc is not None:
            raise RuntimeError("already started")
        with tempfile.TemporaryDirectory(prefix="pytxmr-httpfiles-") as tmp:
            port_file = Path(tmp) / "port"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytxmr.testing.httpfiles", str(self.root),
                 "--mode", self.mode, "--port-file", str(port_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=dying_with(os.getpid()))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if port_file.exists():
                    self.port = int(port_file.read_text())
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(f"the HTTP file server ({self.mode}, {self.root}) did not start"
                           + (f": exit status {code} (see stderr)" if code is not None
                              else f" in {timeout:g} s"))

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def __enter__(self) -> HTTPFiles:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("root", help="the directory served")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--mode", choices=MODES, default="normal")
    p.add_argument("--port-file", help="also write the port here once listening")
    a = p.parse_args(argv)
    serve(a.root, a.mode, a.port, a.port_file)


if __name__ == "__main__":
    main()
