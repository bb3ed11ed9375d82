"""A job's shipped code and files: the bundle.

The helper modules and packages a job module imports from its own directory
(found from its import statements, recursively), the ``--py-files`` and the
``--files`` of a submission travel with the job as one zip, named by the
SHA-256 of its bytes. The client uploads it to the jobtracker in chunks
(PB's Banana refuses strings over 640 KiB), each worker fetches it once per
hash, and task children find its modules on ``sys.path`` and its files in
their working directory. Nothing here touches the reactor.

Layout inside the zip: ``py/`` (what goes on ``sys.path``: modules,
packages and ``.zip`` archives) and ``files/`` (the data files, by base
name).
"""

from __future__ import annotations

import ast
import contextlib
import filecmp
import hashlib
import io
import os
import shutil
import sys
import tokenize
import types
import zipfile
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

#: The largest bundle a job may ship (the zip, compressed): code and small
#: lookup files, not data; inputs belong in the job's inputs.
MAX_BUNDLE_BYTES = 64 << 20
#: Bytes per upload or download call: under Banana's 640 KiB string limit.
CHUNK_BYTES = 512 << 10
PY = "py"
FILES = "files"
#: A fixed timestamp, so that the same files always make the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}


class BundleError(ValueError):
    """A file that cannot be shipped (missing, colliding, too large) or a
    bundle that is not what its name says."""


_SAY_ENCODING = "say its encoding in its first line, as '# -*- coding: latin-1 -*-'"


def read_source(path: str) -> str:
    """A job module's text as Python reads a module: in the encoding its
    first lines declare (``# -*- coding: latin-1 -*-``), after a UTF-8
    BOM (Notepad's), else UTF-8. OSError for a file that cannot be read;
    ValueError, saying why, for text that is not in its encoding."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except SyntaxError as e:  # in its first two lines, where a declaration goes
        if str(e.msg).startswith("unknown encoding"):
            raise ValueError(str(e.msg)) from None
        raise ValueError(f"its first lines are not utf-8 text, nor do they declare an "
                         f"encoding that they are in; {_SAY_ENCODING}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not {e.encoding} text (byte {e.object[e.start]:#04x} at "
                         f"offset {e.start}); {_SAY_ENCODING}") from None


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    #: Names inside the zip, for messages and docs.
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.data)


def _imported_names(path: str) -> set[str]:
    """The top-level module names ``path`` imports anywhere in its code
    (functions and ``try`` blocks included)."""
    with open(path, "rb") as f:
        source = f.read()
    try:
        tree = ast.parse(source, path)
    except SyntaxError:
        return set()  # the module check reports it, with its line
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _package_files(root: str) -> Iterator[str]:
    """Every file of a package directory (data files too), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                yield os.path.join(dirpath, name)


def local_imports(job_path: str) -> list[tuple[str, str]]:
    """The modules and packages beside ``job_path`` that it imports, and
    those they import in turn: (path on disk, top-level name) pairs."""
    job_dir = os.path.dirname(os.path.abspath(job_path))
    job_name = os.path.splitext(os.path.basename(job_path))[0]
    found: dict[str, str] = {}
    pending = [os.path.abspath(job_path)]
    while pending:
        for name in sorted(_imported_names(pending.pop())):
            if name in found or name == job_name:
                continue
            module = os.path.join(job_dir, name + ".py")
            package = os.path.join(job_dir, name)
            # A package before a module of its name, as Python's import
            # takes it (the job shipped lib.py where lib/ was imported).
            if os.path.isfile(os.path.join(package, "__init__.py")):
                found[name] = package
                pending.extend(p for p in _package_files(package) if p.endswith(".py"))
            elif os.path.isfile(module):
                found[name] = module
                pending.append(module)
    return [(path, name) for name, path in sorted(found.items())]


def _py_file_entry(path: str) -> tuple[str, str]:
    """A ``--py-files`` path as (path, name inside ``py/``)."""
    if not os.path.exists(path):
        raise BundleError(f"--py-files {path}: no such file or directory")
    base = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "__init__.py")):
            raise BundleError(f"--py-files {path}: a directory must be a package "
                              f"(with an __init__.py)")
        return path, base
    if not base.endswith((".py", ".zip")):
        raise BundleError(f"--py-files {path}: give .py files, package directories "
                          f"or .zip archives")
    if base.endswith(".zip") and not zipfile.is_zipfile(path):
        raise BundleError(f"--py-files {path}: not a zip archive")
    return path, base


def _refuse_same_modules(entries: dict[str, str]) -> None:
    """Two of the shipped modules of one name (in two ``.zip`` archives, or
    in one and beside the job): an import would get one, which depends on
    the order of ``sys.path``, not on the user's; the other went silently."""
    seen: dict[str, tuple[str, str]] = {}  # module -> (its entry in py/, a path on disk)
    for name, path in entries.items():
        parts = name.split("/")
        if parts[0] != PY:
            continue
        top = parts[1]
        if top.endswith(".zip") and len(parts) == 2:
            modules = _zip_modules(path)
        else:
            modules = {top[:-3] if top.endswith(".py") else top}
        for module in modules:
            entry, where = seen.setdefault(module, (top, path))
            if entry != top:
                raise BundleError(f"the module {module!r} is shipped twice, in {where} and in "
                                  f"{path}: a job's import would get only one of them")


def _zip_modules(path: str) -> set[str]:
    """The top-level modules and packages (with an ``__init__``) a ``.zip``
    archive holds: what an import would find in one archive only (not its
    ``__pycache__/`` or ``x.dist-info/``, nor a directory without an
    ``__init__``, whose parts in two archives make one namespace package)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    found = set()
    for n in names:
        parts = n.split("/")
        if len(parts) == 1 and n.endswith((".py", ".pyc")):
            top = n.rsplit(".", 1)[0]
        elif len(parts) == 2 and parts[1] in ("__init__.py", "__init__.pyc"):
            top = parts[0]
        else:
            continue
        if top.isidentifier() and top != "__init__":
            found.add(top)
    return found


def build(job_path: str, py_files: Sequence[str] = (), files: Sequence[str] = (),
          limit: int = MAX_BUNDLE_BYTES) -> Bundle | None:
    """The bundle of a job, or None when it ships nothing. A path may
    start with ``~`` (a shell leaves ``--files=~/x`` as it is)."""
    job_path = os.path.expanduser(job_path)
    py_files = [os.path.expanduser(p) for p in py_files]
    files = [os.path.expanduser(p) for p in files]
    entries: dict[str, str] = {}  # name in the zip -> path on disk

    def add(path: str, name: str, what: str) -> None:
        if name in entries and os.path.realpath(entries[name]) != os.path.realpath(path):
            raise BundleError(f"{what} {path}: its name {name.split('/', 1)[1]!r} is "
                              f"taken by {entries[name]}")
        entries[name] = path

    def add_code(path: str, name: str, what: str) -> None:
        """A module file, or a package directory with all its files."""
        if not os.path.isdir(path):
            add(path, f"{PY}/{name}", what)
            return
        for f in _package_files(path):
            add(f, f"{PY}/{name}/{os.path.relpath(f, path)}", what)

    for path, name in local_imports(job_path):
        add_code(path, os.path.basename(path), "the imported module")
    for given in py_files:
        add_code(*_py_file_entry(given), "--py-files")
    _refuse_same_modules(entries)
    for given in files:
        if not os.path.isfile(given):
            raise BundleError(f"--files {given}: no such file"
                              + (" (directories are not shipped: give their files)"
                                 if os.path.isdir(given) else ""))
        name = f"{FILES}/{os.path.basename(given)}"
        if name in entries:
            raise BundleError(f"--files {given}: another file is named "
                              f"{os.path.basename(given)!r} too ({entries[name]}); "
                              f"tasks open them by base name")
        entries[name] = given
    if not entries:
        return None
    return _zip(entries, limit)


def _zip(entries: dict[str, str], limit: int) -> Bundle:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            try:
                with open(entries[name], "rb") as f:
                    z.writestr(info, f.read())
            except OSError as e:
                raise BundleError(f"cannot read {entries[name]}: {e.strerror}") from None
            if buffer.tell() > limit:
                break
    data = buffer.getvalue()
    if len(data) > limit:
        raise BundleError(f"the job's shipped code and files are over {limit >> 20} MiB "
                          f"(the limit of a bundle): ship data as the job's input instead")
    return Bundle(data, hashlib.sha256(data).hexdigest(), tuple(sorted(entries)))


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    for offset in range(0, len(data), size):
        yield offset, data[offset:offset + size]


def is_digest(sha256: object) -> bool:
    return (isinstance(sha256, str) and len(sha256) == 64
            and all(c in "0123456789abcdef" for c in sha256))


class BundleStore:
    """Bundles on a daemon's disk: ``NAME.zip`` as received, checked against
    its name, and unpacked once into ``NAME/`` for the task children.

    Uploads arrive in chunks (in order, each call with its offset); a
    bundle becomes visible only whole and checked. Which jobs use which
    bundle is counted here, so a bundle goes with its last job; or, with
    ``linger`` (the jobtracker's), that many seconds after it, and after
    the last ``has`` (``sweep``): a client that found it there submits
    without uploading it (and an upload never submitted goes too).
    """

    def __init__(self, root: str, linger: float = 0.0,
                 now: Callable[[], float] | None = None) -> None:
        """``now``: the daemon's clock, which a ``linger`` needs."""
        if linger and now is None:
            raise ValueError("a bundle store that lingers needs a clock")
        self.root = root
        self.linger = linger
        self._now = now or (lambda: 0.0)
        self._users: dict[str, set[object]] = {}
        #: The bundles no job uses, lingering -> since when.
        self._idle: dict[str, float] = {}
        #: Uploads under way (their .part files) -> their last chunk's time.
        self._uploading: dict[str, float] = {}

    def _zip_path(self, sha256: str) -> str:
        if not is_digest(sha256):
            raise BundleError("a bundle is named by its SHA-256, in hex")
        return os.path.join(self.root, sha256 + ".zip")

    def has(self, sha256: str) -> bool:
        present = os.path.isfile(self._zip_path(sha256))
        if present and sha256 in self._idle:
            # Its submission comes next. (A client that asks again and
            # again keeps it: as it could by submitting it.)
            self._idle[sha256] = self._now()
        return present

    def receive(self, sha256: str, offset: int, data: bytes, upload: str,
                final: bool) -> None:
        """Store one chunk of upload ``upload``; the ``final`` one makes the
        bundle visible once its bytes match its name."""
        final_path = self._zip_path(sha256)
        partial = os.path.join(self.root, f"{sha256}.{upload}.part")
        os.makedirs(self.root, exist_ok=True)
        if offset == 0 and os.path.exists(partial):  # an earlier try's: start again
            os.unlink(partial)
        have = os.path.getsize(partial) if os.path.exists(partial) else 0
        if offset != have:
            raise BundleError(f"bundle chunk at {offset} out of order (have {have} bytes)")
        if have + len(data) > MAX_BUNDLE_BYTES:
            os.unlink(partial)
            raise BundleError(f"a bundle may have {MAX_BUNDLE_BYTES >> 20} MiB at most")
        with open(partial, "ab") as f:
            f.write(data)
        if not final:
            if self.linger:
                self._uploading[partial] = self._now()
            return
        self._uploading.pop(partial, None)
        digest = hashlib.sha256()
        with open(partial, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != sha256:
            os.unlink(partial)
            raise BundleError("the bundle's bytes do not match its SHA-256")
        os.replace(partial, final_path)
        if self.linger and sha256 not in self._users:
            self._idle[sha256] = self._now()

    def read(self, sha256: str, offset: int, length: int) -> bytes:
        with open(self._zip_path(sha256), "rb") as f:
            f.seek(offset)
            return f.read(min(length, CHUNK_BYTES))

    def unpacked(self, sha256: str) -> str:
        """The bundle's directory, unpacked on first use."""
        target = os.path.join(self.root, sha256)
        if os.path.isdir(target):
            return target
        staging = target + ".unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(self._zip_path(sha256)) as z:
                for name in z.namelist():
                    parts = name.split("/")
                    if (name.startswith("/") or ".." in parts or "" in parts[:-1]
                            or parts[0] not in (PY, FILES)):
                        raise BundleError(f"the bundle holds a bad name {name!r}")
                z.extractall(staging)
            _read_only(staging)
        except (zipfile.BadZipFile, OSError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise BundleError(f"cannot unpack the bundle {sha256[:12]}: {e}") from None
        os.makedirs(os.path.join(staging, PY), exist_ok=True)
        os.makedirs(os.path.join(staging, FILES), exist_ok=True)
        os.replace(staging, target)
        return target

    def use(self, sha256: str, user: object) -> None:
        """``user``: a job's id, or a submission's token while it is admitted."""
        self._idle.pop(sha256, None)
        self._users.setdefault(sha256, set()).add(user)

    def release(self, user: object) -> None:
        """``user`` ended: remove the bundles no other uses (or let them
        linger)."""
        for sha256, users in list(self._users.items()):
            users.discard(user)
            if not users:
                del self._users[sha256]
                if self.linger:
                    self._idle[sha256] = self._now()
                else:
                    self.remove(sha256)

    def sweep(self) -> None:
        """Remove the bundles that lingered their time unused, and the
        uploads cut off as long ago (a submitter interrupted: its .part
        stayed until a restart, up to 64 MiB each)."""
        now = self._now()
        for sha256, since in list(self._idle.items()):
            if now - since >= self.linger:
                del self._idle[sha256]
                self.remove(sha256)
        for partial, since in list(self._uploading.items()):
            if now - since >= self.linger:
                del self._uploading[partial]
                with contextlib.suppress(OSError):
                    os.unlink(partial)

    def in_use(self, sha256: str) -> bool:
        return sha256 in self._users

    def remove(self, sha256: str) -> None:
        path = self._zip_path(sha256)
        shutil.rmtree(path[:-4], ignore_errors=True)
        for name in [path] + [os.path.join(self.root, n) for n in self._partials(sha256)]:
            try:
                os.unlink(name)
            except OSError:
                pass

    def _partials(self, sha256: str) -> list[str]:
        try:
            return [n for n in os.listdir(self.root)
                    if n.startswith(sha256 + ".") and n.endswith(".part")]
        except OSError:
            return []


def _read_only(tree: str) -> None:
    """The files of an unpacked bundle may not be written: the tasks of its
    jobs on this worker share them (an attempt tried again would read what
    the failed one wrote). Directories stay writable, for ``__pycache__``."""
    for parent, _, names in os.walk(tree):
        for name in names:
            os.chmod(os.path.join(parent, name), 0o444)


def search_path(unpacked: str) -> list[str]:
    """What a task child puts first on ``sys.path``: the bundle's ``py/``
    and each ``.zip`` archive in it (zipimport)."""
    py = os.path.join(unpacked, PY)
    zips = sorted(os.path.join(py, n) for n in os.listdir(py) if n.endswith(".zip"))
    return [py, *zips]


def _shipped_modules(py: str) -> list[str]:
    """The names of the modules and packages in a bundle's ``py/``."""
    return sorted({n[:-3] if n.endswith(".py") else n for n in os.listdir(py)
                   if not n.startswith("__")
                   and (n.endswith(".py") or os.path.isdir(os.path.join(py, n)))})


def shadowed(unpacked: str) -> list[str]:
    """The bundle's modules that this process has imported already from
    elsewhere, which the job's imports would get instead of its own: a
    ``csv.py`` beside the job in a task process that imported Python's
    ``csv``, or, under ``run --inline``, a module of the caller's."""
    py = os.path.join(unpacked, PY)
    return [name for name in _shipped_modules(py) if name in sys.modules
            and not _in_bundle(getattr(sys.modules[name], "__file__", None) or "", unpacked)]


def _in_bundle(path: str, unpacked: str) -> bool:
    """Whether ``path`` is a module file of the bundle unpacked at
    ``unpacked``, or of another copy of it: the tasktrackers of a `run`
    share their task processes, each with its own copy (named by its
    SHA-256), and a package kept from one task to the next came from the
    other's."""
    return _marker(unpacked) in path


def _marker(unpacked: str) -> str:
    """What the path of a module of the bundle unpacked at ``unpacked``
    (of any copy of it) holds."""
    return f"{os.sep}{os.path.basename(unpacked)}{os.sep}{PY}{os.sep}"


def set_aside(unpacked: str) -> dict[str, types.ModuleType]:
    """Inline: the caller's own imports of the very files the bundle ships
    (the job's helper, which the caller imported too), and their
    submodules, taken out of ``sys.modules`` while the job runs, so that
    its imports load those files as they are now, as a task's do: the
    caller's modules are as old as its import of them, and a helper edited
    since ran stale. The job's end puts them back."""
    py = os.path.join(unpacked, PY)
    aside: dict[str, types.ModuleType] = {}
    for name in _shipped_modules(py):
        module = sys.modules.get(name)
        if module is not None and _same_module(os.path.join(py, name), module):
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                aside[key] = sys.modules.pop(key)
    return aside


def _same_module(shipped: str, module: types.ModuleType) -> bool:
    """Whether ``module``, imported already, is from files with the very
    source the bundle ships at ``shipped`` (a module's path without
    ``.py``, or a package's directory): the caller of an inline job
    imported the job's helper itself."""
    mine = getattr(module, "__file__", None)
    if not mine:
        return False
    if not os.path.isdir(shipped):
        pairs = [(shipped + ".py", mine)]
    else:
        home = os.path.dirname(mine)
        pairs = [(os.path.join(top, name),
                  os.path.join(home, os.path.relpath(os.path.join(top, name), shipped)))
                 for top, _, files in os.walk(shipped) for name in files]
    try:
        return all(filecmp.cmp(a, b, shallow=False) for a, b in pairs)
    except OSError:  # a file the imported one lacks: another module
        return False


def refuse_shadowed(unpacked: str) -> None:
    """A job whose own module would lose to one imported already fails to
    load, saying which: it ran with the other module, silently."""
    names = shadowed(unpacked)
    if names:
        from .jobmodule import JobDefinitionError

        name = names[0]
        where = getattr(sys.modules[name], "__file__", None) or "built in"
        raise JobDefinitionError(
            f"the job ships its own module {name!r}, but its task processes have imported "
            f"another of that name already ({where}), which its imports would get: rename "
            f"the job's {name}")


def forget_imports(unpacked: str, every: bool = False) -> None:
    """Unload the bundle's modules (those of its ``py/``, zips included)
    that an earlier task of the job imported in this process: each task
    imports them afresh, as it loads the job's module afresh. A counter
    kept in a helper module went on from one map to the next (an in-mapper
    combiner there counted every word several times). ``every``: the
    job is over, its extension modules too."""
    marker = _marker(unpacked)  # once: this runs between each two tasks of a process
    shipped = {n: f for n, m in list(sys.modules.items())
               if marker in (f := getattr(m, "__file__", None) or "")}
    # An extension module loads once a process: its package is kept whole
    # (a package imported again found its extension in sys.modules, and
    # the new package lacked the attribute that import sets).
    kept = set() if every else {n.partition(".")[0] for n, f in shipped.items()
                                if not f.endswith((".py", ".pyc"))}
    for name in shipped:
        if name.partition(".")[0] not in kept:
            del sys.modules[name]


def enter(unpacked: str, cwd: str) -> None:
    """In a task child: the bundle's modules importable, its files linked
    into the working directory ``cwd`` by base name."""
    # Once per process, which may run several tasks of the job.
    sys.path[:0] = [p for p in search_path(unpacked) if p not in sys.path]
    files = os.path.join(unpacked, FILES)
    for name in os.listdir(files):
        link = os.path.join(cwd, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(files, name), link)
