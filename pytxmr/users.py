"""The people who may use a cluster: a users file of salted password
hashes (SCRAM-SHA-256 verifiers, through ``scramp``), managed by
``pytxmr users``, read by a jobtracker started with ``--users FILE``.

A verifier is not the password and cannot be replayed as one: a login
proves the password in a SCRAM exchange (``auth``), and the file holds
what checks that proof, as PostgreSQL's ``pg_authid`` does. The file is
read again when it changes, so that adding or removing a user needs no
restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

#: PBKDF2 rounds of a verifier (RFC 7677's minimum is 4096).
ITERATIONS = 100_000
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


class UsersError(Exception):
    """A users file that cannot be read or changed: the message says why."""


@dataclass(frozen=True)
class User:
    """Someone logged in: whose jobs are whose, and who may act on all."""

    name: str
    admin: bool = False

    def may_control(self, owner: str) -> bool:
        """May kill or read the logs of a job of ``owner``."""
        return self.admin or owner == self.name


@dataclass(frozen=True)
class Verifier:
    """What checks a user's SCRAM proof."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int
    admin: bool

    def auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        """As ``scramp``'s server asks for it."""
        return self.salt, self.stored_key, self.server_key, self.iterations


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def check_name(name: str) -> str:
    if not valid_name(name):
        shown = repr(name) if len(name) <= 80 else f"{name[:64]!r}... ({len(name):,} characters)"
        raise UsersError(f"bad user name {shown}: letters, digits and _ . @ -, "
                         f"at most 64, not starting with . @ or -")
    return name


def make_verifier(password: str, admin: bool = False,
                  iterations: int = ITERATIONS) -> Verifier:
    from scramp import ScramMechanism

    if not password:
        raise UsersError("a password must not be empty")
    salt, stored, server, count = ScramMechanism().make_auth_info(password, iterations)
    return Verifier(salt, stored, server, count, admin)


class UsersFile:
    """A users file, read again whenever its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, Verifier] = {}

    def users(self) -> dict[str, Verifier]:
        """Every user; raises UsersError when the file is unreadable or
        malformed (a jobtracker refuses logins then, it lets none in)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise UsersError(f"cannot read the users file {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._users = _parse(self.path)
            self._stamp = stamp
        return self._users

    def get(self, name: str) -> Verifier | None:
        return self.users().get(name)

    def login_verifier(self, name: str) -> Verifier | None:
        """As ``get``, for a login: a file gone is an error, not a file of
        no users (a jobtracker started with it; its operator must hear)."""
        if not os.path.exists(self.path):
            raise UsersError(f"the users file {self.path} is gone")
        return self.get(name)

    def put(self, name: str, verifier: Verifier) -> None:
        check_name(name)
        with self._changing() as users:
            users[name] = verifier

    def remove(self, name: str) -> None:
        with self._changing() as users:
            if users.pop(name, None) is None:
                raise UsersError(f"no user {name!r} in {self.path}")

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Verifier]]:
        """The users to change, then written; one change at a time (two
        `users add` at once each wrote back what it had read: one user
        was lost). The lock is a file beside it, as the file is replaced."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            lock = open(os.path.join(directory, f".{os.path.basename(self.path)}.lock"), "a")
        except OSError as e:
            raise UsersError(f"cannot change the users file {self.path}: {e.strerror}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stamp = None  # read it again: another change may have just landed
            users = dict(self.users())
            yield users
            self._write(users)

    def _write(self, users: dict[str, Verifier]) -> None:
        """Atomically (a reader sees the old file or the new one); a new
        file private to its owner: the verifiers are not passwords, but a
        dictionary attack on them is easier with the file than through
        logins."""
        doc = {"users": {name: {"salt": _b64(v.salt), "stored_key": _b64(v.stored_key),
                                "server_key": _b64(v.server_key), "iterations": v.iterations,
                                "admin": v.admin}
                         for name, v in sorted(users.items())}}
        try:
            old = os.stat(self.path)
        except FileNotFoundError:
            old = None
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".users-")
        except OSError as e:
            raise UsersError(f"cannot write the users file {self.path}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            if old is not None:
                # Its owner and mode stay: root adding a user to the file of
                # a jobtracker run as `pytxmr` made it root's, unreadable to it.
                os.chmod(tmp, stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0:
                    os.chown(tmp, old.st_uid, old.st_gid)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        self._stamp = None


def read_password(name: str, path: str | None = None, *, confirm: bool = False) -> str:
    """A user's password: from ``path`` (its first line), else
    $PYTXMR_PASSWORD, else asked for on the terminal (twice with ``confirm``)."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise UsersError(f"cannot read the password file {path}: {e.strerror}") from None
    elif os.environ.get("PYTXMR_PASSWORD"):
        password = os.environ["PYTXMR_PASSWORD"]
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"Password for {name}: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise UsersError("the passwords differ")
    else:
        raise UsersError(f"no password for {name}: give --password-file or set "
                         f"$PYTXMR_PASSWORD")
    if not password:
        raise UsersError(f"an empty password for {name}")
    return password


def load_users(path: str) -> UsersFile:
    """A jobtracker's ``--users FILE``: it must exist and parse, so that a
    typo in the path does not start a cluster that lets nobody in."""
    users = UsersFile(path)
    if not os.path.exists(users.path):
        raise UsersError(f"no users file {users.path}: make one with "
                         f"'python -m pytxmr users add --file {path} NAME'")
    if not users.users():
        raise UsersError(f"the users file {users.path} has no users")
    return users


def _flag(value: Any) -> bool:
    """A JSON true or false: a hand-edited "false" (a string) made an
    administrator of its user."""
    if not isinstance(value, bool):
        raise TypeError(f"admin is {value!r}, not true or false")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse(path: str) -> dict[str, Verifier]:
    try:
        with open(path, encoding="utf-8") as f:
            doc: Any = json.load(f)
    except OSError as e:
        raise UsersError(f"cannot read the users file {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsersError(f"the users file {path} is not JSON ({e})") from None
    users: dict[str, Verifier] = {}
    entries = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise UsersError(f"the users file {path} has no \"users\" object")
    for name, entry in entries.items():
        try:
            users[check_name(name)] = Verifier(
                base64.b64decode(entry["salt"], validate=True),
                base64.b64decode(entry["stored_key"], validate=True),
                base64.b64decode(entry["server_key"], validate=True),
                int(entry["iterations"]), _flag(entry.get("admin", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise UsersError(f"the users file {path}: user {name!r} is malformed "
                             f"({type(e).__name__}: {e})") from None
    return users
