"""The expected outputs (the word counts of ../shared/bench/peers/inline.py
or of this script; an in-script inverted index) and the check of every run's
output against them, with the rules of ../shared/bench/check_same.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import log

#: Reads an output's part files into key -> value; raises Malformed.
Loader = Callable[[list[str]], dict[bytes, Any]]


class Malformed(Exception):
    pass


def _keyed_lines(paths: list[str], parse: Callable[[bytes], Any],
                 what: str) -> dict[bytes, Any]:
    """key -> parse(value) over `key<TAB>value` lines (rpartition on the last
    tab; a key at most once, across all the part files of an output too)."""
    out: dict[bytes, Any] = {}
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.endswith(b"\n"):
                    line = line[:-1]
                key, sep, value = line.rpartition(b"\t")
                if not sep:
                    raise Malformed(f"{path}:{n}: no tab in line {line[:80]!r}")
                try:
                    out_value = parse(value)
                except ValueError:
                    raise Malformed(f"{path}:{n}: {what}: {value[:80]!r}") from None
                if key in out:
                    raise Malformed(f"{path}:{n}: word {key[:80]!r} appears twice")
                out[key] = out_value
    return out


def load_counts(paths: list[str]) -> dict[bytes, int]:
    """word -> count, with the same rules as ../shared/bench/check_same.py."""
    return _keyed_lines(paths, int, "count is not an integer")


def _file_names(value: bytes) -> tuple[str, ...]:
    names = json.loads(value)
    if not isinstance(names, list) or names != sorted(set(names)):
        raise ValueError("not a sorted list of distinct names")
    return tuple(names)


def load_index(paths: list[str]) -> dict[bytes, tuple[str, ...]]:
    """word -> tuple of file names, from `word<TAB>["a", "b"]` lines."""
    return _keyed_lines(paths, _file_names, "value is not a sorted JSON list of distinct names")


def compare(ref: dict[bytes, Any], got: dict[bytes, Any]) -> str:
    only_ref = ref.keys() - got.keys()
    only_got = got.keys() - ref.keys()
    differ = [w for w in ref.keys() & got.keys() if ref[w] != got[w]]
    if not (only_ref or only_got or differ):
        return "SAME"
    return (f"DIFFERENT: {len(ref)} vs {len(got)} keys; missing {len(only_ref)} "
            f"e.g. {sorted(only_ref)[:3]}, extra {len(only_got)} e.g. {sorted(only_got)[:3]}, "
            f"different values {len(differ)} e.g. "
            f"{[(w, ref[w], got[w]) for w in sorted(differ)[:3]]}")


def output_files(out: str) -> list[str]:
    if os.path.isdir(out):
        return sorted(os.path.join(out, n) for n in os.listdir(out) if n.startswith("part-"))
    return [out] if os.path.exists(out) else []


def check_output(out: str, ref: dict[bytes, Any], loader: Loader) -> str:
    files = output_files(out)
    if not files:
        return "NO OUTPUT"
    try:
        got = loader(files)
    except Malformed as e:
        return f"MALFORMED: {e}"
    return compare(ref, got)


def wordcount_reference(corpus: str, shared: str, env: dict[str, str],
                        cache_dir: str) -> tuple[dict[bytes, int], str]:
    """inline.py's output (cached in ``cache_dir``, never beside a corpus
    of someone else's directory), else an in-script count."""
    inline_py = os.path.join(shared, "peers", "inline.py")
    if os.path.exists(inline_py):
        corpus = os.path.abspath(corpus)
        if os.path.dirname(corpus) == os.path.abspath(cache_dir):
            ref = corpus + ".ref-inline.tsv"
        else:  # another directory's file: its path's hash tells same names apart
            digest = hashlib.sha256(corpus.encode()).hexdigest()[:12]
            ref = os.path.join(cache_dir, f"{os.path.basename(corpus)}.{digest}.ref-inline.tsv")
        if not (os.path.exists(ref) and os.path.getmtime(ref) >= os.path.getmtime(corpus)):
            log("reference: running inline.py (untimed) ...")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, inline_py, corpus, ref + ".tmp"], check=True, env=env)
            os.replace(ref + ".tmp", ref)
            log(f"  done in {time.perf_counter() - t0:.1f} s")
        return load_counts([ref]), f"inline.py output ({ref})"
    log(f"reference: {inline_py} not found; counting in the benchmark script")
    c: Counter[str] = Counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            c.update(line.split())
    return {w.encode(): n for w, n in c.items()}, "in-script count of line.split() tokens"


def distinct_words(path: str, block: int = 1 << 22) -> set[str]:
    """The distinct str.split() tokens of a UTF-8 file, read in blocks cut at
    line ends (a line's separators are whitespace to str.split, so a block's
    tokens are its lines' tokens): memory bounded by the vocabulary and one
    block, not by the file."""
    words: set[str] = set()
    rest = b""
    with open(path, "rb") as f:
        while data := f.read(block):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            words.update(data[:cut].decode("utf-8").split())
            rest = data[cut:]
    words.update(rest.decode("utf-8").split())
    return words


def index_reference(files: list[str]) -> dict[bytes, tuple[str, ...]]:
    """word -> sorted tuple of the base names of the files containing it
    (its size is the vocabulary's times the files', whatever the corpus's)."""
    sets: dict[str, set[str]] = {}
    for path in files:
        name = os.path.basename(path)
        for w in distinct_words(path):
            s = sets.get(w)
            if s is None:
                sets[w] = {name}
            else:
                s.add(name)
    return {w.encode(): tuple(sorted(s)) for w, s in sets.items()}


def cached_index_reference(files: list[str]) -> tuple[dict[bytes, tuple[str, ...]], str]:
    """index_reference of `files`, cached beside them as `ref-index.tsv` in
    the job's output format (read back with load_index): a pass over 5 GB
    of text takes minutes."""
    ref_path = os.path.join(os.path.dirname(files[0]), "ref-index.tsv")
    if (os.path.exists(ref_path)
            and os.path.getmtime(ref_path) >= max(os.path.getmtime(p) for p in files)):
        return load_index([ref_path]), f"in-script index, cached ({ref_path})"
    ref = index_reference(files)
    with open(ref_path + ".tmp", "wb") as f:
        for word, names in ref.items():
            f.write(word + b"\t" + json.dumps(list(names)).encode() + b"\n")
    os.replace(ref_path + ".tmp", ref_path)
    return ref, f"in-script index (word -> sorted file names), saved as {ref_path}"
