"""Where a host's jobs stand in time: when each is due to go, which hold a slot, and
the work of those queued.

A host keeps every job it ran for its retention (300 s): thousands on a host kept busy,
more than it has instances of anything else. The work done on them follows the jobs it
concerns, not all the host keeps: the sweep that deletes expired jobs pops those due
from a heap ordered by removal time, and the queue of moves reads the few jobs that
hold one of its slots.

The book is a hint, the records the truth: an entry may name a job since deleted,
rolled back or stopped (its times changed), and whoever reads an entry checks it
against the job's record. What it must not do is miss a job: every job staged is
noted (``note``) as are the changes of its times, and the jobs a host stored before
this process are read into it once (``filled``).

The work a job does when it begins (a queued job) or when it ends (a move, made as its
job completes) (``queued``) lives in this process only, as the job's host does: closing
the host drops it, and a job left waiting for it when its process ends never does it.
Such a job is stored marked (``LATER_WORK``) until its last work is done (``Settle``), so
that the host, opened again, finds it and ends it failed (``jobs._book``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.store import Record, Transaction

#: The meta of a stored job whose work waits in its process (as it begins or ends): set
#: when the job is staged, dropped when its last work is done, or the job ends otherwise.
LATER_WORK = "later_work"


@dataclass(frozen=True)
class Settle:
    """Stages, in a transaction of the host of ``job``, that its work is all done (when
    ``last``: the work given it is the job's last; else nothing). Work that commits
    changes of its own (a move made as its job ends) stages it in that same transaction,
    so that a host stopped at any moment finds the job's work either done and settled,
    or undone and still marked: never done and marked, nor settled undone."""

    job: ObjectPath
    last: bool = True

    def __call__(self, txn: Transaction) -> None:
        staged = txn.edit(self.job) if self.last else None
        if staged is not None:
            staged.meta.pop(LATER_WORK, None)


#: The work a job does when it begins or ends, given its ``Settle``: None when done,
#: else the job's error (ErrorCode, ErrorDescription).
Work = Callable[[Settle], "tuple[int, str] | None"]


@dataclass(frozen=True)
class Queued:
    """The ``work`` of the host's job ``job``, done at ``due``: when the job begins, or
    with ``at_end`` when it ends."""

    job: ObjectPath
    due: float
    work: Work
    at_end: bool = False


def removal_time(record: Record) -> float | None:
    """When a job is deleted: its retention after it ended (None: it never ends), as
    ``jobs._ends`` set it (a job stored before removal times were recorded is given one
    as its host opens, ``jobs._given_removal_times``)."""
    remove_at = record.meta.get("remove_at")
    return None if remove_at is None else float(remove_at)


class JobBook:
    """One host's jobs by removal time, its jobs holding slots, by slot name, the jobs
    writing files, by file, and the work of its queued jobs, by job."""

    def __init__(self) -> None:
        self._removals: list[tuple[float, str]] = []  # a heap of (removal time, path key)
        self._slotted: dict[str, set[str]] = {}
        self._writers: dict[str, str] = {}  # a file's identity: the last job writing it
        self.queued: dict[str, Queued] = {}  # by ``jobs.work_key`` (``jobs.defer``)
        self.filled = False

    def fill(self, jobs: Iterable[tuple[str, Record]]) -> None:
        """Note the jobs the host stored before (once)."""
        for key, record in jobs:
            self.note(key, record)
        self.filled = True

    def note(self, key: str, record: Record) -> None:
        """Note a job staged, or whose times changed."""
        removal = removal_time(record)
        if removal is not None:
            heapq.heappush(self._removals, (removal, key))
        slots = record.meta.get("slots")
        if slots is not None:
            self._slotted.setdefault(str(slots), set()).add(key)
        writes = record.meta.get("writes")
        if writes is not None:
            self._writers[str(writes)] = key

    def writer(self, identity: str) -> str | None:
        """The key of the last job noted as writing the file ``identity`` (the caller
        checks that it still runs)."""
        return self._writers.get(identity)

    def written(self, identity: str, key: str) -> None:
        """The job ``key`` no longer writes the file ``identity``."""
        if self._writers.get(identity) == key:
            del self._writers[identity]

    def due(self, now: float) -> list[str]:
        """The keys of the jobs noted to go before ``now``, taken off the book."""
        gone: list[str] = []
        while self._removals and self._removals[0][0] < now:
            gone.append(heapq.heappop(self._removals)[1])
        return gone

    def slotted(self, name: str) -> set[str]:
        """The keys of the jobs noted as holding a slot of ``name`` (the caller drops
        those that no longer do, with ``release``)."""
        return self._slotted.get(name, set())

    def release(self, name: str, key: str) -> None:
        self._slotted.get(name, set()).discard(key)
