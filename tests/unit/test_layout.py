"""The architecture's direction: pure modules never import Twisted (the
daemons import them), no two modules of the package import each other, and
every directory of the package is a package that an install ships."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pytest

import pytxmr

PACKAGE_DIR = Path(pytxmr.__file__).resolve().parent

#: Logic that task children and tests use without a reactor; each is imported
#: in a fresh interpreter, so nothing imported earlier can hide a dependency.
PURE_MODULES = [
    "storage",
    "rangereader",
    "objectoutput",
    "outputrules",
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
    "combiners",
    "reducers",
    "scheduler",
    "kvstore",
    "trees",
    "task",
    "inline",
    "shufflememory",
    "zygote",
    "views",
    "pages",
    "tasklog",
    "secret",
    "wire",
    "ports",
    "jobtracker.submission",
    "jobtracker.job",
    "jobtracker.heartbeats",
    "testing.fakes",
]

#: The daemons' logic: Twisted's reactor and clock, never PB (which stays in
#: their ``pbadapter``s, behind the ports of ``pytxmr.ports``).
LOGIC_MODULES = [
    "jobtracker.tracker",
    "jobtracker.admission",
    "jobtracker.runninglogs",
    "tasktracker.worker",
    "tasktracker.fetch",
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
        for name in PURE_MODULES + LOGIC_MODULES
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


@pytest.mark.parametrize("name", LOGIC_MODULES)
def test_daemon_logic_does_not_import_pb(name: str, twisted_imports: dict[str, list[str]]) -> None:
    """The logic talks to peers through ports: PB and twisted.cred stay in the adapters."""
    wire = [m for m in twisted_imports[name] if m.startswith(("twisted.spread", "twisted.cred"))]
    assert wire == [], f"pytxmr.{name} pulls in {wire[:5]}"


def test_the_check_does_see_twisted_when_it_is_imported() -> None:
    """Guard against a check that can never fail: a daemon module does import Twisted."""
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, "pytxmr.jobtracker.pbadapter"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "twisted" in json.loads(out) and "twisted.spread.pb" in json.loads(out)


# --- the import graph -------------------------------------------------------------------


def _modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under package_dir, by dotted name."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(nodes: Iterable[ast.AST], package: str, modules: dict[str, Path]) -> set[str]:
    """The modules that the import statements among nodes name, at any depth
    (module level and inside functions), except under ``if TYPE_CHECKING:``,
    which never runs."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            found |= _imported(node.orelse, package, modules)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import name``: the submodule pkg.name if there is one, else pkg.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names)
        else:
            found |= _imported(ast.iter_child_nodes(node), package, modules)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Which of the package's modules each of its modules imports, read from
    the source (no import runs)."""
    modules = _modules(package_dir)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = (_imported([tree], package, modules) & modules.keys()) - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle through each module that is on one, each cycle
    once, starting from its smallest name."""
    cycles = set()
    for start in graph:
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycle = path[::-1]
                first = cycle.index(min(cycle))
                cycles.add(tuple(cycle[first:] + cycle[:first]))
                break
            for nxt in sorted(graph[node] - came_from.keys() - {start}):
                came_from[nxt] = node
                queue.append(nxt)
    return sorted(list(c) for c in cycles)


def test_the_package_has_no_import_cycles() -> None:
    """A cycle makes import order matter (a half-initialised module) and ties
    two rooms into one: each module must be importable on its own."""
    cycles = import_cycles(import_graph(PACKAGE_DIR))
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join([*c, c[0]]) for c in cycles)


def test_the_cycle_check_sees_cycles(tmp_path: Path) -> None:
    """Guard against a check that can never fail: a function-level import
    closes a cycle, an import under TYPE_CHECKING does not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")
    (pkg / "a.py").write_text("import pkg.b\nfrom .sub import name\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import d\n")
    (pkg / "sub" / "d.py").write_text("from ..a import name\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg import a\n"
                              "else:\n    from . import b\n")
    graph = import_graph(pkg)
    assert graph["pkg.c"] == {"pkg.b"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.d"],
                                    ["pkg.a", "pkg.sub"]]


def test_every_directory_of_the_package_is_a_regular_package() -> None:
    """pyproject.toml finds packages by their __init__.py: a directory of
    modules without one would work from the source tree and be missing from
    an installed wheel."""
    missing = [str(d.relative_to(PACKAGE_DIR.parent)) for d in [PACKAGE_DIR, *PACKAGE_DIR.rglob("*")]
               if d.is_dir() and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert missing == []
