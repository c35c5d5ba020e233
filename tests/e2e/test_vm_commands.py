"""VM lifecycle and state commands over real HTTPS, answered from the emulated host:
Stop, Reboot, CheckVirtualMachine, GetVncPort, GetVmStats."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim.api import InValue, MethodResult, ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from hyperv_agent.errors import CimNotFound
from hyperv_agent.handlers.vm import VmLocks, VmSettings
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import LOCAL_POOL, PRIVATE_IP, Running, every_backend, serving
from tests.e2e.migration_kit import (
    migrate_body,
    prepare_body,
    smb_pool,
    vm_to,
    volume_body,
    with_storage_body,
)
from tests.emulator.kit import attach_vhdx, define_vm, devices, ok, request_state, service, vm_names

STOP = "com.cloud.agent.api.StopCommand"
STOP_ANSWER = "com.cloud.agent.api.StopAnswer"
REBOOT = "com.cloud.agent.api.RebootCommand"
REBOOT_ANSWER = "com.cloud.agent.api.RebootAnswer"
CHECK = "com.cloud.agent.api.CheckVirtualMachineCommand"
CHECK_ANSWER = "com.cloud.agent.api.CheckVirtualMachineAnswer"
VNC = "com.cloud.agent.api.GetVncPortCommand"
VNC_ANSWER = "com.cloud.agent.api.GetVncPortAnswer"
STATS = "com.cloud.agent.api.GetVmStatsCommand"
STATS_ANSWER = "com.cloud.agent.api.GetVmStatsAnswer"
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
SHUTDOWN_WAIT_S = 0.3
GUEST_WAIT_S = VmSettings().shutdown_timeout_s  # what the `running` agent gives a guest


backend_kind = every_backend  # every test here runs on the emulator and over WinRM


@pytest.fixture
async def quick(agent_config: Callable[..., AgentConfig]) -> AsyncIterator[Running]:
    """The agent with a 0.3 s guest-shutdown wait (instead of 30 s)."""
    settings = VmSettings(shutdown_timeout_s=SHUTDOWN_WAIT_S, shutdown_first_poll_s=0.02,
                          shutdown_max_poll_s=0.05)
    async with serving(agent_config(), vm_settings=settings) as running:
        yield running


async def _running_vm(cim: EmulatorCim, name: str, cpus: int = 1) -> ObjectPath:
    path = await define_vm(cim, name)
    if cpus != 1:
        processor = (await devices(cim, path, "Msvm_ProcessorSettingData"))[0]
        await ok(cim, await cim.invoke(await service(cim), "ModifyResourceSettings", {
            "ResourceSettings": [processor.updated(VirtualQuantity=cpus)]}))
    await ok(cim, await request_state(cim, path, 2))
    return path



def _stop(name: str, **fields: object) -> dict[str, object]:
    return {"vmName": name, "checkBeforeCleanup": False, "forceStop": False, "isProxy": False,
            "executeInSequence": False, "contextMap": {}, "wait": 0, **fields}


# --- StopCommand --------------------------------------------------------------------------


async def test_stop_removes_vm_and_keeps_its_vhdx_when_vm_runs(running: Running) -> None:
    cim = running.emulator
    path = await define_vm(cim, "i-2-17-VM")
    drive_c = running.agent.config.agent.state_dir / "emulator" / "drives" / "C"
    disk = await attach_vhdx(cim, path, drive_c)
    await ok(cim, await request_state(cim, path, 2))
    key, answer = await running.answer(STOP, _stop("i-2-17-VM"))
    assert (key, answer["result"]) == (STOP_ANSWER, True), answer
    assert answer.get("details") is None
    assert "i-2-17-VM" not in await vm_names(cim)
    assert disk.is_file() and disk.stat().st_size > 0


async def test_stop_uses_guest_shutdown_when_guest_cooperates(running: Running) -> None:
    cim = running.emulator
    await _running_vm(cim, "i-2-18-VM")
    await running.answer(STATS, {"vmNames": ["warm-up"]})  # finds the service once
    before = cim.round_trips()
    _, answer = await running.answer(STOP, _stop("i-2-18-VM"))
    spent = cim.round_trips() - before
    assert answer["result"] is True, answer
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (1, 0, 1)
    # find + component query + InitiateShutdown + 1 state get + DestroySystem; 1 job wait.
    assert (spent.calls, spent.waits) == (5, 1)



async def _timed_stop(running: Running, name: str) -> tuple[float, RoundTrips]:
    """Stop ``name``; the seconds it took and the round trips it spent (it succeeded)."""
    cim = running.emulator
    before = cim.round_trips()
    started = time.monotonic()
    _, answer = await running.answer(STOP, _stop(name))
    elapsed = time.monotonic() - started
    assert answer["result"] is True, answer
    return elapsed, cim.round_trips() - before

async def test_stop_turns_vm_off_after_bounded_wait_when_guest_ignores_shutdown(
    quick: Running,
) -> None:
    cim = quick.emulator
    await _running_vm(cim, "i-2-19-VM")
    cim.faults.ignore_shutdown("i-2-19-VM")
    elapsed, spent = await _timed_stop(quick, "i-2-19-VM")
    assert SHUTDOWN_WAIT_S <= elapsed < SHUTDOWN_WAIT_S + 2.0
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (1, 1, 1)
    assert "i-2-19-VM" not in await vm_names(cim)


async def test_stop_turns_vm_off_without_waiting_when_guest_has_no_integration_services(
    running: Running,
) -> None:
    cim = running.emulator
    cim.faults.lack_integration_services("i-2-28-VM")
    await _running_vm(cim, "i-2-28-VM")
    elapsed, spent = await _timed_stop(running, "i-2-28-VM")
    # InitiateShutdown answers 32780 (not ready): no wait for the guest, straight to off
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (1, 1, 1)
    # no poll of the guest, and far from the 30 s a guest is given (a loaded machine takes
    # more than a fraction of a second for these round trips over WinRM)
    assert spent["get"] == 0 and elapsed < GUEST_WAIT_S / 2
    assert "i-2-28-VM" not in await vm_names(cim)


async def test_stop_skips_guest_shutdown_when_force_stop_is_set(running: Running) -> None:
    cim = running.emulator
    await _running_vm(cim, "i-2-20-VM")
    await running.answer(STATS, {"vmNames": ["warm-up"]})  # finds the service once
    before = cim.round_trips()
    _, answer = await running.answer(STOP, _stop("i-2-20-VM", forceStop=True))
    spent = cim.round_trips() - before
    assert answer["result"] is True, answer
    assert spent["invoke:InitiateShutdown"] == 0
    assert (spent.calls, spent.waits) == (3, 2)  # find, turn off, destroy
    assert "i-2-20-VM" not in await vm_names(cim)


async def test_stop_succeeds_in_one_query_when_vm_is_unknown(running: Running) -> None:
    before = running.emulator.round_trips()
    key, answer = await running.answer(STOP, _stop("i-9-99-VM"))
    spent = running.emulator.round_trips() - before
    assert (key, answer["result"], answer.get("details")) == (STOP_ANSWER, True, None)
    assert (spent.calls, spent["query"]) == (1, 1)


async def test_stop_succeeds_again_when_repeated(running: Running) -> None:
    await _running_vm(running.emulator, "i-2-21-VM")
    for _ in range(2):
        _, answer = await running.answer(STOP, _stop("i-2-21-VM"))
        assert answer["result"] is True, answer


async def test_stop_fails_naming_vm_name_when_vm_name_is_missing(running: Running) -> None:
    body = _stop("x")
    del body["vmName"]
    key, answer = await running.answer(STOP, body)
    assert (key, answer["result"]) == (STOP_ANSWER, False)
    assert "vmName" in answer["details"]


async def test_stop_leaves_vm_running_when_check_before_cleanup_is_set(
    running: Running,
) -> None:
    cim = running.emulator
    await _running_vm(cim, "i-2-22-VM")
    key, answer = await running.answer(STOP, _stop("i-2-22-VM", checkBeforeCleanup=True))
    assert (key, answer["result"]) == (STOP_ANSWER, False)
    assert "i-2-22-VM" in answer["details"] and "running" in answer["details"]
    assert "i-2-22-VM" in await vm_names(cim)


async def test_stop_leaves_paused_vm_alone_when_check_before_cleanup_is_set(
    running: Running,
) -> None:
    # The MS sends it after a PowerOff report; a VM paused since is on (it holds its
    # memory, the state report calls it PowerOn), and turning it off would lose that.
    cim = running.emulator
    path = await _running_vm(cim, "i-2-29-VM")
    await ok(cim, await request_state(cim, path, 9))
    key, answer = await running.answer(STOP, _stop("i-2-29-VM", checkBeforeCleanup=True))
    assert (key, answer["result"]) == (STOP_ANSWER, False), answer
    assert answer["details"] == (
        "StopCommand failed: VM i-2-29-VM is still paused on this host; a StopCommand with "
        "checkBeforeCleanup leaves a VM that is on alone")
    assert (await cim.get(path))["EnabledState"] == 9


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("suspended", [9, 6], ids=["paused", "saved"])
async def test_stop_turns_paused_or_saved_vm_off_without_asking_its_guest(
    running: Running, suspended: int, force: bool,
) -> None:
    # A paused guest runs no code (Hyper-V pauses a VM whose disk's volume is full): a
    # shutdown request could never complete, so the VM is turned off at once, without the
    # 30 s a guest is given.
    cim = running.emulator
    path = await _running_vm(cim, "i-2-30-VM")
    await ok(cim, await request_state(cim, path, suspended))
    before = cim.round_trips()
    started = time.monotonic()
    _, answer = await running.answer(STOP, _stop("i-2-30-VM", forceStop=force))
    elapsed = time.monotonic() - started
    spent = cim.round_trips() - before
    assert answer["result"] is True, answer
    assert (spent["invoke:InitiateShutdown"], spent["invoke:RequestStateChange"],
            spent["invoke:DestroySystem"]) == (0, 1, 1)
    assert elapsed < GUEST_WAIT_S / 2
    assert "i-2-30-VM" not in await vm_names(cim)


async def test_stop_removes_stopped_vm_when_check_before_cleanup_is_set(
    running: Running,
) -> None:
    await define_vm(running.emulator, "i-2-23-VM")
    _, answer = await running.answer(STOP, _stop("i-2-23-VM", checkBeforeCleanup=True))
    assert answer["result"] is True, answer
    assert "i-2-23-VM" not in await vm_names(running.emulator)


async def test_stop_fails_naming_the_step_when_destroy_fails(running: Running) -> None:
    cim = running.emulator
    await _running_vm(cim, "i-2-24-VM")
    cim.faults.fail_next_job("DestroySystem", 32768, "disk busy")
    key, answer = await running.answer(STOP, _stop("i-2-24-VM", forceStop=True))
    assert (key, answer["result"]) == (STOP_ANSWER, False)
    assert "remove the definition failed" in answer["details"]
    assert "disk busy" in answer["details"]
    _, again = await running.answer(STOP, _stop("i-2-24-VM"))
    assert again["result"] is True and "i-2-24-VM" not in await vm_names(cim)


async def test_concurrent_stops_are_serialised_when_they_name_the_same_vm(
    quick: Running,
) -> None:
    cim = quick.emulator
    await _running_vm(cim, "i-2-25-VM")
    cim.faults.ignore_shutdown("i-2-25-VM")  # the first stop holds the VM for 0.3 s
    before = cim.round_trips()
    answers = await asyncio.gather(*(quick.answer(STOP, _stop("i-2-25-VM"))
                                     for _ in range(2)))
    spent = cim.round_trips() - before
    assert [(key, a["result"]) for key, a in answers] == [(STOP_ANSWER, True)] * 2, answers
    # The second stop ran after the first and found no VM: one shutdown, one destroy.
    assert (spent["invoke:InitiateShutdown"], spent["invoke:DestroySystem"]) == (1, 1)
    assert "i-2-25-VM" not in await vm_names(cim)


async def test_no_command_acts_on_either_of_two_vms_that_are_on_under_one_name(
    running: Running,
) -> None:
    # Hyper-V tells VMs apart by GUID only: a copy of a VM an operator imported and started
    # under its name cannot be told from CloudStack's. A stop or reboot of whichever WMI
    # listed first could hit the copy and leave CloudStack's VM running.
    cim = running.emulator
    first = await _running_vm(cim, "i-2-32-VM")
    second = await _running_vm(cim, "i-2-32-VM")
    await ok(cim, await request_state(cim, second, 9))  # paused: on as well
    await asyncio.sleep(0.06)
    guids = [str(path.key("Name")) for path in (first, second)]
    for fqcn, body, answer_class in (
        (STOP, _stop("i-2-32-VM"), STOP_ANSWER),
        (STOP, _stop("i-2-32-VM", forceStop=True), STOP_ANSWER),
        (REBOOT, _reboot("i-2-32-VM"), REBOOT_ANSWER),
        (VNC, {"id": 32, "name": "i-2-32-VM"}, VNC_ANSWER),
    ):
        key, answer = await running.answer(fqcn, body)
        assert (key, answer["result"]) == (answer_class, False), answer
        assert "2 VMs that are on are named 'i-2-32-VM' on this host" in answer["details"]
        assert all(guid in answer["details"] for guid in guids), answer["details"]
    assert [(await cim.get(path))["EnabledState"] for path in (first, second)] == [2, 9]
    assert await _on_time_ms(cim, first) >= 50  # not reset
    # Whether the VM is on is what each of them answers alike.
    key, answer = await running.answer(CHECK, {"vmName": "i-2-32-VM"})
    assert (key, answer["result"], answer["state"]) == (CHECK_ANSWER, True, "PowerOn")
    # Once the copy is off, the VM that is on is the VM again: stopped, the copy kept.
    await ok(cim, await request_state(cim, second, 3))
    _, answer = await running.answer(STOP, _stop("i-2-32-VM", forceStop=True))
    assert answer["result"] is True, answer
    with pytest.raises(CimNotFound):
        await cim.get(first)
    assert (await cim.get(second))["EnabledState"] == 3


async def test_stops_run_concurrently_when_they_name_different_vms(quick: Running) -> None:
    cim = quick.emulator
    for name in ("i-2-26-VM", "i-2-27-VM"):
        await _running_vm(cim, name)
        cim.faults.ignore_shutdown(name)
    before = cim.round_trips()
    overlapped = False

    async def watch() -> None:
        """Whether both guests were asked to shut down while both VMs were still there:
        stops run one after another would ask the second only once the first is gone,
        whatever the machine's speed."""
        nonlocal overlapped
        while not overlapped:
            asked = (cim.round_trips() - before)["invoke:InitiateShutdown"]
            if asked == 2 and {"i-2-26-VM", "i-2-27-VM"} <= await vm_names(cim):
                overlapped = True
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    answers = await asyncio.gather(quick.answer(STOP, _stop("i-2-26-VM")),
                                   quick.answer(STOP, _stop("i-2-27-VM")))
    watcher.cancel()
    assert all(a["result"] is True for _, a in answers), answers
    assert overlapped  # the two waits overlapped
    assert not {"i-2-26-VM", "i-2-27-VM"} & await vm_names(cim)


# --- RebootCommand ------------------------------------------------------------------------


def _reboot(name: str) -> dict[str, object]:
    """A RebootCommand as the MS sends it (RebootCommand's and Command's fields)."""
    return {"vmName": name, "executeInSequence": False, "contextMap": {}, "wait": 0}


async def _on_time_ms(cim: EmulatorCim, path: ObjectPath) -> int:
    return (await cim.get(path)).integer("OnTimeInMilliseconds") or 0


async def test_reboot_asks_the_guest_to_restart_when_host_is_2016_or_later(
    running: Running,
) -> None:
    # CloudStack's KVM reboots a guest cleanly (virsh reboot: the guest OS restarts
    # itself); a reset (RequestStateChange 11) can lose what the guest has not written.
    cim = running.emulator
    path = await _running_vm(cim, "i-2-30-VM")
    await asyncio.sleep(0.05)
    before = cim.round_trips()
    key, answer = await running.answer(REBOOT, _reboot("i-2-30-VM"))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (REBOOT_ANSWER, True), answer
    assert answer["details"].startswith("guest reboot"), answer
    assert (spent["invoke:InitiateReboot"], spent["invoke:RequestStateChange"]) == (1, 0)
    # find + the host's version (once a session) + component query + InitiateReboot; no job
    assert (spent.calls, spent.waits) == (4, 0)
    assert (await cim.get(path))["EnabledState"] == 2
    assert await _on_time_ms(cim, path) < 50  # the guest restarted

    before = cim.round_trips()
    _, again = await running.answer(REBOOT, _reboot("i-2-30-VM"))
    spent = cim.round_trips() - before
    assert again["result"] is True and again["details"].startswith("guest reboot"), again
    assert (spent.calls, spent["invoke:InitiateReboot"]) == (3, 1)  # the version is kept


@pytest.mark.parametrize("code", [32780, 32775, 32782])  # not ready, invalid state, shutting down
async def test_reboot_resets_vm_when_guest_cannot_be_asked(running: Running, code: int) -> None:
    cim = running.emulator
    path = await _running_vm(cim, "i-2-31-VM")
    cim.faults.fail_next_call("InitiateReboot", code)
    key, answer = await running.answer(REBOOT, _reboot("i-2-31-VM"))
    assert (key, answer["result"]) == (REBOOT_ANSWER, True), answer
    assert answer["details"].startswith("reset"), answer
    assert cim.round_trips()["invoke:RequestStateChange"] == 2  # start, then reset
    assert (await cim.get(path))["EnabledState"] == 2


async def test_reboot_resets_vm_when_guest_has_no_integration_services(
    running: Running,
) -> None:
    cim = running.emulator
    cim.faults.lack_integration_services("i-2-32-VM")
    path = await _running_vm(cim, "i-2-32-VM")
    before = cim.round_trips()
    _, answer = await running.answer(REBOOT, _reboot("i-2-32-VM"))
    spent = cim.round_trips() - before
    assert answer["result"] is True and answer["details"].startswith("reset"), answer
    # the guest answers 32780 (not ready), so the VM is reset
    assert (spent["invoke:InitiateReboot"], spent["invoke:RequestStateChange"]) == (1, 1)
    assert (await cim.get(path))["EnabledState"] == 2


async def test_reboot_resets_vm_when_host_is_2012_r2(tmp_path: Path) -> None:
    # Msvm_ShutdownComponent.InitiateReboot is new in Windows Server 2016: on 2012 R2 the
    # agent resets the VM, as it always did there, without trying the method.
    toml = tmp_path / "agent.toml"
    toml.write_text('[emulator]\nos_version = "6.3.9600"\n')
    config = load_config(toml, state_dir=tmp_path / "state", backend="emulator",
                         private_ip=PRIVATE_IP, local_storage_path=LOCAL_POOL)
    async with serving(config) as on_2012_r2:
        cim = on_2012_r2.emulator
        path = await _running_vm(cim, "i-2-33-VM")
        before = cim.round_trips()
        key, answer = await on_2012_r2.answer(REBOOT, _reboot("i-2-33-VM"))
        spent = cim.round_trips() - before
        assert (key, answer["result"]) == (REBOOT_ANSWER, True), answer
        assert answer["details"].startswith("reset"), answer
        assert (spent["invoke:InitiateReboot"], spent["invoke:RequestStateChange"]) == (0, 1)
        # find + the host's version (once a session) + the reset
        assert (spent["query"], spent.calls) == (2, 3)
        assert (await cim.get(path))["EnabledState"] == 2


@pytest.mark.parametrize(("states", "seen", "word"), [
    ((), 3, "stopped"), ((2, 6), 6, "saved"), ((2, 9), 9, "paused")])
async def test_reboot_fails_and_leaves_vm_alone_when_vm_is_not_running(
    running: Running, states: tuple[int, ...], seen: int, word: str,
) -> None:
    """The MS reboots only a VM it believes runs; a VM that is down here was not
    rebooted, and a success would tell the operator it was."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-34-VM")
    for state in states:
        await ok(cim, await request_state(cim, path, state))
    key, answer = await running.answer(REBOOT, _reboot("i-2-34-VM"))
    assert (key, answer["result"]) == (REBOOT_ANSWER, False), answer
    assert answer["details"] == (
        f"RebootCommand failed: VM i-2-34-VM is {word} on this host, not running; "
        "it was not rebooted and was left as it is")
    assert cim.round_trips()["invoke:InitiateReboot"] == 0
    assert (await cim.get(path))["EnabledState"] == seen


async def test_reboot_of_a_vm_that_went_off_before_its_reset_names_the_state_it_is_in(
    running: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The VM is read running, its guest cannot be asked to restart, and it goes off
    (its guest shut it down, an operator turned it off) just before the reset, which
    Hyper-V refuses as invalid state (32775). The VM read again on that refusal is off:
    the failed answer says so, not that a running VM is "running ... not running"."""
    cim = running.emulator
    path = await _running_vm(cim, "i-2-36-VM")
    cim.faults.fail_next_call("InitiateReboot", 32780)  # the guest is not ready
    invoke = cim.invoke

    async def off_first(target: ObjectPath, method: str,
                        params: Mapping[str, InValue] | None = None) -> MethodResult:
        if method == "RequestStateChange" and (params or {}).get("RequestedState") == 11:
            await ok(cim, await invoke(path, "RequestStateChange", {"RequestedState": 3}))
        return await invoke(target, method, params)

    monkeypatch.setattr(cim, "invoke", off_first)
    key, answer = await running.answer(REBOOT, _reboot("i-2-36-VM"))
    assert (key, answer["result"]) == (REBOOT_ANSWER, False), answer
    assert answer["details"] == (
        "RebootCommand failed: VM i-2-36-VM is stopped on this host, not running; "
        "it was not rebooted and was left as it is"), answer
    assert (await cim.get(path))["EnabledState"] == 3


@pytest.mark.parametrize("enabled_state", [0, 1])  # Unknown, Other
async def test_reboot_of_a_vm_whose_state_hyperv_cannot_tell_says_so(
    running: Running, enabled_state: int,
) -> None:
    """Hyper-V refuses to reset a VM whose state it cannot tell (Unknown, Other), and such
    a VM may run (the state report sends PowerUnknown for it): the failed answer must say
    that Hyper-V cannot tell its state, never that the VM is not running, which would send
    the operator to start a VM that may be running. Nothing is done to it."""
    cim = running.emulator
    path = await _running_vm(cim, "i-2-35-VM")
    txn = cim.host.store.transaction()
    record = txn.edit(path)
    assert record is not None
    record["EnabledState"] = enabled_state
    txn.commit()
    key, answer = await running.answer(REBOOT, _reboot("i-2-35-VM"))
    assert (key, answer["result"]) == (REBOOT_ANSWER, False), answer
    assert answer["details"] == (
        "RebootCommand failed: VM i-2-35-VM is in a state Hyper-V cannot tell on this host "
        "and may run; Hyper-V refused to reset it, so it was not rebooted and was left as "
        "it is"), answer
    assert cim.round_trips()["invoke:InitiateReboot"] == 0
    assert (await cim.get(path))["EnabledState"] == enabled_state


async def test_reboot_fails_naming_vm_when_vm_is_unknown(running: Running) -> None:
    key, answer = await running.answer(REBOOT, {"vmName": "i-9-99-VM"})
    assert (key, answer["result"]) == (REBOOT_ANSWER, False)
    assert answer["details"] == ("RebootCommand failed: "
                                 "com.cloud.agent.api.RebootCommand requested unknown VM "
                                 "'i-9-99-VM'")


# --- CheckVirtualMachineCommand -----------------------------------------------------------


@pytest.mark.parametrize(("requested", "expected"), [
    (None, "PowerOff"), (2, "PowerOn"), (9, "PowerOn"), (6, "PowerOff")])
async def test_check_reports_power_state_when_vm_exists(
    running: Running, requested: int | None, expected: str,
) -> None:
    cim = running.emulator
    path = await define_vm(cim, "i-2-40-VM")
    if requested is not None:
        await ok(cim, await request_state(cim, path, 2))
        if requested != 2:
            await ok(cim, await request_state(cim, path, requested))
    key, answer = await running.answer(CHECK, {"vmName": "i-2-40-VM"})
    assert (key, answer["result"]) == (CHECK_ANSWER, True), answer
    assert answer["state"] == answer["powerstate"] == expected


async def test_check_fails_naming_vm_when_vm_is_unknown(running: Running) -> None:
    key, answer = await running.answer(CHECK, {"vmName": "i-9-99-VM"})
    assert (key, answer["result"]) == (CHECK_ANSWER, False)
    assert answer["details"] == (
        "CheckVirtualMachineCommand failed: "
        "com.cloud.agent.api.CheckVirtualMachineCommand requested unknown VM 'i-9-99-VM'")


# --- GetVncPortCommand --------------------------------------------------------------------


async def test_vnc_port_answers_instance_id_and_rdp_port_when_vm_exists(
    running: Running,
) -> None:
    path = await define_vm(running.emulator, "i-2-50-VM")
    key, answer = await running.answer(VNC, {"id": 50, "name": "i-2-50-VM"})
    assert key == VNC_ANSWER
    assert (answer["result"], answer["address"], answer["port"]) == (
        True, f"instanceId={path.key('Name')}", -9)
    assert "contextMap" not in answer


async def test_vnc_port_fails_with_port_minus_9_when_vm_is_unknown(running: Running) -> None:
    key, answer = await running.answer(VNC, {"id": 99, "name": "i-9-99-VM"})
    assert (key, answer["result"], answer["port"]) == (VNC_ANSWER, False, -9)
    assert answer.get("address") is None
    assert answer["details"] == "GetVncPortCommand failed: no VM named 'i-9-99-VM' on this host"
    # a name with a trailing blank or a control character is named as it came
    for name, shown in (("i-9-99-VM ", "'i-9-99-VM '"),
                        ("i-9-99-VM\t", "'i-9-99-VM\\t'")):
        _, answer = await running.answer(VNC, {"id": 99, "name": name})
        assert answer["details"] == f"GetVncPortCommand failed: no VM named {shown} on this host"


# --- GetVmStatsCommand --------------------------------------------------------------------


async def test_vm_stats_is_one_summary_call_when_three_vms_are_named(running: Running) -> None:
    cim = running.emulator
    await _running_vm(cim, "i-2-60-VM", cpus=2)
    await _running_vm(cim, "i-2-61-VM", cpus=4)
    await running.answer(STATS, {"vmNames": ["warm-up"]})  # finds the service once
    loads = await _processor_loads(cim)
    before = cim.round_trips()
    key, answer = await running.answer(STATS, {"vmNames": ["i-2-60-VM", "i-2-61-VM",
                                                           "i-9-99-VM"]})
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (STATS_ANSWER, True), answer
    # 1 call for the summaries; for the two running VMs, 1 query for their disk files
    # (they have none, so no disk counters are asked for) and 1 for their adapters' counters
    assert (spent.calls, spent["invoke:GetSummaryInformation"], spent["query"]) == (3, 1, 2)
    stats = answer["vmStatsMap"]
    assert sorted(stats) == ["i-2-60-VM", "i-2-61-VM"]
    for name, cpus in (("i-2-60-VM", 2), ("i-2-61-VM", 4)):
        entry = stats[name]
        assert entry["numCPUs"] == cpus
        assert entry["cpuUtilization"] == loads[name] > 0
        assert entry["memoryKBs"] == entry["targetMemoryKBs"] == 1024 * 1024  # 1024 MB
        # the guest's free memory is not known: -1, not 0 (which reads as all of it used)
        assert entry["intFreeMemoryKBs"] == -1
        assert (entry["networkReadKBs"], entry["networkWriteKBs"]) == (0, 0)
        assert entry["entityType"] == "vm"


async def test_vm_stats_tell_the_guests_free_memory_when_the_vm_has_dynamic_memory(
    running: Running,
) -> None:
    cim = running.emulator
    path = await define_vm(cim, "i-2-62-VM")
    memory = (await devices(cim, path, "Msvm_MemorySettingData"))[0]
    await ok(cim, await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [memory.updated(DynamicMemoryEnabled=True, Reservation=512,
                                            VirtualQuantity=512, Limit=2048)]}))
    await ok(cim, await request_state(cim, path, 2))
    await _running_vm(cim, "i-2-63-VM")  # static memory
    before = cim.round_trips()
    _, answer = await running.answer(STATS, {"vmNames": ["i-2-62-VM", "i-2-63-VM"]})
    assert (cim.round_trips() - before)["invoke:GetSummaryInformation"] == 1
    dynamic, static = (answer["vmStatsMap"][name] for name in ("i-2-62-VM", "i-2-63-VM"))
    # what the dynamic VM holds now (its startup memory), and its guest's free share of it
    assert dynamic["memoryKBs"] == dynamic["targetMemoryKBs"] == 512 * 1024
    assert 512 * 1024 * 20 // 100 <= dynamic["intFreeMemoryKBs"] < 512 * 1024 * 60 // 100
    assert static["intFreeMemoryKBs"] == -1


async def test_vm_stats_tell_a_paused_vms_memory_as_while_it_ran(running: Running) -> None:
    # The MS still lists a paused VM as Running (the state report calls it PowerOn): its
    # memory is still assigned on the host, and 0 would chart it as holding none.
    cim = running.emulator
    path = await _running_vm(cim, "i-2-64-VM", cpus=2)
    await ok(cim, await request_state(cim, path, 9))
    _, answer = await running.answer(STATS, {"vmNames": ["i-2-64-VM"]})
    entry = answer["vmStatsMap"]["i-2-64-VM"]
    assert entry["memoryKBs"] == entry["targetMemoryKBs"] == 1024 * 1024
    assert (entry["numCPUs"], entry["cpuUtilization"]) == (2, 0)  # its processors run nothing
    assert entry["intFreeMemoryKBs"] == -1  # its guest tells nothing while paused
    assert (entry["diskReadKBs"], entry["networkReadKBs"]) == (0, 0)


async def test_vm_stats_is_an_empty_map_without_a_call_when_no_vm_is_named(
    running: Running,
) -> None:
    before = running.emulator.round_trips()
    key, answer = await running.answer(STATS, {"vmNames": []})
    assert (key, answer["result"], answer["vmStatsMap"]) == (STATS_ANSWER, True, {})
    assert (running.emulator.round_trips() - before).calls == 0


async def _processor_loads(cim: EmulatorCim) -> dict[str, float]:
    """ProcessorLoad of every VM, read with a raw GetSummaryInformation call."""
    result = await cim.invoke(await service(cim), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [1, 101]})
    return {str(s["ElementName"]): float(s.integer("ProcessorLoad") or 0)
            for s in result.instances("SummaryInformation")}


# --- the per-VM locks ---------------------------------------------------------------------


async def test_lock_serialises_holders_and_is_forgotten_when_last_holder_leaves() -> None:
    locks = VmLocks()
    order: list[str] = []

    async def hold(tag: str, name: str) -> None:
        async with locks.hold(name):
            order.append(f"{tag}+")
            await asyncio.sleep(0.02)
            order.append(f"{tag}-")

    await asyncio.gather(hold("a", "i-2-70-VM"), hold("b", "I-2-70-vm"))
    assert order == ["a+", "a-", "b+", "b-"]
    assert len(locks) == 0


async def test_lock_is_released_when_holder_fails() -> None:
    locks = VmLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("i-2-71-VM"):
            raise RuntimeError("step failed")
    assert len(locks) == 0
    async with asyncio.timeout(1), locks.hold("i-2-71-VM"):
        pass


async def test_state_report_is_one_round_trip_whose_answer_fits_a_thousand_vms(
        running: Running) -> None:
    cim = running.emulator
    vsms = await service(cim)
    template = await cim.spawn("Msvm_VirtualSystemSettingData")
    for index in range(200):
        result = await cim.invoke(vsms, "DefineSystem", {"SystemSettings": template.updated(
            ElementName=f"i-2-{index}-VM", Notes=[f"uuid-{index}"])})
        assert result.return_value in (0, 4096)
    await running.post(REPORT, {})  # finds the service
    before, requests = cim.round_trips(), running.requests()
    status, report = await running.post(REPORT, {})
    assert status == 200 and report == []  # none runs
    assert (cim.round_trips() - before).calls == 1
    if running.face is not None:
        assert running.requests() - requests == 1
        per_vm = running.face.service.last_answer_bytes / 200
        assert per_vm * 1000 + 2000 < 512_000, per_vm  # 1000 VMs: still one answer


@pytest.mark.parametrize("name", ["", "   ", "\t"])
async def test_vnc_port_fails_saying_the_name_is_blank_when_it_is(
    running: Running, name: str,
) -> None:
    before = running.emulator.round_trips()
    key, answer = await running.answer(VNC, {"id": 99, "name": name})
    assert (key, answer["result"], answer["port"]) == (VNC_ANSWER, False, -9)
    assert answer.get("address") is None
    assert answer["details"] == ("GetVncPortCommand failed: the command names no VM: its "
                                 f"name {name!r} is blank"), answer
    assert (running.emulator.round_trips() - before).calls == 0


_ISO_STORE = "cifs://10.1.1.2/secondary?user=admin&password=s3cret"
_MAC = "02:00:4c:5f:00:08"


def _data_disk() -> dict[str, object]:
    return {"type": "DATADISK", "diskSeq": 1, "data": {names.VOLUME_OBJECT_TO: {
        "uuid": "vol-7", "path": "vol-7", "volumeType": "DATADISK", "format": "VHDX",
        "name": "vol-7", "size": 1 << 26, "id": 31, "dataStore": {
            names.PRIMARY_DATA_STORE_TO: {
                "uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "id": 201,
                "host": "10.1.1.1", "poolType": "Filesystem", "path": LOCAL_POOL,
                "port": 0}}}}}


def _start_body(name: str) -> dict[str, object]:
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    body["vm"]["name"] = name
    return body


#: Each other command naming a VM by name: its id, FQCN, answer class, the member holding
#: the name and its body naming ``name``.
_NAMING: list[tuple[str, str, str, str, Callable[[str], dict[str, object]]]] = [
    ("stop", STOP, STOP_ANSWER, "vmName", _stop),
    ("reboot", REBOOT, REBOOT_ANSWER, "vmName", lambda name: {"vmName": name}),
    ("check", CHECK, CHECK_ANSWER, "vmName", lambda name: {"vmName": name}),
    ("get-vm-stats", STATS, STATS_ANSWER, "vmNames[1]",
     lambda name: {"vmNames": ["i-2-60-VM", name]}),
    ("get-vnc-port", VNC, VNC_ANSWER, "name", lambda name: {"id": 99, "name": name}),
    ("prepare-for-migration", names.PREPARE_FOR_MIGRATION_COMMAND,
     names.PREPARE_FOR_MIGRATION_ANSWER, "vm.name", lambda name: prepare_body(vm_to(name))),
    ("migrate", names.MIGRATE_COMMAND, names.MIGRATE_ANSWER, "vmName",
     lambda name: migrate_body(vm_to(name), "127.0.0.3")),
    ("attach", names.ATTACH_COMMAND, names.ATTACH_ANSWER, "vmName",
     lambda name: {"vmName": name, "disk": _data_disk()}),
    ("dettach", names.DETTACH_COMMAND, names.DETTACH_ANSWER, "vmName",
     lambda name: {"vmName": name, "disk": _data_disk()}),
    ("attach-iso", names.ATTACH_ISO_COMMAND, names.ANSWER, "vmName",
     lambda name: {"vmName": name, "storeUrl": _ISO_STORE, "isoPath": "iso/tools.iso",
                   "attach": True}),
    ("start", names.START_COMMAND, names.START_ANSWER, "vm.name", _start_body),
    ("scale", names.SCALE_VM_COMMAND, names.SCALE_VM_ANSWER, "vmName",
     lambda name: {"vmName": name, "cpus": 1, "minRam": 512 << 20, "maxRam": 512 << 20}),
    ("scale-by-vm", names.SCALE_VM_COMMAND, names.SCALE_VM_ANSWER, "vm.name",
     lambda name: {"vm": vm_to(name), "cpus": 1, "minRam": 512 << 20,
                   "maxRam": 512 << 20}),
    ("get-vm-config", names.GET_VM_CONFIG_COMMAND, names.GET_VM_CONFIG_ANSWER, "vmName",
     lambda name: {"vmName": name}),
    ("modify-vm-nic-config", names.MODIFY_VM_NIC_CONFIG_COMMAND,
     names.MODIFY_VM_NIC_CONFIG_ANSWER, "vmName",
     lambda name: {"vmName": name, "macAddress": _MAC, "vlan": "vlan://261"}),
    ("plug-nic", names.PLUG_NIC_COMMAND, names.PLUG_NIC_ANSWER, "instanceName",
     lambda name: {"instanceName": name, "nic": {"mac": _MAC, "name": "External"}}),
    ("unplug-nic", names.UNPLUG_NIC_COMMAND, names.UNPLUG_NIC_ANSWER, "instanceName",
     lambda name: {"instanceName": name, "nic": {"mac": _MAC}}),
    ("pvlan-setup-dhcp", names.PVLAN_SETUP_COMMAND, names.ANSWER, "dhcpName",
     lambda name: {"op": "add", "type": "DHCP", "dhcpName": name, "dhcpMac": _MAC,
                   "primary": "100", "isolated": "200", "pvlanType": "I"}),
    ("security-group-rules", names.SECURITY_GROUP_RULES_CMD,
     names.SECURITY_GROUP_RULE_ANSWER, "vmName",
     lambda name: {"vmName": name, "guestMac": _MAC, "guestIp": "10.1.1.80", "vmId": 8,
                   "seqNum": 1, "ingressRuleSet": [], "egressRuleSet": []}),
    ("network-rules-secondary-ip", names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND,
     names.ANSWER, "vmName",
     lambda name: {"vmName": name, "vmMac": _MAC, "vmSecIp": "10.1.1.81", "action": "-A"}),
    ("network-rules-system-vm", names.NETWORK_RULES_SYSTEM_VM_COMMAND, names.ANSWER,
     "vmName", lambda name: {"vmName": name, "type": "DomainRouter"}),
    ("migrate-with-storage", names.MIGRATE_WITH_STORAGE_COMMAND,
     names.MIGRATE_WITH_STORAGE_ANSWER, "vm.name",
     lambda name: with_storage_body(vm_to(name), "127.0.0.3", smb_pool())),
    ("migrate-volume", names.MIGRATE_VOLUME_COMMAND, names.MIGRATE_VOLUME_ANSWER,
     "attachedVmName", lambda name: volume_body("vol-7", name, smb_pool())),
    ("get-vm-disk-stats", names.GET_VM_DISK_STATS_COMMAND, names.GET_VM_DISK_STATS_ANSWER,
     "vmNames[1]", lambda name: {"vmNames": ["i-2-60-VM", name], "hostName": "hv-1"}),
    ("get-vm-network-stats", names.GET_VM_NETWORK_STATS_COMMAND,
     names.GET_VM_NETWORK_STATS_ANSWER, "vmNames[1]",
     lambda name: {"vmNames": ["i-2-60-VM", name], "hostName": "hv-1"}),
    ("destroy", names.DESTROY_COMMAND, names.ANSWER, "vmName",
     lambda name: {"vmName": name, "volume": {
         "id": 9, "mountPoint": LOCAL_POOL, "path": "vol-7", "storagePoolType": "Filesystem",
         "size": 1 << 26}}),
]


#: Names no VM has, each as the refusal shows it: blank ones, and ones holding a character
#: XML cannot carry (a C0 control but tab, CR and LF; a noncharacter), with that character.
_NO_VM_NAMES: list[tuple[str, str, str | None]] = [
    ("", "''", None),
    ("  ", "'  '", None),
    ("\t\n", "'\\t\\n'", None),
    ("i-2-61\x1b-VM", "'i-2-61\\x1b-VM'", "U+001B at offset 6"),
    ("i-2-61-VM\x00", "'i-2-61-VM\\x00'", "U+0000 at offset 9"),
    ("\x7fi\x0b", "'\\x7fi\\x0b'", "U+000B at offset 2"),
    ("i-\ufffe", "'i-\ufffe'", "U+FFFE at offset 2"),
]


@pytest.mark.parametrize(("fqcn", "answer_class", "field", "body"),
                         [entry[1:] for entry in _NAMING], ids=[e[0] for e in _NAMING])
async def test_every_command_naming_a_vm_refuses_a_name_no_vm_has_without_a_query(
    running: Running, fqcn: str, answer_class: str, field: str,
    body: Callable[[str], dict[str, object]],
) -> None:
    """Every command naming a VM checks the name in one place (``named_vm``): a blank one,
    or one holding a character XML cannot carry, fails the command's own answer saying so,
    quoting the name escaped, its member and the character, before any query or file
    lookup, on every backend alike. Before: a Stop answered success for a VM it never
    stopped; over WinRM a query holding such a name was refused as a request that is not
    well-formed XML, not answered as a VM not there; a Destroy found no file under such a
    name and answered success; an attach looked for its file first; a MigrateVolume,
    MigrateWithStorage or GetVmDiskStats sent it to Hyper-V in a query; a
    GetVmNetworkStats had Hyper-V summarise every VM to look for it, and answered success
    without it."""
    short = fqcn.rsplit(".", 1)[-1]
    for name, shown, character in _NO_VM_NAMES:
        if name == "" and field == "attachedVmName":
            continue  # an empty attachedVmName says the volume is in no VM: a detached move
        details = (f"{short} failed: the command names no VM: its {field} {shown} is blank"
                   if character is None else
                   f"{short} failed: the command names no VM Hyper-V can be asked for: its "
                   f"{field} {shown} holds {character}, a character XML cannot carry (a "
                   "control character other than tab, LF and CR, or a noncharacter)")
        before = running.emulator.round_trips()
        key, answer = await running.answer(fqcn, body(name))
        assert (key, answer["result"]) == (answer_class, False), answer
        assert answer["details"] == details, answer
        assert (running.emulator.round_trips() - before).calls == 0, name
