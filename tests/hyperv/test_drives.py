"""hyperv.drives: attaching and detaching volumes and ISOs on existing VMs, and the disks
of many VMs at once, on the emulated host."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.services import metrics
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import build, diskstats, drives, vmio, vms
from hyperv_agent.hyperv import devices as hv_devices
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import VmRef
from tests.emulator.kit import devices, ok, request_state
from tests.hyperv.kit import image_file
from tests.sessions import hv

RASD = "Msvm_ResourceAllocationSettingData"
SASD = "Msvm_StorageAllocationSettingData"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"


async def _vm(cim: EmulatorCim, name: str, *, generation: int = 1, scsi: bool = True,
              running: bool = False) -> VmRef:
    vm = await build.define_vm(hv(cim), VmSpec(name=name, notes=(), generation=generation,
                                           cpus=1, memory_mb=512))
    if scsi:
        await hv_devices.add_scsi_controller(hv(cim), vm)
    if running:
        await ok(cim, await request_state(cim, vm.path, 2))
    found = await vms.find_vm(hv(cim), name)
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
    await drives.attach_volume(hv(cim), vm, 0, image_file(tmp_path, "warm.vhdx"))
    await drives.insert_iso(hv(cim), vm, image_file(tmp_path, "warm.iso"))


# --- data volumes -------------------------------------------------------------------------


async def test_attach_volume_puts_disk_at_slot_within_budget_when_vm_is_stopped(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-2-1-VM")
    image = image_file(tmp_path, "data-1.vhdx")
    before = emulator.round_trips()
    placed = await drives.attach_volume(hv(emulator), vm, 3, image)
    spent = emulator.round_trips() - before
    assert placed == drives.Placed("SCSI 0 slot 3", changed=True)
    assert await _layout(emulator, vm) == {("scsi0", 3): ("disk", image)}
    assert (spent.calls, spent.waits) == (3, 2)
    assert (spent["query"], spent["invoke:AddResourceSettings"]) == (1, 2)


async def test_attach_volume_hot_adds_disk_when_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-2-VM", running=True)
    image = image_file(tmp_path, "data-2.vhdx")
    await drives.attach_volume(hv(emulator), vm, 1, image)
    assert await _layout(emulator, vm) == {("scsi0", 1): ("disk", image)}


async def test_attach_volume_changes_nothing_when_image_is_already_at_the_slot(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-3-VM")
    image = image_file(tmp_path, "data-3.vhdx")
    await drives.attach_volume(hv(emulator), vm, 2, image)
    before = emulator.round_trips()
    placed = await drives.attach_volume(hv(emulator), vm, 2, image.upper())
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
    first = image_file(tmp_path, "a.vhdx")
    await drives.attach_volume(hv(emulator), vm, 2, first)
    other = first if slot == 5 else image_file(tmp_path, "b.vhdx")
    with pytest.raises(InvalidRequest, match="^" + re.escape(expected)):
        await drives.attach_volume(hv(emulator), vm, slot, other)
    assert await _layout(emulator, vm) == {("scsi0", 2): ("disk", first)}


async def test_attach_volume_adds_a_scsi_controller_when_a_stopped_vm_has_none(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-5-VM", scsi=False)
    image = image_file(tmp_path, "data-5.vhdx")
    await drives.attach_volume(hv(emulator), vm, 0, image)
    assert await _layout(emulator, vm) == {("scsi0", 0): ("disk", image)}


async def test_attach_volume_refuses_when_a_running_vm_has_no_scsi_controller(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-6-VM", scsi=False, running=True)
    with pytest.raises(InvalidRequest, match=r"no SCSI controller.*stopped VMs only"):
        await drives.attach_volume(hv(emulator), vm, 0, image_file(tmp_path, "data-6.vhdx"))
    assert await _layout(emulator, vm) == {}


async def test_attach_volume_leaves_no_drive_when_hyperv_refuses_the_medium(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-7-VM")
    other = await _vm(emulator, "i-2-8-VM")
    image = image_file(tmp_path, "shared.vhdx")
    await drives.attach_volume(hv(emulator), other, 0, image)
    with pytest.raises(HyperVError, match="already attached to a VM"):
        await drives.attach_volume(hv(emulator), vm, 0, image)
    assert await _layout(emulator, vm) == {}


async def test_detach_volume_removes_drive_and_keeps_file_within_budget(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-2-9-VM", running=True)
    image = image_file(tmp_path, "data-9.vhdx")
    await drives.attach_volume(hv(emulator), vm, 4, image)
    before = emulator.round_trips()
    drive = await drives.detach_volume(hv(emulator), vm, image)
    spent = emulator.round_trips() - before
    assert drive is not None and drive.where == "SCSI 0 slot 4"
    assert (spent.calls, spent.waits) == (2, 1)
    assert await _layout(emulator, vm) == {}
    assert (tmp_path / "C" / "images" / "data-9.vhdx").is_file()
    assert await drives.detach_volume(hv(emulator), vm, image) is None


async def test_detach_volume_returns_none_when_image_is_only_in_a_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-2-10-VM")
    iso = image_file(tmp_path, "tools.iso")
    await drives.insert_iso(hv(emulator), vm, iso)
    assert await drives.detach_volume(hv(emulator), vm, iso) is None
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


# --- ISOs ---------------------------------------------------------------------------------


async def test_insert_iso_adds_dvd_drive_on_ide1_when_gen1_vm_is_stopped(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-1-VM", scsi=False)
    iso = image_file(tmp_path, "a.iso")
    placed = await drives.insert_iso(hv(emulator), vm, iso)
    assert placed == drives.Placed("IDE 1 slot 0", changed=True)
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


async def test_insert_iso_refuses_when_running_gen1_vm_has_no_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-2-VM", running=True)
    with pytest.raises(InvalidRequest, match="cannot add one to a running generation 1 VM"):
        await drives.insert_iso(hv(emulator), vm, image_file(tmp_path, "a.iso"))
    assert await _layout(emulator, vm) == {}


async def test_insert_and_eject_iso_stay_within_budget_when_running_vm_has_a_dvd_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _warm(emulator, tmp_path)
    vm = await _vm(emulator, "i-3-3-VM")
    first, second = image_file(tmp_path, "first.iso"), image_file(tmp_path, "second.iso")
    await drives.insert_iso(hv(emulator), vm, first)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    steps = [("swap", drives.insert_iso(hv(emulator), vm, second), "invoke:ModifyResourceSettings"),
             ("eject", drives.eject_iso(hv(emulator), vm, second), "invoke:RemoveResourceSettings"),
             ("insert", drives.insert_iso(hv(emulator), vm, first), "invoke:AddResourceSettings")]
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
    iso = image_file(tmp_path, "a.iso")
    await drives.insert_iso(hv(emulator), vm, iso)
    before = emulator.round_trips()
    assert await drives.insert_iso(hv(emulator), vm, iso) == drives.Placed("IDE 1 slot 0", False)
    assert (emulator.round_trips() - before).calls == 1


async def test_insert_iso_adds_scsi_dvd_drive_at_lowest_free_slot_when_gen2_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-5-VM", generation=2)
    root = image_file(tmp_path, "root.vhdx")
    await drives.attach_volume(hv(emulator), vm, 0, root)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    vm = await vms.find_vm(hv(emulator), "i-3-5-VM") or vm
    iso = image_file(tmp_path, "a.iso")
    assert await drives.insert_iso(hv(emulator), vm, iso) == drives.Placed("SCSI 0 slot 1", True)
    assert await drives.eject_iso(hv(emulator), vm, iso) is not None
    assert await _layout(emulator, vm) == {("scsi0", 0): ("disk", root),
                                           ("scsi0", 1): ("dvd", "")}


async def test_eject_iso_returns_none_when_another_iso_is_in_the_drive(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-3-6-VM")
    iso = image_file(tmp_path, "a.iso")
    await drives.insert_iso(hv(emulator), vm, iso)
    assert await drives.eject_iso(hv(emulator), vm, image_file(tmp_path, "b.iso")) is None
    assert await _layout(emulator, vm) == {("ide1", 0): ("dvd", iso)}


# --- disks of many VMs --------------------------------------------------------------------


MB = 1 << 20


async def _disks_of_four_vms(cim: EmulatorCim, tmp_path: Path) -> dict[str, list[str]]:
    """VMs i-4-0-VM .. i-4-3-VM, running, with 0..3 data volumes and an ISO each."""
    images: dict[str, list[str]] = {}
    for index in range(4):
        vm = await _vm(cim, f"i-4-{index}-VM")
        images[vm.name] = [image_file(tmp_path, f"v{index}-{n}.vhdx") for n in range(index)]
        for slot, image in enumerate(images[vm.name]):
            await drives.attach_volume(hv(cim), vm, slot, image)
        await drives.insert_iso(hv(cim), vm, image_file(tmp_path, f"i{index}.iso"))
        await ok(cim, await request_state(cim, vm.path, 2))
    return images


def _io(cim: EmulatorCim, vm: str, image: str, read_mb: int, written_mb: int, ios: int
        ) -> bool:
    return metrics.disk_io(cim.host, vm, image, read_bytes=read_mb * MB,
                           written_bytes=written_mb * MB, ios=ios)


def _counters(found: dict[str, tuple[diskstats.DiskIo, ...]]
              ) -> dict[str, dict[str, tuple[int, int, int, int, bool]]]:
    return {name: {d.image: (d.read_bytes, d.write_bytes, d.read_ios, d.write_ios, d.metered)
                   for d in disks} for name, disks in found.items()}


async def test_disk_stats_switches_metering_on_once_then_reads_counters_per_disk(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    images = await _disks_of_four_vms(emulator, tmp_path)
    asked = ["i-4-0-VM", "i-4-1-VM", "i-4-2-VM", "nope"]
    assert not _io(emulator, "i-4-1-VM", images["i-4-1-VM"][0], 1, 1, 1)  # not metered yet
    before = emulator.round_trips()
    first = await diskstats.disk_stats(hv(emulator), asked)
    spent = emulator.round_trips() - before
    assert _counters(first) == {"i-4-0-VM": {}, **{
        name: {image: (0, 0, 0, 0, False) for image in images[name]}
        for name in ("i-4-1-VM", "i-4-2-VM")}}
    # 2 queries + definitions (first use) + 1 ASSOCIATORS OF per disk (3) + service (first
    # use) + 1 ControlMetrics per VM not yet metered (2)
    assert (spent.calls, spent["query"], spent["invoke:ControlMetrics"]) == (9, 4, 2)
    one, (two_a, two_b) = images["i-4-1-VM"][0], images["i-4-2-VM"]
    assert _io(emulator, "i-4-1-VM", one, 30, 10, 4000)
    assert _io(emulator, "i-4-2-VM", two_b, 0, 7, 90)
    assert _io(emulator, "i-4-2-VM", two_b, 0, 1, 10)
    assert not _io(emulator, "i-4-3-VM", images["i-4-3-VM"][0], 5, 5, 5)  # never asked for
    before = emulator.round_trips()
    second = await diskstats.disk_stats(hv(emulator), asked)
    spent = emulator.round_trips() - before
    assert _counters(second) == {"i-4-0-VM": {}, "i-4-1-VM": {
        one: (30 * MB, 10 * MB, 3000, 1000, True)}, "i-4-2-VM": {
        two_a: (0, 0, 0, 0, True), two_b: (0, 8 * MB, 0, 100, True)}}
    assert (spent.calls, spent["query"]) == (2 + 3, 2)  # 2 queries, 1 association per disk


async def test_disk_stats_meters_a_disk_added_later_and_keeps_counting_the_others(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "i-5-0-VM", running=True)
    first = image_file(tmp_path, "first.vhdx")
    await drives.attach_volume(hv(emulator), vm, 0, first)
    await diskstats.disk_stats(hv(emulator), [vm.name])
    assert _io(emulator, vm.name, first, 3, 0, 7)
    later = image_file(tmp_path, "later.vhdx")
    await drives.attach_volume(hv(emulator), vm, 1, later)
    before = emulator.round_trips()
    found = await diskstats.disk_stats(hv(emulator), [vm.name])
    assert (emulator.round_trips() - before)["invoke:ControlMetrics"] == 1
    assert _counters(found)[vm.name] == {first: (3 * MB, 0, 7, 0, True),
                                         later: (0, 0, 0, 0, False)}
    assert _io(emulator, vm.name, later, 0, 2, 2)
    assert _counters(await diskstats.disk_stats(hv(emulator), [vm.name]))[vm.name][later] == (
        0, 2 * MB, 0, 2, True)


def test_disk_io_shares_the_normalized_count_out_when_bytes_moved_or_not() -> None:
    assert (diskstats.DiskIo("a", 3 * MB, MB, 8).read_ios,
            diskstats.DiskIo("a", 3 * MB, MB, 8).write_ios) == (6, 2)
    assert (diskstats.DiskIo("a", 0, 0, 5).read_ios, diskstats.DiskIo("a", 0, 0, 5).write_ios) == (
        3, 2)


async def test_enable_disk_metering_raises_and_changes_nothing_when_vm_is_missing(
    emulator: EmulatorCim,
) -> None:
    with pytest.raises(HyperVError, match="ControlMetrics"):
        await diskstats.enable_disk_metering(hv(emulator), vms.vm_path("0E0E0E0E-0000-0000-0000-00"
                                                                "0000000000"))
    assert await emulator.query("SELECT * FROM Msvm_AggregationMetricValue") == []


async def test_disk_stats_finds_the_same_vms_when_more_are_named_than_one_query_names(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    images = await _disks_of_four_vms(emulator, tmp_path)
    few = ["i-4-1-VM", "i-4-3-VM", "nope"]
    many = few + [f"i-9-{n}-VM" for n in range(vmio.NAMED_AT_MOST)]  # every VM is asked for
    await diskstats.disk_stats(hv(emulator), few)  # switches metering on
    assert _io(emulator, "i-4-3-VM", images["i-4-3-VM"][1], 2, 1, 30)
    found = {len(asked): _counters(await diskstats.disk_stats(hv(emulator), asked))
             for asked in (few, many)}
    assert found[len(few)] == found[len(many)] == {
        "i-4-1-VM": {images["i-4-1-VM"][0]: (0, 0, 0, 0, True)},
        "i-4-3-VM": {image: (2 * MB, MB, 20, 10, True) if image == images["i-4-3-VM"][1]
                     else (0, 0, 0, 0, True) for image in images["i-4-3-VM"]}}


async def test_disk_stats_costs_nothing_when_no_name_is_asked_for(
    emulator: EmulatorCim,
) -> None:
    before = emulator.round_trips()
    assert await diskstats.disk_stats(hv(emulator), []) == {}
    assert (emulator.round_trips() - before).calls == 0


# --- disk I/O totals of many VMs: a fixed number of queries --------------------------------


async def _vms_with_a_disk(cim: EmulatorCim, tmp_path: Path, count: int) -> dict[str, str]:
    """``count`` running VMs i-5-<n>-VM with one volume each, v5-<n>.vhdx; name -> GUID."""
    guids: dict[str, str] = {}
    for index in range(count):
        vm = await _vm(cim, f"i-5-{index}-VM")
        await drives.attach_volume(hv(cim), vm, 0, image_file(tmp_path, f"v5-{index}.vhdx"))
        await ok(cim, await request_state(cim, vm.path, 2))
        guids[vm.name] = vm.guid
    return guids


@pytest.mark.parametrize("count", [1, 3, vmio.NAMED_AT_MOST + 8])
async def test_disk_counters_take_two_queries_whatever_the_number_of_vms(
    emulator: EmulatorCim, tmp_path: Path, count: int,
) -> None:
    guids = await _vms_with_a_disk(emulator, tmp_path, count)
    for index in range(count):
        assert metrics.disk_io(emulator.host, f"i-5-{index}-VM", f"C:\\images\\v5-{index}.vhdx",
                               read_bytes=index * MB, reads=index, writes=1) is False
    before = emulator.round_trips()
    totals = {guid: vmio.total(disks) for guid, disks in (
        await vmio.disk_counters(hv(emulator), list(guids.values()))).items()}
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"]) == (2, 2)
    assert {guid: (t.read_bytes, t.reads, t.writes) for guid, t in totals.items()} == {
        guid.upper(): (index * MB, index, 1) for index, guid in enumerate(guids.values())}


async def test_disk_counters_leave_out_vms_without_them_and_make_no_call_for_none(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    guids = await _vms_with_a_disk(emulator, tmp_path, 2)
    assert metrics.disk_io(emulator.host, "i-5-1-VM", "C:\\images\\v5-1.vhdx",
                           written_bytes=3 * MB, writes=6) is False  # counted, not metered
    counters = await vmio.disk_counters(hv(emulator), list(guids.values()))
    assert counters == {guids["i-5-1-VM"].upper(): {
        "disk:c:-images-v5-1.vhdx": vmio.IoTotals(0, 3 * MB, 0, 6)}}
    before = emulator.round_trips()
    assert await vmio.disk_counters(hv(emulator), []) == {}
    assert (emulator.round_trips() - before).calls == 0


def test_counter_names_are_disk_paths_with_dashes_for_backslashes() -> None:
    assert vmio.counter_name("C:\\ClusterStorage\\Volume1\\VM01.vhdx") == (
        "c:-clusterstorage-volume1-vm01.vhdx")
    assert metrics.counter_name("C:\\pool\\A.vhdx") == "C:-pool-A.vhdx"


def test_counter_names_of_the_verbatim_form_are_the_same_disk_as_the_plain_ones() -> None:
    # Windows names an instance after the disk's path, or after its \\?\ form
    for path in ("C:\\ClusterStorage\\Volume1\\VM01.vhdx", "\\\\fs1\\primary\\R-7.vhdx"):
        plain, verbatim = metrics.counter_name(path), metrics.counter_name(path, verbatim=True)
        assert verbatim != plain
        assert vmio.counter_key(plain) == vmio.counter_key(verbatim) == (
            vmio.counter_name(path))
        assert set(vmio.instance_names(vmio.counter_name(path))) == {
            plain.casefold(), verbatim.casefold()}
    assert metrics.counter_name("C:\\pool\\A.vhdx", verbatim=True) == "--?-C:-pool-A.vhdx"
    assert metrics.counter_name("\\\\fs1\\primary\\R-7.vhdx", verbatim=True) == (
        "--?-UNC-fs1-primary-R-7.vhdx")
    assert vmio.counter_name("\\\\fs1\\primary\\R-7.vhdx") == "--fs1-primary-r-7.vhdx"


@pytest.mark.parametrize("names", ["plain", "verbatim"])
async def test_disk_counters_are_read_whichever_name_the_host_gives_them(
    make_config: Callable[..., EmulatorConfig], tmp_path: Path, names: str,
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    cim = EmulatorCim.open(make_config(disk_counter_names=names,
                                       shares={"\\\\fs1\\primary": share}))
    try:
        vm = await _vm(cim, "i-6-1-VM")
        vhd.create(share / "R-7.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
        local, remote = image_file(tmp_path, "v6.vhdx"), "\\\\fs1\\primary\\R-7.vhdx"
        await drives.attach_volume(hv(cim), vm, 0, local)
        await drives.attach_volume(hv(cim), vm, 1, remote)
        await ok(cim, await request_state(cim, vm.path, 2))
        metrics.disk_io(cim.host, "i-6-1-VM", local, read_bytes=2 * MB, reads=4)
        metrics.disk_io(cim.host, "i-6-1-VM", remote, written_bytes=3 * MB, writes=5)
        listed = {str(i["Name"]) for i in await cim.query(
            f"SELECT Name FROM {metrics.DEVICE_COUNTERS}", "root\\cimv2")}
        assert all(name.startswith("--?-") == (names == "verbatim") for name in listed), listed
        before = cim.round_trips()
        counters = await vmio.disk_counters(hv(cim), [vm.guid])
        assert (cim.round_trips() - before).calls == 2
        assert {guid: vmio.total(disks) for guid, disks in counters.items()} == {
            vm.guid.upper(): vmio.IoTotals(2 * MB, 3 * MB, 4, 5)}
        assert len(counters[vm.guid.upper()]) == 2  # one instance a disk
    finally:
        await cim.close()
