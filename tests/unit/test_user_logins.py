"""The server side of a user's login (auth.scram_server): what it tells a
client before the proof."""

from __future__ import annotations

from pathlib import Path

import pytest
from scramp import ScramClient

from pytxmr.auth import decoy_key, scram_server
from pytxmr.users import UsersFile, make_verifier


def _first_answer(users: UsersFile, name: str, secret: bytes = b"s" * 32) -> dict[str, str]:
    first = ScramClient(["SCRAM-SHA-256"], name, "x").get_client_first()
    server, _ = scram_server(users, first, decoy_key(secret))
    fields = dict(f.split("=", 1) for f in server.get_server_first().split(","))
    return {"salt": fields["s"], "rounds": fields["i"]}


@pytest.mark.parametrize("rounds", [4096, 100_000])
def test_an_unknown_name_gets_an_answer_like_a_users(tmp_path: Path, rounds: int) -> None:
    """An unknown name's salt was 16 bytes and its rounds 4096 against a
    user's 32 and 100,000: anyone could tell which names exist, before any
    password. Its salt is the same at each try, as a user's is."""
    users = UsersFile(str(tmp_path / "users.json"))
    users.put("alice", make_verifier("secret", iterations=rounds))
    alice, nobody = _first_answer(users, "alice"), _first_answer(users, "nobody")
    assert nobody["rounds"] == alice["rounds"] == str(rounds)
    assert len(nobody["salt"]) == len(alice["salt"]) and nobody["salt"] != alice["salt"]
    assert _first_answer(users, "nobody") == nobody
    assert _first_answer(users, "alice") == alice
    assert _first_answer(users, "other")["salt"] != nobody["salt"]


def test_an_unknown_names_answer_is_the_same_after_a_restart(tmp_path: Path) -> None:
    """Its salt came from a key made at each start: a user's stayed the same
    across a restart and an unknown name's changed, which told them apart.
    The key is the cluster secret's (and another cluster's differs)."""
    users = UsersFile(str(tmp_path / "users.json"))
    users.put("alice", make_verifier("secret"))
    first = _first_answer(users, "nobody", b"k" * 32)
    assert _first_answer(users, "nobody", b"k" * 32) == first  # a restart
    assert _first_answer(users, "nobody", b"j" * 32)["salt"] != first["salt"]
