"""Jobs of the emulated host.

A job's progress is a function of the clock: it is Running from its start until its end
time, then Completed or Exception (with ErrorCode and ErrorDescription), and it vanishes
``JOB_RETENTION_S`` after it ends, as Hyper-V's jobs do. A job that never finishes has
no end time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.codes import JOB_RETENTION_S, JobState
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.instruments import JobFault
from hyperv_agent.emulator.store import Record, Transaction

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
}


def new_job(
    host: EmulatedHost,
    txn: Transaction,
    method: str,
    affected: ObjectPath | None,
    fault: JobFault | None = None,
    error: tuple[int, str] | None = None,
) -> ObjectPath:
    """Stage a job for ``method``; it ends in Exception when ``fault`` or ``error`` says so."""
    class_name, job_type = _JOB_KINDS.get(method.lower(), ("Msvm_ConcreteJob", 0))
    now = host.clock()
    duration = host.config.latency.job_s
    record = host.new_record(
        class_name, InstanceID=str(uuid.uuid4()).upper(), Caption=method,
        Description=f"{method} job", ElementName=method, JobType=job_type,
        Cancellable=True, DeleteOnCompletion=False,
    )
    if fault is not None and not fault.never_finishes:
        error = (fault.error_code, fault.description)
    record.meta = {
        "start": now,
        "end": None if fault is not None and fault.never_finishes else now + duration,
        "error": list(error) if error else None,
        "affected": str(affected) if affected is not None else None,
    }
    txn.put(record)
    return record.path


def job_view(record: Record, now: float) -> dict[str, CimValue]:
    """The clock-dependent properties of a job at ``now``."""
    start, end, error = record.meta["start"], record.meta["end"], record.meta["error"]
    if end is None or now < end:
        span = (end - start) if end is not None else 0.0
        percent = int(100 * (now - start) / span) if span > 0 else 0
        return {"JobState": JobState.RUNNING, "PercentComplete": min(percent, 99),
                "ErrorCode": 0, "JobStatus": "Job is running"}
    if error:
        return {"JobState": JobState.EXCEPTION, "PercentComplete": 100,
                "ErrorCode": error[0], "ErrorDescription": error[1],
                "ErrorSummaryDescription": error[1],
                "JobStatus": "Job is completed with error"}
    return {"JobState": JobState.COMPLETED, "PercentComplete": 100, "ErrorCode": 0,
            "JobStatus": "Job is completed"}


def expired(record: Record, now: float) -> bool:
    end = record.meta.get("end")
    return end is not None and now > end + JOB_RETENTION_S


def is_job(record: Record) -> bool:
    return "CIM_ConcreteJob" in record.class_def.ancestors or (
        record.class_def.name == "Msvm_ConcreteJob"
    )
