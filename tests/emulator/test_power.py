"""The v2 state machine of Msvm_ComputerSystem.RequestStateChange, and the guest asked
through Msvm_ShutdownComponent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import InValue, ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import CimInvalidMethod, CimNotFound
from tests.emulator.kit import (
    attach_vhdx,
    define_vm,
    failure,
    finished,
    ok,
    request_state,
    service,
    state,
)
from tests.emulator.migration_kit import attach_disk

RUNNING, OFF, SAVED, PAUSED = 2, 3, 6, 9


async def test_vm_starts_stops_pauses_and_saves_when_transitions_are_valid(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    assert await state(emulator, vm) == OFF
    for requested, expected in [(2, RUNNING), (9, PAUSED), (2, RUNNING), (6, SAVED),
                                (2, RUNNING), (11, RUNNING), (3, OFF), (10, RUNNING), (3, OFF),
                                (2, RUNNING), (9, PAUSED), (6, SAVED), (2, RUNNING),
                                (9, PAUSED), (3, OFF)]:
        await ok(emulator, await request_state(emulator, vm, requested))
        assert await state(emulator, vm) == expected, (requested, expected)


@pytest.mark.parametrize(("setup", "requested"), [
    ((), 3),          # already off
    ((2,), 2),        # already running
    ((), 9),          # pausing an off VM
    ((), 11),         # resetting an off VM
    ((2, 6), 9),      # pausing a saved VM
    ((2, 9), 9),      # pausing a paused VM
    ((2, 9), 11),     # resetting a paused VM
    ((2,), 4),        # the v1 "shut down" request
    ((2,), 12345),    # not a state at all
])
async def test_request_returns_32775_and_changes_nothing_when_invalid(
    emulator: EmulatorCim, setup: tuple[int, ...], requested: int
) -> None:
    vm = await define_vm(emulator)
    for step in setup:
        await ok(emulator, await request_state(emulator, vm, step))
    before = await state(emulator, vm)
    result = await request_state(emulator, vm, requested)
    assert result.return_value == 32775
    assert result.path("Job") is None
    assert await state(emulator, vm) == before


async def test_runtime_components_exist_only_while_vm_runs(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    guid = vm.key("Name")
    query = wql.select("Msvm_ShutdownComponent", wql.eq("SystemName", guid))
    assert await emulator.query(query) == []
    await ok(emulator, await request_state(emulator, vm, 2))
    assert len(await emulator.query(query)) == 1
    kvp = await emulator.query(wql.select("Msvm_KvpExchangeComponent", wql.eq("SystemName", guid)))
    assert len(kvp) == 1
    await ok(emulator, await request_state(emulator, vm, 3))
    assert await emulator.query(query) == []


async def test_graceful_shutdown_turns_vm_off_when_guest_cooperates(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, 2))
    component = (await emulator.query(wql.select(
        "Msvm_ShutdownComponent", wql.eq("SystemName", vm.key("Name")))))[0]
    assert component.path is not None
    result = await emulator.invoke(component.path, "InitiateShutdown",
                                   {"Force": True, "Reason": "test"})
    assert result.return_value == 0
    assert await state(emulator, vm) == OFF


async def test_graceful_shutdown_is_ignored_when_guest_ignores_it(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "stubborn")
    emulator.faults.ignore_shutdown("stubborn")
    await ok(emulator, await request_state(emulator, vm, 2))
    component = (await emulator.query(wql.select(
        "Msvm_ShutdownComponent", wql.eq("SystemName", vm.key("Name")))))[0]
    assert component.path is not None
    result = await emulator.invoke(component.path, "InitiateShutdown",
                                   {"Force": False, "Reason": "test"})
    assert result.return_value == 0
    assert await state(emulator, vm) == RUNNING


async def _shutdown_component(emulator: EmulatorCim, vm: ObjectPath) -> ObjectPath:
    found = await emulator.query(wql.select("Msvm_ShutdownComponent",
                                            wql.eq("SystemName", vm.key("Name"))))
    assert len(found) == 1 and found[0].path is not None
    return found[0].path


async def _on_time_ms(emulator: EmulatorCim, vm: ObjectPath) -> int:
    return (await emulator.get(vm)).integer("OnTimeInMilliseconds") or 0


async def test_guest_reboot_keeps_vm_running_and_restarts_its_run_when_guest_cooperates(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    await asyncio.sleep(0.05)
    assert await _on_time_ms(emulator, vm) >= 50
    result = await emulator.invoke(await _shutdown_component(emulator, vm), "InitiateReboot",
                                   {"Force": True, "Reason": "test"})
    # Hyper-V starts no job for it: the guest restarts itself.
    assert (result.return_value, result.path("Job")) == (0, None)
    assert await state(emulator, vm) == RUNNING
    assert await _on_time_ms(emulator, vm) < 50


async def test_guest_reboot_changes_nothing_when_guest_ignores_it(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "stubborn")
    emulator.faults.ignore_shutdown("stubborn")
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    await asyncio.sleep(0.05)
    result = await emulator.invoke(await _shutdown_component(emulator, vm), "InitiateReboot",
                                   {"Force": False, "Reason": "test"})
    assert result.return_value == 0
    assert await state(emulator, vm) == RUNNING and await _on_time_ms(emulator, vm) >= 50


@pytest.mark.parametrize("method", ["InitiateReboot", "InitiateShutdown"])
async def test_guest_request_returns_32780_when_vm_is_paused(emulator: EmulatorCim,
                                                             method: str) -> None:
    # A paused VM runs no guest code: its guest cannot be asked to shut down or restart.
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    await ok(emulator, await request_state(emulator, vm, PAUSED))
    result = await emulator.invoke(await _shutdown_component(emulator, vm), method,
                                   {"Force": True, "Reason": "test"})
    assert (result.return_value, result.path("Job")) == (32780, None)
    assert await state(emulator, vm) == PAUSED


# --- a request the guest has accepted, pending -------------------------------------------

GUEST_S = 0.3  # the guest's time to act (real seconds: its timer runs on the event loop)


async def _pending_request(make_config: Callable[..., EmulatorConfig], method: str,
                           between: tuple[int, ...],
                           after_due: tuple[int, ...] = ()) -> tuple[int, int]:
    """The guest of a running VM asked by ``method`` takes ``GUEST_S``; meanwhile the VM
    goes through the state changes ``between``; when ``after_due`` is given, the guest's
    time then passes (the VM stays as ``between`` left it) before the VM goes through
    those. The VM then runs 10 s (on the test's clock). The VM's state and
    OnTimeInMilliseconds once the guest's time is past."""
    clock = _Clock()
    cim = EmulatorCim.open(make_config(async_jobs=False, guest_shutdown_s=GUEST_S), clock)
    try:
        vm = await define_vm(cim)
        await ok(cim, await request_state(cim, vm, RUNNING))
        asked = await cim.invoke(await _shutdown_component(cim, vm), method,
                                 {"Force": False, "Reason": "test"})
        assert asked.return_value == 0
        for step in between:
            await ok(cim, await request_state(cim, vm, step))
        if after_due:
            frozen = await state(cim, vm)
            await asyncio.sleep(2 * GUEST_S)  # the request comes due meanwhile
            assert await state(cim, vm) == frozen
            for step in after_due:
                await ok(cim, await request_state(cim, vm, step))
        assert await state(cim, vm) == RUNNING  # the guest has not acted yet
        clock.now += 10.0
        for _ in range(int(3 * GUEST_S / 0.05)):  # the guest's time, and some more
            if await state(cim, vm) != RUNNING:
                break
            await asyncio.sleep(0.05)
        return await state(cim, vm), await _on_time_ms(cim, vm)
    finally:
        await cim.close()


@pytest.mark.parametrize("between", [(OFF, RUNNING), (11,)], ids=["turned-off-and-on", "reset"])
@pytest.mark.parametrize("method", ["InitiateShutdown", "InitiateReboot"])
async def test_a_pending_guest_request_dies_with_the_guest_that_accepted_it(
    make_config: Callable[..., EmulatorConfig], method: str, between: tuple[int, ...],
) -> None:
    """The request lives in the guest that accepted it: a VM turned off (a graceful stop
    whose guest is slow, ended by a turn off) and started again, or reset, boots a guest
    that knows nothing of it. The new run goes on, neither shut down nor restarted."""
    assert await _pending_request(make_config, method, between) == (RUNNING, 10_000)


@pytest.mark.parametrize(("method", "after"), [("InitiateShutdown", (OFF, 0)),
                                               ("InitiateReboot", (RUNNING, 0))])
async def test_a_guest_restored_from_its_saved_state_goes_on_with_its_request(
    make_config: Callable[..., EmulatorConfig], method: str, after: tuple[int, int],
) -> None:
    """A saved state holds the guest's memory, the request it was carrying out
    included: restored, the guest goes on and shuts down (the VM off), or restarts (its
    run begun again)."""
    assert await _pending_request(make_config, method, (SAVED, RUNNING)) == after


@pytest.mark.parametrize(("frozen", "thawed"), [((PAUSED,), (RUNNING,)),
                                                ((SAVED,), (RUNNING,)),
                                                ((PAUSED, SAVED), (RUNNING,))],
                         ids=["paused-resumed", "saved-restored", "paused-saved-restored"])
@pytest.mark.parametrize(("method", "after"), [("InitiateShutdown", (OFF, 0)),
                                               ("InitiateReboot", (RUNNING, 0))])
async def test_a_guest_frozen_when_its_request_comes_due_carries_it_out_once_resumed(
    make_config: Callable[..., EmulatorConfig], method: str, after: tuple[int, int],
    frozen: tuple[int, ...], thawed: tuple[int, ...],
) -> None:
    """A paused or saved VM's guest is frozen in the middle of its shutdown or restart:
    the request does not come due while it is frozen; resumed, or restored from the
    saved state (the same boot), the guest goes on and shuts down, or restarts."""
    assert await _pending_request(make_config, method, frozen, thawed) == after


async def test_a_resumed_guest_needs_only_the_rest_of_its_time(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The guest had worked 0.9 s (on the emulator's clock) of the 1.5 s its shutdown
    takes when its VM was paused: resumed, it is off after the 0.6 s left (real time:
    its timer runs on the event loop), not after 1.5 s more."""
    clock = _Clock()
    cim = EmulatorCim.open(make_config(async_jobs=False, guest_shutdown_s=1.5), clock)
    try:
        vm = await define_vm(cim)
        await ok(cim, await request_state(cim, vm, RUNNING))
        asked = await cim.invoke(await _shutdown_component(cim, vm), "InitiateShutdown",
                                 {"Force": False, "Reason": "test"})
        assert asked.return_value == 0
        clock.now += 0.9
        await ok(cim, await request_state(cim, vm, PAUSED))
        clock.now += 60.0
        await asyncio.sleep(1.6)  # past the time first asked of the guest: paused
        assert await state(cim, vm) == PAUSED
        await ok(cim, await request_state(cim, vm, RUNNING))
        resumed = asyncio.get_running_loop().time()
        while await state(cim, vm) == RUNNING and (
                asyncio.get_running_loop().time() - resumed < 3.0):
            await asyncio.sleep(0.05)
        assert await state(cim, vm) == OFF
        assert asyncio.get_running_loop().time() - resumed < 1.2
    finally:
        await cim.close()


@pytest.mark.parametrize("method", ["InitiateShutdown", "InitiateReboot"])
async def test_a_saved_state_discarded_takes_the_guests_request_with_it(
    make_config: Callable[..., EmulatorConfig], method: str,
) -> None:
    """A saved VM turned off (its saved state discarded) and started again boots a
    guest that knows nothing of the request the saved one was carrying out."""
    assert await _pending_request(make_config, method, (SAVED,), (OFF, RUNNING)) == (
        RUNNING, 10_000)


#: The guest's time to shut down when its host is opened again (on the test's clock): far
#: longer than a test waits, so a guest timed afresh from the start never acts in one.
SLOW_GUEST_S = 600.0


async def _asked_to_shut_down(cim: EmulatorCim) -> ObjectPath:
    """A running VM of ``cim`` whose guest was asked to shut down (and is at it)."""
    vm = await define_vm(cim)
    await ok(cim, await request_state(cim, vm, RUNNING))
    asked = await cim.invoke(await _shutdown_component(cim, vm), "InitiateShutdown",
                             {"Force": False, "Reason": "test"})
    assert asked.return_value == 0
    return vm


async def _off_within(cim: EmulatorCim, vm: ObjectPath, seconds: float,
                      since: float | None = None) -> float:
    """The real seconds (on the event loop's clock) from ``since`` (default: now) until
    ``vm`` is off, waited for at most ``seconds``."""
    loop = asyncio.get_running_loop()
    began = loop.time() if since is None else since
    while await state(cim, vm) != OFF:
        assert loop.time() - began < seconds, "the guest never shut its VM down"
        await asyncio.sleep(0.05)
    return loop.time() - began


async def test_a_guest_shutting_down_goes_on_when_its_host_is_opened_again(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The guest's shutdown is its own work: the emulated host's process ending (the
    agent restarted) does not stop it. Opened again on its state directory, the host
    finds the guest 1 s from done (on its clock) and the VM off about then, not after
    the guest's whole time again, nor never."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    cim = EmulatorCim.open(config, clock)
    try:
        vm = await _asked_to_shut_down(cim)
        clock.now += SLOW_GUEST_S - 1.0
    finally:
        await cim.close()
    opening = asyncio.get_running_loop().time()
    again = EmulatorCim.open(config, clock)
    try:
        assert await state(again, vm) == RUNNING  # the guest has 1 s of work left
        assert await _off_within(again, vm, 15.0, since=opening) >= 0.9
    finally:
        await again.close()


async def test_a_closed_host_s_guest_timers_do_not_act_and_go_on_when_it_opens_again(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Closing the host (the agent stopping) takes the timers of its guests' requests
    with it: the guest's time passing in this process touches nothing of the closed
    host (its VM, in what it left in memory, still runs), and the host opened again on
    its state directory carries the request out (its guest went on meanwhile)."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=0.2)
    cim = EmulatorCim.open(config, clock)
    try:
        vm = await _asked_to_shut_down(cim)
    finally:
        await cim.close()
    clock.now += 1.0
    await asyncio.sleep(0.5)  # the guest's timer was due 0.3 s ago
    left = cim.host.store.get(vm)
    assert left is not None and left["EnabledState"] == RUNNING
    again = EmulatorCim.open(config, clock)
    try:
        await _off_within(again, vm, 5.0)
    finally:
        await again.close()


def _asked_before_a_restart(config: EmulatorConfig, clock: _Clock) -> ObjectPath:
    """A running VM whose guest was asked to shut down, on a host opened on ``config``
    and closed again, in an event loop of its own (as a process that ended)."""
    async def asked() -> ObjectPath:
        cim = EmulatorCim.open(config, clock)
        try:
            return await _asked_to_shut_down(cim)
        finally:
            await cim.close()

    return asyncio.run(asked())


def test_a_host_opened_before_its_event_loop_runs_times_its_guests_once_it_does(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """``serve`` opens the emulated host before its event loop runs: the guest found 1 s
    from done is timed once the loop hands the host work, for what is left — not carried
    out as the host opens, a shutdown the MS waits on ending early."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    vm = _asked_before_a_restart(config, clock)
    clock.now += SLOW_GUEST_S - 1.0
    opening = asyncio.new_event_loop()
    began = opening.time()
    again = EmulatorCim.open(config, clock)  # no event loop runs yet

    async def served() -> float:
        try:
            assert await state(again, vm) == RUNNING  # the guest has 1 s of work left
            return await _off_within(again, vm, 15.0, since=began)
        finally:
            await again.close()

    try:
        assert opening.run_until_complete(served()) >= 0.9
    finally:
        opening.close()


def test_a_guest_done_before_the_host_s_loop_first_runs_is_done_at_its_first_call(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Opened before its event loop runs with a guest 0.2 s from done, the host first
    handed work 0.5 s later (the management server's first command after the agent
    restarted): that call sees the VM the guest shut down, not still running, as every
    later one does."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    vm = _asked_before_a_restart(config, clock)
    clock.now += SLOW_GUEST_S - 0.2
    again = EmulatorCim.open(config, clock)  # no event loop runs yet
    time.sleep(0.5)  # real time: the guest's 0.2 s are over
    clock.now += 0.5

    async def first_state() -> int:
        try:
            return await state(again, vm)
        finally:
            await again.close()

    assert asyncio.run(first_state()) != RUNNING


async def test_a_guest_done_while_its_host_was_down_has_its_vm_off_once_it_opens(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The guest finished shutting down while the host's process was down: opened
    again, the host stops the VM at once."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    cim = EmulatorCim.open(config, clock)
    try:
        vm = await _asked_to_shut_down(cim)
    finally:
        await cim.close()
    clock.now += 2 * SLOW_GUEST_S
    again = EmulatorCim.open(config, clock)
    try:
        await _off_within(again, vm, 5.0)
    finally:
        await again.close()


async def test_a_host_opened_again_leaves_a_paused_guest_frozen_until_resumed(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Two guests shutting down when the host's process ends, one of them paused with
    1 s of work left: opened again, the host has the running one go on (off once its
    time is up) and keeps the paused one frozen however long it waits, until resumed,
    when it needs the 1 s left."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    cim = EmulatorCim.open(config, clock)
    try:
        running = await _asked_to_shut_down(cim)
        paused = await _asked_to_shut_down(cim)
        clock.now += SLOW_GUEST_S - 1.0
        await ok(cim, await request_state(cim, paused, PAUSED))
    finally:
        await cim.close()
    clock.now += 2 * SLOW_GUEST_S
    again = EmulatorCim.open(config, clock)
    try:
        await _off_within(again, running, 5.0)
        await asyncio.sleep(0.5)
        assert await state(again, paused) == PAUSED
        resuming = asyncio.get_running_loop().time()
        await ok(again, await request_state(again, paused, RUNNING))
        assert await state(again, paused) == RUNNING
        assert await _off_within(again, paused, 15.0, since=resuming) >= 0.9
    finally:
        await again.close()


async def test_a_host_that_only_reads_another_s_state_times_no_guest(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A reader of a state directory another process holds shows what that process
    stored: it does not act for the guests, whose timers live in the holder."""
    clock = _Clock()
    config = make_config(async_jobs=False, guest_shutdown_s=SLOW_GUEST_S)
    holder = EmulatorCim.open(config, clock)
    try:
        vm = await _asked_to_shut_down(holder)
        clock.now += 2 * SLOW_GUEST_S  # the guest is done, on the holder's timer
        reader = EmulatorCim.open(replace(config, read_if_held=True), clock)
        try:
            assert reader.host.held_elsewhere is not None
            await asyncio.sleep(0.5)
            assert await state(reader, vm) == RUNNING
        finally:
            await reader.close()
    finally:
        await holder.close()


async def test_guest_reboot_finds_no_component_when_vm_is_off(emulator: EmulatorCim) -> None:
    # The shutdown component lives only while the VM runs: the path of a stopped VM's
    # names no instance.
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    component = await _shutdown_component(emulator, vm)
    await ok(emulator, await request_state(emulator, vm, OFF))
    with pytest.raises(CimNotFound):
        await emulator.invoke(component, "InitiateReboot", {"Force": True, "Reason": "test"})
    assert await state(emulator, vm) == OFF


async def test_guest_reboot_is_no_method_when_host_is_2012_r2(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    # InitiateReboot is new in Windows Server 2016 ("Minimum supported server").
    cim = EmulatorCim.open(make_config(os_version="6.3.9600"))
    try:
        vm = await define_vm(cim)
        await ok(cim, await request_state(cim, vm, RUNNING))
        component = await _shutdown_component(cim, vm)
        with pytest.raises(CimInvalidMethod):
            await cim.invoke(component, "InitiateReboot", {"Force": True, "Reason": "test"})
        declared = await cim.get_class("Msvm_ShutdownComponent")
        assert declared.method("InitiateShutdown").name == "InitiateShutdown"
        with pytest.raises(CimInvalidMethod):
            declared.method("InitiateReboot")
        assert cim.round_trips()["invoke:InitiateReboot"] == 0
        assert await state(cim, vm) == RUNNING
    finally:
        await cim.close()


async def test_guest_reboot_is_declared_when_host_is_2016_or_later(
    emulator: EmulatorCim,
) -> None:
    declared = await emulator.get_class("Msvm_ShutdownComponent")
    parameters = declared.method("InitiateReboot").parameters
    assert [(p.name, p.cim_type, p.direction) for p in parameters] == [
        ("Force", "boolean", "in"), ("Reason", "string", "in")]


async def test_start_fails_when_host_memory_is_exhausted(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(memory_mb=1536))
    try:
        first, second = await define_vm(cim, "a"), await define_vm(cim, "b")
        await ok(cim, await request_state(cim, first, 2))
        assert await failure(cim, await request_state(cim, second, 2)) == 32778
        assert await state(cim, second) == OFF
    finally:
        await cim.close()


def _template(emulator: EmulatorCim) -> Path:
    folder = emulator.host.config.drive_root("C") / "disks"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(folder / "template.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    return folder / "template.vhdx"


def _remove(template: Path) -> None:
    template.unlink()


def _replace(template: Path) -> None:  # the template downloaded again under its name
    template.unlink()
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)


def _write(template: Path) -> None:  # the template's data changed under its clones
    vhd.write_data(template, 0, b"a changed template")


@pytest.mark.parametrize(("change", "code", "expected"), [
    (_remove, 32779, "The chain of virtual hard disks is broken. The system cannot locate "
                     "the parent virtual hard disk for the differencing disk. (0xC03A000D)"),
    (_replace, 32768, "The chain of virtual hard disks is corrupted. There is a mismatch in "
                      "the identifiers of the parent virtual hard disk and differencing disk. "
                      "(0xC03A000E)"),
    (_write, 32768, "There is a mismatch in the identifiers of the parent virtual hard disk "
                    "and differencing disk. (0xC03A000E)"),
], ids=["parent-missing", "parent-replaced", "parent-written"])
async def test_start_fails_and_starts_nothing_when_a_disks_chain_of_parents_is_broken(
    emulator: EmulatorCim, change: Callable[[Path], None], code: int, expected: str,
) -> None:
    """A linked clone whose template is gone, or is no longer the disk it was made from:
    Hyper-V does not start the VM, its job naming the broken link."""
    template = _template(emulator)
    vm = await define_vm(emulator, "linked")
    await attach_vhdx(emulator, vm, emulator.host.config.drive_root("C"),
                      parent="C:\\disks\\template.vhdx")
    await ok(emulator, await request_state(emulator, vm, 2))
    await ok(emulator, await request_state(emulator, vm, 3))
    change(template)

    result = await request_state(emulator, vm, 2)
    job = await finished(emulator, result)
    assert await failure(emulator, result) == code
    assert job is not None
    description = str(job["ErrorDescription"])
    assert description.startswith("'linked' failed to start: failed to open the attachment "
                                  "C:\\disks\\root.vhdx: "), description
    assert description.endswith(expected), description
    assert await state(emulator, vm) == OFF
    assert (await emulator.get(vm))["ProcessID"] is None


async def _clone_through_the_service(emulator: EmulatorCim, folder: str) -> None:
    """C:\\<folder>\\template.vhdx and its linked clone C:\\<folder>\\clone.vhdx, made
    by CreateVirtualHardDisk as a deployment makes them."""
    (emulator.host.config.drive_root("C") / folder).mkdir(parents=True)
    ims = await service(emulator, "Msvm_ImageManagementService")
    for name, kind, parent in (("template", 3, None), ("clone", 4, f"C:\\{folder}\\template.vhdx")):
        settings = (await emulator.spawn("Msvm_VirtualHardDiskSettingData")).updated(
            Path=f"C:\\{folder}\\{name}.vhdx", Format=3, Type=kind, MaxInternalSize=1 << 30,
            ParentPath=parent)
        await ok(emulator, await emulator.invoke(ims, "CreateVirtualHardDisk",
                                                 {"VirtualDiskSettingData": settings}))


@pytest.mark.parametrize("together", [True, False], ids=["with-its-template", "alone"])
async def test_a_linked_clone_moved_to_another_folder_starts_only_with_its_template_beside(
    emulator: EmulatorCim, together: bool,
) -> None:
    """Hyper-V finds a parent by the clone's relative locator first ([MS-VHDX]): a
    template and its clone moved together start; a clone moved alone, whose template is
    neither beside it nor where it was made, does not."""
    await _clone_through_the_service(emulator, "made")
    drive_c = emulator.host.config.drive_root("C")
    (drive_c / "moved").mkdir()
    (drive_c / "made" / "clone.vhdx").rename(drive_c / "moved" / "clone.vhdx")
    (drive_c / "made" / "template.vhdx").rename(
        drive_c / ("moved" if together else "") / "template.vhdx")
    vm = await define_vm(emulator, "moved")
    await attach_disk(emulator, vm, "C:\\moved\\clone.vhdx")

    result = await request_state(emulator, vm, 2)
    if together:
        await ok(emulator, result)
        assert await state(emulator, vm) == RUNNING
    else:
        assert await failure(emulator, result) == 32779
        assert await state(emulator, vm) == OFF


async def test_guest_cannot_be_asked_when_it_lacks_integration_services(
    emulator: EmulatorCim,
) -> None:
    # Hyper-V keeps the components of a running VM, but a guest without the services
    # answers nothing: No Contact, 32780 (not ready), no heartbeat.
    vm = await define_vm(emulator, "bare")
    emulator.faults.lack_integration_services("bare")
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    guid = vm.key("Name")
    for class_name in ("Msvm_ShutdownComponent", "Msvm_KvpExchangeComponent"):
        (component,) = await emulator.query(wql.select(class_name, wql.eq("SystemName", guid)))
        assert (component["OperationalStatus"], component["StatusDescriptions"]) == (
            (12,), ("No Contact",)), class_name
    component_path = await _shutdown_component(emulator, vm)
    for method in ("InitiateShutdown", "InitiateReboot"):
        result = await emulator.invoke(component_path, method, {"Force": True, "Reason": "t"})
        assert (result.return_value, result.path("Job")) == (32780, None), method
    assert await state(emulator, vm) == RUNNING
    summary = (await emulator.invoke(await service(emulator), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [104]})).instances("SummaryInformation")
    assert [s["Heartbeat"] for s in summary] == [12]


async def test_guest_answers_when_it_has_integration_services(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "equipped")
    emulator.faults.lack_integration_services("another-vm")
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    (component,) = await emulator.query(wql.select(
        "Msvm_ShutdownComponent", wql.eq("SystemName", vm.key("Name"))))
    assert (component["OperationalStatus"], component["StatusDescriptions"]) == ((2,), ("OK",))
    summary = (await emulator.invoke(await service(emulator), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [104]})).instances("SummaryInformation")
    assert [s["Heartbeat"] for s in summary] == [2]


# --- transitional states while a state change's job runs ---------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def _summary_state(cim: EmulatorCim, vm: ObjectPath) -> int:
    answer = await cim.invoke(await service(cim), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [0, 100]})
    (summary,) = [s for s in answer.instances("SummaryInformation")
                  if s["Name"] == vm.key("Name")]
    return summary.integer("EnabledState") or 0


@pytest.mark.parametrize(("setup", "requested", "shown", "final"), [
    ((), 2, 10, RUNNING),            # Starting
    ((2,), 3, 4, OFF),               # Stopping (v2 4, Get-VM's "Stopping")
    ((2,), 6, 32773, SAVED),         # Saving
    ((2,), 9, 32776, PAUSED),        # Pausing
    ((2, 9), 2, 32777, RUNNING),     # Resuming
    ((2, 6), 2, 10, RUNNING),        # a restore from saved shows Starting
])
async def test_vm_shows_its_transitional_state_while_the_change_runs_then_the_new_one(
    make_config: Callable[..., EmulatorConfig], setup: tuple[int, ...], requested: int,
    shown: int, final: int,
) -> None:
    clock = _Clock()
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=2.0)), clock)
    try:
        vm = await define_vm(cim)
        for step in setup:
            await request_state(cim, vm, step)
            clock.now += 2.0
        assert (await request_state(cim, vm, requested)).return_value == 4096
        seen = await cim.get(vm)
        assert (seen["EnabledState"], seen["RequestedState"]) == (shown, requested)
        assert await _summary_state(cim, vm) == shown
        assert [v["Name"] for v in await cim.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("EnabledState", shown)))] == [vm.key("Name")]
        # any other change meanwhile is refused at once, as is removing the VM
        for other in (2, 3, 6, 9, 11):
            assert (await request_state(cim, vm, other)).return_value == 32775
        destroy = await cim.invoke(await service(cim), "DestroySystem", {"AffectedSystem": vm})
        clock.now += 2.0
        assert await failure(cim, destroy) == 32775
        seen = await cim.get(vm)
        assert (seen["EnabledState"], seen["RequestedState"]) == (final, 12)
        assert await _summary_state(cim, vm) == final
    finally:
        await cim.close()


async def test_a_starting_vm_s_guest_cannot_be_asked_to_shut_down_until_it_runs(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = _Clock()
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=2.0)), clock)
    try:
        vm = await define_vm(cim)
        await request_state(cim, vm, 2)
        component = (await cim.query(wql.select("Msvm_ShutdownComponent", wql.eq(
            "SystemName", vm.key("Name")))))[0].path
        assert component is not None
        asked: dict[str, InValue] = {"Force": True, "Reason": "test"}
        assert (await cim.invoke(component, "InitiateShutdown", asked)).return_value == 32780
        clock.now += 2.0
        assert (await cim.invoke(component, "InitiateShutdown", asked)).return_value == 0
    finally:
        await cim.close()


async def test_no_transitional_state_is_shown_when_jobs_take_no_time(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, 2))
    assert (await emulator.get(vm))["EnabledState"] == RUNNING


@pytest.mark.parametrize("guest_s", [0.0, 0.2])
async def test_a_vm_its_guest_shuts_down_shows_stopping_while_it_is_torn_down(
    make_config: Callable[..., EmulatorConfig], guest_s: float,
) -> None:
    """A guest shutting itself down (asked through its shutdown component) leaves the VM
    Stopping for the job time, as a turn off does: no other change, nor a removal, is
    taken meanwhile."""
    clock = _Clock()
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=2.0),
                                       guest_shutdown_s=guest_s), clock)
    try:
        vm = await define_vm(cim)
        await request_state(cim, vm, 2)
        clock.now += 2.0
        component = await _shutdown_component(cim, vm)
        asked: dict[str, InValue] = {"Force": False, "Reason": "test"}
        assert (await cim.invoke(component, "InitiateShutdown", asked)).return_value == 0
        if guest_s:
            assert await state(cim, vm) == RUNNING  # the guest is shutting its OS down
            for _ in range(100):  # the guest acts after guest_s of the loop's time
                if await state(cim, vm) != RUNNING:
                    break
                await asyncio.sleep(0.05)
        seen = await cim.get(vm)
        assert (seen["EnabledState"], seen["RequestedState"]) == (4, 12)
        assert await _summary_state(cim, vm) == 4
        assert (await request_state(cim, vm, 2)).return_value == 32775
        destroy = await cim.invoke(await service(cim), "DestroySystem", {"AffectedSystem": vm})
        clock.now += 2.0
        assert await failure(cim, destroy) == 32775
        assert await state(cim, vm) == OFF
        assert (await request_state(cim, vm, 2)).return_value == 4096
    finally:
        await cim.close()


# --- run time -------------------------------------------------------------------------


async def _up_time_ms(cim: EmulatorCim, vm: ObjectPath) -> int:
    answer = await cim.invoke(await service(cim), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [105]})
    (summary,) = [s for s in answer.instances("SummaryInformation")
                  if s["Name"] == vm.key("Name")]
    return summary.integer("UpTime") or 0


async def test_on_time_leaves_out_the_time_the_vm_was_paused(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """OnTimeInMilliseconds is the time "since the VM was last turned on, reset, or
    restored" and "excludes the time the VM was in the paused state": a VM that ran 10 s,
    was paused 100 s, then ran 5 s more, has been on 15 s, however often it was paused;
    a reset starts its count again with no paused time. UpTime keeps its meaning here
    (the time since the VM booted, pauses included)."""
    clock = _Clock()
    cim = EmulatorCim.open(make_config(async_jobs=False), clock)
    try:
        vm = await define_vm(cim)
        await ok(cim, await request_state(cim, vm, RUNNING))
        clock.now += 10.0
        await ok(cim, await request_state(cim, vm, PAUSED))
        clock.now += 100.0
        assert await _on_time_ms(cim, vm) == 10_000  # a paused VM's count stands still
        await ok(cim, await request_state(cim, vm, RUNNING))
        clock.now += 5.0
        assert await _on_time_ms(cim, vm) == 15_000
        assert await _up_time_ms(cim, vm) == 115_000
        await ok(cim, await request_state(cim, vm, PAUSED))
        clock.now += 7.0
        await ok(cim, await request_state(cim, vm, RUNNING))
        clock.now += 1.0
        assert await _on_time_ms(cim, vm) == 16_000
        await ok(cim, await request_state(cim, vm, 11))  # reset
        clock.now += 3.0
        assert await _on_time_ms(cim, vm) == 3_000
        await ok(cim, await request_state(cim, vm, PAUSED))
        clock.now += 50.0
        await ok(cim, await request_state(cim, vm, SAVED))
        await ok(cim, await request_state(cim, vm, RUNNING))  # restored
        clock.now += 2.0
        assert await _on_time_ms(cim, vm) == 2_000
    finally:
        await cim.close()


# --- worker processes ---------------------------------------------------------------------


async def _process_id(cim: EmulatorCim, vm: ObjectPath) -> int | None:
    return (await cim.get(vm)).integer("ProcessID")


async def test_each_run_has_a_worker_process_id_of_its_own(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """ProcessID "can be used to uniquely identify the instance of Vmwp.exe": the VMs
    running on a host hold different ids, a VM's next run has another one, and Windows'
    process ids are multiples of 4. The count goes on when the host is opened again, so
    a VM started then takes no id a VM still running holds, nor a Win32_Process's."""
    cim = EmulatorCim.open(make_config(async_jobs=False))
    try:
        vms = [await define_vm(cim, f"vm{index}") for index in range(3)]
        for vm in vms:
            await ok(cim, await request_state(cim, vm, RUNNING))
        ids = [await _process_id(cim, vm) for vm in vms]
        await ok(cim, await request_state(cim, vms[0], OFF))
        assert await _process_id(cim, vms[0]) is None
        await ok(cim, await request_state(cim, vms[0], RUNNING))
        ids.append(await _process_id(cim, vms[0]))
        await ok(cim, await request_state(cim, vms[1], SAVED))
        await ok(cim, await request_state(cim, vms[1], RUNNING))
        ids.append(await _process_id(cim, vms[1]))
        await ok(cim, await request_state(cim, vms[2], 11))  # a reset keeps the process
        assert await _process_id(cim, vms[2]) == ids[2]
        created = await cim.invoke(ObjectPath("Win32_Process", (), "root\\cimv2"), "Create",
                                   {"CommandLine": "cmd.exe /c exit"})
        ids.append(int(str(created["ProcessId"])))
    finally:
        await cim.close()
    again = EmulatorCim.open(make_config(async_jobs=False))
    try:
        late = await define_vm(again, "late")
        await ok(again, await request_state(again, late, RUNNING))
        ids.append(await _process_id(again, late))
    finally:
        await again.close()
    assert all(isinstance(i, int) and i > 0 and i % 4 == 0 for i in ids), ids
    assert len(set(ids)) == len(ids), ids


async def test_a_started_vm_takes_no_process_id_another_vm_holds(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A VM running since an earlier version of the emulator may hold any id, the one the
    host's count comes to next among them: a VM started then takes another."""
    cim = EmulatorCim.open(make_config(async_jobs=False))
    try:
        first, second = await define_vm(cim, "first"), await define_vm(cim, "second")
        await ok(cim, await request_state(cim, first, RUNNING))
        held = await _process_id(cim, first)
        assert held is not None
        txn = cim.host.store.transaction()
        host = txn.edit(cim.host.host_path())
        assert host is not None
        host.meta["last_process_id"] = held - 4  # the count comes to the held id next
        txn.commit()
        await ok(cim, await request_state(cim, second, RUNNING))
        assert await _process_id(cim, second) == held + 4
    finally:
        await cim.close()
