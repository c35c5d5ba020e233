"""Planning the change of a port's agent-owned ACLs (hyperv/portacls.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

import pytest

from hyperv_agent.hyperv.portacls import (
    AclChange,
    AclSpec,
    Band,
    PortAcl,
    TooManyAcls,
    canonical_address,
    canonical_ports,
    canonical_protocol,
    network_texts,
    plan_change,
)
from hyperv_agent.hyperv.schema import AclAction, AclDirection

IN, OUT = AclDirection.INCOMING, AclDirection.OUTGOING
SSH = AclSpec("ingress", IN, AclAction.ALLOW, "TCP", remote_ip="192.168.1.0/24",
              local_port="22", stateful=True)
WEB = dataclasses.replace(SSH, local_port="80")
DENY_IN = AclSpec("default-deny", IN, AclAction.DENY)
DENY_OUT = AclSpec("default-deny", OUT, AclAction.DENY)


def applied(change: AclChange, current: Sequence[PortAcl] = ()) -> list[PortAcl]:
    """The port after ``change``: what Hyper-V would return when asked again."""
    kept = [acl for acl in current if acl.instance_id not in change.remove]
    added = [PortAcl(f"new-{i}-{p.weight}", p.spec.name, p.spec.direction, p.spec.action,
                     p.weight, p.spec.protocol, p.spec.local_ip, p.spec.remote_ip,
                     p.spec.local_port, p.spec.remote_port, p.spec.stateful,
                     p.spec.idle_session_timeout_s)
             for i, p in enumerate(change.add)]
    return kept + added


def test_fresh_port_gets_every_acl_with_band_weights_unique_per_direction() -> None:
    change = plan_change([], [SSH, WEB, DENY_IN, DENY_OUT])
    assert change.remove == () and len(change.add) == 4
    weights = {p.spec: p.weight for p in change.add}
    assert weights[SSH] in Band.STATEFUL.weights and weights[DENY_IN] in Band.DENY.weights
    assert weights[SSH] > weights[DENY_IN]
    assert len({(p.spec.direction, p.weight) for p in change.add}) == 4


def test_nothing_changes_when_the_port_already_carries_the_wanted_acls() -> None:
    wanted = [SSH, WEB, DENY_IN, DENY_OUT]
    port = applied(plan_change([], wanted))
    again = plan_change(port, list(reversed(wanted)))
    assert again.unchanged and again.kept == 4


def test_only_the_difference_is_removed_and_added_when_rules_change() -> None:
    port = applied(plan_change([], [SSH, WEB, DENY_IN]))
    rdp = dataclasses.replace(SSH, local_port="3389")
    change = plan_change(port, [SSH, rdp, DENY_IN])
    web_id = next(a.instance_id for a in port if a.local_port == "80")
    assert change.remove == (web_id,)
    assert [p.spec for p in change.add] == [rdp]
    assert change.add[0].weight not in {a.weight for a in port if a.direction == IN}
    assert plan_change(applied(change, port), [SSH, rdp, DENY_IN]).unchanged


def test_administrators_acls_stay_and_their_weights_are_not_reused() -> None:
    admin = PortAcl("admin-1", "block a scanner", IN, AclAction.DENY, Band.STATEFUL.weights[0],
                    remote_ip="10.9.9.9")
    admin_low = dataclasses.replace(admin, instance_id="admin-2", name="", weight=1)
    change = plan_change([admin, admin_low], [SSH, DENY_IN])
    assert change.remove == ()
    weights = {p.spec: p.weight for p in change.add}
    assert weights[SSH] == Band.STATEFUL.weights[1] and weights[DENY_IN] == 2
    assert plan_change(applied(change, [admin, admin_low]), []).remove == tuple(
        f"new-{i}-{p.weight}" for i, p in enumerate(change.add))


def test_owned_acl_is_replaced_when_its_weight_left_its_band_or_its_text_is_foreign() -> None:
    port = applied(plan_change([], [SSH, DENY_IN]))
    moved = [dataclasses.replace(a, weight=65000) if a.stateful else a for a in port]
    change = plan_change(moved, [SSH, DENY_IN])
    assert len(change.remove) == 1 and [p.spec for p in change.add] == [SSH]
    garbled = [dataclasses.replace(a, remote_ip="not an address") if a.stateful else a
               for a in port]
    assert [p.spec for p in plan_change(garbled, [SSH, DENY_IN]).add] == [SSH]
    tagged = [dataclasses.replace(a, isolation_id=7) if a.stateful else a for a in port]
    assert [p.spec for p in plan_change(tagged, [SSH, DENY_IN]).add] == [SSH]


def test_acl_read_back_in_another_spelling_is_the_same_acl() -> None:
    port = applied(plan_change([], [SSH]))
    respelled = [dataclasses.replace(a, protocol="6", remote_ip="192.168.1.7/24",
                                     local_port="22-22") for a in port]
    assert plan_change(respelled, [SSH]).unchanged


def test_duplicate_owned_acls_are_removed_and_duplicate_wishes_count_once() -> None:
    port = applied(plan_change([], [SSH]))
    doubled = [*port, dataclasses.replace(port[0], instance_id="copy", weight=port[0].weight - 1)]
    change = plan_change(doubled, [SSH, SSH])
    assert change.remove == ("copy",) and change.add == ()


def test_plan_is_refused_when_a_band_runs_out_of_weights() -> None:
    many = [dataclasses.replace(DENY_IN, remote_ip=f"10.{i // 256}.{i % 256}.0/24")
            for i in range(len(Band.DENY.weights) + 1)]
    with pytest.raises(TooManyAcls, match="deny"):
        plan_change([], many)


@pytest.mark.parametrize(("text", "canonical"), [
    ("any", "ANY"), ("", "ANY"), ("10.0.0.0/8", "10.0.0.0/8"), ("10.1.2.3/8", "10.0.0.0/8"),
    ("10.1.2.3/32", "10.1.2.3"), ("2001:0db8:0000::/32", "2001:db8::/32"),
    ("2001:db8::1/128", "2001:db8::1"),
])
def test_addresses_are_compared_in_one_spelling(text: str, canonical: str) -> None:
    assert canonical_address(text) == canonical


def test_canonical_text_refuses_what_hyperv_cannot_hold() -> None:
    with pytest.raises(ValueError, match="40 characters"):
        canonical_address("2001:db8:1234:5678:9abc:def0:1234:5678/127")
    for bad_ports in ("22-", "9-8", "x", "70000"):
        with pytest.raises(ValueError):
            canonical_ports(bad_ports)
    assert (canonical_ports("22-22"), canonical_protocol("tcp"), canonical_protocol("017")) == (
        "22", "TCP", "UDP")


@pytest.mark.parametrize(("cidr", "texts"), [
    ("10.1.2.3/32", ("10.1.2.3",)),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",)),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:0/112", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:0/112",)),
    ("2001:db8:1234:5678:9abc:def0:1234:5678/127",  # 43 characters: its two addresses
     ("2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234:5678:9abc:def0:1234:5679")),
])
def test_a_network_is_written_as_texts_hyperv_holds(cidr: str, texts: tuple[str, ...]) -> None:
    assert network_texts(ipaddress.ip_network(cidr)) == texts


def test_a_long_network_is_written_as_its_addresses_up_to_a_slash_120() -> None:
    network = ipaddress.ip_network("2001:db8:1234:5678:9abc:def0:1234:5600/120")
    texts = network_texts(network)
    assert len(texts) == 256 and max(len(t) for t in texts) <= 40
    assert {ipaddress.ip_address(t) for t in texts} == set(network)
    with pytest.raises(ValueError, match=r"43 characters.*40.*4096 addresses.*256"):
        network_texts(ipaddress.ip_network("ffff:ffff:ffff:ffff:ffff:ffff:ffff:f000/116"))
