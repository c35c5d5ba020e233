"""Msvm_VirtualSystemMigrationService.MigrateVirtualSystemToHost between emulated hosts.

Hosts find each other through ``EmulatedHost.registry``. The source's changes are staged in
the call's transaction, the destination's in a transaction on the destination's store, and
the files to copy or remove are listed; nothing happens until the backend commits the call.
A refusal or a failed job therefore leaves both hosts, and their files, as they were. On
commit: files are copied, the destination commits, the source commits, and the source
files of a storage move are removed.

Decisions where Hyper-V's documentation is silent:

* A VM moves when running, paused, saved or off (Hyper-V 2012 R2 and later move stopped
  VMs too); only a VM in a transition (starting, shutting down) is refused.
* A null MigrationSettingData means a live move (32768) with default settings.
* DestinationHost matches a host name, ignoring case (also by its first DNS label).
* A non-empty DestinationIPAddressList must hold one of the destination's listener addresses.
* NewResourceSettingData is used by 32769 and 32771 only. Disks it does not name stay where
  they are; for a move to another host they must then be on shared storage.
* NewSystemSettingData contributes its data roots (ConfigurationDataRoot, …) only.
* A live move takes over the destination's planned VM of the same GUID when
  DestinationPlannedVirtualSystemId names it; any other VM with the GUID blocks the move.
* Only the named file of a disk moves, not the parents of a differencing disk.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hyperv_agent.cim.api import ObjectPath, OutValue
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.store import Record, Store, Transaction
from hyperv_agent.errors import CimInvalidParameter

SERVICE = "Msvm_VirtualSystemMigrationService"
LIVE, STORAGE, STAGED, LIVE_AND_STORAGE = 32768, 32769, 32770, 32771
MOVABLE_STATES = (EnabledState.ENABLED, EnabledState.DISABLED, EnabledState.OFFLINE,
                  EnabledState.QUIESCE)
DATA_ROOTS = ("ConfigurationDataRoot", "SnapshotDataRoot", "SwapFileDataRoot",
              "SuspendDataRoot", "LogDataRoot")
SASD = "Msvm_StorageAllocationSettingData"
PORT = "Msvm_EthernetPortAllocationSettingData"
PLANNED_SYSTEM = "Msvm_PlannedComputerSystem"

# Refusals without a documented code: the emulator's choices.
DESTINATION_UNREACHABLE = ReturnCode.SYSTEM_NOT_AVAILABLE
MIGRATION_DISABLED = ReturnCode.NOT_SUPPORTED
SAME_HOST = ReturnCode.INVALID_PARAMETER
STATE_IN_TRANSITION = ReturnCode.INVALID_STATE
GUID_ON_DESTINATION = ReturnCode.INVALID_PARAMETER
SWITCH_MISSING = ReturnCode.INVALID_PARAMETER
TARGET_FILE_EXISTS = ReturnCode.INVALID_PARAMETER


class _Linked(Transaction):
    """The call's transaction on the source, carrying what the move does elsewhere.

    The backend commits ``call.txn`` only when the method succeeded and no job fault was
    injected, so the destination's records and the file copies wait for that commit.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.destination: Transaction | None = None
        self.copies: list[tuple[Path, Path]] = []
        self.removals: list[Path] = []

    def commit(self) -> None:
        copied: list[Path] = []
        try:
            _copy_files(self.copies, copied)
            if self.destination is not None:
                self.destination.commit()
        except BaseException:
            for target in copied:
                target.unlink(missing_ok=True)
            raise
        super().commit()  # failing here leaves the VM on both hosts, never on neither
        for path in self.removals:
            path.unlink(missing_ok=True)


def _copy_files(copies: list[tuple[Path, Path]], copied: list[Path]) -> None:
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(target)


@dataclass
class _Move:
    call: Call
    txn: _Linked  # the source's changes
    vm: Record
    settings: Embedded
    destination: EmulatedHost
    target: Transaction  # where the moved records go: the destination's, or txn
    system: Embedded | None = None
    new_paths: dict[str, str] = field(default_factory=dict)  # SASD InstanceID (lower) -> path

    @property
    def guid(self) -> str:
        return str(self.vm["Name"])

    @property
    def kind(self) -> int:
        return self.settings.integer("MigrationType") or LIVE


@handles(SERVICE, "MigrateVirtualSystemToHost")
def migrate_virtual_system_to_host(call: Call) -> Mapping[str, OutValue]:
    txn = _Linked(call.host.store)
    call.txn = txn  # read by the backend after this returns: its commit runs the move
    move = _plan(call, txn)
    _check(move)
    _STEPS[move.kind](move)
    return {}


# --- parameters ---------------------------------------------------------------------------


def _plan(call: Call, txn: _Linked) -> _Move:
    vm = _source_vm(call)
    settings = _migration_settings(call)
    destination = _destination(call, settings.integer("MigrationType") or LIVE)
    if destination is not call.host:
        txn.destination = destination.store.transaction()
    target = txn.destination or txn
    move = _Move(call, txn, vm, settings, destination, target, _system_settings(call))
    move.new_paths = _new_paths(move)
    return move


def _invalid(description: str) -> MethodError:
    return MethodError(ReturnCode.INVALID_PARAMETER, description, immediate=True)


def _source_vm(call: Call) -> Record:
    vm = call.require(call.path("ComputerSystem"), "virtual machine")
    if not model.is_vm(vm):
        raise _invalid(f"{vm.path} is not a virtual machine")
    return vm


def _migration_settings(call: Call) -> Embedded:
    if call.text("MigrationSettingData") is None:
        return Embedded(CLASSES["Msvm_VirtualSystemMigrationSettingData"], {"MigrationType": LIVE})
    settings = call.embedded("MigrationSettingData")
    if not settings.is_a("CIM_VirtualSystemMigrationSettingData"):
        raise _invalid(f"MigrationSettingData is a {settings.class_def.name}")
    kind = settings.integer("MigrationType")
    if kind not in (LIVE, STORAGE, STAGED, LIVE_AND_STORAGE):
        raise _invalid(f"MigrationType {kind} is not one of 32768, 32769, 32770, 32771")
    return settings


def _system_settings(call: Call) -> Embedded | None:
    if call.text("NewSystemSettingData") is None:
        return None
    given = call.embedded("NewSystemSettingData")
    if not given.is_a("Msvm_VirtualSystemSettingData"):
        raise _invalid(f"NewSystemSettingData is a {given.class_def.name}")
    return given


def _destination(call: Call, kind: int) -> EmulatedHost:
    name = call.text("DestinationHost")
    if not name:
        if kind == STORAGE:
            return call.host
        raise _invalid("DestinationHost is required unless MigrationType is 32769 (storage)")
    registry = EmulatedHost.registry
    host = registry.get(name.lower()) or registry.get(name.split(".", 1)[0].lower())
    if host is None:
        raise MethodError(DESTINATION_UNREACHABLE, f"the destination host {name} cannot be reached")
    if kind == STORAGE and host is not call.host:
        raise _invalid(f"a storage move stays on the VM's host {call.host.name}, not {name}")
    if kind != STORAGE and host is call.host:
        raise MethodError(SAME_HOST, f"the destination {name} is the VM's own host")
    return host


def _new_paths(move: _Move) -> dict[str, str]:
    if move.kind not in (STORAGE, LIVE_AND_STORAGE):
        return {}
    items = move.call.embedded_list("NewResourceSettingData")
    if move.kind == STORAGE and not items:
        raise _invalid("a storage move needs NewResourceSettingData naming the new disk paths")
    return dict(_new_path(move, item) for item in items)


def _new_path(move: _Move, item: Embedded) -> tuple[str, str]:
    instance_id = item.text("InstanceID") or ""
    record = move.txn.get(ObjectPath.for_keys(SASD, InstanceID=instance_id))
    if not item.is_a(SASD) or record is None or model.guid_of(record) != move.guid:
        raise _invalid(f"NewResourceSettingData {instance_id!r} is not a disk of the VM")
    paths = item.strings("HostResource")
    if not paths or not paths[0]:
        raise _invalid(f"NewResourceSettingData {instance_id!r} has no HostResource")
    return instance_id.lower(), paths[0]


# --- checks -------------------------------------------------------------------------------


def _check(move: _Move) -> None:
    state = move.vm.integer("EnabledState")
    if state not in MOVABLE_STATES:
        raise MethodError(STATE_IN_TRANSITION, f"the VM is in transition (state {state}); "
                          "it moves when running, paused, saved or off")
    if move.kind == STORAGE:
        return
    _check_enabled(move.call.host, move.txn, "source")
    _check_enabled(move.destination, move.target, "destination")
    _check_listener(move)
    _clear_destination(move)
    if move.kind != STAGED:
        _check_memory(move)


def _check_enabled(host: EmulatedHost, txn: Transaction, role: str) -> None:
    settings = host.records("Msvm_VirtualSystemMigrationServiceSettingData", txn)
    if not any(s["EnableVirtualSystemMigration"] is True for s in settings):
        raise MethodError(MIGRATION_DISABLED,
                          f"the {role} host {host.name} does not allow virtual machine migration")


def _check_listener(move: _Move) -> None:
    wanted = set(move.settings.strings("DestinationIPAddressList"))
    listening: set[str] = set()
    for service in move.destination.records(SERVICE, move.target):
        addresses = service["MigrationServiceListenerIPAddressList"]
        if isinstance(addresses, tuple):
            listening.update(str(a) for a in addresses)
    if wanted and not wanted & listening:
        raise MethodError(DESTINATION_UNREACHABLE, f"no address of {sorted(wanted)} is a "
                          f"migration listener of {move.destination.name}")


def _clear_destination(move: _Move) -> None:
    """No VM with the GUID may be on the destination, but a named planned VM is replaced."""
    planned = move.target.get(_planned_path(move.guid))
    named = "" if move.kind == STAGED else move.settings.text("DestinationPlannedVirtualSystemId")
    if named and (planned is None or named.strip("{}").lower() != move.guid.lower()):
        raise _invalid(f"DestinationPlannedVirtualSystemId {named} is not a planned VM of "
                       f"{move.destination.name} for this VM")
    if move.target.get(model.vm_path(move.guid)) is not None or (planned and not named):
        raise MethodError(GUID_ON_DESTINATION, f"a virtual machine with GUID {move.guid} "
                          f"already exists on {move.destination.name}")
    if planned is not None:
        for record in [planned, *_records_of(move.target, move.guid)]:
            move.target.delete(record.path)


def _check_memory(move: _Move) -> None:
    if not model.is_running(move.vm):
        return
    needed = int(move.vm.meta.get("memory_mb", 0))
    host = move.destination
    free = host.config.memory_mb - model.running_memory_mb(host, move.target)
    if needed > free:
        raise MethodError(ReturnCode.OUT_OF_MEMORY, f"the destination host {host.name} has "
                          f"{free} MB free; the running VM needs {needed} MB")


# --- the moves ----------------------------------------------------------------------------


def _live(move: _Move) -> None:
    """32768 and 32771: every record of the VM leaves the source for the destination."""
    for record in _records_of(move.txn, move.guid):
        move.txn.delete(record.path)
        move.target.put(_adapted(move, _clone(record)))


def _staged(move: _Move) -> None:
    """32770: a planned VM with the VM's settings on the destination; the source keeps it."""
    for record in _records_of(move.txn, move.guid):
        if not (model.is_vm(record) or _is_runtime(record)):
            move.target.put(_adapted(move, _clone(record)))
    move.target.put(_planned_system(move))


def _storage(move: _Move) -> None:
    """32769: the disks (and settings' data roots) change; the VM stays on its host."""
    for record in _records_of(move.txn, move.guid):
        if record.class_def.name in (SASD, "Msvm_VirtualSystemSettingData"):
            staged = move.txn.edit(record.path)
            assert staged is not None
            _adapted(move, staged)


_STEPS: dict[int, Callable[[_Move], None]] = {
    LIVE: _live, LIVE_AND_STORAGE: _live, STAGED: _staged, STORAGE: _storage,
}


def _records_of(txn: Transaction, guid: str) -> list[Record]:
    """The VM, its settings, devices, port features and runtime components."""
    return model.owned_records(txn, tuple(CLASSES.values()), guid)


def _clone(record: Record) -> Record:
    return Record(record.class_def, dict(record.values), copy.deepcopy(record.meta))


def _is_runtime(record: Record) -> bool:
    return "CIM_LogicalDevice" in record.class_def.ancestors


def _planned_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys(PLANNED_SYSTEM, CreationClassName=PLANNED_SYSTEM, Name=guid)


def _planned_system(move: _Move) -> Record:
    class_def = CLASSES[PLANNED_SYSTEM]
    values = {k: v for k, v in move.vm.values.items() if class_def.prop(k) is not None}
    values.update(CreationClassName=PLANNED_SYSTEM, EnabledState=EnabledState.DISABLED,
                  ProcessID=None, OnTimeInMilliseconds=0,
                  Description="Microsoft Planned Virtual Machine")
    return move.destination.new_record(PLANNED_SYSTEM, **values)


def _adapted(move: _Move, record: Record) -> Record:
    name = record.class_def.name
    if name == PORT and move.kind != STORAGE:
        _reconnect(move, record)
    elif name == SASD and move.kind != STAGED:
        _place_disk(move, record)
    elif name == "Msvm_VirtualSystemSettingData":
        _apply_system_settings(move, record)
    return record


def _apply_system_settings(move: _Move, vssd: Record) -> None:
    if move.kind == STAGED:
        vssd["VirtualSystemType"] = codes.PLANNED
    for name in DATA_ROOTS:
        value = move.system.text(name) if move.system is not None else None
        if value:
            vssd[name] = value


# --- network ------------------------------------------------------------------------------


def _reconnect(move: _Move, port: Record) -> None:
    """Point the port at the destination's switch of the same name."""
    paths = port["HostResource"]
    if not isinstance(paths, tuple) or not paths or not paths[0]:
        return
    name = _switch_name(move, str(paths[0]), port)
    switches = move.destination.records("Msvm_VirtualEthernetSwitch", move.target)
    switch = next((s for s in switches if str(s["ElementName"]).lower() == name.lower()), None)
    if switch is None:
        raise MethodError(SWITCH_MISSING, f"the destination host {move.destination.name} has "
                          f"no virtual switch named {name!r}")
    port["HostResource"] = (str(switch.path),)


def _switch_name(move: _Move, path: str, port: Record) -> str:
    try:
        switch = move.txn.get(ObjectPath.parse(path))
    except CimInvalidParameter:
        switch = None
    name = switch["ElementName"] if switch is not None else port["LastKnownSwitchName"]
    if not isinstance(name, str) or not name:
        raise MethodError(SWITCH_MISSING, f"the port is connected to an unknown switch {path}")
    return name


# --- storage ------------------------------------------------------------------------------


def _place_disk(move: _Move, sasd: Record) -> None:
    paths = sasd["HostResource"]
    if not isinstance(paths, tuple) or not paths or not paths[0]:
        return
    old = str(paths[0])
    new = move.new_paths.get(str(sasd["InstanceID"]).lower())
    if new is not None:
        _relocate(move, old, new)
        sasd["HostResource"] = (new, *paths[1:])
    elif move.destination is not move.call.host:
        _check_shared(move, old)


def _check_shared(move: _Move, path: str) -> None:
    try:
        reachable = move.destination.paths.local(path).is_file()
    except HostPathError:
        reachable = False
    if not reachable:
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found from "
                          f"{move.destination.name}: put it on shared storage or move it too")


def _relocate(move: _Move, old: str, new: str) -> None:
    """Plan the copy of ``old`` (on the source) to ``new`` (on the destination)."""
    source = _source_file(move, old)
    try:
        target = move.destination.paths.local(new)
    except HostPathError as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, str(error)) from None
    if target.resolve() == source.resolve():
        return  # the same file: shared storage, or a path that does not change
    if target.exists() or target in (t for _, t in move.txn.copies):
        raise MethodError(TARGET_FILE_EXISTS, f"the file {new} already exists on "
                          f"{move.destination.name}")
    move.txn.copies.append((source, target))
    if move.settings.get("RetainVhdCopiesOnSource") is not True:
        move.txn.removals.append(source)


def _source_file(move: _Move, path: str) -> Path:
    try:
        local = move.call.host.paths.local(path)
    except HostPathError:
        local = None
    if local is None or not local.is_file():
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found")
    return local
