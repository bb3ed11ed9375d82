"""Fixtures of the integration tests: clusters of real daemon processes
(see procs.py), always stopped at teardown, also when the test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import Cluster
from wordcounts import write_corpus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Twisted trial's tests first (those of tests/component, the web's):
    they run the global reactor themselves, which they cannot once a test
    of the blocking API has started it in a thread (crochet) in the same
    process. A parallel run (pytest-xdist's ``worksteal``) gives the
    first test process the first tests, which it runs first, in this order;
    a process that has run out takes tests from the end of another's, never
    these, which are run by then."""
    from twisted.trial.unittest import SynchronousTestCase

    def is_trial(item: pytest.Item) -> bool:
        cls = getattr(item, "cls", None)
        return cls is not None and issubclass(cls, SynchronousTestCase)

    items.sort(key=lambda item: not is_trial(item))  # stable: otherwise as collected


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Cluster]]:
    """A factory of empty clusters, all stopped at the end of the test."""
    clusters: list[Cluster] = []

    def make() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("cluster"))
        clusters.append(cluster)
        return cluster

    yield make
    failures = []
    for cluster in clusters:  # every cluster is stopped, even if one fails its checks
        try:
            cluster.stop_all()
        except AssertionError as e:
            failures.append(e)
    if failures:
        raise failures[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One jobtracker and two tasktrackers (2 slots each), shared by a module."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_jobtracker()
        c.start_tasktrackers(2)
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few MB of generated words in several files (see wordcounts.write_corpus)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))
