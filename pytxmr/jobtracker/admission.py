"""Admitting a job: the checks a submission passes before anything runs.

The spec is validated (``submission``), its inputs expanded and split and
an overwrite checked (in a thread: file-system calls), its module imported
in a child process with a timeout (a hostile or hanging module harms only
that child), and its output directory prepared. A refusal raises
``SubmissionError`` with the reason and leaves nothing behind; so does a
jobtracker that stops meanwhile.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorProcess, IReactorTime

from .. import output, storage
from ..bundle import BundleError, BundleStore
from ..child import TaskChild, Zygote
from ..outputrules import InputsInUse, MayReplace, OutputsOverlap, job_mark
from ..storage import InputFile
from ..wire import SubmissionError
from .job import JobRecord, StepPlan
from .submission import (DEFAULT_MAX_TASKS_PER_JOB, Submission, check_failure, plan_tasks,
                         validate_submission)

#: In a running job's work dir: the path of its output directory.
OUTPUT_MARKER = "output"
#: Seconds a submission's inputs may take to list (and an overwrite to be
#: checked): a store that accepts connections and never answers held the
#: submitter for many minutes, and a thread of the jobtracker's pool.
LISTING_TIMEOUT = 60.0


class SubmissionWithdrawn(SubmissionError):
    """The submission's client went away before it was admitted."""


class Submitter:
    """The client a submission comes from. Once it is gone (its connection
    lost: a Ctrl-C), its submission is refused at the next step and its
    module check killed: no one would know of the job it would start. A
    submission whose output is prepared goes on (its client may still find
    it with ``pytxmr jobs``)."""

    def __init__(self) -> None:
        self.gone = False
        self.checks: set[TaskChild] = set()

    def lost(self) -> None:
        self.gone = True
        for child in list(self.checks):
            child.kill("its submitter went away")


@dataclass
class Admitted:
    """A checked job, with what planning it again takes: the input files as
    listed (a job admitted while no worker was registered is cut into
    tasks again for the slots of the first ones)."""
    job: JobRecord
    submission: Submission
    files: list[InputFile]


class Admission:
    """Turns submissions into admitted jobs (``JobRecord``), one at a time
    or many at once; ``stop`` refuses those in progress and waits for them."""

    def __init__(self, reactor: IReactorProcess, clock: IReactorTime, workdir: str,
                 checkers: Zygote, check_timeout: float, bundles: BundleStore,
                 max_tasks: int = DEFAULT_MAX_TASKS_PER_JOB) -> None:
        self._reactor = reactor
        self.bundles = bundles
        self._clock = clock
        self.jobs_dir = os.path.join(workdir, "jobs")
        self.workdir = workdir
        self._checkers = checkers
        self.check_timeout = check_timeout
        self.max_tasks = max_tasks
        self._seq = 0
        self._stopping = False
        #: Submissions in progress (each fires when it ends) and their checks.
        self._in_progress: set[defer.Deferred[None]] = set()
        self._checks: set[TaskChild] = set()
        #: The inputs of the submissions in progress, from when they are
        #: listed, and the outputs they prepare: no other deletes the ones
        #: nor overlaps the others.
        self._admitting: dict[object, InputsInUse] = {}
        #: (whose, output) of the outputs being prepared, or cleaned.
        self._claimed: dict[object, tuple[str, str]] = {}
        # The admitted jobs' locks of their local outputs (output.claim).
        self._output_claims: dict[str, IO[Any]] = {}

    def claim_output(self, job_id: str, token: bytes, out: str) -> str | None:
        """Take the lock of a resumed job's output again (its jobtracker's
        crash let it go); why not, if the output is not the job's now (one
        elsewhere writes it, or has written it since; it was removed)."""
        try:
            claim = output.claim(out, job_mark(job_id, token))
        except output.OutputGone as e:
            return str(e)
        except output.OutputTaken:
            return (f"another job (of another jobtracker, or a `run`) replaced its output "
                    f"{out}")
        if claim is not None:
            self._output_claims[job_id] = claim
        return None

    def release_output(self, job_id: str) -> None:
        """The job's output is final: another job may replace it."""
        claim = self._output_claims.pop(job_id, None)
        if claim is not None:
            claim.close()

    def hold(self, whose: str, output: str, until: defer.Deferred[Any]) -> None:
        """``output`` is ``whose`` until ``until`` fires (an interrupted
        job's, being cleaned): no submission shares, nests in or holds it."""
        token = object()
        self._claimed[token] = (whose, output)

        def release(result: Any) -> Any:
            del self._claimed[token]
            return result

        until.addBoth(release)

    def start(self, last_seq: int) -> None:
        """Job ids go on after ``last_seq`` (that of the history)."""
        self._stopping = False
        self._seq = max(self._seq, last_seq)

    def stop(self) -> defer.Deferred[Any]:
        """Refuse the submissions in progress (their checks killed); fires
        once each has removed what it had made."""
        self._stopping = True
        for child in list(self._checks):
            child.kill("the jobtracker is stopping")
        return defer.gatherResults(list(self._in_progress))

    def _refuse_if_stopping_or_gone(self, submitter: Submitter) -> None:
        # A submission that was checking its module or inputs when the
        # jobtracker stopped must not go on into a removed work directory.
        if self._stopping:
            raise SubmissionError("the jobtracker is stopping")
        if submitter.gone:
            raise SubmissionWithdrawn("its submitter went away")

    async def admit(self, spec: Any, slots: int, running: Callable[[], Iterable[JobRecord]],
                    owner: str = "", may_replace: MayReplace = None,
                    submitter: Submitter | None = None) -> Admitted:
        """The checked job of ``owner``; ``running()``: the running jobs,
        whose outputs no new job may overlap and whose inputs no
        ``--overwrite`` deletes; ``may_replace``: whether it may replace an
        output of another owner."""
        ended: defer.Deferred[None] = defer.Deferred()
        self._in_progress.add(ended)
        try:
            return await self._admit(spec, slots, running, owner, may_replace,
                                     submitter or Submitter())
        finally:
            self._in_progress.discard(ended)
            ended.callback(None)

    async def _admit(self, spec: Any, slots: int, running: Callable[[], Iterable[JobRecord]],
                     owner: str, may_replace: MayReplace, submitter: Submitter) -> Admitted:
        self._refuse_if_stopping_or_gone(submitter)
        sub = validate_submission(spec)
        _refuse_overlap(sub.output, self._outputs(running()))
        if sub.bundle is not None and not self.bundles.has(sub.bundle):
            raise SubmissionError("the job's bundle (its shipped code and files) was not "
                                  "uploaded before the submission")
        token = object()
        if sub.bundle is not None:  # now: its last job may end while the inputs are listed
            self.bundles.use(sub.bundle, token)
        try:
            return await self._admit_bundled(sub, slots, running, owner, may_replace,
                                             submitter, token)
        finally:
            self.bundles.release(token)

    async def _admit_bundled(self, sub: Submission, slots: int,
                             running: Callable[[], Iterable[JobRecord]], owner: str,
                             may_replace: MayReplace, submitter: Submitter,
                             token: object) -> Admitted:
        try:
            files = await self._within_deadline(
                "list the inputs", sub.inputs,
                threads.deferToThread(_listed_inputs, sub, self._outputs(running())))
        except ValueError as e:  # InputError and friends
            raise SubmissionError(str(e)) from None
        # From now on its inputs are in use: the job's once admitted.
        self._admitting[token] = InputsInUse("a job being submitted", list(sub.inputs),
                                             [f.path for f in files])
        try:
            return await self._admit_listed(sub, files, slots, running, token, owner,
                                            may_replace, submitter)
        finally:
            del self._admitting[token]
            self._claimed.pop(token, None)

    def _outputs(self, running: Iterable[JobRecord], token: object = None
                 ) -> list[tuple[str, str]]:
        """(whose, output) of the running jobs, and of the other submissions
        that are preparing theirs."""
        return [*((f"the running job {job.id}", job.output) for job in running),
                *(claim for t, claim in self._claimed.items() if t is not token)]

    def _in_use(self, running: Iterable[JobRecord], token: object) -> list[InputsInUse]:
        """What an ``--overwrite`` must not delete: the inputs of the running
        jobs (as they were listed when each was admitted) and of the other
        submissions being admitted."""
        return [*(InputsInUse(f"the running job {job.id}", job.inputs, job.files_read())
                  for job in running),
                *(inputs for t, inputs in self._admitting.items() if t is not token)]

    async def _admit_listed(self, sub: Submission, files: list[InputFile], slots: int,
                            running: Callable[[], Iterable[JobRecord]], token: object,
                            owner: str, may_replace: MayReplace,
                            submitter: Submitter) -> Admitted:
        listed = self._admitting[token].files  # the paths of ``files``
        try:
            if sub.overwrite:
                # Before the module check: a refusal costs nothing then.
                checking = threads.deferToThread(
                    output.check_overwrite, sub.output, inputs=sub.inputs,
                    input_files=listed, protected=[self.workdir],
                    opts=sub.storage_options, in_use=self._in_use(running(), token),
                    busy=self._outputs(running(), token), may_replace=may_replace)
                await self._within_deadline("check the output to replace", [sub.output],
                                            checking)
        except (ValueError, output.OutputExistsError) as e:  # InputError and friends
            raise SubmissionError(str(e)) from None
        self._refuse_if_stopping_or_gone(submitter)
        self._seq += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self._clock.seconds()))
        job_id = f"job_{stamp}_{self._seq:04d}"
        job_dir = os.path.join(self.jobs_dir, job_id)
        source_path = os.path.join(job_dir, "job.py")
        try:
            os.makedirs(job_dir)
            with open(source_path, "w", encoding="utf-8") as f:
                f.write(sub.source)
        except OSError as e:  # a full disk: said to be the jobtracker's
            shutil.rmtree(job_dir, ignore_errors=True)
            raise SubmissionError(f"the jobtracker cannot write the job's files in its work "
                                  f"directory {self.workdir}: {e.strerror or e}") from None
        claim = None
        shuffle_token = os.urandom(32)  # and its output's mark names it (hashed)
        try:
            bundle_dir = None
            if sub.bundle is not None:
                self.bundles.use(sub.bundle, job_id)
                try:
                    bundle_dir = await threads.deferToThread(self.bundles.unpacked, sub.bundle)
                except BundleError as e:
                    raise SubmissionError(str(e)) from None
            steps = await self._check_module(job_dir, source_path, sub, bundle_dir, submitter)
            if sub.reducers is not None and all(s.map_only for s in steps):
                raise SubmissionError("the job is map-only (it has no reduce): "
                                      "--reducers does not apply")
            # Default: a reducer per slot, so the reduce phase uses the
            # whole cluster as the map phase does. In a thread: 100,000
            # splits take 0.2 s to make.
            splits, reducers = await threads.deferToThread(
                plan_tasks, files, sub.split_size, sub.reducers, steps, slots, self.max_tasks)
            self._refuse_if_stopping_or_gone(submitter)
            _refuse_overlap(sub.output, self._outputs(running()))
            # Its own from here on (no wait between the check and the claim).
            self._claimed[token] = ("a job being submitted", sub.output)
            try:
                claim = await threads.deferToThread(
                    output.prepare_output_dir, sub.output, sub.overwrite, inputs=sub.inputs,
                    input_files=listed, protected=[self.workdir],
                    opts=sub.storage_options,
                    in_use=self._in_use(running(), token) if sub.overwrite else (),
                    busy=self._outputs(running(), token),
                    # An owner a login proved (--users): one a client only
                    # claimed would bind its output once users are on.
                    owner=owner if may_replace is not None else "",
                    may_replace=may_replace, job=job_mark(job_id, shuffle_token))
            except (output.OutputExistsError, OSError, ValueError) as e:
                raise SubmissionError(str(e)) from None
            if self._stopping:  # the output just made is no job's
                if not storage.is_remote(sub.output):
                    shutil.rmtree(sub.output, ignore_errors=True)
                raise SubmissionError("the jobtracker is stopping")
            # The output directory is the job's own now: should the
            # jobtracker crash, its next start cleans it (see interrupted_outputs).
            with open(os.path.join(job_dir, OUTPUT_MARKER), "w", encoding="utf-8") as f:
                f.write(sub.output)
        except BaseException:
            if claim is not None:
                claim.close()
            shutil.rmtree(job_dir, ignore_errors=True)
            self.bundles.release(job_id)
            raise
        if claim is not None:
            self._output_claims[job_id] = claim
        job = JobRecord(
            id=job_id, filename=sub.filename, source_path=source_path, token=shuffle_token,
            output=sub.output, splits=splits, num_reducers=reducers, map_name=sub.map_name,
            reduce_name=sub.reduce_name, buffer_records=sub.buffer_records,
            submitted=self._clock.seconds(), inputs=list(sub.inputs), compress=sub.compress,
            storage_options=dict(sub.storage_options), args=dict(sub.args),
            bundle=sub.bundle, steps=steps, reducers_option=sub.reducers,
            input_files=listed)
        return Admitted(job, sub, files)

    async def _within_deadline(self, doing: str, paths: Iterable[str],
                               reading: defer.Deferred[Any]) -> Any:
        """What a thread that only reads the stores gives, within
        ``LISTING_TIMEOUT``, else a refusal; the thread ends in its own
        time (the stores' timeouts bound it), its result dropped."""
        try:
            return await reading.addTimeout(LISTING_TIMEOUT, self._clock)
        except defer.TimeoutError:
            where = ", ".join(storage.redact(p) for p in paths)
            raise SubmissionError(
                f"could not {doing} within {LISTING_TIMEOUT:g}s: does the store of "
                f"{where} answer?") from None

    async def _check_module(self, job_dir: str, source_path: str, sub: Submission,
                            bundle_dir: str | None, submitter: Submitter) -> list[StepPlan]:
        """Import the module in a child process (with its bundle, and its
        arguments checked): it must load and define a job; its steps."""
        spec = {"kind": "check", "compress": sub.compress,
                "job": {"source_path": source_path, "filename": sub.filename,
                                         "map_name": sub.map_name,
                                         "reduce_name": sub.reduce_name,
                                         "args": dict(sub.args), "bundle_dir": bundle_dir}}
        child = TaskChild(self._reactor, self._checkers, spec, os.path.join(job_dir, "check"),
                          timeout=self.check_timeout)
        self._checks.add(child)
        submitter.checks.add(child)
        try:
            result = await child.result
        finally:
            self._checks.discard(child)
            submitter.checks.discard(child)
        self._refuse_if_stopping_or_gone(submitter)  # a check killed: not the module's failure
        if not result.get("ok"):
            raise SubmissionError(check_failure(result.get("error", {}), self.check_timeout,
                                                bundle_dir))
        return [StepPlan(**s) for s in result["steps"]]


def _listed_inputs(sub: Submission, busy: list[tuple[str, str]]) -> list[InputFile]:
    """The job's input files, none of them in another job's output that is
    still being written (``busy``: whose, output): read now, it would give
    the part files committed so far as if they were all (its ``_SUCCESS``
    says when it is complete)."""
    _refuse_partial(sub.inputs, busy)  # before the listing, which may find no file yet
    files = storage.expand_inputs(sub.inputs, sub.storage_options)
    _refuse_partial([f.path for f in files], busy)  # what a glob found there
    return files


def _refuse_partial(paths: list[str], busy: list[tuple[str, str]]) -> None:
    for whose, out in busy:
        for path in paths:
            if output.inside(path, out):
                raise SubmissionError(
                    f"the input {storage.redact(path)} is in the output {storage.redact(out)} "
                    f"of {whose}, which is not complete: read it once that job has ended")


def _refuse_overlap(out: str, others: Iterable[tuple[str, str]]) -> None:
    """Two jobs never share, nest or delete each other's output: here as
    the paths are spelled (no file system call on the reactor), and again
    where they really are as the output is prepared."""
    try:
        output.refuse_overlap(out, others)
    except OutputsOverlap as e:
        raise SubmissionError(str(e)) from None


def interrupted_outputs(jobs_dir: str) -> list[tuple[str, str]]:
    """(job id, output) of the jobs a crash interrupted: their work dirs
    are still there, with the output they had prepared."""
    try:
        job_ids = sorted(os.listdir(jobs_dir))
    except OSError:
        return []
    found = []
    for job_id in job_ids:
        try:
            with open(os.path.join(jobs_dir, job_id, OUTPUT_MARKER), encoding="utf-8") as f:
                found.append((job_id, f.read()))
        except OSError:
            continue  # refused or interrupted before its output was prepared
    return found
