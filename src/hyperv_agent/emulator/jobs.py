"""Jobs of the emulated host.

A job's progress is a function of the clock: it is Running from its start until its end
time, then Completed or Exception (with ErrorCode and ErrorDescription), and it vanishes
``job_retention_s`` (by default 300 s, Hyper-V's TimeBeforeRemoval) after it ends:
hidden from that moment, deleted from the store as the next job starts
(:func:`sweep_expired`, which reads only the jobs due to go, from the host's
:class:`~jobbook.JobBook`). A job that never finishes has no end time and stays, until
its RequestStateChange terminates or kills it (:func:`stop`): it is the only
``Cancellable`` job, since every other job's work was done when it started
(``codes.JOB_NOT_CANCELLABLE``), but for a slow job a test makes cancellable
(``Faults.slow_next_job``), which stands for one Hyper-V stops midway.

A job started in a ``Queue`` of ``Slots`` (a live migration: at most
MaximumActiveVirtualSystemMigration run at once on the VM's host) waits, queued, while as
many jobs of its slots run as their limit allows: it begins when the earliest of them
ends (``slot_free_at``), and runs its duration from then. Hyper-V accepts such a move and
queues its job; Microsoft does not say what the job shows meanwhile, so a queued job
reads as CIM's New (2, "never been started"), at 0 percent. A job that never finishes
holds no slot (it stands for a job a test stops). A job of the slots that ends before its
time (stopped, or failing as it begins) gives its place to those queued behind it, which
then begin as the jobs still ahead of them end (``_move_up``).

The work of a queued job (a move's checks: the VM stays on its source until then) is
done when the job begins, and a job's ``finish`` (a move itself, made as its job
completes) when it ends (``defer``, which keeps both in its host's job book;
``begin_due`` runs what is due, before each primitive of an emulated host and on a timer
at the moment it is due). Until it begins a queued job is ``Cancellable``, as any job
whose work has not started: stopped, it never does its work, nor its finish. Work that
fails as it begins ends the job then, in Exception with its error; a finish that fails
ends it at its end the same way. The work waits in this process only: a job left
waiting when its process ends never does it, nor one of a host closed meanwhile
(``forget``). Such a job is stored marked until its last work is done (``LATER_WORK``):
the host, opened again, ends it failed (``_abandoned``), its work undone (for a move:
the VM on its source, as it was), rather than let it read Completed for work that never
happened.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.codes import (
    JOB_CANCELLED_ERROR,
    JobState,
    ReturnCode,
)
from hyperv_agent.emulator.host import EmulatedHost, cim_interval
from hyperv_agent.emulator.instruments import JobFault
from hyperv_agent.emulator.jobbook import (
    LATER_WORK,
    JobBook,
    Queued,
    Settle,
    Work,
    removal_time,
)
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.emulator.store import Record, Transaction

log = logging.getLogger("hyperv_agent.emulator")

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
    "validatevirtualharddisk": ("Msvm_StorageJob", 9),  # "Validate VHD Image"
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


@dataclass(frozen=True)
class Queue:
    """Where a job of ``slots`` stands: it begins at ``begin`` (``slot_free_at``, as the
    caller found it), and then does ``work`` (None: its work was done at the call); it
    does ``finish`` (if any) when it ends."""

    slots: Slots
    begin: float
    work: Work | None = None
    finish: Work | None = None


def new_job(
    host: EmulatedHost,
    txn: Transaction,
    method: str,
    affected: ObjectPath | None,
    fault: JobFault | None = None,
    error: tuple[int, str] | None = None,
    duration_s: float | None = None,
    cancellable: bool = False,
    queue: Queue | None = None,
    writes: str | None = None,
    retention_s: float | None = None,
    shows: Mapping[str, CimValue] | None = None,
) -> ObjectPath:
    """Stage a job for ``method``; it ends in Exception when ``fault`` or ``error`` says so,
    after ``duration_s`` (default: the latency model's job time), counted from when its
    ``queue`` lets it begin, and goes ``retention_s`` after it ends (default: the host's
    ``job_retention_s``). A job that never finishes is ``Cancellable``, and so is one
    made ``cancellable``; a queued job with work to do is until it begins. A job that
    ``writes`` a file holds it open until it ends (``writer``). A job failed by ``error``
    shows ``shows`` too once it has ended (``job_view``)."""
    class_name, job_type = _JOB_KINDS.get(method.lower(), ("Msvm_ConcreteJob", 0))
    now = host.clock()
    sweep_expired(host, now)
    duration = host.config.latency.job_s if duration_s is None else duration_s
    retention = host.config.job_retention_s if retention_s is None else retention_s
    if fault is not None and not fault.never_finishes:
        error = (fault.error_code, fault.description)
    never = fault is not None and fault.never_finishes
    queue = None if never else queue
    begin = now if queue is None else max(now, queue.begin)
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
        "slots": None if queue is None else queue.slots.name,
        "limit": None if queue is None else queue.slots.limit,
        "deferred": queue is not None and queue.work is not None,
        LATER_WORK: queue is not None and (queue.work is not None or queue.finish is not None),
        RETENTION: retention,
        "error": list(error) if error else None,
        SHOWS: dict(shows) if error and shows else None,
        "affected": str(affected) if affected is not None else None,
        "writes": None if writes is None else HostPaths.identity(writes),
    }
    _ends(host, record, end)
    txn.put(record)
    path = record.path
    _book(host).note(path.normalized, record)
    return path


#: ``Record.meta`` key of a failed job: the properties of its class it shows besides its
#: error once it has ended (``calls.MethodError.shows``: a Msvm_StorageJob's Child and
#: Parent, which Microsoft's Msvm_StorageJob page has hold the child and the parent "on
#: failure of the asynchronous operation"), None for any other job.
SHOWS = "shows"

#: ``Record.meta`` key of a job: how long it stays after it ends (seconds; its
#: TimeBeforeRemoval), the host's ``job_retention_s`` unless ``new_job`` was given another.
RETENTION = "retention"


def _ends(host: EmulatedHost, job: Record, end: float | None, **changes: object) -> None:
    """Note on the (staged) ``job`` that it ends at ``end`` (None: never) and goes its
    own retention after (``RETENTION``; a job stored without one, the host's), with the
    other ``changes`` to its hidden state: the one place a job's removal time is set,
    as it starts, is moved up the queue, stopped, fails, or is abandoned, so that a job
    made to go at once (``Faults.lose_next_job``) still does."""
    retention = _retention(host, job)
    job.meta.update(changes, end=end, remove_at=None if end is None else end + retention)


def _retention(host: EmulatedHost, job: Record) -> float:
    """How long ``job`` stays after it ends: its own retention (``RETENTION``), else the
    host's ``job_retention_s``."""
    kept = job.meta.get(RETENTION)
    return host.config.job_retention_s if kept is None else float(kept)


def slot_free_at(host: EmulatedHost, txn: Transaction, slots: Slots, now: float) -> float:
    """When a job queued now for ``slots`` begins: at once while fewer than ``limit`` of
    their jobs have yet to end, else when the one that frees the last slot ends (jobs
    begin in the order they were queued)."""
    ends = sorted((job.meta["end"] for job in holding(host, txn, slots.name, now)),
                  reverse=True)
    limit = max(1, slots.limit)  # a limit below 1 counts as 1: the emulator's choice
    return now if len(ends) < limit else max(now, float(ends[limit - 1]))


def defer(host: EmulatedHost, job: ObjectPath, queue: Queue) -> None:
    """Do ``queue.work`` when the (committed) ``job`` begins, and ``queue.finish`` when it
    ends, unless it is stopped (or has failed) first."""
    record = host.store.get(job)
    end = None if record is None else record.meta.get("end")
    waiting = [Queued(job, queue.begin, queue.work)] if queue.work is not None else []
    if queue.finish is not None and end is not None:
        waiting.append(Queued(job, float(end), queue.finish, at_end=True))
    for queued in waiting:
        host.job_book.queued[work_key(job, queued.at_end)] = queued
        host.later(max(0.0, queued.due - host.clock()), functools.partial(begin_due, host))


def work_key(job: ObjectPath, at_end: bool) -> str:
    """Where the job book keeps the work of ``job``: as it begins, or ``at_end``."""
    return job.normalized + ("|end" if at_end else "")


def begin_due(host: EmulatedHost) -> None:
    """Do the work of every queued job that has begun, in the order they began (on the
    emulator's thread): of ``host``, and of the other hosts of the process a move may
    reach (``EmulatedHost.registry``), since a move's work changes its destination too,
    and a primitive of the destination must see the move its source began. Run before
    every primitive: with no queued work, it does none. Every live host of the process
    is in the registry, also one whose name another shares (no move reaches either of
    them by that name: ``migration._find``)."""
    hosts = [host] if host.job_book.queued else []
    hosts += [other for other in EmulatedHost.live()
              if other is not host and other.job_book.queued]
    if not hosts:
        return
    due = sorted(((each, key, queued) for each in hosts
                  for key, queued in each.job_book.queued.items()
                  if each.clock() >= queued.due), key=lambda item: item[2].due)
    for each, key, queued in due:
        if each.job_book.queued.pop(key, None) is not None:
            _begin(each, key, queued)


def forget(host: EmulatedHost) -> None:
    """Drop the queued work of ``host`` (it is closing): a timer set for it finds none."""
    host.job_book.queued.clear()


def _begin(host: EmulatedHost, key: str, queued: Queued) -> None:
    job = host.store.get(queued.job)
    if job is None or job.meta.get("stopped") is not None or job.meta.get("error"):
        return
    due = float(job.meta.get("end" if queued.at_end else "begin", queued.due))
    if due > host.clock():  # moved up by a change its host did not keep
        host.job_book.queued[key] = dataclasses.replace(queued, due=due)
        return
    when = "ended" if queued.at_end else "began"
    # the job's last work: its finish, or its work as it begins when it has no finish
    last = queued.at_end or work_key(queued.job, True) not in host.job_book.queued
    try:
        error = queued.work(Settle(queued.job, last))
    except Exception as failure:  # not the primitive's that happens to run it: the job's
        log.exception("the work of a %s job that %s failed", job["ElementName"], when)
        # the emulator's own wording (Microsoft's depends on what failed), without the
        # emulator's local paths
        reason = failure.strerror if isinstance(failure, OSError) else None
        error = (ReturnCode.FAILED, f"the job failed as it {when}: {reason or 'an error'}")
    if error is None:
        if last:
            _settled(host, queued.job)
        return
    log.info("a %s job failed as it %s: %s", job["ElementName"], when, error[1])
    txn = host.store.transaction()
    staged = txn.edit(queued.job)
    if staged is None:
        return
    _ends(host, staged, due, error=list(error))
    staged.meta.pop(LATER_WORK, None)
    _book(host).note(queued.job.normalized, staged)
    moved = _move_up(host, txn, staged)
    txn.commit()
    _reschedule(host, moved)


def _settled(host: EmulatedHost, job: ObjectPath) -> None:
    """The work of ``job`` is all done: settled now, unless the work settled it with its
    own changes."""
    record = host.store.get(job)
    if record is not None and record.meta.get(LATER_WORK):
        txn = host.store.transaction()
        Settle(job)(txn)
        txn.commit()


def writer(host: EmulatedHost, path: str) -> Record | None:
    """The job of ``host`` still writing the file ``path`` (a disk the image management
    service creates, converts into or grows), which holds it open until it ends; else
    None. Only the jobs noted as writing that file are read."""
    identity = HostPaths.identity(path)
    book = _book(host)
    key = book.writer(identity)
    if key is None:
        return None
    job = host.store.transaction().get_key(key)
    if job is None or job.meta.get("writes") != identity or not running(job, host.clock()):
        book.written(identity, key)
        return None
    return job


def cancellable(job: Record, now: float) -> bool:
    """Whether RequestStateChange can stop ``job`` at ``now``: it has not ended, and its
    work has not started (it never finishes, a test made it cancellable, or it waits
    queued with its work to do)."""
    if not running(job, now):
        return False
    return job["Cancellable"] is True or _queued_with_work(job, now)


def _queued_with_work(job: Record, now: float) -> bool:
    return bool(job.meta.get("deferred")) and job.meta.get("stopped") is None and (
        now < float(job.meta.get("begin", 0.0)))


def active_jobs(host: EmulatedHost, txn: Transaction, slots: str, now: float) -> int:
    """How many jobs of the slots named ``slots`` run at ``now`` (begun, not ended)."""
    return sum(1 for job in holding(host, txn, slots, now)
               if job.meta.get("begin", 0.0) <= now)


def holding(host: EmulatedHost, txn: Transaction, slots: str, now: float) -> list[Record]:
    """The jobs (seen through ``txn``) that hold or wait for a slot of ``slots`` at
    ``now``: not ended, with an end; those noted that no longer do leave the book."""
    book = _book(host)
    held = []
    for key in list(book.slotted(slots)):
        job = txn.get_key(key)
        end = None if job is None else job.meta.get("end")
        if job is None or job.meta.get("slots") != slots or end is None or end <= now:
            book.release(slots, key)
        else:
            held.append(job)
    return held


def stop(host: EmulatedHost, txn: Transaction, job: Record, state: JobState) -> None:
    """End the running, cancellable ``job`` (staged in ``txn``, from ``Transaction.edit``)
    now, in ``state`` (Terminated or Killed), with the cancellation's error; its work never
    happens, and the jobs queued behind it for its slots begin sooner (``_move_up``)."""
    now = host.clock()
    begin = min(float(job.meta.get("begin", now)), now)  # a queued job ends unbegun
    _ends(host, job, now, begin=begin, error=list(JOB_CANCELLED_ERROR), stopped=int(state))
    job.meta.pop(LATER_WORK, None)
    job["Cancellable"] = False
    _book(host).note(job.path.normalized, job)
    _reschedule(host, _move_up(host, txn, job))


def _move_up(host: EmulatedHost, txn: Transaction, ended: Record) -> list[Record]:
    """After ``ended`` (staged in ``txn``) ended before its time, the jobs queued for its
    slots begin as slots free among those still ahead of them (``slot_free_at``'s rule,
    in the order they were queued), each running its duration from then; the jobs whose
    begin came sooner, staged in ``txn``."""
    name = ended.meta.get("slots")
    if name is None:
        return []
    now = host.clock()
    held = holding(host, txn, str(name), now)
    ends = [float(job.meta["end"]) for job in held if job.meta.get("begin", 0.0) <= now]
    queued = sorted((job for job in held if job.meta.get("begin", 0.0) > now),
                    key=lambda job: (float(job.meta["begin"]), float(job.meta["start"])))
    moved = []
    for job in queued:
        limit = max(1, int(job.meta.get("limit") or 1))
        ahead = sorted(ends, reverse=True)
        begin = now if len(ahead) < limit else max(now, ahead[limit - 1])
        end = float(job.meta["end"])
        if begin < float(job.meta["begin"]):
            staged = txn.edit(job.path)
            assert staged is not None
            end = begin + end - float(job.meta["begin"])
            _ends(host, staged, end, begin=begin)
            _book(host).note(staged.path.normalized, staged)
            moved.append(staged)
        ends.append(end)
    return moved


def _reschedule(host: EmulatedHost, moved: list[Record]) -> None:
    """The work of the jobs ``moved`` up is done at their new begin, their finish at
    their new end."""
    queue = host.job_book.queued
    for job in moved:
        for at_end in (False, True):
            key = work_key(job.path, at_end)
            queued = queue.get(key)
            due = float(job.meta["end" if at_end else "begin"])
            if queued is not None:
                queue[key] = dataclasses.replace(queued, due=due)
                host.later(max(0.0, due - host.clock()), functools.partial(begin_due, host))


def running(record: Record, now: float) -> bool:
    """Whether the job has not ended at ``now``."""
    end = record.meta.get("end")
    return end is None or now < end


def sweep_expired(host: EmulatedHost, now: float) -> int:
    """Delete the jobs past their retention at ``now``, in a transaction of their own (a
    call that fails after starting its job discards its own changes, not the sweep's):
    only the jobs the host's job book has due are read. Returns how many went."""
    due = _book(host).due(now)
    if not due:
        return 0
    book = _book(host)
    txn = host.store.transaction()
    gone = 0
    for key in due:
        job = txn.get_key(key)
        if job is not None and expired(job, now):
            txn.delete_key(key)
            gone += 1
            # what the book keeps of it goes with it, read again or not
            if job.meta.get("writes") is not None:
                book.written(str(job.meta["writes"]), key)
            if job.meta.get("slots") is not None:
                book.release(str(job.meta["slots"]), key)
    txn.commit()
    return gone


def open_book(host: EmulatedHost) -> None:
    """Read the jobs ``host`` stored before into its job book, as it opens (``_book``)."""
    _book(host)


def _book(host: EmulatedHost) -> JobBook:
    """The host's job book, with the jobs it stored before this process read in once;
    those left waiting for work their process never did end failed (``_abandoned``),
    unless another process holds the host (it may still do their work); those stored
    by a version that kept less of their timing given it (``_given_removal_times``)."""
    book = host.job_book
    if not book.filled:
        stored = list(host.keyed_records("CIM_ConcreteJob"))
        if host.held_elsewhere is None and any(job.meta.get(LATER_WORK) for _, job in stored):
            stored = _abandoned(host, stored)
        book.fill(_given_removal_times(host, stored))
    return book


def _given_removal_times(host: EmulatedHost, stored: list[tuple[str, Record]]
                         ) -> list[tuple[str, Record]]:
    """The jobs ``stored``, each stored by a version that kept less of its timing given
    what this one keeps (``_timed``): a job that ended without a removal time the one
    ``_ends`` gives, the host's ``job_retention_s`` after its end, as for any job that
    keeps no retention of its own; and a job whose TimeBeforeRemoval is not how long it
    really stays after its end (made under another ``job_retention_s``) that one, so
    that a client reading it is told when the job goes. Each keeps that retention as its
    own from then on. A host that only reads another process's state keeps them in
    memory (its store writes nothing)."""
    if all(_timed(host, job) for _, job in stored):
        return stored
    txn = host.store.transaction()
    timed = []
    for key, job in stored:
        staged = None if _timed(host, job) else txn.edit(job.path)
        if staged is not None:
            retention = _stays(host, staged)
            staged.meta[RETENTION] = retention
            staged["TimeBeforeRemoval"] = cim_interval(retention)
            end = staged.meta["end"]
            _ends(host, staged, None if end is None else float(end))
        timed.append((key, job if staged is None else staged))
    txn.commit()
    return timed


def _stays(host: EmulatedHost, job: Record) -> float:
    """How long ``job`` really stays after it ends: its own retention (``RETENTION``),
    else what its removal time says (one stored without its retention), else the
    host's."""
    end, remove_at = job.meta.get("end"), job.meta.get("remove_at")
    if job.meta.get(RETENTION) is None and end is not None and remove_at is not None:
        return float(remove_at) - float(end)
    return _retention(host, job)


def _timed(host: EmulatedHost, job: Record) -> bool:
    """Whether ``job`` has its removal time, or needs none (it never ends), and its own
    retention, which its TimeBeforeRemoval says."""
    return (job.meta.get("remove_at") is not None or job.meta.get("end") is None) and (
        job.meta.get(RETENTION) is not None) and (
        job["TimeBeforeRemoval"] == cim_interval(_retention(host, job)))


#: The error of a job whose work its process never did (the host stopped first):
#: ErrorCode 32768 (Failed). Microsoft does not document what a job shows when the host
#: stops in the middle of it (a live migration included): Exception, the state of a job
#: that "completed abnormally, with an error", is the emulator's choice, not Terminated
#: or Killed, which here mean a RequestStateChange of the job's client.
ABANDONED_ERROR = ReturnCode.FAILED


def _abandoned(host: EmulatedHost, stored: list[tuple[str, Record]]
               ) -> list[tuple[str, Record]]:
    """The jobs ``stored``, those left waiting for their work (``LATER_WORK``) ended
    failed in Exception (``ABANDONED_ERROR``), at their planned end or now, whichever
    comes first: none of their work was done (a move's VM is on its source, as it was),
    and they hold no slot. Their process ended, and every job waiting with them, so no
    job queued behind one is moved up."""
    now = host.clock()
    txn = host.store.transaction()
    ended = []
    for key, job in stored:
        staged = txn.edit(job.path) if job.meta.get(LATER_WORK) else None
        if staged is None:
            ended.append((key, job))
            continue
        planned = staged.meta.get("end")
        end = now if planned is None else min(float(planned), now)
        description = (f"{staged['ElementName']} did not complete: the host stopped before "
                       "the job's work was done, and none of it was made.")
        log.warning("a %s job ends failed: %s", staged["ElementName"], description)
        _ends(host, staged, end, begin=min(float(staged.meta.get("begin", end)), end),
              error=[int(ABANDONED_ERROR), description])
        staged.meta.pop(LATER_WORK, None)
        ended.append((key, staged))
    txn.commit()
    return ended


def job_view(record: Record, now: float) -> dict[str, CimValue]:
    """The clock-dependent properties of a job at ``now``."""
    start, end, error = record.meta["start"], record.meta["end"], record.meta["error"]
    start = record.meta.get("begin", start)
    if end is not None and now < start:
        return {"JobState": JobState.NEW, "PercentComplete": 0, "ErrorCode": 0,
                "JobStatus": "Job is queued",
                "Cancellable": record["Cancellable"] is True or _queued_with_work(record, now)}
    if end is None or now < end:
        span = (end - start) if end is not None else 0.0
        percent = int(100 * (now - start) / span) if span > 0 else 0
        return {"JobState": JobState.RUNNING, "PercentComplete": min(percent, 99),
                "ErrorCode": 0, "JobStatus": "Job is running"}
    if error:
        stopped = record.meta.get("stopped")
        return {**(record.meta.get(SHOWS) or {}),
                "JobState": stopped or JobState.EXCEPTION, "PercentComplete": 100,
                "ErrorCode": error[0], "ErrorDescription": error[1],
                "ErrorSummaryDescription": error[1],
                "JobStatus": "Job was cancelled" if stopped else "Job is completed with error"}
    return {"JobState": JobState.COMPLETED, "PercentComplete": 100, "ErrorCode": 0,
            "JobStatus": "Job is completed"}


def expired(record: Record, now: float) -> bool:
    """Whether a finished job's retention has passed (it is no longer seen)."""
    remove_at = removal_time(record)
    return remove_at is not None and now > remove_at


def is_job(record: Record) -> bool:
    return "CIM_ConcreteJob" in record.class_def.ancestors or (
        record.class_def.name == "Msvm_ConcreteJob"
    )
