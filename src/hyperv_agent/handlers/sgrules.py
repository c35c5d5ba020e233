"""CloudStack security-group rules as the extended port ACLs of one VM adapter.

A pure translation, no I/O: the ingress and egress rule sets of a SecurityGroupRulesCmd
(``IpPortAndProto``: proto, startPort, endPort, allowedCidrs) and the adapter's addresses
become the ``AclSpec`` list (portacls.py) that gives the VM what a CloudStack KVM host gives
it:

* Default deny in both directions: one deny-all ACL per direction, of the lowest weights.
* An ingress rule allows packets from its CIDRs to its ports of the VM (the rule's ports
  are the ACL's LocalPort); an egress rule allows packets from the VM's own addresses to
  its CIDRs and ports (RemotePort). TCP and UDP ACLs are stateful, so the return traffic of
  the sessions they allow passes.
* No egress rule for an address family: everything the VM sends from its own addresses of
  that family is allowed (TCP and UDP statefully), as by an egress rule ``all`` to every
  address of the family but for the replies of other protocols (see ``all`` below). That
  includes ICMP both ways: a ping's reply and the errors of path MTU discovery come back
  (KVM's connection tracking lets them in), which on Hyper-V, whose ACLs keep no ICMP
  session, means any ICMP of the family reaches the VM.
* Always allowed: DHCP (client and server ports, both directions; the VM may not act as a
  DHCP server, which the port's DHCP guard enforces), DHCPv6 from the link-local address,
  DNS (TCP and UDP 53) from the VM's own addresses, and ICMPv6 to the VM and from its own
  addresses: neighbour discovery needs it, and ACLs cannot tell ICMPv6 types apart (the
  port's router guard stops the VM's router advertisements).
* Anti-spoofing: every ACL that lets the VM send carries one of its own addresses as
  LocalIPAddress (the NIC's address, its secondary addresses, for IPv6 also the link-local
  address derived from the MAC, and ``::`` for duplicate address detection), so anything
  else it sends meets the default deny.
* ``icmp``: ACLs match no ICMP type or code, so a rule allows all ICMP of its CIDR's family,
  in both directions with those CIDRs (ICMP has no session to carry replies); a rule that
  named a type or code says so in ``notes``. A protocol number allows that protocol
  (1, 6 and 17 as icmp, tcp and udp); other than TCP and UDP it has no session either, so,
  as ICMP, it is allowed in both directions with the rule's CIDRs (a GRE or ESP peer's
  replies come back, as KVM's connection tracking lets them).
* ``all``: TCP and UDP statefully, every other protocol statelessly, and, for the replies
  of those (ICMP, GRE, ESP, ...), every protocol but TCP and UDP in the other direction
  with the rule's CIDRs: an ACL of any protocol in the reply band (portacls), under two
  denies of TCP and UDP that keep it from letting the VM open (or be opened) TCP and UDP
  sessions the rule allows only one way. An ingress ``all`` rule needs no such ACL while
  its family's egress is open. That is the union of the numbered rules of every protocol.
  No egress rule is not treated so: it lets ICMP replies in (above) but no other protocol
  that keeps no session, which would let GRE, ESP, SCTP and the like in from every
  address unasked; a VM that needs them names them in an ingress rule (or an egress
  ``all`` rule to its peers).

A secondary address added later (NetworkRulesVmSecondaryIpCommand) gets what the
adapter's other addresses of its family get (``with_address``), and loses it again
(``without_address``); the rest of the ACLs stays as it is.

Rules arrive as the management server builds them (SecurityGroupManagerImpl): ``icmp``
carries its type and code in startPort and endPort (-1 = any), ``all`` and numbers carry
0 and 0, and a rule naming another group arrives as the /32 addresses of its members
(and, for a member with an IPv6 address, that address with /64, which stands for its
/64). A CIDR is written in any legal spelling (zero-padded, upper case, an embedded IPv4
address, host bits set) and reaches the ACLs compressed, a host address bare; an IPv6
network whose text would not fit the 40 characters of an ACL's address (a /113../127
written almost in full) becomes its host addresses, up to a /120 (``network_texts``).
Whatever cannot be translated is a ``RuleError`` naming the field, and nothing is changed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hyperv_agent.cloudstack.objects import IpPortAndProto
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.hyperv.portacls import ANY, AclSpec, PortSecurity, network_texts
from hyperv_agent.hyperv.schema import AclAction, AclDirection

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IN, OUT = AclDirection.INCOMING, AclDirection.OUTGOING
ALLOW, DENY = AclAction.ALLOW, AclAction.DENY
ICMP, ICMPV6 = "1", "58"
_FAMILY_ANY = {4: "0.0.0.0/0", 6: "::/0"}
_ICMP_OF = {4: ICMP, 6: ICMPV6}
_NO_ADDRESS = ("", "0")  # how CloudStack writes "no secondary address"
#: The roles every own address of a family sends under: one of the two always exists.
_PER_ADDRESS = ("egress-open", "dns")
_DAD_SOURCE = "::"  # the unspecified address of duplicate address detection
_REPLY_GUARD = "no-tcp-udp"  # the role of the denies guarding the reply band


class RuleError(InvalidRequest):
    """A rule or address that cannot become an ACL; ``field`` is its path in the command."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


#: A user VM may not forge its MAC, answer as a DHCP server or advertise routes.
USER_VM_SECURITY = PortSecurity(allow_mac_spoofing=False, dhcp_guard=True, router_guard=True)
#: A system VM (virtual router, console proxy, secondary storage VM) serves DHCP and routes.
SYSTEM_VM_SECURITY = PortSecurity(allow_mac_spoofing=False, dhcp_guard=False,
                                  router_guard=False)


@dataclass(frozen=True)
class NicAddresses:
    """The addresses a VM adapter may send from: IPv4 and IPv6 (global ones and the
    link-local one of its MAC), primary first."""

    mac: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    link_local: str

    def own(self, version: int) -> tuple[str, ...]:
        return self.ipv4 if version == 4 else (*self.ipv6, self.link_local)


@dataclass(frozen=True)
class Translation:
    """The ACLs of a rule set, and what could not be said exactly."""

    acls: tuple[AclSpec, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Cidr:
    version: int
    text: str  # as an ACL address field holds it


@dataclass(frozen=True)
class _Rule:
    field: str
    direction: AclDirection
    proto: str  # tcp, udp, icmp, all, or a decimal protocol number
    ports: str  # ANY or low[-high]; for icmp, what the type and code said
    cidrs: tuple[_Cidr, ...]


def nic_addresses(mac: str | None, guest_ip: str | None, guest_ip6: str | None,
                  sec_ips: Sequence[str] | None) -> NicAddresses:
    """The adapter's own addresses from a command's guestMac, guestIp (IPv4), guestIp6
    (IPv6) and secIps (secondary addresses of either family); RuleError naming a malformed
    one, or a guestIp or guestIp6 of the other family (the NIC's addresses would otherwise
    be filed under the wrong family and the VM could not send from the one it has)."""
    link_local = _link_local(mac)
    given: list[tuple[str, str | None, int | None]] = [("guestIp", guest_ip, 4),
                                                       ("guestIp6", guest_ip6, 6)]
    given += [(f"secIps[{i}]", ip, None) for i, ip in enumerate(sec_ips or ())]
    addresses = [_address(field, text, version) for field, text, version in given
                 if text is not None and text.strip() not in _NO_ADDRESS]
    v4 = tuple(dict.fromkeys(str(a) for a in addresses if a.version == 4))
    v6 = tuple(dict.fromkeys(a.compressed for a in addresses if a.version == 6))
    return NicAddresses(str(mac), v4, tuple(a for a in v6 if a != link_local), link_local)


def translate(ingress: Sequence[IpPortAndProto], egress: Sequence[IpPortAndProto],
              nic: NicAddresses) -> Translation:
    """The ACLs that give ``nic`` exactly what the rule sets allow (module docstring);
    RuleError naming the first field that cannot be translated."""
    rules = [*_rules(ingress, "ingressRuleSet", IN), *_rules(egress, "egressRuleSet", OUT)]
    restricted = {c.version for r in rules if r.direction == OUT for c in r.cidrs}
    acls: list[AclSpec] = [*_always(nic)]
    notes: list[str] = []
    for rule in rules:
        for cidr in rule.cidrs:
            acls.extend(_rule_acls(rule, cidr, nic, cidr.version in restricted))
        notes.extend(_notes(rule))
    for direction in (IN, OUT):
        if any(spec.reply and spec.direction == direction for spec in acls):
            acls.extend(AclSpec(_REPLY_GUARD, direction, DENY, protocol, reply=True)
                        for protocol in ("TCP", "UDP"))
    for version in (4, 6):
        acls.extend(_dns(version, nic) if version in restricted
                    else _open_egress(version, nic))
    acls += [AclSpec("default-deny", IN, DENY), AclSpec("default-deny", OUT, DENY)]
    return Translation(tuple(dict.fromkeys(acls)), tuple(notes))


# --- reading the rules ----------------------------------------------------------------------


def _rules(rules: Sequence[IpPortAndProto], name: str, direction: AclDirection
           ) -> Iterator[_Rule]:
    for index, rule in enumerate(rules):
        field = f"{name}[{index}]"
        proto = _proto(rule.proto, field)
        cidrs = tuple(cidr for i, text in enumerate(rule.allowed_cidrs or ())
                      for cidr in _cidrs(f"{field}.allowedCidrs[{i}]", text))
        yield _Rule(field, direction, proto, _ports(proto, rule, field), cidrs)


def _proto(text: str | None, field: str) -> str:
    word = (text or "").strip().lower()
    numbers = {"1": "icmp", "6": "tcp", "17": "udp"}
    if word in ("tcp", "udp", "icmp", "all"):
        return word
    # ASCII digits only, as the MS writes a protocol number: Python's isdecimal also takes
    # other scripts' digits, and int() refuses a number of more than 4300 digits.
    if word.isascii() and word.isdecimal() and len(word.lstrip("0")) <= 3 and int(word) <= 255:
        return numbers.get(str(int(word)), str(int(word)))
    raise RuleError(f"{field}.proto", f"{(text or '')[:40]!r} is not tcp, udp, icmp, all or a "
                    "protocol number 0..255")


def _ports(proto: str, rule: IpPortAndProto, field: str) -> str:
    start, end = rule.start_port, rule.end_port
    if proto == "icmp":
        if not (-1 <= start <= 255 and -1 <= end <= 255):
            raise RuleError(f"{field}.startPort", f"ICMP type {start} / code {end} is not "
                                                  "-1 (any) or 0..255")
        return ANY if start == -1 else f"type {start}" + ("" if end == -1 else f" code {end}")
    if proto not in ("tcp", "udp") or (start, end) == (0, 0):
        return ANY
    if not 0 <= start <= 65535 or not 0 <= end <= 65535:
        raise RuleError(f"{field}.startPort", f"port range {start}-{end} is outside 0..65535")
    if start > end:
        raise RuleError(f"{field}.endPort", f"port range {start}-{end} ends before it starts")
    return str(start) if start == end else f"{start}-{end}"


def _cidrs(field: str, text: str) -> tuple[_Cidr, ...]:
    """A rule's CIDR as the address texts of its ACLs (one, or a long IPv6 network's
    addresses: ``network_texts``); RuleError naming ``field``."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as error:
        raise RuleError(field, f"{text!r} is not an IPv4 or IPv6 CIDR ({error})") from None
    if "%" in text:
        raise RuleError(field, f"{text!r} carries a zone index")
    try:
        return tuple(_Cidr(network.version, t) for t in network_texts(network))
    except ValueError as error:
        raise RuleError(field, str(error)) from None


def _address(field: str, text: str, version: int | None = None) -> IpAddress:
    """``text`` as an address (of ``version`` when given); RuleError naming ``field``."""
    family = "an IPv4 or IPv6" if version is None else f"an IPv{version}"
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise RuleError(field, f"{text!r} is not {family} address") from None
    if version is not None and address.version != version:
        raise RuleError(field, f"{text!r} is an IPv{address.version} address, not {family} "
                               "one")
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise RuleError(field, f"{text!r} carries a zone index")
    return address


def _link_local(mac: str | None) -> str:
    digits = (mac or "").replace(":", "").replace("-", "")
    if len(digits) != 12 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise RuleError("guestMac", f"{mac!r} is not a MAC address")
    octets = bytes.fromhex(digits)
    eui64 = bytes([octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui64))


# --- the ACLs -------------------------------------------------------------------------------


def _always(nic: NicAddresses) -> Iterator[AclSpec]:
    """DHCP, DHCPv6 and ICMPv6: what every VM needs whatever its rules say."""
    v4_any, v6_any = _FAMILY_ANY[4], _FAMILY_ANY[6]
    yield AclSpec("dhcp", OUT, ALLOW, "UDP", ANY, v4_any, "68", "67")
    yield AclSpec("dhcp", IN, ALLOW, "UDP", ANY, v4_any, "68", "67")
    yield AclSpec("dhcpv6", OUT, ALLOW, "UDP", nic.link_local, v6_any, "546", "547")
    yield AclSpec("dhcpv6", IN, ALLOW, "UDP", ANY, v6_any, "546", "547")
    yield AclSpec("icmpv6", IN, ALLOW, ICMPV6, ANY, v6_any)
    for own in (*nic.own(6), "::"):
        yield AclSpec("icmpv6", OUT, ALLOW, ICMPV6, own, v6_any)


def _rule_acls(rule: _Rule, cidr: _Cidr, nic: NicAddresses, egress_restricted: bool
               ) -> Iterator[AclSpec]:
    """The ACLs of one CIDR of a rule; ``egress_restricted``: the family of the CIDR has
    egress rules (without, everything the VM sends of that family is allowed anyway)."""
    if rule.proto == "icmp" and cidr.version == 6:
        return  # ICMPv6 is always allowed (see _always)
    remote, role = cidr.text, rule.field.split("RuleSet")[0]
    protocols = {"tcp": ("TCP",), "udp": ("UDP",), "all": ("TCP", "UDP", ANY)}.get(
        rule.proto, (_ICMP_OF[cidr.version] if rule.proto == "icmp" else rule.proto,))
    ports = rule.ports if rule.proto in ("tcp", "udp") else ANY
    for protocol in protocols:
        yield from _allow(role, rule.direction, protocol, remote, ports, cidr.version, nic)
    # Replies: only TCP and UDP ACLs keep a session, so the protocol of an icmp or
    # numbered rule (GRE, ESP, ...) is allowed back with the same CIDRs, as KVM's
    # connection tracking lets its replies back. For ``all``, every protocol but TCP and
    # UDP: an ACL of any protocol in the reply band, under the guards that deny TCP and
    # UDP there (their replies ride their sessions; the rule does not allow opening
    # them that way). The VM sends anything when its family's egress is open.
    back = OUT if rule.direction == IN else IN
    if rule.proto not in ("tcp", "udp", "all") and protocols[0] != ICMPV6:
        yield from _allow(role, back, protocols[0], remote, ANY, cidr.version, nic)
    elif rule.proto == "all" and (back == IN or egress_restricted):
        yield from _allow(role, back, ANY, remote, ANY, cidr.version, nic, reply=True)


def _allow(role: str, direction: AclDirection, protocol: str, remote: str, ports: str,
           version: int, nic: NicAddresses, *, reply: bool = False) -> Iterator[AclSpec]:
    """One allow ACL; leaving the VM, one per own address of the family (anti-spoofing)."""
    stateful = protocol in ("TCP", "UDP")
    if direction == IN:
        yield AclSpec(role, IN, ALLOW, protocol, ANY, remote, ports, ANY, stateful, reply)
        return
    for own in nic.own(version):
        yield AclSpec(role, OUT, ALLOW, protocol, own, remote, ANY, ports, stateful, reply)


def _open_egress(version: int, nic: NicAddresses) -> Iterator[AclSpec]:
    """What an egress rule ``all`` to every address of the family allows, which is what
    CloudStack means by no egress rule: ICMP included, replies and errors back."""
    everywhere = _FAMILY_ANY[version]
    for protocol in ("TCP", "UDP", ANY):
        yield from _allow("egress-open", OUT, protocol, everywhere, ANY, version, nic)
    if version == 4:  # ICMPv6 is always allowed (see _always)
        yield from _allow("egress-open", IN, ICMP, everywhere, ANY, version, nic)


def _dns(version: int, nic: NicAddresses) -> Iterator[AclSpec]:
    """DNS of a family whose egress is restricted (open egress allows it anyway)."""
    for protocol in ("UDP", "TCP"):
        yield from _allow("dns", OUT, protocol, _FAMILY_ANY[version], "53", version, nic)


def _notes(rule: _Rule) -> Iterator[str]:
    families = sorted({c.version for c in rule.cidrs})
    if rule.proto == "icmp" and rule.ports != ANY and 4 in families:
        yield (f"{rule.field}: ICMP {rule.ports} cannot be told apart by Hyper-V ACLs; "
               "all ICMP is allowed with its CIDRs")
    if rule.proto == "icmp" and 6 in families:
        yield f"{rule.field}: ICMPv6 is always allowed (neighbour discovery needs it)"


# --- which rule set the port holds ----------------------------------------------------------

#: The role of the ACL that says which rule set a port holds: ``seqnum/<vmId>/<seqNum>``.
SEQNUM_ROLE = "seqnum"


def seqnum_acl(vm_id: int, seq_num: int) -> AclSpec:
    """The ACL that records on the port that it holds the rule set ``seq_num`` of VM
    ``vm_id``, written with that rule set's ACLs (last, so in their last add call).

    It is a deny of every incoming packet, of the deny band, so it changes no traffic:
    every rule set's ``default-deny`` denies the same packets already, and a packet that
    meets neither is decided above both. Hyper-V keeps an ACL's ``Name`` with the port, as
    it keeps the agent's ownership of every ACL in it, so the number lives and goes with
    the rules it numbers: across an agent restart, with the port of a migrated VM, and
    gone with the port of a removed VM."""
    return AclSpec(f"{SEQNUM_ROLE}/{vm_id}/{seq_num}", IN, DENY)


def applied_seqnum(current: Sequence[AclSpec], vm_id: int) -> int | None:
    """The seqNum of the rule set of VM ``vm_id`` that ``current`` (the agent's ACLs of a
    port) records (``seqnum_acl``); None when they record none of that VM."""
    found = []
    for spec in current:
        kind, _, rest = spec.role.partition("/")
        owner, _, number = rest.partition("/")
        if (kind == SEQNUM_ROLE and owner == str(vm_id)
                and number.removeprefix("-").isdecimal()):
            found.append(int(number))
    return max(found, default=None)


# --- a secondary address added or removed later ---------------------------------------------


def own_address(field: str, text: str | None) -> str:
    """``text`` as the ACLs write an address of the adapter (RuleError naming ``field``)."""
    address = _address(field, text or "")
    return str(address) if address.version == 4 else address.compressed


def with_address(current: Sequence[AclSpec], address: str) -> tuple[AclSpec, ...]:
    """``current`` (the agent's ACLs of a port) letting the adapter also send from
    ``address`` (``own_address``'s text): every ACL another address of its family sends
    under is repeated for it. RuleError when the port lets no address of that family send
    yet (the rules have not reached it): nothing to repeat."""
    version = ipaddress.ip_address(address).version
    template = _template(current, version)
    if template is None:
        raise RuleError("vmSecIp", f"no IPv{version} address of the adapter has rules to "
                                   f"extend to {address} yet")
    copies = [dataclasses.replace(spec, local_ip=address) for spec in current
              if spec.direction == OUT and spec.local_ip == template and spec.role != "dhcpv6"]
    return tuple(dict.fromkeys([*current, *copies]))


def without_address(current: Sequence[AclSpec], address: str) -> tuple[AclSpec, ...]:
    """``current`` without what lets the adapter send from ``address``."""
    return tuple(spec for spec in current
                 if not (spec.direction == OUT and spec.local_ip == address))


def _template(current: Sequence[AclSpec], version: int) -> str | None:
    """An address of ``version`` the ACLs let the adapter send from: a global one first,
    an IPv6 link-local one when there is no other."""
    own = {spec.local_ip for spec in current
           if spec.direction == OUT and spec.role in _PER_ADDRESS
           and spec.local_ip not in (ANY, _DAD_SOURCE)
           and ipaddress.ip_address(spec.local_ip).version == version}
    ranked = sorted(own, key=lambda a: (ipaddress.ip_address(a).is_link_local, a))
    return ranked[0] if ranked else None
