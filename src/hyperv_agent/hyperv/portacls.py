"""The extended port ACLs the agent owns on a switch port, and how to change them.

Pure data and functions, no I/O: an ``AclSpec`` is one
``Msvm_EthernetSwitchPortExtendedAclSettingData`` the agent wants, without a weight; a
``PortAcl`` is one found on a port (any owner); ``plan_change`` compares the two and says
which ACLs to remove (one RemoveFeatureSettings) and which to add, with which weights (one
AddFeatureSettings). ``PortSecurity`` is what the port's security setting says of its VM.
The operations that read and write ports are ``acls``.

Ownership is written in ``Name``: every ACL the agent writes is named ``cloudstack-sg/...``.
Any other ACL of the port belongs to an administrator: it is never removed and its weight is
never reused.

Weights: a higher weight is applied first and the first matching ACL decides (Microsoft,
Add-VMNetworkAdapterExtendedAcl). The agent's ACLs fall into five bands, so their order
follows from the band alone and never from a position in a list:

* stateful allows, weights 30001..59000: a TCP or UDP packet must meet its stateful rule
  before any stateless one that also allows it, or its session (and its return traffic)
  is never created;
* stateless allows, 10001..30000;
* reply guards, 9001..10000: denies of TCP and UDP, below every allow above;
* reply allows, 1001..9000: any protocol, for the replies of a rule whose protocols
  include some that no ACL keeps a session for (an ``all`` rule), in the direction
  opposite to the rule. The guards above them keep these from allowing TCP and UDP,
  whose replies ride their sessions and which the rule does not allow that way;
* the default denies, 1..1000.

A reply ACL (``AclSpec.reply``) says so in its name (``cloudstack-sg/<role>/replies``),
which is how its band is known again when it is read back. The bands below stateless
were carved from its lowest weights, which the agent fills last, so ACLs written before
them keep their weights.

Within a band every ACL has the same action, so their relative order changes nothing and an
unchanged ACL keeps its weight. Weights from 59001 up are left to administrators, whose ACLs
there take precedence over the agent's. A change picks weights that no ACL of the port holds
at the time it is planned (removed ones included), so its remove and add calls may run in
either order; the agent removes first, which fails closed.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from hyperv_agent.errors import InvalidRequest
from hyperv_agent.hyperv.schema import (
    ACL_ADDRESS_MAX_CHARS,
    ACL_ANY,
    ACL_DEFAULT_IDLE_TIMEOUT_S,
    AclAction,
    AclDirection,
)

NAME_PREFIX = "cloudstack-sg"
REPLY_SUFFIX = "/replies"  # ends the name of an ACL of the reply bands
ANY = ACL_ANY
#: Idle timeout of the agent's stateful ACLs: an hour, the value of Microsoft's own example.
SESSION_IDLE_TIMEOUT_S = 3600
#: IdleSessionTimeout of stateless ACLs: the class default, which they do not use.
DEFAULT_IDLE_TIMEOUT_S = ACL_DEFAULT_IDLE_TIMEOUT_S
_TCP, _UDP = "TCP", "UDP"
_PROTOCOL_NAMES = {"6": _TCP, "17": _UDP, _TCP: _TCP, _UDP: _UDP}


@dataclass(frozen=True)
class PortSecurity:
    """What a port's Msvm_EthernetSwitchPortSecuritySettingData says of its VM: may it send
    from another MAC, answer as a DHCP server, advertise routes. A port without that
    setting has the class defaults (``CLASS_DEFAULT_SECURITY``)."""

    allow_mac_spoofing: bool
    dhcp_guard: bool
    router_guard: bool


#: The class defaults: MAC spoofing refused, both guards off.
CLASS_DEFAULT_SECURITY = PortSecurity(allow_mac_spoofing=False, dhcp_guard=False,
                                      router_guard=False)


class Band(Enum):
    """Weight bands of the agent's ACLs, highest first (``weights`` in choosing order)."""

    STATEFUL = range(59000, 30000, -1)
    STATELESS = range(30000, 10000, -1)
    REPLY_GUARD = range(10000, 9000, -1)
    REPLY = range(9000, 1000, -1)
    DENY = range(1, 1001)

    @property
    def weights(self) -> range:
        return self.value


class TooManyAcls(InvalidRequest):
    """A rule set needs more ACLs than a weight band of one direction holds."""


@dataclass(frozen=True)
class AclSpec:
    """One extended ACL the agent wants: its fields as Hyper-V takes them, in canonical
    text (``ANY``, ``TCP``/``UDP`` or a decimal protocol, compressed addresses, ``low-high``
    ports), the role that names it, and whether it belongs to the reply bands."""

    role: str
    direction: AclDirection
    action: AclAction
    protocol: str = ANY
    local_ip: str = ANY
    remote_ip: str = ANY
    local_port: str = ANY
    remote_port: str = ANY
    stateful: bool = False
    reply: bool = False

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}/{self.role}" + (REPLY_SUFFIX if self.reply else "")

    @property
    def idle_session_timeout_s(self) -> int:
        return SESSION_IDLE_TIMEOUT_S if self.stateful else DEFAULT_IDLE_TIMEOUT_S

    @property
    def band(self) -> Band:
        if self.reply:
            return Band.REPLY_GUARD if self.action == AclAction.DENY else Band.REPLY
        if self.action == AclAction.DENY:
            return Band.DENY
        return Band.STATEFUL if self.stateful else Band.STATELESS


@dataclass(frozen=True)
class PlacedAcl:
    """An AclSpec with the weight it gets on the port: one instance to add."""

    spec: AclSpec
    weight: int


@dataclass(frozen=True)
class PortAcl:
    """An extended ACL read from a port, with its property values as Hyper-V returns them
    (``instance_id`` names it for RemoveFeatureSettings)."""

    instance_id: str
    name: str
    direction: int
    action: int
    weight: int
    protocol: str = ANY
    local_ip: str = ANY
    remote_ip: str = ANY
    local_port: str = ANY
    remote_port: str = ANY
    stateful: bool = False
    idle_session_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S
    isolation_id: int = 0

    @property
    def owned(self) -> bool:
        """Whether the agent wrote it (its Name carries the agent's prefix)."""
        return self.name.startswith(NAME_PREFIX + "/")


@dataclass(frozen=True)
class AclChange:
    """What to do to a port: remove these ACLs (by InstanceID), add those."""

    remove: tuple[str, ...]
    add: tuple[PlacedAcl, ...]
    kept: int

    @property
    def unchanged(self) -> bool:
        return not self.remove and not self.add


def plan_change(current: Sequence[PortAcl], wanted: Sequence[AclSpec]) -> AclChange:
    """The smallest change that leaves the port's agent-owned ACLs equal to ``wanted``.

    An owned ACL is kept when a wanted one has the same fields (compared in canonical form)
    and its weight lies in that ACL's band; every other owned ACL is removed. Administrators'
    ACLs are left alone. Wanted ACLs not kept are added with the highest weights of their
    band that no ACL of the port holds in their direction. Repeating the plan after it was
    applied gives an unchanged change. TooManyAcls when a band runs out of weights.
    """
    still_wanted = Counter(_unique(wanted))
    remove: list[str] = []
    for acl in current:
        spec = as_spec(acl) if acl.owned else None
        if spec is not None and still_wanted[spec] > 0 and acl.weight in spec.band.weights:
            still_wanted[spec] -= 1
        elif acl.owned:
            remove.append(acl.instance_id)
    missing = [spec for spec in _unique(wanted) if still_wanted[spec] > 0]
    used = {(acl.direction, acl.weight) for acl in current}
    add = tuple(_place(missing, used))
    return AclChange(tuple(remove), add, len(_unique(wanted)) - len(add))


def as_spec(acl: PortAcl) -> AclSpec | None:
    """The AclSpec an owned ACL read from a port stands for; None when a field does not
    read as the agent writes it (the ACL is then replaced)."""
    named = acl.name.removeprefix(NAME_PREFIX + "/")
    try:
        spec = AclSpec(
            role=named.removesuffix(REPLY_SUFFIX), reply=named.endswith(REPLY_SUFFIX),
            direction=AclDirection(acl.direction), action=AclAction(acl.action),
            protocol=canonical_protocol(acl.protocol), local_ip=canonical_address(acl.local_ip),
            remote_ip=canonical_address(acl.remote_ip), local_port=canonical_ports(acl.local_port),
            remote_port=canonical_ports(acl.remote_port), stateful=acl.stateful)
    except ValueError:
        return None
    if acl.isolation_id != 0 or (
            spec.stateful and acl.idle_session_timeout_s != spec.idle_session_timeout_s):
        return None
    return spec


def _place(specs: Sequence[AclSpec], used: set[tuple[int, int]]) -> Iterator[PlacedAcl]:
    free: dict[tuple[AclDirection, Band], Iterator[int]] = {}
    for spec in specs:
        key = (spec.direction, spec.band)
        if key not in free:
            free[key] = (w for w in spec.band.weights if (spec.direction, w) not in used)
        weight = next(free[key], None)
        if weight is None:
            raise TooManyAcls(f"more {spec.band.name.lower()} ACLs for direction "
                              f"{spec.direction.name.lower()} than the "
                              f"{len(spec.band.weights)} weights of their band")
        yield PlacedAcl(spec, weight)


def _unique(specs: Sequence[AclSpec]) -> list[AclSpec]:
    return list(dict.fromkeys(specs))


# --- canonical text -------------------------------------------------------------------------


def canonical_address(text: str) -> str:
    """``ANY`` for any/empty; a host address bare; a subnet as ``network/prefix``, both
    compressed. ValueError when the text is no address or does not fit Hyper-V's 40
    characters."""
    if text.strip().upper() in ("", ANY):
        return ANY
    return network_text(ipaddress.ip_network(text.strip(), strict=False))


def network_text(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """``canonical_address`` of a parsed network."""
    if network.prefixlen == network.max_prefixlen:
        result = str(network.network_address)
    else:
        result = f"{network.network_address.compressed}/{network.prefixlen}"
    if len(result) > ACL_ADDRESS_MAX_CHARS:
        raise ValueError(f"{result!r} takes more than {ACL_ADDRESS_MAX_CHARS} characters")
    return result


#: The most host addresses a network too long for an address field is written as.
MAX_SPELLED_HOSTS = 256


def network_texts(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, ...]:
    """The address field texts that together stand for exactly ``network``: its own
    (``network_text``) when it fits Hyper-V's 40 characters, else its host addresses.

    Only an IPv6 network of prefix 113..127 whose address has (nearly) every group written
    in full takes more than 40 characters (``1:2:3:4:5:6:7:8/127``, 43 at most); a bare
    address takes 39 at most, and shorter prefixes end in a zero group. Hyper-V takes no
    other form of a subnet, and no shorter spelling exists (the compressed one is the
    shortest), so such a network is written as its addresses, up to ``MAX_SPELLED_HOSTS``
    (a /120). ValueError, naming the limits, for a larger one: its addresses would be
    thousands of ACLs for each protocol and own address of the rule, and a shorter prefix
    would allow more than the rule says."""
    try:
        return (network_text(network),)
    except ValueError:
        if network.num_addresses > MAX_SPELLED_HOSTS:
            text = f"{network.network_address.compressed}/{network.prefixlen}"
            raise ValueError(
                f"{text!r} takes {len(text)} characters, more than the "
                f"{ACL_ADDRESS_MAX_CHARS} of an ACL's address, and its "
                f"{network.num_addresses} addresses are more than the {MAX_SPELLED_HOSTS} "
                "written one by one; use prefixes of /120 or longer, or /112 or "
                "shorter") from None
        return tuple(network_text(ipaddress.ip_network(host)) for host in network)


def canonical_ports(text: str) -> str:
    """``ANY`` for any/empty, ``low`` or ``low-high`` otherwise; ValueError if malformed."""
    if text.strip().upper() in ("", ANY):
        return ANY
    low_text, dash, high_text = text.strip().partition("-")
    low, high = int(low_text), int(high_text if dash else low_text)
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"{text!r} is not a port range")
    return str(low) if low == high else f"{low}-{high}"


def canonical_protocol(text: str) -> str:
    """``ANY``, ``TCP``, ``UDP`` (also for 6 and 17) or a decimal number 0..255."""
    word = text.strip().upper()
    if word in ("", ANY):
        return ANY
    if word.isdecimal() and int(word) <= 255:
        word = str(int(word))
    elif word not in _PROTOCOL_NAMES:
        raise ValueError(f"{text!r} is not a protocol")
    return _PROTOCOL_NAMES.get(word, word)
