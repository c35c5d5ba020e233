"""Security groups over real HTTPS: a user VM started on a security-group network, then
SecurityGroupRulesCmd, NetworkRulesVmSecondaryIpCommand, NetworkRulesSystemVmCommand and
CleanupNetworkRulesCmd as the MS writes them, judged by what the emulated switch lets
through (emulator/traffic.py), not by rule lists; re-sends counted in round trips."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench import bench_secgroups

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.portacl import Packet
from hyperv_agent.errors import CimUnreachable
from hyperv_agent.hyperv import build, nics, power
from hyperv_agent.hyperv.acls import Guard
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.portacls import AclSpec, PortSecurity
from hyperv_agent.hyperv.schema import AclAction, AclDirection
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, serving
from tests.e2e.sgkit import (
    MAC,
    STOP,
    VM_IP,
    VM_IP6,
    VM_NAME,
    acl_state,
    acls_of,
    https_to,
    left_of,
    orphaned_acl,
    port_of,
    reaches,
    rule,
    rules_body,
    send,
    ssh,
    start_body,
    started,
)
from tests.emulator.kit import ok
from tests.emulator.portkit import acl, add_features
from tests.sessions import hv

DNS = Packet.outbound("udp", VM_IP, "8.8.8.8", remote_port=53)
DHCP = Packet.outbound("udp", "0.0.0.0", "255.255.255.255", remote_port=67,
                       local_port=68)
PING_FROM = "10.2.3.4"


def _ping(remote: str, local: str = VM_IP) -> Packet:
    return Packet.inbound("icmp", remote, local)


# --- starting -----------------------------------------------------------------------------


async def test_vm_starts_closed_to_ingress_and_open_to_egress_when_its_nic_has_sgs(
    running: Running,
) -> None:
    cim = running.emulator
    before = cim.round_trips()
    await started(running)
    spent = cim.round_trips() - before
    # The ACLs went onto the port with the NIC's other features, in the one feature call
    # made before the single power-on: the VM never ran without them.
    assert (spent["invoke:AddFeatureSettings"], spent["invoke:RequestStateChange"]) == (1, 1)
    assert not reaches(running, ssh("192.168.1.10"))
    assert reaches(running, https_to("8.8.8.8")) and reaches(running, DNS)
    assert reaches(running, Packet.outbound("icmp", VM_IP, "8.8.8.8"))  # and its reply
    assert reaches(running, _ping(PING_FROM))  # ACLs keep no ICMP session (README)
    assert reaches(running, DHCP)
    assert not reaches(running, https_to("8.8.8.8", local="10.1.1.99"))  # spoofed source


async def test_vm_starts_open_when_its_nic_has_no_sgs(running: Running) -> None:
    await started(running, start_body(running, security_groups=False))
    assert await acls_of(running.emulator) == []
    assert reaches(running, ssh("192.168.1.10"))


# --- SecurityGroupRulesCmd ----------------------------------------------------------------


async def test_ssh_reaches_the_vm_only_from_its_cidr_when_sample_rules_are_sent(
    running: Running,
) -> None:
    await started(running)
    answer = await send(running, rules_body())
    assert (answer["result"], answer["reason"]) == (True, "NONE"), answer
    assert reaches(running, ssh("192.168.1.10"))
    assert not reaches(running, ssh("192.168.2.10"))
    assert not reaches(running, Packet.inbound("tcp", "192.168.1.10", VM_IP, local_port=80))


async def test_icmp_rule_lets_its_cidr_ping_and_says_types_are_not_told_apart(
    running: Running,
) -> None:
    await started(running)
    answer = await send(running, rules_body(ingress=[rule("icmp", 8, 0, "10.0.0.0/8")]))
    assert answer["result"] is True and "ICMP" in answer["details"], answer
    assert reaches(running, _ping(PING_FROM))
    assert not reaches(running, _ping("192.0.2.1"))
    assert not reaches(running, ssh(PING_FROM))


async def test_egress_rule_limits_the_vm_to_its_cidr_and_keeps_dns_and_dhcp(
    running: Running,
) -> None:
    await started(running)
    await send(running, rules_body())  # egress: tcp 443 to 10.0.0.0/8 only
    assert reaches(running, https_to("10.0.0.5"))
    assert not reaches(running, https_to("8.8.8.8"))
    assert not reaches(running, Packet.outbound("tcp", VM_IP, "10.0.0.5", remote_port=80))
    assert reaches(running, DNS) and reaches(running, DHCP)


async def test_all_egress_passes_when_no_egress_rule_is_sent(running: Running) -> None:
    await started(running)
    await send(running, rules_body(egress=[]))
    assert reaches(running, https_to("8.8.8.8"))
    assert reaches(running, Packet.outbound("udp", VM_IP, "198.51.100.7", remote_port=5000))
    assert not reaches(running, ssh("192.168.2.10"))


async def test_ipv6_rules_reach_the_vms_ipv6_address(running: Running) -> None:
    await started(running, start_body(running, ip6=VM_IP6))
    body = rules_body(ingress=[rule("tcp", 22, 22, "2001:db8:2::/64")],
                      egress=[rule("tcp", 443, 443, "2001:db8:3::/64")], guestIp6=VM_IP6)
    assert (await send(running, body))["result"] is True
    assert reaches(running, ssh("2001:db8:2::7", local=VM_IP6))
    assert not reaches(running, ssh("2001:db8:9::7", local=VM_IP6))
    assert reaches(running, https_to("2001:db8:3::1", local=VM_IP6))
    assert not reaches(running, https_to("2001:db8:4::1", local=VM_IP6))
    assert reaches(running, https_to("8.8.8.8"))  # no IPv4 egress rule: IPv4 egress open


async def test_ipv6_cidrs_of_every_spelling_reach_the_port_as_hyperv_holds_them(
    running: Running,
) -> None:
    # As the MS passes them on: what a user typed (zero-padded, upper case, an embedded
    # IPv4 address, a /128 of 43 characters, a small block written in full) and a group
    # member's address with the /64 the MS appends. Hyper-V's address fields hold 40
    # characters; a /120 written in full takes 43, so it arrives as its 256 addresses.
    await started(running, start_body(running, ip6=VM_IP6))
    block = "2001:db8:1234:5678:9abc:def0:1234:5600/120"
    cidrs = ["2001:0DB8:0002:0000:0000:0000:0000:0000/64", "::ffff:10.0.0.1/128",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "2001:db8:7::81/64", block]
    body = rules_body(ingress=[rule("tcp", 22, 22, *cidrs)], egress=[], guestIp6=VM_IP6)
    answer = await send(running, body)
    assert (answer["result"], answer["reason"]) == (True, "NONE"), answer
    remote = {str(a["RemoteIPAddress"]) for a in await acls_of(running.emulator)
              if str(a["Name"]) == "cloudstack-sg/ingress"}
    assert max(len(text) for text in remote) <= 40
    hosts = {str(ipaddress.ip_address(h)) for h in ipaddress.ip_network(block)}
    assert remote == {"2001:db8:2::/64", str(ipaddress.ip_address("::ffff:10.0.0.1")),
                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8:7::/64", *hosts}
    for source in ("2001:db8:2::5", "::ffff:10.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                   "2001:db8:7::99", "2001:db8:1234:5678:9abc:def0:1234:56ab"):
        assert reaches(running, ssh(source, local=VM_IP6)), source
    for source in ("2001:db8:3::5", "2001:db8:1234:5678:9abc:def0:1234:5700"):
        assert not reaches(running, ssh(source, local=VM_IP6)), source


async def test_ipv6_cidr_too_long_for_an_acl_and_too_large_to_spell_out_fails_naming_it(
    running: Running,
) -> None:
    await started(running, start_body(running, ip6=VM_IP6))
    await send(running, rules_body(seq=1, guestIp6=VM_IP6))
    before = await acl_state(running.emulator)
    body = rules_body(seq=2, guestIp6=VM_IP6, ingress=[
        rule("tcp", 22, 22, "192.168.1.0/24", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:f000/116")])
    answer = await send(running, body)
    assert (answer["result"], answer["reason"]) == (False, "PROGRAMMING_FAILED"), answer
    assert "ingressRuleSet[0].allowedCidrs[1]" in answer["details"], answer
    assert "40" in answer["details"] and "/120" in answer["details"], answer
    assert await acl_state(running.emulator) == before


async def test_dual_stack_vm_keeps_ipv6_working_when_its_groups_restrict_egress(
    running: Running,
) -> None:
    # What KVM's default ip6tables chain lets through (router and neighbour discovery,
    # DHCPv6 as a client, MLD, DNS, ICMPv6 errors), from the NIC's address, its
    # link-local one, "::" for duplicate address detection and an IPv6 secondary
    # address added later; nothing from another source, no router advertisement out.
    await started(running, start_body(running, ip6=VM_IP6))
    body = rules_body(guestIp6=VM_IP6, ingress=[rule("tcp", 22, 22, "2001:db8:2::/64")],
                      egress=[rule("tcp", 443, 443, "10.0.0.0/8", "2001:db8:3::/64")])
    assert (await send(running, body))["result"] is True
    secondary = "2001:db8:1::90"
    added = {**ms422_json("51_NetworkRulesVmSecondaryIpCommand.json"), "vmSecIp": secondary}
    _, answer = await running.answer(names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND, added)
    assert answer["result"] is True, answer
    link_local = "fe80::4cff:fe5f:8"  # EUI-64 of MAC

    def passes(packet: Packet, icmp_type: int | None = None) -> bool:
        packet = dataclasses.replace(packet, icmp_type=icmp_type)
        return bool(traffic.admits(running.emulator.host, VM_NAME, MAC, packet))

    assert passes(Packet.outbound("icmpv6", link_local, "ff02::2"), 133)  # RS
    assert passes(Packet.inbound("icmpv6", "fe80::1", "ff02::1"), 134)  # RA
    assert passes(Packet.outbound("icmpv6", "::", "ff02::1:ff00:80"), 135)  # DAD
    assert passes(Packet.inbound("icmpv6", "2001:db8:1::1", "ff02::1:ff00:80"), 135)
    for own in (VM_IP6, link_local, secondary):
        assert passes(Packet.outbound("icmpv6", own, "2001:db8:1::1"), 136), own  # NA
        assert passes(Packet.outbound("icmpv6", own, "ff02::16"), 143), own  # MLD
    assert passes(Packet.inbound("icmpv6", "2001:db8:9::1", VM_IP6), 2)  # too big
    assert passes(Packet.outbound("udp", link_local, "ff02::1:2", remote_port=547,
                                  local_port=546))
    assert passes(Packet.inbound("udp", "fe80::1", link_local, local_port=546,
                                 remote_port=547))
    for own in (VM_IP6, secondary):
        assert reaches(running, Packet.outbound("udp", own, "2001:4860::8888", remote_port=53))
        assert reaches(running, https_to("2001:db8:3::1", local=own)), own
        assert not reaches(running, https_to("2001:db8:9::1", local=own)), own
    assert reaches(running, Packet.outbound("icmpv6", VM_IP6, "2001:db8:9::1"))  # ping6
    assert reaches(running, ssh("2001:db8:2::7", local=VM_IP6))
    assert not passes(Packet.outbound("icmpv6", "2001:db8:1::99", "2001:db8:1::1"), 136)
    assert not passes(Packet.outbound("icmpv6", link_local, "ff02::1"), 134)  # router guard
    assert not passes(Packet.outbound("udp", link_local, "fe80::5", local_port=547,
                                      remote_port=546))  # a DHCPv6 server's answer


async def test_group_rule_admits_only_the_members_it_arrives_as(running: Running) -> None:
    await started(running)
    members = rule("tcp", 80, 80, "10.1.1.81/32", "10.1.1.82/32")
    await send(running, rules_body(ingress=[members]))
    web = [Packet.inbound("tcp", ip, VM_IP, local_port=80)
           for ip in ("10.1.1.81", "10.1.1.82", "10.1.1.83")]
    assert [reaches(running, packet) for packet in web] == [True, True, False]


async def test_numbered_protocol_rules_let_their_replies_back_when_egress_is_restricted(
    running: Running,
) -> None:
    # An IPsec peer (ESP, 50) may reach the VM, the VM may open GRE (47) tunnels to its
    # peers; egress otherwise limited to tcp 443. KVM's connection tracking lets the
    # replies of both back; Hyper-V's ACLs keep no session for them.
    await started(running)
    body = rules_body(ingress=[rule("50", 0, 0, "203.0.113.0/24")],
                      egress=[rule("tcp", 443, 443, "10.0.0.0/8"),
                              rule("47", 0, 0, "198.51.100.0/24")])
    answer = await send(running, body)
    assert answer["result"] is True, answer
    assert reaches(running, Packet.inbound(50, "203.0.113.9", VM_IP))
    assert reaches(running, Packet.outbound(47, VM_IP, "198.51.100.7"))
    assert not reaches(running, Packet.inbound(50, "192.0.2.9", VM_IP))
    assert not reaches(running, Packet.outbound(47, VM_IP, "192.0.2.9"))
    assert not reaches(running, Packet.outbound(50, VM_IP, "192.0.2.9"))
    assert not reaches(running, ssh("203.0.113.9"))  # only ESP comes from the ESP peer
    assert not reaches(running, Packet.outbound(47, "10.1.1.99", "198.51.100.7"))  # spoofed


async def test_all_rules_let_the_replies_of_every_protocol_back_but_open_no_tcp_or_udp(
    running: Running,
) -> None:
    # A dual-stack VM whose egress is restricted in both families: its tunnel peers may
    # reach it with anything (ingress all), and it may reach its other peers with anything
    # (egress all). GRE (47) and SCTP (132) keep no session in Hyper-V's ACLs; on KVM
    # connection tracking lets their replies back, so here the ACLs must.
    await started(running, start_body(running, ip6=VM_IP6))
    body = rules_body(guestIp6=VM_IP6,
                      ingress=[rule("all", 0, 0, "203.0.113.0/24", "2001:db8:2::/64")],
                      egress=[rule("tcp", 443, 443, "10.0.0.0/8", "2001:db8:3::/64"),
                              rule("all", 0, 0, "198.51.100.0/24", "2001:db8:5::/64")])
    answer = await send(running, body)
    assert (answer["result"], answer["reason"]) == (True, "NONE"), answer
    for protocol in (47, 132, "icmp"):
        assert reaches(running, Packet.inbound(protocol, "203.0.113.9", VM_IP)), protocol
        assert reaches(running, Packet.outbound(protocol, VM_IP, "198.51.100.7")), protocol
    for protocol in (47, 132):
        assert reaches(running, Packet.inbound(protocol, "2001:db8:2::9", VM_IP6)), protocol
        assert reaches(running, Packet.outbound(protocol, VM_IP6, "2001:db8:5::7")), protocol
    # What the rules allow one way only stays so: the VM opens no TCP or UDP to its
    # ingress peers, its egress peers open none to it, nobody else sends it GRE.
    for remote, local in (("203.0.113.9", VM_IP), ("2001:db8:2::9", VM_IP6)):
        assert not reaches(running, Packet.outbound("tcp", local, remote, remote_port=80))
        assert not reaches(running, Packet.outbound("udp", local, remote, remote_port=500))
    for remote, local in (("198.51.100.7", VM_IP), ("2001:db8:5::7", VM_IP6)):
        assert not reaches(running, Packet.inbound("tcp", remote, local, local_port=22))
        assert not reaches(running, Packet.inbound("udp", remote, local, local_port=500))
    assert not reaches(running, Packet.inbound(47, "192.0.2.9", VM_IP))
    assert not reaches(running, Packet.outbound(47, VM_IP, "192.0.2.9"))
    assert not reaches(running, Packet.outbound(47, "10.1.1.99", "203.0.113.9"))  # spoofed
    assert reaches(running, Packet.outbound("udp", VM_IP, "8.8.8.8", remote_port=53))
    assert reaches(running, DHCP)  # the guards sit below DHCP's allows
    replies = sorted((str(a["Name"]), a["Direction"], a["Action"], str(a["Protocol"]),
                      str(a["RemoteIPAddress"]), a.integer("Weight") or 0)
                     for a in await acls_of(running.emulator)
                     if str(a["Name"]).endswith("/replies"))
    assert {(n, d, act, proto, remote) for n, d, act, proto, remote, _ in replies} == {
        ("cloudstack-sg/ingress/replies", 2, 1, "ANY", "203.0.113.0/24"),
        ("cloudstack-sg/ingress/replies", 2, 1, "ANY", "2001:db8:2::/64"),
        ("cloudstack-sg/egress/replies", 1, 1, "ANY", "198.51.100.0/24"),
        ("cloudstack-sg/egress/replies", 1, 1, "ANY", "2001:db8:5::/64"),
        *{("cloudstack-sg/no-tcp-udp/replies", d, 2, proto, "ANY")
          for d in (1, 2) for proto in ("TCP", "UDP")}}
    assert all(1000 < weight <= 10000 for *_, weight in replies), replies
    resent = await send(running, {**body, "seqNum": 2})  # read back as written:
    assert "1 ACLs added, 1 removed" in resent["details"], resent  # the seqNum's only


# --- secondary addresses ------------------------------------------------------------------


async def test_vm_sends_from_its_secondary_ips_only_while_it_has_them(running: Running) -> None:
    await started(running)
    await send(running, rules_body(secIps=["10.1.1.90"]))
    assert reaches(running, https_to("10.0.0.5", local="10.1.1.90"))
    added = ms422_json("51_NetworkRulesVmSecondaryIpCommand.json")  # -A 10.1.1.81
    assert not reaches(running, https_to("10.0.0.5", local="10.1.1.81"))
    key, answer = await running.answer(names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND, added)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert reaches(running, https_to("10.0.0.5", local="10.1.1.81"))
    assert reaches(running, Packet.outbound("udp", "10.1.1.81", "8.8.8.8", remote_port=53))
    removed = {**added, "action": "-D"}
    _, answer = await running.answer(names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND, removed)
    assert answer["result"] is True, answer
    assert not reaches(running, https_to("10.0.0.5", local="10.1.1.81"))
    assert reaches(running, https_to("10.0.0.5"))


async def test_secondary_ip_command_fails_naming_the_field_when_address_is_malformed(
    running: Running,
) -> None:
    await started(running)
    await send(running, rules_body())
    before = await acl_state(running.emulator)
    body = {**ms422_json("51_NetworkRulesVmSecondaryIpCommand.json"), "vmSecIp": "10.1.1"}
    key, answer = await running.answer(names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND, body)
    assert (key, answer["result"]) == (names.ANSWER, False)
    assert "vmSecIp" in answer["details"], answer
    assert await acl_state(running.emulator) == before


# --- system VMs ---------------------------------------------------------------------------


async def test_system_vm_gets_all_traffic_when_system_vm_command_is_sent(
    running: Running,
) -> None:
    cim = running.emulator
    session = hv(cim)  # a system VM whose port was closed by the agent's ACLs before
    vm = await build.define_vm(session, VmSpec(name="v-3-VM", notes=(), generation=1, cpus=1,
                                               memory_mb=512))
    closed = Guard((AclSpec("default-deny", AclDirection.INCOMING, AclAction.DENY),
                    AclSpec("default-deny", AclDirection.OUTGOING, AclAction.DENY)),
                   PortSecurity(allow_mac_spoofing=False, dhcp_guard=True,
                                router_guard=True))
    await nics.add_nic(session, vm, mac=MAC, switch_name="External", vlan=None,
                       rate_mbps=None, name="eth0", guard=closed)
    await power.start(session, vm.guid)
    assert not reaches(running, ssh("192.168.1.10"), vm="v-3-VM")
    body = ms422_json("52_NetworkRulesSystemVmCommand.json")
    key, answer = await running.answer(names.NETWORK_RULES_SYSTEM_VM_COMMAND, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert reaches(running, ssh("192.168.1.10"), vm="v-3-VM")
    dhcp_server = Packet.outbound("udp", VM_IP, "10.1.1.99", remote_port=68, local_port=67)
    assert reaches(running, dhcp_server, vm="v-3-VM")  # a router answers DHCP
    assert await acls_of(cim, "v-3-VM") == []


# --- re-sends and changes -----------------------------------------------------------------


async def test_resend_costs_no_round_trip_and_a_new_seqnum_for_the_same_rules_two(
    running: Running,
) -> None:
    cim = running.emulator
    await started(running)
    await send(running, rules_body(seq=3))
    before = cim.round_trips()
    answer = await send(running, rules_body(seq=3))
    assert answer["result"] is True
    assert (cim.round_trips() - before).counts == {}
    answer = await send(running, rules_body(seq=4))  # a new seqNum, the same rules:
    assert answer["result"] is True, answer  # only the ACL recording it is replaced
    assert "1 ACLs added, 1 removed" in answer["details"], answer
    spent = cim.round_trips() - before
    assert (spent.calls, spent.waits, spent["query"]) == (2, 2, 0), spent
    assert reaches(running, ssh("192.168.1.10"))


async def test_changed_rules_cost_at_most_two_calls_and_two_waits(running: Running) -> None:
    cim = running.emulator
    await started(running)
    await send(running, rules_body(seq=1))
    before = cim.round_trips()
    changed = rules_body(seq=2, ingress=[rule("tcp", 22, 22, "192.168.2.0/24")])
    assert (await send(running, changed))["result"] is True
    spent = cim.round_trips() - before
    assert spent.calls <= 2 and spent.waits <= 2, spent
    assert spent["query"] == 0, spent  # the port is known from the StartCommand on
    assert reaches(running, ssh("192.168.2.10"))
    assert not reaches(running, ssh("192.168.1.10"))


async def test_older_seqnum_is_answered_with_success_and_ignored(running: Running) -> None:
    cim = running.emulator
    await started(running)
    await send(running, rules_body(seq=5))
    before = cim.round_trips()
    older = rules_body(seq=4, ingress=[rule("tcp", 22, 22, "192.168.2.0/24")])
    answer = await send(running, older)
    assert answer["result"] is True and "older" in answer["details"], answer
    assert (cim.round_trips() - before).calls == 0
    assert reaches(running, ssh("192.168.1.10"))
    assert not reaches(running, ssh("192.168.2.10"))


async def test_an_older_seqnum_sent_after_an_agent_restart_is_ignored(
    agent_config: Callable[..., AgentConfig],
) -> None:
    """The MS sends a VM's rule sets one after another but reads each one's seqNum and
    rules apart, from several workers, and nothing re-sends them to a Hyper-V host: an
    older set queued behind a newer one and posted once the agent is back would stay on
    the port. The port itself says which set it holds, so a restart forgets nothing."""
    config = agent_config()
    async with serving(config) as running:
        await started(running)
        newer = rules_body(seq=5, ingress=[rule("tcp", 22, 22, "192.168.2.0/24")])
        assert (await send(running, newer))["result"] is True
    async with serving(config) as running:  # restarted; the VM and its port are kept
        cim = running.emulator
        before = cim.round_trips()
        answer = await send(running, rules_body(seq=4))
        assert answer["result"] is True and "older than 5" in answer["details"], answer
        spent = cim.round_trips() - before
        assert (spent.calls - spent["query"], spent.waits) == (0, 0), spent  # read only
        assert reaches(running, ssh("192.168.2.10"))
        assert not reaches(running, ssh("192.168.1.10"))
        answer = await send(running, rules_body(seq=6))  # a newer one still applies
        assert answer["result"] is True and "older" not in answer["details"], answer
        assert reaches(running, ssh("192.168.1.10"))
        assert not reaches(running, ssh("192.168.2.10"))


async def test_a_vm_made_again_under_its_name_takes_its_first_seqnum(running: Running) -> None:
    """A VM destroyed and made again under the same name (a new VM id: the MS counts its
    seqNums from 1 again) is a new port, which holds no seqNum of the old one."""
    await started(running)
    assert (await send(running, rules_body(seq=7)))["result"] is True
    key, answer = await running.answer(STOP, {"vmName": VM_NAME, "forceStop": True})
    assert (key, answer["result"]) == (names.STOP_ANSWER, True), answer
    await started(running)
    first = rules_body(seq=1, vmId=9, ingress=[rule("tcp", 22, 22, "192.168.2.0/24")])
    answer = await send(running, first)
    assert answer["result"] is True and "older" not in answer["details"], answer
    assert reaches(running, ssh("192.168.2.10"))
    assert not reaches(running, ssh("192.168.1.10"))


async def test_stopped_and_started_vm_keeps_no_stale_acls(running: Running) -> None:
    await started(running)
    await send(running, rules_body(seq=1))
    assert reaches(running, ssh("192.168.1.10"))
    key, answer = await running.answer(STOP, {"vmName": VM_NAME, "forceStop": True})
    assert (key, answer["result"]) == (names.STOP_ANSWER, True), answer
    await started(running)
    assert not reaches(running, ssh("192.168.1.10"))  # the defaults only
    names_after = {str(a["Name"]) for a in await acls_of(running.emulator)}
    assert not any("ingress" in name for name in names_after), names_after
    await send(running, rules_body(seq=1))  # the MS programs the new port again
    assert reaches(running, ssh("192.168.1.10"))


async def test_administrators_acls_survive_a_rule_change(running: Running) -> None:
    cim = running.emulator
    await started(running)
    await send(running, rules_body(seq=1))
    admin = await acl(cim, Name="admin-block", Direction=1, Action=2,
                      RemoteIPAddress="192.168.1.66", Weight=60000)
    await ok(cim, await add_features(cim, await port_of(cim), [admin]))
    changed = rules_body(seq=2, ingress=[rule("tcp", 22, 22, "192.168.0.0/16")])
    assert (await send(running, changed))["result"] is True
    assert "admin-block" in {str(a["Name"]) for a in await acls_of(cim)}
    assert reaches(running, ssh("192.168.7.10"))
    assert not reaches(running, ssh("192.168.1.66"))  # the administrator's deny still wins


# --- cleanup ------------------------------------------------------------------------------


async def test_cleanup_answers_true_and_leaves_live_vms_alone(running: Running) -> None:
    await started(running)
    await send(running, rules_body())
    before = await acl_state(running.emulator)
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert await acl_state(running.emulator) == before
    assert reaches(running, ssh("192.168.1.10"))


async def test_cleanup_forgets_a_vm_that_left_the_host_so_its_next_stay_takes_its_rules(
    running: Running,
) -> None:
    await started(running)
    await send(running, rules_body(seq=5))
    key, answer = await running.answer(STOP, {"vmName": VM_NAME, "forceStop": True})
    assert (key, answer["result"]) == (names.STOP_ANSWER, True), answer
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    _, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert answer["result"] is True and "1 VMs no longer here" in answer["details"], answer
    _, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert "0 VMs no longer here" in answer["details"], answer  # nothing left of it
    await started(running)
    answer = await send(running, rules_body(seq=2, ingress=[rule("tcp", 22, 22,
                                                                 "192.168.2.0/24")]))
    assert answer["result"] is True and "older" not in answer["details"], answer
    assert reaches(running, ssh("192.168.2.10"))
    assert not reaches(running, ssh("192.168.1.10"))


async def test_cleanup_removes_the_agents_acls_left_without_their_port(
    running: Running,
) -> None:
    cim = running.emulator
    await started(running)
    await send(running, rules_body())
    port = await port_of(cim)
    admin = await acl(cim, Name="admin-block", Direction=1, Action=2,
                      RemoteIPAddress="192.168.1.66", Weight=60000)
    await ok(cim, await add_features(cim, port, [admin]))
    owned = len(await acls_of(cim)) - 1
    txn = cim.host.store.transaction()  # the port gone, its features left behind:
    txn.delete(port)  # a state no method of the seam reaches
    txn.commit()
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    _, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert answer["result"] is True and f"{owned} ACLs" in answer["details"], answer
    left = await cim.query(wql.select("Msvm_EthernetSwitchPortExtendedAclSettingData",
                                      wql.starts_with("InstanceID", port.key("InstanceID"))))
    assert [str(a["Name"]) for a in left] == ["admin-block"]


async def test_cleanup_goes_on_past_a_vm_whose_acls_cannot_be_removed_now(
    running: Running,
) -> None:
    """Hyper-V refuses to remove one VM's leftover ACLs (its job ends in an error): the
    other VMs' leftovers are removed all the same, the answer names the VM left and the
    host's error, and the next cleanup removes what was left."""
    cim = running.emulator
    first = await orphaned_acl(cim, "i-2-5-VM", "02:00:4c:5f:00:05")  # removed first
    second = await orphaned_acl(cim, VM_NAME, MAC)
    cim.faults.fail_next_job("RemoveFeatureSettings", 32768, "the feature is in use")
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, False), answer
    assert answer["details"].startswith("1 ACLs of ports that no longer exist removed"), answer
    assert "1 ACLs of VM i-2-5-VM left for the next cleanup: " in answer["details"], answer
    assert "the feature is in use" in answer["details"], answer
    assert VM_NAME not in answer["details"], answer
    assert await left_of(cim, second) == []
    assert len(await left_of(cim, first)) == 1
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert answer["details"].startswith("1 ACLs of ports that no longer exist removed"), answer
    assert await left_of(cim, first) == []


async def test_cleanup_cut_short_by_the_host_says_how_far_it_got(
    running: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host stops answering at the second VM's leftovers: the answer is false and says
    the leftovers of one VM were removed and which VM the host went at, so that the MS's
    log does not read a partial cleanup as none; the next cleanup removes the rest."""
    cim = running.emulator
    first = await orphaned_acl(cim, "i-2-5-VM", "02:00:4c:5f:00:05")  # removed first
    second = await orphaned_acl(cim, "i-2-6-VM", "02:00:4c:5f:00:06")
    third = await orphaned_acl(cim, VM_NAME, MAC)
    answering = cim.invoke
    removals: list[ObjectPath] = []

    async def out_of_reach_after_one(path: ObjectPath, method: str, params: Any = None
                                     ) -> Any:
        if method == "RemoveFeatureSettings":
            removals.append(path)
            if len(removals) > 1:
                raise CimUnreachable("hv01:5986: cannot reach the WinRM service (refused)")
        return await answering(path, method, params)

    monkeypatch.setattr(cim, "invoke", out_of_reach_after_one)
    body = ms422_json("53_CleanupNetworkRulesCmd.json")
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, False), answer
    assert answer["details"].startswith(
        "the host stopped answering at VM i-2-6-VM, after the leftover ACLs of 1 VMs had "
        "been removed; the rest are left for the next cleanup: hv01:5986: cannot reach "
        "the WinRM service (refused); 1 ACLs of ports that no longer exist removed"), answer
    assert len(removals) == 2  # none tried after the host went
    assert (await left_of(cim, first), len(await left_of(cim, second)),
            len(await left_of(cim, third))) == ([], 1, 1)
    monkeypatch.setattr(cim, "invoke", answering)
    key, answer = await running.answer(names.CLEANUP_NETWORK_RULES_CMD, body)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert answer["details"].startswith("2 ACLs of ports that no longer exist removed"), answer
    assert (await left_of(cim, second), await left_of(cim, third)) == ([], [])


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"vmName": "i-9-99-VM"}, {"guestMac": "02:00:4c:5f:00:99"}])
async def test_unknown_vm_or_mac_fails_with_cannot_bridge_firewall(
    running: Running, fields: dict[str, Any],
) -> None:
    await started(running)
    before = await acl_state(running.emulator)
    answer = await send(running, rules_body(**fields))
    assert (answer["result"], answer["reason"]) == (False, "CANNOT_BRIDGE_FIREWALL"), answer
    assert await acl_state(running.emulator) == before


def _bad_cidr(body: dict[str, Any]) -> str:
    body["ingressRuleSet"][1]["allowedCidrs"] = ["192.168.1.300/24"]
    return "ingressRuleSet[1].allowedCidrs[0]"


def _bad_ports(body: dict[str, Any]) -> str:
    body["egressRuleSet"][0].update(startPort=443, endPort=80)
    return "egressRuleSet[0].endPort"


def _bad_protocol(body: dict[str, Any]) -> str:
    body["ingressRuleSet"][0]["proto"] = "sctp-ish"
    return "ingressRuleSet[0].proto"


def _protocol_of_5000_digits(body: dict[str, Any]) -> str:
    body["ingressRuleSet"][0]["proto"] = "6" * 5000
    return "ingressRuleSet[0].proto: '6666666666666666666666666666666666666666' is not"


def _protocol_in_other_digits(body: dict[str, Any]) -> str:
    body["ingressRuleSet"][0]["proto"] = "\u0666"  # ARABIC-INDIC DIGIT SIX, not TCP
    return "ingressRuleSet[0].proto"


def _cidr_prefix_of_5000_digits(body: dict[str, Any]) -> str:
    body["ingressRuleSet"][1]["allowedCidrs"] = ["192.168.1.0/" + "2" * 5000]
    return "ingressRuleSet[1].allowedCidrs[0]"


@pytest.mark.parametrize("spoil", [_bad_cidr, _bad_ports, _bad_protocol,
                                   _protocol_of_5000_digits, _protocol_in_other_digits,
                                   _cidr_prefix_of_5000_digits])
async def test_malformed_rule_fails_naming_its_field_and_leaves_the_port(
    running: Running, spoil: Any,
) -> None:
    await started(running)
    await send(running, rules_body(seq=1))
    before = await acl_state(running.emulator)
    body = copy.deepcopy(rules_body(seq=2, ingress=[rule("tcp", 80, 80, "0.0.0.0/0"),
                                                    rule("tcp", 22, 22, "192.168.1.0/24")]))
    field = spoil(body)
    answer = await send(running, body)
    assert (answer["result"], answer["reason"]) == (False, "PROGRAMMING_FAILED"), answer
    assert field in answer["details"], answer
    assert await acl_state(running.emulator) == before
    assert reaches(running, ssh("192.168.1.10"))
    assert not reaches(running, Packet.inbound("tcp", "203.0.113.5", VM_IP, local_port=80))


@pytest.mark.parametrize(("fields", "named"), [
    ({"guestIp": VM_IP6, "guestIp6": None}, "guestIp: '2001:db8:1::80' is an IPv6 address"),
    ({"guestIp6": VM_IP}, "guestIp6: '10.1.1.80' is an IPv4 address"),
])
async def test_nic_address_of_the_other_family_fails_naming_its_field_and_leaves_the_port(
    running: Running, fields: dict[str, Any], named: str,
) -> None:
    # An address filed under the wrong family would leave the VM unable to send from the
    # address it has (every ACL of the other family), with a success answer.
    await started(running, start_body(running, ip6=VM_IP6))
    await send(running, rules_body(seq=1, guestIp6=VM_IP6))
    before = await acl_state(running.emulator)
    answer = await send(running, rules_body(seq=2, **fields))
    assert (answer["result"], answer["reason"]) == (False, "PROGRAMMING_FAILED"), answer
    assert named in answer["details"], answer
    assert await acl_state(running.emulator) == before
    assert reaches(running, https_to("10.0.0.5"))


async def test_rules_of_a_vm_not_started_on_sgs_apply_when_sent(running: Running) -> None:
    await started(running, start_body(running, security_groups=False))
    await send(running, rules_body())
    assert reaches(running, ssh("192.168.1.10"))
    assert not reaches(running, ssh("192.168.2.10"))


async def test_thousands_of_cidrs_go_through_winrms_default_envelope_in_batches(
    agent_config: Callable[..., AgentConfig],
) -> None:
    # A group rule whose group has ~2000 running members arrives as 2000 /32 CIDRs: more
    # ACLs than one WinRM request of the default MaxEnvelopeSizekb (500) holds.
    members = [str(ipaddress.ip_address("10.8.0.0") + i) + "/32" for i in range(2000)]
    async with serving(agent_config(), backend="wsman-http-ntlm") as running:
        await started(running)
        answer = await send(running, rules_body(seq=2, ingress=[rule("tcp", 22, 22, *members)]))
        assert (answer["result"], answer["reason"]) == (True, "NONE"), answer
        assert reaches(running, ssh("10.8.7.207"))  # the last member
        assert not reaches(running, ssh("10.8.7.208"))
        assert len(await acls_of(running.emulator)) > 2000
        answer = await send(running, rules_body(seq=3))  # the group emptied: all removed
        assert answer["result"] is True, answer
        assert not reaches(running, ssh("10.8.0.1"))
        assert reaches(running, ssh("192.168.1.10"))
        assert len(await acls_of(running.emulator)) < 40


# --- the benchmark's budget -----------------------------------------------------------------


async def test_fifty_rules_by_four_cidrs_cost_two_calls_and_resends_none(tmp_path: Path) -> None:
    figures = await bench_secgroups.measure(tmp_path, call_s=0.0, job_s=0.0, resends=3)
    for spent in (figures.applied, figures.changed):
        assert (spent.calls, spent.waits) == (2, 2), spent
        assert (spent["invoke:RemoveFeatureSettings"], spent["invoke:AddFeatureSettings"]) == (
            1, 1), spent
    assert figures.resent.counts == {}
    assert len(figures.resend_ms) == 3
