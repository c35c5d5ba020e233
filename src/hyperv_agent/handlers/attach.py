"""Attach and detach: AttachCommand / DettachCommand for data volumes and ISOs,
AttachIsoCommand, and GetVmDiskStatsCommand (protocol §5.1, §11).

A data volume (``disk.type`` DATADISK, a VolumeObjectTO on a primary pool) goes on the
SCSI controller and slot its ``disk.diskSeq`` maps to (``start_plan.scsi_place``, as
StartCommand places it: 0..63 on the first controller, 64 and 65 on the second), or,
when the VM's ``dataDiskController`` (``controllerInfo``) is ``ide`` and the VM is
generation 1, on the first free IDE place beside its root disk and CD (Hyper-V adds IDE
drives to stopped VMs only, so a running VM's answer fails saying so); an ISO
(``disk.type`` ISO, a TemplateObjectTO on a cifs image store) goes in the VM's DVD
drive. Every path is resolved and confined to its pool or share by
``handlers.datapaths`` before the VM is looked at, and a file to attach must exist; bad
input fails the answer with nothing changed. A ``vmName`` that can name no VM (blank, or
holding a character XML cannot carry) fails it before anything else (``vm.named_vm``).
Each command holds the VM's lock (shared with the other VM handlers); an attach of a
data volume holds the volume's file lock too, inside the VM's, as StartCommand holds its
disks' (shared with the commands that copy, move or delete files), and looks for the
file under it: a delete, copy or move of that volume runs wholly before the attach
(which then finds no file, or attaches the file as the copy or move left it) or wholly
after it (which then finds the volume in the VM).

Choices, and why:

- VM not on this host: success, with ``details`` saying so. The MS attaches and
  detaches volumes of a stopped VM in its database and passes them in the next
  StartCommand, so there is nothing to do here (the C# agent answers the same, silently).
- Detaching a volume the VM does not hold: a failure, "the disk image is not attached"
  (the C# agent's answer, and KVM's). A success would tell the MS the VM changed when it
  did not, and hide a mismatch between the MS's records and the host (for example, a
  volume attached under another file name); the failure names the file and the VM. The
  way out for an operator is to detach while the VM is stopped, which needs no host.
- Detaching an ISO the VM does not hold: success, nothing changed, when the VM's DVD drive
  is empty (or it has none), which is what the MS asks for; so a retry after a lost
  answer succeeds, as XenServer's resource answers it. Without that, the MS, which keeps
  the VM's ISO in its records after a failed detach, could not detach it again while the
  VM runs. A DVD drive holding another ISO is a mismatch: a failure naming both, nothing
  ejected (that ISO may be one the MS does not know of).
- Attaching what is already attached at that place: success, nothing changed, so a
  retry after a lost answer is safe.
- A paused VM (Hyper-V pauses one whose disk's volume ran out of space) or a saved one:
  Hyper-V adds and removes none of its drives and media, so a command that would is a
  failure saying so, with nothing changed and no call made (``vms.devices_fixed``);
  the MS reports the failure and keeps its records as they were. What needs no change
  (already attached, not attached, the DVD drive already empty) answers as for any VM.
- A VM Hyper-V is starting, stopping or saving: waited for first, within the job wait
  and the command's bound (``jobs.command_bound``: half the command's ``wait``;
  ``power.find_settled``; Hyper-V changes no drive meanwhile, and a starting VM reads as
  running, a stopping one as off), then treated as it then is; one still changing after
  that fails the answer, naming the change, with nothing changed.
- A VM being migrated live (an operator's Move-VM): Hyper-V takes no drive change of it
  until the move is done (32775); the answer fails saying the VM is being migrated and to
  try again once the move is done (``vms.unless_migrating``), with nothing changed.
"""

from __future__ import annotations

import contextlib
import logging
import ntpath
from dataclasses import dataclass

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    Answer,
    AttachAnswer,
    DettachAnswer,
    GetVmDiskStatsAnswer,
)
from hyperv_agent.cloudstack.commands_storage import AttachCommand, DettachCommand
from hyperv_agent.cloudstack.commands_vm import AttachIsoCommand, GetVmDiskStatsCommand
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    VmDiskStatsEntry,
    VolumeObjectTO,
)
from hyperv_agent.errors import HyperVError, InvalidRequest, PathNotAllowed
from hyperv_agent.handlers import datapaths, start_plan
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.handlers.vm import VmLocks, named_vm
from hyperv_agent.hostfs import images, locations
from hyperv_agent.hyperv import disks, diskstats, drives, jobs, power, vms
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.handlers.attach")


DATADISK = "DATADISK"
ISO = "ISO"


@dataclass(frozen=True)
class _Image:
    """What a command asks for: a data volume or an ISO, as a host path."""

    kind: str  # DATADISK or ISO
    path: str


class AttachHandlers:
    """Attach, Dettach, AttachIso and GetVmDiskStats, sharing the VM lock table ``locks``
    (and with an attach of a volume the file lock table ``file_locks``)."""

    def __init__(self, hv: HyperV, paths: DataPaths, locks: VmLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
                 file_locks: FileLocks | None = None) -> None:
        self.hv = hv
        self.paths = paths
        self.locks = locks
        # the file lock table shared with the commands that write or delete files: an
        # attach holds its volume's, as StartCommand holds its disks'
        self.file_locks = file_locks if file_locks is not None else FileLocks()
        # how long a VM Hyper-V is starting, stopping, ... is waited for (``power.settle``)
        self.job_wait = job_wait

    def table(self) -> Routes:
        """The handlers of this module by command FQCN (for ``Dispatch``)."""
        return {
            names.ATTACH_COMMAND: Route(AttachCommand, self.attach),
            names.DETTACH_COMMAND: Route(DettachCommand, self.dettach),
            names.ATTACH_ISO_COMMAND: Route(AttachIsoCommand, self.attach_iso),
            names.GET_VM_DISK_STATS_COMMAND: Route(GetVmDiskStatsCommand, self.disk_stats),
        }

    # --- AttachCommand ------------------------------------------------------------------

    async def attach(self, asked: AttachCommand) -> Result:
        """Attach ``disk`` to the VM ``vmName`` (running or stopped).

        DATADISK: the volume file goes where ``diskSeq`` (0..65) maps to: SCSI controller
        0 at slot ``diskSeq``, or for 64 and 65 controller 1 at slot ``diskSeq - 64``; a
        slot holding something else is refused, and so is a controller a running VM does
        not have (Hyper-V adds controllers to stopped VMs only; the answer says so).
        With ``controllerInfo`` ``dataDiskController`` ``ide`` a generation 1 VM takes the
        volume on IDE instead (``drives.attach_volume``): only while it is stopped, and
        while an IDE place is free, or the failed answer says which; a generation 2 VM, which
        has no IDE, takes it at its SCSI place, the details saying so. A value naming no
        controller: a failed answer (``start_plan.disk_controllers``).
        ISO: the ISO goes in the DVD drive, replacing another ISO; a drive is added when
        the VM has none and Hyper-V allows it. An ISO disk naming no ISO (a
        TemplateObjectTO without ``path``) leaves the DVD drive empty: an ISO in it is
        ejected, a missing drive added empty. Already attached there: success, nothing
        changed. Another disk type, a path outside its store, a missing file or a bad
        ``diskSeq``: a failed answer, nothing changed; so is a volume in a drive of
        another VM (Hyper-V refuses it; the answer names that VM). VM not on this host: success,
        nothing done (details say so). A failed Hyper-V step leaves the VM as it was (a
        half-added drive is removed again).
        """
        disk, vm_name = asked.disk, named_vm(asked.vm_name)
        if _kind(disk) not in (DATADISK, ISO):
            raise InvalidRequest(_invalid_type(disk, f"attached to vm {vm_name}"))
        details = await self._attach(disk, vm_name, asked.controller_info)
        return AttachAnswer(result=True, disk=disk, details=details)

    async def _attach(self, disk: DiskTO, vm_name: str,
                      controller_info: dict[str, str] | None) -> str:
        if start_plan.is_empty_dvd(disk):
            return await self._empty_dvd(vm_name)
        volume = _kind(disk) == DATADISK
        image = await self._image(disk, existing=not volume)  # a volume: under its lock
        controller, slot = _scsi_place(disk) if volume else (0, 0)
        ide = volume and start_plan.data_disk_controller(
            controller_info, "controllerInfo") == start_plan.IDE
        # the VM's lock, then the volume's (every command takes a VM's before a file's): a
        # delete, copy or move of the volume waits for the attach, or the attach for it
        file_lock = self.file_locks.hold(image.path) if volume else contextlib.nullcontext()
        async with self.locks.hold(vm_name), file_lock:
            if volume:
                await self._volume_present(disk)
            vm = await power.find_settled(self.hv, vm_name, self.job_wait)
            if vm is None:
                return _absent(vm_name, "nothing was attached now; CloudStack attaches the "
                                        "disk when the VM next starts")
            async with vms.unless_migrating(self.hv, vm, "the attach"):
                if image.kind == DATADISK:
                    placed = await self._attach_volume(vm, slot, image.path, controller, ide)
                else:
                    placed = await drives.insert_iso(self.hv, vm, image.path)
        return _placed(image.path, vm_name, placed)

    async def _volume_present(self, disk: DiskTO) -> None:
        """InvalidRequest naming the data volume's file when it is not there, or its pool
        when that cannot be reached (``DataPaths.present``): looked for under the file's
        lock, so a delete that came first is seen (its links were checked before; 1 call)."""
        data = disk.data
        assert isinstance(data, VolumeObjectTO)  # ``_image`` resolved it as one
        await self.paths.volume_file(data, f"disk {DATADISK}", check_links=False,
                                     existing=True)

    async def _attach_volume(self, vm: vms.VmRef, slot: int, path: str, controller: int,
                             ide: bool) -> drives.Placed:
        """``drives.attach_volume`` (on IDE with ``ide``, the VM's ``dataDiskController``;
        a refusal then says so); when Hyper-V refuses because another VM holds the file,
        InvalidRequest naming that VM (Hyper-V's own answer names no VM; looked up, 1
        query + 1 get, only after a refusal)."""
        try:
            return await drives.attach_volume(self.hv, vm, slot, path, controller=controller,
                                              ide=ide)
        except InvalidRequest as error:
            if not ide:
                raise
            raise InvalidRequest(
                f"{error} (the VM's {start_plan.DATA_DISK_CONTROLLER} is {start_plan.IDE}; "
                f"with {start_plan.SCSI} its volumes go on SCSI, where Hyper-V adds them to "
                "a running VM too)") from None
        except HyperVError:
            other = await disks.find_attachment(self.hv, path)
            if other is None or other.vm_guid == vm.guid:
                raise
            raise InvalidRequest(
                f"{path} is attached to VM {other.vm_name} ({other.power.value}), so Hyper-V "
                f"cannot attach it to VM {vm.name}; detach it from {other.vm_name} first"
            ) from None

    # --- DettachCommand -----------------------------------------------------------------

    async def dettach(self, asked: DettachCommand) -> Result:
        """Detach ``disk`` from the VM ``vmName``; the file stays where it is.

        DATADISK: the drive and its medium are removed from the VM. ISO: the ISO is
        ejected and the DVD drive stays; an ISO disk naming no ISO empties the DVD drive
        of whatever it holds (an empty drive: success, nothing changed). A volume not
        attached to the VM, or an ISO not in it while its DVD drive holds another: a
        failed answer, "the disk image is not attached", nothing changed; an ISO not in
        it while the drive is empty: success, nothing changed (see the module notes).
        Another disk type or a path outside its store: a failed answer. VM not on this
        host: success, nothing done (details say so).
        """
        disk, vm_name = asked.disk, named_vm(asked.vm_name)
        if _kind(disk) not in (DATADISK, ISO):
            raise InvalidRequest(_invalid_type(disk, f"dettached from vm {vm_name}"))
        if start_plan.is_empty_dvd(disk):
            return DettachAnswer(result=True, disk=disk,
                                 details=await self._empty_dvd(vm_name))
        image = await self._image(disk, check_links=False)  # the file is not opened
        details = await self._detach(image, vm_name)
        return DettachAnswer(result=True, disk=disk, details=details)

    async def _empty_dvd(self, vm_name: str) -> str:
        """The VM's DVD drive left empty (an ISO in it ejected, a missing one added);
        ``vm_name`` checked by the caller (``named_vm``)."""
        async with self.locks.hold(vm_name):
            vm = await power.find_settled(self.hv, vm_name, self.job_wait)
            if vm is None:
                return _absent(vm_name, "nothing was changed")
            async with vms.unless_migrating(self.hv, vm, "the DVD eject"):
                placed = await drives.empty_dvd(self.hv, vm)
        if not placed.changed:
            return f"the DVD drive at {placed.where} of VM {vm_name} is empty; nothing changed"
        return f"the DVD drive at {placed.where} of VM {vm_name} is now empty"

    async def _detach(self, image: _Image, vm_name: str) -> str:
        async with self.locks.hold(vm_name):
            vm = await power.find_settled(self.hv, vm_name, self.job_wait)
            if vm is None:
                return _absent(vm_name, "nothing to detach; the VM starts without the disk")
            async with vms.unless_migrating(self.hv, vm, "the detach"):
                if image.kind == ISO:
                    return await self._eject(vm, image.path)
                drive = await drives.detach_volume(self.hv, vm, image.path)
        if drive is None:
            raise InvalidRequest(_not_attached(image.path, vm_name))
        return f"{image.path} removed from {drive.where} of VM {vm_name}; the file is kept"

    async def _eject(self, vm: vms.VmRef, path: str) -> str:
        """The ISO ``path`` taken out of the VM's DVD drive; held by the caller's VM lock.
        Not in a drive: success when the DVD drive is empty or missing, else
        InvalidRequest naming what the drive holds (see the module notes)."""
        drive = await drives.eject_iso(self.hv, vm, path)
        if drive is not None:
            return (f"{path} ejected from the DVD drive at {drive.where} of VM {vm.name}; "
                    "the file is kept")
        cd = (await drives.read_storage(self.hv, vm)).dvd_drive()
        if cd is not None and cd.image is not None:
            raise InvalidRequest(f"the disk image is not attached: VM {vm.name} does not hold "
                                 f"{path}; its DVD drive at {cd.where} holds {cd.image}; "
                                 "nothing was changed")
        where = f"its DVD drive at {cd.where} is empty" if cd else "it has no DVD drive"
        return f"{path} is not in VM {vm.name}: {where}; nothing changed"

    # --- AttachIsoCommand ---------------------------------------------------------------

    async def attach_iso(self, asked: AttachIsoCommand) -> Result:
        """Insert (``attach`` true) or eject (false) the ISO ``isoPath`` of ``storeUrl``.

        The same operations as an ISO AttachCommand / DettachCommand, with the ISO named
        by a path or URL on the image store ``storeUrl`` instead of a TemplateObjectTO.
        A missing ``isoPath`` or ``storeUrl``, or a path outside the store: a failed
        answer, nothing changed. VM not on this host: success, nothing done.
        """
        return Answer(result=True, details=await self._attach_iso(asked))

    async def _attach_iso(self, asked: AttachIsoCommand) -> str:
        named_vm(asked.vm_name)
        if not asked.store_url:
            raise InvalidRequest("storeUrl is missing: the ISO's image store must be given")
        store = self.paths.image_store(asked.store_url, "storeUrl")
        relative = _iso_on_store(store, asked.store_url or "", asked.iso_path)
        path = datapaths.confined(store.root, relative)
        if asked.attach:
            path = await self.paths.present(
                store.root, await self.paths.file_in(store.root, relative, "isoPath",
                                                     images.ISO_SUFFIXES),
                "isoPath", "image store")
        async with self.locks.hold(asked.vm_name):
            vm = await power.find_settled(self.hv, asked.vm_name, self.job_wait)
            if vm is None:
                return _absent(asked.vm_name, "nothing was changed")
            async with vms.unless_migrating(self.hv, vm, "the ISO attach" if asked.attach
                                            else "the ISO eject"):
                if asked.attach:
                    return _placed(path, vm.name, await drives.insert_iso(self.hv, vm, path))
                return await self._eject(vm, path)

    # --- GetVmDiskStatsCommand ----------------------------------------------------------

    async def disk_stats(self, asked: GetVmDiskStatsCommand) -> Result:
        """One entry per virtual hard disk of each VM in ``vmNames``.

        ``path`` is the file name without its extension (the volume's uuid, as
        CloudStack names volume files); ``bytesRead``/``bytesWrite`` and
        ``ioRead``/``ioWrite`` are Hyper-V's resource-metering counters since metering
        began (``diskstats.DiskIo`` says what they measure). Metering is switched on at the
        first request for a VM, whose disks read 0 that time. Names of no VM are left
        out; a VM without disks maps to an empty list; a name that can name no VM (blank,
        or holding a character XML cannot carry) fails the answer saying which
        (``named_vm``), no round trip. Safe to repeat; 2 queries and one
        association lookup per disk, issued together, once metering runs
        (``diskstats.disk_stats``); none when no name is asked for.
        """
        for index, name in enumerate(asked.vm_names):
            named_vm(name, f"vmNames[{index}]")
        found = await diskstats.disk_stats(self.hv, asked.vm_names)
        return GetVmDiskStatsAnswer(result=True, host_name=asked.host_name, vm_disk_stats_map={
            name: [_stats_entry(name, disk) for disk in disks] for name, disks in found.items()
        })

    # --- files --------------------------------------------------------------------------

    async def _image(self, disk: DiskTO, *, check_links: bool = True,
                     existing: bool = False) -> _Image:
        """The host path of the disk's volume or ISO, below its pool or image store;
        ``existing``: the file must be there (``DataPaths.present``)."""
        kind = _kind(disk)
        return _Image(kind, await self.paths.disk_image(disk, kind, check_links=check_links,
                                                        existing=existing))


# --- pure helpers -------------------------------------------------------------------------


def _kind(disk: DiskTO) -> str:
    return str(disk.type).upper()


def _invalid_type(disk: DiskTO, action: str) -> str:
    shown = str(disk.type)[:40]
    return (f"Invalid disk type to be {action}: {shown!r}; only {DATADISK} and {ISO} "
            "disks can be attached and detached")


def _scsi_place(disk: DiskTO) -> tuple[int, int]:
    """The SCSI controller and slot of a data volume, as StartCommand places it."""
    if disk.disk_seq is None:
        raise InvalidRequest("disk DATADISK: diskSeq is missing; it names the SCSI slot")
    return start_plan.scsi_place(DATADISK, disk.disk_seq)


def _iso_on_store(store: locations.ShareLocation, store_url: str, iso_path: str | None
                  ) -> str:
    """``iso_path`` relative to the store: given so, or as a URL on it (the MS sends
    ``<storeUrl>/<path>``); PathNotAllowed for a URL of another share or folder."""
    text = (iso_path or "").strip()
    if not text:
        raise InvalidRequest("isoPath is missing")
    if text.startswith(store_url.strip()):
        text = text[len(store_url.strip()):]
    elif "://" in text:
        text = _relative_to(store, locations.parse_cifs_url(text))
    return text.lstrip("/\\")


def _relative_to(store: locations.ShareLocation, iso: locations.ShareLocation) -> str:
    """The folder of ``iso`` below ``store``; PathNotAllowed when it is not below it."""
    prefix = store.folder + "\\" if store.folder else ""
    same_share = (iso.server.casefold(), iso.share.casefold()) == (
        store.server.casefold(), store.share.casefold())
    if not same_share or not iso.folder.casefold().startswith(prefix.casefold()):
        raise PathNotAllowed(f"the ISO {iso.unc} is not on the image store {store.unc}")
    return iso.folder[len(prefix):]


def _absent(vm_name: str, outcome: str) -> str:
    return f"VM {vm_name} is not on this host; {outcome}"


def _not_attached(path: str, vm_name: str) -> str:
    return (f"the disk image is not attached: VM {vm_name} does not hold {path}; nothing "
            "was changed (a volume CloudStack still lists as attached can be detached "
            "while the VM is stopped)")


def _placed(path: str, vm_name: str, placed: drives.Placed) -> str:
    note = (f"; {start_plan.DATA_DISK_CONTROLLER} {start_plan.IDE} not followed: "
            f"{placed.note}") if placed.note else ""
    if not placed.changed:
        return (f"{path} was already attached to VM {vm_name} at {placed.where}; nothing "
                f"changed{note}")
    return f"{path} attached to VM {vm_name} at {placed.where}{note}"


def _stats_entry(vm_name: str, disk: diskstats.DiskIo) -> VmDiskStatsEntry:
    name = ntpath.basename(disk.image.replace("/", "\\"))
    return VmDiskStatsEntry(vm_name=vm_name, path=ntpath.splitext(name)[0],
                            io_read=disk.read_ios, io_write=disk.write_ios,
                            bytes_read=disk.read_bytes, bytes_write=disk.write_bytes)
