"""Moves beyond the host's limit: Hyper-V runs at most MaximumActiveVirtualSystemMigration
live migrations of one host at once (MaximumActiveStorageMigration storage moves); it
accepts more, and their jobs wait queued (New, 0 percent) until one of those running
ends, then run their whole duration."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperv_agent.cim.api import MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel, MigrationSettings
from tests.emulator.kit import service
from tests.emulator.migration_kit import (
    LIVE,
    MIGRATION,
    STORAGE,
    build_vm,
    migrate,
    moved_disk,
    new_disk,
)

SOURCE, DESTINATION = "HV-SLOTS-A", "HV-SLOTS-B"
JOB_S = 10.0
NEW, RUNNING, COMPLETED = 2, 4, 7


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Hosts = tuple[EmulatorCim, EmulatorCim, Clock]


def _config(tmp_path: Path, name: str, ip: str, simultaneous: int) -> EmulatorConfig:
    return EmulatorConfig(state_dir=tmp_path / name / "state", host_name=name, private_ip=ip,
                          drives={"C": tmp_path / name / "C", "S": tmp_path / "shared"},
                          migration=MigrationSettings(simultaneous=simultaneous))


@pytest.fixture
async def hosts(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hosts]:
    """A source allowing ``request.param`` moves at once (2, Hyper-V's default, unless
    parametrized), a destination, one clock."""
    clock = Clock()
    simultaneous = getattr(request, "param", 2)
    source = EmulatorCim.open(_config(tmp_path, SOURCE, "10.0.9.1", simultaneous), clock)
    destination = EmulatorCim.open(_config(tmp_path, DESTINATION, "10.0.9.2", 2), clock)
    yield source, destination, clock
    await source.close()
    await destination.close()


async def _vms(source: EmulatorCim, count: int) -> list[ObjectPath]:
    """``count`` running VMs, each with its own disk on shared storage; from then on each
    job of the source takes ``JOB_S``."""
    vms = []
    for index in range(count):
        disk = f"S:\\vms\\root{index}.vhdx"
        new_disk(source.host.paths.local(disk))
        vms.append(await build_vm(source, disk, name=f"mover{index}"))
    source.host.config = dataclasses.replace(source.host.config,
                                             latency=LatencyModel(job_s=JOB_S))
    return vms


async def _states(cim: EmulatorCim, results: list[MethodResult]) -> list[tuple[int, int]]:
    """Each job's (JobState, PercentComplete)."""
    seen = []
    for result in results:
        assert result.return_value == 4096
        job_path = result.path("Job")
        assert job_path is not None
        job = await cim.get(job_path)
        seen.append((job.integer("JobState") or 0, job.integer("PercentComplete") or 0))
    return seen


async def _active(cim: EmulatorCim) -> tuple[int, int]:
    found = await cim.get(await service(cim, MIGRATION))
    return (found.integer("ActiveVirtualSystemMigrationCount") or 0,
            found.integer("ActiveStorageMigrationCount") or 0)


async def test_moves_beyond_the_limit_wait_queued_and_run_as_slots_free(hosts: Hosts) -> None:
    source, _, clock = hosts
    vms = await _vms(source, 4)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert await _states(source, results) == [(RUNNING, 0), (RUNNING, 0), (NEW, 0), (NEW, 0)]
    assert await _active(source) == (2, 0)
    clock.now += JOB_S / 2
    assert await _states(source, results) == [(RUNNING, 50), (RUNNING, 50), (NEW, 0), (NEW, 0)]
    clock.now += JOB_S / 2 + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, COMPLETED, RUNNING, RUNNING]
    assert await _active(source) == (2, 0)
    clock.now += JOB_S
    assert [state for state, _ in await _states(source, results)] == [COMPLETED] * 4
    assert await _active(source) == (0, 0)


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_the_hosts_own_limit_is_the_one_honoured(hosts: Hosts) -> None:
    """Set-VMHost -MaximumVirtualMachineMigrations 1: the second move waits for the
    first; a storage move counts against the other limit and does not wait."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms[:2]]
    results.append(await migrate(source, vms[2], None, STORAGE, [
        await moved_disk(source, vms[2], "S:\\vms\\elsewhere.vhdx")]))
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW, RUNNING]
    assert await _active(source) == (1, 1)
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, RUNNING, COMPLETED]


@pytest.mark.parametrize("hosts", [3], indirect=True)
async def test_moves_within_the_limit_never_wait(hosts: Hosts) -> None:
    source, _, _ = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING] * 3
