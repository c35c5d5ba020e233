"""StartCommand: create (or re-create) a VM from its VirtualMachineTO and start it
(protocol §5.1 row 22, §9, §11).

The command is turned into a ``_Plan`` first: every disk path resolved and confined to
its pool and checked to exist, every NIC's switch, VLAN and MAC checked, the boot
arguments measured. Nothing is created until the whole plan is valid. Then the VM is
built from ``hyperv.build`` pieces and started; a failure after the VM was defined
removes it again (its disk files are never touched) and the answer names the step.

The handler holds the VM's lock (shared with ``VmHandlers``) for its whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hyperv_agent import logs
from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import StartAnswer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.cloudstack.commands_vm import StartCommand
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    NicTO,
    TemplateObjectTO,
    VirtualMachineTO,
    VolumeObjectTO,
)
from hyperv_agent.errors import AgentError, HyperVError, InvalidRequest
from hyperv_agent.handlers import datapaths
from hyperv_agent.handlers.dispatch import Handler, Result
from hyperv_agent.handlers.vm import VmLocks
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hyperv import build, jobs, vms
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.hyperv.backend import Backend
from hyperv_agent.hyperv.schema import (
    KVP_VALUE_MAX_CHARS,
    SCSI_SLOTS,
    VLAN_ID_MAX,
    VLAN_ID_MIN,
    RequestedState,
    ReturnCode,
)

log = logging.getLogger("hyperv_agent.handlers.start")

_T = TypeVar("_T")

BOOT_ARGS_KEY = "cloudstack-vm-userdata"  # §9.2
NOTES_HEADER = "Created by CloudStack, do not edit."
_BYTES_PER_MB = 1024 * 1024
_IDE_SLOTS = 2
_USER_VM = "user"
_UNTAGGED = "untagged"


# --- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Disk:
    """One drive to add: where (IDE controller index or SCSI), which slot, what medium."""

    kind: str  # ROOT, DATADISK, ISO
    bus: str  # "ide0", "ide1" or "scsi"
    slot: int
    path: str | None  # a host path; None for an empty DVD drive

    @property
    def dvd(self) -> bool:
        return self.kind == "ISO"

    def describe(self) -> str:
        where = f"{self.bus.upper()} slot {self.slot}"
        return f"{self.kind} {self.path or '(empty)'} at {where}"


@dataclass(frozen=True)
class _Nic:
    device_id: int
    mac: str
    switch: str
    vlan: int | None
    rate_mbps: int | None
    name: str


@dataclass(frozen=True)
class _Plan:
    spec: build.VmSpec
    disks: tuple[_Disk, ...]
    nics: tuple[_Nic, ...]
    boot_args: str | None


# --- the handler --------------------------------------------------------------------------


class StartHandler:
    """StartCommand, sharing the per-VM lock table ``locks`` with ``VmHandlers``."""

    def __init__(self, cim: Backend, files: HostFiles, locks: VmLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> None:
        self.cim = cim
        self.files = files
        self.locks = locks
        self.job_wait = job_wait

    def table(self) -> dict[str, Handler]:
        """The handler of this module by command FQCN (for ``Dispatch``)."""
        return {names.START_COMMAND: self.start}

    async def start(self, command: Command) -> Result:
        """Create the VM ``vm`` describes and start it (§9.1).

        A running VM of that name: success, nothing changed (a repeat is safe). One that
        exists but is not running is removed (its disks kept) and built anew. Invalid
        input (CPUs, memory, a disk path outside its pool or missing, an unknown switch,
        a bad VLAN, over-long boot arguments): a failed answer, nothing created or
        removed. A failure once the VM is defined removes it again, so nothing
        half-built remains; the answer names the step. Disk files are never deleted.
        Afterwards (on success) the VM runs with the disks and NICs asked for.
        """
        if not isinstance(command, StartCommand):
            raise AgentError(f"expected a {StartCommand.FQCN}, got a {type(command).FQCN}")
        vm = command.vm
        async with self.locks.hold(vm.name):
            try:
                await self._start(vm)
            except AgentError as error:
                details = logs.redact(f"StartCommand failed: {error}")
                return StartAnswer(result=False, vm=vm, details=details)
        return StartAnswer(result=True, vm=vm)

    async def _start(self, vm: VirtualMachineTO) -> None:
        existing = await vms.find_vm(self.cim, vm.name)
        if existing is not None and existing.power is vms.PowerState.RUNNING:
            log.info("StartCommand for VM %s, which already runs", vm.name)
            return
        plan = await self._plan(vm)
        if existing is not None:
            log.info("VM %s exists (%s); re-creating it", vm.name, existing.power.value)
            await _named("removing the existing VM", vms.remove_vm(
                self.cim, existing.guid, policy=self.job_wait))
        ref = await build.define_vm(self.cim, plan.spec)
        try:
            await self._fill_and_start(ref, plan)
        except AgentError as error:
            raise HyperVError(f"{error}{await self._removed(ref)}") from error

    async def _removed(self, ref: vms.VmRef) -> str:
        """Remove the half-built VM; a note for the error message when that fails too."""
        try:
            await vms.remove_vm(self.cim, ref.guid, policy=self.job_wait)
        except AgentError as error:
            log.error("VM %s (%s) could not be removed after a failed start: %s",
                      ref.name, ref.guid, error)
            return f" (removing the half-built VM {ref.guid} failed too: {error})"
        return ""

    # --- validation ---------------------------------------------------------------------

    async def _plan(self, vm: VirtualMachineTO) -> _Plan:
        spec = _spec(vm)
        build.validate(spec)
        disks = await self._disks(vm.disks, spec.generation)
        nics = await self._nics(vm.nics)
        return _Plan(spec, disks, nics, _boot_args(vm))

    async def _disks(self, disks: Sequence[DiskTO], generation: int) -> tuple[_Disk, ...]:
        placed = tuple([_place(disk, index, generation, await self._medium(disk))
                        for index, disk in enumerate(disks)])
        seen: set[tuple[str, int]] = set()
        for disk in placed:
            if (disk.bus, disk.slot) in seen:
                raise InvalidRequest(f"two disks want {disk.bus.upper()} slot {disk.slot}")
            seen.add((disk.bus, disk.slot))
        return placed

    async def _medium(self, disk: DiskTO) -> str | None:
        """The host path of the disk's image (checked to exist); None for an empty DVD."""
        kind = _kind(disk)
        if kind == "ISO" and disk.data is None:
            return None
        path = _image_path(disk, kind)
        if not await self.files.exists(path):
            raise InvalidRequest(f"disk {kind}: the file {path} does not exist")
        return path

    async def _nics(self, nics: Sequence[NicTO]) -> tuple[_Nic, ...]:
        if not nics:
            return ()
        switches = await hyperv_host.switch_names(self.cim)
        return tuple(_nic(nic, switches) for nic in sorted(nics, key=lambda n: n.device_id))

    # --- building -----------------------------------------------------------------------

    async def _fill_and_start(self, ref: vms.VmRef, plan: _Plan) -> None:
        await self._attach_disks(ref, plan.disks)
        for nic in plan.nics:
            await _named(f"adding NIC {nic.device_id} ({nic.mac}) on {nic.switch!r}",
                         build.add_nic(self.cim, ref, mac=nic.mac, switch_name=nic.switch,
                                       vlan=nic.vlan, rate_mbps=nic.rate_mbps, name=nic.name))
        if plan.boot_args:
            await _named("pushing the boot arguments", build.push_kvp(
                self.cim, ref, BOOT_ARGS_KEY, plan.boot_args))
        await _named("starting the VM", jobs.call(
            self.cim, ref.path, "RequestStateChange",
            {"RequestedState": int(RequestedState.ENABLED)},
            accept=(ReturnCode.INVALID_STATE,), policy=self.job_wait))

    async def _attach_disks(self, ref: vms.VmRef, disks: Sequence[_Disk]) -> None:
        found = build.Controllers((), ())
        if any(disk.bus == "scsi" for disk in disks):
            scsi = await _named("adding the SCSI controller",
                                build.add_scsi_controller(self.cim, ref))
            found = build.Controllers((), (scsi,))
        if any(disk.bus != "scsi" for disk in disks):
            ide = (await _named("reading the IDE controllers",
                                build.controllers(self.cim, ref))).ide
            found = build.Controllers(ide, found.scsi)
        for disk in disks:
            await _named(f"attaching disk {disk.describe()}", self._attach(ref, found, disk))

    async def _attach(self, ref: vms.VmRef, found: build.Controllers, disk: _Disk) -> None:
        if disk.bus == "scsi":
            controller = found.scsi[0]
        else:
            index = int(disk.bus.removeprefix("ide"))
            if index >= len(found.ide):
                raise HyperVError(f"the VM has no IDE controller {index}")
            controller = found.ide[index]
        if disk.path is None:
            await build.attach_empty_dvd(self.cim, ref, controller, disk.slot)
        else:
            await build.attach_disk(self.cim, ref, controller, disk.slot, disk.path,
                                    dvd=disk.dvd)


# --- pure helpers -------------------------------------------------------------------------


async def _named(step: str, action: Awaitable[_T]) -> _T:
    """Await ``action``; an AgentError is re-raised with ``step`` in front of its message."""
    try:
        return await action
    except AgentError as error:
        raise HyperVError(f"{step}: {error}") from error


def _spec(vm: VirtualMachineTO) -> build.VmSpec:
    uefi = (vm.boot_type or "").strip().upper() == "UEFI"
    secure = uefi and (vm.boot_mode or "").strip().upper() == "SECURE"
    if vm.cpus < 1:
        raise InvalidRequest(f"vm.cpus must be at least 1, not {vm.cpus}")
    memory_mb = vm.max_ram_bytes // _BYTES_PER_MB
    if memory_mb <= 0:
        raise InvalidRequest(f"vm.maxRam {vm.max_ram_bytes} bytes is less than 1 MB")
    notes = (NOTES_HEADER, vm.uuid) if vm.uuid else (NOTES_HEADER,)
    return build.VmSpec(name=vm.name, notes=notes, generation=2 if uefi else 1,
                        cpus=vm.cpus, memory_mb=memory_mb, secure_boot=secure)


def _boot_args(vm: VirtualMachineTO) -> str | None:
    """The boot arguments to push (system VMs only); InvalidRequest when too long."""
    args = vm.boot_args or ""
    if not args.strip() or str(vm.type or _USER_VM).lower() == _USER_VM:
        return None
    if len(args) > KVP_VALUE_MAX_CHARS:
        raise InvalidRequest(f"vm.bootArgs has {len(args)} characters; at most "
                             f"{KVP_VALUE_MAX_CHARS} fit in one KVP item")
    return args


def _kind(disk: DiskTO) -> str:
    kind = str(disk.type).upper()
    if kind not in ("ROOT", "DATADISK", "ISO"):
        raise InvalidRequest(f"unknown disk type {str(disk.type)[:40]!r}")
    return kind


def _place(disk: DiskTO, index: int, generation: int, path: str | None) -> _Disk:
    """Where the disk goes: gen 1 ROOT on IDE 0 slot 0, ISO on IDE 1, DATADISK on SCSI at
    ``diskSeq``; gen 2 everything on SCSI at ``diskSeq`` (ROOT defaults to 0)."""
    kind = _kind(disk)
    seq = disk.disk_seq if disk.disk_seq is not None else index
    if generation == 1 and kind == "ROOT":
        return _Disk(kind, "ide0", 0, path)
    if generation == 1 and kind == "ISO":
        return _Disk(kind, "ide1", 0, path)
    slot = 0 if kind == "ROOT" and disk.disk_seq is None else seq
    if not 0 <= slot < SCSI_SLOTS:
        raise InvalidRequest(f"disk {kind}: diskSeq {slot} is outside 0..{SCSI_SLOTS - 1}")
    return _Disk(kind, "scsi", slot, path)


def _image_path(disk: DiskTO, kind: str) -> str:
    """The host path of a volume (§11 FullFileName) or an ISO, confined to its store."""
    data = disk.data
    if kind == "ISO":
        if not isinstance(data, TemplateObjectTO):
            raise InvalidRequest("disk ISO: data is not a TemplateObjectTO")
        return datapaths.template_file(data, "disk ISO")
    if not isinstance(data, VolumeObjectTO):
        raise InvalidRequest(f"disk {kind}: data is not a VolumeObjectTO")
    return datapaths.volume_file(data, f"disk {kind}")


def _nic(nic: NicTO, switches: Sequence[str]) -> _Nic:
    where = f"NIC {nic.device_id}"
    try:
        digits = build.normalize_mac(nic.mac or "")
    except InvalidRequest as error:
        raise InvalidRequest(f"{where}: {error}") from None
    switch = nic.name or (switches[0] if switches else "")
    if switch not in switches:
        raise InvalidRequest(f"{where}: the host has no virtual switch named {switch!r}"
                             if switch else f"{where}: the host has no virtual switch")
    rate = nic.network_rate_mbps if (nic.network_rate_mbps or 0) > 0 else None
    return _Nic(nic.device_id, nic.mac or digits, switch, _vlan(nic.broadcast_uri, where), rate,
                nic.uuid or f"Network Adapter {nic.device_id}")


def _vlan(uri: str | None, where: str) -> int | None:
    """The VLAN of ``vlan://N``; None for no URI or ``vlan://untagged``; else refused."""
    if not uri:
        return None
    scheme, separator, value = uri.strip().partition("://")
    if separator and scheme.lower() == "vlan" and value.lower() == _UNTAGGED:
        return None
    if not separator or scheme.lower() != "vlan" or not value.isdigit():
        raise InvalidRequest(f"{where}: broadcastUri {uri[:60]!r} is not vlan://<id> "
                             "or vlan://untagged")
    if not VLAN_ID_MIN <= int(value) <= VLAN_ID_MAX:
        raise InvalidRequest(f"{where}: VLAN {value} is outside {VLAN_ID_MIN}..{VLAN_ID_MAX}")
    return int(value)
