"""How the emulated switch applies extended ACLs to one packet (portacl.evaluate)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hyperv_agent.cim.api import CimValue
from hyperv_agent.emulator.portacl import Acl, AclTextError, Packet, evaluate, parse_acl

VM = "10.1.1.80"
VM6 = "fd00:1::80"


def rule(**values: CimValue) -> Acl:
    return parse_acl({"Direction": 1, "Action": 1, **values})


def ssh_from(remote: str, local: str = VM) -> Packet:
    return Packet.inbound("tcp", remote, local, local_port=22)


def test_packet_passes_when_the_port_has_no_acl() -> None:
    verdict = evaluate([], ssh_from("192.0.2.1"))
    assert verdict.passed and verdict.acl is None


def test_packet_passes_when_no_acl_matches_it() -> None:
    acls = [rule(Action=2, Protocol="UDP", Weight=1)]
    assert evaluate(acls, ssh_from("192.0.2.1"))
    assert not evaluate(acls, Packet.inbound("udp", "192.0.2.1", VM, local_port=53))


def test_highest_weight_decides_when_several_acls_match() -> None:
    deny_all = rule(Action=2, Weight=1)
    allow_ssh = rule(Protocol="TCP", LocalPort="22", Weight=10)
    for acls in ([deny_all, allow_ssh], [allow_ssh, deny_all]):
        verdict = evaluate(acls, ssh_from("192.0.2.1"))
        assert verdict.passed and verdict.acl == allow_ssh
        assert not evaluate(acls, Packet.inbound("tcp", "192.0.2.1", VM, local_port=80))
    higher_deny = rule(Action=2, RemoteIPAddress="192.0.2.0/24", Weight=20)
    assert not evaluate([deny_all, allow_ssh, higher_deny], ssh_from("192.0.2.1"))
    assert evaluate([deny_all, allow_ssh, higher_deny], ssh_from("198.51.100.1"))


def test_acl_applies_only_to_its_direction() -> None:
    deny_out = rule(Direction=2, Action=2, Weight=1)
    assert evaluate([deny_out], ssh_from("192.0.2.1"))
    assert not evaluate([deny_out], Packet.outbound("tcp", VM, "192.0.2.1", remote_port=443))


@pytest.mark.parametrize(("remote", "address", "matches"), [
    ("ANY", "192.0.2.1", True), ("ANY", "2001:db8::1", True), ("", "2001:db8::1", True),
    ("0.0.0.0/0", "192.0.2.1", True), ("0.0.0.0/0", "2001:db8::1", False),
    ("::/0", "2001:db8::1", True), ("::/0", "192.0.2.1", False),
    ("192.0.2.0/25", "192.0.2.127", True), ("192.0.2.0/25", "192.0.2.128", False),
    ("192.0.2.7", "192.0.2.7", True), ("192.0.2.7", "192.0.2.8", False),
    ("192.0.2.77/24", "192.0.2.1", True),  # host bits beyond the prefix: its network
    ("2001:db8::/32", "2001:db8:ffff::1", True), ("2001:db8::/32", "2001:db9::1", False),
])
def test_remote_address_matches_its_family_and_prefix(remote: str, address: str,
                                                      matches: bool) -> None:
    deny = rule(Action=2, RemoteIPAddress=remote, Weight=1)
    local = VM if ":" not in address else VM6
    assert (not evaluate([deny], ssh_from(address, local))) is matches


def test_local_address_is_the_vm_end_in_both_directions() -> None:
    only_vm = [rule(Action=2, Weight=1), rule(LocalIPAddress=VM, Weight=2),
               rule(Direction=2, Action=2, Weight=1), rule(Direction=2, LocalIPAddress=VM,
                                                           Weight=2)]
    assert evaluate(only_vm, ssh_from("192.0.2.1", VM))
    assert not evaluate(only_vm, ssh_from("192.0.2.1", "10.1.1.81"))
    assert evaluate(only_vm, Packet.outbound("udp", VM, "192.0.2.1", remote_port=53))
    assert not evaluate(only_vm, Packet.outbound("udp", "10.1.1.81", "192.0.2.1", remote_port=53))


@pytest.mark.parametrize(("ports", "port", "matches"), [
    ("22", 22, True), ("22", 23, False), ("1000-2000", 1000, True), ("1000-2000", 2000, True),
    ("1000-2000", 2001, False), ("ANY", 7, True), ("", 7, True), ("0-65535", 65535, True),
])
def test_port_range_bounds_are_inclusive(ports: str, port: int, matches: bool) -> None:
    acls = [rule(Action=2, Weight=1), rule(Protocol="UDP", LocalPort=ports, Weight=2)]
    assert bool(evaluate(acls, Packet.inbound("udp", "192.0.2.1", VM, local_port=port))) is matches


def test_remote_port_is_the_far_end_port() -> None:
    acls = [rule(Direction=2, Action=2, Weight=1),
            rule(Direction=2, Protocol="TCP", RemotePort="443", Weight=2)]
    assert evaluate(acls, Packet.outbound("tcp", VM, "192.0.2.1", remote_port=443))
    assert not evaluate(acls, Packet.outbound("tcp", VM, "192.0.2.1", remote_port=8443,
                                              local_port=443))


def test_protocol_matches_by_name_or_number_and_ports_need_tcp_or_udp() -> None:
    assert not evaluate([rule(Action=2, Protocol="6", Weight=1)], ssh_from("192.0.2.1"))
    assert not evaluate([rule(Action=2, Protocol="tcp", Weight=1)], ssh_from("192.0.2.1"))
    ping = Packet.inbound("icmp", "192.0.2.1", VM)
    assert not evaluate([rule(Action=2, Protocol="1", Weight=1)], ping)
    assert evaluate([rule(Action=2, Protocol="58", Weight=1)], ping)
    assert evaluate([rule(Action=2, LocalPort="0-65535", Weight=1)], ping)  # no ports on ICMP
    assert not evaluate([rule(Action=2, Protocol="47", Weight=1)],
                        Packet.inbound(47, "192.0.2.1", VM))


def test_return_traffic_passes_when_a_stateful_acl_opened_the_session() -> None:
    acls = [rule(Action=2, Weight=1), rule(Direction=2, Action=2, Weight=1),
            rule(Protocol="TCP", LocalPort="22", Weight=10, Stateful=True)]
    opening = ssh_from("192.0.2.1")
    verdict = evaluate(acls, opening.reply_to())
    assert verdict.passed and "session" in verdict.reason
    assert not evaluate(acls, Packet.outbound("tcp", VM, "192.0.2.1", remote_port=22))
    stateless = [*acls[:2], rule(Protocol="TCP", LocalPort="22", Weight=10)]
    assert evaluate(stateless, opening) and not evaluate(stateless, opening.reply_to())


def test_session_state_wins_over_a_deny_of_the_reply_direction() -> None:
    acls = [rule(Direction=2, Action=2, Protocol="TCP", Weight=60000),
            rule(Protocol="TCP", LocalPort="22", Weight=10, Stateful=True)]
    assert evaluate(acls, ssh_from("192.0.2.1").reply_to())


def test_session_ends_after_its_idle_timeout() -> None:
    acls = [rule(Direction=2, Action=2, Weight=1),
            rule(Protocol="TCP", LocalPort="22", Weight=10, Stateful=True,
                 IdleSessionTimeout=60)]
    reply = ssh_from("192.0.2.1").reply_to()
    assert evaluate(acls, reply)
    assert evaluate(acls, replace(reply, idle_s=60.0))
    assert not evaluate(acls, replace(reply, idle_s=61.0))


def test_isolation_id_zero_matches_every_packet() -> None:
    tagged = rule(Action=2, Weight=1, IsolationID=5001)
    packet = ssh_from("192.0.2.1")
    assert evaluate([tagged], packet)
    assert not evaluate([tagged], replace(packet, isolation_id=5001))
    assert not evaluate([rule(Action=2, Weight=1)],
                        replace(packet, isolation_id=5001))


def test_parse_names_the_field_when_text_is_refused() -> None:
    with pytest.raises(AclTextError) as caught:
        parse_acl({"Direction": 1, "Action": 1, "LocalPort": "22-"})
    assert caught.value.field == "LocalPort"
