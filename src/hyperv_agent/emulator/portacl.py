"""Hyper-V's extended port ACLs (Msvm_EthernetSwitchPortExtendedAclSettingData): the text
of their fields, and how the switch applies them to one packet.

What Microsoft documents (the class page, Add-VMNetworkAdapterExtendedAcl, and "Create
Security Policies with Extended Port Access Control Lists"):

* Direction is seen from the VM: Incoming (1) packets go to it, Outgoing (2) leave it. The
  local address and port are the VM's end: an incoming packet's destination, an outgoing
  packet's source; the remote ones are the other end.
* An address is a host address or a subnet, IPv4 or IPv6; ``0.0.0.0/0`` is every IPv4
  address, ``::/0`` every IPv6 address, ``ANY`` every address of both (MaxLen 40).
* A port is one port or a range ``low-high`` (MaxLen 21).
* Protocol is TCP, UDP or an IP protocol number, "use 1 for ICMP" (MaxLen 15); Name has
  MaxLen 64; Action is Allow (1) or Deny (2).
* "Larger weight values apply first, and once an ACL entry applies to a packet, other
  entries are no longer relevant for that packet": the matching ACL of highest Weight in
  the packet's direction decides.
* Stateful rules "always allow traffic and are not used to block traffic". When a packet
  matches one, the switch creates a state "so that all subsequent packets in both
  directions of the same flow are allowed"; the state expires after IdleSessionTimeout
  seconds without traffic in either direction.
* Microsoft's examples block traffic with a deny ACL of the lowest weight: a packet no ACL
  matches passes, and a port without ACLs passes everything.

Where Microsoft is silent, the emulator's choices:

* ``ANY`` (any case) and the empty string both mean "any" for addresses and ports (os-win
  sends an empty LocalPort for its ICMP rules). ``TCP`` and ``UDP`` are read in any case;
  other protocol names (``ICMP``) are refused, numbers must be decimal 0..255.
* An address with bits set beyond its prefix (``10.1.1.5/24``) stands for its network.
* A port range other than "any" matches only TCP and UDP packets: others carry no ports.
* A stateful ACL must allow and name TCP or UDP (refused otherwise, see codes.py).
* IdleSessionTimeout 0 is the class default, 255 seconds.
* IsolationID 0 matches every packet; another value only packets of that isolation ID.
* A session's state is consulted before the ACLs: a packet of a live session passes
  whatever the ACLs of its own direction say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from hyperv_agent.cim.api import CimValue
from hyperv_agent.emulator.codes import AclAction, AclDirection

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_E = TypeVar("_E", AclDirection, AclAction)

ACL_CLASS = "Msvm_EthernetSwitchPortExtendedAclSettingData"
#: MaxLen qualifiers of the class page.
MAX_CHARS = {"Name": 64, "LocalIPAddress": 40, "RemoteIPAddress": 40, "LocalPort": 21,
             "RemotePort": 21, "Protocol": 15}
ANY = "ANY"
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOL_NAMES = {"TCP": TCP, "UDP": UDP}
DEFAULT_IDLE_TIMEOUT_S = 255
ALL_ADDRESSES: tuple[IpNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"),
                                        ipaddress.ip_network("::/0"))
#: The source port a packet gets when the test does not name one.
EPHEMERAL_PORT = 50000


class AclTextError(ValueError):
    """A field of an ACL that Hyper-V would not take; ``field`` names the property."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Acl:
    """One extended ACL as the switch applies it (``None`` ports or protocol = any)."""

    name: str
    direction: AclDirection
    action: AclAction
    local: tuple[IpNetwork, ...]
    remote: tuple[IpNetwork, ...]
    local_ports: PortRange | None
    remote_ports: PortRange | None
    protocol: int | None
    weight: int
    stateful: bool = False
    idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S
    isolation_id: int = 0

    def matches(self, packet: Packet) -> bool:
        """Whether this ACL applies to ``packet`` (its direction and every field)."""
        return (packet.direction == self.direction
                and self.protocol in (None, packet.protocol)
                and _within(packet.local_ip, self.local)
                and _within(packet.remote_ip, self.remote)
                and _port_ok(self.local_ports, packet.local_port)
                and _port_ok(self.remote_ports, packet.remote_port)
                and self.isolation_id in (0, packet.isolation_id))

    def __str__(self) -> str:
        parts = [self.action.name.lower(), self.direction.name.lower(),
                 "any protocol" if self.protocol is None else f"protocol {self.protocol}",
                 f"local {_text(self.local)}", f"remote {_text(self.remote)}"]
        if self.local_ports:
            parts.append(f"local port {self.local_ports}")
        if self.remote_ports:
            parts.append(f"remote port {self.remote_ports}")
        stateful = ", stateful" if self.stateful else ""
        return f"{' '.join(parts)} (weight {self.weight}{stateful}, name {self.name!r})"


@dataclass(frozen=True)
class Packet:
    """One IP packet at a VM's switch port, described from the VM's side.

    ``reply`` marks return traffic: a packet of the session that the mirror packet (the
    other direction, the same ends) opened, ``idle_s`` seconds after that session last
    carried a packet. ``source_mac`` (outgoing packets; None = the NIC's own address) and
    ``icmp_type`` are read by the port's security settings, not by ACLs.
    """

    direction: AclDirection
    protocol: int
    local_ip: str
    remote_ip: str
    local_port: int | None = None
    remote_port: int | None = None
    reply: bool = False
    idle_s: float = 0.0
    isolation_id: int = 0
    source_mac: str | None = None
    icmp_type: int | None = None

    @classmethod
    def inbound(cls, protocol: str | int, remote_ip: str, local_ip: str,
                local_port: int | None = None, remote_port: int | None = None) -> Packet:
        """A packet from ``remote_ip`` to the VM's ``local_ip`` (TCP and UDP packets get a
        source port when none is named)."""
        number = protocol_number(protocol)
        return cls(AclDirection.INCOMING, number, local_ip, remote_ip, local_port,
                   _source_port(number, remote_port))

    @classmethod
    def outbound(cls, protocol: str | int, local_ip: str, remote_ip: str,
                 remote_port: int | None = None, local_port: int | None = None) -> Packet:
        """A packet from the VM's ``local_ip`` to ``remote_ip``."""
        number = protocol_number(protocol)
        return cls(AclDirection.OUTGOING, number, local_ip, remote_ip,
                   _source_port(number, local_port), remote_port)

    def reply_to(self) -> Packet:
        """The first packet of this packet's return traffic."""
        return replace(self, direction=_other(self.direction), reply=True, source_mac=None,
                       icmp_type=None)

    def opener(self) -> Packet:
        """The packet that opened the session of a reply (the mirror, not a reply)."""
        return replace(self, direction=_other(self.direction), reply=False, idle_s=0.0)


@dataclass(frozen=True)
class Verdict:
    """What the port does with a packet, and why (the deciding ACL, when one decided)."""

    passed: bool
    reason: str
    acl: Acl | None = None

    def __bool__(self) -> bool:
        return self.passed


def evaluate(acls: Sequence[Acl], packet: Packet) -> Verdict:
    """Whether ``packet`` passes a port carrying ``acls``: a reply of a live session opened
    through a stateful ACL passes; otherwise the matching ACL of the highest weight in the
    packet's direction decides, and a packet no ACL matches passes."""
    if packet.reply:
        session = _session(acls, packet)
        if session is not None:
            return session
    if not acls:
        return Verdict(True, "the port has no ACL")
    ordered = sorted(acls, key=lambda acl: acl.weight, reverse=True)
    deciding = next((acl for acl in ordered if acl.matches(packet)), None)
    if deciding is None:
        return Verdict(True, "no ACL matches")
    return Verdict(deciding.action == AclAction.ALLOW, str(deciding), deciding)


def _session(acls: Sequence[Acl], packet: Packet) -> Verdict | None:
    opened = evaluate(acls, packet.opener())
    acl = opened.acl
    if not opened.passed or acl is None or not acl.stateful:
        return None
    if packet.idle_s > (acl.idle_timeout_s or DEFAULT_IDLE_TIMEOUT_S):
        return None
    return Verdict(True, f"return traffic of a session opened through: {acl}", acl)


# --- the text of the fields ----------------------------------------------------------------


def parse_acl(values: Mapping[str, CimValue]) -> Acl:
    """The ACL that property ``values`` describe (missing ones take the MOF defaults);
    AclTextError naming the first field Hyper-V would refuse."""
    for name, limit in MAX_CHARS.items():
        if len(_string(values, name)) > limit:
            raise AclTextError(name, f"longer than {limit} characters")
    acl = Acl(
        name=_string(values, "Name"),
        direction=_enum(AclDirection, values, "Direction"),
        action=_enum(AclAction, values, "Action"),
        local=parse_addresses(_string(values, "LocalIPAddress", ANY), "LocalIPAddress"),
        remote=parse_addresses(_string(values, "RemoteIPAddress", ANY), "RemoteIPAddress"),
        local_ports=parse_ports(_string(values, "LocalPort", ANY), "LocalPort"),
        remote_ports=parse_ports(_string(values, "RemotePort", ANY), "RemotePort"),
        protocol=parse_protocol(_string(values, "Protocol", ANY)),
        weight=_integer(values, "Weight", 0),
        stateful=values.get("Stateful") is True,
        idle_timeout_s=_integer(values, "IdleSessionTimeout", DEFAULT_IDLE_TIMEOUT_S),
        isolation_id=_integer(values, "IsolationID", 0),
    )
    _check_stateful(acl)
    return acl


def _check_stateful(acl: Acl) -> None:
    if acl.stateful and acl.action != AclAction.ALLOW:
        raise AclTextError("Stateful", "a stateful ACL always allows; it cannot deny")
    if acl.stateful and acl.protocol not in (TCP, UDP):
        raise AclTextError("Stateful", "a stateful ACL tracks TCP or UDP sessions only")


def parse_addresses(text: str, field: str) -> tuple[IpNetwork, ...]:
    """``ANY``/empty (both families), or one host address or subnet of either family."""
    if _is_any(text):
        return ALL_ADDRESSES
    try:
        return (ipaddress.ip_network(text.strip(), strict=False),)
    except ValueError:
        raise AclTextError(field, f"{text!r} is not ANY, an IP address or a subnet") from None


def parse_ports(text: str, field: str) -> PortRange | None:
    """``ANY``/empty (None), a port, or ``low-high``."""
    if _is_any(text):
        return None
    low_text, dash, high_text = text.strip().partition("-")
    low, high = _port(low_text, field, text), _port(high_text if dash else low_text, field, text)
    if low > high:
        raise AclTextError(field, f"{text!r}: the range ends before it starts")
    return PortRange(low, high)


def parse_protocol(text: str) -> int | None:
    """``ANY``/empty (None), TCP, UDP or a decimal IP protocol number."""
    if _is_any(text):
        return None
    word = text.strip().upper()
    if word in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[word]
    if not word.isdecimal() or int(word) > 255:
        raise AclTextError("Protocol", f"{text!r} is not TCP, UDP or a protocol number 0..255")
    return int(word)


def protocol_number(protocol: str | int) -> int:
    """A packet's protocol given as a number or as tcp, udp, icmp or icmpv6."""
    if isinstance(protocol, int):
        return protocol
    names = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmpv6": ICMPV6}
    return names.get(protocol.lower()) or int(protocol)


def _port(text: str, field: str, whole: str) -> int:
    if not text.strip().isdecimal() or int(text) > 65535:
        raise AclTextError(field, f"{whole!r} is not ANY, a port 0..65535 or a range low-high")
    return int(text)


def _is_any(text: str) -> bool:
    return text.strip().upper() in ("", ANY)


def _string(values: Mapping[str, CimValue], name: str, default: str = "") -> str:
    value = values.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise AclTextError(name, f"{value!r} is not a string")
    return value


def _integer(values: Mapping[str, CimValue], name: str, default: int) -> int:
    value = values.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise AclTextError(name, f"{value!r} is not a number")
    return value


def _enum(kind: type[_E], values: Mapping[str, CimValue], name: str) -> _E:
    value = values.get(name)
    try:
        return kind(value if isinstance(value, int) else -1)
    except ValueError:
        allowed = ", ".join(f"{m.value} ({m.name.lower()})" for m in kind)
        raise AclTextError(name, f"{value!r} is not {allowed}") from None


def _within(address: str, networks: Iterable[IpNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


def _port_ok(ports: PortRange | None, port: int | None) -> bool:
    return ports is None or port in ports


def _source_port(protocol: int, port: int | None) -> int | None:
    return port if port is not None or protocol not in (TCP, UDP) else EPHEMERAL_PORT


def _other(direction: AclDirection) -> AclDirection:
    incoming = direction == AclDirection.INCOMING
    return AclDirection.OUTGOING if incoming else AclDirection.INCOMING


def _text(networks: tuple[IpNetwork, ...]) -> str:
    return ANY if networks == ALL_ADDRESSES else ", ".join(str(n) for n in networks)
