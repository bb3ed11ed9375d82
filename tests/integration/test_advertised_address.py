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



def test_an_address_of_another_server_is_refused_at_registration(tmp_path: Path) -> None:
    """Listening on 127.0.0.2, advertised as 127.0.0.1 at the port of the
    jobtracker, or of another tasktracker's shuffle server: both were taken
    (any server that completed a connection would do), and reducers failed
    their fetches there, or fetched the other worker's outputs."""
    c = Cluster(tmp_path)
    try:
        c.start_jobtracker()
        assert c.jobtracker is not None
        first = c.start_tasktracker(1)
        taken = {"the jobtracker's PB port": c.jobtracker.ready["port"],
                 "another tasktracker's": first.wait_ready()["shuffle_port"]}
        for what, port in taken.items():
            tt = c.start_tasktracker(1, "--advertise-host", "127.0.0.1", "--shuffle-interface",
                                     "127.0.0.2", "--shuffle-port", str(port), wait=False)
            wait_for(lambda: tt.proc.poll() is not None or None, 30,
                     f"the tasktracker advertising {what} to exit")
            log = tt.log()
            assert f"advertises its shuffle server as 127.0.0.1:{port}, " in log, log
            assert ("is not a pytxmr shuffle server" if "PB" in what
                    else "which the live tasktracker w1 advertises already") in log, log
        assert c.jobtracker.log().count("joined") == 1
    finally:
        c.stop_all()
