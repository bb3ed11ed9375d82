"""TLS for every port of a cluster: the PB port, the shuffle servers and
the status site, with one cluster CA.

A daemon's ``--tls DIR`` holds ``ca.pem`` (the cluster CA), ``cert.pem``
and ``key.pem`` (its own certificate, signed by that CA, with the names and
addresses others reach it by). Daemons check each other both ways: the
shuffle servers ask every reducer for a certificate of the cluster CA, and
a tasktracker logs in to the jobtracker only with one. Clients check the
jobtracker's certificate; theirs is optional (they log in with a password
or the cluster secret). ``pytxmr certs`` makes such directories
(``make_certs``); certificates from another CA work as well.

Every TLS server port has a handshake deadline and a cap on unfinished
handshakes: a peer that connects and never finishes,
or a flood of them, costs a bounded number of connections for a bounded
time (``pytxmr.handshakes``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from twisted.internet import interfaces

if TYPE_CHECKING:  # OpenSSL is 80 ms to import: only where TLS is on
    from twisted.internet import ssl

    from .handshakes import HandshakeGuard

#: The files of a ``--tls`` directory.
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
#: The CA's own key, kept where ``pytxmr certs`` ran (never on the hosts).
CA_KEY_FILE = "ca-key.pem"


class TLSError(Exception):
    """A ``--tls`` directory that cannot be used: the message says why."""


@dataclass(frozen=True)
class ClusterTLS:
    """The TLS material of one daemon or client."""

    directory: str
    ca: ssl.Certificate
    #: This host's certificate and key; None for a client without one.
    own: ssl.PrivateCertificate | None

    @classmethod
    def load(cls, directory: str, *, need_own: bool) -> ClusterTLS:
        """Read ``directory``; refuse what would only fail later, on a
        peer's side and with a vaguer message (a missing file, an expired
        certificate, a certificate the CA did not sign)."""
        from cryptography import x509
        from twisted.internet import ssl

        def read(name: str) -> bytes:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise TLSError(f"cannot read {path}: {e.strerror}") from None

        try:
            ca = ssl.Certificate.loadPEM(read(CA_FILE))
        except TLSError:
            raise
        except Exception as e:
            raise TLSError(f"{os.path.join(directory, CA_FILE)} is not a PEM certificate "
                           f"({e})") from None
        own = None
        has_own = os.path.exists(os.path.join(directory, CERT_FILE))
        if need_own or has_own:
            cert_pem, key_pem = read(CERT_FILE), read(KEY_FILE)
            try:
                own = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
            except Exception as e:
                raise TLSError(f"{directory}: {CERT_FILE} and {KEY_FILE} are not a "
                               f"certificate and its key ({e})") from None
            cert = x509.load_pem_x509_certificate(cert_pem)
            now = datetime.datetime.now(datetime.timezone.utc)
            if cert.not_valid_after_utc < now:
                raise TLSError(f"{os.path.join(directory, CERT_FILE)} expired on "
                               f"{cert.not_valid_after_utc:%Y-%m-%d}")
            if cert.not_valid_before_utc > now:  # every peer refuses it ("bad certificate")
                raise TLSError(f"{os.path.join(directory, CERT_FILE)} is not valid before "
                               f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this "
                               f"host's clock right? it says {now:%Y-%m-%d %H:%M})")
            try:
                cert.verify_directly_issued_by(x509.load_pem_x509_certificate(read(CA_FILE)))
            except Exception:
                raise TLSError(f"{os.path.join(directory, CERT_FILE)} is not signed by "
                               f"the CA of {os.path.join(directory, CA_FILE)}") from None
        return cls(os.path.abspath(directory), ca, own)

    def server_options(self, *, require_peer: bool) -> ssl.CertificateOptions:
        """A server's options: its certificate, and the peers' checked
        against the cluster CA (required, or only when a peer sends one)."""
        from twisted.internet import ssl

        if self.own is None:
            raise TLSError(f"{self.directory} has no {CERT_FILE}: a server needs one")
        return ssl.CertificateOptions(
            privateKey=self.own.privateKey.original.to_cryptography_key(),
            certificate=self.own.original.to_cryptography(),
            verify=True, caCerts=[self.ca.original], requireCertificate=require_peer)

    def client_options(self, host: str) -> Any:
        """A client's options toward ``host``: its certificate must be the
        cluster CA's, for that name or address."""
        from twisted.internet import ssl

        return ssl.optionsForClientTLS(host, trustRoot=self.ca, clientCertificate=self.own)

    def wrap_client(self, host: str, endpoint: Any) -> Any:
        from twisted.internet.endpoints import wrapClientTLS

        return wrapClientTLS(self.client_options(host), endpoint)

    def wrap_server(self, factory: Any, clock: Any, *, require_peer: bool) -> HandshakeGuard:
        from .handshakes import HandshakeGuard

        return HandshakeGuard(self.server_options(require_peer=require_peer), factory, clock)


def client_endpoint(reactor: Any, description: str, tls: ClusterTLS | None) -> Any:
    """The client endpoint of an endpoint string; with ``tls``, over TLS,
    the server's certificate checked for the host the string names."""
    from twisted.internet import endpoints

    from .addresses import endpoint_host_port

    endpoint = endpoints.clientFromString(reactor, description)
    if tls is None:
        return endpoint
    target = endpoint_host_port(description)
    if target is None:
        raise TLSError(f"{description}: with TLS, give the jobtracker as HOST:PORT")
    return tls.wrap_client(target[0], endpoint)


#: How long a plain-text login waits for the jobtracker's first word
#: before it asks, on a second connection, whether the port speaks TLS (a
#: TLS port waits for the client's hello, as PB's client waits for the
#: server's greeting: neither would speak before the login's deadline).
TLS_PROBE_AFTER = 1.0


def _client_hello() -> bytes:
    """A TLS ClientHello (Python's own, from its ``ssl`` module: no
    pyOpenSSL to import in a plain-text client)."""
    import ssl as stdlib_ssl

    context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = stdlib_ssl.CERT_NONE
    incoming, outgoing = stdlib_ssl.MemoryBIO(), stdlib_ssl.MemoryBIO()
    try:
        context.wrap_bio(incoming, outgoing).do_handshake()
    except stdlib_ssl.SSLWantReadError:  # waiting for the server's answer
        pass
    return outgoing.read()


def is_tls_record(data: bytes) -> bool:
    """Whether ``data`` starts as a TLS record does: its type (22 a
    handshake, 21 an alert), then 3, the major version of every TLS."""
    return data[:1] in (b"\x15", b"\x16") and data[1:2] in (b"", b"\x03")


async def _first_answer(reactor: Any, description: str, send: bytes,
                        timeout: float) -> bytes | None:
    """The first bytes the server at the endpoint string ``description``
    sends on a plain connection (after ``send``) within ``timeout``; None
    if it sent none (it closed the connection, or said nothing)."""
    from twisted.internet import defer, endpoints, protocol

    answered: defer.Deferred[bytes | None] = defer.Deferred()

    class Probe(protocol.Protocol):
        def connectionMade(self) -> None:
            if send:
                self.transport.write(send)

        def dataReceived(self, data: bytes) -> None:
            if not answered.called:
                answered.callback(data)
            self.transport.abortConnection()

        def connectionLost(self, reason: Any = None) -> None:
            if not answered.called:
                answered.callback(None)

    connected = await endpoints.clientFromString(reactor, description).connect(
        protocol.Factory.forProtocol(Probe))
    try:
        return await answered.addTimeout(timeout, reactor)
    except defer.TimeoutError:
        return None
    finally:
        connected.transport.abortConnection()


async def speaks_tls(reactor: Any, description: str, timeout: float = 10.0) -> bool:
    """Whether the server at the endpoint string ``description`` answers a
    ClientHello with a TLS record within ``timeout``; a PB server drops
    the connection instead (and logs, at info, that it was asked)."""
    answer = await _first_answer(reactor, description, _client_hello(), timeout)
    return answer is not None and is_tls_record(answer)


async def speaks_plain_text(reactor: Any, description: str, timeout: float = 2.0) -> bool:
    """Whether the server at ``description`` speaks first, in plain text,
    on a plain connection (PB's greeting): the counterpart of ``speaks_tls``
    for a TLS client whose connection was dropped before its handshake."""
    answer = await _first_answer(reactor, description, b"", timeout)
    return answer is not None and not is_tls_record(answer)


def not_tls_text(whose: str) -> str:
    """What a TLS client or tasktracker says of a jobtracker without TLS."""
    return (f"{whose} does not use TLS (it answered in plain text): start it with --tls "
            f"too, or give no --tls")


def peer_certificate(transport: Any) -> Any:
    """The certificate a peer presented over TLS (checked against the
    cluster CA by then), or None (no TLS, or no certificate)."""
    while transport is not None:
        get = getattr(transport, "getPeerCertificate", None)
        if get is not None and interfaces.ISSLTransport.providedBy(transport):
            return get()
        transport = getattr(transport, "transport", None)
    return None


#: Why a client refused a server: its certificate names neither the name
#: nor the address the client reached it at.
CERTIFICATE_NOT_FOR_HOST = "its certificate is not for the name or address it was reached at"


def tls_refusal(reason: Any) -> str | None:
    """Why a connection's TLS handshake failed, if that is how it ended, in
    OpenSSL's words ("certificate verify failed", "wrong version number")."""
    value = getattr(reason, "value", None)
    if type(value).__module__.startswith("service_identity"):  # a client's own check
        return CERTIFICATE_NOT_FOR_HOST
    if not type(value).__module__.startswith("OpenSSL"):
        return None
    errors = value.args[0] if value.args and isinstance(value.args[0], list) else []
    words = [str(err[-1]) for err in errors if isinstance(err, tuple) and err and err[-1]]
    why = "; ".join(words) or type(value).__name__
    if PLAIN_TEXT in words:  # what came back is no TLS record
        why += ": the peer answered in plain text, so it does not use TLS"
    return why


#: OpenSSL's reason when a peer's answer is no TLS record.
PLAIN_TEXT = "wrong version number"


def make_certs(outdir: str, hosts: Sequence[Sequence[str]], *, days: int = 825,
               ca_name: str = "pytxmr cluster CA") -> list[str]:
    """A cluster CA in ``outdir`` (made once, reused after) and a ``--tls``
    directory per host under ``outdir/NAME`` (the host's first name), its
    certificate valid for each of its names and addresses, plus
    ``outdir/client`` (the CA only) for submitting machines. The paths made."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    for names in hosts:  # all refused before anything is written
        if not names:
            raise TLSError("a HOST[,NAME...] names no host")
        _dir_name(names[0])
        for name in names:
            _check_host_name(name)
    ca_key_path, ca_path = os.path.join(outdir, CA_KEY_FILE), os.path.join(outdir, CA_FILE)
    if os.path.exists(ca_path) != os.path.exists(ca_key_path):
        # A CA of one's own without its key: a new CA replaced it.
        there, missing = (ca_path, CA_KEY_FILE) if os.path.exists(ca_path) else (
            ca_key_path, CA_FILE)
        raise TLSError(f"{there} is there without {missing}: `pytxmr certs` signs with the "
                       f"CA's certificate and key (to use a CA of your own, put its key "
                       f"beside its certificate as {CA_KEY_FILE}); nothing was written")
    os.makedirs(outdir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    if os.path.exists(ca_key_path):
        with open(ca_key_path, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(ca_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        ca_cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        _write(ca_key_path, ca_key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), private=True)
        _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    made = [ca_path]
    client = os.path.join(outdir, "client")
    os.makedirs(client, exist_ok=True)
    _write(os.path.join(client, CA_FILE), ca_pem)
    made.append(client)
    for names in hosts:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        host_dir = os.path.join(outdir, _dir_name(names[0]))
        os.makedirs(host_dir, exist_ok=True)
        _write(os.path.join(host_dir, CA_FILE), ca_pem)
        _write(os.path.join(host_dir, CERT_FILE), cert.public_bytes(serialization.Encoding.PEM))
        _write(os.path.join(host_dir, KEY_FILE),
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), private=True)
        made.append(host_dir)
    return made


_HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


def _check_host_name(name: str) -> None:
    """An address, or a DNS name: one with a space, or 999.1.1.1, went
    into a certificate no client would match."""
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(name) or re.fullmatch(r"[0-9.]+", name):
        raise TLSError(f"{name!r} is neither an IP address nor a host name")


def _dir_name(name: str) -> str:
    if name in ("client", CA_FILE, CA_KEY_FILE, "", ".", "..") or "/" in name or os.sep in name:
        raise TLSError(f"{name!r} cannot name a host's directory")
    return name.replace(":", "_")  # IPv6 addresses


def _write(path: str, data: bytes, *, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
