"""PB connections that never log in are dropped: they cannot pile up."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.spread import pb

from pytxmr.jobtracker.pbadapter import LOGIN_TIMEOUT, JobTrackerRealm, pb_factory
from pytxmr.wire import ROLE_CLIENT


class NoJobs:
    """The realm hands avatars a jobtracker; these tests never call it."""


def connect() -> tuple[Clock, Any, StringTransport]:
    clock = Clock()
    factory = pb_factory(NoJobs(), b"secret", clock)  # type: ignore[arg-type]
    broker = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    broker.makeConnection(transport)
    return clock, broker, transport


def test_a_connection_that_never_logs_in_is_dropped() -> None:
    """An idle or half-open peer holds a file descriptor only LOGIN_TIMEOUT seconds."""
    clock, _, transport = connect()
    clock.advance(LOGIN_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_a_logged_in_connection_is_kept() -> None:
    """Once logged in (the realm saw its mind), a peer may stay as long as it likes."""
    clock, broker, transport = connect()
    broker.logged_in()
    clock.advance(10 * LOGIN_TIMEOUT)
    assert not transport.disconnecting


def test_the_realm_marks_its_connection_logged_in() -> None:
    """A real login (the realm hands out an avatar) cancels the deadline."""
    clock, broker, transport = connect()
    mind = pb.RemoteReference(None, broker, 1, 0)
    JobTrackerRealm(NoJobs()).requestAvatar(  # type: ignore[arg-type]
        ROLE_CLIENT, mind, pb.IPerspective)
    clock.advance(10 * LOGIN_TIMEOUT)
    assert not transport.disconnecting
