"""Job arguments: values a submitter passes to a job (``--arg NAME=VALUE``)
and the job's tasks read with ``pytxmr.args()``.

The arguments travel as strings with the job (and are recorded with it);
every task child, and the submission check before them, turns them into
values with the job's declarations, so a missing or malformed argument is
refused at submission, never at task time. Nothing here reads the
environment: a job sees what its submitter passed, the same under ``run``,
``run --inline``, ``submit`` and the Python API. Pure, no Twisted.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

__all__ = ["Arg", "ArgumentError", "args", "parse", "declared", "describe"]

#: The default of an argument that must be given.
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ArgumentError(ValueError):
    """A job argument that is missing, unknown, repeated or malformed."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean (use one of {', '.join(_TRUE + _FALSE)})")


@dataclass(frozen=True)
class Arg:
    """One declared argument of a job: ``type`` turns its text into its value
    (``str``, ``int``, ``float``, ``bool`` or any callable taking a str)."""

    name: str
    type: Callable[[str], Any] = str
    default: Any = REQUIRED
    help: str = ""
    choices: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ArgumentError(f"an argument's name must be an identifier, not {self.name!r}")
        if not callable(self.type):
            raise ArgumentError(f"argument {self.name}: its type must be callable")
        if (self.choices is not None and self.default not in (REQUIRED, None)
                and not self._text_default and self.default not in self.choices):
            # Else a job run without the argument gets a value no user may give.
            raise ArgumentError(f"argument {self.name}: its default {self.default!r} is not "
                                f"one of {', '.join(map(str, self.choices))}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def _text_default(self) -> bool:
        return isinstance(self.default, str) and self.type is not str

    def default_value(self) -> Any:
        """The value of a job run without the argument. A default given as
        text is read as the text of an --arg is, when it is needed, as
        argparse reads its defaults: a job got the str "8" where int gives
        8 (and a type that opens a file opens the default's only then)."""
        if self._text_default:
            return self._convert(self.default, f"its default {self.default!r}")
        return self.default

    def convert(self, text: str) -> Any:
        return self._convert(text, repr(text))

    def _convert(self, text: str, shown: str) -> Any:
        convert = _bool if self.type is bool else self.type
        try:
            value = convert(text)
        except (TypeError, ValueError) as e:
            kind = getattr(self.type, "__name__", "value")
            raise ArgumentError(f"argument {self.name}: {shown} is not a valid {kind} "
                                f"({e})") from None
        if self.choices is not None and value not in self.choices:
            raise ArgumentError(f"argument {self.name}: {shown} is not one of "
                                f"{', '.join(map(str, self.choices))}")
        return value


def declared(module: Any) -> tuple[Arg, ...] | None:
    """The module's ``arguments`` declarations; None when it declares none
    (then any argument is taken, as a string)."""
    found = getattr(module, "arguments", None)
    if found is None:
        return None
    where = getattr(module, "__file__", "the job module")
    if isinstance(found, (str, bytes, Mapping)) or not isinstance(found, Iterable):
        raise ArgumentError(f"{where}: 'arguments' must be a list of pytxmr.Arg")
    found = tuple(found)
    if not all(isinstance(a, Arg) for a in found):
        raise ArgumentError(f"{where}: 'arguments' must be a list of pytxmr.Arg")
    names = [a.name for a in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArgumentError(f"{where}: the argument {twice[0]} is declared twice")
    return found


def check_pairs(given: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``NAME=VALUE`` pairs as a dict; an argument given twice is refused."""
    out: dict[str, str] = {}
    for pair in given:
        name, value = _pair(pair)
        if not isinstance(name, str) or not name.isidentifier():
            raise ArgumentError(f"a job argument's name must be an identifier, not {name!r}")
        if not isinstance(value, str):
            raise ArgumentError(f"argument {name}: its value must be a string")
        if name in out:
            raise ArgumentError(f"argument {name} is given twice")
        out[name] = value
    return out


def _pair(pair: Any) -> tuple[Any, Any]:
    if not isinstance(pair, (str, bytes)):  # "ab" would unpack as ("a", "b")
        try:
            name, value = pair
            return name, value
        except (TypeError, ValueError):
            pass
    raise ArgumentError(f"job arguments are (name, value) pairs or a dict, not {pair!r:.100}")


def parse(declarations: Sequence[Arg] | None, given: Mapping[str, str]) -> dict[str, Any]:
    """The job's argument values: typed and with defaults when declared,
    the given strings otherwise."""
    if declarations is None:
        return dict(given)
    by_name = {a.name: a for a in declarations}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        takes = ", ".join(by_name) or "none"
        raise ArgumentError(f"the job declares no argument {unknown[0]} (it takes: {takes})")
    values: dict[str, Any] = {}
    for arg in declarations:
        if arg.name in given:
            values[arg.name] = arg.convert(given[arg.name])
        elif arg.required:
            raise ArgumentError(f"the job needs the argument {arg.name}: "
                                f"--arg {arg.name}=VALUE" + (f" ({arg.help})" if arg.help else ""))
        else:
            values[arg.name] = arg.default_value()
    return values


def describe(declarations: Sequence[Arg] | None, filename: str) -> str:
    """The ``--help-job`` text."""
    if declarations is None:
        return f"{filename} declares no arguments (any --arg NAME=VALUE is passed as a string)"
    if not declarations:
        return f"{filename} takes no arguments"
    lines = [f"arguments of {filename} (--arg NAME=VALUE):"]
    for a in declarations:
        kind = "bool" if a.type is bool else getattr(a.type, "__name__", "value")
        extra = "required" if a.required else f"default {a.default!r}"
        if a.choices is not None:
            extra += f"; one of {', '.join(map(str, a.choices))}"
        lines.append(f"  {a.name} ({kind}, {extra})" + (f": {a.help}" if a.help else ""))
    return "\n".join(lines)


_current: Mapping[str, Any] = types.MappingProxyType({})


def use(values: Mapping[str, Any]) -> None:
    """Set what ``args()`` returns in this process (a task child, or the
    process of ``run --inline``)."""
    global _current
    _current = types.MappingProxyType(dict(values))


#: True while a job module's top level runs (``loading``): its arguments
#: are parsed by what it declares, so they are not known yet.
_loading = False


@contextlib.contextmanager
def loading() -> Iterator[None]:
    global _loading
    _loading = True
    try:
        yield
    finally:
        _loading = False


def args() -> Mapping[str, Any]:
    """This job's arguments, read-only."""
    if _loading:
        # At the top level it gave {}, or the arguments of the task before
        # in the process: refused, whatever was given.
        raise ArgumentError(
            "pytxmr.args() is not known while the job module is imported (its declared "
            "arguments say how to read them): call it in map, reduce or a hook, such as "
            "map_init for a value each task computes once")
    return _current
