"""The drives of an existing VM: attach and detach data volumes, insert and eject ISOs
(the disk I/O of many VMs at once: ``diskstats``).

Everything starts from ``read_storage``: ONE query returns a VM's controllers, drives
and media (``CIM_ResourceAllocationSettingData`` by InstanceID prefix, which covers the
``Msvm_StorageAllocationSettingData`` media too). New drives and media are built by
``hyperv.devices`` from Hyper-V's templates (``settings``), so the kept templates are
shared with VM creation. Round trips once a session is warm (job polls not counted, W = job waits):

=====================  =================================================================
``read_storage``       1 query
``attach_volume``      3 calls + 2 W (query, drive, medium); 1 query when already there;
                       +1 call + 1 W for each SCSI controller a stopped VM lacks (none
                       on IDE)
``detach_volume``      2 calls + 1 W (query, one RemoveResourceSettings for medium and
                       drive); 1 query when the image is not attached
``insert_iso``         2 calls + 1 W with a DVD drive (query, insert or swap the medium);
                       3 calls + 2 W when a DVD drive has to be added
``eject_iso``          2 calls + 1 W; 1 query when the ISO is not in a drive
``change_iso``         2 calls + 1 W (get the medium, change its file)
=====================  =================================================================

Where things go (as StartCommand places them): a data volume on the SCSI controller and
slot its ``diskSeq`` maps to (``handlers.start_plan.scsi_place``: the first controller for
0..63, the second for 64 and 65); an ISO in the VM's DVD drive,
which on generation 1 sits on IDE controller 1 (slot 0 when it has to be added) and on
generation 2 on the first SCSI controller (lowest free slot when it has to be added).
Generation 1 VMs have IDE controllers and generation 2 VMs have none, so the storage
query also tells the generation.

A generation 1 VM whose data volumes are to be on IDE (``attach_volume``'s ``ide``) takes
them at the first free place of ``IDE_DATA_PLACES``, beside its root disk and CD.

Hyper-V changes the SCSI bus of a running VM (hot add and remove) but not its IDE bus
and not its controllers, and it adds and removes no drive or medium of a paused or saved
VM (``vms.devices_fixed``; swapping the ISO in a DVD drive changes a medium in place and
is left to Hyper-V): those refusals are raised as ``InvalidRequest`` before any call.
Nothing here deletes or changes a file: a detached volume and an ejected ISO stay where
they are.
"""

from __future__ import annotations

import logging
import ntpath
from collections.abc import Sequence
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.errors import (
    CimInvalidParameter,
    HyperVError,
    InvalidRequest,
)
from hyperv_agent.hyperv import devices, settings, vms
from hyperv_agent.hyperv.schema import (
    DVD_IDE_CONTROLLER,
    IDE_CONTROLLERS,
    IDE_DATA_PLACES,
    IDE_SLOTS,
    NAMESPACE,
    SCSI_CONTROLLERS_MAX,
    SCSI_SLOTS,
    Class,
    ResourceType,
    Subtype,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState, VmRef

log = logging.getLogger("hyperv_agent.hyperv.drives")

IDE = "ide"
SCSI = "scsi"
_STORAGE_KINDS = (ResourceType.IDE_CONTROLLER, ResourceType.SCSI_CONTROLLER,
                  ResourceType.DVD_DRIVE, ResourceType.DISK_DRIVE, ResourceType.LOGICAL_DISK)


# --- what a VM has ------------------------------------------------------------------------


@dataclass(frozen=True)
class Drive:
    """A disk or DVD drive of a VM, where it sits, and the medium in it (if any)."""

    path: ObjectPath
    dvd: bool
    bus: str  # IDE or SCSI
    controller: int  # IDE: the controller's Address; SCSI: its position in WMI's order
    slot: int
    medium: CimInstance | None  # the Msvm_StorageAllocationSettingData in the drive

    @property
    def image(self) -> str | None:
        """The host path of the medium's file; None for an empty drive."""
        if self.medium is None:
            return None
        files = self.medium.strings("HostResource")
        return files[0] if files else None

    @property
    def where(self) -> str:
        """``SCSI 0 slot 3`` / ``IDE 1 slot 0``."""
        return f"{self.bus.upper()} {self.controller} slot {self.slot}"

    def describe(self) -> str:
        kind = "DVD drive" if self.dvd else "disk drive"
        return f"a {kind} holding {self.image}" if self.image else f"an empty {kind}"


@dataclass(frozen=True)
class VmStorage:
    """A VM's storage controllers and drives, as one query found them."""

    ide: tuple[ObjectPath, ...]  # by Address ("0", "1")
    scsi: tuple[ObjectPath, ...]  # in WMI's order
    drives: tuple[Drive, ...]

    @property
    def generation(self) -> int:
        """1 when the VM has IDE controllers (generation 2 VMs have none), else 2."""
        return 1 if self.ide else 2

    def at(self, bus: str, controller: int, slot: int) -> Drive | None:
        return next((d for d in self.drives
                     if (d.bus, d.controller, d.slot) == (bus, controller, slot)), None)

    def holding(self, image: str) -> Drive | None:
        """The drive whose medium is the file ``image`` (Windows rules: case ignored)."""
        wanted = same_file_key(image)
        return next((d for d in self.drives
                     if d.image is not None and same_file_key(d.image) == wanted), None)

    def free_slot(self, bus: str, controller: int) -> int | None:
        used = {d.slot for d in self.drives if (d.bus, d.controller) == (bus, controller)}
        slots = IDE_SLOTS if bus == IDE else SCSI_SLOTS
        return next((slot for slot in range(slots) if slot not in used), None)

    def dvd_drive(self) -> Drive | None:
        """The DVD drive ISOs go in, the VM's CD as StartCommand places it: on generation 1
        the one at IDE 1 slot 0 if there is one, else the DVD drive at the lowest place
        (IDE before SCSI, then controller and slot), never the one in WMI's order. A
        second DVD drive, such as a config drive, sits at a higher place."""
        preferred = self.at(IDE, DVD_IDE_CONTROLLER, 0)
        if preferred is not None and preferred.dvd:
            return preferred
        dvds = [d for d in self.drives if d.dvd]
        return min(dvds, key=lambda d: (d.bus != IDE, d.controller, d.slot), default=None)


@dataclass(frozen=True)
class Placed:
    """Where an image is now, and whether this call put it there (False: it already was)."""

    where: str
    changed: bool
    note: str = ""  # why it is not where the caller asked (``attach_volume``'s ``ide``)


def same_file_key(path: str) -> str:
    """A comparison key for a Windows path: separators unified, case folded."""
    return ntpath.normcase(ntpath.normpath(path.replace("/", "\\")))


async def read_storage(hv: HyperV, vm: VmRef) -> VmStorage:
    """The VM's controllers, drives and media; 1 query, read-only, safe to repeat.

    Missing VM: empty (no controllers, no drives). Drives whose Parent is not one of the
    VM's controllers are left out.
    """
    condition = (wql.starts_with("InstanceID", f"Microsoft:{vm.guid}\\")
                 & wql.any_of("ResourceType", [int(kind) for kind in _STORAGE_KINDS]))
    found = [i for i in await hv.cim.query(wql.select(Class.RASD_BASE, condition), NAMESPACE)
             if i.path is not None]
    return _storage(found)


def _storage(found: Sequence[CimInstance]) -> VmStorage:
    ide = sorted((i for i in found if _kind(i) == ResourceType.IDE_CONTROLLER),
                 key=lambda c: c.string("Address") or "")
    scsi = [i for i in found if _kind(i) == ResourceType.SCSI_CONTROLLER]
    buses = {_path(c): (IDE, int(c.string("Address") or 0)) for c in ide}
    buses |= {_path(c): (SCSI, index) for index, c in enumerate(scsi)}
    media = {parent: m for m in found if m.is_a(Class.SASD) and (parent := _parent(m))}
    drives = []
    for item in found:
        parent = _parent(item)
        place = buses.get(parent) if parent is not None and _kind(item) in _DRIVE_KINDS else None
        if place is not None:
            drives.append(Drive(_path(item), _kind(item) == ResourceType.DVD_DRIVE, place[0],
                                place[1], _slot(item), media.get(_path(item))))
    return VmStorage(tuple(_path(c) for c in ide), tuple(_path(c) for c in scsi),
                     tuple(drives))


_DRIVE_KINDS = (ResourceType.DVD_DRIVE, ResourceType.DISK_DRIVE)


def _kind(item: CimInstance) -> int | None:
    return None if item.is_a(Class.SASD) else item.integer("ResourceType")


def _path(item: CimInstance) -> ObjectPath:
    assert item.path is not None  # filtered by read_storage
    return item.path


def _parent(item: CimInstance) -> ObjectPath | None:
    text = item.string("Parent")
    try:
        return ObjectPath.parse(text) if text else None
    except CimInvalidParameter:  # a Parent Hyper-V wrote is a path; anything else is ignored
        return None


def _slot(item: CimInstance) -> int:
    text = item.string("AddressOnParent") or ""
    return int(text) if text.isdigit() else -1


# --- data volumes -------------------------------------------------------------------------


async def attach_volume(hv: HyperV, vm: VmRef, slot: int, image: str, *,
                        controller: int = 0, ide: bool = False) -> Placed:
    """Attach the VHD/VHDX ``image`` to the VM's SCSI controller ``controller`` (its
    position in WMI's order, the order controllers were added; the first by default) at
    ``slot``; with ``ide``, on a generation 1 VM, to its IDE bus instead
    (``_attach_on_ide``), and on a generation 2 VM, which has no IDE controller, at that
    SCSI place, the ``note`` saying so.

    Works on a running VM (SCSI hot add) and on a stopped one. Safe to repeat: when the
    image already sits at that place nothing changes (``changed`` False). A slot outside
    0..63, a controller beyond Hyper-V's four, a place holding anything else, or the
    image attached elsewhere on this VM: InvalidRequest, nothing changed. A VM without
    that SCSI controller gets it (and any before it) when it is off; when it is not off:
    InvalidRequest naming the controller (Hyper-V adds controllers to stopped VMs only).
    Hyper-V's own refusals (file missing or attached to another VM) raise HyperVError; a
    failed medium removes the new drive again. The file is never changed.
    """
    _check_slot(slot)
    if not 0 <= controller < SCSI_CONTROLLERS_MAX:
        raise InvalidRequest(f"SCSI controller {controller} is outside "
                             f"0..{SCSI_CONTROLLERS_MAX - 1}")
    where = f"SCSI {controller} slot {slot}"
    storage = await read_storage(hv, vm)
    if ide and storage.generation == 1:
        return await _attach_on_ide(hv, vm, storage, image)
    note = "the VM is generation 2, which has no IDE controller" if ide else ""
    present = storage.holding(image)
    if present is not None:
        if (present.bus, present.controller, present.slot, present.dvd) == (
                SCSI, controller, slot, False):
            return Placed(present.where, changed=False, note=note)
        raise InvalidRequest(f"{image} is already attached to VM {vm.name} at "
                             f"{present.where}, not at {where}")
    taken = storage.at(SCSI, controller, slot)
    if taken is not None and (taken.dvd or taken.medium is not None):
        raise InvalidRequest(f"{where} of VM {vm.name} is taken by {taken.describe()}")
    _require_devices_changeable(vm)
    if taken is not None:  # an empty disk drive: fill it
        await _insert(hv, vm, taken.path, image, iso=False)
        return Placed(taken.where, changed=True, note=note)
    purpose = "attach a volume" if controller == 0 else f"attach a volume at {where}"
    path = await _scsi_controller(hv, vm, storage, purpose, controller)
    await devices.attach_disk(hv, vm, path, slot, image)
    return Placed(where, changed=True, note=note)


async def _attach_on_ide(hv: HyperV, vm: VmRef, storage: VmStorage, image: str) -> Placed:
    """Attach ``image`` to the first free place of the generation 1 VM's IDE bus in
    ``IDE_DATA_PLACES`` order (beside the root disk and the CD), as StartCommand places
    data volumes on IDE. Already on an IDE disk drive: nothing changes. Hyper-V adds no
    drive to the IDE bus of a VM that is not off, and IDE takes 4 devices in all (2
    controllers of 2 places): InvalidRequest saying so, nothing changed; so is the image
    attached elsewhere on the VM."""
    present = storage.holding(image)
    if present is not None and present.bus == IDE and not present.dvd:
        return Placed(present.where, changed=False)
    if present is not None:
        raise InvalidRequest(f"{image} is already attached to VM {vm.name} at "
                             f"{present.where}, not on IDE")
    if not _off(vm):
        raise InvalidRequest(
            f"VM {vm.name} is {_state(vm)}, and Hyper-V adds disks to the IDE bus of a "
            "generation 1 VM only while it is off; attach the volume while the VM is "
            "stopped")
    free = [(index, slot) for index, slot in IDE_DATA_PLACES
            if index < len(storage.ide) and storage.at(IDE, index, slot) is None]
    if not free:
        held = "; ".join(f"{d.where}: {d.describe()}" for d in sorted(
            (d for d in storage.drives if d.bus == IDE), key=lambda d: (d.controller, d.slot)))
        raise InvalidRequest(
            f"VM {vm.name} has no free IDE place for {image}: a generation 1 VM has "
            f"{IDE_CONTROLLERS} IDE controllers of {IDE_SLOTS} places each, and they hold "
            f"{held}")
    index, slot = free[0]
    await devices.attach_disk(hv, vm, storage.ide[index], slot, image)
    return Placed(f"{IDE.upper()} {index} slot {slot}", changed=True)


async def detach_volume(hv: HyperV, vm: VmRef, image: str) -> Drive | None:
    """Remove the disk drive holding ``image`` from the VM, medium and drive together.

    Returns the drive as it was; None when no disk drive of the VM holds the image
    (nothing changed, 1 query). A repeat therefore finds nothing and returns None.
    Afterwards the slot is free; the file stays on disk. Hyper-V removes no IDE drive
    from a VM that is not off: InvalidRequest saying so, before any call, nothing changed.
    """
    drive = (await read_storage(hv, vm)).holding(image)
    if drive is None or drive.dvd or drive.medium is None or drive.medium.path is None:
        return None
    _require_devices_changeable(vm)
    if drive.bus == IDE and not _off(vm):
        raise InvalidRequest(
            f"{image} is at {drive.where} of VM {vm.name}, which is {_state(vm)}, and "
            "Hyper-V removes disks from the IDE bus of a generation 1 VM only while it is "
            "off; detach the volume while the VM is stopped")
    await vms.call_service(hv, "RemoveResourceSettings",
                           {"ResourceSettings": [drive.medium.path, drive.path]})
    return drive


# --- ISOs ---------------------------------------------------------------------------------


async def insert_iso(hv: HyperV, vm: VmRef, image: str) -> Placed:
    """Put the ISO ``image`` in the VM's DVD drive (``VmStorage.dvd_drive``).

    An empty drive gets the medium; a drive holding another ISO has it swapped (the
    medium is changed in place); the same ISO already there: nothing changes (safe to
    repeat). A VM without a DVD drive gets one when Hyper-V allows it: on a stopped VM,
    or on a running generation 2 VM (SCSI); a running generation 1 VM cannot take a new
    IDE drive (InvalidRequest, nothing changed). The ISO file is never changed.
    """
    storage = await read_storage(hv, vm)
    present = storage.holding(image)
    if present is not None and present.dvd:
        return Placed(present.where, changed=False)
    drive = storage.dvd_drive()
    if drive is not None and drive.medium is not None:
        swapped = drive.medium.updated(HostResource=[image])
        await vms.call_service(hv, "ModifyResourceSettings", {"ResourceSettings": [swapped]})
        return Placed(drive.where, changed=True)
    _require_devices_changeable(vm)
    if drive is not None:
        await _insert(hv, vm, drive.path, image, iso=True)
        return Placed(drive.where, changed=True)
    controller, where, slot = await _new_dvd_place(hv, vm, storage)
    await devices.attach_disk(hv, vm, controller, slot, image, dvd=True)
    return Placed(where, changed=True)


async def eject_iso(hv: HyperV, vm: VmRef, image: str) -> Drive | None:
    """Take the ISO ``image`` out of the VM's DVD drive; the drive stays.

    Returns the drive as it was; None when no DVD drive holds that ISO (nothing
    changed), so a repeat returns None. Works on running VMs of both generations.
    """
    drive = (await read_storage(hv, vm)).holding(image)
    if drive is None or not drive.dvd or drive.medium is None or drive.medium.path is None:
        return None
    _require_devices_changeable(vm)
    await vms.call_service(hv, "RemoveResourceSettings",
                           {"ResourceSettings": [drive.medium.path]})
    return drive


async def change_iso(hv: HyperV, medium: ObjectPath, image: str) -> None:
    """Make the ISO medium ``medium`` (an Msvm_StorageAllocationSettingData in a DVD
    drive) name the ISO file ``image``: the medium changed in place, as ``insert_iso``
    swaps one, which Hyper-V does while the VM runs, on IDE as on SCSI (Set-VMDvdDrive
    -Path of a running VM); the guest sees its DVD drive's media change. The file is
    not touched. 2 calls + 1 W."""
    current = await hv.cim.get(medium)
    await vms.call_service(hv, "ModifyResourceSettings",
                           {"ResourceSettings": [current.updated(HostResource=[image])]})


async def empty_dvd(hv: HyperV, vm: VmRef) -> Placed:
    """The VM's DVD drive (``VmStorage.dvd_drive``) emptied: an ISO in it is taken out,
    the drive stays. A VM without a DVD drive gets an empty one where Hyper-V allows it
    (as ``insert_iso``); an empty drive: nothing changes, so a repeat is safe. No ISO
    file is touched. 1 query, + 1 call when an ISO is ejected or a drive added.
    """
    storage = await read_storage(hv, vm)
    drive = storage.dvd_drive()
    if drive is not None and (drive.medium is None or drive.medium.path is None):
        return Placed(drive.where, changed=False)
    _require_devices_changeable(vm)
    if drive is None or drive.medium is None or drive.medium.path is None:
        controller, where, slot = await _new_dvd_place(hv, vm, storage)
        await devices.attach_empty_dvd(hv, vm, controller, slot)
        return Placed(where, changed=True)
    await vms.call_service(hv, "RemoveResourceSettings",
                           {"ResourceSettings": [drive.medium.path]})
    return Placed(drive.where, changed=True)


async def _new_dvd_place(hv: HyperV, vm: VmRef, storage: VmStorage
                         ) -> tuple[ObjectPath, str, int]:
    """Controller, description and slot for a new DVD drive; InvalidRequest if none."""
    if storage.generation == 1:
        if vm.power is not PowerState.STOPPED:
            raise InvalidRequest(
                f"VM {vm.name} has no DVD drive, and Hyper-V cannot add one to a running "
                "generation 1 VM (its DVD drives sit on IDE); stop the VM and attach the "
                "ISO again")
        if len(storage.ide) <= DVD_IDE_CONTROLLER:
            raise HyperVError(f"VM {vm.name} has no IDE controller {DVD_IDE_CONTROLLER}")
        return (storage.ide[DVD_IDE_CONTROLLER],
                *_free(storage, IDE, DVD_IDE_CONTROLLER, vm.name))
    controller = await _scsi_controller(hv, vm, storage, "add a DVD drive")
    return (controller, *_free(storage, SCSI, 0, vm.name))


def _free(storage: VmStorage, bus: str, controller: int, vm_name: str) -> tuple[str, int]:
    slot = storage.free_slot(bus, controller)
    if slot is None:
        raise InvalidRequest(f"{bus.upper()} controller {controller} of VM {vm_name} has no "
                             "free slot for a DVD drive")
    return f"{bus.upper()} {controller} slot {slot}", slot


# --- shared steps -------------------------------------------------------------------------


def _require_devices_changeable(vm: VmRef) -> None:
    """InvalidRequest, before any call, when Hyper-V adds and removes no device of the VM
    (paused or saved: ``vms.devices_fixed``)."""
    reason = vms.devices_fixed(vm)
    if reason is not None:
        raise InvalidRequest(f"nothing was changed: {reason}")


async def _scsi_controller(hv: HyperV, vm: VmRef, storage: VmStorage, purpose: str,
                           index: int = 0) -> ObjectPath:
    """The VM's SCSI controller ``index`` (in WMI's order), added first, with any missing
    before it, when the VM is off and has too few; InvalidRequest when it is not off."""
    if index < len(storage.scsi):
        return storage.scsi[index]
    if vm.power is not PowerState.STOPPED:
        if not storage.scsi:
            raise InvalidRequest(
                f"VM {vm.name} has no SCSI controller to {purpose}, and Hyper-V adds "
                f"controllers to stopped VMs only (the VM is {vm.power.value}); stop the VM "
                "and try again")
        raise InvalidRequest(
            f"VM {vm.name} has no SCSI controller {index} (it has {len(storage.scsi)}) to "
            f"{purpose}, and Hyper-V adds controllers to stopped VMs only (the VM is "
            f"{vm.power.value}); attach the volume while the VM is stopped: the VM's next "
            "start adds the controller with it")
    added = [await devices.add_scsi_controller(hv, vm)
             for _ in range(index + 1 - len(storage.scsi))]
    return added[-1]


def _off(vm: VmRef) -> bool:
    """The VM is off, not on its way there: Hyper-V changes its IDE bus."""
    return vm.power is PowerState.STOPPED and not vm.stopping


def _state(vm: VmRef) -> str:
    return "stopping" if vm.stopping else vm.power.value


async def _insert(hv: HyperV, vm: VmRef, drive: ObjectPath, image: str, *, iso: bool) -> None:
    """Put a medium in the empty ``drive``: 1 call + 1 W."""
    template = await settings.default_setting(hv, Class.SASD, Subtype.ISO if iso else Subtype.VHD)
    medium = template.updated(Parent=str(drive), HostResource=[image])
    await vms.call_service(hv, "AddResourceSettings",
                           {"AffectedConfiguration": vm.path, "ResourceSettings": [medium]})


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SCSI_SLOTS:
        raise InvalidRequest(f"slot {slot} is outside 0..{SCSI_SLOTS - 1}")
