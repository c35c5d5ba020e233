"""hyperv.vms and hyperv.power on a VM whose live move begins after it was looked up: a
move between two emulated hosts of one clock, raced by the operation. Hyper-V refuses
the VM's turn-off, reset and removal meanwhile (32775), the answer it gives a turn-off of
a VM already off; the operations tell the two apart and never read a refusal as done."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim.api import MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import MethodFailed, VmMigrating
from hyperv_agent.hyperv import power, vms
from hyperv_agent.hyperv.vms import PowerState, VmRef
from tests.emulator.kit import Clock
from tests.emulator.migration_kit import LIVE, build_vm, migrate, new_disk
from tests.sessions import hv

SOURCE, DESTINATION = "HV-RACE-A", "HV-RACE-B"
JOB_S = 10.0
RUNNING, COMPLETED = 4, 7



Hosts = tuple[EmulatorCim, EmulatorCim, Clock]


def _config(tmp_path: Path, name: str, ip: str) -> EmulatorConfig:
    return EmulatorConfig(state_dir=tmp_path / name / "state", host_name=name, private_ip=ip,
                          drives={"C": tmp_path / name / "C", "S": tmp_path / "shared"})


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    clock = Clock()
    source = EmulatorCim.open(_config(tmp_path, SOURCE, "10.0.9.21"), clock)
    destination = EmulatorCim.open(_config(tmp_path, DESTINATION, "10.0.9.22"), clock)
    yield source, destination, clock
    await source.close()
    await destination.close()


async def _vm(source: EmulatorCim, name: str, *, running: bool = True) -> tuple[ObjectPath,
                                                                                 VmRef]:
    """A VM on shared storage, as a command's lookup finds it before its move begins;
    from then on each job of the source takes ``JOB_S``."""
    disk = f"S:\\vms\\{name}.vhdx"
    new_disk(source.host.paths.local(disk))
    path = await build_vm(source, disk, name=name, running=running)
    source.host.config = dataclasses.replace(source.host.config,
                                             latency=LatencyModel(job_s=JOB_S))
    found = await vms.find_vm(hv(source), name)
    assert found is not None and not found.migrating
    return path, found


async def _moving(source: EmulatorCim, path: ObjectPath) -> ObjectPath:
    """The live move of ``path`` to the destination, begun; its job's path."""
    result = await migrate(source, path, DESTINATION, LIVE)
    job = result.path("Job")
    assert result.return_value == 4096 and job is not None
    assert (await source.get(job))["JobState"] == RUNNING
    return job


def _after(source: EmulatorCim, clock: Clock, method: str,
           monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the source has answered a call of ``method``, the time moves on past the jobs
    under way: the move ends (the VM on the destination) before the next round trip."""
    invoke = source.invoke

    async def invoking(target: ObjectPath, called: str, params: Mapping[str, Any],
                       *args: Any, **kwargs: Any) -> MethodResult:
        result = await invoke(target, called, params, *args, **kwargs)
        if called == method:
            clock.now += JOB_S + 0.1
        return result

    monkeypatch.setattr(source, "invoke", invoking)


async def _where(hosts: Hosts, path: ObjectPath) -> tuple[str, int, tuple[int, ...]]:
    """The host showing the VM (one only), its EnabledState and OperationalStatus there."""
    shown = []
    for cim in hosts[:2]:
        assert isinstance(cim, EmulatorCim)
        found = await cim.query("SELECT EnabledState, OperationalStatus FROM "
                                f"Msvm_ComputerSystem WHERE Name = '{path.key('Name')}'")
        shown += [(cim.host.name, vm.integer("EnabledState") or 0,
                   vm.integers("OperationalStatus")) for vm in found]
    assert len(shown) == 1, shown
    return shown[0]


async def test_a_stop_whose_vm_begins_its_move_after_the_lookup_fails_saying_so(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop's guest shutdown and turn-off are refused (32775) because the move began
    since the lookup: the turn-off's refusal is told by one read, and the stop fails
    saying the VM is being migrated, with no removal asked; the VM moves on, running.
    Read as "already off", the removal that followed failed only once the move had
    taken the VM away, and the stop read as done."""
    source, _, clock = hosts
    path, looked_up = await _vm(source, "raced-stop")
    job = await _moving(source, path)
    _after(source, clock, "DestroySystem", monkeypatch)
    before = source.round_trips()
    with pytest.raises(VmMigrating, match="the turn-off of VM raced-stop was not done: the "
                                          "VM is being migrated live from this host"):
        await power.stop_and_remove(hv(source), looked_up)
    spent = source.round_trips() - before
    assert (spent["invoke:RequestStateChange"], spent["invoke:DestroySystem"]) == (1, 0)
    assert await _where(hosts, path) == (SOURCE, 2, (11, 32774))
    clock.now += JOB_S + 0.1
    assert (await source.get(job))["JobState"] == COMPLETED
    assert await _where(hosts, path) == (DESTINATION, 2, (2,))


async def test_a_turn_off_refused_by_a_vm_that_then_left_the_host_is_not_done(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The move ends between the refused turn-off and its read: the VM is gone from the
    source, running on the destination; the turn-off fails saying the VM left, rather
    than reading as done (or as "no such VM")."""
    source, _, clock = hosts
    path, looked_up = await _vm(source, "raced-off")
    await _moving(source, path)
    _after(source, clock, "RequestStateChange", monkeypatch)
    with pytest.raises(VmMigrating, match="has since left this host"):
        await vms.turn_off(hv(source), looked_up.guid, confirm=True)
    assert await _where(hosts, path) == (DESTINATION, 2, (2,))


async def test_a_removal_refused_during_a_move_that_then_carried_the_vm_off_is_not_done(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """An off VM's move begins after the lookup; its removal is refused (its job fails,
    32775) and by the time that job ends the move has carried the VM away: the VM gone
    is no removal, and destroy fails saying the VM left, not "already gone"."""
    source, _, clock = hosts
    path, looked_up = await _vm(source, "raced-destroy", running=False)
    assert looked_up.power is PowerState.STOPPED
    await _moving(source, path)
    _after(source, clock, "DestroySystem", monkeypatch)
    with pytest.raises(VmMigrating, match=r"the removal of VM .* was not done: Hyper-V "
                                          r"refused it .*32775.*has since left this host"):
        await vms.destroy(hv(source), looked_up.guid)
    assert await _where(hosts, path) == (DESTINATION, 3, (2,))


async def test_a_removal_refused_while_the_vm_still_moves_says_it_is_being_migrated(
        hosts: Hosts) -> None:
    """DestroySystem refused at once (its own job time short) while the move runs on: the
    one read after the failure shows the VM migrating, and destroy says so."""
    source, _, _ = hosts
    path, looked_up = await _vm(source, "still-moving", running=False)
    await _moving(source, path)
    source.host.config = dataclasses.replace(source.host.config, latency=LatencyModel())
    with pytest.raises(VmMigrating, match="the removal of VM still-moving was not done: the "
                                          "VM is being migrated live"):
        await vms.destroy(hv(source), looked_up.guid)
    assert await _where(hosts, path) == (SOURCE, 3, (11, 32774))


async def test_a_reset_refused_because_a_move_began_fails_saying_so(hosts: Hosts) -> None:
    """A reboot of a guest that cannot be asked resets the VM; the move begun since the
    lookup has Hyper-V refuse it (32775), which reads as "not running" unless told by
    the VM's read: the reboot fails saying the VM is being migrated, the VM running on."""
    source, _, _ = hosts
    source.faults.lack_integration_services("raced-reboot")
    path, looked_up = await _vm(source, "raced-reboot")
    await _moving(source, path)
    with pytest.raises(VmMigrating, match="the reset of VM raced-reboot was not done"):
        await power.reboot(hv(source), looked_up, "Rebooted by CloudStack")
    assert await _where(hosts, path) == (SOURCE, 2, (11, 32774))


async def test_a_turn_off_of_a_vm_already_off_still_costs_one_call(hosts: Hosts) -> None:
    """Confirming a refusal reads the VM once more on that refusal only: a VM that is off
    and not moving is left off, True."""
    source, _, _ = hosts
    _, looked_up = await _vm(source, "idle", running=False)
    before = source.round_trips()
    assert await vms.turn_off(hv(source), looked_up.guid, confirm=True) is True
    spent = source.round_trips() - before
    assert (spent["invoke:RequestStateChange"], spent["get"], spent.waits) == (1, 1, 0)


async def test_a_change_refused_because_a_move_began_after_the_lookup_says_so(
        hosts: Hosts) -> None:
    """A command's change of a VM looked up before its move began is refused as invalid
    state (32775): ``unless_migrating`` reads the VM once, on that failure alone, and
    fails saying the VM is being migrated live; another failure passes as it was."""
    source, _, _ = hosts
    path, looked_up = await _vm(source, "raced-change")
    await _moving(source, path)
    refused = MethodFailed("AddResourceSettings", 32775, "invalid state")
    before = source.round_trips()
    with pytest.raises(VmMigrating, match="the attach of VM raced-change was not done: the "
                                          "VM is being migrated live") as raised:
        async with vms.unless_migrating(hv(source), looked_up, "the attach"):
            raise refused
    assert raised.value.__cause__ is refused
    assert (source.round_trips() - before)["get"] == 1
    other = MethodFailed("AddResourceSettings", 32768, "failed")
    with pytest.raises(MethodFailed) as passed:
        async with vms.unless_migrating(hv(source), looked_up, "the attach"):
            raise other
    assert passed.value is other


@pytest.mark.parametrize(("name", "running", "refused", "undone", "left_state"), [
    ("left-stop", True, "RequestStateChange", "the turn-off", 2),  # refused turn-off
    ("left-destroy", False, "DestroySystem", "the removal", 3),  # an off VM's removal
])
async def test_a_stop_whose_vm_a_move_carried_off_after_its_refusal_names_the_vm(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch, name: str, running: bool,
        refused: str, undone: str, left_state: int) -> None:
    """The move ends between the stop's refused call (32775, during the move) and its
    read: the StopAnswer's details name the VM as the management server knows it (its
    name), not Hyper-V's GUID, which the management server never sees."""
    source, _, clock = hosts
    path, looked_up = await _vm(source, name, running=running)
    await _moving(source, path)
    _after(source, clock, refused, monkeypatch)
    with pytest.raises(VmMigrating) as raised:
        await power.stop_and_remove(hv(source), looked_up)
    assert f"{undone} of VM {name} was not done" in str(raised.value)
    assert looked_up.guid.lower() not in str(raised.value).lower()
    assert await _where(hosts, path) == (DESTINATION, left_state, (2,))


async def test_a_reset_whose_vm_left_after_its_refusal_names_the_vm(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reboot's reset refused during the move, the move ending before the refusal is
    read: the RebootAnswer names the VM by its name, not its GUID."""
    source, _, clock = hosts
    source.faults.lack_integration_services("left-reboot")
    path, looked_up = await _vm(source, "left-reboot")
    await _moving(source, path)
    _after(source, clock, "RequestStateChange", monkeypatch)
    with pytest.raises(VmMigrating) as raised:
        await power.reboot(hv(source), looked_up, "Rebooted by CloudStack")
    assert "the reset of VM left-reboot was not done" in str(raised.value)
    assert looked_up.guid.lower() not in str(raised.value).lower()


async def test_a_graceful_stop_whose_vm_a_move_carried_off_meanwhile_is_not_done(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graceful stop asks the guest to shut down; before the slow guest is off, a live
    move begun outside this agent (Move-VM by an operator) carries the VM to the other
    host. The VM gone from the wait is not off: the stop fails saying the VM left this
    host while being stopped, asking no removal, and the VM runs on at the destination.
    Read as off, the removal of the VM no longer there read as "already removed", and the
    management server would have released a VM running on elsewhere."""
    source, _, clock = hosts
    path, looked_up = await _vm(source, "moved-off")
    source.host.config = dataclasses.replace(source.host.config, guest_shutdown_s=60.0)
    invoke = source.invoke

    async def invoking(target: ObjectPath, called: str, params: Mapping[str, Any],
                       *args: Any, **kwargs: Any) -> MethodResult:
        result = await invoke(target, called, params, *args, **kwargs)
        if called == "InitiateShutdown":  # the guest takes its time; the move is quicker
            await _moving(source, path)
            clock.now += JOB_S + 0.1
        return result

    monkeypatch.setattr(source, "invoke", invoking)
    before = source.round_trips()
    with pytest.raises(VmMigrating, match="the stop of VM moved-off was not done: the VM "
                                          "left this host while being stopped, before its "
                                          "guest had shut it down") as raised:
        await power.stop_and_remove(hv(source), looked_up)
    assert looked_up.guid.lower() not in str(raised.value).lower()
    spent = source.round_trips() - before
    assert (spent["invoke:RequestStateChange"], spent["invoke:DestroySystem"]) == (0, 0)
    assert await _where(hosts, path) == (DESTINATION, 2, (2,))
