"""The protocol's vocabulary: what crosses the wire between jobtracker,
tasktrackers and clients, in one place.

The protocol version, the login roles, the shared constants, the typed
records (frozen dataclasses with ``to_wire``/``from_wire``) and the errors a
peer may be told. Pure: both daemons and the task children import it, and
PB appears only in the adapters (``pytxmr.pbwire`` and each daemon's
``pbadapter``), which carry plain data (dicts, lists, str, bytes, numbers):
no Copyable, no jelly class registry. ``from_wire`` checks what a peer
could get wrong, so that the logic behind an adapter sees typed values only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .counters import COUNTER_MAX, COUNTER_MIN, shown_total
from .splits import Split

#: 2: frames may be LZ4-compressed (codec 2), which version-1 workers refuse.
#: 3: jobs have arguments, bundles and steps; map-only steps (0 reducers).
#: 4: TLS, users and job owners, drain (a worker's ``stop``); peers say the
#:    oldest version they still speak, and work together where the ranges
#:    meet (rolling upgrades; docs/deploy.md).
#: 5: map outputs in record format 3 (PAIRS frames, run breaks, a crc32
#:    over the codec byte: docs/record-format.md), which 4's readers refuse.
PROTOCOL_VERSION = 5
#: The oldest version of a client this one works with: the client side of
#: the protocol has not changed since 3 (3's clients name no owner).
MIN_PROTOCOL_VERSION = 3
#: The oldest version of a tasktracker: workers read each other's map
#: outputs, and a worker of 4 cannot read those of 5. A tasktracker says so
#: when it registers, so that a jobtracker of 4 refuses it too.
MIN_WORKER_PROTOCOL = 5


def check_protocol(d: Mapping[str, Any], who: str, oldest_ok: int = MIN_PROTOCOL_VERSION) -> None:
    """Refuse a peer whose versions [min_protocol, protocol] do not meet
    ours, [oldest_ok, PROTOCOL_VERSION] (a peer of version 3 sends no
    min_protocol: only 3)."""
    if "protocol" not in d:  # not an old peer: one that is not pytxmr's ("speaks None")
        raise ProtocolMismatch(f"{who} names no protocol version: its message was not made "
                               f"by pytxmr")
    version, oldest = d.get("protocol"), d.get("min_protocol", d.get("protocol"))
    if not (type(version) is int and type(oldest) is int and oldest <= PROTOCOL_VERSION
            and version >= oldest_ok):
        raise ProtocolMismatch(
            f"{who} speaks protocol {version!r} (oldest {oldest!r}), this jobtracker "
            f"{oldest_ok} to {PROTOCOL_VERSION}: upgrade the older side")

#: Login names: the secret is the same, the role decides the avatar.
ROLE_TASKTRACKER = b"tasktracker"
ROLE_CLIENT = b"client"

DEFAULT_PORT = 7373
DEFAULT_WEB_PORT = 7374  # the jobtracker's status site
DEFAULT_SHUFFLE_PORT = 0
DEFAULT_HEARTBEAT = 1.0
#: Seconds a waiting client goes on trying to reach a jobtracker it lost
#: (a restarted one resumes its jobs).
RECONNECT_TIMEOUT = 120.0
#: The bytes of a job's module and arguments: its definition (``JobInit``)
#: goes to each worker in one string, of which Banana sends 640 KB at most;
#: 700 KB of --arg values were admitted, the job then stuck holding every
#: slot. The client checks it too: a submission over 640 KB could not even
#: be sent, and went out as Banana's traceback.
MAX_DEFINITION_BYTES = 512 << 10


def definition_too_big(source: str, args: Mapping[str, str]) -> str | None:
    """Why a job's module and arguments are too big to travel, if they are."""
    size = sum(len(text.encode("utf-8", "surrogatepass"))
               for text in (source, *args.keys(), *args.values()))
    if size <= MAX_DEFINITION_BYTES:
        return None
    return (f"the job's module and arguments take {size:,} bytes, more than the "
            f"{MAX_DEFINITION_BYTES:,} a job's definition may (it goes to each worker in one "
            f"message): ship data with --files, not in the module or --arg")


#: What a status reply's ``maps["awaited"]`` counts, as people read it.
AWAITED_MAPS = "done before the jobtracker's restart, awaited from their tasktrackers"

#: The error type a tasktracker reports for a reduce attempt that finished
#: but lost the race to commit: not a failure of the task.
COMMIT_DENIED = "CommitDenied"
#: The error type of an attempt that found its job's output another job's
#: (an object store's mark, read before an upload): the job fails at once,
#: its output left as it is; another attempt would find the same.
OUTPUT_TAKEN = "OutputTaken"

__all__ = [
    "Split", "PROTOCOL_VERSION", "COMMIT_DENIED", "OUTPUT_TAKEN", "JobInit", "MapLocation",
    "AttemptResult",
    "TaskError", "Registration", "Heartbeat", "jobtracker_endpoint",
]


# --- errors a peer is told -----------------------------------------------------

class Refused(Exception):
    """A request the receiver refuses; the message says why. The PB adapters
    send these as ``pb.Error`` (no traceback logged), keeping the class name."""


class ProtocolMismatch(Refused):
    """The peer speaks another protocol version."""


class SubmissionError(Refused):
    """A job was refused at submission; the message says why."""


class UnknownJob(Refused):
    """No job with that id."""


class NotAllowed(Refused):
    """A user asked for what only another user or an administrator may do
    (kill another's job, read its logs, drain a worker)."""


class NoSuchWorker(Refused):
    """A client named a worker (to drain) that is not registered."""


class UnknownWorker(Refused):
    """A tasktracker spoke with a worker id the jobtracker no longer knows
    (it was declared lost): it must register again."""


class BadMessage(Refused):
    """A message whose fields do not have the protocol's types."""


class Unreachable(Exception):
    """An outbound call could not be made or answered: the connection is
    gone, or the peer refused it (``CallRefused``)."""


class CallRefused(Unreachable):
    """The peer answered a call with an error (e.g. ``UnknownWorker``: we
    were declared lost meanwhile and must register again)."""


# --- field checks --------------------------------------------------------------

def _fields(record: str, d: Any, **types: Any) -> dict[str, Any]:
    """``d``'s fields, each of its type (a type, a tuple of types, or
    ``(type, default)`` for an optional one); BadMessage names the first
    that is not."""
    if not isinstance(d, Mapping):
        raise BadMessage(f"{record} must be a dict, not {type(d).__name__}")
    out = {}
    for name, kind in types.items():
        if isinstance(kind, list):  # [type, default]: optional
            kind, value = kind[0], d.get(name, kind[1])
            if value is None:
                out[name] = None
                continue
        elif name not in d:
            raise BadMessage(f"{record} has no {name!r}")
        else:
            value = d[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise BadMessage(f"{record}.{name} has the wrong type: {type(value).__name__}")
        out[name] = value
    return out


def _strings(record: str, name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BadMessage(f"{record}.{name} must be a list of strings")
    return tuple(value)


def _counters(record: str, value: Any) -> dict[str, dict[str, int]]:
    if value is None:
        return {}
    if not (isinstance(value, dict) and all(
            isinstance(g, str) and isinstance(c, dict)
            and all(isinstance(n, str) and type(v) is int for n, v in c.items())
            for g, c in value.items())):
        raise BadMessage(f"{record}.counters must map group -> name -> int")
    for group, names in value.items():
        for name, n in names.items():
            if not COUNTER_MIN <= n <= COUNTER_MAX:
                raise BadMessage(f"the counter {group!r:.100} / {name!r:.100} is "
                                 f"{shown_total(n)}, beyond what 64 bits hold")
    return value


# --- records -------------------------------------------------------------------

@dataclass(frozen=True)
class JobInit:
    """What a worker needs of a job (of one step of it) before its first task."""

    job_id: str
    source: str
    filename: str
    token: bytes
    map_name: str
    reduce_name: str
    num_maps: int
    #: 0: a map-only step, whose maps commit part files.
    num_reducers: int
    #: Where the step's part files go: the job's output, or for a step
    #: before the last, a directory in it (``stepdata``).
    output: str
    buffer_records: int | None = None
    compress: str | None = None
    #: Non-secret options of the stores of its URLs (``storage``).
    storage_options: Mapping[str, str] = field(default_factory=dict)
    #: The job's arguments, as given.
    args: Mapping[str, str] = field(default_factory=dict)
    #: The SHA-256 of its bundle (shipped code and files), to fetch once.
    bundle: str | None = None
    step: int = 0
    #: The part files' format: None for the job's own, "pairs" between steps.
    output_format: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``init_job`` call's second argument (the job id is its first)."""
        return {"source": self.source, "filename": self.filename, "token": self.token,
                "map_name": self.map_name, "reduce_name": self.reduce_name,
                "num_maps": self.num_maps, "num_reducers": self.num_reducers,
                "output": self.output, "buffer_records": self.buffer_records,
                "compress": self.compress, "storage_options": dict(self.storage_options),
                "args": dict(self.args), "bundle": self.bundle, "step": self.step,
                "output_format": self.output_format}

    @classmethod
    def from_wire(cls, job_id: Any, d: Any) -> JobInit:
        if not isinstance(job_id, str):
            raise BadMessage("init_job needs a job id")
        f = _fields("JobInit", d, source=str, filename=str, token=bytes, map_name=str,
                    reduce_name=str, num_maps=int, num_reducers=int, output=str,
                    buffer_records=[int, None], compress=[str, None], bundle=[str, None],
                    step=[int, 0], output_format=[str, None])
        return cls(job_id, **f, storage_options=_string_map("JobInit", "storage_options", d),
                   args=_string_map("JobInit", "args", d))


def _string_map(record: str, name: str, d: Mapping[str, Any]) -> dict[str, str]:
    value = d.get(name) or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadMessage(f"{record}.{name} must map strings to strings")
    return value


@dataclass(frozen=True)
class MapLocation:
    """Where the committed output of map ``index`` can be fetched."""

    index: int
    wid: str
    host: str
    port: int
    kinds: tuple[str, ...]
    #: The attempt that wrote it: a fetch failure names it, so that a late
    #: report about an older output cannot condemn a newer one.
    attempt_id: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"map": self.index, "wid": self.wid, "host": self.host, "port": self.port,
                "kinds": list(self.kinds), "attempt": self.attempt_id}

    @classmethod
    def from_wire(cls, d: Any) -> MapLocation:
        f = _fields("MapLocation", d, map=int, wid=str, host=str, port=int, kinds=list,
                    attempt=[str, ""])
        return cls(f["map"], f["wid"], f["host"], f["port"],
                   _strings("MapLocation", "kinds", f["kinds"]), f["attempt"] or "")


@dataclass(frozen=True)
class AttemptResult:
    """A successful attempt's report: the key kinds of a map's output, the
    counters, and the tail of what the task printed."""

    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    log: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"counters": self.counters, "kinds": list(self.kinds), "log": self.log}

    @classmethod
    def from_wire(cls, d: Any) -> AttemptResult:
        f = _fields("AttemptResult", d, counters=[dict, None], kinds=[list, None],
                    log=[str, None])
        return cls(_counters("AttemptResult", f["counters"]),
                   _strings("AttemptResult", "kinds", f["kinds"] or ()), f["log"])


#: The most characters of a failed attempt's message, traceback and log
#: tail sent on: a report stays well inside PB's 640 KiB.
MAX_ERROR_MESSAGE = 16 << 10
MAX_ERROR_TRACEBACK = 32 << 10
MAX_LOG_TAIL = 64 << 10


def sendable(text: str, limit: int) -> str:
    """``text`` as a peer can be sent it: a lone surrogate (a line decoded
    with ``surrogateescape``, in an exception's message) escaped, and at
    most ``limit`` characters, its start and its end kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    # The marker counts in the limit, so that a text made sendable is its
    # own sendable form (each hop checks again).
    keep = limit - len(_cut_marker(len(text)))  # the widest the count may be
    head, tail = text[:keep // 2], text[len(text) - (keep - keep // 2):]
    return f"{head}{_cut_marker(len(text) - keep)}{tail}"


def _cut_marker(n: int) -> str:
    return f"\n[pytxmr: {n:,} characters cut]\n"


@dataclass(frozen=True)
class TaskError:
    """Why an attempt failed: the exception's type name, its message, the
    user's traceback, and the tail of what the task printed."""

    type: str
    message: str
    traceback: str = ""
    log: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback,
                "log": self.log}

    def describe(self) -> dict[str, str]:
        """The form jobs, the history and the status page keep."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_wire(cls, d: Any) -> TaskError:
        """Lenient, as a failure report must get through: a field of the
        wrong type is shown as text, and every field made ``sendable`` (an
        exception's message of megabytes, or of undecodable bytes, failed
        to reach the jobtracker, and the job waited for it forever)."""
        if not isinstance(d, Mapping):
            d = {"message": str(d)}
        log = d.get("log")
        return cls(sendable(str(d.get("type", "") or ""), 200),
                   sendable(str(d.get("message", "") or ""), MAX_ERROR_MESSAGE),
                   sendable(str(d.get("traceback", "") or ""), MAX_ERROR_TRACEBACK),
                   sendable(log, MAX_LOG_TAIL) if isinstance(log, str) else None)


@dataclass(frozen=True)
class Registration:
    """A tasktracker's ``register``: where reducers reach its shuffle server."""

    host: str
    port: int
    slots: int
    pid: int | None = None
    protocol: int = PROTOCOL_VERSION
    #: Map outputs it kept from before it lost the jobtracker (a restarted
    #: one resumes its jobs with them): (step job id, map index, attempt id).
    held: tuple[tuple[str, int, str], ...] = ()
    #: Attempts let commit that still write their parts (None: a worker
    #: from before it said): a jobtracker that restarted, or lost this
    #: worker, waits for their end before it cleans their job's output.
    committing: tuple[str, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "min_protocol": MIN_WORKER_PROTOCOL,
                "host": self.host, "port": self.port, "slots": self.slots, "pid": self.pid,
                "held": [list(h) for h in self.held],
                **({} if self.committing is None else {"committing": list(self.committing)})}

    @classmethod
    def from_wire(cls, d: Any) -> Registration:
        if not isinstance(d, Mapping):
            raise BadMessage("register takes a dict")
        check_protocol(d, "this tasktracker", MIN_WORKER_PROTOCOL)
        try:
            f = _fields("Registration", d, host=str, port=int, slots=int, pid=[int, None])
        except BadMessage:
            raise BadMessage("register needs host (str), port (int) and slots (int >= 1)") \
                from None
        if f["slots"] < 1:
            raise BadMessage("register needs host (str), port (int) and slots (int >= 1)")
        held = d.get("held") or []
        if not isinstance(held, list) or not all(
                isinstance(h, list) and len(h) == 3 and isinstance(h[0], str)
                and type(h[1]) is int and isinstance(h[2], str) for h in held):
            raise BadMessage("register's held is a list of [job id, map index, attempt id]")
        return cls(**f, protocol=d["protocol"], held=tuple((h[0], h[1], h[2]) for h in held),
                   committing=None if d.get("committing") is None else _strings(
                       "Registration", "committing", d["committing"]))


@dataclass(frozen=True)
class Heartbeat:
    """A tasktracker's periodic report: its live attempts, and its shuffle
    memory (bytes used, budget) for the status page."""

    attempts: tuple[str, ...] = ()
    shuffle_memory: tuple[int, int] | None = None
    #: How far each live attempt is, from 0 to 1 (``TaskTracker.progress``).
    progress: Mapping[str, float] = field(default_factory=dict)
    #: How many launches it has received since it registered: the
    #: jobtracker's attempts launched up to that one and missing from
    #: ``attempts`` ended without a result it got (None: not counted).
    launches: int | None = None
    #: The attempts that ask to commit or commit now (``Registration``'s;
    #: None: a worker from before it said): the others let commit ended.
    committing: tuple[str, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"attempts": list(self.attempts), "progress": dict(self.progress)}
        if self.launches is not None:
            d["launches"] = self.launches
        if self.committing is not None:
            d["committing"] = list(self.committing)
        if self.shuffle_memory is not None:
            d["shuffle_memory"] = {"used": self.shuffle_memory[0],
                                   "budget": self.shuffle_memory[1]}
        return d

    @classmethod
    def from_wire(cls, d: Any) -> Heartbeat:
        """Lenient: a heartbeat keeps a worker alive whatever else it says;
        a malformed part is dropped (and the count of launches with a
        malformed list of attempts: it would say them ended)."""
        if not isinstance(d, Mapping):
            return cls()
        attempts = d.get("attempts")
        memory = d.get("shuffle_memory")
        used = memory.get("used") if isinstance(memory, Mapping) else None
        budget = memory.get("budget") if isinstance(memory, Mapping) else None
        progress = d.get("progress")
        launches = d.get("launches")
        committing = d.get("committing")
        return cls(
            tuple(a for a in attempts if isinstance(a, str))
            if isinstance(attempts, list) else (),
            (used, budget) if type(used) is int and type(budget) is int
            and used >= 0 and budget >= 0 else None,
            {a: min(1.0, max(0.0, float(p))) for a, p in progress.items()
             if isinstance(a, str) and type(p) in (int, float) and p == p}
            if isinstance(progress, Mapping) else {},
            launches if type(launches) is int and launches >= 0 and isinstance(attempts, list)
            else None,
            tuple(committing) if isinstance(committing, list)
            and all(isinstance(a, str) for a in committing) else None)


def heartbeat_interval_from_wire(answer: Any) -> float | None:
    """The answer to a heartbeat: the interval the jobtracker asks the
    worker to heartbeat at, at the least (it grows with the cluster:
    ``jobtracker.heartbeats``). None for an answer that is not one: the
    worker then keeps its own interval."""
    if type(answer) not in (int, float) or not 0 <= answer < math.inf:
        return None
    return float(answer)


def split_from_wire(d: Any) -> Split:
    try:
        return Split.from_wire(d)
    except ValueError as e:
        raise BadMessage(str(e)) from None


def step_job_id(job_id: str, step: int) -> str:
    """The id under which the scheduler and the workers know step ``step``
    of a job: the job's own id for the first."""
    return job_id if step == 0 else f"{job_id}-s{step + 1}"


def step_of(step_job_id: str) -> int:
    """The step (0-based) a step's id names."""
    _, sep, n = step_job_id.partition("-s")
    return int(n) - 1 if sep else 0


def job_of(step_job_id: str) -> str:
    """The job a step's id (or a job id) belongs to."""
    return step_job_id.split("-s", 1)[0]


def jobtracker_endpoint(address: str) -> str:
    """``HOST:PORT`` (or a Twisted client endpoint string) as an endpoint string."""
    if address.startswith(("tcp:", "ssl:", "unix:", "tls:")):
        return address
    if "/" in address:  # a URL (http://HOST:PORT): its scheme taken for a host name
        raise ValueError(f"bad jobtracker address {address!r}: use HOST:PORT, the "
                         f"jobtracker's PB port (not a URL)")
    host, sep, port = address.rpartition(":")
    if address.startswith("[") and address.endswith("]"):  # [::1]: an IPv6 host, no port
        host, sep, port = address, "", ""
    if not sep:
        if address.isdigit():  # "7373" would be looked up as a host name
            raise ValueError(f"bad jobtracker address {address!r}: a port needs a host, "
                             f"e.g. 127.0.0.1:{address}")
        host, port = address, str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad jobtracker address {address!r}: use HOST:PORT, "
                         "with a port from 1 to 65535")
    # An IPv6 address's colons escaped: the endpoint string splits at them.
    host = host.strip("[]").replace(":", "\\:") or "127.0.0.1"
    return f"tcp:host={host}:port={port}"


def no_delay(transport: object) -> None:
    """Turn off Nagle's algorithm on both protocols' TCP connections (PB and
    the shuffle): control messages are small and answered at once, and
    Nagle with delayed ACKs adds 40 ms to such a round trip."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)
