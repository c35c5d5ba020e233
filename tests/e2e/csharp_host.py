"""A Hyper-V host as CloudStack's C# agent leaves it, built on the emulator through the
seam, for the tests of an upgrade from that agent.

``csharp_vm`` defines a VM in the shapes the C# agent's ``WmiCallsV2.DeployVirtualMachine``
gives it (CloudStack's ``plugins/hypervisors/hyperv/DotNet``), written here from what that
code leaves on a host, not from its code:

- a generation 1 VM (no ``VirtualSystemSubType`` asked for) named by ``ElementName``, with
  Notes ``CloudStack creating VM, do not edit.`` while it is built and ``Created by
  CloudStack, do not edit.`` once it started; automatic start action "nothing", stop action
  "shut down"; static memory (quantity, reservation and limit the same), processor limit
  100000;
- one SCSI controller (``ElementName`` "SCSI Controller") added first, whether or not a
  data volume comes;
- the root disk on IDE controller 0 slot 0; the DVD drive on IDE controller 1 slot 0
  (empty, or holding the ISO's UNC path); a system VM's ``systemvm.iso`` in a DVD drive it
  adds the same way;
- each data volume on the SCSI controller at the slot its ``diskSeq`` says; a volume the
  C# agent detached leaves its drive behind, empty (it removed the medium only);
- each NIC with the VM's name as ``ElementName``, the MAC without separators in lower case
  as CloudStack sends it, a static MAC; its switch port enabled (2), or disabled (3) for a
  router's spare NIC (ip 0.0.0.0, netmask 255.255.255.255); an access VLAN and a
  bandwidth limit (Mbps × 10^6) as port features;
- the boot arguments in one KVP item ``cloudstack-vm-userdata``, however long.

Volume and template files the C# agent made (``<uuid>.vhdx`` for a volume whose path is the
bare ``<uuid>``, ``<guid>.vhd`` for a template whose install path is the bare ``<guid>``)
are plain files in a pool folder; the tests write them with ``emulator.vhd``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, ObjectPath
from tests.emulator.kit import add, devices, ok, request_state, service, template

IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
ISO = "Microsoft:Hyper-V:Virtual CD/DVD Disk"
BUILDING_NOTE = "CloudStack creating VM, do not edit. \n"
CREATED_NOTE = "Created by CloudStack, do not edit. \n"
BOOT_ARGS_KEY = "cloudstack-vm-userdata"
RASD = "Msvm_ResourceAllocationSettingData"
SASD = "Msvm_StorageAllocationSettingData"


@dataclass(frozen=True)
class CsNic:
    """One NIC as the C# agent wires it."""

    mac: str  # as CloudStack sends it: "02:00:4c:5f:00:08"
    vlan: int | None = None
    rate_mbps: int = 0
    spare: bool = False  # a router's extra NIC: port disabled (EnabledState 3)
    switch: str = "External"


@dataclass(frozen=True)
class CsVm:
    """What StartCommand gave the C# agent, in its terms."""

    name: str
    root: str | None = None  # host path of the root volume's file
    iso: str | None = ""  # None: no DVD drive; "": an empty one; else the ISO's UNC path
    data: dict[int, str] = field(default_factory=dict)  # diskSeq -> host path
    empty_scsi_slots: tuple[int, ...] = ()  # drives left behind by the C# agent's detach
    nics: Sequence[CsNic] = ()
    boot_args: str | None = None
    system_vm_iso: str | None = None  # r-/s-/v- VMs: the image store's systemvm.iso
    cpus: int = 1
    memory_mb: int = 512
    running: bool = True
    finished: bool = True  # False: left "CloudStack creating VM" (a build cut short)


async def csharp_vm(cim: Cim, spec: CsVm) -> ObjectPath:
    """Define (and start, unless ``spec.running`` is False) the VM as the C# agent does."""
    vsms = await service(cim)
    settings = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName=spec.name, AutomaticStartupAction=2, AutomaticShutdownAction=4,
        Notes=[BUILDING_NOTE])
    defined = await ok(cim, await cim.invoke(vsms, "DefineSystem", {
        "SystemSettings": settings, "ResourceSettings": []}))
    vm = defined.path("ResultingSystem")
    assert vm is not None
    memory = (await devices(cim, vm, "Msvm_MemorySettingData"))[0].updated(
        VirtualQuantity=spec.memory_mb, Reservation=spec.memory_mb, Limit=spec.memory_mb)
    processor = (await devices(cim, vm, "Msvm_ProcessorSettingData"))[0].updated(
        VirtualQuantity=spec.cpus, Reservation=spec.cpus, Limit=100000)
    await ok(cim, await cim.invoke(vsms, "ModifyResourceSettings",
                                   {"ResourceSettings": [memory, processor]}))
    scsi = (await template(cim, RASD, SCSI)).updated(ElementName="SCSI Controller")
    scsi_path = (await ok(cim, await add(cim, vm, [scsi]))).paths(
        "ResultingResourceSettings")[0]
    if spec.root is not None:
        await _drive(cim, vm, await _ide(cim, vm, "0"), "0", DISK, spec.root)
    if spec.iso is not None:
        await _drive(cim, vm, await _ide(cim, vm, "1"), "0", DVD, spec.iso or None)
    for seq, path in sorted(spec.data.items()):
        await _drive(cim, vm, scsi_path, str(seq), DISK, path)
    for seq in spec.empty_scsi_slots:
        await _drive(cim, vm, scsi_path, str(seq), DISK, None)
    for nic in spec.nics:
        await _nic(cim, vm, spec.name, nic)
    if spec.boot_args:
        item = (await cim.spawn("Msvm_KvpExchangeDataItem")).updated(
            Name=BOOT_ARGS_KEY, Data=spec.boot_args, Source=0)
        await ok(cim, await cim.invoke(vsms, "AddKvpItems", {
            "TargetSystem": vm, "DataItems": [item]}))
    if spec.system_vm_iso is not None:
        await _drive(cim, vm, await _ide(cim, vm, "1"), "0", DVD, spec.system_vm_iso)
    if spec.running:
        await ok(cim, await request_state(cim, vm, 2))
    if spec.finished:
        (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData", wql.eq(
            "InstanceID", f"Microsoft:{vm.key('Name')}")))
        await ok(cim, await cim.invoke(vsms, "ModifySystemSettings", {
            "SystemSettings": vssd.updated(Notes=[CREATED_NOTE])}))
    return vm


async def _ide(cim: Cim, vm: ObjectPath, address: str) -> ObjectPath:
    found = [c.path for c in await devices(cim, vm, RASD)
             if c["ResourceSubType"] == IDE and c["Address"] == address]
    assert found and found[0] is not None
    return found[0]


async def _drive(cim: Cim, vm: ObjectPath, controller: ObjectPath, slot: str, kind: str,
                 medium: str | None) -> None:
    drive = (await template(cim, RASD, kind)).updated(Parent=str(controller),
                                                      AddressOnParent=slot)
    drive_path = (await ok(cim, await add(cim, vm, [drive]))).paths(
        "ResultingResourceSettings")[0]
    if medium is None:
        return
    disk = (await template(cim, SASD, VHD if kind == DISK else ISO)).updated(
        Parent=str(drive_path), HostResource=[medium])
    await ok(cim, await add(cim, vm, [disk]))


async def _nic(cim: Cim, vm: ObjectPath, vm_name: str, nic: CsNic) -> None:
    vsms = await service(cim)
    adapter = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName=vm_name, Address=nic.mac.replace(":", ""), StaticMacAddress=True,
        VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])
    adapter_path = (await ok(cim, await add(cim, vm, [adapter]))).paths(
        "ResultingResourceSettings")[0]
    (switch,) = await cim.query(wql.select("Msvm_VirtualEthernetSwitch",
                                           wql.eq("ElementName", nic.switch)))
    port = (await template(cim, "Msvm_EthernetPortAllocationSettingData")).updated(
        Parent=str(adapter_path), HostResource=[str(switch.path)],
        EnabledState=3 if nic.spare else 2)
    port_path = (await ok(cim, await add(cim, vm, [port]))).paths(
        "ResultingResourceSettings")[0]
    features = []
    if nic.vlan is not None and not nic.spare:
        features.append((await template(cim, "Msvm_EthernetSwitchPortVlanSettingData")).updated(
            AccessVlanId=nic.vlan, OperationMode=1))
    if nic.rate_mbps > 0:
        features.append((await template(
            cim, "Msvm_EthernetSwitchPortBandwidthSettingData")).updated(
                Limit=nic.rate_mbps * 1_000_000))
    for feature in features:  # one call each, as the C# agent makes them
        await ok(cim, await cim.invoke(vsms, "AddFeatureSettings", {
            "AffectedConfiguration": port_path, "FeatureSettings": [feature]}))
