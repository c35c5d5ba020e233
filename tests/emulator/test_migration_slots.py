"""Moves beyond the host's limit: Hyper-V runs at most MaximumActiveVirtualSystemMigration
live migrations of one host at once (MaximumActiveStorageMigration storage moves); it
accepts more, and their jobs wait queued (New, 0 percent) until one of those running
ends, then run their whole duration."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperv_agent.cim.api import MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel, MigrationSettings
from hyperv_agent.errors import CimNotFound
from tests.emulator.kit import (
    Clock,
    add,
    devices,
    finished,
    ok,
    request_state,
    service,
    system_settings,
    template,
)
from tests.emulator.migration_kit import (
    LIVE,
    MIGRATION,
    STORAGE,
    build_vm,
    call,
    migrate,
    moved_disk,
    new_disk,
)

SOURCE, DESTINATION = "HV-SLOTS-A", "HV-SLOTS-B"
JOB_S = 10.0
NEW, RUNNING, COMPLETED, TERMINATED, EXCEPTION = 2, 4, 7, 8, 10
ENABLED = 2



Hosts = tuple[EmulatorCim, EmulatorCim, Clock]


def _config(tmp_path: Path, name: str, ip: str, simultaneous: int) -> EmulatorConfig:
    return EmulatorConfig(state_dir=tmp_path / name / "state", host_name=name, private_ip=ip,
                          drives={"C": tmp_path / name / "C", "S": tmp_path / "shared"},
                          migration=MigrationSettings(simultaneous=simultaneous))


@pytest.fixture
async def hosts(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hosts]:
    """A source allowing ``request.param`` moves at once (2, Hyper-V's default, unless
    parametrized), a destination, one clock."""
    clock = Clock()
    simultaneous = getattr(request, "param", 2)
    source = EmulatorCim.open(_config(tmp_path, SOURCE, "10.0.9.1", simultaneous), clock)
    destination = EmulatorCim.open(_config(tmp_path, DESTINATION, "10.0.9.2", 2), clock)
    yield source, destination, clock
    await source.close()
    await destination.close()


async def _vms(source: EmulatorCim, count: int) -> list[ObjectPath]:
    """``count`` running VMs, each with its own disk on shared storage; from then on each
    job of the source takes ``JOB_S``."""
    vms = []
    for index in range(count):
        disk = f"S:\\vms\\root{index}.vhdx"
        new_disk(source.host.paths.local(disk))
        vms.append(await build_vm(source, disk, name=f"mover{index}"))
    source.host.config = dataclasses.replace(source.host.config,
                                             latency=LatencyModel(job_s=JOB_S))
    return vms


async def _states(cim: EmulatorCim, results: list[MethodResult]) -> list[tuple[int, int]]:
    """Each job's (JobState, PercentComplete)."""
    seen = []
    for result in results:
        assert result.return_value == 4096
        job_path = result.path("Job")
        assert job_path is not None
        job = await cim.get(job_path)
        seen.append((job.integer("JobState") or 0, job.integer("PercentComplete") or 0))
    return seen


async def _active(cim: EmulatorCim) -> tuple[int, int]:
    found = await cim.get(await service(cim, MIGRATION))
    return (found.integer("ActiveVirtualSystemMigrationCount") or 0,
            found.integer("ActiveStorageMigrationCount") or 0)


async def test_moves_beyond_the_limit_wait_queued_and_run_as_slots_free(hosts: Hosts) -> None:
    source, _, clock = hosts
    vms = await _vms(source, 4)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert await _states(source, results) == [(RUNNING, 0), (RUNNING, 0), (NEW, 0), (NEW, 0)]
    assert await _active(source) == (2, 0)
    clock.now += JOB_S / 2
    assert await _states(source, results) == [(RUNNING, 50), (RUNNING, 50), (NEW, 0), (NEW, 0)]
    clock.now += JOB_S / 2 + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, COMPLETED, RUNNING, RUNNING]
    assert await _active(source) == (2, 0)
    clock.now += JOB_S
    assert [state for state, _ in await _states(source, results)] == [COMPLETED] * 4
    assert await _active(source) == (0, 0)


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_the_hosts_own_limit_is_the_one_honoured(hosts: Hosts) -> None:
    """Set-VMHost -MaximumVirtualMachineMigrations 1: the second move waits for the
    first; a storage move counts against the other limit and does not wait."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms[:2]]
    results.append(await migrate(source, vms[2], None, STORAGE, [
        await moved_disk(source, vms[2], "S:\\vms\\elsewhere.vhdx")]))
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW, RUNNING]
    assert await _active(source) == (1, 1)
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, RUNNING, COMPLETED]


@pytest.mark.parametrize("hosts", [3], indirect=True)
async def test_moves_within_the_limit_never_wait(hosts: Hosts) -> None:
    source, _, _ = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING] * 3


async def _where(hosts: Hosts, vm: ObjectPath) -> tuple[str, int]:
    """The host that shows the VM (the source, or the destination, never both) and the
    EnabledState it shows there."""
    source, destination, _ = hosts
    found = [(cim.host.name, await cim.query(
        f"SELECT Name, EnabledState FROM Msvm_ComputerSystem WHERE Name = '{vm.key('Name')}'"))
        for cim in (source, destination)]
    shown = [(name, vms[0].integer("EnabledState") or 0) for name, vms in found if vms]
    assert len(shown) == 1, (vm, shown)
    return shown[0]


async def test_a_queued_move_leaves_the_vm_running_on_its_source_until_it_runs(
        hosts: Hosts) -> None:
    """While its job waits for a slot, Hyper-V has not begun to move the VM: the VM runs
    on, and is seen, on its source only; it moves when its job, once run, completes."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, RUNNING, NEW]
    assert [await _where(hosts, vm) for vm in vms] == [(SOURCE, ENABLED)] * 3
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, COMPLETED, RUNNING]
    assert [await _where(hosts, vm) for vm in vms] == [
        (DESTINATION, ENABLED), (DESTINATION, ENABLED), (SOURCE, ENABLED)]
    clock.now += JOB_S
    assert [state for state, _ in await _states(source, results)] == [COMPLETED] * 3
    assert await _where(hosts, vms[2]) == (DESTINATION, ENABLED)


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_queued_move_that_is_cancelled_never_moves_the_vm(hosts: Hosts) -> None:
    """The agent stops a move whose wait ran out (RequestStateChange Terminate on its
    job): a queued one ends Terminated, and its VM stays running on the source, also
    past the moment its move would have run; the running move cannot be stopped."""
    source, _, clock = hosts
    vms = await _vms(source, 2)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    running_job, queued_job = (result.path("Job") for result in results)
    assert running_job is not None and queued_job is not None
    assert (await source.get(queued_job))["Cancellable"] is True
    assert (await source.get(running_job))["Cancellable"] is False
    refused = await source.invoke(running_job, "RequestStateChange", {"RequestedState": 4})
    assert refused.return_value == 4097
    stopped = await source.invoke(queued_job, "RequestStateChange", {"RequestedState": 4})
    assert stopped.return_value == 0
    ended = await source.get(queued_job)
    assert (ended["JobState"], ended["ErrorCode"], ended["Cancellable"]) == (
        TERMINATED, 32768, False)
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)
    clock.now += 2 * JOB_S + 0.1
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)
    assert [state for state, _ in await _states(source, results)] == [COMPLETED, TERMINATED]
    assert await _active(source) == (0, 0)


async def _allow_moves(cim: EmulatorCim, enabled: bool) -> None:
    """EnableVirtualSystemMigration of ``cim``'s host (Enable- or Disable-VMMigration)."""
    settings = await cim.query("SELECT * FROM Msvm_VirtualSystemMigrationServiceSettingData")
    txn = cim.host.store.transaction()
    staged = txn.edit(settings[0].path) if settings[0].path is not None else None
    assert staged is not None
    staged.values["EnableVirtualSystemMigration"] = enabled
    txn.commit()


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_queued_move_is_checked_again_when_it_begins(hosts: Hosts) -> None:
    """Whether a host takes moves is asked as a move begins: the destination, then the
    source, having disabled live migration after the running move began lets that move
    complete, and fails the queued one as it begins (32770), its VM running on the
    source."""
    source, destination, clock = hosts
    vms = await _vms(source, 2)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    await _allow_moves(destination, False)
    clock.now += JOB_S / 2
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW]
    await _allow_moves(source, False)
    clock.now += JOB_S / 2 + 0.1
    assert [state for state, _ in await _states(source, results)] == [COMPLETED, EXCEPTION]
    assert await _where(hosts, vms[0]) == (DESTINATION, ENABLED)
    state, code, text = await _refused(source, results[1])
    assert (state, code) == (EXCEPTION, 32770), text
    assert "does not allow virtual machine migration" in text, text
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)


async def test_a_running_move_that_became_impossible_fails_as_it_ends(hosts: Hosts) -> None:
    """A move that has begun is made as its job ends unless it can no longer be: the
    destination's switch of the VM's port removed meanwhile fails it then (32773, Hyper-V's
    words for a missing switch), the VM running on the source."""
    source, destination, clock = hosts
    vms = await _vms(source, 1)
    result = await migrate(source, vms[0], DESTINATION, LIVE)
    (switch,) = await destination.query(
        "SELECT * FROM Msvm_VirtualEthernetSwitch WHERE ElementName = 'External'")
    assert switch.path is not None
    txn = destination.host.store.transaction()
    txn.delete(switch.path)
    txn.commit()
    clock.now += JOB_S + 0.1
    state, code, text = await _refused(source, result)
    assert (state, code) == (EXCEPTION, 32773), text
    assert "Could not find Ethernet switch 'External'" in text, text
    assert await _where(hosts, vms[0]) == (SOURCE, ENABLED)


async def test_a_queued_move_that_breaks_as_it_ends_fails_its_own_job(hosts: Hosts) -> None:
    """A storage move whose copy cannot be made when it is made (its target folder's name
    taken by a file meanwhile) fails its job as it ends, leaving the disk where it was;
    the read that happens to come first is answered as ever."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    targets = ["S:\\vms\\elsewhere0.vhdx", "S:\\vms\\elsewhere1.vhdx",
               "S:\\vms\\blocked\\elsewhere2.vhdx"]
    results = [await migrate(source, vm, None, STORAGE, [await moved_disk(source, vm, target)])
               for vm, target in zip(vms, targets, strict=True)]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, RUNNING, NEW]
    source.host.paths.local("S:\\vms\\blocked").write_bytes(b"a file, not a folder")
    clock.now += 2 * JOB_S + 0.1
    job_path = results[2].path("Job")
    assert job_path is not None
    job = await source.get(job_path)
    assert (job["JobState"], job["ErrorCode"]) == (EXCEPTION, 32768), job["ErrorDescription"]
    assert str(source.host.paths.local("S:\\")) not in str(job["ErrorDescription"])
    disks = await source.query("SELECT HostResource FROM Msvm_StorageAllocationSettingData "
                               "WHERE ResourceType = 31")
    held = {str(path).lower() for disk in disks for path in disk.strings("HostResource")}
    assert "s:\\vms\\root2.vhdx" in held and targets[2].lower() not in held, held


async def test_the_queue_reads_the_moves_it_holds_not_every_job_kept(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host keeps every job for its retention, thousands on a busy host: a move's place
    in the queue and the active counts come from the moves holding slots, not from a
    walk over every job kept."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    walks = []
    records = type(source.host).records

    def counted(host: object, class_name: str, txn: object = None) -> object:
        if class_name == "CIM_ConcreteJob":
            walks.append(class_name)
        return records(host, class_name, txn)  # type: ignore[arg-type]

    monkeypatch.setattr(type(source.host), "records", counted)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert await _states(source, results) == [(RUNNING, 0), (RUNNING, 0), (NEW, 0)]
    assert await _active(source) == (2, 0)
    clock.now += JOB_S + 0.1
    assert await _active(source) == (1, 0)
    assert walks == []


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_move_queued_behind_a_cancelled_one_runs_when_the_slot_frees(
        hosts: Hosts) -> None:
    """A host running one move at a time, with two queued: the agent stops the first
    queued move (its wait ran out). The slot it waited for is then the next one's: that
    move runs as soon as the running move ends, not after the time the stopped move
    would have taken."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW, NEW]
    queued_job = results[1].path("Job")
    assert queued_job is not None
    clock.now += 1.0
    stopped = await source.invoke(queued_job, "RequestStateChange", {"RequestedState": 4})
    assert stopped.return_value == 0
    clock.now += JOB_S
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, TERMINATED, RUNNING]
    assert await _where(hosts, vms[2]) == (SOURCE, ENABLED)
    assert await _active(source) == (1, 0)
    clock.now += JOB_S
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, TERMINATED, COMPLETED]
    assert await _where(hosts, vms[2]) == (DESTINATION, ENABLED)


async def test_a_move_queued_behind_one_that_fails_as_it_begins_runs_then(
        hosts: Hosts) -> None:
    """A queued move that fails as it begins holds its slot no longer: the move queued
    behind it begins at that moment, with the other one queued beside it."""
    source, _, clock = hosts
    vms = await _vms(source, 5)
    targets = [f"S:\\vms\\elsewhere{index}.vhdx" for index in range(5)]
    results = [await migrate(source, vm, None, STORAGE, [await moved_disk(source, vm, target)])
               for vm, target in zip(vms, targets, strict=True)]
    assert [state for state, _ in await _states(source, results)] == [
        RUNNING, RUNNING, NEW, NEW, NEW]
    source.host.paths.local("S:\\vms\\root2.vhdx").unlink()  # the check as it begins fails
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, COMPLETED, EXCEPTION, RUNNING, RUNNING]
    assert await _active(source) == (0, 2)


async def test_closing_a_host_leaves_the_queued_moves_of_another_of_its_name(
        tmp_path: Path) -> None:
    """Two hosts of one process under the same name (a host made again in another state
    directory): each keeps its own queued moves. Closing one drops its own; the other's
    queued move still runs when a slot frees, on its own host."""
    clock = Clock()
    first = EmulatorCim.open(_config(tmp_path / "first", SOURCE, "10.0.9.5", 2), clock)
    second = EmulatorCim.open(_config(tmp_path / "second", SOURCE, "10.0.9.6", 2), clock)
    try:
        moves = {}
        for cim in (first, second):
            vms = await _vms(cim, 3)
            moves[cim] = [await migrate(cim, vm, None, STORAGE, [
                await moved_disk(cim, vm, f"S:\\vms\\elsewhere{index}.vhdx")])
                for index, vm in enumerate(vms)]
            assert [state for state, _ in await _states(cim, moves[cim])] == [
                RUNNING, RUNNING, NEW]
        await first.close()
        clock.now += JOB_S + 0.1
        assert [state for state, _ in await _states(second, moves[second])] == [
            COMPLETED, COMPLETED, RUNNING]
        clock.now += JOB_S
        disks = await second.query("SELECT HostResource FROM "
                                   "Msvm_StorageAllocationSettingData WHERE ResourceType = 31")
        held = {str(path).lower() for disk in disks for path in disk.strings("HostResource")}
        assert "s:\\vms\\elsewhere2.vhdx" in held and "s:\\vms\\root2.vhdx" not in held, held
    finally:
        await second.close()


async def test_a_queued_move_that_has_begun_is_seen_first_at_its_destination(
        hosts: Hosts) -> None:
    """Once a queued move's job has run its course, its VM is on the destination for a
    read there, though its source was not asked anything since: the move's work is done
    before a primitive of any host of the process the move reaches."""
    source, destination, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, RUNNING, NEW]
    clock.now += 2 * JOB_S + 0.1
    found = await destination.query("SELECT Name FROM Msvm_ComputerSystem WHERE Name = "
                                    f"'{vms[2].key('Name')}'")
    assert len(found) == 1


INVALID_STATE = 32775


async def _refused(cim: EmulatorCim, result: MethodResult) -> tuple[int, int, str]:
    """The (JobState, ErrorCode, ErrorDescription) of a move's job."""
    assert result.return_value == 4096
    job_path = result.path("Job")
    assert job_path is not None
    job = await cim.get(job_path)
    return (job.integer("JobState") or 0, job.integer("ErrorCode") or 0,
            str(job["ErrorDescription"]))


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_vm_whose_move_is_queued_or_under_way_is_not_moved_again(
        hosts: Hosts) -> None:
    """Hyper-V migrates a VM once at a time: asked to move a VM whose move it accepted,
    under way or still queued for a slot, it fails the new move with 32775 (invalid
    state) and keeps the first; the checks say the VM is in no state to move (5). Once
    the first move is done, the VM moves again from where it went."""
    source, destination, clock = hosts
    vms = await _vms(source, 2)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW]
    refused = []
    for vm, where in ((vms[0], "under way"), (vms[1], "queued")):
        # the VM under way is still on its source, so a storage move names its disk there
        for kind, resources in ((LIVE, []), (STORAGE, [
                await moved_disk(source, vm, "S:\\vms\\elsewhere.vhdx")])):
            refused.append((where, await migrate(
                source, vm, DESTINATION if kind == LIVE else None, kind, resources)))
        check = await call(source, "CheckVirtualSystemIsMigratableToHost", vm, DESTINATION)
        assert (check.return_value, check["IsMigratable"]) == (5, None), vm
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW]
    clock.now += 2 * JOB_S + 0.1
    assert [state for state, _ in await _states(source, results)] == [COMPLETED] * 2
    for where, again in refused:  # a refused move's job ends in Exception
        state, code, text = await _refused(source, again)
        assert (state, code) == (EXCEPTION, INVALID_STATE), text
        assert "being migrated" in text and where in text, text
    assert await _where(hosts, vms[1]) == (DESTINATION, ENABLED)
    back = await migrate(destination, vms[1], SOURCE, LIVE)
    assert back.return_value in (0, 4096)
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)


async def test_a_running_move_shows_the_vm_migrating_on_its_source_only(hosts: Hosts) -> None:
    """While a live move's job runs, the VM runs on its source with OperationalStatus In
    Service (11), Migrating Virtual Machine (32774), in its Msvm_ComputerSystem and its
    summary; the destination holds nothing of it. As the job completes it is on the
    destination only, with OperationalStatus OK (2)."""
    source, destination, clock = hosts
    vms = await _vms(source, 1)
    guid = vms[0].key("Name")
    result = await migrate(source, vms[0], DESTINATION, LIVE)
    assert [state for state, _ in await _states(source, [result])] == [RUNNING]
    wql = f"SELECT * FROM Msvm_ComputerSystem WHERE Name = '{guid}'"
    shown = await source.query(wql)
    assert [(vm["EnabledState"], vm["OperationalStatus"]) for vm in shown] == [
        (ENABLED, (11, 32774))]
    assert await destination.query(wql) == []
    assert await destination.query(
        f"SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = '{guid}'"
    ) == []
    vssd = await source.query("SELECT * FROM Msvm_VirtualSystemSettingData WHERE "
                              f"VirtualSystemIdentifier = '{guid}'")
    assert vssd[0].path is not None
    summary = await source.invoke(await service(source, "Msvm_VirtualSystemManagementService"),
                                  "GetSummaryInformation",
                                  {"SettingData": [vssd[0].path], "RequestedInformation": [110]})
    summaries = summary["SummaryInformation"]
    assert isinstance(summaries, tuple)
    assert [s["OperationalStatus"] for s in summaries] == [(11, 32774)]  # type: ignore[index]
    clock.now += JOB_S + 0.1
    assert await source.query(wql) == []
    arrived = await destination.query(wql)
    assert [(vm["EnabledState"], vm["OperationalStatus"]) for vm in arrived] == [(ENABLED, (2,))]


FAILED = 32768


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_move_whose_host_stopped_before_it_ended_is_failed_when_the_host_opens(
        hosts: Hosts, tmp_path: Path) -> None:
    """The source's process stops while one move runs and another waits queued, after a
    third completed: its moves' work waits in that process, which never does it. Opened
    again, the host shows the completed move Completed, and the two others failed
    (Exception, saying the host stopped) rather than Completed, their VMs running on the
    source, no longer migrating; past the moments the moves would have ended, the same."""
    source, destination, clock = hosts
    vms = await _vms(source, 3)
    done = await migrate(source, vms[0], DESTINATION, LIVE)
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, [done])] == [COMPLETED]
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms[1:]]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW]
    clock.now += JOB_S / 2
    await source.close()
    clock.now += 1.0
    reopened = EmulatorCim.open(_config(tmp_path, SOURCE, "10.0.9.1", 1), clock)
    try:
        again = (reopened, destination, clock)
        assert [state for state, _ in await _states(reopened, [done])] == [COMPLETED]
        for _ in range(2):
            for result in results:
                state, code, text = await _refused(reopened, result)
                assert (state, code) == (EXCEPTION, FAILED), text
                assert text == ("MigrateVirtualSystemToHost did not complete: the host "
                                "stopped before the job's work was done, and none of it "
                                "was made."), text
            assert [await _where(again, vm) for vm in vms] == [
                (DESTINATION, ENABLED), (SOURCE, ENABLED), (SOURCE, ENABLED)]
            shown = await reopened.query("SELECT OperationalStatus FROM Msvm_ComputerSystem "
                                         "WHERE Caption = 'Virtual Machine'")
            assert {vm["OperationalStatus"] for vm in shown} == {(2,)}
            assert await _active(reopened) == (0, 0)
            clock.now += 2 * JOB_S
    finally:
        await reopened.close()


async def test_a_move_to_a_name_two_live_hosts_share_is_refused(
        hosts: Hosts, tmp_path: Path) -> None:
    """A second host of the destination's name opened in this process (in its own state
    directory): a move to that name fails its job, as one to a host that cannot be
    reached (32777), saying the name is ambiguous, and the VM stays on its source. With
    one of them closed, the name is the other's again, and the VM moves there."""
    source, _, clock = hosts
    vms = await _vms(source, 1)
    twin = EmulatorCim.open(_config(tmp_path / "twin", DESTINATION, "10.0.9.3", 2), clock)
    try:
        refused = await migrate(source, vms[0], DESTINATION, LIVE)
        clock.now += JOB_S + 0.1
        state, code, text = await _refused(source, refused)
        assert (state, code) == (EXCEPTION, 32777), text
        assert text.endswith(f"Failed to establish a connection with host '{DESTINATION}': 2 "
                             "emulated hosts of this process are named so; the destination "
                             "is ambiguous"), text
        assert await _where(hosts, vms[0]) == (SOURCE, ENABLED)
        assert await twin.query("SELECT Name FROM Msvm_ComputerSystem WHERE Name = "
                                f"'{vms[0].key('Name')}'") == []
    finally:
        await twin.close()
    moved = await migrate(source, vms[0], DESTINATION, LIVE)
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, [moved])] == [COMPLETED]
    assert await _where(hosts, vms[0]) == (DESTINATION, ENABLED)


async def _refusal(cim: EmulatorCim, result: MethodResult) -> tuple[int, str]:
    """The failure code of a call and, for one its job reports, the job's words."""
    job = await finished(cim, result)
    if job is None or result.return_value != 4096:
        return result.return_value, ""
    assert job["JobState"] == EXCEPTION, (job["JobState"], job["ErrorDescription"])
    return int(job.integer("ErrorCode") or 0), str(job["ErrorDescription"])


async def test_a_vm_whose_live_move_is_under_way_takes_no_change_until_it_is_done(
        hosts: Hosts) -> None:
    """Hyper-V moves a VM as it is: while its live move runs, the source refuses the VM's
    state changes (start, stop, pause, save, reset), a shutdown asked of its guest, a
    change to its settings or devices and its removal, with 32775 (invalid state) as for
    a VM whose state changes, the job's words naming the move; its reads are answered.
    The moves then complete, each VM on the destination as it was. A VM whose move waits
    queued still takes changes: its move takes it as it is when it begins."""
    source, destination, clock = hosts
    running, off, queued = vms = await _vms(source, 3)
    assert (await request_state(source, off, 3)).return_value == 4096
    clock.now += JOB_S + 0.1
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms]
    assert [state for state, _ in await _states(source, results)] == [RUNNING, RUNNING, NEW]
    for requested in (3, 9, 6, 11, 10):
        assert (await request_state(source, running, requested)).return_value == \
            INVALID_STATE, requested
    assert (await request_state(source, off, 2)).return_value == INVALID_STATE
    (component,) = await source.query("SELECT * FROM Msvm_ShutdownComponent WHERE "
                                      f"SystemName = '{running.key('Name')}'")
    assert component.path is not None
    asked = await source.invoke(component.path, "InitiateShutdown",
                                {"Force": True, "Reason": "maintenance"})
    assert asked.return_value == INVALID_STATE
    vsms = await service(source)
    memory = (await devices(source, off, "Msvm_MemorySettingData"))[0]
    nic = (await devices(source, off, "Msvm_EthernetPortAllocationSettingData"))[0]
    kept = sorted(str(d["InstanceID"]) for d in await devices(source, off))
    assert nic.path is not None
    changes = [
        source.invoke(vsms, "ModifySystemSettings", {"SystemSettings": (
            await system_settings(source, running)).updated(ElementName="renamed")}),
        add(source, off, [await template(source, "Msvm_ResourceAllocationSettingData",
                                         "Microsoft:Hyper-V:Synthetic SCSI Controller")]),
        source.invoke(vsms, "ModifyResourceSettings",
                      {"ResourceSettings": [memory.updated(VirtualQuantity=1024)]}),
        source.invoke(vsms, "RemoveResourceSettings", {"ResourceSettings": [nic.path]}),
        source.invoke(vsms, "DestroySystem", {"AffectedSystem": off}),
    ]
    refused = [await change for change in changes]
    assert (await source.get(running))["OperationalStatus"] == (11, 32774)
    assert (await request_state(source, queued, 9)).return_value == 4096
    clock.now += JOB_S + 0.1
    for result in refused:  # their jobs end, as the moves', after the job time
        code, text = await _refusal(source, result)
        assert code == INVALID_STATE, text
        assert "being migrated live" in text, text
    assert [state for state, _ in await _states(source, results)] == [
        COMPLETED, COMPLETED, RUNNING]
    assert [await _where(hosts, vm) for vm in vms[:2]] == [(DESTINATION, ENABLED),
                                                           (DESTINATION, 3)]
    arrived = await destination.get(running)
    assert arrived["ElementName"] == "mover0"
    assert sorted(str(d["InstanceID"]) for d in await devices(destination, off)) == kept
    assert (await devices(destination, off, "Msvm_MemorySettingData"))[0][
        "VirtualQuantity"] == memory["VirtualQuantity"]
    clock.now += JOB_S
    assert await _where(hosts, queued) == (DESTINATION, 9)


async def _shutdown_asked(cim: EmulatorCim, vm: ObjectPath, guest_s: float) -> None:
    """The guest of ``vm`` asked to shut down; it takes ``guest_s`` (real seconds: the
    guest's timer runs on the event loop, not on the test's clock)."""
    cim.host.config = dataclasses.replace(cim.host.config, guest_shutdown_s=guest_s)
    (component,) = await cim.query("SELECT * FROM Msvm_ShutdownComponent WHERE "
                                   f"SystemName = '{vm.key('Name')}'")
    assert component.path is not None
    asked = await cim.invoke(component.path, "InitiateShutdown",
                             {"Force": False, "Reason": "maintenance"})
    assert asked.return_value == 0


async def _stopped(hosts: Hosts, vm: ObjectPath) -> tuple[str, int]:
    """Where the VM is and its state, once it no longer runs (at most 5 s)."""
    for _ in range(100):
        where = await _where(hosts, vm)
        if where[1] != ENABLED:
            return where
        await asyncio.sleep(0.05)
    return await _where(hosts, vm)


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_live_move_whose_guest_shut_down_before_the_switch_over_fails(
        hosts: Hosts) -> None:
    """The guest, asked to shut down before the move began, is off while the move runs:
    Hyper-V stops the VM on its source (its guest's own doing), and a live move of a VM
    that no longer runs cannot complete: its job fails as it ends, saying the VM stopped
    running during the move, and the VM stays on its source, off, no longer migrating;
    nothing of it reaches the destination."""
    source, destination, clock = hosts
    (vm,) = await _vms(source, 1)
    await _shutdown_asked(source, vm, 0.3)
    result = await migrate(source, vm, DESTINATION, LIVE)
    assert await _stopped(hosts, vm) == (SOURCE, 4)  # Stopping, the move under way
    assert (await source.get(vm))["OperationalStatus"] == (11, 32774)
    clock.now += JOB_S + 0.1
    state, code, text = await _refused(source, result)
    assert (state, code) == (EXCEPTION, FAILED), text
    assert text == (f"Virtual machine migration operation for 'mover0' failed at migration "
                    f"source '{SOURCE}'. The virtual machine stopped running during the "
                    "move, before the switch-over (its guest shut it down): a live "
                    "migration carries a running virtual machine, so it was not moved."), text
    assert await _where(hosts, vm) == (SOURCE, 3)
    assert (await source.get(vm))["OperationalStatus"] == (2,)
    assert await destination.query("SELECT * FROM Msvm_VirtualSystemSettingData WHERE "
                                   f"VirtualSystemIdentifier = '{vm.key('Name')}'") == []


async def _moved_with_shutdown_pending(hosts: Hosts, left_s: float) -> ObjectPath:
    """A running VM whose guest has accepted a shutdown, moved live to the destination
    before it is done: the move's job completed, the VM running there, its guest
    needing ``left_s`` more (the move's job time passes on the hosts' clock; the rest
    in real time, on the event loop, as the destination times it when the VM arrives)."""
    source, _, clock = hosts
    (vm,) = await _vms(source, 1)
    await _shutdown_asked(source, vm, JOB_S + 0.1 + left_s)
    result = await migrate(source, vm, DESTINATION, LIVE)
    clock.now += JOB_S + 0.1
    assert [state for state, _ in await _states(source, [result])] == [COMPLETED]
    assert await _where(hosts, vm) == (DESTINATION, ENABLED)
    return vm


async def test_a_guest_shutdown_pending_as_the_move_ends_happens_at_the_destination(
        hosts: Hosts) -> None:
    """The guest has accepted a shutdown and takes its time; the live move ends first.
    The guest's shutdown is its own doing and goes on wherever the VM runs: once it is
    done, Hyper-V stops the VM at the destination (Stopping, then off), rather than
    leave it running there."""
    _, destination, _ = hosts
    vm = await _moved_with_shutdown_pending(hosts, 1.0)
    assert await _stopped(hosts, vm) == (DESTINATION, 3)
    arrived = await destination.get(vm)
    assert (arrived["ProcessID"], arrived["OperationalStatus"]) == (None, (2,))


async def test_a_guest_shutdown_pending_as_the_move_ends_goes_on_with_its_source_closed(
        hosts: Hosts) -> None:
    """The guest's shutdown goes on at the destination of this process when its source
    host is closed (its timers with it) before the guest is done: the destination times
    the guest's request as the VM arrives, as one of another process does."""
    source, destination, _ = hosts
    vm = await _moved_with_shutdown_pending(hosts, 0.6)
    await source.close()
    for _ in range(100):
        if (await destination.get(vm))["EnabledState"] != ENABLED:
            break
        await asyncio.sleep(0.05)
    assert (await destination.get(vm))["EnabledState"] == 3


async def test_a_guest_shutdown_pending_as_the_move_ends_dies_with_a_new_boot_there(
        hosts: Hosts) -> None:
    """The move carries the guest and the shutdown it accepted; a VM then turned off and
    started again at the destination boots a guest that knows nothing of it, and runs
    on once the first guest's time is past."""
    _, destination, _ = hosts
    vm = await _moved_with_shutdown_pending(hosts, 0.6)
    for step in (3, 2):
        await ok(destination, await request_state(destination, vm, step))
    assert await _where(hosts, vm) == (DESTINATION, ENABLED)
    await asyncio.sleep(1.0)
    assert await _where(hosts, vm) == (DESTINATION, ENABLED)


# --- a lost job's retention (Faults.lose_next_job) ----------------------------------------

MIGRATE = "MigrateVirtualSystemToHost"


async def _gone(cim: EmulatorCim, result: MethodResult) -> bool:
    """Whether the job of ``result`` answers not found."""
    job = result.path("Job")
    assert job is not None
    try:
        await cim.get(job)
    except CimNotFound:
        return True
    return False


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_lost_move_moved_up_the_queue_goes_the_moment_it_ends(hosts: Hosts) -> None:
    """A move the host loses, its work done, queued behind one the agent stops: it
    begins sooner, and still goes as it ends, unread."""
    source, _, clock = hosts
    vms = await _vms(source, 3)
    results = [await migrate(source, vm, DESTINATION, LIVE) for vm in vms[:2]]
    source.faults.lose_next_job(MIGRATE, done=True)
    results.append(await migrate(source, vms[2], DESTINATION, LIVE))
    assert [state for state, _ in await _states(source, results)] == [RUNNING, NEW, NEW]
    queued_job = results[1].path("Job")
    assert queued_job is not None
    stopped = await source.invoke(queued_job, "RequestStateChange", {"RequestedState": 4})
    assert stopped.return_value == 0
    clock.now += 2 * JOB_S + 0.1  # the lost move began as the first ended, and ended
    assert await _where(hosts, vms[2]) == (DESTINATION, ENABLED)
    assert await _gone(source, results[2])


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_lost_move_stopped_goes_the_moment_it_is_stopped(hosts: Hosts) -> None:
    source, _, clock = hosts
    vms = await _vms(source, 2)
    first = await migrate(source, vms[0], DESTINATION, LIVE)
    source.faults.lose_next_job(MIGRATE, done=True)
    lost = await migrate(source, vms[1], DESTINATION, LIVE)
    assert [state for state, _ in await _states(source, [first, lost])] == [RUNNING, NEW]
    lost_job = lost.path("Job")
    assert lost_job is not None
    stopped = await source.invoke(lost_job, "RequestStateChange", {"RequestedState": 4})
    assert stopped.return_value == 0
    clock.now += 0.1
    assert await _gone(source, lost)
    assert await _where(hosts, vms[1]) == (SOURCE, ENABLED)


async def test_a_lost_move_that_fails_as_it_begins_goes_the_moment_it_fails(
        hosts: Hosts) -> None:
    source, _, clock = hosts
    vms = await _vms(source, 3)
    targets = [f"S:\\vms\\elsewhere{index}.vhdx" for index in range(3)]
    results = []
    for index, (vm, target) in enumerate(zip(vms, targets, strict=True)):
        if index == 2:
            source.faults.lose_next_job(MIGRATE, done=True)
        results.append(await migrate(source, vm, None, STORAGE,
                                     [await moved_disk(source, vm, target)]))
    assert [state for state, _ in await _states(source, results[:2])] == [RUNNING, RUNNING]
    source.host.paths.local("S:\\vms\\root2.vhdx").unlink()  # the check as it begins fails
    clock.now += JOB_S + 0.1
    assert await _gone(source, results[2])


@pytest.mark.parametrize("hosts", [1], indirect=True)
async def test_a_lost_move_whose_host_stopped_goes_once_failed_as_the_host_opens(
        hosts: Hosts, tmp_path: Path) -> None:
    source, _, clock = hosts
    vms = await _vms(source, 2)
    await migrate(source, vms[0], DESTINATION, LIVE)
    source.faults.lose_next_job(MIGRATE, done=True)
    lost = await migrate(source, vms[1], DESTINATION, LIVE)
    await source.close()
    clock.now += 1.0
    reopened = EmulatorCim.open(_config(tmp_path, SOURCE, "10.0.9.1", 1), clock)
    try:
        clock.now += 0.1
        assert await _gone(reopened, lost)
    finally:
        await reopened.close()
