"""The shuffle transport: a tasktracker's TCP server for map outputs, and its client.

Reduce tasks fetch partition p of each finished map from the tasktracker that
ran it. The server streams segments from the KeyValueStore's files with a push
producer (bytes are never decoded, memory stays bounded); requests are
authenticated per job with an HMAC over a per-connection nonce.
Wire format: docs/shuffle-protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IAddress, IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pytxmr.kvstore import KeyValueStore, valid_job_id
from pytxmr.tls import tls_refusal
from pytxmr.wire import no_delay

if TYPE_CHECKING:
    from pytxmr.tls import ClusterTLS

__all__ = [
    "MAGIC",
    "MAX_REQUEST",
    "NONCE_SIZE",
    "NOT_AUTHORIZED",
    "Destination",
    "SegmentProducer",
    "ShuffleClientProtocol",
    "ShuffleError",
    "ShuffleServerFactory",
    "ShuffleServerProtocol",
    "ShufflePool",
    "fetch",
    "request_mac",
]

MAGIC = b"TXS1"
NONCE_SIZE = 16
GREETING_SIZE = len(MAGIC) + NONCE_SIZE
#: Largest request frame payload the server accepts.
MAX_REQUEST = 4096
#: Largest reply header the client accepts (replies are tiny JSON objects).
MAX_REPLY_HEADER = 64 * 1024
#: The one error text for an unknown job and a bad mac, so job ids cannot be probed.
NOT_AUTHORIZED = "not authorized"

_LENGTH = struct.Struct(">I")
_MAX_ERROR_TEXT = 512

#: Where a fetch writes the body: a binary file, or a callable given the
#: segment's length (known from the reply header) that returns one.
Destination = BinaryIO | Callable[[int], BinaryIO]


class ShuffleError(Exception):
    """A fetch failed because of the remote side or the network (not local disk)."""


def request_mac(token: bytes, nonce: bytes, job_id: str, map_id: int, partition: int) -> str:
    """The hex HMAC-SHA256 that authenticates one request on one connection."""
    message = nonce + f"{job_id}\n{map_id}\n{partition}".encode()
    return hmac.new(token, message, hashlib.sha256).hexdigest()


def _frame(obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    return _LENGTH.pack(len(payload)) + payload


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _peer_text(address: IAddress | None) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class _RequestError(Exception):
    """A request the server refuses: the reply's error text, and what to log if more."""

    def __init__(self, reply: str, detail: str | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.detail = detail


# ---------------------------------------------------------------- server side


@implementer(IPushProducer)
class SegmentProducer:
    """Streams length bytes of a file from offset to a consumer, chunk by chunk.

    Writes only while not paused, so a slow reader holds at most about one
    chunk plus the transport's buffer in memory, never a whole segment.
    Calls on_done(None) after the last byte (having unregistered itself), or
    on_done(reason) if the file ends early or cannot be read.
    """

    def __init__(
        self,
        consumer: IConsumer,
        file: BinaryIO,
        offset: int,
        length: int,
        chunk_size: int,
        on_done: Callable[[str | None], None],
    ) -> None:
        self._consumer = consumer
        self._file = file
        self._offset = offset
        self._remaining = length
        self._chunk_size = chunk_size
        self._on_done = on_done
        self._paused = False
        self._producing = False
        self._finished = False
        #: Bytes written so far; the server's stall detection watches it.
        self.sent = 0

    def start(self) -> None:
        """Register with the consumer and write until paused or done."""
        self._file.seek(self._offset)
        self._consumer.registerProducer(self, True)
        # A consumer that is already disconnected calls stopProducing at once.
        if not self._finished:
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        # consumer.write may call back into pause/resume; only one loop runs.
        if self._producing or self._finished:
            return
        self._producing = True
        try:
            while not self._paused and not self._finished and self._remaining > 0:
                try:
                    chunk = self._file.read(min(self._chunk_size, self._remaining))
                except OSError as e:
                    self._finish(f"read error: {e}")
                    return
                if not chunk:
                    self._finish(f"file ended {self._remaining} bytes early")
                    return
                self._remaining -= len(chunk)
                self.sent += len(chunk)
                self._consumer.write(chunk)
            if self._remaining == 0 and not self._finished:
                self._finish(None)
        finally:
            self._producing = False

    def stopProducing(self) -> None:
        """The connection went away: release the file, write nothing more."""
        if not self._finished:
            self._finished = True
            self._file.close()

    def _finish(self, error: str | None) -> None:
        self._finished = True
        self._file.close()
        self._consumer.unregisterProducer()
        self._on_done(error)


_IDLE, _STREAMING, _CLOSING = "idle", "streaming", "closing"


class ShuffleServerProtocol(protocol.Protocol):
    """One shuffle connection: greeting, then request/reply pairs until close."""

    log = Logger()

    def __init__(self, factory: ShuffleServerFactory) -> None:
        self._factory = factory
        self._buffer = bytearray()
        self._state = _IDLE
        self._nonce = b""
        self._producer: SegmentProducer | None = None
        self._timer: IDelayedCall | None = None
        self._sent_at_check = 0
        self._processing = False
        self._idle_since = 0.0

    @property
    def idle_since(self) -> float | None:
        """When the connection started waiting for a request; None while a
        reply streams or once it closes. When the server is full, the
        longest idle connection makes room for a new one."""
        return self._idle_since if self._state is _IDLE else None

    def evict(self) -> None:
        """Close this idle connection to make room for a new one."""
        self._state = _CLOSING
        self._buffer.clear()
        self._cancel_timer()
        self.transport.abortConnection()

    # -- Twisted callbacks

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self._factory._connections.add(self)
        self._nonce = os.urandom(NONCE_SIZE)
        self.transport.write(MAGIC + self._nonce)
        self._start_timer()

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSING:
            return
        self._buffer += data
        if self._state is _IDLE:
            self._process_requests()
        elif len(self._buffer) > _LENGTH.size + MAX_REQUEST:
            # A client may send its next request early, but not a flood.
            self._abort("sent too much data during a reply")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._state = _CLOSING
        self._cancel_timer()
        if self._producer is not None:
            self._producer.stopProducing()
            self._producer = None
        self._factory._connection_lost(self)

    # -- requests

    def _process_requests(self) -> None:
        # A small segment can finish inside _serve; its _segment_done must not
        # recurse into here once per pipelined request.
        if self._processing:
            return
        self._processing = True
        try:
            self._process_frames()
        finally:
            self._processing = False

    def _process_frames(self) -> None:
        while self._state is _IDLE and len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_REQUEST:
                self._refuse("request too long")
                return
            if len(self._buffer) < _LENGTH.size + size:
                return
            payload = bytes(self._buffer[_LENGTH.size : _LENGTH.size + size])
            del self._buffer[: _LENGTH.size + size]
            try:
                self._serve(payload)
            except _RequestError as e:
                self._refuse(e.reply, e.detail)

    def _serve(self, payload: bytes) -> None:
        job_id, map_id, partition, mac = self._parse(payload)
        self._authorize(job_id, map_id, partition, mac)
        store = self._factory.store
        try:
            path, offset, length = store.lookup(job_id, map_id, partition)
        except KeyError as e:
            raise _RequestError(e.args[0] if e.args else "unknown map output") from None
        if length == 0:
            self.transport.write(_frame({"ok": True, "length": 0}))
            self._start_timer()
            return
        try:
            file = self._factory.open_segment(path)
        except OSError as e:
            raise _RequestError("map output unavailable", f"cannot open {path}: {e}") from None
        try:
            size = os.fstat(file.fileno()).st_size
        except (OSError, ValueError):
            size = None  # not a real file (tests): rely on the short-read check
        if size is not None and offset + length > size:
            file.close()
            raise _RequestError("map output unavailable", f"{path} is truncated")
        self.transport.write(_frame({"ok": True, "length": length}))
        self._state = _STREAMING
        self._producer = SegmentProducer(
            self.transport, file, offset, length, self._factory.chunk_size, self._segment_done
        )
        self._sent_at_check = 0
        self._start_timer()
        self._producer.start()

    def _parse(self, payload: bytes) -> tuple[str, int, int, str]:
        try:
            request = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            raise _RequestError("malformed request: not a UTF-8 JSON object") from None
        if not isinstance(request, dict):
            raise _RequestError("malformed request: not a UTF-8 JSON object")
        job_id, map_id = request.get("job"), request.get("map")
        partition, mac = request.get("partition"), request.get("mac")
        if not (
            isinstance(job_id, str)
            and _is_count(map_id)
            and _is_count(partition)
            and isinstance(mac, str)
        ):
            raise _RequestError(
                "malformed request: needs job (str), map (int >= 0), "
                "partition (int >= 0), mac (hex str)"
            )
        return job_id, map_id, partition, mac

    def _authorize(self, job_id: str, map_id: int, partition: int, mac: str) -> None:
        store = self._factory.store
        known = valid_job_id(job_id) and store.has_job(job_id)
        # Compute an HMAC for unknown jobs too, so timing does not tell them apart.
        token = store.token(job_id) if known else self._factory._decoy_token
        name = job_id if known else "-"
        expected = request_mac(token, self._nonce, name, map_id, partition)
        good = hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace"))
        if not (known and good):
            raise _RequestError(NOT_AUTHORIZED)

    def _segment_done(self, error: str | None) -> None:
        self._producer = None
        if error is not None:
            # The header promised more bytes than we can send: the client must
            # see a short body, so the connection cannot continue.
            self._abort(f"map output unreadable mid-stream: {error}")
            return
        self._state = _IDLE
        self._start_timer()
        self._process_requests()

    # -- closing

    def _refuse(self, reason: str, detail: str | None = None) -> None:
        """Answer an error reply, then close: the one log line for this request."""
        self._state = _CLOSING
        self._buffer.clear()
        self._cancel_timer()
        # A reducer asking for a map re-executed elsewhere is routine, not alarming.
        level = self.log.info if reason.startswith(("unknown map", "partition")) else self.log.warn
        level(
            "Refused shuffle request from {peer}: {reason}",
            peer=_peer_text(self.transport.getPeer()),
            reason=f"{reason} ({detail})" if detail else reason,
        )
        self.transport.write(_frame({"ok": False, "error": reason[:_MAX_ERROR_TEXT]}))
        self._close()

    def _close(self) -> None:
        """Close once what was written is sent, or abort if the reader does
        not take it within the idle timeout: a reader stalled on the end of
        a reply (its producer done, the connection idle then) kept the
        connection closing for ever, a slot of max_connections that no
        eviction could free."""
        self._state = _CLOSING
        self._cancel_timer()
        self.transport.loseConnection()
        self._timer = self._factory.clock.callLater(self._factory.idle_timeout,
                                                    self.transport.abortConnection)

    def _abort(self, reason: str) -> None:
        self._state = _CLOSING
        self._buffer.clear()
        self._cancel_timer()
        self.log.warn(
            "Dropping shuffle connection from {peer}: {reason}",
            peer=_peer_text(self.transport.getPeer()),
            reason=reason,
        )
        self.transport.abortConnection()

    # -- timeouts

    def _start_timer(self) -> None:
        self._cancel_timer()
        self._idle_since = self._factory.clock.seconds()
        self._timer = self._factory.clock.callLater(self._factory.idle_timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._state is _STREAMING and self._producer is not None:
            if self._producer.sent != self._sent_at_check:
                self._sent_at_check = self._producer.sent
                self._start_timer()
                return
            self._abort(f"reader made no progress for {self._factory.idle_timeout}s")
        elif self._state is _IDLE:
            self._close()


class ShuffleServerFactory(protocol.Factory):
    """Serves the map outputs of a KeyValueStore to authenticated fetchers.

    Connections idle for idle_timeout seconds (no request in progress), or
    whose reader makes no progress for that long, are closed. At
    max_connections, a new connection closes the one idle the longest (so
    that idle connections, however many, cannot lock reducers out); when
    none is idle, the new one is closed at once.
    """

    #: No "Starting factory <...>" lines in the daemon's log.
    noisy = False

    log = Logger()

    def __init__(
        self,
        store: KeyValueStore,
        clock: IReactorTime,
        idle_timeout: float = 60.0,
        max_connections: int = 512,
        chunk_size: int = 256 * 1024,
    ) -> None:
        if chunk_size <= 0 or max_connections <= 0 or idle_timeout <= 0:
            raise ValueError("chunk_size, max_connections and idle_timeout must be positive")
        self.store = store
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.chunk_size = chunk_size
        self._connections: set[ShuffleServerProtocol] = set()
        self._crowded = 0
        self._decoy_token = os.urandom(32)
        self._drained: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress) -> ShuffleServerProtocol | None:  # type: ignore[override]
        if len(self._connections) >= self.max_connections:
            if self._crowded == 0:
                self.log.warn(
                    "Shuffle server at {max} connections: closing the longest idle ones, "
                    "refusing new ones while none is idle",
                    max=self.max_connections,
                )
            self._crowded += 1
            idle = [(c.idle_since, c) for c in self._connections if c.idle_since is not None]
            if not idle:
                return None  # the port closes the socket
            # Its connectionLost comes later: the count exceeds the limit
            # by the evictions in flight, at most one per new connection.
            min(idle, key=lambda pair: pair[0])[1].evict()
        elif self._crowded:
            self.log.info("Shuffle server below its connection limit again "
                          "({n} connections evicted or refused)", n=self._crowded)
            self._crowded = 0
        return ShuffleServerProtocol(self)

    def open_segment(self, path: str) -> BinaryIO:
        """Open a map output file for reading (a hook for tests)."""
        return open(path, "rb")

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def disconnect_all(self) -> Deferred[None]:
        """Abort every open connection; fires when all of them are gone."""
        d: Deferred[None] = Deferred()
        if not self._connections:
            d.callback(None)
            return d
        self._drained.append(d)
        for conn in list(self._connections):
            conn.transport.abortConnection()
        return d

    def _connection_lost(self, conn: ShuffleServerProtocol) -> None:
        self._connections.discard(conn)
        if not self._connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)


# ---------------------------------------------------------------- client side


_GREETING, _READY, _HEADER, _BODY, _CLOSED = "greeting", "ready", "header", "body", "closed"


class ShuffleClientProtocol(protocol.Protocol):
    """A client connection; fetch() may be called again once the previous one returned.

    Fails with ShuffleError on an error reply, a bad greeting or reply, a close
    before the whole body arrived, or no bytes from the server for timeout
    seconds while a reply is awaited. After a failure the connection is closed
    and unusable.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float = 60.0) -> None:
        self._clock = clock
        self._timeout = timeout
        self._state = _GREETING
        self._buffer = bytearray()
        self._nonce = b""
        self._busy = False
        self._waiter: Deferred[Any] | None = None
        self._dest: BinaryIO | None = None
        self._open_dest: Callable[[int], BinaryIO] | None = None
        self._length = 0
        self._remaining = 0
        self._error: BaseException | None = None
        self._timer: IDelayedCall | None = None
        self._last_data = 0.0
        self._closed_waiters: list[Deferred[None]] = []
        self._peer = "?"
        #: Closed while a request awaited its reply's first byte: the
        #: server never began to answer it (see ShufflePool.fetch).
        self.closed_unanswered = False

    # -- public

    async def fetch(
        self, job_id: str, map_id: int, partition: int, token: bytes, dest: Destination
    ) -> int:
        """Fetch one segment into dest (written as it arrives); return its length.

        dest is a binary file, or a callable that is given the segment's
        length once the reply header arrived (before any body byte, also for
        a length of 0) and returns the file to write the body to: the caller
        can choose where a segment goes by its size.
        """
        if self._busy:
            raise RuntimeError("a fetch is already in progress on this connection")
        self._busy = True
        try:
            if self._state is _GREETING:
                await self._wait()
            if self._state is not _READY:
                why = f": {self._error}" if self._error is not None else ""
                raise ShuffleError(f"shuffle connection to {self._peer} is closed{why}")
            mac = request_mac(token, self._nonce, job_id, map_id, partition)
            request = _frame({"job": job_id, "map": map_id, "partition": partition, "mac": mac})
            self._state = _HEADER
            if callable(dest):  # a file object is not callable
                self._dest, self._open_dest = None, dest
            else:
                self._dest, self._open_dest = dest, None
            self._length = self._remaining = 0
            self._expect_data()
            self.transport.write(request)
            result: int = await self._wait()
            return result
        finally:
            self._busy = False
            self._dest = self._open_dest = None

    @property
    def ready(self) -> bool:
        """Whether a fetch may start now: connected, greeted, not busy, not failed."""
        return self._state is _READY and self.transport is not None and not self._busy

    def close(self) -> Deferred[None]:
        """Close the connection; fires once it is closed."""
        d: Deferred[None] = Deferred()
        if self.transport is None:
            d.callback(None)
            return d
        self._closed_waiters.append(d)
        if self._error is None:  # otherwise it is already being aborted
            self.transport.loseConnection()
        return d

    # -- Twisted callbacks

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self._peer = _peer_text(self.transport.getPeer())
        self._expect_data()

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSED:
            return
        self._last_data = self._clock.seconds()
        try:
            self._consume(data)
        except ShuffleError as e:
            self._fail(e)
        except Exception as e:  # dest.write failed: a local error, passed on as is
            self._fail(e)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        state, self._state = self._state, _CLOSED
        self._cancel_timer()
        if self._error is None:
            if state is _BODY:
                what = f"after {self._length - self._remaining} of {self._length} bytes"
            elif state is _HEADER:
                what = "before its reply"
                self.closed_unanswered = not self._buffer
            elif state is _GREETING:
                what = "before its greeting"
            else:
                what = ""
            refused = tls_refusal(reason)
            if refused:
                what = f"{what}: the TLS handshake failed ({refused})".lstrip()
            self._error = ShuffleError(f"shuffle connection to {self._peer} closed {what}".rstrip())
        self._fire(self._error)
        self.transport = None
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    # -- parsing

    def _consume(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._state is _BODY:
                n = min(self._remaining, len(view))
                assert self._dest is not None
                self._dest.write(view[:n] if n < len(view) else view)
                self._remaining -= n
                view = view[n:]
                if self._remaining == 0:
                    self._state = _READY
                    self._fire(self._length)
                continue
            self._buffer += view
            view = memoryview(b"")
            if self._state is _GREETING:
                if len(self._buffer) < GREETING_SIZE:
                    return
                if self._buffer[: len(MAGIC)] != MAGIC:
                    raise ShuffleError(f"{self._peer} is not a pytxmr shuffle server (bad greeting)")
                self._nonce = bytes(self._buffer[len(MAGIC) : GREETING_SIZE])
                del self._buffer[:GREETING_SIZE]
                self._state = _READY
                self._fire(None)
            if self._state is _READY:
                if self._buffer:
                    raise ShuffleError(f"unexpected data from {self._peer}")
                return
            # _HEADER
            if len(self._buffer) < _LENGTH.size:
                return
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_REPLY_HEADER:
                raise ShuffleError(f"reply header from {self._peer} too long ({size} bytes)")
            if len(self._buffer) < _LENGTH.size + size:
                return
            header = self._parse_header(bytes(self._buffer[_LENGTH.size : _LENGTH.size + size]))
            rest = bytes(self._buffer[_LENGTH.size + size :])
            self._buffer.clear()
            if self._open_dest is not None:
                # A local error (e.g. the file cannot be created) propagates as is.
                self._dest = self._open_dest(header)
            if header == 0:
                self._state = _READY
                self._fire(0)
            else:
                self._state = _BODY
                self._length = self._remaining = header
            view = memoryview(rest)

    def _parse_header(self, payload: bytes) -> int:
        try:
            header = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict):
            raise ShuffleError(f"malformed reply header from {self._peer}")
        if header.get("ok") is True and _is_count(header.get("length")):
            length: int = header["length"]
            return length
        if header.get("ok") is False:
            raise ShuffleError(f"{self._peer} refused the fetch: {header.get('error')}")
        raise ShuffleError(f"malformed reply header from {self._peer}")

    # -- waiting, failing, timing out

    def _wait(self) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self._waiter = None
            self._error = self._error or ShuffleError("fetch cancelled")
            self._state = _CLOSED
            if self.transport is not None:
                self.transport.abortConnection()

        d: Deferred[Any] = Deferred(cancel)
        self._waiter = d
        return d

    def _fire(self, result: Any) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return
        if isinstance(result, BaseException):
            waiter.errback(Failure(result))
        else:
            waiter.callback(result)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._state = _CLOSED
        self._cancel_timer()
        self._fire(error)
        if self.transport is not None:
            self.transport.abortConnection()

    def _expect_data(self) -> None:
        self._last_data = self._clock.seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._check_progress)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _check_progress(self) -> None:
        self._timer = None
        if self._state not in (_GREETING, _HEADER, _BODY):
            return
        idle = self._clock.seconds() - self._last_data
        if idle < self._timeout:
            self._timer = self._clock.callLater(self._timeout - idle, self._check_progress)
            return
        self._fail(ShuffleError(f"no data from {self._peer} for {self._timeout}s"))


class _OneConnection(protocol.Factory):
    """connectProtocol's factory without its two log lines per fetch."""

    noisy = False

    def __init__(self, client: ShuffleClientProtocol) -> None:
        self._client = client

    def buildProtocol(self, addr: IAddress) -> ShuffleClientProtocol:  # type: ignore[override]
        return self._client


async def fetch(
    reactor: Any,
    host: str,
    port: int,
    job_id: str,
    map_id: int,
    partition: int,
    token: bytes,
    dest: Destination,
    timeout: float = 60.0,
    connect_timeout: float | None = None,
    tls: ClusterTLS | None = None,
) -> int:
    """Fetch one map output segment over a new connection; return its length.

    reactor provides IReactorTCP and IReactorTime. Body bytes go to dest as
    they arrive: a binary file, or a callable given the segment's length
    (before the body) that returns the file (see ShuffleClientProtocol.fetch).
    After a failure the file holds a partial segment to discard.
    Raises ShuffleError for remote and network failures (including connect
    errors, after ``connect_timeout``, by default ``timeout``); an exception
    from dest.write or the callable (local disk) propagates as is. With
    ``tls``, the server must show a certificate of the cluster CA for
    ``host``, and is shown ours.
    """
    client = await _connect(reactor, host, port, timeout, connect_timeout or timeout, tls)
    try:
        return await client.fetch(job_id, map_id, partition, token, dest)
    finally:
        await client.close()


async def _connect(reactor: Any, host: str, port: int, timeout: float,
                   connect_timeout: float, tls: ClusterTLS | None) -> ShuffleClientProtocol:
    # An address needs no name lookup (HostnameEndpoint's goes through a thread).
    if isIPAddress(host):
        endpoint: Any = TCP4ClientEndpoint(reactor, host, port, timeout=connect_timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=connect_timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    if tls is not None:
        endpoint = tls.wrap_client(host, endpoint)
    client = ShuffleClientProtocol(reactor, timeout)
    try:
        await endpoint.connect(_OneConnection(client))
    except (ConnectError, DNSLookupError) as e:
        raise ShuffleError(f"cannot connect to shuffle server {host}:{port}: {e}") from None
    return client


class ShufflePool:
    """A tasktracker's shuffle connections, kept open between fetches.

    A job of many small maps fetches thousands of tiny segments from each
    worker: a connection (and a handshake, with TLS) per segment would cost
    more than the segment. At most ``per_server`` connections run to one
    server at a time (further fetches wait for one of them, as Hadoop's
    parallel copies are bounded); an idle one is closed after ``idle``
    seconds, well before the server's own idle timeout would close it.
    """

    def __init__(self, reactor: Any, timeout: float = 60.0, connect_timeout: float | None = None,
                 tls: ClusterTLS | None = None, per_server: int = 6, idle: float = 10.0) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._connect_timeout = connect_timeout or timeout
        self._tls = tls
        self._per_server = per_server
        self._idle = idle
        self._servers: dict[tuple[str, int], _Server] = {}

    async def fetch(self, host: str, port: int, job_id: str, map_id: int, partition: int,
                    token: bytes, dest: Destination) -> int:
        """As the module's ``fetch``, over a kept connection when one is free."""
        server = self._servers.setdefault((host, port), _Server())
        fresh = False
        while True:
            client, kept = await self._acquire(server, host, port, fresh)
            ok = False
            try:
                n = await client.fetch(job_id, map_id, partition, token, dest)
                ok = True
                return n
            except ShuffleError:
                # A kept connection the server closed (its idle timeout) as we
                # sent on it, before it read or answered: once more, on a new
                # one, as HTTP clients do. Nothing reached ``dest``.
                if fresh or not (kept and client.closed_unanswered):
                    raise
                fresh = True
            finally:
                self._release(server, client, ok)

    def close(self) -> None:
        """Close every idle connection (call it once the fetches are cancelled)."""
        for server in self._servers.values():
            for client, timer in server.idle:
                timer.cancel()
                client.close()
            server.idle.clear()
        self._servers.clear()

    async def _acquire(self, server: _Server, host: str, port: int, fresh: bool = False
                       ) -> tuple[ShuffleClientProtocol, bool]:
        """A connection to the server, and whether it was kept from an
        earlier fetch; ``fresh``: a new one (the idle ones are closed)."""
        while server.idle:
            client, timer = server.idle.pop()
            timer.cancel()
            if client.ready and not fresh:
                return client, True
            server.open -= 1  # closed by the server meanwhile, or not wanted
            client.close()
        if server.open >= self._per_server:
            waiter: Deferred[ShuffleClientProtocol | None] = Deferred(server.waiters.remove)
            server.waiters.append(waiter)
            client = await waiter
            if client is not None:
                return client, True
            # A connection failed and left its place to us: open another.
        server.open += 1
        try:
            return await _connect(self._reactor, host, port, self._timeout,
                                  self._connect_timeout, self._tls), False
        except BaseException:
            server.open -= 1
            self._wake(server, None)
            raise

    def _release(self, server: _Server, client: ShuffleClientProtocol, ok: bool) -> None:
        if not (ok and client.ready):
            server.open -= 1
            client.close()
            self._wake(server, None)
        elif not self._wake(server, client):
            timer = self._reactor.callLater(self._idle, self._expire, server, client)
            server.idle.append((client, timer))

    def _wake(self, server: _Server, client: ShuffleClientProtocol | None) -> bool:
        """Hand ``client`` (or, with None, the place of a closed one) to the
        first fetch waiting for this server, if any."""
        if not server.waiters:
            return False
        if client is None and server.open >= self._per_server:
            return False
        server.waiters.pop(0).callback(client)
        return True

    def _expire(self, server: _Server, client: ShuffleClientProtocol) -> None:
        server.idle = [(c, t) for c, t in server.idle if c is not client]
        server.open -= 1
        client.close()


class _Server:
    """The pool's connections to one shuffle server."""

    def __init__(self) -> None:
        self.open = 0  # connecting, in use or idle
        self.idle: list[tuple[ShuffleClientProtocol, IDelayedCall]] = []
        self.waiters: list[Deferred[ShuffleClientProtocol | None]] = []
