"""The v2 state machine of Msvm_ComputerSystem.RequestStateChange."""

from __future__ import annotations

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import define_vm, failure, ok, request_state, state

RUNNING, OFF, SAVED, PAUSED = 2, 3, 6, 9


async def test_vm_starts_stops_pauses_and_saves_when_transitions_are_valid(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    assert await state(emulator, vm) == OFF
    for requested, expected in [(2, RUNNING), (9, PAUSED), (2, RUNNING), (6, SAVED),
                                (2, RUNNING), (11, RUNNING), (3, OFF), (10, RUNNING), (3, OFF)]:
        await ok(emulator, await request_state(emulator, vm, requested))
        assert await state(emulator, vm) == expected, (requested, expected)


@pytest.mark.parametrize(("setup", "requested"), [
    ((), 3),          # already off
    ((2,), 2),        # already running
    ((), 9),          # pausing an off VM
    ((), 11),         # resetting an off VM
    ((2, 6), 9),      # pausing a saved VM
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


async def test_start_fails_when_host_memory_is_exhausted(make_config: object) -> None:
    from collections.abc import Callable

    from hyperv_agent.emulator.config import EmulatorConfig

    assert callable(make_config)
    factory: Callable[..., EmulatorConfig] = make_config
    cim = EmulatorCim.open(factory(memory_mb=1536))
    try:
        first, second = await define_vm(cim, "a"), await define_vm(cim, "b")
        await ok(cim, await request_state(cim, first, 2))
        assert await failure(cim, await request_state(cim, second, 2)) == 32778
        assert await state(cim, second) == OFF
    finally:
        await cim.close()
