"""Word normalisation shared by jobs: lower case, letters and digits only
(``"Hello,"`` and ``"hello"`` are one word)."""

import re

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(line: str) -> list[str]:
    return _WORD.findall(line.lower())
