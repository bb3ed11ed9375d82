"""Hosts as network namespaces, for the multi-host test tier.

A ``Network`` is a switch (a bridge, in a namespace of its own, so that
nothing of the test touches the machine's own interfaces) and hosts, each
a namespace with one interface ``eth0`` on the switch and its own private
address (``10.77.N.x/24``). Daemons run in a host with ``ip netns exec``;
the file system is shared, as it would be over NFS. Faults are what this
kernel offers (no netem, iptables or nft here): a link set down, a silent
drop between two hosts (permanent neighbour entries to a MAC address no
interface has), a slow link (``tc`` token bucket). Needs root and
``ip``; ``available()`` says why not when the tier must skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator

#: A MAC address no interface has: frames sent to it are silently lost.
_NOWHERE = "02:00:00:00:00:99"
_CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    pass


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = f"pytxmr-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as e:
        return f"cannot make a network namespace: {e}"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str
    #: The switch's end of this host's cable.
    port: str

    def run_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


class Network:
    """A switch and ``hosts`` hosts; ``close()`` removes every namespace
    (and with them their interfaces)."""

    def __init__(self, hosts: int, tag: str | None = None) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self._prefix = f"pyt{tag}"
        subnet = 1 + os.getpid() % 250
        self.switch = f"{self._prefix}-sw"
        self.hosts: list[Host] = []
        self._made: list[str] = []
        try:
            self._add_netns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for n in range(1, hosts + 1):
                self.hosts.append(self._add_host(n, f"10.77.{subnet}.{n}"))
        except BaseException:
            self.close()
            raise

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_host(self, n: int, address: str) -> Host:
        ns = f"{self._prefix}-h{n}"
        self._add_netns(ns)
        port = f"p{n}"
        _ip("link", "add", f"{self._prefix}e{n}", "type", "veth", "peer", "name",
            f"{self._prefix}p{n}")
        _ip("link", "set", f"{self._prefix}e{n}", "netns", ns, "name", "eth0")
        _ip("link", "set", f"{self._prefix}p{n}", "netns", self.switch, "name", port)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return Host(f"h{n}", ns, address, port)

    # --- faults -----------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Unplug the host's cable: nothing in or out."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")

    def drop_between(self, a: Host, b: Host) -> None:
        """Frames between ``a`` and ``b`` go nowhere, silently (no refusal,
        no reset: their connections hang), while both reach every other host."""
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.netns, "neigh", "replace", dst.address, "lladdr", _NOWHERE,
                "nud", "permanent", "dev", "eth0")

    def undrop_between(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.netns, "neigh", "del", dst.address, "dev", "eth0")

    def isolate(self, host: Host) -> None:
        """``drop_between`` the host and every other: cut off, silently."""
        for other in self.hosts:
            if other is not host:
                self.drop_between(host, other)

    def rejoin(self, host: Host) -> None:
        for other in self.hosts:
            if other is not host:
                self.undrop_between(host, other)

    def slow(self, host: Host, rate: str = "2mbit") -> None:
        """A slow link out of ``host`` (a token bucket on its interface)."""
        subprocess.run(["tc", "-n", host.netns, "qdisc", "replace", "dev", "eth0", "root",
                        "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"],
                       check=True, capture_output=True, timeout=30)

    @contextlib.contextmanager
    def entered(self, host: Host) -> Iterator[None]:
        """This thread in ``host``'s namespace, as a process on it: its
        sockets, and the processes it starts (which keep the namespace),
        are the host's (setns(2); Python 3.11 has no os.setns)."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{host.netns}") as ns:
            if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                raise NetnsError(f"setns into {host.netns}: {os.strerror(ctypes.get_errno())}")
            try:
                yield
            finally:
                if libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                    raise NetnsError(f"setns back: {os.strerror(ctypes.get_errno())}")

    def close(self) -> None:
        for name in reversed(self._made):
            try:
                _ip("netns", "del", name)
            except NetnsError:
                pass
        self._made = []
