"""The job's own counters, read from the summary a pytxmr command prints
when not given -q (`pytxmr.cli.print_counters`): among them how many
bytes its maps wrote and its reduces fetched, and where those were kept."""

from __future__ import annotations

import re

#: The framework's counter group (pytxmr.counters.FRAMEWORK).
FRAMEWORK = "pytxmr"
#: The counters the tables show, in MB: map outputs as written (compressed
#: or not), fetched by the reduces, and the part of that kept on disk.
SHOWN = ("map output materialized bytes", "shuffle bytes", "shuffle bytes on disk")

_COUNTER = re.compile(r"^    (\S.*?)\s+(-?[\d,]+)$")
_GROUP = re.compile(r"^  (\S.*)$")


def read_counters(log_path: str) -> dict[str, dict[str, int]]:
    """group -> name -> value, from the summary after the "succeeded" line
    of a command's log; empty when it printed none (-q, a failure)."""
    out: dict[str, dict[str, int]] = {}
    group: dict[str, int] | None = None
    started = False
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if not started:
                    started = " succeeded in " in line
                    continue
                m = _COUNTER.match(line)
                if m and group is not None:
                    group[m.group(1)] = int(m.group(2).replace(",", ""))
                    continue
                m = _GROUP.match(line)
                group = out.setdefault(m.group(1), {}) if m else None
    except OSError:
        pass
    return out


def shown(counters: dict[str, dict[str, int]]) -> dict[str, int]:
    """The framework counters of SHOWN that the command printed."""
    framework = counters.get(FRAMEWORK, {})
    return {name: framework[name] for name in SHOWN if name in framework}
