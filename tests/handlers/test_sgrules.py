"""Reading CloudStack rule sets and NIC addresses (handlers/sgrules.py), without a port."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hyperv_agent.cloudstack.objects import IpPortAndProto
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.handlers.sgrules import (
    RuleError,
    applied_seqnum,
    nic_addresses,
    seqnum_acl,
    translate,
)
from hyperv_agent.hyperv.portacls import AclSpec, Band, PortAcl, as_spec
from hyperv_agent.hyperv.schema import AclAction, AclDirection
from tests.handlers.aclkit import rule

IN, OUT = AclDirection.INCOMING, AclDirection.OUTGOING
MAC = "02:00:4c:5f:00:08"
NIC = nic_addresses(MAC, "10.1.1.80", None, None)


def _acls(ingress: Sequence[IpPortAndProto] = (), egress: Sequence[IpPortAndProto] = ()
          ) -> tuple[AclSpec, ...]:
    return translate(ingress, egress, NIC).acls


@pytest.mark.parametrize(("ingress", "egress", "field"), [
    ([rule("tcp", 22, 22, "10.0.0.0/8", "10.0.0.0/33")], [], "ingressRuleSet[0].allowedCidrs[1]"),
    ([], [rule("tcp", 22, 22, "10.0.0.0/8"), rule("udp", 1, 2, "any")],
     "egressRuleSet[1].allowedCidrs[0]"),
    ([rule("gre", 0, 0, "10.0.0.0/8")], [], "ingressRuleSet[0].proto"),
    ([rule("256", 0, 0, "10.0.0.0/8")], [], "ingressRuleSet[0].proto"),
    ([], [rule("", 0, 0, "10.0.0.0/8")], "egressRuleSet[0].proto"),
    ([rule("tcp", 80, 22, "10.0.0.0/8")], [], "ingressRuleSet[0].endPort"),
    ([rule("udp", -5, 22, "10.0.0.0/8")], [], "ingressRuleSet[0].startPort"),
    ([rule("tcp", 1, 70000, "10.0.0.0/8")], [], "ingressRuleSet[0].startPort"),
    ([rule("icmp", 300, 0, "10.0.0.0/8")], [], "ingressRuleSet[0].startPort"),
    ([rule("tcp", 1, 2, "2001:db8:1234:5678:9abc:def0:1234:5000/116")], [],
     "ingressRuleSet[0].allowedCidrs[0]"),
    ([rule("tcp", 1, 2, "fe80::%eth0/64")], [], "ingressRuleSet[0].allowedCidrs[0]"),
])
def test_rule_is_refused_with_its_field_named_when_malformed(
    ingress: list[IpPortAndProto], egress: list[IpPortAndProto], field: str,
) -> None:
    with pytest.raises(RuleError) as caught:
        translate(ingress, egress, NIC)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ": ")
    assert isinstance(caught.value, InvalidRequest)  # answered as a failed command


@pytest.mark.parametrize(("mac", "ip", "ip6", "sec_ips", "field"), [
    ("02:00:4c:5f:00", "10.1.1.80", None, None, "guestMac"),
    (None, "10.1.1.80", None, None, "guestMac"),
    (MAC, "10.1.1", None, None, "guestIp"),
    (MAC, "10.1.1.80", "fd00::zz", None, "guestIp6"),
    (MAC, "10.1.1.80", None, ["10.1.1.81", "10.1.1.300"], "secIps[1]"),
    (MAC, "10.1.1.80", "fe80::1%eth0", None, "guestIp6"),
    (MAC, "2001:db8::80", None, None, "guestIp"),
    (MAC, "10.1.1.80", "10.1.1.81", None, "guestIp6"),
])
def test_nic_address_is_refused_with_its_field_named_when_malformed(
    mac: str | None, ip: str, ip6: str | None, sec_ips: list[str] | None, field: str,
) -> None:
    with pytest.raises(RuleError) as caught:
        nic_addresses(mac, ip, ip6, sec_ips)
    assert caught.value.field == field


def test_nic_addresses_split_families_and_derive_the_link_local_address() -> None:
    nic = nic_addresses("02-00-4C-5F-00-08", "10.1.1.80", "2001:DB8::80",
                        ["0", "10.1.1.81", "2001:db8::81", "10.1.1.81", ""])
    assert nic.ipv4 == ("10.1.1.80", "10.1.1.81")
    assert nic.ipv6 == ("2001:db8::80", "2001:db8::81")
    assert nic.link_local == "fe80::4cff:fe5f:8"  # EUI-64, universal/local bit flipped
    assert nic.own(6) == ("2001:db8::80", "2001:db8::81", "fe80::4cff:fe5f:8")


def test_every_acl_is_the_agents_and_is_stated_once() -> None:
    acls = _acls([rule("tcp", 22, 22, "10.0.0.0/8"), rule("tcp", 22, 22, "10.0.0.0/8")])
    assert len(acls) == len(set(acls))
    assert all(a.name.startswith("cloudstack-sg/") for a in acls)
    assert sum(1 for a in acls if a.local_port == "22") == 1


def test_ingress_port_is_local_and_egress_port_is_remote() -> None:
    acls = _acls([rule("tcp", 8000, 8080, "10.0.0.0/8")], [rule("udp", 123, 123, "10.0.0.0/8")])
    ingress = [a for a in acls if a.role == "ingress"]
    egress = [a for a in acls if a.role == "egress"]
    assert [(a.direction, a.local_port, a.remote_port) for a in ingress] == [
        (AclDirection.INCOMING, "8000-8080", "ANY")]
    assert [(a.direction, a.local_ip, a.remote_port) for a in egress] == [
        (AclDirection.OUTGOING, "10.1.1.80", "123")]


def test_all_ports_of_tcp_rule_need_no_port_range() -> None:
    acls = _acls([rule("tcp", 0, 0, "10.0.0.0/8"), rule("udp", 0, 65535, "10.0.0.0/8")])
    assert {(a.protocol, a.local_port) for a in acls if a.role == "ingress"} == {
        ("TCP", "ANY"), ("UDP", "0-65535")}


def test_icmp_type_that_cannot_be_expressed_is_noted() -> None:
    result = translate([rule("icmp", 8, 0, "10.0.0.0/8"), rule("icmp", -1, -1, "2001:db8::/32")],
                       [], NIC)
    assert any("ingressRuleSet[0]" in n and "type 8 code 0" in n for n in result.notes)
    assert any("ingressRuleSet[1]" in n and "ICMPv6" in n for n in result.notes)
    assert translate([rule("icmp", -1, -1, "10.0.0.0/8")], [], NIC).notes == ()


def test_numbered_protocols_become_their_names_or_numbers() -> None:
    acls = _acls([rule("1", 0, 0, "10.0.0.0/8"), rule("6", 0, 0, "10.0.0.0/8"),
                  rule("47", 0, 0, "10.0.0.0/8")])
    assert {a.protocol for a in acls if a.role == "ingress"
            and a.direction == AclDirection.INCOMING} == {"1", "TCP", "47"}


def test_no_egress_rule_allows_what_an_egress_all_rule_to_everywhere_allows_but_replies(
) -> None:
    def allowed(acls: tuple[AclSpec, ...]) -> set[tuple[object, ...]]:
        return {(a.direction, a.protocol, a.local_ip, a.remote_ip, a.local_port,
                 a.remote_port, a.stateful, a.reply) for a in acls if a.role != "dns"}

    ssh = [rule("tcp", 22, 22, "192.168.1.0/24")]
    everywhere = [rule("all", 0, 0, "0.0.0.0/0", "::/0")]
    open_egress, explicit = allowed(_acls(ssh)), allowed(_acls(ssh, everywhere))
    # The explicit rule also lets in the replies of every protocol but TCP and UDP (which
    # would let GRE, ESP, ... in from everywhere: not done for a VM with no egress rule).
    assert explicit - open_egress == {
        (IN, "ANY", "ANY", "0.0.0.0/0", "ANY", "ANY", False, True),
        (IN, "ANY", "ANY", "::/0", "ANY", "ANY", False, True),
        (IN, "TCP", "ANY", "ANY", "ANY", "ANY", False, True),
        (IN, "UDP", "ANY", "ANY", "ANY", "ANY", False, True)}
    assert open_egress - explicit == {(IN, "1", "ANY", "0.0.0.0/0", "ANY", "ANY", False, False)}


def test_all_rule_replies_go_below_every_other_allow_and_never_carry_tcp_or_udp() -> None:
    acls = _acls([rule("all", 0, 0, "203.0.113.0/24")], [rule("tcp", 443, 443, "10.0.0.0/8")])
    replies = [a for a in acls if a.reply]
    assert {(a.direction, a.action, a.protocol, a.remote_ip, a.local_ip) for a in replies} == {
        (OUT, AclAction.ALLOW, "ANY", "203.0.113.0/24", "10.1.1.80"),
        (OUT, AclAction.DENY, "TCP", "ANY", "ANY"), (OUT, AclAction.DENY, "UDP", "ANY", "ANY")}
    assert {a.band for a in replies} == {Band.REPLY, Band.REPLY_GUARD}
    assert min(Band.STATELESS.weights) > max(Band.REPLY_GUARD.weights)
    assert min(Band.REPLY_GUARD.weights) > max(Band.REPLY.weights) > max(Band.DENY.weights)
    # Its family's egress open, an ingress all rule needs no reply ACL.
    assert not [a for a in _acls([rule("all", 0, 0, "203.0.113.0/24")]) if a.reply]


def test_the_seqnum_acl_reads_back_for_its_vm_only_and_denies_what_default_deny_does() -> None:
    marker = seqnum_acl(8, 41)
    read = PortAcl("Microsoft:x\\1", marker.name, int(marker.direction),
                   int(marker.action), 2, "ANY", "ANY", "ANY", "ANY", "ANY")
    spec = as_spec(read)
    assert spec is not None and spec.band == Band.DENY
    rules = translate([rule("tcp", 22, 22, "192.168.1.0/24")], [], NIC).acls
    assert applied_seqnum([*rules, spec], 8) == 41
    assert applied_seqnum([*rules, spec], 9) is None  # not this VM's
    assert applied_seqnum(rules, 8) is None
    default_deny = AclSpec("default-deny", AclDirection.INCOMING, AclAction.DENY)
    assert default_deny in rules
    assert (spec.direction, spec.action, spec.protocol, spec.remote_ip, spec.local_port) == (
        default_deny.direction, default_deny.action, "ANY", "ANY", "ANY")
