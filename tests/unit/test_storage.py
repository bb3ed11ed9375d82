"""storage: URLs, listings and ranged reads, on fsspec's in-process
``memory://`` store (the same code paths as s3:// and http://, without a
server; tests/integration/test_storage_s3.py has the real ones)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytxmr import rangereader, storage
from pytxmr.splits import Split, compute_splits, read_chunks, read_lines
from pytxmr.rangereader import RangeReader
from pytxmr.storage import InputFile, StorageError

ROOT = Path(__file__).resolve().parents[2]

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def mem() -> Iterator[object]:
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def reference(data: bytes) -> list[tuple[int, str]]:
    """(offset, line) of every line, the slow obvious way."""
    out, pos = [], 0
    for raw in data.split(b"\n"):
        if pos < len(data):
            out.append((pos, raw.decode()))
        pos += len(raw) + 1
    return out


@pytest.mark.parametrize("path, remote", [
    ("s3://b/k", True), ("http://h/x", True), ("HTTPS://h/x", True),
    ("file:///tmp/x", False), ("/tmp/x", False), ("rel/x", False), ("C:x", False)])
def test_is_remote(path: str, remote: bool) -> None:
    assert storage.is_remote(path) is remote


def test_normalize_and_join() -> None:
    assert storage.normalize("file:///tmp/a/../b") == "/tmp/b"
    assert storage.normalize("s3://bucket/out/") == "s3://bucket/out"
    # An HTTP URL's '/' names another resource (or is the query's): kept.
    assert storage.normalize("http://h/export/") == "http://h/export/"
    assert storage.normalize("S3://Bucket/Key/") == "s3://Bucket/Key"
    assert storage.normalize("HTTPS://H/x") == "https://H/x"
    assert storage.normalize("https://h/get?path=/data/") == "https://h/get?path=/data/"
    assert storage.join("s3://bucket/out", "part-00000") == "s3://bucket/out/part-00000"
    assert storage.inside("s3://b/out/x", "s3://b/out")
    assert not storage.inside("s3://b/outer", "s3://b/out")


def test_an_empty_segment_is_inside_what_it_names_without_it() -> None:
    """SeaweedFS and MinIO read s3://b//out/x as s3://b/out/x: an
    --overwrite of s3://b/out deleted that input of its job."""
    assert storage.inside("s3://b//out/part-00000", "s3://b/out")
    assert storage.inside("s3a://b/out//x", "s3://b//out")
    assert not storage.inside("s3://b//outer", "s3://b/out")


def test_an_output_with_an_empty_segment_is_refused() -> None:
    from pytxmr import output

    with pytest.raises(output.OutputExistsError, match=r"has an empty segment \(//\)"):
        output.refuse_unwritable("s3://b//same1")
    output.refuse_unwritable("s3://b/same1/")


def test_a_file_url_names_a_path_on_this_host() -> None:
    """file://localhost/tmp/x was read as ./localhost/tmp/x (another file,
    should one exist there), file://data/x as ./data/x."""
    assert storage.normalize("file://localhost/tmp/x") == "/tmp/x"
    assert storage.local_path("file:///tmp/x") == "/tmp/x"
    for url in ("file://data/x", "file://otherhost/tmp/x", "file://localhost"):
        with pytest.raises(StorageError, match="a file:// URL names a path on this host"):
            storage.normalize(url)


def test_redact_drops_credentials_of_a_url() -> None:
    assert storage.redact("https://alice:pw@host/x") == "https://host/x"
    assert storage.redact("/tmp/a@b") == "/tmp/a@b"
    # A password with an '@' of its own was shown from there on.
    assert storage.redact("http://u:p@ss@host/x@y") == "http://host/x@y"
    assert storage.redact("https://host/get?who=a@b") == "https://host/get?who=a@b"


@pytest.mark.parametrize("name", ["secret_access_key", "key", "aws_session_token", "password"])
def test_secret_looking_options_are_refused(name: str) -> None:
    """They would be recorded with the job (history, status page)."""
    with pytest.raises(StorageError, match="credential"):
        storage.check_options({name: "x"})


@pytest.mark.parametrize("name", ["client_kwargs", "config_kwargs", "s3_additional_kwargs"])
def test_an_option_that_takes_a_dict_is_refused_by_name(name: str) -> None:
    """--storage-option client_kwargs={} failed in s3fs: "'str' object has
    no attribute 'copy'"."""
    with pytest.raises(StorageError, match=f"the storage option '{name}' takes a dict"):
        storage.check_options({name: "{}"})


def test_urls_with_credentials_are_refused() -> None:
    with pytest.raises(StorageError, match="https://host/x: a URL with credentials"):
        storage.check_no_credentials(["/tmp/a@b", "https://alice:pw@host/x"])
    storage.check_no_credentials(["/tmp/a@b", "s3://bucket/k"])


def test_plain_options_pass() -> None:
    opts = {"endpoint_url": "http://127.0.0.1:1", "requester_pays": "true"}
    assert storage.check_options(opts) == opts


def test_expand_lists_prefix_glob_and_recursive_glob(mem: object) -> None:
    for name in ["logs/2026-01/part-0", "logs/2026-01/part-1", "logs/2026-02/part-0",
                 "logs/2026-02/_SUCCESS", "logs/2026-02/deep/part-9", "other/x"]:
        mem.pipe(f"/{name}", b"abc\n")  # type: ignore[attr-defined]
    glob = storage.expand_inputs(["memory://logs/2026-*/part-*"])
    assert [f.path for f in glob] == ["memory://logs/2026-01/part-0", "memory://logs/2026-01/part-1",
                                      "memory://logs/2026-02/part-0"]
    assert all(f.size == 4 for f in glob)
    deep = storage.expand_inputs(["memory://logs/**/part-9"])
    assert [f.path for f in deep] == ["memory://logs/2026-02/deep/part-9"]
    prefix = storage.expand_inputs(["memory://logs/2026-02"])  # not recursive, _SUCCESS hidden
    assert [f.path for f in prefix] == ["memory://logs/2026-02/part-0"]


def test_local_recursive_glob(tmp_path: Path) -> None:
    """``**`` found only one level before: glob.glob without recursive=True."""
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    for rel in ["x.txt", "a/x.txt", "a/b/c/x.txt"]:
        (tmp_path / rel).write_text("x\n")
    found = [f.path for f in storage.expand_inputs([str(tmp_path / "**" / "x.txt")])]
    assert found == sorted(str(tmp_path / rel) for rel in ["x.txt", "a/x.txt", "a/b/c/x.txt"])


def test_a_file_named_again_through_a_link_is_read_once(tmp_path: Path) -> None:
    """A directory and a symbolic link to it, a file and a link to it: its
    words were counted twice (a tester's)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x y\n")
    (tmp_path / "dlink").symlink_to(tmp_path / "d")
    (tmp_path / "flink.txt").symlink_to(tmp_path / "d" / "f.txt")
    (tmp_path / "other.txt").write_text("x y\n")  # the same bytes, another file
    found = storage.expand_inputs([str(tmp_path / "d"), str(tmp_path / "dlink"),
                                   str(tmp_path / "flink.txt"), str(tmp_path / "other.txt")])
    assert [f.path for f in found] == [str(tmp_path / "d" / "f.txt"),
                                       str(tmp_path / "other.txt")]


def test_a_glob_with_a_trailing_slash_names_directories_only(tmp_path: Path) -> None:
    """``g/*/`` read ``g/top.txt`` too: the shell and glob match only the
    directories; a file named with a trailing '/' is refused."""
    (tmp_path / "g" / "sub").mkdir(parents=True)
    (tmp_path / "g" / "top.txt").write_text("top\n")
    (tmp_path / "g" / "sub" / "in.txt").write_text("inner\n")
    found = [f.path for f in storage.expand_inputs([f"{tmp_path}/g/*/"])]
    assert found == [str(tmp_path / "g" / "sub" / "in.txt")]
    assert len(storage.expand_inputs([f"{tmp_path}/g/*"])) == 2
    with pytest.raises(storage.StorageError, match="is a file, not a directory"):
        storage.expand_inputs([f"{tmp_path}/g/top.txt/"])
    # Through a job's submission, which makes its paths absolute (and lost the '/').
    from pytxmr import client
    from pytxmr.inline import run_inline

    spec = client.submission(str(ROOT / "examples" / "wordcount.py"), [f"{tmp_path}/g/*/"],
                             str(tmp_path / "out")).spec
    assert spec["inputs"] == [f"{tmp_path}/g/*/"]
    run_inline(str(ROOT / "examples" / "wordcount.py"), [f"{tmp_path}/g/*/"],
               str(tmp_path / "out"))
    assert (tmp_path / "out" / "part-00000").read_text() == "inner\t1\n"


def test_a_glob_skips_hidden_directories_as_it_skips_hidden_files(
        tmp_path: Path, mem: object) -> None:
    """``out/*`` matched ``out/_temporary/``, and ``out/**`` the files in it,
    which were read as input (only a hidden file was skipped); a hidden
    directory written out in the pattern is the user's to read."""
    names = ["out/part-0", "out/_SUCCESS", "out/_temporary/part-0", "out/.cache/part-0",
             "out/sub/part-1", "out/sub/_tmp/part-2", "_in/part-3"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
        mem.pipe(f"/{name}", b"x\n")  # type: ignore[attr-defined]
    for root in (f"{tmp_path}/", "memory://"):
        def found(pattern: str) -> list[str]:
            return [f.path.rsplit("/out/", 1)[-1].rsplit("/_in/", 1)[-1]
                    for f in storage.expand_inputs([root + pattern])]

        assert found("out/*") == ["part-0", "sub/part-1"], root
        assert found("out/**/part-*") == ["part-0", "sub/part-1"], root
        assert found("out/_temporary/*") == ["_temporary/part-0"], root  # written out: read
        assert found("_in/part-*") == ["part-3"], root
        with pytest.raises(StorageError, match=r"matches no files \(names starting with '\.' "
                                               r"or '_' are skipped below its first wildcard"):
            found("out/_t*/part-0")


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_an_empty_compressed_input_is_refused(tmp_path: Path, mem: object, suffix: str) -> None:
    """No compressed file is empty (a failed upload): gzip and zstd read one
    as no records, bz2 and xz failed the map."""
    (tmp_path / f"z.txt{suffix}").write_bytes(b"")
    mem.pipe(f"/z.txt{suffix}", b"")  # type: ignore[attr-defined]
    for path in (str(tmp_path / f"z.txt{suffix}"), f"memory://z.txt{suffix}"):
        with pytest.raises(StorageError, match=f"z.txt\\{suffix} is empty, which no compressed "
                                               "file is"):
            storage.expand_inputs([path])
    (tmp_path / "empty.txt").write_bytes(b"")  # an empty text file is no records
    assert storage.expand_inputs([str(tmp_path / "empty.txt")])[0].size == 0


def test_expand_errors_name_the_url(mem: object) -> None:
    with pytest.raises(StorageError, match="memory://nope/x does not exist"):
        storage.expand_inputs(["memory://nope/x"])
    with pytest.raises(StorageError, match="matches no files"):
        storage.expand_inputs(["memory://nope/*.txt"])


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="no store is known for nosuch://"):
        storage.expand_inputs(["nosuch://a/b"])


def test_a_store_without_its_package_names_the_package() -> None:
    """gs:// said `pip install 'pytxmr[gs]'`, an extra pytxmr does not
    have: fsspec's own words name the package (gcsfs)."""
    import importlib.util

    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    with pytest.raises(StorageError) as refused:
        storage.filesystem("gs://bucket/key")
    assert str(refused.value).startswith("gs://bucket/key: gs:// needs another package: ")
    assert "gcsfs" in str(refused.value) and "pytxmr[" not in str(refused.value)


def test_a_store_that_cannot_start_is_a_clear_error() -> None:
    """An installed store whose file system fails to start (hdfs:// with
    pyarrow but no JVM: OSError) escaped as an unhandled error, in the
    jobtracker's log and as a traceback from run --inline."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class Broken(MemoryFileSystem):
        protocol = "pytxmrbroken"

        def __init__(self, **kwargs: Any) -> None:
            raise OSError("Unable to load libjvm")

    fsspec.register_implementation("pytxmrbroken", Broken, clobber=True)
    with pytest.raises(StorageError, match="cannot open the pytxmrbroken:// store of "
                                           "pytxmrbroken://a/b: Unable to load libjvm"):
        storage.expand_inputs(["pytxmrbroken://a/b"])


def test_range_reader_reads_blocks_and_seeks(mem: object) -> None:
    data = bytes(random.Random(1).randrange(256) for _ in range(10_000))
    mem.pipe("/r/blob", data)  # type: ignore[attr-defined]
    with RangeReader("memory://r/blob", block=777) as f:
        assert f.read(10) == data[:10]
        f.seek(5000)
        assert f.read(2000) == data[5000:5777]  # at most to the block's end
        f.seek(9990)
        assert f.read(100) == data[9990:]
        assert f.read(100) == b""
        f.seek(0)
        assert f.read() == data


@pytest.mark.parametrize("answer", [lambda data, start, end: data,  # the range ignored
                                    lambda data, start, end: b"",  # a 206 without a body
                                    lambda data, start, end: data[start:end - 1]])  # short
def test_a_range_answered_wrong_is_an_error(mem: object, monkeypatch: pytest.MonkeyPatch,
                                            answer: Any) -> None:
    """A store that answers a range with other bytes than it asked for (a
    server that said it serves ranges and then does not, an object that
    changed) stops the read: never a silently wrong count."""
    data = b"one two\n" * 1000
    mem.pipe("/r/odd", data)  # type: ignore[attr-defined]
    with RangeReader("memory://r/odd", block=1000) as f:
        assert f.read(1000) == data[:1000]
        monkeypatch.setattr(f._fs, "cat_file",
                            lambda path, start, end: answer(data, start, end))
        monkeypatch.setattr(f, "_take_ahead", lambda start, end: None)
        with pytest.raises(storage.StorageError, match="asked for bytes 1000-1999"):
            f.read(1000)


@pytest.mark.parametrize("block", [3, 7, 64, 1 << 20])
@pytest.mark.parametrize("split_size", [1, 5, 13, 100, 10_000])
def test_remote_splits_read_each_line_once(mem: object, monkeypatch: pytest.MonkeyPatch,
                                           block: int, split_size: int) -> None:
    """Lines longer than a range read, lines across split ends, a last line
    without '\\n': across a file's splits, every line exactly once, as locally."""
    monkeypatch.setattr(rangereader, "RANGE_BLOCK", block)
    rng = random.Random(split_size * 31 + block)
    lines = ["x" * rng.choice([0, 1, 2, 5, 40, 90]) + str(i) for i in range(300)]
    data = ("\n".join(lines)).encode()  # no final newline
    mem.pipe("/d/in.txt", data)  # type: ignore[attr-defined]
    [f] = storage.expand_inputs(["memory://d/in.txt"])
    splits = compute_splits([f], split_size)
    got = [pair for s in splits for pair in read_lines(s, block_size=max(1, block // 2))]
    assert got == reference(data)
    chunks = [text for s in splits for _, text in read_chunks(s, target_bytes=50)]
    assert "".join(chunks) == data.decode()


def test_remote_compressed_input_is_read_whole(mem: object) -> None:
    import gzip

    data = b"".join(b"w%d\n" % i for i in range(5000))
    mem.pipe("/c/in.gz", gzip.compress(data))  # type: ignore[attr-defined]
    files = storage.expand_inputs(["memory://c/in.gz"])
    [split] = compute_splits(files, 100)
    assert split.whole
    assert list(read_lines(split)) == reference(data)


def test_a_file_without_ranges_is_one_whole_split() -> None:
    [split] = compute_splits([InputFile("http://h/f.txt", 1000, ranged=False)], 100)
    assert split == Split(0, "http://h/f.txt", 0, 1000, True)


def test_transient_errors_are_retried_then_named() -> None:
    calls: list[int] = []

    def flaky() -> bytes:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return b"ok"

    assert storage.retrying("s3://b/k", "read", flaky, sleep=lambda s: None) == b"ok"

    def down() -> bytes:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(StorageError, match="cannot read s3://b/k: the server refused the "
                                           "connection"):
        storage.retrying("s3://b/k", "read", down, sleep=lambda s: None)


def test_a_server_that_refuses_connections_is_tried_again_not_missing() -> None:
    """fsspec's HTTP store says FileNotFoundError for a port nothing
    listens on: a web server restarting for a second failed maps at once,
    as a missing file."""
    import socket

    with socket.socket() as s:  # a port just freed: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x.txt"
    with pytest.raises(StorageError, match=f"cannot list {url}: the server refused the "
                                           f"connection"):
        storage.expand_inputs([url])
    fs, path = storage.filesystem(url)
    slept: list[float] = []
    with pytest.raises(StorageError, match="cannot read .*: the server refused the connection"):
        storage.retrying(url, "read", lambda: fs.cat_file(path), sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0]  # tried 4 times, as after a lost connection


def test_s3fs_does_not_multiply_the_tries() -> None:
    """s3fs tried each call 5 times, botocore each of those twice: a store
    that never answered held a listing 10 minutes, a task's read 40."""
    pytest.importorskip("s3fs")
    fs, _ = storage.filesystem("s3://bucket/key", {"endpoint_url": "http://127.0.0.1:9"})
    assert fs.retries == 1
    assert fs.config_kwargs["retries"] == {"max_attempts": 2}
    assert fs.config_kwargs["read_timeout"] == storage.READ_TIMEOUT == 60


def test_missing_credentials_say_which_host_needs_them() -> None:
    """botocore's "Unable to locate credentials", from the jobtracker, to a
    client that has them, named no host."""
    pytest.importorskip("botocore")
    from botocore.exceptions import NoCredentialsError

    said = str(storage.store_error("s3://b/in", NoCredentialsError(), "list"))
    assert said == ("cannot list s3://b/in: no credentials were found on the host that tried "
                    "(the jobtracker's host lists a job's inputs and output, the tasktrackers' "
                    "read and write them)")


def test_missing_object_is_not_retried() -> None:
    calls: list[int] = []

    def missing() -> bytes:
        calls.append(1)
        raise FileNotFoundError("b/k")

    with pytest.raises(StorageError, match="s3://b/k does not exist"):
        storage.retrying("s3://b/k", "read", missing, sleep=lambda s: None)
    assert len(calls) == 1


class TooManyRedirects(Exception):
    """As aiohttp's: a status of 0, nothing answered."""

    status = 0


TooManyRedirects.__module__ = "aiohttp.client_exceptions"


def test_store_errors_say_what_happened() -> None:
    """A server that never answers is not a missing file, a redirect loop
    did not 'answer 0', and an option the store does not take is named."""
    url = "http://h/x.txt"
    try:
        try:
            raise TimeoutError()
        except TimeoutError as e:
            raise FileNotFoundError(url) from e
    except FileNotFoundError as e:
        assert str(storage.store_error(url, e, "list")) == \
            f"cannot list {url}: the server did not answer in time"
    loop = TooManyRedirects("too many redirects")
    assert str(storage.store_error(url, loop, "list")) == \
        f"cannot list {url}: the server redirected it too many times (a loop?)"
    try:  # as fsspec's HTTP store raises it: a missing file, which it is not
        try:
            raise loop
        except TooManyRedirects as e:
            raise FileNotFoundError(url) from e
    except FileNotFoundError as e:
        assert str(storage.store_error(url, e, "list")) == \
            f"cannot list {url}: the server redirected it too many times (a loop?)"
    wrong = TypeError("AioSession.__init__() got an unexpected keyword argument 'endpoint'")
    assert "the storage option 'endpoint' is not one its store takes" in str(
        storage.store_error("s3://b/k", wrong, "list"))
    assert storage.describe(TimeoutError()) == "TimeoutError"


def test_an_http_url_is_probed_as_it_is_read() -> None:
    assert storage._as_sent("http://bücher.example:8080/a b/é.txt?q=x y") == \
        "http://xn--bcher-kva.example:8080/a%20b/%C3%A9.txt?q=x%20y"
    assert storage._as_sent("https://h/x%20y.txt") == "https://h/x%20y.txt"


def test_a_sized_stream_ends_where_its_listing_said() -> None:
    """A read of 0 bytes is not the end (gzip asks for one); the end is."""
    import io

    from pytxmr.rangereader import SizedStream

    whole = SizedStream(io.BytesIO(b"abcdef"), "http://h/x", 6)
    assert whole.read(0) == b"" and whole.read(4) == b"abcd" and whole.read() == b"ef"
    short = SizedStream(io.BytesIO(b"abc"), "http://h/x", 6)
    assert short.read(3) == b"abc"
    with pytest.raises(storage.StorageError, match="ended at byte 3, the server had said 6"):
        short.read(3)


def test_an_object_output_to_replace_loses_its_success_first(
        mem: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a local disk: a deletion cut short must not leave what looks
    like a whole output, so _SUCCESS goes before the parts."""
    from pytxmr import objectoutput
    from pytxmr.outputrules import OUTPUT_MARK, SUCCESS

    for name in ("part-00000", "part-00001", SUCCESS, OUTPUT_MARK):
        mem.pipe(f"/b/out/{name}", b"x")  # type: ignore[attr-defined]
    removed: list[str] = []
    monkeypatch.setattr(objectoutput, "_remove",
                        lambda fs, url, path, names: removed.extend(names))
    objectoutput.prepare("memory://b/out", True, inputs=[], opts={})
    assert removed[0] == SUCCESS and sorted(removed) == sorted(
        ["part-00000", "part-00001", SUCCESS, OUTPUT_MARK])


def test_an_error_that_is_its_own_cause_ends_its_chain() -> None:
    """``raise e from e`` (a StorageError re-raised as itself) made a cause
    chain that loops: a failed job's abort spun on it for ever."""
    e = StorageError("cannot list s3://b/x", "s3://b/x")
    e.__cause__ = e
    assert list(storage._causes(e)) == [e]
    assert storage._permanent(e) in (True, False)


class _NoConditionalWrites:
    """A store's client as s3fs is, for a store that answers a conditional
    write 501 NotImplemented (an S3-compatible store before 2024)."""

    def __init__(self) -> None:
        self.written: dict[str, bytes] = {}

    def call_s3(self, method: str, **kw: object) -> None:
        error = OSError("not implemented")
        error.__cause__ = type("ClientError", (Exception,), {"response": {
            "Error": {"Code": "NotImplemented"}, "ResponseMetadata": {"HTTPStatusCode": 501}}})()
        raise error

    def pipe_file(self, key: str, data: bytes) -> None:
        self.written[key] = data


def test_a_store_without_conditional_writes_gets_its_mark_all_the_same() -> None:
    """Every job's output there would have failed to start."""
    from pytxmr import objectoutput

    fs = _NoConditionalWrites()
    objectoutput._create_mark(fs, "s3://b/out", "b/out", "the mark\n", "job_1 aaaa")
    assert fs.written == {"b/out/_PYTXMR_OUTPUT": b"the mark\n"}
