"""A VM worth migrating, built through the CIM seam (in-process or over WinRM), the
migration call, and a portrait of the VM to compare on both sides of a move."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, CimInstance, MethodResult, ObjectPath
from hyperv_agent.emulator import vhd
from tests.emulator.kit import add, define_vm, devices, ok, request_state, service, template

LIVE, STORAGE, STAGED, LIVE_AND_STORAGE = 32768, 32769, 32770, 32771
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
MIGRATION = "Msvm_VirtualSystemMigrationService"
VLAN_ID = 42


def new_disk(local: Path) -> Path:
    """A real 1 GiB dynamic VHDX at ``local``."""
    local.parent.mkdir(parents=True, exist_ok=True)
    vhd.create(local, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    return local


async def attach_disk(cim: Cim, vm: ObjectPath, windows_path: str) -> None:
    """The file at ``windows_path`` (it exists) on a new SCSI controller, slot 0."""
    scsi = await template(cim, "Msvm_ResourceAllocationSettingData", SCSI)
    controller = (await ok(cim, await add(cim, vm, [scsi]))).paths("ResultingResourceSettings")[0]
    drive = (await template(cim, "Msvm_ResourceAllocationSettingData", DISK)).updated(
        Parent=str(controller), AddressOnParent="0")
    drive_path = (await ok(cim, await add(cim, vm, [drive]))).paths("ResultingResourceSettings")[0]
    medium = (await template(cim, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive_path), HostResource=[windows_path])
    await ok(cim, await add(cim, vm, [medium]))


async def attach_nic(cim: Cim, vm: ObjectPath, *, acl: bool = False) -> None:
    """A NIC on the "External" switch with VLAN 42 (and, with ``acl``, an extended ACL)."""
    nic = await template(cim, "Msvm_SyntheticEthernetPortSettingData")
    nic_path = (await ok(cim, await add(cim, vm, [nic]))).paths("ResultingResourceSettings")[0]
    switch = (await cim.query(wql.select("Msvm_VirtualEthernetSwitch",
                                         wql.eq("ElementName", "External"))))[0]
    port = (await template(cim, "Msvm_EthernetPortAllocationSettingData")).updated(
        Parent=str(nic_path), HostResource=[str(switch.path)])
    port_path = (await ok(cim, await add(cim, vm, [port]))).paths("ResultingResourceSettings")[0]
    features = [(await cim.spawn("Msvm_EthernetSwitchPortVlanSettingData")).updated(
        OperationMode=1, AccessVlanId=VLAN_ID)]
    if acl:
        features.append((await cim.spawn("Msvm_EthernetSwitchPortExtendedAclSettingData"))
                        .updated(Name="allow-ssh", Direction=1, Action=1, Protocol="tcp",
                                 LocalPort="22", Weight=10))
    for feature in features:
        await ok(cim, await cim.invoke(await service(cim), "AddFeatureSettings", {
            "AffectedConfiguration": port_path, "FeatureSettings": [feature]}))


def kvp_item(name: str, data: str) -> str:
    return ('<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">'
            f'<PROPERTY NAME="Name" TYPE="string"><VALUE>{name}</VALUE></PROPERTY>'
            f'<PROPERTY NAME="Data" TYPE="string"><VALUE>{data}</VALUE></PROPERTY>'
            '<PROPERTY NAME="Source" TYPE="uint16"><VALUE>0</VALUE></PROPERTY></INSTANCE>')


async def build_vm(cim: Cim, disk: str, *, name: str = "mover", running: bool = True,
                   acl: bool = False, kvp: bool = False) -> ObjectPath:
    """A VM with the disk file ``disk`` and a NIC on "External" with VLAN 42; ``acl`` adds
    an extended ACL to its port, ``kvp`` a host KVP item."""
    vm = await define_vm(cim, name)
    await attach_disk(cim, vm, disk)
    await attach_nic(cim, vm, acl=acl)
    if kvp:
        await ok(cim, await cim.invoke(await service(cim), "AddKvpItems", {
            "TargetSystem": vm, "DataItems": [kvp_item("cloudstack-vm-userdata", "hello")]}))
    if running:
        await ok(cim, await request_state(cim, vm, 2))
    return vm


async def migrate(source: Cim, vm: ObjectPath, destination: str | None,
                  kind: int = LIVE, resources: Sequence[CimInstance] = (), **settings: object
                  ) -> MethodResult:
    """MigrateVirtualSystemToHost on the source with the settings of ``kind``."""
    return await call(source, "MigrateVirtualSystemToHost", vm, destination, kind, resources,
                      settings)


async def call(source: Cim, method: str, vm: ObjectPath, destination: str | None,
               kind: int = LIVE, resources: Sequence[CimInstance] = (),
               settings: Mapping[str, object] | None = None) -> MethodResult:
    """``method`` of the source's migration service with the settings of ``kind``."""
    found = await source.query(wql.select("Msvm_VirtualSystemMigrationSettingData",
                                          wql.eq("MigrationType", kind)))
    migration = found[0].updated({"TransportType": 5, **(settings or {})})
    return await source.invoke(await service(source, MIGRATION), method, {
        "ComputerSystem": vm, "DestinationHost": destination, "MigrationSettingData": migration,
        "NewSystemSettingData": None, "NewResourceSettingData": list(resources)})


async def moved_disk(cim: Cim, vm: ObjectPath, new_path: str) -> CimInstance:
    disk = (await devices(cim, vm, "Msvm_StorageAllocationSettingData"))[0]
    return disk.updated(HostResource=[new_path], PoolID="")


async def portrait(cim: Cim, vm: ObjectPath) -> dict[str, Any]:
    """What must survive a move: power state, the SMBIOS system UUID its guest reads,
    devices, the switch by name, port features, KVP items, disk paths."""
    system = await cim.get(vm)
    settings = await devices(cim, vm)
    port = (await devices(cim, vm, "Msvm_EthernetPortAllocationSettingData"))[0]
    switch = await cim.get(ObjectPath.parse(port.strings("HostResource")[0]))
    kvp = await cim.query(wql.select("Msvm_KvpExchangeComponentSettingData", wql.starts_with(
        "InstanceID", f"Microsoft:{vm.key('Name')}\\")))
    (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData", wql.eq(
        "InstanceID", f"Microsoft:{vm.key('Name')}")))
    return {
        "state": system["EnabledState"], "name": system["ElementName"],
        "bios_guid": vssd["BIOSGUID"],
        "devices": sorted(str(d["InstanceID"]) for d in settings),
        "switch": switch["ElementName"],
        "vlans": [v["AccessVlanId"] for v in await devices(
            cim, vm, "Msvm_EthernetSwitchPortVlanSettingData")],
        "acls": [a["Name"] for a in await devices(
            cim, vm, "Msvm_EthernetSwitchPortExtendedAclSettingData")],
        "kvp": sorted(kvp[0].strings("HostExchangeItems")) if kvp else [],
        "disks": [d.strings("HostResource") for d in await devices(
            cim, vm, "Msvm_StorageAllocationSettingData")],
    }
