"""Which address a tasktracker's shuffle server listens on and advertises,
when the operator does not say: the local address this host reaches the
jobtracker from. On a single host that is 127.0.0.1; on a network, the
address of the interface facing the cluster, which other workers reach
too (a worker that advertised 127.0.0.1 would send every reducer to its
own loopback). Asking the kernel's routing table (a UDP socket connected
to the jobtracker sends nothing) gives it before any connection exists.
"""

from __future__ import annotations

import re
import socket

_HOST = re.compile(r"(?:^|:)host=((?:\\:|[^:])+)")
_PORT = re.compile(r"(?:^|:)port=(\d+)")


def endpoint_host_port(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp:``/``ssl:`` client endpoint string; None
    for other kinds (``unix:``)."""
    host, port = _HOST.search(endpoint), _PORT.search(endpoint)
    if not endpoint.startswith(("tcp:", "ssl:", "tls:")) or not host or not port:
        return None
    return host.group(1).replace("\\:", ":"), int(port.group(1))


def local_address_toward(host: str, port: int) -> str:
    """The local IP address of this host's route to ``host``; OSError when
    the name does not resolve or no route leads there."""
    last: OSError | None = None
    for family, _, _, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.connect(addr)
            except OSError as e:
                last = e
                continue
            return str(s.getsockname()[0])
    raise last or OSError(f"{host} has no address")


def listen_address(advertised: str) -> str:
    """The address to listen on for an advertised host name (or address)."""
    return socket.getaddrinfo(advertised, None, type=socket.SOCK_STREAM)[0][4][0]
