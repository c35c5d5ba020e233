"""Graceful shutdown, guest reboot, reset, and the whole stop sequence of a VM.

``stop_and_remove`` is what CloudStack's StopCommand means on Hyper-V: ask the guest to
shut down through its shutdown integration component, wait (bounded) for the VM to be
off, turn it off hard if it is not, then delete its definition. Disk files are never
touched. ``reboot`` is CloudStack's RebootCommand: the guest OS is asked to restart
itself, as KVM's ``virsh reboot`` asks it, and the VM is reset only when the guest cannot
be asked. Round trips in the steady state (W = job waits, P = state polls, >= 1; the
host's Windows version is read once a session, ``host.windows_version``):

==============================  ===================================================
``shutdown_component``          1 query
``request_shutdown``            1 query + 1 call (just the query without a component)
``request_reboot``              1 query + 1 call (just the query without a component;
                                nothing on a host before Windows Server 2016)
``reboot`` guest asked          1 query + 1 call (InitiateReboot: Hyper-V starts no job)
``reboot`` reset                1 call + 1 W; before it, 1 query without a component,
                                1 query + 1 call when the guest cannot be asked, nothing
                                on a host before 2016 or for a VM that is not running
``wait_until_off``              P gets, bounded by the policy's timeout
``start``, ``reset``              1 call (+ 1 W when Hyper-V runs it as a job); +1 get
                                for a start whose job Hyper-V lost (``vms.request_state``)
``stop_and_remove`` graceful    1 query + 1 call + P gets + 1 call + 1 W (destroy);
                                +1 call + 1 W (turn off) when the guest ignores it
``stop_and_remove`` forced      2 calls + 2 W (turn off, destroy)
``stop_and_remove`` VM off      1 call + 1 W (destroy)
``stop_and_remove`` migrating   nothing (the VM is left to its live move)
``settle``                      nothing for a VM in a steady state; P gets while Hyper-V
                                changes its state (Starting, Stopping, Saving, ...), before
                                ``stop_and_remove`` and ``reboot`` act, and after a reset
                                refused as such a change began
``find_settled``                1 query (``vms.find_vm``) + ``settle``'s
==============================  ===================================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, InValue, ObjectPath
from hyperv_agent.errors import (
    AgentError,
    CimInvalidMethod,
    CimNotFound,
    HyperVError,
    VmMigrating,
)
from hyperv_agent.hyperv import host, jobs, vms
from hyperv_agent.hyperv.schema import NAMESPACE, Class, RequestedState, ReturnCode
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState, VmRef

log = logging.getLogger("hyperv_agent.hyperv.power")

T = TypeVar("T")

_COMPONENT_KEYS = ("CreationClassName", "DeviceID", "SystemCreationClassName", "SystemName")
#: InitiateShutdown return codes that mean "the guest cannot be asked now" (VM not running,
#: integration service not ready): the caller goes on to a hard power-off.
_NOT_ASKED = (ReturnCode.NOT_READY, ReturnCode.INVALID_STATE)
#: InitiateReboot return codes after which the guest will not restart: those, and a
#: shutdown already in progress (the guest is going off, not restarting).
_NOT_REBOOTING = (*_NOT_ASKED, ReturnCode.SHUTDOWN_IN_PROGRESS)
#: How long a guest gets to shut down, and how often its state is read meanwhile.
SHUTDOWN_WAIT = jobs.WaitPolicy(timeout_s=30.0, first_poll_s=0.1, max_poll_s=1.0)


@dataclass(frozen=True)
class StopPolicy:
    """How a stop proceeds: guest shutdown first or not, how long to wait for it."""

    graceful: bool = True
    shutdown_wait: jobs.WaitPolicy = SHUTDOWN_WAIT
    reason: str = "Stopped by CloudStack"
    job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY


async def shutdown_component(hv: HyperV, vm_guid: str) -> ObjectPath | None:
    """The path of the VM's Msvm_ShutdownComponent; None when it has none. 1 query.

    A VM that is off, missing, or whose guest lacks the shutdown integration service has
    no component. Read-only and safe to repeat.
    """
    query = wql.select(Class.SHUTDOWN, wql.eq("SystemName", vm_guid), _COMPONENT_KEYS)
    found = await hv.cim.query(query, NAMESPACE)
    return found[0].path if found else None


async def request_shutdown(
    hv: HyperV, vm_guid: str, reason: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> bool:
    """Ask the guest OS to shut down (InitiateShutdown, Force=True); True if it was asked.

    False, with nothing changed, when the VM is missing, has no shutdown component, or
    Hyper-V answers that the guest cannot be asked now (not ready, invalid state). A
    shutdown already in progress counts as asked. The request returns before the guest
    is off: use ``wait_until_off``. A repeat is safe (a guest already shutting down is
    asked again or reported in progress). Other refusals raise MethodFailed or JobFailed;
    nothing is cleaned up. 1 query + 1 call.
    """
    return await _ask_guest(hv, vm_guid, "InitiateShutdown", reason, policy,
                            accept=(*_NOT_ASKED, ReturnCode.SHUTDOWN_IN_PROGRESS),
                            declined=_NOT_ASKED)


async def request_reboot(
    hv: HyperV, vm_guid: str, reason: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> bool:
    """Ask the guest OS to restart (InitiateReboot, Force=True); True if it was asked.

    False, with nothing changed, when the host predates Windows Server 2016 (it has no
    InitiateReboot: ``host.reboots_guests``, or WMI answering that the method does not
    exist), the VM is missing or has no shutdown component, or Hyper-V answers that the
    guest cannot be asked now (not ready, invalid state) or is already shutting down. The
    request returns before the guest has restarted; Hyper-V reports nothing when it has.
    A repeat asks again. Other refusals raise MethodFailed or JobFailed; nothing is
    cleaned up. 1 query + 1 call (nothing before 2016).
    """
    if not await host.reboots_guests(hv):
        return False
    try:
        return await _ask_guest(hv, vm_guid, "InitiateReboot", reason, policy,
                                accept=_NOT_REBOOTING, declined=_NOT_REBOOTING)
    except CimInvalidMethod:  # a host that says 2016 but lacks the method
        log.warning("the host has no InitiateReboot; VM %s is reset instead", vm_guid)
        return False


async def _ask_guest(hv: HyperV, vm_guid: str, method: str, reason: str,
                     policy: jobs.WaitPolicy, *, accept: tuple[int, ...],
                     declined: tuple[int, ...]) -> bool:
    """Call ``method`` (Force, ``reason``) of the VM's shutdown component; True unless the
    VM or its component is missing (or went away meanwhile) or Hyper-V answered one of
    ``declined`` (``accept``: the codes other than 0 that are no failure). 1 query +
    1 call (just the query without a component)."""
    component = await shutdown_component(hv, vm_guid)
    if component is None:
        return False
    params: dict[str, InValue] = {"Force": True, "Reason": reason}
    try:
        result = await jobs.call(hv.cim, component, method, params, accept=accept,
                                 policy=policy)
    except CimNotFound:  # the VM went off (and its component with it) meanwhile
        return False
    return result.return_value not in declined


class Rebooted(Enum):
    """What ``reboot`` did."""

    GUEST = "guest"  # the guest OS was asked to restart and accepted
    RESET = "reset"  # the VM was reset hard (RequestStateChange 11)
    NOT_RUNNING = "not running"  # off, saved or paused: left as it is
    #: in a state Hyper-V cannot tell (Unknown, Other), which may run, and refused to
    #: reset: left as it is
    STATE_UNKNOWN = "state unknown"
    MISSING = "missing"  # no such VM


@dataclass(frozen=True)
class Reboot:
    """What ``reboot`` did (``done``) to ``vm``, the VM as it read it last: once Hyper-V
    had finished a change it was making (``settle``), so a VM found saving, pausing or
    stopping is named in the state that change left it in (saved, paused, off), not the
    one it read as when the reboot was asked (a saving VM reads as running); and a VM
    seen running whose reset Hyper-V refused (32775) in the state it was read in on that
    refusal (off, when it went off between the read and the reset), or, when Hyper-V had
    begun a change to it then (saving, pausing, stopping), the state that change left it
    in."""

    done: Rebooted
    vm: VmRef


async def reboot(
    hv: HyperV, vm: VmRef, reason: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> Reboot:
    """Restart a running VM: ask its guest OS to (``request_reboot``), else reset it.

    A guest that accepts the request restarts itself, as after KVM's ``virsh reboot``;
    whether it does is not confirmed: Hyper-V starts no job for it and says nothing when
    the guest is back, and a request the guest accepted is as far as a clean reboot can
    be followed. A guest that cannot be asked (no integration services, a host before
    Windows Server 2016, not ready, shutting down) or whose request fails is reset hard,
    as the agent always did. A VM that is not running is left as it is, and so is one whose
    state Hyper-V cannot tell when it refuses the reset (``STATE_UNKNOWN``). A VM Hyper-V is
    changing the state of (starting, stopping, ...) is waited for first (``settle``),
    and so is one whose reset Hyper-V refused as such a change began (saving, pausing). A
    VM being migrated live (``vm.migrating``, or a reset refused because its move began
    since) is left as it is, and VmMigrating says so (``vms.migrating_refusal``): Hyper-V
    takes no reset of it, and its guest would restart in the middle of the move.
    A repeat reboots again. A failed reset raises MethodFailed, JobFailed or JobTimeout and changes
    nothing. What was done comes with the VM as read last (``Reboot``: the state a change
    it waited for left it in). Round trips: the module's table.
    """
    settled = await settle(hv, vm, policy)
    if settled is None:
        return Reboot(Rebooted.MISSING, vm)
    vm = settled
    vms.refuse_if_migrating(vm, "the reboot")  # as read last: a move may begin as it settles
    if vm.power is PowerState.RUNNING:
        try:
            if await request_reboot(hv, vm.guid, reason, policy=policy):
                return Reboot(Rebooted.GUEST, vm)
            log.info("the guest of VM %s cannot be asked to restart; resetting it", vm.name)
        except AgentError as error:
            log.warning("guest reboot of VM %s refused (%s); resetting it", vm.name, error)
    reset = await _reset(hv, vm.guid, policy, confirm=vm.power is PowerState.RUNNING,
                         name=vm.name)
    if reset is None:
        return Reboot(Rebooted.MISSING, vm)
    if reset.result.return_value != ReturnCode.INVALID_STATE:
        return Reboot(Rebooted.RESET, vm)
    if reset.seen is not None:  # read again on the refusal: gone off since it was read,
        vm = vms.read_again(vm, reset.seen)
        # or being saved or paused, which reads as running: named once the change is done
        settled = await settle(hv, vm, policy)
        if settled is None:
            return Reboot(Rebooted.MISSING, vm)
        vm = settled
    return Reboot(Rebooted.STATE_UNKNOWN if vm.power is PowerState.UNKNOWN
                  else Rebooted.NOT_RUNNING, vm)


async def wait_until_off(
    hv: HyperV,
    vm_guid: str,
    policy: jobs.WaitPolicy,
    clock: Callable[[], float] = time.monotonic,
) -> bool | None:
    """Poll the VM's EnabledState until it is off; True if off in time. A VM Hyper-V is
    still shutting down (Shutting Down, Stopping) is not off yet: removing it then could
    be refused while it is torn down.

    Read-only: the VM is left in whatever state it is in when the wait ends, and False
    is returned when it is still not off at ``policy.timeout_s``. None when the VM is gone
    (at the first read, or since): it was not seen off, and from this host a VM a live
    move carried away looks the same as one removed. Safe to repeat. One get per poll,
    the interval growing as the policy says.
    """
    reached, found = await _poll_state(
        hv, vm_guid, policy, clock,
        lambda state: vms.power_state(state) is PowerState.STOPPED and not vms.is_stopping(state))
    return None if found is None else reached


async def _poll_state(
    hv: HyperV,
    vm_guid: str,
    policy: jobs.WaitPolicy,
    clock: Callable[[], float],
    until: Callable[[int | None], bool],
) -> tuple[bool, CimInstance | None]:
    """Get the VM until its EnabledState satisfies ``until`` or it is gone, at most
    ``policy.timeout_s`` and within the command's bound (``jobs.limited``): whether it did
    (a VM gone counts), and the VM as last read (None when gone). One get per poll, the
    interval growing as the policy says."""
    deadline = clock() + jobs.limited(policy)[0]
    interval = policy.first_poll_s
    while True:
        vm = await vms.get_vm(hv, vm_guid)
        if vm is None:
            return True, None
        if until(vm.integer("EnabledState")):
            return True, vm
        if clock() >= deadline:
            return False, vm
        await asyncio.sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * policy.backoff, policy.max_poll_s)


async def settle(
    hv: HyperV,
    vm: VmRef,
    policy: jobs.WaitPolicy,
    clock: Callable[[], float] = time.monotonic,
) -> VmRef | None:
    """``vm`` once Hyper-V has finished changing its state (``vm.changing``: starting,
    stopping, saving, ...), read again; None when it went away meanwhile. A VM in a
    steady state is returned as it is, with no round trip.

    Hyper-V takes no other state change, nor removes the VM, while one runs (32775), so a
    command that changes the VM waits it out first. Read-only. A VM still changing at
    ``policy.timeout_s``, or at the command's bound (``jobs.limited``), raises HyperVError
    naming the change and the bound. The VM read again says whether a live move of it
    began meanwhile (``VmRef.migrating``). One get per poll.
    """
    if vm.changing is None:
        return vm
    bound = jobs.limited(policy)[1]
    settled, found = await _poll_state(hv, vm.guid, policy, clock,
                                       lambda state: vms.changing(state) is None)
    if found is None:
        return None
    state = found.integer("EnabledState")
    if not settled:
        raise HyperVError(
            f"VM {vm.name} is still {vms.changing(state)} on this host after "
            f"{bound or f'{policy.timeout_s:g} s'}; Hyper-V takes no other change to it until that "
            "one is done: try again later")
    return vms.read_again(vm, found)


async def find_settled(hv: HyperV, name: str, policy: jobs.WaitPolicy) -> VmRef | None:
    """The VM named ``name`` (``vms.find_vm``) once Hyper-V is done changing its state
    (``settle``); None when there is none.

    For a command that changes a VM's devices, settings or place (attach, NICs, scale,
    a move): Hyper-V takes no such change while it starts, stops or saves the VM (32775),
    and a starting VM reads as running, a stopping one as off, so the command would
    choose a hot or a cold change wrongly. A VM still changing at ``policy.timeout_s``
    raises HyperVError naming the change. 1 query for a VM in a steady state.
    """
    vm = await vms.find_vm(hv, name)
    return None if vm is None else await settle(hv, vm, policy)


async def start(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> None:
    """Power the VM on (RequestStateChange 2) and wait for its job.

    A VM that is already running (or in a state that cannot change, return code 32775) is
    left as it is, so a repeat is safe. A missing VM raises CimNotFound. Afterwards the VM
    runs with its definition and disks unchanged. On failure (MethodFailed, JobFailed,
    JobTimeout) Hyper-V has not started it and nothing is cleaned up; a job Hyper-V lost is
    told by the VM's state (``vms.request_state``). 1 call + 1 job wait.
    """
    await vms.request_state(hv, vm_guid, RequestedState.ENABLED, policy=policy)


async def reset(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> bool:
    """Hard reset (RequestStateChange 11, no guest shutdown); True if the VM exists.

    Missing VM: nothing happens and False is returned. A VM in a state that cannot be
    reset (off, saved; return code 32775) is left as it is and True is returned. Afterwards
    a running VM has restarted with its definition and disks unchanged; a repeat resets
    it again. On failure (MethodFailed, JobFailed, JobTimeout) nothing is cleaned up.
    1 call (+ 1 job wait).
    """
    return await _reset(hv, vm_guid, policy) is not None


async def _reset(hv: HyperV, vm_guid: str, policy: jobs.WaitPolicy, *,
                 confirm: bool = False, name: str | None = None) -> vms.StateRequest | None:
    """``reset``: Hyper-V's result (return code 0, 4096 or 32775); None for a missing VM.
    With ``confirm`` (the VM was seen running) a 32775 of a VM being migrated live, or
    gone since, raises VmMigrating (``vms.request_state``) naming the VM ``name``; any
    other 32775 comes with the VM as read on it (``StateRequest.seen``)."""
    try:
        return await vms.request_state(hv, vm_guid, RequestedState.RESET, policy=policy,
                                       confirm=confirm, name=name)
    except CimNotFound:
        return None


async def stop_and_remove(hv: HyperV, vm: VmRef, policy: StopPolicy = StopPolicy()) -> bool:
    """Shut the VM down (gracefully when ``policy.graceful``), then delete its definition.

    A running VM is asked to shut down (no shutdown component: straight to the next
    step) and given ``policy.shutdown_wait`` to be off; one still on is turned off hard.
    Then DestroySystem removes the definition. Returns True if this call removed the VM,
    False when it was already gone (success: a repeat is safe). Afterwards the VM does not
    exist and its VHD/VHDX/ISO files are where they were: nothing here deletes a file.
    A failure raises HyperVError naming the step; a failed graceful request is not
    fatal (the hard power-off follows). If turning off fails the VM is unchanged; if
    the destroy fails it is left off but defined, and a repeat finishes the job. A VM
    Hyper-V is changing the state of (starting, stopping) is waited for first, within
    ``policy.shutdown_wait`` (``settle``), and then stopped as it then is. A VM being
    migrated live (``vm.migrating``) is left as it is, and VmMigrating says why
    (``vms.migrating_refusal``): the move carries it to another host, where a stop here
    cannot follow it, and a removal refused meanwhile would read as done (the VM gone from
    here) once the move ended. A move that begins after the lookup is told the same way
    from the refusals it brings (``vms.turn_off`` confirmed, ``vms.destroy``), and a VM
    that leaves the host while its guest shuts down, never seen off, fails the stop with
    VmMigrating (``vms.left_meanwhile``), no removal asked.
    """
    if vm.changing is not None:  # starting, stopping, ...: let Hyper-V finish first
        settled = await _step(f"wait for the VM to finish {vm.changing}", vm,
                              settle(hv, vm, policy.shutdown_wait))
        if settled is None:
            return False
        vm = settled
    vms.refuse_if_migrating(vm, "the stop")  # as read last: a move may begin as it settles
    off = vm.power is PowerState.STOPPED
    if policy.graceful and vm.power is PowerState.RUNNING:
        off = await _graceful(hv, vm, policy)
    if not off:
        turned_off = vms.turn_off(hv, vm.guid, policy=policy.job_wait, confirm=True,
                                  name=vm.name)
        if not await _step("turn off", vm, turned_off):
            return False
    return await _step("remove the definition", vm,
                       vms.destroy(hv, vm.guid, policy=policy.job_wait, name=vm.name))


async def _graceful(hv: HyperV, vm: VmRef, policy: StopPolicy) -> bool:
    """True when the guest shut down within the wait; False means "turn it off"."""
    try:
        asked = await request_shutdown(hv, vm.guid, policy.reason, policy=policy.job_wait)
    except AgentError as error:
        log.warning("guest shutdown of VM %s refused (%s); turning it off", vm.name, error)
        return False
    if not asked:
        log.info("VM %s cannot be shut down by its guest; turning it off", vm.name)
        return False
    off = await _step("wait for guest shutdown", vm,
                      wait_until_off(hv, vm.guid, policy.shutdown_wait))
    if off is None:
        # Gone while its guest shut down, never seen off: a live move begun outside this
        # agent (Move-VM; its own moves hold the VM's lock) carried it away running, or
        # another removed it. This host cannot tell the two apart, and the stop fails for
        # both (the choice): read as "already removed", it would have the management
        # server release a VM that runs on elsewhere, its resources and addresses given to
        # another; a VM really removed is missing from the next state report, and a repeat
        # of the stop finds none and succeeds.
        raise vms.left_meanwhile(vm.name, "the stop",
                                 "while being stopped, before its guest had shut it down")
    if off:
        return True
    log.warning("VM %s still running %g s after the shutdown request; turning it off",
                vm.name, policy.shutdown_wait.timeout_s)
    return False


async def _step(name: str, vm: VmRef, operation: Awaitable[T]) -> T:
    try:
        return await operation
    except VmMigrating:  # names the VM and what was not done
        raise
    except AgentError as error:
        raise HyperVError(f"stop of VM {vm.name} ({vm.guid}): {name} failed: {error}") from error
