"""Generation 2 boot sources: created with drives and NICs, ordered by BootSourceOrder,
linked to their devices by Msvm_LogicalIdentity."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import GEN1, GEN2, add, define_vm, failure, ok, service, template

SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
RASD = "Msvm_ResourceAllocationSettingData"
BSSD = "Msvm_BootSourceSettingData"
INVALID_PARAMETER = 32773


async def _vssd(cim: EmulatorCim, vm: ObjectPath) -> CimInstance:
    found = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                       wql.eq("InstanceID", f"Microsoft:{vm.key('Name')}")))
    assert len(found) == 1
    return found[0]


async def _order(cim: EmulatorCim, vm: ObjectPath) -> list[ObjectPath]:
    return [ObjectPath.parse(p) for p in (await _vssd(cim, vm)).strings("BootSourceOrder")]


async def _sources(cim: EmulatorCim, vm: ObjectPath) -> list[CimInstance]:
    return await cim.query(wql.select(BSSD, wql.starts_with(
        "InstanceID", f"Microsoft:{vm.key('Name')}\\")))


async def _added(cim: EmulatorCim, vm: ObjectPath, setting: CimInstance) -> ObjectPath:
    return (await ok(cim, await add(cim, vm, [setting]))).paths("ResultingResourceSettings")[0]


async def _drive(cim: EmulatorCim, vm: ObjectPath, controller: ObjectPath, slot: int,
                 subtype: str = DISK) -> ObjectPath:
    setting = (await template(cim, RASD, subtype)).updated(
        Parent=str(controller), AddressOnParent=str(slot))
    return await _added(cim, vm, setting)


async def _nic(cim: EmulatorCim, vm: ObjectPath) -> ObjectPath:
    return await _added(cim, vm, await template(cim, "Msvm_SyntheticEthernetPortSettingData"))


async def _gen2_with_disk_dvd_nic(
    cim: EmulatorCim,
) -> tuple[ObjectPath, ObjectPath, ObjectPath, ObjectPath]:
    """A generation 2 VM given, in this order, a disk drive, a DVD drive and a NIC."""
    vm = await define_vm(cim, "uefi", GEN2)
    scsi = await _added(cim, vm, await template(cim, RASD, SCSI))
    disk = await _drive(cim, vm, scsi, 0)
    dvd = await _drive(cim, vm, scsi, 1, DVD)
    nic = await _nic(cim, vm)
    return vm, disk, dvd, nic


async def _identity(cim: EmulatorCim, device: ObjectPath) -> ObjectPath:
    found = await cim.associators(device, assoc_class="Msvm_LogicalIdentity")
    assert len(found) == 1 and found[0].class_name == BSSD and found[0].path is not None
    return found[0].path


async def _modify_order(cim: EmulatorCim, vm: ObjectPath, order: list[str]) -> int:
    settings = (await _vssd(cim, vm)).updated(BootSourceOrder=order)
    result = await cim.invoke(await service(cim), "ModifySystemSettings",
                              {"SystemSettings": settings})
    if result.return_value in (0, 4096):
        job = result.path("Job")
        if job is None or (await cim.get(job))["JobState"] == 7:
            return 0
    return await failure(cim, result)


async def test_boot_sources_follow_the_order_devices_were_added_when_generation_is_2(
    emulator: EmulatorCim,
) -> None:
    vm, disk, dvd, nic = await _gen2_with_disk_dvd_nic(emulator)
    order = await _order(emulator, vm)
    assert order == [await _identity(emulator, d) for d in (disk, dvd, nic)]
    by_path = {s.path: s for s in await _sources(emulator, vm)}
    assert [by_path[p]["BootSourceType"] for p in order] == [1, 1, 2]
    assert all(s["BootSourceDescription"] for s in by_path.values())
    # the order holds full paths naming the host, as Hyper-V writes them
    assert all(p.startswith("\\\\") for p in (await _vssd(emulator, vm)).strings(
        "BootSourceOrder"))


async def test_controllers_and_media_get_no_boot_source_when_generation_is_2(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await define_vm(emulator, "uefi", GEN2)
    scsi = await _added(emulator, vm, await template(emulator, RASD, SCSI))
    assert await _order(emulator, vm) == []
    drive = await _drive(emulator, vm, scsi, 0)
    (tmp_path / "C").mkdir(exist_ok=True)
    vhd.create(tmp_path / "C" / "root.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    medium = (await template(emulator, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive), HostResource=["C:\\root.vhdx"])
    medium_path = await _added(emulator, vm, medium)
    assert len(await _sources(emulator, vm)) == 1
    assert await emulator.associators(medium_path, assoc_class="Msvm_LogicalIdentity") == []


async def test_generation_1_vm_has_no_boot_sources_when_drives_and_nics_are_added(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "bios", GEN1)
    await _nic(emulator, vm)
    assert await _sources(emulator, vm) == []
    assert (await _vssd(emulator, vm))["BootSourceOrder"] is None


async def test_removing_a_device_drops_its_boot_source_and_keeps_the_order_when_generation_is_2(
    emulator: EmulatorCim,
) -> None:
    vm, disk, dvd, nic = await _gen2_with_disk_dvd_nic(emulator)
    disk_source, nic_source = await _identity(emulator, disk), await _identity(emulator, nic)
    dvd_source = await _identity(emulator, dvd)
    await ok(emulator, await emulator.invoke(await service(emulator), "RemoveResourceSettings",
                                             {"ResourceSettings": [dvd]}))
    assert await _order(emulator, vm) == [disk_source, nic_source]
    assert dvd_source not in {s.path for s in await _sources(emulator, vm)}


async def test_removing_a_controller_drops_the_boot_sources_of_its_drives(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "uefi", GEN2)
    scsi = await _added(emulator, vm, await template(emulator, RASD, SCSI))
    await _drive(emulator, vm, scsi, 0)
    nic_source = await _identity(emulator, await _nic(emulator, vm))
    await ok(emulator, await emulator.invoke(await service(emulator), "RemoveResourceSettings",
                                             {"ResourceSettings": [scsi]}))
    assert await _order(emulator, vm) == [nic_source]
    assert len(await _sources(emulator, vm)) == 1


async def test_destroying_the_vm_removes_its_boot_sources(emulator: EmulatorCim) -> None:
    vm, _, _, _ = await _gen2_with_disk_dvd_nic(emulator)
    await ok(emulator, await emulator.invoke(await service(emulator), "DestroySystem",
                                             {"AffectedSystem": vm}))
    assert await _sources(emulator, vm) == []


async def test_modify_system_settings_stores_a_permutation_when_all_are_the_vms_sources(
    emulator: EmulatorCim,
) -> None:
    vm, disk, dvd, nic = await _gen2_with_disk_dvd_nic(emulator)
    wanted = [await _identity(emulator, d) for d in (dvd, nic, disk)]
    # other case and a host-less spelling name the same entries
    texts = [str(p).upper() for p in wanted[:2]] + [wanted[2].relative()]
    assert await _modify_order(emulator, vm, texts) == 0
    assert await _order(emulator, vm) == wanted


async def test_modify_system_settings_refuses_order_when_a_path_is_another_vms_source(
    emulator: EmulatorCim,
) -> None:
    vm, disk, _, _ = await _gen2_with_disk_dvd_nic(emulator)
    _, other_disk, _, _ = await _gen2_with_disk_dvd_nic(emulator)
    before = await _order(emulator, vm)
    foreign = str(await _identity(emulator, other_disk))
    assert await _modify_order(emulator, vm, [foreign]) == INVALID_PARAMETER
    assert await _modify_order(emulator, vm, [str(disk)]) == INVALID_PARAMETER  # a drive
    assert await _modify_order(emulator, vm, ["not a path"]) == INVALID_PARAMETER
    assert await _order(emulator, vm) == before


async def test_modify_system_settings_refuses_order_when_a_source_is_named_twice(
    emulator: EmulatorCim,
) -> None:
    vm, disk, _, _ = await _gen2_with_disk_dvd_nic(emulator)
    before = await _order(emulator, vm)
    source = str(await _identity(emulator, disk))
    assert await _modify_order(emulator, vm, [source, source.upper()]) == INVALID_PARAMETER
    assert await _order(emulator, vm) == before


async def test_logical_identity_leads_from_boot_source_back_to_its_device(
    emulator: EmulatorCim,
) -> None:
    vm, disk, _, nic = await _gen2_with_disk_dvd_nic(emulator)
    for device in (disk, nic):
        source = await _identity(emulator, device)
        back = await emulator.associators(source, assoc_class="Msvm_LogicalIdentity",
                                          result_role="SystemElement")
        assert [b.path for b in back] == [device]
        refs = await emulator.references(device, result_class="Msvm_LogicalIdentity")
        assert len(refs) == 1 and ObjectPath.parse(str(refs[0]["SameElement"])) == source
    vssd = await _vssd(emulator, vm)
    assert vssd.path is not None
    parts = await emulator.associators(vssd.path, assoc_class="Msvm_BootSourceComponent")
    assert {p.path for p in parts} == set(await _order(emulator, vm))
