"""The PB vocabulary between jobtracker, tasktrackers and clients.

One place for the protocol version, the login roles, the remote method
names and the errors that cross the wire. PB carries plain data only
(dicts, lists, str, bytes, numbers): no Copyable, no jelly class registry.
"""

from __future__ import annotations

from twisted.spread import pb

#: 2: frames may be LZ4-compressed (codec 2), which version-1 workers refuse.
PROTOCOL_VERSION = 2

#: Login names: the secret is the same, the role decides the avatar.
ROLE_TASKTRACKER = b"tasktracker"
ROLE_CLIENT = b"client"

DEFAULT_PORT = 7373
DEFAULT_WEB_PORT = 7374  # the jobtracker's status site
DEFAULT_SHUFFLE_PORT = 0
DEFAULT_HEARTBEAT = 1.0


class ProtocolMismatch(pb.Error):
    """The peer speaks another protocol version."""


class SubmissionError(pb.Error):
    """A job was refused at submission; the message says why."""


class UnknownJob(pb.Error):
    """No job with that id."""


class UnknownWorker(pb.Error):
    """A tasktracker spoke with a worker id the jobtracker no longer knows
    (it was declared lost): it must register again."""


def no_delay(transport: object) -> None:
    """Turn off Nagle's algorithm: control messages are small and answered
    at once, and Nagle with delayed ACKs adds 40 ms to such a round trip."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


class Broker(pb.Broker):
    """PB's broker, with no Nagle delay on TCP."""

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()


def client_factory() -> pb.PBClientFactory:
    factory = pb.PBClientFactory()
    factory.protocol = Broker
    return factory
