"""StartCommand over real HTTPS, building VMs on the emulated host (protocol §9)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bench.start_steps import (
    STEP_CONTROLLERS,
    STEP_DEFINE,
    STEP_DISK,
    STEP_NIC,
    STEP_POWER_ON,
    STEP_REMOVE,
    StartSteps,
    start_steps,
)

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import (
    LOCAL_POOL,
    PRIVATE_IP,
    Running,
    config_with_shares,
    every_backend,
    serving,
)
from tests.emulator.kit import devices, ok, request_state, state, vm_names

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
ROOT_UUID = "19ae8e67-cb2c-4ab4-901e-e0b864272b59"
RASD = "Msvm_ResourceAllocationSettingData"
SASD = "Msvm_StorageAllocationSettingData"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
GEN1 = "Microsoft:Hyper-V:SubType:1"
GEN2 = "Microsoft:Hyper-V:SubType:2"

backend_kind = every_backend  # every test here runs on the emulator and over WinRM


# --- helpers ------------------------------------------------------------------------------


def _drive_c(running: Running) -> Path:
    return running.agent.config.agent.state_dir / "emulator" / "drives" / "C"


def _volume_file(running: Running, name: str) -> Path:
    """A real dynamic VHDX ``C:\\pool\\<name>.vhdx``; returns the local file."""
    folder = _drive_c(running) / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.vhdx"
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    return path


def _body(running: Running, name: str = "i-2-17-VM", *, iso: bool = True,
          make_disk: bool = True, **vm: Any) -> dict[str, Any]:
    """Sample 0005 with its ROOT volume in ``C:\\pool`` (the file created) and ``vm`` changes."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    body["vm"]["name"] = name
    body["vm"]["cpus"] = 2
    root = body["vm"]["disks"][0]["data"][VOLUME_TO]
    root["dataStore"][STORE_TO]["path"] = "C:\\pool"
    root["uuid"] = f"{ROOT_UUID[:-len(name)]}{name}"
    if make_disk:
        _volume_file(running, root["uuid"])
    if not iso:
        body["vm"]["disks"] = body["vm"]["disks"][:1]
    body["vm"].update(vm)
    return body


def _root(body: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = body["vm"]["disks"][0]["data"][VOLUME_TO]
    return root


async def _vm(cim: EmulatorCim, name: str) -> CimInstance | None:
    found = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)
                                       & wql.eq("Caption", "Virtual Machine")))
    assert len(found) <= 1
    return found[0] if found else None



async def _vssd(cim: EmulatorCim, vm: ObjectPath) -> CimInstance:
    (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                         wql.eq("InstanceID", f"Microsoft:{vm.key('Name')}")))
    return vssd


async def _drives(cim: EmulatorCim, vm: ObjectPath) -> dict[tuple[str, int], tuple[str, str]]:
    """Every drive by (bus, slot): bus ``ide0``/``ide1``/``scsi``; (kind, medium or "")."""
    rasd = await devices(cim, vm, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm, SASD)}
    buses = {c.path: (f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi")
             for c in rasd if c["ResourceSubType"] in (IDE, SCSI)}
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for drive in rasd:
        if drive["ResourceSubType"] in (DISK, DVD):
            bus = buses[ObjectPath.parse(str(drive["Parent"]))]
            kind = "disk" if drive["ResourceSubType"] == DISK else "dvd"
            medium = media.get(drive.path, "") if drive.path is not None else ""
            found[(bus, int(str(drive["AddressOnParent"])))] = (kind, str(medium))
    return found


async def _nics(cim: EmulatorCim, vm: ObjectPath) -> list[tuple[str, str, int | None]]:
    """(MAC, switch name, access VLAN) of each NIC of the VM."""
    nics = await devices(cim, vm, "Msvm_SyntheticEthernetPortSettingData")
    ports = await devices(cim, vm, "Msvm_EthernetPortAllocationSettingData")
    switches = {s.path: str(s["ElementName"]) for s in await cim.query(
        wql.select("Msvm_VirtualEthernetSwitch"))}
    found = []
    for nic in nics:
        (port,) = [p for p in ports if ObjectPath.parse(str(p["Parent"])) == nic.path]
        assert port.path is not None
        vlans = await cim.query(wql.select("Msvm_EthernetSwitchPortVlanSettingData",
                                           wql.starts_with("InstanceID",
                                                           port.path.key("InstanceID"))))
        switch = switches[ObjectPath.parse(str(port.strings("HostResource")[0]))]
        found.append((str(nic["Address"]), switch,
                      vlans[0].integer("AccessVlanId") if vlans else None))
    return found


async def _kvp_items(cim: EmulatorCim, vm: ObjectPath) -> dict[str, str]:
    (settings,) = await devices(cim, vm, "Msvm_KvpExchangeComponentSettingData")
    items = [cim.parse_embedded(text) for text in settings.strings("HostExchangeItems")]
    return {str(item["Name"]): str(item["Data"]) for item in items}


async def _started(running: Running, body: dict[str, Any]) -> ObjectPath:
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    vm = await _vm(running.emulator, body["vm"]["name"])
    assert vm is not None and vm.path is not None
    return vm.path


# --- building and starting ----------------------------------------------------------------


async def test_start_runs_gen1_vm_with_disk_dvd_and_nic_when_sample_body_is_sent(
    running: Running,
) -> None:
    cim = running.emulator
    body = _body(running)
    disk = _drive_c(running) / "pool" / f"{_root(body)['uuid']}.vhdx"
    size = disk.stat().st_size
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert answer["vm"]["name"] == "i-2-17-VM" and answer["vm"]["cpus"] == 2
    vm = await _vm(cim, "i-2-17-VM")
    assert vm is not None and vm.path is not None
    assert vm["EnabledState"] == 2
    vssd = await _vssd(cim, vm.path)
    assert vssd["VirtualSystemSubType"] == GEN1
    assert vssd["Notes"] == ("Created by CloudStack, do not edit.",
                             "8b030b6a-0243-440a-8cc5-45d08815ca11")
    (processor,) = await devices(cim, vm.path, "Msvm_ProcessorSettingData")
    (memory,) = await devices(cim, vm.path, "Msvm_MemorySettingData")
    assert (processor["VirtualQuantity"], memory["VirtualQuantity"]) == (2, 512)
    assert await _drives(cim, vm.path) == {
        ("ide0", 0): ("disk", f"C:\\pool\\{_root(body)['uuid']}.vhdx"),
        ("ide1", 0): ("dvd", ""),
    }
    assert await _nics(cim, vm.path) == [("0200512C000E", "External", 261)]
    assert disk.stat().st_size >= size


async def test_start_leaves_starting_and_stopping_the_vm_to_cloudstack_when_the_host_restarts(
    running: Running,
) -> None:
    # Hyper-V's defaults would restart the VM when the host boots (CloudStack's HA may
    # have started it elsewhere meanwhile) and save its memory when the host shuts down.
    path = await _started(running, _body(running))
    vssd = await _vssd(running.emulator, path)
    assert (vssd["AutomaticStartupAction"], vssd["AutomaticShutdownAction"]) == (2, 4)


async def test_start_rounds_memory_up_to_2_mb_when_offering_has_an_odd_number_of_mb(
    running: Running,
) -> None:
    # Hyper-V refuses memory that is not a multiple of 2 MB; a custom offering may ask
    # for 1025 MB.
    body = _body(running)
    body["vm"].update(minRam=1025 << 20, maxRam=1025 << 20)
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert "memory rounded up from 1025 MB to 1026 MB" in answer["details"]
    vm = await _vm(running.emulator, "i-2-17-VM")
    assert vm is not None and vm.path is not None and vm["EnabledState"] == 2
    (memory,) = await devices(running.emulator, vm.path, "Msvm_MemorySettingData")
    assert (memory["VirtualQuantity"], memory["Reservation"], memory["Limit"],
            memory["DynamicMemoryEnabled"]) == (1026, 1026, 1026, False)


async def test_start_gives_dynamic_memory_from_min_ram_to_max_ram_when_min_ram_is_less(
    running: Running,
) -> None:
    # A cluster with mem.overprovisioning.factor 4: the management server sends
    # minRam = maxRam / 4 and counts the VM for that much of the host's memory.
    body = _body(running, minRam=256 << 20, maxRam=1024 << 20)
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert answer["details"] == "dynamic memory: 256 MB at start and at least, up to 1024 MB"
    vm = await _vm(running.emulator, "i-2-17-VM")
    assert vm is not None and vm.path is not None and vm["EnabledState"] == 2
    (memory,) = await devices(running.emulator, vm.path, "Msvm_MemorySettingData")
    assert (memory["DynamicMemoryEnabled"], memory["Reservation"], memory["VirtualQuantity"],
            memory["Limit"]) == (True, 256, 256, 1024)
    _, stats = await running.answer(names.GET_VM_STATS_COMMAND, {
        "vmNames": ["i-2-17-VM"], "hostGuid": "h", "hostName": "h", "contextMap": {}})
    entry = stats["vmStatsMap"]["i-2-17-VM"]
    # what the VM holds now (its startup memory), and what its guest has free of it
    assert entry["memoryKBs"] == entry["targetMemoryKBs"] == 256 * 1024
    assert 0 < entry["intFreeMemoryKBs"] < entry["memoryKBs"]


async def test_start_runs_every_vm_placed_by_their_min_ram_when_memory_is_overprovisioned(
    tmp_path: Path,
) -> None:
    # The management server counts a host of 1536 MB as 3072 MB at factor 2, and places
    # three VMs of 1024 MB there, each sent with minRam 512 MB: with static memory of
    # maxRam the second would not start.
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[emulator]\nmemory_mb = 1536\n")
    config = load_config(config_file, state_dir=tmp_path / "state", backend="emulator",
                         private_ip=PRIVATE_IP, local_storage_path=LOCAL_POOL)
    async with serving(config) as agent:
        for n in (40, 41, 42):
            await _started(agent, _body(agent, f"i-2-{n}-VM", iso=False,
                                        minRam=512 << 20, maxRam=1024 << 20))
        _, host = await agent.answer(names.GET_HOST_STATS_COMMAND, {
            "hostGuid": "h", "hostName": "h", "hostId": 1, "contextMap": {}})
        assert host["hostStats"]["freeMemoryKBs"] == 0
        key, answer = await agent.answer(START, _body(agent, "i-2-43-VM", iso=False,
                                                     minRam=512 << 20, maxRam=1024 << 20))
        assert (key, answer["result"]) == (START_ANSWER, False), answer
        assert await vm_names(agent.emulator) == {"i-2-40-VM", "i-2-41-VM", "i-2-42-VM"}


async def test_start_keeps_memory_static_when_a_system_vm_has_min_ram_below_max_ram(
    running: Running,
) -> None:
    # As CloudStack's KVM agent gives a system VM maxRam whatever minRam is.
    body = _body(running, "r-7-VM", minRam=256 << 20, maxRam=512 << 20)
    await _started(running, body)
    vm = await _vm(running.emulator, "r-7-VM")
    assert vm is not None and vm.path is not None
    (memory,) = await devices(running.emulator, vm.path, "Msvm_MemorySettingData")
    assert (memory["DynamicMemoryEnabled"], memory["Reservation"], memory["VirtualQuantity"],
            memory["Limit"]) == (False, 512, 512, 512)


async def test_start_changes_nothing_when_vm_already_runs(running: Running) -> None:
    cim = running.emulator
    path = await _started(running, _body(running))
    drives = await _drives(cim, path)
    before = cim.round_trips()
    key, answer = await running.answer(START, _body(running, make_disk=False, cpus=8))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert answer["vm"]["name"] == "i-2-17-VM"
    assert (spent.calls, spent["query"]) == (1, 1)  # the lookup only
    vm = await _vm(cim, "i-2-17-VM")
    assert vm is not None and vm.path == path and vm["EnabledState"] == 2
    assert await _drives(cim, path) == drives


async def test_start_recreates_vm_and_keeps_its_disk_when_vm_exists_stopped(
    running: Running,
) -> None:
    cim = running.emulator
    old = await _started(running, _body(running))
    await ok(cim, await request_state(cim, old, 3))
    assert await state(cim, old) == 3
    body = _body(running, make_disk=False, cpus=4)
    new = await _started(running, body)
    assert new.key("Name") != old.key("Name")
    (processor,) = await devices(cim, new, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 4
    assert (_drive_c(running) / "pool" / f"{_root(body)['uuid']}.vhdx").is_file()
    assert await vm_names(cim) == {"i-2-17-VM"}


# --- the guest's SMBIOS identity ----------------------------------------------------------

SAMPLE_UUID = "8b030b6a-0243-440a-8cc5-45d08815ca11"  # sample 0005's vm.uuid


def _braced(guid: str) -> str:
    return f"{{{guid.upper()}}}"


@pytest.mark.parametrize(("name", "vm"), [
    ("i-2-17-VM", {}), ("r-7-VM", {"type": "DomainRouter"}),
    ("i-2-18-VM", {"bootType": "UEFI"}),
], ids=["user-vm", "router", "generation-2"])
async def test_start_gives_the_guest_the_vm_uuid_as_its_smbios_system_uuid(
    running: Running, name: str, vm: dict[str, Any],
) -> None:
    # As on KVM, whose domain UUID is the VM's uuid: cloud-init, the Kubernetes provider
    # and inventory tools read it in the guest (dmidecode -s system-uuid).
    key, answer = await running.answer(START, _body(running, name, **vm))
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert "uuid" not in (answer.get("details") or "")
    found = await _vm(running.emulator, name)
    assert found is not None and found.path is not None
    assert (await _vssd(running.emulator, found.path))["BIOSGUID"] == _braced(SAMPLE_UUID)


@pytest.mark.parametrize("again", [SAMPLE_UUID, None, "", "i-2-17-VM"],
                         ids=["same-uuid", "no-uuid", "blank-uuid", "uuid-no-guid"])
async def test_start_keeps_the_guest_smbios_uuid_when_a_stopped_vm_is_recreated(
    running: Running, again: str | None,
) -> None:
    cim = running.emulator
    old = await _started(running, _body(running))
    await ok(cim, await request_state(cim, old, 3))
    body = _body(running, make_disk=False)
    if again is None:
        del body["vm"]["uuid"]
    else:
        body["vm"]["uuid"] = again
    new = await _started(running, body)
    assert new.key("Name") != old.key("Name")
    assert (await _vssd(cim, new))["BIOSGUID"] == _braced(SAMPLE_UUID)


@pytest.mark.parametrize(("uuid", "told"), [
    (None, "vm.uuid is missing"), ("", "vm.uuid is missing"),
    ("12345", "vm.uuid '12345' is not a GUID"),
    (SAMPLE_UUID.replace("-", ""), "is not a GUID"),
], ids=["missing", "blank", "number", "no-hyphens"])
async def test_start_lets_hyperv_make_the_smbios_uuid_when_vm_uuid_is_no_guid(
    running: Running, uuid: str | None, told: str,
) -> None:
    # The management server always sends the uuid; a body without one still starts its
    # VM, as CloudStack's KVM agent then takes a random UUID, and the answer says so.
    body = _body(running)
    if uuid is None:
        del body["vm"]["uuid"]
    else:
        body["vm"]["uuid"] = uuid
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert told in answer["details"], answer["details"]
    found = await _vm(running.emulator, "i-2-17-VM")
    assert found is not None and found.path is not None
    made = str((await _vssd(running.emulator, found.path))["BIOSGUID"])
    assert made.startswith("{") and made != _braced(SAMPLE_UUID)


async def test_start_puts_root_disk_on_scsi_when_boot_type_is_uefi(running: Running) -> None:
    cim = running.emulator
    body = _body(running, "i-2-18-VM", bootType="UEFI")
    path = await _started(running, body)
    assert (await _vssd(cim, path))["VirtualSystemSubType"] == GEN2
    assert await _drives(cim, path) == {
        ("scsi", 0): ("disk", f"C:\\pool\\{_root(body)['uuid']}.vhdx"),
        ("scsi", 1): ("dvd", ""),
    }


async def test_start_puts_data_disk_on_scsi_at_disk_seq_when_generation_is_1(
    running: Running,
) -> None:
    cim = running.emulator
    body = _body(running, "i-2-19-VM", iso=False)
    data = copy.deepcopy(body["vm"]["disks"][0])
    data["type"] = "DATADISK"
    data["diskSeq"] = 3
    data["data"][VOLUME_TO].update(uuid="data-19", volumeType="DATADISK")
    _volume_file(running, "data-19")
    body["vm"]["disks"].append(data)
    path = await _started(running, body)
    assert await _drives(cim, path) == {
        ("ide0", 0): ("disk", f"C:\\pool\\{_root(body)['uuid']}.vhdx"),
        ("scsi", 3): ("disk", "C:\\pool\\data-19.vhdx"),
    }


async def test_start_pushes_boot_args_to_kvp_when_vm_is_a_system_vm(running: Running) -> None:
    args = " template=domP name=r-4-VM eth0ip=10.1.1.1 type=router"
    path = await _started(running, _body(running, "r-4-VM", type="DomainRouter",
                                         bootArgs=args))
    assert await _kvp_items(running.emulator, path) == {"cloudstack-vm-userdata": args}


async def test_start_pushes_no_boot_args_when_vm_has_none(running: Running) -> None:
    path = await _started(running, _body(running, "i-2-20-VM", bootArgs=""))
    assert await _kvp_items(running.emulator, path) == {}


async def test_start_pushes_boot_args_when_user_vm_is_a_cks_node(running: Running) -> None:
    # The MS gives boot arguments to the User VMs it builds from the system VM template
    # (CKS nodes, Shared FS VMs); their init.sh reads them from the KVP pool.
    args = " template=domP name=k8s-node-1 type=cksnode eth0ip=10.0.0.31"
    path = await _started(running, _body(running, "i-2-21-VM", type="User", bootArgs=args))
    assert await _kvp_items(running.emulator, path) == {"cloudstack-vm-userdata": args}


@pytest.fixture
async def with_share(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent with the emulated share \\\\10.1.1.2\\secondary (holding an ISO)."""
    iso = tmp_path / "secondary" / "iso" / "2" / "205"
    iso.mkdir(parents=True)
    (iso / "tools.iso").write_bytes(b"\0" * 4096)
    shares = {"\\\\10.1.1.2\\secondary": tmp_path / "secondary"}
    async with serving(config_with_shares(tmp_path, shares)) as running:
        yield running


def _iso_disk(path: str) -> dict[str, Any]:
    return {"diskSeq": 1, "type": "ISO", "data": {names.TEMPLATE_OBJECT_TO: {
        "path": path, "format": "ISO", "name": "tools", "id": 205,
        "imageDataStore": {names.NFS_TO: {
            "_url": "cifs://10.1.1.2/secondary?user=admin&password=s3cret", "_role": "Image"}},
    }}}


async def test_start_inserts_iso_from_image_store_when_iso_disk_has_data(
    with_share: Running,
) -> None:
    body = _body(with_share, "i-2-21-VM")
    body["vm"]["disks"][1] = _iso_disk("iso/2/205/tools.iso")
    path = await _started(with_share, body)
    drives = await _drives(with_share.emulator, path)
    assert drives[("ide1", 0)] == ("dvd", "\\\\10.1.1.2\\secondary\\iso\\2\\205\\tools.iso")


async def test_start_fails_without_secret_when_iso_path_escapes_the_share(
    with_share: Running,
) -> None:
    body = _body(with_share, "i-2-22-VM")
    body["vm"]["disks"][1] = _iso_disk("../../etc/tools.iso")
    key, answer = await with_share.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert "climbs out" in answer["details"] and "s3cret" not in answer["details"]
    assert await vm_names(with_share.emulator) == set()


async def test_start_with_an_iso_on_an_image_store_that_cannot_be_reached_says_so(
    with_share: Running, tmp_path: Path,
) -> None:
    """A share that went away reads as a path not found: the answer names the image store
    as what cannot be reached rather than the ISO as missing, and no VM is made; once the
    share is back the same StartCommand starts the VM."""
    body = _body(with_share, "i-2-23-VM")
    body["vm"]["disks"][1] = _iso_disk("iso/2/205/tools.iso")
    (tmp_path / "secondary").rename(tmp_path / "away")  # the share cannot be reached
    key, answer = await with_share.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert "image store's root \\\\10.1.1.2\\secondary," in answer["details"], answer
    assert "does not exist or cannot be reached" in answer["details"], answer
    assert await vm_names(with_share.emulator) == set()
    (tmp_path / "away").rename(tmp_path / "secondary")  # back
    await _started(with_share, body)


async def test_vms_mounting_one_iso_start_side_by_side(
    with_share: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two StartCommands whose VMs mount the same ISO (a template's ISO, the system VM
    ISO) build their VMs together: each holds the ISO's file lock shared. Held alone, the
    second start waited for the whole build of the first (routers and console proxies of
    a zone coming up after an outage queued one by one behind the system VM ISO)."""
    cim = with_share.emulator
    defining, release = asyncio.Event(), asyncio.Event()
    invoke = cim.invoke

    async def held(path: ObjectPath, method: str, params: Any = None) -> Any:
        if method == "DefineSystem" and not defining.is_set():
            defining.set()  # the first start is building, its locks held: it waits here
            await release.wait()
        return await invoke(path, method, params)

    monkeypatch.setattr(cim, "invoke", held)
    bodies = [_body(with_share, name) for name in ("i-2-24-VM", "i-2-25-VM")]
    for body in bodies:
        body["vm"]["disks"][1] = _iso_disk("iso/2/205/tools.iso")
    first = asyncio.create_task(with_share.answer(START, bodies[0]))
    try:
        await asyncio.wait_for(defining.wait(), 10)
        second = asyncio.create_task(with_share.answer(START, bodies[1]))
        done, _ = await asyncio.wait({second}, timeout=10)
        assert done, "the second start waited for the first's build"
    finally:
        release.set()
    for task in (first, second):
        key, answer = await task
        assert (key, answer["result"]) == (START_ANSWER, True), answer
    assert await vm_names(cim) == {"i-2-24-VM", "i-2-25-VM"}


# --- refusals: nothing created ------------------------------------------------------------


def _escaping(body: dict[str, Any]) -> None:
    _root(body)["path"] = "..\\..\\x"


def _missing_file(body: dict[str, Any]) -> None:
    _root(body)["uuid"] = "not-there"


def _unknown_switch(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["name"] = "Nowhere"


def _bad_vlan(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["broadcastUri"] = "vlan://two"


def _vlan_out_of_range(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["broadcastUri"] = "vlan://4095"


def _superscript_vlan(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["broadcastUri"] = "vlan://\u00b2"


def _arabic_indic_vlan(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["broadcastUri"] = "vlan://\u0661\u0662"


def _vlan_of_5000_digits(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["broadcastUri"] = "vlan://" + "1" * 5000


def _bad_mac(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["mac"] = "02:00:51:2c:00"


def _negative_cpus(body: dict[str, Any]) -> None:
    body["vm"]["cpus"] = -1


def _long_boot_args(body: dict[str, Any]) -> None:
    body["vm"].update(type="ConsoleProxy", bootArgs="a" * 1024)


def _no_memory(body: dict[str, Any]) -> None:
    body["vm"]["maxRam"] = 0


def _negative_min_ram(body: dict[str, Any]) -> None:
    body["vm"]["minRam"] = -1


def _min_ram_above_max_ram(body: dict[str, Any]) -> None:
    body["vm"].update(minRam=1024 << 20, maxRam=512 << 20)


def _min_ram_below_32_mb(body: dict[str, Any]) -> None:
    body["vm"].update(minRam=16 << 20, maxRam=512 << 20)


def _max_ram_below_32_mb(body: dict[str, Any]) -> None:
    body["vm"].update(minRam=16 << 20, maxRam=16 << 20)


def _more_memory_than_generation_1_takes(body: dict[str, Any]) -> None:
    body["vm"].update(minRam=(1 << 40) + (2 << 20), maxRam=(1 << 40) + (2 << 20))


def _negative_device_id(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["deviceId"] = -4


def _broadcast_mac(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["mac"] = "ff:ff:ff:ff:ff:ff"


def _multicast_mac(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["mac"] = "01:00:5e:00:00:fb"


def _zero_mac(body: dict[str, Any]) -> None:
    body["vm"]["nics"][0]["mac"] = "00:00:00:00:00:00"


def _speed_of_a_million_cores(body: dict[str, Any]) -> None:
    body["vm"]["speed"] = 1 << 30  # the emulated host's cores run at 2400 MHz


def _max_speed_of_a_million_cores(body: dict[str, Any]) -> None:
    body["vm"].update(maxSpeed=1 << 30, limitCpuUse=True)


def _more_nics_than_a_vm_takes(body: dict[str, Any]) -> None:
    nic = body["vm"]["nics"][0]
    body["vm"]["nics"] = [{**nic, "deviceId": i, "mac": f"02:00:00:00:00:{i:02x}"}
                          for i in range(65)]


def _disk_seq_past_cloudstacks_numbers(body: dict[str, Any]) -> None:
    body["vm"]["disks"].append({**body["vm"]["disks"][0], "type": "DATADISK", "diskSeq": 66})


def _more_disks_than_slots(body: dict[str, Any]) -> None:
    data = {**body["vm"]["disks"][0], "type": "DATADISK"}
    body["vm"]["disks"] += [{**data, "diskSeq": i} for i in range(70)]


@pytest.mark.parametrize(("change", "expected"), [
    (_negative_cpus, "cpus must be at least 1"),
    (_no_memory, "maxRam"),
    (_negative_min_ram, "vm.minRam -1 bytes is not a memory size"),
    (_min_ram_above_max_ram, "vm.minRam 1073741824 bytes is more than vm.maxRam 536870912 "
                             "bytes"),
    (_min_ram_below_32_mb, "vm.minRam 16777216 bytes is less than 32 MB, the least memory "
                           "Hyper-V gives a VM"),
    (_max_ram_below_32_mb, "vm.maxRam 16777216 bytes is less than 32 MB, the least memory "
                           "Hyper-V gives a VM"),
    (_more_memory_than_generation_1_takes, "vm.maxRam 1099513724928 bytes is not a memory "
                                           "size Hyper-V gives a generation 1 VM"),
    (_negative_device_id, "NIC -4: deviceId must not be negative"),
    (_broadcast_mac, "NIC 0: mac: MAC address 'ff:ff:ff:ff:ff:ff' is a multicast"),
    (_multicast_mac, "'01:00:5e:00:00:fb' is a multicast"),
    (_zero_mac, "NIC 0: mac: MAC address '00:00:00:00:00:00' is all zeros"),
    (_speed_of_a_million_cores, "vm.speed 1073741824 MHz is more than 100 cores"),
    (_max_speed_of_a_million_cores, "vm.maxSpeed 1073741824 MHz is more than 100 cores"),
    (_more_nics_than_a_vm_takes, "vm.nics has 65 entries; a VM takes at most 64"),
    (_more_disks_than_slots, "vm.disks has 72 entries; a VM takes at most 70"),
    (_disk_seq_past_cloudstacks_numbers, "disk DATADISK: diskSeq 66 is outside 0..65, the "
                                         "device numbers CloudStack gives a Hyper-V VM's disks"),
    (_unknown_switch, "'Nowhere'"),
    (_escaping, "climbs out"),
    (_missing_file, "not-there.vhdx does not exist"),
    (_bad_vlan, "vlan://two"),
    (_vlan_out_of_range, "VLAN 4095 is outside"),
    (_superscript_vlan, "is not vlan://<id>"),
    (_arabic_indic_vlan, "is not vlan://<id>"),
    (_vlan_of_5000_digits, "VLAN 1111111111111111111111111111111111111111... (5000 digits) "
                           "is outside 1..4094"),
    (_bad_mac, "MAC address"),
    (_long_boot_args, "1024 characters"),
])
async def test_start_fails_and_creates_nothing_when_input_is_invalid(
    running: Running, change: Any, expected: str,
) -> None:
    cim = running.emulator
    body = _body(running)
    change(body)
    before = cim.round_trips()
    key, answer = await running.answer(START, body)
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert answer["details"].startswith("StartCommand failed: ")
    assert expected in answer["details"], answer["details"]
    assert answer["vm"]["name"] == "i-2-17-VM"
    assert spent["invoke:DefineSystem"] == 0
    assert await vm_names(cim) == set()


_TB = 1 << 40


@pytest.mark.parametrize(("host", "vm", "expected"), [
    # more vCPUs than the host's logical processors (16): Hyper-V refuses the count
    ("", {"cpus": 17}, "vm.cpus 17 is more than this host's 16 logical processors"),
    ("cpus = 512\n", {"cpus": 65},
     "vm.cpus 65 is more than Hyper-V gives a generation 1 VM on Windows Server 2019: at most "
     "64 virtual processors"),
    ("cpus = 512\n", {"cpus": 251, "bootType": "UEFI"},
     "generation 2 VM on Windows Server 2019: at most 250 virtual processors"),
    ('cpus = 512\nos_version = "10.0.14393"\n', {"cpus": 241, "bootType": "UEFI"},
     "generation 2 VM on Windows Server 2016: at most 240 virtual processors"),
    ('cpus = 512\nos_version = "6.3.9600"\n', {"cpus": 65, "bootType": "UEFI"},
     "generation 2 VM on Windows Server 2012 R2: at most 64 virtual processors"),
    ('os_version = "10.0.14393"\n', {"maxRam": 12 * _TB + (2 << 20), "bootType": "UEFI"},
     "generation 2 VM on Windows Server 2016: 0 to 12582912 MB (12 TB"),
    ("", {"maxRam": 12 * _TB + (2 << 20), "minRam": 1 << 30, "bootType": "UEFI"},
     "vm.maxRam 13194141630464 bytes is not a memory size Hyper-V gives a generation 2 VM "
     "on Windows Server 2019"),
    ('os_version = "10.0.20348"\n', {"maxRam": _TB + (2 << 20)},
     "generation 1 VM on Windows Server 2022: 0 to 1048576 MB (1 TB"),
], ids=["logical-processors", "gen1-vcpus", "gen2-vcpus-2019", "gen2-vcpus-2016",
        "gen2-vcpus-2012r2", "gen2-memory-2016", "gen2-dynamic-memory-2019",
        "gen1-memory-2022"])
async def test_start_refuses_before_defining_a_vm_hyperv_cannot_run_on_this_host(
    tmp_path: Path, host: str, vm: dict[str, Any], expected: str,
) -> None:
    """vCPUs or memory beyond what Hyper-V gives a VM of its generation on the host's
    release ("Plan for Hyper-V scalability"), or more vCPUs than the host has logical
    processors: a failed answer naming the field and the limit, and no VM was made
    (Hyper-V would refuse it only after DefineSystem)."""
    config_file = tmp_path / "agent.toml"
    config_file.write_text(f"[emulator]\n{host}")
    config = load_config(config_file, state_dir=tmp_path / "state", backend="emulator",
                         private_ip=PRIVATE_IP, local_storage_path=LOCAL_POOL)
    async with serving(config) as agent:
        cim = agent.emulator
        before = cim.round_trips()
        key, answer = await agent.answer(START, _body(agent, iso=False, **vm))
        spent = cim.round_trips() - before
        assert (key, answer["result"]) == (START_ANSWER, False), answer
        assert expected in answer["details"], answer["details"]
        assert (spent["invoke:DefineSystem"], spent.waits) == (0, 0)
        assert await vm_names(cim) == set()


async def test_start_reads_no_host_facts_when_ready_command_has_read_them(
    running: Running,
) -> None:
    """The host's release and logical processors, which bound a VM's size, are kept from
    the ReadyCommand the management server sends on connecting: the first StartCommand
    queries neither again."""
    _, ready = await running.answer("com.cloud.agent.api.ReadyCommand", {"hostId": 1})
    assert ready["result"] is True, ready
    assert isinstance(running.agent.cim, CountingCim)
    with running.agent.cim.observe() as trips:
        await _started(running, _body(running, "i-2-50-VM", iso=False))
    facts = [trip for trip in trips if "Win32_" in trip.target]
    assert facts == []


async def test_start_fails_naming_vm_when_vm_is_missing(running: Running) -> None:
    body = _body(running)
    del body["vm"]
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, False)
    assert "vm" in answer["details"]
    assert await vm_names(running.emulator) == set()


async def test_start_removes_vm_and_names_step_when_a_job_fails_mid_start(
    running: Running,
) -> None:
    cim = running.emulator
    body = _body(running)
    disk = _drive_c(running) / "pool" / f"{_root(body)['uuid']}.vhdx"
    # the first AddResourceSettings job adds the SCSI controller, the next the ROOT drive
    cim.faults.fail_next_job("AddResourceSettings", 32768, "drive broke", after=1)
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert answer["details"].startswith("StartCommand failed: attaching disk ROOT "), answer
    assert "drive broke" in answer["details"]
    assert await vm_names(cim) == set()
    assert disk.is_file()
    again = await _started(running, _body(running, make_disk=False))
    assert again is not None


async def test_start_removes_vm_and_names_step_when_the_nic_fails(running: Running) -> None:
    cim = running.emulator
    cim.faults.fail_next_job("AddFeatureSettings", 32768, "no vlan today")
    key, answer = await running.answer(START, _body(running))
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert "adding NIC 0 (02:00:51:2c:00:0e)" in answer["details"]
    assert "no vlan today" in answer["details"]
    assert await vm_names(cim) == set()


async def _linked_clone(running: Running, body: dict[str, Any], template: str) -> Path:
    """The root volume of the StartCommand ``body`` made by a CopyCommand as a linked
    clone of the template ``template`` (a ``.vhdx`` in the volume's pool); its file."""
    store = _root(body)["dataStore"]
    volume = _root(body)["uuid"]
    key, made = await running.answer(names.COPY_COMMAND, {
        "srcTO": {names.TEMPLATE_OBJECT_TO: {
            "path": template, "uuid": template, "id": 206, "format": "VHDX",
            "imageDataStore": store, "hypervisorType": "Hyperv", "name": template}},
        "destTO": {VOLUME_TO: {"uuid": volume, "volumeType": "ROOT", "dataStore": store,
                               "name": "ROOT-17", "format": "VHDX", "volumeId": 10, "id": 10,
                               "provisioningType": "THIN"}},
        "wait": 10800})
    assert (key, made["result"]) == (names.COPY_CMD_ANSWER, True), made
    return _drive_c(running) / "pool" / f"{volume}.vhdx"


async def _start_refused(running: Running, body: dict[str, Any]) -> tuple[str, RoundTrips]:
    """The details of the failed StartAnswer to ``body``, refused as the VM started, and
    the round trips it cost."""
    before = running.emulator.round_trips()
    key, answer = await running.answer(START, body)
    spent = running.emulator.round_trips() - before
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    details: str = answer["details"]
    assert details.startswith("StartCommand failed: starting the VM: "), details
    return details, spent


@pytest.mark.parametrize(("change", "expected", "why"), [
    ("removed", "The chain of virtual hard disks is broken. The system cannot locate the "
                "parent virtual hard disk for the differencing disk.",
     "which cannot be found"),
    ("replaced", "The chain of virtual hard disks is corrupted. There is a mismatch in the "
                 "identifiers of the parent virtual hard disk and differencing disk.",
     "which is not the disk it was made from (replaced or written since)"),
])
async def test_start_fails_naming_the_volume_when_its_linked_clones_template_is_gone_or_changed(
    running: Running, change: str, expected: str, why: str,
) -> None:
    """A root volume that is a linked clone of a template in its pool, whose template was
    removed or replaced behind the agent's back (by hand, or by a tool that does not know
    of the clone): Hyper-V does not start the VM. The answer fails naming the volume,
    Windows' words for its broken parent and the template file it stands on (Windows'
    words name no parent: the agent asks Hyper-V to validate the volume, one call and one
    wait on this failure only, which names the link of its chain that breaks), and no VM
    is left behind; the volume is kept."""
    cim = running.emulator
    pool = _drive_c(running) / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    body = _body(running, iso=False, make_disk=False)
    volume = _root(body)["uuid"]
    template = pool / "tmpl-1.vhdx"
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    clone = await _linked_clone(running, body, "tmpl-1")
    assert vhd.read_info(clone).parent_path == "C:\\pool\\tmpl-1.vhdx"
    template.unlink()
    if change == "replaced":  # a template of the same name made anew
        vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)

    details, spent = await _start_refused(running, body)
    assert f"C:\\pool\\{volume}.vhdx" in details, details
    assert expected in details, details
    assert details.endswith(f"; the disk C:\\pool\\{volume}.vhdx stands on the parent "
                            f"C:\\pool\\tmpl-1.vhdx, {why}"), details
    assert (spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (1, 0), spent
    assert await vm_names(cim) == set()
    assert clone.is_file()


@pytest.mark.parametrize(("change", "expected", "why"), [
    ("removed", "The chain of virtual hard disks is broken. The system cannot locate the "
                "parent virtual hard disk for the differencing disk.",
     "which cannot be found"),
    ("replaced", "The chain of virtual hard disks is corrupted. There is a mismatch in the "
                 "identifiers of the parent virtual hard disk and differencing disk.",
     "which is not the disk it was made from (replaced or written since)"),
])
async def test_start_fails_naming_the_grandparent_link_when_a_template_s_own_base_changed(
    running: Running, change: str, expected: str, why: str,
) -> None:
    """A root volume that is a linked clone of a template that is itself a differencing
    disk of a base image (a chain two deep), whose base was removed or replaced by another
    disk of the same name: Hyper-V does not start the VM, and its words name no file. The
    answer names the link that broke, the template standing on the base, not the volume
    standing on the template, which is there and unchanged (a disk's settings cannot tell
    a replaced grandparent: only Hyper-V's validation of the chain names it, one call and
    one wait on this failure only); no VM is left behind and every file is kept."""
    cim = running.emulator
    pool = _drive_c(running) / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    body = _body(running, iso=False, make_disk=False)
    base = pool / "base-1.vhdx"
    template = pool / "tmpl-2.vhdx"
    vhd.create(base, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0, parent=base,
               parent_locator="C:\\pool\\base-1.vhdx", locator="C:\\pool\\tmpl-2.vhdx")
    clone = await _linked_clone(running, body, "tmpl-2")
    assert vhd.read_info(clone).parent_path == "C:\\pool\\tmpl-2.vhdx"
    assert vhd.read_info(template).parent_path == "C:\\pool\\base-1.vhdx"
    base.unlink()
    if change == "replaced":  # a base of the same name made anew
        vhd.create(base, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)

    details, spent = await _start_refused(running, body)
    assert expected in details, details
    assert details.endswith("; the disk C:\\pool\\tmpl-2.vhdx stands on the parent "
                            f"C:\\pool\\base-1.vhdx, {why}"), details
    assert (spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (1, 0), spent
    assert await vm_names(cim) == set()
    assert clone.is_file() and template.is_file()


@pytest.mark.parametrize("depth", ["template", "base under the template"])
async def test_start_fails_naming_the_parent_that_is_no_disk_by_its_host_path(
    running: Running, depth: str,
) -> None:
    """A root volume that is a linked clone, whose template (or the template's own base)
    was cut short behind the agent's back (a copy by hand that did not finish): Hyper-V
    does not start the VM, and its error names the file of the chain that does not open
    by the path the host knows it by (C:\\pool\\...), never a file of the machine behind
    the emulated host. No VM is left behind and every file is kept."""
    pool = _drive_c(running) / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    body = _body(running, iso=False, make_disk=False)
    volume = _root(body)["uuid"]
    base = pool / "base-1.vhdx"
    vhd.create(base, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    template = pool / "tmpl-1.vhdx"
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0, parent=base,
               parent_locator="C:\\pool\\base-1.vhdx", locator="C:\\pool\\tmpl-1.vhdx")
    clone = await _linked_clone(running, body, "tmpl-1")
    broken = template if depth == "template" else base
    broken.write_bytes(broken.read_bytes()[:4096])
    before = {path.name: path.read_bytes() for path in pool.iterdir()}

    details, _ = await _start_refused(running, body)
    assert f"C:\\pool\\{volume}.vhdx" in details, details
    assert (f"C:\\pool\\{broken.name}: the VHDX header at offset 65536 is cut short"
            in details), details
    assert str(running.agent.config.agent.state_dir) not in details, details
    assert await vm_names(running.emulator) == set()
    assert {path.name: path.read_bytes() for path in pool.iterdir()} == before
    assert clone.is_file()


async def test_concurrent_starts_build_one_vm_when_they_name_the_same_vm(
    running: Running,
) -> None:
    cim = running.emulator
    first = _body(running, "i-2-40-VM")
    before = cim.round_trips()
    answers = await asyncio.gather(running.answer(START, first),
                                   running.answer(START, copy.deepcopy(first)))
    spent = cim.round_trips() - before
    assert [(key, a["result"]) for key, a in answers] == [(START_ANSWER, True)] * 2, answers
    assert spent["invoke:DefineSystem"] == 1  # the second found the first's running VM
    assert await vm_names(cim) == {"i-2-40-VM"}


async def test_start_and_stop_share_one_lock_table_when_agent_is_built(
    running: Running,
) -> None:
    handlers = running.agent.dispatch.handlers
    start_handler = getattr(handlers[START], "__self__", None)
    stop_handler = getattr(handlers[names.STOP_COMMAND], "__self__", None)
    assert start_handler is not None and stop_handler is not None
    assert start_handler.locks is stop_handler.locks


# --- round trips --------------------------------------------------------------------------


async def test_start_stays_within_budget_when_vm_has_one_disk_and_one_nic(
    running: Running,
) -> None:
    cim = running.emulator
    await _started(running, _body(running, "i-2-30-VM"))  # warms every cache
    body = _body(running, "i-2-31-VM", iso=False)
    before, requests = cim.round_trips(), running.requests()
    _, answer = await running.answer(START, body)
    spent = cim.round_trips() - before
    assert answer["result"] is True, answer
    if running.face is not None:  # over WinRM: one request per round trip, job polls too
        assert running.requests() - requests == spent.calls + spent["job_poll"]
    print(f"\nStartCommand, 1 disk + 1 NIC (warm): {spent.calls} calls, {spent.waits} job "
          f"waits; {spent}")
    # lookups 2 (find_vm, switch names) + define 3+2W + SCSI controller 1+1W (every VM
    # gets one, for hot-added volumes) + IDE controller query 1 + disk 2+2W + NIC 3+3W
    # + start 1+1W: 13 calls, 9 waits.
    assert (spent.calls, spent.waits) == (13, 9)
    assert (spent["query"], spent["invoke:AddResourceSettings"],
            spent["invoke:AddFeatureSettings"], spent["invoke:RequestStateChange"]) == (
        4, 5, 1, 1)


async def test_start_costs_no_more_round_trips_when_the_vm_gets_dynamic_memory(
    running: Running,
) -> None:
    cim = running.emulator
    await _started(running, _body(running, "i-2-30-VM"))  # warms every cache
    spent = []
    for name, min_ram in (("i-2-31-VM", 512 << 20), ("i-2-32-VM", 256 << 20)):
        body = _body(running, name, iso=False, minRam=min_ram)
        before = cim.round_trips()
        _, answer = await running.answer(START, body)
        spent.append(cim.round_trips() - before)
        assert answer["result"] is True, answer
    static, dynamic = spent
    assert (dynamic.calls, dynamic.waits) == (static.calls, static.waits) == (13, 9)


# --- round trips per step -----------------------------------------------------------------


async def _measured(running: Running, body: dict[str, Any]) -> StartSteps:
    """Start ``body`` after a warm-up start (so every cache is filled), telling the steps
    of the measured start apart by the round trips the agent made."""
    await _started(running, _body(running, "i-2-90-VM"))
    assert isinstance(running.agent.cim, CountingCim)
    with running.agent.cim.observe() as trips:
        await _started(running, body)
    return start_steps(trips)


def _two_disks_and_two_nics(running: Running, name: str) -> dict[str, Any]:
    body = _body(running, name)
    data = copy.deepcopy(body["vm"]["disks"][0])
    data.update(type="DATADISK", diskSeq=2)
    data["data"][VOLUME_TO].update(uuid=f"data-{name}", volumeType="DATADISK")
    _volume_file(running, f"data-{name}")
    body["vm"]["disks"].append(data)
    second = copy.deepcopy(body["vm"]["nics"][0])
    second.update(deviceId=1, mac="02:00:51:2c:00:0f", broadcastUri="vlan://262")
    body["vm"]["nics"].append(second)
    return body


async def test_power_on_step_costs_1_call_and_1_wait_when_definition_is_built(
    running: Running,
) -> None:
    costs = await _measured(running, _body(running, "i-2-91-VM"))
    assert costs.of(STEP_POWER_ON) == [(1, 1)]


async def test_define_step_costs_at_most_3_calls_and_2_waits_when_cpu_shares_are_set(
    running: Running,
) -> None:
    body = _body(running, "i-2-92-VM", speed=1200, minSpeed=600, maxSpeed=1200,
                 limitCpuUse=True)
    costs = await _measured(running, body)
    ((calls, waits),) = costs.of(STEP_DEFINE)
    assert calls <= 3 and waits <= 2
    vm = await _vm(running.emulator, "i-2-92-VM")
    assert vm is not None and vm.path is not None
    (processor,) = await devices(running.emulator, vm.path, "Msvm_ProcessorSettingData")
    assert (processor["Limit"], processor["Reservation"], processor["Weight"]) == (
        50000, 25000, 50)


async def test_each_disk_step_costs_at_most_3_calls_and_2_waits_when_vm_has_three_drives(
    running: Running,
) -> None:
    costs = await _measured(running, _two_disks_and_two_nics(running, "i-2-93-VM"))
    disks = costs.of(STEP_DISK)
    assert len(disks) == 3  # ROOT, DATADISK, empty DVD
    assert all(calls <= 3 and waits <= 2 for calls, waits in disks), disks


async def test_each_nic_step_costs_at_most_3_calls_and_3_waits_when_nics_have_vlan_and_rate(
    running: Running,
) -> None:
    costs = await _measured(running, _two_disks_and_two_nics(running, "i-2-94-VM"))
    nics = costs.of(STEP_NIC)
    assert len(nics) == 2
    assert all(calls <= 3 and waits <= 3 for calls, waits in nics), nics
    vm = await _vm(running.emulator, "i-2-94-VM")
    assert vm is not None and vm.path is not None
    assert await _nics(running.emulator, vm.path) == [
        ("0200512C000E", "External", 261), ("0200512C000F", "External", 262)]


async def test_remove_step_costs_at_most_2_calls_and_2_waits_when_stopped_vm_is_recreated(
    running: Running,
) -> None:
    cim = running.emulator
    old = await _started(running, _body(running, "i-2-95-VM"))
    await ok(cim, await request_state(cim, old, 3))
    costs = await _measured(running, _body(running, "i-2-95-VM", make_disk=False))
    ((calls, waits),) = costs.of(STEP_REMOVE)
    assert calls <= 2 and waits <= 2
    assert await vm_names(cim) == {"i-2-90-VM", "i-2-95-VM"}


async def test_vm_stats_cost_1_call_and_3_queries_when_several_started_vms_are_named(
    running: Running,
) -> None:
    cim = running.emulator
    names_ = [f"i-2-{n}-VM" for n in (96, 97, 98)]
    for name in names_:
        await _started(running, _body(running, name))
    before = cim.round_trips()
    key, answer = await running.answer(names.GET_VM_STATS_COMMAND, {
        "vmNames": [*names_, "i-9-99-VM"], "hostGuid": "h", "hostName": "h", "contextMap": {}})
    spent = cim.round_trips() - before
    assert key == "com.cloud.agent.api.GetVmStatsAnswer" and answer["result"] is True
    assert sorted(answer["vmStatsMap"]) == names_
    # the summaries of the named VMs; their disk files and adapter counters, then their
    # disks' I/O counters
    assert (spent["invoke:GetSummaryInformation"], spent["query"]) == (1, 3)
    assert (spent.calls, spent.waits) == (4, 0)


async def test_start_takes_every_step_in_order_when_a_vm_has_disks_and_nics(
        running: Running) -> None:
    costs = await _measured(running, _two_disks_and_two_nics(running, "i-2-99-VM"))
    assert [kind for kind, _ in costs.steps] == [
        STEP_DEFINE, STEP_CONTROLLERS, STEP_CONTROLLERS, STEP_DISK, STEP_DISK, STEP_DISK,
        STEP_NIC, STEP_NIC, STEP_POWER_ON]


# --- boot order ---------------------------------------------------------------------------


async def test_start_boots_generation_1_from_the_root_disk_then_the_cd_when_it_has_one(
        running: Running) -> None:
    vm = await _started(running, _body(running, "i-2-40-VM"))
    assert tuple((await _vssd(running.emulator, vm)).integers("BootOrder")) == (2, 1, 3, 0)


async def test_start_boots_generation_1_from_the_cd_when_there_is_no_root_volume(
        running: Running) -> None:
    body = _body(running, "i-2-41-VM", make_disk=False)
    body["vm"]["disks"] = body["vm"]["disks"][1:]  # the (empty) DVD drive only
    vm = await _started(running, body)
    assert tuple((await _vssd(running.emulator, vm)).integers("BootOrder")) == (1, 2, 3, 0)


async def test_start_fails_saying_hyperv_lost_track_of_the_power_on_job(
    running: Running,
) -> None:
    """The host loses the job of the power-on before it is seen to end (its Virtual
    Machine Management Service restarted), and the VM is not running: the answer fails,
    naming the power-on and the job Hyper-V lost; no VM is left behind, and the agent
    goes on serving."""
    cim = running.emulator
    cim.faults.lose_next_job("RequestStateChange", done=False)
    key, answer = await running.answer(START, _body(running))
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    details = answer["details"]
    assert details.startswith("StartCommand failed: starting the VM: "), details
    assert "Hyper-V lost track of its RequestStateChange job" in details, details
    assert await vm_names(cim) == set()
    assert await _started(running, _body(running, make_disk=False)) is not None


async def test_start_succeeds_when_its_lost_power_on_job_left_the_vm_running(
    running: Running,
) -> None:
    """The power-on's job went before it was read (removed once ended, its caller's poll
    late), and the VM runs: that is the start, told by one read of the VM."""
    cim = running.emulator
    cim.faults.lose_next_job("RequestStateChange", done=True)
    before = cim.round_trips()
    vm = await _started(running, _body(running))
    assert await state(cim, vm) == 2
    assert (cim.round_trips() - before)["invoke:RequestStateChange"] == 1
