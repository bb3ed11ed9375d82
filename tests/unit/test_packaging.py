"""The installed package as pyproject.toml declares it: one version, and an
editable install that still imports this package beside a clone named
``pytxmr`` (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import pytxmr


def _installed_version() -> str:
    try:
        return metadata.version("pytxmr")
    except metadata.PackageNotFoundError:
        pytest.skip("pytxmr is not installed (pip install -e '.[test]')")


def test_the_version_is_the_installed_distributions() -> None:
    """``pytxmr.__version__`` is the one version: the metadata is built from it
    (a mismatch means a stale install: pip install -e . again)."""
    assert _installed_version() == pytxmr.__version__


_PROBE = """
import json, os, pytxmr, pytxmr.child
print(json.dumps([pytxmr.__file__, pytxmr.__version__,
                  pytxmr.child.child_env()["PYTHONPATH"].split(os.pathsep)[0]]))
"""


def test_the_package_is_found_from_the_folder_above_a_clone(tmp_path: Path) -> None:
    """``python -m`` puts the current directory first on sys.path, where a
    clone named ``pytxmr`` is a namespace package: the installed package
    must win over it, or ``pytxmr.__file__`` is None and the task children
    get no path to it."""
    _installed_version()
    clone = tmp_path / "pytxmr"
    clone.mkdir()
    (clone / "setup.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the install alone
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    init, version, child_path = json.loads(out.stdout)
    assert init is not None, "pytxmr was imported as a namespace package"
    assert Path(init).name == "__init__.py" and version == pytxmr.__version__
    assert Path(child_path) == Path(init).parent.parent
