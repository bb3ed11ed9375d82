"""A job as the jobtracker knows it beyond the scheduler's view: where its
source and output are, its splits, its state and result. Pure: the logic
(``tracker``) keeps the waiting submitters, this only the facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .. import stepdata
from ..splits import Split
from ..wire import JobInit, step_job_id

if TYPE_CHECKING:
    from ..journal import JournaledJob


@dataclass(frozen=True)
class StepPlan:
    """What the submission check found of one step of the module."""

    num_reducers: int | None
    map_only: bool
    split_by: str
    fixed_reducers: bool = False
    #: How the step writes its output, if it is the last ("text", "jsonl"):
    #: a client reads a text line without a tab as (key, None), but a
    #: jsonl line as JSON (the key of a None value can be a JSON pair).
    output_format: str = "text"


@dataclass
class JobRecord:
    id: str
    filename: str
    source_path: str
    token: bytes
    output: str
    splits: list[Split]
    num_reducers: int
    map_name: str
    reduce_name: str
    buffer_records: int | None
    submitted: float
    state: str = "running"
    error: dict[str, str] | None = None
    finished: float | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    compress: str | None = None
    storage_options: dict[str, str] = field(default_factory=dict)
    #: Ended, its output being finished or emptied (an object store's
    #: calls in a thread) and the history written: ``wait`` still waits,
    #: and its output is still its own.
    finishing: bool = False
    #: Its output is another job's now (replaced while the jobtracker was
    #: down): the job fails without touching it.
    output_taken: bool = False
    #: The job's arguments, as given (``jobargs``).
    args: dict[str, str] = field(default_factory=dict)
    #: The SHA-256 of its shipped code and files (``bundle``), if any.
    bundle: str | None = None
    #: Its steps, and the one running (0-based); ``splits`` and
    #: ``num_reducers`` are the running step's.
    steps: list[StepPlan] = field(default_factory=lambda: [StepPlan(None, False, "lines")])
    step: int = 0
    #: ``--reducers``: the reducers of every step that does not say.
    reducers_option: int | None = None
    #: Who submitted it: a user's name, or what a secret holder's client
    #: said its user was ("" when it did not say).
    owner: str = ""
    #: The files its first step listed: no ``--overwrite`` deletes them
    #: before it ends (a later step's maps may read them again, as the
    #: total-order sort's do).
    input_files: Sequence[str] = ()

    def files_read(self) -> Sequence[str]:
        """The files its maps may read: those its first step listed, and a
        later step's own (the part files of the step before, in its output)."""
        if self.step == 0:
            return self.input_files
        return [*self.input_files, *sorted({s.path for s in self.splits})]

    def sched_id(self, step: int) -> str:
        """The scheduler's (and the workers') id of one step of this job."""
        return step_job_id(self.id, step)

    def started_steps(self) -> list[str]:
        return [self.sched_id(n) for n in range(self.step + 1)]

    @property
    def running(self) -> bool:
        return self.state == "running"

    def init(self, source: str) -> JobInit:
        """What a worker is sent before its first task of the running step."""
        count = len(self.steps)
        return JobInit(self.sched_id(self.step), source, self.filename, self.token,
                       self.map_name, self.reduce_name, len(self.splits), self.num_reducers,
                       stepdata.step_output(self.output, self.step, count),
                       self.buffer_records, self.compress, dict(self.storage_options),
                       args=dict(self.args), bundle=self.bundle, step=self.step,
                       output_format=stepdata.step_format(self.step, count))

    @property
    def shown_state(self) -> str:
        """Its state as told: "running" until its output is final and free
        for another job. It said "succeeded" before its ``_SUCCESS`` was
        written (an object store's upload), and could turn "failed" then;
        "killed" while a submission of its output with --overwrite was
        still refused ("the output of the running job")."""
        return "running" if self.finishing else self.state

    def result(self, now: float) -> dict[str, Any]:
        """What ``wait`` and ``status`` return (``status`` adds progress)."""
        end = self.finished if self.finished is not None else now
        result = self._result(end)
        if self.shown_state != self.state:
            result["finishing"] = self.state
        return result

    def _result(self, end: float) -> dict[str, Any]:
        return {"job_id": self.id, "state": self.shown_state, "error": self.error,
                "counters": self.counters, "elapsed": end - self.submitted,
                "output": self.output, "filename": self.filename,
                "num_maps": len(self.splits), "num_reducers": self.num_reducers,
                "args": dict(self.args), "step": self.step + 1, "steps": len(self.steps),
                "owner": self.owner, "output_format": self.steps[-1].output_format}


#: The JobRecord fields the journal keeps as they are (plain data).
_PLAIN = ("id", "filename", "source_path", "output", "map_name", "reduce_name",
          "buffer_records", "submitted", "inputs", "compress", "storage_options", "args",
          "bundle", "reducers_option", "owner")


def plan_of(job: JobRecord, max_attempts: int, speculative: bool) -> dict[str, Any]:
    """What the journal keeps of a submitted job (``job_from_plan`` reads it)."""
    plan = {name: getattr(job, name) for name in _PLAIN}
    plan.update(token=job.token.hex(), steps=[asdict(s) for s in job.steps],
                max_attempts=max_attempts, speculative=speculative)
    return plan


def job_from_plan(plan: dict[str, Any], journaled: JournaledJob) -> JobRecord | None:
    """The job again, at the last step it started; None if the journal has
    no step of it (it crashed between the two records)."""
    if not journaled.steps:
        return None
    step = max(journaled.steps)
    state = journaled.steps[step]
    # Step 1's files; should its record be lost, every step's (and the
    # patterns still name the inputs).
    listed = ([journaled.steps[0]] if 0 in journaled.steps else journaled.steps.values())
    return JobRecord(**{name: plan[name] for name in _PLAIN},
                     token=bytes.fromhex(plan["token"]), splits=state.splits,
                     num_reducers=state.num_reducers,
                     steps=[StepPlan(**s) for s in plan["steps"]], step=step,
                     input_files=sorted({s.path for st in listed for s in st.splits}))
