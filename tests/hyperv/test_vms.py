"""hyperv.vms: listing, lookup, statistics, power-off and removal on the emulated host."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import HyperVError, JobFailed, JobLost
from hyperv_agent.hyperv import vms
from hyperv_agent.hyperv.schema import RequestedState
from hyperv_agent.hyperv.vms import PowerState
from tests.emulator.kit import (
    attach_vhdx,
    define_vm,
    devices,
    ok,
    request_state,
    service,
    state,
)
from tests.sessions import hv


async def _define(cim: EmulatorCim, name: str, notes: Sequence[str] = ()) -> ObjectPath:
    vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName=name, Notes=list(notes))
    result = await ok(cim, await cim.invoke(await service(cim), "DefineSystem",
                                            {"SystemSettings": vssd, "ResourceSettings": []}))
    path = result.path("ResultingSystem")
    assert path is not None
    return path


async def _start(cim: EmulatorCim, vm: ObjectPath) -> None:
    await ok(cim, await request_state(cim, vm, 2))


# --- power states -------------------------------------------------------------------------


@pytest.mark.parametrize(("enabled_state", "power"), [
    (2, PowerState.RUNNING), (10, PowerState.RUNNING), (32773, PowerState.RUNNING),
    (32777, PowerState.RUNNING), (3, PowerState.STOPPED), (4, PowerState.STOPPED),
    (6, PowerState.SAVED), (32769, PowerState.SAVED), (9, PowerState.PAUSED),
    (32768, PowerState.PAUSED), (0, PowerState.UNKNOWN), (5, PowerState.UNKNOWN),
    (None, PowerState.UNKNOWN),
])
def test_power_state_folds_v1_and_v2_numbers_when_mapping_enabled_state(
    enabled_state: int | None, power: PowerState,
) -> None:
    assert vms.power_state(enabled_state) is power


# --- listing ------------------------------------------------------------------------------


async def test_list_vms_is_one_call_when_host_has_50_vms(emulator: EmulatorCim) -> None:
    paths = [await _define(emulator, f"vm{i:02}", [f"note {i}", "CloudStack"] if i % 2 else [])
             for i in range(50)]
    for path in paths[::10]:
        await _start(emulator, path)
    await vms.list_vms(hv(emulator))  # the first call also finds the management service
    before = emulator.round_trips()
    listed = await vms.list_vms(hv(emulator))
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["invoke:GetSummaryInformation"], spent.waits) == (1, 1, 0)
    by_name = {vm.name: vm for vm in listed}
    assert len(listed) == 50 and sorted(by_name) == [f"vm{i:02}" for i in range(50)]
    running = sorted(vm.name for vm in listed if vm.power is PowerState.RUNNING)
    assert running == ["vm00", "vm10", "vm20", "vm30", "vm40"]
    assert sum(vm.power is PowerState.STOPPED for vm in listed) == 45
    assert by_name["vm07"].notes == ("note 7", "CloudStack") and by_name["vm08"].notes == ()
    assert by_name["vm07"].guid == paths[7].key("Name")


async def test_list_vms_costs_one_query_more_when_backend_is_new(emulator: EmulatorCim) -> None:
    await define_vm(emulator, "only")
    before = emulator.round_trips()
    assert [vm.name for vm in await vms.list_vms(hv(emulator))] == ["only"]
    first = emulator.round_trips() - before
    assert (first.calls, first["query"]) == (2, 1)


async def test_list_vms_sees_every_change_when_listings_repeat(emulator: EmulatorCim) -> None:
    first = await _define(emulator, "first")
    session = hv(emulator)
    assert [(vm.name, vm.power) for vm in await vms.list_vms(session)] == [
        ("first", PowerState.STOPPED)]
    again = await vms.list_vms(session)  # nothing changed: the same listing, one call
    assert [vm.name for vm in again] == ["first"]
    again.clear()  # the caller's copy: the next listing is whole
    await _start(emulator, first)
    await _define(emulator, "second")
    listed = await vms.list_vms(session)
    assert [(vm.name, vm.power) for vm in listed] == [
        ("first", PowerState.RUNNING), ("second", PowerState.STOPPED)]
    assert [vm.name for vm in await vms.list_vms(session)] == ["first", "second"]


async def test_list_vms_is_empty_when_host_has_no_vm(emulator: EmulatorCim) -> None:
    assert await vms.list_vms(hv(emulator)) == []


async def test_list_vms_reports_paused_and_saved_when_vms_are_suspended(
    emulator: EmulatorCim,
) -> None:
    paused, saved = await define_vm(emulator, "paused"), await define_vm(emulator, "saved")
    for vm, requested in ((paused, 9), (saved, 6)):
        await _start(emulator, vm)
        await ok(emulator, await request_state(emulator, vm, requested))
    powers = {vm.name: vm.power for vm in await vms.list_vms(hv(emulator))}
    assert powers == {"paused": PowerState.PAUSED, "saved": PowerState.SAVED}


# --- lookup -------------------------------------------------------------------------------


async def test_find_vm_returns_guid_and_power_when_name_exists(emulator: EmulatorCim) -> None:
    path = await define_vm(emulator, "web-1")
    await define_vm(emulator, "web-2")
    before = emulator.round_trips()
    found = await vms.find_vm(hv(emulator), "web-1")
    assert (emulator.round_trips() - before).calls == 1
    assert found == vms.VmRef(path.key("Name"), "web-1", PowerState.STOPPED)
    assert found.path == path


async def test_find_vm_returns_none_when_name_is_unknown_or_the_host(
    emulator: EmulatorCim,
) -> None:
    await define_vm(emulator, "web-1")
    assert await vms.find_vm(hv(emulator), "web-3") is None
    assert await vms.find_vm(hv(emulator), "HYPERV-EMU") is None  # the host, not a VM
    assert await vms.find_vm(hv(emulator), "it's") is None  # quoting holds


# --- statistics ---------------------------------------------------------------------------


async def test_vm_stats_is_one_call_when_names_are_given(emulator: EmulatorCim) -> None:
    running, _ = await define_vm(emulator, "a"), await define_vm(emulator, "b")
    await define_vm(emulator, "not-asked")
    await _start(emulator, running)
    await vms.list_vms(hv(emulator))  # warm the management-service cache
    before = emulator.round_trips()
    stats = await vms.vm_stats(hv(emulator), ["a", "b", "ghost"])
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 0)
    assert sorted(stats) == ["a", "b"]  # the unknown name is skipped
    a, b = stats["a"], stats["b"]
    assert (a.running, a.cpus, a.memory_mb) == (True, 1, 1024)
    assert 0 < a.cpu_utilization_percent <= 100 and a.uptime_ms >= 0
    assert b == vms.VmStats(cpu_utilization_percent=0.0, cpus=1, memory_mb=0, uptime_ms=0,
                            running=False, guid=b.guid)
    assert a.guid and b.guid and a.guid != b.guid


async def test_vm_stats_of_two_vms_of_one_name_are_those_of_the_one_that_is_on(
    emulator: EmulatorCim,
) -> None:
    """A stopped definition left beside the running VM of its name is not the VM
    CloudStack asks about, as ``find_vm`` and the state report take it: its stats (and
    GUID, which GetVmNetworkStats reads the NICs of) are the running one's, whether the
    GUIDs were learnt by a listing or by the stats' own call."""
    leftover, live = await define_vm(emulator, "i-2-7-VM"), await define_vm(emulator, "i-2-7-VM")
    await _start(emulator, live)
    session = hv(emulator)
    first = await vms.vm_stats(session, ["i-2-7-VM"])  # no GUID known: every VM asked
    await vms.list_vms(session)
    learnt = await vms.vm_stats(session, ["i-2-7-VM"])  # the GUID the listing learnt
    for stats in (first, learnt):
        assert stats["i-2-7-VM"].running, leftover
        assert stats["i-2-7-VM"].guid == live.key("Name").upper()


async def test_vm_stats_makes_no_call_when_no_name_is_asked(emulator: EmulatorCim) -> None:
    before = emulator.round_trips()
    assert await vms.vm_stats(hv(emulator), []) == {}
    assert (emulator.round_trips() - before).calls == 0


# --- power-off and removal ----------------------------------------------------------------


async def test_remove_vm_keeps_disk_file_when_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await define_vm(emulator, "doomed")
    disk = await attach_vhdx(emulator, vm, tmp_path / "C")
    await _start(emulator, vm)
    await vms.list_vms(hv(emulator))  # warm the management-service cache
    before = emulator.round_trips()
    assert await vms.remove_vm(hv(emulator), vm.key("Name")) is True
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (2, 2)
    assert spent["invoke:RequestStateChange"] == spent["invoke:DestroySystem"] == 1
    assert await vms.find_vm(hv(emulator), "doomed") is None
    assert await devices(emulator, vm) == []
    assert await emulator.query(wql.select("Msvm_VirtualSystemSettingData",
                                           wql.eq("ElementName", "doomed"))) == []
    assert disk.is_file() and vhd.read_info(disk).virtual_size_bytes == 1 << 30


async def test_remove_vm_waits_once_when_vm_is_already_off(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "idle")
    await vms.list_vms(hv(emulator))
    before = emulator.round_trips()
    assert await vms.remove_vm(hv(emulator), vm.key("Name")) is True
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (2, 1)
    assert await vms.list_vms(hv(emulator)) == []


async def test_remove_vm_succeeds_when_vm_is_missing(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "once")
    assert await vms.remove_vm(hv(emulator), vm.key("Name")) is True
    before = emulator.round_trips()
    assert await vms.remove_vm(hv(emulator), vm.key("Name")) is False
    assert await vms.remove_vm(hv(emulator), "00000000-0000-0000-0000-000000000000") is False
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (2, 0)  # one call each


async def test_remove_vm_leaves_vm_defined_when_turn_off_job_fails(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "stubborn")
    await _start(emulator, vm)
    emulator.faults.fail_next_job("RequestStateChange")
    with pytest.raises(JobFailed):
        await vms.remove_vm(hv(emulator), vm.key("Name"))
    found = await vms.find_vm(hv(emulator), "stubborn")
    assert found is not None and found.power is PowerState.RUNNING


async def test_turn_off_raises_job_failed_when_job_fails(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "runner")
    await _start(emulator, vm)
    emulator.faults.fail_next_job("RequestStateChange", 32768, "the guest refused")
    with pytest.raises(JobFailed) as raised:
        await vms.turn_off(hv(emulator), vm.key("Name"))
    assert (raised.value.method, raised.value.error_code) == ("RequestStateChange", 32768)
    assert await state(emulator, vm) == 2  # nothing changed


async def test_turn_off_is_safe_to_repeat_when_vm_is_already_off(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "runner")
    await _start(emulator, vm)
    assert await vms.turn_off(hv(emulator), vm.key("Name")) is True
    before = emulator.round_trips()
    assert await vms.turn_off(hv(emulator), vm.key("Name")) is True
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 0)  # 32775 accepted, no job
    assert await state(emulator, vm) == 3


async def test_turn_off_returns_false_when_vm_is_missing(emulator: EmulatorCim) -> None:
    assert await vms.turn_off(hv(emulator), "00000000-0000-0000-0000-000000000000") is False


async def test_destroy_succeeds_when_vm_is_already_gone(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "gone")
    assert await vms.destroy(hv(emulator), vm.key("Name")) is True
    before = emulator.round_trips()
    assert await vms.destroy(hv(emulator), vm.key("Name")) is False
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (2, 0)  # the refused call and the existence check


async def test_destroy_refused_and_vm_kept_when_vm_runs(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "busy")
    await _start(emulator, vm)
    with pytest.raises(HyperVError):
        await vms.destroy(hv(emulator), vm.key("Name"))
    found = await vms.find_vm(hv(emulator), "busy")
    assert found is not None and found.power is PowerState.RUNNING


# --- jobs Hyper-V loses -------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "reached"), [(2, 2), (3, 3)])
async def test_a_state_change_whose_job_was_lost_is_told_by_the_vms_state(
    emulator: EmulatorCim, requested: int, reached: int,
) -> None:
    """The job of a start or a turn-off went before it was read, its work done: the VM in
    the state asked for is the change made, told by one get."""
    vm = await define_vm(emulator, "told")
    if requested == 3:
        await _start(emulator, vm)
    emulator.faults.lose_next_job("RequestStateChange", done=True)
    before = emulator.round_trips()
    await vms.request_state(hv(emulator), vm.key("Name"), RequestedState(requested))
    assert (emulator.round_trips() - before)["get"] == 1
    assert await state(emulator, vm) == reached


async def test_a_state_change_whose_job_was_lost_undone_fails_naming_the_lost_job(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "untold")
    await _start(emulator, vm)
    emulator.faults.lose_next_job("RequestStateChange", done=False)
    before = emulator.round_trips()
    with pytest.raises(JobLost, match="lost track of its RequestStateChange job"):
        await vms.turn_off(hv(emulator), vm.key("Name"))
    assert (emulator.round_trips() - before)["get"] == 1
    assert await state(emulator, vm) == 2


async def test_a_reset_whose_job_was_lost_fails_without_a_read(emulator: EmulatorCim) -> None:
    """A reset leaves a running VM running: its state cannot tell whether it was made."""
    vm = await define_vm(emulator, "reset")
    await _start(emulator, vm)
    emulator.faults.lose_next_job("RequestStateChange", done=True)
    before = emulator.round_trips()
    with pytest.raises(JobLost):
        await vms.request_state(hv(emulator), vm.key("Name"), RequestedState.RESET)
    assert (emulator.round_trips() - before)["get"] == 0


async def test_a_destroy_whose_job_was_lost_is_told_by_the_vm_gone(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "destroyed")
    emulator.faults.lose_next_job("DestroySystem", done=True)
    assert await vms.destroy(hv(emulator), vm.key("Name")) is True
    assert await vms.find_vm(hv(emulator), "destroyed") is None
    kept = await define_vm(emulator, "kept")
    emulator.faults.lose_next_job("DestroySystem", done=False)
    with pytest.raises(JobLost, match="DestroySystem"):
        await vms.destroy(hv(emulator), kept.key("Name"))
    assert await vms.find_vm(hv(emulator), "kept") is not None
