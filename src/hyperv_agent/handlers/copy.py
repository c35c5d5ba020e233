"""CopyCommand: templates and volumes between image stores and primary pools (protocol §5.2).

=====  ===========================================  ======================================
case   source -> destination                        what happens
=====  ===========================================  ======================================
A      template on a cifs image store or S3         downloaded (decompressed, checksum
       -> template on a primary pool                checked where it applies) to
                                                    ``<pool>\\<path>.<ext>``
B      template on a primary pool                   a differencing disk whose parent is the
       -> volume on a primary pool                  template (linked clone; the default on
                                                    the same pool), or a full copy (a fixed
                                                    one for a FAT offering, a dynamic one
                                                    for SPARSE), grown to ``destTO.size``
                                                    when that is larger
C      volume -> volume (primary <-> image store,   full copy (a linked clone merged with
       or primary -> primary)                       its template: by Hyper-V straight into
                                                    a target pool, else beside the source);
                                                    from an image store, checked as in A;
                                                    into a pool, of the kind
                                                    ``destTO.provisioningType`` asks
D      volume -> template on a cifs image store     full copy (merged, as C) +
                                                    template.properties
=====  ===========================================  ======================================

A template's ``checksum`` describes the file as first downloaded from ``origUrl``. On a cifs
or NFS image store the secondary storage VM has already expanded a ``.bz2``/``.zip``/``.gz``
download, so the file read here is often not that file: the checksum is verified only
where the bytes read are provably those it describes (an S3 object, stored as downloaded,
or a file named like ``origUrl``'s, compression suffix included), over the bytes as read,
before any decompression; a mismatch there fails the copy and leaves nothing behind.
Elsewhere one line says it was not applicable and the copy goes on.

Anything else is answered "Data store combination not supported". Every path is resolved
by ``handlers.datapaths``: pools only through the registry, the image stores the command
names for reading and for the copies of cases C and D. Case A is ``hostfs.download``'s
template download (the one PrimaryStorageDownloadCommand uses too); copies go through
``hostfs.transfer``, which writes a temporary name and renames it, so no partial file ever
has the final name. A volume of case B is made whole (cloned or copied, then grown) under
an aside name with the disk's extension and renamed into place last, so a failure at any
step leaves an earlier file of the volume's name as it was. Commands that write or delete
one file are serialised (``handlers.locks.FileLocks``, shared with the volume commands).
Hyper-V's merge of a linked clone (cases C and D) may run beyond the job wait, up to
half the command's ``wait`` (``FileHandlers.disk_job_wait``, ``jobs.command_bound``); its
other jobs touch only metadata.

A volume's ``provisioningType`` (``files.is_fixed``, ``files.copy_kind``) decides the kind
of disk of cases B and C: FAT a fixed disk, THIN and SPARSE dynamic ones, converted by
Hyper-V (ConvertVirtualHardDisk) when the source is of the other kind. The MS gives a
volume its offering's type when it is made and never changes it, so the type a case C
copy carries is the volume's own. In case B THIN (or no type) is a linked clone and
SPARSE a dynamic full copy standing alone, as KVM copies its template in full for SPARSE
(metadata preallocated) and clones it on a backing file for THIN: a SPARSE volume takes the
template's data again and its copy takes time in proportion to it, but it does not pin its
template in the pool (an eviction is refused while a clone names it), moves without a
merge, and reads nothing from a template file every clone shares.
"""

from __future__ import annotations

import logging
import ntpath
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import CopyCmdAnswer
from hyperv_agent.cloudstack.commands_storage import CopyCommand
from hyperv_agent.cloudstack.enums import ImageFormat, ProvisioningType
from hyperv_agent.cloudstack.objects import (
    S3TO,
    NfsTO,
    PrimaryDataStoreTO,
    TemplateObjectTO,
    VolumeObjectTO,
)
from hyperv_agent.cloudstack.storage_objects import WrappedTO
from hyperv_agent.errors import AgentError, InvalidRequest
from hyperv_agent.handlers import start_plan
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.files import FileHandlers, copy_kind, is_fixed, kind_of_copy
from hyperv_agent.hostfs import images, properties
from hyperv_agent.hostfs.aside import discard
from hyperv_agent.hostfs.room import require_room
from hyperv_agent.hyperv import disks, jobs

if TYPE_CHECKING:
    from hyperv_agent.hostfs.s3 import S3Object

TEMPLATE_CHECKSUM = "md5"  # what CloudStack records for a template made from a volume

log = logging.getLogger("hyperv_agent.handlers.copy")

UNSUPPORTED = "Data store combination not supported"


class CopyHandler(FileHandlers):
    """CopyCommand on the host's files and Hyper-V's image service."""

    def table(self) -> Routes:
        """The handler of this module by command FQCN (for ``Dispatch``)."""
        return {names.COPY_COMMAND: Route(CopyCommand, self.copy)}

    async def copy(self, asked: CopyCommand) -> Result:
        """Run the protocol §5.2 case that ``srcTO``/``destTO`` select; the answer's ``newData`` is
        the destination TO as it now is. A repeat replaces the destination file with a
        fresh copy (a volume in a running VM is never replaced). On failure no partial
        file has the destination's name and ``newData`` is null; a file that was there
        before is left as it was."""
        new_data = await self._run_case(asked.src_to, asked.dest_to, asked.wait_s)
        if new_data is None:
            raise InvalidRequest(UNSUPPORTED)
        return CopyCmdAnswer(result=True, new_data=new_data)

    async def _run_case(self, src: TemplateObjectTO | VolumeObjectTO,
                        dest: TemplateObjectTO | VolumeObjectTO, wait_s: int,
                        ) -> TemplateObjectTO | VolumeObjectTO | None:
        """The case's answer; ``wait_s``: the command's ``wait``, which bounds a merge or a
        whole-disk write (``disk_job_wait``)."""
        if isinstance(src, TemplateObjectTO):
            if (isinstance(dest, TemplateObjectTO)
                    and isinstance(src.image_data_store, NfsTO | S3TO)
                    and isinstance(dest.image_data_store, PrimaryDataStoreTO)):
                return await self._download(src, dest)
            if (isinstance(dest, VolumeObjectTO)
                    and isinstance(src.image_data_store, PrimaryDataStoreTO)
                    and isinstance(dest.data_store, PrimaryDataStoreTO)):
                return await self._volume_from_template(src, dest, wait_s)
            return None
        if isinstance(dest, VolumeObjectTO):
            if _is_file_store(src.data_store) and _is_file_store(dest.data_store):
                return await self._volume_to_volume(src, dest, wait_s)
            return None
        if isinstance(dest.image_data_store, NfsTO):
            return await self._template_from_volume(src, dest, wait_s)
        return None

    # --- A: template download to primary -----------------------------------------------

    async def _download(self, src: TemplateObjectTO, dest: TemplateObjectTO) -> TemplateObjectTO:
        """The template's file in the pool is named by ``destTO.path``, or, as the
        management server sends none, by the template's uuid: a copy sent again after a
        lost answer or a timeout (the MS then copies anew, again without a path) replaces
        the one before it, which nothing in CloudStack names, instead of leaving a
        template-sized orphan in the pool for each try. An earlier file of that name that
        linked clones name as their parent is kept, and the copy gets a name of its own;
        so is one of that name in the other disk format, which a copy whose content is of
        that format would be renamed over (``_either_format``)."""
        suffix = images.suffix_of_format(dest.format or src.format, default="")
        root = await self.paths.existing(self.paths.pool_root(dest.image_data_store, "destTO"),
                                         "destTO")
        dest_path = (dest.path or await self._template_name(root, dest, suffix)
                     ).removesuffix(suffix)
        target = await self.paths.file_in(root, f"{dest_path}{suffix}", "destTO")
        source = await self._template_source(src, suffix)
        checksum = applicable_checksum(src, source)
        # a disk whose content is the other format is renamed to it (``hostfs.download``),
        # over a file of that name: both names are held, and neither replaced under clones
        replaced = _either_format(target)
        async with self.file_locks.hold_all(*replaced):
            for earlier in replaced:
                if await self.files.exists(earlier):
                    # a download over an earlier copy replaces it: not under linked
                    # clones, which name it (and its content) as their parent
                    await self.refuse_if_parent(earlier, "the earlier template was kept")
            done = await self.download(source, target, checksum)
        log.info("template %s downloaded to %s (%d bytes)", src.path, done.path, done.size)
        return dest.model_copy(update={"path": dest_path,
                                       "format": ImageFormat(images.format_of(done.suffix)),
                                       "size_bytes": done.size,
                                       "physical_size_bytes": done.size})

    async def _template_name(self, root: str, dest: TemplateObjectTO, suffix: str) -> str:
        """The name of a template copy the management server gave no path: its uuid (a
        GUID), unless a file of that name in the pool is the parent of linked clones (a
        copy CloudStack uses, or used: it is not replaced), or the uuid is no GUID; then
        a new GUID."""
        name = dest.uuid or ""
        if start_plan.canonical_guid(name) is None:
            return str(uuid.uuid4())
        for earlier in _either_format(await self.paths.file_in(root, f"{name}{suffix}",
                                                               "destTO")):
            if not await self.files.exists(earlier):
                continue
            try:
                await self.refuse_if_parent(earlier)
            except AgentError as kept:
                log.info("template copy named afresh, the earlier one is kept: %s", kept)
                return str(uuid.uuid4())
        return name

    async def _template_source(self, src: TemplateObjectTO, suffix: str) -> str | S3Object:
        """The file or S3 object of a template on an image store; ``suffix``: what the
        copy is to be (``.iso``, ``.vhd``, ``.vhdx``; empty: the format is not given). A
        source whose name gives an ISO for a disk, or a disk for an ISO, is refused before
        anything is copied: a disk copied as an ISO would go in a VM's DVD drive (its
        content is checked too, ``download_image``)."""
        store = src.image_data_store
        if not src.path:
            raise InvalidRequest("srcTO: the template has no path")
        if isinstance(store, S3TO):
            _check_kind(src.path, suffix)
            return _s3_object(store, src.path)
        if not isinstance(store, NfsTO):
            raise InvalidRequest("srcTO: the template is not on a cifs image store or S3")
        root = self.paths.image_store(store.url, "srcTO").root
        if images.image_suffix(src.path) is not None:
            path = await self.paths.file_in(root, src.path, "srcTO",
                                            images.PACKED_IMAGE_SUFFIXES)
        else:
            path = await self.paths.folder_in(root, src.path, "srcTO")
        await self.paths.present(root, path, "srcTO", "image store", missing=(
            f"srcTO: the template {path} does not exist on the image store"))
        if images.image_suffix(path) is not None:
            _check_kind(path, suffix)
            return path
        return await self._image_in_folder(path, suffix)

    async def _image_in_folder(self, folder: str, suffix: str) -> str:
        """The first image in a template folder of the kind ``suffix`` says: an ISO for
        ``.iso``, a ``.vhd`` or ``.vhdx`` disk for those, a disk else an ISO when no format
        is given; by each name's own extension (a compression suffix aside), so
        ``x.vhd-backup.iso`` is an ISO, not a disk."""
        found = await self.files.list_dir(folder)
        kinds = ((images.ISO_SUFFIXES,) if suffix == images.ISO
                 else (images.DISK_SUFFIXES,) if suffix else
                 (images.DISK_SUFFIXES, images.ISO_SUFFIXES))
        for wanted in kinds:
            for name in found:
                if images.image_suffix(name) in wanted:
                    return await self.paths.file_in(folder, name, "srcTO",
                                                    images.PACKED_IMAGE_SUFFIXES)
        named = " or ".join(s for kind in kinds for s in kind)
        raise InvalidRequest(f"srcTO: the template folder {folder} holds no {named} file")

    # --- B: volume from a template on primary -------------------------------------------

    async def _volume_from_template(self, src: TemplateObjectTO, dest: VolumeObjectTO,
                                    wait_s: int) -> VolumeObjectTO:
        template = await self._template_on_primary(src)
        fmt = _disk_format_of(template)
        name = dest.path or dest.uuid
        if not name:
            raise InvalidRequest("destTO: the volume has neither path nor uuid")
        fixed = is_fixed(dest.provisioning_type, "destTO.provisioningType")
        await self.paths.existing(self.paths.pool_root(dest.data_store, "destTO"), "destTO")
        target = await self.paths.volume_file(
            dest.model_copy(update={"path": name, "format": fmt}), "destTO")
        if dest.size_bytes:  # null or 0: no size asked for, the template's is kept
            disks.checked_size(target, dest.size_bytes, "destTO.size")
        if fixed:
            return await self._fixed_volume(template, target, dest, name, fmt, wait_s)
        # SPARSE: a dynamic full copy standing alone, as KVM copies the template for it
        # (see the module's docstring); THIN (or no type): a linked clone where it can be
        linked = (self._links(src.image_data_store, dest.data_store)
                  and dest.provisioning_type != ProvisioningType.SPARSE)
        # a volume is made holding its template's lock shared: volumes of one template
        # are made side by side, and a DestroyCommand that evicts the template or a
        # download that replaces it (``refuse_if_parent``, holding it alone) waits for
        # them, so it sees every linked clone made before it and removes no template a
        # full copy is still reading; the template's settings are read under it too, so
        # the copy is made from the template they describe
        async with self.file_locks.hold_all(target, shared=(template,)):
            size, grow, settings = await self._volume_size(template, dest.size_bytes or 0)
            linked = linked and not grow  # a differencing disk keeps its parent's size
            await self._refuse_if_running(target)
            async with self.staged(target) as staged:
                if linked:
                    await disks.create_differencing(self.hv, staged, template,
                                                    policy=self.job_wait)
                else:  # dynamic (a fixed template converted), or as stored when no type
                    await self.write_copy(template, staged,
                                          copy_kind(dest.provisioning_type,
                                                    "destTO.provisioningType"),
                                          self.disk_job_wait(wait_s), settings)
                if grow:
                    await disks.resize(self.hv, staged, size, policy=self.job_wait)
        log.info("volume %s made from template %s (%s%s)", target, template,
                 "linked clone" if linked else "full copy", f", grown to {size}" if grow else "")
        return dest.model_copy(update={"path": name, "format": fmt, "size_bytes": size or None})

    async def _fixed_volume(self, template: str, target: str, dest: VolumeObjectTO, name: str,
                            fmt: ImageFormat, wait_s: int) -> VolumeObjectTO:
        """A volume of a FAT offering: a fixed disk Hyper-V writes whole from the template
        (ConvertVirtualHardDisk; KVM too makes a full preallocated copy, never a clone on a
        backing file), grown to ``destTO.size`` when that is larger, and refused before
        anything is written when its size would leave its volume less than
        ``room.KEEP_FREE_BYTES`` free. Both jobs write the whole disk, so they are waited
        for beyond the job wait, up to the command's bound (``disk_job_wait``)."""
        fill_wait = self.disk_job_wait(wait_s)
        # the template held shared while Hyper-V reads it, as for every volume made from it;
        # its settings are read under it too, so the copy is sized from the template copied
        async with self.file_locks.hold_all(target, shared=(template,)):
            settings = await disks.read_settings(self.hv, template, policy=self.job_wait)
            virtual = settings.size_bytes
            size = max(dest.size_bytes or 0, virtual)
            await self._refuse_if_running(target)
            await require_room(self.files, target, size, f"a fixed copy (FAT) of {template}",
                               "nothing was written")
            async with self.staged(target) as staged:
                await disks.merged_copy(self.hv, template, staged, fixed=True,
                                        parent=settings.parent_path, policy=fill_wait)
                if size > virtual:
                    await disks.resize(self.hv, staged, size, policy=fill_wait)
        log.info("volume %s made from template %s (fixed copy of %d bytes)", target, template,
                 size)
        return dest.model_copy(update={"path": name, "format": fmt, "size_bytes": size})

    async def _volume_size(self, template: str, wanted: int
                           ) -> tuple[int, bool, disks.DiskSettings | None]:
        """The new volume's virtual size, and whether it must grow past the template's:
        a root disk larger than its template (a deployment with a bigger root disk); and
        the template's settings when they were read to tell (none is asked: no read),
        for a full copy to take instead of reading them again."""
        if wanted <= 0:
            return 0, False, None
        settings = await disks.read_settings(self.hv, template, policy=self.job_wait)
        return max(wanted, settings.size_bytes), wanted > settings.size_bytes, settings

    async def _template_on_primary(self, src: TemplateObjectTO) -> str:
        """``<pool>\\<path>.<format>``, or the .vhd/.vhdx file of that name that exists;
        a pool that cannot be reached is named as such (``DataPaths.primary_template``)."""
        return await self.paths.primary_template(src, "srcTO")

    async def _refuse_if_running(self, target: str) -> None:
        """Refuse to replace an earlier file at ``target`` that a running VM uses."""
        if await self.files.exists(target):
            await self.refuse_if_running(target, "it was left as it is")

    def _links(self, template_store: WrappedTO | None, volume_store: WrappedTO | None) -> bool:
        """Whether a volume is made as a linked clone: the pool does not ask for full clones
        and the template lies in the same (registered) pool."""
        if not isinstance(template_store, PrimaryDataStoreTO):
            return False
        if not isinstance(volume_store, PrimaryDataStoreTO) or volume_store.full_clone_flag:
            return False
        here = self.paths.pool_root(template_store, "srcTO")
        return here == self.paths.pool_root(volume_store, "destTO")

    # --- C: volume to volume ------------------------------------------------------------

    async def _volume_to_volume(self, src: VolumeObjectTO, dest: VolumeObjectTO,
                                wait_s: int) -> VolumeObjectTO:
        merge_wait = self.disk_job_wait(wait_s)
        source = await self._existing_volume(src)
        fmt = _disk_format_of(source)
        # into a pool the copy is of the kind the volume's provisioning type asks (the
        # destination volume's: the MS gives the copy the volume's own type); onto an
        # image store, a staging copy, it is kept as it is (merged when a linked clone)
        fixed = (copy_kind(dest.provisioning_type, "destTO.provisioningType")
                 if isinstance(dest.data_store, PrimaryDataStoreTO) else None)
        if isinstance(dest.data_store, NfsTO):
            folder, uid = await self._image_store_folder(dest.data_store, dest.path, dest.uuid)
            target = await self.paths.file_in(folder, f"{uid}.{fmt.lower()}", "destTO")
            new_path = f"{(dest.path or '').strip('/')}/{uid}.{fmt.lower()}"
        else:
            new_path = dest.path or dest.uuid or ""
            await self.paths.existing(self.paths.pool_root(dest.data_store, "destTO"),
                                      "destTO")
            target = await self.paths.volume_file(
                dest.model_copy(update={"path": new_path, "format": fmt}), "destTO")
        # A pool volume is read under its lock, so a StartCommand of its VM waits meanwhile;
        # a running VM's worker holds its disks open (Windows refuses to read one, Hyper-V
        # to merge it), so the answer names the VM instead.
        held = (source, target) if isinstance(src.data_store, PrimaryDataStoreTO) else (target,)
        async with self.file_locks.hold_all(*held):
            if len(held) == 2:
                await self.refuse_if_running(source, "it was not copied")
            await self._refuse_if_running(target)
            if not isinstance(src.data_store, PrimaryDataStoreTO):
                # from an image store, where a user may have uploaded it: checked as a
                # downloaded template is. A differencing disk would make Hyper-V open the
                # parent it names (any path on the host, or a share of any server) when a
                # VM uses the volume; a disk cut short is not one; one whose content is
                # the other format is renamed to match, as Hyper-V goes by the extension
                target = await self._volume_from_image_store(source, target, fixed,
                                                             merge_wait)
                fmt, new_path = _disk_format_of(target), _named_as(new_path, target)
            elif isinstance(dest.data_store, PrimaryDataStoreTO):
                # pool -> pool (a cold move between local pools): a linked clone is merged,
                # or a disk of the other kind converted, by Hyper-V straight into the
                # target pool, as MigrateVolume does
                await self.copy_standalone(source, target, merge_wait, fixed=fixed)
            else:
                # to an image store, whose share Hyper-V may not be able to write: a linked
                # clone is merged beside the source and that copied
                async with self.standalone(source, policy=merge_wait) as copied:
                    await self.copy_file(copied, target)
        return dest.model_copy(update={"path": new_path, "format": fmt})

    async def _volume_from_image_store(self, source: str, target: str, fixed: bool | None,
                                       fill_wait: jobs.WaitPolicy) -> str:
        """Copy the volume ``source`` on an image store into the pool as ``target`` (or its
        name with the extension of the format its content shows), checked as a downloaded
        template is; the path it has now. When it is not of the kind ``fixed`` asks
        (``copy_kind``; None: as stored), it is first copied and checked under an aside
        name in the pool, Hyper-V converts that copy into a second one renamed to the
        final name, and the first is removed (for a fixed one, the room for both is
        counted against the pool's free space before anything is written,
        ``_require_room_to_convert``): nothing of the volume has its
        final name until it is whole and of its kind. Hyper-V never reads the image
        store: its share may not be open to the host, and only a checked copy is given
        to it (a differencing disk would make it open the parent it names)."""
        if fixed is None:
            return (await self.download(source, target, kind="volume")).path
        await self._require_room_to_convert(source, target, fixed)
        aside = self.aside_files
        fetched = aside.name_for(target)
        # the download names its copy by its content's format: either name is this copy's
        with aside.writing(fetched + ".vhd"), aside.writing(fetched + ".vhdx"):
            done = await self.download(source, fetched + ntpath.splitext(target)[1],
                                       kind="volume")
            try:
                final = ntpath.splitext(target)[0] + done.suffix
                settings = await disks.read_settings(self.hv, done.path,
                                                     policy=self.job_wait)
                kind = kind_of_copy(settings.type, fixed)
                if settings.type is kind:
                    await self.files.rename(done.path, final)
                    return final
                async with self.staged(final) as made:
                    await self.converted_copy(done.path, settings, made, kind, fill_wait)
                log.info("volume %s copied into %s as a %s disk", source, final,
                         kind.name.lower())
                return final
            finally:
                await discard(self.files, done.path)

    async def _require_room_to_convert(self, source: str, target: str, fixed: bool) -> None:
        """Refuse, before a byte is written, a copy into a fixed disk (FAT) of the dynamic
        disk ``source`` that the pool of ``target`` cannot hold whole: its checked copy
        and the fixed disk Hyper-V writes from it lie there together until the first is
        removed. Only the copy would otherwise be bounded up front (``hostfs.transfer``),
        so a pool with room for it but not for both would first take the copy, then be
        refused the fixed disk. The sizes are the file's and the virtual size its header
        gives; a header that cannot be read bounds nothing more here (the download's
        check refuses such a disk). For a fixed copy, 1 stat, the header's reads and 1
        usage call; nothing for a dynamic one."""
        if not fixed:
            return  # a dynamic copy: no second file of the volume's whole size
        found = await self.files.stat(source)
        disk = await images.content_shape(self.files, source)
        if found is None or disk is None or disk.fixed:
            return  # no conversion to a fixed disk: the copy alone, bounded as it streams
        await require_room(
            self.files, target, found.size + disk.virtual_bytes,
            f"a fixed copy (FAT) of {source}", "nothing was copied",
            f" ({found.size} for its checked copy and {disk.virtual_bytes} for the fixed "
            "disk Hyper-V writes from it, both in the pool until the copy is removed)")

    async def _existing_volume(self, volume: VolumeObjectTO) -> str:
        """The source volume's file, which must be there; a pool or image store that
        cannot be reached is named as such (``DataPaths.present``)."""
        return await self.paths.locate_volume(volume, "srcTO", existing=True)

    async def _image_store_folder(self, store: NfsTO, path: str | None,
                                  uid: str | None) -> tuple[str, str]:
        """The folder ``path`` on the image store (created) and the file's base name."""
        if not path:
            raise InvalidRequest("destTO: a path on the image store is required")
        root = self.paths.image_store(store.url, "destTO").root
        if not await self.files.exists(root):
            raise InvalidRequest(f"destTO: the image store {root} cannot be reached")
        folder = await self.paths.folder_in(root, path, "destTO")
        await self.files.make_dirs(folder)
        return folder, uid or str(uuid.uuid4())

    # --- D: template from a volume ------------------------------------------------------

    async def _template_from_volume(self, src: VolumeObjectTO, dest: TemplateObjectTO,
                                    wait_s: int) -> TemplateObjectTO:
        source = await self._existing_volume(src)
        fmt = _disk_format_of(source)
        assert isinstance(dest.image_data_store, NfsTO)
        folder, uid = await self._image_store_folder(dest.image_data_store, dest.path,
                                                     dest.uuid)
        target = await self.paths.file_in(folder, f"{uid}.{fmt.lower()}", "destTO")
        settings = await disks.read_settings(self.hv, source, policy=self.job_wait)
        virtual = settings.size_bytes
        async with self.file_locks.hold_all(source, target):  # a start of its VM waits
            await self.refuse_if_running(source, "it was not copied")
            # merged beside the source: Hyper-V may not be able to write to the image
            # store's share
            async with self.standalone(source, settings,
                                       self.disk_job_wait(wait_s)) as whole:
                done = await self.copy_file(whole, target, TEMPLATE_CHECKSUM)
            await self._write_properties(folder, target, dest, fmt, virtual, done.size)
        return dest.model_copy(update={
            "path": f"{(dest.path or '').strip('/')}/{uid}.{fmt.lower()}", "format": fmt,
            "size_bytes": virtual, "physical_size_bytes": done.size, "checksum": done.digest})

    async def _write_properties(self, folder: str, target: str, dest: TemplateObjectTO,
                                fmt: ImageFormat, virtual: int, size: int) -> None:
        """template.properties next to the copy; without it the copy is removed again."""
        try:
            text = properties.template_properties(
                template_id=dest.id or 0, name=dest.name or ntpath.basename(target),
                file_name=ntpath.basename(target), image_format=fmt.value,
                virtual_size_bytes=virtual, file_size_bytes=size)
            await self.files.write_text(await self.paths.file_in(
                folder, "template.properties", "destTO", (".properties",)), text)
        except AgentError:
            await self.files.remove(target)
            raise


# --- pure helpers -------------------------------------------------------------------------


def _either_format(target: str) -> tuple[str, ...]:
    """The files a download to ``target`` may replace: for a disk, ``target`` and its
    name in the other disk format, as the copy is renamed to the format its content shows
    (a template registered as VHDX that is a VHD lands as ``.vhd``); else ``target``."""
    if not images.is_disk(target):
        return (target,)
    return images.disk_names(ntpath.splitext(target)[0])


def _is_file_store(store: WrappedTO | None) -> bool:
    return isinstance(store, PrimaryDataStoreTO) or (isinstance(store, NfsTO) and bool(store.url))


def _disk_format_of(path: str) -> ImageFormat:
    return ImageFormat(images.format_of(images.disk_suffix_of(path)))


def _named_as(path: str, disk: str) -> str:
    """``path``, its disk extension (if it has one) replaced by that of the file ``disk``."""
    if not path.lower().endswith(images.DISK_SUFFIXES):
        return path
    return ntpath.splitext(path)[0] + ntpath.splitext(disk)[1].lower()


def applicable_checksum(src: TemplateObjectTO, source: str | S3Object) -> str | None:
    """``src.checksum`` when it describes the bytes ``source`` holds, else None (with one
    log line saying why it was not applied)."""
    if not src.checksum:
        return None
    if not isinstance(source, str):  # an S3 object
        return src.checksum  # an S3 image store keeps the object as downloaded
    downloaded = _file_name(urlsplit(src.orig_url or "").path)
    read = ntpath.basename(source.replace("/", "\\"))
    if downloaded and read.casefold() == downloaded.casefold():
        return src.checksum
    log.info("template %s: checksum not applicable: it describes %s as downloaded from "
             "origUrl, not %s as the image store keeps it", src.uuid or src.path,
             downloaded or "a file with no name", read)
    return None


def _file_name(url_path: str) -> str:
    return url_path.rstrip("/").rsplit("/", 1)[-1]


def _check_kind(name: str, suffix: str) -> None:
    """InvalidRequest when the source ``name`` gives an ISO where ``suffix`` (what the
    copy is to be) is a disk, or another image where it is an ISO."""
    found = images.image_suffix(name)
    if not suffix or found is None or (found == images.ISO) == (suffix == images.ISO):
        return
    raise InvalidRequest(f"srcTO: {name} is a {found} file, but the template's format is "
                         f"{images.format_of(suffix)}; nothing was copied")


def _s3_object(store: S3TO, key: str) -> S3Object:
    missing = [name for name, value in (("endPoint", store.end_point),
                                         ("bucketName", store.bucket_name),
                                         ("accessKey", store.access_key),
                                         ("secretKey", store.secret_key)) if not value]
    if missing:
        raise InvalidRequest(f"srcTO: the S3 store lacks {', '.join(missing)}")
    from hyperv_agent.hostfs.s3 import S3Object  # loaded by the first S3 template

    return S3Object(endpoint=store.end_point or "", bucket=store.bucket_name or "", key=key,
                    access_key=store.access_key or "", secret_key=store.secret_key or "",
                    https=bool(store.https_flag), connect_timeout_ms=store.connection_timeout,
                    socket_timeout_ms=store.socket_timeout,
                    max_error_retry=store.max_error_retry,
                    tcp_keepalive=bool(store.use_tcp_keep_alive))
