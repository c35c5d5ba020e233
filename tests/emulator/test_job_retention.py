"""Finished jobs leave the store after job_retention_s (Hyper-V's TimeBeforeRemoval)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.config import load_config
from hyperv_agent.emulator import jobs
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.emulator.store import Record
from hyperv_agent.errors import CimNotFound
from tests.emulator.kit import Clock, define_vm, request_state, service
from tests.emulator.test_jobs import COMPLETED, RUNNING_JOB


def _stored_jobs(cim: EmulatorCim) -> int:
    return sum(1 for _ in cim.host.records("CIM_ConcreteJob"))


async def _cycle(cim: EmulatorCim, clock: Clock, rounds: int, step_s: float) -> None:
    vm = await define_vm(cim, f"vm-{clock.now}")
    for _ in range(rounds):
        for state in (2, 3):
            result = await request_state(cim, vm, state)
            assert result.return_value == 4096
        clock.now += step_s


async def test_finished_jobs_are_deleted_from_the_store_after_the_retention(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        await _cycle(cim, clock, rounds=10, step_s=1.0)
        assert _stored_jobs(cim) == 21  # a DefineSystem and 20 state changes, within 300 s
        first = await request_state(cim, await define_vm(cim, "late"), 2)
        clock.now += 301
        await _cycle(cim, clock, rounds=1, step_s=0.0)  # new jobs start a sweep
        assert _stored_jobs(cim) == 3
        job = first.path("Job")
        assert job is not None
        with pytest.raises(CimNotFound):
            await cim.get(job)
    finally:
        await cim.close()
    reopened = EmulatorCim.open(make_config(), clock)  # and gone from the database too
    try:
        assert _stored_jobs(reopened) == 3
    finally:
        await reopened.close()


async def test_jobs_stored_stay_bounded_over_many_cycles(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(job_retention_s=60.0), clock)
    try:
        counts = []
        for _ in range(40):
            await _cycle(cim, clock, rounds=5, step_s=3.0)  # 11 jobs every 15 s
            counts.append(_stored_jobs(cim))
        assert max(counts) <= 11 * (60 / 15 + 2)
        assert counts[-1] == counts[-5]  # steady, not growing
    finally:
        await cim.close()


async def _paths_worked_out_by_a_sweeping_call(
    make_config: Callable[..., EmulatorConfig], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, stored_jobs: int,
) -> int:
    """How many times a state change that starts a job sweep (its staged job beside the
    stored ones) works out a record's path, on a host holding ``stored_jobs`` jobs."""
    clock = Clock()
    cim = EmulatorCim.open(make_config(state_dir=tmp_path / f"host-{stored_jobs}"), clock)
    try:
        vm = await define_vm(cim)  # a job: DefineSystem
        states = [2, 3] * stored_jobs
        for state in states[:stored_jobs - 1]:  # started and turned off, a job each
            await request_state(cim, vm, state)
        stored = _stored_jobs(cim)
        assert stored == stored_jobs
        clock.now += 31  # none has reached its retention
        worked_out = 0
        path = Record.path

        def counted(record: Record) -> ObjectPath:
            nonlocal worked_out
            worked_out += 1
            return path.fget(record)  # type: ignore[attr-defined,no-any-return]

        with monkeypatch.context() as patched:
            patched.setattr(Record, "path", property(counted))
            result = await request_state(cim, vm, states[stored_jobs - 1])
            assert result.return_value == 4096
        assert _stored_jobs(cim) == stored + 1  # none swept: none was due
        return worked_out
    finally:
        await cim.close()


async def test_a_sweep_costs_no_path_per_stored_job(
    make_config: Callable[..., EmulatorConfig], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    few = await _paths_worked_out_by_a_sweeping_call(make_config, monkeypatch, tmp_path, 10)
    many = await _paths_worked_out_by_a_sweeping_call(make_config, monkeypatch, tmp_path, 200)
    assert many == few


async def test_job_is_seen_within_its_retention_and_says_when_it_goes(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(job_retention_s=90.0), clock)
    try:
        job = (await request_state(cim, await define_vm(cim), 2)).path("Job")
        assert job is not None
        clock.now += 89
        seen = await cim.get(job)
        assert seen["JobState"] == COMPLETED
        assert seen["TimeBeforeRemoval"] == "00000000000130.000000:000"
        clock.now += 2
        with pytest.raises(CimNotFound):
            await cim.get(job)
    finally:
        await cim.close()


async def test_job_that_never_finishes_is_never_purged(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(job_retention_s=10.0), clock)
    try:
        vm = await define_vm(cim)
        cim.faults.hang_next_job("RequestStateChange")
        hung = (await request_state(cim, vm, 2)).path("Job")
        assert hung is not None
        clock.now += 3600
        await _cycle(cim, clock, rounds=1, step_s=0.0)
        assert (await cim.get(hung))["JobState"] == RUNNING_JOB
    finally:
        await cim.close()


def test_job_retention_comes_from_the_emulator_section(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[emulator]\njob_retention_s = 42.5\n")
    config = load_config(config_file, state_dir=tmp_path / "state")
    assert emulator_config(config).job_retention_s == 42.5
    assert emulator_config(load_config(None, state_dir=tmp_path)).job_retention_s == 300.0


async def test_a_job_started_beside_thousands_kept_reads_none_of_them(
    make_config: Callable[..., EmulatorConfig], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finished jobs are deleted as they come due: a job started on a host keeping
    thousands of jobs, none due, looks at none of them (the host's size is not its cost)."""
    clock = Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        await _cycle(cim, clock, rounds=1000, step_s=0.1)  # 2001 jobs in 100 s
        looked_at = 0
        expired = jobs.expired

        def counted(record: Record, now: float) -> bool:
            nonlocal looked_at
            looked_at += 1
            return expired(record, now)

        monkeypatch.setattr(jobs, "expired", counted)
        clock.now += 60  # past any batching of sweeps; no job has reached its retention
        await _cycle(cim, clock, rounds=1, step_s=0.0)
        assert (looked_at, _stored_jobs(cim)) == (0, 2004)
        clock.now += 190  # at 350 s: the jobs that ended in the first 50 s are past it
        await _cycle(cim, clock, rounds=1, step_s=0.0)
        gone = 2007 - _stored_jobs(cim)
        assert 900 < gone < 1100 and looked_at == gone  # those due, and only those
    finally:
        await cim.close()


async def test_jobs_stored_before_a_restart_go_after_their_retention(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        await _cycle(cim, clock, rounds=5, step_s=1.0)
        assert _stored_jobs(cim) == 11
    finally:
        await cim.close()
    clock.now += 301
    reopened = EmulatorCim.open(make_config(), clock)
    try:
        await _cycle(reopened, clock, rounds=1, step_s=0.0)
        assert _stored_jobs(reopened) == 3  # only the DefineSystem and two state changes
    finally:
        await reopened.close()


async def test_a_stopped_job_goes_a_retention_after_it_was_stopped(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(job_retention_s=10.0), clock)
    try:
        vm = await define_vm(cim)
        cim.faults.hang_next_job("RequestStateChange")
        hung = (await request_state(cim, vm, 2)).path("Job")
        assert hung is not None
        clock.now += 100
        result = await cim.invoke(hung, "RequestStateChange", {"RequestedState": 4})
        assert result.return_value == 0
        clock.now += 5
        await _cycle(cim, clock, rounds=1, step_s=0.0)
        assert (await cim.get(hung))["JobState"] != RUNNING_JOB  # stopped, kept
        clock.now += 6
        await _cycle(cim, clock, rounds=1, step_s=0.0)
        with pytest.raises(CimNotFound):
            await cim.get(hung)
        assert hung.normalized not in {key for key, _ in cim.host.keyed_records(
            "CIM_ConcreteJob")}
    finally:
        await cim.close()


async def test_what_the_job_book_keeps_of_a_disk_job_goes_with_the_job(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A job writing a disk is noted as its writer; when the job leaves the store after
    its retention, so does the note (a host making disks for days kept one per disk)."""
    clock = Clock()
    cim = EmulatorCim.open(make_config(job_retention_s=10.0), clock)
    try:
        ims = await service(cim, "Msvm_ImageManagementService")
        path = "C:\\disks\\noted.vhdx"
        cim.host.paths.local("C:\\disks").mkdir(parents=True, exist_ok=True)
        settings = (await cim.spawn("Msvm_VirtualHardDiskSettingData")).updated(
            Path=path, Format=3, Type=3, MaxInternalSize=1 << 30, ParentPath=None,
            BlockSize=0, LogicalSectorSize=0, PhysicalSectorSize=0)
        result = await cim.invoke(ims, "CreateVirtualHardDisk",
                                  {"VirtualDiskSettingData": settings})
        assert result.return_value in (0, 4096)
        identity = HostPaths.identity(path)
        assert cim.host.job_book.writer(identity) is not None
        clock.now += 11
        await _cycle(cim, clock, rounds=1, step_s=0.0)  # a new job sweeps the one due
        assert cim.host.job_book.writer(identity) is None
    finally:
        await cim.close()


async def test_a_job_stored_without_a_removal_time_goes_after_the_host_s_retention(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A job a version that recorded no removal time (nor a job's own retention) stored
    goes the host's job_retention_s after it ended, as each of its other jobs does, not
    300 s after."""
    clock = Clock()
    config = make_config(job_retention_s=10.0)
    cim = EmulatorCim.open(config, clock)
    try:
        job = (await request_state(cim, await define_vm(cim), 2)).path("Job")
        assert job is not None
        txn = cim.host.store.transaction()
        stored = txn.edit(job)
        assert stored is not None
        for key in ("remove_at", jobs.RETENTION):  # as that version stored it
            stored.meta.pop(key)
        txn.commit()
    finally:
        await cim.close()
    clock.now += 5  # within the host's 10 s
    reopened = EmulatorCim.open(config, clock)
    try:
        assert (await reopened.get(job))["JobState"] == COMPLETED
        clock.now += 6  # past them, well within 300 s
        with pytest.raises(CimNotFound):
            await reopened.get(job)
        await _cycle(reopened, clock, rounds=1, step_s=0.0)  # new jobs start a sweep
        assert job.normalized not in {key for key, _ in reopened.host.keyed_records(
            "CIM_ConcreteJob")}
    finally:
        await reopened.close()


async def test_a_job_stored_under_another_retention_tells_when_it_really_goes(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A job a version that recorded neither its removal time nor its own retention
    stored, made while the host kept jobs 300 s: the host, opened with a retention of
    10 s, removes it 10 s after its end, and its TimeBeforeRemoval says so, not the
    300 s it was made with."""
    clock = Clock()
    config = make_config(job_retention_s=10.0)
    cim = EmulatorCim.open(config, clock)
    try:
        job = (await request_state(cim, await define_vm(cim), 2)).path("Job")
        assert job is not None
        txn = cim.host.store.transaction()
        stored = txn.edit(job)
        assert stored is not None
        for key in ("remove_at", jobs.RETENTION):  # as that version stored it
            stored.meta.pop(key)
        stored["TimeBeforeRemoval"] = "00000000000500.000000:000"  # its 300 s
        txn.commit()
    finally:
        await cim.close()
    reopened = EmulatorCim.open(config, clock)
    try:
        assert (await reopened.get(job))["TimeBeforeRemoval"] == "00000000000010.000000:000"
    finally:
        await reopened.close()
    again = EmulatorCim.open(config, clock)  # what it was given is stored
    try:
        assert (await again.get(job))["TimeBeforeRemoval"] == "00000000000010.000000:000"
        clock.now += 11  # past its 10 s
        with pytest.raises(CimNotFound):
            await again.get(job)
    finally:
        await again.close()
