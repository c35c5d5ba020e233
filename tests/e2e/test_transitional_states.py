"""VMs Hyper-V is changing the state of (Starting, Stopping, ...) over real HTTPS: the
emulated host shows the transitional state while the change's job runs (the latency
model's job time) and refuses other changes meanwhile; the agent reports such a VM as the
MS expects and its commands wait the change out rather than fail halfway."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from hyperv_agent.cim.api import InValue, MethodResult, ObjectPath
from hyperv_agent.emulator.config import LatencyModel
from tests.e2e.conftest import Running
from tests.e2e.test_vm_commands import _stop
from tests.e2e.transitions_kit import (
    JOB_S,
    PAUSING,
    SAVING,
    STARTING,
    STOPPING,
    changing,
    frozen,
    slow,
)
from tests.emulator.kit import define_vm, ok, request_state, service, vm_names

STOP = "com.cloud.agent.api.StopCommand"
STOP_ANSWER = "com.cloud.agent.api.StopAnswer"
REBOOT = "com.cloud.agent.api.RebootCommand"
REBOOT_ANSWER = "com.cloud.agent.api.RebootAnswer"
CHECK = "com.cloud.agent.api.CheckVirtualMachineCommand"
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"

async def test_stop_of_a_vm_still_starting_waits_for_the_start_then_removes_it(
    running: Running,
) -> None:
    """Hyper-V takes no turn-off while a start runs (32775) and cannot remove a VM that
    is starting: the stop waits the start out, then shuts the guest down and removes it."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-40-VM")
    slow(running)
    await changing(cim, path, 2, STARTING)
    key, answer = await running.answer(STOP, _stop("i-2-40-VM"))
    assert (key, answer["result"]) == (STOP_ANSWER, True), answer
    assert "i-2-40-VM" not in await vm_names(cim)


async def test_stop_with_check_before_cleanup_of_a_vm_still_stopping_removes_it_once_off(
    running: Running,
) -> None:
    """The MS answers a PowerOff report with a StopCommand (checkBeforeCleanup): a VM
    Hyper-V is still stopping is removed once it is off."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-41-VM")
    await ok(cim, await request_state(cim, path, 2))
    slow(running)
    await changing(cim, path, 3, STOPPING)
    key, answer = await running.answer(STOP, _stop("i-2-41-VM", checkBeforeCleanup=True))
    assert (key, answer["result"]) == (STOP_ANSWER, True), answer
    assert "i-2-41-VM" not in await vm_names(cim)


async def test_reboot_of_a_vm_still_starting_waits_for_it_then_asks_the_guest(
    running: Running,
) -> None:
    """Read as running, a starting VM's guest cannot be asked yet (32780) nor can the VM
    be reset (32775): the reboot waits the start out instead of answering that the VM
    does not run."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-42-VM")
    slow(running)
    await changing(cim, path, 2, STARTING)
    key, answer = await running.answer(REBOOT, {"vmName": "i-2-42-VM", "contextMap": {},
                                                "wait": 0})
    assert (key, answer["result"]) == (REBOOT_ANSWER, True), answer
    assert answer["details"].startswith("guest reboot"), answer
    assert (await cim.get(path))["EnabledState"] == 2


@pytest.mark.parametrize(("requested", "shown", "word"), [
    (6, SAVING, "saved"),  # read as running while it saves
    (9, PAUSING, "paused"),  # read as running while it pauses
    (3, STOPPING, "stopped"),
])
async def test_reboot_of_a_vm_still_saving_pausing_or_stopping_names_the_state_it_ended_in(
    running: Running, requested: int, shown: int, word: str,
) -> None:
    """A reboot that arrives while Hyper-V saves, pauses or stops the VM waits the change
    out; the VM is then not running and is left as it is. The failed answer names the
    state the VM ended in: a VM saving or pausing reads as running until the change is
    done, and an answer saying it "is running on this host, not running" tells the
    operator nothing of where the VM is."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-45-VM")
    await ok(cim, await request_state(cim, path, 2))
    slow(running)
    await changing(cim, path, requested, shown)
    key, answer = await running.answer(REBOOT, {"vmName": "i-2-45-VM", "contextMap": {},
                                                "wait": 0})
    assert (key, answer["result"]) == (REBOOT_ANSWER, False), answer
    assert answer["details"] == (
        f"RebootCommand failed: VM i-2-45-VM is {word} on this host, not running; "
        "it was not rebooted and was left as it is"), answer
    assert (await cim.get(path))["EnabledState"] == requested  # saved, paused, off


@pytest.mark.parametrize(("requested", "shown", "word"), [
    (6, SAVING, "saved"),
    (9, PAUSING, "paused"),
])
async def test_reboot_refused_as_a_vm_began_saving_or_pausing_names_the_state_it_ended_in(
    running: Running, monkeypatch: pytest.MonkeyPatch, requested: int, shown: int,
    word: str,
) -> None:
    """The VM is read running, its guest cannot be asked to restart, and Hyper-V begins
    to save or pause it (an operator's Save-VM, the host's automatic stop action) just
    before the reset, which it refuses as invalid state (32775). Read on that refusal the
    VM still reads as running, with the change under way: the reboot waits the change
    out and the failed answer names the state it ended in, not "running ... not
    running"."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-46-VM")
    await ok(cim, await request_state(cim, path, 2))
    cim.faults.fail_next_call("InitiateReboot", 32780)  # the guest is not ready
    slow(running)
    invoke = cim.invoke

    async def change_first(target: ObjectPath, method: str,
                           params: Mapping[str, InValue] | None = None) -> MethodResult:
        if method == "RequestStateChange" and (params or {}).get("RequestedState") == 11:
            await changing(cim, path, requested, shown)
        return await invoke(target, method, params)

    monkeypatch.setattr(cim, "invoke", change_first)
    key, answer = await running.answer(REBOOT, {"vmName": "i-2-46-VM", "contextMap": {},
                                                "wait": 0})
    assert (key, answer["result"]) == (REBOOT_ANSWER, False), answer
    assert answer["details"] == (
        f"RebootCommand failed: VM i-2-46-VM is {word} on this host, not running; "
        "it was not rebooted and was left as it is"), answer
    assert (await cim.get(path))["EnabledState"] == requested  # saved, paused


async def test_check_reads_a_starting_vm_as_on_and_a_stopping_one_as_off(
    running: Running,
) -> None:
    cim = running.emulator
    path = await define_vm(cim, "i-2-43-VM")
    check = {"vmName": "i-2-43-VM", "contextMap": {}, "wait": 0}
    slow(running)
    advance = frozen(running)
    await changing(cim, path, 2, STARTING)
    _, answer = await running.answer(CHECK, check)
    assert (answer["result"], answer["state"]) == (True, "PowerOn"), answer
    advance(JOB_S)
    await changing(cim, path, 3, STOPPING)
    _, answer = await running.answer(CHECK, check)
    assert (answer["result"], answer["state"]) == (True, "PowerOff"), answer


async def test_state_report_leaves_a_vm_still_stopping_to_the_next_report(
    running: Running,
) -> None:
    """A stopped CloudStack VM is removed by the report, but Hyper-V refuses to remove
    one it is still stopping: the report sends it PowerOff without trying, and the next
    report, once it is off, removes it."""
    cim = running.emulator
    vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName="i-2-44-VM", Notes=["Created by CloudStack"])
    defined = await cim.invoke(await service(cim), "DefineSystem", {"SystemSettings": vssd})
    path = defined.path("ResultingSystem")
    assert path is not None
    await ok(cim, await request_state(cim, path, 2))
    await running.post(REPORT, {})  # finds the service
    slow(running)
    advance = frozen(running)
    await changing(cim, path, 3, STOPPING)
    before = cim.round_trips()
    status, report = await running.post(REPORT, {})
    assert status == 200 and report == [{"i-2-44-VM": "PowerOff"}]
    assert (cim.round_trips() - before)["invoke:DestroySystem"] == 0
    assert "i-2-44-VM" in await vm_names(cim)
    advance(JOB_S)
    host = cim.host  # the removal's own job ends at once, the clock standing still
    host.config = dataclasses.replace(host.config, latency=LatencyModel())
    status, report = await running.post(REPORT, {})
    assert status == 200 and report == []
    assert "i-2-44-VM" not in await vm_names(cim)
