"""twisted.cred for PB logins: the cluster secret, and users.

The jobtracker's portal checks PB's challenge-response credentials (the
secret never crosses the wire) against the cluster secret; the login name
picks the role (tasktracker or client). With a users file (``users``),
people log in by name and password instead, in a SCRAM-SHA-256 exchange
(``scramp``): neither the password nor anything that could stand in for
it crosses the wire, and each side proves it knows the verifier, so that
a client also knows it reached the jobtracker that has its user. Clients
turn a refused login into an error that says what to fix.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import Interface, implementer

from .users import ITERATIONS, UsersError, UsersFile
from .wire import ROLE_CLIENT, ROLE_TASKTRACKER

#: The avatar ids of users: this prefix and the name.
USER_PREFIX = b"user:"


class LoginRefused(Exception):
    """The jobtracker refused our login: wrong cluster secret."""


class UsersOnly(error.UnauthorizedLogin, pb.Error):
    """A client login with the cluster secret where users must log in."""


class WrongPassword(error.UnauthorizedLogin, pb.Error):
    """A user login that failed: an unknown user or a wrong password (the
    same answer for both)."""


class NoUsers(pb.Error):
    """A user login at a jobtracker without a users file."""


class WrongSecret(error.UnauthorizedLogin, pb.Error):
    """A login with a wrong secret. A ``pb.Error``, so that PB sends it to
    the peer without logging a traceback for each refused attempt."""


class NoCertificate(error.UnauthorizedLogin, pb.Error):
    """A tasktracker login without a client certificate on a TLS port."""


#: How a refused login arrives at the client: PB turns the server's
#: exception into a ``RemoteError`` that only carries the class name.
_REFUSED_TYPES = (b"pytxmr.auth.WrongSecret", b"twisted.cred.error.UnauthorizedLogin")


@implementer(ICredentialsChecker)
class SecretChecker:
    credentialInterfaces = (credentials.IUsernameHashedPassword,)
    log = Logger()

    def __init__(self, secret: bytes, clients: bool = True) -> None:
        self._secret = secret
        #: Whether clients may log in with the secret (not when there are users).
        self._clients = clients

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        if creds.username in (ROLE_TASKTRACKER, ROLE_CLIENT) and creds.checkPassword(self._secret):
            if creds.username == ROLE_CLIENT and not self._clients:
                self.log.warn("Refused a client login with the cluster secret: this "
                              "jobtracker has users")
                return defer.fail(UsersOnly("this jobtracker has users: log in as one "
                                            "(--user NAME, password in $PYTXMR_PASSWORD "
                                            "or asked for)"))
            return defer.succeed(creds.username)
        self.log.warn("Refused a {role} login: wrong cluster secret",
                      role=creds.username.decode("ascii", "replace"))
        return defer.fail(WrongSecret("wrong cluster secret"))


@implementer(ICredentialsChecker)
class AnonymousRefused:
    """PB's ``loginAnonymous``: refused with one log line, instead of an
    unhandled-credentials traceback per attempt."""

    credentialInterfaces = (credentials.IAnonymous,)
    log = Logger()

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        self.log.warn("Refused an anonymous login")
        return defer.fail(WrongSecret("log in with the cluster secret"))


class IScramProof(Interface):
    """Credentials: the last message of a user's SCRAM exchange."""


@implementer(IScramProof)
class ScramProof:
    """A user's proof, with the server side of its exchange (which checks
    it, and then has the server's own proof for the client)."""

    def __init__(self, name: str, server: Any, client_final: str) -> None:
        self.name = name
        self.server = server
        self.client_final = client_final
        self.server_final: str | None = None


@implementer(ICredentialsChecker)
class UsersChecker:
    credentialInterfaces = (IScramProof,)
    log = Logger()

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        from scramp import ScramException

        try:
            creds.server.set_client_final(creds.client_final)
            creds.server_final = creds.server.get_server_final()
        except ScramException:
            self.log.warn("Refused the login of user {name!r}: wrong user name or password",
                          name=creds.name[:64])
            return defer.fail(WrongPassword("wrong user name or password"))
        return defer.succeed(USER_PREFIX + creds.name.encode("utf-8"))


def scram_server(users: UsersFile, client_first: str, decoy_key: bytes) -> tuple[Any, str]:
    """The server side of a SCRAM exchange, given the client's first message;
    and its name for the user. An unknown user gets a made-up verifier (from
    ``decoy_key``, the same at every start of the jobtracker: one per
    process told names apart across a restart, the unknown ones' salts
    changing), so that the exchange fails only at the proof, as for a
    wrong password: names cannot be probed."""
    from scramp import ScramException, ScramMechanism

    mechanism = ScramMechanism()
    names: list[str] = []
    broken: list[UsersError] = []

    def auth_info(name: str) -> tuple[bytes, bytes, bytes, int]:
        names.append(name)
        try:
            verifier = users.login_verifier(name)
        except UsersError as e:
            broken.append(e)  # scramp wraps what this raises: told below
            raise
        if verifier is not None:
            return verifier.auth_info()
        # The decoy looks as a user of this file looks (its salt's length,
        # its rounds; 16 bytes and 4096 against 32 and 100,000 told names
        # apart), its salt the same at every try, and costs no PBKDF2.
        like = next(iter(users.users().values()), None)
        size, rounds = (len(like.salt), like.iterations) if like else (32, ITERATIONS)
        salt = hashlib.shake_256(decoy_key + name.encode("utf-8")).digest(size)
        return salt, os.urandom(32), os.urandom(32), rounds

    server = mechanism.make_server(auth_info)
    try:
        server.set_client_first(client_first)
    except ScramException as e:
        if broken:
            raise NoUsers(f"the jobtracker cannot check logins: {broken[0]}") from None
        raise WrongPassword(f"a malformed login ({e})") from None
    return server, names[0] if names else ""


def decoy_key(secret: bytes) -> bytes:
    """``scram_server``'s key, kept as the cluster secret is (and telling
    nothing of it)."""
    return hmac.new(secret, b"pytxmr: the salts of unknown user names", "sha256").digest()


async def user_login(factory: pb.PBClientFactory, name: str, password: str,
                     mind: Any = None) -> Any:
    """Log in as a user (``users``); the perspective, as ``login``'s."""
    from scramp import ScramClient, ScramException

    client = ScramClient(["SCRAM-SHA-256"], name, password)
    try:
        root = await factory.getRootObject()
        server_first, challenger = await root.callRemote("user_login", client.get_client_first())
        client.set_server_first(server_first)
        server_final, perspective = await challenger.callRemote(
            "finish", client.get_client_final(), mind)
        client.set_server_final(server_final)
    except pb.RemoteError as e:
        if e.remoteType in (b"pytxmr.auth.WrongPassword", b"pytxmr.auth.NoUsers"):
            raise LoginRefused(f"the jobtracker refused the login: {e}") from None
        raise
    except ScramException as e:
        raise LoginRefused(f"the jobtracker's answer to our login is not its users' "
                           f"({e}): is it the jobtracker you meant?") from None
    return perspective


async def login(factory: pb.PBClientFactory, role: bytes, secret: bytes, mind: Any = None) -> Any:
    """Log in on a connected (or connecting) PB factory; the perspective.

    The caller must keep a reference to the perspective: once it is garbage
    collected, the jobtracker logs the session out.
    """
    try:
        return await factory.login(credentials.UsernamePassword(role, secret), client=mind)
    except (error.UnauthorizedLogin, pb.RemoteError) as e:
        if isinstance(e, pb.RemoteError) and e.remoteType in (b"pytxmr.auth.NoCertificate",
                                                             b"pytxmr.auth.UsersOnly"):
            raise LoginRefused(f"the jobtracker refused the login: {e}") from None
        if isinstance(e, pb.RemoteError) and e.remoteType not in _REFUSED_TYPES:
            raise
        raise LoginRefused(
            "the jobtracker refused the login: wrong cluster secret "
            "(check --secret-file / $PYTXMR_SECRET)"
        ) from None
