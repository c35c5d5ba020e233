"""Security-group rules put on a running emulated VM's port, judged by reachability.

The translated ACLs go onto the port with raw CIM calls (tests/handlers/aclkit.py); the
emulator's switch (emulator/traffic.py) then says what passes.
"""

from __future__ import annotations

from dataclasses import replace

from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.portacl import Packet
from hyperv_agent.handlers import sgrules
from hyperv_agent.hyperv import portacls
from tests.emulator.kit import ok
from tests.emulator.portkit import Nic, acl, add_features, vm_with_nic
from tests.handlers.aclkit import program, read_acls, rule, secure

VM = "10.1.1.80"
VM6 = "2001:db8:1::80"


def reaches(cim: EmulatorCim, nic: Nic, packet: Packet) -> bool:
    """A conversation opened by ``packet`` works: it and its return traffic pass."""
    return traffic.connects(cim.host, nic.vm_name, nic.mac, packet)


def ssh(remote: str, local: str = VM) -> Packet:
    return Packet.inbound("tcp", remote, local, local_port=22)


def https_to(remote: str, local: str = VM) -> Packet:
    return Packet.outbound("tcp", local, remote, remote_port=443)


async def test_ssh_reaches_the_vm_only_from_the_allowed_cidr(emulator: EmulatorCim) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("tcp", 22, 22, "192.168.1.0/24")], [])
    assert reaches(emulator, nic, ssh("192.168.1.10"))
    assert not reaches(emulator, nic, ssh("192.168.2.10"))
    assert not reaches(emulator, nic, Packet.inbound("tcp", "192.168.1.10", VM, local_port=80))
    assert not reaches(emulator, nic, Packet.inbound("udp", "192.168.1.10", VM, local_port=22))


async def test_icmp_rule_lets_its_cidr_ping_the_vm_and_get_replies(emulator: EmulatorCim) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("icmp", 8, 0, "10.0.0.0/8")],
                  [rule("tcp", 443, 443, "10.0.0.0/8")])  # egress restricted too
    assert reaches(emulator, nic, Packet.inbound("icmp", "10.2.3.4", VM))
    assert not reaches(emulator, nic, Packet.inbound("icmp", "192.0.2.1", VM))
    assert not reaches(emulator, nic, ssh("10.2.3.4"))


async def test_egress_rule_limits_the_vm_to_its_cidr_but_dns_and_dhcp_still_work(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [], [rule("tcp", 443, 443, "10.0.0.0/8")])
    assert reaches(emulator, nic, https_to("10.0.0.5"))
    assert not reaches(emulator, nic, https_to("8.8.8.8"))
    assert not reaches(emulator, nic, Packet.outbound("tcp", VM, "10.0.0.5", remote_port=80))
    assert not reaches(emulator, nic, Packet.outbound("udp", VM, "10.0.0.5", remote_port=443))
    for protocol in ("udp", "tcp"):
        assert reaches(emulator, nic, Packet.outbound(protocol, VM, "8.8.8.8", remote_port=53))
    discover = Packet.outbound("udp", "0.0.0.0", "255.255.255.255", remote_port=67,
                               local_port=68)
    offer = Packet.inbound("udp", "10.1.1.1", VM, local_port=68, remote_port=67)
    assert reaches(emulator, nic, discover) and reaches(emulator, nic, offer)
    stray = Packet.inbound("tcp", "10.0.0.5", VM, local_port=50000, remote_port=443)
    assert not traffic.admits(emulator.host, nic.vm_name, nic.mac, stray)  # no session


async def test_vm_may_reach_everything_when_no_egress_rule_exists_but_not_be_reached(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("tcp", 22, 22, "192.168.1.0/24")], [])
    assert reaches(emulator, nic, https_to("8.8.8.8"))
    assert reaches(emulator, nic, Packet.outbound("udp", VM, "192.0.2.9", remote_port=5000))
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac,
                          Packet.outbound("icmp", VM, "192.0.2.9"))
    assert not reaches(emulator, nic, Packet.inbound("tcp", "8.8.8.8", VM, local_port=443))
    assert not traffic.admits(emulator.host, nic.vm_name, nic.mac,
                              Packet.inbound("udp", "192.0.2.9", VM, local_port=5000))


async def test_vm_without_egress_rules_gets_its_ping_replies_and_path_mtu_errors(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("tcp", 22, 22, "192.168.1.0/24")], [])
    assert reaches(emulator, nic, Packet.outbound("icmp", VM, "8.8.8.8"))
    too_big = replace(Packet.inbound("icmp", "198.51.100.1", VM), icmp_type=3)
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac, too_big)
    spoofed_ping = Packet.outbound("icmp", "10.1.1.99", "8.8.8.8")
    assert not traffic.admits(emulator.host, nic.vm_name, nic.mac, spoofed_ping)


async def test_ipv6_rules_and_addresses_are_enforced_like_ipv4(emulator: EmulatorCim) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("tcp", 22, 22, "2001:db8:ff::/48")],
                  [rule("tcp", 443, 443, "10.0.0.0/8")], ip6=VM6)
    assert reaches(emulator, nic, ssh("2001:db8:ff::7", VM6))
    assert not reaches(emulator, nic, ssh("2001:db8:ee::7", VM6))
    assert reaches(emulator, nic, https_to("2001:db8:99::1", VM6))  # no IPv6 egress rule
    assert not reaches(emulator, nic, https_to("8.8.8.8"))  # IPv4 egress is restricted
    link_local = sgrules.nic_addresses(nic.mac, None, None, None).link_local
    solicit = replace(Packet.outbound("icmpv6", "::", "ff02::1:ff00:80"), icmp_type=135)
    advert_in = replace(Packet.inbound("icmpv6", "fe80::1", link_local), icmp_type=136)
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac, solicit)
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac, advert_in)
    assert not reaches(emulator, nic, https_to("2001:db8:99::1", "2001:db8:1::99"))


async def test_secondary_addresses_may_send_and_no_other_source_may(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    await program(emulator, nic, [rule("tcp", 80, 80, "0.0.0.0/0")],
                  [rule("tcp", 443, 443, "10.0.0.0/8")], sec_ips=["10.1.1.81"])
    await secure(emulator, nic, sgrules.USER_VM_SECURITY)
    for own in (VM, "10.1.1.81"):
        assert reaches(emulator, nic, https_to("10.0.0.5", own))
        assert reaches(emulator, nic, Packet.inbound("tcp", "192.0.2.1", own, local_port=80))
    assert not reaches(emulator, nic, https_to("10.0.0.5", "10.1.1.99"))
    assert not reaches(emulator, nic, Packet.outbound("udp", "10.1.1.99", "8.8.8.8",
                                                      remote_port=53))
    forged = replace(https_to("10.0.0.5"), source_mac="02:00:00:00:00:99")
    assert not traffic.admits(emulator.host, nic.vm_name, nic.mac, forged)
    rogue_dhcp = Packet.outbound("udp", VM, "255.255.255.255", remote_port=68, local_port=67)
    assert not traffic.admits(emulator.host, nic.vm_name, nic.mac, rogue_dhcp)


async def test_group_rule_arriving_as_host_addresses_admits_only_those_hosts(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    members = ["10.1.1.81/32", "10.1.1.82/32"]
    await program(emulator, nic, [rule("tcp", 3306, 3306, *members)], [])
    mysql = Packet.inbound("tcp", "10.1.1.82", VM, local_port=3306)
    assert reaches(emulator, nic, mysql)
    assert not reaches(emulator, nic, replace(mysql, remote_ip="10.1.1.83"))


async def test_administrators_acls_survive_a_rule_change_and_keep_deciding(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    await ok(emulator, await add_features(emulator, nic.port, [await acl(
        emulator, Name="block the scanner", Direction=1, Action=2,
        RemoteIPAddress="192.168.1.66", Weight=65000)]))
    await program(emulator, nic, [rule("tcp", 22, 22, "192.168.1.0/24")], [])
    change = await program(emulator, nic, [rule("tcp", 22, 80, "192.168.1.0/24")], [])
    assert change.remove and change.add
    names = [a.name for a in await read_acls(emulator, nic)]
    assert names.count("block the scanner") == 1
    assert reaches(emulator, nic, Packet.inbound("tcp", "192.168.1.10", VM, local_port=80))
    assert not reaches(emulator, nic, ssh("192.168.1.66"))


async def test_big_rule_set_takes_one_add_and_a_change_one_remove_and_one_add(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    rules = [rule("tcp", 1000 + i, 1000 + i, *(f"10.{i}.{c}.0/24" for c in range(4)))
             for i in range(50)]
    spent = emulator.round_trips()
    first = await program(emulator, nic, rules[:25], rules[25:])
    calls = emulator.round_trips() - spent
    assert (calls["invoke:AddFeatureSettings"], calls["invoke:RemoveFeatureSettings"]) == (1, 0)
    assert len(first.add) >= 200
    assert reaches(emulator, nic, Packet.inbound("tcp", "10.7.3.9", VM, local_port=1007))
    assert reaches(emulator, nic, Packet.outbound("tcp", VM, "10.40.2.1", remote_port=1040))
    same = portacls.plan_change(await read_acls(emulator, nic), sgrules.translate(
        rules[:25], rules[25:], sgrules.nic_addresses(nic.mac, VM, None, None)).acls)
    assert same.unchanged
    spent = emulator.round_trips()
    changed = await program(emulator, nic, rules[:24],
                            [*rules[25:], rule("udp", 53, 53, "1.1.1.1")])
    calls = emulator.round_trips() - spent
    assert (calls["invoke:AddFeatureSettings"], calls["invoke:RemoveFeatureSettings"]) == (1, 1)
    assert (len(changed.remove), len(changed.add)) == (4, 1)  # one rule of 4 CIDRs out, one in
    assert not reaches(emulator, nic, Packet.inbound("tcp", "10.24.0.1", VM, local_port=1024))
