"""An upgrade from CloudStack's C# agent: the VMs, volumes and templates it left on the host
(``tests/e2e/csharp_host.py`` builds them in its shapes) are managed by this agent's
commands over HTTPS, as the management server goes on sending them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.handlers.vm import VmSettings
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.e2e.csharp_host import CsNic, CsVm, csharp_vm
from tests.emulator.kit import devices

SHARE = "\\\\10.1.1.2\\secondary"
STORE_URL = "cifs://10.1.1.2/secondary"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
VOLUME_TO = names.VOLUME_OBJECT_TO
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
ROOT_UUID = "6f1c2a7e-7b43-4c4e-9a0e-1d2f3a4b5c01"
DATA_UUID = "6f1c2a7e-7b43-4c4e-9a0e-1d2f3a4b5c02"
NEW_DATA_UUID = "6f1c2a7e-7b43-4c4e-9a0e-1d2f3a4b5c03"
MAC = "02:00:4c:5f:00:08"
SPARE_MAC = "06:a2:c8:00:00:19"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent on a host whose image store holds an ISO, with a short shutdown wait."""
    folder = tmp_path / "secondary" / "iso" / "2" / "205"
    folder.mkdir(parents=True)
    (folder / "tools.iso").write_bytes(b"\0" * 4096)
    (tmp_path / "secondary" / "systemvm").mkdir()
    (tmp_path / "secondary" / "systemvm" / "systemvm.iso").write_bytes(b"\0" * 4096)
    settings = VmSettings(shutdown_timeout_s=0.3, shutdown_first_poll_s=0.02,
                          shutdown_max_poll_s=0.05)
    async with serving(config_with_shares(tmp_path, {SHARE: tmp_path / "secondary"}),
                       vm_settings=settings) as running:
        yield running


def _pool(running: Running) -> Path:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _disk(running: Running, name: str) -> str:
    """A disk file ``name`` in the local pool, as the C# agent left it; its host path."""
    fmt = vhd.DiskFormat.VHD if name.endswith(".vhd") else vhd.DiskFormat.VHDX
    vhd.create(_pool(running) / name, fmt, vhd.DiskType.DYNAMIC, 1 << 26)
    return f"C:\\pool\\{name}"


def _volume(uuid: str, fmt: str = "VHDX", kind: str = "DATADISK") -> dict[str, Any]:
    """A VolumeObjectTO as the MS sends it for a volume the C# agent made: its path is the
    bare uuid the C# agent answered, without an extension."""
    return {VOLUME_TO: {
        "uuid": uuid, "path": uuid, "volumeType": kind, "format": fmt, "name": uuid,
        "size": 1 << 26, "id": 31, "dataStore": {STORE_TO: {
            "uuid": POOL_UUID, "id": 201, "host": "10.1.1.1", "poolType": "Filesystem",
            "path": "C:\\pool", "port": 0}}}}


async def _vm(cim: EmulatorCim, name: str) -> ObjectPath | None:
    found = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    return found[0].path if found else None


async def _user_vm(running: Running, name: str = "i-2-40-VM", **fields: Any) -> ObjectPath:
    values: dict[str, Any] = {
        "root": _disk(running, f"{ROOT_UUID}.vhd"), "iso": "",
        "data": {1: _disk(running, f"{DATA_UUID}.vhdx")},
        "nics": (CsNic(MAC, vlan=300, rate_mbps=200),), **fields}
    return await csharp_vm(running.emulator, CsVm(name, **values))


# --- state, power and statistics -----------------------------------------------------------


async def test_state_report_keeps_running_vm_and_removes_stopped_ones_with_disks_kept(
    host: Running,
) -> None:
    cim = host.emulator
    await _user_vm(host, "i-2-40-VM")
    await csharp_vm(cim, CsVm("i-2-41-VM", root=_disk(host, "root41.vhdx"), running=False))
    await csharp_vm(cim, CsVm("i-2-42-VM", root=_disk(host, "root42.vhdx"), running=False,
                              finished=False))
    status, report = await host.post(REPORT, {})
    assert status == 200 and report == [{"i-2-40-VM": "PowerOn"}], report
    assert await _vm(cim, "i-2-41-VM") is None and await _vm(cim, "i-2-42-VM") is None
    assert {"root41.vhdx", "root42.vhdx"} <= {p.name for p in _pool(host).iterdir()}


async def test_check_stats_reboot_and_stop_work_on_its_vm(host: Running) -> None:
    cim = host.emulator
    await _user_vm(host)
    _, check = await host.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": "i-2-40-VM"})
    assert (check["result"], check["state"]) == (True, "PowerOn"), check
    _, stats = await host.answer(names.GET_VM_STATS_COMMAND, {
        "vmNames": ["i-2-40-VM"], "hostGuid": "g", "hostName": "hv-1"})
    assert stats["result"] is True and "i-2-40-VM" in stats["vmStatsMap"], stats
    _, reboot = await host.answer(names.REBOOT_COMMAND, {"vmName": "i-2-40-VM"})
    assert reboot["result"] is True, reboot
    _, stop = await host.answer(names.STOP_COMMAND, {"vmName": "i-2-40-VM"})
    assert stop["result"] is True, stop
    assert await _vm(cim, "i-2-40-VM") is None
    assert {f"{ROOT_UUID}.vhd", f"{DATA_UUID}.vhdx"} <= {p.name for p in _pool(host).iterdir()}


# --- volumes and ISOs in its drives --------------------------------------------------------


async def _media(cim: EmulatorCim, vm: ObjectPath) -> dict[str, str]:
    """Each medium's file by the place of its drive (``scsi 1``, ``ide1 0``)."""
    rasd = await devices(cim, vm, "Msvm_ResourceAllocationSettingData")
    buses = {c.path: "scsi" if "SCSI" in str(c["ResourceSubType"]) else f"ide{c['Address']}"
             for c in rasd if "Controller" in str(c["ResourceSubType"])}
    places = {drive.path: f"{buses[ObjectPath.parse(str(drive['Parent']))]} "
                          f"{drive['AddressOnParent']}"
              for drive in rasd if "Drive" in str(drive["ResourceSubType"])}
    return {places[ObjectPath.parse(str(m["Parent"]))]: str(m.strings("HostResource")[0])
            for m in await devices(cim, vm, "Msvm_StorageAllocationSettingData")}


async def test_detach_then_attach_data_volumes_at_its_scsi_slots(host: Running) -> None:
    cim = host.emulator
    vm = await _user_vm(host, empty_scsi_slots=(2,))
    _disk(host, f"{NEW_DATA_UUID}.vhdx")
    _, detached = await host.answer(names.DETTACH_COMMAND, {
        "vmName": "i-2-40-VM", "disk": {"type": "DATADISK", "diskSeq": 1,
                                        "data": _volume(DATA_UUID)}})
    assert detached["result"] is True, detached
    _, attached = await host.answer(names.ATTACH_COMMAND, {
        "vmName": "i-2-40-VM", "disk": {"type": "DATADISK", "diskSeq": 2,
                                        "data": _volume(NEW_DATA_UUID)}})
    assert attached["result"] is True, attached
    media = await _media(cim, vm)
    assert media.get("scsi 2") == f"C:\\pool\\{NEW_DATA_UUID}.vhdx", media
    assert "scsi 1" not in media


async def test_iso_goes_in_and_out_of_its_dvd_drive(host: Running) -> None:
    cim = host.emulator
    vm = await _user_vm(host)
    iso = {"type": "ISO", "diskSeq": 3, "data": {names.TEMPLATE_OBJECT_TO: {
        "path": "iso/2/205/tools.iso", "format": "ISO", "name": "tools", "id": 205,
        "imageDataStore": {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}}}
    _, attached = await host.answer(names.ATTACH_COMMAND, {"vmName": "i-2-40-VM", "disk": iso})
    assert attached["result"] is True, attached
    assert (await _media(cim, vm)).get("ide1 0") == f"{SHARE}\\iso\\2\\205\\tools.iso"
    _, detached = await host.answer(names.DETTACH_COMMAND, {"vmName": "i-2-40-VM", "disk": iso})
    assert detached["result"] is True, detached
    assert "ide1 0" not in await _media(cim, vm)


# --- files in its pools --------------------------------------------------------------------


async def test_delete_finds_its_volume_by_the_bare_uuid_path(host: Running) -> None:
    _disk(host, f"{ROOT_UUID}.vhd")
    _, answer = await host.answer(names.DELETE_COMMAND, {"data": _volume(ROOT_UUID, "VHD")})
    assert answer["result"] is True, answer
    assert not (_pool(host) / f"{ROOT_UUID}.vhd").exists()


async def test_root_volume_is_copied_from_its_template_named_by_a_bare_guid(
    host: Running,
) -> None:
    guid = "0a6b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
    _disk(host, f"{guid}.vhd")
    store = _volume("x")[VOLUME_TO]["dataStore"]
    _, answer = await host.answer(names.COPY_COMMAND, {
        "srcTO": {names.TEMPLATE_OBJECT_TO: {"path": guid, "format": "VHD", "id": 5,
                                             "uuid": "9873f1c0", "imageDataStore": store}},
        "destTO": {VOLUME_TO: {"uuid": NEW_DATA_UUID, "volumeType": "ROOT", "name": "ROOT-5",
                               "size": 1 << 26, "id": 10, "dataStore": store}},
        "wait": 0})
    assert answer["result"] is True, answer
    assert any(p.name.startswith(NEW_DATA_UUID) for p in _pool(host).iterdir())


async def test_its_template_named_by_a_bare_guid_is_evicted(host: Running) -> None:
    guid = "0a6b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
    _disk(host, f"{guid}.vhd")
    _, answer = await host.answer(names.DESTROY_COMMAND, {"volume": {
        "id": 9, "storagePoolType": "Filesystem", "mountPoint": "C:\\pool",
        "storagePoolUuid": POOL_UUID, "path": guid, "size": 1 << 26}, "wait": 0})
    assert answer["result"] is True, answer
    assert not (_pool(host) / f"{guid}.vhd").exists()


# --- its NICs and switch ports -------------------------------------------------------------

ROUTER = "r-7-VM"
ROUTER_NICS = (CsNic("0e:00:a9:fe:01:0b"), CsNic("02:00:51:2c:00:0e", vlan=261),
               CsNic(SPARE_MAC, spare=True))


async def _ports(cim: EmulatorCim, vm: ObjectPath) -> dict[str, tuple[int, int | None]]:
    """Each adapter's MAC (upper case): its port's EnabledState and access VLAN."""
    rasd = await devices(cim, vm, "Msvm_EthernetPortAllocationSettingData")
    vlans = await devices(cim, vm, "Msvm_EthernetSwitchPortVlanSettingData")
    adapters = {a.path: str(a["Address"]).upper()
                for a in await devices(cim, vm, "Msvm_SyntheticEthernetPortSettingData")}
    found = {}
    for port in rasd:
        vlan = next((v.integer("AccessVlanId") for v in vlans if str(
            v["InstanceID"]).startswith(str(port["InstanceID"]) + "\\")), None)
        found[adapters[ObjectPath.parse(str(port["Parent"]))]] = (
            port.integer("EnabledState") or 0, vlan)
    return found


async def test_router_spare_nic_is_wired_and_listed_as_the_ms_asks(host: Running) -> None:
    cim = host.emulator
    vm = await csharp_vm(cim, CsVm(ROUTER, root=_disk(host, "r7.vhdx"), iso=None, nics=ROUTER_NICS,
                                   boot_args="template=domP name=r-7-VM eth0ip=169.254.1.11",
                                   system_vm_iso=f"{SHARE}\\systemvm\\systemvm.iso"))
    _, config = await host.answer(names.GET_VM_CONFIG_COMMAND, {"vmName": ROUTER})
    assert config["result"] is True, config
    assert [nic["macAddress"].lower() for nic in config["nics"]] == [
        nic.mac.replace(":", "") for nic in ROUTER_NICS], config
    _, modified = await host.answer(names.MODIFY_VM_NIC_CONFIG_COMMAND, {
        "vmName": ROUTER, "vlan": "305", "macAddress": None, "index": 2, "enable": True,
        "switchLableName": None})
    assert modified["result"] is True, modified
    assert (await _ports(cim, vm))["06A2C8000019"] == (2, 305)
    _, unplugged = await host.answer(names.UNPLUG_NIC_COMMAND, {
        "instanceName": ROUTER, "nic": {"mac": SPARE_MAC}})
    assert unplugged["result"] is True, unplugged
    assert (await _ports(cim, vm))["06A2C8000019"][0] == 3
    _, plugged = await host.answer(names.PLUG_NIC_COMMAND, {
        "instanceName": ROUTER, "vmType": "DomainRouter", "nic": {
            "deviceId": 2, "mac": SPARE_MAC, "name": "External", "broadcastUri": "vlan://306",
            "broadcastType": "Vlan", "type": "Public"}})
    assert plugged["result"] is True, plugged
    assert (await _ports(cim, vm))["06A2C8000019"] == (2, 306)
    _, stop = await host.answer(names.STOP_COMMAND, {"vmName": ROUTER})
    assert stop["result"] is True and await _vm(cim, ROUTER) is None, stop


async def test_security_group_rules_go_on_its_nic_port(host: Running) -> None:
    from tests.e2e.sgkit import acls_of, rules_body, send

    await _user_vm(host, "i-2-8-VM", nics=(CsNic(MAC),))
    answer = await send(host, rules_body())
    assert answer["result"] is True, answer
    assert await acls_of(host.emulator, "i-2-8-VM")
