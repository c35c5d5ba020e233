"""StartCommand and ISO attach of a VM on a network whose user data comes from a config
drive (CloudStack's ConfigDrive provider), over real HTTPS with 4.22 bodies.

On such a network the MS builds the VM's user data, SSH key and password into an ISO on
the image store (``configdrive/<VM name>.iso``) and, while it prepares the VM's networks
(before its volumes and its CD), puts that ISO first in ``vm.disks`` as a DiskTO of type
ISO with ``diskSeq`` 4. The VM's own CD (an ISO the user attached, or an empty drive) is
the ISO disk with ``diskSeq`` 3, the one ISO attach and detach are about.
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
from tests.emulator.kit import devices

SHARE = "\\\\10.1.1.2\\secondary"
STORE_URL = "cifs://10.1.1.2/secondary?user=admin&password=s3cret"
LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
ROOT = "03164c49-b0a9-4db9-baf2-20e389d54e6a"  # the sample's root volume
CONFIG_DRIVE = f"{SHARE}\\configdrive\\i-2-5-VM.iso"
INSTALL_ISO = f"{SHARE}\\iso\\2\\205\\install.iso"
TOOLS_ISO = f"{SHARE}\\iso\\2\\206\\tools.iso"
RASD, SASD = "Msvm_ResourceAllocationSettingData", "Msvm_StorageAllocationSettingData"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
_SWITCH = '[emulator]\nswitches = ["vSwitch0"]'  # the sample NIC's traffic label


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent with the image store \\\\10.1.1.2\\secondary holding the VM's config
    drive and two ISOs, and the sample's root volume in the local pool."""
    store = tmp_path / "secondary"
    for relative in ("configdrive/i-2-5-VM.iso", "iso/2/205/install.iso",
                     "iso/2/206/tools.iso"):
        (store / relative).parent.mkdir(parents=True, exist_ok=True)
        (store / relative).write_bytes(b"CD001" * 100)
    config = config_with_shares(tmp_path, {SHARE: store}, _SWITCH, local_storage_path=LOCAL_POOL)
    async with serving(config) as running:
        pool = running.emulator.host.paths.local(LOCAL_POOL)
        pool.mkdir(parents=True, exist_ok=True)
        vhd.create(pool / f"{ROOT}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
        yield running


def _iso(seq: int, path: str | None) -> dict[str, Any]:
    """An ISO DiskTO as the MS writes it; ``path`` None: the CD with no ISO in it."""
    if path is None:
        return {"data": {names.TEMPLATE_OBJECT_TO: {"id": 0, "format": "ISO"}},
                "diskSeq": seq, "type": "ISO"}
    return {"data": {names.TEMPLATE_OBJECT_TO: {
        "path": path, "format": "ISO", "uuid": "a68c5325-84be-4f8b-ace1-0b33ee004759",
        "imageDataStore": {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}},
        "diskSeq": seq, "path": path, "type": "ISO"}


def _config_drive() -> dict[str, Any]:
    return _iso(4, "configdrive/i-2-5-VM.iso")


def _body(*, uefi: bool = False, root: bool = True,
          cd: str | None = None) -> dict[str, Any]:
    """Sample 15 with the config drive first in ``vm.disks``, as the MS orders them."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json"))
    root_disk, _ = body["vm"]["disks"]
    body["vm"]["disks"] = [_config_drive(), *([root_disk] if root else []), _iso(3, cd)]
    if uefi:
        body["vm"]["bootType"] = "UEFI"
    return body


async def _vm(cim: EmulatorCim) -> ObjectPath:
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", "i-2-5-VM")))
    assert vm.path is not None and int(str(vm["EnabledState"])) == 2  # running
    return vm.path


async def _dvds(cim: EmulatorCim, vm: ObjectPath) -> dict[tuple[str, int], str]:
    """Each DVD drive by (``ide0``/``ide1``/``scsi``, slot): the ISO in it, or ""."""
    rasd = await devices(cim, vm, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm, SASD)}
    buses = {c.path: f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi"
             for c in rasd if "Controller" in str(c["ResourceSubType"])}
    return {(buses[ObjectPath.parse(str(d["Parent"]))], int(str(d["AddressOnParent"]))):
            media.get(d.path, "") if d.path is not None else ""
            for d in rasd if d["ResourceSubType"] == DVD}


async def _boot_first(cim: EmulatorCim, vm: ObjectPath) -> str:
    """The medium of a generation 2 VM's first boot source."""
    (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                         wql.eq("InstanceID", f"Microsoft:{vm.key('Name')}")))
    (device,) = await cim.associators(ObjectPath.parse(vssd.strings("BootSourceOrder")[0]),
                                      assoc_class="Msvm_LogicalIdentity")
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm, SASD)}
    assert device.path is not None
    return media.get(device.path, "")


async def _started(agent: Running, body: dict[str, Any]) -> ObjectPath:
    key, answer = await agent.answer(names.START_COMMAND, body)
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    return await _vm(agent.emulator)


async def test_generation_1_vm_takes_its_config_drive_beside_its_empty_cd(
    agent: Running,
) -> None:
    vm = await _started(agent, _body())
    assert await _dvds(agent.emulator, vm) == {("ide1", 0): "", ("ide1", 1): CONFIG_DRIVE}


async def test_generation_1_vm_installs_from_its_iso_with_the_config_drive_beside_it(
    agent: Running,
) -> None:
    vm = await _started(agent, _body(root=False, cd="iso/2/205/install.iso"))
    assert await _dvds(agent.emulator, vm) == {("ide1", 0): INSTALL_ISO,
                                               ("ide1", 1): CONFIG_DRIVE}


async def test_generation_2_vm_boots_its_install_iso_not_its_config_drive(
    agent: Running,
) -> None:
    vm = await _started(agent, _body(uefi=True, root=False, cd="iso/2/205/install.iso"))
    dvds = await _dvds(agent.emulator, vm)
    assert dvds[("scsi", 3)] == INSTALL_ISO and CONFIG_DRIVE in dvds.values()
    assert await _boot_first(agent.emulator, vm) == INSTALL_ISO


@pytest.mark.parametrize("uefi", [False, True], ids=["generation 1", "generation 2"])
async def test_iso_attach_and_detach_leave_the_config_drive_in_its_drive(
    agent: Running, uefi: bool,
) -> None:
    vm = await _started(agent, _body(uefi=uefi))
    tools = _iso(3, "iso/2/206/tools.iso")
    for fqcn, disk in ((names.ATTACH_COMMAND, tools), (names.DETTACH_COMMAND, tools),
                       (names.ATTACH_COMMAND, tools), (names.DETTACH_COMMAND, _iso(3, None))):
        _, answer = await agent.answer(fqcn, {"vmName": "i-2-5-VM", "disk": disk})
        assert answer["result"] is True, answer
        assert list((await _dvds(agent.emulator, vm)).values()).count(CONFIG_DRIVE) == 1, fqcn
