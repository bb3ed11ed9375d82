"""The cluster's TLS material (``pytxmr.tls``) and the handshake guard of
its server ports (``pytxmr.handshakes``), with a fake clock."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from twisted.internet import protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pytxmr.handshakes import HandshakeGuard
from pytxmr.tls import ClusterTLS, TLSError, make_certs


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_certs_cover_every_name_and_address_and_reuse_the_ca(tmp_path: Path) -> None:
    make_certs(str(tmp_path), [["jt.example", "10.0.0.1"], ["w1", "fd00::2"]])
    assert _sans(tmp_path / "jt.example" / "cert.pem") == {"jt.example", "10.0.0.1"}
    v6 = x509.load_pem_x509_certificate((tmp_path / "w1" / "cert.pem").read_bytes())
    addresses = v6.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert addresses == [ipaddress.ip_address("fd00::2")]
    ca = (tmp_path / "ca.pem").read_bytes()
    make_certs(str(tmp_path), [["w2"]])  # a host added later: same CA
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert (tmp_path / "w2" / "ca.pem").read_bytes() == ca
    assert (tmp_path / "client" / "ca.pem").read_bytes() == ca
    assert not (tmp_path / "client" / "cert.pem").exists()
    assert (tmp_path / "w2" / "key.pem").stat().st_mode & 0o077 == 0
    loaded = ClusterTLS.load(str(tmp_path / "w2"), need_own=True)
    assert loaded.own is not None
    assert ClusterTLS.load(str(tmp_path / "client"), need_own=False).own is None


@pytest.mark.parametrize("host", ["ca.pem", "ca-key.pem", "client"])
def test_a_host_named_as_a_ca_file_is_refused_before_anything_is_written(
        tmp_path: Path, host: str) -> None:
    """A host called ca.pem (or ca-key.pem) failed with FileExistsError,
    and a refused host name left a CA behind."""
    with pytest.raises(TLSError, match="cannot name a host's directory"):
        make_certs(str(tmp_path / "pki"), [["127.0.0.1"], [host]])
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("kept", ["ca.pem", "ca-key.pem"])
def test_a_ca_file_without_its_pair_is_refused_and_kept(tmp_path: Path, kept: str) -> None:
    """A CA of one's own (ca.pem alone, as the deploy guide says its
    certificate goes) was replaced by a new CA, and so were the host
    directories' copies: certificates no daemon of the cluster accepts."""
    make_certs(str(tmp_path / "pki"), [["h"]])
    own = tmp_path / "own"
    own.mkdir()
    (own / kept).write_bytes((tmp_path / "pki" / kept).read_bytes())
    with pytest.raises(TLSError, match=f"own/{kept} is there without "):
        make_certs(str(own), [["h2"]])
    assert sorted(p.name for p in own.iterdir()) == [kept]
    assert (own / kept).read_bytes() == (tmp_path / "pki" / kept).read_bytes()


@pytest.mark.parametrize("names", [[], ["bad host name"], ["999.1.1.1"], ["h", "-x"]])
def test_a_host_that_is_no_name_nor_address_is_refused(tmp_path: Path,
                                                       names: list[str]) -> None:
    """`certs pki ,` made the CA only, and exited 0; a name with a space
    went into a certificate no client would match."""
    with pytest.raises(TLSError, match="names no host|neither an IP address nor a host name"):
        make_certs(str(tmp_path / "pki"), [["ok.example"], names])
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("command", [["certs", "{f}", "127.0.0.1"],
                                     ["users", "add", "zz", "--file", "{f}/users.json"]])
def test_an_admin_command_s_unwritable_path_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """A file where the directory should be: a FileExistsError or
    FileNotFoundError traceback, not one line and status 2."""
    from pytxmr.cli import main

    monkeypatch.setenv("PYTXMR_PASSWORD", "x")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert main([c.format(f=blocker) for c in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pytxmr: ") and err.count("\n") == 1 and str(blocker) in err, err


def test_unusable_directories_are_refused_with_the_reason(tmp_path: Path) -> None:
    make_certs(str(tmp_path / "a"), [["h"]])
    make_certs(str(tmp_path / "b"), [["h"]])
    with pytest.raises(TLSError, match="cannot read .*ca.pem"):
        ClusterTLS.load(str(tmp_path / "nowhere"), need_own=False)
    with pytest.raises(TLSError, match="cannot read .*cert.pem"):
        ClusterTLS.load(str(tmp_path / "a" / "client"), need_own=True)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ca.pem").write_bytes((tmp_path / "b" / "ca.pem").read_bytes())
    for name in ("cert.pem", "key.pem"):
        (mixed / name).write_bytes((tmp_path / "a" / "h" / name).read_bytes())
    with pytest.raises(TLSError, match="not signed by the CA"):
        ClusterTLS.load(str(mixed), need_own=True)
    (mixed / "key.pem").write_bytes((tmp_path / "b" / "h" / "key.pem").read_bytes())
    with pytest.raises(TLSError, match="not a certificate and its key"):
        ClusterTLS.load(str(mixed), need_own=True)
    with pytest.raises(TLSError, match="cannot name a host"):
        make_certs(str(tmp_path / "c"), [["client"]])


def test_a_certificate_not_valid_yet_is_refused_at_start(tmp_path: Path) -> None:
    """Every peer refused it ("bad certificate"), and the daemon retried for
    ever with no word of its dates or its clock."""
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization

    make_certs(str(tmp_path), [["h"]])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tmp_path / "ca-key.pem").read_bytes(), None)
    own = x509.load_pem_x509_certificate((tmp_path / "h" / "cert.pem").read_bytes())
    tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    later = (x509.CertificateBuilder().subject_name(own.subject).issuer_name(ca.subject)
             .public_key(own.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(tomorrow).not_valid_after(tomorrow + datetime.timedelta(days=9))
             .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "h" / "cert.pem").write_bytes(later.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(TLSError, match=f"is not valid before {tomorrow:%Y-%m-%d} .* clock right"):
        ClusterTLS.load(str(tmp_path / "h"), need_own=True)


def _guard(tmp_path: Path, clock: Clock, limit: int = 3) -> HandshakeGuard:
    make_certs(str(tmp_path), [["h"]])
    tls = ClusterTLS.load(str(tmp_path / "h"), need_own=True)
    return HandshakeGuard(tls.server_options(require_peer=True),
                          protocol.Factory.forProtocol(protocol.Protocol), clock, 10.0, limit)


def _connect(guard: HandshakeGuard) -> StringTransport:
    transport = StringTransport()
    proto = guard.buildProtocol(None)
    proto.makeConnection(transport)
    return transport


def test_an_unfinished_handshake_is_dropped_at_its_deadline(tmp_path: Path) -> None:
    clock = Clock()
    guard = _guard(tmp_path, clock)
    transport = _connect(guard)
    assert guard.handshaking == 1
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and guard.handshaking == 0 and guard.dropped == 1


def test_beyond_the_limit_the_oldest_unfinished_handshake_makes_room(tmp_path: Path) -> None:
    clock = Clock()
    guard = _guard(tmp_path, clock, limit=3)
    transports = [_connect(guard) for _ in range(5)]
    assert [t.disconnecting for t in transports] == [True, True, False, False, False]
    assert guard.handshaking == 3
    # The dropped ones' deadlines are cancelled.
    assert len([c for c in clock.getDelayedCalls() if c.active()]) == 3


def test_a_finished_handshake_has_no_deadline(tmp_path: Path) -> None:
    clock = Clock()
    guard = _guard(tmp_path, clock)
    transport = StringTransport()
    proto = guard.buildProtocol(None)
    proto.makeConnection(transport)
    proto.wrappedProtocol.handshakeCompleted()  # as TLSMemoryBIOProtocol calls it
    assert guard.handshaking == 0
    clock.advance(60)
    assert not transport.disconnecting


def test_a_failed_handshake_is_logged_with_its_peer_and_reason(tmp_path: Path) -> None:
    """Garbage on a TLS port (a plain-text PB client, an HTTP request) went
    without a word: the operator never learnt why a peer did not get in."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    clock = Clock()
    guard = _guard(tmp_path, clock)
    events: list[dict[str, object]] = []
    guard.log = Logger(observer=events.append)
    for n, host in enumerate(["127.0.0.9"] * 5 + ["127.0.0.7"]):
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5000 + n))
        proto = guard.buildProtocol(None)
        proto.makeConnection(transport)
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        assert transport.disconnecting
        proto.connectionLost(Failure(ConnectionDone()))
    assert guard.failed == 6 and guard.handshaking == 0
    said = [e["log_format"].format(**e) for e in events]  # type: ignore[union-attr]
    # The first from each host (a host newly refused was lost in a flood
    # from another), then the 10th, 100th...: a flood is a few lines.
    assert len(said) == 2, said
    assert said[0].startswith("A TLS handshake from 127.0.0.9:5000 failed: ") and \
        "(1 so far)" in said[0] and "[(" not in said[0], said
    assert said[1].startswith("A TLS handshake from 127.0.0.7:5005 failed: ") and \
        "(6 so far)" in said[1], said
    # A peer that connects and goes (a port scan) is no failed handshake.
    proto = guard.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.connectionLost(Failure(ConnectionDone()))
    assert guard.failed == 6 and guard.handshaking == 0


def test_a_flood_from_many_hosts_is_a_few_lines(tmp_path: Path, monkeypatch: Any) -> None:
    """Beyond the hosts it remembers, every host was new, and every failed
    handshake of a scan from many addresses was a line."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from pytxmr import handshakes

    monkeypatch.setattr(handshakes, "REMEMBERED_HOSTS", 2)
    guard = _guard(tmp_path, Clock(), limit=50)
    events: list[dict[str, object]] = []
    guard.log = Logger(observer=events.append)
    for n in range(12):
        proto = guard.buildProtocol(None)
        proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", f"10.0.0.{n}", 5)))
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
    said = [e["log_format"].format(**e) for e in events]  # type: ignore[union-attr]
    assert [s.split()[4] for s in said] == ["10.0.0.0:5", "10.0.0.1:5", "10.0.0.9:5"], said


@pytest.mark.parametrize("argv, spared", [
    (["run", "job.py", "in", "-o", "out"], True),
    (["run", "--inline", "job.py", "in", "-o", "out"], False),  # the job's code runs there
    (["submit", "job.py", "in", "-o", "out"], True),
    (["submit", "job.py", "in", "-o", "out", "--tls", "certs"], False),
    (["status", "job_1"], True),
    (["jobs", "--tls", "certs"], False),
    (["certs", "out", "host"], False),
    (["web-password"], False),
])
def test_pyopenssl_is_spared_only_where_no_tls_nor_user_code_can_need_it(
        argv: list[str], spared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytxmr.cli import makes_no_tls_connection, parse

    monkeypatch.delenv("PYTXMR_TLS", raising=False)
    assert makes_no_tls_connection(parse(argv)) is spared
