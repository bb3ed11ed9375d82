"""The default addresses of a tasktracker (``pytxmr.addresses``)."""

from __future__ import annotations

import pytest

from pytxmr.addresses import endpoint_host_port, listen_address, local_address_toward


def test_the_host_and_port_of_an_endpoint_string() -> None:
    assert endpoint_host_port("tcp:host=10.0.0.5:port=7373") == ("10.0.0.5", 7373)
    assert endpoint_host_port("tcp:host=master.example:port=7373:timeout=5") == (
        "master.example", 7373)
    assert endpoint_host_port(r"tcp:host=fd00\:\:1:port=7373") == ("fd00::1", 7373)
    assert endpoint_host_port("unix:/run/pytxmr.sock") is None


def test_the_address_toward_the_jobtracker_is_the_routes_own() -> None:
    assert local_address_toward("127.0.0.1", 7373) == "127.0.0.1"
    assert local_address_toward("127.0.0.5", 7373) == "127.0.0.1"  # the whole /8 is lo
    assert listen_address("localhost") in ("127.0.0.1", "::1")
    with pytest.raises(OSError):
        local_address_toward("no-such-host.invalid", 7373)
