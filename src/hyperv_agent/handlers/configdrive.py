"""HandleConfigDriveIsoCommand: a VM's config drive ISO on its primary pool or in the
host's config drive cache.

CloudStack's ConfigDrive network element builds each VM's config drive (user data, SSH
key, password, metadata) into an ISO on the management server. With the zone setting
``vm.configdrive.primarypool.enabled`` it sends that ISO to the VM's host to be written
on the root volume's pool (``destStore``), and with ``vm.configdrive.force.host.cache.use``
(``preferHostCache``) into the host's own cache; the StartCommand that follows names it as
an ISO disk of path ``configdrive/<VM name>.iso`` (``diskSeq`` 4). It also sends the
command with ``create`` false to delete the ISO when the VM is expunged, and, for a VM
whose config drive is in the host's cache, to the destination of a migration before
PrepareForMigrationCommand (create) and to the host it left after it (delete).

What the agent does, as KVM's agent (LibvirtHandleConfigDriveCommandWrapper) does it, on
this host's terms:

* ``isoFile`` is a relative path below the pool's registered root or the cache's folder
  (``[agent] config_drive_cache_path``), confined there (``DataPaths.file_in``: no
  ``..``, no link out) and absolute paths refused, an ``.iso`` file;
* create: ``isoData`` is strict base64 of an ISO 9660 image (its volume descriptor at
  sector 16), refused otherwise with nothing written; the image is written aside and
  renamed over the final name, so no VM ever opens a half-written ISO, within the room
  the volume keeps free (``hostfs.room``). A second create replaces the ISO. The MS
  rebuilds a running VM's config drive when a NIC is added to it (addVmToNetwork, whose
  failure fails the API call), when its default NIC changes, and for a live move
  (below); Windows refuses to replace a file a VM's worker holds open, so while running
  VMs of this host have the ISO in a DVD drive their drives are moved to a copy written
  aside, the ISO replaced, and the drives moved back (``_replace_held``): each guest
  sees a media change. Meanwhile the replace holds those VMs' locks (before the ISO's
  file lock, ``_holding``), so no Stop, Start, ISO attach or eject of them interleaves
  with it. A paused VM holding it is refused naming the VM, the ISO kept.
  An aside file a killed agent left is removed at its next start (``service.Leftovers``)
  or by the next create or delete in that folder;
* for a VM on a shared pool moving live, the MS sends the create to the destination
  (prepareMigration, and again after a failed move), while the source's VM holds the
  ISO: the destination cannot change that VM's drive, Windows refuses the rename, and
  the answer fails saying so, the ISO kept; the MS only logs it, and the VM reads its
  new config drive (its new host's name) from its next start. A config drive in the
  host's cache is written into the destination's own cache, which no VM holds yet;
* delete: the file removed; one already gone is a success, as KVM answers; one a
  running VM holds is refused naming the VM;
* the answer's ``location`` is PRIMARY or HOST, which the MS keeps as the VM's
  ``configDriveLocation`` and sends back in its StartCommand.

``useHostCacheOnUnsupportedPool`` asks for the cache where the pool cannot hold an ISO;
every pool this agent registers (a local folder, an SMB share) can, so it changes nothing
here. A pool that is not registered on this host is a failure naming its root, a
delete's too, saying nothing was deleted: this host cannot tell whether that pool holds
the ISO (a pool it forgot, or whose registration a lost state directory took with it),
and KVM's agent fails alike for a pool libvirt does not know
(KVMStoragePoolManager.getStoragePool throws); the management server only logs a failed
delete.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ntpath
from collections.abc import AsyncIterator

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import HandleConfigDriveIsoAnswer
from hyperv_agent.cloudstack.commands import HandleConfigDriveIsoCommand
from hyperv_agent.cloudstack.enums import ConfigDriveLocation
from hyperv_agent.cloudstack.objects import PrimaryDataStoreTO
from hyperv_agent.errors import AgentError, HostFileError, InvalidRequest, PathNotAllowed
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.files import FileHandlers
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.handlers.vm import VmLocks
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.aside import AsideFiles, discard, split, target_prefix
from hyperv_agent.hostfs.room import require_room
from hyperv_agent.hyperv import disks, drives
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState

log = logging.getLogger("hyperv_agent.handlers.configdrive")

_WHAT = "config drive"
#: How many times the holders of an ISO are looked up for ``_holding`` before it gives up.
_LOOKUPS = 3
#: Added to a failure to replace an ISO no VM of this host has in a drive: Windows refuses
#: the rename over a file a process holds open, and on a shared pool that process may be
#: another host's VM, e.g. the source of a live move, for which the management server
#: rebuilds the config drive through the destination (prepareMigration).
_HELD_ELSEWHERE = ("; no VM of this host has it in a DVD drive: if a VM running on another "
                   "host holds it (a VM moving live keeps its config drive open on the "
                   "shared pool until it has moved), this host cannot change that VM's drive; "
                   "the ISO there was kept, and the VM reads the new config drive from its "
                   "next start")


class ConfigDriveHandlers(FileHandlers):
    """Writes and deletes config drive ISOs (see the module notes); ``aside`` names the
    files an ISO is written at before it is renamed into place."""

    def __init__(self, hv: HyperV, paths: DataPaths, file_locks: FileLocks,
                 aside: AsideFiles, vm_locks: VmLocks | None = None) -> None:
        super().__init__(hv, paths, file_locks, aside=aside)
        # the VM lock table shared with the VM commands: a running VM's DVD media change
        # under its lock (``_holding``)
        self.vm_locks = vm_locks if vm_locks is not None else VmLocks()

    def table(self) -> Routes:
        return {names.HANDLE_CONFIG_DRIVE_ISO_COMMAND: Route(HandleConfigDriveIsoCommand,
                                                             self.handle)}

    async def handle(self, command: HandleConfigDriveIsoCommand) -> Result:
        relative = _relative(command.iso_file)
        if command.prefer_host_cache:
            root, location = self.paths.host_cache_root(_WHAT), ConfigDriveLocation.HOST
        else:
            root, location = self._pool_root(command), ConfigDriveLocation.PRIMARY
        target = await self.paths.file_in(root, relative, _WHAT, images.ISO_SUFFIXES)
        if command.create:
            image = await asyncio.to_thread(_decoded, command.iso_data)
            async with self._holding(target) as holders:
                details = await self._create(image, target, holders)
            return HandleConfigDriveIsoAnswer(result=True, location=location,
                                              details=details)
        async with self.file_locks.hold(target):
            details = await self._delete(target)
        return HandleConfigDriveIsoAnswer(result=True, details=details)

    @contextlib.asynccontextmanager
    async def _holding(self, target: str) -> AsyncIterator[list[disks.Attachment]]:
        """The DVD drives of the running VMs holding ``target`` (``_holders``), for a block
        run with those VMs' locks and then ``target``'s file lock held (a VM's before a
        file's, as every command takes them), so no Stop, Start, ISO attach or eject of
        such a VM runs between the media changes of ``_replace_held``. The holders are
        known only once looked up, so the file's lock is taken first alone; when VMs hold
        the ISO it is given up, their locks taken, and the holders looked up again (no
        round trip more while no VM holds it). VMs that took the ISO in the meantime are
        waited for in turn, ``_LOOKUPS`` times at most, then AgentError naming them."""
        locked: set[str] = set()
        for _ in range(_LOOKUPS):
            async with self.vm_locks.hold_all(*locked), self.file_locks.hold(target):
                holders = await self._holders(target)
                holding = {held.vm_name.casefold() for held in holders}
                if holding <= locked:
                    yield holders
                    return
            locked |= holding
        raise AgentError(f"{_WHAT} {target} was not written: VMs kept taking it into their "
                         f"DVD drives while it was to be replaced ({', '.join(sorted(holding))}"
                         "); the ISO there was kept, try again")

    def _pool_root(self, command: HandleConfigDriveIsoCommand) -> str:
        store = command.dest_store
        if store is None:
            raise InvalidRequest(f"{_WHAT}: destStore is missing and preferHostCache is "
                                 "false: the command names neither a primary pool nor the "
                                 "host's cache")
        if not isinstance(store, PrimaryDataStoreTO):
            raise InvalidRequest(f"{_WHAT}: destStore is not a primary pool (a config drive "
                                 "on secondary storage is written by the secondary storage "
                                 "VM, not by a host)")
        try:
            return self.paths.pool_root(store, f"{_WHAT}: destStore")
        except PathNotAllowed as error:
            if command.create:
                raise
            raise PathNotAllowed(f"{error}; the config drive {command.iso_file} was not "
                                 "deleted from that pool (this host cannot tell whether "
                                 "it holds one)") from None

    async def _create(self, image: bytes, target: str,
                      holders: list[disks.Attachment]) -> str:
        """Write ``image`` at ``target``, which the running VMs' drives ``holders`` hold
        (their locks held by the caller, ``_holding``)."""
        folder = split(target)[0].rstrip("\\")
        # the folder first: a volume is measured at a folder that exists (a pool's or the
        # cache's first config drive would otherwise go unbounded); a held ISO is replaced
        # through a second copy written aside (``_replace_held``)
        await self.files.make_dirs(folder)
        await require_room(self.files, target, len(image) * (2 if holders else 1),
                           f"the {_WHAT} {target}", "nothing was written")
        await self.aside_files.sweep(self.files, folder, target)  # an interrupted earlier write's
        try:
            if holders:
                await self._replace_held(target, image, holders)
            else:
                async with self.aside_files.replacing(self.files, target) as temp:
                    await asyncio.to_thread(self._write, temp, image)
        except HostFileError as error:
            elsewhere = "" if holders else _HELD_ELSEWHERE
            raise AgentError(f"{_WHAT} {target} was not written: {error}{elsewhere}"
                             ) from None
        await self.aside_files.sweep(self.files, folder, target)  # the copy the drives held
        log.info("config drive %s written (%d bytes)", target, len(image))
        changed = "".join(f"; the DVD drive of the running VM {held.vm_name} changed media to "
                          "it" for held in holders)
        return f"config drive written to {target} ({len(image)} bytes){changed}"

    async def _holders(self, target: str) -> list[disks.Attachment]:
        """The DVD drives of this host's running VMs holding the ISO ``target``, or an
        aside copy of it an interrupted ``_replace_held`` left in a drive. A paused VM
        holding either is refused naming it, the ISO kept (Hyper-V keeps a paused VM's
        devices as they are). 1 query (+ 1 get for each drive found)."""
        key = drives.same_file_key(target)
        folder, prefix = ntpath.split(key)[0], target_prefix(key)

        def wanted(image: str) -> bool:
            other = drives.same_file_key(image)
            return other == key or (ntpath.split(other)[0] == folder
                                    and ntpath.basename(other).startswith(prefix))

        found = await disks.iso_attachments(self.hv, wanted)
        paused = next((held for held in found if held.power is PowerState.PAUSED), None)
        if paused is not None:
            raise AgentError(f"{target} is attached to the paused VM {paused.vm_name}; "
                             "resume or stop the VM first (the ISO there was kept)")
        return [held for held in found if held.power is PowerState.RUNNING]

    async def _replace_held(self, target: str, image: bytes,
                            holders: list[disks.Attachment]) -> None:
        """Replace the ISO ``target`` that running VMs' DVD drives (``holders``) hold
        open, which Windows refuses to replace under their worker processes: the image
        is written aside (``<folder>\\.<name>.partial-<agent>-<hex>.iso``), the drives
        are made to name that copy, ``target`` is replaced as any ISO no VM holds, and
        the drives are made to name it again; the caller then sweeps the copy. Each guest
        sees its DVD drive's media change twice, to the new config drive both times.

        Interrupted at any point, every drive names a whole ISO (the old one, or the new
        one at ``target`` or aside) and at most the aside copy is left: the next write of
        this config drive sweeps it, or, while a drive still names it, points that drive
        back at ``target`` first (``_holders``). On a failure the drives moved are put
        back on the files they held, the aside copy removed, and the failure raised."""
        aside = self.aside_files.name_for(target) + images.ISO
        moved: list[disks.Attachment] = []
        with self.aside_files.writing(aside):
            try:
                await asyncio.to_thread(self._write, aside, image)
                for held in holders:
                    await drives.change_iso(self.hv, held.medium, aside)
                    moved.append(held)
                async with self.aside_files.replacing(self.files, target) as temp:
                    await asyncio.to_thread(self._write, temp, image)
            except Exception:
                await self._put_back(moved)
                await discard(self.files, aside)
                raise
            for held in holders:
                try:
                    await drives.change_iso(self.hv, held.medium, target)
                except AgentError as error:
                    raise AgentError(
                        f"{_WHAT} {target} was written, but the DVD drive of the running VM "
                        f"{held.vm_name} still names its copy {aside}, which holds the same "
                        f"ISO: {error}; the next write of this config drive puts it back"
                    ) from None

    async def _put_back(self, moved: list[disks.Attachment]) -> None:
        """The drives ``_replace_held`` moved made to name the files they held before; one
        Hyper-V refuses keeps the aside copy (a whole ISO), logged for the next write."""
        for held in moved:
            try:
                await drives.change_iso(self.hv, held.medium, held.image)
            except AgentError as error:
                log.warning("the DVD drive of VM %s was not put back on %s: %s",
                            held.vm_name, held.image, error)

    def _write(self, path: str, image: bytes) -> None:
        with self.files.open_binary(path, "xb") as out:
            out.write(image)

    async def _delete(self, target: str) -> str:
        await self.refuse_if_running(target, "the ISO was kept", iso=True)
        try:
            removed = await self.files.remove(target)
        except HostFileError as error:
            raise AgentError(f"{_WHAT} {target} was not deleted: {error}") from None
        await self.aside_files.sweep(self.files, split(target)[0], target)
        if not removed:
            return f"config drive {target} was already absent"
        log.info("config drive %s deleted", target)
        return f"config drive {target} deleted"


def _relative(iso_file: str | None) -> str:
    """``isoFile``: a relative path (``configdrive/<VM name>.iso``); an absolute one, or
    one on a drive or share, is refused (the MS always sends one relative to the pool or
    the cache)."""
    if not iso_file:
        raise InvalidRequest(f"{_WHAT}: isoFile is missing: no ISO is named")
    text = iso_file.replace("/", "\\")
    if text.startswith("\\") or text[1:2] == ":":
        raise PathNotAllowed(f"{_WHAT}: isoFile {iso_file[:200]!r} is absolute; the management "
                             "server names the ISO relative to its pool or the host's cache")
    return iso_file


def _decoded(iso_data: str | None) -> bytes:
    """The ISO image ``isoData`` holds; InvalidRequest when it is missing, not base64, or
    not an ISO 9660 image. The value itself is never quoted (it holds the guest's
    password and keys)."""
    if not iso_data:
        raise InvalidRequest(f"{_WHAT}: isoData is missing: no ISO to write")
    try:
        image = base64.b64decode(iso_data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{_WHAT}: isoData is not base64 (the management server sends "
                             "the ISO it built in base64); nothing was written") from None
    # every config drive the MS builds (genisoimage or mkisofs: ISO 9660 with Joliet and
    # Rock Ridge) is signed so (``images.iso_signed``)
    if not images.iso_signed(image):
        raise InvalidRequest(f"{_WHAT}: isoData ({len(image)} bytes) is not an ISO 9660 "
                             "image (no CD001, nor UDF's BEA01, volume descriptor at sector "
                             "16); nothing was written")
    return image
