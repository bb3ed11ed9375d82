"""``pytxmr.Step``: one map-and-reduce stage of a multi-step job.

A job module that sets ``steps = [Step(...), Step(...)]`` runs them in
order in one submission: each step's reduce output, the ``(key, value)``
pairs as its reduce yielded them, is the next step's map input. A step
without ``reduce`` is map-only; a later step without ``map`` passes its
input pairs on unchanged. Pure data: ``jobmodule`` checks and resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

Fn = Optional[Callable[..., Any]]


@dataclass(frozen=True)
class Step:
    map: Fn = None
    reduce: Fn = None
    combine: Fn = None
    partition: Fn = None
    num_reducers: Optional[int] = None
    map_init: Fn = None
    map_final: Fn = None
    reduce_init: Fn = None
    reduce_final: Fn = None
    #: Each key's values reach reduce sorted (see docs/jobs.md).
    sort_values: bool = False
    #: The first step's input format (``pytxmr.readers``); later steps read
    #: the pairs of the step before.
    reader: Fn = None


def reduce_tasks(num_reducers: int | None, map_only: bool, fixed: bool,
                 option: int | None, slots: int) -> int:
    """The reduce tasks of a step: none for a map-only one; a ``Step``'s
    own number (part of its algorithm, as a top-N's one reducer); else
    ``--reducers``, the module's ``num_reducers``, or one per slot."""
    if map_only:
        return 0
    if fixed and num_reducers:
        return num_reducers
    return option or num_reducers or max(1, slots)
