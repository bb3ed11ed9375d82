"""Submitting jobs to a running cluster, and job control, as a Python API.

``submit`` ships the job module's source and options to the jobtracker
over authenticated PB, reports progress while it waits, and returns the
job's result (state, counters, error with the user's traceback). The CLI
(``python -m pytxmr submit``) and the embedded ``run`` both use it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

from twisted.internet import defer, error, task
from twisted.spread import pb

from . import bundle, jobargs, storage
from .auth import LoginRefused, login, user_login
from .bundle import Bundle
from .records import CodecUnavailable, codec_for
from .pbwire import client_factory
from .users import UsersError, check_name
from .tls import (PLAIN_TEXT, TLS_PROBE_AFTER, TLSError, client_endpoint, not_tls_text,
                  speaks_plain_text, speaks_tls, tls_refusal)
from .wire import (
    DEFAULT_PORT,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    RECONNECT_TIMEOUT,
    ROLE_CLIENT,
    UnknownJob,
    definition_too_big,
    jobtracker_endpoint,
)

if TYPE_CHECKING:
    from .tls import ClusterTLS

ProgressCallback = Callable[[dict[str, Any]], None]


class ClusterError(Exception):
    """The jobtracker refused a request or could not be reached; the message
    says why."""


class ClusterUnreachable(ClusterError):
    """The jobtracker could not be reached, or the connection to it was
    lost: unlike a refusal, trying again later may work (exit status 3)."""


class SubmissionUncertain(ClusterUnreachable):
    """The jobtracker went away during the submission: whether it had
    admitted the job is not known (exit status 3)."""


class NoSuchJob(ClusterError):
    """The jobtracker has no job of that id."""


class JobLost(NoSuchJob):
    """The jobtracker came back without the job being waited for: its
    outcome is unknown, as after a lost connection (exit status 3)."""


#: The remote type of wire.UnknownJob (see pbwire.as_pb_error).
_UNKNOWN_JOB = f"{UnknownJob.__module__}.{UnknownJob.__qualname__}".encode()


class Connection:
    """A logged-in client session with a jobtracker."""

    def __init__(self, factory: pb.PBClientFactory, perspective: pb.RemoteReference) -> None:
        self._factory = factory
        self.perspective = perspective  # held: a dropped perspective is logged out
        #: Why we ended the connection ourselves (``abort``), if we did.
        self._aborted: str | None = None

    async def call(self, method: str, *args: Any) -> Any:
        try:
            return await self.perspective.callRemote(method, *args)
        except pb.RemoteError as e:
            # Expected errors (pb.Error subclasses such as SubmissionError)
            # carry their message; anything else is the jobtracker's bug.
            raise (NoSuchJob if e.remoteType == _UNKNOWN_JOB else ClusterError)(str(e)) from None
        except (pb.PBConnectionLost, pb.DeadReferenceError):
            raise ClusterUnreachable(self._aborted or "lost the connection to the jobtracker "
                                     "(it stopped or crashed)") from None

    def abort(self, why: str) -> None:
        """End the connection at once: its calls fail with ``why``."""
        self._aborted = why
        self.perspective.broker.transport.abortConnection()

    def close(self) -> None:
        self._factory.disconnect()


async def connect(reactor: Any, address: str, secret: bytes, timeout: float = 10.0, *,
                  tls: ClusterTLS | None = None, user: str | None = None,
                  password: str | None = None) -> Connection:
    """Log in to the jobtracker at ``address``: as ``user`` with
    ``password`` when given, else with the cluster ``secret``; over TLS
    with ``tls`` (the jobtracker's certificate checked against its CA)."""
    if user is not None:
        try:
            check_name(user)  # one the jobtracker has no user of: said now
        except UsersError as e:
            raise ClusterError(f"--user: {e}") from None
    try:
        description = jobtracker_endpoint(address)
    except ValueError as e:
        raise ClusterError(str(e)) from None
    if description != address:  # HOST:PORT; a full endpoint string says its own timeout
        description += f":timeout={timeout:g}"
    if ":" not in address or address.endswith("]"):
        address += f":{DEFAULT_PORT}"  # taken by default (also for "[::1]"): said where it failed
    try:
        endpoint = client_endpoint(reactor, description, tls)
    except TLSError as e:
        raise ClusterError(str(e)) from None
    factory = client_factory()
    # The endpoint's timeout covers the TCP connect, not the name lookup
    # before it (a minute of DNS retries for a name that does not resolve).
    connecting = endpoint.connect(factory)
    timed_out: list[bool] = []
    timer = reactor.callLater(timeout, lambda: (timed_out.append(True), connecting.cancel()))
    try:
        broker = await connecting
    except (defer.CancelledError, error.ConnectingCancelledError):
        if timed_out:
            raise ClusterUnreachable(f"cannot reach the jobtracker at {address}: no connection "
                               f"within {timeout:g}s") from None
        raise defer.CancelledError() from None  # interrupted: not the jobtracker's fault
    except Exception as e:
        raise ClusterUnreachable(f"cannot reach the jobtracker at {address}: {e}") from None
    finally:
        if timer.active():
            timer.cancel()
    # A mind (even one with no methods) tells the jobtracker which
    # connection logged in. A TLS handshake fails (or a plain client waits
    # on a TLS port) here, so the login has a deadline too.
    mind = pb.Referenceable()
    logging_in = defer.Deferred.fromCoroutine(
        user_login(factory, user, password or "", mind) if user is not None
        else login(factory, ROLE_CLIENT, secret, mind))
    # PB never fails a login whose connection is lost before the
    # jobtracker spoke: the loss (a failed TLS handshake) ends it here.
    broker.notifyOnDisconnect(logging_in.cancel)
    timer = reactor.callLater(timeout, lambda: (timed_out.append(True), logging_in.cancel()))
    uses_tls: list[bool] = []
    probing: list[defer.Deferred[bool]] = []

    def probe() -> None:  # still no greeting: is it a TLS port?
        if broker.currentDialect is not None:
            return
        asking = defer.Deferred.fromCoroutine(speaks_tls(reactor, description))
        probing.append(asking)
        asking.addCallbacks(told, lambda _: None)  # no answer: the login's deadline says

    def told(yes: bool) -> None:
        if yes:
            uses_tls.append(True)
            logging_in.cancel()

    prober = reactor.callLater(TLS_PROBE_AFTER, probe) if tls is None else None
    try:
        perspective = await logging_in
    except LoginRefused as e:
        raise ClusterError(str(e)) from None
    except (defer.CancelledError, pb.PBConnectionLost):
        # Lost mid-login (the jobtracker dropped the login, or died): a call
        # of the login fails with PBConnectionLost before the disconnect
        # notice cancels it, and it went out as a traceback.
        factory.disconnect()
        if uses_tls:
            raise ClusterError(f"the jobtracker at {address} uses TLS: give --tls DIR, a "
                               f"directory with the cluster CA's ca.pem (see docs/deploy.md)"
                               ) from None
        # A stopped (SIGSTOP) or overloaded jobtracker is silent too.
        hint = (" (is it stopped?)" if tls else
                " (is it stopped? or does it use TLS? then give --tls DIR)")
        reason = getattr(broker, "lost_reason", None)
        if not timed_out and reason is None:
            raise defer.CancelledError() from None  # interrupted: not the jobtracker's fault
        garbage = getattr(broker, "not_pb", None)
        if garbage is not None:
            raise ClusterError(f"what answers at {address} does not speak PB ({garbage!r}): "
                               f"is it the jobtracker's port?") from None
        if reason is None:
            raise ClusterUnreachable(f"the jobtracker at {address} did not answer the login "
                               f"within {timeout:g}s{hint}") from None
        why = tls_refusal(reason)
        if tls is not None and broker.currentDialect is None and (
                PLAIN_TEXT in (why or "") or not why and await _speaks_plain_text(
                    reactor, description)):
            # A plain jobtracker drops our ClientHello as garbage, often
            # before our OpenSSL reads its greeting (PLAIN_TEXT).
            raise ClusterError(not_tls_text(f"the jobtracker at {address}")) from None
        if why:  # refused: trying again cannot help
            raise ClusterError(f"the jobtracker at {address} closed the connection during "
                               f"the login: the TLS handshake failed ({why})") from None
        raise ClusterUnreachable(f"the jobtracker at {address} closed the connection during "
                                 f"the login{hint}") from None
    finally:
        if timer.active():
            timer.cancel()
        if prober is not None and prober.active():
            prober.cancel()
        for asking in probing:
            asking.cancel()
    return Connection(factory, perspective)


async def _speaks_plain_text(reactor: Any, description: str) -> bool:
    """``tls.speaks_plain_text``, False when it cannot tell (no connection)."""
    try:
        return await speaks_plain_text(reactor, description)
    except defer.CancelledError:
        raise  # interrupted
    except Exception:
        return False


@dataclass(frozen=True)
class JobSubmission:
    """A job ready to submit: the plain-data spec the jobtracker checks,
    and the bundle of code and files it ships (uploaded before the spec)."""

    spec: dict[str, Any]
    bundle: Bundle | None = None


def submission(job_path: str, inputs: Sequence[str], output: str, *,
               args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
               py_files: Sequence[str] = (), files: Sequence[str] = (),
               reducers: int | None = None, split_size: int | None = None,
               overwrite: bool = False, map_name: str = "map", reduce_name: str = "reduce",
               max_attempts: int | None = None, buffer_records: int | None = None,
               speculative: bool = False, compress: str | None = None,
               storage_options: Mapping[str, str] | None = None) -> JobSubmission:
    """The submission of a job file (local paths made absolute here, where
    they are relative to the user's working directory; URLs as given).
    ``args`` are the job's arguments (strings, checked against the job's
    declarations by the cluster); the helper modules the job imports from
    its directory, ``py_files`` and ``files`` travel in its bundle.
    ``compress`` (None or "lz4") compresses spills and the shuffle;
    ``storage_options`` are the non-secret options of the URLs' stores."""
    try:
        # Here too, not only in the task children: the user learns at once.
        codec_for(compress)
        storage.check_named(inputs, output)
    except (ValueError, CodecUnavailable) as e:  # StorageError is a ValueError
        raise ClusterError(str(e)) from None
    job_path = os.path.expanduser(job_path)  # as inputs and the output are
    # Relative paths are read against the working directory: the caller's,
    # not an inline job's (in another thread), which holds this lock.
    relative = any(not (os.path.isabs(p) or storage.is_remote(p))
                   for p in (job_path, *inputs, output, *py_files, *files))
    with storage.WORKING_DIRECTORY if relative else contextlib.nullcontext():
        try:
            source = bundle.read_source(job_path)
        except OSError as e:
            raise ClusterError(
                f"cannot read the job module {job_path}: {e.strerror}") from None
        except ValueError as e:
            raise ClusterError(f"cannot read the job module {job_path}: {e}") from None
        try:
            pairs = args.items() if isinstance(args, Mapping) else (args or ())
            job_args = jobargs.check_pairs(pairs)
            shipped = bundle.build(job_path, py_files, files)
        except (jobargs.ArgumentError, bundle.BundleError) as e:
            raise ClusterError(str(e)) from None
        too_big = definition_too_big(source, job_args)
        if too_big:  # over 640 KB it could not even be sent
            raise ClusterError(too_big)
        paths = {"filename": os.path.abspath(job_path),
                 "inputs": [storage.normalize_input(p) for p in inputs],
                 "output": storage.normalize(output)}
    spec: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "min_protocol": MIN_PROTOCOL_VERSION,
        "source": source,
        **paths,
        "overwrite": overwrite,
        "map_name": map_name,
        "reduce_name": reduce_name,
        "speculative": speculative,
        "args": job_args,
        # Whose job it is, where the jobtracker has no users to say.
        "user": _local_user(),
    }
    for name, value in (("reducers", reducers), ("split_size", split_size),
                        ("max_attempts", max_attempts), ("buffer_records", buffer_records),
                        ("compress", compress)):
        if value is not None:
            spec[name] = value
    if shipped is not None:
        spec["bundle"] = shipped.sha256
    if storage_options:
        try:
            spec["storage_options"] = storage.check_options(storage_options)
        except storage.StorageError as e:
            raise ClusterError(str(e)) from None
    _refuse_undecodable(spec)
    return JobSubmission(spec, shipped)


_NAMED = {"filename": "the job module's path", "inputs": "the input", "output": "the output"}


def _refuse_undecodable(spec: Mapping[str, Any]) -> None:
    """A path or argument that is not UTF-8 (a file name in another
    encoding, held by Python as surrogates) cannot travel in PB's UTF-8
    strings: said here, where PB raised a traceback from its depths."""
    for key, value in spec.items():
        items = (value.items() if isinstance(value, dict)
                 else enumerate(value) if isinstance(value, list) else [(None, value)])
        for sub, text in items:
            if not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                what = _NAMED.get(key) or (
                    f"the argument {sub}'s value" if key == "args"
                    else f"the {key.replace('_', ' ')}" + ("" if sub is None else f" {sub}"))
                raise ClusterError(f"{what} {_shown(text)} is not UTF-8 (a name in another "
                                   f"encoding?), and a cluster's paths and arguments travel "
                                   f"as UTF-8 text: rename or re-encode it, or run the job "
                                   f"with --inline") from None


def _shown(text: str) -> str:
    """``text`` with its undecodable bytes as \\xNN escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding made
        return ascii(text)
    return f"'{raw.decode('utf-8', 'backslashreplace')}'"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for our uid (a container)
        return ""


async def upload(conn: Connection, shipped: Bundle) -> None:
    """Send a bundle to the jobtracker in chunks, unless it has it."""
    if await conn.call("has_bundle", shipped.sha256):
        return
    for offset, chunk in bundle.chunks(shipped.data):
        await conn.call("put_bundle", shipped.sha256, shipped.size, offset, chunk)


#: Said (to ``notify``) when a job is submitted to a cluster without workers.
NO_WORKERS = ("no tasktracker is registered with the jobtracker: the job waits until one "
              "registers, and is cut into tasks for the slots of those that do (start one "
              "with python -m pytxmr.tasktracker --jobtracker HOST:PORT)")


async def run_job(reactor: Any, conn: Connection, job: JobSubmission,
                  progress: ProgressCallback | None = None, interval: float = 0.5,
                  notify: Callable[[str], None] | None = None,
                  reconnect: Callable[[], Awaitable[Connection]] | None = None
                  ) -> dict[str, Any]:
    """Submit ``job`` and wait for its end; its result dict. ``notify`` is
    told of a cluster that cannot run it yet (no worker registered)."""
    if job.bundle is not None:
        await upload(conn, job.bundle)
    on, job_id = await submit_spec(reactor, conn, job.spec, notify, reconnect)
    try:
        return await follow(reactor, on, job_id, progress, interval, notify, reconnect)
    finally:
        if on is not conn:
            on.close()


async def submit_spec(reactor: Any, conn: Connection, spec: dict[str, Any],
                      notify: Callable[[str], None] | None = None,
                      reconnect: Callable[[], Awaitable[Connection]] | None = None,
                      reconnect_timeout: float = RECONNECT_TIMEOUT
                      ) -> tuple[Connection, str]:
    """Submit ``spec``: the connection to follow the job on, and its id. A
    jobtracker lost during the submission may have admitted the job (and
    resume it); with ``reconnect``, the one that comes back is asked for a
    running job writing the submission's output, which no other job may
    share. The client said only "lost the connection", with no job id:
    submitted again, the job was refused, or with --overwrite ran twice."""
    started = reactor.seconds()
    try:
        return conn, await conn.call("submit", spec)
    except ClusterUnreachable as e:
        lost = f"{e} during the submission"
    uncertain = SubmissionUncertain(
        f"{lost}: the job may have been admitted; see `pytxmr jobs` once the jobtracker is "
        f"back (and do not submit it again with --overwrite before)")
    if reconnect is None:
        raise uncertain
    if notify is not None:
        notify(f"{lost}; trying to reach it again for {reconnect_timeout:g}s")
    try:
        back = await _reconnect(reactor, reconnect, reconnect_timeout)
    except ClusterUnreachable:
        raise uncertain from None
    output = str(spec.get("output", "")).rstrip("/")
    try:
        # Admitted since this submission began: not an earlier job of that
        # output (whose presence the lost answer may have refused it for).
        ours = [j["job_id"] for j in await back.call("jobs") if j.get("state") == "running"
                and not j.get("finishing")  # an ended job's elapsed time stopped
                and str(j.get("output") or "").rstrip("/") == output
                and j.get("elapsed", float("inf")) <= reactor.seconds() - started]
    except BaseException:
        back.close()
        raise
    if len(ours) != 1:
        back.close()
        raise SubmissionUncertain(
            f"{lost}; the jobtracker came back without a running job writing {output}: it "
            f"had not admitted it, or the job has ended already (see `pytxmr jobs`)")
    if notify is not None:
        notify(f"the jobtracker is back: it had admitted the job as {ours[0]}")
    return back, ours[0]


#: Seconds between a waiting client's status polls while it shows progress;
#: a quiet one polls only to notice a silent jobtracker (``QUIET_INTERVAL``).
PROGRESS_INTERVAL = 0.5


async def follow(reactor: Any, conn: Connection, job_id: str,
                 progress: ProgressCallback | None = None,
                 interval: float = PROGRESS_INTERVAL,
                 notify: Callable[[str], None] | None = None,
                 reconnect: Callable[[], Awaitable[Connection]] | None = None,
                 reconnect_timeout: float = RECONNECT_TIMEOUT) -> dict[str, Any]:
    """Wait for a submitted job's end (``submit``, ``wait JOB``), reporting
    its progress; its result dict. With ``reconnect``, a lost jobtracker is
    tried again with backoff for ``reconnect_timeout`` seconds, and the wait
    goes on with the one that comes back (it resumes its jobs)."""
    if notify is not None and (await conn.call("status", job_id)).get("workers") == 0:
        notify(NO_WORKERS)
    replaced: list[Connection] = []
    try:
        while True:
            try:
                return await _follow(reactor, conn, job_id, progress, interval)
            except NoSuchJob:
                if not replaced:
                    raise
                # It knew the job before it went away: the one that came back
                # resumed none of its jobs.
                raise JobLost(
                    f"the jobtracker came back without {job_id}: it was started on another "
                    f"--workdir, or its work directory was lost, so the job's outcome is "
                    f"unknown (its output has _SUCCESS if it succeeded)") from None
            except ClusterUnreachable as e:
                if reconnect is None:
                    raise _left(e, job_id) from None
                if notify is not None:
                    notify(f"{e}; trying to reach it again for {reconnect_timeout:g}s")
                try:
                    conn = await _reconnect(reactor, reconnect, reconnect_timeout)
                except ClusterUnreachable as gone:
                    raise _left(gone, job_id) from None
                replaced.append(conn)
                if notify is not None:
                    notify(f"the jobtracker is back; still waiting for {job_id}")
    finally:
        for c in replaced:
            c.close()


def _left(e: ClusterUnreachable, job_id: str) -> ClusterUnreachable:
    """The waiting ends with the jobtracker away: the job's id is said (a
    quiet submit had not said it), for a ``wait`` once it is back."""
    return ClusterUnreachable(f"{e}; the job {job_id} may go on once the jobtracker is back "
                              f"(`pytxmr wait {job_id}`)")


async def _reconnect(reactor: Any, reconnect: Callable[[], Awaitable[Connection]],
                     timeout: float) -> Connection:
    deadline = reactor.seconds() + timeout
    delay = 0.5
    while True:
        try:
            return await reconnect()
        except ClusterUnreachable:
            if reactor.seconds() + delay > deadline:
                raise
        await task.deferLater(reactor, delay, lambda: None)
        delay = min(delay * 1.5, 5.0)


#: Seconds the jobtracker may leave a waiting client's status polls
#: unanswered before the client takes its connection as lost: a partition
#: is silent, and TCP gives up on it after about 15 minutes.
SILENCE_TIMEOUT = 15.0
QUIET_INTERVAL = SILENCE_TIMEOUT / 5


async def _follow(reactor: Any, conn: Connection, job_id: str,
                  progress: ProgressCallback | None, interval: float) -> dict[str, Any]:
    finished = defer.Deferred.fromCoroutine(conn.call("wait", job_id))
    heard = checked = reactor.seconds()

    async def report() -> None:
        nonlocal heard
        try:
            status = await conn.call("status", job_id)
        except ClusterUnreachable:
            return
        except ClusterError:
            heard = reactor.seconds()  # an answer all the same
            return
        heard = reactor.seconds()
        if progress is not None and not finished.called:
            with contextlib.suppress(Exception):  # a progress bar's stdout gone: the wait goes on
                progress(status)

    def check_heard() -> None:
        nonlocal heard, checked
        now = reactor.seconds()
        if now - checked > 5:  # this process was stopped (Ctrl-Z, a laptop's sleep)
            heard = now
        checked = now
        if now - heard > SILENCE_TIMEOUT:
            conn.abort(f"no answer from the jobtracker in {SILENCE_TIMEOUT:g}s (a network "
                       f"partition? it is stopped?)")

    # The status is polled beside the wait, which alone decides the outcome:
    # a lost jobtracker fails the wait (and the poll, whose error is
    # dropped); a silent one is lost once its polls go unanswered.
    poll = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(report()))
    poll.clock = reactor
    poll.start(interval if progress is not None else QUIET_INTERVAL,
               now=False).addErrback(lambda f: None)
    watch = task.LoopingCall(check_heard)
    watch.clock = reactor
    watch.start(1.0, now=False)
    try:
        return await finished
    finally:
        for loop in (poll, watch):
            if loop.running:
                loop.stop()


async def submit(reactor: Any, address: str, secret: bytes, job: JobSubmission,
                 progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Connect, run one job, disconnect: the API for scripts and tests."""
    conn = await connect(reactor, address, secret)
    try:
        return await run_job(reactor, conn, job, progress)
    finally:
        conn.close()
