"""invoke -> return code -> bounded job wait -> typed error.

Every Hyper-V method call in the project goes through ``call``: a ReturnValue of 0 is
done, 4096 starts a job that is polled (with a growing interval) until it finishes or the
deadline passes, anything else is a ``MethodFailed``. A job that ends in any state but
Completed raises ``JobFailed`` with its ErrorCode and ErrorDescription; a job still
running at the deadline raises ``JobTimeout``; a job the host no longer knows (its path
answers not found: the Virtual Machine Management Service restarted and lost its jobs, or
Hyper-V removed the job ``TimeBeforeRemoval`` after it ended, before a late poll read it)
raises ``JobLost``, at its first poll or any later one, never read again: how it ended is
gone with it. Whether the work was done is for the caller to tell, where the work's
effect is unambiguous and one read shows it on that failure alone: a VM's state after a
start or a turn-off (``vms.request_state``), a VM gone from its source after a move
(``migration``), a VM gone after DestroySystem (``vms.destroy``); every other caller
fails, the error naming the method and the lost job.

A caller that must not leave a job running past its bound starts it with ``start``, waits
with ``wait`` and stops it with ``terminate``, or gives ``call`` a ``grace``: a job whose
wait ends early is then stopped before ``call`` gives up on it. Hyper-V stops only a job
it reports ``Cancellable``; one it cannot stop runs on, and what the caller asked for in
``after_job`` (removing the file the job writes, which it holds open meanwhile) is done
once it has ended, in the background, bounded by the job's own wait.

Inside a command the management server waits a bounded time for (``command_bound``, set
by the dispatcher for every command whose body has a ``wait``), no wait for Hyper-V ends
later than the command's bound allows (``limited``): a job, and a VM's state change
(``power.settle``), within the rest of ``WORK_SHARE`` of what the MS waits, counted from
when the command came; stopping an overdue job, undoing what a failed command began, and
a wait the command sizes from its whole ``wait`` keeping back its own grace (a move), in
``whole_wait``, within the rest of all of it. So the answer comes while the MS still
waits for it, never after the MS has failed the command while Hyper-V goes on. Work
outside a command (reports, pings, the agent's own sweeps) is bounded by its job wait
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from hyperv_agent.cim.api import Cim, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.errors import (
    CimError,
    CimNotFound,
    CimUnavailable,
    HyperVError,
    JobFailed,
    JobLost,
    JobTimeout,
    MethodFailed,
)
from hyperv_agent.hyperv.schema import (
    JOB_FINISHED,
    JOB_SUCCEEDED,
    JobRequest,
    JobStateChange,
    ReturnCode,
)

_LOG = logging.getLogger("hyperv_agent.hyperv.jobs")


@dataclass(frozen=True)
class WaitPolicy:
    """How long and how often to poll a job."""

    timeout_s: float = 600.0
    first_poll_s: float = 0.02
    max_poll_s: float = 1.0
    backoff: float = 2.0


DEFAULT_POLICY = WaitPolicy()
#: How long a job is polled through its host being out of reach (a dropped WinRM
#: connection, the service restarting): the job runs on meanwhile, and its outcome is
#: what the command answers.
UNREACHABLE_GRACE_S = 30.0
_STARTED = (ReturnCode.JOB_STARTED, ReturnCode.CIM_RUNNING)
#: The share of what the management server waits for a command's answer (its ``wait``)
#: that the command's waits for Hyper-V may use; the rest is for the work after a wait
#: (a few calls, undoing what a failed command began) and the answer. A choice: the
#: work after a wait is at most a few Hyper-V jobs.
WORK_SHARE = 0.5
#: How long a job asked to stop is waited for before its caller gives up on it (within
#: the command's whole ``wait``): a choice, as Microsoft gives no bound for a stop.
STOP_GRACE = WaitPolicy(timeout_s=30.0, max_poll_s=0.5)
#: What to do once a job that runs on after its caller gave up on it has ended
#: (``after_job``); None: nothing.
_AFTER_JOB: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = (
    contextvars.ContextVar("after_job", default=None))
#: The waits for such jobs, running in the background, held so none is dropped unfinished.
_WAITING: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class CommandBound:
    """What the management server waits for one command's answer (``answer_s``), from
    ``started`` (``time.monotonic``): the bound of every wait for Hyper-V inside it."""

    command: str  # its class name, for the messages
    answer_s: float
    started: float

    def until(self, whole: bool) -> float:
        """When the command's waits must have ended: at ``WORK_SHARE`` of ``answer_s``,
        or with ``whole`` at all of it."""
        return self.started + self.answer_s * (1.0 if whole else WORK_SHARE)

    def describe(self, whole: bool) -> str:
        """The bound in words, for the answer's ``details``."""
        if whole:
            return f"the {self.answer_s:g} s the management server waits for {self.command}"
        return (f"{self.answer_s * WORK_SHARE:g} s, half the {self.answer_s:g} s the "
                f"management server waits for {self.command}")


#: The bound of the command being answered (and whether its whole wait is in use); None
#: outside a command.
_BOUND: contextvars.ContextVar[tuple[CommandBound, bool] | None] = contextvars.ContextVar(
    "command_bound", default=None)


@contextlib.contextmanager
def command_bound(command: str, answer_s: float | None) -> Iterator[None]:
    """Bound every wait for Hyper-V inside the block by a command the management server
    waits ``answer_s`` seconds for, from now; ``answer_s`` None (a body without a
    ``wait``): by the job wait alone."""
    bound = None if answer_s is None else CommandBound(command, answer_s, time.monotonic())
    token = _BOUND.set(None if bound is None else (bound, False))
    try:
        yield
    finally:
        _BOUND.reset(token)


@contextlib.contextmanager
def whole_wait() -> Iterator[None]:
    """Inside the block the command's waits may run to the end of all of what the MS waits
    for it, not only ``WORK_SHARE`` of it: for stopping an overdue job and undoing what a
    failed command began, which must still happen before the answer, and for a wait
    sized from the command's whole ``wait`` that keeps back its own grace (a move).
    Outside a command: no change."""
    current = _BOUND.get()
    token = _BOUND.set(None if current is None else (current[0], True))
    try:
        yield
    finally:
        _BOUND.reset(token)


def limited(policy: WaitPolicy) -> tuple[float, str | None]:
    """How long a wait under ``policy`` may take now: ``policy.timeout_s``, or less when
    the command's bound ends sooner; then with the bound in words (else None)."""
    current = _BOUND.get()
    if current is None:
        return policy.timeout_s, None
    bound, whole = current
    left = max(0.0, bound.until(whole) - time.monotonic())
    if left >= policy.timeout_s:
        return policy.timeout_s, None
    return left, bound.describe(whole)


async def call(
    cim: Cim,
    path: ObjectPath,
    method: str,
    params: Mapping[str, InValue] | None = None,
    *,
    accept: Collection[int] = (),
    policy: WaitPolicy = DEFAULT_POLICY,
    grace: WaitPolicy | None = None,
    started: Callable[[MethodResult], None] | None = None,
) -> MethodResult:
    """Call ``method`` and wait for its job; ``accept`` lists extra return codes taken as done.
    With ``grace``, a job still running when its wait ends (``policy`` ran out, or the
    caller was cancelled) is stopped first (``wait_or_stop``). ``started`` is given the
    call's result (its out parameters) as soon as the call is accepted, before its job is
    waited for.

    Raises MethodFailed, JobFailed, JobTimeout or JobLost; nothing is retried.
    """
    result, job = await start(cim, path, method, params, accept=accept)
    if started is not None:
        started(result)
    if job is not None:
        if grace is None:
            await wait(cim, job, method, policy)
        else:
            await wait_or_stop(cim, job, method, policy, grace)
    return result


async def start(
    cim: Cim,
    path: ObjectPath,
    method: str,
    params: Mapping[str, InValue] | None = None,
    *,
    accept: Collection[int] = (),
) -> tuple[MethodResult, ObjectPath | None]:
    """Call ``method``: its result, and the path of the job it started (None when it was
    done at once). MethodFailed for any other return code. 1 call."""
    result = await cim.invoke(path, method, params)
    code = result.return_value
    if code == ReturnCode.COMPLETED or code in accept:
        return result, None
    if code in _STARTED:
        job = result.path("Job")
        if job is None:
            raise HyperVError(f"{method} started a job but returned no Job reference")
        return result, job
    raise MethodFailed(method, code, ReturnCode.describe(code))


async def terminate(cim: Cim, job_path: ObjectPath) -> bool:
    """Ask the job at ``job_path`` to stop cleanly (RequestStateChange Terminate): True when
    the job took the request, False when it did not: it cannot stop (it has ended, or is
    past the point where it can be stopped), or the host refused the request with another
    code or did not answer it (logged). A refusal says nothing of where the job is: the
    caller goes on as for a job that runs on. A job that is gone counts as ended. 1 call;
    the caller waits for the job to end."""
    took, refused = await _ask_to_stop(cim, job_path)
    if refused is not None:
        _LOG.warning("the job %s was not asked to stop: %s", job_path, refused)
    return took


async def _ask_to_stop(cim: Cim, job_path: ObjectPath) -> tuple[bool, str | None]:
    """``terminate``'s request, logging nothing: whether the job took it, and why the host
    refused it (a code other than 4097, or no answer), None when it did not."""
    try:
        result = await cim.invoke(job_path, "RequestStateChange",
                                  {"RequestedState": int(JobRequest.TERMINATE)})
    except CimNotFound:
        return False, None
    except CimError as error:
        return False, str(error)
    code = result.return_value
    if code in (JobStateChange.COMPLETED, JobStateChange.TRANSITION_STARTED):
        return True, None
    if code != JobStateChange.INVALID_STATE_TRANSITION:
        return False, f"RequestStateChange failed with return code {code}"
    return False, None


async def wait_or_stop(cim: Cim, job_path: ObjectPath, method: str, policy: WaitPolicy,
                       grace: WaitPolicy) -> CimInstance:
    """``wait``; when the wait ends with the job still running (JobTimeout, or the caller
    cancelled, as a bound on a whole command does), the job is asked to stop
    (``terminate``) and, when it took the request, waited on for up to
    ``grace.timeout_s`` before the JobTimeout or the cancellation goes on. So a job that
    writes a file (a merge) is over when its caller removes what it wrote, unless Hyper-V
    cannot stop it or it outlasts ``grace``: then what ``after_job`` asked for is done
    once it has ended. The stop is shielded from a second cancellation."""
    try:
        return await wait(cim, job_path, method, policy)
    except (JobTimeout, asyncio.CancelledError):
        running = await asyncio.shield(_stop(cim, job_path, method, grace))
        if running is not None:
            _when_ended(cim, job_path, method, policy, running)
        raise


@contextlib.contextmanager
def after_job(then: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Inside the block, a job given up on that Hyper-V cannot stop (``wait_or_stop``)
    has ``then`` run once it has ended, however it ends: in the background, outside the
    bound of the command that gave up on it, waiting for up to the job's own wait. For
    removing the file the job writes, which Hyper-V holds open until then: removed at
    once, it could not be, or would be written on after. ``then`` runs also when the job
    still runs at the end of that wait (its failure to remove is its own to log)."""
    token = _AFTER_JOB.set(then)
    try:
        yield
    finally:
        _AFTER_JOB.reset(token)


def _when_ended(cim: Cim, job_path: ObjectPath, method: str, policy: WaitPolicy,
                why: str) -> None:
    """The one warning for a job given up on that may run on (``why``: what its stop
    came to), and what ``after_job`` asked for, done once it has ended."""
    then = _AFTER_JOB.get()
    if then is None:
        _LOG.warning("the %s job %s", method, why)
        return

    async def waited() -> None:
        _BOUND.set(None)  # this task's own context: no command waits for it
        try:
            await wait(cim, job_path, method, policy)
        except JobFailed:
            pass  # ended all the same
        except (HyperVError, CimError) as failure:
            _LOG.warning("the %s job given up on was not seen to end: %s", method, failure)
        try:
            await then()
        except Exception:
            _LOG.exception("the clean-up after the %s job failed", method)

    task = asyncio.create_task(waited(), name=f"after-{method}")
    _WAITING.add(task)
    task.add_done_callback(_WAITING.discard)
    _LOG.warning("the %s job %s; what it writes is removed once it ends", method, why)


async def _stop(cim: Cim, job_path: ObjectPath, method: str,
                grace: WaitPolicy) -> str | None:
    """Ask the job to stop and, when it took the request, wait for its end, for up to
    ``grace.timeout_s`` and within all of the command's ``wait`` (``whole_wait``): None
    once it has ended; when it may run on (Hyper-V cannot stop it or refused to, or it
    outlasted ``grace``), what the stop came to, for the caller's one warning. How it
    ends is not the caller's answer (that is already a failure), so it is only logged."""
    with whole_wait():
        return await _stop_within(cim, job_path, method, grace)


async def _stop_within(cim: Cim, job_path: ObjectPath, method: str,
                       grace: WaitPolicy) -> str | None:
    try:
        took, refused = await _ask_to_stop(cim, job_path)
        if not took:
            return await _ended_unstopped(cim, job_path, method, refused)
        await wait(cim, job_path, method, grace)
        _LOG.info("the %s job completed after all while it was being stopped", method)
    except JobLost:  # as ``terminate``: a job gone counts as ended
        _LOG.warning("the %s job was lost by its host while it was being stopped", method)
    except JobFailed:
        _LOG.info("the %s job was stopped", method)
    except JobTimeout as late:  # its wait may end before grace's at the command's bound
        return f"was asked to stop and still ran {late.later()}"
    except (HyperVError, CimError) as error:
        return f"could not be stopped: {error}"
    return None


async def _ended_unstopped(cim: Cim, job_path: ObjectPath, method: str,
                           refused: str | None) -> str | None:
    """After the job did not take the request to stop (``refused``: why the host refused
    it, None when the job cannot stop now): None when it has ended (1 get; a job gone
    has), when something is to be done once it has (``after_job``); else what the stop
    came to, with no get."""
    unstopped = ("could not be stopped" if refused is None
                 else f"was not stopped: the host refused to stop it ({refused})")
    if _AFTER_JOB.get() is None:
        return f"{unstopped}; it has ended or runs on"
    try:
        job = await cim.get(job_path)
    except CimNotFound:
        ended = True
    else:
        ended = (job.integer("JobState") or 0) in JOB_FINISHED
    if not ended:
        return f"{unstopped}; it runs on"
    if refused is not None:
        _LOG.info("the %s job %s; it had ended", method, unstopped)
    return None


async def wait(
    cim: Cim,
    job_path: ObjectPath,
    method: str,
    policy: WaitPolicy = DEFAULT_POLICY,
    clock: Callable[[], float] = time.monotonic,
) -> CimInstance:
    """Poll the job at ``job_path`` until it finishes; returns the finished job. The wait
    ends at ``policy.timeout_s``, or sooner at the command's bound (``limited``); JobLost
    when the host no longer knows the job."""
    timeout_s, bound = limited(policy)
    deadline = clock() + timeout_s
    interval = policy.first_poll_s
    while True:
        job = await _poll_through_outages(cim, job_path, method, policy, clock, deadline)
        state = job.integer("JobState") or 0
        if state in JOB_FINISHED:
            return _outcome(job, method, state)
        if clock() >= deadline:
            raise JobTimeout(method, timeout_s, job.integer("PercentComplete") or 0,
                             state, bound=bound)
        await asyncio.sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * policy.backoff, policy.max_poll_s)


async def _poll_through_outages(cim: Cim, job_path: ObjectPath, method: str,
                                policy: WaitPolicy, clock: Callable[[], float],
                                deadline: float) -> CimInstance:
    """The job, read again every ``max_poll_s`` while the host cannot be reached, for up
    to ``UNREACHABLE_GRACE_S`` (and never past ``deadline``); then CimUnavailable."""
    out_since: float | None = None
    while True:
        try:
            return await _poll(cim, job_path, method)
        except CimUnavailable:
            now = clock()
            out_since = now if out_since is None else out_since
            if now - out_since >= UNREACHABLE_GRACE_S or now >= deadline:
                raise
            await asyncio.sleep(min(policy.max_poll_s, deadline - now))


async def _poll(cim: Cim, job_path: ObjectPath, method: str) -> CimInstance:
    try:
        return await cim.get(job_path)
    except CimNotFound:
        raise JobLost(method) from None


def _outcome(job: CimInstance, method: str, state: int) -> CimInstance:
    error_code = job.integer("ErrorCode") or 0
    if state in JOB_SUCCEEDED and error_code == 0:
        return job
    description = (
        job.string("ErrorDescription") or job.string("ErrorSummaryDescription") or ""
    ) if "ErrorDescription" in job else ""
    raise JobFailed(method, state, error_code, description, job)
