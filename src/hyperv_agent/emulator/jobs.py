"""Jobs of the emulated host.

A job's progress is a function of the clock: it is Running from its start until its end
time, then Completed or Exception (with ErrorCode and ErrorDescription), and it vanishes
``job_retention_s`` (by default 300 s, Hyper-V's TimeBeforeRemoval) after it ends: hidden
from that moment, deleted from the store by the next sweep (:func:`sweep_expired`, run as
new jobs start, at most every tenth of the retention). A job that never finishes has no
end time and stays, until its RequestStateChange terminates or kills it (:func:`stop`):
it is the only ``Cancellable`` job, since every other job's work was done when it started
(``codes.JOB_NOT_CANCELLABLE``), but for a slow job a test makes cancellable
(``Faults.slow_next_job``), which stands for one Hyper-V stops midway.

A job started with ``Slots`` (a live migration: at most MaximumActiveVirtualSystemMigration
run at once on the VM's host) waits, queued, while as many jobs of its slots run as their
limit allows: it begins when the earliest of them ends, and runs its duration from then.
Hyper-V accepts such a move and queues its job; Microsoft does not say what the job
shows meanwhile, so a queued job reads as CIM's New (2, "never been started"), at 0
percent, and is no more cancellable than a running one. A job that never finishes holds
no slot (it stands for a job a test stops).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.codes import JOB_CANCELLED_ERROR, JOB_RETENTION_S, JobState
from hyperv_agent.emulator.host import EmulatedHost, cim_interval
from hyperv_agent.emulator.instruments import JobFault
from hyperv_agent.emulator.store import Record, Transaction

#: Sweeps for finished jobs are at least this far apart.
MIN_SWEEP_INTERVAL_S = 1.0
#: Which job class and JobType a method's job has (default: Msvm_ConcreteJob).
_JOB_KINDS: Mapping[str, tuple[str, int]] = {
    "definesystem": ("Msvm_ConcreteJob", 1),
    "modifysystemsettings": ("Msvm_ConcreteJob", 2),
    "destroysystem": ("Msvm_ConcreteJob", 3),
    "addresourcesettings": ("Msvm_ConcreteJob", 30),
    "modifyresourcesettings": ("Msvm_ConcreteJob", 31),
    "removeresourcesettings": ("Msvm_ConcreteJob", 32),
    "createvirtualharddisk": ("Msvm_StorageJob", 1),
    "resizevirtualharddisk": ("Msvm_StorageJob", 4),
    "convertvirtualharddisk": ("Msvm_StorageJob", 6),
    "getvirtualharddisksettingdata": ("Msvm_StorageJob", 0),
    "getvirtualharddiskstate": ("Msvm_StorageJob", 0),
    "migratevirtualsystemtohost": ("Msvm_MigrationJob", 0),
    "checkvirtualsystemismigratable": ("Msvm_MigrationJob", 0),
}


@dataclass(frozen=True)
class Slots:
    """A host's bound on the jobs of one kind that run at once: ``limit`` of the jobs
    started with the same ``name``."""

    name: str
    limit: int


def new_job(
    host: EmulatedHost,
    txn: Transaction,
    method: str,
    affected: ObjectPath | None,
    fault: JobFault | None = None,
    error: tuple[int, str] | None = None,
    duration_s: float | None = None,
    cancellable: bool = False,
    slots: Slots | None = None,
) -> ObjectPath:
    """Stage a job for ``method``; it ends in Exception when ``fault`` or ``error`` says so,
    after ``duration_s`` (default: the latency model's job time), counted from when one of
    its ``slots`` is free. A job that never finishes is ``Cancellable``, and so is one
    made ``cancellable``."""
    class_name, job_type = _JOB_KINDS.get(method.lower(), ("Msvm_ConcreteJob", 0))
    now = host.clock()
    sweep_expired(host, txn, now)
    duration = host.config.latency.job_s if duration_s is None else duration_s
    retention = host.config.job_retention_s
    if fault is not None and not fault.never_finishes:
        error = (fault.error_code, fault.description)
    never = fault is not None and fault.never_finishes
    begin = now if slots is None or never else _free_slot(host, txn, slots, now)
    end = None if never else begin + duration
    record = host.new_record(
        class_name, InstanceID=str(uuid.uuid4()).upper(), Caption=method,
        Description=f"{method} job", ElementName=method, JobType=job_type,
        Cancellable=end is None or cancellable, DeleteOnCompletion=False,
        TimeBeforeRemoval=cim_interval(retention),
    )
    record.meta = {
        "start": now,
        "begin": begin,
        "slots": None if slots is None or never else slots.name,
        "end": end,
        "remove_at": None if end is None else end + retention,
        "error": list(error) if error else None,
        "affected": str(affected) if affected is not None else None,
    }
    txn.put(record)
    return record.path


def _free_slot(host: EmulatedHost, txn: Transaction, slots: Slots, now: float) -> float:
    """When a job queued now for ``slots`` begins: at once while fewer than ``limit`` of
    their jobs have yet to end, else when the one that frees the last slot ends (jobs
    begin in the order they were queued)."""
    ends = sorted((job.meta["end"] for job in host.records("CIM_ConcreteJob", txn)
                   if job.meta.get("slots") == slots.name and job.meta.get("end") is not None
                   and job.meta["end"] > now), reverse=True)
    limit = max(1, slots.limit)  # a limit below 1 counts as 1: the emulator's choice
    return now if len(ends) < limit else max(now, float(ends[limit - 1]))


def active_jobs(host: EmulatedHost, txn: Transaction, slots: str, now: float) -> int:
    """How many jobs of the slots named ``slots`` run at ``now`` (begun, not ended)."""
    return sum(1 for job in host.records("CIM_ConcreteJob", txn)
               if job.meta.get("slots") == slots and job.meta.get("begin", 0.0) <= now
               and job.meta.get("end") is not None and now < job.meta["end"])


def stop(host: EmulatedHost, job: Record, state: JobState) -> None:
    """End the running, cancellable ``job`` (staged, from ``Transaction.edit``) now, in
    ``state`` (Terminated or Killed), with the cancellation's error; its work never
    happens."""
    now = host.clock()
    job.meta.update(end=now, remove_at=now + host.config.job_retention_s,
                    error=list(JOB_CANCELLED_ERROR), stopped=int(state))
    job["Cancellable"] = False


def running(record: Record, now: float) -> bool:
    """Whether the job has not ended at ``now``."""
    end = record.meta.get("end")
    return end is None or now < end


def sweep_expired(host: EmulatedHost, txn: Transaction, now: float) -> int:
    """Stage the deletion of every job past its retention; at most every tenth of the
    retention (and at least a second apart), so a sweep's cost is spread over many jobs.
    Returns how many were staged."""
    if now < host.next_job_sweep:
        return 0
    host.next_job_sweep = now + max(MIN_SWEEP_INTERVAL_S, host.config.job_retention_s / 10)
    gone = [job.path for job in host.records("CIM_ConcreteJob", txn) if expired(job, now)]
    for path in gone:
        txn.delete(path)
    return len(gone)


def job_view(record: Record, now: float) -> dict[str, CimValue]:
    """The clock-dependent properties of a job at ``now``."""
    start, end, error = record.meta["start"], record.meta["end"], record.meta["error"]
    start = record.meta.get("begin", start)
    if end is not None and now < start:
        return {"JobState": JobState.NEW, "PercentComplete": 0, "ErrorCode": 0,
                "JobStatus": "Job is queued"}
    if end is None or now < end:
        span = (end - start) if end is not None else 0.0
        percent = int(100 * (now - start) / span) if span > 0 else 0
        return {"JobState": JobState.RUNNING, "PercentComplete": min(percent, 99),
                "ErrorCode": 0, "JobStatus": "Job is running"}
    if error:
        stopped = record.meta.get("stopped")
        return {"JobState": stopped or JobState.EXCEPTION, "PercentComplete": 100,
                "ErrorCode": error[0], "ErrorDescription": error[1],
                "ErrorSummaryDescription": error[1],
                "JobStatus": "Job was cancelled" if stopped else "Job is completed with error"}
    return {"JobState": JobState.COMPLETED, "PercentComplete": 100, "ErrorCode": 0,
            "JobStatus": "Job is completed"}


def expired(record: Record, now: float) -> bool:
    """Whether a finished job's retention has passed (it is no longer seen)."""
    remove_at = record.meta.get("remove_at")
    if remove_at is None:  # a job stored before removal times were recorded
        end = record.meta.get("end")
        remove_at = None if end is None else end + JOB_RETENTION_S
    return remove_at is not None and now > remove_at


def is_job(record: Record) -> bool:
    return "CIM_ConcreteJob" in record.class_def.ancestors or (
        record.class_def.name == "Msvm_ConcreteJob"
    )
