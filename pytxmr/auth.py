"""twisted.cred for PB logins: one cluster secret, two roles.

The jobtracker's portal checks PB's challenge-response credentials (the
secret never crosses the wire) against the cluster secret; the login name
picks the role (tasktracker or client). Clients turn a refused login into
an error that says what to fix.
"""

from __future__ import annotations

from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from .wire import ROLE_CLIENT, ROLE_TASKTRACKER


class LoginRefused(Exception):
    """The jobtracker refused our login: wrong cluster secret."""


class WrongSecret(error.UnauthorizedLogin, pb.Error):
    """A login with a wrong secret. A ``pb.Error``, so that PB sends it to
    the peer without logging a traceback for each refused attempt."""


#: How a refused login arrives at the client: PB turns the server's
#: exception into a ``RemoteError`` that only carries the class name.
_REFUSED_TYPES = (b"pytxmr.auth.WrongSecret", b"twisted.cred.error.UnauthorizedLogin")


@implementer(ICredentialsChecker)
class SecretChecker:
    credentialInterfaces = (credentials.IUsernameHashedPassword,)
    log = Logger()

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        if creds.username in (ROLE_TASKTRACKER, ROLE_CLIENT) and creds.checkPassword(self._secret):
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


async def login(factory: pb.PBClientFactory, role: bytes, secret: bytes, mind: Any = None) -> Any:
    """Log in on a connected (or connecting) PB factory; the perspective.

    The caller must keep a reference to the perspective: once it is garbage
    collected, the jobtracker logs the session out.
    """
    try:
        return await factory.login(credentials.UsernamePassword(role, secret), client=mind)
    except (error.UnauthorizedLogin, pb.RemoteError) as e:
        if isinstance(e, pb.RemoteError) and e.remoteType not in _REFUSED_TYPES:
            raise
        raise LoginRefused(
            "the jobtracker refused the login: wrong cluster secret "
            "(check --secret-file / $PYTXMR_SECRET)"
        ) from None
