"""A move that outlasts its bound, with the source's agent in this process (so its
emulated host's faults can be set) and the destination an emulated host of the same
cluster: the job is waited on within the command's ``wait``, then terminated, and the VM
is still running on the source; the VM's lock is held across the move, and a move with
storage holds its files' locks too."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import InValue, MethodResult, ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import jobs
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.hyperv import jobs as hyperv_jobs
from tests.e2e.conftest import Running, serving
from tests.e2e.migration_kit import (
    LOCAL_POOL,
    SHARE,
    SWITCH,
    disk_file,
    emulator_toml,
    migrate_body,
    pool_body,
    powered_on,
    smb_pool,
    start_body,
    vm_to,
    with_storage_body,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

SOURCE_IP, DESTINATION_IP = "127.0.0.2", "127.0.0.3"
MIGRATE = "MigrateVirtualSystemToHost"
CHECK = "CheckVirtualSystemIsMigratableToHost"
TERMINATED = 8
RUNNING = 4


@contextlib.asynccontextmanager
async def _cluster(tmp_path: Path, backend: str = "emulator",
                   knobs: str = "") -> AsyncIterator[Running]:
    """The source's agent (on ``backend``; its emulated host's settings ``knobs``, TOML
    tables under ``[emulator]``), and (opened first) the destination host HV-B."""
    (tmp_path / "pool").mkdir()
    config_file = tmp_path / "agent.toml"
    config_file.write_text(emulator_toml("HV-A", tmp_path / "cluster", tmp_path / "pool")
                           + knobs)
    config = load_config(config_file, state_dir=tmp_path / "a", backend="emulator",
                         private_ip=SOURCE_IP, local_storage_path=LOCAL_POOL)
    destination = EmulatorCim.open(EmulatorConfig(
        state_dir=tmp_path / "b", host_name="HV-B", private_ip=DESTINATION_IP,
        cluster_dir=tmp_path / "cluster", switches=(SWITCH,),
        shares={SHARE: tmp_path / "pool"}))
    try:
        async with serving(config, backend=backend) as agent:
            _, pool = await agent.answer(names.MODIFY_STORAGE_POOL_COMMAND, pool_body())
            assert pool["result"] is True, pool
            yield agent
    finally:
        await destination.close()


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Running]:
    async with _cluster(tmp_path) as agent:
        yield agent


async def _running_vm(agent: Running, tmp_path: Path, name: str) -> None:
    disk_file(tmp_path / "pool", name)
    _, started = await agent.answer(names.START_COMMAND, start_body(vm_to(name, name)))
    assert started["result"] is True, started["details"]


async def _on(agent: Running) -> set[str]:
    status, report = await agent.post(names.HOST_VM_STATE_REPORT_COMMAND, {})
    assert status == 200
    return powered_on(report)


async def test_an_overdue_move_is_cancelled_and_the_vm_stays(source: Running,
                                                             tmp_path: Path) -> None:
    name = "i-2-50-VM"
    await _running_vm(source, tmp_path, name)
    source.emulator.faults.hang_next_job(MIGRATE)
    began = asyncio.get_running_loop().time()
    _, late = await source.answer(names.MIGRATE_COMMAND,
                                  migrate_body(vm_to(name, name), DESTINATION_IP, wait_s=2))
    took_s = asyncio.get_running_loop().time() - began
    assert late["result"] is False
    assert late["details"].startswith("MigrateCommand failed due to the move did not finish "
                                      "within 1.5 s and was cancelled"), late["details"]
    assert took_s < 2.5  # answered within the command's wait
    jobs = await source.emulator.query(wql.select("Msvm_MigrationJob"))
    assert [job["JobState"] for job in jobs] == [TERMINATED]
    assert name in await _on(source)

    _, moved = await source.answer(names.MIGRATE_COMMAND,
                                   migrate_body(vm_to(name, name), DESTINATION_IP))
    assert moved["result"] is True, moved["details"]
    assert name not in await _on(source)


async def test_an_overdue_move_hyper_v_will_not_stop_says_what_became_of_it(
        source: Running, tmp_path: Path) -> None:
    """Hyper-V answers the request to stop an overdue move with a code other than
    "stopping" or "cannot stop now" (1, not supported): the answer is still the move's own
    failure — late, could not be stopped, still running, look for the VM — not the stop
    request's return code, which tells the operator nothing of where the VM is."""
    name = "i-2-52-VM"
    await _running_vm(source, tmp_path, name)
    source.emulator.faults.hang_next_job(MIGRATE)
    source.emulator.faults.fail_next_call("RequestStateChange", 1)
    _, late = await source.answer(names.MIGRATE_COMMAND,
                                  migrate_body(vm_to(name, name), DESTINATION_IP, wait_s=2))
    assert late["result"] is False
    details = late["details"]
    assert details.startswith("MigrateCommand failed due to the move did not finish within "
                              "1.5 s, could not be stopped and was still running 0.5 s "
                              "later; see where the VM is before trying again"), details
    jobs = await source.emulator.query(wql.select("Msvm_MigrationJob"))
    assert [job["JobState"] for job in jobs] == [RUNNING]  # the refused stop changed nothing


async def test_an_overdue_move_whose_stop_the_bound_cut_short_says_how_long_it_waited(
        source: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hyper-V's check of the move answers late (0.3 s), which the command's ``wait``
    pays for: the wait after the request to stop ends at the command's bound, before
    its 0.5 s grace. The answer tells the seconds the job was waited on then, not the
    grace it never had."""
    name = "i-2-54-VM"
    await _running_vm(source, tmp_path, name)
    cim = source.emulator
    invoke = cim.invoke

    async def slow_check(path: ObjectPath, method: str,
                         params: Mapping[str, InValue] | None = None) -> MethodResult:
        if method == CHECK:
            await asyncio.sleep(0.3)
        return await invoke(path, method, params)

    monkeypatch.setattr(cim, "invoke", slow_check)
    cim.faults.hang_next_job(MIGRATE)
    cim.faults.fail_next_call("RequestStateChange", 1)
    _, late = await source.answer(names.MIGRATE_COMMAND,
                                  migrate_body(vm_to(name, name), DESTINATION_IP, wait_s=2))
    assert late["result"] is False
    assert re.search(r"could not be stopped and was still running 0\.[1-2] s later; see "
                     r"where the VM is before trying again", late["details"]), late["details"]


async def test_a_move_queued_past_a_bound_a_slow_check_cut_says_how_long_it_waited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that runs one move at a time is busy with a 3 s move when a second
    MigrateCommand (``wait`` 2 s: 1.5 s for the move, 0.5 s kept back to stop it) comes,
    and Hyper-V's check of that second move answers late (0.8 s). The queued job is then
    waited on only until the command's bound, about 1.2 s: the answer that it never
    started tells those seconds, not the 1.5 s the wait would have had."""
    first, second = "i-2-55-VM", "i-2-56-VM"
    async with _cluster(tmp_path, knobs="[emulator.migration]\nsimultaneous = 1\n") as source:
        for name in (first, second):
            await _running_vm(source, tmp_path, name)
        cim = source.emulator
        cim.faults.slow_next_job(MIGRATE, 3.0)
        holding = asyncio.create_task(source.answer(
            names.MIGRATE_COMMAND, migrate_body(vm_to(first, first), DESTINATION_IP,
                                                wait_s=10)))
        while RUNNING not in [job["JobState"] for job in await cim.query(
                wql.select("Msvm_MigrationJob"))]:
            await asyncio.sleep(0.02)
        invoke = cim.invoke

        async def slow_check(path: ObjectPath, method: str,
                             params: Mapping[str, InValue] | None = None) -> MethodResult:
            if method == CHECK:
                await asyncio.sleep(0.8)
            return await invoke(path, method, params)

        monkeypatch.setattr(cim, "invoke", slow_check)
        _, late = await source.answer(names.MIGRATE_COMMAND, migrate_body(
            vm_to(second, second), DESTINATION_IP, wait_s=2))
        assert late["result"] is False
        details = late["details"]
        assert re.search(r"the move never started: for the 1\.[0-2] s it was waited on, its "
                         r"job stayed queued", details), details
        assert "the VM stays where it was" in details, details
        assert "a longer wait than 2 s" in details, details
        _, moved = await holding
        assert moved["result"] is True, moved["details"]
        assert second in await _on(source)


async def test_the_vm_lock_is_held_across_the_move(source: Running, tmp_path: Path) -> None:
    """A StopCommand sent while the VM moves waits for the move's end, then finds the VM
    where the move left it."""
    name = "i-2-51-VM"
    await _running_vm(source, tmp_path, name)
    source.emulator.faults.hang_next_job(MIGRATE)
    done: list[str] = []

    async def ask(fqcn: str, body: dict[str, object]) -> dict[str, object]:
        _, answer = await source.answer(fqcn, body)
        done.append(fqcn)
        return answer

    move = asyncio.create_task(ask(names.MIGRATE_COMMAND, migrate_body(
        vm_to(name, name), DESTINATION_IP, wait_s=2)))
    await asyncio.sleep(0.3)
    stop = {"vmName": name, "checkBeforeCleanup": False, "contextMap": {}, "wait": 0}
    stopped = await ask(names.STOP_COMMAND, stop)
    assert (await move)["result"] is False
    assert done == [names.MIGRATE_COMMAND, names.STOP_COMMAND]
    assert stopped["result"] is True, stopped
    assert name not in await _on(source)


async def test_a_malformed_or_impossible_move_is_a_failed_migrate_answer(
        source: Running, tmp_path: Path) -> None:
    name = "i-2-52-VM"
    await _running_vm(source, tmp_path, name)
    body = migrate_body(vm_to(name, name), DESTINATION_IP)
    cases = {
        "is not an IP address": body | {"destinationIp": "hv-b.lab; rm -rf /"},
        "destinationIp is missing": {k: v for k, v in body.items() if k != "destinationIp"},
        "no VM named 'i-2-99-VM\\t' on this host": body | {"vmName": "i-2-99-VM\t"},
        "destinationIp": body | {"destinationIp": 12},
    }
    for expected, sent in cases.items():
        kind, answer = await source.answer(names.MIGRATE_COMMAND, sent)
        assert (kind, answer["result"]) == (names.MIGRATE_ANSWER, False), answer
        assert expected in answer["details"], answer["details"]
    assert name in await _on(source)


async def test_a_move_past_the_point_of_no_return_is_the_success_it_is(tmp_path: Path) -> None:
    """A job still running at the bound that can no longer be stopped (4097) and then
    completes within the grace: the VM has moved, and the answer says so."""
    name = "i-2-53-VM"
    async with _cluster(tmp_path) as agent:
        await _running_vm(agent, tmp_path, name)
        agent.emulator.faults.slow_next_job(MIGRATE, 1.7)
        before = agent.emulator.round_trips()
        _, moved = await agent.answer(names.MIGRATE_COMMAND, migrate_body(
            vm_to(name, name), DESTINATION_IP, wait_s=2))  # 1.5 s, then 0.5 s of grace
        assert moved["result"] is True, moved["details"]
        assert (agent.emulator.round_trips() - before)["invoke:RequestStateChange"] == 1
        jobs = await agent.emulator.query(wql.select("Msvm_MigrationJob"))
        assert [job["JobState"] for job in jobs] == [7]
        assert name not in await _on(agent)


async def test_a_vm_is_reported_on_its_source_only_until_its_move_completes(
        tmp_path: Path) -> None:
    """While the move's job runs, the VM runs on its source and the source's agent says
    so (the state report, CheckVirtualMachine), showing Migrating Virtual Machine
    (32774); the destination holds nothing of it until the job completes. The MS, whose
    VM is Migrating, sees it on one host at every moment."""
    name = "i-2-56-VM"
    async with _cluster(tmp_path) as agent:
        await _running_vm(agent, tmp_path, name)
        (destination,) = EmulatedHost.named("HV-B")
        agent.emulator.faults.slow_next_job(MIGRATE, 1.5)
        move = asyncio.create_task(agent.answer(names.MIGRATE_COMMAND, migrate_body(
            vm_to(name, name), DESTINATION_IP)))
        await asyncio.sleep(0.5)
        assert not move.done()
        assert name in await _on(agent)
        _, checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": name})
        assert (checked["result"], checked["state"]) == (True, "PowerOn"), checked
        moving = await agent.emulator.query(wql.select("Msvm_ComputerSystem",
                                                       wql.eq("ElementName", name)))
        assert [(vm["EnabledState"], vm["OperationalStatus"]) for vm in moving] == [
            (2, (11, 32774))]
        assert not [vm for vm in destination.records("Msvm_ComputerSystem")
                    if vm["ElementName"] == name]
        _, moved = await move
        assert moved["result"] is True, moved["details"]
        assert name not in await _on(agent)
        arrived = [vm for vm in destination.records("Msvm_ComputerSystem")
                   if vm["ElementName"] == name]
        assert [vm["EnabledState"] for vm in arrived] == [2]


async def _restarted(cim: EmulatorCim) -> None:
    """The emulated host under the agent stopped and opened again on its state directory
    (Hyper-V's host restarted while the agent runs on), between two of its calls."""
    stopped = cim.host

    def restart() -> None:
        jobs.forget(stopped)
        stopped.close()
        cim.host = EmulatedHost(stopped.config, stopped.clock)

    await stopped.worker.run(restart)


async def test_a_move_whose_host_stopped_before_it_ended_is_a_failed_answer(
        tmp_path: Path) -> None:
    """The source host stops and starts again while the agent waits for a move's job:
    the move was never made, its job reads failed, and so does the answer; the VM runs
    on the source, no longer migrating."""
    name = "i-2-57-VM"
    async with _cluster(tmp_path) as agent:
        await _running_vm(agent, tmp_path, name)
        agent.emulator.faults.slow_next_job(MIGRATE, 1.5)
        move = asyncio.create_task(agent.answer(names.MIGRATE_COMMAND, migrate_body(
            vm_to(name, name), DESTINATION_IP)))
        await asyncio.sleep(0.5)
        assert not move.done()
        await _restarted(agent.emulator)
        kind, failed = await move
        assert (kind, failed["result"]) == (names.MIGRATE_ANSWER, False), failed
        assert "did not complete: the host stopped" in failed["details"], failed["details"]
        assert name in await _on(agent)
        shown = await agent.emulator.query(wql.select("Msvm_ComputerSystem",
                                                      wql.eq("ElementName", name)))
        assert [(vm["EnabledState"], vm["OperationalStatus"]) for vm in shown] == [(2, (2,))]


@pytest.mark.parametrize("overdue", [False, True], ids=["under-way", "overdue"])
async def test_a_move_whose_host_stops_answering_says_the_vm_may_have_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overdue: bool) -> None:
    """Driving the source over WinRM, the source host stops answering while its move's
    job is waited on (under way, or past its bound and asked to stop): the failed answer
    is the move's, saying the host went silent and that the VM may be on either host,
    not the bare transport error, which says nothing of the move."""
    monkeypatch.setattr(hyperv_jobs, "UNREACHABLE_GRACE_S", 0.3)
    name = "i-2-58-VM"
    async with _cluster(tmp_path, backend="wsman-http-ntlm") as agent:
        await _running_vm(agent, tmp_path, name)
        agent.emulator.faults.hang_next_job(MIGRATE)
        if overdue:  # its stop refused, the move runs on past its bound
            agent.emulator.faults.fail_next_call("RequestStateChange", 1)
        move = asyncio.create_task(agent.answer(names.MIGRATE_COMMAND, migrate_body(
            vm_to(name, name), DESTINATION_IP, wait_s=4 if overdue else 60)))
        while not await agent.emulator.query(wql.select("Msvm_MigrationJob")):
            await asyncio.sleep(0.05)
        if overdue:  # waited on for 3 s, then 1 s after it was asked to stop
            await asyncio.sleep(3.3)
        assert agent.face is not None and not move.done()
        await agent.face.runner.cleanup()  # the host stops answering
        async with asyncio.timeout(10):
            kind, failed = await move
        assert (kind, failed["result"]) == (names.MIGRATE_ANSWER, False), failed
        details = failed["details"]
        if overdue:
            assert details.startswith(
                "MigrateCommand failed due to the move did not finish within 3 s, could not "
                "be stopped, and the host stopped answering before it ended ("), details
            assert "see where the VM is before trying again" in details, details
        else:
            assert details.startswith(
                "MigrateCommand failed due to the host stopped answering while the move "
                "was under way ("), details
            assert "whether the VM moved is not known: see where it is before trying again" in (
                details), details


async def _defined(agent: Running, name: str) -> list[int]:
    """The EnabledState of each VM named ``name`` on the agent's host."""
    found = await agent.emulator.query(wql.select("Msvm_ComputerSystem",
                                                  wql.eq("ElementName", name)))
    return [vm.integer("EnabledState") or 0 for vm in found]


async def test_a_vm_that_is_off_or_saved_is_not_moved_live(source: Running,
                                                           tmp_path: Path) -> None:
    """The MS moves a VM it believes running and then asks the destination's
    CheckVirtualMachine; an off or saved VM would arrive there PowerOff. Refused at once,
    the VM kept as it is; a paused VM (PowerOn) moves."""
    name = "i-2-54-VM"
    await _running_vm(source, tmp_path, name)
    (vm,) = await source.emulator.query(wql.select("Msvm_ComputerSystem",
                                                   wql.eq("ElementName", name)))
    assert vm.path is not None
    vm_to_ = vm_to(name, name)
    for state, word in ((3, "stopped"), (6, "saved")):
        if state == 6:
            await hyperv_jobs.call(source.emulator, vm.path, "RequestStateChange",
                                   {"RequestedState": 2})
        await hyperv_jobs.call(source.emulator, vm.path, "RequestStateChange",
                               {"RequestedState": state})
        for fqcn, body, answer_class in (
                (names.MIGRATE_COMMAND, migrate_body(vm_to_, DESTINATION_IP),
                 names.MIGRATE_ANSWER),
                (names.MIGRATE_WITH_STORAGE_COMMAND,
                 with_storage_body(vm_to_, DESTINATION_IP, smb_pool()),
                 names.MIGRATE_WITH_STORAGE_ANSWER)):
            kind, refused = await source.answer(fqcn, body)
            assert (kind, refused["result"]) == (answer_class, False), refused
            assert f"VM {name} is {word} on this host, not running" in refused["details"]
            assert await _defined(source, name) == [state]

    await hyperv_jobs.call(source.emulator, vm.path, "RequestStateChange",
                           {"RequestedState": 2})
    await hyperv_jobs.call(source.emulator, vm.path, "RequestStateChange",
                           {"RequestedState": 9})  # paused
    _, moved = await source.answer(names.MIGRATE_COMMAND, migrate_body(vm_to_, DESTINATION_IP))
    assert moved["result"] is True, moved["details"]
    assert await _defined(source, name) == []


async def test_a_move_whose_job_the_source_lost_unmade_fails_saying_the_vm_stays(
        source: Running, tmp_path: Path) -> None:
    """The source's Virtual Machine Management Service restarts during the move and loses
    its job; the VM still runs on the source, not migrating: the answer fails saying
    Hyper-V lost the job and the VM was not moved, and the next move is made."""
    name = "i-2-54-VM"
    await _running_vm(source, tmp_path, name)
    source.emulator.faults.lose_next_job(MIGRATE, done=False)
    _, lost = await source.answer(names.MIGRATE_COMMAND,
                                  migrate_body(vm_to(name, name), DESTINATION_IP))
    assert lost["result"] is False
    details = lost["details"]
    assert details.startswith("MigrateCommand failed due to Hyper-V lost track of its "
                              "MigrateVirtualSystemToHost job"), details
    assert details.endswith("the VM is still on this host and not moving: it was not "
                            "moved"), details
    assert name in await _on(source)

    _, moved = await source.answer(names.MIGRATE_COMMAND,
                                   migrate_body(vm_to(name, name), DESTINATION_IP))
    assert moved["result"] is True, moved["details"]
    assert name not in await _on(source)


async def test_a_move_whose_job_went_before_it_was_read_is_told_by_the_vm_gone(
        source: Running, tmp_path: Path) -> None:
    """The move completed and its job was removed before the source's agent read it: the
    VM is no longer on the source, which one read tells, and the move is a success."""
    name = "i-2-55-VM"
    await _running_vm(source, tmp_path, name)
    source.emulator.faults.lose_next_job(MIGRATE, done=True)
    before = source.emulator.round_trips()
    _, moved = await source.answer(names.MIGRATE_COMMAND,
                                   migrate_body(vm_to(name, name), DESTINATION_IP))
    assert moved["result"] is True, moved["details"]
    assert (source.emulator.round_trips() - before)[f"invoke:{MIGRATE}"] == 1
    assert name not in await _on(source)


async def test_a_delete_of_a_disks_target_waits_for_the_vm_moving_with_its_storage(
    tmp_path: Path,
) -> None:
    """A DeleteCommand of a disk's file in its target pool (the SMB pool both hosts reach)
    that arrives while the running VM moves there with its storage waits for the move
    (which holds, inside the VM's lock, the file locks of the disks' sources and targets),
    then finds the file the VM on the destination holds, and keeps it. Without the file
    locks it answered that there was nothing to delete, and the move then put the file
    there."""
    name = "i-2-58-VM"
    async with _cluster(tmp_path) as agent:
        local = agent.agent.config.agent.state_dir.joinpath(
            "emulator", "drives", "C", *LOCAL_POOL.split("\\")[1:])
        disk_file(local, name)
        vm = vm_to(name, name, local_root=True)
        _, started = await agent.answer(names.START_COMMAND, start_body(vm))
        assert started["result"] is True, started["details"]
        cim = agent.emulator
        cim.faults.slow_next_job(MIGRATE, 1.5)
        begun = cim.round_trips()[f"invoke:{MIGRATE}"]
        moving = asyncio.create_task(agent.answer(
            names.MIGRATE_WITH_STORAGE_COMMAND, with_storage_body(vm, DESTINATION_IP,
                                                                  smb_pool())))
        for _ in range(500):  # until the move runs: its locks are held
            if cim.round_trips()[f"invoke:{MIGRATE}"] > begun:
                break
            await asyncio.sleep(0.01)
        assert not moving.done()
        pool = smb_pool()
        store = {names.PRIMARY_DATA_STORE_TO: {
            "uuid": pool["uuid"], "id": pool["id"], "host": pool["host"], "poolType": "SMB",
            "path": pool["path"], "port": pool["port"]}}
        _, deleted = await agent.answer(names.DELETE_COMMAND, {"data": {
            names.VOLUME_OBJECT_TO: {"uuid": name, "path": name, "volumeType": "ROOT",
                                     "dataStore": store, "format": "VHDX", "name": "ROOT-58",
                                     "id": 31}}})
        assert moving.done(), deleted  # the delete waited for it
        kind, moved = await moving
        assert (kind, moved["result"]) == (names.MIGRATE_WITH_STORAGE_ANSWER, True), moved
        assert deleted["result"] is False, deleted
        assert "being used by another process" in deleted["details"], deleted
        assert (tmp_path / "pool" / f"{name}.vhdx").is_file()
        assert name not in await _on(agent)
