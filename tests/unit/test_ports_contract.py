"""The fakes of ``pytxmr.testing`` keep the contract of the real PB ports:
the same methods, with the same signatures, as the interfaces declare
(Buildbot's ``ConnectionInterfaceTest``). What each delivers over PB is
checked in tests/component/test_pb_adapters.py."""

from __future__ import annotations

import inspect

import pytest
from zope.interface.verify import verifyClass

from pytxmr.jobtracker.pbadapter import PBWorker
from pytxmr.ports import IJobTracker, IWorker
from pytxmr.tasktracker.pbadapter import PBJobTracker
from pytxmr.testing.fakes import FakeJobTracker, FakeWorker

PAIRS = [(IWorker, PBWorker, FakeWorker), (IJobTracker, PBJobTracker, FakeJobTracker)]


@pytest.mark.parametrize("interface, real, fake", PAIRS)
def test_real_and_fake_implement_the_port(interface: object, real: type, fake: type) -> None:
    """Both provide every method the port declares."""
    assert verifyClass(interface, real)
    assert verifyClass(interface, fake)


@pytest.mark.parametrize("interface, real, fake", PAIRS)
def test_the_fake_has_the_real_signatures(interface: object, real: type, fake: type) -> None:
    """A component test that passes against the fake calls the real port the same way."""
    for name in interface.names():  # type: ignore[attr-defined]
        r, f = getattr(real, name, None), getattr(fake, name, None)
        if not callable(r):
            continue
        assert inspect.signature(r) == inspect.signature(f), name
        assert inspect.iscoroutinefunction(r) == inspect.iscoroutinefunction(f), name


@pytest.mark.parametrize("interface, real, fake", PAIRS)
def test_the_port_declares_what_the_real_one_does(interface: object, real: type,
                                                  fake: type) -> None:
    """No call made behind the port's back: the real port's public methods are the port's."""
    public = {n for n, v in vars(real).items() if callable(v) and not n.startswith("_")}
    assert public == set(interface.names()) - {"wid"}  # type: ignore[attr-defined]
