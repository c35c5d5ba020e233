"""Migration between two agents, each a ``serve`` process on its own loopback address
(127.0.0.2 and 127.0.0.3, one port) over an emulated host; the hosts share a
``cluster_dir`` and map the SMB pool's share to one folder. The management server's own
bodies, in its order: PrepareForMigration to the destination, Migrate to the source,
CheckVirtualMachine to the destination; the state reports of both hosts after each step.
Where a test counts the source's round trips, its agent serves in this process instead,
beside the destination's emulated host (``_beside_b``)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.cloudstack.fixtures import ms422_json
from tests.diskfiles import qemu_info
from tests.e2e.conftest import serving
from tests.e2e.migration_kit import (
    ADDRESSES,
    LOCAL_POOL,
    ONLY_ON_A,
    ROOT_UUID,
    SHARE,
    SWITCH,
    Cluster,
    Member,
    check_body,
    cluster,
    disk_file,
    emulator_toml,
    local_pool_of,
    migrate_body,
    pair,
    pool_body,
    prepare_body,
    smb_pool,
    start_body,
    vm_to,
    volume_body,
    with_second_nic,
    with_storage_body,
)
from tests.e2e.sgkit import rule, rules_body
from tests.emulator.kit import devices, ok, service
from tests.emulator.migration_kit import kvp_item, migrate, portrait

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

MIGRATION_SERVICE = "Msvm_VirtualSystemMigrationService"
FAILED_MIDWAY = "failing_jobs = {MigrateVirtualSystemToHost = 1}"


async def _started(run: Cluster, host: Member, vm: dict[str, Any]) -> None:
    _, started = await run.ask(host, names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started["details"]


async def _vm_path(host: Member, name: str) -> ObjectPath:
    found = await host.cim().query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName",
                                                                             name)))
    assert len(found) == 1 and found[0].path is not None
    return found[0].path


async def _move(run: Cluster, source: Member, destination: Member, vm: dict[str, Any]
                ) -> dict[str, Any]:
    """Prepare on ``destination`` (twice: a repeat is safe), Migrate on ``source``: the
    MigrateAnswer's fields."""
    for _ in range(2):
        kind, prepared = await run.ask(destination, names.PREPARE_FOR_MIGRATION_COMMAND,
                                       prepare_body(vm))
        assert (kind, prepared["result"]) == (names.PREPARE_FOR_MIGRATION_ANSWER, True), \
            prepared["details"]
    kind, moved = await run.ask(source, names.MIGRATE_COMMAND,
                                migrate_body(vm, destination.address))
    assert kind == names.MIGRATE_ANSWER
    return moved


def stop_body(name: str) -> dict[str, Any]:
    return {"vmName": name, "checkBeforeCleanup": False, "forceStop": False,
            "contextMap": {}, "wait": 0}


async def _power(run: Cluster, host: Member, name: str) -> str:
    _, checked = await run.ask(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, check_body(name))
    return str(checked["state"])


async def test_a_running_vm_moves_there_and_back_keeping_its_devices(tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path, FAILED_MIDWAY)
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = with_second_nic(vm_to("i-2-7-VM"))
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        path = await _vm_path(a, "i-2-7-VM")
        on_a = a.cim()
        await ok(on_a, await on_a.invoke(await service(on_a), "AddKvpItems", {
            "TargetSystem": path, "DataItems": [kvp_item("cloudstack-vm-userdata", "hi")]}))
        before = await portrait(on_a, path)

        midway = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        assert midway[1]["result"] is False
        assert midway[1]["details"].startswith("MigrateCommand failed due to ")
        assert "injected fault" in midway[1]["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-A"]

        moved = await _move(run, a, b, vm)
        assert moved["result"] is True, moved["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-B"]
        assert await _power(run, b, "i-2-7-VM") == "PowerOn"
        after = await portrait(b.cim(), path)
        assert after == before and len(after["vlans"]) == 2
        assert after["bios_guid"] == f"{{{vm['uuid'].upper()}}}"  # the guest's identity

        back = await _move(run, b, a, vm)
        assert back["result"] is True, back["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-A"]
        assert await _power(run, a, "i-2-7-VM") == "PowerOn"
        assert await portrait(on_a, path) == before


async def _state_becomes(host: Member, path: ObjectPath, wanted: int) -> None:
    """Wait (at most 30 s) until the VM at ``path`` on ``host`` shows ``wanted``."""
    cim = host.cim()
    for _ in range(300):
        if (await cim.get(path))["EnabledState"] == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the VM never showed state {wanted}")


async def test_a_vm_still_starting_moves_once_hyperv_has_started_it(tmp_path: Path) -> None:
    """Hyper-V moves no VM while it starts it (32775): a MigrateCommand for a VM the MS
    started again (HA) waits the start out and moves the VM once it runs, rather than
    failing the move and leaving the VM where the MS wanted it away from."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 0.5")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = vm_to("i-2-8-VM")
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        path = await _vm_path(a, "i-2-8-VM")
        on_a = a.cim()
        assert (await on_a.invoke(path, "RequestStateChange", {"RequestedState": 3})
                ).return_value == 4096
        await _state_becomes(a, path, 3)
        assert (await on_a.invoke(path, "RequestStateChange", {"RequestedState": 2})
                ).return_value == 4096
        assert (await on_a.get(path))["EnabledState"] == 10  # Starting
        kind, moved = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        assert (kind, moved["result"]) == (names.MIGRATE_ANSWER, True), moved["details"]
        assert await run.where(hosts, "i-2-8-VM") == ["HV-B"]


async def test_a_stop_of_a_vm_being_migrated_live_leaves_it_to_its_move(
        tmp_path: Path) -> None:
    """An operator live-migrates a VM (Move-VM: the move's job runs on the source) while
    the management server stops it: the StopCommand answers false saying the VM is being
    migrated, and leaves it running on the source; the move then completes, the VM
    running on the destination, rather than the stop reading as done because the VM had
    left the source meanwhile."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = vm_to("i-2-9-VM")
    async with cluster(hosts) as run:
        on_a, path, job = await _moving(run, a, b, vm)
        assert (await on_a.get(path))["OperationalStatus"] == (11, 32774)
        kind, stopped = await run.ask(a, names.STOP_COMMAND, stop_body("i-2-9-VM"))
        assert (kind, stopped["result"]) == (names.STOP_ANSWER, False), stopped
        assert "being migrated live" in stopped["details"], stopped["details"]
        assert (await on_a.get(path))["EnabledState"] == 2
        assert (await on_a.get(job))["JobState"] == 4  # still Running
        await _job_ends(on_a, job)
        assert (await on_a.get(job))["JobState"] == 7, (await on_a.get(job))["ErrorDescription"]
        assert await run.where(hosts, "i-2-9-VM") == ["HV-B"]
        assert await _power(run, b, "i-2-9-VM") == "PowerOn"


async def test_a_graceful_stop_of_a_vm_a_move_carries_off_meanwhile_is_not_done(
        tmp_path: Path) -> None:
    """The management server stops a VM gracefully; while its guest takes its time to
    shut down, an operator live-migrates it (Move-VM) and the move ends: the StopAnswer
    fails saying the VM left the host while being stopped, and the VM runs on at the
    destination. Read as off once gone, the stop answered true, and the management
    server would have released a VM running on elsewhere (its resources, its address)."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2\nguest_shutdown_s = 20")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = vm_to("i-2-11-VM")
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        path = await _vm_path(a, "i-2-11-VM")
        stopping = asyncio.create_task(run.ask(a, names.STOP_COMMAND, stop_body("i-2-11-VM")))
        await asyncio.sleep(2)  # the guest is asked to shut down, and takes 20 s
        assert not stopping.done()
        on_a = a.cim()
        moving = await migrate(on_a, path, b.name)
        job = moving.path("Job")
        assert moving.return_value == 4096 and job is not None
        kind, stopped = await stopping
        assert (kind, stopped["result"]) == (names.STOP_ANSWER, False), stopped
        assert ("the stop of VM i-2-11-VM was not done: the VM left this host while being "
                "stopped, before its guest had shut it down") in stopped["details"], \
            stopped["details"]
        assert await run.where(hosts, "i-2-11-VM") == ["HV-B"]
        assert await _power(run, b, "i-2-11-VM") == "PowerOn"


async def _ask_guest_to_shut_down(cim: Cim, path: ObjectPath) -> None:
    """Stop-VM without -TurnOff: the VM's guest asked to shut down, which it accepts."""
    (component,) = await cim.query(wql.select("Msvm_ShutdownComponent", wql.eq(
        "SystemName", path.key("Name"))))
    assert component.path is not None
    asked = await cim.invoke(component.path, "InitiateShutdown",
                             {"Force": False, "Reason": "maintenance"})
    assert asked.return_value == 0


async def test_a_move_whose_guest_shut_the_vm_down_midway_fails_saying_so(
        tmp_path: Path) -> None:
    """The VM's guest is shutting down (asked by an operator's Stop-VM, or from inside)
    as the management server migrates the VM: the guest is off before the move's
    switch-over, so Hyper-V fails the live move. The MigrateAnswer fails saying the VM
    stopped running during the move, and the VM stays on the source, off, where the
    next state report shows it; answered true, the management server would have placed
    on the destination a VM that runs nowhere."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 4\nguest_shutdown_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = vm_to("i-2-12-VM")
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        path = await _vm_path(a, "i-2-12-VM")
        _, prepared = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
        assert prepared["result"] is True, prepared["details"]
        await _ask_guest_to_shut_down(a.cim(), path)  # off 2 s later; the move takes 4 s
        kind, moved = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        assert (kind, moved["result"]) == (names.MIGRATE_ANSWER, False), moved
        assert ("The virtual machine stopped running during the move, before the "
                "switch-over") in moved["details"], moved["details"]
        await _state_becomes(a, path, 3)
        assert await _power(run, a, "i-2-12-VM") == "PowerOff"
        assert await run.where(hosts, "i-2-12-VM") == []  # running nowhere
        assert await b.cim().query(wql.select("Msvm_ComputerSystem", wql.eq(
            "Name", path.key("Name")))) == []


async def test_a_guest_shutting_down_as_its_vm_moves_shuts_it_down_at_the_destination(
        tmp_path: Path) -> None:
    """An operator shuts a VM down from Hyper-V (Stop-VM) and its guest takes its time;
    meanwhile the management server migrates the VM to a host of the cluster (HA,
    maintenance). The shutdown is the guest's own work, and goes on wherever it runs:
    the VM is off at the destination once its guest is done, as the operator asked, and
    the destination's state report then says so. Left running there, the VM the operator
    shut down would run on for good. A VM paused in the middle of its guest's shutdown
    and moved so keeps its guest frozen at the destination until resumed there, then
    shuts down once the rest of its guest's time is over."""
    guest_s = 15.0
    a, b = hosts = pair(tmp_path, emulator_a=f"guest_shutdown_s = {guest_s}")
    other_root = "5b0c7a3e-2d4f-4c6b-9f1e-7a8d9c0b1e2f"
    disk_file(tmp_path / "pool", ROOT_UUID)
    disk_file(tmp_path / "pool", other_root)
    vm, paused = vm_to("i-2-13-VM"), vm_to("i-2-14-VM", other_root)
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        await _started(run, a, paused)
        on_a, on_b = a.cim(), b.cim()
        path, paused_path = await _vm_path(a, "i-2-13-VM"), await _vm_path(a, "i-2-14-VM")
        await _ask_guest_to_shut_down(on_a, paused_path)
        await ok(on_a, await on_a.invoke(paused_path, "RequestStateChange",
                                         {"RequestedState": 9}))
        asked = time.monotonic()
        await _ask_guest_to_shut_down(on_a, path)

        moved = await _move(run, a, b, vm)
        assert moved["result"] is True, moved["details"]
        job = await _move_begun(on_a, paused_path, b.name)
        await _job_ends(on_a, job)
        assert (await on_a.get(job))["JobState"] == 7, (await on_a.get(job))["ErrorDescription"]
        assert time.monotonic() - asked < guest_s, "the moves took longer than the guest"
        assert await run.where(hosts, "i-2-13-VM") == ["HV-B"]  # its guest still at work

        await _state_becomes(b, path, 3)
        assert time.monotonic() - asked >= guest_s - 0.5  # not before its guest was done
        assert await _power(run, b, "i-2-13-VM") == "PowerOff"
        assert await on_a.query(wql.select("Msvm_ComputerSystem", wql.eq(
            "Name", path.key("Name")))) == []  # nothing left for the source to act on

        assert (await on_b.get(paused_path))["EnabledState"] == 9  # its guest still frozen
        await ok(on_b, await on_b.invoke(paused_path, "RequestStateChange",
                                         {"RequestedState": 2}))
        resumed = time.monotonic()
        assert (await on_b.get(paused_path))["EnabledState"] == 2
        await _state_becomes(b, paused_path, 3)
        assert time.monotonic() - resumed >= guest_s / 2  # the rest of its guest's time


async def test_a_reboot_and_a_disk_attach_of_a_vm_being_migrated_live_say_so(
        tmp_path: Path) -> None:
    """An operator live-migrates a VM while the management server reboots it and attaches
    a data volume to it: Hyper-V takes neither (32775, invalid state), and each answer,
    of its own class, fails saying the VM is being migrated live and to try again once
    the move is done (the MS shows the RebootAnswer's and AttachAnswer's details to the
    user), rather than that a running VM is "not running" or an invalid state; nothing
    is changed, and the move completes."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    attach: dict[str, Any] = ms422_json("21_AttachCommand.json")
    volume = attach["disk"]["data"][names.VOLUME_OBJECT_TO]
    disk_file(a.local_pool(tmp_path), volume["path"])
    vm = vm_to("i-2-10-VM")
    async with cluster(hosts) as run:
        on_a, _, job = await _moving(run, a, b, vm)
        volume["vmName"] = "i-2-10-VM"
        asked = [(names.REBOOT_COMMAND, names.REBOOT_ANSWER, "the reboot",
                  {"vmName": "i-2-10-VM", "contextMap": {}, "wait": 0}),
                 (names.ATTACH_COMMAND, names.ATTACH_ANSWER, "the attach",
                  attach | {"vmName": "i-2-10-VM"})]
        for command, answer_class, what, body in asked:
            kind, answer = await run.ask(a, command, body)
            assert (kind, answer["result"]) == (answer_class, False), answer
            assert (f"{what} of VM i-2-10-VM was not done: the VM is being migrated live "
                    "from this host") in answer["details"], answer["details"]
            assert "try again once the move is done" in answer["details"], answer["details"]
        assert (await on_a.get(job))["JobState"] == 4  # still Running
        disks = await on_a.query("SELECT HostResource FROM Msvm_StorageAllocationSettingData "
                                 "WHERE ResourceType = 31")
        assert not [d for d in disks if volume["path"] in str(d["HostResource"])]
        await _job_ends(on_a, job)
        assert (await on_a.get(job))["JobState"] == 7, (await on_a.get(job))["ErrorDescription"]
        assert await run.where(hosts, "i-2-10-VM") == ["HV-B"]


def _refused_mid_move(kind: str, answer: dict[str, Any], answer_class: str, what: str,
                      name: str) -> None:
    """``answer`` is a failed ``answer_class`` saying ``what`` of VM ``name`` was not done
    as the VM is being migrated live (``vms.migrating_refusal``)."""
    assert (kind, answer["result"]) == (answer_class, False), answer
    assert (f"{what} of VM {name} was not done: the VM is being migrated live from this "
            "host") in answer["details"], answer["details"]
    assert "try again once the move is done" in answer["details"], answer["details"]


async def _vm_settings(cim: Cim, path: ObjectPath) -> dict[str, Any]:
    """What a command may change of the VM at ``path``: its devices, switch, VLANs, ACLs
    (``portrait``), each NIC's MAC and whether its port is connected (the switch is named
    by ``portrait``: its path differs between hosts), its processors and memory."""
    adapters = await devices(cim, path, "Msvm_SyntheticEthernetPortSettingData")
    ports = await devices(cim, path, "Msvm_EthernetPortAllocationSettingData")
    (cpu,) = await devices(cim, path, "Msvm_ProcessorSettingData")
    (memory,) = await devices(cim, path, "Msvm_MemorySettingData")
    return await portrait(cim, path) | {
        "macs": sorted(str(a["Address"]) for a in adapters),
        "ports": sorted((str(p["InstanceID"]), p["EnabledState"]) for p in ports),
        "cpus": cpu["VirtualQuantity"],
        "memory": (memory["VirtualQuantity"], memory["Reservation"], memory["Limit"],
                   memory["DynamicMemoryEnabled"]),
        "acls": sorted((str(acl["Name"]), acl["Direction"], acl["Weight"],
                        str(acl["RemoteIPAddress"]), str(acl["LocalPort"]))
                       for acl in await devices(
                           cim, path, "Msvm_EthernetSwitchPortExtendedAclSettingData")),
    }


async def _moved_on(run: Cluster, hosts: list[Member], on_a: Cim, job: ObjectPath,
                    path: ObjectPath, before: dict[str, Any]) -> None:
    """The move's ``job`` completes; the VM runs on the second host with the settings
    ``before`` it had on the first."""
    await _job_ends(on_a, job)
    assert (await on_a.get(job))["JobState"] == 7, (await on_a.get(job))["ErrorDescription"]
    name = before["name"]
    assert await run.where(hosts, name) == ["HV-B"]
    assert await _power(run, hosts[1], name) == "PowerOn"
    assert await _vm_settings(hosts[1].cim(), path) == before


def _sg_vm(tmp_path: Path) -> dict[str, Any]:
    """The VM of sample 50 (i-2-8-VM), its one NIC on an untagged security-group network."""
    name = "i-2-8-VM"
    disk_file(tmp_path / "pool", name)
    vm = vm_to(name, name)
    vm["nics"][0] |= {"mac": "02:00:4c:5f:00:08", "ip": "10.1.1.80", "broadcastType": "Native",
                      "broadcastUri": "vlan://untagged", "isolationUri": "ec2://untagged",
                      "securityGroupEnabled": True}
    return vm


SSH, WEB = rule("tcp", 22, 22, "192.168.1.0/24"), rule("tcp", 80, 80, "10.9.0.0/16")


async def test_rules_refused_for_a_vm_its_live_move_carried_away_meanwhile_are_retried(
        tmp_path: Path) -> None:
    """An operator live-migrates a VM while the management server sends it a changed rule
    set: Hyper-V refuses the port's change (32775), and by the time it says so the move
    has carried the VM away. The SecurityGroupRuleAnswer fails PROGRAMMING_FAILED saying
    so (SecurityGroupListener marks the work Error and sends the rules again in 10 s, to
    the host the VM is on by then), not CANNOT_BRIDGE_FIREWALL for "no VM" (after which
    the MS never sends that VM's rules again); no ACL changed, the VM moved with its own."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    vm = _sg_vm(tmp_path)
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        await _rules(run, a, 1, SSH)
        before = await _vm_settings(a.cim(), await _vm_path(a, vm["name"]))
        assert "192.168.1.0/24" in await _ingress_sources(a)
        on_a, path, job = await _moving(run, a, b, vm, started=True)
        kind, answer = await run.ask(a, names.SECURITY_GROUP_RULES_CMD,
                                     rules_body(2, ingress=[SSH, WEB], egress=[]))
        assert (kind, answer["result"]) == (names.SECURITY_GROUP_RULE_ANSWER, False), answer
        assert answer["reason"] == "PROGRAMMING_FAILED", answer
        assert ("the change of security group rules of VM i-2-8-VM was not done: Hyper-V "
                "refused it") in answer["details"], answer["details"]
        assert "a live migration carried it to another host" in answer["details"], answer
        await _moved_on(run, hosts, on_a, job, path, before)


@contextlib.asynccontextmanager
async def _beside_b(tmp_path: Path) -> AsyncIterator[tuple[AgentConfig, EmulatorCim]]:
    """The configuration of HV-A's agent, to serve in this process (its emulated host's
    round trips counted), and the emulated host HV-B of the same cluster, open meanwhile."""
    (tmp_path / "pool").mkdir(exist_ok=True)
    config_file = tmp_path / "HV-A.toml"
    config_file.write_text(emulator_toml("HV-A", tmp_path / "cluster", tmp_path / "pool"))
    config = load_config(config_file, state_dir=tmp_path / "HV-A", backend="emulator",
                         private_ip=ADDRESSES["HV-A"], local_storage_path=LOCAL_POOL)
    on_b = EmulatorCim.open(EmulatorConfig(
        state_dir=tmp_path / "HV-B", host_name="HV-B", private_ip=ADDRESSES["HV-B"],
        cluster_dir=tmp_path / "cluster", switches=(SWITCH,),
        shares={SHARE: tmp_path / "pool"}))
    try:
        yield config, on_b
    finally:
        await on_b.close()


async def test_rules_for_a_vm_being_migrated_live_are_refused_before_any_call_after_a_restart(
        tmp_path: Path) -> None:
    """The agent restarts, so it has not read the VM's port, and an operator live-migrates
    the VM while the management server sends it a changed rule set: the port's lookup
    shows the VM migrating, and the SecurityGroupRuleAnswer fails PROGRAMMING_FAILED
    saying the VM is being migrated live (the MS retries in 10 s) without asking Hyper-V
    for a change it refuses (32775) nor waiting for that refusal's job; no ACL changed,
    and the move completes with the VM's own. The rule set the port holds already, sent
    again meanwhile, succeeds: it asks Hyper-V for nothing."""
    vm = _sg_vm(tmp_path)
    name = vm["name"]
    async with _beside_b(tmp_path) as (config, on_b):
        async with serving(config, backend="emulator") as first:
            _, pool = await first.answer(names.MODIFY_STORAGE_POOL_COMMAND, pool_body())
            assert pool["result"] is True, pool
            _, started = await first.answer(names.START_COMMAND, start_body(vm))
            assert started["result"] is True, started["details"]
            _, applied = await first.answer(names.SECURITY_GROUP_RULES_CMD,
                                            rules_body(1, ingress=[SSH], egress=[]))
            assert applied["result"] is True, applied
        async with serving(config, backend="emulator") as agent:  # restarted
            on_a = agent.emulator
            (found,) = await on_a.query(wql.select("Msvm_ComputerSystem",
                                                   wql.eq("ElementName", name)))
            assert found.path is not None
            path = found.path
            before = await _vm_settings(on_a, path)
            assert ("cloudstack-sg/seqnum/" in str(before["acls"])
                    and "192.168.1.0/24" in str(before["acls"])), before["acls"]
            on_a.faults.slow_next_job("MigrateVirtualSystemToHost", 2.0)
            job = await _move_begun(on_a, path, "HV-B")
            spent_before = on_a.round_trips()
            kind, held = await agent.answer(names.SECURITY_GROUP_RULES_CMD,
                                            rules_body(1, ingress=[SSH], egress=[]))
            assert (kind, held["result"]) == (names.SECURITY_GROUP_RULE_ANSWER, True), held
            assert "the port holds the rules already" in held["details"], held
            assert (on_a.round_trips() - spent_before)["invoke"] == 0
            spent_before = on_a.round_trips()
            kind, answer = await agent.answer(names.SECURITY_GROUP_RULES_CMD,
                                              rules_body(2, ingress=[SSH, WEB], egress=[]))
            spent = on_a.round_trips() - spent_before
            _refused_mid_move(kind, answer, names.SECURITY_GROUP_RULE_ANSWER,
                              "the change of security group rules", name)
            assert answer["reason"] == "PROGRAMMING_FAILED", answer
            assert (spent["invoke"], spent.waits) == (0, 0), spent.counts
            assert (await on_a.get(job))["JobState"] == 4  # still Running
            assert await _vm_settings(on_a, path) == before
            await _job_ends(on_a, job)
            assert (await on_a.get(job))["JobState"] == 7, \
                (await on_a.get(job))["ErrorDescription"]
            assert not await on_a.query(wql.select("Msvm_ComputerSystem",
                                                   wql.eq("ElementName", name)))
            assert (await on_b.get(path))["EnabledState"] == 2  # runs on HV-B
            assert await _vm_settings(on_b, path) == before


SECOND_MAC = "02:00:4c:5f:01:07"  # the second NIC of ``with_second_nic``


async def test_a_nic_plug_and_unplug_of_a_vm_being_migrated_live_say_so(
        tmp_path: Path) -> None:
    """An operator live-migrates a VM while the management server plugs a NIC into it and
    unplugs one: each answer, a PlugNicAnswer and an UnPlugNicAnswer, fails saying the VM
    is being migrated live (VirtualMachineManagerImpl.plugNic/unplugNic return false and
    the NIC's network change fails), its NICs as they were; the move completes."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = with_second_nic(vm_to("i-2-11-VM"))
    nic = {"deviceId": 2, "mac": "02:00:4a:8e:00:21", "name": "vSwitch0",
           "broadcastUri": "vlan://305", "broadcastType": "Vlan", "type": "Guest",
           "networkRateMbps": 200, "uuid": "5c5f9e1a-1d6b-4b8e-9d76-2c1f0f6c9a11"}
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        before = await _vm_settings(a.cim(), await _vm_path(a, "i-2-11-VM"))
        on_a, path, job = await _moving(run, a, b, vm, started=True)
        asked = [(names.PLUG_NIC_COMMAND, names.PLUG_NIC_ANSWER, "the NIC plug", nic),
                 (names.UNPLUG_NIC_COMMAND, names.UNPLUG_NIC_ANSWER, "the NIC unplug",
                  nic | {"mac": SECOND_MAC, "deviceId": 1})]
        for command, answer_class, what, plugged in asked:
            kind, answer = await run.ask(a, command, {
                "instanceName": "i-2-11-VM", "vmType": "User", "nic": plugged,
                "contextMap": {}, "wait": 0})
            _refused_mid_move(kind, answer, answer_class, what, "i-2-11-VM")
        assert (await on_a.get(job))["JobState"] == 4  # still Running
        assert await _vm_settings(on_a, path) == before
        await _moved_on(run, hosts, on_a, job, path, before)


async def test_a_scaling_of_a_vm_being_migrated_live_says_so(tmp_path: Path) -> None:
    """An operator live-migrates a VM while the management server scales it (it scales
    only stopped VMs on Hyper-V, but may send it): the ScaleVmAnswer fails saying the VM is
    being migrated live (VirtualMachineManagerImpl throws "Unable to scale vm due to" its
    details, the offering unchanged), processors and memory as they were; the move
    completes."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = vm_to("i-2-12-VM")
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        before = await _vm_settings(a.cim(), await _vm_path(a, "i-2-12-VM"))
        on_a, path, job = await _moving(run, a, b, vm, started=True)
        kind, answer = await run.ask(a, names.SCALE_VM_COMMAND, {
            "vmName": "i-2-12-VM", "cpus": 2, "minSpeed": 500, "maxSpeed": 2000,
            "minRam": 1024 << 20, "maxRam": 1024 << 20, "limitCpuUse": False,
            "contextMap": {}, "wait": 0})
        _refused_mid_move(kind, answer, names.SCALE_VM_ANSWER, "the scaling", "i-2-12-VM")
        assert (await on_a.get(job))["JobState"] == 4  # still Running
        assert await _vm_settings(on_a, path) == before
        await _moved_on(run, hosts, on_a, job, path, before)


async def test_a_nic_change_of_a_vm_being_migrated_live_says_so(tmp_path: Path) -> None:
    """An operator live-migrates a VM while the management server's Hyper-V resource
    rewires one of its NICs (ModifyVmNicConfigCommand, by MAC and by index): each
    ModifyVmNicConfigAnswer fails saying the VM is being migrated live (the resource logs
    it and goes on), the NICs' ports and VLANs as they were; the move completes."""
    a, b = hosts = pair(tmp_path, emulator_a="job_duration_s = 2")
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = with_second_nic(vm_to("i-2-13-VM"))
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        before = await _vm_settings(a.cim(), await _vm_path(a, "i-2-13-VM"))
        on_a, path, job = await _moving(run, a, b, vm, started=True)
        common: dict[str, Any] = {
            "vmName": "i-2-13-VM", "vlan": "305", "macAddress": None, "index": 0,
            "enable": False, "switchLableName": None, "contextMap": {}, "wait": 0}
        for body in (common | {"macAddress": SECOND_MAC}, common | {"index": 1}):
            kind, answer = await run.ask(a, names.MODIFY_VM_NIC_CONFIG_COMMAND, body)
            _refused_mid_move(kind, answer, names.MODIFY_VM_NIC_CONFIG_ANSWER,
                              "the NIC change", "i-2-13-VM")
        assert (await on_a.get(job))["JobState"] == 4  # still Running
        assert await _vm_settings(on_a, path) == before
        await _moved_on(run, hosts, on_a, job, path, before)


async def _moving(run: Cluster, a: Member, b: Member, vm: dict[str, Any], *,
                  started: bool = False) -> tuple[Cim, ObjectPath, ObjectPath]:
    """``vm`` started on ``a`` by the agent (unless ``started`` before), then moved live
    to ``b`` by an operator (Move-VM: the move's job runs on ``a``): ``a``'s CIM, the VM's
    path and the move's job, under way."""
    if not started:
        await _started(run, a, vm)
    path = await _vm_path(a, vm["name"])
    on_a = a.cim()
    return on_a, path, await _move_begun(on_a, path, b.name)


async def _move_begun(source: Cim, path: ObjectPath, destination: str) -> ObjectPath:
    """The VM at ``path`` moved live from ``source`` to ``destination`` by an operator
    (Move-VM): the move's job, under way."""
    moving = await migrate(source, path, destination)
    job = moving.path("Job")
    assert moving.return_value == 4096 and job is not None
    return job


async def _job_ends(cim: Cim, job: ObjectPath) -> None:
    """Wait (at most 30 s) until the job at ``job`` has ended."""
    for _ in range(300):
        if (await cim.get(job))["JobState"] not in (3, 4):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the job never ended")


async def _refused(run: Cluster, source: Member, vm: dict[str, Any], address: str) -> str:
    """MigrateCommand that must fail: its details; the VM still runs on ``source`` alone."""
    kind, answer = await run.ask(source, names.MIGRATE_COMMAND, migrate_body(vm, address))
    assert (kind, answer["result"]) == (names.MIGRATE_ANSWER, False), answer
    details = str(answer["details"])
    assert details.startswith("MigrateCommand failed"), details
    assert vm["name"] in await run.on(source)
    assert await _power(run, source, vm["name"]) == "PowerOn"
    return details


async def _allow_migration(host: Member, enabled: bool) -> None:
    """Enable-VMMigration or Disable-VMMigration on ``host``, over its WinRM face."""
    cim = host.cim()
    (settings,) = await cim.query(wql.select("Msvm_VirtualSystemMigrationServiceSettingData"))
    await ok(cim, await cim.invoke(await service(cim, MIGRATION_SERVICE), "ModifyServiceSettings",
                                   {"ServiceSettingData": settings.updated(
                                       EnableVirtualSystemMigration=enabled)}))


async def test_moves_that_cannot_work_are_refused_and_the_vm_stays(tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    plain, switched, local = "i-2-20-VM", "i-2-21-VM", "i-2-22-VM"
    for volume in (plain, switched):
        disk_file(tmp_path / "pool", volume)
    disk_file(a.local_pool(tmp_path), local)
    vms = {plain: vm_to(plain, plain), switched: with_second_nic(vm_to(switched, switched),
                                                                   ONLY_ON_A),
           local: vm_to(local, local, local_root=True)}
    async with cluster(hosts) as run:
        for vm in vms.values():
            await _started(run, a, vm)
        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND,
                                 prepare_body(vms[switched]))
        assert ready["result"] is False and ONLY_ON_A in ready["details"], ready
        assert ONLY_ON_A in await _refused(run, a, vms[switched], b.address)

        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND,
                                 prepare_body(vms[local]))
        assert ready["result"] is False and "local pool" in ready["details"], ready
        assert "local pool" in await _refused(run, a, vms[local], b.address)

        huge = vm_to(plain, plain, memory_mb=512 << 10)  # 512 GiB: more than the host's 64
        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(huge))
        assert ready["result"] is False and "MB free" in ready["details"], ready
        # With dynamic memory (an overprovisioned cluster) it needs its minimum only.
        huge["minRam"] = 1 << 30
        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(huge))
        assert ready["result"] is True, ready

        unknown = await _refused(run, a, vms[plain], "127.0.0.9")
        assert "127.0.0.9" in unknown
        _, cleanup = await run.ask(b, names.STOP_COMMAND, stop_body(plain))  # the MS's
        assert cleanup["result"] is True, cleanup
        assert await run.where(hosts, plain) == ["HV-A"]

        await _allow_migration(b, False)  # Disable-VMMigration on the destination
        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND,
                                 prepare_body(vms[plain]))
        assert ready["result"] is False and "not enabled" in ready["details"], ready
        assert "does not allow" in await _refused(run, a, vms[plain], b.address)
        await _allow_migration(b, True)
        _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND,
                                 prepare_body(vms[plain]))
        assert ready["result"] is True, ready

        Cluster.stop(b)
        down = await _refused(run, a, vms[plain], b.address)
        assert "0x8007274D" in down, down
        assert await run.on(a) == set(vms)


async def test_maintenance_moves_every_vm_away_one_after_another(tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    names_ = [f"i-2-{n}-VM" for n in (30, 31, 32)]
    for name in names_:
        disk_file(tmp_path / "pool", name)
    async with cluster(hosts) as run:
        for name in names_:
            await _started(run, a, vm_to(name, name))
        assert await run.on(a) == set(names_)
        for name in sorted(await run.on(a)):
            moved = await _move(run, a, b, vm_to(name, name))
            assert moved["result"] is True, moved["details"]
            assert await _power(run, b, name) == "PowerOn"
        assert (await run.on(a), await run.on(b)) == (set(), set(names_))


def _checked(path: Path) -> dict[str, Any]:
    """``qemu-img check`` passes on the VHDX at ``path``; what ``qemu-img info`` reads."""
    subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], check=True,
                   capture_output=True)
    return qemu_info(path)


async def test_disks_move_with_their_vm_and_alone(tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    name, spare = "i-2-40-VM", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    disk_file(a.local_pool(tmp_path), name)
    disk_file(tmp_path / "pool", spare)
    vm = vm_to(name, name, local_root=True)
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        outside = local_pool_of("ab416c39", b.address) | {"path": "C:\\Windows\\System32"}
        _, refused = await run.ask(a, names.MIGRATE_WITH_STORAGE_COMMAND,
                                   with_storage_body(vm, b.address, outside))
        assert refused["result"] is False and "not registered" in refused["details"], refused
        assert await run.where(hosts, name) == ["HV-A"]
        target = local_pool_of("ab416c39-d509-372c-9a0a-7451a45bc65e", b.address)
        kind, moved = await run.ask(a, names.MIGRATE_WITH_STORAGE_COMMAND,
                                    with_storage_body(vm, b.address, target))
        assert (kind, moved["result"]) == (names.MIGRATE_WITH_STORAGE_ANSWER, True), moved
        assert [(v["id"], v["path"]) for v in moved["volumeTos"]] == [(31, name)]
        assert await run.where(hosts, name) == ["HV-B"]
        assert not (a.local_pool(tmp_path) / f"{name}.vhdx").exists()
        assert _checked(b.local_pool(tmp_path) / f"{name}.vhdx")["virtual-size"] == 64 << 20

        kind, answer = await run.ask(b, names.MIGRATE_VOLUME_COMMAND,
                                     volume_body(name, name, smb_pool()))
        assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), answer
        assert answer["volumePath"] == name
        assert not (b.local_pool(tmp_path) / f"{name}.vhdx").exists()
        assert _checked(tmp_path / "pool" / f"{name}.vhdx")["format"] == "vhdx"
        assert await _power(run, b, name) == "PowerOn"

        _, alone = await run.ask(b, names.MIGRATE_VOLUME_COMMAND, volume_body(
            spare, None, local_pool_of("ab416c39", b.address), source_pool=smb_pool()))
        assert alone["result"] is True, alone
        assert not (tmp_path / "pool" / f"{spare}.vhdx").exists()
        assert _checked(b.local_pool(tmp_path) / f"{spare}.vhdx")["virtual-size"] == 64 << 20


async def test_a_running_vms_linked_clone_does_not_leave_its_template_behind(
    tmp_path: Path,
) -> None:
    """A THIN root volume is a differencing disk on the template in its pool, and
    Hyper-V moves a running VM's disk as it is: moved with its VM to the other host's
    local pool it would name C:\\...\\<template>.vhdx, a file of that host's own local pool
    this host cannot see (the MS copies no template for the move), and moved to the SMB
    pool the template on this host's local pool, which the MS evicts once no volume there
    uses it. Either way the VM could not start again after its next stop, so the move is
    refused before anything moves, naming the disk and its template and what to do."""
    a, b = hosts = pair(tmp_path)
    (tmp_path / "pool").mkdir()
    name = "i-2-41-VM"
    pool = a.local_pool(tmp_path)
    template = disk_file(pool, "tmpl-1")
    vhd.create(pool / f"{name}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator=f"{LOCAL_POOL}\\tmpl-1.vhdx")
    before = {p.name: p.read_bytes() for p in pool.iterdir()}
    vm = vm_to(name, name, local_root=True)
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        for target in (local_pool_of("ab416c39-d509-372c-9a0a-7451a45bc65e", b.address),
                       smb_pool()):
            kind, refused = await run.ask(a, names.MIGRATE_WITH_STORAGE_COMMAND,
                                          with_storage_body(vm, b.address, target))
            assert (kind, refused["result"]) == (names.MIGRATE_WITH_STORAGE_ANSWER, False)
            details = str(refused["details"])
            assert f"{name}.vhdx is a linked clone of {LOCAL_POOL}\\tmpl-1.vhdx" in details, \
                details
            assert "stop the VM and migrate it with its volumes" in details, details
            assert await run.where(hosts, name) == ["HV-A"]
        assert {p.name: p.read_bytes() for p in pool.iterdir()} == before
        assert not b.local_pool(tmp_path).exists() or not list(b.local_pool(tmp_path).iterdir())
        assert not list((tmp_path / "pool").glob("*.vhd*"))
        assert await _power(run, a, name) == "PowerOn"


async def _rules(run: Cluster, host: Member, seq: int, *ingress: dict[str, Any]) -> None:
    """SecurityGroupRulesCmd of sample 50 for i-2-8-VM with the ingress rules ``ingress``."""
    _, answer = await run.ask(host, names.SECURITY_GROUP_RULES_CMD,
                              rules_body(seq, ingress=list(ingress), egress=[]))
    assert answer["result"] is True, answer


async def _ingress_sources(host: Member) -> list[str]:
    """The remote address of each ingress ACL of the host's ports (its one VM's)."""
    found = await host.cim().query(wql.select("Msvm_EthernetSwitchPortExtendedAclSettingData",
                                              wql.eq("Direction", 1)))
    return sorted(str(acl["RemoteIPAddress"]) for acl in found)


async def test_rules_changed_while_the_vm_was_away_are_kept_exactly_when_it_is_back(
        tmp_path: Path) -> None:
    """The port's ACLs move with the VM and change on the host it runs on; back on its
    first host, a rule the user revoked there no longer lets traffic in."""
    a, b = hosts = pair(tmp_path)
    name = "i-2-8-VM"  # the VM of sample 50
    disk_file(tmp_path / "pool", name)
    vm = vm_to(name, name)
    vm["nics"][0] |= {"mac": "02:00:4c:5f:00:08", "ip": "10.1.1.80", "broadcastType": "Native",
                      "broadcastUri": "vlan://untagged", "isolationUri": "ec2://untagged",
                      "securityGroupEnabled": True}
    ssh, web, tls = (rule("tcp", 22, 22, "192.168.1.0/24"), rule("tcp", 80, 80, "10.9.0.0/16"),
                     rule("tcp", 443, 443, "10.8.0.0/16"))
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        await _rules(run, a, 1, ssh)
        assert (await _move(run, a, b, vm))["result"] is True
        await _rules(run, b, 2, ssh)  # the MS's re-send after a move
        await _rules(run, b, 3, ssh, tls)
        await _rules(run, b, 4, ssh, tls, web)
        await _rules(run, b, 5, ssh, web)
        assert (await _move(run, b, a, vm))["result"] is True
        await _rules(run, a, 6, ssh, web)
        assert (await _ingress_sources(a)).count("10.9.0.0/16") == 1
        await _rules(run, a, 7, ssh)
        assert "10.9.0.0/16" not in await _ingress_sources(a)
