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
from twisted.spread import pb
from zope.interface import implementer

from .wire import ROLE_CLIENT, ROLE_TASKTRACKER


class LoginRefused(Exception):
    """The jobtracker refused our login: wrong cluster secret."""


@implementer(ICredentialsChecker)
class SecretChecker:
    credentialInterfaces = (credentials.IUsernameHashedPassword,)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        if creds.username in (ROLE_TASKTRACKER, ROLE_CLIENT) and creds.checkPassword(self._secret):
            return defer.succeed(creds.username)
        return defer.fail(error.UnauthorizedLogin("wrong cluster secret"))


async def login(factory: pb.PBClientFactory, role: bytes, secret: bytes, mind: Any = None) -> Any:
    """Log in on a connected (or connecting) PB factory; the perspective.

    The caller must keep a reference to the perspective: once it is garbage
    collected, the jobtracker logs the session out.
    """
    try:
        return await factory.login(credentials.UsernamePassword(role, secret), client=mind)
    except error.UnauthorizedLogin:
        raise LoginRefused(
            "the jobtracker refused the login: wrong cluster secret "
            "(check --secret-file / $PYTXMR_SECRET)"
        ) from None
