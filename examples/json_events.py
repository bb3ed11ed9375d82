"""Totals per event type from JSON lines: a built-in input format.

``reader = readers.json_lines`` gives ``map`` each line's decoded JSON
object (the key is the line's byte offset), so the job never parses text.
The output is JSON lines too (``output_format = "jsonl"``): one
``[type, {"events": n, "cents": total}]`` array per event type. Run it with::

    python -m pytxmr run examples/json_events.py data/events.jsonl -o /tmp/events
"""

from collections.abc import Iterable, Iterator
from typing import Any

from pytxmr import readers

reader = readers.json_lines
output_format = "jsonl"


def map(offset: int, event: dict[str, Any]) -> Iterator[tuple[str, tuple[int, int]]]:
    yield event["type"], (1, event.get("cents", 0))


def combine(kind: str, pairs: Iterable[tuple[int, int]]) -> Iterator[tuple[str, tuple[int, int]]]:
    events = cents = 0
    for n, c in pairs:
        events += n
        cents += c
    yield kind, (events, cents)


def reduce(kind: str, pairs: Iterable[tuple[int, int]]) -> Iterator[tuple[str, dict[str, int]]]:
    for _, (events, cents) in combine(kind, pairs):
        yield kind, {"events": events, "cents": cents}
