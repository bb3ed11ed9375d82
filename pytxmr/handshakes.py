"""TLS server ports whose unfinished handshakes are bounded: a peer that
connects and never finishes its handshake (a plain-text client waiting
for a greeting, a scan, a flood of half-open handshakes) holds a
connection for ``HANDSHAKE_TIMEOUT`` at most, and at most
``MAX_HANDSHAKING`` of them are kept: a new one drops the oldest, so that
the peers that do finish (in milliseconds) keep getting in."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from OpenSSL import SSL
from twisted.internet import interfaces
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from .pbwire import FloodSample, worth_saying

#: Seconds a peer has to finish its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Unfinished handshakes a port keeps at once.
MAX_HANDSHAKING = 256
#: Peer hosts whose first failed handshake is said, at most.
REMEMBERED_HOSTS = 1024


@implementer(interfaces.IHandshakeListener)
class _Watching(policies.ProtocolWrapper):
    """Tells its guard when the TLS handshake under it is done."""

    guard: HandshakeGuard | None = None

    def handshakeCompleted(self) -> None:
        if self.guard is not None:
            self.guard.finished(self)
        if interfaces.IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Any) -> None:
        if self.guard is not None:
            self.guard.lost(self, reason)
        super().connectionLost(reason)


@implementer(interfaces.IProtocolNegotiationFactory)
class _HandshakeWatch(policies.WrappingFactory):
    protocol = _Watching
    noisy = False

    def acceptableProtocols(self) -> list[bytes]:
        """The wrapped factory's ALPN protocols (a web site's "http/1.1"):
        Twisted's TLS fails a handshake whose client offers protocols and
        meets none, and browsers and curl offer them."""
        wrapped = interfaces.IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(wrapped.acceptableProtocols()) if wrapped is not None else []

    def logPrefix(self) -> str:  # the port's "... starting on" line names the real factory
        wrapped = self.wrappedFactory
        return wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else type(wrapped).__name__


class HandshakeGuard(TLSMemoryBIOFactory):
    """A TLS server factory whose unfinished handshakes are bounded in time
    (``HANDSHAKE_TIMEOUT``) and in number (``MAX_HANDSHAKING``)."""

    log = Logger()
    noisy = False

    def __init__(self, options: Any, factory: Any, clock: Any,
                 timeout: float = HANDSHAKE_TIMEOUT, limit: int = MAX_HANDSHAKING) -> None:
        super().__init__(options, False, _HandshakeWatch(factory))
        self._clock = clock
        self._timeout = timeout
        self._limit = limit
        #: _Watching protocol -> its deadline, oldest first.
        self._pending: OrderedDict[_Watching, Any] = OrderedDict()
        self.dropped = 0
        self._failures = FloodSample(hosts=REMEMBERED_HOSTS)

    @property
    def handshaking(self) -> int:
        return len(self._pending)

    @property
    def failed(self) -> int:
        """Handshakes that failed so far."""
        return self._failures.count

    def buildProtocol(self, addr: Any) -> Any:
        tls_proto = super().buildProtocol(addr)
        watching = tls_proto.wrappedProtocol
        watching.guard = self
        while len(self._pending) >= self._limit:
            oldest, _ = next(iter(self._pending.items()))
            self._drop(oldest, "too many unfinished TLS handshakes")
        self._pending[watching] = self._clock.callLater(self._timeout, self._drop, watching,
                                                        f"no TLS handshake in {self._timeout:g}s")
        return tls_proto

    def finished(self, watching: _Watching) -> None:
        deadline = self._pending.pop(watching, None)
        if deadline is not None and deadline.active():
            deadline.cancel()

    def lost(self, watching: _Watching, reason: Any) -> None:
        """A connection gone; one whose handshake failed (garbage on the
        port, a peer of another CA) is said, as the operator needs to hear
        of it: it went without a word. The first from each host, and then
        a few of a flood: a host newly refused is not lost among them."""
        if watching in self._pending and reason.check(SSL.Error):
            if self._failures.say(_peer_address(watching)[0]):
                self.log.warn("A TLS handshake from {peer} failed: {why} ({n} so far)",
                              peer=_peer(watching), why=_ssl_reason(reason.value),
                              n=self.failed)
        self.finished(watching)

    def _drop(self, watching: _Watching, why: str) -> None:
        self.finished(watching)
        self.dropped += 1
        if worth_saying(self.dropped):
            self.log.warn("Dropped a connection: {why} ({n} so far)", why=why, n=self.dropped)
        transport = watching.transport
        if transport is not None:
            transport.abortConnection()


def _peer_address(watching: _Watching) -> tuple[str | None, int | None]:
    addr = watching.transport.getPeer() if watching.transport is not None else None
    return getattr(addr, "host", None), getattr(addr, "port", None)


def _peer(watching: _Watching) -> str:
    host, port = _peer_address(watching)
    return f"{host}:{port}" if host is not None else "a peer"


def _ssl_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons ("wrong version number"), not its list of tuples."""
    errors = error.args[0] if error.args else None
    if isinstance(errors, list) and errors and all(isinstance(e, tuple) for e in errors):
        return "; ".join(str(e[-1]) for e in errors)
    return str(error) or type(error).__name__
