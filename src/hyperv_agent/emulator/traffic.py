"""Would this packet reach (or leave) that VM? The emulated switch port, asked directly.

Tests and labs ask a question of reachability ("can 10.0.0.5 reach TCP 22 of this VM's
NIC?") instead of reading rule lists. The answer comes from what the host stores: the VM
(found by name), its network adapter (by MAC), the adapter's switch port, the port's
security settings and its extended ACLs, evaluated as ``portacl.evaluate`` documents.
These are not CIM calls: no round trip is counted, and asking changes nothing.

In order, a packet is stopped when:

1. the VM is not running or paused, or the port is not connected to a switch (Hyper-V
   forwards nothing to or from it);
2. it leaves the VM and the port's Msvm_EthernetSwitchPortSecuritySettingData refuses it:
   another source MAC while AllowMacSpoofing is off; a DHCP server message (UDP from port
   67) while EnableDhcpGuard is on; a router advertisement or redirect (ICMPv6 134 or 137,
   ICMP 9 or 5) while EnableRouterGuard is on. Microsoft documents what the guards drop;
   that they act before the ACLs is the emulator's choice. A port without that setting
   data has the class defaults (spoofing refused, guards off);
3. the extended ACLs refuse it.

Between two adapters of the host (``reaches``), the switch decides by layer 2 alone, from
each port's Msvm_EthernetSwitchPortVlanSettingData: a frame goes from one port to another
when both VMs run (or are paused) with their ports connected to the same switch, and the
VLAN the sending port puts its frames on is one the receiving port takes. What each port
sends on and takes, by OperationMode:

==================================  ===============  ==================================
port                                sends on         takes
==================================  ===============  ==================================
no VLAN setting, or OperationMode 0 untagged         untagged
access (1) on V                     V                V
trunk (2), native N, allowed T      N                N and T
private (3) isolated on P, S        S                P
private (3) community on P, S       S                P and S
private (3) promiscuous on P, L     P                P and every VLAN of L
==================================  ===============  ==================================

The private rows are Microsoft's (NDIS_SWITCH_PORT_PVLAN_MODE: an isolated port "can
receive traffic only on the primary VLAN" and "sends traffic on the secondary VLAN"; a
community port receives on the primary and secondary VLAN and sends on its secondary; a
promiscuous port receives on a defined set of primary and secondary VLANs and sends on its
primary). So two isolated ports never reach each other, community ports reach their own
community, and all of them reach a promiscuous port of their primary VLAN that lists their
secondary. That a trunk port's untagged frames go on its native VLAN is the emulator's
choice (a guest that tags its own frames is not modelled). The ACLs and guards judge IP
packets (``admits``), not frames: ``reaches`` does not consult them.

Traffic happens only when a test says so (``network_io``: amounts, not packets judged
one by one), and only while the VM runs with its port connected. It moves the adapter's
performance counters, the "Hyper-V Virtual Network Adapter" set of root\\cimv2: one
instance per adapter, named ``<VM name>_<adapter name>_<VM GUID>--<adapter GUID>`` (the
form public scripts reading this set build or match; Microsoft documents none), holding
bytes and packets received and sent since the VM started; received is what reached the
VM. The instance is made at the adapter's first traffic and is there, as on Windows,
while the VM runs (or is paused) with the adapter attached: it is gone when the VM stops,
the adapter is removed or the VM migrates away (a VM that comes back counts from 0), and
the next traffic starts a new one from 0 (``model.present``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperv_agent.cim.api import V2_NAMESPACE, ObjectPath
from hyperv_agent.emulator import model, portacl
from hyperv_agent.emulator.codes import AclDirection, EnabledState
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.portacl import Packet, Verdict
from hyperv_agent.emulator.schema import CLASSES, concrete_classes
from hyperv_agent.emulator.store import Record, Transaction

SECURITY = "Msvm_EthernetSwitchPortSecuritySettingData"
DHCP_SERVER_PORT = 67
#: (protocol, ICMP type) of the messages the router guard drops.
ROUTER_MESSAGES = frozenset({(portacl.ICMPV6, 134), (portacl.ICMPV6, 137),
                             (portacl.ICMP, 9), (portacl.ICMP, 5)})


@dataclass(frozen=True)
class PortState:
    """What decides the traffic of one VM network adapter."""

    mac: str
    running: bool
    connected: bool
    allow_mac_spoofing: bool
    dhcp_guard: bool
    router_guard: bool
    acls: tuple[portacl.Acl, ...]


def admits(host: EmulatedHost, vm_name: str, mac: str, packet: Packet) -> Verdict:
    """Whether ``packet`` passes the switch port of ``vm_name``'s adapter ``mac`` (any
    spelling of the MAC). LookupError when there is no such VM, adapter or port."""
    return decide(port_state(host, vm_name, mac), packet)


def connects(host: EmulatedHost, vm_name: str, mac: str, packet: Packet) -> bool:
    """Whether a conversation that ``packet`` opens works: it passes, and so does the first
    packet of its return traffic."""
    state = port_state(host, vm_name, mac)
    return bool(decide(state, packet)) and bool(decide(state, packet.reply_to()))


def decide(state: PortState, packet: Packet) -> Verdict:
    """The verdict of one port on one packet (the steps of the module docstring)."""
    if not state.running:
        return Verdict(False, "the VM is not running")
    if not state.connected:
        return Verdict(False, "the network adapter is not connected to a switch")
    guarded = _guard(state, packet)
    return guarded if guarded is not None else portacl.evaluate(state.acls, packet)


def _guard(state: PortState, packet: Packet) -> Verdict | None:
    if packet.direction != AclDirection.OUTGOING or packet.reply:
        return None
    source = normal_mac(packet.source_mac or state.mac)
    if source != state.mac and not state.allow_mac_spoofing:
        return Verdict(False, f"MAC spoofing: source {source} is not the adapter's {state.mac}")
    if (state.dhcp_guard and packet.protocol == portacl.UDP
            and packet.local_port == DHCP_SERVER_PORT):
        return Verdict(False, "DHCP guard: the VM may not answer as a DHCP server")
    if state.router_guard and (packet.protocol, packet.icmp_type) in ROUTER_MESSAGES:
        return Verdict(False, "router guard: the VM may not advertise or redirect routes")
    return None


def port_state(host: EmulatedHost, vm_name: str, mac: str) -> PortState:
    """Read the adapter ``mac`` of ``vm_name``, its port and the port's features."""
    txn, vm, nic, port = _adapter_and_port(host, vm_name, mac)
    features = list(model.feature_records(txn, port))
    security = next((r for r in features if r.class_def.name == SECURITY), None)
    defaults = host.new_record(SECURITY) if security is None else security
    return PortState(
        mac=str(nic["Address"]).upper(), running=model.is_running(vm),
        connected=bool(port["HostResource"]) and port["EnabledState"] != EnabledState.DISABLED,
        allow_mac_spoofing=defaults["AllowMacSpoofing"] is True,
        dhcp_guard=defaults["EnableDhcpGuard"] is True,
        router_guard=defaults["EnableRouterGuard"] is True,
        acls=tuple(portacl.parse_acl(r.values) for r in features
                   if r.class_def.name == portacl.ACL_CLASS))


VLAN = "Msvm_EthernetSwitchPortVlanSettingData"
_ACCESS, _TRUNK, _PRIVATE = 1, 2, 3  # OperationMode
_ISOLATED, _COMMUNITY, _PROMISCUOUS = 1, 2, 3  # PvlanMode


@dataclass(frozen=True)
class SwitchPort:
    """The layer-2 side of one VM network adapter: where its frames go and what it takes."""

    mac: str
    running: bool
    switch: ObjectPath | None  # None: the port is not connected to a switch
    sends: int | None  # the VLAN of the frames it sends; None: untagged
    takes: frozenset[int | None]  # the VLANs of the frames it receives (None: untagged)


def reaches(host: EmulatedHost, source: tuple[str, str], target: tuple[str, str]) -> Verdict:
    """Whether the switch delivers a frame that ``source``'s adapter sends to ``target``'s
    adapter (each a (VM name, MAC) pair; any spelling of the MAC), as the module docstring
    says. LookupError when there is no such VM, adapter or port."""
    sender, receiver = switch_port(host, *source), switch_port(host, *target)
    for port in (sender, receiver):
        if not port.running:
            return Verdict(False, f"the VM of adapter {port.mac} is not running")
        if port.switch is None:
            return Verdict(False, f"the adapter {port.mac} is not connected to a switch")
    if sender.switch != receiver.switch:
        return Verdict(False, "the adapters are connected to different switches")
    if sender.sends not in receiver.takes:
        return Verdict(False, f"the adapter {receiver.mac} does not take frames of VLAN "
                              f"{sender.sends or 'untagged'} that {sender.mac} sends")
    return Verdict(True, f"delivered on VLAN {sender.sends or 'untagged'}")


def switch_port(host: EmulatedHost, vm_name: str, mac: str) -> SwitchPort:
    """Read the adapter ``mac`` of ``vm_name``, its port and the port's VLAN setting."""
    txn, vm, nic, port = _adapter_and_port(host, vm_name, mac)
    hosts = port["HostResource"]
    switch = (ObjectPath.parse(str(hosts[0])) if isinstance(hosts, tuple) and hosts
              and port["EnabledState"] != EnabledState.DISABLED else None)
    vlan = next((r for r in model.feature_records(txn, port) if r.class_def.name == VLAN),
                None)
    sends, takes = _vlans(vlan)
    return SwitchPort(str(nic["Address"]).upper(), model.is_running(vm), switch, sends, takes)


def _vlans(setting: Record | None) -> tuple[int | None, frozenset[int | None]]:
    """(the VLAN a port sends on, the VLANs it takes), by the table of the docstring."""
    mode = setting.integer("OperationMode") if setting is not None else 0
    if setting is None or mode not in (_ACCESS, _TRUNK, _PRIVATE):
        return None, frozenset({None})
    if mode == _ACCESS:
        vlan = setting.integer("AccessVlanId")
        return vlan, frozenset({vlan})
    if mode == _TRUNK:
        native = setting.integer("NativeVlanId")
        return native, frozenset({native, *_ids(setting["TrunkVlanIdArray"])})
    primary, secondary = setting.integer("PrimaryVlanId"), setting.integer("SecondaryVlanId")
    pvlan = setting.integer("PvlanMode")
    if pvlan == _PROMISCUOUS:
        return primary, frozenset({primary, *_ids(setting["SecondaryVlanIdArray"])})
    if pvlan == _COMMUNITY:
        return secondary, frozenset({primary, secondary})
    return secondary, frozenset({primary})


def _ids(value: object) -> tuple[int, ...]:
    return tuple(v for v in value if isinstance(v, int)) if isinstance(value, tuple) else ()


ADAPTER_COUNTERS = "Win32_PerfRawData_NvspNicStats_HyperVVirtualNetworkAdapter"
_DROPPED = ("DroppedPacketsIncomingPersec", "DroppedPacketsOutgoingPersec")
_WRAP = 1 << 64


def network_io(host: EmulatedHost, vm_name: str, mac: str, *, received_bytes: int = 0,
               sent_bytes: int = 0, received_packets: int = 0, sent_packets: int = 0) -> bool:
    """Traffic through the adapter ``mac`` (any spelling) of ``vm_name``: what reached the
    VM and what it sent. Returns whether it flowed and was counted: False when the VM is
    not running or the adapter's port is not connected to a switch. LookupError when
    there is no such VM, adapter or port; ValueError for a negative amount."""
    amounts = {"BytesReceivedPersec": received_bytes, "BytesSentPersec": sent_bytes,
               "BytesPersec": received_bytes + sent_bytes,
               "PacketsReceivedPersec": received_packets, "PacketsSentPersec": sent_packets,
               "PacketsPersec": received_packets + sent_packets}
    if min(amounts.values()) < 0:
        raise ValueError("traffic amounts cannot be negative")
    txn = host.store.transaction()
    vm = _vm(host, txn, vm_name)
    guid = str(vm["Name"])
    nic = _adapter(txn, guid, normal_mac(mac), vm_name)
    port = _port(txn, guid, nic, vm_name)
    if vm["EnabledState"] != EnabledState.ENABLED or not port["HostResource"] or (
            port["EnabledState"] == EnabledState.DISABLED):
        return False
    record = model.counter_instance(host, txn, ADAPTER_COUNTERS, adapter_counter_name(vm, nic),
                                    vm, nic, zeros=(*amounts, *_DROPPED))
    for counter, amount in amounts.items():
        record[counter] = (record.integer(counter) + amount) % _WRAP
    txn.commit()
    return True


def adapter_counter_name(vm: Record, nic: Record) -> str:
    """The counter instance of the adapter ``nic`` of ``vm``."""
    adapter = str(nic["InstanceID"]).rpartition("\\")[2]
    return f"{vm['ElementName']}_{nic['ElementName']}_{vm['Name']}--{adapter}"


def normal_mac(mac: str) -> str:
    """``02:00:4c:5f:00:08``, ``02-00-…`` and ``02004C5F0008`` as Hyper-V stores them."""
    return mac.replace(":", "").replace("-", "").upper()


def _adapter_and_port(host: EmulatedHost, vm_name: str, mac: str
                      ) -> tuple[Transaction, Record, Record, Record]:
    """A transaction, and in it the VM ``vm_name``, its adapter ``mac`` (any spelling)
    and that adapter's port; LookupError when one is not there."""
    txn = host.store.transaction()
    vm = _vm(host, txn, vm_name)
    guid = str(vm["Name"])
    nic = _adapter(txn, guid, normal_mac(mac), vm_name)
    return txn, vm, nic, _port(txn, guid, nic, vm_name)


def _vm(host: EmulatedHost, txn: Transaction, vm_name: str) -> Record:
    found = [r for r in host.records("Msvm_ComputerSystem", txn)
             if model.is_vm(r) and r["ElementName"] == vm_name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} VMs are named {vm_name!r}")
    return found[0]


def _adapter(txn: Transaction, guid: str, mac: str, vm_name: str) -> Record:
    classes = (CLASSES["Msvm_SyntheticEthernetPortSettingData"],)
    for record in model.owned_records(txn, classes, guid):
        if str(record["Address"]).upper() == mac and _is_current(record, guid):
            return record
    raise LookupError(f"VM {vm_name!r} has no network adapter {mac}")


def _port(txn: Transaction, guid: str, nic: Record, vm_name: str) -> Record:
    classes = concrete_classes("Msvm_EthernetPortAllocationSettingData", V2_NAMESPACE)
    for record in model.owned_records(txn, classes, guid):
        parent = record["Parent"]
        if isinstance(parent, str) and parent and ObjectPath.parse(parent) == nic.path:
            return record
    raise LookupError(f"the adapter {nic['Address']} of VM {vm_name!r} has no switch port")


def _is_current(record: Record, guid: str) -> bool:
    """A device of the VM's current settings (not of a snapshot)."""
    return str(record["InstanceID"]).lower().startswith(f"microsoft:{guid.lower()}\\")


__all__ = ["Packet", "PortState", "SwitchPort", "Verdict", "admits", "connects", "decide",
           "network_io", "reaches", "switch_port"]
