"""Devices: controllers, drives, media, NICs and ports, checked as Hyper-V checks them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.cim.api import CimInstance, InValue, ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from tests.emulator.kit import (
    GEN2,
    add,
    define_vm,
    devices,
    failure,
    ok,
    request_state,
    service,
    system_settings,
    template,
)

SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
VHD = "Microsoft:Hyper-V:Virtual Hard Disk"


async def _scsi(cim: EmulatorCim, vm: ObjectPath) -> ObjectPath:
    result = await ok(cim, await add(cim, vm, [await template(
        cim, "Msvm_ResourceAllocationSettingData", SCSI)]))
    return result.paths("ResultingResourceSettings")[0]


async def _drive(cim: EmulatorCim, vm: ObjectPath, controller: ObjectPath, slot: str,
                 subtype: str = DISK) -> CimInstance:
    return (await template(cim, "Msvm_ResourceAllocationSettingData", subtype)).updated(
        Parent=str(controller), AddressOnParent=slot)


def _disk(tmp_path: Path, name: str = "root.vhdx") -> str:
    folder = tmp_path / "C" / "disks"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(folder / name, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    return f"C:\\disks\\{name}"


async def test_generation_1_vm_has_processor_memory_and_two_ide_controllers(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    found = await devices(emulator, vm)
    kinds = sorted((d.class_name, d["ResourceType"], d["Address"]) for d in found)
    assert ("Msvm_ProcessorSettingData", 3, None) in kinds
    assert ("Msvm_MemorySettingData", 4, None) in kinds
    assert [k for k in kinds if k[1] == 5] == [
        ("Msvm_ResourceAllocationSettingData", 5, "0"),
        ("Msvm_ResourceAllocationSettingData", 5, "1")]


async def test_ide_controller_refused_when_vm_is_generation_2(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "g2", GEN2)
    assert not [d for d in await devices(emulator, vm) if d["ResourceType"] == 5]
    ide = await template(emulator, "Msvm_ResourceAllocationSettingData", IDE)
    assert await failure(emulator, await add(emulator, vm, [ide])) == 32770
    assert not [d for d in await devices(emulator, vm) if d["ResourceType"] == 5]


async def test_disk_attaches_on_scsi_slot_when_slot_is_free(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "5")]))).paths("ResultingResourceSettings")[0]
    medium = (await template(emulator, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive), HostResource=[_disk(tmp_path)])
    await ok(emulator, await add(emulator, vm, [medium]))
    stored = await emulator.get(drive)
    assert (stored["AddressOnParent"], ObjectPath.parse(str(stored["Parent"]))) == ("5", controller)
    media = await devices(emulator, vm, "Msvm_StorageAllocationSettingData")
    assert [m["HostResource"] for m in media] == [("C:\\disks\\root.vhdx",)]


async def test_slot_collision_refused_when_slot_is_taken(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    await ok(emulator, await add(emulator, vm, [await _drive(emulator, vm, controller, "0")]))
    code = await failure(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "0")]))
    assert code == 32774
    drives = [d for d in await devices(emulator, vm) if d["ResourceType"] == 17]
    assert len(drives) == 1


@pytest.mark.parametrize("slot", ["2", "64", "x"])
async def test_slot_out_of_range_refused_when_controller_has_no_such_slot(
    emulator: EmulatorCim, slot: str
) -> None:
    vm = await define_vm(emulator)
    ide0 = next(d for d in await devices(emulator, vm) if d["Address"] == "0")
    assert ide0.path is not None
    code = await failure(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, ide0.path, slot)]))
    assert code == 32773


async def test_drive_refused_when_parent_link_is_broken(emulator: EmulatorCim) -> None:
    vm, other = await define_vm(emulator, "a"), await define_vm(emulator, "b")
    foreign = await _scsi(emulator, other)
    missing = ObjectPath.for_keys("Msvm_ResourceAllocationSettingData",
                                  InstanceID=f"Microsoft:{vm.key('Name')}\\nope\\0")
    for parent in (foreign, missing):
        code = await failure(emulator, await add(emulator, vm, [await _drive(
            emulator, vm, parent, "0")]))
        assert code == 32773
    assert not [d for d in await devices(emulator, vm) if d["ResourceType"] == 17]


async def test_dvd_refused_on_scsi_when_vm_is_generation_1(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    code = await failure(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "0", DVD)]))
    assert code == 32770


async def test_medium_refused_when_file_is_missing(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "0")]))).paths("ResultingResourceSettings")[0]
    medium = (await template(emulator, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive), HostResource=["C:\\disks\\absent.vhdx"])
    assert await failure(emulator, await add(emulator, vm, [medium])) == 32779


async def test_ide_disks_change_only_while_vm_is_off_and_dvd_media_change_any_time(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    vm = await define_vm(emulator)
    ide0, ide1 = sorted((d for d in await devices(emulator, vm) if d["ResourceSubType"] == IDE),
                        key=lambda d: str(d["Address"]))
    assert ide0.path is not None and ide1.path is not None
    disk_drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, ide0.path, "0")]))).paths("ResultingResourceSettings")[0]
    empty_drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, ide0.path, "1")]))).paths("ResultingResourceSettings")[0]
    dvd = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, ide1.path, "0", DVD)]))).paths("ResultingResourceSettings")[0]
    vhd_medium = await template(emulator, "Msvm_StorageAllocationSettingData", VHD)
    root = (await ok(emulator, await add(emulator, vm, [vhd_medium.updated(
        Parent=str(disk_drive), HostResource=[_disk(tmp_path)])]))).paths(
        "ResultingResourceSettings")[0]
    await ok(emulator, await request_state(emulator, vm, 2))
    refused = [
        add(emulator, vm, [await _drive(emulator, vm, ide1.path, "1")]),  # hot-add
        add(emulator, vm, [vhd_medium.updated(Parent=str(empty_drive),
                                              HostResource=[_disk(tmp_path, "data.vhdx")])]),
        emulator.invoke(await service(emulator), "RemoveResourceSettings",
                        {"ResourceSettings": [root]}),
        emulator.invoke(await service(emulator), "ModifyResourceSettings", {
            "ResourceSettings": [(await emulator.get(root)).updated(
                HostResource=["C:\\disks\\data.vhdx"])]}),
    ]
    for call in refused:
        assert await failure(emulator, await call) == 32775
    media = await devices(emulator, vm, "Msvm_StorageAllocationSettingData")
    assert [m["HostResource"] for m in media] == [("C:\\disks\\root.vhdx",)]
    iso = tmp_path / "C" / "disks" / "tools.iso"
    iso.write_bytes(b"CD001" * 100)
    iso_medium = await template(emulator, "Msvm_StorageAllocationSettingData",
                                "Microsoft:Hyper-V:Virtual CD/DVD Disk")
    inserted = (await ok(emulator, await add(emulator, vm, [iso_medium.updated(
        Parent=str(dvd), HostResource=["C:\\disks\\tools.iso"])]))).paths(
        "ResultingResourceSettings")[0]
    await ok(emulator, await emulator.invoke(await service(emulator), "RemoveResourceSettings",
                                             {"ResourceSettings": [inserted]}))


async def test_processor_change_refused_when_vm_runs(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    processor = (await devices(emulator, vm, "Msvm_ProcessorSettingData"))[0]
    vsms = await service(emulator)
    await ok(emulator, await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=4)]}))
    await ok(emulator, await request_state(emulator, vm, 2))
    result = await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=8)]})
    assert await failure(emulator, result) == 32775
    assert (await devices(emulator, vm, "Msvm_ProcessorSettingData"))[0]["VirtualQuantity"] == 4


@pytest.mark.parametrize("field", ["VirtualQuantity", "Reservation", "Limit"])
async def test_memory_refused_when_it_is_not_a_multiple_of_2_mb(
    emulator: EmulatorCim, field: str,
) -> None:
    vm = await define_vm(emulator)
    memory = (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]
    vsms = await service(emulator)
    static: dict[str, object] = {"DynamicMemoryEnabled": False, "VirtualQuantity": 1026,
                                 "Reservation": 1026, "Limit": 1026}
    result = await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated({**static, field: 1025})]})
    assert await failure(emulator, result) == 32773  # invalid parameter
    assert (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]["VirtualQuantity"] == 1024
    await ok(emulator, await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated(static)]}))
    assert (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]["VirtualQuantity"] == 1026


_DYNAMIC: dict[str, object] = {"DynamicMemoryEnabled": True, "Reservation": 512,
                               "VirtualQuantity": 512, "Limit": 2048}


@pytest.mark.parametrize(("change", "why"), [
    ({"Reservation": 16, "VirtualQuantity": 16}, "below 32 MB"),
    ({"VirtualQuantity": 256}, "between the minimum"),
    ({"VirtualQuantity": 4096}, "between the minimum"),
    ({"Limit": 256}, "between the minimum"),
])
async def test_dynamic_memory_refused_when_startup_is_outside_minimum_and_maximum(
    emulator: EmulatorCim, change: dict[str, object], why: str,
) -> None:
    vm = await define_vm(emulator)
    memory = (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]
    vsms = await service(emulator)
    result = await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated({**_DYNAMIC, **change})]})
    assert await failure(emulator, result) == 32773  # invalid parameter
    (after,) = await devices(emulator, vm, "Msvm_MemorySettingData")
    assert (after["DynamicMemoryEnabled"], after["VirtualQuantity"]) == (False, 1024)
    await ok(emulator, await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated(_DYNAMIC)]}))
    (after,) = await devices(emulator, vm, "Msvm_MemorySettingData")
    assert (after["DynamicMemoryEnabled"], after["Reservation"], after["VirtualQuantity"],
            after["Limit"]) == (True, 512, 512, 2048)


async def test_running_dynamic_vm_holds_its_startup_memory_and_only_widens_its_range(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    vsms = await service(emulator)
    memory = (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]
    await ok(emulator, await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated(_DYNAMIC)]}))
    (os,) = await emulator.query("SELECT * FROM Win32_OperatingSystem", "root\\cimv2")
    free_kb = os.integer("FreePhysicalMemory")
    await ok(emulator, await request_state(emulator, vm, 2))
    (os,) = await emulator.query("SELECT * FROM Win32_OperatingSystem", "root\\cimv2")
    assert free_kb == (os.integer("FreePhysicalMemory") or 0) + 512 * 1024  # startup memory
    memory = (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]
    await ok(emulator, await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated(Reservation=256, Limit=4096)]}))
    memory = (await devices(emulator, vm, "Msvm_MemorySettingData"))[0]
    for refused in ({"VirtualQuantity": 1024},  # the startup memory is fixed
                    {"Reservation": 384}, {"Limit": 3072},  # the range narrowed
                    {"DynamicMemoryEnabled": False}):
        result = await emulator.invoke(vsms, "ModifyResourceSettings", {
            "ResourceSettings": [memory.updated(refused)]})
        assert await failure(emulator, result) == 32775, refused  # invalid state
    (after,) = await devices(emulator, vm, "Msvm_MemorySettingData")
    assert (after["Reservation"], after["VirtualQuantity"], after["Limit"]) == (256, 512, 4096)


async def test_removing_a_drive_takes_its_medium_but_keeps_the_file(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "0")]))).paths("ResultingResourceSettings")[0]
    medium = (await template(emulator, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive), HostResource=[_disk(tmp_path)])
    await ok(emulator, await add(emulator, vm, [medium]))
    await ok(emulator, await emulator.invoke(await service(emulator), "RemoveResourceSettings",
                                             {"ResourceSettings": [drive]}))
    assert await devices(emulator, vm, "Msvm_StorageAllocationSettingData") == []
    assert (tmp_path / "C" / "disks" / "root.vhdx").is_file()


async def test_nic_gets_static_mac_and_port_connects_to_switch(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    nic = (await template(emulator, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName="eth0", Address="00:15:5d:aa:bb:cc", StaticMacAddress=True)
    nic_path = (await ok(emulator, await add(emulator, vm, [nic]))).paths(
        "ResultingResourceSettings")[0]
    switch = (await emulator.query("SELECT * FROM Msvm_VirtualEthernetSwitch"))[0]
    port = (await template(emulator, "Msvm_EthernetPortAllocationSettingData")).updated(
        Parent=str(nic_path), HostResource=[str(switch.path)])
    port_path = (await ok(emulator, await add(emulator, vm, [port]))).paths(
        "ResultingResourceSettings")[0]
    assert (await emulator.get(nic_path))["Address"] == "00155DAABBCC"
    stored = await emulator.get(port_path)
    assert ObjectPath.parse(stored.strings("HostResource")[0]) == switch.path
    assert stored["LastKnownSwitchName"] == switch["ElementName"]
    second = (await ok(emulator, await add(emulator, vm, [nic]))).paths(
        "ResultingResourceSettings")[0]
    bogus = port.updated(Parent=str(second), HostResource=[
        'Msvm_VirtualEthernetSwitch.CreationClassName="Msvm_VirtualEthernetSwitch",Name="nope"'])
    assert await failure(emulator, await add(emulator, vm, [bogus])) == 32773
    assert await failure(emulator, await add(emulator, vm, [port])) == 32774  # one port per NIC


async def test_vlan_feature_is_unique_per_port(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    nic_path = (await ok(emulator, await add(emulator, vm, [await template(
        emulator, "Msvm_SyntheticEthernetPortSettingData")]))).paths("ResultingResourceSettings")[0]
    port_path = (await ok(emulator, await add(emulator, vm, [(await template(
        emulator, "Msvm_EthernetPortAllocationSettingData")).updated(Parent=str(nic_path))])
    )).paths("ResultingResourceSettings")[0]
    vlan = (await emulator.spawn("Msvm_EthernetSwitchPortVlanSettingData")).updated(
        OperationMode=1, AccessVlanId=100)
    vsms = await service(emulator)
    args: dict[str, InValue] = {"AffectedConfiguration": port_path, "FeatureSettings": [vlan]}
    added = await ok(emulator, await emulator.invoke(vsms, "AddFeatureSettings", args))
    feature = added.paths("ResultingFeatureSettings")[0]
    assert (await emulator.get(feature))["AccessVlanId"] == 100
    assert str((await emulator.get(feature))["InstanceID"]).startswith(
        str((await emulator.get(port_path))["InstanceID"]) + "\\")
    assert await failure(emulator, await emulator.invoke(vsms, "AddFeatureSettings", args)) == 32774


@pytest.mark.parametrize(("os_version", "hot"), [("10.0.17763", True), ("6.3.9600", False)])
async def test_running_generation_2_vm_gains_and_loses_nics_only_when_host_is_2016_or_later(
    make_config: object, os_version: str, hot: bool
) -> None:
    # Microsoft, "What's new in Hyper-V on Windows Server 2016": hot add and remove of
    # network adapters (generation 2 VMs) is new in 2016; a 2012 R2 host refuses both.
    assert callable(make_config)
    factory: Callable[..., EmulatorConfig] = make_config
    cim = EmulatorCim.open(factory(os_version=os_version))
    try:
        vm = await define_vm(cim, subtype=GEN2)
        nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
            ElementName="eth0")
        present = (await ok(cim, await add(cim, vm, [nic]))).paths(
            "ResultingResourceSettings")[0]
        await ok(cim, await request_state(cim, vm, 2))
        added = await add(cim, vm, [nic])
        removed = await cim.invoke(await service(cim), "RemoveResourceSettings",
                                   {"ResourceSettings": [present]})
        if hot:
            await ok(cim, added)
            await ok(cim, removed)
        else:
            assert await failure(cim, added) == 32775
            assert await failure(cim, removed) == 32775
            assert len(await devices(cim, vm, "Msvm_SyntheticEthernetPortSettingData")) == 1
    finally:
        await cim.close()


@pytest.mark.parametrize("suspended", [9, 6], ids=["paused", "saved"])
async def test_paused_or_saved_vm_gains_and_loses_no_device_and_keeps_its_sizes(
    emulator: EmulatorCim, tmp_path: Path, suspended: int,
) -> None:
    # A running VM takes a SCSI disk; a paused one (its worker frozen) or a saved one (its
    # saved state holds its devices) takes no device and gives none up, and its processor
    # count is as fixed as a running VM's.
    vm = await define_vm(emulator)
    controller = await _scsi(emulator, vm)
    drive = (await ok(emulator, await add(emulator, vm, [await _drive(
        emulator, vm, controller, "0")]))).paths("ResultingResourceSettings")[0]
    await ok(emulator, await request_state(emulator, vm, 2))
    await ok(emulator, await request_state(emulator, vm, suspended))
    vsms = await service(emulator)
    before = sorted(str(d["InstanceID"]) for d in await devices(emulator, vm))
    second = await _drive(emulator, vm, controller, "1")
    assert await failure(emulator, await add(emulator, vm, [second])) == 32775
    medium = (await template(emulator, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive), HostResource=[_disk(tmp_path)])
    assert await failure(emulator, await add(emulator, vm, [medium])) == 32775
    removed = await emulator.invoke(vsms, "RemoveResourceSettings", {"ResourceSettings": [drive]})
    assert await failure(emulator, removed) == 32775
    processor = (await devices(emulator, vm, "Msvm_ProcessorSettingData"))[0]
    resized = await emulator.invoke(vsms, "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=2)]})
    assert await failure(emulator, resized) == 32775
    assert sorted(str(d["InstanceID"]) for d in await devices(emulator, vm)) == before
    await ok(emulator, await request_state(emulator, vm, 3))
    await ok(emulator, await add(emulator, vm, [second]))  # off: it changes again


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("setup", "requested"), [((), 2), ((2,), 3), ((2,), 6)],
                         ids=["starting", "stopping", "saving"])
async def test_vm_changing_state_takes_no_device_or_setting_change_until_it_is_done(
    make_config: Callable[..., EmulatorConfig], setup: tuple[int, ...], requested: int,
) -> None:
    # While Hyper-V starts, stops or saves a VM (its RequestStateChange job runs) it takes
    # no other change to it: no device added, changed or removed, no system setting
    # changed (32775); once the change is done the VM takes them as its new state allows.
    clock = _Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        vm = await define_vm(cim, subtype=GEN2)
        controller = await _scsi(cim, vm)
        drive = (await ok(cim, await add(cim, vm, [await _drive(
            cim, vm, controller, "0")]))).paths("ResultingResourceSettings")[0]
        for step in setup:
            await ok(cim, await request_state(cim, vm, step))
        vsms = await service(cim)
        second = await _drive(cim, vm, controller, "1")
        (scsi,) = [d for d in await devices(cim, vm) if d.path == controller]
        settings = await system_settings(cim, vm)
        cim.host.config = dataclasses.replace(cim.host.config,
                                              latency=LatencyModel(job_s=2.0))
        assert (await request_state(cim, vm, requested)).return_value == 4096
        refused = [
            await add(cim, vm, [second]),
            await cim.invoke(vsms, "RemoveResourceSettings", {"ResourceSettings": [drive]}),
            await cim.invoke(vsms, "ModifyResourceSettings", {
                "ResourceSettings": [scsi.updated(ElementName="renamed")]}),
            await cim.invoke(vsms, "ModifySystemSettings", {
                "SystemSettings": settings.updated(Notes=["changed"])}),
        ]
        clock.now += 2.0  # the change, and the refused calls' jobs, are done
        assert [await failure(cim, result) for result in refused] == [32775] * 4
        assert [d.path for d in await devices(cim, vm)].count(drive) == 1
        result = await cim.invoke(vsms, "ModifySystemSettings", {
            "SystemSettings": settings.updated(Notes=["changed"])})
        clock.now += 2.0
        await ok(cim, result)
        if requested != 6:  # running or off: it takes a SCSI disk again (saved: never)
            result = await add(cim, vm, [second])
            clock.now += 2.0
            await ok(cim, result)
    finally:
        await cim.close()
