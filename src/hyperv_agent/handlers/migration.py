"""Migration: PrepareForMigration on the destination, Migrate (a live migration) and
MigrateWithStorage (the VM with its disks) on the source, and MigrateVolume (one disk to
another pool) on the VM's host (protocol §5.4).

The management server moves a running VM in this order: PrepareForMigrationCommand to the
destination, MigrateCommand to the source, CheckVirtualMachineCommand to the destination.
When a step fails it sends the destination a StopCommand for the VM as its clean-up. So a
failed answer means the VM is still where it was: Hyper-V hands a VM over in one step, a
refusal changes nothing, and a move that outlasts its bound is stopped (or, when it
completed all the same, answered as the success it is). The one failure that cannot say
so is a move whose job Hyper-V lost while the VM still showed it migrating, or could not
be read: its answer says to see where the VM is (``migration._told_without_job``).

Each move holds the VM's lock (the one StartCommand, StopCommand, the VM commands and the
state report take) from the first look at the VM to the job's end; a move of disks
(MigrateWithStorage, an attached MigrateVolume) holds inside it the file locks of each
moved disk's file and target. None of the commands the management server sends while a
VM moves (the state report, GetVmStats, GetVolumeStats, CheckVirtualMachine,
PrepareForMigration of another VM) takes a file lock, so none waits for the move; only a
command writing or deleting one of those files (Delete, Copy, Resize, an attach) does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ntpath
import socket
from dataclasses import dataclass

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    MigrateAnswer,
    MigrateVolumeAnswer,
    MigrateWithStorageAnswer,
    PrepareForMigrationAnswer,
)
from hyperv_agent.cloudstack.base import MS_DEFAULT_WAIT_S, ms_wait_s
from hyperv_agent.cloudstack.commands_storage import MigrateVolumeCommand
from hyperv_agent.cloudstack.commands_vm import (
    MigrateCommand,
    MigrateWithStorageCommand,
    PrepareForMigrationCommand,
)
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    PrimaryDataStoreTO,
    StorageFilerTO,
    TemplateObjectTO,
    VirtualMachineTO,
    VolumeObjectTO,
    VolumeTO,
)
from hyperv_agent.errors import AgentError, HostFileError, InvalidRequest, MigrationFailed
from hyperv_agent.handlers import start_plan
from hyperv_agent.handlers.datapaths import (
    DataPaths,
    config_drive_on_host,
    confined,
    is_config_drive,
)
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.files import FileHandlers
from hyperv_agent.handlers.locks import FileLocks, NamedLocks
from hyperv_agent.handlers.vm import cloudstack_power, named_vm, shown_name
from hyperv_agent.hostfs import images, locations
from hyperv_agent.hostfs.api import FileStat
from hyperv_agent.hostfs.aside import AsideFiles, discard
from hyperv_agent.hyperv import build, disks, drives, host, jobs, migration, power
from hyperv_agent.hyperv.schema import MigrationType
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef
from hyperv_agent.state import SHARED_TYPES

log = logging.getLogger("hyperv_agent.handlers.migration")
#: ERROR_FILE_NOT_FOUND and ERROR_PATH_NOT_FOUND as the HRESULTs Hyper-V's reasons carry
#: (a destination whose config drive cache is elsewhere may lack the folder as well).
_NOT_FOUND = ("0x80070002", "0x80070003")
MOVE_MARK = ".moving"  # ends the name of a volume move's marker beside its target


@dataclass(frozen=True)
class MigrationSettings:
    """How long a move may take, and how its destination is named."""

    default_wait_s: float = MS_DEFAULT_WAIT_S  # a command's bound when its ``wait`` is 0
    cancel_grace_s: float = 30.0  # kept back from the bound to stop an overdue move
    name_lookup_s: float = 2.0  # reverse DNS of the destination's address

    def bounds(self, wait_s: int) -> tuple[jobs.WaitPolicy, jobs.WaitPolicy]:
        """The wait for a move's job, and the wait after asking it to stop: together
        ``wait_s`` (``default_wait_s`` for 0), so the answer comes before the MS gives up."""
        total = ms_wait_s(wait_s, self.default_wait_s)
        grace = min(self.cancel_grace_s, total / 4)
        return (jobs.WaitPolicy(timeout_s=total - grace, max_poll_s=0.5),
                jobs.WaitPolicy(timeout_s=grace, max_poll_s=0.5))


class MigrationHandlers(FileHandlers):
    """``vm_locks`` is the agent's VM lock table; ``file_locks`` (of ``FileHandlers``) its
    file lock table, held while a disk moves: one that belongs to no VM alone, a running
    VM's inside the VM's lock."""

    def __init__(self, hv: HyperV, paths: DataPaths, vm_locks: NamedLocks,
                 file_locks: FileLocks, aside: AsideFiles | None = None,
                 settings: MigrationSettings | None = None,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> None:
        super().__init__(hv, paths, file_locks, job_wait, aside=aside)
        self.vm_locks = vm_locks
        self.settings = settings or MigrationSettings()

    def table(self) -> Routes:
        return {
            names.PREPARE_FOR_MIGRATION_COMMAND: Route(PrepareForMigrationCommand, self.prepare),
            names.MIGRATE_COMMAND: Route(MigrateCommand, self.migrate),
            names.MIGRATE_WITH_STORAGE_COMMAND: Route(MigrateWithStorageCommand,
                                                      self.migrate_with_storage),
            names.MIGRATE_VOLUME_COMMAND: Route(MigrateVolumeCommand, self.migrate_volume),
        }

    # --- on the destination ---------------------------------------------------------------

    async def prepare(self, prepare: PrepareForMigrationCommand) -> Result:
        """Whether ``vm`` can arrive here: a vSwitch for each NIC's traffic label, each
        disk on a shared pool registered here and its file reachable, each ISO in its DVD
        drives (its CD, its config drive) reachable at the path StartCommand gave it,
        memory for the VM, and live migration enabled. ``result`` true only when all
        hold; every shortfall is named. More disks or NICs than a VM takes (StartCommand's
        bounds) are refused before any is looked at, and so is a VM whose name is blank
        (``named_vm``). Read-only and safe to repeat;
        ``rollback`` has nothing to undo. 3 queries, sent at once."""
        vm = prepare.vm
        if prepare.rollback:
            return PrepareForMigrationAnswer(result=True, details="nothing was prepared")
        if vm is None:
            raise InvalidRequest("vm is missing: no VM to prepare for")
        named_vm(vm.name, "vm.name")
        start_plan.device_counts(vm)  # no VM has more: refused before any is looked at
        problems = [problem for found in await asyncio.gather(
            self._switches(vm), self._memory(vm), self._enabled(), self._disks(vm))
            for problem in found]
        if problems:
            raise InvalidRequest(f"VM {vm.name} cannot move to this host: "
                                 + "; ".join(problems))
        return PrepareForMigrationAnswer(result=True, details=f"ready for {vm.name}")

    async def _switches(self, vm: VirtualMachineTO) -> list[str]:
        try:
            switches, unlabelled = await host.nic_switches(
                self.hv, unlabelled=any(not nic.name for nic in vm.nics))
        except InvalidRequest as error:
            return [str(error)]
        problems = []
        for nic in vm.nics:
            try:
                start_plan.planned_nic(nic, switches, unlabelled=unlabelled)
            except InvalidRequest as error:
                problems.append(str(error))
        return problems

    async def _memory(self, vm: VirtualMachineTO) -> list[str]:
        # What the VM has as StartCommand would build it (start_plan.memory_sizes): its
        # static memory, or with dynamic memory its minimum, the least it can arrive with
        # and what the management server counted it for. One that has grown beyond it
        # meanwhile may still find too little here; Hyper-V then refuses the migration.
        try:
            needed_mb, _ = start_plan.memory_sizes(vm, 2 if start_plan.boot_firmware(vm)[0]
                                                   else 1)
        except InvalidRequest as error:
            return [str(error)]
        free_mb = await host.free_memory_kib(self.hv) // 1024
        if needed_mb > free_mb:
            return [f"it needs {needed_mb} MB of memory and the host has {free_mb} MB free"]
        return []

    async def _enabled(self) -> list[str]:
        if (await migration.host_settings(self.hv)).enabled:
            return []
        return ["live migration is not enabled on this host (Enable-VMMigration)"]

    async def _disks(self, vm: VirtualMachineTO) -> list[str]:
        """Each volume (ROOT, DATADISK) and each ISO reachable from here, found as
        StartCommand finds it; an ISO disk naming no ISO (an empty DVD drive) has nothing
        to reach. A disk of any other type is a problem, as StartCommand refuses it:
        CloudStack's VMs have no other disks, and a disk of an unknown type is not skipped
        unchecked."""
        problems = []
        cd = start_plan.cd_index(vm.disks)
        for index, disk in enumerate(vm.disks):
            try:
                kind = start_plan.disk_kind(disk)
            except InvalidRequest as error:
                problems.append(str(error))
                continue
            if start_plan.is_empty_dvd(disk):
                continue
            what = f"disk {kind}" if kind != "ISO" else \
                "disk ISO (the VM's CD)" if index == cd else "disk ISO (config drive)"
            problem = await self._reachable(disk, kind, what,
                                            config_drive_on_host(vm.config_drive_location))
            if problem:
                problems.append(problem)
        return problems

    async def _reachable(self, disk: DiskTO, kind: str, what: str,
                         host_cache: bool) -> str | None:
        """Why the file of ``disk`` cannot be used here; None when it can. A live move
        keeps every path the VM's drives name, a DVD drive's ISO on the image store
        included (StartCommand reads it there, never from a copy), so the file must be
        there for this host at the same path: Hyper-V refuses the move otherwise. A config
        drive in the host's cache (``host_cache``) is the one the MS wrote into this
        host's cache (HandleConfigDriveIsoCommand) before it sent this command."""
        local = local_volume(disk)
        if local is not None:
            return local
        try:
            path = await self.paths.disk_image(disk, kind, check_links=False, what=what,
                                               host_cache=host_cache)
        except AgentError as error:
            return _of(what, error)
        try:
            await self.paths.disk_image(disk, kind, what=what,  # no link leads out
                                        host_cache=host_cache)
            found = await self.files.exists(path)
        except HostFileError as error:
            return f"{what}: {path} cannot be reached from this host: {error}"
        except AgentError as error:
            return _of(what, error)
        if not found:
            return f"{what}: {path} cannot be reached from this host"
        return None

    # --- on the source --------------------------------------------------------------------

    async def migrate(self, command: MigrateCommand) -> Result:
        """Live-migrate the VM to the host at ``destinationIp``; its disks stay where they
        are, so each must be on storage both hosts reach. Refusals (a VM that is not on, a
        disk on a local pool, an unknown or stopped destination, a missing switch there)
        answer at once with Hyper-V's reason, the VM here as before; a blank ``vmName``
        before any query (``named_vm``). The destination's
        name is looked up once the VM is found here, so a request for another host's VM
        costs no lookup.
        When ``virtualMachine`` names ISOs, the files the VM's DVD drives hold are compared
        with them (``_iso_mismatch``), and one the management server did not name is said
        in the answer, failed or not.
        Warm: 3 calls + 1 job wait (find the VM, Hyper-V's check, the move), 1 query more
        when ``virtualMachine`` names an ISO; the reason of a refusal costs 1 call + 1
        wait, and 1 query more when it is about the destination's processors."""
        address = destination_address(command.destination_ip, "destinationIp")
        if command.virtual_machine is not None:
            shared_disks_only(command.virtual_machine)
        async with self.vm_locks.hold(named_vm(command.vm_name)):
            vm = await self._running_here(command.vm_name)
            note = await self._iso_mismatch(command.virtual_machine, vm)
            destination = await host_name_of(address, self.settings.name_lookup_s)
            await self._move(migration.Move(vm, destination=destination,
                                            addresses=(address,)), command.wait_s, note,
                             self._cached_config_drive(command.virtual_machine))
        log.info("VM %s moved to %s (%s)", vm.name, destination, address)
        return MigrateAnswer(result=True, details=_noted(f"{vm.name} moved to {destination}",
                                                         note))

    async def migrate_with_storage(self, command: MigrateWithStorageCommand) -> Result:
        """Move the VM and the disks ``volumeToFilerAsList`` names to the host at
        ``tgtHost`` (shared nothing): each file goes into its pool's folder there under its
        own name; disks not named stay where they are. ``volumeTos`` gives each moved
        volume's ``id`` and ``path``. The DVD drives' ISOs stay where they are, compared
        with those ``vm`` names as MigrateCommand compares them. Refused before anything
        moves: a linked clone that would name a template the destination may lack
        (``_stands_on_arrival``). Holds the VM's lock, then the file locks of the disks'
        files and targets, so a delete or copy of one waits for the move. A ``vm.name``
        that can name no VM (blank, or holding a character XML cannot carry): a failed
        answer saying so, before any query (``named_vm``). 4 calls + 1 per moved disk + 1
        job wait once warm."""
        named_vm(command.vm.name, "vm.name")
        address = destination_address(command.tgt_host, "tgtHost")
        if not command.volume_to_filer_as_list:
            raise InvalidRequest("volumeToFilerAsList is empty: no volume to move")
        folders = [(pair.t, self._target_folder(pair.u),
                    str(pair.u.type or "") in SHARED_TYPES)
                   for pair in command.volume_to_filer_as_list]
        async with self.vm_locks.hold(command.vm.name):
            vm = await self._running_here(command.vm.name)
            storage = await drives.read_storage(self.hv, vm)
            disks = tuple(_disk_move(storage, volume, folder) for volume, folder, _ in folders)
            # the files' locks inside the VM's, as an attached MigrateVolume takes them: a
            # delete or copy of a disk's file, or of its target in a pool this host reaches,
            # runs wholly before the move or after it, and then finds the file where the
            # move left it (a target in the destination's local pool is no file of this
            # host; its lock makes a command on this host's file of that path wait, no more)
            async with self.file_locks.hold_all(*_moved_files(disks)):
                problems = [problem for disk, (volume, folder, shared)
                            in zip(disks, folders, strict=True)
                            if (problem := await self._stands_on_arrival(
                                disk, folder, shared, volume.name or volume.path or ""))]
                if problems:
                    raise InvalidRequest(
                        f"VM {vm.name} was not moved: " + "; ".join(problems) + ". To move "
                        "it, stop the VM and migrate it with its volumes then: a stopped "
                        "VM's volumes are copied merged with their template, standing alone")
                note = await self._iso_mismatch(command.vm, vm, storage)
                destination = await host_name_of(address, self.settings.name_lookup_s)
                await self._move(migration.Move(vm, MigrationType.VIRTUAL_SYSTEM_AND_STORAGE,
                                                destination, (address,), disks),
                                 command.wait_s, note, self._cached_config_drive(command.vm))
        return MigrateWithStorageAnswer(result=True, details=note or None, volume_tos=[
            _moved_volume(volume) for volume, _, _ in folders])

    async def _stands_on_arrival(self, disk: migration.DiskMove, folder: str, shared: bool,
                                 volume: str) -> str | None:
        """Why the running VM's disk, moved to another host into ``folder`` (a pool both
        hosts reach when ``shared``, else the destination's local pool at that path),
        would stand on a template the destination may not hold; None when it stands
        alone, or on a template in ``folder`` both hosts reach. Hyper-V moves the disk's
        file as it is (the agent names no place for a parent; Microsoft does not say
        where Hyper-V puts one by default), so on the destination it names its parent at
        the same path. Outside ``folder``, that is a template the management server evicts
        from its old pool once no volume there uses it, and in a host's local pool one no
        other host opens; in the destination's local pool, a file this host cannot see
        (the management server copies no template for this move), so it is not counted
        on. 1 call."""
        source = disk.source
        parent = (await disks.read_settings(self.hv, source, policy=self.job_wait)).parent_path
        if parent is None:
            return None
        clone = f"volume {volume}: {ntpath.basename(source)} is a linked clone of {parent}"
        if not locations.same_folder(ntpath.dirname(parent), folder):
            return (f"{clone}, and Hyper-V moves a running VM's disk as it is, so in "
                    f"{folder} it would still depend on that template outside its new pool, "
                    "which the management server evicts once no volume of that pool uses "
                    "it (and which no other host opens in a host's local pool)")
        if shared:
            return None
        return (f"{clone}, and Hyper-V moves a running VM's disk as it is, so in the "
                f"destination's local pool it would name {ntpath.basename(parent)} there, "
                "which this host cannot see and the management server does not copy for "
                "this move")

    def _target_folder(self, pool: StorageFilerTO) -> str:
        """A volume's new folder: a shared pool's registered root, or a local pool of the
        destination, which this host cannot see: accepted only where this host has its own
        registered pool (a cluster's hosts keep local disks in the same folder), so no
        move writes outside the pools."""
        if str(pool.type or "") not in (*SHARED_TYPES, "Filesystem"):
            raise InvalidRequest(f"pool {pool.uuid}: type {pool.type} is not one Hyper-V "
                                 "keeps disks on")
        return self.paths.pool_root(pool, f"pool {pool.uuid}")

    # --- one disk -------------------------------------------------------------------------

    async def migrate_volume(self, command: MigrateVolumeCommand) -> Result:
        """Move the volume ``volumePath`` into ``pool`` (registered on this host). A disk of
        the running VM ``attachedVmName`` moves with Hyper-V's storage migration while the
        VM runs (holding the VM's lock, then the locks of the disk's file and its target,
        so a delete or copy of either waits for the move); a volume no running VM uses is
        copied into the pool (written aside,
        renamed; a linked clone merged by Hyper-V straight into the pool, never beside its
        source) and its old file removed. The answer's ``volumePath`` is the volume's path,
        which a move keeps. A move interrupted (the agent killed) after its copy was
        renamed into place is finished by a retry, which removes the source: the copy's
        marker (``move_marker``) says it is this volume's, copied from the file as it still
        is; one whose source or target pool cannot be seen (a share that went away reads
        as a path not found, its files as absent) fails naming that pool's root, the copy
        and its marker kept for a retry, and is never taken for finished. Refused,
        nothing touched: any other file already in the target pool under the
        name (never replaced), a volume already in ``pool``, a disk of a
        running VM that ``attachedVmName`` does not name (absent, empty or another VM's):
        only Hyper-V moves a disk in use, as DeleteCommand never deletes one, and a running
        VM's linked clone of a template outside ``pool`` (``_stands_alone_in``). A copy not
        done within the command's ``wait`` (less ``cancel_grace_s``) is stopped and
        removed (a copy Hyper-V cannot stop is removed once its job ends), its source
        kept, and the answer fails before the MS gives up. An ``attachedVmName`` given
        that can name no VM (blank, or holding a character XML cannot carry): a failed
        answer saying so, before any query (``named_vm``)."""
        if command.attached_vm_name:
            named_vm(command.attached_vm_name, "attachedVmName")
        folder = self.paths.pool_root(command.pool, "pool")
        if command.attached_vm_name:
            async with self.vm_locks.hold(command.attached_vm_name):
                moved = await self._move_attached(command, folder)
            if moved:
                return MigrateVolumeAnswer(result=True, volume_path=command.volume_path)
        await self._move_detached(command, folder)
        return MigrateVolumeAnswer(result=True, volume_path=command.volume_path)

    async def _move_attached(self, command: MigrateVolumeCommand, folder: str) -> bool:
        """Storage-migrate the disk of a VM on this host; False when the VM is not here or
        the volume is not one of its disks."""
        vm = await power.find_settled(self.hv, command.attached_vm_name or "", self.job_wait)
        if vm is None:
            return False
        storage = await drives.read_storage(self.hv, vm)
        if migration.disk_of(storage, command.volume_path) is None:
            return False
        volume = VolumeTO(path=command.volume_path, id=command.volume_id)
        disk = _disk_move(storage, volume, folder)
        source = disk.source
        if drives.same_file_key(source) == drives.same_file_key(disk.target):
            raise InvalidRequest(_already_in(command.volume_path, folder))
        # the files' locks inside the VM's (the caller's): a delete or copy of either file
        # runs wholly before the move or after it, and then finds the VM on the new file
        async with self.file_locks.hold_all(source, disk.target):
            await self._stands_alone_in(disk, folder, command.volume_path)
            if await self.files.exists(disk.target):
                raise InvalidRequest(f"{disk.target} already exists; it is not replaced")
            await self._move(migration.Move(vm, MigrationType.STORAGE, disks=(disk,)),
                             command.wait_s)
        return True

    async def _stands_alone_in(self, disk: migration.DiskMove, folder: str,
                               volume_path: str) -> None:
        """InvalidRequest when the running VM's disk is a linked clone of a template outside
        ``folder``. Hyper-V's storage migration moves the disk's file as it is (the agent
        names no place for a parent, and Hyper-V merges none into a running VM's disk): in
        ``folder`` it would still name the template in its old pool, which no other host
        opens (a live migration or a start there fails) and which the management server evicts
        once no volume of that pool uses it. Stopped, the VM's volume is copied merged with
        its template (``_move_detached``), standing alone. 1 call."""
        source = disk.source
        parent = (await disks.read_settings(self.hv, source, policy=self.job_wait)).parent_path
        if parent is None or locations.same_folder(ntpath.dirname(parent), folder):
            return
        raise InvalidRequest(
            f"volume {volume_path} was not moved: {ntpath.basename(source)} is a linked clone "
            f"of {parent}, and Hyper-V's storage migration moves a running VM's disk as it "
            f"is, so in {folder} it would still depend on that template in its old pool, "
            "which other hosts cannot open and the management server evicts once no volume "
            "there uses it. To move the volume, stop the VM and migrate the volume again: "
            "then it is copied merged with its template and stands alone in the new pool")

    async def _move_detached(self, command: MigrateVolumeCommand, folder: str) -> None:
        if command.source_pool is None:
            raise InvalidRequest(f"volume {command.volume_path} is not a disk of a VM on this "
                                 "host, and the command names no sourcePool to find it in")
        root = self.paths.pool_root(command.source_pool, "sourcePool")
        try:
            source = await self._volume_in(root, command.volume_path)
        except InvalidRequest:
            if locations.same_folder(root, folder) or not await self._source_removed(
                    root, folder, command.volume_path):
                raise
            return
        if locations.same_folder(root, folder):
            raise InvalidRequest(_already_in(command.volume_path, folder))
        target = locations.confine(folder, ntpath.basename(source))
        marker = move_marker(target)
        # The MS gives up after its wait and keeps the volume in the old pool: a copy that
        # outlasts it is stopped (and removed) with the source kept, never finished with
        # the source removed behind the MS's back.
        bound, grace = self.settings.bounds(command.wait_s)
        limit = asyncio.timeout(bound.timeout_s)
        try:
            async with limit, self.file_locks.hold_all(source, target):
                await self.refuse_if_running(source,
                                             "the volume was not moved; the file was kept")
                record = _move_record(source, await self.files.stat(source))
                if not await self._copied_before(folder, target, marker, record,
                                                 f"volume {command.volume_path}"):
                    # Written before the copy is renamed into place and removed after the
                    # source: a retry after a kill in between knows the copy for its own.
                    await self.files.write_text(marker, record)
                    try:
                        with jobs.whole_wait():  # bounded by ``limit``, less its grace
                            await self.copy_standalone(
                                source, target, self.disk_job_wait(command.wait_s), grace)
                    except BaseException:
                        await discard(self.files, marker)
                        raise
                limit.reschedule(None)  # copied whole: the move is finished whatever the time
                await self.files.remove(source)
                await discard(self.files, marker)  # moved: a marker left is only logged
        except TimeoutError:
            if not limit.expired():
                raise
            raise AgentError(f"volume {command.volume_path} was not moved within "
                             f"{bound.timeout_s:g} s, before the management server stops "
                             f"waiting for it: the copy was stopped and removed (one "
                             "Hyper-V could not stop is removed once it ends); "
                             f"{source} was kept") from None

    async def _copied_before(self, folder: str, target: str, marker: str, record: str,
                             what: str) -> bool:
        """Whether ``target`` (in the pool ``folder``) is the complete copy an interrupted
        move of the same source made (its marker, beside it, records the source as it is
        now): the move is then finished by removing the source. A ``target`` with no such
        marker is not replaced (InvalidRequest); one the marker says was copied from the
        source as it was before a change (the MS kept the volume in its old pool, and a VM
        wrote to it since) is removed, to be copied again. False when there is no
        ``target``; InvalidRequest naming ``folder``, before anything is written, when
        ``folder`` cannot be seen either (``absent_for_sure``: a copy may be there)."""
        if not await self.files.exists(target):
            await self.paths.absent_for_sure(folder, target, what)
            return False
        recorded = _read_record(await self.files.read_text(marker))
        current = _read_record(record)
        if recorded is None or current is None or drives.same_file_key(recorded[0]) \
                != drives.same_file_key(current[0]):
            raise InvalidRequest(f"{target} already exists; it is not replaced")
        if recorded[1:] == current[1:]:
            log.info("%s is the complete copy of %s an interrupted move made; the move is "
                     "finished by removing the source", target, current[0])
            return True
        log.info("%s was copied by an interrupted move of %s, which changed since; it is "
                 "copied again", target, current[0])
        await self.files.remove(target)
        return False

    async def _source_removed(self, root: str, folder: str, volume_path: str) -> bool:
        """Whether an interrupted move of ``volume_path`` from ``root`` into ``folder`` had
        removed the source and not yet its marker: the move is finished (the marker
        removed). A source found missing is taken for removed only while ``root`` is seen
        (``absent_for_sure``): on a share that cannot be reached it reads as absent, and
        the move finished then would leave it there, the marker gone. InvalidRequest
        naming the root, nothing changed, when ``root`` cannot be seen, or, when no marker
        is found, when ``folder`` cannot be seen either (the copy and its marker may be
        there, and the volume is not said missing)."""
        what, marker = f"volume {volume_path}", ""
        for name in images.disk_names(volume_path):
            try:
                target = locations.confine(folder, name)
            except AgentError:
                return False
            marker = move_marker(target)
            async with self.file_locks.hold_all(target):
                recorded = _read_record(await self.files.read_text(marker))
                if recorded is None or not await self.files.exists(target):
                    continue
                source = recorded[0]
                if not locations.same_folder(ntpath.dirname(source), root) or \
                        ntpath.basename(source).casefold() != name.casefold() or \
                        await self.files.exists(source):
                    continue
                await self.paths.absent_for_sure(root, source, what)
                log.info("%s was moved to %s by an interrupted move; it is finished", source,
                         target)
                await self.files.remove(marker)
                return True
        await self.paths.absent_for_sure(folder, marker, what)  # the last marker looked for
        return False

    async def _volume_in(self, root: str, volume_path: str) -> str:
        """The file of the volume ``volume_path`` (a uuid, or a file name) in ``root``."""
        what = f"volume {volume_path}"
        return await self.paths.first_present(root, images.disk_names(volume_path), what,
                                              missing=f"{what} is not in {root}",
                                              suffixes=images.DISK_SUFFIXES)

    # --- shared ---------------------------------------------------------------------------

    async def _running_here(self, name: str) -> VmRef:
        """The VM ``name`` of this host, which Migrate and MigrateWithStorage move only while
        CheckVirtualMachine reports it on (running or paused): the MS sends them for a
        VM it believes running and then asks the destination's CheckVirtualMachine, where a
        VM that arrived off reads PowerOff, so the MS fails the move and stops the VM on the
        source, leaving its definition (a saved one with its memory) on the destination.
        Hyper-V would move it; KVM and XenServer refuse, and so does this. A VM Hyper-V is
        starting, stopping or saving (it moves none meanwhile) is waited for first, within
        the job wait and the command's bound (``jobs.command_bound``), and then
        judged as it is (``power.find_settled``)."""
        vm = await power.find_settled(self.hv, name, self.job_wait)
        if vm is None:
            raise InvalidRequest(f"no VM named {shown_name(name)} on this host")
        if cloudstack_power(vm.power) is not PowerState.POWER_ON:
            raise InvalidRequest(f"VM {name} is {vm.power.value} on this host, not running: "
                                 "a live migration moves a running VM; it was not moved")
        return vm

    async def _move(self, move: migration.Move, wait_s: int, note: str = "",
                    cached: str | None = None) -> None:
        """Hyper-V's check, then the move within the bound ``wait_s`` gives. A refusal
        about the destination's processors says what would let the VM move
        (``_processor_hint``), one about the config drive in this host's cache
        (``cached``, ``_cache_hint``) which setting to change; ``note``
        (``_iso_mismatch``) is added to the reason of a failure."""
        reason = await migration.check(self.hv, move)
        if reason is None:
            policy, grace = self.settings.bounds(wait_s)
            try:
                with jobs.whole_wait():  # sized from the whole wait, its grace kept back
                    await migration.migrate(self.hv, move, policy, grace)
                return
            except MigrationFailed as failed:
                reason = str(failed)
        if migration.processor_refusal(reason):
            reason += await self._processor_hint(move)
        if cached is not None:
            reason += _cache_hint(reason, cached, self.paths.config_drive_cache)
        raise MigrationFailed(_noted(reason, note))

    def _cached_config_drive(self, named: VirtualMachineTO | None) -> str | None:
        """The path of the config drive ISO the VM ``named`` has in this host's config
        drive cache (its ``configDriveLocation`` HOST), which its DVD drive names; None for
        a VM whose config drive is elsewhere or that has none."""
        if named is None or not config_drive_on_host(named.config_drive_location):
            return None
        for disk in named.disks:
            data = disk.data
            if (str(disk.type).upper() == "ISO" and isinstance(data, TemplateObjectTO)
                    and data.path and is_config_drive(data.path)):
                try:
                    return confined(self.paths.host_cache_root("config drive"), data.path)
                except AgentError:  # a path PrepareForMigration refused already
                    return None
        return None

    async def _iso_mismatch(self, named: VirtualMachineTO | None, vm: VmRef,
                            storage: drives.VmStorage | None = None) -> str:
        """What to say of ISOs the VM's DVD drives hold here that the management server
        did not name in ``named`` (the VirtualMachineTO it also sent in
        PrepareForMigration); "" when each is named, or when ``named`` names no ISO (a
        system VM's, or none attached: then ``storage`` is not read). For each command the
        management server takes an ISO from one of the zone's image stores holding it,
        at random (``TemplateDataStoreDaoImpl.findByTemplateZoneReady`` shuffles them),
        and it builds a config drive again on the store with the most free space: the
        copy it names may be another store's than the one StartCommand put in the
        drive. PrepareForMigration then checked that other copy on the destination,
        while a move keeps the file the drive holds (the medium of a running guest is not
        changed for it: a guest reading its CD would see it ejected). The move is not
        refused for it (the destination may well reach both stores, and Hyper-V's check
        finds out): the answer names both files, so that a move Hyper-V refuses is not a
        riddle after a PrepareForMigration that said ready."""
        if named is None:
            return ""
        paths = []
        for disk in named.disks:
            if str(disk.type).upper() != "ISO" or start_plan.is_empty_dvd(disk):
                continue
            try:
                paths.append(await self.paths.disk_image(
                    disk, "ISO", check_links=False,
                    host_cache=config_drive_on_host(named.config_drive_location)))
            except AgentError:  # a file the MS could not mean: PrepareForMigration named it
                continue
        if not paths:
            return ""
        storage = storage or await drives.read_storage(self.hv, vm)
        keys = {drives.same_file_key(path) for path in paths}
        places = sorted((d for d in storage.drives if d.dvd),  # the VM's CD first
                        key=lambda d: (d.bus != drives.IDE, d.controller, d.slot))
        held = [drive.image for drive in places if drive.image
                and drives.same_file_key(drive.image) not in keys]
        if not held:
            return ""
        others = [path for path in paths if storage.holding(path) is None]
        log.warning("VM %s: its DVD drives hold %s, which the management server did not "
                    "name for its move (it named %s)", vm.name, ", ".join(held),
                    ", ".join(others) or "no other ISO")
        named_text = (f"it named {', '.join(others)} (another image store's copy), which "
                      "PrepareForMigration checked on the destination" if others
                      else "it named no other ISO")
        return (f"the VM's DVD drives hold {', '.join(held)}, which the management server "
                f"did not name for this move: {named_text}; the VM moves with the files its "
                "drives hold (no ISO is copied or changed), so the destination must reach "
                "those")

    async def _processor_hint(self, move: migration.Move) -> str:
        """What would let ``move``'s VM move to a destination whose processors Hyper-V
        found it cannot use, by whether the VM runs with processor compatibility (1
        query): without it, starting it with it, unless the processors are of another
        vendor; with it, only a stop and a start there."""
        name, where = move.vm.name, move.destination
        try:
            limited = await build.processor_compatibility(self.hv, move.vm.guid)
        except AgentError as error:
            log.warning("VM %s: its processor compatibility could not be read: %s", name, error)
            return ""
        if limited:
            return (f" (VM {name} already runs with processor compatibility, which spans "
                    f"the processor generations of one vendor only: the processors of "
                    f"{where} are of another vendor, Intel and AMD, and a VM moves between "
                    "them only stopped; stop it and start it on that host)")
        return (f" (VM {name} runs with every processor feature of the host it started on, "
                f"and the processors of {where} lack some of them or are of another vendor. "
                "Started with processor compatibility (its guest.cpu.mode detail custom, or "
                "[agent] processor_compatibility = true on the hosts; it takes effect when the "
                "VM next starts) it moves live between processor generations of one vendor; "
                "between Intel and AMD a VM moves only stopped)")


def destination_address(text: str | None, field: str) -> str:
    """The destination host's address from ``field``; InvalidRequest when it is not one."""
    if not text:
        raise InvalidRequest(f"{field} is missing: no destination host")
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidRequest(f"{field} {text[:60]!r} is not an IP address") from None


async def host_name_of(address: str, timeout_s: float) -> str:
    """What Hyper-V is told the destination is called: the name reverse DNS gives its
    ``address`` (Kerberos needs a name), else the address itself (no PTR record, a lookup
    slower than ``timeout_s``, or a loopback name such as ``localhost``, which would name
    the source itself)."""
    loop = asyncio.get_running_loop()
    try:
        name, _ = await asyncio.wait_for(
            loop.getnameinfo((address, 0), socket.NI_NAMEREQD), timeout_s)
    except (OSError, TimeoutError):
        return address
    if not name or name.split(".", 1)[0].lower() == "localhost":
        return address
    return name


def move_marker(target: str) -> str:
    """The marker of a move of a volume into ``target``: a hidden file beside it naming
    the source, there from before the copy is renamed into place until the source is
    removed (not an aside file: no sweep removes it)."""
    folder, name = ntpath.split(target)
    return ntpath.join(folder, f".{name}{MOVE_MARK}")


def _move_record(source: str, stat: FileStat | None) -> str:
    """What a move's marker records: the source's path, size and last write."""
    return json.dumps({"source": source, "size": stat.size if stat else None,
                       "modified_ns": stat.modified_ns if stat else None})


def _read_record(text: str | None) -> tuple[str, object, object] | None:
    """A marker's source, size and last write; None when there is no marker or it is not
    one."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None
    return (data["source"], data.get("size"), data.get("modified_ns"))


def _noted(text: str, note: str) -> str:
    """``text``, then ``note`` when there is one."""
    return f"{text}; {note}" if note else text


def _cache_hint(reason: str, cached: str, cache: str) -> str:
    """What to change when a move failed for the config drive ISO ``cached`` in this
    host's cache (``cache``): a live move keeps the path its DVD drive names, and the
    destination's agent writes the config drive the management server sends it before
    the move into its own cache, which PrepareForMigration found ready; so hosts whose
    ``config_drive_cache_path`` differ cannot move such a VM between them. Said when the
    reason names the ISO or its folder, or says a file was not found (Microsoft does not
    document whether Hyper-V names the file its destination lacks)."""
    text = reason.casefold()
    if ntpath.dirname(cached).casefold() not in text and not any(
            code in text for code in _NOT_FOUND):
        return ""
    return (f"; the VM's config drive is in this host's config drive cache, at {cached}, "
            "and a live move keeps that path: the destination must have its config drive "
            f"cache at the same place ({cache} here); set [agent] config_drive_cache_path "
            "alike on every host of the cluster and restart their agents")


def _of(what: str, error: AgentError) -> str:
    """``error``'s message, beginning with ``what`` (the disk it is about) when it does not
    already (a path's confinement names no disk)."""
    text = str(error)
    return text if text.startswith(what) else f"{what}: {text}"


def _already_in(volume_path: str, folder: str) -> str:
    """Why a volume is not moved into the pool ``folder``: it is there."""
    return (f"volume {volume_path} is already in the pool {folder}; there is nothing to "
            "move (the file was kept)")


def local_volume(disk: DiskTO) -> str | None:
    """Why a disk cannot stay where it is while its VM moves: it is on a local pool of this
    host; None for a disk on shared storage (or one whose pool is not said)."""
    data = disk.data
    store = data.data_store if isinstance(data, VolumeObjectTO) else None
    if not isinstance(store, PrimaryDataStoreTO) or str(store.pool_type or "") in SHARED_TYPES:
        return None
    assert isinstance(data, VolumeObjectTO)
    return (f"volume {data.name or data.path} is on the local pool {store.name or store.uuid} "
            f"({store.pool_type}), which no other host reaches: a live migration moves no "
            "disk; migrate the VM with its volumes (storage motion)")


def shared_disks_only(vm: VirtualMachineTO) -> None:
    """InvalidRequest naming every disk of ``vm`` on a local pool."""
    problems = [p for p in map(local_volume, vm.disks) if p is not None]
    if problems:
        raise InvalidRequest(f"VM {vm.name} cannot move live: " + "; ".join(problems))


def _disk_move(storage: drives.VmStorage, volume: VolumeTO, folder: str) -> migration.DiskMove:
    medium = migration.disk_of(storage, volume.path or "")
    if medium is None:
        raise InvalidRequest(f"volume {volume.name or volume.path} is not a disk of the VM")
    files = medium.strings("HostResource")
    return migration.DiskMove(medium, locations.confine(folder, ntpath.basename(files[0])))


def _moved_files(disks: tuple[migration.DiskMove, ...]) -> tuple[str, ...]:
    """The files a move of ``disks`` reads and writes: each disk's file and its target."""
    return (*(disk.source for disk in disks),
            *(disk.target for disk in disks))


def _moved_volume(volume: VolumeTO) -> VolumeObjectTO:
    return VolumeObjectTO(id=volume.id, name=volume.name, path=volume.path,
                          size_bytes=volume.size_bytes)
