"""Word count inputs and checks shared by the integration tests: a
generated corpus, an independent reference (``Counter`` over
``line.split()``) and readers of a job's part files."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from procs import ROOT, Cluster

WORDCOUNT = ROOT / "examples" / "wordcount.py"
WORDCOUNT_BATCH = ROOT / "examples" / "wordcount_batch.py"
WAR_AND_PEACE = ROOT.parent / "shared" / "data" / "warandpeace.txt"

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHéüßж'-0123456789"


def _vocabulary(rng: random.Random, n: int) -> list[str]:
    words = {"".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 9))) for _ in range(n)}
    return sorted(words)


def write_corpus(root: Path) -> Path:
    """A few MB of deterministic random words in several files under
    ``root``: skewed word frequencies, runs of spaces and tabs, CRLF line
    ends in one file, a last line without newline, an empty file."""
    rng = random.Random(20261125)
    vocab = _vocabulary(rng, 6000)
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    for n, size in enumerate([900_000, 700_000, 600_000, 500_000]):
        words = rng.choices(vocab, weights, k=size // 6)
        lines, i = [], 0
        while i < len(words):
            k = rng.randint(0, 14)
            sep = rng.choice([" ", " ", " ", "  ", "\t", " \t "])
            lines.append(sep.join(words[i:i + k]))
            i += k
        newline = "\r\n" if n == 1 else "\n"
        text = newline.join(lines)
        if n != 3:
            text += newline  # file 3 ends without a newline
        (root / f"part{n}.txt").write_text(text, encoding="utf-8", newline="")
    (root / "empty.txt").write_bytes(b"")
    return root


def corpus_files(root: Path) -> list[Path]:
    """The non-empty files of the corpus (part0.txt first, the biggest)."""
    return sorted(root.glob("part*.txt"))


def word_counts(paths: Iterable[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text(encoding="utf-8").split("\n"):
            counts.update(line.split())
    return counts


def part_files(output: Path) -> list[Path]:
    return sorted(output.glob("part-*"))


def read_wordcount(output: Path) -> list[dict[str, int]]:
    """One {word: count} per part file; fails on a duplicated key."""
    parts = []
    for path in part_files(output):
        counts: dict[str, int] = {}
        for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
            word, count = line.split("\t")
            assert word not in counts, f"{word!r} twice in {path.name}"
            counts[word] = int(count)
        parts.append(counts)
    return parts


def assert_committed(output: Path, reducers: int) -> None:
    names = sorted(p.name for p in output.iterdir())
    assert names == ["_PYTXMR_OUTPUT", "_SUCCESS"] + [f"part-{i:05d}" for i in range(reducers)], names


def assert_ok(result: tuple[int, str, str], cluster: Cluster | None = None) -> str:
    rc, out, err = result
    logs = cluster.logs() if cluster is not None else ""
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}\n{logs}"
    return out


def merged(parts: list[dict[str, int]]) -> dict[str, int]:
    """The part files' counts together; a key may be in one part only."""
    union: dict[str, int] = {}
    for part in parts:
        assert not union.keys() & part.keys(), "a key in two part files"
        union.update(part)
    return union


def slow_wordcount(map_sleep: float, reduce_sleep: float = 0.0) -> str:
    """A word count module whose tasks take their time, for tests that act
    on a cluster while a job runs (a sleep per line, per key)."""
    return (f"import time\n\n\ndef map(key, line):\n    time.sleep({map_sleep})\n"
            f"    for word in line.split():\n        yield word, 1\n\n\n"
            f"def reduce(word, counts):\n    time.sleep({reduce_sleep})\n"
            f"    yield word, sum(counts)\n")


def hanging_job(said: str) -> str:
    """A job module whose map prints ``said`` and its line, then hangs (a
    task to kill, or to look at while it runs)."""
    return (f"import time\n\n\ndef map(offset, line):\n"
            f"    print({said!r}, line.strip(), flush=True)\n    time.sleep(60)\n"
            f"    yield line, 1\n\n\ndef reduce(key, values):\n    yield key, sum(values)\n")
