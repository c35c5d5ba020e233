"""Commands ask Hyper-V for what they need: the statistics of a few VMs look at those VMs
only, and a state report removes stopped CloudStack VMs several at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.handlers.host import REMOVALS_AT_ONCE
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.emulator.kit import define_vm, ok, request_state, service

REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
STATS = "com.cloud.agent.api.GetVmStatsCommand"
CHECK = "com.cloud.agent.api.CheckVirtualMachineCommand"
CLOUDSTACK_NOTES = ["Created by CloudStack, do not edit."]


async def _vms(cim: EmulatorCim, count: int, running_every: int = 2) -> list[ObjectPath]:
    paths = []
    for index in range(count):
        path = await define_vm(cim, f"i-2-{index}-VM")
        if index % running_every == 0:
            await ok(cim, await request_state(cim, path, 2))
        paths.append(path)
    return paths


async def _stats(running: Running, names: list[str]) -> tuple[dict[str, Any], int, int]:
    """The vmStatsMap of a GetVmStatsCommand, its GetSummaryInformation calls and the VMs
    they asked about. Its other round trips are the queries for the disk and network I/O
    of the running VMs: at most 3 whatever their number (these VMs have no virtual hard
    disk: 2)."""
    cim = running.emulator
    before = cim.round_trips()
    key, answer = await running.answer(STATS, {"vmNames": names, "contextMap": {}, "wait": 0})
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == ("com.cloud.agent.api.GetVmStatsAnswer", True), answer
    summaries = spent["invoke:GetSummaryInformation"]
    assert spent.calls - summaries == spent["query"] <= 3
    return answer["vmStatsMap"], summaries, spent["summarized"]


async def test_vm_stats_of_one_vm_asks_for_its_summary_only_when_a_report_listed_30(
    running: Running,
) -> None:
    await _vms(running.emulator, 30)
    status, _ = await running.post(REPORT, {})
    assert status == 200
    stats, calls, summarized = await _stats(running, ["i-2-6-VM"])
    assert (calls, summarized) == (1, 1)
    assert list(stats) == ["i-2-6-VM"]
    assert (stats["i-2-6-VM"]["numCPUs"], stats["i-2-6-VM"]["memoryKBs"]) == (1, 1024 * 1024)


async def test_vm_stats_of_a_checked_vm_asks_for_its_summary_only(running: Running) -> None:
    await _vms(running.emulator, 10)
    _, answer = await running.answer(CHECK, {"vmName": "i-2-4-VM", "contextMap": {}, "wait": 0})
    assert answer["state"] == "PowerOn"
    before = running.emulator.round_trips()
    stats, _, summarized = await _stats(running, ["i-2-4-VM"])
    asked = (running.emulator.round_trips() - before)["invoke:GetSummaryInformation"]
    assert (list(stats), asked, summarized) == (["i-2-4-VM"], 1, 1)  # (+1 query: the service)


async def test_vm_stats_asks_for_every_vm_once_when_a_name_is_not_known(
    running: Running,
) -> None:
    await _vms(running.emulator, 6)
    await running.post(REPORT, {})
    stats, calls, summarized = await _stats(running, ["i-2-2-VM", "i-9-99-VM"])
    assert (sorted(stats), calls, summarized) == (["i-2-2-VM"], 1, 6)


async def test_vm_stats_finds_a_recreated_vm_when_the_guid_it_knew_is_stale(
    running: Running,
) -> None:
    cim = running.emulator
    old, *_ = await _vms(cim, 4)
    await running.post(REPORT, {})
    await ok(cim, await request_state(cim, old, 3))
    await ok(cim, await cim.invoke(await service(cim), "DestroySystem", {"AffectedSystem": old}))
    await ok(cim, await request_state(cim, await define_vm(cim, "i-2-0-VM"), 2))
    stats, calls, summarized = await _stats(running, ["i-2-0-VM"])
    assert (list(stats), calls) == (["i-2-0-VM"], 2)  # the stale GUID, then every VM
    assert stats["i-2-0-VM"]["memoryKBs"] == 1024 * 1024  # the new VM, running
    assert summarized == 1 + 4
    _, calls, summarized = await _stats(running, ["i-2-0-VM"])
    assert (calls, summarized) == (1, 1)  # learnt again


async def test_state_report_removes_stopped_vms_8_at_a_time_when_there_are_ten(
    tmp_path: Path,
) -> None:
    config = config_with_shares(tmp_path, {}, "[emulator]\ncall_latency_s = 0.01\n"
                                "job_duration_s = 0.2")
    async with serving(config) as running:
        cim = running.emulator
        for index in range(10):
            vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
                ElementName=f"i-2-{index}-VM", Notes=CLOUDSTACK_NOTES)
            defined = await cim.invoke(await service(cim), "DefineSystem",
                                       {"SystemSettings": vssd})
            assert defined.return_value == 4096  # defined now; its job just takes time
        status, report = await running.post(REPORT, {})
        assert (status, report) == (200, [])
        assert await _vm_count(cim) == 0
        assert _destroyed_at_once(cim) == min(10, REMOVALS_AT_ONCE) > 1


async def _vm_count(cim: EmulatorCim) -> int:
    return len(await cim.query("SELECT Name FROM Msvm_ComputerSystem "
                               "WHERE Caption = 'Virtual Machine'"))


def _destroyed_at_once(cim: EmulatorCim) -> int:
    """How many DestroySystem jobs had started when the first one ended: 1 if removals ran
    one after another, the number of removals at once if they overlapped."""
    jobs = [(float(j.meta["start"]), float(j.meta["end"]))
            for j in cim.host.records("CIM_ConcreteJob") if j["Caption"] == "DestroySystem"]
    first_end = min(end for _, end in jobs)
    return sum(1 for start, _ in jobs if start < first_end)


async def test_vm_stats_asks_for_every_vm_once_when_the_vm_was_stopped_and_made_again(
    running: Running,
) -> None:
    cim = running.emulator
    await _vms(cim, 4)
    await running.post(REPORT, {})
    _, answer = await running.answer("com.cloud.agent.api.StopCommand", {
        "vmName": "i-2-2-VM", "checkBeforeCleanup": False, "forceStop": True,
        "isProxy": False, "contextMap": {}, "wait": 0})
    assert answer["result"] is True
    await ok(cim, await request_state(cim, await define_vm(cim, "i-2-2-VM"), 2))
    stats, calls, summarized = await _stats(running, ["i-2-2-VM"])
    assert (list(stats), calls, summarized) == (["i-2-2-VM"], 1, 4)  # forgotten: every VM
    assert stats["i-2-2-VM"]["memoryKBs"] == 1024 * 1024
