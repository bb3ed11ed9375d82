"""The architecture's direction: pure modules never import Twisted (the daemons import them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Logic that task children and tests use without a reactor; each is imported
#: in a fresh interpreter, so nothing imported earlier can hide a dependency.
PURE_MODULES = [
    "splits",
    "readers",
    "sizes",
    "records",
    "keys",
    "partition",
    "merge",
    "mapper",
    "reducer",
    "output",
    "jobmodule",
    "counters",
    "scheduler",
    "kvstore",
    "task",
    "inline",
    "shufflememory",
]

_CHECK = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m == "twisted" or m.startswith("twisted."))))
"""


@pytest.fixture(scope="module")
def twisted_imports() -> dict[str, list[str]]:
    """Run every check at once (one interpreter per module, in parallel)."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _CHECK, f"pytxmr.{name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in PURE_MODULES
    }
    results: dict[str, list[str]] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"importing pytxmr.{name} failed:\n{err}"
            results[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_module_does_not_import_twisted(name: str, twisted_imports: dict[str, list[str]]) -> None:
    """Task children pay for every import at start-up, and pure logic must stay testable without a reactor."""
    assert twisted_imports[name] == [], f"pytxmr.{name} pulls in {twisted_imports[name][:5]}"


def test_the_check_does_see_twisted_when_it_is_imported() -> None:
    """Guard against a check that can never fail: a daemon module does import Twisted."""
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, "pytxmr.jobtracker"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "twisted" in json.loads(out)
