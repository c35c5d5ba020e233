"""A VM's security-group ACLs across a live migration between two emulated cluster hosts:
they travel with the port, with the seqNum of the rule set they are, the destination
agent's first re-send changes no rule, and the source forgets the VM on
CleanupNetworkRulesCmd."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack.answers import Answer
from hyperv_agent.cloudstack.commands_network import CleanupNetworkRulesCmd, SecurityGroupRulesCmd
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.portacl import Packet
from hyperv_agent.handlers.dispatch import Result
from hyperv_agent.handlers.secgroups import SecurityGroupHandlers
from hyperv_agent.handlers.vm import VmLocks
from hyperv_agent.hyperv import build, nics, power
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.session import HyperV
from tests.cloudstack.fixtures import ms422_json
from tests.emulator.kit import ok
from tests.emulator.migration_kit import migrate

A, B = "HV-A", "HV-B"
IPS = {A: "10.0.0.1", B: "10.0.0.2"}
VM, MAC, VM_IP = "i-2-8-VM", "02:00:4c:5f:00:08", "10.1.1.80"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[EmulatorCim, EmulatorCim]]:
    hosts = [EmulatorCim.open(EmulatorConfig(
        state_dir=tmp_path / name / "state", host_name=name, private_ip=IPS[name],
        drives={"C": tmp_path / name / "C"}, cluster_dir=tmp_path / "cluster"))
        for name in (A, B)]
    yield hosts[0], hosts[1]
    for cim in hosts:
        await cim.close()


def _rules(seq: int) -> SecurityGroupRulesCmd:
    body: dict[str, Any] = copy.deepcopy(ms422_json("50_SecurityGroupRulesCmd.json"))
    body["seqNum"] = seq
    return SecurityGroupRulesCmd.model_validate(body)


async def _answered(work: Awaitable[Result]) -> Answer:
    answer = await work
    assert isinstance(answer, Answer)
    return answer


def _ssh(cim: EmulatorCim, remote: str) -> bool:
    return traffic.connects(cim.host, VM, MAC, Packet.inbound("tcp", remote, VM_IP,
                                                              local_port=22))


async def test_acls_and_their_seqnum_travel_with_the_vm_and_the_resend_changes_no_rule(
    pair: tuple[EmulatorCim, EmulatorCim],
) -> None:
    a, b = pair
    on_a, on_b = HyperV(a), HyperV(b)
    vm = await build.define_vm(on_a, VmSpec(name=VM, notes=(), generation=1, cpus=1,
                                            memory_mb=512))
    await nics.add_nic(on_a, vm, mac=MAC, switch_name="External", vlan=None, rate_mbps=None,
                       name="eth0")
    await power.start(on_a, vm.guid)
    agent_a, agent_b = SecurityGroupHandlers(on_a, VmLocks()), SecurityGroupHandlers(on_b,
                                                                                      VmLocks())
    assert (await _answered(agent_a.rules(_rules(1)))).result
    (system,) = await a.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    assert system.path is not None
    await ok(a, await migrate(a, system.path, B, DestinationIPAddressList=[IPS[B]]))
    assert _ssh(b, "192.168.1.10") and not _ssh(b, "192.168.2.10")
    before = b.round_trips()
    answer = await _answered(agent_b.rules(_rules(2)))  # the MS re-programs the VM on its new host
    spent = b.round_trips() - before
    # the same rules under a new seqNum: only the ACL recording the seqNum is replaced
    assert answer.result and "1 ACLs added, 1 removed" in (answer.details or ""), answer
    assert (spent["invoke"], spent.waits) == (2, 2), spent  # + reads, 1 spawn
    assert _ssh(b, "192.168.1.10") and not _ssh(b, "192.168.2.10")
    late = await _answered(agent_b.rules(_rules(1)))  # the seqNum travelled with the port
    assert late.result and "older than 2" in (late.details or ""), late
    cleaned = await _answered(agent_a.cleanup(CleanupNetworkRulesCmd(interval=2350)))
    assert cleaned.result and "1 VMs no longer here forgotten" in (cleaned.details or "")
