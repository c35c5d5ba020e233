"""Security-group commands for a VM Hyper-V is starting or stopping, over real HTTPS: the
emulated host takes no switch-port feature change while a state change's job runs (the
latency model's job time, 32775). A SecurityGroupRulesCmd follows a StartCommand's answer
at once, and the VM may still be starting on a slow host: the commands wait the change
out, then change the port; one still changing after the agent's bound fails the command's
own answer, naming the change, with no feature call made."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator.config import LatencyModel
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hyperv import jobs
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, serving
from tests.e2e.sgkit import (
    MAC,
    VM_NAME,
    acls_of,
    https_to,
    left_of,
    orphaned_acl,
    reaches,
    rules_body,
    send,
    ssh,
)
from tests.e2e.transitions_kit import JOB_S, STARTING, STOPPING, changing, frozen, slow
from tests.emulator.kit import ok, request_state
from tests.emulator.portkit import ACL, acl, add_features, vm_with_nic


async def test_rules_for_a_vm_still_starting_are_applied_once_it_runs(running: Running) -> None:
    """The MS sends a VM's rules as soon as its start is answered; on a slow host the VM
    may still be starting, and Hyper-V takes no ACL on its port meanwhile: the rules are
    applied once the start is done instead of failing (and being retried by the MS)."""
    cim = running.emulator
    nic = await vm_with_nic(cim, VM_NAME, MAC, running=False)
    slow(running)
    await changing(cim, nic.vm, 2, STARTING)
    answer = await send(running, rules_body(seq=1))
    assert answer["result"] is True, answer
    assert reaches(running, ssh("192.168.1.10"))
    assert not reaches(running, ssh("192.168.2.10"))
    assert (await cim.get(nic.vm))["EnabledState"] == 2


async def test_secondary_ip_of_a_vm_still_starting_is_let_through_once_it_runs(
    agent_config: Callable[..., AgentConfig],
) -> None:
    """After an agent restart the port is read afresh: for a VM still starting, once the
    start is done."""
    config = agent_config()
    async with serving(config) as running:
        nic = await vm_with_nic(running.emulator, VM_NAME, MAC)
        assert (await send(running, rules_body(seq=1)))["result"] is True
    async with serving(config) as running:  # restarted; the VM and its port are kept
        cim = running.emulator
        await ok(cim, await request_state(cim, nic.vm, 3))
        slow(running)
        await changing(cim, nic.vm, 2, STARTING)
        added = ms422_json("51_NetworkRulesVmSecondaryIpCommand.json")  # -A 10.1.1.81
        key, answer = await running.answer(names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND, added)
        assert (key, answer["result"]) == (names.ANSWER, True), answer
        assert reaches(running, https_to("10.0.0.5", local="10.1.1.81"))


async def test_system_vm_still_stopping_is_opened_once_it_is_off(running: Running) -> None:
    """A NetworkRulesSystemVmCommand for a system VM Hyper-V is stopping (HA, a guest
    shutdown) removes the agent's ACLs once the stop is done."""
    cim = running.emulator
    nic = await vm_with_nic(cim, "v-3-VM", MAC)
    await ok(cim, await add_features(cim, nic.port, [await acl(
        cim, Name="cloudstack-sg/deny", Direction=1, Action=2, Weight=1)]))
    slow(running)
    await changing(cim, nic.vm, 3, STOPPING)
    body = ms422_json("52_NetworkRulesSystemVmCommand.json")
    key, answer = await running.answer(names.NETWORK_RULES_SYSTEM_VM_COMMAND, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert await acls_of(cim, "v-3-VM") == []


async def test_rules_for_a_vm_still_starting_after_the_bound_fail_naming_the_change(
    agent_config: Callable[..., AgentConfig],
) -> None:
    wait = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.05, max_poll_s=0.1)
    async with serving(agent_config(), VmSettings(job_wait=wait)) as running:
        cim = running.emulator
        nic = await vm_with_nic(cim, VM_NAME, MAC, running=False)
        slow(running, job_s=5.0)
        await changing(cim, nic.vm, 2, STARTING)
        before = cim.round_trips()
        answer = await send(running, rules_body(seq=1))
        spent = cim.round_trips() - before
        assert (answer["result"], answer["reason"]) == (False, "PROGRAMMING_FAILED"), answer
        assert f"VM {VM_NAME} is still starting on this host after 0.3 s" in answer["details"]
        assert spent["invoke:AddFeatureSettings"] == spent["invoke:RemoveFeatureSettings"] == 0
        assert await acls_of(cim) == []  # nothing changed


_LEFT = wql.select(ACL, wql.eq("Name", "cloudstack-sg/deny"))


async def test_cleanup_removes_the_acls_of_a_vm_still_stopping_once_it_is_off(
    running: Running,
) -> None:
    """CleanupNetworkRulesCmd removes the agent's ACLs left without their port; those of a
    VM Hyper-V is stopping (HA, a guest shutdown) take no removal until it is off: the
    cleanup waits the stop out, as the other security-group commands do, instead of
    failing on them."""
    cim = running.emulator
    nic = await orphaned_acl(cim)
    slow(running)
    await changing(cim, nic.vm, 3, STOPPING)
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert answer["details"].startswith("1 ACLs of ports that no longer exist removed"), answer
    assert await cim.query(_LEFT) == []
    assert (await cim.get(nic.vm))["EnabledState"] == 3


async def test_cleanup_for_a_vm_still_stopping_after_the_bound_fails_naming_the_change(
    agent_config: Callable[..., AgentConfig],
) -> None:
    wait = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.05, max_poll_s=0.1)
    async with serving(agent_config(), VmSettings(job_wait=wait)) as running:
        cim = running.emulator
        nic = await orphaned_acl(cim)
        slow(running, job_s=5.0)
        await changing(cim, nic.vm, 3, STOPPING)
        before = cim.round_trips()
        body = ms422_json("53_CleanupNetworkRulesCmd.json")
        key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
        spent = cim.round_trips() - before
        assert (key, answer["result"]) == (names.ANSWER, False), answer
        assert f"VM {VM_NAME} is still stopping on this host after 0.3 s" in answer["details"]
        assert spent["invoke:RemoveFeatureSettings"] == 0
        assert len(await cim.query(_LEFT)) == 1  # left for the next cleanup


async def test_cleanup_goes_on_past_a_vm_still_stopping_and_the_next_one_finishes(
    agent_config: Callable[..., AgentConfig],
) -> None:
    """A VM Hyper-V is still stopping after the bound (a guest that takes its time) keeps
    its leftover ACLs for now; those of the host's other VMs are removed all the same,
    and the answer names the VM left and why. Once it is off, the next cleanup removes
    what was left."""
    wait = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.05, max_poll_s=0.1)
    async with serving(agent_config(), VmSettings(job_wait=wait)) as running:
        cim = running.emulator
        stuck = await orphaned_acl(cim, "i-2-5-VM", "02:00:4c:5f:00:05")
        others = [await orphaned_acl(cim, VM_NAME, MAC),
                  await orphaned_acl(cim, "i-2-9-VM", "02:00:4c:5f:00:09")]
        slow(running)
        advance = frozen(running)
        await changing(cim, stuck.vm, 3, STOPPING)  # lasts until the clock is moved on
        host = cim.host  # later jobs (the removals) end at once, the clock standing still
        host.config = dataclasses.replace(host.config, latency=LatencyModel())
        body = ms422_json("53_CleanupNetworkRulesCmd.json")
        key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
        assert (key, answer["result"]) == (names.ANSWER, False), answer
        details = answer["details"]
        assert details.startswith("2 ACLs of ports that no longer exist removed"), answer
        assert ("1 ACLs of VM i-2-5-VM left for the next cleanup: VM i-2-5-VM is still "
                "stopping on this host after 0.3 s") in details, answer
        assert VM_NAME not in details and "i-2-9-VM" not in details, answer
        assert [await left_of(cim, nic) for nic in others] == [[], []]
        assert len(await left_of(cim, stuck)) == 1
        advance(JOB_S)  # the stop is done
        key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
        assert (key, answer["result"]) == (names.ANSWER, True), answer
        assert answer["details"].startswith("1 ACLs of ports that no longer exist removed")
        assert "left" not in answer["details"], answer
        assert await left_of(cim, stuck) == []
