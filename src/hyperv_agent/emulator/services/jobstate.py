"""RequestStateChange of the jobs (Msvm_ConcreteJob, Msvm_StorageJob, Msvm_MigrationJob):
stopping a job that is still running.

Terminate (4) and Kill (5) end a running, ``Cancellable`` job at once, Terminated or
Killed, with nothing of its work done; the job then reads as ended with the cancellation's
error (``codes.JOB_CANCELLED_ERROR``). Only a job whose work never started is cancellable
(``jobs`` module notes), a move still queued among them; any other job, and a job that
has ended, answers 4097. Start, Suspend and Service are not supported (1); other values
are invalid (5). TimeoutPeriod is accepted and not needed: a stop takes effect at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperv_agent.cim.api import OutValue
from hyperv_agent.emulator import jobs
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import (
    JOB_NOT_CANCELLABLE,
    JobRequest,
    JobState,
    JobStateChange,
)

JOB_CLASSES = ("Msvm_ConcreteJob", "Msvm_StorageJob", "Msvm_MigrationJob")
_STOPPED = {JobRequest.TERMINATE: JobState.TERMINATED, JobRequest.KILL: JobState.KILLED}


def request_state_change(call: Call) -> Mapping[str, OutValue]:
    job = call.target
    requested = call.integer("RequestedState")
    if job is None:
        raise MethodError(JobStateChange.INVALID_PARAMETER, "a job is asked, not its class",
                          immediate=True)
    if requested not in _STOPPED:
        code = JobStateChange.NOT_SUPPORTED if requested in tuple(JobRequest) else (
            JobStateChange.INVALID_PARAMETER)
        raise MethodError(code, f"RequestedState {requested} is not Terminate (4) or Kill (5)",
                          immediate=True)
    now = call.host.clock()
    if not jobs.cancellable(job, now):
        raise MethodError(JOB_NOT_CANCELLABLE, "the job has ended or can no longer be "
                          "cancelled", immediate=True)
    staged = call.txn.edit(job.path)
    assert staged is not None
    jobs.stop(call.host, call.txn, staged, _STOPPED[JobRequest(requested)])
    return {}


for _class in JOB_CLASSES:
    handles(_class, "RequestStateChange")(request_state_change)
