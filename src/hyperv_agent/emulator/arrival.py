"""The destination's side of a migration: taking in the VM an offer carries.

``receive`` checks what would make the move fail on the destination host and stages the
VM there, in a transaction, as the destination will hold it: ports reconnected to its
switch of the same name, disks on its paths, settings with their new data roots. It
changes nothing itself; the caller commits (or discards, for a check) the transaction and
makes the file copies it returns. The same code serves a destination in this process and
one in another process of the cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import codes, model, processors
from hyperv_agent.emulator.calls import MethodError
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.offer import ARRIVAL, STAGED, STORAGE, Offer
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.store import Record, Transaction

SERVICE = "Msvm_VirtualSystemMigrationService"
SASD = "Msvm_StorageAllocationSettingData"
PORT = "Msvm_EthernetPortAllocationSettingData"
VSSD = "Msvm_VirtualSystemSettingData"
PLANNED_SYSTEM = "Msvm_PlannedComputerSystem"
DATA_ROOTS = ("ConfigurationDataRoot", "SnapshotDataRoot", "SwapFileDataRoot",
              "SuspendDataRoot", "LogDataRoot")

# Refusals without a documented code: the emulator's choices.
DESTINATION_UNREACHABLE = ReturnCode.SYSTEM_NOT_AVAILABLE
MIGRATION_DISABLED = ReturnCode.NOT_SUPPORTED
GUID_ON_DESTINATION = ReturnCode.INVALID_PARAMETER
SWITCH_MISSING = ReturnCode.INVALID_PARAMETER
TARGET_FILE_EXISTS = ReturnCode.INVALID_PARAMETER

#: A file to copy for a disk that moves: (the source's file, the destination's file).
FileCopy = tuple[Path, Path]


def receive(host: EmulatedHost, txn: Transaction, offer: Offer) -> list[FileCopy]:
    """Stage ``offer``'s VM on ``host`` in ``txn``; the files to copy first.

    MethodError when the destination cannot take it: migration disabled, no listener of
    the requested addresses, a VM of the same GUID (a planned VM the offer names is
    replaced), processors lacking the features a running, paused or saved VM started
    with (``processors.check_arrival``), too little memory for a running VM, no switch
    of a port's switch name, a disk neither moved nor reachable from ``host``, or a moved
    disk's file already there. Nothing is changed outside ``txn``. For a move that has
    begun (``offer.begun``) whether ``host`` takes moves (migration enabled, its
    listeners) was asked as it began and is not asked again: the rest makes the move
    impossible.
    """
    if not offer.begun:
        check_enabled(host, txn, "destination")
        _check_listener(host, txn, offer)
    _clear_destination(host, txn, offer)
    if offer.moves_the_vm:
        processors.check_arrival(host, next(r for r in offer.records if model.is_vm(r)))
    if offer.kind != STAGED:
        _check_memory(host, txn, offer)
    copies: list[FileCopy] = []
    for record in offer.records:
        if offer.kind == STAGED and (model.is_vm(record) or _is_runtime(record)):
            continue
        txn.put(adapted(host, offer, _clone(record), copies))
    if offer.kind == STAGED:
        txn.put(_planned_system(host, offer))
    elif offer.moves_the_vm and offer.running:
        _new_worker_process(host, txn, offer)
    return copies


def _new_worker_process(host: EmulatedHost, txn: Transaction, offer: Offer) -> None:
    """A running or paused VM runs on ``host`` in a worker process of ``host``'s: its
    ProcessID is one ``host`` gives (``model.new_process_id``), not its source's, which a
    VM of ``host`` may hold."""
    vm = txn.edit(model.vm_path(offer.guid))
    assert vm is not None  # staged just now
    vm["ProcessID"] = model.new_process_id(host, txn, vm)


def check_enabled(host: EmulatedHost, txn: Transaction, role: str) -> None:
    settings = host.records("Msvm_VirtualSystemMigrationServiceSettingData", txn)
    if not any(s["EnableVirtualSystemMigration"] is True for s in settings):
        raise MethodError(MIGRATION_DISABLED,
                          f"the {role} host {host.name} does not allow virtual machine migration")


def _check_listener(host: EmulatedHost, txn: Transaction, offer: Offer) -> None:
    wanted = set(offer.listener_addresses)
    listening: set[str] = set()
    for service in host.records(SERVICE, txn):
        addresses = service["MigrationServiceListenerIPAddressList"]
        if isinstance(addresses, tuple):
            listening.update(str(a) for a in addresses)
    if wanted and not wanted & listening:
        raise MethodError(DESTINATION_UNREACHABLE, f"no address of {sorted(wanted)} is a "
                          f"migration listener of {host.name}")


def _clear_destination(host: EmulatedHost, txn: Transaction, offer: Offer) -> None:
    """No VM with the GUID may be on the destination, but a named planned VM is replaced."""
    planned = txn.get(planned_path(offer.guid))
    named = "" if offer.kind == STAGED else offer.planned_id
    if named and (planned is None or named.strip("{}").lower() != offer.guid.lower()):
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"DestinationPlannedVirtualSystemId "
                          f"{named} is not a planned VM of {host.name} for this VM",
                          immediate=True)
    if txn.get(model.vm_path(offer.guid)) is not None or (planned and not named):
        raise MethodError(GUID_ON_DESTINATION, f"a virtual machine with GUID {offer.guid} "
                          f"already exists on {host.name}")
    if planned is not None:
        for record in [planned, *model.owned_records(txn, tuple(CLASSES.values()), offer.guid)]:
            txn.delete(record.path)


def _check_memory(host: EmulatedHost, txn: Transaction, offer: Offer) -> None:
    if not offer.running:
        return
    free = host.config.memory_mb - model.running_memory_mb(host, txn)
    if offer.memory_mb > free:
        raise MethodError(ReturnCode.OUT_OF_MEMORY, f"the destination host {host.name} has "
                          f"{free} MB free; the running VM needs {offer.memory_mb} MB")


def _clone(record: Record) -> Record:
    return Record(record.class_def, dict(record.values), copy.deepcopy(record.meta))


def _is_runtime(record: Record) -> bool:
    return "CIM_LogicalDevice" in record.class_def.ancestors


def planned_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys(PLANNED_SYSTEM, CreationClassName=PLANNED_SYSTEM, Name=guid)


def _planned_system(host: EmulatedHost, offer: Offer) -> Record:
    vm = next(r for r in offer.records if model.is_vm(r))
    class_def = CLASSES[PLANNED_SYSTEM]
    values = {k: v for k, v in vm.values.items() if class_def.prop(k) is not None}
    values.update(CreationClassName=PLANNED_SYSTEM, EnabledState=EnabledState.DISABLED,
                  ProcessID=None, OnTimeInMilliseconds=0,
                  Description="Microsoft Planned Virtual Machine")
    return host.new_record(PLANNED_SYSTEM, **values)


def adapted(host: EmulatedHost, offer: Offer, record: Record,
            copies: list[FileCopy]) -> Record:
    """``record`` as ``host`` holds it after the move (changed in place)."""
    name = record.class_def.name
    if name == PORT and offer.kind != STORAGE:
        _reconnect(host, offer, record)
    elif name == SASD and offer.kind != STAGED:
        _place_disk(host, offer, record, copies)
    elif name == VSSD:
        _apply_system_settings(offer, record)
    elif model.is_vm(record) and offer.moves_the_vm:
        record.meta[ARRIVAL] = offer.id
    return record


def _apply_system_settings(offer: Offer, vssd: Record) -> None:
    if offer.kind == STAGED:
        vssd["VirtualSystemType"] = codes.PLANNED
    for name in DATA_ROOTS:
        value = offer.data_roots.get(name)
        if value:
            vssd[name] = value


# --- network ------------------------------------------------------------------------------


def _reconnect(host: EmulatedHost, offer: Offer, port: Record) -> None:
    """Point the port at the destination's switch of the same name."""
    paths = port["HostResource"]
    if not isinstance(paths, tuple) or not paths or not paths[0]:
        return
    name = offer.switch_names.get(str(port["InstanceID"]).lower(), "")
    switches = host.records("Msvm_VirtualEthernetSwitch")
    switch = next((s for s in switches if str(s["ElementName"]).lower() == name.lower()), None)
    if switch is None:
        raise MethodError(SWITCH_MISSING, f"Could not find Ethernet switch '{name}' on "
                          f"{host.name}.")
    port["HostResource"] = (str(switch.path),)


# --- storage ------------------------------------------------------------------------------


def _place_disk(host: EmulatedHost, offer: Offer, sasd: Record,
                copies: list[FileCopy]) -> None:
    paths = sasd["HostResource"]
    if not isinstance(paths, tuple) or not paths or not paths[0]:
        return
    old = str(paths[0])
    instance_id = str(sasd["InstanceID"]).lower()
    new = offer.new_paths.get(instance_id)
    if new is not None:
        _relocate(host, Path(offer.source_files[instance_id]), new, copies)
        sasd["HostResource"] = (new, *paths[1:])
    elif offer.kind != STORAGE:
        _check_shared(host, old)


def _check_shared(host: EmulatedHost, path: str) -> None:
    if host.paths.file(path) is None:
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found from "
                          f"{host.name}: The system cannot find the file specified. "
                          "(0x80070002). Put it on shared storage or move it too")


def _relocate(host: EmulatedHost, source: Path, new: str, copies: list[FileCopy]) -> None:
    """Plan the copy of ``source`` (the source's file) to ``new`` on ``host``."""
    try:
        target = host.paths.local(new)
    except HostPathError as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, str(error)) from None
    if target.resolve() == source.resolve():
        return  # the same file: shared storage, or a path that does not change
    if target.exists() or target in (t for _, t in copies):
        raise MethodError(TARGET_FILE_EXISTS, f"the file {new} already exists on {host.name}")
    copies.append((source, target))
