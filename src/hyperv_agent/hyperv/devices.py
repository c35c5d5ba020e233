"""A VM's storage controllers, disk drives and DVD drives, added while it is built.

Round trips once a session is warm (job polls not counted, W = job waits):

===========================  ==============================================================
``add_scsi_controller``      1 call + 1 W
``attach_disk``              2 calls + 2 W (drive, then medium)
``attach_empty_dvd``         1 call + 1 W
``controllers``              1 query
===========================  ==============================================================

Arguments are checked before anything is created (``InvalidRequest``); a failed medium
removes its new drive again. Nothing here touches a file. Drives of a VM that exists are
changed by ``drives``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.hyperv import settings
from hyperv_agent.hyperv.schema import NAMESPACE, SCSI_SLOTS, Class, ResourceType, Subtype
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef


@dataclass(frozen=True)
class DiskRef:
    """A drive and the medium (VHD, VHDX or ISO) in it."""

    drive: ObjectPath
    medium: ObjectPath


@dataclass(frozen=True)
class Controllers:
    """A VM's storage controllers: IDE by Address ("0", "1"), SCSI in WMI's order."""

    ide: tuple[ObjectPath, ...]
    scsi: tuple[ObjectPath, ...]


async def add_scsi_controller(hv: HyperV, vm: VmRef) -> ObjectPath:
    """Add a synthetic SCSI controller to the VM (which must be off); its path.

    Missing VM: HyperVError (Hyper-V refuses the call). Not idempotent: each call adds a
    controller (Hyper-V allows 4). Afterwards the VM has one more, empty, controller. On
    failure nothing was added and nothing needs cleaning up. 1 call + 1 W when warm.
    """
    template = await settings.default_setting(hv, Class.RASD, Subtype.SCSI_CONTROLLER)
    controller = template.updated(VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])
    return await settings.step("adding a SCSI controller", settings.add_setting(hv, vm, controller))


async def controllers(hv: HyperV, vm: VmRef) -> Controllers:
    """The VM's IDE and SCSI controllers; 1 query, read-only, safe to repeat.

    Missing VM or a generation 2 VM without controllers: empty tuples.
    """
    kinds = wql.any_of("ResourceType", [int(ResourceType.IDE_CONTROLLER),
                                        int(ResourceType.SCSI_CONTROLLER)])
    query = wql.select(Class.RASD, settings.device_prefix(vm.guid) & kinds,
                       ("InstanceID", "ResourceType", "Address"))
    found = [c for c in await hv.cim.query(query, NAMESPACE) if c.path is not None]
    ide = sorted((c for c in found if c.integer("ResourceType") == ResourceType.IDE_CONTROLLER),
                 key=lambda c: c.string("Address") or "")
    scsi = [c for c in found if c.integer("ResourceType") == ResourceType.SCSI_CONTROLLER]
    return Controllers(tuple(_path(c) for c in ide), tuple(_path(c) for c in scsi))


def _path(instance: CimInstance) -> ObjectPath:
    assert instance.path is not None  # filtered by the caller
    return instance.path


async def attach_disk(
    hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int, path: str, *, dvd: bool = False
) -> DiskRef:
    """Add a drive at ``slot`` of ``controller`` and put the image at ``path`` in it.

    A hard disk drive with a VHD/VHDX medium, or with ``dvd`` a DVD drive with an ISO.
    ``path`` is a path on the Hyper-V host. Missing VM, controller or file, a used slot or
    an image attached elsewhere: HyperVError naming the step. Not idempotent: a repeat
    finds the slot taken and fails with nothing changed. Afterwards the image is attached.
    If the medium fails, the new drive is removed again, so nothing is left. The file is
    never touched. 2 calls + 2 W when warm.
    """
    _check_slot(slot)
    if not path.strip():
        raise InvalidRequest("the image path is empty")
    drive = await _new_drive(hv, vm, controller, slot, dvd=dvd)
    template = await settings.default_setting(hv, Class.SASD,
                                              Subtype.ISO if dvd else Subtype.VHD)
    medium = template.updated(Parent=str(drive), HostResource=[path])
    attached = await settings.step(f"inserting {path}", settings.add_setting(hv, vm, medium),
                           lambda: settings.remove_settings(hv, [drive]))
    return DiskRef(drive, attached)


async def attach_empty_dvd(hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int) -> ObjectPath:
    """Add an empty DVD drive at ``slot`` of ``controller``; its path.

    Generation 1 takes DVD drives on IDE only, generation 2 on SCSI. Missing VM or
    controller, or a used slot: HyperVError, nothing changed. Not idempotent: a repeat
    finds the slot taken. Afterwards the drive is there without a medium. Nothing needs
    cleaning up on failure. 1 call + 1 W when warm.
    """
    _check_slot(slot)
    drive = await _drive(hv, Subtype.DVD_DRIVE, controller, slot)
    return await settings.step("adding a DVD drive", settings.add_setting(hv, vm, drive))


async def _new_drive(hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int, *,
                     dvd: bool) -> ObjectPath:
    if dvd:
        return await attach_empty_dvd(hv, vm, controller, slot)
    drive = await _drive(hv, Subtype.DISK_DRIVE, controller, slot)
    return await settings.step("adding a disk drive", settings.add_setting(hv, vm, drive))


async def _drive(hv: HyperV, subtype: str, controller: ObjectPath, slot: int) -> CimInstance:
    return (await settings.default_setting(hv, Class.RASD, subtype)).updated(
        Parent=str(controller), AddressOnParent=str(slot))


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SCSI_SLOTS:
        raise InvalidRequest(f"slot {slot} is outside 0..{SCSI_SLOTS - 1}")
