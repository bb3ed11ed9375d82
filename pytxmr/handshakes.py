"""TLS server ports whose unfinished handshakes are bounded: a peer that
connects and never finishes its handshake (a plain-text client waiting
for a greeting, a scan, a flood of half-open handshakes) holds a
connection for ``HANDSHAKE_TIMEOUT`` at most, and at most
``MAX_HANDSHAKING`` of them are kept: a new one drops the oldest, so that
the peers that do finish (in milliseconds) keep getting in."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import interfaces
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

#: Seconds a peer has to finish its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Unfinished handshakes a port keeps at once.
MAX_HANDSHAKING = 256


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
            self.guard.finished(self)
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

    @property
    def handshaking(self) -> int:
        return len(self._pending)

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

    def _drop(self, watching: _Watching, why: str) -> None:
        self.finished(watching)
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            self.log.warn("Dropped a connection: {why} ({n} so far)", why=why, n=self.dropped)
        transport = watching.transport
        if transport is not None:
            transport.abortConnection()
