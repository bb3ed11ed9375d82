"""Tests for pytxmr.kvstore: the tasktracker's index of map outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytxmr.kvstore import KeyValueStore, check_table, delete_paths, valid_job_id

TOKEN = b"t" * 32


def write_output(directory: Path, name: str, segments: list[bytes]
                 ) -> tuple[str, list[list[int]]]:
    """Append a fake map output to ``name.data``; return its path and its
    table of segments, as a map task reports them."""
    data_path = directory / f"{name}.data"
    with open(data_path, "ab") as f:
        offset = f.seek(0, os.SEEK_END)
        table = []
        for seg in segments:
            table.append([offset, len(seg), seg.count(b"\n")])
            offset += len(seg)
        f.write(b"".join(segments))
    return str(data_path), table


@pytest.fixture
def store(tmp_path: Path) -> KeyValueStore:
    s = KeyValueStore(str(tmp_path / "kv"))
    s.startup_cleanup()
    return s


def test_startup_cleanup_removes_leftovers_of_a_previous_run(tmp_path: Path) -> None:
    """A crashed run's job dirs must not survive a restart (disk would fill up)."""
    root = tmp_path / "kv"
    first = KeyValueStore(str(root))
    first.startup_cleanup()
    work = Path(first.add_job("old-job", TOKEN))
    (work / "m0.data").write_bytes(b"x")
    (root / "stray-file").write_bytes(b"y")

    second = KeyValueStore(str(root))
    second.startup_cleanup()
    assert root.is_dir()
    assert sorted(p.name for p in root.iterdir()) == [".pytxmr-kvstore"]
    assert second.jobs() == []


def test_startup_cleanup_creates_missing_root(tmp_path: Path) -> None:
    """A fresh tasktracker can point at a directory that does not exist yet."""
    s = KeyValueStore(str(tmp_path / "a" / "b"))
    s.startup_cleanup()
    assert (tmp_path / "a" / "b").is_dir()


def test_startup_cleanup_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    """A mistyped root (say $HOME) must fail rather than be emptied."""
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        KeyValueStore(str(tmp_path)).startup_cleanup()
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_add_job_creates_and_returns_the_work_dir(store: KeyValueStore) -> None:
    """Map attempts write their output under the job's own directory."""
    work = store.add_job("job_1", TOKEN)
    assert work == os.path.join(store.root, "job_1")
    assert os.path.isdir(work)
    assert store.job_dir("job_1") == work
    assert store.has_job("job_1")
    assert store.token("job_1") == TOKEN
    assert store.jobs() == ["job_1"]


def test_add_job_again_with_same_token_is_idempotent(store: KeyValueStore) -> None:
    """A retried init after a reconnect must not fail nor lose outputs."""
    work = store.add_job("j", TOKEN)
    assert store.add_job("j", TOKEN) == work
    with pytest.raises(ValueError, match="another token"):
        store.add_job("j", b"other")


@pytest.mark.parametrize(
    "job_id",
    ["", "..", "a..b", "../etc", "a/b", "/abs", ".hidden", "-x", "_x", "x" * 129,
     "a\x00b", "é", "a b", "a\\b", 7, None],
)
def test_add_job_rejects_ids_unsafe_as_path_components(store: KeyValueStore, job_id: object) -> None:
    """Job ids become directory names: none may escape root or hide a file."""
    with pytest.raises(ValueError):
        store.add_job(job_id, TOKEN)  # type: ignore[arg-type]
    assert list(Path(store.root).iterdir()) == [Path(store.root) / ".pytxmr-kvstore"]


@pytest.mark.parametrize("token", [b"", "str-token"])
def test_add_job_rejects_empty_or_non_bytes_token(store: KeyValueStore, token: object) -> None:
    """An empty token would make every mac forgeable."""
    with pytest.raises(ValueError):
        store.add_job("j", token)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=140))
def test_valid_job_ids_stay_inside_root(job_id: str) -> None:
    """Whatever the text, an accepted id is one plain, non-hidden path component."""
    if valid_job_id(job_id):
        assert os.path.basename(job_id) == job_id
        assert job_id not in (".", "..") and not job_id.startswith(".")
        assert os.path.normpath(os.path.join("/root", job_id)) == "/root/" + job_id


def test_lookup_returns_each_partition_segment(store: KeyValueStore) -> None:
    """The shuffle server serves exactly the bytes the index names."""
    work = Path(store.add_job("j", TOKEN))
    segments = [b"aaa\n", b"", b"bb\nbb\n"]
    data, table = write_output(work, "m3", segments)
    store.add_map_output("j", 3, data, table)
    content = Path(data).read_bytes()
    for p, seg in enumerate(segments):
        path, offset, length = store.lookup("j", 3, p)
        assert path == os.path.abspath(data)
        assert content[offset : offset + length] == seg


def test_lookup_raises_keyerror_for_unknown_job_map_or_partition(store: KeyValueStore) -> None:
    """Each miss is a KeyError the server turns into an error reply."""
    work = Path(store.add_job("j", TOKEN))
    store.add_map_output("j", 0, *write_output(work, "m0", [b"a", b"b"]))
    with pytest.raises(KeyError, match="unknown job"):
        store.lookup("nope", 0, 0)
    with pytest.raises(KeyError, match="unknown map 1"):
        store.lookup("j", 1, 0)
    for partition in (2, -1):
        with pytest.raises(KeyError, match="out of range"):
            store.lookup("j", 0, partition)
    with pytest.raises(KeyError):
        store.token("nope")


def test_add_map_output_for_unknown_job_is_keyerror(store: KeyValueStore, tmp_path: Path) -> None:
    """Outputs of a destroyed job must not be indexed again."""
    with pytest.raises(KeyError):
        store.add_map_output("nope", 0, *write_output(tmp_path, "m0", [b"a"]))


def test_re_executed_map_replaces_and_deletes_the_old_output(store: KeyValueStore) -> None:
    """A re-executed map's new output wins and the old file does not leak disk."""
    work = Path(store.add_job("j", TOKEN))
    old_data, old_table = write_output(work, "m0-a0", [b"old"])
    store.add_map_output("j", 0, old_data, old_table)
    new_data, new_table = write_output(work, "m0-a1", [b"newer"])
    store.add_map_output("j", 0, new_data, new_table)
    assert store.lookup("j", 0, 0) == (os.path.abspath(new_data), 0, 5)
    assert not os.path.exists(old_data)


def test_re_adding_the_same_files_keeps_them(store: KeyValueStore) -> None:
    """Replacing an output by itself (a duplicate report) must not delete it."""
    work = Path(store.add_job("j", TOKEN))
    data, table = write_output(work, "m0", [b"abc"])
    store.add_map_output("j", 0, data, table)
    store.add_map_output("j", 0, data, table)
    assert os.path.exists(data)
    assert store.lookup("j", 0, 0) == (os.path.abspath(data), 0, 3)


def test_outputs_sharing_a_pack_are_found_and_kept(store: KeyValueStore) -> None:
    """Small outputs of one task process share its pack: each is its own
    stretch of the file. A pack outlives the outputs re-executed elsewhere,
    until the job goes: its process may be appending the next map's output
    (deleted under it, that output named a file gone, and the map failed
    on every try)."""
    work = Path(store.add_job("j", TOKEN))
    pack, first = write_output(work, "runner-1", [b"a1", b"a2"])
    _, second = write_output(work, "runner-1", [b"bb1", b"bb2"])
    store.add_map_output("j", 0, pack, first, packed=True)
    store.add_map_output("j", 1, pack, second, packed=True)
    assert [store.lookup("j", 1, p) for p in (0, 1)] == [
        (os.path.abspath(pack), 4, 3), (os.path.abspath(pack), 7, 3)]
    store.add_map_output("j", 0, *write_output(work, "m0-a1", [b"x", b"y"]))
    store.add_map_output("j", 1, *write_output(work, "m1-a1", [b"x", b"y"]))
    assert os.path.exists(pack)
    delete_paths(store.remove_job("j"))
    assert not os.path.exists(pack)


@pytest.mark.parametrize(
    "table",
    [
        "not a list",
        {"0": [0, 3, 1]},
        [[-1, 1, 1]],
        [[0, "3", 1]],
        [[0, True, 1]],
        [[0, 3]],
        [{"offset": 0, "length": 3, "records": 1}],
        [[2, 3, 1]],
    ],
)
def test_invalid_table_is_valueerror_and_keeps_the_previous_output(
    store: KeyValueStore, table: object
) -> None:
    """A wrong table must be caught at add time, not when a reducer fetches."""
    work = Path(store.add_job("j", TOKEN))
    good = write_output(work, "good", [b"abc"])
    store.add_map_output("j", 0, *good)
    (work / "bad.data").write_bytes(b"abc")
    with pytest.raises(ValueError, match="bad.data"):
        store.add_map_output("j", 0, str(work / "bad.data"), table)
    assert store.lookup("j", 0, 0) == (os.path.abspath(good[0]), 0, 3)
    assert os.path.exists(good[0])


def test_an_output_outside_the_job_dir_is_refused(store: KeyValueStore, tmp_path: Path) -> None:
    """The shuffle server serves what the store names: a task's report
    cannot point it at a file elsewhere."""
    work = Path(store.add_job("j", TOKEN))
    (work / "sub").mkdir()
    for directory in (tmp_path, work / "sub"):
        with pytest.raises(ValueError, match="outside the job's directory"):
            store.add_map_output("j", 0, *write_output(directory, "m0", [b"a"]))


def test_check_table_returns_offset_length_pairs() -> None:
    """The in-memory table is (offset, length) per partition, in order."""
    assert check_table([[0, 2, 1], [2, 0, 0], [2, 3, 1]], "m.data", 5) == (
        (0, 2), (2, 0), (2, 3))


def test_remove_job_forgets_it_and_deletes_its_tree(store: KeyValueStore, tmp_path: Path) -> None:
    """Destroying a job frees its disk."""
    work = Path(store.add_job("j", TOKEN))
    store.add_map_output("j", 0, *write_output(work, "m0", [b"a"]))
    store.add_map_output("j", 1, *write_output(work, "m1", [b"b"]))
    store.add_job("other", TOKEN)
    aside = store.remove_job("j")
    # Forgotten and moved aside at once; the same id may come back now.
    assert not work.exists()
    assert not store.has_job("j")
    assert store.jobs() == ["other"]
    with pytest.raises(KeyError):
        store.lookup("j", 0, 0)
    assert store.add_job("j", TOKEN) == str(work)
    assert all(os.path.exists(p) for p in aside)
    delete_paths(aside)
    assert not any(os.path.exists(p) for p in aside)
    assert sorted(os.listdir(store.root)) == sorted([".pytxmr-kvstore", "j", "other"])
    assert store.remove_job("j") and store.remove_job("j") == []  # idempotent


def test_remove_job_rejects_unsafe_ids(store: KeyValueStore) -> None:
    """remove_job deletes a tree: it must never be pointed outside root."""
    with pytest.raises(ValueError):
        store.remove_job("..")


def test_kvstore_imports_nothing_from_twisted() -> None:
    """The store is pure logic; the daemons import it, never the reverse."""
    code = (
        "import sys, pytxmr.kvstore; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'twisted']; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_what_a_job_s_deletion_cannot_remove_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file a task made immutable (``chattr +i``) stays: the deletion
    removes all else, and its error names what stays, for the log (it
    said nothing, and the files stayed unknown)."""
    import pytxmr.kvstore as kvstore

    kept = tmp_path / "runner-1"
    kept.mkdir()
    (kept / "stuck").write_text("x")
    gone = tmp_path / "m-1.data"
    gone.write_text("y")
    monkeypatch.setattr(kvstore, "remove_tree", lambda path, ignore_errors=False: None)
    with pytest.raises(OSError, match=r"runner-1 could not be deleted"):
        kvstore.delete_paths([str(kept), str(gone)])
    assert not gone.exists()
