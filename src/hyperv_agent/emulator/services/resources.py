"""Msvm_VirtualSystemManagementService: Add/Modify/RemoveResourceSettings.

Checks what Hyper-V checks: a drive's Parent must be a controller of the same VM, a
medium's Parent a drive of the right kind, slots in range and free, IDE only on
generation 1, no processor or memory change and no IDE change (a drive, or the virtual
hard disk in one; DVD media do change) while the VM runs, and
network adapters added to or removed from a running VM only on generation 2 and only
from Windows Server 2016 on (``hot_nics``). A paused or saved VM gains and loses no
device at all, and its processors and memory are as fixed as a running VM's
(``_check_devices_changeable``). A VM whose state is changing (Starting, Stopping,
Saving, ...: a RequestStateChange job runs) takes no added, changed or removed setting
until the change is done (``check_not_changing``: 32775, the emulator's choice), nor
does a VM whose live move is under way until the move is done.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from hyperv_agent.cim.api import CimValue, ObjectPath, OutValue
from hyperv_agent.emulator import bootsources, codes, model, openfiles, vhd
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles
from hyperv_agent.emulator.codes import ResourceType, ReturnCode
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.emulator.store import Record
from hyperv_agent.errors import CimInvalidParameter

VSMS = "Msvm_VirtualSystemManagementService"
MAX_SCSI_CONTROLLERS = 4
MAX_NICS = 12
MEMORY_ALIGN_MB = 2  # memory settings are whole multiples of 2 MB (``_check_memory``)
MEMORY_MIN_MB = 32  # the least memory of a VM, and the least minimum under dynamic memory
_DRIVES = (ResourceType.DISK_DRIVE, ResourceType.DVD_DRIVE)
_CONTROLLERS = (ResourceType.IDE_CONTROLLER, ResourceType.SCSI_CONTROLLER)


#: Checks one new setting, completes its record, and returns its InstanceID suffix.
_Check = Callable[[Call, Record, Record, Embedded, Record], str]


def _refuse(code: int, text: str) -> MethodError:
    return MethodError(code, text)


#: The states in which Hyper-V adds and removes no device of a VM, by name: a paused VM's
#: worker process is frozen with the devices it has, and a saved VM's saved state holds
#: them (Hyper-V Manager greys such settings out, "Some settings cannot be modified
#: because the virtual machine was in the following state when this window was opened").
#: Microsoft's WMI pages give no code for the refusal: the emulator answers 32775
#: (invalid state), as for the changes a running VM refuses.
_DEVICES_FIXED: dict[int, str] = {codes.EnabledState.QUIESCE: "paused",
                                 codes.EnabledState.OFFLINE: "saved"}


def _check_devices_changeable(vm: Record, verb: str) -> None:
    """Refuse a device ``verb`` ("added to", "removed from") a paused or saved VM."""
    state = _DEVICES_FIXED.get(vm.integer("EnabledState"))
    if state is not None:
        raise _refuse(codes.CHANGE_WHILE_SUSPENDED,
                      f"no device can be {verb} a {state} virtual machine")


def check_not_changing(call: Call, vm: Record, what: str) -> None:
    """Refuse ``what`` ("no device can be added to", ...) a VM whose state is
    changing: Hyper-V is starting, stopping, saving, pausing or resuming it and takes no
    other change to it until that is done. Microsoft's WMI pages are silent on it; the
    emulator answers 32775, as RequestStateChange and DestroySystem answer meanwhile. A
    VM being migrated live is refused the same way (``model.being_migrated``): the move
    carries it as it is."""
    shown = model.transition(call.host, vm)
    if shown is not None:
        raise _refuse(codes.CHANGE_WHILE_CHANGING_STATE,
                      f"{what} a virtual machine while its state changes (state {shown}); "
                      "try again once the change is done")
    moving = model.being_migrated(call.host, call.txn, vm)
    if moving is not None:
        raise _refuse(codes.CHANGE_WHILE_MIGRATING, f"{what} a virtual machine now: {moving}")


def _sizes_fixed(vm: Record) -> bool:
    """Whether the VM's processor count and memory are fixed: it runs, is paused, or is
    saved (its saved state holds that memory). The emulator's reading: Microsoft does not
    list which settings a saved VM refuses."""
    return model.is_running(vm) or vm["EnabledState"] == codes.EnabledState.OFFLINE


# --- shared lookups -----------------------------------------------------------------------


def target_vm(call: Call, path: ObjectPath | None) -> tuple[Record, Record]:
    """The VM and its settings from a Msvm_ComputerSystem or VSSD path."""
    record = call.require(path, "affected configuration")
    guid = model.guid_of(record)
    vm = call.txn.get(model.vm_path(guid)) if guid else None
    vssd = call.txn.get(model.vssd_path(guid)) if guid else None
    if vm is None or vssd is None or record.class_def.name not in (
        "Msvm_ComputerSystem", "Msvm_VirtualSystemSettingData"
    ):
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{path} is not a virtual machine or its settings", immediate=True)
    return vm, vssd


def _kind(record: Record | Embedded) -> int | None:
    value = record.get("ResourceType") if isinstance(record, Embedded) else record["ResourceType"]
    return value if isinstance(value, int) else None


def _parent(call: Call, item: Embedded, guid: str, kinds: Iterable[int], what: str) -> Record:
    text = item.text("Parent")
    try:
        parent = call.txn.get(ObjectPath.parse(text)) if text else None
    except CimInvalidParameter:
        parent = None
    if parent is None or model.guid_of(parent) != guid or _kind(parent) not in tuple(kinds):
        raise _refuse(codes.BROKEN_PARENT, f"Parent {text!r} is not a {what} of this VM")
    return parent


def _children(call: Call, guid: str, parent: Record) -> Iterator[Record]:
    for record in model.device_records(call.txn, guid):
        text = record["Parent"]
        if isinstance(text, str) and text and ObjectPath.parse(text) == parent.path:
            yield record


def _count(call: Call, guid: str, kind: int) -> int:
    return sum(1 for r in model.device_records(call.txn, guid) if _kind(r) == kind)


# --- AddResourceSettings ------------------------------------------------------------------


@handles(VSMS, "AddResourceSettings")
def add_resource_settings(call: Call) -> Mapping[str, OutValue]:
    vm, vssd = target_vm(call, call.path("AffectedConfiguration"))
    added = [add_one(call, vm, vssd, item).path for item in call.embedded_list("ResourceSettings")]
    return {"ResultingResourceSettings": tuple(added)}


def apply_definitions(call: Call, guid: str, items: list[Embedded]) -> None:
    """DefineSystem's ResourceSettings: processor and memory change the defaults."""
    vm = call.txn.get(model.vm_path(guid))
    vssd = call.txn.get(model.vssd_path(guid))
    assert vm is not None and vssd is not None
    for item in items:
        if item.class_def.name in ("Msvm_ProcessorSettingData", "Msvm_MemorySettingData"):
            current = next(r for r in model.device_records(call.txn, guid)
                           if r.class_def is item.class_def)
            values = {k: v for k, v in item.values.items() if k != "InstanceID"}
            _modify(call, vm, current, Embedded(item.class_def, values))
        else:
            add_one(call, vm, vssd, item)


def add_one(call: Call, vm: Record, vssd: Record, item: Embedded) -> Record:
    """Check and stage one new resource setting of ``vm``."""
    if not item.is_a(model.RASD_BASE):
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{item.class_def.name} is not a resource setting", immediate=True)
    _check_devices_changeable(vm, "added to")
    check_not_changing(call, vm, "no device can be added to")
    guid = str(vm["Name"])
    given = {name: value for name, value in item.values.items() if value is not None}
    record = call.host.new_record(item.class_def.name, **given)
    suffix = _checker(item)(call, vm, vssd, item, record)
    record["InstanceID"] = f"Microsoft:{guid}\\{str(uuid.uuid4()).upper()}{suffix}"
    call.txn.put(record)
    if record.class_def.name == "Msvm_SyntheticEthernetPortSettingData" and model.is_running(vm):
        call.txn.put(model.guest_network_record(call.host, record))  # a NIC hot-added
    bootsources.add_source(call, vssd, record)
    return record


def _checker(item: Embedded) -> _Check:
    name, kind = item.class_def.name, _kind(item)
    if name in ("Msvm_ProcessorSettingData", "Msvm_MemorySettingData",
                "Msvm_KvpExchangeComponentSettingData"):
        return _check_singleton
    if name == "Msvm_StorageAllocationSettingData":
        return _check_medium
    if name == "Msvm_SyntheticEthernetPortSettingData":
        return _check_nic
    if name == "Msvm_EthernetPortAllocationSettingData":
        return _check_port
    if kind in _CONTROLLERS:
        return _check_controller
    if kind in _DRIVES:
        return _check_drive
    return _check_unsupported


def _check_singleton(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    raise _refuse(ReturnCode.INVALID_PARAMETER,
                  f"a VM has exactly one {item.class_def.name}; modify it instead")


def _check_unsupported(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    raise _refuse(ReturnCode.NOT_SUPPORTED,
                  f"resource type {_kind(item)} ({item.text('ResourceSubType')}) is not supported")


def _check_controller(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    guid = str(vm["Name"])
    if model.is_running(vm):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "controllers cannot be added to a running VM")
    if _kind(item) == ResourceType.IDE_CONTROLLER:
        if model.generation(vssd) == 2:
            raise _refuse(codes.IDE_ON_GENERATION_2, "generation 2 VMs have no IDE controllers")
        if _count(call, guid, ResourceType.IDE_CONTROLLER) >= 2:
            raise _refuse(ReturnCode.INVALID_PARAMETER, "a VM has at most 2 IDE controllers")
    elif _count(call, guid, ResourceType.SCSI_CONTROLLER) >= MAX_SCSI_CONTROLLERS:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"a VM has at most {MAX_SCSI_CONTROLLERS} SCSI controllers")
    if not item.strings("VirtualSystemIdentifiers") and _kind(item) == ResourceType.SCSI_CONTROLLER:
        rec["VirtualSystemIdentifiers"] = (f"{{{uuid.uuid4()}}}",)
    return "\\0"


def _check_drive(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    guid = str(vm["Name"])
    controller = _parent(call, item, guid, _CONTROLLERS, "controller")
    on_ide = _kind(controller) == ResourceType.IDE_CONTROLLER
    if _kind(item) == ResourceType.DVD_DRIVE and not on_ide and model.generation(vssd) == 1:
        raise _refuse(ReturnCode.NOT_SUPPORTED, "generation 1 VMs take DVD drives on IDE only")
    if on_ide and model.is_running(vm):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "IDE drives cannot change while the VM runs")
    slot = _free_slot(call, guid, controller, item.text("AddressOnParent"), rec)
    rec["AddressOnParent"] = str(slot)
    rec["Parent"] = str(controller.path)
    return f"\\{slot}\\D"


def _free_slot(call: Call, guid: str, controller: Record, wanted: str | None,
               rec: Record) -> int:
    on_ide = _kind(controller) == ResourceType.IDE_CONTROLLER
    slots = codes.IDE_SLOTS if on_ide else codes.SCSI_SLOTS
    used = {str(c["AddressOnParent"]) for c in _children(call, guid, controller)
            if c["InstanceID"] != rec["InstanceID"]}
    if wanted in (None, ""):
        free = [s for s in range(slots) if str(s) not in used]
        if not free:
            raise _refuse(codes.SLOT_IN_USE, "every slot of the controller is in use")
        return free[0]
    if not str(wanted).isdigit() or int(str(wanted)) >= slots:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"AddressOnParent {wanted!r} is outside 0..{slots - 1}")
    if str(int(str(wanted))) in used:
        raise _refuse(codes.SLOT_IN_USE, f"slot {wanted} of the controller is in use")
    return int(str(wanted))


def _check_medium(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    guid = str(vm["Name"])
    drive = _parent(call, item, guid, _DRIVES, "drive")
    iso = item.text("ResourceSubType") == codes.SUBTYPE_ISO
    if iso != (_kind(drive) == ResourceType.DVD_DRIVE):
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      "ISO media go in DVD drives and hard disk images in disk drives")
    if any(True for _ in _children(call, guid, drive)):
        raise _refuse(codes.SLOT_IN_USE, "the drive already holds a medium")
    _check_ide_disk_still(call, vm, drive)
    disk = check_medium_file(call, item.strings("HostResource"), iso, exclude=None)
    _note_parents(call, rec, item.strings("HostResource"), disk)
    rec["Parent"] = str(drive.path)
    return f"\\{drive['AddressOnParent']}\\L"


def _drive_of(call: Call, medium: Record) -> Record | None:
    """The drive a medium sits in; None when its Parent names none."""
    try:
        return call.txn.get(ObjectPath.parse(str(medium["Parent"] or "")))
    except CimInvalidParameter:
        return None


def _check_ide_disk_still(call: Call, vm: Record, drive: Record | None) -> None:
    """Refuse a change of the virtual hard disk in a disk drive on IDE while the VM runs.
    Hyper-V changes a VM's IDE disks only while it is off (Hyper-V Manager offers no
    change to them on a running VM; DVD media on IDE do change); Microsoft's WMI
    documentation names no code for it, so the emulator answers as for every other IDE
    change of a running VM (``codes.CHANGE_WHILE_RUNNING``)."""
    if (drive is not None and model.is_running(vm) and _kind(drive) == ResourceType.DISK_DRIVE
            and _on_ide(call, drive)):
        raise _refuse(codes.CHANGE_WHILE_RUNNING,
                      "the virtual hard disk of an IDE drive cannot change while the VM runs")


def _note_parents(call: Call, medium: Record, host_resource: tuple[str, ...],
                  disk: vhd.DiskInfo | None) -> None:
    """Keep the parents of the medium's disk ``host_resource`` (none for an ISO, whose
    ``disk`` is None) on it: a running VM holds them open too."""
    path = host_resource[0] if disk is not None and host_resource else None
    medium.meta[model.MEDIUM_PARENTS] = list(openfiles.parent_chain(call.host, path))


def check_medium_file(call: Call, host_resource: tuple[str, ...], iso: bool,
                      exclude: Record | None) -> vhd.DiskInfo | None:
    """The file must exist (and be a VHD/VHDX) and not already be attached elsewhere;
    the disk as its headers describe it (None for an ISO)."""
    if not host_resource or not host_resource[0]:
        raise _refuse(ReturnCode.INVALID_PARAMETER, "HostResource must name the image file")
    path = host_resource[0]
    try:
        local = call.host.paths.local(path)
    except HostPathError as error:
        raise _refuse(ReturnCode.INVALID_PARAMETER, str(error)) from None
    if not local.is_file():
        raise _refuse(ReturnCode.FILE_NOT_FOUND, f"the file {path} does not exist")
    return None if iso else _check_disk_file(call, path, local, exclude)


def _check_disk_file(call: Call, path: str, local: Path, exclude: Record | None
                     ) -> vhd.DiskInfo:
    try:
        disk = vhd.read_info(local)
    except vhd.VhdError as error:
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"{path} is not a virtual hard disk: {error}"
                      ) from None
    for other in model.media_of_file(call.txn, path):
        resources = other["HostResource"]
        if other is exclude or not isinstance(resources, tuple) or not resources:
            continue
        if model.guid_of(other) and call.host.paths.same(str(resources[0]), path):
            raise _refuse(ReturnCode.SYSTEM_IN_USE, f"{path} is already attached to a VM")
    return disk


def _check_nic(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    guid = str(vm["Name"])
    if model.is_running(vm) and not hot_nics(call, vssd):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "network adapters can be added to a running "
                      "VM of generation 2 only, on Windows Server 2016 or later")
    if _count(call, guid, ResourceType.ETHERNET_ADAPTER) >= MAX_NICS:
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"a VM has at most {MAX_NICS} adapters")
    _set_mac(rec, item)
    if not item.strings("VirtualSystemIdentifiers"):
        rec["VirtualSystemIdentifiers"] = (f"{{{uuid.uuid4()}}}",)
    return ""


def hot_nics(call: Call, vssd: Record | None) -> bool:
    """Whether the VM gains and loses network adapters while it runs: generation 2 on a
    host of Windows Server 2016 or later."""
    return vssd is not None and model.generation(vssd) == 2 and (
        call.host.os_major >= codes.HOT_ADD_NICS_SINCE_MAJOR)


def _set_mac(rec: Record, item: Embedded) -> None:
    address = (item.text("Address") or "").replace(":", "").replace("-", "")
    if item.get("StaticMacAddress") is True:
        if len(address) != 12 or any(c not in "0123456789abcdefABCDEF" for c in address):
            raise _refuse(ReturnCode.INVALID_PARAMETER,
                          f"static MAC address {item.text('Address')!r} is not 12 hex digits")
        rec["Address"] = address.upper()
    else:
        rec["Address"] = "00155D" + uuid.uuid4().hex[:6].upper()
        rec["StaticMacAddress"] = False


def _check_port(call: Call, vm: Record, vssd: Record, item: Embedded, rec: Record) -> str:
    guid = str(vm["Name"])
    nic = _parent(call, item, guid, (ResourceType.ETHERNET_ADAPTER,), "network adapter")
    if any(r.class_def is item.class_def for r in _children(call, guid, nic)):
        raise _refuse(codes.SLOT_IN_USE, "the network adapter already has a connection")
    connect_port(call, rec, item.strings("HostResource"))
    rec["Parent"] = str(nic.path)
    if rec["EnabledState"] is None:
        rec["EnabledState"] = codes.EnabledState.ENABLED
    return "\\C"


def connect_port(call: Call, rec: Record, host_resource: tuple[str, ...]) -> None:
    """Point a port at a vSwitch (or at nothing); the switch must exist."""
    if not host_resource or not host_resource[0]:
        rec["HostResource"] = ()
        return
    try:
        switch = call.txn.get(ObjectPath.parse(host_resource[0]))
    except CimInvalidParameter:
        switch = None
    if switch is None or switch.class_def.name != "Msvm_VirtualEthernetSwitch":
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"HostResource {host_resource[0]!r} is not a virtual switch of this host")
    rec["HostResource"] = (str(switch.path),)
    rec["LastKnownSwitchName"] = switch["ElementName"]


# --- ModifyResourceSettings ---------------------------------------------------------------


@handles(VSMS, "ModifyResourceSettings")
def modify_resource_settings(call: Call) -> Mapping[str, OutValue]:
    changed = []
    for item in call.embedded_list("ResourceSettings"):
        current = _existing(call, item)
        guid = model.guid_of(current) or ""
        vm = call.txn.get(model.vm_path(guid))
        if vm is None:
            raise MethodError(ReturnCode.INVALID_PARAMETER, f"{current.path} has no VM",
                              immediate=True)
        check_not_changing(call, vm, "no setting can be changed of")
        changed.append(_modify(call, vm, current, item).path)
    return {"ResultingResourceSettings": tuple(changed)}


def _existing(call: Call, item: Embedded) -> Record:
    instance_id = item.text("InstanceID") or ""
    path = ObjectPath.for_keys(item.class_def.name, InstanceID=instance_id)
    record = call.txn.get(path) if instance_id else None
    if record is None or model.guid_of(record) is None:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"no resource setting {instance_id!r} of class {item.class_def.name}",
                          immediate=True)
    return record


def _modify(call: Call, vm: Record, current: Record, item: Embedded) -> Record:
    for fixed in ("ResourceType", "ResourceSubType"):
        if fixed in item.values and item.values[fixed] != current[fixed]:
            raise _refuse(ReturnCode.INVALID_PARAMETER, f"{fixed} cannot change")
    name = current.class_def.name
    if name == "Msvm_ProcessorSettingData":
        _check_processor(call, vm, current, item)
    elif name == "Msvm_MemorySettingData":
        _check_memory(call, vm, current, item)
    record = call.txn.edit(current.path)
    assert record is not None
    _apply_changes(call, vm, record, item)
    return record


def _changes(current: Record, item: Embedded, name: str) -> bool:
    return name in item.values and item.values[name] != current[name]


def _check_processor(call: Call, vm: Record, current: Record, item: Embedded) -> None:
    if _sizes_fixed(vm) and _changes(current, item, "VirtualQuantity"):
        raise _refuse(codes.CHANGE_WHILE_RUNNING,
                      "the processor count of a running, paused or saved VM is fixed")
    if _sizes_fixed(vm) and _changes(current, item, "LimitProcessorFeatures"):
        # Microsoft: processor compatibility is changed while the VM is shut down.
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "processor compatibility "
                      "(LimitProcessorFeatures) of a running, paused or saved VM is fixed")
    count = item.integer("VirtualQuantity")
    if count is not None and not 1 <= count <= call.host.config.cpus:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"VirtualQuantity {count} is outside 1..{call.host.config.cpus}, the "
                      "host's logical processors")
    generation = _generation(call, vm)
    most, _, release = call.host.vm_maximums(generation)
    if count is not None and count > most:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"VirtualQuantity {count} is more than the {most} virtual processors "
                      f"{release} gives a generation {generation} virtual machine")
    limit = item.integer("Limit")
    if limit is not None and not 0 <= limit <= 100000:
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"Limit {limit} is outside 0..100000")
    weight = item.integer("Weight")
    if weight is not None and not 0 <= weight <= 10000:
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"Weight {weight} is outside 0..10000")


def _generation(call: Call, vm: Record) -> int:
    vssd = call.txn.get(model.vssd_path(str(vm["Name"])))
    return model.generation(vssd) if vssd is not None else 1


def _check_memory(call: Call, vm: Record, current: Record, item: Embedded) -> None:
    if _sizes_fixed(vm) and any(
        _changes(current, item, n) for n in ("VirtualQuantity", "DynamicMemoryEnabled")
    ):
        raise _refuse(codes.CHANGE_WHILE_RUNNING,
                      "the memory of a running, paused or saved VM is fixed")
    size = item.integer("VirtualQuantity")
    if size is not None and size < MEMORY_MIN_MB:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"VirtualQuantity {size} MB is below {MEMORY_MIN_MB} MB")
    # Hyper-V takes memory sizes in whole 2 MB units only, static or dynamic: New-VM with
    # 4019 MB fails with "The memory value assigned ('4019' MB) is not properly aligned",
    # and Microsoft's hcsshim rounds a utility VM's memory up to 2 MB for that reason.
    # Microsoft's WMI documentation does not state it.
    for name in ("VirtualQuantity", "Reservation", "Limit"):
        value = item.integer(name)
        if value is not None and value % MEMORY_ALIGN_MB:
            raise _refuse(ReturnCode.INVALID_PARAMETER,
                          f"Invalid memory value assigned: {name} ('{value}' MB) is not "
                          f"properly aligned (a multiple of {MEMORY_ALIGN_MB} MB)")
    _check_memory_maximum(call, vm, current, item)
    _check_dynamic_memory(vm, current, item)


def _check_memory_maximum(call: Call, vm: Record, current: Record, item: Embedded) -> None:
    """The startup memory, and with dynamic memory the maximum (Limit), as they stand
    after the change, within what the host's release gives a VM of its generation
    (``codes.VM_MAXIMUMS``). With static memory Hyper-V uses VirtualQuantity alone, so
    Limit is not held to it then (the emulator's choice, as in ``_check_dynamic_memory``)."""
    def after(name: str) -> int:
        value = item.values[name] if name in item.values else current[name]
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    generation = _generation(call, vm)
    _, most, release = call.host.vm_maximums(generation)
    dynamic = item.values.get("DynamicMemoryEnabled", current["DynamicMemoryEnabled"])
    for name in ("VirtualQuantity", "Limit") if dynamic else ("VirtualQuantity",):
        if after(name) > most:
            raise _refuse(ReturnCode.INVALID_PARAMETER,
                          f"Invalid memory value assigned: {name} ('{after(name)}' MB) is more "
                          f"than the {most} MB {release} gives a generation {generation} "
                          "virtual machine")


def _check_dynamic_memory(vm: Record, current: Record, item: Embedded) -> None:
    """The sizes of a VM with dynamic memory, as they stand after the change: the minimum
    (Reservation) at least 32 MB, the startup memory (VirtualQuantity) between it and the
    maximum (Limit), as Hyper-V Manager and Set-VMMemory demand. While the VM runs the
    maximum may only grow and the minimum only shrink (Windows Server 2012 R2 on). With
    static memory Hyper-V uses VirtualQuantity alone; the emulator does not check the
    other two then, where Microsoft does not say whether Hyper-V does."""
    def after(name: str) -> CimValue:
        return item.values[name] if name in item.values else current[name]

    if not after("DynamicMemoryEnabled"):
        return
    sizes = {name: after(name) for name in ("Reservation", "VirtualQuantity", "Limit")}
    least, startup, most = (int(v) if isinstance(v, int) else 0 for v in sizes.values())
    if least < MEMORY_MIN_MB:
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"Invalid minimum memory: Reservation "
                      f"('{least}' MB) is below {MEMORY_MIN_MB} MB")
    if not least <= startup <= most:
        raise _refuse(ReturnCode.INVALID_PARAMETER,
                      f"Invalid dynamic memory: the startup memory ('{startup}' MB) must lie "
                      f"between the minimum ('{least}' MB) and the maximum ('{most}' MB)")
    if _sizes_fixed(vm) and (least > current.integer("Reservation")
                                 or most < current.integer("Limit")):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "the minimum memory of a running VM can "
                      "only shrink and its maximum only grow")


def _apply_changes(call: Call, vm: Record, record: Record, item: Embedded) -> None:
    guid = str(vm["Name"])
    values: dict[str, CimValue] = {k: v for k, v in item.values.items() if k != "InstanceID"}
    kind = _kind(record)
    if record.class_def.name == "Msvm_StorageAllocationSettingData" and "HostResource" in values:
        iso = record["ResourceSubType"] == codes.SUBTYPE_ISO
        _check_ide_disk_still(call, vm, _drive_of(call, record))
        disk = check_medium_file(call, item.strings("HostResource"), iso, exclude=record)
        _note_parents(call, record, item.strings("HostResource"), disk)
    if record.class_def.name == "Msvm_EthernetPortAllocationSettingData" and (
        "HostResource" in values
    ):
        connect_port(call, record, item.strings("HostResource"))
        values.pop("HostResource")
    if kind in _DRIVES and ("Parent" in values or "AddressOnParent" in values):
        controller = _parent(call, Embedded(item.class_def, {"Parent": values.get(
            "Parent", record["Parent"])}), guid, _CONTROLLERS, "controller")
        wanted = values.get("AddressOnParent", record["AddressOnParent"])
        values["AddressOnParent"] = str(_free_slot(call, guid, controller, str(wanted), record))
    record.update(values)


# --- RemoveResourceSettings ---------------------------------------------------------------


@handles(VSMS, "RemoveResourceSettings")
def remove_resource_settings(call: Call) -> Mapping[str, OutValue]:
    """Removes settings; a controller takes its drives, a drive its medium, a NIC its port."""
    for path in call.paths("ResourceSettings"):
        record = call.require(path, "resource setting")
        guid = model.guid_of(record)
        vm = call.txn.get(model.vm_path(guid)) if guid else None
        if vm is None:
            raise MethodError(ReturnCode.INVALID_PARAMETER, f"{path} belongs to no VM",
                              immediate=True)
        _check_removal(call, vm, record)
        _remove_tree(call, str(vm["Name"]), record)
    return {}


def _check_removal(call: Call, vm: Record, record: Record) -> None:
    name, kind = record.class_def.name, _kind(record)
    if name in ("Msvm_ProcessorSettingData", "Msvm_MemorySettingData",
                "Msvm_KvpExchangeComponentSettingData"):
        raise _refuse(ReturnCode.INVALID_PARAMETER, f"a VM's {name} cannot be removed")
    _check_devices_changeable(vm, "removed from")
    check_not_changing(call, vm, "no device can be removed from")
    if not model.is_running(vm):
        return
    vssd = call.txn.get(model.vssd_path(str(vm["Name"])))
    if kind in _CONTROLLERS or (kind == ResourceType.ETHERNET_ADAPTER
                                and not hot_nics(call, vssd)):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, f"{name} cannot be removed while the VM runs")
    if kind in _DRIVES and _on_ide(call, record):
        raise _refuse(codes.CHANGE_WHILE_RUNNING, "IDE drives cannot change while the VM runs")
    if record.class_def.name == "Msvm_StorageAllocationSettingData":
        _check_ide_disk_still(call, vm, _drive_of(call, record))


def _on_ide(call: Call, drive: Record) -> bool:
    parent = call.txn.get(ObjectPath.parse(str(drive["Parent"])))
    return parent is not None and _kind(parent) == ResourceType.IDE_CONTROLLER


def _remove_tree(call: Call, guid: str, record: Record) -> None:
    for child in list(_children(call, guid, record)):
        _remove_tree(call, guid, child)
    for feature in list(model.feature_records(call.txn, record)):
        call.txn.delete(feature.path)
    bootsources.remove_source(call, record)
    if record.class_def.name == "Msvm_SyntheticEthernetPortSettingData":
        call.txn.delete(model.guest_network_path(record))  # none when the VM is off
    call.txn.delete(record.path)
