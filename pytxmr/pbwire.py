"""PB under the protocol's vocabulary (``pytxmr.wire``), for both daemons
and clients: a broker without Nagle delays, and the translation of
``wire.Refused`` errors into ``pb.Error`` at the inbound adapters, so that
a refused call is sent with its message and no traceback is logged, while
the logic behind the adapters never sees a PB type.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import msgpack

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.spread import pb

from . import wire
from .wire import no_delay

F = TypeVar("F", bound=Callable[..., Any])

#: wire.Refused subclass -> the pb.Error subclass sent for it. Same name and
#: module, so the peer's RemoteError.remoteType reads "pytxmr.wire.UnknownJob".
_REMOTE: dict[type[wire.Refused], type[pb.Error]] = {}


def as_pb_error(e: wire.Refused) -> pb.Error:
    cls = type(e)
    remote = _REMOTE.get(cls)
    if remote is None:
        remote = _REMOTE[cls] = type(cls.__name__, (pb.Error,),
                                     {"__module__": cls.__module__, "__doc__": cls.__doc__})
    return remote(str(e))


def _translate(failure: Failure) -> Failure:
    if failure.check(wire.Refused):
        return Failure(as_pb_error(failure.value))
    return failure


def refusals_as_pb_errors(method: F) -> F:
    """For ``perspective_*``/``remote_*`` methods: a ``wire.Refused`` raised
    (or a Deferred failing with one) goes to the peer as a ``pb.Error``."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            result = method(*args, **kw)
        except wire.Refused as e:
            raise as_pb_error(e) from None
        if isinstance(result, defer.Deferred):
            result.addErrback(_translate)
        return result
    return wrapper  # type: ignore[return-value]


_SURROGATES = {"unicode_errors": "surrogatepass"}


def pack(record: Any, *, surrogates: bool = False) -> bytes:
    """A record (a ``to_wire`` form) as one msgpack string: PB's banana
    encodes and decodes one item in C-backed msgpack instead of an item per
    field in Python (a heartbeat: about 40 us against 220). The records of
    the jobtracker and its tasktrackers always travel so (since protocol 4).
    With ``surrogates``, a surrogate travels as itself: a file name that is
    not UTF-8 holds some (``os.fsdecode``), and its split must reach the
    worker that reads it. Nothing else may carry them: PB's strings, in
    which the jobtracker answers its clients, cannot."""
    # No unicode_errors unless needed: given, even "strict", msgpack takes
    # its slower path for every string (1.9 us a heartbeat against 1.3).
    return msgpack.packb(record, use_bin_type=True, **_SURROGATES if surrogates else {})


def unpack(data: Any, *, surrogates: bool = False) -> Any:
    """A record as ``pack`` sent it."""
    if not isinstance(data, bytes):
        raise wire.BadMessage(f"a record must come packed, not as {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False,
                               **_SURROGATES if surrogates else {})
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise wire.BadMessage(f"a malformed record ({type(e).__name__})") from None


class Broker(pb.Broker):
    """PB's broker, with no Nagle delay on TCP; ``lost_reason`` says why
    its connection ended (PB's notifications do not), ``not_pb`` what the
    peer sent that is not PB, if that ended it."""

    lost_reason: Failure | None = None
    not_pb: Exception | None = None
    #: The first bytes the peer sent (a TLS ClientHello's are no garbage to
    #: log: a plain-text client asking whether the port speaks TLS).
    first_bytes = b""

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if not self.first_bytes:
            self.first_bytes = data[:8]
        try:
            super().dataReceived(data)
        except Exception as e:
            # Banana's and PB's own errors (a bad type byte, an answer to
            # no question, a message of the wrong shape): the peer's bytes,
            # which went to the reactor's log as a traceback each, the
            # connection dropped by it all the same.
            self.not_pb = e
            self.garbled(e)
            self.transport.abortConnection()

    def garbled(self, e: Exception) -> None:
        """The peer sent ``e``'s garbage; the connection is dropped next
        (``not_pb`` says why, to whoever tells of the loss)."""

    def connectionLost(self, reason: Failure) -> None:
        self.lost_reason = reason
        super().connectionLost(reason)


def worth_saying(n: int) -> bool:
    """Whether to log the ``n``th of a flood of alike events (dropped
    peers, failed handshakes): the 1st, 10th, 100th, then every 1000th."""
    return n in (1, 10, 100) or n % 1000 == 0


class FloodSample:
    """Which of a flood of alike events to log: the first ``first``, the
    first from each host (a host newly refused, one misconfigured client,
    is not lost among a scan's), then ``worth_saying``'s sample."""

    def __init__(self, first: int = 1, hosts: int = 1024) -> None:
        self.count = 0
        self._first = first
        #: Hosts remembered, ``hosts`` at most: beyond them (a flood from
        #: many), the sample only.
        self._hosts: set[str] = set()
        self._most_hosts = hosts

    def say(self, host: str | None) -> bool:
        """Count one more; whether to log it."""
        self.count += 1
        new = (host is not None and host not in self._hosts
               and len(self._hosts) < self._most_hosts)
        if new:
            self._hosts.add(host)  # type: ignore[arg-type]
        return new or self.count <= self._first or worth_saying(self.count)


def client_factory() -> pb.PBClientFactory:
    factory = pb.PBClientFactory()
    factory.protocol = Broker
    factory.noisy = False
    return factory


async def call(ref: pb.RemoteReference, method: str, *args: Any) -> Any:
    """``ref.callRemote``, with every way it can fail as ``wire.Unreachable``:
    a connection lost or dead, or the peer refusing (``wire.CallRefused``).
    The outbound ports make their calls through this."""
    try:
        return await ref.callRemote(method, *args)
    except pb.RemoteError as e:
        raise wire.CallRefused(str(e)) from None
    except (pb.PBConnectionLost, pb.DeadReferenceError) as e:
        raise wire.Unreachable(str(e) or "the connection was lost") from None
