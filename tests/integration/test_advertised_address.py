"""Addresses that work by default: a tasktracker advertises (and its
shuffle server listens on) the address it reaches the jobtracker from, and
the jobtracker refuses a worker whose advertised shuffle server it cannot
reach, with a message that says what to do."""

from __future__ import annotations

import socket
from pathlib import Path

from procs import Cluster, wait_for


def test_a_default_tasktracker_listens_where_it_advertises(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        tt = c.start_tasktracker(1)
        port = tt.wait_ready()["shuffle_port"]
        rc, out, err = c.cli("jobs")
        assert rc == 0, err
        assert f"listening on 127.0.0.1:{port}, advertised as 127.0.0.1" in tt.log()
        # Not on every interface: 127.0.0.2 (also loopback) gets no answer.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.2", port)) != 0
        data = tmp_path / "in.txt"
        data.write_text("a b a\n")
        rc, _, err = c.submit(Path(__file__).resolve().parents[2] / "examples" / "wordcount.py",
                              [data], tmp_path / "out")
        assert rc == 0, err
    finally:
        c.stop_all()


def test_an_unreachable_advertised_address_is_refused_at_registration(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        tt = c.start_tasktracker(1, "--advertise-host", "127.0.0.2",
                                 "--shuffle-interface", "127.0.0.1", wait=False)
        wait_for(lambda: tt.proc.poll() is not None or None, 30, "the refused tasktracker exits")
        assert tt.proc.returncode != 0
        log = tt.log()
        assert "advertises its shuffle server as 127.0.0.2:" in log, log
        assert "--advertise-host" in log
        assert c.jobtracker is not None and "joined" not in c.jobtracker.log()
    finally:
        c.stop_all()

