"""Host registration and health over real HTTPS, answered from the emulated host."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.host import NIC_RECEIVE_BPS, NIC_SEND_BPS
from hyperv_agent.service import Agent, build_agent
from tests.e2e.conftest import PRIVATE_IP, STARTUP_REQUEST, Running, client_context, start
from tests.emulator.kit import (
    define_vm,
    ok,
    request_state,
    running_vm_with_cpus,
    service,
)

ROUTING = "com.cloud.agent.api.StartupRoutingCommand"
STORAGE = "com.cloud.agent.api.StartupStorageCommand"
#: GetHostStatsCommand as the management server sends it
HOST_STATS = {"hostGuid": "B4AE5970-FCBF-4780-9F8A-2D2E04FECC34-HypervResource",
              "hostName": "CC-SVR11", "hostId": 5, "contextMap": {}, "wait": 0}


async def test_liveness_route_answers_the_controller_string(running: Running) -> None:
    async with running.session.get(running.url + "/api/HypervResource") as reply:
        assert reply.status == 200
        assert "HypervResource controller running" in await reply.text()


async def test_unknown_command_is_http_404(running: Running) -> None:
    status, _ = await running.post("com.cloud.agent.api.NoSuchCommand", {})
    assert status == 404


async def test_startup_echoes_identity_and_fills_host_facts(running: Running) -> None:
    status, data = await running.post("com.cloud.agent.api.StartupCommand", STARTUP_REQUEST)
    assert status == 200
    assert [list(element) for element in data] == [[ROUTING], [STORAGE]]
    sent, routing, storage = STARTUP_REQUEST[0][ROUTING], data[0][ROUTING], data[1][STORAGE]
    for key in ("dataCenter", "pod", "cluster", "guid", "name", "privateIpAddress",
                "storageIpAddress", "version", "hypervisorType", "type"):
        assert routing[key] == sent[key], key
    assert (routing["privateNetmask"], routing["privateMacAddress"]) == (
        "255.255.255.0", "00155D0A0B0C")
    assert (routing["cpus"], routing["cpuSockets"], routing["speed"]) == (16, 2, 2400)
    assert routing["memory"] == 64 * 1024**3 - 2048 * 1024**2  # the parent's left out
    assert routing["dom0MinMemory"] == 2048 * 1024**2
    assert routing["caps"] == "hvm"
    assert routing["hypervisorVersion"] == "6.2"  # the MS's hypervisor_capabilities row
    assert routing["hostDetails"] == {
        "com.cloud.network.Networks.RouterPrivateIpStrategy": "HostLocal",
        "product_version": "6.2", "rdp.server.port": "2179",
        "os": "Microsoft Windows Server 2019 Datacenter", "os_version": "10.0.17763"}
    pool = storage["poolInfo"]
    assert storage["resourceType"] == "STORAGE_POOL"
    assert storage["dataCenter"] == "1" and storage["guid"] == pool["uuid"] == sent["guid"]
    assert pool["poolType"] == "Filesystem" and pool["host"] == PRIVATE_IP
    assert pool["localPath"].startswith("C:\\")
    assert 0 < pool["availableBytes"] <= pool["capacityBytes"]


async def test_startup_without_routing_command_fails_cleanly(running: Running) -> None:
    status, data = await running.post("com.cloud.agent.api.StartupCommand", {"x": 1})
    assert status == 200
    ((key, value),) = data[0].items()
    assert value["result"] is False and "StartupCommand" in value["details"]
    assert key.startswith("com.cloud.agent.api.")


async def test_state_report_lists_running_vms_and_removes_stopped_cloudstack_vms(
    running: Running,
) -> None:
    cim = running.emulator
    up = await define_vm(cim, "i-2-17-VM")
    await ok(cim, await request_state(cim, up, 2))
    await _vm_with_notes(running, "i-2-18-VM", ["Created by CloudStack, do not edit."])
    await define_vm(cim, "not-ours")
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200
    assert report == [{"i-2-17-VM": "PowerOn"}]
    names = {v["ElementName"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine")))}
    assert names == {"i-2-17-VM", "not-ours"}


async def test_state_report_removes_a_vm_the_csharp_agent_left_half_built(
    running: Running,
) -> None:
    """The C# agent marked a VM it was building "CloudStack creating VM" and reported it
    PowerOn, also when it never finished it. An agent that takes over such a host finds the
    VM off with no command working on it: reported PowerOn, the MS would sync a stopped VM
    to Running here (or take a VM running elsewhere for migrated here). It is removed as
    any stopped CloudStack VM (its disks kept) and left out."""
    cim = running.emulator
    await _vm_with_notes(running, "i-2-19-VM", ["CloudStack creating VM, do not edit. \n"])
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == []
    names = {v["ElementName"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine")))}
    assert names == set()


async def test_state_report_lists_a_paused_vm_as_powered_on_and_keeps_it(
    running: Running,
) -> None:
    """A VM Hyper-V paused (Paused-Critical when its volume fills up, or an operator in
    Hyper-V Manager) still holds its memory and disks. Left out of the report, the MS reads
    it as PowerReportMissing, syncs it to Stopped and releases its resources while it is
    still on this host; CheckVirtualMachine already calls it PowerOn."""
    cim = running.emulator
    paused = await _vm_with_notes(running, "i-2-20-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, paused, 2))
    await ok(cim, await request_state(cim, paused, 9))
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == [{"i-2-20-VM": "PowerOn"}]
    _, checked = await running.answer("com.cloud.agent.api.CheckVirtualMachineCommand",
                                      {"vmName": "i-2-20-VM", "contextMap": {}, "wait": 0})
    assert checked["state"] == "PowerOn"
    names = {v["ElementName"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine")))}
    assert names == {"i-2-20-VM"}


async def test_state_report_lists_a_saved_cloudstack_vm_as_powered_off_for_the_ms_to_stop(
    running: Running,
) -> None:
    """A VM Hyper-V saved (its automatic stop action when the host shuts down, or an
    operator) is not running. Left out of the report, the MS synced it to Stopped while
    its definition stayed here, saved, referring to disks its next start (maybe on
    another host) uses too. Reported PowerOff, as CheckVirtualMachine calls it, the MS
    sends a StopCommand with checkBeforeCleanup, which removes it (disks kept)."""
    cim = running.emulator
    saved = await _vm_with_notes(running, "i-2-21-VM", ["Created by CloudStack"])
    theirs = await _vm_with_notes(running, "not-ours", [])
    for path in (saved, theirs):
        await ok(cim, await request_state(cim, path, 2))
        await ok(cim, await request_state(cim, path, 6))
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == [{"i-2-21-VM": "PowerOff"}]
    assert (await cim.get(saved))["EnabledState"] == 6  # the report itself discards nothing
    _, checked = await running.answer("com.cloud.agent.api.CheckVirtualMachineCommand",
                                      {"vmName": "i-2-21-VM", "contextMap": {}, "wait": 0})
    assert checked["state"] == "PowerOff"
    key, stopped = await running.answer("com.cloud.agent.api.StopCommand", {
        "vmName": "i-2-21-VM", "checkBeforeCleanup": True, "forceStop": False,
        "isProxy": False, "executeInSequence": False, "contextMap": {}, "wait": 0})
    assert (key, stopped["result"]) == ("com.cloud.agent.api.StopAnswer", True), stopped
    names = {v["ElementName"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine")))}
    assert names == {"not-ours"}


def _show_state(running: Running, vm: ObjectPath, enabled_state: int) -> None:
    """Have the emulated host show ``enabled_state`` for ``vm`` from now on."""
    txn = running.emulator.host.store.transaction()
    record = txn.edit(vm)
    assert record is not None
    record["EnabledState"] = enabled_state
    txn.commit()


@pytest.mark.parametrize("enabled_state", [0, 1, 5])  # Unknown, Other, Not Applicable
async def test_state_report_keeps_a_vm_in_a_state_it_cannot_read_as_power_unknown(
    running: Running, enabled_state: int,
) -> None:
    """Hyper-V shows Unknown (0, "the state of the virtual machine could not be
    determined"), Other or another state the agent cannot read for a VM that may well run
    (os-win reads such states as running). Left out of the report, the MS reads the VM as
    PowerReportMissing after its grace period, syncs it to Stopped and releases its
    resources while it may still run here, free for a user to start it a second time on
    the same disks. Reported PowerUnknown, the MS keeps the state it has; the VM, which
    may run, is not removed; a definition of the same name that is off does not speak for
    it."""
    cim = running.emulator
    vm = await _vm_with_notes(running, "i-2-23-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, vm, 2))
    _show_state(running, vm, enabled_state)
    saved = await _vm_with_notes(running, "i-2-23-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, saved, 2))
    await ok(cim, await request_state(cim, saved, 6))
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == [{"i-2-23-VM": "PowerUnknown"}], report
    assert (await cim.get(vm))["EnabledState"] == enabled_state  # left alone


@pytest.mark.parametrize("saved_first", [True, False], ids=["saved-first", "unknown-first"])
async def test_check_vm_answers_power_unknown_as_the_report_does_beside_a_saved_copy(
    running: Running, saved_first: bool,
) -> None:
    """Of a VM whose state Hyper-V cannot tell (it may run) and a saved definition of the
    same name, the report sends PowerUnknown. CheckVirtualMachine must say the same: the
    saved copy's PowerOff has the MS fail a move that reached this host (and stop the VM
    that arrived)."""
    cim = running.emulator

    async def saved_copy() -> None:
        saved = await _vm_with_notes(running, "i-2-24-VM", ["Created by CloudStack"])
        await ok(cim, await request_state(cim, saved, 2))
        await ok(cim, await request_state(cim, saved, 6))

    if saved_first:
        await saved_copy()
    vm = await _vm_with_notes(running, "i-2-24-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, vm, 2))
    _show_state(running, vm, 0)
    if not saved_first:
        await saved_copy()
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == [{"i-2-24-VM": "PowerUnknown"}], report
    key, checked = await running.answer("com.cloud.agent.api.CheckVirtualMachineCommand",
                                        {"vmName": "i-2-24-VM", "contextMap": {}, "wait": 0})
    assert key == "com.cloud.agent.api.CheckVirtualMachineAnswer"
    assert (checked["result"], checked["state"]) == (True, "PowerUnknown"), checked


@pytest.mark.parametrize("with_saved_copy", [False, True], ids=["alone", "beside-saved-copy"])
async def test_cleanup_stop_leaves_a_vm_whose_state_cannot_be_read_alone(
    running: Running, with_saved_copy: bool,
) -> None:
    """The MS sends a StopCommand with checkBeforeCleanup to clean up a VM it believes
    off; it expects a VM that is not off left alone (VMware's agent refuses any state but
    off). A VM whose state Hyper-V cannot tell may run: turned off and removed, a guest
    was killed on a cleanup. Beside a saved copy of its name it is the VM the name means
    (the report sends PowerUnknown for it), so the cleanup must not remove it either; the
    answer fails saying why, and both definitions stay as they were."""
    cim = running.emulator
    copies = {}
    if with_saved_copy:
        saved = await _vm_with_notes(running, "i-2-25-VM", ["Created by CloudStack"])
        for state in (2, 6):
            await ok(cim, await request_state(cim, saved, state))
        copies[saved.key("Name")] = 6
    vm = await _vm_with_notes(running, "i-2-25-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, vm, 2))
    _show_state(running, vm, 0)
    copies[vm.key("Name")] = 0
    key, stopped = await running.answer(
        "com.cloud.agent.api.StopCommand",
        {"vmName": "i-2-25-VM", "checkBeforeCleanup": True, "forceStop": False,
         "isProxy": False, "contextMap": {}, "wait": 0})
    assert (key, stopped["result"]) == ("com.cloud.agent.api.StopAnswer", False), stopped
    assert stopped["details"] == (
        "StopCommand failed: VM i-2-25-VM is in a state Hyper-V cannot tell on this host "
        "and may run; a StopCommand with checkBeforeCleanup leaves a VM that is not off "
        "alone"), stopped
    left = {str(v["Name"]): v["EnabledState"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", "i-2-25-VM")))}
    assert left == copies

async def test_of_two_vms_of_one_name_the_one_that_is_on_is_the_vm(running: Running) -> None:
    """Hyper-V tells VMs apart by GUID, so a definition can be left beside a VM of the
    same name (a host that failed while the VM was started elsewhere, then migrated
    back). The VM that is on is the one CloudStack means: the report and
    CheckVirtualMachine (which the MS asks after a move) read it whichever WMI lists
    first, and the state report still removes the stopped one."""
    cim = running.emulator
    check = {"vmName": "i-2-22-VM", "contextMap": {}, "wait": 0}
    leftover = await _vm_with_notes(running, "i-2-22-VM", ["Created by CloudStack"])
    live = await _vm_with_notes(running, "i-2-22-VM", ["Created by CloudStack"])
    await ok(cim, await request_state(cim, live, 2))
    _, checked = await running.answer("com.cloud.agent.api.CheckVirtualMachineCommand", check)
    assert checked["state"] == "PowerOn"
    saved = await _vm_with_notes(running, "i-2-22-VM", ["Created by CloudStack"])
    for state in (2, 6):
        await ok(cim, await request_state(cim, saved, state))
    status, report = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and report == [{"i-2-22-VM": "PowerOn"}]
    left = {str(v["Name"]): v["EnabledState"] for v in await cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", "i-2-22-VM")))}
    assert left == {live.key("Name"): 2, saved.key("Name"): 6}, leftover  # stopped one gone


async def _vm_with_notes(running: Running, name: str, notes: list[str]) -> ObjectPath:
    cim = running.emulator
    vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName=name, Notes=notes)
    result = await cim.invoke(await service(cim), "DefineSystem", {"SystemSettings": vssd})
    path = result.path("ResultingSystem")
    assert path is not None
    return path


async def test_state_report_of_many_vms_is_one_round_trip(running: Running) -> None:
    cim = running.emulator
    for index in range(20):
        await define_vm(cim, f"i-2-{index}-VM")
    await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})  # warm caches
    before = cim.round_trips()
    status, _ = await running.post("org.apache.cloudstack.HostVmStateReportCommand", {})
    assert status == 200 and (cim.round_trips() - before).calls == 1


async def test_health_commands_answer_as_the_management_server_expects(
    running: Running,
) -> None:
    cases = {
        "com.cloud.agent.api.ReadyCommand": ("com.cloud.agent.api.ReadyAnswer", None),
        "com.cloud.agent.api.SetupCommand": ("com.cloud.agent.api.SetupAnswer", "success - NOP"),
        "com.cloud.agent.api.PingRoutingCommand": (
            "com.cloud.agent.api.Answer", "success - NOP for PingRoutingCommand"),
        "com.cloud.agent.api.PingCommand": (
            "com.cloud.agent.api.Answer", "success - NOP for PingCommand"),
        "com.cloud.agent.api.CheckHealthCommand": (
            "com.cloud.agent.api.CheckHealthAnswer", "resource is alive"),
        "com.cloud.agent.api.MaintainCommand": (
            "com.cloud.agent.api.MaintainAnswer", "success - NOP for MaintainCommand"),
    }
    for fqcn, (answer_class, details) in cases.items():
        key, value = await running.answer(fqcn, {"contextMap": {}, "wait": 0})
        assert (key, value["result"], value.get("details")) == (answer_class, True, details)
        assert value["contextMap"] == {}
    _, setup = await running.answer("com.cloud.agent.api.SetupCommand",
                                    {"multipath": False, "needSetup": True})
    assert setup["_reconnect"] is False


async def test_check_network_fails_when_a_label_names_no_vswitch(running: Running) -> None:
    good = {"networkInfoList": [{"physicalNetworkId": 200, "guestNetworkName": "External",
                                 "privateNetworkName": "External"}]}
    _, value = await running.answer("com.cloud.agent.api.CheckNetworkCommand", good)
    assert value["result"] is True
    bad = copy.deepcopy(good)
    bad["networkInfoList"][0]["publicNetworkName"] = "Public-Switch"
    key, value = await running.answer("com.cloud.agent.api.CheckNetworkCommand", bad)
    assert key == "com.cloud.agent.api.CheckNetworkAnswer" and value["result"] is False
    assert "Public-Switch" in value["details"]


async def test_check_network_passes_when_a_label_names_a_vswitch_in_other_case(
    running: Running,
) -> None:
    # Hyper-V finds a switch by name without regard to case, as StartCommand then does.
    labels = {"networkInfoList": [{"physicalNetworkId": 200, "guestNetworkName": "external",
                                   "publicNetworkName": "EXTERNAL"}]}
    key, value = await running.answer("com.cloud.agent.api.CheckNetworkCommand", labels)
    assert (key, value["result"]) == ("com.cloud.agent.api.CheckNetworkAnswer", True), value


async def test_host_stats_report_cpu_and_memory_in_kib(running: Running) -> None:
    cim = running.emulator
    vm = await define_vm(cim)
    await ok(cim, await request_state(cim, vm, 2))
    key, value = await running.answer("com.cloud.agent.api.GetHostStatsCommand", HOST_STATS)
    assert key == "com.cloud.agent.api.GetHostStatsAnswer" and value["result"] is True
    stats = value["hostStats"]
    assert stats["hostId"] == 5 and stats["entityType"] == "host"
    assert stats["totalMemoryKBs"] == 64 * 1024 * 1024
    assert stats["freeMemoryKBs"] == (64 * 1024 - 1024) * 1024
    assert 0 <= stats["cpuUtilization"] <= 100
    # the management NIC's traffic (the emulated host's vEthernet adapter sends 2 bytes for
    # every 5 it receives), not every interface's (with the physical NIC under the vSwitch)
    assert stats["networkReadKBs"] > 0
    assert abs(stats["networkWriteKBs"] / stats["networkReadKBs"] - NIC_SEND_BPS / NIC_RECEIVE_BPS
               ) < 0.01


async def _cpu_utilization(running: Running) -> float:
    key, value = await running.answer("com.cloud.agent.api.GetHostStatsCommand", HOST_STATS)
    assert key == "com.cloud.agent.api.GetHostStatsAnswer" and value["result"] is True, value
    return float(value["hostStats"]["cpuUtilization"])



async def test_host_cpu_utilization_rises_with_busy_vms_and_falls_when_they_stop(
    running: Running,
) -> None:
    """The host's figure is the hypervisor's, over all 16 logical processors: what the
    VMs keep busy (each VM's own cpuUtilization times its vCPUs) counts, though the
    management OS's processors stay idle."""
    cim = running.emulator
    assert await _cpu_utilization(running) == 0.0
    vms = [await running_vm_with_cpus(cim, "i-2-80-VM", cpus=8),
           await running_vm_with_cpus(cim, "i-2-81-VM", cpus=16)]
    _, answer = await running.answer("com.cloud.agent.api.GetVmStatsCommand",
                                     {"vmNames": ["i-2-80-VM", "i-2-81-VM"]})
    busy = sum(entry["cpuUtilization"] * entry["numCPUs"]
               for entry in answer["vmStatsMap"].values())
    # the share to the hundredth of a percent, not the formatted class's whole percent
    assert await _cpu_utilization(running) == pytest.approx(min(100, busy / 16), abs=0.01)
    assert busy > 0
    for vm in vms:
        await ok(cim, await request_state(cim, vm, 3))
    assert await _cpu_utilization(running) == 0.0


async def test_check_on_host_without_a_shared_pool_does_not_call_the_host_down(
        running: Running) -> None:
    """The MS's HypervInvestigator reads ``result`` true as Down (it marks the host Down and
    alerts): with no heartbeat to read, the neighbour cannot tell, and says why."""
    key, value = await running.answer("com.cloud.agent.api.CheckOnHostCommand", {
        "host": {"guid": "x", "privateNetwork": {"ip": "10.0.0.9"}}, "contextMap": {}})
    assert key == "com.cloud.agent.api.CheckOnHostAnswer"
    assert (value["result"], value["determined"], value["alive"]) == (False, False, False)
    assert value["details"] == ("cannot tell whether the host is alive: no shared storage "
                                "pool is registered here to hold its heartbeat")


async def test_startup_reports_the_configured_pool_less_the_root_reservation(
    agent_config: Callable[..., AgentConfig],
) -> None:
    reserved = 1 << 30
    agent = build_agent(agent_config(local_storage_path="C:\\pools\\local",
                                     root_device_reserved_bytes=reserved))
    status, data = await _started_up(agent)
    pool = data[1][STORAGE]["poolInfo"]
    assert status == 200 and pool["localPath"] == "C:\\pools\\local"
    root = agent.config.agent.state_dir / "emulator" / "drives" / "C"
    usage = shutil.disk_usage(root / "pools" / "local")
    assert pool["capacityBytes"] == usage.total - reserved
    assert abs(pool["availableBytes"] - (usage.free - reserved)) < 64 << 20


async def _started_up(agent: Agent) -> tuple[int, Any]:
    """The answer to StartupCommand of ``agent``, served over HTTPS and stopped after."""
    runner, url = await start(agent)
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await Running(agent, url, session).post(
                "com.cloud.agent.api.StartupCommand", STARTUP_REQUEST)
    finally:
        await runner.cleanup()
        await agent.close()


async def test_startup_leaves_the_parent_partitions_memory_out_of_what_vms_may_have(
    agent_config: Callable[..., AgentConfig],
) -> None:
    """The management server counts ``memory`` as the host's capacity for VMs and never
    reads dom0MinMemory: the memory the parent partition keeps must not be in it."""
    for reserved_mb, expected in ((6144, 58 * 1024**3), (70 * 1024, 0)):
        status, data = await _started_up(build_agent(agent_config(
            dom0_min_memory_mb=reserved_mb)))
        routing = data[0][ROUTING]
        assert status == 200  # a host of 64 GiB
        assert (routing["memory"], routing["dom0MinMemory"]) == (expected,
                                                                 reserved_mb * 1024**2)
