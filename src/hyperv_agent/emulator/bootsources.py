"""Boot sources of generation 2 VMs: ``Msvm_BootSourceSettingData`` and ``BootSourceOrder``.

How Hyper-V keeps them (2012 R2 and later), and so how the emulator does:

* A generation 2 VM's UEFI firmware boots from a list of boot sources. Hyper-V creates
  one ``Msvm_BootSourceSettingData`` (BSSD) for each boot device added to the VM: each
  hard disk drive and DVD drive (``BootSourceType`` 1, Drive, "EFI SCSI Device") and
  each synthetic network adapter (2, Network, "EFI Network"). Removing the device
  removes its boot source. A guest that installs a boot loader makes the firmware add
  entries of type 3 (File, e.g. "Windows Boot Manager"); the emulator has no guest, so
  it never creates those. Generation 1 VMs have no boot sources (they use ``BootOrder``).
* ``VSSD.BootSourceOrder`` holds the full paths of the BSSDs in boot order. A new boot
  source is appended at the end, so by default the order is the order in which the
  devices were added; removing a device drops its entry and keeps the others in order.
* ``Msvm_LogicalIdentity`` links a boot source (``SameElement``) to the drive or NIC
  setting it stands for (``SystemElement``: the drive RASD, not the medium in it);
  ``Msvm_BootSourceComponent`` links the VSSD (``GroupComponent``) to each of them.
* ``ModifySystemSettings`` may set ``BootSourceOrder`` to any list of the VM's own boot
  sources (a reordering, possibly leaving some out); a path that is not a boot source of
  that VM, or one named twice, is refused (``codes.UNKNOWN_BOOT_SOURCE``).

Microsoft documents neither the BSSD InstanceID format nor the exact firmware device
paths: the emulator's InstanceIDs are ``Microsoft:<VM GUID>\\Boot\\<GUID>`` (so the usual
``Microsoft:<GUID>\\`` prefix query finds a VM's entries) and its FirmwareDevicePath values
only imitate the VMBus form. The device an entry stands for is kept in the record's
hidden state, never as a property.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from hyperv_agent.cim.api import V2_NAMESPACE, ObjectPath
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, MethodError
from hyperv_agent.emulator.codes import BootSourceType, ResourceType
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.store import Record, Transaction
from hyperv_agent.errors import CimInvalidParameter

BSSD = "Msvm_BootSourceSettingData"
_DEVICE = "boot_device"  # hidden state: the path of the drive or NIC setting
_DRIVES = (ResourceType.DISK_DRIVE, ResourceType.DVD_DRIVE)
_UEFI_VMBUS = "\\AcpiEx(VMBus,0,0)\\VenHw(9B17E5A2-0891-42DD-B653-80B5C22809BA,{})"


def boot_type(device: Record) -> BootSourceType | None:
    """The kind of boot source ``device`` gets on generation 2; None if it gets none."""
    if device.class_def.name == "Msvm_SyntheticEthernetPortSettingData":
        return BootSourceType.NETWORK
    if model.RASD_BASE in device.class_def.ancestors and device["ResourceType"] in _DRIVES:
        return BootSourceType.DRIVE
    return None


def sources_of(txn: Transaction, guid: str) -> Iterator[Record]:
    """Every boot source of the VM ``guid``."""
    prefix = f"microsoft:{guid.lower()}\\"
    for record in model.owned_records(txn, (CLASSES[BSSD],), guid):
        if str(record["InstanceID"]).lower().startswith(prefix):
            yield record


def device_of(txn: Transaction, source: Record) -> Record | None:
    """The drive or NIC setting a boot source stands for."""
    text = source.meta.get(_DEVICE)
    return txn.get(ObjectPath.parse(text)) if text else None


def source_of(txn: Transaction, device: Record) -> Record | None:
    """The boot source of a drive or NIC setting, if it has one."""
    guid = model.guid_of(device)
    if guid is None or boot_type(device) is None:
        return None
    return next((s for s in sources_of(txn, guid)
                 if ObjectPath.parse(str(s.meta[_DEVICE])) == device.path), None)


def add_source(call: Call, vssd: Record, device: Record) -> None:
    """A boot source for a new drive or NIC of a generation 2 VM, last in the order."""
    kind = boot_type(device)
    guid = model.guid_of(device)
    if kind is None or guid is None or model.generation(vssd) != 2:
        return
    network = kind == BootSourceType.NETWORK
    source = call.host.new_record(
        BSSD, InstanceID=f"Microsoft:{guid}\\Boot\\{str(uuid.uuid4()).upper()}",
        BootSourceType=int(kind), ElementName="Boot Source", Caption="Boot Source Setting Data",
        BootSourceDescription="EFI Network" if network else "EFI SCSI Device",
        FirmwareDevicePath=_firmware_path(device, network), OtherLocation="",
    )
    source.meta[_DEVICE] = str(device.path)
    call.txn.put(source)
    edited = call.txn.edit(vssd.path)
    assert edited is not None
    edited["BootSourceOrder"] = (*_order(edited), _full_path(call, source))


def _firmware_path(device: Record, network: bool) -> str:
    channel = str(uuid.uuid5(uuid.NAMESPACE_URL, str(device["InstanceID"]))).upper()
    if network:
        return _UEFI_VMBUS.format(channel) + f"\\MAC({str(device['Address'] or '').upper()})"
    return _UEFI_VMBUS.format(channel) + f"\\Scsi(0,{device['AddressOnParent'] or 0})"


def remove_source(call: Call, device: Record) -> None:
    """Drop the boot source of a removed drive or NIC, and its entry in the order."""
    source = source_of(call.txn, device)
    guid = model.guid_of(device)
    if source is None or guid is None:
        return
    call.txn.delete(source.path)
    vssd = call.txn.edit(model.vssd_path(guid))
    if vssd is not None:
        vssd["BootSourceOrder"] = tuple(
            entry for entry in _order(vssd) if not _names(entry, source.path))


def remove_all(call: Call, guid: str) -> None:
    """Drop every boot source of a VM that is being destroyed."""
    for source in list(sources_of(call.txn, guid)):
        call.txn.delete(source.path)


def check_order(call: Call, vssd: Record) -> None:
    """Refuse a BootSourceOrder naming anything but this VM's own boot sources, or one
    twice; store each entry as the boot source's full path."""
    guid = str(vssd["VirtualSystemIdentifier"])
    checked: list[str] = []
    for entry in _order(vssd):
        source = _lookup(call.txn, entry)
        if source is None or model.guid_of(source) is None or (
            str(model.guid_of(source)).lower() != guid.lower()
        ):
            raise MethodError(codes.UNKNOWN_BOOT_SOURCE,
                              f"BootSourceOrder entry {entry[:200]!r} is not a boot source "
                              "of this virtual machine")
        full = _full_path(call, source)
        if full in checked:
            raise MethodError(codes.UNKNOWN_BOOT_SOURCE,
                              f"BootSourceOrder names {entry[:200]!r} twice")
        checked.append(full)
    if vssd["BootSourceOrder"] is not None:
        vssd["BootSourceOrder"] = tuple(checked)


def _lookup(txn: Transaction, entry: str) -> Record | None:
    try:
        path = ObjectPath.parse(entry)
    except CimInvalidParameter:
        return None
    if path.class_name.lower() != BSSD.lower() or path.namespace.lower() != V2_NAMESPACE.lower():
        return None
    return txn.get(path)


def _order(vssd: Record) -> tuple[str, ...]:
    value = vssd["BootSourceOrder"]
    return tuple(str(v) for v in value) if isinstance(value, tuple) else ()


def _names(entry: str, path: ObjectPath) -> bool:
    try:
        return ObjectPath.parse(entry) == path
    except CimInvalidParameter:
        return False


def _full_path(call: Call, source: Record) -> str:
    """The path as Hyper-V writes it in BootSourceOrder: with the host's name."""
    return str(ObjectPath.for_keys(BSSD, host=call.host.name,
                                   InstanceID=str(source["InstanceID"])))
