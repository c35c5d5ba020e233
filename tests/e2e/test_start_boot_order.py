"""StartCommand over real HTTPS: the boot order of generation 2 (UEFI) VMs.

Hyper-V boots a generation 2 VM from its boot sources in the order the devices were
added; the bodies below list the ISO or a data disk before the boot device, so a VM
that boots right shows the agent reordered them.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bench.start_steps import STEP_BOOT_ORDER, STEP_NIC, Spent, start_steps

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.emulator.kit import devices, state

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
SHARE = "\\\\10.1.1.2\\secondary"
ISO_FILE = f"{SHARE}\\iso\\2\\205\\tools.iso"
MAC = "0200512C000E"  # the sample's NIC


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent with the emulated share \\\\10.1.1.2\\secondary holding an ISO."""
    iso = tmp_path / "secondary" / "iso" / "2" / "205"
    iso.mkdir(parents=True)
    (iso / "tools.iso").write_bytes(b"\0" * 4096)
    async with serving(config_with_shares(tmp_path, {SHARE: tmp_path / "secondary"})) as running:
        yield running


def _volume(running: Running, template: dict[str, Any], kind: str, seq: int,
            uuid: str) -> dict[str, Any]:
    """A ROOT or DATADISK volume ``C:\\pool\\<uuid>.vhdx`` (the file created)."""
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(folder / f"{uuid}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    disk = copy.deepcopy(template)
    disk.update(type=kind, diskSeq=seq)
    volume = disk["data"][VOLUME_TO]
    volume.update(uuid=uuid, volumeType=kind)
    volume["dataStore"][STORE_TO]["path"] = "C:\\pool"
    return disk


def _iso(path: str | None = "iso/2/205/tools.iso") -> dict[str, Any]:
    if path is None:
        return {"diskSeq": 1, "type": "ISO"}
    return {"diskSeq": 1, "type": "ISO", "data": {names.TEMPLATE_OBJECT_TO: {
        "path": path, "format": "ISO", "name": "tools", "id": 205,
        "imageDataStore": {names.NFS_TO: {
            "_url": "cifs://10.1.1.2/secondary?user=admin&password=s3cret", "_role": "Image"}},
    }}}


def _body(running: Running, name: str, disks: list[str], *, boot_type: str = "UEFI",
          iso_path: str | None = "iso/2/205/tools.iso") -> dict[str, Any]:
    """Sample 0005 as ``name`` with ``disks`` ("root", "data", "iso") in that order."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    template = body["vm"]["disks"][0]
    made = {
        "root": lambda: _volume(running, template, "ROOT", 0, f"root-{name}"),
        "data": lambda: _volume(running, template, "DATADISK", 2, f"data-{name}"),
        "iso": lambda: _iso(iso_path),
    }
    body["vm"].update(name=name, cpus=2, disks=[made[kind]() for kind in disks])
    if boot_type:
        body["vm"]["bootType"] = boot_type
    return body


async def _started(running: Running, body: dict[str, Any]) -> ObjectPath:
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    found = await running.emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", body["vm"]["name"])))
    assert len(found) == 1 and found[0].path is not None
    assert await state(running.emulator, found[0].path) == 2  # running
    return found[0].path


async def _boot_devices(cim: EmulatorCim, vm: ObjectPath) -> list[str]:
    """The VM's BootSourceOrder as the devices behind it (through Msvm_LogicalIdentity):
    ``disk <file>``, ``dvd <file or empty>`` or ``nic <MAC>``."""
    (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                         wql.eq("InstanceID", f"Microsoft:{vm.key('Name')}")))
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm, "Msvm_StorageAllocationSettingData")}
    found = []
    for text in vssd.strings("BootSourceOrder"):
        (device,) = await cim.associators(ObjectPath.parse(text),
                                          assoc_class="Msvm_LogicalIdentity")
        if device.class_name == "Msvm_SyntheticEthernetPortSettingData":
            found.append(f"nic {device['Address']}")
        else:
            kind = "dvd" if "DVD" in str(device["ResourceSubType"]) else "disk"
            assert device.path is not None
            found.append(f"{kind} {media.get(device.path, '')}".strip())
    return found


async def _measured(running: Running, body: dict[str, Any]) -> list[tuple[str, Spent]]:
    assert isinstance(running.agent.cim, CountingCim)
    with running.agent.cim.observe() as trips:
        await _started(running, body)
    return start_steps(trips).steps


async def test_start_boots_generation_2_from_the_root_disk_when_an_iso_is_listed_first(
    agent: Running,
) -> None:
    vm = await _started(agent, _body(agent, "i-2-60-VM", ["iso", "root"]))
    assert await _boot_devices(agent.emulator, vm) == [
        "disk C:\\pool\\root-i-2-60-VM.vhdx", f"dvd {ISO_FILE}", f"nic {MAC}"]


async def test_start_boots_generation_2_from_the_dvd_when_there_is_no_root_volume(
    agent: Running,
) -> None:
    vm = await _started(agent, _body(agent, "i-2-61-VM", ["data", "iso"]))
    assert await _boot_devices(agent.emulator, vm) == [
        f"dvd {ISO_FILE}", "disk C:\\pool\\data-i-2-61-VM.vhdx", f"nic {MAC}"]


async def test_start_keeps_the_order_devices_were_added_when_no_drive_can_boot(
    agent: Running,
) -> None:
    steps = await _measured(agent, _body(agent, "i-2-62-VM", ["data", "iso"], iso_path=None))
    assert STEP_BOOT_ORDER not in [kind for kind, _ in steps]
    vm = (await agent.emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", "i-2-62-VM"))))[0].path
    assert vm is not None
    assert await _boot_devices(agent.emulator, vm) == [
        "disk C:\\pool\\data-i-2-62-VM.vhdx", "dvd", f"nic {MAC}"]


async def test_boot_order_step_costs_2_calls_and_1_wait_after_the_nics_when_generation_is_2(
    agent: Running,
) -> None:
    steps = await _measured(agent, _body(agent, "i-2-63-VM", ["iso", "root"]))
    kinds = [kind for kind, _ in steps]
    assert kinds.index(STEP_BOOT_ORDER) == kinds.index(STEP_NIC) + 1
    ((spent,),) = [[s for kind, s in steps if kind == STEP_BOOT_ORDER]]
    assert (spent.calls, spent.waits, spent["invoke:ModifySystemSettings"]) == (2, 1, 1)


async def test_start_sets_no_boot_sources_when_generation_is_1(agent: Running) -> None:
    steps = await _measured(agent, _body(agent, "i-2-64-VM", ["iso", "root"], boot_type=""))
    assert STEP_BOOT_ORDER not in [kind for kind, _ in steps]
    assert await agent.emulator.query(wql.select("Msvm_BootSourceSettingData")) == []


async def test_start_fails_and_creates_nothing_when_generation_2_iso_escapes_the_share(
    agent: Running,
) -> None:
    body = _body(agent, "i-2-65-VM", ["iso", "root"], iso_path="../../etc/tools.iso")
    key, answer = await agent.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert "climbs out" in answer["details"] and "s3cret" not in answer["details"]
    assert await agent.emulator.query(wql.select("Msvm_ComputerSystem", wql.eq(
        "Caption", "Virtual Machine"))) == []
    assert await agent.emulator.query(wql.select("Msvm_BootSourceSettingData")) == []
