"""Power: Msvm_ComputerSystem.RequestStateChange and Msvm_ShutdownComponent's
InitiateShutdown and InitiateReboot.

The v2 state machine: 3 -> 2 start, 2 -> 3 turn off, 2 -> 9 -> 2 pause and resume,
9 -> 3 and 9 -> 6 turn a paused VM off or save it, 2 -> 6 -> 2 save and restore, 6 -> 3
discard the saved state, 2 -> 11 reset, 10 reboot. Anything else, including asking for
the current state, returns 32775; that a paused VM is not reset (9 -> 11) is the
emulator's choice, Microsoft does not list the transitions of a paused VM. A VM whose
live move is under way takes no state change, nor a shutdown asked of its guest, until
the move is done (32775, ``model.being_migrated``, the emulator's choice).

While a change's job runs (the latency model's job time) the VM shows its transitional
state (``_SHOWN``: Starting, Stopping, Saving, Pausing, Resuming) with RequestedState the
state asked for, and ends in the new one. Microsoft documents no answer to a request
made meanwhile ("earlier requests" may be "overwritten or lost"); the emulator refuses
it with 32775 (invalid state), as it refuses DestroySystem, and the guest's shutdown
component answers 32780 (not ready) until a starting VM runs.

The guest asked through its shutdown component (a VM that is not running: 32780, not
ready) shuts down, or restarts, after ``guest_shutdown_s``, wherever its VM is by then
(``_where_now``: a live move begun meanwhile may have carried it to another host of
this process, or to a cluster member of another one, which times the guest's requests as
the VM arrives, ``guest_arrived``; a move still under way fails as it ends, its VM
stopped on the source, ``migration._Carried``),
if its guest has not booted again meanwhile (``_guest_acts``: a turn off then a start, or
a reset, drops the request with the guest that accepted it); the guest of a paused or
saved VM is frozen, its request with it, and goes on once the VM is resumed or restored,
needing the rest of its time (``_guest_thawed``); a host opened again on its state
directory times afresh the requests of its running VMs' guests, which went on meanwhile
(``guests_go_on``); a VM whose guest shut down
then shows Stopping for the job time, as a turn off does (``_guest_shut_down``, the
emulator's choice); a guest that ignores shutdown requests (``Faults.ignore_shutdown``)
ignores both. A guest without integration services
(``Faults.lack_integration_services``, read when the VM starts) still has its shutdown and
KVP components (the host side of the services lives while the VM runs), but they show
OperationalStatus No Contact (12) and both methods answer 32780, the VM's summary Heartbeat
No Contact too. Microsoft documents the component, its OperationalStatus values and 32780
("the system is not ready") but not what a guest without the services shows; keeping the
component is the emulator's choice, matching the "No Contact" PowerShell's
Get-VMIntegrationService reports for such a guest (not checked against a real host here).
The agent handles both shapes (no component, or 32780) the same way. Each synthetic NIC
of a running VM has its Msvm_GuestNetworkAdapterConfiguration (``model.guest_network_record``),
made at the start and gone at the stop; it shows the addresses the guest reports
(``Faults.guest_addresses``) only while the guest has integration services. A guest restart
keeps the VM running: its run starts again (OnTimeInMilliseconds, UpTime and the run's
counter instances), as after a reset, but Hyper-V starts no job for it and the VM's state
never leaves 2.
InitiateReboot exists from Windows Server 2016 on (``codes.METHODS_SINCE_MAJOR``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hyperv_agent.cim.api import ObjectPath, OutValue
from hyperv_agent.emulator import codes, jobs, model, processors, vhd
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, RequestedState, ReturnCode
from hyperv_agent.emulator.host import EmulatedHost, cim_datetime
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
    changing = model.transition(call.host, vm)
    if changing is not None:
        raise MethodError(ReturnCode.INVALID_STATE,
                          f"the VM is changing state (state {changing}); it takes no other "
                          "state change until that one is done", immediate=True)
    moving = model.being_migrated(call.host, call.txn, vm)
    if moving is not None:
        raise MethodError(codes.CHANGE_WHILE_MIGRATING, moving, immediate=True)
    transition = _TRANSITIONS.get((vm.integer("EnabledState"), requested or 0))
    if transition is None:
        raise MethodError(ReturnCode.INVALID_STATE,
                          f"cannot go from state {vm['EnabledState']} to {requested}",
                          immediate=True)
    staged = call.txn.edit(vm.path)
    assert staged is not None
    transition(call, staged)
    staged["TimeOfLastStateChange"] = cim_datetime(call.host.clock())
    _show_transition(call, staged, transition, requested or 0)
    return {}


def _show_transition(call: Call, vm: Record, transition: Transition, requested: int) -> None:
    """Have the VM show its transitional state (``_SHOWN``) while the change's job runs:
    for the latency model's job time, when jobs are asynchronous. Its stored state is
    already the one the change ends in; a job that ends in Exception discards both."""
    _show(call.host, vm, _SHOWN.get(transition), requested)


def _show(host: EmulatedHost, vm: Record, shown: EnabledState | None, requested: int) -> None:
    """Have ``vm`` show ``shown`` (None: nothing) for the latency model's job time, when
    jobs are asynchronous, with RequestedState ``requested``."""
    duration = host.config.latency.job_s
    vm.meta.pop(model.TRANSITION, None)
    if shown is not None and duration > 0 and host.config.async_jobs:
        vm.meta[model.TRANSITION] = [int(shown), requested, host.clock() + duration]


def _start(call: Call, vm: Record, *, boots: bool = True) -> None:
    """Power ``vm`` on; its guest boots unless it is restored from its saved state
    (``boots`` False, ``_restore``)."""
    guid = str(vm["Name"])
    memory_mb = _memory_mb(call.txn, guid)
    free_mb = call.host.config.memory_mb - model.running_memory_mb(call.host, call.txn)
    if memory_mb > free_mb:
        raise MethodError(ReturnCode.OUT_OF_MEMORY,
                          f"not enough memory to start: {memory_mb} MB asked, {free_mb} MB free")
    _check_media(call, guid, str(vm["ElementName"]))
    _power_on(call.host, call.txn, vm, memory_mb, model.virtual_processors(call.txn, guid),
              boots=boots)


def _memory_mb(txn: Transaction, guid: str) -> int:
    for record in model.device_records(txn, guid):
        if record.class_def.name == "Msvm_MemorySettingData":
            return record.integer("VirtualQuantity")
    return 0


def _check_media(call: Call, guid: str, name: str) -> None:
    """Each medium's file must exist, and a virtual hard disk must open with its chain of
    parents (``vhd.check_chain``): a differencing disk whose parent is missing, or is no
    longer the disk it was made from, keeps the VM from starting, as on Hyper-V, nothing
    started (``codes.PARENT_MISSING``, ``codes.PARENT_BROKEN``)."""
    for record in model.device_records(call.txn, guid):
        resources = record["HostResource"]
        if record.class_def.name != "Msvm_StorageAllocationSettingData" or not resources:
            continue
        path = str(resources[0]) if isinstance(resources, tuple) else ""
        if call.host.paths.file(path) is None:
            raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found")
        if record["ResourceSubType"] == codes.SUBTYPE_VHD:
            _check_chain(call, name, path)


def _check_chain(call: Call, name: str, path: str) -> None:
    """The wording follows Hyper-V's start errors, shortened: "'<VM>' failed to start",
    the attachment that did not open (the disk in the drive, whichever link of its chain
    broke) and Windows' error, which names no parent; the parent is not named either."""
    opening = f"'{name}' failed to start: failed to open the attachment {path}: "
    try:
        vhd.check_chain(path, call.host.paths.file)
    except vhd.BrokenChain as error:
        code = (codes.PARENT_MISSING if error.why is vhd.ChainBreak.MISSING
                else codes.PARENT_BROKEN)
        raise MethodError(code, opening + error.windows_text) from None
    except (vhd.VhdError, OSError) as error:
        raise MethodError(ReturnCode.FAILED, opening + str(error)) from None


def _power_on(host: EmulatedHost, txn: Transaction, vm: Record, memory_mb: int,
              cpus: int, *, boots: bool) -> None:
    guid = str(vm["Name"])
    vm["EnabledState"] = E.ENABLED
    vm["ProcessID"] = model.new_process_id(host, txn, vm)
    model.new_run(vm, host.clock(), boots=boots)
    vm.meta.update({"memory_mb": memory_mb, model.RUNNING_CPUS: cpus})
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
    for nic in model.device_records(txn, guid):
        if nic.class_def.name == "Msvm_SyntheticEthernetPortSettingData":
            txn.put(model.guest_network_record(host, nic))


_STATUS_TEXT = {codes.OperationalStatus.OK: "OK",
                codes.OperationalStatus.NO_CONTACT: "No Contact"}


def power_off(host: EmulatedHost, txn: Transaction, vm: Record, state: int = E.DISABLED) -> None:
    vm["EnabledState"] = state
    if vm["ProcessID"] is not None:
        vm.meta[model.PREVIOUS_PROCESS_ID] = vm["ProcessID"]
    vm["ProcessID"] = None
    model.end_run(vm)
    vm.meta["memory_mb"] = 0
    vm.meta.pop(model.RUNNING_CPUS, None)
    vm.meta.pop(model.NO_GUEST_SERVICES, None)
    if state == E.DISABLED:  # a saved VM keeps the processor features of its saved state
        vm.meta.pop(processors.PROCESSOR, None)
        model.drop_guest_requests(vm)
    else:  # and its guest, frozen with the requests it was carrying out
        model.freeze_guest(vm, host.clock())
    guid = str(vm["Name"])
    for record in [*model.runtime_records(txn, guid), *model.guest_network_records(txn, guid)]:
        txn.delete(record.path)


def _turn_off(call: Call, vm: Record) -> None:
    power_off(call.host, call.txn, vm)


def _save(call: Call, vm: Record) -> None:
    power_off(call.host, call.txn, vm, E.OFFLINE)


def _restore(call: Call, vm: Record) -> None:
    _start(call, vm, boots=False)
    _guest_thawed(call.host, vm)


def _pause(call: Call, vm: Record) -> None:
    vm["EnabledState"] = E.QUIESCE
    model.pause(vm, call.host.clock())
    model.freeze_guest(vm, call.host.clock())


def _resume(call: Call, vm: Record) -> None:
    vm["EnabledState"] = E.ENABLED
    model.resume(vm, call.host.clock())
    _guest_thawed(call.host, vm)


def _reset(call: Call, vm: Record) -> None:
    model.new_run(vm, call.host.clock())


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

#: What a VM shows while each change's job runs: the v2 values of Get-VM's VMState
#: (Starting 10, Stopping 4, Saving 32773, Pausing 32776, Resuming 32777). Microsoft does
#: not say which state a restore from a saved state shows; Starting is the emulator's
#: choice, as is showing none for a reset (Hyper-V's Reset, 11, is not shown here).
_SHOWN: dict[Transition, EnabledState] = {
    _start: E.STARTING, _restore: E.STARTING, _turn_off: E.SHUTTING_DOWN,
    _save: E.SAVING, _pause: E.PAUSING, _resume: E.RESUMING,
}


@handles("Msvm_ShutdownComponent", "InitiateShutdown")
def initiate_shutdown(call: Call) -> Mapping[str, OutValue]:
    """Asks the guest to shut down; a cooperative guest is off after ``guest_shutdown_s``.
    A VM being migrated live is not asked (``model.being_migrated``: 32775): its guest
    would turn it off in the middle of the move. A restart asked of the guest keeps the
    VM running, and is asked as ever (both the emulator's choices)."""
    vm = call.txn.get(model.vm_path(str(call.target["SystemName"]))) if call.target else None
    moving = None if vm is None else model.being_migrated(call.host, call.txn, vm)
    if moving is not None:
        raise MethodError(codes.CHANGE_WHILE_MIGRATING, moving, immediate=True)
    return _ask_guest(call, "shutdown")


def _guest_shut_down(host: EmulatedHost, txn: Transaction, vm: Record) -> None:
    """The guest has shut its OS down: Hyper-V stops the VM. Microsoft does not say
    whether a VM its guest shuts down shows Stopping (4) while Hyper-V tears it down; the
    emulator shows it for the latency model's job time, as for a RequestStateChange to
    off, taking no other change meanwhile (32775), and RequestedState 12 (Not
    Applicable: nothing was asked of Hyper-V), its choice too."""
    power_off(host, txn, vm)
    _show(host, vm, E.SHUTTING_DOWN, int(R.NOT_APPLICABLE))


@handles("Msvm_ShutdownComponent", "InitiateReboot")
def initiate_reboot(call: Call) -> Mapping[str, OutValue]:
    """Asks the guest to restart; a cooperative guest restarts after ``guest_shutdown_s``."""
    return _ask_guest(call, "restart")


def _guest_restarted(host: EmulatedHost, txn: Transaction, vm: Record) -> None:
    model.new_run(vm, host.clock())


GuestAction = Callable[[EmulatedHost, Transaction, Record], None]
#: The guest's actions by the names its requests keep (``model.GUEST_REQUESTS``).
_GUEST_ACTIONS: dict[str, GuestAction] = {"shutdown": _guest_shut_down,
                                          "restart": _guest_restarted}


def _ask_guest(call: Call, action: str) -> Mapping[str, OutValue]:
    component = call.target
    assert component is not None
    guid = str(component["SystemName"])
    vm = call.txn.get(model.vm_path(guid))
    if vm is None or model.enabled_state(call.host, vm) != E.ENABLED:
        raise MethodError(ReturnCode.NOT_READY, "the VM is not running", immediate=True)
    if component["OperationalStatus"] != (codes.OperationalStatus.OK,):
        raise MethodError(ReturnCode.NOT_READY, "the guest's shutdown service is not running",
                          immediate=True)
    if call.host.faults.ignores_shutdown(guid, str(vm["ElementName"])):
        return {}
    staged = call.txn.edit(vm.path)
    assert staged is not None
    delay = call.host.config.guest_shutdown_s
    if delay <= 0:
        _GUEST_ACTIONS[action](call.host, call.txn, staged)
    else:
        token = model.ask_guest(staged, action, delay, call.host.clock())
        _arm(call.host, vm.path, token, delay)
    return {}


def _guest_thawed(host: EmulatedHost, vm: Record) -> None:
    """The (staged) ``vm``'s guest, frozen while it was paused or saved, runs again: the
    requests it was carrying out go on (``model.thaw_guest``), each timed afresh
    (``_guest_timed``); the timers armed before it froze find nothing when they fire,
    and a VM that stays saved keeps none."""
    model.thaw_guest(vm, host.clock())
    _guest_timed(host, vm)


def guests_go_on(host: EmulatedHost) -> None:
    """``host`` opened again on its state directory: the guest of each running VM goes
    on with the requests it was carrying out (``_guest_timed``), their timers gone with
    the process that armed them. The shutdown or restart is the guest's own work: it
    goes on while Hyper-V's management service (here the emulated host's process) is
    down, so each request needs only the rest of its time, and one overdue is carried
    out at once, the guest having finished meanwhile. Microsoft does not document the
    management service restarting in the middle of a guest's shutdown; the guest's
    timing is the emulator's choice. A paused or saved VM's guest stays frozen, its
    requests with it (``_guest_thawed`` times them once it runs). A host that only reads
    another process's state (``held_elsewhere``) arms nothing: that process times its
    guests. Opened before its event loop runs (as ``serve`` opens it), the timers start
    when the loop first hands the host work (``Worker.later``), each for what is left."""
    if host.held_elsewhere is not None:
        return
    for vm in list(host.records("Msvm_ComputerSystem")):
        if model.is_vm(vm) and vm["EnabledState"] == E.ENABLED:
            _guest_timed(host, vm)


def guest_arrived(host: EmulatedHost, guid: str) -> None:
    """The VM ``guid`` arrived on ``host`` by a live move, handed over through the
    cluster directory (``handover.accept``) from a member of another process or of
    this one, or made between two hosts of this process (``migration._Linked``): its
    guest goes on with the requests it was carrying out as it left
    (``_guest_timed``), each needing the rest of its time. The times a request keeps
    are the hosts' clocks, wall time, so they count on across processes; a paused VM's
    guest stays frozen, its requests with it, until resumed here (``_guest_thawed``).
    The source's timers find the VM gone (``_where_now``); one that follows it to a
    destination of its own process finds the request already carried out, or carries
    it out first, and the other finds none (``model.guest_request_due``); a source
    closed meanwhile arms nothing more (``EmulatedHost.later``)."""
    vm = host.store.get(model.vm_path(guid))
    if vm is not None and vm["EnabledState"] == E.ENABLED:
        _guest_timed(host, vm)


def _guest_timed(host: EmulatedHost, vm: Record) -> None:
    """Arm a timer for each request the running ``vm``'s guest is carrying out, for the
    time it still needs (``model.guest_timers``): the one place the timers of a guest's
    requests are armed from its VM, as it resumes or is restored, as its host opens, and
    as it arrives by a hand-over (``guest_arrived``)."""
    for token, left_s in model.guest_timers(vm, host.clock()):
        _arm(host, vm.path, token, left_s)


def _arm(host: EmulatedHost, path: ObjectPath, token: int, delay_s: float) -> None:
    host.later(delay_s, lambda: _guest_acts(host, path, token))


def _guest_acts(host: EmulatedHost, path: ObjectPath, token: int) -> None:
    """The guest asked through ``host`` carries out the request armed with ``token`` on
    its VM where the VM is now (``_where_now``), if that VM still runs there with the
    request armed (``model.GUEST_REQUESTS``). The request lives in the guest that
    accepted it: a VM turned off and started again, or reset, meanwhile runs a guest
    booted afresh that knows nothing of it, and is left running; a live move carries
    the guest and the request with it; a paused or saved VM's guest is frozen in the
    middle of it, and goes on with it once resumed, or restored from the saved state
    (``_guest_thawed``). Microsoft does not say what becomes of a request whose guest no
    longer runs; dropping it with the guest is the emulator's choice."""
    jobs.begin_due(host)  # a move due by now has been made: the VM is where it went
    where = _where_now(host, path)
    if where is None:
        return
    txn = where.store.transaction()
    vm = txn.edit(path)
    if vm is None or vm["EnabledState"] != E.ENABLED:
        return
    action = model.guest_request_due(vm, token)
    if action is not None:
        _GUEST_ACTIONS[action](where, txn, vm)
        txn.commit()


def _where_now(host: EmulatedHost, path: ObjectPath) -> EmulatedHost | None:
    """The host that holds the VM at ``path`` (its GUID): ``host``, where its guest was
    asked, or the host of this process a live move carried it to meanwhile. The guest's
    shutdown or restart is its own doing and goes on wherever its VM runs: a move that
    completes before the guest is done takes a VM whose guest is still shutting down,
    which the destination then stops. Microsoft does not say what becomes of a shutdown
    the guest accepted before its VM moved; following the VM is the emulator's choice. A
    host that only reads another process's state (``held_elsewhere``) holds none of it.
    A VM carried to a cluster member of another process is gone from this one: there
    its destination times its guest's requests as it arrives (``guest_arrived``), and
    the timer here finds nothing to act on."""
    if host.store.get(path) is not None:
        return host
    for other in EmulatedHost.live():
        if other is not host and other.held_elsewhere is None and (
                other.store.get(path) is not None):
            return other
    return None
