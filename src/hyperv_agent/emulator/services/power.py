"""Power: Msvm_ComputerSystem.RequestStateChange and Msvm_ShutdownComponent's
InitiateShutdown and InitiateReboot.

The v2 state machine: 3 -> 2 start, 2 -> 3 turn off, 2 -> 9 -> 2 pause and resume,
9 -> 3 and 9 -> 6 turn a paused VM off or save it, 2 -> 6 -> 2 save and restore, 6 -> 3
discard the saved state, 2 -> 11 reset, 10 reboot. Anything else, including asking for
the current state, returns 32775; that a paused VM is not reset (9 -> 11) is the
emulator's choice, Microsoft does not list the transitions of a paused VM.

The guest asked through its shutdown component (a VM that is not running: 32780, not
ready) shuts down, or restarts, after ``guest_shutdown_s``; a guest that ignores shutdown
requests (``Faults.ignore_shutdown``) ignores both. A guest without integration services
(``Faults.lack_integration_services``, read when the VM starts) still has its shutdown and
KVP components (the host side of the services lives while the VM runs), but they show
OperationalStatus No Contact (12) and both methods answer 32780, the VM's summary Heartbeat
No Contact too. Microsoft documents the component, its OperationalStatus values and 32780
("the system is not ready") but not what a guest without the services shows; keeping the
component is the emulator's choice, matching the "No Contact" PowerShell's
Get-VMIntegrationService reports for such a guest (not checked against a real host here).
The agent handles both shapes (no component, or 32780) the same way. A guest restart
keeps the VM running: its run starts again (OnTimeInMilliseconds, UpTime and the run's
counter instances), as after a reset, but Hyper-V starts no job for it and the VM's state
never leaves 2.
InitiateReboot exists from Windows Server 2016 on (``codes.METHODS_SINCE_MAJOR``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from hyperv_agent.cim.api import ObjectPath, OutValue
from hyperv_agent.emulator import codes, model, processors
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, RequestedState, ReturnCode
from hyperv_agent.emulator.host import EmulatedHost, cim_datetime
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.emulator.store import Record, Transaction

E = EnabledState
R = RequestedState
Transition = Callable[[Call, Record], None]


@handles("Msvm_ComputerSystem", "RequestStateChange")
def request_state_change(call: Call) -> Mapping[str, OutValue]:
    vm = call.target
    requested = call.integer("RequestedState")
    if vm is None or not model.is_vm(vm):
        raise MethodError(ReturnCode.NOT_SUPPORTED, "only VMs change state", immediate=True)
    transition = _TRANSITIONS.get((vm.integer("EnabledState"), requested or 0))
    if transition is None:
        raise MethodError(ReturnCode.INVALID_STATE,
                          f"cannot go from state {vm['EnabledState']} to {requested}",
                          immediate=True)
    staged = call.txn.edit(vm.path)
    assert staged is not None
    transition(call, staged)
    staged["TimeOfLastStateChange"] = cim_datetime(call.host.clock())
    return {}


def _start(call: Call, vm: Record) -> None:
    guid = str(vm["Name"])
    memory_mb = _memory_mb(call.txn, guid)
    free_mb = call.host.config.memory_mb - model.running_memory_mb(call.host, call.txn)
    if memory_mb > free_mb:
        raise MethodError(ReturnCode.OUT_OF_MEMORY,
                          f"not enough memory to start: {memory_mb} MB asked, {free_mb} MB free")
    _check_media(call, guid)
    _power_on(call.host, call.txn, vm, memory_mb, model.virtual_processors(call.txn, guid))


def _memory_mb(txn: Transaction, guid: str) -> int:
    for record in model.device_records(txn, guid):
        if record.class_def.name == "Msvm_MemorySettingData":
            return record.integer("VirtualQuantity")
    return 0


def _check_media(call: Call, guid: str) -> None:
    for record in model.device_records(call.txn, guid):
        resources = record["HostResource"]
        if record.class_def.name != "Msvm_StorageAllocationSettingData" or not resources:
            continue
        path = str(resources[0]) if isinstance(resources, tuple) else ""
        try:
            exists = call.host.paths.local(path).is_file()
        except HostPathError:
            exists = False
        if not exists:
            raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found")


def _power_on(host: EmulatedHost, txn: Transaction, vm: Record, memory_mb: int,
              cpus: int) -> None:
    guid = str(vm["Name"])
    vm["EnabledState"] = E.ENABLED
    vm["ProcessID"] = random.randint(1000, 60000)  # noqa: S311 - not security relevant
    vm.meta.update({"started_at": host.clock(), "memory_mb": memory_mb,
                    model.RUNNING_CPUS: cpus})
    processors.started(host, txn, vm)
    status = codes.OperationalStatus.OK
    if host.faults.lacks_integration_services(guid, str(vm["ElementName"])):
        vm.meta[model.NO_GUEST_SERVICES] = True
        status = codes.OperationalStatus.NO_CONTACT
    for class_name, suffix in (("Msvm_ShutdownComponent", "shutdown"),
                               ("Msvm_KvpExchangeComponent", "kvp")):
        txn.put(host.new_record(
            class_name, CreationClassName=class_name, DeviceID=f"Microsoft:{guid}\\{suffix}",
            SystemCreationClassName="Msvm_ComputerSystem", SystemName=guid,
            EnabledState=E.ENABLED, HealthState=codes.HealthState.OK,
            OperationalStatus=(int(status),), StatusDescriptions=(_STATUS_TEXT[status],),
            ElementName=class_name.removeprefix("Msvm_"),
        ))


_STATUS_TEXT = {codes.OperationalStatus.OK: "OK",
                codes.OperationalStatus.NO_CONTACT: "No Contact"}


def power_off(host: EmulatedHost, txn: Transaction, vm: Record, state: int = E.DISABLED) -> None:
    vm["EnabledState"] = state
    vm["ProcessID"] = None
    vm.meta.pop("started_at", None)
    vm.meta["memory_mb"] = 0
    vm.meta.pop(model.RUNNING_CPUS, None)
    vm.meta.pop(model.NO_GUEST_SERVICES, None)
    if state == E.DISABLED:  # a saved VM keeps the processor features of its saved state
        vm.meta.pop(processors.PROCESSOR, None)
    for record in list(model.runtime_records(txn, str(vm["Name"]))):
        txn.delete(record.path)


def _turn_off(call: Call, vm: Record) -> None:
    power_off(call.host, call.txn, vm)


def _save(call: Call, vm: Record) -> None:
    power_off(call.host, call.txn, vm, E.OFFLINE)


def _restore(call: Call, vm: Record) -> None:
    _start(call, vm)


def _pause(call: Call, vm: Record) -> None:
    vm["EnabledState"] = E.QUIESCE


def _resume(call: Call, vm: Record) -> None:
    vm["EnabledState"] = E.ENABLED


def _reset(call: Call, vm: Record) -> None:
    vm.meta["started_at"] = call.host.clock()


_TRANSITIONS: dict[tuple[int, int], Transition] = {
    (E.DISABLED, R.ENABLED): _start,
    (E.DISABLED, R.REBOOT): _start,
    (E.OFFLINE, R.ENABLED): _restore,
    (E.OFFLINE, R.REBOOT): _restore,
    (E.OFFLINE, R.DISABLED): _turn_off,
    (E.QUIESCE, R.ENABLED): _resume,
    (E.QUIESCE, R.DISABLED): _turn_off,
    (E.QUIESCE, R.OFFLINE): _save,
    (E.ENABLED, R.DISABLED): _turn_off,
    (E.ENABLED, R.QUIESCE): _pause,
    (E.ENABLED, R.OFFLINE): _save,
    (E.ENABLED, R.RESET): _reset,
    (E.ENABLED, R.REBOOT): _reset,
}


@handles("Msvm_ShutdownComponent", "InitiateShutdown")
def initiate_shutdown(call: Call) -> Mapping[str, OutValue]:
    """Asks the guest to shut down; a cooperative guest is off after ``guest_shutdown_s``."""
    return _ask_guest(call, power_off)


@handles("Msvm_ShutdownComponent", "InitiateReboot")
def initiate_reboot(call: Call) -> Mapping[str, OutValue]:
    """Asks the guest to restart; a cooperative guest restarts after ``guest_shutdown_s``."""
    return _ask_guest(call, _guest_restarted)


def _guest_restarted(host: EmulatedHost, txn: Transaction, vm: Record) -> None:
    vm.meta["started_at"] = host.clock()


GuestAction = Callable[[EmulatedHost, Transaction, Record], None]


def _ask_guest(call: Call, action: GuestAction) -> Mapping[str, OutValue]:
    component = call.target
    assert component is not None
    guid = str(component["SystemName"])
    vm = call.txn.get(model.vm_path(guid))
    if vm is None or vm["EnabledState"] != E.ENABLED:
        raise MethodError(ReturnCode.NOT_READY, "the VM is not running", immediate=True)
    if component["OperationalStatus"] != (codes.OperationalStatus.OK,):
        raise MethodError(ReturnCode.NOT_READY, "the guest's shutdown service is not running",
                          immediate=True)
    if call.host.faults.ignores_shutdown(guid, str(vm["ElementName"])):
        return {}
    delay = call.host.config.guest_shutdown_s
    if delay <= 0:
        staged = call.txn.edit(vm.path)
        assert staged is not None
        action(call.host, call.txn, staged)
    else:
        call.host.later(delay, lambda: _guest_acts(call.host, vm.path, action))
    return {}


def _guest_acts(host: EmulatedHost, path: ObjectPath, action: GuestAction) -> None:
    txn = host.store.transaction()
    vm = txn.edit(path)
    if vm is not None and vm["EnabledState"] == E.ENABLED:
        action(host, txn, vm)
        txn.commit()
