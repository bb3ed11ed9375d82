"""The input: a corpus of N MB generated once and cached (the shared
generator when present, else a built-in one), cut into files for the
inverted index, and read once before the runs (page cache)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

from . import MB, log


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def builtin_corpus(path: str, mb: float, seed: int) -> None:
    """A simple Zipf corpus (used when ../shared/bench/make_corpus.py is absent):
    200,000 pseudo-words, weight of rank r = 1/(r + 2.7), lines of 60-100
    characters, words separated by one space; ASCII whitespace only."""
    vrng = random.Random(20240101)
    vocab: list[str] = []
    seen: set[str] = set()
    while len(vocab) < 200_000:
        w = "".join(vrng.choices("abcdefghijklmnopqrstuvwxyz",
                                 k=max(2, min(14, int(vrng.gauss(6.5, 2.5))))))
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    cum = list(itertools.accumulate(1.0 / (r + 2.7) for r in range(1, len(vocab) + 1)))
    rng = random.Random(seed)
    target, written = int(mb * MB), 0
    with open(path, "wb") as out:
        while written < target:
            words = rng.choices(vocab, cum_weights=cum, k=100_000)
            lines: list[str] = []
            line: list[str] = []
            n = 0
            want = rng.randint(60, 100)
            for w in words:
                line.append(w)
                n += len(w) + 1
                if n > want:
                    lines.append(" ".join(line))
                    written += n  # the line and its '\n'
                    line, n, want = [], 0, rng.randint(60, 100)
                    if written >= target:  # stop after the line that reaches the size
                        break
            out.write(("\n".join(lines) + "\n").encode())


def ensure_corpus(mb: float, out_dir: str, shared: str) -> tuple[str, dict[str, Any]]:
    """The corpus of `mb` MB in out_dir, generated once (seed 1) and cached."""
    gen = os.path.join(shared, "make_corpus.py")
    generator = "make_corpus.py --seed 1" if os.path.exists(gen) else "built-in (seed 1)"
    name = f"corpus{mb:g}.txt"
    path = os.path.join(out_dir, name)
    meta_path = path + ".meta.json"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta["generator"] == generator and meta["mb"] == mb
                and os.path.getsize(path) == meta["bytes"]):
            return path, meta
    except (OSError, ValueError, KeyError):
        pass
    log(f"generating {path} ({mb:g} MB, {generator}) ...")
    t0 = time.perf_counter()
    tmp = path + ".tmp"
    if os.path.exists(gen):
        subprocess.run([sys.executable, gen, "--mb", f"{mb:g}", "--out", tmp, "--seed", "1"],
                       check=True)
    else:
        log(f"  ({gen} not found: using the built-in generator)")
        builtin_corpus(tmp, mb, 1)
    os.replace(tmp, path)
    meta = {"generator": generator, "mb": mb, "bytes": os.path.getsize(path),
            "sha256": _sha256(path)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"  {meta['bytes']:,} bytes in {time.perf_counter() - t0:.1f} s, sha256 {meta['sha256']}")
    return path, meta


def warm_up(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass
    return time.perf_counter() - t0


def split_corpus(path: str, parts: int) -> list[str]:
    """Cut `path` at line boundaries into `parts` files of about equal size (cached)."""
    base = os.path.splitext(path)[0]
    d = f"{base}-split{parts}"
    names = [os.path.join(d, f"{os.path.basename(base)}-{i:02d}.txt") for i in range(parts)]
    stamp = os.path.join(d, "DONE")
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(path):
        return names
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        cuts = [0]
        for i in range(1, parts):
            f.seek(max(cuts[-1], size * i // parts))
            f.readline()
            cuts.append(f.tell())
        cuts.append(size)
        for name, a, b in zip(names, cuts, cuts[1:]):
            f.seek(a)
            with open(name, "wb") as out:
                left = b - a
                while left:
                    block = f.read(min(left, 1 << 22))
                    out.write(block)
                    left -= len(block)
    open(stamp, "w").close()
    return names
