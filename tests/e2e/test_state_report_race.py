"""The VM state report never removes a VM that a command is working on: it arrives while
a slow StartCommand is still building the VM (every emulated job takes a while), and the
start succeeds with the VM running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bench.bench_vm import start_body

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.handlers.host import REMOVALS_AT_ONCE
from hyperv_agent.hyperv import jobs
from tests.e2e.conftest import LOCAL_POOL, PRIVATE_IP, Running, serving
from tests.emulator.kit import service

JOB_S = 0.1  # each Hyper-V job of the emulated host runs this long
VM = "i-2-44-VM"
REMOVAL_S = 4.0  # how long a removal the report makes holds its slot, when slowed


@pytest.fixture
async def slow(tmp_path: Path) -> AsyncIterator[Running]:
    config = tmp_path / "agent.toml"
    config.write_text(f"[emulator]\njob_duration_s = {JOB_S}\n")
    async with serving(load_config(config, state_dir=tmp_path / "state", backend="emulator",
                                   private_ip=PRIVATE_IP,
                                   local_storage_path=LOCAL_POOL)) as running:
        yield running


async def _vm(running: Running, name: str) -> tuple[str, int] | None:
    """(GUID, EnabledState) of the VM ``name``; None when Hyper-V has no such VM."""
    found = await running.emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", name) & wql.eq("Caption", "Virtual Machine")))
    return (str(found[0]["Name"]), int(str(found[0]["EnabledState"]))) if found else None


async def _report(running: Running) -> list[dict[str, str]]:
    status, report = await running.post(names.HOST_VM_STATE_REPORT_COMMAND, {})
    assert status == 200 and isinstance(report, list), report
    return report


async def test_state_report_leaves_a_vm_alone_when_a_slow_start_is_building_it(
    slow: Running,
) -> None:
    drive_c = slow.emulator.host.config.drive_root("C")
    (drive_c / "pool").mkdir(parents=True, exist_ok=True)
    start = asyncio.create_task(slow.post(names.START_COMMAND, start_body(VM, drive_c)))
    while (building := await _vm(slow, VM)) is None:  # defined, disks and NICs to come
        assert not start.done(), start.result()
        await asyncio.sleep(0.01)
    reports = 0
    while not start.done():
        state = await _vm(slow, VM)
        if state is not None and state[1] == 3:  # off, being built: what the report removes
            report = await _report(slow)
            after = await _vm(slow, VM)
            assert after is not None and after[0] == building[0]  # never removed
            if after[1] == 3:  # still off once the report was made (Starting is PowerOn)
                assert {VM: "PowerOn"} not in report
                reports += 1
        await asyncio.sleep(JOB_S / 2)
    status, answer = start.result()
    assert status == 200 and answer[0][names.START_ANSWER]["result"] is True, answer
    assert reports >= 3  # the reports came while the VM was being built
    assert await _vm(slow, VM) == (building[0], 2)  # the same VM, running
    assert await _report(slow) == [{VM: "PowerOn"}]


async def test_state_report_removes_the_stopped_vm_when_no_command_works_on_it(
    slow: Running,
) -> None:
    drive_c = slow.emulator.host.config.drive_root("C")
    (drive_c / "pool").mkdir(parents=True, exist_ok=True)
    _, answer = await slow.post(names.START_COMMAND, start_body(VM, drive_c))
    assert answer[0][names.START_ANSWER]["result"] is True, answer
    (vm,) = await slow.emulator.query(wql.select("Msvm_ComputerSystem",
                                                 wql.eq("ElementName", VM)))
    assert vm.path is not None
    await jobs.call(slow.emulator, vm.path, "RequestStateChange", {"RequestedState": 3})
    assert await _report(slow) == []
    assert await _vm(slow, VM) is None  # removed, as the C# agent does


async def test_state_report_leaves_a_vm_running_when_its_start_ends_after_the_listing(
    slow: Running,
) -> None:
    """The report lists the VM while a StartCommand builds it (off, its lock held), then
    waits for a removal slot behind as many stopped VMs as it removes at once; the start
    ends meanwhile and frees the lock. What the listing said is stale by then: the VM
    runs, and the report must not turn it off and remove it."""
    cim = slow.emulator
    drive_c = cim.host.config.drive_root("C")
    (drive_c / "pool").mkdir(parents=True, exist_ok=True)
    stopped = [f"i-2-{index}-VM" for index in range(REMOVALS_AT_ONCE)]
    for name in stopped:
        vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
            ElementName=name, Notes=["Created by CloudStack, do not edit."])
        await jobs.call(cim, await service(cim), "DefineSystem", {"SystemSettings": vssd})
        cim.faults.slow_next_job("DestroySystem", REMOVAL_S)  # each holds its slot a while
    start = asyncio.create_task(slow.post(names.START_COMMAND, start_body(VM, drive_c)))
    while (building := await _vm(slow, VM)) is None:
        assert not start.done(), start.result()
        await asyncio.sleep(0.01)
    report = asyncio.create_task(_report(slow))
    while [name for name in stopped if await _vm(slow, name) is not None]:
        await asyncio.sleep(0.01)  # listed: the removals hold every slot
    listed = await _vm(slow, VM)
    assert listed is not None and listed[1] != 2  # still off now, so off when listed
    status, answer = await start
    assert status == 200 and answer[0][names.START_ANSWER]["result"] is True, answer
    assert not report.done()  # the report still waits to remove the VM it listed off
    await report
    assert await _vm(slow, VM) == (building[0], 2)  # the same VM, still running
    assert await _report(slow) == [{VM: "PowerOn"}]
