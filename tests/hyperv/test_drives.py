"""hyperv.drives: attaching and detaching volumes and ISOs on existing VMs, and the disks
of many VMs at once, on the emulated host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import build, drives, vms
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import VmRef
from tests.emulator.kit import devices, ok, request_state

RASD = "Msvm_ResourceAllocationSettingData"
SASD = "Msvm_StorageAllocationSettingData"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"


def _image(tmp_path: Path, name: str) -> str:
    """A real image file in C:\\images; returns its host path."""
    folder = tmp_path / "C" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".iso"):
        (folder / name).write_bytes(b"\0" * 2048)
    else:
        vhd.create(folder / name, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    return f"C:\\images\\{name}"


async def _vm(cim: EmulatorCim, name: str, *, generation: int = 1, scsi: bool = True,
              running: bool = False) -> VmRef:
    vm = await build.define_vm(cim, VmSpec(name=name, notes=(), generation=generation,
                                           cpus=1, memory_mb=512))
    if scsi:
        await build.add_scsi_controller(cim, vm)
    if running:
        await ok(cim, await request_state(cim, vm.path, 2))
    found = await vms.find_vm(cim, name)
    assert found is not None
    return found


async def _layout(cim: EmulatorCim, vm: VmRef) -> dict[tuple[str, int], tuple[str, str]]:
    """Every drive by (controller, slot), controller ``ide0``/``ide1``/``scsi0``: (kind,
    medium file or ""), read straight from the emulator."""
    rasd = await devices(cim, vm.path, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm.path, SASD)}
    scsi = [c.path for c in rasd if c["ResourceSubType"] == SCSI]
    names = {c.path: f"ide{c['Address']}" for c in rasd if c["ResourceSubType"] == IDE}
    names |= {path: f"scsi{index}" for index, path in enumerate(scsi)}
    found = {}
    for drive in rasd:
        if drive["ResourceSubType"] in (DISK, DVD):
            where = (names[ObjectPath.parse(str(drive["Parent"]))],
                     int(str(drive["AddressOnParent"])))
            kind = "disk" if drive["ResourceSubType"] == DISK else "dvd"
            found[where] = (kind, media.get(drive.path, "") if drive.path else "")
    return found


async def _warm(cim: EmulatorCim, tmp_path: Path) -> None:
    """Fill the template and service caches (a volume and an ISO, attached once)."""
    vm = await _vm(cim, "warm-up")
    await drives.attach_volume(cim, vm, 0, _image(tmp_path, "warm.vhdx"))
    await drives.insert_iso(cim, vm, _image(tmp_path, "warm.iso"))


# --- data volumes -------------------------------------------------------------------------


async def test_attach_volume_puts_disk_at_slot_within_budget_when_vm_is_stopped(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-2-1-VM")
    image = _image(tmp_path, "data-1.vhdx")
    before = emulator.round_trips()
    placed = await drives.attach_volume(emulator, vm, 3, image)
    spent = emulator.round_trips() - before
    assert placed == drives.Placed("SCSI 0 slot 3", changed=True)
    assert await _layout(emulator, vm) == {("scsi0", 3): ("disk", image)}
    assert (spent.calls, spent.waits) == (3, 2)
    assert (spent["query"], spent["invoke:AddResourceSettings"]) == (1, 2)


async def test_attach_volume_hot_adds_disk_when_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-2-VM", running=True)
    image = _image(tmp_path, "data-2.vhdx")
    await drives.attach_volume(emulator, vm, 1, image)
    assert await _layout(emulator, vm) == {("scsi0", 1): ("disk", image)}


async def test_attach_volume_changes_nothing_when_image_is_already_at_the_slot(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-3-VM")
    image = _image(tmp_path, "data-3.vhdx")
    await drives.attach_volume(emulator, vm, 2, image)
    before = emulator.round_trips()
    placed = await drives.attach_volume(emulator, vm, 2, image.upper())
    spent = emulator.round_trips() - before
    assert placed == drives.Placed("SCSI 0 slot 2", changed=False)
    assert (spent.calls, spent.waits) == (1, 0)
    assert await _layout(emulator, vm) == {("scsi0", 2): ("disk", image)}


@pytest.mark.parametrize(("slot", "expected"), [
    (2, "SCSI 0 slot 2 of VM i-2-4-VM is taken by a disk drive holding C:\\images\\a.vhdx"),
    (5, "C:\\images\\a.vhdx is already attached to VM i-2-4-VM at SCSI 0 slot 2"),
    (64, "slot 64 is outside 0..63"),
    (-1, "slot -1 is outside 0..63"),
])
async def test_attach_volume_refuses_and_changes_nothing_when_slot_or_image_is_in_use(
    emulator: EmulatorCim, tmp_path: Path, slot: int, expected: str,
) -> None:
    vm = await _vm(emulator, "i-2-4-VM")
    first = _image(tmp_path, "a.vhdx")
    await drives.attach_volume(emulator, vm, 2, first)
    other = first if slot == 5 else _image(tmp_path, "b.vhdx")
    with pytest.raises(InvalidRequest, match="^" + re.escape(expected)):
        await drives.attach_volume(emulator, vm, slot, other)
    assert await _layout(emulator, vm) == {("scsi0", 2): ("disk", first)}


async def test_attach_volume_adds_a_scsi_controller_when_a_stopped_vm_has_none(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-5-VM", scsi=False)
    image = _image(tmp_path, "data-5.vhdx")
    await drives.attach_volume(emulator, vm, 0, image)
    assert await _layout(emulator, vm) == {("scsi0", 0): ("disk", image)}


async def test_attach_volume_refuses_when_a_running_vm_has_no_scsi_controller(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-6-VM", scsi=False, running=True)
    with pytest.raises(InvalidRequest, match=r"no SCSI controller.*stopped VMs only"):
        await drives.attach_volume(emulator, vm, 0, _image(tmp_path, "data-6.vhdx"))
    assert await _layout(emulator, vm) == {}


async def test_attach_volume_leaves_no_drive_when_hyperv_refuses_the_medium(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-7-VM")
    other = await _vm(emulator, "i-2-8-VM")
    image = _image(tmp_path, "shared.vhdx")
    await drives.attach_volume(emulator, other, 0, image)
    with pytest.raises(HyperVError, match="already attached to a VM"):
        await drives.attach_volume(emulator, vm, 0, image)
    assert await _layout(emulator, vm) == {}


async def test_detach_volume_removes_drive_and_keeps_file_within_budget(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-2-9-VM", running=True)
    image = _image(tmp_path, "data-9.vhdx")
    await drives.attach_volume(emulator, vm, 4, image)
    before = emulator.round_trips()
    drive = await drives.detach_volume(emulator, vm, image)
    spent = emulator.round_trips() - before
    assert drive is not None and drive.where == "SCSI 0 slot 4"
    assert (spent.calls, spent.waits) == (2, 1)
    assert await _layout(emulator, vm) == {}
    assert (tmp_path / "C" / "images" / "data-9.vhdx").is_file()
    assert await drives.detach_volume(emulator, vm, image) is None


async def test_detach_volume_returns_none_when_image_is_only_in_a_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-10-VM")
    iso = _image(tmp_path, "tools.iso")
    await drives.insert_iso(emulator, vm, iso)
    assert await drives.detach_volume(emulator, vm, iso) is None
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


# --- ISOs ---------------------------------------------------------------------------------


async def test_insert_iso_adds_dvd_drive_on_ide1_when_gen1_vm_is_stopped(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-1-VM", scsi=False)
    iso = _image(tmp_path, "a.iso")
    placed = await drives.insert_iso(emulator, vm, iso)
    assert placed == drives.Placed("IDE 1 slot 0", changed=True)
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


async def test_insert_iso_refuses_when_running_gen1_vm_has_no_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-2-VM", running=True)
    with pytest.raises(InvalidRequest, match="cannot add one to a running generation 1 VM"):
        await drives.insert_iso(emulator, vm, _image(tmp_path, "a.iso"))
    assert await _layout(emulator, vm) == {}


async def test_insert_and_eject_iso_stay_within_budget_when_running_vm_has_a_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-3-3-VM")
    first, second = _image(tmp_path, "first.iso"), _image(tmp_path, "second.iso")
    await drives.insert_iso(emulator, vm, first)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    steps = [("swap", drives.insert_iso(emulator, vm, second), "invoke:ModifyResourceSettings"),
             ("eject", drives.eject_iso(emulator, vm, second), "invoke:RemoveResourceSettings"),
             ("insert", drives.insert_iso(emulator, vm, first), "invoke:AddResourceSettings")]
    layouts = []
    for name, step, method in steps:
        before = emulator.round_trips()
        assert await step is not None, name
        spent = emulator.round_trips() - before
        assert (spent.calls, spent.waits, spent[method]) == (2, 1, 1), name
        layouts.append(await _layout(emulator, vm))
    assert layouts == [{("ide1", 0): ("dvd", second)}, {("ide1", 0): ("dvd", "")},
                       {("ide1", 0): ("dvd", first)}]
    assert (tmp_path / "C" / "images" / "second.iso").is_file()


async def test_insert_iso_changes_nothing_when_the_iso_is_already_in(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-4-VM")
    iso = _image(tmp_path, "a.iso")
    await drives.insert_iso(emulator, vm, iso)
    before = emulator.round_trips()
    assert await drives.insert_iso(emulator, vm, iso) == drives.Placed("IDE 1 slot 0", False)
    assert (emulator.round_trips() - before).calls == 1


async def test_insert_iso_adds_scsi_dvd_drive_at_lowest_free_slot_when_gen2_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-5-VM", generation=2)
    root = _image(tmp_path, "root.vhdx")
    await drives.attach_volume(emulator, vm, 0, root)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    vm = await vms.find_vm(emulator, "i-3-5-VM") or vm
    iso = _image(tmp_path, "a.iso")
    assert await drives.insert_iso(emulator, vm, iso) == drives.Placed("SCSI 0 slot 1", True)
    assert await drives.eject_iso(emulator, vm, iso) is not None
    assert await _layout(emulator, vm) == {("scsi0", 0): ("disk", root),
                                           ("scsi0", 1): ("dvd", "")}


async def test_eject_iso_returns_none_when_another_iso_is_in_the_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-6-VM")
    iso = _image(tmp_path, "a.iso")
    await drives.insert_iso(emulator, vm, iso)
    assert await drives.eject_iso(emulator, vm, _image(tmp_path, "b.iso")) is None
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


# --- disks of many VMs --------------------------------------------------------------------


async def test_attached_disks_lists_vhds_of_named_vms_in_two_queries(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    expected: dict[str, tuple[drives.DiskIo, ...]] = {}
    for index in range(4):
        vm = await _vm(emulator, f"i-4-{index}-VM")
        images = [_image(tmp_path, f"v{index}-{n}.vhdx") for n in range(index)]
        for slot, image in enumerate(images):
            await drives.attach_volume(emulator, vm, slot, image)
        await drives.insert_iso(emulator, vm, _image(tmp_path, f"i{index}.iso"))
        expected[vm.name] = tuple(drives.DiskIo(image) for image in images)
    del expected["i-4-3-VM"]
    before = emulator.round_trips()
    found = await drives.attached_disks(emulator, ["i-4-0-VM", "i-4-1-VM", "i-4-2-VM", "nope"])
    spent = emulator.round_trips() - before
    assert {name: tuple(sorted(d.image for d in disks)) for name, disks in found.items()} == {
        name: tuple(sorted(d.image for d in disks)) for name, disks in expected.items()}
    assert (spent.calls, spent["query"]) == (2, 2)


async def test_attached_disks_costs_nothing_when_no_name_is_asked_for(
    emulator: EmulatorCim,
) -> None:
    before = emulator.round_trips()
    assert await drives.attached_disks(emulator, []) == {}
    assert (emulator.round_trips() - before).calls == 0
