"""The PB vocabulary between jobtracker, tasktrackers and clients.

One place for the protocol version, the login roles, the remote method
names and the errors that cross the wire. PB carries plain data only
(dicts, lists, str, bytes, numbers): no Copyable, no jelly class registry.
"""

from __future__ import annotations

from twisted.spread import pb

PROTOCOL_VERSION = 1

#: Login names: the secret is the same, the role decides the avatar.
ROLE_TASKTRACKER = b"tasktracker"
ROLE_CLIENT = b"client"

DEFAULT_PORT = 7373
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
