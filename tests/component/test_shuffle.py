"""Tests for pytxmr.shuffle: the map-output server and its fetch client.

Loopback tests use the real reactor on tcp:0; flow control and timeouts use
in-memory fakes (StringTransport, Clock) so they are exact and fast.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pytxmr.kvstore import KeyValueStore
from pytxmr.shuffle import (
    MAGIC,
    MAX_REQUEST,
    NOT_AUTHORIZED,
    SegmentProducer,
    ShuffleClientProtocol,
    ShuffleError,
    ShuffleServerFactory,
    ShufflePool,
    ShuffleServerProtocol,
    fetch,
    request_mac,
)

TOKEN = b"k" * 32
JOB = "job_1"
PEER = IPv4Address("TCP", "127.0.0.1", 4321)
BIG = os.urandom(5 * 1024 * 1024 + 12345)
SMALL = b"hello, reducer\n"


def frame(obj: Any) -> bytes:
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(payload)) + payload


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """Split raw server bytes after the greeting into JSON header frames (no bodies)."""
    frames, pos = [], 20
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(json.loads(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return frames


def make_store(root: str) -> KeyValueStore:
    """A store with JOB: map 0 = [BIG, empty, SMALL], map 1 = [SMALL, SMALL]."""
    store = KeyValueStore(root)
    store.startup_cleanup()
    work = store.add_job(JOB, TOKEN)
    for map_id, segments in ((0, [BIG, b"", SMALL]), (1, [SMALL, SMALL])):
        data = os.path.join(work, f"m{map_id}.data")
        table, offset = [], 0
        with open(data, "wb") as f:
            f.write(b"PAD")  # segments need not start at 0
            offset = 3
            for seg in segments:
                f.write(seg)
                table.append([offset, len(seg), 1])
                offset += len(seg)
        store.add_map_output(JOB, map_id, data, table)
    return store


class RawClient(Protocol):
    """Speaks raw bytes at the server and records what comes back."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    """Wait on the real reactor until condition() holds, failing after deadline seconds."""
    waited = 0.0
    while not condition():
        if waited > deadline:
            raise AssertionError("condition not met before the deadline")
        await deferLater(reactor, 0.002, lambda: None)
        waited += 0.002


def temp_dir(test: TestCase) -> str:
    """A fresh directory outside the source tree, removed after the test."""
    path = tempfile.mkdtemp(prefix="pytxmr-shuffle-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


class ServerCase(TestCase):
    """A shuffle server of make_store's store on a loopback port."""

    async def start_server(self, **kwargs: Any) -> int:
        self.store = make_store(os.path.join(temp_dir(self), "kv"))
        self.factory = ShuffleServerFactory(self.store, reactor, **kwargs)
        port: IListeningPort = await serverFromString(
            reactor, "tcp:0:interface=127.0.0.1"
        ).listen(self.factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.factory.disconnect_all)
        self.port = port.getHost().port
        return self.port


class LoopbackTests(ServerCase):
    """The server and client over real loopback TCP."""

    async def fetch(self, map_id: int, partition: int, token: bytes = TOKEN, job: str = JOB) -> bytes:
        dest = io.BytesIO()
        n = await fetch(reactor, "127.0.0.1", self.port, job, map_id, partition, token, dest)
        self.assertEqual(n, len(dest.getvalue()))
        return dest.getvalue()

    async def raw(self, data: bytes, close: bool = False) -> bytes:
        """Send data on a fresh connection; return what the server sent until it closed."""
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        await connectProtocol(endpoint, client)
        await until(lambda: len(client.received) >= 20)
        client.transport.write(data)
        if close:
            client.transport.loseConnection()
        await client.lost
        return bytes(client.received)

    async def assert_still_serving(self) -> None:
        self.assertEqual(await self.fetch(0, 2), SMALL)

    async def test_multi_megabyte_segment_is_byte_identical(self) -> None:
        """A large segment arrives intact, in order, through flow control."""
        await self.start_server(chunk_size=64 * 1024)
        self.assertEqual(await self.fetch(0, 0), BIG)

    async def test_fetch_into_a_real_file(self) -> None:
        """Reducers spill fetched runs to disk; dest can be any binary file."""
        await self.start_server()
        path = os.path.join(temp_dir(self), "fetched")
        with open(path, "wb") as dest:
            n = await fetch(reactor, "127.0.0.1", self.port, JOB, 0, 0, TOKEN, dest)
        self.assertEqual(n, len(BIG))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), BIG)

    async def test_zero_length_segment(self) -> None:
        """An empty partition is a normal, successful fetch of 0 bytes."""
        await self.start_server()
        self.assertEqual(await self.fetch(0, 1), b"")

    async def test_concurrent_fetches(self) -> None:
        """Many reducers fetch from one server at once without mixing bytes."""
        await self.start_server(chunk_size=32 * 1024)
        wanted = [(0, 0), (0, 2), (1, 0), (1, 1), (0, 1)] * 3
        results = await gatherResults(
            [Deferred.fromCoroutine(self.fetch(m, p)) for m, p in wanted]
        )
        expected = {(0, 0): BIG, (0, 1): b"", (0, 2): SMALL, (1, 0): SMALL, (1, 1): SMALL}
        self.assertEqual(results, [expected[w] for w in wanted])

    async def test_several_fetches_over_one_connection(self) -> None:
        """A reducer may reuse one connection for several segments of a host."""
        await self.start_server()
        client = ShuffleClientProtocol(reactor, timeout=10)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        try:
            for (m, p), want in [((0, 2), SMALL), ((0, 1), b""), ((0, 0), BIG), ((1, 1), SMALL)]:
                dest = io.BytesIO()
                self.assertEqual(await client.fetch(JOB, m, p, TOKEN, dest), len(want))
                self.assertEqual(dest.getvalue(), want)
        finally:
            await client.close()

    async def test_bad_mac_and_unknown_job_get_the_same_error(self) -> None:
        """Neither a wrong token nor a probe reveals whether a job exists."""
        await self.start_server()
        errors = []
        for token, job in [(b"wrong" * 8, JOB), (TOKEN, "no_such_job"), (TOKEN, "../../etc")]:
            with self.assertRaises(ShuffleError) as cm:
                await self.fetch(0, 0, token=token, job=job)
            errors.append(str(cm.exception))
        self.assertTrue(all(e.endswith(": " + NOT_AUTHORIZED) for e in errors), errors)
        await self.assert_still_serving()

    async def test_unknown_map_and_partition_out_of_range(self) -> None:
        """An authorized fetch of a missing segment gets a clear reason."""
        await self.start_server()
        with self.assertRaises(ShuffleError) as cm:
            await self.fetch(7, 0)
        self.assertIn("unknown map 7", str(cm.exception))
        with self.assertRaises(ShuffleError) as cm:
            await self.fetch(0, 3)
        self.assertIn("partition 3 out of range", str(cm.exception))
        await self.assert_still_serving()

    async def test_removed_job_is_not_authorized(self) -> None:
        """After destroyJob, outputs of the job are no longer served."""
        await self.start_server()
        self.store.remove_job(JOB)
        with self.assertRaises(ShuffleError) as cm:
            await self.fetch(0, 2)
        self.assertIn(NOT_AUTHORIZED, str(cm.exception))

    async def test_missing_or_truncated_data_file_is_unavailable(self) -> None:
        """A damaged map output gets an error reply, not a short body."""
        await self.start_server()
        path, offset, length = self.store.lookup(JOB, 0, 2)
        with open(path, "r+b") as f:
            f.truncate(offset + length - 1)
        with capturedLogs() as events:
            with self.assertRaises(ShuffleError) as cm:
                await self.fetch(0, 2)
        self.assertIn("map output unavailable", str(cm.exception))
        self.assertEqual(len([e for e in events if "Refused" in e.get("log_format", "")]), 1)
        os.unlink(self.store.lookup(JOB, 1, 0)[0])
        with self.assertRaises(ShuffleError) as cm:
            await self.fetch(1, 0)
        self.assertIn("map output unavailable", str(cm.exception))
        self.assertEqual(await self.fetch(0, 0), BIG)

    async def test_http_get_gets_an_error_and_a_close(self) -> None:
        """A browser or scanner hitting the port is refused cleanly."""
        await self.start_server()
        with capturedLogs() as events:
            received = await self.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(received[:4], MAGIC)
        self.assertEqual(parse_frames(received), [{"ok": False, "error": "request too long"}])
        refused = [e for e in events if "Refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1)
        await self.assert_still_serving()

    async def test_huge_length_field_is_refused(self) -> None:
        """A length prefix beyond the limit is refused before buffering anything."""
        await self.start_server()
        received = await self.raw(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)
        self.assertEqual(parse_frames(received), [{"ok": False, "error": "request too long"}])
        received = await self.raw(struct.pack(">I", MAX_REQUEST + 1))
        self.assertEqual(parse_frames(received), [{"ok": False, "error": "request too long"}])
        await self.assert_still_serving()

    async def test_garbage_and_malformed_requests_are_refused(self) -> None:
        """Bad JSON, wrong shapes and wrong types all get an error reply."""
        await self.start_server()
        good = {"job": JOB, "map": 0, "partition": 0, "mac": "0" * 64}
        bad_payloads: list[Any] = [
            b"\x00\x01garbage\xff\xfe",
            b"[" * 4000,
            [1, 2],
            "str",
            {**good, "map": "0"},
            {**good, "map": True},
            {**good, "partition": -1},
            {**good, "partition": 1.5},
            {**good, "job": 5},
            {**good, "mac": None},
            {"job": JOB},
        ]
        for payload in bad_payloads:
            received = await self.raw(frame(payload))
            [reply] = parse_frames(received)
            self.assertFalse(reply["ok"])
            self.assertTrue(reply["error"].startswith("malformed request"), (payload, reply))
        await self.assert_still_serving()

    async def test_truncated_request_then_close_leaves_server_healthy(self) -> None:
        """A client that dies mid-request costs the server nothing."""
        await self.start_server()
        received = await self.raw(frame({"job": JOB, "map": 0})[:10], close=True)
        self.assertEqual(received[:4], MAGIC)
        self.assertEqual(len(received), 20)
        await until(lambda: self.factory.connection_count == 0)
        await self.assert_still_serving()

    async def test_client_closing_mid_segment_stops_the_producer(self) -> None:
        """A reducer killed mid-fetch must not leave the server streaming."""
        await self.start_server(chunk_size=16 * 1024)

        class OneChunk(RawClient):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                if len(self.received) > 100_000:
                    self.transport.abortConnection()

        client = OneChunk()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        await until(lambda: len(client.received) >= 20)
        nonce = bytes(client.received[4:20])
        mac = request_mac(TOKEN, nonce, JOB, 0, 0)
        client.transport.write(frame({"job": JOB, "map": 0, "partition": 0, "mac": mac}))
        await client.lost
        await until(lambda: self.factory.connection_count == 0)
        await self.assert_still_serving()

    async def test_connection_refused_is_a_shuffle_error(self) -> None:
        """A dead tasktracker is a fetch failure the caller can report."""
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Factory())
        number = port.getHost().port
        await port.stopListening()
        with self.assertRaises(ShuffleError) as cm:
            await fetch(reactor, "127.0.0.1", number, JOB, 0, 0, TOKEN, io.BytesIO())
        self.assertIn("cannot connect", str(cm.exception))

    async def test_idle_connections_beyond_the_limit_cannot_lock_fetches_out(self) -> None:
        """Past the limit, the longest idle connection is closed: a fetch
        still gets through however many idle connections are open."""
        await self.start_server(max_connections=2)
        holders = [RawClient(), RawClient(), RawClient()]
        for h in holders:
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), h)
        await until(lambda: self.factory.connection_count == 2)
        self.assertEqual(await self.fetch(0, 2), SMALL)
        await until(lambda: sum(h.lost.called for h in holders) == 2)
        for h in holders:
            if not h.lost.called:
                h.transport.loseConnection()
                await h.lost
        await until(lambda: self.factory.connection_count == 0)
        await self.assert_still_serving()


# ------------------------------------------------------------ in-memory tests


class PoolTests(ServerCase):
    """ShufflePool: connections kept between fetches, a bound per server."""

    def make_pool(self, **kwargs: Any) -> ShufflePool:
        pool = ShufflePool(reactor, timeout=5.0, **kwargs)
        self.addCleanup(pool.close)
        return pool

    async def pool_fetch(self, pool: ShufflePool, map_id: int, partition: int) -> bytes:
        dest = io.BytesIO()
        n = await pool.fetch("127.0.0.1", self.port, JOB, map_id, partition, TOKEN, dest)
        self.assertEqual(n, len(dest.getvalue()))
        return dest.getvalue()

    async def test_fetches_reuse_one_connection(self) -> None:
        await self.start_server()
        pool = self.make_pool()
        for _ in range(20):
            self.assertEqual(await self.pool_fetch(pool, 1, 0), SMALL)
        self.assertEqual(await self.pool_fetch(pool, 0, 0), BIG)
        self.assertEqual(self.factory.connection_count, 1)

    async def test_at_most_per_server_connections_at_once(self) -> None:
        await self.start_server()
        pool = self.make_pool(per_server=2)
        seen = []
        real = self.factory.buildProtocol

        def counting(addr: Any) -> Any:
            built = real(addr)
            seen.append(self.factory.connection_count + 1)
            return built

        self.factory.buildProtocol = counting  # type: ignore[method-assign]
        wanted = [(0, 0), (0, 2), (1, 0), (1, 1)] * 5
        got = await gatherResults(
            [Deferred.fromCoroutine(self.pool_fetch(pool, m, p)) for m, p in wanted])
        self.assertEqual(got, [BIG, SMALL, SMALL, SMALL] * 5)
        self.assertEqual(len(seen), 2)
        self.assertLessEqual(max(seen), 2)

    async def test_a_connection_the_server_closed_is_replaced(self) -> None:
        await self.start_server(idle_timeout=0.05)
        pool = self.make_pool()
        self.assertEqual(await self.pool_fetch(pool, 1, 1), SMALL)
        await until(lambda: self.factory.connection_count == 0)
        self.assertEqual(await self.pool_fetch(pool, 1, 1), SMALL)

    async def test_a_kept_connection_closed_as_a_fetch_takes_it_is_tried_once_more(
            self) -> None:
        """The server closes an idle connection (its idle timeout) just as a
        fetch sends on it, before the client has seen the close: the fetch
        is made again on a new connection, not failed (a flaky failure of
        the test above, on a loaded machine)."""
        await self.start_server()
        pool = self.make_pool()
        served: list[Any] = []
        real = self.factory.buildProtocol

        def keeping(addr: Any) -> Any:
            built = real(addr)
            served.append(built)
            return built

        self.factory.buildProtocol = keeping  # type: ignore[method-assign]
        self.assertEqual(await self.pool_fetch(pool, 1, 1), SMALL)
        served[0].transport.abortConnection()  # the client learns of it only later
        self.assertEqual(await self.pool_fetch(pool, 1, 1), SMALL)
        self.assertEqual(len(served), 2)

    async def test_a_refused_fetch_leaves_its_place_to_a_waiting_one(self) -> None:
        await self.start_server()
        pool = self.make_pool(per_server=1)
        bad = Deferred.fromCoroutine(self.pool_fetch(pool, 9, 0))
        good = Deferred.fromCoroutine(self.pool_fetch(pool, 1, 0))
        with self.assertRaises(ShuffleError):
            await bad
        self.assertEqual(await good, SMALL)

    async def test_a_cancelled_waiting_fetch_gives_up_its_turn(self) -> None:
        await self.start_server()
        pool = self.make_pool(per_server=1)
        first = Deferred.fromCoroutine(self.pool_fetch(pool, 0, 0))
        waiting = Deferred.fromCoroutine(self.pool_fetch(pool, 1, 0))
        waiting.cancel()
        self.assertEqual(await first, BIG)
        self.assertEqual(await self.pool_fetch(pool, 1, 1), SMALL)
        self.failureResultOf(waiting, CancelledError)

    async def test_idle_connections_close_after_idle_seconds(self) -> None:
        await self.start_server()
        pool = self.make_pool(idle=0.05)
        self.assertEqual(await self.pool_fetch(pool, 1, 0), SMALL)
        await until(lambda: self.factory.connection_count == 0)


class PausingTransport(StringTransport):
    """A StringTransport that, like a TCP transport, pauses its streaming producer
    once more than buffer_size bytes are waiting, and resumes it on drain()."""

    buffer_size = 1

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.pending = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.pending += len(data)
        if self.producer is not None and self.streaming and self.pending > self.buffer_size:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.pending = 0
        if self.producer is not None:
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class CountingFile(io.BytesIO):
    """A file that counts its read() calls."""

    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


class InMemoryTests(TestCase):
    """Flow control, timeouts and framing with fakes and a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = make_store(os.path.join(temp_dir(self), "kv"))
        self.files: list[CountingFile] = []
        self.factory = ShuffleServerFactory(
            self.store, self.clock, idle_timeout=60.0, chunk_size=64 * 1024
        )
        self.factory.open_segment = self.open_segment  # type: ignore[method-assign]

    def open_segment(self, path: str) -> CountingFile:
        with open(path, "rb") as f:
            self.files.append(CountingFile(f.read()))
        return self.files[-1]

    def connect(self, transport: StringTransport | None = None) -> tuple[ShuffleServerProtocol, StringTransport]:
        proto = self.factory.buildProtocol(PEER)
        assert proto is not None
        transport = transport or StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def request(self, transport: StringTransport, map_id: int, partition: int) -> bytes:
        nonce = transport.value()[4:20]
        mac = request_mac(TOKEN, nonce, JOB, map_id, partition)
        return frame({"job": JOB, "map": map_id, "partition": partition, "mac": mac})

    def test_segment_producer_reads_nothing_while_paused(self) -> None:
        """A slow reader must stop file reads, so memory stays bounded."""
        file = CountingFile(b"x" * 1000)
        transport = PausingTransport()
        done: list[str | None] = []
        producer = SegmentProducer(transport, file, 100, 850, 100, done.append)
        producer.start()
        self.assertEqual((file.reads, len(transport.value())), (1, 100))
        for _ in range(3):
            producer.pauseProducing()  # repeated pauses are harmless
        self.assertEqual(file.reads, 1)
        for reads in range(2, 10):
            transport.drain()
            self.assertEqual(file.reads, reads)
        self.assertEqual(done, [None])
        self.assertEqual(transport.value(), b"x" * 850)
        self.assertIsNone(transport.producer)
        self.assertTrue(file.closed)

    def test_segment_producer_stop_closes_the_file(self) -> None:
        """When the connection drops, the producer releases its file at once."""
        file = CountingFile(b"x" * 1000)
        transport = PausingTransport()
        done: list[str | None] = []
        producer = SegmentProducer(transport, file, 0, 1000, 100, done.append)
        producer.start()
        producer.stopProducing()
        producer.resumeProducing()
        self.assertTrue(file.closed)
        self.assertEqual((file.reads, done), (1, []))

    def test_segment_producer_reports_a_truncated_file(self) -> None:
        """A file shorter than its index says must not be passed off as complete."""
        file = CountingFile(b"x" * 150)
        transport = StringTransport()
        done: list[str | None] = []
        SegmentProducer(transport, file, 0, 1000, 100, done.append).start()
        self.assertEqual(len(done), 1)
        self.assertIn("850 bytes early", done[0] or "")

    def test_server_streams_only_as_fast_as_the_reader(self) -> None:
        """Through the protocol, a paused transport means no more reads."""
        proto, transport = self.connect(PausingTransport())
        assert isinstance(transport, PausingTransport)
        proto.dataReceived(self.request(transport, 0, 0))
        [file] = self.files
        self.assertEqual(file.reads, 1)
        self.assertLess(len(transport.value()), 20 + 100 + 64 * 1024)
        self.clock.advance(30)
        self.assertEqual(file.reads, 1)
        transport.drain()
        self.assertEqual(file.reads, 2)
        while transport.producer is not None:
            transport.drain()
        self.assertEqual(transport.value()[-len(BIG) :], BIG)
        self.assertEqual(parse_frames(transport.value()[: -len(BIG)]), [{"ok": True, "length": len(BIG)}])

    def test_pipelined_request_waits_for_the_current_reply(self) -> None:
        """A request sent early is served after the body, never inside it."""
        proto, transport = self.connect(PausingTransport())
        assert isinstance(transport, PausingTransport)
        proto.dataReceived(self.request(transport, 0, 0) + self.request(transport, 0, 2))
        while transport.producer is not None:
            transport.drain()
        out = transport.value()[20:]
        head = frame(json.dumps({"ok": True, "length": len(BIG)}, separators=(",", ":")).encode())
        self.assertEqual(out[: len(head)], head)
        self.assertEqual(out[len(head) : len(head) + len(BIG)], BIG)
        self.assertEqual(out[len(head) + len(BIG) :][-len(SMALL) :], SMALL)

    def test_many_pipelined_small_requests_do_not_recurse(self) -> None:
        """Segments that finish synchronously are served in a loop, not by recursion."""
        proto, transport = self.connect()
        proto.dataReceived(self.request(transport, 1, 0) * 3000)
        self.assertEqual(transport.value().count(SMALL), 3000)
        self.assertFalse(transport.disconnecting)

    def test_idle_connection_is_closed_after_idle_timeout(self) -> None:
        """Forgotten connections must not pin server resources forever."""
        proto, transport = self.connect()
        self.clock.advance(59.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(Exception("closed")))
        self.assertEqual(self.factory.connection_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_close_the_reader_takes_nothing_of_is_aborted(self) -> None:
        """A close waits for what was written to be sent: a reader stalled on
        the end of a reply (its producer done, the connection idle) kept the
        connection closing for ever, a slot of max_connections taken, as
        did one that stopped reading a refusal."""
        for refused in (False, True):
            proto, transport = self.connect(PausingTransport())
            assert isinstance(transport, PausingTransport)
            if refused:
                proto.dataReceived(frame({"job": "nope"}))
            else:
                self.clock.advance(60)
            self.assertTrue(transport.disconnecting)
            self.assertFalse(transport.aborted)
            self.clock.advance(59.9)
            self.assertFalse(transport.aborted)
            self.clock.advance(0.1)
            self.assertTrue(transport.aborted)
            proto.connectionLost(Failure(Exception("aborted")))
        self.assertEqual(self.factory.connection_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_partial_request_does_not_keep_a_connection_alive(self) -> None:
        """Trickling bytes of a request (slowloris) does not reset the idle timer."""
        proto, transport = self.connect()
        req = self.request(transport, 0, 2)
        for i in range(5):
            self.clock.advance(11)
            proto.dataReceived(req[i : i + 1])
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_idle_timer_restarts_after_each_reply(self) -> None:
        """A connection reused for fetches stays open while it is used."""
        proto, transport = self.connect()
        self.clock.advance(50)
        proto.dataReceived(self.request(transport, 0, 2))
        self.clock.advance(50)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_stalled_reader_is_dropped(self) -> None:
        """A reader that stops reading mid-segment is aborted after the timeout."""
        proto, transport = self.connect(PausingTransport())
        assert isinstance(transport, PausingTransport)
        proto.dataReceived(self.request(transport, 0, 0))
        self.clock.advance(45)
        transport.drain()  # progress: the timer starts over
        self.clock.advance(45)
        self.assertFalse(transport.aborted)
        self.clock.advance(60)
        self.assertTrue(transport.aborted)
        proto.connectionLost(Failure(Exception("aborted")))
        self.assertTrue(self.files[0].closed)

    def test_flood_during_a_reply_is_dropped(self) -> None:
        """A client cannot make the server buffer unbounded input while it streams."""
        proto, transport = self.connect(PausingTransport())
        assert isinstance(transport, PausingTransport)
        proto.dataReceived(self.request(transport, 0, 0))
        proto.dataReceived(b"x" * (MAX_REQUEST + 100))
        self.assertTrue(transport.aborted)

    def test_at_the_limit_the_longest_idle_connection_makes_room(self) -> None:
        """A full server closes its oldest idle connection for a new one."""
        self.factory.max_connections = 2
        _, t_old = self.connect()
        self.clock.advance(1)
        _, t_young = self.connect()
        self.clock.advance(1)
        self.assertIsNotNone(self.factory.buildProtocol(PEER))
        self.assertTrue(t_old.disconnected)
        self.assertFalse(t_young.disconnected)

    def test_at_the_limit_with_no_idle_connection_new_ones_are_refused(self) -> None:
        """buildProtocol returning None makes the port close the socket at
        once; replies in progress are never cut for a newcomer."""
        self.factory.max_connections = 2
        protos = []
        for _ in range(2):
            proto, transport = self.connect(PausingTransport())
            proto.dataReceived(self.request(transport, 0, 0))  # streaming, paused
            protos.append(proto)
        self.assertIsNone(self.factory.buildProtocol(PEER))
        protos[0].connectionLost(Failure(Exception("gone")))
        self.assertIsNotNone(self.factory.buildProtocol(PEER))

    def test_each_connection_gets_a_fresh_nonce(self) -> None:
        """A request captured on one connection is useless on another."""
        proto1, t1 = self.connect()
        proto2, t2 = self.connect()
        self.assertEqual((t1.value()[:4], len(t1.value())), (MAGIC, 20))
        self.assertNotEqual(t1.value()[4:], t2.value()[4:])
        replayed = self.request(t1, 0, 2)
        proto2.dataReceived(replayed)
        self.assertEqual(parse_frames(t2.value()), [{"ok": False, "error": NOT_AUTHORIZED}])

    def test_client_rejects_a_bad_greeting(self) -> None:
        """Fetching from something that is not a shuffle server fails clearly."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        transport = StringTransport(peerAddress=PEER)
        client.makeConnection(transport)
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, io.BytesIO()))
        client.dataReceived(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        failure = self.failureResultOf(d, ShuffleError)
        self.assertIn("not a pytxmr shuffle server", str(failure.value))
        self.assertTrue(transport.disconnecting)

    def test_client_times_out_without_progress(self) -> None:
        """A hung server (e.g. SIGSTOPped) must not hang the reducer."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        transport = StringTransport(peerAddress=PEER)
        client.makeConnection(transport)
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, io.BytesIO()))
        client.dataReceived(MAGIC + b"n" * 16)
        client.dataReceived(frame({"ok": True, "length": 100}) + b"x" * 10)
        for _ in range(4):
            self.clock.advance(4)
            client.dataReceived(b"x")  # slow but moving: no timeout
        self.assertNoResult(d)
        self.clock.advance(5)
        failure = self.failureResultOf(d, ShuffleError)
        self.assertIn("no data", str(failure.value))
        self.assertTrue(transport.disconnecting)

    def test_client_reports_a_short_body(self) -> None:
        """A connection closed before N bytes is an error, never a short success."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        client.makeConnection(StringTransport(peerAddress=PEER))
        dest = io.BytesIO()
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, dest))
        client.dataReceived(MAGIC + b"n" * 16 + frame({"ok": True, "length": 100}) + b"x" * 40)
        client.connectionLost(Failure(Exception("reset")))
        failure = self.failureResultOf(d, ShuffleError)
        self.assertIn("after 40 of 100 bytes", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled_fetch_aborts_the_connection(self) -> None:
        """A reduce attempt that is killed must not leave its fetch running."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        transport = StringTransport(peerAddress=PEER)
        client.makeConnection(transport)
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, io.BytesIO()))
        client.dataReceived(MAGIC + b"n" * 16 + frame({"ok": True, "length": 100}))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(Exception("aborted")))
        again = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, io.BytesIO()))
        self.assertIn("is closed", str(self.failureResultOf(again, ShuffleError).value))

    def test_client_sends_the_documented_request(self) -> None:
        """The request frame is exactly what docs/shuffle-protocol.md describes."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        transport = StringTransport(peerAddress=PEER)
        client.makeConnection(transport)
        dest = io.BytesIO()
        d = Deferred.fromCoroutine(client.fetch(JOB, 3, 1, TOKEN, dest))
        nonce = os.urandom(16)
        client.dataReceived(MAGIC + nonce)
        raw = transport.value()
        (n,) = struct.unpack(">I", raw[:4])
        self.assertEqual(len(raw), 4 + n)
        request = json.loads(raw[4:].decode("utf-8"))
        self.assertEqual(
            request,
            {"job": JOB, "map": 3, "partition": 1, "mac": request_mac(TOKEN, nonce, JOB, 3, 1)},
        )
        client.dataReceived(frame({"ok": True, "length": 3}) + b"abc")
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(dest.getvalue(), b"abc")

    def test_client_and_server_in_memory_round_trip(self) -> None:
        """The two halves agree, byte for byte, without a network."""
        proto, server_t = self.connect()
        client = ShuffleClientProtocol(self.clock, timeout=5)
        client_t = StringTransport(peerAddress=PEER)
        client.makeConnection(client_t)
        dest = io.BytesIO()
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 2, TOKEN, dest))
        client.dataReceived(server_t.value())
        server_t.clear()
        proto.dataReceived(client_t.value())
        client.dataReceived(server_t.value())
        self.assertEqual(self.successResultOf(d), len(SMALL))
        self.assertEqual(dest.getvalue(), SMALL)

    def test_client_asks_the_destination_once_the_length_is_known(self) -> None:
        """A reducer decides where a segment goes (memory or disk) by its
        length, before the first body byte is written."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        client.makeConnection(StringTransport(peerAddress=PEER))
        asked: list[int] = []
        dest = io.BytesIO()

        def open_dest(length: int) -> io.BytesIO:
            asked.append(length)
            return dest

        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 2, TOKEN, open_dest))
        client.dataReceived(MAGIC + b"n" * 16 + frame({"ok": True, "length": 5}))
        self.assertEqual((asked, dest.getvalue()), ([5], b""))
        client.dataReceived(b"abcde")
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual((asked, dest.getvalue()), ([5], b"abcde"))
        empty = Deferred.fromCoroutine(client.fetch(JOB, 0, 1, TOKEN, open_dest))
        client.dataReceived(frame({"ok": True, "length": 0}))
        self.assertEqual(self.successResultOf(empty), 0)
        self.assertEqual(asked, [5, 0])  # an empty segment gets its (empty) file too

    def test_client_does_not_ask_for_a_destination_after_an_error_reply(self) -> None:
        """A refused fetch creates no file (and reserves no memory)."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        client.makeConnection(StringTransport(peerAddress=PEER))
        asked: list[int] = []
        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN,
                                                lambda n: asked.append(n) or io.BytesIO()))
        client.dataReceived(MAGIC + b"n" * 16 + frame({"ok": False, "error": "gone"}))
        self.failureResultOf(d, ShuffleError)
        self.assertEqual(asked, [])

    def test_a_failing_destination_is_a_local_error(self) -> None:
        """A destination that cannot be created (a full disk) fails the fetch
        with its own error: it is not blamed on the map's host."""
        client = ShuffleClientProtocol(self.clock, timeout=5)
        transport = StringTransport(peerAddress=PEER)
        client.makeConnection(transport)

        def open_dest(length: int) -> io.BytesIO:
            raise OSError(28, "No space left on device")

        d = Deferred.fromCoroutine(client.fetch(JOB, 0, 0, TOKEN, open_dest))
        client.dataReceived(MAGIC + b"n" * 16 + frame({"ok": True, "length": 10}) + b"x" * 10)
        failure = self.failureResultOf(d, OSError)
        self.assertFalse(failure.check(ShuffleError))
        self.assertTrue(transport.disconnecting)
