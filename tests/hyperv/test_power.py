"""hyperv.power: guest shutdown, the bounded wait, reset and the stop sequence, on the
emulated host."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim.api import CimInstance, MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import HyperVError, VmMigrating
from hyperv_agent.hyperv import host, jobs, power, vms
from hyperv_agent.hyperv.vms import PowerState, VmRef
from tests.emulator.kit import (
    attach_vhdx,
    define_vm,
    ok,
    request_state,
    state,
)
from tests.emulator.migration_kit import build_vm, migrate, new_disk
from tests.sessions import hv

FAST = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.02, max_poll_s=0.05)
JOBS = jobs.WaitPolicy(timeout_s=5.0, first_poll_s=0.01, max_poll_s=0.05)
GRACEFUL = power.StopPolicy(shutdown_wait=FAST, job_wait=JOBS)
FORCED = power.StopPolicy(graceful=False, shutdown_wait=FAST, job_wait=JOBS)


async def _running(cim: EmulatorCim, name: str) -> VmRef:
    path = await define_vm(cim, name)
    await ok(cim, await request_state(cim, path, 2))
    return await _ref(cim, name)


async def _ref(cim: EmulatorCim, name: str) -> VmRef:
    vm = await vms.find_vm(hv(cim), name)
    assert vm is not None
    return vm


async def _gone(cim: EmulatorCim, name: str) -> bool:
    return await vms.find_vm(hv(cim), name) is None


@pytest.fixture
async def slow_guests(
    make_config: Callable[..., EmulatorConfig],
) -> AsyncIterator[EmulatorCim]:
    """Guests that take 0.2 s to shut down when asked."""
    cim = EmulatorCim.open(make_config(guest_shutdown_s=0.2))
    yield cim
    await cim.close()


# --- the stop sequence --------------------------------------------------------------------


async def test_stop_removes_definition_and_keeps_vhdx_when_vm_has_a_disk(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    path = await define_vm(emulator, "i-2-30-VM")
    disk = await attach_vhdx(emulator, path, tmp_path / "C")
    await ok(emulator, await request_state(emulator, path, 2))
    size = disk.stat().st_size
    assert await power.stop_and_remove(hv(emulator), await _ref(emulator, "i-2-30-VM"), GRACEFUL)
    assert await _gone(emulator, "i-2-30-VM")
    assert disk.is_file() and disk.stat().st_size == size


async def test_stop_uses_guest_shutdown_and_no_turn_off_when_guest_cooperates(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "i-2-31-VM")
    await vms.management_service(hv(emulator))
    before = emulator.round_trips()
    assert await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    spent = emulator.round_trips() - before
    assert await _gone(emulator, "i-2-31-VM")
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (1, 0, 1)
    # 1 component query + InitiateShutdown + 1 state get + DestroySystem; 1 job wait.
    assert (spent.calls, spent.waits) == (4, 1)


async def test_stop_turns_vm_off_after_bounded_wait_when_guest_ignores_shutdown(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "i-2-32-VM")
    emulator.faults.ignore_shutdown("i-2-32-VM")
    before = emulator.round_trips()
    started = time.monotonic()
    assert await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    elapsed = time.monotonic() - started
    spent = emulator.round_trips() - before
    assert FAST.timeout_s <= elapsed < FAST.timeout_s + 2.0
    assert await _gone(emulator, "i-2-32-VM")
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (1, 1, 1)


async def test_stop_skips_guest_shutdown_when_forced(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "i-2-33-VM")
    await vms.management_service(hv(emulator))
    before = emulator.round_trips()
    assert await power.stop_and_remove(hv(emulator), vm, FORCED)
    spent = emulator.round_trips() - before
    assert await _gone(emulator, "i-2-33-VM")
    assert spent["invoke:InitiateShutdown"] == 0 and spent["query"] == 0
    assert (spent.calls, spent.waits) == (2, 2)  # turn off, destroy


async def test_stop_only_destroys_when_vm_is_already_off(emulator: EmulatorCim) -> None:
    await define_vm(emulator, "i-2-34-VM")
    vm = await _ref(emulator, "i-2-34-VM")
    await vms.management_service(hv(emulator))
    before = emulator.round_trips()
    assert await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    spent = emulator.round_trips() - before
    assert await _gone(emulator, "i-2-34-VM")
    assert (spent.calls, spent["invoke:DestroySystem"]) == (1, 1)


async def test_stop_waits_for_slow_guest_when_it_shuts_down_within_the_wait(
    slow_guests: EmulatorCim,
) -> None:
    vm = await _running(slow_guests, "i-2-35-VM")
    policy = power.StopPolicy(shutdown_wait=jobs.WaitPolicy(timeout_s=5.0, first_poll_s=0.02,
                                                            max_poll_s=0.05), job_wait=JOBS)
    before = slow_guests.round_trips()
    assert await power.stop_and_remove(hv(slow_guests), vm, policy)
    spent = slow_guests.round_trips() - before
    assert await _gone(slow_guests, "i-2-35-VM")
    assert spent["invoke:RequestStateChange"] == 0  # off by the guest, not turned off
    assert spent["get"] >= 2  # polled while the guest was shutting down


async def test_stop_returns_false_when_vm_is_already_gone(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "i-2-36-VM")
    assert await power.stop_and_remove(hv(emulator), vm, FORCED)
    assert not await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    assert not await power.stop_and_remove(hv(emulator), vm, FORCED)


async def test_stop_turns_vm_off_when_guest_shutdown_is_refused(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "i-2-37-VM")
    emulator.faults.fail_next_call("InitiateShutdown", 32768)
    assert await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    assert await _gone(emulator, "i-2-37-VM")


async def test_stop_names_step_and_leaves_vm_off_when_destroy_fails(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "i-2-38-VM")
    emulator.faults.fail_next_job("DestroySystem", 32768, "disk busy")
    with pytest.raises(HyperVError, match=r"i-2-38-VM .*remove the definition failed.*disk busy"):
        await power.stop_and_remove(hv(emulator), vm, FORCED)
    assert await state(emulator, vm.path) == 3  # off but still defined
    assert await power.stop_and_remove(hv(emulator), await _ref(emulator, "i-2-38-VM"), FORCED)
    assert await _gone(emulator, "i-2-38-VM")


async def test_stop_names_step_and_leaves_vm_running_when_turn_off_fails(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "i-2-39-VM")
    emulator.faults.fail_next_call("RequestStateChange", 32768)
    with pytest.raises(HyperVError, match="turn off failed"):
        await power.stop_and_remove(hv(emulator), vm, FORCED)
    assert await state(emulator, vm.path) == 2


# --- the pieces ---------------------------------------------------------------------------


async def test_request_shutdown_returns_false_without_a_call_when_vm_is_off(
    emulator: EmulatorCim,
) -> None:
    path = await define_vm(emulator, "off")
    before = emulator.round_trips()
    assert not await power.request_shutdown(hv(emulator), path.key("Name"), "test")
    spent = emulator.round_trips() - before
    assert (spent["query"], spent["invoke"]) == (1, 0)


async def test_request_shutdown_asks_guest_when_vm_runs(slow_guests: EmulatorCim) -> None:
    vm = await _running(slow_guests, "up")
    assert await power.request_shutdown(hv(slow_guests), vm.guid, "test")
    assert await state(slow_guests, vm.path) == 2  # the guest takes its time
    assert await power.wait_until_off(hv(slow_guests), vm.guid, JOBS)
    assert await state(slow_guests, vm.path) == 3


async def test_wait_until_off_returns_false_at_deadline_when_guest_ignores_shutdown(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "stubborn")
    emulator.faults.ignore_shutdown(vm.guid)
    assert await power.request_shutdown(hv(emulator), vm.guid, "test")
    started = time.monotonic()
    assert not await power.wait_until_off(hv(emulator), vm.guid, FAST)
    assert time.monotonic() - started >= FAST.timeout_s
    assert await state(emulator, vm.path) == 2


async def test_wait_until_off_returns_none_at_once_when_vm_is_missing(
    emulator: EmulatorCim,
) -> None:
    """A VM gone is not a VM seen off: from its host, one a live move carried away looks
    the same as one removed."""
    before = emulator.round_trips()
    assert await power.wait_until_off(
        hv(emulator), "00000000-0000-0000-0000-000000000000", FAST) is None
    assert (emulator.round_trips() - before)["get"] == 1


async def test_a_graceful_stop_whose_vm_another_removed_meanwhile_fails_and_a_repeat_is_done(
    slow_guests: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guest shuts down and another removes the VM before the wait sees it off: the
    stop cannot tell that from a live move having carried the VM off, and fails saying
    the VM left this host; a repeat finds no VM and is done (False: nothing removed)."""
    vm = await _running(slow_guests, "i-2-45-VM")
    invoke = slow_guests.invoke

    async def invoking(target: ObjectPath, called: str, *args: Any) -> MethodResult:
        result = await invoke(target, called, *args)
        if called == "InitiateShutdown":  # another turns it off and removes it at once
            assert await vms.remove_vm(hv(slow_guests), vm.guid, policy=JOBS)
        return result

    monkeypatch.setattr(slow_guests, "invoke", invoking)
    with pytest.raises(VmMigrating, match=r"the stop of VM i-2-45-VM was not done: the VM "
                                          r"left this host while being stopped.*or it was "
                                          r"removed"):
        await power.stop_and_remove(hv(slow_guests), vm, GRACEFUL)
    monkeypatch.undo()
    assert await _gone(slow_guests, "i-2-45-VM")
    assert not await power.stop_and_remove(hv(slow_guests), vm, GRACEFUL)


async def test_reset_restarts_vm_when_it_runs(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "resettable")
    before = emulator.round_trips()
    assert await power.reset(hv(emulator), vm.guid, policy=JOBS)
    spent = emulator.round_trips() - before
    assert spent["invoke:RequestStateChange"] == 1 and spent.calls == 1
    assert (await _ref(emulator, "resettable")).power is PowerState.RUNNING


async def test_reset_leaves_vm_off_when_it_is_off(emulator: EmulatorCim) -> None:
    path = await define_vm(emulator, "cold")
    assert await power.reset(hv(emulator), path.key("Name"), policy=JOBS)
    assert await state(emulator, path) == 3


async def test_reset_returns_false_when_vm_is_missing(emulator: EmulatorCim) -> None:
    assert not await power.reset(hv(emulator), "00000000-0000-0000-0000-000000000000")


# --- reboot -------------------------------------------------------------------------------


async def test_reboot_asks_the_guest_and_starts_no_job_when_guest_can_be_asked(
    emulator: EmulatorCim,
) -> None:
    vm = await _running(emulator, "polite")
    before = emulator.round_trips()
    assert (await power.reboot(hv(emulator), vm, "test", policy=JOBS)).done is power.Rebooted.GUEST
    spent = emulator.round_trips() - before
    assert (spent["invoke:InitiateReboot"], spent["invoke:RequestStateChange"]) == (1, 0)
    # the host's version (once a session), the component, InitiateReboot: no job
    assert (spent.calls, spent.waits) == (3, 0)
    assert (await _ref(emulator, "polite")).power is PowerState.RUNNING


async def test_reboot_resets_when_host_lacks_initiate_reboot_though_its_version_has_it(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    # A host whose version reads 2016 but whose WMI answers that the method does not
    # exist: the reset follows, as on any host before 2016.
    cim = EmulatorCim.open(make_config(os_version="6.3.9600"))
    try:
        vm = await _running(cim, "old")
        hv(cim).kept(host._Kept).version = host.GUEST_REBOOT_SINCE
        assert (await power.reboot(hv(cim), vm, "test", policy=JOBS)).done is power.Rebooted.RESET
        assert cim.round_trips()["invoke:RequestStateChange"] == 2  # start, reset
    finally:
        await cim.close()


async def test_reboot_resets_when_guest_request_fails(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "failing")
    emulator.faults.fail_next_call("InitiateReboot", 32768)
    assert (await power.reboot(hv(emulator), vm, "test", policy=JOBS)).done is power.Rebooted.RESET
    assert (await _ref(emulator, "failing")).power is PowerState.RUNNING


async def test_reboot_reports_missing_when_vm_is_gone(emulator: EmulatorCim) -> None:
    vm = await _running(emulator, "gone")
    await ok(emulator, await request_state(emulator, vms.vm_path(vm.guid), 3))
    await vms.destroy(hv(emulator), vm.guid, policy=JOBS)
    rebooted = await power.reboot(hv(emulator), vm, "test", policy=JOBS)
    assert rebooted.done is power.Rebooted.MISSING


async def test_a_vm_hyper_v_is_still_shutting_down_is_removed_once_it_is_off(
    emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shutting Down (4) reads as stopped, but Hyper-V is still tearing the VM down: the
    stop waits until the VM reads Disabled (3) before removing it, and the wait does not
    take 4 for off."""
    path = await define_vm(emulator, "i-2-31-VM")
    seen: list[str] = []
    query, get, invoke = emulator.query, emulator.get, emulator.invoke
    going = [2]  # readings of the VM as still shutting down

    async def reading(text: str, *args: Any) -> list[CimInstance]:
        found = await query(text, *args)
        return [i.updated(EnabledState=4) if "Msvm_ComputerSystem" in text else i
                for i in found]

    async def getting(target: ObjectPath, *args: Any) -> CimInstance:
        found = await get(target, *args)
        if target.class_name != "Msvm_ComputerSystem":
            return found
        if going[0]:
            going[0] -= 1
            seen.append("get 4")
            return found.updated(EnabledState=4)
        seen.append(f"get {found['EnabledState']}")
        return found

    async def invoking(target: ObjectPath, method: str, *args: Any) -> MethodResult:
        seen.append(method)
        return await invoke(target, method, *args)

    monkeypatch.setattr(emulator, "query", reading)
    vm = await _ref(emulator, "i-2-31-VM")
    assert (vm.power, vm.stopping) == (PowerState.STOPPED, True)
    monkeypatch.setattr(emulator, "get", getting)
    monkeypatch.setattr(emulator, "invoke", invoking)
    assert await power.stop_and_remove(hv(emulator), vm, GRACEFUL)
    assert seen[:3] == ["get 4", "get 4", "get 3"]
    assert "DestroySystem" in seen[3:]
    monkeypatch.undo()
    assert await _gone(emulator, "i-2-31-VM")
    assert path is not None


async def test_a_vm_whose_live_move_began_while_it_settled_is_left_to_its_move(
    tmp_path: Path,
) -> None:
    """A stop finds the VM starting and waits that out; by the time it runs an
    operator's live move of it has begun. The VM read again says so, and the stop leaves
    it running to its move, failing saying why, rather than turning it off under it and
    then failing on the removal Hyper-V refuses meanwhile. A reboot that waited the same
    way leaves it too, rather than asking its guest to restart in the middle of the move."""
    def config(name: str, address: str) -> EmulatorConfig:
        return EmulatorConfig(state_dir=tmp_path / name / "state", host_name=name,
                              private_ip=address, drives={"S": tmp_path / "shared"})

    source = EmulatorCim.open(config("HV-SETTLE-A", "10.0.8.1"))
    destination = EmulatorCim.open(config("HV-SETTLE-B", "10.0.8.2"))
    try:
        new_disk(source.host.paths.local("S:\\vms\\settling.vhdx"))
        path = await build_vm(source, "S:\\vms\\settling.vhdx", name="i-2-32-VM")
        source.host.config = dataclasses.replace(source.host.config,
                                                 latency=LatencyModel(job_s=60.0))
        assert (await migrate(source, path, "HV-SETTLE-B")).return_value == 4096
        # as the stop read it, before the move began
        starting = dataclasses.replace(await _ref(source, "i-2-32-VM"), changing="starting",
                                       migrating=False)

        settled = await power.settle(hv(source), starting, JOBS)
        assert settled is not None and settled.migrating
        with pytest.raises(HyperVError, match="being migrated live from this host"):
            await power.stop_and_remove(hv(source), starting, FORCED)
        with pytest.raises(HyperVError, match="the reboot of VM i-2-32-VM was not done"):
            await power.reboot(hv(source), starting, "a test", policy=JOBS)
        assert (await source.get(path))["EnabledState"] == 2
    finally:
        await source.close()
        await destination.close()
