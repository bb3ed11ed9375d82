"""Changing a users file (``pytxmr users add`` / ``remove``)."""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
import threading
from pathlib import Path

import pytest

from pytxmr.users import UsersFile, make_verifier


def _users(path: Path) -> UsersFile:
    users = UsersFile(str(path))
    users.put("alice", make_verifier("x", iterations=4096))
    return users


def test_one_change_at_a_time(tmp_path: Path) -> None:
    """Two `users add` at once each wrote back what it had read, and one
    user was lost: a change waits for the one holding the file's lock, then
    reads the file again."""
    path = tmp_path / "users.json"
    _users(path)
    with open(tmp_path / ".users.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        adding = threading.Thread(target=lambda: UsersFile(str(path)).put(
            "bob", make_verifier("y", iterations=4096)))
        adding.start()
        adding.join(0.5)
        assert adding.is_alive(), "it changed the file under another change's lock"
        # The holder's change: the file replaced by one with another user.
        other = _users(tmp_path / "other" / "users.json")
        other.put("carol", make_verifier("z", iterations=4096))
        os.replace(other.path, path)
    adding.join(10)
    assert sorted(UsersFile(str(path)).users()) == ["alice", "bob", "carol"]


def test_a_change_keeps_the_file_s_mode_and_owner(tmp_path: Path) -> None:
    """Root adding a user to the file of a jobtracker run as another user
    made the file root's and 0600: unreadable to that jobtracker."""
    path = tmp_path / "users.json"
    users = _users(path)
    os.chmod(path, 0o640)
    owner = None
    if os.geteuid() == 0:
        owner = pwd.getpwnam("nobody")
        os.chown(path, owner.pw_uid, owner.pw_gid)
    users.put("bob", make_verifier("y", iterations=4096))
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    if owner is not None:
        assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid)
    users.remove("alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(UsersFile(str(path)).users()) == ["bob"]


def test_a_new_file_is_its_owner_s_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.json"
    _users(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_directory_is_a_users_error(tmp_path: Path) -> None:
    from pytxmr.users import UsersError

    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(UsersError, match="cannot change the users file"):
        _users(tmp_path / "ro" / "users.json")


@pytest.mark.parametrize("admin", ['"false"', '0', '"yes"', 'null'])
def test_admin_is_true_or_false_or_the_file_is_refused(tmp_path: Path, admin: str) -> None:
    """A hand-edited "admin": "false" (a string) made an administrator."""
    import json

    from pytxmr.users import UsersError

    path = tmp_path / "users.json"
    _users(path)
    text = path.read_text().replace('"admin": false', f'"admin": {admin}')
    path.write_text(text)
    assert json.loads(text)["users"]["alice"]["admin"] == json.loads(admin)
    with pytest.raises(UsersError, match="alice.* is malformed .*not true or false"):
        UsersFile(str(path)).users()


def test_listing_a_missing_file_is_an_error_and_an_empty_one_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`users list --file` of a mistyped path printed nothing and exited 0,
    as for a file of no users."""
    from pytxmr.cli import main

    missing = tmp_path / "nosuch.json"
    assert main(["users", "list", "--file", str(missing)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"pytxmr: no users file {missing}\n"
    path = tmp_path / "users.json"
    users = _users(path)
    assert main(["users", "list", "--file", str(path)]) == 0
    assert capsys.readouterr().out == "alice\n"
    users.remove("alice")
    assert main(["users", "list", "--file", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"no users in {path}\n"
