"""HTTP inputs from real servers (Twisted's static files on loopback, see
pytxmr.testing.httpfiles): with ranges, without, failing, truncating;
checked against ``collections.Counter``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ROOT, run_cli
from wordcounts import WORDCOUNT, corpus_files, read_wordcount, word_counts

from pytxmr import storage
from pytxmr.testing.httpfiles import HTTPFiles

pytest.importorskip("aiohttp")
pytest.importorskip("fsspec")


@pytest.fixture(scope="module")
def servers(corpus: Path) -> Iterator[dict[str, HTTPFiles]]:
    started: dict[str, HTTPFiles] = {}
    try:
        for mode in ("normal", "norange", "fail", "truncate", "nolength", "dropclose"):
            started[mode] = HTTPFiles(corpus, mode).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(*args, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path, timeout=180)


def merged(output: Path) -> Counter[str]:
    total: Counter[str] = Counter()
    for part in read_wordcount(output):
        assert not set(part) & set(total)
        total.update(part)
    return total


@pytest.mark.parametrize("mode", ["normal", "norange", "nolength"])
@pytest.mark.parametrize("how", [["--inline"], ["--workers", "2"]], ids=["inline", "run"])
def test_http_inputs(tmp_path: Path, corpus: Path, servers: dict[str, HTTPFiles],
                     mode: str, how: list[str]) -> None:
    """Ranged: split like a local file; not ranged, or of a size the server
    does not say: one map streams each file. Same counts either way."""
    files = corpus_files(corpus)
    urls = [servers[mode].url(f.name) for f in files]
    out = tmp_path / "out"
    code, stdout, stderr = cli(tmp_path, "run", str(WORDCOUNT), *urls, "-o", str(out),
                               "--split-size", "200K", *how)
    assert code == 0, stderr
    assert merged(out) == word_counts(files)
    found = storage.expand_inputs(urls)
    sizes = [f.stat().st_size for f in files] if mode != "nolength" else [0] * len(files)
    assert [f.size for f in found] == sizes
    assert {f.ranged for f in found} == {mode == "normal"}  # else one map per file


def test_a_failing_server_is_named_at_submission(tmp_path: Path, corpus: Path,
                                                 servers: dict[str, HTTPFiles]) -> None:
    url = servers["fail"].url("part0.txt")
    for how in (["--inline"], ["--workers", "1"]):
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o",
                              str(tmp_path / "out"), *how)
        assert code == 2 and url in stderr and "500" in stderr, stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["truncate", "dropclose"])
def test_the_server_closes_a_cut_transfer_at_once(tmp_path: Path, mode: str) -> None:
    """As pytxmr.testing.httpfiles says: half the body, then the connection
    closed. It was held open (for a file of a few hundred KB) until
    Twisted's 60 s idle timeout, so every try of a read there waited."""
    import time

    import base64

    name = "big.txt"
    (tmp_path / name).write_bytes(base64.encodebytes(os.urandom(200_000)))
    size = (tmp_path / name).stat().st_size
    with HTTPFiles(tmp_path, mode) as server:
        started = time.monotonic()
        got = _cut_read(server.port, name)
    assert got == size // 2 and time.monotonic() - started < 10


def _cut_read(port: int, name: str) -> int:
    """The bytes of a GET until the server closes; HTTP/1.1 and keep-alive,
    as fsspec's aiohttp and curl ask (urllib's "Connection: close" had the
    server close once its response ended)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/{name}")
        response = conn.getresponse()
        try:
            return len(response.read())
        except http.client.IncompleteRead as e:  # Content-Length promised more
            return len(e.partial)
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["truncate", "dropclose"])
def test_a_truncated_transfer_fails_the_job_cleanly(tmp_path: Path, corpus: Path,
                                                    servers: dict[str, HTTPFiles],
                                                    mode: str) -> None:
    """Cut short with its length announced, or without (a body that ends
    with the connection, shorter than the listing said): never a count of
    half the file."""
    url = servers[mode].url("part0.txt")
    out = tmp_path / "out"
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o", str(out),
                          "--workers", "1", "--max-attempts", "2")
    assert code == 1 and "part0.txt" in stderr, stderr
    if mode == "dropclose":
        assert "the transfer ended at byte" in stderr, stderr
    assert not (out / "_SUCCESS").exists() and not list(out.glob("part-*"))


def test_missing_file_is_named(tmp_path: Path, servers: dict[str, HTTPFiles]) -> None:
    url = servers["normal"].url("nope.txt")
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o", str(tmp_path / "o"),
                          "--inline")
    assert code == 2 and url in stderr and "does not exist" in stderr, stderr


def test_a_wildcard_in_a_url_is_said_to_need_a_listing(servers: dict[str, HTTPFiles]) -> None:
    """HTTP lists nothing to match '*' against: it was "does not exist",
    as if the files were missing."""
    url = f"http://127.0.0.1:{servers['normal'].port}/part*.txt"
    with pytest.raises(storage.StorageError, match="HTTP has no listing") as e:
        storage.expand_inputs([url])
    assert url in str(e.value)


def test_a_directory_listing_page_is_refused_and_an_html_file_is_read(tmp_path: Path) -> None:
    """A directory's URL (with its '/', or without and redirected to it;
    the server's root too, whose '/' the submission dropped) answers a
    server's HTML list of the files: refused at submission, where its
    markup's words were counted. An HTML file is a file."""
    root = tmp_path / "www"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "a.txt").write_text("one two\n")
    (root / "page.html").write_text("<p>three four</p>\n")
    with HTTPFiles(root, "normal") as server:
        for url in (server.url("logs/"), server.url("logs"), server.url("")):
            for how in (["--inline"], ["--workers", "1"]):
                code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o",
                                      str(tmp_path / "out"), *how)
                assert code == 2 and "is an HTML page at a directory's URL" in stderr, stderr
                assert url.rstrip("/") in stderr and not (tmp_path / "out").exists()
        page = server.url("page.html")
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), page, "-o",
                              str(tmp_path / "html"), "--inline", "-q")
        assert code == 0, stderr
        assert merged(tmp_path / "html") == Counter("<p>three four</p>".split())


@pytest.mark.parametrize("how", [[], ["--inline"]], ids=["run", "inline"])
def test_http_output_is_refused(tmp_path: Path, servers: dict[str, HTTPFiles],
                                how: list[str]) -> None:
    """With its reason (inline said "the bucket ... does not exist")."""
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), servers["normal"].url("part0.txt"),
                          "-o", servers["normal"].url("out"), *how)
    assert code == 2 and "http(s) URLs are inputs only" in stderr, stderr


def test_an_object_that_shrank_since_its_listing_fails_its_split(tmp_path: Path) -> None:
    """An input listed at 250 KB that has 150 KB when a map reads it: the
    split past its new end fails, naming the URL, where it was read to the
    new end and counted part of the file as if it were all."""
    from pytxmr.splits import InputError, compute_splits, read_lines

    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("word\n" * 50_000)
    with HTTPFiles(root, "normal") as server:
        url = server.url("f.txt")
        listed = storage.expand_inputs([url])
        splits = compute_splits(listed, 100_000)
        assert len(splits) == 3
        (root / "f.txt").write_text("word\n" * 30_000)
        assert sum(1 for _ in read_lines(splits[0])) == 20_000  # its bytes are all there
        with pytest.raises(InputError, match="f.txt: the object changed during the job: it had "
                                             "at least 250,000 bytes, it has 150,000 now"):
            list(read_lines(splits[2]))


def test_a_jobs_store_options_are_not_given_to_its_http_inputs(
        tmp_path: Path, corpus: Path, servers: dict[str, HTTPFiles]) -> None:
    """``--storage-option endpoint_url=...`` is for the job's object store:
    given to aiohttp too, it made every HTTP input "does not exist"."""
    files = corpus_files(corpus)[:1]
    url = servers["normal"].url(files[0].name)
    out = tmp_path / "out"
    code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), url, "-o", str(out), "--inline",
                          "--storage-option", "region_name=us-east-1")
    assert code == 0, stderr
    assert merged(out) == word_counts(files)


@pytest.mark.parametrize("query", ["", "?token=abc.gz1"], ids=["plain", "signed"])
@pytest.mark.parametrize("how", [["--inline"], ["--workers", "2"]], ids=["inline", "run"])
def test_a_gz_file_served_with_its_content_encoding_is_unzipped_once(
        tmp_path: Path, corpus: Path, how: list[str], query: str) -> None:
    """Twisted's static files (as other servers) send a .gz file with
    ``Content-Encoding: gzip``: aiohttp unzipped it, then pytxmr again
    ("Not a gzipped file"). A signed URL's query hid its .gz: the gzip's
    bytes were read as lines, and the job succeeded with garbage."""
    import gzip

    files = corpus_files(corpus)[:1]
    root = tmp_path / "www"
    root.mkdir()
    (root / "part.txt.gz").write_bytes(gzip.compress(files[0].read_bytes()))
    with HTTPFiles(root, "normal") as server:
        out = tmp_path / "out"
        code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT),
                              server.url("part.txt.gz") + query, "-o", str(out),
                              "--split-size", "64K", *how)
    assert code == 0, stderr
    assert merged(out) == word_counts(files)


@pytest.mark.parametrize("suffix", ["", ".xz", ".bz2", ".gz"])
def test_a_server_that_gzips_what_it_sends_is_read_through(tmp_path: Path, corpus: Path,
                                                           suffix: str) -> None:
    """A server may gzip what it sends whoever accepts it (nginx's
    ``gzip_types``), a file compressed already too: a .xz came as gzip's
    bytes, "corrupt or truncated compressed input". A compressed input is
    asked for as it is."""
    import bz2
    import gzip
    import lzma

    compress = {"": bytes, ".xz": lzma.compress, ".bz2": bz2.compress, ".gz": gzip.compress}
    files = corpus_files(corpus)[:1]
    root = tmp_path / "www"
    root.mkdir()
    (root / f"part.txt{suffix}").write_bytes(compress[suffix](files[0].read_bytes()))
    with HTTPFiles(root, "gzip") as server:
        for how in (["--inline"], ["--workers", "2"]):
            out = tmp_path / f"out{len(how)}"
            code, _, stderr = cli(tmp_path, "run", str(WORDCOUNT), server.url(f"part.txt{suffix}"),
                                  "-o", str(out), "--split-size", "64K", *how)
            assert code == 0, stderr
            assert merged(out) == word_counts(files)
