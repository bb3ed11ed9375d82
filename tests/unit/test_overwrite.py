"""``--overwrite`` deletes only an earlier pytxmr output: every refusal of
``output.check_overwrite`` (pure, on a temporary tree). The same refusals
through ``run --inline``, ``run`` and ``submit`` as a user meets them are in
tests/integration/test_overwrite_cli.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from trees import snapshot

from pytxmr.output import (
    OUTPUT_MARK,
    SUCCESS,
    OutputExistsError,
    OutputsOverlap,
    UnsafeOverwrite,
    check_overwrite,
    discard_attempt,
    prepare_output_dir,
    refuse_overlap,
)
from pytxmr.outputrules import InputsInUse, foreign_files


def old_output(path: Path, *, mark: str = OUTPUT_MARK) -> Path:
    """A directory as a finished pytxmr job leaves it."""
    path.mkdir(parents=True)
    (path / mark).write_text("")
    (path / "part-00000").write_text("a\t1\n")
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def refused(path: Path, match: str, **kw: object) -> None:
    """check_overwrite refuses, and prepare_output_dir (the deletion) too,
    leaving everything as it was."""
    before = snapshot(path.parent)
    with pytest.raises(UnsafeOverwrite, match=match):
        check_overwrite(str(path), **kw)  # type: ignore[arg-type]
    with pytest.raises(UnsafeOverwrite, match=match):
        prepare_output_dir(str(path), True, **kw)  # type: ignore[arg-type]
    assert snapshot(path.parent) == before


def test_a_missing_output_needs_no_check(home: Path) -> None:
    """Nothing there, nothing to lose."""
    check_overwrite(str(home / "new"))


def test_a_regular_file_is_refused(home: Path) -> None:
    """`-o sales.csv --overwrite` once replaced a data file with a directory."""
    data = home / "sales.csv"
    data.write_text("id,amount\n1,10\n")
    refused(data, "not a directory")


def test_a_symlink_is_refused(home: Path) -> None:
    """Deleting through a link deletes somewhere the user did not name."""
    target = old_output(home / "real-out")
    link = home / "out"
    link.symlink_to(target)
    refused(link, "symbolic link")


def test_a_directory_of_unrelated_files_is_refused(home: Path) -> None:
    """A directory without the mark is someone's data."""
    d = home / "reports"
    d.mkdir()
    (d / "q3.txt").write_text("numbers")
    (d / "part-00000").write_text("looks like ours, is not")
    refused(d, "not a pytxmr output")


def test_an_output_holding_foreign_files_is_refused(home: Path) -> None:
    """A user's file put into an old output is still the user's."""
    out = old_output(home / "out")
    (out / "notes.txt").write_text("mine")
    refused(out, "did not write: notes.txt")


def test_an_empty_directory_is_overwritten(home: Path) -> None:
    """An empty directory holds nothing to lose."""
    out = home / "out"
    out.mkdir()
    prepare_output_dir(str(out), True)
    assert sorted(os.listdir(out)) == [OUTPUT_MARK, "_temporary"]


@pytest.mark.parametrize("mark", [OUTPUT_MARK, SUCCESS])
def test_an_earlier_output_is_overwritten(home: Path, mark: str) -> None:
    """Marked outputs, and those written before the mark (with _SUCCESS), are replaced."""
    out = old_output(home / "out", mark=mark)
    (out / "_temporary" / "job_1_r00000_0").mkdir(parents=True)  # an attempt's
    (out / "_temporary" / "job_1_r00000_0" / "part-00000").write_text("x")
    prepare_output_dir(str(out), True)
    assert sorted(os.listdir(out)) == [OUTPUT_MARK, "_temporary"]
    assert os.listdir(out / "_temporary") == []


def test_an_overwrite_cut_short_leaves_no_success(home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletion of the earlier output dies half-way (a SIGKILL of the
    jobtracker): what is left must not look like a whole output, and must
    still be one an --overwrite replaces (its mark goes last)."""
    out = old_output(home / "out")
    (out / SUCCESS).write_text("")
    for n in range(1, 50):
        (out / f"part-{n:05d}").write_text("a\t1\n")

    class Died(BaseException):
        pass

    real_unlink = os.unlink
    unlinked: list[str] = []

    def dies_half_way(path: Any, *args: Any, **kw: Any) -> None:
        if len(unlinked) == 50:  # of 52 files, the mark among them
            raise Died()
        unlinked.append(os.path.basename(path))
        real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", dies_half_way)
    with pytest.raises(Died):
        prepare_output_dir(str(out), True)
    monkeypatch.undo()
    assert unlinked[0] == SUCCESS and not (out / SUCCESS).exists()
    assert list(out.glob("part-*")) and (out / OUTPUT_MARK).exists()
    claim = prepare_output_dir(str(out), True)
    assert claim is not None and sorted(p.name for p in out.iterdir()) == [
        OUTPUT_MARK, "_temporary"]
    claim.close()


def test_files_pytxmr_did_not_write_below_an_output_are_refused(home: Path) -> None:
    """Not only at the top: a user's file in ``_temporary`` or in a
    directory named as a part file would go with the output."""
    out = old_output(home / "out")
    attempt = out / "_temporary" / "job_1_r00000_0"
    attempt.mkdir(parents=True)
    (attempt / "part-00000").write_text("a\t1\n")
    step = out / "_temporary" / "step-1" / "_temporary" / "job_1-s2_r00001_0"
    step.mkdir(parents=True)
    (step / "part-00001").write_text("b\t1\n")
    check_overwrite(str(out))  # an interrupted job's attempts and steps
    (out / "_temporary" / "precious.csv").write_text("1,2\n")
    refused(out, "pytxmr did not write: _temporary/precious.csv")
    (out / "_temporary" / "precious.csv").unlink()
    (out / "part-00007").mkdir()
    (out / "part-00007" / "precious2.csv").write_text("3,4\n")
    refused(out, "pytxmr did not write: part-00007/precious2.csv")


def test_foreign_files_are_told_by_their_place_and_name() -> None:
    assert foreign_files([OUTPUT_MARK, SUCCESS, "part-00000", "part-123456",
                          "_temporary/a/part-00001", "_temporary/step-1/part-00002"]) == []
    assert foreign_files(["notes.txt", "_temporary", "part-1", "part-00000/x",
                          "_temporary/a/part-00001.csv", "b/_temporary/part-00000"]) == sorted(
        ["notes.txt", "_temporary", "part-1", "part-00000/x", "_temporary/a/part-00001.csv",
         "b/_temporary/part-00000"])


def test_an_output_that_holds_an_input_is_refused(home: Path) -> None:
    """`-o ..` once removed a whole workspace, the job's input with it."""
    ws = old_output(home / "ws")
    data = ws / "part-00000"
    refused(ws, "holds, or lies in, the job's input", inputs=[str(data)], input_files=[str(data)])


def test_an_output_inside_an_input_directory_is_refused(home: Path) -> None:
    """An output nested in an input directory is part of that input."""
    data = home / "data"
    data.mkdir()
    (data / "a.txt").write_text("x\n")
    out = old_output(data / "out")
    refused(out, "the job's input", inputs=[str(data)], input_files=[str(data / "a.txt")])


def test_an_output_reached_through_a_symlinked_input_is_refused(home: Path) -> None:
    """Containment is judged on real paths, not on the names given."""
    out = old_output(home / "out")
    link = home / "alias"
    link.symlink_to(out)
    refused(out, "the job's input", inputs=[str(link / "part-00000")],
            input_files=[str(link / "part-00000")])


def test_an_input_file_that_links_into_the_output_is_refused(home: Path) -> None:
    """A listed file that is itself a symbolic link into the output: its
    directory's real path says nothing, its own does."""
    out = old_output(home / "out")
    data = home / "data"
    data.mkdir()
    (data / "a.txt").write_text("x\n")
    (data / "b.txt").symlink_to(out / "part-00000")
    files = [str(data / "a.txt"), str(data / "b.txt")]
    refused(out, f"it holds {data / 'b.txt'}, an input of the running job job_7",
            in_use=[InputsInUse("the running job job_7", [str(data / "*.txt")], files)])
    check_overwrite(str(out), in_use=[InputsInUse("the running job job_7", [str(data)],
                                                  files[:1])])


def test_an_input_of_another_job_is_refused(home: Path) -> None:
    """An earlier output that another job, running or being admitted,
    reads: replacing it would delete that job's input under it. An output
    that merely lies in the other job's input directory is not read by it
    (it read the files it listed)."""
    out = old_output(home / "chain")
    part = str(out / "part-00000")
    running = "the running job job_7"
    for job in (InputsInUse(running, [str(out)], [part]),  # the directory given
                InputsInUse(running, [str(home / "*" / "part-*")], [part]),  # a glob
                InputsInUse(running, [str(home / "alias")], [])):  # a symbolic link to it
        (home / "alias").unlink(missing_ok=True)
        (home / "alias").symlink_to(out)
        refused(out, f"it holds .*, an input of {running}", in_use=[job])
    refused(out, "an input of a job being submitted",
            in_use=[InputsInUse("a job being submitted", [part], [part])])
    shared = home / "shared"
    shared.mkdir()
    (shared / "a.txt").write_text("x\n")
    beside = old_output(shared / "out1")
    check_overwrite(str(beside), in_use=[InputsInUse(running, [str(shared)],
                                                     [str(shared / "a.txt")])])
    check_overwrite(str(out), in_use=[InputsInUse(running, [str(home / "other")],
                                                  [str(home / "other" / "a")])])


def test_another_jobs_output_is_refused_however_it_is_spelled(home: Path) -> None:
    """A running job's output reached through a symbolic link (on macOS,
    /tmp is one): neither replaced, nor nested in, nor held, though only the
    mark and _temporary are there; compared as spelled, the paths differ."""
    data = home / "data"
    theirs = old_output(data / "outA")
    (theirs / "_temporary" / "step-1").mkdir(parents=True)
    (theirs / "_temporary" / "step-1" / "part-00000").write_text("a\t1\n")
    (theirs / "part-00000").unlink()
    alias = home / "alias"
    alias.symlink_to(data)
    busy = [("the running job job_A", str(theirs))]
    before = snapshot(home)
    for out in (alias / "outA", alias / "outA" / "inner", alias):
        refuse_overlap(str(out), busy)  # as spelled: no overlap
        with pytest.raises(OutputsOverlap, match=f"overlaps the output {theirs} of the running"):
            prepare_output_dir(str(out), True, busy=busy)
    assert snapshot(home) == before
    prepare_output_dir(str(alias / "outB"), False, busy=busy)
    assert (data / "outB" / OUTPUT_MARK).exists()


def test_an_object_store_input_of_another_job_is_refused_under_any_alias() -> None:
    """s3a:// and S3:// name s3://'s objects: the check compares stores,
    not spellings (an object output's check needs no listing for this)."""
    from pytxmr import objectoutput

    for theirs in ("s3://b/earlier", "s3a://b/earlier/part-00000", "S3://b/earlier"):
        job = InputsInUse("the running job job_7", [theirs], [])
        with pytest.raises(UnsafeOverwrite, match="an input of the running job job_7"):
            objectoutput.check_overwrite("s3://b/earlier", [OUTPUT_MARK], False, inputs=[],
                                         in_use=[job], objects=lambda: [OUTPUT_MARK],
                                         mark=lambda: "")
    objectoutput.check_overwrite("s3://b/earlier", [OUTPUT_MARK], False, inputs=[],
                                 in_use=[InputsInUse("j", ["s3://b/earlier-too"], [])],
                                 objects=lambda: [OUTPUT_MARK], mark=lambda: "")


@pytest.mark.parametrize("pattern, hit", [
    ("data/*", True),
    ("data/**", True),
    ("data/**/out", True),
    ("*/out", True),
    ("data/*.txt", False),
    ("data/**/*.csv", False),
    ("elsewhere/*", False),
])
def test_a_glob_that_reaches_the_output_is_refused(home: Path, pattern: str, hit: bool) -> None:
    """A glob that selects the output, or a directory around it, takes it as input."""
    (home / "data").mkdir()
    out = old_output(home / "data" / "out")
    inputs = [str(home / pattern)]
    if hit:
        refused(out, "the job's input", inputs=inputs)
    else:
        check_overwrite(str(out), inputs=inputs)


def test_the_root_and_the_home_directory_are_refused(home: Path) -> None:
    """Even marked as an output, home is never deleted, nor anything that holds it."""
    (home / OUTPUT_MARK).write_text("")
    with pytest.raises(UnsafeOverwrite, match="home directory"):
        check_overwrite(str(home))
    with pytest.raises(UnsafeOverwrite, match="home directory"):
        check_overwrite(str(home.parent))
    with pytest.raises(UnsafeOverwrite, match="root"):
        check_overwrite("/")
    assert (home / OUTPUT_MARK).exists()


def test_work_directories_are_refused(home: Path) -> None:
    """A daemon's work directory, what holds it and what lies in it are not outputs."""
    work = old_output(home / "srv" / "jobtracker")
    inner = old_output(work / "jobs")
    for path in (work, inner, home / "srv"):
        with pytest.raises(UnsafeOverwrite, match="work directory"):
            check_overwrite(str(path), protected=[str(work)])
    default = old_output(home / ".pytxmr" / "tasktracker")
    refused(default, "work directory")
    # A new output there too: its daemon cleans that directory.
    for path, protected in ((work / "new", [str(work)]), (home / ".pytxmr" / "new", [])):
        with pytest.raises(OutputExistsError, match="lies in the pytxmr work directory"):
            prepare_output_dir(str(path), False, protected=protected)
        assert not path.exists()


def test_without_overwrite_an_existing_output_is_refused(home: Path) -> None:
    """As in Hadoop: even an earlier output stays unless --overwrite is given."""
    out = old_output(home / "out")
    with pytest.raises(OutputExistsError, match="already exists"):
        prepare_output_dir(str(out), False)
    assert (out / "part-00000").exists()


@pytest.mark.parametrize("name", ["res[12]", "r*", "out?"])
@pytest.mark.parametrize("root", ["local", "s3://bucket"])
def test_an_output_named_as_a_pattern_is_refused_before_anything_is_touched(
        tmp_path: Path, name: str, root: str) -> None:
    """An object store's client deletes by pattern: replacing or cleaning
    s3://bucket/res[12] deleted res1/ and res2/ too. Refused, as any such
    name is (a multi-step job reads its steps' parts by pattern), before
    the store or the disk is looked at."""
    for other in ("res1", "res2", "r", "out1"):
        (tmp_path / other).mkdir()
        (tmp_path / other / "part-00000").write_text("keep\n")
    before = snapshot(tmp_path)
    base = str(tmp_path) if root == "local" else root
    with pytest.raises(OutputExistsError, match=r"holds \*, \? or \[, which a store's client"):
        prepare_output_dir(f"{base}/{name}", True)
    assert snapshot(tmp_path) == before


def test_an_output_claimed_by_another_process_is_not_overwritten(home: Path) -> None:
    """A job holds its new output's mark locked until it ends: a job that
    knows nothing of it (another jobtracker's, another ``run``'s) may not
    delete it meanwhile, and no restart's clean-up of an interrupted job
    touches it. Once let go (the job ended, or its process died), the
    output may be replaced again."""
    import subprocess
    import sys

    from pytxmr.output import abort_unfinished, claimed_elsewhere

    out = home / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pytxmr.output import prepare_output_dir\n"
         f"claim = prepare_output_dir({str(out)!r}, False)\nprint('held', flush=True)\n"
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (out / "part-00000").write_text("a\t1\n")  # committed so far
        before = snapshot(out)
        assert claimed_elsewhere(str(out))
        with pytest.raises(UnsafeOverwrite, match="a job is writing it now"):
            prepare_output_dir(str(out), True)
        assert not abort_unfinished(str(out), None, "job_1")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert not claimed_elsewhere(str(out))
    claim = prepare_output_dir(str(out), True)
    assert claim is not None and not (out / "part-00000").exists()
    assert claimed_elsewhere(str(out))  # by another file of this very process
    claim.close()
    assert not claimed_elsewhere(str(out))


def test_another_users_output_is_theirs_to_replace(home: Path) -> None:
    """Under --users, bob's --overwrite emptied alice's finished output:
    the mark names the owner of the job that made an output, and only
    they or an administrator may replace it (a cluster without users
    checks no owner), in a directory as under a prefix."""
    from pytxmr import objectoutput
    from pytxmr.outputrules import mark_text
    from pytxmr.users import User

    bob, ops = User("bob").may_control, User("ops", admin=True).may_control
    out = home / "out"
    claim = prepare_output_dir(str(out), False, owner="alice")
    assert claim is not None
    claim.close()
    (out / "part-00000").write_text("a\t1\n")
    assert (out / OUTPUT_MARK).read_text().endswith("owner: alice\n")
    before = snapshot(out)
    with pytest.raises(UnsafeOverwrite, match="it is the output of a job of alice: only they "
                                              "or an administrator may replace it"):
        prepare_output_dir(str(out), True, owner="bob", may_replace=bob)
    assert snapshot(out) == before
    check_overwrite(str(out), may_replace=User("alice").may_control)
    check_overwrite(str(out), may_replace=ops)
    check_overwrite(str(out))  # no users
    for mark, allowed in ((mark_text("prefix", "alice"), False), (mark_text("prefix", ""), True),
                          (mark_text("prefix", "bob"), True)):
        def check() -> None:
            objectoutput.check_overwrite("s3://b/out", [OUTPUT_MARK], False, inputs=[],
                                         objects=lambda: [OUTPUT_MARK], mark=lambda: mark,
                                         may_replace=bob)
        if allowed:
            check()
        else:
            with pytest.raises(UnsafeOverwrite, match="a job of alice"):
                check()
    claim = prepare_output_dir(str(out), True, owner="ops", may_replace=ops)
    assert claim is not None and (out / OUTPUT_MARK).read_text().endswith("owner: ops\n")
    claim.close()


@pytest.mark.parametrize("error", ["made meanwhile", "read-only"])
def test_an_output_that_cannot_be_prepared_is_refused_saying_why(
        home: Path, monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    """Two --overwrites at once (the loser found a file gone, or a
    directory made, by the winner), or a read-only file system: `run
    --inline` printed a traceback and exited 1."""
    import errno

    out = old_output(home / "out")

    def makedirs(path: str, *args: object, **kwargs: object) -> None:
        if error == "made meanwhile":
            raise FileExistsError(errno.EEXIST, "File exists", path)
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(os, "makedirs", makedirs)
    said = (r"changed as this job was preparing it \(File exists: " if error == "made meanwhile"
            else "cannot prepare the output .*: Read-only file system: ")
    with pytest.raises(OutputExistsError, match=said):
        prepare_output_dir(str(out), True)


def test_a_new_output_inside_an_earlier_one_is_refused(home: Path) -> None:
    """It made the earlier output one its owner's --overwrite refused
    ("holds files pytxmr did not write")."""
    earlier = old_output(home / "earlier")
    (earlier / "deep").mkdir()
    for inner in (earlier / "inner", earlier / "deep" / "inner"):
        with pytest.raises(OutputExistsError, match=f"lies in {earlier}, the output of an "
                                                    f"earlier job"):
            prepare_output_dir(str(inner), False)
        assert not inner.exists()
    claim = prepare_output_dir(str(home / "beside"), False)
    assert claim is not None
    claim.close()
    # One made inside before this check existed: refused before it is emptied.
    inner = earlier / "inner"
    inner.mkdir()
    (inner / OUTPUT_MARK).write_text("")
    (inner / "part-00000").write_text("a\t1\n")
    before = snapshot(earlier)
    with pytest.raises(OutputExistsError, match="lies in"):
        prepare_output_dir(str(inner), True)
    assert snapshot(earlier) == before


def test_a_mark_names_the_job_that_made_the_output(home: Path) -> None:
    """A restarted jobtracker resumes a job only into its own output: by
    the id and the token's hash the mark names (ids alone repeat across
    jobtrackers: a time and a count); an output older than the field is
    no other job's; a mark that cannot be read refuses an overwrite."""
    from pytxmr.outputrules import job_mark
    from pytxmr.output import OutputTaken, claim, written_for_another
    from pytxmr.outputrules import mark_text

    mine, twin = job_mark("job_1", b"a" * 32), job_mark("job_1", b"b" * 32)
    assert mine.startswith("job_1 ") and mine != twin
    for mark, job, other in ((mark_text("directory", "", mine), mine, False),
                             (mark_text("directory", "", twin), mine, True),
                             (mark_text("directory", "", "inline-5e"), mine, True),
                             (mark_text("directory", "", ""), mine, False),
                             (mark_text("directory", "", twin), "job_1", False),  # id only
                             (mark_text("directory", "", mine), "job_2", True)):
        assert written_for_another(mark, job) is other, (mark, job)
    out = home / "out"
    prepare_output_dir(str(out), False, job=twin).close()
    with pytest.raises(OutputTaken, match="has written"):
        claim(str(out), mine)
    held = claim(str(out), twin)
    assert held is not None
    held.close()
    (out / OUTPUT_MARK).unlink()
    (out / OUTPUT_MARK).mkdir()
    with pytest.raises(UnsafeOverwrite, match=f"cannot read its {OUTPUT_MARK}"):
        check_overwrite(str(out), may_replace=lambda owner: True)


def test_an_inline_run_s_output_names_its_job_too(home: Path) -> None:
    """Its mark named no job: a jobtracker restarted after it replaced one
    of its jobs' outputs resumed that job into it."""
    from pytxmr.inline import run_inline

    root = Path(__file__).resolve().parents[2]
    (home / "in.txt").write_text("a b a\n")
    run_inline(str(root / "examples" / "wordcount.py"), [str(home / "in.txt")], str(home / "out"))
    assert "\njob: inline-" in (home / "out" / OUTPUT_MARK).read_text()


def test_an_interrupted_jobs_output_whose_mark_is_gone_is_left_as_it_is(home: Path) -> None:
    """Removed while the jobtracker was down, and made again by someone
    else: a restart's clean-up of the job deleted the part files there."""
    from pytxmr.output import abort_unfinished

    out = home / "out"
    out.mkdir()
    (out / "part-00000").write_text("theirs\t1\n")
    (out / "_temporary").mkdir()
    before = snapshot(out)
    assert not abort_unfinished(str(out), None, "job_1")
    assert snapshot(out) == before


def test_an_output_with_its_success_is_never_emptied(home: Path) -> None:
    """A job whose end its jobtracker could not journal (a full disk) was
    failed at the next start, as its files were gone, and its output
    emptied under its _SUCCESS: a reader found a whole output of nothing."""
    from pytxmr.output import abort_output

    out = old_output(home / "out")
    (out / SUCCESS).write_text("")
    before = snapshot(out)
    abort_output(str(out), None, "job_1 aaaa")
    assert snapshot(out) == before


def test_an_output_that_cannot_be_made_says_why(tmp_path: Path) -> None:
    """Under a file, it said "the parent directory does not exist"; where
    the file system makes no directory (/proc), "changed as this job was
    preparing it: another job is making or replacing it now"."""
    (tmp_path / "afile").write_text("x\n")
    with pytest.raises(OutputExistsError, match=r"the parent directory of the output .*afile/sub "
                                                r"is a file: .*afile$"):
        prepare_output_dir(str(tmp_path / "afile" / "sub"), False)
    with pytest.raises(OutputExistsError, match=r"^cannot make the output directory "
                                                r"/proc/no-such-pytxmr-output: No such file"):
        prepare_output_dir("/proc/no-such-pytxmr-output", False)


def test_an_unfinished_part_goes_with_the_temporary_area_it_made_again(
        tmp_path: Path) -> None:
    """An attempt of a two-step job's first step that began its part as
    its job ended: its directories go, up to the job's ``_temporary``, as
    far as they are empty; the output and its mark stay."""
    top = tmp_path / "out"
    step = top / "_temporary" / "step-1"
    part = step / "_temporary" / "a1" / "part-00000"
    part.parent.mkdir(parents=True)
    part.write_text("x\t1\n")
    (top / OUTPUT_MARK).write_text("")
    discard_attempt(str(step), "a1")  # its job goes on: only its own
    assert sorted(p.name for p in top.rglob("*")) == [OUTPUT_MARK, "_temporary",
                                                      "_temporary", "step-1"]
    (step / "part-00001").write_text("y\t1\n")  # a committed part of the step
    part.parent.mkdir()
    discard_attempt(str(step), "a1", str(top))
    assert sorted(p.name for p in top.rglob("*")) == [OUTPUT_MARK, "_temporary",
                                                      "part-00001", "step-1"]
    (step / "part-00001").unlink()
    discard_attempt(str(step), "a1", str(top))
    assert [p.name for p in top.iterdir()] == [OUTPUT_MARK]
