"""Every command of the README's table of examples runs as shown, on the
embedded cluster of ``python -m pytxmr run`` (output redirected into the
test's directory), and writes a finished output. What each computes is
checked against independent computations in tests/unit/test_examples.py
and tests/integration/test_authoring.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from procs import ROOT, base_env, run_cli


def table_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^\| [^|]+\|[^|]+\| `(python -m pytxmr run [^`]+)` \|$", readme, re.M)


def test_the_readme_lists_every_example() -> None:
    listed = {shlex.split(c)[4] for c in table_commands() if "--mapper" not in c}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.py")
               if p.name != "textnorm.py"}
    assert listed == on_disk


@pytest.mark.parametrize("command", table_commands())
def test_a_readme_command_runs_as_shown(command: str, tmp_path: Path) -> None:
    args = shlex.split(command)[3:]
    out = args.index("-o") + 1
    args[out] = str(tmp_path / "out")
    rc, stdout, stderr = run_cli(*args, env=base_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert rc == 0, stdout + stderr
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert list((tmp_path / "out").glob("part-*"))
