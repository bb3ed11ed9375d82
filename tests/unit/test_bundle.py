"""The bundle of a job's shipped code and files: what is found, how it is
named and checked, and how a daemon stores and unpacks it."""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

from pytxmr import bundle
from pytxmr.bundle import BundleError, BundleStore


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def job(tmp_path: Path) -> Path:
    write(tmp_path / "helper.py", "import shared\nWORDS = {'a'}\n")
    write(tmp_path / "shared.py", "X = 1\n")
    write(tmp_path / "pkg" / "__init__.py", "from pkg.inner import f\n")
    write(tmp_path / "pkg" / "inner.py", "def f():\n    return 2\n")
    write(tmp_path / "pkg" / "table.csv", "a,b\n")
    write(tmp_path / "unused.py", "raise RuntimeError('never shipped')\n")
    return write(tmp_path / "job.py", (
        "import os, json\n"
        "import helper\n"
        "def map(k, v):\n"
        "    from pkg import inner\n"
        "    yield k, v\n"
        "try:\n    import not_here\nexcept ImportError:\n    pass\n"))


def test_the_modules_a_job_imports_from_its_directory_are_found(job: Path) -> None:
    found = bundle.local_imports(str(job))
    assert [name for _, name in found] == ["helper", "pkg", "shared"]
    shipped = bundle.build(str(job))
    assert shipped is not None
    assert shipped.names == ("py/helper.py", "py/pkg/__init__.py", "py/pkg/inner.py",
                             "py/pkg/table.csv", "py/shared.py")


def test_a_bundle_is_named_by_its_bytes_and_the_same_files_give_the_same_bytes(job: Path) -> None:
    one, two = bundle.build(str(job)), bundle.build(str(job))
    assert one is not None and two is not None
    assert one.data == two.data and one.sha256 == hashlib.sha256(one.data).hexdigest()
    (job.parent / "shared.py").write_text("X = 2\n")
    three = bundle.build(str(job))
    assert three is not None and three.sha256 != one.sha256


def test_a_job_that_ships_nothing_has_no_bundle(tmp_path: Path) -> None:
    assert bundle.build(str(write(tmp_path / "job.py", "import os\n"))) is None


def test_py_files_and_files_are_added(job: Path, tmp_path: Path) -> None:
    extra = write(tmp_path / "elsewhere" / "lib.py", "Y = 1\n")
    archive = tmp_path / "elsewhere" / "deps.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped.py", "Z = 3\n")
    data = write(tmp_path / "elsewhere" / "stop.txt", "the\n")
    shipped = bundle.build(str(job), [str(extra), str(archive)], [str(data)])
    assert shipped is not None
    assert {"py/lib.py", "py/deps.zip", "files/stop.txt"} <= set(shipped.names)


@pytest.mark.parametrize("py_files, files, message", [
    (["missing.py"], [], "--py-files missing.py: no such file"),
    (["notpkg"], [], "a directory must be a package"),
    (["data.txt"], [], "give .py files, package directories or .zip archives"),
    (["fake.zip"], [], "not a zip archive"),
    ([], ["missing.txt"], "--files missing.txt: no such file"),
    ([], ["notpkg"], "directories are not shipped"),
    ([], ["data.txt", "other/data.txt"], "another file is named 'data.txt'"),
    (["other/helper.py"], [], "its name 'helper.py' is taken"),
])
def test_bad_shipped_files_are_refused(job: Path, py_files: list[str], files: list[str],
                                       message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = job.parent
    (base / "notpkg").mkdir()
    write(base / "data.txt", "x\n")
    write(base / "other" / "data.txt", "y\n")
    write(base / "other" / "helper.py", "\n")
    write(base / "fake.zip", "not a zip\n")
    monkeypatch.chdir(base)
    with pytest.raises(BundleError, match=message):
        bundle.build(str(job), py_files, files)


def test_a_bundle_over_the_limit_is_refused(job: Path) -> None:
    (job.parent / "shared.py").write_bytes(os.urandom(200_000))
    with pytest.raises(BundleError, match="over 0 MiB"):
        bundle.build(str(job), limit=100_000)


def test_a_store_takes_chunks_checks_them_and_unpacks_once(job: Path, tmp_path: Path) -> None:
    shipped = bundle.build(str(job), files=[str(write(tmp_path / "stop.txt", "the\n"))])
    assert shipped is not None
    store = BundleStore(str(tmp_path / "store"))
    assert not store.has(shipped.sha256)
    pieces = list(bundle.chunks(shipped.data, 100))
    for n, (offset, data) in enumerate(pieces):
        store.receive(shipped.sha256, offset, data, "up", final=n == len(pieces) - 1)
    assert store.has(shipped.sha256)
    assert store.read(shipped.sha256, 0, 1 << 30) == shipped.data
    unpacked = store.unpacked(shipped.sha256)
    assert store.unpacked(shipped.sha256) == unpacked
    assert (Path(unpacked) / "py" / "pkg" / "inner.py").exists()
    assert (Path(unpacked) / "files" / "stop.txt").read_text() == "the\n"
    # Shared by the job's tasks (and other jobs): none may write them.
    for path in Path(unpacked).rglob("*"):
        assert path.stat().st_mode & 0o222 == (0 if path.is_file() else 0o200), path
    store.use(shipped.sha256, "job_1")
    store.use(shipped.sha256, "job_2")
    store.release("job_1")
    assert store.has(shipped.sha256)
    store.release("job_2")
    assert not store.has(shipped.sha256) and not os.path.exists(unpacked)


def test_a_store_refuses_bytes_that_do_not_match_their_name(tmp_path: Path) -> None:
    store = BundleStore(str(tmp_path))
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(BundleError, match="do not match its SHA-256"):
        store.receive(wrong, 0, b"data", "up", final=True)
    assert not store.has(wrong)
    with pytest.raises(BundleError, match="out of order"):
        store.receive(wrong, 10, b"data", "up", final=False)
    with pytest.raises(BundleError, match="named by its SHA-256"):
        store.has("../../etc/passwd")


def test_a_bundle_with_a_name_outside_its_directory_is_not_unpacked(tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("py/../../escape.py", "x = 1\n")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    store = BundleStore(str(tmp_path / "store"))
    store.receive(sha, 0, data, "up", final=True)
    with pytest.raises(BundleError, match="bad name"):
        store.unpacked(sha)
    assert not (tmp_path / "escape.py").exists()


def test_a_lingering_store_keeps_a_bundle_a_while_after_its_last_user(
        job: Path, tmp_path: Path) -> None:
    """The jobtracker's: a client found the bundle there and so did not
    upload it, then an identical job ended and took it away before the
    submission came ("the job's bundle was not uploaded")."""
    now = [100.0]
    shipped = bundle.build(str(job), files=[str(write(tmp_path / "stop.txt", "x\n"))])
    assert shipped is not None
    sha = shipped.sha256
    store = BundleStore(str(tmp_path / "store"), linger=60, now=lambda: now[0])
    store.receive(sha, 0, shipped.data, "up", final=True)
    store.use(sha, "job_1")
    store.unpacked(sha)
    now[0] += 1000
    store.sweep()
    assert store.has(sha)  # in use: no linger counts
    store.release("job_1")
    now[0] += 59
    store.sweep()
    assert store.has(sha)  # a client asks: 60 s more from now
    now[0] += 59
    store.sweep()
    assert f"{sha}.zip" in os.listdir(store.root)
    store.use(sha, "job_2")  # its submission
    store.release("job_2")
    now[0] += 60
    store.sweep()
    assert not store.has(sha) and os.listdir(store.root) == []


def test_an_upload_never_submitted_goes_after_the_linger(job: Path, tmp_path: Path) -> None:
    """It stayed until the jobtracker restarted, whole or cut off."""
    now = [0.0]
    shipped = bundle.build(str(job), files=[str(write(tmp_path / "stop.txt", "x\n"))])
    assert shipped is not None
    store = BundleStore(str(tmp_path / "store"), linger=60, now=lambda: now[0])
    store.receive(shipped.sha256, 0, shipped.data, "up", final=True)
    now[0] += 60
    store.sweep()
    assert os.listdir(store.root) == []
    # An upload cut off (its submitter interrupted) goes too.
    store.receive(shipped.sha256, 0, shipped.data[:10], "cut", final=False)
    now[0] += 59
    store.sweep()
    assert len(os.listdir(store.root)) == 1
    now[0] += 1
    store.sweep()
    assert os.listdir(store.root) == []
    # Without a linger (a tasktracker's), a bundle goes with its last job.
    store = BundleStore(str(tmp_path / "tt"))
    store.receive(shipped.sha256, 0, shipped.data, "up", final=True)
    store.use(shipped.sha256, "job_1")
    store.release("job_1")
    assert os.listdir(store.root) == []


def test_entering_a_bundle_puts_its_modules_first_and_links_its_files(
        job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "deps.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_mod_for_test.py", "Z = 3\n")
    shipped = bundle.build(str(job), [str(archive)], [str(write(tmp_path / "stop.txt", "x\n"))])
    assert shipped is not None
    store = BundleStore(str(tmp_path / "store"))
    store.receive(shipped.sha256, 0, shipped.data, "up", final=True)
    cwd = tmp_path / "task"
    cwd.mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))
    bundle.enter(store.unpacked(shipped.sha256), str(cwd))
    assert sys.path[0].endswith("/py") and sys.path[1].endswith("deps.zip")
    assert (cwd / "stop.txt").read_text() == "x\n"


def test_a_module_shipped_twice_is_refused(job: Path, tmp_path: Path) -> None:
    """Two zips with a ``solo.py`` each: the one whose name sorted first was
    imported, whatever the command line's order; one beside the job beat a
    zip's. Each is refused, naming both."""
    zips = []
    for letter in "ab":
        path = tmp_path / f"{'zz' if letter == 'a' else 'aa'}_{letter}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("solo.py", f"V = {letter!r}\n")
            z.writestr(f"pkg_{letter}/__init__.py", "")
        zips.append(str(path))
    with pytest.raises(BundleError, match=r"the module 'solo' is shipped twice, in .*zz_a\.zip "
                                          r"and in .*aa_b\.zip"):
        bundle.build(str(job), py_files=zips)
    with pytest.raises(BundleError, match="the module 'helper' is shipped twice"):
        with zipfile.ZipFile(tmp_path / "h.zip", "w") as z:
            z.writestr("helper/__init__.py", "")
        bundle.build(str(job), py_files=[str(tmp_path / "h.zip")])
    assert bundle.build(str(job), py_files=zips[:1]) is not None  # a package's files are one
    # What two archives may both hold, and an import does not find: no module.
    plain = []
    for n in range(2):
        path = tmp_path / f"deps{n}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"mod{n}.py", "")
            for name in ("__pycache__/mod.cpython-311.pyc", "docs/conf.py", "x.dist-info/r.py",
                         "README.txt"):
                z.writestr(name, "")
        plain.append(str(path))
    assert bundle.build(str(job), py_files=plain) is not None


def test_a_tilde_starts_the_home_directory_in_every_path_a_job_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs and the output were read so, but the job, --files and
    --py-files not: a shell leaves `--files=~/stop.txt` as it is, and the
    Python API's callers pass "~/..." strings."""
    from pytxmr import client
    from pytxmr.inline import run_inline

    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "wc.py", "import os\n\n\ndef map(k, line):\n"
                              "    yield os.path.exists('stop.txt'), 1\n\n\n"
                              "def reduce(k, vs):\n    yield k, sum(vs)\n")
    write(tmp_path / "stop.txt", "the\n")
    write(tmp_path / "extra.py", "X = 1\n")
    write(tmp_path / "in.txt", "a b\nc\n")
    sub = client.submission("~/wc.py", ["~/in.txt"], "~/out", files=["~/stop.txt"],
                            py_files=["~/extra.py"])
    assert sub.spec["filename"] == str(tmp_path / "wc.py")
    assert sub.bundle is not None
    run_inline("~/wc.py", ["~/in.txt"], "~/out", files=["~/stop.txt"], py_files=["~/extra.py"])
    assert (tmp_path / "out" / "part-00000").read_text() == "true\t2\n"  # the file was there


def test_a_package_beside_the_job_wins_over_a_module_of_its_name(tmp_path: Path) -> None:
    """Python imports lib/ before lib.py: the job shipped lib.py, and its
    tasks ran with another module than `python job.py` did."""
    write(tmp_path / "lib.py", "WHO = 'module'\n")
    write(tmp_path / "lib" / "__init__.py", "WHO = 'package'\n")
    job = write(tmp_path / "job.py", "import lib\n")
    assert bundle.local_imports(str(job)) == [(str(tmp_path / "lib"), "lib")]
    import subprocess

    said = subprocess.run([sys.executable, "-c", "import lib; print(lib.WHO)"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert said == "package\n"  # what the job's own Python imports


def test_a_job_too_big_to_send_is_refused_by_its_client(tmp_path: Path) -> None:
    """Over 640 KB, the submission could not be sent: Banana's traceback,
    exit 1 (the jobtracker's refusal never reached); the client says what
    the jobtracker would."""
    from pytxmr import client

    job = write(tmp_path / "big.py", "#" * 700_000 + "\n")
    with pytest.raises(client.ClusterError, match="the job's module and arguments take 700,001 "
                                                  "bytes, more than the 524,288"):
        client.submission(str(job), [str(job)], str(tmp_path / "out"))
    small = write(tmp_path / "small.py", "def map(k, v):\n    yield v, 1\n")
    with pytest.raises(client.ClusterError, match="more than the 524,288"):
        client.submission(str(small), [str(job)], str(tmp_path / "out"),
                          args={"a": "x" * 600_000})


def test_a_job_module_is_read_in_the_encoding_python_reads_it_in(tmp_path: Path) -> None:
    """An encoding declaration, or Notepad's BOM: Python imports such a
    module, and pytxmr refused it (a traceback, or "invalid non-printable
    character U+FEFF")."""
    declared = tmp_path / "latin1.py"
    declared.write_bytes(b"# -*- coding: latin-1 -*-\nword = 'caf\xe9'\n")
    source = bundle.read_source(str(declared))
    assert "word = 'café'" in source
    namespace: dict[str, object] = {}
    exec(compile(source, str(declared), "exec"), namespace)
    assert namespace["word"] == "café"
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfword = 'caf\xc3\xa9'\n")
    assert bundle.read_source(str(bom)) == "word = 'café'\n"
    wrong = tmp_path / "wrong.py"
    wrong.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ValueError, match=r"^its first lines are not utf-8 text, nor do they "
                                         r"declare .*; say its encoding in its first line"):
        bundle.read_source(str(wrong))
    wrong.write_bytes(b"def map(offset, line):\n    yield 'caf\xe9', 1\n")
    with pytest.raises(ValueError, match=r"^it is not utf-8 text \(byte 0xe9 at offset 37\); "
                                         r"say its encoding in its first line"):
        bundle.read_source(str(wrong))
    unknown = tmp_path / "unknown.py"
    unknown.write_bytes(b"# coding: klingon\n")
    with pytest.raises(ValueError, match="unknown encoding"):
        bundle.read_source(str(unknown))
    with pytest.raises(FileNotFoundError):
        bundle.read_source(str(tmp_path / "missing.py"))
