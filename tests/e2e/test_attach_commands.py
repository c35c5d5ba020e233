"""Attach, Dettach, AttachIso and GetVmDiskStats over real HTTPS, on the emulated host
(protocol §5.1, §11)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import V2_NAMESPACE, CimInstance, ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import traffic, vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.services import metrics
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.emulator.kit import add, define_vm, devices, ok, request_state, template
from tests.emulator.portkit import vm_with_nic

ATTACH = names.ATTACH_COMMAND
DETTACH = names.DETTACH_COMMAND
ATTACH_ISO = names.ATTACH_ISO_COMMAND
DISK_STATS = names.GET_VM_DISK_STATS_COMMAND
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
STORE_URL = "cifs://10.1.1.2/secondary?user=admin&password=s3cret"
SHARE = "\\\\10.1.1.2\\secondary"
RASD = "Msvm_ResourceAllocationSettingData"
SASD = "Msvm_StorageAllocationSettingData"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
MB = 1 << 20

Layout = dict[tuple[str, int], tuple[str, str]]


# --- the agent, files and VMs -------------------------------------------------------------


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent, with the image store share \\\\10.1.1.2\\secondary holding two ISOs."""
    folder = tmp_path / "secondary" / "iso" / "2" / "205"
    folder.mkdir(parents=True)
    for name in ("tools.iso", "other.iso"):
        (folder / name).write_bytes(b"\0" * 4096)
    async with serving(config_with_shares(tmp_path, {SHARE: tmp_path / "secondary"})) as running:
        yield running


def _pool(running: Running) -> Path:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _volume_file(running: Running, uuid: str) -> Path:
    path = _pool(running) / f"{uuid}.vhdx"
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    return path


def _volume(uuid: str, kind: str = "DATADISK") -> dict[str, Any]:
    return {VOLUME_TO: {
        "uuid": uuid, "path": uuid, "volumeType": kind, "format": "VHDX", "name": uuid,
        "size": 1 << 26, "id": 31, "dataStore": {STORE_TO: {
            "uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "id": 201, "host": "10.1.1.1",
            "poolType": "Filesystem", "path": "C:\\pool", "port": 0}}}}


def _data_disk(uuid: str, seq: int | None) -> dict[str, Any]:
    disk: dict[str, Any] = {"type": "DATADISK", "data": _volume(uuid)}
    if seq is not None:
        disk["diskSeq"] = seq
    return disk


def _iso_disk(path: str) -> dict[str, Any]:
    return {"type": "ISO", "diskSeq": 3, "data": {names.TEMPLATE_OBJECT_TO: {
        "path": path, "format": "ISO", "name": "tools", "id": 205,
        "imageDataStore": {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}}}


def _file(name: str) -> str:
    return f"C:\\pool\\{name}.vhdx"


def _iso(name: str) -> str:
    return f"{SHARE}\\iso\\2\\205\\{name}"


async def _start(running: Running, name: str, *, data_seq: int | None = None,
                 iso: bool = True, uefi: bool = False) -> ObjectPath:
    """Start a VM with StartCommand: ROOT volume, an empty DVD drive when ``iso``, and a
    data volume ``<name>-data`` at ``data_seq`` when given (which brings a SCSI
    controller on generation 1)."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    vm = body["vm"]
    vm.update(name=name, cpus=1)
    if uefi:
        vm["bootType"] = "UEFI"
    _volume_file(running, f"{name}-root")
    vm["disks"][0] = {"type": "ROOT", "diskSeq": 0, "data": _volume(f"{name}-root", "ROOT")}
    if not iso:
        del vm["disks"][1]
    if data_seq is not None:
        _volume_file(running, f"{name}-data")
        vm["disks"].append(_data_disk(f"{name}-data", data_seq))
    _, answer = await running.answer(names.START_COMMAND, body)
    assert answer["result"] is True, answer
    return await _vm_path(running.emulator, name)


async def _vm_path(cim: EmulatorCim, name: str) -> ObjectPath:
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    assert vm.path is not None
    return vm.path


async def _layout(cim: EmulatorCim, vm: ObjectPath) -> Layout:
    """Every drive of the VM by (bus, slot), bus ``ide0``/``ide1``/``scsi``: (kind,
    medium file or "")."""
    rasd = await devices(cim, vm, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): str(m.strings("HostResource")[0])
             for m in await devices(cim, vm, SASD)}
    buses = {c.path: (f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi")
             for c in rasd if c["ResourceSubType"] in (IDE, SCSI)}
    found: Layout = {}
    for drive in rasd:
        if drive["ResourceSubType"] in (DISK, DVD) and drive.path is not None:
            where = (buses[ObjectPath.parse(str(drive["Parent"]))],
                     int(str(drive["AddressOnParent"])))
            kind = "disk" if drive["ResourceSubType"] == DISK else "dvd"
            found[where] = (kind, media.get(drive.path, ""))
    return found


async def _ok(running: Running, fqcn: str, body: dict[str, Any]) -> dict[str, Any]:
    _, answer = await running.answer(fqcn, body)
    assert answer["result"] is True, answer
    return answer


# --- data volumes -------------------------------------------------------------------------


async def test_attach_hot_adds_volume_at_disk_seq_when_vm_runs(agent: Running) -> None:
    vm = await _start(agent, "i-2-10-VM", data_seq=1)
    _volume_file(agent, "vol-2")
    body = {"vmName": "i-2-10-VM", "disk": _data_disk("vol-2", 2)}
    key, answer = await agent.answer(ATTACH, body)
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, True), answer
    assert answer["details"] == f"{_file('vol-2')} attached to VM i-2-10-VM at SCSI 0 slot 2"
    assert answer["disk"]["diskSeq"] == 2 and answer["disk"]["data"][VOLUME_TO]["uuid"] == "vol-2"
    layout = await _layout(agent.emulator, vm)
    assert layout[("scsi", 2)] == ("disk", _file("vol-2"))
    assert layout[("scsi", 1)] == ("disk", _file("i-2-10-VM-data"))
    assert (await agent.emulator.get(vm))["EnabledState"] == 2


async def test_attach_adds_controller_and_volume_when_vm_is_stopped(agent: Running) -> None:
    vm = await define_vm(agent.emulator, "i-2-11-VM")
    _volume_file(agent, "vol-3")
    answer = await _ok(agent, ATTACH, {"vmName": "i-2-11-VM", "disk": _data_disk("vol-3", 0)})
    assert "SCSI 0 slot 0" in answer["details"]
    assert await _layout(agent.emulator, vm) == {("scsi", 0): ("disk", _file("vol-3"))}


async def test_attach_changes_nothing_when_volume_is_already_at_that_slot(
    agent: Running,
) -> None:
    vm = await _start(agent, "i-2-12-VM", data_seq=1)
    before = await _layout(agent.emulator, vm)
    body = {"vmName": "i-2-12-VM", "disk": _data_disk("i-2-12-VM-data", 1)}
    answer = await _ok(agent, ATTACH, body)
    assert "already attached" in answer["details"]
    assert await _layout(agent.emulator, vm) == before


async def test_attach_refuses_when_slot_holds_another_volume(agent: Running) -> None:
    vm = await _start(agent, "i-2-13-VM", data_seq=1)
    before = await _layout(agent.emulator, vm)
    _volume_file(agent, "vol-4")
    _, answer = await agent.answer(ATTACH, {"vmName": "i-2-13-VM",
                                            "disk": _data_disk("vol-4", 1)})
    assert answer["result"] is False
    assert answer["details"] == (
        "AttachCommand failed: SCSI 0 slot 1 of VM i-2-13-VM is taken by a disk drive "
        f"holding {_file('i-2-13-VM-data')}")
    assert await _layout(agent.emulator, vm) == before


async def test_attach_fails_naming_the_other_vm_when_it_holds_the_volume(
    agent: Running,
) -> None:
    await _start(agent, "i-2-27-VM", data_seq=1)
    vm = await _start(agent, "i-2-28-VM")
    before = await _layout(agent.emulator, vm)
    key, answer = await agent.answer(ATTACH, {"vmName": "i-2-28-VM",
                                              "disk": _data_disk("i-2-27-VM-data", 1)})
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, False), answer
    assert answer["details"] == (
        f"AttachCommand failed: {_file('i-2-27-VM-data')} is attached to VM i-2-27-VM "
        "(running), so Hyper-V cannot attach it to VM i-2-28-VM; detach it from i-2-27-VM "
        "first")
    assert await _layout(agent.emulator, vm) == before  # no drive left behind
    _, retry = await agent.answer(ATTACH, {"vmName": "i-2-28-VM",
                                           "disk": _data_disk("i-2-27-VM-data", 1)})
    assert retry["details"] == answer["details"]  # the agent keeps serving, the same way


async def test_attach_hot_adds_to_a_vm_started_without_data_disks(agent: Running) -> None:
    vm = await _start(agent, "i-2-14-VM")  # ROOT and DVD only; StartCommand adds SCSI
    before = await _layout(agent.emulator, vm)
    assert not [where for where in before if where[0] == "scsi"]
    _volume_file(agent, "vol-5")
    await _ok(agent, ATTACH, {"vmName": "i-2-14-VM", "disk": _data_disk("vol-5", 1)})
    after = await _layout(agent.emulator, vm)
    assert after == {**before, ("scsi", 1): ("disk", _file("vol-5"))}


def _qemu_info(path: Path) -> tuple[str, int]:
    """(format, virtual size) as qemu-img reads the file; the emulator's own reading
    when qemu-img is not installed."""
    if shutil.which("qemu-img") is None:
        info = vhd.read_info(path)
        return info.format.name.lower(), info.virtual_size_bytes
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    found = json.loads(out)
    return str(found["format"]), int(found["virtual-size"])


async def test_dettach_removes_volume_and_keeps_its_file_through_stop(agent: Running) -> None:
    vm = await _start(agent, "i-2-15-VM", data_seq=1)
    data = _pool(agent) / "i-2-15-VM-data.vhdx"
    body = {"vmName": "i-2-15-VM", "disk": _data_disk("i-2-15-VM-data", 1)}
    key, answer = await agent.answer(DETTACH, body)
    assert (key, answer["result"]) == (names.DETTACH_ANSWER, True), answer
    assert "removed from SCSI 0 slot 1 of VM i-2-15-VM" in answer["details"]
    assert ("scsi", 1) not in await _layout(agent.emulator, vm)
    assert data.is_file()
    _, again = await agent.answer(DETTACH, body)
    assert again["result"] is False
    assert again["details"].startswith("DettachCommand failed: the disk image is not attached")
    await _ok(agent, names.STOP_COMMAND, {"vmName": "i-2-15-VM", "forceStop": True})
    assert data.is_file() and (_pool(agent) / "i-2-15-VM-root.vhdx").is_file()
    assert _qemu_info(data) == ("vhdx", 1 << 26)


async def test_attach_and_dettach_succeed_without_change_when_vm_is_not_on_host(
    agent: Running,
) -> None:
    _volume_file(agent, "vol-6")
    for fqcn, disk in ((ATTACH, _data_disk("vol-6", 1)), (DETTACH, _data_disk("vol-6", 1)),
                       (ATTACH, _iso_disk("iso/2/205/tools.iso")),
                       (DETTACH, _iso_disk("iso/2/205/tools.iso"))):
        answer = await _ok(agent, fqcn, {"vmName": "i-9-9-VM", "disk": disk})
        assert answer["details"].startswith("VM i-9-9-VM is not on this host; "), answer
    answer = await _ok(agent, ATTACH_ISO, {"vmName": "i-9-9-VM", "attach": True,
                                           "isoPath": "iso/2/205/tools.iso",
                                           "storeUrl": STORE_URL})
    assert "not on this host" in answer["details"]
    assert await agent.emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine"))) == []


@pytest.mark.parametrize(("fqcn", "expected"), [
    (ATTACH, "Invalid disk type to be attached to vm i-2-16-VM: 'ROOT'"),
    (DETTACH, "Invalid disk type to be dettached from vm i-2-16-VM: 'ROOT'"),
])
async def test_attach_and_dettach_refuse_when_disk_type_is_not_datadisk_or_iso(
    agent: Running, fqcn: str, expected: str,
) -> None:
    vm = await _start(agent, "i-2-16-VM", data_seq=1)
    before = await _layout(agent.emulator, vm)
    disk = _data_disk("i-2-16-VM-root", 2) | {"type": "ROOT"}
    _, answer = await agent.answer(fqcn, {"vmName": "i-2-16-VM", "disk": disk})
    assert answer["result"] is False
    assert answer["details"].split(" failed: ", 1)[1].startswith(expected), answer
    assert await _layout(agent.emulator, vm) == before


def _escaping(body: dict[str, Any]) -> None:
    body["disk"]["data"][VOLUME_TO]["path"] = "..\\..\\windows\\x"


def _missing_file(body: dict[str, Any]) -> None:
    body["disk"]["data"][VOLUME_TO].update(path="not-there", uuid="not-there")


def _seq(value: object) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["disk"]["diskSeq"] = value
    return change


def _no_seq(body: dict[str, Any]) -> None:
    del body["disk"]["diskSeq"]


def _no_vm_name(body: dict[str, Any]) -> None:
    del body["vmName"]


def _blank_vm_name(body: dict[str, Any]) -> None:
    body["vmName"] = " "


def _no_data(body: dict[str, Any]) -> None:
    del body["disk"]["data"]


def _type_number(body: dict[str, Any]) -> None:
    body["disk"]["type"] = 7


@pytest.mark.parametrize(("change", "expected"), [
    (_escaping, "climbs out"),
    (_missing_file, "the file C:\\pool\\not-there.vhdx does not exist"),
    (_seq(-1), "diskSeq -1 is outside 0..65"),
    (_seq(66), "diskSeq 66 is outside 0..65, the device numbers CloudStack gives a "
               "Hyper-V VM's disks (up to 64 data volumes besides the root disk and the CD)"),
    (_seq("three"), "disk.diskSeq"),
    (_no_seq, "diskSeq is missing"),
    (_no_vm_name, "vmName: required field is missing"),
    (_blank_vm_name, "the command names no VM: its vmName ' ' is blank"),
    (_no_data, "data is not a VolumeObjectTO"),
    (_type_number, "disk.type"),
])
async def test_attach_fails_and_changes_nothing_when_input_is_bad(
    agent: Running, change: Callable[[dict[str, Any]], None], expected: str,
) -> None:
    vm = await _start(agent, "i-2-17-VM", data_seq=1)
    before = await _layout(agent.emulator, vm)
    _volume_file(agent, "vol-7")
    body = {"vmName": "i-2-17-VM", "disk": _data_disk("vol-7", 2)}
    change(body)
    key, answer = await agent.answer(ATTACH, body)
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, False), answer
    assert expected in answer["details"], answer["details"]
    assert await _layout(agent.emulator, vm) == before


# --- data volumes beyond the first SCSI controller ----------------------------------------
# CloudStack gives a Hyper-V VM up to 64 data volumes, numbered from 1 and skipping the
# CD's 3, so diskSeq reaches 65: 64 and 65 are slots 0 and 1 of a second SCSI controller.


async def _start_with_volumes(running: Running, name: str, seqs: list[int]) -> ObjectPath:
    """Start a generation 1 VM with StartCommand: ROOT, the empty DVD drive, and a data
    volume ``<name>-<seq>`` at each of ``seqs``."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    body["vm"].update(name=name, cpus=1)
    _volume_file(running, f"{name}-root")
    body["vm"]["disks"][0] = {"type": "ROOT", "diskSeq": 0,
                              "data": _volume(f"{name}-root", "ROOT")}
    for seq in seqs:
        _volume_file(running, f"{name}-{seq}")
        body["vm"]["disks"].append(_data_disk(f"{name}-{seq}", seq))
    await _ok(running, names.START_COMMAND, body)
    return await _vm_path(running.emulator, name)


async def _scsi_layout(cim: EmulatorCim, vm: ObjectPath) -> dict[tuple[int, int], str]:
    """Every disk drive on a SCSI controller by (controller, slot), the controllers
    numbered in the order the host lists them (the order they were added): its file."""
    rasd = await devices(cim, vm, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): str(m.strings("HostResource")[0])
             for m in await devices(cim, vm, SASD)}
    scsi = {c.path: index for index, c in
            enumerate(c for c in rasd if c["ResourceSubType"] == SCSI)}
    return {(scsi[parent], int(str(d["AddressOnParent"]))): media.get(d.path, "")
            for d in rasd if d["ResourceSubType"] == DISK and d.path is not None
            and (parent := ObjectPath.parse(str(d["Parent"]))) in scsi}


async def _scsi_controllers(cim: EmulatorCim, vm: ObjectPath) -> int:
    return sum(1 for c in await devices(cim, vm, RASD) if c["ResourceSubType"] == SCSI)


async def test_start_puts_disk_seq_64_and_65_on_a_second_scsi_controller(
    agent: Running,
) -> None:
    vm = await _start_with_volumes(agent, "i-2-40-VM", [63, 64, 65])
    assert await _scsi_layout(agent.emulator, vm) == {
        (0, 63): _file("i-2-40-VM-63"), (1, 0): _file("i-2-40-VM-64"),
        (1, 1): _file("i-2-40-VM-65")}
    assert await _scsi_controllers(agent.emulator, vm) == 2
    assert (await agent.emulator.get(vm))["EnabledState"] == 2


async def test_start_adds_no_second_scsi_controller_when_no_disk_needs_it(
    agent: Running,
) -> None:
    vm = await _start_with_volumes(agent, "i-2-41-VM", [1, 63])
    assert await _scsi_controllers(agent.emulator, vm) == 1


async def test_attach_and_dettach_disk_seq_64_on_the_second_controller_of_a_running_vm(
    agent: Running,
) -> None:
    vm = await _start_with_volumes(agent, "i-2-42-VM", [63, 65])
    _volume_file(agent, "vol-64")
    body = {"vmName": "i-2-42-VM", "disk": _data_disk("vol-64", 64)}
    answer = await _ok(agent, ATTACH, body)
    assert answer["details"] == f"{_file('vol-64')} attached to VM i-2-42-VM at SCSI 1 slot 0"
    assert answer["disk"]["diskSeq"] == 64
    assert await _scsi_layout(agent.emulator, vm) == {
        (0, 63): _file("i-2-42-VM-63"), (1, 0): _file("vol-64"), (1, 1): _file("i-2-42-VM-65")}
    again = await _ok(agent, ATTACH, body)
    assert again["details"] == (f"{_file('vol-64')} was already attached to VM i-2-42-VM at "
                                "SCSI 1 slot 0; nothing changed")
    answer = await _ok(agent, DETTACH, body)
    assert answer["details"] == (f"{_file('vol-64')} removed from SCSI 1 slot 0 of VM "
                                 "i-2-42-VM; the file is kept")
    assert (1, 0) not in await _scsi_layout(agent.emulator, vm)
    assert (_pool(agent) / "vol-64.vhdx").is_file()


async def test_attach_and_dettach_disk_seq_64_when_vm_is_stopped(agent: Running) -> None:
    vm = await define_vm(agent.emulator, "i-2-43-VM")  # off, no SCSI controller
    _volume_file(agent, "vol-64")
    body = {"vmName": "i-2-43-VM", "disk": _data_disk("vol-64", 64)}
    answer = await _ok(agent, ATTACH, body)
    assert answer["details"] == f"{_file('vol-64')} attached to VM i-2-43-VM at SCSI 1 slot 0"
    assert await _scsi_layout(agent.emulator, vm) == {(1, 0): _file("vol-64")}
    assert await _scsi_controllers(agent.emulator, vm) == 2
    _volume_file(agent, "vol-1")
    await _ok(agent, ATTACH, {"vmName": "i-2-43-VM", "disk": _data_disk("vol-1", 1)})
    assert await _scsi_controllers(agent.emulator, vm) == 2
    answer = await _ok(agent, DETTACH, body)
    assert "removed from SCSI 1 slot 0 of VM i-2-43-VM" in answer["details"]
    assert await _scsi_layout(agent.emulator, vm) == {(0, 1): _file("vol-1")}


async def test_attach_of_disk_seq_64_fails_clearly_when_running_vm_has_one_scsi_controller(
    agent: Running,
) -> None:
    vm = await _start_with_volumes(agent, "i-2-44-VM", [1])
    before = await _layout(agent.emulator, vm)
    _volume_file(agent, "vol-64")
    _, answer = await agent.answer(ATTACH, {"vmName": "i-2-44-VM",
                                            "disk": _data_disk("vol-64", 64)})
    assert answer["result"] is False
    assert answer["details"] == (
        "AttachCommand failed: VM i-2-44-VM has no SCSI controller 1 (it has 1) to attach a "
        "volume at SCSI 1 slot 0, and Hyper-V adds controllers to stopped VMs only (the VM "
        "is running); attach the volume while the VM is stopped: the VM's next start adds "
        "the controller with it")
    assert await _layout(agent.emulator, vm) == before
    assert await _scsi_controllers(agent.emulator, vm) == 1


# --- ISOs ---------------------------------------------------------------------------------


async def test_iso_is_inserted_swapped_and_ejected_when_running_vm_has_a_dvd_drive(
    agent: Running,
) -> None:
    vm = await _start(agent, "i-2-20-VM")
    states = []
    for fqcn, name in ((ATTACH, "tools.iso"), (ATTACH, "other.iso"), (DETTACH, "other.iso")):
        body = {"vmName": "i-2-20-VM", "disk": _iso_disk(f"iso/2/205/{name}")}
        answer = await _ok(agent, fqcn, body)
        assert "IDE 1 slot 0" in answer["details"], answer
        assert "s3cret" not in json.dumps(answer)  # the echoed disk's store URL is masked
        assert answer["disk"]["data"][names.TEMPLATE_OBJECT_TO]["path"] == f"iso/2/205/{name}"
        states.append((await _layout(agent.emulator, vm))[("ide1", 0)])
    assert states == [("dvd", _iso("tools.iso")), ("dvd", _iso("other.iso")), ("dvd", "")]


async def test_iso_dettach_repeated_succeeds_without_change_when_dvd_drive_is_empty(
    agent: Running,
) -> None:
    # The MS keeps a VM's ISO in its records until a detach succeeds: a retry after a lost
    # answer finds the drive already empty and must not fail, or the ISO cannot be
    # detached again while the VM runs.
    vm = await _start(agent, "i-2-25-VM")
    body = {"vmName": "i-2-25-VM", "disk": _iso_disk("iso/2/205/tools.iso")}
    await _ok(agent, ATTACH, body)
    first = await _ok(agent, DETTACH, body)
    assert "ejected from the DVD drive at IDE 1 slot 0" in first["details"]
    key, again = await agent.answer(DETTACH, body)
    assert (key, again["result"]) == (names.DETTACH_ANSWER, True), again
    assert again["details"] == (f"{_iso('tools.iso')} is not in VM i-2-25-VM: its DVD drive "
                                "at IDE 1 slot 0 is empty; nothing changed")
    assert (await _layout(agent.emulator, vm))[("ide1", 0)] == ("dvd", "")
    legacy = {"vmName": "i-2-25-VM", "attach": False, "isoPath": "iso/2/205/tools.iso",
              "storeUrl": STORE_URL}
    assert "is empty; nothing changed" in (await _ok(agent, ATTACH_ISO, legacy))["details"]


async def test_iso_dettach_fails_and_ejects_nothing_when_dvd_drive_holds_another_iso(
    agent: Running,
) -> None:
    vm = await _start(agent, "i-2-26-VM")
    await _ok(agent, ATTACH, {"vmName": "i-2-26-VM", "disk": _iso_disk("iso/2/205/other.iso")})
    key, answer = await agent.answer(DETTACH, {"vmName": "i-2-26-VM",
                                               "disk": _iso_disk("iso/2/205/tools.iso")})
    assert (key, answer["result"]) == (names.DETTACH_ANSWER, False), answer
    assert answer["details"] == (
        "DettachCommand failed: the disk image is not attached: VM i-2-26-VM does not hold "
        f"{_iso('tools.iso')}; its DVD drive at IDE 1 slot 0 holds {_iso('other.iso')}; "
        "nothing was changed")
    assert (await _layout(agent.emulator, vm))[("ide1", 0)] == ("dvd", _iso("other.iso"))


async def test_attach_iso_refuses_clearly_when_running_gen1_vm_has_no_dvd_drive(
    agent: Running,
) -> None:
    vm = await _start(agent, "i-2-21-VM", iso=False)
    before = await _layout(agent.emulator, vm)
    _, answer = await agent.answer(ATTACH, {"vmName": "i-2-21-VM",
                                            "disk": _iso_disk("iso/2/205/tools.iso")})
    assert answer["result"] is False
    assert "cannot add one to a running generation 1 VM" in answer["details"], answer
    assert await _layout(agent.emulator, vm) == before


async def test_attach_iso_adds_a_scsi_dvd_drive_when_gen2_vm_runs_without_one(
    agent: Running,
) -> None:
    vm = await _start(agent, "i-2-22-VM", iso=False, uefi=True)
    await _ok(agent, ATTACH, {"vmName": "i-2-22-VM", "disk": _iso_disk("iso/2/205/tools.iso")})
    assert await _layout(agent.emulator, vm) == {
        ("scsi", 0): ("disk", _file("i-2-22-VM-root")), ("scsi", 1): ("dvd", _iso("tools.iso"))}


@pytest.mark.parametrize("iso_path", [
    "iso/2/205/tools.iso",
    STORE_URL + "/iso/2/205/tools.iso",
    "cifs://10.1.1.2/secondary/iso/2/205/tools.iso",
])
async def test_attach_iso_command_inserts_and_ejects_when_iso_path_names_the_store(
    agent: Running, iso_path: str,
) -> None:
    vm = await _start(agent, "i-2-23-VM")
    body = {"vmName": "i-2-23-VM", "attach": True, "isoPath": iso_path, "storeUrl": STORE_URL}
    key, answer = await agent.answer(ATTACH_ISO, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert "s3cret" not in answer["details"]
    assert (await _layout(agent.emulator, vm))[("ide1", 0)] == ("dvd", _iso("tools.iso"))
    await _ok(agent, ATTACH_ISO, body | {"attach": False})
    assert (await _layout(agent.emulator, vm))[("ide1", 0)] == ("dvd", "")


@pytest.mark.parametrize(("change", "expected"), [
    ({"isoPath": "../../etc/tools.iso"}, "climbs out"),
    ({"isoPath": "cifs://10.1.1.3/secondary/iso/tools.iso"}, "is not on the image store"),
    ({"isoPath": "iso/2/205/missing.iso"}, "does not exist"),
    ({"isoPath": None}, "isoPath is missing"),
    ({"storeUrl": None}, "storeUrl is missing"),
    ({"storeUrl": "nfs://10.1.1.2/secondary"}, "nfs:// storage cannot be used"),
])
async def test_attach_iso_command_fails_without_secret_when_input_is_bad(
    agent: Running, change: dict[str, Any], expected: str,
) -> None:
    vm = await _start(agent, "i-2-24-VM")
    before = await _layout(agent.emulator, vm)
    body = {"vmName": "i-2-24-VM", "attach": True, "isoPath": "iso/2/205/tools.iso",
            "storeUrl": STORE_URL} | change
    _, answer = await agent.answer(ATTACH_ISO, body)
    assert answer["result"] is False
    assert expected in answer["details"], answer
    assert "s3cret" not in answer["details"]
    assert await _layout(agent.emulator, vm) == before


@pytest.mark.parametrize("command", [ATTACH, ATTACH_ISO])
async def test_iso_attach_from_an_image_store_that_cannot_be_reached_says_so(
    agent: Running, tmp_path: Path, command: str,
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found: every ISO on it reads as absent. The answer names the image store as what
    cannot be reached, not the ISO as missing (which sends the operator looking for a
    file that is there); once the share is back the same attach succeeds."""
    vm = await _start(agent, "i-2-27-VM")
    before = await _layout(agent.emulator, vm)
    body: dict[str, Any] = (
        {"vmName": "i-2-27-VM", "disk": _iso_disk("iso/2/205/tools.iso")} if command == ATTACH
        else {"vmName": "i-2-27-VM", "attach": True, "isoPath": "iso/2/205/tools.iso",
              "storeUrl": STORE_URL})
    (tmp_path / "secondary").rename(tmp_path / "away")  # the share cannot be reached
    _, answer = await agent.answer(command, body)
    assert answer["result"] is False, answer
    assert f"image store's root {SHARE}," in answer["details"], answer["details"]
    assert "cannot be reached" in answer["details"], answer["details"]
    assert "s3cret" not in answer["details"]
    assert await _layout(agent.emulator, vm) == before
    (tmp_path / "away").rename(tmp_path / "secondary")  # back
    await _ok(agent, command, body)
    assert (await _layout(agent.emulator, vm))[("ide1", 0)] == ("dvd", _iso("tools.iso"))


# --- disk statistics ----------------------------------------------------------------------


async def test_disk_stats_reports_metered_io_of_each_vhd_when_named_vms_did_io(
    agent: Running,
) -> None:
    await _start(agent, "i-2-30-VM", data_seq=1)
    await _start(agent, "i-2-31-VM")
    await _ok(agent, ATTACH, {"vmName": "i-2-31-VM", "disk": _iso_disk("iso/2/205/tools.iso")})
    cim = agent.emulator
    body = {"vmNames": ["i-2-30-VM", "i-2-31-VM", "i-0-0-VM"], "hostName": "hv1"}
    first = await _ok(agent, DISK_STATS, body)  # switches metering on; nothing counted yet
    assert {e["path"]: _figures(e) for entries in first["vmDiskStatsMap"].values()
            for e in entries} == {name: (0, 0, 0, 0) for name in (
                "i-2-30-VM-root", "i-2-30-VM-data", "i-2-31-VM-root")}
    assert metrics.disk_io(cim.host, "i-2-30-VM", _file("i-2-30-VM-data"),
                           read_bytes=12 * MB, written_bytes=4 * MB + 5, ios=1600)
    assert metrics.disk_io(cim.host, "i-2-31-VM", _file("i-2-31-VM-root"),
                           read_bytes=MB, ios=3)
    before = cim.round_trips()
    key, answer = await agent.answer(DISK_STATS, body)
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (names.GET_VM_DISK_STATS_ANSWER, True), answer
    stats = answer["vmDiskStatsMap"]
    assert set(stats) == {"i-2-30-VM", "i-2-31-VM"}
    assert {e["path"]: _figures(e) for e in stats["i-2-30-VM"]} == {
        "i-2-30-VM-root": (0, 0, 0, 0), "i-2-30-VM-data": (1200, 400, 12 * MB, 4 * MB)}
    assert [(e["vmName"], e["path"], _figures(e)) for e in stats["i-2-31-VM"]] == [
        ("i-2-31-VM", "i-2-31-VM-root", (3, 0, MB, 0))]
    assert answer["hostName"] == "hv1"
    assert (spent.calls, spent["query"]) == (2 + 3, 2)  # 2 queries, 1 association per disk


@pytest.mark.parametrize("names_field", ["i-2-32-VM", [["i-2-32-VM"]], 7])
async def test_disk_stats_fails_and_meters_nothing_when_vm_names_is_not_a_list_of_names(
    agent: Running, names_field: object,
) -> None:
    await _start(agent, "i-2-32-VM")
    _, answer = await agent.answer(DISK_STATS, {"vmNames": names_field})
    assert answer["result"] is False
    assert "vmNames" in answer["details"], answer
    assert await agent.emulator.query(wql.select("Msvm_AggregationMetricValue")) == []


def _figures(entry: dict[str, Any]) -> tuple[int, int, int, int]:
    return (entry["ioRead"], entry["ioWrite"], entry["bytesRead"], entry["bytesWrite"])


async def test_disk_stats_answers_empty_map_without_a_call_when_no_vm_is_named(
    agent: Running,
) -> None:
    before = agent.emulator.round_trips()
    answer = await _ok(agent, DISK_STATS, {"vmNames": []})
    assert answer["vmDiskStatsMap"] == {}
    assert (agent.emulator.round_trips() - before).calls == 0


# --- disk and network I/O in GetVmStats ---------------------------------------------------

VM_STATS = names.GET_VM_STATS_COMMAND
MAC = "02:00:51:2c:00:0e"  # the NIC of the StartCommand sample


def _disk_io(entry: dict[str, Any]) -> tuple[float, float, float, float]:
    return (entry["diskReadIOs"], entry["diskWriteIOs"], entry["diskReadKBs"],
            entry["diskWriteKBs"])


def _network_kb(entry: dict[str, Any]) -> tuple[float, float]:
    return entry["networkReadKBs"], entry["networkWriteKBs"]


async def _vm_stats(running: Running, vm_names: list[str]) -> tuple[dict[str, Any], int]:
    """The vmStatsMap of a GetVmStatsCommand and the queries it made."""
    before = running.emulator.round_trips()
    answer = await _ok(running, VM_STATS, {"vmNames": vm_names})
    spent = running.emulator.round_trips() - before
    assert spent.calls == spent["query"] + spent["invoke:GetSummaryInformation"]
    return answer["vmStatsMap"], spent["query"]


async def test_vm_stats_report_each_running_vms_disk_io_since_the_previous_report(
    agent: Running,
) -> None:
    await _start(agent, "i-2-40-VM", data_seq=1)
    await _start(agent, "i-2-41-VM")
    host = agent.emulator.host
    both = ["i-2-40-VM", "i-2-41-VM"]
    assert traffic.network_io(host, "i-2-40-VM", MAC, received_bytes=MB)  # before the baseline
    first, queries = await _vm_stats(agent, both)  # the baseline: nothing reported yet
    assert {name: _disk_io(e) for name, e in first.items()} == dict.fromkeys(both, (0, 0, 0, 0))
    assert {name: _network_kb(e) for name, e in first.items()} == dict.fromkeys(both, (0, 0))
    assert queries == 3  # the VMs' disk files and adapter counters, then their disk counters
    metrics.disk_io(host, "i-2-40-VM", _file("i-2-40-VM-root"), read_bytes=8 * MB, reads=100,
                    written_bytes=MB, writes=10)
    metrics.disk_io(host, "i-2-40-VM", _file("i-2-40-VM-data"), read_bytes=2 * MB, reads=20)
    metrics.disk_io(host, "i-2-41-VM", _file("i-2-41-VM-root"), written_bytes=512, writes=1)
    assert traffic.network_io(host, "i-2-40-VM", MAC, received_bytes=3 * MB, sent_bytes=2048)
    assert traffic.network_io(host, "i-2-41-VM", MAC.upper(), sent_bytes=512)
    second, queries = await _vm_stats(agent, both)
    assert _disk_io(second["i-2-40-VM"]) == (120, 10, 10 * 1024, 1024)  # both disks summed
    assert _disk_io(second["i-2-41-VM"]) == (0, 1, 0, 0.5)
    assert _network_kb(second["i-2-40-VM"]) == (3 * 1024, 2)  # read: what the VM received
    assert _network_kb(second["i-2-41-VM"]) == (0, 0.5)
    assert queries == 3
    metrics.disk_io(host, "i-2-41-VM", _file("i-2-41-VM-root"), read_bytes=MB, reads=3)
    assert traffic.network_io(host, "i-2-41-VM", MAC, received_bytes=4096)
    third, queries = await _vm_stats(agent, ["i-2-41-VM"])
    assert (list(third), _disk_io(third["i-2-41-VM"]), _network_kb(third["i-2-41-VM"]),
            queries) == (["i-2-41-VM"], (3, 0, 1024, 0), (4, 0), 3)
    fourth, _ = await _vm_stats(agent, both)
    assert {name: _disk_io(e) for name, e in fourth.items()} == dict.fromkeys(both, (0, 0, 0, 0))
    assert {name: _network_kb(e) for name, e in fourth.items()} == dict.fromkeys(both, (0, 0))


async def test_vm_stats_after_a_volume_is_detached_count_the_other_disks_interval_only(
    agent: Running,
) -> None:
    await _start(agent, "i-2-44-VM", data_seq=1)
    host = agent.emulator.host
    metrics.disk_io(host, "i-2-44-VM", _file("i-2-44-VM-root"), read_bytes=8 * MB, reads=80)
    metrics.disk_io(host, "i-2-44-VM", _file("i-2-44-VM-data"), read_bytes=2 * MB, reads=20)
    await _vm_stats(agent, ["i-2-44-VM"])  # the baseline: both disks' totals
    metrics.disk_io(host, "i-2-44-VM", _file("i-2-44-VM-root"), read_bytes=MB, reads=10)
    await _ok(agent, DETTACH, {"vmName": "i-2-44-VM",
                               "disk": _data_disk("i-2-44-VM-data", 1)})
    stats, _ = await _vm_stats(agent, ["i-2-44-VM"])
    assert _disk_io(stats["i-2-44-VM"]) == (10, 0, 1024, 0)  # not the root disk's 9 MB


async def test_vm_stats_read_counters_named_after_the_verbatim_form_of_the_disks_path(
    tmp_path: Path,
) -> None:
    # a host that names its counter instances --?-C:-pool-... (the \\?\ form of the path)
    toml = '[emulator]\ndisk_counter_names = "verbatim"'
    async with serving(config_with_shares(tmp_path, {}, agent_toml=toml)) as running:
        await _start(running, "i-2-43-VM", data_seq=1, iso=False)
        first, _ = await _vm_stats(running, ["i-2-43-VM"])
        assert _disk_io(first["i-2-43-VM"]) == (0, 0, 0, 0)
        host = running.emulator.host
        metrics.disk_io(host, "i-2-43-VM", _file("i-2-43-VM-root"), read_bytes=4 * MB, reads=40)
        metrics.disk_io(host, "i-2-43-VM", _file("i-2-43-VM-data"), written_bytes=MB, writes=8)
        listed = {str(i["Name"]) for i in await running.emulator.query(
            f"SELECT Name FROM {metrics.DEVICE_COUNTERS}", "root\\cimv2")}
        assert listed == {"--?-C:-pool-i-2-43-VM-root.vhdx", "--?-C:-pool-i-2-43-VM-data.vhdx"}
        second, queries = await _vm_stats(running, ["i-2-43-VM"])
        assert (_disk_io(second["i-2-43-VM"]), queries) == ((40, 8, 4 * 1024, 1024), 3)


async def test_vm_stats_count_a_restarted_vms_io_from_its_new_start(agent: Running) -> None:
    vm = await _start(agent, "i-2-42-VM")
    host, root = agent.emulator.host, _file("i-2-42-VM-root")
    metrics.disk_io(host, "i-2-42-VM", root, read_bytes=4 * MB, reads=40)
    assert traffic.network_io(host, "i-2-42-VM", MAC, received_bytes=8 * MB)
    await _vm_stats(agent, ["i-2-42-VM"])  # baseline: 40 reads, 8 MB received
    await ok(agent.emulator, await request_state(agent.emulator, vm, 3))
    assert not traffic.network_io(host, "i-2-42-VM", MAC, received_bytes=MB)  # off: no traffic
    stopped, queries = await _vm_stats(agent, ["i-2-42-VM"])
    assert (_disk_io(stopped["i-2-42-VM"]), _network_kb(stopped["i-2-42-VM"]), queries) == (
        (0, 0, 0, 0), (0, 0), 0)  # not running
    await ok(agent.emulator, await request_state(agent.emulator, vm, 2))
    metrics.disk_io(host, "i-2-42-VM", root, read_bytes=MB, reads=5)
    assert traffic.network_io(host, "i-2-42-VM", MAC, received_bytes=2 * MB, sent_bytes=1024)
    restarted, _ = await _vm_stats(agent, ["i-2-42-VM"])
    assert _disk_io(restarted["i-2-42-VM"]) == (5, 0, 1024, 0)  # below the baseline: all new
    assert _network_kb(restarted["i-2-42-VM"]) == (2 * 1024, 1)


async def test_overlapping_vm_stats_count_each_interval_once_whichever_answers_first(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The MS asks for a host's VM statistics from its stats collector and, for AutoScale
    # groups, from the AutoScale monitor, on their own timers, and the agent serves them
    # at once. When the one asked first is answered last, it must not take the counters
    # it read (older than the other's) as a new baseline, nor its VM's shorter run time
    # as a restart: that reported the VM's whole traffic since it started again.
    await _start(agent, "i-2-48-VM")
    host, cim = agent.emulator.host, agent.emulator
    assert traffic.network_io(host, "i-2-48-VM", MAC, received_bytes=64 * MB)
    await _vm_stats(agent, ["i-2-48-VM"])  # the baseline: 64 MB received
    assert traffic.network_io(host, "i-2-48-VM", MAC, received_bytes=MB)
    taken, release = asyncio.Event(), asyncio.Event()
    query = cim.query

    async def held(text: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        answer = await query(text, namespace)
        if traffic.ADAPTER_COUNTERS in text and not taken.is_set():
            taken.set()  # the first report's counters are read: its answer waits
            await release.wait()
        return answer

    monkeypatch.setattr(cim, "query", held)
    first = asyncio.create_task(_ok(agent, VM_STATS, {"vmNames": ["i-2-48-VM"]}))
    await asyncio.wait_for(taken.wait(), 10)
    assert traffic.network_io(host, "i-2-48-VM", MAC, received_bytes=2 * MB)
    second = asyncio.create_task(_ok(agent, VM_STATS, {"vmNames": ["i-2-48-VM"]}))
    await asyncio.sleep(0.3)  # the second report is read (or waits) meanwhile
    release.set()
    reports = [(await task)["vmStatsMap"]["i-2-48-VM"] for task in (first, second)]
    assert [_network_kb(e) for e in reports] == [(1024, 0), (2 * 1024, 0)]
    third, _ = await _vm_stats(agent, ["i-2-48-VM"])
    assert _network_kb(third["i-2-48-VM"]) == (0, 0)  # nothing counted twice


NETWORK_STATS = "com.cloud.agent.api.GetVmNetworkStatsCommand"
SECOND_MAC = "02:00:51:2c:00:1f"


async def test_network_stats_report_each_nics_totals_by_the_mac_cloudstack_stores(
    agent: Running,
) -> None:
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    body["vm"].update(name="i-2-45-VM", cpus=1)
    _volume_file(agent, "i-2-45-VM-root")
    body["vm"]["disks"][0] = {"type": "ROOT", "diskSeq": 0,
                              "data": _volume("i-2-45-VM-root", "ROOT")}
    body["vm"]["nics"].append({**body["vm"]["nics"][0], "deviceId": 1, "defaultNic": False,
                               "mac": SECOND_MAC.upper(), "ip": "10.1.1.68"})
    await _ok(agent, names.START_COMMAND, body)
    await _start(agent, "i-2-46-VM")
    host = agent.emulator.host
    assert traffic.network_io(host, "i-2-45-VM", MAC, received_bytes=3 * MB, sent_bytes=2048)
    assert traffic.network_io(host, "i-2-45-VM", SECOND_MAC, received_bytes=512)
    before = agent.emulator.round_trips()
    key, answer = await agent.answer(NETWORK_STATS, {
        "vmNames": ["i-2-45-VM", "i-2-46-VM", "i-9-99-VM"], "hostGuid": "g",
        "hostName": "hv-1"})
    spent = agent.emulator.round_trips() - before
    assert (key, answer["result"], answer["hostName"]) == (
        "com.cloud.agent.api.GetVmNetworkStatsAnswer", True, "hv-1"), answer
    stats = answer["vmNetworkStatsMap"]
    assert sorted(stats) == ["i-2-45-VM", "i-2-46-VM"]  # a VM of no name is left out
    by_mac = {e["macAddress"]: (e["vmName"], e["bytesSent"], e["bytesReceived"])
              for e in stats["i-2-45-VM"]}
    assert by_mac == {MAC: ("i-2-45-VM", 2048, 3 * MB),  # sent: what the VM sent
                      SECOND_MAC: ("i-2-45-VM", 0, 512)}
    assert stats["i-2-46-VM"] == [{"vmName": "i-2-46-VM", "macAddress": MAC,
                                   "bytesSent": 0, "bytesReceived": 0}]  # no traffic yet
    assert (spent.calls, spent["invoke:GetSummaryInformation"], spent["query"]) == (3, 1, 2)
    assert traffic.network_io(host, "i-2-45-VM", MAC, received_bytes=MB)
    _, answer = await agent.answer(NETWORK_STATS, {"vmNames": ["i-2-45-VM"]})
    (again,) = [e for e in answer["vmNetworkStatsMap"]["i-2-45-VM"] if e["macAddress"] == MAC]
    assert (again["bytesSent"], again["bytesReceived"]) == (2048, 4 * MB)  # totals
    await ok(agent.emulator, await request_state(agent.emulator, await _vm_path(
        agent.emulator, "i-2-46-VM"), 3))
    _, answer = await agent.answer(NETWORK_STATS, {"vmNames": ["i-2-46-VM"]})
    assert answer["vmNetworkStatsMap"] == {"i-2-46-VM": []}  # off: no counters


async def test_network_stats_leave_out_an_adapter_whose_mac_hyper_v_chose(
    agent: Running,
) -> None:
    # An adapter added on the host gets a MAC from Hyper-V's pool, which no CloudStack NIC
    # has: the MS looks every reported MAC up among its NICs and, on one it does not know,
    # fails the network statistics of every VM of the host.
    cim = agent.emulator
    nic = await vm_with_nic(cim, "i-2-47-VM", MAC, running=False)
    added = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName="added on the host", StaticMacAddress=False)
    await ok(cim, await add(cim, nic.vm, [added]))
    await ok(cim, await request_state(cim, nic.vm, 2))
    (dynamic,) = [str(s["Address"]) for s in await devices(
        cim, nic.vm, "Msvm_SyntheticEthernetPortSettingData") if not s["StaticMacAddress"]]
    assert dynamic.startswith("00155D")
    assert traffic.network_io(agent.emulator.host, "i-2-47-VM", MAC, received_bytes=MB)
    _, answer = await agent.answer(NETWORK_STATS, {"vmNames": ["i-2-47-VM"]})
    assert answer["vmNetworkStatsMap"] == {"i-2-47-VM": [
        {"vmName": "i-2-47-VM", "macAddress": MAC, "bytesSent": 0, "bytesReceived": MB}]}


async def test_network_stats_report_a_nics_total_past_2_gib_as_the_java_long_it_is(
    agent: Running,
) -> None:
    # VmNetworkStatsEntry.bytesSent and bytesReceived are Java longs: an adapter of a VM
    # that has moved more than 2 GiB since it started is reported, not failed as past an int
    await _start(agent, "i-2-49-VM")
    many = 5 * 1024 * MB  # past 2**31 - 1, as an adapter passes within hours of traffic
    assert traffic.network_io(agent.emulator.host, "i-2-49-VM", MAC, received_bytes=many,
                              sent_bytes=many + 1)
    _, answer = await agent.answer(NETWORK_STATS, {"vmNames": ["i-2-49-VM"]})
    assert answer["result"], answer["details"]
    assert answer["vmNetworkStatsMap"] == {"i-2-49-VM": [
        {"vmName": "i-2-49-VM", "macAddress": MAC, "bytesSent": many + 1,
         "bytesReceived": many}]}


# --- budgets and locks --------------------------------------------------------------------


async def test_attach_dettach_and_iso_swap_stay_within_budget_when_caches_are_warm(
    agent: Running,
) -> None:
    await _start(agent, "i-2-40-VM", data_seq=1)
    await _ok(agent, ATTACH, {"vmName": "i-2-40-VM", "disk": _iso_disk("iso/2/205/tools.iso")})
    _volume_file(agent, "vol-8")
    cim = agent.emulator
    # the VM lookup (1 query) + the operation: attach 3 + 2 W, detach 2 + 1 W, swap 2 + 1 W
    for fqcn, disk, budget in (
        (ATTACH, _data_disk("vol-8", 5), (4, 2)),
        (DETTACH, _data_disk("vol-8", 5), (3, 1)),
        (ATTACH, _iso_disk("iso/2/205/other.iso"), (3, 1)),
        (DETTACH, _iso_disk("iso/2/205/other.iso"), (3, 1)),
    ):
        before = cim.round_trips()
        await _ok(agent, fqcn, {"vmName": "i-2-40-VM", "disk": disk})
        spent = cim.round_trips() - before
        assert (spent.calls, spent.waits) == budget, (fqcn, disk["type"], spent)


async def test_attach_handlers_share_the_vm_lock_table_when_agent_is_built(
    agent: Running,
) -> None:
    handlers = agent.agent.dispatch.handlers
    owners = [getattr(handlers[fqcn], "__self__", None)
              for fqcn in (ATTACH, DETTACH, ATTACH_ISO, names.STOP_COMMAND)]
    locks = {id(getattr(owner, "locks", None)) for owner in owners}
    assert None not in owners and len(locks) == 1


async def test_a_delete_of_a_volume_being_attached_waits_then_is_refused_for_the_running_vm(
    agent: Running,
) -> None:
    """A DeleteCommand of a volume that arrives while an attach of it to a running VM is
    under way waits for the attach (which holds the volume's file lock inside the VM's),
    then finds the VM holding the volume and keeps it. Without the file lock the delete
    removed the file between the attach's look at it and Hyper-V's medium, so the
    attach failed and the volume the management server was attaching was gone."""
    vm = await _start(agent, "i-2-47-VM", data_seq=1)
    path = _volume_file(agent, "vol-47")
    cim = agent.emulator
    cim.faults.slow_next_job("AddResourceSettings", 1.5)  # the attach's new drive
    added = cim.round_trips()["invoke:AddResourceSettings"]
    attaching = asyncio.create_task(agent.answer(
        ATTACH, {"vmName": "i-2-47-VM", "disk": _data_disk("vol-47", 2)}))
    for _ in range(500):  # until the attach is adding the drive: its locks are held
        if cim.round_trips()["invoke:AddResourceSettings"] > added:
            break
        await asyncio.sleep(0.01)
    assert not attaching.done()
    _, deleted = await agent.answer(names.DELETE_COMMAND, {"data": _volume("vol-47")})
    _, attached = await attaching
    assert attached["result"] is True, attached
    assert (deleted["result"], deleted["details"]) == (False, (
        f"DeleteCommand failed: {_file('vol-47')} is attached to the running VM "
        "i-2-47-VM; stop the VM or detach the volume first (the file was kept)")), deleted
    assert path.is_file()
    assert (await _layout(cim, vm))[("scsi", 2)] == ("disk", _file("vol-47"))


# --- paused and saved VMs -----------------------------------------------------------------


@pytest.mark.parametrize(("suspended", "word"), [(9, "paused"), (6, "saved")])
async def test_attach_and_dettach_fail_before_any_change_when_vm_is_paused_or_saved(
    agent: Running, suspended: int, word: str,
) -> None:
    # Hyper-V pauses a VM whose disk's volume runs out of space, and it adds and removes
    # no drive or medium of a paused or saved VM; the answer says so instead of passing
    # on a failed job, and the MS keeps its records as they were.
    cim = agent.emulator
    vm = await _start(agent, "i-2-40-VM", data_seq=1)
    await _ok(agent, ATTACH, {"vmName": "i-2-40-VM", "disk": _iso_disk("iso/2/205/tools.iso")})
    await ok(cim, await request_state(cim, vm, suspended))
    _volume_file(agent, "vol-2")
    before = await _layout(cim, vm)
    spent_before = cim.round_trips()
    for fqcn, disk in ((ATTACH, _data_disk("vol-2", 2)),
                       (DETTACH, _data_disk("i-2-40-VM-data", 1)),
                       (DETTACH, _iso_disk("iso/2/205/tools.iso")),
                       (DETTACH, {"type": "ISO", "diskSeq": 3, "data": {
                           names.TEMPLATE_OBJECT_TO: {"id": 205, "format": "ISO"}}})):
        key, answer = await agent.answer(fqcn, {"vmName": "i-2-40-VM", "disk": disk})
        assert (key, answer["result"]) == (fqcn.replace("Command", "Answer"), False), answer
        assert answer["details"].endswith(
            f"nothing was changed: VM i-2-40-VM is {word} on this host, and Hyper-V adds and "
            f"removes no device of a {word} VM; try again once the VM runs again or is "
            "stopped"), answer
    spent = cim.round_trips() - spent_before
    assert spent["invoke:AddResourceSettings"] == spent["invoke:RemoveResourceSettings"] == 0
    assert await _layout(cim, vm) == before
    assert (await cim.get(vm))["EnabledState"] == suspended
    # What needs no change answers as for any VM: the volume is already there.
    await _ok(agent, ATTACH, {"vmName": "i-2-40-VM", "disk": _data_disk("i-2-40-VM-data", 1)})
