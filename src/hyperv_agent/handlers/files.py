"""What the handlers of commands that write or delete files on the host share (volumes,
copies, volume moves): the host's session, request paths below registered roots, the one
file lock table, how long Hyper-V's jobs are waited for, the agent's aside files, the
rule that a disk a running VM uses is never replaced, moved or deleted, the rule that
a disk copied out of its pool stands alone (a linked clone is merged first), and what
kind of disk a volume's provisioning type makes (``is_fixed``; for a copy of an existing
disk ``copy_kind``, which Hyper-V converts to: ``copy_standalone``).

The copying itself (``hostfs.transfer`` with its http, S3 and decompressing readers, and
``hostfs.download``) is loaded by the first copy, not when the agent starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import ntpath
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from hyperv_agent.cloudstack.base import ms_wait_s
from hyperv_agent.cloudstack.enums import ProvisioningType
from hyperv_agent.errors import AgentError, HostFileError, InvalidRequest
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.aside import AsideFiles, discard, split
from hyperv_agent.hostfs.children import DEFAULT_BUDGET_S, Children, children_of
from hyperv_agent.hostfs.locations import same_path
from hyperv_agent.hostfs.room import require_room
from hyperv_agent.hyperv import disks, jobs, power
from hyperv_agent.hyperv.schema import DiskType
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState

if TYPE_CHECKING:
    from hyperv_agent.hostfs.download import Downloaded
    from hyperv_agent.hostfs.transfer import Source, Transferred

log = logging.getLogger("hyperv_agent.handlers.files")

#: The power states in which a VM's worker process holds its disks open.
_HOLDING = frozenset({PowerState.RUNNING, PowerState.PAUSED})


def is_fixed(provisioning: ProvisioningType | str | None, what: str) -> bool:
    """Whether a volume of the disk offering's ``provisioning`` type is a fixed disk.

    FAT reserves the volume's whole size when it is made (KVM preallocates its file in
    full, and makes it a full copy of its template, never one on a backing file): on
    Hyper-V a fixed VHD(X), so a pool is never overcommitted by it. THIN and SPARSE (KVM:
    no or metadata-only preallocation) are dynamic disks here, as is a volume whose type
    is not given; a THIN root volume (or one of no type) is a linked clone of its
    template, a SPARSE one a dynamic full copy standing alone (``copy.py``, case B).
    Any other name: InvalidRequest naming ``what`` (the request's field), as a disk of an
    unknown kind would be made wrongly."""
    if provisioning is None or provisioning in (ProvisioningType.THIN, ProvisioningType.SPARSE):
        return False
    if provisioning == ProvisioningType.FAT:
        return True
    raise InvalidRequest(f"{what} {str(provisioning)[:40]!r} is not a provisioning type this "
                         "host knows: THIN, SPARSE or FAT")


def copy_kind(provisioning: ProvisioningType | str | None, what: str) -> bool | None:
    """The kind a copy of an existing disk for a volume of ``provisioning`` is made:
    True a fixed disk, False a dynamic one (``is_fixed``), None when the type is not
    given: the copy keeps its source's kind (a differencing disk merged into a dynamic
    one), as it always did. The management server gives a volume its offering's type
    when it is made and never changes it (a move copies it, a new offering keeps it)."""
    return None if provisioning is None else is_fixed(provisioning, what)


def kind_of_copy(source: DiskType, fixed: bool | None) -> DiskType:
    """The type of a standalone copy of a disk of type ``source`` made as ``fixed`` asks
    (``copy_kind``): never a differencing disk."""
    if fixed is None:
        return DiskType.DYNAMIC if source is DiskType.DIFFERENCING else source
    return DiskType.FIXED if fixed else DiskType.DYNAMIC


class FileHandlers:
    """The base of ``CopyHandler`` and ``VolumeHandlers``. ``file_locks`` is the agent's one
    file lock table: a command holds a file's lock while it writes or deletes it."""

    def __init__(self, hv: HyperV, paths: DataPaths, file_locks: FileLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
                 aside: AsideFiles | None = None) -> None:
        self.hv = hv
        self.paths = paths
        self.files: HostFiles = paths.files
        self.file_locks = file_locks
        self.job_wait = job_wait
        self.aside = aside  # the agent's aside files; None: each copy sweeps its target's
        self.parent_budget_s = DEFAULT_BUDGET_S  # bounds ``refuse_if_parent``'s reading

    async def refuse_if_running(self, path: str, kept: str = "the file was kept", *,
                                iso: bool = False) -> None:
        """AgentError naming the VM when a running or paused VM has the disk file ``path``
        (with ``iso``, the ISO image ``path``) in one of its drives; ``kept`` says what
        became of the file. A paused VM keeps its
        worker process, which holds its disks open as while it runs (Windows refuses to
        read, replace or delete them, Hyper-V to merge them). A stopped VM's disk is not
        in use: the management server starts the VM again from its volumes' paths; nor
        is a saved one's (its worker is gone). A VM Hyper-V is starting, stopping or saving
        holds the file meanwhile, whatever state it reads as (a stopping VM reads as off):
        it is waited for first (``power.settle``), within the job wait and the command's
        bound (``jobs.command_bound``: half the command's ``wait``), and judged as it then
        is; one still changing after that raises HyperVError naming the change.
        1 query (+ 1 get when a VM has the file; + P gets while its state changes)."""
        attached = await disks.find_attachment(self.hv, path, iso=iso)
        if attached is None:
            return
        vm = await power.settle(self.hv, attached.vm, self.job_wait)
        if vm is not None and vm.power in _HOLDING:
            what = "the ISO" if iso else "the volume"
            raise AgentError(f"{path} is attached to the {vm.power.value} VM "
                             f"{vm.name}; stop the VM or detach {what} first "
                             f"({kept})")

    async def refuse_if_parent(self, path: str, kept: str = "the file was kept", *,
                               found: Children | None = None) -> str:
        """AgentError naming a disk file, and how many there are, when a disk file in the
        folder of ``path`` (a template in a pool, where the linked clones made from it
        lie) names ``path`` as its parent; also when not every disk file there could be
        read in ``children.DEFAULT_BUDGET_S`` seconds (``parent_budget_s``). Deleting or
        replacing the parent would break its children, whose VMs then never start again:
        Windows refuses it only while a running VM holds the chain open. ``kept`` says
        what became of the file. Otherwise what was checked, for the answer. Reads only
        the headers of the disk files (``hostfs.children``); one Windows refuses to read
        (a running VM's worker holds its disk open, sharing no access) is asked of Hyper-V
        instead (``_held_children``), so a running VM's linked clone is refused by name
        before a download over its template copies a byte, not by Windows' bare sharing
        violation on the final rename. ``found``: the search of the folder already made
        for ``path`` (``remove_unless_parent``'s, handed to its ``release``), so that
        only the disks it could not read are asked of Hyper-V now."""
        deadline = time.monotonic() + self.parent_budget_s
        if found is None:
            found = await self._children(path)
        held, asked = await self._held_children(path, found.unreadable, deadline)
        _refuse_children(path, found, held, asked, kept, self.parent_budget_s)
        return found.summary()

    async def remove_unless_parent(
        self, path: str, kept: str = "the file was kept", *,
        release: Callable[[Children], Awaitable[None]] | None = None,
    ) -> str:
        """Delete ``path`` unless a disk file in its folder names it as its parent, as
        ``refuse_if_parent`` tells, but asking Hyper-V of no disk that could not be read:
        a running VM's disk that stands on ``path`` holds it open, and Windows refuses the
        delete itself; only then are those disks asked (``_held_children``), to name the
        VM rather than leave Windows' bare "being used by another process". A delete in
        a pool of many running VMs so costs no call for each of their disks. The one
        delete of a disk file a command names (DeleteCommand, DestroyCommand).
        ``release``, when given, is awaited once the check passed, just before the
        delete, with the search it made (DestroyCommand's detach from its VM: nothing is
        detached from a VM for a file that is kept, and the folder is not searched again
        for it). What was checked, for the answer."""
        found = await self._children(path)
        _refuse_children(path, found, [], len(found.unreadable), kept, self.parent_budget_s)
        if release is not None:
            await release(found)
        try:
            await self.files.remove(path)
        except HostFileError:
            if found.unreadable:
                held, asked = await self._held_children(
                    path, found.unreadable, time.monotonic() + self.parent_budget_s)
                if held:
                    _refuse_children(path, found, held, asked, kept, self.parent_budget_s)
            raise
        return found.summary()

    async def _children(self, path: str) -> Children:
        return await children_of(self.files, path, (ntpath.dirname(path),),
                                 self.parent_budget_s)

    async def _held_children(self, parent: str, unreadable: tuple[str, ...], deadline: float
                             ) -> tuple[list[tuple[str, str]], int]:
        """Of the disk files whose headers could not be read, those Hyper-V reports as
        differencing disks of ``parent``, each with what holds it open (the VM of this
        host that has it in a drive, else ``_HELD_BY_NO_VM_HERE``); and how many were
        asked before ``deadline``. A file Hyper-V cannot read either is left as unreadable
        (it is no disk a VM could start from). 1 call a file (+ 1 query and gets for each
        child, to name its VM)."""
        held: list[tuple[str, str]] = []
        asked = 0
        for disk in unreadable:
            if time.monotonic() > deadline:
                break
            asked += 1
            try:
                settings = await disks.read_settings(self.hv, disk, policy=self.job_wait)
            except AgentError as error:
                log.info("Hyper-V could not read %s either: %s", disk, error)
                continue
            if settings.parent_path is None or not same_path(settings.parent_path, parent):
                continue
            # Hyper-V answers for this host's VMs only: a clone in a pool other hosts
            # reach (an SMB share, a cluster volume) is most often held by a VM of one
            attached = await disks.find_attachment(self.hv, disk)
            held.append((disk, f"the {attached.power.value} VM {attached.vm_name}"
                         if attached is not None else _HELD_BY_NO_VM_HERE))
        return held, asked

    def disk_job_wait(self, wait_s: int) -> jobs.WaitPolicy:
        """The bound of a Hyper-V job that reads and writes a whole disk (a merge) for a
        command the management server waits ``wait_s`` seconds for (its ``wait``: a
        CopyCommand's is ``copy.volume.wait``, 3 hours by default; 0, as a CreateObjectCommand's,
        is the management server's own ``MS_DEFAULT_WAIT_S``): that long, and never
        shorter than ``job_wait``, which bounds the jobs that only touch metadata. A
        merge of a large disk, or a large fixed disk written whole, takes longer than
        ``job_wait``; cut off there, the command would fail while the management server
        still waits and Hyper-V still writes. Like every wait inside a command, it ends
        at the command's bound (``jobs.command_bound``: half the command's ``wait``),
        unless the caller sizes its whole operation from the wait (``jobs.whole_wait``,
        a volume move)."""
        asked = ms_wait_s(wait_s)
        return dataclasses.replace(self.job_wait, timeout_s=max(self.job_wait.timeout_s, asked))

    @contextlib.asynccontextmanager
    async def standalone(self, path: str, settings: disks.DiskSettings | None = None,
                         policy: jobs.WaitPolicy | None = None) -> AsyncIterator[str]:
        """The file to copy for the disk ``path`` so that the copy stands alone: the file
        itself, or, for a differencing disk (a linked clone), a disk Hyper-V merges with
        its parents beside it, removed again after the block. A differencing file copied
        as it is would still name its parent, the template in the pool it came from.
        For copies to an image store, whose share Hyper-V may not be able to write; a copy
        into another pool uses ``copy_standalone``, which merges into the target's folder.
        ``settings``: the disk's, when already read (1 call otherwise; + 1 call and 1 W
        for the merge, bounded by ``policy``, default ``job_wait``)."""
        if settings is None:
            settings = await disks.read_settings(self.hv, path, policy=self.job_wait)
        if settings.type is not DiskType.DIFFERENCING:
            yield path
            return
        aside = self.aside_files
        merged = aside.name_for(path) + ntpath.splitext(path)[1]
        with aside.writing(merged):
            try:
                with self.removed_after_job(merged):
                    await disks.merged_copy(self.hv, path, merged,
                                            parent=settings.parent_path,
                                            policy=policy or self.job_wait)
                log.info("%s is a differencing disk (parent %s); copying it merged", path,
                         settings.parent_path)
                yield merged
            finally:
                await discard(self.files, merged)

    async def copy_standalone(self, source: str, target: str,
                              policy: jobs.WaitPolicy | None = None,
                              grace: jobs.WaitPolicy = jobs.STOP_GRACE,
                              fixed: bool | None = None) -> None:
        """Copy the disk ``source`` to ``target`` in another folder the host's Hyper-V keeps
        disks in (a primary pool), so that the copy stands alone and is of the kind
        ``fixed`` asks (``copy_kind``: the destination volume's provisioning type; None
        keeps the source's kind). A source of that kind is copied as it is stored
        (``copy_file``). Any other (a differencing disk, a linked clone; a dynamic disk
        to be fixed; a fixed one to be dynamic) is written by Hyper-V
        (``converted_copy``) straight into an aside file beside ``target``, renamed to
        ``target`` once Hyper-V wrote it whole and removed on any failure or
        cancellation (``staged``): nothing is written in the source's
        folder, which may be too full to take a merged copy, and the data is written
        once. A job still running when its wait ends (``policy`` ran out, or the copy
        was cancelled) is stopped, and waited on for up to ``grace.timeout_s``, before the
        aside file is removed; one Hyper-V cannot stop holds the file open until it ends,
        and the file is removed then (``removed_after_job``). 1 call (+ 1 usage call for
        a fixed copy, 1 call and 1 W for Hyper-V's copy, bounded by ``policy``, default
        ``job_wait``)."""
        settings = await disks.read_settings(self.hv, source, policy=self.job_wait)
        kind = kind_of_copy(settings.type, fixed)
        if settings.type is kind:
            await self.copy_file(source, target)
            return
        await self.aside_files.sweep(self.files, split(target)[0], target)
        async with self.staged(target) as made:
            await self.converted_copy(source, settings, made, kind, policy, grace)

    async def write_copy(self, source: str, path: str, fixed: bool | None,
                         policy: jobs.WaitPolicy | None = None,
                         settings: disks.DiskSettings | None = None) -> None:
        """Write at the fresh path ``path`` (a ``staged`` one) a standalone copy of the
        disk ``source`` of the kind ``fixed`` asks (as ``copy_standalone``): as stored
        when it is of that kind, else by Hyper-V. ``settings``: the source's, when the
        caller read them. 1 call when it did not (+ as ``converted_copy``)."""
        if settings is None:
            settings = await disks.read_settings(self.hv, source, policy=self.job_wait)
        kind = kind_of_copy(settings.type, fixed)
        if settings.type is kind:
            await self.copy_file(source, path)
        else:
            await self.converted_copy(source, settings, path, kind, policy)

    async def converted_copy(self, source: str, settings: disks.DiskSettings, path: str,
                             kind: DiskType, policy: jobs.WaitPolicy | None = None,
                             grace: jobs.WaitPolicy = jobs.STOP_GRACE) -> None:
        """Hyper-V writes at the fresh path ``path`` a new disk of ``kind`` (fixed or
        dynamic) holding what the disk ``source`` (of ``settings``) shows, merged with its
        parents (ConvertVirtualHardDisk). A fixed disk takes its whole virtual size at
        once: one that would leave its volume less than ``room.KEEP_FREE_BYTES`` free is
        refused before Hyper-V is asked. Hyper-V writes the whole disk, so ``policy``
        should be the command's own wait (``disk_job_wait``). 1 call and 1 W (+ 1 usage
        call for a fixed disk)."""
        fixed = kind is DiskType.FIXED
        if fixed:
            await require_room(self.files, path, settings.size_bytes,
                               f"a fixed copy (FAT) of {source}", "nothing was written")
        log.info("Hyper-V writes %s (%s, parent %s) as a %s disk at %s", source,
                 settings.type.name.lower(), settings.parent_path, kind.name.lower(), path)
        await disks.merged_copy(self.hv, source, path, fixed=fixed,
                                parent=settings.parent_path,
                                policy=policy or self.job_wait, grace=grace)

    @property
    def aside_files(self) -> AsideFiles:
        """The agent's aside files; without them, a namer of this copy alone (which sweeps
        only its own target's, as ``hostfs.transfer`` does)."""
        return self.aside or AsideFiles(secrets.token_hex(4))

    @contextlib.asynccontextmanager
    async def staged(self, target: str) -> AsyncIterator[str]:
        """A fresh path next to ``target`` to make a new disk at, renamed over ``target``
        when the block succeeds and removed (with whatever a failed job left) when it
        fails, so ``target`` is either the finished disk or as it was before; a job
        Hyper-V could not stop writes it on, and it is removed once that job ends
        (``removed_after_job``). The name is an aside file's in the target's folder
        (``hostfs.aside``: swept when a killed process left it, never while in use)
        followed by the disk's extension, from which Hyper-V takes the format. A retry
        of the command meanwhile writes a file of its own and finds no ``target``."""
        async with self.aside_files.replacing(self.files, target,
                                              ntpath.splitext(target)[1]) as temp:
            with self.removed_after_job(temp):
                yield temp

    def removed_after_job(self, path: str) -> contextlib.AbstractContextManager[None]:
        """Inside the block, a Hyper-V job writing ``path`` that its caller gives up on
        (its wait cut, or the command cancelled) and Hyper-V cannot stop holds the file
        open, so it cannot be removed now and would be written on: ``path`` is removed
        once the job has ended, in the background (``jobs.after_job``, for up to the
        job's own wait). The failure goes on as it was."""
        return jobs.after_job(lambda: self._remove_left(path))

    async def _remove_left(self, path: str) -> None:
        try:
            if await self.files.remove(path):
                log.info("removed %s, written by a Hyper-V job given up on", path)
        except AgentError as error:
            log.warning("%s, written by a Hyper-V job given up on, is kept for a later "
                        "sweep: %s", path, error)

    async def copy_file(self, source: Source, target: str,
                        digest: str | None = None) -> Transferred:
        """Copy ``source`` as stored (nothing expanded) to the host path ``target``."""
        from hyperv_agent.hostfs.transfer import transfer

        return await transfer(self.files, source, target, decompress=False, digest=digest,
                              aside=self.aside)

    async def download(self, source: Source, target: str, checksum: str | None = None,
                       kind: str = "template") -> Downloaded:
        """Copy the image ``source`` to ``target`` as ``hostfs.download`` does: a disk must
        be a whole disk of its own (``kind`` names it in the refusal)."""
        from hyperv_agent.hostfs.download import download_image

        return await download_image(self.files, source, target, checksum=checksum,
                                    aside=self.aside, kind=kind)


#: Who holds a disk open that no VM of this host has in a drive.
_HELD_BY_NO_VM_HERE = ("no VM of this host (a VM of another host reaching the pool, or "
                       "another process)")


def _refuse_children(path: str, found: Children, held: list[tuple[str, str]], asked: int,
                     kept: str, budget_s: float) -> None:
    """AgentError when ``found`` or ``held`` (of the ``asked`` unreadable disk files
    Hyper-V was asked of) holds a child of ``path``, or when the search was not
    complete; ``kept`` says what became of the file."""
    if found.children or held:
        more = "" if found.complete and asked == len(found.unreadable) else " at least"
        example = f"{held[0][0]}, held open by {held[0][1]}" if held else found.children[0]
        raise AgentError(
            f"{path} is the parent of{more} {len(found.children) + len(held)} "
            f"differencing disk(s) (linked clones), e.g. {example}; they would be lost "
            f"with it ({kept}; {found.summary()})")
    if not found.complete or asked < len(found.unreadable):
        raise AgentError(f"whether a disk file names {path} as its parent could not be "
                         f"told in {budget_s:g} s ({kept}; {found.summary()})")
    log.info("no disk file names %s as its parent: %s", path, found.summary())
