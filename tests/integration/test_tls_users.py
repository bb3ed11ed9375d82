"""TLS on every port and users, with real daemons: jobs run over TLS with
certificates checked both ways; what is not the cluster's (another CA, an
expired certificate, a plain-text client, a flood of half-open handshakes,
a wrong password, another user's kill) is refused and the daemons keep
serving. Peers that are not pytxmr's own code are Python's ``ssl`` and
``socket`` modules, so the checks do not depend on our TLS client."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from procs import ROOT, Cluster, wait_for
from pytxmr.handshakes import MAX_HANDSHAKING
from pytxmr.tls import make_certs

WORDCOUNT = ROOT / "examples" / "wordcount.py"
HOST = ["127.0.0.1", "localhost"]
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}


def _read_part_files(out: Path) -> Counter[str]:
    got: Counter[str] = Counter()
    for part in sorted(out.glob("part-*")):
        for line in part.read_text().splitlines():
            word, count = line.rsplit("\t", 1)
            got[word] += int(count)
    return got


def _expired_cert(ca_dir: Path, out: Path) -> Path:
    """A --tls directory whose certificate the cluster CA signed, expired yesterday."""
    with open(ca_dir / "ca-key.pem", "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    out.mkdir()
    (out / "ca.pem").write_bytes((ca_dir / "ca.pem").read_bytes())
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pki")
    make_certs(str(base / "ours"), [HOST])
    make_certs(str(base / "theirs"), [HOST])  # another CA, for the same names
    return {"host": base / "ours" / "127.0.0.1", "client": base / "ours" / "client",
            "other": base / "theirs" / "127.0.0.1",
            "expired": _expired_cert(base / "ours", base / "expired")}


class TLSCluster(Cluster):
    """A cluster whose clients log in as users over TLS."""

    def __init__(self, base: Path, pki: dict[str, Path]) -> None:
        super().__init__(base)
        self.pki = pki
        self.users = base / "users.json"
        for name, password in PASSWORDS.items():
            rc, _, err = self._users("add", name, *(["--admin"] if name == "root" else []),
                                     password=password)
            assert rc == 0, err

    def _users(self, *args: str, password: str) -> tuple[int, str, str]:
        from procs import run_cli

        env = {**self.env, "PYTXMR_PASSWORD": password}
        return run_cli("users", *args, "--file", str(self.users), env=env, cwd=self.base)

    def as_user(self, name: str, *args: str, password: str | None = None,
                tls: Path | None = None) -> tuple[int, str, str]:
        from procs import run_cli

        env = {**self.env, "PYTXMR_PASSWORD": password or PASSWORDS[name]}
        return run_cli(*args, "--jobtracker", self.address, "--user", name,
                       "--tls", str(tls or self.pki["client"]), env=env, cwd=self.base)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory,
                pki: dict[str, Path]) -> Iterator[TLSCluster]:
    c = TLSCluster(tmp_path_factory.mktemp("tlscluster"), pki)
    try:
        c.start_jobtracker("--tls", str(pki["host"]), "--users", str(c.users))
        c.start_tasktrackers(2, 2, "--tls", str(pki["host"]))
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("words") / "in.txt"
    path.write_text("".join(f"w{i % 37} x{i % 11} the\n" for i in range(3000)))
    return path


def _submit(c: TLSCluster, user: str, words: Path, out: Path,
            *more: str) -> tuple[int, str, str]:
    return c.as_user(user, "submit", str(WORDCOUNT), str(words), "-o", str(out),
                     "--reducers", "3", "-q", *more)


def _ports(c: TLSCluster) -> dict[str, int]:
    assert c.jobtracker is not None
    ready = c.jobtracker.ready
    return {"pb": ready["port"], "web": ready["web_port"],
            "shuffle": c.tasktrackers[0].wait_ready()["shuffle_port"]}


def test_a_job_runs_over_tls_as_a_user(tls_cluster: TLSCluster, words: Path,
                                       tmp_path: Path) -> None:
    c = tls_cluster
    rc, _, err = _submit(c, "alice", words, tmp_path / "out")
    assert rc == 0, err + c.logs()
    assert _read_part_files(tmp_path / "out") == Counter(words.read_text().split())
    # Three reduces on two workers: some map outputs crossed between
    # workers, through TLS shuffle servers.
    rc, out, err = c.as_user("alice", "jobs")
    assert rc == 0, err
    assert " alice " in out
    job_id = out.split()[0]
    rc, out, err = c.as_user("alice", "status", job_id, "--json")
    assert rc == 0 and json.loads(out)["owner"] == "alice"


def test_the_status_site_is_https_with_the_cluster_ca(tls_cluster: TLSCluster,
                                                      words: Path, tmp_path: Path) -> None:
    c = tls_cluster
    rc, _, err = _submit(c, "bob", words, tmp_path / "out")
    assert rc == 0, err
    context = ssl.create_default_context(cafile=str(c.pki["client"] / "ca.pem"))
    url = f"https://127.0.0.1:{_ports(c)['web']}/"
    with urllib.request.urlopen(url, context=context, timeout=10) as page:
        html = page.read().decode()
    assert "<th>owner</th>" in html and ">bob<" in html
    # As a browser or curl: protocols offered by ALPN (the handshake failed).
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", _ports(c)["web"]), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(12) == b"HTTP/1.1 200"
    # A browser that does not trust the cluster CA refuses the site.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    # A job's task logs are its owner's: `pytxmr logs` checks who asks; the
    # site, which does not know, served them to anyone.
    printing = tmp_path / "printing.py"
    printing.write_text("def map(k, line):\n    print('a secret of bob')\n    yield line, 1\n")
    rc, out, err = c.as_user("bob", "submit", str(printing), str(words), "-o",
                             str(tmp_path / "printed"), "-q")
    assert rc == 0, err
    rc, out, err = c.as_user("bob", "jobs")
    job_id = next(line.split()[0] for line in out.splitlines() if "printing.py" in line)
    with urllib.request.urlopen(f"{url}jobs/{job_id}", context=context, timeout=10) as page:
        assert "/log\"" not in page.read().decode()  # no link to what is refused
    for api in ("api/", ""):
        log = f"{url}{api}jobs/{job_id}/attempts/{job_id}_m00000_0/log"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(log, context=context, timeout=10)
        assert refused.value.code == 403
        assert "on a cluster with users, a job" in refused.value.read().decode()


@pytest.mark.parametrize("which", ["other", "expired"])
def test_a_certificate_of_another_ca_or_expired_is_refused_on_every_port(
        tls_cluster: TLSCluster, pki: dict[str, Path], which: str) -> None:
    """The shuffle servers require a certificate of the cluster CA; the PB
    port checks any certificate it is shown (a tasktracker must show one)."""
    c = tls_cluster
    ports = _ports(c)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(c.pki["client"] / "ca.pem"))
    context.load_cert_chain(str(pki[which] / "cert.pem"), str(pki[which] / "key.pem"))
    for port in (ports["shuffle"], ports["pb"]):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"x")
                    if not s.recv(1):  # TLS 1.3: the refusal comes after our Finished
                        raise ConnectionResetError("closed")


def test_a_tasktracker_of_another_ca_never_joins(tls_cluster: TLSCluster,
                                                 pki: dict[str, Path]) -> None:
    c = tls_cluster
    tt = c.start_tasktracker(1, "--tls", str(pki["other"]), wait=False)
    try:
        wait_for(lambda: "TLS handshake failed" in tt.log(), 30,
                 "the tasktracker to say its TLS handshake failed")
        assert "certificate verify failed" in tt.log()
        assert c.jobtracker is not None
        assert c.jobtracker.log().count("joined") == 2
    finally:
        tt.stop()
        c.tasktrackers.remove(tt)


def test_a_tasktracker_whose_certificate_does_not_name_it_is_told_so(
        tls_cluster: TLSCluster, tmp_path: Path) -> None:
    """It was told that the jobtracker cannot reach it and to set
    --advertise-host, with no word of its certificate, and the jobtracker
    logged nothing."""
    from pytxmr.tls import make_certs

    c = tls_cluster
    # The cluster's CA, a certificate for "localhost" only, advertising 127.0.0.1.
    c_dir = tmp_path / "ours-again"
    c_dir.mkdir()
    for name in ("ca.pem", "ca-key.pem"):
        (c_dir / name).write_bytes((c.pki["host"].parent / name).read_bytes())
    make_certs(str(c_dir), [["localhost"]])
    tt = c.start_tasktracker(1, "--tls", str(c_dir / "localhost"), "--advertise-host",
                             "127.0.0.1", wait=False)
    try:
        assert tt.proc.wait(30) == 2, tt.log()
        assert ("(the TLS handshake failed: its certificate is not for the name or address it "
                "was reached at); give it a --tls directory whose certificate names "
                "127.0.0.1") in tt.log()
        assert c.jobtracker is not None
        assert "Refused tasktracker 127.0.0.1:" in c.jobtracker.log()
    finally:
        tt.stop()
        c.tasktrackers.remove(tt)


def test_a_tls_client_and_tasktracker_are_told_a_plain_jobtracker_does_not_use_tls(
        tmp_path: Path, make_cluster: Any) -> None:
    """They said "wrong version number", or "closed the connection during
    the login" (exit 3), as the jobtracker's answer or its drop of their
    ClientHello came first; the tasktracker's two texts took turns in its
    log. The jobtracker logs their hello as a question, not garbage."""
    c: Cluster = make_cluster()
    c.start_jobtracker()
    make_certs(str(tmp_path / "pki"), [["127.0.0.1"]])
    for _ in range(5):
        rc, _, err = c.cli("jobs", "--tls", str(tmp_path / "pki" / "client"))
        assert rc == 2 and f"the jobtracker at {c.address} does not use TLS (it answered in " \
            "plain text): start it with --tls too, or give no --tls" in err, err
    assert c.jobtracker is not None
    assert "asked whether this port speaks TLS: it does not" in c.jobtracker.log()
    assert "not PB (" not in c.jobtracker.log()
    tt = c.start_tasktracker(1, "--tls", str(tmp_path / "pki" / "127.0.0.1"), wait=False)
    text = ("Not registered with the jobtracker: cannot log in to it: it does not use TLS (it "
            "answered in plain text): start it with --tls too, or give no --tls; retrying")
    wait_for(lambda: text in tt.log(), 30, "the TLS tasktracker to be told")
    time.sleep(3)  # tries again: the same reason, not said again
    assert tt.log().count("Not registered with the jobtracker") == 1, tt.log()


def test_a_tls_tasktracker_dropped_before_its_handshake_blames_no_plain_text(
        make_cluster: Any, tmp_path: Path) -> None:
    """A port that accepts and closes (a proxy without its backend, a
    jobtracker stopping): no word of TLS, which it may well use."""
    c: Cluster = make_cluster()
    make_certs(str(tmp_path / "pki"), [["127.0.0.1"]])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(30)
        port = server.getsockname()[1]
        tt = c.start_tasktracker(1, "--tls", str(tmp_path / "pki" / "127.0.0.1"), wait=False,
                                 jobtracker=f"127.0.0.1:{port}")
        for _ in range(3):  # its login, its question in plain text, its next login
            conn, _ = server.accept()
            conn.close()
        wait_for(lambda: "Not registered with the jobtracker: cannot log in" in tt.log(), 30,
                 "the tasktracker to say why")
    assert "the connection was lost during the login" in tt.log(), tt.log()
    assert "does not use TLS" not in tt.log()


def test_a_plain_text_tasktracker_is_told_to_use_tls(tls_cluster: TLSCluster) -> None:
    """At its first login (it said "no answer in 10s ... does it use TLS?")."""
    c = tls_cluster
    tt = c.start_tasktracker(1, wait=False)
    try:
        wait_for(lambda: "its port speaks TLS: give --tls DIR" in tt.log(), 8,
                 "the plain tasktracker to be told about TLS")
    finally:
        tt.stop()
        c.tasktrackers.remove(tt)


def test_a_plain_text_client_on_each_tls_port_is_dropped_quickly(
        tls_cluster: TLSCluster, words: Path, tmp_path: Path) -> None:
    c = tls_cluster
    for name, port in _ports(c).items():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            start = time.monotonic()
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):  # a TLS alert at most, then the end
                data += chunk
            assert time.monotonic() - start < 2, name
            assert b"HTTP" not in data, name
    rc, err, _ = c.as_user("alice", "jobs")
    assert rc == 0
    # A pytxmr client without --tls: a clear refusal at once (it waited
    # out its login's 10 s and said "did not answer", exit 3, as for a
    # jobtracker that may come back).
    start = time.monotonic()
    rc, _, err = c.cli("jobs", timeout=30)
    assert rc == 2 and f"the jobtracker at {c.address} uses TLS: give --tls DIR" in err, err
    assert time.monotonic() - start < 8


def test_a_flood_of_half_open_handshakes_is_bounded(tls_cluster: TLSCluster, words: Path,
                                                    tmp_path: Path) -> None:
    """Connections that start a handshake and never finish it: each port
    keeps at most MAX_HANDSHAKING of them, memory stays bounded, and a job
    runs meanwhile (its connections make room by dropping the oldest)."""
    c = tls_cluster
    ports = _ports(c)
    daemons = [c.jobtracker, c.tasktrackers[0]]
    rss_before = {d.name: psutil.Process(d.pid).memory_info().rss for d in daemons if d}
    flood = MAX_HANDSHAKING + 100
    hello = _client_hello_start()
    sockets = []
    try:
        for port in ports.values():
            for _ in range(flood):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(hello)  # a ClientHello's first bytes, never the rest
                sockets.append(s)
        dropped = wait_for(lambda: sum(1 for s in sockets if _closed(s)) >= 3 * 100
                           or None, 30, "the ports to drop the oldest half-open handshakes")
        assert dropped
        rc, _, err = _submit(c, "alice", words, tmp_path / "out")
        assert rc == 0, err
        assert _read_part_files(tmp_path / "out") == Counter(words.read_text().split())
        for d in daemons:
            assert d is not None
            grown = psutil.Process(d.pid).memory_info().rss - rss_before[d.name]
            assert grown < 64 * 2**20, f"{d.name} grew by {grown} bytes"
    finally:
        for s in sockets:
            s.close()


def _client_hello_start() -> bytes:
    """The first bytes of a real TLS ClientHello (Python's own)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()[:40]


def _closed(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_users_own_their_jobs(tls_cluster: TLSCluster, words: Path, tmp_path: Path) -> None:
    c = tls_cluster
    slow = tmp_path / "slow.py"
    slow.write_text("import time\n\ndef map(key, line):\n    time.sleep(30)\n    yield line, 1\n\n"
                    "def reduce(key, values):\n    yield key, sum(values)\n")
    env = {**c.env, "PYTXMR_PASSWORD": PASSWORDS["alice"]}
    import subprocess
    import sys

    submitter = subprocess.Popen(
        [sys.executable, "-m", "pytxmr", "submit", str(slow), str(words), "-o",
         str(tmp_path / "out"), "--jobtracker", c.address, "--user", "alice", "--tls",
         str(c.pki["client"]), "-q"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        def running() -> str | None:
            rc, out, _ = c.as_user("bob", "jobs")
            lines = [line for line in out.splitlines() if "running" in line and "slow.py" in line]
            return lines[0].split()[0] if lines else None

        job_id = wait_for(lambda: submitter.poll() is None and running() or None, 30,
                          "alice's job to run")
        rc, _, err = c.as_user("bob", "kill", job_id)
        assert rc == 2 and f"job {job_id} belongs to alice" in err, err
        rc, _, err = c.as_user("bob", "logs", job_id)
        assert rc == 2 and "belongs to alice" in err, err
        rc, _, err = c.as_user("alice", "logs", job_id)
        assert rc == 0, err
        rc, out, err = c.as_user("root", "kill", job_id)  # an administrator
        assert rc == 0, err
        assert submitter.wait(30) != 0
    finally:
        if submitter.poll() is None:
            submitter.kill()
        submitter.communicate()


def test_users_replace_only_their_own_outputs(tls_cluster: TLSCluster, words: Path,
                                              tmp_path: Path) -> None:
    """bob's --overwrite emptied alice's finished output (his job's own
    output in its place); it is refused, nothing deleted; alice and an
    administrator may replace it."""
    c, out = tls_cluster, tmp_path / "alices"
    assert _submit(c, "alice", words, out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = _submit(c, "bob", words, out, "--overwrite")
    assert rc == 2 and "it is the output of a job of alice: only they or an administrator" \
        in err and "nothing was deleted" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    for user in ("alice", "root"):
        rc, _, err = _submit(c, user, words, out, "--overwrite")
        assert rc == 0, err
    assert _read_part_files(out) == Counter(words.read_text().split())


def test_wrong_passwords_and_the_secret_are_refused(tls_cluster: TLSCluster) -> None:
    c = tls_cluster
    for name in ("alice", "nobody"):
        rc, _, err = c.as_user(name, "jobs", password="wrong")
        assert rc == 2 and "wrong user name or password" in err, err
    rc, _, err = run_plain_secret(c)
    assert rc == 2 and "this jobtracker has users" in err, err
    # A name no user has, of 70 KB: the jobtracker dropped its login, and
    # the client printed PBConnectionLost's traceback and exited 1.
    rc, _, err = c.as_user("u" * 70000, "jobs", password="x")
    assert rc == 2 and "--user: bad user name 'uuuu" in err and "(70,000 characters)" in err, err
    assert "Traceback" not in err and len(err) < 1000, err
    # A user added while it runs logs in at once (the file is read again).
    rc, _, err = c._users("add", "carol", password="carol-pw")
    assert rc == 0, err
    rc, _, err = c.as_user("carol", "jobs", password="carol-pw")
    assert rc == 0, err


def test_a_broken_or_missing_users_file_is_named_to_client_and_operator(
        tls_cluster: TLSCluster) -> None:
    """Nobody gets in, as before; but a client was told "a malformed login
    (auth_fn exception: no-resources)", or a wrong password, and the
    jobtracker's log said nothing."""
    c = tls_cluster
    assert c.jobtracker is not None
    saved = c.users.read_bytes()
    try:
        c.users.write_text("{ broken")
        rc, _, err = c.as_user("alice", "jobs")
        assert rc == 2, err
        assert f"the jobtracker cannot check logins: the users file {c.users} is not JSON" in err
        c.users.unlink()
        rc, _, err = c.as_user("alice", "jobs")
        assert rc == 2 and f"the users file {c.users} is gone" in err, err
        log = c.jobtracker.log()
        assert "Refused a user login: the jobtracker cannot check logins: the users file" in log
    finally:
        c.users.write_bytes(saved)
        c.users.chmod(0o600)
    rc, _, err = c.as_user("alice", "jobs")
    assert rc == 0, err


def run_plain_secret(c: TLSCluster) -> tuple[int, str, str]:
    from procs import run_cli

    return run_cli("jobs", "--jobtracker", c.address, "--tls", str(c.pki["client"]),
                   "--secret-file", str(c.secret_file), env=c.env, cwd=c.base)


def test_daemons_refuse_unusable_tls_directories(tmp_path: Path, pki: dict[str, Path]) -> None:
    c = Cluster(tmp_path)
    try:
        jt = c.start_jobtracker("--tls", str(pki["expired"]), wait=False)
        wait_for(lambda: jt.proc.poll() is not None or None, 20, "the jobtracker to exit")
        assert jt.proc.returncode == 2
        assert "cert.pem expired on" in jt.log()
        missing = tmp_path / "nothing"
        tt = c._spawn("tt", ["-m", "pytxmr.tasktracker", "--tls", str(missing)], None)
        wait_for(lambda: tt.proc.poll() is not None or None, 20, "the tasktracker to exit")
        assert tt.proc.returncode == 2 and "cannot read" in tt.log() and "ca.pem" in tt.log()
    finally:
        c.stop_all()


def test_without_users_a_job_is_owned_by_the_local_user(cluster: Cluster, words: Path,
                                                        tmp_path: Path) -> None:
    import getpass

    rc, _, err = cluster.submit(WORDCOUNT, [words], tmp_path / "out", "-q")
    assert rc == 0, err
    rc, out, _ = cluster.cli("jobs")
    job_id = out.splitlines()[-1].split()[0]
    rc, out, err = cluster.cli("status", job_id, "--json")
    assert json.loads(out)["owner"] == getpass.getuser()
    # Shown, not proved: its output's mark names no owner, which would bind
    # it to whoever logs in with that name once the cluster has users.
    assert "owner:" not in (tmp_path / "out" / "_PYTXMR_OUTPUT").read_text()


def test_users_file_is_private_and_holds_no_password(tmp_path: Path) -> None:
    from pytxmr.users import UsersError, UsersFile, load_users, make_verifier

    users = UsersFile(str(tmp_path / "u.json"))
    users.put("dave", make_verifier("correct horse", iterations=4096))
    assert os.stat(users.path).st_mode & 0o077 == 0
    assert "correct horse" not in Path(users.path).read_text()
    assert users.get("dave") is not None and not users.get("dave").admin  # type: ignore[union-attr]
    users.remove("dave")
    with pytest.raises(UsersError, match="has no users"):
        load_users(users.path)
    with pytest.raises(UsersError, match="no users file"):
        load_users(str(tmp_path / "missing.json"))
    Path(users.path).write_text("{not json")
    with pytest.raises(UsersError, match="is not JSON"):
        UsersFile(users.path).users()
    with pytest.raises(UsersError, match="bad user name"):
        users.put("../x", make_verifier("p", iterations=4096))


def test_the_python_api_logs_in_as_a_user_over_tls(tls_cluster: TLSCluster,
                                                   tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "api.py"
    script.write_text(
        "import sys, pytxmr\n"
        "for password in ('wrong', sys.argv[3]):\n"
        "    c = pytxmr.Client(sys.argv[1], tls=sys.argv[2], user='alice', password=password)\n"
        "    try:\n"
        "        print('jobs', len(c.jobs()))\n"
        "    except pytxmr.ClusterError as e:\n"
        "        print('refused:', e)\n")
    proc = subprocess.run([sys.executable, str(script), tls_cluster.address,
                           str(tls_cluster.pki["client"]), PASSWORDS["alice"]],
                          capture_output=True, text=True, env=tls_cluster.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "refused: the jobtracker refused the login: wrong user name or password"
    assert second.startswith("jobs ")


def test_adding_a_user_again_changes_the_password_and_keeps_the_role(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`users add ops` of an administrator, without --admin, silently made
    them a user; the output said only "user ops"."""
    from pytxmr.cli import main
    from pytxmr.users import UsersFile

    file = str(tmp_path / "users.json")
    monkeypatch.setenv("PYTXMR_PASSWORD", "first-pw")

    def users(*args: str) -> str:
        assert main(["users", *args, "--file", file]) == 0
        return capsys.readouterr().out

    assert users("add", "ops", "--admin") == f"added administrator ops to {file}\n"
    monkeypatch.setenv("PYTXMR_PASSWORD", "second-pw")
    assert users("add", "ops") == f"changed the password of administrator ops in {file}\n"
    assert UsersFile(file).get("ops").admin  # type: ignore[union-attr]
    assert users("add", "ops", "--no-admin") == (
        f"changed the password of administrator ops in {file}, now user (was administrator)\n")
    assert not UsersFile(file).get("ops").admin  # type: ignore[union-attr]
    assert users("add", "dev") == f"added user dev to {file}\n"


def test_a_tls_tasktracker_cut_off_from_its_jobtracker_stops_on_sigterm(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    """Closing a TLS connection waits for the peer's close_notify: a
    tasktracker cut off from its jobtracker (a partition, here a stopped
    jobtracker) ignored SIGTERM until the network healed, minutes later."""
    import signal

    c = TLSCluster(tmp_path, pki)
    try:
        c.start_jobtracker("--tls", str(pki["host"]), "--users", str(c.users))
        [tt] = c.start_tasktrackers(1, 1, "--tls", str(pki["host"]))
        assert c.jobtracker is not None
        wait_for(lambda: "Registered with the jobtracker" in tt.log(), 30, "the registration")
        c.jobtracker.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            tt.proc.send_signal(signal.SIGTERM)
            assert tt.proc.wait(20) == 0, tt.log()
            assert time.monotonic() - started < 10
        finally:
            c.jobtracker.proc.send_signal(signal.SIGCONT)
    finally:
        c.stop_all()
