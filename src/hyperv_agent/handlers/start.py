"""StartCommand: create (or re-create) a VM from its VirtualMachineTO and start it
(protocol §9, §11).

The command is turned into a ``start_plan.Plan`` first: the vCPUs and memory checked
against what Hyper-V gives a VM of the generation on the host's release and against the
host's logical processors (``host.vm_maximums``, facts kept for the session), every disk
path resolved and
confined to its pool and checked to exist, every NIC's switch, VLAN and MAC checked, the boot
arguments split into KVP items, processor shares worked out from the speeds, the secure
boot template of a UEFI secure boot VM chosen from its guest OS (MicrosoftWindows for
Windows, the Microsoft UEFI CA for any other) and looked up, and for a system VM its ISO
looked for on the image store. Nothing is created until the whole plan is valid. Then
the VM is built from ``hyperv`` pieces (``build``, ``devices``, ``nics``, ``firmware``,
``kvp``) and started; a failure after the VM was
defined removes it again (its disk files are never touched) and the answer names the step.

The handler holds the VM's lock (shared with ``VmHandlers``) for its whole run, and from
its plan on the file locks of its volumes and, shared, of the ISOs it mounts (its config
drive among them), so a write of one of these files runs wholly before or after the
build. From before the VM is defined until it runs (or was removed again) its name is in
the ``state.BuildJournal``, so a VM that a killed process left half-built is removed at
the next start (``remove_half_built``), or by the next StartCommand for it, which
rebuilds any VM of its name that does not run. What each step costs is read from the round trips the
agent makes (``bench/start_steps.py``), not from the handler.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from hyperv_agent import logs
from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import StartAnswer
from hyperv_agent.cloudstack.commands_vm import StartCommand
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    NicTO,
    VirtualMachineTO,
)
from hyperv_agent.errors import AgentError, HostFileError, HyperVError, InvalidRequest
from hyperv_agent.handlers import start_plan
from hyperv_agent.handlers.datapaths import DataPaths, config_drive_on_host
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.handlers.vm import VmLocks, named_vm
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hyperv import build, devices, disks, firmware, jobs, kvp, nics, power, vms
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.hyperv.schema import PROCESSOR_LIMIT_FULL
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.state import BuildJournal

log = logging.getLogger("hyperv_agent.handlers.start")

_T = TypeVar("_T")

_ISO_FOLDER = "systemvm"  # protocol §9.3: <image store>\systemvm\systemvm*.iso
_ISO_PREFIX, _ISO_SUFFIX = "systemvm", ".iso"
#: Where a generation 1 VM takes the system VM ISO, in order of preference.

# --- the handler --------------------------------------------------------------------------


class StartHandler:
    """StartCommand, sharing the per-VM lock table ``locks`` with ``VmHandlers``."""

    def __init__(self, hv: HyperV, paths: DataPaths, locks: VmLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
                 journal: BuildJournal | None = None,
                 file_locks: FileLocks | None = None,
                 processor_compatibility: bool = False) -> None:
        self.hv = hv
        self.paths = paths
        self.files: HostFiles = paths.files
        self.locks = locks
        # the volumes' files (and, shared, its DVD images') are held while the VM is built,
        # so a DeleteCommand (or another writer) of one waits, and then finds the VM
        # running (``FileHandlers``)
        self.file_locks = file_locks if file_locks is not None else FileLocks()
        self.job_wait = job_wait
        self.journal = journal  # the VMs being built; None: not recorded
        # a VM without a guest.cpu.mode detail gets processor compatibility when this is set
        self.processor_compatibility = processor_compatibility

    async def remove_half_built(self) -> list[str]:
        """Remove every VM the journal says a StartCommand was building when its process
        ended, if it is off (a half-built VM never ran); its disks are kept. The names
        removed. Run it before serving; a VM that cannot be removed stays in the journal
        (its next StartCommand rebuilds it).

        The VM removed is the definition the journal recorded, by GUID: Hyper-V keeps no
        name unique, and a copy of the name beside it (one whose state Hyper-V cannot
        tell, which ``find_vm`` ranks first) must neither be taken for it nor keep it.
        Only a name recorded without its GUID (its process ended before it was known, or
        an earlier version wrote it) is looked up by name, the VM ``find_vm`` takes."""
        removed: list[str] = []
        for name in self.journal.pending() if self.journal else ():
            guid = self.journal.guid(name) if self.journal else None
            try:
                if guid is not None:
                    gone = await vms.remove_if_off(self.hv, guid, policy=self.job_wait)
                else:
                    vm = await vms.find_vm(self.hv, name)
                    gone = vm is not None and vm.power is vms.PowerState.STOPPED \
                        and await vms.remove_vm(self.hv, vm.guid, policy=self.job_wait)
                if gone:
                    log.warning("removed VM %s, left half-built by an interrupted start "
                                "(disks kept)", name)
                    removed.append(name)
            except AgentError as error:
                log.warning("VM %s, left half-built by an interrupted start, could not be "
                            "removed: %s", name, error)
                continue
            self._built(name)
        return removed

    def _building(self, name: str) -> None:
        if self.journal is not None:
            self.journal.begin(name)

    def _defined(self, name: str, guid: str) -> None:
        if self.journal is not None:
            self.journal.defined(name, guid)

    def _built(self, name: str) -> None:
        if self.journal is not None:
            self.journal.end(name)

    def table(self) -> Routes:
        """The handler of this module by command FQCN (for ``Dispatch``)."""
        return {names.START_COMMAND: Route(StartCommand, self.start)}

    async def start(self, command: StartCommand) -> Result:
        """Create the VM ``vm`` describes and start it (protocol §9.1).

        A running VM of that name: success, nothing changed (a repeat is safe). One that
        exists but is not running is removed (its disks kept) and built anew, one whose
        state Hyper-V cannot tell (which may run) included: refused, the MS would clean up
        with a StopCommand without checkBeforeCleanup, which removes it all the same, and
        then start the VM on another host, on the disks the copy here may still use
        (``VirtualMachineManagerImpl.orchestrateStart``, ``cleanup``). One Hyper-V
        is starting or stopping is waited for first, and then taken as it is. That wait,
        and every Hyper-V job of the build, ends within the command's bound
        (``jobs.command_bound``: half the command's ``wait``); a VM still changing then
        fails the command, and so does a job still running, the half-built VM removed. Invalid
        input (CPUs, memory, speeds, a disk path outside its pool or missing, an unknown
        switch, a bad VLAN, boot arguments that no KVP items can carry, secure boot on a
        host without the guest OS's template): a failed answer, nothing created or
        removed. A system VM gets the image store's ``systemvm*.iso`` when there is
        exactly one (else it starts without; the details say why). A failure once the
        VM is defined removes it again, so nothing half-built remains; the answer names
        the step. Disk files are never deleted. Afterwards (on success) the VM runs with
        the disks and NICs asked for, spare router NICs disconnected, and its guest reads
        ``vm.uuid`` as its SMBIOS system UUID (``start_plan.bios_guid``); it boots from its
        root disk, or from the ISO when it has no root volume (generation 1 through
        ``BootOrder`` at definition, generation 2 through ``BootSourceOrder`` once its
        devices are added). A ``vm.name`` that can name no VM (blank, or holding a
        character XML cannot carry): a failed answer saying so, before any query
        (``named_vm``).
        """
        vm = command.vm
        async with self.locks.hold(named_vm(vm.name, "vm.name")):
            notes = await self._start(command)
        return StartAnswer(result=True, vm=vm,
                           details=logs.redact("; ".join(notes)) if notes else None)

    async def _start(self, command: StartCommand) -> tuple[str, ...]:
        vm = command.vm
        existing = await vms.find_vm(self.hv, vm.name)
        if existing is not None and existing.changing is not None:
            # Hyper-V is starting or stopping it: neither running nor off yet
            existing = await _named(f"waiting for the existing VM to finish "
                                    f"{existing.changing}",
                                    power.settle(self.hv, existing, self.job_wait))
        if existing is not None and existing.power is vms.PowerState.RUNNING:
            log.info("StartCommand for VM %s, which already runs", vm.name)
            return ()
        plan = await self._plan(command)
        volumes = [disk.path for disk in plan.disks if disk.path and not disk.dvd]
        # An ISO is held shared: many VMs mount one (a template's ISO, the system VM ISO)
        # and their starts need not queue; a writer of it (a config drive's write or
        # delete, a copy, a delete) holds it alone, so it ends before the VM takes it or
        # comes after, and then finds the VM running with it.
        media = tuple(disk.path for disk in plan.disks if disk.path and disk.dvd)
        async with self.file_locks.hold_all(*volumes, shared=media):
            if existing is not None:
                log.info("VM %s exists (%s); re-creating it", vm.name, existing.power.value)
                plan = await self._keeping_identity(plan, existing)
                await _named("removing the existing VM", vms.remove_vm(
                    self.hv, existing.guid, policy=self.job_wait))
            self._building(vm.name)
            ref = await _named("creating the VM", build.define_vm(
                self.hv, plan.spec, defined=lambda guid: self._defined(vm.name, guid)))
            try:
                await self._fill_and_start(ref, plan)
            except AgentError as error:
                raise HyperVError(f"{error}{await self._removed(ref)}") from error
            self._built(vm.name)
        return plan.notes

    async def _keeping_identity(self, plan: start_plan.Plan,
                                existing: vms.VmRef) -> start_plan.Plan:
        """``plan`` with the BIOSGUID of the definition it replaces when it sets none
        (``start_plan.bios_guid``: the command's ``vm.uuid`` is missing or no GUID), so
        the guest's SMBIOS system UUID stays what it was (1 query); else unchanged, with
        no round trip."""
        if plan.spec.bios_guid is not None:
            return plan
        kept = await _named("reading the existing VM's BIOS GUID",
                            build.bios_guid(self.hv, existing.guid))
        if kept is None:
            return plan
        return dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, bios_guid=kept))

    async def _removed(self, ref: vms.VmRef) -> str:
        """Remove the half-built VM, within what is left of all of the command's ``wait``
        (``jobs.whole_wait``: the build may have used up its half); a note for the error
        message when that fails too."""
        try:
            with jobs.whole_wait():
                await vms.remove_vm(self.hv, ref.guid, policy=self.job_wait)
        except AgentError as error:
            log.error("VM %s (%s) could not be removed after a failed start: %s",
                      ref.name, ref.guid, error)
            return f" (removing the half-built VM {ref.guid} failed too: {error})"
        self._built(ref.name)
        return ""

    # --- validation ---------------------------------------------------------------------

    async def _plan(self, command: StartCommand) -> start_plan.Plan:
        vm = command.vm
        most = await hyperv_host.vm_maximums(self.hv, start_plan.generation_of(vm))
        spec = await self._with_processor_shares(
            start_plan.vm_spec(vm, most, self.processor_compatibility), vm)
        build.validate(spec)
        spec = await self._with_boot_template(spec, vm.os)
        controllers = start_plan.disk_controllers(vm.details, spec.generation)
        planned = await self._disks(vm.disks, spec.generation, controllers.data_ide,
                                    config_drive_on_host(vm.config_drive_location))
        nics = await self._nics(vm.nics, user_vm=not start_plan.is_system_vm(vm))
        kvp = start_plan.boot_args(vm)
        split = (f"the boot arguments went as {len(kvp)} KVP items",) if len(kvp) > 1 else ()
        notes = (*controllers.notes, *split, *start_plan.memory_note(vm, spec),
                 *start_plan.identity_note(vm), *start_plan.cpu_model_note(vm))
        if not start_plan.is_system_vm(vm):
            return start_plan.Plan(spec, planned, nics, kvp, notes)
        planned, note = await self._system_iso(command.secondary_storage, planned,
                                                spec.generation)
        return start_plan.Plan(spec, planned, nics, kvp, (note, *notes))

    async def _with_processor_shares(self, spec: build.VmSpec,
                                     vm: VirtualMachineTO) -> build.VmSpec:
        """Limit, reservation and weight from the per-vCPU speeds (MHz) of ``vm``.

        The weight follows ``speed`` (a whole host core weighs Hyper-V's default 100).
        With ``limitCpuUse`` the limit is ``maxSpeed`` (or ``speed``) and the reservation
        ``minSpeed`` as shares of a host core; without, every vCPU may use a whole core
        and nothing is reserved (reservations would stop over-committed hosts starting
        VMs). No speed: the defaults, and no round trip. A speed out of bounds
        (``start_plan.check_speeds``): InvalidRequest.
        """
        if not any((vm.speed_mhz, vm.min_speed_mhz, vm.max_speed_mhz)):
            return spec
        host_mhz = await build.host_cpu_mhz(self.hv)
        start_plan.check_speeds(vm, host_mhz)
        limit_mhz = vm.max_speed_mhz or vm.speed_mhz
        limit = build.core_share(limit_mhz, host_mhz) \
            if vm.limit_cpu_use and limit_mhz else PROCESSOR_LIMIT_FULL
        reserve = min(limit, build.core_share(vm.min_speed_mhz, host_mhz)) \
            if vm.limit_cpu_use and vm.min_speed_mhz else 0
        return dataclasses.replace(
            spec, cpu_limit_millipercent=limit, cpu_reservation_millipercent=reserve,
            cpu_weight=build.speed_weight(vm.speed_mhz or limit_mhz, host_mhz))

    async def _with_boot_template(self, spec: build.VmSpec,
                                  guest_os: str | None) -> build.VmSpec:
        """``spec`` with the secure boot template its guest OS needs (1 query the first
        time for the backend): MicrosoftWindows for a Windows guest (by OS name), else the
        Microsoft UEFI CA, which Linux boot loaders (shim) are signed with. Without
        secure boot: unchanged, with no round trip."""
        if not spec.secure_boot:
            return spec
        windows = "windows" in (guest_os or "").lower()
        name = firmware.WINDOWS_TEMPLATE if windows else firmware.UEFI_CA_TEMPLATE
        try:
            template_id = await firmware.secure_boot_template_id(self.hv, name)
        except InvalidRequest as error:
            raise InvalidRequest(f"secure boot for guest OS {guest_os!r}: {error}") from None
        return dataclasses.replace(spec, secure_boot_template_id=template_id)

    async def _system_iso(self, url: str | None, planned: tuple[start_plan.PlannedDisk, ...],
                          generation: int) -> tuple[tuple[start_plan.PlannedDisk, ...], str]:
        """``planned`` with the system VM ISO (protocol §9.3) added, and a note on what was done."""
        if not url or url.partition("://")[0].lower() not in ("cifs", "smb"):
            return planned, "no cifs:// secondaryStorage; the system VM ISO was not looked for"
        share = self.paths.image_store(url, "secondaryStorage")
        folder = await self.paths.folder_in(share.root, _ISO_FOLDER, "secondaryStorage")
        try:
            found = [name for name in await self.files.list_dir(folder)
                     if name.lower().startswith(_ISO_PREFIX) and name.lower().endswith(
                         _ISO_SUFFIX)]
        except HostFileError as error:
            log.warning("no system VM ISO: %s cannot be listed: %s", folder, error)
            return planned, f"{folder} cannot be listed; started without the system VM ISO"
        if len(found) != 1:
            log.warning("%d files %s\\%s*%s; starting without the system VM ISO",
                        len(found), folder, _ISO_PREFIX, _ISO_SUFFIX)
            return planned, (f"{len(found)} {_ISO_PREFIX}*{_ISO_SUFFIX} files in {folder} "
                             "(one is needed); started without the system VM ISO")
        iso = await self.paths.file_in(folder, found[0], "secondaryStorage",
                                       images.ISO_SUFFIXES)
        return start_plan.with_iso(planned, generation, iso)

    async def _disks(self, wanted: Sequence[DiskTO], generation: int, data_ide: bool,
                     host_cache: bool) -> tuple[start_plan.PlannedDisk, ...]:
        placed = start_plan.place_all([(disk, await self._medium(disk, host_cache))
                                       for disk in wanted], generation, data_ide)
        seen: set[tuple[str, int, int]] = set()
        for disk in placed:
            if disk.place in seen:
                raise InvalidRequest(f"two disks want {disk.where}")
            seen.add(disk.place)
        return placed

    async def _medium(self, disk: DiskTO, host_cache: bool) -> str | None:
        """The host path of the disk's image (checked to exist); None for an empty DVD.
        ``host_cache``: the VM's config drive is in the host's config drive cache."""
        kind = start_plan.disk_kind(disk)
        if start_plan.is_empty_dvd(disk):
            return None
        return await self.paths.disk_image(disk, kind, host_cache=host_cache, existing=True)

    async def _nics(self, nics: Sequence[NicTO], user_vm: bool
                    ) -> tuple[start_plan.PlannedNic, ...]:
        if not nics:
            return ()
        switches, unlabelled = await hyperv_host.nic_switches(
            self.hv, unlabelled=any(not nic.name for nic in nics))
        ordered = sorted(nics, key=lambda n: n.device_id)
        return tuple(start_plan.planned_nic(nic, switches, user_vm, unlabelled=unlabelled)
                     for nic in ordered)

    # --- building -----------------------------------------------------------------------

    async def _fill_and_start(self, ref: vms.VmRef, plan: start_plan.Plan) -> None:
        drives = await self._attach_disks(ref, plan.disks)
        for nic in plan.nics:
            where = f"adding {'spare ' if nic.spare else ''}NIC {nic.device_id} ({nic.mac})"
            await _named(f"{where} on {nic.switch!r}", nics.add_nic(
                self.hv, ref, mac=nic.mac, switch_name=nic.switch, vlan=nic.vlan,
                rate_mbps=nic.rate_mbps, name=nic.name, connected=not nic.spare,
                guard=nic.guard))
        boot = _boot_drive(drives) if plan.spec.generation == 2 else None
        if boot is not None:
            await _named("setting the boot order",
                             firmware.set_boot_order_gen2(self.hv, ref, [boot.drive]))
        if plan.kvp:
            await _named("pushing the boot arguments",
                             kvp.push_kvp_items(self.hv, ref, plan.kvp))
        try:
            await power.start(self.hv, ref.guid, policy=self.job_wait)
        except AgentError as error:
            broken = await disks.broken_parent(
                self.hv, str(error), _disk_paths(plan.disks), policy=self.job_wait)
            raise HyperVError(f"starting the VM: {error}"
                              + (f"; {broken}" if broken else "")) from error

    async def _attach_disks(
        self, ref: vms.VmRef, disks: Sequence[start_plan.PlannedDisk],
    ) -> list[tuple[start_plan.PlannedDisk, devices.DiskRef | None]]:
        """Add the controllers and ``disks``; each disk with its drive and medium (None for
        an empty DVD drive)."""
        # Every VM gets its SCSI controller now, even without a SCSI disk: Hyper-V adds
        # controllers only to stopped VMs, and data volumes are hot-added on SCSI later.
        # A second one comes only with a disk on it (diskSeq 64 or 65): a running VM
        # without it takes no volume there (AttachCommand says so), but the 64 slots of the
        # first are what every VM but one with 62 data volumes needs, and the guest of
        # every other VM is not given an empty controller.
        count = 1 + max((disk.controller for disk in disks if disk.bus == "scsi"), default=0)
        scsi = tuple([await _named("adding the SCSI controller" if index == 0 else
                                   f"adding SCSI controller {index}",
                                   devices.add_scsi_controller(self.hv, ref))
                      for index in range(count)])
        found = devices.Controllers((), scsi)
        if any(disk.bus != "scsi" for disk in disks):
            ide = (await _named("reading the IDE controllers",
                                    devices.controllers(self.hv, ref))).ide
            found = devices.Controllers(ide, found.scsi)
        return [(disk, await _named(f"attaching disk {disk.describe()}",
                                        self._attach(ref, found, disk))) for disk in disks]

    async def _attach(self, ref: vms.VmRef, found: devices.Controllers,
                      disk: start_plan.PlannedDisk) -> devices.DiskRef | None:
        if disk.bus == "scsi":
            controller = found.scsi[disk.controller]
        else:
            index = int(disk.bus.removeprefix("ide"))
            if index >= len(found.ide):
                raise HyperVError(f"the VM has no IDE controller {index}")
            controller = found.ide[index]
        if disk.path is None:
            await devices.attach_empty_dvd(self.hv, ref, controller, disk.slot)
            return None
        return await devices.attach_disk(self.hv, ref, controller, disk.slot, disk.path,
                                       dvd=disk.dvd)


# --- helpers ------------------------------------------------------------------------------


def _disk_paths(planned: Sequence[start_plan.PlannedDisk]) -> list[str]:
    """The virtual hard disks of a VM (no DVD media), its root disk first."""
    hard = [disk for disk in planned if disk.path is not None and not disk.dvd]
    return [disk.path for disk in sorted(hard, key=lambda d: d.kind != "ROOT")
            if disk.path is not None]


def _boot_drive(
    drives: Sequence[tuple[start_plan.PlannedDisk, devices.DiskRef | None]],
) -> devices.DiskRef | None:
    """What a generation 2 VM boots from: the ROOT disk, else the CD holding an ISO, else
    the first other DVD drive holding one; None when there is none of these (Hyper-V's
    order, the order the devices were added, is kept). A config drive is never chosen
    over the CD."""
    attached = [(disk, ref) for disk, ref in drives if ref is not None]
    root = next((ref for disk, ref in attached if disk.kind == "ROOT"), None)
    dvds = sorted((not disk.cd, index) for index, (disk, _) in enumerate(attached) if disk.dvd)
    return root or (attached[dvds[0][1]][1] if dvds else None)


async def _named(step: str, action: Awaitable[_T]) -> _T:
    """Await ``action``; an AgentError is re-raised with ``step`` in front of its message."""
    try:
        return await action
    except AgentError as error:
        raise HyperVError(f"{step}: {error}") from error
