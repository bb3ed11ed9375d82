"""The cluster secret: where it comes from, and creating it on first start.

Every PB login (tasktrackers and submitters) proves knowledge of one shared
secret. On one host nothing needs setting up: the jobtracker creates
``~/.pytxmr/cluster-secret`` (readable by its owner only) on first start, and
local tasktrackers and clients read it, like Erlang's cookie. Across hosts
the user copies the file and points ``--secret-file`` at it, or puts the
secret itself (not a path) in ``$PYTXMR_SECRET``.
"""

from __future__ import annotations

import os
import secrets

ENV = "PYTXMR_SECRET"


class SecretError(Exception):
    """No usable secret: the message tells the user what to do."""


def default_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".pytxmr", "cluster-secret")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            value = f.read().strip()
    except OSError as e:
        raise SecretError(f"cannot read the cluster secret file {path}: {e.strerror}") from None
    if not value:
        raise SecretError(f"the cluster secret file {path} is empty")
    return value


def load_secret(secret_file: str | None = None, *, create: bool = False) -> bytes:
    """The secret from ``secret_file``, else ``$PYTXMR_SECRET``, else the
    default file (created when ``create``: the jobtracker's first start)."""
    if secret_file:
        return _read(secret_file)
    env = os.environ.get(ENV, "").strip()
    if env:
        return env.encode("utf-8")
    path = default_path()
    if not os.path.exists(path):
        if not create:
            raise SecretError(
                f"no cluster secret: none given with --secret-file or ${ENV}, and {path} "
                "does not exist (a jobtracker started on this host creates it; on another "
                "host copy it here or pass --secret-file)"
            )
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return _read(path)
