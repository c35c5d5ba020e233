"""Volumes on primary storage: CreateObject, Delete and ResizeVolume, and the legacy
(pre-4.2) Create, Destroy and PrimaryStorageDownload commands (protocol §5.1).

Every file is resolved by ``handlers.datapaths``, below a registered root only; disks are
made and grown by
Hyper-V (``hyperv.disks``); copies go through ``hostfs.transfer``, which writes a
temporary name and renames it, so a failed copy leaves no file under the final name.
Commands on one file (these and CopyCommand: ``handlers.locks.FileLocks``) are serialised;
different files proceed concurrently. A volume
attached to a running VM is never deleted, nor a template (or any disk) that a
differencing disk beside it (a linked clone, a checkpoint's ``.avhdx``) names as its parent.
"""

from __future__ import annotations

import logging
import ntpath
import uuid
from contextlib import nullcontext
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    Answer,
    CreateAnswer,
    CreateObjectAnswer,
    GetVolumeStatsAnswer,
    PrimaryStorageDownloadAnswer,
    ResizeVolumeAnswer,
)
from hyperv_agent.cloudstack.commands_storage import (
    CreateCommand,
    CreateObjectCommand,
    DeleteCommand,
    DestroyCommand,
    GetVolumeStatsCommand,
    PrimaryStorageDownloadCommand,
    ResizeVolumeCommand,
)
from hyperv_agent.cloudstack.enums import ImageFormat
from hyperv_agent.cloudstack.objects import (
    StorageFilerTO,
    VolumeObjectTO,
    VolumeStatsEntry,
    VolumeTO,
)
from hyperv_agent.errors import (
    AgentError,
    HostFileError,
    InvalidRequest,
    JobFailed,
    MethodFailed,
    PathNotAllowed,
)
from hyperv_agent.handlers.datapaths import DataPaths, confined
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.files import FileHandlers, copy_kind, is_fixed
from hyperv_agent.handlers.locks import FileLocks, at_most
from hyperv_agent.handlers.vm import VmLocks, named_vm
from hyperv_agent.hostfs import images, locations
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.hostfs.children import Children
from hyperv_agent.hostfs.room import require_room
from hyperv_agent.hyperv import disks, drives, jobs, power
from hyperv_agent.hyperv.schema import DiskType, ReturnCode
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.state import SHARED_TYPES, RegisteredPool

if TYPE_CHECKING:
    from hyperv_agent.hostfs.transfer import Source

log = logging.getLogger("hyperv_agent.handlers.volumes")

#: Volumes GetVolumeStatsCommand measures at a time (see ``volume_stats``).
MEASURED_AT_ONCE = 8

SECTOR_BYTES = 512  # Hyper-V rounds a new disk's size up to whole sectors
TEMPLATE_NAME = "template (optionally .bz2, .gz, .xz or .zip)"


class VolumeHandlers(FileHandlers):
    """Volume commands; ``locks`` is the per-VM lock table shared with the VM handlers;
    ``paths`` resolves request paths below registered roots."""

    def __init__(self, hv: HyperV, paths: DataPaths, locks: VmLocks, file_locks: FileLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
                 aside: AsideFiles | None = None) -> None:
        super().__init__(hv, paths, file_locks, job_wait, aside)
        self.locks = locks

    def table(self) -> Routes:
        """The handlers of this module by command FQCN (for ``Dispatch``)."""
        return {
            names.CREATE_OBJECT_COMMAND: Route(CreateObjectCommand, self.create_object),
            names.DELETE_COMMAND: Route(DeleteCommand, self.delete),
            names.RESIZE_VOLUME_COMMAND: Route(ResizeVolumeCommand, self.resize),
            names.GET_VOLUME_STATS_COMMAND: Route(GetVolumeStatsCommand, self.volume_stats),
            names.CREATE_COMMAND: Route(CreateCommand, self.create_legacy),
            names.DESTROY_COMMAND: Route(DestroyCommand, self.destroy_legacy),
            names.PRIMARY_STORAGE_DOWNLOAD_COMMAND: Route(PrimaryStorageDownloadCommand,
                                                          self.download_legacy),
        }

    # --- GetVolumeStatsCommand -----------------------------------------------------------

    async def volume_stats(self, command: GetVolumeStatsCommand) -> Result:
        """The sizes of the volumes ``volumeUuids`` (their locators: each volume's path)
        in the pool ``poolUuid``, registered on this host: ``physicalsize`` is the length
        of the volume's own file (a linked clone's, without its template's), which is
        Get-VHD's FileSize and what the disk takes on its volume (Hyper-V grows a dynamic
        disk's file as it allocates blocks and writes no sparse files); ``virtualSize``
        the size its header gives.

        A locator that names no disk file in the pool is left out, and the details say
        which: the MS adds whatever entries come (``UserVmManagerImpl.getVolumeStatistics``
        puts the map, ``StatsCollector`` keeps each entry) and shows nothing for a volume
        without one, where KVM's agent answers no map at all for the whole pool when one
        volume is missing. A pool not registered here, or a locator leading out of the
        pool: a failed answer, nothing measured; so is a locator naming no file in a pool
        whose root cannot be seen (a share that went away lists as empty): the answer names
        the root as what cannot be reached, not the volumes as without a file. Read-only,
        no lock taken.

        Files and headers are read from the host's files, one listing of the pool folder
        whatever the number of volumes; Hyper-V is asked (1 call each) only for the disks
        a running VM holds open, whose headers no other process may read. At most
        ``MEASURED_AT_ONCE`` volumes are measured at a time: the MS asks for every volume
        of the pool each minute, and a host of a thousand running VMs would otherwise
        get a thousand calls at once.
        """
        root = self.paths.pool_root_by_uuid(command.pool_uuid, "poolUuid")
        locators = [locator for locator in command.volume_uuids or [] if locator]
        files, left_out = await self.paths.volume_locators(root, locators, "volumeUuids")
        measured = await at_most(MEASURED_AT_ONCE, self._volume_sizes, files.values())
        stats: dict[str, VolumeStatsEntry] = {}
        for locator, sizes in zip(files, measured, strict=True):
            if isinstance(sizes, str):
                left_out[locator] = sizes
            else:
                stats[locator] = VolumeStatsEntry(volume_uuid=locator,
                                                  physical_size_bytes=sizes[0],
                                                  virtual_size_bytes=sizes[1])
        return GetVolumeStatsAnswer(result=True, pool_uuid=command.pool_uuid,
                                    pool_type=command.pool_type, volume_stats=stats,
                                    details=_stats_details(root, stats, left_out))

    async def _volume_sizes(self, path: str) -> tuple[int, int] | str:
        """The file's length and the disk's virtual size, or why they cannot be told."""
        found = await self.files.stat(path)
        if found is None or found.is_dir:
            return "no such disk file in the pool"
        try:
            shape = await images.content_shape(self.files, path)
        except HostFileError:  # a running VM holds it open: Hyper-V reads it for us
            try:
                settings = await disks.read_settings(self.hv, path, policy=self.job_wait)
            except AgentError as error:
                return f"neither this host nor Hyper-V can read it ({error})"
            return found.size, settings.size_bytes
        if shape is None:
            return "its header cannot be read (a damaged or unfinished disk)"
        return found.size, shape.virtual_bytes

    # --- CreateObjectCommand ------------------------------------------------------------

    async def create_object(self, command: CreateObjectCommand) -> Result:
        """A new, empty disk ``<pool>\\<uuid>.vhdx`` of ``data.size`` bytes: dynamic, or
        fixed when ``data.provisioningType`` is FAT (``files.is_fixed``), its whole size
        then taken at once; a fixed disk that would leave the pool's volume less than
        ``room.KEEP_FREE_BYTES`` free is refused before Hyper-V is asked.

        A repeat for the same volume, size and kind succeeds without touching the file; a
        file of that name with another size or kind fails and is kept. A missing pool
        folder, a template instead of a volume, no uuid, an unknown provisioning type, or
        no size or one the disk format cannot hold (``disks.checked_size``): a failed
        answer, nothing made.
        The answer's ``data`` is the volume with ``path`` = uuid and the disk's size.
        """
        volume = command.data
        if not isinstance(volume, VolumeObjectTO):
            raise InvalidRequest("CreateObjectCommand creates volumes only, not templates")
        fmt = ImageFormat(images.format_of(images.disk_suffix_of_format(volume.format)))
        if not volume.uuid:
            raise InvalidRequest("data.uuid is missing")
        fixed = is_fixed(volume.provisioning_type, "data.provisioningType")
        await self.paths.existing(self.paths.pool_root(volume.data_store, "data.dataStore"),
                                  "data.dataStore")
        path = await self.paths.volume_file(
            volume.model_copy(update={"path": None, "format": fmt}), "data")
        size = disks.checked_size(path, volume.size_bytes or 0, "data.size")
        async with self.file_locks.hold(path):
            made = await self._blank_disk(path, size, fixed,
                                          self.disk_job_wait(command.wait_s))
        data = volume.model_copy(update={"path": volume.uuid, "size_bytes": made,
                                         "format": fmt})
        return CreateObjectAnswer(result=True, data=data)

    async def _blank_disk(self, path: str, size: int, fixed: bool,
                          fill_wait: jobs.WaitPolicy) -> int:
        """Create the disk, or accept an existing one of the same size and kind; its size.
        A fixed disk is written whole by Hyper-V, so its job is waited for beyond the job
        wait, up to the command's bound (``fill_wait``); a job still running then is
        stopped, or, when Hyper-V cannot stop it, what it writes is removed once it ends,
        so a failed answer leaves no disk the management server does not know."""
        kind = DiskType.FIXED if fixed else DiskType.DYNAMIC
        if await self.files.exists(path):
            existing = await disks.read_settings(self.hv, path, policy=self.job_wait)
            if existing.size_bytes != _sectors(size) or existing.type is not kind:
                raise AgentError(f"{path} already exists as a {existing.type.name.lower()} "
                                 f"disk of {existing.size_bytes} bytes, not a "
                                 f"{kind.name.lower()} one of {size}; it was left as it is")
            log.info("%s exists with the size and kind asked for; nothing to do", path)
            return existing.size_bytes
        if fixed:
            await require_room(self.files, path, _sectors(size), "a fixed disk (FAT)",
                               "nothing was made")
        # made aside and renamed once whole: a failed job leaves nothing under ``path``,
        # and one cut at the command's bound that Hyper-V cannot stop writes only the
        # aside file, removed when the job ends (``staged``)
        async with self.staged(path) as made:
            await disks.create_blank(self.hv, made, size, fixed=fixed,
                                     policy=fill_wait if fixed else self.job_wait)
        return _sectors(size)

    # --- DeleteCommand ------------------------------------------------------------------

    async def delete(self, command: DeleteCommand) -> Result:
        """Delete a volume's file in a registered pool. A missing file is success, once
        its pool's root is seen (``DataPaths.absent_for_sure``: a pool that cannot be
        reached fails the answer, and the management server keeps the volume to delete
        again). A file in a running VM is refused and kept, and so is one that a disk file
        in its folder names as its parent (``remove_unless_parent``, as DestroyCommand: a
        checkpoint's ``.avhdx``, which a VM with a checkpoint runs from instead of the
        volume, or a linked clone), which would be lost with it; templates, snapshots and
        volumes on an image store (the secondary storage VM's) are never deleted here."""
        volume = command.data
        if not isinstance(volume, VolumeObjectTO):
            raise InvalidRequest("only volumes are deleted by this agent; the template or "
                                 "snapshot was kept")
        path = await self.paths.volume_file(volume, "data")
        async with self.file_locks.hold(path):
            if not await self.files.exists(path):
                await self.paths.absent_for_sure(
                    self.paths.pool_root(volume.data_store, "data"), path, "data")
                return Answer(result=True, details=f"{path} does not exist; nothing to delete")
            await self.refuse_if_running(path)
            checked = await self.remove_unless_parent(path)
        log.info("deleted volume file %s", path)
        return Answer(result=True, details=f"deleted {path}; {checked}")

    # --- ResizeVolumeCommand ------------------------------------------------------------

    async def resize(self, command: ResizeVolumeCommand) -> Result:
        """Grow the volume ``path`` in ``pool`` to ``newSize`` bytes (also while its VM runs,
        for a VHDX on SCSI). Shrinking, and a size the disk's format cannot hold
        (``disks.checked_size``), are refused and the file left unchanged; the same size is
        success without a change. A fixed disk (a FAT offering's) stays fixed, its file
        growing by the difference: growth that would leave its volume less than
        ``room.KEEP_FREE_BYTES`` free is refused before Hyper-V is asked, and the job, which
        writes the new part whole, is waited for up to the command's bound. A disk of a VM
        Hyper-V is starting, stopping or saving, which it grows only once that is done, is
        grown then (``_holder_settled``, within the job wait and the command's bound; a VM
        still changing after it fails the answer, naming the change). A linked clone whose
        chain does not open (its template deleted or replaced) fails naming the file
        (``disks.resize``, given the ParentPath read here). The
        answer's ``newSize`` is the disk's size."""
        path = await self._filer_volume(command.pool, command.path)
        new_size = disks.checked_size(path, command.new_size_bytes or 0, "newSize")
        async with self.file_locks.hold(path):
            current = await disks.read_settings(self.hv, path, policy=self.job_wait)
            if new_size < current.size_bytes:
                raise AgentError(f"shrinking {path} from {current.size_bytes} to {new_size} "
                                 "bytes is not supported; the volume is unchanged")
            if new_size > current.size_bytes:
                try:
                    await self._grow(path, current, new_size, command.wait_s)
                except (MethodFailed, JobFailed) as error:
                    if not await self._holder_settled(path, error):
                        raise
                    await self._grow(path, current, new_size, command.wait_s)
        return ResizeVolumeAnswer(result=True, new_size_bytes=max(new_size, current.size_bytes))

    async def _holder_settled(self, path: str, error: MethodFailed | JobFailed) -> bool:
        """After Hyper-V refused to grow ``path`` as "invalid state" (it grows no disk of
        a VM it is starting, stopping or saving): True once the VM holding it is done
        (``power.settle``, within the job wait and the command's bound,
        ``jobs.command_bound``; it may be by the time the refused job has ended), so the
        resize is tried once more; False for any other refusal or a disk no VM holds.
        Looked up (1 query + 1 get) only after such a refusal: a disk of a VM in a steady
        state costs no round trip more."""
        code = error.return_value if isinstance(error, MethodFailed) else error.error_code
        if code != ReturnCode.INVALID_STATE:
            return False
        attached = await disks.find_attachment(self.hv, path)
        if attached is None:
            return False
        await power.settle(self.hv, attached.vm, self.job_wait)
        return True

    async def _grow(self, path: str, current: disks.DiskSettings, new_size: int,
                    wait_s: int) -> None:
        if current.type is not DiskType.FIXED:
            await disks.resize(self.hv, path, new_size, parent=current.parent_path,
                               policy=self.job_wait)
            return
        await require_room(self.files, path, new_size - current.size_bytes,
                           f"growing the fixed disk {path}", "the volume is unchanged")
        await disks.resize(self.hv, path, new_size, policy=self.disk_job_wait(wait_s))

    async def _filer_volume(self, pool: StorageFilerTO | None, name: str | None) -> str:
        """The existing disk file ``name`` (extension optional) in a legacy pool; a pool
        that cannot be reached is named as such (``DataPaths.first_present``)."""
        if pool is None or not name:
            raise InvalidRequest("pool and path are required")
        root = self.paths.pool_root(pool, "pool")
        return await self.paths.first_present(
            root, images.disk_names(name), "path",
            missing=f"the volume file {confined(root, name)} does not exist",
            suffixes=images.DISK_SUFFIXES)

    # --- legacy CreateCommand -----------------------------------------------------------

    async def create_legacy(self, command: CreateCommand) -> Result:
        """Copy the template file ``templateUrl`` (a bare name in the pool) to a new
        ``<GUID><ext>``, or without ``templateUrl`` create an empty dynamic VHDX of
        ``diskCharacteristics.size`` bytes; either is of the kind
        ``diskCharacteristics.provisioningType`` asks, as CopyCommand and
        CreateObjectCommand make it: for FAT a fixed disk (a copy Hyper-V writes whole
        from the template, its whole size counted against the pool's free space first),
        for THIN and SPARSE a dynamic one; a template copy of no type is as the template
        is stored. Filesystem pools only. A repeat makes another file. A failed copy
        leaves nothing under the new name."""
        pool, profile = command.pool, command.disk_characteristics
        if str(pool.type or "") != "Filesystem":
            raise InvalidRequest(f"pool type {pool.type or 'none'} is not supported by "
                                 "CreateCommand; a Filesystem pool is needed")
        root = await self.paths.existing(self.paths.pool_root(pool, "pool"), "pool")
        if command.template_url:
            kind = copy_kind(profile.provisioning_type, "diskCharacteristics.provisioningType")
            target = await self._copy_template_file(root, command.template_url, kind,
                                                    self.disk_job_wait(command.wait_s))
        else:
            fixed = is_fixed(profile.provisioning_type, "diskCharacteristics.provisioningType")
            target = await self.paths.file_in(root, f"{uuid.uuid4()}.vhdx", "pool")
            size = disks.checked_size(target, profile.size_bytes or 0,
                                      "diskCharacteristics.size")
            await self._blank_disk(target, size, fixed, self.disk_job_wait(command.wait_s))
        volume = VolumeTO(id=command.vol_id, name=ntpath.basename(target), type=profile.type,
                          storage_pool_type=pool.type, storage_pool_uuid=pool.uuid,
                          mount_point=target, path=target, size_bytes=profile.size_bytes)
        return CreateAnswer(result=True, volume=volume)

    async def _copy_template_file(self, root: str, name: str, fixed: bool | None,
                                  fill_wait: jobs.WaitPolicy) -> str:
        if any(ch in name for ch in "/\\:"):
            raise InvalidRequest(f"templateUrl {name[:80]!r} must be a bare file name in the "
                                 "pool")
        suffix = ntpath.splitext(name)[1].lower()
        if suffix not in images.DISK_SUFFIXES:
            raise InvalidRequest(f"templateUrl {name[:80]!r} is not a .vhd or .vhdx file")
        source = await self.paths.file_in(root, name, "templateUrl", images.DISK_SUFFIXES)
        await self.paths.present(root, source, "templateUrl",
                                 missing=f"the template file {source} does not exist")
        target = await self.paths.file_in(root, f"{uuid.uuid4()}{suffix}", "templateUrl")
        await self.copy_standalone(source, target, fill_wait, fixed=fixed)
        return target

    # --- legacy DestroyCommand ----------------------------------------------------------

    async def destroy_legacy(self, command: DestroyCommand) -> Result:
        """Detach the volume from ``vmName`` (when given and attached there), then delete
        its file. A missing file is success, once its pool's root is seen (as for
        DeleteCommand: the management server keeps the template or volume of a pool that
        cannot be reached, to evict or delete it again). A file in another VM, or in a running VM
        that cannot release it (IDE), is refused and kept; so is a file that a disk file in
        its folder names as its parent (``remove_unless_parent``, as for DeleteCommand,
        checked before the detach; for a file to be detached, the disks that could not be
        read are asked of Hyper-V too, ``refuse_if_parent``, so that no VM loses its disk
        to a delete Windows then refuses): a template with linked clones, which the
        management server evicts when no volume row of its own records the template in
        the pool, although a clone made from it may be there. A delete Windows still
        refuses after the detach fails the answer saying the VM no longer has the file.
        A VM Hyper-V is starting or stopping is waited for before the detach, within the
        job wait and the command's bound (``jobs.command_bound``); one still changing
        after it fails the answer, naming the change.

        The management server also evicts unused templates from a pool with it:
        ``volume.path`` is the template's install path and ``volume.mountPoint`` the pool's
        path without its server (for an SMB pool ``/share?user=..&password=..``), so the
        pool is the registered one ``storagePoolUuid`` names (or, failing that, the one
        registered with that path). A local pool's mount point is its folder.

        A ``vmName`` given that can name no VM (blank, or holding a character XML cannot
        carry): a failed answer saying so, before any query (``named_vm``)."""
        if command.vm_name is not None:
            named_vm(command.vm_name)
        path = await self._legacy_file(command.volume)
        if path is None:
            return Answer(result=True, details="the volume file does not exist; nothing to do")
        vm_lock = self.locks.hold(command.vm_name) if command.vm_name else nullcontext()
        detached: list[str] = []

        async def release(found: Children) -> None:
            attached = await disks.find_attachment(self.hv, path)
            if attached is not None and await self._release(attached, path, command.vm_name,
                                                            found):
                detached.append(attached.vm_name)

        async with vm_lock, self.file_locks.hold(path):
            try:
                checked = await self.remove_unless_parent(path, release=release)
            except AgentError as error:
                if not detached:
                    raise
                # Windows refused the delete after the detach (a process other than a VM
                # holds the file, its ACL denies it): the VM no longer has its volume
                raise AgentError(f"{str(error).removesuffix('; the file was kept')}; the "
                                 f"file was kept, detached from VM {detached[0]}, which no "
                                 "longer has it") from error
        return Answer(result=True, details=f"deleted {path}; {checked}")

    async def _release(self, attached: disks.Attachment, path: str,
                       vm_name: str | None, found: Children) -> bool:
        """Detach ``path`` from the VM ``attached`` names, which must be ``vm_name``
        (``found``: the search of its folder for disks standing on it, already made);
        whether a drive of it was removed (False: the VM was removed meanwhile, with its
        drives, or none of its drives holds the file any longer: an operator removed it
        after the lookup), so that only a real detach is told of."""
        if not vm_name or attached.vm_name.casefold() != vm_name.casefold():
            raise AgentError(f"{path} is attached to VM {attached.vm_name}, not to "
                             f"{vm_name or 'the VM named in the command'}; the file was kept")
        # A running VM's linked clone holds the volume open, and Windows refuses its delete
        # only after the detach, which would leave the VM (a stopped one, whose disk is
        # not in use) without the disk it starts from: for a volume a VM is to lose, the
        # disks that could not be read are asked of Hyper-V first (1 call each).
        await self.refuse_if_parent(path, found=found)
        # Hyper-V removes no drive of a VM it is starting, stopping or saving (32775), and
        # a stopping VM reads as off: the change is waited out first, as Dettach does.
        vm = await power.settle(self.hv, attached.vm, self.job_wait)
        if vm is None:  # removed meanwhile, and its drives with it
            return False
        try:
            removed = await drives.detach_volume(self.hv, vm, path)
        except AgentError as error:
            raise AgentError(f"{path} could not be detached from VM {attached.vm_name} "
                             f"({error}); the file was kept") from error
        return removed is not None

    async def _legacy_file(self, volume: VolumeTO) -> str | None:
        """The file of a legacy VolumeTO inside its pool; None when absent, once its pool's
        root is seen (``DataPaths.first_found``)."""
        if not volume.path:
            raise InvalidRequest("volume.path is required")
        return await self.paths.first_found(self._legacy_root(volume),
                                            images.disk_names(volume.path), "volume.path",
                                            suffixes=images.DISK_SUFFIXES)

    def _legacy_root(self, volume: VolumeTO) -> str:
        """The root of the pool a legacy VolumeTO is in: the registered pool, or the
        registered pool whose root its mount point names."""
        registered = self._registered(volume)
        if registered is not None:
            return registered.root
        if str(volume.storage_pool_type or "") in SHARED_TYPES:
            raise PathNotAllowed(f"pool {volume.storage_pool_uuid or '(no uuid)'} is not "
                                 "registered on this host; ModifyStoragePoolCommand "
                                 "registers it")
        if not volume.mount_point:
            raise InvalidRequest("volume.mountPoint is required to know the pool")
        root = volume.mount_point
        if ntpath.splitext(root)[1].lower() in images.DISK_SUFFIXES:
            root = ntpath.dirname(root)
        return self.paths.folder_root(root, "volume.mountPoint")

    def _registered(self, volume: VolumeTO) -> RegisteredPool | None:
        pools = self.paths.pools
        found = pools.get(volume.storage_pool_uuid) if volume.storage_pool_uuid else None
        if found is None and volume.mount_point and not _is_local(volume.mount_point):
            found = pools.find(volume.mount_point)
        return found

    # --- legacy PrimaryStorageDownloadCommand -------------------------------------------

    async def download_legacy(self, command: PrimaryStorageDownloadCommand) -> Result:
        """Copy the .vhd/.vhdx template at ``url`` into ``localPath`` as ``<GUID><ext>``.

        ``url`` is cifs:// (read from the share), http:// or https:// (a streamed GET,
        redirects followed a bounded number of times, TLS certificates verified) or
        nfs:// (read from ``local_secondary_storage_path``, where the NFS image store is
        mounted on this host: at the template's path below ``secondaryStorageUrl``, else
        by its file name alone, where the C# agent looks). A .bz2/.gz/.xz/.zip source is
        expanded as it streams. The copy must carry a VHD or VHDX signature; a disk
        whose name gives the other format is renamed to match its content. The answer
        gives the new file name (``installPath``, relative to ``localPath``) and its
        size. A repeat makes another file. Any failure leaves nothing in the pool.
        """
        if not command.local_path:
            raise InvalidRequest("localPath is required")
        root = await self.paths.existing(
            self.paths.folder_root(command.local_path, "localPath"), "localPath")
        source, name = await self._download_source(command)
        suffix = images.disk_suffix_of(name, TEMPLATE_NAME)
        target = await self.paths.file_in(root, f"{uuid.uuid4()}{suffix}", "localPath")
        async with self.file_locks.hold(target):
            done = await self.download(source, target)
        return PrimaryStorageDownloadAnswer(result=True,
                                            install_path=ntpath.basename(done.path),
                                            template_size_bytes=done.size)

    async def _download_source(self, command: PrimaryStorageDownloadCommand
                               ) -> tuple[Source, str]:
        """The source of ``url`` and the name its format is read from."""
        url = command.url.strip()
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme in ("http", "https"):
            from hyperv_agent.hostfs.http import HttpObject  # loaded by the first http URL

            remote = HttpObject.from_url(url)
            return remote, remote.name
        if scheme == "nfs":
            path = await self._nfs_file(url, command.secondary_storage_url)
            return path, path
        if scheme not in ("cifs", "smb"):
            raise InvalidRequest(f"template URL scheme {scheme[:20] or 'none'!r} is not "
                                 "supported: use cifs://, http://, https:// or nfs://")
        location = self.paths.image_store(url, "url")
        if not location.folder:
            raise InvalidRequest("the template URL names a share, not a file")
        images.disk_suffix_of(location.unc, TEMPLATE_NAME)
        share = locations.ShareLocation(location.server, location.share).root
        path = await self.paths.file_in(share, location.folder, "url",
                                        images.PACKED_IMAGE_SUFFIXES)
        await self.paths.present(share, path, "url", "image store",
                                 missing=f"the template file {path} does not exist")
        return path, path

    async def _nfs_file(self, url: str, secondary_url: str | None) -> str:
        """The host file an nfs:// template URL names below local_secondary_storage_path."""
        root = self.paths.secondary_root()
        if not await self.files.exists(root):
            raise InvalidRequest(f"nfs:// templates are read from local_secondary_storage_path "
                                 f"{root}, which does not exist on this host")
        candidates = _nfs_candidates(url, secondary_url)
        images.disk_suffix_of(candidates[-1], TEMPLATE_NAME)
        tried = [confined(root, relative) for relative in candidates]
        for path in tried:
            if await self.files.exists(path):
                return await self.paths.file_in(root, path, "url", images.PACKED_IMAGE_SUFFIXES)
        raise InvalidRequest(f"the nfs:// template is not in local_secondary_storage_path: "
                             f"{' nor '.join(tried)} exists")


# --- pure helpers -------------------------------------------------------------------------


def _is_local(path: str) -> bool:
    """A drive path (C:\\...) rather than a share's path."""
    return path[1:2] == ":"


def _sectors(size: int) -> int:
    return -(-size // SECTOR_BYTES) * SECTOR_BYTES


def _nfs_candidates(url: str, secondary_url: str | None) -> list[str]:
    """Where below the mount an nfs:// template may be: its path below the image store's
    URL (``template/tmpl/2/204/x.vhdx``), then its file name alone."""
    host, segments = _nfs_parts(url)
    if not segments:
        raise InvalidRequest("the nfs:// template URL names no file")
    candidates: list[str] = []
    if secondary_url and secondary_url.strip().lower().startswith("nfs://"):
        store_host, store = _nfs_parts(secondary_url)
        below = segments[len(store):]
        if store_host == host and segments[:len(store)] == store and below:
            candidates.append("\\".join(below))
    if segments[-1] not in candidates:
        candidates.append(segments[-1])
    return candidates


def _nfs_parts(url: str) -> tuple[str, list[str]]:
    """The host (lower case) and decoded, non-empty path segments of an nfs:// URL."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        raise InvalidRequest("the nfs:// URL is malformed") from None
    return host, [unquote(segment) for segment in parts.path.split("/") if segment]


_NAMED_AT_MOST = 5  # volumes left out that the details name one by one


def _stats_details(root: str, stats: dict[str, VolumeStatsEntry],
                   left_out: dict[str, str]) -> str:
    text = f"{len(stats)} volume(s) of {root} measured"
    if not left_out:
        return text
    named = "; ".join(f"{locations.quoted(locator)}: {why}"
                      for locator, why in list(left_out.items())[:_NAMED_AT_MOST])
    more = f"; and {len(left_out) - _NAMED_AT_MOST} more" \
        if len(left_out) > _NAMED_AT_MOST else ""
    return f"{text}; {len(left_out)} left out: {named}{more}"
