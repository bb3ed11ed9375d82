"""The multi-host tier: a jobtracker and three tasktrackers, each in a
network namespace of its own with its own address on a bridge, started by
their documented commands with no address options (each worker advertises
the address it reaches the jobtracker from), and jobs under partitions and
bad links. Every output is checked against a Counter; every job must end
with exactly one committed part per reduce, within the bound the docs give
(docs/fault-tolerance.md, "Partitions").

Skipped, with the reason, where namespaces cannot be made (not root, no
``ip``). Not part of the fast tier (tests/unit, tests/component).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from procs import ROOT, Cluster
from pytxmr.testing import netns

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

WORDCOUNT = ROOT / "examples" / "wordcount.py"
EXPIRY = "3"
FAST = ("--heartbeat", "0.3")


class NetnsCluster(Cluster):
    """Each daemon in a host of ``network``: the jobtracker on the first,
    tasktracker N on host N+1; the command line runs on the jobtracker's."""

    def __init__(self, base: Path, network: netns.Network,
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__(base)
        self.network = network
        self.extra_env = extra_env or {}

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra_env}

    def host_of(self, name: str) -> netns.Host:
        hosts = self.network.hosts
        if name.startswith("tasktracker"):
            return hosts[int(name.removeprefix("tasktracker").split("-")[0])]
        return hosts[0]

    def command_prefix(self, name: str) -> list[str]:
        return self.host_of(name).run_prefix()

    @property
    def address(self) -> str:
        assert self.jobtracker is not None
        return f"{self.network.hosts[0].address}:{self.jobtracker.ready['port']}"

    def start_jobtracker(self, *extra: str, wait: bool = True,
                         default_workdir: bool = False) -> Any:
        return super().start_jobtracker("--interface", self.network.hosts[0].address,
                                        "--expiry", EXPIRY, *extra, wait=wait)

    def cli(self, *args: str, timeout: float = 300,
            secret_file: Path | None | str = "default") -> tuple[int, str, str]:
        proc = subprocess.run([*self.network.hosts[0].run_prefix(), sys.executable, "-m",
                               "pytxmr", *args, *self.client_args(secret_file)],
                              capture_output=True, text=True, env=self.env, cwd=self.base,
                              timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    network = netns.Network(4)
    c = NetnsCluster(tmp_path, network)
    try:
        c.start_jobtracker()
        c.start_tasktrackers(3, 2, *FAST)
        yield c
    finally:
        try:
            c.stop_all()
        finally:
            network.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Counter[str]]:
    rng = random.Random(13)
    words = [f"w{i}" for i in range(3000)]
    base = tmp_path_factory.mktemp("netns-corpus")
    paths, counts = [], Counter[str]()
    for n in range(6):
        text = "".join(" ".join(rng.choices(words, k=12)) + "\n" for _ in range(30_000))
        path = base / f"part{n}.txt"
        path.write_text(text)
        counts.update(text.split())
        paths.append(path)
    return paths, counts


def run_job(c: NetnsCluster, inputs: Sequence[Path], out: Path,
            *extra: str, job: Path = WORDCOUNT) -> tuple[float, str]:
    t0 = time.monotonic()
    rc, stdout, stderr = c.submit(job, inputs, out, "--reducers", "3",
                                  "--split-size", "512K", *extra)
    elapsed = time.monotonic() - t0
    assert rc == 0, f"{stdout}\n{stderr}\n{c.logs()}"
    return elapsed, stdout


def check(out: Path, expected: Counter[str]) -> None:
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == ["part-00000", "part-00001", "part-00002"], parts
    got: Counter[str] = Counter()
    for p in out.glob("part-*"):
        for line in p.read_text().splitlines():
            word, n = line.split("\t")
            assert word not in got, f"{word} in two parts"
            got[word] = int(n)
    assert got == expected


def test_a_job_across_hosts_with_default_addresses(cluster: NetnsCluster, corpus: Any,
                                                   tmp_path: Path) -> None:
    inputs, expected = corpus
    elapsed, _ = run_job(cluster, inputs, tmp_path / "out")
    check(tmp_path / "out", expected)
    for n, tt in enumerate(cluster.tasktrackers, 1):
        address = cluster.network.hosts[n].address
        assert f"advertised as {address}" in tt.log(), tt.log()
    print(f"\nwordcount across 3 namespaced hosts: {elapsed:.2f}s")


def test_a_shuffle_only_partition_costs_seconds(cluster: NetnsCluster, corpus: Any,
                                                tmp_path: Path) -> None:
    """Workers 2 and 3 cannot reach each other (their frames are dropped,
    silently) while both keep their PB connections: their map outputs are
    reported unfetchable and run again where they can be fetched."""
    inputs, expected = corpus
    hosts = cluster.network.hosts
    cluster.network.drop_between(hosts[2], hosts[3])
    elapsed, _ = run_job(cluster, inputs, tmp_path / "out")
    check(tmp_path / "out", expected)
    # 4 x 5 s connects + 1.4 s of backoff to the first report, then a try
    # every 2 s + 5 s: the bound of docs/fault-tolerance.md, and margin.
    assert elapsed < 60, elapsed
    print(f"\nshuffle-only partition: {elapsed:.2f}s")


def _during_maps(c: NetnsCluster, action: Any) -> threading.Thread:
    """Run ``action`` once the jobtracker logs a submission."""
    def watch() -> None:
        assert c.jobtracker is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "submitted" not in c.jobtracker.log():
            time.sleep(0.05)
        time.sleep(0.3)
        action()
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


#: Word count whose every map task takes a second at least: the maps are
#: still running when a test cuts a worker off 0.3 s after the submission
#: (the plain word count can be done by then).
SLOW_MAPS = """
import time
from pytxmr import combiners

def map_init():
    time.sleep(1)

def map(offset, line):
    for word in line.split():
        yield word, 1

combine = combiners.sum

def reduce(word, counts):
    yield word, sum(counts)
"""


@pytest.mark.parametrize("how", ["link down", "silent drop"])
def test_a_worker_cut_off_during_the_maps_then_healed(cluster: NetnsCluster, corpus: Any,
                                                      tmp_path: Path, how: str) -> None:
    inputs, expected = corpus
    job = tmp_path / "slow_maps.py"
    job.write_text(SLOW_MAPS)
    net = cluster.network
    victim = net.hosts[3]
    cut, heal = (net.cut, net.heal) if how == "link down" else (net.isolate, net.rejoin)
    watcher = _during_maps(cluster, lambda: cut(victim))
    try:
        elapsed, _ = run_job(cluster, inputs, tmp_path / "out", job=job)
    finally:
        watcher.join(5)
        heal(victim)
    check(tmp_path / "out", expected)
    assert cluster.jobtracker is not None
    log = cluster.jobtracker.log()
    assert "missed heartbeats" in log
    # Healed, the worker logs in again as a new incarnation.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "Tasktracker w4 joined" not in cluster.jobtracker.log():
        time.sleep(0.2)
    assert "Tasktracker w4 joined" in cluster.jobtracker.log()
    print(f"\nworker cut off ({how}) during the maps: {elapsed:.2f}s")


SLOW_REDUCE = """
import time
from pytxmr import combiners

def map(offset, line):
    for word in line.split():
        yield word, 1

combine = combiners.sum

def reduce_init():
    time.sleep(2)

def reduce(word, counts):
    yield word, sum(counts)
"""


def test_a_worker_cut_off_during_the_shuffle_then_healed(cluster: NetnsCluster, corpus: Any,
                                                        tmp_path: Path) -> None:
    """The maps are done and the reduces fetching or sleeping when one
    worker goes: its reduces and its map outputs are made again elsewhere."""
    inputs, expected = corpus
    job = tmp_path / "slow_reduce.py"
    job.write_text(SLOW_REDUCE)
    net = cluster.network
    victim = net.hosts[2]

    def cut() -> None:
        time.sleep(1.0)  # past the maps (about a second): in the reduces' fetch and sleep
        net.cut(victim)

    watcher = _during_maps(cluster, cut)
    try:
        t0 = time.monotonic()
        rc, stdout, stderr = cluster.submit(job, inputs, tmp_path / "out", "--reducers", "3",
                                            "--split-size", "512K")
        elapsed = time.monotonic() - t0
        assert rc == 0, f"{stdout}\n{stderr}\n{cluster.logs()}"
    finally:
        watcher.join(5)
        net.heal(victim)
    check(tmp_path / "out", expected)
    assert cluster.jobtracker is not None and "missed heartbeats" in cluster.jobtracker.log()
    print(f"\nworker cut off during the shuffle: {elapsed:.2f}s")


def test_a_slow_link_on_one_worker(cluster: NetnsCluster, corpus: Any, tmp_path: Path) -> None:
    inputs, expected = corpus
    cluster.network.slow(cluster.network.hosts[2], "4mbit")
    elapsed, _ = run_job(cluster, inputs, tmp_path / "out")
    check(tmp_path / "out", expected)
    print(f"\none worker on a 4 Mbit/s link: {elapsed:.2f}s")


def test_tls_across_hosts(tmp_path: Path, corpus: Any) -> None:
    """Each host with its own certificate, for its own address only: the
    jobtracker's check of each worker's shuffle server and every reducer's
    fetch match the certificate to the host, across the bridge."""
    from pytxmr.tls import make_certs

    network = netns.Network(4)
    c = NetnsCluster(tmp_path, network)
    pki = tmp_path / "pki"
    make_certs(str(pki), [[h.address] for h in network.hosts])
    try:
        c.start_jobtracker("--tls", str(pki / network.hosts[0].address))
        for host in network.hosts[1:]:
            c.start_tasktracker(2, *FAST, "--tls", str(pki / host.address), wait=False)
        for tt in c.tasktrackers:
            tt.wait_ready()
        inputs, expected = corpus
        elapsed, _ = run_job(c, inputs, tmp_path / "out", "--tls", str(pki / "client"))
        check(tmp_path / "out", expected)
        print(f"\nwordcount across 3 namespaced hosts over TLS: {elapsed:.2f}s")
    finally:
        try:
            c.stop_all()
        finally:
            network.close()


def test_inputs_and_outputs_on_s3_across_hosts(tmp_path: Path, corpus: Any) -> None:
    """The S3 server on the jobtracker's host, at its address: the workers
    read the splits and commit the part files across the bridge; nothing
    goes through the shared file system."""
    from pytxmr.testing import objectstore

    ok, why = objectstore.available()
    if not ok:
        pytest.skip(why)
    network = netns.Network(4)
    store_host = network.hosts[0]
    s3 = objectstore.SeaweedS3(tmp_path / "s3", host=store_host.address)
    try:
        with network.entered(store_host):
            s3.start()
            s3.make_bucket("data")
            inputs, expected = corpus
            for path in inputs:
                status, body = s3.request("PUT", f"/data/in/{path.name}", path.read_bytes())
                assert status == 200, body
        c = NetnsCluster(tmp_path / "cluster", network, s3.env())
        try:
            c.start_jobtracker()
            c.start_tasktrackers(3, 2, *FAST)
            t0 = time.monotonic()
            rc, stdout, stderr = c.submit(WORDCOUNT, ["s3://data/in/part*.txt"], "s3://data/out",
                                          "--reducers", "3", "--split-size", "512K")
            assert rc == 0, f"{stdout}\n{stderr}\n{c.logs()}"
            elapsed = time.monotonic() - t0
        finally:
            c.stop_all()
        got: Counter[str] = Counter()
        with network.entered(store_host):
            assert s3.request("GET", "/data/out/_SUCCESS")[0] == 200
            for n in range(3):
                status, body = s3.request("GET", f"/data/out/part-{n:05d}")
                assert status == 200, body
                for line in body.decode().splitlines():
                    word, count = line.split("\t")
                    assert word not in got
                    got[word] = int(count)
            assert s3.request("GET", "/data/out/part-00003")[0] == 404
        assert got == expected
        print(f"\nwordcount across 3 namespaced hosts, S3 in and out: {elapsed:.2f}s")
    finally:
        with network.entered(store_host):
            s3.stop()
        network.close()
