"""The VM details ``rootDiskController`` and ``dataDiskController`` over real HTTPS, with
4.22 bodies: where StartCommand and AttachCommand put a VM's disks, read back from the
emulated host.

A generation 1 guest without Hyper-V's synthetic storage driver (an old Linux or Windows,
an appliance) sees no SCSI disk: ``dataDiskController=ide`` puts its data volumes on the
IDE places its root disk and CD leave. The MS sends the VM's details in ``vm.details`` of
a StartCommand and in ``controllerInfo`` of an AttachCommand.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.emulator.kit import devices, ok, request_state

VM = "i-2-5-VM"
SHARE = "\\\\10.1.1.2\\secondary"
STORE_URL = "cifs://10.1.1.2/secondary?user=admin&password=s3cret"
POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
ROOT = "03164c49-b0a9-4db9-baf2-20e389d54e6a"  # the sample's root volume
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
RASD, SASD = "Msvm_ResourceAllocationSettingData", "Msvm_StorageAllocationSettingData"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
_SWITCH = '[emulator]\nswitches = ["vSwitch0"]'  # the sample NIC's traffic label

Layout = dict[tuple[str, int], tuple[str, str]]


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent with the sample's root volume and four data volumes (data-1 .. data-4)
    in the local pool, and the VM's config drive on the image store."""
    store = tmp_path / "secondary" / "configdrive"
    store.mkdir(parents=True)
    (store / f"{VM}.iso").write_bytes(b"CD001" * 100)
    config = config_with_shares(tmp_path, {SHARE: tmp_path / "secondary"}, _SWITCH,
                                local_storage_path=POOL)
    async with serving(config) as running:
        pool = running.emulator.host.paths.local(POOL)
        pool.mkdir(parents=True, exist_ok=True)
        for name in (ROOT, *(f"data-{n}" for n in range(1, 5))):
            vhd.create(pool / f"{name}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
                       1 << 26)
        yield running


def _file(name: str) -> str:
    return f"{POOL}\\{name}.vhdx"


def _data_disk(seq: int) -> dict[str, Any]:
    """Data volume ``data-<seq>`` at ``diskSeq`` ``seq``, as the MS writes a DiskTO."""
    disk: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json")["vm"]["disks"][0])
    volume = disk["data"][VOLUME_TO]
    volume.update(uuid=f"data-{seq}", path=f"data-{seq}", volumeType="DATADISK",
                  name=f"DATA-{seq}", deviceId=seq)
    disk.update(diskSeq=seq, path=f"data-{seq}", type="DATADISK")
    return disk


def _config_drive() -> dict[str, Any]:
    return {"data": {names.TEMPLATE_OBJECT_TO: {
        "path": f"configdrive/{VM}.iso", "format": "ISO", "id": 0,
        "imageDataStore": {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}},
        "diskSeq": 4, "path": f"configdrive/{VM}.iso", "type": "ISO"}


def _start_body(details: dict[str, str], seqs: tuple[int, ...] = (), *, uefi: bool = False,
                config_drive: bool = False) -> dict[str, Any]:
    """Sample 15 (ROOT and an empty CD), with data volumes at ``seqs`` and ``details``."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json"))
    vm = body["vm"]
    vm["details"].update(details)
    vm["disks"] = ([_config_drive()] if config_drive else []) + vm["disks"] + [
        _data_disk(seq) for seq in seqs]
    if uefi:
        vm["bootType"] = "UEFI"
    return body


def _attach_body(seq: int, controller_info: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(ms422_json("21_AttachCommand.json"))
    body.update(disk=_data_disk(seq), controllerInfo=controller_info)
    return body


async def _vm(cim: EmulatorCim) -> ObjectPath | None:
    found = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    return found[0].path if found else None


async def _layout(cim: EmulatorCim) -> Layout:
    """Every drive of the VM by (``ide0``/``ide1``/``scsi``, slot): (kind, medium or "")."""
    vm = await _vm(cim)
    assert vm is not None
    rasd = await devices(cim, vm, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): str(m.strings("HostResource")[0])
             for m in await devices(cim, vm, SASD)}
    buses = {c.path: (f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi")
             for c in rasd if c["ResourceSubType"] in (IDE, SCSI)}
    return {(buses[ObjectPath.parse(str(d["Parent"]))], int(str(d["AddressOnParent"]))): (
        "disk" if d["ResourceSubType"] == DISK else "dvd", media.get(d.path, ""))
        for d in rasd if d["ResourceSubType"] in (DISK, DVD) and d.path is not None}


async def _switch_off(cim: EmulatorCim) -> None:
    """Turn the VM off on the host, its definition kept (a StopCommand removes it)."""
    vm = await _vm(cim)
    assert vm is not None
    await ok(cim, await request_state(cim, vm, 3))


async def _started(agent: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await agent.answer(names.START_COMMAND, body)
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    vm = await _vm(agent.emulator)
    assert vm is not None and (await agent.emulator.get(vm))["EnabledState"] == 2
    return answer


_GEN1_BASE = {("ide0", 0): ("disk", _file(ROOT)), ("ide1", 0): ("dvd", "")}


# --- StartCommand -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ide", "IDE", " Ide "])
async def test_generation_1_vm_takes_its_data_volumes_on_ide_when_data_disk_controller_is_ide(
    agent: Running, value: str,
) -> None:
    answer = await _started(agent, _start_body({"dataDiskController": value}, (1, 2)))
    assert await _layout(agent.emulator) == {
        **_GEN1_BASE, ("ide0", 1): ("disk", _file("data-1")),
        ("ide1", 1): ("disk", _file("data-2"))}
    assert answer.get("details") is None


@pytest.mark.parametrize("details", [{}, {"dataDiskController": "osdefault"},
                                     {"dataDiskController": "scsi"}])
async def test_generation_1_vm_takes_its_data_volumes_on_scsi_by_default(
    agent: Running, details: dict[str, str],
) -> None:
    answer = await _started(agent, _start_body(details, (1, 2)))
    assert await _layout(agent.emulator) == {
        **_GEN1_BASE, ("scsi", 1): ("disk", _file("data-1")),
        ("scsi", 2): ("disk", _file("data-2"))}
    assert answer.get("details") is None


async def test_generation_1_vm_keeps_its_config_drive_beside_the_cd_with_a_data_volume_on_ide(
    agent: Running,
) -> None:
    await _started(agent, _start_body({"dataDiskController": "ide"}, (1,), config_drive=True))
    assert await _layout(agent.emulator) == {
        **_GEN1_BASE, ("ide1", 1): ("dvd", f"{SHARE}\\configdrive\\{VM}.iso"),
        ("ide0", 1): ("disk", _file("data-1"))}


@pytest.mark.parametrize(("seqs", "config_drive", "left"), [((1, 2, 4), False, 2),
                                                            ((1, 2), True, 1)])
async def test_start_fails_naming_the_ide_limit_when_data_volumes_do_not_fit_on_ide(
    agent: Running, seqs: tuple[int, ...], config_drive: bool, left: int,
) -> None:
    body = _start_body({"dataDiskController": "ide"}, seqs, config_drive=config_drive)
    key, answer = await agent.answer(names.START_COMMAND, body)
    assert (key, answer["result"]) == (names.START_ANSWER, False), answer
    assert answer["details"] == (
        f"StartCommand failed: dataDiskController is ide, and the VM's {len(seqs)} data "
        "volumes do not fit on IDE: a generation 1 VM has 2 IDE controllers of 2 places "
        f"each, and its root disk and DVD drives leave {left}; detach data volumes, or set "
        "dataDiskController to scsi (which takes up to 64)")
    assert await _vm(agent.emulator) is None


@pytest.mark.parametrize("value", ["scsi", "lsilogic", "virtio"])
async def test_generation_1_vm_boots_from_ide_and_says_so_when_root_disk_controller_is_scsi(
    agent: Running, value: str,
) -> None:
    answer = await _started(agent, _start_body({"rootDiskController": value}, (1,)))
    assert await _layout(agent.emulator) == {**_GEN1_BASE,
                                             ("scsi", 1): ("disk", _file("data-1"))}
    assert answer["details"] == (
        f"rootDiskController {value} not followed: a generation 1 VM boots only from IDE, "
        "so the root disk went on IDE")


async def test_generation_2_vm_takes_every_disk_on_scsi_and_says_why_when_ide_is_asked(
    agent: Running,
) -> None:
    body = _start_body({"rootDiskController": "ide", "dataDiskController": "ide"}, (1,),
                       uefi=True)
    answer = await _started(agent, body)
    layout = await _layout(agent.emulator)
    assert not [where for where in layout if where[0] != "scsi"]
    assert layout[("scsi", 0)] == ("disk", _file(ROOT))
    assert layout[("scsi", 1)] == ("disk", _file("data-1"))
    assert answer["details"] == (
        "rootDiskController ide not followed: a generation 2 VM has no IDE controller, so "
        "the root disk went on SCSI; dataDiskController ide not followed: a generation 2 VM "
        "has no IDE controller, so data volumes went on SCSI")


async def test_data_disk_controller_of_another_hypervisor_is_taken_as_scsi_with_a_note(
    agent: Running,
) -> None:
    answer = await _started(agent, _start_body({"dataDiskController": "pvscsi"}, (1,)))
    assert await _layout(agent.emulator) == {**_GEN1_BASE,
                                             ("scsi", 1): ("disk", _file("data-1"))}
    assert answer["details"] == (
        "dataDiskController pvscsi taken as scsi: Hyper-V's one kind of SCSI controller is "
        "its synthetic one, and data volumes went on it")


@pytest.mark.parametrize("key", ["rootDiskController", "dataDiskController"])
async def test_start_fails_and_creates_nothing_when_a_controller_detail_names_no_controller(
    agent: Running, key: str,
) -> None:
    key_, answer = await agent.answer(names.START_COMMAND, _start_body({key: "sata"}, (1,)))
    assert (key_, answer["result"]) == (names.START_ANSWER, False), answer
    assert answer["details"] == (
        f"StartCommand failed: vm.details {key} 'sata' names no disk controller Hyper-V "
        "has: it takes ide (generation 1 only), scsi or osdefault (the root disk on IDE for "
        "generation 1, on SCSI for generation 2; data volumes on SCSI), and lsilogic, "
        "lsisas1068, buslogic, pvscsi, virtio, virtio-blk as scsi")
    assert await _vm(agent.emulator) is None


# --- AttachCommand and DettachCommand -----------------------------------------------------


async def test_attach_to_ide_fails_clearly_and_changes_nothing_when_gen1_vm_runs(
    agent: Running,
) -> None:
    await _started(agent, _start_body({"dataDiskController": "ide"}, (1,)))
    before = await _layout(agent.emulator)
    key, answer = await agent.answer(names.ATTACH_COMMAND,
                                     _attach_body(2, {"dataDiskController": "ide"}))
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, False), answer
    assert answer["details"] == (
        f"AttachCommand failed: VM {VM} is running, and Hyper-V adds disks to the IDE bus "
        "of a generation 1 VM only while it is off; attach the volume while the VM is "
        "stopped (the VM's dataDiskController is ide; with scsi its volumes go on SCSI, "
        "where Hyper-V adds them to a running VM too)")
    assert await _layout(agent.emulator) == before


async def test_attach_fills_the_free_ide_places_of_a_stopped_gen1_vm_then_names_the_limit(
    agent: Running,
) -> None:
    await _started(agent, _start_body({"dataDiskController": "ide"}))
    await _switch_off(agent.emulator)
    ide = {"dataDiskController": "ide"}
    answer = await agent.answer(names.ATTACH_COMMAND, _attach_body(1, ide))
    assert answer[1]["details"] == f"{_file('data-1')} attached to VM {VM} at IDE 0 slot 1"
    again = await agent.answer(names.ATTACH_COMMAND, _attach_body(1, ide))
    assert again[1]["details"] == (f"{_file('data-1')} was already attached to VM {VM} at "
                                   "IDE 0 slot 1; nothing changed")
    await agent.answer(names.ATTACH_COMMAND, _attach_body(2, ide))
    assert await _layout(agent.emulator) == {
        **_GEN1_BASE, ("ide0", 1): ("disk", _file("data-1")),
        ("ide1", 1): ("disk", _file("data-2"))}
    key, full = await agent.answer(names.ATTACH_COMMAND, _attach_body(4, ide))
    assert (key, full["result"]) == (names.ATTACH_ANSWER, False), full
    assert full["details"].startswith(
        f"AttachCommand failed: VM {VM} has no free IDE place for {_file('data-4')}: a "
        "generation 1 VM has 2 IDE controllers of 2 places each, and they hold IDE 0 slot 0: ")
    assert "IDE 1 slot 1: a disk drive holding" in full["details"]
    assert ("data-4", "disk") not in {(f, k) for k, f in (await _layout(agent.emulator)).values()}


async def test_attach_to_a_gen2_vm_goes_on_scsi_and_says_why_when_ide_is_asked(
    agent: Running,
) -> None:
    await _started(agent, _start_body({}, uefi=True))
    key, answer = await agent.answer(names.ATTACH_COMMAND,
                                     _attach_body(2, {"dataDiskController": "ide"}))
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, True), answer
    assert answer["details"] == (
        f"{_file('data-2')} attached to VM {VM} at SCSI 0 slot 2; dataDiskController ide not "
        "followed: the VM is generation 2, which has no IDE controller")
    assert (await _layout(agent.emulator))[("scsi", 2)] == ("disk", _file("data-2"))


async def test_attach_fails_when_controller_info_names_no_controller(agent: Running) -> None:
    await _started(agent, _start_body({}))
    before = await _layout(agent.emulator)
    _, answer = await agent.answer(names.ATTACH_COMMAND,
                                   _attach_body(2, {"dataDiskController": "nvme"}))
    assert answer["result"] is False
    assert answer["details"].startswith(
        "AttachCommand failed: controllerInfo dataDiskController 'nvme' names no disk "
        "controller Hyper-V has")
    assert await _layout(agent.emulator) == before


async def test_dettach_of_an_ide_volume_fails_clearly_while_vm_runs_and_works_once_stopped(
    agent: Running,
) -> None:
    await _started(agent, _start_body({"dataDiskController": "ide"}, (1,)))
    body = {"vmName": VM, "disk": _data_disk(1)}
    key, answer = await agent.answer(names.DETTACH_COMMAND, body)
    assert (key, answer["result"]) == (names.DETTACH_ANSWER, False), answer
    assert answer["details"] == (
        f"DettachCommand failed: {_file('data-1')} is at IDE 0 slot 1 of VM {VM}, which is "
        "running, and Hyper-V removes disks from the IDE bus of a generation 1 VM only "
        "while it is off; detach the volume while the VM is stopped")
    assert (await _layout(agent.emulator))[("ide0", 1)] == ("disk", _file("data-1"))
    await _switch_off(agent.emulator)
    _, detached = await agent.answer(names.DETTACH_COMMAND, body)
    assert detached["result"] is True, detached
    assert ("ide0", 1) not in await _layout(agent.emulator)
